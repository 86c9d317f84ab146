"""Image quality metrics with the settings papers use (numpy).

PSNR is ``-10 log10(MSE)`` on [0, 1] values, averaged over images (not over pixels). SSIM is
Wang et al. 2004: 11x11 Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03, data range 1,
computed per channel on the valid (unpadded) region and averaged. Images are compared as RGB
composited over a white background, the NeRF-synthetic protocol, so alpha errors count.
"""

from __future__ import annotations

import numpy as np

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def over_white(premultiplied_rgba: np.ndarray) -> np.ndarray:
    """RGB of a premultiplied RGBA image composited over white."""
    return premultiplied_rgba[..., :3] + (1.0 - premultiplied_rgba[..., 3:4])


def premultiply(rgba: np.ndarray) -> np.ndarray:
    return np.concatenate([rgba[..., :3] * rgba[..., 3:4], rgba[..., 3:4]], axis=-1)


def psnr(image: np.ndarray, reference: np.ndarray) -> float:
    mse = float(np.mean((np.asarray(image, np.float64) - np.asarray(reference, np.float64)) ** 2))
    return float(-10.0 * np.log10(max(mse, 1e-12)))


def _gaussian_window() -> np.ndarray:
    offsets = np.arange(SSIM_WINDOW) - SSIM_WINDOW // 2
    kernel = np.exp(-(offsets**2) / (2.0 * SSIM_SIGMA**2))
    return kernel / kernel.sum()


def _filter_valid(channel: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Separable convolution keeping only positions where the window fits."""
    size = kernel.size
    rows = sum(kernel[i] * channel[i : channel.shape[0] - size + 1 + i] for i in range(size))
    return sum(kernel[i] * rows[:, i : rows.shape[1] - size + 1 + i] for i in range(size))


def ssim(image: np.ndarray, reference: np.ndarray) -> float:
    """Mean SSIM over channels of two [H, W, C] images in [0, 1] (H, W >= 11)."""
    if min(image.shape[:2]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW} px, got {image.shape[:2]}")
    kernel = _gaussian_window()
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    scores = []
    for channel in range(image.shape[-1]):
        x = np.asarray(image[..., channel], np.float64)
        y = np.asarray(reference[..., channel], np.float64)
        mu_x, mu_y = _filter_valid(x, kernel), _filter_valid(y, kernel)
        var_x = _filter_valid(x * x, kernel) - mu_x**2
        var_y = _filter_valid(y * y, kernel) - mu_y**2
        cov = _filter_valid(x * y, kernel) - mu_x * mu_y
        score = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
            (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
        )
        scores.append(float(score.mean()))
    return float(np.mean(scores))
