"""One atmosphere column in the conventions of the non-LTE codes (:class:`NlteColumn`), its conversion
from a pyinv (SIR) model, and the MULTI atmosphere format that RH reads (spec-nlte-rh §2.5).

An :class:`NlteColumn` is ordered **top first** and uses RH's file units: T [K], n_e [cm⁻³], v [km s⁻¹]
(> 0 towards the observer), v_turb [km s⁻¹], B [T], γ and χ [rad], hydrogen populations [cm⁻³]. Its
depth scale is one of ``"tau500"`` (log₁₀ τ₅₀₀), ``"mass"`` (log₁₀ column mass [g cm⁻²]) or ``"height"``
[km].
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from . import units

__all__ = ["NlteColumn", "column_from_atmosphere", "read_multi_atmosphere", "write_multi_atmosphere",
           "write_b_file", "read_b_file"]

_SCALES = {"tau500": "Tau scale", "mass": "Mass scale", "height": "Height scale"}


@dataclass
class NlteColumn:
    """A one-dimensional atmosphere, top first, in RH's units (see the module docstring).

    Attributes
    ----------
    scale : str
        ``"tau500"``, ``"mass"`` or ``"height"``.
    depth : ndarray (ndep,)
        log₁₀ τ₅₀₀, log₁₀ column mass [g cm⁻²] or height [km], top first.
    T, ne, v, vturb : ndarray (ndep,)
        [K], [cm⁻³], [km s⁻¹] (> 0 towards the observer), [km s⁻¹].
    B, gamma, chi : ndarray (ndep,) or None
        [T], [rad], [rad]; ``None`` = no field.
    nH : ndarray (6, ndep) or None
        Hydrogen populations n₁ … n₅, n_p [cm⁻³] (required by RH for the τ and height scales).
    logg : float
        log₁₀ surface gravity [cgs].
    name : str
        Atmosphere ID (one word).
    """

    scale: str
    depth: np.ndarray
    T: np.ndarray
    ne: np.ndarray
    v: np.ndarray
    vturb: np.ndarray
    B: np.ndarray | None = None
    gamma: np.ndarray | None = None
    chi: np.ndarray | None = None
    nH: np.ndarray | None = None
    logg: float = 4.44
    name: str = "pyinv"
    log_tau_model: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.scale not in _SCALES:
            raise ValueError(f"scale must be one of {sorted(_SCALES)}, got {self.scale!r}")
        for k in ("depth", "T", "ne", "v", "vturb"):
            setattr(self, k, np.asarray(getattr(self, k), dtype=np.float64).ravel())
        n = self.depth.size
        for k in ("T", "ne", "v", "vturb"):
            if getattr(self, k).size != n:
                raise ValueError(f"column {k!r} has {getattr(self, k).size} points, depth has {n}")
        if not (np.all(np.isfinite(self.T)) and np.all(self.T > 0)):
            raise ValueError("T must be finite and positive")
        if self.B is not None:
            self.B = np.broadcast_to(np.asarray(self.B, dtype=np.float64), (n,)).copy()
            self.gamma = np.broadcast_to(np.asarray(0.0 if self.gamma is None else self.gamma, dtype=np.float64),
                                         (n,)).copy()
            self.chi = np.broadcast_to(np.asarray(0.0 if self.chi is None else self.chi, dtype=np.float64),
                                       (n,)).copy()
        if self.nH is not None:
            self.nH = np.asarray(self.nH, dtype=np.float64)
            if self.nH.shape != (6, n):
                raise ValueError(f"nH must have shape (6, {n}), got {self.nH.shape}")

    @property
    def ndep(self) -> int:
        """Number of depth points."""
        return int(self.depth.size)

    @property
    def magnetic(self) -> bool:
        """True when a field is given and non-zero somewhere."""
        return self.B is not None and bool(np.any(self.B != 0))

    def with_field(self, B_gauss: float, gamma_deg: float, chi_deg: float = 0.0) -> "NlteColumn":
        """A copy with a depth-independent field (G, deg, deg)."""
        n = self.ndep
        return replace(self, B=np.full(n, float(units.gauss_to_tesla(B_gauss))),
                       gamma=np.full(n, float(units.deg_to_rad(gamma_deg))),
                       chi=np.full(n, float(units.deg_to_rad(chi_deg))))


def column_from_atmosphere(atm: Any, abundances: Any = None, *, logg: float = 4.44,
                           name: str = "pyinv") -> NlteColumn:
    """Convert one pyinv :class:`~pyinv.Atmosphere` (SIR conventions, deepest first) to an NLTE column.

    The τ₅₀₀ scale of the model is kept (``scale="tau500"``); n_e = P_e/kT; the six hydrogen populations
    are in LTE from pyinv's equation of state at the model's (T, P_e) (neutral H split over five levels
    by Boltzmann); velocities change sign and unit; B goes to tesla, γ and φ to radians (χ = φ).
    """
    from ..physics.thermo import equation_of_state

    if getattr(atm, "stacked", False):
        raise ValueError("column_from_atmosphere takes one model, not a stack")
    T = np.asarray(atm.T, dtype=np.float64)
    Pe = np.asarray(atm.Pe, dtype=np.float64)
    eos = equation_of_state(T, Pe, abundances)
    kT = units.K_BOLTZMANN_CGS * T
    n_neutral = eos["f1"] * eos["PH"] / kT
    n_proton = eos["f2"] * eos["PH"] / kT
    nH = units.hydrogen_lte_populations(T, n_neutral, n_proton)
    r = units.reverse_depth
    B = np.asarray(atm.B, dtype=np.float64)
    return NlteColumn(
        scale="tau500", depth=r(np.asarray(atm.log_tau, dtype=np.float64)), T=r(T),
        ne=r(units.ne_from_pe(Pe, T)), v=r(units.velocity_sir_to_rh(atm.vlos)),
        vturb=r(1e-5 * np.asarray(atm.vmic, dtype=np.float64)),
        B=r(units.gauss_to_tesla(B)), gamma=r(units.deg_to_rad(atm.gamma)), chi=r(units.deg_to_rad(atm.phi)),
        nH=r(nH, axis=1), logg=logg, name=name, log_tau_model=np.asarray(atm.log_tau, dtype=np.float64).copy())


def atmosphere_from_column(col: NlteColumn, tau500_top_first: np.ndarray, log_tau: np.ndarray, *,
                           hydrostatic: bool = False) -> Any:
    """A pyinv Atmosphere (field-free, at rest) from a column and a backend's τ₅₀₀ on its depth points
    (:attr:`NlteResult.tau500`): T, Pₑ = nₑkT and v_mic interpolated onto ``log_tau`` (deepest first; linear
    in log τ, log nₑ; held constant beyond the column's τ range). With ``hydrostatic`` Pₑ is then put in
    hydrostatic equilibrium from its top value. This is how the engine and a backend compare like with like
    (the departure round trip, the DeSIRe-style tests and benchmarks).
    """
    from ..atmosphere import Atmosphere
    from .departures import clean_tau_grid
    from .units import pe_from_ne

    lt_be = np.log10(np.maximum(np.asarray(tau500_top_first, dtype=np.float64), 1e-300))
    keep = clean_tau_grid(lt_be)
    o = np.argsort(lt_be[keep])                      # increasing log tau, as np.interp wants
    x = lt_be[keep][o]
    lt = np.asarray(log_tau, dtype=np.float64)
    T = np.interp(lt, x, np.asarray(col.T)[keep][o])
    ne = np.exp(np.interp(lt, x, np.log(np.asarray(col.ne)[keep][o])))
    vmic = np.interp(lt, x, np.asarray(col.vturb)[keep][o]) * 1e5
    atm = Atmosphere(log_tau=lt, T=T, Pe=pe_from_ne(ne, T), vmic=vmic, B=0.0, vlos=0.0, gamma=0.0, phi=0.0, macro=0.0)
    if hydrostatic:
        from ..physics.thermo import hydrostatic as _he

        atm = _he(atm)
    return atm


def write_multi_atmosphere(path: str | os.PathLike, col: NlteColumn) -> None:
    """Write ``col`` as a MULTI-format atmosphere (ASCII; spec-nlte-rh §2.5)."""
    out = [f"* written by pyinv", f"{col.name.split()[0] if col.name.strip() else 'pyinv'}",
           f"{_SCALES[col.scale]}", "* log g [cgs]", f"{col.logg:.6f}", "* Ndep", f"{col.ndep:d}",
           "* depth        T [K]          ne [cm^-3]      v [km/s]        vturb [km/s]"]
    for k in range(col.ndep):
        out.append(f"{col.depth[k]: .10e} {col.T[k]: .10e} {col.ne[k]: .10e} {col.v[k]: .10e} {col.vturb[k]: .10e}")
    if col.nH is not None:
        out.append("* hydrogen populations n1..n5, np [cm^-3]")
        for k in range(col.ndep):
            out.append(" ".join(f"{x: .10e}" for x in col.nH[:, k]))
    Path(path).write_text("\n".join(out) + "\n")


def read_multi_atmosphere(path: str | os.PathLike) -> NlteColumn:
    """Read a MULTI-format atmosphere (RH ``Atmos/*.atmos``); the field is absent (RH keeps it in a
    separate B file, see :func:`read_b_file`)."""
    toks: list[str] = []
    for line in Path(path).read_text().splitlines():
        s = line.strip()
        if not s or s.startswith("*"):
            continue
        toks.extend(s.split())
    name, scale_word = toks[0], toks[1]
    i = 2
    while not _is_number(toks[i]):  # "Mass scale" is two words
        i += 1
    first = scale_word[0].upper()
    scale = {"M": "mass", "T": "tau500", "H": "height"}.get(first)
    if scale is None:
        raise ValueError(f"{path}: unknown depth scale {scale_word!r}")
    logg = float(toks[i])
    ndep = int(float(toks[i + 1]))
    vals = np.array([float(t.replace("D", "E").replace("d", "e")) for t in toks[i + 2:]])
    if vals.size < 5 * ndep:
        raise ValueError(f"{path}: expected {5 * ndep} atmosphere values, found {vals.size}")
    tab = vals[:5 * ndep].reshape(ndep, 5)
    rest = vals[5 * ndep:]
    nH = rest[:6 * ndep].reshape(ndep, 6).T.copy() if rest.size >= 6 * ndep else None
    return NlteColumn(scale=scale, depth=tab[:, 0], T=tab[:, 1], ne=tab[:, 2], v=tab[:, 3], vturb=tab[:, 4],
                      nH=nH, logg=logg, name=name)


def _is_number(s: str) -> bool:
    try:
        float(s.replace("D", "E"))
        return True
    except ValueError:
        return False


def write_b_file(path: str | os.PathLike, col: NlteColumn) -> None:
    """RH's magnetic-field file: big-endian float64 B [T], γ [rad], χ [rad], top first (§2.6)."""
    if col.B is None:
        raise ValueError("the column has no magnetic field")
    np.concatenate([col.B, col.gamma, col.chi]).astype(">f8").tofile(path)


def read_b_file(path: str | os.PathLike, ndep: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read an RH B file of ``ndep`` points: (B [T], γ [rad], χ [rad])."""
    a = np.fromfile(path, dtype=">f8")
    if a.size != 3 * ndep:
        raise ValueError(f"{path}: {a.size} doubles, expected {3 * ndep}")
    return a[:ndep].astype(np.float64), a[ndep:2 * ndep].astype(np.float64), a[2 * ndep:].astype(np.float64)
