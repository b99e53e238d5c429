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

from .backend import NLTE_CRASHED, NlteBackend, grid_vacuum_nm, run_cycles

__all__ = ["NltePixelResult", "invert_pixel_nlte", "NlteSolver", "nlte_regions", "on_engine_scale",
           "backend_correction"]


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
                      check_threshold: float = 0.01, **invert_kwargs) -> NltePixelResult:
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
    check_threshold : float
        With ``departures="emulated"``: the largest rms difference [continuum units] of the engine's Stokes I
        with the emulator's and with the backend's b at the final model before falling back.
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
    nlte_regions(grid, backend)                   # refuses a grid without a mapped line
    if departures == "emulated":
        return _invert_emulated(obs, guess, lines, grid, config, backend=backend, mu=mu, psf=psf,
                                abundances=abundances, threshold=threshold, max_refresh=max_refresh,
                                departure_form=departure_form, emulator=emulator,
                                check_threshold=check_threshold, **invert_kwargs)
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


def _invert_emulated(obs, guess, lines, grid, config, *, backend, mu, psf, abundances, threshold, max_refresh,
                     departure_form, emulator, check_threshold, **invert_kwargs) -> NltePixelResult:
    """``departures="emulated"`` (:mod:`pyinv.nlte.emulated`): cycles with the emulator's b, one backend call
    to check, then one last cycle with the backend's b and Δ, or the backend iterations as the fallback."""
    from ..physics.inversion import invert_pixel
    from .emulated import backend_start, departure_check, emulated_cycles, resolve_emulator

    if not (check_threshold >= 0):
        raise ValueError(f"check_threshold must be >= 0, got {check_threshold!r}")
    emu = resolve_emulator(emulator)
    kw = dict(mu=mu, psf=psf, abundances=abundances, departure_form=departure_form, **invert_kwargs)
    model, res, evals = emulated_cycles(obs, guess, lines, grid, config, emu, backend.lines, threshold=threshold,
                                        max_refresh=max_refresh, **kw)
    prov: dict = {"departures": "emulated", "emulator": emu.provenance(), "fallback": False,
                  "emulator_evaluations": evals}
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
    if chk["passed"]:
        last = invert_pixel(obs - delta, model, lines, grid, config.single_cycle(config.cycles), departures=dep_be,
                            **{**kw, "magnetic_start": "guess"})   # continues the LTE model
        res = last if (last.ok or not res.ok) else res
        return NltePixelResult(dataclasses.replace(res, fit=res.fit + delta), calls, delta, dep_be, 0, prov)
    prov["fallback"] = True
    fb = invert_pixel_nlte(obs, model, lines, grid, config, backend=backend, mu=mu, psf=psf, abundances=abundances,
                           threshold=threshold, max_refresh=max_refresh, departure_form=departure_form,
                           **invert_kwargs)
    if fb.result is None:     # the backend failed again: keep the emulated result
        return NltePixelResult(res, calls + fb.backend_calls, np.zeros_like(obs), None, fb.status, prov)
    return NltePixelResult(fb.result, calls + fb.backend_calls, fb.correction, fb.departures, fb.status, prov)


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
    check_threshold: float = 0.01

    def __call__(self, stokes, guess, lines, grid, config, *, mu=None, psf=None, abundances=None):
        r = invert_pixel_nlte(stokes, guess, lines, grid, config, backend=self.backend, mu=mu, psf=psf,
                              abundances=abundances, threshold=self.threshold, max_refresh=self.max_refresh,
                              departure_form=self.departure_form, departures=self.departures,
                              emulator=self.emulator, check_threshold=self.check_threshold)
        if r.result is None:
            raise RuntimeError(f"NLTE backend failed before the first inversion (status {r.status})")
        res = dataclasses.replace(r.result, status=r.status or r.result.status)
        res.backend_calls = r.backend_calls
        res.nlte_provenance = r.provenance
        return res
