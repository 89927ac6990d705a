"""Every test module declares its cost markers beside its tests (``pytestmark``), so that
``make test-fast`` selects by what the tests say about themselves, not by a list elsewhere.
Checked on the source (AST): a module-level ``pytestmark`` of registered cost markers,
``core`` alone, and ``ros`` wherever a module imports rclpy at module level."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import COST_MARKERS, declared_markers, markers_of_source
import pytest

pytestmark = [pytest.mark.core]

TEST_DIR = Path(__file__).resolve().parent


def imports_rclpy(tree: ast.Module) -> bool:
    """At module level (a test that serialises one message imports rclpy inside itself)."""
    for node in tree.body:
        if isinstance(node, ast.Import) and any(a.name.split('.')[0] == 'rclpy'
                                                for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or '').split('.')[0] == 'rclpy':
            return True
    return False


def problems(source: str) -> list[str]:
    """What is wrong with one test module's marker declaration (empty when nothing)."""
    tree = ast.parse(source)
    marks = declared_markers(tree)
    if marks is None:
        return ['no module-level pytestmark (core, or its costs: ros / slow / data / bench)']
    found = []
    unknown = sorted(set(marks) - set(COST_MARKERS))
    if unknown:
        found.append(f'pytestmark names no cost marker of pytest.ini: {unknown}')
    if 'core' in marks and len(marks) > 1:
        found.append(f'core goes alone (a cost marker takes the module out of the core): '
                     f'{marks}')
    if not marks:
        found.append('an empty pytestmark: declare core or the costs')
    if imports_rclpy(tree) and 'ros' not in marks:
        found.append('imports rclpy but does not declare ros')
    return found


def test_every_test_module_declares_its_markers():
    modules = sorted(TEST_DIR.glob('test_*.py'))
    assert len(modules) > 40
    wrong = {path.name: problems(path.read_text()) for path in modules}
    assert {name: found for name, found in wrong.items() if found} == {}


def test_the_collection_reads_the_markers_the_ast_declares():
    """make test-fast's pytest_ignore_collect parses only the pytestmark statement."""
    for path in sorted(TEST_DIR.glob('test_*.py')):
        source = path.read_text()
        assert markers_of_source(source) == declared_markers(ast.parse(source)), path.name
    assert markers_of_source('import pytest\n') is None
    assert markers_of_source('import pytest\npytestmark = [\n    pytest.mark.ros,\n'
                             '    pytest.mark.slow,\n]\nx = 1\n') == ['ros', 'slow']


@pytest.mark.parametrize('source, expected', [
    ('def test_x():\n    pass\n', 'no module-level pytestmark'),
    ('import pytest\npytestmark = [pytest.mark.core, pytest.mark.slow]\n', 'core goes alone'),
    ('import pytest\npytestmark = pytest.mark.fast\n', "no cost marker of pytest.ini: ['fast']"),
    ('import pytest\npytestmark = []\n', 'an empty pytestmark'),
    ('import pytest\nimport rclpy\npytestmark = [pytest.mark.slow]\n', 'does not declare ros'),
    ('import pytest\nfrom rclpy.node import Node\n\npytestmark = [pytest.mark.core]\n',
     'does not declare ros'),
])
def test_a_planted_violation_is_caught(source, expected):
    assert any(expected in found for found in problems(source)), problems(source)


def test_a_correct_declaration_passes():
    assert problems('import pytest\nimport rclpy\n\npytestmark = [pytest.mark.ros, '
                    'pytest.mark.bench]\n') == []
