"""Instruction counts of the inversion engine (issue 17's speed work): a load-independent measure of its cost.

Wall-clock timings on a shared 2-core machine move by tens of per cent with the load; the number of
instructions the engine executes for a fixed inversion does not. This script inverts a few fixed pixels of
``../shared/reference/invert_hinode_200.npz`` (even-indexed: the tuning half) with invert_pixel's defaults
and ``rescue=False`` (one descent, the same path in every engine that keeps the iterations) under
``valgrind --tool=callgrind``, counting only inside the engine's inversion call
(``--toggle-collect=__pyinv_api_MOD_inv_cycle``), and reports the total and the inclusive counts of the
engine's main routines. The x86-64-v3 build is used (``PYINV_ENGINE_ISA=v3``: valgrind does not run
AVX-512). With ``--baseline FOLDER`` (a folder holding ``src/`` and ``build/dev/site``, e.g. an older commit
built with tools/devbuild.sh) the same pixels are counted there too and the ratio is printed.

    PYTHONPATH=build/dev/site:src python benchmarks/bench_instructions.py [--pixels 0 4] [--baseline DIR]

Writes benchmarks/results/instructions.{json,txt} (with the commit) unless --no-save. A run takes a few
minutes per installation (valgrind is ~50x slower than the native run).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import REF, RESULTS, ROOT, code_version

#: routines whose inclusive counts are reported (Fortran module procedures)
ROUTINES = ("inversion_MOD_lm_cycle", "response_MOD_synth_rf", "synthesis_MOD_synth_model",
            "nodes_MOD_analytic_columns", "response_MOD_thermo_tl", "formal_solver_MOD_hermite_polarised_adjoint",
            "formal_solver_MOD_hermite_polarised_block", "voigt_MOD_voigt_nw", "inversion_MOD_equilibrate")

CHILD = """
import sys
sys.path.insert(0, sys.argv[1])
from _common import REF, load_sir_problem
import pyinv
q = load_sir_problem(REF, "invert_hinode_200.npz")
for i in [int(x) for x in sys.argv[2].split(",")]:
    r = pyinv.invert_pixel(q["d"]["observed"][i], q["guess"], q["lines"], q["grid"], q["cfg"], abundances=q["ab"],
                           rescue=False)
    print("pixel", i, "chi2", repr(float(r.chi2[-1])), "iterations", list(map(int, r.iterations)),
          "syntheses", int(r.syntheses), flush=True)
"""


def count(root: Path | None, pixels: list[int], work: Path) -> dict:
    """Callgrind counts of one installation (None: the one this interpreter imports)."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("valgrind not found")
    env = dict(os.environ, PYINV_ENGINE_ISA="v3", OMP_NUM_THREADS="1")
    if root is not None:
        root = Path(root).resolve()
        env["PYTHONPATH"] = os.pathsep.join([str(root / "build" / "dev" / "site"), str(root / "src")])
    out = work / f"callgrind.{'baseline' if root else 'this'}.out"
    exe = os.path.realpath(sys.executable)       # not a shim script: valgrind must run the interpreter itself
    cmd = [valgrind, "--tool=callgrind", f"--callgrind-out-file={out}", "--collect-atstart=no",
           "--toggle-collect=__pyinv_api_MOD_inv_cycle", exe, "-c", CHILD, str(Path(__file__).parent),
           ",".join(map(str, pixels))]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=str(ROOT))
    if p.returncode != 0:
        raise SystemExit(f"callgrind run failed:\n{p.stderr[-2000:]}")
    ann = subprocess.run(["callgrind_annotate", "--inclusive=yes", str(out)], capture_output=True, text=True).stdout
    total = None
    incl = {}
    for line in ann.splitlines():
        m = re.match(r"\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(.*)", line)
        if not m:
            continue
        n = int(m.group(1).replace(",", ""))
        if "PROGRAM TOTALS" in m.group(2):
            total = n
        for r in ROUTINES:
            if f"__pyinv_{r} " in m.group(2) + " " and r not in incl:
                incl[r] = n
    inversions = [ln for ln in p.stdout.splitlines() if ln.startswith("pixel")]
    return {"total": total, "inclusive": incl, "inversions": inversions}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pixels", type=int, nargs="*", default=[0, 4])
    ap.add_argument("--baseline", type=Path, default=None)
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args(argv)
    if not (REF / "invert_hinode_200.npz").is_file():
        raise SystemExit(f"{REF / 'invert_hinode_200.npz'} not found")
    report = {"code": code_version(), "pixels": args.pixels, "isa": "v3", "counted": "__pyinv_api_MOD_inv_cycle"}
    text = [f"benchmarks/bench_instructions.py, commit {report['code']}",
            f"engine instructions (callgrind, x86-64-v3 build, inside inv_cycle) for invert_pixel(rescue=False) on "
            f"pixels {args.pixels} of invert_hinode_200"]
    with tempfile.TemporaryDirectory(prefix="pyinv-instr-") as tmp:
        runs = {"this": count(None, args.pixels, Path(tmp))}
        if args.baseline is not None:
            runs["baseline"] = count(args.baseline, args.pixels, Path(tmp))
    for name, r in runs.items():
        text.append(f"{name:8s} total {r['total']:,} instructions")
        for k, v in r["inclusive"].items():
            text.append(f"{'':8s}   {k.split('_MOD_')[1]:28s} {v:>15,}")
        text += [f"{'':8s}   {ln}" for ln in r["inversions"]]
    if "baseline" in runs and runs["baseline"]["total"]:
        ratio = runs["this"]["total"] / runs["baseline"]["total"]
        report["ratio_to_baseline"] = ratio
        text.append(f"this / baseline: {ratio:.4f} ({100 * (ratio - 1):+.1f} %); baseline folder "
                    f"{args.baseline.name}")
    report["runs"] = runs
    print("\n".join(text))
    if not args.no_save:
        (RESULTS / "instructions.json").write_text(json.dumps(report, indent=1) + "\n")
        (RESULTS / "instructions.txt").write_text("\n".join(text) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
