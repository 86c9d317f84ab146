"""The ``.vbnf`` asset: a progressive, streamable file for a :class:`FieldData`.

One header (normalisation, store parameters, the fp16 decoder MLP and a chunk table with a CRC
per chunk), then one chunk per feature level, coarsest first, each holding the octree masks that
define its cells and its feature store. Any prefix ending on a chunk boundary is a valid lower
level of detail. The byte layout is specified in ``docs/vbnf-format.md``. Reading needs numpy
only (plus ``zstandard`` for zstd-compressed chunks).
"""

from .cut import cut_asset
from .header import LevelLayout
from .reader import AssetContents, Source, read_asset
from .spec import Codec
from .summary import asset_info
from .writer import encode_asset, write_asset

__all__ = [
    "AssetContents",
    "Codec",
    "LevelLayout",
    "Source",
    "asset_info",
    "cut_asset",
    "encode_asset",
    "read_asset",
    "write_asset",
]
