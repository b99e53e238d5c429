"""A folder of finished tiles, so that an interrupted coupled inversion resumes: :class:`TileStore`.

Layout: ``manifest.json`` (format version, the fingerprint of the inputs, the tiling) and one
``tile_<k>.npz`` per finished tile (the interior's arrays), written to a temporary name and renamed, so a
file that exists is complete. A rerun with the same folder and the same inputs skips the finished
tiles; inputs that differ (another cube, start, PSF, configuration, tiling or solver setting) are refused
with a ValueError naming what changed.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

__all__ = ["TileStore", "fingerprint", "STORE_VERSION"]

STORE_VERSION = 1


def fingerprint(value: Any) -> str:
    """A short SHA-1 of an array (its dtype, shape and bytes), a string, or a JSON-able value."""
    h = hashlib.sha1()
    if isinstance(value, np.ndarray):
        a = np.ascontiguousarray(value)
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(a.view(np.uint8).ravel() if a.size else b"")
    elif isinstance(value, (bytes, bytearray)):
        h.update(bytes(value))
    else:
        h.update(json.dumps(value, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


class TileStore:
    """The finished tiles of one coupled inversion in ``folder``.

    Parameters
    ----------
    folder : path
        Created when missing.
    inputs : mapping name → fingerprint string
        What the tiles depend on; compared with the manifest of an existing store.
    ntiles : int
    """

    def __init__(self, folder: str | os.PathLike, inputs: Mapping[str, str], ntiles: int):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.inputs = {str(k): str(v) for k, v in inputs.items()}
        self.ntiles = int(ntiles)
        man = self.folder / "manifest.json"
        if man.exists():
            try:
                old = json.loads(man.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ValueError(f"checkpoint {self.folder}: unreadable manifest.json ({exc}); use another "
                                 "folder or remove it") from None
            if old.get("version") != STORE_VERSION:
                raise ValueError(f"checkpoint {self.folder}: store version {old.get('version')} is not "
                                 f"{STORE_VERSION}; use another folder")
            prev = old.get("inputs", {})
            changed = sorted(k for k in set(prev) | set(self.inputs) if prev.get(k) != self.inputs.get(k))
            if changed:
                raise ValueError(f"checkpoint {self.folder} was made for other inputs (changed: "
                                 f"{', '.join(changed)}); use another folder or the original inputs")
        else:
            self._write_json(man, {"version": STORE_VERSION, "inputs": self.inputs, "ntiles": self.ntiles})

    def path(self, k: int) -> Path:
        return self.folder / f"tile_{int(k):05d}.npz"

    def finished(self) -> set[int]:
        """Indices of the tiles whose file exists (complete by construction)."""
        out = set()
        for k in range(self.ntiles):
            if self.path(k).exists():
                out.add(k)
        return out

    def save(self, k: int, arrays: Mapping[str, Any], info: Mapping[str, Any]) -> None:
        """Write tile ``k`` atomically: its arrays and a JSON-able ``info``."""
        payload = {name: np.asarray(v) for name, v in arrays.items()}
        payload["_info"] = np.asarray(json.dumps(info, default=_json_default))
        fd, tmp = tempfile.mkstemp(prefix=f".tile_{int(k):05d}.", suffix=".npz", dir=self.folder)
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **payload)
            os.replace(tmp, self.path(k))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def load(self, k: int) -> tuple[dict, dict]:
        """(arrays, info) of a finished tile."""
        with np.load(self.path(k), allow_pickle=False) as z:
            arrays = {name: z[name] for name in z.files if name != "_info"}
            info = json.loads(str(z["_info"]))
        return arrays, info

    @staticmethod
    def _write_json(path: Path, obj: Any) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(obj, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)


def _json_default(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)
