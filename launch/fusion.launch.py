"""Start the occo_ros fusion node; optionally synthetic cameras, RViz and a recording.

    ros2 launch occo_ros fusion.launch.py --show-args
    ros2 launch occo_ros fusion.launch.py synthetic:=true rviz:=true
    ros2 launch occo_ros fusion.launch.py thermal_topic:=/boson/image_raw \
        rgb_topic:=/camera/color/image_raw record:=true bag_path:=/data/run1

The decisions (arguments, parameter overrides, remappings, which optional tools must be
installed, the RViz config, the record command) are in occo_ros/ros/launch_config.py, which the
tests check; this file only looks things up on the machine and turns them into actions.
Everything is looked up in launch_setup before the first action is created, so a launch that
cannot start starts nothing (no orphaned nodes).
"""

import os
import tempfile

from ament_index_python.packages import (
    PackageNotFoundError,
    get_package_prefix,
    get_package_share_directory,
)
from launch import LaunchDescription
from launch.actions import (
    DeclareLaunchArgument,
    EmitEvent,
    ExecuteProcess,
    OpaqueFunction,
    RegisterEventHandler,
    Shutdown,
)
from launch.events import matches_action
from launch.logging import get_logger
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from lifecycle_msgs.msg import Transition

from occo_ros.params import NODE_NAME
from occo_ros.ros.launch_config import (
    ARGUMENTS,
    RECORDER_SIGTERM_TIMEOUT_S,
    camera_remappings,
    check_tools,
    node_environment,
    node_exit_failure,
    node_overrides,
    record_command,
    rviz_config,
)


def installed(package: str) -> bool:
    """Whether a ROS package is in the ament index (what `ros2 run/launch` look up)."""
    try:
        get_package_prefix(package)
    except PackageNotFoundError:
        return False
    return True


def write_rviz_config(text: str) -> str:
    """The generated RViz config as a file for `rviz2 -d` (kept: RViz may reread it)."""
    with tempfile.NamedTemporaryFile('w', prefix='occo_ros_', suffix='.rviz',
                                     delete=False) as f:
        f.write(text)
    return f.name


class NodeExitFailure(RuntimeError):
    """The fusion node failed (fail_on_node_exit:=true): launch logs it and exits 1."""


def on_fusion_exit(config):
    """What happens when the fusion node ends: the pipeline is the point of the launch, so the
    rest ends too. Only while the launch is not shutting down already: a second Shutdown
    event after Ctrl-C re-runs launch_ros's ROS-adapter OnShutdown handler, which then fails
    with "Cannot shutdown a ROS adapter that is not running" (managed:=true) and exit 1.
    A failed node raises instead, which launch turns into exit code 1 after shutting down."""
    def handle(event, context):
        failure = node_exit_failure(event.returncode, config, context.is_shutdown)
        if failure:
            raise NodeExitFailure(failure)
        if context.is_shutdown:
            return None
        return [Shutdown(reason='fusion node exited')]
    return handle


def fusion_node(config, params, ros_args):
    """The fusion node; managed:=true starts the lifecycle variant and takes it through
    configure and activate once (later transitions are the user's)."""
    common = dict(package='occo_ros', name=NODE_NAME, namespace=config['namespace'],
                  output='screen', arguments=ros_args, parameters=params,
                  additional_env=node_environment(config), on_exit=on_fusion_exit(config))
    if config['managed'] != 'true':
        return [Node(executable='fusion_node', **common)]
    node = LifecycleNode(executable='fusion_lifecycle_node', **common)
    # handle_once: a user's later `ros2 lifecycle set ... deactivate` also ends in inactive,
    # and must stay there.
    activate = RegisterEventHandler(OnStateTransition(
        target_lifecycle_node=node, goal_state='inactive', handle_once=True,
        entities=[EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node),
                                              transition_id=Transition.TRANSITION_ACTIVATE))]))
    configure = EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node),
                                            transition_id=Transition.TRANSITION_CONFIGURE))
    return [activate, node, configure]


def launch_setup(context, *args, **kwargs):
    ros_distro = os.environ.get('ROS_DISTRO', '')
    requested = {a.name: LaunchConfiguration(a.name).perform(context) for a in ARGUMENTS}
    # Raises (MissingTool, ValueError) before any action exists: nothing starts, nothing orphans.
    config, warnings = check_tools(requested, installed, ros_distro)
    overrides = node_overrides(config)
    share = get_package_share_directory('occo_ros')
    params_file = config['params_file'] or os.path.join(share, 'config', 'fusion.yaml')
    ros_args = ['--ros-args', '--log-level', config['log_level']]
    use_sim_time = config['use_sim_time'] == 'true'

    for text in warnings:
        get_logger('occo_ros').warning(text)
    actions = fusion_node(config, [params_file, overrides], ros_args)
    if config['synthetic'] == 'true':
        actions.append(Node(package='occo_ros', executable='synthetic_cameras',
                            name='synthetic_cameras', namespace=config['namespace'],
                            output='screen', arguments=ros_args,
                            remappings=camera_remappings(config),
                            parameters=[{'use_sim_time': use_sim_time}]))
    if config['rviz'] == 'true':
        with open(os.path.join(share, 'rviz', 'occo.rviz'), encoding='utf-8') as f:
            rviz_file = write_rviz_config(rviz_config(f.read(), config))
        actions.append(Node(package='rviz2', executable='rviz2', name='rviz2',
                            arguments=['-d', rviz_file],
                            parameters=[{'use_sim_time': use_sim_time}]))
    if config['record'] == 'true':
        actions.append(ExecuteProcess(cmd=record_command(config, ros_distro), output='screen',
                                      sigterm_timeout=str(RECORDER_SIGTERM_TIMEOUT_S)))
    return actions


def generate_launch_description():
    declared = [DeclareLaunchArgument(a.name, default_value=a.default, description=a.description,
                                      **({'choices': list(a.choices)} if a.choices else {}))
                for a in ARGUMENTS]
    # No DDS settings here (launch_config.node_environment): the robot's own apply.
    return LaunchDescription(declared + [OpaqueFunction(function=launch_setup)])
