"""The cupy :class:`~core.neural.render.backend.Backend`: the CUDA kernels of ``cuda/``.

:func:`cupy_unavailable_reason` says why the kernels cannot run on a device (and compiles
them when they can); :func:`~core.neural.render.backend.select_backend` uses it for ``auto``.
"""

from __future__ import annotations

import functools

import torch

from ..backend import Backend


@functools.cache
def cupy_backend() -> Backend:
    """The CUDA kernels (CUDA tensors only); see :func:`cupy_unavailable_reason` first."""
    from . import ops

    return Backend(
        "cupy",
        ops.trace,
        ops.sample,
        ops.KERNEL_GATHER,
        ops.composite,
        ops.composite_round,
        ops.occupied_samples,
    )


def cupy_unavailable_reason(device: str | torch.device) -> str | None:
    """Why the kernels cannot run on ``device``, or None when they can (this compiles them)."""
    device = torch.device(device)
    if device.type != "cuda":
        return f"it needs a CUDA device, and the device is {device}"
    if not torch.cuda.is_available():
        return "torch sees no CUDA device"
    from .kernels import compile_all, cuda_version_mismatch, cupy_package_for, import_cupy

    try:
        cupy = import_cupy()
    except Exception as error:  # ImportError, or a broken CUDA library underneath
        return (
            f"CuPy does not import ({error}); install {cupy_package_for(torch.version.cuda)} "
            "(requirements-gpu.txt)"
        )
    index = device.index if device.index is not None else torch.cuda.current_device()
    try:
        compile_all(index)
    except Exception as error:  # NVRTC and driver errors come as several CuPy types
        mismatch = cuda_version_mismatch(cupy)
        hint = "" if mismatch is None else f"; {mismatch}"
        return f"the kernels in cuda/ do not compile or load ({error}){hint}"
    return None
