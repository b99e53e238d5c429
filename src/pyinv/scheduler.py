"""Pixels → executors: chunking, worker set-up, load balancing, progress, retries, checkpoint store.

How a map is run
----------------
* The pixels to compute are cut into chunks (contiguous runs of raster indices). A bounded window of
  chunks is in flight; a worker that finishes takes the next one (dynamic load balancing).
* **Local pool** (default): a :class:`concurrent.futures.ProcessPoolExecutor` with :class:`WorkerContext`
  (forkserver where available, else spawn) whose workers do **not** import the parent's ``__main__``:
  an unguarded script, a script read from stdin and a notebook work alike. Every worker runs
  :func:`_init_local_worker` once: it imports the engine, pins BLAS/OpenMP threads to 1 (threadpoolctl)
  and memory-maps every input (cube, start-model table and its header, per-pixel indices, S/N) that the
  parent wrote once to a temporary folder (``/dev/shm`` when it has room for all of them). Tasks carry
  only pixel indices; workers write each finished pixel straight into the result store (also
  memory-mapped) and drop their mapped pages after each task, so a worker's resident size does not grow
  with the map. Temporary folders are named after their owner process (pid and start time); folders
  of owners that are gone (a run killed with SIGKILL) are removed when the next run starts.
* **Any other** :class:`concurrent.futures.Executor` (dask ``client.get_executor()``, a ``distributed.Client``,
  ``mpi4py.futures.MPIPoolExecutor``, ...): tasks carry their chunk's profiles and guesses and return the
  results, which the parent writes into the store.
* ``executor="serial"`` runs in the calling process (debugging/profiling; no fault isolation).
* **Streamed starts** (``PixelProblem.stream``, e.g. ``init="cnn"``): each chunk's start models are made
  where the chunk is inverted — by the pool worker from the cube it memory-maps, inside the task of other
  executors — right before its pixels are inverted; nothing per pixel is prepared in the calling process.
  A pixel whose start cannot be made fails alone (``STATUS_FAILED``).

Faults
------
* An exception inside the per-pixel solver gives that pixel ``STATUS_FAILED`` and NaNs.
* A task that fails otherwise (an error outside the per-pixel guard, a failed ``submit``, a task that
  returned with pixels unwritten) is split into one-pixel tasks; a pixel that fails ``retries + 1`` times
  alone gets ``STATUS_FAILED`` (``STATUS_WORKER_DIED`` when the executor reports a dead worker). After the
  queue drains, any pixel still pending is requeued the same way: the run ends only when none is pending.
* A worker process that dies (segfault, ``kill -9``) breaks a local pool: the parent builds a new pool
  and resubmits every unfinished pixel; pixels that were being computed when a worker died are rerun
  one at a time with nothing else running (so a death is attributed to the right pixel), and a pixel
  that kills its worker ``retries + 1`` times while running alone is given ``STATUS_WORKER_DIED``. A pool
  that dies before starting or finishing any pixel is rebuilt at most :data:`MAX_FUTILE_REBUILDS` times,
  then :class:`PoolStartError` reports the workers' own error and :data:`GUARD_HINT`.
* A run that stops early (an exception or ``KeyboardInterrupt`` in the parent, or SIGTERM: while a local
  pool runs, SIGTERM in the main thread raises ``SystemExit(143)`` if its handler was the default) ends
  its pool workers at once instead of waiting for their chunks; finished pixels stay in the store, so a
  rerun with the same checkpoint resumes.
* ``time_limit`` (seconds per pixel and start): a pixel still running after it gets ``STATUS_TIMEOUT``.
  The limit is enforced with SIGALRM (Python-level) and, in local pool workers, a hard CPU-time limit of
  ``2·time_limit + 1`` s (SIGPROF kills the worker; the parent records the timeout). Executors that run
  tasks outside the main thread of their process (dask workers) cannot take signals: there the pixels
  of a task run in a child process (:mod:`pyinv.pixel_process`) that is killed when a pixel overruns.

Checkpoint store
----------------
A folder of ``.npy`` files (memory-mapped), one per output, indexed by raster pixel, plus
``meta.json`` (shapes and a content digest of every input, by name). ``status == STATUS_PENDING`` marks
pixels not yet finished; each pixel's data are written (and, in a user's checkpoint, synced to disk)
before its status. Reopening a store with the same fingerprint computes only the pending pixels; a store
made for other inputs is refused with the names of the inputs that changed.
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

from .inversion import free_parameters as _free_parameters, reduced_chi2  # noqa: F401 (re-exported)
# The status codes live in pyinv.status (issue 18); re-exported here under their historical names.
from .status import (MAP_CODES as _MAP_CODES, STATUS_BAD_INPUT, STATUS_CONVERGED, STATUS_FAILED,
                     STATUS_MASKED, STATUS_PENDING, STATUS_TIMEOUT, STATUS_WORKER_DIED, status_name as _status_name)

__all__ = ["STATUS_PENDING", "STATUS_CONVERGED", "STATUS_MASKED", "STATUS_BAD_INPUT", "STATUS_FAILED",
           "STATUS_TIMEOUT", "STATUS_WORKER_DIED", "STATUS_NAMES", "PixelProblem", "PixelTimeout",
           "PoolStartError", "ResultStore", "run_pixels", "usable_cores", "fingerprints"]

#: Short name of every map status code (from :data:`pyinv.status.TABLE`).
STATUS_NAMES = {code: _status_name(code) for code in _MAP_CODES}

#: How often a local pool that died before starting or finishing any pixel is rebuilt before the run
#: stops with :class:`PoolStartError`.
MAX_FUTILE_REBUILDS = 3

GUARD_HINT = ('pyinv.invert runs its workers in separate processes, which do not run your main script: what '
              'they need (e.g. a custom solver or guess object) must come from an importable module, not from '
              '__main__. If this is a script, put the code that calls pyinv.invert under '
              '`if __name__ == "__main__":`; or pass executor="serial" to run in this process.')


class PoolStartError(RuntimeError):
    """The local process pool died repeatedly before any pixel was computed."""


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
    ``.atmosphere``, ``.fit``, ``.chi2``, ``.iterations``, ``.status`` and ``.errors``. A map with a
    second component or stray light also passes the keywords of :meth:`pyinv.pixel_extras.PixelExtras.kwargs`
    (``guess2``, ``filling2``, ``stray_profile``, ``stray_percent``) and reads ``.atmosphere2``,
    ``.errors2``, ``.filling2`` and ``.stray_percent`` of the result when present.
    """

    lines: Any
    grid: Any
    config: Any
    mu: float | None = None
    psf: Any = None
    abundances: Any = None
    solver: Any = "pyinv:invert_pixel"
    time_limit: float | None = None
    #: 2 when pixels have a second component (records then carry its atmosphere, header and errors).
    ncomp: int = 1
    #: Starts made per chunk where the chunk is inverted (:class:`pyinv.init.StartStream`, e.g. the CNN's);
    #: None: the pixels start from the rows of the guess table.
    stream: Any = None

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
def _fields(npix: int, ndep: int, nwav: int, ncyc: int, ncomp: int = 1, naux: int = 0
            ) -> dict[str, tuple[tuple[int, ...], str, Any]]:
    aux = {"start_aux": ((npix, int(naux)), "f4", np.nan)} if int(naux) > 0 else {}  # StartStream.naux values
    two = {"atmos2": ((npix, ndep, 11), "f8", np.nan),      # component 2 (ncomp = 2 only)
           "header2": ((npix, 3), "f8", np.nan),            # its macro [km/s], filling f2, stray [%]
           "errors2": ((npix, ndep, 11), "f8", np.nan),
           "errors_header2": ((npix, 3), "f8", np.nan)} if int(ncomp) == 2 else {}
    return {**two, **aux,
        "atmos": ((npix, ndep, 11), "f8", np.nan),
        "header": ((npix, 3), "f8", np.nan),          # macro [km/s], filling, stray [%]
        "errors": ((npix, ndep, 11), "f8", np.nan),
        "errors_header": ((npix, 3), "f8", np.nan),
        "fits": ((npix, 4, nwav), "f8", np.nan),
        "chi2": ((npix,), "f8", np.nan),              # final cycle (SIR's figure)
        "chi2_reduced": ((npix,), "f8", np.nan),      # against the noise model (≈ 1 at the noise level)
        "chi2_cycles": ((npix, ncyc), "f8", np.nan),
        "iterations": ((npix,), "i4", 0),
        "start": ((npix,), "i2", -1),                 # which start won (multistart)
        "rescue": ((npix,), "i1", 0),                 # 0 none, 1 second path tried, 2 taken (issue 17)
        "seconds": ((npix,), "f4", np.nan),           # wall time of the pixel in its worker
        "filling2": ((npix,), "f8", np.nan),          # f2 of the result (NaN: one component)
        "stray_percent": ((npix,), "f8", np.nan),     # alpha [%] of the result (NaN: no stray light)
        "status": ((npix,), "i4", STATUS_PENDING),    # written last
    }


class ResultStore:
    """Per-pixel outputs in a folder of memory-mapped ``.npy`` files (see the module docstring).

    A *durable* store (a user's checkpoint) syncs each pixel's data to disk before its status (and the
    status afterwards), so that after a crash of the machine a pixel marked finished has its data."""

    def __init__(self, path: str | os.PathLike, arrays: dict[str, np.ndarray], meta: dict):
        self.path = Path(path)
        self.arrays = arrays
        self.meta = meta
        self.durable = bool(meta.get("durable", False))

    @property
    def status(self) -> np.ndarray:
        return self.arrays["status"]

    @property
    def ncomp(self) -> int:
        """Components whose outputs the store holds (1 or 2)."""
        return int(self.meta["shapes"].get("ncomp", 1))

    @property
    def naux(self) -> int:
        """Auxiliary start values per pixel the store holds (``start_aux``; 0: none)."""
        return int(self.meta["shapes"].get("naux", 0))

    @classmethod
    def open_or_create(cls, path: str | os.PathLike, *, npix: int, ndep: int, nwav: int, ncyc: int,
                       fingerprint: str | dict[str, str], extra_meta: dict | None = None,
                       durable: bool = False, ncomp: int = 1, naux: int = 0) -> tuple["ResultStore", bool]:
        """Open the store at ``path`` (same fingerprint required) or create it. Returns (store, resumed).

        ``fingerprint`` is one digest or a dict of digests per input (then a refusal names the inputs
        that changed). ``ncomp`` = 2 adds the component-2 outputs (``atmos2``, ``header2``, ``errors2``,
        ``errors_header2``); ``naux`` > 0 the streamed starts' auxiliary values (``start_aux``, float32).

        The files are written with their fill values through ordinary writes, and mapped afterwards: this
        process maps no page of them until it reads or writes it (its memory does not grow with the map)."""
        path = Path(path)
        metaf = path / "meta.json"
        shapes = {"npix": npix, "ndep": ndep, "nwav": nwav, "ncyc": ncyc}
        if int(ncomp) != 1:
            shapes["ncomp"] = int(ncomp)
        if int(naux) > 0:
            shapes["naux"] = int(naux)
        parts = fingerprint if isinstance(fingerprint, dict) else {"inputs": str(fingerprint)}
        total = _combine(parts)
        if metaf.exists():
            meta = json.loads(metaf.read_text())
            if meta.get("fingerprint") != total or meta.get("shapes") != shapes:
                old = meta.get("fingerprints") or {}
                changed = sorted(k for k in set(parts) | set(old) if old.get(k) != parts.get(k))
                if meta.get("shapes") != shapes:
                    changed.append(f"shapes {meta.get('shapes')} -> {shapes}")
                raise ValueError(f"checkpoint {path} was written for different inputs; changed: "
                                 f"{', '.join(changed) or 'unknown (a store of an older format)'}. Remove it or "
                                 "choose another path")
            fields = _fields(npix, ndep, nwav, ncyc, ncomp, naux)
            missing = [k for k in fields if not (path / f"{k}.npy").exists()]
            if missing:
                raise ValueError(f"checkpoint {path} lacks {missing} (a store of an older pyinv?); remove it or "
                                 "choose another path")
            arrays = {k: np.load(path / f"{k}.npy", mmap_mode="r+") for k in fields}
            meta["durable"] = bool(durable)
            return cls(path, arrays, meta), True
        if path.exists() and any(path.iterdir()):
            raise ValueError(f"checkpoint path {path} exists, is not empty and holds no pyinv store")
        path.mkdir(parents=True, exist_ok=True)
        arrays = {k: _filled_npy(path / f"{k}.npy", shape, dt, fill, durable=durable)
                  for k, (shape, dt, fill) in _fields(npix, ndep, nwav, ncyc, ncomp, naux).items()}
        meta = {"format": "pyinv-store-2", "fingerprint": total, "fingerprints": parts, "shapes": shapes,
                "durable": bool(durable), **(extra_meta or {})}
        st = cls(path, arrays, meta)
        st._write_meta()  # the store exists once meta.json does
        return st, False

    @classmethod
    def attach(cls, path: str | os.PathLike) -> "ResultStore":
        """Open an existing store for writing (used by local pool workers)."""
        path = Path(path)
        meta = json.loads((path / "meta.json").read_text())
        s = meta["shapes"]
        arrays = {k: np.load(path / f"{k}.npy", mmap_mode="r+")
                  for k in _fields(s["npix"], s["ndep"], s["nwav"], s["ncyc"], s.get("ncomp", 1), s.get("naux", 0))}
        return cls(path, arrays, meta)

    def put(self, p: int, rec: dict[str, Any]) -> None:
        """Write one pixel's record: its data (synced when durable), then its status."""
        a = self.arrays
        for k, v in rec.items():
            if k != "status":
                a[k][p] = v
        if self.durable:
            for k in rec:
                if k != "status":
                    _sync_rows(a[k], p, p + 1)
        a["status"][p] = rec["status"]
        if self.durable:
            _sync_rows(a["status"], p, p + 1)

    def put_many(self, ids: np.ndarray, recs: dict[str, np.ndarray]) -> None:
        """Write several pixels' records (data of all first, synced when durable; statuses last)."""
        a = self.arrays
        ids = np.asarray(ids, dtype=np.int64)
        for k, v in recs.items():
            if k != "status":
                a[k][ids] = v
        if self.durable and ids.size:
            for k in recs:
                if k != "status":
                    _sync_rows(a[k], int(ids.min()), int(ids.max()) + 1)
        a["status"][ids] = recs["status"]
        if self.durable and ids.size:
            _sync_rows(a["status"], int(ids.min()), int(ids.max()) + 1)

    def flush(self) -> None:
        for a in self.arrays.values():
            if isinstance(a, np.memmap):
                a.flush()

    def release(self) -> None:
        """Drop this process's mapped pages of the store (they stay in the file / page cache)."""
        for a in self.arrays.values():
            _release(a)

    def pending(self, ids: np.ndarray) -> np.ndarray:
        """The raster indices among ``ids`` not finished yet."""
        ids = np.asarray(ids, dtype=np.int64)
        return ids[self.status[ids] == STATUS_PENDING]

    def set_meta(self, **kw: Any) -> None:
        self.meta.update(kw)
        self._write_meta()

    def _write_meta(self) -> None:
        tmp = self.path / "meta.json.tmp"
        with open(tmp, "w") as f:
            f.write(json.dumps(self.meta, indent=1, default=str))
            f.flush()
            if self.durable:
                os.fsync(f.fileno())
        os.replace(tmp, self.path / "meta.json")


#: Bytes per ordinary write when a file is filled or copied (:func:`_filled_npy`, :func:`_write_npy`).
_WRITE_BLOCK = 4 << 20


def _filled_npy(path: Path, shape: tuple[int, ...], dtype: Any, fill: Any, durable: bool = False) -> np.ndarray:
    """A new ``.npy`` file of ``shape`` holding ``fill`` everywhere, written with ordinary writes (no page of
    it is mapped here), returned memory-mapped read-write."""
    dt = np.dtype(dtype)
    n = int(np.prod(shape, dtype=np.int64))
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(dt), "fortran_order": False,
                                                 "shape": tuple(int(v) for v in shape)})
        block = np.full(max(1, min(n, _WRITE_BLOCK // dt.itemsize)), fill, dtype=dt)
        left = n
        while left > 0:
            m = min(left, block.size)
            f.write(block[:m].data)
            left -= m
        f.flush()
        if durable:
            os.fsync(f.fileno())
    return np.load(path, mmap_mode="r+")


def _write_npy(path: Path, arr: np.ndarray) -> None:
    """``arr`` to a ``.npy`` file in blocks of rows (no page of the file is mapped here, and no copy of
    ``arr`` is made: the inputs of a local pool cost this process no memory that grows with the map)."""
    a = np.asanyarray(arr)
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(a.dtype), "fortran_order": False,
                                                 "shape": a.shape})
        if a.ndim == 0 or a.shape[0] == 0:
            f.write(np.ascontiguousarray(a).tobytes())
            return
        rows = max(1, _WRITE_BLOCK // max(1, a[0].nbytes))
        for i in range(0, a.shape[0], rows):
            f.write(np.ascontiguousarray(a[i:i + rows]).data)


def _sync_rows(arr: np.ndarray, start: int, stop: int) -> None:
    """msync the pages holding rows ``start:stop`` of a memory-mapped array (first axis)."""
    mm = getattr(arr, "_mmap", None)
    if mm is None or stop <= start:
        return
    import mmap as _mm

    row = int(arr.strides[0]) if arr.ndim else int(arr.itemsize)
    head = int(getattr(arr, "offset", 0)) % _mm.ALLOCATIONGRANULARITY  # where the data start in the mapping
    lo = head + start * row
    hi = min(len(mm), head + stop * row)
    lo -= lo % _mm.PAGESIZE
    with contextlib.suppress(ValueError, OSError):
        mm.flush(lo, max(0, hi - lo))


def _release(arr: Any) -> None:
    """madvise(DONTNEED) a memory-mapped array: this process's resident pages of it are dropped (the data
    stay in the file and the page cache), so a long-running worker's RSS does not grow with the map."""
    mm = getattr(arr, "_mmap", None)
    if mm is None or not hasattr(mm, "madvise"):
        return
    import mmap as _mm

    with contextlib.suppress(ValueError, OSError, AttributeError):
        mm.madvise(_mm.MADV_DONTNEED)


def _combine(parts: dict[str, str]) -> str:
    h = hashlib.sha256()
    for k in sorted(parts):
        h.update(k.encode())
        h.update(str(parts[k]).encode())
    return h.hexdigest()


def _hash_into(h: Any, p: Any) -> None:
    if isinstance(p, np.ndarray):
        h.update(b"ndarray")
        h.update(str((p.dtype.str, p.shape)).encode())
        h.update(np.ascontiguousarray(p).view(np.uint8).reshape(-1).data)
    elif isinstance(p, (str, os.PathLike)) and not isinstance(p, str) or (
            isinstance(p, str) and os.path.isfile(p)):
        fp = Path(p)
        h.update(b"file")
        if fp.is_file():
            with open(fp, "rb") as f:  # the file's content, not its name
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
        else:
            h.update(b"missing:" + str(p).encode())
    elif isinstance(p, (tuple, list)):
        h.update(f"seq{len(p)}".encode())
        for q in p:
            _hash_into(h, q)
    elif isinstance(p, dict):
        h.update(f"dict{len(p)}".encode())
        for k in sorted(p, key=str):
            h.update(str(k).encode())
            _hash_into(h, p[k])
    else:
        try:
            h.update(pickle.dumps(p, protocol=4))
        except Exception:
            h.update(repr(p).encode())


def fingerprint(*parts: Any) -> str:
    """SHA-256 of arrays (by bytes, dtype and shape), files (``Path`` objects or names of existing files:
    by content) and other picklable objects."""
    h = hashlib.sha256()
    for p in parts:
        _hash_into(h, p)
    return h.hexdigest()


def fingerprints(**inputs: Any) -> dict[str, str]:
    """One content digest per named input (see :func:`fingerprint`)."""
    return {k: fingerprint(v) for k, v in inputs.items()}


# --------------------------------------------------------------------------------------- per-pixel work
def _blank_record(ndep: int, nwav: int, ncyc: int, status: int, ncomp: int = 1) -> dict[str, Any]:
    rec = {"atmos": np.full((ndep, 11), np.nan), "header": np.full(3, np.nan),
           "errors": np.full((ndep, 11), np.nan), "errors_header": np.full(3, np.nan),
           "fits": np.full((4, nwav), np.nan), "chi2": np.nan, "chi2_reduced": np.nan,
           "chi2_cycles": np.full(ncyc, np.nan),
           "iterations": 0, "start": -1, "rescue": 0, "seconds": np.nan, "filling2": np.nan,
           "stray_percent": np.nan}
    if int(ncomp) == 2:
        rec.update(atmos2=np.full((ndep, 11), np.nan), header2=np.full(3, np.nan),
                   errors2=np.full((ndep, 11), np.nan), errors_header2=np.full(3, np.nan))
    rec["status"] = int(status)
    return rec


def _header_of(atm: Any) -> np.ndarray:
    return np.array([float(np.asarray(atm.macro)), float(np.asarray(atm.filling)), float(np.asarray(atm.stray))])


def _errors_into(err: Any, ndep: int, rec: dict[str, Any], key: str, key_header: str) -> None:
    if err is None:
        return
    if hasattr(err, "to_array"):
        e = np.asarray(err.to_array(), dtype=np.float64)
        rec[key_header] = np.array([float(np.asarray(getattr(err, k, np.nan))) for k in ("macro", "filling", "stray")])
    else:
        e = np.asarray(err, dtype=np.float64)
    if e.shape == (ndep, 11):
        rec[key] = e
    elif e.shape == (ndep, 8):
        rec[key][:, :8] = e


def _optional_float(v: Any) -> float:
    return np.nan if v is None else float(np.asarray(v))


def _record_from(res: Any, ndep: int, nwav: int, ncyc: int, ncomp: int = 1) -> dict[str, Any]:
    rec = _blank_record(ndep, nwav, ncyc, int(getattr(res, "status", 0)), ncomp)
    atm = res.atmosphere
    arr = np.asarray(atm.to_array(), dtype=np.float64)
    if arr.shape != (ndep, 11):
        raise ValueError(f"solver returned an atmosphere of shape {arr.shape}, expected ({ndep}, 11)")
    rec["atmos"] = arr
    rec["header"] = _header_of(atm)
    rec["fits"] = np.asarray(res.fit, dtype=np.float64).reshape(4, nwav)
    c = np.atleast_1d(np.asarray(getattr(res, "chi2", np.nan), dtype=np.float64)).ravel()
    n = min(c.size, ncyc)
    rec["chi2_cycles"][:n] = c[:n]
    fin = c[np.isfinite(c)]
    rec["chi2"] = float(fin[-1]) if fin.size else np.nan
    it = np.asarray(getattr(res, "iterations", 0))
    rec["iterations"] = int(it.sum()) if it.ndim else int(it)
    rec["rescue"] = int(getattr(res, "rescue", 0) or 0)
    _errors_into(getattr(res, "errors", None), ndep, rec, "errors", "errors_header")
    rec["filling2"] = _optional_float(getattr(res, "filling2", None))
    rec["stray_percent"] = _optional_float(getattr(res, "stray_percent", None))
    atm2 = getattr(res, "atmosphere2", None)
    if int(ncomp) == 2:
        if atm2 is None:
            raise ValueError("the solver returned no component-2 atmosphere (atmosphere2) for a pixel with guess2")
        arr2 = np.asarray(atm2.to_array(), dtype=np.float64)
        if arr2.shape != (ndep, 11):
            raise ValueError(f"solver returned a component-2 atmosphere of shape {arr2.shape}, expected ({ndep}, 11)")
        rec["atmos2"] = arr2
        rec["header2"] = _header_of(atm2)
        _errors_into(getattr(res, "errors2", None), ndep, rec, "errors2", "errors_header2")
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
                snr: float, ndep: int, ncyc: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Invert one pixel from each of its starts; keep the result with the lowest final χ². ``extra``: the
    pixel's second component / stray-light keywords of the solver (:meth:`PixelExtras.kwargs`)."""
    from .atmosphere import Atmosphere

    nwav = stokes.shape[-1]
    ncomp = int(getattr(problem, "ncomp", 1))
    t0 = time.perf_counter()
    if not np.isfinite(stokes).all():
        return _blank_record(ndep, nwav, ncyc, STATUS_BAD_INPUT, ncomp)
    cfg = problem.config
    if np.isfinite(snr):
        cfg = dataclasses.replace(cfg, snr=float(snr))
    # the reduced chi2 needs an inversion configuration (synthesize_map's pixel function has none)
    inverting = hasattr(cfg, "value") and hasattr(cfg, "weights_for")
    snr_last = float(cfg.value("snr", cfg.cycles)) if inverting else float("nan")
    w_last = cfg.weights_for(cfg.cycles) if inverting else None
    best = None
    for k, (row, hdr) in enumerate(starts):
        try:
            guess = Atmosphere.from_array(row, macro=hdr[0], filling=hdr[1], stray=hdr[2])
            with _time_limit(problem.time_limit):
                res = solver(np.array(stokes, dtype=np.float64), guess, problem.lines, problem.grid, cfg,
                             mu=problem.mu, psf=problem.psf, abundances=problem.abundances, **(extra or {}))
            rec = _record_from(res, ndep, nwav, ncyc, ncomp)
            rec["chi2_reduced"] = (reduced_chi2(stokes, rec["fits"], snr_last, w_last, _free_parameters(res))
                                   if inverting else float("nan"))
        except PixelTimeout:
            rec = _blank_record(ndep, nwav, ncyc, STATUS_TIMEOUT, ncomp)
        except Exception:
            rec = _blank_record(ndep, nwav, ncyc, STATUS_FAILED, ncomp)
        rec["start"] = k
        if best is None or (np.isfinite(rec["chi2"]) and not (rec["chi2"] >= best["chi2"])):
            best = rec
    assert best is not None
    best["seconds"] = time.perf_counter() - t0
    return best


def _starts(ids: np.ndarray, k: int, gindex: np.ndarray, table: np.ndarray, header: np.ndarray):
    p = ids[k]
    return [(table[r], header[r]) for r in gindex[p] if r >= 0]


def _chunk_starts(problem: PixelProblem, stokes: Any, ids: np.ndarray, gindex: np.ndarray, table: np.ndarray,
                  header: np.ndarray, pixels: np.ndarray | None = None) -> tuple[list, np.ndarray | None]:
    """The starts of a chunk's pixels (``ids`` index ``gindex``; ``stokes`` a callable giving their profiles
    (n, 4, nλ) and ``pixels`` their raster indices (default ``ids``), needed only for streamed starts): per
    pixel a list of (model, header), or None for a pixel
    whose streamed start could not be made (it fails alone, ``STATUS_FAILED``), and the streamed starts'
    auxiliary values (n, naux) float32 (None without them)."""
    stream = getattr(problem, "stream", None)
    n = len(ids)
    if stream is None:
        return [_starts(ids, k, gindex, table, header) for k in range(n)], None
    naux = int(getattr(stream, "naux", 0))
    rows = np.asarray(stokes(), dtype=np.float64)
    pix = np.asarray(ids if pixels is None else pixels, dtype=np.int64)
    try:
        t, h, a = stream.starts(rows, pix)
        return [[(t[k], h[k])] for k in range(n)], (None if naux == 0 else np.asarray(a, np.float32))
    except Exception:  # one pixel at a time: a pixel whose start cannot be made fails alone
        out: list = []
        aux = np.full((n, naux), np.nan, np.float32) if naux else None
        for k in range(n):
            try:
                t, h, a = stream.starts(rows[k:k + 1], pix[k:k + 1])
            except Exception:
                out.append(None)
                continue
            out.append([(t[0], h[0])])
            if aux is not None:
                aux[k] = a[0]
        return out, aux


def _solve_started(problem: PixelProblem, solver: Callable, stokes: np.ndarray, starts: list | None, snr: float,
                   ndep: int, ncyc: int, extra: dict[str, Any] | None, aux: np.ndarray | None) -> dict[str, Any]:
    """:func:`solve_pixel`, or a failed record when the pixel has no start (its streamed start could not be
    made); with the pixel's auxiliary start values (``start_aux``) when there are some."""
    if starts is None:
        rec = _blank_record(ndep, stokes.shape[-1], ncyc, STATUS_FAILED, int(getattr(problem, "ncomp", 1)))
    else:
        rec = solve_pixel(problem, solver, stokes, starts, snr, ndep, ncyc, extra)
    if aux is not None:
        rec["start_aux"] = aux
    return rec


# ------------------------------------------------------------------------------------------ worker side
_SETUP_DONE = False
_LIMITER = None
#: File-name prefix of the per-pixel extras (PixelExtras arrays) in a local pool's input folder.
_EXTRA_PREFIX = "x_"
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
    """Entry point of a local pool worker (needs nothing from ``__main__``): memory-maps every input.
    An exception is written to ``input_dir/worker-error-<pid>.txt`` for the parent's message."""
    global _HARD_LIMITS
    try:
        _worker_setup()
        _HARD_LIMITS = True
        d = Path(input_dir)
        _W.clear()
        _W.update(problem=problem, solver=problem.solver_function(), dir=str(d),
                  cube=np.load(d / "cube.npy", mmap_mode="r"), table=np.load(d / "table.npy", mmap_mode="r"),
                  header=np.load(d / "header.npy", mmap_mode="r"), gindex=np.load(d / "gindex.npy", mmap_mode="r"),
                  snr=np.load(d / "snr.npy", mmap_mode="r"), started=np.load(d / "started.npy", mmap_mode="r+"),
                  store=ResultStore.attach(store_dir))
        extras = {f.name[len(_EXTRA_PREFIX):-4]: np.load(f, mmap_mode="r") for f in d.glob(_EXTRA_PREFIX + "*.npy")}
        if extras:
            from .pixel_extras import PixelExtras

            _W["extras"] = PixelExtras.from_arrays(extras)
        s = _W["store"].meta["shapes"]
        _W["ndep"], _W["ncyc"] = s["ndep"], s["ncyc"]
    except BaseException:
        import traceback

        with contextlib.suppress(OSError):
            (Path(input_dir) / f"worker-error-{os.getpid()}.txt").write_text(traceback.format_exc())
        raise


def _local_chunk(ids: np.ndarray) -> int:
    w = _W
    ex = w.get("extras")
    try:
        streamed = getattr(w["problem"], "stream", None) is not None
        if streamed:  # a worker that dies while making the chunk's starts: its pixels are suspects
            w["started"][ids] = time.time()
        starts, aux = _chunk_starts(w["problem"], lambda: w["cube"][ids], ids, w["gindex"], w["table"], w["header"])
        if streamed:
            w["started"][ids] = 0.0
        for k, p in enumerate(ids):
            w["started"][p] = time.time()
            rec = _solve_started(w["problem"], w["solver"], w["cube"][p], starts[k], float(w["snr"][p]), w["ndep"],
                                 w["ncyc"], None if ex is None else ex.kwargs(int(p)), None if aux is None else aux[k])
            w["store"].put(int(p), rec)
    finally:  # keep the worker's resident size independent of the map's size
        for key in ("cube", "table", "header", "gindex", "snr", "started"):
            _release(w.get(key))
        if ex is not None:
            for a in ex.arrays().values():
                _release(a)
        if "store" in w:
            w["store"].release()
    return len(ids)


def _remote_chunk(problem: PixelProblem, ids: np.ndarray, cube: np.ndarray, table: np.ndarray, header: np.ndarray,
                  gindex: np.ndarray, snr: np.ndarray, ndep: int, ncyc: int, extras: Any = None) -> dict[str, np.ndarray]:
    """A self-contained chunk for any executor: its profiles (n, 4, nλ), a sub-table of guesses with the
    pixels' rows into it (n, nstart), S/N (n,) and the chunk's :class:`~pyinv.pixel_extras.PixelExtras`
    (renumbered to the chunk, or None). Returns the stacked records."""
    n = len(ids)
    local = np.arange(n)
    if getattr(problem, "stream", None) is not None:
        _worker_setup()
    starts, aux = _chunk_starts(problem, lambda: cube, local, gindex, table, header, pixels=ids)
    kws = [None if extras is None else extras.kwargs(k) for k in range(n)]
    ok = [k for k in range(n) if starts[k] is not None]
    recs: list = [_solve_started(problem, None, cube[k], None, np.nan, ndep, ncyc, None, None) for k in range(n)]
    if problem.time_limit and (threading.current_thread() is not threading.main_thread()
                               or not hasattr(signal, "setitimer")):
        # a thread (dask workers) cannot take SIGALRM: the pixels run in a child process that is killed
        # when a pixel overruns (pyinv.pixel_process)
        from .pixel_process import solve_isolated

        if ok:
            for k, rec in zip(ok, solve_isolated(problem, cube[ok], [starts[k] for k in ok], snr[ok], ndep, ncyc,
                                                 [kws[k] for k in ok])):
                recs[k] = rec
    else:
        _worker_setup()
        solver = problem.solver_function()
        for k in ok:
            recs[k] = solve_pixel(problem, solver, cube[k], starts[k], float(snr[k]), ndep, ncyc, kws[k])
    if aux is not None:
        for k in range(n):
            recs[k]["start_aux"] = aux[k]
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


def _start_time(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot, /proc), None if it does not exist."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _owner_tag() -> str:
    """``<pid>-<start time>``: names this process as the owner of a temporary folder."""
    return f"{os.getpid()}-{_start_time(os.getpid()) or 0}"


def _owner_alive(name: str) -> bool:
    """Whether the process named in a ``pyinv-{in,store}-<pid>-<start>-…`` folder name still runs (a folder
    of another form counts as alive: it is never removed)."""
    parts = name.split("-")
    if len(parts) < 5 or not parts[2].isdigit():
        return True
    pid, start = int(parts[2]), parts[3]
    if not os.path.exists("/proc"):  # pragma: no cover - not Linux: ask the kernel only about the pid
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except OSError:
            return True
        return True
    now = _start_time(pid)
    return now is not None and (start == "0" or now == start)


def remove_stale_folders(*dirs: str) -> list[str]:
    """Remove ``pyinv-in-*`` / ``pyinv-store-*`` temporary folders whose owner process is gone (a run killed
    with SIGKILL cannot remove its own). Folders of live runs are kept. Returns the removed paths."""
    removed = []
    for d in dirs or ("/dev/shm", tempfile.gettempdir()):
        try:
            names = os.listdir(d)
        except OSError:
            continue
        for name in names:
            if not (name.startswith("pyinv-in-") or name.startswith("pyinv-store-")):
                continue
            full = os.path.join(d, name)
            if os.path.isdir(full) and not _owner_alive(name):
                shutil.rmtree(full, ignore_errors=True)
                if not os.path.exists(full):
                    removed.append(full)
    return removed


def _scratch_dir(nbytes: int, prefix: str = "pyinv-in-") -> str:
    """A temporary folder for ``nbytes`` of inputs: in /dev/shm when it has room for them (twice, plus
    64 MiB), else in the temporary directory. Named after its owner process, so that a later run can
    remove it should this one be killed."""
    shm = "/dev/shm"
    name = f"{prefix}{_owner_tag()}-"
    with contextlib.suppress(OSError):
        remove_stale_folders(shm, tempfile.gettempdir())
    try:
        if os.path.isdir(shm) and shutil.disk_usage(shm).free > 2 * nbytes + (64 << 20):
            return tempfile.mkdtemp(prefix=name, dir=shm)
    except OSError:  # pragma: no cover
        pass
    return tempfile.mkdtemp(prefix=name)


# Workers get nothing from __main__: multiprocessing's spawn/forkserver children normally re-run the
# parent's main script (as __mp_main__) before unpickling their task; an unguarded script would then call
# pyinv.invert again in every worker (which fails, and used to make the pool restart for ever), and a
# script read from stdin cannot be re-run at all. The worker entry points live in this module, so the
# main-module part of the preparation data is left out for pyinv's own worker processes.
_PREP_LOCK = threading.Lock()


def _launch_without_main(launch: Callable, process_obj: Any) -> None:
    from multiprocessing import spawn

    with _PREP_LOCK:
        original = spawn.get_preparation_data

        def prep(name: str) -> dict:
            d = original(name)
            d.pop("init_main_from_path", None)
            d.pop("init_main_from_name", None)
            return d

        spawn.get_preparation_data = prep
        try:
            launch(process_obj)
        finally:
            spawn.get_preparation_data = original


def _popen_type(method: str) -> type:
    if method == "forkserver":
        from multiprocessing.popen_forkserver import Popen as base
    else:
        from multiprocessing.popen_spawn_posix import Popen as base

    class _Popen(base):  # type: ignore[valid-type, misc]
        def _launch(self, process_obj):  # noqa: D401 - multiprocessing's hook
            _launch_without_main(super()._launch, process_obj)

    return _Popen


def _worker_process_types() -> tuple[type, type]:
    import multiprocessing as mp
    from multiprocessing import context as mpc

    if "forkserver" in mp.get_all_start_methods():
        return mpc.ForkServerProcess, mpc.ForkServerContext
    return mpc.SpawnProcess, mpc.SpawnContext  # pragma: no cover - no forkserver


_ProcBase, _CtxBase = _worker_process_types()


class WorkerProcess(_ProcBase):  # type: ignore[valid-type, misc]
    """A pool worker process that does not import the parent's ``__main__`` module."""

    @staticmethod
    def _Popen(process_obj):
        return _popen_type(WorkerProcess._start_method)(process_obj)


class WorkerContext(_CtxBase):  # type: ignore[valid-type, misc]
    """The multiprocessing context of pyinv's local pools (forkserver where available, else spawn)."""

    Process = WorkerProcess


def _mp_context():
    import multiprocessing as mp

    if os.name != "posix":  # pragma: no cover - Windows: plain spawn (scripts need the __main__ guard)
        return mp.get_context("spawn")
    ctx = WorkerContext()
    if ctx.get_start_method() == "forkserver":
        with contextlib.suppress(Exception):
            ctx.set_forkserver_preload(["pyinv", "pyinv.scheduler"])
    return ctx


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


def _requeue_pending(store: ResultStore, todo: np.ndarray, rq: "_Requeue", stats: dict, account: Callable) -> bool:
    """The end-of-round sweep of both executor loops: requeue, one pixel per task, any pixel of ``todo`` still
    pending (every failure path requeues, this makes sure none is left). Returns whether there were any."""
    left = store.pending(todo)
    if not left.size:
        return False
    stats["requeued_at_end"] = stats.get("requeued_at_end", 0) + int(left.size)
    for p in left:
        rq.failed(np.array([p]))
    account(left)
    return True


def run_pixels(problem: PixelProblem, cube: np.ndarray, table: np.ndarray, header: np.ndarray, gindex: np.ndarray,
               snr: np.ndarray, todo: np.ndarray, store: ResultStore, *, executor: Any = None,
               workers: int | None = None, chunk: int | None = None, progress: Any = True,
               retries: int = 2, extras: Any = None) -> dict[str, Any]:
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
    extras : pyinv.pixel_extras.PixelExtras, optional
        Second component and stray light per pixel; they travel like the guesses (memory-mapped by local
        workers, cut into each chunk for other executors). ``problem.ncomp`` must match it.

    With ``problem.stream`` (a :class:`pyinv.init.StartStream`) the pixels' starts are made per chunk where
    the chunk is inverted (``table``/``header``/``gindex`` then hold the template row only); the stream's
    auxiliary values go to the store's ``start_aux`` (``store.naux`` must match ``stream.naux``).

    Returns
    -------
    dict with ``computed``, ``pool_restarts``, ``chunk_failures``, ``seconds``, ``workers``, ``executor``.
    """
    t0 = time.perf_counter()
    todo = np.asarray(todo, dtype=np.int64)
    ndep, ncyc = store.meta["shapes"]["ndep"], store.meta["shapes"]["ncyc"]
    stats: dict[str, Any] = {"computed": int(todo.size), "pool_restarts": 0, "chunk_failures": 0}
    if extras is not None and extras.empty:
        extras = None
    if int(getattr(problem, "ncomp", 1)) != (1 if extras is None else extras.ncomp) or store.ncomp != int(
            getattr(problem, "ncomp", 1)):
        raise ValueError(f"run_pixels: problem.ncomp={getattr(problem, 'ncomp', 1)}, the store holds {store.ncomp} "
                         f"component(s), the per-pixel inputs {1 if extras is None else extras.ncomp}")
    stream = getattr(problem, "stream", None)
    if store.naux != (0 if stream is None else int(getattr(stream, "naux", 0))):
        raise ValueError(f"run_pixels: the store holds {store.naux} auxiliary start value(s) per pixel, the "
                         f"problem's start stream makes {0 if stream is None else stream.naux}")
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
                starts, aux = _chunk_starts(problem, lambda: cube[ids], ids, gindex, table, header)
                for k, p in enumerate(ids):
                    store.put(int(p), _solve_started(problem, solver, cube[p], starts[k], float(snr[p]), ndep, ncyc,
                                                     None if extras is None else extras.kwargs(int(p)),
                                                     None if aux is None else aux[k]))
                account(ids)
        elif executor is None:
            n = max(1, int(workers or usable_cores()))
            size = chunk or int(np.clip(np.ceil(todo.size / (n * 16)), 1, 32))
            stats.update(workers=n, executor="local-pool", chunk=size)
            _run_local(problem, cube, table, header, gindex, snr, todo, store, n, size, retries, account, stats, extras)
        else:
            ex = _as_executor(executor)
            window = max(2, 2 * int(workers)) if workers else 64
            size = chunk or int(np.clip(np.ceil(todo.size / max(8, window * 4)), 1, 256))
            stats.update(workers=workers, executor=type(ex).__name__, chunk=size)
            _run_remote(problem, cube, table, header, gindex, snr, todo, store, ex, window, size, retries,
                        account, stats, extras)
    finally:
        bar.close()
        store.flush()
    stats["seconds"] = time.perf_counter() - t0
    return stats


def _run_local(*args):
    with _sigterm_raises():
        _run_local_pool(*args)


def _worker_errors(indir: str) -> str:
    """The last lines of the first error a pool worker wrote at start-up ('' when none)."""
    for f in sorted(Path(indir).glob("worker-error-*.txt")):
        with contextlib.suppress(OSError):
            lines = f.read_text().strip().splitlines()
            return "\n".join(lines[-6:])
    return ""


class _Requeue:
    """Failure bookkeeping shared by both pool drivers: a failed task of several pixels is split into
    one-pixel tasks (no attempt is counted); a one-pixel task that fails counts an attempt of its pixel,
    which gets ``status`` once it has failed ``retries + 1`` times."""

    def __init__(self, store: ResultStore, queue: deque, npix: int, retries: int, nwav: int):
        self.store, self.queue, self.retries, self.nwav = store, queue, int(retries), nwav
        self.attempts = np.zeros(npix, np.int32)
        sh = store.meta["shapes"]
        self.ndep, self.ncyc, self.ncomp = sh["ndep"], sh["ncyc"], sh.get("ncomp", 1)

    def failed(self, ids: np.ndarray, status: int = STATUS_FAILED) -> None:
        pend = self.store.pending(ids)
        if pend.size > 1:
            for p in pend[::-1]:
                self.queue.appendleft(np.array([p]))
            return
        for p in pend:
            self.attempts[p] += 1
            if self.attempts[p] > self.retries:
                self.store.put(int(p), _blank_record(self.ndep, self.nwav, self.ncyc, status, self.ncomp))
            else:
                self.queue.appendleft(np.array([p]))


def _run_local_pool(problem, cube, table, header, gindex, snr, todo, store, nworkers, size, retries, account, stats,
                    extras=None):
    from concurrent.futures import ProcessPoolExecutor

    npix = cube.shape[0]
    inputs = {"cube": cube, "table": table, "header": header, "gindex": gindex, "snr": snr}
    if extras is not None:
        inputs.update({_EXTRA_PREFIX + k: v for k, v in extras.arrays().items()})
    indir = _scratch_dir(sum(int(a.nbytes) for a in inputs.values()) + 8 * npix)  # + started
    try:
        d = Path(indir)
        for name, arr in inputs.items():
            _write_npy(d / f"{name}.npy", arr)
        started = _filled_npy(d / "started.npy", (npix,), "f8", 0.0)
        ctx = _mp_context()
        ndep_, ncyc_, nwav_ = store.meta["shapes"]["ndep"], store.meta["shapes"]["ncyc"], cube.shape[-1]
        ncomp_ = store.ncomp
        queue = _chunks(todo, size)
        rq = _Requeue(store, queue, npix, retries, nwav_)
        attempts = rq.attempts
        suspects: deque = deque()  # pixels running when a worker died: rerun one at a time, alone
        window = 2 * nworkers + 1
        futile = 0

        def make_pool():
            pool = ProcessPoolExecutor(nworkers, mp_context=ctx, initializer=_init_local_worker,
                                       initargs=(problem, indir, str(store.path)))
            return pool, time.time(), int(np.count_nonzero(store.status[todo] != STATUS_PENDING))

        pool, born, done_at_birth = make_pool()
        inflight: dict = {}
        isolated = None  # the future of a suspect running alone
        failed: list[tuple[np.ndarray, bool]] = []
        broken = False
        try:
            while True:
                while queue or inflight or suspects:
                    if not broken:
                        try:
                            if suspects:
                                if not inflight:
                                    ids = np.array([suspects[0]])
                                    isolated = pool.submit(_local_chunk, ids)
                                    inflight[isolated] = ids
                                    suspects.popleft()  # only once it is submitted
                            else:
                                while queue and len(inflight) < window:
                                    ids = queue[0]
                                    inflight[pool.submit(_local_chunk, ids)] = ids
                                    queue.popleft()
                        except Exception:  # BrokenProcessPool, or a pool that shut down: rebuild it
                            broken = True
                    if inflight:
                        done, _ = wait(list(inflight), return_when=FIRST_COMPLETED)
                        for fut in done:
                            ids = inflight.pop(fut)
                            account(ids)
                            exc = fut.exception()
                            if exc is None:
                                if store.pending(ids).size:  # returned without writing: run them again
                                    rq.failed(ids)
                                continue
                            stats["chunk_failures"] += 1
                            if isinstance(exc, BrokenProcessPool):
                                broken = True
                                failed.append((ids, fut is isolated))
                            else:  # an error outside the per-pixel guard: split / retry its pixels
                                rq.failed(ids)
                                account(ids)
                    elif broken:
                        pass
                    if broken and not inflight:
                        pool.shutdown(wait=True, cancel_futures=True)
                        now = time.time()
                        work = np.concatenate([ids for ids, _ in failed]) if failed else np.zeros(0, np.int64)
                        progressed = (int(np.count_nonzero(store.status[todo] != STATUS_PENDING)) > done_at_birth
                                      or bool(work.size and (started[work] >= born).any()))
                        futile = 0 if progressed else futile + 1
                        if futile > MAX_FUTILE_REBUILDS:
                            why = _worker_errors(indir)
                            raise PoolStartError(
                                f"pyinv.invert: the local process pool died {futile} times before computing any "
                                f"pixel ({MAX_FUTILE_REBUILDS} rebuilds); stopped. "
                                + (f"A worker reported:\n{why}\n" if why else "")
                                + GUARD_HINT + (f" Finished pixels are kept in the checkpoint {store.path}."
                                                if store.durable else ""))
                        front: list[np.ndarray] = []
                        for ids, alone in failed:
                            pend = store.pending(ids)
                            was_running = pend[started[pend] > 0]
                            rest = pend[started[pend] <= 0]
                            for p in was_running:
                                tl = problem.time_limit
                                if alone:  # it ran alone: it killed its worker
                                    attempts[p] += 1
                                if tl and now - started[p] >= tl:
                                    store.put(int(p), _blank_record(ndep_, nwav_, ncyc_, STATUS_TIMEOUT, ncomp_))
                                elif attempts[p] > retries:
                                    store.put(int(p), _blank_record(ndep_, nwav_, ncyc_, STATUS_WORKER_DIED, ncomp_))
                                else:
                                    started[p] = 0.0
                                    suspects.append(int(p))
                            if rest.size:
                                front.append(rest)
                            account(ids)
                        failed = []
                        isolated = None
                        queue.extendleft(reversed(front))
                        pool, born, done_at_birth = make_pool()
                        broken = False
                        stats["pool_restarts"] += 1
                # every path above requeues; a last sweep makes sure no pixel is left pending
                if not _requeue_pending(store, todo, rq, stats, account):
                    break
        except BaseException:  # stopping early (SIGTERM, Ctrl-C, an error): don't wait for running chunks
            _terminate_pool(pool)
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    finally:
        shutil.rmtree(indir, ignore_errors=True)


def _is_worker_death(exc: BaseException) -> bool:
    """Whether a task's exception says its worker process died (dask's KilledWorker, a broken pool, MPI)."""
    names = {c.__name__ for c in type(exc).__mro__}
    return bool(names & {"KilledWorker", "BrokenProcessPool", "BrokenExecutor", "CommClosedError"})


def _run_remote(problem, cube, table, header, gindex, snr, todo, store, ex, window, size, retries, account, stats,
                extras=None):
    npix = cube.shape[0]
    ndep, ncyc = store.meta["shapes"]["ndep"], store.meta["shapes"]["ncyc"]
    queue = _chunks(todo, size)
    rq = _Requeue(store, queue, npix, retries, cube.shape[-1])
    inflight: dict = {}
    submit_failures = 0

    def submit(ids):
        rows = np.unique(gindex[ids][gindex[ids] >= 0])
        remap = np.full(table.shape[0], -1, np.int32)
        remap[rows] = np.arange(rows.size, dtype=np.int32)
        g = np.where(gindex[ids] >= 0, remap[np.maximum(gindex[ids], 0)], -1).astype(np.int32)
        return ex.submit(_remote_chunk, problem, ids, np.ascontiguousarray(cube[ids]), np.ascontiguousarray(table[rows]),
                         np.ascontiguousarray(header[rows]), g, np.ascontiguousarray(snr[ids]), ndep, ncyc,
                         None if extras is None else extras.subset(ids))

    while True:
        while queue or inflight:
            while queue and len(inflight) < window:
                ids = queue[0]
                try:
                    fut = submit(ids)
                except Exception as exc:
                    submit_failures += 1
                    if submit_failures > MAX_FUTILE_REBUILDS or not inflight:
                        raise RuntimeError(f"pyinv.invert: the executor {type(ex).__name__} refused tasks "
                                           f"({type(exc).__name__}: {exc}); finished pixels are kept in the store "
                                           f"{store.path}") from exc
                    break  # wait for running tasks, then try again
                queue.popleft()
                inflight[fut] = ids
            if not inflight:
                continue
            done, _ = wait(list(inflight), return_when=FIRST_COMPLETED)
            for fut in done:
                ids = inflight.pop(fut)
                try:
                    recs = fut.result()
                    store.put_many(ids, recs)
                    submit_failures = 0
                except KeyboardInterrupt:
                    raise
                except BaseException as exc:  # a task's failure, whatever it raised
                    stats["chunk_failures"] += 1
                    rq.failed(ids, STATUS_WORKER_DIED if _is_worker_death(exc) else STATUS_FAILED)
                account(ids)
        if not _requeue_pending(store, todo, rq, stats, account):
            break
