"""The report's figures: the rate-distortion plot (the paper's Fig. 6) and a contact sheet.

matplotlib and pillow are imported inside the functions, so ``core`` still imports with numpy
alone; the plot uses the Agg backend, so no display is needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from .tables import Row

FAMILY_COLOURS = {
    "nglod": "#d4a017",  # the paper's yellow NGLOD
    "lra": "#7f7f7f",
    "kmvq": "#2ca02c",
    "vqad": "#d62728",
    "hash": "#1f77b4",
}
LINE_STYLES = ("-", "--", ":", "-.")
PANEL_COLUMNS = 2
RAW_ALPHA = 0.25  # the raw assets' curves, behind the coded ones


def rate_distortion_plot(panels: Sequence[tuple[str, Sequence[Row]]], path: Path) -> None:
    """One panel per (title, rows): PSNR against kB streamed (log x), one curve per method
    with a point per level of detail (cumulative bytes: header plus every coarser level), for
    the coded asset, and faint behind it the same field written raw, so the shift to the left
    is what the entropy coding and the integer MLP save. Panels keep their own PSNR range:
    scenes differ by several dB."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    columns = min(len(panels), PANEL_COLUMNS)
    rows_of_panels = -(-len(panels) // columns)
    figure, axes = plt.subplots(
        rows_of_panels, columns, figsize=(5.2 * columns, 4.0 * rows_of_panels), squeeze=False
    )
    for axis, (title, rows) in zip(axes.flat, panels, strict=False):
        styles: dict[str, int] = {}
        for row in rows:
            style = styles.setdefault(row.family, 0)
            styles[row.family] += 1
            curves = (
                (row.raw_level_cumulative_bytes, row.raw_level_psnr, RAW_ALPHA, None),
                (row.level_cumulative_bytes, row.level_psnr, 1.0, row.label),
            )
            for sizes, psnrs, alpha, label in curves:
                axis.plot(
                    [size / 1000 for size in sizes],
                    psnrs,
                    marker="o",
                    markersize=3.5,
                    color=FAMILY_COLOURS[row.family],
                    linestyle=LINE_STYLES[style % len(LINE_STYLES)],
                    alpha=alpha,
                    label=label,
                )
        axis.set_xscale("log")
        axis.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axis.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axis.xaxis.set_minor_formatter(NullFormatter())
        axis.set_xlabel("kB streamed (header + levels so far, log scale)")
        axis.set_ylabel("PSNR (dB)")
        axis.set_title(title)
        axis.grid(True, which="both", alpha=0.3)
    for axis in axes.flat[len(panels) :]:
        axis.set_visible(False)
    legend_axis = axes.flat[len(panels) - 1]
    legend_axis.plot([], [], color="black", alpha=RAW_ALPHA, label="faint: raw (fp16 MLP)")
    legend_axis.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=100)
    plt.close(figure)


@dataclass(frozen=True)
class SheetBlock:
    """One scene of the contact sheet: ground truth, then each method's render per level.
    Images are RGB [H, W, 3] in [0, 1]."""

    title: str
    ground_truth: np.ndarray
    levels: Sequence[int]
    rows: Sequence[tuple[str, Sequence[np.ndarray]]]  # (method label, render per level)


LABEL_WIDTH_PX = 170
HEADER_PX = 18
TILE_GAP_PX = 2
MIN_TILE_PX = 64  # smaller renders are enlarged (nearest neighbour) to stay legible


def contact_sheet(blocks: Sequence[SheetBlock], path: Path) -> None:
    """A grid per scene: one row per method, ground truth first, then coarsest to finest."""
    from PIL import Image, ImageDraw, ImageFont

    enlarge = max(1, -(-MIN_TILE_PX // min(blocks[0].ground_truth.shape[:2])))
    tile_h, tile_w = (enlarge * side for side in blocks[0].ground_truth.shape[:2])
    columns = 1 + max(len(block.levels) for block in blocks)
    width = LABEL_WIDTH_PX + columns * (tile_w + TILE_GAP_PX)
    height = sum(HEADER_PX + len(block.rows) * (tile_h + TILE_GAP_PX) for block in blocks)
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=11)
    top = 0
    for block in blocks:
        headings = ["truth", *(f"level {level}" for level in block.levels)]
        draw.text((2, top + 3), block.title, fill="black", font=font)
        for column, heading in enumerate(headings):
            x = LABEL_WIDTH_PX + column * (tile_w + TILE_GAP_PX)
            draw.text((x, top + 3), heading, fill="black", font=font)
        top += HEADER_PX
        for label, renders in block.rows:
            draw.text((2, top + tile_h // 2 - 6), label, fill="black", font=font)
            for column, image in enumerate([block.ground_truth, *renders]):
                x = LABEL_WIDTH_PX + column * (tile_w + TILE_GAP_PX)
                tile = _to_image(image).resize((tile_w, tile_h), Image.Resampling.NEAREST)
                sheet.paste(tile, (x, top))
            top += tile_h + TILE_GAP_PX
    with atomic_path(path) as temporary:
        sheet.save(temporary, optimize=True)


def _to_image(rgb: np.ndarray):  # -> PIL.Image.Image (pillow is imported lazily)
    from PIL import Image

    return Image.fromarray(np.round(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8), "RGB")
