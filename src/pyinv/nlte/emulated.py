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
   backend's correction Δ frozen (DeSIRe's step, no further backend call). Failed: with ``fallback="short"``
   (default) one cycle with the check's backend b and Δ, a second backend call and check, and, if that fails
   too (or a backend call failed), :func:`~pyinv.nlte.invert_pixel_nlte` with the backend's departures takes
   over from the model reached (its backend calls are added); ``fallback="full"`` takes over at once.

``t_placement="sensitivity"`` places the last cycle's T nodes from the data's sensitivity at the model the
earlier cycles reached (:func:`sensitivity_nodes`).

The result's ``provenance`` holds ``departures="emulated"``, the emulator's name and version, the check
(value, b difference, threshold, passed) and ``fallback``.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .backend import NlteBackend, run_cycles

__all__ = ["resolve_emulator", "departure_check", "emulated_cycles", "backend_start", "sensitive_top",
           "sensitivity_profile", "sensitive_positions", "sensitivity_nodes"]

#: log τ range of the b comparison of the check.
CHECK_RANGE = (-5.0, -1.0)
#: the sensitivity rule of ``t_placement="sensitivity"`` (:func:`sensitivity_nodes`): the top T node is the
#: highest layer z where raising T by ``SENSITIVITY_DT`` [K] everywhere above z (b following) still changes
#: χ² (Stokes I, σ = 1/snr) by ``sensitivity_dchi2`` (default :data:`SENSITIVITY_DCHI2`)
SENSITIVITY_DT = 100.0
SENSITIVITY_DCHI2 = 500.0


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
                    max_refresh: int = 2, cycle_kwargs=None, **invert_kwargs):
    """Step 1 of the module docstring: the cycles (:func:`~pyinv.nlte.backend.run_cycles`, the backend
    driver's loop, with its ``cycle_kwargs``) with the emulator's b and no correction Δ. Returns (model
    reached, last PixelResult, emulator evaluations, the last cycle's extra keywords)."""
    zero = np.zeros_like(obs)
    run = run_cycles(obs, guess, lines, grid, config, lambda model: (emu.departures(model, nlte_lines), zero),
                     threshold=threshold, max_refresh=max_refresh, cycle_kwargs=cycle_kwargs, **invert_kwargs)
    return run.model, run.result, run.calls, run.extra


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


def sensitive_top(log_tau, s, dchi2: float = SENSITIVITY_DCHI2) -> float | None:
    """The highest layer the data still see in T: the smallest log τ z whose χ² change ``s`` (for raising T
    everywhere above z, :func:`sensitivity_profile`) reaches ``dchi2``; None where none does.

    Parameters
    ----------
    log_tau : array (n,)
        The layers z [log τ₅₀₀] (any order).
    s : array (n,)
        The χ² change Σ_λ (ΔI / σ)² for +ΔT above each z (NaN: not computed).
    dchi2 : float
        The χ² change that counts as seen (> 0).
    """
    lt = np.asarray(log_tau, dtype=np.float64)
    s = np.asarray(s, dtype=np.float64)
    if s.shape != lt.shape:
        raise ValueError(f"s must have the shape of log_tau {lt.shape}, got {s.shape}")
    if not dchi2 > 0:
        raise ValueError(f"dchi2 must be > 0, got {dchi2!r}")
    seen = np.where(np.isfinite(s), s, -np.inf) >= dchi2
    return float(lt[seen].min()) if seen.any() else None


def sensitivity_profile(model, lines, grid, departures_at, sigma: float, *, dT: float = SENSITIVITY_DT,
                        top_range: tuple[float, float] = (-6.0, -3.0), psf=None, abundances=None,
                        departure_form: str = "desire") -> np.ndarray:
    """S(z) = Σ_λ (ΔI / σ)² for T raised by ``dT`` [K] at every grid point above z (log τ ≤ z; P_e
    re-equilibrated hydrostatically, the departure coefficients re-evaluated: ``departures_at(model)``, e.g.
    the emulator's, so that b follow T as in the backend's own NLTE answer), for every grid point z of
    ``model`` inside ``top_range``; NaN elsewhere. Stokes I [continuum units], noise ``sigma``."""
    from ..physics.thermo import hydrostatic
    from ..physics.synthesis import synthesize

    if not (sigma > 0 and dT > 0):
        raise ValueError(f"sigma and dT must be > 0, got {sigma!r}, {dT!r}")
    kw = dict(psf=psf, abundances=abundances, departure_form=departure_form)
    lt = np.asarray(model.log_tau, dtype=np.float64)
    t0 = np.asarray(model.T, dtype=np.float64)
    i0 = synthesize(model, lines, grid, departures=departures_at(model), **kw)[0]
    s = np.full(lt.size, np.nan)
    for j in np.flatnonzero((lt >= top_range[0]) & (lt <= top_range[1])):
        mp = hydrostatic(model.with_columns(T=t0 + dT * (lt <= lt[j])))
        i1 = synthesize(mp, lines, grid, departures=departures_at(mp), **kw)[0]
        s[j] = float(np.sum(((i1 - i0) / sigma) ** 2))
    return s


def sensitive_positions(log_tau, top: float, n: int, *, min_span: float = 1.0) -> np.ndarray:
    """``n`` node positions [log τ], equidistant from the bottom of the grid up to ``top`` (clamped to the
    grid, and to at least ``min_span`` dex above the bottom); above the top node the engine's basis holds
    the correction constant (for T: the same relative change)."""
    lt = np.asarray(log_tau, dtype=np.float64)
    if n < 2:
        raise ValueError(f"sensitive_positions needs n >= 2, got {n}")
    bottom = float(lt.max())
    top = min(max(float(top), float(lt.min())), bottom - min_span)
    return np.linspace(bottom, top, n)


def sensitivity_nodes(model, lines, grid, departures_at, n: int, *, sigma: float,
                      dchi2: float = SENSITIVITY_DCHI2, top_range: tuple[float, float] = (-6.0, -3.0), psf=None,
                      abundances=None, departure_form: str = "desire") -> tuple[np.ndarray, dict]:
    """T node positions for a cycle with ``n`` T nodes that follow the data's sensitivity at ``model``: the
    highest layer the data see (:func:`sensitive_top` of :func:`sensitivity_profile`, b from
    ``departures_at``) and the nodes from the bottom of the grid up to it (:func:`sensitive_positions`; the
    whole grid where nothing in ``top_range`` reaches ``dchi2``; the default range is a chromospheric line's,
    one synthesis per grid point in it). Returns (positions, record for the provenance)."""
    lt = np.asarray(model.log_tau, dtype=np.float64)
    s = sensitivity_profile(model, lines, grid, departures_at, sigma, top_range=top_range, psf=psf,
                            abundances=abundances, departure_form=departure_form)
    top = sensitive_top(lt, s, dchi2)
    pos = sensitive_positions(lt, float(lt.min()) if top is None else top, n)
    return pos, {"rule": "sensitivity", "top": top, "dchi2": float(dchi2), "sigma": float(sigma),
                 "positions": [float(x) for x in pos]}
