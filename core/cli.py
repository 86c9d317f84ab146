"""Command-line dispatch: one module in ``core/commands`` per subcommand.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
Modules are imported only when their command runs, so ``info`` and ``cut`` need numpy alone and
``train`` pays for importing torch only when asked for. User errors (:class:`VbnfError`) end
the process with a one-line message and exit code 1, never a traceback; SIGINT or SIGTERM at any
moment (see ``stopping.py``) ends it with the ``cancelled`` event and exit code 130.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from types import ModuleType

from . import stopping
from .errors import TrainingCancelled, VbnfError
from .progress import ProgressReporter

# The engine vendored in the Blender extension leaves ``report`` out (see build_addon.py).
COMMANDS = tuple(
    name
    for name in ("train", "eval", "export", "info", "cut", "synth", "report", "calibrate")
    if (Path(__file__).parent / "commands" / f"{name}.py").is_file()
)

EXIT_USER_ERROR = 1
EXIT_CANCELLED = 130


def _load(name: str) -> ModuleType:
    return importlib.import_module(f"{__package__}.commands.{name}")


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m core", description="VBNF: compressed, streamable neural radiance fields."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = next((arg for arg in argv if arg in COMMANDS), None)
    for name in COMMANDS:
        if chosen is None or name == chosen:
            module = _load(name)
            module.add_arguments(subparsers.add_parser(name, help=module.HELP))
        else:  # listed in --help without importing its dependencies
            subparsers.add_parser(name)
    return parser


def main(argv: list[str] | None = None) -> int:
    with stopping.handled():  # from the first line: a stop signal is a cancellation
        argv = sys.argv[1:] if argv is None else argv
        try:
            return _run(argv)
        except (TrainingCancelled, stopping.StopSignal) as cancelled:  # even while reporting
            ProgressReporter(1, events="--events" in argv).emit("cancelled", message=str(cancelled))
            print(f"cancelled: {cancelled}", file=sys.stderr)
            return EXIT_CANCELLED


def _run(argv: list[str]) -> int:
    args = build_parser(argv).parse_args(argv)
    try:
        return int(_load(args.command).run(args))
    except TrainingCancelled:
        raise
    except VbnfError as error:
        stopping.disarm()  # on the way out: a stop now must not cut the message short
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
