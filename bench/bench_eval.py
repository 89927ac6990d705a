"""occo-eval end to end: model + every baseline through every metric on the MSRS eval set.

Runs ``occo-eval`` (training.evaluate.main) on ../shared/data/eval/msrs (40 pairs, 640x480)
with the four baselines and a width-0.25 FIFN: models/fifn_w025.pt when it exists, else a
randomly initialised width-0.25 checkpoint written to a temporary folder (the output says
which; the timing is the same, the scores are not meaningful). Prints the wall-clock total
and the median seconds per image of each stage (inference, each baseline, metrics per
method) from occo-eval's timings.json.

    python -m bench.bench_eval [--workers 1] [--limit 40] [--data DIR] [--out DIR]

(from the repository root, so that ``training`` and ``occo_ros`` import).

Target (issue 3): 40 pairs x 5 fused images through all metrics in <= 120 s on the 2-core
development CPU, inference included.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import platform
import sys
import tempfile
import time

from occo_ros.util.resources import default_model_path
from training.evaluate import main as occo_eval

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / 'shared' / 'data' / 'eval' / 'msrs'
SHIPPED_MODEL = default_model_path()
TARGET_S = 120.0


def model_for_bench(scratch: Path) -> tuple[Path, str]:
    """The shipped width-0.25 model, or a random one saved in ``scratch``; (path, label)."""
    if SHIPPED_MODEL.is_file():
        return SHIPPED_MODEL, f'shipped model {SHIPPED_MODEL}'
    import torch

    from occo_ros.model.checkpoint import save_checkpoint
    from occo_ros.model.network import build_fifn
    torch.manual_seed(0)
    path = save_checkpoint(scratch / 'fifn_w025_random.pt', build_fifn(0.25))
    return path, f'RANDOM-INIT width-0.25 FIFN ({SHIPPED_MODEL} not found; scores meaningless)'


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--data', type=Path, default=DEFAULT_DATA,
                        help='folder holding ir/ and vi/')
    parser.add_argument('--workers', type=int, default=1, help='occo-eval --workers')
    parser.add_argument('--limit', type=int, default=None, help='evaluate only N pairs')
    parser.add_argument('--out', type=Path, default=None,
                        help='keep occo-eval outputs here (default: a temporary folder)')
    args = parser.parse_args(argv)
    if not (args.data / 'ir').is_dir():
        print(f'bench_eval: no data at {args.data} (expected ir/ and vi/ there)', file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory() as scratch:
        model, model_label = model_for_bench(Path(scratch))
        out = args.out or Path(scratch) / 'eval'
        command = ['--ir', str(args.data / 'ir'), '--vi', str(args.data / 'vi'),
                   '--model', str(model), '--name', 'fifn_w025', '--out', str(out),
                   '--device', 'cpu', '--workers', str(args.workers),
                   '--overwrite']   # a re-run into --out replaces occo-eval's own files only
        if args.limit:
            command += ['--limit', str(args.limit)]
        start = time.perf_counter()
        status = occo_eval(command)
        total = time.perf_counter() - start
        if status != 0:
            print(f'bench_eval: occo-eval exited with {status}', file=sys.stderr)
            return status
        timings = json.loads((out / 'timings.json').read_text())

    print(f'\nbench_eval: {platform.processor() or platform.machine()}, '
          f'{os.cpu_count()} CPUs, workers={args.workers}')
    print(f'model: {model_label}')
    print(f'{"stage":<28}{"images":>8}{"median s":>11}{"total s":>10}')
    for stage, stats in timings['stages'].items():
        print(f'{stage:<28}{stats["count"]:>8}{stats["median_s"]:>11.4f}'
              f'{stats["total_s"]:>10.2f}')
    verdict = 'within' if total <= TARGET_S else 'OVER'
    print(f'total wall clock: {total:.1f} s ({verdict} the {TARGET_S:.0f} s target)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
