"""``cut_asset``: a smaller, complete asset holding the coarsest levels of another.

The chunks are copied byte for byte (their CRCs checked on the way); only the header is
rewritten, with a shorter chunk table. This is what a server does to ship a lower LOD as a file
of its own rather than as a prefix that a reader would report as truncated.
"""

from __future__ import annotations

from ...errors import AssetError, VbnfError
from .header import pack_header
from .reader import Source, scan_asset


def cut_asset(source: Source, level: int | None = None, max_bytes: int | None = None) -> bytes:
    """Keep levels up to ``level`` and/or the most levels that fit in ``max_bytes`` bytes (the
    new header included). With neither, keep every complete level: this turns a truncated
    download into a valid, smaller asset."""
    scan = scan_asset(source, level)
    header = scan.header
    if not scan.chunks:
        raise AssetError("no complete level to keep", scan.name)
    if level is not None and level > header.min_level + len(scan.chunks) - 1:
        raise VbnfError(
            f"level {level} is not in this asset (complete levels: {header.min_level}.."
            f"{header.min_level + len(scan.chunks) - 1})",
            scan.name,
        )
    count = len(scan.chunks)
    if max_bytes is not None:
        sizes = [
            header.with_chunks(header.chunks[:n]).header_bytes + sum(map(len, scan.chunks[:n]))
            for n in range(1, count + 1)
        ]
        fitting = [n for n in range(1, count + 1) if sizes[n - 1] <= max_bytes]
        if not fitting:
            raise VbnfError(
                f"even the coarsest level (level {header.min_level}) needs {sizes[0]} bytes, "
                f"more than the {max_bytes} allowed",
                scan.name,
            )
        count = fitting[-1]
    kept = header.with_chunks(header.chunks[:count])
    return pack_header(kept) + b"".join(scan.chunks[:count])
