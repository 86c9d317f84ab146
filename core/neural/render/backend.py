"""What a renderer needs from an implementation, as primitives: ``--backend auto|torch|cupy``.

A :class:`Backend` holds the primitives every render is made of (trace, sample, gather,
composite, composite a round, and which samples of whole voxels the occupancy keeps) with the
signatures of their torch reference, which lives here;
the training render and the one early-exit loop in :mod:`.renderer` are written once in terms
of them. ``auto`` takes the CUDA kernels (:mod:`.gpu`) when the device is CUDA, CuPy imports
and every kernel compiles; otherwise torch, which is also what a CPU machine gets. Asking for
``cupy`` where it cannot work is a user error with the reason in the message, never a silent
fallback.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Protocol

import torch

from ...errors import VbnfError
from ...limits import SAMPLES_PER_VOXEL
from ..field import TORCH_GATHER, FeatureGather
from .accel import OctreeAccel
from .occupancy import Culling, sample_occupied
from .raymarch import PackedSamples, VoxelHits, composite, composite_round

BACKEND_CHOICES = ("auto", "torch", "cupy")


class TraceFn(Protocol):
    def __call__(
        self,
        accel: OctreeAccel,
        origins: torch.Tensor,
        directions: torch.Tensor,
        culling: Culling | None = None,
    ) -> VoxelHits: ...


class SampleFn(Protocol):
    def __call__(
        self,
        hits: VoxelHits,
        origins: torch.Tensor,
        directions: torch.Tensor,
        generator: torch.Generator | None,
        samples_per_voxel: int = SAMPLES_PER_VOXEL,
        culling: Culling | None = None,
    ) -> PackedSamples: ...


class OccupiedSamplesFn(Protocol):
    def __call__(
        self,
        culling: Culling,
        /,
        hits: VoxelHits,
        samples: PackedSamples,
        samples_per_voxel: int = SAMPLES_PER_VOXEL,
    ) -> torch.Tensor: ...


class CompositeFn(Protocol):
    def __call__(
        self, density: torch.Tensor, rgb: torch.Tensor, samples: PackedSamples, num_rays: int
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


class CompositeRoundFn(Protocol):
    def __call__(
        self,
        density: torch.Tensor,
        rgb: torch.Tensor,
        step: torch.Tensor,
        voxel_offsets: torch.Tensor,
        samples_per_voxel: int,
        termination_threshold: float,
        colour: torch.Tensor,
        transmittance: torch.Tensor,
    ) -> None: ...


@dataclass(frozen=True)
class Backend:
    """The primitives of one implementation; each has the signature of the torch function:
    ``trace(accel, origins, directions, culling)`` is ``accel.raytrace(origins, directions,
    culling)``, ``sample`` is ``occupancy.sample_occupied`` (``raymarch.sample_hits`` less the
    culled samples), ``gather`` is the field's :class:`~core.neural.field.FeatureGather`,
    ``composite`` is ``raymarch.composite``, ``composite_round`` is
    ``raymarch.composite_round`` and ``occupied_samples(culling, hits, samples)`` is
    ``Culling.occupied_samples`` (which samples of whole voxels are kept, for the early-exit
    render that shades only those). ``culling`` None keeps everything."""

    name: str
    trace: TraceFn
    sample: SampleFn
    gather: FeatureGather
    composite: CompositeFn
    composite_round: CompositeRoundFn
    occupied_samples: OccupiedSamplesFn


def trace_with_torch(
    accel: OctreeAccel,
    origins: torch.Tensor,
    directions: torch.Tensor,
    culling: Culling | None = None,
) -> VoxelHits:
    return accel.raytrace(origins, directions, culling)


@functools.cache
def torch_backend() -> Backend:
    """The torch reference (every device)."""
    return Backend(
        "torch",
        trace_with_torch,
        sample_occupied,
        TORCH_GATHER,
        composite,
        composite_round,
        Culling.occupied_samples,
    )


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
    from .gpu.backend import cupy_backend, cupy_unavailable_reason

    reason = cupy_unavailable_reason(device)
    if reason is None:
        return cupy_backend()
    if name == "cupy":
        raise VbnfError(f"--backend cupy cannot run: {reason}")
    return torch_backend()
