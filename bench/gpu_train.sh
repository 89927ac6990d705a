#!/usr/bin/env bash
# One prepared training call for a lent GPU (bench/gpu_train.py): width 1.0 FIFN from scratch
# and width 0.25 from the shipped model, both with the full OCCO objective (HED VGG16
# features, the object masks packed with the data) at the published settings, side by side
# on the one GPU for TRAIN_MINUTES, then occo-eval on both eval sets and the L_pixel optimum
# ratio tables against the shipped model. Needs the carried gpu_pack/ (`make gpu-pack`; its
# checksums are checked first); runs on the lent image as it is, offline, in <= 9 minutes.
#
#   bash bench/gpu_train.sh [gpu_train.py options]   # results in $OUT (or ./out/gpu_train)
#
# Writes to $OUT after every step: gpu_train.json, gpu_train.md (epochs per run, means,
# ratio tables), gpu_train.log, fifn_w100_full.pt, fifn_w025_full.pt.
# Environment: PYTHON (default python3, else .venv/bin/python when python3 has no torch),
# DEVICE (default cuda), TRAIN_MINUTES (default 4.5), GPU_PACK (default ./gpu_pack),
# EVAL_LIMIT (pairs per eval set, default 40 = all), SLACK_S (seconds a training may run past
# TRAIN_MINUTES, default 120; a CPU rehearsal needs more). The whole run is killed at
# TRAIN_MINUTES + SLACK_S + 150 s (9 minutes with the defaults).
set -uo pipefail

cd "$(dirname "$0")/.."
out_dir="${OUT:-./out/gpu_train}"
mkdir -p "$out_dir"

python_bin="${PYTHON:-python3}"
if [[ -z "${PYTHON:-}" && -x .venv/bin/python ]] && ! python3 -c 'import torch' 2>/dev/null; then
    python_bin=.venv/bin/python
fi
"$python_bin" -c "import importlib.util as u, sys
sys.exit(any(u.find_spec(m) is None for m in ('numpy', 'torch', 'cv2')))" || {
    echo "gpu_train: $python_bin lacks numpy, torch or cv2; set PYTHON=/path/to/python" >&2
    exit 2
}
minutes="${TRAIN_MINUTES:-4.5}"
slack="${SLACK_S:-120}"
limit_s="$("$python_bin" -c "print(int(60 * float('$minutes') + float('$slack') + 150))" \
    2>/dev/null)" || {
    echo "gpu_train: TRAIN_MINUTES=$minutes or SLACK_S=$slack is not a number" >&2
    exit 2
}
# bench_optimum_ratio.py imports training/ as `occo_training` (its installed name); the lent
# machine has no install of this package, so a link provides that name.
shim="$(mktemp -d)"
ln -s "$PWD/training" "$shim/occo_training"
export PYTHONPATH="$PWD:$shim${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

{ nvidia-smi || echo "nvidia-smi not available"; } 2>&1 | head -20
timeout "$limit_s" "$python_bin" bench/gpu_train.py --pack "${GPU_PACK:-gpu_pack}" \
    --out "$out_dir" --device "${DEVICE:-cuda}" --python "$python_bin" --minutes "$minutes" \
    --slack-s "$slack" --eval-limit "${EVAL_LIMIT:-40}" "$@"
status=$?
[[ $status -eq 124 ]] && echo "gpu_train: killed at $limit_s s; $out_dir has the steps that \
finished" >&2
exit "$status"
