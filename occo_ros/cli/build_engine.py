"""occo-build-engine: build (or validate) the cached TensorRT engine ahead of the first run.

The first build takes minutes on a Jetson; run this once after installing or upgrading
JetPack so the fusion node starts in seconds. It goes through the node's own factory
(create_engine with backend tensorrt: same cache key and folder), so the node then loads
the engine without rebuilding. INT8 needs calibration pairs once (--calibration-dir); their
scale cache, keyed by the calibration data, is kept beside the engine and reused.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
import shutil
import sys

from occo_ros.engines import EngineSpec, create_engine
from occo_ros.engines.base import EngineError
from occo_ros.engines.tensorrt.cache import sidecar_path
from occo_ros.params import load_params_file

#: The engine options this tool takes (node parameter names, see occo_ros.params).
OPTIONS = ('model_path', 'precision', 'input_height', 'input_width', 'device',
           'calibration_dir', 'workspace_mb', 'engine_cache_dir', 'force_rebuild')
DEFAULTS = EngineSpec(backend='tensorrt', precision='fp16')
_LOG = logging.getLogger('occo_ros.cli.build_engine')


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='occo-build-engine',
        description='Build the TensorRT engine for an OCCO FIFN model into the engine cache '
                    '(or check that the cached one is valid) and exit. A .pt model is exported '
                    'to ONNX first; .pt and dynamic ONNX models need --height and --width.')
    parser.add_argument('--params-file', type=Path, default=None,
                        help="the node's parameter YAML (e.g. config/fusion.yaml): engine, "
                             'input size and thermal parameters come from it, so the engine '
                             'and its INT8 calibration match what the node runs; options '
                             'below override it')
    EngineSpec.add_arguments(parser, OPTIONS, {'precision': DEFAULTS.precision})
    parser.add_argument('--dla-core', type=int, default=None,
                        help='build for this DLA core (Jetson Orin/Xavier; fp16 or int8; '
                             'same as --device dla:K)')
    parser.add_argument('--out', type=Path, default=None,
                        help='also copy the engine (and its .json sidecar) to this file')
    return parser


def main(argv: list[str] | None = None) -> int:
    """occo-build-engine entry point; 0 on success, 1 when the engine cannot be built."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.dla_core is not None:
        args.device = f'dla:{args.dla_core}'
    if not _LOG.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter('%(message)s'))
        _LOG.addHandler(handler)
        _LOG.setLevel(logging.INFO)
    try:
        base = DEFAULTS
        if args.params_file is not None:
            values = {'precision': DEFAULTS.precision, **load_params_file(args.params_file)}
            base = EngineSpec.from_params(values, backend='tensorrt')
        spec = EngineSpec.from_args(args, base)
    except (EngineError, ValueError, OSError) as exc:
        parser.error(str(exc))
    try:
        engine = create_engine(spec, _LOG)
    except EngineError as exc:
        print(f'occo-build-engine: {exc}', file=sys.stderr)
        return 1
    info = engine.info
    engine.close()
    engine_path = Path(info.details['engine_path'])
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(engine_path, args.out)
        shutil.copyfile(sidecar_path(engine_path), sidecar_path(args.out))
    _LOG.info(f'{info.details.get("cache")} {engine_path} ({info.precision}; '
              f'{info.details.get("cache_reason")})')
    print(args.out or engine_path)
    return 0


if __name__ == '__main__':
    sys.exit(main())
