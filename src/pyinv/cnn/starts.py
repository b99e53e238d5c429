"""The CNN's start models of ``init="cnn"``, made chunk by chunk where the pixels are inverted.

:class:`CNNStarts` is the :class:`pyinv.init.StartStream` of :class:`pyinv.cnn.CNNInit`: a pool worker
makes the starts of each chunk it inverts from the cube it memory-maps (a dask or MPI task from the
profiles it carries) — the network's forward pass (numpy), the node interpolation (numpy) and the
hydrostatic equilibrium at μ — right before inverting them. The calling process only estimates the map's
quiet-Sun continuum (in blocks) before the run, and clusters the network outputs that the workers stored
beside the results (in blocks) after it. Nothing per pixel is prepared for the whole map at once, so the
calling process's memory does not grow with the map. What a worker spends on them (issue 17's audit,
docs/cnn.md): about 0.8 ms per pixel for the forward pass and 0.6 ms for the hydrostatics, 3–6 % of a
CNN-started pixel's inversion; nothing is compiled or loaded per worker (the interpolation is numpy).

A pixel's start depends on its own profiles and on this object only (the network's pass is the same for
a pixel whatever batch it is in), so a resumed run, another chunking or another executor start every pixel
from the same model as :func:`pyinv.cnn.predict` of the whole map does
(tests/test_cnn_stream.py).
"""
from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np

from ..init.base import StartStream

__all__ = ["CNNStarts"]

#: Auxiliary values per pixel after the network's outputs: 1.0 where the prediction was not finite and
#: the standard guess was used instead, the pixel's share of its chunk's inference and interpolation
#: (+ hydrostatics) seconds.
_AUX_EXTRA = ("fallback_start", "seconds_inference", "seconds_interpolation")


class CNNStarts(StartStream):
    """Start models from a CNN, per chunk of pixels (module docstring).

    Parameters
    ----------
    model : CNNModel
        Kept as its plain weights and metadata (what travels to the workers; no torch network).
    ic_quiet : float
        The map's quiet-Sun continuum (the network's input normalisation; estimated once for the map).
    mu : float
        Heliocentric cosine (network input of μ models, hydrostatic equilibrium).
    log_tau : array (ndep,)
        The inversion's depth grid.
    fallback : Atmosphere
        The start of pixels whose prediction is not finite (the standard guess).
    abundances : optional
        As given to :func:`pyinv.invert` (hydrostatic equilibrium).
    grid : WavelengthGrid or None
        The cube's grid when it must be resampled onto the model's (``CNNInit(resample=True)``), else None.
    n_clusters : int
        k-means clusters of the outputs (:meth:`collect`); 0: none.
    """

    def __init__(self, model: Any, *, ic_quiet: float, mu: float, log_tau: Any, fallback: Any,
                 abundances: Any = None, grid: Any = None, n_clusters: int = 5):
        from .model import CNNModel

        self.model = CNNModel(model.weights, model.meta)
        self.ic_quiet = float(ic_quiet)
        self.mu = float(mu)
        self.log_tau = np.asarray(log_tau, dtype=np.float64).copy()
        self.fallback_row = np.asarray(fallback.to_array(), dtype=np.float64).copy()
        self.fallback_header = np.array([float(fallback.macro), 1.0, 0.0])
        self.abundances = abundances
        self.grid = grid
        self.n_clusters = int(n_clusters)
        self.n_out = int(self.model.n_out)
        self.naux = self.n_out + len(_AUX_EXTRA)
        self.labels: np.ndarray | None = None

    # ------------------------------------------------------------------ in the workers
    def profiles(self, stokes: np.ndarray) -> np.ndarray:
        """The profiles the network sees: resampled onto its grid when needed (no warning here: the map's
        one was given when the run started)."""
        d = np.asarray(stokes, dtype=np.float64)
        if self.grid is None:
            return d
        from .resample import resample_to_model

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return resample_to_model(d, self.grid, self.model)[0]

    def starts(self, stokes: np.ndarray, pixels: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The CNN starts of profiles ``stokes`` (n, 4, nλ) (``pixels`` is not needed: a CNN start depends on
        the profiles alone); see :meth:`pyinv.init.StartStream.starts`."""
        from .nodes import nodes_to_atmospheres

        n = int(stokes.shape[0])
        t0 = time.perf_counter()
        d = self.profiles(stokes)
        x = (d.reshape(-1, 4, d.shape[-1]) / self.ic_quiet).astype(np.float32)  # as normalise_stokes
        outs = self.model.predict_scaled(x, mu=self.mu)
        t1 = time.perf_counter()
        dec = self.model.decode(outs)
        macro = dec.pop("macro")
        table = nodes_to_atmospheres(dec, self.log_tau, mu=self.mu, macro=macro,
                                     node_log_tau=self.model.node_log_tau, abundances=self.abundances,
                                     hydrostatic=True).to_array()
        table = np.array(table, dtype=np.float64).reshape(n, self.log_tau.size, 11)
        header = np.zeros((n, 3))
        header[:, 0] = macro
        header[:, 1] = 1.0
        bad = ~(np.isfinite(table).all(axis=(1, 2)) & np.isfinite(header).all(axis=1))
        table[bad] = self.fallback_row
        header[bad] = self.fallback_header
        t2 = time.perf_counter()
        aux = np.empty((n, self.naux), np.float32)
        aux[:, :self.n_out] = outs
        aux[:, self.n_out] = bad
        aux[:, self.n_out + 1] = (t1 - t0) / max(n, 1)
        aux[:, self.n_out + 2] = (t2 - t1) / max(n, 1)
        return table, header, aux

    def fingerprint(self) -> Any:
        return {"model_weights": {k: np.asarray(v) for k, v in self.model.weights.items()},
                "model_meta": repr(sorted(self.model.meta.items(), key=lambda kv: kv[0])),
                "ic_quiet": self.ic_quiet, "mu": self.mu, "log_tau": self.log_tau,
                "fallback": (self.fallback_row, self.fallback_header),
                "abundances": None if self.abundances is None else _as_path_or_value(self.abundances),
                "resample_from": None if self.grid is None else (np.asarray(self.grid.offset_mA, dtype=np.float64),
                                                                 np.asarray(self.grid.line_index))}

    # ------------------------------------------------------------------ in the calling process, afterwards
    def collect(self, aux: np.ndarray | None, valid: np.ndarray) -> dict:
        """Clusters of the stored outputs (:func:`pyinv.cnn.cluster_outputs`, in blocks), the count of
        pixels that started from the standard guess, and the workers' seconds (summed over pixels)."""
        from ..maps.store import release_pages
        from .predict import cluster_outputs

        v = np.asarray(valid, bool)
        ny, nx = v.shape
        info: dict[str, Any] = {"ic_quiet": self.ic_quiet}
        if aux is None:
            return {"info": info}
        vf = v.reshape(-1)
        nfb, s_inf, s_int = 0, 0.0, 0.0
        step = 8192
        for i in range(0, aux.shape[0], step):
            a = np.asarray(aux[i:i + step, self.n_out:], dtype=np.float64)
            nfb += int(((a[:, 0] == 1.0) & vf[i:i + step]).sum())
            s_inf += float(np.nansum(a[:, 1]))
            s_int += float(np.nansum(a[:, 2]))
            release_pages(aux)
        info.update(fallback_pixels=nfb, seconds_inference=s_inf, seconds_interpolation=s_int)
        if self.n_clusters > 0:
            self.labels = cluster_outputs(aux[:, :self.n_out], self.n_clusters, model=self.model).reshape(ny, nx)
        return {"labels": self.labels, "info": info}


def _as_path_or_value(v: Any) -> Any:
    import os
    from pathlib import Path

    return Path(v) if isinstance(v, (str, os.PathLike)) else v
