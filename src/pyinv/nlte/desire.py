"""DeSIRe-style NLTE inversion of one pixel (spec-nlte-rh.md §4, §8.5; issue 11).

The Levenberg–Marquardt inversion runs on the engine's analytic response functions with the NLTE
departure coefficients b held fixed — in DeSIRe's form by default (``departure_form="desire"``: NLTE
stimulated emission, each line's own two-level source function, the continuum at Planck; field-free and
magnetic models, exact response functions at fixed b; ``"sir"``: SIR 2017's one source function per line
group), see :func:`pyinv.synthesize` — and the synthetic profile is corrected by the frozen difference

    Δ = NLTE profile of the backend − engine's LTE+b profile,

so that the fit matches the backend's true NLTE profile at every backend call. Fitting S_LTE+b + Δ to the
observation is fitting S_LTE+b to the observation − Δ, which is what this driver does with
:func:`pyinv.invert_pixel`. The backend (RH or Lightweaver) is called at the start of every cycle and again
(the cycle then repeated from the new model) when the cycle changed the temperature by more than
``threshold`` (relative, DeSIRe's default 0.01) anywhere in the model, at most ``max_refresh`` times.

Continuum normalisation: the backend's intensities are scaled, region by region, so that its LTE profile
matches the engine's LTE profile at the region's end points (each code's own continuum), and Δ is convolved
like the synthesis (macroturbulence of the model, PSF) because the backend's profiles are not.

Joint inversions (LTE and NLTE lines in one pixel, e.g. Fe I 6301.5/6302.5 in LTE and Ca II 8542 with
departures, issue 19): the backend's mapped lines (:func:`pyinv.nlte.level_map`) are the NLTE lines. Only the
wavelength regions that hold one of them (:func:`nlte_regions`) go to the backend; in every other region the
engine's LTE synthesis (b = 1) is the model and Δ = 0. One node model and one χ² cover all regions. A region
that blends a mapped line with unmapped ones needs the backend to synthesise those too (its background).
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np

from .backend import NLTE_CRASHED, NlteBackend, grid_vacuum_nm, merge_invert_kwargs, run_cycles

__all__ = ["NltePixelResult", "invert_pixel_nlte", "NlteSolver", "nlte_regions", "on_engine_scale",
           "backend_correction", "CHECK_THRESHOLD", "REFINE_CHECK_THRESHOLD", "REANCHOR"]

#: the emulated inversion's check threshold [continuum units, rms of Stokes I] for the node result
CHECK_THRESHOLD = 0.01
#: the same when the refinement follows: a guard against gross emulator failures only (the refinement's b are
#: the backend's). On the novel tuning seeds 12-14 the largest check was 0.018; never falling back there gave
#: the same T as falling back above 0.01 (62/73/74 K against 64/74/81 K) with 1.0 backend calls instead of
#: 1.1-1.4 (docs/nlte.md "Regularised refinement")
REFINE_CHECK_THRESHOLD = 0.03
#: the refinement's T move [K, rms above log tau = -1] from the backend's model beyond which the backend is
#: called again at the refined model and the refinement repeated (chosen on the novel tuning seeds 12-14:
#: 4 of 30 pixels, 1.13 calls per pixel, 70 -> 61 K pooled; docs/nlte.md "Regularised refinement")
REANCHOR = 220.0


@dataclasses.dataclass
class NltePixelResult:
    """Result of :func:`invert_pixel_nlte`.

    Attributes
    ----------
    result : pyinv.PixelResult
        The last cycle's inversion (its ``fit`` is the engine's LTE+b profile *plus* Δ, i.e. the NLTE fit).
    backend_calls : int
        Calls of the NLTE backend for this pixel.
    correction : ndarray (4, nλ)
        The frozen Δ of the last backend call (convolved like the synthesis).
    departures : pyinv.nlte.Departures or None
        The last backend call's departure coefficients (model grid).
    status : int
        0, or the backend's status when a call failed (the result then holds the model reached).
    provenance : dict
        How the b were obtained: ``{"departures": "backend"}``, or for ``departures="emulated"`` the
        emulator (name, version), the final check and whether the backend iterations took over
        (:func:`pyinv.nlte.emulated.invert_pixel_emulated`).
    """

    result: Any
    backend_calls: int
    correction: np.ndarray
    departures: Any
    status: int = 0
    provenance: dict = dataclasses.field(default_factory=lambda: {"departures": "backend"})


def _regions(grid) -> list[np.ndarray]:
    out, start = [], 0
    for r in grid.regions:
        out.append(np.arange(start, start + r.npoints))
        start += r.npoints
    return out


def nlte_regions(grid, backend_lines) -> list[np.ndarray]:
    """Indices (into the grid's wavelengths) of each region of ``grid`` that holds a mapped NLTE line.

    Parameters
    ----------
    grid : pyinv.WavelengthGrid
    backend_lines : sequence of NlteLine or NlteBackend
        The mapped lines (:func:`pyinv.nlte.level_map`), or a backend (its ``lines``).

    Raises
    ------
    ValueError
        No region of the grid holds a mapped line.
    """
    mapped = {int(ln.index) for ln in getattr(backend_lines, "lines", backend_lines)}
    out = [idx for r, idx in zip(grid.regions, _regions(grid)) if mapped & {int(k) for k in r.indices}]
    if not out:
        raise ValueError(f"none of the grid's lines {sorted({int(k) for r in grid.regions for k in r.indices})} is "
                         f"an NLTE line of the backend (mapped: {sorted(mapped)}); see pyinv.nlte.level_map")
    return out


def on_engine_scale(result, lte: np.ndarray, regions: list[np.ndarray], base: np.ndarray) -> np.ndarray:
    """The backend's NLTE profiles on the engine's continuum scale, region by region.

    Parameters
    ----------
    result : NlteResult
        A backend run on the concatenated wavelengths of ``regions`` (in that order), with LTE profiles.
    lte : ndarray (4, nλ)
        The engine's LTE profiles on the whole grid (unconvolved).
    regions : list of ndarray
        Grid indices of the NLTE regions (:func:`nlte_regions`).
    base : ndarray (4, nλ)
        Profiles kept in the other regions (the engine's LTE lines there).

    Returns
    -------
    ndarray (4, nλ)
        ``base`` with each NLTE region replaced by the backend's NLTE profile × (engine LTE / backend LTE,
        summed over the region's two end points): each code's own continuum.
    """
    out = np.array(base, dtype=np.float64, copy=True)
    pos = 0
    for idx in regions:
        k = np.arange(pos, pos + idx.size)
        pos += idx.size
        scale = (lte[0, idx[0]] + lte[0, idx[-1]]) / (result.stokes_lte[0, k[0]] + result.stokes_lte[0, k[-1]])
        out[:, idx] = result.stokes[:, k] * scale
    return out


def _convolve_like_synthesis(y: np.ndarray, lines, grid, vmac: float, psf) -> np.ndarray:
    """Macroturbulence (σ = λ_last vmac / c per region, as the engine) and PSF applied to y (4, nλ)."""
    from .. import engine
    from ..physics.synthesis import _psf_arrays

    psf_xy = _psf_arrays(psf)
    out = np.array(y, dtype=np.float64, copy=True)
    for r, idx in zip(grid.regions, _regions(grid)):
        if idx.size < 2 or not (vmac > 0 or psf_xy is not None):
            continue
        lam = lines.by_index(r.indices[-1]).wavelength
        sigma = 1000.0 * lam * max(vmac, 1e-7) / 3.0e5
        out[:, idx] = engine.convolve_stokes(np.asarray(grid.offset_mA)[idx], out[:, idx], sigma, psf_xy)
    return out


def backend_correction(backend: NlteBackend, model, lines, grid, *, psf=None, abundances=None,
                       departure_form: str = "desire", initial_b=None):
    """One backend call at ``model`` on the regions holding a mapped line (:func:`nlte_regions`; Δ = 0 in the
    LTE-only regions): (backend result, its departures, the frozen correction Δ (4, nλ) convolved like the
    synthesis); (result, None, None) when the call failed, (None, None, None) when it gave no LTE profiles
    (module docstring: continuum normalisation). ``initial_b``: starting b for the backend
    (:meth:`NlteBackend.synthesize`)."""
    from ..physics.synthesis import synthesize

    regs = nlte_regions(grid, backend)
    wl = grid_vacuum_nm(lines, grid)[np.concatenate(regs)]
    extra = {} if initial_b is None else {"initial_b": initial_b}      # backends without starting b still work
    r = backend.synthesize(model, wl, abundances=abundances, **extra)
    if not r.ok:
        return r, None, None
    if r.stokes_lte is None:
        return None, None, None
    dep = r.departures
    lte = synthesize(model, lines, grid, psf=psf, abundances=abundances, convolve=False)
    lte_b = synthesize(model, lines, grid, psf=psf, abundances=abundances, convolve=False, departures=dep,
                       departure_form=departure_form)
    nlte = on_engine_scale(r, lte, regs, lte_b)
    return r, dep, _convolve_like_synthesis(nlte - lte_b, lines, grid, float(model.macro), psf)


def invert_pixel_nlte(stokes, guess, lines, grid, config, *, backend: NlteBackend, mu: float | None = None,
                      psf=None, abundances=None, threshold: float = 0.01, max_refresh: int = 2,
                      departure_form: str = "desire", departures: str = "backend", emulator: Any = None,
                      check_threshold: float | None = None, t_placement: str = "equidistant",
                      sensitivity_dchi2: float | None = None, fallback: str = "short",
                      t_refine: str | None = "auto", reanchor: float | None = REANCHOR,
                      **invert_kwargs) -> NltePixelResult:
    """Invert one pixel in NLTE, DeSIRe's way (module docstring).

    Parameters
    ----------
    stokes, guess, lines, grid, config, mu, psf, abundances
        As :func:`pyinv.invert_pixel` (``guess`` on a uniform log τ grid reaching the layers where the
        NLTE lines form; profiles normalised to the HSRA continuum).
    backend : NlteBackend
        RH or Lightweaver, with the NLTE lines mapped (:func:`pyinv.nlte.level_map`) and ``lte=True`` (its
        LTE profiles set the continuum scale). Lines of the grid it does not map stay in LTE (b = 1); it is
        run only on the regions that hold a mapped line (module docstring: joint inversions).
    threshold : float
        Relative temperature change of a cycle above which the backend is called again and the cycle
        repeated (DeSIRe: 0.01).
    max_refresh : int
        Repeats of a cycle at most.
    departure_form : "desire" or "sir"
        How the frozen departures enter the engine's synthesis and response functions (module docstring).
    departures : "backend" or "emulated"
        Where the b come from while iterating: the backend (above), or a trained emulator
        (:mod:`pyinv.nlte.emulated`: b re-evaluated whenever the model changes, the backend called once at
        the end to check, today's backend iterations as the fallback).
    emulator : pyinv.nlte.emulator.DepartureEmulator or str, optional
        With ``departures="emulated"``: the emulator or its catalogue name (default ``"lw-caii"``).
    check_threshold : float, optional
        With ``departures="emulated"``: the largest rms difference [continuum units] of the engine's Stokes I
        with the emulator's and with the backend's b at the final model before falling back. Default:
        :data:`CHECK_THRESHOLD` (0.01) for the node result, :data:`REFINE_CHECK_THRESHOLD` (0.03) when the
        refinement follows (``t_refine``): its b are the backend's, carried along T by the emulator's relative
        change, so a disagreement of the emulator's own b no longer enters the result; the check then guards
        against gross emulator failures only (docs/nlte.md "Regularised refinement").
    t_placement : "equidistant" or "sensitivity"
        Where the last cycle's T nodes go (config with at least 2 cycles and 2 T nodes in the last):
        SIR's equidistant layout, or per pixel from the data's sensitivity at the model the earlier cycles
        reached (:func:`pyinv.nlte.emulated.sensitivity_nodes`, ``departures="emulated"`` only: the cycle's T
        node count as given, equidistant from the bottom of the grid up to the highest layer z where +100 K
        everywhere above z — b re-evaluated by the emulator, P_e hydrostatic — still changes χ² of Stokes I
        (σ = 1/snr of the cycle) by ``sensitivity_dchi2``; above the top node the correction is held). The
        positions go into the provenance (``"t_nodes"``). Not the default: on the novel set it helps low
        features and hurts high ones (docs/nlte.md).
    sensitivity_dchi2 : float, optional
        The χ² change of that rule [default :data:`pyinv.nlte.emulated.SENSITIVITY_DCHI2`].
    fallback : "short" or "full"
        With ``departures="emulated"``, when the check fails: ``"full"`` runs the backend iterations from
        the model reached; ``"short"`` (default since issue 19's novel-set study: on its tuning seed the same
        T with 2 backend calls instead of 4) first continues from it with the check's backend b and Δ (one cycle,
        the last), calls the backend at the model reached and checks again (the engine's Stokes I with the
        b used and with the new b); passed: one last cycle with the new b and Δ, otherwise the full
        fallback from there. The provenance records ``"fallback": True`` whenever the first check failed,
        ``"fallback_kind"`` (``"full"``, ``"short"`` or ``"short+full"``) and ``"short_fallback"`` (its
        backend calls, the second check and whether it passed).
    t_refine : "auto", "map" or None
        With ``departures="emulated"``: ``"map"`` refines T after the last cycle with the backend's b (check
        passed, or the short fallback's second check passed) by the regularised (maximum a posteriori) fit of
        :mod:`pyinv.nlte.refine` — T on hat functions every 0.3 dex, a Gaussian-process prior (300 K, 1.3 dex)
        centred on ``guess``'s T, b following T through the emulator's relative change from the backend's b,
        3 Gauss–Newton steps; no backend call, ~0.25 s. None: the node result. ``"auto"`` (default): ``"map"``
        with ``departures="emulated"`` when every region of the grid holds an NLTE line (Ca II 8542 alone),
        None with LTE lines in the fit (Fe I 6301/6302 + Ca II 8542: there, on RH observations inverted with
        Lightweaver, the refinement raised the T error from 72 to 119–130 K; the reason is recorded in
        ``provenance["refine"]``) and with the backend's b (docs/nlte.md "Regularised refinement" for what it
        gains and costs, and why it became the default). The record is ``provenance["refine"]``. Not
        applied with two components or stray light, or after the full fallback (recorded as skipped); the
        backend-driven inversion is never refined (no emulator to make b follow T).
    reanchor : float or None
        With the refinement: where it moved T by more than this [K, rms over the layers above log τ = −1]
        from the model of the backend's last call, the backend is called once more at the refined model
        (started from the last call's b) and the refinement repeated from there with those b and Δ (default
        :data:`REANCHOR`, 220 K; None never). The emulator's relative change that carries b along T is a
        linearisation; far from the backend's model it errs (docs/nlte.md "Regularised refinement"). The
        record is ``provenance["refine"]["reanchor"]``; its call counts in ``backend_calls``.
    invert_kwargs
        Passed to :func:`pyinv.invert_pixel`.
    """
    if not isinstance(backend, NlteBackend):
        raise ValueError(f"backend must be a pyinv.nlte backend (RH or Lightweaver), got {type(backend).__name__}")
    if not backend.lte:
        raise ValueError("the backend must also compute LTE profiles (lte=True): they set the continuum scale")
    if not (threshold > 0):
        raise ValueError(f"threshold must be > 0, got {threshold!r}")
    obs = np.asarray(stokes, dtype=np.float64)
    regions = nlte_regions(grid, backend)         # refuses a grid without a mapped line
    if fallback not in ("full", "short"):
        raise ValueError(f"fallback must be 'full' or 'short', got {fallback!r}")
    if t_refine not in ("auto", "map", None):
        raise ValueError(f"t_refine must be 'auto', 'map' or None, got {t_refine!r}")
    refine_note = None
    if t_refine == "auto":
        t_refine = None
        if departures == "emulated":
            lte_regions = len(grid.regions) - len(regions)
            if lte_regions == 0:
                t_refine = "map"
            else:
                refine_note = (f"auto: off with LTE lines in the fit ({lte_regions} of {len(grid.regions)} regions "
                               "without an NLTE line; cross-code the refinement turned the backends' differences "
                               "into T there, docs/nlte.md)")
    if check_threshold is None:
        check_threshold = CHECK_THRESHOLD if t_refine is None else REFINE_CHECK_THRESHOLD
    if reanchor is not None and not reanchor >= 0:
        raise ValueError(f"reanchor must be >= 0 K or None, got {reanchor!r}")
    if t_refine is not None and departures != "emulated":
        raise ValueError(f"t_refine={t_refine!r} needs departures='emulated' (b follow T through the emulator)")
    if t_placement != "equidistant" and departures != "emulated":
        raise ValueError(f"t_placement={t_placement!r} needs departures='emulated' (the sensitivity is computed "
                         "with the emulator's b following T)")
    placer = _t_placer(t_placement, sensitivity_dchi2, lines, grid, config, psf=psf, abundances=abundances,
                       departure_form=departure_form)
    if departures == "emulated":
        return _invert_emulated(obs, guess, lines, grid, config, backend=backend, mu=mu, psf=psf,
                                abundances=abundances, threshold=threshold, max_refresh=max_refresh,
                                departure_form=departure_form, emulator=emulator,
                                check_threshold=check_threshold, placer=placer, fallback=fallback,
                                t_refine=t_refine, refine_note=refine_note, reanchor=reanchor, **invert_kwargs)
    if departures != "backend":
        raise ValueError(f"departures must be 'backend' or 'emulated', got {departures!r}")
    kw = dict(mu=mu, psf=psf, abundances=abundances, departure_form=departure_form, **invert_kwargs)
    last: dict = {}

    def from_backend(model):
        r, dep, delta = backend_correction(backend, model, lines, grid, psf=psf, abundances=abundances,
                                           departure_form=departure_form)
        last["r"] = r
        return None if r is None or not r.ok else (dep, delta)

    run = run_cycles(obs, guess, lines, grid, config, from_backend, threshold=threshold, max_refresh=max_refresh,
                     **kw)
    if run.failed:
        r = last["r"]
        return NltePixelResult(run.result, run.calls, np.zeros_like(obs), None,
                               NLTE_CRASHED if r is None else int(r.status))
    res = dataclasses.replace(run.result, fit=run.result.fit + run.delta)
    return NltePixelResult(res, run.calls, run.delta, run.departures, 0)


class _SensitivityPlacer:
    """``cycle_kwargs`` of :func:`~pyinv.nlte.backend.run_cycles` for ``t_placement="sensitivity"``: the last
    cycle's T node positions from the data's sensitivity at the model reached (its ``record`` goes into the
    provenance)."""

    def __init__(self, dchi2, lines, grid, config, departures_at=None, **syn_kw):
        from .emulated import SENSITIVITY_DCHI2

        self.dchi2 = SENSITIVITY_DCHI2 if dchi2 is None else float(dchi2)
        if not self.dchi2 > 0:
            raise ValueError(f"sensitivity_dchi2 must be > 0, got {dchi2!r}")
        self.lines, self.grid, self.config, self.syn_kw = lines, grid, config, syn_kw
        self.departures_at = departures_at
        self.record: dict | None = None

    def __call__(self, cycle: int, model, deps) -> dict:
        from .emulated import sensitivity_nodes

        n = int(self.config.nodes_for(cycle, 1).get("T", 0))
        if cycle != self.config.cycles or cycle < 2 or n < 2:
            return {}
        snr = float(self.config.value("snr", cycle))
        if not snr > 0:
            raise ValueError("t_placement='sensitivity' needs snr > 0 (the noise of Stokes I is 1/snr)")
        pos, self.record = sensitivity_nodes(model, self.lines, self.grid, self.departures_at, n, sigma=1.0 / snr,
                                             dchi2=self.dchi2, **self.syn_kw)
        return {"node_positions": {"T": pos}}


def _t_placer(t_placement, dchi2, lines, grid, config, **syn_kw):
    """The ``cycle_kwargs`` of ``t_placement`` (None for SIR's equidistant nodes)."""
    if t_placement == "equidistant":
        return None
    if t_placement != "sensitivity":
        raise ValueError(f"t_placement must be 'equidistant' or 'sensitivity', got {t_placement!r}")
    return _SensitivityPlacer(dchi2, lines, grid, config, **syn_kw)


def _invert_emulated(obs, guess, lines, grid, config, *, backend, mu, psf, abundances, threshold, max_refresh,
                     departure_form, emulator, check_threshold, placer=None, fallback="short",
                     t_refine=None, refine_note=None, reanchor=None, **invert_kwargs) -> NltePixelResult:
    """``departures="emulated"`` (:mod:`pyinv.nlte.emulated`): cycles with the emulator's b, one backend call
    to check, then one last cycle with the backend's b and Δ, or the fallback (``fallback``: the backend
    iterations, or first one cycle with the check's b and Δ and a second check)."""
    from ..physics.inversion import invert_pixel
    from .emulated import backend_start, departure_check, emulated_cycles, resolve_emulator

    if not (check_threshold >= 0):
        raise ValueError(f"check_threshold must be >= 0, got {check_threshold!r}")
    emu = resolve_emulator(emulator)
    kw = dict(mu=mu, psf=psf, abundances=abundances, departure_form=departure_form, **invert_kwargs)
    if placer is not None:
        placer.departures_at = lambda m: emu.departures(m, backend.lines)
    model, res, evals, extra = emulated_cycles(obs, guess, lines, grid, config, emu, backend.lines,
                                               threshold=threshold, max_refresh=max_refresh, cycle_kwargs=placer,
                                               **kw)
    # the last cycle's keywords (its node positions); the cycles continue a model: no start from the profiles
    kw_last = {**merge_invert_kwargs(kw, extra), "magnetic_start": "guess"}
    last_cfg = config.single_cycle(config.cycles)
    prov: dict = {"departures": "emulated", "emulator": emu.provenance(), "fallback": False,
                  "emulator_evaluations": evals}
    if placer is not None and placer.record:
        prov["t_nodes"] = placer.record
    if refine_note is not None:
        prov["refine"] = {"method": None, "skipped": refine_note}
    corr = dict(psf=psf, abundances=abundances, departure_form=departure_form)
    start = backend_start(emu, backend, model)
    r, dep_be, delta = backend_correction(backend, model, lines, grid, initial_b=start, **corr)
    calls = 1
    if start is not None and r is not None and not r.ok:     # the emulator's start failed: start from LTE
        prov["start_failed"] = r.message
        r, dep_be, delta = backend_correction(backend, model, lines, grid, **corr)
        calls += 1
    chk = {"profile_rms": float("nan"), "b_rms": float("nan"), "passed": False}
    if r is not None and r.ok:
        chk = departure_check(model, lines, grid, emu.departures(model, backend.lines), dep_be, **corr)
        chk["passed"] = bool(chk["profile_rms"] <= check_threshold)
    else:
        chk["backend_status"] = NLTE_CRASHED if r is None else int(r.status)
    prov["check"] = {**chk, "threshold": float(check_threshold)}

    def desire_step(m, dep, dl, prev):
        """One more inversion of the last cycle with the backend's b and Δ frozen (no backend call). Where it
        fails, ``prev`` (the emulated result, a fit to ``obs`` itself: no Δ to add) is kept as it is."""
        last = invert_pixel(obs - dl, m, lines, grid, last_cfg, departures=dep, **kw_last)
        if last.ok or not prev.ok:
            return dataclasses.replace(last, fit=last.fit + dl)
        return prev

    def finish(result, dep, dl, anchor, b_levels, n):
        """``t_refine`` of the DeSIRe step's ``result`` with the backend's ``dep`` and ``dl`` at ``anchor`` (and
        its re-anchoring, started from the backend's ``b_levels``); ``n`` backend calls so far."""
        if t_refine is None:
            return NltePixelResult(result, n, dl, dep, 0, prov)
        out, dep, dl, more = _refine(obs, result, guess, lines, grid, config, emu, backend, dep, dl, anchor,
                                     mu=mu, psf=psf, abundances=abundances, departure_form=departure_form, prov=prov,
                                     reanchor=reanchor, b_levels=b_levels)
        return NltePixelResult(out, n + more, dl, dep, 0, prov)

    if chk["passed"]:
        return finish(desire_step(model, dep_be, delta, res), dep_be, delta, model, r.b_levels, calls)
    prov["fallback"] = True
    prov["fallback_kind"] = "full"
    if fallback == "short" and r is not None and r.ok:
        model, res, dep_be, delta, calls, done, b2 = _short_fallback(obs, model, res, r, dep_be, delta, calls,
                                                                     backend, lines, grid, last_cfg, kw_last, corr,
                                                                     check_threshold, prov)
        if done is not None:       # the second check passed: b and delta are the second call's, at ``model``
            return finish(done, dep_be, delta, model, b2, calls)
    if t_refine is not None:
        prov["refine"] = {"method": t_refine, "skipped": "full fallback (backend iterations)"}
    fb_kw = {**invert_kwargs, **({"node_positions": kw_last["node_positions"]} if "node_positions" in extra
                                  else {})}
    fb = invert_pixel_nlte(obs, model, lines, grid, config, backend=backend, mu=mu, psf=psf, abundances=abundances,
                           threshold=threshold, max_refresh=max_refresh, departure_form=departure_form,
                           **fb_kw)
    if fb.result is None:     # the backend failed again: keep the emulated result
        return NltePixelResult(res, calls + fb.backend_calls, np.zeros_like(obs), None, fb.status, prov)
    return NltePixelResult(fb.result, calls + fb.backend_calls, fb.correction, fb.departures, fb.status, prov)


def _refine(obs, result, guess, lines, grid, config, emu, backend, dep, delta, anchor, *, mu, psf, abundances,
            departure_form, prov, reanchor=None, b_levels=None):
    """``t_refine="map"`` (:mod:`pyinv.nlte.refine`) of ``result``; the record goes into ``prov["refine"]``.
    Returns (result, departures, Δ, backend calls made here): with ``reanchor`` [K], a refined T that moved
    more than that (rms above log τ = −1) from ``anchor`` gets one more backend call at the refined model
    (started from ``b_levels``) and a second refinement anchored there (record ``"reanchor"``)."""
    from ..physics.pixelresult import reduced_chi2
    from .refine import anchored_departures, refine_temperature

    snr = config.value("snr", config.cycles)
    weights = config.value("weights", config.cycles)
    why = None
    if getattr(result, "atmosphere2", None) is not None or getattr(result, "stray", None) is not None:
        why = "two components or stray light"
    elif not (snr is not None and np.isfinite(snr) and snr > 0):
        why = "no snr in the last cycle (sigma = 1/snr)"
    elif not result.ok:
        why = f"the last cycle ended with status {result.status}"
    elif not np.array_equal(np.asarray(guess.log_tau), np.asarray(result.atmosphere.log_tau)):
        why = "the guess (the prior's centre) is on another log tau grid"
    if why is not None:
        prov["refine"] = {"method": "map", "skipped": why}
        return result, dep, delta, 0
    rkw = dict(snr=float(snr), weights=weights, mu=float(config.mu if mu is None else mu), psf=psf,
               abundances=abundances, departure_form=departure_form)
    try:
        m, fit, rec = refine_temperature(obs, result.atmosphere, guess, lines, grid,
                                         anchored_departures(emu, backend.lines, dep, anchor), delta, **rkw)
    except (ValueError, RuntimeError, np.linalg.LinAlgError) as exc:     # an optional step: keep the pixel
        prov["refine"] = {"method": "map", "skipped": f"failed: {type(exc).__name__}: {exc}"}
        return result, dep, delta, 0
    rec["chi2_reduced_start"] = float(result.chi2_reduced)
    prov["refine"] = rec
    if not rec["accepted"]:
        return result, dep, delta, 0
    rec["chi2_reduced"] = reduced_chi2(obs, fit, float(snr), weights, rec["knots"] + 3)
    out = dataclasses.replace(result, atmosphere=m, fit=fit, chi2_reduced=rec["chi2_reduced"],
                              syntheses=int(result.syntheses) + rec["syntheses"])
    if reanchor is None:
        return out, dep, delta, 0
    lt = np.asarray(m.log_tau, dtype=np.float64)
    up = lt <= -1.0
    moved = float(np.sqrt(np.mean((np.asarray(m.T) - np.asarray(anchor.T))[up] ** 2))) if up.any() else 0.0
    rec["moved_K"] = moved
    if not moved > reanchor:
        return out, dep, delta, 0
    ra: dict = {"threshold_K": float(reanchor), "calls": 1, "accepted": False}
    rec["reanchor"] = ra
    r2, dep2, delta2 = backend_correction(backend, m, lines, grid, initial_b=_warm_start(backend, b_levels),
                                          psf=psf, abundances=abundances,
                                          departure_form=departure_form)
    if r2 is None or not r2.ok:
        ra["backend_status"] = NLTE_CRASHED if r2 is None else int(r2.status)
        return out, dep, delta, 1
    try:
        m2, fit2, rec2 = refine_temperature(obs, m, guess, lines, grid,
                                            anchored_departures(emu, backend.lines, dep2, m), delta2, **rkw)
    except (ValueError, RuntimeError, np.linalg.LinAlgError) as exc:
        ra["skipped"] = f"failed: {type(exc).__name__}: {exc}"
        return out, dep, delta, 1
    ra.update({k: rec2[k] for k in ("iterations", "syntheses", "merit_start", "merit", "accepted")})
    if not rec2["accepted"]:        # the first refinement stands, with its b, delta and fit
        return out, dep, delta, 1
    ra["chi2_reduced"] = reduced_chi2(obs, fit2, float(snr), weights, rec["knots"] + 3)
    return (dataclasses.replace(out, atmosphere=m2, fit=fit2, chi2_reduced=ra["chi2_reduced"],
                                syntheses=int(out.syntheses) + rec2["syntheses"]), dep2, delta2, 1)


def _warm_start(backend, b_levels):
    """The level b of an earlier backend call, for the atoms the backend maps, as the ``initial_b`` of the next
    call (None where the backend cannot start from given b or there are none)."""
    if not (backend.supports_initial_b and b_levels):
        return None
    return {a: b for a, b in b_levels.items() if any(ln.atom == a for ln in backend.lines)} or None

def _short_fallback(obs, model, res, r, dep_be, delta, calls, backend, lines, grid, last_cfg, kw_last, corr,
                    check_threshold, prov):
    """``fallback="short"`` of :func:`invert_pixel_nlte`: one cycle (the last) from ``model`` with the check's
    backend b and Δ, one backend call at the model reached (started from the check's b where the backend can),
    the second check (the engine's Stokes I with the b used against the new b). Returns (model, result,
    departures, Δ, calls, final result or None: the full fallback then runs from the returned model,
    the second call's level b or None);
    ``prov`` gets ``"fallback_kind"`` and ``"short_fallback"``."""
    from ..physics.inversion import invert_pixel
    from .emulated import departure_check

    prov["fallback_kind"] = "short+full"      # until the second check passes
    rec: dict = {"calls": 0, "passed": False}
    prov["short_fallback"] = rec
    step = invert_pixel(obs - delta, model, lines, grid, last_cfg, departures=dep_be, **kw_last)
    if not step.ok:
        rec["inversion_status"] = int(step.status)
        return model, res, dep_be, delta, calls, None, None
    model2 = step.atmosphere
    r2, dep2, delta2 = backend_correction(backend, model2, lines, grid, initial_b=_warm_start(backend, r.b_levels),
                                          **corr)
    calls += 1
    rec["calls"] += 1
    if r2 is None or not r2.ok:
        rec["backend_status"] = NLTE_CRASHED if r2 is None else int(r2.status)
        return model2, dataclasses.replace(step, fit=step.fit + delta), dep_be, delta, calls, None, None
    chk = departure_check(model2, lines, grid, dep_be, dep2, **corr)
    rec.update(chk)
    rec["passed"] = bool(chk["profile_rms"] <= check_threshold)
    if not rec["passed"]:
        return model2, dataclasses.replace(step, fit=step.fit + delta), dep2, delta2, calls, None, r2.b_levels
    prov["fallback_kind"] = "short"
    last = invert_pixel(obs - delta2, model2, lines, grid, last_cfg, departures=dep2, **kw_last)
    out = last if last.ok else step
    dl = delta2 if last.ok else delta
    return model2, out, dep2, delta2, calls, dataclasses.replace(out, fit=out.fit + dl), r2.b_levels


@dataclasses.dataclass
class NlteSolver:
    """:func:`invert_pixel_nlte` with ``invert_pixel``'s signature, for :func:`pyinv.invert` (``nlte=``): a
    picklable pixel solver for the pool, Dask and MPI executors. Its result is the inversion's PixelResult
    (the NLTE fit) with ``backend_calls`` and ``nlte_provenance`` (:attr:`NltePixelResult.provenance`) added; a
    failed backend call gives the backend's status. Maps record both per pixel (``InversionResult.backend_calls``,
    ``nlte_check``, ``nlte_fallback``; totals in ``provenance["nlte"]``)."""

    #: map records carry the NLTE fields (pyinv.maps.pixel.NLTE_FIELDS)
    nlte_record: ClassVar[bool] = True

    backend: NlteBackend
    threshold: float = 0.01
    max_refresh: int = 2
    departure_form: str = "desire"
    departures: str = "backend"
    emulator: Any = None
    check_threshold: float | None = None
    fallback: str = "short"
    t_placement: str = "equidistant"
    sensitivity_dchi2: float | None = None
    t_refine: str | None = "auto"
    reanchor: float | None = REANCHOR

    def __call__(self, stokes, guess, lines, grid, config, *, mu=None, psf=None, abundances=None):
        r = invert_pixel_nlte(stokes, guess, lines, grid, config, backend=self.backend, mu=mu, psf=psf,
                              abundances=abundances, threshold=self.threshold, max_refresh=self.max_refresh,
                              departure_form=self.departure_form, departures=self.departures,
                              emulator=self.emulator, check_threshold=self.check_threshold,
                              fallback=self.fallback, t_placement=self.t_placement,
                              sensitivity_dchi2=self.sensitivity_dchi2, t_refine=self.t_refine,
                              reanchor=self.reanchor)
        if r.result is None:
            raise RuntimeError(f"NLTE backend failed before the first inversion (status {r.status})")
        res = dataclasses.replace(r.result, status=r.status or r.result.status)
        res.backend_calls = r.backend_calls
        res.nlte_provenance = r.provenance
        return res
