"""Ready configurations for non-LTE work."""
from __future__ import annotations

from typing import Any

__all__ = ["ca_ii_8542", "fe_i_as_lightweaver", "FE23_LINE_DATA"]

#: Ca II 8542 window: ±1.5 Å at 10 mÅ (301 points), offsets from the line's air λ₀.
CA_II_8542_REGION = (-1500.0, 10.0, 1500.0)


def ca_ii_8542(lines: Any = None, *, with_fe_hinode: bool = False, index: int = 8):
    """Line list and wavelength grid for Ca II 8542 (±1.5 Å at 10 mÅ), optionally with Fe I 6301.5/6302.5
    on the Hinode SP sampling as a second region.

    Parameters
    ----------
    lines : LineList, optional
        Default: pyinv's packaged list (Ca II 8542 is index 8, Fe I 6301.5/6302.5 are 1 and 2).
    with_fe_hinode : bool
        Add the Hinode SP region of Fe I 6301.5/6302.5 (112 points of 21.549 mÅ).
    index : int
        SIR index of Ca II 8542 in ``lines``.

    Returns
    -------
    (LineList, WavelengthGrid)
        The grid's NLTE lines map onto RH's/Lightweaver's ``CaII`` atom (levels 2 → 4) and, for Fe I,
        ``Fe23`` (see :func:`pyinv.nlte.level_map`).
    """
    from ..defaults import default_lines
    from ..lines import WavelengthGrid

    if lines is None:
        lines = default_lines()
    regions = [(index, *CA_II_8542_REGION)]
    if with_fe_hinode:
        regions.insert(0, ("1,2", -615.9, 21.549, -615.9 + 111 * 21.549))
    return lines, WavelengthGrid.from_regions(regions, lines)


#: Fe I 6301.5 / 6302.5 as Lightweaver's ``Fe23`` atom has them: SIR index -> (log gf, Unsöld enhancement of
#: the van der Waals damping, vacuum wavelength [nm]).
FE23_LINE_DATA = {1: (-0.672, 1.0, 630.3240716665862), 2: (-1.131, 4.0, 630.4237721204667)}


def fe_i_as_lightweaver(lines: Any = None, *, half_width: float = 600.0, step: float = 10.0):
    """Fe I 6301.5 / 6302.5 with the line data of Lightweaver's ``Fe23`` atom (log gf, Unsöld damping, no
    ABO σ/α, λ from its vacuum positions), the grid centred on the nominal positions of ``lines``, and
    Lightweaver's iron abundance (7.44): what makes pyinv's LTE synthesis comparable with the backend's.

    Returns
    -------
    (LineList, WavelengthGrid, abundances)
        ``abundances`` is pyinv's default table (log ε, H = 12) with Fe = 7.44.
    """
    import dataclasses

    from ..defaults import default_abundances, default_lines
    from ..lines import LineList, WavelengthGrid
    from .units import vacuum_nm_to_air_angstrom

    base = default_lines() if lines is None else lines
    d = FE23_LINE_DATA
    fe = LineList([dataclasses.replace(ln, loggf=d[ln.index][0], sigma=0.0, alpha=0.0, enhancement=d[ln.index][1],
                                       wavelength=float(vacuum_nm_to_air_angstrom(d[ln.index][2])))
                   if ln.index in d else ln for ln in base])
    sh = {k: (fe.by_index(k).wavelength - base.by_index(k).wavelength) * 1e3 for k in (1, 2)}
    grid = WavelengthGrid.from_regions([(k, -half_width - sh[k], step, half_width - sh[k]) for k in (1, 2)], fe)
    ab = default_abundances().copy()
    ab[25] = 7.44
    return fe, grid, ab
