"""``pyinv cnn list``, ``pyinv cnn train`` and ``pyinv cnn demo`` (called from :mod:`pyinv.cli`)."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["cmd_train", "cmd_demo", "cmd_cnn_list", "cmd_cnn_train", "comparison_figures"]


def cmd_cnn_list(args: argparse.Namespace) -> int:
    """``pyinv cnn list``: one block per catalogue model."""
    from .catalogue import describe
    from .recipes import get_recipe

    for row in describe():
        r = get_recipe(row["recipe"])
        print(f"{row['name']}: {row['instrument']}, {row['lines']}")
        if row["file"]:
            mu = "mu as input" if row.get("mu_input") else f"mu {row.get('mu_range')}"
            print(f"    installed ({row['source']}): {row['file']}; {mu}; trained on "
                  f"{row.get('training_pixels')} pixels")
        else:
            print(f"    not installed: pyinv cnn train --recipe {row['recipe']}")
        print(f"    recipe {r.name}: {r.pixels} pixels (seed {r.seed}), mu {r.mu_range[0]:g}..{r.mu_range[1]:g}, "
              f"noise {r.noise_range[0]:g}..{r.noise_range[1]:g}, PSF "
              f"{'%g mA' % r.psf_fwhm_mA if r.psf_fwhm_mA else 'none'}, {r.epochs} epochs")
    return 0


def cmd_cnn_train(args: argparse.Namespace) -> int:
    """``pyinv cnn train --recipe NAME``: generate (or resume) the recipe's training set, train, save."""
    from .catalogue import user_dir
    from .recipes import get_recipe
    from .train import train
    from .trainingdata import generate_training_set

    rec = get_recipe(args.recipe)
    work = Path(args.workdir) if args.workdir else user_dir() / f"{rec.name}_set"
    out = Path(args.output) if args.output else user_dir() / f"{rec.name}.npz"
    t0 = time.perf_counter()
    print(f"[1/2] training set of recipe {rec.name} in {work} (resumable) ...", flush=True)
    ts = generate_training_set(rec, work, pixels=args.pixels, workers=args.workers)
    t1 = time.perf_counter()
    print(f"      {len(ts)} pixels ({ts.provenance['families']}), {t1 - t0:.0f} s; [2/2] training on {args.device} ...",
          flush=True)
    batch = getattr(args, "batch", None) or rec.batch_size
    lr = getattr(args, "learning_rate", None) or rec.learning_rate
    decay = getattr(args, "lr_decay", None)
    model = train(ts, epochs=args.epochs or rec.epochs, batch_size=batch, learning_rate=lr,
                  validation=rec.validation, patience=rec.patience, seed=rec.seed, threads=args.threads,
                  device=args.device, filters=rec.filters, mu_input=rec.mu_input,
                  lr_decay=decay)
    model.meta["name"] = rec.name
    model.meta["instrument"] = rec.instrument
    model.provenance["recipe"] = {**rec.data_fingerprint(), "pixels": len(ts), "epochs": args.epochs or rec.epochs,
                                  "batch_size": batch, "learning_rate": lr, "lr_decay": decay,
                                  "recipe_defaults": {"pixels": rec.pixels, "epochs": rec.epochs,
                                                      "batch_size": rec.batch_size, "learning_rate": rec.learning_rate}}
    model.provenance["command"] = ("pyinv cnn train --recipe " + rec.name
                                   + (f" --pixels {args.pixels}" if args.pixels else "")
                                   + (f" --epochs {args.epochs}" if args.epochs else "")
                                   + (f" --batch {args.batch}" if getattr(args, "batch", None) else "")
                                   + (f" --learning-rate {args.learning_rate:g}" if getattr(args, "learning_rate", None)
                                      else "")
                                   + (f" --lr-decay {decay}" if decay else ""))
    model.provenance["training_set_seconds"] = t1 - t0
    model.save(out)
    p = model.provenance
    print(f"trained {p['epochs_run']} epochs (best {p['best_epoch']}, validation loss {p['validation_loss']}) in "
          f"{p['seconds']:.0f} s -> {out}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .. import models
    from ..defaults import default_lines
    from .dataset import build_training_set
    from .pipeline import training_set_from_generated, training_set_from_map
    from .predict import as_model
    from .train import train

    t0 = time.perf_counter()
    if args.generate:
        n = int(args.generate)
        ts = training_set_from_generated([args.size] * n, [args.seed + k for k in range(n)], [args.mu] * n,
                                         workers=args.workers, checkpoint_dir=args.checkpoint)
    elif args.cube:
        from ..maps.cube import load_cube
        lines = default_lines()
        grid = models.hinode_grid(lines)
        cube = load_cube(args.cube)[0]
        if args.result:
            from ..maps.result import InversionResult
            ts = build_training_set(cube, InversionResult.from_fits(args.result), grid, lines,
                                    provenance={"cube": str(args.cube), "result": str(args.result)})
        else:
            ts, _ = training_set_from_map(cube, lines, grid, mu=args.mu, workers=args.workers,
                                          checkpoint=args.checkpoint, provenance={"cube": str(args.cube)})
    else:
        raise ValueError("give a cube FITS (with --result or not) or --generate N")
    t1 = time.perf_counter()
    print(f"training set: {len(ts)} pixels ({t1 - t0:.0f} s); training on {args.device} ...", flush=True)
    base = as_model(args.from_model) if args.from_model else None
    model = train(ts, model=base, epochs=args.epochs, batch_size=args.batch,
                  patience=args.patience or None, device=args.device)
    model.provenance["command"] = "pyinv " + " ".join(sys.argv[1:]) if sys.argv else "pyinv cnn train"
    model.provenance["training_set_seconds"] = t1 - t0
    model.save(args.output)
    p = model.provenance
    print(f"trained {p['epochs_run']} epochs (best {p['best_epoch']}, validation loss {p['validation_loss']}) in "
          f"{p['seconds']:.0f} s -> {args.output}")
    return 0


def _corr(a, b, sel=None):
    a, b = np.asarray(a, float).ravel(), np.asarray(b, float).ravel()
    ok = np.isfinite(a) & np.isfinite(b)
    if sel is not None:
        ok &= np.asarray(sel).ravel()
    if ok.sum() < 3 or np.std(a[ok]) == 0 or np.std(b[ok]) == 0:
        return float("nan")
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def quantities(src, log_tau: float = 0.0) -> dict[str, np.ndarray]:
    """T, v, B, inc, azi_cos2, azi_sin2 and the transverse field at ``log_tau`` of a result-like object
    (``.map(name, log_tau)``) or a SyntheticMap (``.truth_map``)."""
    get = src.truth_map if hasattr(src, "truth_map") else src.map
    T, v, B, g, phi = (get(k, log_tau) for k in ("T", "vlos", "B", "gamma", "phi"))
    return {"T": T, "v": v, "B": B, "inc": g, "azi_cos2": np.cos(2 * np.radians(phi)),
            "azi_sin2": np.sin(2 * np.radians(phi)), "Bt": B * np.abs(np.sin(np.radians(g)))}


def correlations(a: dict, b: dict, bt_min: float = 300.0) -> dict[str, float]:
    """Pearson correlations of :func:`quantities` dicts; the azimuth terms only where both transverse
    fields exceed ``bt_min`` G."""
    strong = (a["Bt"] > bt_min) & (b["Bt"] > bt_min)
    out = {}
    for q in ("T", "v", "B", "inc"):
        out[q] = _corr(a[q], b[q])
    for q in ("azi_cos2", "azi_sin2"):
        out[q] = _corr(a[q], b[q], strong)
    return out


_LABELS = {"T": ("T [K]", "inferno"), "v": ("v_LOS [km/s]", "RdBu_r"), "B": ("B [G]", "viridis"),
           "inc": ("inclination [deg]", "RdBu_r"), "azi_cos2": ("cos 2phi", "twilight"),
           "azi_sin2": ("sin 2phi", "twilight")}


def _disp(q, v):
    return v / 1e5 if q == "v" else v


def comparison_figures(named: dict, outdir, prefix: str = "", reference: str | None = None,
                       bt_min: float = 300.0) -> list[Path]:
    """Paper-style figures: maps of each quantity for every named source, differences to ``reference``
    (default the first) and 2D histograms against it. ``named`` maps names to :func:`quantities` dicts."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    names = list(named)
    ref = reference or names[0]
    qs = list(_LABELS)
    files = []
    # maps
    fig, axs = plt.subplots(len(names), len(qs), figsize=(3.0 * len(qs), 2.7 * len(names)), squeeze=False)
    for j, q in enumerate(qs):
        vals = np.concatenate([np.ravel(_disp(q, named[n][q])) for n in names])
        vals = vals[np.isfinite(vals)]
        lo, hi = (np.percentile(vals, [1, 99]) if vals.size else (0, 1))
        if q == "v":
            m = max(abs(lo), abs(hi)); lo, hi = -m, m
        for i, n in enumerate(names):
            ax = axs[i, j]
            im = ax.imshow(_disp(q, named[n][q]), origin="lower", cmap=_LABELS[q][1], vmin=lo, vmax=hi)
            ax.set_xticks([]); ax.set_yticks([])
            if i == 0:
                ax.set_title(_LABELS[q][0], fontsize=9)
            if j == 0:
                ax.set_ylabel(n, fontsize=9)
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    fig.suptitle("log tau = 0")
    fig.tight_layout()
    f = out / f"{prefix}maps.png"; fig.savefig(f, dpi=80); plt.close(fig); files.append(f)
    others = [n for n in names if n != ref]
    if not others:
        return files
    # differences
    fig, axs = plt.subplots(len(others), len(qs), figsize=(3.0 * len(qs), 2.7 * len(others)), squeeze=False)
    for j, q in enumerate(qs):
        for i, n in enumerate(others):
            d = _disp(q, named[n][q]) - _disp(q, named[ref][q])
            if q.startswith("azi"):
                d = np.where((named[n]["Bt"] > bt_min) & (named[ref]["Bt"] > bt_min), d, np.nan)
            s = np.nanpercentile(np.abs(d), 95) if np.isfinite(d).any() else 1.0
            im = axs[i, j].imshow(d, origin="lower", cmap="RdBu_r", vmin=-s, vmax=s)
            axs[i, j].set_xticks([]); axs[i, j].set_yticks([])
            if i == 0:
                axs[i, j].set_title("diff " + _LABELS[q][0], fontsize=9)
            if j == 0:
                axs[i, j].set_ylabel(f"{n} - {ref}", fontsize=8)
            fig.colorbar(im, ax=axs[i, j], fraction=0.046, pad=0.02)
    fig.tight_layout()
    f = out / f"{prefix}differences.png"; fig.savefig(f, dpi=80); plt.close(fig); files.append(f)
    # 2D histograms
    fig, axs = plt.subplots(len(others), len(qs), figsize=(3.0 * len(qs), 2.9 * len(others)), squeeze=False)
    for j, q in enumerate(qs):
        for i, n in enumerate(others):
            a, b = _disp(q, named[ref][q]).ravel(), _disp(q, named[n][q]).ravel()
            ok = np.isfinite(a) & np.isfinite(b)
            if q.startswith("azi"):
                ok &= ((named[n]["Bt"] > bt_min) & (named[ref]["Bt"] > bt_min)).ravel()
            ax = axs[i, j]
            if ok.sum() > 2:
                lo, hi = np.percentile(np.concatenate([a[ok], b[ok]]), [0.5, 99.5])
                ax.hist2d(a[ok], b[ok], bins=40, range=[[lo, hi], [lo, hi]], cmap="Greys", cmin=1)
                ax.plot([lo, hi], [lo, hi], "r-", lw=0.6)
                ax.set_title(f"{_LABELS[q][0]}  r={_corr(a[ok], b[ok]):.3f}", fontsize=8)
            ax.set_xlabel(ref, fontsize=8)
            ax.set_ylabel(n, fontsize=8)
            ax.tick_params(labelsize=7)
    fig.tight_layout()
    f = out / f"{prefix}hist2d.png"; fig.savefig(f, dpi=80); plt.close(fig); files.append(f)
    return files


def cmd_demo(args: argparse.Namespace) -> int:
    from ..maps.inversion import invert
    from ..synthetic import generate_map
    from .configs import assisted_config, reference_config
    from .predict import as_model, cluster, predict

    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    print(f"[1/4] generating a {args.size}x{args.size} Hinode-SP-like map (seed {args.seed}, mu {args.mu:g}) ...",
          flush=True)
    m = generate_map(args.size, args.seed, mu=args.mu)
    model = as_model(args.model)
    print(f"[2/4] CNN estimate ({model}) ...", flush=True)
    t = time.perf_counter()
    pred = predict(m.cube, model, grid=m.grid, lines=m.lines, mu=args.mu)
    t_cnn = time.perf_counter() - t
    labels = cluster(pred, 5, model=model)
    print(f"      {args.size * args.size} pixels in {t_cnn:.2f} s (inference {pred.seconds['inference']:.2f} s)",
          flush=True)
    print("[3/4] assisted inversion (CNN start + one cycle) ...", flush=True)
    t = time.perf_counter()
    ra = invert(m.cube, m.lines, m.grid, assisted_config(mu=args.mu), init="cnn", guess=model, psf=m.psf,
                mu=args.mu, workers=args.workers, progress=True)
    t_a = time.perf_counter() - t
    print(f"      {t_a:.1f} s; status: {ra.summary()}", flush=True)
    ra.to_fits(out / "assisted_result.fits", overwrite=True)
    named = {"truth": quantities(m), "CNN": quantities(pred), "assisted": quantities(ra)}
    summary = {"size": args.size, "seed": args.seed, "mu": args.mu, "seconds": {"cnn": t_cnn, "assisted": t_a}}
    if args.standard:
        print("[3b] standard inversion (3 cycles, for comparison) ...", flush=True)
        t = time.perf_counter()
        rs = invert(m.cube, m.lines, m.grid, reference_config(mu=args.mu), psf=m.psf, mu=args.mu,
                    workers=args.workers, progress=True)
        summary["seconds"]["standard"] = time.perf_counter() - t
        summary["speedup"] = summary["seconds"]["standard"] / (t_a + t_cnn)
        named["standard"] = quantities(rs)
    summary["correlation_vs_truth"] = {n: correlations(named[n], named["truth"]) for n in named if n != "truth"}
    print("[4/4] figures ...", flush=True)
    files = comparison_figures(named, out, reference="truth")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(1, 2, figsize=(8, 3.5))
    ax[0].imshow(m.cube[..., 0, :].max(-1), origin="lower", cmap="gray"); ax[0].set_title("continuum")
    ax[1].imshow(labels, origin="lower", cmap="tab10"); ax[1].set_title("k-means clusters of the CNN outputs")
    fig.tight_layout(); fig.savefig(out / "clusters.png", dpi=80); plt.close(fig)
    files.append(out / "clusters.png")
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    for n, c in summary["correlation_vs_truth"].items():
        print(f"  {n:9s} vs truth: " + "  ".join(f"{k} {v:.3f}" for k, v in c.items()))
    print("  figures: " + ", ".join(str(f) for f in files))
    return 0
