"""The fusion node's health: OK / WARN / ERROR with a message naming the cause (no ROS import).

The node reports events (a message arrived on a stream, a problem kept a frame from being
fused, a fused image was published) and asks :meth:`Health.status` at each diagnostics tick.
The rules, with T = ``input_timeout``:

* OK only while both cameras send and a fused image was published in the last T seconds:
  health never says OK while nothing is fused.
* Waiting for the first message of a camera at start-up: WARN in diagnostics, logged at INFO
  once (the cameras may simply not be up yet).
* A camera that sent and went silent for T, or never sent though another one has for T:
  WARN "no data from <stream> camera", with the likely cause from the ROS graph
  (:meth:`Health.set_graph`): no publisher, an incompatible-QoS event (a QoS mismatch), or
  publishers that deliver nothing. A camera whose publisher has been on the graph for T
  without a message is reported so even when no camera ever sent.
* Both cameras send but nothing was published for T: WARN naming the most frequent recorded
  problem since the last fused image (e.g. which stream is malformed and why, stale pairs with
  the measured clock offset) or the node's guess (``idle_cause``); ERROR once it lasts 2 T.
* A persistent warning (e.g. an engine fallback, a precision that is not available) turns an
  otherwise OK status into WARN.

The status is logged on changes of (level, cause) only, never on a timer, so one cause cannot
swallow the report of another; each problem key is counted separately.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
import threading
import time
from typing import NamedTuple

OK, WARN, ERROR = 0, 1, 2
LEVEL_NAMES = ('OK', 'WARN', 'ERROR')


class Status(NamedTuple):
    """``level`` (OK/WARN/ERROR) and ``message``; ``log`` is the logger method name ('info',
    'warning', 'error') when the status changed and should be logged (as ``log_message``,
    which also says for how long a camera has been silent), else None."""

    level: int
    message: str
    log: str | None
    log_message: str = ''


@dataclass
class _Problem:
    count: int
    text: str
    last: float


class Health:
    """Thread-safe health state machine of a two-camera fusion node (see module docstring)."""

    def __init__(self, input_timeout: float, streams: tuple[str, ...] = ('thermal', 'rgb'),
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.input_timeout = input_timeout
        self._streams = streams
        self._clock = clock
        self._first_message: float | None = None   # of any stream
        self._lock = threading.Lock()
        self._last_seen: dict[str, float | None] = {s: None for s in streams}
        self._live_since: float | None = None      # since when every stream sends
        self._last_published: float | None = None
        self._problems: dict[str, _Problem] = {}   # since the last published image
        self._warnings: dict[str, str] = {}
        self._reported: tuple[int, str] | None = None
        self._graph: dict[str, tuple[int, str]] = {}   # stream -> (publishers, QoS event)
        self._graph_since: float | None = None          # first set_graph

    # -- events ------------------------------------------------------------------------------
    def set_graph(self, stream: str, publishers: int, incompatible_qos: str = '') -> None:
        """What the ROS graph shows for ``stream``'s topic: the number of publishers, and
        what the last incompatible-QoS event said ('' when none), so that a stream without
        data is reported with its likely cause (see :func:`silence_cause`)."""
        with self._lock:
            self._graph[stream] = (publishers, incompatible_qos)
            if self._graph_since is None:
                self._graph_since = self._clock()

    def received(self, stream: str) -> None:
        """A message arrived on ``stream`` (valid or not: the camera is sending)."""
        with self._lock:
            now = self._clock()
            self._last_seen[stream] = now
            if self._first_message is None:
                self._first_message = now

    def problem(self, key: str, text: str) -> None:
        """Something kept a frame from being fused; ``key`` groups problems of one cause
        (e.g. 'bad_thermal:encoding', 'stale'), ``text`` says what and why."""
        with self._lock:
            entry = self._problems.get(key)
            if entry is None:
                self._problems[key] = _Problem(1, text, self._clock())
            else:
                entry.count, entry.text, entry.last = entry.count + 1, text, self._clock()

    def published(self) -> None:
        """A fused image was published."""
        with self._lock:
            self._last_published = self._clock()
            self._problems.clear()

    def set_warning(self, key: str, text: str | None) -> None:
        """A persistent warning (``text``), or clear it with None."""
        with self._lock:
            if text is None:
                self._warnings.pop(key, None)
            else:
                self._warnings[key] = text

    # -- state -------------------------------------------------------------------------------
    def status(self, idle_cause: str = '') -> Status:
        """The current status; ``idle_cause`` is the caller's explanation for no output when
        no problem was recorded (e.g. stamps never within the pairing slop)."""
        with self._lock:
            level, message, key, quiet = self._evaluate(self._clock(), idle_cause)
            changed = self._reported != (level, key)
            self._reported = (level, key)
        if not changed:
            return Status(level, message, None)
        log = 'info' if quiet or level == OK else 'warning' if level == WARN else 'error'
        if key.startswith('silent:'):   # 'no data from X camera for more than T s; <causes>'
            head, sep, causes = message.partition(';')
            return Status(level, message, log,
                          f'{head} for more than {self.input_timeout} s{sep}{causes}')
        return Status(level, message, log, message)

    def _evaluate(self, now: float, idle_cause: str) -> tuple[int, str, str, bool]:
        """(level, message, cause key, log quietly) for the state at ``now``."""
        timeout = self.input_timeout
        never = [s for s, t in self._last_seen.items() if t is None]
        silent = [s for s, t in self._last_seen.items() if t is not None and now - t > timeout]
        waiting = self._first_message is None or (never and now - self._first_message <= timeout)
        if waiting and not self._undelivered(now, never):
            self._live_since = None
            return (WARN, f'waiting for the first message from {" and ".join(never)} camera',
                    'waiting:' + ','.join(never), True)
        if never or silent:
            self._live_since = None
            names = never + silent
            causes = [silence_cause(s, *self._graph[s], sent_before=s in silent)
                      for s in names if s in self._graph]
            key = 'silent:' + ','.join(names) + ''.join(f':{kind}' for kind, _ in causes)
            return (WARN, f'no data from {" and ".join(names)} camera' + ''.join(
                f'; {text}' for _, text in causes), key, False)
        if self._live_since is None:
            self._live_since = now
        if self._last_published is not None and now - self._last_published <= timeout:
            if self._warnings:
                return WARN, 'fusing; ' + '; '.join(self._warnings.values()), 'warning', False
            return OK, 'fusing', 'ok', False
        since = max(self._live_since, self._last_published or self._live_since)
        idle = now - since
        cause_key, cause = self._main_problem()
        if not cause_key:
            cause_key, cause = 'idle', idle_cause or 'no pair has been fused yet'
        if idle <= timeout:
            return WARN, f'waiting for the first fused image: {cause}', 'starting', True
        level = ERROR if idle > 2 * timeout else WARN
        return (level, f'nothing fused for {idle:.1f} s while both cameras send: {cause}',
                cause_key, False)

    def _undelivered(self, now: float, never: list[str]) -> bool:
        """Whether a stream that never sent has had a publisher (or an incompatible-QoS
        event) for longer than input_timeout: not a camera that is still starting."""
        if self._graph_since is None or now - self._graph_since <= self.input_timeout:
            return False
        return any(self._graph.get(s, (0, ''))[0] or self._graph.get(s, (0, ''))[1]
                   for s in never)

    def _main_problem(self) -> tuple[str, str]:
        """The most frequent problem since the last fused image (the latest on a tie)."""
        if not self._problems:
            return '', ''
        key = max(self._problems, key=lambda k: (self._problems[k].count,
                                                 self._problems[k].last))
        entry = self._problems[key]
        return key, f'{entry.text} ({entry.count} times)'


def silence_cause(stream: str, publishers: int, incompatible_qos: str,
                  sent_before: bool = False) -> tuple[str, str]:
    """(kind, text): why ``stream`` may have no data, from what the graph shows (see
    Health.set_graph) and whether it ``sent_before``; kind is 'qos', 'no_publisher',
    'stopped' (a publisher that delivered before went quiet) or 'no_delivery' (a publisher
    whose messages never arrived)."""
    if incompatible_qos:
        return 'qos', (f'{stream}: QoS mismatch, {incompatible_qos}; set input_reliability '
                       'auto or best_effort, or make the camera publish reliable')
    if publishers == 0:
        return 'no_publisher', (
            f'{stream}: no publisher on the topic (check the topic name or remapping, '
            'ROS_DOMAIN_ID and ROS_AUTOMATIC_DISCOVERY_RANGE, and that the camera runs)')
    if sent_before:
        return 'stopped', (f'{stream}: {publishers} publisher(s) on the topic, which delivered '
                           'before: the camera stopped sending or stalls')
    return 'no_delivery', (
        f'{stream}: {publishers} publisher(s) on the topic but no message arrives; likely '
        'causes: QoS reliability (a best-effort camera to a reliable subscription), DDS '
        'transport settings on one side only (FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA must be '
        'set for every process of the robot or for none), or large frames lost on best effort')
