"""CNN-assisted versus standard inversion (issue 6; Gafeira et al. 2021, Tables 3–5).

On a generated Hinode-SP-like N×N map (:func:`pyinv.synthetic.generate_map`, seed 11, μ = 1):

1. invert it with the paper's *training-set* configuration and train the CNN on the result
   (training time reported, not part of the speed-up — as in the paper);
2. the standard inversion: reference configuration (3 cycles; T 1,3,5; v, B 1,3,3; γ, φ, vmic, vmac 1)
   from pyinv's default guess;
3. the assisted inversion: CNN initialisation (inference + node interpolation + hydrostatics, all
   timed) and one cycle (T 5, v 3, B 3, γ, φ, vmic, vmac 1); same workers;
4. an unseen map (seed 12, μ = 0.77: hydrostatics at μ and flows/fields projected on the line of sight)
   inverted both ways with the CNN trained on the first map.

Pearson correlations at log τ = 0 for T, v, B, inclination and the azimuth as cos 2φ and sin 2φ on pixels
whose transverse field exceeds 300 G in both compared maps (azimuths are only defined modulo 180°).

    PYTHONPATH=<build>/site:src python benchmarks/bench_assisted.py --size 64 --out benchmarks/results/assisted.json

Intermediate results (inversions as pyinv.invert checkpoints, the trained CNN, finished timings) go to
``--workdir`` (default ``~/.cache/pyinv/bench_assisted_N``, outside the repository): an interrupted run picks up where it stopped
(timings of finished steps are kept). Figures (maps, differences, 2D histograms) go beside the JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

PAIRS = ("assisted_vs_standard", "assisted_vs_truth", "standard_vs_truth", "unseen_assisted_vs_standard",
         "unseen_assisted_vs_truth")
QUANTITIES = ("T", "v", "B", "inc", "azi_cos2", "azi_sin2")
#: Acceptance (issue 6; paper Table 4), assisted vs standard.
THRESHOLDS = {"T": 0.99, "v": 0.85, "B": 0.91, "inc": 0.85, "azi_cos2": 0.80, "azi_sin2": 0.80}
SPEEDUP_MIN = 2.5


def log(msg: str) -> None:
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=64, help="map side N [64]")
    ap.add_argument("--out", default=None, help="JSON output [benchmarks/results/assisted.json for N=64, else "
                                                "benchmarks/results/assisted_N.json]")
    ap.add_argument("--workers", type=int, default=None, help="worker processes for every inversion [usable cores]")
    ap.add_argument("--epochs", type=int, default=200, help="CNN epochs [200]")
    ap.add_argument("--patience", type=int, default=30, help="early-stopping patience [30]")
    ap.add_argument("--seed", type=int, default=11, help="seed of the training map; the unseen map uses seed+1 [11]")
    ap.add_argument("--unseen-mu", type=float, default=0.77, help="μ of the unseen map [0.77]")
    ap.add_argument("--workdir", help="folder of checkpoints / model / timings (resumable)")
    ap.add_argument("--model", help="use this CNN model file instead of training one on the first map (then no "
                                    "training-set inversion; seconds.training from the model's provenance)")
    ap.add_argument("--fresh", action="store_true", help="delete the workdir first")
    args = ap.parse_args()

    import pyinv
    import pyinv.cnn as cnn
    from pyinv.cnn.commands import comparison_figures, correlations, quantities
    from pyinv.synthetic import generate_map

    n = args.size
    out = Path(args.out or (Path(__file__).parent / "results" / ("assisted.json" if n == 64 else f"assisted_{n}.json")))
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(args.workdir or (Path.home() / ".cache" / "pyinv" / f"bench_assisted_{n}"))
    if args.fresh and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    tfile = work / "timings.json"
    timings = json.loads(tfile.read_text()) if tfile.exists() else {}
    workers = args.workers or len(os.sched_getaffinity(0))

    def timed_invert(key, cube, m, cfg, **kw):
        """pyinv.invert with a checkpoint; the wall time of a completed step is stored and reused."""
        ck = work / key
        t0 = time.perf_counter()
        res = pyinv.invert(cube, m.lines, m.grid, cfg, psf=m.psf, mu=m.mu, workers=workers, checkpoint=ck,
                           progress=True, **kw)
        dt = time.perf_counter() - t0
        if key not in timings:
            resumed = bool(res.provenance.get("resumed"))
            pix = float(np.nansum(res.seconds))
            # a step interrupted and resumed has no honest wall time: estimate it from the per-pixel
            # seconds of its workers (flagged)
            timings[key] = {"seconds": pix / workers if resumed else dt, "pixel_seconds": pix, "workers": workers,
                            "estimated_after_resume": resumed,
                            "init_info": {k: v for k, v in res.provenance.get("init_info", {}).items()
                                          if isinstance(v, (int, float, str))}}
            tfile.write_text(json.dumps(timings, indent=2))
        log(f"  {key}: {timings[key]['seconds']:.1f} s wall, status {res.summary()}")
        return res

    log(f"bench_assisted: {n}x{n} maps, workers={workers}, workdir={work}")
    mA = generate_map(n, args.seed, mu=1.0)
    mB = generate_map(n, args.seed + 1, mu=args.unseen_mu)
    log(f"training map seed {args.seed}: {mA.info['region_fractions']}")

    # 1. training set + CNN
    log("[1/5] training-set inversion of the first map (3 cycles; T 1,3,5; v, B, γ, φ, vmic 1; vmac)")
    mfile = work / "cnn.pt"
    r_train = None
    if args.model:
        model = cnn.load_model(args.model, grid=mA.grid, lines=mA.lines)
        timings["training"] = {"seconds": float(model.provenance.get("seconds", float("nan"))), "given": args.model}
        timings["training_set_inversion"] = {"seconds": float(model.provenance.get("training_set_seconds", float("nan")))}
        log(f"[2/5] CNN given: {args.model}")
    else:
        r_train = timed_invert("training_set_inversion", mA.cube, mA, cnn.training_config(mu=1.0))
    if args.model:
        pass
    elif mfile.exists() and "training" in timings:
        model = cnn.load_model(mfile, grid=mA.grid, lines=mA.lines)
        log(f"[2/5] CNN loaded from {mfile}")
    else:
        ts = cnn.build_training_set(mA.cube, r_train, mA.grid, mA.lines,
                                    provenance={"generator": "pyinv.synthetic.generate_map", "seed": args.seed,
                                                "size": n})
        log(f"[2/5] training the CNN on {len(ts)} pixels ({args.epochs} epochs max, AdaMax, batch 64)")
        t0 = time.perf_counter()
        model = cnn.train(ts, epochs=args.epochs, patience=args.patience or None)
        timings["training"] = {"seconds": time.perf_counter() - t0, "epochs_run": model.provenance["epochs_run"]}
        model.save(mfile)
        tfile.write_text(json.dumps(timings, indent=2))
    log(f"  training: {timings['training']['seconds']:.1f} s ({model})")

    # 2-3. standard and assisted on the first map
    log("[3/5] standard inversion (reference configuration, default guess)")
    r_std = timed_invert("standard", mA.cube, mA, cnn.reference_config(mu=1.0))
    log("[4/5] assisted inversion (CNN + one cycle)")
    r_ass = timed_invert("assisted", mA.cube, mA, cnn.assisted_config(mu=1.0), init="cnn", guess=model)
    # 4. unseen map
    log(f"[5/5] unseen map seed {args.seed + 1}, mu = {args.unseen_mu}: standard, then assisted")
    r_ustd = timed_invert("unseen_standard", mB.cube, mB, cnn.reference_config(mu=args.unseen_mu))
    r_uass = timed_invert("unseen_assisted", mB.cube, mB, cnn.assisted_config(mu=args.unseen_mu), init="cnn",
                          guess=model)
    # CNN-only estimates (analysis; not timed into anything)
    p_A = cnn.predict(mA.cube, model, mu=1.0)
    p_B = cnn.predict(mB.cube, model, mu=args.unseen_mu)

    qA = {"truth": quantities(mA), "standard": quantities(r_std), "assisted": quantities(r_ass),
          "CNN": quantities(p_A)}
    qB = {"truth": quantities(mB), "standard": quantities(r_ustd), "assisted": quantities(r_uass),
          "CNN": quantities(p_B)}
    corr = {
        "assisted_vs_standard": correlations(qA["assisted"], qA["standard"]),
        "assisted_vs_truth": correlations(qA["assisted"], qA["truth"]),
        "standard_vs_truth": correlations(qA["standard"], qA["truth"]),
        "unseen_assisted_vs_standard": correlations(qB["assisted"], qB["standard"]),
        "unseen_assisted_vs_truth": correlations(qB["assisted"], qB["truth"]),
        # extras
        "unseen_standard_vs_truth": correlations(qB["standard"], qB["truth"]),
        "cnn_vs_truth": correlations(qA["CNN"], qA["truth"]),
        **({"cnn_vs_training_set": correlations(qA["CNN"], quantities(r_train))} if r_train is not None else {}),
        "unseen_cnn_vs_truth": correlations(qB["CNN"], qB["truth"]),
    }
    ii = timings["assisted"]["init_info"]
    cnn_inf = float(ii.get("seconds_inference", 0.0)) + float(ii.get("seconds_interpolation", 0.0))
    uii = timings["unseen_assisted"]["init_info"]
    seconds = {"standard": timings["standard"]["seconds"], "assisted": timings["assisted"]["seconds"],
               "cnn_inference": cnn_inf, "training": timings["training"]["seconds"],
               "training_set_inversion": timings["training_set_inversion"]["seconds"],
               "unseen_standard": timings["unseen_standard"]["seconds"],
               "unseen_assisted": timings["unseen_assisted"]["seconds"],
               "unseen_cnn_inference": float(uii.get("seconds_inference", 0.0)) + float(
                   uii.get("seconds_interpolation", 0.0))}
    res = {
        "speedup": seconds["standard"] / seconds["assisted"],
        "unseen_speedup": seconds["unseen_standard"] / seconds["unseen_assisted"],
        "speedup_pixel_seconds": timings["standard"]["pixel_seconds"] / (timings["assisted"]["pixel_seconds"] + cnn_inf),
        "seconds": seconds,
        "correlation": corr,
        "notes": ("seconds.assisted is the wall time of pyinv.invert(init='cnn') and includes CNN inference, node "
                  "interpolation and hydrostatics (seconds.cnn_inference); speedup = standard / assisted wall time "
                  "with the same workers; training (and the training-set inversion) excluded from it. Azimuth "
                  "correlations: cos 2phi / sin 2phi on pixels with B sin(gamma) > 300 G in both maps."),
        "size": n, "workers": workers, "seeds": [args.seed, args.seed + 1], "unseen_mu": args.unseen_mu,
        "pixels_azimuth": int(((qA["assisted"]["Bt"] > 300) & (qA["standard"]["Bt"] > 300)).sum()),
        "median_chi2": {k: float(np.nanmedian(r.chi2)) for k, r in
                        (("standard", r_std), ("assisted", r_ass), ("unseen_standard", r_ustd),
                         ("unseen_assisted", r_uass))},
        "status_ok_fraction": {k: float(np.mean(r.status == 0)) for k, r in
                               (("standard", r_std), ("assisted", r_ass), ("unseen_standard", r_ustd),
                                ("unseen_assisted", r_uass))},
        "cnn": {"epochs_run": model.provenance.get("epochs_run"), "training_pixels": model.provenance.get(
            "training_pixels"), "validation_loss": model.provenance.get("validation_loss")},
        "thresholds": {"speedup": SPEEDUP_MIN, "assisted_vs_standard": THRESHOLDS},
    }
    res["pass"] = {"speedup": res["speedup"] >= SPEEDUP_MIN,
                   **{q: bool(corr["assisted_vs_standard"][q] >= t) for q, t in THRESHOLDS.items()}}
    out.write_text(json.dumps(res, indent=2))
    figs = comparison_figures(qA, out.parent, prefix=f"{out.stem}_first_", reference="standard")
    figs += comparison_figures(qB, out.parent, prefix=f"{out.stem}_unseen_", reference="standard")

    print()
    print(f"speed-up {res['speedup']:.2f}x (unseen map {res['unseen_speedup']:.2f}x): standard "
          f"{seconds['standard']:.1f} s, assisted {seconds['assisted']:.1f} s (CNN {cnn_inf:.2f} s), "
          f"training {seconds['training']:.1f} s")
    print(f"{'pair':30s} " + " ".join(f"{q:>8s}" for q in QUANTITIES))
    for pair, c in corr.items():
        print(f"{pair:30s} " + " ".join(f"{c[q]:8.3f}" for q in QUANTITIES))
    print(f"pass: {res['pass']}")
    print(f"-> {out}; figures: {', '.join(f.name for f in figs)}")


if __name__ == "__main__":
    main()
