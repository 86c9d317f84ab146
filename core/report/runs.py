"""The methods of the rate-distortion report, and producing and scoring each one's asset.

Every method ends as a ``.vbnf`` file that is read back and rendered, so what the report scores
is exactly what a client would stream: trained methods (the uncompressed NGLOD-NeRF grid, VQ-AD,
random indices) write their field, post-hoc methods (kmVQ, LRA) compress the uncompressed run's
asset. Each field is written twice from the same weights: *coded* (``asset.vbnf``: rANS-coded
chunks and the integer MLP, what ``core train`` writes) and *raw* (``asset_raw.vbnf``: plain
chunks, fp16 MLP, the layout the paper counts), and both are scored from their bytes, so the
report shows what the coding saves and costs on one training run. A run folder remembers what
made its assets and its scores (``entry.json``), so a rerun reuses both, resumes a shorter
training, and redoes only what changed.
"""

from __future__ import annotations

import json
import re
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..asset.field_data import FieldData
from ..asset.vbnf import asset_info, read_asset, write_asset
from ..asset.vbnf.spec import MLP_FP16_BITS, Codec
from ..atomic import atomic_write_bytes
from ..data.dataset import Split, load_split
from ..errors import VbnfError
from ..limits import DEFAULT_INDEX_RATE, DEFAULT_MLP_BITS, MAX_TRAIN_BITWIDTH
from ..neural.checkpoint import load_checkpoint
from ..neural.evaluate import check_scorable, evaluate_levels
from ..neural.field import FieldConfig, RadianceField, TrainableStore
from ..neural.trainer import TrainOptions, prepare_run
from ..progress import ProgressReporter
from ..run_layout import ASSET_NAME, CHECKPOINT_NAME
from .baselines import kmeans_quantize, low_rank

Family = Literal["nglod", "lra", "kmvq", "vqad", "hash"]
FAMILIES: tuple[Family, ...] = ("nglod", "lra", "kmvq", "vqad", "hash")
TRAINED_STORES: dict[Family, TrainableStore] = {
    "nglod": "dense",
    "vqad": "codebook",
    "hash": "hashed",
}
UNCOMPRESSED: Family = "nglod"
# Largest size parameter per family: bits of a codebook index (kmVQ is held to VQ-AD's range,
# so they compare at equal sizes), or LRA factors (at most the feature width).
PARAMETER_LIMITS: dict[str, int] = {
    "vqad": MAX_TRAIN_BITWIDTH["codebook"],
    "kmvq": MAX_TRAIN_BITWIDTH["codebook"],
    "hash": MAX_TRAIN_BITWIDTH["hashed"],
    "lra": FieldConfig.feature_dim,
}
ENTRY_NAME = "entry.json"
RENDERS_NAME = "renders"
RAW_ASSET_NAME = "asset_raw.vbnf"  # the same field with plain chunks and the fp16 MLP
CODED_CODEC: Codec = "rans"  # what `core train` and a bake write
# asset_info's split of a level's bytes: the plain sizes, then what masks and indices take
# in the file (less than plain under the rans codec)
LEVEL_PARTS = ("structure", "index", "codebook", "feature", "stored_structure", "stored_index")


@dataclass(frozen=True)
class Method:
    """One row of the tables: a family and its size parameter (bits per index, or factors)."""

    family: Family
    parameter: int = 0

    @property
    def key(self) -> str:
        return self.family if self.family == UNCOMPRESSED else f"{self.family}{self.parameter}"

    @property
    def label(self) -> str:
        return {
            "nglod": "NGLOD-NeRF (uncompressed)",
            "lra": f"+ LRA ({self.parameter}f)",
            "kmvq": f"+ kmVQ ({self.parameter} bw)",
            "vqad": f"VQ-AD ({self.parameter} bw)",
            "hash": f"Random indices ({self.parameter} bw)",
        }[self.family]

    @property
    def trained(self) -> bool:
        return self.family in TRAINED_STORES


def parse_method(key: str) -> Method:
    """``nglod``, ``vqad4``, ``hash10``, ``kmvq6``, ``lra8``, ... -> :class:`Method`."""
    match = re.fullmatch(r"(nglod)|(lra|kmvq|vqad|hash)(\d+)", key.strip())
    if match is None:
        raise ValueError(
            f"unknown method {key!r}: use nglod, vqad<bits>, hash<bits>, kmvq<bits> or lra<rank>"
        )
    if match.group(1):
        return Method(UNCOMPRESSED)
    family, parameter = match.group(2), int(match.group(3))
    highest = PARAMETER_LIMITS[family]
    if not 1 <= parameter <= highest:
        what = "factors" if family == "lra" else "bits"
        raise ValueError(f"method {key!r}: {what} must be in 1..{highest}, got {parameter}")
    return Method(family, parameter)  # type: ignore[arg-type]


@dataclass(frozen=True)
class RunSettings:
    """What a run's result depends on, besides the method and the dataset."""

    min_level: int
    max_level: int
    epochs: int
    batch_rays: int
    seed: int
    test_views: int  # first N test views are scored; 0 = all
    mlp_bits: int = DEFAULT_MLP_BITS  # of the coded asset's MLP, trained for at the end
    index_rate: float = DEFAULT_INDEX_RATE  # weight of the indices' expected bits in the loss

    def field_config(self, method: Method) -> FieldConfig:
        return FieldConfig(
            self.min_level,
            self.max_level,
            store=TRAINED_STORES[method.family],
            bitwidth=method.parameter or FieldConfig.bitwidth,
        )

    def train_options(self) -> TrainOptions:
        return TrainOptions(
            epochs=self.epochs,
            batch_rays=self.batch_rays,
            seed=self.seed,
            mlp_bits=self.mlp_bits,
            index_rate_weight=self.index_rate,
        )


def log(message: str) -> None:
    sys.stderr.write(f"[report {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


def scored_test_views(dataset_dir: Path, views: int) -> Split:
    """The first ``views`` test views (all when 0): evaluation dominates a CPU report's time.
    Views too small to score are refused here, before any method trains."""
    split = load_split(dataset_dir, "test")
    check_scorable(split, dataset_dir)
    if not 0 < views < len(split):
        return split
    return Split(
        split.intrinsics,
        split.rgba[:views],
        split.depth[:views],
        split.camera_to_world[:views],
        split.names[:views],
    )


def run_method(
    method: Method,
    dataset_dir: Path,
    run_dir: Path,
    settings: RunSettings,
    train: Split,
    test: Split,
    uncompressed_asset: Path | None,
) -> dict[str, Any]:
    """Make (or reuse) the method's coded and raw assets in ``run_dir`` and score both from
    their bytes. ``uncompressed_asset``: the uncompressed run's raw asset, which post-hoc
    methods compress."""
    run_dir.mkdir(parents=True, exist_ok=True)
    asset_path, raw_path = run_dir / ASSET_NAME, run_dir / RAW_ASSET_NAME
    entry = _read_entry(run_dir)
    made_by = _asset_fingerprint(method, dataset_dir, settings, uncompressed_asset)
    if entry.get("asset") != made_by or not (asset_path.is_file() and raw_path.is_file()):
        entry = {"asset": made_by, "train_seconds": 0.0}
        if method.trained:
            entry["train_seconds"] = _train(method, dataset_dir, train, run_dir, settings)
        else:
            assert uncompressed_asset is not None, "post-hoc methods need the uncompressed run"
            log(f"{method.key}: compressing {uncompressed_asset}")
            _derive(method, uncompressed_asset, run_dir, settings)
    scored_by = {
        "asset_crc32": _crc32(asset_path),
        "raw_asset_crc32": _crc32(raw_path),
        "test_views": test.names,
    }
    if entry.get("scored") != scored_by or "result" not in entry:
        log(f"{method.key}: scoring the coded and raw assets' bytes on {len(test)} test views")
        entry["result"] = _score(method, asset_path, test, run_dir / RENDERS_NAME)
        entry["result"]["raw"] = _score(method, raw_path, test, None)
        entry["result"]["train_seconds"] = round(entry["train_seconds"], 1)
        entry["scored"] = scored_by
    else:
        log(f"{method.key}: reusing {run_dir}")
    atomic_write_bytes(run_dir / ENTRY_NAME, json.dumps(entry, indent=2).encode())
    return entry["result"]


def _asset_fingerprint(
    method: Method, dataset_dir: Path, settings: RunSettings, uncompressed_asset: Path | None
) -> dict[str, Any]:
    fingerprint: dict[str, Any] = {
        "method": method.key,
        "dataset": str(Path(dataset_dir).resolve()),
        "min_level": settings.min_level,
        "max_level": settings.max_level,
        "seed": settings.seed,
        "mlp_bits": settings.mlp_bits,
        "codec": CODED_CODEC,
    }
    if method.trained:
        fingerprint |= {
            "epochs": settings.epochs,
            "batch_rays": settings.batch_rays,
            "index_rate": settings.index_rate,
        }
    else:
        assert uncompressed_asset is not None
        fingerprint["source_crc32"] = _crc32(uncompressed_asset)
    return fingerprint


def _train(
    method: Method, dataset_dir: Path, train: Split, run_dir: Path, settings: RunSettings
) -> float:
    """Train (resuming a compatible shorter run in ``run_dir``), write both assets; wall
    seconds of training, including earlier sessions of a resumed run."""
    config, options = settings.field_config(method), settings.train_options()
    resume = _resumable(run_dir, config, options)
    log(f"{method.key}: {'resuming' if resume else 'training'} to {options.epochs} epochs")
    reporter = ProgressReporter(1)
    trainer = prepare_run(dataset_dir, run_dir, config, options, resume, reporter, train)
    state = trainer.run()
    _write_assets(trainer.field.cpu().to_field_data(), run_dir, settings.mlp_bits)
    return float(state.elapsed_s)


def _write_assets(field: FieldData, run_dir: Path, mlp_bits: int) -> None:
    """The coded asset (what a bake writes) and the raw one, from the same ``field``."""
    write_asset(field, run_dir / RAW_ASSET_NAME, "none", MLP_FP16_BITS)
    write_asset(field, run_dir / ASSET_NAME, CODED_CODEC, mlp_bits)


def _resumable(run_dir: Path, config: FieldConfig, options: TrainOptions) -> bool:
    """Whether ``run_dir`` holds a checkpoint of the same model and schedule, not yet past
    ``options.epochs`` (a longer run is retrained: its extra epochs cannot be undone)."""
    if not (run_dir / CHECKPOINT_NAME).is_file():
        return False
    try:
        loaded = load_checkpoint(run_dir / CHECKPOINT_NAME)
    except VbnfError as error:  # e.g. written by an older checkpoint format: train afresh
        log(f"not resuming: {error}")
        return False
    previous = loaded.train_options
    return (
        loaded.field.config == config
        and loaded.state.epoch <= options.epochs
        and all(
            previous.get(name) == getattr(options, name)
            for name in ("batch_rays", "seed", "mlp_bits", "index_rate_weight")
        )
    )


def _derive(method: Method, source: Path, run_dir: Path, settings: RunSettings) -> None:
    """Compress the uncompressed run's raw asset (its MLP as trained, in fp16)."""
    dense = read_asset(source).field
    if method.family == "kmvq":
        compressed = kmeans_quantize(dense, method.parameter, seed=settings.seed)
    else:
        compressed = low_rank(dense, method.parameter)
    _write_assets(compressed, run_dir, settings.mlp_bits)


def _score(
    method: Method, asset_path: Path, test: Split, render_dir: Path | None
) -> dict[str, Any]:
    """Per-level PSNR/SSIM of the file's bytes, with the byte accounting of ``asset_info``."""
    started = time.monotonic()
    field = RadianceField.from_field_data(read_asset(asset_path).field)
    field.eval()
    scores = evaluate_levels(field, test, render_dir)
    info = asset_info(asset_path)
    level_sizes = ("bytes", "cumulative_bytes", *(f"{part}_bytes" for part in LEVEL_PARTS))
    levels = [
        score.to_dict() | {name: layout[name] for name in level_sizes}
        for score, layout in zip(scores, info["levels"], strict=True)
    ]
    return {
        "key": method.key,
        "label": method.label,
        "family": method.family,
        "parameter": method.parameter,
        "store": info["store"],
        "levels": levels,
        "total_bytes": info["total_bytes"],
        "header_bytes": info["header_bytes"],
        "mlp_bytes": info["mlp_bytes"],
        "mlp_bits": info["mlp_bits"],
        **{
            f"{part}_bytes": sum(layout[f"{part}_bytes"] for layout in info["levels"])
            for part in LEVEL_PARTS
        },
        "asset": str(asset_path),
        "render_dir": None if render_dir is None else str(render_dir),
        "eval_seconds": round(time.monotonic() - started, 1),
    }


def _read_entry(run_dir: Path) -> dict[str, Any]:
    try:
        entry = json.loads((run_dir / ENTRY_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return entry if isinstance(entry, dict) else {}


def _crc32(path: Path) -> int:
    return zlib.crc32(Path(path).read_bytes())
