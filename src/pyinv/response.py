"""Response functions of the LTE Stokes synthesis (spec-inversion.md §1): :func:`response_functions`.

The engine (``fortran/response.f90``) differentiates pyinv's own discrete forward model exactly: the
propagation matrix and source function at each depth (EOS, populations, Doppler width, damping,
continuum, Zeeman components), the Hermitian formal solution (adjoint sweep, boundary index held
fixed), the HSRA normalisation and the macroturbulence/PSF convolution. The temperature RF with P_e in
hydrostatic equilibrium adds the P_e RF through the tangent-linear of the hydrostatic solver.
"""
from __future__ import annotations

import numpy as np

from . import engine
from .atmosphere import Atmosphere
from .lines import LineList, WavelengthGrid
from .synthesis import _check_mu, _prepare

__all__ = ["response_functions", "RF_KEYS"]

#: Keys of the depth-resolved response functions, in the engine's variable order.
RF_KEYS = ("T", "Pe", "vmic", "B", "vlos", "inclination", "azimuth")


def _he_pe_jacobian(cols: dict, mu: float, eps, sir_compat: bool) -> np.ndarray:
    """d Pe_i / d T_j (ndep, ndep) of hydrostatic equilibrium with the top Pe held fixed."""
    lt, t, pe = cols["log_tau"], cols["T"], cols["Pe"]
    return engine.inv_he_pe_jacobian(lt, t, float(pe[-1]), 0, 0.0, mu, eps, sir_compat=sir_compat, method=0)


def response_functions(atmos: Atmosphere, lines: LineList, grid: WavelengthGrid, *, mu: float = 1.0, psf=None,
                       abundances=None, convolve: bool = True, exact_blend_offsets: bool = False,
                       unsold_physical: bool = False, exact_voigt: bool | None = None,
                       damping_cap: bool | None = None, sir_compat: bool = False,
                       hydrostatic: bool = True) -> dict:
    """Response functions of the emergent Stokes profiles to every model column at every grid point.

    Parameters
    ----------
    atmos : Atmosphere
        One model (not a stack); its columns are used as given (P_e is not re-equilibrated), with
        ``atmos.macro`` [km/s] as the macroturbulence.
    lines, grid, psf, abundances, convolve, exact_blend_offsets, unsold_physical, exact_voigt,
    damping_cap, sir_compat
        As :func:`pyinv.synthesize`; the RFs are those of exactly that synthesis.
    mu : float
        Heliocentric cosine: enters only the hydrostatic coupling of ``T_he`` (g_eff = μ g_sun).
    hydrostatic : bool
        Compute ``T_he`` (default True).

    Returns
    -------
    dict
        ``T, Pe, vmic, B, vlos, inclination, azimuth``: arrays ``(ndep, 4, nλ)``, the derivative of
        the normalised Stokes profiles with respect to the value of that column at one grid point,
        all other columns (P_e included) held fixed; units per K, per dyn cm⁻², per cm/s, per G,
        per cm/s, per degree, per degree. ``T_he`` ``(ndep, 4, nλ)``: the temperature RF with P_e
        following hydrostatic equilibrium (top P_e fixed), ``T_he[j] = T[j] + Σ_i Pe[i] ∂Pe_i/∂T_j``
        with the tangent-linear Jacobian of the hydrostatic solver at the equilibrium of the model's T
        and top P_e (for a model in equilibrium, exactly its own P_e; otherwise an approximation). ``vmac`` ``(4, nλ)`` per km/s. ``stokes`` ``(4, nλ)``: the profiles themselves
        (identical to :func:`pyinv.synthesize`). Depth index 0 is the deepest point, as the model.
        For a field-free model (B = 0 everywhere) the B and angle RFs are zero, like the synthesis,
        which treats it as non-magnetic.
    """
    if not isinstance(atmos, Atmosphere) or atmos.stacked:
        raise ValueError("response_functions needs a single pyinv.Atmosphere (not a stack)")
    mu_f = _check_mu(mu)
    p = _prepare([atmos], lines, grid, abundances=abundances, psf=psf, convolve=convolve,
                 exact_blend_offsets=exact_blend_offsets, unsold_physical=unsold_physical,
                 exact_voigt=exact_voigt, damping_cap=damping_cap, sir_compat=sir_compat)
    cols = p["cols"][0]
    _, rf, rf_vmac, _ = engine.synth_rf(p["setup"], cols["log_tau"], p["x"][0], p["vmac"][0])
    # the profiles exactly as synthesize computes them (the RF pass's own forward sweep solves each
    # wavelength with pivoting, synthesize blocks of wavelengths without: they differ by rounding)
    stokes, _ = engine.synth_stokes(p["setup"], cols["log_tau"], p["x"][0], p["vmac"][0])
    out = {key: np.ascontiguousarray(np.transpose(rf[:, :, :, v], (2, 0, 1))) for v, key in enumerate(RF_KEYS)}
    if hydrostatic:
        jac = _he_pe_jacobian(cols, mu_f, p["eps"], bool(sir_compat))
        out["T_he"] = out["T"] + np.einsum("ikw,ij->jkw", out["Pe"], jac)
    out["vmac"] = np.asarray(rf_vmac)
    out["stokes"] = np.asarray(stokes)
    return out
