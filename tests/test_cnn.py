"""pyinv.cnn (issue 6) on tiny maps: training runs, save/load round trip, node interpolator, assisted
inversion through pyinv.invert, refusal of incompatible data, synthetic map generator. Tests that train
need torch (the [train] extra) and skip without it."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import pyinv


def _torch():
    return pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny_map(engine):
    from pyinv.synthetic import generate_map
    return generate_map(6, seed=5)


@pytest.fixture(scope="module")
def tiny_model(tiny_map):
    _torch()
    import pyinv.cnn as cnn
    m = tiny_map
    # targets from the truth (no inversion needed to exercise the training machinery)
    ts = cnn.build_training_set(m.cube, m.truth, m.grid, m.lines, macro=m.macro)
    return cnn.train(ts, epochs=3, batch_size=16, validation=0.2, progress=False, seed=1), ts


def test_import_pyinv_does_not_import_torch():
    code = ("import sys, pyinv; import pyinv.synthetic, pyinv.cnn; pyinv.cnn.pretrained(); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, env=_env())


def _env():
    import os
    return dict(os.environ)


def test_interpolator_matches_numpy_interp():
    from pyinv.cnn import NODES, interpolate_nodes
    rng = np.random.default_rng(0)
    vals = rng.normal(size=(50, NODES.size))
    lt = np.linspace(1.0, -3.5, 46)  # inside the nodes
    out = interpolate_nodes(NODES, vals, lt)
    ref = np.array([np.interp(lt, NODES[::-1], v[::-1]) for v in vals])
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-12)
    # outside the node range: numpy.interp's constant ends; linear mode prolongs the end segments
    lt2 = pyinv.models.LOG_TAU_53
    out2 = interpolate_nodes(NODES, vals, lt2)
    ref2 = np.array([np.interp(lt2, NODES[::-1], v[::-1]) for v in vals])
    np.testing.assert_allclose(out2, ref2, rtol=0, atol=1e-12)
    lin = interpolate_nodes(NODES, vals, [1.2, -4.0], extrapolate="linear")
    np.testing.assert_allclose(lin[:, 0], vals[:, 0] + 0.2 * (vals[:, 0] - vals[:, 1]) / 0.5, atol=1e-12)
    np.testing.assert_allclose(lin[:, 1], vals[:, -1] + 0.5 * (vals[:, -1] - vals[:, -2]) / 0.5, atol=1e-12)
    # node values come back exactly, any leading shape
    np.testing.assert_allclose(interpolate_nodes(NODES, vals.reshape(5, 10, -1), NODES).reshape(50, -1), vals)


def test_interpolator_edges():
    """Nodes in any order, two nodes, a NaN depth: the end rules and the segments hold exactly."""
    from pyinv.cnn import interpolate_nodes
    xn = np.array([-1.0, 1.0, 0.0])                  # unsorted
    vals = np.array([[3.0, 1.0, 2.0], [0.0, 4.0, 2.0]])
    out = interpolate_nodes(xn, vals, [2.0, 1.0, 0.5, 0.0, -0.25, -1.0, -3.0])
    np.testing.assert_array_equal(out, [[1.0, 1.0, 1.5, 2.0, 2.25, 3.0, 3.0], [4.0, 4.0, 3.0, 2.0, 1.5, 0.0, 0.0]])
    lin = interpolate_nodes([0.0, 1.0], [[1.0, 3.0]], [-1.0, 0.5, 2.0], extrapolate="linear")
    np.testing.assert_array_equal(lin, [[-1.0, 2.0, 5.0]])
    assert np.isnan(interpolate_nodes([0.0, 1.0], [[1.0, 3.0]], [np.nan])).all()
    with pytest.raises(ValueError, match="distinct"):
        interpolate_nodes([0.0, 0.0], [[1.0, 3.0]], [0.5])


def test_cnn_starts_load_no_jit():
    """Making CNN starts (what every pool worker of an init="cnn" map does first) imports neither numba nor
    scipy: loading them cost each worker 0.5-0.9 s (issue 17)."""
    code = ("import sys, numpy as np, pyinv, pyinv.cnn as cnn\n"
            "from pyinv.cnn.starts import CNNStarts\n"
            "g = pyinv.models.default_guess(); lines = pyinv.default_lines()\n"
            "s = CNNStarts(cnn.pretrained(), ic_quiet=1.0, mu=1.0, log_tau=g.log_tau, fallback=g)\n"
            "t, h, a = s.starts(pyinv.synthesize(g, lines, pyinv.models.hinode_grid(lines))[None])\n"
            "assert np.isfinite(t).all() and t.shape == (1, g.log_tau.size, 11)\n"
            "assert 'numba' not in sys.modules and 'scipy' not in sys.modules, 'numba/scipy imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True, env=_env())


def test_nodes_to_atmospheres_hydrostatic(engine):
    from pyinv.cnn import NODES, nodes_to_atmospheres
    g = pyinv.models.default_guess()
    Tn = np.interp(NODES, g.log_tau[::-1], g.T[::-1])[None, :].repeat(2, 0)
    st = nodes_to_atmospheres({"T": Tn, "B": np.full((2, 10), 800.0)}, mu=0.8, macro=[0.5, 1.0])
    assert st.stacked and st.nmodels == 2 and st.ndep == 53
    he = pyinv.hydrostatic(st, mu=0.8)
    np.testing.assert_allclose(st.Pe, he.Pe, rtol=1e-10)
    np.testing.assert_allclose(st.B, 800.0)


def test_synthetic_map(tiny_map):
    from pyinv.synthetic import generate_map
    m = tiny_map
    assert m.cube.shape == (6, 6, 4, 112) and m.truth.shape == (6, 6, 53, 11)
    again = generate_map(6, seed=5)
    np.testing.assert_array_equal(again.cube, m.cube)  # seedable
    assert set(np.unique(m.labels)) >= {0, 3}  # quiet Sun and umbra even on a tiny map
    assert 0.8 < m.ic_quiet < 1.1
    m2 = generate_map(6, seed=5, mu=0.77)  # same physics seen at mu = 0.77: other vlos / gamma / Pe
    assert not np.allclose(m2.truth[..., 6], m.truth[..., 6])
    assert not np.allclose(m2.truth[..., 2], m.truth[..., 2])


def test_cosine_learning_rate_decay(tiny_map, tiny_model):
    """lr_decay="cosine": the rate falls from learning_rate to 1 % of it over the epochs; the run differs from
    the constant-rate one only by the rates (same seed, same split), and a wrong name is refused."""
    _torch()
    import unittest.mock as um

    import torch

    import pyinv.cnn as cnn
    _, ts = tiny_model
    rates = []
    orig = torch.optim.Adamax.step

    def spy(self, *a, **k):        # the rate of every optimiser step (one batch per epoch here)
        rates.append(self.param_groups[0]["lr"])
        return orig(self, *a, **k)

    with um.patch("torch.optim.Adamax.step", spy):
        m = cnn.train(ts, epochs=4, batch_size=64, validation=0.2, progress=False, seed=1, learning_rate=1e-3,
                      lr_decay="cosine")
    per_epoch = sorted(set(rates), reverse=True)
    assert len(rates) == 4 and per_epoch[0] == pytest.approx(1e-3) and per_epoch[-1] == pytest.approx(1e-5)
    assert per_epoch[1] == pytest.approx(1e-3 * (0.01 + 0.99 * 0.75))     # cos(pi/3) = 0.5
    assert m.provenance["lr_decay"] == "cosine"
    const = cnn.train(ts, epochs=4, batch_size=64, validation=0.2, progress=False, seed=1, learning_rate=1e-3)
    assert const.provenance["lr_decay"] is None
    assert m.history["train"][0] == const.history["train"][0]          # epoch 1 at the full rate: identical
    assert m.history["train"][-1] != const.history["train"][-1]
    with pytest.raises(ValueError, match="lr_decay"):
        cnn.train(ts, epochs=1, progress=False, lr_decay="step")


def test_training_and_save_load_roundtrip(tiny_map, tiny_model, tmp_path):
    import pyinv.cnn as cnn
    model, ts = tiny_model
    m = tiny_map
    p = model.provenance
    assert p["epochs_run"] == 3 and p["training_pixels"] + p["validation_pixels"] == len(ts) == 36
    assert np.isfinite(model.history["train"]).all()
    f = tmp_path / "m.npz"
    model.save(f)
    loaded = cnn.load_model(f, grid=m.grid, lines=m.lines)
    a = cnn.predict(m.cube, model)
    b = cnn.predict(m.cube, loaded)
    np.testing.assert_array_equal(a.outputs, b.outputs)
    np.testing.assert_array_equal(a.atmospheres, b.atmospheres)
    for k in ("offset_mA", "lines", "normalisation", "node_log_tau", "outputs"):
        assert loaded.meta[k] == model.meta[k] or k == "normalisation"
    assert loaded.meta["node_log_tau"] == [1.0, 0.5, 0.0, -0.5, -1.0, -1.5, -2.0, -2.5, -3.0, -3.5]
    assert loaded.provenance["training_set"]["pixels"] == 36
    # CNN-only mode: full atmospheres, azimuth in [0, 180)
    assert a.atmospheres.shape == (6, 6, 53, 11) and np.isfinite(a.atmospheres).all()
    assert (a.nodes["phi"] >= 0).all() and (a.nodes["phi"] < 180).all()
    labels = cnn.cluster(a, 3, model=model)
    assert labels.shape == (6, 6) and set(np.unique(labels)) <= {0, 1, 2}


def test_incompatible_models_refused(tiny_map, tiny_model, tmp_path):
    import pyinv.cnn as cnn
    from pyinv.lines import WavelengthGrid
    model, _ = tiny_model
    m = tiny_map
    other = WavelengthGrid.from_regions([("1,2", -600.0, 20.0, -600.0 + 111 * 20.0)], m.lines)
    with pytest.raises(ValueError, match="incompatible"):
        model.check_compatible(other, m.lines)
    short = WavelengthGrid.from_regions([("1,2", -615.9, 21.549, -615.9 + 99 * 21.549)], m.lines)
    f = tmp_path / "m.pt"
    model.save(f)
    with pytest.raises(ValueError, match="trained on 112 wavelengths"):
        cnn.load_model(f, grid=short)
    with pytest.raises(ValueError, match="112 wavelengths"):
        cnn.predict(m.cube[..., :100], model)
    with pytest.raises(ValueError, match="incompatible"):
        pyinv.invert(m.cube[:2, :2, :, :100], m.lines, short, cnn.assisted_config(), init="cnn", guess=model,
                     progress=False, executor="serial")
    bad = tmp_path / "bad.pt"
    _torch().save({"something": 1}, bad)
    with pytest.raises(ValueError, match="not a pyinv CNN model"):
        cnn.load_model(bad)
    bad2 = tmp_path / "bad.npz"
    np.savez(bad2, something=np.ones(3))
    with pytest.raises(ValueError, match="not a pyinv CNN model"):
        cnn.load_model(bad2)


def test_assisted_inversion_through_invert(tiny_map, tiny_model):
    import pyinv.cnn as cnn
    model, _ = tiny_model
    m = tiny_map
    cube = m.cube[:2, :3]
    res = pyinv.invert(cube, m.lines, m.grid, cnn.assisted_config(), init="cnn", guess=model, psf=m.psf,
                       progress=False, executor="serial")
    assert res.shape == (2, 3)
    assert res.provenance["init"].startswith("cnn") and res.provenance["init_info"]["init"] == "cnn"
    assert "labels" in res.provenance
    assert (res.status == 0).all() and np.isfinite(res.chi2).all()
    assert res.chi2_cycles.shape == (2, 3, 1)


def test_pretrained_model_loads():
    import pyinv.cnn as cnn
    try:
        p = cnn.pretrained_path()
    except FileNotFoundError:
        pytest.skip("no packaged model")
    model = cnn.load_pretrained(grid=pyinv.models.hinode_grid(), lines=pyinv.default_lines())
    assert model.nwav == 112 and model.provenance.get("epochs_run", 0) > 0
    assert p.stat().st_size < 2.5e6


def test_cli_cnn_train_generated(engine, tmp_path, capsys):
    _torch()
    import pyinv.cnn as cnn
    from pyinv.cli import main
    out = tmp_path / "m.npz"
    rc = main(["cnn", "train", "--generate", "1", "--size", "4", "--seed", "3", "--epochs", "2", "--batch", "4",
               "--workers", "1", "--checkpoint", str(tmp_path / "ck"), "-o", str(out)])
    assert rc == 0
    assert "trained 2 epochs" in capsys.readouterr().out
    model = cnn.load_model(out)
    assert model.provenance["epochs_run"] == 2 and model.provenance["training_set"]["pixels"] <= 16
    assert (tmp_path / "ck").is_dir()  # the training-set inversion is resumable


def test_cli_cnn_demo(tiny_model, tmp_path):
    import json
    pytest.importorskip("matplotlib")
    from pyinv.cli import main
    model, _ = tiny_model
    model.save(tmp_path / "m.npz")  # a tiny model: independent of the packaged one
    out = tmp_path / "demo"
    rc = main(["cnn", "demo", "--size", "4", "--seed", "2", "--workers", "1", "--model", str(tmp_path / "m.npz"),
               "-o", str(out)])
    assert rc == 0
    for f in ("maps.png", "differences.png", "hist2d.png", "clusters.png", "assisted_result.fits", "summary.json"):
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    summary = json.loads((out / "summary.json").read_text())
    assert summary["size"] == 4 and set(summary["correlation_vs_truth"]) == {"CNN", "assisted"}
    res = pyinv.InversionResult.from_fits(out / "assisted_result.fits")
    assert res.shape == (4, 4)
