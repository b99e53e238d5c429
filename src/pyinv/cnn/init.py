"""``init="cnn"`` of :func:`pyinv.invert`: every pixel starts from the CNN's atmosphere."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..init.base import GuessSet, InitContext, InitStrategy

__all__ = ["CNNInit"]


class CNNInit(InitStrategy):
    """Initial atmospheres predicted by a CNN (Gafeira et al. 2021).

    Use with the assisted configuration (:func:`pyinv.cnn.assisted_config`: one cycle, T 5, v 3, B 3,
    γ, φ, vmic, vmac 1 node)::

        pyinv.invert(cube, lines, grid, pyinv.cnn.assisted_config(), init="cnn", guess="model.pt")

    Parameters
    ----------
    guess : CNNModel, model path or None
        None = the packaged pretrained model. Data it was not trained for (other wavelengths or lines)
        are refused with a ValueError when the guesses are made.
    ic_quiet : float, optional
        Quiet-Sun continuum of the map (default: estimated from the map).
    n_clusters : int
        k-means clusters of the CNN outputs recorded as the result's labels (0 = none).
    """

    name = "cnn"

    def __init__(self, guess: Any = None, *, ic_quiet: float | None = None, n_clusters: int = 5):
        from .predict import as_model
        self.model = as_model(guess)
        self.ic_quiet = ic_quiet
        self.n_clusters = int(n_clusters)
        self.last_prediction = None

    def describe(self) -> str:
        p = self.model.provenance
        return f"cnn({p.get('loaded_from', 'in-memory model')}, trained {p.get('created', '?')})"

    def initial_guesses(self, ctx: InitContext) -> GuessSet:
        from ..models import default_guess
        from .predict import cluster, predict

        ny, nx = ctx.shape
        fb = default_guess()
        pred = predict(ctx.cube, self.model, grid=ctx.grid, lines=ctx.lines, mu=ctx.mu, ic_quiet=self.ic_quiet,
                       log_tau=np.asarray(fb.log_tau), valid=ctx.valid, abundances=ctx.abundances)
        self.last_prediction = pred
        table = pred.atmospheres.reshape(ny * nx, -1, 11).copy()
        header = np.zeros((ny * nx, 3))
        header[:, 0] = pred.macro.reshape(-1)
        header[:, 1] = 1.0
        bad = ~(np.isfinite(table).all(axis=(1, 2)) & np.isfinite(header).all(axis=1))
        table[bad] = fb.to_array()
        header[bad] = (float(fb.macro), 1.0, 0.0)
        labels = cluster(pred, self.n_clusters, model=self.model) if self.n_clusters > 0 else None
        return GuessSet(table, header, np.arange(ny * nx, dtype=np.int32)[:, None], labels=labels,
                        info={"init": "cnn", "model": self.model.provenance.get("loaded_from", "in-memory"),
                              "ic_quiet": pred.ic_quiet, "seconds_inference": pred.seconds["inference"],
                              "seconds_interpolation": pred.seconds["interpolation"],
                              "fallback_pixels": int((bad & ctx.valid.reshape(-1)).sum())})
