"""The CNN's forward pass in numpy: prediction without PyTorch.

Evaluates the network of :mod:`pyinv.cnn.torch_net` from its plain weights (name → array, the names of
the torch ``state_dict``): three 'same'-padded 1D convolutions with ReLU (max-pooling by 2 after the
first two; dropout is the identity at inference), flatten, optional extra scalar inputs (μ), a dense
layer with ReLU and a linear dense layer. Computed in float64 from the float32 weights, in batches;
equal to the torch network (float32) to ~1e-6 on the standardised outputs.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = ["forward_standardised", "forward", "CONV_KEYS", "DENSE_KEYS"]

#: Weight names of the three convolutions and the two dense layers.
CONV_KEYS = ("features.0", "features.3", "features.6")
DENSE_KEYS = ("head.1", "head.3")


def _conv_relu(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """'same' 1D convolution (cross-correlation, as torch) + ReLU: x (n, cin, L), w (cout, cin, k)."""
    n, cin, L = x.shape
    cout, _, k = w.shape
    p = k // 2
    xp = np.pad(x, ((0, 0), (0, 0), (p, p)))
    win = sliding_window_view(xp, k, axis=2)                       # (n, cin, L, k)
    cols = win.transpose(0, 2, 1, 3).reshape(n * L, cin * k)       # im2col: one matrix product
    y = cols @ w.reshape(cout, cin * k).T                          # (n·L, cout)
    y += b
    np.maximum(y, 0.0, out=y)
    return np.ascontiguousarray(y.reshape(n, L, cout).transpose(0, 2, 1))


def _pool2(x: np.ndarray) -> np.ndarray:
    n, c, L = x.shape
    h = L // 2
    return x[:, :, :2 * h].reshape(n, c, h, 2).max(axis=3)


def forward_standardised(weights: dict, x: np.ndarray, extra: np.ndarray | None = None,
                         batch: int = 4096) -> np.ndarray:
    """Standardised network outputs.

    Parameters
    ----------
    weights : dict of name → ndarray
        The network's weights (``features.0.weight`` …, ``stokes_weights``).
    x : ndarray (n, 4, nλ)
        Normalised Stokes profiles.
    extra : ndarray (n, n_extra), optional
        Extra scalar inputs (μ) for networks that take them.
    batch : int
        Pixels per batch (memory).

    Returns
    -------
    ndarray (n, n_out), float64
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 3 or x.shape[1] != 4:
        raise ValueError(f"CNN input must be (n, 4, nwav), got {x.shape}")
    W = {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}
    sw = W["stokes_weights"][None, :, None]
    w1 = W[DENSE_KEYS[0] + ".weight"]
    n_flat_conv = W[CONV_KEYS[2] + ".weight"].shape[0] * ((x.shape[2] // 2) // 2)
    n_extra = w1.shape[1] - n_flat_conv
    if n_extra < 0:
        raise ValueError(f"the network expects {w1.shape[1]} flattened features; inputs with {x.shape[2]} "
                         f"wavelengths give {n_flat_conv}")
    if n_extra:
        if extra is None:
            raise ValueError(f"this network takes {n_extra} extra input(s) (mu)")
        extra = np.asarray(extra, dtype=np.float64).reshape(x.shape[0], n_extra)
    out = np.empty((x.shape[0], W[DENSE_KEYS[1] + ".weight"].shape[0]))
    for i in range(0, x.shape[0], batch):
        h = x[i:i + batch] * sw
        for j, key in enumerate(CONV_KEYS):
            h = _conv_relu(h, W[key + ".weight"], W[key + ".bias"])
            if j < 2:
                h = _pool2(h)
        h = h.reshape(h.shape[0], -1)
        if n_extra:
            h = np.concatenate([h, extra[i:i + batch]], axis=1)
        h = np.maximum(h @ w1.T + W[DENSE_KEYS[0] + ".bias"], 0.0)
        out[i:i + batch] = h @ W[DENSE_KEYS[1] + ".weight"].T + W[DENSE_KEYS[1] + ".bias"]
    return out


def forward(weights: dict, x: np.ndarray, extra: np.ndarray | None = None, batch: int = 4096) -> np.ndarray:
    """Table-2-scaled outputs: the standardised outputs × ``out_std`` + ``out_mean``."""
    z = forward_standardised(weights, x, extra, batch)
    return z * np.asarray(weights["out_std"], np.float64) + np.asarray(weights["out_mean"], np.float64)
