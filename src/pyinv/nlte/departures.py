"""Departure coefficients per spectral line (:class:`Departures`) and SIR 2017's departure file.

b = n/n* of the lower and upper level of each NLTE line, on one log τ₅₀₀ grid. The engine takes a
:class:`Departures` on the model's depth grid (deepest first, as pyinv's models).

SIR 2017's "NLTE Departures filename" file (spec-nlte-rh §5, spec-forward §2.9): ASCII, four numbers per
row — line index (the number before "=" in the LINES file), log τ₅₀₀, b_lower, b_upper — in one block of
rows per line, every block with the same number of rows on the same τ grid; SIR reads at most 1000 rows,
300 depths and 50 lines and interpolates linearly in log τ (extrapolating linearly from the end pair).
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["Departures", "read_sir_departures", "write_sir_departures", "SIR_MAX_ROWS", "SIR_MAX_DEPTHS",
           "SIR_MAX_LINES", "clean_tau_grid"]

SIR_MAX_ROWS = 1000
SIR_MAX_DEPTHS = 300
SIR_MAX_LINES = 50


def _interp_linear_extrap(x_new: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Linear interpolation in x (any order), linear extrapolation from the end pairs (as SIR)."""
    order = np.argsort(x)
    xs, ys = x[order], y[..., order]
    if xs.size == 1:
        return np.broadcast_to(ys[..., :1], ys.shape[:-1] + (x_new.size,)).copy()
    k = np.clip(np.searchsorted(xs, x_new) - 1, 0, xs.size - 2)
    x0, x1 = xs[k], xs[k + 1]
    w = (x_new - x0) / (x1 - x0)
    return ys[..., k] * (1.0 - w) + ys[..., k + 1] * w


def clean_tau_grid(log_tau: np.ndarray, threshold: float = 1e-6) -> np.ndarray:
    """Indices of a depth grid to keep so that log τ is strictly monotonic with steps > ``threshold``.

    RH's τ₅₀₀ has runs of nearly equal values in the transition region (spec-nlte-rh §2.11); the first
    point of each run is kept, scanning from the deep end.
    """
    lt = np.asarray(log_tau, dtype=np.float64)
    deep_first = lt[0] > lt[-1] if lt.size > 1 else True
    idx = np.arange(lt.size) if deep_first else np.arange(lt.size)[::-1]
    keep = [int(idx[0])]
    for i in idx[1:]:
        if lt[keep[-1]] - lt[i] > threshold:
            keep.append(int(i))
    return np.array(keep, dtype=np.int64)


@dataclass
class Departures:
    """Departure coefficients of the levels of NLTE lines on one log τ₅₀₀ grid.

    Attributes
    ----------
    log_tau : ndarray (ndep,)
        log₁₀ τ₅₀₀, strictly decreasing (deepest point first, pyinv's model order).
    lines : tuple of int
        SIR line indices (as in the LINES file / :class:`pyinv.LineList`).
    b_lower, b_upper : ndarray (nlines, ndep)
        n/n* of the lower and upper level of each line (dimensionless).
    """

    log_tau: np.ndarray
    lines: tuple[int, ...]
    b_lower: np.ndarray
    b_upper: np.ndarray

    def __post_init__(self) -> None:
        self.log_tau = np.asarray(self.log_tau, dtype=np.float64).ravel()
        self.lines = tuple(int(i) for i in self.lines)
        n, d = len(self.lines), self.log_tau.size
        self.b_lower = np.asarray(self.b_lower, dtype=np.float64).reshape(n, d)
        self.b_upper = np.asarray(self.b_upper, dtype=np.float64).reshape(n, d)
        if d > 1 and np.any(np.diff(self.log_tau) >= 0):
            raise ValueError("Departures.log_tau must be strictly decreasing (deepest point first)")
        if len(set(self.lines)) != n:
            raise ValueError(f"duplicate line indices in {self.lines}")
        for name in ("b_lower", "b_upper"):
            a = getattr(self, name)
            if not np.all(np.isfinite(a)) or np.any(a <= 0):
                raise ValueError(f"{name} must be finite and positive")

    @property
    def ndep(self) -> int:
        return int(self.log_tau.size)

    def line(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(b_lower, b_upper) of SIR line ``index``; ones when the line carries no coefficients."""
        if index in self.lines:
            k = self.lines.index(index)
            return self.b_lower[k], self.b_upper[k]
        one = np.ones(self.ndep)
        return one, one.copy()

    def on_grid(self, log_tau: np.ndarray) -> "Departures":
        """The coefficients on another log τ grid: linear in log τ, linear extrapolation beyond the ends
        (SIR 2017's rule), floored at 1e-30 so that extrapolation never gives b ≤ 0."""
        lt = np.asarray(log_tau, dtype=np.float64).ravel()
        bl = np.maximum(_interp_linear_extrap(lt, self.log_tau, self.b_lower), 1e-30)
        bu = np.maximum(_interp_linear_extrap(lt, self.log_tau, self.b_upper), 1e-30)
        return Departures(lt, self.lines, bl, bu)

    @classmethod
    def from_depth_grid(cls, log_tau: np.ndarray, lines: Sequence[int], b_lower: np.ndarray,
                        b_upper: np.ndarray, model_log_tau: np.ndarray | None = None,
                        threshold: float = 1e-6) -> "Departures":
        """Build from a code's own depth grid (either order, possibly with near-equal τ points, e.g. RH's
        top-first τ₅₀₀ from ``geometry.out``), optionally interpolated onto ``model_log_tau``."""
        lt = np.asarray(log_tau, dtype=np.float64).ravel()
        keep = clean_tau_grid(lt, threshold)
        bl = np.asarray(b_lower, dtype=np.float64).reshape(len(lines), lt.size)[:, keep]
        bu = np.asarray(b_upper, dtype=np.float64).reshape(len(lines), lt.size)[:, keep]
        d = cls(lt[keep], tuple(lines), bl, bu)
        return d if model_log_tau is None else d.on_grid(model_log_tau)


def write_sir_departures(path: str | os.PathLike, dep: Departures, *, check_sir_limits: bool = True) -> None:
    """Write ``dep`` as a SIR 2017 departure file (blocks per line, deepest point first).

    Raises
    ------
    ValueError
        With ``check_sir_limits``: more than 1000 rows, 300 depths or 50 lines (SIR would drop data).
    """
    nl, nd = len(dep.lines), dep.ndep
    if check_sir_limits:
        if nd > SIR_MAX_DEPTHS or nl * nd > SIR_MAX_ROWS or nl > SIR_MAX_LINES:
            raise ValueError(f"{nl} lines x {nd} depths exceed SIR 2017's limits ({SIR_MAX_ROWS} rows, "
                             f"{SIR_MAX_DEPTHS} depths, {SIR_MAX_LINES} lines); interpolate onto a coarser "
                             "grid with Departures.on_grid or pass check_sir_limits=False")
    rows = []
    for k, idx in enumerate(dep.lines):
        for j in range(nd):
            rows.append(f"{idx:5d} {dep.log_tau[j]:12.6f} {dep.b_lower[k, j]:16.9e} {dep.b_upper[k, j]:16.9e}")
    Path(path).write_text("\n".join(rows) + "\n")


def read_sir_departures(path: str | os.PathLike) -> Departures:
    """Read a SIR 2017 departure file.

    Raises
    ------
    ValueError
        Malformed rows, blocks of unequal length, or a line index appearing in two separate blocks.
    """
    idx, lt, bl, bu = [], [], [], []
    for no, line in enumerate(Path(path).read_text().splitlines(), 1):
        s = line.strip()
        if not s:
            continue
        t = s.split()
        if len(t) < 4:
            raise ValueError(f"{path}:{no}: expected 4 numbers (index, log tau, b_lower, b_upper), got {s!r}")
        try:
            vals = [float(x.replace("D", "E").replace("d", "e")) for x in t[:4]]
        except ValueError:
            raise ValueError(f"{path}:{no}: not a number in {s!r}") from None
        idx.append(int(round(vals[0])))
        lt.append(vals[1])
        bl.append(vals[2])
        bu.append(vals[3])
    if not idx:
        raise ValueError(f"{path}: no departure coefficients")
    # blocks: a new block whenever the index changes
    starts = [0] + [i for i in range(1, len(idx)) if idx[i] != idx[i - 1]]
    ends = starts[1:] + [len(idx)]
    lines = [idx[s] for s in starts]
    if len(set(lines)) != len(lines):
        raise ValueError(f"{path}: a line index appears in more than one block ({lines})")
    sizes = {e - s for s, e in zip(starts, ends)}
    if len(sizes) != 1:
        raise ValueError(f"{path}: blocks of unequal length {sorted(sizes)} (SIR requires one τ grid for all lines)")
    nd = sizes.pop()
    lt_a = np.array(lt).reshape(len(lines), nd)
    if not np.allclose(lt_a, lt_a[-1][None, :], rtol=0, atol=1e-6):
        warnings.warn(f"{path}: the blocks have different log tau grids; SIR uses the last block's for all "
                      "lines, and so does pyinv", stacklevel=2)
    grid = lt_a[-1]
    bl_a = np.array(bl).reshape(len(lines), nd)
    bu_a = np.array(bu).reshape(len(lines), nd)
    if nd > 1 and grid[0] < grid[-1]:  # written top first: store deepest first
        grid, bl_a, bu_a = grid[::-1], bl_a[:, ::-1], bu_a[:, ::-1]
    if nd * len(lines) > SIR_MAX_ROWS:
        warnings.warn(f"{path}: {nd * len(lines)} rows; SIR 2017 reads only the first {SIR_MAX_ROWS}", stacklevel=2)
    return Departures(grid, tuple(lines), bl_a, bu_a)
