"""Lightweaver (PyPI ``lightweaver``, extra ``pyinv[nlte]``) as an in-process NLTE backend (spec-nlte-rh §6).

Per column: ``Atmosphere.make_1d`` → ``RadiativeSet`` (Lightweaver's shipped RH-derived atoms; the
mapped atoms active) → ``compute_eq_pops`` → ``Context`` → ``iterate_ctx_se`` → ``compute_rays`` at the
requested vacuum wavelengths and μ (full Stokes when the column has a field); the LTE profiles by one more
formal solution with the active atoms in LTE (``lte_profiles``). The atomic models and the
wavelength grid are built once per process (per pool worker) and reused; a new Context is made per
column because it holds that column's atmosphere.

Hydrogen: Lightweaver gives passive atoms LTE populations; RH uses the atmosphere's hydrogen populations.
With ``hydrogen="model"`` (default) and a column that carries hydrogen populations, H is made detailed
static with those populations, as RH does.

Line broadening: with ``line_broadening=`` a pyinv line list, the mapped lines of the model atoms take the
damping pyinv's engine gives them (van der Waals by ABO's σ, α through Lightweaver's Barklem formula, or
Unsöld × the list's enhancement; classical radiative damping 0.22233/λ² s⁻¹; no Stark broadening), the
way DeSIRe hands SIR's σ, α to RH, so that backend and engine synthesise the same line. Measured on FAL C
(Ca II 8542, field-free, b from the backend, DeSIRe's form, 0.1-dex grid): the engine's NLTE profile
against Lightweaver's, each on its own ±1.5 Å window edge, 0.0195 rms with the shipped CaII atom
(Unsöld × 1.5, γ_rad = 1.5e8 s⁻¹, Stark) and 0.0009 with the engine's damping.
"""
from __future__ import annotations

import contextlib
import time
import warnings
from typing import Any, Sequence

import numpy as np

from .backend import (NLTE_CONVERGED, NLTE_CRASHED, NLTE_NOT_CONVERGED, NlteBackend, NlteConfigurationError,
                      NlteLine, NlteResult, engine_broadening)
from .column import NlteColumn

__all__ = ["Lightweaver", "DEFAULT_BACKGROUND", "import_lightweaver", "falc_column"]

#: Background atoms (Lightweaver ``rh_atoms`` names without ``_atom``), hydrogen first.
DEFAULT_BACKGROUND: tuple[str, ...] = ("H_6", "C", "O", "Si", "Al", "CaII", "Fe", "He_9", "MgII", "N", "Na", "S")

_ELEMENT_OF = {"CaII": "Ca", "Fe23": "Fe", "Fe": "Fe", "H_6": "H", "He_9": "He", "MgII": "Mg"}

_CACHE: dict[Any, Any] = {}
_NSCATTER = 3  # lambda iterations of the background before the NLTE iterations


_EOS: dict[Any, Any] = {}


@contextlib.contextmanager
def _shared_eos():
    """Within the block, ``Atmosphere.make_1d`` takes a Wittmann equation of state made once per process and
    abundance set instead of a new one per column (its constructor reads the partition-function tables from
    disk: ~0.07 s a column; the object holds only those tables and the abundances, nothing a call changes)."""
    import lightweaver.atmosphere as lwa
    made = lwa.Wittmann
    if getattr(made, "_pyinv_shared", False):   # already inside one (re-entrant, or another thread)
        yield
        return

    def shared(abund_init=None, **kw):
        key = (None if abund_init is None else np.asarray(abund_init, dtype=np.float64).tobytes(),
               tuple(sorted(kw.items())))
        if key not in _EOS:
            _EOS[key] = made(abund_init=abund_init, **kw)
        return _EOS[key]

    shared._pyinv_shared = True  # type: ignore[attr-defined]
    lwa.Wittmann = shared
    try:
        yield
    finally:
        lwa.Wittmann = made


def import_lightweaver():
    """Import lightweaver quietly; :class:`NlteConfigurationError` naming the extra when it is absent."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import lightweaver  # noqa: F401
            import lightweaver.rh_atoms  # noqa: F401
    except ImportError as exc:
        raise NlteConfigurationError("Lightweaver backend: the Python package 'lightweaver' is not installed "
                                     "(pip install 'pyinv[nlte]' or pip install lightweaver)") from exc
    import lightweaver
    return lightweaver


def falc_column():
    """FAL C (Fontenla et al. 1993) as an :class:`NlteColumn` (column-mass scale, top first, RH's units) from
    Lightweaver's own tables (``lightweaver.fal.Falc82``)."""
    import_lightweaver()
    import numpy as np
    from lightweaver.fal import Falc82

    from .column import NlteColumn

    a = Falc82()
    return NlteColumn(scale="mass", depth=np.log10(a.cmass / 10.0), T=a.temperature, ne=a.ne / 1e6,
                      v=a.vlos / 1e3, vturb=a.vturb / 1e3, name="FALC")


def _element(name: str) -> str:
    return _ELEMENT_OF.get(name, name.rstrip("I").rstrip("_") or name)


def _apply_broadening(atoms: list, names: Sequence[str], broadening: tuple) -> None:
    """Replace the damping of the mapped lines of the model atoms ``atoms`` (named ``names``)."""
    if not broadening:
        return
    from lightweaver.broadening import LineBroadening, RadiativeBroadening, VdwBarklem, VdwUnsold

    by_name = dict(zip(names, atoms))
    for atom, lower, upper, sigma, alpha, enh, gamma in broadening:
        line = next((x for x in by_name[atom].lines if x.i == lower and x.j == upper), None)
        if line is None:
            raise NlteConfigurationError(f"Lightweaver backend: {atom}_atom has no line {upper} -> {lower}")
        vdw = VdwBarklem(vals=[sigma, alpha]) if sigma > 0 and alpha > 0 else VdwUnsold(vals=[enh, enh])
        line.broadening = LineBroadening(natural=[RadiativeBroadening(gamma=gamma)], elastic=[vdw])
        line.broadening.setup(line)


def _stokes4(I, quv=None) -> np.ndarray:
    """(4, nλ) Stokes from I (nλ) and, with a field, Q, U, V (3, nλ); zeros for Q, U, V without one."""
    I = np.asarray(I).reshape(-1)
    if quv is None:
        z = np.zeros_like(I)
        return np.stack([I, z, z, z])
    return np.concatenate([I[None], np.asarray(quv).reshape(3, -1)], axis=0)


def _formal_solution(ray_ctx, nwl: int, stokes: bool) -> np.ndarray:
    """Formal solution of a ray Context (one μ, the requested wavelengths) as (4, nλ)."""
    if stokes:
        ray_ctx.single_stokes_fs()
        return _stokes4(np.asarray(ray_ctx.spect.I).reshape(-1)[:nwl],
                        np.asarray(ray_ctx.spect.Quv).reshape(3, -1)[:, :nwl])
    ray_ctx.formal_sol()
    return _stokes4(np.asarray(ray_ctx.spect.I).reshape(-1)[:nwl])


def _emergent(ctx, atmos, spect, wl: np.ndarray, mu: float, stokes: bool, prd: bool):
    """Emergent Stokes (4, nλ) of a converged Context at ``wl`` [nm] and ``mu``, and the ray Context that made
    them.

    Without PRD the ray Context is built straight from the converged one's state: the run is over, so the
    atmosphere can take the new ray in place, and the deep copy of the whole Context that
    ``Context.compute_rays`` makes (~0.1 s of a ~0.5 s column in bench_desire) is not needed; measured
    bit-identical to ``compute_rays`` (tests/test_nlte_lightweaver.py). With PRD,
    ``compute_rays`` itself (it carries ρ onto the new grid)."""
    if prd:
        out, ray_ctx = ctx.compute_rays(wl, [mu], stokes=stokes, returnCtx=True)
        out = np.asarray(out)
        return (_stokes4(out[0], out[1:]) if stokes else _stokes4(out)), ray_ctx
    state = ctx.state_dict()
    atmos.rays([mu])
    ray_ctx = ctx.construct_from_state_dict_with(state, spect=spect.subset_configuration(wl))
    return _formal_solution(ray_ctx, wl.size, stokes), ray_ctx


class Lightweaver(NlteBackend):
    """Lightweaver in-process.

    Parameters
    ----------
    lines : sequence of NlteLine
        Mapped lines; their atoms (``<atom>_atom`` in ``lightweaver.rh_atoms``) are active.
    mu : float
        μ of the emergent ray.
    lte : bool
        Also compute the LTE profiles (mapped atoms detailed static with LTE populations).
    background : sequence of str
        Background atoms; an element that is also active is taken from the active atom.
    hydrogen : ``"model"`` or ``"lte"``
        Hydrogen populations from the column (as RH) or in LTE (Lightweaver's default).
    nrays : int
        Gauss–Legendre angles of the NLTE iteration.
    prd : bool
        Partial redistribution for PRD lines (Ca II H and K).
    pops_tol, max_iter : float, int
        Convergence tolerance on the populations and iteration limit (> 3, the background-scattering
        iterations that come first).
    line_broadening : pyinv.LineList, optional
        Give the mapped lines this list's damping as pyinv's engine computes it (module docstring); the
        atoms' own broadening otherwise.
    lte_profiles : ``"formal"`` or ``"solve"``
        How the LTE profiles (``lte=True``) are made: ``"formal"`` (default; PRD off only) by one formal
        solution through the converged NLTE run with the active atoms' populations put to LTE (their b = 1;
        the background and its scattering as iterated there) — measured within 1.3e-5 (relative, whole
        8542 window) and 5e-8 at the window's edges of ``"solve"`` on bench_desire pixels, at a fifth of its
        CPU time; ``"solve"``: a second, separate run with the mapped atoms detailed static in LTE.
    """

    name = "lightweaver"
    supports_initial_b = True

    def __init__(self, lines: Sequence[NlteLine] = (), *, mu: float = 1.0, lte: bool = True,
                 background: Sequence[str] = DEFAULT_BACKGROUND, hydrogen: str = "model", nrays: int = 5,
                 prd: bool = True, pops_tol: float = 1e-3, max_iter: int = 200, line_broadening: Any = None,
                 lte_profiles: str = "formal"):
        super().__init__(lines, mu=mu, lte=lte)
        if lte_profiles not in ("formal", "solve"):
            raise ValueError(f"lte_profiles must be 'formal' or 'solve', got {lte_profiles!r}")
        self.lte_profiles = lte_profiles
        if hydrogen not in ("model", "lte"):
            raise ValueError("hydrogen must be 'model' or 'lte'")
        self.active = list(dict.fromkeys(ln.atom for ln in self.lines))
        els = {_element(a) for a in self.active}
        self.background = tuple(b for b in background if _element(b) not in els)
        self.hydrogen = hydrogen
        self.nrays = int(nrays)
        self.prd = bool(prd)
        self.pops_tol = float(pops_tol)
        self.max_iter = int(max_iter)
        if self.max_iter <= _NSCATTER:
            raise ValueError(f"max_iter must exceed the {_NSCATTER} initial background-scattering iterations")
        self.broadening = engine_broadening(self.lines, line_broadening)
        self.check()

    def check(self) -> None:
        lw = import_lightweaver()
        for a in (*self.active, *self.background):
            if not hasattr(lw.rh_atoms, f"{a}_atom"):
                raise NlteConfigurationError(f"Lightweaver backend: no model atom {a}_atom in lightweaver.rh_atoms")

    # --------------------------------------------------------------- per-process state
    def _radiative_set(self, lte_run: bool):
        key = (tuple(self.active), self.background, lte_run, self.hydrogen, self.broadening)
        if key not in _CACHE:
            lw = import_lightweaver()
            atoms = [getattr(lw.rh_atoms, f"{a}_atom")() for a in (*self.background, *self.active)]
            _apply_broadening(atoms[len(self.background):], self.active, self.broadening)
            rs = lw.RadiativeSet(atoms)
            names = [_element(a) for a in self.active]
            if lte_run:
                rs.set_detailed_static(*names) if names else None
            elif names:
                rs.set_active(*names)
            if self.hydrogen == "model" and "H" not in names:
                rs.set_detailed_static("H")
            spect = rs.compute_wavelength_grid()
            _CACHE[key] = (rs, spect)
        return _CACHE[key]

    def _atmosphere(self, col: NlteColumn):
        lw = import_lightweaver()
        from lightweaver.atmosphere import ScaleType
        if col.scale == "tau500":
            scale, depth = ScaleType.Tau500, 10.0 ** col.depth
        elif col.scale == "mass":
            scale, depth = ScaleType.ColumnMass, 10.0 ** col.depth * 10.0  # g cm⁻² → kg m⁻²
        else:
            scale, depth = ScaleType.Geometric, col.depth * 1e3
        kw: dict[str, Any] = dict(temperature=col.T.copy(), vlos=col.v * 1e3, vturb=col.vturb * 1e3,
                                  ne=col.ne * 1e6)
        if col.nH is not None:
            kw["hydrogenPops"] = col.nH * 1e6
        if col.B is not None:
            kw.update(B=col.B.copy(), gammaB=col.gamma.copy(), chiB=col.chi.copy())
        with warnings.catch_warnings(), _shared_eos():
            warnings.simplefilter("ignore")
            atmos = lw.Atmosphere.make_1d(scale, depthScale=depth, logG=col.logg, **kw)
        atmos.quadrature(self.nrays)
        return atmos

    def _formal_lte(self) -> bool:
        """Whether the LTE profiles come from the NLTE run (``lte_profiles="formal"``, no PRD, an active atom)."""
        return self.lte and self.lte_profiles == "formal" and not self.prd and bool(self.active)

    def _solve(self, col: NlteColumn, wl: np.ndarray, lte_run: bool, initial_b: dict | None = None):
        """One Lightweaver run: (NLTE Stokes, τ₅₀₀, b of the active atoms, iterations, last dPops, LTE Stokes
        from the same run or None — see ``lte_profiles``)."""
        lw = import_lightweaver()
        rs, spect = self._radiative_set(lte_run)
        atmos = self._atmosphere(col)
        eq = rs.compute_eq_pops(atmos)
        if self.hydrogen == "model" and col.nH is not None and "H" not in [_element(a) for a in self.active]:
            h = eq.atomicPops["H"]
            nlev = h.n.shape[0]
            h.n[:] = col.nH[:nlev] * 1e6 if nlev == col.nH.shape[0] else h.n
        for a, b in (initial_b or {}).items():   # start the active atoms from given b (LTE otherwise)
            pops = eq.atomicPops[_element(a)]
            pops.n[:] = np.asarray(b, dtype=np.float64) * pops.nStar
        ctx = lw.Context(atmos, spect, eq, Nthreads=1, conserveCharge=False)
        prd = self.prd and not lte_run
        iters, conv = lw.iterate_ctx_se(ctx, Nscatter=_NSCATTER, prd=prd, popsTol=self.pops_tol,
                                        NmaxIter=self.max_iter, quiet=True, returnFinalConvergence=True)
        dpops = max([float(getattr(u, "dPopsMax", 0.0) or 0.0) for u in conv] + [0.0])
        stokes = col.B is not None
        b = {a: np.asarray(eq.atomicPops[_element(a)].n / eq.atomicPops[_element(a)].nStar)
             for a in self.active} if not lte_run else {}
        s, ray_ctx = _emergent(ctx, atmos, spect, wl, self.mu, stokes, prd)
        s_lte = None
        if not lte_run and self._formal_lte():     # the same run with the active atoms' b = 1
            for a in self.active:
                pops = ray_ctx.eqPops.atomicPops[_element(a)]
                pops.n[:] = pops.nStar
            s_lte = _formal_solution(ray_ctx, wl.size, stokes)
        return s, np.asarray(atmos.tauRef, dtype=np.float64), b, int(iters), dpops, s_lte

    def run_column(self, column: NlteColumn, wavelength_vac_nm: np.ndarray, *, pixel_id: str = "0",
                   time_limit: float | None = None, initial_b: dict[str, np.ndarray] | None = None) -> NlteResult:
        """Solve one column (``initial_b``: see :meth:`NlteBackend.synthesize`)."""
        t0 = time.perf_counter()
        wl = np.asarray(wavelength_vac_nm, dtype=np.float64).ravel()
        for a, b in (initial_b or {}).items():
            if a not in self.active:
                raise ValueError(f"initial_b: {a} is not an active atom ({', '.join(self.active) or 'none'})")
            if not (np.all(np.isfinite(b)) and np.all(np.asarray(b) > 0)) or np.shape(b)[-1] != column.ndep:
                raise ValueError(f"initial_b[{a!r}] must be finite, positive, (nlevel, {column.ndep})")
        try:
            s, tau, b, iters, dpops, stokes_lte = self._solve(column, wl, lte_run=False, initial_b=initial_b)
            if self.lte and stokes_lte is None:
                stokes_lte = self._solve(column, wl, lte_run=True)[0]
        except NlteConfigurationError:
            raise
        except Exception as exc:  # a numerical failure of this column
            return NlteResult.failed(wl, NLTE_CRASHED, f"Lightweaver failed: {type(exc).__name__}: {exc}",
                                     time.perf_counter() - t0)
        status, msg = NLTE_CONVERGED, ""
        if self.active and (not dpops <= self.pops_tol or not np.all(np.isfinite(s))):
            status, msg = NLTE_NOT_CONVERGED, f"not converged after {iters} iterations (dPops = {dpops:.3g})"
        return NlteResult(wl, s, stokes_lte, self._departures(column, tau, b), tau, b, status, iters, dpops,
                          time.perf_counter() - t0, msg)
