"""Integer quantisation of the decoder MLP's weight matrices, one fp16 scale per output row.

At fp16 the MLP is 12 kB, the largest single item of a small asset and all of it needed before
the coarsest level can be drawn. Its two weight matrices go to ``bits``-bit signed integers
``q`` in ``[-qmax, qmax]`` (``qmax = 2^(bits-1) - 1``) with ``weight = q * scale[row]``; biases
stay fp16 (they are 1/40 of the values and shift every output). The trainer's quantisation-aware
fine-tune (``core/neural/quantize.py``) applies exactly this function, so what it trains with is
what the file ships.

The encoding is canonical, so a reader can re-encode what it decoded byte for byte (``cut``
does): ``scale = fp16(max|row| / qmax)`` makes the row's largest ``|q|`` exactly ``qmax``
(``qmax * scale`` is exact in float32), and a row whose scale would not be a normal fp16 number
(largest weight below ``qmax * 2^-14``) is stored as zeros with scale 0.
"""

from __future__ import annotations

import numpy as np

FP16_SMALLEST_NORMAL = np.float32(2.0**-14)


def qmax(bits: int) -> int:
    return (1 << (bits - 1)) - 1


def row_scales(weight: np.ndarray, bits: int) -> np.ndarray:
    """The fp16 scale [rows] of each row (as float32), 0 for rows flushed to zero."""
    largest = np.abs(np.asarray(weight, dtype=np.float32)).max(axis=1)
    scales = (largest / np.float32(qmax(bits))).astype(np.float16).astype(np.float32)
    return np.where(scales >= FP16_SMALLEST_NORMAL, scales, np.float32(0.0))


def quantize_rows(weight: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Integers [rows, cols] (int64) and scales [rows] (float32 holding fp16 values)."""
    weight = np.asarray(weight, dtype=np.float32)
    scales = row_scales(weight, bits)
    safe = np.where(scales > 0, scales, np.float32(1.0))[:, None]
    codes = np.clip(np.round(weight / safe), -qmax(bits), qmax(bits)).astype(np.int64)
    codes[scales == 0] = 0
    return codes, scales


def dequantize_rows(codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    return (np.asarray(codes, dtype=np.float32) * scales[:, None]).astype(np.float32)


def canonical_problem(codes: np.ndarray, scales: np.ndarray, bits: int) -> str | None:
    """Why decoded codes and scales are not what :func:`quantize_rows` writes (None if they
    are): a reader refuses such a file, since re-encoding it would change its values."""
    if not (np.isfinite(scales).all() and (scales >= 0).all()):
        return "scales that are negative or not finite"
    if ((scales > 0) & (scales < FP16_SMALLEST_NORMAL)).any():
        return "subnormal scales"
    largest = np.abs(codes).max(axis=1)
    if (largest > qmax(bits)).any():
        return f"codes beyond +-{qmax(bits)}"
    if ((scales > 0) & (largest != qmax(bits))).any() or (largest[scales == 0] != 0).any():
        return "rows not scaled to their largest code"
    return None
