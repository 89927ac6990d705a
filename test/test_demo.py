"""`make demo`'s program end to end: two node processes over DDS, snapshots, summary.json.

A short run of the shipped ONNX model under backend auto with an engine cache of the test's
own (the mechanics are under test; the frame rate target is measured by `make demo` itself,
see docs/PERFORMANCE.md)."""

import json
import os
from pathlib import Path
import subprocess
import sys

import cv2
import pytest

pytestmark = [pytest.mark.ros]

MODEL = Path(__file__).resolve().parents[1] / 'models' / 'fifn_w025_pixel.onnx'


def test_demo_writes_snapshots_and_summary(tmp_path):
    out = tmp_path / 'demo'
    proc = subprocess.run(
        [sys.executable, '-m', 'occo_ros.ros.demo', '--duration', '2', '--out', str(out),
         '--model', str(MODEL), '--snapshots', '1', '--thermal-rate', '5', '--rgb-rate', '5'],
        capture_output=True, text=True, timeout=240,
        env=dict(os.environ, OCCO_ROS_CACHE=str(tmp_path / 'cache')))
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
