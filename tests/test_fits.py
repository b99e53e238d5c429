"""FITS cubes and result maps."""
import numpy as np
import pytest

pytest.importorskip("astropy")
from astropy.io import fits  # noqa: E402

from pyinv.config import InversionConfig  # noqa: E402
from pyinv.io.fits import read_result_maps, read_stokes_cube, write_result_maps, write_stokes_cube  # noqa: E402


def test_cube_roundtrip_and_axes(tmp_path):
    rng = np.random.default_rng(1)
    cube = rng.normal(size=(3, 2, 4, 7))
    wl = 6301.0 + 0.02 * np.arange(7)
    write_stokes_cube(tmp_path / "c.fits", cube, wl)
    c, w = read_stokes_cube(tmp_path / "c.fits")
    assert np.array_equal(c, cube) and np.array_equal(w, wl)
    with fits.open(tmp_path / "c.fits") as h:
        assert h[0].header["PYAXES"] == "yxsl" and h[0].header["CTYPE1"] == "WAVE"
    # another layout: (nλ, 4, nx, ny) declared explicitly
    other = np.transpose(cube, (3, 2, 1, 0))
    write_stokes_cube(tmp_path / "o.fits", other, wl, axes="lsxy")
    c2, w2 = read_stokes_cube(tmp_path / "o.fits")
    assert np.array_equal(c2, cube) and np.array_equal(w2, wl)
    # without the WAVELENGTH HDU the WCS is used
    with fits.open(tmp_path / "c.fits") as h:
        fits.HDUList([h[0].copy()]).writeto(tmp_path / "w.fits")
    _, w3 = read_stokes_cube(tmp_path / "w.fits")
    np.testing.assert_allclose(w3, wl, rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match="Stokes axis"):
        write_stokes_cube(tmp_path / "bad.fits", cube, wl, axes="yxls")
    with pytest.raises(ValueError, match="wavelength"):
        write_stokes_cube(tmp_path / "bad.fits", cube, wl[:3])


def test_globin_hinode_sample(data_dir):
    p = data_dir / "hinode_sp_5x5_globin" / "hinode4d.20130912.sample.fits"
    if not p.exists():
        pytest.skip("globin sample absent")
    cube, wl = read_stokes_cube(p, axes="xysl", normalize=True)
    assert cube.shape == (5, 5, 4, 112) and wl.shape == (112,)
    assert wl[0] == pytest.approx(6300.88257, abs=1e-5)
    assert 0.2 < cube[:, :, 0].min() < 0.3 and 1.0 < cube[:, :, 0].max() < 1.1
    assert np.abs(cube[:, :, 1:, :10]).std() < 5e-3


def test_result_maps(tmp_path):
    maps = {"T": np.arange(24.0).reshape(2, 3, 4), "chi2": np.ones((2, 3))}
    cfg = InversionConfig(cycles=3, nodes={"T": [1, 3, 5]}, weights=(1, 4, 4, 2))
    write_result_maps(tmp_path / "r.fits", maps, header_extra={"OBSERVER": "test"}, config=cfg)
    out, hdr = read_result_maps(tmp_path / "r.fits")
    assert set(out) == {"T", "chi2"} and np.array_equal(out["T"], maps["T"])
    assert hdr["OBSERVER"] == "test" and hdr["PYINVVER"] and hdr["DATE"].startswith("20")
    hist = "\n".join(str(x) for x in hdr["HISTORY"])
    assert "Nodes for temperature 1      :1,3,5" in hist
