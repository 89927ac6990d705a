"""Rolling latency percentiles, event rates, a newest-item mailbox and a throttled log for the
node's worker and diagnostics (no ROS import)."""

from __future__ import annotations

from collections import deque
import threading
import time

import numpy as np


class RollingStats:
    """Percentiles over the last ``window`` samples (e.g. per-stage latencies in ms)."""

    def __init__(self, window: int = 300) -> None:
        self._values: deque[float] = deque(maxlen=window)
        self._lock = threading.Lock()

    def add(self, value: float) -> None:
        with self._lock:
            self._values.append(value)

    def __len__(self) -> int:
        return len(self._values)

    def percentile(self, q: float) -> float:
        """The q-th percentile (0-100) of the window, NaN when empty."""
        with self._lock:
            values = np.fromiter(self._values, float, len(self._values))
        return float(np.percentile(values, q)) if values.size else float('nan')

    def values(self) -> list[float]:
        with self._lock:
            return list(self._values)


class RateMeter:
    """Events per second over a sliding time window, on a monotonic clock."""

    def __init__(self, window_s: float = 2.0, clock=time.monotonic) -> None:
        self._window = window_s
        self._clock = clock
        self._times: deque[float] = deque()
        self._lock = threading.Lock()

    def tick(self) -> None:
        now = self._clock()
        with self._lock:
            self._times.append(now)
            self._trim(now)

    def rate(self) -> float:
        """Events per second in the window; 0 when fewer than two events were seen."""
        now = self._clock()
        with self._lock:
            self._trim(now)
            if len(self._times) < 2:
                return 0.0
            span = max(now - self._times[0], self._times[-1] - self._times[0])
            return (len(self._times) - 1) / span if span > 0 else 0.0

    def _trim(self, now: float) -> None:
        while self._times and now - self._times[0] > self._window:
            self._times.popleft()


class LatestSlot:
    """A one-item mailbox: ``put`` replaces what is waiting, so a slow consumer always gets
    the newest item and never works through a backlog (bounded latency under load)."""

    def __init__(self) -> None:
        self._item = None
        self._closed = False
        self._cond = threading.Condition()

    def put(self, item) -> object | None:
        """Store ``item``; return the item it replaced (dropped), or None."""
        with self._cond:
            replaced, self._item = self._item, item
            self._cond.notify()
            return replaced

    def get(self, timeout: float | None = None) -> object | None:
        """Take the waiting item, waiting up to ``timeout`` s; None on timeout or close."""
        with self._cond:
            self._cond.wait_for(lambda: self._item is not None or self._closed, timeout)
            item, self._item = self._item, None
            return item

    def close(self) -> None:
        """Wake every waiting ``get``; later gets return None at once."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class ThrottledLog:
    """At most one message per key every ``period`` seconds, with a count of the others.

    ``logger`` is anything with ``error(message)`` and ``warning(message)`` methods (a
    logging.Logger or rclpy's node logger); thread-safe, so the worker and the node's timers
    can share one.
    """

    def __init__(self, logger, period: float = 5.0, clock=time.monotonic) -> None:
        self._logger = logger
        self._period = period
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def error(self, key: str, message: str) -> bool:
        """Log ``message`` as an error unless one with ``key`` was logged within the period;
        returns whether it was logged."""
        suffix = self._admit(key)
        if suffix is not None:      # one logger call per severity: rclpy refuses a mix
            self._logger.error(message + suffix)
        return suffix is not None

    def warning(self, key: str, message: str) -> bool:
        """As :meth:`error`, at warning level (expected events, e.g. a dropped stale pair)."""
        suffix = self._admit(key)
        if suffix is not None:
            self._logger.warning(message + suffix)
        return suffix is not None

    def _admit(self, key: str) -> str | None:
        """The suffix to log with a message for ``key`` now, or None to suppress it."""
        now = self._clock()
        with self._lock:
            if now - self._last.get(key, -1e9) < self._period:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return None
            extra = self._suppressed.pop(key, 0)
            self._last[key] = now
        return f' ({extra} more like this since the last report)' if extra else ''


class ChangeLog:
    """Parameter changes logged at most once per ``period`` seconds: the first at once, later
    ones merged (the newest value of each name, and how many sets they were) and logged by
    :meth:`flush` (call it on a timer) or with the next change after the period. A flood of
    sets thus costs one line per period, and the last values are always reported."""

    def __init__(self, log, period: float = 2.0, clock=time.monotonic) -> None:
        self._log = log                   # one call site: rclpy refuses a severity mix
        self._period = period
        self._clock = clock
        self._last = -1e9
        self._pending: dict = {}
        self._sets = 0
        self._lock = threading.Lock()

    def changed(self, values: dict) -> None:
        """One accepted parameter set (name -> new value)."""
        with self._lock:
            self._pending.update(values)
            self._sets += 1
        self.flush()

    def flush(self) -> None:
        """Log what changed since the last line, unless a line went out within the period."""
        with self._lock:
            now = self._clock()
            if not self._sets or now - self._last < self._period:
                return
            values, sets = self._pending, self._sets
            self._pending, self._sets, self._last = {}, 0, now
        how = '' if sets == 1 else f' ({sets} sets merged, newest values)'
        self._log(f'parameters changed{how}: {values}')
