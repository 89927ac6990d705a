"""Functional core, thin shell: the core imports no ROS, the node imports no deep-learning
framework (backends load lazily inside the engine factory)."""

import subprocess
import sys

import pytest

CORE = ('codec', 'thermal', 'registration', 'color', 'pairing', 'pipeline', 'worker', 'params',
        'stats', 'model', 'checkpoint', 'synthetic', 'launch_config', 'engines', 'export', 'bag',
        'fuse_folder')


def imported_after(module: str) -> set[str]:
    code = f'import sys, {module}; print(" ".join(sorted(sys.modules)))'
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         check=True).stdout
    return {name.split('.')[0] for name in out.split()}


@pytest.mark.parametrize('name', CORE)
def test_core_module_imports_no_ros(name):
    loaded = imported_after(f'occo_ros.{name}')
    assert not loaded & {'rclpy', 'sensor_msgs', 'std_msgs', 'diagnostic_msgs',
                         'rcl_interfaces'}


@pytest.mark.parametrize('node', ['fusion_node', 'fusion_lifecycle_node'])
def test_node_imports_no_framework(node):
    loaded = imported_after(f'occo_ros.{node}')
    assert not loaded & {'torch', 'tensorrt', 'pycuda', 'onnxruntime'}
