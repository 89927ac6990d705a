"""Soak and oversized-burst benchmark of the fusion node over DDS (issue 11).

Starts the node as its own process (``python -m occo_ros.ros.fusion_node``, the shipped model
unless --model), as on a robot, and talks to it over DDS from this process:

1. warm-up: 20 pairs;
2. burst (--burst N, 0 = skip): the node's RSS as the baseline, then N RGB images of
   --burst-size x --burst-size pixels (bgr8, above the node's max_input_pixels) while RSS is
   sampled every 10 ms; waits until the node has counted them (bad_rgb), then samples RSS for
   3 s. Reports the peak and the final RSS relative to the baseline;
3. soak: --pairs pairs, thermal mono16 640x512 and RGB bgr8 1280x720 stamped with the
   current time. Lockstep by default (the next pair is published when the fused image of
   the previous one arrived, so every pair goes through the whole node; a pair without an
   answer within --timeout counts as not fused), or streamed at --rate Hz like cameras
   (every pair is paired; the node fuses the newest while busy and drops the rest,
   dropped_busy). Node RSS is sampled 100 times, the latency publish -> fused image
   received of every fused pair. --camera-sizes sets other image sizes. Lockstep at the
   default sizes measures DDS as much as the node: with Fast DDS's default transports about
   a third of the 1280x720 images arrive ~3 s late (Fast DDS's default heartbeat period: a
   lost fragment redelivered, it seems, only then when nothing newer follows); streamed at
   --rate, or at 320x180, they do not (2026-12-07, 20 lockstep pairs each).

Outputs in --out: soak.json (all samples and the summary) and soak.png (RSS and latency
p50/p99 per 100 fused pairs, the burst's RSS over time). Summary numbers:
``rss_growth_pct`` between pair --pairs/10 and the last pair, ``p99_ratio`` = latency p99 of
the last tenth / p99 of the second tenth, ``burst_peak_mb`` and ``burst_after_pct`` over the
baseline. Targets (issue 11): growth <= 5 %, ratio <= 1.2, peak <= 100 MB, after <= 10 %.

    python bench/soak.py [--pairs 10000] [--burst 3] [--out out/soak]

Exit code: 0 when the node survived, fused every pair (lockstep) and stopped cleanly, 1
otherwise (the targets are reported, not enforced: they are measurements, not tests).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import subprocess
import sys
import threading
import time

import cv2
from diagnostic_msgs.msg import DiagnosticArray
from machine import cpu_description  # bench/machine.py (run as python bench/...)
import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Header
from tqdm import tqdm

from occo_ros.core.codec import array_to_image_fields

REPO = Path(__file__).resolve().parents[1]
# Localhost discovery, as the tests; the default transports with reliable on both sides.
os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
THERMAL_SIZE = (640, 512)
RGB_SIZE = (1280, 720)


def rss_mb(pid: int) -> float:
    """Resident set size of process ``pid`` in MiB (Linux /proc)."""
    for line in Path(f'/proc/{pid}/status').read_text().splitlines():
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f'no VmRSS for process {pid}')


class Peer(Node):
    """The cameras and the consumer of the fused images."""

    def __init__(self) -> None:
        super().__init__('occo_soak_peer')
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        self.thermal_pub = self.create_publisher(Image, 'thermal/image_raw', qos)
        self.rgb_pub = self.create_publisher(Image, 'rgb/image_raw', qos)
        self.fused: dict[int, float] = {}          # stamp ns -> arrival (monotonic)
        self.diagnostics: dict[str, str] = {}
        self.states: list[tuple[str, str]] = []    # (level '0'/'1'/'2', message) of each
        self.create_subscription(Image, 'fused/image', self._on_fused, qos)
        self.create_subscription(DiagnosticArray, '/diagnostics', self._on_diag, 10)

    def _on_fused(self, msg: Image) -> None:
        self.fused[msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec] = time.monotonic()

    def _on_diag(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.endswith('fusion'):
                self.diagnostics = {kv.key: kv.value for kv in status.values}
                self.states.append((str(int.from_bytes(status.level, 'little')),
                                    status.message))

    def spin_until(self, condition, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            rclpy.spin_once(self, timeout_sec=0.01)
            if condition():
                return True
        return False

    def publish_pair(self, stamp_ns: int, thermal: dict, rgb: dict) -> None:
        header = Header(frame_id='rgb_optical_frame')
        header.stamp.sec, header.stamp.nanosec = divmod(stamp_ns, 10**9)
        self.thermal_pub.publish(Image(header=header, **thermal))
        self.rgb_pub.publish(Image(header=header, **rgb))


def camera_frames(thermal_size: tuple[int, int] = THERMAL_SIZE,
                  rgb_size: tuple[int, int] = RGB_SIZE, count: int = 8,
                  ) -> list[tuple[dict, dict]]:
    """A few distinct thermal/RGB frames (smooth random scenes, sizes W x H), reused
    round-robin."""
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(count):
        thermal = cv2.resize(rng.integers(7000, 11000, (64, 80)).astype(np.uint16),
                             thermal_size, interpolation=cv2.INTER_CUBIC)
        rgb = cv2.resize(rng.integers(0, 255, (36, 64, 3)).astype(np.uint8), rgb_size,
                         interpolation=cv2.INTER_CUBIC)
        frames.append((array_to_image_fields(thermal, 'mono16'),
                       array_to_image_fields(rgb, 'bgr8')))
    return frames


def start_node(log: Path, model: str, backend: str, input_size: tuple[int, int],
               *params: str) -> subprocess.Popen:
    """The node process with the shipped parameter file, reliable inputs and ``params``
    ('name:=value') on top."""
    cmd = [sys.executable, '-m', 'occo_ros.ros.fusion_node', '--ros-args',
           '--params-file', str(REPO / 'config' / 'fusion.yaml'),
           '-p', 'input_reliability:=reliable', '-p', f'backend:={backend}',
           '-p', f'input_width:={input_size[0]}', '-p', f'input_height:={input_size[1]}']
    for param in (f'model_path:={model}',) * bool(model) + params:
        cmd += ['-p', param]
    return subprocess.Popen(cmd, stdout=log.open('w'), stderr=subprocess.STDOUT,
                            env=dict(os.environ, PYTHONUNBUFFERED='1'))


def send_pairs(peer: Peer, frames, count: int, timeout: float, rate: float = 0.0,
               samples: list | None = None, pid: int | None = None,
               desc: str = 'pairs') -> tuple[list[float], int]:
    """Publish ``count`` pairs, lockstep (``rate`` 0) or at ``rate`` Hz; the latencies (ms)
    of the fused ones in order, and how many were not fused."""
    sent: dict[int, float] = {}
    latencies: list[float] = []

    def collect() -> None:
        for stamp in [s for s in peer.fused if s in sent]:
            latencies.append((peer.fused.pop(stamp) - sent.pop(stamp)) * 1e3)

    next_time = time.monotonic()
    for i in tqdm(range(count), desc=desc, unit='pair', mininterval=5.0):
        stamp = peer.get_clock().now().nanoseconds
        thermal, rgb = frames[i % len(frames)]
        sent[stamp] = time.monotonic()
        peer.publish_pair(stamp, thermal, rgb)
        if rate > 0:
            next_time += 1.0 / rate
            peer.spin_until(lambda due=next_time: time.monotonic() >= due, 10.0)
        else:
            peer.spin_until(lambda stamp=stamp: stamp in peer.fused, timeout)
        collect()
        if rate == 0:
            sent.clear()      # no answer within the timeout: lost
        if samples is not None and (i + 1) % max(count // 100, 1) == 0:
            samples.append((i + 1, rss_mb(pid)))
    if rate > 0:              # the last pairs' answers
        peer.spin_until(lambda: False, 2.0)
        collect()
    return latencies, count - len(latencies)


def median_rss(pid: int, samples: int = 10, period: float = 0.1) -> float:
    values = []
    for _ in range(samples):
        values.append(rss_mb(pid))
        time.sleep(period)
    return float(np.median(values))


def burst(peer: Peer, pid: int, count: int, size: int) -> dict:
    """Oversized RGB images while the node's RSS is sampled (see the module docstring)."""
    baseline = median_rss(pid)
    already = int(peer.diagnostics.get('bad_rgb', 0))
    samples: list[tuple[float, float]] = []
    done = threading.Event()
    start = time.monotonic()

    def sample() -> None:
        while not done.is_set():
            samples.append((time.monotonic() - start, rss_mb(pid)))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    big = array_to_image_fields(np.full((size, size, 3), 77, np.uint8), 'bgr8')
    for _ in range(count):
        header = Header(frame_id='rgb_optical_frame')
        header.stamp = peer.get_clock().now().to_msg()
        peer.rgb_pub.publish(Image(header=header, **big))
    del big
    counted = peer.spin_until(
        lambda: int(peer.diagnostics.get('bad_rgb', 0)) - already >= count, 120)
    settle_end = time.monotonic() + 3.0
    peer.spin_until(lambda: time.monotonic() > settle_end, 4.0)
    done.set()
    sampler.join()
    after = float(np.median([rss for t, rss in samples if t > samples[-1][0] - 1.0]))
    peak = max(rss for _, rss in samples)
    return {'count': count, 'size': size, 'counted_by_node': counted,
            'baseline_mb': baseline, 'peak_mb': peak, 'after_mb': after,
            'burst_peak_mb': peak - baseline,
            'burst_after_pct': 100.0 * (after - baseline) / baseline, 'samples': samples}


def window_percentiles(latencies: list[float], window: int = 100) -> list[tuple]:
    """(pair index at the window's end, p50, p99) of each ``window`` latencies."""
    return [(i + window, float(np.percentile(latencies[i:i + window], 50)),
             float(np.percentile(latencies[i:i + window], 99)))
            for i in range(0, len(latencies) - window + 1, window)]


def summarize(rss: list[tuple[int, float]], latencies: list[float]) -> dict:
    n = len(latencies)
    tenth = max(n // 10, 1)
    at = {i: mb for i, mb in rss}
    first = min(at, key=lambda i: abs(i - tenth)) if at else None
    last = max(at) if at else None
    p99_second = float(np.percentile(latencies[tenth:2 * tenth], 99)) if n >= 20 else None
    p99_last = float(np.percentile(latencies[-tenth:], 99)) if n >= 20 else None
    return {
        'rss_first_mb': at.get(first), 'rss_last_mb': at.get(last),
        'rss_growth_pct': (100.0 * (at[last] - at[first]) / at[first]) if at else None,
        'rss_from_pair': first, 'rss_to_pair': last,
        'latency_ms_p50': float(np.percentile(latencies, 50)) if n else None,
        'latency_ms_p99': float(np.percentile(latencies, 99)) if n else None,
        'p99_second_tenth_ms': p99_second, 'p99_last_tenth_ms': p99_last,
        'p99_ratio': p99_last / p99_second if p99_second else None,
    }


def plot(path: Path, rss: list, windows: list, burst_samples: list) -> None:
    """Three stacked line charts drawn with OpenCV (no plotting library needed)."""
    panels = [chart('node RSS (MiB) over pairs', [[(i, mb) for i, mb in rss]],
                    [(255, 160, 0)]),
              chart('latency per 100 fused pairs (ms): p50 blue, p99 red over fused pairs',
                    [[(i, p50) for i, p50, _ in windows], [(i, p99) for i, _, p99 in windows]],
                    [(255, 120, 0), (0, 0, 230)])]
    if burst_samples:
        panels.append(chart('oversized burst: node RSS (MiB) over seconds',
                            [burst_samples], [(0, 140, 0)]))
    cv2.imwrite(str(path), np.vstack(panels))


def chart(title: str, series: list[list[tuple[float, float]]], colours: list,
          size: tuple[int, int] = (900, 260)) -> np.ndarray:
    width, height = size
    left, right, top, bottom = 70, 20, 30, 30
    image = np.full((height, width, 3), 255, np.uint8)
    points = [p for s in series for p in s]
    cv2.putText(image, title, (left, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1,
                cv2.LINE_AA)
    cv2.rectangle(image, (left, top), (width - right, height - bottom), (180, 180, 180), 1)
    if not points:
        return image
    xs, ys = np.array([p[0] for p in points]), np.array([p[1] for p in points])
    x0, x1 = float(xs.min()), float(xs.max()) or 1.0
    y0, y1 = 0.0, float(ys.max()) * 1.1 or 1.0

    def to_pixel(x: float, y: float) -> tuple[int, int]:
        u = left + (x - x0) / max(x1 - x0, 1e-9) * (width - left - right)
        v = height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom)
        return int(round(u)), int(round(v))

    for label_y in (y0, (y0 + y1) / 2, y1):
        cv2.putText(image, f'{label_y:.0f}', (5, to_pixel(x0, label_y)[1] + 4),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    for label_x in (x0, x1):
        u = to_pixel(label_x, y0)[0]
        cv2.putText(image, f'{label_x:.0f}', (max(u - 20, 0), height - 10),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    for s, colour in zip(series, colours):
        if len(s) >= 2:
            cv2.polylines(image, [np.array([to_pixel(x, y) for x, y in s], np.int32)], False,
                          colour, 1, cv2.LINE_AA)
    return image


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog='Exit code: 0 when the node survived, fused '
                                     'every pair (lockstep) and stopped cleanly; 1 otherwise.')
    parser.add_argument('--pairs', type=int, default=10_000,
                        help='pairs sent in the soak (default 10000)')
    parser.add_argument('--rate', type=float, default=0.0,
                        help='pairs per second; 0 = lockstep (default)')
    parser.add_argument('--burst', type=int, default=3,
                        help='oversized RGB images sent before the soak (0 = no burst)')
    parser.add_argument('--burst-size', type=int, default=8000,
                        help='side of the square oversized images in pixels (default 8000)')
    parser.add_argument('--model', default='',
                        help='model_path of the node (default: the shipped model)')
    parser.add_argument('--backend', default='auto', help='backend of the node')
    parser.add_argument('--input-size', default='320x256',
                        help='network input WIDTHxHEIGHT of the node (default 320x256)')
    parser.add_argument('--camera-sizes', default='640x512,1280x720',
                        help='thermal (mono16) and RGB (bgr8) image sizes WxH,WxH of the soak '
                        '(default 640x512,1280x720)')
    parser.add_argument('--timeout', type=float, default=30.0,
                        help='lockstep: seconds to wait for each fused image before counting '
                        'it lost')
    parser.add_argument('--out', type=Path, default=REPO / 'out' / 'soak',
                        help='folder for soak.json, soak.png and node.log')
    args = parser.parse_args(argv)
    input_size = tuple(int(v) for v in args.input_size.lower().split('x'))
    thermal_size, rgb_size = (tuple(int(v) for v in size.lower().split('x'))
                              for size in args.camera_sizes.split(','))
    args.out.mkdir(parents=True, exist_ok=True)

    rclpy.init()
    peer = Peer()
    proc = start_node(args.out / 'node.log', args.model, args.backend, input_size,
                      'max_age:=30.0', 'diagnostics_period:=0.5')
    result: dict = {'machine': cpu_description(), 'pairs': args.pairs, 'rate_hz': args.rate,
                    'input_size': input_size, 'thermal_size': thermal_size,
                    'rgb_size': rgb_size}
    try:
        if not peer.spin_until(lambda: peer.count_subscribers('rgb/image_raw') > 0
                               and peer.count_subscribers('thermal/image_raw') > 0, 120):
            print((args.out / 'node.log').read_text(), file=sys.stderr)
            return 1
        frames = camera_frames(thermal_size, rgb_size)
        send_pairs(peer, frames, 20, args.timeout, desc='warm-up')
        if args.burst:
            result['burst'] = burst(peer, proc.pid, args.burst, args.burst_size)
        rss: list[tuple[int, float]] = []
        latencies, not_fused = send_pairs(peer, frames, args.pairs, args.timeout, args.rate,
                                          rss, proc.pid)
        peer.spin_until(lambda: False, 1.5)      # the last diagnostics
        result.update(not_fused=not_fused, rss_mb=rss, latency_ms=latencies,
                      diagnostics=peer.diagnostics, **summarize(rss, latencies))
    finally:
        peer.destroy_node()
        rclpy.shutdown()
        if proc.poll() is None:
            proc.send_signal(2)
        result['node_exit_code'] = proc.wait(30)
    (args.out / 'soak.json').write_text(json.dumps(result, indent=1))
    plot(args.out / 'soak.png', result.get('rss_mb', []),
         window_percentiles(result.get('latency_ms', [])),
         result.get('burst', {}).get('samples', []))
    keys = ('pairs', 'rate_hz', 'not_fused', 'rss_first_mb', 'rss_last_mb', 'rss_growth_pct',
            'latency_ms_p50', 'latency_ms_p99', 'p99_second_tenth_ms', 'p99_last_tenth_ms',
            'p99_ratio', 'node_exit_code')
    summary = {k: result.get(k) for k in keys}
    diagnostics = result.get('diagnostics', {})
    summary.update({k: diagnostics.get(k) for k in (
        'paired', 'unpaired_thermal', 'unpaired_rgb', 'fused', 'dropped_busy', 'bad_rgb',
        'errors')})
    if 'burst' in result:
        summary.update({k: v for k, v in result['burst'].items() if k != 'samples'})
    print(json.dumps(summary, indent=1))
    print(f'{result["machine"]}; plot: {args.out / "soak.png"}')
    # lockstep: every pair fused; streamed: the node fuses what it can (reported above)
    answered = args.rate > 0 or result.get('not_fused') == 0
    return 0 if result['node_exit_code'] == 0 and answered else 1


if __name__ == '__main__':
    sys.exit(main())
