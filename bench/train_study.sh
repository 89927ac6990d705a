#!/usr/bin/env bash
# The short CPU runs of the issue-14 study (models/MODEL_CARD.md, "What limits the model"):
# capacity and dense targets on a few pairs (optional: the L_pixel optimum's validation score).
#
#   bash bench/train_study.sh [STEP ...]   # steps: optimum fit25 fit25-target fit25-scratch
#                                          #        fit50-scratch (the default, in that order)
#                                          #        optimum-val (only when named)
#
# Every step takes /tmp/occo_train.lock (one training process machine-wide), runs niced at one
# thread and writes under $OUT (default out/study): fit4/ (symlinks to 4 training pairs,
# nothing copied), optimum/ (their per-pair L_pixel optimum images = dense targets),
# *.json / *.log (results), run folders of occo-train. MINUTES sets each training budget
# (default 3).
set -euo pipefail

cd "$(dirname "$0")/.."
out="${OUT:-out/study}"
minutes="${MINUTES:-3}"
data=../shared/data/train/msrs
python=.venv/bin/python
mkdir -p "$out"
locked() { flock /tmp/occo_train.lock nice -n 19 env OMP_NUM_THREADS=1 "$@"; }

# 4 evenly spaced MSRS training pairs (as the stems sort), linked, not copied.
if [[ ! -d "$out/fit4/ir" ]]; then
    mkdir -p "$out/fit4/ir" "$out/fit4/vi"
    mapfile -t names < <(ls "$data/ir" | sort \
        | awk '{a[NR] = $0} END {for (k = 0; k < 4; k++) print a[int(k * (NR - 1) / 3 + 0.5) + 1]}')
    for name in "${names[@]}"; do
        ln -s "$(realpath "$data/ir/$name")" "$out/fit4/ir/$name"
        for vi in "$data/vi/${name%.*}".*; do ln -s "$(realpath "$vi")" "$out/fit4/vi/"; done
    done
fi

# Fit a few pairs: train and validate on the same 4 pairs (full frames), 25 crops per pair
# per epoch (one validation every 25 steps).
fit() {  # fit NAME ARGS...
    local name="$1"; shift
    locked "$python" -m training.train --train-roots "$out/fit4" --eval-root "$out/fit4" \
        --val-pairs 4 --loss pixel --crop 256 --crops-per-pair 25 --batch-size 4 \
        --lr-schedule cosine --max-minutes "$minutes" --threads 1 --out-dir "$out/$name" \
        "$@" 2>&1 | tr '\r' '\n' | grep -a -v 'occo-train:' | tee "$out/$name.log"
}

steps=("$@")
[[ ${#steps[@]} -gt 0 ]] || steps=(optimum fit25 fit25-target fit25-scratch fit50-scratch)
for step in "${steps[@]}"; do
    case "$step" in
        optimum)  # optimum images of the 4 pairs (the dense targets) and their scores,
                  # beside the shipped model's
            locked "$python" bench/bench_objective_ceiling.py --sets "$out/fit4" --pairs 4 \
                --iters 100 --model models/fifn_w025_pixel.pt --save-images "$out/optimum" \
                --overwrite --json "$out/optimum_fit4.json" | tee "$out/optimum_fit4.log" ;;
        optimum-val)  # the optimum's score on occo-train's 8 validation pairs
            locked "$python" bench/bench_objective_ceiling.py --sets "$data" --pairs 8 \
                --iters 100 --model models/fifn_w025_pixel.pt --json "$out/optimum_val8.json" \
                | tee "$out/optimum_val8.log" ;;
        fit25)          fit fit25 --init-from models/fifn_w025_pixel.pt --lr 3e-4 ;;
        fit25-target)   fit fit25_target --init-from models/fifn_w025_pixel.pt --lr 3e-4 \
                            --target-roots "$out/optimum/fit4" --target-weight 10 ;;
        fit25-scratch)  fit fit25_scratch --width 0.25 --lr 1e-3 ;;
        fit50-scratch)  fit fit50_scratch --width 0.5 --lr 1e-3 ;;
        *) echo "train_study: unknown step $step" >&2; exit 2 ;;
    esac
done
