"""DeSIRe's form of the NLTE departure coefficients with magnetic fields and in the response functions
(issue 19; fortran/departures.f90): the emission vector κ_c B e₁ + Σ_L (K_L e₁) S_L, the polarised RTE with
the source vector K⁻¹j, and its exact response functions at fixed b, checked against central finite
differences (relative step 1e-4, relative error ≤ 1e-4 wherever |RF| ≥ 1 % of its maximum, as
tests/test_response.py) on synthetic departures and on FAL C with 500 G at 45° and Lightweaver's departures
for Ca II 8542 and Fe I 6301/6302.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import pyinv
from pyinv import engine
from pyinv.nlte import Departures
from pyinv.physics.synthesis import _prepare
from helpers import REL_STEP, hsra_two_lines, rel_err, rf_fd_worst


def _hsra_case():
    lines, grid, m = hsra_two_lines()
    lt = m.log_tau
    n = m.ndep
    d = Departures(lt, (1, 2), np.array([np.linspace(0.7, 1.2, n), np.full(n, 1.3)]),
                   np.array([np.linspace(1.0, 1.5, n), np.full(n, 0.8)]))
    return lines, grid, m, d


def _ones(m, lines_idx=(1, 2)):
    n = m.ndep
    return Departures(m.log_tau, lines_idx, np.ones((len(lines_idx), n)), np.ones((len(lines_idx), n)))


def _fd_worst(atm, lines, grid, rf, depths, rel_step=REL_STEP, **kw):
    """Largest relative error of the RFs of every model column (and vmac) against central differences."""
    p = _prepare([atm], lines, grid, **kw)
    cols = p["cols"][0]

    def syn(c=None, vmac=None):
        c = cols if c is None else c
        return engine.synth_stokes(p["setup"], c["log_tau"], engine.model_array(c),
                                   p["macro"][0] if vmac is None else vmac)[0]

    magnetic = bool(np.any(cols["B"] != 0))
    worst = rf_fd_worst(rf, cols, syn, depths,
                        keys=None if magnetic else ("T", "Pe", "vmic", "vlos"), rel_step=rel_step)
    vm = float(p["macro"][0])
    if vm > 0:
        fd = (syn(vmac=vm * (1 + REL_STEP)) - syn(vmac=vm * (1 - REL_STEP))) / (2 * REL_STEP * vm)
        worst["macro"] = rel_err(rf["macro"], fd, np.abs(rf["macro"]).max())
    return worst


def test_unit_departures_are_lte():
    """b_l = b_u = 1: every line source function is the Planck function, the source-vector excess is zero
    and the synthesis is the LTE one (field-free: the same operations; magnetic: one wavelength at a time
    instead of SIR's blocks, equal to rounding)."""
    lines, grid, m, _ = _hsra_case()
    np.testing.assert_array_equal(pyinv.synthesize(m, lines, grid, departures=_ones(m), departure_form="desire"),
                                  pyinv.synthesize(m, lines, grid))
    mag = m.with_columns(B=800.0, gamma=60.0, phi=25.0)
    np.testing.assert_allclose(pyinv.synthesize(mag, lines, grid, departures=_ones(mag), departure_form="desire"),
                               pyinv.synthesize(mag, lines, grid), rtol=0, atol=1e-14)
    with pytest.raises(ValueError, match="departure_form"):
        pyinv.synthesize(m, lines, grid, departures=_ones(m), departure_form="rh")


def test_weak_field_limit_and_polarisation():
    """The polarised solution tends to the field-free one as B -> 0 (a 1 mG field), and with a field the
    NLTE source functions change Q, U and V as well as I."""
    lines, grid, m, d = _hsra_case()
    free = pyinv.synthesize(m, lines, grid, departures=d, departure_form="desire")
    weak = pyinv.synthesize(m.with_columns(B=1e-3, gamma=45.0, phi=20.0), lines, grid, departures=d,
                            departure_form="desire")
    np.testing.assert_allclose(weak[0], free[0], rtol=0, atol=1e-10)
    mag = m.with_columns(B=500.0, gamma=45.0, phi=20.0)
    lte = pyinv.synthesize(mag, lines, grid)
    sir = pyinv.synthesize(mag, lines, grid, departures=d)
    des = pyinv.synthesize(mag, lines, grid, departures=d, departure_form="desire")
    for s in range(4):
        assert np.abs(des[s] - lte[s]).max() > 1e-3 * max(np.abs(lte[s]).max(), 1e-2), s
    assert np.abs(des - sir).max() > 1e-3                  # the two forms differ


@pytest.mark.parametrize("B", [0.0, 500.0])
def test_response_functions_synthetic_departures(B, record_property):
    lines, grid, m, d = _hsra_case()
    n = m.ndep
    atm = m.with_columns(B=B, gamma=45.0, phi=20.0, vlos=np.linspace(-1e5, 2e5, n))
    kw = dict(departures=d, departure_form="desire")
    rf = pyinv.response_functions(atm, lines, grid, hydrostatic=False, **kw)
    np.testing.assert_array_equal(rf["stokes"], pyinv.synthesize(atm, lines, grid, **kw))
    worst = _fd_worst(atm, lines, grid, rf, sorted(set(range(0, n, 4)) | {n - 1}), **kw)
    print(f"\nB = {B:g} G: max rel. error vs FD " + ", ".join(f"{k} {v:.1e}" for k, v in worst.items()))
    record_property("max_rel_err", worst)
    for k, v in worst.items():
        assert v <= 1e-4, f"{k}: {v:.2e}"


def test_response_functions_split_line_hot_chromosphere(record_property):
    """Ca II 8542 split by 1.9 kG under a 13 kK chromosphere with b ≫ 1 at the top (like Lightweaver's for
    hot plage columns): the wavelengths whose formal solution starts where every polarisation mode is thick
    and sub-divides the steps above (formal_solver.f90, boundary_index_modes) have exact RFs too."""
    from helpers import hot_magnetic_chromosphere

    atm = hot_magnetic_chromosphere(0.1)
    n = atm.ndep
    atm = atm.with_columns(vlos=np.linspace(-1e5, 2e5, n))
    lines = pyinv.default_lines()
    grid = pyinv.WavelengthGrid.from_regions([(8, -1500, 60, 1500)], lines)
    top = 1.0 / (1.0 + np.exp((atm.log_tau + 4.2) / 0.3))
    d = Departures(atm.log_tau, (8,), (1.0 + 400.0 * top)[None], (1.0 + 40.0 * top)[None])
    kw = dict(departures=d, departure_form="desire")
    rf = pyinv.response_functions(atm, lines, grid, hydrostatic=False, **kw)
    s = rf["stokes"]
    assert np.all(s[0] >= np.sqrt(s[1] ** 2 + s[2] ** 2 + s[3] ** 2)) and s[0].min() > 0
    # the sub-steps per grid step (a power of 2) must not change within the finite-difference step
    worst = _fd_worst(atm, lines, grid, rf, sorted(set(range(0, n, 4)) | {n - 1, n - 3, n - 7}),
                      **kw)
    print("\nhot chromosphere, 1.9 kG: max rel. error vs FD " + ", ".join(f"{k} {v:.1e}" for k, v in worst.items()))
    record_property("max_rel_err", worst)
    for k, v in worst.items():
        assert v <= 1e-4, f"{k}: {v:.2e}"


@pytest.fixture(scope="module")
def falc_lightweaver():
    """FAL C with 500 G at 45° (azimuth 30°) on the engine's uniform grid 1.0 ... -5.3 (Lightweaver's own
    τ₅₀₀ scale) with Lightweaver's departure coefficients of Ca II 8542 (CaII atom) and Fe I 6301/6302
    (Fe23 atom)."""
    pytest.importorskip("lightweaver", reason="lightweaver not installed (pip install 'pyinv[nlte]')")
    from pyinv import nlte
    from pyinv.nlte.lw import falc_column

    warnings.simplefilter("ignore")
    lines = pyinv.default_lines()
    grid = pyinv.WavelengthGrid.from_regions([(1, -500, 25, 500), (2, -500, 25, 500), (8, -1200, 40, 1200)], lines)
    col = falc_column().with_field(500.0, 45.0, 30.0)
    be = nlte.Lightweaver(nlte.level_map(lines, [1, 2, 8]), hydrogen="model", prd=False, lte=False)
    r = be.synthesize(col, nlte.grid_vacuum_nm(lines, grid))
    assert r.ok, r.message
    lt = np.round(np.arange(1.0, -5.3 - 1e-9, -0.1), 2)
    n = lt.size
    atm = nlte.atmosphere_from_column(col, r.tau500, lt).with_columns(
        B=500.0, gamma=45.0, phi=30.0, vlos=np.linspace(-5e4, 1.5e5, n), macro=0.4)
    return lines, grid, atm, r.departures.on_grid(lt)


def test_response_functions_falc_lightweaver(falc_lightweaver, record_property):
    lines, grid, atm, dep = falc_lightweaver
    n = atm.ndep
    kw = dict(departures=dep, departure_form="desire")
    rf = pyinv.response_functions(atm, lines, grid, hydrostatic=False, **kw)
    assert np.abs(rf["stokes"] - pyinv.synthesize(atm, lines, grid, departures=dep)).max() > 1e-3
    worst = _fd_worst(atm, lines, grid, rf, sorted(set(range(1, n, 3)) | {n - 1}), **kw)
    print("\nFAL C 500 G, Lightweaver b (Ca II 8542, Fe I 6301/6302): max rel. error vs FD "
          + ", ".join(f"{k} {v:.1e}" for k, v in worst.items()))
    record_property("max_rel_err", worst)
    for k, v in worst.items():
        assert v <= 1e-4, f"{k}: {v:.2e}"


def _start_model(pyinv_mod, base, lt):
    """The round trips' start: 150 K hotter around log tau = -2.5, 100 K cooler around -4.5, 200 G at 30°."""
    T = np.asarray(base.T) + 150 * np.exp(-((lt + 2.5) / 1.5) ** 2) - 100 * np.exp(-((lt + 4.5) / 0.6) ** 2)
    return pyinv_mod.hydrostatic(base.with_columns(T=T, B=200.0, gamma=30.0, phi=10.0))


ROUND_TRIP_CONFIG = dict(cycles=2, nodes={"T": (3, 5), "vlos": (1, 2), "B": (1, 2), "gamma": (1, 1), "phi": (1, 1),
                                          "vmic": (1, 1)}, weights=(1, 1, 1, 1), snr=1000.0)


def _rms_by_region(grid, fit, obs):
    out, start = {}, 0
    for r in grid.regions:
        j = np.arange(start, start + r.npoints)
        start += r.npoints
        out[r.indices] = [float(np.sqrt(np.mean((fit[s, j] - obs[s, j]) ** 2))) for s in range(4)]
    return out


def test_round_trip_fixed_departures_falc(falc_lightweaver):
    """FAL C with 500 G at 45°: the engine's DeSIRe-form profiles of Fe I 6301/6302 and Ca II 8542 with
    Lightweaver's b, inverted with the same b held fixed from a start 150 K off and at 200 G, 30°, fit to
    ≤ 0.005 (Fe I) and ≤ 0.01 (Ca II) rms of Ic in every Stokes parameter, and B, γ recovered."""
    lines, grid, atm, dep = falc_lightweaver
    lt = atm.log_tau
    truth = pyinv.hydrostatic(atm.with_columns(vlos=0.0, macro=0.0))
    obs = pyinv.synthesize(truth, lines, grid, departures=dep, departure_form="desire")
    res = pyinv.invert_pixel(obs, _start_model(pyinv, truth.with_columns(B=0.0), lt), lines, grid,
                             pyinv.InversionConfig(**ROUND_TRIP_CONFIG), departures=dep, departure_form="desire")
    fits = _rms_by_region(grid, res.fit, obs)
    k = int(np.argmin(np.abs(lt + 1.0)))
    print("\nfixed-b round trip, rms per region (I, Q, U, V): "
          + "; ".join(f"{r}: " + " ".join(f"{v:.5f}" for v in x) for r, x in fits.items())
          + f"; B(-1) {res.atmosphere.B[k]:.0f} G, gamma {res.atmosphere.gamma[k]:.1f}")
    assert res.ok
    for r, x in fits.items():
        assert max(x) <= (0.01 if 8 in r else 0.005), (r, x)
    assert abs(res.atmosphere.B[k] - 500.0) < 25 and abs(res.atmosphere.gamma[k] - 45.0) < 2


def test_round_trip_desire_inversion_caii_lightweaver():
    """The DeSIRe-like inversion with a magnetic model: Lightweaver's NLTE Ca II 8542 profiles of FAL C
    (engine grid, 500 G at 45°) inverted by invert_pixel_nlte (DeSIRe's form, b frozen between backend
    calls) from the same start: fit ≤ 0.01 rms of Ic (measured 0.0006 in I), B and γ recovered."""
    pytest.importorskip("lightweaver", reason="lightweaver not installed (pip install 'pyinv[nlte]')")
    from pyinv import nlte
    from pyinv.nlte.desire import invert_pixel_nlte
    from pyinv.nlte.lw import falc_column

    warnings.simplefilter("ignore")
    lines = pyinv.default_lines()
    grid = pyinv.WavelengthGrid.from_regions([(8, -1500, 20, 1500)], lines)
    wl = nlte.grid_vacuum_nm(lines, grid)
    be = nlte.Lightweaver(nlte.level_map(lines, [8]), hydrogen="model", prd=False, lte=True)
    col = falc_column()
    lt = np.round(np.arange(1.0, -5.3 - 1e-9, -0.1), 2)
    base = nlte.atmosphere_from_column(col, be.synthesize(col, wl).tau500, lt, hydrostatic=True)
    truth = base.with_columns(B=500.0, gamma=45.0, phi=30.0)
    rt = be.synthesize(truth, wl)
    lte = pyinv.synthesize(truth, lines, grid, convolve=False)
    obs = rt.stokes * (lte[0, [0, -1]].sum() / rt.stokes_lte[0, [0, -1]].sum())
    rn = invert_pixel_nlte(obs, _start_model(pyinv, base, lt), lines, grid, pyinv.InversionConfig(**ROUND_TRIP_CONFIG),
                           backend=be)
    fit = _rms_by_region(grid, rn.result.fit, obs)[(8,)]
    k = int(np.argmin(np.abs(lt + 1.0)))
    a = rn.result.atmosphere
    print(f"\nDeSIRe-like Ca II 8542 round trip: rms I {fit[0]:.5f} Q {fit[1]:.5f} U {fit[2]:.5f} V {fit[3]:.5f}; "
          f"B(-1) {a.B[k]:.0f} G, gamma {a.gamma[k]:.1f}; backend calls {rn.backend_calls}")
    assert rn.status == 0 and rn.result.ok
    assert max(fit) <= 0.01
    assert abs(a.B[k] - 500.0) < 25 and abs(a.gamma[k] - 45.0) < 3


def test_caii_departure_round_trip_lightweaver():
    """Field-free Ca II 8542 on FAL C: the engine fed Lightweaver's b against Lightweaver's NLTE profile (each
    on its own intensity at the ±1.5 Å window's ends). With the CaII atom's own damping (Unsöld × 1.5,
    γ_rad = 1.5e8 s⁻¹, Stark) the profiles differ by ~0.02 rms — the line shape, not the departures; with
    the engine's damping given to the backend (line_broadening=) by ~0.001. The NLTE − LTE changes then
    agree to ~0.005, limited by the two LTE reference runs (their emission cores form at the model's top,
    where τ₅₀₀ is compressed)."""
    pytest.importorskip("lightweaver", reason="lightweaver not installed (pip install 'pyinv[nlte]')")
    from pyinv import nlte
    from pyinv.nlte.lw import falc_column

    warnings.simplefilter("ignore")
    lines = pyinv.default_lines()
    grid = pyinv.WavelengthGrid.from_regions([(8, -1500, 10, 1500)], lines)
    wl = nlte.grid_vacuum_nm(lines, grid)
    col = falc_column()
    lt = np.round(np.arange(1.0, -5.3 - 1e-9, -0.1), 2)
    got = {}
    for tag, lb in (("atom", None), ("engine", lines)):
        r = nlte.Lightweaver(nlte.level_map(lines, [8]), hydrogen="model", prd=False, lte=True,
                             line_broadening=lb).synthesize(col, wl)
        assert r.ok, r.message
        m = nlte.atmosphere_from_column(col, r.tau500, lt)
        lte = pyinv.synthesize(m, lines, grid, convolve=False)
        nl = pyinv.synthesize(m, lines, grid, convolve=False, departures=r.departures.on_grid(lt),
                              departure_form="desire")
        ce, cb = lte[0, [0, -1]].mean(), r.stokes_lte[0, [0, -1]].mean()
        got[tag] = (float(np.sqrt(np.mean((nl[0] / ce - r.stokes[0] / cb) ** 2))),
                    float(np.sqrt(np.mean(((nl[0] - lte[0]) / ce - (r.stokes[0] - r.stokes_lte[0]) / cb) ** 2))))
    print("\nCa II 8542 departure round trip (direct, NLTE-LTE change): "
          + ", ".join(f"{k} damping {v[0]:.4f} {v[1]:.4f}" for k, v in got.items()))
    assert got["atom"][0] > 0.015                      # measured 0.0195
    assert got["engine"][0] <= 0.002                   # measured 0.0009
    assert got["engine"][1] <= 0.007                   # measured 0.0051
