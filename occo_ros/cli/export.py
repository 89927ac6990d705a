"""``occo-export``: export an OCCO FIFN checkpoint to ONNX (occo_ros.model.onnx_export)."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
import sys

from occo_ros.model.onnx_export import (
    DEFAULT_OPSET,
    SUPPORTED_OPSETS,
    ExportError,
    export_onnx,
)
from occo_ros.params import add_param_option
from occo_ros.util.output_safety import OutputError, check_file_output
from occo_ros.util.resources import DEFAULT_MODEL, default_model_path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='occo-export',
        description='Export an OCCO FIFN checkpoint to ONNX (inputs visible_y, infrared; '
                    'output fused_y; float32 NCHW in [0, 1]; clamp inside the graph).',
        epilog='Exit status: 0 written; 1 the checkpoint is missing or the export failed '
        '(nothing written); 2 bad arguments, or an --out that is the checkpoint, a folder, '
        'or an existing file without --overwrite.')
    parser.add_argument(
        '--model', type=Path, default=None,
        help=f'FIFN checkpoint (.pt); default: the shipped models/{DEFAULT_MODEL}')
    parser.add_argument('--out', type=Path, required=True,
                        help='ONNX file to write (atomically; must not exist unless --overwrite)')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace an existing --out file (only once the new one is complete)')
    for name in ('input_height', 'input_width'):   # a fixed shape: both, or --dynamic
        add_param_option(parser, name, shown='none (give both, or --dynamic)')
    parser.add_argument('--dynamic', action='store_true',
                        help='dynamic batch, height and width instead of '
                             '--input-height/--input-width')
    parser.add_argument(
        '--opset', type=int, choices=SUPPORTED_OPSETS, default=DEFAULT_OPSET,
        help='ONNX opset: 17 for TensorRT 8.6 / JetPack 6.0 (TorchScript exporter), 18 for '
             'TensorRT 10 (dynamo exporter); default %(default)s')
    parser.add_argument('--no-verify', action='store_true',
                        help='skip the ONNX Runtime vs PyTorch comparison after export')
    return parser


def main(argv: list[str] | None = None) -> int:
    """occo-export entry point; returns the process exit status (see --help)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.dynamic == (args.input_height is not None or args.input_width is not None):
        parser.error('give either --input-height and --input-width (fixed shape) or --dynamic')
    if not args.dynamic and (args.input_height is None or args.input_width is None):
        parser.error('--input-height and --input-width must be given together')
    model = args.model or default_model_path()
    if not model.is_file():
        print(f'occo-export: checkpoint not found: {model} (pass --model PATH)',
              file=sys.stderr)
        return 1
    try:
        check_file_output(args.out, args.overwrite, [model])
    except OutputError as exc:
        print(f'occo-export: {exc}', file=sys.stderr)
        return 2
    size = None if args.dynamic else (args.input_height, args.input_width)
    try:
        with contextlib.redirect_stdout(sys.stderr):  # torch's exporter chatter
            export_onnx(model, args.out, size, args.opset, verify=not args.no_verify,
                        log=lambda line: print(line, file=sys.stderr))
    except ExportError as exc:
        print(f'occo-export: {exc}', file=sys.stderr)
        return 1
    print(args.out)
    return 0


if __name__ == '__main__':
    sys.exit(main())
