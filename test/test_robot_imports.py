"""What a robot imports (occo_ros/) compiles and imports on the running Python: run by
`make test-py38` under Python 3.8 (JetPack 5) with numpy 1.24, and by `make test`.

Compiling every module catches 3.9+ syntax; importing every module whose dependencies are
installed executes its module-level code (dataclass annotations, defaults, tables), where
3.9+ runtime features such as `dict | dict` or `list[int]` outside annotations would fail.
Modules needing ROS, PyTorch or another package absent here are skipped with the reason.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

pytestmark = [pytest.mark.core]

PACKAGE = Path(__file__).resolve().parents[1] / 'occo_ros'
MODULES = sorted(
    '.'.join(path.relative_to(PACKAGE.parent).with_suffix('').parts)
    for path in PACKAGE.rglob('*.py') if path.name != '__init__.py'
) + ['occo_ros', 'occo_ros.engines']


@pytest.mark.parametrize('path', sorted(PACKAGE.rglob('*.py')), ids=lambda p: p.name)
def test_module_compiles(path):
    compile(path.read_text(encoding='utf-8'), str(path), 'exec')


@pytest.mark.parametrize('name', MODULES)
def test_module_imports(name):
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split('.')[0] == 'occo_ros':
            raise
        pytest.skip(f'{name} needs {exc.name}, not installed in this environment')
