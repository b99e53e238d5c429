"""Spatially coupled inversions (issue 20) against the pixel-by-pixel inversion of the same PSF-degraded maps.

For each map family (``spot``: :func:`pyinv.synthetic.generate_map`, a sunspot with penumbra, plage and quiet
Sun; ``qp``: :func:`pyinv.synthetic.generate_quiet_plage`, granulation with kG flux tubes in plage lanes), a
``size`` × ``size`` map is generated noise-free (seed ``--seed``), every monochromatic Stokes image is
convolved with the Hinode SP spatial PSF sampled at 0.16″ (``../shared/data/instrument_hinode_sp/
hinode_psf_0.16.fits``, 41 × 41, mirror-extended edges: :class:`pyinv.coupled.SpatialPSF`), and Gaussian noise
σ = ``--noise`` (1e-3) is added. The degraded cube is then inverted

* pixel by pixel: ``pyinv.invert(cube, lines, grid, cfg, init="cluster", psf=<spectral PSF>, workers=W)``
  (``--init``: each k-means cluster of observables starts from the nearest library prototype, so plage and
  flux tubes start from the plage model FAL-H and umbrae from an umbral model; ``--init single``: every
  pixel from the quiet-Sun default guess, as up to commit 649bb64);
* coupled: ``pyinv.coupled.invert_coupled(cube, <that result>, <spatial PSF>, ..., workers=W, tile=T)``,

with the reference configuration of the CNN benchmarks (3 cycles; T 1,3,5; v, B 1,3,3; γ, φ, vmic, vmac 1;
weights 1,4,4,2; S/N 1000; the coupled solver uses the last cycle's nodes).

Reported per family and method: the correlations with the truth at log τ = 0 of T, B, v_LOS and the
inclination; the rms errors of B and T in the pixels whose true B at log τ = 0 exceeds 500 G; the median
reduced χ² of the fit to the degraded cube (σ = 1/S/N); wall seconds per pixel and the workers' seconds per
pixel (sum over pixels of ``result.seconds``); the ratio coupled / pixel-by-pixel; the memory of this process
(the caller: VmRSS before the call and the peak during it, sampled every 5 ms) and the largest worker's
peak RSS. The targets of issue 20: coupled correlations above the pixel-by-pixel ones for T, B, v_LOS, γ;
B rms and T rms better by ≥ 30 % where B > 500 G; median reduced χ² ≤ 1.2; cost ≤ 5 × pixel-by-pixel;
memory ≤ 2 GB for a 256 × 256 map. The 256² memory is estimated from the measured footprint per solved
pixel of a tile (``--tile`` interior plus the PSF border) and the result arrays, unless ``--memory-run 256``
measures it: a 256² map whose start is the generator's truth (no pixel-by-pixel inversion), one coupled LM
iteration (``max_iterations=1``), the same tiles and workers.

    PYTHONPATH=build/dev/site:src python3 benchmarks/bench_coupled.py [--size 48] [--families spot qp]
        [--workers 2] [--tile 64] [--seed 3] [--memory-run 256] [--out benchmarks/results/coupled]

``--reference`` also inverts, pixel by pixel, the same map *without* the PSF (same noise): what the node
model and the pixel solver reach on undegraded data, the floor of the comparison. ``--compare-tile N`` runs the coupled inversion a second time with N-pixel tiles (each with its PSF border)
and reports the rms differences at log τ = 0 to the main run (the error of tiling). The pixel-by-pixel
results are cached (FITS and their timings) under ``--workdir`` (default ``~/.cache/pyinv/bench_coupled``) and
reused by a rerun with the same size, seed, noise and workers (the JSON says ``cached``).

Writes ``<out>.json`` and ``<out>.txt`` (with the git commit) unless ``--no-save``, and per family the
quick-look figure of :func:`pyinv.plots.plot_coupled` (pixel-by-pixel vs coupled maps of T, B, v, γ at
log τ = 0, reduced χ² maps, χ² per tile and LM step) to ``<out>_<family>.png`` (not kept in git) unless
``--no-figures``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from _common import Sampler

ROOT = Path(__file__).resolve().parent.parent
PSF_FILE = ROOT.parent / "shared" / "data" / "instrument_hinode_sp" / "hinode_psf_0.16.fits"
NODES = {"T": (1, 3, 5), "vlos": (1, 3, 3), "B": (1, 3, 3), "gamma": 1, "phi": 1, "vmic": 1, "macro": 1}


def _corr_text(r: dict) -> str:
    """"corr T/B/v/gamma a/b/c/d" of a record's correlations with the truth."""
    return "corr T/B/v/gamma " + "/".join(f"{r['corr_' + k]:.3f}" for k in ("T", "B", "vlos", "gamma"))


def _rss_kib(pid: int | str = "self", key: str = "VmRSS") -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


class MemorySampler(Sampler):
    """Peak VmRSS (and RssAnon: memory that is not file-backed page cache) of this process and of each of its
    descendants (pool workers, the forkserver), sampled every ``dt`` seconds; ``worker_peak_mib`` is the
    largest descendant, ``workers_sum_mib`` the sum of every descendant's peak (an upper bound of what they
    held at once)."""

    def __init__(self, dt: float = 0.005):
        self.period = dt
        self.base = _rss_kib()
        self.peak = self.base
        self.peak_anon = _rss_kib(key="RssAnon")
        self.kids: dict[int, int] = {}
        self.kids_anon: dict[int, int] = {}
        self._k = 0
        self._pids: list[int] = []

    @property
    def child_peak(self) -> int:
        return max(self.kids.values(), default=0)

    def _children(self) -> list[int]:
        try:
            import psutil
        except ImportError:
            return []
        try:
            return [c.pid for c in psutil.Process().children(recursive=True)]
        except Exception:
            return []

    def sample(self) -> None:
        self.peak = max(self.peak, _rss_kib())
        self.peak_anon = max(self.peak_anon, _rss_kib(key="RssAnon"))
        if self._k % 20 == 0:
            self._pids = self._children()
        for pid in self._pids:
            self.kids[pid] = max(self.kids.get(pid, 0), _rss_kib(pid, "VmHWM"), _rss_kib(pid))
            self.kids_anon[pid] = max(self.kids_anon.get(pid, 0), _rss_kib(pid, "RssAnon"))
        self._k += 1

    def finish(self) -> None:
        self.peak = max(self.peak, _rss_kib())

    def mib(self) -> dict:
        return {"caller_base_mib": self.base / 1024, "caller_peak_mib": self.peak / 1024,
                "caller_increase_mib": (self.peak - self.base) / 1024, "caller_anon_peak_mib": self.peak_anon / 1024,
                "worker_peak_mib": self.child_peak / 1024, "workers_sum_mib": sum(self.kids.values()) / 1024,
                "workers_anon_sum_mib": sum(self.kids_anon.values()) / 1024, "descendants": len(self.kids)}


def degraded_map(family: str, size: int, seed: int, noise: float, psf):
    """The generated map and its cube convolved with ``psf`` (None: not convolved) plus noise."""
    from pyinv import synthetic

    gen = {"spot": synthetic.generate_map, "qp": synthetic.generate_quiet_plage}[family]
    m = gen(size, seed=seed, noise=0.0)
    deg = m.cube if psf is None else np.moveaxis(psf.apply(np.moveaxis(m.cube, (2, 3), (0, 1))), (0, 1), (2, 3))
    rng = np.random.default_rng([seed, 20])
    return m, deg + rng.normal(0.0, noise, deg.shape) if noise > 0 else deg


def pixel_inversion(tag: str, family: str, obs, m, cfg, args):
    """pyinv.invert of ``obs`` (2 workers), cached under --workdir: (result, wall seconds, memory, cached)."""
    import pyinv

    init = "" if args.init == "single" else f"_{args.init}"
    cache = Path(args.workdir) / f"{tag}_{family}_{args.size}_s{args.seed}_n{args.noise:g}_w{args.workers}{init}.fits"
    if cache.exists() and cache.with_suffix(".json").exists():
        print(f"[{family}] {tag}: pixel-by-pixel inversion from the cache {cache}", flush=True)
        kept = json.loads(cache.with_suffix(".json").read_text())
        return pyinv.InversionResult.from_fits(cache), kept["wall_s"], kept["memory"], True
    print(f"[{family}] {tag}: pixel-by-pixel inversion of {args.size}x{args.size}, {args.workers} workers", flush=True)
    with MemorySampler() as mem:
        t = time.perf_counter()
        res = pyinv.invert(obs, m.lines, m.grid, cfg, init=args.init, psf=m.psf, workers=args.workers,
                           progress=args.progress)
        wall = time.perf_counter() - t
    cache.parent.mkdir(parents=True, exist_ok=True)
    res.to_fits(cache, overwrite=True)
    cache.with_suffix(".json").write_text(json.dumps({"wall_s": wall, "memory": mem.mib()}))
    return res, wall, mem.mib(), False


def metrics(res, m) -> dict:
    out = {}
    for name in ("T", "B", "vlos", "gamma"):
        a, b = res.map(name).ravel(), m.truth_map(name).ravel()
        ok = np.isfinite(a) & np.isfinite(b)
        out[f"corr_{name}"] = float(np.corrcoef(a[ok], b[ok])[0, 1])
    strong = m.truth_map("B") > 500.0
    out["n_strong"] = int(strong.sum())
    for name in ("B", "T"):
        d = (res.map(name) - m.truth_map(name))[strong]
        out[f"rms_{name}_strong"] = float(np.sqrt(np.nanmean(d ** 2))) if strong.any() else float("nan")
    out["chi2_reduced_median"] = float(np.nanmedian(res.chi2_reduced))
    out["converged"] = int(np.sum(res.status == 0))
    return out


def run_family(family: str, args, psf, cfg) -> dict:
    import pyinv
    from pyinv.coupled import invert_coupled

    m, obs = degraded_map(family, args.size, args.seed, args.noise, psf)
    npix = args.size * args.size
    start, wall_p, mem_p_mib, cached = pixel_inversion("start", family, obs, m, cfg, args)
    print(f"[{family}] coupled inversion, tile {args.tile}, {args.workers} workers", flush=True)
    with MemorySampler() as mem_c:
        t = time.perf_counter()
        res = invert_coupled(obs, start, psf, lines=m.lines, grid=m.grid, config=cfg, psf=m.psf, workers=args.workers,
                             tile=args.tile, progress=args.progress, **({"max_iterations": args.max_iterations}
                                                                       if args.max_iterations is not None else {}))
        wall_c = time.perf_counter() - t
    if not args.no_figures:  # the quick look a user has (no truth): pixel vs coupled maps, χ², χ² per tile
        from pyinv.plots import plot_coupled

        fig_path = Path(args.out).with_name(f"{Path(args.out).name}_{family}.png")
        fig_path.parent.mkdir(parents=True, exist_ok=True)
        plot_coupled(start, res, fig_path)
        print(f"[{family}] quick-look figure {fig_path}", flush=True)
    cp = res.provenance["coupled"]
    tiles = cp["tiles"]
    cpu_c = float(sum(d["wall"] for d in tiles))
    cpu_p = float(np.nansum(start.seconds))
    solved = sum((d["outer"][1] - d["outer"][0]) * (d["outer"][3] - d["outer"][2]) for d in tiles)
    rec = {"family": family, "size": args.size, "npix": npix,
           "pixel": {**metrics(start, m), "wall_s": wall_p, "wall_per_pixel_s": wall_p / npix,
                     "worker_s_per_pixel": cpu_p / npix, "memory": mem_p_mib, "cached": cached},
           "coupled": {**metrics(res, m), "wall_s": wall_c, "wall_per_pixel_s": wall_c / npix,
                       "worker_s_per_pixel": cpu_c / npix, "memory": mem_c.mib(), "tile": cp["tile"],
                       "border": cp["border"], "ntiles": cp["ntiles"], "solved_pixels": solved,
                       "iterations": [d["iterations"] for d in tiles], "stop": [d["stop"] for d in tiles],
                       "tile_seconds": [d["seconds"] for d in tiles]}}
    if args.compare_tile:
        print(f"[{family}] coupled inversion again, tile {args.compare_tile}", flush=True)
        t = time.perf_counter()
        res2 = invert_coupled(obs, start, psf, lines=m.lines, grid=m.grid, config=cfg, psf=m.psf, workers=args.workers,
                              tile=args.compare_tile, progress=args.progress,
                              **({"max_iterations": args.max_iterations} if args.max_iterations is not None else {}))
        wall2 = time.perf_counter() - t
        cp2 = res2.provenance["coupled"]
        diff = {name: float(np.sqrt(np.nanmean((res2.map(name) - res.map(name)) ** 2))) for name in ("T", "B", "vlos", "gamma")}
        rec["compare_tile"] = {"tile": args.compare_tile, "ntiles": cp2["ntiles"], "border": cp2["border"],
                               "wall_s": wall2, "worker_s": float(sum(d["wall"] for d in cp2["tiles"])),
                               "rms_difference_to_main": diff, **metrics(res2, m)}
    if args.reference:
        _, clean = degraded_map(family, args.size, args.seed, args.noise, None)
        ref, wall_r, _, _ = pixel_inversion("reference", family, clean, m, cfg, args)
        rec["reference_no_psf"] = {**metrics(ref, m), "wall_s": wall_r}
    rec["ratio_wall"] = wall_c / wall_p
    rec["ratio_worker_s"] = cpu_c / cpu_p if cpu_p > 0 else float("nan")
    rec["ratio_total_wall"] = (wall_p + wall_c) / wall_p
    return rec


def memory_estimate(rec: dict, n: int, tile: int, border: int, nw: int, ndep: int) -> dict:
    """Estimated memory of a coupled inversion of an n × n map from a measured run: the caller's measured
    peak plus the arrays it holds per pixel (cube, start and result: atmospheres, errors, fits, maps) for the
    extra pixels; a worker: an idle worker plus the measured bytes per solved pixel of a tile times the
    (tile + 2 border)² pixels a tile of the n × n map solves."""
    c = rec["coupled"]
    per_px = 8 * (4 * nw) + 2 * 8 * (2 * ndep * 11 + 4 * nw + 12)
    caller = c["memory"]["caller_peak_mib"] * 2 ** 20 + per_px * (n * n - rec["npix"])
    solved_meas = max(c["solved_pixels"] / max(c["ntiles"], 1), 1)
    worker_base = 100 * 2 ** 20           # an idle worker with pyinv and numpy imported (measured on an 8x8 map)
    per_solved = max(c["memory"]["worker_peak_mib"] * 2 ** 20 - worker_base, 0) / solved_meas
    solved_tile = min(tile + 2 * border, n) ** 2
    return {"n": n, "caller_mib": caller / 2 ** 20, "caller_arrays_mib": per_px * n * n / 2 ** 20,
            "worker_mib": (worker_base + per_solved * solved_tile) / 2 ** 20, "per_solved_pixel_kib": per_solved / 1024}


def memory_run(n: int, args, psf, cfg) -> dict:
    """A measured n × n run, as a user with the map on disk runs it: this process writes the degraded cube and
    the start (the generator's truth) to ``.npy`` files and a fresh Python process (:func:`memory_child`)
    maps them (``np.load(mmap_mode="r")``) and runs one coupled iteration with a checkpoint (result arrays
    written tile by tile to files); the child reports its own and its descendants' peak memory."""
    import shutil
    import tempfile

    m, obs = degraded_map("spot", n, args.seed, args.noise, psf)
    work = Path(tempfile.mkdtemp(prefix="bench-coupled-mem-"))
    try:
        np.save(work / "obs.npy", obs)
        np.save(work / "atmospheres.npy", m.truth)
        np.save(work / "macro.npy", m.macro)
        inputs_mib = (obs.nbytes + m.truth.nbytes) / 2 ** 20
        del m, obs
        cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-child", str(work), "--size", str(n),
               "--seed", str(args.seed), "--noise", str(args.noise), "--workers", str(args.workers),
               "--tile", str(args.memory_tile or args.tile), "--psf", args.psf]
        t = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        if done.returncode != 0:
            raise RuntimeError(f"memory child failed: {done.stderr[-3000:]}")
        rec = json.loads(done.stdout.strip().splitlines()[-1])
        rec["inputs_on_disk_mib"] = inputs_mib
        rec["child_wall_s"] = time.perf_counter() - t
        return rec
    finally:
        shutil.rmtree(work, ignore_errors=True)


def memory_child(folder: str, args) -> int:
    """The child of :func:`memory_run`: the coupled inversion of the map in ``folder`` (memory-mapped inputs,
    a checkpoint in the folder), one JSON line of measurements on stdout."""
    import pyinv
    from pyinv import synthetic
    from pyinv.coupled import SpatialPSF, invert_coupled

    d = Path(folder)
    base = _rss_kib() / 1024
    obs = np.load(d / "obs.npy", mmap_mode="r")
    atm = np.load(d / "atmospheres.npy", mmap_mode="r")
    macro = np.load(d / "macro.npy")
    ny, nx, nd, _ = atm.shape
    nw = obs.shape[3]
    gen = synthetic.generate_map(4, seed=args.seed, noise=0.0)   # the family's grid and spectral PSF (4x4: small)
    psf = SpatialPSF(args.psf)
    cfg = pyinv.InversionConfig(cycles=3, nodes=NODES, weights=(1.0, 4.0, 4.0, 2.0), snr=1000.0, mu=1.0)
    nan = np.broadcast_to(np.float64(np.nan), (ny, nx, nd, 11))   # no errors: no memory
    start = pyinv.InversionResult(
        atmospheres=atm, macro=macro, filling=np.ones((ny, nx)), stray=np.zeros((ny, nx)), fits=obs,
        chi2=np.ones((ny, nx)), chi2_cycles=np.ones((ny, nx, 1)), status=np.zeros((ny, nx), int),
        iterations=np.zeros((ny, nx), int), errors=nan, errors_header=np.full((ny, nx, 3), np.nan),
        start=np.zeros((ny, nx), int), seconds=np.zeros((ny, nx)), line_index=np.zeros(nw, int),
        offset_mA=np.asarray(gen.grid.offset_mA), wavelength=np.zeros(nw))
    with MemorySampler() as mem:
        t = time.perf_counter()
        res = invert_coupled(obs, start, psf, lines=gen.lines, grid=gen.grid, config=cfg, psf=gen.psf,
                             workers=args.workers, tile=args.tile, progress=False, max_iterations=1,
                             checkpoint=d / "ck")
        wall = time.perf_counter() - t
    mm = mem.mib()
    ok = bool(np.isfinite(res.chi2_reduced).all())
    print(json.dumps({"n": ny, "tile": args.tile, "ntiles": res.provenance["coupled"]["ntiles"],
                      "border": res.provenance["coupled"]["border"], "wall_s": wall, "python_base_mib": base,
                      "all_pixels_fitted": ok, "result_memory_mapped": isinstance(res.atmospheres, np.memmap),
                      "caller_plus_workers_mib": mm["caller_peak_mib"] + mm["workers_sum_mib"],
                      "caller_plus_workers_anon_mib": mm["caller_anon_peak_mib"] + mm["workers_anon_sum_mib"], **mm}))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=48)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tile", type=int, default=64)
    ap.add_argument("--noise", type=float, default=1e-3)
    ap.add_argument("--families", nargs="*", default=["spot", "qp"], choices=["spot", "qp"],
                    help="map families (none: only --memory-run)")
    ap.add_argument("--init", default="cluster", choices=["single", "cluster"],
                    help="start of the pixel-by-pixel inversion (pyinv.invert's init=): 'cluster' (default) starts "
                    "each k-means cluster of observables from the nearest library prototype (plage: FAL-H), "
                    "'single' every pixel from the quiet-Sun default guess")
    ap.add_argument("--max-iterations", type=int, default=None, help="coupled LM iterations (default: the solver's)")
    ap.add_argument("--psf", default=str(PSF_FILE))
    ap.add_argument("--memory-run", type=int, default=0, help="also measure an N x N run (start = truth, 1 iteration)")
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--compare-tile", type=int, default=0, help="also run the coupled inversion with this tile size "
                    "and report the differences to the main run (tiling and borders)")
    ap.add_argument("--reference", action="store_true", help="also invert the cube without the PSF (same noise) pixel "
                    "by pixel: what the node model reaches on undegraded data")
    ap.add_argument("--workdir", default=str(Path.home() / ".cache" / "pyinv" / "bench_coupled"),
                    help="cache of the pixel-by-pixel results (FITS) and their timings")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "coupled"))
    ap.add_argument("--no-save", action="store_true")
    ap.add_argument("--memory-tile", type=int, default=0, help="tile interior of --memory-run (default --tile)")
    ap.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)  # the process memory_run measures
    ap.add_argument("--no-figures", action="store_true", help="skip the quick-look PNG per family "
                    "(pyinv.plots.plot_coupled, written to <out>_<family>.png)")
    args = ap.parse_args(argv)
    if args.memory_child:
        return memory_child(args.memory_child, args)

    import pyinv
    from pyinv.coupled import SpatialPSF

    if not Path(args.psf).exists():
        print(f"the spatial PSF {args.psf} is not there (../shared is needed)", file=sys.stderr)
        return 2
    psf = SpatialPSF(args.psf)
    cfg = pyinv.InversionConfig(cycles=3, nodes=NODES, weights=(1.0, 4.0, 4.0, 2.0), snr=1000.0, mu=1.0)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                capture_output=True, text=True).stdout.strip())
    report = {"script": "benchmarks/bench_coupled.py", "commit": commit + ("+dirty" if dirty else ""),
              "argv": sys.argv[1:], "psf": Path(args.psf).name, "load_before": os.getloadavg(),
              "nodes_last_cycle": {k: (v[-1] if isinstance(v, tuple) else v) for k, v in NODES.items()},
              "families": []}
    for fam in args.families:
        rec = run_family(fam, args, psf, cfg)
        rec["memory_256_estimate"] = memory_estimate(rec, 256, args.tile, rec["coupled"]["border"], 112, 53)
        report["families"].append(rec)
        print(json.dumps(rec, indent=1, default=float), flush=True)
    if args.memory_run:
        print(f"[memory] {args.memory_run}x{args.memory_run}: start = truth, one coupled iteration", flush=True)
        report["memory_run"] = memory_run(args.memory_run, args, psf, cfg)
        print(json.dumps(report["memory_run"], indent=1), flush=True)
    report["load_after"] = os.getloadavg()
    text = summary(report)
    print(text)
    if not args.no_save:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(report, indent=1, default=float) + "\n")
        out.with_suffix(".txt").write_text(text + "\n")
    return 0


def summary(report: dict) -> str:
    lines = [f"benchmarks/bench_coupled.py, commit {report['commit']}, argv {' '.join(report['argv']) or '(defaults)'}",
             f"PSF {report['psf']}; load average before {report['load_before'][0]:.2f}, after {report['load_after'][0]:.2f}"]
    for rec in report["families"]:
        p, c = rec["pixel"], rec["coupled"]
        lines.append("")
        lines.append(f"{rec['family']} {rec['size']}x{rec['size']} (B > 500 G: {p['n_strong']} pixels); coupled: tile "
                     f"{c['tile']}, border {c['border']}, {c['ntiles']} tile(s), iterations {c['iterations']}, stop {c['stop']}")
        lines.append(f"{'':28s}{'pixel':>12s}{'coupled':>12s}   target")
        for k, label in (("corr_T", "corr T"), ("corr_B", "corr B"), ("corr_vlos", "corr v_LOS"),
                         ("corr_gamma", "corr inclination")):
            ok = c[k] > p[k]
            lines.append(f"{label:28s}{p[k]:12.3f}{c[k]:12.3f}   coupled > pixel: {'met' if ok else 'MISSED'}")
        for k, label in (("rms_B_strong", "B rms [G], B > 500 G"), ("rms_T_strong", "T rms [K], B > 500 G")):
            gain = 1.0 - c[k] / p[k] if p[k] > 0 else float("nan")
            lines.append(f"{label:28s}{p[k]:12.1f}{c[k]:12.1f}   ≥ 30 % better: {100 * gain:.0f} % "
                         f"{'met' if gain >= 0.3 else 'MISSED'}")
        lines.append(f"{'median reduced chi2':28s}{p['chi2_reduced_median']:12.3f}{c['chi2_reduced_median']:12.3f}   "
                     f"≤ 1.2: {'met' if c['chi2_reduced_median'] <= 1.2 else 'MISSED'}")
        lines.append(f"{'wall s / pixel':28s}{p['wall_per_pixel_s']:12.4f}{c['wall_per_pixel_s']:12.4f}   ratio "
                     f"{rec['ratio_wall']:.2f} (pixel + coupled: {rec['ratio_total_wall']:.2f} x pixel; ≤ 5: "
                     f"{'met' if rec['ratio_total_wall'] <= 5 else 'MISSED'})")
        lines.append(f"{'worker s / pixel':28s}{p['worker_s_per_pixel']:12.4f}{c['worker_s_per_pixel']:12.4f}   ratio "
                     f"{rec['ratio_worker_s']:.2f}")
        lines.append(f"{'caller peak MiB (base)':28s}{p['memory']['caller_peak_mib']:12.0f}{c['memory']['caller_peak_mib']:12.0f}"
                     f"   ({c['memory']['caller_base_mib']:.0f} before the coupled call); largest worker "
                     f"{c['memory']['worker_peak_mib']:.0f} MiB")
        if "reference_no_psf" in rec:
            r = rec["reference_no_psf"]
            lines.append(f"{'no PSF, pixel by pixel':28s} {_corr_text(r)}; B rms {r['rms_B_strong']:.1f} G, T rms "
                         f"{r['rms_T_strong']:.1f} K (B > 500 G); median reduced chi2 {r['chi2_reduced_median']:.3f}")
        if "compare_tile" in rec:
            k = rec["compare_tile"]
            d = k["rms_difference_to_main"]
            lines.append(f"tile {k['tile']} ({k['ntiles']} tiles, border {k['border']}): rms difference to the main run at "
                         f"log tau = 0: T {d['T']:.1f} K, B {d['B']:.1f} G, v {d['vlos'] * 1e-5:.3f} km/s, "
                         f"gamma {d['gamma']:.2f} deg; wall {k['wall_s']:.0f} s, workers {k['worker_s']:.0f} s; "
                         f"{_corr_text(k)}")
        e = rec["memory_256_estimate"]
        lines.append(f"256x256 estimate: caller {e['caller_mib']:.0f} MiB (of which cube, start and result arrays "
                     f"{e['caller_arrays_mib']:.0f}), one worker {e['worker_mib']:.0f} MiB "
                     f"({e['per_solved_pixel_kib']:.1f} KiB per solved pixel)")
    if "memory_run" in report:
        r = report["memory_run"]
        lines.append("")
        lines.append(f"measured {r['n']}x{r['n']} (start = truth on disk, memory-mapped; 1 iteration; tile {r['tile']}, "
                     f"border {r['border']}, {r['ntiles']} tiles, checkpoint: result written per tile), fresh process "
                     f"(python + imports {r['python_base_mib']:.0f} MiB): caller peak {r['caller_peak_mib']:.0f} MiB "
                     f"(anonymous {r['caller_anon_peak_mib']:.0f}), workers: largest {r['worker_peak_mib']:.0f} MiB, "
                     f"sum of the {r['descendants']} descendants' peaks {r['workers_sum_mib']:.0f} MiB (anonymous "
                     f"{r['workers_anon_sum_mib']:.0f}); caller + workers {r['caller_plus_workers_mib']:.0f} MiB "
                     f"(≤ 2048: {'met' if r['caller_plus_workers_mib'] <= 2048 else 'MISSED'}; anonymous "
                     f"{r['caller_plus_workers_anon_mib']:.0f}); {r['wall_s']:.0f} s")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
