"""The fusion worker without ROS: pairing, newest-pair slot, stale dropping, error counting,
reconfiguration, publish failures, stop/start and warm-up, in milliseconds.

The engine is the real shipped model (PyTorch backend, CPU) at a small network size; the
messages are duck-typed sensor_msgs/Image objects, as the codec reads them; the clock is a
plain function the test controls (the node passes its ROS clock).
"""

from __future__ import annotations

import logging
import threading
from types import SimpleNamespace

import numpy as np
import pytest
import test_frame_step
from test_frame_step import small_params

from occo_ros.core.codec import array_to_image_fields
from occo_ros.engines.base import EngineError
from occo_ros.pipeline import FusionPipeline
from occo_ros.worker import COUNTS, LATENCIES, STAGES, FusionWorker

pytestmark = [pytest.mark.core]

engine = test_frame_step.engine     # the shipped model, PyTorch on CPU, 64x48 network

BASE_NS = 1_000 * 10**9


class Clock:
    """The node's clock, moved by the test."""

    def __init__(self) -> None:
        self.now_ns = BASE_NS

    def __call__(self) -> int:
        return self.now_ns


class Published:
    """The publish callback: records (pair, result) and wakes waiting tests."""

    def __init__(self) -> None:
        self.items: list = []
        self._cond = threading.Condition()

    def __call__(self, pair, result) -> None:
        with self._cond:
            self.items.append((pair, result))
            self._cond.notify_all()

    def wait_for(self, n: int, timeout: float = 60.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(self.items) >= n, timeout)


def images(seed: int = 0):
    rng = np.random.default_rng(seed)
    thermal = rng.integers(7000, 11000, (120, 160), dtype=np.uint16)
    rgb = rng.integers(0, 255, (150, 200, 3), dtype=np.uint8)
    return (SimpleNamespace(**array_to_image_fields(thermal, 'mono16')),
            SimpleNamespace(**array_to_image_fields(rgb, 'bgr8')))


def make_worker(engine, publish, clock, log=None, **overrides) -> FusionWorker:
    params = small_params(**overrides)
    return FusionWorker(FusionPipeline.from_settings(params, engine), params, publish,
                        topics={'thermal': 'thermal/image_raw', 'rgb': 'rgb/image_raw',
                                'camera_info': 'rgb/camera_info'},
                        clock_ns=clock, log=log)


def add_pair(worker: FusionWorker, stamp_ns: int, thermal, rgb) -> None:
    worker.add('thermal', stamp_ns + 3_000_000, thermal)
    worker.add('rgb', stamp_ns, rgb)


def test_pairs_are_fused_published_and_timed(engine):
    clock, published = Clock(), Published()
    worker = make_worker(engine, published, clock)
    worker.start()
    try:
        thermal, rgb = images()
        clock.now_ns = BASE_NS + 20_000_000        # the pair is 20 ms old when it completes
        add_pair(worker, BASE_NS, thermal, rgb)
        assert published.wait_for(1)
    finally:
        worker.stop()
    pair, result = published.items[0]
    assert pair.rgb is rgb and pair.thermal is thermal and result.ok
    expected = FusionPipeline.from_settings(small_params(), engine).fuse_frame(thermal, rgb)
    np.testing.assert_array_equal(result.pixels, expected.pixels)
    snap = worker.snapshot()
    assert snap.counts['fused'] == 1 and snap.counts['paired'] == 1
    assert sum(snap.counts[k] for k in COUNTS) == 1
    assert set(snap.latency_ms) == set(LATENCIES)
    for stage in STAGES + ('queue', 'end_to_end'):
        assert snap.latency_ms[stage][0] >= 0, stage
    assert snap.latency_ms['arrival'][0] == pytest.approx(20.0)
    assert snap.latency_ms['pair_dt'][0] == pytest.approx(3.0)
    assert snap.input_age_s['thermal'] >= 0 and snap.input_age_s['rgb'] >= 0
    values = snap.values()
    for key in ('fused', 'dropped_busy', 'bad_thermal', 'errors', 'paired', 'unpaired_rgb',
                'inference_ms_p50', 'end_to_end_ms_p99', 'output_rate_hz'):
        assert key in values, key
    assert not snap.running


def test_a_busy_worker_keeps_only_the_newest_pair(engine):
    """Three pairs arrive while the worker is busy (here: not taking any): two are dropped,
    the newest is fused."""
    clock, published = Clock(), Published()
    worker = make_worker(engine, published, clock)
    for i in range(3):
        add_pair(worker, BASE_NS + i * 100_000_000, *images(i))
    clock.now_ns = BASE_NS + 300_000_000
    assert worker.snapshot().counts['dropped_busy'] == 2
    worker.process(*worker._slot.get(timeout=0))
    assert published.items[-1][0].rgb_stamp_ns == BASE_NS + 200_000_000
    assert worker.snapshot().counts['fused'] == 1


def test_stale_pairs_are_dropped_before_any_work_with_a_throttled_warning(engine, caplog):
    """A stale pair is expected under load (e.g. the first ones after warm-up): a warning,
    throttled, counted; lasting staleness is the health's business."""
    clock, published = Clock(), Published()
    worker = make_worker(engine, published, clock, max_age=0.5)
    clock.now_ns = BASE_NS + 2 * 10**9
    with caplog.at_level(logging.WARNING, 'occo_ros.worker'):
        for i in range(2):
            add_pair(worker, BASE_NS + i, *images(i))
            assert worker.process(*worker._slot.get(timeout=0)) is None
    assert not published.items
    assert worker.snapshot().counts['dropped_stale'] == 2
    stale = [r for r in caplog.records if 'dropping a pair' in r.getMessage()]
    assert [r.levelno for r in stale] == [logging.WARNING]
    assert 'dropping a pair 2.000 s old (max_age 0.5 s)' in stale[0].getMessage()
    assert 'dropping a pair 2.000 s old' in worker.health_status().message   # the cause


def test_bad_frames_are_counted_by_reason_logged_with_the_topic_and_the_worker_goes_on(
        engine, caplog):
    clock, published = Clock(), Published()
    worker = make_worker(engine, published, clock, max_age=30.0)
    thermal, rgb = images()
    bad_thermal = SimpleNamespace(**dict(vars(thermal), encoding='weird16'))
    bad_rgb = SimpleNamespace(**dict(vars(rgb), step=3))
    worker.start()
    try:
        with caplog.at_level(logging.WARNING, 'occo_ros.worker'):
            for i, (t, r) in enumerate([(bad_thermal, rgb), (thermal, bad_rgb),
                                        (bad_thermal, bad_rgb)]):
                add_pair(worker, BASE_NS + i * 10**8, t, r)
                assert wait_until(lambda i=i: worker.snapshot().counts['bad_rgb']
                                  + worker.snapshot().counts['bad_thermal'] >= i + 1 + (i == 2))
            worker.set_camera_info(SimpleNamespace(width=200, height=150, k=[1.0], p=[1.0],
                                                   d=[], r=[], distortion_model=''))
            add_pair(worker, BASE_NS + 5 * 10**8, thermal, rgb)
            assert published.wait_for(1)
    finally:
        worker.stop()
    counts = worker.snapshot().counts
    assert (counts['bad_thermal'], counts['bad_rgb'], counts['bad_camera_info']) == (2, 2, 1)
    assert counts['fused'] == 1 and counts['errors'] == 0
    assert published.items[0][1].camera_info is None       # fused without camera_info
    assert "dropping a message on thermal/image_raw: unsupported encoding 'weird16'" \
        in caplog.text
    assert 'dropping a message on rgb/image_raw: inconsistent step' in caplog.text
    # a bad camera_info costs only the camera_info: a WARN, not an ERROR
    assert [r.levelname for r in caplog.records
            if 'dropping a message on rgb/camera_info' in r.message] == ['WARNING']


def test_an_engine_failure_is_counted_as_an_error_and_logged(engine, caplog):
    clock, published = Clock(), Published()
    worker = make_worker(engine, published, clock, max_age=30.0)
    worker.pipeline.input_size = (4, 4)       # below FIFN's minimum: the engine refuses
    with caplog.at_level(logging.ERROR, 'occo_ros.worker'):
        for i in range(3):
            add_pair(worker, BASE_NS + i * 10**8, *images())
            result = worker.process(*worker._slot.get(timeout=0))
            assert not result.ok
    counts = worker.snapshot().counts
    assert counts['engine_error'] == 3 and counts['errors'] == 3 and counts['fused'] == 0
    assert not published.items
    assert caplog.text.count('fusion failed: inference failed: EngineError') == 1   # throttled
    with pytest.raises(EngineError):       # warm-up runs the engine at the network size
        worker.warm_up()


def test_a_failing_publish_is_counted_and_the_worker_survives(engine, caplog):
    clock, published = Clock(), Published()
    calls = []

    def publish(pair, result):
        calls.append(pair)
        if len(calls) == 1:
            raise RuntimeError('publisher gone')
        published(pair, result)

    worker = make_worker(engine, publish, clock, max_age=30.0)
    worker.start()
    try:
        with caplog.at_level(logging.ERROR, 'occo_ros.worker'):
            add_pair(worker, BASE_NS, *images())
            assert wait_until(lambda: worker.snapshot().counts['errors'] == 1)
            add_pair(worker, BASE_NS + 10**8, *images())
            assert published.wait_for(1)
    finally:
        worker.stop()
    assert 'publishing failed: RuntimeError: publisher gone' in caplog.text
    assert worker.snapshot().counts['fused'] == 1


def test_reconfigure_takes_effect_from_the_next_pair(engine):
    clock, published = Clock(), Published()
    worker = make_worker(engine, published, clock, max_age=30.0)
    normalizer = worker.pipeline.normalizer
    worker.reconfigure(small_params(max_age=30.0, output_encoding='mono8', slop=0.001,
                                    thermal_mode='fixed', thermal_max=12000.0))
    assert worker.pipeline.normalizer is normalizer     # the worker thread swaps it
    add_pair(worker, BASE_NS, *images())                # 3 ms apart: above the new slop
    assert worker.snapshot().counts['paired'] == 0
    worker.add('thermal', BASE_NS + 10**8, images()[0])
    worker.add('rgb', BASE_NS + 10**8, images()[1])
    result = worker.process(*worker._slot.get(timeout=0))
    assert result.pixels.ndim == 2 and result.encoding == 'mono8'
    assert worker.pipeline.normalizer is not normalizer
    assert worker.pipeline.normalizer.mode == 'fixed'


def test_stop_and_start_again(engine):
    clock, published = Clock(), Published()
    worker = make_worker(engine, published, clock, max_age=30.0)
    for round_ in range(2):
        worker.start()
        with pytest.raises(RuntimeError, match='already running'):
            worker.start()
        add_pair(worker, BASE_NS + round_ * 10**9, *images())
        assert published.wait_for(round_ + 1)
        worker.stop()
        assert not worker.running
    assert worker.snapshot().counts['fused'] == 2


def test_warm_up_runs_the_engine(engine):
    worker = make_worker(engine, Published(), Clock())
    assert worker.warm_up(iterations=1) > 0


def wait_until(condition, timeout: float = 60.0) -> bool:
    """Poll a condition of the worker thread's progress (no fixed sleeps)."""
    wake = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if condition():
            return True
        wake.wait(0.01)
    return condition()
