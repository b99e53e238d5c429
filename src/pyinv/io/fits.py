"""FITS input/output of Stokes cubes and result maps (astropy).

Stokes cube files
-----------------
pyinv writes a cube as

* primary HDU: the data, float64 (or the given dtype), in the numpy axis order named by the header
  keyword ``PYAXES`` (letters ``y``, ``x``, ``s`` (Stokes I,Q,U,V), ``l`` (wavelength); default
  ``"yxsl"`` = numpy shape ``(ny, nx, 4, nλ)``); a linear WCS of the wavelength axis (``CTYPEn='WAVE'``,
  Å) is added when the sampling is uniform;
* HDU ``WAVELENGTH``: the wavelengths [Å], float64 — the authoritative wavelength axis.

:func:`read_stokes_cube` reads these files and files from other tools: give the numpy axis order of
the data with ``axes`` (e.g. ``"xysl"`` for globin's Hinode sample in ``shared/data``). The wavelength
axis comes from an HDU named ``WAVELENGTH`` (unit keyword ``UNIT``/``BUNIT``: Å, nm or m), else from the
WCS keywords of the wavelength axis, else ``None``.

Result maps
-----------
:func:`write_result_maps` writes one image HDU per map (``EXTNAME`` = key) after a primary HDU holding
the provenance: ``PYINVVER`` (pyinv version), ``DATE`` (UTC), optional ``HISTORY`` lines with the
configuration (a SIR control file text or any string) and user keywords (``header_extra``).
"""
from __future__ import annotations

import datetime as _dt
import os
from typing import Any, Mapping

import numpy as np

__all__ = ["read_stokes_cube", "write_stokes_cube", "write_result_maps", "read_result_maps", "CANONICAL_AXES"]

#: pyinv's canonical cube axis order: numpy shape (ny, nx, 4, nλ).
CANONICAL_AXES = "yxsl"

PathLike = str | os.PathLike

_UNIT_TO_A = {"angstrom": 1.0, "a": 1.0, "aa": 1.0, "ang": 1.0, "nm": 10.0, "m": 1e10, "cm": 1e8, "um": 1e4,
              "micron": 1e4}


def _fits():
    try:
        from astropy.io import fits
    except ImportError as exc:  # pragma: no cover
        raise ImportError("pyinv.io.fits needs astropy (pip install astropy)") from exc
    return fits


def _check_axes(axes: str, ndim: int | None = None) -> str:
    a = axes.lower()
    if sorted(a) not in (sorted("yxsl"), sorted("xsl"), sorted("sl")):
        raise ValueError(f"axes must be a permutation of 'yxsl' (or of 'xsl' / 'sl' for 1-D/single pixels), "
                         f"got {axes!r}")
    if ndim is not None and len(a) != ndim:
        raise ValueError(f"axes {axes!r} has {len(a)} letters but the data have {ndim} dimensions")
    return a


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("pyinv")
    except Exception:
        from ..engine import PACKAGE_VERSION
        return PACKAGE_VERSION


def _unit_scale(unit: str | None) -> float:
    if not unit:
        return 1.0
    u = unit.strip().lower().replace("ångström", "angstrom")
    if u not in _UNIT_TO_A:
        raise ValueError(f"unknown wavelength unit {unit!r}")
    return _UNIT_TO_A[u]


def read_stokes_cube(path: PathLike, axes: str | None = None, hdu: int | str = 0,
                     normalize: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a Stokes cube and its wavelength axis.

    Parameters
    ----------
    path : str or path-like
    axes : str, optional
        numpy axis order of the data, a permutation of ``"yxsl"`` (``"xsl"``/``"sl"`` for a row / one
        profile). Default: the file's ``PYAXES`` keyword, else ``"yxsl"``.
    hdu : int or str
        HDU holding the data.
    normalize : bool
        Divide by the quiet-Sun continuum ``IC_HSRA`` found in the ``CONTINUUM_INTENSITY`` HDU header
        (Hinode Level-1 samples prepared by globin); ValueError if absent.

    Returns
    -------
    cube : numpy.ndarray
        float64, shape ``(ny, nx, 4, nλ)`` (``(nx, 4, nλ)`` / ``(4, nλ)`` for fewer axes).
    wavelength : numpy.ndarray or None
        float64 wavelengths [Å], or None when the file has none.
    """
    fits = _fits()
    with fits.open(path, memmap=False) as hl:
        h = hl[hdu]
        data = np.asarray(h.data, dtype=np.float64)
        hdr = h.header
        ax = _check_axes(axes or hdr.get("PYAXES", CANONICAL_AXES[-data.ndim:] if data.ndim < 4 else CANONICAL_AXES),
                         data.ndim)
        target = "".join(c for c in CANONICAL_AXES if c in ax)
        cube = np.ascontiguousarray(np.transpose(data, [ax.index(c) for c in target]))
        if cube.shape[-2] != 4:
            raise ValueError(f"{path}: the Stokes axis must have length 4, got shape {cube.shape} for axes {ax!r}")
        nl = cube.shape[-1]
        wl = None
        names = [x.name.upper() for x in hl]
        if "WAVELENGTH" in names:
            wh = hl["WAVELENGTH"]
            wl = np.asarray(wh.data, dtype=np.float64).ravel()
            wl = wl * _unit_scale(wh.header.get("UNIT", wh.header.get("BUNIT")))
        else:
            fits_axis = data.ndim - ax.index("l")  # FITS axes are numbered in reverse
            if f"CRVAL{fits_axis}" in hdr and f"CDELT{fits_axis}" in hdr:
                crpix = hdr.get(f"CRPIX{fits_axis}", 1.0)
                wl = hdr[f"CRVAL{fits_axis}"] + (np.arange(nl) + 1 - crpix) * hdr[f"CDELT{fits_axis}"]
                wl = wl * _unit_scale(hdr.get(f"CUNIT{fits_axis}", "Angstrom"))
        if wl is not None and wl.size != nl:
            raise ValueError(f"{path}: wavelength axis has {wl.size} values but the cube has {nl} wavelengths")
        if normalize:
            ic = None
            if "CONTINUUM_INTENSITY" in names:
                ic = hl["CONTINUUM_INTENSITY"].header.get("IC_HSRA")
            ic = ic if ic is not None else hdr.get("IC_HSRA")
            if ic is None:
                raise ValueError(f"{path}: normalize=True but no IC_HSRA keyword found")
            cube = cube / float(ic)
    return cube, wl


def write_stokes_cube(path: PathLike, cube: np.ndarray, wavelength: np.ndarray | None, axes: str = CANONICAL_AXES,
                      header_extra: Mapping[str, Any] | None = None, overwrite: bool = False) -> None:
    """Write a Stokes cube with its wavelength axis.

    Parameters
    ----------
    cube : array
        Data in the numpy axis order ``axes`` (default ``(ny, nx, 4, nλ)``); written as given.
    wavelength : array (nλ,) or None
        Wavelengths [Å], stored in the ``WAVELENGTH`` HDU (and as a linear WCS if uniform).
    axes : str
        numpy axis order of ``cube`` (permutation of ``"yxsl"``), stored as ``PYAXES``.
    header_extra : mapping, optional
        Extra primary-header keywords.
    """
    fits = _fits()
    data = np.asarray(cube)
    ax = _check_axes(axes, data.ndim)
    if data.shape[ax.index("s")] != 4:
        raise ValueError(f"the Stokes axis ({ax.index('s')}) must have length 4, shape is {data.shape}")
    nl = data.shape[ax.index("l")]
    ph = fits.PrimaryHDU(data)
    hdr = ph.header
    hdr["PYAXES"] = (ax, "numpy axes: y x s(IQUV) l(wavelength)")
    hdr["PYINVVER"] = (_version(), "pyinv version")
    hdr["DATE"] = (_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"), "UTC creation time")
    hl = [ph]
    if wavelength is not None:
        wl = np.asarray(wavelength, dtype=np.float64).ravel()
        if wl.size != nl:
            raise ValueError(f"wavelength has {wl.size} values, the cube has {nl} wavelengths")
        n = data.ndim - ax.index("l")
        if nl > 1 and np.allclose(np.diff(wl), wl[1] - wl[0], rtol=1e-9, atol=0):
            hdr[f"CTYPE{n}"] = "WAVE"
            hdr[f"CUNIT{n}"] = "Angstrom"
            hdr[f"CRPIX{n}"] = 1.0
            hdr[f"CRVAL{n}"] = float(wl[0])
            hdr[f"CDELT{n}"] = float(wl[1] - wl[0])
        wh = fits.ImageHDU(wl, name="WAVELENGTH")
        wh.header["UNIT"] = "Angstrom"
        hl.append(wh)
    for k, v in (header_extra or {}).items():
        hdr[k] = v
    fits.HDUList(hl).writeto(path, overwrite=overwrite)


def write_result_maps(path: PathLike, maps: Mapping[str, np.ndarray], header_extra: Mapping[str, Any] | None = None,
                      config: Any = None, overwrite: bool = False) -> None:
    """Write result maps (one image HDU per map) with provenance headers.

    Parameters
    ----------
    maps : mapping name → array
        E.g. ``{"T": (ny, nx, ndep), "B": ..., "chi2": (ny, nx)}``; names become ``EXTNAME`` (≤ 68 chars).
    header_extra : mapping, optional
        Extra primary-header keywords (values: str/int/float/bool, or ``(value, comment)``).
    config : InversionConfig or str, optional
        Stored as ``HISTORY`` lines (a configuration object is written as its SIR control-file text).
    """
    fits = _fits()
    ph = fits.PrimaryHDU()
    hdr = ph.header
    hdr["PYINVVER"] = (_version(), "pyinv version")
    hdr["DATE"] = (_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"), "UTC creation time")
    hdr["ORIGIN"] = "pyinv"
    for k, v in (header_extra or {}).items():
        hdr[k] = v
    if config is not None:
        text = config.to_sir_text() if hasattr(config, "to_sir_text") else str(config)
        hdr["CONFIG"] = ("HISTORY", "configuration follows in HISTORY cards")
        for line in text.splitlines():
            line = line.rstrip()
            while len(line) > 70:
                hdr.add_history(line[:70])
                line = line[70:]
            hdr.add_history(line)
    hl = [ph]
    for name, arr in maps.items():
        h = fits.ImageHDU(np.asarray(arr), name=str(name))
        h.header["MAPNAME"] = (str(name), "map name as given")
        hl.append(h)
    fits.HDUList(hl).writeto(path, overwrite=overwrite)


def read_result_maps(path: PathLike) -> tuple[dict[str, np.ndarray], Any]:
    """Read maps written by :func:`write_result_maps`: ``({name: array}, primary header)``."""
    fits = _fits()
    out = {}
    with fits.open(path, memmap=False) as hl:
        hdr = hl[0].header.copy()
        for h in hl[1:]:
            out[h.header.get("MAPNAME", h.name)] = np.array(h.data)
    return out, hdr
