#!/usr/bin/env bash
# One prepared training run for a GPU machine: the full-width FIFN (width 1.0) with L_pixel,
# then occo-eval of the result on both evaluation sets. Finishes in under 9 minutes.
#
#   bash bench/gpu_train.sh        # results in $OUT (or ./out/gpu_train)
#
# Writes: fifn_w100_pixel.pt (lean checkpoint, loads with weights_only=True), train/ (the run
# folder: last.pt, best.pt, TensorBoard), train.log, eval_msrs/ and eval_roadscene/ (occo-eval
# tables, grids, timings) and eval.log. Settings through the environment:
#   DATA           folder holding train/ and eval/ (default ../shared/data, else shared/data)
#   DEVICE         torch device (default cuda)
#   WIDTH          FIFN width multiplier (default 1.0)
#   TRAIN_MINUTES  wall-clock training budget; the cosine schedule ends with it (default 6)
#   EVAL_LIMIT     pairs per evaluation set (default 40 = all)
#   PYTHON         interpreter with torch (default python3, else .venv/bin/python)
# Every step is bounded by `timeout`, so a stuck step cannot eat the machine's budget.
set -euo pipefail

cd "$(dirname "$0")/.."
out_dir="${OUT:-./out/gpu_train}"
mkdir -p "$out_dir"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

python_bin="${PYTHON:-python3}"
if [[ -x .venv/bin/python ]] && ! "$python_bin" -c 'import torch' 2>/dev/null; then
    python_bin=.venv/bin/python
fi
data="${DATA:-}"
if [[ -z "$data" ]]; then
    for candidate in ../shared/data shared/data; do
        [[ -d "$candidate/train" ]] && data="$candidate" && break
    done
fi
if [[ -z "$data" || ! -d "$data/train/msrs" ]]; then
    echo "gpu_train: no training data; set DATA to the folder holding train/ and eval/" >&2
    exit 2
fi
device="${DEVICE:-cuda}"
width="${WIDTH:-1.0}"
minutes="${TRAIN_MINUTES:-6}"
tag="w$("$python_bin" -c "print(f'{round(100 * $width):03d}')")"
train_limit_s="$("$python_bin" -c "print(int(60 * $minutes) + 90)")"  # + validation, saving

{ nvidia-smi || echo "nvidia-smi not available"; } > "$out_dir/nvidia-smi.txt" 2>&1
# Published batch and crop (OCCO_METHOD.md §4); lr 3e-4 with a cosine decay instead of 1e-4
# constant, because the budget is minutes instead of 25 epochs.
timeout "$train_limit_s" "$python_bin" -m training.train \
    --train-roots "$data/train/msrs" "$data/train/roadscene" \
    --eval-root "$data/train/msrs" --val-pairs 8 --loss pixel --width "$width" \
    --crop 256 --batch-size 12 --lr 3e-4 --lr-schedule cosine --max-minutes "$minutes" \
    --workers 4 --device "$device" --out-dir "$out_dir/train" \
    --export-path "$out_dir/fifn_${tag}_pixel.pt" 2>&1 | tee "$out_dir/train.log"

for set in msrs roadscene; do
    timeout 150 "$python_bin" -m training.evaluate --ir "$data/eval/$set/ir" \
        --vi "$data/eval/$set/vi" --model "$out_dir/fifn_${tag}_pixel.pt" \
        --out "$out_dir/eval_$set" --device "$device" --workers 4 \
        --limit "${EVAL_LIMIT:-40}"
done 2>&1 | tee "$out_dir/eval.log"
