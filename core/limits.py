"""Limits and defaults shared by the engine, the Blender extension, the kernels and the format.

This module imports nothing, so the extension (numpy only, no torch) reads the same numbers as
the trainer; ``cuda/octree_trace.cu`` repeats ``MAX_LEVEL`` for its stack size and a test checks
that the two agree.
"""

from __future__ import annotations

# Octree depth: corner coordinates need level + 1 bits, three of them fit an int64 key easily,
# and the trace kernel's stack is sized for this depth.
MAX_LEVEL = 12

# Bits per index a trainable store accepts. VQ-AD's softmax runs over 2^b entries per touched
# corner, so its bits stay small; random (hashed) indices cost nothing to train and go up to the
# .vbnf limit.
MAX_TRAIN_BITWIDTH: dict[str, int] = {"codebook": 8, "hashed": 16}
MAX_ASSET_BITWIDTH = 16  # what a .vbnf index field can hold

MAX_FEATURE_DIM = 256

# The paper's sampling: 16 stratified samples per coarsest-level cell a ray crosses.
SAMPLES_PER_VOXEL = 16

# Defaults of a bake and of `core train` (the panel, the batch command and FieldConfig).
DEFAULT_MIN_LEVEL = 3
DEFAULT_MAX_LEVEL = 6
DEFAULT_BITWIDTH = 4
DEFAULT_FEATURE_DIM = 16
# The decoder MLP's weights in an asset written by a bake or `core train`: 8-bit integers with a
# scale per row (half the fp16 bytes; the training's last steps see them, so PSNR keeps).
DEFAULT_MLP_BITS = 8
