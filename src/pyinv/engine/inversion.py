"""Wrappers of the engine's inversion: node bases, SVD solves, the noise model, node Jacobians and one
Levenberg–Marquardt cycle (:func:`inv_cycle`, fortran/nodes and inversion)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .core import api, check, f64, f64_fortran, i32
from .synthesis import MODEL_COLUMNS, Setup
from ..errors import input_errors

# ---------------------------------------------------------------------------------------------------
# section: inversion (nodes, Levenberg-Marquardt)
# Thin wrappers of the inv_* procedures of fortran/api.f90; set-ups are :class:`Setup`, model arrays
# ``x`` (ndep, 7) in MODEL_COLUMNS order.
# ---------------------------------------------------------------------------------------------------

#: Inversion slots, in the engine's order (= pyinv.config.NODE_PARAMETERS): the model columns, then the
#: macroturbulence (``macro``, the Atmosphere's name; the engine's own arguments call it vmac).
INV_SLOTS = MODEL_COLUMNS + ("macro",)
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
    u, w, v, d, ierr = api().inv_svd_solve(f64_fortran(a), f64(b), i32(blk), int(nvar), float(eps))
    return u, w, v, d, int(ierr)


def inv_sigma(obs, wgrp, ng: int, weights, snr: float):
    """SIR's σ (4, nλ), weights 1/σ² (4, nλ), nobs, nmask, ierr."""
    sig, wgt, nobs, nmask, ierr = api().inv_sigma(int(ng), i32(wgrp), f64_fortran(obs), f64(weights),
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
                                           i32(nodes), xa, use, int(interp), int(he), int(boundary),
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
                          int(bool(magnetic_pressure)), mx, i32(invert_mix), f64_fortran(st),
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
for _name in ('inv_allowed_nodes', 'inv_node_basis', 'inv_svd_solve', 'inv_sigma', 'inv_he_pe_jacobian', 'inv_node_jacobian', 'inv_cycle'):
    globals()[_name] = input_errors(globals()[_name])
del _name
