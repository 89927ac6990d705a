#!/usr/bin/env bash
# One prepared GPU check for occo_ros, unattended and offline (see bench/gpu_check.py), sized
# for one device call (<= 9 minutes) on the lent machine's image as it is (python3 3.12 with
# CUDA torch, onnxruntime CPU, no TensorRT, no pycuda, no network).
#
#   bash bench/gpu_check.sh [gpu_check.py options]   # results in $OUT (or ./out/gpu_check)
#
# Writes to $OUT, rewritten after every section (a kill keeps what was measured):
#   gpu_check.json   every section: result, error, or why it was skipped
#   gpu_check.md     the same as a table
#   gpu_check.log    nvidia-smi, the pack check, the run's output
# TensorRT rows are absent on the lent image and say why up front: no TensorRT or pycuda
# there, no network, and their wheels with libraries are far larger than the 64 MiB a call
# carries (pip's 11.x is fp32-only in occo_ros). Where $WHEELHOUSE (default ./wheelhouse)
# holds wheels, they are installed from there with --no-index first; nothing is downloaded.
# Environment: PYTHON (default python3, else .venv/bin/python when python3 has no torch),
# DEVICE (default cuda), BUDGET_S (sections start only during the first BUDGET_S seconds,
# default 400; the run is killed at BUDGET_S + 110 s), GPU_PACK (default ./gpu_pack: when
# present its checksums are checked first and its eval pair is the agreement input).
set -uo pipefail

cd "$(dirname "$0")/.."
out_dir="${OUT:-./out/gpu_check}"
mkdir -p "$out_dir"
log="$out_dir/gpu_check.log"
export OCCO_ROS_CACHE="${OCCO_ROS_CACHE:-$(mktemp -d)}"
export PYTHONUNBUFFERED=1

python_bin="${PYTHON:-python3}"
if [[ -z "${PYTHON:-}" && -x .venv/bin/python ]] && ! python3 -c 'import torch' 2>/dev/null; then
    python_bin=.venv/bin/python
fi
"$python_bin" -c "import importlib.util as u, sys
sys.exit(any(u.find_spec(m) is None for m in ('numpy', 'torch')))" || {
    echo "gpu_check: $python_bin has no numpy or torch; set PYTHON=/path/to/python" | tee "$log" >&2
    exit 2
}
budget="${BUDGET_S:-400}"
[[ "$budget" =~ ^[0-9]+$ ]] || { echo "gpu_check: BUDGET_S=$budget is not whole seconds" >&2; exit 2; }

{ nvidia-smi || echo "nvidia-smi not available"; } > "$log" 2>&1
pack="${GPU_PACK:-gpu_pack}"
if [[ -d "$pack" ]]; then
    "$python_bin" bench/gpu_pack.py verify "$pack" 2>&1 | tee -a "$log"
    [[ ${PIPESTATUS[0]} -eq 0 ]] || exit 2
fi

wheelhouse="${WHEELHOUSE:-./wheelhouse}"
if compgen -G "$wheelhouse/*.whl" > /dev/null; then
    site="$(mktemp -d)"
    echo "gpu_check: installing the wheels in $wheelhouse (offline) into $site" | tee -a "$log"
    "$python_bin" -m pip install --quiet --no-index --find-links "$wheelhouse" \
        --target "$site" "$wheelhouse"/*.whl >> "$log" 2>&1 \
        || echo "gpu_check: wheel install failed, see $log" >&2
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

timeout "$((budget + 110))" "$python_bin" bench/gpu_check.py --device "${DEVICE:-cuda}" \
    --out "$out_dir" --budget-s "$budget" "$@" 2>&1 | tee -a "$log"
status=${PIPESTATUS[0]}
[[ $status -eq 124 ]] && echo "gpu_check: killed at $((budget + 110)) s; $out_dir/gpu_check.json \
has the sections that finished" | tee -a "$log" >&2
exit "$status"
