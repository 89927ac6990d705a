"""ROS 2 node ``occo_fusion``: pairs a thermal and an RGB camera and publishes the fused image.

Wiring only: parameters (occo_ros.params), QoS, subscriptions, publishers and diagnostics
around one :class:`occo_ros.worker.FusionWorker`, which pairs, fuses (the frame step of
occo_ros.pipeline) and counts on its own thread. Subscription callbacks only hand messages
to the worker (microseconds). :class:`FusionWiring` is shared with the managed (lifecycle)
variant in occo_ros.ros.fusion_lifecycle_node.

Topics (relative; remap or namespace in the launch file):
  in:  <thermal_topic>, <rgb_topic> (or <rgb_topic>/compressed), <rgb_camera_info_topic>
  out: fused/image (rgb8; header of the RGB image), fused/image/compressed (JPEG, encoded
       only while it has subscribers), fused/camera_info, /diagnostics

Health runs on a steady clock (diagnostics, input timeouts, the graph check), so it is
published with use_sim_time and no /clock too, and then says so.
"""

from __future__ import annotations

from collections.abc import Callable
import sys
import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_policy_name_from_kind
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

try:
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import SubscriptionEventCallbacks

from occo_ros.core import codec
from occo_ros.core.health import WARN
from occo_ros.core.pairing import Pair, stamp_ns
from occo_ros.core.registration import LOW_COVERAGE
from occo_ros.core.stats import ChangeLog
from occo_ros.engines import EngineError, EngineSpec
from occo_ros.params import (
    NODE_NAME,
    PARAMS,
    SPECS,
    FusionSettings,
    NodeParams,
    check_params,
    validate,
)
from occo_ros.pipeline import FrameResult, create_pipeline
from occo_ros.ros.node_main import ended_by_shutdown, run_node
from occo_ros.util.allocator import tune_allocator
from occo_ros.worker import FusionWorker

#: What loading the engine raises for a bad model, parameter or file (CheckpointError and
#: CalibrationError are ValueErrors): one clear line, no traceback.
STARTUP_ERRORS = (ValueError, EngineError, OSError)


#: Seconds between looks at the graph (publishers and their QoS on the input topics).
GRAPH_PERIOD_S = 1.0


def offered_reliability(publishers: list) -> str:
    """input_reliability auto: what matches ``publishers`` (TopicEndpointInfo) best, as
    image_proc does: reliable when every publisher offers reliable (also when there is none
    yet: REP-2003 cameras publish reliable, and reliable on both sides carries full-size
    images over the default transports), else best_effort (a best-effort publisher does
    not match a reliable subscription)."""
    if all(p.qos_profile.reliability == ReliabilityPolicy.RELIABLE for p in publishers):
        return 'reliable'
    return 'best_effort'


def make_qos(reliability: str, depth: int) -> QoSProfile:
    """A fresh profile each call: rclpy QoS overrides mutate the object they are given."""
    policy = (ReliabilityPolicy.BEST_EFFORT if reliability == 'best_effort'
              else ReliabilityPolicy.RELIABLE)
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=policy)


def descriptor(spec) -> ParameterDescriptor:
    """The ROS descriptor of a params row: start-up-only rows are read-only, so `ros2 param
    describe` says so and rclpy itself refuses a set ('Trying to set a read-only
    parameter')."""
    # dynamic_typing: a value of the wrong type reaches params.validate, whose reason names
    # the parameter and what it needs (rclpy's own refusal says only "expected '3' got '4'")
    desc = ParameterDescriptor(description=spec.description, read_only=not spec.dynamic,
                               dynamic_typing=spec.dynamic)
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
        desc.additional_constraints += ' (read at start-up; restart the node to change it)'
    return desc


class FusionWiring:
    """The ROS side of a fusion node, mixed into an rclpy Node or LifecycleNode subclass,
    which calls these steps in its own order (see FusionNode and the lifecycle variant)."""

    node_params: NodeParams          # wiring (topics, QoS, diagnostics timing)
    settings: FusionSettings         # what the worker fuses with (dynamic rows change it)
    _param_values: dict              # params.check_params values of every row (the engine's)
    worker: FusionWorker | None = None
    _clock_problem_logged: str | None = None

    def _declare_parameters(self) -> None:
        for spec in PARAMS:
            self.declare_parameter(spec.name, spec.default, descriptor(spec))
        self._param_values = check_params(
            {spec.name: self.get_parameter(spec.name).value for spec in PARAMS})
        self.node_params = NodeParams.from_values(self._param_values)
        self.settings = FusionSettings.from_values(self._param_values)
        self._changes = ChangeLog(self.get_logger().info)   # flushed with diagnostics
        self.add_on_set_parameters_callback(self._on_set_parameters)

    def _load_worker(self) -> None:
        """Load the engine (raises EngineError, CheckpointError or ValueError naming the
        problem), build the worker and warm the engine up."""
        p, spec = self.node_params, EngineSpec.from_params(self._param_values)
        pipeline = create_pipeline(self.settings, spec, logger=self.get_logger())
        info = pipeline.engine.info
        self.get_logger().info(
            f'backend {info.backend} on {info.device}, precision {info.precision}, '
            f'model {info.model_path}' + (f" ({info.details['reason']})"
                                          if 'reason' in info.details else ''))
        warnings = {'fallback': info.details.get('fallback_warning')}
        if info.precision != spec.precision:
            warnings['precision'] = (f'precision {spec.precision} is not available on '
                                     f'{info.backend} {info.device}: running {info.precision}')
            self.get_logger().warning(warnings['precision'])
        share = pipeline.registration.thermal_coverage()   # below MIN_COVERAGE: refused
        if share < LOW_COVERAGE:
            warnings['coverage'] = (f'the thermal image covers only {share:.0%} of the fused '
                                    f'frame ({pipeline.registration.source["calibration"]})')
            self.get_logger().warning(warnings['coverage'])
        self._rgb_topic = (p.rgb_topic.rstrip('/') + '/compressed' if p.rgb_compressed
                           else p.rgb_topic)
        self.worker = FusionWorker(
            pipeline, self.settings, self._publish_fused,
            topics={'thermal': p.thermal_topic, 'rgb': self._rgb_topic,
                    'camera_info': p.rgb_camera_info_topic},
            clock_ns=lambda: self.get_clock().now().nanoseconds, log=self.get_logger(),
            input_timeout=p.input_timeout)
        for key, text in warnings.items():      # WARN in diagnostics for as long as it runs
            self.worker.health.set_warning(key, text)
        seconds = self.worker.warm_up()
        self.get_logger().info(f'engine warmed up in {seconds:.2f} s')

    def _release_worker(self) -> None:
        """Stop the worker and release the engine (device memory)."""
        if self.worker is not None:
            self.worker.stop()
            self.worker.pipeline.engine.close()
            self.worker = None

    def _create_publishers(self, create: Callable) -> None:
        """Output publishers made with ``create`` (create_publisher or, for the managed node,
        create_lifecycle_publisher)."""
        out_qos = (self.node_params.output_reliability, self.node_params.output_depth)
        self.image_pub = create(Image, 'fused/image', make_qos(*out_qos))
        self.compressed_pub = create(CompressedImage, 'fused/image/compressed',
                                     make_qos(*out_qos))
        self.info_pub = create(CameraInfo, 'fused/camera_info', make_qos(*out_qos))
        self.diag_pub = create(DiagnosticArray, '/diagnostics', 10)
        self.jpeg_encodes = 0

    def _subscribe(self) -> None:
        """Input subscriptions, the diagnostics timer and the graph check, both on a steady
        clock (a simulated one without /clock never moves)."""
        p, s = self.node_params, self.settings
        rgb_type = CompressedImage if p.rgb_compressed else Image
        self._inputs = {'thermal': (Image, p.thermal_topic, self._on_thermal),
                        'rgb': (rgb_type, self._rgb_topic, self._on_rgb),
                        'camera_info': (CameraInfo, p.rgb_camera_info_topic,
                                        self._on_camera_info)}
        self._subscriptions_in = {}    # stream -> (subscription, reliability)
        self._incompatible_qos = {}    # stream -> (events so far, what the last one said)
        for stream in self._inputs:
            self._subscribe_input(stream)
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self._ros_time_seen = (None, 0.0)   # (last ROS time, steady s when it last moved)
        self._timers = [self.create_timer(p.diagnostics_period, self._publish_diagnostics,
                                          clock=steady),
                        self.create_timer(GRAPH_PERIOD_S, self._check_graph, clock=steady)]
        self.get_logger().info(
            f'fusing {p.thermal_topic} + {self._rgb_topic} -> fused/image '
            f'({s.output_width}x{s.output_height}, network {s.input_width}x{s.input_height})')

    def _subscribe_input(self, stream: str) -> None:
        """(Re)create the subscription of ``stream`` with the reliability input_reliability
        asks for (auto: the publishers' own, see offered_reliability)."""
        msg_type, topic, callback = self._inputs[stream]
        old, _ = self._subscriptions_in.pop(stream, (None, None))
        if old is not None:
            topic_name = old.topic_name     # resolved and remapped
            self.destroy_subscription(old)
        reliability = self.node_params.input_reliability
        if reliability == 'auto':
            reliability = offered_reliability(self.get_publishers_info_by_topic(
                topic_name if old is not None else topic))
        events = SubscriptionEventCallbacks(
            incompatible_qos=lambda event: self._on_incompatible_qos(stream, event))
        subscription = self.create_subscription(
            msg_type, topic, callback, make_qos(reliability, self.node_params.input_depth),
            event_callbacks=events)
        self._subscriptions_in[stream] = (subscription, reliability)
        self._incompatible_qos.pop(stream, None)     # an event of the old one is history

    def _check_graph(self) -> None:
        """input_reliability auto: follow the publishers' reliability as they come and go."""
        if self.node_params.input_reliability != 'auto':
            return
        for stream, (subscription, reliability) in list(self._subscriptions_in.items()):
            wanted = offered_reliability(self.get_publishers_info_by_topic(
                subscription.topic_name))
            if wanted != reliability:
                self.get_logger().info(f'{subscription.topic_name}: the publishers offer '
                                       f'{wanted}; subscribing {wanted}')
                self._subscribe_input(stream)

    def _on_incompatible_qos(self, stream: str, event) -> None:
        subscription, reliability = self._subscriptions_in.get(stream, (None, '?'))
        topic = subscription.topic_name if subscription else stream
        policy = qos_policy_name_from_kind(event.last_policy_kind)
        self._incompatible_qos[stream] = (
            event.total_count,
            f'a publisher on {topic} and this {reliability} subscription disagree on '
            f'{policy} (incompatible-QoS event, {event.total_count} so far)')

    def _unsubscribe(self) -> None:
        for subscription, _ in getattr(self, '_subscriptions_in', {}).values():
            self.destroy_subscription(subscription)
        self._subscriptions_in = {}
        for timer in getattr(self, '_timers', ()):
            self.destroy_timer(timer)
        self._timers = []

    # -- subscription callbacks: hand off to the worker --------------------------------------
    def _on_thermal(self, msg: Image) -> None:
        self.worker.add('thermal', stamp_ns(msg.header), msg)

    def _on_rgb(self, msg) -> None:
        self.worker.add('rgb', stamp_ns(msg.header), msg)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self.worker.set_camera_info(msg)

    # -- the worker's publish callback (worker thread) ----------------------------------------
    def _publish_fused(self, pair: Pair, result: FrameResult) -> None:
        header = pair.rgb.header
        try:
            self.image_pub.publish(Image(header=header, **result.image_fields()))
            if self.compressed_pub.get_subscription_count() > 0:   # no cost for nobody
                self.compressed_pub.publish(CompressedImage(header=header, **codec.jpeg_fields(
                    result.pixels, result.encoding, self._param_values['jpeg_quality'])))
                self.jpeg_encodes += 1
            if result.camera_info is not None:
                self.info_pub.publish(CameraInfo(header=header, **result.camera_info))
        except Exception as exc:
            if ended_by_shutdown(exc, self.context):   # Ctrl-C meanwhile: a normal end
                return
            raise

    # -- parameters and diagnostics ------------------------------------------------------------
    def _on_set_parameters(self, changes: list[Parameter]) -> SetParametersResult:
        """Dynamic parameters only (rclpy refuses read-only ones before this is called).
        Any value is applied or refused with a reason: nothing raised here may escape into
        rclpy's parameter service (it would end the node)."""
        try:
            return self._apply_parameters(changes)
        except Exception as exc:  # noqa: BLE001 (refuse, never crash, on a parameter set)
            self.get_logger().error(f'refused parameters {[c.name for c in changes]}: '
                                    f'{type(exc).__name__}: {exc}')
            return SetParametersResult(successful=False,
                                       reason=f'cannot apply: {type(exc).__name__}: {exc}')

    def _apply_parameters(self, changes: list[Parameter]) -> SetParametersResult:
        values = {}
        for change in changes:
            if change.name not in SPECS:
                continue
            problem = validate(change.name, change.value)
            if problem:
                return SetParametersResult(successful=False, reason=problem)
            values[change.name] = change.value
        if not values:
            return SetParametersResult(successful=True)
        try:   # dynamic rows are all fusion settings
            checked = check_params(dict(self._param_values, **values))
        except ValueError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        self._param_values, self.settings = checked, FusionSettings.from_values(checked)
        if self.worker is not None:
            self.worker.reconfigure(self.settings)
        self._changes.changed(values)
        return SetParametersResult(successful=True)

    def diagnostic_values(self) -> dict[str, str]:
        """Everything /diagnostics reports, as strings (KeyValue values)."""
        pipeline = self.worker.pipeline
        info = pipeline.engine.info
        values = {'backend': info.backend, 'device': info.device, 'precision': info.precision,
                  'model': info.model_path, 'backend_reason': str(info.details.get('reason', '')),
                  # The file that actually runs: a cached/shipped ONNX export or an engine.
                  'model_file': str(info.details.get('engine_path')
                                    or info.details.get('onnx_path') or info.model_path)}
        values.update(pipeline.registration.source)
        values.update(self.worker.snapshot().values())
        subscriptions = getattr(self, '_subscriptions_in', {})
        for stream, (subscription, reliability) in subscriptions.items():
            values[f'{stream}_qos'] = reliability
            values[f'{stream}_publishers'] = str(self.count_publishers(subscription.topic_name))
            values[f'{stream}_incompatible_qos'] = str(
                self._incompatible_qos.get(stream, (0, ''))[0])
        values['compressed_encodes'] = str(getattr(self, 'jpeg_encodes', 0))
        return values

    def _clock_problem(self) -> str | None:
        """With use_sim_time: why the node's clock does not move (no /clock), else None."""
        if not self.get_parameter('use_sim_time').value:
            return None
        now_ns, steady = self.get_clock().now().nanoseconds, time.monotonic()
        last_ns, moved = self._ros_time_seen
        if now_ns != last_ns:
            self._ros_time_seen = (now_ns, steady)
            moved = steady
        if now_ns and steady - moved <= self.node_params.input_timeout:
            return None
        return ('use_sim_time is true but /clock is silent: the node has no time (play a bag '
                'with --clock, start the simulator, or set use_sim_time false)')

    def _publish_diagnostics(self) -> None:
        """Health (occo_ros.core.health: never OK while nothing is fused), logged on changes."""
        self._changes.flush()
        values = self.diagnostic_values()
        for stream in ('thermal', 'rgb'):
            self.worker.health.set_graph(stream, int(values[f'{stream}_publishers']),
                                         self._incompatible_qos.get(stream, (0, ''))[1])
        clock_problem = self._clock_problem()
        self.worker.health.set_warning('clock', clock_problem)
        health = self.worker.health_status()
        logger = self.get_logger()   # one call site per severity: rclpy refuses a mix
        if health.log == 'info':
            logger.info(health.log_message)
        elif health.log == 'warning':
            logger.warning(health.log_message)
        elif health.log == 'error':
            logger.error(health.log_message)
        level, message = health.level, health.message
        if clock_problem and clock_problem not in message:   # whatever else is wrong
            level, message = max(level, WARN), f'{clock_problem}; {message}'
            if self._clock_problem_logged != clock_problem:
                logger.warning(clock_problem)
        self._clock_problem_logged = clock_problem
        # the fully qualified name tells namespaced instances apart
        status = DiagnosticStatus(level=bytes([level]),
                                  name=f'{self.get_fully_qualified_name()}: fusion',
                                  message=message,
                                  hardware_id=f"{values['backend']} on {values['device']}",
                                  values=[KeyValue(key=k, value=v) for k, v in values.items()])
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(array)


class FusionNode(FusionWiring, Node):
    """The plain node: loads the engine, warms it up and starts fusing in its constructor."""

    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self._declare_parameters()
        self._load_worker()
        self._create_publishers(self.create_publisher)
        self.worker.start()
        self._subscribe()

    def destroy_node(self) -> None:
        self._release_worker()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    """Entry point of ``fusion_node``; returns non-zero when the node cannot start."""
    tune_allocator()
    return run_node(FusionNode, NODE_NAME, args, startup_errors=STARTUP_ERRORS)


if __name__ == '__main__':
    sys.exit(main())
