"""Pixels computed in a child process with a wall-clock watchdog: the time limit of map runs for
executors whose tasks run in threads (dask), where SIGALRM cannot reach the computation.

The parent (:func:`solve_isolated`) starts ``python -m pyinv.maps.isolated``, sends it the problem and
the pixels (pickled, on stdin) and reads one record per pixel back (length-prefixed pickles on stdout).
A pixel still running ``time_limit`` seconds (per start) after it began gets ``STATUS_TIMEOUT``; the child
is killed and a new one continues with the next pixel. A child that dies on a pixel gives that pixel
``STATUS_WORKER_DIED`` (it ran alone, so the attribution is exact).

Nothing imports this module when pyinv is imported (:mod:`pyinv.maps.pool` imports it where it is used),
so that ``python -m`` runs it as a fresh ``__main__``.
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

from ..status import STATUS_TIMEOUT, STATUS_WORKER_DIED
from .pixel import PixelProblem, enable_hard_limits
from .processes import setup_worker
from .store import Dims

__all__ = ["solve_isolated", "STARTUP_ALLOWANCE"]

_HEADER = struct.Struct("<q")
#: Seconds a fresh child may take to import pyinv before its first pixel counts.
STARTUP_ALLOWANCE = 60.0
#: The top-level package (imported already: this module is part of it), whose folders the child needs.
_ROOT = __name__.partition(".")[0]


def _env() -> dict[str, str]:
    roots = [os.path.dirname(os.path.abspath(p)) for p in sys.modules[_ROOT].__path__]
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


def solve_isolated(problem: PixelProblem, ids: np.ndarray, cube: np.ndarray, starts: list, snr: np.ndarray,
                   dims: Dims, extra: list | None = None) -> list[dict[str, Any]]:
    """Records of the pixels ``ids`` (raster indices; profiles ``cube`` (n, 4, nλ), ``starts`` and ``snr``
    per pixel) computed in child processes under ``problem.time_limit``. ``extra``: per pixel, the
    solver's second-component / stray-light keywords (a dict or None)."""
    n = len(cube)
    record = problem.record()
    extra = [None] * n if extra is None else list(extra)
    ids = np.asarray(ids, dtype=np.int64)
    recs: list[dict[str, Any] | None] = [None] * n
    k = 0
    while k < n:
        proc = subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                env=_env())
        try:
            job = pickle.dumps((problem, ids[k:], np.asarray(cube[k:]), starts[k:], np.asarray(snr[k:]), tuple(dims),
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
                    recs[k] = record.blank(dims, status)
                    k += 1
                    break
                body = _read_exact(fd, _HEADER.unpack(head)[0], time.monotonic() + 30.0)
                if body is None:
                    recs[k] = record.blank(dims, STATUS_WORKER_DIED)
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
    problem, ids, cube, starts, snr, dims, extra = pickle.load(sys.stdin.buffer)
    setup_worker()
    enable_hard_limits()
    solver = problem.pixel_solver(Dims(*dims))
    out = os.fdopen(os.dup(1), "wb")  # the records' channel; anything the solver prints goes to stderr
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    for k in range(len(cube)):
        rec = solver.solve(int(ids[k]), cube[k], starts[k], float(snr[k]), extra[k])
        body = pickle.dumps(rec, protocol=4)
        out.write(_HEADER.pack(len(body)) + body)
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(_main())
