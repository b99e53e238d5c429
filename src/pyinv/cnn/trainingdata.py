"""Training sets at scale from generated atmospheres, with targets from the generator's truth (synthesis
only, no inversion), written as resumable shards.

:func:`generate_training_set` fills a folder with ``shard_NNNNN.npz`` files (inputs, targets, μ and a
description of each shard) and a ``manifest.json`` holding the recipe's data fingerprint; calling it again
with the same folder reuses every finished shard and makes only the missing ones (an interrupted run,
or a set grown to more pixels). Shard ``k`` is seeded by ``(recipe.seed, k)``: the set does not depend on
how often it was resumed or on the number of worker processes.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from .dataset import TrainingSet

__all__ = ["random_atmospheres", "make_shard", "generate_training_set", "load_training_set", "FAMILIES"]

#: Temperature families of :func:`random_atmospheres` and their probabilities.
FAMILIES = {"quiet": 0.35, "plage": 0.2, "penumbra": 0.25, "umbra": 0.2}
_T_MODELS = {"quiet": ("hsra", "falh"), "plage": ("falh", "hsra"), "penumbra": ("penumjti", "hsra"),
             "umbra": ("cool", "mmaltby")}
#: Field strength range [G] per family (umbra reaches 4 kG).
_B_RANGE = {"quiet": (0.0, 600.0), "plage": (300.0, 2000.0), "penumbra": (500.0, 2800.0), "umbra": (1500.0, 4000.0)}


def random_atmospheres(n: int, rng: np.random.Generator, *, mu: float = 1.0, log_tau=None):
    """``n`` independent random model atmospheres spanning umbra to quiet Sun.

    Per pixel: a family (:data:`FAMILIES`); T from the family's two library models mixed with a random
    weight, then mixed by up to 30 % with a random other family's T, plus a perturbation
    ΔT₀ + ΔT₁ log τ (σ 100 K and 50 K); B in the family's range (:data:`_B_RANGE`, uniform; quiet Sun up
    to 600 G), changing with depth as (1 + g log τ) with g ∈ [−0.25, 0.3] (at most 4.5 kG); the inclination uniform in
    cos γ (every orientation, both polarities) for half of the pixels and family-typical for the others
    (plage/umbra within 30° of the vertical, penumbra 40–80° from it, either polarity), drifting by up to
    ±6° per unit log τ; azimuth uniform in [0°, 180°); vlos = v₀ + v₁ log τ with v₀ ~ N(0, 1.5 km/s)
    (penumbra 3 km/s) and v₁ ∈ [−1, 1] km/s, clipped to ±8 km/s; vmic 0–2 km/s; macro 0.1–2.5 km/s.
    Pe from hydrostatic equilibrium at ``mu`` (top Pe mixed from the library models in log).

    Returns
    -------
    Atmosphere (stack of n), family names (n,)
    """
    from .. import models
    from ..atmosphere import Atmosphere
    from ..physics.thermo import hydrostatic

    lt = np.asarray(models.LOG_TAU_53 if log_tau is None else log_tau, dtype=np.float64)
    lib = {k: models.load(k) if k != "hsra" else models.hsra() for k in models.names()}
    T_lib = {k: np.interp(lt, np.asarray(v.log_tau)[::-1], np.asarray(v.T)[::-1]) for k, v in lib.items()}
    lpe = {k: np.log(np.asarray(v.Pe)[-1]) for k, v in lib.items()}
    names = list(FAMILIES)
    fam = rng.choice(len(names), size=n, p=np.array(list(FAMILIES.values())))
    other = rng.integers(0, len(names), size=n)
    a = rng.uniform(0, 1, n)
    s = rng.uniform(0, 0.3, n)

    def fam_T(idx, w):
        m1 = np.array([T_lib[_T_MODELS[names[i]][0]] for i in idx])
        m2 = np.array([T_lib[_T_MODELS[names[i]][1]] for i in idx])
        p1 = np.array([lpe[_T_MODELS[names[i]][0]] for i in idx])
        p2 = np.array([lpe[_T_MODELS[names[i]][1]] for i in idx])
        wt = np.where(np.isin(idx, [0, 2]), 0.3 * w, w)  # quiet / penumbra: mostly their first model
        return (1 - wt)[:, None] * m1 + wt[:, None] * m2, (1 - wt) * p1 + wt * p2

    T1, lp1 = fam_T(fam, a)
    T2, lp2 = fam_T(other, rng.uniform(0, 1, n))
    T = (1 - s)[:, None] * T1 + s[:, None] * T2
    T += rng.normal(0, 100.0, n)[:, None] + rng.normal(0, 50.0, n)[:, None] * lt[None, :]
    T = np.clip(T, 3000.0, None)
    lpe_top = (1 - s) * lp1 + s * lp2

    lo = np.array([_B_RANGE[names[i]][0] for i in fam])
    hi = np.array([_B_RANGE[names[i]][1] for i in fam])
    B0 = rng.uniform(lo, hi)
    gB = rng.uniform(-0.25, 0.3, n)
    B = np.clip(B0[:, None] * np.clip(1.0 + gB[:, None] * lt[None, :], 0.2, None), 0.0, 4500.0)
    anyori = rng.uniform(0, 1, n) < 0.5
    g_any = np.degrees(np.arccos(rng.uniform(-1, 1, n)))
    g_typ = np.where(fam == 2, rng.uniform(40, 80, n), rng.uniform(0, 30, n))
    g_typ = np.where(fam == 0, g_any, g_typ)
    g_typ = np.where(rng.uniform(0, 1, n) < 0.5, g_typ, 180.0 - g_typ)
    g0 = np.where(anyori, g_any, g_typ)
    gamma = np.clip(g0[:, None] + rng.uniform(-6, 6, n)[:, None] * lt[None, :], 0.5, 179.5)
    phi = np.mod(rng.uniform(0, 180, n)[:, None] + rng.uniform(-5, 5, n)[:, None] * lt[None, :], 180.0)
    v0 = rng.normal(0, 1.5e5, n) * np.where(fam == 2, 2.0, 1.0)
    vlos = np.clip(v0[:, None] + rng.uniform(-1e5, 1e5, n)[:, None] * lt[None, :], -8e5, 8e5)
    vmic = np.repeat(rng.uniform(0.0, 2.0e5, n)[:, None], lt.size, axis=1)
    macro = rng.uniform(0.1, 2.5, n)

    arr = np.zeros((n, lt.size, 11))
    arr[..., 0] = lt
    arr[..., 1] = T
    arr[..., 2] = np.exp(lpe_top)[:, None]
    arr[..., 3] = vmic
    arr[..., 4] = B
    arr[..., 5] = vlos
    arr[..., 6] = gamma
    arr[..., 7] = phi
    stack = hydrostatic(Atmosphere.from_array(arr, macro=macro), mu=mu)
    return stack, np.array(names)[fam]


def _quiet_continuum(lines, grid, psf, mu: float) -> float:
    """Continuum of the HSRA model at ``mu`` as :func:`pyinv.cnn.quiet_sun_continuum` measures it (mean of
    the three brightest Stokes I samples): the quiet-Sun reference of the random-pixel shards."""
    from .. import models
    from ..physics.synthesis import synthesize
    from ..physics.thermo import hydrostatic
    st = np.asarray(synthesize(hydrostatic(models.hsra(vmic=1.0e5, macro=1.0), mu=mu), lines, grid, psf=psf, mu=mu))
    return float(np.sort(st[0])[-3:].mean())


def make_shard(recipe, k: int) -> dict:
    """Shard ``k`` of a recipe's training set (seeded by ``(recipe.seed, k)``).

    Returns
    -------
    dict with ``x`` (n, 4, nλ) float32 inputs, ``y`` (n, n_out) float32 scaled targets, ``mu`` (n,),
    and ``info`` (family, μ, noise, quiet-Sun continuum, seconds).
    """
    from ..physics.synthesis import synthesize
    from ..synthetic import generate_map
    from .dataset import build_training_set, sample_nodes
    from .model import CNNModel

    import warnings

    t0 = time.perf_counter()
    warnings.filterwarnings("ignore", message="damping parameter exceeds")  # strong IR lines: documented in lines
    rng = np.random.default_rng([int(recipe.seed), int(k)])
    lines = recipe.lines()
    grid = recipe.grid(lines)
    psf = recipe.psf()
    mu = float(rng.uniform(*recipe.mu_range))
    lo, hi = np.log(recipe.noise_range[0]), np.log(recipe.noise_range[1])
    noise = float(np.exp(rng.uniform(lo, hi)))
    if rng.uniform() < recipe.sunspot_fraction:
        m = generate_map(recipe.map_size, int(rng.integers(0, 2**31 - 1)), mu=mu, noise=noise, lines=lines, grid=grid,
                         psf=psf)
        ts = build_training_set(m.cube, m.truth, grid, lines, macro=m.macro, mu=mu)
        x, y, fam, ic = ts.x, ts.y, "sunspot", float(ts.provenance["ic_quiet"])
    else:
        n = int(recipe.shard_pixels)
        stack, fams = random_atmospheres(n, rng, mu=mu)
        prof = np.asarray(synthesize(stack, lines, grid, psf=psf, mu=mu)).reshape(n, 4, grid.nwav)
        ic = _quiet_continuum(lines, grid, psf, mu)
        prof += rng.standard_normal(prof.shape) * (noise * ic)
        atm = stack.to_array()
        ok = np.isfinite(prof).all(axis=(1, 2)) & np.isfinite(atm).all(axis=(1, 2))
        nodes = sample_nodes(atm[ok])
        y = CNNModel.encode(nodes, np.asarray(stack.macro, dtype=np.float64)[ok]).astype(np.float32)
        x = (prof[ok] / ic).astype(np.float32)
        fam = "pixels"
    info = {"shard": int(k), "family": fam, "mu": mu, "noise": noise, "ic_quiet": ic, "pixels": int(x.shape[0]),
            "seconds": time.perf_counter() - t0}
    return {"x": x, "y": y, "mu": np.full(x.shape[0], mu), "info": info}


def _shard_job(args):  # top level: picklable for process pools
    recipe, k, path = args
    import threadpoolctl
    with threadpoolctl.threadpool_limits(1):
        sh = make_shard(recipe, k)
    tmp = Path(str(path) + ".tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, x=sh["x"], y=sh["y"], mu=sh["mu"], info=np.array(json.dumps(sh["info"])))
    os.replace(tmp, path)
    return sh["info"]


def generate_training_set(recipe: Any, folder, *, pixels: int | None = None, workers: int = 1,
                          progress: bool = True) -> TrainingSet:
    """Make (or resume, or grow) a recipe's training set in ``folder`` and return it.

    Parameters
    ----------
    recipe : Recipe or str
        A :class:`pyinv.cnn.Recipe` or a recipe name.
    folder : path
        Shards and ``manifest.json``. A folder made for another recipe (other data fingerprint) is refused.
    pixels : int, optional
        Pixels wanted (default ``recipe.pixels``); shards are whole, so a few more may come back.
    workers : int
        Processes making shards in parallel (each pinned to one thread).
    progress : bool
        One line per finished shard.

    Returns
    -------
    TrainingSet
        With per-pixel μ; ``provenance`` lists the recipe, the shards (family, μ, noise) and the seconds spent
        making the shards of this call (``seconds_this_call``; reused shards cost nothing).
    """
    from .recipes import get_recipe

    rec = get_recipe(recipe) if isinstance(recipe, str) else recipe
    want = int(rec.pixels if pixels is None else pixels)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    man = folder / "manifest.json"
    fp = rec.data_fingerprint()
    if man.exists():
        old = json.loads(man.read_text())
        if old.get("recipe") != fp:
            raise ValueError(f"{folder} holds a training set of another recipe ({old.get('recipe')}); use a new folder")
    else:
        man.write_text(json.dumps({"recipe": fp}, indent=1))
    t0 = time.perf_counter()
    infos: list[dict] = []
    total = 0
    k = 0
    made = 0
    while total < want:
        # plan a batch of shards (an upper bound on the size of sunspot shards is not needed: pixels are counted)
        batch = []
        for j in range(max(1, int(workers))):
            path = folder / f"shard_{k + j:05d}.npz"
            batch.append((k + j, path))
        todo = [(rec, kk, p) for kk, p in batch if not p.exists()]
        if todo:
            if int(workers) > 1 and len(todo) > 1:
                from concurrent.futures import ProcessPoolExecutor
                with ProcessPoolExecutor(max_workers=min(int(workers), len(todo))) as ex:
                    list(ex.map(_shard_job, todo))
            else:
                for job in todo:
                    _shard_job(job)
            made += len(todo)
        for kk, p in batch:
            with np.load(p, allow_pickle=False) as z:
                info = json.loads(str(z["info"][()]))
            infos.append(info)
            total += int(info["pixels"])
            if progress:
                print(f"  shard {kk:5d} ({info['family']:7s} mu {info['mu']:.2f} noise {info['noise']:.1e}): "
                      f"{info['pixels']} px, total {total}/{want}"
                      + ("" if any(kk == t[1] for t in todo) else " (reused)"), flush=True)
            if total >= want:
                break
        k += len(batch)
    ts = load_training_set(folder, nshards=len(infos), recipe=rec)
    ts.provenance.update(seconds_this_call=time.perf_counter() - t0, shards_made_this_call=made)
    return ts


def load_training_set(folder, *, nshards: int | None = None, recipe: Any = None) -> TrainingSet:
    """The training set of a shard folder (the first ``nshards`` shards; default all)."""
    from .nodes import NODES
    from .recipes import get_recipe

    folder = Path(folder)
    fp = json.loads((folder / "manifest.json").read_text())["recipe"]
    rec = recipe if recipe is not None else get_recipe(fp["name"])
    files = sorted(folder.glob("shard_*.npz"))
    if nshards is not None:
        files = [folder / f"shard_{k:05d}.npz" for k in range(int(nshards))]
    xs, ys, mus, infos = [], [], [], []
    for f in files:
        with np.load(f, allow_pickle=False) as z:
            xs.append(z["x"]); ys.append(z["y"]); mus.append(z["mu"])
            infos.append(json.loads(str(z["info"][()])))
    if not xs:
        raise ValueError(f"{folder}: no shards")
    lines = rec.lines()
    fams = [i["family"] for i in infos]
    prov = {"source": "generator truth (synthesis only)", "recipe": fp, "shards": len(files),
            "pixels": int(sum(i["pixels"] for i in infos)),
            "families": {f: int(sum(i["pixels"] for i in infos if i["family"] == f)) for f in sorted(set(fams))},
            "mu_range": [float(min(i["mu"] for i in infos)), float(max(i["mu"] for i in infos))],
            "noise_range": [float(min(i["noise"] for i in infos)), float(max(i["noise"] for i in infos))],
            "seconds_generation": float(sum(i["seconds"] for i in infos))}
    return TrainingSet(np.concatenate(xs), np.concatenate(ys), rec.grid(lines), lines, NODES, prov,
                       mu=np.concatenate(mus))
