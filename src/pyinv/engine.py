"""The only module that talks to the compiled Fortran engine ``pyinv._engine``.

Every wrapper here converts its inputs to contiguous float64 / int32 arrays, calls one procedure of
``fortran/api.f90`` (module ``pyinv_api``) and turns a nonzero error code into an
:class:`EngineError` (a :class:`ValueError`) carrying the engine's message. The extension is imported
lazily, so ``import pyinv`` works (file readers, models, ...) even before the engine is built.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any
from types import ModuleType

import numpy as np

__all__ = ["EngineError", "api", "check", "isa", "voigt", "voigt_derivatives", "planck"]


class EngineError(ValueError):
    """An error reported by the Fortran engine (bad input or a failed computation)."""

    def __init__(self, code: int, message: str, where: str = ""):
        self.code = int(code)
        self.where = where
        prefix = f"{where}: " if where else ""
        super().__init__(f"{prefix}{message} (engine error {self.code})")


#: Instruction-set variants of the engine, best first, and their extension modules (meson.build): the
#: same Fortran sources compiled for x86-64-v4 (AVX-512), x86-64-v3 (AVX2/FMA) and the portable baseline.
ISA_VARIANTS = ("v4", "v3", "baseline")
_ISA_MODULES = {"v4": "_engine_v4", "v3": "_engine_v3", "baseline": "_engine"}
#: CPU flags (/proc/cpuinfo names) each variant needs
_ISA_FLAGS = {"v3": {"avx", "avx2", "fma", "bmi1", "bmi2", "f16c", "movbe", "abm"},
              "v4": {"avx", "avx2", "fma", "bmi1", "bmi2", "f16c", "movbe", "abm", "avx512f", "avx512bw",
                     "avx512cd", "avx512dq", "avx512vl"}}


def _cpu_supports(isa: str) -> bool:
    """Whether this CPU runs code built for ``isa`` (flags from /proc/cpuinfo, else numpy's CPU
    features)."""
    if isa == "baseline":
        return True
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    if flags:
        return _ISA_FLAGS[isa] <= flags
    try:  # other systems: numpy's runtime CPU dispatch knows the features
        from numpy._core._multiarray_umath import __cpu_features__ as feat
    except ImportError:  # pragma: no cover
        return False
    need = {"v3": ("AVX2", "FMA3", "F16C"), "v4": ("AVX2", "FMA3", "F16C", "AVX512_SKX")}[isa]
    return all(feat.get(k, False) for k in need)


@functools.lru_cache(maxsize=1)
def _module() -> ModuleType:
    """The engine extension: the best instruction-set variant that is built and that this CPU runs, or
    the one named by the environment variable PYINV_ENGINE_ISA (v4, v3 or baseline)."""
    import importlib
    import os

    forced = os.environ.get("PYINV_ENGINE_ISA", "").strip()
    if forced and forced not in ISA_VARIANTS:
        raise ImportError(f"PYINV_ENGINE_ISA={forced!r} is not one of {ISA_VARIANTS}")
    candidates = [forced] if forced else [v for v in ISA_VARIANTS if _cpu_supports(v)]
    if forced and not _cpu_supports(forced):
        raise ImportError(f"PYINV_ENGINE_ISA={forced!r}: this CPU lacks the instructions of that engine build")
    errors = []
    for isa in candidates:
        try:
            mod = importlib.import_module(f"{__package__}.{_ISA_MODULES[isa]}")
        except ImportError as exc:
            errors.append(f"{_ISA_MODULES[isa]}: {exc}")
            continue
        check_engine_version(mod)
        mod.__pyinv_isa__ = isa
        return mod
    raise ImportError(  # pragma: no cover - depends on the installation
        "pyinv's compiled engine (pyinv._engine) is not available: install the package with "
        "`pip install .` (needs gfortran), or build it for development with tools/devbuild.sh"
        + ("; " + "; ".join(errors) if errors else ""))


def isa() -> str:
    """The instruction-set variant of the loaded engine: ``"v4"`` (x86-64-v4, AVX-512), ``"v3"``
    (x86-64-v3, AVX2/FMA) or ``"baseline"``."""
    return _module().__pyinv_isa__


#: Version of fortran/api.f90's interface that this Python code expects (meson.build's engine_api_version).
ENGINE_API_VERSION = 8


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

#: The one column order of model arrays ``x (ndep, 7)`` and of response functions ``rf (4, nλ, ndep, 7)``
#: (fortran/synthesis.f90 ``col_*``): K, dyn cm⁻², cm/s, G, cm/s, degree, degree.
MODEL_COLUMNS = ("T", "Pe", "vmic", "B", "vlos", "gamma", "phi")
#: Option slots of a set-up (fortran/synthesis.f90 ``opt_*``), in slot order.
SETUP_OPTIONS = ("exact_blend_offsets", "unsold_physical", "sir_threshold", "damping_cap", "eos_sir_compat",
                 "no_convolution", "sir_voigt", "desire_departures")
#: Layout version of the packed set-up (fortran/synthesis.f90 ``setup_layout_version``).
SETUP_LAYOUT_VERSION = 2
#: Per-line fields of the set-up: integers, then reals, in buffer order.
LINE_INT_FIELDS = ("iz", "stage", "use_geff")
LINE_REAL_FIELDS = ("lam", "chi_e", "loggf", "enh", "alpha", "sigma", "mult_l", "l_l", "j_l", "mult_u", "l_u",
                    "j_u", "geff")
_SETUP_HEADER = 7


def _i32(x) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.int32)


@dataclass(frozen=True)
class Setup:
    """A synthesis problem packed for the engine once: line data, line groups, wavelength grid,
    abundances, PSF and options — everything but the model. Every synthesis, response-function and
    inversion call takes it (the engine unpacks the two flat buffers with one routine,
    ``setup_from_buffers``). Build it with :func:`pack_setup`.

    Attributes
    ----------
    ibuf, rbuf : ndarray
        The packed int32 / float64 buffers (layout in fortran/synthesis.f90).
    nl, ng, nw : int
        Numbers of lines, line groups and wavelength points.
    wgrp : ndarray (nw,) of int32
        1-based group of every wavelength point.
    options : dict
        ``SETUP_OPTIONS`` name → bool.
    """

    ibuf: np.ndarray
    rbuf: np.ndarray
    nl: int
    ng: int
    nw: int
    wgrp: np.ndarray
    options: dict

    def with_options(self, **options: bool) -> "Setup":
        """A copy with some options changed (names of ``SETUP_OPTIONS``)."""
        unknown = set(options) - set(SETUP_OPTIONS)
        if unknown:
            raise ValueError(f"unknown set-up option(s) {sorted(unknown)}; known: {SETUP_OPTIONS}")
        ibuf = self.ibuf.copy()
        opts = dict(self.options)
        for k, v in options.items():
            ibuf[_SETUP_HEADER + SETUP_OPTIONS.index(k)] = int(bool(v))
            opts[k] = bool(v)
        return Setup(ibuf, self.rbuf, self.nl, self.ng, self.nw, self.wgrp, opts)


def pack_setup(line_arrays: dict, groups: tuple, woff, wgrp, eps, psf: tuple | None, departures=None,
               **options: bool) -> Setup:
    """Pack a synthesis set-up into the engine's two flat buffers (once per problem).

    Parameters
    ----------
    line_arrays : dict
        Per line: ``LINE_INT_FIELDS`` and ``LINE_REAL_FIELDS`` (``lam`` [Å air], ``chi_e`` [eV], ``sigma``
        [cm²], LS terms as multiplicity/L/J, ``use_geff``/``geff``).
    groups : (gstart, gcount, glines)
        1-based: group g uses lines ``glines[gstart[g]-1 : gstart[g]-1+gcount[g]]`` (first = main line).
    woff, wgrp : array (nw,)
        Offsets [mÅ] from the group's main line and 1-based group of every wavelength point.
    eps : array (92,)
        N_Z / N_H (linear).
    psf : (x [mÅ], y) or None
    departures : array (ndep, 2, nl) or None
        NLTE departure coefficients b_lower, b_upper of every line on the model's depth grid (SIR 2017's
        treatment, spec-forward §7.10); the set-up then only serves models of ndep depth points.
    options : bool
        Names of ``SETUP_OPTIONS`` (default False).
    """
    unknown = set(options) - set(SETUP_OPTIONS)
    if unknown:
        raise ValueError(f"unknown set-up option(s) {sorted(unknown)}; known: {SETUP_OPTIONS}")
    la = line_arrays
    gstart, gcount, glines = (_i32(g).ravel() for g in groups)
    woff = f64(woff).ravel()
    wgrp = _i32(wgrp).ravel()
    e = f64(eps).ravel()
    if e.shape != (92,):
        raise ValueError(f"abundances must have shape (92,), got {e.shape}")
    px, py = (np.zeros(0), np.zeros(0)) if psf is None else (f64(psf[0]).ravel(), f64(psf[1]).ravel())
    nl = int(np.asarray(la["lam"]).size)
    opts = {k: bool(options.get(k, False)) for k in SETUP_OPTIONS}
    if departures is None:
        bdep = np.zeros((0, 2, nl))
    else:
        bdep = np.asarray(departures, dtype=np.float64)
        if bdep.ndim != 3 or bdep.shape[1:] != (2, nl):
            raise ValueError(f"departures must have shape (ndep, 2, {nl}), got {bdep.shape}")
        if not (np.all(np.isfinite(bdep)) and np.all(bdep > 0)):
            raise ValueError("departure coefficients must be finite and > 0")
    ibuf = np.concatenate([[SETUP_LAYOUT_VERSION, nl, gstart.size, glines.size, woff.size, px.size, bdep.shape[0]],
                           [int(opts[k]) for k in SETUP_OPTIONS],
                           *[_i32(la[k]).ravel() for k in LINE_INT_FIELDS], gstart, gcount, glines, wgrp])
    rbuf = np.concatenate([*[f64(la[k]).ravel() for k in LINE_REAL_FIELDS], woff, e, px, py,
                           bdep.ravel(order="F")])
    return Setup(_i32(ibuf), f64(rbuf), nl, int(gstart.size), int(woff.size), wgrp, opts)


def model_array(columns) -> np.ndarray:
    """Model columns (a mapping with the keys of MODEL_COLUMNS, 1-D arrays) as the engine's Fortran-ordered
    ``x (ndep, 7)``."""
    return np.asfortranarray(np.stack([np.asarray(columns[c], dtype=np.float64) for c in MODEL_COLUMNS], axis=1))


def synth_stokes(setup: Setup, log_tau, x, vmac: float) -> tuple[np.ndarray, np.ndarray]:
    """Stokes profiles of one model (engine ``synth_stokes``).

    ``log_tau (ndep,)`` deepest first; ``x (ndep, 7)`` in MODEL_COLUMNS order; ``vmac`` [km/s].
    Returns ``stokes (4, nw)`` (normalised to the HSRA continuum) and the largest damping parameter of
    every line (nl,).
    """
    stokes, amax, ierr = api().synth_stokes(setup.ibuf, setup.rbuf, f64(log_tau), f64_fortran(x), float(vmac),
                                            setup.nw, setup.nl)
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


#: Order of the depth-resolved response-function variables of ``synth_rf`` (= MODEL_COLUMNS).
RF_VARIABLES = MODEL_COLUMNS


def synth_rf(setup: Setup, log_tau, x, vmac: float, want=(1,) * 7):
    """Stokes profiles and response functions of one model (engine ``synth_rf``; arguments as
    :func:`synth_stokes`, ``want`` 7 flags in MODEL_COLUMNS order). Returns ``stokes (4, nw)``,
    ``rf (4, nw, ndep, 7)`` (d stokes / d column value at one depth: per K, dyn cm⁻², cm/s, G, cm/s,
    degree, degree; T at fixed Pe), ``rf_vmac (4, nw)`` per km/s and the largest damping per line."""
    stokes, rf, rf_vmac, amax, ierr = api().synth_rf(setup.ibuf, setup.rbuf, f64(log_tau), f64_fortran(x),
                                                     float(vmac), _i32(want), setup.nw, setup.nl)
    check(ierr, "response functions")
    return stokes, rf, rf_vmac, amax


# ---------------------------------------------------------------------------------------------------
# section: inversion (nodes, Levenberg-Marquardt)
# Thin wrappers of the inv_* procedures of fortran/api.f90; set-ups are :class:`Setup`, model arrays
# ``x`` (ndep, 7) in MODEL_COLUMNS order.
# ---------------------------------------------------------------------------------------------------

#: Inversion slots, in the engine's order (= pyinv.config.NODE_PARAMETERS): the model columns, then vmac.
INV_SLOTS = MODEL_COLUMNS + ("vmac",)
#: Jacobian providers of inv_cycle / inv_node_jacobian (fortran/nodes.f90 ``jac_*``).
JAC_FINITE_DIFFERENCE, JAC_ANALYTIC = 0, 1


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


def inv_node_jacobian(setup: Setup, log_tau, x, vmac: float, nodes, *, xnodes=None, interp: int = 0, he: int = 1,
                      boundary: int = 0, bvalue: float = 0.0, mu: float = 1.0, jac_mode: int = JAC_FINITE_DIFFERENCE,
                      maxm: int = 128) -> np.ndarray:
    """Node Jacobian (4, nλ, m) at model x (see api.f90 inv_node_jacobian)."""
    xa, use = _xnodes(xnodes)
    jac, m, ierr = api().inv_node_jacobian(setup.ibuf, setup.rbuf, f64(log_tau), f64_fortran(x), float(vmac),
                                           _i32(nodes), xa, use, int(interp), int(he), int(boundary),
                                           float(bvalue), float(mu), int(jac_mode), setup.nw, int(maxm))
    check(ierr, "node Jacobian")
    return np.asarray(jac)[:, :, :int(m)]


#: result slots of inv_cycle (fortran/inversion.f90 info_* and rinfo_*), in slot order
INFO_SLOTS = ("iterations", "trials", "syntheses", "m", "nobs", "nmask")
RINFO_SLOTS = ("chi2_raw", "chi2", "snr", "lambda_final", "chi2_start")


@dataclass
class CycleResult:
    """Result of one LM cycle (:func:`inv_cycle`).

    Attributes
    ----------
    x, vmac : best model (ndep, 7) in MODEL_COLUMNS order, and its macroturbulence [km/s]; with two
        components (ndep, 7, 2) and (2,)
    mix : (2,) filling factor of component 2 and stray-light fraction (0..1) of the best model
    fit : (4, nλ) its (mixed) profiles
    pg, rho, z : hydrostatic P_g [dyn cm⁻²], ρ [g cm⁻³], z [km] of its temperatures ((ndep,) or (ndep, 2))
    err, err_vmac : (ndep, 10[, 2]) uncertainties of SIR's .err formula (T, Pe, vmic, B, vlos, γ, φ, z, Pg, ρ)
    cerr, cerr_vmac : (ndep, 7[, 2]) 1σ from the full covariance
    err_mix, cerr_mix : (2,) uncertainties of the filling factor and the stray-light fraction (0 when fixed)
    cov : (m, m) parameter covariance (component 1 nodes, component 2 nodes, u, w)
    trace : (ntrials, 3) per trial λ, χ² (SIR's printed normalisation), accepted (1/0)
    iterations, trials, syntheses, m, nobs, nmask : counts (``INFO_SLOTS``)
    chi2_raw, chi2, snr, lambda_final, chi2_start : (``RINFO_SLOTS``) raw χ², χ² and s/n as SIR prints
        them, final λ, χ² of the starting model
    ierr : 0 = success, else the engine error that stopped the cycle (the model is the best reached)
    """

    x: np.ndarray
    vmac: Any
    fit: np.ndarray
    pg: np.ndarray
    rho: np.ndarray
    z: np.ndarray
    err: np.ndarray
    err_vmac: Any
    cerr: np.ndarray
    cerr_vmac: Any
    cov: np.ndarray
    trace: np.ndarray
    iterations: int
    trials: int
    syntheses: int
    m: int
    nobs: int
    nmask: int
    chi2_raw: float
    chi2: float
    snr: float
    lambda_final: float
    chi2_start: float
    ierr: int
    mix: np.ndarray = field(default_factory=lambda: np.zeros(2))
    err_mix: np.ndarray = field(default_factory=lambda: np.zeros(2))
    cerr_mix: np.ndarray = field(default_factory=lambda: np.zeros(2))


#: HE terms of the RF memo (fortran/hydrostatic.f90 n_he_terms)
N_HE_TERMS = 7


class RFMemo:
    """The response functions of a descent's last analytic Jacobian (engine ``memo_*`` of ``inv_cycle``):
    the next cycle's first Jacobian, at the same model, reuses them instead of a new RF pass (one
    component; results are identical with or without it). One per descent: ``RFMemo(setup.nw, ndep)``."""

    def __init__(self, nw: int, ndep: int):
        self.ok = np.zeros(1, dtype=np.int32)
        self.want = np.zeros(7, dtype=np.int32)
        self.x = np.zeros((ndep, 7), dtype=np.float64, order="F")
        self.st = np.zeros((4, nw), dtype=np.float64, order="F")
        self.rf = np.zeros((4, nw, ndep, 7), dtype=np.float64, order="F")
        self.het = np.zeros((ndep, N_HE_TERMS), dtype=np.float64, order="F")

    def fits(self, nw: int, ndep: int) -> bool:
        return self.st.shape == (4, nw) and self.x.shape == (ndep, 7)


def inv_cycle(setup: Setup, log_tau, x, vmac, obs, weights, snr: float, nodes, *, xnodes=None,
              interp: int = 0, svdtol: float = 1e-4, lambda0: float = 1e-3, boundary=0,
              bvalue=0.0, mu: float = 1.0, maxit: int = 100, jac_mode: int = JAC_FINITE_DIFFERENCE,
              jac_reuse: int = 0, rtol: float = 0.0, rules: int = 0, errors: bool = True, maxm: int = 128,
              maxtr: int = 400, magnetic_pressure: bool = False, mix=(0.0, 0.0), invert_mix=(0, 0),
              stray=None, contrast_point: int = -1, memo: RFMemo | None = None) -> CycleResult:
    """One LM cycle. Never raises on engine failures: the result holds ``ierr`` (0 = success).

    One component: ``x`` (ndep, 7), ``vmac`` a float, ``nodes`` 8 counts, ``boundary``/``bvalue`` scalars.
    Two components: ``x`` (ndep, 7, 2), ``vmac`` (2,), ``nodes`` (2, 8) (−1 = tied to the other
    component), ``boundary``/``bvalue`` per component. ``mix`` = (filling factor of component 2,
    stray-light fraction 0..1), ``invert_mix`` = (invert f₂, invert the stray fraction), ``stray`` the
    (4, nλ) stray-light profile. ``contrast_point`` (0-based, two components): the wavelength point holding
    the continuum-contrast pseudo-observation (spec-inversion §4.3; −1 = none). ``jac_reuse``: Broyden updates of the Jacobian in a row between exact
    ones (0 = SIR's rule). ``rules``: 0 SIR's λ schedule and stopping rules (``rtol`` > 0 adds the
    two-small-gains stop), 1 pyinv's (issue 17: gain-ratio λ, stop when the Gauss-Newton step predicts a merit
    reduction below ``rtol`` × merit, judged with an exact Jacobian). ``errors=False`` skips the uncertainties (``err``, ``cerr``, ``cov`` zero)
    and their final Jacobian. ``memo``: an :class:`RFMemo` kept across the cycles of one descent (None: a
    fresh one, i.e. no reuse)."""
    xa, use = _xnodes(xnodes)
    x = np.asarray(x, dtype=np.float64)
    two = x.ndim == 3
    nc = x.shape[2] if two else 1
    xf = np.array(x if two else x[:, :, None], dtype=np.float64, order="F", copy=True)
    vm = np.array(np.atleast_1d(np.asarray(vmac, dtype=np.float64)), dtype=np.float64, copy=True)
    nd = np.asfortranarray(np.asarray(nodes, dtype=np.int32).reshape(nc, 8).T)
    bnd = np.asarray(np.broadcast_to(np.asarray(boundary, dtype=np.int32), (nc,)), dtype=np.int32)
    bval = np.asarray(np.broadcast_to(np.asarray(bvalue, dtype=np.float64), (nc,)), dtype=np.float64)
    mx = np.array([float(mix[0]), float(mix[1])], dtype=np.float64)
    nw = setup.nw
    st = np.zeros((4, nw)) if stray is None else np.asarray(stray, dtype=np.float64)
    ndep = np.asarray(log_tau).size
    if memo is None or not memo.fits(nw, ndep):
        memo = RFMemo(nw, ndep)
    out = api().inv_cycle(setup.ibuf, setup.rbuf, f64(log_tau), xf, vm, f64_fortran(obs), f64(weights), float(snr),
                          nd, xa, use, int(interp), float(svdtol), float(lambda0), bnd, bval, float(mu),
                          int(bool(magnetic_pressure)), mx, _i32(invert_mix), f64_fortran(st),
                          int(contrast_point) + 1 if contrast_point >= 0 else 0, int(maxit),
                          int(jac_mode), int(jac_reuse), float(rtol), int(rules), int(bool(errors)), int(maxm),
                          int(maxtr), memo.ok, memo.want, memo.x, memo.st, memo.rf, memo.het)
    (fit, pg, rho, z, err, err_vmac, cerr, cerr_vmac, err_mix, cerr_mix, cov, trace, info, rinfo, ierr) = out
    info = dict(zip(INFO_SLOTS, (int(v) for v in info)))
    rinfo = dict(zip(RINFO_SLOTS, (float(v) for v in rinfo)))
    m = info["m"]
    if two:
        xo, vo, evm, cvm = xf, vm.copy(), np.asarray(err_vmac), np.asarray(cerr_vmac)
        pg, rho, z, err, cerr = (np.asarray(a) for a in (pg, rho, z, err, cerr))
    else:
        xo, vo, evm, cvm = xf[:, :, 0], float(vm[0]), float(err_vmac[0]), float(cerr_vmac[0])
        pg, rho, z, err, cerr = (np.asarray(a)[..., 0] for a in (pg, rho, z, err, cerr))
    return CycleResult(x=xo, vmac=vo, fit=np.asarray(fit), pg=pg, rho=rho, z=z, err=err,
                       err_vmac=evm, cerr=cerr, cerr_vmac=cvm,
                       cov=np.asarray(cov)[:m, :m], trace=np.asarray(trace)[:min(info["trials"], maxtr)],
                       **info, **rinfo, ierr=int(ierr), mix=mx, err_mix=np.asarray(err_mix),
                       cerr_mix=np.asarray(cerr_mix))


# Every public wrapper turns a wrongly typed argument into pyinv's InputError (a ValueError).
from .errors import input_errors as _input_errors  # noqa: E402

for _name in ("voigt", "voigt_derivatives", "planck", "eos_arrays", "pe_from_pg_arrays", "kappa_arrays",
              "kappa_deriv_arrays", "hydrostatic_arrays", "atomic_arrays", "pack_setup", "model_array",
              "synth_stokes", "zeeman_engine", "formal_solution", "hsra_continuum", "convolve_stokes", "synth_rf",
              "inv_allowed_nodes", "inv_node_basis", "inv_svd_solve", "inv_sigma", "inv_he_pe_jacobian",
              "inv_node_jacobian", "inv_cycle"):
    globals()[_name] = _input_errors(globals()[_name])
del _name
