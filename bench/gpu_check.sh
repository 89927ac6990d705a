#!/usr/bin/env bash
# One prepared GPU check for occo_ros (run it on a machine with an NVIDIA GPU).
#
#   bash bench/gpu_check.sh            # results in $OUT (or ./out): gpu_check.json, .md
#
# Measures PyTorch CUDA fp32/fp16 latency at 512x640 for widths 1.0/0.5/0.25 (eager and
# CUDA-graph replay, torch.compile for one width), checks fp16 against fp32 (PSNR >= 40 dB,
# also at 1080x1920 for the attention-context overflow risk), and runs ONNX Runtime CUDA and
# TensorRT (fp32/fp16 engines through the engine cache) when they are installed; missing
# ones are reported as skipped. Bounded to 7 minutes at most (typically ~5): the Python part
# stops starting sections after BUDGET_S (default 300) seconds and the whole run is killed
# after 420 s.
set -euo pipefail

cd "$(dirname "$0")/.."
out_dir="${OUT:-./out}"
mkdir -p "$out_dir"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export OCCO_ROS_CACHE="${OCCO_ROS_CACHE:-$(mktemp -d)}"

python_bin="${PYTHON:-python3}"
if [[ -x .venv/bin/python ]] && ! "$python_bin" -c 'import torch' 2>/dev/null; then
    python_bin=.venv/bin/python
fi
"$python_bin" -c 'import torch, numpy' || {
    echo "gpu_check: $python_bin has no torch/numpy; set PYTHON=/path/to/python" >&2
    exit 2
}

{ nvidia-smi || echo "nvidia-smi not available"; } > "$out_dir/nvidia-smi.txt" 2>&1
timeout 420 "$python_bin" bench/gpu_check.py --device cuda --out "$out_dir" \
    --budget-s "${BUDGET_S:-300}" "$@" 2>&1 | tee "$out_dir/gpu_check.log"
