"""LTE Stokes synthesis (spec-forward.md §1, §7–§9): :func:`synthesize`.

The physics lives in the Fortran engine (``fortran/synthesis.f90`` and the modules it uses); this module
validates the inputs, flattens the line list and the wavelength grid into the engine's arrays and loops
over the models of a stack.

pyinv's decisions where SIR has a quirk (spec-forward §12) are the defaults here; the keyword
``sir_compat`` restores SIR's behaviour where the spec offers a compatibility setting:

* a model is non-magnetic only if B = 0 at every depth (SIR: |B| ≤ 1 G everywhere), item 6;
* no damping cap (SIR: a ← 3a/max a when max a > 3); a warning is issued instead, item 5;
* blend offsets from float32-rounded wavelengths as SIR (``exact_blend_offsets=True`` for the exact
  difference), item 2;
* Unsöld damping of ions with SIR's −χ_I term and ×1.741 (``unsold_physical=True`` for the form without
  the −χ_I term), item 4;
* the accurate Faddeeva function (relative error < 1e-6) instead of SIR's rational approximation of §7.6
  (absolute error 4.5e-6 of H(0,0)); ``exact_voigt=False`` or ``sir_compat`` select SIR's; profiles differ by
  up to ~5e-5 I_c for weakly damped lines;
* HSRA normalisation polynomials in double precision (SIR: single; ~5e-6 relative), item 2;
* convolution on a non-uniform group uses the actual wavelengths (SIR assumes the first step), item 10.
"""
from __future__ import annotations

import math
import os
import warnings
from typing import Sequence

from ..errors import input_errors
import numpy as np

from .. import engine
from ..atmosphere import Atmosphere, renamed_keywords
from ..lines import LineList, WavelengthGrid

__all__ = ["synthesize", "MAX_OFFSET_A"]

#: Largest |offset| [Å] of a wavelength point from its group's first line ("the lines' reach"): the
#: continuum opacity, source function and normalisation are evaluated at the first line only (§7.9).
MAX_OFFSET_A = 50.0


def _eps_from_abundances(abundances) -> np.ndarray:
    if abundances is None:
        from ..defaults import default_abundances
        a = np.asarray(default_abundances(), dtype=np.float64)
    elif isinstance(abundances, (str, os.PathLike)):
        from ..io.sir import read_abundances
        a = read_abundances(abundances)
    else:
        a = np.asarray(abundances, dtype=np.float64)
    if a.shape != (92,):
        raise ValueError(f"abundances must be 92 log ε values (H = 12), got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError("abundances must be finite (log ε, H = 12)")
    return 10.0 ** (a - 12.0)


def _psf_arrays(psf) -> tuple[np.ndarray, np.ndarray] | None:
    if psf is None:
        return None
    if isinstance(psf, (str, os.PathLike)):
        from ..io.sir import read_psf
        x, y = read_psf(psf)
    elif isinstance(psf, tuple) and len(psf) == 2:
        x, y = (np.asarray(v, dtype=np.float64).ravel() for v in psf)
    else:
        a = np.asarray(psf, dtype=np.float64)
        if a.ndim != 2 or 2 not in a.shape:
            raise ValueError(f"psf must be an array (2, n) of (offset mÅ, response), a tuple or a path; "
                             f"got shape {a.shape}")
        if a.shape[0] != 2:
            a = a.T
        x, y = a[0].copy(), a[1].copy()
    if x.shape != y.shape or x.size < 2:
        raise ValueError("psf: offsets and response must have the same length (at least 2 points)")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("psf: offsets and response must be finite")
    if np.any(np.diff(x) <= 0):
        raise ValueError("psf: offsets (mÅ) must be strictly ascending")
    if not np.sum(y) > 0:
        raise ValueError("psf: the response must have a positive sum")
    return x, y


def _line_arrays(lines: LineList, used: list[int], magnetic_any: bool) -> dict[str, np.ndarray]:
    n = len(used)
    out = {k: np.zeros(n) for k in ("lam", "chi_e", "loggf", "enh", "alpha", "sigma", "mult_l", "l_l", "j_l",
                                    "mult_u", "l_u", "j_u", "geff")}
    for k in ("iz", "stage", "use_geff"):
        out[k] = np.zeros(n, dtype=np.int32)
    for i, idx in enumerate(used):
        ln = lines.by_index(idx)
        out["iz"][i] = ln.z
        out["stage"][i] = ln.ion
        out["lam"][i] = ln.wavelength
        out["chi_e"][i] = ln.excitation
        out["loggf"][i] = ln.loggf
        out["enh"][i] = ln.enhancement
        out["alpha"][i] = ln.alpha
        out["sigma"][i] = ln.sigma
        if ln.geff_override is not None:
            out["use_geff"][i] = 1
            out["geff"][i] = float(ln.geff_override)
        elif ln.has_terms:
            (ll, sl, jl), (lu, su, ju) = ln.term_lower, ln.term_upper  # (L, S, J)
            out["mult_l"][i], out["l_l"][i], out["j_l"][i] = 2 * sl + 1, ll, jl
            out["mult_u"][i], out["l_u"][i], out["j_u"][i] = 2 * su + 1, lu, ju
        elif magnetic_any:
            raise ValueError(f"line {idx}: the LS terms are unknown ({ln.term_text!r}); a magnetic synthesis "
                             f"needs them or an effective-Landé override (geff_override)")
        else:
            out["mult_l"][i] = out["mult_u"][i] = -1.0  # never used: non-magnetic
    return out


def _model_columns(atm: Atmosphere) -> dict[str, np.ndarray]:
    cols = {}
    n = atm.log_tau.size
    for name in ("log_tau", "T", "Pe", "vmic", "vlos", "B", "gamma", "phi"):
        v = np.asarray(getattr(atm, name), dtype=np.float64)
        v = np.broadcast_to(v, (n,)) if v.ndim == 0 else v
        if v.shape != (n,):
            raise ValueError(f"atmosphere column {name}: shape {v.shape} does not match the {n} depth points")
        if not np.all(np.isfinite(v)):
            raise ValueError(f"atmosphere column {name} contains NaN or infinite values")
        cols[name] = v
    if np.any(cols["T"] <= 0):
        raise ValueError("temperature T must be > 0 at every depth")
    if np.any(cols["Pe"] <= 0):
        raise ValueError("electron pressure Pe must be > 0 at every depth")
    return cols


def _as_models(atmos) -> tuple[list[Atmosphere], tuple[int, ...]]:
    if isinstance(atmos, Atmosphere):
        if atmos.stacked:
            return list(atmos), (atmos.nmodels,)
        return [atmos], ()
    if isinstance(atmos, (list, tuple)) and atmos and all(isinstance(a, Atmosphere) for a in atmos):
        models = []
        for a in atmos:
            if a.stacked:
                raise ValueError("a list of atmospheres must hold single (unstacked) models")
            models.append(a)
        return models, (len(models),)
    raise ValueError(f"atmos must be a pyinv.Atmosphere or a list of them, got {type(atmos).__name__}")


def _use_exact_voigt(exact_voigt: bool | None, sir_compat: bool) -> bool:
    """Whether the accurate Faddeeva function is used (default) rather than SIR's approximation."""
    return (not sir_compat) if exact_voigt is None else bool(exact_voigt)


def _check_mu(mu) -> float:
    """μ as a float in (0, 1] (ValueError otherwise)."""
    try:
        mu_f = float(mu)
    except (TypeError, ValueError):
        raise ValueError(f"mu must be a number in (0, 1], got {mu!r}") from None
    if not (0.0 < mu_f <= 1.0):
        raise ValueError(f"mu must be in (0, 1], got {mu!r}")
    return mu_f


def _departure_array(departures, used: list[int], log_tau: np.ndarray) -> np.ndarray:
    """(ndep, 2, nl) b_lower, b_upper of the set-up's lines (``used``, SIR indices) on the model grid
    ``log_tau``, from a :class:`pyinv.nlte.Departures` or the path of a SIR 2017 departure file (linear
    in log τ, linear extrapolation beyond its ends, as SIR); lines without coefficients get b = 1."""
    from ..nlte.departures import Departures, read_sir_departures

    if isinstance(departures, (str, os.PathLike)):
        departures = read_sir_departures(departures)
    if not isinstance(departures, Departures):
        raise ValueError(f"departures must be a pyinv.nlte.Departures or the path of a SIR departure file, got "
                         f"{type(departures).__name__}")
    unknown = [k for k in departures.lines if k not in used]
    if unknown:
        raise ValueError(f"departure coefficients for line(s) {unknown}, which the wavelength grid does not use "
                         f"(lines {used})")
    d = departures.on_grid(log_tau)
    out = np.empty((log_tau.size, 2, len(used)))
    for i, k in enumerate(used):
        bl, bu = d.line(k)
        out[:, 0, i], out[:, 1, i] = bl, bu
    return out


def _departure_form(form: str) -> bool:
    if form not in ("sir", "desire"):
        raise ValueError(f"departure_form must be 'sir' or 'desire', got {form!r}")
    return form == "desire"


def _setup(lines: LineList, grid: WavelengthGrid, *, magnetic: bool, abundances=None, psf=None,
           convolve: bool = True, exact_blend_offsets: bool = False, unsold_physical: bool = False,
           exact_voigt: bool | None = None, damping_cap: bool | None = None, sir_compat: bool = False,
           departures=None, log_tau: np.ndarray | None = None, departure_form: str = "sir") -> dict:
    """Validate a synthesis set-up and pack it for the engine once (:class:`pyinv.engine.Setup`: line
    data, groups, grid offsets and group ids, ε, PSF and the options), shared by :func:`synthesize`,
    :func:`pyinv.response_functions` and :func:`pyinv.invert_pixel`. ``magnetic``: whether any model
    has a field (the lines' Zeeman terms are then required). Returns ``setup``, ``eps`` (linear
    abundances), ``used`` (SIR indices of the lines, in the set-up's order) and ``cap`` (damping cap on)."""
    if not isinstance(lines, LineList):
        raise ValueError(f"lines must be a pyinv.LineList, got {type(lines).__name__}")
    if not isinstance(grid, WavelengthGrid):
        raise ValueError(f"grid must be a pyinv.WavelengthGrid, got {type(grid).__name__}")
    eps = _eps_from_abundances(abundances)
    psf_xy = _psf_arrays(psf)

    # groups and the lines they use
    if grid.nwav == 0:
        raise ValueError("the wavelength grid has no points")
    used: list[int] = []
    gstart, gcount, glines = [], [], []
    for r in grid.regions:
        for k in r.indices:
            if not lines.has_index(k):
                raise ValueError(f"wavelength grid refers to line {k}, which is not in the line list "
                                 f"(indices {lines.indices})")
        gstart.append(len(glines) + 1)
        gcount.append(len(r.indices))
        for k in r.indices:
            if k not in used:
                used.append(k)
            glines.append(used.index(k) + 1)
    woff = np.asarray(grid.offset_mA, dtype=np.float64)
    wgrp = np.concatenate([np.full(r.npoints, g + 1, dtype=np.int32) for g, r in enumerate(grid.regions)])
    if woff.shape != wgrp.shape:
        raise ValueError("wavelength grid: offsets and regions do not match")
    if not np.all(np.isfinite(woff)):
        raise ValueError("wavelength offsets must be finite")
    far = np.abs(woff) > MAX_OFFSET_A * 1e3
    if np.any(far):
        j = int(np.argmax(far))
        raise ValueError(f"wavelength point {j} ({woff[j]:.1f} mÅ from line {grid.line_index[j]}) is outside "
                         f"the lines' reach (|offset| > {MAX_OFFSET_A:g} Å)")

    cap = bool(sir_compat) if damping_cap is None else bool(damping_cap)
    groups = (np.asarray(gstart), np.asarray(gcount), np.asarray(glines))
    bdep = None
    if departures is not None:
        if log_tau is None:
            raise ValueError("departure coefficients need the model's log tau grid")
        bdep = _departure_array(departures, used, np.asarray(log_tau, dtype=np.float64))
    setup = engine.pack_setup(_line_arrays(lines, used, magnetic), groups, woff, wgrp, eps, psf_xy, departures=bdep,
                              exact_blend_offsets=bool(exact_blend_offsets), unsold_physical=bool(unsold_physical),
                              sir_threshold=bool(sir_compat), damping_cap=cap, eos_sir_compat=bool(sir_compat),
                              no_convolution=not convolve,
                              sir_voigt=not _use_exact_voigt(exact_voigt, sir_compat),
                              desire_departures=_departure_form(departure_form))
    return {"setup": setup, "eps": eps, "used": used, "cap": cap}


def _prepare(models: list, lines, grid, *, macro=None, **options) -> dict:
    """Validate the inputs of a synthesis of ``models`` (a list of single Atmosphere) and build the
    engine's set-up and model arrays (shared by :func:`synthesize` and :func:`pyinv.response_functions`):
    ``cols`` (validated columns per model), ``x`` (engine model arrays), ``macro`` (km/s), and :func:`_setup`'s
    entries; ``options`` as :func:`_setup`."""
    cols = [_model_columns(m) for m in models]
    nd = cols[0]["log_tau"].size
    for c in cols:
        if c["log_tau"].size != nd:
            raise ValueError("all models of a stack must have the same number of depth points")
    magnetic_any = any(np.any(c["B"] != 0) for c in cols)
    if options.get("departures") is not None:
        lt0 = cols[0]["log_tau"]
        if any(c["log_tau"].shape != lt0.shape or np.any(c["log_tau"] != lt0) for c in cols):
            raise ValueError("with departure coefficients all models must share one log tau grid")
        options["log_tau"] = lt0
    setup = _setup(lines, grid, magnetic=magnetic_any, **options)

    if macro is None:
        vmac = [float(getattr(m, "macro", 0.0) or 0.0) for m in models]
    else:
        vmac = list(np.broadcast_to(np.asarray(macro, dtype=np.float64), (len(models),)))
    for v in vmac:
        if not (math.isfinite(v) and v >= 0):
            raise ValueError(f"macroturbulence must be finite and >= 0 km/s, got {v}")
    xs = [engine.model_array(c) for c in cols]
    return {"cols": cols, "x": xs, "macro": vmac, **setup}


@renamed_keywords
@input_errors
def synthesize(atmos, lines: LineList, grid: WavelengthGrid, *, mu: float = 1.0, psf=None, abundances=None,
               macro: float | Sequence[float] | None = None, convolve: bool = True,
               exact_blend_offsets: bool = False, unsold_physical: bool = False, exact_voigt: bool | None = None,
               damping_cap: bool | None = None, sir_compat: bool = False, atmos2=None,
               filling: float | Sequence[float] | None = None, stray_profile=None,
               stray: float | Sequence[float] | None = None, departures=None,
               departure_form: str = "sir") -> np.ndarray:
    """Synthesise the emergent Stokes profiles of one or more model atmospheres (LTE, as SIR).

    Parameters
    ----------
    atmos : Atmosphere or list of Atmosphere
        A model, a stacked Atmosphere (n models on one grid) or a list of models. Columns are taken
        along the line of sight, as in SIR; ``atmos.macro`` [km/s] is the Gaussian macroturbulence
        (standard deviation in velocity, SIR's definition). P_e is used as given (no hydrostatic
        equilibrium is imposed; see :func:`pyinv.hydrostatic`).
    lines : LineList
        Atomic data of every line referenced by the grid.
    grid : WavelengthGrid
        Regions (main line + blends) and offsets [mÅ] from each region's first line.
    mu : float
        Heliocentric cosine. Accepted for interface symmetry and passed to nothing: the synthesis of a
        given model does not depend on μ, and profiles are normalised to the HSRA disk-centre
        continuum whatever μ is (spec-forward §5.6, §9.1).
    psf : array (2, n), tuple (offset mÅ, response), path, or None
        Spectral PSF (SIR PSF file format when a path).
    abundances : array (92,) of log ε, path of a SIR abundance file, or None
        ``None`` = pyinv's packaged solar set (:func:`pyinv.default_abundances`).
    macro : float or sequence, optional
        Overrides ``atmos.macro`` [km/s].
    convolve : bool
        Apply macroturbulence and PSF (default True).
    exact_blend_offsets, unsold_physical : bool
        See the module docstring.
    exact_voigt : bool or None
        The accurate Faddeeva function (default; relative error < 1e-6) or, with ``False``, SIR's rational
        Voigt approximation (Hui et al. 1977, spec §7.6; absolute error up to 4.5e-6 of H(0,0)), which keeps
        profiles within ~1e-6 of SIR's where the accurate function differs by up to ~5e-5 I_c for weakly
        damped lines. Default: accurate, SIR's with ``sir_compat``.
    damping_cap : bool or None
        SIR's rescaling a ← 3a/max(a) of a line whose damping exceeds 3 somewhere (§7.5). Default:
        off (pyinv's decision; a warning names the lines), on with ``sir_compat``.
    sir_compat : bool
        SIR's 1 G non-magnetic threshold, its damping cap and its fixed number of non-H nuclei in the
        EOS (which does not affect the synthesis).
    atmos2 : Atmosphere or list, optional
        A second component (one per model of ``atmos``, on the same log τ grid, its own ``macro``), mixed
        as I = (1 − α)[(1 − f₂) I₁ + f₂ I₂] + α I_stray (spec-forward §9.4, :mod:`pyinv.physics.mixing`).
    filling : float or sequence, optional
        f₂ ∈ [0, 1], the filling factor of component 2 (SIR keeps it in model 2's header); default:
        ``atmos2.filling`` when it came from a SIR model header (a ValueError when it is the Atmosphere
        default 1). (``filling2=`` is its old spelling: accepted with a DeprecationWarning.)
    stray_profile : array (4, nλ) or path of a SIR profile file, optional
        Stray-light Stokes profile on the grid, used as given (not convolved).
    stray : float or sequence, optional
        α, the stray-light fraction in percent, [0, 100]; default ``atmos.stray`` (SIR: model 1's header).
        (``stray_percent=`` is its old spelling: accepted with a DeprecationWarning.)
    departures : pyinv.nlte.Departures or path of a SIR 2017 departure file, optional
        NLTE departure coefficients (b_lower, b_upper per line, on any log τ grid: interpolated linearly in
        log τ onto the models', extrapolated linearly beyond, as SIR). SIR 2017's treatment (spec-forward
        §7.10): each line's opacity times b_lower (LTE stimulated emission) and, for a group whose main line
        has coefficients, the two-level source function 2hc²/λ⁵ / ((b_l/b_u) e^{hc/λkT} − 1) for the group.
    departure_form : "sir" or "desire"
        ``"desire"``: DeSIRe's form instead (spec-nlte-rh §4) — the NLTE stimulated-emission factor
        (b_l − b_u e^{−hν/kT})/(1 − e^{−hν/kT}) on each line's opacity, each line's own two-level source
        function and the continuum at Planck (separate emissivities): the emission vector is
        κ_c B e₁ + Σ_L (K_L e₁) S_L with K_L e₁ = (η_I, η_Q, η_U, η_V) of line L, for field-free and
        magnetic models alike (``fortran/departures.f90``); the source functions of a group are evaluated
        at its main line, so b = 1 is LTE exactly. :func:`pyinv.response_functions` and
        :func:`pyinv.invert_pixel` take the same keyword.

    Returns
    -------
    ndarray
        ``(4, nλ)`` for a single model, ``(n, 4, nλ)`` for a stack: I, Q, U, V normalised to the HSRA
        disk-centre continuum at each region's first line.

    Raises
    ------
    ValueError
        Invalid input (T ≤ 0, NaN, mismatched shapes, a grid line missing from ``lines``, wavelengths
        beyond MAX_OFFSET_A from their group's first line, unknown terms in a magnetic synthesis) or a
        failed computation (:class:`pyinv.EngineError`).
    """
    _check_mu(mu)  # validated; μ enters only hydrostatics, not the synthesis of a given model
    models, lead = _as_models(atmos)
    models2 = None if atmos2 is None else _as_models(atmos2)[0]
    from .mixing import mix, resolve_mixing

    mixing = resolve_mixing(models, models2, grid, filling=filling, stray_profile=stray_profile, stray=stray)
    both = models + (models2 or [])
    if macro is not None and models2 is not None:
        raise ValueError("macro overrides one macroturbulence for all models; with atmos2 set each component's "
                         "Atmosphere.macro instead")
    p = _prepare(both, lines, grid, abundances=abundances, psf=psf, macro=macro, convolve=convolve,
                 exact_blend_offsets=exact_blend_offsets, unsold_physical=unsold_physical,
                 exact_voigt=exact_voigt, damping_cap=damping_cap, sir_compat=sir_compat, departures=departures,
                 departure_form=departure_form)
    setup, used, cap = p["setup"], p["used"], p["cap"]
    out = np.empty((len(both), 4, setup.nw))
    amax_all = np.zeros(len(used))
    for i, (c, x, vm) in enumerate(zip(p["cols"], p["x"], p["macro"])):
        out[i], amax = engine.synth_stokes(setup, c["log_tau"], x, vm)
        amax_all = np.maximum(amax_all, amax)
    n = len(models)
    out = mix(out[:n], out[n:] if models2 is not None else None, mixing)
    big = amax_all > 3.0
    if np.any(big) and not cap:
        warnings.warn("damping parameter exceeds 3 for line(s) " + ", ".join(
            f"{used[k]} (max a = {amax_all[k]:.2f})" for k in np.nonzero(big)[0]) +
            "; SIR would rescale it (damping cap), pyinv does not", stacklevel=2)
    return out.reshape(lead + (4, setup.nw))
