"""Issue 12: torch-free prediction (numpy forward pass == torch), the packaged model against a generated
map's truth, init="cnn" with a multi-cycle configuration, the fallback, resampling, the catalogue and its
recipes (resumable training-set shards), the emerging-region generator."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

import pyinv
from pyinv.testing.solvers import AlteredStarts


@pytest.fixture(scope="module")
def fixed_map(engine):
    """The fixed generated map of the correlation-floor test (never in a training recipe: seed 2024)."""
    from pyinv.synthetic import generate_map
    return generate_map(12, seed=2024, mu=1.0)


def _corr(a, b):
    a, b = np.ravel(a), np.ravel(b)
    return float(np.corrcoef(a, b)[0, 1])


def _random_weights(model, seed=0):
    """The packaged model's architecture and output scaling with random weights of the same spread."""
    import pyinv.cnn as cnn
    rng = np.random.default_rng(seed)
    w = {k: (v if k in ("out_mean", "out_std", "stokes_weights") else
             rng.normal(0, float(np.std(v)) or 0.01, v.shape).astype(np.float32)) for k, v in model.weights.items()}
    return cnn.CNNModel(w, json.loads(json.dumps(model.meta)))


# --------------------------------------------------------------------------------------- numpy vs torch
def test_numpy_forward_equals_torch(fixed_map):
    torch = pytest.importorskip("torch")  # noqa: F841
    import pyinv.cnn as cnn
    from pyinv.cnn.torch_net import StokesCNN  # noqa: F401
    x, _ = cnn.normalise_stokes(fixed_map.cube)
    rng = np.random.default_rng(1)
    xr = (x[:50] + rng.normal(0, 0.05, x[:50].shape)).astype(np.float32)  # off-manifold inputs too
    model = cnn.pretrained()
    for inp in (x, xr):
        a = model.predict_standardised(inp)
        b = model.predict_torch(inp)
        assert np.abs(a - b).max() < 1e-5, np.abs(a - b).max()
        assert np.abs(a).max() > 0.5  # not a trivial network
    # a network with the mu input, freshly initialised by torch
    grid, lines = pyinv.models.hinode_grid(), pyinv.default_lines()
    m2 = cnn.CNNModel.new(grid, lines, mu_input=True, mu_range=(0.3, 1.0), seed=3)
    mus = rng.uniform(0.3, 1.0, x.shape[0])
    a = m2.predict_standardised(x, mu=mus)
    b = m2.predict_torch(x, mu=mus)
    assert np.abs(a - b).max() < 1e-5
    assert np.abs(m2.predict_standardised(x, mu=0.3) - m2.predict_standardised(x, mu=1.0)).max() > 1e-4


def test_prediction_with_torch_blocked(fixed_map, tmp_path):
    """pyinv.cnn.predict and init="cnn" with `import torch` failing (as after `pip install .`)."""
    import pyinv.cnn as cnn
    cube = fixed_map.cube[:3, :4]
    np.save(tmp_path / "cube.npy", cube)
    ref = cnn.predict(cube, mu=1.0).outputs
    code = f"""
import sys
sys.modules['torch'] = None          # any `import torch` raises ImportError
import numpy as np, pyinv, pyinv.cnn as cnn
cube = np.load({str(tmp_path / 'cube.npy')!r})
p = cnn.predict(cube, mu=1.0)
np.save({str(tmp_path / 'out.npy')!r}, p.outputs)
res = pyinv.invert(cube[:1, :2], pyinv.default_lines(), pyinv.models.hinode_grid(), None, init="cnn",
                   psf=pyinv.synthetic.hinode_psf(), progress=False, executor="serial")
assert (res.status == 0).all(), res.status
try:
    cnn.CNNModel.new(pyinv.models.hinode_grid(), pyinv.default_lines())
except ImportError:
    print("TRAINING-NEEDS-TORCH")
print("OK", res.chi2.ravel().tolist())
"""
    env = dict(os.environ)
    r = subprocess.run([sys.executable, "-c", "import pyinv.synthetic\n" + code], capture_output=True, text=True,
                       env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "OK" in r.stdout and "TRAINING-NEEDS-TORCH" in r.stdout
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), ref)


# --------------------------------------------------------------------------------------- packaged model
def test_packaged_model_correlation_floor(fixed_map):
    """The packaged model alone (no inversion) against the truth of a fixed generated map at log τ = 0;
    the same architecture with random weights must fail the same floors."""
    import pyinv.cnn as cnn
    from pyinv.cnn.commands import quantities
    m = fixed_map
    model = cnn.pretrained()
    assert model.provenance["training_pixels"] >= 100_000 and model.mu_input
    truth = quantities(m)
    floors = {"T": 0.98, "v": 0.9, "B": 0.97, "inc": 0.97}   # measured: 0.999, 0.983, 0.995, 0.995
    got = quantities(cnn.predict(m.cube, model, grid=m.grid, lines=m.lines, mu=m.mu))
    rnd = quantities(cnn.predict(m.cube, _random_weights(model), mu=m.mu, hydrostatic=False))
    for q, f in floors.items():
        assert _corr(got[q], truth[q]) >= f, (q, _corr(got[q], truth[q]))
    assert sum(not (_corr(rnd[q], truth[q]) >= f) for q, f in floors.items()) >= 3


# --------------------------------------------------------------------------------------- init="cnn"
def test_init_cnn_reduces_a_three_cycle_config(fixed_map):
    import pyinv.cnn as cnn
    m = fixed_map
    cube = m.cube[5:6, 5:7]
    cfg = pyinv.InversionConfig(cycles=3, nodes={"T": (1, 3, 5), "vlos": (1, 2, 2), "B": (1, 2, 3), "gamma": 1,
                                                 "phi": 1, "vmic": 1, "macro": 1}, weights=(1, 4, 4, 2))
    with pytest.warns(UserWarning, match="ONE cycle with the last-cycle nodes of your 3-cycle"):
        res = pyinv.invert(cube, m.lines, m.grid, cfg, init="cnn", psf=m.psf, progress=False, executor="serial")
    assert res.chi2_cycles.shape == (1, 2, 1)
    used = pyinv.InversionConfig.from_sir_text(res.provenance["config_text"])
    assert used.cycles == 1
    assert used.nodes_for(1) == {**cfg.nodes_for(3)}
    assert "one cycle with the last-cycle nodes of the given 3-cycle" in res.provenance["init_info"]["config"]
    assert (res.status == 0).all()
    # config=None: the paper's assisted set-up
    res0 = pyinv.invert(cube, m.lines, m.grid, None, init="cnn", psf=m.psf, progress=False, executor="serial")
    u0 = pyinv.InversionConfig.from_sir_text(res0.provenance["config_text"])
    assert u0.cycles == 1 and u0.nodes_for(1) == cnn.assisted_config().nodes_for(1)
    # every cycle, on request, announced
    with pytest.warns(UserWarning, match="all 3 cycles"):
        r3 = pyinv.invert(cube[:, :1], m.lines, m.grid, cfg, init=cnn.CNNInit(cycles="all", fallback=False),
                          psf=m.psf, progress=False, executor="serial")
    assert r3.chi2_cycles.shape == (1, 1, 3)
    assert r3.provenance["solver"] == "pyinv:invert_pixel"  # as given: no assisted-cycle LM settings
    assert r3.provenance["init_info"]["assisted_lm"] is None
    with pytest.raises(ValueError, match="needs an InversionConfig"):
        pyinv.invert(cube, m.lines, m.grid, None, init="single", progress=False, executor="serial")


def test_fallback_reinverts_a_wrong_start(fixed_map):
    import pyinv.cnn as cnn
    m = fixed_map
    cube = m.cube[2:4, 2:5]
    bad_pixel = 4

    class WrongStart(cnn.CNNInit):
        """The packaged CNN, except one pixel that starts hot, with flipped polarity and a 5 km/s shift (the
        starts are streamed to the workers: the stream is wrapped, by a picklable class)."""

        def initial_guesses(self, ctx):
            gs = super().initial_guesses(ctx)
            gs.stream = AlteredStarts(gs.stream, bad_pixel, dT=2000.0, B=4000.0, dv=5.0e5, flip=True)
            return gs

    kw = dict(psf=m.psf, progress=False, executor="serial")
    off = pyinv.invert(cube, m.lines, m.grid, cnn.assisted_config(), init=WrongStart(fallback=False), **kw)
    on = pyinv.invert(cube, m.lines, m.grid, cnn.assisted_config(), init=WrongStart(), **kw)
    fb = on.provenance["fallback"]
    assert off.provenance["fallback"]["enabled"] is False
    assert bad_pixel in fb["flagged_pixels"] and bad_pixel in fb["replaced_pixels"]
    assert fb["replaced"] >= 1 and fb["seconds"] > 0
    c_off, c_on = off.chi2.ravel()[bad_pixel], on.chi2.ravel()[bad_pixel]
    others = np.delete(off.chi2.ravel(), bad_pixel)
    assert c_off > 10 * np.median(others)          # the wrong start really ends badly in one cycle
    assert c_on < c_off / 3                          # ... and the fallback repairs it
    assert on.chi2.ravel()[bad_pixel] <= 3 * np.median(others)
    assert on.seconds.ravel()[bad_pixel] > off.seconds.ravel()[bad_pixel] * 0.5
    # on a local pool, a fallback of a handful of pixels runs in the calling process (no second pool)
    pool = pyinv.invert(cube, m.lines, m.grid, cnn.assisted_config(), init=WrongStart(), psf=m.psf, progress=False,
                        workers=2)
    assert pool.provenance["executor"] != "serial"
    assert pool.provenance["fallback"]["executor"] == "serial" and bad_pixel in pool.provenance["fallback"][
        "replaced_pixels"]
    np.testing.assert_allclose(pool.chi2, on.chi2, rtol=1e-9)


def test_assisted_lm_options_reach_invert_pixel(fixed_map):
    """CNNInit's max_iterations / initial_diagonal reach invert_pixel in the assisted run, not in the fallback."""
    import pyinv.cnn as cnn
    m = fixed_map
    cube = m.cube[2:4, 2:5]
    bad_pixel = 1

    class HotStart(cnn.CNNInit):
        def initial_guesses(self, ctx):
            gs = super().initial_guesses(ctx)
            gs.stream = AlteredStarts(gs.stream, bad_pixel, dT=2500.0, B=4000.0)
            return gs

    kw = dict(psf=m.psf, progress=False, executor="serial")
    one = pyinv.invert(cube, m.lines, m.grid, cnn.assisted_config(), init=HotStart(max_iterations=1), **kw)
    assert "max_iterations=1" in one.provenance["solver"] and "jacobian_reuse=3" in one.provenance["solver"]
    assert one.provenance["init_info"]["assisted_lm"]["max_iterations"] == 1
    assert pyinv.InversionConfig.from_sir_text(one.provenance["config_text"]).value("initial_diagonal", 1) == 1.0
    fb = one.provenance["fallback"]
    assert bad_pixel in fb["replaced_pixels"]
    it = one.iterations.ravel()
    assert (np.delete(it, bad_pixel) <= 1).all()
    assert it[bad_pixel] > 1  # the fallback ran with invert_pixel's own limits (3 cycles)
    more = pyinv.invert(cube, m.lines, m.grid, cnn.assisted_config(),
                        init=cnn.CNNInit(max_iterations=6, initial_diagonal=None, fallback=False), **kw)
    assert more.iterations.max() > 1
    assert pyinv.InversionConfig.from_sir_text(more.provenance["config_text"]).value("initial_diagonal", 1) == 1e-3
    # defaults: pyinv's rules without a cap (issue 17); with SIR's rules per catalogue model; bad values refused
    assert (cnn.CNNInit().max_iterations, cnn.CNNInit().rtol, cnn.CNNInit().rules) == (100, 1e-2, "pyinv")
    assert (cnn.CNNInit("gris-fe15648").max_iterations, cnn.CNNInit("gris-fe15648").rtol) == (100, 1e-2)
    assert (cnn.CNNInit(rules="sir").max_iterations, cnn.CNNInit(rules="sir").rtol) == (3, 1e-3)
    g = cnn.CNNInit("gris-fe15648", rules="sir")
    assert (g.max_iterations, g.rtol) == (4, 0.1)
    assert "rules='pyinv'" in one.provenance["solver"] or "rules=pyinv" in one.provenance["solver"]
    for bad in (dict(max_iterations=0), dict(rtol=-1.0), dict(jacobian_reuse=-1), dict(initial_diagonal=0.0),
                dict(rules="fast")):
        with pytest.raises(ValueError):
            cnn.CNNInit(**bad)


def test_fallback_rule():
    from pyinv.cnn.init import flag_clearly_worse
    chi2 = np.array([[1.0, 1.1, 0.9, 10.0], [5.0, 5.5, 4.5, 16.0]])
    status = np.array([[0, 0, 0, 0], [0, 0, 0, 101]])
    labels = np.array([[0, 0, 0, 0], [1, 1, 1, 1]])
    flag, thr = flag_clearly_worse(chi2, status, labels, 3.0, min_cluster=3)
    assert flag.tolist() == [[False, False, False, True], [False, False, False, False]]
    assert thr[1, 0] == pytest.approx(15.0)
    flag2, _ = flag_clearly_worse(np.array([[1.0, np.nan]]), np.array([[0, 103]]), None, 3.0)
    assert flag2.tolist() == [[False, True]]


# --------------------------------------------------------------------------------------- resampling
def test_resample_onto_the_model_grid(fixed_map):
    import pyinv.cnn as cnn
    from pyinv.lines import WavelengthGrid
    m = fixed_map
    cube = m.cube[:3, :3]
    model = cnn.pretrained()
    ref = cnn.predict(cube, model, grid=m.grid, mu=1.0, hydrostatic=False).nodes
    # the same profiles on a grid shifted by a third of a step, one point shorter: interpolate them there
    step = 21.549
    g2 = WavelengthGrid.from_regions([("1,2", -615.9 + 7.0, step, -615.9 + 7.0 + 110 * step)], m.lines)
    from pyinv.cnn.resample import resample_to_model
    src = np.empty(cube.shape[:3] + (g2.nwav,))
    for i in range(4):
        src[:, :, i] = np.stack([[np.interp(g2.offset_mA, m.grid.offset_mA, cube[y, x, i]) for x in range(3)]
                                 for y in range(3)])
    with pytest.raises(ValueError, match="resample=True"):
        cnn.predict(src, model, grid=g2, mu=1.0)
    with pytest.warns(UserWarning, match=r"111 points of 21.549 mA -> 112 points.*2 model point\(s\) outside"):
        got = cnn.predict(src, model, grid=g2, mu=1.0, resample=True, hydrostatic=False).nodes
    # twice-interpolated noisy profiles: close to the original prediction, not equal; the 7 mA shift (1/3 of a
    # step, 0.33 km/s) matters for the velocity: treating the shifted cube as if on the model's grid is worse
    naive = cnn.predict(np.concatenate([src, src[..., -1:]], axis=-1), model, mu=1.0, hydrostatic=False).nodes
    err = {k: np.abs(got[k] - ref[k]).max() for k in ("T", "B", "vlos")}
    assert err["T"] < 60.0 and err["B"] < 80.0   # G; 2 of 112 points extrapolated, noise interpolated twice
    assert err["vlos"] < 0.5 * np.abs(naive["vlos"] - ref["vlos"]).max()
    with pytest.warns(UserWarning, match="largest distance"):
        back, info = resample_to_model(cube, m.grid, model)
    np.testing.assert_allclose(back, cube, atol=1e-12)
    assert info["max_shift_mA"] < 1e-6 and info["outside"] == 0


# --------------------------------------------------------------------------------------- catalogue, recipes
def test_catalogue_and_cli_list(monkeypatch, tmp_path, capsys):
    import pyinv.cnn as cnn
    from pyinv.cli import main
    from pyinv.cnn.catalogue import CATALOGUE, CatalogueEntry
    monkeypatch.setenv("HOME", str(tmp_path))          # no user-trained models
    monkeypatch.delenv("PYINV_CNN_DIR", raising=False)
    assert set(cnn.catalogue_names()) >= {"hinode-sp-fe6301", "gris-fe15648"}
    hin = cnn.pretrained("hinode-sp-fe6301")
    assert hin.nwav == 112 and hin.meta["name"] == "hinode-sp-fe6301" and hin.mu_input
    gris = cnn.pretrained("gris-fe15648", grid=cnn.get_recipe("gris-fe15648").grid())
    assert gris.nwav == 102 and gris.mu_input and gris.provenance["recipe"]["name"] == "gris-fe15648"
    for m in (hin, gris):                              # made by the committed recipe command
        assert m.provenance["command"].startswith(f"pyinv cnn train --recipe {m.meta['name']}")
    with pytest.raises(ValueError, match="incompatible"):
        cnn.predict(np.ones((1, 1, 4, 112)), gris)
    # an entry that is neither packaged nor trained names the command that makes it
    monkeypatch.setitem(CATALOGUE, "test-unmade", CatalogueEntry("test-unmade", "X", "Fe I", None, "gris-fe15648", ""))
    with pytest.raises(FileNotFoundError, match="pyinv cnn train --recipe gris-fe15648"):
        cnn.pretrained("test-unmade")
    with pytest.raises(ValueError, match="unknown CNN model"):
        cnn.pretrained("nope")
    assert main(["cnn", "list"]) == 0
    out = capsys.readouterr().out
    assert "hinode-sp-fe6301" in out and "installed (packaged)" in out and "gris-fe15648" in out
    assert "test-unmade" in out and "not installed: pyinv cnn train --recipe gris-fe15648" in out
    # a model put where PYINV_CNN_DIR points is found first
    d = tmp_path / "models"
    cnn.save_model(hin, d / "test-unmade.npz")
    monkeypatch.setenv("PYINV_CNN_DIR", str(d))
    assert cnn.pretrained("test-unmade").provenance["loaded_from"].startswith(str(d))


def test_recipes_grids():
    import pyinv.cnn as cnn
    h, g = cnn.get_recipe("hinode-sp-fe6301"), cnn.get_recipe("gris-fe15648")
    gh, gg = h.grid(), g.grid()
    assert gh.nwav == 112 and np.allclose(np.diff(gh.offset_mA), 21.549, atol=1e-3)
    np.testing.assert_allclose(gh.offset_mA, pyinv.models.hinode_grid().offset_mA)
    assert gg.nwav == 102 and sorted(set(np.asarray(gg.line_index).tolist())) == [3, 4]
    assert np.allclose(np.diff(gg.offset_mA[:51]), 40.0) and gg.offset_mA[0] == -1000 and gg.offset_mA[50] == 1000
    assert g.psf() is None and h.psf() is not None
    assert h.mu_range == (0.3, 1.0) and h.noise_range == (3e-4, 3e-3) and h.pixels >= 100_000


def test_training_set_shards_resume(engine, tmp_path):
    import pyinv.cnn as cnn
    from pyinv.cnn.trainingdata import make_shard
    rec = cnn.get_recipe("hinode-sp-fe6301").with_(shard_pixels=24, sunspot_fraction=0.4, map_size=4)
    d = tmp_path / "ts"
    ts1 = cnn.generate_training_set(rec, d, pixels=50, progress=False)
    made = ts1.provenance["shards_made_this_call"]
    assert len(ts1) >= 50 and made >= 2
    ts2 = cnn.generate_training_set(rec, d, pixels=50, progress=False)     # resumed: nothing to make
    assert ts2.provenance["shards_made_this_call"] == 0
    np.testing.assert_array_equal(ts1.x, ts2.x)
    np.testing.assert_array_equal(ts1.y, ts2.y)
    # shard k is the same whether made now or in another session
    sh = make_shard(rec, 1)
    with np.load(d / "shard_00001.npz") as z:
        np.testing.assert_array_equal(z["x"], sh["x"])
    # growing the set keeps the old shards
    ts3 = cnn.generate_training_set(rec, d, pixels=80, progress=False)
    assert len(ts3) >= 80 and np.array_equal(ts3.x[:len(ts1)], ts1.x)
    mus = ts3.mu_array()
    assert (mus >= 0.3).all() and (mus <= 1.0).all() and np.ptp(mus) > 0
    with pytest.raises(ValueError, match="another recipe"):
        cnn.generate_training_set(rec.with_(seed=1), d, pixels=10, progress=False)


def test_random_atmospheres_span(engine):
    import pyinv.cnn as cnn
    st, fam = cnn.random_atmospheres(400, np.random.default_rng(0), mu=0.5)
    a = st.to_array()
    B, g = a[:, 37, 4], a[:, 37, 6]                  # log τ = 0 is index 12 of 1.2 … −4.0; any depth here
    assert set(fam) == {"quiet", "plage", "penumbra", "umbra"}
    assert B.max() > 3000 and B.min() < 100 and (a[:, :, 4] <= 4500).all()
    assert g.min() < 20 and g.max() > 160 and np.isfinite(a).all()


def test_emerging_region_generator(engine):
    from pyinv.synthetic import EMERGING_REGIONS, generate_emerging_region
    m = generate_emerging_region(10, seed=3, mu=0.8)
    assert m.cube.shape == (10, 10, 4, 112) and np.isfinite(m.cube).all()
    np.testing.assert_array_equal(generate_emerging_region(10, seed=3, mu=0.8).cube, m.cube)
    assert m.info["generator"] == "emerging_region"
    assert set(np.unique(m.labels)) == set(range(len(EMERGING_REGIONS)))
    g = m.truth[..., 12, 6]
    assert g.min() < 40 and g.max() > 140                   # both polarities
    em = m.labels == 3
    B = m.truth[..., 4]
    assert (B[em][:, -1] > B[em][:, 0]).mean() > 0.8         # emerging field strengthens upwards


def test_cli_cnn_train_recipe(engine, tmp_path, capsys):
    pytest.importorskip("torch")
    import pyinv.cnn as cnn
    from pyinv.cli import main
    out = tmp_path / "h.npz"
    rc = main(["cnn", "train", "--recipe", "hinode-sp-fe6301", "--pixels", "40", "--epochs", "2",
               "--lr-decay", "cosine", "--workdir", str(tmp_path / "set"), "-o", str(out)])
    assert rc == 0, capsys.readouterr()
    model = cnn.load_model(out)
    assert model.mu_input and model.meta["name"] == "hinode-sp-fe6301"
    assert model.provenance["recipe"]["seed"] == 6301 and model.provenance["epochs_run"] == 2
    assert model.provenance["lr_decay"] == "cosine" and model.provenance["recipe"]["lr_decay"] == "cosine"
    assert model.provenance["command"].endswith("--epochs 2 --lr-decay cosine")
    assert (tmp_path / "set" / "manifest.json").is_file()


def test_quiet_sun_continuum_on_real_hinode_sample():
    """The continuum estimate on real Level-1 counts (../shared/data): within 1 % of the file's IC_HSRA."""
    from pathlib import Path
    f = Path(__file__).resolve().parents[2] / "shared" / "data" / "hinode_sp_5x5_globin" / "hinode4d.20130912.sample.fits"
    if not f.is_file():
        pytest.skip("../shared/data/hinode_sp_5x5_globin not present")
    from astropy.io import fits
    import pyinv.cnn as cnn
    with fits.open(f) as h:
        raw = np.asarray(h[0].data, dtype=np.float64)
        ic = float(h[2].header["IC_HSRA"])
    assert abs(cnn.quiet_sun_continuum(raw) / ic - 1) < 0.01
