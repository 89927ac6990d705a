"""How far can L_pixel go? The per-image optimum of the training objective vs the baselines.

For each evaluation pair, the fused image itself (no network) is optimised with Adam against
L_pixel (training.losses.pixel_loss, the exact training objective, OCCO_METHOD.md §3), from
the average of the two sources, at full resolution. A network trained with L_pixel can at
best approach this image, so its scores are the ceiling of what more L_pixel training can
buy. The optimum, the optional --model and the four classical baselines are scored with the
quality-bar metrics of occo-eval, and the "metrics won" counts (issue 3's bar: >= 5 of 8
against every baseline) are printed per set. The optimum is also scored half-way through
the iterations, so the table shows whether it had converged.

    python bench/bench_objective_ceiling.py [--pairs 6] [--iters 300] [--model PATH]

Output: a Markdown table per set on stdout (means over the pairs), the machine, and the
time taken; --json writes the means too. The optimisation is the slow part: about 0.2 s per
iteration for a 640x480 pair on one core of the development CPU.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
import sys
import time

import cv2
from machine import cpu_description  # bench/machine.py (run as python bench/...)
import numpy as np
import torch
from tqdm import tqdm

from occo_ros.io.image_pairs import bt601_luma, find_pairs, read_gray, read_rgb
from occo_ros.model.checkpoint import load_checkpoint
from occo_training.baselines import BASELINES
from occo_training.data import to_tensor
from occo_training.evaluate import QUALITY_BAR, metrics_won
from occo_training.losses import pixel_loss
from occo_training.metrics import evaluate_fusion, to_uint8
from occo_training.train import fuse_uint8

REPO = Path(__file__).resolve().parents[1]
EVAL_SETS = [REPO.parent / 'shared' / 'data' / 'eval' / name for name in ('msrs', 'roadscene')]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description='Score the per-image optimum of L_pixel beside the classical baselines.')
    parser.add_argument('--sets', nargs='+', type=Path, default=EVAL_SETS,
                        help='folders holding ir/ and vi/ (default: ../shared/data/eval/'
                        'msrs and roadscene)')
    parser.add_argument('--pairs', type=int, default=6,
                        help='pairs per set, evenly spaced over the sorted stems (default 6)')
    parser.add_argument('--iters', type=int, default=300,
                        help='Adam iterations per pair (default 300)')
    parser.add_argument('--lr', type=float, default=0.01,
                        help='Adam step on the 0..1 image, decayed by a cosine to 0 so the '
                        'result does not carry optimiser noise (default 0.01)')
    parser.add_argument('--model', type=Path,
                        help='also score this FIFN checkpoint (e.g. models/fifn_w025_pixel.pt)')
    parser.add_argument('--threads', type=int, default=1, help='torch threads (default 1)')
    parser.add_argument('--json', type=Path, help='also write the means here')
    parser.add_argument('--save-images', type=Path, metavar='DIR',
                        help='also write each optimum as DIR/<set>/<stem>.png (8-bit gray): '
                        'dense targets for occo-train --target-roots; an existing file is '
                        'not replaced without --overwrite')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace existing optimum images under --save-images')
    return parser


def optimise_pixel_loss(visible: np.ndarray, infrared: np.ndarray, iters: int,
                        lr: float) -> tuple[np.ndarray, np.ndarray]:
    """The fused image minimising L_pixel for one pair: (after iters // 2, after iters)."""
    v, i = to_tensor(visible)[None], to_tensor(infrared)[None]
    fused = ((v + i) / 2).requires_grad_(True)
    optimizer = torch.optim.Adam([fused], lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, iters)
    halfway = None
    for step in range(iters):
        optimizer.zero_grad(set_to_none=True)
        pixel_loss(fused, v, i)['pixel'].backward()
        optimizer.step()
        schedule.step()
        if step + 1 == iters // 2:
            halfway = to_uint8(fused.detach()[0, 0].numpy())
    return halfway, to_uint8(fused.detach()[0, 0].numpy())


def save_optimum(path: Path, image: np.ndarray, overwrite: bool) -> None:
    """Write one optimum image; refuses to replace an existing file unless overwrite."""
    if path.exists() and not overwrite:
        raise FileExistsError(f'{path} exists; pass --overwrite to replace it')
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image):
        raise OSError(f'cannot write {path}')


def score_set(root: Path, args: argparse.Namespace, model) -> dict[str, dict[str, float]]:
    """Mean quality-bar metrics per method over `args.pairs` pairs of one set."""
    pairs = find_pairs(root / 'ir', root / 'vi').pairs
    picks = np.linspace(0, len(pairs) - 1, min(args.pairs, len(pairs))).round().astype(int)
    scores: dict[str, list[list[float]]] = {}
    for index in tqdm(picks, desc=root.name, unit='pair'):
        pair = pairs[index]
        ir, vi = read_gray(pair.ir_path), bt601_luma(read_rgb(pair.vi_path))
        halfway, optimum = optimise_pixel_loss(vi, ir, args.iters, args.lr)
        if args.save_images is not None:
            save_optimum(args.save_images / root.name / f'{pair.stem}.png', optimum,
                         args.overwrite)
        images = {f'L_pixel optimum @{args.iters // 2}': halfway,
                  f'L_pixel optimum @{args.iters}': optimum}
        if model is not None:
            images[args.model.stem] = fuse_uint8(model, vi, ir, torch.device('cpu'))
        images.update({name: fuse(ir, vi) for name, fuse in BASELINES.items()})
        for name, image in images.items():
            metrics = evaluate_fusion(ir, vi, image)
            scores.setdefault(name, []).append([metrics[m] for m in QUALITY_BAR])
    return {name: dict(zip(QUALITY_BAR, np.mean(rows, axis=0).tolist()))
            for name, rows in scores.items()}


def markdown(name: str, means: dict[str, dict[str, float]], pairs: int) -> str:
    lines = [f'### {name} ({pairs} pairs)', '',
             '| method | ' + ' | '.join(QUALITY_BAR) + ' | wins vs ' + ' / '.join(BASELINES)
             + ' |', '|---|' + '---:|' * (len(QUALITY_BAR) + 1)]
    for method, row in means.items():
        wins = ('' if method in BASELINES else
                ' / '.join(str(len(metrics_won(row, means[b]))) for b in BASELINES))
        lines.append(f'| {method} | ' + ' | '.join(f'{row[m]:.4g}' for m in QUALITY_BAR)
                     + f' | {wins} |')
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    inputs = {root.resolve() for root in args.sets}
    if args.save_images is not None and any(
            args.save_images.resolve() in (root, *root.parents) or
            root in args.save_images.resolve().parents for root in inputs):
        print(f'bench_objective_ceiling: --save-images {args.save_images} overlaps an input '
              'folder', file=sys.stderr)
        return 2
    missing = [str(root) for root in args.sets if not (root / 'ir').is_dir()]
    if missing:
        print(f'bench_objective_ceiling: no ir/ folder in {", ".join(missing)} '
              '(the data lives in ../shared/data)', file=sys.stderr)
        return 2
    model = None
    if args.model is not None:
        model, _ = load_checkpoint(args.model)
        model.eval()
    start = time.perf_counter()
    results = {}
    for root in args.sets:
        results[root.name] = score_set(root, args, model)
        print(markdown(root.name, results[root.name], args.pairs) + '\n', flush=True)
    print(f'{cpu_description()}; {args.threads} torch thread(s); {args.iters} Adam iterations '
          f'per pair; {time.perf_counter() - start:.0f} s in all')
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
