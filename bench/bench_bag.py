"""occo-bag overhead: everything but the network, as a share of the time per fused pair.

Builds a bag of N synthetic pairs (occo_ros.synthetic.scene: thermal mono16 640x512 and RGB bgr8
1280x720 at 30 Hz, 8 distinct frames reused) and runs occo_ros.offline.bag_fusion.fuse_bag on it
with the node's defaults (output 640x512 rgb8) and a width-0.25 FIFN (models/fifn_w025.pt when it
exists, else a randomly initialised one: same cost) at network input 640x512 and 320x256.
For each it reports the median per-stage times and

    overhead = 1 - median(inference) / median(per pair)

where "per pair" is the wall time from one fused output to the next (reading and
deserialising both messages, pairing, decoding, preprocessing, inference, composing,
serialising and writing), and the same from the totals (1 - sum(inference) / loop seconds).

Then the flat-memory check: a fresh process loads the engine, resets its peak-RSS mark
(Linux /proc/self/clear_refs) and fuses a bag of 200, or of 1,000, small pairs (80x64 mono16
+ bgr8, network 80x64); the peak RSS during the run (VmHWM) must not grow with the length.
Engine loading (imports, ONNX export) peaks far higher than the run itself, which is why the
mark is reset first: otherwise ru_maxrss would hide any growth below that start-up peak.

    python bench/bench_bag.py [--pairs 30] [--backend auto] [--memory-pairs 200 1000]

Targets (issue 5): overhead <= 20% at 640x512 on the development CPU; peak RSS that does not
grow with the bag length.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
import subprocess
import sys
import tempfile

from machine import cpu_description  # bench/machine.py (run as python bench/...)

from occo_ros.core import codec
from occo_ros.engines import BACKENDS, EngineSpec
from occo_ros.io.bags import IMAGE, OutputBag, image_message, serialize
from occo_ros.offline.bag_fusion import BagTopics, fuse_bag
from occo_ros.params import build_params
from occo_ros.pipeline import create_pipeline
from occo_ros.synthetic.scene import SceneConfig, SyntheticScene
from occo_ros.util.resources import default_model_path

REPO = Path(__file__).resolve().parents[1]
SHIPPED_MODEL = default_model_path()
THERMAL, RGB = '/thermal/image_raw', '/rgb/image_raw'
TARGET = 0.20
STAGES = ('read', 'decode', 'preprocess', 'inference', 'compose', 'write', 'per_pair')


def model_for_bench(scratch: Path) -> tuple[Path, str]:
    """The shipped width-0.25 model, or a random one saved in ``scratch``; (path, label)."""
    if SHIPPED_MODEL.is_file():
        return SHIPPED_MODEL, f'shipped {SHIPPED_MODEL.name}'
    import torch

    from occo_ros.model.checkpoint import save_checkpoint
    from occo_ros.model.network import build_fifn
    torch.manual_seed(0)
    path = save_checkpoint(scratch / 'fifn_w025_random.pt', build_fifn(0.25).eval())
    return path, 'random-init width-0.25 FIFN (shipped model not found; same cost)'


def write_synthetic_bag(path: Path, pairs: int, thermal_size: tuple[int, int],
                        rgb_size: tuple[int, int]) -> int:
    """A 30 Hz bag of ``pairs`` thermal mono16 + RGB bgr8 messages (RGB 1 ms after thermal),
    written as it is generated; returns its size in bytes."""
    scene = SyntheticScene(SceneConfig(thermal_size=thermal_size, rgb_size=rgb_size))
    frames = [(codec.array_to_image_fields(scene.thermal(i / 30), 'mono16'),
               codec.array_to_image_fields(scene.rgb(i / 30), 'bgr8')) for i in range(8)]
    out = OutputBag(path)
    thermal_conn, rgb_conn = out.add_topic(THERMAL, IMAGE), out.add_topic(RGB, IMAGE)
    for i in range(pairs):
        stamp = 10**9 + i * 33_333_333
        thermal, rgb = frames[i % len(frames)]
        out.write(thermal_conn, stamp + 5_000_000,
                  serialize(image_message(thermal, stamp, 'thermal_optical_frame')))
        out.write(rgb_conn, stamp + 6_000_000,
                  serialize(image_message(rgb, stamp + 1_000_000, 'rgb_optical_frame')))
    out.commit()
    return sum(f.stat().st_size for f in path.iterdir())


def overhead_case(bag: Path, scratch: Path, model: Path, backend: str,
                  input_size: tuple[int, int]) -> dict:
    values = {'model_path': str(model), 'backend': backend,
              'engine_cache_dir': str(scratch / 'cache'),
              'input_width': input_size[0], 'input_height': input_size[1]}
    out = scratch / f'out_{input_size[0]}x{input_size[1]}'
    summary = fuse_bag(bag, out, build_params(values), BagTopics(THERMAL, RGB),
                       engine=EngineSpec.from_params(values), progress=True)
    times = summary.times
    result = {stage: times.median(stage) for stage in STAGES}
    result['overhead'] = 1.0 - times.median('inference') / times.median('per_pair')
    result['overhead_total'] = 1.0 - times.total('inference') / 1e3 / summary.seconds
    result.update(fused=summary.fused, engine=summary.engine, seconds=summary.seconds)
    return result


def memory_kb(field: str) -> int:
    """VmRSS (resident now) or VmHWM (peak since start or the last reset) of this process."""
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith(field + ':'):
            return int(line.split()[1])
    raise RuntimeError(f'{field} not in /proc/self/status (Linux only)')


def memory_child(bag: Path, out: Path, model: Path, cache: Path) -> None:
    """Load the engine, reset the peak-RSS mark, fuse ``bag`` into ``out``; print the fused
    count, the RSS before the run and the peak RSS during it (kB)."""
    values = {'model_path': str(model), 'backend': 'onnxruntime',
              'engine_cache_dir': str(cache), 'input_width': 80, 'input_height': 64,
              'output_width': 80, 'output_height': 64, 'num_threads': 1}
    params = build_params(values)
    pipeline = create_pipeline(params, EngineSpec.from_params(values))
    Path('/proc/self/clear_refs').write_text('5')  # resets VmHWM to the current RSS
    before = memory_kb('VmRSS')
    summary = fuse_bag(bag, out, params, BagTopics(THERMAL, RGB), pipeline=pipeline)
    print(summary.fused, before, memory_kb('VmHWM'))


def peak_rss(pairs: int, scratch: Path, model: Path) -> tuple[int, int, int, int]:
    """(fused pairs, RSS before kB, peak RSS during the run kB, bag bytes) of a fresh
    process fusing a bag of ``pairs`` small pairs."""
    bag = scratch / f'small_{pairs}'
    size = write_synthetic_bag(bag, pairs, (80, 64), (80, 64))
    proc = subprocess.run(
        [sys.executable, __file__, '--memory-child', str(bag), str(scratch / f'{bag.name}_out'),
         str(model), str(scratch / 'cache')], capture_output=True, text=True, check=True)
    fused, before, peak = (int(v) for v in proc.stdout.split()[-3:])
    return fused, before, peak, size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--pairs', type=int, default=30, help='pairs in the full-size bag')
    parser.add_argument('--backend', default='auto', choices=BACKENDS,
                        help='inference backend (auto: the one the node would pick)')
    parser.add_argument('--memory-pairs', type=int, nargs=2, default=(200, 1000),
                        metavar=('SHORT', 'LONG'), help='bag lengths of the memory check')
    parser.add_argument('--memory-child', nargs=4, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        memory_child(*(Path(p) for p in args.memory_child))
        return 0

    with tempfile.TemporaryDirectory(prefix='bench_bag_') as tmp:
        scratch = Path(tmp)
        model, label = model_for_bench(scratch)
        bag = scratch / 'full'
        size = write_synthetic_bag(bag, args.pairs, (640, 512), (1280, 720))
        cases = [((640, 512), overhead_case(bag, scratch, model, args.backend, (640, 512))),
                 ((320, 256), overhead_case(bag, scratch, model, args.backend, (320, 256)))]
        print('memory check ...', file=sys.stderr)
        peak_rss(20, scratch, model)  # warm-up: fills the ONNX cache, so no child exports
        memory = [(n, *peak_rss(n, scratch, model)) for n in args.memory_pairs]

    print(f'\nmachine: {cpu_description()}, load average '
          f'{os.getloadavg()[0]:.1f} at the end; model: {label}; engine: {cases[0][1]["engine"]}')
    print(f'bag: {args.pairs} pairs, thermal mono16 640x512 + RGB bgr8 1280x720 '
          f'({size / 1e6:.0f} MB) -> fused rgb8 640x512; medians in ms (read: per message)\n')
    print('| network input | ' + ' | '.join(STAGES) + ' | overhead (medians) | '
          'overhead (totals) | pairs/s |')
    print('|---' * (len(STAGES) + 4) + '|')
    for (w, h), r in cases:
        print(f'| {w}x{h} | ' + ' | '.join(f'{r[s]:.2f}' for s in STAGES)
              + f' | **{r["overhead"]:.1%}** | {r["overhead_total"]:.1%} | '
              f'{r["fused"] / r["seconds"]:.2f} |')
    print('\nflat memory: a fresh process per bag (80x64 images, network 80x64)\n')
    print('| pairs | fused | bag MB | RSS before the run MB | peak RSS during the run MB |')
    print('|---|---|---|---|---|')
    for n, fused, before, peak, bag_size in memory:
        print(f'| {n} | {fused} | {bag_size / 1e6:.1f} | {before / 1024:.1f} | '
              f'{peak / 1024:.1f} |')
    growth = (memory[1][3] - memory[0][3]) / 1024
    ok = cases[0][1]['overhead'] <= TARGET
    print(f'\noverhead at 640x512: {cases[0][1]["overhead"]:.1%} (target <= {TARGET:.0%}: '
          f'{"met" if ok else "NOT met"}); peak RSS growth {memory[0][0]} -> {memory[1][0]} '
          f'pairs: {growth:+.1f} MB')
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
