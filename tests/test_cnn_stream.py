"""init="cnn" with streamed starts (issue 17): the CNN starts are made chunk by chunk where the pixels are
inverted, not for the whole map in the calling process. They must equal the starts made for the whole map
at once (pyinv.cnn.predict), whatever the chunking and the executor; a resumed run must give the same
result; the checkpoint fingerprint must follow the CNN model and its options."""
from __future__ import annotations

import json

import numpy as np
import pytest

import pyinv


@pytest.fixture(scope="module")
def small_map(engine):
    from pyinv.synthetic import generate_map
    return generate_map(6, seed=5)


def _ctx(m, valid=None):
    from pyinv.init import InitContext
    valid = np.ones(m.cube.shape[:2], bool) if valid is None else valid
    return InitContext(cube=m.cube, valid=valid, lines=m.lines, grid=m.grid, config=None, mu=1.0)


def _whole_map_starts(m, model, valid):
    """The starts as init='cnn' made them before streaming: pyinv.cnn.predict of the whole map at once, the
    standard guess where the prediction is not finite, and the clusters of the outputs."""
    import pyinv.cnn as cnn
    fb = pyinv.models.default_guess()
    ny, nx = valid.shape
    pred = cnn.predict(m.cube, model, grid=m.grid, lines=m.lines, mu=1.0, log_tau=np.asarray(fb.log_tau), valid=valid)
    table = pred.atmospheres.reshape(ny * nx, -1, 11).copy()
    header = np.zeros((ny * nx, 3))
    header[:, 0] = pred.macro.reshape(-1)
    header[:, 1] = 1.0
    bad = ~(np.isfinite(table).all(axis=(1, 2)) & np.isfinite(header).all(axis=1))
    table[bad] = fb.to_array()
    header[bad] = (float(fb.macro), 1.0, 0.0)
    return table, header, cnn.cluster(pred, 5, model=model), pred


def test_streamed_starts_equal_whole_map_starts(small_map):
    import pyinv.cnn as cnn
    m = small_map
    valid = np.ones((6, 6), bool)
    valid[0, :2] = False  # not inverted: no start made, no label
    init = cnn.CNNInit()
    gs = init.initial_guesses(_ctx(m, valid))
    assert gs.stream is not None and gs.table.shape[0] == 1 and gs.index.shape == (36, 1)  # nothing per pixel here
    table, header, labels, pred = _whole_map_starts(m, init.model, valid)
    assert gs.stream.ic_quiet == pred.ic_quiet
    flat = m.cube.reshape(36, 4, -1)
    ids = np.flatnonzero(valid.reshape(-1))
    aux = np.full((36, gs.stream.naux), np.nan, np.float32)
    for size in (1, 5, 34):  # any chunking gives the same starts, bit for bit
        for i in range(0, ids.size, size):
            p = ids[i:i + size]
            t, h, a = gs.stream.starts(flat[p], p)
            np.testing.assert_array_equal(t, table[p])
            np.testing.assert_array_equal(h, header[p])
            np.testing.assert_array_equal(a[:, :gs.stream.n_out], pred.outputs.reshape(36, -1)[p])
            aux[p] = a
    got = gs.stream.collect(aux, valid)
    np.testing.assert_array_equal(got["labels"], labels)
    assert (got["labels"][0, :2] == -1).all()
    assert got["info"]["fallback_pixels"] == 0 and got["info"]["seconds_inference"] > 0


def _run(m, cube, **kw):
    import pyinv.cnn as cnn
    kw.setdefault("init", cnn.CNNInit(max_iterations=1))
    kw.setdefault("progress", False)
    return pyinv.invert(cube, m.lines, m.grid, None, psf=m.psf, **kw)


def _same(a, b):
    for k in ("atmospheres", "fits", "chi2", "status", "iterations", "macro"):
        np.testing.assert_array_equal(np.asarray(getattr(a, k)), np.asarray(getattr(b, k)), err_msg=k)
    assert a.provenance["labels"] == b.provenance["labels"]


def test_streamed_starts_in_pool_and_serial_agree(small_map):
    """The workers of a local pool make the starts of their chunks; the same result as in this process."""
    m = small_map
    cube = m.cube[:3, :4]
    serial = _run(m, cube, executor="serial", chunk=3)
    pool = _run(m, cube, workers=2, chunk=2)
    _same(serial, pool)
    info = pool.provenance["init_info"]
    assert info["starts"].startswith("made per chunk") and info["seconds_interpolation"] > 0
    assert (serial.status == 0).all()


def test_streamed_starts_with_dask(small_map):
    distributed = pytest.importorskip("distributed")
    m = small_map
    cube = m.cube[:2, :3]
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as lc, \
            distributed.Client(lc) as client:
        rd = _run(m, cube, executor=client, chunk=2)
    _same(rd, _run(m, cube, executor="serial"))


class _Stop(Exception):
    pass


def test_resume_gives_the_same_result_and_fingerprint_follows_the_model(small_map, tmp_path):
    import pyinv.cnn as cnn
    m = small_map
    cube = m.cube[:3, :4]
    whole = _run(m, cube, executor="serial")

    def stop_after_4(done, total):
        if done >= 4:
            raise _Stop

    ck = tmp_path / "ck"
    with pytest.raises(_Stop):
        _run(m, cube, executor="serial", chunk=2, checkpoint=ck, progress=stop_after_4)
    st = np.load(ck / "status.npy")
    assert 4 <= (st != -1).sum() < 12
    aux = np.load(ck / "start_aux.npy")  # the finished pixels' CNN outputs are kept in the checkpoint
    assert np.isfinite(aux[st != -1]).all() and np.isnan(aux[st == -1]).all()
    resumed = _run(m, cube, workers=2, chunk=3, checkpoint=ck)
    assert resumed.provenance["resumed"] and resumed.provenance["computed"] == int((st == -1).sum())
    _same(whole, resumed)
    # another model, or other options of the CNN starts: the checkpoint is refused
    model = cnn.pretrained()
    w = {k: np.array(v) for k, v in model.weights.items()}
    w["head.3.bias"] = w["head.3.bias"] + np.float32(1e-3)
    other = cnn.CNNModel(w, json.loads(json.dumps(model.meta)))
    for init in (cnn.CNNInit(other, max_iterations=1), cnn.CNNInit(ic_quiet=0.9, max_iterations=1)):
        with pytest.raises(ValueError, match="start_models"):
            _run(m, cube, executor="serial", checkpoint=ck, init=init)


def test_a_start_that_cannot_be_made_fails_its_pixel_alone(small_map):
    """A stream that raises for one pixel: that pixel fails (103) and the fallback re-inverts it from the
    standard start; the others are inverted from their CNN starts."""
    import pyinv.cnn as cnn
    from pyinv.testing.solvers import AlteredStarts

    class Broken(AlteredStarts):
        def starts(self, stokes, pixels):
            if (np.asarray(pixels) == self.pixel).any():
                raise RuntimeError("no start for this pixel")
            return super().starts(stokes, pixels)

    class BrokenInit(cnn.CNNInit):
        def initial_guesses(self, ctx):
            gs = super().initial_guesses(ctx)
            gs.stream = Broken(gs.stream, 2)
            return gs

    m = small_map
    cube = m.cube[:1, :4]
    off = _run(m, cube, executor="serial", init=BrokenInit(max_iterations=1, fallback=False))
    assert off.status.ravel()[2] == 103 and (np.delete(off.status.ravel(), 2) == 0).all()
    on = _run(m, cube, executor="serial", init=BrokenInit(max_iterations=1))
    assert 2 in on.provenance["fallback"]["replaced_pixels"] and (on.status == 0).all()
