"""Response functions (issue 4, RF part; spec-inversion §1).

Acceptance:
* against pyinv's own central finite differences (relative step 1e-4): relative error <= 1e-4 wherever
  |RF| >= 1 % of its maximum (per variable, over depths, Stokes parameters and wavelengths) — the fixed-Pe RFs on the 4
  rf_hinode models (perturb one column at one depth, keep the rest), ``T_he`` on the 20 ``sir_models``
  of invert_hinode (put in hydrostatic equilibrium, perturb T, re-solve with ``pyinv.hydrostatic``,
  top Pe fixed) and ``macro``;
* against SIR's ``rf_*`` arrays: Pearson correlation >= 0.98 (B, vlos, gamma, phi, vmic) and >= 0.95
  (``T_he`` vs ``rf_rt``), per model and Stokes parameter with signal (SIR's angles are per radian).
Depths are sampled for the finite differences (every variable and Stokes parameter is covered); the
achieved maxima are printed (pytest -s).
"""
from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np
import pytest

import pyinv
from pyinv import engine
from pyinv.io import read_abundances
from pyinv.physics.synthesis import _prepare

from helpers import REL_STEP, RF_COLUMNS, rel_err, rf_fd_worst



@pytest.fixture(scope="module")
def setup(reference_dir):
    lines = pyinv.LineList.read_sir(reference_dir / "LINES_REF")
    ab = read_abundances(reference_dir / "THEVENIN")
    d = np.load(reference_dir / "rf_hinode.npz")
    grid = pyinv.WavelengthGrid.from_regions([tuple(r) for r in json.loads(str(d["regions"]))], lines)
    models = [pyinv.Atmosphere.from_array(d["models"][i], macro=float(d["macro"][i]))
              for i in range(d["models"].shape[0])]
    rfs = [pyinv.response_functions(m, lines, grid, abundances=ab) for m in models]
    return d, lines, ab, grid, models, rfs


def _synth_fn(atm, lines, grid, ab, **kw):
    """A fast synthesis of modified columns of ``atm`` (engine call, no re-validation)."""
    p = _prepare([atm], lines, grid, abundances=ab, **kw)
    cols = p["cols"][0]

    def syn(c=None, vmac=None):
        c = cols if c is None else c
        return engine.synth_stokes(p["setup"], c["log_tau"], engine.model_array(c),
                                   p["macro"][0] if vmac is None else vmac)[0]
    return syn, cols


def test_shapes_and_profiles(setup):
    d, lines, ab, grid, models, rfs = setup
    for m, r in zip(models, rfs):
        for k in RF_COLUMNS:
            assert r[k].shape == (m.ndep, 4, grid.nwav)
            assert np.all(np.isfinite(r[k]))
        assert r["T_he"].shape == (m.ndep, 4, grid.nwav)
        assert r["macro"].shape == (4, grid.nwav)
        # the profiles returned with the RFs are those of synthesize
        np.testing.assert_array_equal(r["stokes"], pyinv.synthesize(m, lines, grid, abundances=ab))


@pytest.mark.parametrize("im", [0, 1, 2, 3])
def test_fixed_pe_rf_against_finite_differences(setup, im, record_property):
    d, lines, ab, grid, models, rfs = setup
    r = rfs[im]
    syn, cols = _synth_fn(models[im], lines, grid, ab)
    n = cols["T"].size
    depths = sorted(set(range(im % 3, n, 5)) | {n - 1})
    worst = rf_fd_worst(r, cols, syn, depths)
    vm = float(models[im].macro)
    h = REL_STEP * vm
    fd = (syn(vmac=vm + h) - syn(vmac=vm - h)) / (2 * h)
    worst["macro"] = rel_err(r["macro"], fd, np.abs(r["macro"]).max())
    print(f"\nmodel {im}: max rel. error vs FD " + ", ".join(f"{k} {v:.1e}" for k, v in worst.items()))
    record_property("max_rel_err", worst)
    for k, v in worst.items():
        assert v <= 1e-4, f"{k}: {v:.2e}"


def test_the_against_hydrostatic_finite_differences(reference_dir, setup, record_property):
    d, lines, ab, grid, _, _ = setup
    inv = np.load(reference_dir / "invert_hinode.npz")
    worst = 0.0
    for i in range(inv["sir_models"].shape[0]):
        atm = pyinv.Atmosphere.from_array(inv["sir_models"][i], macro=float(inv["sir_macro"][i]))
        atm = pyinv.hydrostatic(atm, abundances=ab)               # pyinv's HE, top Pe kept
        r = pyinv.response_functions(atm, lines, grid, abundances=ab)
        scale = np.abs(r["T_he"]).max()
        T = np.asarray(atm.T, dtype=float)
        for k in (8 + i % 3, 22 + i % 4, 38 + i % 5, 52):
            out = []
            for sgn in (1, -1):
                t2 = T.copy()
                t2[k] += sgn * REL_STEP * T[k]
                a2 = pyinv.hydrostatic(dataclasses.replace(atm, T=t2), abundances=ab)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)       # a > 3 in some deep layers
                    out.append(pyinv.synthesize(a2, lines, grid, abundances=ab))
            fd = (out[0] - out[1]) / (2 * REL_STEP * T[k])
            worst = max(worst, rel_err(r["T_he"][k], fd, scale))
    print(f"\nT_he (20 sir_models in HE): max rel. error vs FD {worst:.1e}")
    record_property("the_max_rel_err", worst)
    assert worst <= 1e-4


def test_against_sir_response_functions(setup, record_property):
    d, lines, ab, grid, models, rfs = setup
    pairs = {"B": "rf_rh", "vlos": "rf_rvz", "gamma": "rf_rinc", "phi": "rf_raz", "vmic": "rf_rmic",
             "T_he": "rf_rt"}
    nw = grid.nwav
    lowest = {k: 1.0 for k in pairs}
    for im, r in enumerate(rfs):
        prof = d["stokes"][im]
        for key, sk in pairs.items():
            ours = r[key] * (180.0 / np.pi if key in ("gamma", "phi") else 1.0)
            sir = d[sk][im].reshape(models[im].ndep, 4, nw)
            for s in range(4):
                if s > 0 and np.abs(prof[s]).max() < 1e-3:       # Stokes parameter without signal
                    continue
                rho = np.corrcoef(ours[:, s].ravel(), sir[:, s].ravel())[0, 1]
                lowest[key] = min(lowest[key], float(rho))
    print("\nPearson vs SIR (min over models/Stokes): " + ", ".join(f"{k} {v:.4f}" for k, v in lowest.items()))
    record_property("pearson_min", lowest)
    for key, v in lowest.items():
        assert v >= (0.95 if key == "T_he" else 0.98), f"{key}: {v:.4f}"


def test_field_free_model_and_options(setup):
    d, lines, ab, grid, models, rfs = setup
    m = models[0]
    free = dataclasses.replace(m, B=np.zeros(m.ndep))
    r = pyinv.response_functions(free, lines, grid, abundances=ab, hydrostatic=False)
    for k in ("B", "gamma", "phi"):
        assert np.all(r[k] == 0)
    assert np.all(r["T"][:, 1:] == 0) and np.abs(r["T"][:, 0]).max() > 0
    # field-free: scalar solver; check T and vlos against finite differences at a few depths
    syn, cols = _synth_fn(free, lines, grid, ab)
    for key in ("T", "vlos"):
        scale = np.abs(r[key]).max()
        for k in (10, 30, 45):
            x = cols[RF_COLUMNS[key]][k]
            h = REL_STEP * abs(x) if x != 0 else REL_STEP
            c = {kk: v.copy() for kk, v in cols.items()}
            c[RF_COLUMNS[key]][k] = x + h
            sp = syn(c)
            c[RF_COLUMNS[key]][k] = x - h
            fd = (sp - syn(c)) / (2 * h)
            assert rel_err(r[key][k], fd, scale) <= 1e-4
    # no convolution: the macro RF vanishes
    r2 = pyinv.response_functions(m, lines, grid, abundances=ab, convolve=False, hydrostatic=False)
    assert np.all(r2["macro"] == 0)


def _fd_check(r, syn, cols, keys, depths, step=REL_STEP, tol=1e-4, tag=""):
    for key in keys:
        scale = np.abs(r[key]).max()
        for k in depths:
            x = cols[RF_COLUMNS[key]][k]
            h = step * abs(x)
            c = {kk: v.copy() for kk, v in cols.items()}
            c[RF_COLUMNS[key]][k] = x + h
            sp = syn(c)
            c[RF_COLUMNS[key]][k] = x - h
            fd = (sp - syn(c)) / (2 * h)
            err = rel_err(r[key][k], fd, scale)
            assert err <= tol, (tag, key, k, err)


def test_psf(reference_dir, setup):
    """Spectral PSF convolution (Hinode SP PSF) on top of the macroturbulence."""
    d, lines, ab, grid, models, rfs = setup
    kw = {"psf": reference_dir / "HINODE_SP_ins_prof.psf"}
    m = models[2]
    r = pyinv.response_functions(m, lines, grid, abundances=ab, hydrostatic=False, **kw)
    syn, cols = _synth_fn(m, lines, grid, ab, **kw)
    _fd_check(r, syn, cols, ("T", "Pe", "B", "phi"), (5, 25, 50), tag="psf")
    vm = float(m.macro)
    fd = (syn(vmac=vm * (1 + REL_STEP)) - syn(vmac=vm * (1 - REL_STEP))) / (2 * REL_STEP * vm)
    assert rel_err(r["macro"], fd, np.abs(r["macro"]).max()) <= 1e-4


def test_damping_cap(reference_dir):
    """SIR's damping cap a <- 3 a / max a couples the depths through the location of the maximum
    (depth index 3 of this umbral model, where depth 2 is within 1e-4 of a tie: there the forward
    model has a kink, so the finite difference uses a 1e-6 step)."""
    lines = pyinv.LineList.read_sir(reference_dir / "LINES_REF")
    ab = read_abundances(reference_dir / "THEVENIN")
    d = np.load(reference_dir / "synth_gris.npz")
    grid = pyinv.WavelengthGrid.from_regions([tuple(r) for r in json.loads(str(d["regions"]))], lines)
    m = pyinv.Atmosphere.from_array(d["models"][7], macro=float(d["macro"][7]))
    kw = {"damping_cap": True}
    r = pyinv.response_functions(m, lines, grid, abundances=ab, hydrostatic=False, **kw)
    syn, cols = _synth_fn(m, lines, grid, ab, **kw)
    p = _prepare([m], lines, grid, abundances=ab, **kw)
    _, amax = engine.synth_stokes(p["setup"], cols["log_tau"], p["x"][0], p["macro"][0])
    assert amax.max() > 3.0                                      # the cap is active
    _fd_check(r, syn, cols, ("T", "Pe", "vmic"), (1, 4, 20, 40), tag="cap")
    _fd_check(r, syn, cols, ("T", "Pe", "vmic"), (3,), step=1e-6, tol=1e-3, tag="cap at max")
