"""The launch file and its decisions: agreement of the launch arguments, config/fusion.yaml,
the node's parameters, setup.py's entry points, the recorded topic list, the remappings and
the generated RViz config; what starts (and what never starts) for every combination.

Topic names are checked against real rcl name resolution (rclpy nodes with the launch's
namespace and remappings). launch and launch_ros cannot be installed here (not on PyPI). To
run the launch file's own code anyway, ``fake_launch`` below injects minimal stand-ins for
exactly the names it imports (DeclareLaunchArgument, LaunchConfiguration, Node,
LifecycleNode, ExecuteProcess, ...) that record their arguments, and answers ament index
look-ups from a set the test controls; everything else is the real file.
"""

import ast
import configparser
import importlib.util
import itertools
from pathlib import Path
import sys
import tempfile
import types

import pytest
import yaml

from occo_ros.cli import params as param_docs
from occo_ros.params import ESSENTIAL_PARAMS, NODE_NAME, PARAMS, SPECS
from occo_ros.ros import launch_config
from occo_ros.ros.launch_config import (
    ARGUMENTS,
    BOOL,
    camera_info_topic,
    record_command,
    recorded_topics,
    resolve,
)

pytestmark = [pytest.mark.ros]

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


def test_yaml_has_the_essential_parameters_with_their_defaults():
    values = load_yaml_params()
    assert list(values) == list(ESSENTIAL_PARAMS) and len(values) <= 12
    for name, value in values.items():
        assert value == SPECS[name].default, name
        assert type(value) is type(SPECS[name].default), name


@pytest.mark.parametrize('path, generate', [('docs/PARAMETERS.md', param_docs.markdown),
                                            ('config/fusion.yaml', param_docs.parameter_file)])
def test_generated_parameter_documents_are_fresh(path, generate):
    assert (REPO / path).read_text() == generate(), f'{path} is stale: run make docs'


def test_parameter_reference_names_every_parameter_once():
    text = param_docs.markdown()
    for spec in PARAMS:
        assert text.count(f'### `{spec.name}`') == 1, spec.name
    assert text.count('**essential**') == len(ESSENTIAL_PARAMS) + 1   # + the intro's mention


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
    assert names == ['params_file', 'namespace', 'thermal_topic', 'rgb_topic',
                     'input_reliability', 'input_depth', 'model', 'backend', 'precision',
                     'use_sim_time', 'log_level', 'managed', 'fail_on_node_exit', 'rviz',
                     'synthetic', 'record', 'bag_path']
    assert all(a.description for a in ARGUMENTS)
    for a in ARGUMENTS:
        assert not a.choices or a.default in a.choices, a.name
    backend = next(a for a in ARGUMENTS if a.name == 'backend')
    assert backend.choices == SPECS['backend'].choices
    precision = next(a for a in ARGUMENTS if a.name == 'precision')
    assert precision.choices == SPECS['precision'].choices
    reliability = next(a for a in ARGUMENTS if a.name == 'input_reliability')
    assert all(choice in reliability.description for choice in SPECS['input_reliability'].choices)


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
    from occo_ros.synthetic.scene import SceneConfig, SyntheticScene
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


# Launches the checks below cover: default, the README's robot command (remapped), namespaced
# with relative topics, namespaced with absolute and private (~) topics, synthetic variants.
LAUNCHES = {
    'default': {},
    'remapped': {'thermal_topic': '/boson/image_raw', 'rgb_topic': '/camera/color/image_raw'},
    'namespaced': {'namespace': 'robot1'},
    'namespaced_remapped': {'namespace': '/robot1/front', 'thermal_topic': '/boson/image_raw',
                            'rgb_topic': '~/rgb/image_raw'},
    'synthetic_namespaced': {'namespace': 'robot1', 'synthetic': 'true'},
    'synthetic_remapped': {'namespace': 'robot2', 'synthetic': 'true',
                           'thermal_topic': 'ir/image_raw', 'rgb_topic': '/cam/image_raw'},
}


@pytest.fixture(scope='module')
def rcl():
    """Real rcl name resolution (rclpy nodes are never spun: no DDS traffic needed)."""
    import rclpy
    context = rclpy.context.Context()
    rclpy.init(context=context)
    yield lambda name, namespace, remaps=(): rclpy.create_node(
        name, namespace=namespace or '/', context=context, start_parameter_services=False,
        cli_args=['--ros-args'] + [a for r in remaps for a in ('-r', f'{r[0]}:={r[1]}')])
    rclpy.shutdown(context=context)


@pytest.mark.parametrize('launch', LAUNCHES)
def test_names_resolve_as_rcl_resolves_them(rcl, launch):
    """launch_config.resolve, the recorded topics and the synthetic cameras' remappings agree
    with rcl's own resolution in the started nodes (fusion node: its topic parameters are
    plain names it subscribes to; cameras: their fixed names under the launch's remaps)."""
    config = default_config(**LAUNCHES[launch])
    fusion = rcl(NODE_NAME, config['namespace'])
    cameras = rcl('synthetic_cameras', config['namespace'],
                  launch_config.camera_remappings(config))
    try:
        for topic in (config['thermal_topic'], config['rgb_topic'], 'fused/image'):
            assert resolve(topic, config['namespace']) == fusion.resolve_topic_name(topic)
        for camera in ('thermal', 'rgb'):
            wanted = config[f'{camera}_topic']
            for own, node_topic in ((f'{camera}/image_raw', wanted),
                                    (f'{camera}/camera_info', camera_info_topic(wanted))):
                assert cameras.resolve_topic_name(own) == fusion.resolve_topic_name(node_topic)
    finally:
        fusion.destroy_node()
        cameras.destroy_node()


@pytest.mark.parametrize('launch', LAUNCHES)
def test_generated_rviz_config_shows_every_panel_on_a_launched_topic(rcl, launch):
    """Each panel of the generated config subscribes to a topic that the launch's nodes use
    (rcl's resolution in the fusion node: its two inputs and its output); everything else is
    the template's."""
    config = default_config(**LAUNCHES[launch])
    template = (REPO / 'rviz' / 'occo.rviz').read_text()
    generated = yaml.safe_load(launch_config.rviz_config(template, config))
    fusion = rcl(NODE_NAME, config['namespace'])
    try:
        used = {name: fusion.resolve_topic_name(config[f'{name}_topic'])
                for name in ('thermal', 'rgb')}
        used['fused'] = fusion.resolve_topic_name('fused/image')
    finally:
        fusion.destroy_node()
    panels = {d['Name']: d['Topic']['Value']
              for d in generated['Visualization Manager']['Displays']}
    assert panels == {'Thermal': used['thermal'], 'RGB': used['rgb'], 'Fused': used['fused']}
    original = yaml.safe_load(template)
    for display in original['Visualization Manager']['Displays']:
        display['Topic']['Value'] = panels[display['Name']]
    assert generated == original


def test_rviz_config_refuses_a_template_without_the_three_panels():
    template = yaml.safe_load((REPO / 'rviz' / 'occo.rviz').read_text())
    template['Visualization Manager']['Displays'].pop()
    with pytest.raises(ValueError, match='panels'):
        launch_config.rviz_config(yaml.safe_dump(template), default_config())


def test_recorded_topics_match_what_the_nodes_use():
    """Names in the record list are the node's topic parameters and its fixed outputs."""
    node_source = (REPO / 'occo_ros' / 'ros' / 'fusion_node.py').read_text()
    for topic in ('fused/image', 'fused/camera_info', '/diagnostics'):
        assert f"'{topic}'" in node_source
    cameras_source = (REPO / 'occo_ros' / 'ros' / 'synthetic_cameras.py').read_text()
    assert "f'{name}/image_raw'" in cameras_source and "f'{name}/camera_info'" in cameras_source
    config = default_config()
    assert SPECS['thermal_topic'].default == config['thermal_topic']
    assert SPECS['rgb_topic'].default == config['rgb_topic']
    assert launch_config.SYNTHETIC_THERMAL == config['thermal_topic']
    assert launch_config.SYNTHETIC_RGB == config['rgb_topic']


def test_rviz_template_matches_default_topics_and_qos():
    """rviz/occo.rviz is a plain config for `rviz2 -d` on the default topics."""
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


def test_check_tools_warns_or_stops_naming_the_apt_packages():
    nothing = lambda package: False  # noqa: E731
    config = default_config(rviz='true', synthetic='true')
    checked, warnings = launch_config.check_tools(config, nothing, 'jazzy')
    assert checked['rviz'] == 'false' and checked['synthetic'] == 'true'
    assert len(warnings) == 1
    assert 'sudo apt install ros-jazzy-rviz2' in warnings[0]
    assert 'Starting without rviz2' in warnings[0]
    with pytest.raises(launch_config.MissingTool) as error:
        launch_config.check_tools(default_config(record='true'), nothing, 'kilted')
    assert 'ros-kilted-ros2bag ros-kilted-rosbag2-storage-mcap' in str(error.value)
    assert 'Nothing was started' in str(error.value)
    only_mcap_missing = lambda package: package != 'rosbag2_storage_mcap'  # noqa: E731
    with pytest.raises(launch_config.MissingTool,
                       match=r'install ros-\$ROS_DISTRO-rosbag2-storage-mcap\.'):
        launch_config.check_tools(default_config(record='true'), only_mcap_missing, '')
    everything = lambda package: True  # noqa: E731
    config = default_config(rviz='true', record='true')
    assert launch_config.check_tools(config, everything, 'jazzy') == (config, [])
    # not asked for: not looked up
    assert launch_config.check_tools(default_config(), nothing, 'jazzy') == (default_config(),
                                                                             [])


# -- the launch file itself, run against recording stand-ins of launch/launch_ros -------------

class Recorded:
    created: list = []      # every stand-in action made, in order (reset per test)

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs
        Recorded.created.append(self)


class FakeLaunchConfiguration:
    def __init__(self, name):
        self.name = name

    def perform(self, context):
        return context[self.name]


@pytest.fixture
def fake_launch(monkeypatch, tmp_path):
    """Stand-ins (named as such) for the launch/launch_ros names the launch file imports;
    ament_index answers from ``installed`` (a set of ROS package names the test controls)."""
    monkeypatch.setattr(Recorded, 'created', [])
    warnings = []
    logger = types.SimpleNamespace(warning=warnings.append)
    stand_in = lambda name: type(name, (Recorded,), {})  # noqa: E731
    modules = {
        'launch': {'LaunchDescription': Recorded},
        'launch.actions': {n: stand_in(n) for n in (
            'DeclareLaunchArgument', 'EmitEvent', 'ExecuteProcess', 'OpaqueFunction',
            'RegisterEventHandler', 'SetEnvironmentVariable', 'Shutdown')},
        'launch.events': {'matches_action': lambda action: ('matches', action)},
        'launch.logging': {'get_logger': lambda name: logger},
        'launch.substitutions': {'EnvironmentVariable': Recorded,
                                 'LaunchConfiguration': FakeLaunchConfiguration},
        'launch_ros': {},
        'launch_ros.actions': {n: stand_in(n) for n in ('Node', 'LifecycleNode')},
        'launch_ros.event_handlers': {'OnStateTransition': stand_in('OnStateTransition')},
        'launch_ros.events': {},
        'launch_ros.events.lifecycle': {'ChangeState': stand_in('ChangeState')},
    }
    for name, attrs in modules.items():
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        monkeypatch.setitem(sys.modules, name, module)
    import ament_index_python.packages as packages
    installed = {'occo_ros', 'rviz2', 'ros2bag', 'rosbag2_storage_mcap'}

    def prefix(name):
        if name not in installed:
            raise packages.PackageNotFoundError(name)
        return '/opt/ros/test'

    monkeypatch.setattr(packages, 'get_package_share_directory', lambda name: str(REPO))
    monkeypatch.setattr(packages, 'get_package_prefix', prefix)
    monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path))    # where the RViz file goes
    spec = importlib.util.spec_from_file_location('fusion_launch',
                                                  REPO / 'launch' / 'fusion.launch.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.installed_packages, module.warnings = installed, warnings
    return module


def started(actions):
    """(executable, stand-in) of each process the actions start."""
    return [(a.kwargs['executable'] if 'executable' in a.kwargs else a.kwargs['cmd'][0], a)
            for a in actions if type(a).__name__ in ('Node', 'LifecycleNode', 'ExecuteProcess')]


def test_launch_file_declares_every_argument(fake_launch):
    description = fake_launch.generate_launch_description()
    entities = description.args[0]
    declared = [e for e in entities if type(e).__name__ == 'DeclareLaunchArgument']
    assert [d.args[0] for d in declared] == [a.name for a in ARGUMENTS]
    for d, a in zip(declared, ARGUMENTS):
        assert d.kwargs['default_value'] == a.default
        assert d.kwargs['description'] == a.description
        assert d.kwargs.get('choices', []) == list(a.choices)
    # no private DDS transport: a node with one does not talk to the rest of the robot
    assert not [e for e in Recorded.created if type(e).__name__ == 'SetEnvironmentVariable']


def test_launch_setup_starts_what_the_arguments_ask(fake_launch, monkeypatch):
    monkeypatch.setenv('ROS_DISTRO', 'jazzy')
    scripts = console_scripts()
    context = default_config(synthetic='true', rviz='true', record='true', namespace='r1',
                             thermal_topic='/boson/image_raw')
    actions = fake_launch.launch_setup(context)
    processes = started(actions)
    assert [name for name, _ in processes] == ['fusion_node', 'synthetic_cameras', 'rviz2',
                                               'ros2']
    fusion, cameras, rviz, record = (a for _, a in processes)
    for node in (fusion, cameras):
        assert node.kwargs['package'] == 'occo_ros'
        assert node.kwargs['executable'] in scripts
        assert node.kwargs['namespace'] == 'r1'
    params_file, overrides = fusion.kwargs['parameters']
    assert params_file == str(REPO / 'config' / 'fusion.yaml')
    assert overrides == launch_config.node_overrides(context)
    assert 'input_reliability' not in overrides      # the node's auto: the cameras' own
    assert fusion.kwargs['name'] == 'occo_fusion'
    assert fusion.kwargs['additional_env'] == launch_config.node_environment(context) == {}
    assert 'additional_env' not in cameras.kwargs
    assert cameras.kwargs['remappings'] == launch_config.camera_remappings(context)
    assert ('thermal/image_raw', '/boson/image_raw') in cameras.kwargs['remappings']
    flag, rviz_file = rviz.kwargs['arguments']
    assert flag == '-d'
    assert Path(rviz_file).read_text() == launch_config.rviz_config(
        (REPO / 'rviz' / 'occo.rviz').read_text(), context)
    assert record.kwargs['cmd'] == record_command(context, 'jazzy')
    assert '/r1/fused/image' in record.kwargs['cmd']
    assert float(record.kwargs['sigterm_timeout']) == launch_config.RECORDER_SIGTERM_TIMEOUT_S
    assert fake_launch.warnings == []

    minimal = fake_launch.launch_setup(default_config())
    assert [name for name, _ in started(minimal)] == ['fusion_node']


def test_managed_launch_configures_and_activates_the_lifecycle_node(fake_launch):
    actions = fake_launch.launch_setup(default_config(managed='true', namespace='r1'))
    [(executable, node)] = started(actions)
    assert executable == 'fusion_lifecycle_node'
    assert type(node).__name__ == 'LifecycleNode'
    assert node.kwargs['name'] == 'occo_fusion' and node.kwargs['namespace'] == 'r1'
    from lifecycle_msgs.msg import Transition
    handler = next(a for a in actions if type(a).__name__ == 'RegisterEventHandler')
    on_inactive = handler.args[0]
    assert on_inactive.kwargs['target_lifecycle_node'] is node
    assert on_inactive.kwargs['goal_state'] == 'inactive'
    # once: a user's deactivate (also -> inactive) must not be undone by the launch
    assert on_inactive.kwargs['handle_once'] is True
    [activate] = on_inactive.kwargs['entities']
    change = activate.kwargs['event']
    assert change.kwargs['transition_id'] == Transition.TRANSITION_ACTIVATE
    assert change.kwargs['lifecycle_node_matcher'] == ('matches', node)
    configure = actions[-1].kwargs['event']
    assert configure.kwargs['transition_id'] == Transition.TRANSITION_CONFIGURE
    assert configure.kwargs['lifecycle_node_matcher'] == ('matches', node)
    # the handler is registered before the node starts, configure requested after it
    assert actions.index(handler) < actions.index(node) < len(actions) - 1
    assert executable in console_scripts()


@pytest.mark.parametrize('missing', [(), ('rviz2',), ('ros2bag',), ('rosbag2_storage_mcap',),
                                     ('rviz2', 'rosbag2_storage_mcap')])
def test_no_launch_leaves_a_process_behind(fake_launch, monkeypatch, missing):
    """Every combination of rviz, record and synthetic, with optional tools missing: the
    launch either creates no action at all (an error before anything starts) or starts
    what was asked minus what is missing, with one WARN naming the apt package each."""
    monkeypatch.setenv('ROS_DISTRO', 'kilted')
    fake_launch.installed_packages.difference_update(missing)
    for rviz, record, synthetic in itertools.product(BOOL, repeat=3):
        Recorded.created.clear()
        fake_launch.warnings.clear()
        config = default_config(rviz=rviz, record=record, synthetic=synthetic)
        record_missing = record == 'true' and {'ros2bag', 'rosbag2_storage_mcap'} & set(missing)
        if record_missing:
            with pytest.raises(launch_config.MissingTool, match='ros-kilted-'):
                fake_launch.launch_setup(config)
            assert Recorded.created == [], 'an action was created before the launch failed'
            continue
        names = [name for name, _ in started(fake_launch.launch_setup(config))]
        want_rviz = rviz == 'true' and 'rviz2' not in missing
        assert names == (['fusion_node'] + ['synthetic_cameras'] * (synthetic == 'true')
                         + ['rviz2'] * want_rviz + ['ros2'] * (record == 'true'))
        rviz_warned = rviz == 'true' and 'rviz2' in missing
        assert len(fake_launch.warnings) == rviz_warned
        if rviz_warned:
            assert 'ros-kilted-rviz2' in fake_launch.warnings[0]


def test_bad_input_depth_stops_the_launch_before_anything_starts(fake_launch):
    with pytest.raises(ValueError, match='input_depth'):
        fake_launch.launch_setup(default_config(input_depth='0', synthetic='true'))
    with pytest.raises(ValueError, match='input_reliability'):
        fake_launch.launch_setup(default_config(input_reliability='sometimes'))
    assert Recorded.created == []
    assert launch_config.node_overrides(default_config(input_reliability='best_effort'))[
        'input_reliability'] == 'best_effort'


@pytest.mark.parametrize('managed', BOOL)
def test_the_end_of_the_fusion_node_ends_the_launch_with_its_outcome(fake_launch, managed):
    """A node that ends by itself ends the launch (Shutdown); a failed one (non-zero code)
    makes launch exit 1 unless fail_on_node_exit:=false; while the launch already shuts
    down (Ctrl-C) nothing more is emitted: a second Shutdown event re-runs launch_ros's
    ROS-adapter shutdown, which fails with 'Cannot shutdown a ROS adapter that is not
    running' (managed:=true)."""
    for fail in BOOL:
        config = default_config(managed=managed, fail_on_node_exit=fail)
        [(_, node)] = started(fake_launch.launch_setup(config))
        on_exit = node.kwargs['on_exit']

        def run(code, shutting_down, on_exit=on_exit):
            return on_exit(types.SimpleNamespace(returncode=code),
                           types.SimpleNamespace(is_shutdown=shutting_down))

        [shutdown] = run(0, False)
        assert type(shutdown).__name__ == 'Shutdown'
        for code in (0, 1, -9):
            assert run(code, True) is None
        for code in (1, -9):
            if fail == 'true':
                with pytest.raises(fake_launch.NodeExitFailure, match=f'exit code {code}'):
                    run(code, False)
            else:
                assert type(run(code, False)[0]).__name__ == 'Shutdown'


def test_systemd_unit_stops_the_launch_with_sigint_and_leaves_nothing_running():
    """config/occo-fusion.service: SIGINT to `ros2 launch --noninteractive` (which passes it
    on to every process), SIGKILL for leftovers only after launch's own escalation for the
    recorder (SIGINT, RECORDER_SIGTERM_TIMEOUT_S, SIGTERM, launch's 5 s, SIGKILL)."""
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read_string((REPO / 'config' / 'occo-fusion.service').read_text())
    service = unit['Service']
    assert service['KillSignal'] == 'SIGINT'
    assert service['KillMode'] == 'mixed'
    assert float(service['TimeoutStopSec']) > launch_config.RECORDER_SIGTERM_TIMEOUT_S + 5
    command = service['ExecStart']
    assert 'exec ros2 launch --noninteractive occo_ros fusion.launch.py' in command
    names = {a.name for a in ARGUMENTS}
    for argument in command.rstrip("'").split('fusion.launch.py', 1)[1].split():
        assert argument.split(':=')[0] in names, argument
