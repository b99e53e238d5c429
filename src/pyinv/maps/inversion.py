"""Map inversions: :func:`invert` (``pyinv.invert``) on whole cubes, and :func:`invert_map`, the same with
the pixel solver given explicitly.

A call checks its inputs (:mod:`pyinv.maps.cube`, :mod:`pyinv.maps.extras`), makes the pixels' starts
(:mod:`pyinv.init`), opens the result store (:mod:`pyinv.maps.store`, a checkpoint or a temporary folder)
for the fingerprints of every input, runs the pending pixels (:func:`pyinv.maps.pool.run_pixels` with an
:class:`~pyinv.maps.pixel.InversionPixels` problem) and reads the store into an
:class:`~pyinv.maps.result.InversionResult`.
"""
from __future__ import annotations

import datetime as _dt
import functools
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..atmosphere import deprecated_name, renamed_keywords
from ..config import InversionConfig
from ..engine import PACKAGE_VERSION
from ..errors import input_errors
from ..lines import LineList, WavelengthGrid
from ..status import STATUS_BAD_INPUT, STATUS_MASKED, STATUS_PENDING
from .cube import check_cube, load_cube, per_pixel_map, pixel_summary
from .extras import DEFAULT_STRAY_WINDOW, check_stray_window, map_extras
from .pixel import NLTE_FIELDS, InversionPixels
from .pool import run_pixels
from .processes import owner_tag, refuse_in_bootstrap, remove_stale_folders
from .result import InversionResult, nlte_summary
from .store import Dims, ResultStore, fingerprint, fingerprints

__all__ = ["invert", "invert_map", "solver_for", "FALLBACK_SERIAL_PIXELS"]

#: Fallback re-inversions of at most this many pixels run in the calling process, not in a new pool.
FALLBACK_SERIAL_PIXELS = 4


def _old_stray_keywords(fn):
    """Before issue 18 ``pyinv.invert``'s ``stray=`` was the stray-light profile and ``stray_percent=`` α: a
    call with both passes the profile as ``stray_profile=`` (here) and α as ``stray=`` (by
    :func:`pyinv.atmosphere.renamed_keywords`), each with a DeprecationWarning. ``stray=`` alone is sorted out
    by :func:`_stray_arguments` once the map's shape is known."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if "stray_percent" in kwargs and "stray" in kwargs and "stray_profile" not in kwargs:
            deprecated_name("stray", "stray_profile",
                            f"{fn.__qualname__}() keyword argument (the stray-light profile)", stacklevel=2)
            kwargs["stray_profile"] = kwargs.pop("stray")
        return fn(*args, **kwargs)
    return wrapper


def _stray_arguments(stray_profile: Any, stray: Any, ny: int, nx: int, nwav: int, config: InversionConfig
                     ) -> tuple[Any, Any]:
    """``(stray_profile, stray)`` of :func:`invert`. A ``stray`` without ``stray_profile`` that can only be a
    profile (a file name or ``"local"``, a (4, nλ) array that is no (ny, nx) map, or a cube of profiles) is the
    profile of a call written before issue 18, when ``stray=`` named it: taken as ``stray_profile``, with a
    DeprecationWarning. (A (4, nλ) array on a map of 4 × nλ pixels is α, unless the configuration has no
    ``stray_file``: α without a profile would be refused.)"""
    if stray_profile is not None or stray is None:
        return stray_profile, stray
    shape = None if isinstance(stray, (str, os.PathLike)) else np.shape(stray)
    legacy = shape is None or len(shape) in (3, 4) or (
        shape == (4, nwav) and (shape != (ny, nx) or not config.stray_file))
    if not legacy:
        return None, stray
    deprecated_name("stray", "stray_profile", "pyinv.invert() keyword argument (the stray-light profile)",
                    stacklevel=4)
    return stray, None


@_old_stray_keywords
@renamed_keywords
@input_errors
def invert(cube: Any, lines: LineList, grid: WavelengthGrid, config: InversionConfig | None, *, init: Any = "single",
           guess: Any = None, mask: Any = None, sigma: Any = None, mu: float | None = None, psf: Any = None,
           abundances: Any = None, axes: str = "yxsl", executor: Any = None, workers: int | None = None,
           chunk: int | None = None, checkpoint: str | os.PathLike | None = None, progress: Any = True,
           time_limit: float | None = None, retries: int = 2, check: bool = True, nlte: Any = None,
           guess2: Any = None, filling: Any = None, stray_profile: Any = None, stray_window: int | None = None,
           stray: Any = None, spatial_psf: Any = None, coupled: dict | None = None,
           magnetic_start: str | None = None) -> InversionResult:
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
        more than 1 %; departures and the NLTE correction are frozen in between. Or a
        :class:`pyinv.nlte.desire.NlteSolver` with its options, e.g. ``NlteSolver(backend,
        departures="emulated")``: b from the learned emulator, the backend called once per pixel to check
        (docs/nlte.md).
    guess2 : Atmosphere, SIR .mod path, atmosphere cube or InversionResult, optional
        Initial model of a second magnetic component (``invert_pixel(guess2=...)``; its nodes are
        ``config.nodes2``): one model for every pixel (Atmosphere, .mod path, array (ndep, 8|11)), or one
        per pixel as ``init="previous"`` takes them (stacked Atmosphere of ny·nx models, array
        (ny, nx, ndep, 8|11), an InversionResult or its FITS file with a second component: its
        ``atmospheres2``, ``macro2`` and ``filling2``). Pixels a cube has no model for (NaN) start from
        the packaged quiet-Sun guess with f₂ = 0.5. It must be on component 1's log τ grid.
    filling : float or array (ny, nx), optional
        Filling factor f₂ ∈ (0, 1) of component 2 (the start when ``config.invert_filling``); None takes
        guess2's header value (SIR: model 2's header), which must then lie in (0, 1). The result holds it
        as ``filling2`` (component 2's counterpart of ``filling``). Old spelling ``filling2=`` (accepted
        with a DeprecationWarning).
    stray_profile : array (4, nλ), array (ny, nx, 4, nλ), SIR .per path or "local", optional
        Stray-light profile mixed in as I = (1 − α)[(1 − f₂) I₁ + f₂ I₂] + α I_stray (not convolved):
        one profile for every pixel (array or .per file on the grid's wavelengths), one per pixel, or
        ``"local"``: per pixel the mean Stokes I of the surrounding pixels in a square window of
        ``stray_window`` pixels (the pixel itself excluded; at the map's edges only the pixels inside
        the map; pixels with non-finite or unusable profiles — see ``check`` — never contribute, masked
        pixels with good profiles do), Q, U, V zero (:func:`pyinv.maps.extras.local_stray_profiles`).
        None takes the configuration's ``stray_file`` when set. (Before issue 18 this was ``stray=``; a
        ``stray`` that can only be a profile is still taken as one, with a DeprecationWarning.)
    stray_window : int, optional
        Side of the ``"local"`` window [pixels], odd and >= 3; default
        :data:`pyinv.maps.extras.DEFAULT_STRAY_WINDOW` (7 ≈ 1.1″ on Hinode/SP).
    stray : float or array (ny, nx), optional
        Stray-light fraction α [%] in [0, 100) (the start when ``config.invert_stray``); None takes
        component 1's guess header value (SIR: model 1's header). Inverting the stray light needs α ≠ 0.
        The result holds it as ``stray``. Old spelling ``stray_percent=`` (accepted with a
        DeprecationWarning).
    spatial_psf : array (ky, kx), FITS path or pyinv.coupled.SpatialPSF, optional
        The telescope's spatial PSF in map pixels (e.g. ``instrument_hinode_sp/hinode_psf_0.16.fits``). Given,
        the pixel-by-pixel result is the start of a spatially coupled inversion
        (:func:`pyinv.coupled.invert_coupled`): all pixels fitted together through the PSF, in tiles with
        PSF-wide borders on the same executor, resumable in the folder ``checkpoint`` + ``.coupled``. Use
        it for data at the diffraction limit with a known PSF; it costs a few times the pixel-by-pixel
        inversion (docs/coupled.md). One component, no stray light, LTE only.
    coupled : dict, optional
        Options of :func:`pyinv.coupled.invert_coupled` (``tile``, ``border``, ``weighting``, solver
        controls such as ``max_iterations``).
    magnetic_start : "profiles", "guess" or None
        ``invert_pixel(magnetic_start=...)`` for every pixel (B, γ, φ of the start read off the pixel's
        profiles, or the guess's). None: invert_pixel's default with ``init="single"``, the guesses as given
        with the other strategies (previous, multistart, cluster: data-driven or deliberately varied starts).
        ``init="cnn"``'s assisted cycle always starts from the CNN's field; its fallback re-inversions follow
        this option.

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
    pyinv.maps.pool.PoolStartError
        The local pool died more than 3 times before computing any pixel (the message says why and what
        to add to a script); finished pixels stay in the checkpoint.

    Notes
    -----
    Pixels whose profiles contain NaN or infinite values are not inverted (status ``STATUS_BAD_INPUT``
    (102), NaN outputs); an exception in the solver gives ``STATUS_FAILED`` (103). The run never stops
    for a pixel. Workers need nothing from ``__main__``: a script without ``if __name__ == "__main__":``
    (or one piped through stdin) works.
    """
    if spatial_psf is not None and (nlte is not None or guess2 is not None or stray_profile is not None):
        raise ValueError("spatial_psf: the coupled inversion takes one LTE component without stray light")
    res = invert_map(cube, lines, grid, config, init=init, guess=guess, mask=mask, sigma=sigma, mu=mu, psf=psf,
                     abundances=abundances, axes=axes, executor=executor, workers=workers, chunk=chunk,
                     checkpoint=checkpoint, progress=progress, time_limit=time_limit, retries=retries,
                     solver=solver_for(nlte), check=check, guess2=guess2, filling=filling,
                     stray_profile=stray_profile, stray_window=stray_window, stray=stray,
                     magnetic_start=magnetic_start)
    if spatial_psf is None:
        return res
    from ..coupled import invert_coupled

    obs = load_cube(cube, axes)[0]
    ck = None if checkpoint is None else os.fspath(checkpoint).rstrip("/\\") + ".coupled"
    return invert_coupled(obs, res, spatial_psf, lines=lines, grid=grid, config=config, psf=psf,
                          abundances=abundances, mu=mu, workers=workers, executor=executor, checkpoint=ck,
                          progress=progress, **(coupled or {}))


def solver_for(nlte: Any) -> Any:
    """The pixel solver of :func:`invert`: ``"pyinv:invert_pixel"``, or with ``nlte`` (a pyinv.nlte backend)
    the DeSIRe-style NLTE inversion (:class:`pyinv.nlte.desire.NlteSolver`)."""
    if nlte is None:
        return "pyinv:invert_pixel"
    from ..nlte.desire import NlteSolver

    if isinstance(nlte, NlteSolver):
        return nlte
    if isinstance(nlte, str):
        raise ValueError("nlte must be a pyinv.nlte backend instance (e.g. pyinv.nlte.make_backend('lightweaver', "
                         "pyinv.nlte.level_map(lines)))")
    return NlteSolver(nlte)


def _is_nlte(solver: Any) -> bool:
    if isinstance(solver, str) or solver is None:
        return False
    from ..nlte.desire import NlteSolver

    return isinstance(solver, NlteSolver)


@_old_stray_keywords
@renamed_keywords
def invert_map(cube: Any, lines: LineList, grid: WavelengthGrid, config: InversionConfig | None, *, init: Any,
               guess: Any, mask: Any, sigma: Any, mu: float | None, psf: Any, abundances: Any, axes: str,
               executor: Any, workers: int | None, chunk: int | None, checkpoint: str | os.PathLike | None,
               progress: Any, time_limit: float | None, retries: int, solver: Any, check: bool = True,
               guess2: Any = None, filling: Any = None, stray_profile: Any = None, stray_window: int | None = None,
               stray: Any = None, magnetic_start: str | None = None) -> InversionResult:
    """:func:`invert` with the pixel solver given (``solver``: ``"module:function"`` or a picklable callable
    with :func:`pyinv.invert_pixel`'s signature, see :class:`pyinv.maps.pixel.InversionPixels`; :func:`invert`
    passes :func:`solver_for` of its ``nlte``) and every option spelled out; the other arguments are
    :func:`invert`'s. Stand-in solvers (tests, benchmarks) run whole maps through it."""
    from ..init import InitContext, get_init

    refuse_in_bootstrap()
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
    stray_profile, stray = _stray_arguments(stray_profile, stray, ny, nx, nwav, config)
    local_stray = isinstance(stray_profile, str) and stray_profile.lower() == "local"
    if stray_window is not None:
        check_stray_window(stray_window)
        if not local_stray:
            raise ValueError(f"stray_window={stray_window!r} is only used with stray_profile='local', got "
                             f"stray_profile={stray_profile!r}")
    if _is_nlte(solver) and (guess2 is not None or stray_profile is not None or filling is not None
                             or stray is not None):
        raise ValueError("a second component (guess2/filling) and stray light (stray_profile/stray) are only "
                         "supported by the LTE solver (nlte=None)")
    snr = np.full((ny, nx), np.nan) if sigma is None else 1.0 / per_pixel_map("sigma", sigma, ny, nx, positive=True)
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
        guess2=guess2, filling=filling, stray_profile=stray_profile,
        stray_window=(DEFAULT_STRAY_WINDOW if stray_window is None else stray_window), stray=stray,
        data=data, grid=grid, config=config, table=gs.table, header=gs.header, gindex=gs.index, valid=valid,
        usable=usable)
    if solver == "pyinv:invert_pixel":  # settings invert_pixel cannot honour: refused once, not per pixel
        from ..physics.inversion import refuse_unsupported

        refuse_unsupported(config, two_components=extras.ncomp == 2)
    wrap = getattr(strategy, "pixel_solver", None)  # e.g. CNNInit's LM options of the assisted cycle
    pixel_solver = solver if wrap is None else wrap(solver)
    if magnetic_start not in (None, "profiles", "guess"):
        raise ValueError(f"magnetic_start must be 'profiles', 'guess' or None, got {magnetic_start!r}")
    start_field = magnetic_start
    if start_field is None and not getattr(strategy, "profile_field_start", False):
        start_field = "guess"     # data-driven or deliberately varied starts are used as given
    from ..physics import inversion as _inv

    if pixel_solver == "pyinv:invert_pixel" and start_field not in (None, _inv.MAGNETIC_START):
        pixel_solver = _inv.InvertPixelWith(magnetic_start=start_field)   # (the default: the solver's name kept)
    problem = InversionPixels(lines=lines, grid=grid, config=config, mu=mu, psf=psf, abundances=abundances,
                              solver=pixel_solver, time_limit=time_limit,
                              ncomp=extras.ncomp, stream=gs.stream)
    flat = data.reshape(ny * nx, 4, nwav)
    snr_flat = np.ascontiguousarray(snr.reshape(-1))
    status0 = np.where(~sel, STATUS_MASKED, np.where(~finite, STATUS_BAD_INPUT, STATUS_PENDING))
    fp = _fingerprints(flat, gs, snr_flat, status0, config, lines, grid, mu, psf, abundances, problem, time_limit)
    if not extras.empty:  # second component and stray light: part of the inputs a checkpoint is made for
        fp["component2_and_stray"] = fingerprint(extras.arrays())

    try:  # temporary folders of runs killed with SIGKILL (owner process gone)
        remove_stale_folders()
    except OSError:  # pragma: no cover
        pass
    tmp = None
    if checkpoint is None:
        tmp = tempfile.mkdtemp(prefix=f"pyinv-store-{owner_tag()}-")  # removed by a later run if we are killed
        store_path = Path(tmp) / "store"
    else:
        store_path = Path(checkpoint)
    try:
        store, resumed = ResultStore.open_or_create(
            store_path, problem.record(), npix=ny * nx, dims=Dims(gs.ndep, nwav, ncyc, problem.naux),
            fingerprint=fp, ncomp=extras.ncomp,
            extra_meta={"created": _dt.datetime.now(_dt.timezone.utc).isoformat(), "shape": [ny, nx],
                        "pyinv_version": PACKAGE_VERSION},
            durable=checkpoint is not None)
        st = store.status
        # masked / bad pixels are final from the start: their outputs keep the store's fill values (those of
        # a blank record), only their status is written (all at once: no page of their outputs is touched)
        for code in (STATUS_MASKED, STATUS_BAD_INPUT):
            ids_code = np.flatnonzero((status0.reshape(-1) == code) & (st == STATUS_PENDING))
            if ids_code.size:
                store.put_many(ids_code, {"status": np.full(ids_code.size, code, np.int32)})
        todo = np.nonzero(st == STATUS_PENDING)[0]
        stats = run_pixels(problem, flat, gs.table, gs.header, gs.index, snr_flat, todo, store,
                           executor=executor, workers=workers, chunk=chunk, progress=progress,
                           retries=retries, extras=None if extras.empty else extras)
        pending = int(np.count_nonzero(store.status == STATUS_PENDING))
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

        prov = {
            "pyinv_version": PACKAGE_VERSION, "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
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
        if problem.nlte:    # the per-pixel backend calls, checks and fallbacks, summed (issue 19)
            prov["nlte"] = nlte_summary({k: grab(k) for k in NLTE_FIELDS})
        res = InversionResult(
            **store.record.result_arrays(grab, (ny, nx)), line_index=np.asarray(grid.line_index).copy(),
            offset_mA=np.asarray(grid.offset_mA, dtype=np.float64).copy(),
            wavelength=np.asarray(grid.wavelength if wl is None else wl, dtype=np.float64).copy(),
            provenance=prov)
        del store, a
        finish = getattr(strategy, "finish", None)
        if finish is not None:
            def rerun(mask_, config_, *, init="single", guess=None):
                ck = None if checkpoint is None else Path(str(checkpoint) + ".fallback")
                m_ = np.asarray(mask_, bool) & sel
                # a handful of pixels: in this process (starting a pool costs more than inverting them)
                ex = "serial" if executor is None and np.count_nonzero(m_) <= FALLBACK_SERIAL_PIXELS else executor
                return invert_map(data, lines, grid, config_, init=init, guess=guess, mask=m_,
                                  sigma=sigma, mu=mu, psf=psf, abundances=abundances, axes="yxsl", executor=ex,
                                  workers=workers, chunk=chunk, checkpoint=ck, progress=progress,
                                  time_limit=time_limit, retries=retries, solver=solver, guess2=guess2,
                                  filling=filling, stray_profile=stray_profile, stray_window=stray_window,
                                  stray=stray, magnetic_start=magnetic_start)
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
    return fingerprints(
        cube=flat, start_models=starts, sigma=snr_flat,
        mask=status0.reshape(-1).astype(np.int32), config=config.to_sir_text(), config_files=files,
        lines=lines, grid=grid, mu=mu, psf=_file_or_value(psf), abundances=_file_or_value(abundances),
        solver=(problem.solver_name(), time_limit), pyinv_version=PACKAGE_VERSION)

