"""The record schema of a map's pixels, the result store that holds the records, and content fingerprints.

Record schema
-------------
A pixel problem (:class:`pyinv.maps.pixel.InversionPixels`, :class:`pyinv.maps.synthesis.SynthesisPixels`)
declares the record each of its pixels gives as a :class:`Record`: one :class:`Field` per output, with
its name, dtype, shape per pixel (in the store's dimensions, :class:`Dims`), the value of a pixel without
a result, and the attribute(s) of the map's result object that it becomes. Everything else reads that
one declaration: the store makes one ``<name>.npy`` per field, a failed pixel gets a blank record
(:meth:`Record.blank`), and :class:`~pyinv.maps.result.InversionResult` /
:class:`~pyinv.maps.synthesis.SynthesisMap` take their per-pixel attributes from it
(:meth:`Record.result_fields`, :meth:`Record.result_arrays`).

Store
-----
A folder of ``.npy`` files (memory-mapped), one per field, indexed by raster pixel, plus ``meta.json``
(the shapes and a content digest of every input, by name). ``status == STATUS_PENDING`` marks pixels not
yet finished; each pixel's data are written (and, in a user's checkpoint, synced to disk) before its
status. Pool workers write a durable store in batches (:meth:`ResultStore.put` with ``batch=True``, then
:meth:`ResultStore.commit`): every pixel's data at once, its status once the data of the batch are synced
with one msync per field (a batch holds less than :data:`COMMIT_SECONDS` of the worker's time, and ends
with its chunk), instead of one msync per field and pixel — those cost ~1 ms each, together as much as
half a CNN-started pixel's inversion. Reopening a store with the same fingerprint computes only the
pending pixels; a store made for other inputs is refused with the names of the inputs that changed. The
format (``pyinv-store-2``) is the one written since issue 13: file names, dtypes, shapes and ``meta.json``
keys are those of the records.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, NamedTuple

import numpy as np

from ..status import STATUS_PENDING

__all__ = ["Dims", "Field", "Record", "ResultStore", "fingerprint", "fingerprints", "filled_npy", "write_npy",
           "sync_rows", "release_pages", "COMMIT_SECONDS"]

#: A durable store's batch of finished pixels (:meth:`ResultStore.put` with ``batch=True``) is committed once
#: this many seconds have passed since the last commit: the batch then holds less than that of the writer's
#: time, which is what a worker killed with SIGKILL (or a machine crash) can lose on top of the pixel it was
#: computing (those pixels are computed again by the next pool or run). A pixel that takes longer is
#: committed as soon as it finishes.
COMMIT_SECONDS = 1.0
_clock = time.monotonic


# ------------------------------------------------------------------------------------------ the schema
class Dims(NamedTuple):
    """The sizes a record's shapes are written in (and the store's ``meta.json`` ``shapes``)."""

    ndep: int
    nwav: int
    ncyc: int
    naux: int = 0


@dataclass(frozen=True)
class Field:
    """One output of a pixel's record.

    Attributes
    ----------
    name : str
        The record's key and the store's file ``<name>.npy``.
    dtype : str
        numpy dtype of the store's array.
    shape : tuple
        Shape per pixel: integers and names of :class:`Dims` (``"ndep"``, ``"nwav"``, ``"ncyc"``, ``"naux"``).
    fill : scalar
        The value of a pixel without a result (the store's initial value, a blank record's value).
    result : str, tuple or None
        The result object's attribute it becomes: a name, or one name per entry of its last axis (None
        leaves that entry out); None: not part of the result.
    optional : bool
        The result may lack it (files of older versions, or of one-component maps): it defaults to ``fill``.
    blank : bool
        Part of a blank record (False: a failed pixel leaves the store's value, e.g. the auxiliary values a
        start stream writes).
    """

    name: str
    dtype: str
    shape: tuple = ()
    fill: Any = np.nan
    result: str | tuple[str | None, ...] | None = None
    optional: bool = False
    blank: bool = True

    def pixel_shape(self, dims: Dims) -> tuple[int, ...]:
        """The shape per pixel with the dimension names replaced by their sizes."""
        return tuple(int(getattr(dims, d)) if isinstance(d, str) else int(d) for d in self.shape)

    def result_names(self) -> tuple[str, ...]:
        """The result attributes the field becomes (none, one, or one per entry of its last axis)."""
        if self.result is None:
            return ()
        return (self.result,) if isinstance(self.result, str) else tuple(r for r in self.result if r is not None)


class Record:
    """The fields of one pixel's record, in order; ``status`` is required (the store writes it last)."""

    def __init__(self, *fields: Field):
        names = [f.name for f in fields]
        if len(set(names)) != len(names) or "status" not in names:
            raise ValueError(f"a record needs distinct field names and a 'status' field, got {names}")
        self.fields = tuple(fields)

    def __iter__(self):
        return iter(self.fields)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def without(self, *names: str) -> "Record":
        """The record less the fields ``names``."""
        return Record(*(f for f in self.fields if f.name not in names))

    def blank(self, dims: Dims, status: int) -> dict[str, Any]:
        """The record of a pixel without a result: every field's fill value (fresh arrays), ``status``."""
        rec: dict[str, Any] = {}
        for f in self.fields:
            if f.blank and f.name != "status":
                shape = f.pixel_shape(dims)
                rec[f.name] = np.full(shape, f.fill) if shape else f.fill
        rec["status"] = int(status)
        return rec

    def store_arrays(self, npix: int, dims: Dims) -> dict[str, tuple[tuple[int, ...], str, Any]]:
        """Per field: the shape of its store array (npix, ...), dtype and fill value."""
        return {f.name: ((int(npix),) + f.pixel_shape(dims), f.dtype, f.fill) for f in self.fields}

    def result_names(self, optional: bool | None = None) -> list[str]:
        """The result attributes, in order (``optional``: only the optional / the required ones)."""
        return [r for f in self.fields if optional is None or f.optional == optional for r in f.result_names()]

    def result_arrays(self, get: Callable[[str], np.ndarray], shape: tuple[int, int]) -> dict[str, np.ndarray]:
        """The result attributes from the store's arrays: ``get(name)`` gives a field's array (npix, ...),
        reshaped to ``shape + (...)`` here; a field of several attributes is split along its last axis."""
        out = {}
        for f in self.fields:
            if f.result is None:
                continue
            a = get(f.name)
            a = a.reshape(tuple(shape) + a.shape[1:])
            if isinstance(f.result, str):
                out[f.result] = a
            else:
                for k, r in enumerate(f.result):
                    if r is not None:
                        out[r] = a[..., k]
        return out

    def result_fields(self, cls: type) -> type:
        """Class decorator, applied before ``@dataclass``: the class gets one field per result attribute
        of this record: the required ones first, then the class's own annotated fields, then the optional
        ones (default None). The result classes list no per-pixel array of their own."""
        own = dict(cls.__dict__.get("__annotations__", {}))
        ann = {r: "np.ndarray" for r in self.result_names(optional=False)}
        ann.update(own)
        for r in self.result_names(optional=True):
            ann[r] = "np.ndarray | None"
            setattr(cls, r, None)
        cls.__annotations__ = ann
        return cls

    def optional_defaults(self, dims: Dims, shape: tuple[int, ...],
                          wanted: Callable[[str, str], bool] | None = None) -> Iterable[tuple[str, str, np.ndarray]]:
        """(field name, attribute, default array of ``shape`` + its shape per attribute) of the optional
        result attributes; with ``wanted(field name, attribute)``, only of those it accepts (the others are
        not allocated: a default of component 2's atmospheres is as large as the result's own)."""
        for f in self.fields:
            if not f.optional:
                continue
            per = f.pixel_shape(dims)
            if not isinstance(f.result, str):
                per = per[:-1]
            for r in f.result_names():
                if wanted is None or wanted(f.name, r):
                    yield f.name, r, np.full(tuple(shape) + per, f.fill, dtype=np.dtype(f.dtype))


# ------------------------------------------------------------------------------------------- the store
class ResultStore:
    """Per-pixel records in a folder of memory-mapped ``.npy`` files (see the module docstring).

    A *durable* store (a user's checkpoint) syncs each pixel's data to disk before its status (and the
    status afterwards), so that after a crash of the machine a pixel marked finished has its data; in
    batches where the writer asks for them (:meth:`put`)."""

    def __init__(self, path: str | os.PathLike, arrays: dict[str, np.ndarray], meta: dict, record: Record):
        self.path = Path(path)
        self.arrays = arrays
        self.meta = meta
        self.record = record
        self.durable = bool(meta.get("durable", False))
        self._held: list[tuple[int, int]] = []      # (pixel, status) written but not committed (batch=True)
        self._held_keys: set[str] = set()
        self._committed_at = _clock()

    @property
    def status(self) -> np.ndarray:
        return self.arrays["status"]

    @property
    def dims(self) -> Dims:
        s = self.meta["shapes"]
        return Dims(int(s["ndep"]), int(s["nwav"]), int(s["ncyc"]), int(s.get("naux", 0)))

    @property
    def ncomp(self) -> int:
        """Components whose outputs the store holds (1 or 2)."""
        return int(self.meta["shapes"].get("ncomp", 1))

    @property
    def naux(self) -> int:
        """Auxiliary start values per pixel the store holds (``start_aux``; 0: none)."""
        return int(self.meta["shapes"].get("naux", 0))

    def blank(self, status: int) -> dict[str, Any]:
        """A blank record of this store's pixels (:meth:`Record.blank`)."""
        return self.record.blank(self.dims, status)

    @staticmethod
    def shapes(npix: int, dims: Dims, ncomp: int = 1) -> dict[str, int]:
        """``meta.json``'s ``shapes``: npix, ndep, nwav, ncyc, and ncomp / naux when not 1 / 0."""
        shapes = {"npix": int(npix), "ndep": int(dims.ndep), "nwav": int(dims.nwav), "ncyc": int(dims.ncyc)}
        if int(ncomp) != 1:
            shapes["ncomp"] = int(ncomp)
        if int(dims.naux) > 0:
            shapes["naux"] = int(dims.naux)
        return shapes

    @classmethod
    def open_or_create(cls, path: str | os.PathLike, record: Record, *, npix: int, dims: Dims,
                       fingerprint: str | dict[str, str], extra_meta: dict | None = None, durable: bool = False,
                       ncomp: int = 1) -> tuple["ResultStore", bool]:
        """Open the store at ``path`` (same fingerprint and shapes required) or create it with one file per
        field of ``record``. Returns (store, resumed).

        ``fingerprint`` is one digest or a dict of digests per input (then a refusal names the inputs
        that changed); ``ncomp`` is recorded in the shapes (2: the record has the component-2 fields).

        The files are written with their fill values through ordinary writes, and mapped afterwards: this
        process maps no page of them until it reads or writes it (its memory does not grow with the map)."""
        path = Path(path)
        metaf = path / "meta.json"
        shapes = cls.shapes(npix, dims, ncomp)
        parts = fingerprint if isinstance(fingerprint, dict) else {"inputs": str(fingerprint)}
        total = _combine(parts)
        fields = record.store_arrays(npix, dims)
        if metaf.exists():
            meta = json.loads(metaf.read_text())
            if meta.get("fingerprint") != total or meta.get("shapes") != shapes:
                old = meta.get("fingerprints") or {}
                changed = sorted(k for k in set(parts) | set(old) if old.get(k) != parts.get(k))
                if meta.get("shapes") != shapes:
                    changed.append(f"shapes {meta.get('shapes')} -> {shapes}")
                raise ValueError(f"checkpoint {path} was written for different inputs; changed: "
                                 f"{', '.join(changed) or 'unknown (a store of an older format)'}. Remove it or "
                                 "choose another path")
            missing = [k for k in fields if not (path / f"{k}.npy").exists()]
            if missing:
                raise ValueError(f"checkpoint {path} lacks {missing} (a store of an older pyinv?); remove it or "
                                 "choose another path")
            arrays = {k: np.load(path / f"{k}.npy", mmap_mode="r+") for k in fields}
            meta["durable"] = bool(durable)
            return cls(path, arrays, meta, record), True
        if path.exists() and any(path.iterdir()):
            raise ValueError(f"checkpoint path {path} exists, is not empty and holds no pyinv store")
        path.mkdir(parents=True, exist_ok=True)
        arrays = {k: filled_npy(path / f"{k}.npy", shape, dt, fill, durable=durable)
                  for k, (shape, dt, fill) in fields.items()}
        meta = {"format": "pyinv-store-2", "fingerprint": total, "fingerprints": parts, "shapes": shapes,
                "durable": bool(durable), **(extra_meta or {})}
        st = cls(path, arrays, meta, record)
        st._write_meta()  # the store exists once meta.json does
        return st, False

    @classmethod
    def attach(cls, path: str | os.PathLike, record: Record) -> "ResultStore":
        """Open an existing store of ``record``'s pixels for writing (used by local pool workers)."""
        path = Path(path)
        meta = json.loads((path / "meta.json").read_text())
        arrays = {k: np.load(path / f"{k}.npy", mmap_mode="r+") for k in record.names}
        return cls(path, arrays, meta, record)

    def put(self, p: int, rec: dict[str, Any], *, batch: bool = False) -> bool:
        """Write one pixel's record: its data (synced when durable), then its status.

        With ``batch=True`` a durable store writes the data now and holds the status back until
        :meth:`commit`, which syncs the data of every pixel held with one msync per field, then writes and
        syncs their statuses. It commits by itself once :data:`COMMIT_SECONDS` have passed since the last
        commit, so the pixels held took less than that to compute, and a slower pixel is committed at once.
        A store that is not durable writes the status at once either way. Returns whether the pixel's
        status is written (False: held for the next commit)."""
        written = [k for k in rec if k != "status"]
        for k in written:
            self.arrays[k][p] = rec[k]
        if batch and self.durable:
            self._held.append((int(p), int(rec["status"])))
            self._held_keys.update(written)
            if _clock() - self._committed_at < COMMIT_SECONDS:
                return False
            self.commit()
            return True
        self._write_status(np.array([p], dtype=np.int64), rec["status"], written)
        return True

    def commit(self) -> None:
        """Write the statuses :meth:`put` held back (``batch=True``): the held pixels' data rows are synced
        first (one msync per field over their range of rows), then their statuses written and synced. Also
        where nothing is held, the time of the last commit is now (a writer calls it when a chunk starts)."""
        if self._held:
            ids = np.array([p for p, _ in self._held], dtype=np.int64)
            self._write_status(ids, np.array([s for _, s in self._held], dtype=np.int32), self._held_keys)
            self._held = []
            self._held_keys = set()
        self._committed_at = _clock()

    def put_many(self, ids: np.ndarray, recs: dict[str, np.ndarray]) -> None:
        """Write several pixels' records (data of all first, synced when durable; statuses last)."""
        a = self.arrays
        ids = np.asarray(ids, dtype=np.int64)
        for k, v in recs.items():
            if k != "status":
                a[k][ids] = v
        self._write_status(ids, recs["status"], [k for k in recs if k != "status"])

    def _write_status(self, ids: np.ndarray, status: Any, written: Iterable[str]) -> None:
        """Statuses of pixels ``ids`` whose data (fields ``written``) are in place: a durable store syncs the
        data rows first, and the statuses after."""
        a = self.arrays
        lo, hi = (int(ids.min()), int(ids.max()) + 1) if ids.size else (0, 0)
        if self.durable and ids.size:
            for k in written:
                sync_rows(a[k], lo, hi)
        a["status"][ids] = status
        if self.durable and ids.size:
            sync_rows(a["status"], lo, hi)

    def flush(self) -> None:
        """Commit held statuses (:meth:`commit`) and write every mapped array back to its file."""
        self.commit()
        for a in self.arrays.values():
            if isinstance(a, np.memmap):
                a.flush()

    def release(self) -> None:
        """Drop this process's mapped pages of the store (they stay in the file / page cache)."""
        for a in self.arrays.values():
            release_pages(a)

    def pending(self, ids: np.ndarray) -> np.ndarray:
        """The raster indices among ``ids`` not finished yet."""
        ids = np.asarray(ids, dtype=np.int64)
        return ids[self.status[ids] == STATUS_PENDING]

    def set_meta(self, **kw: Any) -> None:
        self.meta.update(kw)
        self._write_meta()

    def _write_meta(self) -> None:
        tmp = self.path / "meta.json.tmp"
        with open(tmp, "w") as f:
            f.write(json.dumps(self.meta, indent=1, default=str))
            f.flush()
            if self.durable:
                os.fsync(f.fileno())
        os.replace(tmp, self.path / "meta.json")


# ------------------------------------------------------------------------------------------ .npy files
#: Bytes per ordinary write when a file is filled or copied (:func:`filled_npy`, :func:`write_npy`).
WRITE_BLOCK = 4 << 20


def filled_npy(path: Path, shape: tuple[int, ...], dtype: Any, fill: Any, durable: bool = False) -> np.ndarray:
    """A new ``.npy`` file of ``shape`` holding ``fill`` everywhere, written with ordinary writes (no page of
    it is mapped here), returned memory-mapped read-write."""
    dt = np.dtype(dtype)
    n = int(np.prod(shape, dtype=np.int64))
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(dt), "fortran_order": False,
                                                 "shape": tuple(int(v) for v in shape)})
        block = np.full(max(1, min(n, WRITE_BLOCK // dt.itemsize)), fill, dtype=dt)
        left = n
        while left > 0:
            m = min(left, block.size)
            f.write(block[:m].data)
            left -= m
        f.flush()
        if durable:
            os.fsync(f.fileno())
    return np.load(path, mmap_mode="r+")


def write_npy(path: Path, arr: np.ndarray) -> None:
    """``arr`` to a ``.npy`` file in blocks of rows (no page of the file is mapped here, and no copy of
    ``arr`` is made: the inputs of a local pool cost this process no memory that grows with the map)."""
    a = np.asanyarray(arr)
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(a.dtype), "fortran_order": False,
                                                 "shape": a.shape})
        if a.ndim == 0 or a.shape[0] == 0:
            f.write(np.ascontiguousarray(a).tobytes())
            return
        rows = max(1, WRITE_BLOCK // max(1, a[0].nbytes))
        for i in range(0, a.shape[0], rows):
            f.write(np.ascontiguousarray(a[i:i + rows]).data)


def sync_rows(arr: np.ndarray, start: int, stop: int) -> None:
    """msync the pages holding rows ``start:stop`` of a memory-mapped array (first axis)."""
    mm = getattr(arr, "_mmap", None)
    if mm is None or stop <= start:
        return
    import mmap as _mm

    row = int(arr.strides[0]) if arr.ndim else int(arr.itemsize)
    head = int(getattr(arr, "offset", 0)) % _mm.ALLOCATIONGRANULARITY  # where the data start in the mapping
    lo = head + start * row
    hi = min(len(mm), head + stop * row)
    lo -= lo % _mm.PAGESIZE
    with contextlib.suppress(ValueError, OSError):
        mm.flush(lo, max(0, hi - lo))


def release_pages(arr: Any) -> None:
    """madvise(DONTNEED) a memory-mapped array: this process's resident pages of it are dropped (the data
    stay in the file and the page cache), so a long-running worker's RSS does not grow with the map. Anything
    that is not a memory map is left alone."""
    mm = getattr(arr, "_mmap", None)
    if mm is None or not hasattr(mm, "madvise"):
        return
    import mmap as _mm

    with contextlib.suppress(ValueError, OSError, AttributeError):
        mm.madvise(_mm.MADV_DONTNEED)


# ---------------------------------------------------------------------------------------- fingerprints
def _combine(parts: dict[str, str]) -> str:
    h = hashlib.sha256()
    for k in sorted(parts):
        h.update(k.encode())
        h.update(str(parts[k]).encode())
    return h.hexdigest()


def _hash_into(h: Any, p: Any) -> None:
    if isinstance(p, np.ndarray):
        h.update(b"ndarray")
        h.update(str((p.dtype.str, p.shape)).encode())
        h.update(np.ascontiguousarray(p).view(np.uint8).reshape(-1).data)
    elif isinstance(p, (str, os.PathLike)) and not isinstance(p, str) or (
            isinstance(p, str) and os.path.isfile(p)):
        fp = Path(p)
        h.update(b"file")
        if fp.is_file():
            with open(fp, "rb") as f:  # the file's content, not its name
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
        else:
            h.update(b"missing:" + str(p).encode())
    elif isinstance(p, (tuple, list)):
        h.update(f"seq{len(p)}".encode())
        for q in p:
            _hash_into(h, q)
    elif isinstance(p, dict):
        h.update(f"dict{len(p)}".encode())
        for k in sorted(p, key=str):
            h.update(str(k).encode())
            _hash_into(h, p[k])
    else:
        try:
            h.update(pickle.dumps(p, protocol=4))
        except Exception:
            h.update(repr(p).encode())


def fingerprint(*parts: Any) -> str:
    """SHA-256 of arrays (by bytes, dtype and shape), files (``Path`` objects or names of existing files:
    by content) and other picklable objects."""
    h = hashlib.sha256()
    for p in parts:
        _hash_into(h, p)
    return h.hexdigest()


def fingerprints(**inputs: Any) -> dict[str, str]:
    """One content digest per named input (see :func:`fingerprint`)."""
    return {k: fingerprint(v) for k, v in inputs.items()}
