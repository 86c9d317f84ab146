"""What entropy coding and the integer MLP save, per trained run: bytes, PSNR, decode speed.

Run ``python -m bench.asset_size RUN_DIR:DATASET_DIR [...] [--mlp-bits Q]``. For each training
run the checkpoint is exported twice, from the same weights:

- *before*: the layout as it was, fp16 MLP, raw chunks (``--compression none``);
- *after*: the ``rans`` chunk codec and the MLP at ``--mlp-bits`` bits.

and each asset's *bytes* are decoded and scored on the dataset's test views (the torch
renderer, as ``core train`` scores). Printed: total bytes and bytes to the coarsest level, PSNR
per level before and after, the stored share of the raw bits of indices and octree masks, the
decode speed of the coded index streams (indices/s; also on 2^20 indices drawn from the finest
level's distribution, a level-8-sized stream) and of whole prefixes. A run trained with
``--mlp-bits`` (quantisation-aware) shows the cost after the fine-tune; one trained without it
shows plain post-training rounding. Figures only, nothing is asserted.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.asset.vbnf import asset_info, encode_asset, read_asset
from core.asset.vbnf.coded_chunk import MASK_BITS
from core.asset.vbnf.rans import ByteReader, decode_symbols, encode_symbols, skip_symbols
from core.asset.vbnf.reader import scan_asset
from core.data.dataset import load_split
from core.limits import DEFAULT_MLP_BITS
from core.neural.checkpoint import load_checkpoint
from core.neural.evaluate import evaluate_levels
from core.neural.field import RadianceField

REPEATS = 5
LARGE_STREAM = 1 << 20


def best_seconds(work: Callable[[], object]) -> float:
    """Fastest of :data:`REPEATS` runs: the machine is shared, the minimum is the signal."""
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def level_psnr(data: bytes, dataset: Path) -> list[float]:
    field = RadianceField.from_field_data(read_asset(data).field)
    return [score.psnr for score in evaluate_levels(field, load_split(dataset, "test"))]


def finest_index_stream(data: bytes) -> tuple[bytes, int, int]:
    """The coded index stream of the finest level, its symbol count and bit width."""
    scan = scan_asset(data)
    header, entry = scan.header, scan.header.chunks[-1]
    reader = ByteReader(scan.chunks[-1], "finest chunk")
    skip_symbols(reader, entry.structure_bytes, MASK_BITS)
    reader.take(2 * (1 << header.bitwidth) * header.feature_dim)  # the fp16 codebook
    return bytes(reader.data[reader.position :]), entry.corners, header.bitwidth


def index_speed(stream: bytes, count: int, bits: int) -> float:
    def decode() -> np.ndarray:
        return decode_symbols(ByteReader(stream, "stream"), count, bits)

    return count / best_seconds(decode)


def prefix_seconds(data: bytes) -> list[float]:
    """Seconds to decode the prefix up to each level (header, chunks, the octree)."""
    ends = [level["cumulative_bytes"] for level in asset_info(data)["levels"]]
    return [best_seconds(partial(read_asset, data[:end])) for end in ends]


def coded_share(info: dict[str, Any], stored: str, raw: str) -> float:
    return sum(level[stored] for level in info["levels"]) / sum(
        level[raw] for level in info["levels"]
    )


def report(run_dir: Path, dataset: Path, mlp_bits: int) -> None:
    loaded = load_checkpoint(run_dir)
    trained_bits = loaded.train_options.get("mlp_bits", 16)
    field = loaded.field.to_field_data()
    before = encode_asset(field, "none", 16)
    after = encode_asset(field, "rans", mlp_bits)
    infos = {"before": asset_info(before), "after": asset_info(after)}
    print(f"\n== {run_dir} (trained with mlp_bits {trained_bits}), test views of {dataset}")
    for name, info in infos.items():
        first = info["levels"][0]["cumulative_bytes"]
        print(
            f"{name:>6}: {info['total_bytes']:>7} bytes, coarsest level after {first:>6} bytes "
            f"(MLP {info['mlp_bytes']} bytes, {info['mlp_bits']} bits)"
        )
    ratio = infos["before"]["total_bytes"] / infos["after"]["total_bytes"]
    print(f"whole asset {ratio:.2f}x smaller")
    after_info = infos["after"]
    index_share = coded_share(after_info, "stored_index_bytes", "index_bytes")
    mask_share = coded_share(after_info, "stored_structure_bytes", "structure_bytes")
    print(f"indices stored in {index_share:.3f} of their raw bits, octree masks {mask_share:.3f}")
    print("level  corners  raw idx  coded idx  raw masks  coded masks  bytes before  bytes after")
    for raw_level, level in zip(infos["before"]["levels"], after_info["levels"], strict=True):
        print(
            f"{level['level']:>5}  {level['corners']:>7}  {level['index_bytes']:>7}  "
            f"{level['stored_index_bytes']:>9}  {level['structure_bytes']:>9}  "
            f"{level['stored_structure_bytes']:>11}  {raw_level['bytes']:>12}  "
            f"{level['bytes']:>11}"
        )
    psnr_before, psnr_after = level_psnr(before, dataset), level_psnr(after, dataset)
    print("level  PSNR before  PSNR after  change (dB)")
    for level, (was, now) in enumerate(zip(psnr_before, psnr_after, strict=True)):
        print(
            f"{after_info['min_level'] + level:>5}  {was:>11.3f}  {now:>10.3f}  {now - was:>+11.3f}"
        )
    stream, count, bits = finest_index_stream(after)
    speed = index_speed(stream, count, bits)
    print(f"finest level's index stream: {count} indices, {speed / 1e6:.2f} M/s")
    indices = decode_symbols(ByteReader(stream, "stream"), count, bits)
    large = np.random.default_rng(0).choice(indices, size=LARGE_STREAM)
    large_stream = encode_symbols(large, bits)
    large_speed = index_speed(large_stream, LARGE_STREAM, bits)
    print(
        f"{LARGE_STREAM} indices drawn from it: {large_speed / 1e6:.2f} M/s, "
        f"{len(large_stream) * 8 / (LARGE_STREAM * bits):.3f} of raw bits"
    )
    for name, data in (("before", before), ("after", after)):
        seconds = ", ".join(f"{1e3 * s:.1f}" for s in prefix_seconds(data))
        print(f"decode prefixes up to each level, {name}: {seconds} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="RUN_DIR:DATASET_DIR pairs")
    parser.add_argument("--mlp-bits", type=int, default=DEFAULT_MLP_BITS)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for pair in args.runs:
        run_dir, _, dataset = pair.partition(":")
        report(Path(run_dir), Path(dataset), args.mlp_bits)


if __name__ == "__main__":
    main()
