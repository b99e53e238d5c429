"""pyinv.invert on a small synthetic map with the real pyinv.invert_pixel (issue 5 acceptance):
1 worker, 2 workers and a dask LocalCluster give identical results equal per pixel to invert_pixel;
a worker killed mid-run; an interrupted checkpointed run resumed; NaN / masked pixels; wrong shapes."""
from __future__ import annotations

import numpy as np
import pytest

import pyinv
from pyinv import models
from pyinv.status import STATUS_BAD_INPUT, STATUS_MASKED, STATUS_PENDING, STATUS_WORKER_DIED

pytestmark = pytest.mark.skipif(not hasattr(pyinv, "invert_pixel"),
                                reason="pyinv.invert_pixel (issue 4) is not available yet")


@pytest.fixture(scope="module")
def problem(engine):
    lines = pyinv.default_lines()
    grid = models.hinode_grid(lines)
    cfg = pyinv.InversionConfig(cycles=1, nodes={"T": 2, "vlos": 1, "B": 1, "gamma": 1, "phi": 1},
                                weights=(1, 4, 4, 2))
    g = models.default_guess()
    truths = [g.with_columns(vlos=v, B=b, gamma=gm) for v, b, gm in
              zip((-8e4, -2e4, 3e4, 9e4), (300., 700., 1100., 1500.), (40., 70., 110., 140.))]
    cube = pyinv.synthesize(truths, lines, grid).reshape(2, 2, 4, -1)
    return lines, grid, cfg, cube


def inv(problem, cube=None, **kw):
    lines, grid, cfg, c = problem
    kw.setdefault("progress", False)
    return pyinv.invert(c if cube is None else cube, lines, grid, cfg, **kw)


def assert_same(a, b):
    for k in ("atmospheres", "macro", "fits", "chi2", "status", "iterations"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k), err_msg=k)


@pytest.fixture(scope="module")
def reference(problem):
    return inv(problem, workers=1)


def test_workers_and_dask_identical_and_equal_invert_pixel(problem, reference):
    lines, grid, cfg, cube = problem
    r2 = inv(problem, workers=2, chunk=1)
    assert_same(reference, r2)
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as lc, distributed.Client(lc) as client:
        rd = inv(problem, executor=client)
    assert_same(reference, rd)
    g = models.default_guess()
    for y in range(2):
        for x in range(2):
            ref = pyinv.invert_pixel(cube[y, x], g, lines, grid, cfg)
            np.testing.assert_allclose(r2.atmospheres[y, x], ref.atmosphere.to_array(), rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(r2.fits[y, x], ref.fit, rtol=1e-6, atol=1e-9)
            assert r2.chi2[y, x] == pytest.approx(np.ravel(ref.chi2)[-1], rel=1e-6)
            assert r2.status[y, x] == ref.status
            assert r2.macro[y, x] == pytest.approx(float(ref.atmosphere.macro), rel=1e-6)


def test_worker_killed_mid_run(problem, reference):
    from helpers import worker_killer

    cube = np.concatenate([problem[3]] * 3, axis=0)  # 6 x 2
    kill_one, killed = worker_killer()

    r = inv(problem, cube=cube, workers=2, chunk=1, progress=kill_one)
    assert killed and r.provenance["pool_restarts"] >= 1
    assert not np.isin(r.status, [STATUS_PENDING, STATUS_WORKER_DIED]).any()
    for k in range(3):
        np.testing.assert_array_equal(r.atmospheres[2 * k:2 * k + 2], reference.atmospheres)
        np.testing.assert_array_equal(r.status[2 * k:2 * k + 2], reference.status)


def test_checkpoint_interrupt_resume(problem, reference, tmp_path):
    from helpers import interrupt_run

    cube = np.concatenate([problem[3]] * 2, axis=0)  # 4 x 2
    ck = tmp_path / "run"
    n_done = interrupt_run(lambda **kw: inv(problem, cube=cube, workers=1, chunk=1, **kw), 2, ck)
    assert 2 <= n_done < 8
    r = inv(problem, cube=cube, workers=2, chunk=1, checkpoint=ck)
    assert r.provenance["resumed"] and r.provenance["computed"] == 8 - n_done
    for k in range(2):
        np.testing.assert_array_equal(r.atmospheres[2 * k:2 * k + 2], reference.atmospheres)
        np.testing.assert_array_equal(r.chi2[2 * k:2 * k + 2], reference.chi2)


def test_nan_masked_and_shapes(problem, reference):
    lines, grid, cfg, cube = problem
    c = cube.copy()
    c[0, 1, 2, 10] = np.nan
    mask = np.array([[True, True], [False, True]])
    r = inv(problem, cube=c, mask=mask, workers=1)
    assert r.status[0, 1] == STATUS_BAD_INPUT and r.status[1, 0] == STATUS_MASKED
    assert np.isnan(r.atmospheres[0, 1]).all() and np.isnan(r.fits[1, 0]).all() and np.isnan(r.chi2[1, 0])
    for y, x in ((0, 0), (1, 1)):
        np.testing.assert_array_equal(r.atmospheres[y, x], reference.atmospheres[y, x])
    with pytest.raises(ValueError, match="4 axes"):
        inv(problem, cube=cube[0])
    with pytest.raises(ValueError, match="Stokes axis"):
        inv(problem, cube=cube, axes="yxls")
    with pytest.raises(ValueError, match="wavelengths"):
        inv(problem, cube=cube[..., 1:])
    with pytest.raises(ValueError, match="mask"):
        inv(problem, mask=np.ones(4, bool))
    rt = inv(problem, cube=np.transpose(cube, (2, 3, 0, 1)), axes="slyx", workers=1)
    assert_same(rt, reference)


def test_result_outputs(problem, reference, tmp_path):
    r = reference
    t0 = r.map("T", 0.0)
    lt = r.atmospheres[0, 0, :, 0]
    assert t0[0, 0] == pytest.approx(np.interp(0.0, lt[::-1], r.atmospheres[0, 0, ::-1, 1]))
    f = r.to_fits(tmp_path / "res.fits")
    back = pyinv.InversionResult.from_fits(f)
    assert_same(back, r)
    assert back.provenance["pyinv_version"] == pyinv.__version__
    files = r.to_sir(tmp_path / "sir", pixels=[(1, 1)])
    m = pyinv.read_sir_model(files[0])
    np.testing.assert_allclose(m.T, r.atmospheres[1, 1, :, 1], rtol=1e-4)


def test_cli_invert(problem, reference, tmp_path):
    from pyinv.cli import main
    from pyinv.io.fits import write_stokes_cube

    lines, grid, cfg, cube = problem
    src = tmp_path / "cube.fits"
    write_stokes_cube(src, np.transpose(cube, (1, 0, 2, 3)), grid.wavelength, axes="xysl")
    trol = tmp_path / "inv.trol"
    cfg.write_sir(trol)
    out = tmp_path / "out.fits"
    assert main(["invert", str(src), "--config", str(trol), "--workers", "1", "--no-progress", "-o", str(out)]) == 0
    back = pyinv.InversionResult.from_fits(out)
    assert_same(back, reference)


def _cli_files(problem, tmp_path):
    """The problem's cube as a FITS file and its configuration as a SIR control file, for `pyinv invert`."""
    from pyinv.io.fits import write_stokes_cube

    lines, grid, cfg, cube = problem
    src = tmp_path / "cube.fits"
    write_stokes_cube(src, cube, grid.wavelength)
    trol = tmp_path / "inv.trol"
    cfg.write_sir(trol)
    return src, trol


def test_cli_invert_magnetic_start(problem, tmp_path):
    """pyinv invert --magnetic-start profiles: the start's B, γ, φ read off each pixel's profiles, as
    pyinv.invert(..., magnetic_start="profiles"); the estimate is kept in the output file."""
    from pyinv.cli import main

    lines, grid, cfg, cube = problem
    src, trol = _cli_files(problem, tmp_path)
    out = tmp_path / "out.fits"
    assert main(["invert", str(src), "--config", str(trol), "--workers", "1", "--no-progress", "-o", str(out),
                 "--magnetic-start", "profiles"]) == 0
    back = pyinv.InversionResult.from_fits(out)
    direct = pyinv.invert(cube, lines, grid, cfg, workers=1, progress=False, magnetic_start="profiles")
    assert back.magnetic_start is not None and back.magnetic_start.shape == cube.shape[:2] + (3,)
    assert np.isfinite(back.magnetic_start).any()
    np.testing.assert_allclose(back.magnetic_start, direct.magnetic_start, equal_nan=True)
    np.testing.assert_allclose(back.atmospheres, direct.atmospheres, rtol=1e-10, atol=1e-10)
    with pytest.raises(SystemExit):
        main(["invert", str(src), "--magnetic-start", "cog"])


def test_cli_invert_two_components_and_local_stray(problem, tmp_path, capsys):
    """pyinv invert --guess2 / --filling / --stray-profile local / --stray: the CLI passes them to pyinv.invert
    (the result carries f₂ and α maps); a --filling without a second component and a missing --stray-profile
    file exit 2."""
    from pyinv.cli import main
    from pyinv.io.sir import write_sir_model

    lines, grid, cfg, cube = problem
    src, trol = _cli_files(problem, tmp_path)
    g2 = tmp_path / "g2.mod"
    write_sir_model(g2, pyinv.models.default_guess().with_columns(B=0.0))
    out = tmp_path / "out.fits"
    assert main(["invert", str(src), "--config", str(trol), "--workers", "1", "--no-progress", "-o", str(out),
                 "--guess2", str(g2), "--filling", "0.2", "--stray-profile", "local", "--stray-window", "3",
                 "--stray", "5"]) == 0
    back = pyinv.InversionResult.from_fits(out)
    assert np.allclose(back.filling2, 0.2) and np.allclose(back.stray, 5.0)
    assert back.atmospheres2 is not None
    assert main(["invert", str(src), "--config", str(trol), "--no-progress", "--filling", "0.2"]) == 2
    assert "--filling needs a second component" in capsys.readouterr().err
    assert main(["invert", str(src), "--config", str(trol), "--no-progress", "--stray-profile", "nothere.per"]) == 2
