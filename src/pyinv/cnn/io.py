"""Saving and loading :class:`~pyinv.cnn.model.CNNModel` files (torch format, metadata as plain types,
readable with ``torch.load(..., weights_only=True)``)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from .model import FORMAT, FORMAT_VERSION, CNNModel, StokesCNN

__all__ = ["save_model", "load_model", "pretrained_path", "load_pretrained"]

PRETRAINED = "cnn_hinode_fe6301.pt"


def _plain(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    return str(o)


def save_model(model: CNNModel, path) -> Path:
    """Write ``model`` to ``path`` (parent folders are created)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().clone().contiguous() for k, v in model.net.state_dict().items()}
    meta = json.loads(json.dumps(model.meta, default=_plain))  # plain types only (weights_only loading)
    torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, "meta": meta, "state_dict": state}, p)
    return p


def load_model(path, *, grid=None, lines=None) -> CNNModel:
    """Read a CNN model file; with ``grid``/``lines`` also check that they fit (ValueError if not).

    Raises
    ------
    ValueError
        Not a pyinv CNN file, a newer format version, an architecture that does not match its weights,
        or data (grid, lines) the network was not trained for.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"CNN model file {p} does not exist")
    try:
        blob = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file
        raise ValueError(f"{p}: not a pyinv CNN model file ({type(exc).__name__}: {exc})") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ValueError(f"{p}: not a pyinv CNN model file (format {blob.get('format') if isinstance(blob, dict) else type(blob).__name__!r})")
    if int(blob.get("format_version", 0)) > FORMAT_VERSION:
        raise ValueError(f"{p}: CNN file format version {blob['format_version']} is newer than this pyinv "
                         f"supports ({FORMAT_VERSION}); upgrade pyinv")
    meta = blob["meta"]
    a = meta["architecture"]
    net = StokesCNN(a["nwav"], a["n_out"], filters=a["filters"], kernels=a["kernels"], dropout=a["dropout"],
                    stokes_weights=meta["normalisation"]["stokes_weights"])
    try:
        net.load_state_dict(blob["state_dict"])
    except RuntimeError as exc:
        raise ValueError(f"{p}: the weights do not match the recorded architecture ({exc})") from None
    net.eval()
    model = CNNModel(net, meta)
    model.meta.setdefault("provenance", {})["loaded_from"] = os.fspath(p)
    if grid is not None or lines is not None:
        model.check_compatible(grid, lines, what=f"data for {p.name}")
    return model


def pretrained_path() -> Path:
    """Path of the packaged model for Hinode SP Fe I 6301.5/6302.5 Å."""
    from ..defaults import data_path
    return Path(data_path(PRETRAINED))


def load_pretrained(**kw) -> CNNModel:
    """The packaged model (trained on generated Hinode-SP-like maps; see its ``meta['provenance']``)."""
    return load_model(pretrained_path(), **kw)
