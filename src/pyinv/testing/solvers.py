"""Private stand-in solvers with ``invert_pixel``'s worker interface, for exercising the map executors
(:mod:`pyinv.maps.pool`).

They are real computations (a synthesis of the guess, and a one-parameter least-squares fit of the
line-of-sight velocity by a deterministic grid search), cheap and deterministic; plus solvers that
misbehave on purpose (raise, crash the process, hang) for the fault tests. Not part of the public API.
"""
from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["StandInResult", "vlos_fit_solver", "mixed_vlos_fit_solver", "misbehaving_solver"]


@dataclass
class StandInResult:
    atmosphere: Any
    fit: np.ndarray
    chi2: np.ndarray
    iterations: int
    status: int
    errors: Any = None


def _chi2(obs: np.ndarray, syn: np.ndarray, config) -> float:
    w = np.asarray(config.value("weights", 1), dtype=np.float64)[:, None]
    sig = 1.0 / float(config.value("snr", 1))
    return float(np.sum(w * (obs - syn) ** 2) / sig ** 2 / obs.size)


def vlos_fit_solver(stokes, guess, lines, grid, config, *, mu=None, psf=None, abundances=None):
    """Fit a depth-independent shift of vlos (5 trial values around the guess, then a parabola through
    the best three), deterministic. χ² per "cycle": [guess, fitted]."""
    from ..physics.synthesis import synthesize

    dv = np.array([-1.0, -0.5, 0.0, 0.5, 1.0]) * 1.0e5
    trials = [guess.with_columns(vlos=np.asarray(guess.vlos) + d) for d in dv]
    syn = synthesize(trials, lines, grid, psf=psf, abundances=abundances)
    c = np.array([_chi2(stokes, s, config) for s in syn])
    k = int(np.clip(np.argmin(c), 1, len(dv) - 2))
    a, b, cc = c[k - 1], c[k], c[k + 1]
    den = a - 2 * b + cc
    h = dv[1] - dv[0]
    best = dv[k] + (0.5 * h * (a - cc) / den if den > 0 else 0.0)
    best = float(np.clip(best, dv[0], dv[-1]))
    atm = guess.with_columns(vlos=np.asarray(guess.vlos) + best)
    fit = synthesize(atm, lines, grid, psf=psf, abundances=abundances)
    return StandInResult(atm, fit, np.array([c[2], _chi2(stokes, fit, config)]), 1, 0)


@dataclass
class MixedStandInResult(StandInResult):
    atmosphere2: Any = None
    filling2: float | None = None
    stray: float | None = None
    errors2: Any = None


def mixed_vlos_fit_solver(stokes, guess, lines, grid, config, *, mu=None, psf=None, abundances=None, guess2=None,
                          filling=None, stray_profile=None, stray=None):
    """:func:`vlos_fit_solver` with ``invert_pixel``'s second component and stray light: component 1's
    vlos shift is fitted (same 5-point search and parabola) to the profile mixed as
    (1 − α)[(1 − f₂) I₁ + f₂ I₂] + α I_stray by :func:`pyinv.synthesize`; component 2, f₂ and α are kept.
    f₂ (``filling``) None takes guess2's header, α (``stray``) None guess's header (the contract's defaults).
    The result carries ``atmosphere2`` (header: its macro, f₂, α), ``filling2`` and ``stray`` like
    ``PixelResult``."""
    from ..physics.synthesis import synthesize

    f2 = None if guess2 is None else float(guess2.filling if filling is None else filling)
    alpha = None if stray_profile is None else float(guess.stray if stray is None else stray)
    mixing = dict(atmos2=guess2, filling=f2, stray_profile=stray_profile, stray=alpha)

    def syn(atm):
        many = isinstance(atm, list)
        kw = dict(mixing)
        if many and guess2 is not None:
            kw["atmos2"] = [guess2] * len(atm)
        return synthesize(atm, lines, grid, psf=psf, abundances=abundances, **kw)

    dv = np.array([-1.0, -0.5, 0.0, 0.5, 1.0]) * 1.0e5
    trials = [guess.with_columns(vlos=np.asarray(guess.vlos) + d) for d in dv]
    c = np.array([_chi2(stokes, s, config) for s in syn(trials)])
    k = int(np.clip(np.argmin(c), 1, len(dv) - 2))
    a, b, cc = c[k - 1], c[k], c[k + 1]
    den = a - 2 * b + cc
    h = dv[1] - dv[0]
    best = float(np.clip(dv[k] + (0.5 * h * (a - cc) / den if den > 0 else 0.0), dv[0], dv[-1]))
    atm = guess.with_columns(vlos=np.asarray(guess.vlos) + best, filling=1.0 if f2 is None else 1.0 - f2,
                             stray=0.0 if alpha is None else alpha)
    fit = syn(atm)
    atm2 = None if guess2 is None else guess2.with_columns(filling=f2, stray=0.0 if alpha is None else alpha)
    return MixedStandInResult(atm, fit, np.array([c[2], _chi2(stokes, fit, config)]), 1, 0, None, atm2, f2, alpha)


class TaskError(BaseException):
    """Escapes the per-pixel guard of the executors (which catches Exception): a failure of the task."""


def misbehaving_solver(stokes, guess, lines, grid, config, *, mu=None, psf=None, abundances=None):
    """``vlos_fit_solver`` except where Stokes I's first sample is a marker: 7 → raise, 8 → SIGKILL own
    process, 9 → sleep 30 s (for time limits), 6 → sleep 0.3 s then solve, 5 → idle 60 s then solve (a
    slow pixel that costs no CPU, for stopping a run while it is computed), 3 → raise a
    :class:`TaskError` (the whole task fails, not just the pixel)."""
    m = float(stokes[0, 0])
    if m == 7.0:
        raise RuntimeError("deliberate failure")
    if m == 3.0:
        raise TaskError("deliberate task failure")
    if m == 8.0:
        os.kill(os.getpid(), signal.SIGKILL)
    if m == 9.0:
        t = time.time() + 30
        while time.time() < t:
            pass  # busy: CPU-bound like a stuck engine call
    if m == 6.0:
        time.sleep(0.3)
    if m == 5.0:
        time.sleep(60.0)
    return vlos_fit_solver(stokes, guess, lines, grid, config, mu=mu, psf=psf, abundances=abundances)


class PoisonedStart:
    """A solver (picklable object) whose unpickling fails once the file ``path`` exists, so that worker
    processes started after that die at start-up. Pixels whose Stokes I starts with 4 create the file
    (then are solved); the rest is :func:`misbehaving_solver`."""

    def __init__(self, path: str):
        self.path = str(path)

    def __getstate__(self):
        return {"path": self.path}

    def __setstate__(self, state):
        self.path = state["path"]
        if os.path.exists(self.path):
            raise RuntimeError("deliberate start-up failure (poison file present)")

    def __call__(self, stokes, guess, lines, grid, config, *, mu=None, psf=None, abundances=None):
        if float(stokes[0, 0]) == 4.0:
            with open(self.path, "w") as f:
                f.write("poison")
            stokes = np.array(stokes)
            stokes[0, 0] = stokes[0, 1]
        return misbehaving_solver(stokes, guess, lines, grid, config, mu=mu, psf=psf, abundances=abundances)


class AlteredStarts:
    """A :class:`pyinv.init.StartStream` wrapper (picklable): the wrapped stream's starts, except pixel
    ``pixel`` (raster index), whose start gets ``dT`` [K] more, B = ``B`` [G] when given, ``dv`` [cm/s] more
    and, with ``flip``, the inclination mirrored (γ → 180° − γ). For tests of what a wrong start does."""

    def __init__(self, inner: Any, pixel: int, dT: float = 0.0, B: float | None = None, dv: float = 0.0,
                 flip: bool = False):
        self.inner, self.pixel, self.dT, self.B, self.dv, self.flip = inner, int(pixel), dT, B, dv, flip
        self.naux = int(getattr(inner, "naux", 0))

    def starts(self, stokes, pixels):
        t, h, a = self.inner.starts(stokes, pixels)
        for k in np.flatnonzero(np.asarray(pixels) == self.pixel):
            t[k, :, 1] += self.dT
            if self.B is not None:
                t[k, :, 4] = self.B
            t[k, :, 5] += self.dv
            if self.flip:
                t[k, :, 6] = 180.0 - t[k, :, 6]
        return t, h, a

    def fingerprint(self):
        return (self.inner.fingerprint(), self.pixel, self.dT, self.B, self.dv, self.flip)

    def collect(self, aux, valid):
        return self.inner.collect(aux, valid)


def mapped_inputs_solver(stokes, guess, lines, grid, config, *, mu=None, psf=None, abundances=None):
    """:func:`vlos_fit_solver`, after checking that the worker's per-pixel inputs (cube, start table and
    its header, indices, S/N) are memory-mapped files, not copies (raises otherwise: status 103)."""
    from ..maps.pool import worker_inputs

    w = worker_inputs()
    if w:  # in a local pool worker
        for key in ("cube", "table", "header", "gindex", "snr"):
            if not isinstance(w[key], np.memmap):
                raise RuntimeError(f"{key} is not memory-mapped in the worker")
    return vlos_fit_solver(stokes, guess, lines, grid, config, mu=mu, psf=psf, abundances=abundances)


def two_iteration_solver(stokes, guess, lines, grid, config, *, mu=None, psf=None, abundances=None):
    """``pyinv.invert_pixel`` limited to 2 iterations per cycle, node Jacobian (fast; memory benchmarks of
    whole maps)."""
    from ..physics.inversion import invert_pixel

    return invert_pixel(stokes, guess, lines, grid, config, mu=mu, psf=psf, abundances=abundances,
                        max_iterations=2, jacobian="nodes")


def resident_kib() -> tuple[int, int]:
    """(VmRSS, VmHWM) of this process [KiB], from /proc/self/status."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1])
    return out.get("VmRSS", 0), out.get("VmHWM", 0)


def synthesize_rss_probe(warmup: int, calls: int, every: int) -> list[tuple[int, int]]:
    """Run ``warmup`` then ``calls`` syntheses of slightly different atmospheres in this process;
    returns [(calls done, VmRSS KiB)] sampled after the warm-up and every ``every`` calls."""
    import pyinv
    from .. import models

    lines = pyinv.default_lines()
    grid = models.hinode_grid(lines)
    g = models.default_guess()
    atms = [g.with_columns(vlos=np.asarray(g.vlos) + dv, B=np.asarray(g.B) + db)
            for dv, db in zip(np.linspace(-2e5, 2e5, 17), np.linspace(0, 800, 17))]
    for k in range(warmup):
        pyinv.synthesize(atms[k % 17], lines, grid)
    samples = [(0, resident_kib()[0])]
    for k in range(1, calls + 1):
        pyinv.synthesize(atms[k % 17], lines, grid)
        if k % every == 0:
            samples.append((k, resident_kib()[0]))
    return samples
