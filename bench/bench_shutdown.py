"""Ctrl-C with frames flowing: SIGINT to the process group of fusion_node + synthetic_cameras.

What a terminal's Ctrl-C (or systemd's KillSignal=SIGINT with KillMode=mixed) does to the
nodes a launch started: every process of the group gets SIGINT at once. Each run starts both
nodes as one process group over real DDS, waits until this process has received ``--frames``
fused images, sends SIGINT to the group and records per node: exit code, seconds from the
signal to its exit, [ERROR]/[FATAL] lines and tracebacks it wrote after the signal (those
before it are reported apart: they are not the shutdown's). A run is clean when both exit 0
within ``--exit-limit`` seconds, with no such line and no traceback, and nothing of the group
is left running.

    python bench/bench_shutdown.py [--runs 10] [--twice] [--out out/bench_shutdown]

Target (issue 12): 10 of 10 runs clean, every node gone within 2 s. Exit code 0 only when
every run is clean. Logs of each run and summary.json go to --out.

Start-up case (issue 20), ``--startup [--signal SIGTERM]``: fusion_node alone, backend
onnxruntime on the .pt checkpoint with an empty engine cache (so it exports to ONNX); once it
logs that it is exporting, a seeded random wait of 0 to ``--startup-delay`` s (so the signal
lands in different phases of the export), then the signal. Clean: exit 0 within the limit,
no ERROR/FATAL line or traceback, and nothing partial left: no temporary in the cache or in
the node's TMPDIR, no cached artifact without a valid sidecar.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import random
import signal
import statistics
import subprocess
import sys
import time

from machine import cpu_description  # bench/machine.py (run as python bench/...)
import rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from tqdm import tqdm

from occo_ros.ros.launch_config import SYNTHETIC_CROP, SYNTHETIC_HOMOGRAPHY
from occo_ros.util.resources import shipped_file

NODES = ('synthetic_cameras', 'fusion_node')


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Send SIGINT to the process group of fusion_node + synthetic_cameras '
        'while fused frames flow; count the runs that end cleanly (exit 0, no ERROR line, '
        "no traceback, nothing left running) and time each node's exit.")
    parser.add_argument('--runs', type=int, default=10, help='number of runs (default 10)')
    parser.add_argument('--frames', type=int, default=3,
                        help='fused images to receive before the signal (default 3)')
    parser.add_argument('--rate', type=float, default=15.0,
                        help='frames per second of each synthetic camera (default 15)')
    parser.add_argument('--backend', default='auto',
                        help='backend of the fusion node (default auto)')
    parser.add_argument('--twice', action='store_true',
                        help='send SIGINT twice in a row (Ctrl-C pressed twice, or a launch '
                        'forwarding SIGINT to nodes the terminal already signalled)')
    parser.add_argument('--exit-limit', type=float, default=2.0,
                        help='seconds after the signal within which every node must be gone '
                        "for a clean run (default 2, the issue's target)")
    parser.add_argument('--startup-timeout', type=float, default=120.0,
                        help='seconds to wait for the first fused images (default 120)')
    parser.add_argument('--startup', action='store_true',
                        help='signal fusion_node during its start-up (ONNX export into an '
                        'empty engine cache) instead of while frames flow')
    parser.add_argument('--signal', choices=('SIGINT', 'SIGTERM'), default='SIGINT',
                        help='--startup: the signal to send (default SIGINT)')
    parser.add_argument('--startup-delay', type=float, default=10.0,
                        help='--startup: longest seeded wait after the export began '
                        '(default 10 s)')
    parser.add_argument('--out', type=Path, default=Path('out/bench_shutdown'),
                        help="folder for the nodes' logs and summary.json "
                        '(default out/bench_shutdown)')
    args = parser.parse_args(argv)
    if args.runs < 1 or args.frames < 1 or args.rate <= 0 or args.exit_limit <= 0:
        parser.error('--runs and --frames must be >= 1, --rate and --exit-limit > 0')
    return args


class FusedCounter(Node):
    def __init__(self) -> None:
        super().__init__('occo_bench_shutdown')
        self.count = 0
        qos = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE)
        self.create_subscription(Image, 'fused/image', self._on_fused, qos)

    def _on_fused(self, msg: Image) -> None:
        self.count += 1


def node_commands(args: argparse.Namespace) -> dict[str, list[str]]:
    """The two nodes as ``ros2 launch ... synthetic:=true`` starts them (same parameters)."""
    python = [sys.executable, '-m']
    return {
        'synthetic_cameras': python + ['occo_ros.ros.synthetic_cameras', '--ros-args',
                                       '-p', f'thermal_rate:={args.rate}',
                                       '-p', f'rgb_rate:={args.rate}'],
        'fusion_node': python + ['occo_ros.ros.fusion_node', '--ros-args',
                                 '--params-file', str(shipped_file('config', 'fusion.yaml')),
                                 '-p', f'crop:={SYNTHETIC_CROP}',
                                 '-p', f'homography:={SYNTHETIC_HOMOGRAPHY}',
                                 '-p', 'input_reliability:=reliable',
                                 '-p', f'backend:={args.backend}'],
    }


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def problems_in(log: str) -> list[str]:
    """Lines that make a shutdown noisy: ERROR/FATAL log lines and tracebacks."""
    return [line for line in log.splitlines()
            if '[ERROR]' in line or '[FATAL]' in line or line.startswith('Traceback')]


def run_once(index: int, args: argparse.Namespace, counter: FusedCounter) -> dict:
    folder = args.out / f'run{index:02d}'
    folder.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    procs: dict[str, subprocess.Popen] = {}
    try:
        for name, cmd in node_commands(args).items():
            # The first process leads a new process group, the second joins it (as launch's
            # children share the terminal's foreground group); this process stays outside.
            group = procs['synthetic_cameras'].pid if procs else 0
            procs[name] = subprocess.Popen(cmd, stdout=(folder / f'{name}.log').open('w'),
                                           stderr=subprocess.STDOUT, env=env,
                                           process_group=group)
    except BaseException:
        if procs:   # the second failed to start: the first must not outlive this run
            os.killpg(procs['synthetic_cameras'].pid, signal.SIGKILL)
        raise
    pgid = procs['synthetic_cameras'].pid
    result = {'run': index, 'started': False}
    offsets = {name: 0 for name in procs}
    try:
        counter.count = 0
        deadline = time.monotonic() + args.startup_timeout
        while (counter.count < args.frames and time.monotonic() < deadline
               and all(p.poll() is None for p in procs.values())):
            rclpy.spin_once(counter, timeout_sec=0.1)
        result['started'] = counter.count >= args.frames
        result['fused_before_signal'] = counter.count
        # what the nodes logged before the signal is not the shutdown's doing
        offsets = {name: (folder / f'{name}.log').stat().st_size for name in procs}
        signalled = time.monotonic()
        for _ in range(2 if args.twice else 1):
            os.killpg(pgid, signal.SIGINT)
        exit_s = {}
        while len(exit_s) < len(procs) and time.monotonic() - signalled < 30.0:
            for name, proc in procs.items():
                if name not in exit_s and proc.poll() is not None:
                    exit_s[name] = time.monotonic() - signalled
            time.sleep(0.01)
        result['exit_s'] = exit_s
    finally:
        if group_alive(pgid):
            os.killpg(pgid, signal.SIGKILL)
        for proc in procs.values():
            proc.wait()
    result['exit_codes'] = {name: proc.returncode for name, proc in procs.items()}
    result['left_running'] = sorted(set(procs) - set(result['exit_s']))
    logs = {name: (folder / f'{name}.log').read_bytes() for name in procs}
    result['problems'] = {name: problems_in(log[offsets[name]:].decode(errors='replace'))
                          for name, log in logs.items()}
    result['problems_before_signal'] = {
        name: problems_in(log[:offsets[name]].decode(errors='replace'))
        for name, log in logs.items()}
    result['clean'] = (result['started'] and not result['left_running']
                       and all(code == 0 for code in result['exit_codes'].values())
                       and all(s <= args.exit_limit for s in result['exit_s'].values())
                       and not any(result['problems'].values()))
    return result


def partial_files(cache: Path, tmp: Path) -> list[str]:
    """What an interrupted start-up must not leave: temporaries in the cache or the node's
    TMPDIR, and cached artifacts that do not validate (no or a wrong sidecar)."""
    from occo_ros.model.artifact_cache import read_sidecar

    found = [str(p) for p in tmp.glob('occo_*')]
    for path in sorted(cache.rglob('*')) if cache.is_dir() else []:
        if path.name.startswith('.') or path.suffix == '.tmp':
            found.append(str(path))
        elif path.is_file() and path.suffix in ('.onnx', '.engine', '.ort') \
                and read_sidecar(path)[0] is None:
            found.append(f'{path} ({read_sidecar(path)[1]})')
    return found


def run_startup_once(index: int, args: argparse.Namespace, delay: float) -> dict:
    """One start-up run (see the module docstring)."""
    folder = args.out / f'run{index:02d}'
    cache, tmp = folder / 'cache', folder / 'tmp'
    for path in (cache, tmp):
        path.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED='1', TMPDIR=str(tmp))
    cmd = [sys.executable, '-m', 'occo_ros.ros.fusion_node', '--ros-args',
           '-p', 'backend:=onnxruntime', '-p', f'engine_cache_dir:={cache}',
           '-p', f"model_path:={shipped_file('models', 'fifn_w025.pt')}"]
    log = folder / 'fusion_node.log'
    proc = subprocess.Popen(cmd, stdout=log.open('w'), stderr=subprocess.STDOUT, env=env,
                            process_group=0)
    result = {'run': index, 'started': False, 'delay_s': round(delay, 2)}
    try:
        deadline = time.monotonic() + args.startup_timeout
        while (b'exporting' not in log.read_bytes() and proc.poll() is None
               and time.monotonic() < deadline):
            time.sleep(0.05)
        result['started'] = b'exporting' in log.read_bytes()
        time.sleep(delay)
        offset = log.stat().st_size
        result['phase'] = log.read_text(errors='replace').strip().splitlines()[-1][-120:]
        signalled = time.monotonic()
        proc.send_signal(getattr(signal, args.signal))
        try:
            proc.wait(timeout=120)
            result['exit_s'] = {'fusion_node': time.monotonic() - signalled}
        except subprocess.TimeoutExpired:
            result['exit_s'] = {}
        # a child of the node (the export process) must not outlive it
        time.sleep(0.2)
        result['group_left'] = group_alive(proc.pid)
    finally:
        if group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    result['exit_codes'] = {'fusion_node': proc.returncode}
    result['left_running'] = ([] if result['exit_s'] else ['fusion_node']) + \
        (['a process of its group'] if result.get('group_left') else [])
    text = log.read_bytes()
    result['problems'] = {'fusion_node': problems_in(text[offset:].decode(errors='replace'))}
    result['problems_before_signal'] = {
        'fusion_node': problems_in(text[:offset].decode(errors='replace'))}
    result['partial_files'] = partial_files(cache, tmp)
    result['clean'] = (result['started'] and not result['left_running']
                       and proc.returncode == 0 and not result['partial_files']
                       and result['exit_s']['fusion_node'] <= args.exit_limit
                       and not result['problems']['fusion_node'])
    return result


def summarize(runs: list[dict], args: argparse.Namespace) -> dict:
    exits = {name: [r['exit_s'][name] for r in runs if name in r['exit_s']] for name in NODES}
    return {
        'machine': cpu_description(),
        'runs': len(runs),
        'clean_runs': sum(r['clean'] for r in runs),
        'exit_limit_s': args.exit_limit,
        'exit_s_median': {n: round(statistics.median(v), 3) for n, v in exits.items() if v},
        'exit_s_max': {n: round(max(v), 3) for n, v in exits.items() if v},
        'signals': 'SIGINT twice' if args.twice else args.signal,
        'case': 'start-up (ONNX export, empty engine cache)' if args.startup
        else 'frames flowing',
        'camera_rate_hz': args.rate,
        'sizes': 'thermal mono16 640x512, RGB bgr8 1280x720 -> fused 640x512',
        'details': runs,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.startup:
        delays = random.Random(20).uniform
        runs = [run_startup_once(i, args, delays(0.0, args.startup_delay))
                for i in tqdm(range(args.runs), desc='runs')]
    else:
        rclpy.init()
        counter = FusedCounter()
        try:
            runs = [run_once(i, args, counter) for i in tqdm(range(args.runs), desc='runs')]
        finally:
            counter.destroy_node()
            rclpy.shutdown()
    summary = summarize(runs, args)
    (args.out / 'summary.json').write_text(json.dumps(summary, indent=2) + '\n')
    print(f"machine: {summary['machine']}; {summary['sizes']}, cameras {args.rate} Hz")
    for r in runs:
        state = 'clean' if r['clean'] else 'NOT CLEAN'
        print(f"run {r['run']}: {state}; exit codes {r['exit_codes']}, seconds to exit "
              f"{ {n: round(s, 3) for n, s in r['exit_s'].items()} }, "
              f"problems after the signal {sum(map(len, r['problems'].values()))} "
              f"(before: {sum(map(len, r['problems_before_signal'].values()))}), "
              f"left running {r['left_running']}"
              + (f", partial files {r['partial_files']}, signal {r['delay_s']} s after "
                 f"the export began, last line before it: {r['phase']!r}"
                 if args.startup else ''))
    print(f"{summary['clean_runs']} of {summary['runs']} runs clean ({summary['case']}); "
          f"seconds from {summary['signals']} to "
          f"exit: median {summary['exit_s_median']}, max {summary['exit_s_max']}")
    return 0 if summary['clean_runs'] == summary['runs'] else 1


if __name__ == '__main__':
    sys.exit(main())
