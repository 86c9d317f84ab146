"""``python -m core calibrate``: time a few training steps at given settings on this machine.

The Blender extension turns the answer into an estimate before a bake ("about 9 min"): a bake
trains ``epochs * ceil(views * pixels / batch_rays)`` steps, so seconds per step at the bake's
levels, bitwidth, batch size, device and threads is the figure that scales. The steps run on the
built-in synthetic scene (the real scene is not captured yet), so the estimate is as good as
that scene's occupancy is like the user's: the right order of magnitude, not a promise.
Prints one JSON object: ``seconds_per_step``, ``batch_rays`` (the engine's default unless
given), ``steps`` timed, ``backend``.
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from pathlib import Path

import torch

from ..data.synthetic import write_synthetic_dataset
from ..errors import VbnfError
from ..neural.field import FieldConfig
from ..neural.render.backend import BACKEND_CHOICES, require_device
from ..neural.trainer import TrainOptions, prepare_run
from ..progress import ProgressReporter

HELP = "time a few training steps at the given settings (for bake estimates)"
CALIBRATION_VIEWS, CALIBRATION_RESOLUTION_PX = 8, 64
WARM_UP_STEPS = 1  # the first step pays for allocation and lazy initialisation


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults, field_defaults = TrainOptions(), FieldConfig()
    parser.add_argument("--bitwidth", type=int, default=field_defaults.bitwidth)
    parser.add_argument("--min-level", type=int, default=field_defaults.min_level)
    parser.add_argument("--max-level", type=int, default=field_defaults.max_level)
    parser.add_argument("--batch-rays", type=int, default=defaults.batch_rays)
    parser.add_argument("--device", choices=("cpu", "cuda"), default=defaults.device)
    parser.add_argument("--backend", choices=BACKEND_CHOICES, default=defaults.backend)
    parser.add_argument("--steps", type=int, default=4, help="steps timed after a warm-up")


def run(args: argparse.Namespace) -> int:
    if args.steps < 1:
        raise VbnfError(f"--steps must be at least 1, got {args.steps}")
    require_device(args.device)
    try:
        config = FieldConfig(args.min_level, args.max_level, bitwidth=args.bitwidth)
        options = TrainOptions(batch_rays=args.batch_rays, device=args.device, backend=args.backend)
    except ValueError as error:
        raise VbnfError(str(error)) from error
    with tempfile.TemporaryDirectory(prefix="vbnf-calibrate-") as folder:
        data_dir = write_synthetic_dataset(
            Path(folder) / "data", CALIBRATION_VIEWS, 1, CALIBRATION_RESOLUTION_PX
        )
        quiet = ProgressReporter(1, events=True, event_stream=io.StringIO())
        trainer = prepare_run(data_dir, Path(folder) / "run", config, options, False, quiet)
        generator = torch.Generator().manual_seed(0)
        timed_s = 0.0
        for index in range(WARM_UP_STEPS + args.steps):
            ids = torch.randint(len(trainer.rays), (options.batch_rays,), generator=generator)
            started = time.monotonic()
            trainer.step(ids.to(options.device))
            if options.device == "cuda":
                torch.cuda.synchronize()
            if index >= WARM_UP_STEPS:
                timed_s += time.monotonic() - started
    print(
        json.dumps(
            {
                "seconds_per_step": timed_s / args.steps,
                "batch_rays": options.batch_rays,
                "steps": args.steps,
                "backend": trainer.backend.name,
            }
        )
    )
    return 0
