"""One name per quantity (issue 18): the Atmosphere's names everywhere (node keys, response-function keys,
map names, result attributes, FITS extension names, keyword arguments, the command line); every old
spelling of pyinv.atmosphere.QUANTITY_ALIASES gives the canonical name's result with a DeprecationWarning
naming it, the canonical names give no warning, and no module of pyinv keeps an alias table of its own."""
from __future__ import annotations

import ast
import contextlib
import warnings
from pathlib import Path

import numpy as np
import pytest

import pyinv
from pyinv import models
from pyinv.atmosphere import (NAME_PLACES, QUANTITIES, QUANTITY_ALIASES, QuantityDict, canonical_name,
                              renamed_keywords)
from pyinv.maps.result import MAP_NAMES, InversionResult

from helpers import interrupt_run, run_map, six_pixel_map

SRC = Path(__file__).resolve().parents[1] / "src" / "pyinv"
MIXED_SOLVER = "pyinv.testing.solvers:mixed_vlos_fit_solver"


@contextlib.contextmanager
def no_deprecation():
    """Canonical names: any DeprecationWarning is an error inside this block."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        yield


def old(name: str, new: str):
    """An old spelling: a DeprecationWarning that names it and its canonical name."""
    return pytest.warns(DeprecationWarning, match=rf"'{name}' is deprecated; use '{new}'")


def aliases(place: str) -> list[tuple[str, str]]:
    return [(a, c) for a, (c, places) in QUANTITY_ALIASES.items() if place in places]


# ------------------------------------------------------------------------------------------ the table
def test_the_table():
    assert QUANTITIES == ("T", "Pe", "vmic", "B", "vlos", "gamma", "phi", "z", "Pg", "rho", "macro", "filling",
                          "stray")
    for a, (c, places) in QUANTITY_ALIASES.items():
        assert c in QUANTITIES and a not in QUANTITIES, a
        assert places and set(places) <= set(NAME_PLACES), a
    assert QUANTITY_ALIASES["inclination"][0] == "gamma" and QUANTITY_ALIASES["azimuth"][0] == "phi"
    assert QUANTITY_ALIASES["vmac"][0] == "macro" and QUANTITY_ALIASES["stray_percent"][0] == "stray"
    # f2 is `filling` as a keyword and an RF key; on results filling2 is component 2's counterpart of filling
    assert QUANTITY_ALIASES["filling2"] == ("filling", ("keyword", "rf"))
    assert "filling2" in MAP_NAMES and "macro2" in MAP_NAMES and "stray_percent" not in MAP_NAMES
    with no_deprecation():
        for q in QUANTITIES + ("filling2", "chi2", "T_he", "anything"):
            assert canonical_name(q, "map") == q
        assert canonical_name("filling2", "map") == "filling2"
        assert canonical_name("inclination", "nodes") == "inclination"   # never a node key
    with old("inclination", "gamma"):
        assert canonical_name("inclination", "rf") == "gamma"
    with pytest.raises(ValueError, match="where must be one of"):
        canonical_name("T", "nowhere")


def test_no_alias_table_outside_the_atmosphere_module():
    """The old spellings appear as string constants only in pyinv/atmosphere.py (the table), as the file
    names older checkpoints keep (maps/synthesis.py) and as a key of the CNN model files' metadata
    (cnn/model.py: "azimuth", the description of its cos 2φ / sin 2φ outputs, part of the file format): no
    other module translates names."""
    spellings = {"inclination", "azimuth", "vmac", "velocity", "temperature", "γ", "φ"}
    found = []
    for p in sorted(SRC.rglob("*.py")):
        rel = p.relative_to(SRC).as_posix()
        if rel in ("atmosphere.py", "maps/synthesis.py", "cnn/model.py"):
            continue
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in spellings:
                found.append(f"{rel}:{node.lineno} {node.value!r}")
    assert not found, found


def test_quantity_dict_and_renamed_keywords():
    d = QuantityDict({"gamma": 1, "gamma_2": 2, "macro": 3})
    with no_deprecation():
        assert d["gamma"] == 1 and "macro" in d and d.get("phi") is None
    with old("inclination", "gamma"):
        assert d["inclination"] == 1
    with old("inclination", "gamma"):
        assert d["inclination_2"] == 2
    with old("vmac", "macro"):
        assert "vmac" in d
    with old("azimuth", "phi"):
        assert d.get("azimuth", 5) == 5
    with pytest.raises(KeyError):
        d["nonsense"]

    @renamed_keywords
    def f(x, *, filling=None, stray=None):
        return x, filling, stray

    with no_deprecation():
        assert f(1, filling=0.2, stray=3.0) == (1, 0.2, 3.0)
    with old("filling2", "filling"), old("stray_percent", "stray"):
        assert f(1, filling2=0.2, stray_percent=3.0) == (1, 0.2, 3.0)
    with pytest.raises(TypeError, match="two spellings"):
        f(1, filling=0.2, filling2=0.3)
    with pytest.raises(TypeError):
        f(1, inclination=3.0)   # an old name of no keyword of f: Python's own error


# ------------------------------------------------------------------------------------------ node keys
def test_node_keys():
    with no_deprecation():
        new = pyinv.InversionConfig(cycles=2, nodes={"T": 2, "macro": 1}, nodes2={"macro": (0, 1)})
        assert new.nodes(1)["macro"] == 1 and new.nodes_for(2, 2)["macro"] == 1
        assert "Invert macroturbulence 1?    :1" in new.to_sir_text()      # SIR's text unchanged
    with old("vmac", "macro"):
        was = pyinv.InversionConfig(cycles=2, nodes={"T": 2, "vmac": 1}, nodes2={"macro": (0, 1)})
    assert was == new and was.to_sir_text() == new.to_sir_text()
    with old("vmac", "macro"):
        assert new.nodes["vmac"] == (1,)
    with old("vmac", "macro"):
        assert new.nodes(1)["vmac"] == 1
    with pytest.raises(ValueError, match="two spellings"), old("vmac", "macro"):
        pyinv.InversionConfig(nodes={"vmac": 1, "macro": 1})
    with pytest.raises(ValueError, match="unknown parameter"):
        pyinv.InversionConfig(nodes={"inclination": 1})


# ------------------------------------------------------------------------------------------ maps
def _result(two: bool = True) -> InversionResult:
    rng = np.random.default_rng(5)
    ny, nx, nd, nw = 2, 3, 5, 4
    atm = rng.normal(size=(ny, nx, nd, 11))
    atm[..., 0] = np.linspace(1.0, -3.0, nd)
    kw = dict(atmospheres=atm, macro=rng.random((ny, nx)), filling=rng.random((ny, nx)),
              stray=10 * rng.random((ny, nx)), fits=rng.random((ny, nx, 4, nw)), chi2=rng.random((ny, nx)),
              chi2_cycles=rng.random((ny, nx, 1)), status=np.zeros((ny, nx), np.int32),
              iterations=np.ones((ny, nx), np.int32), errors=rng.random((ny, nx, nd, 11)),
              errors_header=rng.random((ny, nx, 3)), start=np.zeros((ny, nx), np.int16),
              seconds=rng.random((ny, nx)).astype(np.float32), line_index=np.ones(nw, np.int64),
              offset_mA=np.arange(nw, dtype=float), wavelength=6301.5 + np.arange(nw),
              provenance={"init": "single", "stray": "local(window=3)"}, filling2=rng.random((ny, nx)))
    if two:
        atm2 = rng.normal(size=(ny, nx, nd, 11))
        atm2[..., 0] = atm[..., 0]
        kw.update(atmospheres2=atm2, macro2=rng.random((ny, nx)), errors2=rng.random((ny, nx, nd, 11)),
                  errors_header2=rng.random((ny, nx, 3)))
    return InversionResult(**kw)


def test_map_names():
    r = _result()
    with no_deprecation():
        want = {n: r.map(n, -1.0) for n in MAP_NAMES}
        assert np.array_equal(r.map("filling", component=2), r.filling2)
        assert np.array_equal(r.map("macro", component=2), r.macro2)
        assert np.array_equal(r.map("gamma", -1.0, component=2), r.map("gamma", -1.0, component=2))
        assert "stray light alpha" in r.describe()
    for a, c in aliases("map"):
        with old(a, c):
            got = r.map(a, -1.0)
        np.testing.assert_array_equal(got, want[c], err_msg=a)
    for a, c in (("t", "T"), ("PE", "Pe"), ("Vlos", "vlos"), ("pg", "Pg"), ("Inclination", "gamma")):
        with old(a, c):
            np.testing.assert_array_equal(r.map(a, -1.0), want[c], err_msg=a)
    with pytest.raises(KeyError, match="unknown map"):
        r.map("filling3")


def test_truth_map_names():
    from pyinv.synthetic import SyntheticMap

    rng = np.random.default_rng(2)
    truth = rng.normal(size=(2, 2, 5, 11))
    truth[..., 0] = np.linspace(1.0, -3.0, 5)
    s = SyntheticMap(cube=np.zeros((2, 2, 4, 3)), truth=truth, macro=np.zeros((2, 2)), labels=np.zeros((2, 2), int),
                     mu=1.0, seed=0, noise=0.0, lines=None, grid=None, psf=np.zeros((2, 1)), ic_quiet=1.0)
    for a, c in aliases("map"):
        if c not in QUANTITIES[:10]:
            continue
        with no_deprecation():
            want = s.truth_map(c, -0.5)
        with old(a, c):
            np.testing.assert_array_equal(s.truth_map(a, -0.5), want, err_msg=a)


def test_result_attributes_and_old_fits_extension(tmp_path):
    from astropy.io import fits

    r = _result()
    with old("stray_percent", "stray"):
        assert r.stray_percent is r.stray
    with pytest.raises(AttributeError):
        r.inclination
    with no_deprecation():
        path = r.to_fits(tmp_path / "new.fits")
        with fits.open(path) as hl:
            names = [h.header.get("MAPNAME", h.name) for h in hl[1:]]
        assert "stray" in names and "stray_percent" not in names
        back = InversionResult.from_fits(path)
    # a file of pyinv before issue 18 also held stray_percent (a copy of stray, NaN without stray light)
    with fits.open(path) as hl:
        h = fits.ImageHDU(np.where(np.arange(6).reshape(2, 3) == 1, np.nan, r.stray), name="stray_percent")
        h.header["MAPNAME"] = "stray_percent"
        fits.HDUList([*hl, h]).writeto(tmp_path / "old.fits")
    with old("stray_percent", "stray"):
        was = InversionResult.from_fits(tmp_path / "old.fits")
    for name in ("atmospheres", "atmospheres2", "stray", "filling", "filling2", "macro2"):
        np.testing.assert_array_equal(getattr(was, name), getattr(back, name), err_msg=name)
    # an old file whose only α is stray_percent (hypothetical) reads it as stray
    maps = {"stray_percent": r.stray}
    with fits.open(path) as hl:
        kept = [x for x in hl if x.header.get("MAPNAME") != "stray"]
        h = fits.ImageHDU(maps["stray_percent"], name="stray_percent")
        h.header["MAPNAME"] = "stray_percent"
        fits.HDUList([*kept, h]).writeto(tmp_path / "only.fits")
    with old("stray_percent", "stray"):
        np.testing.assert_array_equal(InversionResult.from_fits(tmp_path / "only.fits").stray, r.stray)


# ------------------------------------------------------------------------------------------ engine calls
@pytest.fixture(scope="module")
def mix(engine):
    lines = pyinv.default_lines()
    grid = models.hinode_grid(lines)
    g = models.default_guess()
    m1 = g.with_columns(B=600.0, gamma=50.0, phi=20.0, stray=0.0)
    m2 = g.with_columns(B=1500.0, gamma=20.0, vlos=1e5, macro=1.2)
    stray = pyinv.synthesize(g.with_columns(B=0.0), lines, grid)
    return lines, grid, m1, m2, stray


def test_synthesis_and_response_keywords_and_keys(mix):
    lines, grid, m1, m2, stray = mix
    kw = dict(atmos2=m2, stray_profile=stray)
    with no_deprecation():
        s = pyinv.synthesize(m1, lines, grid, filling=0.3, stray=6.0, **kw)
        r = pyinv.response_functions(m1, lines, grid, filling=0.3, stray=6.0, hydrostatic=False, **kw)
        assert {"gamma", "phi", "macro", "gamma_2", "macro_2", "filling", "stray"} <= set(r)
        assert not {"inclination", "azimuth", "vmac", "filling2", "stray_percent"} & set(dict(r))
    with old("filling2", "filling"), old("stray_percent", "stray"):
        np.testing.assert_array_equal(pyinv.synthesize(m1, lines, grid, filling2=0.3, stray_percent=6.0, **kw), s)
    with old("filling2", "filling"), old("stray_percent", "stray"):
        r_old = pyinv.response_functions(m1, lines, grid, filling2=0.3, stray_percent=6.0, hydrostatic=False, **kw)
    for k in r:
        np.testing.assert_array_equal(r_old[k], r[k], err_msg=k)
    for a, c in aliases("rf"):
        for sfx in ("", "_2"):
            if c + sfx not in r:
                continue
            with old(a, c):
                assert r[a + sfx] is r[c + sfx]
    with pytest.raises(TypeError, match="two spellings"):
        pyinv.synthesize(m1, lines, grid, filling=0.3, filling2=0.3, **kw)


def test_invert_pixel_keywords_and_result(mix):
    lines, grid, m1, m2, stray = mix
    obs = pyinv.synthesize(m1.with_columns(vlos=5e4), lines, grid, atmos2=m2, filling=0.3, stray_profile=stray,
                           stray=6.0)
    cfg = pyinv.InversionConfig(cycles=1, nodes={"vlos": 1, "macro": 1}, nodes2={"vlos": 1}, invert_filling=1,
                                invert_stray=1)
    kw = dict(guess2=m2, stray_profile=stray, max_iterations=3, rescue=False)
    with no_deprecation():
        new = pyinv.invert_pixel(obs, m1, lines, grid, cfg, filling=0.4, stray=5.0, **kw)
        assert new.nodes[0]["macro"] == 1 and new.stray == pytest.approx(float(new.atmosphere.stray))
        assert new.filling2 == pytest.approx(float(new.atmosphere2.filling))
    with old("filling2", "filling"), old("stray_percent", "stray"):
        was = pyinv.invert_pixel(obs, m1, lines, grid, cfg, filling2=0.4, stray_percent=5.0, **kw)
    np.testing.assert_array_equal(was.atmosphere.to_array(), new.atmosphere.to_array())
    np.testing.assert_array_equal(was.fit, new.fit)
    assert was.filling2 == new.filling2 and was.stray == new.stray
    with old("stray_percent", "stray"):
        assert new.stray_percent == new.stray
    with old("vmac", "macro"):
        assert new.nodes[0]["vmac"] == 1


def test_synthesize_map_rf_keys(mix):
    lines, grid, m1, m2, stray = mix
    cube = m1.to_array()[None, None]
    with no_deprecation():
        new = pyinv.synthesize_map(cube, lines, grid, rf=("gamma", "macro"), executor="serial")
        assert set(new.rf) == {"gamma", "macro"}
    with old("inclination", "gamma"), old("vmac", "macro"):
        was = pyinv.synthesize_map(cube, lines, grid, rf=("inclination", "vmac"), executor="serial")
    assert set(was.rf) == {"gamma", "macro"}
    for k in new.rf:
        np.testing.assert_array_equal(was.rf[k], new.rf[k])
    with old("azimuth", "phi"):
        assert "azimuth" not in new.rf


# ------------------------------------------------------------------------------------------ maps of pixels
@pytest.fixture(scope="module")
def six(engine):
    lines, grid, cfg, cube = six_pixel_map()
    g2 = models.default_guess().with_columns(B=1500.0, filling=0.3)
    return lines, grid, cfg, cube, g2


def _same_maps(a, b):
    for k in ("atmospheres", "atmospheres2", "filling2", "stray", "fits", "chi2", "status"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k), err_msg=k)


def test_map_keywords_and_the_old_stray_profile(six):
    """invert_map (the engine room of pyinv.invert, same keywords) with the stand-in solver: filling2= and
    stray_percent= are filling= and stray=; stray= given a profile (its meaning before issue 18) is
    stray_profile=."""
    lines, grid, cfg, cube, g2 = six
    prof = np.vstack([cube[0, 0, 0], np.zeros((3, grid.nwav))])
    base = dict(solver=MIXED_SOLVER, executor="serial", guess2=g2)
    with no_deprecation():
        new = run_map(six, **base, filling=0.4, stray_profile="local", stray_window=3, stray=5.0)
        one = run_map(six, **base, stray_profile=prof, stray=5.0)
        assert np.allclose(new.stray, 5.0) and np.allclose(new.filling2, 0.4)
    with old("filling2", "filling"), old("stray_percent", "stray"), old("stray", "stray_profile"):
        was = run_map(six, **base, filling2=0.4, stray="local", stray_window=3, stray_percent=5.0)
    _same_maps(was, new)
    guess = models.default_guess().with_columns(stray=5.0)
    for legacy, window in (("local", {"stray_window": 3}), (prof, {})):  # stray= alone: α from the header
        with old("stray", "stray_profile"):
            was = run_map(six, **base, guess=guess, stray=legacy, **window)
        with no_deprecation():
            ref = run_map(six, **base, guess=guess, stray_profile=legacy, **window)
        _same_maps(was, ref)
    _same_maps(run_map(six, **base, stray_profile=prof, stray=5.0), one)


def test_pyinv_invert_keywords(six):
    """pyinv.invert itself (the real solver, one pixel): the old keywords give the same result."""
    lines, grid, cfg, cube, g2 = six
    prof = np.vstack([cube[0, 0, 0], np.zeros((3, grid.nwav))])
    small = cube[:1, :1]
    c = pyinv.InversionConfig(cycles=1, nodes={"vlos": 1})
    kw = dict(executor="serial", progress=False, guess2=g2)
    with no_deprecation():
        new = pyinv.invert(small, lines, grid, c, filling=0.4, stray_profile=prof, stray=5.0, **kw)
    with old("filling2", "filling"), old("stray_percent", "stray"), old("stray", "stray_profile"):
        was = pyinv.invert(small, lines, grid, c, filling2=0.4, stray=prof, stray_percent=5.0, **kw)
    _same_maps(was, new)


def test_cli_flags(tmp_path):
    from pyinv.cli import build_parser

    p = build_parser()
    with no_deprecation():
        new = vars(p.parse_args(["invert", "c.fits", "--filling", "0.2", "--stray-profile", "local", "--stray", "5"]))
    assert (new["filling"], new["stray_profile"], new["stray"]) == (0.2, "local", 5.0)
    with old("pyinv invert --filling2", "pyinv invert --filling"), \
            old("pyinv invert --stray-percent", "pyinv invert --stray"), \
            old("pyinv invert --stray local", "pyinv invert --stray-profile local"):
        was = vars(p.parse_args(["invert", "c.fits", "--filling2", "0.2", "--stray", "local", "--stray-percent", "5"]))
    assert {k: was[k] for k in ("filling", "stray_profile", "stray")} == \
        {k: new[k] for k in ("filling", "stray_profile", "stray")}


def test_checkpoint_of_an_older_pyinv_resumes(six, tmp_path):
    """A store written before issue 18 also held α as ``stray_percent.npy`` (and the same fingerprints: the
    per-pixel inputs keep their stored names): it resumes, its extra file unread."""
    from helpers import interrupt_run

    kw = dict(solver=MIXED_SOLVER, executor="serial", chunk=1, guess2=six[4], filling=0.4, stray_profile="local",
              stray_window=3, stray=5.0)
    ref = run_map(six, **kw)
    ck = tmp_path / "ck"
    done = interrupt_run(lambda **k: run_map(six, **k), 2, ck, **kw)
    assert 2 <= done < 6
    np.save(ck / "stray_percent.npy", np.full(6, np.nan))   # what older versions also wrote
    with no_deprecation():
        again = run_map(six, checkpoint=ck, **kw)
    assert again.provenance["resumed"] and again.provenance["computed"] == 6 - done
    _same_maps(again, ref)
