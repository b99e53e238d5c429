"""End-to-end helpers: training sets from generated maps (how the packaged model is made) and from an
observed map with its training-set inversion."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .configs import training_config
from .dataset import TrainingSet, build_training_set, join

__all__ = ["training_set_from_generated", "training_set_from_map"]


def training_set_from_map(cube, lines, grid, *, mu: float = 1.0, psf=None, workers: int | None = None,
                          checkpoint=None, progress: Any = True, config=None, ic_quiet=None,
                          provenance: dict | None = None) -> tuple[TrainingSet, Any]:
    """Invert a map with the paper's training-set configuration and build its training set.

    Returns (TrainingSet, InversionResult)."""
    from ..maps.inversion import invert

    cfg = config if config is not None else training_config(mu=mu)
    t0 = time.perf_counter()
    res = invert(cube, lines, grid, cfg, mu=mu, psf=psf, workers=workers, checkpoint=checkpoint, progress=progress)
    secs = time.perf_counter() - t0
    data = _load(cube) if isinstance(cube, (str, Path)) else np.asarray(cube)
    ts = build_training_set(data, res, grid, lines, ic_quiet=ic_quiet, mu=mu,
                            provenance={"inversion_seconds": secs, "mu": mu, **(provenance or {})})
    return ts, res


def _load(path):
    from ..maps.cube import load_cube
    return load_cube(path)[0]


def training_set_from_generated(sizes: Sequence[int], seeds: Sequence[int], mus: Sequence[float] | None = None, *,
                                workers: int | None = None, checkpoint_dir=None, progress: Any = True,
                                verbose: bool = True) -> TrainingSet:
    """Generate maps with :func:`pyinv.synthetic.generate_map`, invert each with the training-set
    configuration (resumable with ``checkpoint_dir``) and join their training sets."""
    from ..synthetic import generate_map

    mus = list(mus) if mus is not None else [1.0] * len(seeds)
    sets = []
    for size, seed, mu in zip(sizes, seeds, mus):
        m = generate_map(int(size), int(seed), mu=float(mu))
        ck = None if checkpoint_dir is None else Path(checkpoint_dir) / f"train_s{seed}_n{size}_mu{mu:g}"
        if verbose:
            print(f"training map seed={seed} size={size} mu={mu:g}: inverting {size * size} pixels "
                  f"(training-set configuration)", flush=True)
        ts, res = training_set_from_map(m.cube, m.lines, m.grid, mu=float(mu), psf=m.psf, workers=workers,
                                        checkpoint=ck, progress=progress,
                                        provenance={"generator": "pyinv.synthetic.generate_map", "seed": int(seed),
                                                    "size": int(size)})
        if verbose:
            print(f"  {len(ts)} pixels usable ({res.summary()}), {ts.provenance['inversion_seconds']:.0f} s",
                  flush=True)
        sets.append(ts)
    return join(sets)
