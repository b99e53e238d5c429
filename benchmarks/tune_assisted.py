"""Settings of the assisted cycle (``pyinv.cnn.CNNInit``: initial Marquardt λ, LM iterations, rtol, Broyden
reuse) on the four transfer maps of ``bench_assisted.py``, per pixel and load-independent where it matters.

Every pixel is inverted in this process with :func:`pyinv.invert_pixel` — the standard run (reference
configuration, 3 cycles, default guess; cached in ``--workdir``) and, per setting, one cycle with its
last-cycle nodes from the CNN's start (the start ``init="cnn"`` gives). Printed per map and setting: mean
iterations and syntheses, CPU seconds per pixel and their ratio to the standard run (``time.process_time``,
still moved by other jobs on a shared machine: compare syntheses), the fraction of pixels with
χ²_assisted ≤ 1.05 χ²_standard and percentiles of the ratio, the correlations with the truth at log τ = 0
(as bench_assisted) and the quantities failing issue 12's margin (assisted ≥ standard − 0.01). The
fallback is not applied (bench_assisted measures the full path).

    PYTHONPATH=<build>/site:src python benchmarks/tune_assisted.py --size 16 \\
        "max_iterations=3, jacobian_reuse=3, initial_diagonal=1.0" "max_iterations=100, initial_diagonal=None"

A setting is a comma-separated list of ``invert_pixel`` keywords (max_iterations, rtol, jacobian_reuse) and
``initial_diagonal`` (the cycle's initial λ; None = the configuration's 1e-3).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import pickle
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("settings", nargs="*", help='e.g. "max_iterations=3, initial_diagonal=1.0"')
    ap.add_argument("--model", default="hinode-sp-fe6301", help="catalogue name [hinode-sp-fe6301]")
    ap.add_argument("--size", type=int, default=16, help="map side N [16]")
    ap.add_argument("--seed", type=int, default=31, help="first map's seed, as bench_assisted [31]")
    ap.add_argument("--maps", help="comma-separated subset of sunspot_mu1,sunspot_mu0.77,sunspot_mu0.5,emerging_mu1")
    ap.add_argument("--workdir", help="cache of the standard runs [~/.cache/pyinv/tune_assisted]")
    args = ap.parse_args()

    import pyinv
    import pyinv.cnn as cnn
    from pyinv.cnn.commands import quantities
    from pyinv.cnn.init import one_cycle
    from pyinv.maps.result import InversionResult

    from _common import transfer_maps, truth_correlations

    n, S = args.size, args.seed
    model = cnn.as_model(args.model)
    rec = cnn.get_recipe(args.model)
    lines = rec.lines()
    inst = dict(lines=lines, grid=rec.grid(lines), psf=rec.psf())
    maps = transfer_maps(n, S, inst, args.maps)
    work = Path(args.workdir or (Path.home() / ".cache" / "pyinv" / "tune_assisted"))
    work.mkdir(parents=True, exist_ok=True)
    guess = pyinv.models.default_guess()

    def run(m, start, cfg, **kw):
        out = []
        for p in range(n * n):
            iy, ix = divmod(p, n)
            row, mac = start(iy, ix)
            g = pyinv.Atmosphere.from_array(row, macro=mac, filling=1.0, stray=0.0)
            t0 = time.process_time()
            r = pyinv.invert_pixel(m.cube[iy, ix], g, m.lines, m.grid, cfg, mu=m.mu, psf=m.psf, **kw)
            out.append(dict(atm=r.atmosphere.to_array(), chi2=float(r.chi2[-1]), it=int(np.sum(r.iterations)),
                            syn=int(r.syntheses), cpu=time.process_time() - t0))
        return out

    def qty(out):
        atm = np.array([o["atm"] for o in out]).reshape(n, n, -1, 11)
        res = SimpleNamespace(atmospheres=atm)
        return quantities(SimpleNamespace(map=lambda k, lt: InversionResult.map(res, k, lt)))

    def line(tag, out, corr, extra=""):
        return (f"{tag}: it {np.mean([o['it'] for o in out]):.2f} syn {np.mean([o['syn'] for o in out]):.1f} "
                f"cpu/px {np.mean([o['cpu'] for o in out]) * 1e3:.1f} ms {extra}"
                + " ".join(f"{k} {v:.3f}" for k, v in corr.items()))

    settings = [eval(f"dict({s})", {"None": None}) for s in args.settings]  # noqa: S307 (command-line input)
    for name, make in maps.items():
        m = make()
        cfg = cnn.reference_config(mu=m.mu)
        cache = work / f"standard_{args.model}_{n}_{S}_{name}.pkl"
        if cache.exists():
            std = pickle.loads(cache.read_bytes())
        else:
            std = run(m, lambda iy, ix: (guess.to_array(), float(guess.macro)), cfg)
            cache.write_bytes(pickle.dumps(std))
        truth = quantities(m)
        c_std = truth_correlations(qty(std), truth)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            pred = cnn.predict(m.cube, model, grid=m.grid, lines=m.lines, mu=m.mu, log_tau=np.asarray(guess.log_tau))
        print(line(f"{name} standard", std, c_std), flush=True)
        print(f"{name} CNN alone: " + " ".join(f"{k} {v:.3f}" for k, v in truth_correlations(quantities(pred),
                                                                                             truth).items()))
        cpu_std = np.mean([o["cpu"] for o in std])
        for st in settings:
            kw = dict(st)
            lam = kw.pop("initial_diagonal", 1e-3)
            c1 = one_cycle(cfg)
            if lam is not None:
                c1 = dataclasses.replace(c1, initial_diagonal=float(lam))
            out = run(m, lambda iy, ix: (pred.atmospheres[iy, ix], float(pred.macro[iy, ix])), c1, **kw)
            corr = truth_correlations(qty(out), truth)
            ratio = np.array([a["chi2"] / b["chi2"] for a, b in zip(out, std)])
            fail = [k for k in corr if not corr[k] >= c_std[k] - 0.01]
            extra = (f"cpu x{cpu_std / np.mean([o['cpu'] for o in out]):.2f} chi2<=1.05 {np.mean(ratio <= 1.05):.3f} "
                     f"p90 {np.percentile(ratio, 90):.3f} p99 {np.percentile(ratio, 99):.3f} | ")
            print(line(f"{name} {st}", out, corr, extra) + f" | fail {fail or 'none'}", flush=True)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
