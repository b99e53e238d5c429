"""Wavelength grids: SIR's regions of line indices with start, step and end in mÅ (spec-forward §2.7)."""
from __future__ import annotations

import logging
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..io._textfmt import find_header_end

from .linelist import LineList, PathLike, format_decimal

__all__ = ["WavelengthGrid", "GridRegion"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GridRegion:
    """One region of a wavelength grid: main line + blends, offsets in mÅ from the main line's λ₀.

    ``step`` is None for a region built from explicit (possibly non-uniform) wavelengths.
    """

    indices: tuple[int, ...]
    start: float
    step: float | None
    end: float
    npoints: int

    @property
    def main(self) -> int:
        """SIR index of the main (first) line."""
        return self.indices[0]


def _npoints(start: float, step: float, end: float) -> int:
    s, st, e = np.float32(start), np.float32(step), np.float32(end)
    q = np.float32((e - s) / st + np.float32(1.0))
    n = int(math.trunc(float(q)))
    if float(q) - n > 0.05:
        n += 1
    return n


def _parse_indices(spec: str | int | Sequence[int], where: str = "") -> tuple[int, ...]:
    pre = f"{where}: " if where else ""
    if isinstance(spec, (int, np.integer)):
        return (int(spec),)
    if isinstance(spec, str):
        parts = [p.strip() for p in spec.split(",")]
        if not parts or any(not p for p in parts):
            raise ValueError(f"{pre}malformed line indices {spec!r}")
        out = []
        for p in parts:
            if not re.fullmatch(r"[+]?\d+", p):
                raise ValueError(f"{pre}line indices must be integers without a decimal point, got {p!r}")
            out.append(int(p))
        return tuple(out)
    out = tuple(int(i) for i in spec)
    if not out:
        raise ValueError(f"{pre}empty list of line indices")
    return out


class WavelengthGrid:
    """SIR-style wavelength grid: regions (main line + blends) sampled in mÅ from the main line's λ₀.

    Attributes
    ----------
    regions : list of GridRegion
    line_index : ndarray of int64, (nwav,)
        SIR index of the region's first line, per point.
    offset_mA : ndarray of float64, (nwav,)
        Offset [mÅ] from that line's λ₀. For uniform regions Δλ_j = start + (j−1)·step computed in
        single precision as SIR does (``single_precision=False`` gives double-precision values).
    wavelength : ndarray of float64, (nwav,)
        Absolute air wavelengths [Å] (needs ``lines``).
    lines : LineList or None
    """

    def __init__(self, regions: list[GridRegion], offsets: list[np.ndarray], lines: LineList | None):
        self.regions = list(regions)
        self.lines = lines
        self.line_index = np.concatenate(
            [np.full(r.npoints, r.main, dtype=np.int64) for r in regions]) if regions else np.zeros(0, np.int64)
        self.offset_mA = np.concatenate(offsets).astype(np.float64) if offsets else np.zeros(0)
        if lines is not None:
            for r in regions:
                for k in r.indices:
                    if not lines.has_index(k):
                        raise ValueError(f"wavelength grid refers to line {k}, which is not in the line list "
                                         f"(indices {lines.indices})")

    @property
    def nwav(self) -> int:
        """Total number of wavelength points."""
        return int(self.offset_mA.size)

    def __len__(self) -> int:
        return self.nwav

    def __repr__(self) -> str:
        regs = "; ".join(f"{','.join(map(str, r.indices))}: {r.start}..{r.end} step {r.step} ({r.npoints})"
                         for r in self.regions)
        return f"WavelengthGrid(nwav={self.nwav}, regions=[{regs}])"

    @property
    def wavelength(self) -> np.ndarray:
        """Absolute wavelengths [Å] = λ₀(main line) + offset/1000."""
        if self.lines is None:
            raise ValueError("absolute wavelengths need a line list (pass lines=...)")
        lam0 = np.array([self.lines.by_index(i).wavelength for i in self.line_index], dtype=np.float64)
        return lam0 + self.offset_mA * 1e-3

    def region_slices(self) -> list[slice]:
        """Slices of the flat arrays belonging to each region."""
        out, k = [], 0
        for r in self.regions:
            out.append(slice(k, k + r.npoints))
            k += r.npoints
        return out

    @property
    def blends(self) -> list[tuple[int, ...]]:
        """SIR indices of the lines of each region (main line first)."""
        return [r.indices for r in self.regions]

    @classmethod
    def from_regions(cls, regions: Iterable[tuple], lines: LineList | None = None,
                     single_precision: bool = True) -> "WavelengthGrid":
        """Build from ``[(indices, start_mA, step_mA, end_mA), ...]``.

        ``indices`` is a SIR-style string ``"1,2"``, an int, or a sequence of ints (main line first).
        Number of points N = trunc((end−start)/step + 1), plus one if the fractional part exceeds 0.05.
        """
        regs, offs = [], []
        for k, item in enumerate(regions):
            if len(item) != 4:
                raise ValueError(f"region {k}: expected (indices, start, step, end), got {item!r}")
            idx, start, step, end = item
            idx_t = _parse_indices(idx, f"region {k}")
            start, step, end = float(start), float(step), float(end)
            if not all(math.isfinite(v) for v in (start, step, end)) or step == 0:
                raise ValueError(f"region {k}: start, step, end must be finite and step non-zero")
            n = _npoints(start, step, end)
            if n < 1:
                raise ValueError(f"region {k}: no wavelength points ({start}, {step}, {end})")
            j = np.arange(n)
            if single_precision:
                off = (np.float32(start) + j.astype(np.float32) * np.float32(step)).astype(np.float64)
            else:
                off = start + j * step
            regs.append(GridRegion(idx_t, start, step, end, n))
            offs.append(off)
        return cls(regs, offs, lines)

    @classmethod
    def from_wavelengths(cls, wavelength: Sequence[float] | np.ndarray, lines: LineList,
                         indices: str | int | Sequence[int] | None = None) -> "WavelengthGrid":
        """One region from absolute air wavelengths [Å] (any spacing).

        ``indices``: the SIR indices of the lines synthesised in this region, the first being the
        reference of the offsets; default: all lines of ``lines``, the first one as reference.
        """
        wl = np.asarray(wavelength, dtype=np.float64).ravel()
        if wl.size == 0 or not np.isfinite(wl).all():
            raise ValueError("wavelengths must be finite and non-empty")
        if np.any(np.diff(wl) <= 0):
            raise ValueError("wavelengths must be strictly increasing")
        idx = tuple(lines.indices) if indices is None else _parse_indices(indices)
        lam0 = lines.by_index(idx[0]).wavelength
        off = (wl - lam0) * 1e3
        step = float(np.mean(np.diff(off))) if wl.size > 1 else 0.0
        uniform = wl.size > 1 and np.allclose(np.diff(off), step, rtol=0, atol=1e-6)
        reg = GridRegion(idx, float(off[0]), step if uniform else None, float(off[-1]), wl.size)
        return cls([reg], [off], lines)

    @classmethod
    def read_sir(cls, path: PathLike, lines: LineList | None = None,
                 single_precision: bool = True) -> "WavelengthGrid":
        """Read a SIR wavelength-grid file (spec-forward §2.7).

        Optional header (§2.1); data lines ``idx1[,idx2,...] : start, step, end`` in mÅ; lines without
        ``:`` are skipped; extra numbers are ignored with a warning; rows longer than 80 characters are
        read whole with a warning (SIR truncates them).
        """
        text = Path(path).read_text().splitlines()
        start = find_header_end(text)
        regions = []
        for i in range(start, len(text)):
            row = text[i]
            if ":" not in row:
                continue
            where = f"{path}:{i + 1}"
            if len(row.rstrip()) > 80:
                warnings.warn(f"{where}: grid line longer than 80 characters (SIR would truncate it)",
                              stacklevel=2)
            left, right = row.split(":", 1)
            idx = _parse_indices(left.replace(" ", "").replace("\t", ""), where)
            toks = [t for t in re.split(r"[,\s]+", right.strip()) if t]
            if len(toks) < 3:
                raise ValueError(f"{where}: expected start, step, end (mA) after ':', got {right.strip()!r}")
            if len(toks) > 3:
                warnings.warn(f"{where}: extra numbers after start, step, end ignored", stacklevel=2)
            try:
                vals = [float(t.replace("D", "E").replace("d", "e")) for t in toks[:3]]
            except ValueError:
                raise ValueError(f"{where}: malformed numbers {right.strip()!r}") from None
            regions.append((idx, *vals))
        if not regions:
            raise ValueError(f"{path}: no grid entries ('indices : start, step, end') found")
        try:
            return cls.from_regions(regions, lines, single_precision=single_precision)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None

    def write_sir(self, path: PathLike) -> None:
        """Write a SIR wavelength-grid file (uniform regions only)."""
        with open(path, "w") as fh:
            fh.write("Line and blends indices   :   Initial lambda     Step     Final lambda\n")
            fh.write("(in this order)                    (mA)          (mA)         (mA)\n")
            fh.write("-" * 71 + "\n")
            for r in self.regions:
                if r.step is None:
                    raise ValueError("write_sir needs uniform regions (this one came from explicit wavelengths)")
                fh.write(f"{','.join(map(str, r.indices)):<28s}:  {format_decimal(r.start)}, {format_decimal(r.step)}, {format_decimal(r.end)}\n")
