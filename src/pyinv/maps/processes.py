"""Operating-system plumbing of map runs: cores, worker processes, scratch folders and their owners, signals.

* :class:`WorkerContext` is the multiprocessing context of pyinv's local pools (forkserver where available,
  else spawn) whose workers do **not** import the parent's ``__main__``: an unguarded script, a script read
  from stdin and a notebook work alike. :func:`setup_worker` prepares a process that computes pixels
  (engine imported, BLAS/OpenMP pinned to one thread).
* Temporary folders (:func:`scratch_dir`, the store of a run without checkpoint) are named after their
  owner process (:func:`owner_tag`: pid and start time); :func:`remove_stale_folders` removes those of
  owners that are gone (a run killed with SIGKILL).
* :func:`sigterm_raises` turns SIGTERM into ``SystemExit`` while a pool runs, :func:`terminate_pool` ends a
  pool's workers at once.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
import time
from typing import Any, Callable

__all__ = ["GUARD_HINT", "usable_cores", "setup_worker", "refuse_in_bootstrap", "start_time", "owner_tag",
           "remove_stale_folders", "scratch_dir", "WorkerProcess", "WorkerContext", "mp_context",
           "sigterm_raises", "terminate_pool"]

GUARD_HINT = ('pyinv.invert runs its workers in separate processes, which do not run your main script: what '
              'they need (e.g. a custom solver or guess object) must come from an importable module, not from '
              '__main__. If this is a script, put the code that calls pyinv.invert under '
              '`if __name__ == "__main__":`; or pass executor="serial" to run in this process.')


def usable_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


_SETUP_DONE = False
_LIMITER = None


def setup_worker() -> None:
    """Once per process that computes pixels: import the engine, pin BLAS/OpenMP threads to 1."""
    global _SETUP_DONE, _LIMITER
    if _SETUP_DONE:
        return
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    try:
        from .. import engine
        engine.api()
    except Exception:  # the solver will report a missing engine per pixel
        pass
    try:
        from threadpoolctl import threadpool_limits
        _LIMITER = threadpool_limits(limits=1)
    except Exception:  # pragma: no cover - threadpoolctl missing
        _LIMITER = None
    _SETUP_DONE = True


def refuse_in_bootstrap() -> None:
    """A process that is still being set up by multiprocessing (it re-runs its parent's main module, e.g.
    a user's own pool started from an unguarded script) must not start a map inversion."""
    import multiprocessing

    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise RuntimeError("pyinv.invert was called while a child process was starting (the main script is "
                           "re-run by multiprocessing in its children). " + GUARD_HINT)


# ------------------------------------------------------------------------------- folders and owners
def start_time(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot, /proc), None if it does not exist."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def owner_tag() -> str:
    """``<pid>-<start time>``: names this process as the owner of a temporary folder."""
    return f"{os.getpid()}-{start_time(os.getpid()) or 0}"


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
    now = start_time(pid)
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


def scratch_dir(nbytes: int, prefix: str = "pyinv-in-") -> str:
    """A temporary folder for ``nbytes`` of inputs: in /dev/shm when it has room for them (twice, plus
    64 MiB), else in the temporary directory. Named after its owner process, so that a later run can
    remove it should this one be killed."""
    shm = "/dev/shm"
    name = f"{prefix}{owner_tag()}-"
    with contextlib.suppress(OSError):
        remove_stale_folders(shm, tempfile.gettempdir())
    try:
        if os.path.isdir(shm) and shutil.disk_usage(shm).free > 2 * nbytes + (64 << 20):
            return tempfile.mkdtemp(prefix=name, dir=shm)
    except OSError:  # pragma: no cover
        pass
    return tempfile.mkdtemp(prefix=name)


# ------------------------------------------------------------------------------- worker processes
# Workers get nothing from __main__: multiprocessing's spawn/forkserver children normally re-run the
# parent's main script (as __mp_main__) before unpickling their task; an unguarded script would then call
# pyinv.invert again in every worker (which fails, and used to make the pool restart for ever), and a
# script read from stdin cannot be re-run at all. The worker entry points live in pyinv.maps.pool, so the
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


def mp_context(preload: tuple[str, ...] = ("pyinv", "pyinv.maps.pool")):
    """A :class:`WorkerContext` (its forkserver preloading ``preload``); plain spawn off POSIX."""
    import multiprocessing as mp

    if os.name != "posix":  # pragma: no cover - Windows: plain spawn (scripts need the __main__ guard)
        return mp.get_context("spawn")
    ctx = WorkerContext()
    if ctx.get_start_method() == "forkserver":
        with contextlib.suppress(Exception):
            ctx.set_forkserver_preload(list(preload))
    return ctx


# ---------------------------------------------------------------------------------------- signals
@contextlib.contextmanager
def sigterm_raises():
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


def terminate_pool(pool: Any, grace: float = 2.0) -> None:
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
