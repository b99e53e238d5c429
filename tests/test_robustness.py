"""Robust by default (issue 10): unguarded scripts, bounded pool rebuilds, no lost pixels, memory-mapped
inputs, stale shared-memory folders, content fingerprints, engine version check, input validation,
reduced χ², the time limit under Dask, MPI, and a bounded fuzz run. Real worker processes throughout;
the cheap stand-in solver of pyinv.testing.solvers where the solver's physics does not matter."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import pyinv
from pyinv import engine, models
from pyinv.physics.inversion import reduced_chi2
from pyinv.maps import inversion as map_inversion, pool, processes, store as map_store
from pyinv.maps.pixel import inversion_record
from pyinv.status import STATUS_BAD_INPUT, STATUS_FAILED, STATUS_PENDING, STATUS_TIMEOUT, STATUS_WORKER_DIED
from pyinv.testing.solvers import PoisonedStart

# the scheduler tests' helper (same misbehaving stand-in solver) on conftest's six_pixels map
from helpers import run_map as run

ROOTS = [str(Path(p).resolve().parent) for p in pyinv.__path__]


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=os.pathsep.join(ROOTS + [os.environ.get("PYTHONPATH", "")]))


# ------------------------------------------------------------------------------- unguarded scripts
_UNGUARDED = """
import pyinv
from pyinv.testing.data import graded_map
print("BODY", flush=True)
lines, grid, cube = graded_map(2, 3)
cfg = pyinv.InversionConfig(cycles=1, nodes={"T": 1, "vlos": 1})
r = pyinv.invert(cube, lines, grid, cfg, workers=2, progress=False)
print("STATUS", r.summary(), flush=True)
"""


@pytest.mark.parametrize("how", ["file", "stdin"])
def test_unguarded_script_finishes(six_pixels, tmp_path, how):
    """A script without `if __name__ == "__main__":` (and the same piped through stdin) calling
    pyinv.invert(workers=2) finishes quickly; the workers do not re-run it."""
    script = tmp_path / "unguarded.py"
    script.write_text(_UNGUARDED)
    t0 = time.monotonic()
    if how == "file":
        p = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60,
                           cwd=tmp_path, env=_env())
    else:
        p = subprocess.run([sys.executable, "-"], input=_UNGUARDED, capture_output=True, text=True, timeout=60,
                           cwd=tmp_path, env=_env())
    assert p.returncode == 0, p.stderr[-3000:]
    assert time.monotonic() - t0 < 30
    assert p.stdout.count("BODY") == 1  # the workers did not run the script
    assert "STATUS {'converged': 6}" in p.stdout


# ------------------------------------------------------------------------------- bounded rebuilds
def test_pool_dying_at_startup_stops_with_message(six_pixels, tmp_path):
    """Workers that cannot start (an unknown solver) end the run after 3 rebuilds with the worker's error
    and what to add to a script; no endless loop."""
    t0 = time.monotonic()
    with pytest.raises(pool.PoolStartError) as ei:
        run(six_pixels, solver="pyinv.testing.solvers:no_such_solver", checkpoint=tmp_path / "ck")
    assert time.monotonic() - t0 < 60
    msg = str(ei.value)
    assert "4 times" in msg and 'if __name__ == "__main__":' in msg and "no_such_solver" in msg
    meta = json.loads((tmp_path / "ck" / "meta.json").read_text())
    assert not meta.get("complete")


def test_rebuild_limit_keeps_finished_pixels(six_pixels, tmp_path):
    """The first pool finishes pixels, then every new worker dies at start-up: the run stops with a clear
    error, and the checkpoint keeps the pixels that finished."""
    cube = six_pixels[3].copy()
    cube[0, 1, 0, 0] = 4.0   # poisons later worker starts (then is solved)
    cube[1, 0, 0, 0] = 8.0   # kills its worker: the pool must be rebuilt
    ck = tmp_path / "ck"
    with pytest.raises(pool.PoolStartError, match="before computing any pixel"):
        run(six_pixels, cube=cube, solver=PoisonedStart(str(tmp_path / "poison")), workers=1, chunk=1, checkpoint=ck)
    st = np.load(ck / "status.npy")
    assert (st[:3] == 0).all()  # finished before the pool broke
    assert (st[3:] == STATUS_PENDING).all()


# ------------------------------------------------------------------------------- requeue paths
def test_failed_task_is_split_and_retried(six_pixels):
    """A task that fails outside the per-pixel guard (local pool): its pixels are rerun one per task; the
    failing pixel gets STATUS_FAILED after retries+1 attempts alone; every other pixel is computed."""
    cube = six_pixels[3].copy()
    cube[0, 1, 0, 0] = 3.0
    r = run(six_pixels, cube=cube, chunk=3, retries=1)
    assert r.status[0, 1] == STATUS_FAILED
    ok = np.ones((2, 3), bool)
    ok[0, 1] = False
    assert (r.status[ok] == 0).all()
    assert r.provenance["chunk_failures"] >= 3  # the chunk, then the pixel alone twice
    ref = run(six_pixels, executor="serial")
    np.testing.assert_array_equal(r.atmospheres[ok], ref.atmospheres[ok])


def test_failed_task_other_executor(six_pixels):
    """The same with any other Executor (tasks carry their data)."""
    cube = six_pixels[3].copy()
    cube[1, 2, 0, 0] = 3.0
    with ThreadPoolExecutor(2) as ex:
        r = run(six_pixels, cube=cube, executor=ex, chunk=3, retries=1)
    assert r.status[1, 2] == STATUS_FAILED
    assert (np.delete(r.status.ravel(), 5) == 0).all()


def test_submit_failures_requeue(six_pixels, monkeypatch):
    """submit() raising (a pool that broke between checks) loses no pixel: the pool is rebuilt and the
    task resubmitted."""
    from concurrent.futures import ProcessPoolExecutor

    orig = ProcessPoolExecutor.submit
    calls = {"n": 0}

    def flaky(self, *a, **k):
        calls["n"] += 1
        if calls["n"] in (2, 5):
            raise RuntimeError("cannot schedule new futures after shutdown")
        return orig(self, *a, **k)

    monkeypatch.setattr(ProcessPoolExecutor, "submit", flaky)
    r = run(six_pixels, chunk=1)
    assert (r.status == 0).all() and r.provenance["pool_restarts"] >= 1


def test_submit_failure_other_executor(six_pixels):
    class Flaky(ThreadPoolExecutor):
        n = 0

        def submit(self, *a, **k):
            Flaky.n += 1
            if Flaky.n == 2:
                raise RuntimeError("executor busy")
            return super().submit(*a, **k)

    with Flaky(1) as ex:
        r = run(six_pixels, executor=ex, chunk=1, workers=2)
    assert (r.status == 0).all()


def test_pending_pixels_never_complete(six_pixels, tmp_path, monkeypatch):
    """A run that leaves pixels pending is not marked complete (and says so)."""
    monkeypatch.setattr(map_inversion, "run_pixels", lambda *a, **k: {"computed": 0})
    with pytest.raises(RuntimeError, match="still pending"):
        run(six_pixels, checkpoint=tmp_path / "ck")
    assert not json.loads((tmp_path / "ck" / "meta.json").read_text()).get("complete")


# ------------------------------------------------------------------------------- inputs in workers
@pytest.mark.parametrize("init", ["single", "previous", "multistart", "cluster"])
def test_worker_inputs_memory_mapped(six_pixels, init):
    """Every init strategy's per-pixel start table reaches the workers memory-mapped (the probe solver
    fails a pixel otherwise)."""
    guess = None
    if init == "previous":
        guess = run(six_pixels, executor="serial")
    elif init == "multistart":
        guess = 2
    r = run(six_pixels, init=init, guess=guess, solver="pyinv.testing.solvers:mapped_inputs_solver")
    assert (r.status == 0).all()


def test_shm_check_counts_every_array(six_pixels, monkeypatch):
    seen = []
    orig = pool.scratch_dir

    def spy(nbytes, *a, **k):
        seen.append(nbytes)
        return orig(nbytes, *a, **k)

    monkeypatch.setattr(pool, "scratch_dir", spy)
    prev = run(six_pixels, executor="serial")
    run(six_pixels, init="previous", guess=prev)
    cube = six_pixels[3]
    npix = cube.shape[0] * cube.shape[1]
    table = npix * prev.atmospheres.shape[2] * 11 * 8  # one start model per pixel
    assert seen and seen[0] >= cube.nbytes + table + npix * 3 * 8 + npix * 4 + npix * 8


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_folders_removed_live_kept(tmp_path):
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.2)
        dead = _dead_pid()
        names = {
            "dead": f"pyinv-in-{dead}-12345-abc",
            "dead_store": f"pyinv-store-{dead}-777-xyz",
            "live": f"pyinv-in-{live.pid}-{processes.start_time(live.pid)}-def",
            "me": f"pyinv-in-{processes.owner_tag()}-ghi",
            "reused_pid": f"pyinv-in-{live.pid}-1-jkl",   # same pid, another start time: its owner is gone
            "foreign": "pyinv-in-notapid",
        }
        for n in names.values():
            (tmp_path / n).mkdir()
        removed = {Path(p).name for p in processes.remove_stale_folders(str(tmp_path))}
        assert removed == {names["dead"], names["dead_store"], names["reused_pid"]}
        for k in ("live", "me", "foreign"):
            assert (tmp_path / names[k]).is_dir()
    finally:
        live.kill()
        live.wait()


_KILLED_RUN = """
import sys, numpy as np, pyinv
from pyinv import models
from pyinv.maps.inversion import invert_map
lines = pyinv.default_lines()
grid = models.hinode_grid(lines)
g = models.default_guess()
cube = pyinv.synthesize([g.with_columns(vlos=v) for v in np.linspace(-1e5, 1e5, 4)], lines, grid).reshape(2, 2, 4, -1)
cube[:, :, 0, 0] = 5.0  # idle 60 s
print("START", flush=True)
invert_map(cube, lines, grid, pyinv.InversionConfig(cycles=1), init="single", guess=None, mask=None, sigma=None,
           mu=None, psf=None, abundances=None, axes="yxsl", executor=None, workers=1, chunk=1, checkpoint=None,
           progress=False, time_limit=None, retries=2, solver="pyinv.testing.solvers:misbehaving_solver")
"""


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs /proc")
def test_sigkilled_run_folder_removed_by_next_run(six_pixels):
    """A run killed with SIGKILL leaves its pyinv-in-* folder; the next run's start-up removes it."""
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_RUN], env=_env(), start_new_session=True,
                            stdout=subprocess.PIPE, text=True)
    tag = None
    try:
        assert proc.stdout.readline().strip() == "START"
        deadline = time.monotonic() + 60
        start = processes.start_time(proc.pid)
        while time.monotonic() < deadline and tag is None:
            for d in ("/dev/shm", tempfile.gettempdir()):
                for n in os.listdir(d) if os.path.isdir(d) else []:
                    if n.startswith(f"pyinv-in-{proc.pid}-{start}-") and (Path(d) / n / "started.npy").exists():
                        tag = Path(d) / n
            time.sleep(0.1)
        assert tag is not None, "the run made no input folder"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the run and its forkserver/workers (its own session)
        proc.wait()
    assert tag.is_dir()  # left behind
    run(six_pixels, executor=None, workers=1)
    assert not tag.exists()


# ------------------------------------------------------------------------------- checkpoints
def _psf_file(path: Path, width: float) -> Path:
    x = np.linspace(-100, 100, 21)
    np.savetxt(path, np.c_[x, np.exp(-(x / width) ** 2)])
    return path


def test_checkpoint_fingerprint_lists_changes(six_pixels, tmp_path):
    ck = tmp_path / "ck"
    psf = _psf_file(tmp_path / "inst.psf", 30.0)
    r = run(six_pixels, executor="serial", checkpoint=ck, psf=str(psf))
    assert (r.status == 0).all()
    meta = json.loads((ck / "meta.json").read_text())
    assert {"cube", "psf", "abundances", "lines", "grid", "config", "start_models",
            "pyinv_version"} <= set(meta["fingerprints"])
    _psf_file(psf, 35.0)  # same name, other content
    with pytest.raises(ValueError, match=r"changed: psf\b"):
        run(six_pixels, executor="serial", checkpoint=ck, psf=str(psf))
    _psf_file(psf, 30.0)
    again = run(six_pixels, executor="serial", checkpoint=ck, psf=str(psf))
    assert again.provenance["resumed"] and again.provenance["computed"] == 0
    cfg2 = pyinv.InversionConfig(cycles=1, snr=500.0)
    with pytest.raises(ValueError, match=r"changed: config") as ei:
        run(six_pixels, executor="serial", checkpoint=ck, psf=str(psf), config=cfg2)
    assert "cube" not in str(ei.value).split("changed:")[1].split(".")[0]
    with pytest.raises(ValueError, match=r"changed: .*cube"):
        run(six_pixels, cube=six_pixels[3] * 1.0001, executor="serial", checkpoint=ck, psf=str(psf))


def test_checkpoint_abundance_file_and_version(six_pixels, tmp_path, monkeypatch):
    from pyinv.io.sir import write_abundances

    ck = tmp_path / "ck"
    ab = tmp_path / "abund"
    logeps = np.asarray(pyinv.default_abundances(), dtype=np.float64)
    write_abundances(ab, logeps)
    run(six_pixels, executor="serial", checkpoint=ck, abundances=str(ab))
    le = logeps.copy()
    le[25] += 0.1
    write_abundances(ab, le)
    with pytest.raises(ValueError, match=r"changed: abundances"):
        run(six_pixels, executor="serial", checkpoint=ck, abundances=str(ab))
    write_abundances(ab, logeps)
    monkeypatch.setattr(map_inversion, "PACKAGE_VERSION", "99.0")
    with pytest.raises(ValueError, match=r"pyinv_version"):
        run(six_pixels, executor="serial", checkpoint=ck, abundances=str(ab))


def test_durable_store_syncs_data_before_status(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(map_store, "sync_rows", lambda arr, a, b: calls.append((arr.shape, a, b)))
    store, _ = map_store.ResultStore.open_or_create(tmp_path / "s", inversion_record(), npix=4,
                                                    dims=map_store.Dims(ndep=3, nwav=5, ncyc=1),
                                                    fingerprint={"x": "1"}, durable=True)
    rec = store.blank(0)
    store.put(2, rec)
    status_shape = store.status.shape
    assert len(calls) == len(rec) and calls[-1] == (status_shape, 2, 3)
    assert all(c[1:] == (2, 3) for c in calls)
    assert store.status[2] == 0
    # the real msync runs without error on a real store
    monkeypatch.undo()
    store.put(1, rec)
    assert np.load(tmp_path / "s" / "status.npy")[1] == 0


def _small_store(path, durable):
    return map_store.ResultStore.open_or_create(path, inversion_record(), npix=6,
                                                dims=map_store.Dims(ndep=3, nwav=5, ncyc=1),
                                                fingerprint={"x": "1"}, durable=durable)[0]


def test_durable_store_batch_commits_data_then_statuses(tmp_path, monkeypatch):
    """put(batch=True) holds a durable store's statuses back; commit() syncs the held pixels' data with one
    msync per field over their rows, then writes and syncs their statuses. Once COMMIT_SECONDS have passed
    since the last commit, put commits by itself; a store that is not durable writes each status at once."""
    calls = []
    now = [100.0]
    monkeypatch.setattr(map_store, "sync_rows", lambda arr, a, b: calls.append((arr.shape, a, b)))
    monkeypatch.setattr(map_store, "_clock", lambda: now[0])
    store = _small_store(tmp_path / "s", True)
    rec = store.blank(0)
    rec["chi2"] = 2.5
    assert store.put(4, rec, batch=True) is False and store.put(1, rec, batch=True) is False
    assert calls == [] and (store.status == STATUS_PENDING).all()
    assert store.arrays["chi2"][4] == 2.5          # the data are in place already
    store.commit()
    status_shape = store.status.shape
    assert len(calls) == len(rec) and calls[-1] == (status_shape, 1, 5)
    assert sorted(c[0] for c in calls[:-1]) == sorted(store.arrays[k].shape for k in rec if k != "status")
    assert all(c[1:] == (1, 5) for c in calls)
    assert list(np.flatnonzero(store.status == 0)) == [1, 4]
    calls.clear()
    store.commit()                                  # nothing held: nothing synced
    assert calls == []
    # time passes: 0.6 s for pixel 2 (held), then 0.5 s for pixel 3: both are committed with pixel 3
    now[0] += 0.6
    assert store.put(2, rec, batch=True) is False and store.status[2] == STATUS_PENDING
    now[0] += 0.5
    assert store.put(3, rec, batch=True) is True and (store.status[2:4] == 0).all()
    assert calls[-1] == (status_shape, 2, 4)
    # a pixel slower than COMMIT_SECONDS is committed as soon as it is put
    now[0] += map_store.COMMIT_SECONDS
    assert store.put(5, rec, batch=True) is True and store.status[5] == 0
    # flush() commits what is held
    store.put(0, rec, batch=True)
    store.flush()
    assert store.status[0] == 0
    # not durable: the status is written at once, nothing synced
    calls.clear()
    plain = _small_store(tmp_path / "t", False)
    assert plain.put(0, rec, batch=True) is True and plain.status[0] == 0 and calls == []


def test_worker_killed_with_held_statuses(six_pixels, tmp_path):
    """A checkpointed run whose worker dies in a chunk after finishing pixels whose statuses were held for
    the chunk's batch: those pixels are computed again, the killing pixel is marked, the checkpoint holds
    every pixel's final status and the results equal a serial run's."""
    cube = six_pixels[3].copy()
    cube[1, 0, 0, 0] = 8.0   # kills its worker every time (after three finished pixels of its chunk)
    ck = tmp_path / "ck"
    r = run(six_pixels, cube=cube, workers=1, chunk=6, retries=1, checkpoint=ck)
    assert r.provenance["pool_restarts"] >= 1
    assert r.status[1, 0] == STATUS_WORKER_DIED
    ok = r.status == 0
    assert ok.sum() == 5
    st = np.load(ck / "status.npy")
    np.testing.assert_array_equal(st, r.status.reshape(-1))
    ref = run(six_pixels, executor="serial")       # (the killing pixel is not in this process's map)
    np.testing.assert_array_equal(r.atmospheres[ok], ref.atmospheres[ok])
    np.testing.assert_array_equal(r.chi2[ok], ref.chi2[ok])


# ------------------------------------------------------------------------------- engine version
def test_engine_version_mismatch(six_pixels, monkeypatch):
    mod = engine.extension_module()
    v, api_v = engine.check_engine_version(mod)
    assert v == pyinv.__version__ and api_v == engine.ENGINE_API_VERSION
    monkeypatch.setattr(engine.core, "PACKAGE_VERSION", "7.7.7")   # read where the check lives
    with pytest.raises(ImportError, match=rf"engine is version {v} .* package is version 7\.7\.7"):
        engine.check_engine_version(mod)
    monkeypatch.undo()
    monkeypatch.setattr(engine.core, "ENGINE_API_VERSION", engine.ENGINE_API_VERSION + 1)
    with pytest.raises(ImportError, match="API"):
        engine.check_engine_version(mod)

    class Old:
        class pyinv_api:  # noqa: N801 - an engine without engine_version
            pass

    with pytest.raises(ImportError, match="carries no version"):
        engine.check_engine_version(Old)


# ------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("kw, field", [
    (dict(cycles=0), "cycles"), (dict(cycles=-1), "cycles"), (dict(cycles=1e300), "cycles"), (dict(snr=-5.0), "snr"), (dict(snr=np.nan), "snr"),
    (dict(snr=[1000.0, 0.0]), "snr"), (dict(weights=(1, np.nan, 1, 1)), r"weights\[1\]"),
    (dict(weights=(-1, 1, 1, 1)), r"weights\[0\]"), (dict(weights=(0, -1, 1, 1)), "weights"),
    (dict(svd_tolerance=0), "svd_tolerance"),
    (dict(invert_stray=2), "invert_stray"), (dict(mu=0.0), "mu"), (dict(interpolation=7), "interpolation"),
])
def test_config_validated_at_construction(kw, field):
    with pytest.raises(ValueError, match=field):
        pyinv.InversionConfig(**kw)


def test_config_sir_meanings_kept():
    c = pyinv.InversionConfig(cycles=2, weights=(1, -1, -1, 2))  # fit Q/I, U/I: SIR's negative weights
    assert c.weights_for(1) == (1.0, -1.0, -1.0, 2.0)


def test_node_counts_beyond_depth_grid(six_pixels):
    cfg = pyinv.InversionConfig(cycles=1, nodes={"T": 500})
    with pytest.raises(ValueError, match=r"nodes\['T'\].*depth points"):
        run(six_pixels, config=cfg, executor="serial")


@pytest.mark.parametrize("case", ["zeros", "negated", "counts", "huge"])
def test_bad_cubes_refused_or_flagged(six_pixels, case):
    cube = six_pixels[3]
    bad = {"zeros": np.zeros_like(cube), "negated": -cube, "counts": np.round(cube * 30000).astype(np.int32),
           "huge": cube * 1e30}[case]
    with pytest.raises(ValueError, match="normalised"):
        run(six_pixels, cube=bad, executor="serial")
    with pytest.raises(ValueError, match="check=False"):  # the public API, before any pixel runs
        pyinv.invert(bad, six_pixels[0], six_pixels[1], six_pixels[2], executor="serial", progress=False)
    with pytest.warns(UserWarning, match="normalised"):
        r = run(six_pixels, cube=bad, executor="serial", check=False)
    assert (r.status == STATUS_BAD_INPUT).all()
    assert not (r.status == 0).any()


def test_some_bad_pixels_flagged(six_pixels):
    cube = six_pixels[3].copy()
    cube[0, 0, 0, 10] = -0.5    # negative Stokes I
    cube[1, 1, 0, :] = 0.0      # all-zero I
    cube[1, 2, 3, 4] = 1e6      # far out
    with pytest.raises(ValueError) as ei:
        run(six_pixels, cube=cube, executor="serial")
    for what in ("negative Stokes I", "all-zero Stokes I", "beyond"):
        assert what in str(ei.value)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        r = run(six_pixels, cube=cube, check=False)
    assert len([x for x in w if "normalised" in str(x.message)]) == 1  # one warning for the map
    assert r.status[0, 0] == r.status[1, 1] == r.status[1, 2] == STATUS_BAD_INPUT
    assert (r.status[[0, 0, 1], [1, 2, 0]] == 0).all()
    assert r.provenance["bad_input_pixels"] == 3


# ------------------------------------------------------------------------------- reduced chi2
def test_reduced_chi2_near_one_at_noise_level(six_pixels):
    """Observations = synthesis + Gaussian noise of σ = 1/S/N; started from the true models, the fit is at
    the noise level: reduced χ² ≈ 1 while SIR's χ² is far larger."""
    lines, grid, _, _ = six_pixels
    g = models.default_guess()
    atms = [g.with_columns(vlos=v, B=b) for v, b in ((-5e4, 300.0), (8e4, 900.0))]
    clean = pyinv.synthesize(atms, lines, grid).reshape(1, 2, 4, -1)
    rng = np.random.default_rng(3)
    noisy = clean + rng.normal(0.0, 1e-3, clean.shape)
    truth = np.stack([a.to_array() for a in atms]).reshape(1, 2, -1, 11)
    cfg = pyinv.InversionConfig(cycles=1, nodes={"T": 1, "vlos": 1, "B": 1}, snr=1000.0)
    r = pyinv.invert(noisy, lines, grid, cfg, init="previous", guess=truth, executor="serial", progress=False)
    assert (r.status == 0).all()
    assert np.all((r.chi2_reduced > 0.8) & (r.chi2_reduced < 1.25)), r.chi2_reduced
    assert np.all(r.chi2 > 5 * r.chi2_reduced)
    assert "reduced chi2" in r.describe()
    # the definition, by hand
    nfree = 3
    d = (noisy[0, 0] - r.fits[0, 0]) * 1000.0
    assert r.chi2_reduced[0, 0] == pytest.approx(np.sum(d ** 2) / (d.size - nfree), rel=1e-9)


def test_reduced_chi2_round_trip(six_pixels, tmp_path):
    r = run(six_pixels, executor="serial")
    assert np.isfinite(r.chi2_reduced).all()
    r.to_fits(tmp_path / "r.fits")
    back = pyinv.InversionResult.from_fits(tmp_path / "r.fits")
    np.testing.assert_array_equal(back.chi2_reduced, r.chi2_reduced)
    np.testing.assert_array_equal(r.map("chi2_reduced"), r.chi2_reduced)


# ------------------------------------------------------------------------------- dask and MPI
def test_time_limit_holds_under_dask(six_pixels):
    distributed = pytest.importorskip("distributed")
    cube = six_pixels[3].copy()
    cube[0, 2, 0, 0] = 9.0  # busy for 30 s
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as lc, \
            distributed.Client(lc) as client:
        t0 = time.monotonic()
        r = run(six_pixels, cube=cube, executor=client, chunk=3, time_limit=1.0)
        took = time.monotonic() - t0
    assert r.status[0, 2] == STATUS_TIMEOUT
    assert (np.delete(r.status.ravel(), 2) == 0).all()
    assert took < 25, took
    ref = run(six_pixels, executor="serial")
    ok = r.status == 0
    np.testing.assert_array_equal(r.atmospheres[ok], ref.atmospheres[ok])


_MPI_SCRIPT = """
import sys, numpy as np, pyinv
from mpi4py.futures import MPIPoolExecutor
from pyinv.testing.data import graded_map
lines, grid, cube = graded_map(4, 4)
cfg = pyinv.InversionConfig(cycles=1, nodes={"T": 1, "vlos": 1})
if __name__ == "__main__":
    with MPIPoolExecutor() as ex:
        r = pyinv.invert(cube, lines, grid, cfg, executor=ex, progress=False)
    loc = pyinv.invert(cube, lines, grid, cfg, workers=2, progress=False)
    np.savez(sys.argv[1], mpi=r.atmospheres, local=loc.atmospheres, smpi=r.status, sloc=loc.status,
             ex=r.provenance["executor"])
"""


def test_mpi_futures_equals_local_pool(six_pixels, tmp_path):
    """docs/clusters.md's mpi4py.futures path: 2 MPI ranks (one worker), a 4x4 map equal to the local
    pool's."""
    pytest.importorskip("mpi4py")
    mpiexec = shutil.which("mpiexec")
    if mpiexec is None:
        pytest.skip("mpiexec (OpenMPI) not installed")
    script = tmp_path / "mpi_map.py"
    script.write_text(_MPI_SCRIPT)
    out = tmp_path / "out.npz"
    env = _env()
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_rmaps_base_oversubscribe="1")
    p = subprocess.run([mpiexec, "-n", "2", sys.executable, "-m", "mpi4py.futures", str(script), str(out)],
                       capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    d = np.load(out)
    assert str(d["ex"]) == "MPIPoolExecutor"
    assert (d["smpi"] == 0).all()
    np.testing.assert_array_equal(d["smpi"], d["sloc"])
    np.testing.assert_array_equal(d["mpi"], d["local"])


# ------------------------------------------------------------------------------- fuzz
def test_fuzz_public_api_and_engine(six_pixels):
    """A fixed-seed, bounded fuzz run (in child processes): random, NaN, inf, huge, empty, wrongly shaped
    and wrongly typed inputs never crash the process; bad values give ValueError, wrong types TypeError
    (or OverflowError for a number too large for an integer argument)."""
    from pyinv.testing import fuzz as _fuzz

    res = _fuzz.drive(600, seed=20261204, timeout=240, per_input=60)
    assert res["crashes"] == [] and res["hangs"] == []
    outcomes = {o for _, _, o, _ in res["outcomes"]}
    assert outcomes <= {"ok", "ValueError", "TypeError", "OverflowError"}, outcomes
    kinds = {k for _, k, _, _ in res["outcomes"]}
    assert kinds == set(_fuzz.KINDS)
    assert sum(c for *_, c in res["outcomes"]) == 600
    # bad values (as opposed to wrong types) are refused with ValueError or computed, nothing else
    for t, k, o, c in res["outcomes"]:
        if k in ("nan", "inf", "huge", "negative", "zero", "empty", "random") and t.startswith("pyinv."):
            assert o in ("ok", "ValueError"), (t, k, o, c)


def test_requeue_bookkeeping(tmp_path):
    """The shared failure rule: a failed task of several pixels becomes one-pixel tasks (no attempt
    counted); a one-pixel task counts an attempt and its pixel gets the status after retries + 1."""
    from collections import deque

    store, _ = map_store.ResultStore.open_or_create(tmp_path / "s", inversion_record(), npix=5,
                                                    dims=map_store.Dims(ndep=3, nwav=4, ncyc=1),
                                                    fingerprint="x")
    q: deque = deque()
    rq = pool.Requeue(store, q, 5, retries=1)
    store.put(1, store.blank(0))  # finished: never requeued
    rq.failed(np.array([0, 1, 2]))
    assert [list(x) for x in q] == [[0], [2]] and rq.attempts.sum() == 0
    q.clear()
    rq.failed(np.array([2]), STATUS_WORKER_DIED)
    assert [list(x) for x in q] == [[2]] and store.status[2] == STATUS_PENDING
    q.clear()
    rq.failed(np.array([2]), STATUS_WORKER_DIED)
    assert not q and store.status[2] == STATUS_WORKER_DIED


def test_reduced_chi2_definition():
    rng = np.random.default_rng(0)
    fit = rng.uniform(-0.5, 1.0, size=(4, 50))
    obs = fit + rng.normal(0, 1e-3, fit.shape)
    obs[0, 3] = -2.0  # masked as in SIR
    r = reduced_chi2(obs, fit, 1000.0, (1, 0, 0, 1), nfree=2)
    d = (obs - fit)[[0, 3]] * 1000.0
    keep = np.ones(d.shape, bool)
    keep[0, 3] = False
    assert r == pytest.approx(np.sum(d[keep] ** 2) / (keep.sum() - 2))
    assert np.isnan(reduced_chi2(obs, fit, 1000.0, (0, 0, 0, 0)))
    assert np.isnan(reduced_chi2(obs, fit, -1.0, (1, 1, 1, 1)))
