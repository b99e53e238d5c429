"""Diagnosis (issue 19): why the ``novel`` pixels of bench_desire.py miss T rms ≤ 80 K.

For the chosen pixels of ``bench_desire.py --case novel`` (same seed, same pixels, same noise), with the
emulated NLTE inversion (the backend-driven one misses alike) and the Lightweaver backend:

* the reduced χ² of the fit (Stokes I, noise 1e-3: ≈ 1 at the noise level) and the T error per band,
  starting (a) from FAL C (bench_desire's start), (b) from the parametrisation-floor model (FAL C plus the
  best 5-node least-squares correction towards the truth) and (c) from the truth itself;
* the reduced χ² of the truth and of the floor model against the observations (backend NLTE profiles);
* the NLTE T sensitivity at the truth: the backend's Stokes I change for +100 K in one depth band
  (backend re-run, b free), as rms over wavelengths and as Δχ² = Σ ΔI² / σ² (σ = 1e-3).

    PYTHONPATH=<build>/site:src python benchmarks/diag_desire_novel.py [--seed 11] [--pixels 2 7 6] [--json out]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

from _common import code_version, lightweaver_missing, pin_threads

pin_threads()
import numpy as np  # noqa: E402

from bench_desire import NODES, REGIONS, make_backend, node_floor, perturbation  # noqa: E402

SIGMA = 1e-3
RF_BANDS = [(-3.0, -3.5), (-3.5, -4.0), (-4.0, -4.5), (-4.5, -5.0), (-5.0, -5.3)]
T_BANDS = [(-1.0, -3.0), (-3.0, -4.0), (-4.0, -5.3)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--pixels", type=int, nargs="+", default=[2, 7, 6])
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--no-rf", action="store_true")
    args = ap.parse_args(argv)
    if lightweaver_missing():
        return 0
    import pyinv
    from pyinv import engine, nlte
    from pyinv.nlte.desire import _convolve_like_synthesis, invert_pixel_nlte, nlte_regions, on_engine_scale
    from pyinv.nlte.emulator import pretrained_emulator
    from pyinv.nlte.lw import falc_column

    warnings.simplefilter("ignore")
    col = falc_column()
    lines = pyinv.default_lines()
    grid = pyinv.WavelengthGrid.from_regions(REGIONS["novel"], lines)
    regs = nlte_regions(grid, nlte.level_map(lines, [8]))
    wl = nlte.grid_vacuum_nm(lines, grid)[np.concatenate(regs)]
    lw = make_backend("lightweaver", lines)
    r0 = lw.synthesize(col, wl)
    lt = np.round(np.arange(1.0, -5.3 - 1e-9, -0.1), 2)
    base = nlte.atmosphere_from_column(col, r0.tau500, lt, hydrostatic=True)
    rng = np.random.default_rng(args.seed)
    cfg = pyinv.InversionConfig(cycles=2, nodes=NODES["novel"], weights=(1, 1, 1, 1), snr=1000.0)
    base = base.with_columns(B=100.0, gamma=45.0, phi=30.0)
    emu = pretrained_emulator()
    m_all = (lt <= -1.0) & (lt >= -5.3)

    def observe(model):
        r = lw.synthesize(model, wl)
        lte = pyinv.synthesize(model, lines, grid, convolve=False)
        return _convolve_like_synthesis(on_engine_scale(r, lte, regs, lte), lines, grid, 0.0, None)

    def chi_i(a, b):
        return float(np.mean((a[0] - b[0]) ** 2) / SIGMA ** 2)

    def t_err(T, truth):
        out = {"all": float(np.sqrt(np.mean((T[m_all] - truth[m_all]) ** 2)))}
        for lo, hi in T_BANDS:
            m = (lt <= lo) & (lt >= hi)
            out[f"{lo}_{hi}"] = float(np.sqrt(np.mean((T[m] - truth[m]) ** 2)))
        return out

    rows = []
    for p in range(max(args.pixels) + 1):
        pert, kind = perturbation("novel", lt, rng, p, np.asarray(base.T))
        truth = pyinv.hydrostatic(base.with_columns(T=np.asarray(base.T) + pert["dT"], vlos=pert["v"], B=pert["B"],
                                                    gamma=pert["gamma"], phi=pert["phi"]))
        clean = observe(truth)
        obs = clean + rng.normal(0, SIGMA, clean.shape)
        if p not in args.pixels:
            continue
        T_true = np.asarray(truth.T)
        # the floor model: FAL C plus the best 5-node T correction towards the truth (v, B ... of the truth)
        f, _ = engine.inv_node_basis(lt, engine.inv_allowed_nodes(lt.size, 5))
        dT = T_true - np.asarray(base.T)
        c = np.linalg.lstsq(f[m_all], dT[m_all], rcond=None)[0]
        floor_model = pyinv.hydrostatic(truth.with_columns(T=np.asarray(base.T) + f @ c))
        row = {"pixel": p, "kind": kind, "floor_K": node_floor(lt, dT, m_all, 5),
               "chi2_I_truth": chi_i(obs, clean), "chi2_I_floor_model": chi_i(obs, observe(floor_model))}
        starts = {"falc": base, "floor": floor_model.with_columns(T=np.asarray(floor_model.T)),
                  "truth": truth}
        for name, g in starts.items():
            t0 = time.process_time()
            rn = invert_pixel_nlte(obs, g, lines, grid, cfg, backend=lw, departures="emulated", emulator=emu)
            a = rn.result.atmosphere
            row[f"start_{name}"] = {"chi2_I": chi_i(obs, rn.result.fit), "T_rms": t_err(np.asarray(a.T), T_true),
                                    "check": rn.provenance.get("check", {}).get("profile_rms"),
                                    "fallback": bool(rn.provenance.get("fallback")), "calls": rn.backend_calls,
                                    "cpu_s": time.process_time() - t0,
                                    "T_fit": np.asarray(a.T)[lt <= -3.0].round(0).tolist()}
        row["T_true"] = T_true[lt <= -3.0].round(0).tolist()
        row["lt"] = lt[lt <= -3.0].tolist()
        if not args.no_rf:
            rf = {}
            for lo, hi in RF_BANDS:
                m = (lt <= lo) & (lt > hi - 1e-9)
                bumped = pyinv.hydrostatic(truth.with_columns(T=T_true + 100.0 * m))
                d = observe(bumped)[0] - clean[0]
                rf[f"{lo}_{hi}"] = {"dI_rms": float(np.sqrt(np.mean(d ** 2))), "dI_max": float(np.max(np.abs(d))),
                                    "dchi2": float(np.sum(d ** 2) / SIGMA ** 2)}
            row["rf_plus100K"] = rf
        rows.append(row)
        print(f"pixel {p} ({kind}): floor {row['floor_K']:.0f} K; chi2_I(obs vs truth) {row['chi2_I_truth']:.2f}, "
              f"(obs vs floor model) {row['chi2_I_floor_model']:.2f}", flush=True)
        for name in starts:
            s = row[f"start_{name}"]
            print(f"   start {name:5s}: chi2_I {s['chi2_I']:8.2f}; T rms all {s['T_rms']['all']:5.0f} K, "
                  + ", ".join(f"{k} {v:4.0f}" for k, v in s["T_rms"].items() if k != "all")
                  + f"; check {s['check']:.4f} fallback {s['fallback']} calls {s['calls']} {s['cpu_s']:.1f} s CPU",
                  flush=True)
        print("   T truth  (log tau -3 .. -5.3): " + " ".join(f"{t:5.0f}" for t in row["T_true"][::3]))
        for name in starts:
            print(f"   T {name:5s}(log tau -3 .. -5.3): " + " ".join(f"{t:5.0f}" for t in row[f'start_{name}']["T_fit"][::3]))
        if not args.no_rf:
            print("   +100 K in a band (backend NLTE, b free): " + "; ".join(
                f"{k}: dI rms {v['dI_rms']:.1e} max {v['dI_max']:.1e} dchi2 {v['dchi2']:.0f}" for k, v in rf.items()),
                flush=True)
    if args.json:
        args.json.write_text(json.dumps({"code": code_version(), "seed": args.seed, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
