"""Cost of the colour step (occo_ros.core.color.compose_rgb) at 640x512, each color_mode.

The fused luma is pixel-wise max(IR, visible) of an MSRS night pair resized to 640x512 (the
values do not change the work); the visible YCbCr is luma_chroma's. Prints per call the
median and minimum wall time and the mean CPU time of the process (all its threads: OpenCV's
own worker threads take part in some of the steps), and the load average, for both modes.

    python -m bench.bench_color [--calls 500] [--size 640x512]

Target (issue 21): preserve_saturation <= 1 ms (wall median) per 640x512 frame on the
development CPU.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
import time

import cv2
import numpy as np

from bench.machine import cpu_description
from occo_ros.core.color import COLOR_MODES, compose_rgb, luma_chroma

REPO = Path(__file__).resolve().parents[1]
PAIR = REPO.parent / 'shared' / 'data' / 'eval' / 'msrs'
STEM = '00004N.png'
TARGET_MS = 1.0


def inputs(size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(fused luma float32 in [0, 1], visible YCbCr uint8) at ``size`` (W, H)."""
    rgb = cv2.cvtColor(cv2.imread(str(PAIR / 'vi' / STEM)), cv2.COLOR_BGR2RGB)
    ir = cv2.imread(str(PAIR / 'ir' / STEM), cv2.IMREAD_GRAYSCALE)
    rgb, ir = cv2.resize(rgb, size), cv2.resize(ir, size)
    y, ycbcr = luma_chroma(rgb)
    return (np.maximum(y, ir) / np.float32(255.0)).astype(np.float32), ycbcr


def measure(mode: str, fused: np.ndarray, ycbcr: np.ndarray, calls: int) -> dict[str, float]:
    compose_rgb(fused, ycbcr, 'rgb', mode)    # the compiled kernel, OpenCV's threads
    wall, cpu = [], []
    for _ in range(calls):
        start, start_cpu = time.perf_counter(), time.process_time()
        compose_rgb(fused, ycbcr, 'rgb', mode)
        cpu.append(time.process_time() - start_cpu)
        wall.append(time.perf_counter() - start)
    return {'median': np.median(wall) * 1e3, 'min': min(wall) * 1e3,
            'cpu': np.mean(cpu) * 1e3}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--calls', type=int, default=500)
    parser.add_argument('--size', default='640x512', help='W x H')
    args = parser.parse_args(argv)
    size = tuple(int(v) for v in args.size.split('x'))
    fused, ycbcr = inputs(size)
    load = os.getloadavg()
    print(f'compose_rgb at {size[0]}x{size[1]}, {args.calls} calls; {cpu_description()}; '
          f'load average {load[0]:.1f} (OpenCV threads {cv2.getNumThreads()})')
    print('| color_mode | wall median ms | wall min ms | CPU ms (mean) |\n|---|---:|---:|---:|')
    for mode in COLOR_MODES:
        r = measure(mode, fused, ycbcr, args.calls)
        print(f'| {mode} | {r["median"]:.3f} | {r["min"]:.3f} | {r["cpu"]:.3f} |')
    print(f'target: preserve_saturation <= {TARGET_MS} ms')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
