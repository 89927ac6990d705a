"""``occo-fuse``: fuse a folder of registered infrared/visible image pairs to colour PNGs.

Pairs are ``--ir DIR/<stem>.*`` + ``--vi DIR/<stem>.*`` (png, jpg, bmp, tif). Each pair goes
through the ROS node's frame step, FusionPipeline.fuse_frame (visible Y/255 and 8-bit
infrared/255 in, the network at the image's own size unless --size is given, fused Y +
visible chroma out) and is written as ``--out DIR/<stem>.png``.

A pair that cannot be fused (unreadable file, sizes that differ, an image the network cannot
take) is skipped with a one-line reason; the other pairs are fused, and a summary follows.
The output folder must be apart from the inputs and new or empty; ``--overwrite`` replaces
only the files an earlier occo-fuse run wrote there (occo_ros.util.output_safety).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
import sys

import cv2
import numpy as np
from tqdm import tqdm

from occo_ros.core.codec import DecodedImage
from occo_ros.engines import EngineSpec, create_engine
from occo_ros.engines.base import EngineError
from occo_ros.io.image_pairs import (
    MAX_INPUT_PIXELS,
    ImagePair,
    ImageReadError,
    find_pairs,
    read_gray,
    read_rgb,
)
from occo_ros.params import DefaultsHelpFormatter
from occo_ros.pipeline import FusionPipeline, image_pair_pipeline
from occo_ros.util.atomic_file import atomic_write_bytes
from occo_ros.util.output_safety import OutputError, check_folder_output, prepare_output_folder
from occo_ros.util.resources import default_model_path

TOOL = 'occo-fuse'
EXIT_OK, EXIT_PAIRS_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_CODES = ('Exit status: 0 every pair fused; 1 one or more pairs skipped (the others are '
              'fused) or no pairs found; 2 bad arguments, an unusable model, or an output that '
              'overlaps an input, exists without --overwrite or holds files occo-fuse did not '
              'write; 130 interrupted (the pairs fused so far are kept).')


#: The engine options occo-fuse takes (node parameter names, see occo_ros.params).
ENGINE_OPTIONS = ('model_path', 'backend', 'device', 'precision', 'num_threads',
                  'engine_cache_dir')


class PairError(Exception):
    """A pair that cannot be fused; the message says why."""


def parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split('x'))
    except ValueError:
        raise argparse.ArgumentTypeError(f'--size expects WIDTHxHEIGHT, e.g. 640x480, '
                                         f'got {text!r}') from None
    if width < 8 or height < 8:
        raise argparse.ArgumentTypeError(f'--size {text}: the network needs at least 8x8')
    return width, height


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, EngineSpec]:
    """The options and the engine they ask for (input size: --size's, else None); bad
    arguments exit with status 2."""
    parser = argparse.ArgumentParser(
        prog='occo-fuse', description=__doc__.split('\n\n')[0].split(': ', 1)[1],
        formatter_class=DefaultsHelpFormatter, epilog=EXIT_CODES)
    parser.add_argument('--ir', required=True, type=Path,
                        help='folder of infrared images (8-bit, 1 or 3 channels)')
    parser.add_argument('--vi', required=True, type=Path,
                        help='folder of visible RGB images with the same stems')
    parser.add_argument('--out', required=True, type=Path,
                        help='output folder for the fused colour PNGs <stem>.png (created; '
                        'must be apart from the inputs and new or empty)')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace what an earlier occo-fuse run wrote in --out (only its '
                        'own files: a folder holding anything else is refused)')
    EngineSpec.add_arguments(parser, ENGINE_OPTIONS)
    parser.add_argument('--size', type=parse_size, default=None,
                        help='run the network at WIDTHxHEIGHT and resize back (default: each '
                        "image's own size)")
    parser.add_argument('--gray', action='store_true',
                        help='write the fused luminance only (8-bit gray) instead of colour')
    parser.add_argument('--max-input-pixels', type=int, default=MAX_INPUT_PIXELS,
                        help='skip a pair whose PNG/JPEG/TIFF header says more pixels '
                        '(width x height) than this, before decoding it (the node parameter '
                        'max_input_pixels)')
    args = parser.parse_args(argv)
    try:
        return args, EngineSpec.from_args(
            args, EngineSpec(input_size=args.size[::-1] if args.size else None))
    except EngineError as exc:
        parser.error(str(exc))


def fuse_pair(pipeline_for: Callable[[tuple[int, int]], FusionPipeline], pair: ImagePair,
              gray: bool, max_pixels: int = MAX_INPUT_PIXELS) -> np.ndarray:
    """The fused pixels (BGR, or gray with ``gray``) of one pair by the node's frame step;
    raises PairError naming why the pair cannot be fused (an image above ``max_pixels``
    before it is decoded)."""
    try:
        ir, vi = read_gray(pair.ir_path, max_pixels), read_rgb(pair.vi_path, max_pixels)
    except (OSError, ImageReadError) as exc:
        raise PairError(str(exc)) from None
    if ir.shape != vi.shape[:2]:
        raise PairError(f'{pair.ir_path} is {ir.shape[1]}x{ir.shape[0]} but {pair.vi_path} is '
                        f'{vi.shape[1]}x{vi.shape[0]}; pairs must be registered images of one '
                        'size')
    result = pipeline_for((ir.shape[1], ir.shape[0])).fuse_frame(
        ir, DecodedImage(vi, 'rgb'), encoding='mono8' if gray else 'bgr8')
    if not result.ok:
        raise PairError(f'{ir.shape[1]}x{ir.shape[0]} images: {result.problems[0].message}')
    return result.pixels


def _write_png(path: Path, pixels: np.ndarray) -> None:
    ok, data = cv2.imencode('.png', pixels)
    if not ok:
        raise OSError(f'cannot encode {path}')
    atomic_write_bytes(path, data.tobytes())  # never a half-written PNG


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``occo-fuse``; returns the exit status (see --help)."""
    args, spec = parse_args(argv)
    try:
        scan = find_pairs(args.ir, args.vi)
        inputs = [args.ir, args.vi, Path(spec.model_path or default_model_path())]
        check_folder_output(args.out, TOOL, args.overwrite, inputs)  # before the slow load
    except (OSError, ValueError, OutputError) as exc:
        print(f'{TOOL}: {exc}', file=sys.stderr)
        return EXIT_USAGE
    for path in scan.unpaired:
        print(f'{TOOL}: no partner for {path}, skipped', file=sys.stderr)
    if not scan.pairs:
        print(f'{TOOL}: no image pairs in {args.ir} and {args.vi}', file=sys.stderr)
        return EXIT_PAIRS_FAILED
    try:
        engine = create_engine(spec)
    except (EngineError, ValueError, OSError) as exc:
        print(f'{TOOL}: cannot load the model: {exc}', file=sys.stderr)
        return EXIT_USAGE
    try:
        prepare_output_folder(args.out, TOOL, [f'{pair.stem}.png' for pair in scan.pairs],
                              args.overwrite, inputs)
    except (OSError, OutputError) as exc:
        print(f'{TOOL}: {exc}', file=sys.stderr)
        return EXIT_USAGE

    def pipeline_for(size: tuple[int, int]) -> FusionPipeline:
        return image_pair_pipeline(engine, size, args.size)

    skipped: list[str] = []
    done = 0
    try:
        for pair in tqdm(scan.pairs, desc=TOOL, unit='pair'):
            try:
                _write_png(args.out / f'{pair.stem}.png',
                           fuse_pair(pipeline_for, pair, args.gray, args.max_input_pixels))
                done += 1
            except (PairError, OSError) as exc:
                tqdm.write(f'{TOOL}: skipped {pair.stem}: {exc}', file=sys.stderr)
                skipped.append(pair.stem)
    except KeyboardInterrupt:
        print(f'{TOOL}: interrupted; {done} fused pairs are in {args.out}', file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        engine.close()
    print(f'{TOOL}: fused {done} of {len(scan.pairs)} pairs into {args.out}'
          + (f'; skipped {len(skipped)}: {", ".join(skipped)}' if skipped else ''))
    return EXIT_PAIRS_FAILED if skipped else EXIT_OK


if __name__ == '__main__':
    sys.exit(main())
