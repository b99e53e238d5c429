"""Inversion of one pixel with SIR's method (spec-inversion.md): :func:`invert_pixel`.

The Levenberg–Marquardt loop, the node parameterisation and the uncertainties run in the Fortran engine
(``fortran/inversion.f90``, ``fortran/nodes.f90``); this module validates the inputs, turns an
:class:`~pyinv.config.InversionConfig` into per-cycle engine calls, hands the best model of each cycle
to the next one in memory (full precision, SIR rounds through ASCII files) and packs the result.

Differences from SIR, by design (spec §6.3): double precision throughout; response functions are
computed only at accepted models; the temperature Jacobian includes the exact hydrostatic coupling of
our own HE solver with the actual top boundary; the Pe quirk "< −25 % becomes −5 %" is not copied.
Not implemented (yet): automatic node selection (``auto_nodes``; the counts given are used as maxima,
rounded down to allowed values), two components / filling factor, stray light, continuum contrast,
negative (ratio) Stokes weights, regularisation (``interpolation`` 2–5 fall back to 0/1), the
magnetic-pressure term, NLTE departure coefficients.
"""
from __future__ import annotations

import dataclasses
import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from .errors import input_errors
import numpy as np

from . import engine
from .atmosphere import Atmosphere, AtmosphereErrors
from .config import InversionConfig, NODE_PARAMETERS, NODES_MAX
from .lines import LineList, WavelengthGrid

__all__ = ["invert_pixel", "PixelResult", "STATUS_OK", "status_message", "prepare_synthesis"]

#: Status of a successful inversion; other values are engine error codes (pyinv.engine.error_message).
STATUS_OK = 0
#: Default number of Broyden updates of the Jacobian in a row between exact ones (invert_pixel).
JACOBIAN_REUSE = 1


def status_message(status: int) -> str:
    """Text of an inversion status code (0 = success; otherwise the engine's error message)."""
    if status == STATUS_OK:
        return "success"
    try:
        return engine.error_message(status)
    except Exception:  # pragma: no cover - engine not built
        return f"engine error {status}"


@dataclass
class PixelResult:
    """Result of :func:`invert_pixel`.

    Attributes
    ----------
    atmosphere : Atmosphere
        Best model of the last completed cycle (Pg, ρ and z from hydrostatic equilibrium of its T).
    fit : ndarray (4, nλ)
        Its synthetic profiles.
    chi2 : ndarray (ncycles,)
        χ² at the end of each cycle, normalised as SIR prints it (χ²_raw / (N_obs − M − N_mask)).
    iterations : ndarray (ncycles,) of int
        Successful LM iterations per cycle.
    status : int
        0 = success; otherwise the engine error code that stopped the inversion (the result then holds
        the best model reached); see :attr:`message`.
    errors : AtmosphereErrors or None
        Uncertainties of the last cycle with SIR's ``.err`` formula (spec §3.10).
    errors_covariance : AtmosphereErrors or None
        1σ from the full covariance (J^T W J)⁺ · χ²/dof, SVD-truncated, propagated to depth (free
        columns only).
    covariance : ndarray (m, m) or None
        Node covariance of the last cycle (relative units of spec §2.2; radians for angles).
    trials, syntheses, chi2_start, snr, nodes :
        Per cycle: LM trials, χ² of the starting model, SIR's printed s/n, node counts used; total number
        of syntheses (finite-difference Jacobian columns included).
    trace : list of ndarray (ntrials, 3)
        Per cycle and trial: λ, χ² of the trial (printed normalisation), 1 = accepted.
    """

    atmosphere: Atmosphere
    fit: np.ndarray
    chi2: np.ndarray
    iterations: np.ndarray
    status: int = STATUS_OK
    errors: AtmosphereErrors | None = None
    errors_covariance: AtmosphereErrors | None = None
    covariance: np.ndarray | None = None
    trials: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    syntheses: int = 0
    chi2_start: np.ndarray = field(default_factory=lambda: np.zeros(0))
    snr: np.ndarray = field(default_factory=lambda: np.zeros(0))
    nodes: list = field(default_factory=list)
    trace: list = field(default_factory=list)
    message: str = "success"

    @property
    def ok(self) -> bool:
        """True when the inversion finished without an engine error."""
        return self.status == STATUS_OK


# ------------------------------------------------------------------------------------------- helpers
def prepare_synthesis(lines: LineList, grid: WavelengthGrid, *, psf=None, abundances=None,
                      magnetic: bool = True, sir_compat: bool = False, exact_blend_offsets: bool = False,
                      unsold_physical: bool = False, departures=None, log_tau=None) -> engine.Setup:
    """The engine set-up (:class:`pyinv.engine.Setup`: line data, groups, grid, ε, PSF, options, NLTE
    departures on the model grid ``log_tau``) of a synthesis, exactly as :func:`pyinv.synthesize` builds it."""
    from .synthesis import _setup

    return _setup(lines, grid, magnetic=magnetic, psf=psf, abundances=abundances, sir_compat=sir_compat,
                  exact_blend_offsets=exact_blend_offsets, unsold_physical=unsold_physical, departures=departures,
                  log_tau=log_tau)["setup"]


def _model_x(atm: Atmosphere) -> np.ndarray:
    return engine.model_array({c: getattr(atm, c) for c in engine.MODEL_COLUMNS})


def _fold_angles(x: np.ndarray) -> np.ndarray:
    """γ into [0°, 180°] by the reflections γ → −γ, γ → 360° − γ (same Stokes vector)."""
    g = np.mod(x[:, 5], 360.0)
    x[:, 5] = np.where(g > 180.0, 360.0 - g, g)
    return x


def _boundary(cfg: InversionConfig) -> tuple[int, float]:
    v = float(cfg.pg_surface1)
    if v > 0:
        return 1, v
    if v < 0:
        return 2, -v
    return 0, 0.0


def _cycle_nodes(cfg: InversionConfig, cycle: int, ndep: int, explicit=None) -> list[int]:
    req = cfg.nodes(cycle)
    out = []
    for p in NODE_PARAMETERS:
        n = int(req.get(p, 0))
        if n < 0:
            raise ValueError(f"node count {n} for {p}: ties (-1) need two components, not supported")
        if p == "vmac":
            out.append(min(n, 1))
            continue
        if n == NODES_MAX:
            n = ndep
        if explicit and p in explicit and explicit[p].size == n:
            out.append(n)  # explicit log tau positions: any count
            continue
        m = engine.inv_allowed_nodes(ndep, n)
        if m != n:
            warnings.warn(f"cycle {cycle}: nodes for {p} changed from {n} to {m} (allowed counts on "
                          f"{ndep} depth points)", stacklevel=3)
        out.append(m)
    return out


# ------------------------------------------------------------------------------------------- driver
@input_errors
def invert_pixel(stokes, guess: Atmosphere, lines: LineList, grid: WavelengthGrid, config: InversionConfig, *,
                 mu: float | None = None, psf=None, abundances=None,
                 node_positions: Mapping[str, Sequence[float]] | None = None, max_iterations: int = 100,
                 jacobian: str = "depth", rtol: float = 1e-3, svd_scaling: str = "jacobian",
                 jacobian_reuse: int = JACOBIAN_REUSE, sir_compat: bool = False, departures=None) -> PixelResult:
    """Invert the Stokes profiles of one pixel with SIR's method (spec-inversion §2–§3).

    Parameters
    ----------
    stokes : array (4, nλ)
        Observed I, Q, U, V normalised like the synthesis (HSRA disk-centre continuum). Values below
        −0.99 are masked, as in SIR.
    guess : Atmosphere
        Initial model (single, on a uniform log τ grid; relative parameters need nonzero values, e.g.
        B > 0, vmic > 0 and ``macro`` > 0 when inverted).
    lines, grid :
        Line list and wavelength grid (as for :func:`pyinv.synthesize`).
    config : InversionConfig
        Cycles, node counts, Stokes weights, S/N, SVD tolerance, initial λ, interpolation, HE boundary
        (``pg_surface1``), μ.
    mu : float, optional
        Heliocentric cosine (only in hydrostatic equilibrium); ``None`` takes ``config.mu``.
    psf : PSF as for :func:`pyinv.synthesize`; ``None`` takes ``config.psf_file`` (none when empty).
    abundances : log ε (92,), path, or None (``config.abundances_file``, else pyinv's default set).
    node_positions : dict, optional
        Extension: explicit node positions in log τ per parameter (e.g. ``{"T": [1.0, -1.0, -3.5]}``);
        they replace SIR's equidistant layout in every cycle that inverts the parameter with that many
        nodes.
    max_iterations : int
        Successful iterations per cycle at most (SIR: 100).
    jacobian : "depth" or "nodes"
        How the engine computes the Jacobian: ``"depth"`` (default) the analytic depth-resolved response
        functions of the synthesis (pyinv_response::synth_rf) compressed to nodes by the chain rule,
        with the exact tangent-linear hydrostatic coupling for T; ``"nodes"`` directional finite
        differences in node space (one synthesis per free node parameter; a cross-check).
    rtol : float
        pyinv stopping option (spec §6.3): a cycle also ends after two consecutive successful iterations
        whose relative gain (χ²_old − χ²_new)/(χ²_old + χ²_new) is below ``rtol`` (default 1e-3, i.e. two
        iterations in a row that improve χ² by less than 0.2 % each; on the invert_hinode reference set it
        takes 17 % fewer syntheses than 1e-4 with χ² ≤ 1.05 × SIR's on 19/20 pixels either way; 1e-4 was
        the default before issue 9); 0 = SIR's rules only.
    jacobian_reuse : int
        pyinv (issue 9): after an accepted step the Jacobian is updated with Broyden's secant formula
        instead of recomputed, at most this many times in a row; a step that fails with an updated
        Jacobian is retried with the exact one. 0 = a new Jacobian after every accepted step (SIR).
    svd_scaling : "jacobian" or "sir"
        How ``config.svd_tolerance`` ε is applied by SIR's per-variable modified SVD (spec §3.3).
        ``"sir"``: to the eigenvalues of JᵀWJ, exactly as SIR. ``"jacobian"`` (default): to the
        singular values of W^½J, i.e. ε² on JᵀWJ. SIR's ε = 1e-4 on JᵀWJ sits near its float32
        round-off; in double precision it needlessly truncates weakly constrained directions and stalls
        convergence (noise-free recovery of the invert_hinode models: 15/20 with "sir", 19/20 with
        "jacobian", same χ² on the noisy data).
    sir_compat : bool
        SIR's synthesis quirks (1 G threshold, damping cap, EOS nuclei count).
    departures : pyinv.nlte.Departures or path of a SIR 2017 departure file, optional
        NLTE departure coefficients held fixed through the inversion (SIR 2017, spec-forward §7.10; see
        :func:`pyinv.synthesize`); ``None`` takes ``config.nlte_file`` ("NLTE Departures filename").

    Returns
    -------
    PixelResult
        Engine failures (singular systems, NaN profiles, all-zero weights, ...) come back as a nonzero
        ``status``, never as an exception; invalid Python arguments raise ValueError.
    """
    if not isinstance(config, InversionConfig):
        raise ValueError(f"config must be a pyinv.InversionConfig, got {type(config).__name__}")
    if not isinstance(guess, Atmosphere) or guess.stacked:
        raise ValueError("guess must be a single (unstacked) pyinv.Atmosphere")
    obs = np.asarray(stokes, dtype=np.float64)
    if obs.shape != (4, grid.nwav):
        raise ValueError(f"stokes must have shape (4, {grid.nwav}), got {obs.shape}")
    if config.cycles < 1:
        raise ValueError(f"config.cycles must be >= 1 for an inversion, got {config.cycles}")
    lt = np.asarray(guess.log_tau, dtype=np.float64)
    steps = -np.diff(lt)
    if lt.size < 2 or np.any(np.abs(steps - steps[0]) > 2e-5):
        raise ValueError("the guess must have a uniform log tau grid (SIR's inversion requirement)")
    if svd_scaling not in ("jacobian", "sir"):
        raise ValueError(f"svd_scaling must be 'jacobian' or 'sir', got {svd_scaling!r}")
    if not (isinstance(jacobian_reuse, (int, np.integer)) and 0 <= jacobian_reuse <= 100):
        raise ValueError(f"jacobian_reuse must be an integer in 0..100, got {jacobian_reuse!r}")
    if jacobian not in ("nodes", "depth"):
        raise ValueError(f"jacobian must be 'nodes' or 'depth', got {jacobian!r}")
    mu_f = float(config.mu if mu is None else mu)
    if not (0.0 < abs(mu_f) <= 1.0):
        raise ValueError(f"mu must satisfy 0 < |mu| <= 1, got {mu_f}")
    if psf is None and config.psf_file:
        psf = config.resolve("psf_file")
    if abundances is None and config.abundances_file:
        abundances = config.resolve("abundances_file")
    if departures is None and config.nlte_file:
        departures = config.resolve("nlte_file")
    if any(config.value("auto_nodes", c) == 1 for c in range(1, config.cycles + 1)):
        warnings.warn("automatic node selection is not implemented: the given counts are used",
                      stacklevel=2)
    if config.nodes2 and any(any(v) for v in config.nodes2.values()):
        raise ValueError("two-component inversions are not supported yet (config.nodes2 is set)")
    xnodes = None
    if node_positions:
        xnodes = {}
        for k, v in node_positions.items():
            if k not in engine.INV_SLOTS[:7]:
                raise ValueError(f"node_positions: unknown parameter {k!r}")
            a = np.asarray(v, dtype=np.float64).ravel()
            if a.size < 2 or not np.all(np.isfinite(a)):
                raise ValueError(f"node_positions[{k!r}] needs at least 2 finite log tau values")
            xnodes[k] = a

    magnetic = bool(np.any(np.asarray(guess.B) != 0)) or any(config.nodes(c).get("B", 0) > 0
                                                          for c in range(1, config.cycles + 1))
    setup = prepare_synthesis(lines, grid, psf=psf, abundances=abundances, magnetic=magnetic,
                              sir_compat=sir_compat, departures=departures, log_tau=lt)
    boundary, bvalue = _boundary(config)
    jac_mode = engine.JAC_FINITE_DIFFERENCE if jacobian == "nodes" else engine.JAC_ANALYTIC
    x = _model_x(guess)
    vmac = float(guess.macro)
    ndep = lt.size
    chi2, iters, trials, c2start, snrs, node_log, traces = [], [], [], [], [], [], []
    status = STATUS_OK
    nsyn = 0
    res = None
    last_ok = None
    for c in range(1, config.cycles + 1):
        nodes = _cycle_nodes(config, c, ndep, xnodes)
        xn_c = None
        if xnodes:
            xn_c = {k: v for k, v in xnodes.items() if nodes[engine.INV_SLOTS.index(k)] == v.size}
        interp = int(config.value("interpolation", c)) % 2 if int(config.value("interpolation", c)) > 1 \
            else int(config.value("interpolation", c))
        res = engine.inv_cycle(setup, lt, x, vmac, obs, config.weights_for(c), float(config.value("snr", c)),
                               nodes, xnodes=xn_c, interp=interp,
                               svdtol=float(config.value("svd_tolerance", c)) ** (2 if svd_scaling == "jacobian"
                                                                                    else 1),
                               lambda0=float(config.value("initial_diagonal", c)), boundary=boundary,
                               bvalue=bvalue, mu=mu_f, maxit=max_iterations, jac_mode=jac_mode,
                               jac_reuse=jacobian_reuse, rtol=rtol,
                               errors=c == config.cycles)   # uncertainties of the last cycle only
        nsyn += res.syntheses
        node_log.append(dict(zip(engine.INV_SLOTS, nodes)))
        x, vmac = res.x, res.vmac
        if res.trials > 0:  # the cycle ran (trials were made)
            chi2.append(res.chi2)
            c2start.append(res.chi2_start)
            snrs.append(res.snr)
            iters.append(res.iterations)
            trials.append(res.trials)
            traces.append(res.trace)
            last_ok = res
        if res.ierr != 0:
            status = res.ierr
            break

    x = _fold_angles(np.array(x, copy=True))
    cols = dict(zip(engine.MODEL_COLUMNS, x.T))
    errors = errors_cov = cov = None
    fit = np.full_like(obs, np.nan)
    if last_ok is not None:
        fit = last_ok.fit
        if np.all(last_ok.pg > 0):
            cols.update(Pg=last_ok.pg, rho=last_ok.rho, z=last_ok.z)
        if status == STATUS_OK:
            e = dict(zip(engine.MODEL_COLUMNS + ("z", "Pg", "rho"), last_ok.err.T))
            errors = AtmosphereErrors(log_tau=lt, **e, macro=last_ok.err_vmac)
            ce = dict(zip(engine.MODEL_COLUMNS, last_ok.cerr.T))
            errors_cov = AtmosphereErrors(log_tau=lt, **ce, macro=last_ok.cerr_vmac)
            cov = last_ok.cov
    atm = Atmosphere(log_tau=lt, **cols, macro=vmac, filling=guess.filling, stray=guess.stray)
    return PixelResult(atmosphere=atm, fit=fit, chi2=np.asarray(chi2), iterations=np.asarray(iters, dtype=int),
                       status=int(status), errors=errors, errors_covariance=errors_cov, covariance=cov,
                       trials=np.asarray(trials, dtype=int), syntheses=nsyn, chi2_start=np.asarray(c2start),
                       snr=np.asarray(snrs), nodes=node_log, trace=traces, message=status_message(int(status)))
