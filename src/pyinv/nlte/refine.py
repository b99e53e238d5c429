"""Regularised temperature refinement of an emulated NLTE inversion (issue 19; ``t_refine="map"`` of
:func:`pyinv.nlte.invert_pixel_nlte`, docs/nlte.md "Regularised refinement").

The node inversion corrects the start with a few T nodes; between and above them the correction follows the
interpolation, whatever the data say. On chromospheric structures unlike the start (a flattened top, a wide
warm layer, an offset of the whole chromosphere) that leaves errors of hundreds of K where Ca II 8542 still
sees T, and it extrapolates freely where the line sees nothing. The refinement replaces the node correction
by a smooth one that the data and a prior share:

* **Parameters.** T on hat functions (linear interpolation between knots every ``spacing`` dex of log τ₅₀₀,
  from the bottom of the grid to its top), v_LOS as a constant plus a gradient, v_mic as a constant. B, γ, φ
  and the other columns stay as the node inversion left them; P_e follows T (hydrostatic equilibrium).
* **Merit.** Φ = Σ w_s (O − S)² / σ² + (c − c₀)ᵀ K⁻¹ (c − c₀): χ² of all Stokes parameters with the last
  cycle's weights and σ = 1/snr, plus a Gaussian-process prior on the T coefficients c: mean c₀ = the *start*
  model's T (the guess given to the inversion), covariance K = s² exp(−Δ²/2ℓ²) between knots Δ dex apart
  (amplitude s [K], correlation length ℓ [dex]). Where the data see T the χ² term wins; where they do not,
  the prior brings the correction back smoothly, over ~ℓ, to that of the start rather than letting it run.
* **Departure coefficients that follow T.** b(T) = b_backend(anchor) × b_emulator(T) / b_emulator(anchor):
  the backend's b at the model of its last call times the emulator's *relative* change, so the level is
  the backend's and the response to T is NLTE's (with b frozen the line core would claim to see T far
  above where it does); the backend's correction Δ (DeSIRe's NLTE − (LTE+b) term) is kept frozen.
* **Solver.** Gauss–Newton with Levenberg–Marquardt damping on a finite-difference Jacobian (every column
  a hydrostatic model, the emulator and one synthesis: ~2.5 ms; 25 columns on bench_desire's 64-point grid),
  at most ``max_iterations`` steps (3), stopping when a step lowers Φ by less than ``tol`` (relative). The
  step limit is part of the method: converged to the optimum, the same prior gave a larger T error on the
  tuning pixels (75 K against 64 K; the blind top drifts further, docs/nlte.md).

No backend call is made. The record (``provenance["refine"]``) holds the settings, Φ and the reduced χ²
before and after, the iterations and syntheses, and ``accepted``: the refined model is returned only when
Φ went down; otherwise the node result is kept.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

__all__ = ["PRIOR_AMPLITUDE", "PRIOR_LENGTH", "KNOT_SPACING", "MAX_ITERATIONS", "TOLERANCE", "hat_basis",
           "gp_precision", "anchored_departures", "refine_temperature"]

#: Gaussian-process prior of the refinement: amplitude [K] and correlation length [dex] (chosen on the
#: novel-feature tuning seeds 12-14 and the ``ca`` seed 12 of bench_desire; docs/nlte.md)
PRIOR_AMPLITUDE = 300.0
PRIOR_LENGTH = 1.3
#: spacing of the T knots [dex]
KNOT_SPACING = 0.3
#: at most this many Gauss-Newton steps (3: on the tuning seeds the early stop is part of the
#: regularisation, 64 K against 75 K for the converged optimum, docs/nlte.md), and a step that lowers the merit
#: by less than TOLERANCE (relative) ends it
MAX_ITERATIONS = 3
TOLERANCE = 3e-3
#: finite-difference steps: T coefficient [K], v_LOS constant and gradient, v_mic [cm/s]
_STEP_T = 20.0
_STEP_V = 5e3
#: the refined T is kept above this [K] (a model the equation of state takes)
_T_FLOOR = 2500.0


def hat_basis(log_tau: np.ndarray, spacing: float = KNOT_SPACING) -> tuple[np.ndarray, np.ndarray]:
    """Knots every ``spacing`` dex from the bottom of ``log_tau`` to its top (the top always a knot) and the
    hat functions on the grid: (knots (nk,), H (ndep, nk)), column k 1 at knot k and linear to 0 at its
    neighbours."""
    lt = np.asarray(log_tau, dtype=np.float64)
    if not spacing > 0:
        raise ValueError(f"spacing must be > 0 dex, got {spacing!r}")
    lo, hi = float(lt.min()), float(lt.max())
    knots = hi - spacing * np.arange(int(np.floor((hi - lo) / spacing + 1e-9)) + 1)
    if knots[-1] > lo + 1e-6 * spacing:
        knots = np.append(knots, lo)
    asc = knots[::-1]
    H = np.empty((lt.size, knots.size))
    for k in range(knots.size):
        e = np.zeros(knots.size)
        e[knots.size - 1 - k] = 1.0
        H[:, k] = np.interp(lt, asc, e)
    return knots, H


def gp_precision(knots: np.ndarray, amplitude: float, length: float) -> np.ndarray:
    """Inverse of the squared-exponential covariance amplitude² exp(−Δ²/2 length²) between ``knots`` [K⁻²]
    (a jitter of 1e-6 amplitude² on the diagonal keeps it invertible)."""
    if not (amplitude > 0 and length > 0):
        raise ValueError(f"prior amplitude and length must be > 0, got {amplitude!r}, {length!r}")
    d = np.subtract.outer(knots, knots)
    cov = amplitude ** 2 * (np.exp(-0.5 * (d / length) ** 2) + 1e-6 * np.eye(knots.size))
    return np.linalg.inv(cov)


def anchored_departures(emu: Any, nlte_lines, dep_anchor, anchor_model) -> Callable:
    """Departures at a model: the backend's ``dep_anchor`` (at ``anchor_model``) times the emulator's change
    from the anchor, line by line and level by level (module docstring)."""
    from .departures import Departures

    d0 = emu.departures(anchor_model, nlte_lines)
    be = dep_anchor.on_grid(d0.log_tau)
    idx = [be.lines.index(i) for i in d0.lines]
    rl = be.b_lower[idx] / d0.b_lower
    ru = be.b_upper[idx] / d0.b_upper

    def at(model):
        d = emu.departures(model, nlte_lines)
        return Departures(d.log_tau, d.lines, d.b_lower * rl, d.b_upper * ru)

    return at


def refine_temperature(obs, model, prior_model, lines, grid, departures_at: Callable, delta, *, snr: float,
                       weights, mu: float = 1.0, psf=None, abundances=None, departure_form: str = "desire",
                       amplitude: float = PRIOR_AMPLITUDE, length: float = PRIOR_LENGTH,
                       spacing: float = KNOT_SPACING, max_iterations: int = MAX_ITERATIONS,
                       tol: float = TOLERANCE) -> tuple[Any, np.ndarray, dict]:
    """The refinement of the module docstring, from ``model`` (the node result), with the prior centred on
    ``prior_model``'s T (on the same grid).

    Parameters
    ----------
    obs : ndarray (4, nλ)
        Observed Stokes profiles (continuum units).
    model, prior_model : pyinv.Atmosphere
        Start of the refinement and the model whose T the prior is centred on (same log τ grid).
    departures_at : callable
        Model → :class:`~pyinv.nlte.departures.Departures` (:func:`anchored_departures`).
    delta : ndarray (4, nλ)
        The backend's frozen correction, added to every synthesis.
    snr, weights
        σ = 1/snr of every Stokes parameter; weights (4,) of the χ² term.

    Returns
    -------
    (model, fit, record)
        The refined model (hydrostatic) and its profiles (Δ included), or ``model`` and its profiles when no
        step lowered Φ; the record of the module docstring.
    """
    from ..physics.synthesis import synthesize
    from ..physics.thermo import hydrostatic

    if not (snr is not None and np.isfinite(snr) and snr > 0):
        raise ValueError(f"snr must be > 0 (sigma = 1/snr), got {snr!r}")
    o = np.asarray(obs, dtype=np.float64)
    w = np.sqrt(np.maximum(np.asarray(weights, dtype=np.float64), 0.0))[:, None] * float(snr)
    lt = np.asarray(model.log_tau, dtype=np.float64)
    if not np.array_equal(lt, np.asarray(prior_model.log_tau, dtype=np.float64)):
        raise ValueError("model and prior_model must share the log tau grid")
    knots, H = hat_basis(lt, spacing)
    nk = knots.size
    P = gp_precision(knots, amplitude, length)
    T0 = np.asarray(model.T, dtype=np.float64)
    v0 = np.broadcast_to(np.asarray(model.vlos, dtype=np.float64), lt.shape)
    vm0 = np.broadcast_to(np.asarray(model.vmic, dtype=np.float64), lt.shape)
    grad = (lt - lt.mean()) / max(float(np.ptp(lt)), 1e-9)
    c_prior = np.linalg.lstsq(H, np.asarray(prior_model.T, dtype=np.float64) - T0, rcond=None)[0]
    ok_obs = np.isfinite(o) & (o > -0.99)
    skw = dict(psf=psf, abundances=abundances, departure_form=departure_form)

    def atm(x):
        return hydrostatic(model.with_columns(T=np.maximum(T0 + H @ x[:nk], _T_FLOOR),
                                              vlos=v0 + x[nk] + x[nk + 1] * grad,
                                              vmic=np.maximum(vm0 + x[nk + 2], 0.0)), mu=mu, abundances=abundances)

    def synth(m):
        return synthesize(m, lines, grid, departures=departures_at(m), **skw) + delta

    def resid(s):
        return np.where(ok_obs, (o - s) * w, 0.0).ravel()

    def merit(x, s):
        r = resid(s)
        c = x[:nk] - c_prior
        return float(r @ r + c @ P @ c)

    steps = np.r_[np.full(nk, _STEP_T), _STEP_V, _STEP_V, _STEP_V]
    x = np.zeros(nk + 3)
    m = atm(x)
    s = synth(m)
    phi0 = phi = merit(x, s)
    nsyn, lam, it = 1, 1e-3, 0
    J = np.empty((s.size, x.size))
    for it in range(1, max_iterations + 1):
        r0 = resid(s)
        for j in range(x.size):
            xj = x.copy()
            xj[j] += steps[j]
            J[:, j] = (r0 - resid(synth(atm(xj)))) / steps[j]
        nsyn += x.size
        A = J.T @ J
        A[:nk, :nk] += P
        g = J.T @ r0
        g[:nk] -= P @ (x[:nk] - c_prior)
        moved = False
        for _ in range(6):
            try:
                xn = x + np.linalg.solve(A + lam * np.diag(np.diag(A)), g)
                mn = atm(xn)
                sn = synth(mn)
            except (ValueError, np.linalg.LinAlgError, RuntimeError):
                lam *= 10.0
                continue
            nsyn += 1
            pn = merit(xn, sn)
            if np.isfinite(pn) and pn < phi:
                small = (phi - pn) < tol * phi
                x, m, s, phi = xn, mn, sn, pn
                lam = max(lam / 10.0, 1e-5)
                moved = True
                break
            lam *= 10.0
        if not moved or small:
            break
    rec = {"method": "map", "prior_amplitude_K": float(amplitude), "prior_length_dex": float(length),
           "knot_spacing_dex": float(spacing), "knots": int(nk), "iterations": int(it), "syntheses": int(nsyn),
           "merit_start": phi0, "merit": phi, "accepted": bool(phi < phi0)}
    return m, s, rec
