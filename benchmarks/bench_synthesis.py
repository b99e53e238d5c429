"""Benchmark: time of one LTE Stokes synthesis of the Hinode case, one core, in-process.

Case: a 53-depth model (log tau 1.2 ... -4.0), the Hinode SP sampling (112 points, 21.549 mÅ) and the
Fe I 6301.5 + 6302.5 pair as one blended group, with macroturbulence. Prints the time per synthesis
and per (depth x wavelength) point next to SIR's quoted ~1.0 µs per point, the time of the response
functions (engine synth_rf, all seven variables and macro) and its ratio to one synthesis, and writes
JSON to stdout's last line (or to --json PATH).

    PYTHONPATH=<build>/site:src python benchmarks/bench_synthesis.py [--repeat 200] [--json out.json]

With a baseline engine (tools/build_baseline.sh: the pre-v2 engine of commit ccb99ce; or PYINV_BASELINE)
the same synthesis is also timed in two worker processes, this engine and the baseline, in interleaved
rounds, and the speed-up per depth x wavelength point is printed (issue 9: >= 1.75x).

Uses ../shared/reference (models of synth_hinode, LINES_REF, THEVENIN) when present; otherwise
pyinv's packaged line list / abundances and a magnetised HSRA.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from _common import REF, Worker, baseline_root, code_version, pin_threads

pin_threads()
import numpy as np  # noqa: E402

import pyinv  # noqa: E402

SIR_US_PER_POINT = 1.0
TARGET_US_PER_POINT = 0.2


def _case():
    ref = REF
    regions = [("1,2", -615.9, 21.549, 1776.0)]
    if (ref / "synth_hinode.npz").is_file():
        d = np.load(ref / "synth_hinode.npz")
        lines = pyinv.LineList.read_sir(ref / "LINES_REF")
        ab = pyinv.read_abundances(ref / "THEVENIN")
        atm = pyinv.Atmosphere.from_array(d["models"][0], macro=float(d["macro"][0]))
        return atm, lines, pyinv.WavelengthGrid.from_regions(regions, lines), ab, "shared/reference synth_hinode[0]"
    lines = pyinv.default_lines()
    idx = [ln.index for ln in lines if abs(ln.wavelength - 6301.5) < 0.1 or abs(ln.wavelength - 6302.5) < 0.1]
    lt = np.round(np.arange(1.2, -4.0 - 1e-9, -0.1), 2)
    hsra = pyinv.models.hsra() if hasattr(pyinv.models, "hsra") else None
    T = np.interp(lt, hsra.log_tau[::-1], hsra.T[::-1]) if hsra is not None else 6000 - 600 * lt
    Pe = np.interp(lt, hsra.log_tau[::-1], hsra.Pe[::-1]) if hsra is not None else 10 ** (1.3 + 0.5 * lt)
    atm = pyinv.Atmosphere(log_tau=lt, T=T, Pe=Pe, vmic=1e5, B=1000.0, vlos=0.0, gamma=30.0, phi=20.0, macro=1.0)
    grid = pyinv.WavelengthGrid.from_regions([(",".join(map(str, idx[:2])), -615.9, 21.549, 1776.0)], lines)
    return atm, lines, grid, None, "packaged defaults (magnetised HSRA)"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=200)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    atm, lines, grid, ab, source = _case()
    kw = dict(abundances=ab)
    pyinv.synthesize(atm, lines, grid, **kw)  # warm-up (imports, first call)
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        pyinv.synthesize(atm, lines, grid, **kw)
        times.append(time.perf_counter() - t0)
    # the engine alone (no Python-side validation): synth_stokes vs synth_rf (all seven variables,
    # RF_INTERFACE.md), interleaved so that both see the same machine load
    from pyinv.physics.synthesis import _prepare
    p = _prepare([atm], lines, grid, **kw)
    eargs = (p["setup"], p["cols"][0]["log_tau"], p["x"][0], p["macro"][0])
    pyinv.engine.synth_rf(*eargs)
    # the inversion's Jacobian calls synth_rf without convolution (the set-up's no_convolution option)
    eargs_nc = (p["setup"].with_options(no_convolution=True),) + eargs[1:]
    pyinv.engine.synth_rf(*eargs_nc)
    t_syn, t_rf, t_rf_nc = [], [], []
    for _ in range(max(args.repeat // 4, 10)):
        t0 = time.perf_counter()
        pyinv.engine.synth_stokes(*eargs)
        t1 = time.perf_counter()
        pyinv.engine.synth_rf(*eargs)
        t2 = time.perf_counter()
        pyinv.engine.synth_rf(*eargs_nc)
        t3 = time.perf_counter()
        t_syn.append(t1 - t0)
        t_rf.append(t2 - t1)
        t_rf_nc.append(t3 - t2)
    t = np.median(times)
    npts = atm.ndep * grid.nwav
    res = {"case": source, "ndep": int(atm.ndep), "nwav": int(grid.nwav), "repeat": args.repeat,
           "seconds_per_synthesis_median": float(t), "seconds_per_synthesis_min": float(np.min(times)),
           "us_per_point_median": float(t / npts * 1e6), "us_per_point_min": float(np.min(times) / npts * 1e6),
           "sir_us_per_point": SIR_US_PER_POINT, "target_us_per_point": TARGET_US_PER_POINT,
           "engine_synth_seconds_min": float(np.min(t_syn)), "engine_rf_seconds_min": float(np.min(t_rf)),
           "engine_synth_seconds_median": float(np.median(t_syn)),
           "engine_rf_seconds_median": float(np.median(t_rf)),
           "rf_over_synthesis_min": float(np.min(t_rf) / np.min(t_syn)),
           "rf_over_synthesis_median": float(np.median(t_rf) / np.median(t_syn)),
           "engine_rf_noconv_seconds_min": float(np.min(t_rf_nc)),
           "rf_noconv_over_synthesis_min": float(np.min(t_rf_nc) / np.min(t_syn))}
    print(f"pyinv.synthesize, {source}: {atm.ndep} depths x {grid.nwav} wavelengths, one core")
    print(f"  time per synthesis   {t * 1e3:8.3f} ms (median of {args.repeat}; min {np.min(times) * 1e3:.3f} ms)")
    print(f"  per depth x wavelength {res['us_per_point_median']:8.3f} us   (SIR ~{SIR_US_PER_POINT} us; "
          f"target <= {TARGET_US_PER_POINT} us; speed-up vs SIR x{SIR_US_PER_POINT / res['us_per_point_median']:.1f})")
    print(f"  response functions (synth_rf, 7 variables x {atm.ndep} depths + macro): "
          f"{np.min(t_rf) * 1e3:.3f} ms vs synth_stokes {np.min(t_syn) * 1e3:.3f} ms (min), "
          f"ratio {res['rf_over_synthesis_min']:.2f} (median ratio {res['rf_over_synthesis_median']:.2f})")
    print(f"  response functions without convolution (the inversion's Jacobian): "
          f"{np.min(t_rf_nc) * 1e3:.3f} ms (min), ratio {res['rf_noconv_over_synthesis_min']:.2f}")
    base = baseline_root()
    if base is not None and REF.is_dir():
        ref = str(REF)
        ws = {"new": Worker(None, "new"), "old": Worker(base, "old")}
        eng = {k: w.ask({"op": "load_synthesis", "reference": ref})["engine"] for k, w in ws.items()}
        mins = {"new": [], "old": []}
        for r in range(8):
            for k in (("new", "old") if r % 2 == 0 else ("old", "new")):
                mins[k].append(ws[k].ask({"op": "synthesize", "repeat": max(args.repeat // 8, 10)})["min"])
        for w in ws.values():
            w.close()
        t_new, t_old = float(np.min(mins["new"])), float(np.min(mins["old"]))
        res.update(sidebyside_new_seconds_min=t_new, sidebyside_old_seconds_min=t_old,
                   sidebyside_speedup=t_old / t_new, sidebyside_engines=eng,
                   sidebyside_speedup_median=float(np.median(np.array(mins["old"]) / np.array(mins["new"]))))
        print(f"  side by side ({eng['new']} engine vs the pre-v2 {eng['old']} one, interleaved rounds): "
              f"{t_new / npts * 1e6:.3f} vs {t_old / npts * 1e6:.3f} us per point (min), SPEED-UP "
              f"{t_old / t_new:.2f}x (median of rounds {res['sidebyside_speedup_median']:.2f}x)")
    else:
        print("  no baseline engine for the side-by-side ratio (tools/build_baseline.sh)")
    res["code"] = code_version()
    out = json.dumps(res)
    if args.json:
        Path(args.json).write_text(out + "\n")
    print(out)
    return res


if __name__ == "__main__":
    main(sys.argv[1:])
