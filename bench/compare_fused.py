"""Side-by-side image grid of several occo-eval runs on the same pairs (for model cards).

Each row is one pair: infrared, visible, then the fused luma each run wrote to
``RUN/fused/<name>/<stem>.png``, labelled. The grid is occo-eval's own (training.evaluate
.write_grid), so it looks like every run's grid.png.

    python bench/compare_fused.py --ir ../shared/data/eval/roadscene/ir \
        --vi ../shared/data/eval/roadscene/vi --runs out/a out/b --labels pixel full \
        --stems FLIR_00006 FLIR_00288 --out grid.png
"""

from __future__ import annotations

import argparse
from pathlib import Path
import sys
from types import SimpleNamespace

from occo_ros.io.image_pairs import images_by_stem, read_gray, read_rgb
from occo_training.evaluate import write_grid


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--ir', type=Path, required=True, help='infrared folder of the pairs')
    parser.add_argument('--vi', type=Path, required=True, help='visible folder of the pairs')
    parser.add_argument('--runs', type=Path, nargs='+', required=True,
                        help='occo-eval --out folders, each with exactly one fused/<name>/')
    parser.add_argument('--labels', nargs='+', required=True, help='one column label per run')
    parser.add_argument('--stems', nargs='+', required=True, help='pairs to show, one per row')
    parser.add_argument('--out', type=Path, required=True,
                        help='PNG to write (refused if it exists, unless --overwrite)')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing --out')
    return parser


def fused_folder(run: Path) -> Path:
    """The single fused/<name>/ folder of an occo-eval --model run."""
    folders = [p for p in (run / 'fused').iterdir() if p.is_dir()] \
        if (run / 'fused').is_dir() else []
    if len(folders) != 1:
        raise ValueError(f'{run}: expected one fused/<name>/ folder, found {len(folders)}')
    return folders[0]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if len(args.labels) != len(args.runs):
        print('compare_fused: --labels needs one label per --runs folder', file=sys.stderr)
        return 2
    if args.out.exists() and not args.overwrite:
        print(f'compare_fused: {args.out} exists; --overwrite replaces it', file=sys.stderr)
        return 2
    try:
        folders = [fused_folder(run) for run in args.runs]
        ir_files, vi_files = images_by_stem(args.ir), images_by_stem(args.vi)
        rows = []
        for stem in args.stems:
            images = {'IR': read_gray(ir_files[stem]), 'VI': read_rgb(vi_files[stem])}
            for label, folder in zip(args.labels, folders):
                images[label] = read_gray(folder / f'{stem}.png')
            rows.append((stem, images))
    except (ValueError, KeyError, OSError) as exc:
        print(f'compare_fused: error: {exc}', file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_grid(SimpleNamespace(grid=rows), args.out)
    print(f'wrote {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
