"""Status codes of pyinv: the one table of every per-pixel status code, its name and meaning.

* -1 pending: inside checkpoint stores (:mod:`pyinv.maps.store`), not computed yet;
* 0 converged: pixel and map inversions, NLTE backends;
* 1..100: the engine's own error codes (texts: :func:`pyinv.engine.error_message`);
* 101 masked, 102 bad input, 103 solver raised, 104 time limit, 105 worker died: map inversions and
  syntheses (:mod:`pyinv.maps`); 104 is also the NLTE backends' time limit;
* 201 NLTE not converged, 202 NLTE code failed: the NLTE backends (:mod:`pyinv.nlte`).

The texts of the engine's codes 1..100 live in the engine (``fortran/errors.f90``); :func:`describe`
asks it for them. This module imports nothing from pyinv at import time (the engine only lazily), so
every other module may import it.
"""
from __future__ import annotations

from typing import NamedTuple

__all__ = ["StatusCode", "TABLE", "MAP_CODES", "NLTE_CODES", "ENGINE_CODES", "status_name", "describe",
           "STATUS_PENDING", "STATUS_CONVERGED", "STATUS_MASKED", "STATUS_BAD_INPUT", "STATUS_FAILED",
           "STATUS_TIMEOUT", "STATUS_WORKER_DIED", "NLTE_CONVERGED", "NLTE_NOT_CONVERGED", "NLTE_CRASHED",
           "NLTE_TIMEOUT"]


class StatusCode(NamedTuple):
    """One row of :data:`TABLE`.

    Attributes
    ----------
    code : int
        The value stored in ``status`` arrays.
    name : str
        Short name (unique over the table), used in summaries.
    meaning : str
        One-line meaning.
    """

    code: int
    name: str
    meaning: str


#: Not computed yet (only inside a checkpoint store).
STATUS_PENDING = -1
#: Converged (the solver's own nonzero codes 1..100 are kept as they come).
STATUS_CONVERGED = 0
#: Excluded by ``mask``.
STATUS_MASKED = 101
#: The observed profiles are not usable: NaN/inf, Stokes I <= 0 somewhere (negative or all-zero I), or
#: values far outside a continuum-normalised range (see :func:`pyinv.maps.cube.check_cube`). Not inverted.
STATUS_BAD_INPUT = 102
#: The solver raised an exception, or the pixel's task failed ``retries + 1`` times running alone.
STATUS_FAILED = 103
#: The pixel exceeded ``time_limit`` (map inversions and NLTE backends alike).
STATUS_TIMEOUT = 104
#: A worker process died while computing the pixel, ``retries + 1`` times.
STATUS_WORKER_DIED = 105
#: NLTE backend: converged to the backend's tolerance.
NLTE_CONVERGED = STATUS_CONVERGED
#: NLTE backend: the iteration stopped at its maximum number of iterations above the tolerance
#: (profiles returned).
NLTE_NOT_CONVERGED = 201
#: NLTE backend: the external program failed (non-zero exit status, missing or unreadable output).
NLTE_CRASHED = 202
#: NLTE backend: the pixel exceeded its time limit (the same code as :data:`STATUS_TIMEOUT`).
NLTE_TIMEOUT = STATUS_TIMEOUT

#: Every named status code (the engine's codes 1..100 are not repeated here: see :func:`describe`).
TABLE = (
    StatusCode(STATUS_PENDING, "pending", "pending: not computed yet (only inside a checkpoint store)"),
    StatusCode(STATUS_CONVERGED, "converged", "converged"),
    StatusCode(STATUS_MASKED, "masked", "masked: excluded by mask=, not inverted"),
    StatusCode(STATUS_BAD_INPUT, "bad input",
               "bad input: NaN/inf, Stokes I <= 0 somewhere, or values beyond ±10 continuum units; not inverted"),
    StatusCode(STATUS_FAILED, "solver raised",
               "solver raised, or the pixel's task failed retries+1 times running alone"),
    StatusCode(STATUS_TIMEOUT, "time limit", "time limit: the pixel ran longer than time_limit seconds (per start)"),
    StatusCode(STATUS_WORKER_DIED, "worker died",
               "worker died: the worker process died while computing this pixel alone, retries+1 times"),
    StatusCode(NLTE_NOT_CONVERGED, "NLTE not converged",
               "NLTE not converged: the backend stopped at its iteration limit (profiles kept)"),
    StatusCode(NLTE_CRASHED, "NLTE code failed",
               "NLTE code failed: the external program failed (exit status, missing or unreadable output)"),
)
_BY_CODE = {row.code: row for row in TABLE}

#: Codes of a map inversion (``InversionResult.status``, checkpoint stores), besides the engine's 1..100.
MAP_CODES = (STATUS_PENDING, STATUS_CONVERGED, STATUS_MASKED, STATUS_BAD_INPUT, STATUS_FAILED, STATUS_TIMEOUT,
             STATUS_WORKER_DIED)
#: Codes of an NLTE backend (``NlteResult.status``).
NLTE_CODES = (NLTE_CONVERGED, NLTE_NOT_CONVERGED, NLTE_CRASHED, NLTE_TIMEOUT)
#: The engine's own error codes (texts: :func:`pyinv.engine.error_message`).
ENGINE_CODES = range(1, 101)


def _entry(code: int) -> tuple[int, StatusCode | None, bool]:
    """(code, its table entry or None, whether it is one of the engine's own codes)."""
    code = int(code)
    return code, _BY_CODE.get(code), code in ENGINE_CODES


def status_name(code: int) -> str:
    """Short name of a status code.

    Parameters
    ----------
    code : int
        A status value (of this table, of the engine, or any other integer).

    Returns
    -------
    str
        The table's name; ``"solver status N"`` for the engine's codes 1..100; ``"status N"`` otherwise.
    """
    code, entry, engine_code = _entry(code)
    if entry is not None:
        return entry.name
    return f"solver status {code}" if engine_code else f"status {code}"


def describe(code: int) -> str:
    """One-line meaning of a status code: the table's meaning; for the engine's codes 1..100 the engine's own
    text (:func:`pyinv.engine.error_message`, imported lazily; ``"engine error N"`` when it is not built);
    ``"unknown status N"`` otherwise."""
    code, entry, engine_code = _entry(code)
    if entry is not None:
        return entry.meaning
    if engine_code:
        try:
            from .engine import error_message
            return error_message(code)
        except Exception:  # engine not built
            return f"engine error {code}"
    return f"unknown status {code}"
