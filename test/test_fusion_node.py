"""The fusion node over real DDS: a separate node process, real-size images, real messages.

The node runs as its own process (python -m occo_ros.ros.fusion_node), as on a robot; this test
process publishes thermal mono16 640x512 and RGB bgr8 1280x720 and subscribes to the outputs.
The mechanics, not the quality, are under test: the tests run the shipped ONNX model on ONNX
Runtime (``onnx_node``: no export, no torch import in the node); those of the torch backend
use missing and corrupt checkpoints (test_fusion_lifecycle_node serves the run's tiny one).
"""

from __future__ import annotations

import os
from pathlib import Path
import subprocess
import sys
import time

import cv2
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
import numpy as np
import pytest
import rclpy
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from occo_ros.core.codec import array_to_image_fields, decode_image
from occo_ros.params import SPECS
from occo_ros.worker import STAGES, WAITS

pytestmark = [pytest.mark.ros]

REPO = Path(__file__).resolve().parents[1]
THERMAL_SIZE = (640, 512)
RGB_SIZE = (1280, 720)
DIAGNOSTIC_KEYS = (
    'backend', 'device', 'precision', 'model', 'model_file', 'thermal_rate_hz', 'rgb_rate_hz',
    'output_rate_hz', 'pair_dt_ms_p50', 'arrival_ms_p50', 'queue_ms_p50', 'decode_ms_p50',
    'preprocess_ms_p50', 'inference_ms_p50', 'inference_ms_p99', 'compose_ms_p50',
    'publish_ms_p50', 'end_to_end_ms_p50', 'end_to_end_ms_p99', 'paired', 'dropped_stale',
    'dropped_busy', 'unpaired_thermal', 'unpaired_rgb', 'bad_thermal', 'bad_rgb')


@pytest.fixture(scope='module')
def onnx_node(tmp_path_factory) -> list[str]:
    """Node parameters for the shipped ONNX model on ONNX Runtime, with this module's engine
    cache (its optimised model made once): a start without torch (about 3 of 4.3 CPU s)."""
    cache = tmp_path_factory.mktemp('engine_cache')
    return [f'model_path:={REPO / "models" / "fifn_w025_pixel.onnx"}', 'backend:=onnxruntime',
            f'engine_cache_dir:={cache}']


def start_node(log: Path, *params: str, code: str | None = None) -> subprocess.Popen:
    """The node as its own process with the shipped YAML and `params`; `code` (python -c)
    replaces `python -m occo_ros.ros.fusion_node` where a test must prepare the process first."""
    # Reliable inputs: Fast DDS drops most full-size best-effort images between processes on
    # this machine (measured, docs/NODE.md "On a robot"), and these tests count every frame.
    start = ['-c', code] if code else ['-m', 'occo_ros.ros.fusion_node']
    cmd = [sys.executable, *start, '--ros-args',
           '--params-file', str(REPO / 'config' / 'fusion.yaml'),
           '-p', 'input_reliability:=reliable']
    for p in params:
        cmd += ['-p', p]
    with log.open('w') as out:    # the child has its own descriptor
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                env=dict(os.environ, PYTHONUNBUFFERED='1'))


def stop_node(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.send_signal(2)     # SIGINT: the node's clean shutdown path
        try:
            return proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


class Peer(Node):
    """Camera publishers and output subscribers of the test."""

    def __init__(self, compressed: bool = False, cameras: bool = True) -> None:
        """``cameras=False``: no camera publishers on the graph until add_cameras()."""
        super().__init__('occo_test_peer')
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        if cameras:
            self.add_cameras(compressed)
        self.fused: list[Image] = []
        self.infos: list[CameraInfo] = []
        self.diagnostics: list[dict] = []
        self.states: list[tuple[bytes, str]] = []   # (level, message) of each status
        self.create_subscription(Image, 'fused/image', self.fused.append, qos)
        self.create_subscription(CameraInfo, 'fused/camera_info', self.infos.append, qos)
        self.create_subscription(DiagnosticArray, '/diagnostics', self._on_diag, 10)

    def add_cameras(self, compressed: bool = False) -> None:
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        self.thermal_pub = self.create_publisher(Image, 'thermal/image_raw', qos)
        self.rgb_pub = (self.create_publisher(CompressedImage, 'rgb/image_raw/compressed', qos)
                        if compressed else self.create_publisher(Image, 'rgb/image_raw', qos))
        self.info_pub = self.create_publisher(CameraInfo, 'rgb/camera_info', qos)

    def _on_diag(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.endswith('fusion'):
                self.diagnostics.append({kv.key: kv.value for kv in status.values})
                self.states.append((status.level, status.message))

    def spin_until(self, condition, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            rclpy.spin_once(self, timeout_sec=0.05)
            if condition():
                return True
        return False

    def wait_for_node(self, log: Path) -> None:
        """Until the node subscribes to both cameras (its log on failure)."""
        assert self.spin_until(lambda: self.count_subscribers('thermal/image_raw') > 0
                               and self.count_subscribers('rgb/image_raw') > 0, 60), \
            log.read_text()

    def publish_pair(self, stamp_ns: int, thermal: np.ndarray, rgb: np.ndarray,
                     thermal_offset_ns: int = 3_000_000) -> Header:
        rgb_header = Header(frame_id='rgb_optical_frame')
        rgb_header.stamp.sec, rgb_header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
        thermal_header = Header(frame_id='thermal_optical_frame')
        thermal_header.stamp.sec, thermal_header.stamp.nanosec = divmod(
            stamp_ns + thermal_offset_ns, 1_000_000_000)
        self.thermal_pub.publish(Image(header=thermal_header,
                                       **array_to_image_fields(thermal, 'mono16')))
        if isinstance(self.rgb_pub.msg_type(), CompressedImage):
            ok, jpeg = cv2.imencode('.jpg', rgb)
            assert ok
            self.rgb_pub.publish(CompressedImage(header=rgb_header, format='jpeg',
                                                 data=jpeg.tobytes()))
        else:
            self.rgb_pub.publish(Image(header=rgb_header, **array_to_image_fields(rgb, 'bgr8')))
        return rgb_header

    def publish_pairs_until(self, until, timeout: float, thermal: np.ndarray, rgb: np.ndarray,
                            **pair_options) -> list[Header]:
        """Publish a fresh pair every 0.1 s until `until()` holds (or the timeout): one pair
        may meet a busy worker or a stream already reported silent on a loaded machine.
        Returns the RGB headers sent, or [] on timeout."""
        sent = []
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            sent.append(self.publish_pair(self.get_clock().now().nanoseconds, thermal, rgb,
                                          **pair_options))
            if self.spin_until(until, 0.1):
                return sent
        return []


def camera_images(rng: np.random.Generator):
    thermal = rng.integers(7000, 11000, (THERMAL_SIZE[1], THERMAL_SIZE[0]), dtype=np.uint16)
    rgb = rng.integers(0, 80, (RGB_SIZE[1], RGB_SIZE[0], 3), dtype=np.uint8)
    return thermal, rgb


@pytest.fixture
def ros():
    rclpy.init()
    yield
    rclpy.shutdown()


def test_node_fuses_real_size_pairs_and_reports_diagnostics(ros, onnx_node, tmp_path):
    proc = start_node(tmp_path / 'node.log', *onnx_node, 'max_age:=30.0',
                      'diagnostics_period:=0.5')
    peer = Peer()
    try:
        rng = np.random.default_rng(0)
        info = CameraInfo(width=RGB_SIZE[0], height=RGB_SIZE[1],
                          k=[900.0, 0, 640, 0, 900, 360, 0, 0, 1],
                          p=[900.0, 0, 640, 0, 0, 900, 360, 0, 0, 0, 1, 0])
        peer.wait_for_node(tmp_path / 'node.log')
        n = 5
        base = peer.get_clock().now().nanoseconds
        sent = []
        for i in range(n):   # lockstep: the node drops pairs while busy, by design
            peer.info_pub.publish(info)
            thermal, rgb = camera_images(rng)
            header = peer.publish_pair(base + i * 100_000_000, thermal, rgb)
            sent.append(header)
            assert peer.spin_until(lambda i=i: len(peer.fused) > i, 120), \
                (tmp_path / 'node.log').read_text()
        assert len(peer.fused) == n
        for header, msg in zip(sent, peer.fused):
            assert msg.header.stamp == header.stamp        # the RGB image's stamp
            assert msg.header.frame_id == 'rgb_optical_frame'
            assert (msg.width, msg.height, msg.encoding) == (640, 512, 'rgb8')
            pixels, _ = decode_image(msg)
            assert pixels.shape == (512, 640, 3) and pixels.dtype == np.uint8
        assert peer.spin_until(lambda: len(peer.infos) >= 1, 30)
        fused_info = peer.infos[-1]
        assert (fused_info.width, fused_info.height) == (640, 512)
        # the automatic crop keeps the centred 900x720 (the output's 5:4), so fx == fy
        assert fused_info.k[0] == pytest.approx(900.0 * 640 / 900)
        assert fused_info.k[4] == pytest.approx(900.0 * 512 / 720)

        assert peer.spin_until(lambda: peer.diagnostics
                               and int(peer.diagnostics[-1]['paired']) >= n, 30)
        diag = peer.diagnostics[-1]
        for key in DIAGNOSTIC_KEYS:
            assert key in diag, key
        assert diag['backend'] == 'onnxruntime' and diag['device'] == 'CPUExecutionProvider'
        assert diag['precision'] == 'fp32'
        assert float(diag['inference_ms_p50']) > 0
        assert float(diag['pair_dt_ms_p50']) == pytest.approx(3.0, abs=0.01)
        # The waits and stages account for the end-to-end latency (medians, so roughly).
        parts = sum(float(diag[f'{name}_ms_p50']) for name in WAITS + STAGES)
        end_to_end = float(diag['end_to_end_ms_p50'])
        assert float(diag['arrival_ms_p50']) >= 0 and float(diag['queue_ms_p50']) >= 0
        # (a sum of medians is not the median of sums: under a CPU hog the stage times spread
        # and the two drift apart, so the bound is loose; a missing stage still breaks it)
        assert abs(parts - end_to_end) <= 0.5 * end_to_end + 10, diag
        assert int(diag['bad_thermal']) == 0
    finally:
        peer.destroy_node()
        assert stop_node(proc) == 0, (tmp_path / 'node.log').read_text()


def test_bad_messages_are_counted_and_the_node_keeps_serving(ros, onnx_node, tmp_path):
    proc = start_node(tmp_path / 'node.log', *onnx_node, 'max_age:=30.0',
                      'diagnostics_period:=0.5')
    peer = Peer()
    log = tmp_path / 'node.log'
    try:
        assert peer.spin_until(lambda: peer.count_subscribers('thermal/image_raw') > 0, 60), \
            log.read_text()
        thermal, rgb = camera_images(np.random.default_rng(1))
        base = peer.get_clock().now().nanoseconds
        nan_thermal = thermal.astype(np.float32)
        nan_thermal[10, 10] = np.nan
        bad = [
            dict(array_to_image_fields(thermal, 'mono16'), encoding='weird16'),
            dict(array_to_image_fields(thermal, 'mono16'), data=b'\x00' * 1000),
            dict(array_to_image_fields(thermal, 'mono16'), step=3),
            dict(array_to_image_fields(thermal, 'mono16'), height=0, width=0, step=0, data=b''),
            array_to_image_fields(nan_thermal, '32FC1'),
        ]
        reasons = ['weird16', 'data is 1000 bytes', 'step', 'zero size', 'NaN']
        for i, fields in enumerate(bad):
            # one at a time: while the worker is busy the node keeps only the newest pair
            header = Header()
            header.stamp.sec, header.stamp.nanosec = divmod(base + i * 10**8, 10**9)
            peer.thermal_pub.publish(Image(header=header, **fields))
            peer.rgb_pub.publish(Image(header=header, **array_to_image_fields(rgb, 'bgr8')))
            assert peer.spin_until(lambda i=i: peer.diagnostics and
                                   int(peer.diagnostics[-1]['bad_thermal']) > i, 60), \
                log.read_text()
            assert reasons[i] in log.read_text()
        assert not peer.fused
        # a good pair still fuses
        assert peer.publish_pairs_until(lambda: peer.fused, 120, thermal, rgb), log.read_text()
        assert 'dropping a message on thermal/image_raw' in log.read_text()   # topic named
        assert proc.poll() is None
    finally:
        peer.destroy_node()
        stop_node(proc)


def test_node_serves_the_shipped_model_without_pytorch(ros, tmp_path):
    """A robot with ONNX Runtime but no PyTorch (docs/ENGINES.md: torch is optional there).

    Seam: torch cannot be uninstalled from the test environment, so the node process is
    started with it made unimportable (sys.modules['torch'] = None: imports fail and
    importlib.util.find_spec reports it missing); everything else is the real node.
    """
    log = tmp_path / 'node.log'
    code = ("import sys; sys.modules['torch'] = None; "
            'from occo_ros.ros.fusion_node import main; sys.exit(main())')
    proc = start_node(log, f'engine_cache_dir:={tmp_path / "cache"}', 'max_age:=30.0',
                      'diagnostics_period:=0.5', code=code)
    peer = Peer()
    try:
        peer.wait_for_node(log)
        thermal, rgb = camera_images(np.random.default_rng(2))
        assert peer.publish_pairs_until(lambda: peer.fused, 120, thermal, rgb), log.read_text()
        assert peer.spin_until(lambda: peer.diagnostics
                               and int(peer.diagnostics[-1]['paired']) >= 1, 30)
        assert peer.diagnostics[-1]['backend'] == 'onnxruntime'
        assert peer.diagnostics[-1]['model'].endswith('fifn_w025_pixel.pt')
        assert peer.diagnostics[-1]['model_file'].endswith('models/fifn_w025_pixel.onnx')
        text = log.read_text()
        assert 'PyTorch is not installed: using the ONNX export shipped' in text, text
        assert 'fifn_w025_pixel.onnx' in text
    finally:
        peer.destroy_node()
        assert stop_node(proc) == 0, log.read_text()


def test_a_camera_that_stops_is_reported_and_fusion_resumes_when_it_returns(ros, onnx_node,
                                                                            tmp_path):
    log = tmp_path / 'node.log'
    proc = start_node(log, *onnx_node, 'max_age:=30.0', 'diagnostics_period:=0.3',
                      'input_timeout:=1.0')
    peer = Peer()
    try:
        peer.wait_for_node(log)
        thermal, rgb = camera_images(np.random.default_rng(3))
        ok, warn = (DiagnosticStatus.OK, 'fusing'), (DiagnosticStatus.WARN,
                                                     'no data from thermal camera')

        last_thermal = [0]

        def stream(thermal_on: bool, until, timeout: float) -> bool:
            """Publish at 10 Hz (pairs, or RGB alone) until `until()` or the timeout."""
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                if thermal_on:
                    last_thermal[0] = peer.get_clock().now().nanoseconds
                    peer.publish_pair(last_thermal[0], thermal, rgb)
                else:
                    header = Header(frame_id='rgb_optical_frame')
                    header.stamp = peer.get_clock().now().to_msg()
                    peer.rgb_pub.publish(Image(header=header,
                                               **array_to_image_fields(rgb, 'bgr8')))
                if peer.spin_until(until, 0.1):
                    return True
            return False

        # Both cameras live: fused images and an OK status.
        assert stream(True, lambda: peer.fused and peer.states[-1:] == [ok], 60), \
            log.read_text()
        # The thermal camera stops while RGB goes on: WARN naming it, and nothing fused.
        assert stream(False, lambda: peer.states[-1:] and peer.states[-1][0] == warn[0]
                      and peer.states[-1][1].startswith(warn[1]), 30), peer.states[-3:]
        assert 'camera stopped sending or stalls' in peer.states[-1][1]
        assert 'no data from thermal camera for more than 1.0 s' in log.read_text()
        # Nothing newer than the last thermal frame (and the slop) is fused: a pair still in
        # the pipeline when the camera stopped may arrive late on a busy machine.
        stream(False, lambda: False, 1.0)
        fused = len(peer.fused)
        stamps = [Time.from_msg(m.header.stamp).nanoseconds for m in peer.fused]
        assert max(stamps) <= last_thermal[0] + SPECS['slop'].default * 1e9 and proc.poll() is None
        # It comes back: fused images and an OK status again.
        assert stream(True, lambda: len(peer.fused) > fused and peer.states[-1:] == [ok], 60), \
            log.read_text()
    finally:
        peer.destroy_node()
        assert stop_node(proc) == 0, log.read_text()


def test_parameters_match_yaml_and_dynamic_ones_change_at_run_time(ros, onnx_node, tmp_path):
    proc = start_node(tmp_path / 'node.log', *onnx_node, 'max_age:=30.0')
    peer = Peer()
    log = tmp_path / 'node.log'
    try:
        client = AsyncParameterClient(peer, 'occo_fusion')
        assert client.wait_for_services(60), log.read_text()
        # The services exist from the node's first moment, but answer only once it spins,
        # after loading and warming up the engine: wait for that (its subscriptions).
        peer.wait_for_node(log)
        future = client.list_parameters()
        assert peer.spin_until(future.done, 120), log.read_text()[-3000:]
        ros_builtin = {'use_sim_time', 'start_type_description_service'}
        declared = set(future.result().result.names) - ros_builtin
        assert declared == set(SPECS)     # every row of the table (docs/PARAMETERS.md)

        future = client.set_parameters([Parameter('output_encoding', value='bgr8'),
                                        Parameter('slop', value=0.02)])
        assert peer.spin_until(future.done, 60), log.read_text()[-3000:]
        assert all(r.successful for r in future.result().results)
        # Start-up parameters are read-only: described so, and refused by rclpy itself.
        future = client.describe_parameters(['input_width', 'slop'])
        assert peer.spin_until(future.done, 60), log.read_text()[-3000:]
        width, slop = future.result().descriptors
        assert width.read_only and 'restart the node' in width.additional_constraints
        assert not slop.read_only
        future = client.set_parameters([Parameter('input_width', value=64)])
        assert peer.spin_until(future.done, 60), log.read_text()[-3000:]
        result = future.result().results[0]
        assert not result.successful and 'read-only' in result.reason
        future = client.set_parameters([Parameter('thermal_mode', value='bogus')])
        assert peer.spin_until(future.done, 60), log.read_text()[-3000:]
        assert not future.result().results[0].successful

        thermal, rgb = camera_images(np.random.default_rng(2))
        assert peer.publish_pairs_until(lambda: peer.fused, 120, thermal, rgb,
                                        thermal_offset_ns=10_000_000), \
            log.read_text()     # 10 ms: within the new slop
        assert peer.fused[0].encoding == 'bgr8'
    finally:
        peer.destroy_node()
        stop_node(proc)


def test_compressed_rgb_input(ros, onnx_node, tmp_path):
    proc = start_node(tmp_path / 'node.log', *onnx_node, 'max_age:=30.0', 'rgb_compressed:=true')
    peer = Peer(compressed=True)
    try:
        assert peer.spin_until(
            lambda: peer.count_subscribers('rgb/image_raw/compressed') > 0, 60)
        thermal, rgb = camera_images(np.random.default_rng(3))
        sent = peer.publish_pairs_until(lambda: peer.fused, 120, thermal, rgb)
        assert sent, (tmp_path / 'node.log').read_text()
        assert peer.fused[0].header.stamp in [header.stamp for header in sent]
    finally:
        peer.destroy_node()
        stop_node(proc)


def test_fused_jpeg_is_encoded_only_while_someone_subscribes(ros, onnx_node, tmp_path):
    """fused/image/compressed: no encode while nobody subscribes (the diagnostics counter
    stays 0 while fused images are published); with a subscriber, a JPEG of the fused image
    with its header, at the jpeg_quality set at run time."""
    proc = start_node(tmp_path / 'node.log', *onnx_node, 'max_age:=30.0')
    peer = Peer()
    try:
        assert peer.spin_until(lambda: peer.count_subscribers('rgb/image_raw') > 0, 240), \
            (tmp_path / 'node.log').read_text()
        thermal, rgb = camera_images(np.random.default_rng(4))
        assert peer.publish_pairs_until(lambda: len(peer.fused) >= 3, 120, thermal, rgb)
        fused_before = len(peer.fused)
        assert peer.spin_until(lambda: len(peer.diagnostics) >= 2
                               and int(peer.diagnostics[-1]['fused']) >= fused_before, 30)
        assert peer.diagnostics[-1]['compressed_encodes'] == '0'
        jpegs = []
        peer.create_subscription(CompressedImage, 'fused/image/compressed', jpegs.append,
                                 QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
        client = AsyncParameterClient(peer, 'occo_fusion')
        assert client.wait_for_services(30)
        future = client.set_parameters([Parameter('jpeg_quality', value=30)])
        rclpy.spin_until_future_complete(peer, future, timeout_sec=30)
        assert future.result().results[0].successful
        assert peer.publish_pairs_until(lambda: len(jpegs) >= 2, 120, thermal, rgb)
        assert peer.spin_until(lambda: int(peer.diagnostics[-1]['compressed_encodes']) > 0, 10)
        jpeg = jpegs[-1]       # its raw twin (960 kB) may arrive after it (38 kB)
        assert peer.spin_until(lambda: any(f.header == jpeg.header for f in peer.fused), 10)
        fused = next(f for f in peer.fused if f.header == jpeg.header)
        assert jpeg.format == 'rgb8; jpeg compressed bgr8'
        pixels = cv2.imdecode(np.frombuffer(bytes(jpeg.data), np.uint8), cv2.IMREAD_COLOR)
        assert pixels.shape == (fused.height, fused.width, 3)
        reference = cv2.cvtColor(decode_image(fused)[0], cv2.COLOR_RGB2BGR)
        # the same picture at 32x32-pixel blocks (JPEG at quality 30 smooths the noise images)
        blocks = [cv2.resize(i, (20, 16), interpolation=cv2.INTER_AREA).astype(int)
                  for i in (pixels, reference)]
        assert np.abs(blocks[0] - blocks[1]).mean() < 4
    finally:
        peer.destroy_node()
        stop_node(proc)


def test_node_and_occo_bag_fuse_the_same_real_pairs_bit_for_bit(ros, onnx_node, tmp_path,
                                                                shared_data):
    """Online equals offline: 12 real MSRS pairs (infrared mono8, visible bgr8) published to
    the node over DDS and recorded in a bag for occo-bag, with the same parameter file and
    model, give identical fused pixels (one frame step, pipeline.fuse_frame, in both)."""
    from test_bag import IMAGE, image, pixels, read_bag, stamp_of, write_bag

    ir_dir, vi_dir = shared_data / 'eval' / 'msrs' / 'ir', shared_data / 'eval' / 'msrs' / 'vi'
    names = sorted(p.name for p in ir_dir.iterdir())[:12]
    assert len(names) == 12, f'expected 12 MSRS pairs in {ir_dir}'
    pairs = [(cv2.imread(str(ir_dir / n), cv2.IMREAD_GRAYSCALE),
              cv2.imread(str(vi_dir / n), cv2.IMREAD_COLOR)) for n in names]
    offset = 3_000_000      # thermal stamp - RGB stamp
    # the same model, engine cache and settings on both sides (one CPU thread: bitwise
    # reproducible)
    node_params = [*onnx_node, 'num_threads:=1']
    bag_flags = ['--{}={}'.format(name.replace('_', '-'), value)   # occo-bag's spelling
                 for name, value in (param.split(':=', 1) for param in node_params)]

    log = tmp_path / 'node.log'
    proc = start_node(log, *node_params, 'max_age:=60.0')
    peer = Peer()
    online = {}
    try:
        peer.wait_for_node(log)
        base = peer.get_clock().now().nanoseconds     # recent stamps: within max_age
        stamps = [base + i * 100_000_000 for i in range(len(pairs))]
        for stamp, (ir, bgr) in zip(stamps, pairs):   # lockstep: no pair dropped as busy
            headers = []
            for s in (stamp + offset, stamp):
                headers.append(Header(frame_id='f'))
                headers[-1].stamp.sec, headers[-1].stamp.nanosec = divmod(s, 10**9)
            peer.thermal_pub.publish(Image(header=headers[0],
                                           **array_to_image_fields(ir, 'mono8')))
            peer.rgb_pub.publish(Image(header=headers[1], **array_to_image_fields(bgr, 'bgr8')))
            assert peer.spin_until(lambda: len(peer.fused) > len(online), 60), log.read_text()
            msg = peer.fused[-1]
            online[msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec] = \
                decode_image(msg).array.copy()
    finally:
        peer.destroy_node()
        assert stop_node(proc) == 0, log.read_text()

    messages = []
    for stamp, (ir, bgr) in zip(stamps, pairs):
        messages.append(('/thermal/image_raw', IMAGE, stamp + offset,
                         image(ir, 'mono8', stamp + offset, 'f')))
        messages.append(('/rgb/image_raw', IMAGE, stamp + offset + 1,
                         image(bgr, 'bgr8', stamp, 'f')))
    write_bag(tmp_path / 'in', messages)
    run = subprocess.run(
        [sys.executable, '-m', 'occo_ros.cli.bag', str(tmp_path / 'in'), str(tmp_path / 'out'),
         '--thermal-topic', '/thermal/image_raw', '--rgb-topic', '/rgb/image_raw',
         '--params-file', str(REPO / 'config' / 'fusion.yaml'), '--no-progress', *bag_flags],
        capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    offline = {stamp_of(msg): pixels(msg)
               for _, msg, _ in read_bag(tmp_path / 'out')['/fused/image']}
    assert sorted(online) == sorted(offline) == stamps
    for stamp in stamps:
        np.testing.assert_array_equal(online[stamp], offline[stamp], err_msg=str(stamp))


@pytest.mark.parametrize('content', [None, b'not a checkpoint at all', b'PK\x03\x04trunc'])
def test_missing_or_corrupt_weights_fail_at_start_with_the_path(tmp_path, content):
    path = tmp_path / 'weights.pt'
    if content is not None:
        path.write_bytes(content)
    proc = subprocess.run(
        [sys.executable, '-m', 'occo_ros.ros.fusion_node', '--ros-args', '-p',
         f'model_path:={path}', '-p', 'backend:=torch'],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert str(path) in output
    assert 'Traceback' not in output
