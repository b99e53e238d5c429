"""Pixels → executors: chunking, worker set-up, load balancing, progress, retries (:func:`run_pixels`).

How a map is run
----------------
* The pixels to compute are cut into chunks (contiguous runs of raster indices). A bounded window of
  chunks is in flight; a worker that finishes takes the next one (dynamic load balancing).
* **Local pool** (default): a :class:`concurrent.futures.ProcessPoolExecutor` with
  :class:`pyinv.maps.processes.WorkerContext` (its workers do not import the parent's ``__main__``). Every
  worker runs :func:`_init_local_worker` once: it sets the process up (:func:`~pyinv.maps.processes.setup_worker`)
  and memory-maps every input (cube, start-model table and its header, per-pixel indices, S/N, per-pixel
  extras) that the parent wrote once to a scratch folder (``/dev/shm`` when it has room for all of
  them). Tasks carry only pixel indices; workers write each finished pixel straight into the result
  store (also memory-mapped) and drop their mapped pages after each task, so a worker's resident size
  does not grow with the map. Into a checkpoint (a durable store) they write the statuses in batches
  (:meth:`~pyinv.maps.store.ResultStore.put` with ``batch=True``): each pixel's data at once, the statuses
  of a chunk's pixels once their data are synced, with one msync per field (at the chunk's end, or as
  soon as :data:`~pyinv.maps.store.COMMIT_SECONDS` have passed since the last commit): one msync per
  field and pixel (16 files) took ~20 ms per pixel (ext4, under load), half a CNN-started pixel's inversion.
* **Any other** :class:`concurrent.futures.Executor` (dask ``client.get_executor()``, a ``distributed.Client``,
  ``mpi4py.futures.MPIPoolExecutor``, ...): tasks carry their chunk's profiles and guesses and return the
  records, which the parent writes into the store.
* ``executor="serial"`` runs in the calling process (debugging/profiling; no fault isolation).
* **Streamed starts** (``problem.stream``, e.g. ``init="cnn"``): each chunk's start models are made
  where the chunk is computed — by the pool worker from the cube it memory-maps, inside the task of other
  executors — right before its pixels are; nothing per pixel is prepared in the calling process. A pixel
  whose start cannot be made fails alone (``STATUS_FAILED``).

Faults
------
* An exception inside the per-pixel solver gives that pixel ``STATUS_FAILED`` and NaNs.
* A task that fails otherwise (an error outside the per-pixel guard, a failed ``submit``, a task that
  returned with pixels unwritten) is split into one-pixel tasks; a pixel that fails ``retries + 1`` times
  alone gets ``STATUS_FAILED`` (``STATUS_WORKER_DIED`` when the executor reports a dead worker). After the
  queue drains, any pixel still pending is requeued the same way: the run ends only when none is pending.
* A worker process that dies (segfault, ``kill -9``) breaks a local pool: the parent builds a new pool
  and resubmits every unfinished pixel; pixels that were being computed when a worker died are rerun
  one at a time with nothing else running (so a death is attributed to the right pixel; pixels it had
  finished whose statuses were held for their batch are simply requeued), and a pixel
  that kills its worker ``retries + 1`` times while running alone is given ``STATUS_WORKER_DIED``. A pool
  that dies before starting or finishing any pixel is rebuilt at most :data:`MAX_FUTILE_REBUILDS` times,
  then :class:`PoolStartError` reports the workers' own error and :data:`~pyinv.maps.processes.GUARD_HINT`.
* A run that stops early (an exception or ``KeyboardInterrupt`` in the parent, or SIGTERM: while a local
  pool runs, SIGTERM in the main thread raises ``SystemExit(143)`` if its handler was the default) ends
  its pool workers at once instead of waiting for their chunks; finished pixels stay in the store, so a
  rerun with the same checkpoint resumes.
* ``time_limit`` (seconds per pixel and start): a pixel still running after it gets ``STATUS_TIMEOUT``.
  The limit is enforced with SIGALRM (:func:`pyinv.maps.pixel.pixel_time_limit`) and, in local pool
  workers, a hard CPU-time limit of ``2·time_limit + 1`` s (SIGPROF kills the worker; the parent records
  the timeout). Executors that run tasks outside the main thread of their process (dask workers) cannot
  take signals: there the pixels of a task run in a child process (:mod:`pyinv.maps.isolated`) that is
  killed when a pixel overruns.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Executor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..status import STATUS_FAILED, STATUS_PENDING, STATUS_TIMEOUT, STATUS_WORKER_DIED
from .extras import PixelExtras
from .pixel import PixelProblem, chunk_starts, enable_hard_limits
from .processes import GUARD_HINT, mp_context, scratch_dir, setup_worker, sigterm_raises, terminate_pool, usable_cores
from .store import Dims, ResultStore, filled_npy, release_pages, write_npy

__all__ = ["run_pixels", "PoolStartError", "MAX_FUTILE_REBUILDS", "Requeue", "worker_inputs"]

#: How often a local pool that died before starting or finishing any pixel is rebuilt before the run
#: stops with :class:`PoolStartError`.
MAX_FUTILE_REBUILDS = 3


class PoolStartError(RuntimeError):
    """The local process pool died repeatedly before any pixel was computed."""


def run_pixels(problem: PixelProblem, cube: np.ndarray, table: np.ndarray, header: np.ndarray, gindex: np.ndarray,
               snr: np.ndarray, todo: np.ndarray, store: ResultStore, *, executor: Any = None,
               workers: int | None = None, chunk: int | None = None, progress: Any = True,
               retries: int = 2, extras: PixelExtras | None = None) -> dict[str, Any]:
    """Compute the pixels ``todo`` (raster indices) of ``problem`` and write their records into ``store``.

    Parameters
    ----------
    problem : pyinv.maps.pixel.PixelProblem
        Its :meth:`~pyinv.maps.pixel.PixelProblem.record` is the store's.
    cube : ndarray (npix, 4, nλ)
        The profiles handed to each pixel's solver.
    table, header : guess table (nmod, ndep, 11) and (nmod, 3)
    gindex : ndarray (npix, nstart) of rows of ``table``
    snr : ndarray (npix,)  per-pixel S/N of I (NaN = the configuration's)
    todo : ndarray of raster indices still to compute
    executor, workers, chunk, progress : see :func:`pyinv.invert`
    retries : int
        How often a pixel is retried after its worker died.
    extras : pyinv.maps.extras.PixelExtras, optional
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
    stats: dict[str, Any] = {"computed": int(todo.size), "pool_restarts": 0, "chunk_failures": 0}
    if extras is not None and extras.empty:
        extras = None
    ncomp = int(problem.ncomp)
    if ncomp != (1 if extras is None else extras.ncomp) or store.ncomp != ncomp:
        raise ValueError(f"run_pixels: problem.ncomp={ncomp}, the store holds {store.ncomp} component(s), the "
                         f"per-pixel inputs {1 if extras is None else extras.ncomp}")
    if store.naux != problem.naux:
        raise ValueError(f"run_pixels: the store holds {store.naux} auxiliary start value(s) per pixel, the "
                         f"problem's start stream makes {problem.naux}")
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
            setup_worker()
            solver = problem.pixel_solver(store.dims)
            for ids in _chunks(todo, chunk or 16):
                starts, aux = chunk_starts(problem, lambda: cube[ids], ids, gindex, table, header)
                store.commit()   # (as a pool worker: the chunk's batch starts now)
                for k, p in enumerate(ids):
                    store.put(int(p), solver.solve_started(int(p), cube[p], starts[k], float(snr[p]),
                                                           None if extras is None else extras.kwargs(int(p)),
                                                           None if aux is None else aux[k]), batch=True)
                store.commit()
                account(ids)
        elif executor is None:
            n = max(1, int(workers or usable_cores()))
            size = chunk or int(np.clip(np.ceil(todo.size / (n * 16)), 1, 32))
            stats.update(workers=n, executor="local-pool", chunk=size)
            with sigterm_raises():
                _run_local_pool(problem, cube, table, header, gindex, snr, todo, store, n, size, retries, account,
                                stats, extras)
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


# ------------------------------------------------------------------------------------------ worker side
#: File-name prefix of the per-pixel extras (PixelExtras arrays) in a local pool's input folder.
_EXTRA_PREFIX = "x_"
_W: dict[str, Any] = {}


def worker_inputs() -> dict[str, Any]:
    """In a local pool worker, what it set up once: the problem, its pixel solver, the memory-mapped
    inputs (``cube``, ``table``, ``header``, ``gindex``, ``snr``, ``started``, ``extras``) and the attached
    store; empty elsewhere (read-only use: e.g. checking that the inputs are memory maps)."""
    return _W


def _init_local_worker(problem: PixelProblem, input_dir: str, store_dir: str) -> None:
    """Entry point of a local pool worker (needs nothing from ``__main__``): memory-maps every input.
    An exception is written to ``input_dir/worker-error-<pid>.txt`` for the parent's message."""
    try:
        setup_worker()
        enable_hard_limits()
        d = Path(input_dir)
        _W.clear()
        store = ResultStore.attach(store_dir, problem.record())
        _W.update(problem=problem, solver=problem.pixel_solver(store.dims), dir=str(d),
                  cube=np.load(d / "cube.npy", mmap_mode="r"), table=np.load(d / "table.npy", mmap_mode="r"),
                  header=np.load(d / "header.npy", mmap_mode="r"), gindex=np.load(d / "gindex.npy", mmap_mode="r"),
                  snr=np.load(d / "snr.npy", mmap_mode="r"), started=np.load(d / "started.npy", mmap_mode="r+"),
                  store=store)
        extras = {f.name[len(_EXTRA_PREFIX):-4]: np.load(f, mmap_mode="r") for f in d.glob(_EXTRA_PREFIX + "*.npy")}
        if extras:
            _W["extras"] = PixelExtras.from_arrays(extras)
    except BaseException:
        import traceback

        with contextlib.suppress(OSError):
            (Path(input_dir) / f"worker-error-{os.getpid()}.txt").write_text(traceback.format_exc())
        raise


def _local_chunk(ids: np.ndarray) -> int:
    w = _W
    ex = w.get("extras")
    try:
        streamed = w["problem"].stream is not None
        if streamed:  # a worker that dies while making the chunk's starts: its pixels are suspects
            w["started"][ids] = time.time()
        starts, aux = chunk_starts(w["problem"], lambda: w["cube"][ids], ids, w["gindex"], w["table"], w["header"])
        if streamed:
            w["started"][ids] = 0.0
        w["store"].commit()  # nothing held: the chunk's batch starts now (its first slow pixel commits at once)
        for k, p in enumerate(ids):
            w["started"][p] = time.time()
            rec = w["solver"].solve_started(int(p), w["cube"][p], starts[k], float(w["snr"][p]),
                                            None if ex is None else ex.kwargs(int(p)), None if aux is None else aux[k])
            if not w["store"].put(int(p), rec, batch=True):
                w["started"][p] = -time.time()  # finished, status held for the batch: no suspect if we die
    finally:  # commit the held statuses; keep the worker's resident size independent of the map's size
        if "store" in w:
            w["store"].commit()
        for key in ("cube", "table", "header", "gindex", "snr", "started"):
            release_pages(w.get(key))
        if ex is not None:
            for a in ex.arrays().values():
                release_pages(a)
        if "store" in w:
            w["store"].release()
    return len(ids)


def _remote_chunk(problem: PixelProblem, ids: np.ndarray, cube: np.ndarray, table: np.ndarray, header: np.ndarray,
                  gindex: np.ndarray, snr: np.ndarray, dims: Dims, extras: PixelExtras | None = None
                  ) -> dict[str, np.ndarray]:
    """A self-contained chunk for any executor: its profiles (n, 4, nλ), a sub-table of guesses with the
    pixels' rows into it (n, nstart), S/N (n,) and the chunk's :class:`~pyinv.maps.extras.PixelExtras`
    (renumbered to the chunk, or None). Returns the stacked records."""
    n = len(ids)
    local = np.arange(n)
    if problem.stream is not None:
        setup_worker()
    starts, aux = chunk_starts(problem, lambda: cube, local, gindex, table, header, pixels=ids)
    kws = [None if extras is None else extras.kwargs(k) for k in range(n)]
    ok = [k for k in range(n) if starts[k] is not None]
    record = problem.record()
    recs: list = [record.blank(dims, STATUS_FAILED) for _ in range(n)]
    if problem.time_limit and (threading.current_thread() is not threading.main_thread()
                               or not hasattr(signal, "setitimer")):
        # a thread (dask workers) cannot take SIGALRM: the pixels run in a child process that is killed
        # when a pixel overruns (imported here: `python -m pyinv.maps.isolated` must find it not yet imported)
        from .isolated import solve_isolated

        if ok:
            for k, rec in zip(ok, solve_isolated(problem, np.asarray(ids)[ok], cube[ok], [starts[k] for k in ok],
                                                 snr[ok], dims, [kws[k] for k in ok])):
                recs[k] = rec
    else:
        setup_worker()
        solver = problem.pixel_solver(dims)
        for k in ok:
            recs[k] = solver.solve(int(ids[k]), cube[k], starts[k], float(snr[k]), kws[k])
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


def _as_executor(executor: Any) -> Executor:
    if hasattr(executor, "get_executor") and not isinstance(executor, Executor):  # distributed.Client
        return executor.get_executor()
    if not hasattr(executor, "submit"):
        raise ValueError(f"executor must be None, 'serial' or a concurrent.futures.Executor, got {executor!r}")
    return executor


def _worker_errors(indir: str) -> str:
    """The last lines of the first error a pool worker wrote at start-up ('' when none)."""
    for f in sorted(Path(indir).glob("worker-error-*.txt")):
        with contextlib.suppress(OSError):
            lines = f.read_text().strip().splitlines()
            return "\n".join(lines[-6:])
    return ""


class Requeue:
    """Failure bookkeeping shared by both pool drivers: a failed task of several pixels is split into
    one-pixel tasks (no attempt is counted); a one-pixel task that fails counts an attempt of its pixel,
    which gets a blank record of ``status`` once it has failed ``retries + 1`` times."""

    def __init__(self, store: ResultStore, queue: deque, npix: int, retries: int):
        self.store, self.queue, self.retries = store, queue, int(retries)
        self.attempts = np.zeros(npix, np.int32)

    def failed(self, ids: np.ndarray, status: int = STATUS_FAILED) -> None:
        pend = self.store.pending(ids)
        if pend.size > 1:
            for p in pend[::-1]:
                self.queue.appendleft(np.array([p]))
            return
        for p in pend:
            self.attempts[p] += 1
            if self.attempts[p] > self.retries:
                self.store.put(int(p), self.store.blank(status))
            else:
                self.queue.appendleft(np.array([p]))


def _requeue_pending(store: ResultStore, todo: np.ndarray, rq: Requeue, stats: dict, account: Callable) -> bool:
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


def _run_local_pool(problem, cube, table, header, gindex, snr, todo, store, nworkers, size, retries, account, stats,
                    extras=None):
    from concurrent.futures import ProcessPoolExecutor

    npix = cube.shape[0]
    inputs = {"cube": cube, "table": table, "header": header, "gindex": gindex, "snr": snr}
    if extras is not None:
        inputs.update({_EXTRA_PREFIX + k: v for k, v in extras.arrays().items()})
    indir = scratch_dir(sum(int(a.nbytes) for a in inputs.values()) + 8 * npix)  # + started
    try:
        d = Path(indir)
        for name, arr in inputs.items():
            write_npy(d / f"{name}.npy", arr)
        # per pixel: 0 not running, t > 0 running since t, -t finished at t with its status not yet
        # committed (ResultStore.put(batch=True)): requeued, not suspected, if its worker dies
        started = filled_npy(d / "started.npy", (npix,), "f8", 0.0)
        ctx = mp_context()
        queue = _chunks(todo, size)
        rq = Requeue(store, queue, npix, retries)
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
                    if broken and not inflight:
                        pool.shutdown(wait=True, cancel_futures=True)
                        now = time.time()
                        work = np.concatenate([ids for ids, _ in failed]) if failed else np.zeros(0, np.int64)
                        progressed = (int(np.count_nonzero(store.status[todo] != STATUS_PENDING)) > done_at_birth
                                      or bool(work.size and (np.abs(started[work]) >= born).any()))
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
                                    store.put(int(p), store.blank(STATUS_TIMEOUT))
                                elif attempts[p] > retries:
                                    store.put(int(p), store.blank(STATUS_WORKER_DIED))
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
            terminate_pool(pool)
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
    dims = store.dims
    queue = _chunks(todo, size)
    rq = Requeue(store, queue, npix, retries)
    inflight: dict = {}
    submit_failures = 0

    def submit(ids):
        rows = np.unique(gindex[ids][gindex[ids] >= 0])
        remap = np.full(table.shape[0], -1, np.int32)
        remap[rows] = np.arange(rows.size, dtype=np.int32)
        g = np.where(gindex[ids] >= 0, remap[np.maximum(gindex[ids], 0)], -1).astype(np.int32)
        return ex.submit(_remote_chunk, problem, ids, np.ascontiguousarray(cube[ids]), np.ascontiguousarray(table[rows]),
                         np.ascontiguousarray(header[rows]), g, np.ascontiguousarray(snr[ids]), dims,
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
