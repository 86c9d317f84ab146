"""The report's arithmetic on coded against raw assets: shares, ratios and gaps from results in
the shape ``core.report.runs`` writes (sizes chosen so every figure is easy to check by hand)."""

from __future__ import annotations

from typing import Any

import pytest

from core.report.tables import coding_table, comparisons, index_share, markdown_report, method_row


def result(key: str, family: str, parameter: int, psnr: float, scale: int) -> dict[str, Any]:
    """A two-level result (levels 3, 4) whose coded asset is half its raw twin's bytes, with
    indices coded in 0.6 of their bits, masks in 0.5, and 0.1 / 0.05 dB lost per level."""
    index_bytes = 1000 * scale if family in ("vqad", "kmvq") else 0

    def asset(coded: bool) -> dict[str, Any]:
        share = 0.5 if coded else 1.0
        levels = [
            {"level": 3, "psnr": psnr - 2.0 - (0.1 if coded else 0.0), "ssim": 0.8,
             "cumulative_bytes": int(4000 * share)},
            {"level": 4, "psnr": psnr - (0.05 if coded else 0.0), "ssim": 0.9,
             "cumulative_bytes": int(10000 * scale * share)},
        ]  # fmt: skip
        return {
            "levels": levels,
            "total_bytes": int(10000 * scale * share),
            "mlp_bytes": 5000 if coded else 12000,
            "index_bytes": index_bytes,
            "stored_index_bytes": int(index_bytes * (0.6 if coded else 1.0)),
            "structure_bytes": 800,
            "stored_structure_bytes": 400 if coded else 800,
            "codebook_bytes": 100,
            "feature_bytes": 0 if index_bytes else 9000 * scale,
        }

    return {"key": key, "label": key, "family": family, "parameter": parameter, **asset(True)} | {
        "raw": asset(False)
    }


@pytest.fixture
def rows() -> list[Any]:
    return [
        method_row(result("nglod", "nglod", 0, 30.0, 10)),
        method_row(result("kmvq4", "kmvq", 4, 27.0, 1)),
        method_row(result("vqad4", "vqad", 4, 29.0, 1)),
    ]


def test_coding_table_compares_the_same_field_raw_and_coded(rows: list[Any]) -> None:
    table = coding_table(rows)
    vqad_line = next(line for line in table.splitlines() if line.startswith("| vqad4 "))
    cells = [cell.strip() for cell in vqad_line.strip("|").split("|")]
    assert cells == ["vqad4", "10.0 kB → 5.0 kB (2.00x)", "4.0 kB → 2.0 kB", "0.600", "0.500",
                     "-0.10 -0.05"]  # fmt: skip
    nglod_line = next(line for line in table.splitlines() if line.startswith("| nglod "))
    assert "| – |" in nglod_line  # no indices to code


def test_paper_bytes_are_the_raw_assets(rows: list[Any]) -> None:
    vqad = rows[2]
    assert vqad.paper_bytes == 1000 + 100 + 0 + 12000  # raw indices, codebooks, fp16 MLP
    assert vqad.raw_file_bytes == 10000 and vqad.file_bytes == 5000


def test_index_share_sums_over_scenes_and_methods(rows: list[Any]) -> None:
    other_scene = [method_row(result("vqad4", "vqad", 4, 29.0, 3))]
    assert index_share([rows, other_scene], ("vqad",)) == pytest.approx(0.6)
    assert index_share([rows], ("vqad", "kmvq")) == pytest.approx(0.6)
    assert index_share([rows], ("hash",)) is None


def test_comparisons_give_the_gaps_to_the_grid_and_to_kmvq(rows: list[Any]) -> None:
    below, above = comparisons(rows)
    assert below.startswith("vqad4 is 1.00 dB below the uncompressed grid at 10.0x")
    assert above.startswith("vqad4 is 2.00 dB above kmVQ (4 bw) at equal raw bytes (10.0 kB)")


def test_markdown_report_holds_the_coding_sections(rows: list[Any]) -> None:
    scene = {
        "name": "s",
        "constant_colour_psnr": 10.0,
        "methods": [
            result("nglod", "nglod", 0, 30.0, 10),
            result("kmvq4", "kmvq", 4, 27.0, 1),
            result("vqad4", "vqad", 4, 29.0, 1),
        ],
    }
    markdown = markdown_report({"machine": "m", "settings_line": "x", "scenes": [scene]})
    assert "### Streaming: the same fields written raw (plain chunks, fp16 MLP)" in markdown
    assert "over every scene: VQ-AD 0.600, kmVQ 0.600, all 0.600." in markdown
    assert "29.00 dB @ 10.0 kB" in markdown  # raw finest level of vqad4
