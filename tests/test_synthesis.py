"""pyinv.synthesize against SIR's syntheses in ../shared/reference (spec-forward §1, §7-§9, §13.3).

Acceptance: for every model, max|ΔI| <= 5e-4 and, for Q, U, V, max|Δ| <= 0.01 max|S_SIR| + 5e-5 (units of
the HSRA continuum). The achieved maxima are printed (pytest -s) and recorded as test properties.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

import pyinv
from pyinv.io import read_abundances

FILES = ["synth_hinode_unsold", "synth_hinode", "synth_hinode_mu077_psf", "synth_gris", "synth_fe5250"]


@pytest.fixture(scope="module")
def ref_setup(reference_dir):
    lines = pyinv.LineList.read_sir(reference_dir / "LINES_REF")
    ab = read_abundances(reference_dir / "THEVENIN")
    return reference_dir, lines, ab


def _case(reference_dir, lines, name):
    d = np.load(reference_dir / f"{name}.npz")
    regions = [tuple(r) for r in json.loads(str(d["regions"]))]
    grid = pyinv.WavelengthGrid.from_regions(regions, lines)
    np.testing.assert_allclose(grid.offset_mA, d["offset_mA"], atol=1e-3)
    np.testing.assert_array_equal(grid.line_index, d["line_index"])
    atm = pyinv.Atmosphere.from_array(d["models"], macro=d["macro"])
    psf = reference_dir / str(d["psf"]) if str(d["psf"]) else None
    return d, grid, atm, psf


@pytest.mark.parametrize("voigt", ["accurate", "sir"])
@pytest.mark.parametrize("name", FILES)
def test_against_sir(ref_setup, name, voigt, record_property):
    reference_dir, lines, ab = ref_setup
    d, grid, atm, psf = _case(reference_dir, lines, name)
    # synth_gris holds umbral models whose Fe I 1.56 um lines reach a > 3 in the deepest layers, where
    # SIR rescales the damping (spec §7.5 cap); pyinv's default does not (it warns), so SIR's cap is
    # switched on to compare like with like (test_damping_cap_only_affects_capped_models covers the rest).
    # voigt="accurate" is pyinv's default (Faddeeva function to < 1e-6); "sir" is SIR's rational
    # approximation (spec §7.6), whose 4.5e-6 error shows up as up to ~5e-5 in I for weak damping.
    s = pyinv.synthesize(atm, lines, grid, mu=float(d["mu"]), psf=psf, abundances=ab,
                         damping_cap=(name == "synth_gris"), exact_voigt=(voigt == "accurate"))
    ref = d["stokes"]
    assert s.shape == ref.shape
    dev = np.abs(s - ref).max(axis=(0, 2))
    print(f"\n{name} ({voigt} Voigt): max|dI| = {dev[0]:.2e}, max|dQ| = {dev[1]:.2e}, max|dU| = {dev[2]:.2e}, "
          f"max|dV| = {dev[3]:.2e}")
    record_property("max_dev_IQUV", [float(x) for x in dev])
    per_model = np.abs(s - ref).max(axis=2)  # (n, 4)
    assert np.all(per_model[:, 0] <= 5e-4)
    lim = 0.01 * np.abs(ref[:, 1:]).max(axis=2) + 5e-5
    assert np.all(per_model[:, 1:] <= lim)
    # guard against silent regressions: with SIR's Voigt approximation an implementation from the spec
    # reaches ~1e-5; the accurate Voigt function adds up to ~5e-5 in I (weakly damped lines)
    bound = 3e-5 if voigt == "sir" else 1e-4
    assert dev[0] < bound and dev[1:].max() < bound


def test_damping_cap_only_affects_capped_models(ref_setup):
    reference_dir, lines, ab = ref_setup
    d, grid, atm, psf = _case(reference_dir, lines, "synth_gris")
    with pytest.warns(UserWarning, match="damping parameter exceeds 3"):
        s = pyinv.synthesize(atm, lines, grid, abundances=ab)
    ref = d["stokes"]
    capped = pyinv.synthesize(atm, lines, grid, abundances=ab, damping_cap=True)
    same = np.all(np.abs(s - capped).max(axis=2) == 0, axis=1)
    assert same.sum() >= 4  # the quiet/plage/penumbra models are untouched
    assert np.abs(s[same] - ref[same]).max() < 1e-4


def test_mu_and_shapes(ref_setup):
    reference_dir, lines, ab = ref_setup
    d, grid, atm, psf = _case(reference_dir, lines, "synth_hinode")
    one = atm[0]
    a = pyinv.synthesize(one, lines, grid, abundances=ab)
    b = pyinv.synthesize(one, lines, grid, abundances=ab, mu=0.5)
    assert a.shape == (4, grid.nwav)
    np.testing.assert_array_equal(a, b)                    # mu is passed to nothing
    stack = pyinv.synthesize([atm[0], atm[1]], lines, grid, abundances=ab)
    assert stack.shape == (2, 4, grid.nwav)
    np.testing.assert_array_equal(stack[0], a)
    # the default abundances (packaged solar set) work and differ slightly from THEVENIN
    c = pyinv.synthesize(one, lines, grid)
    assert np.all(np.isfinite(c)) and np.abs(c - a).max() > 0


def test_nonmagnetic_path(ref_setup):
    reference_dir, lines, ab = ref_setup
    d, grid, atm, psf = _case(reference_dir, lines, "synth_hinode")
    zero = atm[0].with_columns(B=np.zeros(atm.ndep))
    tiny = atm[0].with_columns(B=np.full(atm.ndep, 1e-6))
    s0 = pyinv.synthesize(zero, lines, grid, abundances=ab)
    s1 = pyinv.synthesize(tiny, lines, grid, abundances=ab)
    assert np.all(s0[1:] == 0)
    assert np.abs(s0[0] - s1[0]).max() < 1e-9           # scalar solver == polarised solver at B -> 0
    assert np.abs(s1[3]).max() > 0                        # pyinv: any B != 0 is magnetic (SIR: 1 G threshold)
    s2 = pyinv.synthesize(tiny, lines, grid, abundances=ab, sir_compat=True)
    assert np.all(s2[1:] == 0)


def test_options_change_little(ref_setup):
    reference_dir, lines, ab = ref_setup
    d, grid, atm, psf = _case(reference_dir, lines, "synth_fe5250")
    base = pyinv.synthesize(atm[0], lines, grid, abundances=ab)
    exact = pyinv.synthesize(atm[0], lines, grid, abundances=ab, exact_voigt=False, exact_blend_offsets=True)
    assert 0 < np.abs(exact - base).max() < 5e-4


def test_bad_input_raises(ref_setup):
    reference_dir, lines, ab = ref_setup
    d, grid, atm, psf = _case(reference_dir, lines, "synth_hinode")
    one = atm[0]
    T = one.T.copy(); T[10] = -5.0
    with pytest.raises(ValueError, match="T"):
        pyinv.synthesize(_raw(one, T=T), lines, grid, abundances=ab)
    T[10] = np.nan
    with pytest.raises(ValueError):
        pyinv.synthesize(_raw(one, T=T), lines, grid, abundances=ab)
    far = pyinv.WavelengthGrid.from_regions([("1", 0.0, 1000.0, 60000.0)], lines)
    with pytest.raises(ValueError, match="reach"):
        pyinv.synthesize(one, lines, far, abundances=ab)
    other = pyinv.WavelengthGrid.from_regions([("7", -100.0, 10.0, 100.0)], None)
    with pytest.raises(ValueError, match="line 7|not in the line list"):
        pyinv.synthesize(one, lines.subset([1, 2]), other, abundances=ab)
    with pytest.raises(ValueError, match="abundances"):
        pyinv.synthesize(one, lines, grid, abundances=np.zeros(50))
    with pytest.raises(ValueError, match="psf"):
        pyinv.synthesize(one, lines, grid, abundances=ab, psf=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="mu"):
        pyinv.synthesize(one, lines, grid, abundances=ab, mu=-1)


class _raw:
    """A duck-typed model that bypasses Atmosphere's own validation (to test synthesize's checks)."""

    def __new__(cls, atm, **cols):
        obj = atm.copy()
        for k, v in cols.items():
            object.__setattr__(obj, k, v)
        return obj
