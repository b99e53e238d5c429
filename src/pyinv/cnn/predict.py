"""CNN-only estimates of a map (:func:`predict`) and clustering of pixels by the CNN outputs
(:func:`cluster`)."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .model import CNNModel

__all__ = ["predict", "cluster", "cluster_outputs", "CNNPrediction", "as_model"]


def as_model(model: Any = None) -> CNNModel:
    """A CNNModel from a model, a path, a catalogue name (:func:`pyinv.cnn.catalogue_names`) or None (the
    packaged Hinode SP model)."""
    from .catalogue import CATALOGUE, pretrained
    if model is None:
        return pretrained()
    if isinstance(model, CNNModel):
        return model
    if isinstance(model, str) and model in CATALOGUE:
        return pretrained(model)
    if isinstance(model, (str, os.PathLike)):
        from .io import load_model
        return load_model(model)
    raise ValueError(f"expected a pyinv.cnn.CNNModel, a model file path, a catalogue name or None, got "
                     f"{type(model).__name__}")


def prepare_data(cm: CNNModel, data: np.ndarray, grid, lines, resample: bool):
    """Check a cube (ny, nx, 4, nλ) against the model; with ``resample`` and a differing ``grid``, return it
    interpolated onto the model's grid. Returns (data, grid or None)."""
    if lines is not None:
        cm.check_compatible(None, lines, what="map")
    if grid is not None and data.shape[-1] != grid.nwav:
        raise ValueError(f"the map has {data.shape[-1]} wavelengths, its grid {grid.nwav}")
    if resample:
        if grid is None:
            raise ValueError("resample=True needs the cube's wavelength grid (grid=)")
        from .resample import grid_mismatch, resample_to_model
        dev = grid_mismatch(cm, grid)
        if dev is None or dev > 1e-6:
            data, _ = resample_to_model(data, grid, cm)
        return data, None
    try:
        cm.check_compatible(grid, None, nwav=data.shape[-1], what="map")
    except ValueError as exc:
        raise ValueError(f"{exc}; resample=True (with the cube's grid) interpolates the map onto the model's "
                         f"wavelengths") from None
    return data, grid


def check_mu(cm: CNNModel, mu: float) -> None:
    """Warn when a model without μ input is used at a μ outside its training range (by > 0.05)."""
    import warnings
    if cm.mu_input:
        lo, hi = cm.meta.get("mu_range", [0.0, 1.0])
        if not (lo - 0.05 <= float(mu) <= hi + 0.05):
            warnings.warn(f"mu = {float(mu):g} is outside the CNN's training range {lo:g}..{hi:g}", UserWarning,
                          stacklevel=3)
        return
    lo, hi = cm.meta.get("mu_range", [1.0, 1.0])
    if not (lo - 0.05 <= float(mu) <= hi + 0.05):
        warnings.warn(f"this CNN has no mu input and was trained on mu {lo:g}..{hi:g}; used at mu = {float(mu):g}",
                      UserWarning, stacklevel=3)


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
        from ..maps.result import InversionResult
        ny, nx = self.shape
        z = np.zeros((ny, nx))
        r = InversionResult(atmospheres=self.atmospheres, macro=self.macro, filling=z + 1, stray=z, fits=z,
                            chi2=z, chi2_cycles=z[..., None], status=z.astype(int), iterations=z.astype(int),
                            errors=z, errors_header=z, start=z, seconds=z, line_index=z, offset_mA=z,
                            wavelength=z)
        return r.map(name, log_tau)


def predict(cube: Any, model: Any = None, *, grid=None, lines=None, mu: float = 1.0, ic_quiet: float | None = None,
            log_tau=None, valid: np.ndarray | None = None, hydrostatic: bool = True, abundances=None,
            axes: str = "yxsl", resample: bool = False) -> CNNPrediction:
    """CNN-only inversion of a map: the network's node values turned into full atmospheres.

    Parameters
    ----------
    cube : ndarray or FITS path
        Stokes map (HSRA-normalised as for :func:`pyinv.invert`), axes as ``axes``.
    model : CNNModel, path, catalogue name or None
        None = the packaged pretrained model (Hinode SP Fe I 6301.5/6302.5); a name from
        :func:`pyinv.cnn.catalogue_names`.
    grid, lines : optional
        When given, checked against the model (refused with ValueError when they differ); the cube's
        number of wavelengths is always checked.
    mu : float
        Heliocentric cosine: hydrostatic equilibrium, and an input of models with ``mu_input``. A model
        without μ input used outside its training range of μ (by more than 0.05) warns.
    resample : bool
        With ``grid`` (the cube's grid): when it differs from the model's, interpolate the cube onto the
        model's wavelengths (linear, per line) with a UserWarning saying by how much
        (:func:`pyinv.cnn.resample.resample_to_model`). Default False: refuse other grids.
    ic_quiet : float, optional
        Quiet-Sun continuum of the map in the cube's units (default: estimated,
        :func:`pyinv.cnn.quiet_sun_continuum`).
    log_tau : array, optional
        Target grid (default the 53-point grid 1.2 … −4.0).
    valid : bool array (ny, nx), optional
        Pixels to predict (default: all with finite profiles).
    """
    from ..maps.cube import load_cube
    from .dataset import normalise_stokes
    from .nodes import nodes_to_atmospheres

    cm = as_model(model)
    data, _, _ = load_cube(cube, axes)
    data, grid = prepare_data(cm, data, grid, lines, resample)
    ny, nx, _, nwav = data.shape
    check_mu(cm, mu)
    ok = np.isfinite(data).all(axis=(2, 3))
    if valid is not None:
        ok &= np.asarray(valid, bool)
    okf = ok.reshape(-1)
    t0 = time.perf_counter()
    x, ic = normalise_stokes(data.reshape(-1, 4, nwav)[okf], ic_quiet) if okf.any() else (None, ic_quiet or 1.0)
    n_out = cm.n_out
    outs = np.full((ny * nx, n_out), np.nan, dtype=np.float32)
    if okf.any():
        outs[okf] = cm.predict_scaled(x, mu=mu)
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
    cm = as_model(model)
    if isinstance(data, CNNPrediction):
        outs = data.outputs
    else:
        outs = predict(data, cm, mu=mu, ic_quiet=ic_quiet, hydrostatic=False).outputs
    ny, nx, n_out = outs.shape
    return cluster_outputs(outs.reshape(-1, n_out), n_clusters, model=cm, seed=seed).reshape(ny, nx)


#: Pixels per block of :func:`cluster_outputs`.
CLUSTER_BLOCK = 4096


def cluster_outputs(outputs: np.ndarray, n_clusters: int = 5, *, model: Any = None, seed: int = 0,
                    block: int = CLUSTER_BLOCK) -> np.ndarray:
    """:func:`cluster` of raw network outputs (npix, n_out) — e.g. a memory map of those the workers of a map
    inversion stored (``init="cnn"``) — read and standardised block by block (this process keeps a few
    numbers per pixel, not the outputs; a memory map's pages are dropped after each block). Returns the
    labels (npix,), −1 where an output is not finite; the same as clustering the whole array at once."""
    from ..init.strategies import kmeans_blocks
    from ..maps.store import release_pages

    cm = as_model(model)
    npix = int(outputs.shape[0])
    ok = np.zeros(npix, bool)
    for i in range(0, npix, block):
        ok[i:i + block] = np.isfinite(np.asarray(outputs[i:i + block], dtype=np.float64)).all(axis=1)
        release_pages(outputs)
    rows = np.flatnonzero(ok)
    mean, std = cm.out_mean, cm.out_std

    def z(i: int, j: int) -> np.ndarray:
        a = rows[i:j]
        f = np.empty((a.size, int(outputs.shape[1])))
        for k in range(0, a.size, 512):  # a few pages of a memory map at a time
            r = a[k:k + 512]
            f[k:k + 512] = outputs[r[0]:r[-1] + 1][r - r[0]] if r[-1] - r[0] < 2 * r.size else outputs[r]
            release_pages(outputs)
        return (f - mean) / std

    labels = np.full(npix, -1)
    if rows.size:
        labels[rows], _ = kmeans_blocks(z, rows.size, n_clusters, seed=seed, block=block)
    return labels
