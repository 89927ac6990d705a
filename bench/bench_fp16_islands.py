"""How far is the fp16 ONNX with FP32 islands (occo_ros.model.fp16_islands, what TensorRT >= 11
builds fp16 engines from) from the fp32 export? ONNX Runtime on the CPU, real pairs.

For each size (480x640, the MSRS frame, and 1080x1920, the same pairs resized with area /
cubic interpolation) and each pair: max and mean |fp16 islands - fp32| of fused_y in [0, 1].
Inputs are prepared as the node does: BT.601 luma / 255, 8-bit thermal / 255.

    python bench/bench_fp16_islands.py [--onnx models/fifn_w025_pixel.onnx] \\
        [--root ../shared/data/eval/msrs] [--pairs 4]

ONNX Runtime's CPU provider runs float16 nodes without a float16 kernel in float32 between
Casts (its InsertCastTransformer; microsoft/onnxruntime#16778), so tensors between nodes are
rounded to float16 but arithmetic inside a node is float32, and a node squeezed between two
such nodes may run in float32 without the casts (onnxruntime PR #8018): this measures the
graph's types, a lower bound of what a GPU's fp16 kernels give (TensorRT accumulates
convolutions in fp32 too), not a TensorRT engine. Prints a Markdown table, the machine
and the time taken: 45 s of CPU, 3 minutes on 2 cores shared at load 15.
"""

from __future__ import annotations

import argparse
from pathlib import Path
import sys
import time

import cv2
from machine import cpu_description  # bench/machine.py (run as python bench/...)
import numpy as np
import onnx
import onnxruntime as ort

from occo_ros.core.color import luma_chroma
from occo_ros.model.fp16_islands import fp16_islands

REPO = Path(__file__).resolve().parents[1]
SIZES = ((480, 640), (1080, 1920))


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=['CPUExecutionProvider'])


def pairs(root: Path, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    names = sorted(path.name for path in (root / 'vi').iterdir())[:count]
    loaded = []
    for name in names:
        visible = cv2.imread(str(root / 'vi' / name), cv2.IMREAD_COLOR)
        thermal = cv2.imread(str(root / 'ir' / name), cv2.IMREAD_GRAYSCALE)
        loaded.append((luma_chroma(visible, 'bgr')[0], thermal))
    return loaded


def inputs(luma: np.ndarray, thermal: np.ndarray, size: tuple[int, int]) -> dict:
    height, width = size
    arrays = []
    for image in (luma, thermal):
        if image.shape != size:
            grow = height > image.shape[0]
            image = cv2.resize(image, (width, height),
                               interpolation=cv2.INTER_CUBIC if grow else cv2.INTER_AREA)
        arrays.append((image.astype(np.float32) / np.float32(255.0))[None, None])
    return dict(zip(('visible_y', 'infrared'), arrays))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--onnx', type=Path, default=REPO / 'models' / 'fifn_w025_pixel.onnx')
    parser.add_argument('--root', type=Path,
                        default=REPO.parent / 'shared' / 'data' / 'eval' / 'msrs')
    parser.add_argument('--pairs', type=int, default=4)
    args = parser.parse_args(argv)
    started = time.monotonic()
    fp32 = onnx.load(str(args.onnx))
    islands = fp16_islands(fp32)
    sessions = {'fp32': session(fp32), 'fp16 islands': session(islands)}
    data = pairs(args.root, args.pairs)
    print(f'# fp16 with FP32 islands vs fp32, ONNX Runtime {ort.__version__} CPU\n')
    print(f'{args.onnx.name}, {len(data)} pairs of {args.root}; {cpu_description()}\n')
    print('| size | max abs error | mean abs error | worst pair |')
    print('|---|---|---|---|')
    for size in SIZES:
        errors = []
        for luma, thermal in data:
            feed = inputs(luma, thermal, size)
            reference = sessions['fp32'].run(None, feed)[0]
            fused = sessions['fp16 islands'].run(None, feed)[0]
            difference = np.abs(fused - reference)
            errors.append((float(difference.max()), float(difference.mean())))
        worst = max(range(len(errors)), key=lambda index: errors[index][0])
        print(f'| {size[0]}x{size[1]} | {errors[worst][0]:.2e} | '
              f'{np.mean([mean for _, mean in errors]):.2e} | {worst} |')
    print(f'\n{time.monotonic() - started:.0f} s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
