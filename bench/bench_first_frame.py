"""First fused frame after start vs steady state: does the worker's warm-up pay the engine's
lazy initialisation before the first pair arrives?

Each trial is a fresh Python process, as a node start is: load the engine with the node's
default parameters (shipped model, network 320x256, output 640x512; --backend as given),
build a FusionWorker, warm it up (FusionWorker.warm_up, as both fusion nodes do at start; or
not, for the comparison), then fuse --frames pairs of real-size camera messages (thermal
mono16 640x512, RGB bgr8 1280x720, a synthetic scene) one after another through
FusionWorker.process, timing each frame's inference stage and the whole frame step.

Reported per backend and mode: medians over trials of the first frame's inference, the
steady-state inference (median of frames 2..N in the trial) and their ratio; the same for
the whole frame. Target (issue 15): first-frame inference <= 1.5x steady state with warm-up.

    python bench/bench_first_frame.py [--trials 5] [--frames 12] [--backends onnxruntime torch]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from types import SimpleNamespace

from machine import cpu_description  # bench/machine.py (run as python bench/...)


def child(backend: str, warm_up: bool, frames: int) -> dict:
    """One node start: returns per-frame inference and frame-step times (ms)."""
    from occo_ros.core.codec import array_to_image_fields
    from occo_ros.core.pairing import Pair
    from occo_ros.engines import EngineSpec
    from occo_ros.params import PARAMS, make_params
    from occo_ros.pipeline import create_pipeline
    from occo_ros.synthetic.scene import SceneConfig, SyntheticScene
    from occo_ros.util.allocator import tune_allocator
    from occo_ros.worker import FusionWorker

    tune_allocator()
    scene = SyntheticScene(SceneConfig())
    pairs = [Pair(SimpleNamespace(**array_to_image_fields(scene.thermal(i / 30), 'mono16')),
                  SimpleNamespace(**array_to_image_fields(scene.rgb(i / 30), 'bgr8')), i, i)
             for i in range(frames)]
    values = {spec.name: spec.default for spec in PARAMS}
    values.update(backend=backend, device='cpu')
    params = make_params(values)
    start = time.perf_counter()
    # clock 0 ns: the pairs (stamped 0..N ns) are never stale
    worker = FusionWorker(create_pipeline(params, EngineSpec.from_params(values)), params,
                          lambda pair, result: None,
                          clock_ns=lambda: 0)
    load_s = time.perf_counter() - start
    warm_s = worker.warm_up() if warm_up else 0.0
    inference, total = [], []
    for pair in pairs:
        begin = time.perf_counter()
        result = worker.process(pair, begin)
        total.append((time.perf_counter() - begin) * 1e3)
        assert result is not None and result.ok, result
        inference.append(result.times_ms['inference'])
    worker.pipeline.engine.close()
    return {'backend': worker.pipeline.engine.info.backend, 'load_s': load_s,
            'warm_up_s': warm_s, 'inference_ms': inference, 'total_ms': total}


def trial(backend: str, warm_up: bool, frames: int) -> dict:
    cmd = [sys.executable, __file__, '--child', backend, '--frames', str(frames)]
    if not warm_up:
        cmd.append('--no-warm-up')
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f'trial failed: {" ".join(cmd)}\n{proc.stderr}')
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summarize(results: list[dict], key: str) -> tuple[float, float, float]:
    """Medians over trials of: first frame, steady state (median of frames 2..N), ratio."""
    first = [r[key][0] for r in results]
    steady = [statistics.median(r[key][1:]) for r in results]
    ratio = [f / s for f, s in zip(first, steady)]
    return statistics.median(first), statistics.median(steady), statistics.median(ratio)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--trials', type=int, default=5,
                        help='fresh processes per backend and mode')
    parser.add_argument('--frames', type=int, default=12,
                        help='pairs fused per process (the first one is the first frame)')
    parser.add_argument('--backends', nargs='+', default=['onnxruntime', 'torch'],
                        choices=['onnxruntime', 'torch', 'tensorrt'],
                        help='backends to measure')
    parser.add_argument('--child', metavar='BACKEND', help=argparse.SUPPRESS)
    parser.add_argument('--no-warm-up', action='store_true', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.frames < 3 or args.trials < 1:
        parser.error('--frames must be >= 3 and --trials >= 1')
    if args.child:
        print(json.dumps(child(args.child, not args.no_warm_up, args.frames)))
        return 0

    print(f'# {cpu_description()}; network 320x256, thermal 640x512 + RGB 1280x720 -> '
          f'640x512; {args.trials} fresh processes x {args.frames} frames each; medians')
    print('| backend | warm-up | warm-up s | first inference ms | steady inference ms | '
          'ratio | first frame ms | steady frame ms | ratio |')
    print('|---|---|---|---|---|---|---|---|---|')
    for backend in args.backends:
        for warm_up in (True, False):
            results = [trial(backend, warm_up, args.frames) for _ in range(args.trials)]
            inf = summarize(results, 'inference_ms')
            tot = summarize(results, 'total_ms')
            warm_s = statistics.median(r['warm_up_s'] for r in results)
            print(f'| {backend} | {"yes" if warm_up else "no"} | {warm_s:.2f} | {inf[0]:.1f} | '
                  f'{inf[1]:.1f} | {inf[2]:.2f} | {tot[0]:.1f} | {tot[1]:.1f} | {tot[2]:.2f} |',
                  flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
