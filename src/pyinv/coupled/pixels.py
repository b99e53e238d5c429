"""Per-pixel models of a coupled inversion: the node parametrisation of the pixel solver, vectorised over
the pixels of a tile, and the engine calls (syntheses, node Jacobians, hydrostatic equilibrium).

The parametrisation is the one of ``fortran/nodes.f90`` and ``fortran/inversion.f90`` (spec-inversion
§2.2–§2.4, §3.5): a step δ (one value per free node of every slot) perturbs the current model by the
interpolated node changes,

* relative slots (T, vmic, B, vmac) and v_LOS (relative to v − v_off, v_off = min_depth(v) − 7 km/s):
  x ← x + F (a ∘ δ), a the node values (the depth average for one node);
* P_e (log slot): P_e ← P_e exp(F δ);
* angles (γ, φ): x ← x + F δ · 180/π (δ in radians);

with SIR's clipping of the node changes (relative: [−0.5, 1.5], one node [−0.5, 0.5]; P_e ±0.25; angles
±0.395 rad, γ kept inside [0, π] by halving), T ≥ 2500 K and B ≤ 0 → 1 G after the interpolation, and
P_e re-equilibrated hydrostatically (top boundary of the configuration) unless P_e is free. The node
Jacobian of a pixel (4, nλ, m) is the engine's (``pyinv.engine.inv_node_jacobian``, analytic response
functions compressed to the nodes, the hydrostatic coupling of T included, spectral PSF and
macroturbulence applied), in the same units and parameter order (slots T, Pe, vmic, B, vlos, γ, φ, vmac).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import engine

__all__ = ["NodeModel", "SLOT_KINDS", "clip_steps"]

#: kind of every inversion slot (pyinv.engine.INV_SLOTS order): "rel", "log", "off" (v − v_off), "angle"
SLOT_KINDS = ("rel", "log", "rel", "rel", "off", "angle", "angle", "rel")
#: SIR's limits of the trial models (fortran/inversion.f90)
T_MIN, MAX_ANGLE_STEP, VOFF = 2500.0, 0.395, 7.0e5
_IT, _IPE, _IB, _IV, _IGAM = 0, 1, 3, 4, 5
_RAD = 180.0 / np.pi


@dataclass
class NodeModel:
    """The node layout of one cycle and everything needed to synthesise, differentiate and perturb the
    models of many pixels (one component).

    Attributes
    ----------
    setup : pyinv.engine.Setup
        The synthesis set-up (:func:`pyinv.physics.inversion.prepare_synthesis`).
    log_tau : ndarray (ndep,)
    nodes : tuple of 8 int
        Node counts in pyinv.engine.INV_SLOTS order (vmac 0/1).
    interp : int
        Interpolation of the perturbations (0 splines, 1 linear).
    boundary, bvalue, mu, eps, sir_compat :
        Hydrostatic equilibrium of the trial models (as the pixel solver).
    """

    setup: engine.Setup
    log_tau: np.ndarray
    nodes: tuple
    interp: int
    boundary: int
    bvalue: float
    mu: float
    eps: np.ndarray
    sir_compat: bool = False
    bases: list = field(default_factory=list)
    index: list = field(default_factory=list)
    slices: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self.log_tau = np.asarray(self.log_tau, dtype=np.float64)
        self.nodes = tuple(int(n) for n in self.nodes)
        if len(self.nodes) != len(engine.INV_SLOTS):
            raise ValueError(f"nodes must hold {len(engine.INV_SLOTS)} counts (pyinv.engine.INV_SLOTS order)")
        self.bases, self.index, self.slices = [], [], []
        m = 0
        for v, n in enumerate(self.nodes):
            if n < 0:
                raise ValueError("node counts must be >= 0 (ties need two components, which the coupled "
                                 "inversion does not support)")
            if v == 7:
                n = min(n, 1)
            if n == 0:
                self.bases.append(None)
                self.index.append(None)
            elif v == 7:
                self.bases.append(np.ones((1, 1)))
                self.index.append(None)
            else:
                f, idx = engine.inv_node_basis(self.log_tau, n, mode=int(self.interp) % 2)
                self.bases.append(np.asarray(f))
                self.index.append(np.asarray(idx))
            self.slices.append(slice(m, m + n))
            m += n
        if m == 0:
            raise ValueError("the configuration's last cycle inverts nothing (all node counts are 0)")
        self.m = m
        #: Pe follows hydrostatic equilibrium unless it is free (component 1, as the pixel solver)
        self.he = 1 if self.nodes[_IPE] == 0 else 0
        self.eos_compat = bool(self.setup.options.get("eos_sir_compat", False))

    @property
    def ndep(self) -> int:
        return int(self.log_tau.size)

    @property
    def nw(self) -> int:
        return int(self.setup.nw)

    def slot_of_parameter(self) -> np.ndarray:
        """(m,) slot index (0..7) of every parameter."""
        out = np.zeros(self.m, dtype=int)
        for v, sl in enumerate(self.slices):
            out[sl] = v
        return out

    # ------------------------------------------------------------------------------------------ nodes
    def voff(self, x: np.ndarray) -> np.ndarray:
        """(npix,) velocity offset v_off = min over depth of v − 7 km/s (0 when v is not free)."""
        if self.nodes[_IV] == 0:
            return np.zeros(x.shape[0])
        return np.min(x[:, :, _IV], axis=1) - VOFF

    def node_values(self, x: np.ndarray, vmac: np.ndarray) -> list:
        """Per slot the node values a (npix, n) at the models ``x (npix, ndep, 7)``: the column at the
        node grid points (the depth mean for one node), v − v_off for v_LOS, radians for angles; vmac its
        value; None for fixed slots."""
        out = []
        voff = self.voff(x)
        for v, n in enumerate(self.nodes):
            if self.bases[v] is None:
                out.append(None)
                continue
            if v == 7:
                out.append(np.asarray(vmac, dtype=np.float64)[:, None].copy())
                continue
            col = x[:, :, v]
            a = col.mean(axis=1, keepdims=True) if n == 1 else col[:, self.index[v]]
            if SLOT_KINDS[v] == "off":
                a = a - voff[:, None]
            elif SLOT_KINDS[v] == "angle":
                a = a / _RAD
            out.append(np.array(a, dtype=np.float64))
        return out

    def node_vector(self, x: np.ndarray, vmac: np.ndarray) -> np.ndarray:
        """Node values of every free parameter (npix, m), parameter order."""
        return np.concatenate([a for a in self.node_values(x, vmac) if a is not None], axis=1)

    def secant_update(self, jac: np.ndarray, x_old: np.ndarray, vmac_old: np.ndarray, x_new: np.ndarray,
                      vmac_new: np.ndarray, dsyn: np.ndarray, pixels: np.ndarray) -> None:
        """Broyden's rank-one update of the Jacobians ``jac (npix, nchan, m)`` of ``pixels`` after an accepted
        step from ``x_old`` to ``x_new`` that changed their profiles by ``dsyn (npix, nchan)`` (pyinv's
        Jacobian reuse of the pixel solver, fortran/nodes.f90 secant_step/secant_update): the columns are
        first expressed in the new model's step variables (relative slots scaled by a_new / a_old, v_off
        taken from the new model), then J ← J + (ΔS − J δ) δᵀ / δᵀδ with δ the step actually taken."""
        if len(pixels) == 0:
            return
        a_old = self.node_vector(x_old[pixels], vmac_old[pixels])
        a_new = self.node_vector(x_new[pixels], vmac_new[pixels])
        shift = np.zeros_like(a_old)
        if self.bases[_IV] is not None:
            dv = self.voff(x_old[pixels]) - self.voff(x_new[pixels])
            shift[:, self.slices[_IV]] = dv[:, None]
        kinds = np.array([SLOT_KINDS[v] for v in self.slot_of_parameter()])
        rel = np.isin(kinds, ("rel", "off"))
        scale = np.ones_like(a_old)
        delta = a_new - a_old
        with np.errstate(divide="ignore", invalid="ignore"):
            scale[:, rel] = a_new[:, rel] / a_old[:, rel]
            delta[:, rel] = (a_new[:, rel] - (a_old[:, rel] + shift[:, rel])) / a_new[:, rel]
            logk = kinds == "log"
            delta[:, logk] = np.log(a_new[:, logk] / a_old[:, logk])
        good = np.all(np.isfinite(scale) & np.isfinite(delta), axis=1)
        dd = np.sum(delta * delta, axis=1)
        good &= dd > 0
        idx = np.asarray(pixels)[good]
        if idx.size == 0:
            return
        j = jac[idx].astype(np.float64) * scale[good][:, None, :]
        d = delta[good]
        r = dsyn[idx] - np.einsum("pcm,pm->pc", j, d)
        j += r[:, :, None] * (d / dd[good][:, None])[:, None, :]
        jac[idx] = j

    # ------------------------------------------------------------------------------------------ trials
    def trial(self, x: np.ndarray, vmac: np.ndarray, delta: np.ndarray, clip: bool = True):
        """Trial models of the step ``delta (npix, m)`` from ``x (npix, ndep, 7)``, ``vmac (npix,)``:
        SIR's clipping (``clip``), the interpolated perturbations and hydrostatic P_e.

        Returns ``xt, vmact, ok``: ``ok (npix,)`` False where the trial model is not usable (not finite,
        T ≤ 0, hydrostatic equilibrium failed); those pixels keep ``x`` and ``vmac``.
        """
        x = np.asarray(x, dtype=np.float64)
        npix = x.shape[0]
        d = np.asarray(delta, dtype=np.float64).reshape(npix, self.m)
        xt = np.array(x, copy=True)
        vt = np.array(vmac, dtype=np.float64, copy=True)
        a_all = self.node_values(x, vmac)
        for v, n in enumerate(self.nodes):
            f = self.bases[v]
            if f is None:
                continue
            r = d[:, self.slices[v]]
            a = a_all[v]
            kind = SLOT_KINDS[v]
            if clip:
                r = clip_steps(r, kind, a if v == _IGAM else None, n if v != 7 else 1)
            if v == 7:
                vt = vt * (1.0 + r[:, 0])
                continue
            if kind in ("rel", "off"):
                xt[:, :, v] = x[:, :, v] + (r * a) @ f.T
            elif kind == "log":
                sh = r @ f.T
                if clip:
                    sh = np.clip(sh, -0.25, 0.25)
                xt[:, :, v] = x[:, :, v] * np.exp(sh)
            else:
                xt[:, :, v] = x[:, :, v] + _RAD * (r @ f.T)
        if clip:
            xt[:, :, _IT] = np.maximum(xt[:, :, _IT], T_MIN)
            if self.bases[_IB] is not None:
                xt[:, :, _IB] = np.where(xt[:, :, _IB] <= 0.0, 1.0, xt[:, :, _IB])
        ok = np.all(np.isfinite(xt), axis=(1, 2)) & np.isfinite(vt) & np.all(xt[:, :, _IT] > 0, axis=1)
        if self.he:
            for p in np.flatnonzero(ok):
                try:
                    pe, *_ = engine.hydrostatic_arrays(self.log_tau, xt[p, :, _IT], float(x[p, -1, _IPE]),
                                                       self.boundary, self.bvalue, self.mu, self.eps,
                                                       self.eos_compat, pe_guess=x[p, :, _IPE])
                except ValueError:
                    ok[p] = False
                    continue
                if np.all(np.isfinite(pe)) and np.all(pe > 0):
                    xt[p, :, _IPE] = pe
                else:
                    ok[p] = False
        xt[~ok] = x[~ok]
        vt[~ok] = np.asarray(vmac, dtype=np.float64)[~ok]
        return xt, vt, ok

    # ------------------------------------------------------------------------------------------ engine
    def synthesize(self, x: np.ndarray, vmac: np.ndarray, pixels=None, out: np.ndarray | None = None):
        """Stokes profiles (npix, 4, nλ) of the models (the set-up's spectral PSF and macroturbulence
        applied); ``pixels``: only those (the others of ``out`` untouched). Returns ``(stokes, ok)``."""
        npix = x.shape[0]
        s = np.zeros((npix, 4, self.nw)) if out is None else out
        ok = np.ones(npix, dtype=bool)
        todo = range(npix) if pixels is None else pixels
        for p in todo:
            try:
                st, _ = engine.synth_stokes(self.setup, self.log_tau, x[p], float(vmac[p]))
            except ValueError:
                ok[p] = False
                continue
            if np.all(np.isfinite(st)):
                s[p] = st
            else:
                ok[p] = False
        return s, ok

    def jacobian(self, x: np.ndarray, vmac: np.ndarray, out: np.ndarray, channels: np.ndarray | None = None) -> np.ndarray:
        """Node Jacobians of the models into ``out (npix, nchan, m)`` (any float dtype; d stokes / d δ in
        the units of the step; ``channels``: the rows of the flattened (4·nλ) profiles kept, default all);
        returns ``ok (npix,)`` (False: the engine failed, zero block)."""
        npix = x.shape[0]
        ok = np.ones(npix, dtype=bool)
        for p in range(npix):
            try:
                jac = engine.inv_node_jacobian(self.setup, self.log_tau, x[p], float(vmac[p]), list(self.nodes),
                                               interp=int(self.interp) % 2, he=self.he, boundary=self.boundary,
                                               bvalue=self.bvalue, mu=self.mu, jac_mode=engine.JAC_ANALYTIC,
                                               maxm=max(self.m, 1))
            except ValueError:
                ok[p] = False
                out[p] = 0.0
                continue
            if jac.shape[2] != self.m or not np.all(np.isfinite(jac)):
                ok[p] = False
                out[p] = 0.0
                continue
            j = jac.reshape(4 * self.nw, self.m)
            out[p] = j if channels is None else j[channels]
        return ok


def clip_steps(r: np.ndarray, kind: str, gamma: np.ndarray | None, n: int) -> np.ndarray:
    """SIR's clipping of the node changes ``r (npix, n)`` of one slot (spec-inversion §3.5): relative
    changes to [−0.5, 1.5] ([−0.5, 0.5] for one node), P_e to ±0.25, angles to ±0.395 rad with the
    inclination's node values ``gamma`` (radians) kept inside [0, π] by halving the way to the bound."""
    r = np.array(r, dtype=np.float64, copy=True)
    if kind in ("rel", "off"):
        return np.clip(r, -0.5, 1.5 if n >= 2 else 0.5)
    if kind == "log":
        return np.clip(r, -0.25, 0.25)
    if gamma is not None:
        g = gamma
        r = np.where((g + r < 0.0) & (r < 0.0), -g / 2.0, r)
        r = np.where(g + r > np.pi, (np.pi - g) / 2.0, r)
    return np.clip(r, -MAX_ANGLE_STEP, MAX_ANGLE_STEP)
