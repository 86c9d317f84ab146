"""Training with and without empty-space skipping, side by side in one process.

    python -m bench.skip_speed [--data DATASET] [--epochs 10] [--min-level 3 --max-level 6]
        [--threads 1] [--seed 0] [--against REV | --against-path DIR]

Both trainers start from the same seed (same octree, same initial weights) and take the same
rays in the same order (``--seed`` picks another start and order, so a PSNR gap can be told
from run-to-run noise); their steps alternate, so load from other processes hits both alike.
Prints both runs' step times and the ratio (median over the steps after the first occupancy
checks, and over the whole run), the samples each run shades per step (over the run, and after
those checks; a run too short to reach them, such as one epoch (40 steps) of the default scene,
gets the whole-run figures only), the fraction of samples kept per level on a fixed batch of
training rays (by the occupancy grids, and by the grids with early ray termination, as the
skipped run trains), and held-out PSNR per level after the same number of steps.

``--against REV`` adds a third run: the trainer of ``core`` as it was at git revision REV
(checked out into a temporary worktree, removed at the end), imported in this process under
another name, on the same data, seed, rays and step order, its steps interleaved with the
others'. REV may predate issue 12's package layout (``core/trainer.py``, ``core/field.py``, ...
at the package's top, no skipping), e.g. ``b427a6f``, or have the current one (then it trains
with its own defaults, skipping included: the code before a change, on the same footing).
``--against-path DIR`` takes such a checkout that already exists. The older run gets the same
timing lines, its step-time ratios to both current runs, and held-out PSNR from its own
evaluation of the test split it loads itself; a line first says whether it starts from the same
training rays, targets and initial weights.
Prints figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from core.data.dataset import load_split
from core.data.synthetic import write_synthetic_dataset
from core.neural.evaluate import evaluate_levels
from core.neural.field import FieldConfig
from core.neural.render.occupancy import EMPTY_CHECKS
from core.neural.render.renderer import render_rays_terminated
from core.neural.trainer import ORDER_STREAM, Trainer, TrainOptions, derived_seed, prepare_run
from core.progress import ProgressReporter

OLD_PACKAGE = "core_against"  # the name the older ``core`` is imported under


@dataclass(frozen=True)
class Engine:
    """The training API the bench calls, taken from the current ``core`` or an older one, so
    one loop drives both."""

    field_config: Callable[..., Any]
    train_options: Callable[..., Any]
    prepare_run: Callable[..., Any]
    reporter: Callable[..., Any]
    load_split: Callable[..., Any]
    evaluate_levels: Callable[..., Any]


CURRENT = Engine(
    FieldConfig, TrainOptions, prepare_run, ProgressReporter, load_split, evaluate_levels
)


class SteppedTrainer(Protocol):
    """What the interleaved loop needs of a trainer, old or current."""

    @property
    def field(self) -> torch.nn.Module: ...

    @property
    def state(self) -> Any: ...

    def step(self, ray_ids: torch.Tensor) -> object: ...


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


def make_trainer(data: Path, args: argparse.Namespace, engine: Engine, **skip: object) -> Any:
    """A fresh run of ``engine``'s trainer with the bench's settings (an older trainer takes no
    ``skip`` options)."""
    config = engine.field_config(args.min_level, args.max_level, 16, "codebook", 4)
    options = engine.train_options(
        epochs=args.epochs, batch_rays=args.batch_rays, seed=args.seed, **skip
    )
    out_dir = Path(tempfile.mkdtemp(prefix="vbnf_skip_"))
    reporter = engine.reporter(1, interval_s=1e9)
    return engine.prepare_run(data, out_dir, config, options, False, reporter)


def load_package(name: str, root: Path) -> None:
    """Import the package ``core`` under ``root`` as ``name``: its modules import each other
    relatively, so an older version loads beside the current ``core`` without either one
    shadowing the other."""
    package_dir = root / "core"
    spec = importlib.util.spec_from_file_location(
        name, package_dir / "__init__.py", submodule_search_locations=[str(package_dir)]
    )
    if spec is None or spec.loader is None:
        raise SystemExit(f"no package core in {root}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before exec, so the package's relative imports find it
    spec.loader.exec_module(module)


def old_engine(root: Path) -> tuple[Engine, str]:
    """The training API of the checkout ``root`` and what it stands for: modules at the
    package's top (the layout before issue 12, no skipping) or in ``data``/``neural`` (the
    current layout, trained with its defaults)."""
    load_package(OLD_PACKAGE, root)
    current_layout = (root / "core" / "neural" / "trainer.py").is_file()
    names = {"trainer": "trainer", "field": "field", "dataset": "dataset", "evaluate": "evaluate"}
    if current_layout:
        names = {
            "trainer": "neural.trainer",
            "field": "neural.field",
            "dataset": "data.dataset",
            "evaluate": "neural.evaluate",
        }

    def module(key: str) -> Any:
        return importlib.import_module(f"{OLD_PACKAGE}.{names.get(key, key)}")

    engine = Engine(
        module("field").FieldConfig,
        module("trainer").TrainOptions,
        module("trainer").prepare_run,
        module("progress").ProgressReporter,
        module("dataset").load_split,
        module("evaluate").evaluate_levels,
    )
    return engine, "its default training" if current_layout else "before issue 12"


@contextmanager
def worktree(revision: str) -> Iterator[Path]:
    """A detached checkout of ``revision`` of the repository this file is in, removed on the
    way out, also on error, so no worktree is left registered."""
    repo = str(Path(__file__).resolve().parent)
    with tempfile.TemporaryDirectory(prefix="vbnf_against_") as parent:
        path = Path(parent) / "checkout"
        git = ["git", "-C", repo, "worktree"]
        subprocess.run([*git, "add", "--detach", "--quiet", str(path), revision], check=True)
        try:
            yield path
        finally:
            subprocess.run([*git, "remove", "--force", str(path)], check=True)


@contextmanager
def against_checkout(args: argparse.Namespace) -> Iterator[Path | None]:
    """The older code's checkout for ``--against`` or ``--against-path``, None without."""
    if args.against is not None:
        with worktree(args.against) as path:
            yield path
    else:
        yield args.against_path


def revision_label(root: Path) -> str:
    """A short name for the checkout ``root``: its commit, else its folder's name."""
    described = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    return described.stdout.strip() if described.returncode == 0 else root.name


def same_start(old: Any, current: Trainer) -> bool:
    """Whether the older run starts where the current ones do (same training rays and targets,
    same initial weights): the comparison rests on it, and the data loading changed between."""
    old_batch, batch = old.rays.batch, current.rays.batch
    same_rays = all(
        torch.equal(getattr(old_batch, name), getattr(batch, name))
        for name in ("origins", "directions", "view_directions")
    )
    old_weights = dict(old.field.named_parameters())
    weights = dict(current.field.named_parameters())
    return (
        same_rays
        and torch.equal(old.rays.target, current.rays.target)
        and old_weights.keys() == weights.keys()
        and all(torch.equal(old_weights[name], weights[name]) for name in weights)
    )


def timed_step(trainer: SteppedTrainer, ids: torch.Tensor) -> float:
    started = time.perf_counter()
    trainer.step(ids)
    trainer.state.step += 1
    return time.perf_counter() - started


def samples_per_level(
    trainer: Trainer, ids: torch.Tensor, counter: ShadedSamples | None = None
) -> list[int]:
    """Samples per level on rays ``ids`` (bin centres) that the occupancy grids keep, or, given
    the trainer's ``counter``, that the training render with early termination shades."""
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


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="dataset (default: `python -m core synth`)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-rays", type=int, default=4096)
    parser.add_argument("--min-level", type=int, default=3)
    parser.add_argument("--max-level", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    older = parser.add_mutually_exclusive_group()
    older.add_argument("--against", metavar="REV", help="also train core as of git revision REV")
    older.add_argument(
        "--against-path", type=Path, metavar="DIR", help="also train the core of checkout DIR"
    )
    return parser.parse_args()


def interleave(
    runs: dict[str, SteppedTrainer], reference: Trainer, args: argparse.Namespace
) -> tuple[dict[str, list[float]], dict[str, list[int]]]:
    """Train every run on the same ray ids, one step of each in turn; returns each run's step
    times and samples shaded per step."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    shaded: dict[str, list[int]] = {name: [] for name in runs}
    counters = {name: ShadedSamples(trainer.field) for name, trainer in runs.items()}
    started = time.perf_counter()
    for epoch in range(args.epochs):
        seed = derived_seed(args.seed, ORDER_STREAM, epoch)
        order = torch.randperm(len(reference.rays), generator=torch.Generator().manual_seed(seed))
        for index in range(reference.steps_per_epoch):
            ids = order[index * args.batch_rays : (index + 1) * args.batch_rays]
            for name, trainer in runs.items():
                times[name].append(timed_step(trainer, ids))
                shaded[name].append(counters[name].take())
        print(f"epoch {epoch + 1}/{args.epochs} done, {time.perf_counter() - started:.0f} s")
    return times, shaded


def ratio_line(times: dict[str, list[float]], slow: str, fast: str, late: slice) -> str:
    """``slow``'s step time over ``fast``'s: median over the ``late`` steps (where the run has
    any), and in total."""
    ratio_total = sum(times[slow]) / sum(times[fast])
    if not times[slow][late]:
        return f"step-time ratio {slow}/{fast}: {ratio_total:.2f}x over the whole run"
    ratio_late = statistics.median(times[slow][late]) / statistics.median(times[fast][late])
    return (
        f"step-time ratio {slow}/{fast}: {ratio_late:.2f}x median after step {late.start}, "
        f"{ratio_total:.2f}x over the whole run"
    )


def print_timings(
    times: dict[str, list[float]], shaded: dict[str, list[int]], old: str | None, old_label: str
) -> None:
    """Each run's step times and samples shaded, and the ratios between runs (``old``, the
    older code's run, described by ``old_label``); the figures after skipping starts only
    where the run gets that far."""
    for name, step_times in times.items():
        print(
            f"{name:<10} total {sum(step_times):7.1f} s, median step "
            f"{statistics.median(step_times) * 1e3:6.1f} ms, "
            f"{statistics.mean(shaded[name]):9.0f} samples shaded a step (mean)"
        )
    defaults = TrainOptions()
    skipping_from = (
        defaults.occupancy_warmup_steps + (EMPTY_CHECKS - 1) * defaults.occupancy_interval_steps
    )
    late = slice(skipping_from, None)
    steps = len(times["unskipped"])
    if steps <= skipping_from:
        print(f"skipping starts at step {skipping_from}, after this run's {steps} steps: "
              "no figures after it (train more steps: --epochs, --batch-rays)")  # fmt: skip
    else:
        for name in times:
            median_ms = statistics.median(times[name][late]) * 1e3
            mean_shaded = statistics.mean(shaded[name][late])
            print(f"{name:<10} after step {skipping_from}: median step {median_ms:6.1f} ms, "
                  f"{mean_shaded:9.0f} samples shaded a step (mean)")  # fmt: skip
    print(ratio_line(times, "unskipped", "skipped", late))
    if old is not None:
        for current in ("skipped", "unskipped"):
            print(f"vs {old} ({old_label}): " + ratio_line(times, old, current, late))


def print_kept(unskipped: Trainer, skipped: Trainer, args: argparse.Namespace) -> None:
    """The fraction of samples per level the skipped run keeps on a fixed batch of rays."""
    probe = torch.randperm(len(unskipped.rays), generator=torch.Generator().manual_seed(7))
    probe = probe[: args.batch_rays]
    full = samples_per_level(unskipped, probe)
    kept = samples_per_level(skipped, probe)
    counter = ShadedSamples(skipped.field)
    shaded_kept = samples_per_level(skipped, probe, counter)
    for lod, counts in enumerate(zip(full, kept, shaded_kept, strict=True)):
        all_count, kept_count, shaded_count = counts
        print(f"level {args.min_level + lod}: samples kept by occupancy "
              f"{kept_count / all_count:.1%}, shaded with termination "
              f"{shaded_count / all_count:.1%} (of {all_count})")  # fmt: skip


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    data = args.data or write_synthetic_dataset(Path(tempfile.mkdtemp()) / "synth", 40, 8, 64)
    with against_checkout(args) as root:
        engines: dict[str, Engine] = {}
        runs: dict[str, SteppedTrainer] = {}
        old: str | None = None
        old_label = ""
        if root is not None:
            old = revision_label(root)
            engines[old], old_label = old_engine(root)
            runs[old] = make_trainer(data, args, engines[old])
        unskipped = make_trainer(data, args, CURRENT, skip_empty=False)
        skipped = make_trainer(data, args, CURRENT, skip_empty=True)
        runs |= {"unskipped": unskipped, "skipped": skipped}
        engines |= {"unskipped": CURRENT, "skipped": CURRENT}
        if old is not None:
            same = "yes" if same_start(runs[old], unskipped) else "NO"
            print(f"{old}: same training rays, targets and initial weights as now: {same}")
        times, shaded = interleave(runs, unskipped, args)
        print(
            f"levels {args.min_level}..{args.max_level}, {len(times['unskipped'])} steps of "
            f"{args.batch_rays} rays, {torch.get_num_threads()} thread(s), seed {args.seed}"
        )
        print_timings(times, shaded, old, old_label)
        print_kept(unskipped, skipped, args)
        for name, trainer in runs.items():
            test = engines[name].load_split(data, "test")
            scores = engines[name].evaluate_levels(trainer.field.eval(), test)
            print(
                f"{name:<10} held-out PSNR " + " ".join(f"L{s.level} {s.psnr:.2f}" for s in scores)
            )


if __name__ == "__main__":
    main()
