"""pyinv.invert with a second component, filling factor and stray light through the real
pyinv.invert_pixel (issue 13): every pixel of the map equals invert_pixel called directly with the same
guess2 / filling / stray_profile / stray; the local pool and an Executor give the same maps;
the InversionResult's component-2 atmospheres, f2 and alpha are invert_pixel's and survive FITS; with the
true stray-light profile the map recovers f2 and alpha of a synthetic two-component map."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import pyinv
from pyinv import models
from pyinv.maps.extras import local_stray_profiles


@pytest.fixture(scope="module")
def problem(engine):
    lines = pyinv.default_lines()
    grid = models.hinode_grid(lines)
    cfg = pyinv.InversionConfig(cycles=1, nodes={"T": 2, "vlos": 1, "B": 1, "gamma": 1, "phi": 1},
                                nodes2={"T": 1, "vlos": 1, "B": 1, "gamma": 1, "phi": 1},
                                invert_filling=1, invert_stray=1, weights=(1, 4, 4, 2))
    g = models.default_guess()
    truth1 = [g.with_columns(vlos=v, B=b, gamma=gm) for v, b, gm in
              zip((-8e4, -2e4, 3e4, 9e4), (300., 500., 700., 400.), (40., 70., 110., 140.))]
    truth2 = [g.with_columns(vlos=v, B=b, gamma=gm) for v, b, gm in
              zip((1e5, 1.5e5, -1e5, 0.5e5), (1500., 1200., 1800., 1400.), (20., 30., 160., 150.))]
    f2 = np.array([0.3, 0.4, 0.25, 0.35])
    alpha = np.array([5.0, 8.0, 6.0, 10.0])
    quiet = pyinv.synthesize(g.with_columns(B=0.0), lines, grid)
    cube = pyinv.synthesize(truth1, lines, grid, atmos2=truth2, filling=f2, stray_profile=quiet,
                            stray=alpha).reshape(2, 2, 4, -1)
    guess2 = g.with_columns(B=1300.0, gamma=40.0, vlos=5e4, filling=0.3)
    guess = g.with_columns(stray=7.0)
    return lines, grid, cfg, cube, guess, guess2, quiet, f2.reshape(2, 2), alpha.reshape(2, 2)


@pytest.fixture(scope="module")
def reference(problem):
    lines, grid, cfg, cube, guess, guess2 = problem[:6]
    return pyinv.invert(cube, lines, grid, cfg, guess=guess, guess2=guess2, stray_profile="local",
                        stray_window=3, executor="serial", progress=False)


def test_each_pixel_is_invert_pixel(problem, reference):
    lines, grid, cfg, cube, guess, guess2 = problem[:6]
    prof, _ = local_stray_profiles(cube, 3)
    assert reference.ncomp == 2
    for y in range(2):
        for x in range(2):
            ref = pyinv.invert_pixel(cube[y, x], guess, lines, grid, cfg, guess2=guess2, stray_profile=prof[y, x])
            assert reference.status[y, x] == ref.status
            np.testing.assert_array_equal(reference.atmospheres[y, x], ref.atmosphere.to_array())
            np.testing.assert_array_equal(reference.atmospheres2[y, x], ref.atmosphere2.to_array())
            np.testing.assert_array_equal(reference.fits[y, x], ref.fit)
            assert reference.filling2[y, x] == ref.filling2
            assert reference.stray[y, x] == ref.stray
            assert reference.macro2[y, x] == float(ref.atmosphere2.macro)
            assert 0.0 < ref.filling2 < 1.0 and 0.0 <= ref.stray < 100.0


def test_pool_and_executor_same_maps(problem, reference):
    lines, grid, cfg, cube, guess, guess2 = problem[:6]
    kw = dict(guess=guess, guess2=guess2, stray_profile="local", stray_window=3, progress=False)
    pool = pyinv.invert(cube, lines, grid, cfg, workers=2, chunk=1, **kw)
    with ThreadPoolExecutor(2) as ex:
        remote = pyinv.invert(cube, lines, grid, cfg, executor=ex, workers=1, chunk=2, **kw)
    for r in (pool, remote):
        for k in ("atmospheres", "atmospheres2", "filling2", "stray", "fits", "chi2", "status"):
            np.testing.assert_array_equal(getattr(r, k), getattr(reference, k), err_msg=k)


def test_result_fits_round_trip(reference, tmp_path):
    back = pyinv.InversionResult.from_fits(reference.to_fits(tmp_path / "r.fits"))
    for k in ("atmospheres2", "macro2", "filling2", "stray", "errors2", "errors_header2"):
        np.testing.assert_array_equal(getattr(back, k), getattr(reference, k), err_msg=k)
    a2 = back.atmosphere2(0, 1)
    assert float(a2.filling) == reference.filling2[0, 1]


def test_true_stray_profile_recovers_f2_and_alpha(problem):
    lines, grid, cfg, cube, guess, guess2, quiet, f2, alpha = problem
    r = pyinv.invert(cube, lines, grid, cfg, guess=guess, guess2=guess2, stray_profile=quiet,
                     executor="serial", progress=False)
    assert (r.status == 0).all()
    # the components may come out swapped (f2 <-> 1 - f2 with the models exchanged): both are the same fit
    off = np.minimum(np.abs(r.filling2 - f2), np.abs(1.0 - r.filling2 - f2))
    assert off.max() < 0.01, (r.filling2, f2)
    assert np.abs(r.stray - alpha).max() < 0.5, (r.stray, alpha)
