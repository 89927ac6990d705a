"""ROS 2 node ``synthetic_cameras``: a thermal and an RGB camera watching a synthetic night scene.

The live source for the demo and the tests (the scene itself is occo_ros.synthetic.scene, no ROS).
Publishes, like a camera driver (reliable, REP-2003):
  thermal/image_raw (mono16 by default), thermal/camera_info,
  rgb/image_raw (bgr8), rgb/camera_info
at independent rates, each stamp with Gaussian jitter, so the fusion node's pairing is
exercised the way real, unsynchronised cameras exercise it. ``fusion.launch.py
synthetic:=true`` remaps these names onto the fusion node's input topics.
"""

from __future__ import annotations

import random
import sys

import numpy as np
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from occo_ros.core.codec import array_to_image_fields
from occo_ros.ros.node_main import run_node
from occo_ros.synthetic.scene import SceneConfig, SyntheticScene

PARAMETERS = {
    'thermal_rate': (30.0, 'Thermal frames per second.'),
    'rgb_rate': (30.0, 'RGB frames per second.'),
    'thermal_width': (640, 'Thermal image width in pixels.'),
    'thermal_height': (512, 'Thermal image height in pixels.'),
    'rgb_width': (1280, 'RGB image width in pixels.'),
    'rgb_height': (720, 'RGB image height in pixels.'),
    'thermal_encoding': ('mono16', 'mono16 or 16UC1 (raw counts), or mono8.'),
    'stamp_jitter': (0.002, 'Standard deviation of the stamp jitter in seconds.'),
    'people': (4, 'Number of walking people.'),
    'vehicles': (2, 'Number of driving vehicles.'),
    'seed': (0, 'Scene seed: the same seed renders the same scene.'),
    'thermal_frame_id': ('thermal_optical_frame', 'frame_id of the thermal images.'),
    'rgb_frame_id': ('rgb_optical_frame', 'frame_id of the RGB images.'),
}


def camera_info(k: np.ndarray, width: int, height: int, header: Header) -> CameraInfo:
    """An undistorted pinhole camera_info for intrinsics ``k`` (3x3)."""
    p = np.hstack([k, np.zeros((3, 1))])
    return CameraInfo(header=header, width=width, height=height, distortion_model='plumb_bob',
                      d=[0.0] * 5, k=k.ravel().tolist(),
                      r=np.eye(3).ravel().tolist(), p=p.ravel().tolist())


class SyntheticCameras(Node):

    def __init__(self, **kwargs) -> None:
        super().__init__('synthetic_cameras', **kwargs)
        for name, (default, description) in PARAMETERS.items():
            self.declare_parameter(name, default, ParameterDescriptor(description=description))
        p = {name: self.get_parameter(name).value for name in PARAMETERS}
        if p['thermal_encoding'] not in ('mono16', '16UC1', 'mono8'):
            raise ValueError(f"thermal_encoding={p['thermal_encoding']!r} is not one of "
                             "['mono16', '16UC1', 'mono8']")
        for rate in ('thermal_rate', 'rgb_rate'):
            if not p[rate] > 0:
                raise ValueError(f'{rate}={p[rate]} must be > 0 Hz')
        self.scene = SyntheticScene(SceneConfig(
            thermal_size=(p['thermal_width'], p['thermal_height']),
            rgb_size=(p['rgb_width'], p['rgb_height']), people=p['people'],
            vehicles=p['vehicles'], seed=p['seed']))
        self.p = p
        self._rng = random.Random(p['seed'])
        self._start = self.get_clock().now()
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5,
                         reliability=ReliabilityPolicy.RELIABLE)
        self.pubs = {name: (self.create_publisher(Image, f'{name}/image_raw', qos),
                            self.create_publisher(CameraInfo, f'{name}/camera_info', qos))
                     for name in ('thermal', 'rgb')}
        self.create_timer(1.0 / p['thermal_rate'], lambda: self._publish('thermal'))
        self.create_timer(1.0 / p['rgb_rate'], lambda: self._publish('rgb'))
        crop = ', '.join(f'{v:.7g}' for v in self.scene.thermal_crop)
        homography = ', '.join(f'{v:.7g}' for v in self.scene.thermal_homography.ravel())
        self.get_logger().info(
            f"thermal {p['thermal_width']}x{p['thermal_height']} @ {p['thermal_rate']} Hz, "
            f"RGB {p['rgb_width']}x{p['rgb_height']} @ {p['rgb_rate']} Hz; fusion geometry: "
            f'crop [{crop}], homography [{homography}]')

    def _publish(self, name: str) -> None:
        now = self.get_clock().now()
        jitter_ns = int(self._rng.gauss(0.0, self.p['stamp_jitter']) * 1e9)
        stamp = Time(nanoseconds=max(0, now.nanoseconds + jitter_ns),
                     clock_type=now.clock_type)
        t = (stamp.nanoseconds - self._start.nanoseconds) * 1e-9
        header = Header(stamp=stamp.to_msg(), frame_id=self.p[f'{name}_frame_id'])
        if name == 'thermal':
            pixels = self.scene.thermal(t)
            encoding = self.p['thermal_encoding']
            if encoding == 'mono8':
                pixels = (pixels >> 8).astype(np.uint8)
        else:
            pixels, encoding = self.scene.rgb(t), 'bgr8'
        image_pub, info_pub = self.pubs[name]
        image_pub.publish(Image(header=header, **array_to_image_fields(pixels, encoding)))
        height, width = pixels.shape[:2]
        info_pub.publish(camera_info(self.scene.camera_matrix(name), width, height, header))


def main(args: list[str] | None = None) -> int:
    """Entry point of ``synthetic_cameras``."""
    return run_node(SyntheticCameras, 'synthetic_cameras', args)


if __name__ == '__main__':
    sys.exit(main())
