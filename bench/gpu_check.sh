#!/usr/bin/env bash
# One-shot check for a session that has the GPU machine: kernel parity, then the backends side
# by side. Run from the repository root: `bash bench/gpu_check.sh` (about 7 minutes on an H100).
#
# The machine's python3 has torch, CuPy, numpy, pillow and pytest but not OpenEXR (the synthetic
# scene's depth maps): carry its cp312 wheel in out/wheels (see docs/gpu.md). SANITIZE=1 also
# runs the feature and compositing parity tests under compute-sanitizer (memcheck; slow).
# Everything printed also goes to ${OUT:-out}/gpu_check.log, the figures to gpu_backends.json.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT_DIR=${OUT:-out}
mkdir -p "$OUT_DIR"
export PYTHONUNBUFFERED=1
exec > >(tee "$OUT_DIR/gpu_check.log") 2>&1

missing=$("$PY" -c "
import importlib.util
wanted = {'pytest': 'pytest', 'PIL': 'pillow', 'OpenEXR': 'OpenEXR'}
print(' '.join(package for module, package in wanted.items()
               if importlib.util.find_spec(module) is None))")
if [ -n "$missing" ]; then
    if [ ! -d out/wheels ]; then
        echo "missing Python packages: $missing; carry their wheels in out/wheels (docs/gpu.md)"
        exit 1
    fi
    # shellcheck disable=SC2086  # one package name per word
    "$PY" -m pip install --quiet --no-index --find-links out/wheels $missing || exit 1
fi

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" -c "import torch, cupy, numpy; print('torch', torch.__version__, 'CUDA', \
torch.version.cuda, 'cupy', cupy.__version__, 'numpy', numpy.__version__)"
"$PY" -m pytest -q -rs -p no:cacheprovider -k "not host" tests/test_gpu_parity.py \
    tests/test_cuda_compile.py
if [ "${SANITIZE:-0}" = 1 ]; then
    compute-sanitizer --tool memcheck --error-exitcode 3 "$PY" -m pytest -q -p no:cacheprovider \
        -k "cuda and (locate or interpolation or feature_gather or composite_values)" \
        tests/test_gpu_parity.py
fi
"$PY" -m bench.gpu_backends --json "$OUT_DIR/gpu_backends.json" ${BENCH_ARGS:-}
