"""Lightweaver backend (extra pyinv[nlte]) on FAL C and Ca II 8542, and synthesize_map with it."""
from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest

import pyinv
from pyinv import nlte
from pyinv.nlte.backend import NLTE_CONVERGED

pytest.importorskip("lightweaver", reason="lightweaver not installed (pip install 'pyinv[nlte]')")


@pytest.fixture(scope="module")
def setup():
    warnings.simplefilter("ignore")
    from pyinv.nlte.lw import falc_column

    col = falc_column()   # FAL C from Lightweaver's tables
    lines = pyinv.default_lines()
    grid = pyinv.WavelengthGrid.from_regions([(8, -1500, 30, 1500)], lines)
    lm = nlte.level_map(lines, [8])
    be = nlte.Lightweaver(lm, hydrogen="lte", prd=False)
    return col, lines, grid, lm, be, nlte.grid_vacuum_nm(lines, grid)


def test_falc_caii_8542(setup):
    col, lines, grid, lm, be, wl = setup
    r = be.run_column(col.with_field(500.0, 45.0), wl)
    assert r.status == NLTE_CONVERGED, r.message
    assert r.iterations > 3 and r.delta < 1e-3
    I, V = r.stokes[0], r.stokes[3]
    ratio = I.min() / I[0]
    assert 0.2 < ratio < 0.4                                        # the NLTE core (RH: 0.30)
    assert r.stokes_lte[0].min() / r.stokes_lte[0][0] > ratio + 0.2  # LTE core much brighter
    assert wl[np.argmin(I)] == pytest.approx(854.444, abs=0.005)    # vacuum 8542 core
    assert 0.01 < np.abs(V).max() / I[0] < 0.1
    # antisymmetric V around the core, positive gamma < 90 gives opposite signs in the two lobes
    k = np.argmin(I)
    assert np.sign(V[:k].sum()) == -np.sign(V[k + 1:].sum())
    d = r.departures
    assert d.lines == (8,) and d.log_tau[0] > d.log_tau[-1]
    assert np.allclose(d.b_lower[0][d.log_tau > 0.5], 1.0, atol=0.05)
    assert d.b_lower[0].max() > 2.0


def test_lte_profiles_formal_equal_a_separate_lte_run(setup):
    col, lines, grid, lm, be, wl = setup
    c = col.with_field(800.0, 60.0, 20.0)
    c = dataclasses.replace(c, v=np.linspace(-2.0, 3.0, c.ndep))            # a flow gradient [km/s]
    fast = nlte.Lightweaver(lm, hydrogen="lte", prd=False)
    slow = nlte.Lightweaver(lm, hydrogen="lte", prd=False, lte_profiles="solve")
    rf, rs = fast.run_column(c, wl), slow.run_column(c, wl)
    assert rf.ok and rs.ok
    np.testing.assert_allclose(rf.stokes, rs.stokes, rtol=0, atol=1e-12 * rs.stokes[0].max())  # NLTE unchanged
    np.testing.assert_allclose(rf.stokes_lte[0], rs.stokes_lte[0], rtol=1e-4)
    np.testing.assert_allclose(rf.stokes_lte[3], rs.stokes_lte[3], rtol=0, atol=1e-4 * rs.stokes_lte[0].max())
    assert np.abs(rs.stokes_lte[0] / rs.stokes[0] - 1).max() > 0.1      # LTE really differs from NLTE there
    assert rf.departures.b_lower[0].max() > 2.0                         # the NLTE b are kept
    with pytest.raises(ValueError, match="lte_profiles"):
        nlte.Lightweaver(lm, lte_profiles="fast")



@pytest.mark.parametrize("field", [None, (800.0, 60.0, 20.0)])
def test_emergent_profiles_equal_lightweavers_compute_rays(setup, field):
    """The ray Context built without Lightweaver's deep copy (and the shared equation of state) give the same
    NLTE and LTE profiles, bit for bit, as ``Context.compute_rays`` on a context solved the plain way."""
    import lightweaver as lw
    import lightweaver.atmosphere as lwa
    from lightweaver.wittmann import Wittmann

    from pyinv.nlte.lw import _NSCATTER

    col, lines, grid, lm, be, wl = setup
    c = col if field is None else col.with_field(*field)
    c = dataclasses.replace(c, v=np.linspace(-2.0, 3.0, c.ndep))
    r = be.run_column(c, wl)
    assert r.ok
    assert lwa.Wittmann is Wittmann                      # the shared EOS is put back after the column

    rs, spect = be._radiative_set(False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        atmos = lw.Atmosphere.make_1d(lwa.ScaleType.ColumnMass, depthScale=10.0 ** c.depth * 10.0,
                                      temperature=c.T.copy(), vlos=c.v * 1e3, vturb=c.vturb * 1e3,
                                      ne=c.ne * 1e6, logG=c.logg,
                                      **({} if field is None else dict(B=c.B.copy(), gammaB=c.gamma.copy(),
                                                                       chiB=c.chi.copy())))
    atmos.quadrature(be.nrays)
    eq = rs.compute_eq_pops(atmos)
    ctx = lw.Context(atmos, spect, eq, Nthreads=1, conserveCharge=False)
    lw.iterate_ctx_se(ctx, Nscatter=_NSCATTER, prd=False, popsTol=be.pops_tol, NmaxIter=be.max_iter, quiet=True)
    stokes = field is not None

    def rays():
        out = np.asarray(ctx.compute_rays(wl, [be.mu], stokes=stokes))
        return out.reshape(4, -1) if stokes else out.reshape(-1)

    nlte_ref = rays()
    pops = eq.atomicPops["Ca"]
    pops.n[:] = pops.nStar
    lte_ref = rays()
    if stokes:
        np.testing.assert_array_equal(r.stokes, nlte_ref)
        np.testing.assert_array_equal(r.stokes_lte, lte_ref)
        assert np.abs(r.stokes[3]).max() > 1e-3 * r.stokes[0].max()
    else:
        np.testing.assert_array_equal(r.stokes[0], nlte_ref)
        np.testing.assert_array_equal(r.stokes_lte[0], lte_ref)
        assert not r.stokes[1:].any() and not r.stokes_lte[1:].any()
    assert np.abs(np.atleast_2d(lte_ref)[0] / np.atleast_2d(nlte_ref)[0] - 1).max() > 0.1   # LTE differs


def test_velocity_sign_and_sir_model(setup):
    col, lines, grid, lm, be, wl = setup
    nolte = nlte.Lightweaver(lm, hydrogen="model", prd=False, lte=False)
    atm = pyinv.models.hsra()
    r0 = nolte.synthesize(atm, wl)
    r1 = nolte.synthesize(atm.with_columns(vlos=np.full(atm.ndep, 3e5)), wl)  # 3 km/s redshift (SIR sign)
    assert r0.status == NLTE_CONVERGED and r1.status == NLTE_CONVERGED
    assert r0.departures.log_tau == pytest.approx(atm.log_tau)
    shift_nm = wl[np.argmin(r1.stokes[0])] - wl[np.argmin(r0.stokes[0])]
    assert shift_nm == pytest.approx(3.0 / 299792.458 * 854.44, abs=0.004)


def test_synthesize_map_lightweaver_matches_single_runs(setup):
    col, lines, grid, lm, be, wl = setup
    atm = pyinv.models.hsra()
    cube = np.broadcast_to(atm.to_array(), (1, 2, atm.ndep, 11)).copy()
    cube[0, 1, :, 4] = 1000.0
    cube[0, 1, :, 6] = 30.0
    backend = nlte.Lightweaver(lm, hydrogen="model", prd=False, lte=False)
    m = pyinv.synthesize_map(cube, lines, grid, backend=backend, workers=2)   # pool: extras from workers
    assert m.status.tolist() == [[0, 0]]
    one = backend.synthesize(pyinv.Atmosphere.from_array(cube[0, 1]), wl)
    assert np.allclose(m.stokes[0, 1], one.stokes, rtol=1e-10, atol=0)
    assert m.b_lower.shape == (1, 2, 1, atm.ndep)
    assert np.allclose(m.b_lower[0, 1, 0], one.departures.b_lower[0])
    assert np.abs(m.stokes[0, 1, 3]).max() > 1e-3 * m.stokes[0, 1, 0, 0]
    assert np.abs(m.stokes[0, 0, 3]).max() < 1e-12 * m.stokes[0, 0, 0, 0]


def test_cli_synth_nlte_lightweaver(tmp_path, capsys):
    from pyinv.cli import main
    from pyinv.io.sir import read_sir_profiles

    out = tmp_path / "ca.per"
    assert main(["synth", "--nlte", "lightweaver", "--model", "hsra", "-o", str(out), "--no-plot"]) == 0
    prof = read_sir_profiles(out)
    assert prof.stokes.shape[-1] == 301 and np.all(np.asarray(prof.line_index) == 8)
    assert prof.stokes[0][0] == pytest.approx(1.0)               # normalised at the window's first point
    dep = nlte.read_sir_departures(out.with_suffix(".dep"))
    assert dep.lines == (8,) and dep.ndep == 53
    assert "converged" in capsys.readouterr().out


def test_non_convergence_is_a_status(setup):
    col, lines, grid, lm, be, wl = setup
    r = nlte.Lightweaver(lm, hydrogen="lte", prd=False, lte=False, max_iter=6).run_column(col, wl)
    assert r.status == nlte.NLTE_NOT_CONVERGED and "not converged" in r.message
    assert np.all(np.isfinite(r.stokes))
