"""Model atmospheres stratified in log τ₅₀₀ (SIR conventions).

An :class:`Atmosphere` holds one model (columns of shape ``(ndep,)``) or a *stack* of models that share
one log τ grid (columns of shape ``(n, ndep)``). Units are SIR's:

============  ===============================  ==========================
column        meaning                          unit
============  ===============================  ==========================
log_tau       log τ₅₀₀ (strictly decreasing)   —
T             temperature                      K
Pe            electron pressure                dyn cm⁻²
vmic          microturbulence                  cm s⁻¹
B             field strength                   G
vlos          line-of-sight velocity           cm s⁻¹ (> 0 = redshift)
gamma         inclination to the LOS           deg, 0 … 180
phi           azimuth                          deg (never wrapped)
z             geometrical height (optional)    km
Pg            gas pressure (optional)          dyn cm⁻²
rho           density (optional)               g cm⁻³
============  ===============================  ==========================

plus the depth-independent ``macro`` (macroturbulence, km s⁻¹, Gaussian σ as in SIR), ``filling``
(filling factor) and ``stray`` (stray-light fraction, percent), scalars or arrays of ``n`` for a stack.

One name per quantity (issue 18)
--------------------------------
These column and header names are the names of the quantities everywhere in pyinv: configuration node
keys, response-function keys, :meth:`pyinv.InversionResult.map` names and result attributes, FITS
extension names, keyword arguments of the public functions and the command line. Older spellings
(``inclination``, ``azimuth``, ``vmac``, ``filling2``, ``stray_percent``, ...) are still accepted, each
with a DeprecationWarning naming the canonical name, through one table, :data:`QUANTITY_ALIASES`, and
:func:`canonical_name`.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from .errors import input_errors
import numpy as np

__all__ = ["Atmosphere", "AtmosphereErrors", "COLUMNS", "DEPTH_COLUMNS", "OPTIONAL_COLUMNS", "QUANTITIES",
           "QUANTITY_ALIASES", "NAME_PLACES", "canonical_name", "deprecated_name", "QuantityDict",
           "renamed_keywords"]

#: SIR's column order of a model file (11 columns).
COLUMNS: tuple[str, ...] = ("log_tau", "T", "Pe", "vmic", "B", "vlos", "gamma", "phi", "z", "Pg", "rho")
#: The depth-dependent physical columns that are always present.
DEPTH_COLUMNS: tuple[str, ...] = ("T", "Pe", "vmic", "B", "vlos", "gamma", "phi")
#: Columns 9–11 (z [km], Pg, rho); all-zero columns are read as absent (``None``).
OPTIONAL_COLUMNS: tuple[str, ...] = ("z", "Pg", "rho")

_UNITS = {"log_tau": "", "T": "K", "Pe": "dyn cm^-2", "vmic": "cm/s", "B": "G", "vlos": "cm/s",
          "gamma": "deg", "phi": "deg", "z": "km", "Pg": "dyn cm^-2", "rho": "g cm^-3"}

# ---------------------------------------------------------------------------------- one name per quantity
#: The canonical names of the quantities of a model atmosphere (issue 18): its columns but log τ, then its
#: header values. Wherever pyinv names one of these quantities, it uses this name.
QUANTITIES: tuple[str, ...] = COLUMNS[1:] + ("macro", "filling", "stray")

#: The places where pyinv accepts a quantity's name (the ``where`` of :func:`canonical_name`), as the
#: deprecation warnings call them.
NAME_PLACES: dict[str, str] = {
    "map": "map name",                 # InversionResult.map, SyntheticMap.truth_map
    "rf": "response-function key",     # response_functions' dict, SynthesisMap.rf, synthesize_map(rf=...)
    "nodes": "node key",               # InversionConfig(nodes=, nodes2=), invert_pixel(node_positions=)
    "keyword": "keyword argument",     # invert_pixel, pyinv.invert, synthesize, response_functions
    "attribute": "attribute",          # PixelResult, InversionResult
    "fits": "FITS extension name",     # InversionResult.from_fits of files written by older pyinv
}

#: The one table of the other spellings of the quantities: ``old: (canonical, places)``. An old spelling
#: is accepted in the places (keys of :data:`NAME_PLACES`) where pyinv accepted it before issue 18, with a
#: DeprecationWarning naming the canonical name; nowhere else does pyinv translate names.
#:
#: * ``inclination``, ``azimuth`` are γ and φ, the columns ``gamma``, ``phi`` (map names and response-function
#:   keys); ``γ``, ``φ``, ``v``, ``velocity``, ``temperature``, ``field`` were map shorthands. Map names
#:   were also matched in any capitalisation (``t``, ``pe``, ``VLOS``): still accepted there, with the warning.
#: * ``vmac`` is ``macro`` (km/s, Gaussian σ as in SIR), as a node key (``InversionConfig(nodes={"macro":
#:   1})``; SIR control files keep their own text, line 22 "Invert macroturbulence 1?") and a response-function
#:   key (component 2's ``macro_2``).
#: * ``stray_percent`` is ``stray``: the stray-light fraction α in percent, as ``Atmosphere.stray`` and SIR's
#:   model-1 header (keyword, response-function key, map name, result attribute, FITS extension).
#:   ``InversionResult.stray_percent`` repeated ``InversionResult.stray`` (NaN where no stray light was
#:   mixed): results now hold ``stray`` alone, and the ``stray_percent`` extension of older files is dropped
#:   on reading (with the warning). The stray-light *profile* is ``stray_profile`` everywhere, ``pyinv.invert``
#:   included (its ``stray=`` was the profile before issue 18; a value that can only be a profile is still
#:   taken as one there, with a warning naming ``stray_profile``).
#: * ``filling2`` is ``filling`` as a keyword (``invert_pixel(filling=...)``, ``pyinv.invert``, ``synthesize``,
#:   ``response_functions``, ``pyinv invert --filling``) and as a response-function key: f₂, the filling
#:   factor of component 2, the value SIR keeps in model 2's header. It is *not* an alias on results: there
#:   ``filling`` is component 1's header (1 − f₂ with two components) and ``filling2`` component 2's (f₂), a
#:   different quantity of the per-component family ``atmospheres2``, ``macro2``, ``filling2``, ``errors2``
#:   (a PixelResult's ``atmosphere2``, ``filling2``, ``errors2``): component 2's counterparts of
#:   ``atmospheres``, ``macro``, ``filling``, ``errors``, which keep their suffix. Response functions of
#:   component 2 carry the suffix ``_2`` (``gamma_2``, ``macro_2``).
#: * Not names of these quantities, so not here: ``T_he`` (the temperature RF with P_e in hydrostatic
#:   equilibrium), the per-pixel scalars of a map (``chi2``, ``status``, ...), the engine's internal argument
#:   and buffer names (:mod:`pyinv.engine`), SIR's RF file suffixes (``.rinc``, ``.rmac``), the file names
#:   of older stores that checkpoints keep.
QUANTITY_ALIASES: dict[str, tuple[str, tuple[str, ...]]] = {
    "inclination": ("gamma", ("map", "rf")),
    "azimuth": ("phi", ("map", "rf")),
    "γ": ("gamma", ("map",)),
    "φ": ("phi", ("map",)),
    "v": ("vlos", ("map",)),
    "velocity": ("vlos", ("map",)),
    "temperature": ("T", ("map",)),
    "field": ("B", ("map",)),
    "vmac": ("macro", ("nodes", "rf")),
    "stray_percent": ("stray", ("keyword", "rf", "map", "attribute", "fits")),
    "filling2": ("filling", ("keyword", "rf")),
}
# map names in another capitalisation (the old InversionResult.map matched them case-insensitively)
_FOLDED = {**{q.lower(): q for q in QUANTITIES},
           **{a.lower(): c for a, (c, places) in QUANTITY_ALIASES.items() if "map" in places}}


def deprecated_name(old: str, new: str, where: str, *, stacklevel: int = 2) -> None:
    """Warn (DeprecationWarning) that ``old`` is an old spelling of ``new``; ``where`` is a key of
    :data:`NAME_PLACES` or any text naming the place. ``stacklevel`` as :func:`warnings.warn`'s, counted from
    the caller of this function."""
    what = NAME_PLACES.get(where, where)
    warnings.warn(f"{what} {old!r} is deprecated; use {new!r}", DeprecationWarning, stacklevel=stacklevel + 1)


def canonical_name(name: str, where: str, *, known: Any = None, stacklevel: int = 2) -> str:
    """The canonical name of ``name`` in the place ``where`` (a key of :data:`NAME_PLACES`).

    A name of :data:`QUANTITY_ALIASES` accepted there gives its canonical name with a DeprecationWarning
    (``stacklevel`` counted from the caller of this function); in ``"map"`` also a quantity's name in
    another capitalisation. Any other name comes back unchanged, without a warning (the caller decides
    whether it knows it), and so does an old spelling whose canonical name is not among ``known`` (the
    names the caller accepts) when that is given.
    """
    if where not in NAME_PLACES:
        raise ValueError(f"where must be one of {tuple(NAME_PLACES)}, got {where!r}")
    if not isinstance(name, str) or name in QUANTITIES:
        return name
    hit = QUANTITY_ALIASES.get(name)
    new = hit[0] if hit is not None and where in hit[1] else None
    if new is None and where == "map":
        new = _FOLDED.get(name.lower())
    if new is None or (known is not None and new not in known):
        return name
    deprecated_name(name, new, where, stacklevel=stacklevel + 1)
    return new


class QuantityDict(dict):
    """A dict keyed by canonical names (response functions, node counts) that also answers to the old
    spellings of :data:`QUANTITY_ALIASES` (``d["inclination"]``, ``"vmac" in d``, ``d.get("azimuth_2")``)
    with a DeprecationWarning; the suffix ``_2`` (component 2) is kept. ``place`` is the key of
    :data:`NAME_PLACES` the keys belong to."""

    def __init__(self, *args: Any, place: str = "rf", **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.place = place

    def _canonical(self, key: Any) -> Any:
        if not isinstance(key, str) or dict.__contains__(self, key):
            return key
        base, sfx = (key[:-2], "_2") if key.endswith("_2") else (key, "")
        return canonical_name(base, self.place, stacklevel=3) + sfx

    def __missing__(self, key: Any) -> Any:
        new = self._canonical(key)
        if new != key and dict.__contains__(self, new):
            return dict.__getitem__(self, new)
        raise KeyError(key)

    def __contains__(self, key: Any) -> bool:
        return dict.__contains__(self, self._canonical(key))

    def get(self, key: Any, default: Any = None) -> Any:
        return dict.get(self, self._canonical(key), default)


def renamed_keywords(fn: Callable) -> Callable:
    """Decorator: keyword arguments of ``fn`` given by an old spelling (:data:`QUANTITY_ALIASES`, place
    ``"keyword"``: ``filling2=``, ``stray_percent=``) are passed under their canonical name, with a
    DeprecationWarning; giving both spellings is a TypeError. Other unknown keywords reach ``fn`` (and
    Python's TypeError) unchanged."""
    params = inspect.signature(fn).parameters

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        for old in [k for k in kwargs if k not in params and k in QUANTITY_ALIASES]:
            new, places = QUANTITY_ALIASES[old]
            if "keyword" not in places or new not in params:
                continue
            if new in kwargs:
                raise TypeError(f"{fn.__qualname__}() got {old!r} and {new!r}, two spellings of one argument "
                                f"(use {new!r})")
            deprecated_name(old, new, f"{fn.__qualname__}() keyword argument", stacklevel=2)
            kwargs[new] = kwargs.pop(old)
        return fn(*args, **kwargs)
    return wrapper


def _as_float(name: str, value: Any) -> np.ndarray:
    try:
        return np.array(value, dtype=np.float64, copy=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"column {name!r}: cannot convert to float64 ({exc})") from None


def _where(a: np.ndarray, log_tau: np.ndarray, mask: np.ndarray) -> str:
    """Describe the first offending element of a column: model (for stacks), depth index and log τ."""
    idx = np.argwhere(mask)[0]
    if a.ndim == 2:
        m, k = int(idx[0]), int(idx[1])
        return f"model {m}, depth index {k} (log tau = {log_tau[k]:g}), value {float(a[m, k])!r}"
    k = int(idx[0])
    return f"depth index {k} (log tau = {log_tau[k]:g}), value {float(a[k])!r}"


def _check_log_tau(log_tau: np.ndarray) -> None:
    if log_tau.ndim != 1 or log_tau.size < 1:
        raise ValueError(f"column 'log_tau' must be one-dimensional and non-empty, got shape {log_tau.shape}")
    bad = ~np.isfinite(log_tau)
    if bad.any():
        k = int(np.argmax(bad))
        raise ValueError(f"column 'log_tau' is not finite at depth index {k} ({log_tau[k]!r})")
    d = np.diff(log_tau)
    if (d >= 0).any():
        k = int(np.argmax(d >= 0))
        raise ValueError(
            "column 'log_tau' must be strictly decreasing (deepest point first, as in SIR): "
            f"log tau[{k}] = {log_tau[k]:g} is followed by log tau[{k + 1}] = {log_tau[k + 1]:g}")


def _parse_table(a: Any) -> tuple[np.ndarray, bool]:
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim not in (2, 3) or arr.shape[-1] not in (8, 11):
        raise ValueError(f"expected an array of shape (ndep, 8|11) or (n, ndep, 8|11), got {arr.shape}")
    stacked = arr.ndim == 3
    if stacked:
        lt = arr[..., 0]
        if not np.array_equal(lt, np.broadcast_to(lt[0], lt.shape)):
            raise ValueError("a stack of models must share one log tau grid (column 1 differs between models)")
    return arr, stacked


class _Columns:
    """Shared machinery of :class:`Atmosphere` and :class:`AtmosphereErrors`."""

    log_tau: np.ndarray

    @property
    def ndep(self) -> int:
        """Number of depth points."""
        return int(self.log_tau.size)

    @property
    def stacked(self) -> bool:
        """True when the columns hold a stack of models, shape ``(n, ndep)``."""
        return np.ndim(self.T) == 2  # type: ignore[attr-defined]

    @property
    def nmodels(self) -> int:
        """Number of models in a stack (1 for a single model)."""
        return int(np.shape(self.T)[0]) if self.stacked else 1  # type: ignore[attr-defined]

    def __len__(self) -> int:
        return self.nmodels

    def column(self, name: str) -> np.ndarray | None:
        """Return a column by its name (see :data:`COLUMNS`)."""
        if name not in COLUMNS:
            raise KeyError(f"unknown column {name!r}; expected one of {COLUMNS}")
        return getattr(self, name)

    def to_array(self) -> np.ndarray:
        """SIR's column layout in SIR units.

        Returns
        -------
        numpy.ndarray
            float64 array ``(ndep, 11)`` (single model) or ``(n, ndep, 11)`` (stack), columns
            :data:`COLUMNS`; absent optional columns are zeros.
        """
        shape = np.shape(self.T)  # type: ignore[attr-defined]
        out = np.zeros(shape + (11,), dtype=np.float64)
        out[..., 0] = self.log_tau
        for i, name in enumerate(COLUMNS[1:], start=1):
            v = getattr(self, name)
            if v is not None:
                out[..., i] = v
        return out

    def copy(self):
        """Deep copy (arrays copied)."""
        kw = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            kw[f.name] = np.array(v, copy=True) if isinstance(v, np.ndarray) else v
        return type(self)(**kw)

    def with_columns(self, **columns: Any):
        """Return a copy with some columns (or ``macro``/``filling``/``stray``) replaced.

        Scalars are broadcast over depth. The result is validated again (for :class:`Atmosphere`).
        Example: ``atm.with_columns(B=1000.0, gamma=30.0)``.
        """
        names = {f.name for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        kw = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            kw[f.name] = np.array(v, copy=True) if isinstance(v, np.ndarray) else v
        shape = np.shape(self.T)  # type: ignore[attr-defined]
        for k, v in columns.items():
            if k not in names:
                raise TypeError(f"unknown column {k!r}; expected one of {sorted(names)}")
            if k in DEPTH_COLUMNS + OPTIONAL_COLUMNS and v is not None and np.ndim(v) == 0:
                v = np.full(shape, float(v))
            kw[k] = v
        return type(self)(**kw)

    def __getitem__(self, i: int):
        """Model ``i`` of a stack (a single-model object)."""
        if not self.stacked:
            raise TypeError("indexing selects a model of a stack; this object holds a single model")
        kw = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            if f.name == "log_tau":
                kw[f.name] = v.copy()
            elif isinstance(v, np.ndarray) and v.ndim >= 1 and f.name not in ("log_tau",):
                kw[f.name] = v[i].copy() if not (np.ndim(v) == 0) else v
            else:
                kw[f.name] = v
        return type(self)(**kw)

    def __iter__(self) -> Iterator:
        if not self.stacked:
            yield self
            return
        for i in range(self.nmodels):
            yield self[i]


def _scalar_or_per_model(name: str, v: Any, n: int | None) -> float | np.ndarray:
    a = np.asarray(v, dtype=np.float64)
    if a.ndim == 0:
        if not np.isfinite(a):
            raise ValueError(f"{name} must be finite, got {float(a)!r}")
        return float(a)
    if n is None or a.shape != (n,):
        raise ValueError(f"{name} must be a scalar" + (f" or an array of {n} values" if n else "")
                         + f", got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} must be finite (model {int(np.argmax(~np.isfinite(a)))})")
    return a.copy()


@dataclass(eq=False)
class Atmosphere(_Columns):
    """A model atmosphere (or a stack of models on one log τ grid) in SIR units.

    Parameters
    ----------
    log_tau : array_like, shape (ndep,)
        log τ₅₀₀, strictly decreasing (deepest point first, as in SIR).
    T : array_like, shape (ndep,) or (n, ndep)
        Temperature [K], > 0.
    Pe : array_like
        Electron pressure [dyn cm⁻²], > 0.
    vmic : array_like
        Microturbulence [cm s⁻¹].
    B : array_like
        Field strength [G]. Negative values are turned into ``|B|`` with γ → 180° − γ and
        φ → φ + 180° (the same Stokes vector).
    vlos : array_like
        Line-of-sight velocity [cm s⁻¹], positive = redshift.
    gamma : array_like
        Inclination to the line of sight [deg], 0 ≤ γ ≤ 180.
    phi : array_like
        Azimuth [deg]; any finite value (never wrapped).
    z, Pg, rho : array_like or None
        Optional height [km], gas pressure [dyn cm⁻²] and density [g cm⁻³]; ``None`` when absent.
    macro : float or array of n
        Macroturbulence [km s⁻¹] (Gaussian σ as in SIR).
    filling : float or array of n
        Filling factor (0…1).
    stray : float or array of n
        Stray-light fraction [percent].

    Raises
    ------
    ValueError
        On non-finite values, T ≤ 0, Pe ≤ 0, γ outside [0, 180], a non-monotonic log τ grid or
        inconsistent shapes; the message names the column and the depth index / log τ.

    Notes
    -----
    Scalars given for depth columns are broadcast over depth. ``from_array`` of a 3-D array returns a
    *stacked* Atmosphere (columns ``(n, ndep)``); ``atm[i]`` selects model ``i`` and iterating yields the
    models.
    """

    log_tau: np.ndarray
    T: np.ndarray
    Pe: np.ndarray
    vmic: np.ndarray = 0.0  # type: ignore[assignment]
    B: np.ndarray = 0.0  # type: ignore[assignment]
    vlos: np.ndarray = 0.0  # type: ignore[assignment]
    gamma: np.ndarray = 0.0  # type: ignore[assignment]
    phi: np.ndarray = 0.0  # type: ignore[assignment]
    z: np.ndarray | None = None
    Pg: np.ndarray | None = None
    rho: np.ndarray | None = None
    macro: float | np.ndarray = 0.0
    filling: float | np.ndarray = 1.0
    stray: float | np.ndarray = 0.0

    @input_errors
    def __post_init__(self) -> None:
        self.log_tau = _as_float("log_tau", self.log_tau)
        _check_log_tau(self.log_tau)
        ndep = self.log_tau.size
        t = _as_float("T", self.T)
        if t.ndim == 0:
            t = np.full(ndep, float(t))
        if t.ndim not in (1, 2) or t.shape[-1] != ndep:
            raise ValueError(f"column 'T' has shape {t.shape}; expected ({ndep},) or (n, {ndep})")
        shape = t.shape
        n = shape[0] if t.ndim == 2 else None
        self.T = t
        for name in DEPTH_COLUMNS[1:] + OPTIONAL_COLUMNS:
            v = getattr(self, name)
            if v is None:
                continue
            a = _as_float(name, v)
            if a.ndim == 0:
                a = np.full(shape, float(a))
            elif a.shape != shape:
                if a.shape == (ndep,) and len(shape) == 2:
                    a = np.broadcast_to(a, shape).copy()
                else:
                    raise ValueError(f"column {name!r} has shape {a.shape}; expected {shape}")
            setattr(self, name, a)
        for name in OPTIONAL_COLUMNS:
            v = getattr(self, name)
            if v is not None and not np.any(v):
                setattr(self, name, None)
        for name in COLUMNS[1:]:
            a = getattr(self, name)
            if a is None:
                continue
            bad = ~np.isfinite(a)
            if bad.any():
                raise ValueError(f"column {name!r} is not finite at {_where(a, self.log_tau, bad)}")
        for name in ("T", "Pe"):
            a = getattr(self, name)
            bad = a <= 0
            if bad.any():
                raise ValueError(f"column {name!r} must be > 0 [{_UNITS[name]}]: non-positive at "
                                 f"{_where(a, self.log_tau, bad)}")
        neg = self.B < 0
        if neg.any():
            self.B = np.where(neg, -self.B, self.B)
            self.gamma = np.where(neg, 180.0 - self.gamma, self.gamma)
            self.phi = np.where(neg, self.phi + 180.0, self.phi)
        bad = (self.gamma < 0) | (self.gamma > 180)
        if bad.any():
            raise ValueError("column 'gamma' (inclination) must lie in [0, 180] deg: out of range at "
                             f"{_where(self.gamma, self.log_tau, bad)}")
        self.macro = _scalar_or_per_model("macro", self.macro, n)
        self.filling = _scalar_or_per_model("filling", self.filling, n)
        self.stray = _scalar_or_per_model("stray", self.stray, n)

    @classmethod
    @input_errors
    def from_array(cls, a: Any, macro: float | Sequence[float] = 0.0, filling: float | Sequence[float] = 1.0,
                   stray: float | Sequence[float] = 0.0) -> "Atmosphere":
        """Build from SIR's column layout.

        Parameters
        ----------
        a : array_like, shape (ndep, 8|11) or (n, ndep, 8|11)
            Columns in SIR's order (:data:`COLUMNS`), SIR units. All models of a stack must share
            the log τ column.
        macro, filling, stray : float or array of n
            Macroturbulence [km s⁻¹], filling factor, stray light [%].

        Returns
        -------
        Atmosphere
            A single model, or a *stacked* Atmosphere (columns ``(n, ndep)``) for a 3-D input.
        """
        arr, stacked = _parse_table(a)
        lt = arr[0, :, 0] if stacked else arr[:, 0]
        kw: dict[str, Any] = {"log_tau": lt}
        for i, name in enumerate(COLUMNS[1:arr.shape[-1]], start=1):
            kw[name] = arr[..., i]
        return cls(**kw, macro=macro, filling=filling, stray=stray)

    def to_table(self) -> str:
        """A short human-readable summary (first/last depth points)."""
        return (f"Atmosphere(ndep={self.ndep}, nmodels={self.nmodels}, log_tau {self.log_tau[0]:g} .. "
                f"{self.log_tau[-1]:g}, macro={self.macro}, filling={self.filling}, stray={self.stray})")

    def __repr__(self) -> str:
        return self.to_table()


@dataclass(eq=False)
class AtmosphereErrors(_Columns):
    """Uncertainties of a model atmosphere (SIR ``.err`` files); no physical checks.

    Same columns and units as :class:`Atmosphere` (``log_tau`` is the grid, not an error); the header
    values ``macro``, ``filling`` and ``stray`` are the uncertainties of those parameters.
    Columns are float64 arrays ``(ndep,)`` or ``(n, ndep)``; the optional columns are always arrays here
    (zeros when absent).
    """

    log_tau: np.ndarray
    T: np.ndarray
    Pe: np.ndarray
    vmic: np.ndarray = 0.0  # type: ignore[assignment]
    B: np.ndarray = 0.0  # type: ignore[assignment]
    vlos: np.ndarray = 0.0  # type: ignore[assignment]
    gamma: np.ndarray = 0.0  # type: ignore[assignment]
    phi: np.ndarray = 0.0  # type: ignore[assignment]
    z: np.ndarray | None = 0.0  # type: ignore[assignment]
    Pg: np.ndarray | None = 0.0  # type: ignore[assignment]
    rho: np.ndarray | None = 0.0  # type: ignore[assignment]
    macro: float | np.ndarray = 0.0
    filling: float | np.ndarray = 0.0
    stray: float | np.ndarray = 0.0

    @input_errors
    def __post_init__(self) -> None:
        self.log_tau = _as_float("log_tau", self.log_tau)
        if self.log_tau.ndim != 1:
            raise ValueError(f"column 'log_tau' must be one-dimensional, got shape {self.log_tau.shape}")
        t = _as_float("T", self.T)
        if t.ndim == 0:
            t = np.full(self.log_tau.shape, float(t))
        if t.shape[-1] != self.log_tau.size:
            raise ValueError(f"column 'T' has shape {t.shape}; expected (..., {self.log_tau.size})")
        self.T = t
        for name in COLUMNS[2:]:
            v = getattr(self, name)
            a = _as_float(name, 0.0 if v is None else v)
            setattr(self, name, np.broadcast_to(a, t.shape).copy())
        for name in ("macro", "filling", "stray"):
            a = np.asarray(getattr(self, name), dtype=np.float64)
            setattr(self, name, float(a) if a.ndim == 0 else a.copy())

    @classmethod
    @input_errors
    def from_array(cls, a: Any, macro: float | Sequence[float] = 0.0, filling: float | Sequence[float] = 0.0,
                   stray: float | Sequence[float] = 0.0) -> "AtmosphereErrors":
        """Build from SIR's column layout ``(ndep, 8|11)`` or ``(n, ndep, 8|11)`` (see Atmosphere.from_array)."""
        arr, stacked = _parse_table(a)
        lt = arr[0, :, 0] if stacked else arr[:, 0]
        kw: dict[str, Any] = {"log_tau": lt}
        for i, name in enumerate(COLUMNS[1:arr.shape[-1]], start=1):
            kw[name] = arr[..., i]
        return cls(**kw, macro=macro, filling=filling, stray=stray)

    def __repr__(self) -> str:
        return f"AtmosphereErrors(ndep={self.ndep}, nmodels={self.nmodels})"
