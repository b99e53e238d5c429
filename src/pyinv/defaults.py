"""Packaged default data (``pyinv/data``): line list, abundances, file locations.

Every data file carries its citation in its header; see ``docs/spec-data-defaults.md``.
"""
from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

import numpy as np

__all__ = ["data_path", "default_lines", "default_abundances", "DEFAULT_LINES_FILE", "DEFAULT_ABUNDANCES_FILE"]

DEFAULT_LINES_FILE = "lines_default.txt"
DEFAULT_ABUNDANCES_FILE = "abundances_asplund2009.txt"


def data_path(name: str) -> Path:
    """Path of a packaged data file in ``pyinv/data`` (FileNotFoundError if absent)."""
    p = Path(str(resources.files("pyinv").joinpath("data", name)))
    if not p.is_file():
        # namespace/extend_path installs: look beside this module too
        alt = Path(__file__).resolve().parent / "data" / name
        if alt.is_file():
            return alt
        raise FileNotFoundError(f"packaged data file {name!r} not found ({p})")
    return p


def default_lines():
    """pyinv's default line list (:class:`pyinv.lines.LineList`, 8 lines: Fe I 6301.5, 6302.5, 15648.5,
    15652.9 (g_eff = 1.45), 5250.2, 5250.6, 6173.3 and Ca II 8542; SIR indices 1–8)."""
    from .lines import LineList
    return LineList.read_sir(data_path(DEFAULT_LINES_FILE))


def default_abundances() -> np.ndarray:
    """Asplund et al. (2009) solar abundances: float64 array (92,), log ε (H = 12) at index Z − 1.

    The packaged file is read once per process; every call returns a new array (the caller may change it).
    (Every pixel's synthesis set-up asks for it: reading the file each time cost 0.6 ms per pixel, 2–3 % of a
    CNN-started pixel's inversion.)"""
    return _packaged_abundances().copy()


@functools.lru_cache(maxsize=1)
def _packaged_abundances() -> np.ndarray:
    from .io.sir import read_abundances
    a = np.asarray(read_abundances(data_path(DEFAULT_ABUNDANCES_FILE)), dtype=np.float64)
    a.flags.writeable = False
    return a
