"""The report's Markdown: Tables 2 and 3 of the paper, per scene and averaged, plus streaming.

Quality is that of the finest level. Two byte counts are given because they answer different
questions: *file* bytes are the whole ``.vbnf`` (header, fp16 MLP, octree child masks, feature
stores), what a client streams; *paper* bytes count only indices, codebooks or features and the
fp16 MLP, the accounting of the paper's tables (which leave the octree out). Compression ratios
(CR) divide the uncompressed grid's bytes by the method's, in the same accounting.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

TABLE2_FAMILIES = ("nglod", "lra", "kmvq", "vqad")
TABLE3_FAMILIES = ("hash", "vqad")
STREAMING_FAMILIES = ("nglod", "lra", "kmvq", "vqad", "hash")
IDENTITY_FIELDS = ("key", "label", "family", "parameter", "levels")  # not averaged


@dataclass(frozen=True)
class Row:
    """One method on one scene (or averaged over scenes), at its finest level."""

    key: str
    label: str
    family: str
    parameter: int
    psnr: float
    ssim: float
    file_bytes: float
    paper_bytes: float
    index_bytes: float
    codebook_bytes: float
    level_psnr: tuple[float, ...]
    level_cumulative_bytes: tuple[float, ...]
    levels: tuple[int, ...]


def method_row(result: dict[str, Any]) -> Row:
    levels = result["levels"]
    return Row(
        key=result["key"],
        label=result["label"],
        family=result["family"],
        parameter=result["parameter"],
        psnr=levels[-1]["psnr"],
        ssim=levels[-1]["ssim"],
        file_bytes=result["total_bytes"],
        paper_bytes=result["index_bytes"]
        + result["codebook_bytes"]
        + result["feature_bytes"]
        + result["mlp_bytes"],
        index_bytes=result["index_bytes"],
        codebook_bytes=result["codebook_bytes"],
        level_psnr=tuple(level["psnr"] for level in levels),
        level_cumulative_bytes=tuple(level["cumulative_bytes"] for level in levels),
        levels=tuple(level["level"] for level in levels),
    )


def mean_rows(scenes: Sequence[Sequence[Row]]) -> list[Row]:
    """Per method present in every scene, the mean of each number over the scenes (the paper
    reports average bitrate: sizes depend on each scene's octree)."""
    by_key = [{row.key: row for row in rows} for rows in scenes]
    averaged = []
    for first in scenes[0]:
        if not all(first.key in rows for rows in by_key):
            continue
        group = [rows[first.key] for rows in by_key]
        means = {
            name: _mean([getattr(row, name) for row in group])
            for name in (field.name for field in fields(Row))
            if name not in IDENTITY_FIELDS
        }
        averaged.append(replace(first, **means))
    return averaged


def _mean(values: list[Any]) -> Any:
    """Mean of floats, or element-wise mean of equal-length tuples."""
    mean = np.mean(np.asarray(values, dtype=np.float64), axis=0)
    return tuple(float(value) for value in mean) if mean.ndim else float(mean)


def kilobytes(count: float) -> str:
    """Sizes in kB (1000 bytes), as the paper writes them."""
    return f"{count / 1000:.1f} kB"


def _ordered(rows: Sequence[Row], families: Sequence[str]) -> list[Row]:
    """Families in table order, larger parameters (bigger, better) first, as the paper lists."""
    chosen = [row for row in rows if row.family in families]
    return sorted(chosen, key=lambda row: (families.index(row.family), -row.parameter))


def _ratio(rows: Sequence[Row], row: Row, size: str) -> str:
    """``size`` of the uncompressed grid over ``row``'s ("n/a" without an uncompressed run)."""
    reference = next((other for other in rows if other.family == "nglod"), None)
    if reference is None:
        return "n/a"
    return f"{getattr(reference, size) / getattr(row, size):.1f}x"


def table2(rows: Sequence[Row]) -> str:
    """LRA and kmVQ (post-hoc) against VQ-AD (learned), with the uncompressed grid on top."""
    lines = [
        "| Method | PSNR ↑ | SSIM ↑ | File bytes (CR) | Paper bytes (CR) |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in _ordered(rows, TABLE2_FAMILIES):
        lines.append(
            f"| {row.label} | {row.psnr:.2f} | {row.ssim:.4f} "
            f"| {kilobytes(row.file_bytes)} ({_ratio(rows, row, 'file_bytes')}) "
            f"| {kilobytes(row.paper_bytes)} ({_ratio(rows, row, 'paper_bytes')}) |"
        )
    return "\n".join(lines)


def table3(rows: Sequence[Row]) -> str:
    """Random (hashed) against learned indices, indices ‖V‖ and codebooks ‖D‖ apart."""
    lines = [
        "| Method | PSNR ↑ | SSIM ↑ | ‖V‖ indices | ‖D‖ codebooks | File bytes (CR) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in _ordered(rows, TABLE3_FAMILIES):
        lines.append(
            f"| {row.label} | {row.psnr:.2f} | {row.ssim:.4f} | {kilobytes(row.index_bytes)} "
            f"| {kilobytes(row.codebook_bytes)} | {kilobytes(row.file_bytes)} "
            f"({_ratio(rows, row, 'file_bytes')}) |"
        )
    return "\n".join(lines)


def streaming_table(rows: Sequence[Row]) -> str:
    """PSNR at each level against the bytes streamed to draw it (header and coarser levels
    included): the prefixes a progressive download renders."""
    levels = rows[0].levels
    lines = [
        "| Method | " + " | ".join(f"level {level}" for level in levels) + " |",
        "|---|" + "---:|" * len(levels),
    ]
    for row in _ordered(rows, STREAMING_FAMILIES):
        cells = [
            f"{psnr:.2f} dB @ {kilobytes(size)}"
            for psnr, size in zip(row.level_psnr, row.level_cumulative_bytes, strict=True)
        ]
        lines.append(f"| {row.label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_report(report: dict[str, Any]) -> str:
    """The whole ``report.md``: settings, mean tables, then each scene's tables."""
    scenes = [[method_row(result) for result in scene["methods"]] for scene in report["scenes"]]
    means = mean_rows(scenes)
    names = ", ".join(scene["name"] for scene in report["scenes"])
    parts = [
        "# VBNF rate-distortion report",
        f"Machine: {report['machine']}.",
        f"Settings: {report['settings_line']}.",
        "Quality is PSNR/SSIM of the finest level over the scored test views (RGB over white), "
        "rendered from each method's `.vbnf` bytes. *File bytes* are the whole asset (header, "
        "fp16 MLP, octree child masks, feature stores); *paper bytes* count indices, codebooks "
        "or features and the MLP only, as the paper's tables do. CR is relative to the "
        "uncompressed fp16 grid in the same accounting.",
        f"## Mean over {len(scenes)} scene{'s' if len(scenes) > 1 else ''} ({names})",
        "### Table 2: post-hoc (LRA, kmVQ) vs learned (VQ-AD) compression",
        table2(means),
        "### Table 3: random (hashed) vs learned indices",
        table3(means),
        "### Streaming: PSNR against bytes streamed per level",
        streaming_table(means),
    ]
    for scene, rows in zip(report["scenes"], scenes, strict=True):
        parts += [
            f"## Scene `{scene['name']}`",
            f"Best constant colour: {scene['constant_colour_psnr']:.2f} dB (the floor).",
            table2(rows),
            table3(rows),
        ]
    return "\n\n".join(parts) + "\n"
