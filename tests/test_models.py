"""Packaged data: atmosphere library, default guess, default lines and abundances."""
import numpy as np
import pytest

import pyinv
from pyinv import models
from pyinv.defaults import DEFAULT_ABUNDANCES_FILE, data_path


def test_library_models():
    assert models.names() == ["hsra", "falh", "penumjti", "cool", "mmaltby"]
    for n in models.names():
        m = models.load(n)
        assert m.ndep == 53 and m.log_tau[0] == 1.2 and m.log_tau[-1] == -4.0
        assert np.all(m.T > 2500) and np.all(m.Pe > 0) and np.all(np.diff(m.T[:20]) < 0)
    assert models.cool().T[0] == 6291.9 and models.mmaltby().Pe[-1] == 1.5226e-02
    assert models.falh().T[12] == 6350.0 and models.penumjti().Pe[0] == 2.0310e+03
    h = models.hsra(full=True)
    assert h.ndep == 55 and h.log_tau[0] == 1.4 and h.T[0] == 9560.0 and h.vmic[0] == 6e4
    # HSRA appendix and the packaged library file's hsra column agree to the library's 5 digits
    library = np.loadtxt(data_path("atmosphere_library.txt"), comments="#")
    np.testing.assert_allclose(models.hsra().Pe, library[:, 6], rtol=2e-4)
    np.testing.assert_array_equal(models.hsra().T, library[:, 1])
    with pytest.raises(ValueError, match="unknown model"):
        models.load("valc")


def test_default_guess_equals_reference(reference_dir):
    d = np.load(reference_dir / "invert_hinode.npz", allow_pickle=False)
    g = models.default_guess()
    np.testing.assert_allclose(g.to_array(), d["guess_model"], rtol=1e-12, atol=0)
    assert g.macro == float(d["guess_macro"]) == 0.5


def test_default_lines():
    ll = pyinv.default_lines()
    assert len(ll) == 8
    by_wl = {round(ln.wavelength, 1): ln for ln in ll}
    assert by_wl[6301.5].g_eff == pytest.approx(5 / 3)
    assert by_wl[6302.5].g_eff == pytest.approx(2.5) and by_wl[6173.3].g_eff == pytest.approx(2.5)
    assert by_wl[5250.2].g_eff == pytest.approx(3.0) and by_wl[15648.5].g_eff == pytest.approx(3.0)
    assert by_wl[15652.9].geff_override == 1.45
    ca = by_wl[8542.1]
    assert ca.element == "Ca" and ca.ion == 2 and ca.term_lower == (2.0, 0.5, 2.5)
    assert by_wl[6301.5].sigma == pytest.approx(834 * 2.8002e-17, rel=1e-5)
    assert by_wl[6301.5].alpha == 0.243 and by_wl[6301.5].loggf == -0.718


def test_default_abundances():
    a = pyinv.default_abundances()
    assert a.shape == (92,) and a[0] == 12.0 and a[25] == 7.50 and a[5] == 8.43 and a[91] == -0.54
    assert a[83] == -8.0 and a[60] == 0.0
    # read once per process, a new writeable array per call: changing one changes neither the next nor the file's
    from pyinv.io.sir import read_abundances
    a[25] = 0.0
    b = pyinv.default_abundances()
    assert b is not a and b.flags.writeable and b[25] == 7.50
    np.testing.assert_array_equal(b, read_abundances(data_path(DEFAULT_ABUNDANCES_FILE)))
