#!/usr/bin/env bash
# One prepared training run for a GPU machine, sized to the issue-14 study
# (models/MODEL_CARD.md, "What limits the default model"): on the CPU the width-0.25 model
# was limited by how many crops it had seen, so this trains longer, at the deployed width
# (from the shipped model) and at width 0.5 (from scratch, for the capacity question), with
# L_pixel, and prints the model / L_pixel-optimum ratio table of each result against the
# shipped model (bench/bench_optimum_ratio.py). Finishes in under 9 minutes.
#
#   bash bench/gpu_train.sh        # results in $OUT (or ./out/gpu_train)
#
# Writes, per width W in WIDTHS: fifn_wW_pixel.pt (lean checkpoint, loads with
# weights_only=True), train_wW/ (run folder: last.pt, best.pt, TensorBoard), train_wW.log,
# eval_wW_{msrs,roadscene}/ (occo-eval outputs); eval_shipped_*/ for the reference;
# ratio.md (the ratio tables). Settings through the environment:
#   DATA           folder holding train/ and eval/ (default ../shared/data, else shared/data)
#   DEVICE         torch device (default cuda)
#   WIDTHS         FIFN widths to train (default "0.25 0.5"); 0.25 starts from INIT
#   INIT           checkpoint the width-0.25 run starts from (default the shipped
#                  models/fifn_w025_pixel.pt; empty: from scratch)
#   TRAIN_MINUTES  wall-clock budget per width; the cosine schedule ends with it (default 3)
#   LR             start of the cosine schedule (default 3e-4 from INIT, 1e-3 from scratch)
#   GRAD_CLIP      --grad-clip (default 0: off; the norm is logged when on)
#   EVAL_LIMIT     pairs per evaluation set (default 40 = all; the ratio table compares
#                  with the optimum's 40-pair means, so use all for real numbers)
#   SLACK_S        seconds a training may run past TRAIN_MINUTES (validation, saving;
#                  default 90; a CPU plumbing check needs more)
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
minutes="${TRAIN_MINUTES:-3}"
init="${INIT-models/fifn_w025_pixel.pt}"
limit="${EVAL_LIMIT:-40}"
train_limit_s="$("$python_bin" -c "print(int(60 * $minutes) + ${SLACK_S:-90})")"

{ nvidia-smi || echo "nvidia-smi not available"; } > "$out_dir/nvidia-smi.txt" 2>&1

evaluate() {  # evaluate MODEL TAG: occo-eval on both sets, no baselines
    for set in msrs roadscene; do
        timeout 150 "$python_bin" -m training.evaluate --ir "$data/eval/$set/ir" \
            --vi "$data/eval/$set/vi" --model "$1" --baselines none --out "$out_dir/eval_$2_$set" \
            --device "$device" --workers 4 --limit "$limit"
    done >> "$out_dir/eval.log" 2>&1
}

evaluate models/fifn_w025_pixel.pt shipped
: > "$out_dir/ratio.md"
for width in ${WIDTHS:-0.25 0.5}; do
    tag="w$("$python_bin" -c "print(f'{round(100 * $width):03d}')")"
    start=(--width "$width" --lr "${LR:-1e-3}")
    if [[ "$width" == "0.25" && -n "$init" ]]; then
        start=(--init-from "$init" --lr "${LR:-3e-4}")
    fi
    # Published batch and crop (OCCO_METHOD.md §4); a cosine decay over the minutes.
    timeout "$train_limit_s" "$python_bin" -m training.train \
        --train-roots "$data/train/msrs" "$data/train/roadscene" \
        --eval-root "$data/train/msrs" --val-pairs 8 --loss pixel "${start[@]}" \
        --crop 256 --batch-size 12 --lr-schedule cosine --max-minutes "$minutes" \
        --grad-clip "${GRAD_CLIP:-0}" --workers 4 --device "$device" \
        --out-dir "$out_dir/train_$tag" --export-path "$out_dir/fifn_${tag}_pixel.pt" \
        2>&1 | tr '\r' '\n' | grep -a -v '^occo-train:' > "$out_dir/train_$tag.log" || true
    [[ -f "$out_dir/fifn_${tag}_pixel.pt" ]] || { echo "gpu_train: no model for $tag" >&2; continue; }
    evaluate "$out_dir/fifn_${tag}_pixel.pt" "$tag"
    echo "## width $width" >> "$out_dir/ratio.md"
    "$python_bin" bench/bench_optimum_ratio.py \
        --eval "msrs=$out_dir/eval_${tag}_msrs" "roadscene=$out_dir/eval_${tag}_roadscene" \
        --reference "msrs=$out_dir/eval_shipped_msrs" \
        "roadscene=$out_dir/eval_shipped_roadscene" >> "$out_dir/ratio.md" || true
done
cat "$out_dir/ratio.md"
