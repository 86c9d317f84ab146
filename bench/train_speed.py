"""Training throughput of the torch path: rays/s, seconds per epoch, peak memory, and the cost
of VQ-AD relative to the uncompressed grid, measured side by side in one process.

    python -m bench.train_speed [--data DATASET] [--steps 20] [--batch-rays 4096]

Steps of the stores are interleaved (uncompressed, b=4, b=6, b=8, uncompressed, ...) so load
from other processes hits every store alike; the ratio is of median step times. Peak resident
memory of each store is measured in a fresh subprocess (``--peak-memory-of``), because a
process's peak cannot be reset. Prints figures only: no thresholds are asserted here.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import cast

import torch

from core.data.synthetic import write_synthetic_dataset
from core.neural.field import FieldConfig, TrainableStore
from core.neural.trainer import Trainer, TrainOptions, prepare_run
from core.progress import ProgressReporter


def make_trainer(
    data: Path, store: TrainableStore, bitwidth: int, args: argparse.Namespace
) -> Trainer:
    config = FieldConfig(args.min_level, args.max_level, 16, store, bitwidth)
    options = TrainOptions(epochs=1, batch_rays=args.batch_rays, seed=0)
    out_dir = Path(tempfile.mkdtemp(prefix="vbnf_bench_"))
    return prepare_run(data, out_dir, config, options, False, ProgressReporter(1, interval_s=1e9))


def timed_step(trainer: Trainer) -> float:
    ids = torch.randint(0, len(trainer.rays), (trainer.options.batch_rays,))
    started = time.perf_counter()
    trainer.step(ids)
    trainer.state.step += 1
    return time.perf_counter() - started


def peak_memory_mb(data: Path, store: str, bitwidth: int, args: argparse.Namespace) -> float:
    """Peak RSS of a fresh process that builds the store and runs a few steps."""
    command = [
        sys.executable, "-m", "bench.train_speed", "--data", str(data),
        "--peak-memory-of", f"{store}:{bitwidth}", "--batch-rays", str(args.batch_rays),
        "--min-level", str(args.min_level), "--max-level", str(args.max_level),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return float(json.loads(result.stdout.strip().splitlines()[-1])["peak_rss_mb"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, help="dataset (default: the synthetic scene)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-rays", type=int, default=4096)
    parser.add_argument("--min-level", type=int, default=3)
    parser.add_argument("--max-level", type=int, default=6)
    parser.add_argument("--bitwidths", type=int, nargs="+", default=[4, 6, 8])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--peak-memory-of", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = args.data or write_synthetic_dataset(Path(tempfile.mkdtemp()) / "synthetic", 40, 8, 64)

    if args.peak_memory_of:
        store, bits = args.peak_memory_of.split(":")
        trainer = make_trainer(data, cast(TrainableStore, store), int(bits), args)
        for _ in range(3):
            timed_step(trainer)
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        print(json.dumps({"peak_rss_mb": peak_mb}))
        return

    stores: list[tuple[str, TrainableStore, int]] = [("uncompressed", "dense", 0)]
    stores += [(f"VQ-AD b={b}", "codebook", b) for b in args.bitwidths]
    trainers = {name: make_trainer(data, store, b, args) for name, store, b in stores}
    for trainer in trainers.values():  # warm-up: first steps pay for allocations
        timed_step(trainer)
        timed_step(trainer)
    times: dict[str, list[float]] = {name: [] for name in trainers}
    for _ in range(args.steps):
        for name, trainer in trainers.items():
            times[name].append(timed_step(trainer))

    baseline_s = statistics.median(times["uncompressed"])
    first = next(iter(trainers.values()))
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU, "
        f"{len(first.rays)} training rays, batch {args.batch_rays}, "
        f"levels {args.min_level}..{args.max_level}, {args.steps} interleaved steps per store"
    )
    print(
        f"{'store':<14} {'step ms':>8} {'rays/s':>9} {'s/epoch':>8} {'x uncompr.':>10} "
        f"{'peak RSS MB':>11}"
    )
    for name, store, bits in stores:
        step_s = statistics.median(times[name])
        epoch_s = step_s * trainers[name].steps_per_epoch
        memory_mb = peak_memory_mb(data, store, bits, args)
        print(
            f"{name:<14} {step_s * 1e3:8.1f} {args.batch_rays / step_s:9.0f} {epoch_s:8.1f} "
            f"{step_s / baseline_s:10.2f} {memory_mb:11.0f}"
        )


if __name__ == "__main__":
    main()
