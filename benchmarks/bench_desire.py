"""Benchmark (issues 11, 19): DeSIRe-style NLTE inversions with the Lightweaver or RH backend.

Synthetic pixels on FAL C (Lightweaver's tables) on a uniform log τ₅₀₀ grid 1.0 … −5.3 (the backend's own τ
range); their Ca II 8542 Stokes profiles come from the *observing* backend (``--obs``) in NLTE, put on the
engine's continuum scale region by region (:func:`pyinv.nlte.desire.on_engine_scale`), plus noise 1e-3; each
pixel is inverted from FAL C (a) DeSIRe-style with the *inverting* backend (``--backend``;
:func:`pyinv.nlte.invert_pixel_nlte`: b frozen between backend calls, the NLTE − (LTE+b) correction frozen,
the backend re-run each cycle and when T moves by > 1 %) and (b) in LTE, with the same configuration.
``--obs rh --backend lightweaver`` is the cross-code case (issue 19: observations from RH 2, inversion
with Lightweaver).

Cases (``--case``):

``ca``      Ca II 8542 ±1.5 Å alone; T ±300 K above log τ = −3, v_los ±2 km/s with a gradient, B 0–1500 G
            (10 % gradient) at any inclination and azimuth (the issue-11 family).
``joint``   Fe I 6301.5/6302.5 (LTE, b = 1; Hinode SP-like sampling, 20 mÅ) + Ca II 8542 (NLTE) on one grid,
            one node model (B with 2 nodes), one χ²; the same family with B 0–1500 G varying ±30 % between
            log τ = −1 and −4. The Fe I profiles are the engine's LTE synthesis (Fe I is in LTE by
            assumption); only Ca II comes from the observing backend.
``unseen``  Ca II 8542 alone, chromospheric features outside the family above (and outside the training
            family of the departure emulator of issue 19): in turn a double T bump (two Gaussians of
            ±250–500 K at log τ ≈ −3.5 and −5), a steep transition-region-like rise low down (+2–5 kK over
            0.3 dex at log τ −4.6 … −5.0) and a strong velocity gradient (v_los from ~0 at log τ = −2 to
            ±5–8 km/s at −5.3); B 0–1000 G.
``novel``   Ca II 8542 alone, the fair unseen-feature set of the departure emulator (issue 19): temperature
            structures outside the ranges or shapes of its training generator (:mod:`pyinv.nlte.columns`:
            FAL C's chromospheric rise × 0.3–2.5 shifted ±0.5 dex, T-minimum offset ±300 K (a step at
            log τ ≈ −2.5), 0–2 Gaussian bumps of 100–700 K and 0.25–0.8 dex) that the last cycle's five T
            nodes can represent (parametrisation floor ≤ ~45 K; shifting FAL C's steep rise is not: ~400 K)
            and 8542 sees, in turn: "cold chromosphere" (a Gaussian dip of 500–800 K, 0.9–1.2 dex wide,
            centred at log τ −4.0 … −3.3: wider than any training bump), "warm chromosphere" (the same, +,
            centred at −5.0 … −4.5), "plateau" (the upper chromosphere flattened: above a knee at
            log τ −4.5 … −4.3 the gradient lowered by 1200–1500 K/dex, 1100–1400 K cooler at the top: no
            scaled rise has FAL C's step with a flat top, and no training bump is that strong), "T-min offset"
            (everything above log τ ≈ −2.5 moved by +450–650 K, then −450–650 K: beyond the ±300 K offsets)
            and "deep heating" (a warm layer, +350–550 K, whose rise is centred at log τ −3.1 … −2.8, 0.25 dex
            wide: below any shifted training rise, stronger than the ±300 K offsets); v_LOS and B as in ``ca``
            (inside the training ranges).
``--departures`` picks the NLTE inversion: ``backend`` (default; the backend's b at every call),
``emulated`` (:func:`pyinv.nlte.invert_pixel_nlte` with ``departures="emulated"``: the packaged emulator's b
while iterating, one backend call to check, the backend iterations as the fallback) or ``both``; the
emulated rows carry the check, fallback and backend calls (``_emu`` keys).

Printed: T rms per depth band, v_los and B errors at log τ = −1 and −4, χ² of both inversions, backend calls
and seconds per pixel, and the parametrisation floor (the T rms of the best least-squares correction of the
start by the last cycle's T nodes: what no inversion with these nodes can beat), per kind of pixel; ``--json`` writes the rows (the .txt next to it is the printed output).

    PYTHONPATH=<build>/site:src python benchmarks/bench_desire.py [--case ca|joint|unseen|novel] [--pixels 10]
        [--obs lightweaver|rh] [--backend lightweaver|rh] [--departures backend|emulated|both] [--json out.json]
        [--seed 11] [--t-nodes 3,5[,..]] [--t-positions LOGTAU,..] [--check-threshold 0.01]
        [--fallback short|full] [--t-placement equidistant|sensitivity] [--sensitivity-dchi2 500]
        [--t-refine auto|none|map]

Set-up studies (issue 19, docs/nlte.md "Why the novel set misses 80 K"): ``--t-nodes`` one cycle per entry
(the engine rounds equidistant counts to those its grid allows: on this 64-point grid 3 → 2, 5 → 4, 7 → 4),
``--t-positions`` explicit log τ positions of the last cycle's T nodes, ``--check-threshold`` the emulated
inversion's check threshold, ``--fallback`` its fallback, ``--t-placement sensitivity`` the last cycle's T nodes
up to the highest layer the data see (``--sensitivity-dchi2``); tune on another ``--seed`` than the reported 11.
``--diagnose P ...``: pixels P of the case diagnosed instead (:func:`diagnose`).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

from _common import (REGIONS, case_setup, code_version, lightweaver_missing, make_backend, observed, perturbation,
                     pin_threads, truth_model)

pin_threads()   # before numpy: one thread per process (CPU seconds are reported)
import numpy as np  # noqa: E402

BANDS = [(-1.0, -2.0), (-2.0, -3.0), (-3.0, -4.0), (-4.0, -5.3)]
#: inversion nodes per cycle; the joint case lets B vary with height
NODES = {"ca": {"T": (3, 5), "vlos": (1, 2), "B": (1, 2), "gamma": (1, 1), "phi": (1, 1), "vmic": (1, 1)},
         "joint": {"T": (3, 5), "vlos": (1, 2), "B": (2, 2), "gamma": (1, 1), "phi": (1, 1), "vmic": (1, 1)}}
NODES["unseen"] = NODES["novel"] = NODES["ca"]
#: row-key suffix and printed name of each inversion
SUFFIX = {"backend": "_nlte", "emulated": "_emu"}
NAME = {"_nlte": "NLTE", "_emu": "emulated", "_lte": "LTE", "_floor": "floor"}


def case_nodes(case: str, t_nodes: str | None = None) -> dict:
    """The inversion nodes of ``case`` per cycle; ``t_nodes`` ("3,5,7"): T nodes per cycle, one cycle each, the
    other parameters extended with their last cycle's nodes."""
    nodes = {k: tuple(v) for k, v in NODES[case].items()}
    if t_nodes is None:
        return nodes
    t = tuple(int(x) for x in t_nodes.split(","))
    if not t or min(t) < 1:
        raise ValueError(f"--t-nodes needs positive node counts, got {t_nodes!r}")
    out = {"T": t}
    for k, v in nodes.items():
        if k != "T":
            out[k] = (v + (v[-1],) * len(t))[:len(t)]
    return out


def node_correction(lt: np.ndarray, dT: np.ndarray, m: np.ndarray, n: int, positions=None) -> np.ndarray:
    """The best least-squares n-node correction [K] on the whole grid ``lt`` (the engine's node basis, as the
    inversion's last cycle uses; ``positions``: its explicit log τ positions) to a change ``dT`` from the start,
    fitted over the depths ``m``."""
    from pyinv import engine

    f, _ = (engine.inv_node_basis(lt, len(positions), positions) if positions is not None
            else engine.inv_node_basis(lt, engine.inv_allowed_nodes(lt.size, n)))
    return f @ np.linalg.lstsq(f[m], dT[m], rcond=None)[0]


def node_floor(lt: np.ndarray, dT: np.ndarray, m: np.ndarray, n: int, positions=None) -> float:
    """T rms [K] over the depths ``m`` of :func:`node_correction`: what the parametrisation can reach."""
    fit = node_correction(lt, dT, m, n, positions)
    return float(np.sqrt(np.mean((fit[m] - dT[m]) ** 2)))


SIGMA = 1e-3
RF_BANDS = [(-3.0, -3.5), (-3.5, -4.0), (-4.0, -4.5), (-4.5, -5.0), (-5.0, -5.3)]
T_BANDS = [(-1.0, -3.0), (-3.0, -4.0), (-4.0, -5.3)]


def diagnose(args) -> int:
    """``--diagnose P ...`` (issue 19; docs/nlte.md "Why the novel set misses 80 K"): for pixels P of the case
    (same seed, pixels and noise as the benchmark), the emulated NLTE inversion (Lightweaver) started (a) from
    FAL C, (b) from the floor model (FAL C plus the best node correction towards the truth) and (c) from the
    truth, with χ²_I = mean (O − S)² / σ² over Stokes I (σ = 1e-3: ≈ 1 at the noise level) and T rms per band;
    χ²_I of the truth and of the floor model; unless ``--no-rf``, the backend's NLTE Stokes I change for
    +100 K in one band at the truth (b free), as rms, maximum and Δχ² = Σ ΔI² / σ²."""
    import pyinv
    from pyinv.nlte.desire import invert_pixel_nlte
    from pyinv.nlte.emulator import pretrained_emulator

    lines, grid, regs, wl, lw, lt, base = case_setup(args.case)
    rng = np.random.default_rng(args.seed)
    cfg = pyinv.InversionConfig(cycles=2, nodes=NODES[args.case], weights=(1, 1, 1, 1), snr=1000.0)
    emu = pretrained_emulator()
    m_all = (lt <= -1.0) & (lt >= -5.3)

    def observe(model):
        return observed(lw.synthesize(model, wl), model, lines, grid, regs)

    def chi_i(a, b):
        return float(np.mean((a[0] - b[0]) ** 2) / SIGMA ** 2)

    def t_err(T, truth):
        out = {"all": float(np.sqrt(np.mean((T[m_all] - truth[m_all]) ** 2)))}
        for lo, hi in T_BANDS:
            m = (lt <= lo) & (lt >= hi)
            out[f"{lo}_{hi}"] = float(np.sqrt(np.mean((T[m] - truth[m]) ** 2)))
        return out

    rows = []
    for p in range(max(args.diagnose) + 1):
        pert, kind = perturbation(args.case, lt, rng, p, np.asarray(base.T))
        truth = truth_model(base, pert)
        clean = observe(truth)
        obs = clean + rng.normal(0, SIGMA, clean.shape)
        if p not in args.diagnose:
            continue
        T_true = np.asarray(truth.T)
        # the floor model: FAL C plus the best 5-node T correction towards the truth (v, B ... of the truth)
        dT = T_true - np.asarray(base.T)
        floor_model = pyinv.hydrostatic(truth.with_columns(T=np.asarray(base.T) + node_correction(lt, dT, m_all, 5)))
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
        args.json.write_text(json.dumps({"code": code_version(), "case": args.case, "seed": args.seed,
                                         "diagnose": args.diagnose, "rows": rows}, indent=1) + "\n")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--case", choices=sorted(REGIONS), default="ca")
    ap.add_argument("--pixels", type=int, default=10)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--backend", choices=("lightweaver", "rh"), default="lightweaver",
                    help="backend of the inversion (rh: PYINV_RH_DIR)")
    ap.add_argument("--obs", choices=("lightweaver", "rh"), default=None,
                    help="backend that makes the observations [--backend]; rh with --backend lightweaver is the "
                         "cross-code case")
    ap.add_argument("--departures", choices=("backend", "emulated", "both"), default="backend",
                    help="the NLTE inversion's b: the backend's, the packaged emulator's (checked by one backend "
                         "call) or both inversions in turn")
    ap.add_argument("--t-nodes", default=None,
                    help="T nodes per cycle, comma-separated (e.g. 3,5,7): one cycle per entry, the other "
                         "parameters keep their last cycle's nodes [the case's: 3,5]")
    ap.add_argument("--check-threshold", type=float, default=None,
                    help="the emulated inversion's check threshold [continuum units] (invert_pixel_nlte's "
                         "check_threshold; a large value never falls back) [the library's: 0.03 with the "
                         "refinement, 0.01 without]")
    ap.add_argument("--t-positions", default=None,
                    help="explicit log tau positions of the last cycle's T nodes, comma-separated (their number "
                         "replaces that cycle's T nodes; invert_pixel's node_positions) [equidistant]")
    ap.add_argument("--t-placement", choices=("equidistant", "sensitivity"), default="equidistant",
                    help="the emulated inversion's last-cycle T nodes: SIR's equidistant layout or per pixel up to "
                         "the highest layer the data see (invert_pixel_nlte's t_placement) [equidistant]")
    ap.add_argument("--sensitivity-dchi2", type=float, default=None,
                    help="the chi2 change of the sensitivity rule (invert_pixel_nlte's sensitivity_dchi2)")
    ap.add_argument("--t-refine", choices=("auto", "none", "map"), default="auto",
                    help="the emulated inversion's regularised T refinement after the last cycle (invert_pixel_nlte's "
                         "t_refine; docs/nlte.md 'Regularised refinement') [auto: the library's default, map on the "
                         "Ca II cases, none on joint]")
    ap.add_argument("--fallback", choices=("full", "short"), default="short",
                    help="the emulated inversion's fallback when the check fails (invert_pixel_nlte's fallback) "
                         "[short]")
    ap.add_argument("--interpolation", type=int, default=None,
                    help="the last cycle's interpolation mode (InversionConfig.interpolation: 0 splines, 1 linear, "
                         "2-5 regularised) [0]")
    ap.add_argument("--diagnose", type=int, nargs="+", default=None, metavar="P",
                    help="diagnose pixels P instead of the benchmark: the emulated inversion from FAL C, from the "
                         "floor model and from the truth, and the backend's T sensitivity per band (diagnose())")
    ap.add_argument("--no-rf", action="store_true", help="--diagnose without the T sensitivity")
    args = ap.parse_args(argv)
    if args.diagnose is not None and lightweaver_missing():
        return 0
    if args.diagnose is not None:
        if args.case == "joint":
            ap.error("--diagnose takes the Ca II 8542 cases (ca, unseen, novel)")
        return diagnose(args)
    nodes = case_nodes(args.case, args.t_nodes)
    tpos = None if not args.t_positions else [float(x) for x in args.t_positions.split(",")]
    if tpos is not None:
        nodes["T"] = (*nodes["T"][:-1], len(tpos))
    ikw = {} if tpos is None else {"node_positions": {"T": tpos}}
    ikw_nlte = {"t_placement": args.t_placement, "sensitivity_dchi2": args.sensitivity_dchi2,
                "t_refine": None if args.t_refine == "none" else args.t_refine}
    modes = ("backend", "emulated") if args.departures == "both" else (args.departures,)
    obs_name = args.obs or args.backend
    if lightweaver_missing():
        return 0
    import pyinv
    from pyinv.nlte.desire import invert_pixel_nlte

    lines, grid, regs, wl, lw, lt, base = case_setup(args.case)
    be = lw if args.backend == "lightweaver" else make_backend(args.backend, lines)
    ob = lw if obs_name == "lightweaver" else (be if obs_name == args.backend else make_backend(obs_name, lines))
    rng = np.random.default_rng(args.seed)
    interp = {} if args.interpolation is None else {
        "interpolation": (0,) * (len(nodes["T"]) - 1) + (args.interpolation,)}
    cfg = pyinv.InversionConfig(cycles=len(nodes["T"]), nodes=nodes, weights=(1, 1, 1, 1), snr=1000.0, **interp)
    print(f"case {args.case}: observations {obs_name}, inversion {args.backend}; {args.pixels} pixels, "
          f"{grid.nwav} wavelengths ({len(grid.regions)} regions), {lt.size} depths")
    emu = None
    if "emulated" in modes:     # loaded once, outside the timed inversions
        from pyinv.nlte.emulator import pretrained_emulator
        emu = pretrained_emulator()
    rows = []
    for p in range(args.pixels):
        pert, kind = perturbation(args.case, lt, rng, p, np.asarray(base.T))
        truth = truth_model(base, pert)
        rt = ob.synthesize(truth, wl)
        if not rt.ok:
            print(f"pixel {p} ({kind}): the observing backend failed (status {rt.status}: {rt.message}); skipped")
            rows.append({"pixel": p, "kind": kind, "obs_status": int(rt.status)})
            continue
        obs = observed(rt, truth, lines, grid, regs)
        obs = obs + rng.normal(0, 1e-3, obs.shape)
        row = {"pixel": p, "kind": kind, "truth_B_-1": float(truth.B[np.argmin(np.abs(lt + 1))]),
               "truth_B_-4": float(truth.B[np.argmin(np.abs(lt + 4))])}
        results, failed = {}, False
        for mode in modes:
            t0, c0 = time.perf_counter(), time.process_time()
            rn = invert_pixel_nlte(obs, base, lines, grid, cfg, backend=be, departures=mode,
                                   emulator=emu if mode == "emulated" else None,
                                   **({"check_threshold": args.check_threshold, "fallback": args.fallback,
                                       **ikw_nlte} if mode == "emulated" else {}), **ikw)
            results[SUFFIX[mode]] = rn.result
            sfx = SUFFIX[mode]
            row.update({f"backend_calls{sfx}": rn.backend_calls, f"seconds{sfx}": time.perf_counter() - t0,
                        f"cpu_seconds{sfx}": time.process_time() - c0, f"status{sfx}": rn.status})
            if "t_nodes" in rn.provenance:
                row[f"t_nodes{sfx}"] = rn.provenance["t_nodes"]
            if "refine" in rn.provenance:
                row[f"refine{sfx}"] = rn.provenance["refine"]
            if mode == "backend":
                row["backend_calls"], row["status"] = rn.backend_calls, rn.status     # the keys of earlier results
            else:
                prov = rn.provenance
                row.update({"check_emu": prov.get("check"), "fallback_emu": bool(prov.get("fallback")),
                            "emulator": {k: v for k, v in prov.get("emulator", {}).items() if k != "file"}})
                if prov.get("fallback"):
                    row["fallback_kind_emu"] = prov.get("fallback_kind")
                    if "short_fallback" in prov:
                        row["short_fallback_emu"] = prov["short_fallback"]
            if rn.result is None:
                print(f"pixel {p} ({kind}): the inverting backend failed at the start ({mode}, status {rn.status}); "
                      "skipped")
                failed = True
        t0 = time.perf_counter()
        results["_lte"] = pyinv.invert_pixel(obs, base, lines, grid, cfg, **ikw)
        row["seconds_lte"] = time.perf_counter() - t0
        if failed:
            rows.append(row)
            continue
        for sfx, res in results.items():
            a = res.atmosphere
            row[f"chi2{sfx}"] = float(res.chi2[-1])
            for lo, hi in BANDS:
                m = (lt <= lo) & (lt >= hi)
                row[f"dT_rms_{lo}_{hi}{sfx}"] = float(np.sqrt(np.mean((a.T[m] - truth.T[m]) ** 2)))
            for z in (-1.0, -4.0):
                k = int(np.argmin(np.abs(lt - z)))
                row[f"dv_{z}{sfx}_kms"] = float((a.vlos[k] - truth.vlos[k]) / 1e5)
                row[f"dB_{z}{sfx}_G"] = float(a.B[k] - truth.B[k])
            m = (lt <= -1.0) & (lt >= -5.3)
            row[f"dT_rms{sfx}"] = float(np.sqrt(np.mean((a.T[m] - truth.T[m]) ** 2)))
        m = (lt <= -1.0) & (lt >= -5.3)
        row["dT_rms_floor"] = node_floor(lt, np.asarray(truth.T) - np.asarray(base.T), m,
                                         max(nodes["T"]), tpos)
        rows.append(row)
        print(f"pixel {p} ({kind}): T rms (-1..-5.3) " + ", ".join(
            f"{NAME[s]} {row[f'dT_rms{s}']:6.0f} K" for s in results) + f" (floor {row['dT_rms_floor']:.0f} K); "
              + "; ".join(f"{NAME[s]} dB(-1) {row[f'dB_-1.0{s}_G']:+5.0f} G, chi2 {row[f'chi2{s}']:8.2f}, calls "
                          f"{row[f'backend_calls{s}']}, {row[f'cpu_seconds{s}']:4.1f} s CPU" for s in results
                          if s != "_lte")
              + (f"; check {row['check_emu']['profile_rms']:.4f}, fallback {row['fallback_emu']}" if "_emu" in results
                 else "") + (f" ({row['fallback_kind_emu']})" if row.get("fallback_kind_emu") else "")
              + "".join(f"; {NAME[s]} T top node {row[f't_nodes{s}']['positions'][-1]:.2f}" for s in results
                        if f"t_nodes{s}" in row)
              + f" (B {row['truth_B_-1']:.0f}/{row['truth_B_-4']:.0f})", flush=True)
    sfxs = [SUFFIX[m_] for m_ in modes]
    done = [r for r in rows if all(f"dT_rms{s}" in r for s in sfxs)]
    if not done:
        print("no pixel inverted")
        return 1

    def col_(k):
        return np.array([r[k] for r in done], dtype=float)

    def rms(k):
        return float(np.sqrt(np.mean(col_(k) ** 2)))

    cross = obs_name != args.backend
    target = 150 if cross else 80
    print(f"\n{len(done)} of {len(rows)} pixels inverted. T rms over pixels [K], "
          + " vs ".join(NAME[s] for s in (*sfxs, "_lte")) + ":")
    for lo, hi in BANDS:
        print(f"  log tau {lo:5.1f} .. {hi:5.1f}: "
              + " vs ".join(f"{rms(f'dT_rms_{lo}_{hi}{s}'):6.0f}" for s in (*sfxs, "_lte")))
    print("  all (-1 .. -5.3): " + " vs ".join(f"{rms(f'dT_rms{s}'):.0f}" for s in (*sfxs, "_lte"))
          + f"  (issue 19 target <= {target} K{' cross-code' if cross else ', same backend'})")
    print(f"  best {max(nodes['T'])}-node T correction of the start (parametrisation floor): "
          f"{rms('dT_rms_floor'):.0f} K")
    kinds = sorted({r["kind"] for r in done})
    if len(kinds) > 1:
        for kd in kinds:
            sel = [r for r in done if r["kind"] == kd]

            def krms(k):
                return np.sqrt(np.mean([r[k] ** 2 for r in sel]))

            print(f"  {kd} ({len(sel)}): T rms " + ", ".join(f"{NAME[s]} {krms(f'dT_rms{s}'):.0f} K" for s in sfxs)
                  + f" (floor {krms('dT_rms_floor'):.0f} K, LTE {krms('dT_rms_lte'):.0f} K); B rms at -1 "
                  + ", ".join(f"{krms(f'dB_-1.0{s}_G'):.0f}" for s in sfxs) + " G; v rms at -1 "
                  + ", ".join(f"{krms(f'dv_-1.0{s}_kms'):.2f}" for s in sfxs) + " km/s")
    for z in (-1.0, -4.0):
        print(f"  log tau {z}: vlos rms " + ", ".join(f"{rms(f'dv_{z}{s}_kms'):.2f}" for s in (*sfxs, "_lte"))
              + " km/s, B rms " + ", ".join(f"{rms(f'dB_{z}{s}_G'):.0f}" for s in (*sfxs, "_lte")) + " G")
    if args.case == "joint":
        print("  issue 19 targets (joint, cross-code): B rms <= 100 G at log tau -1, <= 150 G at -4")
    for s in sfxs:
        print(f"  {NAME[s]}: chi2 below the LTE inversion's on {int(np.sum(col_(f'chi2{s}') < col_('chi2_lte')))}/"
              f"{len(done)} pixels, median chi2 {np.median(col_(f'chi2{s}')):.2f} (LTE {np.median(col_('chi2_lte')):.2f});"
              f" backend calls per pixel {col_(f'backend_calls{s}').mean():.2f}; {col_(f'seconds{s}').mean():.1f} s wall, "
              f"{col_(f'cpu_seconds{s}').mean():.2f} s CPU per pixel (under load)"
              + (f"; {int(sum(r['fallback_emu'] for r in done))} fallbacks" if s == "_emu" else ""))
    print(f"  LTE inversion {col_('seconds_lte').mean():.2f} s wall per pixel")
    if args.json:
        summary = {"dT_rms_lte": rms("dT_rms_lte"), "dT_rms_floor": rms("dT_rms_floor"), "pixels": len(done)}
        for s in sfxs:
            summary.update({f"dT_rms{s}": rms(f"dT_rms{s}"),
                            **{f"dT_rms_{lo}_{hi}{s}": rms(f"dT_rms_{lo}_{hi}{s}") for lo, hi in BANDS},
                            **{f"dB_rms_{z}{s}_G": rms(f"dB_{z}{s}_G") for z in (-1.0, -4.0)},
                            **{f"dv_rms_{z}{s}_kms": rms(f"dv_{z}{s}_kms") for z in (-1.0, -4.0)},
                            f"backend_calls_per_pixel{s}": float(col_(f"backend_calls{s}").mean()),
                            f"seconds_per_pixel{s}": float(col_(f"seconds{s}").mean()),
                            f"cpu_seconds_per_pixel{s}": float(col_(f"cpu_seconds{s}").mean())})
        summary.update({f"dB_rms_{z}_lte_G": rms(f"dB_{z}_lte_G") for z in (-1.0, -4.0)})
        if "_emu" in sfxs:
            summary["fallbacks_emu"] = int(sum(r["fallback_emu"] for r in done))
        if len(kinds) > 1:
            summary["kinds"] = {kd: {f"dT_rms{s}": float(np.sqrt(np.mean([r[f"dT_rms{s}"] ** 2 for r in done
                                                                         if r["kind"] == kd])))
                                     for s in (*sfxs, "_lte", "_floor")} for kd in kinds}
        args.json.write_text(json.dumps({"code": code_version(), "case": args.case, "nodes": nodes,
                                         "check_threshold": args.check_threshold, "t_positions": tpos,
                                         "t_placement": args.t_placement, "fallback": args.fallback,
                                         "t_refine": args.t_refine,
                                         "sensitivity_dchi2": args.sensitivity_dchi2,
                                         "interpolation_last_cycle": args.interpolation,
                                         "obs_backend": obs_name,
                                         "backend": args.backend, "departures": args.departures, "seed": args.seed,
                                         "load_average": os.getloadavg(), "summary": summary,
                                         **({"dT_rms_nlte": summary["dT_rms_nlte"]} if "_nlte" in sfxs else {}),
                                         "rows": rows}, indent=1, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
