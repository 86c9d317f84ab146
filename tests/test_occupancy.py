"""Empty-space skipping: what it culls and where early termination stops the training render on
a trained field, that every level still renders, and that checkpoints and resumed runs keep
the occupancy state."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from core.data.dataset import camera_rays, load_split
from core.neural.checkpoint import load_checkpoint
from core.neural.field import FieldConfig, RadianceField
from core.neural.render.occupancy import EMPTY_CHECKS
from core.neural.render.raymarch import sample_hits, sample_weights
from core.neural.render.renderer import (
    DEFAULT_TERMINATION,
    RayBatch,
    make_ray_batch,
    render_image,
    render_rays,
    render_rays_terminated,
)
from core.neural.trainer import TrainOptions, prepare_run
from core.progress import ProgressReporter

WEIGHT_THRESHOLD = 1e-2


def checked_field(run: Path) -> RadianceField:
    field = load_checkpoint(run).field.eval()
    generator = torch.Generator().manual_seed(0)
    for _ in range(EMPTY_CHECKS):
        field.check_occupancy(generator)
    assert field.accel.occupancy.active
    return field


def training_view_rays(field: RadianceField, dataset: Path) -> RayBatch:
    train = load_split(dataset, "train")
    origins, directions = zip(
        *(camera_rays(pose, train.intrinsics) for pose in train.camera_to_world[::3]), strict=True
    )
    return make_ray_batch(field, np.concatenate(origins), np.concatenate(directions))


def test_culling_keeps_every_sample_that_matters(
    trained_run: Path, synthetic_dataset: Path
) -> None:
    """On the trained field, against the unculled render of the training views: no sample
    with a compositing weight above the threshold is culled, and a good share is."""
    field = checked_field(trained_run)
    rays = training_view_rays(field, synthetic_dataset)
    occupancy = field.accel.occupancy
    with torch.no_grad():
        hits = field.accel.raytrace(rays.origins, rays.directions)
        samples = sample_hits(hits, rays.origins, rays.directions, None)
        for lod in range(field.config.num_lods):
            density, _ = field(samples.points, rays.view_directions[samples.ray_index], lod)
            weights = sample_weights(density, samples.step, samples.ray_index, len(rays))
            kept = torch.zeros_like(weights, dtype=torch.bool)
            kept_samples = occupancy.occupied_samples(hits, samples, lod)
            assert kept_samples is not None
            kept[kept_samples] = True
            kept &= occupancy.grid(lod).cell_occupied[hits.cell_index].repeat_interleave(16)
            culled_weight = float(weights[~kept].max()) if bool((~kept).any()) else 0.0
            assert culled_weight <= WEIGHT_THRESHOLD, f"level {lod}: culled w={culled_weight}"
            assert float(weights[~kept].sum()) <= 1e-3 * float(weights.sum())
        assert float(kept.float().mean()) < 0.8, "the finest level culls nothing"


class ShadedSamples:
    """Counts the points a field shades with autograd on."""

    def __init__(self, field: RadianceField) -> None:
        self.count = 0
        field.register_forward_pre_hook(self._add)

    def _add(self, _module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        if torch.is_grad_enabled():
            self.count += int(inputs[0].shape[0])


def rendered_gradients(
    field: RadianceField, rays: RayBatch, lod: int, terminated: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Premultiplied RGBA [R, 4] of a training render (bin centres, the occupancy grids as
    they are) and the gradient of its squared error against a fixed target, all parameters
    flattened into one vector."""
    field.zero_grad(set_to_none=True)
    render = render_rays_terminated if terminated else render_rays
    colour, alpha = render(field, rays, lod, None)
    rgba = torch.cat([colour, alpha[:, None]], dim=1)
    target = torch.rand(rgba.shape, generator=torch.Generator().manual_seed(1))
    torch.mean((rgba - target) ** 2).backward()
    gradient = torch.cat(
        [p.grad.reshape(-1) for p in field.parameters() if p.grad is not None]  # type: ignore[union-attr]
    )
    return rgba.detach(), gradient


def test_termination_keeps_every_sample_that_matters(
    trained_run: Path, synthetic_dataset: Path
) -> None:
    """On the trained field, with its occupancy grids, against the training render that
    shades every kept sample: early termination changes no pixel by more than its threshold,
    barely changes the gradients, and stops some rays early."""
    field = checked_field(trained_run)
    rays = training_view_rays(field, synthetic_dataset)
    counter = ShadedSamples(field)
    for lod in range(field.config.num_lods):
        full, full_gradient = rendered_gradients(field, rays, lod, terminated=False)
        all_count, counter.count = counter.count, 0
        terminated, gradient = rendered_gradients(field, rays, lod, terminated=True)
        shaded_count, counter.count = counter.count, 0
        change = float((terminated - full).abs().max())
        assert change <= DEFAULT_TERMINATION + 1e-6, f"level {lod}: pixel change {change}"
        relative = float((gradient - full_gradient).norm() / full_gradient.norm())
        assert relative < 1e-3, f"level {lod}: gradient change {relative}"
        if lod == field.config.num_lods - 1:  # measured: 0.7 % spared, pixels within 8.5e-5
            assert shaded_count < all_count, "no ray terminated: the bound was not exercised"


def test_every_level_still_renders(trained_run: Path, synthetic_dataset: Path) -> None:
    unculled = load_checkpoint(trained_run).field.eval()
    field = checked_field(trained_run)
    test = load_split(synthetic_dataset, "test")
    for lod in range(field.config.num_lods):
        for view in range(0, len(test), 2):
            pose = test.camera_to_world[view]
            image = render_image(field, pose, test.intrinsics, lod)
            reference = render_image(unculled, pose, test.intrinsics, lod)
            assert float(image[..., 3].mean()) > 0.1
            assert float(np.abs(image - reference).max()) < 0.1  # measured: 0.063
            assert float(np.abs(image - reference).mean()) < 1e-3


def train(data: Path, out_dir: Path, epochs: int, resume: bool) -> RadianceField:
    config = FieldConfig(min_level=2, max_level=4, feature_dim=8, store="codebook", bitwidth=4)
    options = TrainOptions(
        epochs=epochs, batch_rays=4096, seed=3, occupancy_warmup_steps=1, occupancy_interval_steps=1
    )
    trainer = prepare_run(
        data, out_dir, config, options, resume, ProgressReporter(1, interval_s=1e9)
    )
    trainer.run()
    return trainer.field


def test_checkpoints_and_resumed_runs_keep_the_occupancy(
    synthetic_dataset: Path, tmp_path: Path
) -> None:
    straight = train(synthetic_dataset, tmp_path / "straight", epochs=2, resume=False)
    first_half = train(synthetic_dataset, tmp_path / "split", epochs=1, resume=False)
    assert first_half.accel.occupancy.active  # culling ran before the checkpoint
    saved = load_checkpoint(tmp_path / "split").field.accel.occupancy
    for lod in range(first_half.config.num_lods):
        assert torch.equal(saved.grid(lod).occupied, first_half.accel.occupancy.grid(lod).occupied)
    assert saved.checks == first_half.accel.occupancy.checks
    resumed = train(synthetic_dataset, tmp_path / "split", epochs=2, resume=True)
    want, got = straight.accel.occupancy, resumed.accel.occupancy
    assert got.checks == want.checks
    for lod in range(straight.config.num_lods):
        assert torch.equal(got.grid(lod).empty_count, want.grid(lod).empty_count)
        assert torch.equal(got.grid(lod).occupied, want.grid(lod).occupied)
    grids = [got.grid(lod) for lod in range(straight.config.num_lods)]
    assert any(bool(grid.empty_count.any()) for grid in grids), "no probe was ever empty"
    for key, value in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value, rtol=1e-5, atol=1e-6)
