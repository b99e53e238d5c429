"""Two components, filling factor and stray light in the synthesis and the response functions (issue 13,
synthesis part; spec-forward §9.4).

Acceptance (synth_twocomp_stray.npz): max|ΔI| ≤ 1e-4; Q, U, V within 1 % of each profile's amplitude + 5e-5.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

import pyinv
from pyinv.io import read_abundances
from pyinv.io.sir import write_sir_profiles


@pytest.fixture(scope="module")
def case(reference_dir):
    d = np.load(reference_dir / "synth_twocomp_stray.npz")
    lines = pyinv.LineList.read_sir(reference_dir / "LINES_REF")
    ab = read_abundances(reference_dir / "THEVENIN")
    grid = pyinv.WavelengthGrid.from_regions([tuple(r) for r in json.loads(str(d["regions"]))], lines)
    a1 = pyinv.Atmosphere.from_array(d["models1"], macro=d["macro"][:, 0])
    a2 = pyinv.Atmosphere.from_array(d["models2"], macro=d["macro"][:, 1])
    return d, lines, ab, grid, a1, a2, reference_dir / str(d["psf"])


def test_against_sir(case, record_property):
    d, lines, ab, grid, a1, a2, psf = case
    s = pyinv.synthesize(a1, lines, grid, abundances=ab, psf=psf, atmos2=a2, filling=d["filling2"],
                         stray_profile=d["stray_stokes"], stray=d["stray_percent"])
    ref = d["stokes"]
    dev = np.abs(s - ref).max(axis=2)
    print("\nmax |dI|, |dQ|, |dU|, |dV|:", dev.max(axis=0))
    record_property("max_dev_IQUV", dev.max(axis=0).tolist())
    assert np.all(dev[:, 0] <= 1e-4)
    assert np.all(dev[:, 1:] <= 0.01 * np.abs(ref[:, 1:]).max(axis=2) + 5e-5)
    # the mix is what it says: f2 = 0 and alpha = 0 give component 1 alone
    one = pyinv.synthesize(a1, lines, grid, abundances=ab, psf=psf)
    same = pyinv.synthesize(a1, lines, grid, abundances=ab, psf=psf, atmos2=a2, filling=0.0,
                            stray_profile=d["stray_stokes"], stray=0.0)
    np.testing.assert_allclose(same, one, rtol=0, atol=1e-15)


def test_defaults_from_headers_and_stray_file(case, tmp_path):
    d, lines, ab, grid, a1, a2, psf = case
    k = 2
    m1 = a1[k].with_columns(stray=float(d["stray_percent"][k]))
    m2 = a2[k].with_columns(filling=float(d["filling2"][k]))
    f = tmp_path / "stray.per"
    write_sir_profiles(f, grid.line_index, grid.offset_mA, d["stray_stokes"])
    s = pyinv.synthesize(m1, lines, grid, abundances=ab, psf=psf, atmos2=m2, stray_profile=f)
    assert np.abs(s - d["stokes"][k]).max() <= 1e-4


def test_bad_inputs(case, tmp_path):
    d, lines, ab, grid, a1, a2, psf = case
    m1, m2 = a1[0], a2[0]
    with pytest.raises(ValueError, match="filling factor"):
        pyinv.synthesize(m1, lines, grid, atmos2=m2)                     # f2 neither given nor in a header
    with pytest.raises(ValueError, match="filling must lie in"):
        pyinv.synthesize(m1, lines, grid, atmos2=m2, filling=1.5)
    with pytest.raises(ValueError, match="stray must lie in"):
        pyinv.synthesize(m1, lines, grid, stray_profile=d["stray_stokes"], stray=120.0)
    with pytest.raises(ValueError, match="no stray_profile"):
        pyinv.synthesize(m1, lines, grid, stray=10.0)
    with pytest.raises(ValueError, match=r"shape \(4, 112\)"):
        pyinv.synthesize(m1, lines, grid, stray_profile=np.zeros((4, 50)), stray=10.0)
    f = tmp_path / "shifted.per"
    write_sir_profiles(f, grid.line_index, grid.offset_mA + 5.0, d["stray_stokes"])
    with pytest.raises(ValueError, match="shifted.per"):
        pyinv.synthesize(m1, lines, grid, stray_profile=f, stray=10.0)
    short = pyinv.Atmosphere.from_array(d["models2"][0][::2], macro=1.0)
    with pytest.raises(ValueError, match="log tau grid"):
        pyinv.synthesize(m1, lines, grid, atmos2=short, filling=0.3)


def test_response_functions_of_the_mix(case):
    """∂I/∂f₂ and ∂I/∂α against finite differences of the mixed synthesis; component RFs scaled."""
    d, lines, ab, grid, a1, a2, psf = case
    k = 1
    m1, m2 = a1[k], a2[k]
    f2, pct, stray = float(d["filling2"][k]), float(d["stray_percent"][k]), d["stray_stokes"]
    kw = dict(abundances=ab, psf=psf, atmos2=m2, stray_profile=stray)
    r = pyinv.response_functions(m1, lines, grid, filling=f2, stray=pct, hydrostatic=False, **kw)

    def syn(f, p):
        return pyinv.synthesize(m1, lines, grid, filling=f, stray=p, **kw)

    np.testing.assert_allclose(r["stokes"], syn(f2, pct), rtol=0, atol=1e-14)
    h = 1e-4
    fd_f = (syn(f2 + h, pct) - syn(f2 - h, pct)) / (2 * h)
    fd_a = (syn(f2, pct + h) - syn(f2, pct - h)) / (2 * h)
    assert np.abs(r["filling"] - fd_f).max() <= 1e-8 * max(np.abs(fd_f).max(), 1e-3)
    assert np.abs(r["stray"] - fd_a).max() <= 1e-8 * max(np.abs(fd_a).max(), 1e-3)
    plain = pyinv.response_functions(m1, lines, grid, abundances=ab, psf=psf, hydrostatic=False)
    w1 = (1 - pct / 100) * (1 - f2)
    np.testing.assert_allclose(r["T"], w1 * plain["T"], rtol=1e-12, atol=0)
    assert "T_2" in r and r["T_2"].shape == plain["T"].shape
