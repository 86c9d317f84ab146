"""Run the CUDA kernels of ``cuda/`` on the CPU, so their logic is tested where no GPU exists.

Each ``.cu`` file is compiled as C++ with g++ under a small shim: ``__global__``/``__device__``
vanish, ``blockIdx``/``threadIdx`` become globals, the ``__*_rn`` intrinsics become plain
IEEE operations (``-ffp-contract=off`` keeps them unfused, as the intrinsics are on the GPU)
and ``__fmaf_rn`` becomes ``std::fmaf``; so where a kernel spells its arithmetic with these,
host and GPU round identically. Plain ``a += w * x`` may be contracted into an FMA by NVRTC
and not here, which the parity tolerances allow for. For every
``extern "C" __global__`` kernel a generated ``host_<name>(num_threads, ...)`` runs its threads
one after another, which is a valid schedule because threads share data only through
``atomicAdd`` (a plain add when they run in turn). :func:`host_launch` and
:func:`host_pointer` then stand in for ``core.neural.render.gpu.kernels``' ``launch`` and
``pointer``, so ``core.neural.render.gpu.ops`` runs unchanged on CPU tensors.

What this does not cover: CuPy itself (compilation by NVRTC, stream and argument marshalling)
and the GPU's own math library; the GPU parity tests do.
"""

from __future__ import annotations

import ctypes
import functools
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.neural.render.gpu.kernels import CUDA_SOURCE_DIR, KERNELS, THREADS_PER_BLOCK

GXX = shutil.which("g++")

_SHIM = """
#include <cmath>
struct HostDim3 { unsigned int x; };
static HostDim3 blockIdx, threadIdx, blockDim;
#define __global__
#define __device__
static inline double __dadd_rn(double a, double b) { return a + b; }
static inline double __dsub_rn(double a, double b) { return a - b; }
static inline double __dmul_rn(double a, double b) { return a * b; }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline float __fmaf_rn(float a, float b, float c) { return std::fmaf(a, b, c); }
static inline float atomicAdd(float* address, float value) {
    const float old = *address;
    *address = old + value;
    return old;
}
"""

_KERNEL = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(([^)]*)\)', re.S)
_CTYPES = {
    "int": ctypes.c_int32,
    "long long": ctypes.c_int64,
    "unsigned long long": ctypes.c_uint64,
    "float": ctypes.c_float,
}


def _parameters(text: str) -> list[tuple[str, str]]:
    """(type, name) of each kernel parameter, e.g. ("const float*", "origins")."""
    parameters = []
    for part in text.split(","):
        declaration = " ".join(part.split())
        match = re.fullmatch(r"(.+?)\s*(\w+)", declaration)
        assert match is not None, declaration
        parameters.append((match.group(1).strip(), match.group(2)))
    return parameters


def _wrapper(name: str, parameters: list[tuple[str, str]]) -> str:
    declared = ", ".join(f"{kind} {arg}" for kind, arg in parameters)
    passed = ", ".join(arg for _, arg in parameters)
    return f"""
extern "C" void host_{name}(long long num_threads, {declared}) {{
    blockDim.x = {THREADS_PER_BLOCK};
    for (long long i = 0; i < num_threads; ++i) {{
        blockIdx.x = (unsigned int)(i / {THREADS_PER_BLOCK});
        threadIdx.x = (unsigned int)(i % {THREADS_PER_BLOCK});
        {name}({passed});
    }}
}}
"""


def _argument_type(kind: str) -> Any:
    if kind.endswith("*"):
        return ctypes.c_void_p
    return _CTYPES[kind.replace("const", "").strip()]


@functools.cache
def _library(source: str) -> tuple[ctypes.CDLL, dict[str, list[Any]]]:
    if GXX is None:
        raise RuntimeError("g++ is needed to run the kernels on the host")
    code = (CUDA_SOURCE_DIR / source).read_text(encoding="utf-8")
    kernels = {name: _parameters(text) for name, text in _KERNEL.findall(code)}
    build = Path(tempfile.mkdtemp(prefix="vbnf_host_kernels_"))
    harness = build / f"{Path(source).stem}_host.cpp"
    wrappers = "".join(_wrapper(name, parameters) for name, parameters in kernels.items())
    harness.write_text(f'{_SHIM}\n#include "{CUDA_SOURCE_DIR / source}"\n{wrappers}')
    library = build / f"{Path(source).stem}.so"
    command = [GXX, "-std=c++17", "-O2", "-ffp-contract=off", "-fPIC", "-shared"]
    subprocess.run([*command, "-o", str(library), str(harness)], check=True, capture_output=True)
    types = {name: [_argument_type(kind) for kind, _ in params] for name, params in kernels.items()}
    return ctypes.CDLL(str(library)), types


def host_launch(name: str, device: torch.device, num_threads: int, *args: Any) -> None:
    """``gpu.kernels.launch`` on the CPU: same arguments, threads run in order."""
    assert device.type == "cpu", device
    if num_threads <= 0:
        return
    source = next(source for source, names in KERNELS.items() if name in names)
    library, types = _library(source)
    function = getattr(library, f"host_{name}")
    function.argtypes = [ctypes.c_int64, *types[name]]
    function.restype = None
    values = [arg.item() if isinstance(arg, np.generic) else arg for arg in args]
    function(num_threads, *values)


def host_pointer(tensor: torch.Tensor, dtype: torch.dtype) -> int:
    """``core.neural.render.gpu.kernels.pointer`` for CPU tensors (same checks)."""
    assert tensor.dtype == dtype and tensor.is_contiguous() and tensor.device.type == "cpu", (
        tensor.dtype,
        dtype,
        tensor.is_contiguous(),
        tensor.device,
    )
    return int(tensor.data_ptr())
