"""The frame step's output check (model_contract.output_problem): false positives and cost.

Runs the shipped model (ONNX Runtime, CPU) through the node's frame step
(FusionPipeline.fuse_frame) on

* the 80 real eval pairs (../shared/data/eval/msrs and roadscene, 40 each), network and
  output 640x512, automatic crop;
* ``--frames`` synthetic night-street pairs (occo_ros.synthetic.scene: thermal mono16 320x256,
  RGB 640x360, 0.1 s apart), network and output 160x128 so 2,000 frames fit in a few
  minutes (the check sees the network output, whatever its size),

and counts frames refused as ``bad_output``: each one is a false positive (the model is
good). Then times the check alone on a real 640x512 output (median of ``--repeats`` calls).

    python -m bench.bench_output_check [--frames 2000] [--repeats 2000]

Goals (issue 20): 0 false positives; <= 0.5 ms per frame at 640x512.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
import statistics
import sys
import time

from bench.machine import cpu_description
from occo_ros.core import codec
from occo_ros.engines import EngineSpec
from occo_ros.io.image_pairs import find_pairs, read_gray, read_rgb
from occo_ros.model.contract import output_problem
from occo_ros.params import PARAMS, FusionSettings, check_params
from occo_ros.pipeline import BAD_OUTPUT, create_pipeline
from occo_ros.synthetic.scene import SceneConfig, SyntheticScene

REPO = Path(__file__).resolve().parents[1]
EVAL = REPO.parent / 'shared' / 'data' / 'eval'
GOAL_MS = 0.5


def pipeline(network: tuple[int, int], output: tuple[int, int]):
    """The node's pipeline for the shipped model at network/output (W, H)."""
    values = check_params(dict({spec.name: spec.default for spec in PARAMS},
                               input_width=network[0], input_height=network[1],
                               output_width=output[0], output_height=output[1], num_threads=2))
    spec = EngineSpec.from_params(values, backend='onnxruntime', device='cpu')
    return create_pipeline(FusionSettings.from_values(values), spec)


def bad_frames(step, pairs) -> tuple[int, int, list[str]]:
    """(frames, bad_output count, their messages) over (name, thermal, rgb DecodedImage)."""
    frames, bad = 0, []
    for name, thermal, rgb in pairs:
        result = step.fuse_frame(thermal, rgb)
        frames += 1
        if result.reason == BAD_OUTPUT:
            bad.append(f'{name}: {result.problems[0].message}')
        elif not result.ok:
            raise RuntimeError(f'{name}: {result.problems[0].message}')
    return frames, len(bad), bad


def eval_pairs():
    for dataset in ('msrs', 'roadscene'):
        for pair in find_pairs(EVAL / dataset / 'ir', EVAL / dataset / 'vi').pairs:
            yield (f'{dataset}/{pair.stem}', read_gray(pair.ir_path),
                   codec.DecodedImage(read_rgb(pair.vi_path), 'rgb'))


def synthetic_pairs(count: int):
    scene = SyntheticScene(SceneConfig(thermal_size=(320, 256), rgb_size=(640, 360)))
    for index in range(count):
        t = index * 0.1
        yield (f'synthetic t={t:.1f}', scene.thermal(t),
               codec.DecodedImage(scene.rgb(t), 'bgr'))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--frames', type=int, default=2000, help='synthetic frames')
    parser.add_argument('--repeats', type=int, default=2000, help='timed check calls')
    args = parser.parse_args(argv)
    if not (EVAL / 'msrs' / 'ir').is_dir():
        print(f'no eval data at {EVAL}', file=sys.stderr)
        return 2
    print(f'machine: {cpu_description()}, load average {os.getloadavg()[0]:.1f}')
    real = pipeline((640, 512), (640, 512))
    frames, bad, messages = bad_frames(real, eval_pairs())
    print(f'real eval pairs: {bad} bad_output of {frames} frames (false positives)')
    synth = pipeline((160, 128), (160, 128))
    start = time.perf_counter()
    s_frames, s_bad, s_messages = bad_frames(synth, synthetic_pairs(args.frames))
    print(f'synthetic frames: {s_bad} bad_output of {s_frames} frames (false positives), '
          f'{time.perf_counter() - start:.0f} s')
    for message in (messages + s_messages)[:10]:
        print('  ', message)
    # the check alone at 640x512 on a real network output
    thermal, rgb = next(eval_pairs())[1:]
    prepared = real.preprocess(thermal, rgb.array, rgb.order)
    real.infer(prepared)
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        output_problem(prepared.fused, prepared.visible_y, prepared.infrared)
        times.append((time.perf_counter() - start) * 1e3)
    median, p99 = statistics.median(times), sorted(times)[int(0.99 * (len(times) - 1))]
    print(f'output check at 640x512: median {median:.3f} ms, p99 {p99:.3f} ms per frame '
          f'(goal <= {GOAL_MS} ms), load average {os.getloadavg()[0]:.1f}')
    return 0 if bad == s_bad == 0 and median <= GOAL_MS else 1


if __name__ == '__main__':
    sys.exit(main())
