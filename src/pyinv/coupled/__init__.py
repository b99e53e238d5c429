"""Spatially coupled inversions: every pixel of a map fitted together through the telescope's spatial PSF
(issue 20).

A telescope's point-spread function mixes the light of neighbouring pixels, so the observed profiles
O of a map are modelled as O = P S(θ): the per-pixel syntheses S_p(θ_p) convolved, wavelength by
wavelength and Stokes parameter by Stokes parameter, with the 2-D PSF kernel K (P, its adjoint Pᵀ = the
correlation with K). A pixel-by-pixel inversion fits S_p to the degraded O_p and returns a blurred,
biased map; the coupled inversion fits all node parameters θ at once (van Noort 2012, A&A 548, A5;
de la Cruz Rodríguez 2019, A&A 631, A153 discuss the same operator and the same normal equations).

Entry point
-----------
``invert_coupled(cube, start, spatial_psf, *, lines, grid, config, psf=None, abundances=None, mu=None,
tile=64, border=None, weighting="noise", workers=None, executor=None, checkpoint=None, progress=True,
sir_compat=False, max_iterations=20, rtol=1e-3, lambda0=0.1, cg_tol=0.1, cg_maxiter=40, max_failures=6,
jacobian_reuse=0, jacobian_dtype="float32") -> pyinv.InversionResult``

* ``cube`` (ny, nx, 4, nλ): the observed Stokes map (normalised as for :func:`pyinv.invert`); non-finite
  pixels get no weight (status 102).
* ``start``: the :class:`pyinv.InversionResult` of an ordinary pixel-by-pixel inversion of the same cube
  (``pyinv.invert(cube, lines, grid, config, ...)``); its models are the start, its masked (101) and
  bad-input (102) pixels keep their status and give no data (their models, filled from the nearest pixel,
  are still solved: the PSF spreads them into their neighbours).
* ``spatial_psf``: the kernel (ky, kx) in map pixels, a FITS path (astropy) or a :class:`SpatialPSF`;
  normalised to unit sum; ValueError when it is not 2-D, not finite or negative. Centre: sample
  (ky // 2, kx // 2). The map's edges are handled by mirror extension.
* ``lines``, ``grid``, ``config``, ``psf`` (spectral PSF), ``abundances``, ``mu``, ``sir_compat``: as for
  :func:`pyinv.invert`. The last cycle's node counts, Stokes weights, S/N, interpolation (0/1) and top
  boundary are used. Refused (ValueError): two components, filling factor, stray light, continuum contrast,
  automatic nodes, regularised interpolation (2–5), magnetic pressure, NLTE departures.
* ``tile``, ``border``: interior side of the tiles [pixels] and the border solved around each (default: the
  radius holding 98 % of the PSF's energy, 14 pixels for Hinode SP at 0.16″); only a tile's interior is
  kept. ``workers`` / ``executor``: local process pool (default, forkserver/spawn: scripts need the
  ``if __name__ == "__main__":`` guard), ``"serial"``, a ``concurrent.futures.Executor`` or a
  ``dask.distributed.Client``; each tile's syntheses and Jacobians run in the worker that solves it.
  ``checkpoint``: folder of finished tiles; a rerun with the same inputs skips them (other inputs are
  refused). With it the run's memory is bounded: the result's ``atmospheres`` and ``fits`` are written tile
  by tile to ``<checkpoint>/result/`` and returned memory-mapped (copy-on-write; ``errors`` is a read-only
  NaN array), the cube and the start may be memory-mapped arrays (``np.load(..., mmap_mode="r")``, a
  checkpointed ``pyinv.invert`` result) read tile by tile, and at most ``workers`` + 1 tiles' inputs are
  in flight. ``progress``: tqdm bar, or a callable ``progress(done, total)`` (pixels).
* ``weighting``: ``"noise"`` (default) σ = 1/(S/N √w_s) for every point of Stokes s (the configuration's
  weights); ``"sir"`` SIR's per-pixel amplitude-scaled σ of the pixel solver (which up-weights weak Q, U and
  over-fits their noise once the PSF couples the pixels).
* solver controls (:data:`SOLVER_DEFAULTS`): outer LM iterations and stop (two accepted steps in a row
  gaining less than ``rtol`` × χ²), initial λ, CG tolerance (relative preconditioned residual) and
  iterations, rejected trials in a row, Broyden updates of the pixels' Jacobians between exact ones
  (``jacobian_reuse``), storage of the Jacobians (float32 halves a tile's largest array).

Returns an :class:`pyinv.InversionResult` of the same shape and fields as the pixel-by-pixel one:
``atmospheres`` (z, P_g, ρ from hydrostatic equilibrium), ``macro``, ``fits`` = P S (the model of the
*observed*, degraded profiles; the unconvolved profiles are ``pyinv.synthesize`` of the models),
``chi2`` (SIR's normalisation against the fit), ``chi2_reduced`` (noise model), ``iterations`` (accepted
steps of the pixel's tile), ``seconds`` (tile wall time per interior pixel), ``status`` (0; 103 where the
engine failed on the pixel during the coupled solve and its model was frozen; 101/102 as above);
``errors`` are NaN (no coupled uncertainties yet); ``filling``, ``stray`` from the start;
``provenance`` = the start's plus ``"coupled"`` (tiling, nodes, solver controls, per-tile χ² history,
iterations and timings).

Method (modules)
----------------
* :mod:`.psf` — :class:`SpatialPSF`: P and Pᵀ by real FFTs with symmetric edge extension (exact adjoint).
* :mod:`.pixels` — the pixel solver's node parametrisation vectorised over pixels (relative/log/angle
  slots, SIR's clipping, hydrostatic P_e), engine syntheses and node Jacobians (analytic RFs).
* :mod:`.operator` — J = P blockdiag(J_p); matrix-free Jᵀ W J; block-diagonal preconditioner
  H_p = J_pᵀ diag(Σ_q K(q−p)² w_q) J_p (the exact pixel blocks away from the edges); PCG.
* :mod:`.solver` — the LM loop of one tile: (Jᵀ W J + λ D) δ = Jᵀ W r, D = diag(H_p), inexact CG
  (relative preconditioned residual ``cg_tol``), gain-ratio λ (Nielsen 1999), step accepted when χ² falls.
* :mod:`.tiles`, :mod:`.store` — tiling with borders, the worker task, the resumable tile store.
* :mod:`.invert` — :func:`invert_coupled`: validation, execution, the result.
"""
from __future__ import annotations

from .invert import DEFAULT_TILE, SOLVER_DEFAULTS, invert_coupled
from .operator import CoupledOperator, pcg
from .psf import SpatialPSF, load_spatial_psf

__all__ = ["invert_coupled", "SpatialPSF", "load_spatial_psf", "CoupledOperator", "pcg", "DEFAULT_TILE",
           "SOLVER_DEFAULTS"]
