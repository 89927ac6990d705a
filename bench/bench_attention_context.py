"""Does FIFN's attention transfer across token counts? Logit scale vs input size, measured.

FIFN's efficient attention (occo_ros.model.network.attention_context) takes a softmax of
K V^T / sqrt(d), where K V^T sums over all N tokens of a level: for features with a
consistent sign its logits grow in proportion to N, so the softmax "temperature" depends on
the input size. Training on 256 px crops and running on 640x480 frames (4.7x the tokens)
then runs the attention at another temperature than it was trained at; a fine-tune at
384 px shifts it again. This script measures, for a checkpoint on real pairs:

1. per FIFB level and input size (centre crops of 128, 256, 384 px and the full frame):
   the largest |logit| and how peaked the softmax is (mean of each column's largest
   probability: 1/d = uniform, 1 = one-hot);
2. the validation score of occo-train (SSIM + Qabf + VIF, full frames) as trained, and with
   every logit rescaled by (tokens of a REF px crop) / (tokens of the frame), i.e. the
   attention run at the temperature it had in training (a diagnostic, not a model change).

    python bench/bench_attention_context.py [--model models/fifn_w025_pixel.pt] \\
        [--root ../shared/data/train/msrs] [--pairs 8] [--ref 256]

Prints Markdown tables, the machine and the time taken. Inference only; about a minute for
8 pairs on one core.
"""

from __future__ import annotations

import argparse
from pathlib import Path
import sys
import time

from machine import cpu_description  # bench/machine.py (run as python bench/...)
import numpy as np
import torch

from occo_ros.model.checkpoint import load_checkpoint
import occo_ros.model.network as model_module
from occo_training.data import to_tensor
from occo_training.train import load_eval_pairs, validate

REPO = Path(__file__).resolve().parents[1]
TRAIN_MSRS = REPO.parent / 'shared' / 'data' / 'train' / 'msrs'


class ContextProbe:
    """Stands in for occo_ros.model.network.attention_context: scales the keys (so the logits) by
    `scale`, records logit and softmax statistics per call, then calls the original."""

    def __init__(self) -> None:
        self.original = model_module.attention_context
        self.scale = 1.0
        self.records: list[tuple[int, float, float]] = []

    def __call__(self, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        keys = keys * self.scale
        ctx = self.original(keys, values)
        logits = (keys.float() @ values.float().transpose(-2, -1)) * keys.shape[-2] ** -0.5
        self.records.append((keys.shape[-1], float(logits.abs().max()),
                             float(ctx.amax(dim=-2).mean())))
        return ctx


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Measure how FIFN's attention logits and the validation score depend on "
                    'the token count (input size).')
    parser.add_argument('--model', type=Path, default=REPO / 'models' / 'fifn_w025_pixel.pt',
                        help='FIFN checkpoint (default: the shipped models/fifn_w025_pixel.pt)')
    parser.add_argument('--root', type=Path, default=TRAIN_MSRS,
                        help='folder with ir/ and vi/ (default: ../shared/data/train/msrs, '
                        "occo-train's validation folder; not an eval set)")
    parser.add_argument('--pairs', type=int, default=8,
                        help='pairs, evenly spaced over the sorted stems (default 8, as the '
                        'validation of occo-train)')
    parser.add_argument('--ref', type=int, default=256,
                        help='training crop side whose token count sets the reference '
                        'temperature (default 256)')
    parser.add_argument('--threads', type=int, default=1, help='torch threads (default 1)')
    return parser


def centre_crop(image: np.ndarray, side: int) -> np.ndarray:
    top, left = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
    return image[top:top + side, left:left + side]


def level_table(model: torch.nn.Module, pairs: list, probe: ContextProbe) -> str:
    """Markdown: per input size and level, median tokens, max |logit|, softmax peak."""
    height, width = pairs[0][1].shape
    sizes = [(s, s) for s in (128, 256, 384) if s <= min(height, width)] + [(height, width)]
    lines = ['| input | level | tokens N | max abs logit | softmax column peak |',
             '|---|---:|---:|---:|---:|']
    for size in sizes:
        probe.records.clear()
        with torch.no_grad():
            for _, visible, infrared in pairs:
                vi, ir = (centre_crop(x, size[0]) if size[0] == size[1] else x
                          for x in (visible, infrared))
                model(to_tensor(vi)[None], to_tensor(ir)[None])
        # Two calls (visible, infrared branch) per level per pair, levels in order.
        per_level: dict[int, list] = {}
        for tokens, logit, peak in probe.records:
            per_level.setdefault(tokens, []).append((logit, peak))
        for level, (tokens, rows) in enumerate(sorted(per_level.items(), reverse=True)):
            logit, peak = np.median(np.array(rows), axis=0)
            lines.append(f'| {size[0]}x{size[1]} | {level} | {tokens} | {logit:.1f} | '
                         f'{peak:.3f} |')
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    if not (args.root / 'ir').is_dir():
        print(f'bench_attention_context: no ir/ folder in {args.root} (the data lives in '
              '../shared/data)', file=sys.stderr)
        return 2
    start = time.perf_counter()
    model, _ = load_checkpoint(args.model)
    model.eval()
    pairs = load_eval_pairs(str(args.root), args.pairs)
    probe = ContextProbe()
    model_module.attention_context = probe
    try:
        print(f'### Attention logits vs input size ({args.model.name}, {len(pairs)} pairs of '
              f'{args.root.name}, medians)\n')
        print(level_table(model, pairs, probe) + '\n')
        height, width = pairs[0][1].shape
        ratio = args.ref ** 2 / (height * width)
        rows = ['| attention temperature | score | ssim | qabf | vif |',
                '|---|---:|---:|---:|---:|']
        for label, scale in (('as trained (logits of the full frame)', 1.0),
                             (f'rescaled to {args.ref} px crops (x{ratio:.3f})', ratio)):
            probe.scale = scale
            result = validate(model, pairs, torch.device('cpu'))
            rows.append(f'| {label} | {result["score"]:.4f} | {result["ssim"]:.4f} | '
                        f'{result["qabf"]:.4f} | {result["vif"]:.4f} |')
        print(f'### Validation score at {width}x{height} (occo-train rule)\n')
        print('\n'.join(rows) + '\n')
    finally:
        model_module.attention_context = probe.original
    print(f'{cpu_description()}; {args.threads} torch thread(s); '
          f'{time.perf_counter() - start:.0f} s in all')
    return 0


if __name__ == '__main__':
    sys.exit(main())
