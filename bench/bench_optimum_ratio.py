"""Model / L_pixel-optimum ratio table: how close a trained model is to its objective's optimum.

Reads the per-image metrics occo-eval wrote (metrics.csv in each --eval folder) and the
means of the per-pair L_pixel optimum recorded by bench/bench_objective_ceiling.py
(--json; bench/results/objective_ceiling.json holds the 200-iteration, 40-pair run), and
prints per set and metric: model mean, optimum mean, model / optimum, and whether the ratio
reaches --target (issue 14: 95 % on each of the 8 quality-bar metrics). With --reference
(occo-eval folders of another model, e.g. today's default) it also flags every metric on
which the model is below the reference (the "no metric lower" rule for a new default).

    occo-eval --ir DATA/eval/msrs/ir --vi DATA/eval/msrs/vi --model M.pt --baselines none \\
        --workers 2 --out out/eval_m_msrs          # and the same for roadscene
    python bench/bench_optimum_ratio.py --eval msrs=out/eval_m_msrs \\
        roadscene=out/eval_m_roadscene [--reference msrs=... roadscene=...]

Exit status 0 when every ratio reaches --target and no metric is below the reference,
1 otherwise, 2 on bad input.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
import sys

import numpy as np

from occo_training.baselines import BASELINES
from occo_training.evaluate import QUALITY_BAR

REPO = Path(__file__).resolve().parents[1]
CEILING_JSON = REPO / 'bench' / 'results' / 'objective_ceiling.json'
OPTIMUM_ROW = 'L_pixel optimum @200'


def set_folders(text: str) -> tuple[str, Path]:
    """'SET=DIR' -> (SET, DIR)."""
    name, sep, folder = text.partition('=')
    if not sep or not name or not folder:
        raise argparse.ArgumentTypeError(f'expected SET=DIR (e.g. msrs=out/eval_msrs), got '
                                         f'{text!r}')
    return name, Path(folder)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description='Print the model / L_pixel-optimum ratio of each quality-bar metric from '
                    'occo-eval outputs and the recorded optimum means.')
    parser.add_argument('--eval', nargs='+', type=set_folders, required=True, metavar='SET=DIR',
                        help='occo-eval output folder (holding metrics.csv) per eval set; SET '
                        'names the set in the optimum JSON (msrs, roadscene)')
    parser.add_argument('--method', default=None,
                        help='method name in metrics.csv (default: the one that is not a '
                        'baseline, if there is exactly one)')
    parser.add_argument('--optimum', type=Path, default=CEILING_JSON,
                        help='means JSON of bench_objective_ceiling.py --json (default: '
                        'bench/results/objective_ceiling.json)')
    parser.add_argument('--optimum-row', default=OPTIMUM_ROW,
                        help=f'row of that JSON to divide by (default {OPTIMUM_ROW!r})')
    parser.add_argument('--reference', nargs='+', type=set_folders, default=[],
                        metavar='SET=DIR', help='occo-eval folders of a reference model (e.g. '
                        'the current default); metrics below it are flagged')
    parser.add_argument('--reference-method', default=None,
                        help='method name in the reference metrics.csv (default as --method)')
    parser.add_argument('--target', type=float, default=0.95,
                        help='ratio each metric must reach (default 0.95)')
    return parser


def method_means(folder: Path, method: str | None) -> tuple[str, dict[str, float]]:
    """(method, {metric: mean over images}) from an occo-eval metrics.csv."""
    path = folder / 'metrics.csv'
    if not path.is_file():
        raise ValueError(f'{path} not found (run occo-eval --out {folder} first)')
    with path.open(newline='') as handle:
        rows = list(csv.DictReader(handle))
    methods = sorted({row['method'] for row in rows})
    if method is None:
        models = [m for m in methods if m not in BASELINES]
        if len(models) != 1:
            raise ValueError(f'{path} holds methods {methods}; name one with --method')
        method = models[0]
    picked = [row for row in rows if row['method'] == method]
    if not picked:
        raise ValueError(f'{path} has no rows of method {method!r} (it has {methods})')
    return method, {m: float(np.nanmean([float(row[m]) for row in picked]))
                    for m in QUALITY_BAR}


def ratio_table(set_name: str, method: str, means: dict[str, float],
                optimum: dict[str, float], reference: dict[str, float] | None,
                target: float, pairs: int) -> tuple[str, int]:
    """Markdown table of one set and the number of failed checks."""
    head = f'| metric | {method} | L_pixel optimum | ratio | >= {target:.0%} |'
    rule = '|---|---:|---:|---:|---|'
    if reference is not None:
        head += ' reference | not lower |'
        rule += '---:|---|'
    lines = [f'### {set_name} ({pairs} pairs)', '', head, rule]
    failed = 0
    for metric in QUALITY_BAR:
        ratio = means[metric] / optimum[metric]
        ok = ratio >= target
        failed += not ok
        line = (f'| {metric} | {means[metric]:.4g} | {optimum[metric]:.4g} | {ratio:.1%} | '
                f"{'yes' if ok else '**no**'} |")
        if reference is not None:
            not_lower = means[metric] >= reference[metric]
            failed += not not_lower
            line += f" {reference[metric]:.4g} | {'yes' if not_lower else '**no**'} |"
        lines.append(line)
    return '\n'.join(lines), failed


def count_pairs(folder: Path) -> int:
    with (folder / 'metrics.csv').open(newline='') as handle:
        return len({row['stem'] for row in csv.DictReader(handle)})


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        optimum = json.loads(args.optimum.read_text())
        references = dict(args.reference)
        failed = 0
        for set_name, folder in args.eval:
            if args.optimum_row not in optimum.get(set_name, {}):
                raise ValueError(f'{args.optimum} has no {args.optimum_row!r} row for set '
                                 f'{set_name!r}')
            method, means = method_means(folder, args.method)
            reference = None
            if set_name in references:
                _, reference = method_means(references[set_name],
                                            args.reference_method or args.method)
            table, set_failed = ratio_table(set_name, method, means,
                                            optimum[set_name][args.optimum_row], reference,
                                            args.target, count_pairs(folder))
            failed += set_failed
            print(table + '\n')
    except (OSError, ValueError) as exc:
        print(f'bench_optimum_ratio: {exc}', file=sys.stderr)
        return 2
    print(f'{failed} check(s) failed' if failed else 'all checks passed')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
