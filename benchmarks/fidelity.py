"""Fidelity of pyinv's defaults against SIR on data the defaults were not tuned on (issue 17).

Sets (all read in place from ../shared):

* ``hinode20``   — ``reference/invert_hinode.npz``: 20 synthetic Hinode SP pixels, SIR's 3-cycle inversion.
* ``hinode200``  — ``reference/invert_hinode_200.npz``: 200 pixels of another seed, same configuration.
  **Tuning half: the even-indexed pixels; the odd-indexed ones are reported separately (held out).**
* ``real300``    — ``reference/real_sunspot_sir_dev300.npz``: 300 real Hinode SP sunspot pixels (I and V of
  Fe I 6301.5), SIR's 2-cycle inversion. Tuning half: even-indexed pixels; odd reported separately.
* ``stray`` / ``twocomp`` — ``invert_stray.npz`` / ``invert_twocomp.npz`` through ``pyinv sir`` (a SIR
  control file and its files in a temporary folder, as the reference README lays them out).
* ``spinor25``   — ``data/hinode_sp_5x5_globin``: 25 real quiet-Sun pixels (Stokes I) against SPINOR.

Per set: parity fraction (χ²ₙ, or SIR's merit for the real set, ≤ 1.05 × SIR's), median and p90 of the
ratio, s/pixel (wall, one core per worker); for the real sets the B_los (= B cos γ) correlation at
log τ = 0 with SIR's (SPINOR's: T and v_LOS, the field is not inverted there). With ``SIR_X`` (a SIR
executable built outside the project) the ``speed`` section times SIR and pyinv side by side, interleaved,
on 40 pixels of ``invert_hinode_200`` (one process each), and prints the v2 defaults' ratio in the same run.

    PYTHONPATH=build/dev/site:src python benchmarks/fidelity.py [--sets hinode200 real300] [--workers 2]
        [--kw '{"rtol": 0, "jacobian_reuse": 0}'] [--json out.json]

Writes benchmarks/results/fidelity.{json,txt} (with the commit) unless --json/--no-save say otherwise.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from _common import REF, RESULTS, chi2n, code_version, load_sir_problem, pin_threads, run_dropin_case, sir_runner

pin_threads()
import numpy as np  # noqa: E402

# ------------------------------------------------------------------------------------------- problems
_P: dict = {}


def _load(name: str) -> dict:
    """The inputs of one set (cached per process)."""
    if name in _P:
        return _P[name]
    from pyinv.atmosphere import Atmosphere
    from pyinv.config import InversionConfig
    from pyinv.io.sir import read_abundances
    from pyinv.lines import LineList, WavelengthGrid

    if name in ("hinode20", "hinode200"):
        q = load_sir_problem(REF, "invert_hinode.npz" if name == "hinode20" else "invert_hinode_200.npz")
        d, lines, grid, cfg, guess, ab, w, noise = (q[k] for k in ("d", "lines", "grid", "cfg", "guess", "ab", "w",
                                                                   "noise"))
        obs = np.asarray(d["observed"])
        sir_merit = np.array([chi2n(obs[i], d["sir_fit"][i], w, noise) for i in range(len(obs))])
        p = dict(obs=obs, lines=lines, grid=grid, cfg=cfg, guess=guess, ab=ab, w=w, noise=noise,
                 sir_merit=sir_merit, sir_seconds=np.asarray(d["sir_seconds"]), sir_models=np.asarray(d["sir_models"]),
                 truth=np.asarray(d["truth_models"]), family=np.asarray(d["family"]))
    elif name == "real300":
        lines = LineList.read_sir(REF / "LINES_REF")
        ab = read_abundances(REF / "THEVENIN")
        d = np.load(REF / "real_sunspot_sir_dev300.npz")
        line1 = lines.subset([1])     # Fe I 6301.5 alone
        grid = WavelengthGrid.from_regions([tuple(r) for r in json.loads(str(d["regions"]))], line1)
        nodes = json.loads(str(d["nodes"]))
        keys = {"nt": "T", "nv": "vlos", "nb": "B", "ng": "gamma", "nf": "phi", "nmic": "vmic", "nmac": "macro"}
        ncyc = max(len(v.split(",")) for v in nodes.values() if v)
        nd = {keys[k]: tuple(int(x) for x in v.split(",")) for k, v in nodes.items() if v}
        w = np.asarray(d["weights"], float)
        cfg = InversionConfig(cycles=ncyc, nodes=nd, weights=tuple(w), snr=1000.0)
        guess = Atmosphere.from_array(d["guess_model"], macro=0.8)
        nI, nV = np.asarray(d["observed_I"]), np.asarray(d["observed_V"])
        obs = np.zeros((len(nI), 4, nI.shape[1]))
        obs[:, 0], obs[:, 3] = nI, nV
        sir_merit = w[0] * np.mean((nI - d["sir_fit_I"]) ** 2, axis=1) + w[3] * np.mean((nV - d["sir_fit_V"]) ** 2, axis=1)
        p = dict(obs=obs, lines=line1, grid=grid, cfg=cfg, guess=guess, ab=ab, w=w, noise=None,
                 sir_merit=sir_merit, sir_seconds=np.asarray(d["sir_seconds"]), sir_models=np.asarray(d["sir_models"]),
                 bpar_wfa=np.asarray(d["bpar_wfa"]))
    else:
        raise ValueError(name)
    _P[name] = p
    return p


def _merit(p: dict, i: int, fit: np.ndarray) -> float:
    """χ²ₙ (synthetic sets) or SIR's merit w_I rms(ΔI)² + w_V rms(ΔV)² (real set) of a fit."""
    obs = p["obs"][i]
    if p["noise"] is None:
        w = p["w"]
        return float(w[0] * np.mean((obs[0] - fit[0]) ** 2) + w[3] * np.mean((obs[3] - fit[3]) ** 2))
    return chi2n(obs, fit, p["w"], p["noise"])


def _k0(log_tau: np.ndarray) -> int:
    return int(np.argmin(np.abs(np.asarray(log_tau))))


def invert_one(args: tuple) -> dict:
    """Invert pixel i of a set with invert_pixel(**kw); wall/CPU seconds, merit, B_los(τ=1), status."""
    name, i, kw = args
    import dataclasses

    import pyinv

    p = _load(name)
    kw = dict(kw)
    cfg = p["cfg"]
    if "config" in kw:      # InversionConfig fields replaced for this run (exploration)
        cfg = dataclasses.replace(cfg, **kw.pop("config"))
    t0, c0 = time.perf_counter(), time.process_time()
    r = pyinv.invert_pixel(p["obs"][i], p["guess"], p["lines"], p["grid"], cfg, abundances=p["ab"], **kw)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    a = r.atmosphere
    k = _k0(a.log_tau)
    out = {"pixel": int(i), "wall": wall, "cpu": cpu, "merit": _merit(p, i, r.fit), "status": int(r.status),
           "iterations": [int(x) for x in r.iterations], "syntheses": int(r.syntheses),
           "blos0": float(a.B[k] * np.cos(np.radians(a.gamma[k]))), "T0": float(a.T[k]),
           "vlos0": float(a.vlos[k])}
    out["chi2"] = float(r.chi2[-1]) if r.chi2.size else float("nan")
    out["rescue"] = int(getattr(r, "rescue", 0))
    out["chi2_reduced"] = float(getattr(r, "chi2_reduced", float("nan")))
    return out


def summarise(name: str, rows: list[dict]) -> dict:
    p = _load(name)
    idx = np.array([r["pixel"] for r in rows])
    ratio = np.array([r["merit"] for r in rows]) / p["sir_merit"][idx]
    secs = np.array([r["wall"] for r in rows])
    s = {"n": len(rows), "parity": float(np.mean(ratio <= 1.05)), "parity_count": int(np.sum(ratio <= 1.05)),
         "ratio_median": float(np.median(ratio)), "ratio_p90": float(np.percentile(ratio, 90)),
         "s_per_pixel": float(secs.mean()), "sir_s_per_pixel_quoted": float(p["sir_seconds"][idx].mean()),
         "status_nonzero": int(sum(r["status"] != 0 for r in rows))}
    s["rescue_tried"] = int(sum(r.get("rescue", 0) > 0 for r in rows))
    s["rescue_taken"] = int(sum(r.get("rescue", 0) == 2 for r in rows))
    sm = p["sir_models"][idx]
    k = _k0(sm[0, :, 0])
    if name == "real300":
        b_sir = sm[:, k, 4] * np.cos(np.radians(sm[:, k, 6]))
        b_ours = np.array([r["blos0"] for r in rows])
        s["blos_corr_sir"] = float(np.corrcoef(b_ours, b_sir)[0, 1])
        s["blos_corr_wfa"] = float(np.corrcoef(b_ours, p["bpar_wfa"][idx])[0, 1])
        s["sir_blos_corr_wfa"] = float(np.corrcoef(b_sir, p["bpar_wfa"][idx])[0, 1])
        # where the two B_los disagree most: whose fit is better there, and whose B_los is nearer the
        # weak-field estimate; and the correlation over the pixels whose two fits are equally good
        top = np.argsort(-np.abs(b_ours - b_sir))[:10]
        wfa = p["bpar_wfa"][idx]
        s["blos_top10_ours_better_fit"] = int(np.sum(ratio[top] < 1.0))
        s["blos_top10_merit_ratio_median"] = float(np.median(ratio[top]))
        s["blos_top10_ours_nearer_wfa"] = int(np.sum(np.abs(b_ours[top] - wfa[top]) < np.abs(b_sir[top] - wfa[top])))
        same = (ratio > 1 / 1.05) & (ratio < 1.05)
        s["blos_corr_sir_equal_fits"] = float(np.corrcoef(b_ours[same], b_sir[same])[0, 1]) if same.sum() > 2 \
            else float("nan")
        s["equal_fits"] = int(same.sum())
    return s


def run_set(name: str, pixels, kw: dict, workers: int) -> list[dict]:
    import multiprocessing as mp

    jobs = [(name, int(i), kw) for i in pixels]
    if workers <= 1:
        return [invert_one(j) for j in jobs]
    with mp.get_context("fork").Pool(workers) as pool:
        return list(pool.imap(invert_one, jobs, chunksize=1))


def run_sir_sets(names, pyinv_rules: bool) -> dict:
    """invert_stray / invert_twocomp through ``pyinv sir`` (as sir_dropin.py: _common.run_dropin_case), per
    pixel."""
    import shutil
    import tempfile

    out = {}
    work = Path(tempfile.mkdtemp(prefix="pyinv-fidelity-"))
    try:
        for name in names:
            t0 = time.perf_counter()
            r = run_dropin_case(name, REF, None, work / ("pyinv" if pyinv_rules else "sir"),
                                    ("--pyinv-rules",) if pyinv_rules else ())
            ok = [x for x in r["pixels"] if "ratio" in x]
            ratio = np.array([x["ratio"] for x in ok]) if ok else np.array([np.nan])
            r.update(parity_count=r["n_pass"], n=r["n_pixels"], ratio_median=float(np.median(ratio)),
                     ratio_p90=float(np.percentile(ratio, 90)),
                     s_per_pixel=float(np.mean([x["seconds"] for x in r["pixels"]])), elapsed=time.perf_counter() - t0)
            out[name] = r
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def run_spinor() -> dict:
    """The Hinode 5×5 quiet-Sun sample against SPINOR (benchmarks/real_hinode_inversion.py, invert_pixel's
    defaults): its printed summary."""
    import subprocess

    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, str(Path(__file__).with_name("real_hinode_inversion.py"))],
                       capture_output=True, text=True)
    lines = [ln for ln in p.stdout.splitlines() if ln.strip()]
    return {"rc": p.returncode, "summary": lines[-6:], "elapsed": time.perf_counter() - t0}


#: The pre-issue-17 (v2) defaults: SIR's λ schedule with the two-small-gains stop at 1e-3, Broyden updates, no
#: rescue, every cycle on the model's grid
V2_DEFAULTS = {"rules": "sir", "rtol": 1e-3, "jacobian_reuse": 1, "rescue": False, "coarse": False}


def run_speed(npix: int = 40, kw: dict | None = None, alt: dict | None = None) -> dict | None:
    """SIR (SIR_X) and pyinv side by side on ``npix`` odd-indexed pixels of invert_hinode_200, interleaved,
    one process each (pyinv in this process, one thread): wall seconds per pixel of SIR, of the defaults
    (with ``kw``, --kw) and of the pre-issue-17 (v2) defaults; with ``alt`` (--speed-alt) a fourth arm, the
    defaults with those invert_pixel keywords."""
    exe = os.environ.get("SIR_X")
    if not exe:
        return None
    name = "hinode200"
    p = _load(name)
    d = np.load(REF / "invert_hinode_200.npz")
    sir = sir_runner(REF, d)
    pix = [i for i in range(len(p["obs"])) if i % 2 == 1][:npix]
    arms = {"new": dict(kw or {}), "v2": V2_DEFAULTS}
    if alt is not None:
        arms["alt"] = {**(kw or {}), **alt}
    invert_one((name, pix[0], arms["new"]))      # warm-up
    rows = []
    for n, i in enumerate(pix):
        order = ["sir", *arms] if n % 2 == 0 else [*reversed(arms), "sir"]
        r = {"pixel": i}
        for k in order:
            if k == "sir":
                r["sir"] = sir(i)
            else:
                q = invert_one((name, i, arms[k]))
                r[k] = q["wall"]
                r[k + "_ratio"] = q["merit"] / p["sir_merit"][i]
        rows.append(r)
        print(f"  speed pixel {i:3d}: " + ", ".join(f"{k} {r[k]:.3f} s" for k in ("sir", *arms)), flush=True)
    t = {k: float(np.sum([r[k] for r in rows])) for k in ("sir", *arms)}
    out = {"pixels": pix, "rows": rows, "seconds_per_pixel": {k: v / len(rows) for k, v in t.items()},
           "speedup_defaults_over_sir": t["sir"] / t["new"], "speedup_v2_over_sir": t["sir"] / t["v2"],
           "parity_defaults": float(np.mean([r["new_ratio"] <= 1.05 for r in rows])),
           "parity_v2": float(np.mean([r["v2_ratio"] <= 1.05 for r in rows])), "sir_x": Path(exe).name}
    if alt is not None:
        out.update(alt_kw=arms["alt"], speedup_alt_over_sir=t["sir"] / t["alt"],
                   parity_alt=float(np.mean([r["alt_ratio"] <= 1.05 for r in rows])))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sets", nargs="*", default=["hinode20", "hinode200", "real300", "stray", "twocomp", "spinor25",
                                                  "speed"])
    ap.add_argument("--half", choices=["even", "odd", "all"], default="all")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--kw", default="{}", help="JSON keyword arguments of invert_pixel")
    ap.add_argument("--speed-alt", default=None, help="JSON invert_pixel keywords of a fourth arm in the speed "
                                                      "section (e.g. '{\"magnetic_start\": \"guess\"}')")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--no-save", action="store_true", help="do not write benchmarks/results/fidelity.{json,txt}")
    args = ap.parse_args(argv)
    kw = json.loads(args.kw)
    report = {"kw": kw, "code": code_version(), "machine_load_at_start": os.getloadavg()[0],
              "tuning": "hinode200 and real300: even-indexed pixels; odd-indexed reported as held out"}
    text = []

    def say(line: str) -> None:
        print(line, flush=True)
        text.append(line)

    for name in args.sets:
        if name in ("stray", "twocomp"):
            for rules in (False, True):
                r = run_sir_sets(["invert_" + name], rules)["invert_" + name]
                tag = "pyinv sir --pyinv-rules" if rules else "pyinv sir (SIR's rules)"
                say(f"{name:9s} {tag:26s} parity {r['parity_count']}/{r['n']} ratio med {r['ratio_median']:.3f} "
                    f"p90 {r['ratio_p90']:.3f} {r['s_per_pixel']:.2f} s/pixel (process start included)")
                report[f"{name}{'_pyinv_rules' if rules else ''}"] = r
            continue
        if name == "spinor25":
            r = run_spinor()
            for ln in r["summary"]:
                say(f"spinor25  {ln}")
            report[name] = r
            continue
        if name == "speed":
            r = run_speed(kw=kw, alt=None if args.speed_alt is None else json.loads(args.speed_alt))
            if r is None:
                say("speed     SIR_X not set: SIR not run side by side (quoted sir_seconds above)")
                continue
            sp = r["seconds_per_pixel"]
            say(f"speed     {len(r['rows'])} odd pixels of invert_hinode_200, interleaved: SIR {sp['sir']:.3f} s/pixel, "
                f"defaults {sp['new']:.3f} ({r['speedup_defaults_over_sir']:.2f}x SIR, parity "
                f"{100 * r['parity_defaults']:.0f} %), v2 defaults {sp['v2']:.3f} ({r['speedup_v2_over_sir']:.2f}x SIR, "
                f"parity {100 * r['parity_v2']:.0f} %)"
                + (f", defaults with {r['alt_kw']} {sp['alt']:.3f} ({r['speedup_alt_over_sir']:.2f}x SIR, parity "
                   f"{100 * r['parity_alt']:.0f} %)" if "alt" in sp else ""))
            report[name] = r
            continue
        p = _load(name)
        n = len(p["obs"])
        pix = [i for i in range(n) if args.half == "all" or (i % 2 == (0 if args.half == "even" else 1))]
        t0 = time.perf_counter()
        rows = run_set(name, pix, kw, args.workers)
        el = time.perf_counter() - t0
        out = {"rows": rows, "elapsed": el}
        halves = {"all": rows}
        if name in ("hinode200", "real300") and args.half == "all":
            halves = {"even (tuning)": [r for r in rows if r["pixel"] % 2 == 0],
                      "odd (held out)": [r for r in rows if r["pixel"] % 2 == 1], "all": rows}
        for h, rr in halves.items():
            s = summarise(name, rr)
            out[h] = s
            extra = "".join(f" {k}={v:.3f}" for k, v in s.items() if k.startswith(("blos", "sir_blos", "equal_fits")))
            say(f"{name:9s} {h:15s} n={s['n']:3d} parity {s['parity_count']}/{s['n']} = {100 * s['parity']:.1f} %"
                  f" ratio med {s['ratio_median']:.3f} p90 {s['ratio_p90']:.3f} {s['s_per_pixel']:.3f} s/pix"
                  f" (SIR quoted {s['sir_s_per_pixel_quoted']:.2f}) bad {s['status_nonzero']}"
                  + f" rescue tried {s['rescue_tried']} taken {s['rescue_taken']}" + extra)
        report[name] = out
    out = args.json
    if out is None and not args.no_save:
        out = RESULTS / "fidelity.json"
    if out is not None:
        out.write_text(json.dumps(report, indent=1) + "\n")
        out.with_suffix(".txt").write_text(f"benchmarks/fidelity.py, commit {report['code']}\n" + "\n".join(text) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
