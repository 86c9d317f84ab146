"""How much memory decoding an asset may take, checked against the chunk table before any
level is allocated.

A header's sizes are bounded by what each level can hold, yet a full level 11 still declares
gigabytes, and a few kilobytes of zstd can honestly expand to that. So reading estimates, from
the table alone, the peak its decoded arrays and octree will need, and refuses an asset whose
estimate exceeds a budget: :data:`DEFAULT_MEMORY_BUDGET_BYTES`, or ``VBNF_MEMORY_BUDGET``
(bytes, or with a K/M/G suffix) in the environment, or the ``memory_budget_bytes`` a caller
passes. The estimate errs high, so a refused asset always names the level that broke it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from ...errors import AssetError, VbnfError
from .header import AssetHeader, ChunkEntry

DEFAULT_MEMORY_BUDGET_BYTES = 4 << 30
BUDGET_ENV = "VBNF_MEMORY_BUDGET"
# Peak bytes per corner of rebuilding the octree from its masks and finding its corners (the
# cell and corner tables plus the sort temporaries; measured at 590..620 for full octrees).
OCTREE_PEAK_BYTES_PER_CORNER = 640
INDEX_BYTES = 8  # decoded codebook indices are int64
_SUFFIXES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def memory_budget_bytes(requested: int | None = None) -> int:
    """The budget in force: ``requested``, else the environment's, else the default."""
    if requested is not None:
        return requested
    text = os.environ.get(BUDGET_ENV, "").strip().upper().removesuffix("B")
    if not text:
        return DEFAULT_MEMORY_BUDGET_BYTES
    number, suffix = (text[:-1], text[-1]) if text[-1] in _SUFFIXES else (text, "")
    try:
        budget = int(float(number) * _SUFFIXES[suffix])
    except ValueError as error:
        raise VbnfError(f"{BUDGET_ENV}={os.environ[BUDGET_ENV]!r} is not a size") from error
    if budget <= 0:
        raise VbnfError(f"{BUDGET_ENV} must be positive, got {os.environ[BUDGET_ENV]!r}")
    return budget


def decoded_level_bytes(header: AssetHeader, entry: ChunkEntry) -> int:
    """Upper estimate of the memory decoding ``entry``'s level needs: its arrays as float32 /
    int64 (the packed indices too, while they unpack) and the octree rebuilt up to it (a level
    has at least as many corners as cells, so its corner count bounds both)."""
    store_bytes = 0
    for array in header.store_arrays(entry):
        if array.role == "index":
            store_bytes += array.bytes + INDEX_BYTES * array.shape[0]
        else:
            store_bytes += 2 * array.bytes  # fp16 in the file, float32 decoded
    return entry.structure_bytes + store_bytes + OCTREE_PEAK_BYTES_PER_CORNER * entry.corners


def check_budget(header: AssetHeader, entries: Sequence[ChunkEntry], budget_bytes: int) -> None:
    """Refuse to decode ``entries`` when their estimate exceeds ``budget_bytes``, naming the
    first level that crosses it and what it declares."""
    total_bytes = 0
    for entry in entries:
        total_bytes += decoded_level_bytes(header, entry)
        if total_bytes > budget_bytes:
            raise AssetError(
                f"level {entry.level} declares {entry.corners} corners of {header.feature_dim} "
                f"{header.store} features: decoding up to it needs about {_mib(total_bytes)} "
                f"MiB, over the {_mib(budget_bytes)} MiB reading budget (read fewer levels, "
                f"or raise {BUDGET_ENV})"
            )


def _mib(size_bytes: int) -> int:
    return -(-size_bytes // (1 << 20))
