"""Robustness benchmarks (issue 10): worker memory under load, and a long fuzz run.

    python benchmarks/bench_robustness.py synth-memory [--warmup 1000 --calls 100000]
    python benchmarks/bench_robustness.py map-memory   [--small 16 --large 256 --workers 2]
    python benchmarks/bench_robustness.py fuzz         [--inputs 20000 --seed 1]

* ``synth-memory``: one pyinv pool worker process runs ``warmup`` syntheses, then ``calls`` more; its
  resident size (VmRSS) is sampled; prints the largest growth over the post-warm-up value (target: < 5 %).
* ``map-memory``: ``pyinv.invert(init="previous")`` of a small and a large map (one cycle, one node in T,
  at most 2 iterations, node Jacobian), local pool; a sampler reads the peak resident size (VmHWM) of every worker
  process; prints both peaks and their difference (target: < 50 MB).
* ``fuzz``: ``inputs`` fuzz inputs of the public API and pyinv.engine (pyinv.testing.fuzz) in child processes;
  prints the outcomes by kind and by target, the crashes and the hangs (target: 0).

Run it with ``nice``; the map run of 256x256 takes minutes.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from _common import Sampler


def synth_memory(args) -> dict:
    from pyinv.testing import solvers as _testing
    from pyinv.maps.processes import mp_context

    with ProcessPoolExecutor(1, mp_context=mp_context()) as ex:
        t0 = time.perf_counter()
        samples = ex.submit(_testing.synthesize_rss_probe, args.warmup, args.calls, max(1, args.calls // 20)).result()
        secs = time.perf_counter() - t0
    base = samples[0][1]
    peak = max(r for _, r in samples)
    growth = 100.0 * (peak - base) / base
    print(f"synth-memory: worker VmRSS after {args.warmup} warm-up syntheses {base / 1024:.1f} MiB; over the next "
          f"{args.calls}: max {peak / 1024:.1f} MiB, final {samples[-1][1] / 1024:.1f} MiB -> growth {growth:+.2f} % "
          f"(target < 5 %) [{secs:.0f} s]")
    print("  samples (calls, MiB): " + ", ".join(f"({k}, {r / 1024:.1f})" for k, r in samples))
    return {"base_kib": base, "peak_kib": peak, "final_kib": samples[-1][1], "growth_percent": growth,
            "calls": args.calls, "warmup": args.warmup, "seconds": secs}


def _descendants(pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    parents[int(d)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    out, frontier = [], [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parents.items() if pp == p]
        out += kids
        frontier += kids
    return out


def _parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return -1


def _hwm_kib(pid: int) -> tuple[int, str]:
    try:
        with open(f"/proc/{pid}/status") as f:
            txt = f.read()
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return 0, ""
    for line in txt.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]), cmd
    return 0, cmd


class _PeakSampler(Sampler):
    """Peak VmHWM of the pool workers (descendants of this process other than the forkserver and the
    resource tracker), read every ``period`` seconds."""

    def __init__(self, period: float = 0.5):
        self.period = period
        self.peak: dict[int, int] = {}

    def sample(self) -> None:
        me = os.getpid()
        for pid in _descendants(me):
            kib, cmd = _hwm_kib(pid)
            if "resource_tracker" in cmd or not kib:
                continue
            if "forkserver" in cmd and _parent(pid) == me:  # the fork server itself, not a worker
                continue
            self.peak[pid] = max(kib, self.peak.get(pid, 0))


def _map_run(n: int, workers: int) -> dict:
    import pyinv
    from pyinv import models
    from pyinv.maps.inversion import invert_map

    lines = pyinv.default_lines()
    grid = models.hinode_grid(lines)
    g = models.default_guess()
    stokes = pyinv.synthesize(g.with_columns(vlos=np.asarray(g.vlos) + 3e4), lines, grid)
    cube = np.broadcast_to(stokes, (n, n) + stokes.shape).copy()
    guess = np.broadcast_to(g.to_array(), (n, n) + g.to_array().shape).copy()  # init="previous": one row per pixel
    cfg = pyinv.InversionConfig(cycles=1, nodes={"T": 1})
    with _PeakSampler() as s:
        t0 = time.perf_counter()
        r = invert_map(cube, lines, grid, cfg, init="previous", guess=guess, mask=None, sigma=None, mu=None, psf=None,
                       abundances=None, axes="yxsl", executor=None, workers=workers, chunk=None, checkpoint=None,
                       progress=False, time_limit=None, retries=2, solver="pyinv.testing.solvers:two_iteration_solver")  # nodes Jacobian
        secs = time.perf_counter() - t0
    peaks = sorted(s.peak.values())
    return {"n": n, "pixels": n * n, "seconds": secs, "worker_peaks_kib": peaks,
            "max_peak_kib": max(peaks) if peaks else 0, "status": r.summary(),
            "max_iterations": int(r.iterations.max())}


def map_memory(args) -> dict:
    small = _map_run(args.small, args.workers)
    print(f"map-memory: {args.small}x{args.small}: worker peak RSS {small['max_peak_kib'] / 1024:.1f} MiB "
          f"({small['seconds']:.0f} s, {small['status']})", flush=True)
    large = _map_run(args.large, args.workers)
    print(f"map-memory: {args.large}x{args.large}: worker peak RSS {large['max_peak_kib'] / 1024:.1f} MiB "
          f"({large['seconds']:.0f} s, {large['status']}, at most {large['max_iterations']} iterations)")
    diff = (large["max_peak_kib"] - small["max_peak_kib"]) / 1024
    print(f"map-memory: difference {diff:+.1f} MiB = {diff * 1.048576:+.1f} MB (target < 50 MB); "
          f"per-worker peaks small {[round(k / 1024, 1) for k in small['worker_peaks_kib']]} MiB, "
          f"large {[round(k / 1024, 1) for k in large['worker_peaks_kib']]} MiB")
    return {"small": small, "large": large, "difference_mib": diff}


def fuzz(args) -> dict:
    from pyinv.testing import fuzz as _fuzz

    t0 = time.perf_counter()
    res = _fuzz.drive(args.inputs, args.seed, timeout=7200, per_input=60)
    secs = time.perf_counter() - t0
    by_kind: dict = collections.defaultdict(collections.Counter)
    by_target: dict = collections.defaultdict(collections.Counter)
    for t, k, o, c in res["outcomes"]:
        by_kind[k][o] += c
        by_target[t][o] += c
    outcomes = sorted({o for c in by_kind.values() for o in c})
    print(f"fuzz: {args.inputs} inputs (seed {args.seed}) in {secs:.0f} s; crashes: {len(res['crashes'])}, "
          f"hangs (> 60 s): {len(res['hangs'])}")
    w = max(len(t) for t in by_target)
    print(f"  {'kind':<{w}} " + " ".join(f"{o:>13}" for o in outcomes))
    for k in sorted(by_kind):
        print(f"  {k:<{w}} " + " ".join(f"{by_kind[k][o]:>13}" for o in outcomes))
    print(f"  {'target':<{w}} " + " ".join(f"{o:>13}" for o in outcomes))
    for t in sorted(by_target):
        print(f"  {t:<{w}} " + " ".join(f"{by_target[t][o]:>13}" for o in outcomes))
    for c in res["crashes"]:
        print(f"  CRASH input {c[0]}: {c[1]} ({c[2]}), exit {c[3]}")
    for c in res["hangs"]:
        print(f"  HANG input {c[0]}: {c[1]} ({c[2]})")
    return {"inputs": args.inputs, "seed": args.seed, "seconds": secs, "crashes": res["crashes"], "hangs": res["hangs"],
            "by_kind": {k: dict(v) for k, v in by_kind.items()}, "by_target": {k: dict(v) for k, v in by_target.items()}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    s = sub.add_parser("synth-memory")
    s.add_argument("--warmup", type=int, default=1000)
    s.add_argument("--calls", type=int, default=100000)
    m = sub.add_parser("map-memory")
    m.add_argument("--small", type=int, default=16)
    m.add_argument("--large", type=int, default=256)
    m.add_argument("--workers", type=int, default=2)
    f = sub.add_parser("fuzz")
    f.add_argument("--inputs", type=int, default=20000)
    f.add_argument("--seed", type=int, default=1)
    for p in (s, m, f):
        p.add_argument("--json", help="also write the numbers to this JSON file")
    args = ap.parse_args(argv)
    out = {"synth-memory": synth_memory, "map-memory": map_memory, "fuzz": fuzz}[args.what](args)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
