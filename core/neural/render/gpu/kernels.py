"""Where the CUDA kernels live, how they are compiled (CuPy ``RawModule``) and launched.

The kernel sources sit in ``cuda/`` next to ``core/`` both in the repository and in the built
Blender extension, so they are found relative to this file. CuPy is imported inside functions
only: ``import core`` must keep working on machines without CuPy or a GPU.

Launch conventions (see the CuPy-with-torch pitfalls in the project's performance notes):

- every output is allocated by torch and passed as ``data_ptr()``, so CuPy's memory pool never
  competes with torch's caching allocator;
- kernels run on torch's *current* stream (wrapped as a CuPy external stream), so they order
  correctly with the torch work around them, whatever stream torch is on;
- ``int`` parameters are passed as ``numpy.int32`` and ``long long`` ones as ``numpy.int64``:
  a bare Python int would be marshalled as 64 bits.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import Any

import torch

CUDA_SOURCE_DIR = Path(__file__).resolve().parents[4] / "cuda"

# Every kernel the Python side launches, by source file: the compile test checks that each of
# these names is an entry point of its file's PTX, so a renamed kernel cannot land.
KERNELS: dict[str, tuple[str, ...]] = {
    "octree_trace.cu": ("trace_count", "trace_write"),
    "sampling.cu": (
        "sample_voxels",
        "sample_occupied_count",
        "sample_occupied_write",
        "mark_occupied_samples",
    ),
    "composite.cu": ("composite_forward", "composite_backward", "composite_round"),
    "field_features.cu": ("locate_corners", "interpolate_corners", "interpolate_corners_backward"),
}
_SOURCE_OF = {name: source for source, names in KERNELS.items() for name in names}

COMPILE_OPTIONS = ("--std=c++17",)
THREADS_PER_BLOCK = 256


def import_cupy() -> Any:
    """CuPy, imported on demand (raises ImportError where it is not installed)."""
    import cupy

    return cupy


def cupy_package_for(torch_cuda: str | None) -> str:
    """The CuPy wheel for torch's CUDA version (``torch.version.cuda``, "13.0" ->
    "cupy-cuda13x"): each wheel loads the CUDA libraries of its own major version, which a
    machine set up for torch's CUDA may not have."""
    if not torch_cuda:
        return "the cupy-cudaNNx wheel of torch's CUDA version"
    return f"cupy-cuda{torch_cuda.split('.')[0]}x"


def cuda_version_mismatch(cupy: Any) -> str | None:
    """Why CuPy's CUDA and torch's differ, where they do (a likely reason for CuPy to fail)."""
    cupy_major = int(cupy.cuda.runtime.runtimeGetVersion()) // 1000
    torch_cuda = torch.version.cuda
    if torch_cuda is None or int(torch_cuda.split(".")[0]) == cupy_major:
        return None
    return (
        f"CuPy is built for CUDA {cupy_major} and torch for CUDA {torch_cuda}: install "
        f"{cupy_package_for(torch_cuda)}"
    )


@functools.cache
def _module(source: str, device_index: int) -> Any:
    cupy = import_cupy()
    code = (CUDA_SOURCE_DIR / source).read_text(encoding="utf-8")
    with cupy.cuda.Device(device_index):
        return cupy.RawModule(code=code, options=COMPILE_OPTIONS)


@functools.cache
def kernel(name: str, device_index: int) -> Any:
    """The compiled kernel ``name`` on one device (compiled once per device and process; CuPy
    also keeps the binary in its on-disk cache across processes)."""
    with import_cupy().cuda.Device(device_index):
        return _module(_SOURCE_OF[name], device_index).get_function(name)


def compile_all(device_index: int) -> None:
    """Compile and load every kernel now, so a broken toolchain shows up when the backend is
    chosen rather than in the middle of the first training step."""
    for name in _SOURCE_OF:
        kernel(name, device_index)


@functools.cache
def _external_stream(stream_pointer: int, device_index: int) -> Any:
    cupy = import_cupy()
    with warnings.catch_warnings():  # CuPy 14 deprecates ExternalStream; 12 and 13 lack others
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        return cupy.cuda.ExternalStream(stream_pointer, device_index)


def launch(name: str, device: torch.device, num_threads: int, *args: Any) -> None:
    """Run kernel ``name`` with one thread per item on ``device``, on torch's current stream.
    A launch over zero items is skipped (CUDA rejects empty grids)."""
    if num_threads <= 0:
        return
    index = device.index if device.index is not None else torch.cuda.current_device()
    function = kernel(name, index)
    stream = _external_stream(torch.cuda.current_stream(index).cuda_stream, index)
    blocks = (num_threads + THREADS_PER_BLOCK - 1) // THREADS_PER_BLOCK
    with import_cupy().cuda.Device(index):
        function((blocks,), (THREADS_PER_BLOCK,), args, stream=stream)


def pointer(tensor: torch.Tensor, dtype: torch.dtype) -> int:
    """Device address of a contiguous CUDA tensor of ``dtype``: the kernels index raw memory, so
    a wrong dtype or a strided view would be read as garbage instead of failing."""
    if tensor.dtype != dtype or not tensor.is_contiguous() or tensor.device.type != "cuda":
        raise ValueError(
            f"kernel argument must be a contiguous CUDA {dtype} tensor, got {tensor.dtype} "
            f"on {tensor.device} (contiguous: {tensor.is_contiguous()})"
        )
    return int(tensor.data_ptr())
