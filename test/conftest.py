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

import ast
import atexit
import contextlib
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
# One OpenMP (torch) thread in every process of the run, this one (set before any test module
# imports torch) and node and tool children included; a test that is about threads sets
# them. On 2 cores a second intra-op thread only spins against the other worker or process
# (seven torch-heavy core modules: 18.7 instead of 29.8 CPU s; a node test 6.4 vs 22.7).
os.environ.setdefault('OMP_NUM_THREADS', '1')
# The same for OpenCV's thread pool (read when cv2 first runs a parallel loop): its second
# thread only contends with the other worker (the full suite: 431 instead of 441 CPU s).
os.environ.setdefault('OPENCV_FOR_THREADS_NUM', '1')

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / 'shared' / 'data'
CI = os.environ.get('CI', '').strip().lower() in ('1', 'true', 'yes')

#: The cost markers a test module declares; pytest.ini registers them.
COST_MARKERS = ('core', 'ros', 'slow', 'bench', 'data')


def declared_markers(tree: ast.Module) -> list[str] | None:
    """The marker names of a module's module-level ``pytestmark`` (a mark or a list of
    marks), or None when it declares none (test_markers.py checks every module with it)."""
    for statement in tree.body:
        if isinstance(statement, ast.Assign) and any(
                isinstance(target, ast.Name) and target.id == 'pytestmark'
                for target in statement.targets):
            value = statement.value
            marks = value.elts if isinstance(value, (ast.List, ast.Tuple)) else [value]
            return [ast.unparse(mark).removeprefix('pytest.mark.') for mark in marks]
    return None


def markers_of_source(source: str) -> list[str] | None:
    """declared_markers of a module's source, parsing only its ``pytestmark = ...``
    statement (from its column-0 line to where it parses): parsing every test module whole
    cost each worker ~0.4 s of its collection. test_markers checks it against the whole
    module's AST."""
    lines = source.splitlines()
    for start, line in enumerate(lines):
        if line.startswith('pytestmark'):
            for end in range(start + 1, len(lines) + 1):
                with contextlib.suppress(SyntaxError):
                    return declared_markers(ast.parse('\n'.join(lines[start:end])))
    return None


def _negated_markers(expression: str) -> set[str]:
    """{'a', 'b'} for ``-m 'not a and not b'``; empty for any other expression."""
    terms = [term.strip() for term in expression.split(' and ')] if expression else []
    names = {term[4:].strip() for term in terms if term.startswith('not ')}
    if terms and len(names) == len(terms) and all(name.isidentifier() for name in names):
        return names
    return set()


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Under ``-m 'not a and not b ...'`` (make test-fast) a module whose declared markers
    are excluded is not even imported: importing the deselected modules (torch, onnx, rclpy,
    rosbags, ...) was most of test-fast's collection. Tests only add markers to their
    module's, so none of its tests could be selected."""
    excluded = _negated_markers(config.getoption('markexpr'))
    if not excluded or collection_path.suffix != '.py' \
            or not collection_path.name.startswith('test_'):
        return None
    marks = markers_of_source(collection_path.read_text(encoding='utf-8')) or ['slow']
    return True if excluded & set(marks) else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if not any(item.get_closest_marker(name) for name in COST_MARKERS):
            item.add_marker(pytest.mark.slow)
        if 'shared_data' in getattr(item, 'fixturenames', ()):
            item.add_marker(pytest.mark.data)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """A pytest-xdist worker has sent its results (``workerfinished``) by now; it ends here
    without the interpreter's teardown of its modules (torch, rclpy, onnx, ...), which took
    0.9 s with torch alone and 2.7 s in a test-fast worker, while the controller waited for
    it. Exit handlers still run."""
    workeroutput = getattr(config, 'workeroutput', None)
    if workeroutput is None:   # not an xdist worker
        return
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(workeroutput.get('exitstatus', 1)))


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


# -- one tiny checkpoint and one ONNX export cache for the whole run --------------------------
@pytest.fixture(scope='session')
def run_folder(tmp_path_factory) -> Path:
    """A folder of this run, shared by its pytest-xdist workers (each worker's base temp is a
    child of the run's), so that what the run needs once is made once, by the first worker."""
    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if os.environ.get('PYTEST_XDIST_WORKER') else base) / 'run_shared'
    folder.mkdir(exist_ok=True)
    return folder


@contextlib.contextmanager
def run_lock(path: Path):
    """Held by one worker at a time (a lock file): a second worker that needs the same file
    waits for the first one's instead of making it again."""
    import fcntl

    with open(path, 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)   # released when the file closes
        yield


@pytest.fixture(scope='session')
def tiny_checkpoint(run_folder) -> Path:
    """fifn_test.pt: a width-0.25 FIFN with seeded random weights, non-trivial BatchNorm
    statistics and the metadata an export records (same bytes in every run). Seed 1 makes its
    output vary with the input: the export's output check refuses a dead (constant) network,
    as seeds 4 and 7 are."""
    path = run_folder / 'fifn_test.pt'
    with run_lock(run_folder / 'fifn_test.lock'):
        if not path.is_file():
            import torch

            from occo_ros.model.checkpoint import save_checkpoint
            from occo_ros.model.network import build_fifn

            torch.manual_seed(1)
            model = build_fifn(0.25)
            for module in model.modules():
                if isinstance(module, torch.nn.BatchNorm2d):
                    module.running_mean.uniform_(-0.2, 0.2)
                    module.running_var.uniform_(0.5, 2.0)
            save_checkpoint(path, model, training={'data_sha256': 'f00d', 'steps': 0},
                            input_normalization={'visible': 'BT.601 Y / 255',
                                                 'infrared': '8-bit / 255'})
    return path


# torch.testing.assert_close's default tolerances (rtol, atol) per dtype name
_DEFAULT_TOLERANCES = {'float32': (1.3e-6, 1e-5), 'float64': (1e-7, 1e-7),
                       'float16': (1e-3, 1e-5), 'bfloat16': (1.6e-2, 1e-5)}


def assert_tensors_close(actual, expected, rtol: float | None = None,
                         atol: float | None = None, msg: str = '') -> None:
    """torch.testing.assert_close's check for two tensors (same shape and dtype, |actual -
    expected| <= atol + rtol |expected|, its default tolerances per dtype), without its first
    call's import of torch.distributed.tensor: about 1 CPU s in every test process."""
    assert actual.shape == expected.shape, f'{msg}: shape {tuple(actual.shape)} != ' \
        f'{tuple(expected.shape)}'
    assert actual.dtype == expected.dtype, f'{msg}: dtype {actual.dtype} != {expected.dtype}'
    default_rtol, default_atol = _DEFAULT_TOLERANCES[str(actual.dtype).split('.')[-1]]
    import numpy as np

    np.testing.assert_allclose(
        actual.detach().cpu().double().numpy(), expected.detach().cpu().double().numpy(),
        rtol=default_rtol if rtol is None else rtol, atol=default_atol if atol is None else atol,
        err_msg=msg)


def export_in_this_process(model_path: Path, out_path: Path, input_size, opset: int,
                           log) -> Path:
    """A stand-in for occo_ros.model.onnx_cache.export_in_subprocess: the child's occo-export
    command line run in this process (occo_ros.cli.export.main), where torch is imported
    already; a child imports it again (~8 CPU s of a ~12 s export)."""
    from occo_ros.cli.export import main

    size = ['--dynamic'] if input_size is None else [
        '--input-height', str(input_size[0]), '--input-width', str(input_size[1])]
    # --overwrite: a stale cached file is replaced, as the child's result is (atomically)
    assert main(['--model', str(model_path), '--out', str(out_path), '--opset', str(opset),
                 '--overwrite', *size]) == 0
    return out_path


@pytest.fixture(scope='session')
def tiny_export(tiny_checkpoint, run_folder):
    """``tiny_export(input_size, opset=17, into=None)``: the export of tiny_checkpoint at
    `input_size` (H, W; None: dynamic) from one ONNX cache for the run (the project's own,
    occo_ros.model.onnx_cache.cached_onnx), so each size and opset is exported once. `into`:
    a folder (a test's own engine or export cache) that receives a copy of the export and its
    cache sidecar; the copy is returned. The shared files are read, never written.

    The cache exports through export_in_this_process; the child process itself runs where a
    test is about the cache's exports (test_engines) and in test_shutdown."""
    import shutil

    from occo_ros.model import onnx_cache
    from occo_ros.model.artifact_cache import sidecar_path

    cache = run_folder / 'onnx_cache'
    cache.mkdir(exist_ok=True)

    def export(input_size, opset: int = 17, into: Path | None = None) -> Path:
        shape = 'dyn' if input_size is None else f'{input_size[0]}x{input_size[1]}'
        with run_lock(cache / f'op{opset}.{shape}.lock'), pytest.MonkeyPatch.context() as patch:
            patch.setattr(onnx_cache, 'export_in_subprocess', export_in_this_process)
            path = onnx_cache.cached_onnx(tiny_checkpoint, cache, input_size, opset,
                                          log=lambda line: None)
        if into is None:
            return path
        for source in (path, sidecar_path(path)):
            shutil.copyfile(source, Path(into) / source.name)
        return Path(into) / path.name

    return export
