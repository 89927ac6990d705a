"""The test targets themselves: the cost markers the modules declare (conftest.py adds data
and slow) and CI's refusal to
pass when ../shared is missing, tried on a throw-away project (pytester) whose shared folder
does not exist, with this repository's conftest.py and pytest.ini."""

import json
import os
from pathlib import Path
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.bench]

pytest_plugins = ['pytester']

TEST_DIR = Path(__file__).resolve().parent
SOURCES = {
    # a data test, a quick core test and a slow one in a core module, a DDS test, a bench
    # test, and a module that declares no markers
    'test_color': 'import pytest\n\npytestmark = [pytest.mark.core]\n\n\n'
                  'def test_reads_pairs(shared_data):\n    pass\n\n\n'
                  'def test_quick():\n    pass\n\n\n'
                  '@pytest.mark.slow\ndef test_big():\n    pass\n',
    'test_fusion_node': 'import os\nimport pytest\n\n'
                        "if os.environ.get('IMPORT_LOG'):\n"
                        "    open(os.environ['IMPORT_LOG'], 'a').write('test_fusion_node ')\n"
                        'pytestmark = [pytest.mark.ros]\n\n\n'
                        'def test_over_dds():\n    pass\n',
    'test_bench_x': 'import pytest\n\npytestmark = [pytest.mark.bench]\n\n\n'
                    'def test_script():\n    pass\n',
    'test_brand_new': 'def test_unclassified():\n    pass\n',
}


def make_project(root: Path) -> Path:
    """``root/repo/test/`` with the real conftest.py and pytest.ini; ``root/shared`` absent."""
    repo = root / 'repo'
    (repo / 'test').mkdir(parents=True)
    (repo / 'pytest.ini').write_text((TEST_DIR.parent / 'pytest.ini').read_text())
    (repo / 'test' / 'conftest.py').write_text((TEST_DIR / 'conftest.py').read_text())
    for module, source in SOURCES.items():
        (repo / 'test' / f'{module}.py').write_text(source)
    assert not (root / 'shared').exists()
    return repo


@pytest.fixture
def project(pytester):
    pytester.chdir()
    return make_project(pytester.path)


def run(pytester, repo, *args):
    return pytester.runpytest_subprocess(*pytest_args(repo), *args)


def pytest_args(repo: Path) -> list[str]:
    # without hypothesis's plugin (the throw-away project has no property tests): importing
    # it is about 2 of the 3 CPU seconds a pytest start costs here
    return ['-p', 'no:cacheprovider', '-p', 'no:hypothesispytest', '--rootdir', str(repo),
            '-c', str(repo / 'pytest.ini'), str(repo / 'test')]


def test_a_missing_shared_folder_skips_for_a_developer_and_fails_under_ci(
        pytester, project, monkeypatch):
    monkeypatch.delenv('CI', raising=False)
    result = run(pytester, project, '-rs')
    result.assert_outcomes(passed=5, skipped=1)
    result.stdout.fnmatch_lines(['*real image pairs not found at*shared*'])
    monkeypatch.setenv('CI', 'true')
    result = run(pytester, project)
    result.assert_outcomes(passed=5, errors=1)
    result.stdout.fnmatch_lines(['*CI=true but the shared data is missing*'])


SELECTIONS = {
    'not ros and not slow and not data and not bench': ['test_color.py::test_quick'],
    'ros': ['test_fusion_node.py::test_over_dds'],
    'data': ['test_color.py::test_reads_pairs'],
    'bench': ['test_bench_x.py::test_script'],
    # a test marked slow beside it, and a module that declares nothing: not in the core
    'slow': ['test_brand_new.py::test_unclassified', 'test_color.py::test_big'],
}
#: One interpreter collects with each -m expression in turn (a pytest start per expression
#: would cost a second each); the project's conftest.py is read once, as it is per run.
COLLECT_EACH = """
import json
import os
import sys
import pytest
for expression in sys.argv[2:]:
    print('=== -m', expression, flush=True)
    pytest.main([*json.loads(sys.argv[1]), '--collect-only', '-q', '-m', expression])
    with open(os.environ['IMPORT_LOG'], 'a+') as log:
        log.seek(0)
        print('imported so far:', log.read(), flush=True)
"""


@pytest.fixture(scope='module')
def collected(tmp_path_factory) -> dict[str, str]:
    """-m expression -> what a collection with it prints, in a throw-away project."""
    root = tmp_path_factory.mktemp('targets')
    repo = make_project(root)
    env = {k: v for k, v in os.environ.items() if k != 'PYTEST_ADDOPTS'}  # as pytester
    env['IMPORT_LOG'] = str(root / 'imported.txt')   # the ros module notes its import there
    result = subprocess.run(
        [sys.executable, '-c', COLLECT_EACH, json.dumps(pytest_args(repo)), *SELECTIONS],
        cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    sections = result.stdout.split('=== -m ')[1:]
    assert len(sections) == len(SELECTIONS), result.stdout
    return {section.splitlines()[0]: section for section in sections}


@pytest.mark.parametrize('expression', SELECTIONS)
def test_markers_select_the_cost_classes(collected, expression):
    ids = sorted(line.split('/')[-1] for line in collected[expression].splitlines()
                 if '::' in line)
    assert ids == SELECTIONS[expression]


def test_the_fast_core_does_not_import_modules_its_markers_exclude(collected):
    """conftest's pytest_ignore_collect: under make test-fast's expression (collected first)
    the ros module is not imported at all; the 'ros' collection after it imports it."""
    fast, ros = (collected[expression].split('imported so far:')[1]
                 for expression in list(SELECTIONS)[:2])
    assert 'test_fusion_node' not in fast and 'test_fusion_node' in ros
