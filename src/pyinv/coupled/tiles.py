"""Tiles of a coupled inversion and the task that solves one of them in a worker process.

A map is cut into tiles of ``size`` × ``size`` pixels (the interior); each is solved together with a
border of ``border`` pixels on every side inside the map (the PSF reaches that far), and only its
interior is kept. Pixels of the border are free parameters of the tile's problem (their data constrain
the interior through the PSF), but their result comes from the tile whose interior they are. At the
outer edge of a tile the PSF sees the symmetric extension of the tile, a wrong guess of the pixels
beyond it that the border keeps away from the interior.

Everything a worker needs travels in :class:`CoupledProblem` (picklable: line list, grid, kernel, node
counts, settings) and the tile's own slices of the cube and of the start; the per-pixel syntheses and
Jacobians run in the worker that solves the tile.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import engine
from .pixels import NodeModel
from .psf import SpatialPSF
from .solver import data_weights, solve_tile

__all__ = ["Tile", "make_tiles", "CoupledProblem", "solve_task", "init_worker"]


@dataclass(frozen=True)
class Tile:
    """One tile: ``index``, its interior ``inner`` = (y0, y1, x0, x1) and the solved region ``outer`` (the
    interior plus the border, clipped to the map), half-open pixel ranges of the map."""

    index: int
    inner: tuple
    outer: tuple

    @property
    def inner_in_outer(self) -> tuple[slice, slice]:
        """Slices of the interior inside the solved region."""
        y0, y1, x0, x1 = self.inner
        oy, _, ox, _ = self.outer
        return slice(y0 - oy, y1 - oy), slice(x0 - ox, x1 - ox)

    @property
    def npix(self) -> int:
        y0, y1, x0, x1 = self.inner
        return (y1 - y0) * (x1 - x0)


def make_tiles(ny: int, nx: int, size: int, border: int) -> list[Tile]:
    """Tiles covering an ny × nx map: interiors of at most ``size`` × ``size`` pixels (equal shares along
    each axis), each solved with ``border`` more pixels on every side that lies inside the map."""
    if size < 1 or border < 0:
        raise ValueError(f"tile size must be >= 1 and border >= 0, got {size}, {border}")
    ty, tx = -(-ny // size), -(-nx // size)
    ey = np.linspace(0, ny, ty + 1).round().astype(int)
    ex = np.linspace(0, nx, tx + 1).round().astype(int)
    out = []
    for i in range(ty):
        for j in range(tx):
            y0, y1, x0, x1 = int(ey[i]), int(ey[i + 1]), int(ex[j]), int(ex[j + 1])
            outer = (max(0, y0 - border), min(ny, y1 + border), max(0, x0 - border), min(nx, x1 + border))
            out.append(Tile(len(out), (y0, y1, x0, x1), outer))
    return out


@dataclass
class CoupledProblem:
    """What every tile shares (sent to the workers once per task; small).

    ``nodes`` are the node counts of the configuration's last cycle in pyinv.engine.INV_SLOTS order;
    ``solver`` the keyword arguments of :func:`pyinv.coupled.solver.solve_tile` (controls only).
    """

    lines: Any
    grid: Any
    kernel: np.ndarray
    log_tau: np.ndarray
    nodes: tuple
    interp: int
    boundary: int
    bvalue: float
    mu: float
    eps: np.ndarray
    stokes_weights: tuple
    snr: float
    weighting: str
    spectral_psf: Any = None
    abundances: Any = None
    sir_compat: bool = False
    magnetic: bool = True
    solver: dict = field(default_factory=dict)

    def node_model(self) -> NodeModel:
        from ..physics.inversion import prepare_synthesis

        setup = prepare_synthesis(self.lines, self.grid, psf=self.spectral_psf, abundances=self.abundances,
                                  magnetic=self.magnetic, sir_compat=self.sir_compat, log_tau=self.log_tau)
        return NodeModel(setup, self.log_tau, self.nodes, self.interp, self.boundary, self.bvalue, self.mu, self.eps,
                         self.sir_compat)


def init_worker() -> None:
    """Pool initialiser: one BLAS/OpenMP thread per worker, the engine imported once."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    try:
        from threadpoolctl import threadpool_limits

        globals()["_LIMITS"] = threadpool_limits(limits=1)
    except Exception:  # pragma: no cover - threadpoolctl missing
        pass
    engine.api()


def solve_task(problem: CoupledProblem, tile: Tile, obs: np.ndarray, x0: np.ndarray, vmac0: np.ndarray,
               use: np.ndarray) -> dict:
    """Solve one tile (in a worker): ``obs (oy, ox, 4, nλ)``, ``x0 (oy, ox, ndep, 7)``, ``vmac0 (oy, ox)``
    over the tile's solved region, ``use (oy, ox)`` False for pixels whose data get no weight.

    Returns the interior's arrays (``x``, ``vmac``, ``pg``, ``rho``, ``z``, ``fit``, ``chi2``,
    ``chi2_reduced``, ``failed``) and ``info`` (iterations, χ² history, timings, ...)."""
    from ..physics.inversion import reduced_chi2

    t0 = time.perf_counter()
    model = problem.node_model()
    psf = SpatialPSF(problem.kernel)
    w = data_weights(obs, model, problem.stokes_weights, problem.snr, problem.weighting)
    w *= np.asarray(use, dtype=bool)[None]
    opts = dict(problem.solver)
    if "jacobian_dtype" in opts:
        opts["jacobian_dtype"] = np.dtype(opts["jacobian_dtype"])
    sol = solve_tile(obs, x0, vmac0, model, psf, weights=w, **opts)
    sy, sx = tile.inner_in_outer
    x = sol.x[sy, sx]
    vmac = sol.vmac[sy, sx]
    fit = sol.fit[sy, sx]
    o = obs[sy, sx]
    iy, ix = x.shape[:2]
    pg = np.full((iy, ix, model.ndep), np.nan)
    rho = np.full_like(pg, np.nan)
    z = np.full_like(pg, np.nan)
    chi2 = np.full((iy, ix), np.nan)
    chi2r = np.full((iy, ix), np.nan)
    for a in range(iy):
        for b in range(ix):
            xp = x[a, b]
            try:
                _, pgp, rhop, zp, _ = engine.hydrostatic_arrays(model.log_tau, xp[:, 0], float(xp[-1, 1]), model.boundary,
                                                                model.bvalue, model.mu, model.eps, model.eos_compat,
                                                                pe_guess=xp[:, 1])
                pg[a, b], rho[a, b], z[a, b] = pgp, rhop, zp
            except ValueError:
                pass
            op = o[a, b]
            if np.all(np.isfinite(op)):
                _, wgt, nobs, nmask, ierr = engine.inv_sigma(op, model.setup.wgrp, model.setup.ng,
                                                             problem.stokes_weights, problem.snr)
                if ierr == 0:
                    dof = max(nobs - model.m - nmask, 1)
                    chi2[a, b] = float(np.sum(wgt * (op - fit[a, b]) ** 2)) / dof
                chi2r[a, b] = reduced_chi2(op, fit[a, b], problem.snr, problem.stokes_weights, model.m)
    info = {"tile": tile.index, "inner": list(tile.inner), "outer": list(tile.outer),
            "iterations": sol.iterations, "trials": sol.trials, "jacobians": sol.jacobians, "chi2": [float(c) for c in sol.chi2],
            "cg_iterations": [int(c) for c in sol.cg_iterations], "lambda": [float(v) for v in sol.lam],
            "stop": sol.stop, "seconds": {k: float(v) for k, v in sol.seconds.items()},
            "wall": time.perf_counter() - t0, "solved_pixels": int(obs.shape[0] * obs.shape[1]),
            "pid": os.getpid()}
    return {"x": x, "macro": vmac, "pg": pg, "rho": rho, "z": z, "fit": fit, "chi2": chi2, "chi2_reduced": chi2r,
            "failed": sol.failed[sy, sx], "info": info}
