"""Atomic data (Appendix A transcription), equation of state identities, P_e(P_g) inverse."""
from __future__ import annotations

import importlib.util
import itertools

import numpy as np
import pytest

from helpers import AB, EPS, ROOT, SHARED, require_engine

require_engine()
from pyinv.physics import thermo  # noqa: E402
from pyinv.engine import EngineError  # noqa: E402

SPEC = SHARED / "docs" / "spec-forward.md"


@pytest.fixture(scope="module")
def appendix_a():
    if not SPEC.is_file():
        pytest.skip("../shared/docs/spec-forward.md is not present")
    spec = importlib.util.spec_from_file_location("gen_atomic_data", ROOT / "tools" / "gen_atomic_data.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod, mod.parse_appendix_a(SPEC.read_text())


def test_partition_functions_match_spec_table(appendix_a):
    """Compiled U_I, U_II, U_III agree with an independent Python evaluation of the spec text."""
    mod, rows = appendix_a
    temps = np.concatenate([np.linspace(1500.0, 40000.0, 157), [3999.0, 4001.0, 5399.0, 5401.0, 8999.0,
                                                                  9001.0, 13001.0, 16201.0, 30001.0]])
    from pyinv import engine
    worst = 0.0
    for z in range(1, 93):
        u, du, w, c1, c2 = engine.atomic_arrays(z, temps)
        assert w == rows[z]["w"] and c1 == rows[z]["chi1"] and c2 == rows[z]["chi2"]
        stages = rows[z]["U"]
        for j, s in enumerate(("U_I", "U_II", "U_III")):
            ref = np.array([mod.evaluate(stages[s], t, stages) for t in temps])
            err = np.abs(u[:, j] - ref) / np.maximum(np.abs(ref), 1e-300)
            worst = max(worst, float(np.max(np.where(ref == 0, np.abs(u[:, j]), err))))
    assert worst < 1e-13


def test_partition_function_spot_values():
    # H: 2 below 13000 K; Fe I: 9 + exp(P(X)) at 5040 K (X = 0) = 9 + exp(2.930047)
    u = thermo.partition_functions(1, [5000.0, 14000.0])
    assert u[0, 0] == 2.0 and u[0, 1] == 1.0 and u[0, 2] == 0.0
    assert u[1, 0] == pytest.approx(1.51 + 3.8e-5 * 14000.0, rel=1e-14)
    # hand-evaluated rules of Appendix A (independent of the table parser)
    assert thermo.partition_functions(22, 5000.0)[0] == pytest.approx(16.37 - 0.0002838 * 5000 + 5.819e-7 * 5000**2, rel=1e-14)
    assert thermo.partition_functions(23, 2000.0)[2] == pytest.approx(0.0024 * 2000, rel=1e-14)
    assert thermo.partition_functions(11, 6000.0)[0] == pytest.approx(-0.83 + 0.000566 * 6000, rel=1e-14)
    x = np.log(5040.0 / 4500.0)
    mg = 1 + np.exp(-4.027262 - 6.173172 * x - 2.889176 * x**2 - 2.393895 * x**3 - 0.784131 * x**4)
    assert thermo.partition_functions(12, 4500.0)[0] == pytest.approx(mg, rel=1e-14)
    assert thermo.partition_functions(4, 3000.0)[0] == 1.0          # max(1, 0.631 + 7.032e-5 T)
    fe = thermo.partition_functions(26, 5040.0)
    assert fe[0] == pytest.approx(9.0 + np.exp(2.930047), rel=1e-14)
    assert fe[1] == pytest.approx(10.0 + np.exp(3.501597), rel=1e-14)


def test_partition_function_derivatives():
    from pyinv import engine
    t = np.array([3500.0, 4500.0, 6000.0, 7777.0, 11000.0])
    h = 1e-3
    for z in (1, 6, 11, 12, 20, 22, 26, 28):
        _, du, *_ = engine.atomic_arrays(z, t)
        up, *_ = engine.atomic_arrays(z, t + h)
        um, *_ = engine.atomic_arrays(z, t - h)
        fd = (up - um) / (2 * h)
        np.testing.assert_allclose(du, fd, rtol=1e-6, atol=1e-12)


GRID_T = np.array([2500.0, 3500.0, 4500.0, 5500.0, 6500.0, 8000.0, 10000.0, 15000.0, 25000.0])
GRID_PE = np.array([1e-4, 1e-2, 1.0, 1e2, 1e4])


def _grid():
    t, pe = np.meshgrid(GRID_T, GRID_PE, indexing="ij")
    return t.ravel(), pe.ravel()


def test_eos_identities():
    t, pe = _grid()
    d = thermo.equation_of_state(t, pe, AB)
    nonh = EPS[1:].sum()
    pg = pe * (1 + (d["f1"] + d["f2"] + d["f3"] + d["f4"] + d["f5"] + nonh) / d["fe"])
    np.testing.assert_allclose(d["Pg"], pg, rtol=1e-13)
    # charge conservation
    np.testing.assert_allclose(d["fe"], d["f2"] - d["f3"] + d["f4"] + d["g1"], rtol=1e-12)
    # hydrogen nuclei conservation (exact up to SIR's molecule refinement)
    hcons = d["f1"] + d["f2"] + d["f3"] + 2 * d["f4"] + 2 * d["f5"]
    np.testing.assert_allclose(hcons, 1.0, atol=2e-6)
    # Saha ratios
    np.testing.assert_allclose(d["f2"] / d["f1"], d["g2"], rtol=1e-13)
    np.testing.assert_allclose(d["f3"] / d["f1"], d["g3"], rtol=1e-13)
    # P_H' and number densities
    np.testing.assert_allclose(d["PH"], pe / d["fe"], rtol=1e-13)
    np.testing.assert_allclose(d["ne"], pe / (1.38054e-16 * t), rtol=1e-13)
    np.testing.assert_allclose(d["nH"], d["PH"] / (1.38054e-16 * t), rtol=1e-13)
    # mean molecular weight and density
    from pyinv import engine
    w = np.array([engine.atomic_arrays(z, [5000.0])[2] for z in range(1, 93)])
    mu = (EPS * w).sum() / (EPS.sum() + d["fe"])
    np.testing.assert_allclose(d["mu_m"], mu, rtol=1e-13)
    np.testing.assert_allclose(d["rho"], mu * d["Pg"] / (8.31451e7 * t), rtol=1e-13)
    np.testing.assert_allclose(d["per_gram"], 6.023e23 / (EPS * w).sum(), rtol=1e-13)
    # neutral fractions are fractions of the element
    assert np.all(d["p_He"] <= EPS[1] * (1 + 1e-14)) and np.all(d["p_He"] > 0)
    assert np.all(d["p_Na"] <= EPS[10] * (1 + 1e-14))


def test_hot_tenuous_hydrogen_root_is_not_quantised():
    """§4.3: the double-precision, cancellation-free root gives a small but correct f1."""
    t = np.array([15000.0, 20000.0, 30000.0])
    pe = np.array([1e-3, 1e-3, 1e-2])
    d = thermo.equation_of_state(t, pe, AB)
    assert np.all(d["f1"] > 0) and np.all(d["f1"] < 1e-5)
    # pure Saha for hydrogen: f1 (1 + g2) ~ 1 when molecules and H- are negligible
    np.testing.assert_allclose(d["f1"] * (1 + d["g2"] + d["g3"]), 1.0, rtol=1e-9)


def test_sir_compat_non_hydrogen_nuclei():
    t, pe = _grid()
    d = thermo.equation_of_state(t, pe, AB)
    c = thermo.equation_of_state(t, pe, AB, sir_compat=True)
    np.testing.assert_allclose(c["Pg"] - d["Pg"], pe * (0.1014 - EPS[1:].sum()) / d["fe"], rtol=1e-9)
    np.testing.assert_allclose(c["f1"], d["f1"], rtol=0)


def test_pe_from_pg_round_trip():
    t, pe = _grid()
    d = thermo.equation_of_state(t, pe, AB)
    back = thermo.pe_from_pg(t, d["Pg"], AB)
    np.testing.assert_allclose(back, pe, rtol=1e-8)
    # and the gas pressure itself is reproduced
    d2 = thermo.equation_of_state(t, back, AB)
    np.testing.assert_allclose(d2["Pg"], d["Pg"], rtol=1e-10)


def test_pe_from_pg_random():
    rng = np.random.default_rng(1)
    t = rng.uniform(2000.0, 30000.0, 200)
    pg = 10 ** rng.uniform(-3.0, 7.0, 200)
    pe = thermo.pe_from_pg(t, pg, AB)
    d = thermo.equation_of_state(t, pe, AB)
    np.testing.assert_allclose(d["Pg"], pg, rtol=1e-9)


def test_eos_derivatives_against_finite_differences():
    t = np.array([4100.0, 5777.0, 7000.0, 11500.0])
    pe = np.array([0.1, 10.0, 300.0, 50.0])
    d = thermo.equation_of_state(t, pe, AB, derivatives=True)
    for key in ("f1", "f5", "fe", "g3", "Pg", "rho", "p_Na"):
        for var, dvar, arr_t, arr_p in (("T", 1e-5 * t, 1, 0), ("Pe", 1e-5 * pe, 0, 1)):
            h = dvar
            plus = thermo.equation_of_state(t + h * arr_t, pe + h * arr_p, AB)[key]
            minus = thermo.equation_of_state(t - h * arr_t, pe - h * arr_p, AB)[key]
            fd = (plus - minus) / (2 * h)
            np.testing.assert_allclose(d[f"d{key}_d{var}"], fd, rtol=2e-5, atol=0, err_msg=f"{key} {var}")


@pytest.mark.parametrize("t,pe", [(0.0, 1.0), (-10.0, 1.0), (5000.0, 0.0), (5000.0, -1.0),
                                  (np.nan, 1.0), (5000.0, np.inf)])
def test_eos_rejects_invalid_input(t, pe):
    with pytest.raises(EngineError):
        thermo.equation_of_state(t, pe, AB)


def test_abundance_validation():
    with pytest.raises(ValueError):
        thermo.equation_of_state(5000.0, 1.0, AB[:50])


# --- regression: values computed with the code BEFORE the 2025 speed-up (T-factor caching).
_REG_T = np.array([3200.0, 5800.0, 9000.0, 16000.0])
_REG_PE = np.array([0.02, 30.0, 300.0, 5.0])
_REG_EOS = {   # column index of eos_arrays -> values
    4: [3.5148179511067178e-12, 4.3681443966918605e-05, 0.17239152611466615, 0.999990611836],
    9: [7.261540582678849e-06, 9.485523044949035e-05, 0.0006788464266693883, 0.10168107276782273],
    14: [2754.3770587545687, 216583.86717616682, 1733.398987289165, 4.538557239762472],
    21: [2950.6319734144827, 238386.8253424641, 2209.554717704393, 9.9997867908415],
    22: [1.302556093401364, 1.3024009195991186, 1.125710345497955, 0.6512684532560019],
    23: [1.4445242625376923e-08, 6.438167786078084e-07, 3.3239329058659685e-09, 4.895467138292832e-12],
}


def test_eos_regression_against_pre_speedup_values():
    from pyinv import engine
    out = engine.eos_arrays(_REG_T, _REG_PE, EPS)
    for col, ref in _REG_EOS.items():
        np.testing.assert_allclose(out[:, col], ref, rtol=1e-10, err_msg=engine.EOS_FIELDS[col])
    # P_e(P_g) inverts to its 1e-11 tolerance in ln P_g
    pe = engine.pe_from_pg_arrays(_REG_T, out[:, 21], EPS)
    np.testing.assert_allclose(pe, _REG_PE, rtol=1e-10)
    # derivatives (central differences before the change)
    _, dt, dpe = engine.eos_arrays(_REG_T, _REG_PE, EPS, derivatives=True)
    np.testing.assert_allclose(dt[:, 21], [-8.338716366206237, -462.8707727329997, -3.507912452111365,
                                           -4.428153468164868e-06], rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(dpe[:, 21], [193611.48016859413, 11205.684458748792, 12.619544768200639,
                                            2.0006362499828496], rtol=1e-8)
    np.testing.assert_allclose(dt[:, 22], [-2.6084554366016345e-08, -3.185547896348399e-07,
                                           -0.0002807759110124903, -2.884101132280085e-07], rtol=1e-6)
