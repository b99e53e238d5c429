"""The CNN model file format: weights and metadata of a :class:`~pyinv.cnn.model.CNNModel` to and from
disk, as plain dicts (no pyinv.cnn imports: :mod:`pyinv.cnn.model` and :mod:`pyinv.cnn.io` build on it).

The format (version 2) is a plain numpy ``.npz`` archive, readable without PyTorch and without pickle:

* ``meta_json``: a 0-d unicode array holding the metadata as JSON (format, version, grid, lines,
  normalisation, nodes, outputs, scales, architecture, μ handling, provenance);
* ``w:<name>``: one float32 array per network weight or buffer, named as the torch ``state_dict``
  (``features.0.weight`` (f1, 4, k1), ``features.0.bias``, ``features.3.*``, ``features.6.*``,
  ``head.1.*``, ``head.3.*``, ``stokes_weights`` (4,), ``out_mean`` / ``out_std`` (n_out,)).

Version-1 files (torch ``.pt``, written by pyinv 0.1 before issue 12) are still read when torch is
installed; :func:`pyinv.cnn.convert_torch_file` turns them into ``.npz``.
"""
from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np

__all__ = ["FORMAT", "FORMAT_VERSION", "write_model_file", "read_model_file", "read_torch_file"]

FORMAT = "pyinv-cnn"
#: 2: plain weights (.npz) and optional μ input; 1: torch files (still readable with torch).
FORMAT_VERSION = 2


def _plain(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    return str(o)


def write_archive(weights: dict, meta: dict, path) -> Path:
    """``meta`` (JSON-able after :func:`_plain`) as ``meta_json`` and ``weights`` as float32 ``w:<name>`` in
    a plain ``.npz`` at ``path`` (parent folders created, the name kept as given)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"w:{k}": np.ascontiguousarray(v, dtype=np.float32) for k, v in weights.items()}
    with open(p, "wb") as fh:  # a file handle: numpy would otherwise append ".npz" to other names
        np.savez_compressed(fh, meta_json=np.array(json.dumps(meta, sort_keys=True, default=_plain)), **arrays)
    return p


def read_archive(p: Path, what: str, fmt: str, version: int) -> tuple[dict, dict]:
    """(weights, meta) of a :func:`write_archive` file of format ``fmt`` up to ``version``; ValueError
    naming ``what`` when it is not one or is newer."""
    try:
        with np.load(p, allow_pickle=False) as z:
            meta = json.loads(str(z["meta_json"][()]))
            weights = {k[2:]: np.array(z[k]) for k in z.files if k.startswith("w:")}
    except (KeyError, ValueError, OSError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{p}: not a {what} file ({type(exc).__name__}: {exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        raise ValueError(f"{p}: not a {what} file (format {meta.get('format') if isinstance(meta, dict) else '?'!r})")
    if int(meta.get("format_version", 0)) > version:
        raise ValueError(f"{p}: {what} file format version {meta['format_version']} is newer than this pyinv "
                         f"supports ({version}); upgrade pyinv")
    return weights, meta


def write_model_file(weights: dict, meta: dict, path) -> Path:
    """Write ``weights`` (name → array) and ``meta`` to ``path`` as a plain ``.npz`` (parent folders are
    created; the name is kept as given, ``.npz`` is the suggested suffix)."""
    meta = json.loads(json.dumps(meta, default=_plain))
    meta.get("provenance", {}).pop("loaded_from", None)
    meta["format"], meta["format_version"] = FORMAT, FORMAT_VERSION
    return write_archive(weights, meta, path)


def _check_arch(weights: dict, meta: dict, src: str) -> None:
    a = meta["architecture"]
    f1, f2, f3 = a["filters"]
    k1, k2, k3 = a["kernels"]
    nflat = f3 * (int(a["nwav"]) // 4) + int(a.get("n_extra", 0))
    expect = {"features.0.weight": (f1, 4, k1), "features.3.weight": (f2, f1, k2), "features.6.weight": (f3, f2, k3),
              "head.1.weight": (4 * a["nwav"], nflat), "head.3.weight": (a["n_out"], 4 * a["nwav"]),
              "out_mean": (a["n_out"],), "out_std": (a["n_out"],), "stokes_weights": (4,)}
    for k, shp in expect.items():
        if k not in weights:
            raise ValueError(f"{src}: weight {k!r} missing")
        if tuple(weights[k].shape) != tuple(int(v) for v in shp):
            raise ValueError(f"{src}: the weights do not match the recorded architecture ({k} is "
                             f"{tuple(weights[k].shape)}, expected {tuple(shp)})")


def _load_npz(p: Path) -> tuple[dict, dict]:
    weights, meta = read_archive(p, "pyinv CNN model", FORMAT, FORMAT_VERSION)
    _check_arch(weights, meta, str(p))
    return weights, meta


def read_torch_file(p) -> tuple[dict, dict]:
    """Weights and metadata of a version-1 (torch ``.pt``) model file (needs torch)."""
    p = Path(p)
    try:
        import torch
    except ImportError:
        raise ValueError(f"{p}: a torch-format (version 1) CNN file; reading it needs PyTorch "
                         f"(pip install \"pyinv[train]\"), or convert it once with "
                         f"pyinv.cnn.convert_torch_file") from None
    try:
        blob = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file
        raise ValueError(f"{p}: not a pyinv CNN model file ({type(exc).__name__}: {exc})") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ValueError(f"{p}: not a pyinv CNN model file (format "
                         f"{blob.get('format') if isinstance(blob, dict) else type(blob).__name__!r})")
    meta = dict(blob["meta"])
    meta.setdefault("architecture", {}).setdefault("n_extra", 0)
    meta.setdefault("mu_input", False)
    weights = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in blob["state_dict"].items()}
    _check_arch(weights, meta, str(p))
    return weights, meta


def read_model_file(path) -> tuple[dict, dict]:
    """Weights (name → float32 array) and metadata of a model file (``.npz``, or a version-1 torch file
    when torch is installed); the metadata's ``provenance.loaded_from`` is set to ``path``.

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        Not a pyinv CNN file, a newer format version, or an architecture that does not match its weights.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"CNN model file {p} does not exist")
    with open(p, "rb") as fh:
        head = fh.read(4)
    is_npz = zipfile.is_zipfile(p) and _has_meta(p)
    got = _load_npz(p) if is_npz else read_torch_file(p) if head[:2] == b"PK" or head[:1] == b"\x80" else None
    if got is None:
        raise ValueError(f"{p}: not a pyinv CNN model file")
    weights, meta = got
    meta.setdefault("provenance", {})["loaded_from"] = os.fspath(p)
    return weights, meta


def _has_meta(p: Path) -> bool:
    try:
        with zipfile.ZipFile(p) as zf:
            return "meta_json.npy" in zf.namelist()
    except zipfile.BadZipFile:
        return False
