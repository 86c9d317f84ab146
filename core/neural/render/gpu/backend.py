"""Choosing between the torch reference and the CUDA kernels: ``--backend auto|torch|cupy``.

A :class:`Backend` bundles the five hot paths of rendering with the signatures of their torch
reference, so the trainer and renderer call ``backend.trace(...)`` and never care which one
runs. ``auto`` takes the kernels when the device is CUDA, CuPy imports and every kernel
compiles; otherwise torch, which is also what a CPU machine gets. Asking for ``cupy`` where it
cannot work is a user error with the reason in the message, never a silent fallback.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch

from ....errors import VbnfError
from ....limits import SAMPLES_PER_VOXEL
from ...field import TORCH_GATHER, FeatureGather
from ..raymarch import OctreeTracer, PackedSamples, VoxelHits
from ..raymarch import composite as torch_composite
from ..raymarch import sample_hits as torch_sample_hits

if TYPE_CHECKING:
    from ...field import RadianceField
    from ..renderer import RayBatch

BACKEND_CHOICES = ("auto", "torch", "cupy")


class TraceFn(Protocol):
    def __call__(
        self, tracer: OctreeTracer, origins: torch.Tensor, directions: torch.Tensor
    ) -> VoxelHits: ...


class SampleFn(Protocol):
    def __call__(
        self,
        hits: VoxelHits,
        origins: torch.Tensor,
        directions: torch.Tensor,
        generator: torch.Generator | None,
        samples_per_voxel: int = SAMPLES_PER_VOXEL,
    ) -> PackedSamples: ...


class CompositeFn(Protocol):
    def __call__(
        self, density: torch.Tensor, rgb: torch.Tensor, samples: PackedSamples, num_rays: int
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


class RenderEarlyExitFn(Protocol):
    def __call__(
        self,
        field: RadianceField,
        tracer: OctreeTracer,
        rays: RayBatch,
        lod: int,
        termination_threshold: float = ...,
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


@dataclass(frozen=True)
class Backend:
    """The hot paths of one implementation; each has the signature of the torch function:
    ``trace(tracer, origins, directions)`` is ``tracer(origins, directions)``, ``sample`` is
    ``raymarch.sample_hits``, ``gather`` is the field's :class:`~core.field.FeatureGather`,
    ``composite`` is ``raymarch.composite`` and ``render_early_exit`` is
    ``render.render_rays_early_exit``."""

    name: str
    trace: TraceFn
    sample: SampleFn
    gather: FeatureGather
    composite: CompositeFn
    render_early_exit: RenderEarlyExitFn


def trace_with_torch(
    tracer: OctreeTracer, origins: torch.Tensor, directions: torch.Tensor
) -> VoxelHits:
    return tracer(origins, directions)


@functools.cache
def torch_backend() -> Backend:
    """The torch reference (every device)."""
    from ..renderer import render_rays_early_exit  # render imports this module at import time

    return Backend(
        "torch",
        trace_with_torch,
        torch_sample_hits,
        TORCH_GATHER,
        torch_composite,
        render_rays_early_exit,
    )


@functools.cache
def cupy_backend() -> Backend:
    """The CUDA kernels (CUDA tensors only); see :func:`cupy_unavailable_reason` first."""
    from . import early_exit, ops

    return Backend(
        "cupy",
        ops.trace,
        ops.sample,
        ops.KERNEL_GATHER,
        ops.composite,
        early_exit.render_rays_early_exit,
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


def require_device(device: str) -> None:
    """Refuse ``--device cuda`` up front where torch has no CUDA, instead of failing on the
    first tensor moved there (or, loading a checkpoint, as if the file were damaged)."""
    if device == "cuda" and not torch.cuda.is_available():
        raise VbnfError("--device cuda asked for, but torch sees no CUDA device")


def select_backend(name: str, device: str | torch.device) -> Backend:
    """The backend for ``--backend NAME`` on ``device``: ``torch``, ``cupy`` (a VbnfError when
    it cannot run) or ``auto`` (cupy when it can run, torch otherwise)."""
    if name not in BACKEND_CHOICES:
        raise VbnfError(f"--backend must be one of {', '.join(BACKEND_CHOICES)}, got {name!r}")
    if name == "torch":
        return torch_backend()
    reason = cupy_unavailable_reason(device)
    if reason is None:
        return cupy_backend()
    if name == "cupy":
        raise VbnfError(f"--backend cupy cannot run: {reason}")
    return torch_backend()
