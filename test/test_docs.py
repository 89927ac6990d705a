"""The documents stay walkable: docs/ARCHITECTURE.md names every module of occo_ros/ and
training/, every relative link of the Markdown documents reaches an existing file (and heading),
the README stays short (at most 200 lines, none over 120 characters), and the version is one
number in package.xml, setup.py, occo_ros.__version__ and the newest CHANGELOG entry."""

from __future__ import annotations

from pathlib import Path
import re

import pytest

pytestmark = [pytest.mark.core]

REPO = Path(__file__).resolve().parents[1]
README_LINES, README_COLUMNS = 200, 120
LINK = re.compile(r'\[[^\]]*\]\(([^)\s]+)\)')
FENCE = re.compile(r'^```.*?^```', re.MULTILINE | re.DOTALL)


def documents(root: Path) -> list[Path]:
    """The Markdown documents whose links are checked."""
    found = [root / name for name in ('README.md', 'CONTRIBUTING.md', 'CHANGELOG.md')]
    found += sorted((root / 'docs').glob('*.md')) + [root / 'models' / 'MODEL_CARD.md']
    return [path for path in found if path.is_file()]


def unnamed_modules(root: Path) -> list[str]:
    """Source files of occo_ros/ and training/ that docs/ARCHITECTURE.md does not name."""
    page = (root / 'docs' / 'ARCHITECTURE.md').read_text(encoding='utf-8')
    return [str(path.relative_to(root)) for package in ('occo_ros', 'training')
            for path in sorted((root / package).rglob('*.py'))
            if f'`{path.relative_to(root).as_posix()}`' not in page]


def anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r'[^\w\- ]', '', heading.strip().lower().replace('`', ''))
    return text.replace(' ', '-')


def anchors(path: Path) -> set[str]:
    text = FENCE.sub('', path.read_text(encoding='utf-8'))
    return {anchor(line.lstrip('#')) for line in text.splitlines() if line.startswith('#')}


def broken_links(root: Path) -> list[str]:
    """Relative links (outside code blocks) whose file or heading does not exist."""
    problems = []
    for document in documents(root):
        text = FENCE.sub('', document.read_text(encoding='utf-8'))
        for target in LINK.findall(text):
            if re.match(r'[a-z]+:', target):
                continue   # http(s), mailto: not checked offline
            name, _, fragment = target.partition('#')
            path = (document.parent / name).resolve() if name else document
            where = f'{document.relative_to(root)}: {target}'
            if not path.exists():
                problems.append(f'{where}: no such file')
            elif fragment and path.suffix == '.md' and fragment not in anchors(path):
                problems.append(f'{where}: no such heading')
    return problems


def readme_problems(root: Path) -> list[str]:
    lines = (root / 'README.md').read_text(encoding='utf-8').splitlines()
    problems = [f'README.md has {len(lines)} lines, at most {README_LINES}'] * (
        len(lines) > README_LINES)
    return problems + [f'README.md:{number}: {len(line)} characters, at most {README_COLUMNS}'
                       for number, line in enumerate(lines, 1) if len(line) > README_COLUMNS]


def test_architecture_names_every_module():
    assert unnamed_modules(REPO) == []


def test_every_relative_link_reaches_its_file_and_heading():
    assert broken_links(REPO) == []


def test_the_readme_is_short():
    assert readme_problems(REPO) == []


def versions(root: Path) -> dict[str, str]:
    """The version each place states (None where it states none)."""
    def first(pattern: str, path: str) -> str | None:
        found = re.search(pattern, (root / path).read_text(encoding='utf-8'), re.MULTILINE)
        return found.group(1) if found else None

    return {'package.xml': first(r'<version>([^<]+)</version>', 'package.xml'),
            'setup.py': first(r"version='([^']+)'", 'setup.py'),
            'occo_ros/__init__.py': first(r"^__version__ = '([^']+)'", 'occo_ros/__init__.py'),
            'CHANGELOG.md': first(r'^## (\d+\.\d+\.\d+) ', 'CHANGELOG.md')}


def test_one_version_everywhere():
    found = versions(REPO)
    assert None not in found.values() and len(set(found.values())) == 1, found


def test_anchor_follows_github():
    assert anchor('Launch arguments (`launch/fusion.launch.py`)') == \
        'launch-arguments-launchfusionlaunchpy'
    assert anchor('Stopping: Ctrl-C, SIGINT and SIGTERM') == 'stopping-ctrl-c-sigint-and-sigterm'


def test_the_checks_fail_on_a_planted_tree(tmp_path):
    """A module missing from the page, a link to a missing file or heading and a long README
    are each caught."""
    (tmp_path / 'occo_ros' / 'core').mkdir(parents=True)
    (tmp_path / 'training').mkdir()
    (tmp_path / 'docs').mkdir()
    for module in ('occo_ros/__init__.py', 'occo_ros/core/new.py', 'training/train.py'):
        (tmp_path / module).write_text('')
    (tmp_path / 'docs' / 'ARCHITECTURE.md').write_text(
        '# Architecture\n\n## Every module\n\n* `occo_ros/__init__.py`\n* `training/train.py`\n')
    (tmp_path / 'README.md').write_text(
        '[ok](docs/ARCHITECTURE.md#every-module) [gone](docs/GONE.md)\n'
        '[heading](docs/ARCHITECTURE.md#no-such) [web](https://example.org/x.md)\n'
        '```\n[in code](docs/NOT_CHECKED.md)\n```\n' + 'x' * 121 + '\n' + 'line\n' * 200)
    assert unnamed_modules(tmp_path) == ['occo_ros/core/new.py']
    assert broken_links(tmp_path) == ['README.md: docs/GONE.md: no such file',
                                      'README.md: docs/ARCHITECTURE.md#no-such: no such heading']
    assert readme_problems(tmp_path) == ['README.md has 206 lines, at most 200',
                                         'README.md:6: 121 characters, at most 120']
