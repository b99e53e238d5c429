"""Per-pixel inputs of a map inversion beyond the profiles and the component-1 guesses: the second
component (its guess and filling factor f₂) and the stray light (its profile and fraction α) — issue 13.

They travel to the workers by the same routes as the guesses: tables of distinct rows plus one row index
per pixel, memory-mapped by local pool workers (:func:`pyinv.maps.pool.run_pixels`) and cut into
self-contained sub-tables for tasks sent to other executors (:meth:`PixelExtras.subset`). Per pixel,
:meth:`PixelExtras.kwargs` gives the keywords of :func:`pyinv.invert_pixel` (``guess2``, ``filling``,
``stray_profile``, ``stray``); a run without a second component or stray light passes none of them, so
solvers with the plain signature keep working.

Stray light (``pyinv.invert(..., stray_profile=...)``) comes as one (4, nλ) profile for every pixel, a SIR
``.per`` file, a cube of per-pixel profiles (ny, nx, 4, nλ), or ``"local"``: for each pixel the mean
Stokes I of the pixels around it in a square window (the pixel itself excluded; Q, U, V zero), the way
Hinode/SP users build the stray-light (non-magnetic) profile of each pixel. Profiles are stored as a
small table plus one row index per pixel, the same table-and-index form as the initial guesses, so a
single profile costs nothing per pixel (:func:`stray_table`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from ..atmosphere import Atmosphere
from ..physics.inversion import check_mixing_settings
from ..lines import WavelengthGrid
from ..physics.mixing import stray_profile_on_grid
from .cube import per_pixel_map

__all__ = ["PixelExtras", "component2_guesses", "map_extras", "DEFAULT_STRAY_WINDOW", "check_stray_window",
           "local_stray_profiles", "stray_table"]

#: log τ values of component 2 must equal component 1's within this (SIR model files carry 4 decimals).
LOG_TAU_TOL = 1e-4
#: f₂ of fallback pixels (a guess2 cube whose model of the pixel is missing) when ``filling`` is not given.
FALLBACK_FILLING2 = 0.5


@dataclass
class PixelExtras:
    """Second component and stray light of every pixel (raster order), as tables plus row indices.

    The attribute names are the store's (and the fingerprints of existing checkpoints hash them): ``filling2``
    holds component 2's filling factor (the ``filling=`` of :func:`pyinv.invert_pixel`), ``stray_percent``
    α (its ``stray=``), ``stray`` the profiles (its ``stray_profile=``).

    Attributes
    ----------
    table2, header2 : ndarray (m2, ndep, 11), (m2, 3) or None
        Component-2 guess models (SIR column order and units) and their (macro [km/s], filling, stray [%]).
    index2 : ndarray of int32 (npix,) or None
        Row of ``table2`` per pixel.
    filling2 : ndarray (npix,) or None
        f₂ per pixel; NaN = the guess's header value (``invert_pixel(filling=None)``).
    stray, stray_index : ndarray (ms, 4, nλ) or (ms, 1, nλ), int32 (npix,) or None
        Stray-light profiles (or their Stokes I alone, Q, U, V being zero) and the row per pixel.
    stray_percent : ndarray (npix,) or None
        α [%] per pixel; NaN = component 1's guess header value (``invert_pixel(stray=None)``).
    """

    table2: np.ndarray | None = None
    header2: np.ndarray | None = None
    index2: np.ndarray | None = None
    filling2: np.ndarray | None = None
    stray: np.ndarray | None = None
    stray_index: np.ndarray | None = None
    stray_percent: np.ndarray | None = None

    @property
    def ncomp(self) -> int:
        """Number of magnetic components (1 or 2)."""
        return 1 if self.table2 is None else 2

    @property
    def empty(self) -> bool:
        return self.table2 is None and self.stray is None

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays that are set, by attribute name (for writing to shared memory)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    @classmethod
    def from_arrays(cls, arrays: dict[str, Any]) -> "PixelExtras":
        return cls(**{k: v for k, v in arrays.items() if k in {f.name for f in fields(cls)}})

    def subset(self, ids: np.ndarray) -> "PixelExtras":
        """The rows that pixels ``ids`` use, with their indices renumbered 0..len(ids)-1 (a self-contained
        chunk for an executor)."""
        ids = np.asarray(ids, dtype=np.int64)
        out = PixelExtras()
        if self.table2 is not None:
            rows, inv = np.unique(np.asarray(self.index2)[ids], return_inverse=True)
            out.table2 = np.ascontiguousarray(self.table2[rows])
            out.header2 = np.ascontiguousarray(self.header2[rows])
            out.index2 = inv.astype(np.int32).reshape(-1)
            out.filling2 = np.ascontiguousarray(self.filling2[ids])
        if self.stray is not None:
            rows, inv = np.unique(np.asarray(self.stray_index)[ids], return_inverse=True)
            out.stray = np.ascontiguousarray(self.stray[rows])
            out.stray_index = inv.astype(np.int32).reshape(-1)
            out.stray_percent = np.ascontiguousarray(self.stray_percent[ids])
        return out

    def kwargs(self, p: int) -> dict[str, Any]:
        """The ``invert_pixel`` keywords of pixel ``p`` (empty without a second component or stray light)."""
        kw: dict[str, Any] = {}
        if self.table2 is not None:
            r = int(self.index2[p])
            m, f, s = (float(v) for v in self.header2[r])
            kw["guess2"] = Atmosphere.from_array(np.array(self.table2[r]), macro=m, filling=f, stray=s)
            f2 = float(self.filling2[p])
            kw["filling"] = f2 if np.isfinite(f2) else None
        if self.stray is not None:
            row = np.asarray(self.stray[int(self.stray_index[p])], dtype=np.float64)
            prof = np.zeros((4, row.shape[-1]))
            prof[:row.shape[0]] = row  # a table of Stokes I only ("local"): Q, U, V zero
            kw["stray_profile"] = prof
            a = float(self.stray_percent[p])
            kw["stray"] = a if np.isfinite(a) else None
        return kw


def _is_result_file(g: Any) -> bool:
    return isinstance(g, (str, os.PathLike)) and os.fspath(g).lower().endswith((".fits", ".fit", ".fits.gz", ".fts"))


def component2_guesses(guess2: Any, ny: int, nx: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """Component-2 guess models as a table, its header and a row per pixel.

    Parameters
    ----------
    guess2 : Atmosphere, SIR .mod path, array (ndep, 8|11), stacked Atmosphere of ny·nx models (raster
        order), array (ny, nx, ndep, 8|11), or an InversionResult / its FITS file with a second component
        (its ``atmospheres2``, ``macro2``, ``filling2`` and ``stray``).

    Returns
    -------
    table (m, ndep, 11), header (m, 3), index (ny·nx,) int32, and a short description. Rows of a cube
    that are missing (NaN, T or Pe <= 0: pixels an earlier run did not invert) are replaced by
    :func:`pyinv.models.default_guess` with f₂ = :data:`FALLBACK_FILLING2`.
    """
    from ..init.base import as_atmosphere
    from .result import InversionResult

    g = guess2
    if _is_result_file(g):
        g = InversionResult.from_fits(g)
    if isinstance(g, InversionResult):
        if g.atmospheres2 is None:
            raise ValueError("guess2: the InversionResult has no second component (atmospheres2 is None)")
        atm = np.asarray(g.atmospheres2, dtype=np.float64)
        hdr = np.stack([g.macro2, g.filling2, g.stray], axis=-1).astype(np.float64)
        what = "result"
    elif isinstance(g, Atmosphere) and g.stacked:
        if g.nmodels != ny * nx:
            raise ValueError(f"guess2: a stacked Atmosphere must hold ny*nx = {ny * nx} models (raster order), "
                             f"got {g.nmodels}")
        atm = g.to_array().reshape(ny, nx, g.ndep, 11)
        hdr = np.stack([np.broadcast_to(np.asarray(v, dtype=np.float64), (ny * nx,)) for v in (g.macro, g.filling, g.stray)],
                       axis=-1).reshape(ny, nx, 3)
        what = "stack"
    elif not isinstance(g, (Atmosphere, str, os.PathLike)) and np.ndim(g) == 4:
        atm = np.asarray(g, dtype=np.float64)
        if atm.shape[-1] not in (8, 11):
            raise ValueError(f"guess2: expected an atmosphere cube (ny, nx, ndep, 8|11), got shape {atm.shape}")
        if atm.shape[-1] == 8:
            atm = np.concatenate([atm, np.zeros(atm.shape[:-1] + (3,))], axis=-1)
        hdr = np.empty(atm.shape[:2] + (3,))
        hdr[..., 0], hdr[..., 1], hdr[..., 2] = 0.5, 1.0, 0.0  # no header: f2 must come from `filling`
        what = "cube"
    else:
        a = as_atmosphere(g, "guess2")
        return (a.to_array()[None].astype(np.float64), np.array([[float(a.macro), float(a.filling), float(a.stray)]]),
                np.zeros(ny * nx, np.int32), "single")
    if atm.shape[:2] != (ny, nx):
        raise ValueError(f"guess2: the atmosphere cube is {atm.shape[:2]} pixels, the map is {(ny, nx)}")
    table = np.ascontiguousarray(atm.reshape(ny * nx, atm.shape[2], 11))
    header = np.ascontiguousarray(hdr.reshape(ny * nx, 3))
    bad = ~np.isfinite(table).all(axis=(1, 2)) | (table[:, :, 1] <= 0).any(axis=1) | (table[:, :, 2] <= 0).any(axis=1)
    if bad.any():
        from ..models import default_guess

        fb = default_guess()
        if fb.ndep != table.shape[1]:
            raise ValueError(f"guess2: {int(bad.sum())} pixel(s) have no model and the fallback (default guess, "
                             f"{fb.ndep} points) has another number of depth points than guess2 ({table.shape[1]})")
        table[bad] = fb.to_array()
        header[bad] = (float(fb.macro), FALLBACK_FILLING2, 0.0)
    return table, header, np.arange(ny * nx, dtype=np.int32), f"{what}, {int(bad.sum())} fallback pixel(s)"


def _first_bad(name: str, values: np.ndarray, bad: np.ndarray, ny: int, nx: int, rule: str) -> None:
    bad = np.asarray(bad).reshape(ny, nx)
    if bad.any():
        y, x = (int(v) for v in np.argwhere(bad)[0])
        raise ValueError(f"{name}={float(np.asarray(values).reshape(ny, nx)[y, x])!r} at pixel ({y}, {x}): "
                         f"{rule} ({int(bad.sum())} inverted pixel(s) affected)")


def _check_alpha(name: str, alpha: np.ndarray, use: np.ndarray, config: Any, ny: int, nx: int,
                 hint: str = "") -> None:
    """Stray-light fractions α [%] of the pixels ``use``: in [0, 100), and nonzero when α is inverted."""
    _first_bad(name, alpha, use & ~((alpha >= 0) & (alpha < 100)), ny, nx,
               "the stray-light fraction alpha [%] must lie in [0, 100)")
    if _inverted_in_any_cycle(config, "invert_stray"):
        _first_bad(name, alpha, use & (alpha == 0), ny, nx,
                   f"the stray light is inverted (invert_stray={config.invert_stray!r}) and needs a nonzero "
                   f"starting alpha{hint}")


def _inverted_in_any_cycle(config: Any, name: str) -> bool:
    ncyc = max(1, int(config.cycles))
    return any(int(config.value(name, c) or 0) != 0 for c in range(1, ncyc + 1))


def map_extras(*, guess2: Any, filling: Any, stray_profile: Any, stray_window: Any, stray: Any,
               data: np.ndarray, grid: Any, config: Any, table: np.ndarray, header: np.ndarray,
               gindex: np.ndarray, valid: np.ndarray, usable: np.ndarray) -> tuple[PixelExtras, dict]:
    """Validate the second-component and stray-light arguments of :func:`pyinv.invert` and build the
    per-pixel :class:`PixelExtras`.

    Parameters
    ----------
    guess2, filling, stray_profile, stray_window, stray :
        As given to :func:`pyinv.invert`.
    data : ndarray (ny, nx, 4, nλ)
        The map.
    grid, config :
        The wavelength grid and the inversion configuration (``stray_file`` is used when ``stray_profile``
        is None; ``invert_stray`` needs α ≠ 0 and a profile).
    table, header, gindex :
        The component-1 guess table (nmod, ndep, 11), its header (nmod, 3) and rows per pixel (npix, nstart).
    valid : bool (ny, nx)
        Pixels that will be inverted (only their values are checked).
    usable : bool (ny, nx)
        Pixels whose Stokes I may enter ``stray_profile="local"`` means.

    Returns
    -------
    PixelExtras, and a dict of descriptions for the provenance.

    Raises
    ------
    ValueError naming the argument and the value.
    """
    ny, nx = data.shape[:2]
    npix = ny * nx
    vflat = np.asarray(valid, bool).reshape(-1)
    ex = PixelExtras()
    info: dict[str, Any] = {}
    # ---------------------------------------------------------------- second component
    if guess2 is None:
        if filling is not None:
            raise ValueError(f"filling={filling!r} (f2 of component 2) is given but there is no second component "
                             "(guess2=None)")
        # as invert_pixel refuses them, but once for the map instead of a failed (status 103) pixel each
        check_mixing_settings(config, two_components=False)
    else:
        t2, h2, i2, what = component2_guesses(guess2, ny, nx)
        ndep = table.shape[1]
        if t2.shape[1] != ndep:
            raise ValueError(f"guess2 has {t2.shape[1]} depth points, component 1's guess has {ndep}: component 2 "
                             "must be on component 1's log tau grid")
        # every (component-1 start, component-2 row) pair of an inverted pixel: same log tau
        g1 = np.asarray(gindex)
        for s in range(g1.shape[1]):
            use = vflat & (g1[:, s] >= 0)
            if not use.any():
                continue
            lt1 = table[g1[use, s], :, 0]
            lt2 = t2[i2[use], :, 0]
            off = np.abs(lt1 - lt2).max(axis=1)
            if (off > LOG_TAU_TOL).any():
                k = int(np.argmax(off > LOG_TAU_TOL))
                p = int(np.nonzero(use)[0][k])
                j = int(np.argmax(np.abs(lt1[k] - lt2[k])))
                raise ValueError(f"guess2: component 2 must be on component 1's log tau grid; at pixel "
                                 f"({p // nx}, {p % nx}) depth point {j} has log tau = {lt2[k, j]:g}, component 1 "
                                 f"{lt1[k, j]:g}")
        if filling is None:
            f2 = np.full(npix, np.nan)
            hf = h2[i2, 1]
            bad = vflat & ~((hf > 0) & (hf < 1))
            if bad.any():
                p = int(np.argmax(bad))
                raise ValueError(f"filling is None and guess2's header filling factor is {float(hf[p])!r} at pixel "
                                 f"({p // nx}, {p % nx}): pass filling= (f2 in (0, 1)) or a guess2 whose header "
                                 "holds f2")
        else:
            f2 = per_pixel_map("filling", filling, ny, nx).reshape(-1)
            _first_bad("filling", f2, vflat & ~((f2 > 0) & (f2 < 1)), ny, nx, "the filling factor f2 must lie in (0, 1)")
        ex.table2, ex.header2, ex.index2, ex.filling2 = t2, h2, i2, np.ascontiguousarray(f2)
        info["guess2"] = what
        info["filling"] = None if filling is None else ("scalar" if np.ndim(filling) == 0 else "map")
    # ---------------------------------------------------------------- stray light
    explicit = stray_profile is not None
    if stray_profile is None and getattr(config, "stray_file", None):
        stray_profile = config.resolve("stray_file")
        info["stray_from"] = "config.stray_file"
    if stray_profile is None:
        if stray is not None:
            raise ValueError(f"stray={stray!r} (the stray-light fraction [%]) is given but there is no stray-light "
                             "profile (stray_profile=None and no stray_file in the configuration)")
        check_mixing_settings(config, has_stray=False)
    else:
        st, si, what = stray_table(stray_profile, data, grid, window=stray_window, usable=usable, needed=valid)
        if stray is None:
            alpha = np.full(npix, np.nan)
            # every start of an inverted pixel takes its own header value
            g1 = np.asarray(gindex)
            for s in range(g1.shape[1]):
                use = vflat & (g1[:, s] >= 0)
                hs = np.where(use, header[np.maximum(g1[:, s], 0), 2], 0.5)
                _check_alpha("stray (from the guess's header)", hs, use, config, ny, nx,
                             ": pass stray= or a guess whose header holds it")
                if not _inverted_in_any_cycle(config, "invert_stray") and explicit and use.any() and (
                        hs[use] == 0).all():
                    raise ValueError(f"stray_profile={what!r} is given but alpha is 0 for every pixel (stray=None "
                                     "takes the guess's header value, 0 here) and it is not inverted: the stray "
                                     "light would have no effect; pass stray= (alpha [%])")
        else:
            alpha = per_pixel_map("stray", stray, ny, nx).reshape(-1)
            _check_alpha("stray", alpha, vflat, config, ny, nx)
        ex.stray, ex.stray_index, ex.stray_percent = st, si, np.ascontiguousarray(alpha)
        info["stray_profile"] = what
        info["stray"] = None if stray is None else ("scalar" if np.ndim(stray) == 0 else "map")
    return ex, info


# ------------------------------------------------------------------------------------------------ stray light
#: Default side of the ``stray_profile="local"`` window [pixels]: 7 pixels ≈ 1.1″ on Hinode/SP's 0.16″ pixels,
#: close to the ~1″ box of the Hinode quiet-Sun inversions (Orozco Suárez et al. 2007). A 3-pixel
#: window mostly averages the pixel's own (magnetic) neighbours, which is not stray light.
DEFAULT_STRAY_WINDOW = 7


def check_stray_window(window: Any) -> int:
    """``stray_window`` as an int (ValueError unless an odd integer >= 3)."""
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
    w = check_stray_window(window)
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


def stray_table(stray_profile: Any, cube: np.ndarray, grid: WavelengthGrid, *, window: Any = DEFAULT_STRAY_WINDOW,
                usable: np.ndarray | None = None, needed: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray, str]:
    """Validate ``stray_profile`` of :func:`pyinv.invert` and turn it into a table plus a row per pixel.

    Parameters
    ----------
    stray_profile : (4, nλ) array, SIR ``.per`` path, (ny, nx, 4, nλ) array or ``"local"``
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
    stray = stray_profile
    ny, nx = cube.shape[:2]
    nwav = grid.nwav
    sel = np.ones((ny, nx), bool) if needed is None else np.asarray(needed, bool)
    if isinstance(stray, str) and stray.lower() == "local":
        mean_i, n = _local_mean_i(cube, window, usable)
        lonely = sel & (n == 0)
        if lonely.any():
            y, x = (int(v) for v in np.argwhere(lonely)[0])
            raise ValueError(f"stray_profile='local' (stray_window={int(window)}): pixel ({y}, {x}) has no usable "
                             f"neighbour in its window ({int(lonely.sum())} such pixel(s)); use a larger "
                             "stray_window or mask them")
        # Stokes I only (Q, U, V are zero): a quarter of the memory of full profiles
        return (mean_i.reshape(ny * nx, 1, nwav), np.arange(ny * nx, dtype=np.int32),
                f"local(window={int(window)})")
    if isinstance(stray, str) and not os.path.exists(stray) and not stray.lower().endswith(".per"):
        raise ValueError(f"stray_profile={stray!r}: expected 'local', a SIR .per file, a (4, nλ) profile or a "
                         "(ny, nx, 4, nλ) cube of profiles")
    if isinstance(stray, (str, os.PathLike)):
        if not os.path.isfile(stray):
            raise ValueError(f"stray_profile={os.fspath(stray)!r}: no such stray-light file")
        return stray_profile_on_grid(stray, grid)[None], np.zeros(ny * nx, np.int32), os.fspath(stray)
    a = np.asarray(stray)
    if not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a):
        raise ValueError(f"stray_profile must be a real array, got dtype {a.dtype}")
    a = a.astype(np.float64)
    if a.ndim == 2:
        if a.shape != (4, nwav):
            raise ValueError(f"stray_profile must have shape (4, {nwav}) (I, Q, U, V on the grid) or ({ny}, {nx}, 4, "
                             f"{nwav}), got {a.shape}")
        return stray_profile_on_grid(a, grid)[None], np.zeros(ny * nx, np.int32), "profile"
    if a.shape != (ny, nx, 4, nwav):
        raise ValueError(f"stray_profile must have shape (4, {nwav}) or (ny, nx, 4, nλ) = {(ny, nx, 4, nwav)}, got "
                         f"{a.shape}")
    bad = sel & ~np.isfinite(a).all(axis=(2, 3))
    if bad.any():
        y, x = (int(v) for v in np.argwhere(bad)[0])
        raise ValueError(f"stray_profile: the profile of pixel ({y}, {x}) contains NaN or infinite values "
                         f"({int(bad.sum())} inverted pixel(s) affected)")
    return np.ascontiguousarray(a.reshape(ny * nx, 4, nwav)), np.arange(ny * nx, dtype=np.int32), "cube"
