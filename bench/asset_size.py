"""What entropy coding and the integer MLP save, per trained run: bytes, PSNR, decode speed.

Run ``python -m bench.asset_size RUN_DIR:DATASET_DIR [...] [--mlp-bits Q]``. For each training
run the checkpoint is exported twice, from the same weights:

- *before*: the layout as it was, fp16 MLP, raw chunks (``--compression none``);
- *after*: the ``rans`` chunk codec and the MLP at ``--mlp-bits`` bits.

and each asset's *bytes* are decoded and scored on the dataset's test views (the torch
renderer, as ``core train`` scores). Printed: total bytes and bytes to the coarsest level, PSNR
per level before and after, the stored share of the raw bits of indices and octree masks, and
the decode speed of the *after* asset against its raw twin (``bench/codec_speed.py``'s figures:
indices/s per level and of the whole asset, prefix reads). A run trained with
``--mlp-bits`` (quantisation-aware) shows the cost after the fine-tune; one trained without it
shows plain post-training rounding. Figures only, nothing is asserted.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from bench.codec_speed import decode_report, raw_twin
from core.asset.vbnf import asset_info, encode_asset, read_asset
from core.data.dataset import load_split
from core.limits import DEFAULT_MLP_BITS
from core.neural.checkpoint import load_checkpoint
from core.neural.evaluate import evaluate_levels
from core.neural.field import RadianceField

REPEATS = 5


def level_psnr(data: bytes, dataset: Path) -> list[float]:
    field = RadianceField.from_field_data(read_asset(data).field)
    return [score.psnr for score in evaluate_levels(field, load_split(dataset, "test"))]


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
    decode_report(after, raw_twin(after), REPEATS)


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
