"""Benchmark (issue 19): the departure-coefficient emulator (:mod:`pyinv.nlte.emulator`) and the inversions
it drives, Ca II 8542 with the Lightweaver backend (PRD off, hydrogen from the model).

Parts (``--part``, all by default):

* ``heldout``: the held-out columns of a column folder (``python -m pyinv.nlte.columns``; columns with
  ``k % 10 == 9``, never used in training or tuning). Per column: the rms relative error of b (emulated /
  backend − 1) of the 8542 levels (Ca II 3d ²D5/2 and 4p ²P3/2) over log τ −5 … −1; and three Stokes I
  differences (rms over the ±1.5 Å window, continuum units, no convolution): the engine with the emulator's
  b against (a) the engine with the backend's b — the emulator's own error — and (b) the backend's NLTE
  profile (scaled to the engine's continuum by the backend's LTE profile, as the DeSIRe driver does); and
  (c) the engine with the backend's b against the backend's profile (the round trip without the emulator).
* ``invert``: ``invert_pixel_nlte(..., departures="emulated")`` and the backend-driven inversion of the
  same pixels: the bench_desire pixels (same recipe and seed: FAL C with T ±300 K above log τ = −3, flows,
  fields) and an "unseen" set of chromospheres outside every training range (:func:`_unseen_pixels`).
  T rms over log τ −1 … −5.3, wall and CPU seconds and backend calls per pixel, checks and fallbacks.
* ``map``: a 16×16 map of bench_desire-recipe pixels (observations from the backend through
  ``pyinv.synthesize_map``), inverted with ``pyinv.invert(..., nlte=NlteSolver(backend,
  departures="emulated"), workers=2)`` from FAL C; T rms and wall time, and the map's per-pixel NLTE
  record summed (``provenance["nlte"]``: backend calls per pixel, checks, fallbacks).

    PYTHONPATH=<build>/site:src python benchmarks/bench_emulator.py --columns <folder> [--part heldout]
        [--emulator file.npz] [--out results.json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

from _common import code_version, lightweaver_missing, pin_threads

BAND = (-1.0, -5.3)
LEVELS_8542 = (2, 4)


def _setup():
    import numpy as np
    import pyinv
    from pyinv import nlte
    from pyinv.nlte import columns as C

    lines = pyinv.default_lines()
    grid = pyinv.WavelengthGrid.from_regions([(8, -1500, 30, 1500)], lines)
    be = nlte.Lightweaver(nlte.level_map(lines, [8]), hydrogen="model", prd=False, lte=True)
    base = C.base_model()
    cfg = pyinv.InversionConfig(cycles=2, nodes={"T": (3, 5), "vlos": (1, 2), "B": (1, 2), "gamma": (1, 1),
                                                 "phi": (1, 1), "vmic": (1, 1)}, weights=(1, 1, 1, 1), snr=1000.0)
    return np, pyinv, nlte, lines, grid, be, base, cfg


def _scaled(np, stokes, stokes_lte, lte_engine):
    """Backend profiles on the engine's continuum (one region: its two end points)."""
    return stokes * (lte_engine[0, [0, -1]].sum() / stokes_lte[0, [0, -1]].sum())


def part_heldout(columns: Path, emu, rerun: bool = False) -> dict:
    np, pyinv, nlte, lines, grid, be, base, cfg = _setup()
    be2 = nlte.Lightweaver(nlte.level_map(lines, [8]), hydrogen="model", prd=False, lte=True, line_broadening=lines)
    from pyinv.nlte import columns as C
    from pyinv.nlte.emulator_train import split_columns

    d = C.load_shards(columns)
    m = split_columns(d)
    idx = np.flatnonzero(m["held_out"])
    lt = d["log_tau"]
    band = (lt <= -1.0) & (lt >= -5.0)
    x = np.stack([d["T"], np.log10(d["Pe"]), d["vmic"] * 1e-5, d["vlos"] * 1e-5], axis=1)
    pred = emu.predict_features(x[idx])
    rows = []
    for j, k in enumerate(idx):
        ref = d["log_b"][k]
        rel = 10.0 ** (pred[j][list(LEVELS_8542)][:, band] - ref[list(LEVELS_8542)][:, band]) - 1.0
        rel_all = 10.0 ** (pred[j][:-1, band] - ref[:-1, band]) - 1.0
        atm = pyinv.Atmosphere(log_tau=lt, T=d["T"][k], Pe=d["Pe"][k], vmic=d["vmic"][k], vlos=d["vlos"][k],
                               B=d["B"][k], gamma=d["gamma"][k], phi=d["phi"][k])
        b_be, b_em = 10.0 ** ref, 10.0 ** pred[j]
        dep = {name: nlte.Departures(lt, (8,), b[2], b[4]) for name, b in (("backend", b_be), ("emulated", b_em))}
        s = {name: pyinv.synthesize(atm, lines, grid, convolve=False, departures=dv)[0] for name, dv in dep.items()}
        lte = pyinv.synthesize(atm, lines, grid, convolve=False)
        obs = _scaled(np, d["stokes"][k], d["stokes_lte"][k], lte)[0]
        row = {}
        if rerun:   # the backend with the engine's damping: the round trip without the damping mismatch
            r2 = be2.synthesize(atm, d["wavelength"])
            obs2 = _scaled(np, r2.stokes, r2.stokes_lte, lte)[0]
            s2 = pyinv.synthesize(atm, lines, grid, convolve=False, departures=r2.departures)[0]
            row = {"I_emulated_vs_backend_engine_damping": float(np.sqrt(np.mean((s["emulated"] - obs2) ** 2))),
                   "I_backend_b_vs_backend_engine_damping": float(np.sqrt(np.mean((s2 - obs2) ** 2))),
                   "b_rms_8542_vs_engine_damping_run": float(np.sqrt(np.mean(np.concatenate(
                       [b_em[lv][band] / (r2.departures.b_lower[0] if lv == 2 else r2.departures.b_upper[0])[band]
                        - 1.0 for lv in LEVELS_8542]) ** 2)))}
        rows.append({**row, "index": int(k), "family": str(d["family"][k]),
                     "b_rms_8542": float(np.sqrt(np.mean(rel ** 2))),
                     "b_rms_levels": float(np.sqrt(np.mean(rel_all ** 2))),
                     "logb_rms_8542_dex": float(np.sqrt(np.mean((pred[j][list(LEVELS_8542)][:, band]
                                                                 - ref[list(LEVELS_8542)][:, band]) ** 2))),
                     "I_emulated_vs_engine_backend_b": float(np.sqrt(np.mean((s["emulated"] - s["backend"]) ** 2))),
                     "I_emulated_vs_backend": float(np.sqrt(np.mean((s["emulated"] - obs) ** 2))),
                     "I_backend_b_vs_backend": float(np.sqrt(np.mean((s["backend"] - obs) ** 2)))})

    def stats(key):
        v = np.array([r[key] for r in rows])
        return {"rms": float(np.sqrt(np.mean(v ** 2))), "median": float(np.median(v)),
                "p90": float(np.percentile(v, 90)), "max": float(v.max())}

    keys = ("b_rms_8542", "b_rms_levels", "logb_rms_8542_dex", "I_emulated_vs_engine_backend_b",
            "I_emulated_vs_backend", "I_backend_b_vs_backend")
    if rerun:
        keys += ("I_emulated_vs_backend_engine_damping", "I_backend_b_vs_backend_engine_damping",
                 "b_rms_8542_vs_engine_damping_run")
    out = {"held_out_columns": len(rows), "failed_columns": int(m["failed"].sum()),
           "total_columns": int(len(d["index"])), "stats": {k: stats(k) for k in keys}, "rows": rows}
    print(f"held-out columns: {len(rows)} (of {out['total_columns']}; {out['failed_columns']} not converged, dropped)")
    for k in keys:
        s = out["stats"][k]
        print(f"  {k:32s} rms {s['rms']:.4f}  median {s['median']:.4f}  p90 {s['p90']:.4f}  max {s['max']:.4f}")
    return out


def _desire_pixels(np, pyinv, base, n, seed):
    """The bench_desire recipe (same draws in the same order for the same seed)."""
    lt = np.asarray(base.log_tau)
    rng = np.random.default_rng(seed)
    up = 1.0 / (1.0 + np.exp((lt + 3.0) / 0.3))
    for _ in range(n):
        dT = rng.uniform(-300, 300) * up
        v = rng.uniform(-2e5, 2e5) + rng.uniform(-1e5, 1e5) * (lt + 2.0) / 3.0
        B = rng.uniform(0, 1500) * (1.0 + 0.1 * (lt + 2.0) / 3.0)
        yield pyinv.hydrostatic(base.with_columns(T=np.asarray(base.T) + dT, vlos=v, B=np.maximum(B, 1.0),
                                                  gamma=rng.uniform(5, 175), phi=rng.uniform(0, 180))), rng


def _unseen_pixels(np, base, n, seed):
    """Chromospheres outside the training ranges: alternately hotter than any training family and risen
    deeper (rise × 2.5–2.8, shifted 0.5–0.7 dex down) and with almost no rise, risen higher (× 0.05–0.3,
    0.5–0.7 dex up); no bumps, so that the inversion's five T nodes can follow them."""
    from pyinv.nlte import columns as C

    rng = np.random.default_rng(seed)
    for p in range(n):
        hot = p % 2 == 0
        atm, _fam = C.draw_column(rng, base, nbumps=(0, 0), rise_scale=(2.5, 2.8) if hot else (0.05, 0.3),
                                  rise_shift=(0.5, 0.7) if hot else (-0.7, -0.5))
        if float(np.max(atm.B)) < 1.0:
            atm = atm.with_columns(B=rng.uniform(100, 1500), gamma=rng.uniform(5, 175), phi=rng.uniform(0, 180))
        yield atm, rng


def _observe(np, pyinv, be, lines, grid, truth, rng):
    from pyinv.nlte.desire import _convolve_like_synthesis

    rt = be.synthesize(truth, pyinv.nlte.grid_vacuum_nm(lines, grid))
    obs = _scaled(np, rt.stokes, rt.stokes_lte, pyinv.synthesize(truth, lines, grid, convolve=False))
    return _convolve_like_synthesis(obs, lines, grid, 0.0, None) + rng.normal(0, 1e-3, obs.shape)


def _no_paths(prov: dict) -> dict:
    """A pixel's provenance without the emulator's file path (result files carry no machine paths)."""
    if "emulator" not in prov:
        return prov
    return {**prov, "emulator": {k: v for k, v in prov["emulator"].items() if k != "file"}}


def part_invert(emu, n: int, modes=("emulated", "backend")) -> dict:
    np, pyinv, nlte, lines, grid, be, base, cfg = _setup()
    from pyinv.nlte import invert_pixel_nlte

    guess = base.with_columns(B=100.0, gamma=45.0, phi=30.0)
    lt = np.asarray(base.log_tau)
    band = (lt <= BAND[0]) & (lt >= BAND[1])
    out = {}
    for name, gen in (("desire", _desire_pixels(np, pyinv, base, n, 11)), ("unseen", _unseen_pixels(np, base, n, 23))):
        rows = []
        for p, (truth, rng) in enumerate(gen):
            obs = _observe(np, pyinv, be, lines, grid, truth, rng)
            row = {"pixel": p}
            for mode in modes:
                t0, c0 = time.perf_counter(), time.process_time()
                r = invert_pixel_nlte(obs, guess, lines, grid, cfg, backend=be, departures=mode, emulator=emu)
                dt, dc = time.perf_counter() - t0, time.process_time() - c0
                a = r.result.atmosphere
                row[mode] = {"seconds": dt, "cpu_seconds": dc, "backend_calls": r.backend_calls, "status": r.status,
                             "dT_rms": float(np.sqrt(np.mean((a.T[band] - truth.T[band]) ** 2))),
                             "chi2": float(r.result.chi2[-1]),
                             "dB_-1": float(a.B[np.argmin(np.abs(lt + 1))] - truth.B[np.argmin(np.abs(lt + 1))]),
                             "provenance": _no_paths(r.provenance)}
            rows.append(row)
            e = row.get("emulated", {})
            print(f"{name} pixel {p}: " + "; ".join(
                f"{m_} T rms {row[m_]['dT_rms']:5.0f} K {row[m_]['seconds']:4.1f} s calls {row[m_]['backend_calls']}"
                for m_ in modes) + (f"; check {e['provenance']['check']['profile_rms']:.4f} "
                                    f"fallback {e['provenance']['fallback']}" if e else ""), flush=True)
        summ = {}
        for mode in modes:
            v = lambda k: np.array([r_[mode][k] for r_ in rows], dtype=float)  # noqa: E731
            summ[mode] = {"dT_rms": float(np.sqrt(np.mean(v("dT_rms") ** 2))), "seconds": float(v("seconds").mean()),
                          "cpu_seconds": float(v("cpu_seconds").mean()),
                          "backend_calls": float(v("backend_calls").mean()),
                          "B_rms_-1": float(np.sqrt(np.mean(v("dB_-1") ** 2)))}
            if mode == "emulated":
                summ[mode]["fallbacks"] = int(sum(r_[mode]["provenance"]["fallback"] for r_ in rows))
            print(f"  {name} {mode}: T rms {summ[mode]['dT_rms']:.0f} K over log tau -1..-5.3, "
                  f"{summ[mode]['seconds']:.2f} s/pixel (CPU {summ[mode]['cpu_seconds']:.2f} s), "
                  f"{summ[mode]['backend_calls']:.2f} backend calls/pixel"
                  + (f", {summ[mode]['fallbacks']} fallbacks" if mode == "emulated" else ""), flush=True)
        out[name] = {"rows": rows, "summary": summ}
    return out


def part_map(emu, size: int, workers: int) -> dict:
    np, pyinv, nlte, lines, grid, be, base, cfg = _setup()
    from pyinv.nlte.desire import NlteSolver, _convolve_like_synthesis

    truths = [t for t, _ in _desire_pixels(np, pyinv, base, size * size, 16)]
    cube_atm = np.array([t.to_array() for t in truths]).reshape(size, size, -1, 11)
    t0 = time.perf_counter()
    sm = pyinv.synthesize_map(cube_atm, lines, grid, backend=be, workers=workers, progress=False)
    t_syn = time.perf_counter() - t0
    rng = np.random.default_rng(161)
    cube = np.empty((size, size, 4, grid.nwav))
    for k, t in enumerate(truths):
        y, x = divmod(k, size)
        obs = _scaled(np, sm.stokes[y, x], sm.stokes_lte[y, x], pyinv.synthesize(t, lines, grid, convolve=False))
        cube[y, x] = _convolve_like_synthesis(obs, lines, grid, 0.0, None) + rng.normal(0, 1e-3, obs.shape)
    guess = base.with_columns(B=100.0, gamma=45.0, phi=30.0)
    t0 = time.perf_counter()
    res = pyinv.invert(cube, lines, grid, cfg, guess=guess, workers=workers, progress=False,
                       nlte=NlteSolver(be, departures="emulated", emulator=emu))
    wall = time.perf_counter() - t0
    lt = np.asarray(base.log_tau)
    band = (lt <= BAND[0]) & (lt >= BAND[1])
    T = res.atmospheres[..., 1]
    Tt = cube_atm[..., 1]
    per = np.sqrt(np.mean((T[..., band] - Tt[..., band]) ** 2, axis=-1))
    out = {"size": size, "workers": workers, "synthesis_seconds": t_syn, "inversion_seconds": wall,
           "seconds_per_pixel_wall": wall / size ** 2, "pixel_seconds_mean": float(np.nanmean(res.seconds)),
           "status_counts": {str(k): int(v) for k, v in zip(*np.unique(res.status, return_counts=True))},
           "dT_rms": float(np.sqrt(np.nanmean(per ** 2))), "dT_rms_median_pixel": float(np.nanmedian(per)),
           "solver": res.provenance.get("solver"), "nlte": res.provenance.get("nlte"),
           "load_average": list(os.getloadavg())}
    print(f"map {size}x{size}, {workers} workers: inversion {wall:.0f} s ({wall / size ** 2:.2f} s/pixel wall, "
          f"{out['pixel_seconds_mean']:.2f} s per pixel in its worker); T rms {out['dT_rms']:.0f} K "
          f"(median pixel {out['dT_rms_median_pixel']:.0f} K); statuses {out['status_counts']}; "
          f"observations synthesised in {t_syn:.0f} s", flush=True)
    nl = out["nlte"] or {}
    print(f"  per-pixel NLTE record: {nl.get('backend_calls_per_pixel', float('nan')):.2f} backend calls per pixel "
          f"({nl.get('backend_calls')} in {nl.get('pixels')} pixels), {nl.get('checked')} checks, {nl.get('passed')} "
          f"passed, {nl.get('fallbacks')} fallbacks, largest check {nl.get('check_max', float('nan')):.4f}", flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--columns", type=Path, help="column folder (python -m pyinv.nlte.columns), for --part heldout")
    ap.add_argument("--part", choices=("heldout", "invert", "map", "all"), default="all")
    ap.add_argument("--emulator", type=Path, default=None, help="emulator file (default: the packaged lw-caii)")
    ap.add_argument("--engine-damping", action="store_true",
                    help="heldout: also re-run the backend with the engine's line damping (Lightweaver "
                         "line_broadening) and compare with those profiles")
    ap.add_argument("--pixels", type=int, default=10)
    ap.add_argument("--map-size", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="JSON results")
    args = ap.parse_args(argv)
    pin_threads()
    if lightweaver_missing():
        return 0
    warnings.simplefilter("ignore")
    from pyinv.nlte.emulator import DepartureEmulator, pretrained_emulator

    emu = pretrained_emulator() if args.emulator is None else DepartureEmulator.load(args.emulator)
    print(f"emulator {emu.name} {emu.version}; under load (2 shared cores)")
    res = {"code": code_version(), "emulator": {k: v for k, v in emu.provenance().items() if k != "file"},
           "training": emu.meta.get("training")}
    if args.part in ("heldout", "all"):
        if args.columns is None:
            ap.error("--part heldout needs --columns")
        res["heldout"] = part_heldout(args.columns, emu, rerun=args.engine_damping)
    if args.part in ("invert", "all"):
        res["invert"] = part_invert(emu, args.pixels)
    if args.part in ("map", "all"):
        res["map"] = part_map(emu, args.map_size, args.workers)
    if args.out:
        args.out.write_text(json.dumps(res, indent=1, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
