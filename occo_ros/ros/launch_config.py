"""What launch/fusion.launch.py declares and starts, as plain data (no launch import).

launch and launch_ros are thin wrappers in the launch file; the decisions live here so they
can be tested where ROS 2 launch is not installed: the declared arguments, the fusion node's
parameter overrides, the synthetic cameras' remappings, the optional tools that must be
installed before anything starts, the RViz config for the resolved topics, the recorded
topic list and the ``ros2 bag record`` command.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import yaml

from occo_ros.params import BACKENDS, NODE_NAME, PRECISIONS, validate


@dataclass(frozen=True)
class LaunchArgument:
    name: str
    default: str
    description: str
    choices: tuple[str, ...] = ()


BOOL = ('true', 'false')

ARGUMENTS: tuple[LaunchArgument, ...] = (
    LaunchArgument('params_file', '', 'Parameter YAML for the fusion node; empty = the '
                   "package's config/fusion.yaml."),
    LaunchArgument('namespace', '', 'Namespace of the fusion node (and of the synthetic '
                   'cameras); relative topics resolve inside it.'),
    LaunchArgument('thermal_topic', 'thermal/image_raw', 'Thermal image topic (its '
                   'camera_info is recorded, not used: thermal lens distortion comes from '
                   'the calibration file).'),
    LaunchArgument('rgb_topic', 'rgb/image_raw', 'RGB image topic; its camera_info beside it '
                   '(…/camera_info) is adapted to fused/camera_info.'),
    LaunchArgument('input_reliability', '', 'QoS reliability of the camera subscriptions: '
                   "auto = the cameras' own (reliable when every publisher offers reliable); "
                   "best_effort or reliable; empty = the parameter file's value (auto)."),
    LaunchArgument('input_depth', '', 'History depth of the camera subscriptions (1-100); '
                   "empty = the parameter file's value."),
    LaunchArgument('model', '', 'Model file (.pt, .onnx or .engine); empty = the parameter '
                   'file (default: the shipped models/fifn_w025_pixel.pt).'),
    LaunchArgument('backend', 'auto', 'Inference backend.', BACKENDS),
    LaunchArgument('precision', 'fp32', 'Network precision (fp16/int8 need a GPU backend).',
                   PRECISIONS),
    LaunchArgument('use_sim_time', 'false', 'Use /clock (bag replay, simulation).', BOOL),
    LaunchArgument('log_level', 'info', 'Log level of the started nodes.',
                   ('debug', 'info', 'warn', 'error', 'fatal')),
    LaunchArgument('managed', 'false', 'Start the lifecycle fusion node '
                   '(fusion_lifecycle_node) and take it through configure and activate once; '
                   'after that only you drive it (ros2 lifecycle set). false = the plain '
                   'fusion_node.', BOOL),
    LaunchArgument('fail_on_node_exit', 'true', 'When the fusion node ends with a non-zero '
                   'exit code (cannot start, crash, killed), end the launch with exit code 1 '
                   '(one ERROR line), so scripts and systemd Restart=on-failure see the '
                   'failure; false = end the launch with 0 as upstream launch does.', BOOL),
    LaunchArgument('rviz', 'false', 'Start rviz2 showing the thermal, RGB and fused images '
                   'of the resolved topics (a config generated from rviz/occo.rviz). Without '
                   'rviz2 installed: a WARN naming the package, and the rest starts.', BOOL),
    LaunchArgument('synthetic', 'false', 'Start the synthetic thermal + RGB cameras (publishing '
                   'on thermal_topic/rgb_topic, reliable) instead of expecting real ones; also '
                   'sets the matching fusion crop.', BOOL),
    LaunchArgument('record', 'false', 'Record inputs, camera_info, fused output and '
                   '/diagnostics with ros2 bag record (mcap). Stop with Ctrl-C (SIGINT) so '
                   'the bag is finalised. Without ros2 bag or its mcap plugin the launch '
                   'stops before starting anything, naming the packages.', BOOL),
    LaunchArgument('bag_path', '', "Output folder of the recording; empty = ros2 bag's "
                   'timestamped default in the current directory.'),
)

# The synthetic thermal camera (default sizes) sees the centred 5:4 part of the 16:9 RGB
# view (occo_ros/synthetic/scene.py: SyntheticScene.thermal_crop / .thermal_homography): the
# homography maps the thermal image onto that part of the RGB image, and the fusion frame is
# cropped to it. test_synthetic checks these numbers against the scene.
SYNTHETIC_CROP = [0.1484375, 0.0, 0.703125, 1.0]
SYNTHETIC_HOMOGRAPHY = [0.703125, 0.0, 0.1484375, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]

# The synthetic cameras' topics (occo_ros/ros/synthetic_cameras.py), remapped onto the node's.
SYNTHETIC_THERMAL = 'thermal/image_raw'
SYNTHETIC_RGB = 'rgb/image_raw'
FUSED_IMAGE = 'fused/image'   # the fusion node's output, relative to its namespace


# Seconds launch waits after SIGINT before it sends SIGTERM to the recorder (launch's default
# for other processes: 5): rosbag2 writes metadata.yaml on SIGINT, and a large bag takes time.
RECORDER_SIGTERM_TIMEOUT_S = 15


class MissingTool(RuntimeError):
    """A piece the launch arguments ask for is not installed; raised before anything starts."""


@dataclass(frozen=True)
class OptionalTool:
    """Packages a launch argument needs; ``required``: stop the launch when missing, else
    start without that piece (with a WARN)."""
    argument: str
    what: str
    packages: tuple[str, ...]
    required: bool


OPTIONAL_TOOLS = (
    OptionalTool('rviz', 'rviz2', ('rviz2',), required=False),
    # A recording the user asked for must not silently be missing: stop instead.
    OptionalTool('record', '`ros2 bag record -s mcap`', ('ros2bag', 'rosbag2_storage_mcap'),
                 required=True),
)


def apt_package(package: str, ros_distro: str) -> str:
    """The Debian package of a ROS package: ros-<distro>-<name with dashes>."""
    return f"ros-{ros_distro or '$ROS_DISTRO'}-{package.replace('_', '-')}"


def check_tools(config: dict[str, str], installed: Callable[[str], bool],
                ros_distro: str = '') -> tuple[dict[str, str], list[str]]:
    """Look up every optional piece the arguments ask for, before anything is started.

    ``installed(package)`` says whether a ROS package is in the ament index. Returns the
    config with missing non-required pieces switched off and one WARN line for each; raises
    MissingTool naming the apt packages when a required piece is missing.
    """
    config = dict(config)
    warnings = []
    for tool in OPTIONAL_TOOLS:
        if config[tool.argument] != 'true':
            continue
        missing = [p for p in tool.packages if not installed(p)]
        if not missing:
            continue
        install = 'sudo apt install ' + ' '.join(apt_package(p, ros_distro) for p in missing)
        message = (f'{tool.argument}:=true needs {tool.what}, but ROS package(s) '
                   f"{', '.join(missing)} are not installed: {install}")
        if tool.required:
            raise MissingTool(f'{message}. Nothing was started.')
        warnings.append(f'{message}. Starting without {tool.what}.')
        config[tool.argument] = 'false'
    return config, warnings


def camera_info_topic(image_topic: str) -> str:
    """image_pipeline convention: <camera>/image_raw -> <camera>/camera_info."""
    head, _, _ = image_topic.rstrip('/').rpartition('/')
    return f'{head}/camera_info' if head else 'camera_info'


def resolve(topic: str, namespace: str, node: str = NODE_NAME) -> str:
    """Absolute name of ``topic`` as node ``node`` in ``namespace`` resolves it (ROS 2 name
    rules: absolute stays, ``~`` is the node's private namespace, relative joins the
    namespace)."""
    ns = '/'.join(part for part in namespace.split('/') if part)
    prefix = f'/{ns}' if ns else ''
    if topic.startswith('/'):
        return topic
    if topic == '~' or topic.startswith('~/'):
        return f'{prefix}/{node}{topic[1:]}'
    return f'{prefix}/{topic}'


def node_overrides(config: dict[str, str]) -> dict:
    """Fusion-node parameters set by launch arguments (they win over the parameter file).

    Raises ValueError for an input_depth or input_reliability the node would refuse, before
    anything starts.
    """
    synthetic = config['synthetic'] == 'true'
    overrides = {
        'thermal_topic': config['thermal_topic'],
        'rgb_topic': config['rgb_topic'],
        'rgb_camera_info_topic': camera_info_topic(config['rgb_topic']),
        'backend': config['backend'],
        'precision': config['precision'],
        'use_sim_time': config['use_sim_time'] == 'true',
    }
    if config['model']:
        overrides['model_path'] = config['model']
    if config['input_reliability']:
        overrides['input_reliability'] = _checked('input_reliability',
                                                  config['input_reliability'])
    if config['input_depth']:
        overrides['input_depth'] = _checked('input_depth', _whole_number(config['input_depth']))
    if synthetic:
        overrides['crop'] = SYNTHETIC_CROP
        overrides['homography'] = SYNTHETIC_HOMOGRAPHY
    return overrides


def node_environment(config: dict[str, str]) -> dict[str, str]:
    """Environment variables the launch sets for the nodes it starts, on top of the
    launching shell's: none. DDS transport settings (FASTDDS_BUILTIN_TRANSPORTS, XML
    profiles) are robot-wide choices: a participant with LARGE_DATA does not talk to one
    without it, so a value set here would cut the node off from every camera driver, RViz
    and `ros2` CLI started elsewhere (docs/NODE.md, "On a robot"). test_interop starts the node
    with exactly this on top of a clean environment."""
    return {}


def node_exit_failure(returncode: int | None, config: dict[str, str],
                      shutting_down: bool) -> str | None:
    """Why the launch must fail when the fusion node ended with ``returncode``, or None
    (then the launch simply shuts down, exit code 0). Nothing fails while the launch is
    already shutting down (Ctrl-C, SIGTERM): the node's exit is then the expected one."""
    if shutting_down or not returncode or config['fail_on_node_exit'] != 'true':
        return None
    return (f'the fusion node ended with exit code {returncode}; ending the launch with a '
            'failure (fail_on_node_exit:=false keeps the exit code 0)')


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f'input_depth:={text} is not a whole number') from None


def _checked(name: str, value):
    """``value`` for node parameter ``name``; ValueError naming the launch argument."""
    problem = validate(name, value)
    if problem:
        raise ValueError(f'{name}:={value}: {problem}')
    return value


def camera_remappings(config: dict[str, str]) -> list[tuple[str, str]]:
    """Remappings that make the synthetic cameras publish where the fusion node listens."""
    ns = config['namespace']
    remaps = []
    for own, wanted in ((SYNTHETIC_THERMAL, config['thermal_topic']),
                        (SYNTHETIC_RGB, config['rgb_topic'])):
        remaps.append((own, resolve(wanted, ns)))
        remaps.append((camera_info_topic(own), resolve(camera_info_topic(wanted), ns)))
    return remaps


def panel_topics(config: dict[str, str]) -> dict[str, str]:
    """The topic of each RViz panel (by display name), resolved as the fusion node does."""
    ns = config['namespace']
    return {'Thermal': resolve(config['thermal_topic'], ns),
            'RGB': resolve(config['rgb_topic'], ns),
            'Fused': resolve(FUSED_IMAGE, ns)}


def rviz_config(template: str, config: dict[str, str]) -> str:
    """rviz/occo.rviz (``template``, a plain RViz config for the default topics) with every
    image panel on the resolved topic of this launch; loadable with ``rviz2 -d``."""
    data = yaml.safe_load(template)
    topics = panel_topics(config)
    displays = data['Visualization Manager']['Displays']
    if sorted(d['Name'] for d in displays) != sorted(topics):
        raise ValueError(f'the RViz template has panels {[d["Name"] for d in displays]}, '
                         f'expected {sorted(topics)}')
    for display in displays:
        display['Topic']['Value'] = topics[display['Name']]
    ns = config['namespace'] or '/'
    header = (f'# Generated by occo_ros fusion.launch.py from rviz/occo.rviz for namespace '
              f"{ns}: {', '.join(f'{k} {v}' for k, v in topics.items())}\n")
    return header + yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


def recorded_topics(config: dict[str, str]) -> list[str]:
    """Absolute names of everything ``record:=true`` writes to the bag."""
    ns = config['namespace']
    topics = [config['thermal_topic'], camera_info_topic(config['thermal_topic']),
              config['rgb_topic'], camera_info_topic(config['rgb_topic']),
              FUSED_IMAGE, 'fused/camera_info', '/diagnostics']
    return [resolve(t, ns) for t in topics]


def record_command(config: dict[str, str], ros_distro: str = '') -> list[str]:
    """``ros2 bag record`` with mcap storage and an explicit topic list (never -a).

    Humble takes topics positionally; Jazzy and later use --topics (positional topics are
    deprecated there and removed after Kilted) and --disable-keyboard-controls, so the
    recorder does not read the launch terminal.
    """
    cmd = ['ros2', 'bag', 'record', '-s', 'mcap']
    if config['bag_path']:
        cmd += ['-o', config['bag_path']]
    if config['use_sim_time'] == 'true':
        cmd += ['--use-sim-time']
    if ros_distro in ('humble', 'iron'):
        return cmd + recorded_topics(config)
    return cmd + ['--disable-keyboard-controls', '--topics'] + recorded_topics(config)
