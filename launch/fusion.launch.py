"""Start the occo_ros fusion node; optionally synthetic cameras, RViz and a recording.

    ros2 launch occo_ros fusion.launch.py --show-args
    ros2 launch occo_ros fusion.launch.py synthetic:=true rviz:=true
    ros2 launch occo_ros fusion.launch.py thermal_topic:=/boson/image_raw \
        rgb_topic:=/camera/color/image_raw record:=true bag_path:=/data/run1

The decisions (arguments, parameter overrides, recorded topics, the record command) are in
occo_ros/launch_config.py, which the tests check; this file only turns them into actions.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import (
    DeclareLaunchArgument,
    ExecuteProcess,
    OpaqueFunction,
    SetEnvironmentVariable,
)
from launch.substitutions import EnvironmentVariable, LaunchConfiguration
from launch_ros.actions import Node

from occo_ros.launch_config import ARGUMENTS, node_overrides, record_command


def launch_setup(context, *args, **kwargs):
    config = {a.name: LaunchConfiguration(a.name).perform(context) for a in ARGUMENTS}
    share = get_package_share_directory('occo_ros')
    params_file = config['params_file'] or os.path.join(share, 'config', 'fusion.yaml')
    ros_args = ['--ros-args', '--log-level', config['log_level']]
    use_sim_time = config['use_sim_time'] == 'true'
    actions = [Node(package='occo_ros', executable='fusion_node', name='occo_fusion',
                    namespace=config['namespace'], output='screen', arguments=ros_args,
                    parameters=[params_file, node_overrides(config)])]
    if config['synthetic'] == 'true':
        actions.append(Node(package='occo_ros', executable='synthetic_cameras',
                            name='synthetic_cameras', namespace=config['namespace'],
                            output='screen', arguments=ros_args,
                            parameters=[{'use_sim_time': use_sim_time}]))
    if config['rviz'] == 'true':
        actions.append(Node(package='rviz2', executable='rviz2', name='rviz2',
                            arguments=['-d', os.path.join(share, 'rviz', 'occo.rviz')],
                            parameters=[{'use_sim_time': use_sim_time}]))
    if config['record'] == 'true':
        # sigterm_timeout: give the recorder time to write metadata.yaml on shutdown.
        actions.append(ExecuteProcess(cmd=record_command(config, os.environ.get('ROS_DISTRO',
                                                                                '')),
                                      output='screen', sigterm_timeout='15'))
    return actions


def generate_launch_description():
    declared = [DeclareLaunchArgument(a.name, default_value=a.default, description=a.description,
                                      **({'choices': list(a.choices)} if a.choices else {}))
                for a in ARGUMENTS]
    # Full-size images between processes need Fast DDS's large-data transport
    # (ROS2_NOTES.md); keep a value the user already set.
    transport = SetEnvironmentVariable(
        'FASTDDS_BUILTIN_TRANSPORTS',
        EnvironmentVariable('FASTDDS_BUILTIN_TRANSPORTS', default_value='LARGE_DATA'))
    return LaunchDescription(declared + [transport, OpaqueFunction(function=launch_setup)])
