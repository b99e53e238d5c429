"""Learned departure coefficients (issue 19): the emulator file and its numpy evaluation, the training-column
generator, and ``invert_pixel_nlte(..., departures="emulated")`` with its check and fallback."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import pyinv
from pyinv.nlte import columns as C
from pyinv.nlte.emulator import (INPUTS, DepartureEmulator, column_features, pretrained_emulator,
                                 read_emulator_file, write_emulator_file)
from helpers import require_engine

require_engine()


@pytest.fixture(scope="module")
def emu():
    return pretrained_emulator()


def _lines_grid():
    lines = pyinv.default_lines()
    return lines, pyinv.WavelengthGrid.from_regions([(8, -1500, 30, 1500)], lines)


def _columns(n, seed=3):
    """n FAL C-like columns without a backend: FAL C's packaged cousin HSRA is too shallow, so the emulator's
    own grid is filled with a smooth chromosphere."""
    rng = np.random.default_rng(seed)
    lt = C.LOG_TAU
    out = []
    for _ in range(n):
        T = 5000 + 1200 * np.tanh(lt) + rng.uniform(500, 2500) / (1 + np.exp((lt + 4.5) / 0.3))
        out.append(np.stack([T, 2.0 + 1.2 * lt + 0.1 * rng.normal(), np.full(lt.size, rng.uniform(0.5, 3)),
                             rng.uniform(-3, 3) + 0.5 * lt]))
    return np.array(out)


def test_packaged_emulator_metadata(emu):
    assert emu.name == "lw-caii" and emu.atom == "CaII" and emu.version
    assert emu.log_tau[0] > emu.log_tau[-1] and emu.log_tau.size == C.LOG_TAU.size
    tr = emu.meta["training"]
    assert tr["train_columns"] >= 1000 and tr["held_out_columns"] >= 200
    assert emu.meta["architecture"]["layers"] == len(emu.meta["architecture"]["hidden"]) + 1


def test_numpy_equals_torch(emu):
    torch = pytest.importorskip("torch")
    w, meta = read_emulator_file(emu.meta["loaded_from"])
    sizes = [len(INPUTS) * emu.log_tau.size, *meta["architecture"]["hidden"], emu.nlevels * emu.log_tau.size]
    mods = []
    for i in range(len(sizes) - 1):
        lin = torch.nn.Linear(sizes[i], sizes[i + 1]).double()
        with torch.no_grad():
            lin.weight.copy_(torch.as_tensor(w[f"layers.{i}.weight"], dtype=torch.float64))
            lin.bias.copy_(torch.as_tensor(w[f"layers.{i}.bias"], dtype=torch.float64))
        mods += [lin] + ([torch.nn.SiLU()] if i < len(sizes) - 2 else [])
    net = torch.nn.Sequential(*mods)
    x = _columns(4)
    xin = (x.reshape(4, -1) - w["in_mean"]) / w["in_std"]
    with torch.no_grad():
        y = net(torch.as_tensor(xin, dtype=torch.float64)).numpy() * w["out_std"] + w["out_mean"]
    got = emu.predict_features(x)
    assert got.shape == (4, emu.nlevels, emu.log_tau.size)
    np.testing.assert_allclose(got.reshape(4, -1), y, rtol=0, atol=1e-9)


def test_file_roundtrip_and_bad_files(emu, tmp_path):
    w, meta = read_emulator_file(emu.meta["loaded_from"])
    p = write_emulator_file(w, {**meta, "version": "test"}, tmp_path / "e.npz")
    e2 = DepartureEmulator.load(p)
    x = _columns(2)
    np.testing.assert_allclose(e2.predict_features(x), emu.predict_features(x), atol=1e-12)
    assert e2.version == "test"
    bad = dict(w)
    bad["layers.0.weight"] = bad["layers.0.weight"][:, :10]
    write_emulator_file(bad, meta, tmp_path / "bad.npz")
    with pytest.raises(ValueError, match="layers.0.weight"):
        DepartureEmulator.load(tmp_path / "bad.npz")
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(ValueError, match="not a pyinv departure-emulator"):
        DepartureEmulator.load(tmp_path / "junk.npz")
    with pytest.raises(FileNotFoundError):
        DepartureEmulator.load(tmp_path / "missing.npz")
    with pytest.raises(ValueError, match="unknown departure emulator"):
        pretrained_emulator("nope")


def test_bad_input(emu):
    atm = pyinv.models.hsra()
    with pytest.raises(ValueError, match="shape"):
        emu.predict_features(np.zeros((2, 3, emu.log_tau.size)))
    from types import SimpleNamespace
    cols = {k: np.asarray(getattr(atm, k), dtype=float) for k in ("log_tau", "T", "Pe", "vmic", "vlos")}
    with pytest.raises(ValueError, match="positive T"):
        emu.log_b(SimpleNamespace(**{**cols, "T": np.where(np.arange(atm.ndep) == 3, np.nan, cols["T"])}))
    with pytest.raises(ValueError, match="finite vmic"):
        emu.log_b(SimpleNamespace(**{**cols, "vlos": np.full(atm.ndep, np.inf)}))
    with pytest.raises(ValueError, match="one model"):
        emu.log_b(SimpleNamespace(stacked=True, **cols))
    from pyinv.nlte import NlteLine
    with pytest.raises(ValueError, match="none of the mapped lines"):
        emu.departures(atm, [NlteLine(1, "Fe23", 15, 19)])
    with pytest.raises(ValueError, match="levels"):
        emu.departures(atm, [NlteLine(8, "CaII", 2, 40)])
    # a model on another grid: b come back on the model's grid, b -> 1 deep down
    d = emu.departures(atm, [NlteLine(8, "CaII", 2, 4)])
    assert d.log_tau == pytest.approx(atm.log_tau) and d.lines == (8,)
    assert np.allclose(d.b_lower[0][atm.log_tau > 0.5], 1.0, atol=0.05)
    f = column_features(atm, emu.log_tau)
    top = emu.log_tau < atm.log_tau[-1]              # above the model: held at its top values
    assert f.shape == (4, emu.log_tau.size) and top.any() and np.allclose(f[0][top], atm.T[-1])


def test_backend_start_only_finite_b():
    """The emulator's b start the backend only when finite and positive (else the backend starts from LTE)."""
    from types import SimpleNamespace

    from pyinv.nlte import NlteLine
    from pyinv.nlte.emulated import backend_start

    be = SimpleNamespace(supports_initial_b=True, lines=[NlteLine(8, "CaII", 2, 4)])
    good = np.array([[0.1, -0.2, 0.0], [0.3, 0.0, -0.1]])
    emu = SimpleNamespace(atom="CaII", log_b=lambda model: good)
    start = backend_start(emu, be, None)
    assert np.allclose(start["CaII"], 10.0 ** good[:, ::-1])
    for bad in (np.where(good > 0.2, 400.0, good), np.where(good > 0.2, np.nan, good)):   # overflow, NaN
        assert backend_start(SimpleNamespace(atom="CaII", log_b=lambda model, b=bad: b), be, None) is None
    assert backend_start(emu, SimpleNamespace(supports_initial_b=False, lines=be.lines), None) is None


def test_draw_column_is_seeded():
    lt = C.LOG_TAU
    base = pyinv.Atmosphere(log_tau=lt, T=5000 + 1200 * np.tanh(lt) + 2000 / (1 + np.exp((lt + 4.5) / 0.3)),
                            Pe=10 ** (1.2 * lt + 1.5), vmic=1e5, B=0.0, vlos=0.0, gamma=0.0, phi=0.0)
    a1, f1 = C.draw_column(np.random.default_rng([19, 7]), base)
    a2, f2 = C.draw_column(np.random.default_rng([19, 7]), base)
    a3, _ = C.draw_column(np.random.default_rng([19, 8]), base)
    assert f1 == f2 and np.array_equal(a1.T, a2.T) and np.array_equal(a1.vlos, a2.vlos)
    assert not np.array_equal(a1.T, a3.T)
    assert np.all(a1.T >= 3000) and np.all(np.isfinite(a1.Pe))
    with pytest.raises(ValueError, match="family"):
        C.draw_column(np.random.default_rng(0), base, family="Z")
    assert C.is_held_out(9) and C.is_held_out(1999) and not C.is_held_out(8)


# ------------------------------------------------------------------ with the Lightweaver backend
@pytest.fixture(scope="module")
def lw_setup():
    pytest.importorskip("lightweaver", reason="lightweaver not installed (pip install 'pyinv[nlte]')")
    warnings.simplefilter("ignore")
    from pyinv import nlte

    lines, grid = _lines_grid()
    be = nlte.Lightweaver(nlte.level_map(lines, [8]), hydrogen="model", prd=False, lte=True)
    base = C.base_model()
    return lines, grid, be, base


def test_generate_resumes(lw_setup, tmp_path):
    C.generate(tmp_path, 2, seed=5, shard_size=1, log=lambda s: None)
    d1 = C.load_shards(tmp_path)
    assert list(d1["index"]) == [0, 1] and np.all(d1["status"] == 0)
    assert d1["log_b"].shape == (2, 6, C.LOG_TAU.size) and np.all(np.isfinite(d1["log_b"]))
    assert np.all(np.isnan(d1["stokes_lte"]))                  # neither column is held out
    (tmp_path / "shard_00001.npz").unlink()                     # a killed run: one shard missing
    mtime = (tmp_path / "shard_00000.npz").stat().st_mtime_ns
    C.generate(tmp_path, 2, seed=5, shard_size=1, log=lambda s: None)
    d2 = C.load_shards(tmp_path)
    assert (tmp_path / "shard_00000.npz").stat().st_mtime_ns == mtime  # kept, not recomputed
    np.testing.assert_allclose(d2["log_b"], d1["log_b"], atol=1e-10)
    with pytest.raises(ValueError, match="seed"):
        C.generate(tmp_path, 2, seed=6, shard_size=1)


def test_emulated_b_near_backend_on_falc(lw_setup, emu):
    lines, grid, be, base = lw_setup
    from pyinv import nlte

    r = be.synthesize(base, nlte.grid_vacuum_nm(lines, grid))
    d = emu.departures(base, be.lines)
    m = (base.log_tau <= -1) & (base.log_tau >= -5)
    for got, ref in ((d.b_lower[0], r.departures.b_lower[0]), (d.b_upper[0], r.departures.b_upper[0])):
        assert np.sqrt(np.mean((got[m] / ref[m] - 1) ** 2)) < 0.1


def _pixel(lw_setup, dT=250.0):
    lines, grid, be, base = lw_setup
    from pyinv import nlte
    from pyinv.nlte.desire import _convolve_like_synthesis

    lt = base.log_tau
    truth = pyinv.hydrostatic(base.with_columns(T=np.asarray(base.T) + dT / (1 + np.exp((lt + 3) / 0.3)),
                                                vlos=1e5, B=600.0, gamma=50.0, phi=20.0))
    rt = be.synthesize(truth, nlte.grid_vacuum_nm(lines, grid))
    lte = pyinv.synthesize(truth, lines, grid, convolve=False)
    obs = rt.stokes * (lte[0, [0, -1]].sum() / rt.stokes_lte[0, [0, -1]].sum())
    return truth, _convolve_like_synthesis(obs, lines, grid, 0.0, None)


def test_emulated_inversion_provenance_and_fallback(lw_setup, emu):
    lines, grid, be, base = lw_setup
    from pyinv.nlte import invert_pixel_nlte
    from pyinv.nlte.desire import NlteSolver

    truth, obs = _pixel(lw_setup)
    guess = base.with_columns(B=100.0, gamma=45.0, phi=30.0)
    cfg = pyinv.InversionConfig(cycles=1, nodes={"T": (4,), "vlos": (1,), "B": (1,), "gamma": (1,), "phi": (1,),
                                                 "vmic": (1,)}, weights=(1, 1, 1, 1), snr=1000.0)
    r = invert_pixel_nlte(obs, guess, lines, grid, cfg, backend=be, departures="emulated", emulator=emu)
    p = r.provenance
    assert p["departures"] == "emulated" and p["emulator"]["name"] == "lw-caii"
    assert p["emulator"]["version"] == emu.version and p["emulator_evaluations"] >= 1
    assert np.isfinite(p["check"]["profile_rms"]) and np.isfinite(p["check"]["b_rms"])
    assert p["check"]["passed"] == (p["check"]["profile_rms"] <= 0.01)
    assert r.backend_calls == 1 if not p["fallback"] else r.backend_calls > 1
    m = (base.log_tau <= -1) & (base.log_tau >= -5.3)
    assert np.sqrt(np.mean((r.result.atmosphere.T[m] - truth.T[m]) ** 2)) < 200.0
    # forced fallback: the backend iterations take over, their calls are added
    f = invert_pixel_nlte(obs, guess, lines, grid, cfg, backend=be, departures="emulated", emulator=emu,
                          check_threshold=0.0)
    assert f.provenance["fallback"] is True and f.provenance["check"]["passed"] is False
    assert f.backend_calls >= 2 and f.result is not None and f.result.ok
    # the map solver carries the same provenance
    res = NlteSolver(be, departures="emulated", emulator=emu)(obs, guess, lines, grid, cfg)
    assert res.nlte_provenance["departures"] == "emulated" and res.backend_calls >= 1
    with pytest.raises(ValueError, match="departures"):
        invert_pixel_nlte(obs, guess, lines, grid, cfg, backend=be, departures="learned")
    with pytest.raises(ValueError, match="check_threshold"):
        invert_pixel_nlte(obs, guess, lines, grid, cfg, backend=be, departures="emulated", check_threshold=-1)
    with pytest.raises(ValueError, match="emulator"):
        invert_pixel_nlte(obs, guess, lines, grid, cfg, backend=be, departures="emulated", emulator=3.0)


def test_emulated_map_records_checks_and_calls(lw_setup, emu, tmp_path):
    """pyinv.invert(..., nlte=NlteSolver(backend, departures="emulated")): every pixel's check, fallback and
    backend calls are in the result (as invert_pixel_nlte gives them) and summed in its provenance."""
    lines, grid, be, base = lw_setup
    from pyinv.nlte import invert_pixel_nlte
    from pyinv.nlte.desire import NlteSolver

    truth, obs = _pixel(lw_setup)
    guess = base.with_columns(B=100.0, gamma=45.0, phi=30.0)
    cfg = pyinv.InversionConfig(cycles=1, nodes={"T": (4,), "vlos": (1,), "B": (1,), "gamma": (1,), "phi": (1,),
                                                 "vmic": (1,)}, weights=(1, 1, 1, 1), snr=1000.0)
    cube = np.stack([obs, obs[:, ::-1]])[None]                        # (1, 2, 4, nλ): the second one mirrored
    res = pyinv.invert(cube, lines, grid, cfg, guess=guess, executor="serial", progress=False,
                       nlte=NlteSolver(be, departures="emulated", emulator=emu))
    one = invert_pixel_nlte(obs, guess, lines, grid, cfg, backend=be, departures="emulated", emulator=emu)
    assert res.backend_calls[0, 0] == one.backend_calls
    assert res.nlte_check[0, 0] == pytest.approx(one.provenance["check"]["profile_rms"], rel=1e-5)
    assert res.nlte_fallback[0, 0] == int(one.provenance["fallback"])
    assert np.all(np.isfinite(res.nlte_check)) and set(res.nlte_fallback.ravel()) <= {0, 1}
    assert np.all((res.nlte_fallback == 1) == (res.nlte_check > 0.01))
    s = res.provenance["nlte"]
    assert s["pixels"] == 2 and s["checked"] == 2 and s["passed"] + s["fallbacks"] == 2
    assert s["backend_calls"] == int(res.backend_calls.sum()) and s["backend_calls_per_pixel"] == s["backend_calls"] / 2
    assert "backend calls per pixel" in res.describe()
    back = pyinv.InversionResult.from_fits(res.to_fits(tmp_path / "r.fits"))    # kept in the result file
    np.testing.assert_array_equal(back.backend_calls, res.backend_calls)
    np.testing.assert_array_equal(back.nlte_fallback, res.nlte_fallback)
    # an LTE map has none of them
    lte = pyinv.invert(cube, lines, grid, cfg, guess=guess, executor="serial", progress=False)
    assert lte.backend_calls is None and lte.nlte_check is None and "nlte" not in lte.provenance
    assert "backend calls" not in lte.describe()


def test_nlte_fields_of_a_result():
    from types import SimpleNamespace

    from pyinv.maps.pixel import nlte_fields
    from pyinv.maps.result import nlte_summary

    fb = SimpleNamespace(backend_calls=5, nlte_provenance={"departures": "emulated", "fallback": True,
                                                           "check": {"profile_rms": 0.03}})
    ok = SimpleNamespace(backend_calls=1, nlte_provenance={"departures": "emulated", "fallback": False,
                                                           "check": {"profile_rms": 0.002}})
    be = SimpleNamespace(backend_calls=3, nlte_provenance={"departures": "backend"})
    assert nlte_fields(fb) == {"backend_calls": 5, "nlte_check": 0.03, "nlte_fallback": 1}
    assert nlte_fields(ok)["nlte_fallback"] == 0
    f = nlte_fields(be)
    assert f["backend_calls"] == 3 and np.isnan(f["nlte_check"]) and f["nlte_fallback"] == -1
    rows = [nlte_fields(r) for r in (fb, ok, be)] + [{"backend_calls": -1, "nlte_check": np.nan, "nlte_fallback": -1}]
    s = nlte_summary({k: np.array([r[k] for r in rows]) for k in rows[0]})
    assert s == {"pixels": 3, "backend_calls": 9, "backend_calls_per_pixel": 3.0, "checked": 2, "passed": 1,
                 "fallbacks": 1, "check_max": pytest.approx(0.03)}
