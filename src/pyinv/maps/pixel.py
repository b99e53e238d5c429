"""One pixel of a map: the pixel problems, the inversion pixel's record, time limits and starts.

A *pixel problem* (:class:`PixelProblem`) is what the executors of :func:`pyinv.maps.pool.run_pixels`
need besides the pixels' data. It travels to every worker (pickled), declares the record each pixel
gives (:meth:`PixelProblem.record`, a :class:`pyinv.maps.store.Record`) and makes, once per process that
computes pixels, the :class:`PixelSolver` that turns a pixel's profiles and starts into its record. Two
kinds exist: :class:`InversionPixels` (``pyinv.invert``: a solver with ``invert_pixel``'s signature, run
from each start, the best fit kept, the reduced χ² added; its record :data:`INVERSION_RECORD`) and
:class:`pyinv.maps.synthesis.SynthesisPixels` (``pyinv.synthesize_map``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..atmosphere import Atmosphere
from ..physics.inversion import free_parameters, reduced_chi2
from ..status import STATUS_BAD_INPUT, STATUS_FAILED, STATUS_PENDING, STATUS_TIMEOUT
from .store import Dims, Field, Record

__all__ = ["PixelProblem", "PixelSolver", "InversionPixels", "InversionSolver", "INVERSION_RECORD", "COMPONENT2",
           "NLTE_FIELDS", "inversion_record", "PixelTimeout", "pixel_time_limit", "enable_hard_limits", "chunk_starts"]

# ------------------------------------------------------------------------------------------ the records
#: The record of an inverted pixel (the store's files, the attributes of :class:`pyinv.InversionResult`).
INVERSION_RECORD = Record(
    Field("atmos", "f8", ("ndep", 11), result="atmospheres"),
    Field("header", "f8", (3,), result=("macro", "filling", "stray")),  # macro [km/s], filling, stray [%]
    Field("fits", "f8", (4, "nwav"), result="fits"),
    Field("chi2", "f8", result="chi2"),                                   # final cycle (SIR's figure)
    Field("chi2_cycles", "f8", ("ncyc",), result="chi2_cycles"),
    Field("status", "i4", fill=STATUS_PENDING, result="status"),         # written last by the store
    Field("iterations", "i4", fill=0, result="iterations"),
    Field("errors", "f8", ("ndep", 11), result="errors"),
    Field("errors_header", "f8", (3,), result="errors_header"),
    Field("start", "i2", fill=-1, result="start"),                        # which start won (multistart)
    Field("seconds", "f4", result="seconds"),                             # wall time of the pixel in its worker
    # against the noise model (≈ 1 at the noise level)
    Field("chi2_reduced", "f8", result="chi2_reduced", optional=True),
    # component 2's filling factor f2 (NaN: one component); alpha [%] is component 1's header stray (files and
    # stores of pyinv before issue 18 also held it as "stray_percent", a copy that is no longer written)
    Field("filling2", "f8", result="filling2", optional=True),
    Field("atmos2", "f8", ("ndep", 11), result="atmospheres2", optional=True),  # component 2 (ncomp = 2 only)
    Field("header2", "f8", (3,), result=("macro2", None, None), optional=True),  # its macro, filling, stray
    Field("errors2", "f8", ("ndep", 11), result="errors2", optional=True),
    Field("errors_header2", "f8", (3,), result="errors_header2", optional=True),
    Field("rescue", "i1", fill=0, result="rescue", optional=True),        # 0 none, 1 tried, 2 taken (issue 17)
    # B [G], gamma, phi [deg] of the start read off the profiles (invert_pixel(magnetic_start="profiles");
    # NaN: the guess's were used)
    Field("magnetic_start", "f4", (3,), fill=np.nan, result="magnetic_start", optional=True),
    Field("start_aux", "f4", ("naux",), blank=False),                     # StartStream.naux values (naux > 0)
    # NLTE maps (pyinv.nlte.desire.NlteSolver; issue 19): backend calls of the pixel (all its starts; -1 none),
    # the emulated departures' check (rms Stokes I difference, continuum units; NaN: not checked) and whether
    # the backend iterations took over (1), the check passed (0) or the b were not emulated (-1)
    Field("backend_calls", "i4", fill=-1, result="backend_calls", optional=True),
    Field("nlte_check", "f4", fill=np.nan, result="nlte_check", optional=True),
    Field("nlte_fallback", "i1", fill=-1, result="nlte_fallback", optional=True),
)

#: Fields of :data:`INVERSION_RECORD` present only with a second magnetic component.
COMPONENT2 = ("atmos2", "header2", "errors2", "errors_header2")
#: Fields of :data:`INVERSION_RECORD` present only in NLTE maps (a solver with ``nlte_record = True``).
NLTE_FIELDS = ("backend_calls", "nlte_check", "nlte_fallback")


def inversion_record(ncomp: int = 1, naux: int = 0, nlte: bool = False) -> Record:
    """:data:`INVERSION_RECORD` for pixels of ``ncomp`` magnetic components whose starts give ``naux``
    auxiliary values (without the component-2 fields for one component, without ``start_aux`` for none,
    without :data:`NLTE_FIELDS` unless ``nlte``)."""
    drop = ((() if int(ncomp) == 2 else COMPONENT2) + (() if int(naux) > 0 else ("start_aux",))
            + (() if nlte else NLTE_FIELDS))
    return INVERSION_RECORD.without(*drop)


# ------------------------------------------------------------------------------------------ time limits
class PixelTimeout(Exception):
    """Raised inside a worker when a pixel exceeds its time limit."""


_HARD_LIMITS = False  # True in processes that only compute pixels: a runaway pixel may be killed by SIGPROF


def enable_hard_limits() -> None:
    """In a process that only computes pixels (a local pool worker, an isolated child): from now on
    :func:`pixel_time_limit` also sets a CPU-time limit of ``2·seconds + 1`` whose SIGPROF kills the process."""
    global _HARD_LIMITS
    _HARD_LIMITS = True


@contextlib.contextmanager
def pixel_time_limit(seconds: float | None):
    """Raise :class:`PixelTimeout` in the block after ``seconds`` of wall time (SIGALRM; only in the main
    thread and where signals exist, else no limit), plus the hard CPU-time limit of :func:`enable_hard_limits`."""
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


# ------------------------------------------------------------------------------------- pixel problems
class PixelProblem:
    """Base of the pixel problems (see the module docstring). A subclass is a picklable dataclass with at
    least ``time_limit`` (seconds per pixel and start, None: none), ``ncomp`` (magnetic components of its
    records) and ``stream`` (a :class:`pyinv.init.StartStream` whose starts are made per chunk, or None)."""

    time_limit: float | None = None
    ncomp: int = 1
    stream: Any = None

    @property
    def naux(self) -> int:
        """Auxiliary start values per pixel of the start stream (the record's ``start_aux``; 0: none)."""
        return 0 if self.stream is None else int(getattr(self.stream, "naux", 0))

    def record(self) -> Record:  # pragma: no cover - abstract
        """The fields of this problem's pixel records."""
        raise NotImplementedError

    def pixel_solver(self, dims: Dims) -> "PixelSolver":  # pragma: no cover - abstract
        """This problem's pixels as computed in this process (made once per process)."""
        raise NotImplementedError


class PixelSolver:
    """Computes the pixels of one problem in one process: records of the problem's :class:`Record` in the
    sizes ``dims``. Subclasses implement :meth:`solve`."""

    def __init__(self, problem: PixelProblem, dims: Dims):
        self.problem = problem
        self.dims = dims
        self.record = problem.record()

    def blank(self, status: int) -> dict[str, Any]:
        return self.record.blank(self.dims, status)

    def solve(self, p: int, stokes: np.ndarray, starts: list[tuple[np.ndarray, np.ndarray]], snr: float,
              extra: dict[str, Any] | None = None) -> dict[str, Any]:  # pragma: no cover - abstract
        """The record of raster pixel ``p`` from its profiles (4, nλ), starts [(model (ndep, 11), header (3,))],
        S/N of I (NaN: the configuration's) and per-pixel solver keywords (:meth:`PixelExtras.kwargs`)."""
        raise NotImplementedError

    def solve_started(self, p: int, stokes: np.ndarray, starts: list | None, snr: float,
                      extra: dict[str, Any] | None, aux: np.ndarray | None) -> dict[str, Any]:
        """:meth:`solve`, or a failed record when the pixel has no start (its streamed start could not be
        made); with the pixel's auxiliary start values (``start_aux``) when there are some."""
        rec = self.blank(STATUS_FAILED) if starts is None else self.solve(p, stokes, starts, snr, extra)
        if aux is not None:
            rec["start_aux"] = aux
        return rec


@dataclass
class InversionPixels(PixelProblem):
    """The pixels of a map inversion (pickled once per worker / task).

    ``solver`` is ``"module:function"`` or a picklable callable with ``invert_pixel``'s signature
    ``solver(stokes, guess, lines, grid, config, *, mu, psf, abundances)`` returning an object with
    ``.atmosphere``, ``.fit``, ``.chi2``, ``.iterations``, ``.status`` and ``.errors``. A map with a
    second component or stray light also passes the keywords of :meth:`pyinv.maps.extras.PixelExtras.kwargs`
    (``guess2``, ``filling``, ``stray_profile``, ``stray``) and reads ``.atmosphere2``, ``.errors2`` and
    ``.filling2`` of the result when present (α is the ``stray`` of ``.atmosphere``'s header).
    """

    lines: Any
    grid: Any
    config: Any  # an InversionConfig
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

    @property
    def nlte(self) -> bool:
        """Whether the records carry :data:`NLTE_FIELDS` (a solver with ``nlte_record = True``)."""
        return bool(getattr(self.solver, "nlte_record", False))

    def record(self) -> Record:
        return inversion_record(self.ncomp, self.naux, self.nlte)

    def pixel_solver(self, dims: Dims) -> "InversionSolver":
        return InversionSolver(self, dims)


class InversionSolver(PixelSolver):
    """Inverts one pixel from each of its starts and keeps the result with the lowest final χ²."""

    problem: InversionPixels

    def __init__(self, problem: InversionPixels, dims: Dims):
        super().__init__(problem, dims)
        self.solver = problem.solver_function()

    def solve(self, p: int, stokes: np.ndarray, starts: list[tuple[np.ndarray, np.ndarray]], snr: float,
              extra: dict[str, Any] | None = None) -> dict[str, Any]:
        problem = self.problem
        t0 = time.perf_counter()
        if not np.isfinite(stokes).all():
            return self.blank(STATUS_BAD_INPUT)
        cfg = problem.config
        if np.isfinite(snr):
            cfg = dataclasses.replace(cfg, snr=float(snr))
        snr_last = float(cfg.value("snr", cfg.cycles))
        w_last = cfg.weights_for(cfg.cycles)
        best, calls = None, 0
        for k, (row, hdr) in enumerate(starts):
            try:
                guess = Atmosphere.from_array(row, macro=hdr[0], filling=hdr[1], stray=hdr[2])
                with pixel_time_limit(problem.time_limit):
                    res = self.solver(np.array(stokes, dtype=np.float64), guess, problem.lines, problem.grid, cfg,
                                      mu=problem.mu, psf=problem.psf, abundances=problem.abundances, **(extra or {}))
                rec = self._record_from(res)
                rec["chi2_reduced"] = reduced_chi2(stokes, rec["fits"], snr_last, w_last, free_parameters(res))
            except PixelTimeout:
                rec = self.blank(STATUS_TIMEOUT)
            except Exception:
                rec = self.blank(STATUS_FAILED)
            rec["start"] = k
            calls += max(int(rec.get("backend_calls", 0)), 0)
            if best is None or (np.isfinite(rec["chi2"]) and not (rec["chi2"] >= best["chi2"])):
                best = rec
        assert best is not None
        best["seconds"] = time.perf_counter() - t0
        if "backend_calls" in best and (calls or best["backend_calls"] >= 0):
            best["backend_calls"] = calls          # the pixel's cost: every start's calls
        return best

    def _record_from(self, res: Any) -> dict[str, Any]:
        """The record of a solver's result."""
        ndep, nwav, ncyc = self.dims.ndep, self.dims.nwav, self.dims.ncyc
        rec = self.blank(int(getattr(res, "status", 0)))
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
        ms = getattr(res, "magnetic_start", None)
        if ms is not None:
            rec["magnetic_start"] = np.asarray(ms, dtype=np.float64)[:3]
        if "backend_calls" in rec:                  # an NLTE map (NLTE_FIELDS)
            rec.update(nlte_fields(res))
        _errors_into(getattr(res, "errors", None), ndep, rec, "errors", "errors_header")
        rec["filling2"] = _optional_float(getattr(res, "filling2", None))
        atm2 = getattr(res, "atmosphere2", None)
        if int(self.problem.ncomp) == 2:
            if atm2 is None:
                raise ValueError("the solver returned no component-2 atmosphere (atmosphere2) for a pixel with guess2")
            arr2 = np.asarray(atm2.to_array(), dtype=np.float64)
            if arr2.shape != (ndep, 11):
                raise ValueError(f"solver returned a component-2 atmosphere of shape {arr2.shape}, expected "
                                 f"({ndep}, 11)")
            rec["atmos2"] = arr2
            rec["header2"] = _header_of(atm2)
            _errors_into(getattr(res, "errors2", None), ndep, rec, "errors2", "errors_header2")
        return rec


def nlte_fields(res: Any) -> dict[str, Any]:
    """The :data:`NLTE_FIELDS` of an NLTE solver's result (``backend_calls`` and ``nlte_provenance`` of
    :class:`pyinv.nlte.desire.NlteSolver`'s results; the fill values where it has none)."""
    prov = getattr(res, "nlte_provenance", None) or {}
    emulated = prov.get("departures") == "emulated"
    chk = (prov.get("check") or {}).get("profile_rms", np.nan) if emulated else np.nan
    return {"backend_calls": int(getattr(res, "backend_calls", -1)),
            "nlte_check": float(np.nan if chk is None else chk),
            "nlte_fallback": int(bool(prov.get("fallback"))) if emulated else -1}


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


# ------------------------------------------------------------------------------------------- starts
def _starts(ids: np.ndarray, k: int, gindex: np.ndarray, table: np.ndarray, header: np.ndarray):
    p = ids[k]
    return [(table[r], header[r]) for r in gindex[p] if r >= 0]


def chunk_starts(problem: PixelProblem, stokes: Callable[[], Any], ids: np.ndarray, gindex: np.ndarray,
                 table: np.ndarray, header: np.ndarray, pixels: np.ndarray | None = None
                 ) -> tuple[list, np.ndarray | None]:
    """The starts of a chunk's pixels.

    ``ids`` index ``gindex``; ``stokes`` is a callable giving their profiles (n, 4, nλ) and ``pixels``
    their raster indices (default ``ids``), both needed only for streamed starts (``problem.stream``).
    Returns per pixel a list of (model, header), or None for a pixel whose streamed start could not be
    made (it fails alone, ``STATUS_FAILED``), and the streamed starts' auxiliary values (n, naux) float32
    (None without them)."""
    stream = problem.stream
    n = len(ids)
    if stream is None:
        return [_starts(ids, k, gindex, table, header) for k in range(n)], None
    naux = problem.naux
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
