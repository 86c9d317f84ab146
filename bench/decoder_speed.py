"""Points per second of the numpy field (``core.asset.numpy_field.NumpyField``), one CPU process.

Run ``python -m bench.decoder_speed``. The field is random (``core.asset.vbnf.example``) but shaped
like a trained asset: a codebook store with k=16 features, b=4 bits, levels 4..8 around a
sphere, a 128-wide MLP. Query points lie in occupied finest cells, as renderer samples do. It
prints figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from core.asset.field_data import FieldData
from core.asset.numpy_field import AVERAGING_DIRECTION_COUNT, NumpyField
from core.asset.vbnf import encode_asset
from core.asset.vbnf.example import random_field

REPEATS = 3


def sample_points(field: FieldData, count: int, seed: int = 1) -> np.ndarray:
    """World points uniformly inside randomly chosen occupied cells of the finest level."""
    rng = np.random.default_rng(seed)
    cells = field.octree.cells[field.max_level]
    chosen = cells[rng.integers(0, cells.shape[0], size=count)]
    normalized = (chosen + rng.uniform(size=(count, 3))) * (2.0 / (1 << field.max_level)) - 1.0
    return field.to_world(normalized)


def points_per_second(
    decoder: NumpyField, points: np.ndarray, level: int, directions: np.ndarray | None
) -> tuple[float, float]:
    """Points per second of wall-clock and of process CPU time, each the best of ``REPEATS``
    runs, after a warm-up that builds the octree's cached tables. On a shared machine the CPU
    figure leaves out the time spent waiting for a core; it still pays for shared caches."""
    warm_up = slice(0, 1024)
    decoder.query(points[warm_up], level, None if directions is None else directions[warm_up])
    best_s = best_cpu_s = math.inf
    for _ in range(REPEATS):
        start, start_cpu = time.perf_counter(), time.process_time()
        decoder.query(points, level, directions)
        best_s = min(best_s, time.perf_counter() - start)
        best_cpu_s = min(best_cpu_s, time.process_time() - start_cpu)
    return points.shape[0] / best_s, points.shape[0] / best_cpu_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=200_000)
    parser.add_argument("--surface-points", type=int, default=20_000)
    args = parser.parse_args()
    field = random_field(
        "codebook",
        bitwidth=4,
        min_level=4,
        max_level=8,
        feature_dim=16,
        hidden_dim=128,
        surface_points=args.surface_points,
    )
    corners = sum(field.octree.num_corners(level.level) for level in field.levels)
    print(
        f"field: codebook k=16 b=4, levels 4..8, {corners} corners, "
        f"asset {len(encode_asset(field))} bytes"
    )
    start = time.perf_counter()
    decoder = NumpyField(field)
    print(f"decoder setup: {time.perf_counter() - start:.3f} s")
    points = sample_points(field, args.points)
    directions = np.random.default_rng(2).normal(size=points.shape)
    for level in range(field.min_level, field.max_level + 1):
        given, given_cpu = points_per_second(decoder, points, level, directions)
        averaged, averaged_cpu = points_per_second(decoder, points, level, None)
        print(
            f"level {level}: {given / 1e6:.3f} M points/s with view directions "
            f"(CPU time {given_cpu / 1e6:.3f}), {averaged / 1e6:.3f} M points/s view-averaged "
            f"({AVERAGING_DIRECTION_COUNT} dirs; CPU time {averaged_cpu / 1e6:.3f})"
        )


if __name__ == "__main__":
    main()
