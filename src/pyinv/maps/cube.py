"""The input cube of a map: its axes (:func:`load_cube`) and the checks that it is normalised to the
continuum (:func:`pixel_summary`, :func:`check_cube`), plus per-pixel map arguments (:func:`per_pixel_map`)."""
from __future__ import annotations

import os
from typing import Any

import numpy as np

__all__ = ["load_cube", "pixel_summary", "check_cube", "per_pixel_map", "HUGE_VALUE", "CONTINUUM_RANGE",
           "SUMMARY_BLOCK"]


def load_cube(cube: Any, axes: str = "yxsl") -> tuple[np.ndarray, np.ndarray | None, str]:
    """The cube as float64 (ny, nx, 4, nλ) plus its wavelengths (from a FITS file) and the axes used.

    ``axes`` names the numpy axis order of ``cube`` (a permutation of ``"yxsl"``: y, x, Stokes, λ). For
    a FITS path, the file's ``PYAXES`` keyword is used unless ``axes`` differs from the default.
    """
    if not isinstance(axes, str) or sorted(axes.lower()) != sorted("yxsl"):
        raise ValueError(f"axes must be a permutation of 'yxsl' (y, x, Stokes, wavelength), got {axes!r}")
    ax = axes.lower()
    wl = None
    if isinstance(cube, (str, os.PathLike)):
        from ..io.fits import read_stokes_cube

        data, wl = read_stokes_cube(cube, axes=None if ax == "yxsl" else ax)
        if data.ndim != 4:
            raise ValueError(f"{cube}: a map needs 4 axes (y, x, Stokes, wavelength), got shape {data.shape}")
        return data, wl, ax
    data = np.asarray(cube)
    if data.ndim != 4:
        raise ValueError(f"cube must have 4 axes ordered as axes={axes!r} (y, x, Stokes, wavelength); got "
                         f"{data.ndim} axes, shape {data.shape}")
    if not np.issubdtype(data.dtype, np.number) or np.iscomplexobj(data):
        raise ValueError(f"cube must be a real numeric array, got dtype {data.dtype}")
    out = np.ascontiguousarray(np.transpose(data, [ax.index(c) for c in "yxsl"]), dtype=np.float64)
    if out.shape[2] != 4:
        raise ValueError(f"the Stokes axis ('s' at position {ax.index('s')} of axes={axes!r}) has length "
                         f"{out.shape[2]}, expected 4 (I, Q, U, V); cube shape {data.shape}")
    return out, wl, ax


def per_pixel_map(name: str, v: Any, ny: int, nx: int, positive: bool = False) -> np.ndarray:
    """``v`` (a scalar or an array (ny, nx)) as a float64 map (ny, nx); ValueError naming ``name`` for another
    shape, or (``positive``) for values that are not finite and > 0."""
    a = np.asarray(v, dtype=np.float64)
    if a.ndim == 0:
        a = np.full((ny, nx), float(a))
    if a.shape != (ny, nx):
        raise ValueError(f"{name} must be a scalar or a map of shape (ny, nx) = {(ny, nx)}, got shape {a.shape}")
    if positive and not (np.isfinite(a) & (a > 0)).all():
        raise ValueError(f"{name} must be finite and > 0")
    return a


#: Largest |value| of a continuum-normalised profile that is still believable (bright network and
#: faculae stay below ~2; counts, a wrong unit or ×1e30 are far above).
HUGE_VALUE = 10.0
#: Range of the map's median continuum (the median over pixels of max I) that looks normalised.
CONTINUUM_RANGE = (0.1, 10.0)


#: Bytes of the cube looked at per block by :func:`pixel_summary` (no temporary of the cube's size).
SUMMARY_BLOCK = 8 << 20


def pixel_summary(data: np.ndarray) -> dict[str, np.ndarray]:
    """Per pixel of a cube (ny, nx, 4, nλ), computed over blocks of rows: ``finite`` (every value finite),
    ``nonpositive`` (Stokes I ≤ 0 somewhere), ``huge`` (some |value| > :data:`HUGE_VALUE`), ``zero_all``
    (Stokes I all zero), ``zero_any``, ``negative`` (Stokes I < 0 somewhere) as bool (ny, nx), and ``cont``
    (the largest Stokes I, float64)."""
    ny, nx = data.shape[:2]
    out = {k: np.zeros((ny, nx), bool) for k in ("finite", "nonpositive", "huge", "zero_all", "zero_any", "negative")}
    out["cont"] = np.zeros((ny, nx))
    per_row = max(1, int(np.prod(data.shape[1:], dtype=np.int64)) * 8)
    step = max(1, SUMMARY_BLOCK // per_row)
    with np.errstate(invalid="ignore", over="ignore"):
        for i in range(0, ny, step):
            d = data[i:i + step]
            si = d[:, :, 0, :]
            out["finite"][i:i + step] = np.isfinite(d).all(axis=(2, 3))
            out["nonpositive"][i:i + step] = (si <= 0).any(axis=-1)
            out["huge"][i:i + step] = (np.abs(d) > HUGE_VALUE).any(axis=(2, 3))
            out["zero_all"][i:i + step] = (si == 0).all(axis=-1)
            out["zero_any"][i:i + step] = (si == 0).any(axis=-1)
            out["negative"][i:i + step] = (si < 0).any(axis=-1)
            out["cont"][i:i + step] = si.max(axis=-1)
    return out


def check_cube(data: np.ndarray, dtype: Any = np.float64, valid: np.ndarray | None = None,
               summary: dict[str, np.ndarray] | None = None) -> tuple[np.ndarray, list[str]]:
    """Look for a cube that is not normalised to the continuum.

    Parameters
    ----------
    data : ndarray (ny, nx, 4, nλ)
        The cube, canonical axis order.
    dtype : numpy dtype
        The dtype the user passed (integer types mean raw counts).
    valid : bool ndarray (ny, nx), optional
        Pixels to look at (default: all).
    summary : dict, optional
        :func:`pixel_summary` of ``data`` when already computed.

    Returns
    -------
    bad : bool ndarray (ny, nx)
        Pixels with finite values that cannot be inverted: Stokes I <= 0 somewhere (negative or all-zero
        I), or some |value| > :data:`HUGE_VALUE`.
    problems : list of str
        One sentence per problem found for the map (empty when the cube looks normalised).
    """
    ny, nx = data.shape[:2]
    sel = np.ones((ny, nx), bool) if valid is None else np.asarray(valid, bool)
    sm = pixel_summary(data) if summary is None else summary
    finite, nonpositive, huge, cont = sm["finite"], sm["nonpositive"], sm["huge"], sm["cont"]
    bad = sel & finite & (nonpositive | huge)
    look = sel & finite
    problems = []
    if np.issubdtype(np.dtype(dtype), np.integer):
        problems.append(f"the cube holds integers ({np.dtype(dtype)}): raw counts, not profiles normalised to "
                        "the continuum")
    if look.any():
        med = float(np.median(cont[look]))
        if not CONTINUUM_RANGE[0] <= med <= CONTINUUM_RANGE[1]:
            problems.append(f"the median continuum (max of Stokes I per pixel) is {med:.4g}, far from 1")
    n_zero = int((sel & finite & sm["zero_all"]).sum())
    n_neg = int((sel & finite & sm["negative"]).sum())
    n_huge = int((sel & finite & huge).sum())
    if n_zero:
        problems.append(f"{n_zero} pixel(s) have an all-zero Stokes I")
    if n_neg:
        problems.append(f"{n_neg} pixel(s) have negative Stokes I")
    n_other = int((sel & finite & sm["zero_any"] & ~sm["zero_all"] & ~sm["negative"]).sum())
    if n_other:
        problems.append(f"{n_other} pixel(s) have Stokes I = 0 at some wavelength")
    if n_huge:
        problems.append(f"{n_huge} pixel(s) have values beyond ±{HUGE_VALUE:g} (in units of the continuum)")
    return bad, problems
