"""Voigt / Faraday–Voigt functions and the Planck function of the engine."""
from __future__ import annotations

import numpy as np
import pytest

import pyinv

special = pytest.importorskip("scipy.special")


def _random_points(n: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    a = 10.0 ** rng.uniform(-4.0, 1.0, n)
    v = rng.uniform(-50.0, 50.0, n)
    # densify the core and near wings, where most line profiles are sampled
    a2 = 10.0 ** rng.uniform(-4.0, 1.0, n)
    v2 = rng.uniform(-6.0, 6.0, n)
    # the switch between the two algorithms (|v| + a = 12)
    a3 = 10.0 ** rng.uniform(-4.0, 1.0, n // 4)
    v3 = np.sign(rng.uniform(-1, 1, n // 4)) * (12.0 - a3 + rng.uniform(-1e-6, 1e-6, n // 4))
    return np.concatenate([a, a2, a3]), np.concatenate([v, v2, v3])


def test_voigt_accuracy_against_wofz():
    a, v = _random_points(200_000)
    H, F = pyinv.voigt(a, v)
    w = special.wofz(v + 1j * a)
    ref_h, ref_f = w.real, 0.5 * w.imag
    err_h = np.abs(H - ref_h) / ref_h
    err_f = np.abs(F - ref_f) / np.maximum(np.abs(ref_f), ref_h)
    assert err_h.max() <= 1e-5, f"max relative error of H: {err_h.max():.3e}"
    assert err_f.max() <= 1e-5, f"max relative error of F: {err_f.max():.3e}"


def test_voigt_symmetry_and_limits():
    v = np.linspace(-30, 30, 301)
    H, F = pyinv.voigt(0.05, v)
    assert np.allclose(H, H[::-1], rtol=1e-12, atol=0)  # H even in v
    assert np.allclose(F, -F[::-1], rtol=1e-12, atol=1e-300)  # F odd in v
    # normalisation: integral of H dv = sqrt(pi) (wide, fine grid; Lorentzian wings ~ a/(sqrt(pi) v^2))
    vv = np.linspace(-2000, 2000, 4_000_001)
    hh, _ = pyinv.voigt(0.01, vv)
    integral = np.trapezoid(hh, vv)
    tail = 2 * 0.01 / np.sqrt(np.pi) / 2000.0  # missing Lorentzian tails
    assert integral + tail == pytest.approx(np.sqrt(np.pi), rel=1e-6)
    # a -> 0: Doppler core exp(-v^2)
    h0, _ = pyinv.voigt(1e-10, np.array([0.0, 1.0, 2.0]))
    assert np.allclose(h0, np.exp(-np.array([0.0, 1.0, 4.0])), rtol=1e-7)


def test_voigt_derivatives_match_finite_differences():
    rng = np.random.default_rng(3)
    a = 10.0 ** rng.uniform(-3.0, 0.5, 2000)
    v = rng.uniform(-15.0, 15.0, 2000)
    d = pyinv.engine.voigt_derivatives(a, v)
    hv = 1e-6
    hp, fp = pyinv.voigt(a, v + hv)
    hm, fm = pyinv.voigt(a, v - hv)
    scale_h = np.abs(d["H"]).max()
    np.testing.assert_allclose(d["dH_dv"], (hp - hm) / (2 * hv), atol=1e-7 * scale_h * 100, rtol=1e-5)
    np.testing.assert_allclose(d["dF_dv"], (fp - fm) / (2 * hv), atol=1e-7 * scale_h * 100, rtol=1e-5)
    ha = 1e-7 * np.maximum(a, 1e-3)
    hp, fp = pyinv.voigt(a + ha, v)
    hm, fm = pyinv.voigt(a - ha, v)
    np.testing.assert_allclose(d["dH_da"], (hp - hm) / (2 * ha), atol=1e-6, rtol=1e-5)
    np.testing.assert_allclose(d["dF_da"], (fp - fm) / (2 * ha), atol=1e-6, rtol=1e-5)


def test_voigt_rejects_negative_damping_and_nan():
    with pytest.raises(ValueError, match="voigt"):
        pyinv.voigt(-0.1, 1.0)
    with pytest.raises(ValueError, match="voigt"):
        pyinv.voigt(0.1, np.nan)


def test_planck_and_derivative():
    T = np.array([3000.0, 5777.0, 20000.0])
    lam_A = 6301.5
    B, dB = pyinv.planck(lam_A, T)
    h, c, k = 6.62607015e-27, 2.99792458e10, 1.380649e-16
    lam = lam_A * 1e-8
    exact = 2 * h * c**2 / lam**5 / np.expm1(h * c / (lam * k * T))
    # SIR's radiation constants (spec §11: c1 = 1.1910627e-5, c2 = 1.43880) exactly ...
    sir = 1.1910627e-5 / lam**5 / np.expm1(1.43880 / (lam * T))
    np.testing.assert_allclose(B, sir, rtol=1e-13)
    # ... which differ from CODATA's 2hc^2, hc/k by ~1.6e-5 in c2 (so ~1e-4 in B at x = c2/lambda T ~ 7)
    np.testing.assert_allclose(B, exact, rtol=2e-4)
    dT = 1e-5 * T
    Bp, _ = pyinv.planck(lam_A, T + dT)
    Bm, _ = pyinv.planck(lam_A, T - dT)
    np.testing.assert_allclose(dB, (Bp - Bm) / (2 * dT), rtol=1e-6)
    with pytest.raises(ValueError, match="temperature"):
        pyinv.planck(lam_A, [5000.0, -1.0])


def test_vectorised_profile_loop_equals_elemental():
    """voigt_n (the synthesis' profile loop, split by region) equals the elemental function."""
    api = pyinv.engine.api()
    rng = np.random.default_rng(7)
    a = 10.0 ** rng.uniform(-4.0, 1.0, 5000)
    v = rng.uniform(-40.0, 40.0, 5000)
    h1, f1 = pyinv.voigt(a, v)
    h2, f2, ierr = api.voigt_hf_n(a, v)
    assert ierr == 0
    np.testing.assert_allclose(h2, h1, rtol=1e-14, atol=0)
    np.testing.assert_allclose(f2, f1, rtol=1e-14, atol=1e-300)
