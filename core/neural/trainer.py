"""Training loop: RGB-D octree initialisation, LOD sampling, Adam with a 100x grid rate.

Follows the paper's section 7.3: the sparse octree is built from the depth maps' point cloud,
normalised into [-1, 1]^3 (scale and offset kept with the model); Adam at lr 1e-3 with the
feature grid (features, codebooks, logits) at 100x; batches of 4096 rays; one level of detail
drawn per batch with each finer level twice as likely as the one before, so every prefix of the
level stack learns to stand on its own, which is what streaming needs.

Randomness is derived from ``(seed, epoch)`` for the ray order and ``(seed, step)`` for
everything else, so a run resumed from any checkpoint continues exactly as it would have.
"""

from __future__ import annotations

import math
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .. import stopping
from ..asset.octree import SparseOctree
from ..asset.vbnf.spec import MAX_MLP_BITS, MIN_MLP_BITS
from ..data.dataset import Split, camera_rays, depth_point_cloud, load_split
from ..errors import DatasetError, TrainingCancelled, VbnfError
from ..progress import ProgressReporter
from ..run_layout import CHECKPOINT_NAME
from .checkpoint import TrainState, load_checkpoint, restore_optimizer, save_checkpoint
from .field import FieldConfig, RadianceField
from .quantize import MLP_FP16_BITS, rounded_weights
from .rate import index_rate_bits
from .render.backend import select_backend
from .render.occupancy import OccupancySchedule
from .render.raymarch import normalize_rays
from .render.renderer import RayBatch, render_rays, render_rays_terminated

NORMALIZED_EXTENT = 0.9  # the point cloud fills [-0.9, 0.9]^3, leaving room for dilation
QAT_FRACTION = 0.1  # of the steps, at the end, trained with the MLP rounded as stored


@dataclass(frozen=True)
class TrainOptions:
    epochs: int = 20
    batch_rays: int = 4096
    lr: float = 1e-3
    grid_lr_factor: float = 100.0
    seed: int = 0
    dilation: int = 1
    device: str = "cpu"
    checkpoint_interval_s: float = 120.0
    backend: str = "auto"  # "auto" | "torch" | "cupy": who traces, samples and composites
    mlp_bits: int = MLP_FP16_BITS  # below 16: the asset's integer MLP, trained for at the end
    index_rate_weight: float = 0.0  # weight of the indices' expected bits (core/neural/rate.py)
    # occupancy grids cull empty space (render.occupancy); once they do, rays stop when
    # opaque (render_rays_terminated)
    skip_empty: bool = True
    occupancy_warmup_steps: int = OccupancySchedule.warmup_steps
    occupancy_interval_steps: int = OccupancySchedule.interval_steps

    def __post_init__(self) -> None:
        """Reject values that would otherwise fail deep inside a step (a division by zero,
        an optimiser that never moves) or, worse, after hours of training."""
        if self.epochs < 1 or self.batch_rays < 1:
            raise ValueError(
                f"epochs and batch rays must be at least 1, got {self.epochs} and {self.batch_rays}"
            )
        if not (self.lr > 0 and self.grid_lr_factor > 0):
            raise ValueError(
                f"learning rate and grid factor must be positive, got {self.lr} and "
                f"{self.grid_lr_factor}"
            )
        if self.checkpoint_interval_s < 0:  # 0: a checkpoint after every step
            raise ValueError(
                f"checkpoint interval must be at least 0 s, got {self.checkpoint_interval_s}"
            )
        if self.dilation < 0:
            raise ValueError(f"dilation must be at least 0, got {self.dilation}")
        if not self.index_rate_weight >= 0:
            raise ValueError(f"index rate weight must be at least 0, got {self.index_rate_weight}")
        if self.mlp_bits != MLP_FP16_BITS and not MIN_MLP_BITS <= self.mlp_bits <= MAX_MLP_BITS:
            raise ValueError(
                f"MLP bits must be {MLP_FP16_BITS} or {MIN_MLP_BITS}..{MAX_MLP_BITS}, "
                f"got {self.mlp_bits}"
            )
        self.occupancy_schedule()  # validates

    def occupancy_schedule(self) -> OccupancySchedule:
        return OccupancySchedule(self.occupancy_warmup_steps, self.occupancy_interval_steps)


@dataclass
class TrainingRays:
    """Every training pixel as a ray (normalised) with its premultiplied RGBA target."""

    batch: RayBatch
    target: torch.Tensor  # [N, 4]

    def __len__(self) -> int:
        return int(self.target.shape[0])


def normalization_for(points: np.ndarray, source: Path) -> tuple[float, np.ndarray]:
    """Scale and offset mapping the RGB-D point cloud into the octree's cube."""
    if points.shape[0] == 0:
        raise DatasetError("no depth pixel hits a surface: cannot initialise the octree", source)
    low, high = points.min(axis=0), points.max(axis=0)
    offset = 0.5 * (low + high)
    half_extent = float(np.max(high - low)) * 0.5
    return NORMALIZED_EXTENT / max(half_extent, 1e-6), offset


def build_field(train: Split, config: FieldConfig, dilation: int, source: Path) -> RadianceField:
    points = depth_point_cloud(train)
    scale, offset = normalization_for(points, source)
    octree = SparseOctree.from_points((points - offset) * scale, config.max_level, dilation)
    return RadianceField(octree, config, scale, offset)


def training_rays(train: Split, field: RadianceField, device: str) -> TrainingRays:
    origins, directions = zip(
        *(camera_rays(pose, train.intrinsics) for pose in train.camera_to_world), strict=True
    )
    normalized = normalize_rays(
        np.concatenate(origins), np.concatenate(directions), field.scale, field.offset
    )
    batch = RayBatch(*(torch.from_numpy(a).float().to(device) for a in normalized))
    rgba = torch.from_numpy(train.rgba.reshape(-1, 4)).to(device)
    target = torch.cat([rgba[:, :3] * rgba[:, 3:], rgba[:, 3:]], dim=1)
    return TrainingRays(batch, target)


# independent random streams: per-step draws, per-epoch order, occupancy probes
STEP_STREAM, ORDER_STREAM, OCCUPANCY_STREAM = 0, 1, 2


def derived_seed(seed: int, stream: int, counter: int) -> int:
    """A well-mixed seed for ``(seed, stream, counter)``: runs with different seeds never share
    a ray order or a draw, and a resumed run reproduces the draws of an uninterrupted one."""
    return int(np.random.SeedSequence([seed, stream, counter]).generate_state(1)[0])


def lod_probabilities(num_lods: int) -> torch.Tensor:
    """Each level twice as likely as the coarser one: P(i) proportional to 2^i."""
    weights = torch.pow(2.0, torch.arange(num_lods, dtype=torch.float64))
    return weights / weights.sum()


def make_optimizer(field: RadianceField, options: TrainOptions) -> torch.optim.Adam:
    """Adam with the feature grid's rate raised. The fused kernel does the same update in one
    pass over each tensor: on one CPU thread 7x faster than the per-tensor loop for the stores
    of levels 3..7, where it was 9 ms of a step at level 7."""
    grid, decoder = field.parameter_groups()
    return torch.optim.Adam(
        [
            {"params": grid, "lr": options.lr * options.grid_lr_factor},
            {"params": decoder, "lr": options.lr},
        ],
        fused=True,
    )


def psnr_from_mse(mse: float) -> float:
    return -10.0 * math.log10(max(mse, 1e-12))


class Trainer:
    """One training run writing ``checkpoint.pt`` into ``out_dir``."""

    def __init__(
        self,
        field: RadianceField,
        rays: TrainingRays,
        options: TrainOptions,
        out_dir: Path,
        reporter: ProgressReporter | None = None,
        state: TrainState | None = None,
        optimizer_state: dict | None = None,
    ) -> None:
        self.field = field.to(options.device)
        self.rays = rays
        self.options = options
        self.out_dir = Path(out_dir)
        self.backend = select_backend(options.backend, options.device)
        self.optimizer = make_optimizer(self.field, options)
        if optimizer_state is not None:
            restore_optimizer(self.optimizer, optimizer_state, self.checkpoint_path)
        self.state = state or TrainState()
        self.steps_per_epoch = math.ceil(len(rays) / options.batch_rays)
        self.total_steps = self.steps_per_epoch * options.epochs
        self.reporter = reporter or ProgressReporter(self.total_steps)
        self.lod_weights = lod_probabilities(field.config.num_lods)
        self.occupancy_schedule = options.occupancy_schedule()

    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / CHECKPOINT_NAME

    def save(self) -> None:
        save_checkpoint(
            self.checkpoint_path, self.field, self.optimizer, self.state, asdict(self.options)
        )
        self.reporter.emit(
            "checkpoint",
            path=str(self.checkpoint_path),
            step=self.state.step,
            steps_per_epoch=self.steps_per_epoch,
        )

    def step(self, ray_ids: torch.Tensor) -> tuple[float, float, int]:
        """One optimisation step on the given rays; returns (loss, PSNR, level index)."""
        if self.options.skip_empty and self.occupancy_schedule.due(self.state.step):
            self.field.check_occupancy(
                torch.Generator().manual_seed(
                    derived_seed(self.options.seed, OCCUPANCY_STREAM, self.state.step)
                )
            )
        generator = torch.Generator().manual_seed(
            derived_seed(self.options.seed, STEP_STREAM, self.state.step)
        )
        lod = int(torch.multinomial(self.lod_weights, 1, generator=generator))
        batch = self.rays.batch.subset(ray_ids)
        # rays stop early once the grids cull: before, densities are diffuse, no ray becomes
        # opaque and the rounds cost 12 % of a step (measured in bench/skip_speed.py's scene)
        terminate = self.options.skip_empty and self.field.accel.occupancy.active
        render = render_rays_terminated if terminate else render_rays
        colour, alpha = render(self.field, batch, lod, generator, self.backend)
        prediction = torch.cat([colour, alpha[:, None]], dim=1)
        mse = torch.mean((prediction - self.rays.target[ray_ids]) ** 2)
        loss = mse
        if self.options.index_rate_weight > 0:
            loss = loss + self.options.index_rate_weight * index_rate_bits(self.field)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.item(), psnr_from_mse(mse.item()), lod

    def mlp_rounding(self) -> AbstractContextManager[None]:
        """The quantisation-aware fine-tune: the last :data:`QAT_FRACTION` of the steps see the
        MLP's weights as the asset will store them (when ``mlp_bits`` is below 16). Decided by
        the step counter alone, so a run interrupted and resumed fine-tunes exactly as an
        uninterrupted one; a finished run resumed with more epochs trains its MLP in float
        again and fine-tunes anew at its new end."""
        first_rounded_step = self.total_steps - math.ceil(QAT_FRACTION * self.total_steps)
        if self.options.mlp_bits == MLP_FP16_BITS or self.state.step < first_rounded_step:
            return nullcontext()
        return rounded_weights([self.field.hidden, self.field.output], self.options.mlp_bits)

    def run(self) -> TrainState:
        """Train until ``options.epochs``; checkpoint at intervals, at the end and on a stop."""
        self.field.train()
        last_save = time.monotonic()
        with stopping.polled() as requested:  # a stop: checkpoint first, then cancel
            while self.state.epoch < self.options.epochs:
                order = torch.randperm(
                    len(self.rays),
                    generator=torch.Generator().manual_seed(
                        derived_seed(self.options.seed, ORDER_STREAM, self.state.epoch)
                    ),
                ).to(self.options.device)
                first = self.state.step - self.state.epoch * self.steps_per_epoch
                for index in range(first, self.steps_per_epoch):
                    started = time.monotonic()
                    ids = order[
                        index * self.options.batch_rays : (index + 1) * self.options.batch_rays
                    ]
                    with self.mlp_rounding():
                        loss, psnr, lod = self.step(ids)
                    self.state.step += 1
                    self.state.elapsed_s += time.monotonic() - started
                    self.reporter.update(
                        self.state.step,
                        epoch=self.state.epoch + 1,
                        loss=loss,
                        psnr=psnr,
                        level=self.field.config.min_level + lod,
                    )
                    if requested:
                        self.save()
                        raise TrainingCancelled(
                            f"stopped by {requested[0]} at step {self.state.step}; "
                            f"resume with --resume ({self.checkpoint_path})"
                        )
                    if time.monotonic() - last_save > self.options.checkpoint_interval_s:
                        self.save()
                        last_save = time.monotonic()
                self.state.epoch += 1
        self.save()
        return self.state


def prepare_run(
    data_dir: Path,
    out_dir: Path,
    config: FieldConfig,
    options: TrainOptions,
    resume: bool,
    reporter: ProgressReporter,
    train: Split | None = None,
) -> Trainer:
    """Load the dataset (unless the caller passes its ``train`` split, already loaded) and
    either build a new field or pick up the checkpoint in ``out_dir``."""
    if train is None:
        reporter.stage("load", f"loading dataset {data_dir}")
        train = load_split(Path(data_dir), "train")
    checkpoint_path = Path(out_dir) / CHECKPOINT_NAME
    if resume:
        if not checkpoint_path.is_file():
            raise VbnfError("--resume given but there is no checkpoint to resume", checkpoint_path)
        loaded = load_checkpoint(checkpoint_path, options.device)
        field, state, optimizer_state = loaded.field, loaded.state, loaded.optimizer_state
        overrides = {"epochs": options.epochs, "device": options.device, "backend": options.backend}
        try:
            options = TrainOptions(**{**loaded.train_options, **overrides})
        except (TypeError, ValueError) as error:  # written by another version of the trainer
            raise VbnfError(
                f"cannot resume these training options ({error})", checkpoint_path
            ) from error
        reporter.stage("resume", f"resuming at step {state.step} (epoch {state.epoch})")
    else:
        torch.manual_seed(options.seed)
        reporter.stage("octree", "building the octree from the depth maps")
        field, state, optimizer_state = (
            build_field(train, config, options.dilation, data_dir),
            None,
            None,
        )
    rays = training_rays(train, field, options.device)
    trainer = Trainer(field, rays, options, out_dir, reporter, state, optimizer_state)
    reporter.total_steps = trainer.total_steps
    return trainer
