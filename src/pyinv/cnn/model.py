""":class:`CNNModel`: the trained CNN of Gafeira et al. (2021, Table 1) as plain weights with everything
needed to use it safely (wavelength grid, lines, normalisation, node positions, μ handling, provenance).

Prediction is numpy only (:mod:`pyinv.cnn.forward`); PyTorch (the ``[train]`` extra) is imported only to
train (:attr:`CNNModel.net` builds the torch network of :mod:`pyinv.cnn.torch_net` on first use).

Outputs (:data:`OUTPUTS`), each at the ten :data:`pyinv.cnn.nodes.NODES` (log τ = 1.0 … −3.5), scaled as
the paper's Table 2: T / 20 000 K, vlos / 3·10⁵ cm/s, B / 6000 G, inclination γ / 180°, vmic / 3·10⁵ cm/s;
plus one macroturbulence value / 3 km/s (an extension: the assisted inversion starts from it).

**Azimuth representation.** Instead of φ / 360° the network predicts ``cos 2φ`` and ``sin 2φ`` (ten nodes
each). The Zeeman effect only fixes φ modulo 180°, and φ/360° is discontinuous at the wrap: a network
regressing it learns averages of 10° and 170° (= 90°, the worst answer). (cos 2φ, sin 2φ) is continuous
and unique modulo 180°; φ = ½ atan2(sin 2φ, cos 2φ) ∈ [0°, 180°).

**μ.** A model with ``meta['mu_input']`` true takes the heliocentric cosine as an extra input beside the
flattened convolution features (one network for μ = 0.3 … 1); older models have none and record the μ
range they were trained on (``meta['mu_range']``).

Internally the last layer predicts standardised values (per-output mean and standard deviation of the
training targets, stored as ``out_mean`` / ``out_std``) so that every output weighs alike in the loss.
"""
from __future__ import annotations

import copy
import datetime as _dt
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .fileformat import FORMAT, FORMAT_VERSION, read_model_file, write_model_file
from .nodes import NODES

__all__ = ["CNNModel", "OUTPUTS", "SCALES", "FORMAT", "FORMAT_VERSION"]

#: Physical outputs, ten nodes each, in this order, then "macro" (one value).
OUTPUTS = ("T", "vlos", "B", "gamma", "azi_cos2", "azi_sin2", "vmic")
#: Output scaling (Table 2; cos 2φ, sin 2φ unscaled; macro in km/s).
SCALES = {"T": 2.0e4, "vlos": 3.0e5, "B": 6.0e3, "gamma": 180.0, "azi_cos2": 1.0, "azi_sin2": 1.0,
          "vmic": 3.0e5, "macro": 3.0}
# FORMAT, FORMAT_VERSION: defined by pyinv.cnn.fileformat (the file format), re-exported here.


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
    meta : dict
        ``offset_mA``, ``line_index``, ``wavelength`` (the wavelength grid the network expects),
        ``lines`` (index, element, ion, wavelength of each line of the grid), ``normalisation``
        (how the input is normalised and weighted), ``node_log_tau``, ``outputs`` and ``scales``,
        ``architecture``, ``mu_input`` / ``mu_range``, ``name`` / ``instrument`` (catalogue models),
        ``provenance`` (training data, configuration, epochs, losses, times, versions).
    weights : dict of name → ndarray (float32)
        The network's parameters and buffers (:meth:`weights` copies them out of the torch network
        while one is attached).
    """

    def __init__(self, weights: dict | None, meta: dict, net: Any = None):
        self._weights = None if weights is None else {k: np.asarray(v, dtype=np.float32) for k, v in weights.items()}
        self._net = net
        self.meta = meta
        if self._weights is None and self._net is None:
            raise ValueError("CNNModel needs weights or a torch network")

    # ---------------------------------------------------------------- construction
    @classmethod
    def new(cls, grid, lines, *, filters=(32, 32, 16), kernels=(7, 5, 3), dropout: float = 0.15,
            stokes_weights=(1.0, 1.0, 1.0, 5.0), node_log_tau=None, seed: int = 0, mu_input: bool = False,
            mu_range: Sequence[float] = (1.0, 1.0)) -> "CNNModel":
        """An untrained network for ``grid`` (pyinv.WavelengthGrid) and ``lines`` (needs torch)."""
        import torch

        from .torch_net import StokesCNN
        xn = NODES if node_log_tau is None else np.asarray(node_log_tau, dtype=np.float64)
        n_out = len(OUTPUTS) * xn.size + 1
        torch.manual_seed(int(seed))
        net = StokesCNN(grid.nwav, n_out, filters=filters, kernels=kernels, dropout=dropout,
                        stokes_weights=stokes_weights, n_extra=1 if mu_input else 0)
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
            "mu_input": bool(mu_input),
            "mu_range": [float(mu_range[0]), float(mu_range[1])],
            "architecture": {"nwav": int(grid.nwav), "n_out": int(n_out), "filters": [int(f) for f in filters],
                             "kernels": [int(k) for k in kernels], "dropout": float(dropout),
                             "n_extra": 1 if mu_input else 0},
            "provenance": {"created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                           "pyinv_version": __version__, "torch_version": str(torch.__version__)},
        }
        return cls(None, meta, net=net)

    # ---------------------------------------------------------------- weights / torch network
    @property
    def weights(self) -> dict[str, np.ndarray]:
        """name → float32 array (from the attached torch network when there is one)."""
        if self._net is not None:
            from .torch_net import net_weights
            return net_weights(self._net)
        return self._weights  # type: ignore[return-value]

    @property
    def net(self):
        """The torch network (built from the weights on first use; needs torch, ``pip install "pyinv[train]"``)."""
        if self._net is None:
            try:
                from .torch_net import build_net
            except ImportError as exc:
                raise ImportError("the torch network of a CNN model needs PyTorch (pip install \"pyinv[train]\"); "
                                  "prediction does not") from exc
            self._net = build_net(self.meta["architecture"], self.meta["normalisation"]["stokes_weights"],
                                  self._weights)
        return self._net

    def detach_net(self) -> None:
        """Copy the torch network's weights into the plain arrays and drop the network."""
        if self._net is not None:
            self._weights = self.weights
            self._net = None

    @property
    def n_out(self) -> int:
        return int(self.meta["architecture"]["n_out"])

    @property
    def mu_input(self) -> bool:
        return bool(self.meta.get("mu_input", False))

    @property
    def out_mean(self) -> np.ndarray:
        return np.asarray(self.weights["out_mean"], dtype=np.float64)

    @property
    def out_std(self) -> np.ndarray:
        return np.asarray(self.weights["out_std"], dtype=np.float64)

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
        return CNNModel(copy.deepcopy(self.weights), copy.deepcopy(self.meta))

    def __repr__(self) -> str:
        p = self.provenance
        nparam = sum(int(v.size) for k, v in self.weights.items()
                     if k not in ("out_mean", "out_std", "stokes_weights"))
        name = self.meta.get("name")
        return (f"CNNModel({name + ', ' if name else ''}nwav={self.nwav}, outputs={len(self.meta['outputs'])}x, "
                f"params={nparam}, mu_input={self.mu_input}, trained_on={p.get('training_pixels', 'untrained')})")

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
    def _mu_extra(self, n: int, mu: Any) -> np.ndarray | None:
        if not self.mu_input:
            return None
        m = np.broadcast_to(np.asarray(1.0 if mu is None else mu, dtype=np.float64), (n,))
        if not (np.isfinite(m).all() and (m > 0).all() and (m <= 1).all()):
            raise ValueError("mu must be in (0, 1]")
        return m.reshape(n, 1)

    def predict_standardised(self, x: np.ndarray, mu: Any = None, batch: int = 4096) -> np.ndarray:
        """Standardised network outputs (n, n_out), numpy (no torch), for normalised inputs ``x`` (n, 4, nλ)
        and the heliocentric cosine ``mu`` (scalar or (n,); used by models with a μ input)."""
        from .forward import forward_standardised
        x = np.asarray(x)
        if x.ndim != 3 or x.shape[1:] != (4, self.nwav):
            raise ValueError(f"CNN input must be (n, 4, {self.nwav}), got {x.shape}")
        return forward_standardised(self.weights, x, self._mu_extra(x.shape[0], mu), batch)

    def predict_scaled(self, x: np.ndarray, mu: Any = None, batch: int = 4096) -> np.ndarray:
        """Network outputs (Table-2-scaled, float32) for normalised inputs ``x`` (n, 4, nλ); numpy only."""
        z = self.predict_standardised(x, mu, batch)
        return (z * self.out_std + self.out_mean).astype(np.float32)

    def predict_torch(self, x: np.ndarray, mu: Any = None) -> np.ndarray:
        """Standardised outputs from the torch network (float64 copy; for checks against the numpy pass)."""
        import torch
        x = np.ascontiguousarray(x, dtype=np.float32)
        extra = self._mu_extra(x.shape[0], mu)
        net = self.net
        net.eval()
        with torch.no_grad():
            e = None if extra is None else torch.from_numpy(extra.astype(np.float32))
            return net.forward_standardised(torch.from_numpy(x), e).numpy().astype(np.float64)

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
        """Write the weights and metadata as a plain ``.npz`` file (see :func:`pyinv.cnn.save_model`)."""
        write_model_file(self.weights, self.meta, path)

    @classmethod
    def load(cls, path, *, grid=None, lines=None) -> "CNNModel":
        """Read a model written by :meth:`save` (``.npz``, or a version-1 torch file when torch is installed);
        with ``grid``/``lines`` also check that they fit (see :func:`pyinv.cnn.load_model`)."""
        p = Path(path)
        model = cls(*read_model_file(p))
        if grid is not None or lines is not None:
            model.check_compatible(grid, lines, what=f"data for {p.name}")
        return model
