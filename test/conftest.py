"""Test-wide settings: an isolated DDS domain on localhost (one per pytest-xdist worker: the
make targets run ``pytest -n auto``), the shared data folder, and the cost markers behind
``make test-fast``.

Markers are declared beside the tests: every test module sets ``pytestmark`` (checked by
test_markers.py), and single expensive tests carry their own mark:

* ``core``: a ROS-free module of quick unit tests (what ``make test-fast`` runs);
* ``ros``: talks over DDS (imports rclpy, or runs node processes);
* ``slow``: outside the fast core (exports, training runs, subprocesses, big images);
* ``bench``: runs or checks a script in bench/;
* ``data``: reads the real image pairs in ../shared/data; also given here to every test that
  uses the ``shared_data`` fixture.

A module that declares none of them is treated as ``slow``, so ``make test-fast`` (``-m 'not
ros and not slow and not data and not bench'``) never grows by accident; ``make test`` runs
everything. Under CI (``CI=true``, set by .ci/run) a test that would skip because ../shared is
missing fails instead: CI must never pass without the data.
"""

from __future__ import annotations

import os
from pathlib import Path
import random
import sys

import pytest

# Before anything imports rclpy: a private domain so parallel runs never see each other's
# topics, and localhost-only discovery. No DDS transport setting: the node must work with
# whatever the robot's other processes use (test_interop starts the two sides differently).
os.environ.setdefault('ROS_DOMAIN_ID', str(random.randint(1, 101)))
if os.environ.get('PYTEST_XDIST_WORKER'):
    # pytest -n: one domain per worker ('gw3' -> base + 3), the base shared by the run
    os.environ['ROS_DOMAIN_ID'] = str(
        1 + (int(os.environ['PYTEST_XDIST_TESTRUNUID'][:8], 16) + int(
            os.environ['PYTEST_XDIST_WORKER'][2:])) % 101)
os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / 'shared' / 'data'
CI = os.environ.get('CI', '').strip().lower() in ('1', 'true', 'yes')

#: The cost markers a test module declares; pytest.ini registers them.
COST_MARKERS = ('core', 'ros', 'slow', 'bench', 'data')


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if not any(item.get_closest_marker(name) for name in COST_MARKERS):
            item.add_marker(pytest.mark.slow)
        if 'shared_data' in getattr(item, 'fixturenames', ()):
            item.add_marker(pytest.mark.data)


def pytest_collection_finish(session: pytest.Session) -> None:
    """One torch thread for the whole session (when a test module imported torch): on the
    shared 2-core machine a second intra-op thread spins against the other processes (seven
    torch-heavy core modules: 18.7 instead of 29.8 CPU s, 22 instead of 39-53 s wall)."""
    torch = sys.modules.get('torch')
    if torch is not None:
        torch.set_num_threads(1)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Under CI, a skip for missing shared data (its reason names the folder) is a failure."""
    outcome = yield
    report = outcome.get_result()
    if CI and report.skipped and not SHARED_DATA.is_dir() \
            and str(SHARED_DATA.parent) in str(report.longrepr):
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = 'failed'
        report.longrepr = (f'CI=true but the shared data is missing ({SHARED_DATA}); a data '
                           f'test must not skip under CI. It would have skipped: {reason}')


@pytest.fixture(scope='session')
def shared_data() -> Path:
    """../shared/data (real IR/visible pairs); skips the test when it is absent (fails under
    CI, see pytest_runtest_makereport)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f'real image pairs not found at {SHARED_DATA} (the shared folder beside '
                    'the repository); this test needs them')
    return SHARED_DATA
