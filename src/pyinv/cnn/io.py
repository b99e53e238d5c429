"""Saving and loading :class:`~pyinv.cnn.model.CNNModel` files (the format: :mod:`pyinv.cnn.fileformat`),
and the catalogue's models by name (:mod:`pyinv.cnn.catalogue`).

The format (version 2) is a plain numpy ``.npz`` archive, readable without PyTorch and without pickle:
``meta_json`` (the metadata as JSON) and one float32 array ``w:<name>`` per network weight or buffer.
Version-1 files (torch ``.pt``, written by pyinv 0.1 before issue 12) are still read when torch is
installed; :func:`convert_torch_file` turns them into ``.npz``.

Imports within pyinv.cnn go one way: fileformat ← model ← catalogue ← io.
"""
from __future__ import annotations

from pathlib import Path

from .catalogue import model_path, pretrained
from .fileformat import read_torch_file, write_model_file
from .model import CNNModel

__all__ = ["save_model", "load_model", "pretrained_path", "load_pretrained", "convert_torch_file"]


def save_model(model: CNNModel, path) -> Path:
    """Write ``model`` to ``path`` as a plain ``.npz`` (parent folders are created; the name is kept
    as given, ``.npz`` is the suggested suffix)."""
    return write_model_file(model.weights, model.meta, path)


def load_model(path, *, grid=None, lines=None) -> CNNModel:
    """Read a CNN model file (``.npz``, or a version-1 torch file when torch is installed); with
    ``grid``/``lines`` also check that they fit (ValueError if not).

    Raises
    ------
    ValueError
        Not a pyinv CNN file, a newer format version, an architecture that does not match its weights,
        or data (grid, lines) the network was not trained for.
    """
    return CNNModel.load(path, grid=grid, lines=lines)


def convert_torch_file(src, dst) -> Path:
    """Convert a version-1 torch model file to the plain ``.npz`` format (needs torch)."""
    return write_model_file(*read_torch_file(src), dst)


def pretrained_path(name: str | None = None) -> Path:
    """Path of a catalogue model's file (default: the packaged Hinode SP Fe I 6301.5/6302.5 Å model)."""
    return model_path(name)


def load_pretrained(name: str | None = None, **kw) -> CNNModel:
    """A catalogue model (default the packaged Hinode SP model); see :func:`pyinv.cnn.pretrained`."""
    return pretrained(name, **kw)
