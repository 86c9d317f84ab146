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
# The decoder MLP's weights in an asset written by a bake or `core train`: 6-bit integers with a
# scale per row (5.0 kB instead of 12.3 kB at fp16; the training's last steps see them, and on
# the demo scene 6 bits cost no PSNR, measured in bench/asset_size.py).
DEFAULT_MLP_BITS = 6
# Weight of the indices' expected bits in a bake's loss (core/neural/rate.py): on the demo scene
# it halves the coded indices for < 0.1 dB; 0.01 was far too strong (-3 dB at the finest level).
DEFAULT_INDEX_RATE = 5e-4
