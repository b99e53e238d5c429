"""Library of published model atmospheres and pyinv's default initial guess.

All models are returned as :class:`pyinv.atmosphere.Atmosphere` on the 53-point grid
log τ₅₀₀ = 1.2, 1.1, …, −4.0 (deepest first), with T and Pe from the published models (Pe as tabulated,
not re-equilibrated with pyinv's equation of state). Field, velocities and angles are zero unless given.
Citations: ``pyinv/data/atmosphere_library.txt`` and ``pyinv/data/hsra.txt``.

=========  ==================================================================================
name       model
=========  ==================================================================================
hsra       HSRA quiet Sun (Gingerich, Noyes, Kalkofen & Cuny 1971, Sol. Phys. 18, 347)
falh       FAL H plage (Fontenla, Avrett, Thuillier & Harder 2006, ApJ 639, 441)
penumjti   penumbra (del Toro Iniesta, Tarbell & Ruiz Cobo 1994, ApJ 436, 400)
cool       umbra of a large spot (Collados et al. 1994, A&A 291, 622)
mmaltby    umbra, model M (Maltby et al. 1986, ApJ 306, 284)
=========  ==================================================================================
"""
from __future__ import annotations

import functools
from typing import Any

import numpy as np

from .atmosphere import Atmosphere
from .defaults import data_path

__all__ = ["names", "load", "hsra", "falh", "penumjti", "cool", "mmaltby", "default_guess", "LOG_TAU_53"]

_NAMES = ("hsra", "falh", "penumjti", "cool", "mmaltby")
#: The 53-point log τ₅₀₀ grid 1.2 … −4.0 of the library.
LOG_TAU_53 = np.round(np.arange(12, -41, -1) / 10.0, 1)


@functools.lru_cache(maxsize=None)
def _library() -> np.ndarray:
    a = np.loadtxt(data_path("atmosphere_library.txt"), comments="#", dtype=np.float64)
    if a.shape != (53, 11) or not np.allclose(a[:, 0], LOG_TAU_53):
        raise RuntimeError("corrupt packaged atmosphere_library.txt")
    return a


@functools.lru_cache(maxsize=None)
def _hsra_table() -> np.ndarray:
    a = np.loadtxt(data_path("hsra.txt"), comments="#", dtype=np.float64)
    if a.shape != (55, 3):
        raise RuntimeError("corrupt packaged hsra.txt")
    return a


def names() -> list[str]:
    """Names of the library models."""
    return list(_NAMES)


def _build(log_tau: np.ndarray, T: np.ndarray, Pe: np.ndarray, columns: dict[str, Any]) -> Atmosphere:
    kw: dict[str, Any] = {"vmic": 0.0, "B": 0.0, "vlos": 0.0, "gamma": 0.0, "phi": 0.0}
    kw.update(columns)
    return Atmosphere(log_tau=log_tau.copy(), T=T.copy(), Pe=Pe.copy(), **kw)


def load(name: str, **columns: Any) -> Atmosphere:
    """A library model by name (see :func:`names`).

    ``columns`` override or add columns/parameters in SIR units (e.g. ``B=1000.0``, ``vmic=1e5``,
    ``macro=0.5``). ``"hsra"`` gives :func:`hsra`.
    """
    key = name.lower()
    if key not in _NAMES:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(_NAMES)}")
    if key == "hsra":
        return hsra(**columns)
    a = _library()
    i = _NAMES.index(key)
    return _build(a[:, 0], a[:, 1 + i], a[:, 6 + i], columns)


def hsra(full: bool = False, **columns: Any) -> Atmosphere:
    """HSRA quiet-Sun model (Gingerich et al. 1971), Pe in hydrostatic equilibrium with SIR's EOS.

    Parameters
    ----------
    full : bool
        False: the 53-point grid 1.2 … −4.0; True: the tabulated 55 points 1.4 … −4.0.
    **columns
        Overrides in SIR units. By default vmic = 0.6 km/s (6e4 cm/s, the value the tabulated Pe
        assumes), no field, no velocity.
    """
    a = _hsra_table()
    if not full:
        a = a[2:]
    columns.setdefault("vmic", 6.0e4)
    return _build(a[:, 0], a[:, 1], a[:, 2], columns)


def falh(**columns: Any) -> Atmosphere:
    """FAL H plage model (Fontenla et al. 2006) on the 53-point grid."""
    return load("falh", **columns)


def penumjti(**columns: Any) -> Atmosphere:
    """Penumbral model of del Toro Iniesta, Tarbell & Ruiz Cobo (1994) on the 53-point grid."""
    return load("penumjti", **columns)


def cool(**columns: Any) -> Atmosphere:
    """Cool umbral model of Collados et al. (1994) on the 53-point grid."""
    return load("cool", **columns)


def mmaltby(**columns: Any) -> Atmosphere:
    """Umbral model M of Maltby et al. (1986) on the 53-point grid."""
    return load("mmaltby", **columns)


def default_guess() -> Atmosphere:
    """pyinv's default initial guess (spec-data-defaults §4): HSRA on the 53-point grid with
    vmic = 1 km/s, B = 400 G, γ = 60°, φ = 30°, vlos = 0 and macro = 0.5 km/s."""
    return hsra(vmic=1.0e5, B=400.0, gamma=60.0, phi=30.0, vlos=0.0, macro=0.5)


def hinode_grid(lines=None):
    """The Hinode SP sampling of Fe I 6301.5/6302.5 Å (spec-data-defaults §5): 112 points of
    21.549 mÅ starting 615.9 mÅ blue of 6301.508 Å, both lines in one region (SIR indices of the
    packaged line list: 1 = Fe I 6301.5, 2 = Fe I 6302.5).

    Parameters
    ----------
    lines : LineList, optional
        Line list holding indices 1 and 2 (default: the packaged list).
    """
    from .defaults import default_lines
    from .lines import WavelengthGrid

    if lines is None:
        lines = default_lines()
    return WavelengthGrid.from_regions([("1,2", -615.9, 21.549, -615.9 + 111 * 21.549)], lines)
