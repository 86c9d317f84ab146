"""File names inside a training run folder (``python -m core train DATA -o RUN``).

Kept apart from :mod:`core.checkpoint`, which imports torch, so that Blender's own Python (the
extension's work folder) can name a run's checkpoint without it.
"""

CHECKPOINT_NAME = "checkpoint.pt"
ASSET_NAME = "asset.vbnf"
METRICS_NAME = "metrics.json"
TRAIN_LOCK_NAME = "train.lock"  # held by the run writing here (see core/locks.py)
