"""Non-LTE backends (issue 11): cross-code differences, speed, driver overhead, RH over a map.

Needs an RH 2 build (``PYINV_RH_DIR``, with its ``Atmos/FAL*.atmos``) and the ``lightweaver`` package.
All figures are measured in the same run:

* **Lightweaver vs RH**, Ca II 8542 (±1.5 Å at 10 mÅ, μ = 1): FAL A, FAL C, FAL F from RH's ``Atmos``
  (both codes given the same MULTI atmosphere with its hydrogen populations), FAL C with 500 G at 45°,
  and Lightweaver's own FAL C. Each code's profiles are normalised to its own intensity at the blue end
  of the window (−1.5 Å); reported: core depth of each code, max and rms |ΔI|, max |ΔV|, and V amplitude.
* **s/pixel**: RH (NLTE only; NLTE + its LTE run) and Lightweaver (the same), FAL C 500 G.
* **Driver overhead**: ``RH.run_column`` (inputs written, outputs parsed, sandbox removed) against a bare
  ``rhf1d`` + ``solveray`` in a prepared folder with the same inputs, same number of runs, interleaved;
  wall time and CPU time (this process plus its children), the latter robust on a shared machine.
* **RH over a 4×4 map with 2 workers**: identical to one-pixel runs; one pixel with T = 50 K in the
  lower atmosphere (outside the atom's tables) gets its own status; no sandbox left; a pool worker
  killed with SIGKILL while RH runs loses no pixel.
* **LTE synthesize_map** on a 64×64 generated cube: identical to ``synthesize`` per column, wall time
  with 1 and 2 workers (2-worker efficiency).

    PYINV_RH_DIR=<rh build> PYTHONPATH=<build>/site:src python benchmarks/bench_nlte.py --out results.json
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np


def _norm(stokes: np.ndarray) -> np.ndarray:
    return stokes / stokes[0, 0]


def compare(rh, lw, col, wl, offsets) -> dict:
    a = rh.run_column(col, wl)
    b = lw.run_column(col, wl)
    sa, sb = _norm(a.stokes), _norm(b.stokes)
    d = sb - sa
    return {"status_rh": a.status, "status_lw": b.status, "core_rh": float(sa[0].min()), "core_lw": float(sb[0].min()),
            "max_dI": float(np.abs(d[0]).max()), "rms_dI": float(np.sqrt(np.mean(d[0] ** 2))),
            "max_dV": float(np.abs(d[3]).max()), "maxV_rh": float(np.abs(sa[3]).max()),
            "maxV_lw": float(np.abs(sb[3]).max()), "iterations_rh": a.iterations, "iterations_lw": b.iterations,
            "edge_intensity_lw_over_rh": float(b.stokes[0, 0] / a.stokes[0, 0]),
            "max_dI_offset_mA": float(offsets[np.argmax(np.abs(d[0]))])}


def _cpu() -> float:
    """CPU seconds of this process and its finished children."""
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def timing(backend, col, wl, n: int) -> dict:
    """Wall and CPU seconds per pixel (CPU is robust on a shared machine)."""
    t, c = time.perf_counter(), _cpu()
    for k in range(n):
        r = backend.run_column(col, wl, pixel_id=f"t{k}")
        assert r.status == 0, r.message
    return {"wall": (time.perf_counter() - t) / n, "cpu": (_cpu() - c) / n}


def overhead(rh_cls, lm, rh_dir, col, wl, n: int, work: Path) -> dict:
    """Driver vs bare rhf1d + solveray on identical inputs (NLTE run only)."""
    be = rh_cls(lm, rh_dir=rh_dir, workdir=work, lte=False, keep=True)
    be.run_column(col, wl, pixel_id="bare")
    bare_dir = work / "px" / "bare"
    exe = Path(rh_dir) / "rhf1d"
    drv = rh_cls(lm, rh_dir=rh_dir, workdir=work, lte=False)
    t_bare, t_drv, c_bare, c_drv = [], [], [], []
    cpu = _cpu

    for k in range(n):
        t, c = time.perf_counter(), cpu()
        for prog, log in (("rhf1d", "rh.log"), ("solveray", "ray.log")):
            subprocess.run([str(exe / prog), "-logfile", log], cwd=bare_dir, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t_bare.append(time.perf_counter() - t)
        c_bare.append(cpu() - c)
        t, c = time.perf_counter(), cpu()
        r = drv.run_column(col, wl, pixel_id=f"d{k}")
        t_drv.append(time.perf_counter() - t)
        c_drv.append(cpu() - c)
        assert r.status == 0
    shutil.rmtree(bare_dir)
    mb, md = float(np.median(t_bare)), float(np.median(t_drv))
    cb, cd = float(np.median(c_bare)), float(np.median(c_drv))
    return {"bare_s": mb, "driver_s": md, "overhead": md / mb - 1.0, "runs": n,
            "bare_cpu_s": cb, "driver_cpu_s": cd, "overhead_cpu": cd / cb - 1.0,
            "bare_min_s": float(np.min(t_bare)), "driver_min_s": float(np.min(t_drv))}


def rh_map(pyinv, nlte, lines, grid, rh_dir, work: Path) -> dict:
    base = pyinv.models.hsra().to_array()
    cube = np.broadcast_to(base, (4, 4) + base.shape).copy()
    rng = np.random.default_rng(11)
    cube[..., 4] = rng.uniform(0, 1500, (4, 4))[..., None]
    cube[..., 6] = rng.uniform(0, 180, (4, 4))[..., None]
    cube[..., 7] = rng.uniform(0, 180, (4, 4))[..., None]
    cube[..., 5] = rng.normal(0, 1e5, (4, 4))[..., None]
    cube[2, 1, -5:, 1] = 50.0
    lm = nlte.level_map(lines, [8])
    wl = nlte.grid_vacuum_nm(lines, grid)
    be = nlte.RH(lm, rh_dir=rh_dir, workdir=work / "map", lte=True)
    killed = {}

    def killer():  # SIGKILL the pool worker that runs the 5th rhf1d of this map
        seen = set()
        end = time.time() + 120
        while time.time() < end and "pid" not in killed:
            for p in Path("/proc").iterdir():
                if not p.name.isdigit():
                    continue
                try:
                    cmd = (p / "cmdline").read_bytes().split(b"\0")
                    cwd = os.readlink(p / "cwd")
                except OSError:
                    continue
                if cmd and cmd[0].endswith(b"rhf1d") and cwd.startswith(str(work / "map")):
                    seen.add(p.name)
                    if len(seen) >= 5:
                        ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
                        os.kill(ppid, signal.SIGKILL)
                        killed["pid"] = ppid
                        killed["pixel_dir"] = cwd
                        break
            time.sleep(0.02)

    th = threading.Thread(target=killer, daemon=True)
    th.start()
    t = time.perf_counter()
    m = pyinv.synthesize_map(cube, lines, grid, backend=be, workers=2)
    wall = time.perf_counter() - t
    th.join(1)
    left = sorted(os.listdir(work / "map" / "px")) if (work / "map" / "px").exists() else []
    # one-pixel runs in this process
    same = []
    for j in range(4):
        for i in range(4):
            if (j, i) == (2, 1):
                continue
            one = be.synthesize(pyinv.Atmosphere.from_array(cube[j, i]), wl, pixel_id="single")
            same.append(bool(np.array_equal(one.stokes, m.stokes[j, i]) and np.array_equal(one.stokes_lte, m.stokes_lte[j, i])
                             and np.array_equal(one.departures.b_lower[0], m.b_lower[j, i, 0])))
    return {"status": m.status.tolist(), "identical_to_single_runs": int(sum(same)), "compared": len(same),
            "sandboxes_left": left, "wall_s": wall, "s_per_pixel_2workers": wall / 16,
            "killed_worker": killed.get("pid"), "killed_in": Path(killed.get("pixel_dir", "")).name,
            "pool_restarts": m.provenance.get("pool_restarts"), "pending_after": int((m.status == -1).sum()),
            "iterations": m.iterations.tolist()}


def lte_map(pyinv, n: int) -> dict:
    lines = pyinv.default_lines()
    grid = pyinv.models.hinode_grid(lines)
    rng = np.random.default_rng(5)
    base = pyinv.models.hsra().to_array()
    cube = np.broadcast_to(base, (n, n) + base.shape).copy()
    cube[..., 4] = rng.uniform(0, 2000, (n, n))[..., None]
    cube[..., 6] = rng.uniform(0, 180, (n, n))[..., None]
    cube[..., 5] = rng.normal(0, 2e5, (n, n))[..., None]
    cube[..., 1] *= (1 + 0.03 * rng.normal(size=(n, n)))[..., None]
    out = {}
    for w in (1, 2):
        t = time.perf_counter()
        m = pyinv.synthesize_map(cube, lines, grid, backend="lte", workers=w, chunk=32)
        out[f"wall_{w}"] = time.perf_counter() - t
    ref = np.stack([pyinv.synthesize(pyinv.Atmosphere.from_array(cube[j]), lines, grid) for j in range(n)])
    out["identical"] = bool(np.array_equal(ref, m.stokes))
    out["efficiency_2"] = out["wall_1"] / (2 * out["wall_2"])
    out["pixels"] = n * n
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5, help="runs per timing")
    ap.add_argument("--lte-size", type=int, default=64, help="side of the LTE map")
    ap.add_argument("--skip", nargs="*", default=[], help="parts to skip: compare timing overhead map lte")
    ap.add_argument("--out", help="write the figures as JSON")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    import pyinv
    from pyinv import nlte
    from pyinv.nlte.rh import RH, find_rh_dir

    rh_dir = str(find_rh_dir())
    lines, grid = nlte.ca_ii_8542()
    wl = nlte.grid_vacuum_nm(lines, grid)
    lm = nlte.level_map(lines, [8])
    res: dict = {"grid_points": int(grid.nwav)}
    work = Path(tempfile.mkdtemp(prefix="pyinv-bn-"))
    try:
        rh = RH(lm, rh_dir=rh_dir, workdir=work, lte=False)
        lw = nlte.Lightweaver(lm, lte=False)
        falc = nlte.read_multi_atmosphere(Path(rh_dir) / "Atmos" / "FALC_82.atmos")
        if "compare" not in args.skip:
            cmp = {}
            for name in ("FALA_80", "FALC_82", "FALF_80"):
                p = Path(rh_dir) / "Atmos" / f"{name}.atmos"
                if p.exists():
                    cmp[name] = compare(rh, lw, nlte.read_multi_atmosphere(p), wl, grid.offset_mA)
            cmp["FALC_82_500G_45deg"] = compare(rh, lw, falc.with_field(500.0, 45.0), wl, grid.offset_mA)
            from lightweaver.fal import Falc82
            a = Falc82()
            lwfalc = nlte.NlteColumn(scale="mass", depth=np.log10(a.cmass / 10.0), T=a.temperature, ne=a.ne / 1e6,
                                     v=a.vlos / 1e3, vturb=a.vturb / 1e3, name="LWFALC")
            r_lw = nlte.Lightweaver(lm, lte=False, hydrogen="lte").run_column(lwfalc, wl)
            r_rh = rh.run_column(falc, wl)
            d = _norm(r_lw.stokes) - _norm(r_rh.stokes)
            cmp["LW_Falc82_passiveH_vs_RH_FALC_82"] = {"core_rh": float(_norm(r_rh.stokes)[0].min()),
                                                       "core_lw": float(_norm(r_lw.stokes)[0].min()),
                                                       "max_dI": float(np.abs(d[0]).max()),
                                                       "rms_dI": float(np.sqrt(np.mean(d[0] ** 2)))}
            res["lw_vs_rh"] = cmp
            print(json.dumps(cmp, indent=1))
        if "timing" not in args.skip:
            mag = falc.with_field(500.0, 45.0)
            rh_l = RH(lm, rh_dir=rh_dir, workdir=work, lte=True)
            lw_l = nlte.Lightweaver(lm, lte=True)
            lw.run_column(mag, wl)  # warm-up (numba, atom set)
            lw_l.run_column(mag, wl)
            res["s_per_pixel"] = {"rh_nlte": timing(rh, mag, wl, args.repeat),
                                  "rh_nlte_plus_lte": timing(rh_l, mag, wl, args.repeat),
                                  "lw_nlte": timing(lw, mag, wl, args.repeat),
                                  "lw_nlte_plus_lte": timing(lw_l, mag, wl, args.repeat)}
            print(res["s_per_pixel"])
        if "overhead" not in args.skip:
            res["driver_overhead"] = overhead(RH, lm, rh_dir, falc.with_field(500.0, 45.0), wl, args.repeat * 2, work)
            print(res["driver_overhead"])
        if "map" not in args.skip:
            res["rh_map_4x4"] = rh_map(pyinv, nlte, lines, nlte.ca_ii_8542(lines)[1], rh_dir, work)
            print(res["rh_map_4x4"])
        if "lte" not in args.skip:
            res["lte_map"] = lte_map(pyinv, args.lte_size)
            print(res["lte_map"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
