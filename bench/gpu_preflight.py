"""First phase of ``bench/gpu_check.sh``: what the GPU machine has, and whether the kernels run.

    python -m bench.gpu_preflight

Prints the versions that decide whether the cupy backend can work (Python, numpy, torch and
its CUDA, the GPU, CuPy and the CUDA runtime, driver and NVRTC it sees), whether
requirements-gpu.txt pins the CuPy of torch's CUDA, how long the kernels take to compile, and
the result of one kernel launch and sync against torch's compositing. Exit status: 0 when the
kernels run; 3 when torch has CUDA but the cupy backend cannot run (the reason is printed; the
rest of a check can still measure torch); 2 when torch sees no CUDA device, and 1 (Python's)
when this script itself fails, e.g. torch does not import: nothing else in a GPU check can run.
"""

from __future__ import annotations

import platform
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

from core.neural.render.gpu import ops
from core.neural.render.gpu.backend import cupy_unavailable_reason
from core.neural.render.gpu.kernels import cuda_version_mismatch, cupy_package_for, import_cupy
from core.neural.render.raymarch import PackedSamples, composite

REQUIREMENTS_GPU = Path(__file__).resolve().parents[1] / "requirements-gpu.txt"
NO_CUDA, NO_CUPY, KERNELS_RUN = 2, 3, 0


def pinned_cupy() -> str:
    """The CuPy package requirements-gpu.txt pins."""
    text = REQUIREMENTS_GPU.read_text(encoding="utf-8")
    match = re.search(r"^(cupy-[\w-]+)==", text, re.MULTILINE)
    return match.group(1) if match else "none"


def one_launch() -> str:
    """Composite two short rays with the kernels and with torch, after a device sync."""
    device = torch.device("cuda")
    generator = torch.Generator(device=device).manual_seed(0)
    ray_index = torch.tensor([0, 0, 0, 1, 1], device=device)
    count = int(ray_index.numel())
    samples = PackedSamples(
        ray_index,
        torch.linspace(0.1, 0.5, count, device=device),
        torch.full((count,), 0.1, device=device),
        torch.zeros(count, 3, device=device),
    )
    density = 10.0 * torch.rand(count, device=device, generator=generator)
    rgb = torch.rand(count, 3, device=device, generator=generator)
    got = ops.composite(density, rgb, samples, 2)
    torch.cuda.synchronize()
    want = composite(density, rgb, samples, 2)
    error = max(float((a - b).abs().max()) for a, b in zip(got, want, strict=True))
    verdict = "ok" if error <= 1e-5 else "MISMATCH"
    return f"{verdict} (largest difference from torch {error:.2g})"


def main() -> int:
    print(f"python {platform.python_version()} ({sys.executable}); numpy {np.__version__}")
    print(f"torch {torch.__version__}, built for CUDA {torch.version.cuda}")
    if not torch.cuda.is_available():
        print(
            "preflight: torch sees no CUDA device: this check needs the GPU machine "
            "(docs/gpu.md, 'Running it on the GPU machine')"
        )
        return NO_CUDA
    properties = torch.cuda.get_device_properties(0)
    print(
        f"GPU: {properties.name}, compute capability {properties.major}.{properties.minor}, "
        f"{properties.total_memory / 2**30:.0f} GiB, {properties.multi_processor_count} SMs"
    )
    wanted, pinned = cupy_package_for(torch.version.cuda), pinned_cupy()
    agreement = "matches" if wanted == pinned else f"WRONG: torch's CUDA needs {wanted}"
    print(f"requirements-gpu.txt pins {pinned}: {agreement}")
    try:
        cupy = import_cupy()
    except Exception as error:  # ImportError, or a broken CUDA library underneath
        print(f"preflight: CuPy does not import: {error}")
        return NO_CUPY
    runtime = cupy.cuda.runtime
    nvrtc_major, nvrtc_minor = cupy.cuda.nvrtc.getVersion()
    print(
        f"cupy {cupy.__version__}: CUDA runtime {runtime.runtimeGetVersion()}, driver "
        f"{runtime.driverGetVersion()}, NVRTC {nvrtc_major}.{nvrtc_minor}"
    )
    mismatch = cuda_version_mismatch(cupy)
    if mismatch is not None:
        print(f"warning: {mismatch}")
    started = time.perf_counter()
    reason = cupy_unavailable_reason("cuda")
    if reason is not None:
        print(f"preflight: the cupy backend cannot run: {reason}")
        return NO_CUPY
    print(f"kernels compiled and loaded in {time.perf_counter() - started:.1f} s")
    try:
        result = one_launch()
    except Exception as error:  # a launch or sync error: the backend is not usable
        print(f"preflight: one kernel launch and sync failed: {type(error).__name__}: {error}")
        return NO_CUPY
    print(f"one kernel launch and sync: {result}")
    return KERNELS_RUN if result.startswith("ok") else NO_CUPY


if __name__ == "__main__":
    sys.exit(main())
