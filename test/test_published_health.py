"""Issue 20 over real DDS: the node never publishes what it cannot stand behind, and
/diagnostics says why (bad network output, bad camera_info, a registration off the frame),
a model breaking the contract never starts, and parameter floods are one line per period.

Node processes as in test_fusion_node (its Peer and helpers); the models are the small real
ONNX graphs of test_output_check, run by ONNX Runtime in the node.
"""

from __future__ import annotations

from pathlib import Path
import pickle
import subprocess
import sys
import time

from diagnostic_msgs.msg import DiagnosticStatus
import numpy as np
import pytest
import rclpy
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient
from sensor_msgs.msg import CameraInfo
from test_fusion_node import RGB_SIZE, Peer, camera_images, start_node, stop_node
from test_output_check import mean_body, nan_on_real_frames, onnx_model, two_channels

pytestmark = [pytest.mark.ros]


@pytest.fixture
def ros():
    rclpy.init()
    yield
    rclpy.shutdown()


def onnx_node(log, model, tmp_path, *params: str):
    return start_node(log, f'model_path:={model}', 'backend:=onnxruntime', 'device:=cpu',
                      f'engine_cache_dir:={tmp_path / "cache"}', 'max_age:=30.0',
                      'diagnostics_period:=0.2', 'input_timeout:=1.0', *params)


@pytest.fixture(scope='module')
def mean_node(tmp_path_factory) -> Path:
    """One node (its log) running the fusing mean model with the defaults of onnx_node, for
    the tests that only publish to it or set its parameters: a start less."""
    folder = tmp_path_factory.mktemp('mean_node')
    log = folder / 'node.log'
    proc = onnx_node(log, onnx_model(folder / 'mean.onnx', mean_body()), folder)
    yield log
    assert stop_node(proc) == 0, log.read_text()[-3000:]


def counter(peer: Peer, name: str) -> int:
    return int(peer.diagnostics[-1][name]) if peer.diagnostics else 0


def state_is(peer: Peer, level: bytes, *words: str):
    return lambda: bool(peer.states) and peer.states[-1][0] == level and all(
        word in peer.states[-1][1] for word in words)


def fatal_start(tmp_path, *params: str) -> str:
    """The one FATAL line of a node that must refuse to start (and the whole output)."""
    cmd = [sys.executable, '-m', 'occo_ros.ros.fusion_node', '--ros-args',
           '-p', f'engine_cache_dir:={tmp_path / "cache"}']
    for param in params:
        cmd += ['-p', param]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    output = run.stdout + run.stderr
    assert run.returncode == 1 and 'Traceback' not in output, output
    fatal = [line for line in output.splitlines() if 'FATAL' in line]
    assert len(fatal) == 1, output
    assert 'Warning' not in output, output   # e.g. torch's pickle-protocol UserWarning
    return fatal[0]


def test_a_model_whose_output_goes_bad_publishes_nothing_and_health_says_why(ros, tmp_path):
    log = tmp_path / 'node.log'
    model = nan_on_real_frames(tmp_path / 'nan_on_real.onnx')   # passes the dry run
    proc = onnx_node(log, model, tmp_path)
    peer = Peer()
    thermal, rgb = camera_images(np.random.default_rng(0))
    try:
        peer.wait_for_node(log)
        assert peer.publish_pairs_until(
            lambda: counter(peer, 'bad_output') >= 3 and state_is(
                peer, DiagnosticStatus.ERROR, 'bad network output', 'non-finite')(),
            120, thermal, rgb), (peer.states[-3:], log.read_text()[-2000:])
        peer.spin_until(lambda: False, 0.5)
        assert peer.fused == []
        assert int(peer.diagnostics[-1]['fused']) == 0
        assert int(peer.diagnostics[-1]['errors']) == counter(peer, 'bad_output')
        assert 'bad network output: the output holds non-finite values' in log.read_text()
    finally:
        peer.destroy_node()
        assert stop_node(proc) == 0, log.read_text()[-3000:]


def test_a_model_breaking_the_contract_or_a_raw_pickle_never_starts(tmp_path):
    line = fatal_start(tmp_path, f'model_path:={two_channels(tmp_path / "two.onnx")}',
                       'backend:=onnxruntime')
    assert 'breaks the FIFN output contract' in line and 'has 2 channels' in line
    raw = tmp_path / 'raw.pt'
    raw.write_bytes(pickle.dumps({'weights': [1.0]}, protocol=4))
    line = fatal_start(tmp_path, f'model_path:={raw}', 'backend:=torch')
    assert f'cannot read checkpoint {raw}' in line


def test_a_bad_camera_info_is_counted_and_never_published(ros, mean_node):
    log = mean_node
    peer = Peer()
    thermal, rgb = camera_images(np.random.default_rng(1))
    k = [640.0, 0, 639.5, 0, 640.0, 359.5, 0, 0, 1]
    p = [640.0, 0, 639.5, 0, 0, 640.0, 359.5, 0, 0, 0, 1, 0]
    good = CameraInfo(width=RGB_SIZE[0], height=RGB_SIZE[1], k=k, p=p,
                      distortion_model='plumb_bob', d=[0.0] * 5)
    bad = [CameraInfo(width=RGB_SIZE[0], height=RGB_SIZE[1], k=[float('nan')] + k[1:], p=p),
           CameraInfo(width=640, height=480, k=k, p=p),
           CameraInfo(width=RGB_SIZE[0], height=RGB_SIZE[1], k=k, p=p, d=[0.0] * 1_000_000)]
    try:
        peer.wait_for_node(log)
        peer.info_pub.publish(good)
        assert peer.publish_pairs_until(lambda: peer.infos, 120, thermal, rgb), \
            log.read_text()[-2000:]
        fx = peer.infos[-1].k[0]
        # Each bad camera_info, once it is the newest, is named in the log (a counter alone
        # could be reached by the previous one, which counts on every frame it is used for).
        named = ('K must be 9 finite numbers',
                 'describes 640x480 images, the RGB images are 1280x720',
                 'camera_info has 1000000 distortion coefficients, at most 14')
        for number, (info, text) in enumerate(zip(bad, named), 1):
            peer.info_pub.publish(info)
            assert peer.publish_pairs_until(
                lambda n=number, t=text: counter(peer, 'bad_camera_info') >= n
                and t in log.read_text(), 120, thermal, rgb), \
                (peer.diagnostics[-1:], log.read_text()[-2000:])
            fused = len(peer.fused)
            assert peer.publish_pairs_until(lambda f=fused: len(peer.fused) >= f + 2, 120,
                                            thermal, rgb)   # images go on, without it
        assert all(np.isfinite(i.k).all() and i.k[0] == fx and len(i.d) == 5
                   for i in peer.infos), [(list(i.k), len(i.d)) for i in peer.infos]
        text = log.read_text()
        warned = [line for line in text.splitlines() if 'rgb/camera_info' in line]
        assert warned and all('[WARN]' in line for line in warned), warned
        assert 'describes 640x480 images, the RGB images are 1280x720' in text
    finally:
        peer.destroy_node()


def test_a_registration_off_the_frame_is_refused_and_a_low_share_is_a_warning(ros, tmp_path):
    model = onnx_model(tmp_path / 'mean.onnx', mean_body())
    line = fatal_start(tmp_path, f'model_path:={model}', 'backend:=onnxruntime',
                       'homography:=[1.0, 0.0, 2.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]')
    assert 'covers 0% of the fused frame' in line and 'parameters homography and crop' in line
    log = tmp_path / 'node.log'
    proc = onnx_node(log, model, tmp_path,
                     'homography:=[1.0, 0.0, 0.6, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]')
    peer = Peer()
    thermal, rgb = camera_images(np.random.default_rng(2))
    try:
        peer.wait_for_node(log)
        assert peer.publish_pairs_until(
            state_is(peer, DiagnosticStatus.WARN, 'fusing', 'covers only 4'), 120, thermal,
            rgb), (peer.states[-3:], log.read_text()[-2000:])
    finally:
        peer.destroy_node()
        assert stop_node(proc) == 0, log.read_text()[-3000:]


def test_a_parameter_flood_is_one_log_line_per_period(ros, mean_node):
    log = mean_node
    peer = Peer()
    client = AsyncParameterClient(peer, 'occo_fusion')
    sets = 300
    try:
        peer.wait_for_node(log)
        assert client.wait_for_services(60), log.read_text()
        start = time.monotonic()
        for index in range(sets):
            future = client.set_parameters([Parameter('slop', value=0.02 + index * 1e-5)])
            rclpy.spin_until_future_complete(peer, future, timeout_sec=30)
            assert future.result().results[0].successful
        elapsed = time.monotonic() - start
        last = f"'slop': {0.02 + (sets - 1) * 1e-5}"
        assert peer.spin_until(lambda: last in log.read_text(), 30), log.read_text()[-2000:]
        lines = [line for line in log.read_text().splitlines() if 'parameters changed' in line]
        assert len(lines) <= elapsed / 2.0 + 2, (len(lines), elapsed)
        assert 'sets merged' in lines[-1]
    finally:
        peer.destroy_node()
