"""Synthesis over a cube of model atmospheres with any backend: :func:`synthesize_map`.

The cube ``(ny, nx, ndep, 11)`` holds one pyinv model per pixel (SIR columns, each column with its own
log τ₅₀₀ grid in column 0, deepest first). Pixels run on the executors of :func:`pyinv.invert`
(:func:`pyinv.maps.pool.run_pixels`: local process pool, ``"serial"``, dask or MPI executors, checkpoint
store, per-pixel statuses, worker-death recovery, progress bar) as a :class:`SynthesisPixels` problem,
whose record (:data:`SYNTHESIS_RECORD`) keeps the input model (``atmos``), the profiles (``fits``), the
status, iterations and seconds of each pixel. The extras (LTE profiles of an NLTE backend, departure
coefficients, LTE response functions) go to memory-mapped arrays in the store's ``extra/`` folder,
written by the workers (local pool and serial executors; with remote executors these extras stay NaN).

A map of inversion results goes back to profiles the same way: ``synthesize_map(result, lines, grid)``
takes an :class:`pyinv.InversionResult` (or its FITS file) with its per-pixel macroturbulence, second
component, filling factor and stray light (:func:`map_inputs`; the mixing of :mod:`pyinv.physics.mixing`,
the per-pixel inputs of :class:`pyinv.maps.extras.PixelExtras`, which travel to the workers as those of
:func:`pyinv.invert`), and reproduces ``result.fits``.

Statuses: 0 converged; :data:`pyinv.nlte.NLTE_NOT_CONVERGED` (201, profiles kept);
:data:`pyinv.nlte.NLTE_CRASHED` (202); 104 time limit; 103 the pixel raised (e.g. invalid model);
105 its worker died repeatedly; 101 masked.
"""
from __future__ import annotations

import datetime as _dt
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..atmosphere import DEPTH_COLUMNS, Atmosphere, QuantityDict, canonical_name, renamed_keywords
from ..errors import input_errors
from ..lines import LineList, WavelengthGrid
from ..status import STATUS_CONVERGED, STATUS_FAILED, STATUS_MASKED, STATUS_PENDING, STATUS_TIMEOUT
from .cube import per_pixel_map, pixel_summary
from .extras import DEFAULT_STRAY_WINDOW, PixelExtras, check_stray_window, stray_table
from .pixel import PixelProblem, PixelSolver, PixelTimeout, pixel_time_limit
from .pool import run_pixels
from .result import InversionResult
from .store import Dims, Field, Record, ResultStore, fingerprint

__all__ = ["synthesize_map", "SynthesisMap", "SynthesisPixels", "SYNTHESIS_RECORD", "RF_KEYS", "MapInputs",
           "map_inputs", "rf_keys_for"]

#: Response functions kept by ``synthesize_map(..., rf=True)``: the keys of :func:`pyinv.response_functions`
#: (the Atmosphere's names), the depth-dependent ones and ``macro``.
RF_KEYS: tuple[str, ...] = DEPTH_COLUMNS + ("macro",)
#: File names of response functions in the store (``extra/rf_<name>.npy``) and in its fingerprint where
#: they differ from the keys: the names of pyinv before issue 18, so that its checkpoints still resume.
_STORE_RF_NAMES = {"gamma": "inclination", "phi": "azimuth", "macro": "vmac"}


def _store_rf(key: str) -> str:
    return _STORE_RF_NAMES.get(key, key)


def _canonical_rf(key: str, known: tuple[str, ...]) -> str:
    """``key``'s canonical response-function name (an old spelling with a DeprecationWarning; ``_2`` kept)."""
    base, two = (key[:-2], "_2") if isinstance(key, str) and key.endswith("_2") else (key, "")
    return canonical_name(base, "rf", known=known, stacklevel=5) + two


#: Response functions of one profile (4, nλ) per pixel rather than one per depth point.
_RF_SCALARS = ("macro", "macro_2", "filling", "stray")


def rf_keys_for(ncomp: int, stray: bool) -> tuple[str, ...]:
    """The response-function keys of a map of ``ncomp`` components with or without stray light: those of
    :func:`pyinv.response_functions` for the same mixing (component 2's with the suffix ``_2``, ``filling``
    = ∂I/∂f₂, ``stray`` = ∂I/∂α per percent)."""
    keys = RF_KEYS
    if int(ncomp) == 2:
        keys = keys + tuple(f"{k}_2" for k in RF_KEYS) + ("filling",)
    return keys + (("stray",) if stray else ())


def _rf_shape(key: str, npix: int, ndep: int, nwav: int) -> tuple[int, ...]:
    return (npix, 4, nwav) if key in _RF_SCALARS else (npix, ndep, 4, nwav)

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
    ncomp: int = 1               # 2: each pixel has a second component (PixelExtras of the run)

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
                fit, status, iterations = self._synthesize(int(p), model, extra or {})
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

    def _synthesize(self, p: int, model: Atmosphere, extra: dict[str, Any]) -> tuple[np.ndarray, int, int]:
        """(profiles (4, nλ), status, iterations) of pixel ``p``'s model; ``extra``: the pixel's
        :meth:`PixelExtras.kwargs` (its second component, f₂, stray-light profile and α), mixed as
        :func:`pyinv.synthesize` mixes them."""
        pr = self.problem
        if isinstance(pr.backend, str):
            mu_ = 1.0 if pr.mu is None else pr.mu
            mixing = {"atmos2": extra.get("guess2"), "filling": extra.get("filling"),
                      "stray_profile": extra.get("stray_profile"), "stray": extra.get("stray")}
            mixing = {k: v for k, v in mixing.items() if v is not None}
            if pr.rf:
                from ..physics.response import response_functions
                rf = response_functions(model, pr.lines, pr.grid, mu=mu_, psf=pr.psf, abundances=pr.abundances,
                                        hydrostatic="T_he" in pr.rf or "T_he_2" in pr.rf, **mixing)
                side = _side(pr.extra_dir)
                for k in pr.rf:
                    side[f"rf_{_store_rf(k)}"][p] = rf[k]
                return rf["stokes"], STATUS_CONVERGED, 0
            from ..physics.synthesis import synthesize
            return synthesize(model, pr.lines, pr.grid, mu=mu_, psf=pr.psf, abundances=pr.abundances, **mixing), \
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


@dataclass
class MapInputs:
    """What :func:`synthesize_map` synthesises: the models of a map and what mixes them (:func:`map_inputs`).

    Attributes
    ----------
    atmospheres : ndarray (ny, nx, ndep, 11)
        Component 1's models (SIR column order).
    header : ndarray (ny·nx, 3)
        Component 1's header per pixel: macro [km/s], filling, stray α [%].
    extras : PixelExtras or None
        Component 2 (its models, macro₂, f₂) and the stray light (profiles and α) per pixel, as
        :func:`pyinv.invert` hands them to its workers; None when neither is mixed.
    valid : bool ndarray (ny, nx)
        The pixels to synthesise: those of the mask with a model (an InversionResult's pixels without a
        result have none).
    mu : float
    psf : the spectral PSF (or None)
    info : dict
        Descriptions for the provenance.
    """

    atmospheres: np.ndarray
    header: np.ndarray
    extras: PixelExtras | None
    valid: np.ndarray
    mu: float
    psf: Any
    info: dict


def _is_result(a: Any) -> bool:
    return isinstance(a, InversionResult) or (isinstance(a, (str, os.PathLike)) and os.fspath(a).lower().endswith(
        (".fits", ".fit", ".fits.gz", ".fts")))


def _result_settings(res: InversionResult, mu: float | None, psf: Any, stray_profile: Any, stray_window: Any,
                     observed: Any) -> tuple[float, Any, Any, Any]:
    """μ, the spectral PSF, the stray-light profile and window of a result: those given, else the ones its
    provenance names (a PSF or stray-light file; the window of ``"local"``). A result fitted with inputs
    its file does not hold (a PSF or stray-light profile given as an array, ``"local"`` without the
    observed cube) needs them again: a ValueError says which."""
    prov = res.provenance or {}
    if mu is None:
        mu = float(prov.get("mu", 1.0) or 1.0)
    if psf is None and prov.get("psf") is not None:
        was = str(prov["psf"])
        if was == "array" or not os.path.isfile(was):
            raise ValueError(f"this result was fitted with a spectral PSF ({was!r}) that is not at hand: pass "
                             "psf= (the one given to pyinv.invert)")
        psf = was
    was = prov.get("stray_profile")
    if stray_profile is None and was is not None:
        was = str(was)
        if was.startswith("local("):
            if observed is None:
                raise ValueError(f"this result was fitted with stray_profile={was!r} (the mean Stokes I around each "
                                 "pixel): pass observed= (the inverted cube, (ny, nx, 4, nλ)) to rebuild it")
            stray_profile = "local"
            if stray_window is None:
                stray_window = int(was[len("local(window="):-1])
        elif os.path.isfile(was):
            stray_profile = was
        else:
            raise ValueError(f"this result was fitted with a stray-light profile ({was!r}) that is not at hand: "
                             "pass stray_profile= (the one given to pyinv.invert)")
    return mu, psf, stray_profile, stray_window


def map_inputs(atmospheres: Any, grid: WavelengthGrid, *, macro: Any = None, atmospheres2: Any = None,
               macro2: Any = None, filling: Any = None, stray_profile: Any = None, stray: Any = None,
               stray_window: int | None = None, observed: Any = None, mu: float | None = None,
               psf: Any = None, mask: Any = None) -> MapInputs:
    """Check the inputs of :func:`synthesize_map` and gather the models and their mixing per pixel.

    ``atmospheres`` is a model cube (ny, nx, ndep, 11) with the per-pixel arrays beside it, or an
    :class:`pyinv.InversionResult` (or the path of its FITS file) whose arrays (``atmospheres``, ``macro``,
    ``atmospheres2``, ``macro2``, ``filling2``, ``stray``) and provenance (μ, PSF and stray-light
    files) give them; see :func:`synthesize_map` for the keywords. Only the pixels of ``mask`` (True:
    synthesise) that have a model are checked, and they make ``valid``. Raises ValueError naming the
    argument.
    """
    info: dict[str, Any] = {}
    if _is_result(atmospheres):
        res = atmospheres
        if not isinstance(res, InversionResult):
            info["source"] = os.fspath(res)
            res = InversionResult.from_fits(res)
        else:
            info["source"] = "InversionResult"
        given = [k for k, v in (("macro", macro), ("atmospheres2", atmospheres2), ("macro2", macro2),
                                ("filling", filling), ("stray", stray)) if v is not None]
        if given:
            raise ValueError(f"{', '.join(given)}: taken from the InversionResult (its macro, atmospheres2, macro2, "
                             "filling2 and stray); pass the model cube instead to set them")
        mu, psf, stray_profile, stray_window = _result_settings(res, mu, psf, stray_profile, stray_window, observed)
        arr = np.asarray(res.atmospheres, dtype=np.float64)
        macro, atmospheres2 = res.macro, res.atmospheres2
        if atmospheres2 is not None:
            macro2, filling = res.macro2, res.filling2
        if stray_profile is not None:
            stray = res.stray
        ny, nx = arr.shape[:2]
        valid = np.isfinite(arr).all(axis=(2, 3)) & np.isfinite(res.macro)
        if atmospheres2 is not None:
            valid &= np.isfinite(atmospheres2).all(axis=(2, 3)) & np.isfinite(res.macro2) & np.isfinite(res.filling2)
        if stray_profile is not None:
            valid &= np.isfinite(res.stray)
    else:
        arr = np.asarray(atmospheres, dtype=np.float64)
        if arr.ndim != 4 or arr.shape[-1] != 11:
            raise ValueError(f"atmospheres must have shape (ny, nx, ndep, 11) or be an InversionResult (or its FITS "
                             f"file), got {arr.shape if arr.ndim else type(atmospheres).__name__}")
        info["source"] = "array"
        ny, nx = arr.shape[:2]
        valid = np.ones((ny, nx), bool)
    ny, nx, ndep, _ = arr.shape
    npix, nwav = ny * nx, grid.nwav
    if mask is not None:  # only the pixels to synthesise are checked
        sel = np.asarray(mask, dtype=bool)
        if sel.shape != (ny, nx):
            raise ValueError(f"mask must have shape {(ny, nx)}, got {sel.shape}")
        valid = valid & sel
    mu = 1.0 if mu is None else float(mu)
    if not 0.0 < mu <= 1.0:
        raise ValueError(f"mu must be in (0, 1], got {mu}")

    def scalars(name: str, v: Any, lo: float, hi: float, default: float | None = None) -> np.ndarray:
        a = per_pixel_map(name, default if v is None else v, ny, nx)
        bad = valid & ~(np.isfinite(a) & (a >= lo) & (a <= hi))
        if bad.any():
            y, x = (int(i) for i in np.argwhere(bad)[0])
            raise ValueError(f"{name}={float(a[y, x])!r} at pixel ({y}, {x}): must lie in [{lo:g}, {hi:g}]")
        return a

    m1 = scalars("macro", macro, 0.0, np.inf, 0.0)
    ex = PixelExtras()
    f1 = np.ones((ny, nx))
    if atmospheres2 is None:
        for name, v in (("macro2", macro2), ("filling", filling)):
            if v is not None:
                raise ValueError(f"{name} (of component 2) is given but there is no second component (atmospheres2)")
    else:
        a2 = np.asarray(atmospheres2, dtype=np.float64)
        if a2.shape != arr.shape:
            raise ValueError(f"atmospheres2 must have the shape of atmospheres {arr.shape}, got {a2.shape}")
        if filling is None:
            raise ValueError("atmospheres2 needs filling (f2, the filling factor of component 2 in [0, 1])")
        f2 = scalars("filling", filling, 0.0, 1.0)
        m2 = scalars("macro2", macro2, 0.0, np.inf, 0.0)
        off = np.where(valid, np.abs(a2[..., 0] - arr[..., 0]).max(axis=-1), 0.0)
        if not (off <= 1e-6).all():
            y, x = (int(i) for i in np.argwhere(~(off <= 1e-6))[0])
            raise ValueError(f"atmospheres2: component 2 must be on component 1's log tau grid; pixel ({y}, {x}) "
                             f"differs by {float(off[y, x]):g}")
        ex.table2 = np.ascontiguousarray(a2.reshape(npix, ndep, 11))
        ex.header2 = np.ascontiguousarray(np.stack([m2, f2, np.zeros((ny, nx))], axis=-1).reshape(npix, 3))
        ex.index2 = np.arange(npix, dtype=np.int32)
        ex.filling2 = np.ascontiguousarray(f2.reshape(-1))
        f1 = 1.0 - f2
    alpha = np.zeros((ny, nx))
    if observed is not None and not (isinstance(stray_profile, str) and stray_profile.lower() == "local"):
        raise ValueError("observed (the cube of a stray_profile='local' map) is given but stray_profile is not 'local'")
    if stray_window is not None:
        check_stray_window(stray_window)
        if not (isinstance(stray_profile, str) and stray_profile.lower() == "local"):
            raise ValueError(f"stray_window={stray_window!r} is only used with stray_profile='local'")
    if stray_profile is None:
        if stray is not None:
            raise ValueError("stray (the stray-light fraction alpha [%]) is given but there is no stray_profile")
    else:
        if stray is None:
            raise ValueError("stray_profile needs stray (alpha [%] per pixel, or one value)")
        alpha = scalars("stray", stray, 0.0, 100.0)
        local = isinstance(stray_profile, str) and stray_profile.lower() == "local"
        usable = None
        if local:
            if observed is None:
                raise ValueError("stray_profile='local' needs observed= (the cube (ny, nx, 4, nλ) whose Stokes I "
                                 "around each pixel is its stray light)")
            cube = np.asarray(observed)
            if cube.shape != (ny, nx, 4, nwav):
                raise ValueError(f"observed must have shape (ny, nx, 4, nλ) = {(ny, nx, 4, nwav)}, got {cube.shape}")
            summary = pixel_summary(cube)  # the pixels pyinv.invert lets into the means
            usable = summary["finite"] & ~summary["nonpositive"] & ~summary["huge"]
        else:
            cube = np.broadcast_to(np.zeros(()), (ny, nx, 4, nwav))  # shapes only
        st, si, what = stray_table(stray_profile, cube, grid,
                                   window=DEFAULT_STRAY_WINDOW if stray_window is None else stray_window,
                                   usable=usable, needed=valid)
        ex.stray, ex.stray_index, ex.stray_percent = st, si, np.ascontiguousarray(alpha.reshape(-1))
        info["stray_profile"] = what
    if ex.table2 is not None:
        ex.header2[:, 2] = alpha.reshape(-1)
    header = np.ascontiguousarray(np.stack([m1, f1, alpha], axis=-1).reshape(npix, 3))
    info["ncomp"] = ex.ncomp
    return MapInputs(atmospheres=arr, header=header, extras=None if ex.empty else ex, valid=valid, mu=mu, psf=psf,
                     info=info)


@renamed_keywords
@input_errors
def synthesize_map(atmospheres: Any, lines: LineList, grid: WavelengthGrid, *, backend: Any = "lte",
                   rf: bool | tuple[str, ...] = False, backend_options: dict | None = None, mask: np.ndarray | None = None,
                   mu: float | None = None, psf: Any = None, abundances: Any = None, macro: Any = None,
                   atmospheres2: Any = None, macro2: Any = None, filling: Any = None, stray_profile: Any = None,
                   stray: Any = None, stray_window: int | None = None, observed: Any = None, executor: Any = None,
                   workers: int | None = None, chunk: int | None = None, checkpoint: str | None = None,
                   progress: Any = False, time_limit: float | None = None, retries: int = 2) -> SynthesisMap:
    """Synthesise every pixel of a cube of model atmospheres, or the fits of a map inversion.

    Parameters
    ----------
    atmospheres : ndarray (ny, nx, ndep, 11), InversionResult or the path of its FITS file
        pyinv models in SIR's column order (log τ₅₀₀ deepest first, T [K], P_e [dyn cm⁻²], v_mic [cm/s],
        B [G], v_LOS [cm/s] (> 0 redshift), γ, φ [deg], z, P_g, ρ); each pixel may have its own log τ grid.
        An :class:`pyinv.InversionResult` (:meth:`~pyinv.InversionResult.to_fits` file) gives its models with
        their macroturbulence, second component (``atmospheres2``, ``macro2``, f₂ ``filling2``) and stray
        light α (``stray``), and from its provenance μ and the PSF / stray-light files: the map then
        reproduces ``result.fits`` (pixels without a result get status 101 and NaN). What the file does
        not hold must be passed again: a PSF or stray-light profile given to :func:`pyinv.invert` as an
        array, the ``observed`` cube of ``stray_profile="local"``, ``abundances``.
    lines, grid : LineList, WavelengthGrid
    backend : ``"lte"``, ``"rh"``, ``"lightweaver"`` or an :class:`pyinv.nlte.NlteBackend`
        ``"lte"``: :func:`pyinv.synthesize` per column. A name builds the backend with
        ``backend_options`` and the level map of ``lines`` (:func:`pyinv.nlte.level_map`).
    rf : bool or tuple of str
        LTE engine only: also the response functions of :func:`pyinv.response_functions` of each pixel's
        (mixed) profile (``True``: T, Pe, vmic, B, vlos, gamma, phi, macro; with a second component also
        those keys with the suffix ``_2`` and ``filling`` (∂I/∂f₂); with stray light ``stray`` (∂I/∂α per
        percent) — :func:`rf_keys_for`; or a tuple of those keys and/or ``"T_he"``, ``"T_he_2"``), returned in
        ``SynthesisMap.rf`` as ``(ny, nx, ndep, 4, nλ)`` arrays (macro, macro_2, filling, stray
        ``(ny, nx, 4, nλ)``). Memory: 8·ndep·4·nλ bytes per pixel and quantity.
    mask : bool array (ny, nx), optional
        True = synthesise the pixel.
    mu : float, optional
        μ of the emergent ray (NLTE backends; the LTE engine uses it only for ``T_he``). None: the
        result's μ, else 1.
    psf, abundances : see :func:`pyinv.synthesize` (psf only for ``"lte"``)
    macro : float or array (ny, nx), optional
        Macroturbulence of component 1 [km/s] (default 0) for a model cube.
    atmospheres2 : ndarray (ny, nx, ndep, 11), optional
        A second component per pixel on component 1's log τ grids, mixed as
        I = (1 − α)[(1 − f₂) I₁ + f₂ I₂] + α I_stray (:mod:`pyinv.physics.mixing`); needs ``filling``.
    macro2 : float or array (ny, nx), optional
        Component 2's macroturbulence [km/s] (default 0).
    filling : float or array (ny, nx), optional
        f₂ ∈ [0, 1], the filling factor of component 2 (old spelling ``filling2=``).
    stray_profile : array (4, nλ), array (ny, nx, 4, nλ), SIR .per path or ``"local"``, optional
        The stray-light profile(s), as for :func:`pyinv.invert`; ``"local"`` is the mean Stokes I of the
        ``observed`` cube around each pixel in a ``stray_window`` box (default 7; a result's own window).
    stray : float or array (ny, nx), optional
        α, the stray-light fraction [%] in [0, 100] (old spelling ``stray_percent=``); needed with
        ``stray_profile`` for a model cube.
    stray_window : int, optional
    observed : ndarray (ny, nx, 4, nλ), optional
        The observed cube, for ``stray_profile="local"`` only.
    executor, workers, chunk, checkpoint, progress, retries : see :func:`pyinv.invert`
    time_limit : float, optional
        Seconds per pixel. NLTE backends receive it (RH kills its subprocesses and reports status 104);
        the executors enforce a backstop of 1.5× + 5 s.

    Returns
    -------
    SynthesisMap
    """
    t0 = time.perf_counter()
    mi = map_inputs(atmospheres, grid, macro=macro, atmospheres2=atmospheres2, macro2=macro2, filling=filling,
                    stray_profile=stray_profile, stray=stray, stray_window=stray_window, observed=observed, mu=mu,
                    psf=psf, mask=mask)
    arr, mu, psf, extras = mi.atmospheres, mi.mu, mi.psf, mi.extras
    ncomp = 1 if extras is None else extras.ncomp
    has_stray = extras is not None and extras.stray is not None
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
    if nlte and extras is not None:
        raise ValueError("a second component and stray light are mixed by the LTE engine only (backend='lte')")
    rf_keys: tuple[str, ...] = ()
    if rf:
        if nlte:
            raise ValueError("rf=True needs backend='lte' (response functions of the NLTE backends are not available)")
        known = rf_keys_for(ncomp, has_stray)
        known = known + ("T_he",) + (("T_he_2",) if ncomp == 2 else ())
        rf_keys = rf_keys_for(ncomp, has_stray) if rf is True else tuple(_canonical_rf(k, known) for k in rf)
        bad = [k for k in rf_keys if k not in known]
        if bad:
            raise ValueError(f"unknown response-function keys {bad}; choose from {known}")
    nlte_lines = tuple(ln.index for ln in backend.lines) if nlte else ()
    sel = mi.valid

    table = np.ascontiguousarray(arr.reshape(npix, ndep, 11))
    header = mi.header
    gindex = np.arange(npix, dtype=np.int32)[:, None]
    cube = np.zeros((npix, 4, nwav))  # no observed profiles: each pixel's solver gets zeros
    snr = np.full(npix, np.nan)
    status0 = np.where(sel.reshape(-1), STATUS_PENDING, STATUS_MASKED)
    bname = backend if isinstance(backend, str) else f"{backend.name}:" + repr(sorted(
        ((k, v) for k, v in vars(backend).items() if not k.startswith("_") and k not in ("workdir", "keep")), key=str))
    fp = fingerprint(table, status0.astype(np.int32), lines, grid, float(mu), abundances, bname,
                     psf if not isinstance(psf, np.ndarray) else psf, "synthesize_map",
                     tuple(_store_rf(k) for k in rf_keys),
                     # per-pixel macro and mixing (absent from the inputs of plain models: their stores still resume)
                     *(() if extras is None and not header.any(axis=0)[[0, 2]].any() else
                       (header, None if extras is None else extras.arrays())))

    tmp = tempfile.mkdtemp(prefix="pyinv-smap-")
    store_path = Path(tmp) / "store" if checkpoint is None else Path(checkpoint)
    owned_workdir = False
    try:
        # ncyc = 1: the stores' shapes have always carried it
        store, resumed = ResultStore.open_or_create(
            store_path, SYNTHESIS_RECORD, npix=npix, dims=Dims(ndep, nwav, 1), fingerprint=fp, ncomp=ncomp,
            extra_meta={"created": _dt.datetime.now(_dt.timezone.utc).isoformat(), "shape": [ny, nx],
                        "kind": "synthesize_map"})
        extra_dir = None
        side_shapes: dict[str, tuple[int, ...]] = {}
        if nlte:
            side_shapes = {"stokes_lte": (npix, 4, nwav), "b_lower": (npix, len(nlte_lines), ndep),
                      "b_upper": (npix, len(nlte_lines), ndep)}
        for k in rf_keys:
            side_shapes[f"rf_{_store_rf(k)}"] = _rf_shape(k, npix, ndep, nwav)
        if side_shapes:
            extra_dir = str(store_path / "extra")
            d = Path(extra_dir)
            if not d.exists():
                d.mkdir()
                for k, shape in side_shapes.items():
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
                                  mu=mu, psf=psf, abundances=abundances, time_limit=backstop, ncomp=ncomp)
        stats = run_pixels(problem, cube, table, header, gindex, snr, todo, store, executor=executor,
                           workers=workers, chunk=chunk or (1 if nlte else None), progress=progress,
                           retries=retries, extras=extras)
        store.set_meta(complete=True)
        a = store.arrays
        out = SynthesisMap(
            **SYNTHESIS_RECORD.result_arrays(lambda k: np.array(a[k]), (ny, nx)), stokes_lte=None, b_lower=None,
            b_upper=None, nlte_lines=nlte_lines, wavelength_vac_nm=wl,
            provenance={"backend": bname if isinstance(backend, str) else backend.name, "resumed": bool(resumed),
                        "mu": mu, **mi.info,
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
