"""The install layout, from a real wheel built with setup.py (what colcon's ament_python
build installs): runtime files in share/occo_ros, every entry point's package present, the
training code under the collision-free name ``occo_training`` (no top-level ``training``).

colcon itself is not installable here; its ament_python build runs the same setup.py, so
the data files and packages checked here are the ones a workspace install gets.
"""

import ast
import configparser
import os
from pathlib import Path
import shutil
import subprocess
import sys
from xml.etree import ElementTree as ET
import zipfile

import pytest

from occo_ros.util.resources import DEFAULT_MODEL

pytestmark = [pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
SOURCES = ('setup.py', 'setup.cfg', 'package.xml', 'resource', 'config', 'launch', 'rviz',
           'models', 'occo_ros', 'training')


#: every executable setup.py declares (ros2 run occo_ros <name>, and the command-line tools)
EXECUTABLES = {'fusion_node', 'fusion_lifecycle_node', 'synthetic_cameras', 'occo-fuse',
               'occo-demo', 'occo-export', 'occo-build-engine', 'occo-bag', 'occo-calibrate',
               'occo-eval', 'occo-train', 'occo-masks', 'occo-params'}


def copy_sources(source: Path) -> Path:
    """A copy of the package sources in ``source``, so a build leaves no build/ folder in the
    checkout."""
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns('__pycache__'))
        else:
            source.mkdir(exist_ok=True)
            shutil.copy2(path, source / name)
    return source


@pytest.fixture(scope='module')
def wheel_path(tmp_path_factory) -> Path:
    """A wheel built from a copy of the package sources (what colcon's build runs)."""
    tmp_path = tmp_path_factory.mktemp('wheel')
    source = copy_sources(tmp_path / 'src')
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps',
                    '--no-build-isolation', '-w', str(tmp_path / 'dist'), str(source)],
                   check=True, capture_output=True, timeout=300)
    return next((tmp_path / 'dist').glob('occo_ros-*.whl'))


def test_wheel_installs_runtime_files_and_entry_points(wheel_path):
    wheel = zipfile.ZipFile(wheel_path)
    names = set(wheel.namelist())
    marker = '.data/data/share/occo_ros/package.xml'
    data = next(n.split('/')[0] for n in names if n.endswith(marker))
    share = f'{data}/data/share/occo_ros/'
    expected = ['package.xml', 'config/fusion.yaml', 'config/occo-fusion.service',
                'launch/fusion.launch.py', 'rviz/occo.rviz',
                f'models/{DEFAULT_MODEL}', f'models/{Path(DEFAULT_MODEL).stem}.onnx',
                'models/MODEL_CARD.md']
    missing = [name for name in expected if share + name not in names]
    assert not missing, f'not installed to share/occo_ros: {missing}'
    assert f'{data}/data/share/ament_index/resource_index/packages/occo_ros' in names

    entry_points = configparser.ConfigParser()
    dist_info = next(n.split('/')[0] for n in names if n.endswith('.dist-info/METADATA'))
    entry_points.read_string(wheel.read(f'{dist_info}/entry_points.txt').decode())
    scripts = dict(entry_points['console_scripts'])
    assert EXECUTABLES <= set(scripts), EXECUTABLES - set(scripts)
    for name in ('occo-eval', 'occo-train', 'occo-masks'):
        assert scripts[name].startswith('occo_training.'), scripts[name]
    top_level = {n.split('/')[0] for n in names if '/' in n and '.dist-info' not in n
                 and '.data' not in n}
    assert top_level == {'occo_ros', 'occo_training'}, top_level
    for target in scripts.values():
        module = target.split(':')[0]
        assert module.replace('.', '/') + '.py' in names, f'{target}: module not in the wheel'


def test_training_code_imports_under_its_installed_name(wheel_path, tmp_path):
    """Installed from the wheel (outside the checkout), the training entry points' modules
    import as occo_training.* (relative imports inside training/) and no `training` exists."""
    target = tmp_path / 'site'
    subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', '--target',
                    str(target), str(wheel_path)], check=True, capture_output=True, timeout=300)
    code = ('import importlib.util, occo_training.evaluate, occo_training.masks, '
            'occo_training.train\n'
            'print(occo_training.train.__file__)\n'
            "print(importlib.util.find_spec('training'))")
    result = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300,
                            env=dict(os.environ, PYTHONPATH=str(target)))
    assert result.returncode == 0, result.stderr
    train_file, training_spec = result.stdout.split()
    assert Path(train_file) == target / 'occo_training' / 'train.py'
    assert training_spec == 'None'


def test_scripts_go_where_ros2_run_looks(tmp_path):
    """ros2 run / ros2 launch find executables in lib/<package>; setup.cfg puts them there.
    Installed the way colcon's ament_python build installs (setup.py install --prefix
    --single-version-externally-managed), every executable is in lib/occo_ros and runs."""
    config = configparser.ConfigParser()
    config.read(REPO / 'setup.cfg')
    assert config['develop']['script_dir'] == '$base/lib/occo_ros'
    assert config['install']['install_scripts'] == '$base/lib/occo_ros'

    source, prefix = copy_sources(tmp_path / 'src'), tmp_path / 'install'
    subprocess.run([sys.executable, 'setup.py', '-q', 'install', '--prefix', str(prefix),
                    '--single-version-externally-managed', '--record', str(tmp_path / 'files')],
                   cwd=source, check=True, capture_output=True, timeout=300)
    lib = prefix / 'lib' / 'occo_ros'
    assert {p.name for p in lib.iterdir()} == EXECUTABLES
    assert all(os.access(lib / name, os.X_OK) for name in EXECUTABLES)
    site = next(prefix.glob('lib/python*/site-packages'))
    run = subprocess.run([str(lib / 'occo-calibrate'), '--help'], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, PYTHONPATH=str(site)))
    assert run.returncode == 0 and 'usage: occo-calibrate' in run.stdout, run.stderr


def ros_imports() -> set[str]:
    """Top-level ROS packages the installed code imports (rclpy, launch, ament and every
    *_msgs / *_interfaces package), from the source of occo_ros/ and launch/."""
    names = set()
    for path in [*(REPO / 'occo_ros').rglob('*.py'), *(REPO / 'launch').glob('*.py')]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split('.')[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split('.')[0])
    return {n for n in names if n in ('rclpy', 'launch', 'launch_ros', 'ament_index_python')
            or n.endswith(('_msgs', '_interfaces'))}


def test_package_xml_declares_every_ros_package_the_code_imports():
    """rosdep installs from package.xml: a ROS import it does not list fails on a robot."""
    root = ET.parse(REPO / 'package.xml').getroot()
    declared = {e.text for e in root if e.tag in ('depend', 'exec_depend')}
    imported = ros_imports()
    assert {'rclpy', 'launch', 'launch_ros', 'lifecycle_msgs'} <= imported
    assert imported <= declared, f'imported but not in package.xml: {imported - declared}'
