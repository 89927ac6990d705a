"""ONNX Runtime vs PyTorch on the CPU: FIFN latency side by side, same checkpoint, fp32.

Both engines come from occo_ros.engines.create_engine (the node's code path): PyTorch runs
the checkpoint, ONNX Runtime the cached fixed-shape opset-17 export of it. Runs alternate
between the backends so load from other processes hits both alike; the load average is
printed with the table because a shared machine skews absolute numbers.

    .venv/bin/python bench/bench_backends.py --random-width 0.25 --threads 2 --runs 30

--also-onnx FILE (repeatable) times further ONNX exports in the same alternation, e.g. the
export of another occo_ros version to measure a change of the network code:

    git worktree add /tmp/occo_old OLD_COMMIT
    (cd /tmp/occo_old && PYTHONPATH=. /path/to/.venv/bin/python -m occo_ros.cli.export \
        --dynamic --out /tmp/old.onnx)   # occo_ros.export before 0.2.0
    .venv/bin/python bench/bench_backends.py --also-onnx /tmp/old.onnx

Output: a markdown table (median and p90 in ms per size and backend) on stdout, optionally
JSON (--json). The numbers in docs/PERFORMANCE.md come from this script.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import sys
import tempfile
import time

from machine import cpu_description  # bench/machine.py (run as python bench/...)
import numpy as np
from tqdm import tqdm

from occo_ros.engines import EngineSpec, create_engine
from occo_ros.util.resources import DEFAULT_MODEL, default_model_path

SIZES = ((256, 320), (512, 640))  # (H, W)
BACKENDS = ('onnxruntime', 'torch')


def random_checkpoint(width: float, folder: Path) -> Path:
    """A seeded random FIFN of `width` (latency does not depend on the weights)."""
    import torch

    from occo_ros.model.checkpoint import save_checkpoint
    from occo_ros.model.network import build_fifn

    torch.manual_seed(0)
    return save_checkpoint(folder / f'random_w{width:g}.pt', build_fifn(width))


def measure(engines: dict, size: tuple[int, int], warmup: int, runs: int) -> dict:
    """Per backend: list of `runs` latencies in ms, backends alternating run by run."""
    rng = np.random.default_rng(0)
    visible, infrared = (rng.random((1, 1, *size), dtype=np.float32) for _ in range(2))
    for engine in engines.values():
        for _ in range(warmup):
            engine.infer(visible, infrared)
    times = {name: [] for name in engines}
    order = list(engines)
    for run in tqdm(range(runs), desc=f'{size[0]}x{size[1]}', unit='run', file=sys.stderr):
        for name in (order if run % 2 == 0 else order[::-1]):
            started = time.perf_counter()
            engines[name].infer(visible, infrared)
            times[name].append((time.perf_counter() - started) * 1000.0)
    return times


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description='Benchmark ONNX Runtime vs PyTorch FIFN inference on the CPU (fp32).')
    source = parser.add_mutually_exclusive_group()
    source.add_argument('--model', type=Path, default=None,
                        help=f'FIFN checkpoint (.pt); default: the shipped models/{DEFAULT_MODEL}')
    source.add_argument('--random-width', type=float, default=None,
                        help='benchmark a seeded random FIFN of this width multiplier instead '
                             '(e.g. 0.25; use when no trained checkpoint is at hand)')
    parser.add_argument('--threads', type=int, default=2,
                        help='CPU threads for both backends (default %(default)s)')
    parser.add_argument('--runs', type=int, default=30,
                        help='timed runs per size and backend, >= 20 (default %(default)s)')
    parser.add_argument('--warmup', type=int, default=3,
                        help='untimed runs per size and backend first (default %(default)s)')
    parser.add_argument('--sizes', default=','.join(f'{h}x{w}' for h, w in SIZES),
                        help='comma-separated HxW sizes (default %(default)s)')
    parser.add_argument('--cache-dir', type=Path, default=None,
                        help='ONNX export cache (default: a temporary folder)')
    parser.add_argument('--also-onnx', type=Path, action='append', default=[],
                        metavar='FILE',
                        help='also time this ONNX export with ONNX Runtime (dynamic, or fixed '
                             'at every --sizes entry), alternating with the backends; '
                             'repeatable')
    parser.add_argument('--json', type=Path, default=None, help='also write results as JSON')
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.runs < 20:
        print('bench_backends: --runs must be >= 20', file=sys.stderr)
        return 2
    sizes = [tuple(int(v) for v in text.split('x')) for text in args.sizes.split(',')]
    missing = [str(path) for path in args.also_onnx if not path.is_file()]
    if missing:
        print(f'bench_backends: --also-onnx file(s) not found: {missing}', file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix='occo_bench_') as folder:
        if args.random_width is not None:
            model = random_checkpoint(args.random_width, Path(folder))
        else:
            model = args.model or default_model_path()
        if not model.is_file():
            print(f'bench_backends: checkpoint not found: {model} (pass --model or '
                  '--random-width)', file=sys.stderr)
            return 1
        cache = str(args.cache_dir or Path(folder) / 'cache')
        load_before = os.getloadavg()
        results = []
        for size in sizes:
            sources = [(name, name, model) for name in BACKENDS] + [
                (f'onnxruntime: {path.name}', 'onnxruntime', path) for path in args.also_onnx]
            specs = {label: EngineSpec(backend=backend, model_path=str(path), device='cpu',
                                       input_size=size, engine_cache_dir=cache,
                                       num_threads=args.threads)
                     for label, backend, path in sources}
            engines = {label: create_engine(spec) for label, spec in specs.items()}
            times = measure(engines, size, args.warmup, args.runs)
            for name, values in times.items():
                results.append({
                    'size': f'{size[0]}x{size[1]}', 'backend': name,
                    'median_ms': round(float(np.median(values)), 2),
                    'p90_ms': round(float(np.percentile(values, 90)), 2), 'runs': len(values),
                    'width': engines[name].info.details.get('width')})
            for engine in engines.values():
                engine.close()
        load_after = os.getloadavg()
    header = (f'CPU: {cpu_description()}; threads {args.threads}; fp32; model {model.name}; '
              f'load average {load_before[0]:.1f} -> {load_after[0]:.1f}')
    print(header)
    print()
    print('| size (HxW) | backend | median ms | p90 ms | runs |')
    print('|---|---|---|---|---|')
    for row in results:
        print(f'| {row["size"]} | {row["backend"]} | {row["median_ms"]:.1f} | '
              f'{row["p90_ms"]:.1f} | {row["runs"]} |')
    if args.json is not None:
        args.json.write_text(json.dumps({'machine': header, 'results': results}, indent=2),
                             encoding='utf-8')
    return 0


if __name__ == '__main__':
    sys.exit(main())
