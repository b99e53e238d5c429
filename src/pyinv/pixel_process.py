"""Pixels computed in a child process with a wall-clock watchdog: the time limit of map inversions for
executors whose tasks run in threads (dask), where SIGALRM cannot reach the computation.

The parent (:func:`solve_isolated`) starts ``python -m pyinv.pixel_process``, sends it the problem and
the pixels (pickled, on stdin) and reads one record per pixel back (length-prefixed pickles on stdout).
A pixel still running ``time_limit`` seconds (per start) after it began gets ``STATUS_TIMEOUT``; the child
is killed and a new one continues with the next pixel. A child that dies on a pixel gives that pixel
``STATUS_WORKER_DIED`` (it ran alone, so the attribution is exact).
"""
from __future__ import annotations

import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import time
from typing import Any

import numpy as np

__all__ = ["solve_isolated"]

_HEADER = struct.Struct("<q")
#: Seconds a fresh child may take to import pyinv before its first pixel counts.
STARTUP_ALLOWANCE = 60.0


def _env() -> dict[str, str]:
    import pyinv

    roots = [os.path.dirname(os.path.abspath(p)) for p in pyinv.__path__]
    old = os.environ.get("PYTHONPATH", "")
    return dict(os.environ, PYTHONPATH=os.pathsep.join(dict.fromkeys(roots + ([old] if old else []))))


def _read_exact(fd: int, n: int, deadline: float) -> bytes | None:
    """``n`` bytes from ``fd`` before ``deadline`` (monotonic); None on timeout or end of file."""
    buf = bytearray()
    while len(buf) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        r, _, _ = select.select([fd], [], [], left)
        if not r:
            return None
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def solve_isolated(problem: Any, cube: np.ndarray, starts: list, snr: np.ndarray, ndep: int,
                   ncyc: int, extra: list | None = None) -> list[dict[str, Any]]:
    """Records of ``len(cube)`` pixels computed in child processes under ``problem.time_limit``.
    ``extra``: per pixel, the solver's second-component / stray-light keywords (a dict or None)."""
    from .scheduler import STATUS_TIMEOUT, STATUS_WORKER_DIED, _blank_record

    n = len(cube)
    nwav = int(cube.shape[-1])
    ncomp = int(getattr(problem, "ncomp", 1))
    extra = [None] * n if extra is None else list(extra)
    recs: list[dict[str, Any] | None] = [None] * n
    k = 0
    while k < n:
        proc = subprocess.Popen([sys.executable, "-m", "pyinv.pixel_process"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, env=_env())
        try:
            job = pickle.dumps((problem, np.asarray(cube[k:]), starts[k:], np.asarray(snr[k:]), ndep, ncyc,
                                extra[k:]), protocol=4)
            try:
                proc.stdin.write(job)
                proc.stdin.close()
            except BrokenPipeError:
                pass
            fd = proc.stdout.fileno()
            first = True
            while k < n:
                budget = float(problem.time_limit) * max(1, len(starts[k])) + 1.0
                deadline = time.monotonic() + budget + (STARTUP_ALLOWANCE if first else 0.0)
                head = _read_exact(fd, _HEADER.size, deadline)
                if head is None:
                    status = STATUS_TIMEOUT
                    if time.monotonic() < deadline:  # the child ended: its CPU-time limit (SIGPROF), or a crash
                        try:
                            rc = proc.wait(timeout=10)
                        except subprocess.TimeoutExpired:
                            rc = None
                        status = STATUS_TIMEOUT if rc == -signal.SIGPROF else STATUS_WORKER_DIED
                    recs[k] = _blank_record(ndep, nwav, ncyc, status, ncomp)
                    k += 1
                    break
                body = _read_exact(fd, _HEADER.unpack(head)[0], time.monotonic() + 30.0)
                if body is None:
                    recs[k] = _blank_record(ndep, nwav, ncyc, STATUS_WORKER_DIED, ncomp)
                    k += 1
                    break
                recs[k] = pickle.loads(body)
                k += 1
                first = False
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            proc.stdout.close()
    return recs  # type: ignore[return-value]


def _main() -> int:
    from . import scheduler

    problem, cube, starts, snr, ndep, ncyc, extra = pickle.load(sys.stdin.buffer)
    scheduler._worker_setup()
    scheduler._HARD_LIMITS = True
    solver = problem.solver_function()
    out = os.fdopen(os.dup(1), "wb")  # the records' channel; anything the solver prints goes to stderr
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    for k in range(len(cube)):
        rec = scheduler.solve_pixel(problem, solver, cube[k], starts[k], float(snr[k]), ndep, ncyc, extra[k])
        body = pickle.dumps(rec, protocol=4)
        out.write(_HEADER.pack(len(body)) + body)
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(_main())
