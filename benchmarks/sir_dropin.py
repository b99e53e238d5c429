"""Acceptance of ``pyinv sir`` as a drop-in for SIR control files (issue 13).

1. ``invert_stray.npz`` and ``invert_twocomp.npz`` (../shared/reference): per pixel, the inputs are written
   into a temporary folder as the reference README says (``obs.per``, ``stray.per``, ``grid.grid``,
   ``m1.mod``, ``m2.mod``, ``LINES_REF``, ``THEVENIN``, and ``run.trol`` = the file's ``control`` text) and
   ``pyinv sir run.trol`` runs there. χ²ₙ of ``m1_2.per`` = mean over Stokes and wavelengths of
   w (observed − fit)² / noise² is compared with SIR's (from ``sir_fit``); the recovered α (``m1_2.mod``
   header) / f₂ (``m2_2.mod`` header) beside the truth and SIR's (``sir_header`` / ``sir_header2``).
   Criterion: ratio ≤ 1.05 on ≥ 9 of 10 pixels.
2. ``sir_files`` copied to a temporary folder, ``pyinv sir sir.trol`` (4 cycles, automatic nodes in the
   fourth, gas-pressure boundary 500): the final χ² (column 2 of the last ``sir.chi`` row) against SIR's
   0.3219829; criterion ≤ 1.05 × SIR's.

    PYTHONPATH=build/dev/site:src python benchmarks/sir_dropin.py [--pixels 0 1 2] [--json out.json]

Writes benchmarks/results/sir_dropin.json (with the commit) unless --json names another file.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sidebyside import code_version  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
REF = ROOT.parent / "shared" / "reference"
SIR_FINAL_CHI2 = 0.3219829   # last row of sir_files/sir.chi
CASES = {"invert_stray": "stray", "invert_twocomp": "twocomp"}


def _pyinv_sir(trol: Path, extra_args=()) -> tuple[int, str, float]:
    """``pyinv sir trol`` in trol's folder (the interpreter and PYTHONPATH of this process)."""
    env = dict(os.environ)
    if env.get("PYTHONPATH"):  # relative entries (a development build) must survive the change of folder
        env["PYTHONPATH"] = os.pathsep.join(str(Path(p).resolve()) for p in env["PYTHONPATH"].split(os.pathsep) if p)
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "pyinv.cli", "sir", trol.name, *extra_args], cwd=trol.parent, capture_output=True,
                       text=True, env=env)
    return p.returncode, (p.stderr.strip().splitlines() or [""])[-1], time.perf_counter() - t0


def _write_grid(path: Path, regions) -> None:
    with open(path, "w") as fh:
        fh.write("Line and blends indices   :   Initial lambda     Step     Final lambda\n"
                 "(in this order)                    (mA)          (mA)         (mA)\n"
                 "-----------------------------------------------------------------------\n")
        for r in regions:
            fh.write(f"{r[0]}   :   {float(r[1])}, {float(r[2])}, {float(r[3])}\n")


def _chi2n(obs: np.ndarray, fit: np.ndarray, w: np.ndarray, noise: float) -> float:
    return float(np.mean(w[:, None] * (obs - fit) ** 2) / noise ** 2)


def run_case(name: str, ref: Path, pixels, work: Path, extra_args=()) -> dict:
    """One reference set through ``pyinv sir`` per pixel (``extra_args``: more CLI flags, e.g.
    ``("--pyinv-rules",)``)."""
    from pyinv.atmosphere import Atmosphere
    from pyinv.io.sir import read_sir_model, read_sir_profiles, write_sir_model, write_sir_profiles

    d = np.load(ref / f"{name}.npz")
    kind = CASES[name]
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
        _write_grid(pdir / "grid.grid", regions)
        write_sir_profiles(pdir / "obs.per", d["line_index"], d["offset_mA"], d["observed"][i])
        if kind == "stray":
            write_sir_profiles(pdir / "stray.per", d["line_index"], d["offset_mA"], d["stray_stokes"])
            write_sir_model(pdir / "m1.mod", Atmosphere.from_array(g1, macro=macro, filling=1.0, stray=alpha_guess))
        else:
            write_sir_model(pdir / "m1.mod", Atmosphere.from_array(g1, macro=macro, filling=1.0 - f2_guess, stray=0.0))
            write_sir_model(pdir / "m2.mod", Atmosphere.from_array(g2, macro=macro, filling=f2_guess, stray=0.0))
        (pdir / "run.trol").write_text(str(d["control"]))
        rc, msg, sec = _pyinv_sir(pdir / "run.trol", extra_args)
        sir_c = _chi2n(d["observed"][i], d["sir_fit"][i], w, noise)
        row = {"pixel": int(i), "rc": rc, "seconds": sec, "chi2n_sir": sir_c, "truth": float(truth[i]),
               "sir": float(sir_val[i])}
        if rc != 0 or not (pdir / "m1_2.per").is_file():
            row["error"] = msg
            print(f" {i:3d}   failed (exit {rc}): {msg}")
            rows.append(row)
            continue
        fit = read_sir_profiles(pdir / "m1_2.per").stokes
        ours = _chi2n(d["observed"][i], fit, w, noise)
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


def run_sir_files(ref: Path, work: Path) -> dict:
    from pyinv.io.sir import read_sir_chi

    src = ref / "sir_files"
    dst = work / "sir_files"
    shutil.copytree(src, dst)
    for f in dst.iterdir():
        f.chmod(0o644)
        if f.name.startswith("model2_3") or f.suffix == ".chi":
            f.unlink()   # SIR's own outputs
    rc, msg, sec = _pyinv_sir(dst / "sir.trol")
    print("\nsir_files: pyinv sir sir.trol (4 cycles)")
    if rc != 0:
        print(f"  failed (exit {rc}): {msg}")
        return {"rc": rc, "error": msg, "seconds": sec}
    chi = read_sir_chi(dst / "sir.chi")
    sirchi = read_sir_chi(src / "sir.chi")
    for c, (a, b) in enumerate(zip(chi, sirchi), start=1):
        print(f"  cycle {c}: s/n {a[0]:12.5g} chi2 {a[1]:12.7g}   SIR: s/n {b[0]:12.5g} chi2 {b[1]:12.7g}")
    final = float(chi[-1, 1])
    print(f"  final chi2 {final:.7g} vs SIR's {SIR_FINAL_CHI2} (ratio {final / SIR_FINAL_CHI2:.4g}; criterion "
          f"<= 1.05): {'PASS' if final <= 1.05 * SIR_FINAL_CHI2 else 'FAIL'}   [{sec:.1f} s]")
    return {"rc": rc, "chi": chi.tolist(), "sir_chi": sirchi.tolist(), "final_chi2": final,
            "sir_final_chi2": SIR_FINAL_CHI2, "ratio": final / SIR_FINAL_CHI2, "seconds": sec}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pixels", type=int, nargs="*", default=None, help="pixel indices (default: all 10)")
    ap.add_argument("--reference", type=Path, default=REF, help="folder with the reference files")
    ap.add_argument("--cases", nargs="*", default=list(CASES) + ["sir_files"])
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "sir_dropin.json")
    args = ap.parse_args(argv)
    if not args.reference.is_dir():
        print(f"reference data not found in {args.reference}; nothing to do")
        return 0
    out = {"code": code_version(), "cases": {}}
    with tempfile.TemporaryDirectory(prefix="pyinv-sirdropin-") as tmp:
        work = Path(tmp)
        for name in args.cases:
            if name == "sir_files":
                out["cases"][name] = run_sir_files(args.reference, work)
            elif (args.reference / f"{name}.npz").is_file():
                out["cases"][name] = run_case(name, args.reference, args.pixels, work)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1))
    print(f"\n-> {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
