"""The import rules of docs/ARCHITECTURE.md, checked on the source (AST, no subprocess).

Every module belongs to a group: a subpackage of occo_ros (``core``, ``model``, ...), one of
the top-level modules that tie them (``params``, ``pipeline``, ``worker``), or ``training``.
A group may import only the groups :data:`ALLOWED` names (and itself); no command-line
module imports another; nothing outside ``ros`` imports ROS; and what a robot's node loads
at import time (``ros``, followed through module-level imports) reaches no deep-learning
framework: the backends load lazily inside the engine factory.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = [pytest.mark.core]

REPO = Path(__file__).resolve().parents[1]

#: Which groups each group may import (its own group always). Lowest layers first.
ALLOWED: dict[str, frozenset[str]] = {
    'util': frozenset(),
    'params': frozenset({'util'}),
    'core': frozenset({'util', 'params'}),
    'synthetic': frozenset({'util', 'core'}),
    'model': frozenset({'util', 'params', 'core'}),
    'calibration': frozenset({'util', 'params', 'core'}),
    'io': frozenset({'util', 'params', 'core'}),
    'engines': frozenset({'util', 'params', 'core', 'model'}),
    'pipeline': frozenset({'util', 'params', 'core', 'model', 'engines', 'calibration'}),
    'worker': frozenset({'util', 'params', 'core', 'pipeline'}),
    'offline': frozenset({'util', 'params', 'core', 'model', 'engines', 'calibration', 'io',
                          'pipeline'}),
    'cli': frozenset({'util', 'params', 'core', 'model', 'engines', 'calibration', 'io',
                      'pipeline', 'offline', 'synthetic'}),
    'ros': frozenset({'util', 'params', 'core', 'model', 'engines', 'calibration', 'io',
                      'pipeline', 'worker', 'synthetic'}),
    'training': frozenset({'util', 'params', 'core', 'model', 'engines', 'calibration', 'io',
                           'pipeline', 'synthetic'}),
}
ROS = frozenset({'rclpy', 'sensor_msgs', 'std_msgs', 'diagnostic_msgs', 'rcl_interfaces',
                 'lifecycle_msgs', 'builtin_interfaces', 'launch', 'launch_ros'})
FRAMEWORKS = frozenset({'torch', 'onnxruntime', 'tensorrt', 'pycuda', 'onnx', 'onnxscript'})


@dataclass(frozen=True)
class Import:
    """One import in a module: the full imported name, its line, and whether it runs at
    import time (module level) or lazily (inside a function)."""

    name: str
    line: int
    eager: bool


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def imports_of(path: Path) -> list[Import]:
    """Every absolute import in a source file (``from a import b`` gives ``a.b``; the package's
    own relative imports are resolved by the caller's naming)."""
    found = []

    def visit(statements: list, eager: bool) -> None:
        # Imports are statements: only the statement lists of compound statements (and of
        # except and case clauses) can hold them, so expressions are not walked.
        for child in statements:
            if isinstance(child, ast.Import):
                found.extend(Import(a.name, child.lineno, eager) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.module and not child.level:
                    found.extend(Import(f'{child.module}.{a.name}', child.lineno, eager)
                                 for a in child.names)
            else:
                lazy = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
                for field in ('body', 'handlers', 'orelse', 'finalbody', 'cases'):
                    visit(getattr(child, field, ()), eager and not lazy)

    visit(ast.parse(path.read_text(encoding='utf-8')).body, True)
    return found


def group_of(module: str) -> str | None:
    """The group of an occo_ros or training module name, None for anything else."""
    parts = module.split('.')
    if parts[0] in ('training', 'occo_training'):
        return 'training'
    if parts[0] != 'occo_ros' or len(parts) == 1:
        return None
    return parts[1] if parts[1] in ALLOWED else None


def sources(root: Path) -> dict[str, Path]:
    """Module name -> file of occo_ros and training under ``root``."""
    return {module_name(p, root): p for package in ('occo_ros', 'training')
            for p in sorted((root / package).rglob('*.py'))}


def violations(root: Path) -> list[str]:
    """Every broken import rule under ``root``, one line each (empty when the tree obeys)."""
    modules = sources(root)
    imports = {module: imports_of(path) for module, path in modules.items()}   # parsed once
    problems = []
    for module, path in modules.items():
        group = group_of(module) or ('top' if module == 'occo_ros' else None)
        where = f'{path.relative_to(root)}'
        for imp in imports[module]:
            top = imp.name.split('.')[0]
            target = group_of(imp.name)
            if top in ROS and group != 'ros':
                problems.append(f'{where}:{imp.line}: imports ROS ({imp.name}) outside ros/')
            if group == target == 'cli' and imp.name.split('.')[2:3] != module.split('.')[2:3]:
                problems.append(f'{where}:{imp.line}: a command-line module imports another '
                                f'({imp.name})')
            if target is None or target == group:
                continue
            if group == 'top':
                problems.append(f'{where}:{imp.line}: occo_ros/__init__ imports {imp.name}')
            elif group not in ALLOWED or target not in ALLOWED[group]:
                problems.append(f'{where}:{imp.line}: {group} may not import {target} '
                                f'({imp.name})')
    problems += eager_frameworks(root, modules, imports)
    return problems


def eager_frameworks(root: Path, modules: dict[str, Path],
                     imports: dict[str, list[Import]]) -> list[str]:
    """Deep-learning frameworks that importing a ``ros`` module loads (module-level imports,
    followed through occo_ros; `imports`: imports_of each module)."""
    problems = []
    for start in (m for m in modules if group_of(m) == 'ros'):
        seen, todo = set(), [start]
        while todo:
            module = todo.pop()
            if module in seen or module not in modules:
                continue
            seen.add(module)
            for imp in imports[module]:
                if not imp.eager:
                    continue
                if imp.name.split('.')[0] in FRAMEWORKS:
                    problems.append(f'{modules[start].relative_to(root)}: loads {imp.name} at '
                                    f'import time (through {module})')
                # 'from a.b import c': c may be a module (a.b.c) or a name in a.b
                todo += [imp.name, imp.name.rsplit('.', 1)[0]]
                parts = imp.name.split('.')
                todo += ['.'.join(parts[:i]) for i in range(2, len(parts))]
    return problems


def test_the_tree_obeys_the_import_rules():
    assert violations(REPO) == []


def test_every_module_is_in_a_group_and_the_top_level_is_small():
    top = sorted(p.name for p in (REPO / 'occo_ros').glob('*.py'))
    assert top == ['__init__.py', 'params.py', 'pipeline.py', 'worker.py']
    for module in sources(REPO):
        assert module == 'occo_ros' or group_of(module), f'{module} is in no group'


@pytest.mark.parametrize('planted, expected', [
    ('core/planted.py', 'core may not import pipeline'),
    ('cli/planted.py', 'a command-line module imports another'),
    ('model/planted.py', 'imports ROS'),
    ('ros/planted.py', 'loads torch at import time'),
], ids=['upward', 'cli-to-cli', 'ros-outside-ros', 'eager-framework'])
def test_a_planted_violation_is_caught(tmp_path, planted, expected):
    package = tmp_path / 'occo_ros'
    for folder in ('core', 'cli', 'model', 'ros'):
        (package / folder).mkdir(parents=True)
        (package / folder / '__init__.py').write_text('')
    (package / '__init__.py').write_text('')
    (tmp_path / 'training').mkdir()
    (package / 'pipeline.py').write_text('import numpy\n')
    (package / 'cli' / 'bag.py').write_text('import argparse\n')
    (package / 'model' / 'net.py').write_text('import torch\n')
    body = {
        'core/planted.py': 'from occo_ros.pipeline import fuse\n',
        'cli/planted.py': 'from occo_ros.cli.bag import main\n',
        'model/planted.py': 'def f():\n    import rclpy\n',
        'ros/planted.py': 'from occo_ros.model import net\n',
    }[planted]
    (package / planted).write_text(body)
    assert any(expected in p for p in violations(tmp_path)), violations(tmp_path)
