"""Non-LTE synthesis through external codes: one backend interface (:class:`NlteBackend`) with RH 2
(:class:`RH`, a subprocess per pixel) and Lightweaver (:class:`Lightweaver`, in-process), unit conversions
(:mod:`pyinv.nlte.units`), departure coefficients (:class:`Departures`, SIR 2017's file format) and the
level map from pyinv's line list onto the codes' model atoms.
"""
from __future__ import annotations

from . import units
from .backend import (NLTE_CONVERGED, NLTE_CRASHED, NLTE_NOT_CONVERGED, NLTE_STATUS_NAMES, NLTE_TIMEOUT,
                      KNOWN_LEVELS, NlteBackend, NlteConfigurationError, NlteLine, NlteResult, grid_vacuum_nm,
                      level_map)
from .column import (NlteColumn, atmosphere_from_column, column_from_atmosphere, read_multi_atmosphere,
                     write_multi_atmosphere)
from .departures import Departures, read_sir_departures, write_sir_departures
from .presets import ca_ii_8542, fe_i_as_lightweaver

__all__ = ["units", "NlteBackend", "NlteResult", "NlteLine", "NlteConfigurationError", "level_map",
           "KNOWN_LEVELS", "grid_vacuum_nm", "NLTE_CONVERGED", "NLTE_NOT_CONVERGED", "NLTE_CRASHED",
           "NLTE_TIMEOUT", "NLTE_STATUS_NAMES", "NlteColumn", "column_from_atmosphere", "atmosphere_from_column",
           "read_multi_atmosphere", "write_multi_atmosphere", "Departures", "read_sir_departures",
           "write_sir_departures", "ca_ii_8542", "RH", "Lightweaver", "make_backend", "invert_pixel_nlte"]


def __getattr__(name: str):
    if name == "RH":
        from .rh import RH
        return RH
    if name == "Lightweaver":
        from .lw import Lightweaver
        return Lightweaver
    if name == "invert_pixel_nlte":
        from .desire import invert_pixel_nlte
        return invert_pixel_nlte
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def make_backend(name: str, lines=(), **options) -> NlteBackend:
    """A backend by name: ``"rh"`` or ``"lightweaver"`` (options go to its constructor)."""
    key = str(name).lower()
    if key == "rh":
        from .rh import RH
        return RH(lines, **options)
    if key in ("lightweaver", "lw"):
        from .lw import Lightweaver
        return Lightweaver(lines, **options)
    raise ValueError(f"unknown NLTE backend {name!r} (choose 'rh' or 'lightweaver')")
