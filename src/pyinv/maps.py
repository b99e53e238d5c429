"""Map inversions: :func:`invert` on whole cubes."""
from __future__ import annotations

import datetime as _dt
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from .errors import input_errors
import numpy as np

from . import scheduler as _sch
from .config import InversionConfig
from .lines import LineList, WavelengthGrid
from .result import InversionResult

__all__ = ["invert", "load_cube"]

#: Fallback re-inversions of at most this many pixels run in the calling process, not in a new pool.
FALLBACK_SERIAL_PIXELS = 4


def load_cube(cube: Any, axes: str = "yxsl") -> tuple[np.ndarray, np.ndarray | None, str]:
    """The cube as float64 (ny, nx, 4, nλ) plus its wavelengths (from a FITS file) and the axes used.

    ``axes`` names the numpy axis order of ``cube`` (a permutation of ``"yxsl"``: y, x, Stokes, λ). For
    a FITS path, the file's ``PYAXES`` keyword is used unless ``axes`` differs from the default.
    """
    if not isinstance(axes, str) or sorted(axes.lower()) != sorted("yxsl"):
        raise ValueError(f"axes must be a permutation of 'yxsl' (y, x, Stokes, wavelength), got {axes!r}")
    ax = axes.lower()
    wl = None
    if isinstance(cube, (str, os.PathLike)):
        from .io.fits import read_stokes_cube

        data, wl = read_stokes_cube(cube, axes=None if ax == "yxsl" else ax)
        if data.ndim != 4:
            raise ValueError(f"{cube}: a map needs 4 axes (y, x, Stokes, wavelength), got shape {data.shape}")
        return data, wl, ax
    data = np.asarray(cube)
    if data.ndim != 4:
        raise ValueError(f"cube must have 4 axes ordered as axes={axes!r} (y, x, Stokes, wavelength); got "
                         f"{data.ndim} axes, shape {data.shape}")
    if not np.issubdtype(data.dtype, np.number) or np.iscomplexobj(data):
        raise ValueError(f"cube must be a real numeric array, got dtype {data.dtype}")
    out = np.ascontiguousarray(np.transpose(data, [ax.index(c) for c in "yxsl"]), dtype=np.float64)
    if out.shape[2] != 4:
        raise ValueError(f"the Stokes axis ('s' at position {ax.index('s')} of axes={axes!r}) has length "
                         f"{out.shape[2]}, expected 4 (I, Q, U, V); cube shape {data.shape}")
    return out, wl, ax


def _per_pixel(name: str, v: Any, ny: int, nx: int, positive: bool = False) -> np.ndarray:
    a = np.asarray(v, dtype=np.float64)
    if a.ndim == 0:
        a = np.full((ny, nx), float(a))
    if a.shape != (ny, nx):
        raise ValueError(f"{name} must be a scalar or a map of shape (ny, nx) = {(ny, nx)}, got {a.shape}")
    if positive and not (np.isfinite(a) & (a > 0)).all():
        raise ValueError(f"{name} must be finite and > 0")
    return a


#: Largest |value| of a continuum-normalised profile that is still believable (bright network and
#: faculae stay below ~2; counts, a wrong unit or ×1e30 are far above).
HUGE_VALUE = 10.0
#: Range of the map's median continuum (the median over pixels of max I) that looks normalised.
CONTINUUM_RANGE = (0.1, 10.0)


#: Bytes of the cube looked at per block by :func:`pixel_summary` (no temporary of the cube's size).
SUMMARY_BLOCK = 8 << 20


def pixel_summary(data: np.ndarray) -> dict[str, np.ndarray]:
    """Per pixel of a cube (ny, nx, 4, nλ), computed over blocks of rows: ``finite`` (every value finite),
    ``nonpositive`` (Stokes I ≤ 0 somewhere), ``huge`` (some |value| > :data:`HUGE_VALUE`), ``zero_all``
    (Stokes I all zero), ``zero_any``, ``negative`` (Stokes I < 0 somewhere) as bool (ny, nx), and ``cont``
    (the largest Stokes I, float64)."""
    ny, nx = data.shape[:2]
    out = {k: np.zeros((ny, nx), bool) for k in ("finite", "nonpositive", "huge", "zero_all", "zero_any", "negative")}
    out["cont"] = np.zeros((ny, nx))
    per_row = max(1, int(np.prod(data.shape[1:], dtype=np.int64)) * 8)
    step = max(1, SUMMARY_BLOCK // per_row)
    with np.errstate(invalid="ignore", over="ignore"):
        for i in range(0, ny, step):
            d = data[i:i + step]
            si = d[:, :, 0, :]
            out["finite"][i:i + step] = np.isfinite(d).all(axis=(2, 3))
            out["nonpositive"][i:i + step] = (si <= 0).any(axis=-1)
            out["huge"][i:i + step] = (np.abs(d) > HUGE_VALUE).any(axis=(2, 3))
            out["zero_all"][i:i + step] = (si == 0).all(axis=-1)
            out["zero_any"][i:i + step] = (si == 0).any(axis=-1)
            out["negative"][i:i + step] = (si < 0).any(axis=-1)
            out["cont"][i:i + step] = si.max(axis=-1)
    return out


def check_cube(data: np.ndarray, dtype: Any = np.float64, valid: np.ndarray | None = None,
               summary: dict[str, np.ndarray] | None = None) -> tuple[np.ndarray, list[str]]:
    """Look for a cube that is not normalised to the continuum.

    Parameters
    ----------
    data : ndarray (ny, nx, 4, nλ)
        The cube, canonical axis order.
    dtype : numpy dtype
        The dtype the user passed (integer types mean raw counts).
    valid : bool ndarray (ny, nx), optional
        Pixels to look at (default: all).
    summary : dict, optional
        :func:`pixel_summary` of ``data`` when already computed.

    Returns
    -------
    bad : bool ndarray (ny, nx)
        Pixels with finite values that cannot be inverted: Stokes I <= 0 somewhere (negative or all-zero
        I), or some |value| > :data:`HUGE_VALUE`.
    problems : list of str
        One sentence per problem found for the map (empty when the cube looks normalised).
    """
    ny, nx = data.shape[:2]
    sel = np.ones((ny, nx), bool) if valid is None else np.asarray(valid, bool)
    sm = pixel_summary(data) if summary is None else summary
    finite, nonpositive, huge, cont = sm["finite"], sm["nonpositive"], sm["huge"], sm["cont"]
    bad = sel & finite & (nonpositive | huge)
    look = sel & finite
    problems = []
    if np.issubdtype(np.dtype(dtype), np.integer):
        problems.append(f"the cube holds integers ({np.dtype(dtype)}): raw counts, not profiles normalised to "
                        "the continuum")
    if look.any():
        med = float(np.median(cont[look]))
        if not CONTINUUM_RANGE[0] <= med <= CONTINUUM_RANGE[1]:
            problems.append(f"the median continuum (max of Stokes I per pixel) is {med:.4g}, far from 1")
    n_zero = int((sel & finite & sm["zero_all"]).sum())
    n_neg = int((sel & finite & sm["negative"]).sum())
    n_huge = int((sel & finite & huge).sum())
    if n_zero:
        problems.append(f"{n_zero} pixel(s) have an all-zero Stokes I")
    if n_neg:
        problems.append(f"{n_neg} pixel(s) have negative Stokes I")
    n_other = int((sel & finite & sm["zero_any"] & ~sm["zero_all"] & ~sm["negative"]).sum())
    if n_other:
        problems.append(f"{n_other} pixel(s) have Stokes I = 0 at some wavelength")
    if n_huge:
        problems.append(f"{n_huge} pixel(s) have values beyond ±{HUGE_VALUE:g} (in units of the continuum)")
    return bad, problems


@input_errors
def invert(cube: Any, lines: LineList, grid: WavelengthGrid, config: InversionConfig | None, *, init: Any = "single",
           guess: Any = None, mask: Any = None, sigma: Any = None, mu: float | None = None, psf: Any = None,
           abundances: Any = None, axes: str = "yxsl", executor: Any = None, workers: int | None = None,
           chunk: int | None = None, checkpoint: str | os.PathLike | None = None, progress: Any = True,
           time_limit: float | None = None, retries: int = 2, check: bool = True, nlte: Any = None,
           guess2: Any = None, filling2: Any = None, stray: Any = None, stray_window: int | None = None,
           stray_percent: Any = None) -> InversionResult:
    """Invert every pixel of a Stokes map; each pixel's result is exactly what
    :func:`pyinv.invert_pixel` gives for it (with ``init="multistart"``: the start with the lowest χ²).

    Parameters
    ----------
    cube : ndarray or FITS path
        Stokes profiles normalised to the HSRA disk-centre continuum, axes ordered as ``axes``.
    lines, grid, config : LineList, WavelengthGrid, InversionConfig
        As for ``invert_pixel``; the cube's wavelength axis must have ``grid.nwav`` samples. With
        ``init="cnn"`` the map is inverted in ONE cycle with the nodes of the configuration's last cycle
        (config None: :func:`pyinv.cnn.assisted_config`), pixels whose fit is clearly worse are re-inverted
        with the full configuration from the standard start (see :class:`pyinv.cnn.CNNInit`).
    init : str or InitStrategy
        ``"single"`` (default; ``guess`` = one Atmosphere / .mod path, default the packaged quiet-Sun
        guess), ``"previous"`` (``guess`` = an InversionResult, its FITS file or an atmosphere cube
        (ny, nx, ndep, 11)), ``"multistart"`` (``guess`` = list of atmospheres or their number, default
        3), ``"cluster"`` (library models per cluster of observables; ``guess`` = optional labels (ny, nx)),
        ``"cnn"`` (``guess`` = model, path or catalogue name; options through ``init=pyinv.cnn.CNNInit(...)``),
        or an :class:`pyinv.init.InitStrategy` object.
    mask : bool array (ny, nx), optional
        True where pixels are inverted. Pixels where it is False are not inverted: status
        ``STATUS_MASKED`` (101), NaN outputs.
    sigma : float or array (ny, nx), optional
        Noise of Stokes I in units of the continuum (σ = 1/S/N, SIR's convention); replaces the
        configuration's S/N per pixel. Must be finite and > 0.
    mu : float, optional
        Heliocentric cosine; None takes ``config.mu``.
    psf, abundances :
        As for ``invert_pixel``.
    axes : str
        numpy axis order of ``cube``: a permutation of ``"yxsl"`` (y, x, Stokes, λ). For a FITS path the
        file's ``PYAXES`` keyword wins unless ``axes`` is given with another value.
    executor : None, "serial", concurrent.futures.Executor or distributed.Client
        None: a local process pool of ``workers`` processes (default: usable cores), inputs in shared
        memory, workers pinned to one BLAS/OpenMP thread, crashed workers replaced. An Executor (dask,
        mpi4py.futures, ...) receives self-contained chunks. ``"serial"``: in this process.
    workers : int, optional
        Pool size (local pool) or the number of chunks kept in flight / 2 (other executors).
    chunk : int, optional
        Pixels per task (default: about 16 tasks per worker, at most 32 pixels on the local pool).
    checkpoint : path, optional
        Folder of the result store. Finished pixels are written as they complete; calling again with
        the same path and the same inputs computes only the unfinished pixels. Inputs that differ are
        refused (ValueError).
    progress : bool or callable
        tqdm progress bar (pixels/s, ETA); a callable is called as ``progress(done, total)`` instead.
    time_limit : float, optional
        Seconds per pixel (and per start); exceeding pixels get ``STATUS_TIMEOUT`` (104).
    retries : int
        Retries of a pixel whose worker process died (then ``STATUS_WORKER_DIED``, 105) or whose task
        failed outside the solver (then ``STATUS_FAILED``, 103).
    check : bool
        True (default): a cube that does not look normalised to the continuum (integer counts, median
        continuum far from 1, negative or all-zero Stokes I, values beyond ±10) is refused with a
        ValueError naming what was found. False: one warning for the map instead, and the offending pixels
        get ``STATUS_BAD_INPUT`` (102) without being inverted.
    nlte : pyinv.nlte backend, optional
        Invert in NLTE, DeSIRe's way (:func:`pyinv.nlte.invert_pixel_nlte`): the backend (RH or Lightweaver,
        with ``lte=True`` and the NLTE lines mapped) is called per pixel at each cycle and when T moves by
        more than 1 %; departures and the NLTE correction are frozen in between.
    guess2 : Atmosphere, SIR .mod path, atmosphere cube or InversionResult, optional
        Initial model of a second magnetic component (``invert_pixel(guess2=...)``; its nodes are
        ``config.nodes2``): one model for every pixel (Atmosphere, .mod path, array (ndep, 8|11)), or one
        per pixel as ``init="previous"`` takes them (stacked Atmosphere of ny·nx models, array
        (ny, nx, ndep, 8|11), an InversionResult or its FITS file with a second component: its
        ``atmospheres2``, ``macro2`` and ``filling2``). Pixels a cube has no model for (NaN) start from
        the packaged quiet-Sun guess with f₂ = 0.5. It must be on component 1's log τ grid.
    filling2 : float or array (ny, nx), optional
        Filling factor f₂ ∈ (0, 1) of component 2 (the start when ``config.invert_filling``); None takes
        guess2's header value (SIR: model 2's header), which must then lie in (0, 1).
    stray : array (4, nλ), array (ny, nx, 4, nλ), SIR .per path or "local", optional
        Stray-light profile mixed in as I = (1 − α)[(1 − f₂) I₁ + f₂ I₂] + α I_stray (not convolved):
        one profile for every pixel (array or .per file on the grid's wavelengths), one per pixel, or
        ``"local"``: per pixel the mean Stokes I of the surrounding pixels in a square window of
        ``stray_window`` pixels (the pixel itself excluded; at the map's edges only the pixels inside
        the map; pixels with non-finite or unusable profiles — see ``check`` — never contribute, masked
        pixels with good profiles do), Q, U, V zero (:func:`pyinv.straylight.local_stray_profiles`).
        None takes the configuration's ``stray_file`` when set.
    stray_window : int, optional
        Side of the ``"local"`` window [pixels], odd and >= 3; default
        :data:`pyinv.straylight.DEFAULT_STRAY_WINDOW` (7 ≈ 1.1″ on Hinode/SP).
    stray_percent : float or array (ny, nx), optional
        Stray-light fraction α [%] in [0, 100) (the start when ``config.invert_stray``); None takes
        component 1's guess header value (SIR: model 1's header). Inverting the stray light needs α ≠ 0.

    Returns
    -------
    InversionResult

    Raises
    ------
    ValueError
        Wrong axes/shapes (cube not 4-D, Stokes axis ≠ 4, nλ ≠ grid.nwav, mask/sigma shapes), unknown init,
        a stray-light profile of the wrong shape or wavelengths, ``stray_window`` even or < 3, f₂ ∉ (0, 1),
        α ∉ [0, 100) (or α = 0 with ``invert_stray``), a guess2 on another log τ grid,
        node counts beyond the model's depth points, a cube that does not look normalised (``check``),
        a checkpoint made for other inputs (the message lists which inputs changed).
    pyinv.scheduler.PoolStartError
        The local pool died more than 3 times before computing any pixel (the message says why and what
        to add to a script); finished pixels stay in the checkpoint.

    Notes
    -----
    Pixels whose profiles contain NaN or infinite values are not inverted (status ``STATUS_BAD_INPUT``
    (102), NaN outputs); an exception in the solver gives ``STATUS_FAILED`` (103). The run never stops
    for a pixel. Workers need nothing from ``__main__``: a script without ``if __name__ == "__main__":``
    (or one piped through stdin) works.
    """
    return _invert(cube, lines, grid, config, init=init, guess=guess, mask=mask, sigma=sigma, mu=mu, psf=psf,
                   abundances=abundances, axes=axes, executor=executor, workers=workers, chunk=chunk,
                   checkpoint=checkpoint, progress=progress, time_limit=time_limit, retries=retries,
                   solver=_solver(nlte), check=check, guess2=guess2, filling2=filling2, stray=stray,
                   stray_window=stray_window, stray_percent=stray_percent)


def _solver(nlte: Any) -> Any:
    """The pixel solver: invert_pixel, or with ``nlte`` (a pyinv.nlte backend, or ``"rh"`` /
    ``"lightweaver"`` with the NLTE lines the grid uses) the DeSIRe-style NLTE inversion."""
    if nlte is None:
        return "pyinv:invert_pixel"
    from .nlte.desire import NlteSolver

    if isinstance(nlte, NlteSolver):
        return nlte
    if isinstance(nlte, str):
        raise ValueError("nlte must be a pyinv.nlte backend instance (e.g. pyinv.nlte.make_backend('lightweaver', "
                         "pyinv.nlte.level_map(lines)))")
    return NlteSolver(nlte)


def _is_nlte(solver: Any) -> bool:
    if isinstance(solver, str) or solver is None:
        return False
    from .nlte.desire import NlteSolver

    return isinstance(solver, NlteSolver)


def _refuse_in_bootstrap() -> None:
    """A process that is still being set up by multiprocessing (it re-runs its parent's main module, e.g.
    a user's own pool started from an unguarded script) must not start a map inversion."""
    import multiprocessing

    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise RuntimeError("pyinv.invert was called while a child process was starting (the main script is "
                           "re-run by multiprocessing in its children). " + _sch.GUARD_HINT)


def _invert(cube, lines, grid, config, *, init, guess, mask, sigma, mu, psf, abundances, axes, executor, workers,
            chunk, checkpoint, progress, time_limit, retries, solver, check=True, guess2=None, filling2=None,
            stray=None, stray_window=None, stray_percent=None) -> InversionResult:
    from .init import InitContext, get_init
    from .pixel_extras import map_extras
    from .straylight import DEFAULT_STRAY_WINDOW, _check_window

    _refuse_in_bootstrap()
    t_start = time.perf_counter()
    if not isinstance(lines, LineList):
        raise ValueError(f"lines must be a pyinv.LineList, got {type(lines).__name__}")
    if not isinstance(grid, WavelengthGrid):
        raise ValueError(f"grid must be a pyinv.WavelengthGrid, got {type(grid).__name__}")
    strategy = get_init(init, guess)
    prep = getattr(strategy, "prepare_config", None)
    if prep is not None:
        config = prep(config, mu=mu)
    if not isinstance(config, InversionConfig):
        raise ValueError(f"config must be a pyinv.InversionConfig, got {type(config).__name__}")
    data, wl, ax = load_cube(cube, axes)
    ny, nx, _, nwav = data.shape
    if nwav != grid.nwav:
        raise ValueError(f"the cube has {nwav} wavelengths (axis 'l' of axes={axes!r}), the grid {grid.nwav}")
    if ny == 0 or nx == 0:
        raise ValueError(f"the cube has no pixels (shape {data.shape})")
    if workers is not None and int(workers) < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if chunk is not None and int(chunk) < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    if time_limit is not None and not (float(time_limit) > 0):
        raise ValueError(f"time_limit must be > 0 seconds, got {time_limit}")
    mu_eff = float(config.mu) if mu is None else float(mu)
    if not 0.0 < abs(mu_eff) <= 1.0:
        raise ValueError(f"mu must be in (0, 1], got {mu_eff}")
    if mask is None:
        sel = np.ones((ny, nx), bool)
    else:
        sel = np.asarray(mask)
        if sel.shape != (ny, nx):
            raise ValueError(f"mask must have shape (ny, nx) = {(ny, nx)}, got {sel.shape}")
        if sel.dtype != bool:
            raise ValueError(f"mask must be boolean (True = invert the pixel), got dtype {sel.dtype}")
    if isinstance(retries, bool) or int(retries) < 0:
        raise ValueError(f"retries must be an integer >= 0, got {retries!r}")
    local_stray = isinstance(stray, str) and stray.lower() == "local"
    if stray_window is not None:
        _check_window(stray_window)
        if not local_stray:
            raise ValueError(f"stray_window={stray_window!r} is only used with stray='local', got stray={stray!r}")
    if _is_nlte(solver) and (guess2 is not None or stray is not None or filling2 is not None
                             or stray_percent is not None):
        raise ValueError("a second component (guess2/filling2) and stray light (stray/stray_percent) are only "
                         "supported by the LTE solver (nlte=None)")
    snr = np.full((ny, nx), np.nan) if sigma is None else 1.0 / _per_pixel("sigma", sigma, ny, nx, positive=True)
    summary = pixel_summary(data)  # in blocks: no temporary of the cube's size
    finite = summary["finite"].copy()
    in_dtype = np.asarray(cube).dtype if not isinstance(cube, (str, os.PathLike)) else data.dtype
    unusable, problems = check_cube(data, in_dtype, sel, summary=summary)
    if problems:
        text = ("the cube does not look normalised to the continuum (pyinv expects profiles divided by the "
                "HSRA disk-centre continuum): " + "; ".join(problems))
        if check:
            raise ValueError(text + ". Normalise it, mask the pixels, or pass check=False to invert the other "
                             "pixels (those listed get status 102, bad input)")
        warnings.warn(text + f". {int(unusable.sum())} pixel(s) get status 102 (bad input) and are not inverted",
                      UserWarning, stacklevel=3)
    finite = finite & ~unusable
    valid = sel & finite

    ctx = InitContext(cube=data, valid=valid, lines=lines, grid=grid, config=config, mu=mu_eff, psf=psf,
                      abundances=abundances)
    gs = strategy.initial_guesses(ctx)
    if gs.index.shape[0] != ny * nx:
        raise ValueError(f"init strategy {strategy.describe()!r} returned guesses for {gs.index.shape[0]} pixels, "
                         f"expected {ny * nx}")
    config.check_nodes(gs.ndep)
    ncyc = max(1, int(config.cycles))
    usable = summary["finite"] & ~summary["nonpositive"] & ~summary["huge"]
    extras, extras_info = map_extras(
        guess2=guess2, filling2=filling2, stray=stray,
        stray_window=(DEFAULT_STRAY_WINDOW if stray_window is None else stray_window), stray_percent=stray_percent,
        data=data, grid=grid, config=config, table=gs.table, header=gs.header, gindex=gs.index, valid=valid,
        usable=usable)
    if solver == "pyinv:invert_pixel":  # settings invert_pixel cannot honour: refused once, not per pixel
        from .inversion import refuse_unsupported

        refuse_unsupported(config, two_components=extras.ncomp == 2)
    wrap = getattr(strategy, "pixel_solver", None)  # e.g. CNNInit's LM options of the assisted cycle
    problem = _sch.PixelProblem(lines=lines, grid=grid, config=config, mu=mu, psf=psf, abundances=abundances,
                                solver=solver if wrap is None else wrap(solver), time_limit=time_limit,
                                ncomp=extras.ncomp, stream=gs.stream)
    naux = 0 if gs.stream is None else int(gs.stream.naux)
    flat = data.reshape(ny * nx, 4, nwav)
    snr_flat = np.ascontiguousarray(snr.reshape(-1))
    status0 = np.where(~sel, _sch.STATUS_MASKED, np.where(~finite, _sch.STATUS_BAD_INPUT, _sch.STATUS_PENDING))
    fp = _fingerprints(flat, gs, snr_flat, status0, config, lines, grid, mu, psf, abundances, problem, time_limit)
    if not extras.empty:  # second component and stray light: part of the inputs a checkpoint is made for
        fp["component2_and_stray"] = _sch.fingerprint(extras.arrays())

    try:  # temporary folders of runs killed with SIGKILL (owner process gone)
        _sch.remove_stale_folders()
    except OSError:  # pragma: no cover
        pass
    tmp = None
    if checkpoint is None:
        tmp = tempfile.mkdtemp(prefix=f"pyinv-store-{_sch._owner_tag()}-")  # removed by a later run if we are killed
        store_path = Path(tmp) / "store"
    else:
        store_path = Path(checkpoint)
    try:
        store, resumed = _sch.ResultStore.open_or_create(
            store_path, npix=ny * nx, ndep=gs.ndep, nwav=nwav, ncyc=ncyc, fingerprint=fp, ncomp=extras.ncomp,
            naux=naux,
            extra_meta={"created": _dt.datetime.now(_dt.timezone.utc).isoformat(), "shape": [ny, nx],
                        "pyinv_version": _version()},
            durable=checkpoint is not None)
        st = store.status
        # masked / bad pixels are final from the start: their outputs keep the store's fill values (those of
        # a blank record), only their status is written (all at once: no page of their outputs is touched)
        for code in (_sch.STATUS_MASKED, _sch.STATUS_BAD_INPUT):
            ids_code = np.flatnonzero((status0.reshape(-1) == code) & (st == _sch.STATUS_PENDING))
            if ids_code.size:
                store.put_many(ids_code, {"status": np.full(ids_code.size, code, np.int32)})
        todo = np.nonzero(st == _sch.STATUS_PENDING)[0]
        stats = _sch.run_pixels(problem, flat, gs.table, gs.header, gs.index, snr_flat, todo, store,
                                executor=executor, workers=workers, chunk=chunk, progress=progress,
                                retries=retries, extras=None if extras.empty else extras)
        pending = int(np.count_nonzero(store.status == _sch.STATUS_PENDING))
        if pending:  # every failure path requeues; this is the last line of defence
            raise RuntimeError(f"pyinv.invert: {pending} pixel(s) are still pending after the run; the store "
                               f"{store_path} is kept incomplete (a rerun with the same checkpoint resumes)")
        store.set_meta(complete=True)
        if gs.stream is not None:  # e.g. the CNN's clusters, from the outputs the workers stored
            got = gs.stream.collect(store.arrays.get("start_aux"), valid) or {}
            if got.get("labels") is not None:
                gs.labels = got["labels"]
            gs.info.update(got.get("info") or {})
            store.release()
        a = store.arrays

        def grab(k):
            v = a[k]
            return np.array(v) if checkpoint is None else np.load(store_path / f"{k}.npy", mmap_mode="c")

        atm = grab("atmos").reshape(ny, nx, gs.ndep, 11)
        hdr = grab("header").reshape(ny, nx, 3)
        two = {}
        if extras.ncomp == 2:
            h2 = grab("header2").reshape(ny, nx, 3)
            two = dict(atmospheres2=grab("atmos2").reshape(ny, nx, gs.ndep, 11), macro2=h2[..., 0],
                       errors2=grab("errors2").reshape(ny, nx, gs.ndep, 11),
                       errors_header2=grab("errors_header2").reshape(ny, nx, 3))
        prov = {
            "pyinv_version": _version(), "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "config_text": config.to_sir_text(), "cube_shape": list(np.shape(cube)) if not isinstance(
                cube, (str, os.PathLike)) else [ny, nx, 4, nwav], "cube_source": str(cube) if isinstance(
                cube, (str, os.PathLike)) else "array", "axes": ax, "map_shape": [ny, nx], "nwav": nwav,
            "ndep": gs.ndep, "init": strategy.describe(), "init_info": gs.info, "nstart": gs.nstart,
            "mu": mu_eff, "psf": None if psf is None else (str(psf) if isinstance(psf, (str, os.PathLike)) else "array"),
            "abundances": None if abundances is None else (str(abundances) if isinstance(
                abundances, (str, os.PathLike)) else "array"),
            "sigma": None if sigma is None else ("scalar" if np.ndim(sigma) == 0 else "map"),
            "masked_pixels": int((~sel).sum()), "nonfinite_pixels": int((sel & ~summary["finite"]).sum()),
            "bad_input_pixels": int((sel & ~finite).sum()), "input_problems": problems,
            "solver": problem.solver_name(), "checkpoint": None if checkpoint is None else str(checkpoint),
            "resumed": bool(resumed), "time_limit": time_limit, "ncomp": extras.ncomp, **extras_info,
            "seconds": time.perf_counter() - t_start, **{k: v for k, v in stats.items()},
        }
        if gs.labels is not None:
            prov["labels"] = np.asarray(gs.labels).tolist()
        res = InversionResult(
            atmospheres=atm, macro=hdr[..., 0], filling=hdr[..., 1], stray=hdr[..., 2],
            fits=grab("fits").reshape(ny, nx, 4, nwav), chi2=grab("chi2").reshape(ny, nx),
            chi2_reduced=grab("chi2_reduced").reshape(ny, nx),
            chi2_cycles=grab("chi2_cycles").reshape(ny, nx, ncyc), status=grab("status").reshape(ny, nx),
            iterations=grab("iterations").reshape(ny, nx), errors=grab("errors").reshape(ny, nx, gs.ndep, 11),
            errors_header=grab("errors_header").reshape(ny, nx, 3), start=grab("start").reshape(ny, nx),
            seconds=grab("seconds").reshape(ny, nx), line_index=np.asarray(grid.line_index).copy(),
            offset_mA=np.asarray(grid.offset_mA, dtype=np.float64).copy(),
            wavelength=np.asarray(grid.wavelength if wl is None else wl, dtype=np.float64).copy(),
            provenance=prov, filling2=grab("filling2").reshape(ny, nx),
            stray_percent=grab("stray_percent").reshape(ny, nx), rescue=grab("rescue").reshape(ny, nx), **two)
        del store, a
        finish = getattr(strategy, "finish", None)
        if finish is not None:
            def rerun(mask_, config_, *, init="single", guess=None):
                ck = None if checkpoint is None else Path(str(checkpoint) + ".fallback")
                m_ = np.asarray(mask_, bool) & sel
                # a handful of pixels: in this process (starting a pool costs more than inverting them)
                ex = "serial" if executor is None and np.count_nonzero(m_) <= FALLBACK_SERIAL_PIXELS else executor
                return _invert(data, lines, grid, config_, init=init, guess=guess, mask=m_,
                               sigma=sigma, mu=mu, psf=psf, abundances=abundances, axes="yxsl", executor=ex,
                               workers=workers, chunk=chunk, checkpoint=ck, progress=progress,
                               time_limit=time_limit, retries=retries, solver=solver, guess2=guess2,
                               filling2=filling2, stray=stray, stray_window=stray_window, stray_percent=stray_percent)
            res = finish(res, rerun)
            res.provenance["seconds"] = time.perf_counter() - t_start
        return res
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _file_or_value(v: Any) -> Any:
    """A path as a :class:`~pathlib.Path` (hashed by content), anything else as it is."""
    return Path(v) if isinstance(v, (str, os.PathLike)) else v


def _fingerprints(flat, gs, snr_flat, status0, config, lines, grid, mu, psf, abundances, problem, time_limit
                  ) -> dict[str, str]:
    """Content digests of every input of a map inversion, by name (a refused resume lists those that
    differ). Files (PSF, abundances, and those the configuration names and the solver reads) count by
    content; the pyinv version is one of the inputs."""
    files = {}
    for field in ("psf_file", "abundances_file"):
        p = config.resolve(field)
        if p is not None:
            files[field] = p
    starts = (gs.table, gs.header, gs.index)
    if gs.stream is not None:  # made per chunk in the workers: what they are made from (model, options)
        starts = starts + (gs.stream.fingerprint(),)
    return _sch.fingerprints(
        cube=flat, start_models=starts, sigma=snr_flat,
        mask=status0.reshape(-1).astype(np.int32), config=config.to_sir_text(), config_files=files,
        lines=lines, grid=grid, mu=mu, psf=_file_or_value(psf), abundances=_file_or_value(abundances),
        solver=(problem.solver_name(), time_limit), pyinv_version=_version())


def _version() -> str:
    from . import __version__
    return __version__
