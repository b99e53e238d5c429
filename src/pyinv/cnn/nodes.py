"""From CNN node values to full model atmospheres (issue 6).

The CNN predicts every physical quantity at :data:`NODES` (log τ₅₀₀ = 1.0, 0.5, …, −3.5); a full
stratification on the inversion grid follows by linear interpolation in log τ, as in Gafeira et al.
(2021). :func:`interpolate_nodes` is vectorised over pixels in numpy (the same result as ``numpy.interp``
per pixel inside the node range; outside it the end values are kept, or, with ``extrapolate="linear"``,
the end segments are prolonged). :func:`nodes_to_atmospheres` builds :class:`pyinv.Atmosphere` stacks
with Pe from hydrostatic equilibrium (:func:`pyinv.hydrostatic`).

The interpolation was a numba kernel until issue 17's overhead audit: loading it (numba's import and its
compiled-code cache) cost every pool worker of an ``init="cnn"`` map 0.5–0.9 s before its first start,
about 2 % of a 48×48 assisted run. The numpy form does the same floating-point operations in the same
order, so its values are bit-identical to the kernel's (checked on the transfer maps' starts).
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["NODES", "interpolate_nodes", "nodes_to_atmospheres", "pe_top_guess"]

#: The ten optical depths of the CNN outputs, deepest first.
NODES = np.round(np.arange(10, -36, -5) / 10.0, 1)


def _interp_sorted(xs: np.ndarray, ys: np.ndarray, x: np.ndarray, linear: bool) -> np.ndarray:
    """Rows ``ys`` (npix, nn) given at increasing ``xs`` (nn,), interpolated linearly to ``x`` (nx,)
    → (npix, nx). Beyond the ends: the end values, or the end segments prolonged when ``linear``."""
    nn = xs.size
    out = np.empty((ys.shape[0], x.size))
    below = x <= xs[0]
    above = (x >= xs[nn - 1]) & ~below
    inside = ~(below | above)
    if linear and nn > 1:
        out[:, below] = ys[:, :1] + (x[below] - xs[0]) * (ys[:, 1:2] - ys[:, :1]) / (xs[1] - xs[0])
        out[:, above] = ys[:, nn - 1:] + (x[above] - xs[nn - 1]) * (ys[:, nn - 1:] - ys[:, nn - 2:nn - 1]) / (
            xs[nn - 1] - xs[nn - 2])
    else:
        out[:, below] = ys[:, :1]
        out[:, above] = ys[:, nn - 1:]
    xi = x[inside]
    hi = np.clip(np.searchsorted(xs, xi, side="right"), 1, nn - 1)   # xs[hi - 1] <= xi < xs[hi] (NaN: NaN)
    lo = hi - 1
    t = (xi - xs[lo]) / (xs[hi] - xs[lo])
    out[:, inside] = ys[:, lo] + t * (ys[:, hi] - ys[:, lo])
    return out


def interpolate_nodes(node_log_tau, values, log_tau, extrapolate: str = "constant") -> np.ndarray:
    """Linear interpolation in log τ of node values onto a grid, for many pixels at once.

    Parameters
    ----------
    node_log_tau : array (nn,)
        Node positions (any order, distinct).
    values : array (..., nn)
        Values at the nodes, per pixel.
    log_tau : array (nd,)
        Target grid (any order).
    extrapolate : "constant" or "linear"
        Outside the node range: keep the end values (``numpy.interp``'s rule) or prolong the end
        segments.

    Returns
    -------
    ndarray (..., nd)
    """
    xn = np.asarray(node_log_tau, dtype=np.float64).ravel()
    y = np.asarray(values, dtype=np.float64)
    if y.shape[-1] != xn.size:
        raise ValueError(f"values have {y.shape[-1]} nodes on the last axis, node_log_tau {xn.size}")
    if extrapolate not in ("constant", "linear"):
        raise ValueError(f"extrapolate must be 'constant' or 'linear', got {extrapolate!r}")
    order = np.argsort(xn)
    xs = np.ascontiguousarray(xn[order])
    if xs.size > 1 and np.any(np.diff(xs) <= 0):
        raise ValueError("node positions must be distinct")
    lead = y.shape[:-1]
    ys = y.reshape(-1, xn.size)[:, order]
    x = np.asarray(log_tau, dtype=np.float64).ravel()
    return _interp_sorted(xs, ys, x, extrapolate == "linear").reshape(lead + (x.size,))


def pe_top_guess(T_top) -> np.ndarray:
    """Electron pressure at the top of the grid for given top temperatures: log Pe interpolated in T
    between the packaged library models' top points (a starting value; the hydrostatic equilibrium
    forgets it within a few grid points)."""
    from .. import models

    libs = [models.load(k) if k != "hsra" else models.hsra() for k in models.names()]
    t = np.array([float(np.asarray(m.T)[-1]) for m in libs])
    lp = np.array([np.log(float(np.asarray(m.Pe)[-1])) for m in libs])
    o = np.argsort(t)
    return np.exp(np.interp(np.asarray(T_top, dtype=np.float64), t[o], lp[o]))


_LIMITS = {"T": (2500.0, 2.0e4), "vmic": (1.0e3, 8.0e5), "B": (1.0, 6.0e3), "gamma": (0.5, 179.5),
           "vlos": (-1.5e6, 1.5e6)}


def nodes_to_atmospheres(nodes: dict[str, np.ndarray], log_tau=None, *, mu: float = 1.0, macro: Any = 0.5,
                         node_log_tau=None, abundances=None, hydrostatic: bool = True):
    """Full atmospheres from node values.

    Parameters
    ----------
    nodes : dict
        ``T``, ``vlos``, ``B``, ``gamma``, ``phi``, ``vmic`` → arrays (npix, nn) in SIR units (K, cm/s,
        G, degrees); missing keys get T = HSRA, 0 for vlos, 1e5 cm/s for vmic, ...
    log_tau : array (nd,), optional
        Target grid (default the 53-point library grid 1.2 … −4.0).
    mu : float
        Heliocentric cosine for the hydrostatic equilibrium (g_eff = μ g).
    macro : float or array (npix,)
        Macroturbulence [km/s].
    node_log_tau : array (nn,), optional
        Node positions (default :data:`NODES`).
    hydrostatic : bool
        Put Pe in hydrostatic equilibrium (top Pe from :func:`pe_top_guess`); False keeps the
        top-guess Pe at every depth (only for quick looks).

    Returns
    -------
    Atmosphere
        A stack of npix models. T is extrapolated linearly beyond the node range (its gradient matters
        in the deep layers), the other quantities keep their end values. Values are clipped to
        physical ranges (T ≥ 2500 K, 1 G ≤ B ≤ 6000 G, 0.5° ≤ γ ≤ 179.5°, vmic ≥ 10 m/s).
    """
    from .. import models
    from ..atmosphere import Atmosphere

    lt = np.asarray(models.LOG_TAU_53 if log_tau is None else log_tau, dtype=np.float64)
    xn = NODES if node_log_tau is None else np.asarray(node_log_tau, dtype=np.float64)
    if "T" not in nodes:
        raise ValueError("nodes_to_atmospheres needs at least the temperature nodes ('T')")
    npix = np.asarray(nodes["T"]).shape[0]
    cols = {}
    for name in ("T", "vlos", "B", "gamma", "phi", "vmic"):
        if name in nodes:
            v = interpolate_nodes(xn, nodes[name], lt, extrapolate="linear" if name == "T" else "constant")
        else:
            v = np.full((npix, lt.size), {"vlos": 0.0, "B": 400.0, "gamma": 60.0, "phi": 30.0,
                                         "vmic": 1.0e5}[name])
        if name in _LIMITS:
            v = np.clip(v, *_LIMITS[name])
        cols[name] = v
    pe = np.repeat(pe_top_guess(cols["T"][:, -1])[:, None], lt.size, axis=1)
    arr = np.zeros((npix, lt.size, 11))
    arr[..., 0] = lt
    arr[..., 1] = cols["T"]
    arr[..., 2] = pe
    arr[..., 3] = cols["vmic"]
    arr[..., 4] = cols["B"]
    arr[..., 5] = cols["vlos"]
    arr[..., 6] = cols["gamma"]
    arr[..., 7] = cols["phi"]
    mac = np.broadcast_to(np.asarray(macro, dtype=np.float64), (npix,)).copy()
    stack = Atmosphere.from_array(arr, macro=mac)
    if hydrostatic and npix:
        from ..physics.thermo import hydrostatic as _he
        stack = _he(stack, mu=mu, abundances=abundances)
    return stack
