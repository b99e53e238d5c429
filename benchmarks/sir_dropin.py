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
import shutil
import sys
import tempfile
from pathlib import Path

from _common import DROPIN_CASES, REF, RESULTS, code_version, pyinv_sir, run_dropin_case

SIR_FINAL_CHI2 = 0.3219829   # last row of sir_files/sir.chi


def run_sir_files(ref: Path, work: Path) -> dict:
    from pyinv.io.sir import read_sir_chi

    src = ref / "sir_files"
    dst = work / "sir_files"
    shutil.copytree(src, dst)
    for f in dst.iterdir():
        f.chmod(0o644)
        if f.name.startswith("model2_3") or f.suffix == ".chi":
            f.unlink()   # SIR's own outputs
    rc, msg, sec = pyinv_sir(dst / "sir.trol")
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
    ap.add_argument("--cases", nargs="*", default=list(DROPIN_CASES) + ["sir_files"])
    ap.add_argument("--json", type=Path, default=RESULTS / "sir_dropin.json")
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
                out["cases"][name] = run_dropin_case(name, args.reference, args.pixels, work)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1))
    print(f"\n-> {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
