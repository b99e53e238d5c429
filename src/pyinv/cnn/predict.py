"""CNN-only estimates of a map (:func:`predict`) and clustering of pixels by the CNN outputs
(:func:`cluster`)."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .model import CNNModel

__all__ = ["predict", "cluster", "CNNPrediction", "as_model"]


def as_model(model: Any = None) -> CNNModel:
    """A CNNModel from a model, a path, or None (the packaged pretrained model)."""
    if model is None:
        from .io import load_pretrained
        return load_pretrained()
    if isinstance(model, CNNModel):
        return model
    if isinstance(model, (str, os.PathLike)):
        from .io import load_model
        return load_model(model)
    raise ValueError(f"expected a pyinv.cnn.CNNModel, a model file path or None, got {type(model).__name__}")


@dataclass
class CNNPrediction:
    """The CNN's estimate of a map.

    Attributes
    ----------
    atmospheres : ndarray (ny, nx, ndep, 11)
        Full model atmospheres (SIR columns; Pe, Pg, ρ, z from hydrostatic equilibrium at μ); NaN for
        pixels not predicted.
    macro : ndarray (ny, nx)
        Macroturbulence [km/s].
    nodes : dict of ndarray (ny, nx, nnodes)
        ``T``, ``vlos``, ``B``, ``gamma``, ``phi``, ``vmic`` at ``node_log_tau``.
    outputs : ndarray (ny, nx, n_out)
        Raw (Table-2-scaled) network outputs.
    seconds : dict
        ``inference`` (network), ``interpolation`` (nodes → atmospheres incl. hydrostatics).
    """

    atmospheres: np.ndarray
    macro: np.ndarray
    nodes: dict
    outputs: np.ndarray
    node_log_tau: np.ndarray
    ic_quiet: float
    seconds: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.macro.shape)  # type: ignore[return-value]

    def map(self, name: str, log_tau: float = 0.0) -> np.ndarray:
        """(ny, nx) map of a column at ``log_tau``, as :meth:`pyinv.InversionResult.map`."""
        from ..result import InversionResult
        ny, nx = self.shape
        z = np.zeros((ny, nx))
        r = InversionResult(atmospheres=self.atmospheres, macro=self.macro, filling=z + 1, stray=z, fits=z,
                            chi2=z, chi2_cycles=z[..., None], status=z.astype(int), iterations=z.astype(int),
                            errors=z, errors_header=z, start=z, seconds=z, line_index=z, offset_mA=z,
                            wavelength=z)
        return r.map(name, log_tau)


def predict(cube: Any, model: Any = None, *, grid=None, lines=None, mu: float = 1.0, ic_quiet: float | None = None,
            log_tau=None, valid: np.ndarray | None = None, hydrostatic: bool = True, abundances=None,
            axes: str = "yxsl") -> CNNPrediction:
    """CNN-only inversion of a map: the network's node values turned into full atmospheres.

    Parameters
    ----------
    cube : ndarray or FITS path
        Stokes map (HSRA-normalised as for :func:`pyinv.invert`), axes as ``axes``.
    model : CNNModel, path or None
        None = the packaged pretrained model (Hinode SP Fe I 6301.5/6302.5).
    grid, lines : optional
        When given, checked against the model (refused with ValueError when they differ); the cube's
        number of wavelengths is always checked.
    mu : float
        Heliocentric cosine (hydrostatic equilibrium).
    ic_quiet : float, optional
        Quiet-Sun continuum of the map in the cube's units (default: estimated,
        :func:`pyinv.cnn.quiet_sun_continuum`).
    log_tau : array, optional
        Target grid (default the 53-point grid 1.2 … −4.0).
    valid : bool array (ny, nx), optional
        Pixels to predict (default: all with finite profiles).
    """
    from ..maps import load_cube
    from .dataset import normalise_stokes
    from .nodes import nodes_to_atmospheres

    cm = as_model(model)
    data, _, _ = load_cube(cube, axes)
    ny, nx, _, nwav = data.shape
    cm.check_compatible(grid, lines, nwav=nwav, what="map")
    ok = np.isfinite(data).all(axis=(2, 3))
    if valid is not None:
        ok &= np.asarray(valid, bool)
    okf = ok.reshape(-1)
    t0 = time.perf_counter()
    x, ic = normalise_stokes(data.reshape(-1, 4, nwav)[okf], ic_quiet) if okf.any() else (None, ic_quiet or 1.0)
    n_out = cm.net.n_out
    outs = np.full((ny * nx, n_out), np.nan, dtype=np.float32)
    if okf.any():
        outs[okf] = cm.predict_scaled(x)
    t1 = time.perf_counter()
    dec = cm.decode(outs[okf])
    macro = np.full(ny * nx, np.nan)
    macro[okf] = dec.pop("macro")
    from .. import models
    lt = np.asarray(models.LOG_TAU_53 if log_tau is None else log_tau, dtype=np.float64)
    atm = np.full((ny * nx, lt.size, 11), np.nan)
    if okf.any():
        stack = nodes_to_atmospheres(dec, lt, mu=mu, macro=macro[okf], node_log_tau=cm.node_log_tau,
                                     abundances=abundances, hydrostatic=hydrostatic)
        atm[okf] = stack.to_array()
    t2 = time.perf_counter()
    nodes = {}
    for k, v in dec.items():
        full = np.full((ny * nx, cm.nnodes), np.nan)
        full[okf] = v
        nodes[k] = full.reshape(ny, nx, cm.nnodes)
    return CNNPrediction(atmospheres=atm.reshape(ny, nx, lt.size, 11), macro=macro.reshape(ny, nx), nodes=nodes,
                         outputs=outs.reshape(ny, nx, n_out), node_log_tau=cm.node_log_tau, ic_quiet=float(ic),
                         seconds={"inference": t1 - t0, "interpolation": t2 - t1})


def cluster(data: Any, n_clusters: int = 5, *, model: Any = None, seed: int = 0, mu: float = 1.0,
            ic_quiet: float | None = None) -> np.ndarray:
    """k-means clusters of pixels with similar physics, from the CNN outputs.

    Parameters
    ----------
    data : CNNPrediction or Stokes cube (ny, nx, 4, nλ)
        A cube is first run through the network (no hydrostatics needed).
    n_clusters : int
    model : CNNModel, path or None
        For a cube; also gives the output standardisation (default: the pretrained model).

    Returns
    -------
    ndarray of int (ny, nx)
        Cluster labels (−1 for pixels without a prediction); usable as ``pyinv.invert(...,
        init="cluster", guess=labels)``.
    """
    from ..init import kmeans

    cm = as_model(model)
    if isinstance(data, CNNPrediction):
        outs = data.outputs
    else:
        outs = predict(data, cm, mu=mu, ic_quiet=ic_quiet, hydrostatic=False).outputs
    ny, nx, n_out = outs.shape
    f = outs.reshape(-1, n_out).astype(np.float64)
    ok = np.isfinite(f).all(axis=1)
    mean = cm.net.out_mean.numpy().astype(np.float64)
    std = cm.net.out_std.numpy().astype(np.float64)
    z = (f[ok] - mean) / std
    labels = np.full(ny * nx, -1)
    if ok.any():
        labels[ok], _ = kmeans(z, n_clusters, seed=seed)
    return labels.reshape(ny, nx)
