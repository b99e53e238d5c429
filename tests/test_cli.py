"""The command line's spellings (issue 18): the CNN commands in one group (``pyinv cnn list|train|demo``) and
one flag for the NLTE backend (``--nlte``) in ``synth`` and ``invert``. The old spellings (``pyinv train``,
``pyinv demo``, ``pyinv synth --backend``) still work, do the same, and warn: a DeprecationWarning and a line
on stderr."""
from __future__ import annotations

import contextlib
import warnings

import numpy as np
import pytest

from pyinv.cli import build_parser, main

_NOT_COMPARED = ("func", "command", "cnn_command")


def _record(monkeypatch, module, name: str) -> list[dict]:
    """Replace ``module.name`` (a command implementation) by a recorder of the arguments it is given."""
    calls: list[dict] = []
    monkeypatch.setattr(module, name, lambda args: calls.append(dict(vars(args))) or 0)
    return calls


@contextlib.contextmanager
def _no_deprecation():
    """The new spellings do not warn: pyinv's deprecation message is an error inside this block."""
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".* is deprecated; use ", category=DeprecationWarning)
        yield


def _same(old: dict, new: dict) -> None:
    """The old spelling's arguments are the new one's (the new command may have more options)."""
    for k, v in old.items():
        if k not in _NOT_COMPARED:
            assert new[k] == v, k


def test_help_lists_the_cnn_group(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "{synth,invert,cnn,sir,info}" in out      # train and demo are not listed any more
    with pytest.raises(SystemExit):
        main(["cnn", "--help"])
    assert "{list,train,demo}" in capsys.readouterr().out


def test_cnn_train_and_old_spelling(monkeypatch, capsys):
    from pyinv.cnn import commands

    calls = _record(monkeypatch, commands, "cmd_train")
    argv = ["--generate", "2", "--size", "8", "--epochs", "3", "--workers", "1", "-o", "m.npz"]
    with _no_deprecation():
        assert main(["cnn", "train", *argv]) == 0
    assert "deprecated" not in capsys.readouterr().err
    with pytest.warns(DeprecationWarning, match="'pyinv train' is deprecated; use 'pyinv cnn train'"):
        assert main(["train", *argv]) == 0
    assert "DeprecationWarning: 'pyinv train' is deprecated" in capsys.readouterr().err
    new, old = calls
    _same(old, new)
    # the defaults of the model-of-your-own mode, as the old command had them
    assert (new["epochs"], new["batch"], new["seed"], new["mu"], new["patience"], new["output"]) == (
        3, 64, 101, 1.0, 30, "m.npz")


def test_cnn_train_recipe(monkeypatch):
    from pyinv.cnn import commands

    calls = _record(monkeypatch, commands, "cmd_cnn_train")
    assert main(["cnn", "train", "--recipe", "hinode-sp-fe6301", "--pixels", "40", "--epochs", "2"]) == 0
    (a,) = calls
    assert (a["recipe"], a["pixels"], a["epochs"], a["workers"], a["threads"], a["output"]) == (
        "hinode-sp-fe6301", 40, 2, 1, 1, None)


@pytest.mark.parametrize("argv, says", [
    (["--recipe", "hinode-sp-fe6301", "--generate", "2"], "--generate"),
    (["--recipe", "hinode-sp-fe6301", "cube.fits"], "cube"),
    (["--generate", "2", "--pixels", "40"], "--pixels: options of --recipe"),
    (["--generate", "2", "--lr-decay", "cosine"], "--lr-decay: options of --recipe"),
    ([], "give --recipe NAME"),
])
def test_cnn_train_refuses_mixed_modes(argv, says, capsys):
    assert main(["cnn", "train", *argv]) == 2
    assert says in capsys.readouterr().err


def test_cnn_demo_and_old_spelling(monkeypatch, capsys):
    from pyinv.cnn import commands

    calls = _record(monkeypatch, commands, "cmd_demo")
    argv = ["--size", "8", "--seed", "3", "--standard", "-o", "out"]
    with _no_deprecation():
        assert main(["cnn", "demo", *argv]) == 0
    with pytest.warns(DeprecationWarning, match="use 'pyinv cnn demo'"):
        assert main(["demo", *argv]) == 0
    assert "DeprecationWarning: 'pyinv demo' is deprecated" in capsys.readouterr().err
    new, old = calls
    _same(old, new)
    assert set(old) - set(_NOT_COMPARED) == set(new) - set(_NOT_COMPARED)


def test_one_nlte_flag_for_synth_and_invert():
    p = build_parser()
    assert p.parse_args(["synth", "--nlte", "rh"]).nlte == "rh"
    assert p.parse_args(["invert", "cube.fits", "--nlte", "lightweaver"]).nlte == "lightweaver"
    assert p.parse_args(["synth"]).nlte is None and p.parse_args(["invert", "cube.fits"]).nlte is None


def test_synth_backend_is_the_old_nlte(monkeypatch, capsys, tmp_path):
    from pyinv.nlte import cli as nlte_cli

    calls = []
    monkeypatch.setattr(nlte_cli, "synth_nlte", lambda args, load: calls.append(dict(vars(args))) or 0)
    argv = ["--model", "hsra", "-o", str(tmp_path / "ca.per"), "--no-plot"]
    with _no_deprecation():
        assert main(["synth", "--nlte", "lightweaver", *argv]) == 0
    with pytest.warns(DeprecationWarning, match="use 'pyinv synth --nlte lightweaver'"):
        assert main(["synth", "--backend", "lightweaver", *argv]) == 0
    assert "DeprecationWarning: 'pyinv synth --backend lightweaver' is deprecated" in capsys.readouterr().err
    new, old = calls
    assert new == old and new["nlte"] == "lightweaver"


def test_synth_backend_lte_is_no_nlte(engine, tmp_path, capsys):
    from pyinv.io.sir import read_sir_profiles

    with _no_deprecation():
        assert main(["synth", "-o", str(tmp_path / "a.per"), "--no-plot"]) == 0
    with pytest.warns(DeprecationWarning, match="'pyinv synth --backend lte' is deprecated; use 'pyinv synth'"):
        assert main(["synth", "--backend", "lte", "-o", str(tmp_path / "b.per"), "--no-plot"]) == 0
    assert "DeprecationWarning" in capsys.readouterr().err
    a, b = (read_sir_profiles(tmp_path / f).stokes for f in ("a.per", "b.per"))
    np.testing.assert_array_equal(a, b)

