"""VBNF engine: vector-quantized auto-decoder radiance fields on sparse octrees.

Importing this package needs numpy only, so Blender's Python can read and decode ``.vbnf``
assets; the training modules import torch lazily where they are used.
"""

from .errors import AssetError, DatasetError, TrainingCancelled, VbnfError

__all__ = ["AssetError", "DatasetError", "TrainingCancelled", "VbnfError"]
