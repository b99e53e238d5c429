"""Continuum opacity (spec-forward §6): dominant sources, smoothness, validity windows, derivatives."""
from __future__ import annotations

import numpy as np
import pytest

from helpers import AB, EPS, require_engine

require_engine()
from pyinv import engine
from pyinv.physics import thermo  # noqa: E402
from pyinv.engine import EngineError  # noqa: E402


def comp(wl, t, pe):
    k, c = thermo.continuum_opacity(wl, t, pe, AB, components=True)
    return k, c


def test_total_is_sum_of_components():
    k, c = comp(5000.0, [4500.0, 6000.0, 9000.0], [1.0, 30.0, 300.0])
    np.testing.assert_allclose(k, sum(c.values()), rtol=1e-14)
    assert len(c) == len(engine.KAPPA_COMPONENTS)


def test_hminus_dominates_photosphere_at_5000():
    t = np.array([4500.0, 5000.0, 5500.0, 6000.0, 6500.0])
    pe = np.array([1.0, 3.0, 10.0, 30.0, 100.0])
    k, c = comp(5000.0, t, pe)
    hm = c["Hminus_bf"] + c["Hminus_ff"]
    assert np.all(hm / k > 0.85)
    assert np.all(c["Hminus_bf"] > c["Hminus_ff"])
    # hot gas: hydrogen bound-free takes over
    k2, c2 = comp(5000.0, 10000.0, 100.0)
    assert c2["HI"] > c2["Hminus_bf"]


def test_kappa5_magnitude_per_gram():
    """Order of magnitude at tau5 ~ 1 in the quiet Sun (T ~ 6400 K, Pe ~ 60): kappa ~ 0.3-1 cm2/g."""
    kg = thermo.continuum_opacity(5000.0, 6400.0, 60.0, AB, per_gram=True)
    assert 0.1 < float(kg) < 3.0


def test_smooth_in_wavelength_between_edges():
    t, pe = np.array([5800.0]), np.array([20.0])
    wl = np.arange(5600.0, 6500.0, 1.0)  # no edge of §6 in this range
    k = thermo.continuum_opacity(wl, t, pe, AB)[:, 0]
    d2 = np.abs(np.diff(np.log(k), 2))
    assert d2.max() < 1e-6
    wl = np.arange(10000.0, 14150.0, 5.0)  # between the Na I cut (9850 A) and the H- fit switch
    k = thermo.continuum_opacity(wl, t, pe, AB)[:, 0]
    assert np.abs(np.diff(np.log(k), 2)).max() < 1e-4


def test_hminus_fit_switch_at_14200():
    """The two H- bound-free fits of §6.2 join at 14200 A with a ~1.7 % step (a property of the fits
    that SIR has too; reproduced)."""
    t, pe = 5800.0, 20.0
    _, a = comp(14199.999, t, pe)
    _, b = comp(14200.001, t, pe)
    step = b["Hminus_bf"] / a["Hminus_bf"] - 1
    assert -0.025 < step < -0.01


def test_paschen_edge_jump():
    # H I bound-free from n = 3 switches on below ~8204 A (vacuum ~8206): kappa jumps at the edge
    t, pe = 8000.0, 100.0
    k_lo = thermo.continuum_opacity(8195.0, t, pe, AB)
    k_hi = thermo.continuum_opacity(8215.0, t, pe, AB)
    assert k_lo > 1.2 * k_hi


#: (λ [Å], T [K], Pe, the components that must vanish, the components that must be present): SIR's validity
#: windows — H⁻ bound-free below 16418.9 Å; metals for 3999.9 < T < 30000.1 K; He⁻ and H₂⁻ free-free for
#: 1500 <= T <= 16800 K and λ_vac >~ 3038 Å; H₂⁺ 3800–30000 Å; Rayleigh above 1200 Å; C I below 7100 Å,
#: Na I below 9850 Å, Mg I below 9000 Å
_WINDOWS = [
    (16400.0, 5000.0, 10.0, (), ("Hminus_bf",)),
    (16500.0, 5000.0, 10.0, ("Hminus_bf",), ()),
    (5000.0, 3999.0, 1.0, ("CI", "NaI_MgI"), ()),
    (5000.0, 4001.0, 1.0, (), ("CI", "NaI_MgI")),
    (5000.0, 16700.0, 100.0, (), ("Heminus_ff",)),
    (5000.0, 16900.0, 100.0, ("Heminus_ff", "H2minus_ff"), ()),
    (3000.0, 6000.0, 10.0, ("Heminus_ff", "H2minus_ff"), ()),
    (3790.0, 6000.0, 10.0, ("H2plus",), ()),
    (3810.0, 6000.0, 10.0, (), ("H2plus",)),
    (30100.0, 6000.0, 10.0, ("H2plus",), ()),
    (1190.0, 6000.0, 10.0, ("rayleigh_H",), ()),
    (1210.0, 6000.0, 10.0, (), ("rayleigh_H",)),
    (7050.0, 6000.0, 10.0, (), ("CI",)),
    (7150.0, 6000.0, 10.0, ("CI",), ()),
    (9900.0, 6000.0, 10.0, ("NaI_MgI",), ()),
]


@pytest.mark.parametrize("wl, T, pe, absent, present", _WINDOWS)
def test_validity_windows(wl, T, pe, absent, present):
    _, c = comp(wl, T, pe)
    for k in absent:
        assert c[k] == 0, k
    for k in present:
        assert c[k] > 0, k


def test_thomson():
    _, c = comp(5000.0, [6000.0, 20000.0], [10.0, 100.0])
    d = thermo.equation_of_state([6000.0, 20000.0], [10.0, 100.0], AB)
    np.testing.assert_allclose(c["thomson"], 6.653e-25 * d["fe"], rtol=1e-14)


def test_sir_compat_he_rayleigh_negligible():
    k = thermo.continuum_opacity(5000.0, 5000.0, 1.0, AB)
    ks = thermo.continuum_opacity(5000.0, 5000.0, 1.0, AB, sir_compat=True)
    assert abs(ks / k - 1) < 1e-5


def test_kappa_derivatives():
    t = np.array([4200.0, 5777.0, 7000.0, 11500.0])
    pe = np.array([0.3, 10.0, 300.0, 50.0])
    for wl in (5000.0, 6302.0, 15650.0):
        k, dkt, dkp = engine.kappa_deriv_arrays(wl, t, pe, 10 ** (AB - 12))
        h = 1e-5
        fdt = (thermo.continuum_opacity(wl, t * (1 + h), pe, AB) - thermo.continuum_opacity(wl, t * (1 - h), pe, AB)) / (2 * h * t)
        fdp = (thermo.continuum_opacity(wl, t, pe * (1 + h), AB) - thermo.continuum_opacity(wl, t, pe * (1 - h), AB)) / (2 * h * pe)
        np.testing.assert_allclose(dkt, fdt, rtol=1e-5)
        np.testing.assert_allclose(dkp, fdp, rtol=1e-5)
        np.testing.assert_allclose(k, thermo.continuum_opacity(wl, t, pe, AB), rtol=1e-14)


def test_bad_wavelength():
    with pytest.raises(EngineError):
        thermo.continuum_opacity(-5000.0, 5000.0, 1.0, AB)


# --- regression: values computed with the code BEFORE the 2025 speed-up (kappa coefficients).
def test_kappa_regression_against_pre_speedup_values():
    from pyinv import engine
    t = np.array([3200.0, 5800.0, 9000.0, 16000.0])
    pe = np.array([0.02, 30.0, 300.0, 5.0])
    ref = {
        4000.0: [1.0915680184972128e-26, 9.345129243406909e-25, 7.290922271581059e-24, 8.078654546556539e-25],
        6302.0: [1.35680051674385e-26, 1.4539839708866852e-24, 2.2037222797114764e-23, 9.774724322012635e-25],
        15648.0: [1.892914311493329e-27, 4.931758646209159e-25, 4.3122533370212144e-23, 1.6283051941276421e-24],
    }
    for lam, r in ref.items():
        k, comp = engine.kappa_arrays(lam, t, pe, EPS)
        np.testing.assert_allclose(k, r, rtol=1e-10, err_msg=str(lam))
        np.testing.assert_allclose(comp.sum(axis=1), k, rtol=1e-14)
    k, dkt, dkp = engine.kappa_deriv_arrays(5000.0, t, pe, EPS)
    np.testing.assert_allclose(dkt, [-1.2052275595395845e-29, -7.146278863765786e-28, 1.2874651418720177e-26,
                                     -2.6753767489523085e-29], rtol=1e-7)
    np.testing.assert_allclose(dkp, [4.915248019341032e-25, 3.8918014793756856e-26, 1.3745485854813353e-26,
                                     2.6933510911751336e-26], rtol=1e-8)
