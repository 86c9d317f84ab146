"""``python -m core report --quick`` end to end on a tiny synthetic scene, and its reuse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from core_cli import run_core

from core.data.synthetic import write_synthetic_dataset

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
    assert "| Method | PSNR ↑ | SSIM ↑ | File bytes (CR) | Paper bytes (CR) |" in markdown
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
    # Post-hoc k-means and VQ-AD store the same octree, indices and codebook sizes.
    kmvq, vqad = results["kmvq4"], results["vqad4"]
    assert abs(kmvq["total_bytes"] - vqad["total_bytes"]) <= vqad["structure_bytes"]
    assert kmvq["index_bytes"] == vqad["index_bytes"]
    assert kmvq["codebook_bytes"] == vqad["codebook_bytes"]


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
