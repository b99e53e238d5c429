"""Parallel scaling and scheduler overhead of pyinv.invert (issue 5).

Measures, in one run on the same synthetic map:
* a plain Python loop over ``pyinv.invert_pixel`` in this process (threads pinned to 1, as workers are);
* ``pyinv.invert(..., workers=1)`` — scheduler overhead = its wall time / the loop's − 1 (target ≤ 5 %);
* ``pyinv.invert(..., workers=N)`` with N = usable cores — parallel efficiency =
  (pixels/s with N) / (N · pixels/s with 1 worker) (target ≥ 90 %).

    PYTHONPATH=<build>/site:src python benchmarks/bench_parallel.py [--pixels 200] [--out results.json]

``--solver standin`` times the scheduler with the private stand-in solver (a vlos fit by synthesis)
when ``invert_pixel`` is not available.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pixels", type=int, default=200, help="number of pixels of the synthetic map")
    ap.add_argument("--workers", type=int, default=None, help="workers of the parallel run [usable cores]")
    ap.add_argument("--solver", choices=("invert_pixel", "standin"), default="invert_pixel")
    ap.add_argument("--repeat", type=int, default=1, help="repeat each measurement, keep the fastest")
    ap.add_argument("--out", help="write the figures as JSON")
    args = ap.parse_args()

    import pyinv
    from pyinv import models
    from pyinv.maps.inversion import invert_map
    from pyinv.maps.processes import usable_cores
    from threadpoolctl import threadpool_limits

    lines = pyinv.default_lines()
    grid = models.hinode_grid(lines)
    cfg = pyinv.InversionConfig(cycles=1, nodes={"T": 2, "vlos": 1, "B": 1, "gamma": 1, "phi": 1},
                                weights=(1, 4, 4, 2))
    if args.solver == "invert_pixel":
        if not hasattr(pyinv, "invert_pixel"):
            raise SystemExit("pyinv.invert_pixel is not available; use --solver standin")
        solver_name, solver = "pyinv:invert_pixel", pyinv.invert_pixel
    else:
        from pyinv.testing.solvers import vlos_fit_solver
        solver_name, solver = "pyinv.testing.solvers:vlos_fit_solver", vlos_fit_solver

    n = args.pixels
    nx = int(np.ceil(np.sqrt(n)))
    ny = int(np.ceil(n / nx))
    rng = np.random.default_rng(0)
    g = models.default_guess()
    truths = [g.with_columns(vlos=rng.uniform(-2e5, 2e5), B=rng.uniform(100, 2000), gamma=rng.uniform(10, 170),
                             phi=rng.uniform(0, 180)) for _ in range(ny * nx)]
    cube = pyinv.synthesize(truths, lines, grid).reshape(ny, nx, 4, -1)
    cube += rng.normal(0, 1e-3, cube.shape)
    npix = ny * nx
    nworkers = args.workers or usable_cores()

    def run_invert(w):
        return invert_map(cube, lines, grid, cfg, init="single", guess=None, mask=None, sigma=None, mu=None,
                          psf=None, abundances=None, axes="yxsl", executor=None, workers=w, chunk=None,
                          checkpoint=None, progress=False, time_limit=None, retries=2, solver=solver_name)

    def timed(f):
        best = np.inf
        out = None
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            out = f()
            best = min(best, time.perf_counter() - t0)
        return best, out

    def loop():
        with threadpool_limits(limits=1):
            return [solver(cube[y, x], g, lines, grid, cfg) for y in range(ny) for x in range(nx)]

    # the first pool of a session starts the forkserver (imports pyinv once, ~0.3 s): timed separately
    t0 = time.perf_counter()
    invert_map(cube[:1, :1], lines, grid, cfg, init="single", guess=None, mask=None, sigma=None, mu=None, psf=None,
               abundances=None, axes="yxsl", executor=None, workers=1, chunk=None, checkpoint=None,
               progress=False, time_limit=None, retries=2, solver=solver_name)
    t_first = time.perf_counter() - t0
    t_loop, ref = timed(loop)
    t_1, r1 = timed(lambda: run_invert(1))
    t_n, rn = timed(lambda: run_invert(nworkers))
    same = bool(np.array_equal(r1.atmospheres, rn.atmospheres, equal_nan=True))
    dev = max(float(np.nanmax(np.abs(r1.atmospheres[y, x] - ref[y * nx + x].atmosphere.to_array())))
              for y in range(ny) for x in range(nx))
    res = {
        "solver": solver_name, "pixels": npix, "workers": nworkers,
        "seconds": {"loop": t_loop, "invert_1_worker": t_1, f"invert_{nworkers}_workers": t_n},
        "pixels_per_s": {"loop": npix / t_loop, "1_worker": npix / t_1, f"{nworkers}_workers": npix / t_n},
        "scheduler_overhead": t_1 / t_loop - 1.0, "first_pool_start_seconds": t_first,
        "parallel_efficiency": (t_1 / t_n) / nworkers,
        "speedup": t_1 / t_n,
        "results_identical_1_vs_n": same,
        "max_abs_diff_vs_loop": dev,
        "seconds_per_pixel_median": float(np.nanmedian(r1.seconds)),
        # wall time of the 1-worker run over the time spent inside the solver (same run: insensitive to
        # other load on the machine between runs)
        "scheduler_overhead_vs_solver_time": t_1 / float(np.nansum(r1.seconds)) - 1.0,
        "load_average": list(os.getloadavg()),
    }
    print(f"map {ny}x{nx} = {npix} pixels, solver {solver_name}")
    print(f"  plain loop over the solver : {npix / t_loop:8.2f} px/s  ({t_loop:.2f} s)")
    print(f"  pyinv.invert, 1 worker     : {npix / t_1:8.2f} px/s  ({t_1:.2f} s)  scheduler overhead "
          f"{100 * res['scheduler_overhead']:+.1f} %  (target <= 5 %)")
    print(f"  pyinv.invert, {nworkers} workers    : {npix / t_n:8.2f} px/s  ({t_n:.2f} s)  speed-up {res['speedup']:.2f}, "
          f"efficiency {100 * res['parallel_efficiency']:.1f} %  (target >= 90 %)")
    print(f"  1-worker wall time vs time inside the solver in that run: overhead "
          f"{100 * res['scheduler_overhead_vs_solver_time']:+.1f} %; load average {os.getloadavg()[0]:.2f}")
    print(f"  (first pool of the session incl. forkserver start, 1 pixel: {t_first:.2f} s)")
    print(f"  1 vs {nworkers} workers identical: {same}; max |Δ| vs loop: {dev:.3g}")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(res, fh, indent=1)


if __name__ == "__main__":
    main()
