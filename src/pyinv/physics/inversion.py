"""Inversion of one pixel with SIR's method (spec-inversion.md): :func:`invert_pixel`.

The Levenberg–Marquardt loop, the node parameterisation and the uncertainties run in the Fortran engine
(``fortran/inversion.f90``, ``fortran/nodes.f90``); this module validates the inputs, turns an
:class:`~pyinv.config.InversionConfig` into per-cycle engine calls, hands the best model of each cycle
to the next one in memory (full precision, SIR rounds through ASCII files) and packs the result.

Two components (each with its own nodes, macroturbulence and HE boundary; node count −1 ties a slot to
the other component), the filling factor of component 2 and the stray-light fraction are inverted as SIR
does (spec-inversion §1.5, §4.5, §4.10), with the magnetic-pressure term in hydrostatic equilibrium
(§4.6) when asked.

Differences from SIR, by design (spec §6.3): double precision throughout; response functions are
computed only at accepted models; the temperature Jacobian includes the exact hydrostatic coupling of
our own HE solver with the actual top boundary; the Pe quirk "< −25 % becomes −5 %" is not copied.
Automatic node selection (``auto_nodes``, SIR's ``*``) applies SIR's gradient-score rule (§2.6) once,
at the start of the cycle, to the model the cycle starts from, and keeps the chosen counts for the
whole cycle (SIR re-chooses them at every evaluation, so its parameter vector changes length between
trials); the magnetic pressure does not enter the Jacobian (SIR adds an inconsistent local term).
The regularised interpolation modes 2–5 (§4.8, qualitative there) minimise χ²(1 + P) with pyinv's own
penalty P (``pyinv_nodes::layout_penalty``: the excess total variation of the node values over their net
change, modes 2/3, or the same counted only at extrema, modes 4/5, each slot scaled by its first node
value), splines for even and linear interpolation for odd modes; the reported χ² stays χ².
The continuum contrast (§4.3, two components) is SIR's pseudo-observation: (c − 1)/(c + 1) against
(I₁ − I₂)/2 at a line-free point at 5000 Å, σ = 4 σ_last / √(N_λ w_I).
Refused with a ValueError naming the field: negative (ratio) Stokes weights.
"""
from __future__ import annotations

import dataclasses
import math
import os
import warnings
from typing import Mapping, Sequence

from ..errors import input_errors
import numpy as np

from .. import engine
from ..atmosphere import Atmosphere, AtmosphereErrors, QuantityDict, canonical_name, renamed_keywords
from ..config import InversionConfig, NODE_PARAMETERS, NODES_MAX
from ..lines import LineList, WavelengthGrid
from .mixing import resolve_mixing
from .pixelresult import (STATUS_OK, PixelResult, free_parameters, reduced_chi2, result_reduced_chi2, status_message,
                          weighted_residual)

__all__ = ["invert_pixel", "PixelResult", "STATUS_OK", "reduced_chi2", "free_parameters", "RESCUE_THRESHOLD",
           "RESCUE_MIN_TRIALS_PER_CYCLE", "RESCUE_PATH", "status_message", "prepare_synthesis", "auto_node_maxima",
           "select_node_count", "refuse_unsupported", "check_mixing_settings", "top_boundary", "COARSE_SPACING",
           "coarse_stride"]

#: Default number of Broyden updates of the Jacobian in a row between exact ones (invert_pixel).
JACOBIAN_REUSE = 1
#: Default stopping tolerances of pyinv's rules (issue 17): cycles before the last only hand a start on
#: (1e-2), the last cycle is converged to 3e-4 (see invert_pixel's ``rtol``).
RTOL_EARLY, RTOL_LAST = 1e-2, 3e-4
#: Default rescue threshold (issue 17): a second LM path is tried when the fit's reduced χ² against the
#: noise model (:func:`reduced_chi2`, ≈ 1 at the noise level) exceeds this.
RESCUE_THRESHOLD = 1.5
#: A rescue also needs a first descent that struggled: at least this many LM trials (accepted and rejected steps)
#: per cycle on average. Chosen on the tuning (even) half of invert_hinode_200 (checked on invert_hinode and
#: the even half of the real set): every pixel whose parity with SIR came from the rescue had >= 13 per
#: cycle, while half of the pixels above the χ² threshold converge in fewer and none of them needed the
#: second descent. First set to 11 (CPU per pixel on that half 0.191 -> 0.160 s, parity 99/100 unchanged);
#: 13 since the speed work of issue 17: on that half 21 second descents instead of 29, engine work per pixel
#: -7 %, parity 99/100, median and p90 χ² ratio to SIR unchanged; no change on invert_hinode (6 rescues) or
#: the real set (every pixel struggles there). 8 with the coarse early cycles (COARSE_SPACING): they end
#: some tuning pixels in other minima after fewer trials (96/100 at 13), which the rescue recovers (99/100).
RESCUE_MIN_TRIALS_PER_CYCLE = 8
#: Default ``coarse`` of invert_pixel (issue 17): the log τ spacing [dex] of the depth grid on which cycle 1 and the
#: later cycles before the last run (every s-th point of the model's grid, s the largest stride within it).
#: Chosen on the tuning (even) halves of invert_hinode_200 and the real set, with the rescue's trial count above.
COARSE_SPACING = (0.4, 0.2)
#: The coarsest grid a coarse cycle may use: at least this many intervals.
COARSE_MIN_INTERVALS = 8
#: The second path of a rescue, a different descent from the same start: SIR's λ schedule, Broyden
#: updates and the two-small-gains stop (the pre-issue-17 defaults), with SIR's SVD truncation (ε on
#: JᵀWJ, which damps weakly constrained directions harder).
RESCUE_PATH = {"rules": "sir", "rtol": 1e-3, "jacobian_reuse": 1, "svd_scaling": "sir"}
#: invert_pixel's ``magnetic_start`` default: "profiles" (B, γ, φ of the start read off the observed profiles,
#: :func:`pyinv.physics.fieldstart.estimate_field`) or "guess" (the guess's, as SIR)
MAGNETIC_START = "guess"


def prepare_synthesis(lines: LineList, grid: WavelengthGrid, *, psf=None, abundances=None,
                      magnetic: bool = True, sir_compat: bool = False, exact_blend_offsets: bool = False,
                      unsold_physical: bool = False, departures=None, log_tau=None,
                      departure_form: str = "sir") -> engine.Setup:
    """The engine set-up (:class:`pyinv.engine.Setup`: line data, groups, grid, ε, PSF, options, NLTE
    departures on the model grid ``log_tau`` in ``departure_form``) of a synthesis, exactly as
    :func:`pyinv.synthesize` builds it."""
    from .synthesis import _setup

    return _setup(lines, grid, magnetic=magnetic, psf=psf, abundances=abundances, sir_compat=sir_compat,
                  exact_blend_offsets=exact_blend_offsets, unsold_physical=unsold_physical, departures=departures,
                  log_tau=log_tau, departure_form=departure_form)["setup"]


def _model_x(atm: Atmosphere) -> np.ndarray:
    return engine.model_array({c: getattr(atm, c) for c in engine.MODEL_COLUMNS})


def _fold_angles(x: np.ndarray) -> np.ndarray:
    """γ into [0°, 180°] by the reflections γ → −γ, γ → 360° − γ (same Stokes vector)."""
    g = np.mod(x[:, 5], 360.0)
    x[:, 5] = np.where(g > 180.0, 360.0 - g, g)
    return x


def top_boundary(cfg: InversionConfig, component: int = 1) -> tuple[int, float]:
    """HE top boundary (kind, value) of a component (§4.6); when only one of ``pg_surface1`` /
    ``pg_surface2`` is non-zero, both components use it (SIR's rule)."""
    p1, p2 = float(cfg.pg_surface1), float(cfg.pg_surface2)
    v = p1 if component == 1 else p2
    if v == 0.0:
        v = p2 if component == 1 else p1
    if v > 0:
        return 1, v
    if v < 0:
        return 2, -v
    return 0, 0.0


def _cycle_nodes(cfg: InversionConfig, cycle: int, ndep: int, explicit=None, model: int = 1,
                 ties: bool = False) -> list[int]:
    """Node counts of one component in one cycle, in engine slot order (``*`` → ndep, to be reduced
    by automatic selection); −1 (tie) only with two components."""
    req = cfg.nodes_for(cycle, model)
    out = []
    for p in NODE_PARAMETERS:
        n = int(req.get(p, 0))
        if n < 0:
            if not ties:
                raise ValueError(f"nodes{'2' if model == 2 else ''}[{p!r}] cycle {cycle}: -1 ties a parameter to "
                                 "the other component and needs two components (guess2)")
            out.append(-1)
            continue
        if p == "macro":
            out.append(min(n, 1))
            continue
        if n == NODES_MAX:
            n = ndep
        if explicit and p in explicit and explicit[p].size == n:
            out.append(n)  # explicit log tau positions: any count
            continue
        m = engine.inv_allowed_nodes(ndep, n)
        if m != n and req.get(p, 0) != NODES_MAX:
            warnings.warn(f"cycle {cycle}: nodes for {p} changed from {n} to {m} (allowed counts on "
                          f"{ndep} depth points)", stacklevel=3)
        out.append(m)
    return out


def auto_node_maxima(cfg: InversionConfig, cycle: int, nobs: int, ndep: int, ncomp: int = 1) -> list[dict]:
    """SIR's maximum node counts of an automatic-selection cycle (spec-inversion §2.6 (a)): budget =
    min(200, N_obs) − Σ explicit counts, n_max = round(budget / (n_* + 2)), starred T slots 2 n_max,
    other starred slots n_max, rounded down to allowed counts; explicit counts are maxima themselves.
    Returns one ``{parameter: maximum}`` per component."""
    reqs = [cfg.nodes_for(cycle, k) for k in range(1, ncomp + 1)]
    starred = sum(1 for r in reqs for p in NODE_PARAMETERS if p != "macro" and r.get(p, 0) == NODES_MAX)
    explicit = sum(max(int(r.get(p, 0)), 0) for r in reqs for p in NODE_PARAMETERS
                   if r.get(p, 0) != NODES_MAX)
    budget = min(200, nobs) - explicit
    nmax = int(round(budget / (starred + 2))) if starred else 0
    out = []
    for r in reqs:
        d = {}
        for p in NODE_PARAMETERS:
            n = int(r.get(p, 0))
            if p == "macro":
                continue
            if n == NODES_MAX:
                n = 2 * nmax if p == "T" else nmax
                n = max(1, min(n, ndep))
            d[p] = engine.inv_allowed_nodes(ndep, n) if n > 0 else n
        out.append(d)
    return out


def select_node_count(d: np.ndarray, nmax: int, ndep: int) -> int:
    """SIR's choice of a node count from the gradient profile d_k = −½ ∂χ²/∂x_k over depth (spec-inversion
    §2.6 (c)): 1 when d is single-signed; otherwise the allowed count ≤ ``nmax`` whose consecutive
    segments' integrals of d / ∫|d| spread most (a larger count must be strictly better). SIR's read of one
    element before the array (platform-dependent) is not copied."""
    d = np.asarray(d, dtype=np.float64)
    a0 = float(np.trapezoid(np.abs(d)))
    if not a0 > 0:
        return 1
    a1 = float(np.trapezoid(d)) / a0
    if d.max() * d.min() >= 0 or a1 == 1.0:
        return 1
    best_n, best = 1, abs(a1)
    for n in range(2, nmax + 1):
        if engine.inv_allowed_nodes(ndep, n) != n:
            continue
        seg = max(1, int(round((ndep - 1) / n)))
        edges = [min(k * seg, ndep - 1) for k in range(n)] + [ndep - 1]
        ints = [float(np.trapezoid(d[edges[k]:edges[k + 1] + 1])) / a0 for k in range(n)]
        score = max(ints) - min(ints)
        if score > best:
            best_n, best = n, score
    return best_n


def _auto_nodes(counts: list[list[int]], maxima: list[dict], atmospheres: list[Atmosphere], obs, setup,
                weights, snr, lines, grid, *, mu, psf, abundances, sir_compat, departures, departure_form,
                mixing_kw) -> list[list[int]]:
    """Node counts of an automatic-selection cycle: for every slot whose maximum exceeds 1, SIR's score
    rule on the gradient of χ² over depth at the starting model (response functions at all depths)."""
    from .response import response_functions

    if not any(v > 1 for mx in maxima for v in mx.values()):
        return counts
    kw = dict(mu=mu, psf=psf, abundances=abundances, sir_compat=sir_compat, departures=departures,
              departure_form=departure_form)
    if mixing_kw:
        rf = response_functions(atmospheres[0], lines, grid, **kw, **mixing_kw)
    else:
        rf = response_functions(atmospheres[0], lines, grid, **kw)
    _, wgt, _, _, ierr = engine.inv_sigma(obs, setup.wgrp, setup.ng, weights, snr)
    if ierr != 0:
        return counts
    resid = wgt * (np.asarray(obs) - rf["stokes"])
    ndep = atmospheres[0].ndep
    out = [list(c) for c in counts]
    for k, mx in enumerate(maxima):
        for p, nmax in mx.items():
            if nmax <= 1:
                continue
            # the response-function keys are the node slots' names; T with P_e in hydrostatic equilibrium
            key = ("T_he" if p == "T" else p) + ("_2" if k == 1 else "")
            if key not in rf and p == "T":
                key = "T" + ("_2" if k == 1 else "")
            r = rf.get(key)
            if r is None:
                continue
            d = np.einsum("ksl,sl->k", np.asarray(r), resid)
            out[k][NODE_PARAMETERS.index(p)] = select_node_count(d, nmax, ndep)
    return out


def check_mixing_settings(config: InversionConfig, *, two_components: bool | None = None,
                          has_stray: bool | None = None) -> None:
    """ValueError for settings that need a second component or a stray-light profile that is not there
    (component-2 nodes, ``invert_filling``, ``invert_stray``); :func:`invert_pixel` and :func:`pyinv.invert`.
    ``None``: that side is not checked."""
    cycles = range(1, config.cycles + 1)
    if two_components is False:
        for c in cycles:
            used = {k: v for k, v in config.nodes_for(c, 2).items() if v != 0}
            if used:
                k, v = next(iter(used.items()))
                raise ValueError(f"nodes2[{k!r}]={v} (cycle {c}) inverts a second component: pass its initial model "
                                 "as guess2=")
        if any(config.value("invert_filling", c) for c in cycles):
            raise ValueError(f"invert_filling={config.invert_filling!r} needs a second component: pass guess2=")
    if has_stray is False and any(config.value("invert_stray", c) for c in cycles):
        raise ValueError(f"invert_stray={config.invert_stray!r}: the stray-light factor is inverted but there is no "
                         "stray-light profile (stray_profile= of invert_pixel and pyinv.invert, or the configuration's "
                         "stray_file)")


def refuse_unsupported(config: InversionConfig, two_components: bool | None = None) -> None:
    """ValueError naming every control setting invert_pixel cannot honour (``two_components`` False: also
    the settings that need a second component)."""
    if config.contrast != -1.0 and not config.contrast > 0.0:
        raise ValueError(f"contrast={config.contrast:g}: the continuum contrast I_c1/I_c2 must be > 0 (or -1/empty: "
                         "not used)")
    if config.contrast != -1.0 and two_components is False:
        raise ValueError(f"contrast={config.contrast:g}: the continuum contrast I_c1/I_c2 needs two components "
                         "(guess2)")
    for c in range(1, config.cycles + 1):
        w = config.weights_for(c)
        if any(x < 0 for x in w):
            raise ValueError(f"weights={tuple(w)} (cycle {c}): negative weights (fit Q/I, U/I, V/I) are not "
                             "supported by pyinv")


# ------------------------------------------------------------------------------------------- driver
@renamed_keywords
@input_errors
def invert_pixel(stokes, guess: Atmosphere, lines: LineList, grid: WavelengthGrid, config: InversionConfig, *,
                 mu: float | None = None, psf=None, abundances=None,
                 node_positions: Mapping[str, Sequence[float]] | None = None, max_iterations: int = 100,
                 jacobian: str = "depth", rtol: float | Sequence[float] | None = None, svd_scaling: str = "jacobian",
                 jacobian_reuse: int = JACOBIAN_REUSE, rules: str | None = None, rescue: bool | float = True,
                 sir_compat: bool = False, departures=None, departure_form: str = "sir",
                 guess2: Atmosphere | None = None, filling: float | None = None, stray_profile=None,
                 stray: float | None = None, magnetic_start: str | None = None,
                 coarse: float | Sequence[float] | bool | None = None) -> PixelResult:
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
    rtol : float, sequence of floats (one per cycle) or None
        Stopping tolerance. With pyinv's rules (issue 17) a cycle ends when its last accepted step reduced
        the merit by less than ``rtol`` × merit **and** the undamped Gauss-Newton step of the current
        normal equations predicts less than that as well, or when its last three accepted steps together
        reduced it by less than ``rtol`` × merit (stagnation), judged with an exact Jacobian (never on a
        Broyden-updated one); λ follows the gain ratio (actual / predicted reduction). ``None`` (default):
        1e-2 in cycles before the last (they only hand a start on) and 3e-4 in the last. ``0`` selects
        SIR's rules (its λ schedule and stopping rule) unless ``rules`` says otherwise.
    jacobian_reuse : int
        pyinv (issue 9): after an accepted step the Jacobian is updated with Broyden's secant formula
        instead of recomputed, at most this many times in a row; with pyinv's rules only after a step whose
        gain ratio exceeds 0.5. A step that fails with an updated Jacobian is retried with the exact one.
        0 = a new Jacobian after every accepted step (SIR).
    rules : "pyinv", "sir" or None
        ``"pyinv"``: the rules above; ``"sir"``: SIR's λ schedule (with its anti-cycling) and stopping rule
        (spec-inversion §3.6–3.7), plus, when ``rtol`` > 0, a stop after two consecutive accepted steps with
        (χ²_old − χ²_new)/(χ²_old + χ²_new) < ``rtol`` (the pre-issue-17 defaults were ``rules="sir",
        rtol=1e-3, jacobian_reuse=1``). ``None``: ``"sir"`` when ``rtol`` is 0, else ``"pyinv"``. SIR's rules
        exactly: ``rtol=0, jacobian_reuse=0``.
    rescue : bool or float
        A second start for a fit that is far from the noise (issue 17): when the result's reduced χ² against
        the noise model of the last cycle (:func:`reduced_chi2`) exceeds the threshold (``True``:
        :data:`RESCUE_THRESHOLD`; a float: that threshold) and the descent needed at least
        :data:`RESCUE_MIN_TRIALS_PER_CYCLE` LM trials per cycle on average (or a cycle after the first took no
        accepted step at all), the same start (the guess as given) is inverted again along a
        different descent (:data:`RESCUE_PATH`: SIR's λ schedule with Broyden updates and the two-small-gains
        stop, SIR's SVD truncation) and the result with the smaller weighted residual Σ_s w_s mean (O − S)² (the
        noise model with the configuration's Stokes weights) is kept; ``PixelResult.rescue`` records it (0 not
        tried, 1 tried, 2 taken). Its cost is part of the call. ``False``: one path only. No rescue with
        SIR's rules (``rtol=0``).
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
    departure_form : "sir" or "desire"
        How the departures enter (:func:`pyinv.synthesize`): SIR 2017's form (default) or DeSIRe's (NLTE
        stimulated emission, a source function per line, the continuum at Planck), field-free or magnetic;
        the response functions are exact at fixed departures in both.
    guess2 : Atmosphere, optional
        Initial model of component 2 (same log τ grid as ``guess``), inverted with ``config.nodes2``
        (−1 = tied to component 1's slot), its own ``macro`` and HE boundary ``config.pg_surface2``
        (0: component 1's). The observed profile is modelled as
        I = (1 − α)[(1 − f₂) I₁ + f₂ I₂] + α I_stray.
    filling : float, optional
        f₂, the filling factor of component 2, of the start in [0, 1] ((0, 1) when
        ``config.invert_filling``); None takes ``guess2.filling`` (SIR: model 2's header). Old spelling
        ``filling2=`` (accepted with a DeprecationWarning).
    stray_profile : array (4, nλ) or path of a SIR profile file, optional
        Stray-light profile (used as given, not convolved); None takes ``config.stray_file``.
    stray : float, optional
        α, the stray-light fraction [%] of the start, in [0, 100) (> 0 when ``config.invert_stray``); None
        takes ``guess.stray`` (SIR: model 1's header). Old spelling ``stray_percent=`` (accepted with a
        DeprecationWarning).
    magnetic_start : "profiles", "guess" or None
        Where the start's B, γ, φ come from (issue 17). ``"profiles"``: estimated from the observed profiles
        (:func:`pyinv.physics.fieldstart.estimate_field`: centre-of-gravity B_los, weak-field / strong-field
        B_⊥ and φ) and set constant with depth in place of the guess's before cycle 1, for one-component
        inversions without stray light whose B and γ are free in cycle 1 (else the guess is used as given);
        where V is at the noise the guess is kept, where Q and U carry no weight or signal only B is set
        (B cos γ = B_los, γ the guess's, 180° − γ for B_los < 0). The rescue's second descent starts from
        the guess as given. ``"guess"``: the guess's values (SIR). None: :data:`MAGNETIC_START`. The
        estimate is recorded in ``PixelResult.magnetic_start``.
    coarse : float, sequence of floats, bool or None
        Coarse depth grids for the cycles before the last (issue 17): cycle c runs on every s-th point of the
        model's grid, s the largest stride with s·Δlog τ ≤ ``coarse[c-1]`` [dex] (the last value repeats) that
        keeps the grid's end points and at least :data:`COARSE_MIN_INTERVALS` intervals
        (:func:`coarse_stride`), with the full grid's node positions; its model change is carried back to the
        full grid (interpolated in log τ; exact for one or two nodes) and put in hydrostatic equilibrium. The
        last cycle always runs on the model's own grid, so the answer is that of the full grid; an earlier
        cycle's χ² in the result is that of its grid. Only for one component
        without stray light, contrast point, departures, explicit node positions, magnetic pressure or free Pe,
        and not with SIR's rules (``rtol=0``); a coarse cycle that fails is run again on the full grid.
        ``None`` (default): :data:`COARSE_SPACING` (0.4 dex in cycle 1, 0.2 after: strides 4 and 2 on a
        0.1-dex grid); ``False`` or 0: the model's grid in every cycle.

    Returns
    -------
    PixelResult
        Engine failures (singular systems, NaN profiles, all-zero weights, ...) come back as a nonzero
        ``status``, never as an exception; invalid Python arguments raise ValueError.
    """
    kw = dict(mu=mu, psf=psf, abundances=abundances, node_positions=node_positions, max_iterations=max_iterations,
              jacobian=jacobian, sir_compat=sir_compat, departures=departures, departure_form=departure_form,
              guess2=guess2, filling=filling, stray_profile=stray_profile, stray=stray,
              coarse=_coarse_spacings(coarse))
    if isinstance(rescue, (bool, np.bool_)):
        threshold = RESCUE_THRESHOLD if rescue else None
    else:
        threshold = float(rescue)
        if not (math.isfinite(threshold) and threshold > 0):
            raise ValueError(f"rescue must be True, False or a reduced-chi2 threshold > 0, got {rescue!r}")
    if rtol is None:
        rtol = [RTOL_EARLY] * (max(int(getattr(config, "cycles", 1)), 1) - 1) + [RTOL_LAST]
    rtols, rules = _stopping(rtol, rules)
    start, estimate = magnetic_start_from_profiles(stokes, guess, lines, grid, config, magnetic_start,
                                                   two_components=guess2 is not None,
                                                   stray=stray_profile is not None
                                                   or bool(getattr(config, "stray_file", None)))
    first = _invert_path(stokes, start, lines, grid, config, rtols=rtols, jacobian_reuse=jacobian_reuse, rules=rules,
                         svd_scaling=svd_scaling, **kw)
    first.chi2_reduced = result_reduced_chi2(stokes, first, config)
    first.magnetic_start = estimate
    if threshold is None or rules == "sir" or not (first.chi2_reduced > threshold) or \
            (int(np.sum(first.trials)) < RESCUE_MIN_TRIALS_PER_CYCLE * config.cycles and not _stuck(first)):
        return first
    second_rtols, second_rules = _stopping(RESCUE_PATH["rtol"], RESCUE_PATH["rules"])
    second = _invert_path(stokes, guess, lines, grid, config, rtols=second_rtols, rules=second_rules,
                          jacobian_reuse=RESCUE_PATH["jacobian_reuse"], svd_scaling=RESCUE_PATH["svd_scaling"], **kw)
    second.chi2_reduced = result_reduced_chi2(stokes, second, config)
    # keep the fit closer to the observation under the noise model with the configuration's Stokes weights
    # (σ = 1/S/N: the two descents reach minima of SIR's χ², whose per-Stokes σ follow each profile's
    # amplitude, that are equal to a few per cent; the noise model is the measure of a fit a user reads)
    better = second.ok and (not first.ok or weighted_residual(stokes, second, config)
                            < weighted_residual(stokes, first, config))
    out = second if better else first
    out.rescue = 2 if better else 1
    out.syntheses = first.syntheses + second.syntheses
    out.magnetic_start = estimate
    return out


class InvertPixelWith:
    """:func:`invert_pixel` with some keyword options fixed: a picklable pixel solver for
    :func:`pyinv.invert_map` (its ``repr`` names the options, so a checkpoint written with other options is
    refused)."""

    def __init__(self, **options) -> None:
        if options.get("magnetic_start", "") == MAGNETIC_START:
            del options["magnetic_start"]    # the default: not part of the name (checkpoints keep their solver)
        self.options = dict(sorted(options.items()))

    def __call__(self, stokes, guess, lines, grid, config, *, mu=None, psf=None, abundances=None, **pixel):
        """``pixel``: per-pixel keywords of the map (second component, stray light; pyinv.invert)."""
        return invert_pixel(stokes, guess, lines, grid, config, mu=mu, psf=psf, abundances=abundances,
                            **pixel, **self.options)

    def __repr__(self) -> str:
        return "pyinv:invert_pixel(" + ", ".join(f"{k}={v!r}" for k, v in self.options.items()) + ")"


def magnetic_start_from_profiles(stokes, guess: Atmosphere, lines: LineList, grid: WavelengthGrid,
                                 config: InversionConfig, mode: str | None = None, *, two_components: bool = False,
                                 stray: bool = False) -> tuple[Atmosphere, np.ndarray | None]:
    """The start of :func:`invert_pixel` for ``magnetic_start=mode`` and the estimate it used.

    Returns ``(start, estimate)``: ``guess`` itself and None when the estimate does not apply (mode
    ``"guess"``, two components, stray light, B or γ fixed in cycle 1, non-finite profiles, V at the noise);
    else ``guess`` with B, γ (and φ where estimated and free) replaced, constant with depth, and
    ``estimate`` = (B [G], γ [deg], φ [deg], B_los [G], B_⊥ [G]) (NaN where not estimated).
    """
    mode = MAGNETIC_START if mode is None else mode
    if mode not in ("profiles", "guess"):
        raise ValueError(f"magnetic_start must be 'profiles' or 'guess', got {mode!r}")
    if mode == "guess" or two_components or stray or not isinstance(guess, Atmosphere) or guess.stacked \
            or not isinstance(config, InversionConfig):      # (invalid arguments: refused by the descent)
        return guess, None
    free = config.nodes_for(1, 1)
    if free.get("B", 0) == 0 or free.get("gamma", 0) == 0:
        return guess, None
    obs = np.asarray(stokes, dtype=np.float64)
    if obs.shape != (4, grid.nwav) or not np.all(np.isfinite(obs)):
        return guess, None
    from .fieldstart import estimate_field

    k0 = int(np.argmin(np.abs(np.asarray(guess.log_tau))))
    est = estimate_field(obs, lines, grid, snr=float(config.value("snr", 1)), weights=config.weights_for(1),
                         gamma_guess=float(np.asarray(guess.gamma)[k0]))
    if est.status == "none":
        return guess, None
    ones = np.ones(guess.ndep)
    cols = {"B": est.B * ones, "gamma": est.gamma * ones}
    phi_free = any(config.nodes_for(c, 1).get("phi", 0) != 0 for c in range(1, config.cycles + 1))
    if math.isfinite(est.phi) and phi_free:
        cols["phi"] = est.phi * ones
    return guess.with_columns(**cols), est.as_array()


def _stuck(result: PixelResult) -> bool:
    """Whether a cycle after the first ended without an accepted step (its trials all failed): a descent
    stuck where the quadratic model fails in every direction. A rescue trigger besides the trial count (issue
    17, ``magnetic_start``), found with γ at a pole (0° or 180°), where the derivatives in γ and φ vanish; the
    engine's pyinv rules now damp γ there and take a chord off the pole (README, "γ at a pole"), and the
    trigger stays as a safety net."""
    it, tr = np.asarray(result.iterations), np.asarray(result.trials)
    return bool(it.size > 1 and np.any((it[1:] == 0) & (tr[1:] > 0)))


def _stopping(rtol, rules: str | None) -> tuple[list[float], str]:
    """Validated per-cycle tolerances and the rules they run under (``None``: SIR's when every tolerance is
    0, else pyinv's)."""
    rtols = [float(v) for v in np.atleast_1d(np.asarray(rtol, dtype=np.float64))]
    if not rtols or not all(math.isfinite(v) and v >= 0 for v in rtols):
        raise ValueError(f"rtol must be finite numbers >= 0 (one, or one per cycle), got {rtol!r}")
    if rules is None:
        rules = "sir" if max(rtols) == 0 else "pyinv"
    if rules not in ("sir", "pyinv"):
        raise ValueError(f"rules must be 'sir' or 'pyinv', got {rules!r}")
    return rtols, rules


def _invert_path(stokes, guess: Atmosphere, lines: LineList, grid: WavelengthGrid, config: InversionConfig, *,
                 mu, psf, abundances, node_positions, max_iterations, jacobian, rtols, svd_scaling, jacobian_reuse,
                 rules, sir_compat, departures, departure_form, guess2, filling, stray_profile, stray,
                 coarse=()) -> PixelResult:
    """One descent of :func:`invert_pixel` (its arguments, validated here; ``rtols`` and ``rules`` by
    :func:`_stopping`) from one start."""
    if not isinstance(config, InversionConfig):
        raise ValueError(f"config must be a pyinv.InversionConfig, got {type(config).__name__}")
    if not isinstance(guess, Atmosphere) or guess.stacked:
        raise ValueError("guess must be a single (unstacked) pyinv.Atmosphere")
    if guess2 is not None and (not isinstance(guess2, Atmosphere) or guess2.stacked):
        raise ValueError("guess2 must be a single (unstacked) pyinv.Atmosphere")
    obs = np.asarray(stokes, dtype=np.float64)
    if obs.shape != (4, grid.nwav):
        raise ValueError(f"stokes must have shape (4, {grid.nwav}), got {obs.shape}")
    if config.cycles < 1:
        raise ValueError(f"config.cycles must be >= 1 for an inversion, got {config.cycles}")
    refuse_unsupported(config, guess2 is not None)
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
    if stray_profile is None and config.stray_file:
        stray_profile = config.resolve("stray_file")
    cycles = range(1, config.cycles + 1)
    two = guess2 is not None
    check_mixing_settings(config, two_components=two, has_stray=stray_profile is not None)
    inv_f = [int(config.value("invert_filling", c)) for c in cycles]
    inv_a = [int(config.value("invert_stray", c)) for c in cycles]
    mixing = resolve_mixing([guess], [guess2] if two else None, grid, filling=filling, stray_profile=stray_profile,
                            stray=stray)
    f2 = float(mixing.filling[0]) if two else 0.0
    alpha = float(mixing.alpha[0])
    if alpha >= 1.0:
        raise ValueError(f"stray (the stray-light fraction [%]) must be < 100, got {100 * alpha:g}")
    if any(inv_f) and not 0.0 < f2 < 1.0:
        raise ValueError(f"filling={f2:g}: an inverted filling factor f2 must start inside (0, 1)")
    if any(inv_a) and not alpha > 0.0:
        raise ValueError("stray=0: an inverted stray-light fraction needs a nonzero start (SIR's rule)")
    stray = mixing.stray_profile
    xnodes = None
    if node_positions:
        xnodes = {}
        for k, v in node_positions.items():
            k = canonical_name(k, "nodes", known=engine.INV_SLOTS[:7], stacklevel=5)
            if k not in engine.INV_SLOTS[:7]:
                raise ValueError(f"node_positions: unknown parameter {k!r}")
            a = np.asarray(v, dtype=np.float64).ravel()
            if a.size < 2 or not np.all(np.isfinite(a)):
                raise ValueError(f"node_positions[{k!r}] needs at least 2 finite log tau values")
            xnodes[k] = a

    comps = [guess] + ([guess2] if two else [])
    magnetic = any(bool(np.any(np.asarray(a.B) != 0)) for a in comps) or any(
        config.nodes_for(c, k).get("B", 0) != 0 for c in cycles for k in range(1, len(comps) + 1))
    setup = prepare_synthesis(lines, grid, psf=psf, abundances=abundances, magnetic=magnetic,
                              sir_compat=sir_compat, departures=departures, log_tau=lt, departure_form=departure_form)
    setup_lm, obs_lm, stray_lm, icon = setup, obs, stray, -1
    if config.contrast != -1.0:   # (one component: refused by refuse_unsupported above)
        lines_c, grid_c = _with_contrast_point(lines, grid)
        setup_lm = prepare_synthesis(lines_c, grid_c, psf=psf, abundances=abundances, magnetic=magnetic,
                                     sir_compat=sir_compat, departures=departures, log_tau=lt,
                                     departure_form=departure_form)
        icon = grid.nwav
        cc = float(config.contrast)
        obs_lm = np.concatenate([obs, np.array([[(cc - 1.0) / (cc + 1.0)], [0.0], [0.0], [0.0]])], axis=1)
        if stray is not None:
            stray_lm = np.concatenate([stray, np.zeros((4, 1))], axis=1)
    bnd = [top_boundary(config, k) for k in range(1, len(comps) + 1)]
    jac_mode = engine.JAC_FINITE_DIFFERENCE if jacobian == "nodes" else engine.JAC_ANALYTIC
    x = np.stack([_model_x(a) for a in comps], axis=-1) if two else _model_x(guess)
    vmac = np.array([float(a.macro) for a in comps]) if two else float(guess.macro)
    mix = (f2, alpha)
    ndep = lt.size
    chi2, iters, trials, c2start, snrs, node_log, traces = [], [], [], [], [], [], []
    status = STATUS_OK
    nsyn = 0
    res = None
    last_ok = None
    memo = engine.RFMemo(setup_lm.nw, ndep)   # RFs reused across the cycles (one component)
    for c in cycles:
        counts = [_cycle_nodes(config, c, ndep, xnodes, model=k, ties=two) for k in range(1, len(comps) + 1)]
        if config.value("auto_nodes", c) == 1:
            nobs = int(np.count_nonzero(np.asarray(config.weights_for(c)) > 0)) * grid.nwav
            maxima = auto_node_maxima(config, c, nobs, ndep, len(comps))
            counts = [[min(n, maxima[k].get(p, n)) if n > 0 else n for p, n in zip(NODE_PARAMETERS, cnt)]
                      for k, cnt in enumerate(counts)]
            cur = [_atmosphere_of(x[..., k] if two else x, vmac[k] if two else vmac, lt) for k in range(len(comps))]
            mkw = {}
            if two:
                mkw.update(atmos2=cur[1], filling=mix[0])
            if stray is not None:
                mkw.update(stray_profile=stray, stray=100.0 * mix[1])
            counts = _auto_nodes(counts, maxima, cur, obs, setup, config.weights_for(c), float(config.value("snr", c)),
                                 lines, grid, mu=mu_f, psf=psf, abundances=abundances, sir_compat=sir_compat,
                                 departures=departures, departure_form=departure_form, mixing_kw=mkw)
        xn_c = None
        if xnodes:
            xn_c = {k: v for k, v in xnodes.items() if counts[0][engine.INV_SLOTS.index(k)] == v.size}
        cyc_kw = dict(xnodes=xn_c, interp=int(config.value("interpolation", c)),
                      svdtol=float(config.value("svd_tolerance", c)) ** (2 if svd_scaling == "jacobian" else 1),
                      lambda0=float(config.value("initial_diagonal", c)), mu=mu_f, maxit=max_iterations,
                      jac_mode=jac_mode, jac_reuse=jacobian_reuse, rtol=rtols[min(c, len(rtols)) - 1],
                      rules=0 if rules == "sir" else 1, magnetic_pressure=bool(config.magnetic_pressure))
        res = None
        stride = 1     # issue 17: cycles before the last on a coarse depth grid (invert_pixel's ``coarse``)
        if c < config.cycles and coarse and not two and stray is None and icon < 0 and departures is None \
                and not xn_c and not config.magnetic_pressure and max(rtols) > 0 and counts[0][1] == 0:
            stride = coarse_stride(lt, coarse[min(c, len(coarse)) - 1], max_nodes=max(counts[0]))
        if stride > 1:
            res = _coarse_cycle(stride, lines, grid, psf, abundances, magnetic, sir_compat, lt, x, vmac, obs,
                                config.weights_for(c), float(config.value("snr", c)), counts[0], bnd[0], cyc_kw,
                                setup)
            if res.ierr != 0:     # (the coarse grid's failure is not the model's: the cycle runs on the full grid)
                nsyn += res.syntheses
                res = None
        if res is None:
            res = engine.inv_cycle(setup_lm, lt, x, vmac, obs_lm, config.weights_for(c), float(config.value("snr", c)),
                                   counts if two else counts[0], **cyc_kw,
                                   boundary=[b[0] for b in bnd] if two else bnd[0][0],
                                   bvalue=[b[1] for b in bnd] if two else bnd[0][1],
                                   errors=c == config.cycles,   # uncertainties of the last cycle only
                                   mix=mix, invert_mix=(inv_f[c - 1], inv_a[c - 1]), stray=stray_lm,
                                   contrast_point=icon, memo=memo)
        nsyn += res.syntheses
        log = QuantityDict(zip(engine.INV_SLOTS, counts[0]), place="nodes")
        if two:
            log.update({f"{k}_2": v for k, v in zip(engine.INV_SLOTS, counts[1])})
        if stray is not None:
            log["stray"] = inv_a[c - 1]
        if two:
            log["filling"] = inv_f[c - 1]
        node_log.append(log)
        x, vmac, mix = res.x, res.vmac, (float(res.mix[0]), float(res.mix[1]))
        if res.trials > 0 or res.ierr == 0:  # the cycle ran (or its start was already converged)
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

    x = np.array(x, copy=True)
    xs = [x[..., k] for k in range(len(comps))] if two else [x]
    vms = list(vmac) if two else [vmac]
    f2_out = mix[0] if two else None
    alpha_pct = 100.0 * mix[1] if stray is not None else None
    atms, errs, errs_cov = [], [None] * len(comps), [None] * len(comps)
    fit = np.full_like(obs, np.nan)
    cov = None
    for k, (xk, vk) in enumerate(zip(xs, vms)):
        xk = _fold_angles(np.array(xk, copy=True))
        cols = dict(zip(engine.MODEL_COLUMNS, xk.T))
        if last_ok is not None:
            pgk = last_ok.pg[..., k] if two else last_ok.pg
            if np.all(pgk > 0):
                cols.update(Pg=pgk, rho=last_ok.rho[..., k] if two else last_ok.rho,
                            z=last_ok.z[..., k] if two else last_ok.z)
            if status == STATUS_OK:
                ek = last_ok.err[..., k] if two else last_ok.err
                cek = last_ok.cerr[..., k] if two else last_ok.cerr
                evm = float(last_ok.err_vmac[k]) if two else float(last_ok.err_vmac)
                cvm = float(last_ok.cerr_vmac[k]) if two else float(last_ok.cerr_vmac)
                extra = {}
                if two and k == 1:
                    extra["filling"] = float(last_ok.err_mix[0])
                if k == 0 and stray is not None:
                    extra["stray"] = 100.0 * float(last_ok.err_mix[1])
                errs[k] = AtmosphereErrors(log_tau=lt, **dict(zip(engine.MODEL_COLUMNS + ("z", "Pg", "rho"), ek.T)),
                                           macro=evm, **extra)
                errs_cov[k] = AtmosphereErrors(log_tau=lt, **dict(zip(engine.MODEL_COLUMNS, cek.T)), macro=cvm)
        filling = (1.0 - f2_out if k == 0 else f2_out) if two else guess.filling
        st_hdr = alpha_pct if alpha_pct is not None else float(guess.stray)
        atms.append(Atmosphere(log_tau=lt, **cols, macro=float(vk), filling=filling, stray=st_hdr))
    contrast_fit = None
    if last_ok is not None:
        fit = last_ok.fit
        if icon >= 0:
            y = float(fit[0, icon])
            contrast_fit = (1.0 + y) / (1.0 - y)
            fit = fit[:, :icon]
        if status == STATUS_OK:
            cov = last_ok.cov
    return PixelResult(atmosphere=atms[0], fit=fit, chi2=np.asarray(chi2), iterations=np.asarray(iters, dtype=int),
                       status=int(status), errors=errs[0], errors_covariance=errs_cov[0], covariance=cov,
                       trials=np.asarray(trials, dtype=int), syntheses=nsyn, chi2_start=np.asarray(c2start),
                       snr=np.asarray(snrs), nodes=node_log, trace=traces, message=status_message(int(status)),
                       atmosphere2=atms[1] if two else None, filling2=f2_out, stray=alpha_pct,
                       errors2=errs[1] if two else None, contrast=contrast_fit)


#: SIR index of the line-free pseudo-line that carries the continuum contrast (spec-inversion §4.3)
CONTRAST_LINE_INDEX = 999999


def _with_contrast_point(lines: LineList, grid: WavelengthGrid) -> tuple[LineList, WavelengthGrid]:
    """The line list and grid with one more point: a line-free "line" at 5000 Å (log gf = −20), SIR's
    carrier of the continuum-contrast pseudo-observation."""
    from ..lines import GridRegion, SpectralLine

    if lines.has_index(CONTRAST_LINE_INDEX):
        raise ValueError(f"line index {CONTRAST_LINE_INDEX} is reserved for the continuum-contrast point")
    pseudo = SpectralLine(index=CONTRAST_LINE_INDEX, element="Fe", ion=1, wavelength=5000.0, enhancement=1.0,
                          excitation=0.0, loggf=-20.0, term_lower=None, term_upper=None, geff_override=0.0)
    lines_c = LineList(list(lines) + [pseudo])
    regions = list(grid.regions) + [GridRegion(indices=(CONTRAST_LINE_INDEX,), start=0.0, step=None, end=0.0,
                                               npoints=1)]
    offsets = [grid.offset_mA[sl] for sl in grid.region_slices()] + [np.zeros(1)]
    return lines_c, WavelengthGrid(regions, offsets, lines_c)


def _atmosphere_of(x: np.ndarray, vmac: float, log_tau: np.ndarray) -> Atmosphere:
    """An Atmosphere from an engine model array (ndep, 7) and its macroturbulence."""
    return Atmosphere(log_tau=log_tau, **dict(zip(engine.MODEL_COLUMNS, np.asarray(x).T)), macro=float(vmac))


def _coarse_spacings(coarse) -> tuple[float, ...]:
    """invert_pixel's ``coarse`` as per-cycle spacings [dex] (empty: off), validated."""
    if coarse is None:
        return tuple(COARSE_SPACING)
    if isinstance(coarse, (bool, np.bool_)):
        return tuple(COARSE_SPACING) if coarse else ()
    try:
        vals = [float(v) for v in np.atleast_1d(np.asarray(coarse, dtype=np.float64))]
    except (TypeError, ValueError):
        vals = []
    if not vals or not all(math.isfinite(v) and v >= 0 for v in vals):
        raise ValueError(f"coarse must be True, False or log tau spacings >= 0 (one, or one per cycle), got {coarse!r}")
    return tuple(vals) if max(vals) > 0 else ()


def coarse_stride(log_tau, spacing: float, max_nodes: int = 1) -> int:
    """The stride s of the coarse grid of a cycle (issue 17): the largest s with s·Δ ≤ ``spacing`` (Δ the
    grid's log τ step) that divides the N − 1 intervals of the grid into at least :data:`COARSE_MIN_INTERVALS`
    (the sub-grid then keeps both end points) and leaves at least 2n − 1 points for the cycle's largest node
    count n = ``max_nodes``; 1 = the model's own grid."""
    lt = np.asarray(log_tau, dtype=np.float64)
    nint = lt.size - 1
    if nint < 1 or not spacing > 0:
        return 1
    step = abs(float(lt[0] - lt[-1])) / nint
    best = 1
    for s in range(2, nint // COARSE_MIN_INTERVALS + 1):
        if s * step <= spacing * (1.0 + 1e-6) and nint % s == 0 and nint // s + 1 >= 2 * max_nodes - 1:
            best = s
    return best


def _coarse_cycle(stride: int, lines, grid, psf, abundances, magnetic: bool, sir_compat: bool, lt, x, vmac, obs,
                  weights, snr: float, counts, bnd, cyc_kw: dict, setup) -> engine.CycleResult:
    """One cycle before the last run on every ``stride``-th depth point (issue 17), carried back to the full grid.

    The cycle runs with the full grid's node positions (SIR's equidistant layout, given explicitly where the
    sub-grid's own layout would differ). Its model change is carried back as the change of every column (the
    engine's node perturbations add to the columns), interpolated linearly in log τ between the sub-grid's points:
    exact for one or two nodes per parameter (the first cycle's usual layout), where every change is constant or
    linear in log τ, unless a step was clipped at T_min or B = 0. The full-grid model is then put in hydrostatic
    equilibrium. The result is the coarse cycle's (χ², counts, trace) with the full-grid model, its profiles and
    stratification; ``ierr`` /= 0 when the coarse cycle or the equilibrium failed (the caller then runs the cycle
    on the full grid)."""
    from .synthesis import _setup

    idx = np.arange(0, lt.size, stride)
    ltc = lt[idx]
    sc = _setup(lines, grid, magnetic=magnetic, psf=psf, abundances=abundances, sir_compat=sir_compat, log_tau=ltc)
    xc = np.ascontiguousarray(x[idx])
    xn = {}
    for k, n in enumerate(counts):
        if n >= 3 and (idx.size - 1) % (n - 1) != 0:
            xn[engine.INV_SLOTS[k]] = lt[[(j * (lt.size - 1)) // (n - 1) for j in range(n)]]
    res = engine.inv_cycle(sc["setup"], ltc, xc, vmac, obs, weights, snr, counts, boundary=bnd[0], bvalue=bnd[1],
                           errors=False, **dict(cyc_kw, xnodes=xn or None))
    if res.ierr != 0:
        return res
    xcn = np.asarray(res.x)
    out = np.array(x, copy=True)
    t, tc = -lt, -ltc          # increasing, for np.interp
    for j in (0, 2, 3, 4, 5, 6):      # the node perturbations add to the columns (nodes.f90 apply_perturbation)
        out[:, j] = x[:, j] + np.interp(t, tc, xcn[:, j] - xc[:, j])
    pe_guess = x[:, 1] * np.exp(np.interp(t, tc, np.log(xcn[:, 1] / xc[:, 1])))
    try:
        pe, pg, rho, z, _ = engine.hydrostatic_arrays(lt, out[:, 0], float(xcn[-1, 1]), bnd[0], bnd[1], cyc_kw["mu"],
                                                      sc["eps"], sir_compat=sir_compat, pe_guess=pe_guess)
        out[:, 1] = pe
        fit, _ = engine.synth_stokes(setup, lt, out, float(res.vmac))
    except ValueError:
        return dataclasses.replace(res, ierr=-1)
    if not (np.all(np.isfinite(out)) and np.all(np.isfinite(fit))):
        return dataclasses.replace(res, ierr=-1)
    n = lt.size
    return dataclasses.replace(res, x=out, fit=fit, pg=pg, rho=rho, z=z, err=np.zeros((n, 10)), cerr=np.zeros((n, 7)),
                               syntheses=res.syntheses + 1)
