"""Scheduler machinery (pool, dask, faults, checkpoints) with the private stand-in solver of
pyinv.testing.solvers (a real, cheap, deterministic vlos fit). The same behaviours with the real
pyinv.invert_pixel are tested in test_maps.py."""
from __future__ import annotations

import os
import signal

import numpy as np
import pytest

import pyinv
from pyinv import models
from pyinv.maps.inversion import invert_map
from pyinv.status import (STATUS_BAD_INPUT, STATUS_FAILED, STATUS_MASKED, STATUS_PENDING, STATUS_TIMEOUT,
                          STATUS_WORKER_DIED)
from pyinv.testing.solvers import vlos_fit_solver

from helpers import assert_same_results as same
from helpers import interrupt_run, worker_killer
from helpers import run_map as run   # the misbehaving stand-in solver; the 2x3 map: conftest's six_pixels


def test_serial_pool_equal_and_per_pixel(six_pixels):
    lines, grid, cfg, cube = six_pixels
    r1 = run(six_pixels, executor="serial")
    r2 = run(six_pixels, workers=1)
    r3 = run(six_pixels, workers=2, chunk=1)
    same(r1, r2)
    same(r1, r3)
    g = models.default_guess()
    for y in range(2):
        for x in range(3):
            ref = vlos_fit_solver(cube[y, x], g, lines, grid, cfg)
            np.testing.assert_allclose(r3.atmospheres[y, x], ref.atmosphere.to_array(), rtol=1e-12)
            np.testing.assert_allclose(r3.fits[y, x], ref.fit, rtol=1e-12)
            assert r3.chi2[y, x] == pytest.approx(ref.chi2[-1], rel=1e-12)
    assert (r3.status == 0).all()
    assert r3.provenance["executor"] == "local-pool" and r3.provenance["workers"] == 2


def test_dask_local_cluster(six_pixels):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as lc, \
            distributed.Client(lc) as client:
        rd = run(six_pixels, executor=client, chunk=2)
        rx = run(six_pixels, executor=client.get_executor())
    same(rd, run(six_pixels, executor="serial"))
    same(rd, rx)


def test_nan_masked_failed_pixels(six_pixels):
    cube = six_pixels[3].copy()
    cube[0, 0, 1, 5] = np.nan
    cube[0, 1, 0, 0] = 7.0  # the stand-in raises
    mask = np.ones((2, 3), bool)
    mask[1, 2] = False
    r = run(six_pixels, cube=cube, mask=mask)
    assert r.status[0, 0] == STATUS_BAD_INPUT
    assert r.status[0, 1] == STATUS_FAILED
    assert r.status[1, 2] == STATUS_MASKED
    for y, x in ((0, 0), (0, 1), (1, 2)):
        assert np.isnan(r.atmospheres[y, x]).all() and np.isnan(r.fits[y, x]).all() and np.isnan(r.chi2[y, x])
    ok = r.status == 0
    assert ok.sum() == 3
    same_ok = run(six_pixels, executor="serial")
    np.testing.assert_array_equal(r.atmospheres[ok], same_ok.atmospheres[ok])


def test_shapes_and_axes(six_pixels):
    lines, grid, cfg, cube = six_pixels
    with pytest.raises(ValueError, match="4 axes"):
        run(six_pixels, cube=cube[0])
    with pytest.raises(ValueError, match="Stokes axis"):
        run(six_pixels, cube=cube[:, :, :3])
    with pytest.raises(ValueError, match="wavelengths"):
        run(six_pixels, cube=cube[..., :-1])
    with pytest.raises(ValueError, match="permutation"):
        run(six_pixels, axes="yxsw")
    with pytest.raises(ValueError, match="Stokes axis"):
        run(six_pixels, axes="lsxy")  # a valid permutation that does not fit the data
    with pytest.raises(ValueError, match="mask"):
        run(six_pixels, mask=np.ones((3, 2), bool))
    with pytest.raises(ValueError, match="sigma"):
        run(six_pixels, sigma=np.ones(3))
    r = run(six_pixels, cube=np.transpose(cube, (3, 1, 0, 2)), axes="lxys", executor="serial")
    same(r, run(six_pixels, executor="serial"))


def test_sigma_sets_snr(six_pixels):
    r = run(six_pixels, sigma=1e-2, executor="serial")
    r0 = run(six_pixels, executor="serial")  # config S/N 1000 → χ² scales by (1000/100)²
    ok = r0.chi2 > 0
    np.testing.assert_allclose(r.chi2[ok] * 100, r0.chi2[ok], rtol=1e-10)


def test_worker_killed_mid_run(six_pixels):
    cube = np.repeat(six_pixels[3], 2, axis=0)  # 4 x 3
    cube[..., 0, 0] = np.where(np.arange(3) % 2 == 0, 6.0, cube[..., 0, 0])  # slow pixels (0.3 s)
    kill_one, killed = worker_killer()

    r = run(six_pixels, cube=cube, chunk=1, progress=kill_one)
    assert killed and r.provenance["pool_restarts"] >= 1
    ref = run(six_pixels, cube=cube, executor="serial")
    same(r, ref)
    assert (r.status == 0).all()


def test_crashing_pixel_and_time_limit(six_pixels):
    cube = six_pixels[3].copy()
    cube[1, 1, 0, 0] = 8.0   # kills its own worker every time
    cube[0, 2, 0, 0] = 9.0   # busy for 30 s
    r = run(six_pixels, cube=cube, chunk=2, time_limit=1.0, retries=1)
    assert r.status[1, 1] == STATUS_WORKER_DIED
    assert r.status[0, 2] == STATUS_TIMEOUT
    ok = r.status == 0
    assert ok.sum() == 4
    ref = run(six_pixels, executor="serial")
    np.testing.assert_array_equal(r.atmospheres[ok], ref.atmospheres[ok])


def test_checkpoint_interrupt_and_resume(six_pixels, tmp_path):
    cube = np.repeat(six_pixels[3], 2, axis=0)
    ck = tmp_path / "ck"
    n_done = interrupt_run(lambda **kw: run(six_pixels, cube=cube, chunk=1, workers=1, **kw), 3, ck)
    assert 3 <= n_done < 12
    r = run(six_pixels, cube=cube, chunk=1, checkpoint=ck)
    assert r.provenance["resumed"] and r.provenance["computed"] == 12 - n_done
    same(r, run(six_pixels, cube=cube, executor="serial"))
    r2 = run(six_pixels, cube=cube, checkpoint=ck)  # complete: nothing to compute
    assert r2.provenance["computed"] == 0
    same(r2, r)
    with pytest.raises(ValueError, match="different inputs"):
        run(six_pixels, cube=cube * 1.001, checkpoint=ck)


def _children(pid):
    """PIDs of the direct children of ``pid`` (psutil where installed, else a scan of /proc)."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        try:
            return [c.pid for c in psutil.Process(pid).children()]
        except psutil.NoSuchProcess:
            return []
    kids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(d))
    return kids


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has finished
    except OSError:
        return False


_SIGTERM_SCRIPT = """
import sys, numpy as np, pyinv
from pyinv.maps.inversion import invert_map
from pyinv.testing.data import graded_map
lines, grid, cube = graded_map(4, 3)
cube[2:, :, 0, 0] = 5.0  # the last 6 pixels idle 60 s in the stand-in solver
invert_map(cube, lines, grid, pyinv.InversionConfig(cycles=1), init="single", guess=None, mask=None, sigma=None,
           mu=None, psf=None, abundances=None, axes="yxsl", executor=None, workers=2, chunk=1,
           checkpoint=sys.argv[1], progress=False, time_limit=None, retries=2,
           solver="pyinv.testing.solvers:misbehaving_solver")
"""


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs /proc")
def test_sigterm_ends_pool_workers(six_pixels, tmp_path):
    """SIGTERM to the parent of a local-pool run ends its workers (no orphans); finished pixels stay in
    the checkpoint."""
    import subprocess
    import sys
    import time

    ck = tmp_path / "ck"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.Popen([sys.executable, "-c", _SIGTERM_SCRIPT, str(ck)], env=env)
    workers: set[int] = set()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the 6 quick pixels done, both workers in a slow one
            assert proc.poll() is None, "the run ended early"
            # workers are forked by the forkserver, a child of the run's process: grandchildren
            workers |= {w for c in _children(proc.pid) for w in _children(c)}
            st = np.load(ck / "status.npy") if (ck / "meta.json").exists() else None
            if len(workers) >= 2 and st is not None and (st != STATUS_PENDING).sum() >= 6:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the workers did not start")
        time.sleep(0.3)
        workers |= {w for c in _children(proc.pid) for w in _children(c)}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 128 + signal.SIGTERM
        deadline = time.monotonic() + 5
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [w for w in workers if _alive(w)], "pool workers survived SIGTERM of their parent"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for w in workers:
            if _alive(w):
                os.kill(w, signal.SIGKILL)
    st = np.load(ck / "status.npy")
    assert (st[:6] == 0).all() and (st[6:] == STATUS_PENDING).all()
