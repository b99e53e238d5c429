"""NLTE inversion of one pixel with learned departure coefficients (issue 19): the pieces of
``invert_pixel_nlte(..., departures="emulated")`` (:mod:`pyinv.nlte.desire` runs them).

1. Cycles as :func:`pyinv.nlte.invert_pixel_nlte`, but the b come from the emulator
   (:mod:`pyinv.nlte.emulator`) at the current model — re-evaluated after every cycle, the cycle repeated
   (at most ``max_refresh`` times) when it changed T by more than ``threshold`` — and no correction Δ (the
   engine's LTE+b profile is the NLTE profile).
2. The check: ONE backend call at the final model (a backend that can, Lightweaver, starts its iteration
   from the emulator's b: about half the iterations of an LTE start). The engine's Stokes I with the
   emulator's b and with the backend's b are compared: their rms difference [continuum units] is the check
   value; the rms relative difference of the b of the mapped lines over log τ −5 … −1 is recorded too.
3. Check passed (≤ ``check_threshold``): one more inversion of the last cycle with the backend's b and the
   backend's correction Δ frozen (DeSIRe's step, no further backend call). Failed (or the backend call
   failed): :func:`~pyinv.nlte.invert_pixel_nlte` with the backend's departures takes over from the model
   reached (its backend calls are added).

The result's ``provenance`` holds ``departures="emulated"``, the emulator's name and version, the check
(value, b difference, threshold, passed) and ``fallback``.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .backend import NlteBackend, run_cycles

__all__ = ["resolve_emulator", "departure_check", "emulated_cycles", "backend_start"]

#: log τ range of the b comparison of the check.
CHECK_RANGE = (-5.0, -1.0)


def resolve_emulator(emulator: Any):
    """A :class:`~pyinv.nlte.emulator.DepartureEmulator` from itself, a catalogue name or None (default)."""
    from .emulator import DepartureEmulator, pretrained_emulator

    if emulator is None or isinstance(emulator, str):
        return pretrained_emulator(emulator)
    if not isinstance(emulator, DepartureEmulator):
        raise ValueError(f"emulator must be a DepartureEmulator or a catalogue name, got {type(emulator).__name__}")
    return emulator


def departure_check(model, lines, grid, dep_emulated, dep_backend, *, psf=None, abundances=None,
                    departure_form: str = "desire") -> dict:
    """Compare emulated with backend departures at ``model``: ``profile_rms`` (rms of the engine's Stokes I
    difference, continuum units) and ``b_rms`` (rms of b_emulated/b_backend − 1 over the lower and upper
    levels of the lines both carry, log τ −5 … −1)."""
    from ..physics.synthesis import synthesize

    kw = dict(psf=psf, abundances=abundances, departure_form=departure_form)
    be = dep_backend.on_grid(dep_emulated.log_tau)
    i_em = synthesize(model, lines, grid, departures=dep_emulated, **kw)[0]
    i_be = synthesize(model, lines, grid, departures=be, **kw)[0]
    m = (dep_emulated.log_tau <= CHECK_RANGE[1]) & (dep_emulated.log_tau >= CHECK_RANGE[0])
    rel = []
    for idx in dep_emulated.lines:
        if idx in be.lines:
            for a, b in zip(dep_emulated.line(idx), be.line(idx)):
                rel.append(a[m] / b[m] - 1.0)
    b_rms = float(np.sqrt(np.mean(np.square(rel)))) if rel and m.any() else float("nan")
    return {"profile_rms": float(np.sqrt(np.mean((i_em - i_be) ** 2))), "b_rms": b_rms}


def emulated_cycles(obs, guess, lines, grid, config, emu, nlte_lines, *, threshold: float = 0.01,
                    max_refresh: int = 2, **invert_kwargs):
    """Step 1 of the module docstring: the cycles (:func:`~pyinv.nlte.backend.run_cycles`, the backend
    driver's loop) with the emulator's b and no correction Δ. Returns (model reached, last PixelResult,
    emulator evaluations)."""
    zero = np.zeros_like(obs)
    run = run_cycles(obs, guess, lines, grid, config, lambda model: (emu.departures(model, nlte_lines), zero),
                     threshold=threshold, max_refresh=max_refresh, **invert_kwargs)
    return run.model, run.result, run.calls


def backend_start(emu, backend: NlteBackend, model) -> dict | None:
    """The emulator's b as the backend's starting point (its column is top first), where it can take one; None
    (the backend starts from LTE) where the emulator's b are not finite and positive (a model far outside its
    training, e.g. 10**log b overflowing: the backend would refuse such a start)."""
    if backend.supports_initial_b and any(ln.atom == emu.atom for ln in backend.lines):
        with np.errstate(over="ignore", invalid="ignore"):
            b = 10.0 ** np.asarray(emu.log_b(model), dtype=np.float64)[:, ::-1]
        if np.all(np.isfinite(b)) and np.all(b > 0):
            return {emu.atom: b}
    return None
