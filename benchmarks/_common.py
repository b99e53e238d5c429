"""What the benchmark scripts share (issue 18); not a benchmark itself.

The scripts run as ``python benchmarks/SCRIPT.py`` (Python puts benchmarks/ first on sys.path), so they
import this module as ``_common``; no script imports another script. Nothing here imports numpy or pyinv
at module level: :func:`pin_threads` must be able to run before numpy is imported.

* paths: ``ROOT`` (the repository), ``SHARED`` / ``REF`` / ``DATA`` (the reference data read in place from
  ../shared), ``RESULTS`` (benchmarks/results, where result files are written);
* :func:`code_version`: the commit stamp of result files;
* :func:`pin_threads`: one thread per process for OpenMP / BLAS;
* :class:`Worker`, :func:`baseline_root`: two pyinv installations side by side (``_engine_worker.py``);
* :func:`load_sir_problem`: an ``invert_hinode``-like reference file with its lines, grid, configuration;
* SIR and ``pyinv sir``: :func:`write_sir_grid`, :func:`sir_runner` (a SIR executable, ``SIR_X``),
  :func:`run_dropin_case` (a reference set through ``pyinv sir`` per pixel);
* :func:`hinode_5x5_sample`: the 25 real Hinode SP spectra of ../shared/data/hinode_sp_5x5_globin;
* :func:`transfer_maps`, :func:`truth_correlations`: the CNN transfer maps of issue 12 and their scores;
* bench_desire's synthetic NLTE pixels (issues 11, 19; ``bench_desire.py``, ``bench_desire_information.py``):
  :data:`REGIONS`, :data:`NOVEL_KINDS`, :func:`case_setup`, :func:`perturbation`, :func:`truth_model`,
  :func:`observed`, :func:`make_backend`.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
REF = SHARED / "reference"
DATA = SHARED / "data"
RESULTS = ROOT / "benchmarks" / "results"
WORKER = Path(__file__).with_name("_engine_worker.py")


# ----------------------------------------------------------------------------------- stamps, threads
def code_version() -> dict:
    """The commit of this checkout and whether the working tree differs from it (for result files)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                    capture_output=True, text=True, check=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": dirty}


class Sampler:
    """A background thread calling ``self.sample()`` every ``period`` seconds while the ``with`` block runs
    (memory samplers of the benchmarks); ``finish()`` runs once after the thread has stopped."""

    period = 0.5

    def sample(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def finish(self) -> None:
        pass

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.period)

    def __enter__(self):
        import threading

        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.finish()


def lightweaver_missing() -> bool:
    """True (and a line saying so) when lightweaver is not installed: the NLTE benchmarks have nothing to do."""
    try:
        import lightweaver  # noqa: F401
    except ImportError:
        print("lightweaver is not installed (pip install '.[nlte]'); nothing to do")
        return True
    return False


def pin_threads(variables=("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")) -> None:
    """One thread per process (unless the environment says otherwise); call it before numpy is imported."""
    for v in variables:
        os.environ.setdefault(v, "1")


# ----------------------------------------------------------------------------------- side by side
class Worker:
    """One worker process (``_engine_worker.py``) of a pyinv installation: a folder holding ``src/`` and
    ``build/dev/site`` (tools/devbuild.sh, or tools/build_baseline.sh for another commit), or ``None`` for
    the one this interpreter imports. ``ask(request)`` sends a JSON request and returns the JSON answer;
    two workers asked in turn see the same machine load."""

    def __init__(self, root: Path | None, name: str):
        env = dict(os.environ)
        if root is not None:
            root = Path(root).resolve()
            env["PYTHONPATH"] = os.pathsep.join([str(root / "build" / "dev" / "site"), str(root / "src")])
        self.name = name
        self.proc = subprocess.Popen([sys.executable, str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env, cwd=str(ROOT))

    def ask(self, req: dict) -> dict:
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name}: worker ended (exit {self.proc.wait()})")
        return json.loads(line)

    def close(self) -> None:
        try:
            self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
            self.proc.stdin.close()
        except OSError:
            pass
        self.proc.wait(timeout=30)


def baseline_root() -> Path | None:
    """The baseline installation named by PYINV_BASELINE (a folder from tools/build_baseline.sh), or
    build/baseline-ccb99ce when it exists."""
    env = os.environ.get("PYINV_BASELINE")
    if env:
        return Path(env)
    p = ROOT / "build" / "baseline-ccb99ce"
    return p if (p / "build" / "dev" / "site").is_dir() else None


# ----------------------------------------------------------------------------------- reference problems
def load_sir_problem(ref: Path, name: str = "invert_hinode.npz") -> dict:
    """A reference file of SIR inversions (``invert_hinode.npz``, ``invert_hinode_200.npz``) and what
    invert_pixel needs for it: ``d`` (the file), ``lines``, ``grid``, ``ab``, ``cfg`` (SIR's control text),
    ``guess`` (SIR's start), ``w`` (Stokes weights), ``noise``."""
    import numpy as np

    from pyinv.atmosphere import Atmosphere
    from pyinv.config import InversionConfig
    from pyinv.io.sir import read_abundances
    from pyinv.lines import LineList, WavelengthGrid

    ref = Path(ref)
    d = np.load(ref / name)
    lines = LineList.read_sir(ref / "LINES_REF")
    return {"d": d, "lines": lines,
            "grid": WavelengthGrid.from_regions([tuple(r) for r in json.loads(str(d["regions"]))], lines),
            "ab": read_abundances(ref / "THEVENIN"), "cfg": InversionConfig.from_sir_text(str(d["sir_trol"])),
            "guess": Atmosphere.from_array(d["guess_model"], macro=float(d["guess_macro"])),
            "w": np.asarray(d["weights"], float), "noise": float(d["noise"])}


def chi2n(obs, fit, w, noise: float) -> float:
    """χ²ₙ = mean over Stokes and wavelengths of w (observed − fit)² / noise²."""
    import numpy as np

    return float(np.mean(np.asarray(w)[:, None] * (np.asarray(obs) - np.asarray(fit)) ** 2) / noise ** 2)


# ----------------------------------------------------------------------------------- SIR, pyinv sir
def write_sir_grid(path: Path, regions) -> None:
    """A SIR wavelength-grid file of ``regions`` (indices, first, step, last in mÅ)."""
    with open(path, "w") as fh:
        fh.write("IMPORTANT: a) All items must be separated by commas.\n"
                 "           b) The first six characters of the last line\n"
                 "          in the header (if any) must contain the symbol ---\n"
                 "Line and blends indices   :   Initial lambda     Step     Final lambda\n"
                 "(in this order)                    (mA)          (mA)         (mA)\n"
                 "-----------------------------------------------------------------------\n")
        for r in regions:
            fh.write(f"{r[0]}   :   {float(r[1])}, {float(r[2])}, {float(r[3])}\n")


def sir_runner(ref: Path, d):
    """A function timing SIR (the executable ``SIR_X``) on pixel i of the reference file ``d`` (its
    configuration and start model), or None without SIR_X."""
    exe = os.environ.get("SIR_X")
    if not exe:
        return None
    from pyinv.atmosphere import Atmosphere
    from pyinv.io.sir import write_sir_model, write_sir_profiles

    work = Path(tempfile.mkdtemp(prefix="pyinv-sir-"))
    for f in ("LINES_REF", "THEVENIN"):
        shutil.copy(ref / f, work / f)
    write_sir_grid(work / "grid.grid", json.loads(str(d["regions"])))
    write_sir_model(work / "g.mod", Atmosphere.from_array(d["guess_model"], macro=float(d["guess_macro"])))
    (work / "sir.trol").write_text(str(d["sir_trol"]))

    def run(i: int) -> float:
        write_sir_profiles(work / "obs.per", d["line_index"], d["offset_mA"], d["observed"][i])
        t0 = time.perf_counter()
        subprocess.run([exe], input="sir.trol\n", text=True, cwd=work, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=False)
        return time.perf_counter() - t0
    return run


def pyinv_sir(trol: Path, extra_args=()) -> tuple[int, str, float]:
    """``pyinv sir trol`` in trol's folder (the interpreter and PYTHONPATH of this process): exit status,
    last line of stderr, seconds."""
    env = dict(os.environ)
    if env.get("PYTHONPATH"):  # relative entries (a development build) must survive the change of folder
        env["PYTHONPATH"] = os.pathsep.join(str(Path(p).resolve()) for p in env["PYTHONPATH"].split(os.pathsep) if p)
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "pyinv.cli", "sir", trol.name, *extra_args], cwd=trol.parent,
                       capture_output=True, text=True, env=env)
    return p.returncode, (p.stderr.strip().splitlines() or [""])[-1], time.perf_counter() - t0


DROPIN_CASES = {"invert_stray": "stray", "invert_twocomp": "twocomp"}


def run_dropin_case(name: str, ref: Path, pixels, work: Path, extra_args=()) -> dict:
    """One reference set (``invert_stray`` / ``invert_twocomp``) through ``pyinv sir`` per pixel: the inputs
    laid out in ``work`` as the reference README says, χ²ₙ of the fit against SIR's, the recovered α / f₂
    beside the truth and SIR's; printed and returned (``extra_args``: more CLI flags, e.g.
    ``("--pyinv-rules",)``)."""
    import numpy as np

    from pyinv.atmosphere import Atmosphere
    from pyinv.io.sir import read_sir_model, read_sir_profiles, write_sir_model, write_sir_profiles

    d = np.load(ref / f"{name}.npz")
    kind = DROPIN_CASES[name]
    w = np.asarray(d["weights"], float)
    noise = float(d["noise"])
    regions = json.loads(str(d["regions"]))
    macro = float(d["guess_macro"])
    if kind == "stray":
        g1, g2 = d["guess_model"], None
        f2_guess, alpha_guess = None, float(d["guess_stray_percent"])
        truth, sir_val = np.asarray(d["truth_stray_percent"]), np.asarray(d["sir_header"])[:, 2]
        label = "alpha [%]"
    else:
        g1, g2 = d["guess_model1"], d["guess_model2"]
        f2_guess, alpha_guess = float(d["guess_filling2"]), 0.0
        truth, sir_val = np.asarray(d["truth_filling2"]), np.asarray(d["sir_header2"])[:, 1]
        label = "f2"
    idx = range(d["observed"].shape[0]) if pixels is None else pixels
    print(f"\n{name}: pyinv sir run.trol per pixel ({label}: recovered / truth / SIR's)")
    print(" pix   chi2n pyinv   chi2n SIR    ratio   " + f"{label:>9s} pyinv    truth      SIR    seconds")
    rows = []
    for i in idx:
        pdir = work / name / f"pix{i:02d}"
        pdir.mkdir(parents=True)
        for f in ("LINES_REF", "THEVENIN"):
            shutil.copy(ref / f, pdir / f)
        write_sir_grid(pdir / "grid.grid", regions)
        write_sir_profiles(pdir / "obs.per", d["line_index"], d["offset_mA"], d["observed"][i])
        if kind == "stray":
            write_sir_profiles(pdir / "stray.per", d["line_index"], d["offset_mA"], d["stray_stokes"])
            write_sir_model(pdir / "m1.mod", Atmosphere.from_array(g1, macro=macro, filling=1.0, stray=alpha_guess))
        else:
            write_sir_model(pdir / "m1.mod", Atmosphere.from_array(g1, macro=macro, filling=1.0 - f2_guess, stray=0.0))
            write_sir_model(pdir / "m2.mod", Atmosphere.from_array(g2, macro=macro, filling=f2_guess, stray=0.0))
        (pdir / "run.trol").write_text(str(d["control"]))
        rc, msg, sec = pyinv_sir(pdir / "run.trol", extra_args)
        sir_c = chi2n(d["observed"][i], d["sir_fit"][i], w, noise)
        row = {"pixel": int(i), "rc": rc, "seconds": sec, "chi2n_sir": sir_c, "truth": float(truth[i]),
               "sir": float(sir_val[i])}
        if rc != 0 or not (pdir / "m1_2.per").is_file():
            row["error"] = msg
            print(f" {i:3d}   failed (exit {rc}): {msg}")
            rows.append(row)
            continue
        fit = read_sir_profiles(pdir / "m1_2.per").stokes
        ours = chi2n(d["observed"][i], fit, w, noise)
        if kind == "stray":
            rec = float(read_sir_model(pdir / "m1_2.mod").stray)
        else:
            rec = float(read_sir_model(pdir / "m2_2.mod").filling)
        row.update(chi2n=ours, ratio=ours / sir_c, recovered=rec)
        rows.append(row)
        print(f" {i:3d}  {ours:11.4f}  {sir_c:11.4f}  {ours / sir_c:7.3f}   {rec:11.4f} {truth[i]:9.4f} "
              f"{sir_val[i]:9.4f}  {sec:7.2f}")
    ok = [r for r in rows if "ratio" in r]
    npass = sum(r["ratio"] <= 1.05 for r in ok)
    print(f"{name}: ratio <= 1.05 on {npass}/{len(rows)} pixels (criterion: >= 9/10); "
          f"{len(rows) - len(ok)} runs failed")
    if ok:
        err_ours = np.median([abs(r["recovered"] - r["truth"]) for r in ok])
        err_sir = np.median([abs(r["sir"] - r["truth"]) for r in ok])
        print(f"{name}: median |{label} - truth|: pyinv {err_ours:.4f}, SIR {err_sir:.4f}")
    return {"pixels": rows, "n_pass": int(npass), "n_pixels": len(rows), "n_failed": len(rows) - len(ok)}


# ----------------------------------------------------------------------------------- real Hinode sample
HINODE_5X5 = DATA / "hinode_sp_5x5_globin"
HINODE_5X5_FITS = HINODE_5X5 / "hinode4d.20130912.sample.fits"


def hinode_5x5_sample():
    """The 25 Hinode SP quiet-Sun spectra: (counts (x, y, 4, 112), wavelengths [Å], the file's IC_HSRA), or
    None (and a message printed) when ../shared/data is not there."""
    import numpy as np

    if not HINODE_5X5_FITS.is_file():
        print(f"data not found in {HINODE_5X5}; nothing to do")
        return None
    from astropy.io import fits

    with fits.open(HINODE_5X5_FITS) as h:
        raw = np.asarray(h[0].data, dtype=np.float64)            # (x, y, 4, 112) counts
        wl = np.asarray(h[1].data, dtype=np.float64).ravel()
        ic = float(h[2].header["IC_HSRA"])
    return raw, wl, ic


# ----------------------------------------------------------------------------------- CNN transfer maps
def transfer_maps(n: int, seed: int, inst: dict, only: str | None = None) -> dict:
    """The transfer maps (never in a training recipe): generator factories by name, seeds seed..seed+4 — the
    four of issue 12 and ``quietplage_mu1`` (issue 17's third family, :func:`pyinv.synthetic.generate_quiet_plage`,
    never used for training or tuning); ``only`` a comma-separated subset of the names."""
    from pyinv.synthetic import generate_emerging_region, generate_map, generate_quiet_plage

    maps = {"sunspot_mu1": lambda: generate_map(n, seed, mu=1.0, **inst),
            "sunspot_mu0.77": lambda: generate_map(n, seed + 1, mu=0.77, **inst),
            "sunspot_mu0.5": lambda: generate_map(n, seed + 2, mu=0.5, **inst),
            "emerging_mu1": lambda: generate_emerging_region(n, seed + 3, mu=1.0, **inst),
            "quietplage_mu1": lambda: generate_quiet_plage(n, seed + 4, mu=1.0, **inst)}
    if only:
        maps = {k: v for k, v in maps.items() if k in only.split(",")}
    return maps


def _corr_mask(a, b, sel):
    import numpy as np

    a, b = np.ravel(a), np.ravel(b)
    ok = np.isfinite(a) & np.isfinite(b) & np.ravel(sel)
    if ok.sum() < 3 or np.std(a[ok]) == 0 or np.std(b[ok]) == 0:
        return float("nan")
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def truth_correlations(q: dict, truth: dict, b_min: float = 300.0) -> dict:
    """Correlations with the truth (issue 12): T, v, B on all pixels; inclination where the true B > 300 G;
    cos 2φ, sin 2φ where the true transverse field > 300 G."""
    import numpy as np

    allp = np.ones(np.shape(truth["T"]), bool)
    strong = truth["B"] > b_min
    trans = truth["Bt"] > b_min
    return {"T": _corr_mask(q["T"], truth["T"], allp), "v": _corr_mask(q["v"], truth["v"], allp),
            "B": _corr_mask(q["B"], truth["B"], allp), "inc": _corr_mask(q["inc"], truth["inc"], strong),
            "azi_cos2": _corr_mask(q["azi_cos2"], truth["azi_cos2"], trans),
            "azi_sin2": _corr_mask(q["azi_sin2"], truth["azi_sin2"], trans)}


# --------------------------------------------------------------- bench_desire's synthetic pixels (issues 11, 19)
#: the wavelength regions of each case (SIR index or "i,j", first offset, step, last offset [mÅ])
REGIONS = {"ca": [(8, -1500, 30, 1500)], "unseen": [(8, -1500, 30, 1500)], "novel": [(8, -1500, 30, 1500)],
           "joint": [("1,2", -400, 20, 1400), (8, -1500, 30, 1500)]}
#: the kinds of pixel of the ``novel`` case, in turn
NOVEL_KINDS = ("cold chromosphere", "warm chromosphere", "plateau", "T-min offset", "deep heating")


def make_backend(name: str, lines):
    """The backend ``name`` (``"rh"``: RH 2 via ``PYINV_RH_DIR``; otherwise Lightweaver, hydrogen from the
    model, PRD off) with Ca II 8542 (SIR index 8) mapped, LTE profiles on."""
    from pyinv import nlte

    lm = nlte.level_map(lines, [8])
    if name == "rh":
        return nlte.RH(lm, lte=True)
    return nlte.Lightweaver(lm, hydrogen="model", prd=False, lte=True)


def novel_perturbation(lt: np.ndarray, rng: np.random.Generator, p: int, T0: np.ndarray) -> tuple[dict, str]:
    """The ``novel`` case (bench_desire.py's docstring): T change [K] from the start's T ``T0`` [K] (FAL C), v_los [cm/s],
    B [G], γ, φ [deg] of pixel ``p``, and its kind (:data:`NOVEL_KINDS`, in turn)."""
    import numpy as np

    kind = NOVEL_KINDS[p % len(NOVEL_KINDS)]

    def step(x0, w):                                        # 1 above x0, 0 below
        return 1.0 / (1.0 + np.exp((lt - x0) / w))

    if kind in ("cold chromosphere", "warm chromosphere"):  # training bumps: <= 700 K, <= 0.8 dex wide
        x0 = rng.uniform(-4.0, -3.3) if kind.startswith("cold") else rng.uniform(-5.0, -4.5)
        dT = (-1.0 if kind.startswith("cold") else 1.0) * rng.uniform(500.0, 800.0) \
            * np.exp(-0.5 * ((lt - x0) / rng.uniform(0.9, 1.2)) ** 2)
    elif kind == "plateau":                                 # knee, then a gradient lowered (softplus ramp)
        x0, w = rng.uniform(-4.5, -4.3), 0.2
        dT = -rng.uniform(1200.0, 1500.0) * w * np.log1p(np.exp((x0 - lt) / w))
    elif kind == "T-min offset":                            # training: +-300 K
        dT = (1.0 if (p // len(NOVEL_KINDS)) % 2 == 0 else -1.0) * rng.uniform(450.0, 650.0) * step(-2.5, 0.3)
    else:                                                   # deep heating
        dT = rng.uniform(350.0, 550.0) * step(rng.uniform(-3.1, -2.8), 0.25)
    v = rng.uniform(-2e5, 2e5) + rng.uniform(-1e5, 1e5) * (lt + 2.0) / 3.0
    B = rng.uniform(0, 1500) * (1.0 + 0.1 * (lt + 2.0) / 3.0)
    return {"dT": np.maximum(T0 + dT, 3000.0) - T0, "v": v, "B": np.maximum(B, 1.0), "gamma": rng.uniform(5, 175),
            "phi": rng.uniform(0, 180)}, kind


def perturbation(case: str, lt: np.ndarray, rng: np.random.Generator, p: int,
                 T0: np.ndarray | None = None) -> tuple[dict, str]:
    """T change [K], v_los [cm/s], B [G], γ, φ [deg] of pixel ``p`` on the log τ grid ``lt``, and its kind
    (``T0``: the start's T [K], for the ``novel`` case)."""
    import numpy as np

    def g(x0, w):
        return np.exp(-((lt - x0) / w) ** 2)

    up = 1.0 / (1.0 + np.exp((lt + 3.0) / 0.3))            # 1 above log tau = -3
    if case == "novel":
        return novel_perturbation(lt, rng, p, T0)
    if case in ("ca", "joint"):
        dT = rng.uniform(-300, 300) * up
        v = rng.uniform(-2e5, 2e5) + rng.uniform(-1e5, 1e5) * (lt + 2.0) / 3.0
        B0 = rng.uniform(0, 1500)
        if case == "ca":
            B = B0 * (1.0 + 0.1 * (lt + 2.0) / 3.0)
            kind = "family"
        else:                                               # B(-4) / B(-1) between 0.7 and 1.3
            B = B0 * (1.0 + rng.uniform(-0.3, 0.3) * np.clip(-(lt + 1.0) / 3.0, -0.5, 1.4))
            kind = "family+Bgrad"
    else:
        kind = ("double bump", "TR-like rise", "v gradient")[p % 3]
        dT, v = np.zeros_like(lt), np.full_like(lt, rng.uniform(-5e4, 5e4))
        if kind == "double bump":
            dT = rng.choice([-1, 1]) * rng.uniform(250, 500) * g(rng.uniform(-3.8, -3.2), 0.3) \
                + rng.choice([-1, 1]) * rng.uniform(250, 500) * g(rng.uniform(-5.2, -4.8), 0.25)
        elif kind == "TR-like rise":
            x0 = rng.uniform(-5.0, -4.6)
            dT = rng.uniform(2000, 5000) / (1.0 + np.exp((lt - x0) / 0.06))
        else:
            s = rng.choice([-1, 1]) * rng.uniform(5e5, 8e5)
            v = v + s * np.clip(-(lt + 2.0) / 3.3, 0.0, 1.0) ** 1.5
        B = rng.uniform(0, 1000) * np.ones_like(lt)
    return {"dT": dT, "v": v, "B": np.maximum(B, 1.0), "gamma": rng.uniform(5, 175), "phi": rng.uniform(0, 180)}, kind


def truth_model(base, pert: dict):
    """The true atmosphere of a pixel: the start ``base`` with the perturbation of :func:`perturbation`,
    hydrostatic."""
    import numpy as np

    import pyinv

    return pyinv.hydrostatic(base.with_columns(T=np.asarray(base.T) + pert["dT"], vlos=pert["v"], B=pert["B"],
                                               gamma=pert["gamma"], phi=pert["phi"]))


def observed(r, model, lines, grid, regs) -> np.ndarray:
    """A backend's NLTE profiles ``r`` of ``model`` as observations on the engine's grid (noise-free): each
    region on the engine's continuum scale (:func:`pyinv.nlte.desire.on_engine_scale`), no spectral PSF."""
    import numpy as np

    import pyinv
    from pyinv.nlte.desire import _convolve_like_synthesis, on_engine_scale

    lte = pyinv.synthesize(model, lines, grid, convolve=False)
    return _convolve_like_synthesis(on_engine_scale(r, lte, regs, lte), lines, grid, 0.0, None)


def case_setup(case: str):
    """The common set-up of a case: (lines, grid, NLTE regions, their vacuum wavelengths [nm], the Lightweaver
    backend, the log τ grid, the start: FAL C from Lightweaver's tables, hydrostatic, with B 100 G, γ 45°,
    φ 30° — relative parameters need nonzero starts)."""
    import warnings

    import numpy as np

    import pyinv
    from pyinv import nlte
    from pyinv.nlte.desire import nlte_regions
    from pyinv.nlte.lw import falc_column

    warnings.simplefilter("ignore")
    col = falc_column()   # FAL C from Lightweaver's tables
    lines = pyinv.default_lines()
    grid = pyinv.WavelengthGrid.from_regions(REGIONS[case], lines)
    regs = nlte_regions(grid, nlte.level_map(lines, [8]))
    wl = nlte.grid_vacuum_nm(lines, grid)[np.concatenate(regs)]
    lw = make_backend("lightweaver", lines)
    r0 = lw.synthesize(col, wl)
    lt = np.round(np.arange(1.0, -5.3 - 1e-9, -0.1), 2)
    base = nlte.atmosphere_from_column(col, r0.tau500, lt, hydrostatic=True)
    return lines, grid, regs, wl, lw, lt, base.with_columns(B=100.0, gamma=45.0, phi=30.0)
