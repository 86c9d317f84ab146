"""Training checkpoints: everything needed to resume a run or export its asset.

The octree is stored as its finest cells (the coarser levels follow from them), the model and
optimiser as state dicts, and the step counter so a resumed run draws the same random numbers
it would have drawn without the interruption. Writes are atomic (temporary file + rename): a
checkpoint on disk is always complete, even if training is killed while saving.
"""

from __future__ import annotations

import math
import zipfile
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
    with atomic_path(path, _complete_archive) as temporary, open(temporary, "wb") as stream:
        torch.save(payload, stream)  # a stream, so a full disk is an OSError, not torch's


def _complete_archive(temporary: Path) -> str | None:
    """What is wrong with the zip archive ``torch.save`` wrote (None: every member is whole)."""
    try:
        with zipfile.ZipFile(temporary) as archive:
            damaged = archive.testzip()
    except (OSError, zipfile.BadZipFile) as error:
        return f"not a complete archive ({error})"
    return None if damaged is None else f"member {damaged} is damaged"


@dataclass
class LoadedCheckpoint:
    field: RadianceField
    optimizer_state: dict[str, Any]
    state: TrainState
    train_options: dict[str, Any]


PAYLOAD_FIELDS: dict[str, type | tuple[type, ...]] = {
    "field_config": dict,
    "finest_cells": torch.Tensor,
    "scale": (int, float),
    "offset": list,
    "model": dict,
    "optimizer": dict,
    "state": dict,
    "train_options": dict,
}


def load_checkpoint(path: Path, device: str = "cpu") -> LoadedCheckpoint:
    """Load and validate a checkpoint: every field it must have, of its type and range, with
    weights that fit its configuration, or one :class:`VbnfError` naming the file and field."""
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
    for name, kind in PAYLOAD_FIELDS.items():
        if not isinstance(payload.get(name), kind) or isinstance(payload.get(name), bool):
            raise VbnfError(f"checkpoint field '{name}' is missing or not a {_names(kind)}", path)
    try:
        config = FieldConfig(**payload["field_config"])
    except (TypeError, ValueError) as error:  # written by another version of the engine
        raise VbnfError(f"unsupported field configuration ({error})", path) from error
    scale, offset = _normalization(payload, path)
    octree = SparseOctree.from_finest_cells(_finest_cells(payload, config, path), config.max_level)
    field_model = RadianceField(octree, config, scale, offset)
    try:
        field_model.load_state_dict(payload["model"])
    except (RuntimeError, KeyError, TypeError) as error:
        first_line = str(error).strip().splitlines()[0]
        raise VbnfError(
            f"checkpoint field 'model' does not fit its configuration ({first_line})", path
        ) from error
    if not all(
        torch.isfinite(tensor).all()
        for tensor in field_model.state_dict().values()
        if tensor.is_floating_point()
    ):
        raise VbnfError("checkpoint field 'model' holds non-finite weights", path)
    if "occupancy" in payload:  # absent in checkpoints written before empty-space skipping
        try:
            field_model.accel.occupancy.load_state(payload["occupancy"])
        except (KeyError, TypeError, ValueError) as error:
            raise VbnfError(f"checkpoint field 'occupancy' is damaged ({error})", path) from error
    return LoadedCheckpoint(
        field_model.to(device),
        payload["optimizer"],
        _train_state(payload["state"], path),
        payload["train_options"],
    )


def _names(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(item.__name__ for item in kinds)


def _normalization(payload: dict[str, Any], path: Path) -> tuple[float, np.ndarray]:
    scale = float(payload["scale"])
    if not (math.isfinite(scale) and scale > 0):
        raise VbnfError(f"checkpoint field 'scale' must be finite and positive, got {scale}", path)
    offset = payload["offset"]
    if len(offset) != 3 or not all(
        isinstance(value, int | float) and math.isfinite(value) for value in offset
    ):
        raise VbnfError(f"checkpoint field 'offset' must be 3 finite numbers, got {offset}", path)
    return scale, np.asarray(offset, dtype=np.float64)


def _finest_cells(payload: dict[str, Any], config: FieldConfig, path: Path) -> np.ndarray:
    cells = payload["finest_cells"]
    resolution = 1 << config.max_level
    if (
        cells.ndim != 2
        or cells.shape[1] != 3
        or cells.shape[0] == 0
        or cells.is_floating_point()
        or int(cells.min()) < 0
        or int(cells.max()) >= resolution
    ):
        raise VbnfError(
            f"checkpoint field 'finest_cells' must be [N, 3] integers in 0..{resolution - 1}, "
            f"got a {cells.dtype} tensor of shape {tuple(cells.shape)}",
            path,
        )
    return cells.numpy()


def _train_state(values: dict[str, Any], path: Path) -> TrainState:
    try:
        state = TrainState(**values)
    except TypeError as error:
        raise VbnfError(
            f"checkpoint field 'state' is not a training state ({error})", path
        ) from error
    counters_ok = all(
        isinstance(value, int) and not isinstance(value, bool) and value >= 0
        for value in (state.epoch, state.step)
    )
    elapsed_ok = isinstance(state.elapsed_s, int | float) and math.isfinite(state.elapsed_s)
    if not (counters_ok and elapsed_ok and state.elapsed_s >= 0):
        raise VbnfError(
            f"checkpoint field 'state' must hold counters >= 0 and a finite time, got {values}",
            path,
        )
    return state


def restore_optimizer(optimizer: torch.optim.Optimizer, saved: dict[str, Any], path: Path) -> None:
    """Load an optimiser's saved state, refusing one saved for other parameters (a foreign
    optimiser, or other shapes) instead of failing at the first step."""
    try:
        optimizer.load_state_dict(saved)
    except (ValueError, KeyError, TypeError, RuntimeError) as error:
        raise VbnfError(
            f"checkpoint field 'optimizer' does not fit the model ({error})", path
        ) from error
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            for name, value in optimizer.state.get(parameter, {}).items():
                if (
                    isinstance(value, torch.Tensor)
                    and value.ndim
                    and value.shape != parameter.shape
                ):
                    raise VbnfError(
                        f"checkpoint field 'optimizer' holds a {name} of shape "
                        f"{tuple(value.shape)} for a parameter of shape {tuple(parameter.shape)}",
                        path,
                    )
