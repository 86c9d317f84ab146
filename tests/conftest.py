"""Shared fixtures: a tiny synthetic dataset and one tiny trained run, built once per worker.

Tests that train share the ``trained_run`` fixture through the ``training`` xdist group, so the
suite trains as few models as it can on the 2-core CI machine.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)  # two workers on two cores: do not oversubscribe


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from core.synthetic import write_synthetic_dataset

    return write_synthetic_dataset(
        tmp_path_factory.mktemp("synthetic"), train_views=24, test_views=6, resolution_px=32
    )


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory, synthetic_dataset: Path) -> Path:
    """A VQ-AD (b = 4) run on the tiny synthetic scene, trained through the real CLI."""
    out_dir = tmp_path_factory.mktemp("run_vq4")
    from core_cli import TINY_TRAIN_ARGS, run_core

    run_core("train", synthetic_dataset, "-o", out_dir, "--bitwidth", "4", *TINY_TRAIN_ARGS)
    return out_dir
