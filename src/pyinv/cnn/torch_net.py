"""The CNN of Gafeira et al. (2021, Table 1) in PyTorch — needed only for training (``pip install
"pyinv[train]"``); prediction uses the numpy forward pass of :mod:`pyinv.cnn.forward` on the same weights.

Architecture (per pixel, the four Stokes profiles as a 4-channel 1D signal along wavelength)::

    input (4, nλ), Stokes / quiet-Sun continuum, × stokes_weights (V × 5)
    Conv1D k=7, ReLU → MaxPool 2 → Conv1D k=5, ReLU → MaxPool 2 → Conv1D k=3, ReLU → Dropout 0.15
    → Flatten [+ μ when the model takes μ as an input] → Dense 4·nλ, ReLU → Dense n_out (linear)

Convolutions use 'same' padding (odd kernels). The weight names of :meth:`StokesCNN.state_dict` are the
names of the plain weight files (:mod:`pyinv.cnn.io`).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["StokesCNN", "build_net", "net_weights"]


class StokesCNN(nn.Module):
    """Table 1 of Gafeira et al. (2021); see the module docstring.

    Parameters
    ----------
    nwav, n_out : int
        Wavelength points of the input, number of outputs.
    filters, kernels : three ints each
        Filters and (odd) kernel sizes of the three convolutions.
    dropout : float
    stokes_weights : four floats
        Input weights of I, Q, U, V (paper: V × 5).
    n_extra : int
        Scalar inputs appended to the flattened features before the first dense layer (1 = μ).
    """

    def __init__(self, nwav: int, n_out: int, filters: Sequence[int] = (32, 32, 16),
                 kernels: Sequence[int] = (7, 5, 3), dropout: float = 0.15,
                 stokes_weights: Sequence[float] = (1.0, 1.0, 1.0, 5.0), n_extra: int = 0):
        super().__init__()
        if len(filters) != 3 or len(kernels) != 3:
            raise ValueError("filters and kernels need three entries each")
        if any(int(k) % 2 == 0 for k in kernels):
            raise ValueError(f"kernel sizes must be odd ('same' padding), got {list(kernels)}")
        self.nwav, self.n_out, self.n_extra = int(nwav), int(n_out), int(n_extra)
        f1, f2, f3 = (int(f) for f in filters)
        k1, k2, k3 = (int(k) for k in kernels)
        self.features = nn.Sequential(
            nn.Conv1d(4, f1, k1, padding=k1 // 2), nn.ReLU(), nn.MaxPool1d(2),
            nn.Conv1d(f1, f2, k2, padding=k2 // 2), nn.ReLU(), nn.MaxPool1d(2),
            nn.Conv1d(f2, f3, k3, padding=k3 // 2), nn.ReLU(), nn.Dropout(dropout), nn.Flatten())
        nflat = f3 * (self.nwav // 4) + self.n_extra
        self.head = nn.Sequential(nn.Identity(), nn.Linear(nflat, 4 * self.nwav), nn.ReLU(),
                                  nn.Linear(4 * self.nwav, self.n_out))
        self.register_buffer("stokes_weights", torch.tensor(list(stokes_weights), dtype=torch.float32))
        self.register_buffer("out_mean", torch.zeros(self.n_out))
        self.register_buffer("out_std", torch.ones(self.n_out))

    def forward_standardised(self, x: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        """Standardised outputs for inputs ``x`` (n, 4, nλ) and, with ``n_extra`` > 0, ``extra`` (n, n_extra)."""
        h = self.features(x * self.stokes_weights[None, :, None])
        if self.n_extra:
            if extra is None:
                raise ValueError(f"this network takes {self.n_extra} extra input(s) (mu)")
            h = torch.cat([h, extra.reshape(h.shape[0], self.n_extra).to(h.dtype)], dim=1)
        return self.head(h)

    def forward(self, x: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        """Table-2-scaled outputs."""
        return self.forward_standardised(x, extra) * self.out_std + self.out_mean


def build_net(arch: dict, stokes_weights: Sequence[float], weights: dict | None = None) -> StokesCNN:
    """A :class:`StokesCNN` from a model's ``meta['architecture']``, with ``weights`` (name → array) loaded."""
    net = StokesCNN(arch["nwav"], arch["n_out"], filters=arch["filters"], kernels=arch["kernels"],
                    dropout=arch["dropout"], stokes_weights=stokes_weights, n_extra=int(arch.get("n_extra", 0)))
    if weights is not None:
        sd = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in weights.items()}
        try:
            net.load_state_dict(sd)
        except RuntimeError as exc:
            raise ValueError(f"the weights do not match the recorded architecture ({exc})") from None
    net.eval()
    return net


def net_weights(net: StokesCNN) -> dict[str, np.ndarray]:
    """The network's parameters and buffers as float32 numpy arrays (copies)."""
    return {k: v.detach().cpu().numpy().astype(np.float32, copy=True) for k, v in net.state_dict().items()}
