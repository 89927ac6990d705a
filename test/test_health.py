"""The node's health state machine (occo_ros.core.health) on a hand-driven clock (no ROS)."""

from __future__ import annotations

import pytest

from occo_ros.core.health import ERROR, OK, WARN, Health

pytestmark = [pytest.mark.core]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def both_send(health: Health) -> None:
    health.received('thermal')
    health.received('rgb')


def fusing_health(timeout: float = 1.0) -> tuple[Health, Clock]:
    clock = Clock()
    health = Health(timeout, clock=clock)
    both_send(health)
    health.published()
    assert health.status()[:2] == (OK, 'fusing')
    return health, clock


def test_waiting_for_the_cameras_is_warn_logged_once_at_info():
    clock = Clock()
    health = Health(2.0, clock=clock)
    status = health.status()
    assert status[:3] == (WARN, 'waiting for the first message from thermal and rgb camera',
                          'info')
    clock.now += 30.0        # cameras not up yet: still waiting, and not logged again
    assert health.status()[:3] == (WARN, status.message, None)
    health.received('rgb')
    status = health.status()
    assert status.message == 'waiting for the first message from thermal camera'
    assert status.log == 'info'


def test_a_camera_that_never_sends_is_named_after_the_timeout():
    clock = Clock()
    health = Health(2.0, clock=clock)
    health.received('rgb')
    assert health.status().message.startswith('waiting')
    clock.now += 2.5
    health.received('rgb')
    assert health.status()[:3] == (WARN, 'no data from thermal camera', 'warning')


def test_never_ok_before_a_fused_image():
    clock = Clock()
    health = Health(1.0, clock=clock)
    both_send(health)
    status = health.status()
    assert status.level == WARN and status.message.startswith('waiting for the first fused')
    assert status.log == 'info'
    health.published()
    assert health.status()[:3] == (OK, 'fusing', 'info')


def test_output_stopping_while_inputs_arrive_warns_then_errors_naming_the_cause():
    health, clock = fusing_health(timeout=1.0)
    for _ in range(12):      # 1.2 s of malformed thermal images at 10 Hz
        clock.now += 0.1
        both_send(health)
        health.problem('bad_thermal:encoding', "thermal: encoding 'bayer_rggb8' is not "
                       'accepted on this stream')
    status = health.status()
    assert status.level == WARN and status.log == 'warning'
    assert "nothing fused for 1.2 s while both cameras send: thermal: encoding 'bayer_rggb8'" \
        in status.message and '(12 times)' in status.message
    clock.now += 0.5
    both_send(health)
    assert health.status().log is None         # same cause, same level: not logged again
    clock.now += 0.4
    both_send(health)
    status = health.status()
    assert status.level == ERROR and status.log == 'error'
    health.published()                          # recovery: OK at once
    assert health.status()[:3] == (OK, 'fusing', 'info')


def test_the_most_frequent_cause_is_named_and_a_new_one_is_logged():
    health, clock = fusing_health(timeout=1.0)
    clock.now += 1.1
    both_send(health)
    health.problem('stale', 'pairs dropped as stale: stamps 10.0 s behind the node clock')
    health.problem('bad_rgb:data', 'rgb: data is 10 bytes')
    health.problem('stale', 'pairs dropped as stale: stamps 10.1 s behind the node clock')
    status = health.status()
    assert 'stamps 10.1 s behind the node clock (2 times)' in status.message
    assert status.log == 'warning'
    for _ in range(3):
        health.problem('bad_rgb:data', 'rgb: data is 10 bytes')
    status = health.status()
    assert 'rgb: data is 10 bytes (4 times)' in status.message and status.log == 'warning'


def test_without_a_recorded_problem_the_callers_guess_is_the_cause():
    health, clock = fusing_health(timeout=1.0)
    clock.now += 1.5
    both_send(health)
    status = health.status(idle_cause='thermal and RGB stamps are never within slop')
    assert status.level == WARN and status.message.endswith('never within slop')


def test_a_silent_camera_is_warn_and_fusing_resumes_when_it_returns():
    health, clock = fusing_health(timeout=1.0)
    for _ in range(11):
        clock.now += 0.1
        health.received('rgb')
    status = health.status()
    assert status == (WARN, 'no data from thermal camera', 'warning',
                      'no data from thermal camera for more than 1.0 s')
    clock.now += 5.0
    health.received('rgb')
    assert health.status().level == WARN      # a camera that is off is not a node error
    both_send(health)
    # back, but nothing fused yet: not OK, and not an error for the time it was away
    status = health.status()
    assert status.level == WARN and status.message.startswith('waiting for the first fused')
    health.published()
    assert health.status()[:3] == (OK, 'fusing', 'info')


def test_a_persistent_warning_keeps_a_fusing_node_at_warn():
    health, clock = fusing_health()
    health.set_warning('precision', 'precision fp16 is not available on cpu: running fp32')
    assert health.status()[:3] == (WARN, 'fusing; precision fp16 is not available on cpu: '
                                   'running fp32', 'warning')
    health.set_warning('precision', None)
    assert health.status()[:3] == (OK, 'fusing', 'info')


def test_a_camera_on_the_graph_that_delivers_nothing_is_named_with_its_likely_cause():
    """Issue 19/20: a publisher on the topic but no message for input_timeout is not 'still
    starting': WARN (logged as a warning) naming the cause the graph shows."""
    clock = Clock()
    health = Health(2.0, clock=clock)
    health.set_graph('thermal', 0)
    health.set_graph('rgb', 0)
    clock.now += 30.0        # nobody publishes: the cameras may not be up, keep waiting
    assert health.status()[:2] == (WARN, 'waiting for the first message from thermal and '
                                   'rgb camera')
    health.set_graph('thermal', 1, 'a publisher on /thermal/image_raw and this reliable '
                     'subscription disagree on RELIABILITY')
    health.set_graph('rgb', 1)
    status = health.status()
    assert status.level == WARN and status.log == 'warning'
    assert 'no data from thermal and rgb camera' in status.message
    assert 'thermal: QoS mismatch, a publisher on /thermal/image_raw' in status.message
    assert 'rgb: 1 publisher(s) on the topic but no message arrives' in status.message
    assert 'FASTDDS_BUILTIN_TRANSPORTS' in status.message
    assert health.status().log is None          # logged on changes only
    health.set_graph('thermal', 1)               # the cause changes: logged again
    assert health.status().log == 'warning'
    both_send(health)                            # data flows: the usual rules
    assert 'waiting for the first fused image' in health.status().message


def test_a_graph_cause_waits_for_input_timeout_after_the_first_look():
    clock = Clock()
    health = Health(2.0, clock=clock)
    health.set_graph('thermal', 1)
    health.set_graph('rgb', 1)
    assert health.status().message.startswith('waiting for the first message')
    clock.now += 2.5
    assert health.status().message.startswith('no data from thermal and rgb camera')


def test_a_camera_that_delivered_and_stopped_is_not_blamed_on_qos_or_transport():
    """A publisher whose messages arrived before and then stop: the camera stalled; the QoS
    and transport causes are for publishers whose messages never arrived."""
    clock = Clock()
    health = Health(1.0, clock=clock)
    health.set_graph('thermal', 1)
    health.set_graph('rgb', 1)
    both_send(health)
    clock.now += 0.5
    health.received('rgb')
    clock.now += 0.8                            # thermal silent for 1.3 s, rgb goes on
    message = health.status().message
    assert message.startswith('no data from thermal camera')
    assert 'delivered before: the camera stopped sending or stalls' in message
    assert 'FASTDDS_BUILTIN_TRANSPORTS' not in message
