"""Functional core, thin shell: the core imports no ROS, the node imports no deep-learning
framework (backends load lazily inside the engine factory)."""

import ast
from pathlib import Path
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


# The model-artifact chain, lowest layer first: a module imports (at module level or
# lazily inside a function) only occo_ros modules of its own layer or below.
ARTIFACT_LAYERS = {
    'model_contract': 0, 'atomic_file': 0, 'params': 0, 'resources': 0, 'output_safety': 0,
    'artifact_cache': 1, 'thermal': 1, 'color': 1,
    'model': 2, 'checkpoint': 2,
    'export': 3, 'fp16_islands': 3,
    'engines': 4,
}


def occo_imports(path: Path) -> set[str]:
    """First component under occo_ros of every occo_ros import in a source file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
        names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                 else [node.module or ''] if isinstance(node, ast.ImportFrom) else [])
        for name in names:
            parts = name.split('.')
            if parts[0] == 'occo_ros' and len(parts) > 1:
                found.add(parts[1])
            elif parts[0] == 'occo_ros' and isinstance(node, ast.ImportFrom):
                found.update(alias.name for alias in node.names
                             if not alias.name.startswith('_'))  # __version__
    return found


def artifact_modules():
    package = Path(__file__).resolve().parents[1] / 'occo_ros'
    for name in ARTIFACT_LAYERS:
        if name == 'engines':
            yield from (('engines', path) for path in sorted((package / 'engines').glob('*.py')))
        else:
            yield name, package / f'{name}.py'


@pytest.mark.parametrize('name, path', list(artifact_modules()),
                         ids=lambda value: getattr(value, 'name', value))
def test_artifact_chain_imports_only_downward(name, path):
    upward = {imported for imported in occo_imports(path) - {name}
              if ARTIFACT_LAYERS.get(imported, 99) > ARTIFACT_LAYERS[name]}
    assert not upward, f'{path.name} (layer {ARTIFACT_LAYERS[name]}) imports {upward} from above'


def test_export_and_contract_load_no_engine_module():
    code = ('import sys, occo_ros.export, occo_ros.model_contract; '
            'print(sorted(n for n in sys.modules if n.startswith("occo_ros.engines")))')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == '[]'
