#!/usr/bin/env bash
# make gpu-rehearsal: both GPU calls (bench/gpu_check.sh, bench/gpu_train.sh) as a lent
# machine would run them, here on the CPU with tiny budgets: from a clean clone of HEAD plus
# the carried gpu_pack/ (make gpu-pack), in a venv holding only distributions of the lent
# image's list (bench/gpu_image_packages.txt; Python 3.11 and the local CPU torch wheel
# stand in for the image's 3.12 CUDA build), with the network cut (unshare -n) and an empty
# HOME (no ~/.cache). Checks that every file the GPU run writes to $OUT is written and would
# come back (bench/gpu_pack.py check-out). Last line:
#   gpu rehearsal: ok, <N> MiB carried, <M> files written     (exit 0)
#   gpu rehearsal: FAILED: <what>                              (exit 1)
# Environment: REHEARSAL_DIR (default /tmp/occo_gpu_rehearsal, replaced), REHEARSAL_VENV
# (default /tmp/occo_rehearsal_venv, kept between runs), PYTHON311 (default python3.11).
set -uo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
work="${REHEARSAL_DIR:-/tmp/occo_gpu_rehearsal}"
venv="${REHEARSAL_VENV:-/tmp/occo_rehearsal_venv}"
fail() { echo "gpu rehearsal: FAILED: $*"; exit 1; }

[[ -f "$repo/gpu_pack/MANIFEST.json" ]] || fail "no gpu_pack/: run make gpu-pack first"
unshare -n true 2>/dev/null || fail 'unshare -n cannot cut the network here (needs root or user namespaces)'
if [[ ! -f "$venv/.rehearsal" ]]; then
    rm -rf "$venv"
    "${PYTHON311:-python3.11}" -m venv "$venv" || fail "cannot create $venv"
    "$venv/bin/python" -m pip install --quiet torch==2.13.0 numpy opencv-python-headless scipy \
        tqdm onnx onnxruntime onnxscript pyyaml h5py tensorboard pillow || fail 'venv install'
    touch "$venv/.rehearsal"
fi
"$venv/bin/python" - "$repo/bench/gpu_image_packages.txt" <<'EOF' || fail "the venv holds distributions the lent image lacks"
import importlib.metadata
import re
import sys

def norm(name):
    return re.sub(r'[-_.]+', '-', name.strip().lower())

allowed = {norm(line) for line in open(sys.argv[1]) if line.strip() and not line.startswith('#')}
extra = sorted({norm(d.metadata['Name']) for d in importlib.metadata.distributions()} - allowed)
if extra:
    print('gpu rehearsal: not on the image:', ', '.join(extra))
    sys.exit(1)
EOF

rm -rf "$work"
mkdir -p "$work/home"
git clone --quiet "$repo" "$work/repo" || fail "git clone $repo"
cp -r "$repo/gpu_pack" "$work/repo/gpu_pack"
cd "$work/repo" || fail "no clone"
# What a device call carries: tracked + untracked-not-ignored files and the carried pack.
carried=$(( $(git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- \
    | tail -1 | cut -f1) + $(du -sb gpu_pack | cut -f1) ))
(( carried <= 64 * 1024 * 1024 )) || fail "$(( carried >> 20 )) MiB would travel, over 64 MiB"

# One torch thread: on a shared 2-core machine spinning OpenMP threads cost several times.
offline=(env -u XDG_CACHE_HOME HOME="$work/home" PYTHON="$venv/bin/python" DEVICE=cpu
         OMP_NUM_THREADS=1 unshare -n)
"${offline[@]}" env OUT="$work/out_check" BUDGET_S=400 bash bench/gpu_check.sh --quick \
    --compile-backend eager > "$work/gpu_check.txt" 2>&1 \
    || fail "gpu_check.sh exit $? (see $work/gpu_check.txt)"
"${offline[@]}" env OUT="$work/out_train" TRAIN_MINUTES=0.2 SLACK_S=1500 EVAL_LIMIT=1 bash bench/gpu_train.sh \
    --max-steps 1 --crop 64 --batch-size 4 --workers 1 --epochs 1 --val-pairs 1 > "$work/gpu_train.txt" 2>&1 \
    || fail "gpu_train.sh exit $? (see $work/gpu_train.txt)"
grep -q '"error"' "$work/out_check/gpu_check.json" \
    && fail "a gpu_check section failed (see $work/out_check/gpu_check.json)"
written=0
for script in gpu_check gpu_train; do
    count=$("$venv/bin/python" bench/gpu_pack.py check-out "$work/out_${script#gpu_}" "$script") \
        || fail "$script outputs (see above)"
    written=$(( written + count ))
done
echo "gpu rehearsal: ok, $(( (carried + (1 << 19)) >> 20 )) MiB carried, $written files written"
