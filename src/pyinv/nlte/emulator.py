"""Learned departure coefficients (issue 19): a network that maps a model column to log₁₀ b of the levels of
an NLTE atom, evaluated in numpy (torch only for training, :mod:`pyinv.nlte.emulator_train`).

Input: the whole column on the emulator's fixed log τ₅₀₀ grid (:data:`pyinv.nlte.columns.LOG_TAU`, 1.0 …
−5.3) — NLTE is non-local, the b at one depth depend on the radiation field from everywhere — as four
standardised profiles: T [K], log₁₀ P_e [dyn cm⁻²], v_mic [km s⁻¹] and v_LOS [km s⁻¹]. P_e (rather than
n_e) because it is the model variable pyinv's models carry; with T it fixes n_e = P_e/kT and, through the
equation of state, the hydrogen density that sets the collision rates. The field is not an input: the
backends solve the statistical equilibrium field-free (Lightweaver's ``iterate_ctx_se``; RH's default), so
b does not depend on it. Models on other grids are interpolated onto the emulator's grid (linear in log τ,
held constant beyond its ends) and the predicted log b back onto the model's grid.

Output: log₁₀ b of every level of the atom (Ca II: 5 bound levels and the continuum) on the same grid;
:meth:`DepartureEmulator.departures` takes the lower and upper level of each mapped line
(:func:`pyinv.nlte.level_map`).

Network: a multilayer perceptron (SiLU hidden layers) on the standardised inputs, predicting standardised
log b. File format (version 1): a plain ``.npz`` with ``meta_json`` (format, version, name, atom, levels,
grid, architecture, training provenance and held-out scores) and float32 weights ``w:layers.<i>.weight``
(out, in), ``w:layers.<i>.bias``, ``w:in_mean``, ``w:in_std``, ``w:out_mean``, ``w:out_std``.

Catalogue (:data:`EMULATORS`): ``lw-caii`` — Ca II (Lightweaver's ``CaII_atom``, PRD off, hydrogen from the
model), trained on the columns of :mod:`pyinv.nlte.columns`, packaged as ``nlte_emulator_caii.npz``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .departures import Departures

__all__ = ["FORMAT", "FORMAT_VERSION", "INPUTS", "DepartureEmulator", "EmulatorEntry", "EMULATORS",
           "pretrained_emulator", "emulator_path", "column_features", "features_from_profiles", "write_emulator_file", "read_emulator_file"]

FORMAT = "pyinv-departure-emulator"
FORMAT_VERSION = 1
#: The input profiles, in order.
INPUTS = ("T", "logPe", "vmic_kms", "vlos_kms")


@dataclass(frozen=True)
class EmulatorEntry:
    """A catalogue emulator: name, atom, the packaged file, the recipe (:mod:`pyinv.nlte.emulator_train`)
    and the backend configuration its training columns came from."""

    name: str
    atom: str
    packaged: str
    recipe: str
    backend: str
    description: str


EMULATORS: dict[str, EmulatorEntry] = {
    "lw-caii": EmulatorEntry("lw-caii", "CaII", "nlte_emulator_caii.npz", "lw-caii", "lightweaver",
                             "Ca II levels from Lightweaver (CaII_atom, PRD off, hydrogen from the model), "
                             "FAL A/C/F/P-like perturbed columns on log tau 1.0 .. -5.3"),
}
#: Default emulator of ``departures="emulated"``.
DEFAULT_EMULATOR = "lw-caii"


def _interp_const(x_new: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Linear interpolation along the last axis of ``y`` (x in any order), constant beyond the ends."""
    o = np.argsort(x)
    xs, ys = np.asarray(x, dtype=np.float64)[o], np.asarray(y, dtype=np.float64)[..., o]
    flat = ys.reshape(-1, xs.size)
    out = np.array([np.interp(x_new, xs, row) for row in flat])
    return out.reshape(ys.shape[:-1] + (np.size(x_new),))


def column_features(atm: Any, log_tau: np.ndarray) -> np.ndarray:
    """The emulator's input (4, ndep) of one pyinv Atmosphere on the grid ``log_tau``: T [K], log₁₀ P_e,
    v_mic [km s⁻¹], v_LOS [km s⁻¹] (module docstring).

    Raises
    ------
    ValueError
        A stack of models, non-finite or non-positive T or P_e, or non-finite velocities.
    """
    if getattr(atm, "stacked", False):
        raise ValueError("the emulator takes one model, not a stack")
    lt = np.asarray(atm.log_tau, dtype=np.float64)
    T = np.asarray(atm.T, dtype=np.float64)
    Pe = np.asarray(atm.Pe, dtype=np.float64)
    vmic = np.broadcast_to(np.asarray(atm.vmic, dtype=np.float64), lt.shape)
    vlos = np.broadcast_to(np.asarray(atm.vlos, dtype=np.float64), lt.shape)
    if not (np.all(np.isfinite(T)) and np.all(T > 0) and np.all(np.isfinite(Pe)) and np.all(Pe > 0)):
        raise ValueError("the emulator needs finite, positive T and Pe")
    if not (np.all(np.isfinite(vmic)) and np.all(np.isfinite(vlos))):
        raise ValueError("the emulator needs finite vmic and vlos")
    return _interp_const(np.asarray(log_tau, dtype=np.float64), lt, features_from_profiles(T, Pe, vmic, vlos))


def features_from_profiles(T, Pe, vmic, vlos) -> np.ndarray:
    """Stack (..., 4, ndep) of T [K], log₁₀ P_e, v_mic and v_LOS [km s⁻¹] from profiles (..., ndep) in
    pyinv's units (K, dyn cm⁻², cm s⁻¹, cm s⁻¹)."""
    return np.stack([np.asarray(T, dtype=np.float64), np.log10(np.asarray(Pe, dtype=np.float64)),
                     np.asarray(vmic, dtype=np.float64) * 1e-5, np.asarray(vlos, dtype=np.float64) * 1e-5], axis=-2)


def _silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-np.clip(x, -60.0, 60.0)))


class DepartureEmulator:
    """A trained departure-coefficient emulator (module docstring); numpy only.

    Attributes
    ----------
    meta : dict
        Name, version, atom, levels, grid, architecture, provenance.
    log_tau : ndarray (ndep,)
        The input/output grid (deepest first).
    """

    def __init__(self, weights: dict[str, np.ndarray], meta: dict):
        self.meta = dict(meta)
        self.log_tau = np.asarray(meta["log_tau"], dtype=np.float64)
        self.nlevels = int(meta["nlevels"])
        nl = int(meta["architecture"]["layers"])
        self._layers = [(np.asarray(weights[f"layers.{i}.weight"], dtype=np.float64),
                         np.asarray(weights[f"layers.{i}.bias"], dtype=np.float64)) for i in range(nl)]
        self._in = (np.asarray(weights["in_mean"], dtype=np.float64), np.asarray(weights["in_std"], dtype=np.float64))
        self._out = (np.asarray(weights["out_mean"], dtype=np.float64),
                     np.asarray(weights["out_std"], dtype=np.float64))

    def __repr__(self) -> str:
        return f"DepartureEmulator({self.name!r}, version={self.version!r})"

    @property
    def name(self) -> str:
        return str(self.meta.get("name", "?"))

    @property
    def version(self) -> str:
        return str(self.meta.get("version", "?"))

    @property
    def atom(self) -> str:
        return str(self.meta["atom"])

    def provenance(self) -> dict:
        """Name, version, atom, backend and file of this emulator (for results' provenance)."""
        return {"name": self.name, "version": self.version, "atom": self.atom,
                "backend": self.meta.get("backend"), "file": self.meta.get("loaded_from")}

    def predict_features(self, x: np.ndarray) -> np.ndarray:
        """log₁₀ b (n, nlevels, ndep) on :attr:`log_tau` from features (n, 4, ndep) (:func:`column_features`)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim == 2:
            return self.predict_features(x[None])[0]
        if x.ndim != 3 or x.shape[1:] != (len(INPUTS), self.log_tau.size):
            raise ValueError(f"features must have shape (n, {len(INPUTS)}, {self.log_tau.size}), got {x.shape}")
        h = (x.reshape(x.shape[0], -1) - self._in[0]) / self._in[1]
        for i, (w, b) in enumerate(self._layers):
            h = h @ w.T + b
            if i < len(self._layers) - 1:
                h = _silu(h)
        y = h * self._out[1] + self._out[0]
        return y.reshape(x.shape[0], self.nlevels, self.log_tau.size)

    def log_b(self, atm: Any) -> np.ndarray:
        """log₁₀ b (nlevels, ndep) of one pyinv Atmosphere, on the model's own log τ grid."""
        y = self.predict_features(column_features(atm, self.log_tau))
        return _interp_const(np.asarray(atm.log_tau, dtype=np.float64), self.log_tau, y)

    def departures(self, atm: Any, lines: Sequence[Any]) -> Departures:
        """:class:`~pyinv.nlte.Departures` of the mapped lines ``lines`` (:class:`pyinv.nlte.NlteLine`, as a
        backend's ``lines``) whose atom is this emulator's, on the model's grid.

        Raises
        ------
        ValueError
            No line of this emulator's atom, or a level the emulator does not have.
        """
        mine = [ln for ln in lines if ln.atom == self.atom]
        if not mine:
            raise ValueError(f"emulator {self.name!r} predicts {self.atom} levels; none of the mapped lines "
                             f"({', '.join(ln.atom for ln in lines) or 'none'}) is of that atom")
        for ln in mine:
            if max(ln.lower, ln.upper) >= self.nlevels:
                raise ValueError(f"emulator {self.name!r} has {self.nlevels} levels, line {ln.index} needs "
                                 f"level {max(ln.lower, ln.upper)}")
        b = 10.0 ** self.log_b(atm)
        lt = np.asarray(atm.log_tau, dtype=np.float64)
        return Departures(lt, [ln.index for ln in mine], b[[ln.lower for ln in mine]], b[[ln.upper for ln in mine]])

    @classmethod
    def load(cls, path: str | os.PathLike) -> "DepartureEmulator":
        """Read an emulator file (:func:`read_emulator_file`)."""
        w, meta = read_emulator_file(path)
        return cls(w, meta)


def write_emulator_file(weights: dict[str, np.ndarray], meta: dict, path: str | os.PathLike) -> Path:
    """Write weights (name → array, stored float32) and metadata as a plain ``.npz`` (module docstring)."""
    from ..cnn.fileformat import write_archive

    meta = {k: v for k, v in meta.items() if k != "loaded_from"}
    meta["format"], meta["format_version"] = FORMAT, FORMAT_VERSION
    return write_archive(weights, meta, path)


def read_emulator_file(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
    """Weights and metadata of an emulator file; ``meta["loaded_from"]`` is set.

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        Not an emulator file, a newer format version, or weights that do not match the architecture.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"emulator file {p} does not exist")
    from ..cnn.fileformat import read_archive

    weights, meta = read_archive(p, "pyinv departure-emulator", FORMAT, FORMAT_VERSION)
    a = meta["architecture"]
    nin, nout = len(INPUTS) * len(meta["log_tau"]), int(meta["nlevels"]) * len(meta["log_tau"])
    sizes = [nin, *[int(h) for h in a["hidden"]], nout]
    if int(a["layers"]) != len(sizes) - 1:
        raise ValueError(f"{p}: {a['layers']} layers recorded for hidden sizes {a['hidden']}")
    expect = {"in_mean": (nin,), "in_std": (nin,), "out_mean": (nout,), "out_std": (nout,)}
    for i in range(len(sizes) - 1):
        expect[f"layers.{i}.weight"] = (sizes[i + 1], sizes[i])
        expect[f"layers.{i}.bias"] = (sizes[i + 1],)
    for k, shp in expect.items():
        if k not in weights or tuple(weights[k].shape) != shp:
            raise ValueError(f"{p}: weight {k!r} missing or not of shape {shp}")
    meta["loaded_from"] = os.fspath(p)
    return weights, meta


def emulator_path(name: str | None = None) -> Path:
    """The file of catalogue emulator ``name`` (default ``lw-caii``): ``$PYINV_EMULATOR_DIR/<name>.npz`` when
    that variable is set and the file exists, else the packaged file."""
    key = DEFAULT_EMULATOR if name is None else str(name)
    if key not in EMULATORS:
        raise ValueError(f"unknown departure emulator {name!r}; the catalogue has {', '.join(EMULATORS)}")
    e = EMULATORS[key]
    env = os.environ.get("PYINV_EMULATOR_DIR")
    if env and (Path(env) / f"{e.name}.npz").is_file():
        return Path(env) / f"{e.name}.npz"
    from ..defaults import data_path
    return Path(data_path(e.packaged))


_LOADED: dict[str, DepartureEmulator] = {}


def pretrained_emulator(name: str | None = None) -> DepartureEmulator:
    """A catalogue emulator (numpy only; loaded once per process and file)."""
    p = str(emulator_path(name))
    if p not in _LOADED:
        _LOADED[p] = DepartureEmulator.load(p)
    return _LOADED[p]
