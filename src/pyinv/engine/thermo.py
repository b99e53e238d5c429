"""Wrappers of the engine's basic physics: Voigt/Faraday–Voigt and Planck functions, equation of state,
continuum opacity, hydrostatic equilibrium and atomic data (fortran/voigt, planck, eos, continuum,
hydrostatic, atomic_data)."""
from __future__ import annotations

import numpy as np

from .core import api, check, f64
from ..errors import input_errors

def voigt(a, v) -> tuple[np.ndarray, np.ndarray]:
    """Voigt and Faraday–Voigt functions.

    Parameters
    ----------
    a : array_like
        Damping parameter (dimensionless, ≥ 0).
    v : array_like
        Reduced frequency (Δλ/Δλ_D, dimensionless). Broadcast against ``a``.

    Returns
    -------
    H, F : ndarray
        ``H(a, v) = Re w(v + i a)`` (∫H dv = √π) and ``F(a, v) = Im w(v + i a) / 2`` (SIR's
        convention; the dispersion profile of the propagation matrix is 2F), with ``w`` the Faddeeva
        function. Relative accuracy better than 1e-7 for 1e-4 ≤ a ≤ 10, |v| ≤ 50.
    """
    a_b, v_b = np.broadcast_arrays(np.asarray(a, dtype=np.float64), np.asarray(v, dtype=np.float64))
    shape = a_b.shape
    h, f, ierr = api().voigt_hf(f64(a_b.ravel()), f64(v_b.ravel()))
    check(ierr, "voigt (a must be >= 0 and v finite)")
    return h.reshape(shape), f.reshape(shape)


def voigt_derivatives(a, v) -> dict[str, np.ndarray]:
    """H, F and their partial derivatives ∂/∂v and ∂/∂a (see :func:`voigt`).

    Returns
    -------
    dict
        Keys ``H, F, dH_dv, dF_dv, dH_da, dF_da``, each shaped like the broadcast inputs.
    """
    a_b, v_b = np.broadcast_arrays(np.asarray(a, dtype=np.float64), np.asarray(v, dtype=np.float64))
    shape = a_b.shape
    out = api().voigt_hf_deriv(f64(a_b.ravel()), f64(v_b.ravel()))
    check(out[-1], "voigt_derivatives (a must be >= 0 and v finite)")
    keys = ("H", "F", "dH_dv", "dF_dv", "dH_da", "dF_da")
    return {k: o.reshape(shape) for k, o in zip(keys, out[:-1])}


def planck(wavelength_A: float, T) -> tuple[np.ndarray, np.ndarray]:
    """Planck function B_λ(T) and its temperature derivative.

    Parameters
    ----------
    wavelength_A : float
        Wavelength [Å].
    T : array_like
        Temperature [K], > 0.

    Returns
    -------
    B, dB_dT : ndarray
        B_λ [erg s⁻¹ cm⁻² sr⁻¹ cm⁻¹] and ∂B_λ/∂T [same per K], shaped like ``T``.
    """
    t = np.asarray(T, dtype=np.float64)
    b, db, ierr = api().planck_bt(float(wavelength_A) * 1e-8, f64(t.ravel()))
    check(ierr, "planck")
    return b.reshape(t.shape), db.reshape(t.shape)


# ---------------------------------------------------------------------------------------------------
# section: thermodynamics (equation of state, hydrostatic equilibrium, continuum opacity)
# Thin wrappers of the thermo_* procedures of fortran/api.f90. Abundances are passed as the linear
# ratios eps(92) = N_Z / N_H; pyinv.physics.thermo converts from log eps.
# ---------------------------------------------------------------------------------------------------

#: names of the columns returned by eos_arrays (order of pyinv_eos eos_state_to_array)
EOS_FIELDS = ("T", "Pe", "theta", "f1", "f2", "f3", "f4", "f5", "fe", "g1", "g2", "g3", "g4", "g5",
              "PH", "nH", "ne", "p_He", "p_C", "p_Na", "p_Mg", "Pg", "mu_m", "rho", "per_gram")
#: names of the continuum contributions returned by kappa_arrays
KAPPA_COMPONENTS = ("Hminus_bf", "Hminus_ff", "Heminus_ff", "HI", "H2minus_ff", "H2plus", "HeI",
                    "thomson", "rayleigh_H", "rayleigh_H2", "rayleigh_He", "CI", "NaI_MgI")


def _eps92(eps) -> np.ndarray:
    e = f64(eps)
    if e.shape != (92,):
        raise ValueError(f"abundances must have shape (92,), got {e.shape}")
    return e


def eos_arrays(T, Pe, eps, sir_compat: bool = False, derivatives: bool = False):
    """EOS at 1-D arrays T, Pe: (n, 25) array (columns EOS_FIELDS); with derivatives, also the
    partial derivatives w.r.t. T (fixed Pe) and Pe (fixed T)."""
    t = f64(T).ravel(); pe = f64(Pe).ravel()
    if t.shape != pe.shape:
        raise ValueError("T and Pe must have the same size")
    if derivatives:
        out, dt, dpe, ierr = api().thermo_eos_deriv(t, pe, _eps92(eps), int(sir_compat))
        check(ierr, "equation_of_state")
        return out, dt, dpe
    out, ierr = api().thermo_eos(t, pe, _eps92(eps), int(sir_compat))
    check(ierr, "equation_of_state")
    return out


def pe_from_pg_arrays(T, Pg, eps, sir_compat: bool = False) -> np.ndarray:
    """Electron pressure from (T, Pg) (1-D arrays)."""
    t = f64(T).ravel(); pg = f64(Pg).ravel()
    pe, ierr = api().thermo_pe_from_pg(t, pg, _eps92(eps), int(sir_compat))
    check(ierr, "pe_from_pg")
    return pe


def kappa_arrays(wavelength_A: float, T, Pe, eps, sir_compat: bool = False):
    """Continuum cross-section per H nucleus [cm²] and its (n, 13) components at one air wavelength."""
    t = f64(T).ravel(); pe = f64(Pe).ravel()
    k, comp, ierr = api().thermo_kappa(float(wavelength_A) * 1e-8, t, pe, _eps92(eps), int(sir_compat))
    check(ierr, "continuum_opacity")
    return k, comp


def kappa_deriv_arrays(wavelength_A: float, T, Pe, eps, sir_compat: bool = False):
    """κ per H nucleus and dκ/dT (fixed Pe), dκ/dPe (fixed T), EOS included."""
    t = f64(T).ravel(); pe = f64(Pe).ravel()
    k, dkt, dkp, ierr = api().thermo_kappa_deriv(float(wavelength_A) * 1e-8, t, pe, _eps92(eps),
                                                 int(sir_compat))
    check(ierr, "continuum_opacity_derivatives")
    return k, dkt, dkp


def hydrostatic_arrays(log_tau, T, pe_top: float, boundary: int, bvalue: float, mu: float, eps,
                       sir_compat: bool = False, pe_guess=None):
    """Hydrostatic equilibrium: (Pe, Pg, rho, z [km], kappa5 per gram) on the log τ grid.
    pe_guess: optional approximate Pe column used only to start the iterations."""
    lt = f64(log_tau).ravel(); t = f64(T).ravel()
    if pe_guess is None:
        pe, pg, rho, z, k5, ierr = api().thermo_hydrostatic(lt, t, float(pe_top), int(boundary),
                                                            float(bvalue), float(mu), _eps92(eps),
                                                            int(sir_compat))
    else:
        g = f64(pe_guess).ravel()
        if g.shape != lt.shape:
            raise ValueError("pe_guess must have one value per depth")
        pe, pg, rho, z, k5, ierr = api().thermo_hydrostatic_guess(lt, t, float(pe_top), int(boundary),
                                                                  float(bvalue), float(mu), _eps92(eps),
                                                                  int(sir_compat), g)
    check(ierr, "hydrostatic")
    return pe, pg, rho, z, k5


def atomic_arrays(Z: int, T):
    """(U (n,3), dU/dT (n,3), weight, chi_I, chi_II) of element Z."""
    t = f64(T).ravel()
    u, du, w, c1, c2, ierr = api().thermo_atomic(int(Z), t)
    check(ierr, "atomic data (Z must be 1..92)")
    return u, du, float(w), float(c1), float(c2)


# Every public wrapper turns a wrongly typed argument into pyinv's InputError (a ValueError).
for _name in ('voigt', 'voigt_derivatives', 'planck', 'eos_arrays', 'pe_from_pg_arrays', 'kappa_arrays', 'kappa_deriv_arrays', 'hydrostatic_arrays', 'atomic_arrays'):
    globals()[_name] = input_errors(globals()[_name])
del _name
