"""Thermodynamics of the model atmosphere: equation of state, continuum opacity and hydrostatic
equilibrium (spec-forward.md §3–§6; spec-inversion.md §1.4, §4.6).

All functions take abundances as 92 values of log ε (H = 12), as returned by
:func:`pyinv.io.read_abundances`; ``None`` means pyinv's default set
(:func:`pyinv.default_abundances`, Asplund et al. 2009).

pyinv's documented differences from SIR (``sir_compat=True`` restores SIR's behaviour):

* the number of non-hydrogen nuclei per H nucleus in P_g is Σ_{Z≥2} ε_Z of the abundance set
  (SIR: the constant 0.1014);
* He Rayleigh scattering uses Dalgarno's coefficient 5.94e10 (SIR: 5.94e-10, negligible);
* in hydrostatic equilibrium, ρ uses μ_m at each depth also with a P_g/ρ boundary (SIR: top-point
  μ_m), and g_eff = |μ| g_⊙ in every call.
"""
from __future__ import annotations

from typing import Any

from ..errors import input_errors
import numpy as np

from .. import engine

__all__ = ["hydrostatic", "equation_of_state", "continuum_opacity", "pe_from_pg",
           "partition_functions", "abundances_to_eps"]


def abundances_to_eps(abundances=None) -> np.ndarray:
    """Linear N_Z/N_H (92,) from log ε (H = 12); ``None``: the packaged default set."""
    if abundances is None:
        from ..defaults import default_abundances
        abundances = default_abundances()
    a = np.asarray(abundances, dtype=np.float64)
    if a.shape != (92,):
        raise ValueError(f"abundances must be 92 log-eps values (H = 12); got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError("abundances must be finite")
    return 10.0 ** (a - 12.0)


def _pair(T, Pe):
    t = np.asarray(T, dtype=np.float64)
    pe = np.asarray(Pe, dtype=np.float64)
    t, pe = np.broadcast_arrays(t, pe)
    return t, pe


def equation_of_state(T, Pe, abundances=None, *, sir_compat: bool = False,
                      derivatives: bool = False) -> dict[str, np.ndarray]:
    """Equation of state at given temperature and electron pressure (spec §4).

    Parameters
    ----------
    T, Pe : array_like
        Temperature [K] and electron pressure [dyn cm⁻²] (broadcast together), both > 0.
    abundances : array_like (92,), optional
        log ε (H = 12).
    sir_compat : bool
        Use SIR's 0.1014 non-H nuclei per H nucleus in P_g.
    derivatives : bool
        Also return ``d<key>_dT`` (at fixed Pe) and ``d<key>_dPe`` (at fixed T) for every key.

    Returns
    -------
    dict
        ``Pg`` [dyn cm⁻²], ``rho`` [g cm⁻³], ``ne`` [cm⁻³], ``nH`` (H nuclei, cm⁻³), ``mu_m``,
        ``kappa_per_gram_factor`` (N_A/Σ ε W: κ per gram = κ per H nucleus × this),
        ``f1``…``f5``, ``fe`` (H I, H⁺, H⁻, H₂⁺, H₂, e⁻ pressures over P_H′), ``PH`` (P_H′),
        ``g1``…``g5``, neutral fractions per H nucleus ``p_He, p_C, p_Na, p_Mg``, ``theta``, and the
        inputs ``T, Pe``; each shaped like the broadcast inputs.
    """
    t, pe = _pair(T, Pe)
    eps = abundances_to_eps(abundances)
    res = engine.eos_arrays(t.ravel(), pe.ravel(), eps, sir_compat, derivatives)
    arrays = res if derivatives else (res,)
    out: dict[str, np.ndarray] = {}
    for suffix, arr in zip(("", "_dT", "_dPe"), arrays):
        for i, name in enumerate(engine.EOS_FIELDS):
            key = name if not suffix else f"d{name}{suffix}"
            out[key] = arr[:, i].reshape(t.shape)
    out["kappa_per_gram_factor"] = out["per_gram"]
    return out


def continuum_opacity(wavelength_A, T, Pe, abundances=None, *, per_gram: bool = False,
                      components: bool = False, sir_compat: bool = False):
    """Continuum opacity (spec §6) at an **air** wavelength.

    Parameters
    ----------
    wavelength_A : float or array_like
        Air wavelength(s) [Å]. The reference κ₅ is ``continuum_opacity(5000.0, ...)``.
    T, Pe : array_like
        Temperature [K], electron pressure [dyn cm⁻²] (broadcast together).
    per_gram : bool
        Return cm² g⁻¹ instead of cm² per H nucleus.
    components : bool
        Also return a dict of the individual contributions (same units).

    Returns
    -------
    ndarray
        Shape ``np.shape(wavelength_A) + broadcast(T, Pe).shape``.
    """
    t, pe = _pair(T, Pe)
    eps = abundances_to_eps(abundances)
    wl = np.asarray(wavelength_A, dtype=np.float64)
    kap = np.empty(wl.shape + t.shape)
    comp = np.empty(wl.shape + t.shape + (len(engine.KAPPA_COMPONENTS),))
    factor = 1.0
    if per_gram:
        factor = engine.eos_arrays(t.ravel(), pe.ravel(), eps, sir_compat)[:, engine.EOS_FIELDS.index("per_gram")]
        factor = factor.reshape(t.shape)
    for idx in np.ndindex(wl.shape):
        k, c = engine.kappa_arrays(float(wl[idx]), t.ravel(), pe.ravel(), eps, sir_compat)
        kap[idx] = k.reshape(t.shape) * factor
        comp[idx] = c.reshape(t.shape + (-1,)) * np.asarray(factor)[..., None]
    if components:
        return kap, {name: comp[..., i] for i, name in enumerate(engine.KAPPA_COMPONENTS)}
    return kap


def pe_from_pg(T, Pg, abundances=None, *, sir_compat: bool = False) -> np.ndarray:
    """Electron pressure such that the EOS gas pressure equals ``Pg`` at ``T`` (spec §4.5)."""
    t, pg = _pair(T, Pg)
    eps = abundances_to_eps(abundances)
    return engine.pe_from_pg_arrays(t.ravel(), pg.ravel(), eps, sir_compat).reshape(t.shape)


def partition_functions(Z: int, T) -> np.ndarray:
    """U_I, U_II, U_III of element Z at temperatures T: array ``shape(T) + (3,)``."""
    t = np.asarray(T, dtype=np.float64)
    u, _, _, _, _ = engine.atomic_arrays(Z, t.ravel())
    return u.reshape(t.shape + (3,))


@input_errors
def hydrostatic(atmos: Any, *, top_pe: float | None = None, top_pg: float | None = None,
                top_rho: float | None = None, mu: float = 1.0, abundances=None,
                sir_compat: bool = False):
    """Put a model atmosphere in hydrostatic equilibrium (spec-forward §5).

    Pe, Pg, ρ and z are recomputed from T on the model's log τ₅ grid, integrating
    dP_g/dlog τ₅ = ln10 |μ| g_⊙ τ₅ / κ₅(per gram) from the top downward.

    Parameters
    ----------
    atmos : pyinv.Atmosphere
        Single model or a stack (each model is treated separately).
    top_pe, top_pg, top_rho : float, optional
        Top boundary: electron pressure [dyn cm⁻²], gas pressure [dyn cm⁻²] or density [g cm⁻³].
        At most one may be given; default: keep the model's own top Pe (as SIR).
    mu : float
        Heliocentric cosine; only enters through g_eff = |μ| g_⊙ (the model stays along the line of
        sight, as in SIR).
    abundances : array_like (92,), optional
        log ε (H = 12); default Asplund et al. (2009).
    sir_compat : bool
        SIR's 0.1014 non-H nuclei in P_g and top-point μ_m in ρ (P_g/ρ boundary).

    Returns
    -------
    Atmosphere
        A copy with ``Pe``, ``Pg``, ``rho`` and ``z`` [km, zero at log τ₅ = 0 by SIR's rule] replaced.
    """
    given = [v is not None for v in (top_pe, top_pg, top_rho)]
    if sum(given) > 1:
        raise ValueError("give at most one of top_pe, top_pg, top_rho")
    if not (0.0 < abs(float(mu)) <= 1.0):
        raise ValueError("mu must satisfy 0 < |mu| <= 1")
    eps = abundances_to_eps(abundances)
    if top_pg is not None:
        boundary, bval = 1, float(top_pg)
    elif top_rho is not None:
        boundary, bval = 2, float(top_rho)
    else:
        boundary, bval = 0, 0.0
    for name, v in (("top_pe", top_pe), ("top_pg", top_pg), ("top_rho", top_rho)):
        if v is not None and not (np.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be positive and finite")

    lt = np.asarray(atmos.log_tau, dtype=np.float64)
    T = np.asarray(atmos.T, dtype=np.float64)
    Pe0 = np.asarray(atmos.Pe, dtype=np.float64)
    stacked = T.ndim == 2
    T2 = T if stacked else T[None, :]
    P2 = Pe0 if stacked else Pe0[None, :]
    res = {k: np.empty_like(T2) for k in ("Pe", "Pg", "rho", "z")}
    for m in range(T2.shape[0]):
        pe_top = float(top_pe) if top_pe is not None else float(P2[m, -1])
        pe, pg, rho, z, _ = engine.hydrostatic_arrays(lt, T2[m], pe_top, boundary, bval, mu, eps,
                                                      sir_compat)
        res["Pe"][m], res["Pg"][m], res["rho"][m], res["z"][m] = pe, pg, rho, z
    if not stacked:
        res = {k: v[0] for k, v in res.items()}
    return atmos.with_columns(**res)
