"""Guards against a speed change that trades answers silently (issue 17): invert_pixel's DEFAULTS against
SIR's inversions of ../shared/reference (skipped without it).

* invert_hinode.npz, 20 synthetic Hinode SP pixels: χ²ₙ ≤ 1.05 × SIR's.
* real_sunspot_sir_dev300.npz, a fixed subset of 40 real Hinode SP pixels (every 7th pixel from 0, chosen
  before measuring): SIR's merit w_I rms(ΔI)² + w_V rms(ΔV)² ≤ 1.05 × SIR's, and B_los at log τ = 0
  correlated with SIR's.

The thresholds are issue 17's (benchmarks/fidelity.py measures the full sets).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import pyinv
from pyinv.atmosphere import Atmosphere
from pyinv.config import InversionConfig
from pyinv.io.sir import read_abundances
from pyinv.lines import LineList, WavelengthGrid
from pyinv.physics.inversion import RESCUE_MIN_TRIALS_PER_CYCLE
from pyinv.physics.pixelresult import weighted_residual

REF = Path(__file__).resolve().parents[1].parent / "shared" / "reference"
pytestmark = pytest.mark.skipif(not (REF / "real_sunspot_sir_dev300.npz").is_file(),
                                reason="../shared/reference not available")

REAL_SUBSET = list(range(0, 280, 7))   # 40 pixels


def _k0(log_tau) -> int:
    return int(np.argmin(np.abs(np.asarray(log_tau))))


def test_defaults_parity_invert_hinode(hinode):
    d, lines, grid, ab, cfg, guess = (hinode[k] for k in ("d", "lines", "grid", "ab", "cfg", "guess"))
    w, noise = np.asarray(d["weights"], float), float(d["noise"])
    ratios, rescued = [], 0
    for i, obs in enumerate(d["observed"]):
        r = pyinv.invert_pixel(obs, guess, lines, grid, cfg, abundances=ab)
        assert r.ok
        rescued += r.rescue > 0
        ours = np.mean(w[:, None] * (obs - r.fit) ** 2) / noise ** 2
        sir = np.mean(w[:, None] * (obs - d["sir_fit"][i]) ** 2) / noise ** 2
        ratios.append(ours / sir)
    ratios = np.array(ratios)
    assert np.count_nonzero(ratios <= 1.05) >= 19, np.round(ratios, 3)     # issue 17
    assert np.median(ratios) < 1.01
    assert rescued >= 1   # the rescue runs on fits far from the noise


def test_defaults_parity_real_sunspot_subset():
    d = np.load(REF / "real_sunspot_sir_dev300.npz")
    lines = LineList.read_sir(REF / "LINES_REF").subset([1])
    grid = WavelengthGrid.from_regions([tuple(r) for r in json.loads(str(d["regions"]))], lines)
    ab = read_abundances(REF / "THEVENIN")
    keys = {"nt": "T", "nv": "vlos", "nb": "B", "ng": "gamma", "nf": "phi", "nmic": "vmic", "nmac": "macro"}
    nodes = {keys[k]: tuple(int(x) for x in v.split(",")) for k, v in json.loads(str(d["nodes"])).items() if v}
    w = np.asarray(d["weights"], float)
    cfg = InversionConfig(cycles=2, nodes=nodes, weights=tuple(w), snr=1000.0)
    guess = Atmosphere.from_array(d["guess_model"], macro=0.8)
    ratios, b_ours, b_sir = [], [], []
    k = _k0(d["sir_models"][0, :, 0])
    for i in REAL_SUBSET:
        obs = np.zeros((4, d["observed_I"].shape[1]))
        obs[0], obs[3] = d["observed_I"][i], d["observed_V"][i]
        r = pyinv.invert_pixel(obs, guess, lines, grid, cfg, abundances=ab)
        ours = w[0] * np.mean((obs[0] - r.fit[0]) ** 2) + w[3] * np.mean((obs[3] - r.fit[3]) ** 2)
        sir = (w[0] * np.mean((obs[0] - d["sir_fit_I"][i]) ** 2) + w[3] * np.mean((obs[3] - d["sir_fit_V"][i]) ** 2))
        ratios.append(ours / sir)
        a = r.atmosphere
        b_ours.append(a.B[k] * np.cos(np.radians(a.gamma[k])))
        m = d["sir_models"][i]
        b_sir.append(m[k, 4] * np.cos(np.radians(m[k, 6])))
    ratios, b_ours, b_sir = np.array(ratios), np.array(b_ours), np.array(b_sir)
    assert np.count_nonzero(ratios <= 1.05) >= 36, np.round(ratios, 3)     # issue 17: >= 90 %
    assert np.median(ratios) < 0.95          # better than SIR's own fits on most pixels
    # B_los as SIR's where both fits are equally good (14 of the 40 pixels); where ours is much the better
    # fit (pixels 7, 42, 56: merit 0.62-0.84 x SIR's, descents SIR's gamma-to-the-pole rule had stuck
    # before the pole rules) B_los may differ by a few hundred G, so all 40 together only guard against
    # a gross change
    equal = (ratios >= 1 / 1.05) & (ratios <= 1.05)
    assert np.count_nonzero(equal) >= 10
    assert np.corrcoef(b_ours[equal], b_sir[equal])[0, 1] > 0.995
    assert np.corrcoef(b_ours, b_sir)[0, 1] > 0.98


def test_rescue_recorded_and_sir_rules_untouched(hinode):
    d, lines, grid, ab, cfg, guess = (hinode[k] for k in ("d", "lines", "grid", "ab", "cfg", "guess"))
    obs = d["observed"][4]
    one = pyinv.invert_pixel(obs, guess, lines, grid, cfg, abundances=ab, rescue=False)
    assert one.rescue == 0 and one.chi2_reduced > 0
    # above the threshold and a descent that struggled (53 LM trials in 3 cycles): tried
    assert int(np.sum(one.trials)) >= RESCUE_MIN_TRIALS_PER_CYCLE * cfg.cycles
    two = pyinv.invert_pixel(obs, guess, lines, grid, cfg, abundances=ab, rescue=0.5)
    assert two.rescue in (1, 2)
    # above the threshold too, but converged in few trials (17): one descent only
    quick = pyinv.invert_pixel(d["observed"][2], guess, lines, grid, cfg, abundances=ab, rescue=0.5)
    assert quick.chi2_reduced > 0.5 and int(np.sum(quick.trials)) < RESCUE_MIN_TRIALS_PER_CYCLE * cfg.cycles
    assert quick.rescue == 0
    # the kept fit is the closer one under the noise model with the Stokes weights (not necessarily SIR's χ²)
    assert weighted_residual(obs, two, cfg) <= weighted_residual(obs, one, cfg) + 1e-15
    assert two.syntheses > one.syntheses
    sir = pyinv.invert_pixel(obs, guess, lines, grid, cfg, abundances=ab, rtol=0, jacobian_reuse=0, rescue=0.5)
    assert sir.rescue == 0    # SIR's rules: one path, as SIR
    with pytest.raises(ValueError, match="rescue"):
        pyinv.invert_pixel(obs, guess, lines, grid, cfg, abundances=ab, rescue=-1.0)
    with pytest.raises(ValueError, match="rtol"):
        pyinv.invert_pixel(obs, guess, lines, grid, cfg, abundances=ab, rtol=[1e-3, float("nan")])


def test_pyinv_rules_do_not_stop_while_chi2_falls(hinode):
    """A cycle of pyinv's rules ends at a point from which another cycle with the same nodes gains little
    (the stop is judged with an exact Jacobian, with the Gauss-Newton prediction and a stagnation window)."""
    d, lines, grid, ab, cfg, guess = (hinode[k] for k in ("d", "lines", "grid", "ab", "cfg", "guess"))
    last = cfg.single_cycle(cfg.cycles)
    gains = []
    for i in (0, 5, 10, 15):
        r = pyinv.invert_pixel(d["observed"][i], guess, lines, grid, cfg, abundances=ab, rescue=False,
                               jacobian_reuse=3)
        again = pyinv.invert_pixel(d["observed"][i], r.atmosphere, lines, grid, last, abundances=ab, rescue=False,
                                   rtol=3e-4, jacobian_reuse=0)
        gains.append((r.chi2[-1] - again.chi2[-1]) / r.chi2[-1])
    assert max(gains) < 0.02, np.round(gains, 4)


def test_engine_refuses_unknown_rules(hinode):
    from pyinv import engine
    from pyinv.physics import inversion

    d, lines, grid, guess = (hinode[k] for k in ("d", "lines", "grid", "guess"))
    setup = inversion.prepare_synthesis(lines, grid, log_tau=guess.log_tau)
    x = engine.model_array({c: getattr(guess, c) for c in engine.MODEL_COLUMNS})
    kw = dict(nodes=[1, 0, 0, 1, 1, 0, 0, 0])
    ok = engine.inv_cycle(setup, guess.log_tau, x, 0.5, d["observed"][0], (1, 4, 4, 2), 1000.0, rules=1, rtol=1e-3, **kw)
    assert ok.ierr == 0 and ok.iterations > 0
    bad = engine.inv_cycle(setup, guess.log_tau, x, 0.5, d["observed"][0], (1, 4, 4, 2), 1000.0, rules=7, **kw)
    assert bad.ierr != 0
    with pytest.raises(ValueError, match="rules"):
        pyinv.invert_pixel(d["observed"][0], guess, lines, grid, InversionConfig(cycles=1, nodes={"T": 1}),
                           rules="fast")


def test_coarse_early_cycles(hinode, monkeypatch):
    """Issue 17: the cycles before the last run on coarser depth grids (strides 4 and 2 of the 0.1-dex grid),
    the last on the model's own; not with SIR's rules, not when switched off."""
    from pyinv import engine
    from pyinv.physics import inversion

    d, lines, grid, ab, cfg, guess = (hinode[k] for k in ("d", "lines", "grid", "ab", "cfg", "guess"))
    sizes = []
    real = engine.inv_cycle

    def spy(setup, log_tau, *a, **k):
        sizes.append(np.asarray(log_tau).size)
        return real(setup, log_tau, *a, **k)

    monkeypatch.setattr(inversion.engine, "inv_cycle", spy)
    obs = d["observed"][0]
    r = pyinv.invert_pixel(obs, guess, lines, grid, cfg, abundances=ab, rescue=False)
    assert cfg.cycles == 3 and sizes == [14, 27, 53] and r.ok
    assert r.atmosphere.T.size == 53 and r.fit.shape == obs.shape
    sizes.clear()
    off = pyinv.invert_pixel(obs, guess, lines, grid, cfg, abundances=ab, rescue=False, coarse=False)
    assert sizes == [53, 53, 53]
    # the same answer: the last cycle runs on the full grid either way
    assert r.chi2[-1] <= 1.05 * off.chi2[-1] and off.chi2[-1] <= 1.05 * r.chi2[-1]
    sizes.clear()
    pyinv.invert_pixel(obs, guess, lines, grid, cfg, abundances=ab, rescue=False, coarse=0.2)
    assert sizes == [27, 27, 53]
    sizes.clear()
    pyinv.invert_pixel(obs, guess, lines, grid, cfg, abundances=ab, rtol=0, jacobian_reuse=0)
    assert sizes == [53, 53, 53]     # SIR's rules: SIR's grid
    for bad in (-0.1, float("nan"), "x"):
        with pytest.raises(ValueError, match="coarse"):
            pyinv.invert_pixel(obs, guess, lines, grid, cfg, abundances=ab, coarse=bad)
    assert inversion.coarse_stride(np.linspace(1.2, -4.0, 53), 0.4) == 4
    assert inversion.coarse_stride(np.linspace(1.2, -4.0, 53), 0.3) == 2
    assert inversion.coarse_stride(np.linspace(1.2, -4.0, 27), 0.4) == 2
    assert inversion.coarse_stride(np.linspace(1.0, -4.0, 51), 0.4) == 2     # 50 intervals: 4 does not divide
    assert inversion.coarse_stride(np.linspace(1.2, -4.0, 14), 0.4) == 1     # fewer than 8 intervals left
    # room for the cycle's nodes: at least 2n - 1 points (14 points hold 7 nodes, 27 hold 14)
    assert inversion.coarse_stride(np.linspace(1.2, -4.0, 53), 0.4, max_nodes=7) == 4
    assert inversion.coarse_stride(np.linspace(1.2, -4.0, 53), 0.4, max_nodes=8) == 2
    assert inversion.coarse_stride(np.linspace(1.2, -4.0, 53), 0.4, max_nodes=27) == 1


def test_coarse_cycle_carried_back_exactly(hinode):
    """A one-node cycle on the sub-grid changes every parameter by one constant: carried back to the full grid it
    is that change at every depth, equal to the sub-grid's model on its points, with Pe from hydrostatic
    equilibrium."""
    from pyinv import engine
    from pyinv.physics import inversion

    d, lines, grid, ab, cfg, guess = (hinode[k] for k in ("d", "lines", "grid", "ab", "cfg", "guess"))
    lt = np.asarray(guess.log_tau, dtype=float)
    x = engine.model_array({c: getattr(guess, c) for c in engine.MODEL_COLUMNS})
    x[:, 3], x[:, 5], x[:, 6] = 500.0, 60.0, 20.0
    counts = [1, 0, 1, 1, 1, 1, 1, 1]
    setup = inversion.prepare_synthesis(lines, grid, abundances=ab, log_tau=lt)
    kw = dict(xnodes=None, interp=0, svdtol=1e-8, lambda0=1e-3, mu=1.0, maxit=1, jac_mode=engine.JAC_ANALYTIC,
              jac_reuse=0, rtol=1e-2, rules=1, magnetic_pressure=False)
    res = inversion._coarse_cycle(4, lines, grid, None, ab, True, False, lt, x, float(guess.macro),
                                  d["observed"][3], cfg.weights_for(1), 1000.0, counts, (0, 0.0), kw, setup)
    assert res.ierr == 0 and res.iterations == 1
    sub = inversion.prepare_synthesis(lines, grid, abundances=ab, log_tau=lt[::4])
    alone = engine.inv_cycle(sub, lt[::4], np.ascontiguousarray(x[::4]), float(guess.macro),
                             d["observed"][3], cfg.weights_for(1), 1000.0, counts, boundary=0, bvalue=0.0,
                             errors=False, **kw)
    out = res.x
    for j in (0, 2, 3, 4, 5, 6):      # T, vmic, B, v, γ, φ: one change at every depth, the sub-grid's
        dj = out[:, j] - x[:, j]
        assert np.allclose(dj, dj[0], rtol=0, atol=1e-9 * abs(dj[0])) and dj[0] != 0.0
        assert np.allclose(out[::4, j], alone.x[:, j], rtol=1e-12, atol=0)
    from pyinv.physics.synthesis import _eps_from_abundances
    eps = _eps_from_abundances(ab)
    pe = engine.hydrostatic_arrays(lt, out[:, 0], float(alone.x[-1, 1]), 0, 0.0, 1.0, eps)[0]
    assert np.allclose(out[:, 1], pe, rtol=1e-10)
    assert np.allclose(res.fit, engine.synth_stokes(setup, lt, out, float(res.vmac))[0], rtol=0, atol=1e-12)
