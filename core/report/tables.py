"""The report's Markdown: Tables 2 and 3 of the paper, per scene and averaged, plus streaming
and what the entropy coding saves.

Quality is that of the finest level of the *coded* asset (rANS-coded chunks, integer MLP: what
a bake writes). Three byte counts answer different questions: *file* bytes are the whole coded
``.vbnf`` (header, MLP, octree child masks, feature stores), what a client streams; *raw* bytes
are the same field written with plain chunks and the fp16 MLP (the layout before entropy
coding); *paper* bytes count only indices, codebooks or features and the fp16 MLP of the raw
asset, the accounting of the paper's tables (no octree, no entropy coding). Compression ratios
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
    index_bytes: float  # plain: b bits per corner
    codebook_bytes: float
    level_psnr: tuple[float, ...]
    level_cumulative_bytes: tuple[float, ...]
    levels: tuple[int, ...]
    raw_file_bytes: float  # the same field, plain chunks and fp16 MLP
    raw_level_psnr: tuple[float, ...]
    raw_level_cumulative_bytes: tuple[float, ...]
    stored_index_bytes: float  # what the indices take in the coded file
    structure_bytes: float  # octree masks, plain
    stored_structure_bytes: float  # and in the coded file


def method_row(result: dict[str, Any]) -> Row:
    """The coded asset's scores and sizes, with its raw twin's (``result["raw"]``)."""
    levels, raw = result["levels"], result["raw"]
    return Row(
        key=result["key"],
        label=result["label"],
        family=result["family"],
        parameter=result["parameter"],
        psnr=levels[-1]["psnr"],
        ssim=levels[-1]["ssim"],
        file_bytes=result["total_bytes"],
        paper_bytes=raw["index_bytes"]
        + raw["codebook_bytes"]
        + raw["feature_bytes"]
        + raw["mlp_bytes"],
        index_bytes=result["index_bytes"],
        codebook_bytes=result["codebook_bytes"],
        level_psnr=tuple(level["psnr"] for level in levels),
        level_cumulative_bytes=tuple(level["cumulative_bytes"] for level in levels),
        levels=tuple(level["level"] for level in levels),
        raw_file_bytes=raw["total_bytes"],
        raw_level_psnr=tuple(level["psnr"] for level in raw["levels"]),
        raw_level_cumulative_bytes=tuple(level["cumulative_bytes"] for level in raw["levels"]),
        stored_index_bytes=result["stored_index_bytes"],
        structure_bytes=result["structure_bytes"],
        stored_structure_bytes=result["stored_structure_bytes"],
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
        "| Method | PSNR ↑ | SSIM ↑ | File bytes (CR) | Raw file bytes (CR) | Paper bytes (CR) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in _ordered(rows, TABLE2_FAMILIES):
        lines.append(
            f"| {row.label} | {row.psnr:.2f} | {row.ssim:.4f} "
            f"| {kilobytes(row.file_bytes)} ({_ratio(rows, row, 'file_bytes')}) "
            f"| {kilobytes(row.raw_file_bytes)} ({_ratio(rows, row, 'raw_file_bytes')}) "
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


def streaming_table(rows: Sequence[Row], raw: bool = False) -> str:
    """PSNR at each level against the bytes streamed to draw it (header and coarser levels
    included): the prefixes a progressive download renders. ``raw``: of the raw assets."""
    levels = rows[0].levels
    lines = [
        "| Method | " + " | ".join(f"level {level}" for level in levels) + " |",
        "|---|" + "---:|" * len(levels),
    ]
    for row in _ordered(rows, STREAMING_FAMILIES):
        psnrs = row.raw_level_psnr if raw else row.level_psnr
        sizes = row.raw_level_cumulative_bytes if raw else row.level_cumulative_bytes
        cells = [
            f"{psnr:.2f} dB @ {kilobytes(size)}" for psnr, size in zip(psnrs, sizes, strict=True)
        ]
        lines.append(f"| {row.label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _share(stored: float, plain: float) -> str:
    return f"{stored / plain:.3f}" if plain else "–"


def coding_table(rows: Sequence[Row]) -> str:
    """Raw against coded, the same trained field: whole asset, prefix to the coarsest level,
    the stored share of the indices' and octree masks' plain bits, and PSNR change per level
    (coded minus raw, each rendered from its own bytes)."""
    lines = [
        "| Method | Bytes raw → coded (x smaller) | Coarsest level after raw → coded "
        "| Indices coded/raw bits | Masks coded/raw bits | PSNR coded − raw per level (dB) |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for row in _ordered(rows, STREAMING_FAMILIES):
        changes = " ".join(
            f"{coded - raw:+.2f}"
            for coded, raw in zip(row.level_psnr, row.raw_level_psnr, strict=True)
        )
        lines.append(
            f"| {row.label} | {kilobytes(row.raw_file_bytes)} → {kilobytes(row.file_bytes)} "
            f"({row.raw_file_bytes / row.file_bytes:.2f}x) "
            f"| {kilobytes(row.raw_level_cumulative_bytes[0])} → "
            f"{kilobytes(row.level_cumulative_bytes[0])} "
            f"| {_share(row.stored_index_bytes, row.index_bytes)} "
            f"| {_share(row.stored_structure_bytes, row.structure_bytes)} | {changes} |"
        )
    return "\n".join(lines)


def index_share(scenes: Sequence[Sequence[Row]], families: Sequence[str]) -> float | None:
    """Coded over plain index bytes, summed over every scene and every method of
    ``families`` (None when none of them stores indices)."""
    chosen = [row for rows in scenes for row in rows if row.family in families]
    plain = sum(row.index_bytes for row in chosen)
    return sum(row.stored_index_bytes for row in chosen) / plain if plain else None


def comparisons(rows: Sequence[Row]) -> list[str]:
    """The paper's claims as numbers: VQ-AD against the uncompressed grid, and against kmVQ
    at equal bytes (same store, same sizes), at the finest level."""
    by_key = {row.key: row for row in rows}
    lines = []
    reference = by_key.get("nglod")
    for row in _ordered(rows, ("vqad",)):
        if reference is not None:
            lines.append(
                f"{row.label} is {reference.psnr - row.psnr:.2f} dB below the uncompressed grid "
                f"at {reference.file_bytes / row.file_bytes:.1f}x fewer file bytes "
                f"({reference.paper_bytes / row.paper_bytes:.1f}x in paper bytes)."
            )
        kmvq = by_key.get(f"kmvq{row.parameter}")
        if kmvq is not None:
            lines.append(
                f"{row.label} is {row.psnr - kmvq.psnr:.2f} dB above kmVQ ({kmvq.parameter} bw) "
                f"at equal raw bytes ({kilobytes(row.raw_file_bytes)}); coded, VQ-AD takes "
                f"{kilobytes(row.file_bytes)} and kmVQ {kilobytes(kmvq.file_bytes)}."
            )
    return lines


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
        "rendered from each method's coded `.vbnf` bytes. *File bytes* are the whole coded "
        "asset (header, integer MLP, rANS-coded octree masks and indices, fp16 codebooks or "
        "features); *raw file bytes* the same field with plain chunks and the fp16 MLP; "
        "*paper bytes* count indices, codebooks or features and the fp16 MLP only, as the "
        "paper's tables do. CR is relative to the uncompressed grid in the same accounting.",
        f"## Mean over {len(scenes)} scene{'s' if len(scenes) > 1 else ''} ({names})",
        "### Table 2: post-hoc (LRA, kmVQ) vs learned (VQ-AD) compression",
        table2(means),
        "### Table 3: random (hashed) vs learned indices",
        table3(means),
        "### Streaming: PSNR against bytes streamed per level (coded assets)",
        streaming_table(means),
        "### Streaming: the same fields written raw (plain chunks, fp16 MLP)",
        streaming_table(means, raw=True),
        "### Entropy coding and the integer MLP: raw against coded, same training run",
        coding_table(means),
        _suite_index_line(scenes),
        "### VQ-AD against the uncompressed grid and kmVQ",
        "\n".join(f"- {line}" for line in comparisons(means)) or "(no VQ-AD run)",
    ]
    for scene, rows in zip(report["scenes"], scenes, strict=True):
        parts += [
            f"## Scene `{scene['name']}`",
            f"Best constant colour: {scene['constant_colour_psnr']:.2f} dB (the floor).",
            table2(rows),
            table3(rows),
            coding_table(rows),
        ]
    return "\n\n".join(parts) + "\n"


def _suite_index_line(scenes: Sequence[Sequence[Row]]) -> str:
    shares = [
        f"{name} {share:.3f}"
        for name, families in (("VQ-AD", ("vqad",)), ("kmVQ", ("kmvq",)), ("all", ("vqad", "kmvq")))
        if (share := index_share(scenes, families)) is not None
    ]
    if not shares:
        return "No method stores indices."
    return f"Indices coded in this share of their raw bits, over every scene: {', '.join(shares)}."
