"""Spectral lines and wavelength grids.

* :mod:`~pyinv.lines.linelist` — :class:`SpectralLine` (one transition), :class:`LineList` (an ordered
  sequence of lines, also addressable by SIR index: ``lines.by_index(200)``; ``lines[i]`` is positional),
  :func:`zeeman_components` (the Zeeman pattern π, σ_r, σ_b of a line, the reference for the engine),
  Landé factors and Wigner 3j symbols.
* :mod:`~pyinv.lines.grid` — :class:`WavelengthGrid`, SIR's wavelength grid (regions with blends).
"""
from .linelist import (ELEMENTS, ENGINE_FIELDS, SIR_GEFF_OVERRIDE, LineList, SpectralLine, ZeemanPattern,
                       effective_lande, element_number, lande_factor, wigner3j, zeeman_components)
from .grid import GridRegion, WavelengthGrid

__all__ = ["SpectralLine", "LineList", "ZeemanPattern", "zeeman_components", "lande_factor", "wigner3j",
           "effective_lande", "WavelengthGrid", "GridRegion", "ELEMENTS", "element_number",
           "ENGINE_FIELDS", "SIR_GEFF_OVERRIDE"]
