"""Scoring a field on held-out views at every level of detail."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..data.dataset import Split, write_rgba_png
from ..errors import DatasetError
from ..metrics import SSIM_WINDOW, over_white, premultiply, psnr, ssim
from .field import RadianceField
from .render.backend import Backend
from .render.renderer import render_image


@dataclass(frozen=True)
class LevelScore:
    level: int
    psnr: float
    ssim: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def check_scorable(split: Split, data_dir: Path) -> None:
    """Views smaller than SSIM's window cannot be scored; say so before any rendering."""
    width, height = split.intrinsics.width, split.intrinsics.height
    if min(width, height) < SSIM_WINDOW:
        raise DatasetError(
            f"views are {width}x{height} px; scoring (SSIM) needs at least {SSIM_WINDOW} px "
            "on each side",
            data_dir,
        )


def evaluate_levels(
    field: RadianceField,
    split: Split,
    render_dir: Path | None = None,
    backend: Backend | None = None,
) -> list[LevelScore]:
    """Mean PSNR and SSIM over the split's views at each level (RGB over white), optionally
    writing every render as ``<render_dir>/level_<L>/<view>.png`` (straight RGBA)."""
    scores = []
    references = [over_white(premultiply(rgba)) for rgba in split.rgba]
    for lod in range(field.config.num_lods):
        level = field.config.min_level + lod
        psnrs, ssims = [], []
        for view, reference in enumerate(references):
            image = render_image(
                field, split.camera_to_world[view], split.intrinsics, lod, backend=backend
            )
            if render_dir is not None:
                write_rgba_png(
                    Path(render_dir) / f"level_{level}" / f"{split.names[view]}.png",
                    _unpremultiply(image),
                )
            rgb = over_white(image)
            psnrs.append(psnr(rgb, reference))
            ssims.append(ssim(rgb, reference))
        scores.append(LevelScore(level, float(np.mean(psnrs)), float(np.mean(ssims))))
    return scores


def _unpremultiply(image: np.ndarray) -> np.ndarray:
    alpha = image[..., 3:4]
    rgb = np.where(alpha > 1e-6, image[..., :3] / np.maximum(alpha, 1e-6), 0.0)
    return np.concatenate([np.clip(rgb, 0.0, 1.0), alpha], axis=-1)


def constant_colour_psnr(train: Split, test: Split) -> float:
    """PSNR of the best constant image (the training mean pixel over white): the floor a
    trained model must clear by a wide margin."""
    mean_rgb = over_white(premultiply(train.rgba)).reshape(-1, 3).mean(axis=0)
    return float(
        np.mean(
            [
                psnr(np.broadcast_to(mean_rgb, reference.shape), reference)
                for reference in (over_white(premultiply(rgba)) for rgba in test.rgba)
            ]
        )
    )
