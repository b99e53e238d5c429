"""The calling process's memory and the wall time per pixel of ``pyinv.invert(..., init="cnn")`` against the
map's size (issue 17: the CNN starts are streamed, made chunk by chunk in the workers).

For each size N (default 64 and 256) a fresh Python process loads (generated once beforehand, in a process
of its own, and cached under ``benchmarks/out/``) a generated N×N Hinode-SP-like map
(:func:`pyinv.synthetic.generate_map`, seed 7, μ = 1), imports pyinv and pyinv.cnn, and then calls

    pyinv.invert(cube, lines, grid, None, init=CNNInit(max_iterations=M), psf=psf, workers=W,
                 checkpoint=<temporary folder>, progress=False)

on EVERY pixel of the map (no mask): the CNN starts of all N² pixels are made, every pixel is inverted,
the outputs are clustered and the fallback rule is applied. Measured in that process (the caller; the
pool workers are other processes and are not counted):

* ``base``: VmRSS just before the call (after a gc.collect());
* ``peak``: the peak resident size during the call: the kernel's VmHWM after resetting it just before
  the call (``/proc/self/clear_refs`` 5), and a thread sampling VmRSS every 2 ms (the larger of the two);
* ``wall``: seconds of the call, and per pixel.

``--tile 64`` builds the larger maps by tiling the 64×64 one (every pixel of the 256×256 map then asks
for the same work as one of the 64×64 map: the wall time per pixel compares the scaling alone, not the
maps' mixes of pixels). The machine may be shared: each run prints the load average before and after.

``--max-iterations`` (default 1) bounds the LM iterations of the assisted cycle (``CNNInit(max_iterations=)``)
so that a 256×256 map (65 536 pixels) runs in minutes on 2 cores; the packaged default is 3. The result
is memory-mapped from the checkpoint folder (a result held in memory is itself ~13 kB per pixel; the
measurement is of what the call adds besides the result's arrays).

Acceptance (issue 17): the peak increase at 256² ≤ 400 MB and ≤ 1.3 × that at 64²; the wall time per pixel
at 256² within 10 % of that at 64².

    PYTHONPATH=build/dev/site:src python3 benchmarks/bench_cnn_memory.py --out benchmarks/results/cnn_memory.txt
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _common import ROOT, code_version

CACHE = ROOT / "benchmarks" / "out"


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return -1


def _map(n: int, tile: int = 0):
    """The cached generated N×N map (cube, PSF, seconds to generate it now); ``tile`` > 0: the N×N cube made
    by repeating the tile×tile map (the same pixels as the tile×tile run, so per-pixel work is identical)."""
    import numpy as np

    if tile and n != tile:
        if n % tile:
            raise ValueError(f"--tile {tile} does not divide the map size {n}")
        c, psf, secs = _map(tile)
        return np.ascontiguousarray(np.tile(c, (n // tile, n // tile, 1, 1))), psf, secs

    CACHE.mkdir(parents=True, exist_ok=True)
    f = CACHE / f"cnn_memory_map_{n}.npz"
    if f.exists():
        d = np.load(f)
        return d["cube"], d["psf"], 0.0
    from pyinv.synthetic import generate_map

    t0 = time.perf_counter()
    m = generate_map(n, seed=7)
    secs = time.perf_counter() - t0
    np.savez(f, cube=m.cube, psf=m.psf)
    del m
    d = np.load(f)
    return d["cube"], d["psf"], secs


def one(n: int, workers: int, max_iterations: int, stride: int = 1, tile: int = 0) -> dict:
    """One measurement in this (fresh) process; returns the figures."""
    import gc
    import shutil
    import tempfile
    import threading

    import numpy as np

    import pyinv
    import pyinv.cnn  # noqa: F401  (module imports are not part of the call's cost)
    from pyinv.cnn import CNNInit

    cube, psf, gen_s = _map(n, tile)
    lines = pyinv.default_lines()
    grid = pyinv.models.hinode_grid(lines)
    init = CNNInit(max_iterations=max_iterations)
    mask = None
    if stride > 1:  # invert every stride-th pixel in y and x (the others: status 101, masked)
        mask = np.zeros((n, n), bool)
        mask[::stride, ::stride] = True
    ninv = n * n if mask is None else int(mask.sum())
    work = Path(tempfile.mkdtemp(prefix="bench-cnn-memory-", dir=CACHE))
    peak = [0]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], _status_kib("VmRSS"))
            time.sleep(0.002)

    gc.collect()
    base = _status_kib("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as f:  # VmHWM := VmRSS
            f.write("5")
        hwm_reset = True
    except OSError:
        hwm_reset = False
    th = threading.Thread(target=sample, daemon=True)
    th.start()
    load0 = os.getloadavg()[0]
    import resource
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    try:
        res = pyinv.invert(cube, lines, grid, None, init=init, psf=psf, workers=workers, progress=False,
                           checkpoint=work / "ck", mask=mask)
        wall = time.perf_counter() - t0
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        stop.set()
        th.join()
        hwm = _status_kib("VmHWM") if hwm_reset else 0
        st = np.asarray(res.status)
        prov = res.provenance
        fb = prov.get("fallback", {})
        info = prov.get("init_info", {})
        out = {"n": n, "tile": tile, "pixels": int(n * n), "inverted": ninv, "stride": stride, "workers": workers,
               "max_iterations": max_iterations,
               "base_mb": base / 1024, "peak_mb": max(peak[0], hwm) / 1024,
               "increase_mb": (max(peak[0], hwm) - base) / 1024, "hwm_reset": hwm_reset,
               "sampled_increase_mb": (peak[0] - base) / 1024, "wall_s": wall, "ms_per_pixel": 1e3 * wall / ninv,
               "converged": int((st == 0).sum()), "other_status": int(((st != 0) & (st != 101)).sum()),
               "fallback_flagged": fb.get("flagged"), "fallback_replaced": fb.get("replaced"),
               "fallback_s": fb.get("seconds"), "labels": len(set(np.ravel(prov.get("labels", [])))),
               "worker_seconds_inference": info.get("seconds_inference"),
               "worker_seconds_interpolation": info.get("seconds_interpolation"),
               "caller_cpu_s": (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime),
               "worker_ms_per_pixel": 1e3 * float(np.nanmean(np.asarray(res.seconds)[np.asarray(res.status) == 0])),
               "loadavg_before": load0, "loadavg_after": os.getloadavg()[0], "map_generation_s": gen_s}
        del res
    finally:
        stop.set()
        shutil.rmtree(work, ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 256, 64],
                    help="map sizes, in this order (a size given twice is measured twice; its mean is compared)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--max-iterations", type=int, default=1)
    ap.add_argument("--stride", type=int, nargs="+", default=None,
                    help="per size: invert only every S-th pixel in y and x (default 1 = every pixel)")
    ap.add_argument("--tile", type=int, default=0,
                    help="build every map larger than TILE×TILE by tiling the TILE×TILE generated map (e.g. 64)")
    ap.add_argument("--out", default=None, help="also write the printed text to this file")
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--cache-only", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.cache_only is not None:   # generate and cache the map in a process of its own (not measured)
        _map(args.cache_only, args.tile)
        return
    if args.one is not None:
        print("RESULT " + json.dumps(one(args.one, args.workers, args.max_iterations, (args.stride or [1])[0],
                                         args.tile)), flush=True)
        return
    lines_out: list[str] = []

    def say(s: str) -> None:
        print(s, flush=True)
        lines_out.append(s)

    commit = (code_version()["commit"] or "")[:7]
    say(f"bench_cnn_memory: pyinv.invert(init=CNNInit(max_iterations={args.max_iterations}), config None, "
        f"workers={args.workers}, checkpoint=tmp) on every pixel of generate_map(N, seed=7)"
        + (f" (maps larger than {args.tile}x{args.tile}: that map tiled)" if args.tile else "")
        + f"; commit {commit}; "
        f"{os.cpu_count()} CPUs")
    say("caller = the process calling pyinv.invert (pool workers not counted); increase = peak RSS during the "
        "call - RSS just before it")
    rows = {}
    strides = args.stride or [1] * len(args.sizes)
    # every map generated and cached first, each in a process of its own: a measured process only loads it (a
    # process that also generated its map starts from a higher RSS, which hides the call's own increase)
    for n in dict.fromkeys(args.sizes):
        subprocess.run([sys.executable, __file__, "--cache-only", str(n), "--tile", str(args.tile)], check=True,
                       env=dict(os.environ))
    for n, stride in zip(args.sizes, strides):
        cmd = [sys.executable, __file__, "--one", str(n), "--workers", str(args.workers),
               "--max-iterations", str(args.max_iterations), "--stride", str(stride), "--tile", str(args.tile)]
        p = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
        got = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
        if p.returncode != 0 or not got:
            say(f"N={n}: FAILED (exit {p.returncode})\n{p.stderr[-3000:]}")
            continue
        r = json.loads(got[-1][len("RESULT "):])
        rows.setdefault(n, []).append(r)
        say(f"N={n:4d} ({r['pixels']:6d} px, {r['inverted']:6d} inverted): caller RSS before {r['base_mb']:7.1f} MB, peak {r['peak_mb']:7.1f} MB, "
            f"increase {r['increase_mb']:6.1f} MB (sampled {r['sampled_increase_mb']:6.1f}); wall {r['wall_s']:7.1f} s = "
            f"{r['ms_per_pixel']:6.2f} ms per inverted pixel (a worker's solve {r['worker_ms_per_pixel']:.2f} ms/pixel, "
            f"caller CPU {r['caller_cpu_s']:.1f} s); status 0: {r['converged']}, other: {r['other_status']}; fallback "
            f"flagged {r['fallback_flagged']}, replaced {r['fallback_replaced']} ({r['fallback_s'] or 0:.1f} s); "
            f"load average {r['loadavg_before']:.2f} -> {r['loadavg_after']:.2f}")
    if 64 in rows and 256 in rows:  # a size measured more than once (--sizes 64 256 64): the mean of its runs
        a, b = ({k: sum(r[k] for r in rows[n]) / len(rows[n]) for k in ("increase_mb", "ms_per_pixel",
                                                                         "worker_ms_per_pixel")}
                for n in (64, 256))
        ratio = b["increase_mb"] / max(a["increase_mb"], 1e-9)
        tr = b["ms_per_pixel"] / a["ms_per_pixel"]
        say(f"256x256 vs 64x64 (means over {len(rows[256])} and {len(rows[64])} run(s)): peak increase "
            f"{b['increase_mb']:.1f} MB vs {a['increase_mb']:.1f} MB (limit 400 MB: "
            f"{'PASS' if b['increase_mb'] <= 400 else 'FAIL'}), ratio {ratio:.2f} (limit 1.3: "
            f"{'PASS' if ratio <= 1.3 else 'FAIL'}); wall time per pixel ratio {tr:.3f} (within 10 %: "
            f"{'PASS' if abs(tr - 1) <= 0.10 else 'FAIL'}); a worker's solve time per pixel ratio "
            f"{b['worker_ms_per_pixel'] / a['worker_ms_per_pixel']:.3f} (the same solver: other load on the machine)")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("\n".join(lines_out) + "\n")


if __name__ == "__main__":
    main()
