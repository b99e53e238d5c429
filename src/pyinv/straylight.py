"""Stray-light profiles of a map inversion (``pyinv.invert(..., stray=...)``; issue 13).

A map's stray light comes as one (4, nλ) profile for every pixel, a SIR ``.per`` file, a cube of
per-pixel profiles (ny, nx, 4, nλ), or ``"local"``: for each pixel the mean Stokes I of the pixels
around it in a square window (the pixel itself excluded; Q, U, V zero), the way Hinode/SP users build
the stray-light (non-magnetic) profile of each pixel. Profiles are stored as a small table plus one row
index per pixel, the same table-and-index form as the initial guesses, so a single profile costs nothing
per pixel.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from .lines import WavelengthGrid

__all__ = ["DEFAULT_STRAY_WINDOW", "local_stray_profiles", "stray_table"]

#: Default side of the ``stray="local"`` window [pixels]: 7 pixels ≈ 1.1″ on Hinode/SP's 0.16″ pixels,
#: close to the ~1″ box of the Hinode quiet-Sun inversions (Orozco Suárez et al. 2007). A 3-pixel
#: window mostly averages the pixel's own (magnetic) neighbours, which is not stray light.
DEFAULT_STRAY_WINDOW = 7


def _check_window(window: Any) -> int:
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)):
        raise ValueError(f"stray_window must be an odd integer >= 3 (pixels), got {window!r}")
    w = int(window)
    if w < 3 or w % 2 == 0:
        raise ValueError(f"stray_window must be an odd integer >= 3 (pixels), got {w}")
    return w


_BLOCK = 16


def _window_sum(a: np.ndarray, h: int, axis: int) -> np.ndarray:
    """Sums of ``a`` over index windows [i − h, i + h] along ``axis``, clipped to the array (cumulative sums)."""
    n = a.shape[axis]
    c = np.cumsum(a, axis=axis)
    c = np.concatenate([np.zeros_like(np.take(c, [0], axis=axis)), c], axis=axis)
    lo = np.clip(np.arange(n) - h, 0, n)
    hi = np.clip(np.arange(n) + h + 1, 0, n)
    return np.take(c, hi, axis=axis) - np.take(c, lo, axis=axis)


def local_stray_profiles(cube: np.ndarray, window: int = DEFAULT_STRAY_WINDOW,
                         usable: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel stray-light profiles: the mean Stokes I of the surrounding pixels.

    Parameters
    ----------
    cube : ndarray (ny, nx, 4, nλ)
        Stokes profiles normalised to the continuum (canonical axis order).
    window : int
        Side of the square window centred on each pixel [pixels], odd and >= 3. At the edges of the
        map only the pixels inside the map are averaged.
    usable : bool ndarray (ny, nx), optional
        Pixels whose Stokes I may enter the means (default: those with finite I at every wavelength).
        Pixels that are not usable never contribute.

    Returns
    -------
    profiles : ndarray (ny, nx, 4, nλ)
        Row 0 the mean I of the usable pixels of the window other than the pixel itself [units of the
        continuum]; Q, U, V zero. NaN where no such pixel exists.
    count : ndarray of int (ny, nx)
        How many pixels were averaged.
    """
    mean_i, n = _local_mean_i(cube, window, usable)
    out = np.zeros(mean_i.shape[:2] + (4, mean_i.shape[-1]))
    out[:, :, 0] = mean_i
    out[n == 0] = np.nan
    return out, n


def _local_mean_i(cube: np.ndarray, window: int, usable: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Mean I (ny, nx, nλ) and counts (ny, nx) of :func:`local_stray_profiles`."""
    w = _check_window(window)
    c = np.asarray(cube)
    if c.ndim != 4 or c.shape[2] != 4:
        raise ValueError(f"cube must be (ny, nx, 4, nλ), got shape {c.shape}")
    ny, nx, _, nwav = c.shape
    stokes_i = c[:, :, 0, :]
    ok = np.isfinite(stokes_i).all(axis=-1)
    if usable is not None:
        ok &= np.asarray(usable, bool)
    h = w // 2
    n = np.rint(_window_sum(_window_sum(ok.astype(np.float64), h, 0), h, 1) - ok).astype(np.int64)
    out = np.full((ny, nx, nwav), np.nan)
    has = n > 0
    for j in range(0, nwav, _BLOCK):  # a block of wavelengths at a time: memory ~ a few (ny, nx, _BLOCK) arrays
        vals = np.where(ok[..., None], stokes_i[:, :, j:j + _BLOCK], 0.0)
        total = _window_sum(_window_sum(vals, h, 0), h, 1) - vals  # the pixel itself excluded
        out[has, j:j + _BLOCK] = total[has] / n[has][:, None]
    return out, n


def stray_table(stray: Any, cube: np.ndarray, grid: WavelengthGrid, *, window: Any = DEFAULT_STRAY_WINDOW,
                usable: np.ndarray | None = None, needed: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray, str]:
    """Validate ``stray`` of :func:`pyinv.invert` and turn it into a table plus a row per pixel.

    Parameters
    ----------
    stray : (4, nλ) array, SIR ``.per`` path, (ny, nx, 4, nλ) array or ``"local"``
    cube : ndarray (ny, nx, 4, nλ)
        The observed map (for ``"local"`` and the shapes).
    grid : WavelengthGrid
        A ``.per`` file must hold the grid's lines and offsets (within 1e-3 mÅ).
    window : int
        ``stray_window`` of ``"local"``.
    usable : bool ndarray (ny, nx), optional
        Pixels whose I may enter a ``"local"`` mean.
    needed : bool ndarray (ny, nx), optional
        Pixels that will be inverted: their profile must be finite.

    Returns
    -------
    table : ndarray (nprof, 4, nλ), or (ny·nx, 1, nλ) for ``"local"``: Stokes I only, Q, U, V being zero
    index : ndarray of int32 (ny·nx,)
        Row of ``table`` per pixel (raster order).
    what : str
        A short description for the provenance.

    Raises
    ------
    ValueError
        Wrong shape, wavelengths that differ from the grid, non-finite values where a pixel is inverted,
        a bad window, a ``"local"`` pixel without any usable neighbour.
    """
    from .mixing import _stray_profile

    ny, nx = cube.shape[:2]
    nwav = grid.nwav
    sel = np.ones((ny, nx), bool) if needed is None else np.asarray(needed, bool)
    if isinstance(stray, str) and stray.lower() == "local":
        mean_i, n = _local_mean_i(cube, window, usable)
        lonely = sel & (n == 0)
        if lonely.any():
            y, x = (int(v) for v in np.argwhere(lonely)[0])
            raise ValueError(f"stray='local' (stray_window={int(window)}): pixel ({y}, {x}) has no usable "
                             f"neighbour in its window ({int(lonely.sum())} such pixel(s)); use a larger "
                             "stray_window or mask them")
        # Stokes I only (Q, U, V are zero): a quarter of the memory of full profiles
        return (mean_i.reshape(ny * nx, 1, nwav), np.arange(ny * nx, dtype=np.int32),
                f"local(window={int(window)})")
    if isinstance(stray, str) and not os.path.exists(stray) and not stray.lower().endswith(".per"):
        raise ValueError(f"stray={stray!r}: expected 'local', a SIR .per file, a (4, nλ) profile or a "
                         "(ny, nx, 4, nλ) cube of profiles")
    if isinstance(stray, (str, os.PathLike)):
        if not os.path.isfile(stray):
            raise ValueError(f"stray={os.fspath(stray)!r}: no such stray-light file")
        return _stray_profile(stray, grid)[None], np.zeros(ny * nx, np.int32), os.fspath(stray)
    a = np.asarray(stray)
    if not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a):
        raise ValueError(f"stray must be a real array, got dtype {a.dtype}")
    a = a.astype(np.float64)
    if a.ndim == 2:
        if a.shape != (4, nwav):
            raise ValueError(f"stray must have shape (4, {nwav}) (I, Q, U, V on the grid) or ({ny}, {nx}, 4, "
                             f"{nwav}), got {a.shape}")
        return _stray_profile(a, grid)[None], np.zeros(ny * nx, np.int32), "profile"
    if a.shape != (ny, nx, 4, nwav):
        raise ValueError(f"stray must have shape (4, {nwav}) or (ny, nx, 4, nλ) = {(ny, nx, 4, nwav)}, got "
                         f"{a.shape}")
    bad = sel & ~np.isfinite(a).all(axis=(2, 3))
    if bad.any():
        y, x = (int(v) for v in np.argwhere(bad)[0])
        raise ValueError(f"stray: the profile of pixel ({y}, {x}) contains NaN or infinite values "
                         f"({int(bad.sum())} inverted pixel(s) affected)")
    return np.ascontiguousarray(a.reshape(ny * nx, 4, nwav)), np.arange(ny * nx, dtype=np.int32), "cube"
