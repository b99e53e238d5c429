"""Plain helpers shared by the test modules (fixtures are in conftest.py). Test modules import from here,
never from each other (issue 18)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pyinv.testing.data import graded_map, thevenin_like_abundances

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
REFERENCE = SHARED / "reference"
DATA = SHARED / "data"


def engine_missing() -> str | None:
    """Why the compiled engine cannot be loaded, or None when it can."""
    import pyinv

    try:
        pyinv.engine.api()
    except ImportError as exc:
        return str(exc) or "engine not built"
    return None


def require_engine() -> None:
    """At module level: skip the whole test module when the compiled engine is not built."""
    why = engine_missing()
    if why is not None:
        pytest.skip(f"engine not built ({why})", allow_module_level=True)


def assert_file_refused(read, path: Path, text: str, match: str) -> None:
    """``read(path)`` of a file holding ``text`` raises a ValueError whose message matches ``match``."""
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        read(path)


#: THEVENIN-like abundances (log ε, H = 12) and the linear N_Z/N_H they give.
AB = thevenin_like_abundances()
EPS = 10.0 ** (AB - 12.0)


def six_pixel_map():
    """Lines, Hinode grid, a one-cycle configuration and a 2×3 cube of quiet-Sun models with graded v and B."""
    import pyinv

    lines, grid, cube = graded_map(2, 3, B=(200.0, 1200.0))
    return lines, grid, pyinv.InversionConfig(cycles=1), cube


#: The stand-in solver of the scheduler tests: a cheap vlos fit that misbehaves on request (pyinv.testing.solvers).
MISBEHAVING_SOLVER = "pyinv.testing.solvers:misbehaving_solver"


def run_map(setup, cube=None, **kw):
    """The map inversion of ``setup`` = (lines, grid, configuration, cube, ...) through the scheduler with a
    stand-in solver (``solver=``, default :data:`MISBEHAVING_SOLVER`; ``config=`` replaces the configuration,
    ``cube=`` the cube; the other keywords those of the map layer's entry point). The solver is a parameter
    of :func:`pyinv.maps.inversion.invert_map` (the engine room of ``pyinv.invert``), not of ``pyinv.invert``."""
    from pyinv.maps.inversion import invert_map

    lines, grid, cfg, c = setup[:4]
    args = dict(init="single", guess=None, mask=None, sigma=None, mu=None, psf=None, abundances=None, axes="yxsl",
                executor=None, workers=2, chunk=None, checkpoint=None, progress=False, time_limit=None, retries=2,
                solver=MISBEHAVING_SOLVER)
    args.update(kw)
    cfg = args.pop("config", cfg)
    return invert_map(c if cube is None else cube, lines, grid, cfg, **args)


def interrupt_run(invert, after: int, checkpoint: Path, **kw) -> int:
    """``invert(checkpoint=checkpoint, progress=..., **kw)`` stopped by a KeyboardInterrupt once ``after`` pixels
    are done (as Ctrl-C would); returns how many pixels the checkpoint holds as done."""
    from pyinv.status import STATUS_PENDING

    def stop(done, total):
        if done >= after:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        invert(checkpoint=checkpoint, progress=stop, **kw)
    return int((np.load(Path(checkpoint) / "status.npy") != STATUS_PENDING).sum())


def worker_killer():
    """A progress callback that SIGKILLs one live pool worker at its first call before the end of the run, and
    the list of the pids it killed."""
    import multiprocessing
    import os
    import signal

    killed: list[int] = []

    def kill_one(done, total):
        if not killed and done < total:
            kids = [p for p in multiprocessing.active_children() if p.is_alive()]
            os.kill(kids[0].pid, signal.SIGKILL)
            killed.append(kids[0].pid)
    return kill_one, killed


def assert_same_results(a, b, fields=("atmospheres", "fits", "chi2", "status", "macro")) -> None:
    """The named arrays of two map results are identical."""
    for k in fields:
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k), err_msg=k)


# ------------------------------------------------------------------ response functions vs finite differences
#: RF key -> model column of the depth-resolved response functions
RF_COLUMNS = {"T": "T", "Pe": "Pe", "vmic": "vmic", "B": "B", "vlos": "vlos", "gamma": "gamma", "phi": "phi"}
#: relative step of the central differences
REL_STEP = 1e-4


def rel_err(an: np.ndarray, fd: np.ndarray, scale: float) -> float:
    """Largest relative error |an - fd| / |an| over the points with |an| >= 1 % of ``scale`` (the
    maximum of that RF over depths, Stokes parameters and wavelengths). A per-Stokes maximum would
    admit second-order RFs (e.g. Stokes I to the azimuth of a nearly vertical field, 1e-3 of the
    Q, U response) where a 1e-4 relative step leaves the finite difference at round-off level.
    Points where only the finite difference is large count too (an analytic RF that is wrongly zero
    must fail), and the scale includes the finite differences."""
    scale = max(float(scale), float(np.abs(fd).max()))
    if scale == 0:
        return 0.0
    big = np.maximum(np.abs(an), np.abs(fd))
    m = big >= 0.01 * scale
    if not m.any():
        return 0.0
    return float((np.abs(an[m] - fd[m]) / big[m]).max())


def rf_fd_worst(rf: dict, cols: dict, syn, depths, keys=None, rel_step: float = REL_STEP) -> dict:
    """Largest relative error (:func:`rel_err`) of the depth RFs ``rf[key]`` against central differences of
    ``syn(columns)`` (profiles of a column dict) at ``depths`` (relative step ``rel_step``), per key of
    ``keys`` (default all)."""
    worst = {}
    for key, col in RF_COLUMNS.items():
        if keys is not None and key not in keys:
            continue
        scale = np.abs(rf[key]).max()
        e = 0.0
        for k in depths:
            x = cols[col][k]
            h = rel_step * abs(x) if x != 0 else rel_step
            c = {kk: v.copy() for kk, v in cols.items()}
            c[col][k] = x + h
            sp = syn(c)
            c[col][k] = x - h
            e = max(e, rel_err(rf[key][k], (sp - syn(c)) / (2 * h), scale))
        worst[key] = e
    return worst


def hsra_two_lines():
    """Fe I 6301.5 / 6302.5 on a 20 mÅ grid and the HSRA (T, Pe, vmic) on log τ 1.2 … −4.0, field-free,
    macroturbulence 0.5 km/s: (lines, grid, atmosphere)."""
    import pyinv

    lines = pyinv.default_lines()
    grid = pyinv.WavelengthGrid.from_regions([(1, -600, 20, 600), (2, -500, 20, 500)], lines)
    atm = pyinv.models.hsra()
    lt = np.round(np.arange(1.2, -4.0 - 1e-9, -0.1), 2)
    cols = {c: np.interp(lt, atm.log_tau[::-1], np.asarray(getattr(atm, c))[::-1]) for c in ("T", "Pe", "vmic")}
    m = pyinv.Atmosphere(log_tau=lt, **cols, B=0.0, vlos=0.0, gamma=0.0, phi=0.0, macro=0.5)
    return lines, grid, m


def hot_magnetic_chromosphere(step: float = 0.1, B: float = 1900.0):
    """A plage-like column (issue 19): the HSRA photosphere, a temperature minimum of 4400 K at log τ ≈ −3 and
    a chromospheric rise to ~13 kK at log τ = −5.3, hydrostatic P_e from 0.1 dyn cm⁻² at the top, a nearly
    longitudinal field ``B`` [G] (γ = 1°), on log τ 1.0 … −5.3 in steps of ``step`` dex. Ca II 8542 is split
    by ~ its Doppler width there: the case where SIR's lower-boundary rule gave Stokes I of −10 I_c."""
    import pyinv

    lt = np.round(np.arange(1.0, -5.3 - 1e-9, -step), 4)
    h = pyinv.models.hsra()
    T = np.interp(-lt, -h.log_tau, h.T)
    T = np.where(lt < -1.0, np.interp(-lt, [-1.0, 3.0], [5400.0, 4400.0]), T)
    T = T + 8500.0 / (1.0 + np.exp((lt + 4.4) / 0.25))
    atm = pyinv.Atmosphere(log_tau=lt, T=T, Pe=1.0, vmic=2e5, B=B, vlos=0.0, gamma=1.0, phi=0.0)
    return pyinv.hydrostatic(atm, top_pe=0.1)


def lightweaver_ca_pixel(dT):
    """A Ca II 8542 pixel observed with Lightweaver (±1.5 Å at 30 mÅ, noise-free, on the engine's continuum
    scale): FAL C on log τ 1.0 … −5.3 (``pyinv.nlte.columns.base_model``) with T + ``dT(log_tau)`` [K],
    v_LOS 1 km/s, B 600 G, γ 50°, φ 20°. Returns (lines, grid, backend, guess: FAL C with B 100 G, γ 45°,
    φ 30°, truth, observation, a 2-cycle configuration with T nodes 2/4). Skips without lightweaver."""
    import warnings

    pytest.importorskip("lightweaver", reason="lightweaver not installed (pip install 'pyinv[nlte]')")
    warnings.simplefilter("ignore")
    import pyinv
    from pyinv import nlte
    from pyinv.nlte import columns as C
    from pyinv.nlte.desire import _convolve_like_synthesis

    lines = pyinv.default_lines()
    grid = pyinv.WavelengthGrid.from_regions([(8, -1500, 30, 1500)], lines)
    be = nlte.Lightweaver(nlte.level_map(lines, [8]), hydrogen="model", prd=False, lte=True)
    base = C.base_model()
    lt = np.asarray(base.log_tau)
    truth = pyinv.hydrostatic(base.with_columns(T=np.asarray(base.T) + dT(lt), vlos=1e5, B=600.0, gamma=50.0,
                                                phi=20.0))
    rt = be.synthesize(truth, nlte.grid_vacuum_nm(lines, grid))
    lte = pyinv.synthesize(truth, lines, grid, convolve=False)
    obs = _convolve_like_synthesis(rt.stokes * (lte[0, [0, -1]].sum() / rt.stokes_lte[0, [0, -1]].sum()), lines,
                                   grid, 0.0, None)
    cfg = pyinv.InversionConfig(cycles=2, nodes={"T": (2, 4), "vlos": (1, 1), "B": (1, 1), "gamma": (1, 1),
                                                 "phi": (1, 1), "vmic": (1, 1)}, weights=(1, 1, 1, 1), snr=1000.0)
    return lines, grid, be, base.with_columns(B=100.0, gamma=45.0, phi=30.0), truth, obs, cfg
