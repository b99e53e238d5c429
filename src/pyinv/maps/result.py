"""Results of a map inversion: :class:`InversionResult`."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..atmosphere import COLUMNS, Atmosphere, AtmosphereErrors, canonical_name
from ..status import MAP_CODES, describe, status_name
from .pixel import COMPONENT2, INVERSION_RECORD, NLTE_FIELDS
from .store import Dims

__all__ = ["InversionResult", "MAP_NAMES", "STATUS_CODES", "nlte_summary"]

#: Every status code of a map inversion, with its meaning (from :data:`pyinv.status.TABLE`; the README's
#: "Status codes" table must match it, tests/test_status.py). Other codes 1..100 are the engine's own
#: (:func:`pyinv.status.describe` or pyinv.physics.inversion.status_message(code) give the text).
STATUS_CODES = {code: describe(code) for code in MAP_CODES}

#: Names accepted by :meth:`InversionResult.map`: the depth-dependent columns and the per-pixel scalars, by
#: their attribute names (the Atmosphere's names; ``macro2``, ``filling2``: component 2's). Old spellings
#: (``inclination``, ``azimuth``, ``v``, ``temperature``, ``stray_percent``, ...) are accepted with a
#: DeprecationWarning through :data:`pyinv.atmosphere.QUANTITY_ALIASES`.
MAP_NAMES = ("T", "Pe", "vmic", "B", "vlos", "gamma", "phi", "z", "Pg", "rho", "macro", "filling", "stray",
             "chi2", "chi2_reduced", "status", "iterations", "macro2", "filling2", "rescue")
_SCALARS = MAP_NAMES[MAP_NAMES.index("macro"):]
#: The per-pixel scalars of component 2 (``map(name, component=2)``).
_SCALARS2 = {"macro": "macro2", "filling": "filling2", "stray": "stray"}


@dataclass(eq=False)
@INVERSION_RECORD.result_fields
class InversionResult:
    """Per-pixel results of :func:`pyinv.invert`.

    Attributes
    ----------
    atmospheres : ndarray (ny, nx, ndep, 11)
        Inverted model atmospheres in SIR's column order (:data:`pyinv.atmosphere.COLUMNS`: log τ, T, Pe,
        vmic, B, vlos, γ, φ, z, Pg, ρ) and SIR units; NaN for pixels without a result.
    macro, filling, stray : ndarray (ny, nx)
        Component 1's header: macroturbulence [km/s], filling factor (1 − f₂ with two components),
        stray-light fraction α [%] (SIR's model-1 header; the α of the fit when stray light was mixed).
        ``stray_percent``, the old name of ``stray``, gives it too (with a DeprecationWarning).
    fits : ndarray (ny, nx, 4, nλ)
        Synthetic profiles of the inverted atmospheres (the fits).
    chi2 : ndarray (ny, nx)
        SIR's χ² of the final cycle as reported by ``invert_pixel`` (each Stokes parameter scaled by its
        amplitude and weight: ~10²–10³ for a fit at the noise level); ``chi2_cycles`` (ny, nx, ncycles) per
        cycle.
    chi2_reduced : ndarray (ny, nx)
        χ² against the noise model, σ = 1/S/N for every Stokes parameter, per degree of freedom
        (:func:`pyinv.physics.inversion.reduced_chi2`): ≈ 1 for a fit at the noise level. Summaries and plots show
        this one.
    status : ndarray of int (ny, nx)
        See the table of :data:`STATUS_CODES` (README "Status codes"): 0 converged, other small values
        the solver's codes, 101 masked, 102 bad input, 103 solver raised, 104 time limit, 105 worker died.
    iterations : ndarray of int (ny, nx)
    errors : ndarray (ny, nx, ndep, 11)
        Uncertainties in the same layout (column 0 repeats nothing useful: log τ is not an error);
        ``errors_header`` (ny, nx, 3) those of macro, filling, stray. NaN where the solver gives none.
    start : ndarray (ny, nx)
        Which start won (``init="multistart"``), else 0.
    rescue : ndarray of int (ny, nx)
        Per pixel, :func:`pyinv.invert_pixel`'s rescue (issue 17): 0 one descent, 1 a second descent was
        tried (the fit was far from the noise) and the first kept, 2 the second one was better and is kept.
    magnetic_start : ndarray (ny, nx, 3)
        B [G], γ, φ [deg] of the start read off each pixel's profiles (``invert_pixel(magnetic_start=
        "profiles")``, issue 17); NaN where the guess's were used (φ alone NaN: only B_los was estimated).
    seconds : ndarray (ny, nx)
        Wall time per pixel in its worker.
    line_index, offset_mA, wavelength : ndarray (nλ,)
        The wavelength grid (SIR line index, offset [mÅ], air wavelength [Å]).
    provenance : dict
        pyinv version, date, configuration text, input shapes, init strategy, executor, timings.
    filling2 : ndarray (ny, nx)
        Filling factor f₂ of component 2 in the result (model 2's header); NaN where there is no second
        component or no result. (``filling`` is component 1's header value, 1 − f₂ with two components.)
        The suffix 2 marks component 2's counterpart of a component-1 attribute (``atmospheres2``,
        ``macro2``, ``filling2``, ``errors2``): it is the ``filling=`` given to :func:`pyinv.invert`.
    atmospheres2 : ndarray (ny, nx, ndep, 11) or None
        Component-2 models (same layout as ``atmospheres``); None for a one-component inversion.
    macro2 : ndarray (ny, nx) or None
        Component 2's macroturbulence [km/s].
    errors2, errors_header2 : ndarray (ny, nx, ndep, 11), (ny, nx, 3) or None
        Uncertainties of component 2 (as ``errors`` / ``errors_header``).
    backend_calls, nlte_check, nlte_fallback : ndarray (ny, nx) or None
        NLTE maps only (``pyinv.invert(..., nlte=...)``, issue 19): the NLTE backend's calls per pixel (every
        start's; -1 without a result); with emulated departures the check (rms difference of Stokes I with
        the emulator's and the backend's b, continuum units; NaN otherwise) and whether the check failed and
        a fallback ran (1: the short one or the backend iterations, ``invert_pixel_nlte``'s ``fallback``), the
        check passed (0) or the b were the backend's (-1). Totals in
        ``provenance["nlte"]``.
    """

    # The per-pixel arrays are the result attributes of pyinv.maps.pixel.INVERSION_RECORD (added by
    # Record.result_fields: the required ones before these, the optional ones after).
    line_index: np.ndarray
    offset_mA: np.ndarray
    wavelength: np.ndarray
    provenance: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.atmospheres2 is not None and np.shape(self.atmospheres2) != np.shape(self.atmospheres):
            raise ValueError(f"atmospheres2 must have the shape of atmospheres {np.shape(self.atmospheres)}, got "
                             f"{np.shape(self.atmospheres2)}")
        # optional arrays (absent from older files; component 2 of a one-component result): their fill values
        dims = Dims(ndep=int(np.shape(self.atmospheres)[2]), nwav=int(np.shape(self.fits)[-1]),
                    ncyc=int(np.shape(self.chi2_cycles)[-1]))
        def wanted(name: str, attr: str) -> bool:   # decided before a default is allocated
            return getattr(self, attr) is None and name not in NLTE_FIELDS and (
                name not in COMPONENT2 or self.atmospheres2 is not None)

        for _, attr, default in INVERSION_RECORD.optional_defaults(dims, np.shape(self.chi2), wanted):
            setattr(self, attr, default)

    @property
    def ncomp(self) -> int:
        """Number of magnetic components (2 when ``atmospheres2`` is set)."""
        return 1 if self.atmospheres2 is None else 2

    def __getattr__(self, name: str) -> Any:
        # old attribute names (stray_percent): their canonical attribute, with a DeprecationWarning
        new = canonical_name(name, "attribute", known=self.__dataclass_fields__) if not name.startswith("_") else name
        if new != name:
            return getattr(self, new)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # ------------------------------------------------------------------ shapes
    @property
    def shape(self) -> tuple[int, int]:
        """(ny, nx)."""
        return tuple(self.status.shape)  # type: ignore[return-value]

    @property
    def ndep(self) -> int:
        return int(self.atmospheres.shape[2])

    @property
    def log_tau(self) -> np.ndarray:
        """The log τ grid of the first pixel with a result (all pixels share it in practice)."""
        lt = self.atmospheres[..., 0].reshape(-1, self.ndep)
        ok = np.isfinite(lt).all(axis=1)
        return lt[np.argmax(ok)].copy() if ok.any() else np.full(self.ndep, np.nan)

    @property
    def converged(self) -> np.ndarray:
        """Boolean map of status == 0."""
        return self.status == 0

    def summary(self) -> dict[str, int]:
        """Number of pixels per status name."""
        vals, counts = np.unique(self.status, return_counts=True)
        return {status_name(int(v)) if int(v) in MAP_CODES else f"solver status {int(v)}": int(c)
                for v, c in zip(vals, counts)}

    def describe(self) -> str:
        """A few lines for people: pixels per status and the reduced χ² (≈ 1 at the noise level)."""
        ok = np.isfinite(self.chi2_reduced) & (self.status == 0)
        lines = [f"{self.shape[0]}x{self.shape[1]} pixels: " + ", ".join(f"{k} {v}" for k, v in self.summary().items())]
        if ok.any():
            q = np.percentile(self.chi2_reduced[ok], [16, 50, 84])
            lines.append(f"reduced chi2 (converged pixels; ~1 = fit at the noise level): median {q[1]:.3g}, "
                         f"16-84% {q[0]:.3g}-{q[2]:.3g}")
        tried = int(np.count_nonzero(np.asarray(self.rescue) > 0))
        if tried:
            lines.append(f"rescue (second descent of fits far from the noise): tried on {tried} pixels, kept on "
                         f"{int(np.count_nonzero(np.asarray(self.rescue) == 2))}")
        nl = nlte_summary(self)
        if nl:
            lines.append(f"NLTE: {nl['backend_calls_per_pixel']:.2f} backend calls per pixel ({nl['backend_calls']} "
                         f"in {nl['pixels']} pixels)" + (f"; emulated departures checked on {nl['checked']} pixels, "
                                                         f"{nl['fallbacks']} fell back to the backend iterations"
                                                         if nl["checked"] or nl["fallbacks"] else ""))
        mixed = [("filling2", "filling factor f2 of component 2")]
        if "stray" in self.provenance:  # a map with stray light (pyinv.invert's provenance)
            mixed.append(("stray", "stray light alpha [%]"))
        for name, label in mixed:
            v = np.asarray(getattr(self, name))[self.status == 0]
            v = v[np.isfinite(v)]
            if v.size:
                q = np.percentile(v, [16, 50, 84])
                lines.append(f"{label} (converged pixels): median {q[1]:.3g}, 16-84% {q[0]:.3g}-{q[2]:.3g}")
        return "\n".join(lines)

    # ------------------------------------------------------------------ access
    def map(self, name: str, log_tau: float = 0.0, component: int = 1) -> np.ndarray:
        """A (ny, nx) map of a physical quantity at one log τ₅₀₀ (linear interpolation in log τ).

        Parameters
        ----------
        name : str
            ``T``, ``vlos``, ``B``, ``gamma`` (inclination), ``phi`` (azimuth), ``vmic``, ``Pe``, ``z``,
            ``Pg``, ``rho``; or a per-pixel scalar (``macro``, ``filling``, ``stray`` (α [%]), ``chi2``,
            ``chi2_reduced``, ``status``, ``iterations``, ``macro2``, ``filling2`` (f₂), ``rescue``), for which
            ``log_tau`` is ignored. Old spellings (``inclination``, ``azimuth``, ``v``, ``temperature``,
            ``γ``, ``φ``, ``stray_percent``, other capitalisations) give the same map with a
            DeprecationWarning (:data:`pyinv.atmosphere.QUANTITY_ALIASES`).
        log_tau : float
            log τ₅₀₀ inside the model grid; NaN outside it and for pixels without a result.
        component : 1 or 2
            Which component's model a depth-dependent map comes from (2 needs ``atmospheres2``); for the
            header scalars ``macro``, ``filling``, ``stray``, component 2's (``macro2``, ``filling2``, and
            the one α of the pixel); the other per-pixel scalars are the pixel's, whatever the component.
        """
        key = canonical_name(name, "map", known=MAP_NAMES)
        if key in _SCALARS:
            if component == 2 and key in _SCALARS2:  # component 2's header value (the others are the pixel's)
                if self.atmospheres2 is None:
                    raise ValueError("component=2: this result has no second component")
                key = _SCALARS2[key]
            v = getattr(self, key)
            if v is None:
                raise KeyError(f"map {name!r}: this result has no second component")
            return np.asarray(v).copy()
        if key not in COLUMNS[1:]:
            raise KeyError(f"unknown map {name!r}; expected one of {MAP_NAMES}")
        if component not in (1, 2):
            raise ValueError(f"component must be 1 or 2, got {component!r}")
        atm = self.atmospheres if component == 1 else self.atmospheres2
        if atm is None:
            raise ValueError("component=2: this result has no second component")
        col = COLUMNS.index(key)
        lt = atm[..., 0]
        val = atm[..., col]
        x = float(log_tau)
        # log τ decreases with index: j = number of points deeper than x
        j = np.sum(lt > x, axis=-1)
        nd = lt.shape[-1]
        lo = np.clip(j - 1, 0, nd - 1)
        hi = np.clip(j, 0, nd - 1)
        t0 = np.take_along_axis(lt, lo[..., None], -1)[..., 0]
        t1 = np.take_along_axis(lt, hi[..., None], -1)[..., 0]
        v0 = np.take_along_axis(val, lo[..., None], -1)[..., 0]
        v1 = np.take_along_axis(val, hi[..., None], -1)[..., 0]
        with np.errstate(invalid="ignore", divide="ignore"):
            w = np.where(t1 != t0, (x - t0) / (t1 - t0), 0.0)
        out = v0 + w * (v1 - v0)
        exact = t1 == x
        out = np.where(exact, v1, out)
        with np.errstate(invalid="ignore"):
            inside = (x <= lt.max(axis=-1)) & (x >= lt.min(axis=-1))
        out = np.where(inside & np.isfinite(lt).all(axis=-1), out, np.nan)
        return out

    def atmosphere(self, y: int, x: int) -> Atmosphere:
        """The inverted model of pixel (y, x) (ValueError for a pixel without a result)."""
        a = self.atmospheres[y, x]
        if not np.isfinite(a).all():
            raise ValueError(f"pixel ({y}, {x}) has no result (status {int(self.status[y, x])})")
        return Atmosphere.from_array(a, macro=self.macro[y, x], filling=self.filling[y, x], stray=self.stray[y, x])

    def atmosphere2(self, y: int, x: int) -> Atmosphere:
        """The inverted component-2 model of pixel (y, x), its header (macro₂, f₂, α) as SIR writes model 2
        (ValueError without a second component or a result)."""
        if self.atmospheres2 is None:
            raise ValueError("this result has no second component")
        a = self.atmospheres2[y, x]
        if not np.isfinite(a).all():
            raise ValueError(f"pixel ({y}, {x}) has no component-2 result (status {int(self.status[y, x])})")
        return Atmosphere.from_array(a, macro=self.macro2[y, x], filling=self.filling2[y, x],
                                     stray=np.nan_to_num(self.stray[y, x]))

    def atmosphere_errors(self, y: int, x: int) -> AtmosphereErrors:
        e = np.nan_to_num(self.errors[y, x])
        e[:, 0] = np.nan_to_num(self.atmospheres[y, x, :, 0])
        h = np.nan_to_num(self.errors_header[y, x])
        return AtmosphereErrors.from_array(e, macro=h[0], filling=h[1], stray=h[2])

    # ------------------------------------------------------------------ output
    def to_sir(self, folder: str | os.PathLike, pixels: Iterable[tuple[int, int]] | None = None,
               prefix: str = "pixel") -> list[Path]:
        """Write SIR files for chosen pixels: ``{prefix}_{y}_{x}.mod`` (model), ``.per`` (fitted profiles)
        and ``.err`` (uncertainties, when the solver gave them); with a second component also
        ``{prefix}_{y}_{x}_2.mod``.

        Parameters
        ----------
        folder : path
            Created if needed.
        pixels : iterable of (y, x), optional
            Default: every pixel with a result.

        Returns
        -------
        list of Path: the files written.
        """
        from ..io.sir import write_sir_model, write_sir_profiles

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if pixels is None:
            pixels = [tuple(p) for p in np.argwhere(np.isfinite(self.atmospheres).all(axis=(2, 3)))]
        out = []
        for y, x in pixels:
            y, x = int(y), int(x)
            base = folder / f"{prefix}_{y}_{x}"
            write_sir_model(base.with_suffix(".mod"), self.atmosphere(y, x))
            write_sir_profiles(base.with_suffix(".per"), self.line_index, self.offset_mA, self.fits[y, x])
            out += [base.with_suffix(".mod"), base.with_suffix(".per")]
            if self.atmospheres2 is not None and np.isfinite(self.atmospheres2[y, x]).all():
                p2 = folder / f"{prefix}_{y}_{x}_2.mod"
                write_sir_model(p2, self.atmosphere2(y, x))
                out.append(p2)
            if np.isfinite(self.errors[y, x, :, 1:8]).all():
                write_sir_model(base.with_suffix(".err"), self.atmosphere_errors(y, x))
                out.append(base.with_suffix(".err"))
        return out

    def to_fits(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write every array as an image HDU (``EXTNAME`` = attribute name) after a primary HDU with the
        provenance: ``PYINVVER``, ``DATE``, ``INIT``, ``NY``, ``NX``, ``NDEP``, ``NWAV``, ``CUBESHP`` (the
        input cube's shape and axes), ``EXECUTOR``, ``WORKERS``, ``SECONDS``, the configuration as SIR
        control-file text in ``HISTORY`` cards and the full provenance as JSON (HDU ``PROVENANCE``).
        :meth:`from_fits` reads it back."""
        from ..io.fits import write_result_maps

        p = self.provenance
        extra = {"NY": self.shape[0], "NX": self.shape[1], "NDEP": self.ndep, "NWAV": int(self.fits.shape[-1]),
                 "INIT": str(p.get("init", ""))[:68], "CUBESHP": str(p.get("cube_shape", ""))[:68],
                 "AXES": str(p.get("axes", ""))[:68], "EXECUTOR": str(p.get("executor", ""))[:68],
                 "WORKERS": str(p.get("workers", "")),
                 "NCONV": int(np.sum(self.status == 0))}
        ok = np.isfinite(self.chi2_reduced) & (self.status == 0)
        if ok.any():
            extra["CHI2RED"] = float(np.median(self.chi2_reduced[ok]))
        if np.isfinite(float(p.get("seconds", np.nan) or np.nan)):
            extra["SECONDS"] = float(p["seconds"])
        maps = {name: np.asarray(getattr(self, name)) for name in _saved() if getattr(self, name) is not None}
        maps["PROVENANCE"] = np.frombuffer(json.dumps(p, default=str).encode(), dtype=np.uint8)
        write_result_maps(path, maps, header_extra=extra, config=p.get("config_text"), overwrite=overwrite)
        return Path(path)

    @classmethod
    def from_fits(cls, path: str | os.PathLike) -> "InversionResult":
        """Read a file written by :meth:`to_fits` (by any pyinv version: an extension of an older name, e.g.
        ``stray_percent``, is read as its canonical attribute, or dropped where it only repeated one, with a
        DeprecationWarning)."""
        from ..io.fits import read_result_maps

        maps, _ = read_result_maps(path)
        saved = _saved()
        for old in [n for n in maps if n not in saved and n != "PROVENANCE"]:
            new = canonical_name(old, "fits", known=saved, stacklevel=3)
            if new == old:
                continue
            arr = maps.pop(old)
            if new not in maps:
                maps[new] = arr
        missing = [n for n in saved if n not in maps and n not in INVERSION_RECORD.result_names(optional=True)]
        if missing:
            raise ValueError(f"{path}: not a pyinv InversionResult file (missing {missing})")
        prov = {}
        if "PROVENANCE" in maps:
            prov = json.loads(np.asarray(maps["PROVENANCE"], dtype=np.uint8).tobytes().decode())
        kw = {n: np.asarray(maps[n]) for n in saved if n in maps}
        return cls(**kw, provenance=prov)

    def plot(self, path: str | os.PathLike | None = None, log_tau: float = 0.0):
        """Quick-look figure: T, vlos, B, γ, φ at ``log_tau`` and χ² (log scale). Saves a PNG when
        ``path`` is given; returns the matplotlib Figure."""
        import matplotlib

        if path is not None:
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        panels = [("T", "T [K]", "inferno", 1.0), ("vlos", "v$_{los}$ [km/s]", "RdBu_r", 1e-5),
                  ("B", "B [G]", "viridis", 1.0), ("gamma", "γ [deg]", "RdBu_r", 1.0),
                  ("phi", "φ [deg]", "twilight", 1.0)]
        fig, axes = plt.subplots(2, 3, figsize=(12, 7), constrained_layout=True)
        for ax, (name, label, cmap, scale) in zip(axes.flat, panels):
            m = self.map(name, log_tau) * scale
            kw = {}
            if name == "vlos" and np.isfinite(m).any():
                lim = np.nanmax(np.abs(m)) or 1.0
                kw = dict(vmin=-lim, vmax=lim)
            im = ax.imshow(m, origin="lower", cmap=cmap, **kw)
            ax.set_title(f"{label}, log τ = {log_tau:g}")
            fig.colorbar(im, ax=ax, shrink=0.8)
        ax = axes.flat[5]
        with np.errstate(divide="ignore", invalid="ignore"):
            im = ax.imshow(np.log10(self.chi2_reduced), origin="lower", cmap="magma")
        ax.set_title("log₁₀ reduced χ² (0 = noise level)")
        fig.colorbar(im, ax=ax, shrink=0.8)
        nbad = int(np.sum(self.status != 0))
        fig.suptitle(f"pyinv inversion {self.shape[0]}×{self.shape[1]} ({nbad} pixels not converged)")
        if path is not None:
            fig.savefig(path, dpi=110)
            plt.close(fig)
        return fig

    def __repr__(self) -> str:
        return (f"InversionResult({self.shape[0]}x{self.shape[1]} pixels, ndep={self.ndep}, "
                f"nwav={self.fits.shape[-1]}, status={self.summary()})")


def nlte_summary(res: Any) -> dict[str, Any] | None:
    """Totals of an NLTE map's per-pixel NLTE fields (``backend_calls``, ``nlte_check``, ``nlte_fallback`` of
    an :class:`InversionResult`, or a mapping of those arrays); None for an LTE map. ``pixels``: those with a
    count (≥ 0); ``backend_calls`` their sum and ``backend_calls_per_pixel`` its mean; ``checked``: pixels
    with an emulated check, ``passed`` / ``fallbacks`` of them, ``check_max`` the largest check value."""
    get = res.get if isinstance(res, dict) else lambda k: getattr(res, k, None)
    calls = get("backend_calls")
    if calls is None:
        return None
    calls = np.asarray(calls)
    fb = np.asarray(get("nlte_fallback"))
    chk = np.asarray(get("nlte_check"), dtype=np.float64)
    have = calls >= 0
    n = int(have.sum())
    checked = np.isfinite(chk)
    return {"pixels": n, "backend_calls": int(calls[have].sum()),
            "backend_calls_per_pixel": float(calls[have].mean()) if n else float("nan"),
            "checked": int(checked.sum()), "passed": int(np.sum(fb == 0)), "fallbacks": int(np.sum(fb == 1)),
            "check_max": float(chk[checked].max()) if checked.any() else float("nan")}


def _saved() -> list[str]:
    """The arrays :meth:`InversionResult.to_fits` writes (one HDU each, in this order): every field but the
    provenance."""
    return [f.name for f in fields(InversionResult) if f.name != "provenance"]
