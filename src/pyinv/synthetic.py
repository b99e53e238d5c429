"""Seedable synthetic Hinode-SP-like active-region maps (issue 6): training data, tests, demo, benchmarks.

:func:`generate_map` builds an ``size × size`` map of a sunspot (umbra, penumbra), plage patches of both
polarities and quiet Sun, with smooth spatial structure, from the packaged atmosphere library
(:mod:`pyinv.models`: HSRA, FAL H, penumjti, cool, mmaltby). Every pixel gets a stratified model:

* T(log τ): the library models of its region mixed with smooth spatial weights, plus a smooth
  perturbation linear in log τ (≈ ±80 K); Pe from hydrostatic equilibrium at the map's μ
  (:func:`pyinv.hydrostatic`, top Pe mixed from the library models in log);
* the field (B, local inclination, azimuth) and the flows as *local* (solar-frame) vectors: vertical
  umbral field, inclined radial penumbral field with a horizontal radial Evershed outflow, near-vertical
  plage of either polarity, weak inclined quiet-Sun field with granulation-like vertical flows; B and the
  flows vary linearly with log τ, the inclination mildly;
* vmic and the macroturbulence per region, smoothly varying.

At ``mu < 1`` the line of sight is tilted by θ = arccos μ towards +x: the flows and fields are projected
on the line of sight (vlos = −v·n, n = (sin θ, 0, μ) the unit vector towards the observer, vlos > 0 =
redshift; γ and φ of the field measured from n, φ from the projected +x axis), and the hydrostatic
equilibrium uses g_eff = μ g (as SIR, :func:`pyinv.hydrostatic` with ``mu``).

The profiles are synthesised with pyinv on the Hinode SP sampling (:func:`pyinv.models.hinode_grid`:
Fe I 6301.5/6302.5 Å, 112 points of 21.549 mÅ), convolved with a Gaussian spectral PSF of 25.2 mÅ
FWHM (:func:`hinode_psf`, spec-data-defaults §5), and given Gaussian noise of σ = 1e-3 of the
quiet-Sun continuum in all four Stokes parameters.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["SyntheticMap", "generate_map", "generate_emerging_region", "generate_quiet_plage", "hinode_psf", "REGIONS",
           "EMERGING_REGIONS", "QUIET_PLAGE_REGIONS"]

#: Region labels of :attr:`SyntheticMap.labels`.
REGIONS = ("quiet", "plage", "penumbra", "umbra")


def hinode_psf(fwhm_mA: float = 25.2, step_mA: float = 1.0) -> np.ndarray:
    """Gaussian spectral PSF of ``fwhm_mA`` as an array (2, n) of (offset mÅ, response), ±3 FWHM."""
    half = 3.0 * fwhm_mA
    x = np.arange(-half, half + 0.5 * step_mA, step_mA)
    s = fwhm_mA / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    return np.stack([x, np.exp(-0.5 * (x / s) ** 2)])


@dataclass
class SyntheticMap:
    """A generated map and its truth.

    Attributes
    ----------
    cube : ndarray (ny, nx, 4, nλ)
        Noisy Stokes profiles normalised to the HSRA disk-centre continuum (pyinv's convention).
    truth : ndarray (ny, nx, ndep, 11)
        The model atmospheres along the line of sight (SIR columns, Pe/Pg/ρ/z from hydrostatic
        equilibrium at μ).
    macro : ndarray (ny, nx)
        Macroturbulence [km/s].
    labels : ndarray of int (ny, nx)
        Dominant region (index into :data:`REGIONS`).
    mu, seed, noise : float, int, float
    lines, grid : LineList, WavelengthGrid
    psf : ndarray (2, n)
    ic_quiet : float
        Mean continuum of the quiet-Sun pixels (noise-free), in HSRA units.
    """

    cube: np.ndarray
    truth: np.ndarray
    macro: np.ndarray
    labels: np.ndarray
    mu: float
    seed: int
    noise: float
    lines: Any
    grid: Any
    psf: np.ndarray
    ic_quiet: float
    info: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.cube.shape[0]), int(self.cube.shape[1])

    def truth_map(self, name: str, log_tau: float = 0.0) -> np.ndarray:
        """A (ny, nx) map of a truth column at ``log_tau`` (linear in log τ), like
        :meth:`pyinv.InversionResult.map`: the column's name (old spellings such as ``inclination`` with a
        DeprecationWarning, :data:`pyinv.atmosphere.QUANTITY_ALIASES`)."""
        from .atmosphere import COLUMNS, canonical_name

        key = canonical_name(name, "map", known=COLUMNS)
        if key not in COLUMNS[1:]:
            raise KeyError(f"unknown truth map {name!r}; expected one of {COLUMNS[1:]}")
        col = COLUMNS.index(key)
        lt = self.truth[0, 0, :, 0]
        val = self.truth[..., col]
        return np.apply_along_axis(lambda v: np.interp(log_tau, lt[::-1], v[::-1]), -1, val)


def _smooth_field(rng: np.random.Generator, n: int, corr: float) -> np.ndarray:
    """Zero-mean unit-variance Gaussian random field (n, n) with correlation length ``corr`` pixels."""
    sig = max(corr, 0.5)
    k = np.fft.fftfreq(n)
    g = np.exp(-2.0 * (np.pi * sig) ** 2 * (k[:, None] ** 2 + k[None, :] ** 2))  # periodic Gaussian filter
    f = np.real(np.fft.ifft2(np.fft.fft2(rng.standard_normal((n, n))) * g))
    s = f.std()
    return (f - f.mean()) / (s if s > 0 else 1.0)


def _map_inputs(size: int, mu: float, lines: Any, grid: Any, psf: Any) -> tuple:
    """Validated map size and μ, and the line list, grid and PSF of a generated map (Hinode SP defaults)."""
    from . import models
    from .defaults import default_lines

    n = int(size)
    if n < 4:
        raise ValueError(f"size must be >= 4, got {size}")
    mu = float(mu)
    if not 0.0 < mu <= 1.0:
        raise ValueError(f"mu must be in (0, 1], got {mu}")
    lines = default_lines() if lines is None else lines
    grid = models.hinode_grid(lines) if grid is None else grid
    psf_arr = hinode_psf() if isinstance(psf, str) and psf == "hinode" else psf
    return n, mu, lines, grid, psf_arr


def generate_map(size: int = 64, seed: int = 0, *, mu: float = 1.0, noise: float = 1e-3, lines: Any = None,
                 grid: Any = None, psf: Any = "hinode", spot_polarity: int | None = None) -> SyntheticMap:
    """Generate a Hinode-SP-like active-region map (see the module docstring).

    Parameters
    ----------
    size : int
        Map side in pixels (ny = nx = size; ≥ 4). The features scale with the map, so small maps still
        hold umbra, penumbra, plage and quiet Sun.
    seed : int
        Everything (geometry, polarities, perturbations, noise) follows from it.
    mu : float
        Heliocentric cosine of the map (0 < μ ≤ 1): line-of-sight projection and hydrostatics.
    noise : float
        σ of the Gaussian noise in units of the quiet-Sun continuum (0 = none).
    lines, grid : LineList, WavelengthGrid, optional
        Default: the packaged lines and the Hinode SP grid.
    psf : "hinode", array (2, n) or None
        Spectral PSF (default the 25.2 mÅ Gaussian).
    spot_polarity : +1, -1 or None
        Polarity of the spot (None: from the seed). Plage patches get both polarities.
    """
    from . import models

    n, mu, lines, grid, psf_arr = _map_inputs(size, mu, lines, grid, psf)
    rng = np.random.default_rng(seed)

    # ---------------------------------------------------------------- geometry (unit square)
    yy, xx = (np.mgrid[0:n, 0:n] + 0.5) / n
    cx, cy = 0.5 + rng.uniform(-0.1, 0.1), 0.5 + rng.uniform(-0.1, 0.1)
    pol = int(spot_polarity) if spot_polarity is not None else (1 if rng.uniform() < 0.5 else -1)
    ru = rng.uniform(0.10, 0.14)
    rp = ru + rng.uniform(0.10, 0.14)
    dx, dy = xx - cx, yy - cy
    ang = np.arctan2(dy, dx)
    # slightly irregular boundaries
    wob = 1.0 + 0.12 * np.sin(3 * ang + rng.uniform(0, 2 * np.pi)) + 0.06 * np.sin(5 * ang + rng.uniform(0, 6.3))
    r = np.hypot(dx, dy) / wob
    edge = 0.35 / n + 0.01  # smooth transitions over ~a pixel
    sig = lambda z: 1.0 / (1.0 + np.exp(-z))  # noqa: E731
    w_spot = sig((rp - r) / edge)
    w_umb = sig((ru - r) / edge)
    w_pen = np.clip(w_spot - w_umb, 0, 1)
    corr = max(n / 10.0, 1.0)
    plage_field = _smooth_field(rng, n, corr * 1.2)
    pol_field = _smooth_field(rng, n, corr * 1.5)
    w_pl = sig((plage_field - 0.5) / 0.25) * (1 - w_spot)
    w_q = np.clip(1 - w_spot - w_pl, 0, 1)
    W = np.stack([w_q, w_pl, w_pen, w_umb])  # (4, n, n)
    W /= W.sum(axis=0)
    labels = np.argmax(W, axis=0)
    rn_pen = np.clip((r - ru) / (rp - ru), 0, 1)  # 0 at umbra edge → 1 at spot edge

    # ---------------------------------------------------------------- thermodynamics
    lib = {k: models.load(k) if k != "hsra" else models.hsra() for k in models.names()}
    lt = np.asarray(lib["hsra"].log_tau)
    nd = lt.size
    mix_umb = np.clip(0.5 + 0.5 * _smooth_field(rng, n, corr), 0, 1)  # cool ↔ mmaltby
    T_q, T_pl, T_pen = (np.asarray(lib[k].T) for k in ("hsra", "falh", "penumjti"))
    T_umb = (mix_umb[..., None] * np.asarray(lib["cool"].T) + (1 - mix_umb[..., None]) * np.asarray(lib["mmaltby"].T))
    lpe = {k: np.log(np.asarray(lib[k].Pe)[-1]) for k in lib}
    T = (W[0, ..., None] * T_q + W[1, ..., None] * T_pl + W[2, ..., None] * T_pen + W[3, ..., None] * T_umb)
    dT0 = 60.0 * _smooth_field(rng, n, corr * 0.5)   # granulation-like contrast at log τ = 0
    dT1 = 25.0 * _smooth_field(rng, n, corr)         # gradient per unit log τ
    T = T + (dT0[..., None] + dT1[..., None] * lt) * (1 - 0.7 * W[3, ..., None])
    pe_top = np.exp(W[0] * lpe["hsra"] + W[1] * lpe["falh"] + W[2] * lpe["penumjti"] +
                    W[3] * (mix_umb * lpe["cool"] + (1 - mix_umb) * lpe["mmaltby"]))

    # ---------------------------------------------------------------- field and flows (local frame)
    deg = np.pi / 180.0
    # umbra: strong, near-vertical, slightly fanning out
    B_umb = (2600 + 300 * _smooth_field(rng, n, corr)) * (1 - 0.25 * np.clip(r / ru, 0, 1))
    th_umb = 5 + 25 * np.clip(r / ru, 0, 1)
    # penumbra: weaker, inclined, radial
    B_pen = 1900 - 900 * rn_pen + 100 * _smooth_field(rng, n, corr)
    th_pen = 40 + 45 * rn_pen + 8 * _smooth_field(rng, n, corr * 0.5)
    # plage: kG, near vertical, polarity from a smooth field
    B_pl = 1100 + 250 * _smooth_field(rng, n, corr)
    th_pl = 15 + 10 * _smooth_field(rng, n, corr)
    pl_sign = np.where(pol_field > 0, 1.0, -1.0)
    # quiet Sun: weak, inclined, random
    B_q = np.clip(150 + 80 * _smooth_field(rng, n, corr * 0.7), 20, None)
    th_q = 90 + 45 * np.tanh(_smooth_field(rng, n, corr * 0.7))
    az_q = np.pi * _smooth_field(rng, n, corr)
    az_pl = np.pi * _smooth_field(rng, n, corr)

    def vec(B, th, az, sign=1.0):
        th = np.where(sign > 0, th, 180.0 - th) * deg
        return np.stack([B * np.sin(th) * np.cos(az), B * np.sin(th) * np.sin(az), B * np.cos(th)])

    spot_th_sign = 1.0 if pol > 0 else -1.0
    Bvec = (W[0] * vec(B_q, th_q, az_q) + W[1] * vec(B_pl, th_pl, az_pl, pl_sign) +
            W[2] * vec(B_pen, th_pen, ang, spot_th_sign) + W[3] * vec(B_umb, th_umb, ang, spot_th_sign))
    # vertical velocity (up > 0) and horizontal radial Evershed flow [cm/s]
    vz = (W[0] * 1.0e5 * _smooth_field(rng, n, corr * 0.5) + W[1] * (-0.3e5) + W[2] * 0.2e5 * _smooth_field(rng, n, corr)
          + W[3] * 0.1e5 * _smooth_field(rng, n, corr))
    v_ev = W[2] * (1.5e5 + 1.0e5 * rn_pen)
    # depth dependence: factor (1 + g log τ) for B and flows, inclination drifts a few degrees
    gB = 0.12 + 0.04 * _smooth_field(rng, n, corr)
    gv = 0.25
    fB = np.clip(1.0 + gB[..., None] * lt, 0.3, None)             # (n, n, nd)
    fv = np.clip(1.0 + gv * lt, 0.1, None)                         # (nd,)
    Bx = Bvec[0][..., None] * fB
    By = Bvec[1][..., None] * fB
    Bz = Bvec[2][..., None] * fB
    # mild inclination change with depth: tilt the horizontal part
    tilt = 1.0 + 0.05 * lt
    Bx, By = Bx * tilt, By * tilt
    vx = (v_ev * np.cos(ang))[..., None] * fv
    vzz = vz[..., None] * fv

    vmic_map = (W[0] * 1.0e5 + W[1] * 1.2e5 + W[2] * 1.0e5 + W[3] * 0.5e5) * (1 + 0.15 * _smooth_field(rng, n, corr))
    macro = np.clip((W[0] * 1.0 + W[1] * 1.2 + W[2] * 0.9 + W[3] * 0.5)
                    * (1 + 0.15 * _smooth_field(rng, n, corr)), 0.1, None)
    return _observe(rng, n, lt, T, pe_top, (Bx, By, Bz), (vx, 0.0, vzz), vmic_map, macro, labels, mu, noise, lines,
                    grid, psf_arr, seed,
                    {"generator": "sunspot", "spot_polarity": pol, "centre": [float(cx), float(cy)],
                     "r_umbra": float(ru), "r_penumbra": float(rp),
                     "region_fractions": {REGIONS[k]: float((labels == k).mean()) for k in range(4)}})


def _observe(rng, n, lt, T, pe_top, Bloc, vloc, vmic_map, macro, labels, mu, noise, lines, grid, psf_arr, seed,
             info) -> SyntheticMap:
    """Project local (solar-frame) fields and flows on the line of sight tilted by arccos μ towards +x,
    build the atmospheres (Pe from hydrostatic equilibrium at μ), synthesise, add noise."""
    from .atmosphere import Atmosphere
    from .physics.synthesis import synthesize
    from .physics.thermo import hydrostatic

    Bx, By, Bz = Bloc
    vx, vy, vzz = vloc
    nd = lt.size
    st = np.sqrt(max(0.0, 1.0 - mu * mu))
    B_los = Bx * st + Bz * mu
    B_e1 = Bx * mu - Bz * st
    B_e2 = By
    Bmag = np.sqrt(Bx ** 2 + By ** 2 + Bz ** 2)
    gamma = np.degrees(np.arccos(np.clip(B_los / np.maximum(Bmag, 1e-9), -1, 1)))
    phi = np.mod(np.degrees(np.arctan2(B_e2, B_e1)), 180.0)  # 180° ambiguity: keep [0, 180)
    vlos = -(vx * st + vzz * mu)
    vmic = np.clip(vmic_map, 2e4, None)[..., None] * (1.0 - 0.03 * lt)

    npix = n * n
    arr = np.zeros((npix, nd, 11))
    arr[:, :, 0] = lt
    arr[:, :, 1] = T.reshape(npix, nd)
    arr[:, :, 2] = np.exp(np.log(pe_top).reshape(npix, 1)) * np.ones(nd)  # placeholder; top value used by HE
    arr[:, :, 3] = vmic.reshape(npix, nd)
    arr[:, :, 4] = Bmag.reshape(npix, nd)
    arr[:, :, 5] = np.broadcast_to(vlos, (n, n, nd)).reshape(npix, nd)
    arr[:, :, 6] = gamma.reshape(npix, nd)
    arr[:, :, 7] = phi.reshape(npix, nd)
    stack = Atmosphere.from_array(arr, macro=macro.reshape(-1))
    stack = hydrostatic(stack, mu=mu)
    truth = stack.to_array()
    prof = np.asarray(synthesize(stack, lines, grid, psf=psf_arr))  # (npix, 4, nλ)
    clean = prof.reshape(n, n, 4, grid.nwav)
    qs = labels == 0
    icont = clean[..., 0, :].max(axis=-1)
    ic_q = float(icont[qs].mean()) if qs.any() else float(np.median(icont))
    cube = clean.copy()
    if noise > 0:
        cube += rng.standard_normal(cube.shape) * (noise * ic_q)
    return SyntheticMap(cube=cube, truth=truth.reshape(n, n, nd, 11), macro=macro, labels=labels, mu=mu,
                        seed=int(seed), noise=float(noise), lines=lines, grid=grid, psf=psf_arr, ic_quiet=ic_q,
                        info=info)


#: Region labels of :func:`generate_emerging_region` maps (label 0 is the quiet Sun, as in :data:`REGIONS`).
EMERGING_REGIONS = ("quiet", "footpoint+", "footpoint-", "emerging")


def generate_emerging_region(size: int = 32, seed: int = 0, *, mu: float = 1.0, noise: float = 1e-3,
                             lines: Any = None, grid: Any = None, psf: Any = "hinode") -> SyntheticMap:
    """A bipolar emerging flux region: the second generator family, kept apart from every training recipe
    (:mod:`pyinv.cnn.recipes`) to test whether CNN models transfer to structures they never saw.

    Spatial structure and stratifications that :func:`generate_map` never produces:

    * two footpoints of opposite polarity (pores: T mixed between FAL-H-like plage and the penumbral
      model, a cooler stratification at depth than the quiet Sun), 1.2–2.2 kG near-vertical field fanning
      out away from each pole, downflows of 1–2.5 km/s (redshift) growing with depth;
    * between them the emerging loop tops: a horizontal field of 300–900 G along the axis joining the
      poles, B *increasing* with height (generate_map's fields all weaken upwards), upflows of
      1–3 km/s (blueshift) that weaken with height, and elongated granulation with an upper atmosphere
      cooled by up to 250 K (adiabatic expansion of the rising flux);
    * quiet Sun elsewhere: HSRA with granulation-like ±60 K contrast, weak (< 200 G) inclined fields.

    Parameters as :func:`generate_map`. ``labels`` index :data:`EMERGING_REGIONS`.
    """
    from . import models

    n, mu, lines, grid, psf_arr = _map_inputs(size, mu, lines, grid, psf)
    rng = np.random.default_rng([int(seed), 7])  # another stream than generate_map's for the same seed

    yy, xx = (np.mgrid[0:n, 0:n] + 0.5) / n
    ax = rng.uniform(0, np.pi)                       # orientation of the bipole axis
    half = rng.uniform(0.18, 0.26)                   # half separation of the poles
    cx, cy = 0.5 + rng.uniform(-0.05, 0.05), 0.5 + rng.uniform(-0.05, 0.05)
    e = np.array([np.cos(ax), np.sin(ax)])
    p1 = np.array([cx, cy]) + half * e
    p2 = np.array([cx, cy]) - half * e
    rfp = rng.uniform(0.08, 0.11)                    # footpoint radius
    d1 = np.hypot(xx - p1[0], yy - p1[1])
    d2 = np.hypot(xx - p2[0], yy - p2[1])
    along = (xx - cx) * e[0] + (yy - cy) * e[1]      # coordinate along the axis
    across = -(xx - cx) * e[1] + (yy - cy) * e[0]
    width = rng.uniform(0.14, 0.2)
    w1 = np.exp(-0.5 * (d1 / rfp) ** 2)
    w2 = np.exp(-0.5 * (d2 / rfp) ** 2)
    w_em = np.exp(-0.5 * (across / width) ** 2) * np.clip(1 - (np.abs(along) / half) ** 4, 0, 1) * (1 - w1) * (1 - w2)
    w_q = np.clip(1 - w1 - w2 - w_em, 0, 1)
    W = np.stack([w_q, w1, w2, w_em])
    W /= W.sum(axis=0)
    labels = np.argmax(W, axis=0)
    corr = max(n / 10.0, 1.0)

    lib = {k: models.load(k) if k != "hsra" else models.hsra() for k in models.names()}
    lt = np.asarray(lib["hsra"].log_tau)
    T_q = np.asarray(lib["hsra"].T)
    mix = np.clip(0.5 + 0.3 * _smooth_field(rng, n, corr), 0, 1)[..., None]
    T_fp = mix * np.asarray(lib["falh"].T) + (1 - mix) * np.asarray(lib["penumjti"].T)
    lpe = {k: np.log(np.asarray(lib[k].Pe)[-1]) for k in lib}
    # elongated granulation along the axis in the emerging zone, round granulation elsewhere
    gran = _smooth_field(rng, n, corr * 0.4)
    stripes = np.cos(2 * np.pi * across / (width * 0.7) + rng.uniform(0, 6.3)) * (0.6 + 0.4 * _smooth_field(rng, n, corr))
    dT0 = 60.0 * ((1 - W[3]) * gran + W[3] * stripes)
    cool_top = W[3][..., None] * rng.uniform(150, 250) * np.clip(-lt / 4.0, 0, 1)[None, None, :]   # 0 at log τ ≥ 0
    Tfp = W[1][..., None] + W[2][..., None]
    T = (1 - Tfp) * T_q + Tfp * T_fp + dT0[..., None] * (1 - 0.5 * Tfp) - cool_top
    pe_top = np.exp((1 - Tfp[..., 0]) * lpe["hsra"] + Tfp[..., 0] * (mix[..., 0] * lpe["falh"]
                                                                    + (1 - mix[..., 0]) * lpe["penumjti"]))

    deg = np.pi / 180.0
    Bfp = rng.uniform(1200, 2200) * (1 + 0.1 * _smooth_field(rng, n, corr))
    # footpoints: vertical at the core, fanning out radially away from the pole
    def pole(p, sign, d):
        th = np.clip(10 + 50 * d / (2 * rfp), 0, 70) * deg
        ang = np.arctan2(yy - p[1], xx - p[0])
        return np.stack([Bfp * np.sin(th) * np.cos(ang), Bfp * np.sin(th) * np.sin(ang), sign * Bfp * np.cos(th)])
    B1, B2 = pole(p1, 1.0, d1), pole(p2, -1.0, d2)
    # emerging zone: horizontal field from the + pole to the - pole (along -e), slightly arched
    Bem = rng.uniform(300, 900) * (1 + 0.2 * _smooth_field(rng, n, corr))
    tilt = 15 * np.tanh(along / half) * deg  # rises on one side, dips on the other
    Bhx, Bhy = -e[0] * Bem * np.cos(tilt), -e[1] * Bem * np.cos(tilt)
    Bhz = Bem * np.sin(tilt)
    Bq = np.clip(100 + 60 * _smooth_field(rng, n, corr * 0.7), 10, 200)
    thq = (90 + 40 * np.tanh(_smooth_field(rng, n, corr))) * deg
    azq = np.pi * _smooth_field(rng, n, corr)
    Bqv = np.stack([Bq * np.sin(thq) * np.cos(azq), Bq * np.sin(thq) * np.sin(azq), Bq * np.cos(thq)])
    Bv = W[0] * Bqv + W[1] * B1 + W[2] * B2 + W[3] * np.stack([Bhx, Bhy, Bhz])
    # depth dependence: footpoints weaken upwards, the emerging field strengthens upwards
    f_fp = np.clip(1.0 + 0.15 * lt, 0.3, None)
    f_em = np.clip(1.0 - 0.12 * lt, 0.3, None)
    wfp = (W[1] + W[2])[..., None]
    wem = W[3][..., None]
    fB = (1 - wfp - wem) + wfp * f_fp + wem * f_em
    Bx, By, Bz = (Bv[i][..., None] * fB for i in range(3))
    # flows (up > 0): downflows at the footpoints (stronger deeper), upflows in the emerging zone (weaker higher)
    vdown = rng.uniform(1.0e5, 2.5e5)
    vup = rng.uniform(1.0e5, 3.0e5) * (1 + 0.2 * _smooth_field(rng, n, corr))
    vq = 0.8e5 * gran
    vz = ((W[0] * vq)[..., None] * np.clip(1 + 0.25 * lt, 0.1, None)
          - ((W[1] + W[2]) * vdown)[..., None] * np.clip(1 - 0.2 * lt, 0.2, None)
          + (W[3] * vup)[..., None] * np.clip(1 + 0.2 * lt, 0.1, None))
    vmic_map = (W[0] * 1.0e5 + (W[1] + W[2]) * 0.8e5 + W[3] * 1.3e5) * (1 + 0.15 * _smooth_field(rng, n, corr))
    macro = np.clip((W[0] * 1.0 + (W[1] + W[2]) * 0.7 + W[3] * 1.5) * (1 + 0.15 * _smooth_field(rng, n, corr)),
                    0.1, None)
    return _observe(rng, n, lt, T, pe_top, (Bx, By, Bz), (0.0, 0.0, vz), vmic_map, macro, labels, mu, noise, lines,
                    grid, psf_arr, seed,
                    {"generator": "emerging_region", "axis_deg": float(np.degrees(ax)), "half_separation": float(half),
                     "region_fractions": {EMERGING_REGIONS[k]: float((labels == k).mean()) for k in range(4)}})


#: Region labels of :func:`generate_quiet_plage` maps (label 0 is the quiet Sun, as in :data:`REGIONS`).
QUIET_PLAGE_REGIONS = ("granule", "lane", "flux tube")


def _cells(rng: np.random.Generator, n: int, ncell: int) -> tuple[np.ndarray, np.ndarray]:
    """A periodic Voronoi tessellation of the n×n map with ``ncell`` cells: the distance of each pixel to
    its cell centre over the cell's size (0 at the centre, ~1 at the boundary) and the distance to the
    nearest boundary in pixels (half the gap between the two nearest centres)."""
    pts = rng.uniform(0, n, (ncell, 2))
    yy, xx = np.mgrid[0:n, 0:n] + 0.5
    d = []
    for sx in (-n, 0, n):
        for sy in (-n, 0, n):
            d.append(np.hypot(xx[..., None] - (pts[:, 0] + sx), yy[..., None] - (pts[:, 1] + sy)))
    d = np.min(np.stack(d), axis=0)                     # (n, n, ncell) periodic distances
    two = np.sort(d, axis=-1)[..., :2]
    edge = 0.5 * (two[..., 1] - two[..., 0])            # distance to the boundary with the nearest neighbour cell
    size = np.sqrt(n * n / ncell) / 2.0
    return np.clip(two[..., 0] / size, 0, 1.5), edge


def generate_quiet_plage(size: int = 32, seed: int = 0, *, mu: float = 1.0, noise: float = 1e-3,
                         lines: Any = None, grid: Any = None, psf: Any = "hinode",
                         plage_fraction: float = 0.5) -> SyntheticMap:
    """Quiet Sun and plage with granulation: the third generator family (issue 17), never used by a training
    recipe (:mod:`pyinv.cnn.recipes`) nor to tune the assisted cycle, for testing transfer.

    * **Granulation** as a cellular pattern (periodic Voronoi cells of ~6 pixels, about 1 Mm on Hinode SP
      sampling) with the T–v correlation of convection: granule centres hot (up to +250 K at log τ = 0)
      and rising (blueshift up to 2 km/s), intergranular lanes cool (−300 K) and sinking (redshift up to
      2.5 km/s); the temperature contrast fades with height and reverses above log τ ≈ −1.5 (reversed
      granulation), the velocities decay with height.
    * **Internetwork fields** in the granules: weak (30–250 G), mostly horizontal (γ around 90°), random
      azimuth, decaying with height.
    * **Plage**: over a smooth patch covering about ``plage_fraction`` of the map, kG flux tubes (1–1.7 kG,
      nearly vertical, one polarity per patch, expanding: B falling with height) sit in the lanes, with a
      hotter upper atmosphere (FAL-H-like) and a weak downflow; granulation is abnormal there (smaller
      contrast, smaller cells).

    Parameters as :func:`generate_map`. ``labels`` index :data:`QUIET_PLAGE_REGIONS`.
    """
    from . import models

    n, mu, lines, grid, psf_arr = _map_inputs(size, mu, lines, grid, psf)
    if not 0.0 <= plage_fraction <= 1.0:
        raise ValueError(f"plage_fraction must be in [0, 1], got {plage_fraction}")
    rng = np.random.default_rng([int(seed), 11])   # another stream than the other generators'
    corr = max(n / 6.0, 1.0)
    ncell = max(4, int(round(n * n / 36.0)))
    r, edge = _cells(rng, n, ncell)
    lane = np.clip(1.0 - edge / 1.5, 0.0, 1.0)          # 1 on the cell boundaries, 0 one and a half pixels in
    gran = np.clip(1.0 - r, 0.0, 1.0)                   # 1 at the granule centre
    # plage patch: a smooth field thresholded to the requested area, soft edge
    pf = _smooth_field(rng, n, corr)
    thr = np.quantile(pf, 1.0 - plage_fraction) if plage_fraction > 0 else np.inf
    wpl = np.clip((pf - thr) / 0.4 + 0.5, 0.0, 1.0) if plage_fraction > 0 else np.zeros((n, n))
    wtube = wpl * lane                                  # flux tubes in the lanes of the plage
    labels = np.where(wtube > 0.5, 2, np.where(lane > 0.5, 1, 0))

    lib = {k: models.load(k) if k != "hsra" else models.hsra() for k in models.names()}
    lt = np.asarray(lib["hsra"].log_tau)
    T_q = np.asarray(lib["hsra"].T)
    T_pl = np.asarray(lib["falh"].T)
    lpe = {k: np.log(np.asarray(lib[k].Pe)[-1]) for k in ("hsra", "falh")}
    contrast = (1.0 - 0.5 * wpl)[..., None]             # abnormal granulation in plage
    shape_T = np.clip(1.0 + lt / 1.5, -0.3, 1.2)        # 1 at log τ = 0, 0 at −1.5, reversed above
    dT = (250.0 * gran - 300.0 * lane)[..., None] * shape_T[None, None, :] * contrast
    dT *= 1.0 + 0.15 * _smooth_field(rng, n, corr)[..., None]
    T = (1.0 - wtube[..., None]) * T_q + wtube[..., None] * T_pl + dT
    pe_top = np.exp((1.0 - wtube) * lpe["hsra"] + wtube * lpe["falh"])

    deg = np.pi / 180.0
    # internetwork: weak horizontal fields in the granules
    Biw = np.clip(120.0 + 70.0 * _smooth_field(rng, n, corr * 0.5), 30.0, 250.0) * (0.4 + 0.6 * gran)
    thiw = (90.0 + 25.0 * np.tanh(_smooth_field(rng, n, corr * 0.5))) * deg
    aziw = np.pi * _smooth_field(rng, n, corr)
    Bt = rng.uniform(1000.0, 1700.0) * (1.0 + 0.1 * _smooth_field(rng, n, corr))
    sign = rng.choice([-1.0, 1.0])
    tht = (5.0 + 15.0 * (1.0 - wtube)) * deg           # vertical in the tube cores, splaying at their edges
    azt = 2 * np.pi * rng.uniform()
    Bloc = []
    for iw, it in ((Biw * np.sin(thiw) * np.cos(aziw), Bt * np.sin(tht) * np.cos(azt)),
                   (Biw * np.sin(thiw) * np.sin(aziw), Bt * np.sin(tht) * np.sin(azt)),
                   (Biw * np.cos(thiw), sign * Bt * np.cos(tht))):
        Bloc.append((1.0 - wtube) * iw + wtube * it)
    f_iw = np.clip(1.0 + 0.2 * lt, 0.2, None)           # internetwork decays with height
    f_t = np.clip(1.0 + 0.12 * lt, 0.4, None)           # the tubes expand: B falls with height
    fB = (1.0 - wtube)[..., None] * f_iw + wtube[..., None] * f_t
    Bx, By, Bz = (b[..., None] * fB for b in Bloc)
    # convective flows (up > 0): granules rise, lanes sink, decaying with height; tubes: weak downflow
    vup = rng.uniform(1.5e5, 2.0e5) * gran - rng.uniform(2.0e5, 2.5e5) * lane
    vup = (1.0 - 0.6 * wpl) * vup - wtube * 0.4e5
    vz = vup[..., None] * np.clip(1.0 + 0.3 * lt, 0.05, None)
    vmic_map = (1.0e5 + 0.4e5 * lane) * (1.0 + 0.1 * _smooth_field(rng, n, corr))
    macro = np.clip((0.8 + 0.4 * lane - 0.2 * wtube) * (1.0 + 0.1 * _smooth_field(rng, n, corr)), 0.1, None)
    return _observe(rng, n, lt, T, pe_top, (Bx, By, Bz), (0.0, 0.0, vz), vmic_map, macro, labels, mu, noise, lines,
                    grid, psf_arr, seed,
                    {"generator": "quiet_plage", "cells": int(ncell), "plage_fraction": float((wpl > 0.5).mean()),
                     "region_fractions": {QUIET_PLAGE_REGIONS[k]: float((labels == k).mean()) for k in range(3)}})
