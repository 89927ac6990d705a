"""Training throughput of occo-train's step: FIFN forward + loss + backward + Adam step.

Measures crops per second for the pixel loss and the full loss (pixel + contrastive with a
VGG19 extractor) on random crops, plus the VGG19 forward cost alone, so the cost of the
contrastive term is visible. Same code path as training.train (OCCOLoss built once).

    .venv/bin/python bench/bench_train.py --crop 256 --batch 8 --threads 1 --steps 5

Output: a markdown table on stdout (median seconds per step and crops/s), and the load
average, because a shared machine skews absolute numbers; optionally JSON (--json).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import statistics
import sys
import time

import torch

from occo_ros.model.network import FIFN
from occo_training.losses import OCCOLoss
from occo_training.vgg import build_loss_extractors


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description='Crops/s of one occo-train step.')
    parser.add_argument('--width', type=float, default=0.25, help='FIFN width (default 0.25)')
    parser.add_argument('--crop', type=int, default=256, help='crop side, px (default 256)')
    parser.add_argument('--batch', type=int, default=8,
                        help='crops per step, a multiple of 4 (default 8)')
    parser.add_argument('--steps', type=int, default=5,
                        help='timed steps per loss after one warm-up step (default 5)')
    parser.add_argument('--threads', type=int, default=0,
                        help='torch CPU threads; 0: torch default (default 0)')
    parser.add_argument('--losses', nargs='+', choices=('pixel', 'full'),
                        default=['pixel', 'full'], help='objectives to time (default both)')
    parser.add_argument('--device', default='cpu', help="torch device (default 'cpu')")
    parser.add_argument('--json', type=Path, help='also write the results here')
    return parser


def time_steps(loss_fn: OCCOLoss, args: argparse.Namespace,
               device: torch.device) -> list[float]:
    """Seconds of each timed training step (after one warm-up step)."""
    torch.manual_seed(0)
    model = FIFN(width=args.width).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    shape = (args.batch, 1, args.crop, args.crop)
    visible, infrared = torch.rand(shape, device=device), torch.rand(shape, device=device)
    mask_vi = (torch.rand(shape, device=device) > 0.8).float()
    mask_ir = (torch.rand(shape, device=device) > 0.7).float()
    times = []
    for step in range(args.steps + 1):
        start = time.perf_counter()
        out = loss_fn(model(visible, infrared), visible, infrared, mask_vi, mask_ir)
        optimizer.zero_grad(set_to_none=True)
        out.total.backward()
        optimizer.step()
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
        if step:
            times.append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.batch % 4:
        print(f'--batch {args.batch}: the full loss needs a multiple of 4', file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    obj_vgg, bg_vgg, _ = build_loss_extractors(None)
    rows = {}
    for name in args.losses:
        loss_fn = (OCCOLoss('full', obj_vgg, bg_vgg) if name == 'full'
                   else OCCOLoss('pixel')).to(device)
        median = statistics.median(time_steps(loss_fn, args, device))
        rows[name] = {'s_per_step': median, 'crops_per_s': args.batch / median}
    with torch.no_grad():
        images = torch.rand(args.batch, 3, args.crop, args.crop, device=device)
        obj_vgg.to(device)(images, ('relu5_4',))
        start = time.perf_counter()
        obj_vgg(images, ('relu5_4',))
        vgg_s = time.perf_counter() - start
    load = os.getloadavg()[0]
    print(f'occo-train step, FIFN width {args.width}, {args.batch} x {args.crop}^2 crops, '
          f'{torch.get_num_threads()} threads, {device}, load average {load:.1f}')
    print('| loss | s/step (median) | crops/s |\n|---|---:|---:|')
    for name, row in rows.items():
        print(f"| {name} | {row['s_per_step']:.2f} | {row['crops_per_s']:.2f} |")
    print(f'VGG19 to relu5_4, forward only, {args.batch} crops: {vgg_s:.2f} s')
    if args.json:
        args.json.write_text(json.dumps({'config': {k: str(v) for k, v in vars(args).items()},
                                         'results': rows, 'vgg19_forward_s': vgg_s,
                                         'load_average': load}, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
