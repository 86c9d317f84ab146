"""The trainable field (torch): feature stores, the radiance field, training, checkpoints,
evaluation, and ``render/`` (rays, octree traversal, sampling, compositing, GPU kernels)."""
