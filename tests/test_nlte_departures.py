"""Departures and SIR 2017's departure-coefficient file."""
from __future__ import annotations

import numpy as np
import pytest

from pyinv.nlte.departures import Departures, clean_tau_grid, read_sir_departures, write_sir_departures

from helpers import assert_file_refused


def _dep(nd=21, lines=(1, 2)):
    lt = np.linspace(1.0, -5.0, nd)
    bl = np.array([1.0 + 0.1 * k * np.exp(lt) for k in range(1, len(lines) + 1)])
    bu = np.array([0.5 + 0.5 * np.exp(lt / (k + 1)) for k in range(len(lines))])
    return Departures(lt, lines, bl, bu)


def test_sir_file_round_trip(tmp_path):
    d = _dep()
    write_sir_departures(tmp_path / "dep.txt", d)
    rows = (tmp_path / "dep.txt").read_text().splitlines()
    assert len(rows) == 2 * d.ndep
    first = rows[0].split()
    assert int(first[0]) == 1 and float(first[1]) == pytest.approx(1.0)
    assert int(rows[d.ndep].split()[0]) == 2
    back = read_sir_departures(tmp_path / "dep.txt")
    assert back.lines == (1, 2)
    assert np.allclose(back.log_tau, d.log_tau, atol=1e-6)
    assert np.allclose(back.b_lower, d.b_lower, rtol=1e-8)
    assert np.allclose(back.b_upper, d.b_upper, rtol=1e-8)


def test_reader_accepts_top_first_and_checks_blocks(tmp_path):
    p = tmp_path / "d.txt"
    p.write_text("8 -3.0 2.0 3.0\n8 -1.0 1.5 1.2\n8 0.0 1.0 1.0\n")
    d = read_sir_departures(p)
    assert d.log_tau.tolist() == [0.0, -1.0, -3.0]        # stored deepest first
    assert d.b_lower[0].tolist() == [1.0, 1.5, 2.0]
    for text, match in (("1 0.0 1 1\n1 -1.0 1 1\n2 0.0 1 1\n", "unequal"),
                        ("1 0.0 1 1\n2 0.0 1 1\n1 -1.0 1 1\n", "more than one block"),
                        ("1 0.0 1\n", "4 numbers")):
        assert_file_refused(read_sir_departures, p, text, match)


def test_writer_enforces_sir_limits(tmp_path):
    big = _dep(nd=301, lines=(1,))
    with pytest.raises(ValueError, match="limits"):
        write_sir_departures(tmp_path / "x", big)
    many = _dep(nd=200, lines=(1, 2, 3, 4, 5, 6))
    with pytest.raises(ValueError, match="limits"):
        write_sir_departures(tmp_path / "x", many)
    write_sir_departures(tmp_path / "x", many, check_sir_limits=False)
    assert len((tmp_path / "x").read_text().splitlines()) == 1200


def test_on_grid_interpolates_linearly_and_extrapolates_like_sir():
    d = Departures([0.0, -1.0, -2.0], [5], [[1.0, 2.0, 4.0]], [[1.0, 1.0, 1.0]])
    e = d.on_grid(np.array([0.5, -0.5, -1.5, -3.0]))
    # linear in log tau; extrapolation from the end pairs
    assert e.b_lower[0] == pytest.approx([0.5, 1.5, 3.0, 6.0])
    bl, bu = e.line(5)
    assert bl == pytest.approx(e.b_lower[0])
    one_l, one_u = e.line(99)                                  # lines without coefficients: b = 1
    assert np.all(one_l == 1) and np.all(one_u == 1)


def test_from_depth_grid_drops_near_equal_tau_and_reorders():
    tau_top_first = np.array([1e-8, 1e-8 * (1 + 1e-9), 1e-6, 1e-3, 1.0, 10.0])
    b = np.array([[9.0, 9.0, 5.0, 2.0, 1.0, 1.0]])
    d = Departures.from_depth_grid(np.log10(tau_top_first), [8], b, b)
    assert d.ndep == 5                                          # the near-equal top pair collapsed
    assert d.log_tau[0] == pytest.approx(1.0) and d.log_tau[-1] == pytest.approx(-8.0)
    m = Departures.from_depth_grid(np.log10(tau_top_first), [8], b, b, model_log_tau=np.array([0.0, -3.0]))
    assert m.b_lower[0] == pytest.approx([1.0, 2.0])
    assert clean_tau_grid(np.array([0.0, -1.0, -1.0, -2.0])).tolist() == [0, 1, 3]


def test_departures_validation():
    with pytest.raises(ValueError, match="decreasing"):
        Departures([0.0, 1.0], [1], [[1, 1]], [[1, 1]])
    with pytest.raises(ValueError, match="positive"):
        Departures([1.0, 0.0], [1], [[1, -1]], [[1, 1]])
    with pytest.raises(ValueError, match="duplicate"):
        Departures([1.0, 0.0], [1, 1], [[1, 1], [1, 1]], [[1, 1], [1, 1]])
