"""Response functions of the LTE Stokes synthesis (spec-inversion.md §1): :func:`response_functions`.

The engine (``fortran/response.f90``) differentiates pyinv's own discrete forward model exactly: the
propagation matrix and source function at each depth (EOS, populations, Doppler width, damping,
continuum, Zeeman components), the Hermitian formal solution (adjoint sweep, boundary index held
fixed), the HSRA normalisation and the macroturbulence/PSF convolution. The temperature RF with P_e in
hydrostatic equilibrium adds the P_e RF through the tangent-linear of the hydrostatic solver.
"""
from __future__ import annotations

from ..errors import input_errors
import numpy as np

from .. import engine
from ..atmosphere import DEPTH_COLUMNS, Atmosphere, QuantityDict, renamed_keywords
from ..lines import LineList, WavelengthGrid
from .synthesis import _check_mu, _prepare

__all__ = ["response_functions", "RF_KEYS"]

#: Keys of the depth-resolved response functions, in the engine's variable order: the Atmosphere's column
#: names (old spellings such as ``inclination``, ``azimuth``, ``vmac`` still find their key, with a
#: DeprecationWarning: :data:`pyinv.atmosphere.QUANTITY_ALIASES`).
RF_KEYS = DEPTH_COLUMNS


def _he_pe_jacobian(cols: dict, mu: float, eps, sir_compat: bool) -> np.ndarray:
    """d Pe_i / d T_j (ndep, ndep) of hydrostatic equilibrium with the top Pe held fixed."""
    lt, t, pe = cols["log_tau"], cols["T"], cols["Pe"]
    return engine.inv_he_pe_jacobian(lt, t, float(pe[-1]), 0, 0.0, mu, eps, sir_compat=sir_compat, method=0)


@renamed_keywords
@input_errors
def response_functions(atmos: Atmosphere, lines: LineList, grid: WavelengthGrid, *, mu: float = 1.0, psf=None,
                       abundances=None, convolve: bool = True, exact_blend_offsets: bool = False,
                       unsold_physical: bool = False, exact_voigt: bool | None = None,
                       damping_cap: bool | None = None, sir_compat: bool = False,
                       hydrostatic: bool = True, atmos2: Atmosphere | None = None, filling: float | None = None,
                       stray_profile=None, stray: float | None = None, departures=None,
                       departure_form: str = "sir") -> dict:
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
    dict (a :class:`pyinv.atmosphere.QuantityDict`)
        ``T, Pe, vmic, B, vlos, gamma, phi``: arrays ``(ndep, 4, nλ)``, the derivative of
        the normalised Stokes profiles with respect to the value of that column at one grid point,
        all other columns (P_e included) held fixed; units per K, per dyn cm⁻², per cm/s, per G,
        per cm/s, per degree, per degree. ``T_he`` ``(ndep, 4, nλ)``: the temperature RF with P_e
        following hydrostatic equilibrium (top P_e fixed), ``T_he[j] = T[j] + Σ_i Pe[i] ∂Pe_i/∂T_j``
        with the tangent-linear Jacobian of the hydrostatic solver at the equilibrium of the model's T
        and top P_e (for a model in equilibrium, exactly its own P_e; otherwise an approximation). ``macro``
        ``(4, nλ)`` per km/s. ``stokes`` ``(4, nλ)``: the profiles themselves
        (identical to :func:`pyinv.synthesize`). Depth index 0 is the deepest point, as the model.
        For a field-free model (B = 0 everywhere) the B and angle RFs are zero, like the synthesis,
        which treats it as non-magnetic.

        With ``atmos2``, ``filling``, ``stray_profile``, ``stray`` (as :func:`pyinv.synthesize`):
        the RFs of the mixed profile I = (1 − α)[(1 − f₂) I₁ + f₂ I₂] + α I_stray — component 1's under
        the keys above (scaled by (1 − α)(1 − f₂)), component 2's under the same keys with the suffix
        ``"_2"`` (scaled by (1 − α) f₂), ``"filling"`` (4, nλ) = ∂I/∂f₂ = (1 − α)(I₂ − I₁) (f₂: component
        2's filling factor) and ``"stray"`` (4, nλ) = ∂I/∂α per percent
        = (I_stray − [(1 − f₂) I₁ + f₂ I₂]) / 100; ``stokes`` is then the mixed profile. With ``departures``
        and ``departure_form`` (as :func:`pyinv.synthesize`): the RFs at fixed departure coefficients
        (DeSIRe's and SIR 2017's rule), in either form, field-free or magnetic.
    """
    if not isinstance(atmos, Atmosphere) or atmos.stacked:
        raise ValueError("response_functions needs a single pyinv.Atmosphere (not a stack)")
    if atmos2 is not None or stray_profile is not None or filling is not None or stray is not None:
        return _mixed_response_functions(atmos, lines, grid, atmos2=atmos2, filling=filling,
                                         stray_profile=stray_profile, stray=stray, mu=mu, psf=psf,
                                         abundances=abundances, convolve=convolve,
                                         exact_blend_offsets=exact_blend_offsets, unsold_physical=unsold_physical,
                                         exact_voigt=exact_voigt, damping_cap=damping_cap, sir_compat=sir_compat,
                                         hydrostatic=hydrostatic, departures=departures,
                                         departure_form=departure_form)
    mu_f = _check_mu(mu)
    p = _prepare([atmos], lines, grid, abundances=abundances, psf=psf, convolve=convolve,
                 exact_blend_offsets=exact_blend_offsets, unsold_physical=unsold_physical,
                 exact_voigt=exact_voigt, damping_cap=damping_cap, sir_compat=sir_compat, departures=departures,
                 departure_form=departure_form)
    cols = p["cols"][0]
    _, rf, rf_vmac, _ = engine.synth_rf(p["setup"], cols["log_tau"], p["x"][0], p["macro"][0])
    # the profiles exactly as synthesize computes them (the RF pass's own forward sweep solves each
    # wavelength with pivoting, synthesize blocks of wavelengths without: they differ by rounding)
    stokes, _ = engine.synth_stokes(p["setup"], cols["log_tau"], p["x"][0], p["macro"][0])
    out = QuantityDict({key: np.ascontiguousarray(np.transpose(rf[:, :, :, v], (2, 0, 1)))
                        for v, key in enumerate(RF_KEYS)})
    if hydrostatic:
        jac = _he_pe_jacobian(cols, mu_f, p["eps"], bool(sir_compat))
        out["T_he"] = out["T"] + np.einsum("ikw,ij->jkw", out["Pe"], jac)
    out["macro"] = np.asarray(rf_vmac)
    out["stokes"] = np.asarray(stokes)
    return out


def _mixed_response_functions(atmos: Atmosphere, lines: LineList, grid: WavelengthGrid, *, atmos2, filling,
                              stray_profile, stray, **options) -> dict:
    """response_functions of the two-component / stray-light mix (see its docstring)."""
    from .mixing import resolve_mixing

    if atmos2 is not None and (not isinstance(atmos2, Atmosphere) or atmos2.stacked):
        raise ValueError("atmos2 must be a single pyinv.Atmosphere (not a stack)")
    m = resolve_mixing([atmos], None if atmos2 is None else [atmos2], grid, filling=filling,
                       stray_profile=stray_profile, stray=stray)
    r1 = response_functions(atmos, lines, grid, **options)
    a = float(m.alpha[0])
    f = 0.0 if m.filling is None else float(m.filling[0])
    w1 = (1.0 - a) * (1.0 - f)
    out = QuantityDict({k: v * w1 for k, v in r1.items() if k != "stokes"})
    both = r1["stokes"]
    if atmos2 is not None:
        r2 = response_functions(atmos2, lines, grid, **options)
        out.update({f"{k}_2": v * (1.0 - a) * f for k, v in r2.items() if k != "stokes"})
        out["filling"] = (1.0 - a) * (r2["stokes"] - r1["stokes"])
        both = (1.0 - f) * r1["stokes"] + f * r2["stokes"]
    if m.stray_profile is not None:
        out["stray"] = (m.stray_profile - both) / 100.0
        out["stokes"] = (1.0 - a) * both + a * m.stray_profile
    else:
        out["stokes"] = both
    return out
