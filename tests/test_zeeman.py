"""Engine Zeeman patterns (fortran/zeeman.f90, spec-forward §7.7) against pyinv.lines' exact-rational
reference, sum rules and the Landé factors of well-known lines."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import pyinv
from pyinv import engine
from pyinv.lines import SpectralLine


def _line(lo, up, geff=None):
    return SpectralLine(index=1, element="Fe", ion=1, wavelength=6000.0, enhancement=1.0, excitation=1.0,
                        loggf=-1.0, term_lower=lo, term_upper=up, geff_override=geff)


def _engine(lo, up, geff=None):
    (ll, sl, jl), (lu, su, ju) = lo, up
    return engine.zeeman_engine(2 * sl + 1, ll, jl, 2 * su + 1, lu, ju, geff)


def _combos():
    out = []
    for s2 in range(0, 7):           # S = 0 .. 3 (half-integers included)
        S = s2 / 2
        for L in (0, 0.5, 1, 1.5, 2, 3, 3.5, 4, 5):
            for J in np.arange(abs(L - S), L + S + 0.01, 1.0):
                out.append((L, S, float(J)))
    return out


def _pairs():
    terms = _combos()
    rng = np.random.default_rng(3)
    pairs = []
    for lo, up in itertools.product(terms, terms):
        if abs(lo[2] - up[2]) <= 1 and not (lo[2] == 0 and up[2] == 0) and (2 * (lo[2] - up[2])) % 2 == 0:
            pairs.append((lo, up))
    idx = rng.choice(len(pairs), size=min(300, len(pairs)), replace=False)
    return [pairs[i] for i in idx]


@pytest.mark.parametrize("lo,up", _pairs())
def test_engine_matches_reference(lo, up):
    ref = pyinv.zeeman_components(_line(lo, up))
    got = _engine(lo, up)
    for g, (rs, rw) in enumerate([(ref.pi_shift, ref.pi_strength), (ref.red_shift, ref.red_strength),
                                  (ref.blue_shift, ref.blue_strength)]):
        s, w = got[g]
        keep = w > 1e-12  # the engine lists zero-strength components too (e.g. M = 0 -> 0 for dJ = 0)
        order_e, order_r = np.argsort(s[keep]), np.argsort(rs)
        np.testing.assert_allclose(s[keep][order_e], rs[order_r], atol=1e-12)
        np.testing.assert_allclose(w[keep][order_e], rw[order_r], atol=1e-12)


@pytest.mark.parametrize("lo,up", _pairs()[:100])
def test_sum_rules(lo, up):
    """Unit strength per group; pi symmetric about 0; sigma_r/sigma_b mirror images."""
    pi, red, blue = _engine(lo, up)
    for s, w in (pi, red, blue):
        assert abs(w.sum() - 1) < 1e-12
    assert abs(np.sum(pi[0] * pi[1])) < 1e-12
    np.testing.assert_allclose(np.sort(red[0]), np.sort(-blue[0]), atol=1e-12)


@pytest.mark.parametrize("lo,up,geff", [
    ((1, 2, 2.0), (2, 2, 2.0), 1.6667),   # Fe I 6301.5  5P2-5D2
    ((1, 2, 1.0), (2, 2, 0.0), 2.5),      # Fe I 6302.5  5P1-5D0 (J_u = 0: g(lower) with J = 1)
    ((2, 2, 0.0), (2, 3, 1.0), 3.0),      # Fe I 5250.2  5D0-7D1 (J_l = 0: g(upper) with J = 1)
    ((2, 3, 1.0), (2, 3, 1.0), 3.0),      # Fe I 15648.5 7D1-7D1 (equal g: triplet)
])
def test_effective_lande(lo, up, geff):
    """Centre of gravity of the sigma_r group: sum S_k s_k = -g_eff."""
    _, red, _ = _engine(lo, up)
    assert abs(-np.sum(red[0] * red[1]) - geff) < 1e-4


def test_triplet_and_override():
    pi, red, blue = _engine((1, 2, 1.0), (2, 2, 0.0))
    assert pi[0].size == red[0].size == blue[0].size == 1
    assert red[0][0] == pytest.approx(-2.5) and blue[0][0] == pytest.approx(2.5)
    pi, red, blue = _engine((3.5, 3, 5.0), (3.5, 3, 4.0), geff=1.45)
    assert red[0][0] == pytest.approx(-1.45) and pi[0][0] == 0.0 and blue[1][0] == 1.0


@pytest.mark.parametrize("lo,up", [((1, 1, 0.0), (1, 1, 0.0)), ((1, 1, 0.0), (2, 1, 2.0)),
                                   ((10, 1, 11.0), (11, 1, 11.0)), ((-1, 1, 1.0), (1, 1, 1.0))])
def test_bad_patterns_raise(lo, up):
    with pytest.raises(pyinv.EngineError):
        _engine(lo, up)
