"""``occo-fuse``: fuse a folder of registered infrared/visible image pairs to colour PNGs.

Pairs are ``--ir DIR/<stem>.*`` + ``--vi DIR/<stem>.*`` (png, jpg, bmp, tif). Each pair goes
through the same FusionPipeline as the ROS node (visible Y/255 and 8-bit infrared/255 in, the
network at the image's own size unless --size is given, fused Y + visible chroma out) and is
written as ``--out DIR/<stem>.png``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
import sys

import cv2
from tqdm import tqdm

from occo_ros.engines import BACKENDS, EngineSpec, create_engine
from occo_ros.engines.base import EngineError
from occo_ros.image_pairs import ImageReadError, find_pairs, read_gray, read_rgb
from occo_ros.pipeline import FusionPipeline
from occo_ros.registration import Registration
from occo_ros.resources import default_model_path
from occo_ros.thermal import ThermalNormalizer


def parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split('x'))
    except ValueError:
        raise argparse.ArgumentTypeError(f'--size expects WIDTHxHEIGHT, e.g. 640x480, '
                                         f'got {text!r}') from None
    if width < 8 or height < 8:
        raise argparse.ArgumentTypeError(f'--size {text}: the network needs at least 8x8')
    return width, height


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog='occo-fuse', description=__doc__.split('\n\n')[0].split(': ', 1)[1],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--ir', required=True, type=Path,
                        help='folder of infrared images (8-bit, 1 or 3 channels)')
    parser.add_argument('--vi', required=True, type=Path,
                        help='folder of visible RGB images with the same stems')
    parser.add_argument('--out', required=True, type=Path,
                        help='output folder for the fused colour PNGs (created)')
    parser.add_argument('--model', default=str(default_model_path()),
                        help='model: FIFN checkpoint (.pt), ONNX (.onnx) or TensorRT engine')
    parser.add_argument('--backend', default='auto', choices=BACKENDS,
                        help='inference backend')
    parser.add_argument('--device', default='auto', help='auto, cpu, cuda or cuda:N')
    parser.add_argument('--size', type=parse_size, default=None,
                        help='run the network at WIDTHxHEIGHT and resize back (default: each '
                        "image's own size)")
    parser.add_argument('--gray', action='store_true',
                        help='write the fused luminance only (8-bit gray) instead of colour')
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        scan = find_pairs(args.ir, args.vi)
    except (OSError, ValueError) as exc:
        print(f'occo-fuse: {exc}', file=sys.stderr)
        return 2
    for path in scan.unpaired:
        print(f'occo-fuse: no partner for {path}, skipped', file=sys.stderr)
    if not scan.pairs:
        print(f'occo-fuse: no image pairs in {args.ir} and {args.vi}', file=sys.stderr)
        return 1
    try:
        engine = create_engine(EngineSpec(
            backend=args.backend, model_path=args.model, device=args.device,
            input_size=args.size[::-1] if args.size else None))
    except (EngineError, ValueError, OSError) as exc:
        print(f'occo-fuse: cannot load the model: {exc}', file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    # 8-bit infrared is scaled /255, exactly as in training (fixed range 0..255).
    normalizer = ThermalNormalizer('fixed', lo=0.0, hi=255.0)
    failed = 0
    for pair in tqdm(scan.pairs, desc='occo-fuse', unit='pair'):
        try:
            ir, vi = read_gray(pair.ir_path), read_rgb(pair.vi_path)
        except (OSError, ImageReadError) as exc:
            tqdm.write(f'occo-fuse: {exc}; skipped', file=sys.stderr)
            failed += 1
            continue
        if ir.shape != vi.shape[:2]:
            tqdm.write(f'occo-fuse: {pair.ir_path} is {ir.shape[1]}x{ir.shape[0]} but '
                       f'{pair.vi_path} is {vi.shape[1]}x{vi.shape[0]}; pairs must be '
                       'registered images of one size; skipped', file=sys.stderr)
            failed += 1
            continue
        size = (ir.shape[1], ir.shape[0])
        pipeline = FusionPipeline(engine, Registration(output_size=size), normalizer,
                                  args.size or size, size)
        frame = pipeline.fuse(ir, vi, 'rgb')
        pixels = frame.in_encoding('mono8') if args.gray else frame.in_encoding('bgr8')
        cv2.imwrite(str(args.out / f'{pair.stem}.png'), pixels)
    done = len(scan.pairs) - failed
    print(f'occo-fuse: fused {done} of {len(scan.pairs)} pairs into {args.out}'
          + (f' ({failed} skipped)' if failed else ''))
    return 0 if done else 1


if __name__ == '__main__':
    sys.exit(main())
