"""pyinv.nlte.units, the NLTE column and the MULTI atmosphere / B file round trips."""
from __future__ import annotations

import numpy as np
import pytest

from pyinv.nlte import units
from pyinv.nlte.column import (NlteColumn, column_from_atmosphere, read_b_file, read_multi_atmosphere,
                               write_b_file, write_multi_atmosphere)


def test_air_vacuum_round_trip_and_known_values():
    lam = np.array([3000.0, 5250.2, 6301.5012, 8542.091, 15648.5])
    vac = units.air_to_vacuum(lam)
    assert np.max(np.abs(units.vacuum_to_air(vac) - lam)) < 1e-9
    # NIST: Ca II 8542.09 air = 8544.44 Å vacuum; H alpha 6562.79 air = 6564.61 vacuum
    assert units.air_to_vacuum(8542.091) == pytest.approx(8544.44, abs=0.01)
    assert units.air_to_vacuum(6562.79) == pytest.approx(6564.61, abs=0.01)
    assert units.air_angstrom_to_vacuum_nm(6562.79) == pytest.approx(656.461, abs=1e-3)
    assert units.vacuum_nm_to_air_angstrom(units.air_angstrom_to_vacuum_nm(lam)) == pytest.approx(lam, abs=1e-9)


def test_sign_unit_and_order_conversions():
    assert units.velocity_sir_to_rh(1e5) == pytest.approx(-1.0)        # 1 km/s redshift -> -1 km/s (RH: up)
    assert units.velocity_rh_to_sir(units.velocity_sir_to_rh(-2.5e5)) == pytest.approx(-2.5e5)
    assert units.gauss_to_tesla(500.0) == pytest.approx(0.05)
    assert units.tesla_to_gauss(units.gauss_to_tesla(1234.0)) == pytest.approx(1234.0)
    assert units.deg_to_rad(45.0) == pytest.approx(np.pi / 4)
    T = np.array([4000.0, 6000.0])
    pe = np.array([1.0, 100.0])
    ne = units.ne_from_pe(pe, T)
    assert ne[0] == pytest.approx(1.0 / (1.380649e-16 * 4000.0))
    assert units.pe_from_ne(ne, T) == pytest.approx(pe)
    a = np.arange(6.0).reshape(2, 3)
    assert np.array_equal(units.reverse_depth(a), a[:, ::-1])


def test_hydrogen_lte_populations_sum_and_ratio():
    T = np.array([5000.0, 8000.0])
    p = units.hydrogen_lte_populations(T, np.array([1e17, 1e15]), np.array([1e10, 1e13]))
    assert p.shape == (6, 2)
    assert p[:5].sum(axis=0) == pytest.approx([1e17, 1e15], rel=1e-12)
    assert p[5] == pytest.approx([1e10, 1e13])
    # Boltzmann n2/n1 = 4 exp(-10.2 eV / kT)
    r = 4.0 * np.exp(-13.598434 * 0.75 / (8.617333262e-5 * T))
    assert p[1] / p[0] == pytest.approx(r, rel=1e-3)


def test_column_from_sir_model():
    import pyinv

    atm = pyinv.models.hsra(B=1000.0, vlos=2e5, gamma=30.0, phi=20.0)
    col = column_from_atmosphere(atm)
    assert col.scale == "tau500"
    assert col.depth[0] == pytest.approx(atm.log_tau[-1]) and col.depth[-1] == pytest.approx(atm.log_tau[0])
    assert col.T[0] == pytest.approx(atm.T[-1])
    assert col.v == pytest.approx(np.full(atm.ndep, -2.0))
    assert col.B == pytest.approx(np.full(atm.ndep, 0.1))
    assert col.gamma == pytest.approx(np.full(atm.ndep, np.deg2rad(30.0)))
    assert col.chi == pytest.approx(np.full(atm.ndep, np.deg2rad(20.0)))
    assert col.ne[-1] == pytest.approx(atm.Pe[0] / (1.380649e-16 * atm.T[0]))
    # hydrogen: nearly all neutral in the photosphere, total close to the EOS's n_H
    eos = pyinv.physics.thermo.equation_of_state(atm.T, atm.Pe)
    tot = col.nH.sum(axis=0)[::-1]
    assert np.allclose(tot, eos["nH"], rtol=0.01)


def test_multi_atmosphere_and_b_file_round_trip(tmp_path):
    n = 7
    col = NlteColumn(scale="mass", depth=np.linspace(-5, 0.5, n), T=np.linspace(9000, 6000, n),
                     ne=np.logspace(10, 14, n), v=np.linspace(-1, 1, n), vturb=np.full(n, 1.5),
                     nH=np.abs(np.random.default_rng(1).normal(1e14, 1e13, (6, n))), logg=4.44, name="TEST")
    write_multi_atmosphere(tmp_path / "a.atmos", col)
    back = read_multi_atmosphere(tmp_path / "a.atmos")
    assert back.scale == "mass" and back.name == "TEST" and back.logg == pytest.approx(4.44)
    for k in ("depth", "T", "ne", "v", "vturb", "nH"):
        assert np.allclose(getattr(back, k), getattr(col, k), rtol=1e-10), k
    mag = col.with_field(500.0, 45.0, 10.0)
    write_b_file(tmp_path / "f.B", mag)
    assert (tmp_path / "f.B").stat().st_size == 24 * n
    B, g, c = read_b_file(tmp_path / "f.B", n)
    assert B == pytest.approx(np.full(n, 0.05)) and g == pytest.approx(np.full(n, np.pi / 4))
    assert c == pytest.approx(np.full(n, np.deg2rad(10.0)))
    # big-endian on disk
    assert np.fromfile(tmp_path / "f.B", dtype=">f8")[0] == pytest.approx(0.05)


def test_column_rejects_bad_input():
    with pytest.raises(ValueError, match="scale"):
        NlteColumn(scale="x", depth=[0.0], T=[5000.0], ne=[1.0], v=[0.0], vturb=[0.0])
    with pytest.raises(ValueError, match="T must"):
        NlteColumn(scale="mass", depth=[0.0], T=[-5.0], ne=[1.0], v=[0.0], vturb=[0.0])


def test_level_map_and_ca_ii_preset():
    from pyinv import nlte

    lines, grid = nlte.ca_ii_8542()
    assert grid.nwav == 301 and grid.offset_mA[0] == -1500.0 and grid.offset_mA[-1] == 1500.0
    assert set(grid.line_index.tolist()) == {8}
    m = {ln.index: (ln.atom, ln.lower, ln.upper) for ln in nlte.level_map(lines)}
    assert m == {1: ("Fe23", 15, 19), 2: ("Fe23", 16, 21), 8: ("CaII", 2, 4)}
    assert [ln.index for ln in nlte.level_map(lines, [8])] == [8]
    wl = nlte.grid_vacuum_nm(lines, grid)
    assert wl[150] == pytest.approx(854.444, abs=1e-3)       # vacuum Ca II 8542 centre [nm]
    both = nlte.ca_ii_8542(with_fe_hinode=True)[1]
    assert both.nwav == 301 + 112 and both.blends[0] == (1, 2)
