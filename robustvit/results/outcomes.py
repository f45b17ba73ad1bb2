"""Per-image outcomes of a cell: what its metrics are recomputed from (numpy only, no torch).

A cell's :class:`Outcomes` hold named per-image arrays, the *pool* of images each array runs over,
and a little metadata; the store keeps them as one binary blob per cell (:func:`encode` /
:func:`decode`), written in the same transaction as the cell's records.

Conventions (what :mod:`robustvit.results.replicates` reads):

* **Pools.** Every array belongs to a pool of images, e.g. ``images`` (the evaluation images),
  ``id`` / ``ood:faces`` (an OOD cell's ID test set and OOD set). A pool's image indices (positions
  in the dataset, increasing) are the array ``@<pool>``. Two models are paired on a pool when these
  indices are equal; bootstrap replicates draw each pool's images once, shared by every cell and
  model of a protocol, so comparisons are paired by construction.
* **Mean-type metrics.** An array named like a metric (``top1``, ``error``, ``robust_acc``,
  ``mean_error``, ``mce``) holds per-image values whose mean is the metric: booleans for
  proportions (Wilson interval), floats otherwise (bootstrap interval). NaN marks images outside
  the metric's denominator (``success_rate`` counts only the initially correct images).
* **OOD metrics.** ``meta["ood"] = {"id": "id_score", "ood": "ood_score", "tpr": 0.95}``: the
  outlier scores of the ID and OOD images; ``auroc``, ``aupr_in``, ``aupr_out`` and ``fpr95`` are
  computed from them (:mod:`robustvit.metrics.ood` conventions, OOD positive).
* **ECE.** ``meta["ece"] = {"conf": "conf", "correct": "top1", "bins": 15}``.
* **Means over cells.** ``meta["mean_of"] = {metric: [cell, ...]}``: the metric is the mean of that
  metric over the listed cells of the same model and suite (OOD group means).
"""

from __future__ import annotations

import base64
import json
import struct
import zlib
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

MAGIC = b"RVO1"
_HEADER = struct.Struct("<4sI")


@dataclass
class Outcomes:
    """Per-image arrays of one cell, their pools and metadata (see the module docstring)."""

    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    pools: dict[str, str] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    #: bootstrap replicates already computed from these outcomes (not stored)
    memo: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    def add_pool(self, pool: str, index: Any) -> Outcomes:
        """Declare a pool by its image indices (positions in the dataset)."""
        self.arrays[f"@{pool}"] = np.asarray(index, dtype=np.int64).reshape(-1)
        return self

    def add(self, name: str, values: Any, pool: str = "images") -> Outcomes:
        """Add a per-image array of ``pool`` (booleans and float64 stay as they are, other numbers become float32)."""
        arr = _numpy(values).reshape(-1)
        if arr.dtype not in (np.bool_, np.float64):
            arr = arr.astype(np.float32)
        index = self.arrays.get(f"@{pool}")
        if index is not None and len(index) != len(arr):
            raise ValueError(f"array {name!r} has {len(arr)} values, pool {pool!r} {len(index)} images")
        self.arrays[name] = arr
        self.pools[name] = pool
        return self

    def index(self, pool: str) -> np.ndarray | None:
        return self.arrays.get(f"@{pool}")

    def pool_size(self, pool: str) -> int:
        index = self.index(pool)
        if index is not None:
            return len(index)
        return next(len(a) for n, a in self.arrays.items() if self.pools.get(n) == pool)

    def __bool__(self) -> bool:
        return bool(self.arrays) or bool(self.meta)


def concat(parts: list[Outcomes]) -> Outcomes:
    """The outcomes of one cell computed piecewise on consecutive image shards, joined in shard order
    (every array and pool index concatenated; metadata from the first part)."""
    first = parts[0]
    out = Outcomes(pools=dict(first.pools), meta=dict(first.meta))
    for name in first.arrays:
        missing = [i for i, p in enumerate(parts) if name not in p.arrays]
        if missing:
            raise ValueError(f"shard {missing[0]} lacks the outcome array {name!r}")
        out.arrays[name] = np.concatenate([p.arrays[name] for p in parts])
    return out


def _numpy(values: Any) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor, on any device
        values = values.detach().to("cpu").numpy()
    return np.asarray(values)


def encode(outcomes: Outcomes) -> bytes:
    """One compact blob: a JSON header, then the raw arrays (booleans bit-packed)."""
    entries, chunks, offset = [], [], 0
    for name, arr in outcomes.arrays.items():
        if arr.dtype == np.bool_:
            data, dtype = np.packbits(arr).tobytes(), "bool"
        elif name.startswith("@"):  # pool indices: a range, or increasing deltas, deflated
            data, dtype = _encode_index(arr)
        else:
            dtype = "<i8" if arr.dtype.kind in "iu" else "<f8" if arr.dtype == np.float64 else "<f4"
            data = np.ascontiguousarray(arr, dtype=dtype).tobytes()
        entries.append([name, dtype, int(arr.size), offset, len(data)])
        chunks.append(data)
        offset += len(data)
    header = json.dumps({"arrays": entries, "pools": outcomes.pools, "meta": outcomes.meta},
                        separators=(",", ":")).encode()
    return _HEADER.pack(MAGIC, len(header)) + header + b"".join(chunks)


def bits_to_text(values: Any) -> str:
    """Booleans (any shape) as base64 of their packed bits: compact, JSON-safe partial state."""
    return base64.b64encode(np.packbits(_numpy(values).astype(bool).reshape(-1)).tobytes()).decode("ascii")


def text_to_bits(text: str, count: int) -> np.ndarray:
    """The ``count`` booleans :func:`bits_to_text` wrote (flat; reshape as needed)."""
    return np.unpackbits(np.frombuffer(base64.b64decode(text), dtype=np.uint8), count=count).astype(bool)


def _encode_index(index: np.ndarray) -> tuple[bytes, str]:
    index = np.asarray(index, dtype=np.int64)
    if index.size == 0 or np.array_equal(index, np.arange(index[0], index[0] + index.size)):
        return struct.pack("<q", int(index[0]) if index.size else 0), "range"
    deltas = np.diff(index, prepend=0)
    return zlib.compress(deltas.astype("<i8").tobytes(), 1), "delta"


@lru_cache(maxsize=64)
def _range(first: int, length: int) -> np.ndarray:
    out = np.arange(first, first + length, dtype=np.int64)
    out.flags.writeable = False  # shared by every blob with this pool
    return out


def _decode_index(kind: str, data: bytes, length: int) -> np.ndarray:
    if kind == "range":
        (first,) = struct.unpack("<q", data)
        return _range(first, length)
    return np.cumsum(np.frombuffer(zlib.decompress(data), dtype="<i8"))


def decode(blob: bytes | memoryview) -> Outcomes:
    """The :class:`Outcomes` of a blob written by :func:`encode`."""
    blob = bytes(blob)
    magic, size = _HEADER.unpack_from(blob)
    if magic != MAGIC:
        raise ValueError("not a robustvit outcomes blob")
    start = _HEADER.size + size
    header = json.loads(blob[_HEADER.size:start])
    arrays: dict[str, np.ndarray] = {}
    for name, dtype, length, offset, nbytes in header["arrays"]:
        if dtype == "bool":
            packed = np.frombuffer(blob, dtype=np.uint8, count=nbytes, offset=start + offset)
            raw = np.unpackbits(packed, count=length).astype(bool)
        elif dtype in ("range", "delta"):
            raw = _decode_index(dtype, blob[start + offset:start + offset + nbytes], length)
        else:
            raw = np.frombuffer(blob, dtype=dtype, count=length, offset=start + offset)
        arrays[name] = raw
    return Outcomes(arrays, dict(header["pools"]), dict(header["meta"]))
