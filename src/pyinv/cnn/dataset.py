"""Training sets for the CNN: Stokes profiles of a map (normalised to its quiet-Sun continuum) and the
atmospheres of their inversion (with the paper's *training-set* configuration,
:func:`pyinv.cnn.training_config`) sampled at the ten nodes log τ = 1.0, 0.5, …, −3.5."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .nodes import NODES

__all__ = ["TrainingSet", "quiet_sun_continuum", "normalise_stokes", "sample_nodes", "build_training_set"]


#: Pixels per block of :func:`quiet_sun_continuum` (no temporary of the map's size).
CONTINUUM_BLOCK = 2048


def quiet_sun_continuum(cube: np.ndarray, valid: np.ndarray | None = None, *, transform=None) -> float:
    """Mean quiet-Sun continuum intensity of a map (same units as the cube).

    Per pixel the continuum is the mean of the three brightest Stokes I samples; the quiet Sun is the
    40 % of pixels with the weakest polarisation (max of |Q|, |U|, |V| over Ic) among those brighter
    than half the map's median continuum.

    Computed over blocks of pixels: only two numbers per pixel are kept. ``valid`` (bool, one per pixel)
    restricts it to those pixels (pixels with non-finite values never count); ``transform`` maps a block
    of profiles (m, 4, nλ) to the profiles to estimate from (e.g. resampled onto a CNN model's grid).
    """
    c = np.asarray(cube)
    c = c.reshape(-1, 4, c.shape[-1])
    v = None if valid is None else np.asarray(valid, bool).reshape(-1)
    ics, pols = [], []
    for i in range(0, c.shape[0], CONTINUUM_BLOCK):
        b = np.asarray(c[i:i + CONTINUUM_BLOCK], dtype=np.float64)
        ok = np.isfinite(b).all(axis=(1, 2))
        if v is not None:
            ok &= v[i:i + CONTINUUM_BLOCK]
        b = b[ok]
        if transform is not None and b.shape[0]:
            b = transform(b)
        ic_b = np.sort(b[:, 0, :], axis=-1)[:, -3:].mean(axis=-1)
        ics.append(ic_b)
        pols.append(np.abs(b[:, 1:, :]).max(axis=(1, 2)) / np.maximum(ic_b, 1e-6) if b.shape[0] else ic_b)
    ic = np.concatenate(ics) if ics else np.zeros(0)
    if ic.size == 0:
        raise ValueError("no finite pixels to estimate the quiet-Sun continuum from")
    pol = np.concatenate(pols)
    bright = ic > 0.5 * np.median(ic)
    if not bright.any():
        return float(np.median(ic))
    thr = np.quantile(pol[bright], 0.4)
    sel = bright & (pol <= thr)
    return float(ic[sel].mean())


def normalise_stokes(cube: np.ndarray, ic_quiet: float | None = None) -> tuple[np.ndarray, float]:
    """(n, 4, nλ) float32 CNN inputs: the profiles divided by the quiet-Sun continuum; returns it too."""
    c = np.asarray(cube, dtype=np.float64)
    ic = quiet_sun_continuum(c) if ic_quiet is None else float(ic_quiet)
    if not (np.isfinite(ic) and ic > 0):
        raise ValueError(f"the quiet-Sun continuum must be finite and > 0, got {ic}")
    return (c.reshape(-1, 4, c.shape[-1]) / ic).astype(np.float32), ic


def sample_nodes(atmospheres: np.ndarray, node_log_tau=None) -> dict[str, np.ndarray]:
    """Sample T, vlos, B, γ, φ and vmic of atmospheres (n, ndep, 11) at the nodes (linear in log τ);
    returns arrays (n, nnodes). φ is interpolated through cos 2φ / sin 2φ and returned in [0°, 180°)."""
    from ..atmosphere import COLUMNS

    a = np.asarray(atmospheres, dtype=np.float64)
    a = a.reshape(-1, a.shape[-2], a.shape[-1])
    xn = NODES if node_log_tau is None else np.asarray(node_log_tau, dtype=np.float64)
    lt = a[0, :, 0] if a.shape[0] else np.zeros(1)
    if a.shape[0] and not np.allclose(a[:, :, 0], lt):
        raise ValueError("all atmospheres must share one log tau grid")
    if xn.max() > lt.max() + 1e-9 or xn.min() < lt.min() - 1e-9:
        raise ValueError(f"the nodes {xn.min()}..{xn.max()} reach beyond the atmospheres' grid "
                         f"{lt.min()}..{lt.max()}")
    order = np.argsort(lt)
    lts = lt[order]
    j = np.clip(np.searchsorted(lts, xn) - 1, 0, lts.size - 2)
    w = (xn - lts[j]) / (lts[j + 1] - lts[j])

    def at(v):
        vs = v[:, order]
        return vs[:, j] * (1 - w) + vs[:, j + 1] * w

    out = {}
    for name in ("T", "vlos", "B", "gamma", "vmic"):
        out[name] = at(a[:, :, COLUMNS.index(name)])
    phi = np.radians(a[:, :, COLUMNS.index("phi")])
    c2, s2 = at(np.cos(2 * phi)), at(np.sin(2 * phi))
    out["phi"] = np.mod(0.5 * np.degrees(np.arctan2(s2, c2)), 180.0)
    return out


@dataclass
class TrainingSet:
    """CNN inputs ``x`` (n, 4, nλ) float32 and scaled targets ``y`` (n, n_out) float32, with the
    heliocentric cosine of every pixel (``mu``, (n,); None = all 1), the wavelength grid they belong to and
    their provenance."""

    x: np.ndarray
    y: np.ndarray
    grid: Any
    lines: Any
    node_log_tau: np.ndarray
    provenance: dict = field(default_factory=dict)
    mu: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def mu_array(self) -> np.ndarray:
        """μ of every pixel (n,) float64."""
        if self.mu is None:
            return np.ones(len(self))
        return np.broadcast_to(np.asarray(self.mu, dtype=np.float64), (len(self),)).copy()

    def __add__(self, other: "TrainingSet") -> "TrainingSet":
        if self.x.shape[1:] != other.x.shape[1:] or self.y.shape[1] != other.y.shape[1]:
            raise ValueError("training sets of different shapes cannot be joined")
        prov = {"parts": [self.provenance, other.provenance]}
        return TrainingSet(np.concatenate([self.x, other.x]), np.concatenate([self.y, other.y]), self.grid,
                           self.lines, self.node_log_tau, prov,
                           mu=np.concatenate([self.mu_array(), other.mu_array()]))


def build_training_set(cube: np.ndarray, result: Any, grid, lines, *, ic_quiet: float | None = None,
                       macro: Any = None, node_log_tau=None, provenance: dict | None = None,
                       mu: float = 1.0) -> TrainingSet:
    """Training pairs of one map.

    Parameters
    ----------
    cube : ndarray (ny, nx, 4, nλ)
        The observed map (HSRA-normalised, as given to the inversion).
    result : InversionResult or ndarray (ny, nx, ndep, 11)
        Its inversion with :func:`pyinv.cnn.training_config` (pixels with status ≠ 0 or NaNs are
        dropped), or atmospheres (e.g. a synthetic map's truth; then ``macro`` (ny, nx) too).
    grid, lines : the map's WavelengthGrid and LineList.
    ic_quiet : float, optional
        Quiet-Sun continuum of the map (default :func:`quiet_sun_continuum`).
    mu : float
        Heliocentric cosine of the map (an input of models with ``mu_input``).
    """
    from ..maps.result import InversionResult
    from .model import CNNModel

    c = np.asarray(cube, dtype=np.float64)
    if c.ndim != 4 or c.shape[2] != 4 or c.shape[3] != grid.nwav:
        raise ValueError(f"cube must be (ny, nx, 4, {grid.nwav}), got {c.shape}")
    if isinstance(result, InversionResult):
        atm = np.asarray(result.atmospheres, dtype=np.float64)
        mac = np.asarray(result.macro, dtype=np.float64)
        ok = np.asarray(result.status) == 0
        src = {"source": "inversion", "config": result.provenance.get("config_text"),
               "init": result.provenance.get("init")}
    else:
        atm = np.asarray(result, dtype=np.float64)
        if macro is None:
            raise ValueError("give macro= (ny, nx) with an atmosphere array")
        mac = np.broadcast_to(np.asarray(macro, dtype=np.float64), atm.shape[:2])
        ok = np.ones(atm.shape[:2], bool)
        src = {"source": "atmospheres"}
    if atm.shape[:2] != c.shape[:2]:
        raise ValueError(f"the result is {atm.shape[:2]} pixels, the cube {c.shape[:2]}")
    ok &= np.isfinite(atm).all(axis=(2, 3)) & np.isfinite(mac) & np.isfinite(c).all(axis=(2, 3))
    x, ic = normalise_stokes(c, ic_quiet)
    okf = ok.reshape(-1)
    nodes = sample_nodes(atm.reshape(-1, atm.shape[2], 11)[okf], node_log_tau)
    y = CNNModel.encode(nodes, mac.reshape(-1)[okf]).astype(np.float32)
    prov = {**src, "map_shape": list(c.shape[:2]), "pixels": int(okf.sum()), "ic_quiet": ic, **(provenance or {})}
    prov["mu"] = float(mu)
    return TrainingSet(x[okf], y, grid, lines, NODES if node_log_tau is None else np.asarray(node_log_tau), prov,
                       mu=np.full(int(okf.sum()), float(mu)))


def join(sets: Sequence[TrainingSet]) -> TrainingSet:
    """Concatenate training sets of the same grid."""
    out = sets[0]
    for s in sets[1:]:
        out = out + s
    return out
