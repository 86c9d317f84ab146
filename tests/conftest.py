"""Shared fixtures: a tiny synthetic dataset and one tiny trained run, built once per session.

Under pytest-xdist every worker is its own process, and the pinned pytest/xdist pair ignores
``--dist loadgroup`` (xdist sets ``item._nodeid``, pytest 9 reads ``_id``), so a fixture that
should be built once is built by whichever worker asks first, under a file lock in the session's
shared temporary folder, and reused by the others.
"""

from __future__ import annotations

import fcntl
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)  # two workers on two cores: do not oversubscribe


def built_once(factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """``name``'s folder, built by ``build`` in exactly one worker of this session.

    The folder is complete when its ``.done`` marker exists; a worker that finds the marker
    missing holds the lock while it builds, so the others wait for it instead of building too.
    """
    session_root = factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        session_root = session_root.parent  # shared by all workers of this run
    folder, done = session_root / name, session_root / f"{name}.done"
    with open(session_root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            folder.mkdir(exist_ok=True)
            build(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from core.data.synthetic import write_synthetic_dataset

    def build(folder: Path) -> None:
        write_synthetic_dataset(folder, train_views=24, test_views=6, resolution_px=32)

    return built_once(tmp_path_factory, "synthetic", build)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory, synthetic_dataset: Path) -> Path:
    """A VQ-AD (b = 4) run on the tiny synthetic scene, trained through the real CLI."""
    from core_cli import TINY_TRAIN_ARGS, run_core

    def build(folder: Path) -> None:
        run_core("train", synthetic_dataset, "-o", folder, "--bitwidth", "4", *TINY_TRAIN_ARGS)

    return built_once(tmp_path_factory, "run_vq4", build)
