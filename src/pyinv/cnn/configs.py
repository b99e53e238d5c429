"""The inversion set-ups of Gafeira et al. (2021, Table 3) as :class:`pyinv.InversionConfig`."""
from __future__ import annotations

__all__ = ["reference_config", "training_config", "assisted_config", "WEIGHTS"]

#: Stokes weights (I, Q, U, V) used by these configurations (pyinv's usual Hinode SP choice).
WEIGHTS = (1.0, 4.0, 4.0, 2.0)


def _cfg(cycles, nodes, weights, snr, mu):
    from ..config import InversionConfig
    return InversionConfig(cycles=cycles, nodes=nodes, weights=weights, snr=snr, mu=mu)


def reference_config(*, weights=WEIGHTS, snr: float = 1000.0, mu: float = 1.0):
    """Reference set: 3 cycles; T 1,3,5; v, B 1,3,3; γ, φ, vmic, macro 1."""
    return _cfg(3, {"T": (1, 3, 5), "vlos": (1, 3, 3), "B": (1, 3, 3), "gamma": 1, "phi": 1, "vmic": 1, "macro": 1},
                weights, snr, mu)


def training_config(*, weights=WEIGHTS, snr: float = 1000.0, mu: float = 1.0):
    """Training set: 3 cycles; T 1,3,5; v, B, γ, φ, vmic 1; macro free (few nodes: stable targets)."""
    return _cfg(3, {"T": (1, 3, 5), "vlos": 1, "B": 1, "gamma": 1, "phi": 1, "vmic": 1, "macro": 1},
                weights, snr, mu)


def assisted_config(*, weights=WEIGHTS, snr: float = 1000.0, mu: float = 1.0):
    """Assisted inversion: one cycle with the reference set's last-cycle nodes (T 5, v 3, B 3, γ, φ, vmic,
    macro 1)."""
    return _cfg(1, {"T": 5, "vlos": 3, "B": 3, "gamma": 1, "phi": 1, "vmic": 1, "macro": 1}, weights, snr, mu)
