#!/usr/bin/env bash
# The GPU machine's check, in one run of 6 minutes or so: the figures no session has yet, most
# valuable first, each phase under its own timeout (and all of them under CHECK_BUDGET_S), so
# a hang or a crash costs that phase only; everything is written to $OUT as it comes.
#
#   preflight  versions, NVRTC, why the cupy backend cannot run (if so), one launch and sync
#   parity     the cuda parity tests (the culled trace and sampling kernels included) and the
#              nvcc compile test
#   bench      bench.gpu_backends, cupy first; each figure printed and written when measured
#   large      2^20 rays / ~100M samples against torch, unculled and culled; the host syncs
#              of a training step, unculled and culled
#   profile    GPU-busy against wall time over a few training steps, per backend
#   sanitizer  compute-sanitizer memcheck of the kernel tests (culled ones included), torch's
#              caching allocator off
#
# Run from the repository root or anywhere: `bash bench/gpu_check.sh` (the device call is in
# docs/gpu.md). Without a CUDA device it stops after the preflight, with exit status 2; else
# it ends with 0 when every phase passed and 1 when one failed, timed out or was skipped.
# Output: ${OUT:-out/gpu_check}/gpu_check.log (everything printed), gpu_backends.json,
# gpu_profile.json, parity.xml, large.xml, sanitizer.log.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
PY=${PYTHON:-python3}
OUT_DIR=${OUT:-out/gpu_check}
WHEELS=out/wheels  # carried: packages the machine lacks (OpenEXR), as wheels (docs/gpu.md)
SITE=/tmp/vbnf_site
SCENE=/tmp/vbnf_check_scene
BUDGET_S=${CHECK_BUDGET_S:-380}
START_S=$SECONDS
SUMMARY=()
FAILED=0  # the exit status: 1 once a phase fails, times out or is skipped
mkdir -p "$OUT_DIR"
export PYTHONUNBUFFERED=1
if [ -d /usr/local/cuda/bin ]; then  # nvcc (compile test) and compute-sanitizer
    PATH=$PATH:/usr/local/cuda/bin
fi

stamp() {
    printf '%s +%ds' "$(date -u +%H:%M:%S)" "$((SECONDS - START_S))"
}

# run_phase NAME CAP_S COMMAND...: COMMAND under `timeout`, capped by what is left of the
# budget; its status and time go into the summary. Returns the command's status.
run_phase() {
    local name=$1 cap=$2 left status began
    shift 2
    left=$((BUDGET_S - (SECONDS - START_S)))
    if ((left < cap)); then cap=$left; fi
    if ((cap < 15)); then
        echo "== $(stamp) $name: skipped, ${left}s of the ${BUDGET_S}s budget left"
        SUMMARY+=("$name: skipped (budget)")
        FAILED=1
        return 125
    fi
    echo "== $(stamp) $name (at most ${cap}s)"
    began=$SECONDS
    timeout --kill-after=10 "$cap" "$@"
    status=$?
    local verdict="exit $status"
    if ((status == 124 || status == 137)); then verdict="TIMED OUT after ${cap}s"; fi
    echo "== $(stamp) $name: $verdict in $((SECONDS - began))s"
    SUMMARY+=("$name: $verdict, $((SECONDS - began))s")
    if ((status != 0)); then FAILED=1; fi
    return "$status"
}

# Packages the image lacks come as wheels, installed without dependency resolution into a
# folder of their own (the image's environment stays as it is) and put on PYTHONPATH.
install_wheels() {
    local missing
    missing=$("$PY" -c "
import importlib.util
wanted = {'pytest': 'pytest', 'PIL': 'pillow', 'OpenEXR': 'OpenEXR'}
print(' '.join(package for module, package in wanted.items()
               if importlib.util.find_spec(module) is None))") || return 1
    if [ -z "$missing" ]; then
        return 0
    fi
    if ! compgen -G "$WHEELS/*.whl" >/dev/null; then
        echo "missing Python packages: $missing; carry their wheels in $WHEELS (docs/gpu.md)"
        return 1
    fi
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" "$WHEELS"/*.whl || return 1
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
}

summary() {
    echo "== $(stamp) summary"
    printf '  %s\n' "${SUMMARY[@]}"
    grep -hE '^=+ .*(passed|failed|error|skipped).* in [0-9.]+s' "$OUT_DIR/gpu_check.log" || true
    awk '/^metric /{show=1} /^== /{show=0} show' "$OUT_DIR/gpu_check.log" | tail -n 14
    if [ -f "$OUT_DIR/sanitizer.log" ]; then
        grep -h 'ERROR SUMMARY' "$OUT_DIR/sanitizer.log" | sort | uniq -c || true
    fi
}

main() {
    echo "== $(stamp) gpu_check in $PWD, output in $OUT_DIR, budget ${BUDGET_S}s"
    git log -1 --format='commit %h %s' 2>/dev/null || true
    if ! install_wheels; then
        SUMMARY+=("wheels: missing packages")
        summary
        return 1
    fi
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv,noheader \
        2>/dev/null || echo "nvidia-smi: not available"
    command -v compute-sanitizer >/dev/null && compute-sanitizer --version | tail -n 1
    run_phase preflight 90 "$PY" -m bench.gpu_preflight
    local preflight=$?
    if ((preflight != 0 && preflight != 3)); then  # 3: no cupy backend, torch still measured
        echo "preflight failed (exit $preflight): nothing else in this check can run"
        summary
        return "$preflight"
    fi
    local pytest=("$PY" -m pytest -p no:cacheprovider -rfEs)
    run_phase parity 100 "${pytest[@]}" -v --junitxml "$OUT_DIR/parity.xml" \
        -k "not host and not large and not waits_for" tests/test_gpu_parity.py \
        tests/test_cuda_compile.py
    run_phase bench 170 "$PY" -m bench.gpu_backends --budget-s 40 --eval-interval-s 5 \
        --scene "$SCENE" --json "$OUT_DIR/gpu_backends.json"
    run_phase large 60 "${pytest[@]}" -v --junitxml "$OUT_DIR/large.xml" \
        -k "not host and (large or waits_for)" tests/test_gpu_parity.py
    run_phase profile 45 "$PY" -m bench.gpu_backends --profile-steps 5 --variants cupy,torch \
        --scene "$SCENE" --json "$OUT_DIR/gpu_profile.json"
    if ((preflight == 0)) && command -v compute-sanitizer >/dev/null; then
        run_phase sanitizer 90 env PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer \
            --tool memcheck --error-exitcode 3 --print-limit 20 \
            --log-file "$OUT_DIR/sanitizer.log" "${pytest[@]}" -q -x -k \
            "cuda and (trace or bin_centre or jittered or occupied or composite or locate \
or interpolation or feature_gather or early_exit) and not large and not side_stream" \
            tests/test_gpu_parity.py
    else
        SUMMARY+=("sanitizer: not run (kernels unavailable or no compute-sanitizer)")
        FAILED=1
    fi
    summary
    return "$FAILED"
}

main 2>&1 | tee "$OUT_DIR/gpu_check.log"
exit "${PIPESTATUS[0]}"
