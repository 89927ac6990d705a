"""Every parameter of the fusion node: name, default, meaning, allowed values (no ROS import).

The node declares exactly these (with descriptors built from this table), reads them once into
the frozen :class:`FusionParams` and validates them; ``config/fusion.yaml`` and the launch file
are checked against this table by the tests, so the three cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: Any
    description: str
    choices: tuple[str, ...] = ()
    min_value: float | None = None
    max_value: float | None = None
    dynamic: bool = False          # may be changed at run time with `ros2 param set`


IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

PARAMS: tuple[ParamSpec, ...] = (
    # topics (relative names: remap or namespace them in the launch file)
    ParamSpec('thermal_topic', 'thermal/image_raw',
              'Thermal image topic (mono16, 16UC1, mono8, 8UC1 or 32FC1).'),
    ParamSpec('rgb_topic', 'rgb/image_raw',
              'RGB image topic (bgr8, rgb8, bgra8, rgba8, yuv422, yuv422_yuy2, mono8).'),
    ParamSpec('rgb_compressed', False,
              'Subscribe to <rgb_topic>/compressed (sensor_msgs/CompressedImage, jpeg/png) '
              'instead of the raw RGB topic.'),
    ParamSpec('rgb_camera_info_topic', 'rgb/camera_info',
              'RGB camera_info; adapted to the output crop/size and republished as '
              'fused/camera_info.'),
    # QoS
    ParamSpec('input_reliability', 'best_effort',
              'Reliability of the input subscriptions; best_effort (SensorData QoS) matches '
              'both reliable and best-effort cameras.', choices=('best_effort', 'reliable')),
    ParamSpec('input_depth', 5, 'History depth of the input subscriptions.',
              min_value=1, max_value=100),
    ParamSpec('output_reliability', 'reliable',
              'Reliability of fused/image; reliable serves RViz and ros2 bag record.',
              choices=('reliable', 'best_effort')),
    ParamSpec('output_depth', 2, 'History depth of the fused/image publisher.',
              min_value=1, max_value=100),
    # pairing and latency
    ParamSpec('slop', 0.05, 'Largest |thermal stamp - RGB stamp| in seconds for a pair '
              '(exclusive), as message_filters ApproximateTimeSynchronizer.',
              min_value=0.0001, max_value=10.0, dynamic=True),
    ParamSpec('queue_size', 10, 'Messages per stream waiting for a partner.',
              min_value=1, max_value=1000),
    ParamSpec('max_age', 0.5, 'A pair whose RGB stamp is older than this (s, node clock) when '
              'the worker takes it is dropped instead of fused.', min_value=0.0, max_value=60.0),
    # model and backend
    ParamSpec('model_path', '', 'FIFN checkpoint (.pt), ONNX model (.onnx) or TensorRT engine '
              '(.engine); empty = the shipped models/fifn_w025_pixel.pt.'),
    ParamSpec('backend', 'auto', 'Inference backend; auto picks TensorRT, then ONNX Runtime '
              'CUDA, PyTorch CUDA, then the faster CPU backend.',
              choices=('auto', 'torch', 'onnxruntime', 'tensorrt')),
    ParamSpec('device', 'auto', 'Device for the backend: auto, cpu, cuda or cuda:N.'),
    ParamSpec('precision', 'fp32', 'Network precision (fp16/int8 need a GPU backend).',
              choices=('fp32', 'fp16', 'int8')),
    ParamSpec('engine_cache_dir', '', 'Where exported ONNX models and TensorRT engines are '
              'cached; empty = $OCCO_ROS_CACHE or ~/.cache/occo_ros.'),
    ParamSpec('build_only', False, 'Build (or validate) the TensorRT engine, then exit.'),
    ParamSpec('force_rebuild', False, 'Rebuild the TensorRT engine even if a valid one is '
              'cached.'),
    ParamSpec('num_threads', 0, 'CPU threads for inference; 0 = the library default.',
              min_value=0, max_value=256),
    ParamSpec('input_width', 320, 'Network input width in pixels.', min_value=8, max_value=8192),
    ParamSpec('input_height', 256, 'Network input height in pixels.',
              min_value=8, max_value=8192),
    # geometry
    ParamSpec('output_width', 640, 'Width of fused/image in pixels.',
              min_value=8, max_value=8192),
    ParamSpec('output_height', 512, 'Height of fused/image in pixels.',
              min_value=8, max_value=8192),
    ParamSpec('homography', list(IDENTITY), '3x3 row-major homography from normalised '
              'thermal coordinates (x/W, y/H) to normalised RGB coordinates; identity = same '
              'field of view. Convert a pixel homography with '
              'registration.pixel_to_normalized_homography.'),
    ParamSpec('crop', [0.0, 0.0, 1.0, 1.0], 'Fusion frame as [x, y, w, h] in normalised RGB '
              'coordinates; fused/image shows this part of the RGB image.'),
    # thermal normalisation
    ParamSpec('thermal_mode', 'smoothed', 'Thermal to [0,1]: fixed (thermal_min..max), minmax '
              '(per frame), percentile (per frame), smoothed (percentile range smoothed over '
              'time, no flicker).', choices=('fixed', 'minmax', 'percentile', 'smoothed'),
              dynamic=True),
    ParamSpec('thermal_min', 0.0, 'Raw thermal value mapped to 0 in fixed mode.',
              dynamic=True),
    ParamSpec('thermal_max', 65535.0, 'Raw thermal value mapped to 1 in fixed mode.',
              dynamic=True),
    ParamSpec('thermal_percentiles', [1.0, 99.0], 'Low and high percentile of the '
              'percentile and smoothed modes.', dynamic=True),
    ParamSpec('thermal_smoothing', 0.1, 'Smoothed mode: weight of the newest frame in the '
              'exponential moving average of the range (0..1].', min_value=0.001,
              max_value=1.0, dynamic=True),
    # output
    ParamSpec('output_encoding', 'rgb8', 'Encoding of fused/image.',
              choices=('rgb8', 'bgr8', 'mono8'), dynamic=True),
    ParamSpec('diagnostics_period', 1.0, 'Seconds between /diagnostics messages.',
              min_value=0.1, max_value=60.0),
    ParamSpec('input_timeout', 2.0, 'Seconds without messages after which a camera is '
              'reported stale (WARN in diagnostics and the log).', min_value=0.1,
              max_value=3600.0),
)

SPECS = {spec.name: spec for spec in PARAMS}


@dataclass(frozen=True)
class FusionParams:
    thermal_topic: str
    rgb_topic: str
    rgb_compressed: bool
    rgb_camera_info_topic: str
    input_reliability: str
    input_depth: int
    output_reliability: str
    output_depth: int
    slop: float
    queue_size: int
    max_age: float
    model_path: str
    backend: str
    device: str
    precision: str
    engine_cache_dir: str
    build_only: bool
    force_rebuild: bool
    num_threads: int
    input_width: int
    input_height: int
    output_width: int
    output_height: int
    homography: tuple[float, ...]
    crop: tuple[float, ...]
    thermal_mode: str
    thermal_min: float
    thermal_max: float
    thermal_percentiles: tuple[float, ...]
    thermal_smoothing: float
    output_encoding: str
    diagnostics_period: float
    input_timeout: float


def validate(name: str, value: Any) -> str | None:
    """Why ``value`` is not acceptable for parameter ``name``, or None when it is."""
    spec = SPECS[name]
    if spec.choices and value not in spec.choices:
        return f'{name}={value!r} is not one of {list(spec.choices)}'
    if spec.min_value is not None and value < spec.min_value:
        return f'{name}={value!r} is below the minimum {spec.min_value}'
    if spec.max_value is not None and value > spec.max_value:
        return f'{name}={value!r} is above the maximum {spec.max_value}'
    lengths = {'homography': 9, 'crop': 4, 'thermal_percentiles': 2}
    if name in lengths and len(value) != lengths[name]:
        return f'{name} needs {lengths[name]} numbers, got {len(value)}'
    if name == 'thermal_percentiles' and not 0.0 <= value[0] < value[1] <= 100.0:
        return f'thermal_percentiles={list(value)} must satisfy 0 <= low < high <= 100'
    return None


def make_params(values: dict[str, Any]) -> FusionParams:
    """Validate raw parameter values (all names of PARAMS) into a FusionParams.

    Raises ValueError naming every bad parameter, its value and what is allowed.
    """
    problems = [p for p in (validate(n, values[n]) for n in SPECS) if p]
    if values['thermal_max'] <= values['thermal_min']:
        problems.append(f"thermal_max={values['thermal_max']} must be above "
                        f"thermal_min={values['thermal_min']}")
    if problems:
        raise ValueError('invalid parameters: ' + '; '.join(problems))
    converted = {}
    for f in fields(FusionParams):
        value = values[f.name]
        converted[f.name] = tuple(float(v) for v in value) if isinstance(value, list) else value
    return FusionParams(**converted)
