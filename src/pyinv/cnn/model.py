"""The CNN of Gafeira et al. (2021, Table 1) in PyTorch, and :class:`CNNModel`, the trained network with
everything needed to use it safely (wavelength grid, lines, normalisation, node positions, provenance).

Architecture (per pixel, the four Stokes profiles as a 4-channel 1D signal along wavelength)::

    input (4, nλ), Stokes / quiet-Sun continuum, × stokes_weights (V × 5)
    Conv1D k=7, ReLU → MaxPool 2 → Conv1D k=5, ReLU → MaxPool 2 → Conv1D k=3, ReLU → Dropout 0.15
    → Dense 4·nλ, ReLU → Dense n_out (linear)

Convolutions use 'same' padding; the filter counts (default 32, 32, 16) are not given by the paper and are
chosen to keep the packaged model under 2 MB.

Outputs (:data:`OUTPUTS`), each at the ten :data:`pyinv.cnn.nodes.NODES` (log τ = 1.0 … −3.5), scaled as
the paper's Table 2: T / 20 000 K, vlos / 3·10⁵ cm/s, B / 6000 G, inclination γ / 180°, vmic / 3·10⁵ cm/s;
plus one macroturbulence value / 3 km/s (an extension: the assisted inversion starts from it).

**Azimuth representation.** Instead of φ / 360° the network predicts ``cos 2φ`` and ``sin 2φ`` (ten nodes
each). The Zeeman effect only fixes φ modulo 180°, and φ/360° is discontinuous at the wrap: a network
regressing it learns averages of 10° and 170° (= 90°, the worst answer). (cos 2φ, sin 2φ) is continuous
and unique modulo 180°; φ = ½ atan2(sin 2φ, cos 2φ) ∈ [0°, 180°).

Internally the last layer predicts standardised values (per-output mean and standard deviation of the
training targets, stored as buffers) so that every output weighs alike in the loss; :meth:`forward`
returns Table-2-scaled values.
"""
from __future__ import annotations

import copy
import datetime as _dt
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from .nodes import NODES

__all__ = ["StokesCNN", "CNNModel", "OUTPUTS", "SCALES", "FORMAT", "FORMAT_VERSION"]

#: Physical outputs, ten nodes each, in this order, then "macro" (one value).
OUTPUTS = ("T", "vlos", "B", "gamma", "azi_cos2", "azi_sin2", "vmic")
#: Output scaling (Table 2; cos 2φ, sin 2φ unscaled; macro in km/s).
SCALES = {"T": 2.0e4, "vlos": 3.0e5, "B": 6.0e3, "gamma": 180.0, "azi_cos2": 1.0, "azi_sin2": 1.0,
          "vmic": 3.0e5, "macro": 3.0}
FORMAT = "pyinv-cnn"
FORMAT_VERSION = 1


class StokesCNN(nn.Module):
    """Table 1 of Gafeira et al. (2021); see the module docstring."""

    def __init__(self, nwav: int, n_out: int, filters: Sequence[int] = (32, 32, 16),
                 kernels: Sequence[int] = (7, 5, 3), dropout: float = 0.15,
                 stokes_weights: Sequence[float] = (1.0, 1.0, 1.0, 5.0)):
        super().__init__()
        if len(filters) != 3 or len(kernels) != 3:
            raise ValueError("filters and kernels need three entries each")
        self.nwav, self.n_out = int(nwav), int(n_out)
        f1, f2, f3 = (int(f) for f in filters)
        k1, k2, k3 = (int(k) for k in kernels)
        self.features = nn.Sequential(
            nn.Conv1d(4, f1, k1, padding=k1 // 2), nn.ReLU(), nn.MaxPool1d(2),
            nn.Conv1d(f1, f2, k2, padding=k2 // 2), nn.ReLU(), nn.MaxPool1d(2),
            nn.Conv1d(f2, f3, k3, padding=k3 // 2), nn.ReLU(), nn.Dropout(dropout))
        nflat = f3 * (self.nwav // 4)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(nflat, 4 * self.nwav), nn.ReLU(),
                                  nn.Linear(4 * self.nwav, self.n_out))
        self.register_buffer("stokes_weights", torch.tensor(list(stokes_weights), dtype=torch.float32))
        self.register_buffer("out_mean", torch.zeros(self.n_out))
        self.register_buffer("out_std", torch.ones(self.n_out))

    def forward_standardised(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x * self.stokes_weights[None, :, None]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_standardised(x) * self.out_std + self.out_mean


def _lines_meta(lines, grid) -> list[dict]:
    out = []
    for k in sorted(set(int(i) for i in np.asarray(grid.line_index))):
        ln = lines.by_index(k)
        out.append({"index": k, "element": str(ln.element), "ion": int(ln.ion),
                    "wavelength": float(ln.wavelength)})
    return out


class CNNModel:
    """A trained CNN with its metadata.

    Attributes
    ----------
    net : StokesCNN
    meta : dict
        ``offset_mA``, ``line_index``, ``wavelength`` (the wavelength grid the network expects),
        ``lines`` (index, element, ion, wavelength of each line of the grid), ``normalisation``
        (how the input is normalised and weighted), ``node_log_tau``, ``outputs`` and ``scales``,
        ``architecture``, ``provenance`` (training data, configuration, epochs, losses, times, versions).
    """

    def __init__(self, net: StokesCNN, meta: dict):
        self.net = net
        self.meta = meta

    # ---------------------------------------------------------------- construction
    @classmethod
    def new(cls, grid, lines, *, filters=(32, 32, 16), kernels=(7, 5, 3), dropout: float = 0.15,
            stokes_weights=(1.0, 1.0, 1.0, 5.0), node_log_tau=None, seed: int = 0) -> "CNNModel":
        """An untrained network for ``grid`` (pyinv.WavelengthGrid) and ``lines``."""
        xn = NODES if node_log_tau is None else np.asarray(node_log_tau, dtype=np.float64)
        n_out = len(OUTPUTS) * xn.size + 1
        torch.manual_seed(int(seed))
        net = StokesCNN(grid.nwav, n_out, filters=filters, kernels=kernels, dropout=dropout,
                        stokes_weights=stokes_weights)
        from .. import __version__
        meta = {
            "format": FORMAT, "format_version": FORMAT_VERSION,
            "offset_mA": [float(v) for v in np.asarray(grid.offset_mA)],
            "line_index": [int(v) for v in np.asarray(grid.line_index)],
            "wavelength": [float(v) for v in np.asarray(grid.wavelength)],
            "lines": _lines_meta(lines, grid),
            "normalisation": {"stokes": "I, Q, U, V divided by the mean quiet-Sun continuum intensity of the map "
                                        "(pyinv.cnn.quiet_sun_continuum unless given)",
                              "stokes_weights": [float(v) for v in stokes_weights]},
            "node_log_tau": [float(v) for v in xn],
            "outputs": list(OUTPUTS) + ["macro"],
            "scales": dict(SCALES),
            "azimuth": "cos 2phi and sin 2phi (phi modulo 180 deg)",
            "architecture": {"nwav": int(grid.nwav), "n_out": int(n_out), "filters": [int(f) for f in filters],
                             "kernels": [int(k) for k in kernels], "dropout": float(dropout)},
            "provenance": {"created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                           "pyinv_version": __version__, "torch_version": str(torch.__version__)},
        }
        return cls(net, meta)

    # ---------------------------------------------------------------- properties
    @property
    def nwav(self) -> int:
        return int(self.meta["architecture"]["nwav"])

    @property
    def node_log_tau(self) -> np.ndarray:
        return np.asarray(self.meta["node_log_tau"], dtype=np.float64)

    @property
    def nnodes(self) -> int:
        return int(len(self.meta["node_log_tau"]))

    @property
    def provenance(self) -> dict:
        return self.meta.setdefault("provenance", {})

    def copy(self) -> "CNNModel":
        return CNNModel(copy.deepcopy(self.net), copy.deepcopy(self.meta))

    def __repr__(self) -> str:
        p = self.provenance
        nparam = sum(t.numel() for t in self.net.parameters())
        return (f"CNNModel(nwav={self.nwav}, outputs={len(self.meta['outputs'])}x, params={nparam}, "
                f"trained_on={p.get('training_pixels', 'untrained')})")

    # ---------------------------------------------------------------- compatibility
    def check_compatible(self, grid=None, lines=None, nwav: int | None = None, *, tolerance_mA: float | None = None,
                         what: str = "data") -> None:
        """Refuse data that the network was not trained for (ValueError with the reason).

        Checks the number of wavelengths, the offsets (within a quarter of the mean sampling step unless
        ``tolerance_mA``), the SIR line indices of the grid and the lines' wavelengths (0.01 Å) and
        species.
        """
        m = self.meta
        if nwav is not None and int(nwav) != self.nwav:
            raise ValueError(f"incompatible {what}: the CNN was trained on {self.nwav} wavelengths "
                             f"({self._describe()}), the {what} has {int(nwav)}")
        if grid is not None:
            if int(grid.nwav) != self.nwav:
                raise ValueError(f"incompatible {what}: the CNN was trained on {self.nwav} wavelengths "
                                 f"({self._describe()}), the wavelength grid has {grid.nwav}")
            off = np.asarray(grid.offset_mA, dtype=np.float64)
            ref = np.asarray(m["offset_mA"])
            step = float(np.median(np.abs(np.diff(ref)))) if ref.size > 1 else 1.0
            tol = 0.25 * step if tolerance_mA is None else float(tolerance_mA)
            dev = np.abs(off - ref)
            if dev.max() > tol:
                j = int(np.argmax(dev))
                raise ValueError(f"incompatible {what}: wavelength point {j} is at {off[j]:.2f} mA, the CNN was "
                                 f"trained with {ref[j]:.2f} mA (tolerance {tol:.2f} mA; {self._describe()})")
            li = [int(v) for v in np.asarray(grid.line_index)]
            if li != list(m["line_index"]):
                raise ValueError(f"incompatible {what}: the grid's line indices {sorted(set(li))} differ from the "
                                 f"CNN's {sorted(set(m['line_index']))} ({self._describe()})")
        if lines is not None:
            for d in m["lines"]:
                if not lines.has_index(d["index"]):
                    raise ValueError(f"incompatible {what}: line {d['index']} ({d['element']} {d['ion']} "
                                     f"{d['wavelength']:.3f} A) of the CNN is not in the line list")
                ln = lines.by_index(d["index"])
                if abs(float(ln.wavelength) - d["wavelength"]) > 0.01 or str(ln.element) != d["element"] or \
                        int(ln.ion) != d["ion"]:
                    raise ValueError(f"incompatible {what}: line {d['index']} is {ln.element} {ln.ion} "
                                     f"{float(ln.wavelength):.3f} A, the CNN was trained on {d['element']} "
                                     f"{d['ion']} {d['wavelength']:.3f} A")

    def _describe(self) -> str:
        ls = ", ".join(f"{d['element']} {d['ion']} {d['wavelength']:.1f}" for d in self.meta["lines"])
        ref = np.asarray(self.meta["offset_mA"])
        return f"{ls}; {ref.size} points {ref.min():.1f}..{ref.max():.1f} mA"

    # ---------------------------------------------------------------- evaluation
    def predict_scaled(self, x: np.ndarray, batch: int = 8192) -> np.ndarray:
        """Raw network outputs (Table-2-scaled) for normalised inputs ``x`` (n, 4, nλ)."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 3 or x.shape[1:] != (4, self.nwav):
            raise ValueError(f"CNN input must be (n, 4, {self.nwav}), got {x.shape}")
        self.net.eval()
        out = np.empty((x.shape[0], self.net.n_out), dtype=np.float32)
        with torch.no_grad():
            for i in range(0, x.shape[0], batch):
                out[i:i + batch] = self.net(torch.from_numpy(np.ascontiguousarray(x[i:i + batch]))).numpy()
        return out

    def decode(self, y: np.ndarray) -> dict[str, np.ndarray]:
        """Physical node values from scaled outputs (n, n_out): ``T``, ``vlos``, ``B``, ``gamma``,
        ``phi`` (degrees in [0, 180), from cos 2φ and sin 2φ), ``vmic`` → (n, nnodes); ``macro`` → (n,)."""
        y = np.asarray(y, dtype=np.float64)
        nn_ = self.nnodes
        d = {}
        for k, name in enumerate(OUTPUTS):
            d[name] = y[:, k * nn_:(k + 1) * nn_] * SCALES[name]
        d["phi"] = np.mod(0.5 * np.degrees(np.arctan2(d.pop("azi_sin2"), d.pop("azi_cos2"))), 180.0)
        d["macro"] = np.clip(y[:, len(OUTPUTS) * nn_] * SCALES["macro"], 0.05, None)
        return d

    @staticmethod
    def encode(nodes: dict[str, np.ndarray], macro: np.ndarray) -> np.ndarray:
        """Scaled targets (n, n_out) from physical node values (``phi`` in degrees)."""
        phi = np.radians(np.asarray(nodes["phi"], dtype=np.float64))
        cols = {**nodes, "azi_cos2": np.cos(2 * phi), "azi_sin2": np.sin(2 * phi)}
        parts = [np.asarray(cols[name], dtype=np.float64) / SCALES[name] for name in OUTPUTS]
        parts.append(np.asarray(macro, dtype=np.float64).reshape(-1, 1) / SCALES["macro"])
        return np.concatenate(parts, axis=1)

    # ---------------------------------------------------------------- save / load
    def save(self, path) -> None:
        """Write the network and its metadata (a torch file loadable with ``weights_only=True``)."""
        from .io import save_model
        save_model(self, path)

    @classmethod
    def load(cls, path, **kw) -> "CNNModel":
        """Read a model written by :meth:`save` (see :func:`pyinv.cnn.load_model`)."""
        from .io import load_model
        return load_model(path, **kw)
