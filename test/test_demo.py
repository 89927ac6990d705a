"""`make demo`'s program end to end: two node processes over DDS, snapshots, summary.json.

A short run with a randomly initialised model (the mechanics are under test; the frame rate
target is measured by `make demo` itself, see docs/PERFORMANCE.md)."""

import json
import subprocess
import sys

import cv2
import pytest
import torch

from occo_ros.model.checkpoint import save_checkpoint
from occo_ros.model.network import build_fifn

pytestmark = [pytest.mark.ros]


def test_demo_writes_snapshots_and_summary(tmp_path):
    torch.manual_seed(0)
    model = save_checkpoint(tmp_path / 'random_w025.pt', build_fifn(0.25).eval())
    out = tmp_path / 'demo'
    proc = subprocess.run(
        [sys.executable, '-m', 'occo_ros.ros.demo', '--duration', '4', '--out', str(out),
         '--model', str(model), '--snapshots', '1', '--thermal-rate', '10', '--rgb-rate', '10'],
        capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 'fused frames' in proc.stdout and 'fps' in proc.stdout
    summary = json.loads((out / 'summary.json').read_text())
    for key in ('pairs', 'fps', 'latency_ms_p50', 'latency_ms_p99', 'stage_ms_p50'):
        assert key in summary, key
    assert summary['pairs'] > 0 and summary['fps'] > 0
    assert summary['latency_ms_p50'] > 0
    for stage in ('decode', 'preprocess', 'inference', 'compose', 'publish'):
        assert summary['stage_ms_p50'][stage] >= 0, stage
    assert summary['node_counts']['errors'] == 0
    assert summary['snapshots'] == ['snapshot_00.png']
    image = cv2.imread(str(out / 'snapshot_00.png'))
    assert image.shape[0] == 512 and image.shape[1] > 3 * 512      # three panels side by side
    assert (out / 'fusion_node.log').read_text()
