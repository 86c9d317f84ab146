"""Empty-space skipping: what it culls on a trained field, that every level still renders, and
that checkpoints and resumed runs keep the occupancy state."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from core.data.dataset import camera_rays, load_split
from core.neural.checkpoint import load_checkpoint
from core.neural.field import FieldConfig, RadianceField
from core.neural.render.occupancy import EMPTY_CHECKS
from core.neural.render.raymarch import sample_hits, sample_weights
from core.neural.render.renderer import make_ray_batch, render_image
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


def test_culling_keeps_every_sample_that_matters(
    trained_run: Path, synthetic_dataset: Path
) -> None:
    """On the trained field, against the unculled render of the training views: no sample
    with a compositing weight above the threshold is culled, and a good share is."""
    field = checked_field(trained_run)
    train = load_split(synthetic_dataset, "train")
    origins, directions = zip(
        *(camera_rays(pose, train.intrinsics) for pose in train.camera_to_world[::3]), strict=True
    )
    rays = make_ray_batch(field, np.concatenate(origins), np.concatenate(directions))
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
