"""Benchmark: one-pixel inversions of ../shared/reference/invert_hinode.npz, this engine against the
pre-v2 engine (issue 9), interleaved pixel by pixel in two worker processes so that both see the same
machine load; optionally SIR itself (environment variable SIR_X = a SIR executable).

Two configurations: the reference one (the file's 3 cycles from the HSRA guess) and the assisted one
(one cycle with the last-cycle nodes from ``sir_assisted_start_models``). Printed per pixel: wall
seconds of each engine, their ratio, χ²ₙ = mean_s,λ w_s (O − S)² / noise² of our fit over SIR's; then the
summary: speed-up (total time of the baseline / ours, and the median per-pixel ratio), the χ² criterion
(≤ 1.05 × SIR's) and, with SIR_X, our speed-up over SIR run on the same pixels. Writes JSON with --json.

    tools/build_baseline.sh                       # the pre-v2 engine (commit ccb99ce) into build/
    PYTHONPATH=build/dev/site:src python benchmarks/bench_inversion.py [--pixels 0 1 2] [--json out.json]

PYINV_BASELINE names another baseline folder. Without a baseline only this engine is timed.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from _common import REF, Worker, baseline_root, chi2n, code_version, sir_runner


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pixels", type=int, nargs="*", default=None, help="pixel indices (default: all 20)")
    ap.add_argument("--reference", type=Path, default=REF, help="folder with invert_hinode.npz")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if not (args.reference / "invert_hinode.npz").is_file():
        print(f"reference data not found in {args.reference}; nothing to do")
        return 0
    d = np.load(args.reference / "invert_hinode.npz")
    w = np.asarray(d["weights"], float)
    noise = float(d["noise"])
    sir_chi2n = [chi2n(d["observed"][i], d["sir_fit"][i], w, noise) for i in range(len(d["observed"]))]
    pixels = list(range(len(d["observed"]))) if args.pixels is None else args.pixels

    workers = {"new": Worker(None, "new")}
    base = baseline_root()
    if base is not None:
        workers["old"] = Worker(base, "old")
    else:
        print("no baseline engine (run tools/build_baseline.sh or set PYINV_BASELINE): timing this engine only")
    engines = {k: wk.ask({"op": "load_inversion", "reference": str(args.reference)})["engine"]
               for k, wk in workers.items()}
    sir = sir_runner(args.reference, d)
    print("engines:", ", ".join(f"{k} = {v}" for k, v in engines.items()), "| SIR:", os.environ.get("SIR_X", "not given"))

    report: dict = {"pixels": pixels, "engines": engines, "baseline": "commit ccb99ce (pre-v2)" if base else None,
                    "code": code_version(), "machine_load_at_start": os.getloadavg()[0]}
    for conf in ("reference", "assisted"):
        print(f"\n--- {conf} configuration")
        print(f"{'pix':>3} {'new s':>7} {'old s':>7} {'old/new':>7} {'SIR s':>6} {'chi2n new/SIR':>13} "
              f"{'old/SIR':>8} {'its new':>12}")
        rows = []
        for n, i in enumerate(pixels):
            order = list(workers) if n % 2 == 0 else list(workers)[::-1]
            res = {k: workers[k].ask({"op": "invert", "pixel": i, "assisted": conf == "assisted"}) for k in order}
            t_sir = sir(i) if (sir is not None and conf == "reference") else None
            r = {"pixel": i, **{f"{k}_{q}": res[k][q] for k in res for q in ("wall", "cpu", "chi2n", "iterations",
                                                                              "status")},
                 "sir_wall": t_sir}
            rows.append(r)
            old = res.get("old")
            print(f"{i:3d} {res['new']['wall']:7.3f} " + (f"{old['wall']:7.3f} {old['wall'] / res['new']['wall']:7.2f} "
                                                          if old else f"{'-':>7} {'-':>7} ")
                  + (f"{t_sir:6.2f} " if t_sir is not None else f"{'-':>6} ")
                  + f"{res['new']['chi2n'] / sir_chi2n[i]:13.3f} "
                  + (f"{old['chi2n'] / sir_chi2n[i]:8.3f} " if old else f"{'-':>8} ")
                  + f"{str(res['new']['iterations']):>12}", flush=True)
        new_t = np.array([r["new_wall"] for r in rows])
        ratio_new = np.array([r["new_chi2n"] / sir_chi2n[r["pixel"]] for r in rows])
        summ = {"seconds_per_pixel_new": float(new_t.mean()), "chi2_ratio_new": ratio_new.tolist(),
                "chi2_within_105_new": int(np.count_nonzero(ratio_new <= 1.05)), "n": len(rows)}
        print(f"seconds per pixel (one core): new {new_t.mean():.3f} (median {np.median(new_t):.3f})")
        if "old" in workers:
            old_t = np.array([r["old_wall"] for r in rows])
            ratio_old = np.array([r["old_chi2n"] / sir_chi2n[r["pixel"]] for r in rows])
            new_c = np.array([r["new_cpu"] for r in rows])
            old_c = np.array([r["old_cpu"] for r in rows])
            summ.update(cpu_seconds_per_pixel_new=float(new_c.mean()), cpu_seconds_per_pixel_old=float(old_c.mean()),
                        speedup_cpu=float(old_c.sum() / new_c.sum()))
            summ.update(seconds_per_pixel_old=float(old_t.mean()), speedup_total=float(old_t.sum() / new_t.sum()),
                        speedup_median=float(np.median(old_t / new_t)), chi2_ratio_old=ratio_old.tolist(),
                        chi2_within_105_old=int(np.count_nonzero(ratio_old <= 1.05)))
            print(f"                              old {old_t.mean():.3f} (median {np.median(old_t):.3f})")
            print(f"SPEED-UP over the pre-v2 engine: {summ['speedup_total']:.2f}x (total time), "
                  f"median per pixel {summ['speedup_median']:.2f}x; CPU time {summ['speedup_cpu']:.2f}x "
                  f"({summ['cpu_seconds_per_pixel_new']:.3f} vs {summ['cpu_seconds_per_pixel_old']:.3f} s)")
            print(f"chi2n <= 1.05 x SIR's: new {summ['chi2_within_105_new']}/{len(rows)}, "
                  f"old {summ['chi2_within_105_old']}/{len(rows)}")
        else:
            print(f"chi2n <= 1.05 x SIR's: new {summ['chi2_within_105_new']}/{len(rows)}")
        sir_t = [r["sir_wall"] for r in rows if r["sir_wall"] is not None]
        if sir_t:
            summ["speedup_over_sir"] = float(np.sum(sir_t) / new_t.sum())
            print(f"SPEED-UP over SIR run side by side: {summ['speedup_over_sir']:.2f}x")
        elif conf == "reference":
            print(f"SIR (quoted, not run here): file sir_seconds median {np.median(d['sir_seconds']):.2f} s on "
                  f"another machine; 1.12 s/pixel measured side by side in issue 9 (our goal: >= 6x)")
        else:
            print(f"SIR (quoted): sir_assisted_seconds median {np.median(d['sir_assisted_seconds']):.2f} s")
        report[conf] = {"rows": rows, "summary": summ}
    for wk in workers.values():
        wk.close()
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
