"""occo-build-engine: build (or validate) the cached TensorRT engine ahead of the first run.

The first build takes minutes on a Jetson; run this once after installing or upgrading
JetPack so the fusion node starts in seconds. It uses the same cache key and folder as the
node (engines/engine_cache.py), so the node then loads the engine without rebuilding.
INT8 needs calibration pairs once (--calibration-dir); their scale cache is kept beside the
engine and reused by later builds.
"""

from __future__ import annotations

import argparse
from pathlib import Path
import shutil
import sys

from occo_ros.engines.base import EngineError
from occo_ros.engines.engine_cache import PRECISIONS, default_cache_dir, sidecar_path
from occo_ros.resources import DEFAULT_MODEL, default_model_path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='occo-build-engine',
        description='Build the TensorRT engine for an OCCO FIFN model into the engine cache '
                    '(or check that the cached one is valid) and exit.')
    parser.add_argument(
        '--model', type=Path, default=None,
        help='FIFN checkpoint (.pt, exported to ONNX opset 17 first) or ONNX file from '
             f'occo-export; default: the shipped models/{DEFAULT_MODEL}')
    parser.add_argument('--precision', choices=PRECISIONS, default='fp16',
                        help='engine precision (default %(default)s); the attention context '
                             'stays FP32 in fp16/int8 engines')
    parser.add_argument('--height', type=int,
                        help='input height H in pixels (required for .pt and dynamic ONNX)')
    parser.add_argument('--width', type=int,
                        help='input width W in pixels (required for .pt and dynamic ONNX)')
    parser.add_argument('--device', default='auto',
                        help="GPU: 'auto', 'cuda' or 'cuda:N' (default %(default)s)")
    parser.add_argument('--dla-core', type=int, default=None,
                        help='build for this DLA core (Jetson Orin/Xavier; fp16 or int8)')
    parser.add_argument('--calibration-dir', type=Path, default=None,
                        help='INT8 calibration pairs: a folder with vi/ and ir/ images of the '
                             'same names (e.g. ../shared/data/train/msrs)')
    parser.add_argument('--workspace-mb', type=int, default=1024,
                        help='TensorRT builder workspace in MiB (default %(default)s)')
    parser.add_argument('--cache-dir', type=Path, default=None,
                        help=f'engine cache folder (default $OCCO_ROS_CACHE or '
                             f'{default_cache_dir()})')
    parser.add_argument('--force-rebuild', action='store_true',
                        help='rebuild even when a valid cached engine exists')
    parser.add_argument('--out', type=Path, default=None,
                        help='also copy the engine (and its .json sidecar) to this file')
    return parser


def _input_size(args: argparse.Namespace, parser: argparse.ArgumentParser) -> tuple | None:
    if (args.height is None) != (args.width is None):
        parser.error('--height and --width must be given together')
    if args.height is None:
        return None
    if min(args.height, args.width) < 8:
        parser.error(f'--height/--width must be >= 8, got {args.height}x{args.width}')
    return args.height, args.width


def main(argv: list[str] | None = None) -> int:
    """occo-build-engine entry point; 0 on success, 1 when the engine cannot be built."""
    parser = build_parser()
    args = parser.parse_args(argv)
    input_size = _input_size(args, parser)
    model = args.model or default_model_path()
    device = f'dla:{args.dla_core}' if args.dla_core is not None else args.device

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        from occo_ros.engines import tensorrt_engine

        tensorrt_engine.import_tensorrt()  # before a slow ONNX export
        tensorrt_engine.import_pycuda_driver()
        if not model.is_file():
            raise EngineError(f'model not found: {model} (pass --model PATH)')
        if model.suffix == '.pt':
            if input_size is None:
                raise EngineError('a .pt model needs --height and --width')
            from occo_ros.export import cached_onnx

            onnx_path = cached_onnx(model, args.cache_dir, input_size, log=log)
        elif model.suffix == '.onnx':
            from occo_ros.engines import onnx_input_size

            onnx_path = model
            input_size = input_size or onnx_input_size(model)
            if input_size is None:
                raise EngineError(f'{model.name} is a dynamic ONNX model: give --height/--width')
        else:
            raise EngineError(f'--model must be a .pt or .onnx file, got {model.name}')
        _, result = tensorrt_engine.load_or_build(
            onnx_path, input_size, args.precision, device, args.cache_dir, build_only=True,
            force_rebuild=args.force_rebuild, calibration_dir=args.calibration_dir,
            workspace_mb=args.workspace_mb, log=log, model_path=str(model))
    except EngineError as exc:
        print(f'occo-build-engine: {exc}', file=sys.stderr)
        return 1
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(result.engine_path, args.out)
        shutil.copyfile(sidecar_path(result.engine_path), sidecar_path(args.out))
    log(f'{result.action} {result.engine_path} ({result.precision_used}; {result.reason})')
    print(args.out or result.engine_path)
    return 0


if __name__ == '__main__':
    sys.exit(main())
