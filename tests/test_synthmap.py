"""pyinv.synthesize_map: the LTE engine per column on the pool (own log tau grid per pixel, mask,
checkpoint), and RH over a 4x4 map with 2 workers (needs PYINV_RH_DIR)."""
from __future__ import annotations

import os

import numpy as np
import pytest

import pyinv
from pyinv import nlte


def _cube(ny=3, nx=4):
    base = pyinv.models.hsra()
    rng = np.random.default_rng(3)
    cube = np.empty((ny, nx, base.ndep, 11))
    for j in range(ny):
        for i in range(nx):
            lt = base.log_tau + 0.05 * ((j * nx + i) % 3)               # a different grid per column
            a = pyinv.models.hsra(B=float(rng.uniform(0, 1500)), gamma=float(rng.uniform(0, 180)),
                                  phi=float(rng.uniform(0, 180)), vlos=float(rng.normal(0, 1e5)))
            arr = a.to_array()
            arr[:, 0] = lt
            arr[:, 1] *= 1.0 + 0.02 * rng.normal()
            cube[j, i] = arr
    return cube


def test_lte_map_equals_per_column_synthesis(tmp_path):
    lines = pyinv.default_lines()
    grid = pyinv.WavelengthGrid.from_regions([("1,2", -600, 20, 1600)], lines)
    cube = _cube()
    mask = np.ones(cube.shape[:2], bool)
    mask[2, 3] = False
    m = pyinv.synthesize_map(cube, lines, grid, backend="lte", workers=2, mask=mask,
                             checkpoint=str(tmp_path / "ck"))
    assert m.stokes.shape == (3, 4, 4, grid.nwav)
    assert m.status[2, 3] == 101 and np.isnan(m.stokes[2, 3]).all()
    for j in range(3):
        for i in range(4):
            if not mask[j, i]:
                continue
            ref = pyinv.synthesize(pyinv.Atmosphere.from_array(cube[j, i]), lines, grid)
            assert np.array_equal(m.stokes[j, i], ref), (j, i)
    assert m.status[mask].tolist() == [0] * int(mask.sum())
    # resuming the finished checkpoint computes nothing and returns the same maps
    again = pyinv.synthesize_map(cube, lines, grid, backend="lte", executor="serial", mask=mask,
                                 checkpoint=str(tmp_path / "ck"))
    assert again.provenance["resumed"] and again.provenance["computed"] == 0
    assert np.array_equal(again.stokes[mask], m.stokes[mask])


def test_map_input_checks():
    lines = pyinv.default_lines()
    grid = pyinv.WavelengthGrid.from_regions([(1, -100, 50, 100)], lines)
    with pytest.raises(ValueError, match="ny, nx, ndep, 11"):
        pyinv.synthesize_map(np.zeros((2, 53, 11)), lines, grid)
    with pytest.raises(ValueError, match="backend"):
        pyinv.synthesize_map(_cube(1, 1), lines, grid, backend=42)
    bad = _cube(1, 2)
    bad[0, 1, 10, 1] = np.nan                                            # an invalid model: its own status
    m = pyinv.synthesize_map(bad, lines, grid, executor="serial")
    assert m.status.tolist() == [[0, 103]]


def _rh_dir() -> str:
    d = os.environ.get("PYINV_RH_DIR")
    if not d:
        pytest.skip("RH 2 not available: set PYINV_RH_DIR to an RH 2 build to run this test")
    return d


def test_rh_map_4x4_two_workers_broken_pixel(tmp_path):
    rh_dir = _rh_dir()
    lines = pyinv.default_lines()
    grid = pyinv.WavelengthGrid.from_regions([(8, -1500, 30, 1500)], lines)
    base = pyinv.models.hsra().to_array()
    cube = np.broadcast_to(base, (4, 4) + base.shape).copy()
    rng = np.random.default_rng(7)
    cube[..., 4] = rng.uniform(0, 1500, (4, 4))[..., None]
    cube[..., 6] = rng.uniform(0, 180, (4, 4))[..., None]
    cube[..., 5] = rng.normal(0, 1e5, (4, 4))[..., None]
    cube[1, 2, -5:, 1] = 50.0                                            # T far outside the atom's tables
    work = tmp_path / "w"
    be = nlte.RH(nlte.level_map(lines, [8]), rh_dir=rh_dir, workdir=work, lte=False)
    m = pyinv.synthesize_map(cube, lines, grid, backend=be, workers=2, checkpoint=str(tmp_path / "ck"))
    expect = np.zeros((4, 4), int)
    expect[1, 2] = nlte.NLTE_CRASHED
    assert m.status.tolist() == expect.tolist()
    assert np.isnan(m.stokes[1, 2]).all()
    assert not any((work / "px").iterdir())                              # no sandbox left behind
    wl = nlte.grid_vacuum_nm(lines, grid)
    for j, i in ((0, 0), (3, 1)):
        one = be.synthesize(pyinv.Atmosphere.from_array(cube[j, i]), wl)
        assert np.array_equal(m.stokes[j, i], one.stokes)                # identical to a one-pixel run
        assert np.array_equal(m.b_lower[j, i, 0], one.departures.b_lower[0])


def test_lte_map_response_functions_equal_per_column():
    lines = pyinv.default_lines()
    grid = pyinv.WavelengthGrid.from_regions([("1,2", -400, 40, 1400)], lines)
    cube = _cube(2, 2)
    m = pyinv.synthesize_map(cube, lines, grid, rf=("T", "B", "macro"), workers=2)
    assert set(m.rf) == {"T", "B", "macro"}
    assert m.rf["T"].shape == (2, 2, cube.shape[2], 4, grid.nwav) and m.rf["macro"].shape == (2, 2, 4, grid.nwav)
    for j, i in ((0, 0), (1, 1)):
        ref = pyinv.response_functions(pyinv.Atmosphere.from_array(cube[j, i]), lines, grid, hydrostatic=False)
        assert np.array_equal(m.rf["T"][j, i], ref["T"]) and np.array_equal(m.rf["B"][j, i], ref["B"])
        assert np.array_equal(m.rf["macro"][j, i], ref["macro"])
        assert np.array_equal(m.stokes[j, i], ref["stokes"])
    assert np.abs(m.rf["T"]).max() > 0
    with pytest.raises(ValueError, match="unknown response-function"):
        pyinv.synthesize_map(cube, lines, grid, rf=("X",))
