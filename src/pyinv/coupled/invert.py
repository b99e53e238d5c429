"""The entry point of spatially coupled inversions: :func:`invert_coupled` (see the package docstring)."""
from __future__ import annotations

import copy
import glob
import math
import os
import tempfile
import time
import warnings
from concurrent.futures import FIRST_COMPLETED, Executor, ProcessPoolExecutor, wait
from typing import Any, Callable

import numpy as np

from .. import engine
from ..config import NODE_PARAMETERS, NODES_MAX, InversionConfig
from ..status import STATUS_BAD_INPUT, STATUS_CONVERGED, STATUS_FAILED, STATUS_MASKED
from ..physics.inversion import top_boundary
from .psf import DEFAULT_BORDER_ENERGY, SpatialPSF
from .solver import WEIGHTINGS
from .store import TileStore, fingerprint
from .tiles import CoupledProblem, init_worker, make_tiles, solve_task

__all__ = ["invert_coupled", "DEFAULT_TILE", "SOLVER_DEFAULTS"]

#: Default tile interior [pixels]: a 64 × 64 interior with the Hinode 0.16″ PSF's 14-pixel border solves
#: 92 × 92 pixels, about 230 MB of float32 Jacobians per worker (112 λ, 15 nodes).
DEFAULT_TILE = 64
#: Default controls of the coupled Levenberg–Marquardt (pyinv.coupled.solver.solve_tile)
SOLVER_DEFAULTS = {"max_iterations": 20, "rtol": 1e-3, "lambda0": 0.1, "cg_tol": 0.1, "cg_maxiter": 40,
                   "max_failures": 6, "jacobian_reuse": 0, "jacobian_dtype": "float32"}


def invert_coupled(cube: Any, start: Any, spatial_psf: Any, *, lines, grid,
                   config: InversionConfig, psf: Any = None, abundances: Any = None, mu: float | None = None,
                   tile: int = DEFAULT_TILE, border: int | None = None, weighting: str = "noise",
                   workers: int | None = None, executor: Any = None, checkpoint: str | os.PathLike | None = None,
                   progress: bool | Callable = True, sir_compat: bool = False, **solver: Any):
    """Invert a map with all pixels coupled through the telescope's spatial PSF (package docstring)."""
    t0 = time.perf_counter()
    spsf = SpatialPSF(spatial_psf)
    obs = _check_cube(cube, grid)
    ny, nx = obs.shape[:2]
    if not isinstance(config, InversionConfig):
        raise ValueError(f"config must be a pyinv.InversionConfig, got {type(config).__name__}")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    unknown = set(solver) - set(SOLVER_DEFAULTS)
    if unknown:
        raise TypeError(f"invert_coupled() got unexpected keyword argument(s) {sorted(unknown)}; solver controls "
                        f"are {sorted(SOLVER_DEFAULTS)}")
    opts = {**SOLVER_DEFAULTS, **solver}
    _check_solver(opts)
    _refuse_unsupported(config)
    _check_start(start, obs)
    cyc = config.cycles
    lt = _log_tau(start)
    nodes = _last_cycle_nodes(config, lt.size)
    bkind, bval = top_boundary(config)
    mu_f = float(config.mu if mu is None else mu)
    if not 0.0 < abs(mu_f) <= 1.0:
        raise ValueError(f"mu must satisfy 0 < |mu| <= 1, got {mu_f}")
    if psf is None and config.psf_file:
        psf = config.resolve("psf_file")
    if abundances is None and config.abundances_file:
        abundances = config.resolve("abundances_file")
    eps = _eps(abundances)
    weights = tuple(float(v) for v in config.weights_for(cyc))
    snr = float(config.value("snr", cyc))
    source = _start_sources(start)
    magnetic = bool(np.any(np.abs(np.nan_to_num(start.atmospheres[..., 4])) > 0)) or nodes[3] > 0
    use = _finite_pixels(obs) & ~np.isin(start.status, (STATUS_MASKED, STATUS_BAD_INPUT))
    if not use.any():
        raise ValueError("no pixel has usable data (finite profiles and a start that is neither masked nor bad input)")
    bwidth = spsf.effective_radius(DEFAULT_BORDER_ENERGY) if border is None else int(border)
    if bwidth < 0:
        raise ValueError(f"border must be >= 0, got {border}")
    tsize = int(tile)
    if tsize < 1:
        raise ValueError(f"tile must be >= 1 pixel, got {tile}")
    tiles = make_tiles(ny, nx, tsize, bwidth)
    problem = CoupledProblem(lines=lines, grid=grid, kernel=spsf.kernel, log_tau=lt, nodes=tuple(nodes),
                             interp=int(config.value("interpolation", cyc)), boundary=bkind, bvalue=bval, mu=mu_f,
                             eps=eps, stokes_weights=weights, snr=snr, weighting=weighting, spectral_psf=psf,
                             abundances=abundances, sir_compat=bool(sir_compat), magnetic=magnetic, solver=opts)
    store = None
    if checkpoint is not None:
        inputs = {"cube": fingerprint(obs), "start": fingerprint(np.asarray(start.atmospheres)),
                  "start_macro": fingerprint(np.asarray(start.macro)), "use": fingerprint(use),
                  "psf": fingerprint(spsf.kernel), "config": fingerprint(config.to_sir_text()),
                  "lines": fingerprint(repr(lines)), "grid": fingerprint(np.asarray(grid.offset_mA)),
                  "spectral_psf": fingerprint(repr(psf)), "abundances": fingerprint(eps), "mu": fingerprint(mu_f),
                  "tiling": fingerprint([tsize, bwidth]), "weighting": weighting,
                  "solver": fingerprint(opts), "sir_compat": str(bool(sir_compat))}
        store = TileStore(checkpoint, inputs, len(tiles))
    out = _Outputs(start, obs.shape, lt, None if checkpoint is None else os.path.join(checkpoint, "result"))
    done = set()
    if store is not None:
        for k in sorted(store.finished()):
            arrays, info = store.load(k)
            out.put(tiles[k], arrays, info)
            done.add(k)
    pending = [t for t in tiles if t.index not in done]
    total = ny * nx
    bar = _progress(progress, total, sum(tiles[k].npix for k in done))
    nworkers = _workers(workers, len(pending))
    try:
        for t, res in _run(problem, pending, obs, start, source, use, executor, nworkers):
            arrays = {k: v for k, v in res.items() if k != "info"}
            if store is not None:
                store.save(t.index, arrays, res["info"])
            out.put(t, arrays, res["info"])
            bar.update(t.npix)
    finally:
        bar.close()
    prov = copy.deepcopy(start.provenance) if isinstance(start.provenance, dict) else {}
    prov["coupled"] = {"psf_shape": list(spsf.shape), "psf_r98": spsf.effective_radius(0.98), "tile": tsize,
                       "border": bwidth, "ntiles": len(tiles), "resumed_tiles": len(done), "weighting": weighting,
                       "nodes": dict(zip(engine.INV_SLOTS, nodes)), "solver": {k: str(v) for k, v in opts.items()},
                       "workers": nworkers, "executor": _executor_name(executor),
                       "checkpoint": None if checkpoint is None else os.fspath(checkpoint),
                       "seconds": time.perf_counter() - t0, "tiles": out.infos}
    return out.result(prov, use)


# ------------------------------------------------------------------------------------------ validation
def _check_cube(cube: Any, grid) -> np.ndarray:
    try:
        obs = np.asarray(cube, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"cube must be an array of numbers (ny, nx, 4, nλ): {exc}") from None
    if obs.ndim != 4 or obs.shape[2] != 4:
        raise ValueError(f"cube must have shape (ny, nx, 4, nλ), got {obs.shape}")
    if obs.shape[3] != grid.nwav:
        raise ValueError(f"cube has {obs.shape[3]} wavelengths but the grid has {grid.nwav}")
    if obs.shape[0] < 1 or obs.shape[1] < 1:
        raise ValueError(f"cube has no pixels: shape {obs.shape}")
    return obs


def _finite_pixels(obs: np.ndarray, rows: int = 16) -> np.ndarray:
    """(ny, nx) pixels whose profiles are all finite, a few rows at a time (no temporary of the cube's size)."""
    out = np.zeros(obs.shape[:2], dtype=bool)
    for y in range(0, obs.shape[0], rows):
        out[y:y + rows] = np.all(np.isfinite(obs[y:y + rows]), axis=(2, 3))
    return out


def _check_solver(opts: dict) -> None:
    for name in ("max_iterations", "cg_maxiter", "max_failures", "jacobian_reuse"):
        v = opts[name]
        low = 0 if name in ("max_iterations", "jacobian_reuse") else 1
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {v!r}")
    for name in ("rtol", "lambda0", "cg_tol"):
        v = opts[name]
        if not (isinstance(v, (int, float, np.floating)) and math.isfinite(float(v)) and float(v) >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
    if not float(opts["lambda0"]) > 0:
        raise ValueError("lambda0 must be > 0")
    if np.dtype(opts["jacobian_dtype"]) not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"jacobian_dtype must be float32 or float64, got {opts['jacobian_dtype']!r}")


def _refuse_unsupported(config: InversionConfig) -> None:
    """ValueError naming a setting of the configuration's last cycle that the coupled solver cannot honour."""
    c = config.cycles
    problems = []
    if any(v != 0 for v in config.nodes_for(c, 2).values()):
        problems.append("a second component (nodes2)")
    if config.value("invert_filling", c):
        problems.append("invert_filling")
    if config.value("invert_stray", c) or config.stray_file:
        problems.append("stray light (invert_stray / stray_file)")
    if config.contrast != -1.0:
        problems.append("contrast")
    if config.value("auto_nodes", c):
        problems.append("automatic node selection (auto_nodes)")
    if int(config.value("interpolation", c)) >= 2:
        problems.append(f"regularised interpolation {config.value('interpolation', c)} (only 0 or 1)")
    if config.magnetic_pressure:
        problems.append("magnetic_pressure")
    if config.nlte_file:
        problems.append("NLTE departures (nlte_file)")
    if any(float(w) < 0 for w in config.weights_for(c)):
        problems.append("negative Stokes weights")
    if problems:
        raise ValueError("the coupled inversion does not support " + ", ".join(problems) +
                         " (one LTE component, the last cycle's fixed nodes)")


#: what the start must have (a pyinv.InversionResult; checked by attribute, so that this package imports
#: nothing of the map layer, which calls it)
_START_FIELDS = ("atmospheres", "macro", "filling", "stray", "fits", "status", "start", "line_index", "offset_mA",
                 "wavelength", "provenance", "atmospheres2")


def _check_start(start: Any, obs: np.ndarray) -> None:
    missing = [f for f in _START_FIELDS if not hasattr(start, f)]
    if missing or isinstance(start, np.ndarray):
        raise ValueError(f"start must be a pyinv.InversionResult (a pixel-by-pixel inversion of the cube), "
                         f"got {type(start).__name__}")
    if start.atmospheres2 is not None:
        raise ValueError("start has two components; the coupled inversion supports one")
    sh = tuple(np.shape(start.atmospheres))
    if len(sh) != 4 or sh[:2] != obs.shape[:2] or sh[3] != 11:
        raise ValueError(f"start's atmospheres {sh} do not match the cube's map {obs.shape[:2]} (expected "
                         f"(ny, nx, ndep, 11))")
    if tuple(np.shape(start.fits)) != obs.shape:
        raise ValueError(f"start's fits {np.shape(start.fits)} do not match the cube {obs.shape}")


def _log_tau(start: Any) -> np.ndarray:
    """The common log τ grid of the start's models (ValueError when pixels differ or none is finite)."""
    lt_all = start.atmospheres[..., 0]
    ok = np.all(np.isfinite(start.atmospheres[..., :8]), axis=(2, 3))
    if not ok.any():
        raise ValueError("start holds no finite model")
    lt = lt_all[ok][0]
    if np.max(np.abs(lt_all[ok] - lt[None])) > 1e-6:
        raise ValueError("the start's models must share one log tau grid")
    steps = -np.diff(lt)
    if lt.size < 2 or np.any(np.abs(steps - steps[0]) > 2e-5):
        raise ValueError("the start's models must have a uniform log tau grid (SIR's inversion requirement)")
    return np.array(lt, dtype=np.float64)


def _last_cycle_nodes(config: InversionConfig, ndep: int) -> list[int]:
    """Node counts of the configuration's last cycle in engine slot order (rounded down to allowed counts, as
    the pixel solver)."""
    req = config.nodes_for(config.cycles)
    out = []
    for p in NODE_PARAMETERS:
        n = int(req.get(p, 0))
        if n == NODES_MAX:
            raise ValueError(f"nodes[{p!r}] of the last cycle is '*' (automatic selection): not supported")
        if n < 0:
            raise ValueError(f"nodes[{p!r}] = {n}: ties need two components")
        if p == "macro":
            out.append(min(n, 1))
            continue
        m = engine.inv_allowed_nodes(ndep, n) if n > 0 else 0
        if m != n:
            warnings.warn(f"nodes for {p} changed from {n} to {m} (allowed counts on {ndep} depth points)",
                          stacklevel=3)
        out.append(m)
    if not any(out):
        raise ValueError("the configuration's last cycle inverts nothing (all node counts are 0)")
    return out


def _eps(abundances: Any) -> np.ndarray:
    from ..physics.thermo import abundances_to_eps

    if isinstance(abundances, (str, os.PathLike)):
        from ..io.sir import read_abundances

        abundances = read_abundances(abundances)
    return abundances_to_eps(abundances)


def _start_sources(start: Any) -> np.ndarray:
    """(ny, nx, 2) the pixel whose start model each pixel takes: itself, or for a pixel without a finite
    model (vmac > 0) the nearest one with (still solved: the PSF mixes it into its neighbours)."""
    v = np.asarray(start.macro, dtype=np.float64)
    ok = np.all(np.isfinite(start.atmospheres[..., 1:8]), axis=(2, 3)) & np.isfinite(v) & (v > 0)
    if not ok.any():
        raise ValueError("start holds no finite model with vmac > 0")
    ny, nx = ok.shape
    src = np.stack(np.mgrid[0:ny, 0:nx], axis=-1)
    if not ok.all():
        gy, gx = np.nonzero(ok)
        for by, bx in zip(*np.nonzero(~ok)):
            k = int(np.argmin((gy - by) ** 2 + (gx - bx) ** 2))
            src[by, bx] = gy[k], gx[k]
    return src


def _tile_start(start: Any, source: np.ndarray, region: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Start models (oy, ox, ndep, 7) and vmac (oy, ox) of a tile's solved region."""
    y0, y1, x0, x1 = region
    sy, sx = source[y0:y1, x0:x1, 0], source[y0:y1, x0:x1, 1]
    x = np.ascontiguousarray(np.asarray(start.atmospheres)[sy, sx, :, 1:8], dtype=np.float64)
    v = np.ascontiguousarray(np.asarray(start.macro)[sy, sx], dtype=np.float64)
    return x, v


# ------------------------------------------------------------------------------------------ execution
def _workers(workers: int | None, ntasks: int) -> int:
    if workers is None:
        try:
            n = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - not Linux
            n = os.cpu_count() or 1
    else:
        if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
            raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
        n = int(workers)
    return max(1, min(n, max(ntasks, 1)))


def _executor_name(executor: Any) -> str:
    if executor is None:
        return "local process pool"
    if isinstance(executor, str):
        return executor
    return type(executor).__name__


def _mp_context():
    import multiprocessing as mp

    method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    return mp.get_context(method)


def _run(problem: CoupledProblem, tiles: list, obs, start, source, use, executor: Any, nworkers: int):
    """Solve the tiles, yielding (tile, result) as they finish: in this process (``executor="serial"``), on a
    local process pool (None), or on a given Executor / dask.distributed Client. At most 2 tasks per
    worker are in flight (the caller's memory holds only their inputs)."""
    if not tiles:
        return

    def args(t):
        y0, y1, xa, xb = t.outer
        x0, vmac0 = _tile_start(start, source, t.outer)
        return (problem, t, np.ascontiguousarray(obs[y0:y1, xa:xb]), x0, vmac0,
                np.ascontiguousarray(use[y0:y1, xa:xb]))

    if isinstance(executor, str):
        if executor != "serial":
            raise ValueError(f"executor must be None, 'serial', a concurrent.futures.Executor or a dask Client, "
                             f"got {executor!r}")
        for t in tiles:
            yield t, solve_task(*args(t))
        return
    own = executor is None
    if own:
        ex: Any = ProcessPoolExecutor(max_workers=nworkers, mp_context=_mp_context(), initializer=init_worker)
    elif hasattr(executor, "get_executor") and not isinstance(executor, Executor):   # distributed.Client
        ex = executor.get_executor()
    elif hasattr(executor, "submit"):
        ex = executor
    else:
        raise ValueError(f"executor must be None, 'serial', a concurrent.futures.Executor or a dask Client, "
                         f"got {executor!r}")
    try:
        queue = list(tiles)
        running: dict = {}
        limit = nworkers + 1  # one waiting task: the caller holds the inputs of nworkers + 1 tiles
        while queue or running:
            while queue and len(running) < limit:
                t = queue.pop(0)
                running[ex.submit(solve_task, *args(t))] = t
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for f in finished:
                t = running.pop(f)
                yield t, f.result()
    finally:
        if own:
            ex.shutdown(wait=True, cancel_futures=True)


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


class _CallBar:
    def __init__(self, fn: Callable, total: int, done: int):
        self.fn, self.total, self.done = fn, total, done
        fn(done, total)

    def update(self, n: int) -> None:
        self.done += n
        self.fn(self.done, self.total)

    def close(self) -> None:
        pass


def _progress(progress: Any, total: int, done: int):
    if callable(progress):
        return _CallBar(progress, total, done)
    if not progress:
        return _NoBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return _NoBar()
    return tqdm(total=total, initial=done, unit="px", desc="coupled inversion", smoothing=0.1)


# ------------------------------------------------------------------------------------------ result
class _Outputs:
    """The result arrays of the map, filled tile by tile: in memory, or (with ``folder``, the checkpoint's
    ``result/``) the two large ones — atmospheres (ny, nx, ndep, 11) and fits (ny, nx, 4, nλ) — written
    row segment by row segment into ``.npy`` files with ordinary writes (no page of them is mapped in this
    process) and returned memory-mapped (copy-on-write), so that the caller's memory does not grow with
    the map."""

    def __init__(self, start: Any, shape: tuple, log_tau: np.ndarray, folder: str | os.PathLike | None = None):
        ny, nx, _, nw = shape
        nd = log_tau.size
        self.start, self.log_tau = start, log_tau
        self.folder = folder
        if folder is None:
            self.atm = np.full((ny, nx, nd, 11), np.nan)
            self.fits = np.full((ny, nx, 4, nw), np.nan)
        else:
            os.makedirs(folder, exist_ok=True)
            for old in glob.glob(os.path.join(folder, "*.npy")):  # an earlier run's (still mapped by its result:
                try:                                              # unlinking keeps its pages)
                    os.unlink(old)
                except OSError:  # pragma: no cover - e.g. a file still open on Windows
                    pass
            self.atm = _NpyRows(folder, "atmospheres", (ny, nx, nd, 11))
            self.fits = _NpyRows(folder, "fits", (ny, nx, 4, nw))
        self.macro = np.full((ny, nx), np.nan)
        self.chi2 = np.full((ny, nx), np.nan)
        self.chi2r = np.full((ny, nx), np.nan)
        self.iters = np.zeros((ny, nx), dtype=np.int64)
        self.secs = np.full((ny, nx), np.nan)
        self.failed = np.zeros((ny, nx), dtype=bool)
        self.infos: list = []

    def put(self, tile, arrays: dict, info: dict) -> None:
        y0, y1, x0, x1 = tile.inner
        a = np.empty(arrays["x"].shape[:3] + (11,))
        a[..., 0] = self.log_tau
        a[..., 1:8] = arrays["x"]
        a[..., 8], a[..., 9], a[..., 10] = arrays["z"], arrays["pg"], arrays["rho"]
        # γ into [0°, 180°] (the same Stokes vector), as the pixel solver reports it
        g = np.mod(a[..., 6], 360.0)
        a[..., 6] = np.where(g > 180.0, 360.0 - g, g)
        self.atm[y0:y1, x0:x1] = a
        self.fits[y0:y1, x0:x1] = arrays["fit"]
        self.macro[y0:y1, x0:x1] = arrays["macro"]
        self.chi2[y0:y1, x0:x1] = arrays["chi2"]
        self.chi2r[y0:y1, x0:x1] = arrays["chi2_reduced"]
        self.iters[y0:y1, x0:x1] = int(info.get("iterations", 0))
        self.secs[y0:y1, x0:x1] = float(info.get("wall", np.nan)) / max(tile.npix, 1)
        self.failed[y0:y1, x0:x1] = arrays["failed"]
        self.infos.append({k: info[k] for k in ("tile", "inner", "outer", "iterations", "trials", "jacobians", "chi2", "stop",
                                                "wall", "seconds", "cg_iterations", "lambda") if k in info})

    def result(self, provenance: dict, use: np.ndarray):
        """The result, of the start's class (pyinv.InversionResult)."""
        st = self.start
        status = np.where(self.failed, STATUS_FAILED, STATUS_CONVERGED).astype(np.asarray(st.status).dtype)
        keep = np.isin(st.status, (STATUS_MASKED, STATUS_BAD_INPUT))
        status = np.where(keep, st.status, status)
        status = np.where(~use & ~keep, STATUS_BAD_INPUT, status)
        blank = ~use
        for arr in (self.atm, self.fits):
            if isinstance(arr, np.ndarray):
                arr[blank] = np.nan
            else:  # the checkpoint's files: one positioned write per blank pixel
                for y, x in zip(*np.nonzero(blank)):
                    arr[y:y + 1, x:x + 1] = np.nan
        for arr in (self.macro, self.chi2, self.chi2r):
            arr[blank] = np.nan
        ny, nx = self.macro.shape
        atm, fits = self.atm, self.fits
        if self.folder is None:
            errors = np.full_like(atm, np.nan)
        else:  # memory-mapped; errors: NaN (none yet) without memory
            atm, fits = atm.open(), fits.open()
            errors = np.broadcast_to(np.float64(np.nan), atm.shape)
        self.infos.sort(key=lambda d: d.get("tile", 0))
        return type(st)(
            atmospheres=atm, macro=self.macro, filling=np.array(st.filling, dtype=np.float64, copy=True),
            stray=np.array(st.stray, dtype=np.float64, copy=True), fits=fits, chi2=self.chi2,
            chi2_cycles=self.chi2[..., None].copy(), status=status, iterations=self.iters,
            errors=errors, errors_header=np.full((ny, nx, 3), np.nan),
            start=np.zeros((ny, nx), dtype=np.asarray(st.start).dtype), seconds=self.secs,
            line_index=np.array(st.line_index, copy=True), offset_mA=np.array(st.offset_mA, copy=True),
            wavelength=np.array(st.wavelength, copy=True), provenance=provenance, chi2_reduced=self.chi2r,
            rescue=np.zeros((ny, nx), dtype=np.int8))


class _NpyRows:
    """A float64 ``.npy`` file of ``shape`` (ny, nx, ...) written by blocks ``[y0:y1, x0:x1]`` with ordinary
    positioned writes, one row segment each (its pages are never mapped here); :meth:`open` maps it."""

    def __init__(self, folder: str | os.PathLike, name: str, shape: tuple):
        fd, self.path = tempfile.mkstemp(prefix=f"{name}-", suffix=".npy", dir=folder)  # a new file per run
        self.shape = tuple(int(v) for v in shape)
        self.pixel = int(np.prod(self.shape[2:], dtype=np.int64)) * 8
        with os.fdopen(fd, "wb") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": self.shape})
            self.offset = f.tell()
            f.truncate(self.offset + self.shape[0] * self.shape[1] * self.pixel)  # a sparse file

    def __setitem__(self, key: tuple, value: Any) -> None:
        ys, xs = key
        y0, y1, x0, x1 = ys.start, ys.stop, xs.start, xs.stop
        block = np.ascontiguousarray(np.broadcast_to(np.asarray(value, dtype="<f8"),
                                                     (y1 - y0, x1 - x0) + self.shape[2:]))
        fd = os.open(self.path, os.O_WRONLY)
        try:
            for k in range(y1 - y0):
                os.pwrite(fd, block[k].tobytes(), self.offset + ((y0 + k) * self.shape[1] + x0) * self.pixel)
        finally:
            os.close(fd)

    def open(self) -> np.ndarray:
        return np.load(self.path, mmap_mode="c")
