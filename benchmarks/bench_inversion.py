"""Benchmark: one-pixel inversions of ../shared/reference/invert_hinode.npz (issue 4).

Prints, per pixel, the wall and CPU seconds of :func:`pyinv.invert_pixel` on one core and the ratio of
the neutral merit χ²ₙ = mean_s,λ w_s (O − S)² / noise² of our fit to that of SIR's fit, then the
summary next to SIR's own timing (quoted: 0.58–0.60 s per pixel on a 2-core VM; `sir_seconds` of the
file, process included).

    PYTHONPATH=<build>/site:src python benchmarks/bench_inversion.py [--pixels 0 1 2] [--rtol 1e-4]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
REF = ROOT.parent / "shared" / "reference"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pixels", type=int, nargs="*", default=None, help="pixel indices (default: all 20)")
    ap.add_argument("--rtol", type=float, default=None, help="invert_pixel rtol (default: pyinv's)")
    ap.add_argument("--jacobian", choices=("depth", "nodes"), default=None,
                    help="invert_pixel jacobian (default: pyinv's)")
    ap.add_argument("--reference", type=Path, default=REF, help="folder with invert_hinode.npz")
    args = ap.parse_args(argv)
    if not (args.reference / "invert_hinode.npz").is_file():
        print(f"reference data not found in {args.reference}; nothing to do")
        return 0

    import pyinv
    from pyinv.atmosphere import Atmosphere
    from pyinv.config import InversionConfig
    from pyinv.io.sir import read_abundances
    from pyinv.lines import LineList, WavelengthGrid

    d = np.load(args.reference / "invert_hinode.npz")
    lines = LineList.read_sir(args.reference / "LINES_REF")
    grid = WavelengthGrid.from_regions([tuple(r) for r in json.loads(str(d["regions"]))], lines)
    ab = read_abundances(args.reference / "THEVENIN")
    cfg = InversionConfig.from_sir_text(str(d["sir_trol"]))
    guess = Atmosphere.from_array(d["guess_model"], macro=float(d["guess_macro"]))
    w = np.asarray(d["weights"], float)
    noise = float(d["noise"])
    kw = {} if args.rtol is None else {"rtol": args.rtol}
    if args.jacobian:
        kw["jacobian"] = args.jacobian

    def chi2n(o, s):
        return float(np.mean(w[:, None] * (o - s) ** 2) / noise ** 2)

    pixels = range(len(d["observed"])) if args.pixels is None else args.pixels
    # warm-up (engine import, first-call overheads)
    pyinv.inversion.invert_pixel(d["observed"][0], guess, lines, grid, InversionConfig(cycles=1, nodes={"T": 1}),
                                 abundances=ab)
    print(f"{'pix':>3} {'family':>9} {'wall s':>7} {'cpu s':>7} {'SIR s':>6} {'chi2n ours':>10} {'chi2n SIR':>9} "
          f"{'ratio':>6} {'its':>12} {'synth':>5}")
    walls, cpus, ratios = [], [], []
    for i in pixels:
        t0, c0 = time.perf_counter(), time.process_time()
        r = pyinv.inversion.invert_pixel(d["observed"][i], guess, lines, grid, cfg, abundances=ab, **kw)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        ours, sir = chi2n(d["observed"][i], r.fit), chi2n(d["observed"][i], d["sir_fit"][i])
        walls.append(wall)
        cpus.append(cpu)
        ratios.append(ours / sir)
        print(f"{i:3d} {str(d['family'][i]):>9} {wall:7.2f} {cpu:7.2f} {float(d['sir_seconds'][i]):6.2f} "
              f"{ours:10.3f} {sir:9.3f} {ours / sir:6.3f} {str([int(k) for k in r.iterations]):>12} {r.syntheses:5d}"
              + ("" if r.ok else f"  status {r.status}: {r.message}"), flush=True)
    ratios = np.array(ratios)
    print(f"\nseconds per pixel (one core): wall {np.mean(walls):.3f} (median {np.median(walls):.3f}), "
          f"cpu {np.mean(cpus):.3f}")
    print(f"SIR: 0.58-0.60 s per pixel quoted (2-core VM, process included); file sir_seconds mean "
          f"{float(np.mean(d['sir_seconds'])):.3f}")
    print(f"chi2n ratio pyinv/SIR: median {np.median(ratios):.3f}, max {ratios.max():.3f}, "
          f"<= 1.05 on {np.count_nonzero(ratios <= 1.05)} of {ratios.size}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
