"""Hydrostatic equilibrium (spec-forward §5; spec-inversion §4.6) against SIR's inverted models."""
from __future__ import annotations

import numpy as np
import pytest

from helpers import AB, EPS, require_engine

require_engine()
import pyinv  # noqa: E402
from pyinv.physics import thermo  # noqa: E402


@pytest.fixture(scope="module")
def sir_models(reference_dir):
    d = np.load(reference_dir / "invert_hinode.npz", allow_pickle=True)
    return d["sir_models"]


@pytest.fixture(scope="module")
def thevenin(reference_dir):
    return pyinv.io.read_abundances(reference_dir / "THEVENIN")


def test_thevenin_abundances(thevenin):
    eps = 10 ** (thevenin - 12)
    assert thevenin[0] == 12.0
    assert eps[1:].sum() == pytest.approx(0.10162, rel=2e-4)   # spec §4.4


def test_recomputed_pe_matches_sir_models(sir_models, thevenin):
    """Acceptance: Pe from T with the model's top Pe, THEVENIN, mu = 1 within 2 % at every depth."""
    atm = pyinv.Atmosphere.from_array(sir_models)
    h = thermo.hydrostatic(atm, abundances=thevenin, mu=1.0)
    pe_sir = sir_models[:, :, 2]
    dev = np.abs(h.Pe / pe_sir - 1).max(axis=1)
    print("max |dPe/Pe| per model:", np.array2string(dev, precision=6))
    assert np.all(dev < 0.02)
    # what the implementation actually reaches (SIR's files carry 5-6 digits, SIR iterates to 1e-5)
    assert np.all(dev < 1e-3)
    # top point kept exactly
    np.testing.assert_array_equal(h.Pe[:, -1], pe_sir[:, -1])
    # Pg, rho and z columns of SIR's output
    assert np.abs(h.Pg / sir_models[:, :, 9] - 1).max() < 2e-3
    assert np.abs(h.rho / sir_models[:, :, 10] - 1).max() < 2e-3
    assert np.abs(h.z - sir_models[:, :, 8]).max() < 1.0     # km


def test_sir_compat_is_closer_in_pg(sir_models, thevenin):
    atm = pyinv.Atmosphere.from_array(sir_models[:4])
    h = thermo.hydrostatic(atm, abundances=thevenin)
    hc = thermo.hydrostatic(atm, abundances=thevenin, sir_compat=True)
    d = np.abs(h.Pg / sir_models[:4, :, 9] - 1).max()
    dc = np.abs(hc.Pg / sir_models[:4, :, 9] - 1).max()
    assert dc < d


def _hsra_like():
    lt = np.round(np.arange(1.2, -4.01, -0.1), 10)
    T = 4400.0 + 1800.0 * (1 + np.tanh(1.3 * (lt - 0.4))) / 2 + 1200.0 * np.clip(lt, 0, None)
    return pyinv.Atmosphere(log_tau=lt, T=T, Pe=np.full(lt.size, 0.05))


def test_boundaries_are_consistent():
    atm = _hsra_like()
    h0 = thermo.hydrostatic(atm, abundances=AB)
    assert h0.Pe[-1] == 0.05
    hg = thermo.hydrostatic(atm, abundances=AB, top_pg=float(h0.Pg[-1]))
    np.testing.assert_allclose(hg.Pe, h0.Pe, rtol=1e-8)
    np.testing.assert_allclose(hg.Pg, h0.Pg, rtol=1e-8)
    hr = thermo.hydrostatic(atm, abundances=AB, top_rho=float(h0.rho[-1]))
    np.testing.assert_allclose(hr.Pe, h0.Pe, rtol=1e-8)
    np.testing.assert_allclose(hr.rho, h0.rho, rtol=1e-8)
    hp = thermo.hydrostatic(atm, abundances=AB, top_pe=0.05)
    np.testing.assert_allclose(hp.Pe, h0.Pe, rtol=0)


def test_hydrostatic_balance_and_height():
    atm = _hsra_like()
    h = thermo.hydrostatic(atm, abundances=AB)
    # trapezoid HE: dPg = g ln10 dx (tau/kappa)_mean, kappa per gram at 5000 A
    kg = thermo.continuum_opacity(5000.0, atm.T, h.Pe, AB, per_gram=True)
    y = 10 ** atm.log_tau / kg
    dx = atm.log_tau[:-1] - atm.log_tau[1:]
    dpg = 2.7414e4 * np.log(10) * dx * 0.5 * (y[:-1] + y[1:])
    np.testing.assert_allclose(h.Pg[:-1] - h.Pg[1:], dpg, rtol=1e-8)
    # EOS consistency of every depth
    d = thermo.equation_of_state(atm.T, h.Pe, AB)
    np.testing.assert_allclose(d["Pg"], h.Pg, rtol=1e-9)
    np.testing.assert_allclose(d["rho"], h.rho, rtol=1e-9)
    # z: zero at log tau = 0, increasing upward, tens of km per 0.1 dex in the photosphere
    i0 = int(np.argmin(np.abs(atm.log_tau)))
    assert h.z[i0] == 0.0
    assert np.all(np.diff(h.z) > 0)
    assert 5.0 < h.z[i0 + 1] - h.z[i0] < 30.0


def test_mu_only_scales_gravity():
    atm = _hsra_like()
    h1 = thermo.hydrostatic(atm, abundances=AB, mu=1.0)
    h5 = thermo.hydrostatic(atm, abundances=AB, mu=-0.5)   # only |mu| is used
    assert np.all(h5.Pg[:-1] < h1.Pg[:-1])
    # with g halved and the same boundary, dPg is about half (kappa changes too, so loosely)
    r = (h5.Pg[0] - h5.Pg[-1]) / (h1.Pg[0] - h1.Pg[-1])
    assert 0.5 < r < 0.8


def test_default_abundances_and_stack():
    atm = _hsra_like()
    stack = pyinv.Atmosphere.from_array(np.stack([atm.to_array(), atm.with_columns(T=atm.T + 100).to_array()]))
    h = thermo.hydrostatic(stack)
    assert h.Pe.shape == (2, atm.ndep)
    single = thermo.hydrostatic(stack[1])
    np.testing.assert_allclose(h.Pe[1], single.Pe, rtol=0)


def test_argument_errors():
    atm = _hsra_like()
    with pytest.raises(ValueError):
        thermo.hydrostatic(atm, top_pg=10.0, top_rho=1e-9)
    with pytest.raises(ValueError):
        thermo.hydrostatic(atm, top_pg=-1.0)
    with pytest.raises(ValueError):
        thermo.hydrostatic(atm, mu=0.0)


# --- regression: values computed with the code BEFORE the 2025 speed-up (T-factor caching, kappa
# coefficients per depth); the results must not change by more than 1e-10 relative.
_REG_IDX = [0, 12, 30, 45, 52]
_REG = {
    "A": dict(
        pe=[672.5603941675612, 8.992128708870773, 0.8865270218683807, 0.1755850470507224, 0.05],
        pg=[465174.6452621778, 172886.67565893076, 16640.657745323486, 2263.672710618333, 552.6837816352612],
        rho=[9.780740113369506e-07, 5.561173841242365e-07, 5.9166645286556526e-08, 8.058943690679152e-09,
             1.9676392674305354e-09],
        z=[-137.36102743588089, 0.0, 245.66959257270338, 449.87958359887125, 595.2208847428305],
        k5=[4.732865800615737, 0.29773413318369585, 0.04607307046343721, 0.009586108593574602,
            0.0030659308688750523]),
    "B": dict(
        pe=[102.09574075056337, 2.203373445019301, 0.16852927862766753, 1.761508987363461, 0.3974345607913535],
        pg=[753586.8849658809, 417452.62689689704, 25658.14817733313, 35.371242912907924, 0.8],
        rho=[9.728237403481527e-07, 8.967801798083535e-07, 5.884489266979115e-08, 4.100973151172187e-11,
             5.086520193607798e-13],
        z=[-203.9025023678887, 0.0, 596.3850585102455, 2381.6709504264218, 4914.441068185597],
        k5=[1.3898721554163616, 0.15288687770766857, 0.02442641688244231, 0.06188793661949787,
            0.31425082831507056]),
}


def _regression_models():
    lt = np.round(np.arange(1.2, -4.01, -0.1), 10)
    T = 4400.0 + 1800.0 * (1 + np.tanh(1.3 * (lt - 0.4))) / 2 + 1200.0 * np.clip(lt, 0, None)
    Tb = np.where(lt < -3, T + 8000 * (-3 - lt), T - 1200 + 300 * np.sin(3 * lt))
    # (name, T, boundary, bvalue, mu, sir_compat): A photospheric, Pe boundary; B cool photosphere
    # with a hot chromosphere, Pg boundary, mu = 0.7, SIR-compatible density column
    return lt, [("A", T, 0, 0.0, 1.0, 0), ("B", Tb, 1, 0.8, 0.7, 1)]


def test_hydrostatic_regression_against_pre_speedup_values():
    from pyinv import engine
    lt, models = _regression_models()
    for name, T, b, bv, mu, sc in models:
        pe, pg, rho, z, k5 = engine.hydrostatic_arrays(lt, T, 0.05, b, bv, mu, EPS, sc)
        ref = _REG[name]
        np.testing.assert_allclose(pe[_REG_IDX], ref["pe"], rtol=1e-10, err_msg=name)
        np.testing.assert_allclose(pg[_REG_IDX], ref["pg"], rtol=1e-10, err_msg=name)
        np.testing.assert_allclose(rho[_REG_IDX], ref["rho"], rtol=1e-10, err_msg=name)
        np.testing.assert_allclose(z[_REG_IDX], ref["z"], rtol=1e-10, atol=1e-9, err_msg=name)
        np.testing.assert_allclose(k5[_REG_IDX], ref["k5"], rtol=1e-10, err_msg=name)


def test_pe_guess_only_starts_the_iterations():
    """hydrostatic_eq(..., pe_guess) converges to the same column (the guess only saves work)."""
    from pyinv import engine
    lt, models = _regression_models()
    for name, T, b, bv, mu, sc in models:
        r0 = engine.hydrostatic_arrays(lt, T, 0.05, b, bv, mu, EPS, sc)
        for g in (r0[0] * 1.03, r0[0] * 0.5, np.where(np.arange(lt.size) % 3 == 0, -1.0, r0[0] * 1.2)):
            r1 = engine.hydrostatic_arrays(lt, T, 0.05, b, bv, mu, EPS, sc, pe_guess=g)
            for x, y in zip(r0, r1):
                np.testing.assert_allclose(y, x, rtol=1e-10, atol=1e-9, err_msg=name)
