"""Inversion configuration: a typed dataclass that reads and writes SIR control files (``*.trol``).

The control file has exactly 42 lines, read positionally (spec-forward §2.1–2.2, spec-inversion §2.5):
label up to the first ``:``, value up to the next ``!``, blanks removed, per-cycle values separated by
``,`` or ``;`` (cycle k uses the k-th value, the last one repeats), an empty value takes the default,
integer fields reject ``.``, and ``*`` in a node field means "as many as possible" (stored as
:data:`NODES_MAX`; only valid in cycles with automatic node selection).

Per-cycle fields are stored as tuples (``weights`` as four tuples, ``nodes``/``nodes2`` as dicts of
tuples); :meth:`InversionConfig.value` and :meth:`InversionConfig.nodes` resolve them for one cycle.
File names are kept as written; :meth:`InversionConfig.resolve` turns them into paths relative to the
control file's folder (``~`` expanded). Empty LINES / ABUNDANCES fields mean pyinv's packaged defaults.
"""
from __future__ import annotations

import math
import numbers
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .atmosphere import QuantityDict, canonical_name
from .errors import input_errors

__all__ = ["InversionConfig", "NodeTable", "NODE_PARAMETERS", "NODES_MAX"]

#: Node-slot names, in control-file order (lines 15–22 for model 1, 23–30 for model 2): the Atmosphere's
#: names (``macro``: the macroturbulence, SIR's line 22 "Invert macroturbulence 1?"; the old key ``vmac`` is
#: accepted with a DeprecationWarning, :data:`pyinv.atmosphere.QUANTITY_ALIASES`).
NODE_PARAMETERS: tuple[str, ...] = ("T", "Pe", "vmic", "B", "vlos", "gamma", "phi", "macro")
#: Internal value of ``*`` ("maximum") in a node field.
NODES_MAX = 1000
#: Largest number of cycles accepted (SIR runs a handful; the bound keeps per-cycle checks finite).
MAX_CYCLES = 1000

PathLike = str | os.PathLike

# (line, attribute, kind, SIR label). kinds: int, real (scalar); int*, real* (per cycle); file; node
_LAYOUT: list[tuple[int, str, str, str]] = [
    (1, "cycles", "int", "Number of cycles          (*)"),
    (2, "observed", "file", "Observed profiles         (*)"),
    (3, "stray_file", "file", "Stray light file"),
    (4, "psf_file", "file", "PSF file"),
    (5, "grid_file", "file", "Wavelength grid file      (s)"),
    (6, "lines_file", "file", "Atomic parameters file"),
    (7, "abundances_file", "file", "Abundances file"),
    (8, "model1", "file", "Initial guess model 1     (*)"),
    (9, "model2", "file", "Initial guess model 2"),
    (10, "weights.0", "real*", "Weight for Stokes I"),
    (11, "weights.1", "real*", "Weight for Stokes Q"),
    (12, "weights.2", "real*", "Weight for Stokes U"),
    (13, "weights.3", "real*", "Weight for Stokes V"),
    (14, "auto_nodes", "int*", "AUTOMATIC SELECT. OF NODES?"),
    (15, "nodes.T", "node", "Nodes for temperature 1"),
    (16, "nodes.Pe", "node", "Nodes for electr. press. 1"),
    (17, "nodes.vmic", "node", "Nodes for microturb. 1"),
    (18, "nodes.B", "node", "Nodes for magnetic field 1"),
    (19, "nodes.vlos", "node", "Nodes for LOS velocity 1"),
    (20, "nodes.gamma", "node", "Nodes for gamma 1"),
    (21, "nodes.phi", "node", "Nodes for phi 1"),
    (22, "nodes.macro", "int*", "Invert macroturbulence 1?"),
    (23, "nodes2.T", "node", "Nodes for temperature 2"),
    (24, "nodes2.Pe", "node", "Nodes for electr. press. 2"),
    (25, "nodes2.vmic", "node", "Nodes for microturb. 2"),
    (26, "nodes2.B", "node", "Nodes for magnetic field 2"),
    (27, "nodes2.vlos", "node", "Nodes for LOS velocity 2"),
    (28, "nodes2.gamma", "node", "Nodes for gamma 2"),
    (29, "nodes2.phi", "node", "Nodes for phi 2"),
    (30, "nodes2.macro", "int*", "Invert macroturbulence 2?"),
    (31, "invert_filling", "int*", "Invert filling factor?"),
    (32, "invert_stray", "int*", "Invert stray light factor?"),
    (33, "mu", "real", "mu=cos (theta)"),
    (34, "snr", "real*", "Estimated S/N for I"),
    (35, "contrast", "real", "Continuum contrast"),
    (36, "svd_tolerance", "real*", "Tolerance for SVD"),
    (37, "initial_diagonal", "real*", "Initial diagonal element"),
    (38, "interpolation", "int*", "Splines/Linear Interpolation"),
    (39, "pg_surface1", "real", "Gas pressure at surface 1"),
    (40, "pg_surface2", "real", "Gas pressure at surface 2"),
    (41, "magnetic_pressure", "int", "Magnetic pressure term?"),
    (42, "nlte_file", "file", "NLTE Departures filename"),
]

_FILE_FIELDS = tuple(a for _, a, k, _ in _LAYOUT if k == "file")
_PER_CYCLE = ("auto_nodes", "invert_filling", "invert_stray", "snr", "svd_tolerance", "initial_diagonal",
              "interpolation")


def _tuple_of(name: str, v: Any, conv, allow_empty: bool = True) -> tuple:
    if v is None:
        return ()
    if isinstance(v, (str, bytes)):
        raise TypeError(f"{name}: expected a number or a sequence of numbers, got {v!r}")
    if isinstance(v, Iterable):
        out = tuple(conv(x) for x in v)
    else:
        out = (conv(v),)
    if not out and not allow_empty:
        raise ValueError(f"{name}: at least one value is needed")
    return out


def _to_int(x: Any) -> int:
    if isinstance(x, str):
        if x.strip() == "*":
            return NODES_MAX
        x = float(x)
    if isinstance(x, float):
        if not x.is_integer():
            raise ValueError(f"expected an integer, got {x!r}")
    return int(x)


class NodeTable(QuantityDict):
    """Node counts per cycle, ``{parameter: (n_cycle1, n_cycle2, ...)}``.

    Calling it with a cycle number (1-based) gives that cycle's counts: ``cfg.nodes(2)`` →
    ``{"T": 3, "Pe": 0, ...}`` (the last listed value repeats; unlisted parameters are 0). Keys are
    :data:`NODE_PARAMETERS`; an old spelling (``"vmac"``) finds its canonical key with a DeprecationWarning.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, place="nodes", **kwargs)

    def __call__(self, cycle: int) -> dict[str, int]:
        return QuantityDict({p: int(_pick(v, cycle, 0)) for p, v in self.items()}, place="nodes")


def _pick(values: tuple, cycle: int, default: Any) -> Any:
    if cycle < 1:
        raise ValueError(f"cycles are numbered from 1, got {cycle}")
    if not values:
        return default
    return values[min(cycle, len(values)) - 1]


@dataclass
class InversionConfig:
    """Configuration of a SIR-style inversion, validated at construction (a ValueError names the field).

    Parameters
    ----------
    cycles : int
        Number of cycles, >= 1 (SIR's synthesis (0) and response-function (−1) modes are
        :func:`pyinv.synthesize` and :func:`pyinv.response_functions`).
    nodes, nodes2 : dict (stored as :class:`NodeTable`; ``cfg.nodes(cycle)`` gives one cycle's counts)
        Node counts per cycle for models 1 and 2, keyed by :data:`NODE_PARAMETERS` (``T``, ``Pe``,
        ``vmic``, ``B``, ``vlos``, ``gamma``, ``phi``, ``macro`` (0/1: invert the macroturbulence)); values an
        int or a sequence (per cycle, the last repeats). Missing keys mean 0. :data:`NODES_MAX` (``*``) =
        maximum. The old key ``vmac`` is accepted for ``macro``, with a DeprecationWarning.
    weights : 4 numbers or 4 sequences
        Weights of Stokes I, Q, U, V (per cycle if sequences), finite. A negative
        Q/U/V weight fits X/I (SIR's meaning; needs a positive I weight); I's weight must be >= 0.
    snr : float or sequence
        Estimated S/N of I (χ² scaling), finite and > 0, default 1000.
    auto_nodes : int or sequence
        1 = automatic node selection (per cycle).
    invert_filling, invert_stray : int or sequence
        Invert the filling factor / stray-light factor (0/1, per cycle).
    mu : float
        cos θ (only |μ| used, only in hydrostatic equilibrium).
    contrast : float
        Continuum contrast I_c1/I_c2 (−1 = unused).
    svd_tolerance, initial_diagonal : float or sequence
        SVD tolerance (1e-4) and initial Marquardt λ (1e-3).
    interpolation : int or sequence
        0 splines, 1 linear, 2/3 lightly regularised, 4/5 regularised.
    pg_surface1, pg_surface2 : float
        Hydrostatic boundary: 0 = top Pe; > 0 top gas pressure [dyn cm⁻²]; < 0 minus top density.
    magnetic_pressure : int
        1 = include B²/8π in hydrostatic equilibrium.
    observed, stray_file, psf_file, grid_file, lines_file, abundances_file, model1, model2, nlte_file : str or None
        File names as written (``None`` = empty field). Empty ``lines_file``/``abundances_file`` select
        pyinv's packaged defaults.
    base_dir : str or None
        Folder that relative file names refer to (the control file's folder when read from a file).
    """

    cycles: int = 1
    nodes: dict[str, Any] = field(default_factory=dict)
    nodes2: dict[str, Any] = field(default_factory=dict)
    weights: Sequence[Any] = (1.0, 1.0, 1.0, 1.0)
    snr: Any = 1000.0
    auto_nodes: Any = 0
    invert_filling: Any = 0
    invert_stray: Any = 0
    mu: float = 1.0
    contrast: float = -1.0
    svd_tolerance: Any = 1e-4
    initial_diagonal: Any = 1e-3
    interpolation: Any = 0
    pg_surface1: float = 0.0
    pg_surface2: float = 0.0
    magnetic_pressure: int = 0
    observed: str | None = None
    stray_file: str | None = None
    psf_file: str | None = None
    grid_file: str | None = None
    lines_file: str | None = None
    abundances_file: str | None = None
    model1: str | None = None
    model2: str | None = None
    nlte_file: str | None = None
    base_dir: str | None = None

    @input_errors
    def __post_init__(self) -> None:
        if isinstance(self.cycles, bool) or not isinstance(self.cycles, numbers.Integral) and not (
                isinstance(self.cycles, float) and self.cycles.is_integer()):
            raise ValueError(f"cycles must be an integer, got {self.cycles!r}")
        self.cycles = int(self.cycles)
        if self.cycles > MAX_CYCLES:
            raise ValueError(f"cycles must be <= {MAX_CYCLES}, got {self.cycles}")
        if self.cycles < 1:
            raise ValueError(f"cycles must be >= 1 (an inversion runs at least one cycle), got {self.cycles}; "
                             "SIR's synthesis (0) and response-function (-1) modes are pyinv.synthesize and "
                             "pyinv.response_functions")
        for attr in ("nodes", "nodes2"):
            d = getattr(self, attr) or {}
            if not isinstance(d, Mapping):
                raise TypeError(f"{attr} must be a dict keyed by {NODE_PARAMETERS}")
            if not isinstance(d, NodeTable):  # old spellings (vmac): their canonical names, with a warning
                named = {}
                for k, v in d.items():
                    c = canonical_name(k, "nodes", stacklevel=4)
                    if c in named:
                        raise ValueError(f"{attr}: {k!r} and {c!r} are two spellings of one parameter (use {c!r})")
                    named[c] = v
                d = named
            unknown = set(d) - set(NODE_PARAMETERS)
            if unknown:
                raise ValueError(f"{attr}: unknown parameter(s) {sorted(unknown)}; expected {NODE_PARAMETERS}")
            norm = {}
            for p in NODE_PARAMETERS:
                vals = _tuple_of(f"{attr}[{p!r}]", d.get(p), _to_int)
                if any(v < -1 for v in vals):
                    raise ValueError(f"{attr}[{p!r}]: node counts must be >= -1, got {vals}")
                if p == "macro" and any(v not in (0, 1) for v in vals):
                    raise ValueError(f"{attr}['macro'] must be 0 or 1 per cycle, got {vals}")
                norm[p] = vals
            setattr(self, attr, NodeTable(norm))
        w = list(self.weights)
        if len(w) != 4:
            raise ValueError(f"weights must have 4 entries (I, Q, U, V), got {len(w)}")
        self.weights = tuple(_tuple_of(f"weights[{i}]", x, float, allow_empty=False) for i, x in enumerate(w))
        for name in _PER_CYCLE:
            conv = _to_int if name in ("auto_nodes", "invert_filling", "invert_stray", "interpolation") else float
            setattr(self, name, _tuple_of(name, getattr(self, name), conv, allow_empty=False))
        for name in ("mu", "contrast", "pg_surface1", "pg_surface2"):
            v = float(getattr(self, name))
            if not math.isfinite(v):
                raise ValueError(f"{name} must be finite")
            setattr(self, name, v)
        self.magnetic_pressure = _to_int(self.magnetic_pressure)
        self._validate_numbers()
        for name in _FILE_FIELDS:
            v = getattr(self, name)
            if v is not None:
                v = str(v)
                setattr(self, name, v if v else None)
        # '*' (maximum) only with automatic node selection.
        ncheck = max(1, self.cycles)
        for attr in ("nodes", "nodes2"):
            for p, vals in getattr(self, attr).items():
                for c in range(1, max(ncheck, len(vals)) + 1):
                    if _pick(vals, c, 0) == NODES_MAX and _pick(self.auto_nodes, c, 0) != 1:
                        raise ValueError(f"{attr}[{p!r}] cycle {c}: '*' (maximum number of nodes) is only "
                                         "allowed with automatic node selection in that cycle")

    def _validate_numbers(self) -> None:
        """Weights, S/N, tolerances and switches: finite and in range (ValueError naming the field)."""
        for i, (s, w) in enumerate(zip("IQUV", self.weights)):
            for c, v in enumerate(w, 1):
                if not math.isfinite(v):
                    raise ValueError(f"weights[{i}] (Stokes {s}) cycle {c}: must be finite, got {v!r}")
                if v < 0 and i == 0:
                    raise ValueError(f"weights[0] (Stokes I) cycle {c}: must be >= 0, got {v!r} (a negative "
                                     "weight means 'fit X/I' and is only defined for Q, U and V)")
        for c in range(1, max(self.cycles, max(len(w) for w in self.weights)) + 1):
            w = self.weights_for(c)  # all four 0 is left to the engine (status 11, no data)
            if any(x < 0 for x in w[1:]) and not w[0] > 0:
                raise ValueError(f"weights cycle {c}: a negative weight (fit Q/I, U/I or V/I, SIR's meaning) "
                                 f"needs Stokes I fitted too (weights[0] > 0), got {w}")
        for name in ("snr", "svd_tolerance", "initial_diagonal"):
            for c, v in enumerate(getattr(self, name), 1):
                if not (math.isfinite(v) and v > 0):
                    raise ValueError(f"{name} cycle {c}: must be finite and > 0, got {v!r}")
        for name in ("auto_nodes", "invert_filling", "invert_stray"):
            for c, v in enumerate(getattr(self, name), 1):
                if v not in (0, 1):
                    raise ValueError(f"{name} cycle {c}: must be 0 or 1, got {v!r}")
        for c, v in enumerate(self.interpolation, 1):
            if v not in range(6):
                raise ValueError(f"interpolation cycle {c}: must be 0..5, got {v!r}")
        if self.magnetic_pressure not in (0, 1):
            raise ValueError(f"magnetic_pressure must be 0 or 1, got {self.magnetic_pressure!r}")
        if not 0.0 < abs(self.mu) <= 1.0:
            raise ValueError(f"mu must satisfy 0 < |mu| <= 1, got {self.mu!r}")

    def check_nodes(self, ndep: int) -> None:
        """Refuse node counts beyond a depth grid of ``ndep`` points (ValueError naming the field)."""
        for attr in ("nodes", "nodes2"):
            for p, vals in getattr(self, attr).items():
                if p == "macro":
                    continue
                for c in range(1, self.cycles + 1):
                    n = _pick(vals, c, 0)
                    if n != NODES_MAX and n > ndep:
                        raise ValueError(f"{attr}[{p!r}] cycle {c}: {n} nodes exceed the {ndep} depth points "
                                         "of the model")

    # ------------------------------------------------------------------ accessors
    def value(self, name: str, cycle: int) -> Any:
        """Value of a per-cycle field (``snr``, ``svd_tolerance``, ...) in cycle ``cycle`` (1-based)."""
        if name == "weights":
            return tuple(_pick(w, cycle, 1.0) for w in self.weights)
        if name not in _PER_CYCLE:
            v = getattr(self, name)
            return v
        return _pick(getattr(self, name), cycle, None)

    def nodes_for(self, cycle: int, model: int = 1) -> dict[str, int]:
        """Node counts of every parameter of model 1 or 2 in cycle ``cycle`` (1-based)."""
        return (self.nodes if model == 1 else self.nodes2)(cycle)

    def weights_for(self, cycle: int) -> tuple[float, float, float, float]:
        """Stokes weights (I, Q, U, V) in cycle ``cycle``."""
        return self.value("weights", cycle)

    def single_cycle(self, cycle: int) -> "InversionConfig":
        """This configuration reduced to one cycle with the nodes, weights and per-cycle settings of cycle
        ``cycle`` (1-based)."""
        import dataclasses

        c = int(cycle)
        if not 1 <= c <= self.cycles:
            raise ValueError(f"cycle must be in 1..{self.cycles}, got {cycle!r}")
        ch: dict[str, Any] = {"cycles": 1, "nodes": dict(self.nodes_for(c, 1)), "nodes2": dict(self.nodes_for(c, 2)),
                              "weights": tuple(self.weights_for(c))}
        for name in _PER_CYCLE:
            ch[name] = self.value(name, c)
        return dataclasses.replace(self, **ch)

    def resolve(self, name: str) -> Path | None:
        """Path of a file field (e.g. ``"lines_file"``, ``"model1"``), relative to ``base_dir``, ``~``
        expanded; ``None`` when the field is empty (for LINES/ABUNDANCES: use the packaged default)."""
        if name not in _FILE_FIELDS:
            raise KeyError(f"{name!r} is not a file field; expected one of {_FILE_FIELDS}")
        v = getattr(self, name)
        if not v:
            return None
        p = Path(os.path.expanduser(v))
        if not p.is_absolute() and self.base_dir:
            p = Path(self.base_dir) / p
        return p

    # ------------------------------------------------------------------ SIR control files
    @classmethod
    def read_sir(cls, path: PathLike) -> "InversionConfig":
        """Read a SIR control file (42 lines, positional). Nothing else is opened.

        Raises
        ------
        ValueError
            Fewer than 42 lines, a line without ``:``, malformed values (the message names the line
            number and field), ``.`` in an integer field, ``*`` outside automatic node selection.
        """
        text = Path(path).read_text()
        cfg = cls.from_sir_text(text, source=str(path))
        cfg.base_dir = str(Path(path).resolve().parent)
        return cfg

    @classmethod
    def from_sir_text(cls, text: str, source: str = "<control file>", base_dir: str | None = None) -> "InversionConfig":
        """Parse the text of a SIR control file (see :meth:`read_sir`)."""
        lines = text.splitlines()
        if len(lines) < 42:
            raise ValueError(f"{source}: a SIR control file has 42 lines, found {len(lines)}")
        if any(ln.strip() for ln in lines[42:]):
            warnings.warn(f"{source}: lines after line 42 are ignored", stacklevel=2)
        kw: dict[str, Any] = {"nodes": {}, "nodes2": {}, "weights": [1.0, 1.0, 1.0, 1.0]}
        for lineno, attr, kind, label in _LAYOUT:
            raw = lines[lineno - 1]
            where = f"{source}:{lineno} ({label.split('  ')[0].strip()})"
            if ":" not in raw:
                raise ValueError(f"{where}: no ':' separating label and value in {raw.strip()!r}")
            value = raw.split(":", 1)[1].split("!", 1)[0]
            value = re.sub(r"\s+", "", value)
            if kind == "file":
                if len(value) > 100:
                    warnings.warn(f"{where}: file name longer than 100 characters (SIR would truncate it)",
                                  stacklevel=2)
                kw[attr] = value or None
                continue
            if not value:
                continue  # default
            toks = re.split(r"[,;]", value)
            if any(t == "" for t in toks):
                raise ValueError(f"{where}: empty entry in the per-cycle list {value!r}")
            vals: list[Any] = []
            for t in toks:
                if kind in ("int", "int*", "node"):
                    if kind == "node" and t == "*":
                        vals.append(NODES_MAX)
                        continue
                    if "." in t:
                        raise ValueError(f"{where}: integer field must not contain '.', got {t!r}")
                    if not re.fullmatch(r"[+-]?\d+", t):
                        raise ValueError(f"{where}: malformed integer {t!r}")
                    vals.append(int(t))
                else:
                    try:
                        vals.append(float(t.replace("D", "E").replace("d", "e")))
                    except ValueError:
                        raise ValueError(f"{where}: malformed real number {t!r}") from None
            if kind in ("int", "real"):
                if len(vals) > 1:
                    warnings.warn(f"{where}: several values given for a run-wide field; the first is used",
                                  stacklevel=2)
                kw[attr] = vals[0]
            elif attr.startswith("weights."):
                kw["weights"][int(attr.split(".")[1])] = vals
            elif attr.startswith("nodes"):
                d, p = attr.split(".")
                kw[d][p] = vals
            else:
                kw[attr] = vals
        try:
            cfg = cls(**kw)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{source}: {exc}") from None
        cfg.base_dir = base_dir
        return cfg

    def to_sir_text(self) -> str:
        """The configuration as the 42 lines of a SIR control file."""
        out = []
        for lineno, attr, kind, label in _LAYOUT:
            if kind == "file":
                s = getattr(self, attr) or ""
            elif attr.startswith("weights."):
                s = _join(self.weights[int(attr.split(".")[1])])
            elif attr.startswith("nodes"):
                d, p = attr.split(".")
                s = _join(getattr(self, d)[p], star=(kind == "node"))
            else:
                v = getattr(self, attr)
                s = _join(v if isinstance(v, tuple) else (v,))
            out.append(f"{label:<29s}:{s}")
        return "\n".join(out) + "\n"

    def write_sir(self, path: PathLike) -> None:
        """Write a SIR control file (42 lines)."""
        Path(path).write_text(self.to_sir_text())


def _fmt(v: Any, star: bool = False) -> str:
    if star and v == NODES_MAX:
        return "*"
    if isinstance(v, int):
        return str(v)
    f = float(v)
    if f.is_integer() and abs(f) < 1e15:
        return f"{f:.1f}"
    return repr(f)


def _join(vals: Sequence[Any], star: bool = False) -> str:
    return ",".join(_fmt(v, star) for v in vals)
