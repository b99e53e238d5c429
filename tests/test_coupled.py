"""Spatially coupled inversions (issue 20): the PSF operator, the matrix-free normal equations, a coupled
inversion of a small PSF-degraded map, resuming from a checkpoint, and the input checks."""
from __future__ import annotations

import numpy as np
import pytest

import pyinv
from pyinv.coupled import CoupledOperator, SpatialPSF, invert_coupled, pcg
from pyinv.coupled.operator import block_inverse
from pyinv.coupled.tiles import make_tiles


def _kernel(n: int = 5, s: float = 0.8, wing: float = 0.01) -> np.ndarray:
    """A small PSF: a Gaussian core with exponential wings (unnormalised)."""
    y, x = np.mgrid[:n, :n] - n // 2
    r2 = x * x + y * y
    return np.exp(-r2 / (2 * s * s)) + wing * np.exp(-np.sqrt(r2) / 2)


def _dense_psf(kernel: np.ndarray, ny: int, nx: int) -> np.ndarray:
    """The PSF operator as a dense (ny·nx, ny·nx) matrix, written independently of SpatialPSF: every output
    pixel sums K(u, v) times the input at (i + cy − u, j + cx − v), indices mirrored at the edges."""
    k = kernel / kernel.sum()
    ky, kx = k.shape
    cy, cx = ky // 2, kx // 2

    def mirror(i: int, n: int) -> int:
        i = i % (2 * n)
        return i if i < n else 2 * n - 1 - i

    out = np.zeros((ny * nx, ny * nx))
    for i in range(ny):
        for j in range(nx):
            for u in range(ky):
                for v in range(kx):
                    a, b = mirror(i + cy - u, ny), mirror(j + cx - v, nx)
                    out[i * nx + j, a * nx + b] += k[u, v]
    return out


# ------------------------------------------------------------------------------------------ PSF operator
@pytest.mark.parametrize("kshape,shape", [((5, 5), (8, 8)), ((4, 7), (6, 9)), ((9, 9), (3, 4)), ((1, 1), (2, 3))])
def test_psf_adjoint_and_direct(kshape, shape):
    rng = np.random.default_rng(1)
    op = SpatialPSF(rng.random(kshape) + 0.01)
    x = rng.standard_normal((3,) + shape)
    y = rng.standard_normal((3,) + shape)
    lhs = float(np.sum(op.apply(x) * y))
    rhs = float(np.sum(x * op.adjoint(y)))
    assert abs(lhs - rhs) <= 1e-12 * max(abs(lhs), 1.0)
    dense = _dense_psf(op.kernel, *shape)
    for c in range(3):
        np.testing.assert_allclose(op.apply(x[c]).ravel(), dense @ x[c].ravel(), atol=1e-13)
        np.testing.assert_allclose(op.adjoint(y[c]).ravel(), dense.T @ y[c].ravel(), atol=1e-13)


def test_psf_normalised_and_flux_conserving(tmp_path):
    from astropy.io import fits

    k = _kernel(7)
    fits.writeto(tmp_path / "psf.fits", 3.0 * k)
    op = SpatialPSF(tmp_path / "psf.fits")
    assert op.kernel.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(op.kernel, k / k.sum())
    img = np.full((6, 5), 2.5)
    np.testing.assert_allclose(op.apply(img), img, rtol=1e-12)   # mirror extension keeps a constant map
    assert op.effective_radius(1.0) == 5 and op.effective_radius(0.5) <= 1


def test_hinode_psf(data_dir):
    op = SpatialPSF(data_dir / "instrument_hinode_sp" / "hinode_psf_0.16.fits")
    assert op.shape == (41, 41) and op.kernel.sum() == pytest.approx(1.0)
    assert 10 <= op.effective_radius() <= 20


@pytest.mark.parametrize("bad,match", [(np.ones(5), "2-D"), (np.ones((2, 3, 4)), "2-D"),
                                       (np.array([[1.0, np.nan], [1.0, 1.0]]), "finite"),
                                       (np.array([[1.0, -0.5], [1.0, 1.0]]), "non-negative"),
                                       (np.zeros((3, 3)), "positive sum"), ("not a file.fits", None)])
def test_bad_psf(bad, match):
    with pytest.raises((ValueError, OSError), match=match):
        SpatialPSF(bad)


# ------------------------------------------------------------------------------------------ normal equations
def test_matrix_free_normal_equations_equal_explicit():
    rng = np.random.default_rng(3)
    ny, nx, nchan, m = 5, 5, 4, 3
    kernel = _kernel(3, s=0.7)
    psf = SpatialPSF(kernel)
    jac = rng.standard_normal((ny * nx, nchan, m))
    w = rng.random((nchan, ny, nx)) + 0.1
    w[1, 2, 3] = 0.0
    op = CoupledOperator(jac, w, psf)
    # independent dense J = P B: B puts J_p v_p into pixel p of every channel, P acts on each channel
    pd = _dense_psf(kernel, ny, nx)
    npix = ny * nx
    bd = np.zeros((nchan * npix, npix * m))
    for p in range(npix):
        for c in range(nchan):
            bd[c * npix + p, p * m:(p + 1) * m] = jac[p, c]
    jd = np.kron(np.eye(nchan), pd) @ bd
    a = jd.T @ (w.ravel()[:, None] * jd)
    np.testing.assert_allclose(op.explicit_normal(), a, rtol=1e-12, atol=1e-12)
    v = rng.standard_normal((npix, m))
    np.testing.assert_allclose(op.normal(v).ravel(), a @ v.ravel(), rtol=1e-12, atol=1e-12)
    r = rng.standard_normal((nchan, ny, nx))
    np.testing.assert_allclose(op.gradient(r).ravel(), jd.T @ (w.ravel() * r.ravel()), rtol=1e-12, atol=1e-12)
    assert op.quadratic(v) == pytest.approx(float(v.ravel() @ a @ v.ravel()), rel=1e-12)
    # the preconditioner's pixel blocks are the exact diagonal blocks away from the edges
    blocks = op.pixel_blocks()
    centre = 2 * nx + 2
    np.testing.assert_allclose(blocks[centre], a[centre * m:(centre + 1) * m, centre * m:(centre + 1) * m], rtol=1e-12)
    # PCG solves the damped system
    damp = 0.05 * np.einsum("pii->pi", blocks)
    pre = block_inverse(blocks + damp[:, :, None] * np.eye(m)[None])
    b = rng.standard_normal((npix, m))
    x, info = pcg(op, b, damp, pre, tol=1e-12, maxiter=500)
    assert info.converged
    np.testing.assert_allclose(x.ravel(), np.linalg.solve(a + np.diag(damp.ravel()), b.ravel()), rtol=1e-7, atol=1e-9)


def test_tiles_cover_the_map_once():
    tiles = make_tiles(10, 7, 4, 2)
    cover = np.zeros((10, 7), dtype=int)
    for t in tiles:
        y0, y1, x0, x1 = t.inner
        cover[y0:y1, x0:x1] += 1
        oy0, oy1, ox0, ox1 = t.outer
        assert oy0 == max(0, y0 - 2) and oy1 == min(10, y1 + 2) and ox0 == max(0, x0 - 2) and ox1 == min(7, x1 + 2)
        sy, sx = t.inner_in_outer
        assert sy.stop - sy.start == y1 - y0 and sx.stop - sx.start == x1 - x0
    assert np.all(cover == 1)


# ------------------------------------------------------------------------------------------ coupled inversions
@pytest.fixture(scope="module")
def degraded(engine):
    """A 6×6 generated sunspot map degraded by a small PSF with noise 1e-3, and its pixel-by-pixel inversion."""
    from pyinv import synthetic

    m = synthetic.generate_map(6, seed=2, noise=0.0)
    psf = SpatialPSF(_kernel())
    deg = np.moveaxis(psf.apply(np.moveaxis(m.cube, (2, 3), (0, 1))), (0, 1), (2, 3))
    obs = deg + np.random.default_rng(1).normal(0.0, 1e-3, deg.shape)
    cfg = pyinv.InversionConfig(cycles=2, nodes={"T": (1, 3), "vlos": 1, "B": 1, "gamma": 1, "phi": 1, "macro": 1,
                                                 "vmic": 1}, weights=(1, 4, 4, 2), snr=1000)
    start = pyinv.invert(obs, m.lines, m.grid, cfg, psf=m.psf, executor="serial", progress=False)
    return {"m": m, "psf": psf, "obs": obs, "cfg": cfg, "start": start}


def _rms(a, b):
    return float(np.sqrt(np.mean((a - b) ** 2)))


@pytest.fixture(scope="module")
def coupled(degraded):
    """The coupled inversion of ``degraded`` (serial, 6 LM iterations)."""
    d = degraded
    m = d["m"]
    return invert_coupled(d["obs"], d["start"], d["psf"], lines=m.lines, grid=m.grid, config=d["cfg"], psf=m.psf,
                          executor="serial", progress=False, max_iterations=6)


def test_coupled_inversion_improves_fit_and_parameters(degraded, coupled, tmp_path):
    d = degraded
    m = d["m"]
    res = coupled
    assert isinstance(res, pyinv.InversionResult)
    st = d["start"]
    for name in ("atmospheres", "fits", "chi2", "chi2_reduced", "status", "macro", "errors"):
        assert np.shape(getattr(res, name)) == np.shape(getattr(st, name)), name
    assert np.all(res.status == 0)
    # the model of the degraded data fits it far better than the pixel-by-pixel fits did
    assert np.median(res.chi2_reduced) < 0.5 * np.median(st.chi2_reduced)
    hist = res.provenance["coupled"]["tiles"][0]["chi2"]
    assert all(b < a for a, b in zip(hist, hist[1:]))
    # ... and the parameters move towards the truth
    for name in ("T", "B", "vlos", "gamma"):
        assert _rms(res.map(name), m.truth_map(name)) < _rms(st.map(name), m.truth_map(name)), name
    # the fits are P S: the reported profiles are the PSF-convolved syntheses of the reported models
    ny, nx, nd, _ = res.atmospheres.shape
    atms = pyinv.Atmosphere.from_array(res.atmospheres.reshape(ny * nx, nd, 11), macro=res.macro.ravel())
    s = pyinv.synthesize(atms, m.lines, m.grid, psf=m.psf).reshape(ny, nx, 4, -1)
    ps = np.moveaxis(d["psf"].apply(np.moveaxis(s, (2, 3), (0, 1))), (0, 1), (2, 3))
    np.testing.assert_allclose(res.fits, ps, atol=2e-6)
    # synthesize_map of the result gives the same unconvolved profiles S
    smap = pyinv.synthesize_map(res, m.lines, m.grid, psf=m.psf, executor="serial")
    np.testing.assert_allclose(smap.stokes, s, rtol=0, atol=1e-12)
    # the result is an ordinary InversionResult: it goes through FITS like the pixel-by-pixel one
    back = pyinv.InversionResult.from_fits(res.to_fits(tmp_path / "coupled.fits"))
    np.testing.assert_array_equal(back.atmospheres, res.atmospheres)
    assert back.provenance["coupled"]["tile"] == res.provenance["coupled"]["tile"]


def test_quick_look_plot(degraded, coupled, tmp_path):
    """pyinv.plots.plot_coupled writes the truth-free comparison (maps, reduced χ², per-tile χ² history)."""
    import matplotlib

    matplotlib.use("Agg")
    from pyinv.plots import coupled_chi2_history, plot_coupled

    hist = coupled_chi2_history(coupled)
    assert len(hist) == coupled.provenance["coupled"]["ntiles"] and len(hist[0][1]) >= 2
    assert coupled_chi2_history(degraded["start"]) == []              # no coupled solve recorded
    path = tmp_path / "coupled.png"
    fig = plot_coupled(degraded["start"], coupled, path)
    assert path.stat().st_size > 10_000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(fig.axes) >= 15                                         # 5 rows x 3 panels (+ colour bars)
    titles = [ax.get_title() for ax in fig.axes]
    assert any("coupled − pixel" in t for t in titles) and any("χ² per tile" in t for t in titles)
    with pytest.raises(ValueError, match="one map"):
        plot_coupled(degraded["start"], _corner(coupled))


def _corner(res):
    """The 2x2 corner of ``res`` (a result of another map)."""
    from dataclasses import fields

    kw = {}
    for f in fields(res):
        v = getattr(res, f.name)
        if isinstance(v, np.ndarray) and v.shape[:2] == res.shape:
            v = v[:2, :2]
        kw[f.name] = v
    return type(res)(**kw)


def test_resume_gives_the_uninterrupted_result(degraded, tmp_path):
    d = degraded
    m = d["m"]
    kw = dict(lines=m.lines, grid=m.grid, config=d["cfg"], psf=m.psf, executor="serial", tile=3, border=2,
              max_iterations=2)
    whole = invert_coupled(d["obs"], d["start"], d["psf"], progress=False, checkpoint=tmp_path / "a", **kw)
    assert whole.provenance["coupled"]["ntiles"] == 4

    calls = []

    def killer(done, total):
        calls.append(done)
        if done >= 18:    # two tiles written: "kill" the run
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        invert_coupled(d["obs"], d["start"], d["psf"], progress=killer, checkpoint=tmp_path / "b", **kw)
    assert len(list((tmp_path / "b").glob("tile_*.npz"))) == 2
    seen = []
    resumed = invert_coupled(d["obs"], d["start"], d["psf"], progress=lambda a, b: seen.append(a),
                             checkpoint=tmp_path / "b", **kw)
    assert seen[0] == 18 and resumed.provenance["coupled"]["resumed_tiles"] == 2
    for name in ("atmospheres", "fits", "chi2_reduced", "macro", "status", "iterations"):
        np.testing.assert_array_equal(getattr(resumed, name), getattr(whole, name), err_msg=name)
    # a rerun of the finished store computes nothing and gives the same result again
    again = invert_coupled(d["obs"], d["start"], d["psf"], progress=False, checkpoint=tmp_path / "b", **kw)
    np.testing.assert_array_equal(again.atmospheres, whole.atmospheres)
    np.testing.assert_array_equal(resumed.fits, whole.fits)                # the earlier result is still intact
    # with a checkpoint the large arrays are memory-mapped files of the store (bounded memory) and equal the
    # in-memory result of the same run; inputs given as memory-mapped files give the same result
    assert isinstance(again.atmospheres, np.memmap) and isinstance(again.fits, np.memmap)
    assert len(list((tmp_path / "b" / "result").glob("*.npy"))) == 2      # the earlier run's files are gone
    np.save(tmp_path / "obs.npy", d["obs"])
    mapped = invert_coupled(np.load(tmp_path / "obs.npy", mmap_mode="r"), d["start"], d["psf"], progress=False,
                            **kw)
    assert not isinstance(mapped.atmospheres, np.memmap)
    for name in ("atmospheres", "fits", "errors", "chi2_reduced", "status"):
        np.testing.assert_array_equal(getattr(mapped, name), getattr(whole, name), err_msg=name)
    # another PSF is refused by the store
    with pytest.raises(ValueError, match="psf"):
        invert_coupled(d["obs"], d["start"], _kernel(3), progress=False, checkpoint=tmp_path / "b", **kw)


def test_tiled_pool_matches_serial(degraded):
    d = degraded
    m = d["m"]
    kw = dict(lines=m.lines, grid=m.grid, config=d["cfg"], psf=m.psf, tile=3, border=2, max_iterations=1,
              progress=False)
    a = invert_coupled(d["obs"], d["start"], d["psf"], executor="serial", **kw)
    b = invert_coupled(d["obs"], d["start"], d["psf"], workers=2, **kw)
    np.testing.assert_array_equal(a.atmospheres, b.atmospheres)


def test_input_errors(degraded):
    d = degraded
    m = d["m"]
    kw = dict(lines=m.lines, grid=m.grid, config=d["cfg"], psf=m.psf, executor="serial", progress=False)
    obs, start, psf = d["obs"], d["start"], d["psf"]
    with pytest.raises(ValueError, match="2-D"):
        invert_coupled(obs, start, np.ones((3, 3, 3)), **kw)
    with pytest.raises(ValueError, match="finite"):
        invert_coupled(obs, start, np.full((3, 3), np.inf), **kw)
    with pytest.raises(ValueError, match="wavelengths"):
        invert_coupled(obs[..., :-1], start, psf, **kw)
    with pytest.raises(ValueError, match=r"\(ny, nx, 4, nλ\)"):
        invert_coupled(obs[0], start, psf, **kw)
    with pytest.raises(ValueError, match="do not match"):
        invert_coupled(obs[:5], start, psf, **kw)
    with pytest.raises(ValueError, match="InversionResult"):
        invert_coupled(obs, start.atmospheres, psf, **kw)
    with pytest.raises(ValueError, match="weighting"):
        invert_coupled(obs, start, psf, weighting="chi", **kw)
    with pytest.raises(ValueError, match="cg_tol"):
        invert_coupled(obs, start, psf, cg_tol=-1.0, **kw)
    with pytest.raises(TypeError, match="unexpected"):
        invert_coupled(obs, start, psf, not_an_option=1, **kw)
    two = pyinv.InversionConfig(cycles=1, nodes={"T": 2}, nodes2={"B": 1})
    with pytest.raises(ValueError, match="second component"):
        invert_coupled(obs, start, psf, **{**kw, "config": two})
    with pytest.raises(ValueError, match="stray"):
        invert_coupled(obs, start, psf, **{**kw, "config": pyinv.InversionConfig(cycles=1, nodes={"T": 2},
                                                                                  invert_stray=1)})


def test_node_model_matches_engine_jacobian_and_secant_condition(engine):
    """The vectorised parametrisation (trial models, hydrostatics) is the one the engine's node Jacobian
    differentiates, and a Broyden update satisfies the secant condition in the new step variables."""
    from pyinv import synthetic
    from pyinv.coupled.pixels import NodeModel
    from pyinv.physics.inversion import prepare_synthesis
    from pyinv.physics.thermo import abundances_to_eps

    m = synthetic.generate_map(4, seed=1, noise=0.0)
    lt = m.truth[0, 0, :, 0]
    setup = prepare_synthesis(m.lines, m.grid, psf=m.psf, log_tau=lt)
    nm = NodeModel(setup, lt, (3, 0, 1, 2, 2, 1, 1, 1), 0, 0, 0.0, 1.0, abundances_to_eps(None))
    x = m.truth.reshape(-1, lt.size, 11)[:2, :, 1:8].copy()
    vm = m.macro.ravel()[:2].copy()
    jac = np.zeros((2, 4 * nm.nw, nm.m))
    assert nm.jacobian(x, vm, jac).all()
    h = 1e-4
    for j in (0, 2, 4, 6, 8, 9, 10):      # T, vmic, B, vlos, γ, φ, vmac
        d = np.zeros((2, nm.m))
        d[:, j] = h
        xp, vp, _ = nm.trial(x, vm, d, clip=False)
        d[:, j] = -h
        xm, vmm, _ = nm.trial(x, vm, d, clip=False)
        fd = (nm.synthesize(xp, vp)[0] - nm.synthesize(xm, vmm)[0]).reshape(2, -1) / (2 * h)
        np.testing.assert_allclose(fd, jac[:, :, j], atol=2e-5 * np.abs(jac[:, :, j]).max())
    step = np.random.default_rng(0).normal(0, 0.05, (2, nm.m))
    xn, vn, ok = nm.trial(x, vm, step)
    assert ok.all()
    ds = (nm.synthesize(xn, vn)[0] - nm.synthesize(x, vm)[0]).reshape(2, -1)
    upd = jac.copy()
    nm.secant_update(upd, x, vm, xn, vn, ds, np.arange(2))
    # in the new variables the step taken back to the old model is -δ' with a_old = a_new (1 - δ') (relative)
    a_old, a_new = nm.node_vector(x, vm), nm.node_vector(xn, vn)
    kinds = np.array([("rel", "log", "rel", "rel", "off", "angle", "angle", "rel")[v] for v in nm.slot_of_parameter()])
    dv = nm.voff(x) - nm.voff(xn)
    a_old_new = a_old + np.where(kinds == "off", dv[:, None], 0.0)
    delta = np.where(np.isin(kinds, ("rel", "off")), (a_new - a_old_new) / a_new, a_new - a_old)
    np.testing.assert_allclose(np.einsum("pcm,pm->pc", upd, delta), ds, atol=1e-10)


def test_masked_and_bad_pixels(degraded):
    """A pixel masked in the start keeps its status and gets NaN outputs (its model, filled from a neighbour,
    is still solved); a pixel with non-finite data is reported as bad input."""
    import dataclasses

    d = degraded
    m = d["m"]
    start = d["start"]
    atm = start.atmospheres.copy()
    status = start.status.copy()
    atm[1, 1] = np.nan
    status[1, 1] = 101
    masked = dataclasses.replace(start, atmospheres=atm, status=status)
    obs = d["obs"].copy()
    obs[4, 2, 0, 5] = np.nan
    res = invert_coupled(obs, masked, d["psf"], lines=m.lines, grid=m.grid, config=d["cfg"], psf=m.psf,
                         executor="serial", progress=False, max_iterations=1)
    assert res.status[1, 1] == 101 and res.status[4, 2] == 102
    assert np.isnan(res.atmospheres[1, 1]).all() and np.isnan(res.fits[4, 2]).all()
    good = np.ones((6, 6), dtype=bool)
    good[1, 1] = good[4, 2] = False
    assert np.all(res.status[good] == 0) and np.isfinite(res.atmospheres[good]).all()


def test_spatial_psf_through_pyinv_invert(tmp_path):
    """pyinv.invert(..., spatial_psf=K) = invert_coupled on the pixel-by-pixel result (same fit), resumable."""
    import pyinv
    from pyinv.coupled import invert_coupled
    from pyinv.testing.data import graded_map

    lines, grid, clean = graded_map(3, 3)
    k = np.array([[0.05, 0.1, 0.05], [0.1, 0.4, 0.1], [0.05, 0.1, 0.05]])
    from pyinv.coupled import SpatialPSF

    cube = np.moveaxis(SpatialPSF(k).apply(np.moveaxis(clean, (0, 1), (2, 3))), (2, 3), (0, 1))   # P per image
    cfg = pyinv.InversionConfig(cycles=1, nodes={"T": 2, "vlos": 1, "B": 1, "gamma": 1, "phi": 1})
    opts = {"max_iterations": 2}
    r = pyinv.invert(cube, lines, grid, cfg, executor="serial", progress=False, spatial_psf=k, coupled=opts,
                     checkpoint=tmp_path / "ck")
    start = pyinv.invert(cube, lines, grid, cfg, executor="serial", progress=False)
    ref = invert_coupled(cube, start, k, lines=lines, grid=grid, config=cfg, executor="serial", progress=False,
                         **opts)
    np.testing.assert_allclose(r.fits, ref.fits, rtol=1e-10, atol=1e-12)
    assert "coupled" in r.provenance
    with pytest.raises(ValueError, match="one LTE component"):
        pyinv.invert(cube, lines, grid, cfg, executor="serial", progress=False, spatial_psf=k,
                     stray_profile="local")
