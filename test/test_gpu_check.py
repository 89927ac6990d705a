"""bench/gpu_check.py, the unattended GPU check, run here with TensorRT and pycuda replaced by
the strict fakes of test/fake_tensorrt.py (no GPU, no TensorRT on this machine): its
TensorRT sections go through the node's factory, a missing CUDA torch is a skip with the
reason, a failing section does not stop the others, and the JSON is on disk after every
section (so a kill keeps what was measured).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from fake_tensorrt import Fake
import pytest

pytestmark = [pytest.mark.bench]

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def gpu_check(monkeypatch):
    spec = importlib.util.spec_from_file_location('gpu_check', REPO / 'bench' / 'gpu_check.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # The shipped dynamic export beside the shipped checkpoint: what a robot without torch
    # runs, and no export needed here (the .pt path would export at each size first).
    monkeypatch.setattr(module, 'SHIPPED', REPO / 'models' / 'fifn_w025_pixel.onnx')
    return module


def test_tensorrt_sections_run_through_the_factory(gpu_check, monkeypatch, tmp_path):
    fake = Fake(monkeypatch, '10.3')
    assert gpu_check.main(['--device', 'cuda', '--quick', '--out', str(tmp_path)]) == 0
    results = json.loads((tmp_path / 'gpu_check.json').read_text(encoding='utf-8'))
    shipped = results['tensorrt_shipped']
    for size in ('48x64', '72x128'):
        row = shipped[size]
        assert row['fp32']['precision_used'] == 'fp32' and row['fp16']['precision_used'] == 'fp16'
        assert row['fp32']['cache'] == 'built' and row['fp16']['median_ms'] >= 0
        assert row['pass'] is True   # the fake computes the same output in both precisions
    assert results['torch_shipped']['skipped'].startswith('torch')  # no CUDA, or no torch
    assert 'tensorrt_shipped' in (tmp_path / 'gpu_check.md').read_text(encoding='utf-8')
    fake.check()


def test_a_skip_a_failure_and_a_kill_leave_the_json(gpu_check, monkeypatch, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, 'tensorrt', None)
    monkeypatch.setattr(gpu_check, 'installed', lambda name: name != 'tensorrt')

    def broken(self):
        raise RuntimeError('driver crashed')

    def killed(self):
        raise SystemExit('killed by timeout')

    monkeypatch.setattr(gpu_check.Check, 'environment', broken)
    monkeypatch.setattr(gpu_check.Check, 'onnxruntime_cuda', killed)
    with pytest.raises(SystemExit):
        gpu_check.main(['--device', 'cuda', '--quick', '--out', str(tmp_path)])
    results = json.loads((tmp_path / 'gpu_check.json').read_text(encoding='utf-8'))
    assert results['tensorrt_shipped']['skipped'].startswith('tensorrt not installed')
    assert results['environment']['error'] == 'RuntimeError: driver crashed'
    assert results['torch_shipped']['skipped'].startswith('torch')  # no CUDA, or no torch
    assert 'torch_w0.25' in results   # the sections after the failing one ran and were saved


def test_full_width_row_reads_the_pinned_layer_count_from_the_sidecar(
        gpu_check, monkeypatch, tmp_path):
    # The pinned-layer count lives only in the engine's sidecar JSON, not in engine.info.
    fake = Fake(monkeypatch, '10.3')
    monkeypatch.setattr(gpu_check.Check, 'checkpoint', lambda self, width: gpu_check.SHIPPED)
    assert gpu_check.main(['--device', 'cuda', '--quick', '--out', str(tmp_path)]) == 0
    row = json.loads((tmp_path / 'gpu_check.json').read_text(encoding='utf-8'))['tensorrt_w1.0']
    assert row['precision_used'] == 'fp16'
    assert isinstance(row['fp32_layers'], int) and row['fp32_layers'] > 0
    fake.check()
