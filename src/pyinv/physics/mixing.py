"""Two magnetic components, filling factor and stray light (spec-forward.md §9.4; issue 13).

SIR's observed profile of a pixel is

    I = (1 − α) [(1 − f₂) I₁ + f₂ I₂] + α I_stray,        α = stray / 100,

with I₁, I₂ the syntheses of the two components (each with its own macroturbulence and the PSF), f₂ the
filling factor of component 2 (keyword ``filling``: the value SIR keeps in model 2's header), ``stray`` the
stray-light fraction in percent (``Atmosphere.stray``, SIR's model-1 header) and I_stray a stray-light
profile (keyword ``stray_profile``) used as given (not convolved). This
module validates those inputs and mixes; :func:`pyinv.synthesize` and :func:`pyinv.response_functions`
call it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..atmosphere import Atmosphere, renamed_keywords
from ..lines import WavelengthGrid

__all__ = ["Mixing", "resolve_mixing", "mix", "stray_profile_on_grid"]


@dataclass
class Mixing:
    """Validated mixing parameters for n models.

    Attributes
    ----------
    filling : ndarray (n,) or None
        Filling factor f₂ of component 2 in [0, 1]; None without a second component.
    stray_profile : ndarray (4, nλ) or None
        Stray-light Stokes profile (normalised like the synthesis); None without stray light.
    alpha : ndarray (n,)
        Stray-light fraction α = stray / 100 in [0, 1] (zeros without stray light).
    """

    filling: np.ndarray | None
    stray_profile: np.ndarray | None
    alpha: np.ndarray


def _per_model(name: str, value, n: int, lo: float, hi: float) -> np.ndarray:
    a = np.asarray(value, dtype=np.float64)
    if a.ndim > 1 or (a.ndim == 1 and a.size != n):
        raise ValueError(f"{name} must be a number or one value per model ({n}), got shape {a.shape}")
    a = np.broadcast_to(a, (n,)).astype(np.float64)
    if not np.all(np.isfinite(a)) or np.any(a < lo) or np.any(a > hi):
        raise ValueError(f"{name} must lie in [{lo:g}, {hi:g}], got {a if n > 1 else float(a[0])}")
    return a


def stray_profile_on_grid(stray, grid: WavelengthGrid) -> np.ndarray:
    """(4, nλ) stray-light profile from an array or a SIR profile file, on the grid's wavelengths."""
    if isinstance(stray, (str, os.PathLike)):
        from ..io.sir import read_sir_profiles

        prof = read_sir_profiles(stray)
        where = f"stray-light file {os.fspath(stray)}"
        if prof.offset_mA.size != grid.nwav:
            raise ValueError(f"{where}: {prof.offset_mA.size} wavelength points, the grid has {grid.nwav}")
        bad = (np.abs(prof.offset_mA - grid.offset_mA) > 1e-3) | (prof.line_index != grid.line_index)
        if np.any(bad):
            j = int(np.argmax(bad))
            raise ValueError(f"{where}: point {j} is line {prof.line_index[j]} at {prof.offset_mA[j]:.3f} mÅ, the "
                             f"grid has line {grid.line_index[j]} at {grid.offset_mA[j]:.3f} mÅ")
        s = prof.stokes
    else:
        s = np.asarray(stray, dtype=np.float64)
        if s.shape != (4, grid.nwav):
            raise ValueError(f"stray_profile must have shape (4, {grid.nwav}) (I, Q, U, V on the grid), got {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError("stray_profile contains NaN or infinite values")
    return np.array(s, dtype=np.float64)


@renamed_keywords
def resolve_mixing(models: list[Atmosphere], models2: list[Atmosphere] | None, grid: WavelengthGrid, *,
                   filling=None, stray_profile=None, stray=None) -> Mixing:
    """Validate the second component, its filling factor and the stray light for n models.

    ``filling`` (f₂) None takes component 2's ``filling`` (the header of a SIR model file), unless that is
    the Atmosphere default 1 (never a header value worth mixing: component 1 would vanish), which is a
    ValueError. ``stray`` (α [%]) None takes component 1's ``stray`` (SIR: model 1's header).
    """
    n = len(models)
    f2 = None
    if models2 is not None:
        if len(models2) != n:
            raise ValueError(f"atmos2 must hold as many models as atmos ({n}), got {len(models2)}")
        for k, (a, b) in enumerate(zip(models, models2)):
            if a.log_tau.shape != b.log_tau.shape or not np.allclose(a.log_tau, b.log_tau, rtol=0, atol=1e-6):
                raise ValueError(f"model {k}: component 2 must be on component 1's log tau grid "
                                 f"({a.ndep} points from {a.log_tau[0]:g} to {a.log_tau[-1]:g}), got "
                                 f"{b.ndep} points from {b.log_tau[0]:g} to {b.log_tau[-1]:g}")
        if filling is None:
            header = np.array([float(b.filling) for b in models2])
            if np.all(header == 1.0):
                raise ValueError("a second component needs its filling factor: pass filling (f₂ in [0, 1]) or read "
                                 "atmos2 from a SIR model file whose header holds f₂")
            filling = header
        f2 = _per_model("filling", filling, n, 0.0, 1.0)
    elif filling is not None:
        raise ValueError("filling (f₂ of component 2) is given but there is no second component (atmos2)")
    profile = None
    alpha = np.zeros(n)
    if stray_profile is not None:
        profile = stray_profile_on_grid(stray_profile, grid)
        pct = stray if stray is not None else [float(a.stray) for a in models]
        alpha = _per_model("stray", pct, n, 0.0, 100.0) / 100.0
    elif stray is not None and np.any(np.asarray(stray, dtype=np.float64) != 0):
        raise ValueError("stray (the stray-light fraction [%]) is given but there is no stray_profile")
    return Mixing(f2, profile, alpha)


def mix(s1: np.ndarray, s2: np.ndarray | None, m: Mixing) -> np.ndarray:
    """(1 − α)[(1 − f₂) s1 + f₂ s2] + α s_stray for profiles s1, s2 of shape (n, 4, nλ)."""
    out = np.array(s1, dtype=np.float64, copy=True)
    if s2 is not None and m.filling is not None:
        f = m.filling[:, None, None]
        out = (1.0 - f) * out + f * s2
    if m.stray_profile is not None:
        a = m.alpha[:, None, None]
        out = (1.0 - a) * out + a * m.stray_profile[None]
    return out
