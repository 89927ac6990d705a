"""Full-objective (L_pixel + L_con) training throughput on real crops with real masks.

The contrastive term's cost depends on the masks: a crop whose region mask is empty skips
the extractor (training.losses.masked_features), so this benchmark draws its crops the way
occo-train does (training.data.CropDataset: crops holding object-mask pixels, fixed seed)
from a training folder and its occo-masks output, and times the whole optimizer step
(FIFN forward + loss + backward + Adam) for each extractor named. bench/bench_train.py times
the same step on random images and dense random masks (no empty region).

    python bench/bench_full_objective.py --crop 128 --batch 8 --threads 1 --steps 6 \
        --vgg-weights random ~/.cache/occo_ros/vgg16_hed.pt

The same batches are used for every configuration, and the configurations alternate step
by step, so a load change on a shared machine hits them alike. --baseline-code times an
older checkout's loss (its training/ folder, e.g. from ``git archive COMMIT training``) with
the random VGG19 in the same alternation: the "before" of a change to the loss code.
Output: a markdown table (median seconds per step, crops/s, the share of masked extractor
inputs skipped as empty), the load average; optionally JSON (--json).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
from pathlib import Path
import statistics
import sys
import time

import torch

from occo_ros.model.network import FIFN
from occo_training.data import CropDataset, load_pairs
from occo_training.losses import OCCOLoss, region_masks
from occo_training.vgg import build_loss_extractors

DATA = Path(__file__).resolve().parents[1].parent / 'shared' / 'data' / 'train' / 'msrs'


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description='Crops/s of one full-objective occo-train step on real masked crops.')
    parser.add_argument('--train-root', type=Path, default=DATA,
                        help='training folder with ir/ and vi/ (default: %(default)s)')
    parser.add_argument('--mask-root', type=Path, default=Path('out/masks/msrs'),
                        help='its occo-masks output with mask_vi/ and mask_ir/ '
                        '(default: %(default)s)')
    parser.add_argument('--vgg-weights', nargs='+', default=['random'],
                        help="extractors to time: 'random' (seeded VGG19 fallback) or weight "
                        'files for occo-train --vgg-weights (default: random)')
    parser.add_argument('--width', type=float, default=0.25, help='FIFN width (default 0.25)')
    parser.add_argument('--crop', type=int, default=128, help='crop side, px (default 128)')
    parser.add_argument('--batch', type=int, default=8,
                        help='crops per step, a multiple of 4 (default 8)')
    parser.add_argument('--steps', type=int, default=6,
                        help='timed steps per extractor after one warm-up step (default 6)')
    parser.add_argument('--threads', type=int, default=1,
                        help='torch CPU threads (default 1, as the training runs)')
    parser.add_argument('--baseline-code', type=Path,
                        help="an older checkout's training/ folder: also time its OCCOLoss with "
                        'its random VGG19 (default: none)')
    parser.add_argument('--json', type=Path, help='also write the results here')
    return parser


def import_baseline(folder: Path):
    """The training package in `folder` under another name (its modules import relatively),
    returning its (losses, vgg) modules."""
    name = 'occo_baseline_training'
    spec = importlib.util.spec_from_file_location(
        name, folder / '__init__.py', submodule_search_locations=[str(folder)])
    package = importlib.util.module_from_spec(spec)
    sys.modules[name] = package
    spec.loader.exec_module(package)
    return importlib.import_module(f'{name}.losses'), importlib.import_module(f'{name}.vgg')


def real_batches(args: argparse.Namespace) -> list[dict[str, torch.Tensor]]:
    """steps + 1 batches of masked crops, drawn like occo-train (seed 0), from pairs spread
    evenly over the folder."""
    pairs, _ = load_pairs([args.train_root], [args.mask_root], args.crop, 'pad',
                          lambda message: None)
    dataset = CropDataset(pairs, args.crop, crops_per_pair=1, tries=20,
                          min_mask_pixels=64, flip=True, seed=0)
    count = (args.steps + 1) * args.batch
    if len(dataset) < count:
        raise SystemExit(f'{args.train_root}: {len(dataset)} crops, {count} needed')
    items = [dataset[i * len(dataset) // count] for i in range(count)]
    return [{key: torch.stack([item[key] for item in items[i:i + args.batch]])
             for key in items[0]} for i in range(0, count, args.batch)]


def empty_share(batches: list[dict[str, torch.Tensor]]) -> float:
    """Share of (crop, region) masks that are empty: those extractor inputs are skipped."""
    empty = total = 0
    for batch in batches:
        for mask in region_masks(batch['mask_vi'], batch['mask_ir']).values():
            nonzero = mask.flatten(1).amax(dim=1) > 0
            empty += int((~nonzero).sum())
            total += nonzero.numel()
    return empty / total


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.batch % 4:
        print(f'--batch {args.batch}: the full loss needs a multiple of 4', file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    batches = real_batches(args)
    configs = [(name, OCCOLoss, build_loss_extractors, name) for name in args.vgg_weights]
    if args.baseline_code:
        old_losses, old_vgg = import_baseline(args.baseline_code)
        configs.insert(0, (f'random ({args.baseline_code} code)', old_losses.OCCOLoss,
                           old_vgg.build_loss_extractors, 'random'))
    runs = {}
    for label, loss_class, build_extractors, weights in configs:
        obj_vgg, bg_vgg, record = build_extractors(None if weights == 'random' else weights)
        torch.manual_seed(0)
        model = FIFN(width=args.width).train()
        runs[label] = {'loss': loss_class('full', obj_vgg, bg_vgg), 'model': model,
                       'optimizer': torch.optim.Adam(model.parameters(), lr=1e-4),
                       'kind': record['kind'], 'times': []}
    for step, batch in enumerate(batches):
        for run in runs.values():
            start = time.perf_counter()
            fused = run['model'](batch['visible'], batch['infrared'])
            out = run['loss'](fused, batch['visible'], batch['infrared'],
                              batch['mask_vi'], batch['mask_ir'])
            run['optimizer'].zero_grad(set_to_none=True)
            out.total.backward()
            run['optimizer'].step()
            if step:
                run['times'].append(time.perf_counter() - start)
    load = os.getloadavg()[0]
    skipped = empty_share(batches[1:])
    print(f'full-objective occo-train step, FIFN width {args.width}, {args.batch} x '
          f'{args.crop}^2 real crops of {args.train_root.name}, {torch.get_num_threads()} '
          f'thread(s), {args.steps} steps, load average {load:.1f}; {100 * skipped:.0f} % of '
          'the (crop, region) masks empty')
    print('| extractor | kind | s/step (median) | crops/s |\n|---|---|---:|---:|')
    results = {}
    for name, run in runs.items():
        median = statistics.median(run['times'])
        results[name] = {'kind': run['kind'], 's_per_step': median,
                         'crops_per_s': args.batch / median, 'times': run['times']}
        print(f"| {name} | {run['kind']} | {median:.2f} | {args.batch / median:.2f} |")
    if args.json:
        args.json.write_text(json.dumps({
            'config': {k: str(v) for k, v in vars(args).items()}, 'results': results,
            'empty_region_share': skipped, 'load_average': load}, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
