"""Approximate-time pairing of the thermal and RGB streams.

message_filters cannot be installed everywhere this package runs (it is not on PyPI), so this
module reproduces the semantics of its Python ``ApproximateTimeSynchronizer`` for two streams:

* every message waits in a per-stream queue keyed by stamp, at most ``queue_size`` deep; when a
  queue overflows its oldest stamp is evicted (counted as unpaired);
* an arriving message pairs with the waiting message of the other stream whose stamp is
  closest to its own, if that difference is strictly below ``slop``; both leave their queues;
* a message with the stamp of one already waiting replaces it.

Two additions a robot needs:

* stamps that jump backwards by more than ``jump_back_tolerance`` (a bag looping, a simulator
  reset) clear both queues; message_filters would instead evict the *new* messages first
  (they have the smallest stamps) and never pair again;
* counters and the |dt| of each pair, for diagnostics.

Staleness (``max_age``) is enforced by the consumer of the pairs, which knows the clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

STREAMS = ('thermal', 'rgb')


def stamp_ns(header: Any) -> int:
    """A std_msgs/Header's stamp (rclpy's, rosbags' or any object with its fields) in
    nanoseconds: the key pairing works on."""
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


@dataclass(frozen=True)
class Pair:
    """One thermal message and one RGB message taken within ``slop`` of each other."""

    thermal: Any
    rgb: Any
    thermal_stamp_ns: int
    rgb_stamp_ns: int

    @property
    def dt(self) -> float:
        """|thermal stamp - RGB stamp| in seconds."""
        return abs(self.thermal_stamp_ns - self.rgb_stamp_ns) * 1e-9


@dataclass
class PairingCounts:
    """Running totals since start (or since the last ``reset_counts``)."""

    received_thermal: int = 0
    received_rgb: int = 0
    paired: int = 0
    unpaired_thermal: int = 0     # evicted, replaced or cleared without ever being paired
    unpaired_rgb: int = 0
    time_jumps: int = 0           # backward stamp jumps that cleared the queues


class ApproximateTimePairer:
    """Pairs two stamped streams; ``add`` returns a :class:`Pair` when one forms.

    Not thread-safe: callers that add from several threads hold one lock around ``add``.
    """

    def __init__(self, slop: float, queue_size: int = 10,
                 jump_back_tolerance: float = 1.0) -> None:
        self.slop = slop
        if queue_size < 1:
            raise ValueError(f'queue_size must be >= 1, got {queue_size}')
        if jump_back_tolerance <= 0:
            raise ValueError(f'jump_back_tolerance must be > 0 s, got {jump_back_tolerance}')
        self.queue_size = queue_size
        self._jump_ns = int(jump_back_tolerance * 1e9)
        self._queues: dict[str, dict[int, Any]] = {s: {} for s in STREAMS}
        self._newest: dict[str, int | None] = {s: None for s in STREAMS}
        self.counts = PairingCounts()

    @property
    def slop(self) -> float:
        """Largest accepted |dt| in seconds (exclusive); may change at run time."""
        return self._slop_ns * 1e-9

    @slop.setter
    def slop(self, seconds: float) -> None:
        if not seconds > 0:
            raise ValueError(f'slop must be > 0 s, got {seconds}')
        self._slop_ns = int(round(seconds * 1e9))

    def waiting(self, stream: str) -> int:
        """Number of messages of ``stream`` waiting for a partner."""
        return len(self._queues[stream])

    def add(self, stream: str, stamp_ns: int, msg: Any) -> Pair | None:
        """Queue ``msg`` of ``stream`` ('thermal' or 'rgb') stamped ``stamp_ns`` nanoseconds."""
        if stream not in self._queues:
            raise ValueError(f'unknown stream {stream!r}; expected one of {STREAMS}')
        other = 'rgb' if stream == 'thermal' else 'thermal'
        setattr(self.counts, f'received_{stream}',
                getattr(self.counts, f'received_{stream}') + 1)
        newest = self._newest[stream]
        if newest is not None and stamp_ns < newest - self._jump_ns:
            self._clear()
            self.counts.time_jumps += 1
            newest = None
        self._newest[stream] = stamp_ns if newest is None else max(newest, stamp_ns)

        mine = self._queues[stream]
        if stamp_ns in mine:
            self._count_unpaired(stream, 1)
        mine[stamp_ns] = msg
        while len(mine) > self.queue_size:
            del mine[min(mine)]
            self._count_unpaired(stream, 1)

        theirs = self._queues[other]
        best = min(theirs, key=lambda s: abs(s - stamp_ns), default=None)
        if best is None or abs(best - stamp_ns) >= self._slop_ns:
            return None
        partner = theirs.pop(best)
        del mine[stamp_ns]
        self.counts.paired += 1
        if stream == 'thermal':
            return Pair(msg, partner, stamp_ns, best)
        return Pair(partner, msg, best, stamp_ns)

    def _clear(self) -> None:
        for stream, queue in self._queues.items():
            self._count_unpaired(stream, len(queue))
            queue.clear()
            self._newest[stream] = None

    def _count_unpaired(self, stream: str, n: int) -> None:
        name = f'unpaired_{stream}'
        setattr(self.counts, name, getattr(self.counts, name) + n)
