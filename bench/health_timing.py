"""How fast /diagnostics tells the truth: output stops while inputs arrive, then recovers.

The node runs as its own process with the shipped parameters (input_timeout 2 s,
diagnostics_period 1 s, unless --input-timeout/--diagnostics-period) and this process
streams camera pairs at --rate Hz over DDS. Each round: good pairs until the status is OK;
then the thermal camera sends bayer_rggb8 (refused on arrival, nothing fused) while RGB goes
on, timed until the first status that is not OK (and until ERROR); then good pairs again,
timed until OK. Medians over --rounds rounds.

Targets (issue 11): not OK within 2 x input_timeout of the output stopping; OK within 2 s of
the recovery.

    python bench/health_timing.py [--rounds 5]

Exit code: 0 when every round reached each state, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
import sys
import time

from machine import cpu_description  # bench/machine.py (run as python bench/...)
import numpy as np
import rclpy
from sensor_msgs.msg import Image
from soak import REPO, Peer, camera_frames, start_node
from std_msgs.msg import Header

OK, WARN, ERROR = '0', '1', '2'


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog='Exit code: 0 when every round reached each '
                                     'state, 1 otherwise.')
    parser.add_argument('--rounds', type=int, default=5, help='rounds (default 5)')
    parser.add_argument('--rate', type=float, default=10.0, help='camera rate in Hz')
    parser.add_argument('--input-timeout', type=float, default=2.0,
                        help='input_timeout of the node (default 2.0, the shipped value)')
    parser.add_argument('--diagnostics-period', type=float, default=1.0,
                        help='diagnostics_period of the node (default 1.0, the shipped value)')
    parser.add_argument('--out', type=Path, default=REPO / 'out' / 'health_timing',
                        help='folder for health_timing.json and node.log')
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rclpy.init()
    peer = Peer()
    proc = start_node(args.out / 'node.log', '', 'auto', (320, 256), 'max_age:=5.0',
                      f'input_timeout:={args.input_timeout}',
                      f'diagnostics_period:={args.diagnostics_period}')
    frames = camera_frames(2)
    bad_thermal = dict(frames[0][0], encoding='bayer_rggb8')
    rounds, complete = [], True

    def stream(thermal_ok: bool, level: str, timeout: float = 60.0) -> float | None:
        """Publish at --rate until the status is ``level``; seconds it took, None: never."""
        start = time.monotonic()
        seen_at = len(peer.states)
        while time.monotonic() - start < timeout:
            header = Header(frame_id='f')
            header.stamp = peer.get_clock().now().to_msg()
            thermal, rgb = frames[int(time.monotonic() * args.rate) % len(frames)]
            peer.thermal_pub.publish(Image(header=header,
                                           **(thermal if thermal_ok else bad_thermal)))
            peer.rgb_pub.publish(Image(header=header, **rgb))
            if peer.spin_until(lambda: any(s[0] == level for s in peer.states[seen_at:]),
                               1.0 / args.rate):
                return time.monotonic() - start
        return None

    try:
        if not peer.spin_until(lambda: peer.count_subscribers('rgb/image_raw') > 0, 120):
            print((args.out / 'node.log').read_text(), file=sys.stderr)
            return 1
        for _ in range(args.rounds):
            if stream(True, OK) is None:
                complete = False
                break
            not_ok = stream(False, WARN)
            error = stream(False, ERROR)
            message = peer.states[-1][1] if peer.states else ''
            ok = stream(True, OK)
            rounds.append({'not_ok_s': not_ok, 'error_s': None if error is None or not_ok
                           is None else not_ok + error, 'ok_again_s': ok, 'message': message})
            complete = complete and None not in (not_ok, error, ok)
    finally:
        peer.destroy_node()
        rclpy.shutdown()
        proc.send_signal(2)
        exit_code = proc.wait(30)

    def median(key: str) -> float | None:
        values = [r[key] for r in rounds if r[key] is not None]
        return float(np.median(values)) if values else None

    result = {'machine': cpu_description(), 'input_timeout_s': args.input_timeout,
              'diagnostics_period_s': args.diagnostics_period, 'rate_hz': args.rate,
              'rounds': rounds, 'not_ok_s_median': median('not_ok_s'),
              'error_s_median': median('error_s'), 'ok_again_s_median': median('ok_again_s'),
              'node_exit_code': exit_code}
    (args.out / 'health_timing.json').write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != 'rounds'}, indent=1))
    print('last WARN/ERROR message:', rounds[-1]['message'] if rounds else None)
    return 0 if complete and exit_code == 0 else 1


if __name__ == '__main__':
    sys.exit(main())
