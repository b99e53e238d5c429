"""Map inversions with a second component and stray light (issue 13, map level): the ``stray_profile="local"``
builder against a direct computation, argument validation, the result's FITS round trip, and the
per-pixel plumbing through every executor route and the checkpoint store, with the private stand-in
solver ``pyinv.testing.solvers.mixed_vlos_fit_solver`` (a real, cheap vlos fit of the mixed profile computed
by ``pyinv.synthesize``). The same plumbing with the real ``pyinv.invert_pixel`` is tested in
test_maps_twocomp_engine.py."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import pyinv
from pyinv import models
from pyinv.status import STATUS_PENDING
from pyinv.testing.solvers import mixed_vlos_fit_solver
from pyinv.atmosphere import Atmosphere
from pyinv.io.sir import read_sir_model, write_sir_profiles
from pyinv.maps.result import InversionResult
from pyinv.maps.extras import DEFAULT_STRAY_WINDOW, local_stray_profiles, stray_table

from helpers import assert_same_results, run_map, six_pixel_map

SOLVER = "pyinv.testing.solvers:mixed_vlos_fit_solver"


# ------------------------------------------------------------------------------------------ local stray
def _direct_local(cube, window, usable):
    """Mean I over the window's usable pixels other than the pixel itself, by explicit loops."""
    ny, nx, _, nw = cube.shape
    h = window // 2
    out = np.zeros((ny, nx, 4, nw))
    count = np.zeros((ny, nx), int)
    for y in range(ny):
        for x in range(nx):
            acc, n = np.zeros(nw), 0
            for yy in range(y - h, y + h + 1):
                for xx in range(x - h, x + h + 1):
                    if (yy, xx) == (y, x) or not (0 <= yy < ny and 0 <= xx < nx) or not usable[yy, xx]:
                        continue
                    acc += cube[yy, xx, 0]
                    n += 1
            count[y, x] = n
            out[y, x, 0] = acc / n if n else np.nan
            if not n:
                out[y, x] = np.nan
    return out, count


@pytest.mark.parametrize("window", [3, 5, 7])
def test_local_stray_matches_direct_computation(window):
    rng = np.random.default_rng(window)
    cube = rng.uniform(0.3, 1.2, size=(6, 7, 4, 9))
    cube[2, 3, 0, 4] = np.nan  # a pixel with a non-finite I never contributes
    usable = np.isfinite(cube[:, :, 0]).all(axis=-1)
    usable[4, 1] = False        # nor one the caller marks unusable
    got, n = local_stray_profiles(cube, window, usable)
    ref, nref = _direct_local(cube, window, usable)
    np.testing.assert_array_equal(n, nref)
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-14)
    assert (got[:, :, 1:] == 0).all()
    # corners: only the pixels inside the map; the pixel itself excluded
    h = window // 2
    corner = usable[:h + 1, :h + 1]
    assert n[0, 0] == corner.sum() - 1 and n[0, 0] <= (h + 1) ** 2 - 1
    np.testing.assert_allclose(got[0, 0, 0], (cube[:h + 1, :h + 1, 0][corner].sum(axis=0) - cube[0, 0, 0]) / n[0, 0],
                               rtol=1e-12)


def test_local_stray_default_usable_and_lonely_pixel():
    cube = np.ones((1, 1, 4, 3))
    prof, n = local_stray_profiles(cube, 3)
    assert n[0, 0] == 0 and np.isnan(prof).all()
    grid = models.hinode_grid(pyinv.default_lines())
    with pytest.raises(ValueError, match=r"stray_profile='local'.*pixel \(0, 0\) has no usable neighbour"):
        stray_table("local", np.ones((1, 1, 4, grid.nwav)), grid)
    assert DEFAULT_STRAY_WINDOW % 2 == 1 and DEFAULT_STRAY_WINDOW >= 3


def test_stray_table_forms(tmp_path):
    grid = models.hinode_grid(pyinv.default_lines())
    nw = grid.nwav
    cube = np.ones((2, 3, 4, nw))
    prof = np.vstack([np.linspace(0.9, 1.0, nw), np.zeros((3, nw))])
    t, i, _ = stray_table(prof, cube, grid)
    assert t.shape == (1, 4, nw) and (i == 0).all()
    np.testing.assert_array_equal(t[0], prof)
    per = tmp_path / "stray.per"
    write_sir_profiles(per, grid.line_index, grid.offset_mA, prof)
    t, i, what = stray_table(str(per), cube, grid)
    np.testing.assert_allclose(t[0], prof, rtol=1e-6)
    assert what == str(per)
    many = np.random.default_rng(1).uniform(0.5, 1.0, (2, 3, 4, nw))
    t, i, _ = stray_table(many, cube, grid)
    np.testing.assert_array_equal(t[i], many.reshape(6, 4, nw))


# ------------------------------------------------------------------------------------------ validation
@pytest.fixture(scope="module")
def plain():
    """A (2, 3) map of normalised-looking profiles (numpy only: validation happens before any solve)."""
    lines = pyinv.default_lines()
    grid = models.hinode_grid(lines)
    x = np.linspace(-3, 3, grid.nwav)
    one = np.zeros((4, grid.nwav))
    one[0] = 1.0 - 0.5 * np.exp(-x ** 2)
    one[3] = 0.01 * x * np.exp(-x ** 2)
    cube = np.broadcast_to(one, (2, 3, 4, grid.nwav)).copy()
    return lines, grid, cube


def _inv(plain, config=None, **kw):
    lines, grid, cube = plain
    args = dict(executor="serial", progress=False)
    args.update(kw)
    return pyinv.invert(cube, lines, grid, config or pyinv.InversionConfig(cycles=1), **args)


@pytest.mark.parametrize("kw, match", [
    (dict(stray_profile=np.ones((4, 111))), r"stray_profile must have shape \(4, 112\).*\(4, 111\)"),
    (dict(stray_profile=np.ones((3, 112))), r"stray_profile must have shape \(4, 112\).*\(3, 112\)"),
    (dict(stray_profile=np.ones((2, 2, 4, 112))),
     r"stray_profile must have shape .*\(2, 3, 4, 112\).*\(2, 2, 4, 112\)"),
    (dict(stray_profile="nonsense"), r"stray_profile='nonsense'"),
    (dict(stray_profile="missing.per"), r"stray_profile='missing.per': no such stray-light file"),
    (dict(stray_profile="local", stray_window=4), r"stray_window must be an odd integer >= 3.*got 4"),
    (dict(stray_profile="local", stray_window=1), r"stray_window must be an odd integer >= 3.*got 1"),
    (dict(stray_profile="local", stray_window=2.0), r"stray_window must be an odd integer >= 3.*got 2.0"),
    (dict(stray_profile=np.ones((4, 112)), stray_window=3),
     r"stray_window=3 is only used with stray_profile='local'"),
    (dict(stray_profile="local", stray=100.0), r"stray=100.0 at pixel \(0, 0\).*\[0, 100\)"),
    (dict(stray_profile="local", stray=-1.0), r"stray=-1.0 at pixel \(0, 0\).*\[0, 100\)"),
    (dict(stray_profile="local"), r"stray_profile='local\(window=7\)' is given but alpha is 0 for every pixel"),
    (dict(stray=5.0), r"stray=5.0 \(the stray-light fraction \[%\]\) is given but there is no stray-light profile"),
    (dict(guess2=models.default_guess(), filling=0.0), r"filling=0.0 at pixel \(0, 0\).*\(0, 1\)"),
    (dict(guess2=models.default_guess(), filling=1.0), r"filling=1.0 at pixel \(0, 0\).*\(0, 1\)"),
    (dict(guess2=models.default_guess()), r"filling is None and guess2's header filling factor is 1.0"),
    (dict(filling=0.3), r"filling=0.3 \(f2 of component 2\) is given but there is no second component"),
    (dict(guess2=np.zeros((2, 2, 53, 11))), r"guess2: the atmosphere cube is \(2, 2\) pixels, the map is \(2, 3\)"),
])
def test_bad_arguments_refused(plain, kw, match):
    with pytest.raises(ValueError, match=match):
        _inv(plain, **kw)


def test_bad_maps_name_the_pixel(plain):
    f2 = np.full((2, 3), 0.4)
    f2[1, 2] = 1.5
    with pytest.raises(ValueError, match=r"filling=1.5 at pixel \(1, 2\)"):
        _inv(plain, guess2=models.default_guess(), filling=f2)
    al = np.full((2, 3), 3.0)
    al[1, 2] = 150.0
    with pytest.raises(ValueError, match=r"stray=150.0 at pixel \(1, 2\)"):
        _inv(plain, stray_profile="local", stray=al)
    f2[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"filling=nan at pixel \(1, 2\)"):
        _inv(plain, guess2=models.default_guess(), filling=f2)


def test_guess2_on_another_log_tau_grid(plain):
    g = models.default_guess()
    shifted = Atmosphere.from_array(np.column_stack([g.to_array()[:, 0] + 0.1, g.to_array()[:, 1:]]), filling=0.3)
    with pytest.raises(ValueError, match=r"guess2: component 2 must be on component 1's log tau grid.*log tau = "):
        _inv(plain, guess2=shifted)
    short = Atmosphere.from_array(g.to_array()[:40], filling=0.3)
    with pytest.raises(ValueError, match=r"guess2 has 40 depth points, component 1's guess has 53"):
        _inv(plain, guess2=short)


def test_stray_per_file_on_other_wavelengths(plain, tmp_path):
    _, grid, _ = plain
    per = tmp_path / "s.per"
    write_sir_profiles(per, grid.line_index, grid.offset_mA + 10.0, np.ones((4, grid.nwav)))
    with pytest.raises(ValueError, match=r"stray-light file .*s\.per: point 0 is line 1 at"):
        _inv(plain, stray_profile=str(per))


@pytest.mark.parametrize("cfg, match", [
    (dict(nodes2={"B": 1}), r"nodes2\['B'\]=1 \(cycle 1\) inverts a second component: pass its initial model as guess2="),
    (dict(invert_filling=1), r"invert_filling=.*needs a second component: pass guess2="),
    (dict(contrast=1.2), r"contrast=1.2: .*needs two components"),
])
def test_settings_invert_pixel_refuses_are_refused_for_the_map(plain, cfg, match):
    """Refused once for the map (a ValueError), not as a failed pixel (status 103) each."""
    with pytest.raises(ValueError, match=match):
        _inv(plain, config=pyinv.InversionConfig(cycles=1, **cfg))


def test_inverted_stray_needs_alpha_and_profile(plain):
    cfg = pyinv.InversionConfig(cycles=1, invert_stray=1)
    with pytest.raises(ValueError, match=r"invert_stray=.*no stray-light profile"):
        _inv(plain, config=cfg)
    with pytest.raises(ValueError, match=r"stray \(from the guess's header\)=0.0 at pixel \(0, 0\).*nonzero"):
        _inv(plain, config=cfg, stray_profile="local")
    with pytest.raises(ValueError, match=r"stray=0.0 at pixel \(0, 0\).*nonzero"):
        _inv(plain, config=cfg, stray_profile="local", stray=0.0)


# ------------------------------------------------------------------------------------------ FITS
def _fake_result(ny=2, nx=3, ndep=5, nw=4, two=True):
    rng = np.random.default_rng(3)
    atm = rng.normal(size=(ny, nx, ndep, 11))
    kw = dict(atmospheres=atm, macro=rng.random((ny, nx)), filling=rng.random((ny, nx)), stray=rng.random((ny, nx)),
              fits=rng.random((ny, nx, 4, nw)), chi2=rng.random((ny, nx)), chi2_cycles=rng.random((ny, nx, 2)),
              status=np.zeros((ny, nx), np.int32), iterations=np.ones((ny, nx), np.int32),
              errors=rng.random((ny, nx, ndep, 11)), errors_header=rng.random((ny, nx, 3)),
              start=np.zeros((ny, nx), np.int16), seconds=rng.random((ny, nx)).astype(np.float32),
              line_index=np.ones(nw, np.int64), offset_mA=np.arange(nw, dtype=float), wavelength=6301.5 + np.arange(nw),
              provenance={"init": "single", "ncomp": 2 if two else 1}, chi2_reduced=rng.random((ny, nx)),
              filling2=rng.random((ny, nx)))
    if two:
        kw.update(atmospheres2=rng.normal(size=(ny, nx, ndep, 11)), macro2=rng.random((ny, nx)),
                  errors2=rng.random((ny, nx, ndep, 11)), errors_header2=rng.random((ny, nx, 3)))
        kw["filling2"][0, 1] = np.nan  # not inverted
        kw["atmospheres2"][0, 1] = np.nan
    return InversionResult(**kw)


def test_result_fits_round_trip_with_component_2(tmp_path):
    r = _fake_result()
    p = r.to_fits(tmp_path / "r.fits")
    back = InversionResult.from_fits(p)
    for name in ("atmospheres", "atmospheres2", "macro2", "filling2", "errors2", "errors_header2",
                 "filling", "stray", "fits"):
        np.testing.assert_array_equal(getattr(back, name), getattr(r, name), err_msg=name)
    assert back.ncomp == 2
    np.testing.assert_array_equal(back.map("filling2"), r.filling2)
    np.testing.assert_array_equal(back.map("stray"), r.stray)
    np.testing.assert_array_equal(back.map("filling", component=2), r.filling2)
    np.testing.assert_array_equal(back.map("macro", component=2), r.macro2)
    # component-2 depth maps at a grid point
    lt = back.atmospheres2[1, 1, 2, 0]
    assert np.isfinite(back.map("B", lt, component=2)[1, 1])
    one = _fake_result(two=False)
    back1 = InversionResult.from_fits(one.to_fits(tmp_path / "one.fits"))
    assert back1.atmospheres2 is None and back1.ncomp == 1
    np.testing.assert_array_equal(back1.filling2, one.filling2)
    with pytest.raises(ValueError, match="no second component"):
        back1.map("T", 0.0, component=2)


# ------------------------------------------------------------------------------------------ plumbing
@pytest.fixture(scope="module")
def setup(engine):
    lines, grid, cfg, cube = six_pixel_map()
    g = models.default_guess()
    # per-pixel component 2 (a cube, as init="previous" takes it) and per-pixel f2 and alpha maps
    g2 = np.stack([g.with_columns(B=1500.0 + 100 * k, gamma=20.0 + 10 * k).to_array() for k in range(6)]).reshape(
        2, 3, g.ndep, 11)
    f2 = np.linspace(0.2, 0.45, 6).reshape(2, 3)
    alpha = np.linspace(2.0, 12.0, 6).reshape(2, 3)
    return lines, grid, cfg, cube, g2, f2, alpha


def run(setup, **kw):
    return run_map(setup, solver=SOLVER, retries=1, **kw)


FIELDS = ("atmospheres", "atmospheres2", "macro2", "filling2", "fits", "chi2", "status", "filling", "stray")


def same(a, b):
    assert_same_results(a, b, FIELDS)


def test_per_pixel_inputs_reach_the_solver_on_every_route(setup, tmp_path):
    lines, grid, cfg, cube, g2, f2, alpha = setup
    kw = dict(guess2=g2, filling=f2, stray_profile="local", stray_window=3, stray=alpha)
    rs = run(setup, executor="serial", **kw)
    assert (rs.status == 0).all() and rs.ncomp == 2
    prof, _ = local_stray_profiles(cube, 3)
    g = models.default_guess()
    for y in range(2):
        for x in range(3):
            ref = mixed_vlos_fit_solver(cube[y, x], g, lines, grid, cfg, guess2=Atmosphere.from_array(g2[y, x], macro=0.5),
                                        filling=f2[y, x], stray_profile=prof[y, x], stray=alpha[y, x])
            np.testing.assert_allclose(rs.atmospheres[y, x], ref.atmosphere.to_array(), rtol=1e-12)
            np.testing.assert_allclose(rs.atmospheres2[y, x], g2[y, x], rtol=1e-12)
            np.testing.assert_allclose(rs.fits[y, x], ref.fit, rtol=1e-12)
    np.testing.assert_array_equal(rs.filling2, f2)
    np.testing.assert_array_equal(rs.stray, alpha)
    np.testing.assert_allclose(rs.filling, 1.0 - f2)
    assert "filling factor f2 of component 2 (converged pixels): median 0.325" in rs.describe()
    files = rs.to_sir(tmp_path, pixels=[(0, 1)])
    m2 = read_sir_model(tmp_path / "pixel_0_1_2.mod")
    assert tmp_path / "pixel_0_1_2.mod" in files
    assert float(m2.filling) == pytest.approx(f2[0, 1], abs=1e-4)
    np.testing.assert_allclose(m2.B, g2[0, 1, :, 4], rtol=1e-4)
    # the stray light matters: another window gives other fits
    other = run(setup, executor="serial", **dict(kw, stray_window=5))
    assert np.abs(other.fits - rs.fits).max() > 1e-6
    # local pool (memory-mapped inputs), one pixel per task; an Executor (self-contained chunks); an Executor
    # whose tasks run in threads with a time limit (pixels in a child process, pyinv.maps.isolated)
    same(rs, run(setup, chunk=1, **kw))
    with ThreadPoolExecutor(2) as ex:
        same(rs, run(setup, executor=ex, workers=1, chunk=2, **kw))
        same(rs, run(setup, executor=ex, workers=1, chunk=4, time_limit=120, **kw))


def test_single_guess2_header_filling_and_one_profile(setup):
    lines, grid, cfg, cube, g2, f2, alpha = setup
    guess2 = models.default_guess().with_columns(B=1800.0, filling=0.35)
    prof = np.vstack([cube[0, 0, 0], np.zeros((3, grid.nwav))])
    guess = models.default_guess().with_columns(stray=4.0)
    r = run(setup, executor="serial", guess=guess, guess2=guess2, stray_profile=prof)
    np.testing.assert_array_equal(r.filling2, 0.35)  # guess2's header
    np.testing.assert_array_equal(r.stray, 4.0)  # component 1's header
    ref = mixed_vlos_fit_solver(cube[1, 2], guess, lines, grid, cfg, guess2=guess2, stray_profile=prof)
    np.testing.assert_allclose(r.fits[1, 2], ref.fit, rtol=1e-12)
    # stray light alone: no component 2 in the result
    r1 = run(setup, executor="serial", guess=guess, stray_profile=prof, stray=6.0)
    assert r1.atmospheres2 is None and np.isnan(r1.filling2).all()
    np.testing.assert_array_equal(r1.stray, 6.0)


def test_previous_two_component_result_as_guess2(setup, tmp_path):
    lines, grid, cfg, cube, g2, f2, alpha = setup
    kw = dict(guess2=g2, filling=f2, stray_profile="local", stray_window=3, stray=alpha)
    first = run(setup, executor="serial", **kw)
    path = first.to_fits(tmp_path / "first.fits")
    again = run(setup, executor="serial", init="previous", guess=str(path), guess2=str(path), stray_profile="local",
                stray_window=3)
    np.testing.assert_allclose(again.atmospheres2, first.atmospheres2, rtol=1e-12)
    np.testing.assert_array_equal(again.filling2, f2)            # the earlier result's f2
    np.testing.assert_array_equal(again.stray, alpha)             # its alpha (component 1's header)


def test_checkpoint_keeps_component_2_on_resume(setup, tmp_path):
    kw = dict(guess2=setup[4], filling=setup[5], stray_profile="local", stray_window=3, stray=setup[6])
    ref = run(setup, executor="serial", **kw)
    ck = tmp_path / "ck"

    def stop(done, total):
        if done >= 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(setup, executor="serial", chunk=1, checkpoint=ck, progress=stop, **kw)
    st = np.load(ck / "status.npy")
    n_done = int((st != STATUS_PENDING).sum())
    assert 2 <= n_done < 6
    assert np.isfinite(np.load(ck / "atmos2.npy")[st != STATUS_PENDING]).all()
    r = run(setup, chunk=1, checkpoint=ck, **kw)
    assert r.provenance["resumed"] and r.provenance["computed"] == 6 - n_done
    same(r, ref)
    with pytest.raises(ValueError, match="component2_and_stray"):
        run(setup, checkpoint=ck, **dict(kw, filling=0.3))


def test_dask_cluster_carries_the_per_pixel_inputs(setup):
    distributed = pytest.importorskip("distributed")
    kw = dict(guess2=setup[4], filling=setup[5], stray_profile="local", stray_window=3, stray=setup[6])
    ref = run(setup, executor="serial", **kw)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as lc, \
            distributed.Client(lc) as client:
        same(ref, run(setup, executor=client, chunk=2, **kw))


def test_one_component_result_allocates_no_component_2_defaults():
    """Building a one-component result allocates none of component 2's per-pixel arrays (issue 17: the caller
    of a 256x256 init="cnn" map grew by the size of an unused default of atmospheres2, ~300 MB): the peak
    memory traced while the result is built stays below one atmospheres-sized array."""
    import tracemalloc

    ny, nx, ndep, nw = 64, 64, 53, 4
    one = _fake_result(ny=ny, nx=nx, ndep=ndep, nw=nw, two=False)
    kw = {f: getattr(one, f) for f in ("atmospheres", "macro", "filling", "stray", "fits", "chi2", "chi2_cycles",
                                       "status", "iterations", "errors", "errors_header", "start", "seconds",
                                       "line_index", "offset_mA", "wavelength", "provenance", "chi2_reduced",
                                       "filling2")}
    tracemalloc.start()
    try:
        r = InversionResult(**kw)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert r.atmospheres2 is None and r.errors2 is None and r.ncomp == 1
    assert peak < one.atmospheres.nbytes / 2, f"peak {peak / 1e6:.1f} MB while building a one-component result"
