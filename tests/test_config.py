"""InversionConfig: SIR control files and the Python constructor."""
import numpy as np
import pytest

from pyinv.config import NODES_MAX, InversionConfig


def test_sir_files_trol(reference_dir):
    c = InversionConfig.read_sir(reference_dir / "sir_files" / "sir.trol")
    assert c.cycles == 4
    assert c.observed == "model1.per" and c.grid_file == "malla56.grid" and c.model1 == "model2.mod"
    assert c.model2 is None and c.stray_file is None and c.psf_file is None and c.nlte_file is None
    assert c.weights_for(1) == (1.0, 5.0, 5.0, 10.0)
    assert c.auto_nodes == (0, 0, 0, 1)
    assert c.nodes(1) == {"T": 2, "Pe": 0, "vmic": 0, "B": 1, "vlos": 1, "gamma": 1, "phi": 1, "macro": 0}
    assert c.nodes(3)["T"] == 5 and c.nodes(3)["gamma"] == 2
    assert c.nodes(4)["T"] == NODES_MAX and c.nodes(4)["B"] == NODES_MAX and c.nodes(4)["phi"] == 2
    assert c.nodes_for(2, model=2) == dict.fromkeys(c.nodes(2), 0)
    assert c.pg_surface1 == 500.0 and c.pg_surface2 == 0.0 and c.mu == 1.0
    assert c.value("snr", 3) == 1000.0 and c.value("svd_tolerance", 1) == 1e-4
    assert c.value("initial_diagonal", 2) == 1e-3 and c.contrast == -1.0 and c.value("interpolation", 1) == 0
    assert c.resolve("lines_file") == reference_dir / "sir_files" / "LINES"
    assert c.resolve("model2") is None


def test_invert_hinode_trol(reference_dir):
    d = np.load(reference_dir / "invert_hinode.npz", allow_pickle=False)
    c = InversionConfig.from_sir_text(str(d["sir_trol"]))
    assert c.cycles == 3
    assert c.weights_for(2) == tuple(float(w) for w in d["weights"])
    assert [c.nodes(k)["T"] for k in (1, 2, 3)] == [1, 3, 5]
    assert [c.nodes(k)["B"] for k in (1, 2, 3)] == [1, 3, 3]
    assert [c.nodes(k)["vlos"] for k in (1, 2, 3)] == [1, 3, 3]
    assert c.nodes(3)["macro"] == 1 and c.nodes(3)["gamma"] == 1 and c.nodes(3)["Pe"] == 0
    assert c.lines_file == "LINES_REF" and c.value("snr", 1) == 1000.0
    # the same configuration built in Python
    py = InversionConfig(cycles=3, nodes={"T": [1, 3, 5], "vlos": [1, 3, 3], "B": [1, 3, 3], "gamma": [1, 1, 1],
                                          "phi": [1, 1, 1], "vmic": [1, 1, 1], "macro": [1, 1, 1]},
                         weights=(1, 4, 4, 2), snr=1000)
    for k in (1, 2, 3):
        assert py.nodes(k) == c.nodes(k) and py.weights_for(k) == c.weights_for(k)


def test_write_read_roundtrip(reference_dir, tmp_path):
    c = InversionConfig.read_sir(reference_dir / "sir_files" / "sir.trol")
    c.write_sir(tmp_path / "x.trol")
    assert len((tmp_path / "x.trol").read_text().splitlines()) == 42
    c2 = InversionConfig.read_sir(tmp_path / "x.trol")
    c2.base_dir = c.base_dir
    assert c2 == c


def _trol(**repl):
    c = InversionConfig(cycles=2, nodes={"T": [1, 3]}, observed="obs.per", model1="g.mod")
    lines = c.to_sir_text().splitlines()
    for n, v in repl.items():
        k = int(n[1:]) - 1
        lines[k] = lines[k].split(":", 1)[0] + ":" + v
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("repl,words", [
    ({"l1": "2.0"}, [":1", "'.'"]),
    ({"l15": "1,x"}, [":15", "malformed integer"]),
    ({"l15": "1,*"}, ["'*'", "automatic"]),
    ({"l34": "abc"}, [":34", "malformed real"]),
    ({"l18": "1.5"}, [":18", "'.'"]),
])
def test_malformed_values(repl, words):
    with pytest.raises(ValueError) as exc:
        InversionConfig.from_sir_text(_trol(**repl), source="t.trol")
    for w in words:
        assert w in str(exc.value)


def test_structure_errors_and_defaults(tmp_path):
    text = _trol()
    with pytest.raises(ValueError, match="42 lines"):
        InversionConfig.from_sir_text("\n".join(text.splitlines()[:40]))
    bad = text.splitlines()
    bad[5] = "no colon here"
    with pytest.raises(ValueError, match=":6"):
        InversionConfig.from_sir_text("\n".join(bad), source="t.trol")
    c = InversionConfig.from_sir_text(_trol(l34="  5 0 0 ; 300  ! comment: with colon", l10="2;3"))
    assert c.value("snr", 1) == 500.0 and c.value("snr", 2) == 300.0 and c.value("snr", 9) == 300.0
    assert c.weights_for(2)[0] == 3.0 and c.weights_for(2)[1] == 1.0
    assert c.lines_file is None and c.resolve("abundances_file") is None  # empty -> packaged default
    c = InversionConfig(lines_file="~/x/LINES", base_dir=str(tmp_path))
    assert not str(c.resolve("lines_file")).startswith("~")
    assert InversionConfig(model1="m.mod", base_dir=str(tmp_path)).resolve("model1") == tmp_path / "m.mod"


def test_constructor_validation():
    with pytest.raises(ValueError, match="unknown parameter"):
        InversionConfig(nodes={"temperature": [1]})
    with pytest.raises(ValueError, match="4 entries"):
        InversionConfig(weights=(1, 2, 3))
    c = InversionConfig(cycles=2, auto_nodes=[0, 1], nodes={"T": [2, NODES_MAX]})
    assert c.nodes(2)["T"] == NODES_MAX
