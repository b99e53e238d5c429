"""Benchmark (issue 11): DeSIRe-style NLTE inversion of Ca II 8542 with the Lightweaver backend.

Ten synthetic pixels: FAL C (Lightweaver's) on a uniform log τ₅₀₀ grid 1.0 … −5.3 (the backend's own τ range)
with smooth perturbations — T ±300 K above log τ = −3, v_los ±2 km/s, B 0–1500 G at any inclination and
azimuth — whose Ca II 8542 Stokes profiles come from the backend in NLTE (on the engine's continuum scale),
plus noise 1e-3. Each is inverted from FAL C (a) DeSIRe-style (:func:`pyinv.nlte.invert_pixel_nlte`: b frozen
between backend calls, the NLTE − (LTE+b) correction frozen, the backend re-run each cycle and when T moves
by > 1 %) and (b) in LTE, with the same configuration. Printed: T rms per depth band, v_los and B errors at
log τ = −1 and −4, χ² of both, backend calls and seconds per pixel; JSON with --json.

    PYTHONPATH=<build>/site:src python benchmarks/bench_desire.py [--pixels 10] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from _common import code_version, lightweaver_missing


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pixels", type=int, default=10)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--backend", choices=("lightweaver", "rh"), default="lightweaver",
                    help="backend for the observations and the inversion (rh: PYINV_RH_DIR)")
    args = ap.parse_args(argv)
    if lightweaver_missing():
        return 0
    import pyinv
    from pyinv import nlte
    from pyinv.nlte.desire import _convolve_like_synthesis, invert_pixel_nlte
    from pyinv.nlte.lw import falc_column

    warnings.simplefilter("ignore")
    col = falc_column()   # FAL C from Lightweaver's tables
    lines = pyinv.default_lines()
    grid = pyinv.WavelengthGrid.from_regions([(8, -1500, 30, 1500)], lines)
    wl = nlte.grid_vacuum_nm(lines, grid)
    lw = nlte.Lightweaver(nlte.level_map(lines, [8]), hydrogen="model", prd=False, lte=True)
    r0 = lw.synthesize(col, wl)
    be = lw if args.backend == "lightweaver" else nlte.RH(nlte.level_map(lines, [8]), lte=True)
    lt = np.round(np.arange(1.0, -5.3 - 1e-9, -0.1), 2)
    base = nlte.atmosphere_from_column(col, r0.tau500, lt, hydrostatic=True)
    rng = np.random.default_rng(args.seed)
    cfg = pyinv.InversionConfig(cycles=2, nodes={"T": (3, 5), "vlos": (1, 2), "B": (1, 2), "gamma": (1, 1),
                                                 "phi": (1, 1), "vmic": (1, 1)}, weights=(1, 1, 1, 1), snr=1000.0)
    base = base.with_columns(B=100.0, gamma=45.0, phi=30.0)   # relative parameters need nonzero starts
    bands = [(-1.0, -2.0), (-2.0, -3.0), (-3.0, -4.0), (-4.0, -5.3)]
    rows = []
    for p in range(args.pixels):
        up = 1.0 / (1.0 + np.exp((lt + 3.0) / 0.3))            # 1 above log tau = -3
        dT = rng.uniform(-300, 300) * up
        v = rng.uniform(-2e5, 2e5) + rng.uniform(-1e5, 1e5) * (lt + 2.0) / 3.0
        B = rng.uniform(0, 1500) * (1.0 + 0.1 * (lt + 2.0) / 3.0)
        truth = pyinv.hydrostatic(base.with_columns(T=np.asarray(base.T) + dT, vlos=v, B=np.maximum(B, 1.0),
                                                    gamma=rng.uniform(5, 175), phi=rng.uniform(0, 180)))
        rt = be.synthesize(truth, wl)
        lte = pyinv.synthesize(truth, lines, grid, convolve=False)
        obs = rt.stokes * (lte[0, [0, -1]].sum() / rt.stokes_lte[0, [0, -1]].sum())
        obs = _convolve_like_synthesis(obs, lines, grid, 0.0, None) + rng.normal(0, 1e-3, obs.shape)
        t0 = time.perf_counter()
        rn = invert_pixel_nlte(obs, base, lines, grid, cfg, backend=be)
        t_n = time.perf_counter() - t0
        t0 = time.perf_counter()
        rl = pyinv.invert_pixel(obs, base, lines, grid, cfg)
        t_l = time.perf_counter() - t0
        an, al = rn.result.atmosphere, rl.atmosphere
        row = {"pixel": p, "backend_calls": rn.backend_calls, "seconds_nlte": t_n, "seconds_lte": t_l,
               "chi2_nlte": float(rn.result.chi2[-1]), "chi2_lte": float(rl.chi2[-1]), "status": rn.status}
        for lo, hi in bands:
            m = (lt <= lo) & (lt >= hi)
            row[f"dT_rms_{lo}_{hi}_nlte"] = float(np.sqrt(np.mean((an.T[m] - truth.T[m]) ** 2)))
            row[f"dT_rms_{lo}_{hi}_lte"] = float(np.sqrt(np.mean((al.T[m] - truth.T[m]) ** 2)))
        for z in (-1.0, -4.0):
            k = int(np.argmin(np.abs(lt - z)))
            row[f"dv_{z}_nlte_kms"] = float((an.vlos[k] - truth.vlos[k]) / 1e5)
            row[f"dB_{z}_nlte_G"] = float(an.B[k] - truth.B[k])
            row[f"dv_{z}_lte_kms"] = float((al.vlos[k] - truth.vlos[k]) / 1e5)
            row[f"dB_{z}_lte_G"] = float(al.B[k] - truth.B[k])
        m = (lt <= -1.0) & (lt >= -5.3)
        row["dT_rms_nlte"] = float(np.sqrt(np.mean((an.T[m] - truth.T[m]) ** 2)))
        row["dT_rms_lte"] = float(np.sqrt(np.mean((al.T[m] - truth.T[m]) ** 2)))
        rows.append(row)
        print(f"pixel {p}: T rms (-1..-5.3) NLTE {row['dT_rms_nlte']:6.0f} K, LTE {row['dT_rms_lte']:6.0f} K; "
              f"chi2 NLTE {row['chi2_nlte']:9.2f}, LTE {row['chi2_lte']:9.2f}; calls {rn.backend_calls}; "
              f"{t_n:5.1f} s (LTE {t_l:4.1f} s)", flush=True)
    def col_(k):
        return np.array([r[k] for r in rows])
    print("\nT rms over pixels [K], NLTE vs LTE inversion:")
    for lo, hi in bands:
        print(f"  log tau {lo:5.1f} .. {hi:5.1f}: {np.sqrt(np.mean(col_(f'dT_rms_{lo}_{hi}_nlte') ** 2)):6.0f} vs "
              f"{np.sqrt(np.mean(col_(f'dT_rms_{lo}_{hi}_lte') ** 2)):6.0f}")
    tot_n = float(np.sqrt(np.mean(col_("dT_rms_nlte") ** 2)))
    print(f"  all (-1 .. -5.3): {tot_n:.0f} vs {np.sqrt(np.mean(col_('dT_rms_lte') ** 2)):.0f}  (target <= 200 K)")
    for z in (-1.0, -4.0):
        print(f"  log tau {z}: vlos rms {np.sqrt(np.mean(col_(f'dv_{z}_nlte_kms') ** 2)):.2f} km/s "
              f"(LTE {np.sqrt(np.mean(col_(f'dv_{z}_lte_kms') ** 2)):.2f}), B rms {np.sqrt(np.mean(col_(f'dB_{z}_nlte_G') ** 2)):.0f} G "
              f"(LTE {np.sqrt(np.mean(col_(f'dB_{z}_lte_G') ** 2)):.0f})")
    print(f"  chi2 below the LTE inversion's on {int(np.sum(col_('chi2_nlte') < col_('chi2_lte')))}/{len(rows)} pixels; "
          f"median chi2 {np.median(col_('chi2_nlte')):.2f} vs {np.median(col_('chi2_lte')):.2f}")
    print(f"  backend calls per pixel {col_('backend_calls').mean():.1f}; {col_('seconds_nlte').mean():.1f} s per pixel "
          f"(LTE inversion {col_('seconds_lte').mean():.2f} s)")
    if args.json:
        args.json.write_text(json.dumps({"code": code_version(), "backend": args.backend, "rows": rows,
                                         "dT_rms_nlte": tot_n}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
