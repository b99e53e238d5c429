"""Levenberg–Marquardt inversion of one tile with every pixel coupled through the spatial PSF:
:func:`solve_tile`.

Merit: χ²(θ) = Σ_{c,p} w_{c,p} (O_{c,p} − [P S(θ)]_{c,p})², S_p(θ_p) the synthesis of pixel p, P the
convolution with the telescope PSF (van Noort 2012, A&A 548, A5; de la Cruz Rodríguez 2019, A&A 631,
A153). Each outer iteration

1. linearises at the current models (engine node Jacobians of every pixel, :mod:`.pixels`);
2. solves (Jᵀ W J + λ D) δ = Jᵀ W r matrix-free with block-preconditioned conjugate gradients
   (:mod:`.operator`), D the diagonal of the pixel blocks of Jᵀ W J (Marquardt's scaling, as SIR's
   α_jj (1 + λ));
3. builds the trial models with the pixel solver's parametrisation, clipping and hydrostatic
   equilibrium, synthesises them and accepts the step when χ² decreases;
4. updates λ from the gain ratio ρ = (χ² − χ²_trial) / (2 δᵀb − δᵀJᵀWJ δ) (Nielsen 1999): on success
   λ ← λ max(1/3, 1 − (2ρ − 1)³), on failure λ ← ν λ, ν ← 2ν.

It stops after ``max_iterations`` accepted steps, when two accepted steps in a row reduce χ² by less
than ``rtol`` × χ², or after ``max_failures`` rejected trials in a row.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .. import engine
from .operator import CoupledOperator, block_inverse, pcg
from .pixels import NodeModel
from .psf import SpatialPSF

__all__ = ["TileSolution", "solve_tile", "data_weights", "WEIGHTINGS"]

#: data weightings: "sir" SIR's per-pixel σ of each line and Stokes parameter from the observed amplitudes
#: (spec-inversion §3.1, the pixel solver's); "noise" σ = 1/(S/N √w_s) for every point of Stokes s.
WEIGHTINGS = ("sir", "noise")


def data_weights(obs: np.ndarray, model: NodeModel, stokes_weights, snr: float, weighting: str = "sir") -> np.ndarray:
    """Weights 1/σ² of every data point, (4·nλ, ny, nx); 0 where the observation is not finite or masked
    (< −0.99, SIR's rule) and for Stokes parameters of weight 0."""
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    ny, nx, ns, nw = obs.shape
    out = np.zeros((ny, nx, 4, nw))
    sw = np.asarray(stokes_weights, dtype=np.float64)
    for iy in range(ny):
        for ix in range(nx):
            o = obs[iy, ix]
            good = np.isfinite(o)
            if not good.all():
                if not good[0].any():
                    continue
                o = np.where(good, o, -1.0)     # masked for SIR's σ
            if weighting == "sir":
                _, wgt, _, _, ierr = engine.inv_sigma(o, model.setup.wgrp, model.setup.ng, sw, float(snr))
                if ierr != 0:
                    continue
            else:
                wgt = np.repeat((sw * float(snr) ** 2)[:, None], nw, axis=1) * (o > -0.99)
            out[iy, ix] = np.where(good, wgt, 0.0)
    return np.ascontiguousarray(np.moveaxis(out.reshape(ny, nx, 4 * nw), 2, 0))


@dataclass
class TileSolution:
    """Result of :func:`solve_tile` (arrays over the tile's pixels).

    Attributes
    ----------
    x : ndarray (ny, nx, ndep, 7)
        Models in pyinv.engine.MODEL_COLUMNS order; ``vmac`` (ny, nx) [km/s].
    synthesis : ndarray (ny, nx, 4, nλ)
        Their profiles S (spectral PSF and macroturbulence applied, no spatial PSF).
    fit : ndarray (ny, nx, 4, nλ)
        P S, the model of the observed tile.
    weights : ndarray (ny, nx, 4, nλ)
        The data weights used.
    chi2 : list of float
        χ² = Σ w (O − P S)² of the start and after every accepted step.
    iterations, trials : int
        Accepted steps, trial models.
    cg_iterations : list of int
        CG iterations of every trial.
    jacobians : int
        Exact Jacobian evaluations (the others were secant updates).
    lam : list of float
        λ of every trial.
    failed : ndarray of bool (ny, nx)
        Pixels whose synthesis or Jacobian failed at least once (their model was then kept).
    seconds : dict
        Wall time of the Jacobians, CG, trials (syntheses and hydrostatics) and in total.
    stop : str
        Why the iterations stopped.
    """

    x: np.ndarray
    vmac: np.ndarray
    synthesis: np.ndarray
    fit: np.ndarray
    weights: np.ndarray
    chi2: list
    iterations: int
    trials: int
    cg_iterations: list
    lam: list
    failed: np.ndarray
    jacobians: int = 0
    seconds: dict = field(default_factory=dict)
    stop: str = ""


def solve_tile(obs: np.ndarray, x0: np.ndarray, vmac0: np.ndarray, model: NodeModel, psf: SpatialPSF, *,
               stokes_weights=(1.0, 1.0, 1.0, 1.0), snr: float = 1000.0, weighting: str = "sir",
               weights: np.ndarray | None = None, max_iterations: int = 20, rtol: float = 1e-3,
               lambda0: float = 0.1, cg_tol: float = 0.1, cg_maxiter: int = 40, max_failures: int = 6,
               jacobian_reuse: int = 1, jacobian_dtype=np.float64, callback=None) -> TileSolution:
    """Coupled LM inversion of one tile (module docstring).

    Parameters
    ----------
    obs : ndarray (ny, nx, 4, nλ)
        Observed profiles of the tile (non-finite values get zero weight).
    x0, vmac0 : ndarray (ny, nx, ndep, 7), (ny, nx)
        Start models (finite) in MODEL_COLUMNS order and their macroturbulence.
    model : NodeModel
        Node layout, set-up and hydrostatics.
    psf : SpatialPSF
    stokes_weights, snr, weighting :
        Data weights (:func:`data_weights`), unless ``weights`` (4·nλ, ny, nx) is given.
    max_iterations, rtol, lambda0, cg_tol, cg_maxiter, max_failures :
        Outer and inner iteration controls (module docstring; ``cg_tol`` relative residual of CG).
    jacobian_reuse : int
        After an accepted step with gain ratio > 0.5, the pixels' Jacobians are updated with Broyden's
        secant formula instead of recomputed, at most this many times in a row (as the pixel solver's
        ``jacobian_reuse``; 0 = new Jacobians after every accepted step).
    jacobian_dtype : numpy dtype
        Storage of the per-pixel Jacobians (float32 halves the tile's largest array).
    callback : callable, optional
        Called as ``callback(iteration, chi2)`` after every accepted step.
    """
    t_start = time.perf_counter()
    obs = np.asarray(obs, dtype=np.float64)
    ny, nx, _, nw = obs.shape
    npix = ny * nx
    nd = model.ndep
    x = np.array(x0, dtype=np.float64).reshape(npix, nd, 7)
    vmac = np.array(vmac0, dtype=np.float64).reshape(npix)
    if weights is None:
        weights = data_weights(obs, model, stokes_weights, snr, weighting)
    w_full = np.asarray(weights, dtype=np.float64).reshape(4 * nw, ny, nx)
    chan = np.flatnonzero(np.any(w_full > 0, axis=(1, 2)))        # channels with data in the tile
    w = np.ascontiguousarray(w_full[chan])
    o = np.moveaxis(np.where(np.isfinite(obs), obs, 0.0).reshape(npix, 4 * nw), 1, 0)[chan].reshape(-1, ny, nx)
    secs = {"jacobian": 0.0, "cg": 0.0, "trial": 0.0}

    def cube(s: np.ndarray) -> np.ndarray:           # (npix, 4, nλ) → active channels (nchan, ny, nx)
        return np.moveaxis(s.reshape(npix, 4 * nw), 1, 0)[chan].reshape(-1, ny, nx)

    t = time.perf_counter()
    syn, ok = model.synthesize(x, vmac)
    failed = ~ok
    if failed.any():  # a start the engine cannot synthesise: its observation stands in, never moved
        fill = np.where(np.isfinite(obs.reshape(npix, 4, nw)), obs.reshape(npix, 4, nw), 0.0)
        syn[failed] = fill[failed]
    secs["trial"] += time.perf_counter() - t
    fit = psf.apply(cube(syn))
    resid = o - fit
    chi2 = float(np.sum(w * resid * resid))
    history, lams, cgits = [chi2], [], []
    jac = np.zeros((npix, chan.size, model.m), dtype=jacobian_dtype)

    def linearise() -> CoupledOperator:
        tj = time.perf_counter()
        okj = model.jacobian(x, vmac, jac, chan)
        failed[~okj] = True
        jac[failed] = 0.0
        secs["jacobian"] += time.perf_counter() - tj
        return CoupledOperator(jac, w, psf)

    op = linearise()
    lam, nu = float(lambda0), 2.0
    nacc = ntrial = nfail = nsmall = nreuse = 0
    nexact = 1
    stop = "max_iterations"
    blocks = grad = diag = None
    while nacc < max_iterations:
        if blocks is None:
            tc = time.perf_counter()
            blocks = op.pixel_blocks()
            diag = np.einsum("pii->pi", blocks).copy()
            # a parameter that no data point sees gets a unit diagonal (its gradient is zero too)
            diag[diag <= 0] = 1.0
            grad = op.gradient(resid)
            secs["cg"] += time.perf_counter() - tc
        tc = time.perf_counter()
        damp = lam * diag
        pre = block_inverse(blocks + damp[:, :, None] * np.eye(model.m)[None])
        delta, info = pcg(op, grad, damp, pre, tol=cg_tol, maxiter=cg_maxiter)
        delta[failed] = 0.0
        pred = 2.0 * float(np.sum(delta * grad)) - op.quadratic(delta)
        secs["cg"] += time.perf_counter() - tc
        ntrial += 1
        lams.append(lam)
        cgits.append(info.iterations)
        tt = time.perf_counter()
        xt, vt, okt = model.trial(x, vmac, delta)
        moved = okt & ~failed
        st = syn.copy()
        _, oks = model.synthesize(xt, vt, pixels=np.flatnonzero(moved), out=st)
        bad = moved & ~oks
        if bad.any():  # the engine refused these trial models: keep the old ones
            xt[bad], vt[bad], st[bad] = x[bad], vmac[bad], syn[bad]
        secs["trial"] += time.perf_counter() - tt
        fit_t = psf.apply(cube(st))
        resid_t = o - fit_t
        chi2_t = float(np.sum(w * resid_t * resid_t))
        if np.isfinite(chi2_t) and chi2_t < chi2:
            rho = (chi2 - chi2_t) / pred if pred > 0 else 1.0
            gain = (chi2 - chi2_t) / chi2
            x_old, vmac_old, syn_old = x, vmac, syn
            x, vmac, syn, fit, resid, chi2 = xt, vt, st, fit_t, resid_t, chi2_t
            history.append(chi2)
            nacc += 1
            nfail = 0
            lam = max(lam * max(1.0 / 3.0, 1.0 - (2.0 * min(rho, 1.0) - 1.0) ** 3), 1e-9)
            nu = 2.0
            if callback is not None:
                callback(nacc, chi2)
            nsmall = nsmall + 1 if gain < rtol else 0
            if nsmall >= 2:
                stop = "rtol"
                break
            if nacc >= max_iterations:
                break
            if nreuse < jacobian_reuse and rho > 0.5:
                tj = time.perf_counter()
                ds = (syn - syn_old).reshape(npix, 4 * nw)[:, chan]
                model.secant_update(jac, x_old, vmac_old, x, vmac, ds, np.flatnonzero(moved & ~failed))
                secs["jacobian"] += time.perf_counter() - tj
                nreuse += 1
            else:
                op = linearise()
                nreuse = 0
                nexact += 1
            blocks = None
        else:
            nfail += 1
            lam *= nu
            nu *= 2.0
            if nfail >= max_failures:
                stop = "failures"
                break
    secs["total"] = time.perf_counter() - t_start
    return TileSolution(x=x.reshape(ny, nx, nd, 7), vmac=vmac.reshape(ny, nx),
                        synthesis=syn.reshape(ny, nx, 4, nw), fit=_full_fit(psf, syn, fit, chan, ny, nx, nw),
                        weights=np.moveaxis(w_full.reshape(4, nw, ny, nx), (0, 1), (2, 3)).copy(),
                        chi2=history, iterations=nacc, trials=ntrial, cg_iterations=cgits, lam=lams,
                        failed=failed.reshape(ny, nx), jacobians=nexact, seconds=secs, stop=stop)



def _full_fit(psf: SpatialPSF, syn: np.ndarray, fit: np.ndarray, chan: np.ndarray, ny: int, nx: int,
              nw: int) -> np.ndarray:
    """P S on every channel (ny, nx, 4, nλ): the active channels from ``fit``, the others (no weight, but
    reported) convolved here."""
    out = np.empty((4 * nw, ny, nx))
    out[chan] = fit
    rest = np.setdiff1d(np.arange(4 * nw), chan)
    if rest.size:
        s = np.moveaxis(syn.reshape(ny * nx, 4 * nw), 1, 0)[rest].reshape(-1, ny, nx)
        out[rest] = psf.apply(s)
    return np.moveaxis(out.reshape(4, nw, ny, nx), (0, 1), (2, 3)).copy()
