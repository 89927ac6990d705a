"""Static agreement of the launch file, config/fusion.yaml, the node's parameters, setup.py's
entry points, the recorded topic list and rviz/occo.rviz.

launch and launch_ros cannot be installed here (not on PyPI). To run the launch file's own
code anyway, ``fake_launch`` below injects minimal stand-ins for exactly the names it imports
(DeclareLaunchArgument, LaunchConfiguration, Node, ExecuteProcess, ...) that record their
arguments; everything else is the real file.
"""

import ast
import importlib.util
from pathlib import Path
import sys
import types

import pytest
import yaml

from occo_ros import launch_config
from occo_ros.launch_config import (
    ARGUMENTS,
    camera_info_topic,
    record_command,
    recorded_topics,
    resolve,
)
from occo_ros.params import PARAMS, SPECS

REPO = Path(__file__).resolve().parents[1]


def load_yaml_params():
    data = yaml.safe_load((REPO / 'config' / 'fusion.yaml').read_text())
    return data['/**']['ros__parameters']


def console_scripts():
    tree = ast.parse((REPO / 'setup.py').read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if isinstance(key, ast.Constant) and key.value == 'console_scripts':
                    entries = [ast.literal_eval(e) for e in value.elts]
                    return dict(tuple(p.strip() for p in e.split('=')) for e in entries)
    raise AssertionError('no console_scripts in setup.py')


def test_yaml_has_every_parameter_with_its_default():
    values = load_yaml_params()
    assert set(values) == set(SPECS)
    for spec in PARAMS:
        assert values[spec.name] == spec.default, spec.name
        assert type(values[spec.name]) is type(spec.default), spec.name


def test_yaml_documents_every_parameter():
    lines = (REPO / 'config' / 'fusion.yaml').read_text().splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped and not stripped.startswith('#') and stripped.split(':')[0] in SPECS:
            assert lines[i - 1].strip().startswith('#'), f'{stripped} has no comment above it'


def test_entry_points_resolve_to_functions():
    scripts = console_scripts()
    for name in ('fusion_node', 'synthetic_cameras', 'occo-fuse', 'occo-bag', 'occo-export',
                 'occo-build-engine', 'occo-eval', 'occo-train', 'occo-masks', 'occo-demo'):
        assert name in scripts, name
    for name, target in scripts.items():
        module, func = target.split(':')
        spec = importlib.util.find_spec(module)
        assert spec is not None, f'{name}: module {module} not found'
        tree = ast.parse(Path(spec.origin).read_text())
        assert any(isinstance(n, ast.FunctionDef) and n.name == func for n in tree.body), \
            f'{name}: {module} has no function {func}'


def test_setup_cfg_installs_scripts_where_launch_ros_looks():
    text = (REPO / 'setup.cfg').read_text()
    assert 'script_dir=$base/lib/occo_ros' in text
    assert 'install_scripts=$base/lib/occo_ros' in text


def test_launch_arguments_cover_the_documented_set():
    names = [a.name for a in ARGUMENTS]
    assert names == ['params_file', 'namespace', 'thermal_topic', 'rgb_topic', 'model',
                     'backend', 'precision', 'use_sim_time', 'log_level', 'rviz', 'synthetic',
                     'record', 'bag_path']
    assert all(a.description for a in ARGUMENTS)
    for a in ARGUMENTS:
        assert not a.choices or a.default in a.choices, a.name
    backend = next(a for a in ARGUMENTS if a.name == 'backend')
    assert backend.choices == SPECS['backend'].choices
    precision = next(a for a in ARGUMENTS if a.name == 'precision')
    assert precision.choices == SPECS['precision'].choices


def default_config(**changes):
    config = {a.name: a.default for a in ARGUMENTS}
    config.update(changes)
    return config


def test_overrides_name_real_parameters():
    config = default_config(model='/m.onnx', synthetic='true')
    overrides = launch_config.node_overrides(config)
    assert set(overrides) - {'use_sim_time'} <= set(SPECS)
    assert overrides['model_path'] == '/m.onnx'
    assert overrides['rgb_camera_info_topic'] == 'rgb/camera_info'
    assert overrides['crop'] == launch_config.SYNTHETIC_CROP
    assert overrides['homography'] == launch_config.SYNTHETIC_HOMOGRAPHY
    assert 'model_path' not in launch_config.node_overrides(default_config())


def test_recorded_topics_and_command():
    config = default_config(namespace='robot1', record='true', bag_path='/data/run1')
    topics = recorded_topics(config)
    assert topics == ['/robot1/thermal/image_raw', '/robot1/thermal/camera_info',
                      '/robot1/rgb/image_raw', '/robot1/rgb/camera_info',
                      '/robot1/fused/image', '/robot1/fused/camera_info', '/diagnostics']
    cmd = record_command(config, 'kilted')
    assert cmd[:5] == ['ros2', 'bag', 'record', '-s', 'mcap']
    assert cmd[cmd.index('-o') + 1] == '/data/run1'
    assert cmd[cmd.index('--topics') + 1:] == topics
    assert '-a' not in cmd and '--all' not in cmd
    humble = record_command(default_config(), 'humble')
    assert '-o' not in humble and '--topics' not in humble
    assert humble[-7:] == recorded_topics(default_config())


def test_synthetic_geometry_matches_the_scene():
    from occo_ros.synthetic import SceneConfig, SyntheticScene
    scene = SyntheticScene(SceneConfig(people=0, vehicles=0))
    assert launch_config.SYNTHETIC_CROP == pytest.approx(list(scene.thermal_crop))
    assert launch_config.SYNTHETIC_HOMOGRAPHY == pytest.approx(
        list(scene.thermal_homography.ravel()))


def test_topic_helpers():
    assert camera_info_topic('/boson/image_raw') == '/boson/camera_info'
    assert camera_info_topic('image') == 'camera_info'
    assert resolve('/abs', 'ns') == '/abs'
    assert resolve('a/b', '') == '/a/b'
    assert resolve('a/b', '/ns/') == '/ns/a/b'


def test_recorded_topics_match_what_the_nodes_use():
    """Names in the record list are the node's topic parameters and its fixed outputs."""
    node_source = (REPO / 'occo_ros' / 'fusion_node.py').read_text()
    for topic in ('fused/image', 'fused/camera_info', '/diagnostics'):
        assert f"'{topic}'" in node_source
    cameras_source = (REPO / 'occo_ros' / 'synthetic_cameras.py').read_text()
    assert "f'{name}/image_raw'" in cameras_source and "f'{name}/camera_info'" in cameras_source
    config = default_config()
    assert SPECS['thermal_topic'].default == config['thermal_topic']
    assert SPECS['rgb_topic'].default == config['rgb_topic']


def test_rviz_displays_match_topics_and_qos():
    rviz = yaml.safe_load((REPO / 'rviz' / 'occo.rviz').read_text())
    displays = {d['Name']: d for d in rviz['Visualization Manager']['Displays']}
    config = default_config()
    assert displays['Thermal']['Topic']['Value'] == resolve(config['thermal_topic'], '')
    assert displays['RGB']['Topic']['Value'] == resolve(config['rgb_topic'], '')
    assert displays['Fused']['Topic']['Value'] == '/fused/image'
    assert displays['Thermal']['Topic']['Reliability Policy'] == 'Best Effort'
    assert displays['RGB']['Topic']['Reliability Policy'] == 'Best Effort'
    assert displays['Fused']['Topic']['Reliability Policy'] == 'Reliable'
    assert displays['Thermal']['Normalize Range'] is True      # mono16 needs it
    assert all(d['Class'] == 'rviz_default_plugins/Image' for d in displays.values())


# -- the launch file itself, run against recording stand-ins of launch/launch_ros -------------

class Recorded:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class FakeLaunchConfiguration:
    def __init__(self, name):
        self.name = name

    def perform(self, context):
        return context[self.name]


@pytest.fixture
def fake_launch(monkeypatch):
    """Stand-ins (named as such) for the launch/launch_ros names the launch file imports."""
    modules = {
        'launch': {'LaunchDescription': Recorded},
        'launch.actions': {n: type(n, (Recorded,), {}) for n in (
            'DeclareLaunchArgument', 'ExecuteProcess', 'OpaqueFunction',
            'SetEnvironmentVariable')},
        'launch.substitutions': {'EnvironmentVariable': Recorded,
                                 'LaunchConfiguration': FakeLaunchConfiguration},
        'launch_ros': {},
        'launch_ros.actions': {'Node': type('Node', (Recorded,), {})},
    }
    for name, attrs in modules.items():
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        monkeypatch.setitem(sys.modules, name, module)
    import ament_index_python.packages as packages
    monkeypatch.setattr(packages, 'get_package_share_directory', lambda name: str(REPO))
    spec = importlib.util.spec_from_file_location('fusion_launch',
                                                  REPO / 'launch' / 'fusion.launch.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_launch_file_declares_every_argument(fake_launch):
    description = fake_launch.generate_launch_description()
    entities = description.args[0]
    declared = [e for e in entities if type(e).__name__ == 'DeclareLaunchArgument']
    assert [d.args[0] for d in declared] == [a.name for a in ARGUMENTS]
    for d, a in zip(declared, ARGUMENTS):
        assert d.kwargs['default_value'] == a.default
        assert d.kwargs['description'] == a.description
    env = next(e for e in entities if type(e).__name__ == 'SetEnvironmentVariable')
    assert env.args[0] == 'FASTDDS_BUILTIN_TRANSPORTS'


def test_launch_setup_starts_what_the_arguments_ask(fake_launch, monkeypatch):
    monkeypatch.setenv('ROS_DISTRO', 'jazzy')
    scripts = console_scripts()
    context = default_config(synthetic='true', rviz='true', record='true', namespace='r1')
    actions = fake_launch.launch_setup(context)
    nodes = [a for a in actions if type(a).__name__ == 'Node']
    executables = [n.kwargs['executable'] for n in nodes]
    assert executables == ['fusion_node', 'synthetic_cameras', 'rviz2']
    for node in nodes[:2]:
        assert node.kwargs['package'] == 'occo_ros'
        assert node.kwargs['executable'] in scripts
        assert node.kwargs['namespace'] == 'r1'
    fusion = nodes[0]
    params_file, overrides = fusion.kwargs['parameters']
    assert params_file == str(REPO / 'config' / 'fusion.yaml')
    assert overrides['crop'] == launch_config.SYNTHETIC_CROP
    assert fusion.kwargs['name'] == 'occo_fusion'
    assert nodes[2].kwargs['arguments'] == ['-d', str(REPO / 'rviz' / 'occo.rviz')]
    record = next(a for a in actions if type(a).__name__ == 'ExecuteProcess')
    assert record.kwargs['cmd'] == record_command(context, 'jazzy')
    assert '/r1/fused/image' in record.kwargs['cmd']

    minimal = fake_launch.launch_setup(default_config())
    assert [type(a).__name__ for a in minimal] == ['Node']
