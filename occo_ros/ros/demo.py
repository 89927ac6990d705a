"""``make demo``: synthetic cameras -> fusion node -> measured results in out/demo/.

Starts the ``synthetic_cameras`` and ``fusion_node`` executables as separate processes (real
DDS between them, as on a robot), waits for the first fused image, then watches
``fused/image`` and ``/diagnostics`` for ``--duration`` seconds. Afterwards it grabs a few
thermal | RGB | fused snapshots and writes ``summary.json`` plus a one-line summary.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import random
import signal
import subprocess
import sys
import time

import numpy as np

# Before rclpy loads: localhost discovery and a private domain. No DDS transport setting:
# reliable on both sides carries full-size images over the default transports, and a
# process started in another shell sees the demo's topics.
os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
os.environ.setdefault('ROS_DOMAIN_ID', str(random.randint(1, 101)))

import cv2  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
import rclpy  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from occo_ros.core.codec import decode_image  # noqa: E402
from occo_ros.core.pairing import stamp_ns  # noqa: E402
from occo_ros.core.thermal import ThermalNormalizer  # noqa: E402
from occo_ros.ros.launch_config import SYNTHETIC_CROP, SYNTHETIC_HOMOGRAPHY  # noqa: E402
from occo_ros.util.resources import shipped_file  # noqa: E402
from occo_ros.worker import STAGES, WAITS  # noqa: E402


class Observer(Node):
    """Receives fused images and diagnostics; measures rate and end-to-end latency."""

    def __init__(self) -> None:
        super().__init__('occo_demo_observer')
        self.fused: list[tuple[float, float]] = []      # (receive time, latency ms)
        self.diagnostics: dict[str, str] = {}
        self.recording = False
        self.latest_fused: Image | None = None
        self.create_subscription(Image, 'fused/image', self._on_fused,
                                 QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
        self.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 10)
        self.inputs: dict[str, dict[int, Image]] = {'thermal': {}, 'rgb': {}}

    def _on_fused(self, msg: Image) -> None:
        self.latest_fused = msg
        if self.recording:
            latency = (self.get_clock().now().nanoseconds - stamp_ns(msg.header)) * 1e-6
            self.fused.append((time.monotonic(), latency))

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.endswith('fusion'):
                self.diagnostics = {kv.key: kv.value for kv in status.values}

    def watch_inputs(self) -> None:
        """Subscribe to the camera images too (only for the snapshots, after measuring).
        Reliable like the synthetic cameras: best effort loses most full-size frames between
        processes (docs/NODE.md, DDS and large images), and a snapshot needs the RGB frame of
        a fused one."""
        for name in self.inputs:
            self.create_subscription(Image, f'{name}/image_raw',
                                     lambda m, n=name: self._keep(n, m),
                                     QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))

    def _keep(self, name: str, msg: Image) -> None:
        kept = self.inputs[name]
        kept[stamp_ns(msg.header)] = msg
        while len(kept) > 60:
            del kept[min(kept)]


def snapshot(thermal: Image, rgb: Image, fused: Image) -> np.ndarray:
    """Thermal | RGB (fused crop outlined) | fused side by side at the fused image's height."""
    height = fused.height
    normalizer = ThermalNormalizer('percentile')
    t8 = (normalizer(decode_image(thermal)[0]) * 255).astype(np.uint8)
    rgb_pixels, order = decode_image(rgb)
    # a writable BGR copy to draw the crop on (decoded images are read-only views)
    rgb_bgr = (cv2.cvtColor(rgb_pixels, cv2.COLOR_RGB2BGR) if order == 'rgb'
               else rgb_pixels.copy())
    x, y, w, h = SYNTHETIC_CROP
    cv2.rectangle(rgb_bgr, (round(x * rgb.width), round(y * rgb.height)),
                  (round((x + w) * rgb.width) - 1, round((y + h) * rgb.height) - 1),
                  (0, 255, 255), 2)
    fused_pixels, _ = decode_image(fused)
    panels = [cv2.cvtColor(t8, cv2.COLOR_GRAY2BGR), rgb_bgr,
              cv2.cvtColor(fused_pixels, cv2.COLOR_RGB2BGR)]
    labels = ['thermal', 'RGB', 'fused']
    out = []
    for panel, label in zip(panels, labels):
        width = round(panel.shape[1] * height / panel.shape[0])
        panel = cv2.resize(panel, (width, height), interpolation=cv2.INTER_AREA)
        cv2.putText(panel, label, (12, 36), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (0, 255, 255), 2)
        out.append(panel)
    return np.hstack(out)


def spin_for(node: Node, seconds: float, until=None) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.05)
        if until is not None and until():
            return True
    return until is None


def start(cmd: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=log.open('w'), stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    """SIGINT first (clean rclpy shutdown), then SIGKILL."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog='occo-demo', description='Run synthetic thermal + RGB cameras and the fusion node '
        'for a while; write snapshots and summary.json.')
    parser.add_argument('--duration', type=float, default=20.0,
                        help='seconds of measurement after the first fused image (default 20)')
    parser.add_argument('--out', type=Path, default=Path('out/demo'),
                        help='output folder for PNG snapshots, logs and summary.json')
    parser.add_argument('--model', default='', help='model file; default the shipped model')
    parser.add_argument('--backend', default='auto',
                        help='auto, torch, onnxruntime or tensorrt (default auto)')
    parser.add_argument('--thermal-rate', type=float, default=30.0,
                        help='thermal camera frames per second (default 30)')
    # 15 Hz RGB: the network fuses ~10 pairs/s on a 2-core CPU, and receiving a second
    # 30 Hz stream of 1280x720 images in Python costs the CPU the network needs there
    # (7-8 fused frames/s with 30 + 30 Hz, 10 with 30 + 15 Hz; docs/PERFORMANCE.md).
    parser.add_argument('--rgb-rate', type=float, default=15.0,
                        help='RGB camera frames per second (default 15)')
    parser.add_argument('--snapshots', type=int, default=3,
                        help='number of thermal | RGB | fused PNGs to write (default 3)')
    parser.add_argument('--startup-timeout', type=float, default=120.0,
                        help='seconds to wait for the first fused image (default 120)')
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    params_file = shipped_file('config', 'fusion.yaml')
    fusion_cmd = [sys.executable, '-m', 'occo_ros.ros.fusion_node', '--ros-args',
                  '--params-file', str(params_file), '-p', f'crop:={SYNTHETIC_CROP}',
                  '-p', f'homography:={SYNTHETIC_HOMOGRAPHY}',
                  # Fast DDS loses most full-size best-effort images between processes here
                  # (docs/NODE.md); the synthetic cameras publish reliable, so match them.
                  '-p', 'input_reliability:=reliable',
                  '-p', f'backend:={args.backend}']
    if args.model:
        fusion_cmd += ['-p', f'model_path:={args.model}']
    cameras_cmd = [sys.executable, '-m', 'occo_ros.ros.synthetic_cameras', '--ros-args',
                   '-p', f'thermal_rate:={args.thermal_rate}', '-p', f'rgb_rate:={args.rgb_rate}']
    rclpy.init()
    observer = Observer()
    procs = [start(cameras_cmd, args.out / 'synthetic_cameras.log'),
             start(fusion_cmd, args.out / 'fusion_node.log')]
    try:
        print(f'occo demo: waiting for the first fused image (logs in {args.out}) ...',
              flush=True)
        started = spin_for(observer, args.startup_timeout,
                           lambda: observer.latest_fused is not None
                           or any(p.poll() is not None for p in procs))
        if not started or observer.latest_fused is None:
            print('occo demo: no fused image arrived; see the logs:', file=sys.stderr)
            for log in ('fusion_node.log', 'synthetic_cameras.log'):
                print(f'--- {log}\n' + (args.out / log).read_text()[-3000:], file=sys.stderr)
            return 1
        spin_for(observer, 2.0)             # settle: warm caches, first diagnostics
        observer.recording = True
        t0 = time.monotonic()
        spin_for(observer, args.duration)
        observer.recording = False
        elapsed = time.monotonic() - t0
        diagnostics = dict(observer.diagnostics)
        written = write_snapshots(observer, args)
    finally:
        for proc in reversed(procs):
            stop(proc)
        observer.destroy_node()
        rclpy.shutdown()
    summary = summarize(observer.fused, elapsed, diagnostics, written)
    (args.out / 'summary.json').write_text(json.dumps(summary, indent=2) + '\n')
    print(f"occo demo: {summary['pairs']} fused frames in {elapsed:.1f} s = "
          f"{summary['fps']:.1f} fps, latency p50 {summary['latency_ms_p50']:.0f} ms "
          f"p99 {summary['latency_ms_p99']:.0f} ms, inference p50 "
          f"{summary['stage_ms_p50'].get('inference', float('nan')):.0f} ms "
          f"({summary['backend']} on {summary['device']}); wrote {args.out}/summary.json "
          f'and {len(written)} snapshots')
    return 0


def write_snapshots(observer: Observer, args: argparse.Namespace) -> list[str]:
    observer.watch_inputs()
    written: list[str] = []
    deadline = time.monotonic() + 60.0   # a condition with a generous bound (busy machines)
    while len(written) < args.snapshots and time.monotonic() < deadline:
        spin_for(observer, 0.7)
        fused = observer.latest_fused
        rgb = observer.inputs['rgb'].get(stamp_ns(fused.header)) if fused else None
        thermal_all = observer.inputs['thermal']
        if rgb is None or not thermal_all:
            continue
        nearest = min(thermal_all, key=lambda s: abs(s - stamp_ns(fused.header)))
        path = args.out / f'snapshot_{len(written):02d}.png'
        cv2.imwrite(str(path), snapshot(thermal_all[nearest], rgb, fused))
        written.append(path.name)
    return written


def summarize(fused: list[tuple[float, float]], elapsed: float, diagnostics: dict,
              snapshots: list[str]) -> dict:
    latencies = np.array([lat for _, lat in fused]) if fused else np.array([np.nan])
    half = len(latencies) // 2
    stages = WAITS + STAGES + ('end_to_end',)
    return {
        'pairs': len(fused),
        'duration_s': round(elapsed, 3),
        'fps': len(fused) / elapsed if elapsed > 0 else 0.0,
        'latency_ms_p50': float(np.percentile(latencies, 50)),
        'latency_ms_p99': float(np.percentile(latencies, 99)),
        # a growing backlog shows as latency rising from the first to the second half
        'latency_ms_p50_first_half': float(np.median(latencies[:half])) if half else None,
        'latency_ms_p50_second_half': float(np.median(latencies[half:])) if half else None,
        'stage_ms_p50': {s: float(diagnostics.get(f'{s}_ms_p50', 'nan')) for s in stages},
        'stage_ms_p99': {s: float(diagnostics.get(f'{s}_ms_p99', 'nan')) for s in stages},
        'backend': diagnostics.get('backend', ''),
        'device': diagnostics.get('device', ''),
        'precision': diagnostics.get('precision', ''),
        'node_counts': {k: int(diagnostics[k]) for k in (
            'paired', 'fused', 'dropped_stale', 'dropped_busy', 'unpaired_thermal',
            'unpaired_rgb', 'bad_thermal', 'bad_rgb', 'errors') if k in diagnostics},
        'input_rates_hz': {k: float(diagnostics.get(f'{k}_rate_hz', 'nan'))
                           for k in ('thermal', 'rgb')},
        'snapshots': snapshots,
        'machine': f'{os.cpu_count()} CPU cores, {os.uname().machine}',
    }


if __name__ == '__main__':
    sys.exit(main())
