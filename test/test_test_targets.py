"""The test targets themselves: the cost markers the modules declare (conftest.py adds data
and slow) and CI's refusal to
pass when ../shared is missing, tried on a throw-away project (pytester) whose shared folder
does not exist, with this repository's conftest.py and pytest.ini."""

from pathlib import Path

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
    'test_fusion_node': 'import pytest\n\npytestmark = [pytest.mark.ros]\n\n\n'
                        'def test_over_dds():\n    pass\n',
    'test_bench_x': 'import pytest\n\npytestmark = [pytest.mark.bench]\n\n\n'
                    'def test_script():\n    pass\n',
    'test_brand_new': 'def test_unclassified():\n    pass\n',
}


@pytest.fixture
def project(pytester):
    """``repo/test/`` with the real conftest.py and pytest.ini; ``repo/../shared`` absent."""
    repo = pytester.mkdir('repo')
    (repo / 'pytest.ini').write_text((TEST_DIR.parent / 'pytest.ini').read_text())
    (repo / 'test').mkdir()
    (repo / 'test' / 'conftest.py').write_text((TEST_DIR / 'conftest.py').read_text())
    for module, source in SOURCES.items():
        (repo / 'test' / f'{module}.py').write_text(source)
    assert not (repo.parent / 'shared').exists()
    pytester.chdir()
    return repo


def run(pytester, repo, *args):
    return pytester.runpytest_subprocess('-p', 'no:cacheprovider', '--rootdir', str(repo),
                                         '-c', str(repo / 'pytest.ini'), str(repo / 'test'),
                                         *args)


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


@pytest.mark.parametrize('expression, selected', [
    ('not ros and not slow and not data and not bench', ['test_color.py::test_quick']),
    ('ros', ['test_fusion_node.py::test_over_dds']),
    ('data', ['test_color.py::test_reads_pairs']),
    ('bench', ['test_bench_x.py::test_script']),
    # a test marked slow beside it, and a module that declares nothing: not in the core
    ('slow', ['test_brand_new.py::test_unclassified', 'test_color.py::test_big']),
])
def test_markers_select_the_cost_classes(pytester, project, expression, selected):
    result = run(pytester, project, '--collect-only', '-q', '-m', expression)
    collected = sorted(line.split('/')[-1] for line in result.stdout.lines if '::' in line)
    assert collected == selected
