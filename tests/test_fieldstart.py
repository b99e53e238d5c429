"""The start for B, γ, φ read off the observed profiles (issue 17; pyinv.physics.fieldstart and
``invert_pixel(magnetic_start=...)``): engine-synthesised profiles of known fields estimated back, noise-only
input keeping the guess, and where invert_pixel and the map layer use it."""
from __future__ import annotations

import numpy as np
import pytest

from helpers import hsra_two_lines, require_engine

import pyinv
from pyinv.physics.fieldstart import B_MAX, B_MIN, estimate_field
from pyinv.physics.inversion import magnetic_start_from_profiles

NOISE = 1e-3


@pytest.fixture(scope="module")
def setup():
    require_engine()
    return hsra_two_lines()


def _observed(setup, B, gamma, phi, seed=0, noise=NOISE):
    lines, grid, atm = setup
    a = atm.with_columns(B=B, gamma=gamma, phi=phi)
    s = np.asarray(pyinv.synthesize(a, lines, grid))
    return s + np.random.default_rng(seed).normal(0.0, noise, s.shape)


CASES = [(B, g, p) for B in (1000.0, 3000.0) for g in (20.0, 70.0, 120.0, 160.0) for p in (30.0, 120.0)]


@pytest.mark.parametrize("B,gamma,phi", CASES)
def test_strong_fields_estimated_back(setup, B, gamma, phi):
    lines, grid, _ = setup
    e = estimate_field(_observed(setup, B, gamma, phi), lines, grid, snr=1.0 / NOISE)
    blos = B * np.cos(np.radians(gamma))
    assert e.status == "full"
    # centre of gravity: within 20 % of B_los (it reads B_los low where the π component is strong)
    assert abs(e.blos - blos) <= 0.2 * abs(blos), e
    assert abs(e.B - B) <= 0.25 * B, e
    assert abs(e.gamma - gamma) <= 20.0, e
    if 45.0 <= gamma <= 135.0:          # the azimuth where the linear polarisation is not Faraday-rotated
        d = abs((e.phi - phi + 90.0) % 180.0 - 90.0)
        assert d <= 15.0, e      # magneto-optical rotation at 3 kG: ~10°


@pytest.mark.parametrize("gamma", [20.0, 160.0])
def test_weak_longitudinal_field_sets_b_from_blos(setup, gamma):
    """100 G: V above the noise, Q and U not: B cos γ = B_los with the guess's γ (180 − γ for B_los < 0)."""
    lines, grid, _ = setup
    e = estimate_field(_observed(setup, 100.0, gamma, 30.0), lines, grid, snr=1.0 / NOISE, gamma_guess=60.0)
    blos = 100.0 * np.cos(np.radians(gamma))
    assert e.status == "los" and np.isnan(e.phi) and np.isnan(e.bperp)
    assert abs(e.blos - blos) <= 0.1 * abs(blos)
    assert e.gamma == (60.0 if blos > 0 else 120.0)
    assert e.B * np.cos(np.radians(e.gamma)) == pytest.approx(e.blos, rel=1e-9)


def test_q_u_without_weight_give_blos_only(setup):
    lines, grid, _ = setup
    obs = _observed(setup, 1000.0, 70.0, 30.0)
    e = estimate_field(obs, lines, grid, snr=1.0 / NOISE, weights=(1, 0, 0, 1), gamma_guess=60.0)
    assert e.status == "los"
    assert e.gamma == 60.0 and e.B == pytest.approx(e.blos / 0.5)
    assert abs(e.blos - 1000.0 * np.cos(np.radians(70.0))) <= 0.2 * 342.0


def test_noise_only_keeps_the_guess(setup):
    lines, grid, atm = setup
    obs = _observed(setup, 0.0, 0.0, 0.0, seed=3)
    assert estimate_field(obs, lines, grid, snr=1.0 / NOISE).status == "none"
    guess = atm.with_columns(B=400.0, gamma=60.0, phi=30.0)
    cfg = pyinv.InversionConfig(cycles=1, nodes={"T": 2, "B": 1, "gamma": 1, "phi": 1}, snr=1.0 / NOISE)
    start, est = magnetic_start_from_profiles(obs, guess, lines, grid, cfg, "profiles")
    assert start is guess and est is None


def test_field_is_clipped(setup):
    lines, grid, _ = setup
    obs = _observed(setup, 1000.0, 85.0, 30.0)
    e = estimate_field(obs, lines, grid, snr=1.0 / NOISE, weights=(1, 0, 0, 1), gamma_guess=89.99)
    assert e.status == "los" and e.B == B_MAX     # B cos γ = B_los would need 500 kG


def test_bad_input_refused(setup):
    lines, grid, _ = setup
    with pytest.raises(ValueError, match="shape"):
        estimate_field(np.zeros((4, 3)), lines, grid)
    with pytest.raises(ValueError, match="snr"):
        estimate_field(np.zeros((4, grid.nwav)), lines, grid, snr=0.0)


def test_invert_pixel_start_from_profiles(setup):
    lines, grid, atm = setup
    obs = _observed(setup, 1500.0, 120.0, 40.0)
    guess = atm.with_columns(B=400.0, gamma=60.0, phi=30.0)
    cfg = pyinv.InversionConfig(cycles=1, nodes={"T": 2, "B": 1, "vlos": 1, "gamma": 1, "phi": 1}, snr=1.0 / NOISE)
    r = pyinv.invert_pixel(obs, guess, lines, grid, cfg, magnetic_start="profiles")
    assert r.ok and r.magnetic_start is not None
    B0, g0, p0 = r.magnetic_start[:3]
    assert abs(B0 - 1500.0) < 400.0 and abs(g0 - 120.0) < 20.0 and abs(p0 - 40.0) < 10.0
    k = int(np.argmin(np.abs(r.atmosphere.log_tau)))
    assert abs(r.atmosphere.B[k] - 1500.0) < 100.0 and abs(r.atmosphere.gamma[k] - 120.0) < 5.0
    g = pyinv.invert_pixel(obs, guess, lines, grid, cfg, magnetic_start="guess")
    assert g.magnetic_start is None
    with pytest.raises(ValueError, match="magnetic_start"):
        pyinv.invert_pixel(obs, guess, lines, grid, cfg, magnetic_start="cnn")


def test_where_the_estimate_does_not_apply(setup):
    lines, grid, atm = setup
    obs = _observed(setup, 1500.0, 120.0, 40.0)
    guess = atm.with_columns(B=400.0, gamma=60.0, phi=30.0)
    free = pyinv.InversionConfig(cycles=1, nodes={"T": 2, "B": 1, "gamma": 1, "phi": 1}, snr=1.0 / NOISE)
    start, est = magnetic_start_from_profiles(obs, guess, lines, grid, free, "profiles")
    assert est is not None and np.all(np.asarray(start.B) == est[0]) and np.all(np.asarray(start.phi) == est[2])
    for kw in ({"two_components": True}, {"stray": True}):
        assert magnetic_start_from_profiles(obs, guess, lines, grid, free, "profiles", **kw) == (guess, None)
    fixed_b = pyinv.InversionConfig(cycles=1, nodes={"T": 2, "gamma": 1}, snr=1.0 / NOISE)
    assert magnetic_start_from_profiles(obs, guess, lines, grid, fixed_b, "profiles") == (guess, None)
    fixed_phi = pyinv.InversionConfig(cycles=1, nodes={"T": 2, "B": 1, "gamma": 1}, snr=1.0 / NOISE)
    start, est = magnetic_start_from_profiles(obs, guess, lines, grid, fixed_phi, "profiles")
    assert np.all(np.asarray(start.phi) == 30.0) and np.all(np.asarray(start.B) == est[0])


def test_map_layer_uses_the_estimate_for_single_starts_only(setup, tmp_path):
    lines, grid, atm = setup
    cube = np.stack([_observed(setup, 1500.0, 120.0, 40.0, seed=s) for s in range(2)]).reshape(1, 2, 4, grid.nwav)
    guess = atm.with_columns(B=400.0, gamma=60.0, phi=30.0)
    cfg = pyinv.InversionConfig(cycles=1, nodes={"T": 2, "B": 1, "vlos": 1, "gamma": 1, "phi": 1},
                                snr=1.0 / NOISE)
    from pyinv.maps.inversion import invert_map

    args = dict(guess=guess, mask=None, sigma=None, mu=None, psf=None, abundances=None, axes="yxsl", executor=None,
                workers=1, chunk=None, checkpoint=None, progress=False, time_limit=None, retries=0)
    single = invert_map(cube, lines, grid, cfg, init="single", solver="pyinv:invert_pixel", magnetic_start="profiles",
                        **args)
    assert np.all(np.isfinite(single.magnetic_start)) and single.magnetic_start.shape == (1, 2, 3)
    assert np.all(np.abs(single.magnetic_start[..., 1] - 120.0) < 20.0)
    assert single.provenance["solver"].endswith("invert_pixel(magnetic_start='profiles')")
    path = tmp_path / "single.fits"
    single.to_fits(path)
    assert np.array_equal(pyinv.InversionResult.from_fits(path).magnetic_start, single.magnetic_start)
    multi = invert_map(cube, lines, grid, cfg, init="multistart", solver="pyinv:invert_pixel",
                       **{**args, "guess": [guess]})
    assert np.all(np.isnan(multi.magnetic_start))            # varied starts are used as given
    assert "profiles" not in multi.provenance["solver"]
    with pytest.raises(ValueError, match="magnetic_start"):
        invert_map(cube, lines, grid, cfg, init="single", solver="pyinv:invert_pixel", magnetic_start="truth", **args)


def test_stuck_descent_triggers_the_rescue():
    from pyinv.physics.inversion import PixelResult, _stuck

    def res(it, tr):
        return PixelResult(atmosphere=None, fit=None, chi2=np.zeros(len(it)), iterations=np.array(it),
                           trials=np.array(tr))
    assert _stuck(res([6, 0, 0], [6, 7, 7]))
    assert not _stuck(res([6, 2, 0], [6, 3, 0]))      # a cycle that was not run (no trials) is not stuck
    assert not _stuck(res([0, 3], [7, 4]))            # the first cycle: its start may be the guess's minimum
    assert not _stuck(res([5], [5]))
