"""pyinv.synthesize_map of inversion results (issue 20, item 1): a two-component map with stray light
("local" and a profile cube), per-pixel macroturbulence, a spectral PSF and μ, inverted on 3x3 pixels, is
synthesised back from its InversionResult, from the result's FITS file and from the arrays given one by
one: each equals result.fits to 1e-6, its response functions equal pyinv.response_functions per pixel,
and inputs that cannot reproduce the fits are refused."""
from __future__ import annotations

import numpy as np
import pytest

import pyinv
from pyinv import models
from pyinv.maps.extras import local_stray_profiles

TOL = 1e-6


@pytest.fixture(scope="module")
def fitted(engine):
    lines = pyinv.default_lines()
    grid = models.hinode_grid(lines)
    cfg = pyinv.InversionConfig(cycles=1, nodes={"T": 2, "vlos": 1, "B": 1, "gamma": 1, "phi": 1, "macro": 1},
                                nodes2={"T": 1, "vlos": 1, "B": 1, "gamma": 1, "phi": 1, "macro": 1},
                                invert_filling=1, invert_stray=1, weights=(1, 4, 4, 2))
    g = models.default_guess()
    rng = np.random.default_rng(20)
    n = 9
    t1 = [g.with_columns(vlos=rng.normal(0, 5e4), B=rng.uniform(200, 700), gamma=rng.uniform(30, 150))
          for _ in range(n)]
    t2 = [g.with_columns(vlos=rng.normal(0, 1e5), B=rng.uniform(1000, 1800), gamma=rng.uniform(10, 170))
          for _ in range(n)]
    quiet = pyinv.synthesize(g.with_columns(B=0.0), lines, grid)
    psf = (np.linspace(-60.0, 60.0, 13), np.exp(-0.5 * (np.linspace(-60.0, 60.0, 13) / 25.0) ** 2))
    cube = pyinv.synthesize(t1, lines, grid, atmos2=t2, filling=rng.uniform(0.2, 0.4, n), stray_profile=quiet,
                            stray=rng.uniform(4, 10, n), psf=psf).reshape(3, 3, 4, -1)
    mask = np.ones((3, 3), bool)
    mask[2, 2] = False                                                    # a pixel without a result
    res = pyinv.invert(cube, lines, grid, cfg, guess=g.with_columns(stray=7.0),
                       guess2=g.with_columns(B=1300.0, gamma=40.0, vlos=5e4, filling=0.3), stray_profile="local",
                       stray_window=3, psf=psf, mu=0.9, mask=mask, executor="serial", progress=False)
    assert res.ncomp == 2 and (res.status[mask] == 0).all() and res.status[2, 2] == 101
    # the map is not trivial: per-pixel macroturbulence, f2 and alpha all vary
    for k in ("macro", "macro2", "filling2", "stray"):
        assert np.ptp(getattr(res, k)[mask]) > 1e-4, k
    return lines, grid, psf, cube, mask, res


def _same_fits(m, res, mask):
    assert m.status[mask].tolist() == [0] * int(mask.sum()) and (m.status[~mask] == 101).all()
    assert np.isnan(m.stokes[~mask]).all()
    assert np.abs(m.stokes[mask] - res.fits[mask]).max() <= TOL


def test_result_reproduces_its_fits_with_rfs(fitted):
    lines, grid, psf, cube, mask, res = fitted
    m = pyinv.synthesize_map(res, lines, grid, psf=psf, observed=cube, rf=True, workers=2)
    _same_fits(m, res, mask)
    assert m.provenance["mu"] == 0.9 and m.provenance["ncomp"] == 2
    assert set(m.rf) == set(pyinv.maps.synthesis.rf_keys_for(2, True))
    assert {"B_2", "macro_2", "filling", "stray"} <= set(m.rf)
    prof, _ = local_stray_profiles(cube, 3)
    for y, x in ((0, 0), (1, 2), (2, 1)):
        ref = pyinv.response_functions(res.atmosphere(y, x), lines, grid, mu=0.9, psf=psf,
                                       atmos2=res.atmosphere2(y, x), filling=res.filling2[y, x],
                                       stray_profile=prof[y, x], stray=res.stray[y, x], hydrostatic=False)
        assert set(ref) - {"stokes"} == set(m.rf)
        for k in m.rf:
            np.testing.assert_allclose(m.rf[k][y, x], ref[k], rtol=1e-12, atol=0, err_msg=k)
        assert np.abs(m.rf["filling"][y, x]).max() > 0 and np.abs(m.rf["stray"][y, x]).max() > 0
    assert np.isnan(m.rf["T"][2, 2]).all()


def test_fits_file_round_trip(fitted, tmp_path):
    lines, grid, psf, cube, mask, res = fitted
    path = res.to_fits(tmp_path / "res.fits")
    m = pyinv.synthesize_map(str(path), lines, grid, psf=psf, observed=cube, executor="serial")
    _same_fits(m, res, mask)
    assert m.provenance["source"] == str(path)


def test_arrays_given_one_by_one(fitted):
    lines, grid, psf, cube, mask, res = fitted
    prof, _ = local_stray_profiles(cube, 3)
    kw = dict(macro=np.nan_to_num(res.macro), atmospheres2=res.atmospheres2, macro2=np.nan_to_num(res.macro2),
              filling=np.nan_to_num(res.filling2), stray=np.nan_to_num(res.stray), psf=psf, mask=mask,
              executor="serial")
    _same_fits(pyinv.synthesize_map(res.atmospheres, lines, grid, stray_profile=np.nan_to_num(prof), **kw), res, mask)
    _same_fits(pyinv.synthesize_map(res.atmospheres, lines, grid, stray_profile="local", stray_window=3,
                                    observed=cube, **kw), res, mask)
    # without the mixing the profiles differ by far more than the tolerance
    plain = pyinv.synthesize_map(res.atmospheres, lines, grid, psf=psf, mask=mask, executor="serial")
    assert np.abs(plain.stokes[mask] - res.fits[mask]).max() > 100 * TOL


def test_bad_inputs_refused(fitted):
    lines, grid, psf, cube, mask, res = fitted
    atm = res.atmospheres
    with pytest.raises(ValueError, match="observed"):
        pyinv.synthesize_map(res, lines, grid, psf=psf)                    # "local" stray light needs the cube
    with pytest.raises(ValueError, match="spectral PSF"):
        pyinv.synthesize_map(res, lines, grid, observed=cube)             # the PSF was an array
    with pytest.raises(ValueError, match="taken from the InversionResult"):
        pyinv.synthesize_map(res, lines, grid, psf=psf, observed=cube, macro=1.0)
    with pytest.raises(ValueError, match="no second component"):
        pyinv.synthesize_map(atm, lines, grid, filling=0.3)
    with pytest.raises(ValueError, match="needs filling"):
        pyinv.synthesize_map(atm, lines, grid, atmospheres2=res.atmospheres2)
    with pytest.raises(ValueError, match="shape of atmospheres"):
        pyinv.synthesize_map(atm, lines, grid, atmospheres2=res.atmospheres2[:2], filling=0.3)
    with pytest.raises(ValueError, match=r"filling=1\.5"):
        pyinv.synthesize_map(atm, lines, grid, atmospheres2=res.atmospheres2, filling=1.5, mask=mask)
    with pytest.raises(ValueError, match="no stray_profile"):
        pyinv.synthesize_map(atm, lines, grid, stray=5.0)
    with pytest.raises(ValueError, match="needs stray"):
        pyinv.synthesize_map(atm, lines, grid, stray_profile=np.zeros((4, grid.nwav)))
    with pytest.raises(ValueError, match="macro"):
        pyinv.synthesize_map(atm, lines, grid, macro=-1.0, mask=mask)
    with pytest.raises(ValueError, match="unknown response-function"):
        pyinv.synthesize_map(atm, lines, grid, rf=("stray",), mask=mask)  # no stray light in this map
    with pytest.raises(ValueError, match="InversionResult"):
        pyinv.synthesize_map(atm[0], lines, grid)
