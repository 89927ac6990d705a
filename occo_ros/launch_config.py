"""What launch/fusion.launch.py declares and starts, as plain data (no launch import).

launch and launch_ros are thin wrappers in the launch file; the decisions — the declared
arguments, the fusion node's parameter overrides, the recorded topic list and the
``ros2 bag record`` command — live here so they can be tested where ROS 2 launch is not
installed.
"""

from __future__ import annotations

from dataclasses import dataclass


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
    LaunchArgument('thermal_topic', 'thermal/image_raw', 'Thermal image topic; its '
                   'camera_info is expected beside it (…/camera_info).'),
    LaunchArgument('rgb_topic', 'rgb/image_raw', 'RGB image topic; its camera_info is '
                   'expected beside it (…/camera_info).'),
    LaunchArgument('model', '', 'Model file (.pt, .onnx or .engine); empty = the parameter '
                   'file (default: the shipped models/fifn_w025_pixel.pt).'),
    LaunchArgument('backend', 'auto', 'Inference backend.',
                   ('auto', 'torch', 'onnxruntime', 'tensorrt')),
    LaunchArgument('precision', 'fp32', 'Network precision (fp16/int8 need a GPU backend).',
                   ('fp32', 'fp16', 'int8')),
    LaunchArgument('use_sim_time', 'false', 'Use /clock (bag replay, simulation).', BOOL),
    LaunchArgument('log_level', 'info', 'Log level of the started nodes.',
                   ('debug', 'info', 'warn', 'error', 'fatal')),
    LaunchArgument('rviz', 'false', 'Start rviz2 with rviz/occo.rviz (thermal, RGB and fused '
                   'images side by side).', BOOL),
    LaunchArgument('synthetic', 'false', 'Start the synthetic thermal + RGB cameras instead '
                   'of expecting real ones (also sets the matching fusion crop).', BOOL),
    LaunchArgument('record', 'false', 'Record inputs, camera_info, fused output and '
                   '/diagnostics with ros2 bag record (mcap). Stop with Ctrl-C (SIGINT) so '
                   'the bag is finalised.', BOOL),
    LaunchArgument('bag_path', '', "Output folder of the recording; empty = ros2 bag's "
                   'timestamped default in the current directory.'),
)

# The synthetic thermal camera (default sizes) sees the centred 5:4 part of the 16:9 RGB
# view (occo_ros/synthetic.py: SyntheticScene.thermal_crop / .thermal_homography): the
# homography maps the thermal image onto that part of the RGB image, and the fusion frame is
# cropped to it. test_synthetic checks these numbers against the scene.
SYNTHETIC_CROP = [0.1484375, 0.0, 0.703125, 1.0]
SYNTHETIC_HOMOGRAPHY = [0.703125, 0.0, 0.1484375, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]


def camera_info_topic(image_topic: str) -> str:
    """image_pipeline convention: <camera>/image_raw -> <camera>/camera_info."""
    head, _, _ = image_topic.rstrip('/').rpartition('/')
    return f'{head}/camera_info' if head else 'camera_info'


def resolve(topic: str, namespace: str) -> str:
    """Absolute name of ``topic`` as seen by a node in ``namespace``."""
    if topic.startswith('/'):
        return topic
    ns = namespace.strip('/')
    return f'/{ns}/{topic}' if ns else f'/{topic}'


def node_overrides(config: dict[str, str]) -> dict:
    """Fusion-node parameters set by launch arguments (they win over the parameter file)."""
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
    if config['synthetic'] == 'true':
        overrides['crop'] = SYNTHETIC_CROP
        overrides['homography'] = SYNTHETIC_HOMOGRAPHY
    return overrides


def recorded_topics(config: dict[str, str]) -> list[str]:
    """Absolute names of everything ``record:=true`` writes to the bag."""
    ns = config['namespace']
    topics = [config['thermal_topic'], camera_info_topic(config['thermal_topic']),
              config['rgb_topic'], camera_info_topic(config['rgb_topic']),
              'fused/image', 'fused/camera_info', '/diagnostics']
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
