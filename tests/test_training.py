"""Training works, not just runs: quality, level of detail, resume, cancellation, CLI errors."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from core_cli import REPO_ROOT, TINY_TRAIN_ARGS, run_core, run_core_here

from core.asset.numpy_field import NumpyField
from core.asset.vbnf import asset_info, read_asset
from core.limits import DEFAULT_MLP_BITS
from core.neural.checkpoint import load_checkpoint
from core.neural.field import FieldConfig
from core.neural.quantize import rounded_weights
from core.neural.trainer import TrainOptions, prepare_run
from core.progress import ProgressReporter


def test_trained_field_beats_a_constant_colour_by_far(trained_run: Path) -> None:
    metrics = json.loads((trained_run / "metrics.json").read_text())
    finest = metrics["levels"][-1]["psnr"]
    # measured: ~25 dB at level 5 against ~10.6 dB for the best constant image
    assert finest > metrics["constant_colour_psnr"] + 10.0, metrics
    assert metrics["levels"][-1]["ssim"] > 0.8


def test_quality_rises_with_the_level_of_detail(trained_run: Path) -> None:
    psnrs = [
        level["psnr"] for level in json.loads((trained_run / "metrics.json").read_text())["levels"]
    ]
    assert psnrs[-1] > psnrs[0] + 4.0, psnrs
    assert all(finer > coarser - 0.5 for coarser, finer in itertools.pairwise(psnrs)), psnrs


def test_decoder_matches_the_torch_model(trained_run: Path) -> None:
    """The numpy decoder on the asset's bytes equals the float model up to fp16 rounding (with
    the MLP rounded as the asset stores it: the run trained for that)."""
    loaded = load_checkpoint(trained_run)
    field = loaded.field.eval()
    mlp_bits = loaded.train_options["mlp_bits"]
    assert mlp_bits == DEFAULT_MLP_BITS == asset_info(trained_run / "asset.vbnf")["mlp_bits"]
    decoder = NumpyField(read_asset(trained_run / "asset.vbnf").field)
    rng = np.random.default_rng(0)
    cells = field.octree.cells[field.config.min_level]
    normalized = (cells[rng.integers(0, len(cells), 4000)] + rng.random((4000, 3))) * (
        2.0 / (1 << field.config.min_level)
    ) - 1.0
    world = normalized / field.scale + field.offset
    directions = rng.normal(size=(4000, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    for lod in range(field.config.num_lods):
        with torch.no_grad(), rounded_weights([field.hidden, field.output], mlp_bits):
            density_t, rgb_t = field(
                torch.from_numpy(normalized).float(), torch.from_numpy(directions).float(), lod
            )
        density, rgb = decoder.query(world, field.config.min_level + lod, directions)
        # fp16 storage of features, codebooks, MLP scales and biases is the only loss: tiny on
        # average, up to about 1 % of the colour range at the rare point where it adds up
        scale = max(float(density_t.abs().max()), 1.0)
        np.testing.assert_allclose(density, density_t.numpy(), atol=0.02 * scale)
        np.testing.assert_allclose(rgb, rgb_t.numpy(), atol=0.02)
        assert float(np.abs(rgb - rgb_t.numpy()).mean()) < 1e-3


def _train_steps(data: Path, out_dir: Path, epochs: int, resume: bool) -> dict[str, torch.Tensor]:
    config = FieldConfig(min_level=2, max_level=4, feature_dim=8, store="codebook", bitwidth=4)
    options = TrainOptions(epochs=epochs, batch_rays=4096, seed=3)
    trainer = prepare_run(
        data, out_dir, config, options, resume, ProgressReporter(1, interval_s=1e9)
    )
    trainer.run()
    return {key: value.clone() for key, value in trainer.field.state_dict().items()}


def test_resume_continues_the_same_run(synthetic_dataset: Path, tmp_path: Path) -> None:
    straight = _train_steps(synthetic_dataset, tmp_path / "straight", epochs=2, resume=False)
    _train_steps(synthetic_dataset, tmp_path / "split", epochs=1, resume=False)
    resumed = _train_steps(synthetic_dataset, tmp_path / "split", epochs=2, resume=True)
    assert load_checkpoint(tmp_path / "split").state.epoch == 2
    for key, value in straight.items():
        torch.testing.assert_close(resumed[key], value, rtol=1e-5, atol=1e-6, msg=key)


def test_sigterm_writes_a_resumable_checkpoint_and_events(
    synthetic_dataset: Path, tmp_path: Path
) -> None:
    out_dir = tmp_path / "run"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "core",
            "train",
            str(synthetic_dataset),
            "-o",
            str(out_dir),
            "--events",
            *TINY_TRAIN_ARGS[:-4],
            "--epochs",
            "50",
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert process.stdout is not None
    events = []
    for line in process.stdout:
        events.append(json.loads(line))
        if events[-1]["event"] == "progress":
            process.send_signal(signal.SIGTERM)
            break
    remaining, stderr = process.communicate(timeout=120)
    events += [json.loads(line) for line in remaining.splitlines()]
    assert process.returncode == 130, stderr
    assert "resume with --resume" in stderr
    assert {"stage", "progress", "checkpoint", "cancelled"} <= {event["event"] for event in events}
    assert "error" not in {event["event"] for event in events}
    checkpoint = next(event for event in events if event["event"] == "checkpoint")
    assert checkpoint["steps_per_epoch"] >= 1 and checkpoint["step"] >= 1
    progress = next(event for event in events if event["event"] == "progress")
    assert {"step", "steps", "epoch", "loss", "psnr", "seconds_left", "fraction"} <= progress.keys()
    state = load_checkpoint(out_dir).state
    assert state.step >= 1 and not (out_dir / "asset.vbnf").exists()


def test_bad_input_ends_with_a_clear_error_line(tmp_path: Path) -> None:
    result = run_core("train", tmp_path / "missing", "-o", tmp_path / "out", check=False)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {tmp_path / 'missing'}: dataset folder does not exist"
    )
    result = run_core_here("train", tmp_path, "-o", tmp_path / "out", "--bitwidth", "9")
    assert result.returncode == 1 and "bitwidth must be in 1..8" in result.stderr


@pytest.mark.parametrize(
    "command",
    [
        ["synth", "{tmp}/data", "--views", "0"],
        ["train", "{data}", "-o", "{tmp}/run", "--batch-rays", "0"],
        ["train", "{data}", "-o", "{tmp}/run", "--lr", "-1"],
        ["train", "{data}", "-o", "{tmp}/run", "--hashed", "--bitwidth", "17"],
        ["report", "{data}", "-o", "{tmp}/report", "--methods", "nglod,vqad20"],
        ["report", "{data}", "-o", "{tmp}/report", "--epochs", "0"],
        ["report", "{data}", "-o", "{tmp}/report", "--min-level", "5", "--max-level", "3"],
    ],
    ids=[
        "synth-views",
        "batch-rays",
        "lr",
        "hashed-bits",
        "report-method",
        "report-epochs",
        "report-levels",
    ],
)
def test_bad_values_end_in_one_line_before_any_work(
    command: list[str], synthetic_dataset: Path, tmp_path: Path
) -> None:
    args = [part.format(tmp=tmp_path, data=synthetic_dataset) for part in command]
    result = run_core_here(*args)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert not (tmp_path / "run").exists() and not (tmp_path / "report").exists()


def test_views_too_small_to_score_are_refused_before_training(tmp_path: Path) -> None:
    data = tmp_path / "tiny"
    run_core_here("synth", data, "--views", "2", "--test-views", "1", "--resolution", "8")
    result = run_core_here("train", data, "-o", tmp_path / "run")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "views are 8x8 px; scoring (SSIM) needs at least 11 px" in result.stderr
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
    result = run_core_here("eval", tmp_path / "run", data)
    assert result.returncode == 1 and "needs at least 11 px" in result.stderr


def test_a_checkpoint_after_every_step_is_a_valid_interval() -> None:
    assert TrainOptions(checkpoint_interval_s=0.0).checkpoint_interval_s == 0.0
    with pytest.raises(ValueError, match="checkpoint interval must be at least 0 s"):
        TrainOptions(checkpoint_interval_s=-1.0)


def test_resuming_a_checkpoint_of_another_version_says_so(
    trained_run: Path, synthetic_dataset: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    payload = torch.load(trained_run / "checkpoint.pt", weights_only=True)
    payload["train_options"]["warmup_steps"] = 100  # an option this trainer does not know
    torch.save(payload, run / "checkpoint.pt")
    result = run_core_here("train", synthetic_dataset, "-o", run, "--resume")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "cannot resume these training options" in result.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error where CUDA is missing")
def test_eval_on_a_missing_cuda_device_says_so(trained_run: Path, synthetic_dataset: Path) -> None:
    result = run_core_here("eval", trained_run, synthetic_dataset, "--device", "cuda")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "torch sees no CUDA device" in result.stderr


def test_eval_scores_the_shipped_bytes_at_every_level(
    trained_run: Path, synthetic_dataset: Path, tmp_path: Path
) -> None:
    asset = trained_run / "asset.vbnf"
    result = run_core("eval", asset, synthetic_dataset, "--json", "--renders", tmp_path / "png")
    levels = json.loads(result.stdout)["levels"]
    trained = json.loads((trained_run / "metrics.json").read_text())["levels"]
    assert [level["level"] for level in levels] == [2, 3, 4, 5]
    for got, want in zip(levels, trained, strict=True):
        assert got["psnr"] == pytest.approx(want["psnr"], abs=1e-6)
    assert len(list((tmp_path / "png" / "level_5").glob("*.png"))) == 6

    run_core("cut", asset, "--level", "3", "-o", tmp_path / "cut.vbnf")
    cut_levels = json.loads(
        run_core("eval", tmp_path / "cut.vbnf", synthetic_dataset, "--json").stdout
    )
    assert [level["psnr"] for level in cut_levels["levels"]] == pytest.approx(
        [level["psnr"] for level in levels[:2]], abs=1e-6
    )
