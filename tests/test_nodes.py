"""Node parameterisation of the inversion (spec-inversion §2): counts, placement, interpolation bases,
compression of response functions to nodes (chain rule) and the hydrostatic coupling."""
from __future__ import annotations

import json

import numpy as np
import pytest

engine = pytest.importorskip("pyinv.engine")
try:
    engine.api()
except ImportError:  # pragma: no cover
    pytest.skip("pyinv engine not built", allow_module_level=True)

LT61 = np.round(np.linspace(1.2, -4.8, 61), 10)
LT53 = np.round(np.linspace(1.2, -4.0, 53), 10)


def allowed_set(ndep):
    return sorted(n for n in range(0, ndep + 1) if engine.inv_allowed_nodes(ndep, n) == n)


def test_allowed_counts_match_spec_table():
    # spec §2.1: the test grid N = 61
    assert allowed_set(61) == [0, 1, 2, 3, 4, 5, 6, 7, 11, 13, 16, 21, 31, 61]
    # invert_hinode grid N = 53 (N - 1 = 52)
    assert allowed_set(53) == [0, 1, 2, 3, 5, 14, 27, 53]


def test_counts_are_rounded_down():
    assert engine.inv_allowed_nodes(61, 8) == 7
    assert engine.inv_allowed_nodes(61, 78) == 61   # spec §2.6 example "changed to 61"
    assert engine.inv_allowed_nodes(61, 39) == 31   # "changed to 31"
    assert engine.inv_allowed_nodes(53, 4) == 3
    assert engine.inv_allowed_nodes(53, 13) == 5
    assert engine.inv_allowed_nodes(53, 0) == 0


@pytest.mark.parametrize("ndep,n", [(61, 2), (61, 4), (61, 7), (61, 13), (61, 61), (53, 3), (53, 5), (53, 14)])
def test_equidistant_placement(ndep, n):
    lt = LT61 if ndep == 61 else LT53
    f, idx = engine.inv_node_basis(lt, n)
    expect = [(j * (ndep - 1)) // (n - 1) for j in range(n)]   # 0-based 1 + (j-1)(N-1)/(n-1)
    assert list(idx) == expect
    assert idx[0] == 0 and idx[-1] == ndep - 1                   # deepest and top grid points
    # interpolating: the basis is the identity at the nodes
    assert np.allclose(f[idx, :], np.eye(n), atol=1e-13)


def test_illegal_count_is_rejected():
    with pytest.raises(engine.EngineError):
        engine.inv_node_basis(LT61, 8)


def test_one_and_two_nodes():
    f1, _ = engine.inv_node_basis(LT53, 1)
    assert np.all(f1 == 1.0)
    f2, _ = engine.inv_node_basis(LT53, 2)
    x = LT53
    assert np.allclose(f2[:, 0], (x - x[-1]) / (x[0] - x[-1]), atol=1e-14)
    assert np.allclose(f2.sum(axis=1), 1.0)


def test_three_nodes_is_the_parabola():
    f, idx = engine.inv_node_basis(LT53, 3)
    x = LT53
    y = 2.0 - 0.7 * x + 0.3 * x ** 2
    assert np.allclose(f @ y[idx], y, atol=1e-12)


@pytest.mark.parametrize("n", [5, 14])
def test_not_a_knot_spline(n):
    scipy_interp = pytest.importorskip("scipy.interpolate")
    f, idx = engine.inv_node_basis(LT53, n)
    x = LT53
    # reproduces cubics exactly (not-a-knot property)
    y = 1.0 + 0.5 * x - 0.2 * x ** 2 + 0.05 * x ** 3
    assert np.allclose(f @ y[idx], y, atol=1e-11)
    # and equals scipy's not-a-knot spline through arbitrary node values
    rng = np.random.default_rng(1)
    vals = rng.normal(size=n)
    xs = x[idx][::-1]
    cs = scipy_interp.CubicSpline(xs, vals[::-1], bc_type="not-a-knot")
    assert np.allclose(f @ vals, cs(x), atol=1e-11)


def test_four_nodes_on_61_points_is_the_cubic():
    f, idx = engine.inv_node_basis(LT61, 4)
    x = LT61
    y = 3.0 - x + 0.1 * x ** 3
    assert np.allclose(f @ y[idx], y, atol=1e-11)


def _sir_linear_reference(ndep, n):
    """Hat functions smoothed in place as spec §2.3 describes (reference implementation for the test)."""
    step = (ndep - 1) // (n - 1)
    idx = [j * step for j in range(n)]
    k = np.arange(ndep)
    f = np.zeros((ndep, n))
    for j in range(n):
        e = np.zeros(n)
        e[j] = 1.0
        f[:, j] = np.interp(k, idx, e)
    for j in range(n):
        c = f[:, j]
        if step == 1:
            for i in range(1, ndep - 1):
                c[i] = (c[i - 1] + 2 * c[i] + c[i + 1]) / 4
        else:
            for i in range(2, ndep - 2):
                c[i] = (c[i - 2] + 2 * c[i - 1] + 3 * c[i] + 2 * c[i + 1] + c[i + 2]) / 9
    return f


@pytest.mark.parametrize("n", [3, 5, 14, 53])
def test_linear_mode_with_sir_smoothing(n):
    f, _ = engine.inv_node_basis(LT53, n, mode=1)
    assert np.allclose(f, _sir_linear_reference(53, n), atol=1e-14)
    assert np.allclose(f.sum(axis=1), 1.0)  # smoothing keeps the partition of unity


def test_explicit_positions():
    xn = np.array([1.0, -0.5, -2.0, -3.5])
    f, _ = engine.inv_node_basis(LT53, 4, positions=xn)
    x = LT53
    y = lambda t: 0.3 + 0.2 * t - 0.1 * t ** 2 + 0.02 * t ** 3  # noqa: E731
    inside = (x <= 1.0) & (x >= -3.5)
    assert np.allclose((f @ y(xn))[inside], y(x[inside]), atol=1e-12)
    # constant beyond the outermost nodes
    assert np.allclose(f[x > 1.0], f[np.argmin(np.abs(x - 1.0))])
    assert np.allclose(f[x < -3.5], f[np.argmin(np.abs(x + 3.5))])
    # ascending positions give the same basis (columns in the order given)
    g, _ = engine.inv_node_basis(LT53, 4, positions=xn[::-1])
    assert np.allclose(g, f[:, ::-1], atol=1e-13)


# ------------------------------------------------------------------------------ chain rule / RFs
@pytest.fixture(scope="module")
def hinode_setup(reference_dir):
    from pyinv.physics.inversion import prepare_synthesis
    from pyinv.io.sir import read_abundances
    from pyinv.lines import LineList, WavelengthGrid

    d = np.load(reference_dir / "invert_hinode.npz")
    lines = LineList.read_sir(reference_dir / "LINES_REF")
    grid = WavelengthGrid.from_regions([tuple(r) for r in json.loads(str(d["regions"]))], lines)
    ab = read_abundances(reference_dir / "THEVENIN")
    prep = prepare_synthesis(lines, grid, abundances=ab)
    m = d["sir_models"][2]
    x = np.asfortranarray(m[:, [1, 2, 3, 4, 5, 6, 7]])
    return {"d": d, "prep": prep, "x": x, "lt": m[:, 0], "vmac": float(d["sir_macro"][2]), "ab": ab,
            "lines": lines, "grid": grid}


def test_compression_is_the_chain_rule(hinode_setup):
    """Node Jacobian from depth-resolved RFs (jac_mode 1) = R·D with D = ∂x/∂δ from the basis, and
    agrees with directional finite differences in node space (jac_mode 0)."""
    s = hinode_setup
    nodes = [3, 0, 1, 2, 2, 1, 1, 1]          # T, Pe, vmic, B, vlos, gamma, phi, vmac
    j_fd = engine.inv_node_jacobian(s["prep"], s["lt"], s["x"], s["vmac"], nodes, he=0, jac_mode=0)
    j_rf = engine.inv_node_jacobian(s["prep"], s["lt"], s["x"], s["vmac"], nodes, he=0, jac_mode=1)
    assert j_fd.shape == j_rf.shape == (4, s["prep"].nw, 11)
    for k in range(j_fd.shape[2]):
        scale = np.abs(j_rf[:, :, k]).max()
        assert np.abs(j_fd[:, :, k] - j_rf[:, :, k]).max() <= 2e-3 * scale, k

    # explicit chain rule with the depth-resolved RFs
    _, rf, rfv, _ = engine.synth_rf(s["prep"], s["lt"], s["x"], s["vmac"], want=(1, 0, 0, 1, 0, 0, 0))
    lt, x = s["lt"], s["x"]
    f3, idx3 = engine.inv_node_basis(lt, 3)
    dT = f3 * x[idx3, 0][None, :]                         # relative slot: F_kj a_j
    g = np.einsum("swk,kj->swj", rf[:, :, :, 0], dT)
    assert np.allclose(g, j_rf[:, :, 0:3], rtol=0, atol=1e-10 * np.abs(g).max())
    f2, idx2 = engine.inv_node_basis(lt, 2)
    dB = f2 * x[idx2, 3][None, :]
    g = np.einsum("swk,kj->swj", rf[:, :, :, 3], dB)
    assert np.allclose(g, j_rf[:, :, 4:6], rtol=0, atol=1e-10 * np.abs(g).max())
    # one-node slot: depth average times the summed RF; vmac: relative
    assert np.abs(j_rf[:, :, 10] - rfv * s["vmac"]).max() <= 1e-6 * np.abs(rfv * s["vmac"]).max()


def test_he_coupled_temperature_columns(hinode_setup):
    """With Pe in hydrostatic equilibrium the T columns carry the Pe response (spec §1.4): both
    Jacobian routes agree, and differ from the fixed-Pe columns."""
    s = hinode_setup
    nodes = [3, 0, 0, 0, 0, 0, 0, 0]
    j0 = engine.inv_node_jacobian(s["prep"], s["lt"], s["x"], s["vmac"], nodes, he=1, jac_mode=0)
    j1 = engine.inv_node_jacobian(s["prep"], s["lt"], s["x"], s["vmac"], nodes, he=1, jac_mode=1)
    jn = engine.inv_node_jacobian(s["prep"], s["lt"], s["x"], s["vmac"], nodes, he=0, jac_mode=0)
    for k in range(3):
        scale = np.abs(j1[:, :, k]).max()
        assert np.abs(j0[:, :, k] - j1[:, :, k]).max() <= 2e-3 * scale
        assert np.abs(jn[:, :, k] - j0[:, :, k]).max() > 1e-2 * scale


def test_he_tangent_linear_matches_finite_differences(hinode_setup):
    from pyinv.physics.thermo import abundances_to_eps

    s = hinode_setup
    eps = abundances_to_eps(s["ab"])
    lt, t = s["lt"], np.ascontiguousarray(s["x"][:, 0])
    pe_top = float(s["x"][-1, 1])
    a = engine.inv_he_pe_jacobian(lt, t, pe_top, 0, 0.0, 1.0, eps, method=0)
    # finite differences of the public HE solver for a few columns
    import pyinv
    from pyinv.atmosphere import Atmosphere
    base = Atmosphere(log_tau=lt, T=t, Pe=s["x"][:, 1])
    for j in (0, 20, 45):
        h = 1e-4 * t[j]
        tp, tm = t.copy(), t.copy()
        tp[j] += h
        tm[j] -= h
        pp = pyinv.physics.thermo.hydrostatic(base.with_columns(T=tp), top_pe=pe_top, abundances=s["ab"]).Pe
        pm = pyinv.physics.thermo.hydrostatic(base.with_columns(T=tm), top_pe=pe_top, abundances=s["ab"]).Pe
        fd = (pp - pm) / (2 * h)
        assert np.abs(a[:, j] - fd).max() <= 1e-5 * np.abs(fd).max()
        assert np.all(a[j + 1:, j] == 0) or np.abs(a[j + 1:, j]).max() <= 1e-12 * np.abs(fd).max()


def test_non_magnetic_model_jacobian(hinode_setup):
    """Field-free model (scalar synthesis path), Stokes-I-like configuration: the analytic route agrees
    with directional differences for every free slot, vlos included."""
    s = hinode_setup
    x = np.array(s["x"], order="F", copy=True)
    x[:, 3] = 0.0
    from pyinv.physics.inversion import prepare_synthesis

    prep = prepare_synthesis(s["lines"], s["grid"], abundances=s["ab"], magnetic=False)
    nodes = [3, 0, 1, 0, 3, 0, 0, 1]
    j0 = engine.inv_node_jacobian(prep, s["lt"], x, s["vmac"], nodes, he=1, jac_mode=0)
    j1 = engine.inv_node_jacobian(prep, s["lt"], x, s["vmac"], nodes, he=1, jac_mode=1)
    for k in range(j0.shape[2]):
        scale = np.abs(j0[0, :, k]).max()
        assert scale > 0
        assert np.abs(j0[0, :, k] - j1[0, :, k]).max() <= 2e-3 * scale, k
