"""Ready configurations for non-LTE work."""
from __future__ import annotations

from typing import Any

__all__ = ["ca_ii_8542"]

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
