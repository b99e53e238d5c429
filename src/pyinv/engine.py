"""The only module that talks to the compiled Fortran engine ``pyinv._engine``.

Every wrapper here converts its inputs to contiguous float64 / int32 arrays, calls one procedure of
``fortran/api.f90`` (module ``pyinv_api``) and turns a nonzero error code into an
:class:`EngineError` (a :class:`ValueError`) carrying the engine's message. The extension is imported
lazily, so ``import pyinv`` works (file readers, models, ...) even before the engine is built.
"""
from __future__ import annotations

import functools
from types import ModuleType

import numpy as np

__all__ = ["EngineError", "api", "check", "voigt", "voigt_derivatives", "planck"]


class EngineError(ValueError):
    """An error reported by the Fortran engine (bad input or a failed computation)."""

    def __init__(self, code: int, message: str, where: str = ""):
        self.code = int(code)
        self.where = where
        prefix = f"{where}: " if where else ""
        super().__init__(f"{prefix}{message} (engine error {self.code})")


@functools.lru_cache(maxsize=1)
def _module() -> ModuleType:
    try:
        from . import _engine  # type: ignore[attr-defined]
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ImportError(
            "pyinv's compiled engine (pyinv._engine) is not available: install the package with "
            "`pip install .` (needs gfortran), or build it for development with tools/devbuild.sh"
        ) from exc
    check_engine_version(_engine)
    return _engine


#: Version of fortran/api.f90's interface that this Python code expects (meson.build's engine_api_version).
ENGINE_API_VERSION = 1


def check_engine_version(module: ModuleType) -> tuple[str, int]:
    """Compare the compiled engine's version with the Python package's.

    Returns
    -------
    (engine version, engine API version)

    Raises
    ------
    ImportError
        Naming both versions, when the engine was built from another pyinv version or for another API
        (a stale build under newer Python code), or carries no version at all.
    """
    from . import __version__

    fn = getattr(getattr(module, "pyinv_api", None), "engine_version", None)
    if fn is None:
        raise ImportError(f"pyinv's compiled engine ({getattr(module, '__file__', module)}) carries no version "
                          f"(built from a pyinv older than the Python package {__version__}, API "
                          f"{ENGINE_API_VERSION}): reinstall with `pip install .` or rebuild it")
    version, api_version = fn()
    if isinstance(version, (bytes, np.bytes_)):
        version = version.decode("ascii", "replace")
    version, api_version = str(version).strip(), int(api_version)
    if version != __version__ or api_version != ENGINE_API_VERSION:
        raise ImportError(f"pyinv's compiled engine is version {version} (API {api_version}) but the Python "
                          f"package is version {__version__} (API {ENGINE_API_VERSION}): a stale build; reinstall "
                          "with `pip install .` or rebuild it (tools/devbuild.sh)")
    return version, api_version


def api() -> ModuleType:
    """The f2py module object ``pyinv._engine.pyinv_api`` (all engine procedures)."""
    return _module().pyinv_api


def error_message(code: int) -> str:
    """The engine's text for an error code."""
    msg = api().engine_error_message(int(code))
    if isinstance(msg, (bytes, np.bytes_)):
        msg = msg.decode("ascii", "replace")
    return str(msg).strip()


def check(ierr: int, where: str = "") -> None:
    """Raise :class:`EngineError` when an engine call returned a nonzero code."""
    if int(ierr) != 0:
        raise EngineError(int(ierr), error_message(int(ierr)), where)


def f64(x, name: str = "array") -> np.ndarray:
    """``x`` as a C-contiguous float64 array (copying only when needed)."""
    arr = np.ascontiguousarray(x, dtype=np.float64)
    return arr


def f64_fortran(x) -> np.ndarray:
    """``x`` as a Fortran-ordered float64 array (what f2py passes without a copy)."""
    return np.asfortranarray(x, dtype=np.float64)


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
# ratios eps(92) = N_Z / N_H; pyinv.thermo converts from log eps.
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


# ---------------------------------------------------------------------------------------------------
# section: synthesis (line opacity, Zeeman, formal solution, post-processing)
# ---------------------------------------------------------------------------------------------------

#: Number of integer option slots of ``synth_stokes`` (see fortran/synthesis.f90).
SYNTH_NOPT = 8


def _i32(x) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.int32)


def synth_stokes(model: dict, vmac: float, line_arrays: dict, groups: tuple, grid: tuple, eps,
                 psf: tuple | None, opts) -> tuple[np.ndarray, np.ndarray]:
    """Stokes profiles of one model (engine ``synth_stokes``).

    ``model``: 1-D columns ``log_tau, T, Pe, vmic, vlos, B, gamma, phi`` (K, dyn cm⁻², cm/s, G, deg);
    ``line_arrays``: per line ``iz, stage, lam [Å], chi_e, loggf, enh, alpha, sigma, mult_l, l_l, j_l,
    mult_u, l_u, j_u, use_geff, geff``; ``groups = (gstart, gcount, glines)`` (1-based);
    ``grid = (woff [mÅ], wgrp (1-based))``; ``eps`` linear (92,); ``psf = (x_mA, y)`` or None;
    ``opts`` up to SYNTH_NOPT integer flags. Returns ``stokes (4, nw)`` and the largest damping
    parameter of every line.
    """
    la = line_arrays
    if psf is None:
        px = py = np.zeros(1)
    else:
        px, py = f64(psf[0]), f64(psf[1])
    o = np.zeros(SYNTH_NOPT, dtype=np.int32)
    o[:len(opts)] = opts
    stokes, amax, ierr = api().synth_stokes(
        f64(model["log_tau"]), f64(model["T"]), f64(model["Pe"]), f64(model["vmic"]),
        f64(model["vlos"]), f64(model["B"]), f64(model["gamma"]), f64(model["phi"]), float(vmac),
        _i32(la["iz"]), _i32(la["stage"]), f64(la["lam"]), f64(la["chi_e"]), f64(la["loggf"]),
        f64(la["enh"]), f64(la["alpha"]), f64(la["sigma"]), f64(la["mult_l"]), f64(la["l_l"]),
        f64(la["j_l"]), f64(la["mult_u"]), f64(la["l_u"]), f64(la["j_u"]), _i32(la["use_geff"]),
        f64(la["geff"]), _i32(groups[0]), _i32(groups[1]), _i32(groups[2]), f64(grid[0]), _i32(grid[1]),
        f64(eps), px, py, o)
    check(ierr, "synthesis")
    return stokes, amax


def zeeman_engine(mult_l, l_l, j_l, mult_u, l_u, j_u, geff=None) -> list[tuple[np.ndarray, np.ndarray]]:
    """The engine's Zeeman pattern: [(shifts, strengths) for π, σ_r, σ_b] (spec-forward §7.7)."""
    use = 0 if geff is None else 1
    nc, sh, st, ierr = api().zeeman_components(float(mult_l), float(l_l), float(j_l), float(mult_u),
                                               float(l_u), float(j_u), use, float(geff or 0.0))
    check(ierr, "zeeman pattern")
    return [(sh[:nc[g], g].copy(), st[:nc[g], g].copy()) for g in range(3)]


def formal_solution(log_tau, k7, source, scalar: bool = False):
    """Hermitian formal solution (spec-forward §8): ``k7 (7, n)`` = (η_I, η_Q, η_U, η_V, ρ_Q, ρ_U, ρ_V)
    per unit τ₅, ``source (n,)``. Returns (emergent Stokes (4,), Stokes at every depth (4, n),
    lower-boundary index (1-based))."""
    s, sd, ib, ierr = api().formal_solution(f64(log_tau), f64_fortran(k7), f64(source), int(scalar))
    check(ierr, "formal solution")
    return s, sd, int(ib)


def hsra_continuum(wavelength_A) -> np.ndarray:
    """HSRA disk-centre continuum intensity [erg s⁻¹ cm⁻² sr⁻¹ cm⁻¹] at air wavelengths [Å]."""
    lam = np.asarray(wavelength_A, dtype=np.float64)
    ic, ierr = api().hsra_intensity(f64(lam.ravel()))
    check(ierr, "hsra_continuum (wavelength must be positive)")
    return ic.reshape(lam.shape)


def convolve_stokes(offset_mA, stokes, sigma_mA: float, psf: tuple | None = None) -> np.ndarray:
    """Gaussian (standard deviation ``sigma_mA``) and optional PSF convolution of one line group
    ``stokes (4, m)`` sampled at ``offset_mA`` (SIR's edge-padded circular convolution)."""
    y = f64_fortran(np.array(stokes, dtype=np.float64, copy=True))
    px, py = (np.zeros(1), np.zeros(1)) if psf is None else (f64(psf[0]), f64(psf[1]))
    ierr = api().convolve_stokes(f64(offset_mA), y, float(sigma_mA), px, py)
    check(ierr, "convolution")
    return np.asarray(y)


#: Order of the depth-resolved response-function variables of ``synth_rf`` (RF_INTERFACE.md).
RF_VARIABLES = ("T", "Pe", "vmic", "B", "vlos", "gamma", "phi")


def synth_rf(model: dict, vmac: float, line_arrays: dict, groups: tuple, grid: tuple, eps,
             psf: tuple | None, opts, want=(1,) * 7):
    """Stokes profiles and response functions of one model (engine ``synth_rf``; arguments as
    :func:`synth_stokes`, ``want`` 7 flags in RF_VARIABLES order). Returns ``stokes (4, nw)``,
    ``rf (4, nw, ndep, 7)`` (d stokes / d column value at one depth: per K, dyn cm⁻², cm/s, G, cm/s,
    degree, degree; T at fixed Pe), ``rf_vmac (4, nw)`` per km/s and the largest damping per line."""
    la = line_arrays
    if psf is None:
        px = py = np.zeros(1)
    else:
        px, py = f64(psf[0]), f64(psf[1])
    o = np.zeros(SYNTH_NOPT, dtype=np.int32)
    o[:len(opts)] = opts
    stokes, rf, rf_vmac, amax, ierr = api().synth_rf(
        f64(model["log_tau"]), f64(model["T"]), f64(model["Pe"]), f64(model["vmic"]),
        f64(model["vlos"]), f64(model["B"]), f64(model["gamma"]), f64(model["phi"]), float(vmac),
        _i32(la["iz"]), _i32(la["stage"]), f64(la["lam"]), f64(la["chi_e"]), f64(la["loggf"]),
        f64(la["enh"]), f64(la["alpha"]), f64(la["sigma"]), f64(la["mult_l"]), f64(la["l_l"]),
        f64(la["j_l"]), f64(la["mult_u"]), f64(la["l_u"]), f64(la["j_u"]), _i32(la["use_geff"]),
        f64(la["geff"]), _i32(groups[0]), _i32(groups[1]), _i32(groups[2]), f64(grid[0]), _i32(grid[1]),
        f64(eps), px, py, o, _i32(want))
    check(ierr, "response functions")
    return stokes, rf, rf_vmac, amax


# ---------------------------------------------------------------------------------------------------
# section: inversion (nodes, Levenberg-Marquardt, finite-difference response functions)
# Thin wrappers of the inv_* procedures of fortran/api.f90. ``prep`` is the dict built by
# pyinv.inversion.prepare_synthesis (line arrays, groups, grid, eps, psf, opts); model arrays
# ``x`` are (ndep, 7): T, Pe, vmic, B, vlos, gamma, phi (K, dyn cm⁻², cm/s, G, cm/s, deg, deg).
# ---------------------------------------------------------------------------------------------------

#: Inversion slots, in the engine's order (= pyinv.config.NODE_PARAMETERS).
INV_SLOTS = ("T", "Pe", "vmic", "B", "vlos", "gamma", "phi", "vmac")


def _synth_arg_list(prep: dict) -> list:
    la = prep["lines"]
    g0, g1, g2 = prep["groups"]
    px, py = prep["psf"] if prep["psf"] is not None else (np.zeros(1), np.zeros(1))
    o = np.zeros(SYNTH_NOPT, dtype=np.int32)
    o[:len(prep["opts"])] = prep["opts"]
    return [_i32(la["iz"]), _i32(la["stage"]), f64(la["lam"]), f64(la["chi_e"]), f64(la["loggf"]),
            f64(la["enh"]), f64(la["alpha"]), f64(la["sigma"]), f64(la["mult_l"]), f64(la["l_l"]),
            f64(la["j_l"]), f64(la["mult_u"]), f64(la["l_u"]), f64(la["j_u"]), _i32(la["use_geff"]),
            f64(la["geff"]), _i32(g0), _i32(g1), _i32(g2), f64(prep["woff"]), _i32(prep["wgrp"]),
            f64(prep["eps"]), f64(px), f64(py), o]


def _xnodes(xnodes) -> tuple[np.ndarray, np.ndarray]:
    """(maxnp, 8) Fortran array of explicit node positions and the (8,) usex flags."""
    if not xnodes:
        return np.zeros((1, 8), order="F"), np.zeros(8, dtype=np.int32)
    maxnp = max(len(v) for v in xnodes.values())
    arr = np.zeros((max(maxnp, 1), 8), order="F")
    use = np.zeros(8, dtype=np.int32)
    for k, v in xnodes.items():
        j = INV_SLOTS.index(k)
        arr[:len(v), j] = v
        use[j] = 1
    return arr, use


def inv_allowed_nodes(ndep: int, n: int) -> int:
    """Largest SIR-allowed node count <= n on ndep depth points."""
    return int(api().inv_allowed_nodes(int(ndep), int(n)))


def inv_node_basis(log_tau, n: int, positions=None, mode: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Interpolation basis (ndep, n) and node grid indices (0-based; -1 for explicit positions)."""
    xn = np.zeros(n) if positions is None else f64(positions)
    f, idx, ierr = api().inv_node_basis(f64(log_tau), int(positions is not None), xn, int(mode))
    check(ierr, "node basis")
    return np.asarray(f), np.asarray(idx) - 1


def inv_svd_solve(a, b, blk, nvar: int, eps: float):
    """(u, w, v, delta, ierr): Jacobi SVD of a and SIR's modified-SVD solution of a δ = b."""
    u, w, v, d, ierr = api().inv_svd_solve(f64_fortran(a), f64(b), _i32(blk), int(nvar), float(eps))
    return u, w, v, d, int(ierr)


def inv_sigma(obs, wgrp, ng: int, weights, snr: float):
    """SIR's σ (4, nλ), weights 1/σ² (4, nλ), nobs, nmask, ierr."""
    sig, wgt, nobs, nmask, ierr = api().inv_sigma(int(ng), _i32(wgrp), f64_fortran(obs), f64(weights),
                                                  float(snr))
    return np.asarray(sig), np.asarray(wgt), int(nobs), int(nmask), int(ierr)


def inv_he_pe_jacobian(log_tau, T, pe_top: float, boundary: int, bvalue: float, mu: float, eps,
                       sir_compat: bool = False, method: int = 0) -> np.ndarray:
    """d Pe_i / d T_j (ndep, ndep) with Pe in hydrostatic equilibrium (method 0 tangent-linear,
    1 finite differences of the HE solver)."""
    dpe, ierr = api().inv_he_pe_jacobian(f64(log_tau), f64(T), float(pe_top), int(boundary), float(bvalue),
                                         float(mu), f64(eps), int(sir_compat), int(method))
    check(ierr, "hydrostatic Pe Jacobian")
    return np.asarray(dpe)


def inv_response_functions(log_tau, x, vmac: float, prep: dict, want=(1,) * 7):
    """(stokes (4, nλ), rf (4, nλ, ndep, 7), rf_vmac (4, nλ)) from the inversion's RF provider."""
    st, rf, rfv, ierr = api().inv_response_functions(f64(log_tau), f64_fortran(x), float(vmac),
                                                     *_synth_arg_list(prep), _i32(want))
    check(ierr, "response functions")
    return np.asarray(st), np.asarray(rf), np.asarray(rfv)


def inv_node_jacobian(log_tau, x, vmac: float, prep: dict, nodes, *, xnodes=None, interp: int = 0, he: int = 1,
                      boundary: int = 0, bvalue: float = 0.0, mu: float = 1.0, jac_mode: int = 0,
                      maxm: int = 128) -> np.ndarray:
    """Node Jacobian (4, nλ, m) at model x (see api.f90 inv_node_jacobian)."""
    xa, use = _xnodes(xnodes)
    jac, m, ierr = api().inv_node_jacobian(f64(log_tau), f64_fortran(x), float(vmac), *_synth_arg_list(prep),
                                           _i32(nodes), xa, use, int(interp), int(he), int(boundary),
                                           float(bvalue), float(mu), int(jac_mode), int(maxm))
    check(ierr, "node Jacobian")
    return np.asarray(jac)[:, :, :int(m)]


def inv_cycle(log_tau, x, vmac: float, prep: dict, obs, weights, snr: float, nodes, *, xnodes=None,
              interp: int = 0, svdtol: float = 1e-4, lambda0: float = 1e-3, boundary: int = 0,
              bvalue: float = 0.0, mu: float = 1.0, maxit: int = 100, jac_mode: int = 0,
              rtol: float = 0.0, maxm: int = 128, maxtr: int = 400) -> dict:
    """One LM cycle. Never raises on engine failures: the result holds ``ierr`` (0 = success)."""
    xa, use = _xnodes(xnodes)
    xf = np.array(x, dtype=np.float64, order="F", copy=True)
    vm = np.array(float(vmac), dtype=np.float64)
    out = api().inv_cycle(f64(log_tau), xf, vm, *_synth_arg_list(prep), f64_fortran(obs), f64(weights),
                          float(snr), _i32(nodes), xa, use, int(interp), float(svdtol), float(lambda0),
                          int(boundary), float(bvalue), float(mu), int(maxit), int(jac_mode), float(rtol),
                          int(maxm), int(maxtr))
    fit, pg, rho, z, err, err_vmac, cerr, cerr_vmac, cov, trace, info, rinfo, ierr = out
    m = int(info[3])
    return {"x": xf, "vmac": float(vm), "fit": np.asarray(fit), "pg": pg, "rho": rho, "z": z, "err": err,
            "err_vmac": float(err_vmac), "cerr": cerr, "cerr_vmac": float(cerr_vmac),
            "cov": np.asarray(cov)[:m, :m], "trace": np.asarray(trace)[:min(int(info[1]), maxtr)], "info": np.asarray(info), "rinfo": np.asarray(rinfo),
            "ierr": int(ierr)}
