"""``occo-calibrate``: find the thermal -> RGB homography of a camera pair and write the
calibration file the fusion node and occo-bag load (parameter ``calibration_file``).

Input: a folder with ``ir/`` and ``vi/`` images paired by file name, or a rosbag2 bag (the
thermal and RGB topics, paired by stamp as the node pairs them; camera_info beside each
topic supplies lens distortion, and the images are undistorted before calibrating).
Methods (occo_ros.calibration.methods): ``points`` (corresponding points from a file, or
clicked in a
window), ``target`` (a checkerboard or circle grid visible in both cameras) and ``edges``
(edge-alignment refinement on ordinary scenes, from --init or the identity).

Output: the YAML (occo_ros.calibration.file), and in the report folder (default: beside the
YAML, ``<name>_report/``) per pair ``overlay_<pair>.png`` (RGB with thermal edges in red,
before | after) and ``blend_<pair>.png`` (checkerboard of RGB and warped thermal tiles).
Existing outputs are replaced only with --overwrite, and only what occo-calibrate wrote.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
import os
from pathlib import Path
import sys
import time
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from occo_ros.calibration import edges
from occo_ros.calibration import methods as calibrate
from occo_ros.calibration.file import (
    Calibration,
    CalibrationError,
    load_calibration,
    save_calibration,
)
from occo_ros.core import codec
from occo_ros.core.registration import CameraModel, Registration
from occo_ros.io.image_pairs import find_pairs, read_gray, read_rgb
from occo_ros.util.output_safety import (
    OutputError,
    check_file_output,
    prepare_output_folder,
)

TOOL = 'occo-calibrate'
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
_TILE = 40  # checkerboard blend tile, pixels


class Inputs:
    """Pairs (name, thermal, RGB as RGB uint8) and the camera models found with them."""

    def __init__(self, pairs: list[tuple[str, np.ndarray, np.ndarray]],
                 thermal_camera: CameraModel | None = None,
                 rgb_camera: CameraModel | None = None) -> None:
        if not pairs:
            raise CalibrationError('no image pairs found in the input')
        self.pairs = pairs
        self.thermal_camera = thermal_camera
        self.rgb_camera = rgb_camera

    def undistorted(self) -> list[tuple[str, np.ndarray, np.ndarray]]:
        """The pairs with lens distortion removed (same K), as the node will see them."""
        out = []
        for name, thermal, rgb in self.pairs:
            if self.thermal_camera is not None:
                thermal = Registration(output_size=_size(thermal),
                                       thermal_camera=self.thermal_camera).warp_thermal(thermal)
            if self.rgb_camera is not None:
                rgb = Registration(output_size=_size(rgb),
                                   rgb_camera=self.rgb_camera).crop_rgb(rgb)
            out.append((name, thermal, rgb))
        return out


def read_folder(folder: Path, max_pairs: int) -> Inputs:
    scan = find_pairs(folder / 'ir', folder / 'vi')
    pairs = _spread(scan.pairs, max_pairs)
    return Inputs([(p.stem, read_gray(p.ir_path), read_rgb(p.vi_path)) for p in pairs])


def read_bag(path: Path, thermal_topic: str, rgb_topic: str, max_pairs: int,
             slop: float) -> Inputs:
    """Up to ``max_pairs`` stamp-paired images spread over the bag, and the cameras'
    distortion from the first camera_info beside each topic (when any D is non-zero). Pairs
    form by the node's stream step (arrival checks, then pairing with ``slop`` and the node's
    queue size); a message the node would refuse is skipped."""
    from occo_ros.core.pairing import stamp_ns
    from occo_ros.core.stream import StreamStep
    from occo_ros.io.bags import COMPRESSED_IMAGE, InputBag
    from occo_ros.offline.bag_fusion import absolute_topic, camera_info_beside
    from occo_ros.params import build_params

    thermal_topic, rgb_topic = absolute_topic(thermal_topic), absolute_topic(rgb_topic)
    infos = {camera_info_beside(thermal_topic): 'thermal', camera_info_beside(rgb_topic): 'rgb'}
    cameras: dict[str, CameraModel | None] = {'thermal': None, 'rgb': None}
    with InputBag(path) as bag:
        missing = [t for t in (thermal_topic, rgb_topic) if t not in bag.topics]
        if missing:
            raise CalibrationError(f'bag {path} has no topic {", ".join(missing)}; it has '
                                   f'{", ".join(sorted(bag.topics))}')
        expected = min(bag.topics[thermal_topic].count, bag.topics[rgb_topic].count)
        every = max(1, expected // max(1, max_pairs))
        step = StreamStep(build_params({}, {'slop': slop}))
        pairs: list[tuple[str, np.ndarray, np.ndarray]] = []
        formed = 0
        wanted = [thermal_topic, rgb_topic] + [t for t in infos if t in bag.topics]
        for topic, _, raw in bag.messages(wanted):
            msg = bag.deserialize(topic, raw)
            if topic in infos:
                if cameras[infos[topic]] is None and any(msg.d):
                    cameras[infos[topic]] = CameraModel.checked(
                        msg.k, msg.d, msg.distortion_model, (msg.width, msg.height))
                continue
            _, pair = step.add('thermal' if topic == thermal_topic else 'rgb',
                               stamp_ns(msg.header), msg)
            if pair is None:
                continue
            formed += 1
            if (formed - 1) % every or len(pairs) >= max_pairs:
                continue
            thermal, _ = codec.decode_image(pair.thermal)
            if bag.topics[rgb_topic].msgtype == COMPRESSED_IMAGE:
                rgb, order = codec.decode_compressed(pair.rgb.format, pair.rgb.data)
            else:
                rgb, order = codec.decode_image(pair.rgb)
            pairs.append((f'{pair.rgb_stamp_ns}', np.array(thermal), _as_rgb(rgb, order)))
    return Inputs(pairs, cameras['thermal'], cameras['rgb'])


def read_points(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A points file: one correspondence per line, ``thermal_x thermal_y rgb_x rgb_y``
    (OpenCV pixel coordinates; commas or spaces; '#' starts a comment)."""
    rows = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.split('#', 1)[0].replace(',', ' ').strip()
        if not line:
            continue
        try:
            values = [float(v) for v in line.split()]
        except ValueError:
            values = []
        if len(values) != 4 or not np.isfinite(values).all():
            raise CalibrationError(f'points file {path} line {number}: expected 4 numbers '
                                   f'(thermal_x thermal_y rgb_x rgb_y), got {line!r}')
        rows.append(values)
    points = np.array(rows, dtype=np.float64).reshape(-1, 4)
    return points[:, :2], points[:, 2:]


def pick_points(thermal: np.ndarray, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Click a thermal point, then the same point in the RGB image, as often as wanted
    (u: undo, Enter or q: done). Needs a display."""
    if not (os.environ.get('DISPLAY') or os.environ.get('WAYLAND_DISPLAY')):
        raise CalibrationError('--pick needs a display (DISPLAY is not set); use --points FILE')
    left = cv2.cvtColor((calibrate.to_gray_float(thermal) * 255).astype(np.uint8),
                        cv2.COLOR_GRAY2BGR)
    right = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    height = max(left.shape[0], right.shape[0])
    canvas = np.zeros((height, left.shape[1] + right.shape[1], 3), np.uint8)
    clicks: list[tuple[float, float]] = []

    def on_mouse(event: int, x: int, y: int, *_: Any) -> None:
        if event == cv2.EVENT_LBUTTONDOWN:
            in_thermal = len(clicks) % 2 == 0
            if in_thermal == (x < left.shape[1]):
                clicks.append((x, y) if in_thermal else (x - left.shape[1], y))

    window = 'occo-calibrate: click thermal point, then RGB point (u undo, Enter done)'
    cv2.namedWindow(window, cv2.WINDOW_NORMAL)
    cv2.setMouseCallback(window, on_mouse)
    while True:
        canvas[:left.shape[0], :left.shape[1]] = left
        canvas[:right.shape[0], left.shape[1]:] = right
        for i, (x, y) in enumerate(clicks):
            offset = 0 if i % 2 == 0 else left.shape[1]
            cv2.circle(canvas, (int(x) + offset, int(y)), 4, (0, 0, 255), 1)
            cv2.putText(canvas, str(i // 2), (int(x) + offset + 5, int(y) - 5),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 255, 255), 1)
        cv2.imshow(window, canvas)
        key = cv2.waitKey(30) & 0xFF
        if key == ord('u') and clicks:
            clicks.pop()
        elif key in (13, 10, ord('q')):
            break
    cv2.destroyWindow(window)
    points = np.array(clicks[:len(clicks) // 2 * 2], dtype=np.float64).reshape(-1, 2, 2)
    return points[:, 0], points[:, 1]


# -- report images ---------------------------------------------------------------------------
def overlay(thermal: np.ndarray, rgb: np.ndarray, h_px: np.ndarray) -> np.ndarray:
    """RGB (dimmed gray) with the thermal image's edges, mapped by ``h_px``, in red (BGR)."""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) // 2
    out = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    thermal_edges = edges.strong_edges(thermal).astype(np.uint8) * 255
    warped = cv2.warpPerspective(thermal_edges, h_px, _size(rgb), flags=cv2.INTER_NEAREST)
    rgb_edges = edges.strong_edges(rgb)
    out[rgb_edges] = (255, 255, 0)
    out[warped > 0] = (0, 0, 255)
    return out


def blend(thermal: np.ndarray, rgb: np.ndarray, h_px: np.ndarray) -> np.ndarray:
    """Checkerboard of RGB tiles and warped thermal tiles (inferno colours), BGR."""
    gray = (calibrate.to_gray_float(thermal) * 255).astype(np.uint8)
    warped = cv2.applyColorMap(cv2.warpPerspective(gray, h_px, _size(rgb)), cv2.COLORMAP_INFERNO)
    out = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    rows, cols = np.indices(rgb.shape[:2])
    tiles = ((rows // _TILE + cols // _TILE) % 2).astype(bool)
    out[tiles] = warped[tiles]
    return out


def _labelled(image: np.ndarray, text: str) -> np.ndarray:
    image = image.copy()
    cv2.putText(image, text, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 2)
    return image


def write_report(folder: Path, pairs: Iterable[tuple[str, np.ndarray, np.ndarray]],
                 before: np.ndarray, after: np.ndarray, result: calibrate.MethodResult) -> None:
    errors = {p.name: p for p in result.pairs}
    for name, thermal, rgb in pairs:
        pair = errors.get(name)
        after_text = 'after' + (f': {pair.error_px:.2f} px' if pair and np.isfinite(
            pair.error_px) else '')
        before_px = pair.extra.get('error_before_px') if pair else None
        before_text = 'before' + (f': {before_px:.2f} px' if before_px is not None else '')
        side = np.hstack([_labelled(overlay(thermal, rgb, before), before_text),
                          _labelled(overlay(thermal, rgb, after), after_text)])
        cv2.imwrite(str(folder / f'overlay_{name}.png'), side)
        cv2.imwrite(str(folder / f'blend_{name}.png'), blend(thermal, rgb, after))


# -- command line ----------------------------------------------------------------------------
def _size_arg(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split('x'))
        if width > 0 and height > 0:
            return width, height
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f'expected WIDTHxHEIGHT, e.g. 640x512; got {text!r}')


def _crop_arg(text: str) -> str | tuple[float, ...]:
    if text in ('full', 'overlap'):
        return text
    try:
        values = tuple(float(v) for v in text.split(','))
        if len(values) == 4:
            return values
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f'expected full, overlap or X,Y,W,H; got {text!r}')


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=TOOL, description=__doc__.split('\n\n')[0].split(': ', 1)[1],
        epilog='Exit status: 0 written; 1 calibration failed (nothing written); 2 bad '
        'arguments, unreadable input or the output exists.')
    parser.add_argument('method', choices=('points', 'target', 'edges'),
                        help='points: correspondences (--points FILE or --pick); target: '
                        'checkerboard/circle grid seen by both cameras (--pattern); edges: '
                        'edge-alignment refinement on ordinary scenes (--init or identity)')
    parser.add_argument('input', type=Path, help='folder with ir/ and vi/ (images paired by '
                        'name), or a rosbag2 bag (directory or .mcap/.db3 file)')
    parser.add_argument('-o', '--output', type=Path, required=True,
                        help='calibration YAML to write (use it as calibration_file)')
    parser.add_argument('--report-dir', type=Path, default=None,
                        help='folder for overlay/blend PNGs (default: <output stem>_report '
                        'beside the YAML)')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace an existing YAML and the report images occo-calibrate '
                        'wrote before')
    parser.add_argument('--max-pairs', type=int, default=12,
                        help='use at most this many pairs, spread evenly over the input')
    bag = parser.add_argument_group('bag input')
    bag.add_argument('--thermal-topic', default='/thermal/image_raw',
                     help='thermal image topic (its camera_info beside it gives distortion)')
    bag.add_argument('--rgb-topic', default='/rgb/image_raw',
                     help='RGB image topic (Image or CompressedImage)')
    bag.add_argument('--slop', type=float, default=0.05,
                     help='largest thermal/RGB stamp difference of a pair, seconds')
    method = parser.add_argument_group('methods')
    method.add_argument('--points', type=Path, default=None,
                        help='points: file of correspondences, one per line: thermal_x '
                        "thermal_y rgb_x rgb_y (OpenCV pixels of the first pair's images)")
    method.add_argument('--pick', action='store_true',
                        help='points: click correspondences in a window (needs a display)')
    method.add_argument('--target', choices=('checkerboard', 'circles', 'acircles'),
                        default='checkerboard', help='target: kind of calibration target')
    method.add_argument('--pattern', type=_size_arg, default=None,
                        help='target: inner corners COLSxROWS of the checkerboard, or circles '
                        'per row x rows of the grid, e.g. 9x6')
    method.add_argument('--init', type=Path, default=None,
                        help='edges: start from this calibration file (e.g. a points or '
                        'target calibration); default: the identity (same field of view). '
                        'Capture range of edges: the truth within '
                        f'{edges.SEARCH_SHIFT_PX:g} px shift, {edges.SEARCH_DEGREES:g} '
                        f'deg rotation and {edges.SEARCH_SCALE * 100:g} %% scale of the '
                        f'start (at {edges.EDGE_WORK_WIDTH} px wide; '
                        'bench/bench_calibration.py); a '
                        'result at those limits, or one the pairs disagree on, is refused '
                        '(exit 1, nothing written)')
    method.add_argument('--perspective', action='store_true',
                        help='edges: also refine the perspective terms (default: an affine '
                        'correction of the start, which keeps its perspective)')
    geometry = parser.add_argument_group('fusion frame')
    geometry.add_argument('--crop', type=_crop_arg, default='overlap',
                          help='full (the whole RGB image), overlap (largest part seen by '
                          'both cameras, at the output aspect) or X,Y,W,H normalised')
    geometry.add_argument('--output-size', type=_size_arg, default=(640, 512),
                          help="fused image size the crop is chosen for (the node's "
                          'output_width x output_height)')
    geometry.add_argument('--working-distance', type=float, default=None,
                          help='metres to the scene the pairs show: the depth the homography '
                          'is exact for (recorded in the YAML)')
    parser.add_argument('--no-progress', action='store_true', help='no progress output')
    return parser


def calibrate_inputs(args: argparse.Namespace, inputs: Inputs,
                     log: Any) -> tuple[Calibration, np.ndarray, calibrate.MethodResult,
                                        list[tuple[str, np.ndarray, np.ndarray]]]:
    """Run the chosen method; returns the calibration, the start homography, the result and
    the (undistorted) pairs."""
    init = load_calibration(args.init) if args.init else None
    if init is not None:
        inputs.thermal_camera = inputs.thermal_camera or init.thermal_camera
        inputs.rgb_camera = inputs.rgb_camera or init.rgb_camera
    pairs = inputs.undistorted()
    thermal_size, rgb_size = _size(pairs[0][1]), _size(pairs[0][2])
    start = calibrate.identity_px(thermal_size, rgb_size)
    if init is not None:
        if init.thermal_size != thermal_size or init.rgb_size != rgb_size:
            start = calibrate.scale_matrix(init.rgb_size, rgb_size) @ init.homography_px @ \
                calibrate.scale_matrix(thermal_size, init.thermal_size)
        else:
            start = init.homography_px
    if args.method == 'points':
        if args.pick:
            thermal_points, rgb_points = pick_points(pairs[0][1], pairs[0][2])
        elif args.points:
            thermal_points, rgb_points = read_points(args.points)
        else:
            raise CalibrationError('the points method needs --points FILE or --pick')
        result = calibrate.calibrate_points([(pairs[0][0], thermal_points, rgb_points)])
    elif args.method == 'target':
        if args.pattern is None:
            raise CalibrationError('the target method needs --pattern COLSxROWS')
        result = calibrate.calibrate_target(pairs, args.pattern, args.target, start)
    else:
        result = edges.refine_edges(pairs, start, perspective=args.perspective,
                                    progress=None if args.no_progress else log)
    if isinstance(args.crop, tuple):
        crop = args.crop
    elif args.crop == 'full':
        crop = (0.0, 0.0, 1.0, 1.0)
    else:
        crop = calibrate.overlap_crop(result.h_px, thermal_size, rgb_size,
                                      args.output_size[0] / args.output_size[1])
    calibration = Calibration(
        method=args.method, thermal_size=thermal_size, rgb_size=rgb_size,
        homography_px=result.h_px, crop=tuple(crop), output_size=tuple(args.output_size),
        error_px=result.error_px, error_kind=result.error_kind,
        thermal_camera=inputs.thermal_camera, rgb_camera=inputs.rgb_camera,
        working_distance_m=args.working_distance)
    calibration.pairs = [{'name': p.name, calibration.error_key: p.error_px,
                          **({'note': p.note} if p.note else {}), **p.extra}
                         for p in result.pairs]
    calibration.registration(calibration.output_size)  # the node must accept it
    return calibration, start, result, pairs


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``occo-calibrate``; returns the exit status (see --help)."""
    args = build_parser().parse_args(argv)

    def log(message: str) -> None:
        print(f'{TOOL}: {message}', file=sys.stderr)

    report = args.report_dir or args.output.with_name(args.output.stem + '_report')
    begin = time.perf_counter()
    try:
        inputs_given = [args.input, args.points, args.init]
        check_file_output(args.output, args.overwrite, inputs_given)
        if (args.input / 'ir').is_dir():
            inputs = read_folder(args.input, args.max_pairs)
        else:
            from occo_ros.io.bags import BagError
            try:
                inputs = read_bag(args.input, args.thermal_topic, args.rgb_topic,
                                  args.max_pairs, args.slop)
            except (BagError, codec.ImageDecodeError) as exc:
                raise CalibrationError(str(exc)) from exc
        log(f'{len(inputs.pairs)} pairs from {args.input}')
        calibration, start, result, pairs = calibrate_inputs(args, inputs, log)
        names = [f'{kind}_{name}.png' for name, _, _ in pairs for kind in ('overlay', 'blend')]
        folder = prepare_output_folder(report, TOOL, names, args.overwrite,
                                       inputs_given + [args.output])
    except (CalibrationError, OutputError, OSError, ValueError) as exc:
        log(f'error: {exc}')
        return EXIT_USAGE
    except calibrate.CalibrationFailed as exc:
        log(f'calibration failed: {exc}')
        return EXIT_FAILED
    save_calibration(args.output, calibration)
    pairs_iter = pairs if args.no_progress else tqdm(pairs, desc='report images')
    write_report(folder, pairs_iter, start, calibration.homography_px, result)
    what = 'edge distance' if calibration.error_key == 'edge_distance_px' else 'error'
    for pair in result.pairs:
        log(f'pair {pair.name}: {what} {pair.error_px:.3f} px' + (
            f' (before {pair.extra["error_before_px"]:.3f} px)'
            if 'error_before_px' in pair.extra else '') + (f'; {pair.note}' if pair.note
                                                           else ''))
    log(f'{args.method}: mean {what} {calibration.error_px:.3f} px ({result.error_kind}); '
        f'wrote {args.output} and {folder}/ in {time.perf_counter() - begin:.1f} s')
    return EXIT_OK


def _spread(items: list, count: int) -> list:
    """At most ``count`` items evenly spread over ``items``."""
    if len(items) <= count:
        return list(items)
    return [items[round(i * (len(items) - 1) / (count - 1))] for i in range(count)] \
        if count > 1 else items[:1]


def _as_rgb(image: np.ndarray, order: str) -> np.ndarray:
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if order.startswith('bgr'):
        return cv2.cvtColor(image[:, :, :3], cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(image[:, :, :3])


def _size(image: np.ndarray) -> tuple[int, int]:
    return int(image.shape[1]), int(image.shape[0])


if __name__ == '__main__':
    sys.exit(main())
