"""The coarse early cycles of issue 17 on data nobody tuned them on: per pixel, invert_pixel's defaults against the
same code with every cycle on the model's grid and the rescue's earlier trial count (``coarse=False``,
``RESCUE_MIN_TRIALS_PER_CYCLE`` = 13), both measured in the same run.

The defaults were chosen on the even halves of ``invert_hinode_200`` and the real set (README, "Coarse grids before
the last cycle"). Here: generated maps of seeds no benchmark or recipe uses (61, 62), Hinode SP Fe I 6301/6302 and
GREGOR/GRIS Fe I 15648/15652 (the packaged CNN recipes' instruments: sampling and PSF), a sunspot at μ = 0.8 and
an emerging region at μ = 1, the reference configuration (3 cycles; T 1,3,5; v, B 1,3,3), pyinv's default guess.

Printed per case: CPU per pixel of both arms and their ratio, the correlations with the truth at log τ = 0 of T,
v and B_los, and the per-pixel ratio of the weighted residual Σ_s w_s Σ_λ (O − S)² (defaults / full grid): the
fraction ≤ 1.05 and ≥ 1/1.05 (the pixels whose descents end apart go either way), median, p90, p99.

    python benchmarks/bench_coarse.py [--size 20] [--workers 2]   # -> benchmarks/results/coarse_grids.txt
"""
from __future__ import annotations

import argparse
import json
import time
from multiprocessing import Pool

from _common import RESULTS, code_version, pin_threads

_STATE: dict = {}


def _case(recipe: str, family: str, n: int):
    from pyinv import cnn, models
    from pyinv.synthetic import generate_emerging_region, generate_map

    rec = cnn.get_recipe(recipe)
    lines = rec.lines()
    inst = dict(lines=lines, grid=rec.grid(lines), psf=rec.psf())
    m = generate_map(n, 61, mu=0.8, **inst) if family == "sunspot" else generate_emerging_region(n, 62, mu=1.0, **inst)
    return m, cnn.reference_config(mu=m.mu), models.default_guess()


def _init(recipe: str, family: str, n: int) -> None:
    import pyinv.physics.inversion as inv

    pin_threads()
    _STATE["case"] = _case(recipe, family, n)
    _STATE["default_trials"] = inv.RESCUE_MIN_TRIALS_PER_CYCLE


def _pixel(args):
    import numpy as np

    import pyinv
    import pyinv.physics.inversion as inv

    i, arm = args
    m, cfg, guess = _STATE["case"]
    cube = m.cube.reshape(-1, 4, m.cube.shape[-1])
    kw = {"coarse": False} if arm == "full" else {}
    inv.RESCUE_MIN_TRIALS_PER_CYCLE = 13 if arm == "full" else _STATE["default_trials"]
    c0 = time.process_time()
    r = pyinv.invert_pixel(cube[i], guess, m.lines, m.grid, cfg, psf=m.psf, mu=m.mu, **kw)
    cpu = time.process_time() - c0
    a = r.atmosphere
    k = int(np.argmin(np.abs(a.log_tau)))
    w = np.asarray(cfg.weights_for(cfg.cycles), float)
    resid = float(np.sum(w[:, None] * (cube[i] - r.fit) ** 2))
    return resid, cpu, float(a.T[k]), float(a.vlos[k]), float(a.B[k] * np.cos(np.radians(a.gamma[k]))), int(r.status)


def run_case(recipe: str, family: str, n: int, workers: int) -> dict:
    import numpy as np

    m, _, _ = _case(recipe, family, n)
    tr = m.truth.reshape(-1, m.truth.shape[2], 11)
    k = int(np.argmin(np.abs(tr[0, :, 0])))
    truth = {"T": tr[:, k, 1], "v": tr[:, k, 5], "B_los": tr[:, k, 4] * np.cos(np.radians(tr[:, k, 6]))}
    npix = tr.shape[0]
    out = {"recipe": recipe, "family": family, "seed": int(m.seed), "mu": float(m.mu), "pixels": npix}
    rows = {}
    with Pool(workers, initializer=_init, initargs=(recipe, family, n)) as pool:
        for arm in ("defaults", "full"):
            rows[arm] = np.array(pool.map(_pixel, [(i, arm) for i in range(npix)], chunksize=4))
    for arm, r in rows.items():
        out[arm] = {"cpu_per_pixel": float(r[:, 1].mean()), "status_nonzero": int(np.sum(r[:, 5] != 0)),
                    "corr_truth": {q: float(np.corrcoef(r[:, j], truth[q])[0, 1])
                                   for q, j in (("T", 2), ("v", 3), ("B_los", 4))}}
    ratio = rows["defaults"][:, 0] / rows["full"][:, 0]
    out["cpu_ratio"] = out["defaults"]["cpu_per_pixel"] / out["full"]["cpu_per_pixel"]
    out["residual_ratio"] = {"le_1.05": float(np.mean(ratio <= 1.05)), "ge_1/1.05": float(np.mean(ratio >= 1 / 1.05)),
                             "median": float(np.median(ratio)), "p90": float(np.percentile(ratio, 90)),
                             "p99": float(np.percentile(ratio, 99))}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=20, help="map side N [20]")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=str(RESULTS / "coarse_grids.txt"))
    args = ap.parse_args()
    pin_threads()
    lines = [f"benchmarks/bench_coarse.py --size {args.size}, commit {code_version()}"]
    cases = []
    for recipe in ("hinode-sp-fe6301", "gris-fe15648"):
        for family in ("sunspot", "emerging"):
            c = run_case(recipe, family, args.size, args.workers)
            cases.append(c)
            d, f, rr = c["defaults"], c["full"], c["residual_ratio"]
            cor = " ".join(f"{q} {d['corr_truth'][q]:.4f}/{f['corr_truth'][q]:.4f}" for q in d["corr_truth"])
            line = (f"{recipe:17s} {family:8s} mu {c['mu']:.2f} n={c['pixels']}: CPU/px {d['cpu_per_pixel']:.4f} vs "
                    f"{f['cpu_per_pixel']:.4f} s (ratio {c['cpu_ratio']:.2f}); truth r (defaults/full) {cor}; "
                    f"residual ratio <= 1.05 on {100 * rr['le_1.05']:.1f} %, "
                    f">= 1/1.05 on {100 * rr['ge_1/1.05']:.1f} %, "
                    f"median {rr['median']:.3f}, p90 {rr['p90']:.3f}, p99 {rr['p99']:.3f}; "
                    f"failures {d['status_nonzero']}/{f['status_nonzero']}")
            print(line, flush=True)
            lines.append(line)
    from pathlib import Path
    Path(args.out).write_text("\n".join(lines) + "\n")
    Path(args.out).with_suffix(".json").write_text(json.dumps({"code": code_version(), "cases": cases}, indent=1))
    print("->", args.out)


if __name__ == "__main__":
    main()
