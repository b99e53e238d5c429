"""Inversion targets vs the generator's truth as CNN training targets (issue 12): which transfers better?

Generates ``--maps`` sunspot maps (pyinv.synthetic.generate_map, Hinode SP recipe sampling and PSF, μ drawn in
0.5–1, seeds 9000+k, none of them the transfer maps), inverts them with :func:`pyinv.cnn.training_config`
(3 cycles, the paper's simple set-up), and trains two CNNs with identical settings and seeds on the same
pixels: one on the inversions, one on the truth. Both are then applied to the four transfer maps of
``bench_assisted.py --protocol transfer`` (seeds 31–34, μ 1, 0.77, 0.5 and the emerging region, never seen):
printed are the correlations of the CNN alone with the truth at log τ = 0 (as bench_assisted) and the RMS
errors of T, vlos and B there. Writes ``benchmarks/results/targets_compare.json`` with the commit.

    PYTHONPATH=<build>/site:src python benchmarks/targets_compare.py --maps 8 --size 32 --workers 2
"""
from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np

import pyinv
import pyinv.cnn as cnn
from pyinv.synthetic import generate_map

from _common import RESULTS, code_version, transfer_maps


def corr(a, b, m=None):
    a, b = np.ravel(a), np.ravel(b)
    if m is not None:
        a, b = a[np.ravel(m)], b[np.ravel(m)]
    return float(np.corrcoef(a, b)[0, 1])


def at0(atm_cube, col):
    """(ny, nx) value of column ``col`` at log τ = 0 of an atmosphere cube (ny, nx, ndep, 11)."""
    lt = atm_cube[0, 0, :, 0]
    k = int(np.argmin(np.abs(lt)))
    return atm_cube[:, :, k, col]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--maps", type=int, default=8)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--eval-size", type=int, default=32)
    ap.add_argument("--out", default=str(RESULTS / "targets_compare.json"))
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    code = code_version()
    rec = cnn.get_recipe("hinode-sp-fe6301")
    lines = rec.lines()
    inst = dict(lines=lines, grid=rec.grid(lines), psf=rec.psf())
    rng = np.random.default_rng(9000)
    ts_inv = ts_truth = None
    t0 = time.perf_counter()
    npix = 0
    for k in range(args.maps):
        mu = float(rng.uniform(0.5, 1.0))
        m = generate_map(args.size, 9000 + k, mu=mu, **inst)
        res = pyinv.invert(m.cube, m.lines, m.grid, cnn.training_config(mu=mu), psf=m.psf, mu=mu,
                           workers=args.workers, progress=False)
        ok = np.asarray(res.status) == 0
        a = cnn.build_training_set(m.cube, res, m.grid, m.lines, mu=mu)
        truth = np.asarray(m.truth)
        b = cnn.build_training_set(m.cube, truth, m.grid, m.lines, macro=m.macro, mu=mu)
        ts_inv = a if ts_inv is None else ts_inv + a
        ts_truth = b if ts_truth is None else ts_truth + b
        npix += int(ok.sum())
        print(f"map {k}: mu {mu:.2f}, {ok.sum()} pixels inverted ({time.perf_counter() - t0:.0f} s)", flush=True)
    models = {}
    for name, ts in (("inversion", ts_inv), ("truth", ts_truth)):
        models[name] = cnn.train(ts, epochs=args.epochs, batch_size=256, learning_rate=0.004, seed=0, threads=2,
                                 progress=False, patience=None)
        print(f"trained on {name} targets", flush=True)
    out = {"code": code, "maps": args.maps, "size": args.size, "pixels_inversion": len(ts_inv),
           "pixels_truth": len(ts_truth), "epochs": args.epochs, "results": {}}
    # the four transfer maps of issue 12 (seeds 31-34)
    evals = transfer_maps(args.eval_size, 31, inst, "sunspot_mu1,sunspot_mu0.77,sunspot_mu0.5,emerging_mu1")
    cols = {"T": 1, "vlos": 5, "B": 4, "gamma": 6}
    for mname, make in evals.items():
        m = make()
        mu = m.mu
        truth = np.asarray(m.truth)
        row = {}
        for name, model in models.items():
            p = cnn.predict(m.cube, model, mu=mu)
            atm = np.asarray(p.atmospheres)
            strong = at0(truth, 4) > 300
            r = {}
            for q, c in cols.items():
                sel = strong if q == "gamma" else None
                r[f"corr_{q}"] = corr(at0(atm, c), at0(truth, c), sel)
                r[f"rms_{q}"] = float(np.sqrt(np.mean((at0(atm, c) - at0(truth, c)) ** 2)))
            row[name] = r
        out["results"][mname] = row
        print(mname, json.dumps({n: {k: round(v, 4) for k, v in r.items()} for n, r in row.items()}), flush=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
