"""Every parameter of the fusion node: name, default, meaning, allowed values (no ROS import).

The node declares exactly these (with descriptors built from this table) and validates them;
``config/fusion.yaml`` and the launch file are checked against this table by the tests, so the
three cannot drift apart. Each row belongs to one group (:data:`GROUPS`):

* ``node``: the node's wiring (topics, QoS, diagnostics timing) -> :class:`NodeParams`; the
  offline tools (occo-bag) never build these;
* ``fusion``: what decides the fused output from the same input messages (pairing, arrival
  checks, network and output size, geometry, thermal normalisation, encoding) ->
  :class:`FusionSettings`, which the frame step (occo_ros.pipeline) and the worker take;
* ``engine``: the inference engine -> occo_ros.engines.EngineSpec (``EngineSpec.from_params``).
"""

from __future__ import annotations

import argparse
import array
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
import math
from typing import Any, NamedTuple, TypeVar


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: Any
    description: str
    choices: tuple[str, ...] = ()
    min_value: float | None = None
    max_value: float | None = None
    dynamic: bool = False          # may be changed at run time with `ros2 param set`
    group: str = ''                # one of GROUPS (set by _rows)


#: the row groups, see the module docstring
GROUPS = ('node', 'fusion', 'engine')


def _rows(group: str, *specs: ParamSpec) -> tuple[ParamSpec, ...]:
    return tuple(replace(spec, group=group) for spec in specs)


IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
# The vocabularies of the rows below, named once for every module that checks or offers them.
RELIABILITIES = ('best_effort', 'reliable')
BACKENDS = ('auto', 'torch', 'onnxruntime', 'tensorrt')
PRECISIONS = ('fp32', 'fp16', 'int8')
THERMAL_MODES = ('fixed', 'minmax', 'percentile', 'smoothed')
OUTPUT_ENCODINGS = ('rgb8', 'bgr8', 'mono8')
COLOR_MODES = ('preserve_saturation', 'keep_chroma')

PARAMS: tuple[ParamSpec, ...] = _rows(
    'node',
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
    ParamSpec('input_reliability', 'auto',
              "Reliability of the input subscriptions; auto = the publishers' own: reliable "
              'when every publisher on the topic offers reliable, else best_effort, looked at '
              'again when publishers come and go (full-size images between processes arrive '
              'over the default transports only with reliable on both sides); best_effort '
              'matches both kinds of camera.', choices=('auto', *RELIABILITIES)),
    ParamSpec('input_depth', 5, 'History depth of the input subscriptions.',
              min_value=1, max_value=100),
    ParamSpec('output_reliability', 'reliable',
              'Reliability of fused/image; reliable serves RViz and ros2 bag record.',
              choices=RELIABILITIES),
    ParamSpec('output_depth', 2, 'History depth of the fused/image publisher.',
              min_value=1, max_value=100),
    ParamSpec('jpeg_quality', 80, 'JPEG quality (1-100) of fused/image/compressed, which is '
              'encoded only while it has subscribers.', min_value=1, max_value=100,
              dynamic=True),
) + _rows(
    'fusion',
    # pairing and latency
    ParamSpec('slop', 0.05, 'Largest |thermal stamp - RGB stamp| in seconds for a pair '
              '(exclusive), as message_filters ApproximateTimeSynchronizer.',
              min_value=0.0001, max_value=10.0, dynamic=True),
    ParamSpec('queue_size', 10, 'Messages per stream waiting for a partner.',
              min_value=1, max_value=1000),
    ParamSpec('max_age', 0.5, 'A pair whose RGB stamp is older than this (s, node clock) when '
              'the worker takes it is dropped instead of fused.', min_value=0.0, max_value=60.0),
) + _rows(
    'engine',
    # model and backend
    ParamSpec('model_path', '', 'FIFN checkpoint (.pt), ONNX model (.onnx) or TensorRT engine '
              '(.engine); empty = the shipped models/fifn_w025_pixel.pt.'),
    ParamSpec('backend', 'auto', 'Inference backend; auto picks TensorRT, then ONNX Runtime '
              'CUDA, PyTorch CUDA, then the faster CPU backend.',
              choices=BACKENDS),
    ParamSpec('device', 'auto', 'Device for the backend: auto, cpu, cuda or cuda:N.'),
    ParamSpec('precision', 'fp32', 'Network precision (fp16/int8 need a GPU backend).',
              choices=PRECISIONS),
    ParamSpec('engine_cache_dir', '', 'Where exported ONNX models and TensorRT engines are '
              'cached; empty = $OCCO_ROS_CACHE or ~/.cache/occo_ros.'),
    ParamSpec('force_rebuild', False, 'Rebuild the TensorRT engine even if a valid one is '
              'cached.'),
    ParamSpec('calibration_dir', '', 'INT8 calibration pairs for the TensorRT build: a '
              'folder with vi/ and ir/ images of the same names; empty = reuse the cached '
              'calibration scales (a first int8 build needs the folder).'),
    ParamSpec('workspace_mb', 1024, 'TensorRT builder workspace in MiB.', min_value=64,
              max_value=1 << 20),
    ParamSpec('num_threads', 0, 'CPU threads for inference; 0 = the library default.',
              min_value=0, max_value=256),
) + _rows(
    'fusion',
    # network size: the frame step resizes to it, the engine is built for it
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
    ParamSpec('crop', [0.0, 0.0, 0.0, 0.0], 'Fusion frame as [x, y, w, h] in normalised RGB '
              'coordinates; fused/image shows this part of the RGB image. All zeros = auto: '
              "the largest centred RGB crop with the output's aspect (nothing stretched)."),
    ParamSpec('calibration_file', '', 'occo-calibrate YAML (homography, crop, lens '
              'distortion); empty = use the homography and crop parameters (set one or the '
              'other). A bad file stops the node at start-up.'),
    # thermal normalisation
    ParamSpec('thermal_mode', 'smoothed', 'Thermal to [0,1]: fixed (thermal_min..max), minmax '
              '(per frame), percentile (per frame), smoothed (percentile range smoothed over '
              'time, no flicker).', choices=THERMAL_MODES,
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
              choices=OUTPUT_ENCODINGS, dynamic=True),
    ParamSpec('color_mode', 'preserve_saturation', 'How the fused luma gets the visible '
              'colour: preserve_saturation (chroma scaled with the luma, so hue and '
              'saturation stay the visible ones where the infrared brightens the scene) or '
              'keep_chroma (the visible Cb/Cr unchanged, the behaviour before issue 21: '
              'brightened dark colour turns pastel).',
              choices=COLOR_MODES),
    ParamSpec('max_input_pixels', 4096 * 2160, 'Largest width x height accepted on an input '
              '(4K by default); larger images are refused before decoding (compressed ones '
              'from their header).', min_value=1, max_value=1 << 30, dynamic=True),
) + _rows(
    'node',
    # diagnostics
    ParamSpec('diagnostics_period', 1.0, 'Seconds between /diagnostics messages.',
              min_value=0.1, max_value=60.0),
    ParamSpec('input_timeout', 2.0, 'Seconds without messages after which a camera is '
              'reported stale, or without fused output while both cameras send, after which '
              'health is WARN (ERROR after twice as long).', min_value=0.1, max_value=3600.0),
)

SPECS = {spec.name: spec for spec in PARAMS}
#: What a robot user sets: the rows of config/fusion.yaml (docs/PARAMETERS.md lists them all).
ESSENTIAL_PARAMS = ('thermal_topic', 'rgb_topic', 'rgb_compressed', 'rgb_camera_info_topic',
                    'calibration_file', 'output_width', 'output_height', 'model_path',
                    'backend', 'device', 'precision', 'thermal_mode')


class ThermalSettings(NamedTuple):
    """The thermal normalisation rows, as the node's normaliser and the INT8 calibration
    images use them (fields named like the parameters)."""

    thermal_mode: str
    thermal_min: float
    thermal_max: float
    thermal_percentiles: tuple[float, ...]
    thermal_smoothing: float

    @classmethod
    def from_values(cls, values: Any) -> ThermalSettings:
        """From a mapping of parameter values (missing names: the table default) or an
        object with these attributes (FusionSettings); lists become tuples."""
        def get(name: str) -> Any:
            if isinstance(values, Mapping):
                value = values.get(name, SPECS[name].default)
            else:
                value = getattr(values, name)
            return tuple(value) if isinstance(value, (list, tuple)) else value

        return cls(*(get(name) for name in cls._fields))


#: The thermal normalisation rows (the node's normaliser, INT8 calibration images).
THERMAL_PARAMS = ThermalSettings._fields


_Record = TypeVar('_Record', bound='_GroupValues')


class _GroupValues:
    """A frozen record of one group's rows."""

    @classmethod
    def from_values(cls: type[_Record], values: dict[str, Any]) -> _Record:
        """This group's fields from validated values of every row (:func:`check_params`)."""
        return cls(**{f.name: values[f.name] for f in fields(cls)})


@dataclass(frozen=True)
class NodeParams(_GroupValues):
    """The node's wiring: the 'node' rows."""

    thermal_topic: str
    rgb_topic: str
    rgb_compressed: bool
    rgb_camera_info_topic: str
    input_reliability: str
    input_depth: int
    output_reliability: str
    output_depth: int
    jpeg_quality: int
    diagnostics_period: float
    input_timeout: float


@dataclass(frozen=True)
class FusionSettings(_GroupValues):
    """What decides the fused output from the input messages: the 'fusion' rows, taken by
    the frame step (occo_ros.pipeline), the worker and occo-bag."""

    slop: float
    queue_size: int
    max_age: float
    input_width: int
    input_height: int
    output_width: int
    output_height: int
    homography: tuple[float, ...]
    crop: tuple[float, ...]
    calibration_file: str
    thermal_mode: str
    thermal_min: float
    thermal_max: float
    thermal_percentiles: tuple[float, ...]
    thermal_smoothing: float
    output_encoding: str
    color_mode: str
    max_input_pixels: int

    @property
    def thermal(self) -> ThermalSettings:
        """The thermal normalisation rows."""
        return ThermalSettings.from_values(self)


#: list parameters and their number of elements
LIST_LENGTHS = {'homography': 9, 'crop': 4, 'thermal_percentiles': 2}


def validate(name: str, value: Any) -> str | None:
    """Why ``value`` is not acceptable for parameter ``name``, or None when it is.

    Any value may be passed (a parameter set over ROS carries any type): the type must be
    the type of the row's default (an int is accepted for a float), numbers finite, within
    the row's range and choices, lists of the row's length.
    """
    spec = SPECS.get(name)
    if spec is None:
        return f'{name!r} is not a parameter of this node'
    problem = _type_problem(spec, value)
    if problem:
        return problem
    if spec.choices and value not in spec.choices:
        return f'{name}={value!r} is not one of {list(spec.choices)}'
    if spec.min_value is not None and value < spec.min_value:
        return f'{name}={value!r} is below the minimum {spec.min_value}'
    if spec.max_value is not None and value > spec.max_value:
        return f'{name}={value!r} is above the maximum {spec.max_value}'
    if name in LIST_LENGTHS and len(value) != LIST_LENGTHS[name]:
        return f'{name} needs {LIST_LENGTHS[name]} numbers, got {len(value)}'
    if name == 'thermal_percentiles' and not 0.0 <= value[0] < value[1] <= 100.0:
        return f'thermal_percentiles={list(value)} must satisfy 0 <= low < high <= 100'
    return None


def _type_problem(spec: ParamSpec, value: Any) -> str | None:
    """Why ``value`` does not have the type of ``spec.default`` (or is not finite)."""
    default = spec.default
    if isinstance(default, (bool, str)):
        expected, ok = f'a {type(default).__name__}', isinstance(value, type(default))
    elif isinstance(default, int):
        expected, ok = 'an integer', isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        expected, ok = 'a finite number', _finite_number(value)
    else:
        expected = 'a list of finite numbers'
        ok = isinstance(value, _LISTS) and all(_finite_number(v) for v in value)
    if ok:
        return None
    return f'{spec.name}={_short_repr(value)} must be {expected} (got {type(value).__name__})'


#: what a list parameter arrives as: rclpy gives double arrays as array.array('d')
_LISTS = (list, tuple, array.array)


def _finite_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _short_repr(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 5] + ' ...' + text[-1]


def check_params(values: dict[str, Any]) -> dict[str, Any]:
    """Validate raw values of every parameter (all names of PARAMS): the same values with
    lists as tuples of floats and ints given for float rows as floats.

    Raises ValueError naming every bad parameter, its value and what is allowed.
    """
    problems = [p for p in (validate(n, values[n]) for n in SPECS) if p]
    range_valid = not any(validate(n, values[n]) for n in ('thermal_min', 'thermal_max'))
    if range_valid and values['thermal_max'] <= values['thermal_min']:
        problems.append(f"thermal_max={values['thermal_max']} must be above "
                        f"thermal_min={values['thermal_min']}")
    if problems:
        raise ValueError('invalid parameters: ' + '; '.join(problems))
    converted = {}
    for name, spec in SPECS.items():
        value = values[name]
        if isinstance(value, _LISTS):
            value = tuple(float(v) for v in value)
        elif isinstance(spec.default, float):
            value = float(value)      # an integer given for a float parameter
        converted[name] = value
    return converted


def make_params(values: dict[str, Any]) -> FusionSettings:
    """The fusion settings of raw values of every parameter, all validated
    (:func:`check_params`; ValueError)."""
    return FusionSettings.from_values(check_params(values))


# -- parameter files and command-line options (the offline tools read the node's parameters) --
NODE_NAME = 'occo_fusion'
#: Command-line spellings that differ from '--<name-with-dashes>' (every tool takes the same;
#: the second ones are the spellings before 0.2.0, kept as aliases).
PARAM_FLAGS = {'model_path': ('--model', '--model-path'),
               'engine_cache_dir': ('--engine-cache-dir', '--cache-dir'),
               'input_height': ('--input-height', '--height'),
               'input_width': ('--input-width', '--width'),
               'num_threads': ('--num-threads', '--threads')}


def _node_section(key: Any) -> bool:
    """Whether a top-level key of a parameter file addresses the fusion node: '/**', its
    name, or its name under a namespace or wildcard ('/ns/occo_fusion', '/**/occo_fusion')."""
    key = str(key)
    return key in ('/**', '**') or key.rsplit('/', 1)[-1] == NODE_NAME


def _flatten(values: dict, prefix: str = '') -> dict[str, Any]:
    flat = {}
    for key, value in values.items():
        name = f'{prefix}{key}'
        if isinstance(value, dict):
            flat.update(_flatten(value, name + '.'))
        else:
            flat[name] = value
    return flat


def load_params_file(path: Any, log: Any = None) -> dict[str, Any]:
    """Node parameter values from a ROS 2 parameter YAML file (e.g. config/fusion.yaml).

    Reads the ``ros__parameters`` of the sections for every node (``/**``) and for the fusion
    node (``occo_fusion``, also under a namespace), merged in file order (later wins); nested
    names are joined with dots. Names that are not node parameters are skipped with a note to
    ``log`` (a callable; default: a warning on the 'occo_ros.params' logger). Raises OSError
    when the file cannot be read and ValueError for bad YAML, a file without such a section
    (naming the sections it has) or a value of the wrong type (ints are taken for floats).
    """
    import logging
    from pathlib import Path

    import yaml

    path = Path(path)
    log = log or logging.getLogger('occo_ros.params').warning
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f'{path} is not valid YAML: {exc}') from None
    if not isinstance(document, dict):
        raise ValueError(f'{path}: expected a mapping of node names to {{ros__parameters: ...}}'
                         f', got {type(document).__name__}')
    sections = [key for key, value in document.items()
                if _node_section(key) and isinstance(value, dict)
                and 'ros__parameters' in value]
    if not sections:
        raise ValueError(f'{path} has no ros__parameters for /** or {NODE_NAME}; its sections: '
                         f'{", ".join(map(str, document)) or "none"}')
    values: dict[str, Any] = {}
    for key in sections:
        parameters = document[key]['ros__parameters'] or {}
        if not isinstance(parameters, dict):
            raise ValueError(f'{path}: {key}.ros__parameters must be a mapping')
        for name, value in _flatten(parameters).items():
            if name not in SPECS:
                log(f'{path}: {name} is not a parameter of {NODE_NAME}; ignored')
                continue
            problem = _type_problem(SPECS[name], value)
            if problem:
                raise ValueError(f'{path}: parameter {problem}')
            if isinstance(SPECS[name].default, float):
                value = float(value)
            elif isinstance(value, list):
                value = [float(v) for v in value]
            values[name] = value
    return values


def build_params(file_values: dict[str, Any] | None = None,
                 overrides: dict[str, Any] | None = None) -> FusionSettings:
    """The fusion settings of the node's defaults, then ``file_values``, then ``overrides``,
    every row validated by :func:`make_params` (ValueError naming every bad value). The
    engine of the same values: ``EngineSpec.from_params({**file_values, **overrides})``."""
    values = {name: spec.default for name, spec in SPECS.items()}
    values.update(file_values or {})
    values.update(overrides or {})
    return make_params(values)


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """--help with each option's default, except options defaulting to None: those of
    add_param_option name the effective default in their own text (None = not given)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def add_param_option(parser: Any, name: str, flags: tuple[str, ...] = (),
                     shown: Any = None) -> None:
    """One command-line option for node parameter ``name`` (argparse parser or group): the
    table's help text, type, choices and list length; default None (= not given, so a
    tool can layer defaults < parameter file < options). ``flags``: the spellings (default
    PARAM_FLAGS or --<name-with-dashes>); ``shown``: the default named in the help."""
    spec = SPECS[name]
    default = spec.default
    if shown is None:
        shown = ('the shipped models/fifn_w025_pixel.pt' if name == 'model_path'
                 else repr(default))
    kwargs: dict[str, Any] = {
        'dest': name, 'default': None,
        'help': f'{spec.description} Node parameter {name}; default {shown}.'.replace(
            '%', '%%')}
    if isinstance(default, bool):
        kwargs['action'] = 'store_true'
    elif isinstance(default, list):
        kwargs.update(nargs=len(default), type=float,
                      metavar={'crop': ('X', 'Y', 'W', 'H'),
                               'thermal_percentiles': ('LOW', 'HIGH')}.get(name, 'H'))
    else:
        kwargs['type'] = type(default)
        if spec.choices:
            kwargs['choices'] = spec.choices
    parser.add_argument(*(flags or PARAM_FLAGS.get(name, ('--' + name.replace('_', '-'),))),
                        **kwargs)
