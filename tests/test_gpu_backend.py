"""``--backend`` selection, CuPy-free imports and the GPU benchmark's CPU smoke run.

These run on every machine; the kernels themselves are checked in ``test_gpu_parity.py``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from core_cli import REPO_ROOT, run_core

from core.errors import VbnfError
from core.neural.render.backend import select_backend, torch_backend
from core.neural.render.gpu.kernels import cupy_package_for
from core.neural.render.occupancy import Culling, sample_occupied
from core.neural.render.raymarch import composite, composite_round


def test_torch_backend_is_the_reference() -> None:
    backend = torch_backend()
    assert backend.name == "torch"
    assert backend.sample is sample_occupied
    assert backend.occupied_samples is Culling.occupied_samples
    assert backend.composite is composite
    assert backend.composite_round is composite_round


def test_selection_on_the_cpu() -> None:
    assert select_backend("torch", "cpu").name == "torch"
    assert select_backend("auto", "cpu").name == "torch"
    with pytest.raises(VbnfError, match="--backend cupy cannot run: it needs a CUDA device"):
        select_backend("cupy", "cpu")
    with pytest.raises(VbnfError, match="--backend must be one of"):
        select_backend("fast", "cpu")


def test_core_never_imports_cupy_on_its_own() -> None:
    """CuPy is optional: importing and using the engine's modules must not pull it in."""
    code = (
        "import sys, core.neural.trainer, core.neural.render.renderer\n"
        "import core.neural.render.gpu.backend, core.neural.render.gpu.ops\n"
        "import core.neural.render.backend, core.commands.train\n"
        "core.neural.render.backend.select_backend('auto', 'cpu')\n"
        "assert 'cupy' not in sys.modules, 'cupy was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True, timeout=120)


def test_cli_rejects_cupy_on_the_cpu_in_one_line(synthetic_dataset: Path, tmp_path: Path) -> None:
    result = run_core(
        "train", synthetic_dataset, "-o", tmp_path / "out", "--backend", "cupy", check=False
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: --backend cupy cannot run")


def test_requirements_gpu_pins_the_cupy_of_the_torch_it_names() -> None:
    """The pinned CuPy wheel is the one for the CUDA of the torch its header names (the GPU
    machine's; its preflight checks the torch actually there)."""
    text = (REPO_ROOT / "requirements-gpu.txt").read_text(encoding="utf-8")
    pins = [line.split("==")[0] for line in text.splitlines() if line and line[0] != "#"]
    named = re.search(r"torch built with CUDA (\d+) ", text)
    assert named is not None
    assert pins == [cupy_package_for(f"{named.group(1)}.0")] == ["cupy-cuda13x"]
    assert cupy_package_for("12.8") == "cupy-cuda12x"


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the check runs in full")
def test_gpu_check_stops_at_once_without_a_gpu(tmp_path: Path) -> None:
    """The GPU machine's check, where torch has no CUDA: the preflight says so in a line and
    the script stops at once with status 2, its log kept in $OUT."""
    environment = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path)}
    result = subprocess.run(
        ["bash", "bench/gpu_check.sh"],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "preflight: torch sees no CUDA device" in result.stdout
    assert "nothing else in this check can run" in result.stdout
    assert "Traceback" not in result.stdout
    assert "preflight: exit 2" in (tmp_path / "gpu_check.log").read_text(encoding="utf-8")


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_gpu_check_is_shellcheck_clean() -> None:
    subprocess.run(["shellcheck", "bench/gpu_check.sh"], cwd=REPO_ROOT, check=True, timeout=60)


@pytest.mark.slow
def test_benchmark_quick_run_on_the_cpu(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from bench.gpu_backends import main

    results = main(["--quick", "--device", "cpu", "--json", str(tmp_path / "figures.json")])
    assert list(results) == ["torch"]
    figures = results["torch"]
    assert figures["pipeline_forward_rays_per_s"] > 0 and figures["render_fps"] > 0
    assert figures["best_test_psnr_db"] > 0
    printed = capsys.readouterr().out
    assert "cupy backend not measured" in printed and "64x36 early-exit render" in printed
    assert "[torch] step_ms: " in printed  # each figure printed when measured
    written = json.loads((tmp_path / "figures.json").read_text(encoding="utf-8"))
    assert written["results"] == json.loads(json.dumps(results))
