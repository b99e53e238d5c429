"""RH 2 backend: output readers on the reference run (../shared/reference/rh_falc_caii), configuration
errors, and live runs that need an RH 2 build named by PYINV_RH_DIR (skipped otherwise)."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest

import pyinv
from pyinv import nlte
from pyinv.nlte import rh_io
from pyinv.nlte.backend import NLTE_CONVERGED, NLTE_CRASHED, NLTE_NOT_CONVERGED, NLTE_TIMEOUT
from pyinv.nlte.rh import RH_ENV, find_rh_dir


@pytest.fixture(scope="module")
def rh_ref(reference_dir) -> Path:
    d = reference_dir / "rh_falc_caii"
    if not d.is_dir():
        pytest.skip("../shared/reference/rh_falc_caii is not present")
    return d


def test_readers_on_reference_run(rh_ref):
    geo = rh_io.read_geometry(rh_ref / "geometry.out")
    assert (geo.nrays, geo.ndep) == (5, 82)
    assert np.all(np.diff(geo.mu) > 0) and geo.weights.sum() == pytest.approx(1.0, abs=1e-6)
    assert np.all(np.diff(geo.tau_ref) > 0)                       # top first
    k = np.argmin(np.abs(np.log10(geo.tau_ref)))
    assert abs(geo.height[k]) < 100e3                              # height zero near tau500 = 1 [m]
    spec = rh_io.read_spectrum(rh_ref / "spectrum.out", geo.nrays)
    assert spec.wavelength.size == 291 and spec.vacuum_to_air
    assert spec.air_limit == pytest.approx(200.0)
    assert spec.Q is not None and spec.I.shape == (291, 5)
    ray = rh_io.read_ray(rh_ref / "spectrum_1.00", spec.wavelength.size, geo.ndep)
    assert ray.mu == pytest.approx(1.0)
    # solveray's mu = 1 ray: a deep Ca II 8542 core and the V signal of the 500 G field
    s = ray.stokes()
    assert s.shape == (4, 291) and np.all(s[0] > 0)
    w = (spec.wavelength > 853.5) & (spec.wavelength < 854.8)
    core = np.argmin(np.where(w, s[0], np.inf))
    assert spec.wavelength[core] == pytest.approx(854.21, abs=0.03)  # air, Ca II 8542
    wing = s[0][w].max()
    assert 0.1 < s[0][core] / wing < 0.35
    assert np.abs(s[3][w]).max() / wing > 0.01
    pops = rh_io.read_pops(rh_ref / "pops.CA.out")
    assert pops.atmos_id.strip() == "FALC_82" and pops.n.shape == (6, 82)
    b = pops.b
    assert np.allclose(b[:, -1], 1.0, atol=0.02)                   # LTE at the bottom
    assert b[2].max() > 2.0                                        # 3d 2D5/2 overpopulated higher up


def test_log_parser_on_reference_run(rh_ref, tmp_path):
    log = rh_io.read_log(rh_ref / "rh.log")
    assert log.iterations == 17
    assert log.delta["CA"] == pytest.approx(7.8911e-3)
    assert log.errors == []
    assert rh_io.read_log(tmp_path / "absent.log").iterations == 0


def test_small_input_writers(tmp_path):
    wl = np.linspace(853.0, 855.0, 11)
    rh_io.write_wavetable(tmp_path / "w", wl)
    assert (tmp_path / "w").stat().st_size == 4 + 8 * 11
    assert rh_io.read_wavetable(tmp_path / "w") == pytest.approx(wl)
    rh_io.write_keywords(tmp_path / "k", {"NRAYS": 5, "VACUUM_TO_AIR": False})
    assert "NRAYS = 5" in (tmp_path / "k").read_text()
    assert "VACUUM_TO_AIR = FALSE" in (tmp_path / "k").read_text()
    with pytest.raises(ValueError, match="spaces"):
        rh_io.write_keywords(tmp_path / "k", {"ATMOS_FILE": "a b"})
    rh_io.write_ray_input(tmp_path / "r", 1.0)
    assert (tmp_path / "r").read_text().split() == ["1.000000", "0"]


def test_configuration_errors_name_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.delenv(RH_ENV, raising=False)
    with pytest.raises(nlte.NlteConfigurationError, match=RH_ENV):
        find_rh_dir()
    (tmp_path / "rhf1d").mkdir()
    with pytest.raises(nlte.NlteConfigurationError, match="rhf1d/rhf1d"):
        find_rh_dir(tmp_path)
    for exe in ("rhf1d", "solveray"):
        p = tmp_path / "rhf1d" / exe
        p.write_text("#!/bin/sh\nexit 0\n")
        p.chmod(0o755)
    with pytest.raises(nlte.NlteConfigurationError, match="Atoms"):
        find_rh_dir(tmp_path)
    (tmp_path / "Atoms").mkdir()
    (tmp_path / "Molecules").mkdir()
    assert find_rh_dir(tmp_path) == tmp_path.resolve()
    monkeypatch.setenv(RH_ENV, str(tmp_path))
    with pytest.raises(nlte.NlteConfigurationError, match="abundance.input"):
        nlte.RH(nlte.level_map(pyinv.default_lines(), [8]))


def _fake_rh(root: Path) -> Path:
    """An RH build's layout with stand-in executables (exit 0, write nothing) and empty data files: enough
    for the backend to write its inputs (RH itself is not run)."""
    from pyinv.nlte.rh import DEFAULT_MOLECULES, DEFAULT_PASSIVE_ATOMS

    (root / "rhf1d").mkdir(parents=True)
    for exe in ("rhf1d", "solveray"):
        p = root / "rhf1d" / exe
        p.write_text("#!/bin/sh\nexit 0\n")
        p.chmod(0o755)
    atoms, mols = root / "Atoms", root / "Molecules"
    atoms.mkdir()
    mols.mkdir()
    for name in ("abundance.input", "pf_Kurucz.input", "Barklem_spdata.dat", "Barklem_pddata.dat",
                 "Barklem_dfdata.dat"):
        (atoms / name).write_text("")
    for a in (*DEFAULT_PASSIVE_ATOMS, "CaII"):
        (atoms / f"{a}.atom").write_text(f"# stand-in\n{a.upper()}\n")
    for m in DEFAULT_MOLECULES:
        (mols / f"{m}.molecule").write_text("")
    return root


def _written_keywords(be, col, wl, pixel_id) -> dict:
    r = be.run_column(col, wl, pixel_id=pixel_id)
    assert r.status == NLTE_CRASHED                               # the stand-ins write no output
    text = (be.workdir / "px" / pixel_id / "keyword.input").read_text()
    return dict(line.split(" = ") for line in text.splitlines() if " = " in line)


def test_stokes_mode_keywords(tmp_path):
    """RH(stokes="full") writes FULL_STOKES with the DELO_PARABOLIC polarised solver (RH 2's default
    DELO_BEZIER3 gives a Ca II 8542 core ~35 % too deep there), unless the keywords name a solver; the
    default is FIELD_FREE without a solver keyword; a column without a field gets neither."""
    rh_dir = _fake_rh(tmp_path / "rh")
    lm = nlte.level_map(pyinv.default_lines(), [8])
    wl = np.linspace(854.2, 854.6, 5)
    col = pyinv.nlte.column_from_atmosphere(pyinv.models.hsra(B=500.0, gamma=45.0))
    free = dataclasses.replace(col, B=None, gamma=None, chi=None)

    def kw(**opts):
        be = nlte.RH(lm, rh_dir=rh_dir, workdir=tmp_path / "w", lte=False, keep=True, **opts)
        return _written_keywords(be, col, wl, f"p{len(opts)}{sorted(opts)}".replace(" ", "").replace("'", ""))

    default = kw()
    assert default["STOKES_MODE"] == "FIELD_FREE" and "S_INTERPOLATION_STOKES" not in default
    full = kw(stokes="full")
    assert full["STOKES_MODE"] == "FULL_STOKES" and full["S_INTERPOLATION_STOKES"] == "DELO_PARABOLIC"
    assert full["STOKES_INPUT"] == "field.B"
    asked = kw(stokes="full", keywords={"S_INTERPOLATION_STOKES": "DELO_BEZIER3"})
    assert asked["S_INTERPOLATION_STOKES"] == "DELO_BEZIER3"
    via_keywords = kw(keywords={"STOKES_MODE": "FULL_STOKES"})
    assert via_keywords["S_INTERPOLATION_STOKES"] == "DELO_PARABOLIC"
    be = nlte.RH(lm, rh_dir=rh_dir, workdir=tmp_path / "w", lte=False, keep=True, stokes="full")
    none = _written_keywords(be, free, wl, "free")
    assert "STOKES_MODE" not in none and "S_INTERPOLATION_STOKES" not in none
    with pytest.raises(ValueError, match="stokes"):
        nlte.RH(lm, rh_dir=rh_dir, stokes="polarised")


_STAND_IN_ATOM = """# stand-in Ca II atom: levels, two line records and a continuum record in RH's layout
  CA
    6  2  1  0
  4   2  5.0E-02   VOIGT  40     ASYMM    3.0   100.0  UNSOLD   1.5  0.0  1.5  0.0   2.00E08  -1.0E-06
  3   1  5.0E-02   VOIGT  40     ASYMM    3.0   100.0  UNSOLD   1.5  0.0  1.5  0.0   2.00E08  -1.0E-06
  5   2  1.0E-18  20  HYDROGENIC  150.0
"""


def test_line_broadening_atom_copy(tmp_path):
    """RH(line_broadening=lines): the mapped line's record in a copy of the atom file gets the engine's damping
    (ABO sigma/a0^2, alpha; gamma_rad = 0.22233/lambda^2; no Stark), the other records and the user's file stay
    as they were, and atoms.input names the copy."""
    from pyinv.nlte.backend import engine_broadening
    from pyinv.nlte.rh import with_line_damping

    lines = pyinv.default_lines()
    lm = nlte.level_map(lines, [8])
    (sig, alp) = (lines.by_index(8).sigma, lines.by_index(8).alpha)
    damp = engine_broadening(lm, lines)
    assert len(damp) == 1 and damp[0][:3] == ("CaII", 2, 4)
    assert damp[0][3] == pytest.approx(sig / 2.80028e-17) and damp[0][4] == alp
    assert damp[0][6] == pytest.approx(0.22233 / (854.444e-7) ** 2, rel=1e-4)
    text = with_line_damping(_STAND_IN_ATOM, [d[1:] for d in damp])
    old, new = _STAND_IN_ATOM.splitlines(), text.splitlines()
    changed = [k for k in range(len(old)) if old[k] != new[k]]
    assert changed == [3]
    tok = new[3].split()
    assert tok[:8] == old[3].split()[:8] and tok[8] == "ABO_EXPL"
    assert float(tok[9]) == pytest.approx(sig / 2.80028e-17, rel=1e-6) and float(tok[10]) == alp
    assert float(tok[13]) == pytest.approx(damp[0][6], rel=1e-6) and float(tok[14]) == 0.0
    with pytest.raises(nlte.NlteConfigurationError, match="4 -> 3"):
        with_line_damping(_STAND_IN_ATOM, [(3, 4, 100.0, 0.3, 1.0, 1e8)])
    # Unsöld where the list has no ABO data
    uns = with_line_damping(_STAND_IN_ATOM, [(2, 4, 0.0, 0.0, 2.0, 1e8)]).splitlines()[3].split()
    assert uns[8:13] == ["UNSOLD", "2.0000", "0.00", "2.0000", "0.00"]

    rh_dir = _fake_rh(tmp_path / "rh")
    (rh_dir / "Atoms" / "CaII.atom").write_text(_STAND_IN_ATOM)
    col = pyinv.nlte.column_from_atmosphere(pyinv.models.hsra())
    be = nlte.RH(lm, rh_dir=rh_dir, workdir=tmp_path / "w", lte=False, keep=True, line_broadening=lines)
    _written_keywords(be, col, np.linspace(854.2, 854.6, 5), "b")
    rows = (be.workdir / "px" / "b" / "atoms.input").read_text().splitlines()
    active = [r for r in rows if "ACTIVE" in r]
    assert len(active) == 1 and active[0].split()[0].startswith(str(be.workdir / "atoms"))
    assert Path(active[0].split()[0]).read_text() == text
    assert (rh_dir / "Atoms" / "CaII.atom").read_text() == _STAND_IN_ATOM
    plain = nlte.RH(lm, rh_dir=rh_dir, workdir=tmp_path / "w2", lte=False, keep=True)
    _written_keywords(plain, col, np.linspace(854.2, 854.6, 5), "p")
    rows = (plain.workdir / "px" / "p" / "atoms.input").read_text().splitlines()
    assert [r.split()[0] for r in rows if "ACTIVE" in r] == [str(rh_dir / "Atoms" / "CaII.atom")]


# ------------------------------------------------------------------------------------------ live RH
def _rh_dir() -> str:
    d = os.environ.get(RH_ENV)
    if not d:
        pytest.skip(f"RH 2 not available: set {RH_ENV} to an RH 2 build to run this test")
    return d


@pytest.fixture(scope="module")
def caii():
    lines = pyinv.default_lines()
    grid = pyinv.WavelengthGrid.from_regions([(8, -1500, 30, 1500)], lines)
    return lines, grid, nlte.level_map(lines, [8]), nlte.grid_vacuum_nm(lines, grid)


def test_rh_falc_caii_live(caii, tmp_path):
    rh_dir = _rh_dir()
    lines, grid, lm, wl = caii
    col = nlte.read_multi_atmosphere(Path(rh_dir) / "Atmos" / "FALC_82.atmos").with_field(500.0, 45.0)
    be = nlte.RH(lm, rh_dir=rh_dir, workdir=tmp_path)
    r = be.run_column(col, wl, pixel_id="falc")
    assert r.status == NLTE_CONVERGED, r.message
    assert r.delta <= 1e-3 and r.iterations > 3
    assert r.wavelength == pytest.approx(wl, rel=1e-12)            # the wavetable points come back
    I = r.stokes[0]
    assert 0.2 < I.min() / I[0] < 0.4                              # the NLTE core
    assert 0.6 < r.stokes_lte[0].min() / r.stokes_lte[0][0] < 0.8  # LTE: the chromosphere shows in emission
    assert np.abs(r.stokes[3]).max() / I[0] > 0.01
    d = r.departures
    assert d.lines == (8,) and d.b_lower[0].max() > 2.0
    assert not any((tmp_path / "px").iterdir())                   # sandboxes removed
    assert (tmp_path / "Atoms").is_symlink()


def test_rh_sir_model_and_failures_live(caii, tmp_path):
    rh_dir = _rh_dir()
    lines, grid, lm, wl = caii
    atm = pyinv.models.hsra(B=1000.0, gamma=30.0, vlos=2e5)
    be = nlte.RH(lm, rh_dir=rh_dir, workdir=tmp_path, lte=False)
    r = be.synthesize(atm, wl)
    assert r.status == NLTE_CONVERGED, r.message
    assert r.departures.log_tau == pytest.approx(atm.log_tau)      # b on the model's grid
    # a redshift moves the core to the red
    r0 = be.synthesize(pyinv.models.hsra(B=1000.0, gamma=30.0), wl)
    assert wl[np.argmin(r.stokes[0])] > wl[np.argmin(r0.stokes[0])]
    slow = nlte.RH(lm, rh_dir=rh_dir, workdir=tmp_path, lte=False, n_max_iter=1)
    r1 = slow.synthesize(atm, wl)
    assert r1.status == NLTE_NOT_CONVERGED and "ITER_LIMIT" in r1.message
    assert np.all(np.isfinite(r1.stokes))
    r2 = be.synthesize(atm, wl, time_limit=0.01)
    assert r2.status == NLTE_TIMEOUT
    broken = nlte.RH(lm, rh_dir=rh_dir, workdir=tmp_path, lte=False, keywords={"ATOMS_FILE": "missing.input"})
    r3 = broken.synthesize(atm, wl)
    assert r3.status == NLTE_CRASHED and "exited with status" in r3.message
    T = atm.T.copy()
    T[-5:] = 50.0                                                  # far below the atom's tables
    r4 = be.synthesize(atm.with_columns(T=T), wl)
    assert r4.status == NLTE_CRASHED and "rhf1d" in r4.message
    assert not any((tmp_path / "px").iterdir())
    # without a workdir the backend makes its own temporary folder and removes it (not its pickled copies)
    import pickle

    own = nlte.RH(lm, rh_dir=rh_dir, lte=False)
    assert own.synthesize(atm, wl).status == NLTE_CONVERGED
    wd = own.workdir
    copy = pickle.loads(pickle.dumps(own))
    del copy
    assert wd.is_dir() and not any((wd / "px").iterdir())
    own.close()
    assert not wd.exists()


def _full_vs_field_free(caii, tmp_path, B):
    rh_dir = _rh_dir()
    lines, grid, lm, wl = caii
    col = nlte.read_multi_atmosphere(Path(rh_dir) / "Atmos" / "FALC_82.atmos").with_field(B, 45.0)
    ff = nlte.RH(lm, rh_dir=rh_dir, workdir=tmp_path, lte=False).run_column(col, wl, pixel_id="ff")
    full = nlte.RH(lm, rh_dir=rh_dir, workdir=tmp_path, lte=False, stokes="full").run_column(col, wl, pixel_id="full")
    assert ff.status == NLTE_CONVERGED and full.status == NLTE_CONVERGED, (ff.message, full.message)
    I0, I1 = ff.stokes[0], full.stokes[0]
    print(f"\nRH FAL C Ca II 8542, B = {B} G: core FIELD_FREE {I0.min() / I0[0]:.3f}, FULL_STOKES "
          f"{I1.min() / I1[0]:.3f}; max |dI| / I {np.max(np.abs(I1 - I0) / I0):.4f}")
    return float(np.max(np.abs(I1 - I0) / I0))


def test_rh_full_stokes_matches_field_free_live(caii, tmp_path):
    """FULL_STOKES with the polarised solver pyinv chooses (DELO_PARABOLIC) gives FAL C's Ca II 8542 Stokes I
    within 1 % of the FIELD_FREE run (RH 2's default DELO_BEZIER3 gave a core ~35 % deeper). FAL C carries
    no field; 1 G makes RH run its polarised transfer."""
    assert _full_vs_field_free(caii, tmp_path, 1.0) <= 0.01


@pytest.mark.xfail(strict=True, reason="measured with RH 2 853de99: at 500 G FULL_STOKES and FIELD_FREE differ by "
                   "6.7 % in I because the populations differ (upper-level b up to 9.9 %), not the formal solver; "
                   "see docs/nlte.md")
def test_rh_full_stokes_matches_field_free_500G_live(caii, tmp_path):
    assert _full_vs_field_free(caii, tmp_path, 500.0) <= 0.01
