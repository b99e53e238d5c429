"""Atmosphere / AtmosphereErrors: construction, validation, SIR column layout, stacks."""
import numpy as np
import pytest

from pyinv.atmosphere import Atmosphere, AtmosphereErrors


def _table(ndep=5, ncol=11):
    a = np.zeros((ndep, ncol))
    a[:, 0] = np.linspace(1.0, -3.0, ndep)
    a[:, 1] = np.linspace(8000.0, 4500.0, ndep)
    a[:, 2] = np.logspace(3, -1, ndep)
    a[:, 3] = 1e5
    a[:, 4] = 500.0
    a[:, 5] = -2e4
    a[:, 6] = 45.0
    a[:, 7] = 400.0
    return a


def test_from_array_roundtrip_and_optional_columns():
    a = _table()
    atm = Atmosphere.from_array(a, macro=0.7, filling=1.0, stray=3.0)
    assert atm.ndep == 5 and not atm.stacked
    assert atm.z is None and atm.Pg is None and atm.rho is None  # all-zero columns read as absent
    np.testing.assert_array_equal(atm.to_array(), a)
    assert atm.macro == 0.7 and atm.stray == 3.0
    assert atm.phi[0] == 400.0  # azimuth never wrapped
    a[:, 9] = 1e5
    atm = Atmosphere.from_array(a[:, :11])
    assert atm.Pg is not None and atm.z is None
    atm8 = Atmosphere.from_array(_table(ncol=8))
    assert atm8.to_array().shape == (5, 11)


def test_negative_B_flips_direction():
    a = _table()
    a[2, 4] = -800.0
    a[2, 6] = 30.0
    a[2, 7] = 10.0
    atm = Atmosphere.from_array(a)
    assert atm.B[2] == 800.0 and atm.gamma[2] == 150.0 and atm.phi[2] == 190.0
    assert atm.gamma[1] == 45.0 and atm.phi[1] == 400.0


@pytest.mark.parametrize("col,row,value,words", [
    (1, 3, -10.0, ["'T'", "depth index 3", "log tau"]),
    (2, 1, 0.0, ["'Pe'", "depth index 1"]),
    (5, 4, np.nan, ["'vlos'", "not finite", "depth index 4"]),
    (6, 0, 190.0, ["'gamma'", "[0, 180]", "depth index 0"]),
    (3, 2, np.inf, ["'vmic'", "not finite"]),
])
def test_validation_messages(col, row, value, words):
    a = _table()
    a[row, col] = value
    with pytest.raises(ValueError) as exc:
        Atmosphere.from_array(a)
    for w in words:
        assert w in str(exc.value)


def test_log_tau_must_decrease():
    a = _table()
    a[3, 0] = a[2, 0] + 0.1
    with pytest.raises(ValueError, match="strictly decreasing.*log tau\\[2\\]"):
        Atmosphere.from_array(a)
    a = _table()[::-1].copy()
    with pytest.raises(ValueError, match="strictly decreasing"):
        Atmosphere.from_array(a)


def test_stack_and_helpers():
    a = np.stack([_table(), _table()])
    a[1, :, 1] += 100.0
    atm = Atmosphere.from_array(a, macro=[0.1, 0.2])
    assert atm.stacked and atm.nmodels == 2 and len(atm) == 2
    assert atm.to_array().shape == (2, 5, 11)
    np.testing.assert_array_equal(atm.to_array(), a)
    one = atm[1]
    assert not one.stacked and one.macro == 0.2 and one.T[0] == a[1, 0, 1]
    assert [m.macro for m in atm] == [0.1, 0.2]
    with pytest.raises(ValueError, match="macro"):
        Atmosphere.from_array(a, macro=[0.1, 0.2, 0.3])
    b = a.copy()
    b[1, :, 0] -= 0.05
    with pytest.raises(ValueError, match="share one log tau"):
        Atmosphere.from_array(b)
    c = one.with_columns(B=1200.0, macro=1.5)
    assert np.all(c.B == 1200.0) and c.macro == 1.5 and np.all(one.B == 500.0)
    with pytest.raises(ValueError, match="'T'"):
        one.with_columns(T=-1.0)
    d = one.copy()
    d.T[0] = 1.0
    assert one.T[0] != 1.0


def test_bad_shapes():
    with pytest.raises(ValueError, match="8\\|11"):
        Atmosphere.from_array(np.zeros((5, 9)))


def test_errors_container_has_no_physical_checks():
    a = np.zeros((4, 11))
    a[:, 0] = [1.0, 0.0, -1.0, -2.0]
    e = AtmosphereErrors.from_array(a)
    assert np.all(e.T == 0.0) and e.ndep == 4
    np.testing.assert_array_equal(e.to_array(), a)
