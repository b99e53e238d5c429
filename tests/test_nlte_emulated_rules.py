"""Issue 19, the novel-set study: the shortened fallback of the emulated NLTE inversion and the
sensitivity rule for the last cycle's T nodes (pyinv.nlte.emulated, pyinv.nlte.desire)."""
from __future__ import annotations

import numpy as np
import pytest

import pyinv
from pyinv.nlte import columns as C
from pyinv.nlte.emulated import sensitive_positions, sensitive_top, sensitivity_nodes, sensitivity_profile

from helpers import lightweaver_ca_pixel, require_engine

require_engine()


def test_sensitive_top_is_the_highest_layer_seen():
    lt = np.round(np.arange(1.0, -5.31, -0.1), 2)
    s = np.where(lt >= -4.0, 1e4, 10.0)          # the data see nothing above log tau -4
    assert sensitive_top(lt, s, 500.0) == pytest.approx(-4.0)
    assert sensitive_top(lt, s, 5.0) == pytest.approx(-5.3)
    assert sensitive_top(lt, s, 1e5) is None
    s_nan = np.where(lt < -4.5, np.nan, s)        # not computed there: ignored
    assert sensitive_top(lt, s_nan, 5.0) == pytest.approx(-4.5)
    with pytest.raises(ValueError, match="shape"):
        sensitive_top(lt, s[:-1], 500.0)
    with pytest.raises(ValueError, match="dchi2"):
        sensitive_top(lt, s, 0.0)


def test_sensitive_positions():
    lt = np.round(np.arange(1.0, -5.31, -0.1), 2)
    np.testing.assert_allclose(sensitive_positions(lt, -4.0, 5), [1.0, -0.25, -1.5, -2.75, -4.0])
    assert sensitive_positions(lt, -9.0, 4)[-1] == pytest.approx(-5.3)      # clamped to the grid
    assert sensitive_positions(lt, 0.8, 3)[-1] == pytest.approx(0.0)        # at least 1 dex above the bottom
    with pytest.raises(ValueError, match="n >= 2"):
        sensitive_positions(lt, -4.0, 1)


def test_sensitivity_rule_on_a_photospheric_line():
    """Fe I 6301.5/6302.5 in LTE (b = 1): raising T above log tau -4 changes nothing the line sees, so the
    rule's top node sits in the photosphere, below that height, and the nodes end there."""
    lines = pyinv.default_lines()
    grid = pyinv.WavelengthGrid.from_regions([("1,2", -400, 20, 1400)], lines)
    pytest.importorskip("lightweaver", reason="lightweaver not installed (FAL C's tau scale comes from it)")
    model = C.base_model()                         # FAL C on log tau 1.0 ... -5.3
    lt = np.asarray(model.log_tau)
    s = sensitivity_profile(model, lines, grid, lambda m: None, 1e-3, top_range=(-5.0, 0.0))
    m = (lt >= -5.0) & (lt <= 0.0)
    assert np.all(np.isfinite(s[m])) and np.all(np.isnan(s[~m]))
    assert np.max(s[(lt <= -4.0) & m]) < 1.0          # T above -4 is invisible to Fe I
    top = sensitive_top(lt, s, 500.0)
    assert top is not None and -4.0 < top < -0.5
    pos, rec = sensitivity_nodes(model, lines, grid, lambda m: None, 5, sigma=1e-3, dchi2=500.0,
                                 top_range=(-5.0, 0.0))
    assert rec["top"] == pytest.approx(top) and pos[-1] == pytest.approx(top) and pos[0] == pytest.approx(lt.max())


@pytest.fixture(scope="module")
def lw_pixel():
    return lightweaver_ca_pixel(lambda lt: 250.0 / (1 + np.exp((lt + 3) / 0.3)))


def _t_rms(res, truth):
    lt = truth.log_tau
    m = (lt <= -1) & (lt >= -5.3)
    return float(np.sqrt(np.mean((res.atmosphere.T[m] - truth.T[m]) ** 2)))


def test_short_fallback_passes_on_its_second_check(lw_pixel, monkeypatch):
    """The first check made to fail: the short fallback continues with the check's b, calls the backend
    once more, passes its own check and stops there (2 calls), recorded in the provenance."""
    from pyinv.nlte import emulated, invert_pixel_nlte

    lines, grid, be, guess, truth, obs, cfg = lw_pixel
    real = emulated.departure_check
    seen = []

    def first_fails(*a, **k):
        out = real(*a, **k)
        seen.append(out["profile_rms"])
        return {**out, "profile_rms": 1.0} if len(seen) == 1 else out

    monkeypatch.setattr(emulated, "departure_check", first_fails)
    r = invert_pixel_nlte(obs, guess, lines, grid, cfg, backend=be, departures="emulated")
    p = r.provenance
    assert len(seen) == 2 and p["check"]["passed"] is False and p["fallback"] is True
    assert p["fallback_kind"] == "short" and p["short_fallback"]["passed"] is True
    assert p["short_fallback"]["calls"] == 1 and r.backend_calls == 2
    assert p["short_fallback"]["profile_rms"] == pytest.approx(seen[1]) and seen[1] <= 0.01
    assert r.result.ok and _t_rms(r.result, truth) < 200.0


def test_short_then_full_and_full_fallback(lw_pixel):
    from pyinv.nlte import invert_pixel_nlte

    lines, grid, be, guess, truth, obs, cfg = lw_pixel
    s = invert_pixel_nlte(obs, guess, lines, grid, cfg, backend=be, departures="emulated", check_threshold=0.0)
    p = s.provenance
    assert p["fallback"] is True and p["fallback_kind"] == "short+full"
    assert p["short_fallback"]["calls"] == 1 and p["short_fallback"]["passed"] is False
    assert s.backend_calls >= 3 and s.result.ok           # check, short call, then the backend iterations
    f = invert_pixel_nlte(obs, guess, lines, grid, cfg, backend=be, departures="emulated", check_threshold=0.0,
                          fallback="full")
    assert f.provenance["fallback_kind"] == "full" and "short_fallback" not in f.provenance
    assert f.backend_calls >= 2 and f.result.ok
    with pytest.raises(ValueError, match="fallback"):
        invert_pixel_nlte(obs, guess, lines, grid, cfg, backend=be, departures="emulated", fallback="half")


def test_sensitivity_placement_in_the_emulated_inversion(lw_pixel):
    from pyinv.nlte import invert_pixel_nlte

    lines, grid, be, guess, truth, obs, cfg = lw_pixel
    r = invert_pixel_nlte(obs, guess, lines, grid, cfg, backend=be, departures="emulated",
                          t_placement="sensitivity", sensitivity_dchi2=500.0)
    t = r.provenance["t_nodes"]
    assert t["rule"] == "sensitivity" and t["dchi2"] == 500.0 and len(t["positions"]) == 4
    assert t["positions"][0] == pytest.approx(float(np.max(guess.log_tau)))
    assert t["top"] is None or t["positions"][-1] == pytest.approx(min(t["top"], float(np.max(guess.log_tau)) - 1))
    assert r.result.ok and _t_rms(r.result, truth) < 250.0
    with pytest.raises(ValueError, match="emulated"):
        invert_pixel_nlte(obs, guess, lines, grid, cfg, backend=be, t_placement="sensitivity")
    with pytest.raises(ValueError, match="t_placement"):
        invert_pixel_nlte(obs, guess, lines, grid, cfg, backend=be, departures="emulated", t_placement="random")


def test_failed_last_cycle_keeps_the_emulated_fit(lw_pixel, monkeypatch):
    """The check passes but the last cycle with the backend's b and Δ fails: the emulated result is kept with
    its own fit to the observation (it was inverted against the observation itself, so Δ is not added); with
    the refinement (the default) that result is what the refinement starts from."""
    from pyinv.physics import inversion as inv
    from pyinv.nlte import invert_pixel_nlte

    lines, grid, be, guess, truth, obs, cfg = lw_pixel
    real = inv.invert_pixel
    plain = []

    def fail_with_delta(stokes, *a, **k):
        out = real(stokes, *a, **k)
        if np.array_equal(stokes, obs):
            plain.append(out)                     # the emulated cycles: against the observation itself
            return out
        import dataclasses
        return dataclasses.replace(out, status=1)  # the cycle against obs - Δ fails

    monkeypatch.setattr(inv, "invert_pixel", fail_with_delta)
    r = invert_pixel_nlte(obs, guess, lines, grid, cfg, backend=be, departures="emulated", t_refine=None)
    assert r.provenance["check"]["passed"] is True and r.provenance["fallback"] is False
    assert plain and r.result is plain[-1]
    np.testing.assert_array_equal(r.result.fit, plain[-1].fit)
    assert float(np.sqrt(np.mean((r.result.fit[0] - obs[0]) ** 2))) < 0.02
    plain.clear()
    d = invert_pixel_nlte(obs, guess, lines, grid, cfg, backend=be, departures="emulated")
    assert d.provenance["refine"]["chi2_reduced_start"] == plain[-1].chi2_reduced
    assert d.result.chi2_reduced <= plain[-1].chi2_reduced
