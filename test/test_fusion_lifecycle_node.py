"""The managed fusion node over real DDS, driven through its lifecycle services.

The node runs as its own process (python -m occo_ros.ros.fusion_lifecycle_node); this test calls
``occo_fusion/change_state`` and ``occo_fusion/get_state`` (lifecycle_msgs, as `ros2
lifecycle set` does) and checks after each transition what the ROS graph and the topics
show: no subscriptions before activate, fused images while active, none after deactivate,
the engine released by cleanup, and a configure that fails on a bad model leaves the node
alive and unconfigured.
"""

from __future__ import annotations

from pathlib import Path

from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import ChangeState, GetState
import numpy as np
import pytest
import rclpy
import test_fusion_node as node_tests
from test_fusion_node import Peer, camera_images, start_node, stop_node

pytestmark = [pytest.mark.ros]

ros = node_tests.ros   # an initialised rclpy

CODE = 'import sys; from occo_ros.ros.fusion_lifecycle_node import main; sys.exit(main())'


class Lifecycle:
    """Client of the node's lifecycle services."""

    def __init__(self, peer: Peer, log: Path) -> None:
        self.peer, self.log = peer, log
        self.change = peer.create_client(ChangeState, 'occo_fusion/change_state')
        self.get = peer.create_client(GetState, 'occo_fusion/get_state')
        assert self.change.wait_for_service(60) and self.get.wait_for_service(60), \
            log.read_text()

    def _call(self, client, request):
        future = client.call_async(request)
        rclpy.spin_until_future_complete(self.peer, future, timeout_sec=120)
        assert future.done(), self.log.read_text()
        return future.result()

    def set(self, transition: int) -> bool:
        return self._call(self.change,
                          ChangeState.Request(transition=Transition(id=transition))).success

    def state(self) -> int:
        return self._call(self.get, GetState.Request()).current_state.id


def subscribed(peer: Peer) -> bool:
    return peer.count_subscribers('thermal/image_raw') > 0 \
        and peer.count_subscribers('rgb/image_raw') > 0


def fuse_one(peer: Peer, stamp_offset_s: int) -> bool:
    thermal, rgb = camera_images(np.random.default_rng(stamp_offset_s))
    before = len(peer.fused)
    return bool(peer.publish_pairs_until(lambda: len(peer.fused) > before, 120, thermal, rgb))


def test_transitions_load_serve_stop_and_release(ros, tiny_checkpoint, tmp_path):
    log = tmp_path / 'node.log'
    # the one node test of the torch backend serving; one thread: no spinning intra-op pool
    proc = start_node(log, f'model_path:={tiny_checkpoint}', 'backend:=torch', 'num_threads:=1',
                      'max_age:=30.0', 'diagnostics_period:=0.3', code=CODE)
    peer = Peer()
    try:
        node = Lifecycle(peer, log)
        assert node.state() == State.PRIMARY_STATE_UNCONFIGURED
        assert not subscribed(peer) and 'warmed up' not in log.read_text()

        assert node.set(Transition.TRANSITION_CONFIGURE), log.read_text()
        assert node.state() == State.PRIMARY_STATE_INACTIVE
        assert 'engine warmed up' in log.read_text()
        assert peer.count_publishers('fused/image') == 1 and not subscribed(peer)

        for round_ in range(2):
            assert node.set(Transition.TRANSITION_ACTIVATE), log.read_text()
            assert node.state() == State.PRIMARY_STATE_ACTIVE
            assert peer.spin_until(lambda: subscribed(peer), 30)
            assert fuse_one(peer, round_), log.read_text()
            assert peer.spin_until(lambda: peer.diagnostics
                                   and int(peer.diagnostics[-1]['fused']) >= 1, 30)

            assert node.set(Transition.TRANSITION_DEACTIVATE), log.read_text()
            assert node.state() == State.PRIMARY_STATE_INACTIVE
            assert peer.spin_until(lambda: not subscribed(peer), 30)

        assert node.set(Transition.TRANSITION_CLEANUP), log.read_text()
        assert node.state() == State.PRIMARY_STATE_UNCONFIGURED
        assert 'engine released' in log.read_text()
        assert peer.spin_until(lambda: peer.count_publishers('fused/image') == 0, 30)

        # configure again: a fresh engine, and it serves
        assert node.set(Transition.TRANSITION_CONFIGURE), log.read_text()
        assert node.set(Transition.TRANSITION_ACTIVATE), log.read_text()
        assert peer.spin_until(lambda: subscribed(peer), 30)
        assert fuse_one(peer, 2), log.read_text()

        assert node.set(Transition.TRANSITION_ACTIVE_SHUTDOWN), log.read_text()
        assert node.state() == State.PRIMARY_STATE_FINALIZED
        assert peer.spin_until(lambda: not subscribed(peer), 30)
        assert proc.poll() is None
    finally:
        peer.destroy_node()
        assert stop_node(proc) == 0, log.read_text()


@pytest.mark.parametrize('content', [None, b'not a model at all'])
def test_a_model_that_cannot_load_fails_configure_and_the_node_stays(ros, tmp_path, content):
    # ONNX Runtime: a corrupt file fails without importing torch (test_fusion_node has the
    # missing and corrupt checkpoints of the torch backend)
    path = tmp_path / 'weights.onnx'
    if content is not None:
        path.write_bytes(content)
    log = tmp_path / 'node.log'
    proc = start_node(log, f'model_path:={path}', 'backend:=onnxruntime',
                      f'engine_cache_dir:={tmp_path / "cache"}', code=CODE)
    peer = Peer()
    try:
        node = Lifecycle(peer, log)
        assert not node.set(Transition.TRANSITION_CONFIGURE)
        assert node.state() == State.PRIMARY_STATE_UNCONFIGURED
        text = log.read_text()
        assert 'cannot configure' in text and str(path) in text and 'Traceback' not in text
        assert proc.poll() is None
    finally:
        peer.destroy_node()
        assert stop_node(proc) == 0, log.read_text()
