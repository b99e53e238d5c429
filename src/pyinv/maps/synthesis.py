"""Synthesis over a cube of model atmospheres with any backend: :func:`synthesize_map`.

The cube ``(ny, nx, ndep, 11)`` holds one pyinv model per pixel (SIR columns, each column with its own
log τ₅₀₀ grid in column 0, deepest first). Pixels run on the executors of :func:`pyinv.invert`
(:func:`pyinv.maps.pool.run_pixels`: local process pool, ``"serial"``, dask or MPI executors, checkpoint
store, per-pixel statuses, worker-death recovery, progress bar) as a :class:`SynthesisPixels` problem,
whose record (:data:`SYNTHESIS_RECORD`) keeps the input model (``atmos``), the profiles (``fits``), the
status, iterations and seconds of each pixel. The extras (LTE profiles of an NLTE backend, departure
coefficients, LTE response functions) go to memory-mapped arrays in the store's ``extra/`` folder,
written by the workers (local pool and serial executors; with remote executors these extras stay NaN).

Statuses: 0 converged; :data:`pyinv.nlte.NLTE_NOT_CONVERGED` (201, profiles kept);
:data:`pyinv.nlte.NLTE_CRASHED` (202); 104 time limit; 103 the pixel raised (e.g. invalid model);
105 its worker died repeatedly; 101 masked.
"""
from __future__ import annotations

import datetime as _dt
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..atmosphere import DEPTH_COLUMNS, Atmosphere, QuantityDict, canonical_name
from ..errors import input_errors
from ..lines import LineList, WavelengthGrid
from ..status import STATUS_CONVERGED, STATUS_FAILED, STATUS_MASKED, STATUS_PENDING, STATUS_TIMEOUT
from .pixel import PixelProblem, PixelSolver, PixelTimeout, pixel_time_limit
from .pool import run_pixels
from .store import Dims, Field, Record, ResultStore, fingerprint

__all__ = ["synthesize_map", "SynthesisMap", "SynthesisPixels", "SYNTHESIS_RECORD", "RF_KEYS"]

#: Response functions kept by ``synthesize_map(..., rf=True)``: the keys of :func:`pyinv.response_functions`
#: (the Atmosphere's names), the depth-dependent ones and ``macro``.
RF_KEYS: tuple[str, ...] = DEPTH_COLUMNS + ("macro",)
#: File names of response functions in the store (``extra/rf_<name>.npy``) and in its fingerprint where
#: they differ from the keys: the names of pyinv before issue 18, so that its checkpoints still resume.
_STORE_RF_NAMES = {"gamma": "inclination", "phi": "azimuth", "macro": "vmac"}


def _store_rf(key: str) -> str:
    return _STORE_RF_NAMES.get(key, key)

#: The record of a synthesised pixel (the store's files, the per-pixel attributes of :class:`SynthesisMap`).
SYNTHESIS_RECORD = Record(
    Field("atmos", "f8", ("ndep", 11)),                    # the pixel's model (kept in the store only)
    Field("fits", "f8", (4, "nwav"), result="stokes"),
    Field("status", "i4", fill=STATUS_PENDING, result="status"),
    Field("iterations", "i4", fill=0, result="iterations"),
    Field("seconds", "f4", result="seconds"),             # wall time of the pixel in its worker
)


@dataclass
@SYNTHESIS_RECORD.result_fields
class SynthesisMap:
    """Result of :func:`synthesize_map`.

    Attributes
    ----------
    stokes : ndarray (ny, nx, 4, nλ)
        ``backend="lte"``: normalised to the HSRA disk-centre continuum (as :func:`pyinv.synthesize`);
        NLTE backends: absolute intensities [W m⁻² Hz⁻¹ sr⁻¹] at the grid's vacuum wavelengths.
    status, iterations, seconds : ndarray (ny, nx)
    stokes_lte : ndarray (ny, nx, 4, nλ) or None
        The NLTE backend's own LTE profiles (same units).
    b_lower, b_upper : ndarray (ny, nx, nlines, ndep) or None
        Departure coefficients of ``nlte_lines`` on each pixel's model grid.
    nlte_lines : tuple of int
        SIR indices of the lines with departure coefficients.
    wavelength_vac_nm : ndarray (nλ,)
    provenance : dict
    rf : dict of str → ndarray (a :class:`pyinv.atmosphere.QuantityDict`)
        With ``rf``: response functions per key, ``(ny, nx, ndep, 4, nλ)`` (macro ``(ny, nx, 4, nλ)``), units
        as :func:`pyinv.response_functions`.
    """

    # stokes, status, iterations, seconds: the result attributes of SYNTHESIS_RECORD (Record.result_fields)
    stokes_lte: np.ndarray | None
    b_lower: np.ndarray | None
    b_upper: np.ndarray | None
    nlte_lines: tuple[int, ...]
    wavelength_vac_nm: np.ndarray
    provenance: dict = field(default_factory=dict)
    rf: dict = field(default_factory=QuantityDict)


@dataclass
class SynthesisPixels(PixelProblem):
    """The pixels of :func:`synthesize_map` (travels to the workers): each pixel's one start is its model."""

    lines: Any
    grid: Any
    backend: Any                 # "lte" or an NlteBackend
    extra_dir: str | None        # folder of the side arrays (NLTE extras, response functions)
    wavelength_vac_nm: np.ndarray
    nlte_lines: tuple[int, ...]
    backend_time_limit: float | None = None
    rf: tuple[str, ...] = ()     # response functions to keep (LTE engine)
    mu: float | None = 1.0
    psf: Any = None
    abundances: Any = None
    time_limit: float | None = None  # the backstop of the executors

    def record(self) -> Record:
        return SYNTHESIS_RECORD

    def pixel_solver(self, dims: Dims) -> "SynthesisSolver":
        return SynthesisSolver(self, dims)


_SIDE: dict[str, dict[str, np.ndarray]] = {}


def _side(extra_dir: str) -> dict[str, np.ndarray]:
    if extra_dir not in _SIDE:
        d = Path(extra_dir)
        _SIDE[extra_dir] = {f.stem: np.load(f, mmap_mode="r+") for f in d.glob("*.npy")}
    return _SIDE[extra_dir]


class SynthesisSolver(PixelSolver):
    """Synthesises a pixel's model (its one start) with the problem's backend; the side arrays of the
    pixel go to the store's ``extra/`` folder."""

    problem: SynthesisPixels

    def solve(self, p: int, stokes: np.ndarray, starts: list[tuple[np.ndarray, np.ndarray]], snr: float,
              extra: dict[str, Any] | None = None) -> dict[str, Any]:
        t0 = time.perf_counter()
        ((row, hdr),) = starts
        try:
            model = Atmosphere.from_array(row, macro=hdr[0], filling=hdr[1], stray=hdr[2])
            with pixel_time_limit(self.problem.time_limit):
                fit, status, iterations = self._synthesize(int(p), model)
            rec = self.blank(int(status))
            arr = np.asarray(model.to_array(), dtype=np.float64)
            if arr.shape != (self.dims.ndep, 11):
                raise ValueError(f"a model of shape {arr.shape}, expected ({self.dims.ndep}, 11)")
            rec["atmos"] = arr
            rec["fits"] = np.asarray(fit, dtype=np.float64).reshape(4, self.dims.nwav)
            rec["iterations"] = int(iterations)
        except PixelTimeout:
            rec = self.blank(STATUS_TIMEOUT)
        except Exception:
            rec = self.blank(STATUS_FAILED)
        rec["seconds"] = time.perf_counter() - t0
        return rec

    def _synthesize(self, p: int, model: Atmosphere) -> tuple[np.ndarray, int, int]:
        """(profiles (4, nλ), status, iterations) of pixel ``p``'s model."""
        pr = self.problem
        if isinstance(pr.backend, str):
            mu_ = 1.0 if pr.mu is None else pr.mu
            if pr.rf:
                from ..physics.response import response_functions
                rf = response_functions(model, pr.lines, pr.grid, mu=mu_, psf=pr.psf, abundances=pr.abundances,
                                        hydrostatic="T_he" in pr.rf)
                side = _side(pr.extra_dir)
                for k in pr.rf:
                    side[f"rf_{_store_rf(k)}"][p] = rf[k]
                return rf["stokes"], STATUS_CONVERGED, 0
            from ..physics.synthesis import synthesize
            return synthesize(model, pr.lines, pr.grid, mu=mu_, psf=pr.psf, abundances=pr.abundances), \
                STATUS_CONVERGED, 0
        res = pr.backend.synthesize(model, pr.wavelength_vac_nm, abundances=pr.abundances, pixel_id=str(p),
                                    time_limit=pr.backend_time_limit)
        if pr.extra_dir is not None:
            side = _side(pr.extra_dir)
            if res.stokes_lte is not None:
                side["stokes_lte"][p] = res.stokes_lte
            if res.departures is not None:
                for k, idx in enumerate(pr.nlte_lines):
                    bl, bu = res.departures.line(idx)
                    side["b_lower"][p, k] = bl
                    side["b_upper"][p, k] = bu
        return res.stokes, int(res.status), int(res.iterations)


@input_errors
def synthesize_map(atmospheres: Any, lines: LineList, grid: WavelengthGrid, *, backend: Any = "lte",
                   rf: bool | tuple[str, ...] = False, backend_options: dict | None = None, mask: np.ndarray | None = None, mu: float = 1.0,
                   psf: Any = None, abundances: Any = None, executor: Any = None, workers: int | None = None,
                   chunk: int | None = None, checkpoint: str | None = None, progress: Any = False,
                   time_limit: float | None = None, retries: int = 2) -> SynthesisMap:
    """Synthesise every pixel of a cube of model atmospheres.

    Parameters
    ----------
    atmospheres : ndarray (ny, nx, ndep, 11)
        pyinv models in SIR's column order (log τ₅₀₀ deepest first, T [K], P_e [dyn cm⁻²], v_mic [cm/s],
        B [G], v_LOS [cm/s] (> 0 redshift), γ, φ [deg], z, P_g, ρ); each pixel may have its own log τ grid.
    lines, grid : LineList, WavelengthGrid
    backend : ``"lte"``, ``"rh"``, ``"lightweaver"`` or an :class:`pyinv.nlte.NlteBackend`
        ``"lte"``: :func:`pyinv.synthesize` per column. A name builds the backend with
        ``backend_options`` and the level map of ``lines`` (:func:`pyinv.nlte.level_map`).
    rf : bool or tuple of str
        LTE engine only: also the response functions of :func:`pyinv.response_functions` (``True``: T, Pe,
        vmic, B, vlos, gamma, phi, macro; or a tuple of those keys and/or ``"T_he"``), returned in
        ``SynthesisMap.rf`` as ``(ny, nx, ndep, 4, nλ)`` arrays (macro ``(ny, nx, 4, nλ)``). Memory: 8·ndep·4·nλ
        bytes per pixel and quantity.
    mask : bool array (ny, nx), optional
        True = synthesise the pixel.
    mu : float
        μ of the emergent ray (NLTE backends); accepted for the LTE engine (no effect, as in synthesize).
    psf, abundances : see :func:`pyinv.synthesize` (psf only for ``"lte"``)
    executor, workers, chunk, checkpoint, progress, retries : see :func:`pyinv.invert`
    time_limit : float, optional
        Seconds per pixel. NLTE backends receive it (RH kills its subprocesses and reports status 104);
        the executors enforce a backstop of 1.5× + 5 s.

    Returns
    -------
    SynthesisMap
    """
    t0 = time.perf_counter()
    arr = np.asarray(atmospheres, dtype=np.float64)
    if arr.ndim != 4 or arr.shape[-1] != 11:
        raise ValueError(f"atmospheres must have shape (ny, nx, ndep, 11), got {arr.shape}")
    ny, nx, ndep, _ = arr.shape
    npix, nwav = ny * nx, grid.nwav
    from ..nlte.backend import NlteBackend, grid_vacuum_nm, level_map
    wl = grid_vacuum_nm(lines, grid)
    opts = dict(backend_options or {})
    if isinstance(backend, str) and backend.lower() != "lte":
        from ..nlte import make_backend
        opts.setdefault("mu", mu)
        backend = make_backend(backend, level_map(lines, sorted({i for r in grid.blends for i in r})), **opts)
    elif isinstance(backend, str):
        backend = "lte"
    elif not isinstance(backend, NlteBackend):
        raise ValueError(f"backend must be 'lte', 'rh', 'lightweaver' or an NlteBackend, got {backend!r}")
    nlte = not isinstance(backend, str)
    rf_keys: tuple[str, ...] = ()
    if rf:
        if nlte:
            raise ValueError("rf=True needs backend='lte' (response functions of the NLTE backends are not available)")
        rf_keys = RF_KEYS if rf is True else tuple(canonical_name(k, "rf", known=RF_KEYS, stacklevel=4)
                                                   for k in rf)
        bad = [k for k in rf_keys if k not in RF_KEYS + ("T_he",)]
        if bad:
            raise ValueError(f"unknown response-function keys {bad}; choose from {RF_KEYS + ('T_he',)}")
    nlte_lines = tuple(ln.index for ln in backend.lines) if nlte else ()
    sel = np.ones((ny, nx), bool) if mask is None else np.asarray(mask, dtype=bool)
    if sel.shape != (ny, nx):
        raise ValueError(f"mask must have shape {(ny, nx)}, got {sel.shape}")

    table = np.ascontiguousarray(arr.reshape(npix, ndep, 11))
    header = np.tile(np.array([0.0, 1.0, 0.0]), (npix, 1))
    gindex = np.arange(npix, dtype=np.int32)[:, None]
    cube = np.zeros((npix, 4, nwav))  # no observed profiles: each pixel's solver gets zeros
    snr = np.full(npix, np.nan)
    status0 = np.where(sel.reshape(-1), STATUS_PENDING, STATUS_MASKED)
    bname = backend if isinstance(backend, str) else f"{backend.name}:" + repr(sorted(
        ((k, v) for k, v in vars(backend).items() if not k.startswith("_") and k not in ("workdir", "keep")), key=str))
    fp = fingerprint(table, status0.astype(np.int32), lines, grid, float(mu), abundances, bname,
                     psf if not isinstance(psf, np.ndarray) else psf, "synthesize_map",
                     tuple(_store_rf(k) for k in rf_keys))

    tmp = tempfile.mkdtemp(prefix="pyinv-smap-")
    store_path = Path(tmp) / "store" if checkpoint is None else Path(checkpoint)
    owned_workdir = False
    try:
        # ncyc = 1: the stores' shapes have always carried it
        store, resumed = ResultStore.open_or_create(
            store_path, SYNTHESIS_RECORD, npix=npix, dims=Dims(ndep, nwav, 1), fingerprint=fp,
            extra_meta={"created": _dt.datetime.now(_dt.timezone.utc).isoformat(), "shape": [ny, nx],
                        "kind": "synthesize_map"})
        extra_dir = None
        extras: dict[str, tuple[int, ...]] = {}
        if nlte:
            extras = {"stokes_lte": (npix, 4, nwav), "b_lower": (npix, len(nlte_lines), ndep),
                      "b_upper": (npix, len(nlte_lines), ndep)}
        for k in rf_keys:
            extras[f"rf_{_store_rf(k)}"] = (npix, 4, nwav) if k == "macro" else (npix, ndep, 4, nwav)
        if extras:
            extra_dir = str(store_path / "extra")
            d = Path(extra_dir)
            if not d.exists():
                d.mkdir()
                for k, shape in extras.items():
                    m = np.lib.format.open_memmap(d / f"{k}.npy", mode="w+", dtype="f8", shape=shape)
                    m[...] = np.nan
                    m.flush()
                    del m
        if nlte:
            if getattr(backend, "workdir", "absent") is None:  # RH: one work folder for this map
                backend.workdir = Path(tmp) / "rh"
                owned_workdir = True
        st = store.status
        for p in np.nonzero((status0 == STATUS_MASKED) & (st == STATUS_PENDING))[0]:
            store.put(int(p), store.blank(STATUS_MASKED))
        todo = np.nonzero(st == STATUS_PENDING)[0]
        backstop = None if time_limit is None else (1.5 * float(time_limit) + 5.0 if nlte else float(time_limit))
        problem = SynthesisPixels(lines=lines, grid=grid, backend=backend, extra_dir=extra_dir, wavelength_vac_nm=wl,
                                  nlte_lines=nlte_lines, backend_time_limit=time_limit if nlte else None, rf=rf_keys,
                                  mu=mu, psf=psf, abundances=abundances, time_limit=backstop)
        stats = run_pixels(problem, cube, table, header, gindex, snr, todo, store, executor=executor,
                           workers=workers, chunk=chunk or (1 if nlte else None), progress=progress,
                           retries=retries)
        store.set_meta(complete=True)
        a = store.arrays
        out = SynthesisMap(
            **SYNTHESIS_RECORD.result_arrays(lambda k: np.array(a[k]), (ny, nx)), stokes_lte=None, b_lower=None,
            b_upper=None, nlte_lines=nlte_lines, wavelength_vac_nm=wl,
            provenance={"backend": bname if isinstance(backend, str) else backend.name, "resumed": bool(resumed),
                        "checkpoint": None if checkpoint is None else str(checkpoint),
                        "seconds": time.perf_counter() - t0, **stats})
        if nlte:
            d = Path(extra_dir)
            out.stokes_lte = np.load(d / "stokes_lte.npy").reshape(ny, nx, 4, nwav)
            out.b_lower = np.load(d / "b_lower.npy").reshape(ny, nx, len(nlte_lines), ndep)
            out.b_upper = np.load(d / "b_upper.npy").reshape(ny, nx, len(nlte_lines), ndep)
        for k in rf_keys:
            a_k = np.load(Path(extra_dir) / f"rf_{_store_rf(k)}.npy")
            out.rf[k] = a_k.reshape((ny, nx) + a_k.shape[1:])
        if extra_dir is not None:
            _SIDE.pop(extra_dir, None)
        del store, a
        return out
    finally:
        if owned_workdir:
            backend.workdir = None
        shutil.rmtree(tmp, ignore_errors=True)
