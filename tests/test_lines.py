"""LINES parsing, Landé factors, Zeeman patterns, wavelength grids."""
import json
import warnings

import numpy as np
import pytest

from pyinv.lines import (ENGINE_FIELDS, LineList, SpectralLine, WavelengthGrid, lande_factor, wigner3j,
                         zeeman_components)

ROW = "  200=FE 1   6301.5080     1.0    3.65     -0.59    5P 2.0- 5D 2.0  0.  0.\n"


def _lines(tmp_path, text, name="LINES"):
    p = tmp_path / name
    p.write_text(text)
    return LineList.read_sir(p)


@pytest.fixture
def ref_lines(reference_dir):
    return LineList.read_sir(reference_dir / "LINES_REF")


def test_lines_ref_landé(ref_lines):
    assert ref_lines.indices == [1, 2, 3, 4, 5, 6, 7, 8, 200, 201]
    geff = {ln.wavelength: ln.g_eff for ln in ref_lines}
    assert geff[6301.508] == pytest.approx(1.667, abs=1e-3)
    assert geff[6302.499] == pytest.approx(2.5, abs=1e-3)
    assert geff[15648.5088] == pytest.approx(3.0, abs=1e-3)
    assert geff[6173.334] == pytest.approx(2.5, abs=1e-3)
    l1 = ref_lines.by_index(1)
    assert l1.term_lower == (1.0, 2.0, 2.0) and l1.term_upper == (2.0, 2.0, 2.0)
    assert l1.g_lower == pytest.approx(11 / 6) and l1.g_upper == pytest.approx(1.5)
    assert l1.alpha == 0.243 and l1.sigma == 2.335e-14 and l1.loggf == -0.718 and l1.excitation == 3.654
    assert l1.element == "Fe" and l1.z == 26 and l1.ion == 1 and l1.enhancement == 1.0
    assert ref_lines.by_index(8).ion == 2 and ref_lines.by_index(8).term_lower == (1.0, 1.5, 0.5)
    assert ref_lines.by_index(200).alpha == 0.0 and ref_lines.by_index(200).loggf == -0.59
    assert ref_lines[0] is l1  # positional
    with pytest.raises(KeyError):
        ref_lines.by_index(9)


def test_15652_override_and_half_integer_L(ref_lines):
    ln = ref_lines.by_index(4)
    assert ln.term_upper == (3.5, 3.0, 4.0)  # 7k: L = 7/2, S = 3
    assert ln.geff_override == 1.45 and ln.g_eff == 1.45
    z = zeeman_components(ln)
    assert z.pi_shift.tolist() == [0.0] and z.red_shift.tolist() == [-1.45] and z.blue_shift.tolist() == [1.45]
    assert all(ref_lines.by_index(i).geff_override is None for i in (1, 2, 3, 5, 6, 7, 8))


def test_J0_triplet_rules():
    # J_l = 0: g_eff = g(upper) with J = 1; J_u = 0: g(lower) with J = 1
    a = SpectralLine(5, "Fe", 1, 5250.208, 1.0, 0.121, -4.938, (2.0, 2.0, 0.0), (2.0, 3.0, 1.0))
    assert a.is_triplet and a.g_eff == pytest.approx(3.0)
    b = SpectralLine(2, "Fe", 1, 6302.499, 1.0, 3.686, -1.235, (1.0, 2.0, 1.0), (2.0, 2.0, 0.0))
    assert b.is_triplet and b.g_eff == pytest.approx(2.5)
    assert lande_factor(0.0, 0.5, 0.5) == pytest.approx(2.0)
    assert lande_factor(1.0, 0.0, 1.0) == pytest.approx(1.0)


def test_zeeman_normal_triplet_and_anomalous(ref_lines):
    z = zeeman_components(ref_lines.by_index(2))  # 5P1 - 5D0: normal triplet, g = 2.5
    assert z.pi_shift.tolist() == [0.0] and z.pi_strength.tolist() == [1.0]
    assert z.red_shift.tolist() == [-2.5] and z.blue_shift.tolist() == [2.5]
    z = zeeman_components(ref_lines.by_index(1))  # 5P2 - 5D2: anomalous
    for s, w in ((z.pi_shift, z.pi_strength), (z.red_shift, z.red_strength), (z.blue_shift, z.blue_strength)):
        assert w.sum() == pytest.approx(1.0, abs=1e-14)
    assert z.pi_shift.size == 4  # M = 0 -> 0 is forbidden for ΔJ = 0
    np.testing.assert_allclose(sorted(z.pi_strength), [0.1, 0.1, 0.4, 0.4])
    # centre of gravity of the σ groups = ∓ g_eff
    assert np.dot(z.red_shift, z.red_strength) == pytest.approx(-5 / 3)
    assert np.dot(z.blue_shift, z.blue_strength) == pytest.approx(5 / 3)
    np.testing.assert_allclose(z.blue_shift, -z.red_shift[::-1])
    # half-integer J (Fe II 4P0.5 - 4D0.5)
    z = zeeman_components(ref_lines.by_index(8))
    assert z.pi_strength.sum() == pytest.approx(1.0) and z.red_shift.size == 1


def test_wigner3j_values():
    assert wigner3j(1, 1, 1, 0, 0, 0) == 0.0
    assert wigner3j(1, 1, 0, 1, -1, 0) == pytest.approx(1 / np.sqrt(3))
    assert wigner3j(0.5, 0.5, 1, 0.5, -0.5, 0) == pytest.approx(1 / np.sqrt(6))
    assert wigner3j(2, 2, 1, 1, -1, 0) == pytest.approx(-1 / np.sqrt(30)) or \
        wigner3j(2, 2, 1, 1, -1, 0) == pytest.approx(1 / np.sqrt(30))


def test_engine_arrays(ref_lines):
    a = ref_lines.engine_arrays()
    assert set(a) == set(ENGINE_FIELDS)
    assert all(v.dtype == np.float64 and v.shape == (10,) for v in a.values())
    assert a["wavelength"][0] == 6301.508 and a["z"][0] == 26.0 and np.isnan(a["geff_override"][0])
    assert a["geff_override"][3] == 1.45
    m = ref_lines.engine_matrix()
    assert m.shape == (10, len(ENGINE_FIELDS)) and m.flags.c_contiguous


def test_write_read_roundtrip(ref_lines, tmp_path):
    ref_lines.write_sir(tmp_path / "L", header="written by pyinv")
    again = LineList.read_sir(tmp_path / "L")
    assert list(again) == list(ref_lines)


def test_sir_default_style_file(reference_dir):
    ll = LineList.read_sir(reference_dir / "sir_files" / "LINES")
    assert ll.indices == [1, 2, 3, 4, 5, 6, 8]
    assert ll.by_index(2).geff_override == 1.45 and ll.by_index(1).geff_override is None


def test_header_xx_case_and_single_letter(tmp_path):
    text = ("comment line\n======= separator\n"
            "    1=XX 1   6301.5080     1.0    3.65     -0.59    5P 2.0- 5D 2.0  0.  0.\n"
            "    2=fe 1   6302.4990     1.0    3.69     -1.16    5P 1.0- 5D 0.0\n"
            "    3=C  1  10000.0000     1.0    1.00     -1.00    3P 1.0- 3S 1.0\n"
            "    4=Fe 2   6149.2580     1.0    3.889    -2.84    4P 0.5- 4D 0.5  0.  0.\n")
    with pytest.warns(UserWarning, match="iron"):
        ll = _lines(tmp_path, text)
    assert [ln.element for ln in ll] == ["Fe", "Fe", "C", "Fe"]
    assert ll.by_index(2).alpha == 0.0 and ll.by_index(3).g_upper == pytest.approx(2.0)


@pytest.mark.parametrize("row,words", [
    ("  200=QQ 1   6301.5080     1.0    3.65     -0.59    5P 2.0- 5D 2.0\n", [":1", "unknown element", "'QQ'"]),
    ("  200 FE 1   6301.5080     1.0    3.65     -0.59    5P 2.0- 5D 2.0\n", [":1", "malformed"]),
    ("  200=FE 1   6301.5080     1.0    3.65\n", [":1", "malformed LINES row"]),
    ("  200=FE 3   6301.5080     1.0    3.65     -0.59    5P 2.0- 5D 2.0\n", [":1", "ionisation stage"]),
    ("  200=FE 1   6301.5O80     1.0    3.65     -0.59    5P 2.0- 5D 2.0\n", [":1", "wavelength"]),
    ("  200=FE 1   6301.5080     1.0    3.65     -0.59    5[3/2] 2.0- 5D 2.0\n", [":1", "bracket"]),
    ("  200=FE 1   6301.5080     1.0    3.65     -0.59    0P 2.0- 5D 2.0\n", [":1", "multiplicity"]),
    ("  200=FE 1   6301.5080     1.0    3.65     -0.59    5P 2.3- 5D 2.0\n", [":1", "half-integer"]),
])
def test_bad_rows(tmp_path, row, words):
    with pytest.raises(ValueError) as exc:
        _lines(tmp_path, row)
    for w in words:
        assert w in str(exc.value)


def test_numbers_without_decimal_point_read_at_face_value(tmp_path):
    with pytest.warns(UserWarning, match="no decimal point"):
        ll = _lines(tmp_path, "  200=FE 1   6301.5080     1    3.65     -1    5P 2.0- 5D 2\n")
    ln = ll.by_index(200)
    assert ln.loggf == -1.0 and ln.enhancement == 1.0 and ln.term_upper[2] == 2.0


def test_unknown_term_letter_needs_override(tmp_path):
    ll = _lines(tmp_path, "   10=FE 1   5000.0000     1.0    3.00     -1.00    9X 2.0- 9X 3.0\n")
    ln = ll.by_index(10)
    assert not ln.has_terms and np.isnan(ln.g_eff)
    with pytest.raises(ValueError, match="no effective-Lande override"):
        zeeman_components(ln)
    assert zeeman_components(ln.with_geff(1.2)).red_shift.tolist() == [-1.2]


def test_duplicate_index_first_wins(tmp_path):
    with pytest.warns(UserWarning, match="first one is used"):
        ll = _lines(tmp_path, ROW + ROW.replace("-0.59", "-0.99"))
    assert len(ll) == 1 and ll.by_index(200).loggf == -0.59


# ------------------------------------------------------------------ wavelength grid

@pytest.mark.parametrize("name", ["synth_hinode.npz", "synth_gris.npz", "synth_fe5250.npz",
                                  "synth_hinode_unsold.npz", "invert_hinode.npz"])
def test_grid_from_reference_regions(reference_dir, ref_lines, name):
    d = np.load(reference_dir / name, allow_pickle=False)
    regions = json.loads(str(d["regions"]))
    g = WavelengthGrid.from_regions(regions, ref_lines)
    assert g.nwav == d["offset_mA"].size
    np.testing.assert_array_equal(g.line_index, d["line_index"])
    # SIR's single-precision grid, as written with 4 decimals in its profile files
    np.testing.assert_array_equal(np.round(g.offset_mA, 4), d["offset_mA"])
    lam0 = np.array([ref_lines.by_index(i).wavelength for i in d["line_index"]])
    np.testing.assert_allclose(g.wavelength, lam0 + d["offset_mA"] / 1e3, atol=1e-7)


def test_grid_point_count_rule():
    g = WavelengthGrid.from_regions([("1", 0.0, 10.0, 100.0)])
    assert g.nwav == 11
    g = WavelengthGrid.from_regions([([1, 2], 0.0, 10.0, 100.6)])  # frac 0.06 > 0.05 -> one more
    assert g.nwav == 12 and g.regions[0].indices == (1, 2)
    g = WavelengthGrid.from_regions([(1, 0.0, 10.0, 100.4)])  # frac 0.04 -> no extra point
    assert g.nwav == 11
    with pytest.raises(ValueError, match="decimal point"):
        WavelengthGrid.from_regions([("1.0", 0.0, 10.0, 100.0)])


def test_grid_file_read_write(reference_dir, tmp_path):
    lines = LineList.read_sir(reference_dir / "sir_files" / "LINES")
    g = WavelengthGrid.read_sir(reference_dir / "sir_files" / "malla56.grid", lines)
    assert g.nwav == 201 and g.regions[0].indices == (5, 6) and g.offset_mA[-1] == 1500.0
    assert g.wavelength[0] == pytest.approx(5250.208 - 0.5)
    g.write_sir(tmp_path / "g.grid")
    g2 = WavelengthGrid.read_sir(tmp_path / "g.grid", lines)
    assert g2.regions == g.regions and np.array_equal(g2.offset_mA, g.offset_mA)
    (tmp_path / "bad.grid").write_text("5,6 : -500., 10.\n")
    with pytest.raises(ValueError, match="bad.grid:1"):
        WavelengthGrid.read_sir(tmp_path / "bad.grid", lines)
    (tmp_path / "miss.grid").write_text("9 : -500., 10., 500.\n")
    with pytest.raises(ValueError, match="line 9"):
        WavelengthGrid.read_sir(tmp_path / "miss.grid", lines)


def test_grid_from_wavelengths(ref_lines):
    wl = 6301.508 + np.array([-0.1, 0.0, 0.05, 0.2])
    g = WavelengthGrid.from_wavelengths(wl, ref_lines, indices="1,2")
    assert g.nwav == 4 and np.all(g.line_index == 1) and g.regions[0].step is None
    np.testing.assert_allclose(g.offset_mA, [-100.0, 0.0, 50.0, 200.0], atol=1e-8)
    np.testing.assert_allclose(g.wavelength, wl, atol=1e-12)
