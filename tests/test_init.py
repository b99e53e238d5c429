"""Initialisation strategies, the registry (where "cnn" plugs in) and InversionResult helpers."""
from __future__ import annotations

import numpy as np
import pytest

import pyinv
from pyinv import init as pinit
from pyinv import models
from pyinv.maps.inversion import invert_map
from pyinv.maps.result import InversionResult


@pytest.fixture(scope="module")
def ctx_factory(engine):
    lines = pyinv.default_lines()
    grid = models.hinode_grid(lines)
    cfg = pyinv.InversionConfig(cycles=1)

    def make(cube):
        return pinit.InitContext(cube=cube, valid=np.isfinite(cube).all(axis=(2, 3)), lines=lines, grid=grid,
                                 config=cfg)
    return make, lines, grid, cfg


def test_registry():
    names = pinit.available_inits()
    for n in ("single", "previous", "multistart", "cluster", "cnn"):
        assert n in names
    with pytest.raises(ValueError, match="unknown init"):
        pinit.get_init("nope")
    if not _has_cnn():
        with pytest.raises(ValueError, match="not available"):
            pinit.get_init("cnn", "model.pt")

    class Mine(pinit.InitStrategy):
        name = "mine-test"

        def __init__(self, guess=None):
            self.guess = guess

        def initial_guesses(self, ctx):
            ny, nx = ctx.shape
            return pinit.GuessSet.from_atmospheres([models.default_guess()], np.zeros(ny * nx, int))

    pinit.register_init("mine-test", Mine)
    with pytest.raises(ValueError, match="already registered"):
        pinit.register_init("mine-test", Mine)
    s = pinit.get_init("mine-test", 3)
    assert isinstance(s, Mine) and s.guess == 3
    assert pinit.get_init(s) is s
    with pytest.raises(ValueError):
        pinit.get_init(s, guess=1)


def _has_cnn():
    try:
        import pyinv.cnn.init  # noqa: F401
        return True
    except ImportError:
        return False


def test_single_previous_multistart(ctx_factory):
    make, *_ = ctx_factory
    cube = np.ones((2, 3, 4, 112))
    ctx = make(cube)
    gs = pinit.get_init("single").initial_guesses(ctx)
    assert gs.nmodels == 1 and gs.index.shape == (6, 1)
    np.testing.assert_array_equal(gs.table[0], models.default_guess().to_array())
    assert gs.header[0, 0] == 0.5
    # previous from an atmosphere cube with a failed pixel → fallback
    atm = np.broadcast_to(models.default_guess().with_columns(B=900.0).to_array(), (2, 3, 53, 11)).copy()
    atm[1, 2] = np.nan
    gp = pinit.get_init("previous", atm).initial_guesses(ctx)
    assert gp.index[:, 0].tolist() == list(range(6))
    assert gp.table[0, 0, 4] == 900.0 and gp.table[5, 0, 4] == 400.0
    assert gp.info["fallback_pixels"] == 1
    with pytest.raises(ValueError, match="pixels"):
        pinit.get_init("previous", atm[:1]).initial_guesses(ctx)
    gm = pinit.get_init("multistart", 4).initial_guesses(ctx)
    assert gm.nmodels == 4 and gm.index.shape == (6, 4)
    assert len({float(gm.table[k, 0, 4]) for k in range(4)}) == 4


def test_kmeans_deterministic():
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(0, 0.1, (20, 2)), rng.normal(5, 0.1, (20, 2))])
    l1, c1 = pinit.kmeans(x, 2, seed=3)
    l2, _ = pinit.kmeans(x, 2, seed=3)
    np.testing.assert_array_equal(l1, l2)
    assert len(set(l1[:20])) == 1 and len(set(l1[20:])) == 1 and l1[0] != l1[-1]


def test_cluster_picks_library_models(ctx_factory):
    make, lines, grid, cfg = ctx_factory
    protos = dict(pinit.library_prototypes())
    quiet = protos["quiet"]
    umbra = protos["umbra"]
    umbra_neg = umbra.with_columns(gamma=180.0 - np.asarray(umbra.gamma))
    st = pyinv.synthesize([quiet, quiet.with_columns(B=450.0), umbra, umbra_neg], lines, grid)
    cube = st.reshape(2, 2, 4, -1)
    gs = pinit.get_init("cluster").initial_guesses(make(cube))
    names = gs.info["prototypes"]
    rows = gs.index[:, 0]
    npro = len(names)
    assert names[rows[0] % npro] == "quiet" and names[rows[1] % npro] == "quiet"
    assert names[rows[2] % npro].startswith("umbra") and names[rows[3] % npro].startswith("umbra")
    # opposite polarity → flipped twin (γ → 180 − γ)
    assert (rows[2] < npro) != (rows[3] < npro)
    assert gs.table[rows[3], 0, 6] == pytest.approx(180.0 - gs.table[rows[2], 0, 6])
    # labels given (e.g. from the CNN): no k-means
    gl = pinit.get_init("cluster", np.array([[0, 0], [1, 1]])).initial_guesses(make(cube))
    np.testing.assert_array_equal(gl.labels, [[0, 0], [1, 1]])


def test_invert_with_inits_standin(ctx_factory):
    """Each strategy through the whole map path (stand-in solver; the real one in test_maps)."""
    make, lines, grid, cfg = ctx_factory
    g = models.default_guess()
    cube = pyinv.synthesize([g.with_columns(vlos=v) for v in (-5e4, 0.0, 5e4, 8e4)], lines, grid).reshape(2, 2, 4, -1)
    kw = dict(guess=None, mask=None, sigma=None, mu=None, psf=None, abundances=None, axes="yxsl", executor="serial",
              workers=None, chunk=None, checkpoint=None, progress=False, time_limit=None, retries=2,
              solver="pyinv.testing.solvers:vlos_fit_solver")
    r1 = invert_map(cube, lines, grid, cfg, init="single", **kw)
    kw2 = dict(kw, guess=r1)
    rp = invert_map(cube, lines, grid, cfg, init="previous", **kw2)
    np.testing.assert_allclose(rp.map("vlos"), r1.map("vlos"), atol=2e3)
    rm = invert_map(cube, lines, grid, cfg, init="multistart", **dict(kw, guess=3))
    assert (rm.chi2 <= r1.chi2 * (1 + 1e-12)).all() and rm.provenance["nstart"] == 3
    rc = invert_map(cube, lines, grid, cfg, init="cluster", **kw)
    assert (rc.status == 0).all() and "labels" in rc.provenance


def test_result_map_and_io(ctx_factory, tmp_path):
    make, lines, grid, cfg = ctx_factory
    ny, nx, nd = 2, 2, 53
    base = models.default_guess().to_array()
    atm = np.broadcast_to(base, (ny, nx, nd, 11)).copy()
    atm[..., 1] += np.arange(4).reshape(2, 2, 1) * 100.0
    atm[1, 1] = np.nan
    r = InversionResult(atmospheres=atm, macro=np.full((2, 2), 0.5), filling=np.ones((2, 2)), stray=np.zeros((2, 2)),
                        fits=np.zeros((2, 2, 4, 112)), chi2=np.ones((2, 2)), chi2_cycles=np.ones((2, 2, 1)),
                        status=np.array([[0, 0], [6, 103]]), iterations=np.ones((2, 2), int),
                        errors=np.full((2, 2, nd, 11), np.nan), errors_header=np.full((2, 2, 3), np.nan),
                        start=np.zeros((2, 2), int), seconds=np.zeros((2, 2)), line_index=grid.line_index,
                        offset_mA=np.asarray(grid.offset_mA), wavelength=np.asarray(grid.wavelength),
                        provenance={"init": "single"})
    for lt in (0.0, -1.25, 0.95):
        m = r.map("T", lt)
        assert m[0, 1] == pytest.approx(np.interp(lt, base[::-1, 0], base[::-1, 1] + 100.0))
        assert np.isnan(m[1, 1])
    assert np.isnan(r.map("T", 3.0)).all()
    assert r.map("gamma", 0.0)[0, 0] == pytest.approx(60.0)
    with pytest.raises(KeyError):
        r.map("nonsense")
    back = InversionResult.from_fits(r.to_fits(tmp_path / "r.fits"))
    np.testing.assert_array_equal(back.atmospheres, r.atmospheres)
    np.testing.assert_array_equal(back.status, r.status)
    assert back.provenance == {"init": "single"}
    files = r.to_sir(tmp_path / "sir", pixels=[(0, 1)])
    assert [f.suffix for f in files] == [".mod", ".per"]
    assert r.summary()["converged"] == 2
    r.plot(tmp_path / "q.png")
    assert (tmp_path / "q.png").stat().st_size > 1000


def test_cli_synth_map(ctx_factory, tmp_path):
    from pyinv.cli import main
    from pyinv.io.fits import read_stokes_cube

    make, lines, grid, cfg = ctx_factory
    g = models.default_guess()
    a = np.broadcast_to(g.to_array(), (2, 2, 53, 11)).copy()
    a[1, 1] = np.nan
    np.save(tmp_path / "atm.npy", a)
    assert main(["synth", "--atmospheres", str(tmp_path / "atm.npy"), "--macro", "0.5", "-o",
                 str(tmp_path / "c.fits")]) == 0
    cube, wl = read_stokes_cube(tmp_path / "c.fits")
    assert cube.shape == (2, 2, 4, grid.nwav) and np.isnan(cube[1, 1]).all()
    np.testing.assert_allclose(cube[0, 1], pyinv.synthesize(g, lines, grid), rtol=1e-12)
