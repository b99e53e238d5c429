"""Joint LTE + NLTE inversions in one pixel (issue 19): Fe I 6301.5/6302.5 in LTE (b = 1) with Ca II 8542 in
NLTE (departures from the backend) on one wavelength grid of two regions, one node model and one χ²
(pyinv.nlte.invert_pixel_nlte, pyinv.invert(..., nlte=...), pyinv invert --nlte ... --nlte-lines).

The region bookkeeping is tested with a stand-in backend (no NLTE code needed); the live tests use Lightweaver
and are skipped without it."""
from __future__ import annotations

import argparse
import warnings

import numpy as np
import pytest

import pyinv
from pyinv import nlte
from pyinv.nlte.backend import NlteBackend, NlteResult
from pyinv.nlte.desire import invert_pixel_nlte, nlte_regions, on_engine_scale

#: Fe I 6301.5 / 6302.5 (SIR indices 1, 2) in one region, Ca II 8542 (index 8) in another
JOINT_REGIONS = [("1,2", -400.0, 40.0, 1400.0), (8, -1200.0, 60.0, 1200.0)]


def _joint_grid(lines):
    return pyinv.WavelengthGrid.from_regions(JOINT_REGIONS, lines)


class _StandIn(NlteBackend):
    """A backend that returns the engine's LTE profiles of the Ca II region × a constant (its own intensity
    unit) with a known 'NLTE' change in the line core, and records the wavelengths it was asked for."""

    name = "stand-in"

    def __init__(self, lines, grid, bump: float, unit: float = 3.0e-8):
        super().__init__(nlte.level_map(lines, [8]), lte=True)
        self.line_list, self.grid, self.bump, self.unit, self.asked = lines, grid, bump, unit, []

    def check(self) -> None:
        pass

    def run_column(self, column, wavelength_vac_nm, *, pixel_id="0", time_limit=None):  # pragma: no cover
        raise NotImplementedError

    def synthesize(self, atmos, wavelength_vac_nm, *, abundances=None, pixel_id="0", time_limit=None):
        self.asked.append(np.array(wavelength_vac_nm))
        idx = nlte_regions(self.grid, self)[0]
        lte = pyinv.synthesize(atmos, self.line_list, self.grid, convolve=False)[:, idx]
        off = np.asarray(self.grid.offset_mA)[idx]
        nl = lte.copy()
        nl[0] += self.bump * np.exp(-(off / 150.0) ** 2)
        return NlteResult(np.asarray(wavelength_vac_nm), nl * self.unit, lte * self.unit)


def test_nlte_regions_and_scale():
    lines = pyinv.default_lines()
    grid = _joint_grid(lines)
    regs = nlte_regions(grid, nlte.level_map(lines, [8]))
    n_fe = grid.regions[0].npoints
    assert len(regs) == 1 and regs[0].tolist() == list(range(n_fe, grid.nwav))
    assert [r.tolist() for r in nlte_regions(grid, nlte.level_map(lines, [1, 2, 8]))] == \
        [list(range(n_fe)), list(range(n_fe, grid.nwav))]
    with pytest.raises(ValueError, match="none of the grid's lines"):
        nlte_regions(pyinv.WavelengthGrid.from_regions([JOINT_REGIONS[0]], lines), nlte.level_map(lines, [8]))
    # each region's scale: the engine's LTE over the backend's LTE at the region's two ends
    lte = np.ones((4, grid.nwav))
    lte[0, n_fe:] = np.linspace(2.0, 4.0, grid.nwav - n_fe)
    r = NlteResult(np.zeros(grid.nwav - n_fe), np.full((4, grid.nwav - n_fe), 5.0),
                   np.full((4, grid.nwav - n_fe), 10.0))
    out = on_engine_scale(r, lte, regs, np.full((4, grid.nwav), -1.0))
    assert np.all(out[:, :n_fe] == -1.0)
    np.testing.assert_allclose(out[:, n_fe:], 5.0 * (2.0 + 4.0) / 20.0)


def test_joint_inversion_lte_region_has_no_correction():
    """With a stand-in backend: only the Ca II region's wavelengths go to the backend, the correction Δ is the
    backend's 'NLTE' change there (in any intensity unit) and exactly 0 in the Fe I region, and the joint fit
    reproduces both regions."""
    lines = pyinv.default_lines()
    grid = _joint_grid(lines)
    be = _StandIn(lines, grid, bump=0.05)
    truth = pyinv.models.hsra(B=600.0, gamma=50.0, phi=30.0, vlos=3e4)
    n_fe = grid.regions[0].npoints
    off = np.asarray(grid.offset_mA)
    obs = pyinv.synthesize(truth, lines, grid)
    obs[0, n_fe:] += 0.05 * np.exp(-(off[n_fe:] / 150.0) ** 2)
    start = truth.with_columns(B=300.0, gamma=30.0, phi=20.0, vlos=0.0)
    cfg = pyinv.InversionConfig(cycles=1, nodes={"T": 2, "vlos": 1, "B": 1, "gamma": 1, "phi": 1},
                                weights=(1, 1, 1, 1), snr=1000.0)
    r = invert_pixel_nlte(obs, start, lines, grid, cfg, backend=be, max_refresh=1)
    wl = nlte.grid_vacuum_nm(lines, grid)
    assert all(np.array_equal(a, wl[n_fe:]) for a in be.asked) and 1 <= r.backend_calls == len(be.asked) <= 2
    assert np.all(r.correction[:, :n_fe] == 0.0)
    np.testing.assert_allclose(r.correction[0, n_fe:], 0.05 * np.exp(-(off[n_fe:] / 150.0) ** 2), atol=1e-9)
    assert r.status == 0 and r.result.ok
    np.testing.assert_allclose(r.result.fit, obs, atol=3e-3)
    assert abs(r.result.atmosphere.B[0] - 600.0) < 10.0


def test_cli_nlte_lines_are_checked():
    from pyinv.cli import _nlte_backend, build_parser

    lines = pyinv.default_lines()
    grid = _joint_grid(lines)
    ns = build_parser().parse_args(["invert", "c.fits", "--nlte", "lightweaver", "--nlte-lines", "8"])
    assert ns.nlte_lines == "8"
    for bad, msg in (("3", "not in the grid"), ("x", "SIR line indices")):
        with pytest.raises(SystemExit, match=msg):
            _nlte_backend("lightweaver", lines, grid, argparse.Namespace(nlte_lines=bad, rh_dir=None))
    with pytest.raises(SystemExit, match="needs --nlte"):
        _nlte_backend(None, lines, grid, argparse.Namespace(nlte_lines="8"))
    # a line of the grid without a level map cannot be asked for in NLTE
    grid3 = pyinv.WavelengthGrid.from_regions([(3, -300, 30, 300), (8, -600, 60, 600)], lines)
    with pytest.raises(SystemExit, match="no known NLTE level map"):
        _nlte_backend("lightweaver", lines, grid3, argparse.Namespace(nlte_lines="3,8", rh_dir=None))


# ----------------------------------------------------------------------------------------- Lightweaver, live
@pytest.fixture(scope="module")
def joint_lw():
    pytest.importorskip("lightweaver", reason="lightweaver not installed (pip install 'pyinv[nlte]')")
    from pyinv.nlte.desire import _convolve_like_synthesis
    from pyinv.nlte.lw import falc_column

    warnings.simplefilter("ignore")
    lines = pyinv.default_lines()
    grid = _joint_grid(lines)
    regs = nlte_regions(grid, nlte.level_map(lines, [8]))
    wl = nlte.grid_vacuum_nm(lines, grid)[regs[0]]
    be = nlte.Lightweaver(nlte.level_map(lines, [8]), prd=False, lte=True)
    col = falc_column()
    lt = np.round(np.arange(1.0, -5.3 - 1e-9, -0.1), 2)
    base = nlte.atmosphere_from_column(col, be.synthesize(col, wl).tau500, lt, hydrostatic=True)
    truth = pyinv.hydrostatic(base.with_columns(
        T=np.asarray(base.T) + 120.0 * np.exp(-((lt + 1.5) / 0.6) ** 2), B=900.0, gamma=50.0,
        phi=30.0, vlos=5e4))
    r = be.synthesize(truth, wl)
    lte = pyinv.synthesize(truth, lines, grid, convolve=False)
    obs = _convolve_like_synthesis(on_engine_scale(r, lte, regs, lte), lines, grid, 0.0, None)
    start = base.with_columns(B=200.0, gamma=30.0, phi=20.0)
    return lines, grid, be, lt, truth, obs, start


JOINT_CONFIG = dict(cycles=1, nodes={"T": 5, "vlos": 1, "B": 1, "gamma": 1, "phi": 1}, weights=(1, 1, 1, 1),
                    snr=1000.0)


def test_joint_inversion_lightweaver(joint_lw):
    """Fe I 6301/6302 (LTE) + Ca II 8542 (Lightweaver's NLTE profile on the engine's continuum scale): the
    joint DeSIRe-like inversion fits both regions, recovers B at log τ = −1 and the photospheric T, and
    leaves the Fe I region uncorrected."""
    lines, grid, be, lt, truth, obs, start = joint_lw
    n_fe = grid.regions[0].npoints
    r = invert_pixel_nlte(obs, start, lines, grid, pyinv.InversionConfig(**JOINT_CONFIG), backend=be, max_refresh=1)
    a = r.result.atmosphere
    k = int(np.argmin(np.abs(lt + 1.0)))
    m = (lt <= 0.0) & (lt >= -2.0)
    dT = float(np.sqrt(np.mean((a.T[m] - truth.T[m]) ** 2)))
    res = np.abs(r.result.fit - obs)
    print(f"\njoint LW: B(-1) {a.B[k]:.0f} (truth {truth.B[k]:.0f}) G, gamma {a.gamma[k]:.1f}, T rms 0..-2 {dT:.0f} K, "
          f"max |fit - obs| Fe {res[:, :n_fe].max():.4f} Ca {res[:, n_fe:].max():.4f}, calls {r.backend_calls}")
    assert r.status == 0 and r.result.ok and 1 <= r.backend_calls <= 2
    assert np.all(r.correction[:, :n_fe] == 0.0) and np.abs(r.correction[0, n_fe:]).max() > 0.01
    assert abs(a.B[k] - truth.B[k]) < 30.0 and abs(a.gamma[k] - 50.0) < 3.0
    assert dT < 60.0
    assert res[:, :n_fe].max() < 0.015 and res[:, n_fe:].max() < 0.01



def test_joint_emulated_default_does_not_refine(joint_lw):
    """With LTE lines in the fit the emulated inversion's default (``t_refine="auto"``) keeps the node result
    and says why in the provenance (check threshold 0.01); asked for, the refinement still runs."""
    lines, grid, be, lt, truth, obs, start = joint_lw
    cfg = pyinv.InversionConfig(**JOINT_CONFIG)
    d = invert_pixel_nlte(obs, start, lines, grid, cfg, backend=be, departures="emulated")
    assert d.provenance["refine"]["skipped"].startswith("auto: off with LTE lines in the fit (1 of 2 regions")
    assert d.provenance["check"]["threshold"] == 0.01
    m = invert_pixel_nlte(obs, start, lines, grid, cfg, backend=be, departures="emulated", t_refine="map")
    assert "accepted" in m.provenance["refine"] and m.provenance["check"]["threshold"] == 0.03
    assert d.backend_calls == m.backend_calls == 1


def test_cli_invert_nlte_joint_grid(joint_lw, tmp_path, capsys):
    """``pyinv invert CUBE --nlte lightweaver --nlte-lines 8 --grid JOINT.grid``: Fe I in LTE, Ca II in NLTE,
    one pixel; the result file's fit matches invert_pixel_nlte's."""
    from pyinv.cli import main
    from pyinv.io.fits import write_stokes_cube
    from pyinv.io.sir import read_sir_model, write_sir_model
    from pyinv.maps.result import InversionResult

    lines, grid, be, lt, truth, obs, start = joint_lw
    grid.write_sir(tmp_path / "joint.grid")
    write_sir_model(tmp_path / "start.mod", start)
    write_stokes_cube(tmp_path / "obs.fits", obs[None, None], grid.wavelength)
    out = tmp_path / "res.fits"
    rc = main(["invert", str(tmp_path / "obs.fits"), "--grid", str(tmp_path / "joint.grid"), "--guess",
               str(tmp_path / "start.mod"), "--nlte", "lightweaver", "--nlte-lines", "8", "--workers", "1",
               "--no-progress", "-o", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "NLTE lines 8 (CaII 2-4); LTE lines 1, 2" in text
    res = InversionResult.from_fits(out)
    assert res.status.tolist() == [[0]]
    cfg = pyinv.InversionConfig(cycles=1, nodes={"T": 2, "vlos": 1, "B": 1, "gamma": 1, "phi": 1},
                                weights=(1, 4, 4, 2))
    be1 = nlte.Lightweaver(nlte.level_map(lines, [8]), lte=True)
    one = invert_pixel_nlte(obs, read_sir_model(tmp_path / "start.mod"), lines, grid, cfg, backend=be1)
    np.testing.assert_allclose(res.fits[0, 0], one.result.fit, rtol=0, atol=1e-6)
    np.testing.assert_allclose(res.fits[0, 0], obs, atol=0.03)


def test_joint_inversion_cross_code_rh_to_lightweaver(joint_lw):
    """Cross-code (issue 19): Ca II 8542 observed with RH 2 (Fe I 6301/6302 from the engine in LTE), inverted
    jointly with the Lightweaver backend; B at log τ = −1 is set by Fe I whatever the NLTE code. Needs an RH 2
    build named by PYINV_RH_DIR (skipped otherwise)."""
    import os

    from pyinv.nlte.desire import _convolve_like_synthesis
    from pyinv.nlte.rh import RH_ENV

    if not os.environ.get(RH_ENV):
        pytest.skip(f"RH 2 not available: set {RH_ENV} to an RH 2 build to run this test")
    lines, grid, be, lt, truth, _, start = joint_lw
    regs = nlte_regions(grid, be)
    rh = nlte.RH(nlte.level_map(lines, [8]), lte=True)
    r = rh.synthesize(truth, nlte.grid_vacuum_nm(lines, grid)[regs[0]])
    assert r.ok, r.message
    lte = pyinv.synthesize(truth, lines, grid, convolve=False)
    obs = _convolve_like_synthesis(on_engine_scale(r, lte, regs, lte), lines, grid, 0.0, None)
    res = invert_pixel_nlte(obs, start, lines, grid, pyinv.InversionConfig(**JOINT_CONFIG), backend=be,
                            max_refresh=1)
    a = res.result.atmosphere
    k = int(np.argmin(np.abs(lt + 1.0)))
    n_fe = grid.regions[0].npoints
    fit = np.abs(res.result.fit - obs)
    print(f"\ncross-code joint: B(-1) {a.B[k]:.0f} (truth {truth.B[k]:.0f}) G, max |fit - obs| Fe {fit[:, :n_fe].max():.4f} "
          f"Ca {fit[:, n_fe:].max():.4f}, calls {res.backend_calls}")
    assert res.status == 0 and res.result.ok
    assert abs(a.B[k] - truth.B[k]) < 50.0 and abs(a.gamma[k] - 50.0) < 5.0
    assert fit[:, :n_fe].max() < 0.03
