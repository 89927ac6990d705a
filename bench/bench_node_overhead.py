"""Node overhead per pair: everything the fusion node does except the network and DDS.

Builds real sensor_msgs/Image messages (rclpy message classes: thermal mono16 640x512, RGB
bgr8 1280x720), then per pair: pairing, decode, preprocess (register + normalise + colour),
compose, output message construction (array -> Image with bytes data). The network is
replaced by a pass-through engine so only the pipeline around it is timed.

    python bench/bench_node_overhead.py [--pairs 300] [--geometry undistorted ...]

Geometries: full (identity homography, whole RGB image), synthetic (the synthetic scene's
crop), undistorted (a calibration file's case: plumb_bob distortion on both cameras, a
perspective homography and the overlap crop, each image through one precomputed remap),
thermal-undistorted (the same, RGB without distortion: only the thermal image is remapped).

Target (issue 2): median total <= 5 ms per pair at 640x512 thermal + 1280x720 RGB ->
640x512 output on the 2-core development CPU.
"""

from __future__ import annotations

import argparse
import time

from machine import cpu_description  # bench/machine.py (run as python bench/...)
import numpy as np
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from occo_ros.core.codec import array_to_image_fields, decode_image
from occo_ros.core.pairing import ApproximateTimePairer
from occo_ros.core.registration import CameraModel, Registration, pixel_to_normalized_homography
from occo_ros.core.thermal import ThermalNormalizer
from occo_ros.engines.base import EngineInfo, FusionEngine
from occo_ros.pipeline import FusionPipeline
from occo_ros.synthetic.scene import SceneConfig, SyntheticScene
from occo_ros.util.allocator import tune_allocator


class PassThroughEngine(FusionEngine):
    """Returns the visible input: the network's cost is excluded from this benchmark."""

    @property
    def info(self) -> EngineInfo:
        return EngineInfo('pass-through', 'cpu', 'fp32', '')

    def infer(self, visible_y: np.ndarray, infrared: np.ndarray) -> np.ndarray:
        return visible_y


def geometries() -> dict[str, dict]:
    """Registration keyword arguments per geometry name (see the module docstring)."""
    rig = np.array([[1.9, 0.02, 40.0], [-0.015, 1.88, -60.0], [1e-6, -2e-6, 1.0]])
    k_thermal = np.array([[600.0, 0, 319.5], [0, 600.0, 255.5], [0, 0, 1]])
    k_rgb = np.array([[900.0, 0, 639.5], [0, 900.0, 359.5], [0, 0, 1]])
    cases = {
        'full': {'crop': (0.0, 0.0, 1.0, 1.0)},
        'synthetic': {'crop': SyntheticScene(SceneConfig()).thermal_crop},
        'undistorted': {
            'homography': pixel_to_normalized_homography(rig, (640, 512), (1280, 720)),
            'crop': (0.05, 0.0, 0.9, 1.0),
            'thermal_camera': CameraModel.checked(k_thermal, [-0.3, 0.1, 0.001, 0.0, 0.0],
                                                  'plumb_bob', (640, 512)),
            'rgb_camera': CameraModel.checked(k_rgb, [-0.1, 0.02, 0.0, 0.0, 0.0],
                                              'plumb_bob', (1280, 720))}}
    # the same with an RGB lens needing no correction (the RGB image is only cropped)
    cases['thermal-undistorted'] = dict(cases['undistorted'], rgb_camera=None)
    return cases


def run(pairs: int, input_size: tuple[int, int], mode: str,
        geometry: dict) -> dict[str, float]:
    scene = SyntheticScene(SceneConfig())
    messages = []
    for i in range(8):      # a few distinct frames, reused
        header = Header(frame_id='f')
        header.stamp.sec, header.stamp.nanosec = i, 0
        thermal = array_to_image_fields(scene.thermal(i / 30), 'mono16')
        rgb = array_to_image_fields(scene.rgb(i / 30), 'bgr8')
        messages.append((Image(header=header, **thermal), Image(header=header, **rgb)))
    pipeline = FusionPipeline(PassThroughEngine(),
                              Registration(output_size=(640, 512), **geometry),
                              ThermalNormalizer(mode), input_size, (640, 512))
    pairer = ApproximateTimePairer(slop=0.05, queue_size=10)
    stages: dict[str, list[float]] = {k: [] for k in (
        'pair', 'decode', 'preprocess', 'compose', 'message', 'total')}
    for i in range(pairs + 20):
        thermal_msg, rgb_msg = messages[i % len(messages)]
        t0 = time.perf_counter()
        pairer.add('thermal', i * 10**8, thermal_msg)
        pair = pairer.add('rgb', i * 10**8 + 1000, rgb_msg)
        t1 = time.perf_counter()
        thermal, _ = decode_image(pair.thermal)
        rgb, order = decode_image(pair.rgb)
        t2 = time.perf_counter()
        prepared = pipeline.preprocess(thermal, rgb, order)
        t3 = time.perf_counter()
        frame = pipeline.compose(pipeline.infer(prepared), prepared)
        t4 = time.perf_counter()
        Image(header=pair.rgb.header, **array_to_image_fields(frame.rgb, 'rgb8'))
        t5 = time.perf_counter()
        if i >= 20:         # warm-up excluded
            for key, value in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4,
                                           t5 - t0)):
                value *= 1e3
                stages[key].append(value)
    return {k: float(np.median(v)) for k, v in stages.items()}


def main() -> None:
    tune_allocator()
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--pairs', type=int, default=300, help='timed pairs per case')
    parser.add_argument('--geometry', action='append', choices=list(geometries()),
                        help='geometry to time (repeatable; default: all)')
    args = parser.parse_args()
    print(f'machine: {cpu_description()}; thermal mono16 640x512 + RGB bgr8 '
          f'1280x720 -> 640x512 rgb8; medians over {args.pairs} pairs, ms')
    print('| network input | thermal mode | geometry | pair | decode | preprocess | compose | '
          'message | total |')
    print('|---|---|---|---|---|---|---|---|---|')
    for input_size in ((320, 256), (640, 512)):
        for mode in ('smoothed', 'fixed'):
            for name in args.geometry or list(geometries()):
                r = run(args.pairs, input_size, mode, geometries()[name])
                print(f'| {input_size[0]}x{input_size[1]} | {mode} | {name} | '
                      f"{r['pair']:.3f} | {r['decode']:.3f} | {r['preprocess']:.2f} | "
                      f"{r['compose']:.2f} | {r['message']:.2f} | **{r['total']:.2f}** |")


if __name__ == '__main__':
    main()
