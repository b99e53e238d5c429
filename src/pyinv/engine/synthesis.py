"""Wrappers of the engine's synthesis: the packed set-up (:class:`Setup`), Stokes profiles, Zeeman patterns,
the formal solution, the HSRA continuum, the spectral convolution and response functions
(fortran/synthesis, zeeman, formal_solver, convolution, response)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .core import api, check, f64, f64_fortran, i32
from ..errors import input_errors

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
    gstart, gcount, glines = (i32(g).ravel() for g in groups)
    woff = f64(woff).ravel()
    wgrp = i32(wgrp).ravel()
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
                           *[i32(la[k]).ravel() for k in LINE_INT_FIELDS], gstart, gcount, glines, wgrp])
    rbuf = np.concatenate([*[f64(la[k]).ravel() for k in LINE_REAL_FIELDS], woff, e, px, py,
                           bdep.ravel(order="F")])
    return Setup(i32(ibuf), f64(rbuf), nl, int(gstart.size), int(woff.size), wgrp, opts)


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
                                                     float(vmac), i32(want), setup.nw, setup.nl)
    check(ierr, "response functions")
    return stokes, rf, rf_vmac, amax


# Every public wrapper turns a wrongly typed argument into pyinv's InputError (a ValueError).
for _name in ('pack_setup', 'model_array', 'synth_stokes', 'zeeman_engine', 'formal_solution', 'hsra_continuum', 'convolve_stokes', 'synth_rf'):
    globals()[_name] = input_errors(globals()[_name])
del _name
