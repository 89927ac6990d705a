"""bench/bench_backends.py run as a script: both backends and an extra export, side by side."""

import json
from pathlib import Path
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.bench]

SCRIPT = Path(__file__).resolve().parents[1] / 'bench' / 'bench_backends.py'


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), '--threads', '1', *args],
                          capture_output=True, text=True, timeout=300)


def test_backends_and_an_extra_export_are_timed_side_by_side(tiny_checkpoint, tiny_export,
                                                             tmp_path):
    cache = tmp_path / 'cache'   # holds the fixed-shape exports the script would make
    cache.mkdir()
    for size in ((32, 40), (64, 80)):   # sizes other tests export too (one export each a run)
        tiny_export(size, into=cache)
    extra = tiny_export(None, into=tmp_path).rename(tmp_path / 'other.onnx')
    out = run('--model', str(tiny_checkpoint), '--sizes', '32x40,64x80', '--runs', '20',
              '--warmup', '1', '--cache-dir', str(cache), '--also-onnx', str(extra),
              '--json', str(tmp_path / 'r.json'))
    assert out.returncode == 0, out.stderr
    rows = json.loads((tmp_path / 'r.json').read_text())['results']
    assert [(r['size'], r['backend']) for r in rows] == [
        (size, backend) for size in ('32x40', '64x80')
        for backend in ('onnxruntime', 'torch', 'onnxruntime: other.onnx')]
    assert all(r['runs'] == 20 and 0 < r['median_ms'] <= r['p90_ms'] for r in rows)
    assert '| 64x80 | onnxruntime: other.onnx |' in out.stdout


def test_bad_arguments_exit_with_a_message(tmp_path):
    out = run('--random-width', '0.25', '--runs', '20', '--also-onnx', str(tmp_path / 'no.onnx'))
    assert out.returncode == 1 and 'not found' in out.stderr
    out = run('--random-width', '0.25', '--runs', '5')
    assert out.returncode == 2 and '--runs must be >= 20' in out.stderr
