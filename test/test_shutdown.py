"""Ctrl-C over real DDS: SIGINT to the process group of fusion_node + synthetic_cameras while
fused images flow (what a terminal's Ctrl-C does to the nodes a launch started).

Runs bench/bench_shutdown.py (the committed benchmark, which also times the exits) once per
case (the repetitions are the benchmark's); every run must end with exit code 0, no
ERROR/FATAL line and no traceback in either node's output, and nothing of the group left
running. The exit time is the benchmark's number, not asserted here (a busy machine must not
fail the test): --exit-limit is generous.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.ros, pytest.mark.bench]

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize('twice', [False, True], ids=['sigint', 'sigint_twice'])
def test_sigint_to_the_process_group_ends_every_node_cleanly(tmp_path, twice):
    # cameras at 5 Hz: frames flow, and they render less while the node starts
    cmd = [sys.executable, str(REPO / 'bench' / 'bench_shutdown.py'), '--runs', '1',
           '--frames', '2', '--rate', '5', '--exit-limit', '60', '--out', str(tmp_path)]
    result = subprocess.run(cmd + ['--twice'] * twice, capture_output=True, text=True,
                            timeout=600, env=dict(os.environ, PYTHONUNBUFFERED='1'))
    summary = json.loads((tmp_path / 'summary.json').read_text())
    logs = '\n'.join(f'--- {log}\n{log.read_text()[-2000:]}'
                     for log in sorted(tmp_path.glob('run*/*.log')))
    assert result.returncode == 0, result.stdout + result.stderr + logs
    assert summary['clean_runs'] == summary['runs'] == 1
    for run in summary['details']:
        assert run['fused_before_signal'] >= 2           # frames were flowing
        assert run['exit_codes'] == {'synthetic_cameras': 0, 'fusion_node': 0}
        assert run['problems'] == {'synthetic_cameras': [], 'fusion_node': []}
        assert run['left_running'] == []


@pytest.mark.parametrize('signal_name', ['SIGTERM', 'SIGINT'])
def test_a_signal_during_start_up_ends_the_node_without_a_partial_cache(tmp_path, signal_name):
    """SIGTERM/SIGINT while the node exports its model to ONNX (empty engine cache): before
    issue 20 the export ran to its end (35 s after SIGTERM here) and the node started; now it
    exits 0 at once, leaving no temporary and no artifact without a valid sidecar. The bench
    times it; the limit here only tells "at once" from "after the export"."""
    cmd = [sys.executable, str(REPO / 'bench' / 'bench_shutdown.py'), '--startup', '--runs',
           '1', '--signal', signal_name, '--startup-delay', '3', '--exit-limit', '10',
           '--out', str(tmp_path)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                            env=dict(os.environ, PYTHONUNBUFFERED='1'))
    summary = json.loads((tmp_path / 'summary.json').read_text())
    log = (tmp_path / 'run00' / 'fusion_node.log').read_text()[-3000:]
    run = summary['details'][0]
    assert run['started'], log                        # the signal came during the export
    assert 'fusing' not in log, log                   # ... and the node never started fusing
    assert run['exit_codes'] == {'fusion_node': 0}, log
    assert run['partial_files'] == [] and run['left_running'] == [], run
    assert result.returncode == 0, result.stdout + result.stderr + log


def test_an_rcl_error_is_a_normal_end_only_after_the_context_is_shut_down():
    """What a publish racing Ctrl-C raises (a real rclpy publisher on a real context).

    rclpy's signal handler shuts the contexts down at the rcl level, leaving the nodes alive
    (unlike rclpy.shutdown(), which destroys them first); the context handle's own shutdown
    does exactly that here."""
    import rclpy
    from std_msgs.msg import String

    from occo_ros.ros.node_main import RCLError, ended_by_shutdown

    context = rclpy.context.Context()
    rclpy.init(context=context)
    node = rclpy.create_node('occo_shutdown_probe', context=context,
                             start_parameter_services=False)
    publisher = node.create_publisher(String, 'probe', 1)
    publisher.publish(String(data='before'))
    assert not ended_by_shutdown(ValueError('unrelated'), context)
    with context.handle:
        context.handle.shutdown()
    with pytest.raises(RCLError, match='context is invalid') as error:
        publisher.publish(String(data='after'))
    assert ended_by_shutdown(error.value, context)
    assert not ended_by_shutdown(ValueError('unrelated'), context)
    node.destroy_node()
