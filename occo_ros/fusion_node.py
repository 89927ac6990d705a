"""ROS 2 node ``occo_fusion``: pairs a thermal and an RGB camera and publishes the fused image.

Wiring only: parameters (occo_ros.params), QoS, subscriptions, publishers, diagnostics and a
worker thread. Decoding, pairing, normalisation, registration and the network live in the
ROS-free modules. Subscription callbacks only stamp and pair (microseconds); the worker takes
the newest pair from a one-slot mailbox, so a slow network drops frames instead of building
a backlog, and pairs older than ``max_age`` are dropped before any work is spent on them.

Topics (relative; remap or namespace in the launch file):
  in:  <thermal_topic>, <rgb_topic> (or <rgb_topic>/compressed), <rgb_camera_info_topic>
  out: fused/image (rgb8; header of the RGB image), fused/camera_info, /diagnostics
"""

from __future__ import annotations

import sys
import threading
import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from occo_ros import codec
from occo_ros.allocator import tune_allocator
from occo_ros.engines.base import EngineError
from occo_ros.node_main import run_node
from occo_ros.pairing import ApproximateTimePairer, Pair
from occo_ros.params import PARAMS, SPECS, FusionParams, make_params, validate
from occo_ros.pipeline import create_pipeline, thermal_normalizer
from occo_ros.stats import LatestSlot, RateMeter, RollingStats

STAGES = ('decode', 'preprocess', 'inference', 'compose', 'publish')
#: Waits before the worker starts: 'arrival' = RGB stamp -> the pair is complete here
#: (camera driver, DDS, the later of the two images), 'queue' = pair complete -> worker
#: starts on it (the network still busy with the previous pair). Together with STAGES they
#: add up to end_to_end, so /diagnostics shows where the latency goes.
WAITS = ('arrival', 'queue')


def stamp_ns(header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def make_qos(reliability: str, depth: int) -> QoSProfile:
    """A fresh profile each call: rclpy QoS overrides mutate the object they are given."""
    policy = (ReliabilityPolicy.BEST_EFFORT if reliability == 'best_effort'
              else ReliabilityPolicy.RELIABLE)
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=policy)


def descriptor(spec) -> ParameterDescriptor:
    desc = ParameterDescriptor(description=spec.description, read_only=False)
    if spec.choices:
        desc.additional_constraints = f'one of {list(spec.choices)}'
    if spec.min_value is not None:
        if isinstance(spec.default, bool):
            pass
        elif isinstance(spec.default, int):
            desc.integer_range = [IntegerRange(from_value=int(spec.min_value),
                                               to_value=int(spec.max_value), step=0)]
        else:
            desc.floating_point_range = [FloatingPointRange(from_value=float(spec.min_value),
                                                            to_value=float(spec.max_value),
                                                            step=0.0)]
    if not spec.dynamic:
        desc.additional_constraints += ' (read at start-up; restart to change)'
    return desc


class ThrottledLog:
    """At most one message per (key) every ``period`` seconds, with a count of the others."""

    def __init__(self, logger, period: float = 5.0) -> None:
        self._logger = logger
        self._period = period
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def error(self, key: str, message: str) -> None:
        now = time.monotonic()
        if now - self._last.get(key, -1e9) < self._period:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        extra = self._suppressed.pop(key, 0)
        self._last[key] = now
        suffix = f' ({extra} more like this since the last report)' if extra else ''
        self._logger.error(message + suffix)


class FusionNode(Node):

    def __init__(self, **kwargs) -> None:
        super().__init__('occo_fusion', **kwargs)
        for spec in PARAMS:
            self.declare_parameter(spec.name, spec.default, descriptor(spec))
        self.params: FusionParams = make_params(
            {spec.name: self.get_parameter(spec.name).value for spec in PARAMS})
        p = self.params
        self.pipeline = create_pipeline(p, logger=self.get_logger())
        info = self.pipeline.engine.info
        self.get_logger().info(
            f'backend {info.backend} on {info.device}, precision {info.precision}, '
            f'model {info.model_path}' + (f" ({info.details['reason']})"
                                          if 'reason' in info.details else ''))
        self.output_encoding = p.output_encoding
        self.pairer = ApproximateTimePairer(p.slop, p.queue_size)
        self._pair_lock = threading.Lock()
        self._slot = LatestSlot()
        self._throttled = ThrottledLog(self.get_logger())
        self._camera_info: CameraInfo | None = None

        self.rates = {name: RateMeter() for name in ('thermal', 'rgb', 'output')}
        self.latency = {name: RollingStats()
                        for name in WAITS + STAGES + ('end_to_end', 'pair_dt')}
        self.counts = {'fused': 0, 'dropped_stale': 0, 'dropped_busy': 0, 'bad_thermal': 0,
                       'bad_rgb': 0, 'errors': 0}
        self._last_seen = {'thermal': None, 'rgb': None}

        in_qos = (p.input_reliability, p.input_depth)
        self.create_subscription(Image, p.thermal_topic, self._on_thermal, make_qos(*in_qos))
        if p.rgb_compressed:
            self._rgb_topic = p.rgb_topic.rstrip('/') + '/compressed'
            self.create_subscription(CompressedImage, self._rgb_topic, self._on_rgb,
                                     make_qos(*in_qos))
        else:
            self._rgb_topic = p.rgb_topic
            self.create_subscription(Image, self._rgb_topic, self._on_rgb, make_qos(*in_qos))
        self.create_subscription(CameraInfo, p.rgb_camera_info_topic, self._on_camera_info,
                                 make_qos(*in_qos))
        out_qos = (p.output_reliability, p.output_depth)
        self.image_pub = self.create_publisher(Image, 'fused/image', make_qos(*out_qos))
        self.info_pub = self.create_publisher(CameraInfo, 'fused/camera_info',
                                              make_qos(*out_qos))
        self.diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.create_timer(p.diagnostics_period, self._publish_diagnostics)
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self._running = True
        self._worker = threading.Thread(target=self._work, name='occo_fusion_worker',
                                        daemon=True)
        self._worker.start()
        self.get_logger().info(
            f'fusing {p.thermal_topic} + {self._rgb_topic} -> fused/image '
            f'({p.output_width}x{p.output_height}, network {p.input_width}x{p.input_height})')

    # -- subscription callbacks: stamp, pair, hand off ---------------------------------------
    def _on_thermal(self, msg: Image) -> None:
        self._on_input('thermal', msg)

    def _on_rgb(self, msg) -> None:
        self._on_input('rgb', msg)

    def _on_input(self, stream: str, msg) -> None:
        self.rates[stream].tick()
        self._last_seen[stream] = time.monotonic()
        with self._pair_lock:
            pair = self.pairer.add(stream, stamp_ns(msg.header), msg)
        if pair is not None:
            self.latency['pair_dt'].add(pair.dt * 1e3)
            self.latency['arrival'].add(
                (self.get_clock().now().nanoseconds - pair.rgb_stamp_ns) * 1e-6)
            if self._slot.put((pair, time.perf_counter())) is not None:
                self.counts['dropped_busy'] += 1

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._camera_info = msg

    # -- worker ------------------------------------------------------------------------------
    def _work(self) -> None:
        while self._running:
            item = self._slot.get(timeout=0.2)
            if item is None or not self.context.ok():   # Ctrl-C shuts the context down first
                continue
            pair, completed = item
            self.latency['queue'].add((time.perf_counter() - completed) * 1e3)
            age = (self.get_clock().now().nanoseconds - pair.rgb_stamp_ns) * 1e-9
            if age > self.params.max_age:
                self.counts['dropped_stale'] += 1
                self._throttled.error('stale', f'dropping a pair {age:.3f} s old '
                                      f'(max_age {self.params.max_age} s): the network is '
                                      'slower than the cameras or the clocks disagree')
                continue
            try:
                self._fuse_and_publish(pair)
            except Exception as exc:  # one bad frame must never stop the node
                self.counts['errors'] += 1
                self._throttled.error(f'error:{type(exc).__name__}',
                                      f'fusion failed: {type(exc).__name__}: {exc}')

    def _decode(self, stream: str, msg):
        topic = self.params.thermal_topic if stream == 'thermal' else self._rgb_topic
        try:
            if isinstance(msg, CompressedImage):
                return codec.decode_compressed(msg.format, msg.data)
            return codec.decode_image(msg)
        except codec.ImageDecodeError as exc:
            self.counts[f'bad_{stream}'] += 1
            self._throttled.error(f'bad:{stream}:{exc.reason}',
                                  f'dropping a message on {topic}: {exc}')
            return None, None

    def _fuse_and_publish(self, pair: Pair) -> None:
        start = time.perf_counter()
        thermal, _ = self._decode('thermal', pair.thermal)
        rgb, order = self._decode('rgb', pair.rgb)
        if thermal is None or rgb is None:
            return
        decode_ms = (time.perf_counter() - start) * 1e3
        frame = self.pipeline.fuse(thermal, rgb, order)

        start = time.perf_counter()
        header = pair.rgb.header
        out = frame.in_encoding(self.output_encoding)
        self.image_pub.publish(Image(header=header,
                                     **codec.array_to_image_fields(out, self.output_encoding)))
        if self._camera_info is not None:
            self.info_pub.publish(CameraInfo(
                header=header, **self.pipeline.fused_camera_info(self._camera_info)))
        times = dict(frame.times_ms, decode=decode_ms,
                     publish=(time.perf_counter() - start) * 1e3)
        for stage in STAGES:
            self.latency[stage].add(times[stage])
        now = self.get_clock().now().nanoseconds
        self.latency['end_to_end'].add((now - pair.rgb_stamp_ns) * 1e-6)
        self.rates['output'].tick()
        self.counts['fused'] += 1

    # -- parameters and diagnostics ------------------------------------------------------------
    def _on_set_parameters(self, changes: list[Parameter]) -> SetParametersResult:
        values = {}
        for change in changes:
            spec = SPECS.get(change.name)
            if spec is None:
                continue
            if not spec.dynamic:
                return SetParametersResult(
                    successful=False, reason=f'{change.name} is read at start-up; restart '
                    'the node to change it')
            problem = validate(change.name, change.value)
            if problem:
                return SetParametersResult(successful=False, reason=problem)
            values[change.name] = change.value
        if not values:
            return SetParametersResult(successful=True)
        merged = {f: getattr(self.params, f) for f in SPECS}
        merged.update(values)
        try:
            params = make_params({k: list(v) if isinstance(v, tuple) else v
                                  for k, v in merged.items()})
        except ValueError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        self.params = params
        with self._pair_lock:
            self.pairer.slop = params.slop
        if any(name.startswith('thermal_') for name in values):
            self.pipeline.normalizer = thermal_normalizer(params)
        self.output_encoding = params.output_encoding
        self.get_logger().info(f'parameters changed: {values}')
        return SetParametersResult(successful=True)

    def diagnostic_values(self) -> dict[str, str]:
        """Everything /diagnostics reports, as strings (KeyValue values)."""
        info = self.pipeline.engine.info
        values = {'backend': info.backend, 'device': info.device, 'precision': info.precision,
                  'model': info.model_path, 'backend_reason': str(info.details.get('reason', '')),
                  # The file that actually runs: a cached/shipped ONNX export or an engine.
                  'model_file': str(info.details.get('engine_path')
                                    or info.details.get('onnx_path') or info.model_path)}
        for name, meter in self.rates.items():
            values[f'{name}_rate_hz'] = f'{meter.rate():.2f}'
        for name, stats in self.latency.items():
            values[f'{name}_ms_p50'] = f'{stats.percentile(50):.2f}'
            values[f'{name}_ms_p99'] = f'{stats.percentile(99):.2f}'
        c = self.pairer.counts
        values.update(paired=str(c.paired), unpaired_thermal=str(c.unpaired_thermal),
                      unpaired_rgb=str(c.unpaired_rgb), time_jumps=str(c.time_jumps))
        values.update({k: str(v) for k, v in self.counts.items()})
        return values

    def _publish_diagnostics(self) -> None:
        values = self.diagnostic_values()
        level, message = DiagnosticStatus.OK, 'fusing'
        now = time.monotonic()
        stale = [s for s, t in self._last_seen.items()
                 if t is None or now - t > self.params.input_timeout]
        if stale:
            level = DiagnosticStatus.WARN
            message = 'no data from ' + ' and '.join(stale) + ' camera'
            self._throttled.error('stale_input', f'{message} for more than '
                                  f'{self.params.input_timeout} s')
        elif self.counts['errors'] and self.rates['output'].rate() == 0.0:
            level, message = DiagnosticStatus.ERROR, 'inputs arrive but fusion fails'
        status = DiagnosticStatus(level=level, name=f'{self.get_name()}: fusion',
                                  message=message, hardware_id=values['device'],
                                  values=[KeyValue(key=k, value=v) for k, v in values.items()])
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(array)

    def destroy_node(self) -> None:
        self._running = False
        self._slot.close()
        self._worker.join(timeout=30.0)
        self.pipeline.engine.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    """Entry point of ``fusion_node``; returns non-zero when the node cannot start."""
    tune_allocator()
    return run_node(FusionNode, 'occo_fusion', args,
                    startup_errors=(ValueError, EngineError, OSError),
                    spin=lambda node: not node.params.build_only)


if __name__ == '__main__':
    sys.exit(main())
