"""Unit and convention conversions between pyinv (SIR) models and non-LTE codes (RH, Lightweaver).

Every conversion between the two worlds goes through this module (spec-nlte-rh §8.4):

================  ====================================  =======================================
quantity          pyinv / SIR                           RH (MULTI files) / Lightweaver
================  ====================================  =======================================
depth order       deepest point first                   top of the atmosphere first
electron density  P_e [dyn cm⁻²]                        n_e [cm⁻³] (RH files), [m⁻³] (Lightweaver)
velocity          v_LOS [cm s⁻¹], > 0 = redshift        v [km s⁻¹] (RH) / [m s⁻¹] (LW), > 0 = towards
                                                        the observer (blueshift)
microturbulence   [cm s⁻¹]                              [km s⁻¹] (RH) / [m s⁻¹] (LW)
field strength    [G]                                   [T]
angles            γ, φ [deg]                            γ, χ [rad] (same angles, χ = φ)
wavelength        air [Å] (line lists, grids)           vacuum [nm]
================  ====================================  =======================================

The air/vacuum conversion is one formula used in both directions (the IAU standard of Morton 2000,
based on Ciddor 1996 / Edlén), so the round trip is exact to ~1e-12 nm; RH's own conversion is switched
off (``VACUUM_TO_AIR = FALSE``), because RH's two directions disagree by 0.28 pm at 630 nm.
"""
from __future__ import annotations

import numpy as np

__all__ = ["K_BOLTZMANN_CGS", "reverse_depth", "ne_from_pe", "pe_from_ne", "velocity_sir_to_rh",
           "velocity_rh_to_sir", "gauss_to_tesla", "tesla_to_gauss", "deg_to_rad", "rad_to_deg",
           "air_to_vacuum", "vacuum_to_air", "air_angstrom_to_vacuum_nm", "vacuum_nm_to_air_angstrom",
           "hydrogen_lte_populations"]

#: Boltzmann constant [erg K⁻¹].
K_BOLTZMANN_CGS = 1.380649e-16
#: Ionisation energy of hydrogen [eV] and Boltzmann constant [eV K⁻¹].
_CHI_H_EV = 13.598434
_K_EV = 8.617333262e-5


def reverse_depth(a: np.ndarray, axis: int = -1) -> np.ndarray:
    """Reverse the depth axis (SIR deepest-first ↔ RH top-first); returns a contiguous copy."""
    return np.ascontiguousarray(np.flip(np.asarray(a), axis=axis))


def ne_from_pe(Pe: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Electron density n_e [cm⁻³] from the electron pressure P_e [dyn cm⁻²] and T [K] (n_e = P_e/kT)."""
    return np.asarray(Pe, dtype=np.float64) / (K_BOLTZMANN_CGS * np.asarray(T, dtype=np.float64))


def pe_from_ne(ne: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Electron pressure P_e [dyn cm⁻²] from n_e [cm⁻³] and T [K]."""
    return np.asarray(ne, dtype=np.float64) * K_BOLTZMANN_CGS * np.asarray(T, dtype=np.float64)


def velocity_sir_to_rh(v_cm_s: np.ndarray) -> np.ndarray:
    """SIR v_LOS [cm s⁻¹] (> 0 redshift) → RH v [km s⁻¹] (> 0 towards the observer)."""
    return -1e-5 * np.asarray(v_cm_s, dtype=np.float64)


def velocity_rh_to_sir(v_km_s: np.ndarray) -> np.ndarray:
    """RH v [km s⁻¹] (> 0 towards the observer) → SIR v_LOS [cm s⁻¹] (> 0 redshift)."""
    return -1e5 * np.asarray(v_km_s, dtype=np.float64)


def gauss_to_tesla(B: np.ndarray) -> np.ndarray:
    """Field strength [G] → [T]."""
    return 1e-4 * np.asarray(B, dtype=np.float64)


def tesla_to_gauss(B: np.ndarray) -> np.ndarray:
    """Field strength [T] → [G]."""
    return 1e4 * np.asarray(B, dtype=np.float64)


def deg_to_rad(a: np.ndarray) -> np.ndarray:
    """Degrees → radians."""
    return np.deg2rad(np.asarray(a, dtype=np.float64))


def rad_to_deg(a: np.ndarray) -> np.ndarray:
    """Radians → degrees."""
    return np.rad2deg(np.asarray(a, dtype=np.float64))


def _n_air(sigma2: np.ndarray) -> np.ndarray:
    """Refractive index of standard air for σ² [µm⁻²] (σ = vacuum wavenumber)."""
    return 1.0 + 8.34254e-5 + 2.406147e-2 / (130.0 - sigma2) + 1.5998e-4 / (38.9 - sigma2)


def vacuum_to_air(lam_vac: np.ndarray) -> np.ndarray:
    """Vacuum → air wavelength, both in the same unit, which must be **Å** (valid above 2000 Å)."""
    lv = np.asarray(lam_vac, dtype=np.float64)
    s2 = (1e4 / lv) ** 2
    return lv / _n_air(s2)


def air_to_vacuum(lam_air: np.ndarray, iterations: int = 4) -> np.ndarray:
    """Air → vacuum wavelength [Å]: the exact inverse of :func:`vacuum_to_air` (fixed-point iteration,
    converged to < 1e-10 Å after 3 steps)."""
    la = np.asarray(lam_air, dtype=np.float64)
    lv = la.copy()
    for _ in range(iterations):
        lv = la * _n_air((1e4 / lv) ** 2)
    return lv


def air_angstrom_to_vacuum_nm(lam_air_A: np.ndarray) -> np.ndarray:
    """Air wavelength [Å] → vacuum wavelength [nm]."""
    return 0.1 * air_to_vacuum(lam_air_A)


def vacuum_nm_to_air_angstrom(lam_vac_nm: np.ndarray) -> np.ndarray:
    """Vacuum wavelength [nm] → air wavelength [Å]."""
    return vacuum_to_air(10.0 * np.asarray(lam_vac_nm, dtype=np.float64))


def hydrogen_lte_populations(T: np.ndarray, n_neutral: np.ndarray, n_proton: np.ndarray,
                             nlevel: int = 5) -> np.ndarray:
    """The six hydrogen populations of a MULTI atmosphere (n₁ … n₅, n_p) in LTE.

    Parameters
    ----------
    T : array (ndep,)
        Temperature [K].
    n_neutral, n_proton : array (ndep,)
        Number densities of neutral hydrogen and of protons (any unit; the result has the same unit).
    nlevel : int
        Bound levels (5 for RH's H_6 atom).

    Returns
    -------
    ndarray (nlevel + 1, ndep)
        Bound levels n = 1 … nlevel with Boltzmann populations (g = 2n², E = χ_H(1 − 1/n²)), normalised
        so that they sum to ``n_neutral``, then the protons.
    """
    T = np.asarray(T, dtype=np.float64)
    n = np.arange(1, nlevel + 1, dtype=np.float64)[:, None]
    w = 2.0 * n ** 2 * np.exp(-_CHI_H_EV * (1.0 - 1.0 / n ** 2) / (_K_EV * T[None, :]))
    pops = np.empty((nlevel + 1, T.size))
    pops[:nlevel] = w / w.sum(axis=0) * np.asarray(n_neutral, dtype=np.float64)[None, :]
    pops[nlevel] = np.asarray(n_proton, dtype=np.float64)
    return pops
