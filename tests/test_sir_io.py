"""Readers and writers of SIR files, checked on the complete SIR run in shared/reference/sir_files."""
import numpy as np
import pytest

from pyinv.atmosphere import Atmosphere, AtmosphereErrors
from pyinv.io.sir import (read_abundances, read_psf, read_sir_chi, read_sir_model, read_sir_profiles,
                          read_two_component_models, write_abundances, write_sir_chi, write_sir_model,
                          write_sir_profiles)

from helpers import assert_file_refused


@pytest.fixture
def sir_files(reference_dir):
    p = reference_dir / "sir_files"
    if not p.is_dir():
        pytest.skip("sir_files absent")
    return p


@pytest.mark.parametrize("name", ["model1.mod", "model2.mod", "model2_3.mod", "model2_3.err"])
def test_models_roundtrip_byte_exact(sir_files, tmp_path, name):
    m = read_sir_model(sir_files / name)
    assert isinstance(m, AtmosphereErrors if name.endswith(".err") else Atmosphere)
    assert m.ndep == 61
    out = tmp_path / name
    write_sir_model(out, m)
    assert out.read_text() == (sir_files / name).read_text()


def test_model_values(sir_files):
    m = read_sir_model(sir_files / "model1.mod")
    assert m.macro == 2.0 and m.filling == 1.0 and m.stray == 0.0
    assert m.log_tau[0] == 1.2 and m.T[0] == 8418.7 and m.Pe[0] == 2.01245e3
    assert m.Pg is not None and m.rho[0] == 5.2059e-07 and m.z[0] == -104.43


def test_model_errors_in_file(tmp_path):
    p = tmp_path / "bad.mod"
    for text, match in (("1.0 1.0 0.0\n 1.0 5000. 10. 0 0 0 0 0\n 0.0 -5. 1. 0 0 0 0 0\n", "bad.mod.*'T'.*depth index 1"),
                        ("1.0 1.0 0.0\n 1.0 5000. 10. 0 0 0 0\n", "bad.mod:2.*8 or 11 columns"),
                        ("1.0 1.0 0.0\n 1.0 5000. 1x0. 0 0 0 0 0\n", "bad.mod:2: malformed model row")):
        assert_file_refused(read_sir_model, p, text, match)


def test_negative_B_from_file(tmp_path):
    p = tmp_path / "neg.mod"
    p.write_text("0.0 1.0 0.0\n 1.0 5000. 10. 0 -100. 0 20. 5.\n 0.0 4500. 1. 0 100. 0 20. 5.\n")
    m = read_sir_model(p)
    assert m.B[0] == 100.0 and m.gamma[0] == 160.0 and m.phi[0] == 185.0


def test_two_components(sir_files, tmp_path):
    m2 = read_sir_model(sir_files / "model2.mod").with_columns(filling=0.3, stray=5.0)
    write_sir_model(tmp_path / "b.mod", m2)
    with pytest.warns(UserWarning) as rec:
        a, b = read_two_component_models(sir_files / "model1.mod", tmp_path / "b.mod")
    msgs = " | ".join(str(w.message) for w in rec)
    assert "model 2's value f2 = 0.3" in msgs and "using model 1's value" in msgs
    assert b.filling == pytest.approx(0.3) and a.filling == pytest.approx(0.7)
    assert a.stray == 0.0 and b.stray == 0.0


@pytest.mark.parametrize("name", ["model1.per", "model2_3.per"])
def test_profiles_roundtrip(sir_files, tmp_path, name):
    p = read_sir_profiles(sir_files / name)
    assert p.stokes.shape == (4, 201) and np.all(p.line_index == 5)
    assert p.offset_mA[0] == -500.0 and p.offset_mA[-1] == 1500.0
    write_sir_profiles(tmp_path / name, *p)
    assert (tmp_path / name).read_text() == (sir_files / name).read_text()


def test_profiles_format_and_contiguity(tmp_path):
    st = np.array([[0.8085768], [7.377049e-06], [-2.278817e-05], [-3.055563e-04]])
    write_sir_profiles(tmp_path / "x.per", [200], [-500.0], st)
    assert (tmp_path / "x.per").read_text() == \
        "   200   -500.0000  0.8085768E+00  0.7377049E-05 -0.2278817E-04 -0.3055563E-03\n"
    (tmp_path / "y.per").write_text(" 1 0. 1 0 0 0\n 2 0. 1 0 0 0\n 1 10. 1 0 0 0\n")
    with pytest.raises(ValueError, match="not contiguous"):
        read_sir_profiles(tmp_path / "y.per")


def test_abundances(reference_dir, sir_files, tmp_path):
    a = read_abundances(reference_dir / "THEVENIN")
    assert a.shape == (92,) and a.dtype == np.float64
    assert a[0] == 12.0 and a[1] == 11.0 and a[91] == -0.47 and a[83] == -8.0
    assert np.array_equal(read_abundances(sir_files / "THEVENIN"), a)
    write_abundances(tmp_path / "ab", a, header="test header")
    assert np.array_equal(read_abundances(tmp_path / "ab"), a)
    (tmp_path / "short").write_text("1 12.0\n26 7.5\nend of data\n3 1.0\n")
    s = read_abundances(tmp_path / "short")
    assert s[0] == 12.0 and s[25] == 7.5 and s[2] == 0.0 and np.count_nonzero(s) == 2


def test_psf_and_chi(reference_dir, sir_files, tmp_path):
    off, r = read_psf(reference_dir / "HINODE_SP_ins_prof.psf")
    assert off.size == r.size == 25 and off[0] == -69.9725 and np.all(np.diff(off) > 0)
    chi = read_sir_chi(sir_files / "sir.chi")
    assert chi.shape == (4, 2) and chi[0, 0] == 190.1743 and chi[3, 1] == 0.3219829
    write_sir_chi(tmp_path / "s.chi", chi)
    assert (tmp_path / "s.chi").read_text() == (sir_files / "sir.chi").read_text()


def test_every_sir_file_is_read(sir_files):
    from pyinv.config import InversionConfig
    from pyinv.lines import LineList, WavelengthGrid
    readers = {".mod": read_sir_model, ".err": read_sir_model, ".per": read_sir_profiles, ".chi": read_sir_chi,
               ".trol": InversionConfig.read_sir}
    lines = LineList.read_sir(sir_files / "LINES")
    seen = 0
    for f in sorted(sir_files.iterdir()):
        if f.suffix in readers:
            readers[f.suffix](f)
        elif f.suffix == ".grid":
            WavelengthGrid.read_sir(f, lines)
        elif f.name == "THEVENIN":
            read_abundances(f)
        elif f.name == "LINES":
            pass
        else:
            pytest.fail(f"no reader for {f.name}")
        seen += 1
    assert seen == len(list(sir_files.iterdir()))
