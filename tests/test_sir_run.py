"""``pyinv sir CONTROL.trol`` / pyinv.run_sir: SIR control files run as SIR (issue 13).

The complete SIR run in ../shared/reference/sir_files is copied to a temporary folder (../shared is
read-only) and run with its cycles cut for test time."""
from __future__ import annotations

import math
import shutil

import numpy as np
import pytest

import pyinv
from pyinv.cli import main
from pyinv.io.sir import (read_sir_chi, read_sir_model, read_sir_profiles, read_sir_rf, write_sir_model,
                          write_sir_profiles, write_sir_rf)
from pyinv.lines import LineList, WavelengthGrid
from pyinv.sir.dropin import output_base, run_sir

# SIR's .chi of the reference run, row 1 (cycle 1: s/n, chi2)
SIR_CHI_CYCLE1 = (190.1743, 552.6153)


@pytest.fixture
def run_dir(reference_dir, tmp_path, engine):
    src = reference_dir / "sir_files"
    if not src.is_dir():
        pytest.skip("../shared/reference/sir_files absent")
    d = tmp_path / "run"
    shutil.copytree(src, d)
    for f in d.iterdir():
        f.chmod(0o644)
        if f.name.startswith("model2_3") or f.suffix == ".chi":
            f.unlink()  # SIR's own outputs: the run must write its own
    return d


def _edit(trol, changes: dict[int, str], name: str | None = None):
    """Rewrite lines (1-based) of a control file: the value after ':' replaced."""
    lines = trol.read_text().splitlines()
    for k, v in changes.items():
        lines[k - 1] = lines[k - 1].split(":", 1)[0] + ":" + v
    out = trol if name is None else trol.with_name(name)
    out.write_text("\n".join(lines) + "\n")
    return out


# --------------------------------------------------------------------------------------- inversion
def test_inversion_two_cycles_writes_sir_outputs(run_dir):
    trol = _edit(run_dir / "sir.trol", {1: "2"})
    run = run_sir(trol)
    assert run.mode == "inversion"
    for c in (1, 2):
        m = read_sir_model(run_dir / f"model2_{c}.mod")
        assert m.ndep == 61 and m.Pg is not None and m.rho is not None
        assert (m.macro, m.filling, m.stray) == (2.0, 1.0, 0.0)   # one component, vmac not inverted
        e = read_sir_model(run_dir / f"model2_{c}.err")
        assert (e.macro, e.filling, e.stray) == (0.0, 0.0, 0.0)    # SIR: header line zeros
        assert np.all(np.isfinite(e.T)) and np.any(e.T > 0)
        p = read_sir_profiles(run_dir / f"model2_{c}.per")
        obs = read_sir_profiles(run_dir / "model1.per")
        np.testing.assert_array_equal(p.line_index, obs.line_index)
        np.testing.assert_allclose(p.offset_mA, obs.offset_mA, atol=1e-4)
        np.testing.assert_allclose(p.stokes, run.results[c - 1].fit, rtol=1e-6, atol=1e-12)
    # the pressure boundary of line 39 (500 dyn/cm2 at the top) was honoured
    assert read_sir_model(run_dir / "model2_2.mod").Pg[-1] == pytest.approx(500.0, rel=1e-3)
    chi = read_sir_chi(run_dir / "sir.chi")
    assert chi.shape == (2, 2) and np.all(np.isfinite(chi))
    assert chi[1, 1] < chi[0, 1]
    # cycle 1 from the same guess and data as SIR's: same printed χ² and s/n within 1 %
    assert chi[0, 1] == pytest.approx(SIR_CHI_CYCLE1[1], rel=0.01)
    assert chi[0, 0] == pytest.approx(SIR_CHI_CYCLE1[0], rel=0.02)
    assert (run_dir / "sir.log").is_file()
    assert not (run_dir / "model2_3.mod").exists()


def test_cycle_offset_from_guess_name(run_dir):
    shutil.copy(run_dir / "model2.mod", run_dir / "guess_2.mod")
    trol = _edit(run_dir / "sir.trol", {1: "1", 8: "guess_2.mod"})
    run_sir(trol)
    assert (run_dir / "guess_3.mod").is_file() and (run_dir / "guess_3.per").is_file()
    assert output_base("a/b.c_d_7.mod")[1] == 7 and output_base("a/b.c_d_7.mod")[0].name == "b.c_d"


def test_cli_runs_and_exits_2_on_bad_input(run_dir, capsys):
    trol = _edit(run_dir / "sir.trol", {1: "1"})
    assert main(["sir", str(trol)]) == 0
    assert "cycle 1" in capsys.readouterr().out
    sir_chi = read_sir_chi(run_dir / "sir.chi")
    assert main(["sir", "--pyinv-rules", str(trol)]) == 0    # invert_pixel's own stopping rule: also runs
    assert "cycle 1" in capsys.readouterr().out
    assert read_sir_chi(run_dir / "sir.chi")[0, 1] == pytest.approx(sir_chi[0, 1], rel=0.05)
    bad = _edit(run_dir / "sir.trol", {8: "nosuch.mod"}, name="bad.trol")
    assert main(["sir", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "nosuch.mod" in err and "Initial guess model 1" in err and "Traceback" not in err
    assert main(["sir", str(run_dir / "absent.trol")]) == 2
    assert "absent.trol" in capsys.readouterr().err


# --------------------------------------------------------------------------------------- synthesis
def _setup(run_dir):
    lines = LineList.read_sir(run_dir / "LINES")
    grid = WavelengthGrid.read_sir(run_dir / "malla56.grid", lines)
    return lines, grid


def test_synthesis_mode_reproduces_synthesize(run_dir):
    trol = _edit(run_dir / "sir.trol", {1: "0", 2: "syn.per"}, name="syn.trol")
    run = run_sir(trol)
    assert run.mode == "synthesis"
    lines, grid = _setup(run_dir)
    ref = pyinv.synthesize(read_sir_model(run_dir / "model2.mod"), lines, grid, abundances=run_dir / "THEVENIN")
    p = read_sir_profiles(run_dir / "syn.per")
    np.testing.assert_allclose(p.offset_mA, grid.offset_mA, atol=1e-4)
    np.testing.assert_allclose(p.stokes, ref, rtol=6e-7, atol=1e-12)


def test_synthesis_two_components_stray_and_ratio(run_dir):
    lines, grid = _setup(run_dir)
    m1 = read_sir_model(run_dir / "model2.mod").with_columns(stray=20.0)
    write_sir_model(run_dir / "c1.mod", m1)
    m2 = read_sir_model(run_dir / "model1.mod").with_columns(filling=0.3, macro=1.0)
    write_sir_model(run_dir / "c2.mod", m2)
    stray = pyinv.synthesize(m1.with_columns(B=0.0), lines, grid, abundances=run_dir / "THEVENIN")
    write_sir_profiles(run_dir / "stray.per", grid.line_index, grid.offset_mA, stray)
    trol = _edit(run_dir / "sir.trol", {1: "0", 2: "mix.per", 3: "stray.per", 8: "c1.mod", 9: "c2.mod", 13: "-1"},
                 name="mix.trol")
    with pytest.warns(UserWarning) as rec:
        run_sir(trol)
    msgs = " ".join(str(w.message) for w in rec)
    assert "model 2's f2 = 0.3 is used" in msgs and "model 1's is used" in msgs   # SIR's header rules
    st = read_sir_profiles(run_dir / "stray.per").stokes
    ref = pyinv.synthesize(read_sir_model(run_dir / "c1.mod"), lines, grid, abundances=run_dir / "THEVENIN",
                           atmos2=read_sir_model(run_dir / "c2.mod"), filling=0.3, stray_profile=st,
                           stray=20.0)
    got = read_sir_profiles(run_dir / "mix.per").stokes
    np.testing.assert_allclose(got[:3], ref[:3], rtol=6e-7, atol=1e-12)
    np.testing.assert_allclose(got[3], ref[3] / ref[0], rtol=6e-7, atol=1e-12)  # negative V weight: V/I


# --------------------------------------------------------------------------------------- RF mode
def test_rf_mode_files(run_dir):
    trol = _edit(run_dir / "sir.trol", {1: "-1", 2: "rf.per", 14: "0", 15: "1", 18: "1", 19: "0", 20: "1", 21: "0",
                                        22: "1"}, name="rf.trol")
    run = run_sir(trol)
    assert run.mode == "rf"
    names = sorted(f.name for f in run.outputs)
    assert names == sorted(["rf.per", "rf.log", "model2.rt", "model2.rh", "model2.rinc", "model2.rmac"])
    lines, grid = _setup(run_dir)
    m = read_sir_model(run_dir / "model2.mod")
    ref = pyinv.response_functions(m, lines, grid, abundances=run_dir / "THEVENIN")
    nw = grid.nwav
    rt = read_sir_rf(run_dir / "model2.rt")
    assert rt.shape == (61, 4 * nw)
    # T with P_e in hydrostatic equilibrium (no P_e nodes), depth-major, Stokes-major within a depth
    scale = np.abs(ref["T_he"]).max()
    np.testing.assert_allclose(rt, ref["T_he"].reshape(61, 4 * nw), rtol=0, atol=1e-6 * scale)
    rinc = read_sir_rf(run_dir / "model2.rinc")
    np.testing.assert_allclose(rinc, ref["gamma"].reshape(61, 4 * nw) * 180 / math.pi, rtol=0,
                               atol=1e-6 * np.abs(rinc).max())
    assert read_sir_rf(run_dir / "model2.rh").shape == (61, 4 * nw)
    assert read_sir_rf(run_dir / "model2.rmac").shape == (1, 4 * nw)
    p = read_sir_profiles(run_dir / "rf.per")
    np.testing.assert_allclose(p.stokes, ref["stokes"], rtol=6e-7, atol=1e-12)


def test_rf_file_roundtrip(tmp_path):
    a = np.arange(12.0).reshape(3, 4) * 1e-3 - 4e-3
    write_sir_rf(tmp_path / "x.rt", a)
    np.testing.assert_allclose(read_sir_rf(tmp_path / "x.rt"), a, rtol=1e-7)
    (tmp_path / "y.rt").write_text(" 3 4\n 1.0 2.0\n")
    with pytest.raises(ValueError, match="y.rt.*3 x 4"):
        read_sir_rf(tmp_path / "y.rt")


# --------------------------------------------------------------------------------------- refusals
@pytest.mark.parametrize("changes, match", [
    ({1: "-2"}, r"line 1 \(Number of cycles\) = -2"),
    ({1: "1.5"}, r"Number of cycles.*'1\.5'"),
    ({8: "nosuch.mod"}, r"line 8 \(Initial guess model 1\) = 'nosuch.mod'.*not found"),
    ({3: "nosuch.per"}, r"line 3 \(Stray light file\) = 'nosuch.per'.*not found"),
    ({5: "nosuch.grid"}, r"line 5 \(Wavelength grid file\) = 'nosuch.grid'"),
    ({6: "nosuch"}, r"line 6 \(Atomic parameters file\)"),
    ({7: "nosuch"}, r"line 7 \(Abundances file\)"),
    ({4: "nosuch.psf"}, r"line 4 \(PSF file\)"),
    ({42: "nosuch.dep"}, r"line 42 \(NLTE Departures filename\)"),
    ({1: "1", 32: "1"}, r"line 32 \(Invert stray light factor\) = 1.*stray-light file"),
    ({1: "1", 31: "1"}, r"line 31 \(Invert filling factor\) = 1.*model 2"),
    ({1: "1", 23: "2"}, r"line 23 \(nodes of model 2, T\) = 2.*no model 2"),
    ({1: "1", 10: "0", 11: "0", 12: "0", 13: "0"}, r"cycle 1 could not start"),   # nothing fitted
    # settings invert_pixel refuses (issue 13), named with their value and the cycle
    ({1: "2", 13: "10,-10"}, r"sir.trol: weights=\(1.0, 5.0, 5.0, -10.0\) \(cycle 2\).*negative weights"),
    ({1: "1", 35: "1.2"}, r"sir.trol: contrast=1.2: the continuum contrast"),
    ({1: "1", 10: "1", 15: "2,3,5,*"}, None),  # control: a valid edit runs
    ({1: "1", 38: "3"}, None),   # regularised interpolation (issue 13): runs
])
def test_refused_fields(run_dir, changes, match):
    trol = _edit(run_dir / "sir.trol", changes)
    if match is None:
        run_sir(trol)
        return
    with pytest.raises(ValueError, match=match):
        run_sir(trol)


def test_bad_model2_grid_and_headers(run_dir):
    m = read_sir_model(run_dir / "model2.mod")
    write_sir_model(run_dir / "short.mod", pyinv.Atmosphere.from_array(m.to_array()[:-5], filling=0.4))
    trol = _edit(run_dir / "sir.trol", {1: "1", 9: "short.mod"})
    with pytest.raises(ValueError, match=r"short.mod: the log tau grid of model 2 \(56 points"):
        run_sir(trol)
    write_sir_model(run_dir / "f2.mod", m.with_columns(filling=1.5))
    with pytest.raises(ValueError, match=r"f2.mod: header filling factor f2 = 1.5 is outside \[0, 1\]"):
        run_sir(_edit(trol, {9: "f2.mod"}))
    write_sir_model(run_dir / "f0.mod", m.with_columns(filling=0.0))
    with pytest.raises(ValueError, match=r"f0.mod: header filling factor f2 = 0.0 is outside \(0, 1\)"):
        run_sir(_edit(trol, {9: "f0.mod", 31: "1"}))   # inverting f2 needs 0 < f2 < 1


def test_bad_stray_light(run_dir):
    lines, grid = _setup(run_dir)
    st = np.zeros((4, grid.nwav))
    st[0] = 1.0
    write_sir_profiles(run_dir / "shift.per", grid.line_index, grid.offset_mA + np.where(np.arange(grid.nwav) == 7,
                                                                                          2.0, 0.0), st)
    trol = _edit(run_dir / "sir.trol", {1: "0", 2: "o.per", 3: "shift.per"})
    with pytest.raises(ValueError, match=r"stray-light file .*shift.per: row 8 .*-428.0000 mÅ.*-430.0000 mÅ"):
        run_sir(trol)
    write_sir_profiles(run_dir / "ok.per", grid.line_index, grid.offset_mA + 0.5, st)  # within 1 mÅ: accepted
    write_sir_model(run_dir / "a.mod", read_sir_model(run_dir / "model2.mod").with_columns(stray=150.0))
    with pytest.raises(ValueError, match=r"a.mod: header stray-light fraction alpha \[%\] = 150.0 is outside"):
        run_sir(_edit(trol, {3: "ok.per", 8: "a.mod"}))
    write_sir_model(run_dir / "a.mod", read_sir_model(run_dir / "model2.mod").with_columns(stray=10.0))
    run_sir(_edit(trol, {3: "ok.per", 8: "a.mod"}))
    assert (run_dir / "o.per").is_file()


def test_map_mode(run_dir):
    """A FITS cube as observed profiles: pyinv.invert over the map, with a second component and a stray-light
    file taken from the control file (f₂ from model 2's header, α from model 1's)."""
    pytest.importorskip("astropy")
    from pyinv.io.fits import write_stokes_cube

    lines, grid = _setup(run_dir)
    obs = read_sir_profiles(run_dir / "model1.per").stokes
    write_stokes_cube(run_dir / "obs.fits", np.stack([obs, obs])[None], grid.wavelength)
    trol = _edit(run_dir / "sir.trol", {1: "1", 2: "obs.fits"})
    write_stokes_cube(run_dir / "shifted.fits", np.stack([obs, obs])[None], grid.wavelength + 0.01)
    with pytest.raises(ValueError, match=r"shifted.fits: wavelength 0 is .*more than 1 mÅ"):
        run_sir(_edit(trol, {2: "shifted.fits"}, name="shifted.trol"))
    run = run_sir(trol, workers=1)
    assert run.mode == "map" and run.outputs[0].name == "model2_1.fits"
    res = pyinv.InversionResult.from_fits(run.outputs[0])
    assert np.asarray(res.chi2).shape[:2] == (1, 2)
    # two components and stray light
    m = read_sir_model(run_dir / "model2.mod")
    write_sir_model(run_dir / "c1.mod", m.with_columns(stray=10.0))
    write_sir_model(run_dir / "c2.mod", m.with_columns(B=0.0, filling=0.3))
    st = np.zeros((4, grid.nwav))
    st[0] = 1.0
    write_sir_profiles(run_dir / "st.per", grid.line_index, grid.offset_mA, st)
    run = run_sir(_edit(trol, {3: "st.per", 8: "c1.mod", 9: "c2.mod", 23: "1"}, name="two.trol"), workers=1)
    res = pyinv.InversionResult.from_fits(run.outputs[0])
    assert np.allclose(res.filling2, 0.3) and np.allclose(res.stray, 10.0)
    assert res.atmospheres2 is not None and np.all(np.asarray(res.status) == 0)


# --------------------------------------------------------------------------------------- two components
def test_inversion_stray_light_headers(run_dir):
    lines, grid = _setup(run_dir)
    m = read_sir_model(run_dir / "model2.mod")
    obs = read_sir_profiles(run_dir / "model1.per")
    st = np.zeros((4, grid.nwav))
    st[0] = obs.stokes[0].max()
    write_sir_profiles(run_dir / "stray.per", obs.line_index, obs.offset_mA, st)
    write_sir_model(run_dir / "g.mod", m.with_columns(stray=30.0))
    trol = _edit(run_dir / "sir.trol", {1: "1", 3: "stray.per", 8: "g.mod", 32: "1"})
    run_sir(trol)
    out = read_sir_model(run_dir / "g_1.mod")
    assert out.filling == 1.0 and 0.0 < out.stray < 100.0


def test_rf_mode_two_components_and_stray(run_dir):
    lines, grid = _setup(run_dir)
    m1 = read_sir_model(run_dir / "model2.mod").with_columns(filling=0.7, stray=20.0)
    m2 = read_sir_model(run_dir / "model1.mod").with_columns(filling=0.3, stray=20.0)
    write_sir_model(run_dir / "c1.mod", m1)
    write_sir_model(run_dir / "c2.mod", m2)
    st = pyinv.synthesize(m1.with_columns(B=0.0), lines, grid, abundances=run_dir / "THEVENIN")
    write_sir_profiles(run_dir / "stray.per", grid.line_index, grid.offset_mA, st)
    trol = _edit(run_dir / "sir.trol", {1: "-1", 2: "rf.per", 3: "stray.per", 8: "c1.mod", 9: "c2.mod", 14: "0",
                                        15: "0", 18: "1", 19: "0", 20: "0", 21: "0", 27: "1", 31: "1", 32: "1"},
                 name="rf2.trol")
    run = run_sir(trol)
    assert sorted(f.name for f in run.outputs if f.suffix.startswith(".r") and f.suffix != ".rf") == \
        ["c1.rff", "c1.rh", "c1.rstl", "c2.rvz"]
    st = read_sir_profiles(run_dir / "stray.per").stokes
    ref = pyinv.response_functions(read_sir_model(run_dir / "c1.mod"), lines, grid, abundances=run_dir / "THEVENIN",
                                   atmos2=read_sir_model(run_dir / "c2.mod"), filling=0.3, stray_profile=st,
                                   stray=20.0)
    nw = grid.nwav
    for name, key in (("c1.rff", "filling"), ("c1.rstl", "stray")):
        a = read_sir_rf(run_dir / name)
        assert a.shape == (1, 4 * nw)
        np.testing.assert_allclose(a[0], ref[key].ravel(), rtol=0, atol=1e-6 * np.abs(ref[key]).max())
    rvz2 = read_sir_rf(run_dir / "c2.rvz")
    np.testing.assert_allclose(rvz2, ref["vlos_2"].reshape(61, 4 * nw), rtol=0, atol=1e-6 * np.abs(rvz2).max())
    np.testing.assert_allclose(read_sir_profiles(run_dir / "rf.per").stokes, ref["stokes"], rtol=6e-7, atol=1e-12)
    with pytest.warns(UserWarning, match="single-component"), \
            pytest.raises(ValueError, match=r"line 31 \(Invert filling factor\) = 1.*model 2"):
        run_sir(_edit(trol, {9: "", 27: "0"}))


def test_empty_lines_and_abundance_fields_use_packaged_defaults(run_dir):
    trol = _edit(run_dir / "sir.trol", {1: "0", 2: "d.per", 6: "", 7: ""}, name="d.trol")
    run_sir(trol)
    lines = pyinv.default_lines()
    grid = WavelengthGrid.read_sir(run_dir / "malla56.grid", lines)
    ref = pyinv.synthesize(read_sir_model(run_dir / "model2.mod"), lines, grid)
    np.testing.assert_allclose(read_sir_profiles(run_dir / "d.per").stokes, ref, rtol=6e-7, atol=1e-12)


def test_inversion_two_components_headers(run_dir):
    m = read_sir_model(run_dir / "model2.mod")
    write_sir_model(run_dir / "a1.mod", m.with_columns(filling=0.6))
    write_sir_model(run_dir / "a2.mod", m.with_columns(B=0.0, filling=0.4))
    trol = _edit(run_dir / "sir.trol", {1: "1", 8: "a1.mod", 9: "a2.mod", 23: "1", 27: "1", 31: "1"})
    run = run_sir(trol)
    h1, h2 = read_sir_model(run_dir / "a1_1.mod"), read_sir_model(run_dir / "a2_1.mod")
    assert 0.0 < h2.filling < 1.0 and h1.filling == pytest.approx(1.0 - h2.filling, abs=1e-6)
    assert h1.stray == 0.0 and (run_dir / "a2_1.err").is_file()
    assert np.isfinite(run.chi).all()
