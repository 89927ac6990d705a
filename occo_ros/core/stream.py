"""The stream step: arrival checks, then approximate-time pairing (no ROS import).

One step for every consumer of camera streams, so that a message is refused or paired the
same way live and offline: the fusion worker (node), occo-bag and occo-calibrate's bag reader.
Each fuses (or decodes) the pairs itself: the worker on its own thread, the tools inline.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from occo_ros.core.arrival import Refusal, check_arrival
from occo_ros.core.pairing import ApproximateTimePairer, Pair, PairingCounts
from occo_ros.params import FusionSettings


class StepResult(NamedTuple):
    """What one message did: refused on arrival (``refusal``), completed a ``pair``, or
    waits for its partner (both None)."""

    refusal: Refusal | None = None
    pair: Pair | None = None


class StreamStep:
    """Arrival checks (occo_ros.core.arrival) and pairing (occo_ros.core.pairing) with the
    settings' ``slop`` and ``queue_size``. :meth:`add` is both; the worker runs :meth:`check`
    outside its lock (it reads the message) and :meth:`pair` under it (not thread-safe)."""

    def __init__(self, settings: FusionSettings) -> None:
        self._settings = settings
        self._pairer = ApproximateTimePairer(settings.slop, settings.queue_size)

    def add(self, stream: str, stamp_ns: int, msg: Any, now_ns: int = 0) -> StepResult:
        """One 'thermal' or 'rgb' message stamped ``stamp_ns``, at node clock ``now_ns``
        (0: no live clock, e.g. a bag, which skips the stamps-ahead check)."""
        refusal = self.check(stream, msg, stamp_ns, now_ns)
        if refusal is not None:
            return StepResult(refusal=refusal)
        return StepResult(pair=self.pair(stream, stamp_ns, msg))

    def check(self, stream: str, msg: Any, stamp_ns: int, now_ns: int = 0) -> Refusal | None:
        """The arrival checks alone: why ``msg`` is refused, or None."""
        return check_arrival(stream, msg, stamp_ns, now_ns, self._settings)

    def pair(self, stream: str, stamp_ns: int, msg: Any) -> Pair | None:
        """Pairing alone, for a message that passed :meth:`check`: the completed pair or
        None."""
        return self._pairer.add(stream, stamp_ns, msg)

    def reconfigure(self, settings: FusionSettings) -> None:
        """New settings: the arrival limits and ``slop`` apply from the next message."""
        self._settings = settings
        self._pairer.slop = settings.slop

    @property
    def counts(self) -> PairingCounts:
        return self._pairer.counts

    def waiting(self, stream: str) -> int:
        """Messages of ``stream`` still waiting for a partner."""
        return self._pairer.waiting(stream)
