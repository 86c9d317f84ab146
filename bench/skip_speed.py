"""Training with and without empty-space skipping, side by side in one process.

    python -m bench.skip_speed [--data DATASET] [--epochs 10] [--min-level 3 --max-level 6]
        [--threads 1] [--baseline-only]

Both trainers start from the same seed (same octree, same initial weights) and take the same
rays in the same order; their steps alternate, so load from other processes hits both alike.
Prints both runs' step times and the ratio (median over the steps after the first occupancy
checks, and over the whole run), the samples each run shades per step (after those checks),
the fraction of samples kept per level on a fixed batch of training rays (by the occupancy
grids, and by the grids with early ray termination, as the skipped run trains), and held-out
PSNR per level after the same number of steps. ``--baseline-only`` trains one
unskipped run with only the trainer API that predates skipping, to time older code on the same
data (run it from that code's checkout, e.g. ``cd /tmp/base && python /path/to/skip_speed.py``).
Prints figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from core.data.dataset import load_split
from core.data.synthetic import write_synthetic_dataset
from core.neural.evaluate import evaluate_levels
from core.neural.field import FieldConfig
from core.neural.trainer import ORDER_STREAM, Trainer, TrainOptions, derived_seed, prepare_run
from core.progress import ProgressReporter


class ShadedSamples:
    """Counts the points a field shades with autograd on (the training render's samples, not
    the occupancy probes, which run without it)."""

    def __init__(self, field: torch.nn.Module) -> None:
        self.count = 0
        field.register_forward_pre_hook(self._add)

    def _add(self, _module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        if torch.is_grad_enabled():
            self.count += int(inputs[0].shape[0])

    def take(self) -> int:
        count, self.count = self.count, 0
        return count


def make_trainer(data: Path, args: argparse.Namespace, **skip: object) -> Trainer:
    config = FieldConfig(args.min_level, args.max_level, 16, "codebook", 4)
    options = TrainOptions(epochs=args.epochs, batch_rays=args.batch_rays, seed=0, **skip)  # type: ignore[arg-type]
    out_dir = Path(tempfile.mkdtemp(prefix="vbnf_skip_"))
    return prepare_run(data, out_dir, config, options, False, ProgressReporter(1, interval_s=1e9))


def timed_step(trainer: Trainer, ids: torch.Tensor) -> float:
    started = time.perf_counter()
    trainer.step(ids)
    trainer.state.step += 1
    return time.perf_counter() - started


def samples_per_level(
    trainer: Trainer, ids: torch.Tensor, counter: ShadedSamples | None = None
) -> list[int]:
    """Samples per level on rays ``ids`` (bin centres) that the occupancy grids keep, or, given
    the trainer's ``counter``, that the training render with early termination shades."""
    from core.neural.render.renderer import render_rays_terminated  # absent in older code

    batch = trainer.rays.batch.subset(ids)
    counts = []
    for lod in range(trainer.field.config.num_lods):
        if counter is not None:
            with torch.enable_grad():
                render_rays_terminated(trainer.field, batch, lod, None)
            counts.append(counter.take())
        else:
            with torch.no_grad():
                samples = trainer.field.accel.raymarch(batch.origins, batch.directions, lod, None)
            counts.append(int(samples.t.numel()))
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="dataset (default: `python -m core synth`)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-rays", type=int, default=4096)
    parser.add_argument("--min-level", type=int, default=3)
    parser.add_argument("--max-level", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--baseline-only", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = args.data or write_synthetic_dataset(Path(tempfile.mkdtemp()) / "synth", 40, 8, 64)
    if args.baseline_only:
        runs = {"unskipped": make_trainer(data, args)}
    else:
        runs = {
            "unskipped": make_trainer(data, args, skip_empty=False),
            "skipped": make_trainer(data, args, skip_empty=True),
        }
    first = next(iter(runs.values()))
    times: dict[str, list[float]] = {name: [] for name in runs}
    shaded: dict[str, list[int]] = {name: [] for name in runs}
    counters = {name: ShadedSamples(trainer.field) for name, trainer in runs.items()}
    started = time.perf_counter()
    for epoch in range(args.epochs):
        seed = derived_seed(0, ORDER_STREAM, epoch)
        order = torch.randperm(len(first.rays), generator=torch.Generator().manual_seed(seed))
        for index in range(first.steps_per_epoch):
            ids = order[index * args.batch_rays : (index + 1) * args.batch_rays]
            for name, trainer in runs.items():
                times[name].append(timed_step(trainer, ids))
                shaded[name].append(counters[name].take())
        print(f"epoch {epoch + 1}/{args.epochs} done, {time.perf_counter() - started:.0f} s")
    steps = len(times["unskipped"])
    print(
        f"levels {args.min_level}..{args.max_level}, {steps} steps of {args.batch_rays} rays, "
        f"{torch.get_num_threads()} thread(s)"
    )
    for name, step_times in times.items():
        print(
            f"{name:<10} total {sum(step_times):7.1f} s, median step "
            f"{statistics.median(step_times) * 1e3:6.1f} ms"
        )
    if "skipped" in runs:
        from core.neural.render.occupancy import EMPTY_CHECKS  # absent in older code

        defaults = TrainOptions()
        skipping_from = (
            defaults.occupancy_warmup_steps + (EMPTY_CHECKS - 1) * defaults.occupancy_interval_steps
        )
        late = slice(skipping_from, None)
        for name in runs:
            median_ms = statistics.median(times[name][late]) * 1e3
            mean_shaded = statistics.mean(shaded[name][late])
            print(f"{name:<10} after step {skipping_from}: median step {median_ms:6.1f} ms, "
                  f"{mean_shaded:9.0f} samples shaded a step (mean)")  # fmt: skip
        ratio_late = statistics.median(times["unskipped"][late]) / statistics.median(
            times["skipped"][late]
        )
        ratio_total = sum(times["unskipped"]) / sum(times["skipped"])
        print(f"step-time ratio unskipped/skipped: {ratio_late:.2f}x median after step "
              f"{skipping_from}, {ratio_total:.2f}x over the whole run")  # fmt: skip
        probe = torch.randperm(len(first.rays), generator=torch.Generator().manual_seed(7))
        probe = probe[: args.batch_rays]
        full = samples_per_level(runs["unskipped"], probe)
        kept = samples_per_level(runs["skipped"], probe)
        shaded_kept = samples_per_level(runs["skipped"], probe, counters["skipped"])
        for lod, counts in enumerate(zip(full, kept, shaded_kept, strict=True)):
            all_count, kept_count, shaded_count = counts
            print(f"level {args.min_level + lod}: samples kept by occupancy "
                  f"{kept_count / all_count:.1%}, shaded with termination "
                  f"{shaded_count / all_count:.1%} (of {all_count})")  # fmt: skip
    test = load_split(data, "test")
    for name, trainer in runs.items():
        scores = evaluate_levels(trainer.field.eval(), test)
        print(f"{name:<10} held-out PSNR " + " ".join(f"L{s.level} {s.psnr:.2f}" for s in scores))


if __name__ == "__main__":
    main()
