#!/usr/bin/env bash
# One prepared GPU check for occo_ros, unattended and offline (see bench/gpu_check.py).
#
#   bash bench/gpu_check.sh              # results in $OUT (or ./out): gpu_check.json, .md, .log
#
# Uses only what is installed, plus wheels carried beside it: if $WHEELHOUSE (default
# ./wheelhouse) holds wheels (e.g. tensorrt-cu12*, pycuda), they are installed from there
# with --no-index into a private folder first; nothing is downloaded. A missing TensorRT,
# pycuda or CUDA torch is a skipped section with the reason, not a failure.
#
# Time budget (< 8 minutes in all): sections start only during the first BUDGET_S seconds
# (default 360; the TensorRT section with the shipped model needs ~150 s: four engine builds)
# and the run is killed at 450 s. gpu_check.json is rewritten after every section, so a kill
# or a crash keeps what was measured.
set -uo pipefail

cd "$(dirname "$0")/.."
out_dir="${OUT:-./out}"
mkdir -p "$out_dir"
export OCCO_ROS_CACHE="${OCCO_ROS_CACHE:-$(mktemp -d)}"

cuda_torch='import torch, sys; sys.exit(not torch.cuda.is_available())'
python_bin="${PYTHON:-}"
if [[ -z "$python_bin" ]]; then
    # The project venv (make venv: numpy, onnx, onnxruntime, torch), unless only the system
    # python3 has a CUDA torch.
    python_bin=python3
    if [[ -x .venv/bin/python ]] && { .venv/bin/python -c "$cuda_torch" 2>/dev/null \
            || ! python3 -c "$cuda_torch" 2>/dev/null; }; then
        python_bin=.venv/bin/python
    fi
fi
"$python_bin" -c 'import numpy' || {
    echo "gpu_check: $python_bin has no numpy; set PYTHON=/path/to/python" >&2
    exit 2
}

wheelhouse="${WHEELHOUSE:-./wheelhouse}"
if compgen -G "$wheelhouse/*.whl" > /dev/null; then
    site="$(mktemp -d)"
    echo "gpu_check: installing the wheels in $wheelhouse (offline) into $site"
    "$python_bin" -m pip install --quiet --no-index --find-links "$wheelhouse" \
        --target "$site" "$wheelhouse"/*.whl > "$out_dir/wheel_install.log" 2>&1 \
        || echo "gpu_check: wheel install failed, see $out_dir/wheel_install.log" >&2
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

{ nvidia-smi || echo "nvidia-smi not available"; } > "$out_dir/nvidia-smi.txt" 2>&1
timeout 450 "$python_bin" bench/gpu_check.py --device "${DEVICE:-cuda}" --out "$out_dir" \
    --budget-s "${BUDGET_S:-360}" "$@" 2>&1 | tee "$out_dir/gpu_check.log"
status=${PIPESTATUS[0]}
[[ $status -eq 124 ]] && echo "gpu_check: killed at 450 s; $out_dir/gpu_check.json has the \
sections that finished" >&2
exit "$status"
