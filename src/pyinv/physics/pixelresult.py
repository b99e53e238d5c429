"""The result of one pixel's inversion (:class:`PixelResult`) and the χ² measures that judge a fit: the
reduced χ² against the noise model, the weighted residual the rescue compares, the free-parameter count."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import engine
from ..atmosphere import Atmosphere, AtmosphereErrors, canonical_name
from ..config import InversionConfig
from ..status import STATUS_CONVERGED

#: Status of a successful inversion (:data:`pyinv.status.STATUS_CONVERGED`); other values are engine error
#: codes (pyinv.engine.error_message).
STATUS_OK = STATUS_CONVERGED

__all__ = ["PixelResult", "STATUS_OK", "reduced_chi2", "free_parameters", "status_message", "weighted_residual",
           "result_reduced_chi2"]


def reduced_chi2(obs: np.ndarray, fit: np.ndarray, snr: float, weights: Any, nfree: int = 0) -> float:
    """χ² of a fit against the noise model: Σ (O − S)² / σ² / (N − nfree), σ = 1/S/N (in units of the
    continuum, every Stokes parameter), over the Stokes parameters with nonzero weight and the points SIR
    does not mask (O > −0.99). ≈ 1 for a fit at the noise level (SIR's χ² divides each Stokes parameter by
    its amplitude and weight instead, see spec-inversion §3.1). NaN when nothing is left."""
    o = np.asarray(obs, dtype=np.float64)
    f = np.asarray(fit, dtype=np.float64)
    use = [k for k in range(4) if float(weights[k]) != 0.0]
    if not use or o.shape != f.shape or not (np.isfinite(snr) and snr > 0):
        return float("nan")
    y, m = o[use], f[use]
    ok = np.isfinite(y) & np.isfinite(m) & (y > -0.99)
    dof = int(ok.sum()) - int(nfree)
    if dof <= 0:
        return float("nan")
    return float(np.sum((y[ok] - m[ok]) ** 2) * float(snr) ** 2 / dof)


def free_parameters(res: Any) -> int:
    """Free parameters of the last cycle (node counts) when the solver reports them, else 0."""
    nodes = getattr(res, "nodes", None)
    if isinstance(nodes, (list, tuple)) and nodes and isinstance(nodes[-1], dict):
        try:
            return int(sum(max(0, int(v)) for v in nodes[-1].values()))
        except (TypeError, ValueError):
            return 0
    return 0


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
        χ² at the end of each cycle, normalised as SIR prints it (χ²_raw / (N_obs − M − N_mask)); a cycle run on a
        coarse depth grid (invert_pixel's ``coarse``, cycles before the last) gives that grid's χ².
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
    atmosphere2 : Atmosphere or None
        Component 2 of a two-component inversion (its ``filling`` = f₂, ``macro`` = its macroturbulence,
        ``stray`` = α [%]); component 1's header then holds ``filling`` = 1 − f₂ (SIR's model headers).
    filling2 : float or None
        Component 2's filling factor f₂ (``atmosphere2.filling``; None without a second component). The
        suffix 2 marks component 2's counterpart, as in ``atmosphere2`` and ``errors2``.
    stray : float or None
        Stray-light fraction α [%] of the result (``atmosphere.stray``; None without stray light). The old
        attribute ``stray_percent`` gives it too, with a DeprecationWarning.
    errors2 : AtmosphereErrors or None
        Uncertainties of component 2 (``filling`` holds that of f₂, component 1's ``stray`` that of α).
    contrast : float or None
        With ``config.contrast``: the continuum contrast I_c1/I_c2 of the result (from SIR's synthetic
        pseudo-observation (I₁ − I₂)/2 = y: (1 + y)/(1 − y)).
    rescue : int
        0 no second path was tried; 1 a second path was tried and the first kept; 2 the second path's
        result was better and is returned (issue 17; ``invert_pixel(rescue=...)``).
    chi2_reduced : float
        χ² of the fit against the noise model of the last cycle (:func:`reduced_chi2`; ≈ 1 at the noise
        level).
    magnetic_start : ndarray (5,) or None
        With ``invert_pixel(magnetic_start="profiles")``: the field estimated from the profiles that replaced
        the guess's (B [G], γ [deg], φ [deg], B_los [G], B_⊥ [G]; NaN where not estimated); None when the
        start was the guess's.
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
    atmosphere2: Atmosphere | None = None
    filling2: float | None = None
    stray: float | None = None
    errors2: AtmosphereErrors | None = None
    contrast: float | None = None
    rescue: int = 0
    chi2_reduced: float = float("nan")
    magnetic_start: np.ndarray | None = None

    @property
    def ok(self) -> bool:
        """True when the inversion finished without an engine error."""
        return self.status == STATUS_OK

    def __getattr__(self, name: str) -> Any:
        # old attribute names (stray_percent): their canonical attribute, with a DeprecationWarning
        new = canonical_name(name, "attribute", known=self.__dataclass_fields__) if not name.startswith("_") else name
        if new != name:
            return getattr(self, new)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


# ------------------------------------------------------------------------------------------- helpers
def weighted_residual(stokes, res: PixelResult, config: InversionConfig) -> float:
    """Σ_s w_s mean_λ (O − S)² over the Stokes parameters of the last cycle's weights (unmasked points); inf
    for a fit that is not finite."""
    w = config.weights_for(config.cycles)
    o, f = np.asarray(stokes, dtype=np.float64), np.asarray(res.fit, dtype=np.float64)
    tot = 0.0
    for k in range(4):
        if float(w[k]) > 0:
            ok = o[k] > -0.99
            d = o[k, ok] - f[k, ok]
            if d.size:
                tot += float(w[k]) * float(np.mean(d * d))
    return tot if np.isfinite(tot) else float("inf")


def result_reduced_chi2(stokes, res: PixelResult, config: InversionConfig) -> float:
    """Reduced χ² of a result against the noise model of the configuration's last cycle."""
    c = config.cycles
    return reduced_chi2(np.asarray(stokes, dtype=np.float64), res.fit, float(config.value("snr", c)),
                        config.weights_for(c), free_parameters(res))
