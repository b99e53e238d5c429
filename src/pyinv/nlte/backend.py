"""The interface every non-LTE backend implements, its result, per-pixel statuses and the level map.

A backend takes one atmosphere (a pyinv :class:`~pyinv.Atmosphere`, SIR conventions, or an
:class:`~pyinv.nlte.column.NlteColumn`) and vacuum wavelengths, and returns an :class:`NlteResult`: the
NLTE Stokes profiles, the same backend's LTE profiles, the departure coefficients of every mapped line
(:class:`~pyinv.nlte.departures.Departures`) and a status.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .column import NlteColumn, column_from_atmosphere
from .departures import Departures
from . import units
from ..status import (NLTE_CODES, NLTE_CONVERGED, NLTE_CRASHED, NLTE_NOT_CONVERGED, NLTE_TIMEOUT,  # noqa: F401
                      status_name)

__all__ = ["NLTE_CONVERGED", "NLTE_NOT_CONVERGED", "NLTE_CRASHED", "NLTE_TIMEOUT", "NLTE_STATUS_NAMES",
           "NlteLine", "NlteResult", "NlteBackend", "level_map", "KNOWN_LEVELS", "grid_vacuum_nm", "cycle_settled",
           "run_cycles", "CycleRun", "NlteConfigurationError", "engine_broadening"]

# The NLTE status codes live in pyinv.status (issue 18): NLTE_CONVERGED (0), NLTE_NOT_CONVERGED (the
# iteration stopped at its limit, profiles returned), NLTE_CRASHED (the external program failed) and
# NLTE_TIMEOUT (the same code as pyinv.status.STATUS_TIMEOUT).
#: Short name of every NLTE status code (from :data:`pyinv.status.TABLE`).
NLTE_STATUS_NAMES = {code: status_name(code) for code in NLTE_CODES}


class NlteConfigurationError(RuntimeError):
    """A backend cannot run: missing program, data file, package or environment variable."""


@dataclass(frozen=True)
class NlteLine:
    """One spectral line of pyinv's line list mapped onto a model atom of the NLTE code.

    ``atom`` is the backend-neutral atom name (``"CaII"``, ``"Fe23"``: RH file ``<atom>.atom``,
    Lightweaver ``lightweaver.rh_atoms.<atom>_atom``); ``lower`` and ``upper`` are 0-based level indices
    of that atom (spec-nlte-rh §7).
    """

    index: int
    atom: str
    lower: int
    upper: int


#: (element, ionisation stage, air λ₀ [Å] rounded to 0.1) → (atom, lower, upper), spec-nlte-rh §7.
KNOWN_LEVELS: dict[tuple[str, int, float], tuple[str, int, int]] = {
    ("CA", 2, 8542.1): ("CaII", 2, 4),
    ("FE", 1, 6301.5): ("Fe23", 15, 19),
    ("FE", 1, 6302.5): ("Fe23", 16, 21),
}


def level_map(lines: Any, indices: Sequence[int] | None = None) -> list[NlteLine]:
    """Map the lines ``indices`` (default: all) of a :class:`pyinv.LineList` that appear in
    :data:`KNOWN_LEVELS`; other lines are skipped (they stay in LTE)."""
    out = []
    for ln in lines:
        if indices is not None and ln.index not in indices:
            continue
        key = (ln.element.upper(), int(ln.ion), round(float(ln.wavelength), 1))
        if key in KNOWN_LEVELS:
            atom, lo, up = KNOWN_LEVELS[key]
            out.append(NlteLine(int(ln.index), atom, lo, up))
    return out


def cycle_settled(model: Any, res: Any, threshold: float) -> bool:
    """True when the inversion cycle that took ``model`` to ``res.atmosphere`` failed or changed T by at
    most ``threshold`` (relative) everywhere: the DeSIRe-style drivers then stop repeating it."""
    t_old, t_new = np.asarray(model.T, dtype=float), np.asarray(res.atmosphere.T, dtype=float)
    return (not res.ok) or bool(np.max(np.abs(t_new - t_old) / t_old) <= threshold)


@dataclass
class CycleRun:
    """What :func:`run_cycles` reached: the model, the last inversion (None before the first), the last
    correction Δ (4, nλ) and departures, the provider's calls, and whether the provider failed (then the
    run stopped at that call)."""

    model: Any
    result: Any
    delta: np.ndarray
    departures: Any
    calls: int
    failed: bool = False
    #: the extra keywords of the last cycle's inversions (``cycle_kwargs``; {} without)
    extra: dict = field(default_factory=dict)


def merge_invert_kwargs(invert_kwargs: dict, extra: dict) -> dict:
    """``invert_kwargs`` with ``extra`` on top; their ``node_positions`` merged parameter by parameter."""
    kw = {**invert_kwargs, **extra}
    if "node_positions" in extra and invert_kwargs.get("node_positions"):
        kw["node_positions"] = {**invert_kwargs["node_positions"], **extra["node_positions"]}
    return kw


def run_cycles(obs: np.ndarray, guess: Any, lines: Any, grid: Any, config: Any, departures_at: Any, *,
               threshold: float, max_refresh: int, cycle_kwargs: Any = None, **invert_kwargs) -> CycleRun:
    """The DeSIRe-style cycle loop of the NLTE drivers (:func:`pyinv.nlte.invert_pixel_nlte` with the
    backend's b, :mod:`pyinv.nlte.emulated` with the emulator's): for each cycle of ``config``,
    ``departures_at(model)`` gives the frozen (departures, Δ) at the current model (None: it failed, the run
    stops), ``obs − Δ`` is inverted with those b, and the cycle is repeated from the new model (at most
    ``max_refresh`` times) while it changes T by more than ``threshold`` (:func:`cycle_settled`); a failed
    cycle ends the run. ``invert_kwargs`` go to :func:`pyinv.invert_pixel`; ``cycle_kwargs(c, model,
    departures)``, when given, is called once at the start of cycle ``c`` (1-based) and returns extra keywords
    for that cycle's inversions (e.g. ``node_positions`` chosen from the model reached; merged by
    :func:`merge_invert_kwargs`)."""
    from ..physics.inversion import invert_pixel

    run = CycleRun(guess, None, np.zeros_like(obs), None, 0)
    for c in range(1, config.cycles + 1):
        cfg = config.single_cycle(c)
        for k in range(max_refresh + 1):
            got = departures_at(run.model)
            run.calls += 1
            if got is None:
                run.failed = True
                return run
            run.departures, run.delta = got
            if k == 0:
                run.extra = dict(cycle_kwargs(c, run.model, run.departures) or {}) if cycle_kwargs else {}
            run.result = invert_pixel(obs - run.delta, run.model, lines, grid, cfg, departures=run.departures,
                                      **{**merge_invert_kwargs(invert_kwargs, run.extra),
                                         "magnetic_start": "guess"})   # cycles continue a model
            settled, run.model = cycle_settled(run.model, run.result, threshold), run.result.atmosphere
            if settled:
                break
        if not run.result.ok:
            break
    return run


def grid_vacuum_nm(lines: Any, grid: Any) -> np.ndarray:
    """Vacuum wavelengths [nm] of a :class:`pyinv.WavelengthGrid` (air Å, pyinv's formula)."""
    return units.air_angstrom_to_vacuum_nm(grid.wavelength)


@dataclass
class NlteResult:
    """What a backend returns for one atmosphere.

    Attributes
    ----------
    wavelength : ndarray (nλ,)
        Vacuum wavelengths [nm].
    stokes : ndarray (4, nλ)
        NLTE I, Q, U, V [W m⁻² Hz⁻¹ sr⁻¹] at the requested μ.
    stokes_lte : ndarray (4, nλ) or None
        The same backend's LTE profiles (the mapped atoms in LTE), when requested.
    departures : Departures or None
        b of every mapped line, on the model's log τ grid (a pyinv Atmosphere or an NlteColumn on the
        τ scale) or on the backend's own τ₅₀₀ grid otherwise.
    tau500 : ndarray (ndep,)
        The backend's τ₅₀₀ on its depth grid (top first).
    b_levels : dict of atom → ndarray (nlevel, ndep)
        All departure coefficients of each active atom on the backend's grid (top first).
    status : int
        :data:`NLTE_CONVERGED`, :data:`NLTE_NOT_CONVERGED`, :data:`NLTE_CRASHED` or :data:`NLTE_TIMEOUT`.
    iterations : int
    delta : float
        Last maximum relative population change.
    seconds : float
        Wall time of the backend call.
    message : str
    """

    wavelength: np.ndarray
    stokes: np.ndarray
    stokes_lte: np.ndarray | None = None
    departures: Departures | None = None
    tau500: np.ndarray | None = None
    b_levels: dict[str, np.ndarray] = field(default_factory=dict)
    status: int = NLTE_CONVERGED
    iterations: int = 0
    delta: float = float("nan")
    seconds: float = float("nan")
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status == NLTE_CONVERGED

    @classmethod
    def failed(cls, wavelength: np.ndarray, status: int, message: str, seconds: float = float("nan"),
               iterations: int = 0) -> "NlteResult":
        nan = np.full((4, np.size(wavelength)), np.nan)
        return cls(np.asarray(wavelength, dtype=np.float64), nan, nan.copy(), status=status, message=message,
                   seconds=seconds, iterations=iterations)


class NlteBackend(abc.ABC):
    """A non-LTE code behind one interface (see the module docstring).

    Subclasses implement :meth:`run_column`; :meth:`synthesize` converts pyinv models first. Backends
    must be picklable (they travel to pool workers); expensive per-process state is built lazily.
    """

    name: str = "?"
    #: Whether :meth:`synthesize` takes ``initial_b`` (starting populations, e.g. from an emulator).
    supports_initial_b: bool = False

    def __init__(self, lines: Sequence[NlteLine] = (), *, mu: float = 1.0, lte: bool = True):
        self.lines = list(lines)
        self.mu = float(mu)
        self.lte = bool(lte)

    @abc.abstractmethod
    def check(self) -> None:
        """Raise :class:`NlteConfigurationError` naming what is missing."""

    @abc.abstractmethod
    def run_column(self, column: NlteColumn, wavelength_vac_nm: np.ndarray, *, pixel_id: str = "0",
                   time_limit: float | None = None) -> NlteResult:
        """Solve one column; never raises for a per-pixel failure (the status says)."""

    def synthesize(self, atmos: Any, wavelength_vac_nm: np.ndarray, *, abundances: Any = None,
                   pixel_id: str = "0", time_limit: float | None = None,
                   initial_b: dict[str, np.ndarray] | None = None) -> NlteResult:
        """NLTE (and LTE) Stokes profiles and departure coefficients of one atmosphere.

        Parameters
        ----------
        atmos : pyinv.Atmosphere or NlteColumn
            A pyinv model (log τ₅₀₀ grid, deepest first; converted with
            :func:`~pyinv.nlte.column.column_from_atmosphere`) or a column in the code's conventions.
        wavelength_vac_nm : array (nλ,)
            Vacuum wavelengths [nm] (see :func:`grid_vacuum_nm`).
        initial_b : dict of atom → ndarray (nlevel, ndep), optional
            Departure coefficients to start the iteration from, on the column's depth points top first
            (only where :attr:`supports_initial_b`; the converged solution does not depend on it).
        """
        col = atmos if isinstance(atmos, NlteColumn) else column_from_atmosphere(atmos, abundances)
        kw: dict[str, Any] = {}
        if initial_b is not None:
            if not self.supports_initial_b:
                raise ValueError(f"the {self.name} backend cannot start from given departure coefficients")
            kw["initial_b"] = initial_b
        return self.run_column(col, np.asarray(wavelength_vac_nm, dtype=np.float64), pixel_id=pixel_id,
                               time_limit=time_limit, **kw)

    def _departures(self, col: NlteColumn, tau500_top_first: np.ndarray,
                    b_levels: dict[str, np.ndarray]) -> Departures | None:
        """Map level departure coefficients onto the mapped lines, on the model grid when there is one."""
        maps = [ln for ln in self.lines if ln.atom in b_levels]
        if not maps:
            return None
        bl = np.array([b_levels[ln.atom][ln.lower] for ln in maps])
        bu = np.array([b_levels[ln.atom][ln.upper] for ln in maps])
        lt = np.log10(np.maximum(tau500_top_first, 1e-300))
        model = col.log_tau_model
        if model is None and col.scale == "tau500":
            model = col.depth[::-1].copy()
        return Departures.from_depth_grid(lt, [ln.index for ln in maps], bl, bu, model_log_tau=model)


#: Bohr radius squared [cm²] (ABO cross-sections are tabulated in units of a₀²)
A0_SQUARED = 2.80028e-17
#: pyinv's classical radiative damping γ_rad = C / λ² [s⁻¹, λ vacuum in cm] (spec-forward §11)
C_RAD = 0.22233


def engine_broadening(mapped: Sequence[NlteLine], line_list: Any) -> tuple:
    """The damping pyinv's engine gives the mapped lines, for a backend's model atoms (``line_broadening=``
    of :class:`~pyinv.nlte.Lightweaver` and :class:`~pyinv.nlte.RH`).

    Returns ``((atom, lower, upper, σ/a₀², α, enhancement, γ_rad [s⁻¹]), ...)`` of the mapped lines in
    ``line_list`` (a pyinv LineList): van der Waals by ABO's σ, α where both are given, Unsöld × the
    enhancement otherwise; classical radiative damping; no Stark broadening. Hashable (per-process caches);
    ``()`` without a list.
    """
    if line_list is None:
        return ()
    out = []
    for ln in mapped:
        if not line_list.has_index(ln.index):
            raise ValueError(f"line_broadening: line {ln.index} is not in the line list")
        sl = line_list.by_index(ln.index)
        lam_vac_cm = float(units.air_angstrom_to_vacuum_nm(sl.wavelength)) * 1e-7
        out.append((ln.atom, ln.lower, ln.upper, float(sl.sigma) / A0_SQUARED, float(sl.alpha),
                    float(sl.enhancement), C_RAD / lam_vac_cm ** 2))
    return tuple(out)
