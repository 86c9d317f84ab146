#!/usr/bin/env bash
# One-shot check for a session that has the GPU machine: kernel parity, then both backends side
# by side. Run from the repository root: `bash bench/gpu_check.sh` (about 7 minutes on an H100).
# Wheels the machine lacks (pytest, pillow, OpenEXR for the synthetic scene) can be carried in
# out/wheels (see docs/gpu.md). Figures go to ${OUT:-out}/gpu_backends.json.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT_DIR=${OUT:-out}
mkdir -p "$OUT_DIR"
if [ -d out/wheels ]; then
    "$PY" -m pip install --quiet --no-index --find-links out/wheels pytest pillow OpenEXR
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" -c "import torch, cupy; print('torch', torch.__version__, 'CUDA', torch.version.cuda, \
'cupy', cupy.__version__)"
"$PY" -m pytest -q -rs -p no:cacheprovider -k "not host" tests/test_gpu_parity.py \
    tests/test_cuda_compile.py 2>&1 | tail -40
"$PY" -m bench.gpu_backends --json "$OUT_DIR/gpu_backends.json" ${BENCH_ARGS:-}
