"""Small fixed inputs for tests and benchmarks that must not need ``../shared``: a THEVENIN-like abundance
set and a small synthetic map of graded quiet-Sun models (importable by subprocess scripts)."""
from __future__ import annotations

import numpy as np

__all__ = ["thevenin_like_abundances", "graded_map"]

#: log ε (H = 12) of Z = 1 … 28; heavier elements absent
_LOG_EPS = {1: 12.0, 2: 11.0, 3: 1.0, 4: 1.15, 5: 2.6, 6: 8.69, 7: 7.99, 8: 8.91, 9: 4.56, 10: 8.0,
            11: 6.28, 12: 7.53, 13: 6.43, 14: 7.50, 15: 5.45, 16: 7.21, 17: 5.5, 18: 6.58, 19: 5.05,
            20: 6.36, 21: 2.99, 22: 4.88, 23: 3.91, 24: 5.61, 25: 5.47, 26: 7.46, 27: 4.85, 28: 6.18}


def thevenin_like_abundances() -> np.ndarray:
    """A fixed abundance set (THEVENIN-like), log ε with H = 12, shape (92,) (0 for absent elements)."""
    ab = np.zeros(92)
    for z, v in _LOG_EPS.items():
        ab[z - 1] = v
    return ab


def graded_map(ny: int, nx: int, B=None):
    """Lines, the Hinode grid and a (ny, nx, 4, nλ) cube of the default guess with vlos graded over
    −1 … +1 km/s (and B over ``B`` = (first, last) G when given), in raster order.

    Returns
    -------
    lines, grid, cube
    """
    import pyinv
    from pyinv import models

    lines = pyinv.default_lines()
    grid = models.hinode_grid(lines)
    g = models.default_guess()
    n = ny * nx
    v = np.linspace(-1e5, 1e5, n)
    if B is None:
        atms = [g.with_columns(vlos=x) for x in v]
    else:
        atms = [g.with_columns(vlos=x, B=b) for x, b in zip(v, np.linspace(B[0], B[1], n))]
    return lines, grid, pyinv.synthesize(atms, lines, grid).reshape(ny, nx, 4, -1)
