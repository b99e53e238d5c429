"""Benchmark (issue 19): departure round trips of DeSIRe's form on FAL C, field-free and with 500 G at 45°.

Part A, forward (the departure round trip): a backend (Lightweaver, and RH 2 with PYINV_RH_DIR) solves FAL C
(Lightweaver's tables) in NLTE; the engine synthesises the same lines on FAL C interpolated onto a uniform
log τ₅₀₀ grid (1.0 … −5.3, the backend's own τ scale) with the backend's departure coefficients, in DeSIRe's
form and SIR 2017's (Ca II 8542 with pyinv's line list; Fe I 6301/6302 with the Fe23 atom's line data in the
engine, see line_sets). Printed per line and Stokes parameter, each code normalised to its own intensity at the
window's ends: ``direct`` = rms(engine NLTE − backend NLTE) and ``change`` = rms of the difference of the
NLTE − LTE changes (each code's own LTE run), in units of that intensity. Twice: FAL C itself (column-mass
scale: each backend makes its own τ₅₀₀), and FAL C as the engine's model handed to the backend on the τ₅₀₀
scale with the engine's hydrogen populations ("engine model", as the DeSIRe driver hands models). Diagnostics (Lightweaver): the
engine on a 0.02-dex grid and on the backend's own depth points (the interpolation of b), and the backend
given the engine's damping of the mapped lines (``line_broadening=``: the line-shape physics).

Part B, inversions with 500 G at 45° (azimuth 30°): the truth is FAL C on the engine's grid (hydrostatic
P_e), the start a model 150 K hotter around log τ = −2.5, 100 K cooler around −4.5, with 200 G at 30°.
``self``: the engine's DeSIRe-form synthesis with the backend's b inverted with the same b held fixed
(:func:`pyinv.invert_pixel`); ``nlte``: the backend's NLTE profiles of the truth (on the engine's continuum
scale) inverted DeSIRe's way (:func:`pyinv.nlte.invert_pixel_nlte`). Printed: the fit's rms per line and
Stokes parameter (Ic units), B, γ and T at log τ = −1, backend calls, seconds.

    PYTHONPATH=<build>/site:src python benchmarks/bench_desire_roundtrip.py [--json out.json] [--lines ca|fe]
        [--backends 'rh,rh+engine damping'] (RH with PYINV_RH_DIR)
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from _common import code_version, lightweaver_missing

LT = np.round(np.arange(1.0, -5.3 - 1e-9, -0.1), 2)
FIELD = (500.0, 45.0, 30.0)


def line_sets(pyinv, nlte):
    """name -> (mapped indices, engine lines, engine grid, abundances, backend vacuum wavelengths [nm]).
    Ca II 8542: pyinv's line list. Fe I: the engine given the Fe23 atom's log gf, Unsöld damping, positions
    and Lightweaver's Fe abundance (7.44), so that the comparison is
    about the departures, not the atomic data (pyinv.nlte.fe_i_as_lightweaver); the two codes sample the same
    vacuum wavelengths."""
    base = pyinv.default_lines()
    ca = pyinv.WavelengthGrid.from_regions([(8, -1500, 10, 1500)], base)
    fe0 = pyinv.WavelengthGrid.from_regions([(1, -600, 10, 600), (2, -600, 10, 600)], base)
    fe_lines, fe, ab = nlte.fe_i_as_lightweaver(base)
    return {"Ca II 8542": ([8], base, ca, None, nlte.grid_vacuum_nm(base, ca)),
            "Fe I 6301/6302": ([1, 2], fe_lines, fe, ab, nlte.grid_vacuum_nm(base, fe0))}


def rms(a) -> float:
    return float(np.sqrt(np.mean(np.asarray(a) ** 2)))


def regions(grid):
    out, start = [], 0
    for r in grid.regions:
        out.append((r.indices, np.arange(start, start + r.npoints)))
        start += r.npoints
    return out


def forward(pyinv, nlte, be, col, lines, grid, ab, wl, magnetic, grids=None):
    """Part A for one backend: rows of (grid, form, line, stokes, direct, change)."""
    r = be.synthesize(col, wl)
    if not r.ok:
        return [{"error": r.message}]
    rows = []
    for gname, lt in (grids or {"0.1": LT}).items():
        m = nlte.atmosphere_from_column(col, r.tau500, lt)
        if magnetic:
            m = m.with_columns(B=FIELD[0], gamma=FIELD[1], phi=FIELD[2])
        dep = r.departures.on_grid(lt) if gname != "own" else r.departures
        lte = pyinv.synthesize(m, lines, grid, convolve=False, abundances=ab)
        for form in ("desire", "sir"):
            nl = pyinv.synthesize(m, lines, grid, convolve=False, departures=dep, departure_form=form, abundances=ab)
            for idx, j in regions(grid):
                ce, cb = lte[0, j[[0, -1]]].mean(), r.stokes_lte[0, j[[0, -1]]].mean()
                for s in range(4 if magnetic else 1):
                    rows.append({"grid": gname, "form": form, "lines": list(idx), "stokes": "IQUV"[s],
                                 "direct": rms(nl[s, j] / ce - r.stokes[s, j] / cb),
                                 "change": rms((nl[s, j] - lte[s, j]) / ce
                                               - (r.stokes[s, j] - r.stokes_lte[s, j]) / cb),
                                 "core_engine": float(nl[0, j].min() / ce), "core_backend": float(r.stokes[0, j].min() / cb)})
    return rows


def inversions(pyinv, nlte, be, col, lines, grid, ab, wl):
    """Part B for one backend and line set."""
    from pyinv.nlte.desire import invert_pixel_nlte

    r0 = be.synthesize(col, wl)
    base = nlte.atmosphere_from_column(col, r0.tau500, LT, hydrostatic=True)
    truth = base.with_columns(B=FIELD[0], gamma=FIELD[1], phi=FIELD[2])
    T = np.asarray(base.T)
    guess = pyinv.hydrostatic(base.with_columns(T=T + 150 * np.exp(-((LT + 2.5) / 1.5) ** 2)
                                                - 100 * np.exp(-((LT + 4.5) / 0.6) ** 2), B=200.0, gamma=30.0, phi=10.0))
    cfg = pyinv.InversionConfig(cycles=2, nodes={"T": (3, 5), "vlos": (1, 2), "B": (1, 2), "gamma": (1, 1),
                                                 "phi": (1, 1), "vmic": (1, 1)}, weights=(1, 1, 1, 1), snr=1000.0)
    k = int(np.argmin(np.abs(LT + 1.0)))
    out = {}
    rt = be.synthesize(truth, wl, abundances=ab)
    dep = rt.departures
    obs_self = pyinv.synthesize(truth, lines, grid, departures=dep, departure_form="desire", abundances=ab)
    lte = pyinv.synthesize(truth, lines, grid, convolve=False, abundances=ab)
    obs_nlte = np.empty_like(lte)
    for _, j in regions(grid):
        obs_nlte[:, j] = rt.stokes[:, j] * (lte[0, j[[0, -1]]].sum() / rt.stokes_lte[0, j[[0, -1]]].sum())
    for mode in ("self", "nlte"):
        t0 = time.perf_counter()
        if mode == "self":
            obs = obs_self
            res = pyinv.invert_pixel(obs, guess, lines, grid, cfg, departures=dep, departure_form="desire",
                                     abundances=ab)
            calls = 0
        else:
            obs = obs_nlte
            rn = invert_pixel_nlte(obs, guess, lines, grid, cfg, backend=be, abundances=ab)
            res, calls = rn.result, rn.backend_calls
        sec = time.perf_counter() - t0
        a = res.atmosphere
        row = {"status": int(res.status), "chi2": float(res.chi2[-1]), "backend_calls": calls, "seconds": sec,
               "B_-1": float(a.B[k]), "gamma_-1": float(a.gamma[k]), "T_-1": float(a.T[k]), "T_-1_truth": float(truth.T[k]),
               "T_rms_-1_-5.3": rms((a.T - truth.T)[LT <= -1.0])}
        for idx, j in regions(grid):
            for s in range(4):
                row[f"rms_{'+'.join(map(str, idx))}_{'IQUV'[s]}"] = rms(res.fit[s, j] - obs[s, j])
        out[mode] = row
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--skip-inversions", action="store_true")
    ap.add_argument("--lines", choices=("all", "ca", "fe"), default="all", help="line sets (default both)")
    ap.add_argument("--backends", default=None,
                    help="comma-separated backend names to run (default all: lightweaver, 'lightweaver+engine "
                         "damping', and with PYINV_RH_DIR rh, 'rh+engine damping')")
    args = ap.parse_args(argv)
    if lightweaver_missing():
        return 0
    import pyinv
    from pyinv import nlte
    from pyinv.nlte.departures import clean_tau_grid
    from pyinv.nlte.lw import falc_column

    warnings.simplefilter("ignore")
    rh = bool(os.environ.get("PYINV_RH_DIR"))
    result = {"code": code_version(), "rh": rh, "forward": {}, "inversions": {}}
    for name, (idx, lines, grid, ab, wl) in line_sets(pyinv, nlte).items():
        if args.lines != "all" and not name.lower().startswith(args.lines):
            continue
        lm = nlte.level_map(pyinv.default_lines(), idx)
        backends = {"lightweaver": nlte.Lightweaver(lm, hydrogen="model", prd=False, lte=True),
                    "lightweaver+engine damping": nlte.Lightweaver(lm, hydrogen="model", prd=False, lte=True,
                                                                   line_broadening=lines)}
        if rh:   # RH reads a copy of its atom file with the engine's damping of the mapped lines
            backends["rh"] = nlte.RH(lm, lte=True)
            backends["rh+engine damping"] = nlte.RH(lm, lte=True, line_broadening=lines)
        if args.backends:
            keep = [b.strip() for b in args.backends.split(",")]
            backends = {k: v for k, v in backends.items() if k in keep}
        # FAL C as the engine's model (log tau500 1.0 ... -5.3 on Lightweaver's tau scale, P_e = n_e kT) handed to
        # the backends on the tau500 scale with the engine's LTE hydrogen populations, as the DeSIRe driver
        # hands models: both codes then share T, n_e, n_H on one tau500 scale (FAL C itself is on the
        # column-mass scale, which each backend turns into tau500 with its own 500-nm opacity)
        r_lw = backends.get("lightweaver", nlte.Lightweaver(lm, hydrogen="model", prd=False, lte=True)).synthesize(
            falc_column(), wl)
        model_col = nlte.column_from_atmosphere(nlte.atmosphere_from_column(falc_column(), r_lw.tau500, LT))
        for magnetic, col_name in ((False, "FAL C"), (True, "FAL C"), (False, "FAL C model"), (True, "FAL C model")):
            col = falc_column() if col_name == "FAL C" else model_col
            col = col.with_field(*FIELD) if magnetic else col
            for bname, be in backends.items():
                grids = None
                if bname == "lightweaver" and not magnetic and col_name == "FAL C":
                    rb = be.synthesize(col, wl)
                    lt_be = np.log10(rb.tau500)
                    own = np.sort(lt_be[clean_tau_grid(lt_be)])[::-1]
                    grids = {"0.1": LT, "0.02": np.round(np.arange(1.0, -5.3 - 1e-9, -0.02), 3), "own": own}
                t0 = time.perf_counter()
                rows = forward(pyinv, nlte, be, col, lines, grid, ab, wl, magnetic, grids)
                key = f"{name} | {'500 G' if magnetic else 'field-free'} | {bname}"
                key += " | engine model (tau500 + n_H)" if col_name != "FAL C" else ""
                result["forward"][key] = rows
                print(f"\n{key} ({time.perf_counter() - t0:.0f} s)")
                for r in rows:
                    if "error" in r:
                        print("   ", r["error"])
                        continue
                    print(f"    grid {r['grid']:>4s} {r['form']:6s} line {r['lines']} {r['stokes']}: direct {r['direct']:.4f} "
                          f"change {r['change']:.4f} (core {r['core_engine']:.3f} vs {r['core_backend']:.3f})", flush=True)
        if args.skip_inversions:
            continue
        col = falc_column().with_field(*FIELD)
        for bname, be in backends.items():
            out = inversions(pyinv, nlte, be, col, lines, grid, ab, wl)
            key = f"{name} | {bname}"
            result["inversions"][key] = out
            print(f"\ninversion round trip, 500 G at 45 deg, {key}:")
            for mode, row in out.items():
                fits = ", ".join(f"{k[4:]} {v:.5f}" for k, v in row.items() if k.startswith("rms_"))
                print(f"    {mode:4s}: chi2 {row['chi2']:.3g}, calls {row['backend_calls']}, {row['seconds']:.1f} s; "
                      f"B(-1) {row['B_-1']:.0f} G, gamma {row['gamma_-1']:.1f}, T(-1) {row['T_-1']:.0f} "
                      f"(truth {row['T_-1_truth']:.0f}), T rms -1..-5.3 {row['T_rms_-1_-5.3']:.0f} K; fit rms: {fits}",
                      flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
