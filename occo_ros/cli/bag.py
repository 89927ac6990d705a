"""``occo-bag``: fuse the thermal and RGB images of a recorded rosbag2 bag into a new bag
(the work is occo_ros.offline.bag_fusion; this module is its command line)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
import signal
import sys
import threading
from typing import Any

from tqdm import tqdm

from occo_ros.engines import EngineError, EngineSpec
from occo_ros.io.bags import STORAGES, BagError
from occo_ros.offline import bag_fusion
from occo_ros.offline.bag_fusion import BagTopics, Interrupted, fuse_bag
from occo_ros.params import add_param_option, build_params, load_params_file
from occo_ros.util.output_safety import OutputError

_LOG = logging.getLogger('occo_ros.cli.bag')

# Node parameters that mean something offline get a command line option of the same name.
CLI_PARAMS = (
    'slop', 'queue_size', 'model_path', 'backend', 'device', 'precision', 'num_threads',
    'engine_cache_dir', 'force_rebuild', 'input_width', 'input_height', 'output_width',
    'output_height', 'homography', 'crop', 'calibration_file', 'thermal_mode', 'thermal_min',
    'thermal_max', 'thermal_percentiles', 'thermal_smoothing', 'output_encoding')
# Topics come from the command line; these parameters hold the node's relative names.
TOPIC_PARAMS = ('thermal_topic', 'rgb_topic', 'rgb_compressed', 'rgb_camera_info_topic')
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_DAMAGED_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='occo-bag', description=bag_fusion.__doc__.split('\n\n')[0].split(': ', 1)[1],
        epilog='Parameters: node defaults < --params-file < options. A message or pair that '
        'cannot be fused is skipped, counted and named in the summary. Exit status: 0 done; '
        '1 failed (nothing written); 2 bad arguments, or an output that overlaps the input, '
        'exists without --overwrite or is not a bag occo-bag wrote; 3 the input bag is '
        'damaged (truncated): the output holds the pairs read before the damage; 130 '
        'interrupted (nothing written).')
    parser.add_argument('input', type=Path, metavar='INPUT_BAG',
                        help='rosbag2 bag directory, or a single .mcap/.db3 file (read only)')
    parser.add_argument('output', type=Path, metavar='OUTPUT_BAG',
                        help='rosbag2 bag directory to create (appears only when complete)')
    topics = parser.add_argument_group('topics')
    topics.add_argument('--thermal-topic', required=True,
                        help='thermal image topic in the bag (sensor_msgs/Image, e.g. mono16)')
    topics.add_argument('--rgb-topic', required=True,
                        help='RGB image topic in the bag (sensor_msgs/Image, or '
                        'CompressedImage such as /rgb/image_raw/compressed)')
    topics.add_argument('--rgb-camera-info-topic', default=None,
                        help='RGB camera_info topic (default: camera_info beside the RGB '
                        'topic, e.g. /rgb/camera_info); when present fused camera_info is '
                        'written')
    topics.add_argument('--output-topic', default='/fused/image',
                        help='fused image topic; fused camera_info goes beside it')
    output = parser.add_argument_group('output')
    output.add_argument('--storage', choices=list(STORAGES), default='mcap',
                        help='storage format of the output bag')
    output.add_argument('--copy-inputs', action='store_true',
                        help='also copy the thermal and RGB topics and their camera_info '
                        'topics into the output bag')
    output.add_argument('--overwrite', action='store_true',
                        help='replace OUTPUT_BAG if it exists (only a bag occo-bag wrote: '
                        'a directory holding anything else is refused; replaced only once the '
                        'new bag is complete)')
    output.add_argument('--no-progress', action='store_true', help='no progress bar')
    node = parser.add_argument_group('fusion node parameters')
    node.add_argument('--params-file', type=Path, default=None,
                      help='node parameter YAML (e.g. config/fusion.yaml, /** or occo_fusion '
                      'sections); topic and QoS parameters in it are not used')
    for name in CLI_PARAMS:
        add_param_option(node, name)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``occo-bag``; returns the exit status (see --help)."""
    args = build_parser().parse_args(argv)

    def warn(message: str) -> None:
        tqdm.write(f'occo-bag: {message}', file=sys.stderr)

    try:
        file_values = load_params_file(args.params_file, warn) if args.params_file else {}
        for name in TOPIC_PARAMS:
            if name in file_values:
                warn(f'{args.params_file} sets {name}; occo-bag takes topics from the '
                     'command line')
        overrides = {name: getattr(args, name) for name in CLI_PARAMS
                     if getattr(args, name) is not None}
        settings = build_params(file_values, overrides)   # validates every row
        engine = EngineSpec.from_params({**file_values, **overrides})
        topics = BagTopics(args.thermal_topic, args.rgb_topic, args.output_topic,
                           args.rgb_camera_info_topic)
    except (OSError, ValueError, EngineError) as exc:   # EngineError: e.g. a bad device
        print(f'occo-bag: {exc}', file=sys.stderr)
        return EXIT_USAGE
    stop = threading.Event()

    def request_stop(signum: int, frame: Any) -> None:
        # Only a flag: an exception raised here could land in (and be swallowed by) any
        # finaliser. A second Ctrl-C/SIGTERM stops at once, e.g. during an engine build.
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        warn('stopping at the next message (again to stop at once)')

    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)} \
        if in_main_thread else {}
    try:
        summary = fuse_bag(args.input, args.output, settings, topics, engine=engine,
                           storage=args.storage, copy_inputs=args.copy_inputs,
                           overwrite=args.overwrite, progress=not args.no_progress, log=warn,
                           stop=stop)
    except OutputError as exc:
        print(f'occo-bag: {exc}', file=sys.stderr)
        return EXIT_USAGE
    except (BagError, EngineError, ValueError, OSError) as exc:
        print(f'occo-bag: {exc}; nothing written', file=sys.stderr)
        return EXIT_FAILED
    except (Interrupted, KeyboardInterrupt):
        print('occo-bag: interrupted; nothing written', file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    print(summary.report())
    return EXIT_DAMAGED_INPUT if summary.damage else EXIT_OK


if __name__ == '__main__':
    sys.exit(main())
