"""The fusion worker: pairs camera messages and fuses the newest pair on its own thread.

No ROS import: the node (and its managed variant) hand it messages from their subscription
callbacks and get fused frames back through a publish callback, so all of its logic runs in
unit tests without DDS. Ownership, which is the point of this module:

* the subscription side (:meth:`FusionWorker.add`, :meth:`FusionWorker.set_camera_info`) only
  checks (occo_ros.core.arrival: no decoding; a refused message is counted once, by its reason,
  and never paired), stamps, pairs and puts the pair into a one-slot mailbox
  (:class:`stats.LatestSlot`): a slow network drops pairs (``dropped_busy``) instead of
  building a backlog;
* the worker thread alone touches the pipeline (engine, thermal normaliser state); parameter
  changes (:meth:`FusionWorker.reconfigure`) are picked up by it before the next pair;
* every counter and the pairer live behind one lock; latency windows and rates have their
  own (stats.RollingStats, stats.RateMeter); :meth:`FusionWorker.snapshot` reads them all.

A pair whose RGB stamp is older than ``max_age`` when the worker takes it is dropped before
any work is spent on it (``dropped_stale``, a throttled warning: expected under load). A
frame the pipeline cannot fuse is counted by its reason (pipeline.REASONS) and logged as an
error, throttled per reason and kind; it never stops the worker.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
import logging
import threading
import time
from typing import Any

from occo_ros.core.health import Health, Status
from occo_ros.core.pairing import Pair
from occo_ros.core.stats import LatestSlot, RateMeter, RollingStats, ThrottledLog
from occo_ros.core.stream import StreamStep
from occo_ros.params import SPECS, FusionSettings
from occo_ros.pipeline import (
    BAD_CAMERA_INFO,
    BAD_OUTPUT,
    BAD_PAIR,
    ENGINE_ERROR,
    REASONS,
    FrameResult,
    FusionPipeline,
    thermal_normalizer,
)

#: Per-frame stages, timed for every fused pair (ms): the pipeline's and the publish callback.
STAGES = ('decode', 'preprocess', 'inference', 'compose', 'publish')
#: Waits before the worker starts: 'arrival' = RGB stamp -> the pair is complete here
#: (camera driver, DDS, the later of the two images), 'queue' = pair complete -> worker
#: starts on it (the network still busy with the previous pair). Together with STAGES they
#: add up to end_to_end, so /diagnostics shows where the latency goes.
WAITS = ('arrival', 'queue')
LATENCIES = WAITS + STAGES + ('end_to_end', 'pair_dt')
#: Counters of :meth:`FusionWorker.snapshot`: 'errors' = pairs decoded but not published
#: (bad_pair, engine_error, bad_output or a failing publish callback); 'bad_stamp' =
#: messages refused on arrival for a zero or far-future stamp (occo_ros.core.arrival).
COUNTS = ('fused', 'dropped_stale', 'dropped_busy') + REASONS + ('bad_stamp', 'errors')


@dataclass(frozen=True)
class WorkerSnapshot:
    """Everything the worker knows about itself at one moment (for diagnostics)."""

    counts: dict            # COUNTS -> int, plus the pairer's paired/unpaired_*/time_jumps
    rates_hz: dict          # 'thermal', 'rgb', 'output' -> events per second
    latency_ms: dict        # LATENCIES -> (p50, p99), NaN when nothing measured yet
    input_age_s: dict       # 'thermal', 'rgb' -> seconds since the last message, None: never
    running: bool

    def values(self) -> dict[str, str]:
        """Rates, latency percentiles and counters as /diagnostics key/value strings."""
        values = {f'{name}_rate_hz': f'{rate:.2f}' for name, rate in self.rates_hz.items()}
        for name, (p50, p99) in self.latency_ms.items():
            values[f'{name}_ms_p50'] = f'{p50:.2f}'
            values[f'{name}_ms_p99'] = f'{p99:.2f}'
        values.update({k: str(v) for k, v in self.counts.items()})
        return values


class FusionWorker:
    """Pairs, fuses and publishes on one thread; see the module docstring.

    ``publish(pair, result)`` is called on the worker thread with every fused frame.
    ``topics`` names the input topics for log messages ('thermal', 'rgb', 'camera_info').
    ``clock_ns`` is the clock the camera stamps are compared with (the node's, so simulated
    time works). ``log`` is any logger with ``info``, ``warning`` and ``error`` (logging or
    rclpy). ``input_timeout`` is the node's health timeout (occo_ros.core.health.Health).
    """

    def __init__(self, pipeline: FusionPipeline, settings: FusionSettings,
                 publish: Callable[[Pair, FrameResult], None], *,
                 topics: dict[str, str] | None = None,
                 clock_ns: Callable[[], int] = time.time_ns, log: Any = None,
                 input_timeout: float = SPECS['input_timeout'].default) -> None:
        self.pipeline = pipeline
        self._settings = settings
        self._publish = publish
        self._topics = topics or {'thermal': 'thermal', 'rgb': 'rgb',
                                  'camera_info': 'camera_info'}
        self._clock_ns = clock_ns
        self._log = log or logging.getLogger(__name__)
        self._throttled = ThrottledLog(self._log)
        self._lock = threading.Lock()
        self._stream = StreamStep(settings)
        self._counts = dict.fromkeys(COUNTS, 0)
        self._last_seen: dict[str, float | None] = {'thermal': None, 'rgb': None}
        self.health = Health(input_timeout)
        self._paired_seen = 0
        self._camera_info = None
        self._renormalize = False
        self.rates = {name: RateMeter() for name in ('thermal', 'rgb', 'output')}
        self.latency = {name: RollingStats() for name in LATENCIES}
        self._slot = LatestSlot()
        self._thread: threading.Thread | None = None
        self._running = False

    # -- lifetime ----------------------------------------------------------------------------
    def warm_up(self, iterations: int = 3) -> float:
        """Run the engine a few times at the network size so the first pair costs what the
        others do (lazy initialisation, kernel selection); returns the seconds it took."""
        start = time.perf_counter()
        width, height = self.pipeline.input_size
        self.pipeline.engine.warmup(height, width, iterations)
        return time.perf_counter() - start

    def start(self) -> None:
        """Start the worker thread (again after :meth:`stop`); pairs added before are lost."""
        if self._thread is not None:
            raise RuntimeError('the worker is already running')
        with self._lock:
            self._stream = StreamStep(self._settings)
            self._paired_seen = 0
        self._slot = LatestSlot()
        self._running = True
        self._thread = threading.Thread(target=self._work, name='occo_fusion_worker',
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop taking pairs and wait for the frame under way; the engine stays loaded."""
        thread, self._thread = self._thread, None
        self._running = False
        self._slot.close()
        if thread is not None:
            thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None

    # -- subscription side: microseconds, never blocks on the network -------------------------
    def add(self, stream: str, stamp_ns: int, msg: Any) -> None:
        """A 'thermal' or 'rgb' message stamped ``stamp_ns``; pairs go to the worker. A
        message failing the arrival checks (occo_ros.core.arrival) is counted, logged and
        dropped here, before pairing."""
        self.rates[stream].tick()
        self.health.received(stream)
        now_ns = self._clock_ns()
        with self._lock:
            self._last_seen[stream] = time.monotonic()
            settings, step = self._settings, self._stream
        refusal = step.check(stream, msg, stamp_ns, now_ns)   # reads the message: no lock
        if refusal is not None:
            key = f'{refusal.counter}:{refusal.kind}'
            self._count(refusal.counter)
            self.health.problem(key, self._describe(stream, refusal.message))
            self._throttled.error(key, self._describe(stream, refusal.message))
            return
        with self._lock:
            pair = self._stream.pair(stream, stamp_ns, msg)
        if pair is None:
            return
        self.latency['pair_dt'].add(pair.dt * 1e3)
        age_ms = (now_ns - pair.rgb_stamp_ns) * 1e-6
        if abs(age_ms) <= settings.max_age * 1e3:   # a stale pair is dropped, not a latency
            self.latency['arrival'].add(age_ms)
        if self._slot.put((pair, time.perf_counter())) is not None:
            self._count('dropped_busy')

    def set_camera_info(self, info: Any) -> None:
        """The RGB camera's newest camera_info, adapted for every following fused frame."""
        with self._lock:
            self._camera_info = info

    def reconfigure(self, settings: FusionSettings) -> None:
        """New (validated) parameters: slop, max_age, output encoding and thermal
        normalisation take effect from the next pair; the others are start-up only."""
        with self._lock:
            old, self._settings = self._settings, settings
            self._stream.reconfigure(settings)
            if old.thermal != settings.thermal:
                self._renormalize = True

    # -- worker thread -----------------------------------------------------------------------
    def _work(self) -> None:
        slot = self._slot
        while self._running:
            item = slot.get(timeout=0.2)
            if item is not None and self._running:
                self.process(*item)

    def process(self, pair: Pair, completed: float) -> FrameResult | None:
        """Fuse and publish one pair completed at ``completed`` (perf_counter); the worker
        thread's step, public so tests can drive it synchronously. Returns the result, or
        None when the pair was too old."""
        self.latency['queue'].add((time.perf_counter() - completed) * 1e3)
        with self._lock:
            settings, camera_info = self._settings, self._camera_info
            renormalize, self._renormalize = self._renormalize, False
        if renormalize:
            self.pipeline.normalizer = thermal_normalizer(settings)
        age = (self._clock_ns() - pair.rgb_stamp_ns) * 1e-9
        if age > settings.max_age:
            self._count('dropped_stale')
            text = (f'dropping a pair {age:.3f} s old (max_age {settings.max_age} s): the '
                    'network is slower than the cameras or the clocks disagree')
            self.health.problem('stale', text)
            # expected under load (e.g. the first pairs after warm-up); lasting staleness is
            # the health's WARN/ERROR, with the measured age
            self._throttled.warning('stale', text)
            return None
        result = self.pipeline.fuse_frame(pair.thermal, pair.rgb, camera_info,
                                          settings.output_encoding)
        for problem in result.problems:
            self._count(problem.reason)
            key, text = f'{problem.reason}:{problem.kind}', self._describe(problem.stream,
                                                                           problem.message)
            self.health.problem(key, text)
            if problem.reason == BAD_CAMERA_INFO:   # the image still goes out, without it
                self._throttled.warning(key, text)
            else:
                self._throttled.error(key, text)
        if not result.ok:
            if result.reason in (BAD_PAIR, ENGINE_ERROR, BAD_OUTPUT):
                self._count('errors')
            return result
        start = time.perf_counter()
        try:
            self._publish(pair, result)
        except Exception as exc:  # noqa: BLE001 (the worker outlives one failed publish)
            self._count('errors')
            key, text = (f'publish:{type(exc).__name__}',
                         f'publishing failed: {type(exc).__name__}: {exc}')
            self.health.problem(key, text)
            self._throttled.error(key, text)
            return result
        times = dict(result.times_ms, publish=(time.perf_counter() - start) * 1e3)
        for stage in STAGES:
            self.latency[stage].add(times[stage])
        self.latency['end_to_end'].add((self._clock_ns() - pair.rgb_stamp_ns) * 1e-6)
        self.rates['output'].tick()
        self._count('fused')
        self.health.published()
        return result

    def _describe(self, stream: str, message: str) -> str:
        if stream in self._topics:
            return f'dropping a message on {self._topics[stream]}: {message}'
        return f'fusion failed: {message}'

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    # -- diagnostics -------------------------------------------------------------------------
    def health_status(self) -> Status:
        """The health (occo_ros.core.health) for one diagnostics tick; when nothing is fused and no
        problem was recorded, the cause is guessed from the pairing since the last tick."""
        with self._lock:
            paired, slop = self._stream.counts.paired, self._settings.slop
            new_pairs, self._paired_seen = paired > self._paired_seen, paired
        if new_pairs:
            cause = 'pairs form but none was fused yet (inference slower than input_timeout?)'
        else:
            cause = (f'no pairs form: thermal and RGB stamps are never within slop ({slop} s) '
                     'of each other')
        return self.health.status(cause)

    def snapshot(self) -> WorkerSnapshot:
        now = time.monotonic()
        with self._lock:
            counts = dict(self._counts)
            c = self._stream.counts
            counts.update(paired=c.paired, unpaired_thermal=c.unpaired_thermal,
                          unpaired_rgb=c.unpaired_rgb, time_jumps=c.time_jumps)
            ages = {s: None if t is None else now - t for s, t in self._last_seen.items()}
        return WorkerSnapshot(
            counts=counts,
            rates_hz={name: meter.rate() for name, meter in self.rates.items()},
            latency_ms={name: (s.percentile(50), s.percentile(99))
                        for name, s in self.latency.items()},
            input_age_s=ages, running=self.running)
