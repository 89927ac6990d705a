"""Test-wide settings: an isolated DDS domain on localhost, the shared data folder, and the
cost markers behind ``make test-fast``.

Markers (assigned here, from the module and the fixtures a test uses):

* ``ros``: talks over DDS (imports rclpy, or runs node processes: :data:`ROS_MODULES`);
* ``data``: reads the real image pairs in ../shared/data (the ``shared_data`` fixture, or a
  module in :data:`DATA_MODULES`);
* ``slow``: anything outside the core: every module not in :data:`CORE_MODULES` (so a new
  test module is slow until it is listed there) and the tests in :data:`SLOW_TESTS`.

``make test-fast`` runs ``-m 'not ros and not slow and not data'`` (the ROS-free core,
<= 30 s); ``make test`` runs everything. Under CI (``CI=true``, set by .ci/run) a test that
would skip because ../shared is missing fails instead: CI must never pass without the data.
"""

from __future__ import annotations

import os
from pathlib import Path
import random

import pytest

# Before anything imports rclpy: a private domain so parallel runs never see each other's
# topics, and localhost-only discovery. No DDS transport setting: the node must work with
# whatever the robot's other processes use (test_interop starts the two sides differently).
os.environ.setdefault('ROS_DOMAIN_ID', str(random.randint(1, 101)))
os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / 'shared' / 'data'
CI = os.environ.get('CI', '').strip().lower() in ('1', 'true', 'yes')

#: Modules whose tests run ROS nodes and talk over DDS (besides every module that imports
#: rclpy itself, which is marked ``ros`` too).
ROS_MODULES = frozenset({
    'test_demo', 'test_fusion_lifecycle_node', 'test_fusion_node', 'test_interop',
    'test_launch_config', 'test_node_hardening', 'test_published_health', 'test_shutdown'})
#: ROS-free modules of quick unit tests: the core that ``make test-fast`` runs.
CORE_MODULES = frozenset({
    'test_arrival', 'test_atomic_file', 'test_auto_crop', 'test_baselines', 'test_codec',
    'test_color', 'test_contrastive', 'test_engine_cache', 'test_frame_step', 'test_gpu_check',
    'test_health', 'test_losses', 'test_masks', 'test_metrics', 'test_model',
    'test_output_safety', 'test_pairing', 'test_params', 'test_registration',
    'test_robot_imports', 'test_synthetic', 'test_tensorrt_fakes', 'test_thermal',
    'test_torch_engine', 'test_train_data', 'test_worker'})
#: Slow tests inside core modules (several seconds each on the 2-core development VM; see
#: bench/bench_test_targets.py), by module and test-name prefix.
SLOW_TESTS = {
    'test_contrastive': ('test_shared_passes_equal_the_literal_terms',),
    'test_losses': ('test_loss_is_float32_also_under_autocast',
                    'test_full_loss_reaches_every_fifn_parameter'),
    'test_masks': ('test_gdino_sam',),
    'test_model': ('test_save_unwraps_model', 'test_output_shape_and_finite[size5'),
}
#: Modules that read ../shared/data themselves instead of through ``shared_data``.
DATA_MODULES = frozenset({'test_hed'})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        module = item.path.stem
        ros = module in ROS_MODULES or hasattr(getattr(item, 'module', None), 'rclpy')
        if ros:
            item.add_marker(pytest.mark.ros)
        slow_here = SLOW_TESTS.get(module, ())
        if (module not in CORE_MODULES and not ros
                or any(item.name.startswith(name) for name in slow_here)):
            item.add_marker(pytest.mark.slow)
        if 'shared_data' in getattr(item, 'fixturenames', ()) or module in DATA_MODULES:
            item.add_marker(pytest.mark.data)


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
