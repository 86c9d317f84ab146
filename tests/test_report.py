"""``python -m core report --quick`` end to end on a tiny synthetic scene, and its reuse."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from core_cli import run_core

from core.asset.vbnf import read_asset
from core.data.synthetic import write_synthetic_dataset
from core.limits import DEFAULT_MLP_BITS

METHODS = ("nglod", "lra4", "kmvq4", "vqad4", "hash8")  # the --quick set


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dataset = write_synthetic_dataset(
        tmp_path_factory.mktemp("tiny"), train_views=8, test_views=2, resolution_px=24
    )
    out = tmp_path_factory.mktemp("report")
    run_core("report", dataset, "-o", out, "--quick", "--test-views", "1", timeout_s=300)
    return out


@pytest.mark.slow
def test_report_writes_tables_plot_sheet_and_json(report_dir: Path) -> None:
    for name in ("report.md", "report.json", "rate_distortion.png", "contact_sheet.png"):
        assert (report_dir / name).stat().st_size > 0, name
    markdown = (report_dir / "report.md").read_text()
    assert "| Method | PSNR ↑ | SSIM ↑ | File bytes (CR) | Raw file bytes (CR) |" in markdown
    assert "| Method | Bytes raw → coded (x smaller) | Coarsest level after raw → coded" in markdown
    assert "Indices coded in this share of their raw bits, over every scene: VQ-AD" in markdown
    assert "| Method | PSNR ↑ | SSIM ↑ | ‖V‖ indices | ‖D‖ codebooks |" in markdown
    assert "Machine:" in markdown and "1 epochs, levels 2..4" in markdown


@pytest.mark.slow
def test_report_json_scores_every_method_per_level_from_its_asset(report_dir: Path) -> None:
    report = json.loads((report_dir / "report.json").read_text())
    (scene,) = report["scenes"]
    results = {result["key"]: result for result in scene["methods"]}
    assert set(results) == set(METHODS)
    for result in results.values():
        assert Path(result["asset"]).stat().st_size == result["total_bytes"]
        assert [level["level"] for level in result["levels"]] == [2, 3, 4]
        for level in result["levels"]:
            assert level["psnr"] > scene["constant_colour_psnr"] - 3.0
            assert 0 < level["cumulative_bytes"] <= result["total_bytes"]
    assert results["nglod"]["total_bytes"] > 5 * results["vqad4"]["total_bytes"]
    # Post-hoc k-means and VQ-AD store the same octree, indices and codebook sizes: their raw
    # assets are the same size (coded, each one's indices code differently).
    kmvq, vqad = results["kmvq4"], results["vqad4"]
    assert kmvq["raw"]["total_bytes"] == vqad["raw"]["total_bytes"]
    assert kmvq["index_bytes"] == vqad["index_bytes"]
    assert kmvq["codebook_bytes"] == vqad["codebook_bytes"]


@pytest.mark.slow
def test_each_field_is_scored_coded_and_raw_from_its_own_bytes(report_dir: Path) -> None:
    """The coded asset (rans, integer MLP) and the raw one (plain, fp16) hold the same field:
    same levels and plain sizes, fewer bytes coded, PSNR per level close."""
    report = json.loads((report_dir / "report.json").read_text())
    for result in report["scenes"][0]["methods"]:
        raw = result["raw"]
        assert Path(raw["asset"]).name == "asset_raw.vbnf"
        assert Path(raw["asset"]).stat().st_size == raw["total_bytes"]
        assert (raw["mlp_bits"], result["mlp_bits"]) == (16, DEFAULT_MLP_BITS)
        assert result["total_bytes"] < raw["total_bytes"], result["key"]
        for part in ("structure", "index", "codebook", "feature"):
            assert result[f"{part}_bytes"] == raw[f"{part}_bytes"], (result["key"], part)
        assert raw["stored_index_bytes"] == raw["index_bytes"]
        assert result["stored_structure_bytes"] < result["structure_bytes"], result["key"]
        for coded_level, raw_level in zip(result["levels"], raw["levels"], strict=True):
            assert coded_level["cumulative_bytes"] < raw_level["cumulative_bytes"]
            assert abs(coded_level["psnr"] - raw_level["psnr"]) < 1.0, result["key"]


@pytest.mark.slow
def test_post_hoc_methods_compress_the_uncompressed_runs_raw_asset(report_dir: Path) -> None:
    """kmVQ and LRA keep the trained MLP: their raw assets carry the uncompressed run's fp16
    MLP unchanged; their coded ones round it to integers as the uncompressed coded asset does
    (from fp16 rather than float32 values, so a weight may land one step apart)."""
    report = json.loads((report_dir / "report.json").read_text())
    results = {result["key"]: result for result in report["scenes"][0]["methods"]}
    raw = {key: read_asset(Path(result["raw"]["asset"])).field for key, result in results.items()}
    coded = {key: read_asset(Path(result["asset"])).field for key, result in results.items()}
    step = 1.0 / ((1 << (DEFAULT_MLP_BITS - 1)) - 1)  # of a row's largest weight
    for key in ("kmvq4", "lra4"):
        for mine, theirs in zip(raw[key].mlp.arrays(), raw["nglod"].mlp.arrays(), strict=True):
            np.testing.assert_array_equal(mine, theirs, err_msg=key)
        for mine, theirs in zip(coded[key].mlp.arrays(), coded["nglod"].mlp.arrays(), strict=True):
            assert np.abs(mine - theirs).max() <= 1.01 * step * np.abs(theirs).max(), key


@pytest.mark.slow
def test_rerun_reuses_every_run(report_dir: Path) -> None:
    before = (report_dir / "report.json").read_text()
    dataset = json.loads(before)["scenes"][0]["dataset"]
    rerun = run_core("report", dataset, "-o", report_dir, "--quick", "--test-views", "1")
    for method in METHODS:
        assert f"{method}: reusing" in rerun.stderr
    assert "training" not in rerun.stderr
    scenes = json.loads((report_dir / "report.json").read_text())["scenes"]
    assert scenes == json.loads(before)["scenes"]
