"""Training checkpoints: everything needed to resume a run or export its asset.

The octree is stored as its finest cells (the coarser levels follow from them), the model and
optimiser as state dicts, and the step counter so a resumed run draws the same random numbers
it would have drawn without the interruption. Writes are atomic (temporary file + rename): a
checkpoint on disk is always complete, even if training is killed while saving.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..asset.octree import SparseOctree
from ..atomic import atomic_path
from ..errors import VbnfError
from ..run_layout import CHECKPOINT_NAME
from .field import FieldConfig, RadianceField

FORMAT_VERSION = 1


@dataclass
class TrainState:
    """Where a run is: counters and the training time spent so far."""

    epoch: int = 0
    step: int = 0
    elapsed_s: float = 0.0


def save_checkpoint(
    path: Path,
    field_model: RadianceField,
    optimizer: torch.optim.Optimizer,
    state: TrainState,
    train_options: dict[str, Any],
) -> None:
    payload = {
        "format_version": FORMAT_VERSION,
        "field_config": field_model.config.to_dict(),
        "finest_cells": torch.from_numpy(field_model.octree.cells[-1].astype(np.int32)),
        "scale": field_model.scale,
        "offset": field_model.offset.tolist(),
        "model": field_model.state_dict(),
        "occupancy": field_model.accel.occupancy.state(),
        "optimizer": optimizer.state_dict(),
        "state": state.__dict__,
        "train_options": train_options,
    }
    with atomic_path(path) as temporary:
        torch.save(payload, temporary)


@dataclass
class LoadedCheckpoint:
    field: RadianceField
    optimizer_state: dict[str, Any]
    state: TrainState
    train_options: dict[str, Any]


def load_checkpoint(path: Path, device: str = "cpu") -> LoadedCheckpoint:
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise VbnfError("no checkpoint here", path)
    try:  # to the CPU: the octree is built there, and the model moves once, at the end
        payload = torch.load(path, map_location="cpu", weights_only=True)
        version = payload["format_version"]
    except Exception as error:  # torch raises many unrelated types for damaged pickles
        raise VbnfError(f"not a readable VBNF checkpoint ({error})", path) from error
    if version != FORMAT_VERSION:
        raise VbnfError(f"checkpoint format {version} is not supported", path)
    try:
        config = FieldConfig(**payload["field_config"])
    except (TypeError, ValueError) as error:  # written by another version of the engine
        raise VbnfError(f"unsupported field configuration ({error})", path) from error
    octree = SparseOctree.from_finest_cells(payload["finest_cells"].numpy(), config.max_level)
    field_model = RadianceField(octree, config, payload["scale"], np.asarray(payload["offset"]))
    field_model.load_state_dict(payload["model"])
    if "occupancy" in payload:  # absent in checkpoints written before empty-space skipping
        try:
            field_model.accel.occupancy.load_state(payload["occupancy"])
        except (KeyError, TypeError, ValueError) as error:
            raise VbnfError(f"damaged occupancy state ({error})", path) from error
    return LoadedCheckpoint(
        field_model.to(device),
        payload["optimizer"],
        TrainState(**payload["state"]),
        payload["train_options"],
    )
