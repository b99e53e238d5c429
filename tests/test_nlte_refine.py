"""Issue 19: the regularised temperature refinement of the emulated NLTE inversion (pyinv.nlte.refine,
``invert_pixel_nlte(..., t_refine="map")``)."""
from __future__ import annotations

import numpy as np
import pytest

import pyinv
from pyinv.nlte.refine import anchored_departures, gp_precision, hat_basis, refine_temperature

from helpers import lightweaver_ca_pixel, require_engine

require_engine()


def test_hat_basis_interpolates_between_knots():
    lt = np.round(np.arange(1.0, -5.31, -0.1), 2)
    knots, H = hat_basis(lt, 0.3)
    assert knots[0] == pytest.approx(1.0) and knots[-1] == pytest.approx(-5.3) and knots.size == 22
    np.testing.assert_allclose(H.sum(axis=1), 1.0, atol=1e-12)            # a partition of unity
    for k, z in enumerate(knots):                                         # 1 at its knot, 0 at the others
        row = H[np.argmin(np.abs(lt - z))]
        assert row[k] == pytest.approx(1.0) and np.sum(np.abs(row)) == pytest.approx(1.0)
    k2, H2 = hat_basis(lt, 0.4)                                           # the top is always a knot
    assert k2[-1] == pytest.approx(-5.3) and k2[-2] > -5.3 and np.allclose(H2.sum(axis=1), 1.0)
    with pytest.raises(ValueError, match="spacing"):
        hat_basis(lt, 0.0)


def test_gp_precision_is_the_inverse_covariance():
    knots = np.array([1.0, 0.7, 0.4, 0.1])
    P = gp_precision(knots, 300.0, 1.3)
    d = np.subtract.outer(knots, knots)
    cov = 300.0 ** 2 * (np.exp(-0.5 * (d / 1.3) ** 2) + 1e-6 * np.eye(4))
    np.testing.assert_allclose(P @ cov, np.eye(4), atol=1e-6)
    assert np.allclose(P, P.T) and np.all(np.linalg.eigvalsh(P) > 0)
    with pytest.raises(ValueError, match="amplitude"):
        gp_precision(knots, 0.0, 1.0)


def test_anchored_departures_are_the_backends_at_the_anchor():
    """b = b_backend(anchor) × emulator(model) / emulator(anchor): the backend's own b at the anchor, the
    emulator's relative change elsewhere."""
    from pyinv.nlte import Departures, NlteLine
    from pyinv.nlte.emulator import pretrained_emulator

    emu = pretrained_emulator()
    lines = [NlteLine(8, "CaII", 2, 4)]
    anchor = pyinv.models.hsra()
    lt = np.asarray(anchor.log_tau)
    d_emu = emu.departures(anchor, lines)
    ramp = 1.0 + 0.2 * (lt - lt.min()) / np.ptp(lt)
    backend = Departures(lt, [8], d_emu.b_lower * 1.3, d_emu.b_upper * ramp)      # "the backend's" b
    at = anchored_departures(emu, lines, backend, anchor)
    a = at(anchor)
    np.testing.assert_allclose(a.b_lower, backend.b_lower, rtol=1e-12)
    np.testing.assert_allclose(a.b_upper, backend.b_upper, rtol=1e-12)
    other = pyinv.hydrostatic(anchor.with_columns(T=np.asarray(anchor.T) + 200.0 * (lt < -2.0)))
    o, e = at(other), emu.departures(other, lines)
    np.testing.assert_allclose(o.b_lower, e.b_lower * 1.3, rtol=1e-10)
    np.testing.assert_allclose(o.b_upper, e.b_upper * ramp, rtol=1e-10)


@pytest.fixture(scope="module")
def fe_bump():
    """Fe I 6301.5/6302.5 in LTE (b = 1: departures_at gives None) on HSRA, the truth with a +250 K layer
    at log tau -1.8 (0.4 dex wide); noise-free observations."""
    lines = pyinv.default_lines()
    grid = pyinv.WavelengthGrid.from_regions([("1,2", -400, 20, 1400)], lines)
    start = pyinv.models.hsra(vmic=1e5)
    lt = np.asarray(start.log_tau)
    truth = pyinv.hydrostatic(start.with_columns(T=np.asarray(start.T) + 250.0 * np.exp(-0.5 * ((lt + 1.8) / 0.4) ** 2),
                                                 vlos=5e4))
    obs = pyinv.synthesize(truth, lines, grid)
    return lines, grid, start, truth, obs


def _rms(a, b, lt, lo=-3.0, hi=-0.5):
    m = (lt >= lo) & (lt <= hi)
    return float(np.sqrt(np.mean((np.asarray(a.T)[m] - np.asarray(b.T)[m]) ** 2)))


def test_refinement_recovers_a_layer_the_data_see(fe_bump):
    lines, grid, start, truth, obs = fe_bump
    lt = np.asarray(start.log_tau)
    m, fit, rec = refine_temperature(obs, start, start, lines, grid, lambda model: None, np.zeros_like(obs),
                                     snr=1000.0, weights=(1, 1, 1, 1), max_iterations=6)
    assert rec["accepted"] and rec["merit"] < 0.05 * rec["merit_start"]
    assert rec["iterations"] >= 1 and rec["syntheses"] > rec["knots"] and rec["method"] == "map"
    assert rec["prior_amplitude_K"] == 300.0 and rec["prior_length_dex"] == 1.3
    assert _rms(m, truth, lt) < 0.4 * _rms(start, truth, lt)          # the layer is found (130 -> 41 K)
    np.testing.assert_allclose(fit, pyinv.synthesize(m, lines, grid), atol=1e-12)   # the fit is the model's
    v = np.asarray(m.vlos)
    assert abs(float(np.mean(v)) - 5e4) < 1e4                          # the line-of-sight velocity too


def test_refinement_prior_pulls_back_where_the_data_are_blind(fe_bump):
    """Above log tau -4 Fe I sees nothing: a start that is 300 K off there is brought back to the prior's
    centre (the truth there), and a stiffer prior (smaller amplitude) keeps the correction smaller."""
    lines, grid, start, truth, obs = fe_bump
    lt = np.asarray(start.log_tau)
    off = pyinv.hydrostatic(truth.with_columns(T=np.asarray(truth.T) + 300.0 * (lt < -3.0)))
    m, _, rec = refine_temperature(obs, off, start, lines, grid, lambda model: None, np.zeros_like(obs),
                                   snr=1000.0, weights=(1, 1, 1, 1), max_iterations=6)
    top = lt <= -3.5
    assert rec["accepted"]
    assert np.max(np.abs(np.asarray(m.T)[top] - np.asarray(truth.T)[top])) < 0.5 * 300.0
    kw = dict(snr=1000.0, weights=(1, 1, 1, 1), max_iterations=6)
    free, _, _ = refine_temperature(obs, start, start, lines, grid, lambda model: None, np.zeros_like(obs), **kw)
    stiff, _, _ = refine_temperature(obs, start, start, lines, grid, lambda model: None, np.zeros_like(obs),
                                     amplitude=1.0, **kw)

    def change(a):
        return float(np.max(np.abs(np.asarray(a.T) - np.asarray(start.T))))

    assert change(stiff) < 0.7 * change(free)


def test_refinement_refuses_bad_input(fe_bump):
    lines, grid, start, truth, obs = fe_bump
    z = np.zeros_like(obs)
    with pytest.raises(ValueError, match="snr"):
        refine_temperature(obs, start, start, lines, grid, lambda m: None, z, snr=0.0, weights=(1, 1, 1, 1))
    other = pyinv.models.hsra(full=True)
    with pytest.raises(ValueError, match="grid"):
        refine_temperature(obs, start, other, lines, grid, lambda m: None, z, snr=1e3, weights=(1, 1, 1, 1))


def test_t_refine_in_the_emulated_inversion(monkeypatch):
    """``t_refine="map"`` after the check: no further backend call, the record in the provenance, the result's
    fit the refined model's NLTE profile; the default ("auto") is the refinement with the emulator's b and
    its check threshold 0.03 (0.01 for the node result); refused with the backend's departures and for unknown
    names."""
    from pyinv.nlte import invert_pixel_nlte

    # a cold chromosphere, wider than any training bump
    lines, grid, be, guess, truth, obs, cfg = lightweaver_ca_pixel(
        lambda lt: -600.0 * np.exp(-0.5 * ((lt + 3.6) / 1.0) ** 2))
    lt = np.asarray(truth.log_tau)
    plain = invert_pixel_nlte(obs, guess, lines, grid, cfg, backend=be, departures="emulated", t_refine=None)
    ref = invert_pixel_nlte(obs, guess, lines, grid, cfg, backend=be, departures="emulated", t_refine="map")
    auto = invert_pixel_nlte(obs, guess, lines, grid, cfg, backend=be, departures="emulated")
    assert "refine" not in plain.provenance
    assert auto.provenance["refine"] == ref.provenance["refine"]
    np.testing.assert_array_equal(auto.result.atmosphere.T, ref.result.atmosphere.T)
    assert plain.provenance["check"]["threshold"] == 0.01 and ref.provenance["check"]["threshold"] == 0.03
    rec = ref.provenance["refine"]
    assert ref.backend_calls == plain.backend_calls == 1 and ref.provenance["check"]["passed"]
    assert rec["accepted"] and rec["merit"] < rec["merit_start"] and ref.result.syntheses > plain.result.syntheses
    m = (lt <= -1.0) & (lt >= -5.3)

    def t_rms(r):
        return float(np.sqrt(np.mean((np.asarray(r.result.atmosphere.T)[m] - np.asarray(truth.T)[m]) ** 2)))

    assert t_rms(ref) < 150.0 and t_rms(plain) < 250.0
    # the fit is the refined model's engine profile with the backend's b moved by the emulator, plus delta
    chi_fit = float(np.mean((ref.result.fit[0] - obs[0]) ** 2)) * 1e6
    assert chi_fit < 10.0 and np.isfinite(ref.result.chi2_reduced)
    with pytest.raises(ValueError, match="emulated"):
        invert_pixel_nlte(obs, guess, lines, grid, cfg, backend=be, t_refine="map")
    with pytest.raises(ValueError, match="t_refine"):
        invert_pixel_nlte(obs, guess, lines, grid, cfg, backend=be, departures="emulated", t_refine="spline")
    from pyinv.nlte.desire import NlteSolver

    # a refinement that fails keeps the node result and says why
    import pyinv.nlte.refine as refine_mod

    def broken(*a, **k):
        raise ValueError("no model")

    with monkeypatch.context() as mp:
        mp.setattr(refine_mod, "refine_temperature", broken)
        kept = invert_pixel_nlte(obs, guess, lines, grid, cfg, backend=be, departures="emulated")
    assert kept.provenance["refine"]["skipped"].startswith("failed: ValueError")
    np.testing.assert_allclose(kept.result.atmosphere.T, plain.result.atmosphere.T)
    solver = NlteSolver(be, departures="emulated", t_refine="map")
    res = solver(obs, guess, lines, grid, cfg)
    assert res.nlte_provenance["refine"]["accepted"] and res.backend_calls == 1



def test_reanchor_calls_the_backend_at_the_refined_model():
    """Where the refinement moved T far from the backend's model, one more backend call at the refined model
    and a second refinement from there: 2 calls, the record, the second call's b and Δ in the result; never
    with ``reanchor=None``; a move below the threshold is recorded and nothing more is done."""
    from pyinv.nlte import invert_pixel_nlte

    lines, grid, be, guess, truth, obs, cfg = lightweaver_ca_pixel(
        lambda lt: 500.0 * np.exp(-0.5 * ((lt + 4.8) / 0.5) ** 2))      # a warm upper chromosphere
    lt = np.asarray(truth.log_tau)
    kw = dict(backend=be, departures="emulated")
    never = invert_pixel_nlte(obs, guess, lines, grid, cfg, reanchor=None, **kw)
    far = invert_pixel_nlte(obs, guess, lines, grid, cfg, reanchor=1e6, **kw)
    always = invert_pixel_nlte(obs, guess, lines, grid, cfg, reanchor=0.0, **kw)
    assert never.backend_calls == far.backend_calls == 1 and always.backend_calls == 2
    assert "moved_K" not in never.provenance["refine"] and "reanchor" not in never.provenance["refine"]
    moved = far.provenance["refine"]["moved_K"]
    assert moved > 0 and "reanchor" not in far.provenance["refine"]
    np.testing.assert_array_equal(far.result.atmosphere.T, never.result.atmosphere.T)
    ra = always.provenance["refine"]["reanchor"]
    assert ra["calls"] == 1 and ra["threshold_K"] == 0.0 and always.provenance["refine"]["moved_K"] == moved
    assert ra["accepted"]      # the result carries the second call's b and delta, and fits the observation
    assert not np.array_equal(always.correction, never.correction)
    assert not np.array_equal(always.departures.b_upper, never.departures.b_upper)
    assert float(np.mean((always.result.fit[0] - obs[0]) ** 2)) * 1e6 < 10.0
    assert always.result.chi2_reduced == ra["chi2_reduced"]
    m = (lt <= -1.0) & (lt >= -5.3)
    err = [float(np.sqrt(np.mean((np.asarray(r.result.atmosphere.T)[m] - np.asarray(truth.T)[m]) ** 2)))
           for r in (never, always)]
    assert err[1] < 150.0, err
    with pytest.raises(ValueError, match="reanchor"):
        invert_pixel_nlte(obs, guess, lines, grid, cfg, reanchor=-1.0, **kw)


def test_cli_nlte_refine_needs_the_emulator():
    import argparse

    from pyinv.cli import _nlte_backend, build_parser

    ns = build_parser().parse_args(["invert", "c.fits", "--nlte", "lightweaver", "--nlte-departures", "emulated",
                                    "--nlte-refine", "map"])
    assert ns.nlte_refine == "map" and ns.nlte_departures == "emulated"
    assert build_parser().parse_args(["invert", "c.fits"]).nlte_refine == "auto"
    lines = pyinv.default_lines()
    grid = pyinv.WavelengthGrid.from_regions([(8, -600, 60, 600)], lines)
    with pytest.raises(SystemExit, match="needs --nlte-departures emulated"):
        _nlte_backend("lightweaver", lines, grid, argparse.Namespace(nlte_lines=None, rh_dir=None,
                                                                     nlte_departures="backend", nlte_refine="map"))
    pytest.importorskip("lightweaver", reason="lightweaver not installed (pip install 'pyinv[nlte]')")
    solver = _nlte_backend("lightweaver", lines, grid, argparse.Namespace(
        nlte_lines=None, rh_dir=None, nlte_departures="emulated", nlte_refine="map"))
    assert solver.t_refine == "map" and solver.departures == "emulated"
    default = _nlte_backend("lightweaver", lines, grid, build_parser().parse_args(
        ["invert", "c.fits", "--nlte", "lightweaver", "--nlte-departures", "emulated"]))
    assert default.t_refine == "auto"
    plain = _nlte_backend("lightweaver", lines, grid, argparse.Namespace(
        nlte_lines=None, rh_dir=None, nlte_departures="emulated", nlte_refine="none"))
    assert plain.t_refine is None
    backend = _nlte_backend("lightweaver", lines, grid, build_parser().parse_args(
        ["invert", "c.fits", "--nlte", "lightweaver"]))     # the backend's b: no refinement, no error
    assert not hasattr(backend, "t_refine")
    assert default.reanchor == 220.0
    for flag, value in (("none", None), ("150", 150.0)):
        sv = _nlte_backend("lightweaver", lines, grid, build_parser().parse_args(
            ["invert", "c.fits", "--nlte", "lightweaver", "--nlte-departures", "emulated", "--nlte-reanchor", flag]))
        assert sv.reanchor == value
    for bad in ("-5", "hot"):
        with pytest.raises(SystemExit, match="nlte-reanchor"):
            _nlte_backend("lightweaver", lines, grid, build_parser().parse_args(
                ["invert", "c.fits", "--nlte", "lightweaver", "--nlte-departures", "emulated", "--nlte-reanchor",
                 bad]))
    with pytest.raises(SystemExit, match="needs --nlte-departures emulated"):
        _nlte_backend("lightweaver", lines, grid, build_parser().parse_args(
            ["invert", "c.fits", "--nlte", "lightweaver", "--nlte-reanchor", "100"]))
