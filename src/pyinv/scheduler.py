"""Pixels → executors: chunking, worker set-up, load balancing, progress, retries, checkpoint store.

How a map is run
----------------
* The pixels to compute are cut into chunks (contiguous runs of raster indices). A bounded window of
  chunks is in flight; a worker that finishes takes the next one (dynamic load balancing).
* **Local pool** (default): a :class:`concurrent.futures.ProcessPoolExecutor` (forkserver start where
  available). Every worker runs :func:`_init_local_worker` once: it imports the engine, pins BLAS/OpenMP
  threads to 1 (threadpoolctl) and memory-maps the inputs (cube, guess table, per-pixel indices) that the
  parent wrote once to a temporary folder (``/dev/shm`` when it has room). Tasks carry only pixel
  indices; workers write each finished pixel straight into the result store (also memory-mapped), so
  nothing but indices crosses a pipe.
* **Any other** :class:`concurrent.futures.Executor` (dask ``client.get_executor()``, a ``distributed.Client``,
  ``mpi4py.futures.MPIPoolExecutor``, ...): tasks carry their chunk's profiles and guesses and return the
  results, which the parent writes into the store.
* ``executor="serial"`` runs in the calling process (debugging/profiling; no fault isolation).

Faults
------
* An exception inside the per-pixel solver gives that pixel ``STATUS_FAILED`` and NaNs.
* A worker process that dies (segfault, ``kill -9``) breaks a local pool: the parent builds a new pool
  and resubmits every unfinished pixel; pixels that were being computed when a worker died are rerun
  one at a time with nothing else running (so a death is attributed to the right pixel), and a pixel
  that kills its worker ``retries + 1`` times while running alone is given ``STATUS_WORKER_DIED``. With
  other executors a chunk that raises is retried pixel by pixel, up to ``retries`` times.
* A run that stops early (an exception or ``KeyboardInterrupt`` in the parent, or SIGTERM: while a local
  pool runs, SIGTERM in the main thread raises ``SystemExit(143)`` if its handler was the default) ends
  its pool workers at once instead of waiting for their chunks; finished pixels stay in the store, so a
  rerun with the same checkpoint resumes.
* ``time_limit`` (seconds per pixel and start): a pixel still running after it gets ``STATUS_TIMEOUT``.
  The limit is enforced with SIGALRM (Python-level) and, in local pool workers, a hard CPU-time limit of
  ``2·time_limit + 1`` s (SIGPROF kills the worker; the parent records the timeout). Executors that
  run tasks outside the main thread of their process (dask workers) cannot take signals: there the
  limit is not enforced.

Checkpoint store
----------------
A folder of ``.npy`` files (memory-mapped), one per output, indexed by raster pixel, plus
``meta.json`` (shapes and a fingerprint of every input). ``status == STATUS_PENDING`` marks pixels not
yet finished; each pixel's data are written before its status. Reopening a store with the same
fingerprint computes only the pending pixels; a store made for other inputs is refused.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import json
import os
import pickle
import shutil
import signal
import tempfile
import threading
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Executor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

__all__ = ["STATUS_PENDING", "STATUS_CONVERGED", "STATUS_MASKED", "STATUS_BAD_INPUT", "STATUS_FAILED",
           "STATUS_TIMEOUT", "STATUS_WORKER_DIED", "STATUS_NAMES", "PixelProblem", "PixelTimeout",
           "ResultStore", "run_pixels", "usable_cores"]

#: Not computed yet (only inside a store).
STATUS_PENDING = -1
#: Converged (the solver's own nonzero codes are kept as they come).
STATUS_CONVERGED = 0
#: Excluded by ``mask``.
STATUS_MASKED = 101
#: The observed profiles of the pixel contain NaN or infinite values.
STATUS_BAD_INPUT = 102
#: The solver raised an exception.
STATUS_FAILED = 103
#: The pixel exceeded ``time_limit``.
STATUS_TIMEOUT = 104
#: A worker process died while computing the pixel, ``retries + 1`` times.
STATUS_WORKER_DIED = 105

STATUS_NAMES = {STATUS_PENDING: "pending", STATUS_CONVERGED: "converged", STATUS_MASKED: "masked",
                STATUS_BAD_INPUT: "bad input (NaN/inf)", STATUS_FAILED: "solver raised",
                STATUS_TIMEOUT: "time limit", STATUS_WORKER_DIED: "worker died"}


def usable_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


class PixelTimeout(Exception):
    """Raised inside a worker when a pixel exceeds its time limit."""


# ------------------------------------------------------------------------------------------ the problem
@dataclass
class PixelProblem:
    """Everything a worker needs besides the pixel data (pickled once per worker / task).

    ``solver`` is ``"module:function"`` or a picklable callable with ``invert_pixel``'s signature
    ``solver(stokes, guess, lines, grid, config, *, mu, psf, abundances)`` returning an object with
    ``.atmosphere``, ``.fit``, ``.chi2``, ``.iterations``, ``.status`` and ``.errors``.
    """

    lines: Any
    grid: Any
    config: Any
    mu: float | None = None
    psf: Any = None
    abundances: Any = None
    solver: Any = "pyinv:invert_pixel"
    time_limit: float | None = None

    def solver_function(self) -> Callable:
        s = self.solver
        if callable(s):
            return s
        mod, _, attr = str(s).partition(":")
        return getattr(importlib.import_module(mod), attr)

    def solver_name(self) -> str:
        s = self.solver
        if callable(s):
            return f"{getattr(s, '__module__', '?')}:{getattr(s, '__qualname__', repr(s))}"
        return str(s)


# ------------------------------------------------------------------------------------------- the store
def _fields(npix: int, ndep: int, nwav: int, ncyc: int) -> dict[str, tuple[tuple[int, ...], str, Any]]:
    return {
        "atmos": ((npix, ndep, 11), "f8", np.nan),
        "header": ((npix, 3), "f8", np.nan),          # macro [km/s], filling, stray [%]
        "errors": ((npix, ndep, 11), "f8", np.nan),
        "errors_header": ((npix, 3), "f8", np.nan),
        "fits": ((npix, 4, nwav), "f8", np.nan),
        "chi2": ((npix,), "f8", np.nan),              # final cycle
        "chi2_cycles": ((npix, ncyc), "f8", np.nan),
        "iterations": ((npix,), "i4", 0),
        "start": ((npix,), "i2", -1),                 # which start won (multistart)
        "seconds": ((npix,), "f4", np.nan),           # wall time of the pixel in its worker
        "status": ((npix,), "i4", STATUS_PENDING),    # written last
    }


class ResultStore:
    """Per-pixel outputs in a folder of memory-mapped ``.npy`` files (see the module docstring)."""

    def __init__(self, path: str | os.PathLike, arrays: dict[str, np.ndarray], meta: dict):
        self.path = Path(path)
        self.arrays = arrays
        self.meta = meta

    @property
    def status(self) -> np.ndarray:
        return self.arrays["status"]

    @classmethod
    def open_or_create(cls, path: str | os.PathLike, *, npix: int, ndep: int, nwav: int, ncyc: int,
                       fingerprint: str, extra_meta: dict | None = None) -> tuple["ResultStore", bool]:
        """Open the store at ``path`` (same fingerprint required) or create it. Returns (store, resumed)."""
        path = Path(path)
        metaf = path / "meta.json"
        shapes = {"npix": npix, "ndep": ndep, "nwav": nwav, "ncyc": ncyc}
        if metaf.exists():
            meta = json.loads(metaf.read_text())
            if meta.get("fingerprint") != fingerprint or meta.get("shapes") != shapes:
                raise ValueError(f"checkpoint {path} was written for different inputs (cube, guesses, lines, "
                                 "grid, configuration or options); remove it or choose another path")
            arrays = {k: np.load(path / f"{k}.npy", mmap_mode="r+") for k in _fields(npix, ndep, nwav, ncyc)}
            return cls(path, arrays, meta), True
        if path.exists() and any(path.iterdir()):
            raise ValueError(f"checkpoint path {path} exists, is not empty and holds no pyinv store")
        path.mkdir(parents=True, exist_ok=True)
        arrays = {}
        for k, (shape, dt, fill) in _fields(npix, ndep, nwav, ncyc).items():
            a = np.lib.format.open_memmap(path / f"{k}.npy", mode="w+", dtype=dt, shape=shape)
            a[...] = fill
            arrays[k] = a
        meta = {"format": "pyinv-store-1", "fingerprint": fingerprint, "shapes": shapes, **(extra_meta or {})}
        for a in arrays.values():
            a.flush()
        tmp = path / "meta.json.tmp"
        tmp.write_text(json.dumps(meta, indent=1, default=str))
        os.replace(tmp, metaf)  # the store exists once meta.json does
        return cls(path, arrays, meta), False

    @classmethod
    def attach(cls, path: str | os.PathLike) -> "ResultStore":
        """Open an existing store for writing (used by local pool workers)."""
        path = Path(path)
        meta = json.loads((path / "meta.json").read_text())
        s = meta["shapes"]
        arrays = {k: np.load(path / f"{k}.npy", mmap_mode="r+")
                  for k in _fields(s["npix"], s["ndep"], s["nwav"], s["ncyc"])}
        return cls(path, arrays, meta)

    def put(self, p: int, rec: dict[str, Any]) -> None:
        """Write one pixel's record (status last)."""
        a = self.arrays
        for k, v in rec.items():
            if k != "status":
                a[k][p] = v
        a["status"][p] = rec["status"]

    def put_many(self, ids: np.ndarray, recs: dict[str, np.ndarray]) -> None:
        a = self.arrays
        for k, v in recs.items():
            if k != "status":
                a[k][ids] = v
        a["status"][ids] = recs["status"]

    def flush(self) -> None:
        for a in self.arrays.values():
            if isinstance(a, np.memmap):
                a.flush()

    def set_meta(self, **kw: Any) -> None:
        self.meta.update(kw)
        tmp = self.path / "meta.json.tmp"
        tmp.write_text(json.dumps(self.meta, indent=1, default=str))
        os.replace(tmp, self.path / "meta.json")


def fingerprint(*parts: Any) -> str:
    """SHA-256 of arrays (by bytes, dtype and shape) and other picklable objects."""
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, np.ndarray):
            h.update(str((p.dtype.str, p.shape)).encode())
            h.update(np.ascontiguousarray(p).view(np.uint8).reshape(-1).data)
        else:
            h.update(pickle.dumps(p, protocol=4))
    return h.hexdigest()


# --------------------------------------------------------------------------------------- per-pixel work
def _blank_record(ndep: int, nwav: int, ncyc: int, status: int) -> dict[str, Any]:
    return {"atmos": np.full((ndep, 11), np.nan), "header": np.full(3, np.nan),
            "errors": np.full((ndep, 11), np.nan), "errors_header": np.full(3, np.nan),
            "fits": np.full((4, nwav), np.nan), "chi2": np.nan, "chi2_cycles": np.full(ncyc, np.nan),
            "iterations": 0, "start": -1, "seconds": np.nan, "status": int(status)}


def _record_from(res: Any, ndep: int, nwav: int, ncyc: int) -> dict[str, Any]:
    rec = _blank_record(ndep, nwav, ncyc, int(getattr(res, "status", 0)))
    atm = res.atmosphere
    arr = np.asarray(atm.to_array(), dtype=np.float64)
    if arr.shape != (ndep, 11):
        raise ValueError(f"solver returned an atmosphere of shape {arr.shape}, expected ({ndep}, 11)")
    rec["atmos"] = arr
    rec["header"] = np.array([float(np.asarray(atm.macro)), float(np.asarray(atm.filling)),
                              float(np.asarray(atm.stray))])
    rec["fits"] = np.asarray(res.fit, dtype=np.float64).reshape(4, nwav)
    c = np.atleast_1d(np.asarray(getattr(res, "chi2", np.nan), dtype=np.float64)).ravel()
    n = min(c.size, ncyc)
    rec["chi2_cycles"][:n] = c[:n]
    fin = c[np.isfinite(c)]
    rec["chi2"] = float(fin[-1]) if fin.size else np.nan
    it = np.asarray(getattr(res, "iterations", 0))
    rec["iterations"] = int(it.sum()) if it.ndim else int(it)
    err = getattr(res, "errors", None)
    if err is not None:
        if hasattr(err, "to_array"):
            e = np.asarray(err.to_array(), dtype=np.float64)
            rec["errors_header"] = np.array([float(np.asarray(getattr(err, k, np.nan))) for k in
                                             ("macro", "filling", "stray")])
        else:
            e = np.asarray(err, dtype=np.float64)
        if e.shape == (ndep, 11):
            rec["errors"] = e
        elif e.shape == (ndep, 8):
            rec["errors"][:, :8] = e
    return rec


_HARD_LIMITS = False  # True inside local pool workers: a runaway pixel may be killed by SIGPROF


@contextlib.contextmanager
def _time_limit(seconds: float | None):
    if not seconds or not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def _alarm(signum, frame):
        raise PixelTimeout(f"pixel exceeded its time limit of {seconds:g} s")

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, float(seconds))
    if _HARD_LIMITS:
        old_prof = signal.signal(signal.SIGPROF, signal.SIG_DFL)
        signal.setitimer(signal.ITIMER_PROF, 2.0 * float(seconds) + 1.0)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0.0)
        signal.signal(signal.SIGALRM, old)
        if _HARD_LIMITS:
            signal.setitimer(signal.ITIMER_PROF, 0.0)
            signal.signal(signal.SIGPROF, old_prof)


def solve_pixel(problem: PixelProblem, solver: Callable, stokes: np.ndarray, starts: list[tuple[np.ndarray, np.ndarray]],
                snr: float, ndep: int, ncyc: int) -> dict[str, Any]:
    """Invert one pixel from each of its starts; keep the result with the lowest final χ²."""
    from .atmosphere import Atmosphere

    nwav = stokes.shape[-1]
    t0 = time.perf_counter()
    if not np.isfinite(stokes).all():
        return _blank_record(ndep, nwav, ncyc, STATUS_BAD_INPUT)
    cfg = problem.config
    if np.isfinite(snr):
        cfg = dataclasses.replace(cfg, snr=float(snr))
    best = None
    for k, (row, hdr) in enumerate(starts):
        try:
            guess = Atmosphere.from_array(row, macro=hdr[0], filling=hdr[1], stray=hdr[2])
            with _time_limit(problem.time_limit):
                res = solver(np.array(stokes, dtype=np.float64), guess, problem.lines, problem.grid, cfg,
                             mu=problem.mu, psf=problem.psf, abundances=problem.abundances)
            rec = _record_from(res, ndep, nwav, ncyc)
        except PixelTimeout:
            rec = _blank_record(ndep, nwav, ncyc, STATUS_TIMEOUT)
        except Exception:
            rec = _blank_record(ndep, nwav, ncyc, STATUS_FAILED)
        rec["start"] = k
        if best is None or (np.isfinite(rec["chi2"]) and not (rec["chi2"] >= best["chi2"])):
            best = rec
    assert best is not None
    best["seconds"] = time.perf_counter() - t0
    return best


def _starts(ids: np.ndarray, k: int, gindex: np.ndarray, table: np.ndarray, header: np.ndarray):
    p = ids[k]
    return [(table[r], header[r]) for r in gindex[p] if r >= 0]


# ------------------------------------------------------------------------------------------ worker side
_SETUP_DONE = False
_LIMITER = None
_W: dict[str, Any] = {}


def _worker_setup() -> None:
    """Once per worker process: import the engine, pin BLAS/OpenMP threads to 1."""
    global _SETUP_DONE, _LIMITER
    if _SETUP_DONE:
        return
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    try:
        from . import engine
        engine.api()
    except Exception:  # the solver will report a missing engine per pixel
        pass
    try:
        from threadpoolctl import threadpool_limits
        _LIMITER = threadpool_limits(limits=1)
    except Exception:  # pragma: no cover - threadpoolctl missing
        _LIMITER = None
    _SETUP_DONE = True


def _init_local_worker(problem: PixelProblem, input_dir: str, store_dir: str) -> None:
    global _HARD_LIMITS
    _worker_setup()
    _HARD_LIMITS = True
    d = Path(input_dir)
    _W.clear()
    _W.update(problem=problem, solver=problem.solver_function(),
              cube=np.load(d / "cube.npy", mmap_mode="r"), table=np.load(d / "table.npy"),
              header=np.load(d / "header.npy"), gindex=np.load(d / "gindex.npy", mmap_mode="r"),
              snr=np.load(d / "snr.npy", mmap_mode="r"), started=np.load(d / "started.npy", mmap_mode="r+"),
              store=ResultStore.attach(store_dir))
    s = _W["store"].meta["shapes"]
    _W["ndep"], _W["ncyc"] = s["ndep"], s["ncyc"]


def _local_chunk(ids: np.ndarray) -> int:
    w = _W
    for k, p in enumerate(ids):
        w["started"][p] = time.time()
        rec = solve_pixel(w["problem"], w["solver"], w["cube"][p], _starts(ids, k, w["gindex"], w["table"], w["header"]),
                          float(w["snr"][p]), w["ndep"], w["ncyc"])
        w["store"].put(int(p), rec)
    return len(ids)


def _remote_chunk(problem: PixelProblem, ids: np.ndarray, cube: np.ndarray, table: np.ndarray, header: np.ndarray,
                  gindex: np.ndarray, snr: np.ndarray, ndep: int, ncyc: int) -> dict[str, np.ndarray]:
    """A self-contained chunk for any executor: its profiles (n, 4, nλ), a sub-table of guesses with the
    pixels' rows into it (n, nstart) and S/N (n,). Returns the stacked records."""
    _worker_setup()
    solver = problem.solver_function()
    local = np.arange(len(ids))
    recs = [solve_pixel(problem, solver, cube[k], _starts(local, k, gindex, table, header), float(snr[k]), ndep, ncyc)
            for k in range(len(ids))]
    return {key: np.array([r[key] for r in recs]) for key in recs[0]}


# ------------------------------------------------------------------------------------------ parent side
class _Progress:
    def __init__(self, progress: Any, total: int, desc: str):
        self.cb = progress if callable(progress) else None
        self.bar = None
        self.done = 0
        self.total = total
        if progress is True:
            try:
                from tqdm.auto import tqdm
                self.bar = tqdm(total=total, unit="px", desc=desc, smoothing=0.1, dynamic_ncols=True)
            except ImportError:  # pragma: no cover
                self.bar = None

    def update(self, n: int) -> None:
        if n <= 0:
            return
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        if self.cb is not None:
            self.cb(self.done, self.total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _chunks(ids: np.ndarray, size: int) -> deque:
    return deque(ids[i:i + size] for i in range(0, len(ids), size))


def _scratch_dir(nbytes: int) -> str:
    shm = "/dev/shm"
    try:
        if os.path.isdir(shm) and shutil.disk_usage(shm).free > 2 * nbytes + (64 << 20):
            return tempfile.mkdtemp(prefix="pyinv-in-", dir=shm)
    except OSError:  # pragma: no cover
        pass
    return tempfile.mkdtemp(prefix="pyinv-in-")


def _mp_context():
    import multiprocessing as mp

    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        try:
            ctx.set_forkserver_preload(["pyinv", "pyinv.scheduler"])
        except Exception:  # pragma: no cover
            pass
        return ctx
    return mp.get_context("spawn")  # pragma: no cover


def _as_executor(executor: Any) -> Executor:
    if hasattr(executor, "get_executor") and not isinstance(executor, Executor):  # distributed.Client
        return executor.get_executor()
    if not hasattr(executor, "submit"):
        raise ValueError(f"executor must be None, 'serial' or a concurrent.futures.Executor, got {executor!r}")
    return executor


@contextlib.contextmanager
def _sigterm_raises():
    """While active (main thread only, and only where SIGTERM has its default action), SIGTERM raises
    ``SystemExit(128 + SIGTERM)`` in the main thread so that the caller's cleanup (ending the pool workers)
    runs; the previous handler is restored afterwards. Other handlers (or SIG_IGN) are left alone."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return
    owner = os.getpid()

    def _term(signum, frame):
        if os.getpid() != owner:  # a forked child that inherited the handler: die as by default
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        raise SystemExit(128 + signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, _term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _terminate_pool(pool: Any, grace: float = 2.0) -> None:
    """End a ProcessPoolExecutor's workers now (running tasks are abandoned; their pixels stay pending)."""
    if hasattr(pool, "terminate_workers"):  # Python >= 3.14
        pool.terminate_workers()
        return
    procs = list((getattr(pool, "_processes", None) or {}).values())
    manager = getattr(pool, "_executor_manager_thread", None)
    pool.shutdown(wait=False, cancel_futures=True)  # shutdown() forgets _processes: copied above
    for pr in procs:
        with contextlib.suppress(Exception):
            if pr.is_alive():
                pr.terminate()
    end = time.monotonic() + grace
    for pr in procs:
        with contextlib.suppress(Exception):
            pr.join(max(0.0, end - time.monotonic()))
            if pr.is_alive():
                pr.kill()
                pr.join(1.0)
    if manager is not None and manager is not threading.current_thread():
        manager.join(grace)


def run_pixels(problem: PixelProblem, cube: np.ndarray, table: np.ndarray, header: np.ndarray, gindex: np.ndarray,
               snr: np.ndarray, todo: np.ndarray, store: ResultStore, *, executor: Any = None,
               workers: int | None = None, chunk: int | None = None, progress: Any = True,
               retries: int = 2) -> dict[str, Any]:
    """Compute the pixels ``todo`` (raster indices) and write them into ``store``.

    Parameters
    ----------
    cube : ndarray (npix, 4, nλ)
    table, header : guess table (nmod, ndep, 11) and (nmod, 3)
    gindex : ndarray (npix, nstart) of rows of ``table``
    snr : ndarray (npix,)  per-pixel S/N of I (NaN = the configuration's)
    todo : ndarray of raster indices still to compute
    executor, workers, chunk, progress : see :func:`pyinv.invert`
    retries : int
        How often a pixel is retried after its worker died.

    Returns
    -------
    dict with ``computed``, ``pool_restarts``, ``chunk_failures``, ``seconds``, ``workers``, ``executor``.
    """
    t0 = time.perf_counter()
    todo = np.asarray(todo, dtype=np.int64)
    ndep, ncyc = store.meta["shapes"]["ndep"], store.meta["shapes"]["ncyc"]
    stats: dict[str, Any] = {"computed": int(todo.size), "pool_restarts": 0, "chunk_failures": 0}
    bar = _Progress(progress, int(todo.size), "pyinv invert")
    accounted = np.zeros(store.status.shape, bool)

    def account(ids: np.ndarray) -> None:
        new = ids[(store.status[ids] != STATUS_PENDING) & ~accounted[ids]]
        accounted[new] = True
        bar.update(int(new.size))

    try:
        if todo.size == 0:
            stats.update(workers=0, executor="none")
        elif isinstance(executor, str) and executor == "serial":
            stats.update(workers=1, executor="serial")
            _worker_setup()
            solver = problem.solver_function()
            for ids in _chunks(todo, chunk or 16):
                for k, p in enumerate(ids):
                    store.put(int(p), solve_pixel(problem, solver, cube[p], _starts(ids, k, gindex, table, header),
                                                  float(snr[p]), ndep, ncyc))
                account(ids)
        elif executor is None:
            n = max(1, int(workers or usable_cores()))
            size = chunk or int(np.clip(np.ceil(todo.size / (n * 16)), 1, 32))
            stats.update(workers=n, executor="local-pool", chunk=size)
            _run_local(problem, cube, table, header, gindex, snr, todo, store, n, size, retries, account, stats)
        else:
            ex = _as_executor(executor)
            window = max(2, 2 * int(workers)) if workers else 64
            size = chunk or int(np.clip(np.ceil(todo.size / max(8, window * 4)), 1, 256))
            stats.update(workers=workers, executor=type(ex).__name__, chunk=size)
            _run_remote(problem, cube, table, header, gindex, snr, todo, store, ex, window, size, retries,
                        account, stats)
    finally:
        bar.close()
        store.flush()
    stats["seconds"] = time.perf_counter() - t0
    return stats


def _run_local(*args):
    with _sigterm_raises():
        _run_local_pool(*args)


def _run_local_pool(problem, cube, table, header, gindex, snr, todo, store, nworkers, size, retries, account, stats):
    from concurrent.futures import ProcessPoolExecutor

    npix = cube.shape[0]
    indir = _scratch_dir(cube.nbytes + gindex.nbytes)
    try:
        d = Path(indir)
        for name, arr in (("cube", cube), ("table", table), ("header", header), ("gindex", gindex), ("snr", snr)):
            m = np.lib.format.open_memmap(d / f"{name}.npy", mode="w+", dtype=arr.dtype, shape=arr.shape)
            m[...] = arr
            m.flush()
            del m
        started = np.lib.format.open_memmap(d / "started.npy", mode="w+", dtype="f8", shape=(npix,))
        started[:] = 0.0
        started.flush()
        attempts = np.zeros(npix, np.int32)
        ctx = _mp_context()

        def make_pool():
            return ProcessPoolExecutor(nworkers, mp_context=ctx, initializer=_init_local_worker,
                                       initargs=(problem, indir, str(store.path)))

        queue = _chunks(todo, size)
        suspects: deque = deque()  # pixels running when a worker died: rerun one at a time, alone
        window = 2 * nworkers + 1
        pool = make_pool()
        inflight: dict = {}
        isolated = None  # the future of a suspect running alone
        failed: list[tuple[np.ndarray, bool]] = []
        broken = False
        ndep_, ncyc_, nwav_ = store.meta["shapes"]["ndep"], store.meta["shapes"]["ncyc"], cube.shape[-1]
        try:
            while queue or inflight or suspects:
                if not broken:
                    try:
                        if suspects:
                            if not inflight:
                                ids = np.array([suspects.popleft()])
                                isolated = pool.submit(_local_chunk, ids)
                                inflight[isolated] = ids
                        else:
                            while queue and len(inflight) < window:
                                ids = queue[0]
                                inflight[pool.submit(_local_chunk, ids)] = ids
                                queue.popleft()
                    except BrokenProcessPool:
                        broken = True
                if inflight:
                    done, _ = wait(list(inflight), return_when=FIRST_COMPLETED)
                    for fut in done:
                        ids = inflight.pop(fut)
                        account(ids)
                        exc = fut.exception()
                        if exc is None:
                            continue
                        stats["chunk_failures"] += 1
                        failed.append((ids, fut is isolated))
                        if isinstance(exc, BrokenProcessPool):
                            broken = True
                        else:  # an error outside the per-pixel guard (should not happen): count it
                            pend = ids[store.status[ids] == STATUS_PENDING]
                            attempts[pend] += 1
                if broken and not inflight:
                    pool.shutdown(wait=True, cancel_futures=True)
                    now = time.time()
                    front: list[np.ndarray] = []
                    for ids, alone in failed:
                        pend = ids[store.status[ids] == STATUS_PENDING]
                        was_running = pend[started[pend] > 0]
                        rest = pend[started[pend] <= 0]
                        for p in was_running:
                            tl = problem.time_limit
                            if alone:  # it ran alone: it killed its worker
                                attempts[p] += 1
                            if tl and now - started[p] >= tl:
                                store.put(int(p), _blank_record(ndep_, nwav_, ncyc_, STATUS_TIMEOUT))
                            elif attempts[p] > retries:
                                store.put(int(p), _blank_record(ndep_, nwav_, ncyc_, STATUS_WORKER_DIED))
                            else:
                                started[p] = 0.0
                                suspects.append(int(p))
                        if rest.size:
                            front.append(rest)
                        account(ids)
                    failed = []
                    isolated = None
                    queue.extendleft(reversed(front))
                    pool = make_pool()
                    broken = False
                    stats["pool_restarts"] += 1
        except BaseException:  # stopping early (SIGTERM, Ctrl-C, an error): don't wait for running chunks
            _terminate_pool(pool)
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    finally:
        shutil.rmtree(indir, ignore_errors=True)


def _run_remote(problem, cube, table, header, gindex, snr, todo, store, ex, window, size, retries, account, stats):
    npix = cube.shape[0]
    attempts = np.zeros(npix, np.int32)
    ndep, ncyc = store.meta["shapes"]["ndep"], store.meta["shapes"]["ncyc"]
    queue = _chunks(todo, size)
    inflight: dict = {}

    def submit(ids):
        rows = np.unique(gindex[ids][gindex[ids] >= 0])
        remap = np.full(table.shape[0], -1, np.int32)
        remap[rows] = np.arange(rows.size, dtype=np.int32)
        g = np.where(gindex[ids] >= 0, remap[np.maximum(gindex[ids], 0)], -1).astype(np.int32)
        return ex.submit(_remote_chunk, problem, ids, np.ascontiguousarray(cube[ids]), table[rows], header[rows],
                         g, np.ascontiguousarray(snr[ids]), ndep, ncyc)

    while queue or inflight:
        while queue and len(inflight) < window:
            ids = queue.popleft()
            inflight[submit(ids)] = ids
        done, _ = wait(list(inflight), return_when=FIRST_COMPLETED)
        for fut in done:
            ids = inflight.pop(fut)
            try:
                recs = fut.result()
            except Exception:
                stats["chunk_failures"] += 1
                attempts[ids] += 1
                for p in ids:
                    if attempts[p] > retries:
                        store.put(int(p), _blank_record(ndep, cube.shape[-1], ncyc, STATUS_WORKER_DIED))
                    else:
                        queue.appendleft(np.array([p]))
                account(ids)
                continue
            store.put_many(ids, recs)
            account(ids)
