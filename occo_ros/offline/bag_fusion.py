"""Bag-to-bag fusion behind ``occo-bag``: the thermal and RGB images of a recorded rosbag2
bag fused into a new bag.

Offline and without ROS: bags are read and written with the pure-Python ``rosbags`` library
(occo_ros.io.bags), mcap or sqlite3. Every step is the fusion node's own code, so a bag gives
the images the node would have published:

* the node's parameters (occo_ros.params) with the node's defaults, optionally read from a
  node parameter file (``--params-file``, ``/**:`` or ``occo_fusion:`` sections), and command
  line options on top;
* messages in the bag's log-time (receive-time) order go through the node's stream step
  (occo_ros.core.stream: the arrival checks - encoding, sizes, ``max_input_pixels``, a zero
  stamp - then pairing on their header stamps with ``slop`` and ``queue_size``);
* each pair goes through the node's frame step (FusionPipeline.fuse_frame: decode, including
  sensor_msgs/CompressedImage, fuse, encode) and is written as sensor_msgs/Image on
  ``--output-topic`` with the RGB message's header, in ``output_encoding``; when the bag has
  the RGB camera_info topic (beside the RGB topic, e.g. /rgb/camera_info), the newest one
  seen is adapted to the output crop and size and written on ``<output
  namespace>/camera_info`` with the same header. A message or pair the node would count as
  bad is counted and named here too (the first few of each kind are logged); it never ends
  the run.

Differences from the live node, all because a bag is not a live stream: every pair is fused
(no ``max_age`` staleness drop, no stamps-ahead-of-the-clock check, no dropping while the
network is busy, so a slow CPU yields more fused frames than the node would on it); a fused
message is logged at the log time of the message that completed its pair (when a live node
could first have fused it), which keeps the output bag in log-time order; topics come from
the command line (bags record absolute names; relative names get a leading '/').

Memory stays flat however long the bag: messages are streamed, at most ``queue_size`` per
camera wait for a partner, output is written as it is produced, and stage timings keep a
bounded sample.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
import logging
from pathlib import Path
import random
import sys
import threading
import time

import numpy as np
from rosbags.serde import SerdeError
from tqdm import tqdm

from occo_ros.core.pairing import Pair, stamp_ns
from occo_ros.core.stream import StreamStep
from occo_ros.engines import EngineSpec
from occo_ros.io.bags import (
    CAMERA_INFO,
    COMPRESSED_IMAGE,
    IMAGE,
    BagError,
    InputBag,
    OutputBag,
    camera_info_message,
    check_output_path,
    image_message,
    serialize,
    sweep_temporaries,
)
from occo_ros.params import (
    FusionSettings,
)
from occo_ros.pipeline import FusionPipeline, create_pipeline

_LOG = logging.getLogger('occo_ros.offline.bag_fusion')

STAGES = ('read', 'decode', 'preprocess', 'inference', 'compose', 'write', 'per_pair')
IMAGE_TYPES = (IMAGE, COMPRESSED_IMAGE)
_WARNINGS_PER_KIND = 3


class Interrupted(Exception):
    """fuse_bag stopped because its ``stop`` event was set; nothing was written."""


def absolute_topic(name: str) -> str:
    """``name`` as an absolute topic name ('fused/image' -> '/fused/image')."""
    name = name.strip()
    if name.strip('/') == '':
        raise ValueError(f'topic name {name!r} is empty')
    return name if name.startswith('/') else '/' + name


def camera_info_beside(image_topic: str) -> str:
    """The camera_info topic of an image topic ('/rgb/image_raw' and its image_transport
    '/rgb/image_raw/compressed' -> '/rgb/camera_info')."""
    base = image_topic[:-len('/compressed')] if image_topic.endswith('/compressed') \
        else image_topic
    return base.rsplit('/', 1)[0] + '/camera_info'


# -- configuration ---------------------------------------------------------------------------
@dataclass(frozen=True)
class BagTopics:
    """Input and output topics (made absolute). ``rgb_camera_info`` None: beside ``rgb``."""

    thermal: str
    rgb: str
    output: str = '/fused/image'
    rgb_camera_info: str | None = None

    def __post_init__(self) -> None:
        for name in ('thermal', 'rgb', 'output', 'rgb_camera_info'):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, absolute_topic(value))
        if self.thermal == self.rgb:
            raise ValueError(f'thermal and RGB topic are the same: {self.thermal}')
        if self.output in (self.thermal, self.rgb):
            raise ValueError(f'output topic {self.output} is an input topic')

    @property
    def rgb_info(self) -> str:
        return self.rgb_camera_info or camera_info_beside(self.rgb)

    @property
    def thermal_info(self) -> str:
        return camera_info_beside(self.thermal)

    @property
    def output_info(self) -> str:
        return camera_info_beside(self.output)


# -- results ---------------------------------------------------------------------------------
class StageTimes:
    """Per-stage durations in ms: exact count and sum, and the median of a uniform random
    sample of at most ``capacity`` values per stage (exact up to that many; reservoir
    sampling keeps memory flat on long bags)."""

    def __init__(self, capacity: int = 10_000, seed: int = 0) -> None:
        self.capacity = capacity
        self._rng = random.Random(seed)
        self._samples: dict[str, array] = {}
        self._count: dict[str, int] = {}
        self._sum: dict[str, float] = {}

    def add(self, stage: str, ms: float) -> None:
        sample = self._samples.setdefault(stage, array('d'))
        seen = self._count.get(stage, 0) + 1
        self._count[stage] = seen
        self._sum[stage] = self._sum.get(stage, 0.0) + ms
        if len(sample) < self.capacity:
            sample.append(ms)
        else:
            slot = self._rng.randrange(seen)
            if slot < self.capacity:
                sample[slot] = ms

    def median(self, stage: str) -> float:
        """Median ms of ``stage``; NaN when it never ran."""
        sample = self._samples.get(stage)
        return float(np.median(sample)) if sample else float('nan')

    def total(self, stage: str) -> float:
        """Sum of every ``stage`` duration in ms."""
        return self._sum.get(stage, 0.0)

    def count(self, stage: str) -> int:
        return self._count.get(stage, 0)


@dataclass
class BagSummary:
    """What :func:`fuse_bag` did. ``received``/``unpaired``/``bad`` are keyed by 'thermal' and
    'rgb' (``bad`` also by 'stamp': refused on arrival for its stamp, 'pair': the frame step
    rejected the pair, and 'engine': inference failed on it); ``bad_kinds`` counts the
    skipped messages by '<topic>: <reason>'. ``seconds`` is the wall time of the message loop
    (engine loading excluded); ``damage`` says where a damaged input stopped being read."""

    input: str
    output: str
    engine: str = ''
    received: dict[str, int] = field(default_factory=lambda: {'thermal': 0, 'rgb': 0})
    pairs: int = 0
    fused: int = 0
    unpaired: dict[str, int] = field(default_factory=lambda: {'thermal': 0, 'rgb': 0})
    time_jumps: int = 0
    bad: dict[str, int] = field(
        default_factory=lambda: {'thermal': 0, 'rgb': 0, 'stamp': 0, 'pair': 0, 'engine': 0})
    bad_kinds: dict[str, int] = field(default_factory=dict)
    camera_info: int = 0
    copied: int = 0
    load_seconds: float = 0.0
    seconds: float = 0.0
    times: StageTimes = field(default_factory=StageTimes)
    damage: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def fps(self) -> float:
        """Fused pairs per second of the message loop."""
        return self.fused / self.seconds if self.seconds > 0 else 0.0

    def report(self) -> str:
        """A few human-readable lines."""
        lines = [
            f'occo-bag: fused {self.fused} pairs into {self.output} in {self.seconds:.1f} s '
            f'({self.fps:.1f} pairs/s; engine loaded in {self.load_seconds:.1f} s)',
            f'  read {self.received["thermal"]} thermal + {self.received["rgb"]} RGB messages; '
            f'{self.pairs} pairs; unpaired thermal {self.unpaired["thermal"]}, RGB '
            f'{self.unpaired["rgb"]}; time jumps {self.time_jumps}',
            f'  skipped: thermal {self.bad["thermal"]}, RGB {self.bad["rgb"]}, stamps '
            f'{self.bad["stamp"]}, pairs {self.bad["pair"]}, inference failures '
            f'{self.bad["engine"]}'
            + ''.join(f'; {k} x{v}' for k, v in self.bad_kinds.items()),
            f'  written: {self.fused} fused images, {self.camera_info} camera_info, '
            f'{self.copied} copied input messages',
            f'  engine: {self.engine}',
            '  median ms: ' + ' | '.join(f'{s} {self.times.median(s):.2f}' for s in STAGES
                                         if self.times.count(s)),
        ]
        if self.damage:
            lines.append(f'  WARNING: the input is damaged; read up to: {self.damage}')
        return '\n'.join(lines)


# -- the run ---------------------------------------------------------------------------------
def _format_stamp(ns: int) -> str:
    return f'{ns // 1_000_000_000}.{ns % 1_000_000_000:09d} s'


def _topic_list(bag: InputBag) -> str:
    return '; '.join(f'{t.name} ({t.msgtype}, {t.count} messages)'
                     for t in sorted(bag.topics.values(), key=lambda t: t.name)) or 'none'


def check_topics(bag: InputBag, topics: BagTopics) -> bool:
    """Raise BagError unless the bag has both image topics with image types; returns whether
    the RGB camera_info topic is there (an explicitly named one must be)."""
    missing = [t for t in (topics.thermal, topics.rgb) if t not in bag.topics]
    if topics.rgb_camera_info and topics.rgb_camera_info not in bag.topics:
        missing.append(topics.rgb_camera_info)
    if missing:
        raise BagError(f'{bag.path} has no topic {" and no topic ".join(missing)}; its topics: '
                       f'{_topic_list(bag)}')
    for topic in (topics.thermal, topics.rgb):
        if bag.topics[topic].msgtype not in IMAGE_TYPES:
            raise BagError(f'topic {topic} has type {bag.topics[topic].msgtype}; expected '
                           f'{" or ".join(IMAGE_TYPES)}')
    info = bag.topics.get(topics.rgb_info)
    if info is not None and info.msgtype != CAMERA_INFO:
        raise BagError(f'camera_info topic {topics.rgb_info} has type {info.msgtype}; expected '
                       f'{CAMERA_INFO} (name another with --rgb-camera-info-topic)')
    return info is not None


class _BagFusion:
    """State of one fuse_bag run: the pairer, the newest RGB camera_info, counters, timings."""

    def __init__(self, bag: InputBag, out: OutputBag, pipeline: FusionPipeline,
                 settings: FusionSettings, topics: BagTopics, summary: BagSummary,
                 has_info: bool, copy_inputs: bool, log: Callable[[str], None],
                 stop: threading.Event | None) -> None:
        self.bag, self.out, self.pipeline, self.settings = bag, out, pipeline, settings
        self.topics, self.summary, self.log, self.stop = topics, summary, log, stop
        self.streams = {topics.thermal: 'thermal', topics.rgb: 'rgb'}
        self.has_info = has_info
        self.read_topics = [topics.thermal, topics.rgb]
        if self.has_info:
            self.read_topics.append(topics.rgb_info)
        self.copies = {}
        if copy_inputs:
            if topics.thermal_info in bag.topics and topics.thermal_info != topics.rgb_info:
                self.read_topics.append(topics.thermal_info)
            for name in self.read_topics:
                if name in (topics.output, topics.output_info):
                    raise BagError(f'--copy-inputs would write {name} twice: it is also an '
                                   'output topic; choose another --output-topic')
                t = bag.topics[name]
                self.copies[name] = out.add_topic(name, t.msgtype, t.msgdef, t.digest, t.qos)
        self.image_conn = out.add_topic(topics.output, IMAGE)
        self.info_conn = out.add_topic(topics.output_info, CAMERA_INFO) if self.has_info \
            else None
        self.stream = StreamStep(settings)
        self.camera_info = None
        # Where each kind of frame problem (FrameProblem.stream) comes from, for the log.
        both = f'{topics.thermal} + {topics.rgb}'
        self._problem_topic = {'thermal': topics.thermal, 'rgb': topics.rgb,
                               'camera_info': topics.rgb_info, 'pair': both, 'engine': both}
        self.stamp_range: dict[str, list[int]] = {}
        self._warned: dict[tuple[str, str], int] = {}
        self._last_output = 0.0

    def run(self, progress: bool) -> None:
        total = sum(self.bag.topics[t].count for t in (self.topics.thermal, self.topics.rgb))
        bar = tqdm(total=total, unit='msg', desc='occo-bag', disable=not progress,
                   file=sys.stderr, dynamic_ncols=True)
        start = self._last_output = time.perf_counter()
        messages = self.bag.messages(self.read_topics)
        try:
            while True:
                if self.stop is not None and self.stop.is_set():
                    raise Interrupted('stopped on request after '
                                      f'{sum(self.summary.received.values())} image messages')
                begin = time.perf_counter()
                item = next(messages, None)
                if item is None:
                    break
                self._handle(*item, begin, bar)
        finally:
            bar.close()
        self.summary.seconds = time.perf_counter() - start
        counts = self.stream.counts
        self.summary.pairs, self.summary.time_jumps = counts.paired, counts.time_jumps
        for stream in ('thermal', 'rgb'):  # the ones still waiting at the end never paired
            self.summary.unpaired[stream] = (getattr(counts, f'unpaired_{stream}')
                                             + self.stream.waiting(stream))
        self.summary.damage = self.bag.damage

    def _handle(self, topic: str, log_time: int, raw: bytes, begin: float, bar: tqdm) -> None:
        if topic in self.copies:
            self.out.write(self.copies[topic], log_time, raw)
            self.summary.copied += 1
        if topic == self.topics.rgb_info and self.has_info:
            try:
                self.camera_info = self.bag.deserialize(topic, raw)
            except SerdeError as exc:
                self._skip('camera_info', topic, f'log time {_format_stamp(log_time)}', 'cdr',
                           exc)
            return
        stream = self.streams.get(topic)
        if stream is None:  # a copied thermal camera_info
            return
        bar.update()
        self.summary.received[stream] += 1
        try:
            msg = self.bag.deserialize(topic, raw)
        except SerdeError as exc:
            self._skip(stream, topic, f'log time {_format_stamp(log_time)}', 'cdr', exc)
            return
        stamp = stamp_ns(msg.header)
        low_high = self.stamp_range.setdefault(stream, [stamp, stamp])
        low_high[0], low_high[1] = min(low_high[0], stamp), max(low_high[1], stamp)
        self.summary.times.add('read', (time.perf_counter() - begin) * 1e3)
        # The node's stream step: a message the node would refuse never enters pairing.
        # No node clock (0): stamps ahead of it are a live-stream check, like max_age.
        refusal, pair = self.stream.add(stream, stamp, msg)
        if refusal is not None:
            self._skip('stamp' if refusal.counter == 'bad_stamp' else stream, topic,
                       f'stamp {_format_stamp(stamp)}', refusal.kind, refusal.message)
            return
        if pair is not None:
            self._fuse(pair, log_time)

    def _fuse(self, pair: Pair, log_time: int) -> None:
        """The node's frame step on one pair; a frame it cannot fuse is counted, never fatal."""
        result = self.pipeline.fuse_frame(pair.thermal, pair.rgb, self.camera_info,
                                          self.settings.output_encoding)
        for problem in result.problems:
            self._skip(problem.stream, self._problem_topic[problem.stream],
                       f'stamps {_format_stamp(pair.thermal_stamp_ns)} / '
                       f'{_format_stamp(pair.rgb_stamp_ns)}', problem.kind, problem.message)
        if not result.ok:
            return
        start = time.perf_counter()
        header = pair.rgb.header
        self.out.write(self.image_conn, log_time, serialize(
            image_message(result.image_fields(), pair.rgb_stamp_ns, header.frame_id)))
        self.summary.fused += 1
        if result.camera_info is not None:
            fields = result.camera_info
            msg = camera_info_message(fields['width'], fields['height'], fields['k'],
                                      fields['p'], pair.rgb_stamp_ns, header.frame_id,
                                      fields['distortion_model'], fields['d'], fields['r'])
            self.out.write(self.info_conn, log_time, serialize(msg))
            self.summary.camera_info += 1
        done = time.perf_counter()
        times = self.summary.times
        for stage in ('decode', 'preprocess', 'inference', 'compose'):
            times.add(stage, result.times_ms[stage])
        times.add('write', (done - start) * 1e3)
        times.add('per_pair', (done - self._last_output) * 1e3)
        self._last_output = done

    def _skip(self, kind: str, topic: str, where: str, reason: str,
              error: Exception | str) -> None:
        """Count a message (or pair) that cannot be used; warn for the first few of a kind."""
        if kind in self.summary.bad:
            self.summary.bad[kind] += 1
        key = f'{topic}: {reason}'
        self.summary.bad_kinds[key] = self.summary.bad_kinds.get(key, 0) + 1
        seen = self._warned.get((topic, reason), 0)
        self._warned[(topic, reason)] = seen + 1
        if seen < _WARNINGS_PER_KIND:
            more = (' (further ones like this are counted in the summary)'
                    if seen == _WARNINGS_PER_KIND - 1 else '')
            self.log(f'skipping {kind} on {topic} at {where}: {error}{more}')

    def nothing_fused(self) -> str:
        """Why no pair was fused, with what would help."""
        ranges = '; '.join(f'{s} stamps {_format_stamp(lo)} .. {_format_stamp(hi)}'
                           for s, (lo, hi) in self.stamp_range.items())
        s = self.summary
        why = (f'no pair was fused: read {s.received["thermal"]} thermal and '
               f'{s.received["rgb"]} RGB messages ({ranges or "no stamps"}), formed {s.pairs} '
               f'pairs (|dt| < slop {self.settings.slop} s; see --slop), skipped '
               f'{sum(s.bad.values())}')
        if s.damage:
            why += f'; the input is damaged: {s.damage}'
        return why


def fuse_bag(input_bag: str | Path, output_bag: str | Path, settings: FusionSettings,
             topics: BagTopics, *, engine: EngineSpec | None = None,
             pipeline: FusionPipeline | None = None,
             storage: str = 'mcap', copy_inputs: bool = False, overwrite: bool = False,
             progress: bool = False, log: Callable[[str], None] | None = None,
             stop: threading.Event | None = None) -> BagSummary:
    """Fuse every thermal/RGB pair of ``input_bag`` into the new bag ``output_bag``.

    Args:
        input_bag: rosbag2 directory, or a single .mcap/.db3 file; never modified.
        output_bag: rosbag2 directory to create ('mcap' or 'sqlite3' ``storage``); it
            appears only when complete (see occo_ros.io.bags.OutputBag).
        settings: the fusion settings (pairing, arrival checks, geometry, thermal, encoding).
        topics: input and output topics.
        engine: the engine to load when no ``pipeline`` is given.
        pipeline: an existing pipeline to use (its thermal normaliser state carries over);
            None builds one from ``settings`` and ``engine`` and closes its engine at the end.
        copy_inputs: also copy the two image topics and their camera_info topics.
        overwrite: replace an existing bag at ``output_bag`` that occo-bag wrote (only once
            the new one is done).
        progress: show a tqdm bar on stderr (total: messages of the two image topics).
        log: receives warnings (skipped messages, damaged input); default: logging.
        stop: when set (e.g. by a signal handler), the run stops at the next message and
            raises :class:`Interrupted`; checked between messages, so no exception is ever
            raised inside library code.

    Returns:
        The :class:`BagSummary`; ``damage`` is set when the input could be read only in part
        (the output then holds what was read).

    Raises:
        OutputError: the output overlaps the input, exists without ``overwrite``, or is not
            a bag occo-bag wrote (occo_ros.util.output_safety).
        BagError: unreadable input, missing or mistyped topics (the message lists the bag's
            topics), or no pair fused at all (the message says why; no output is written).
        EngineError, ValueError: the model cannot be loaded.
        Interrupted: ``stop`` was set; no output is written.
    """
    if (engine is None) == (pipeline is None):
        raise ValueError('fuse_bag needs one of engine (an EngineSpec) and pipeline')
    log = log or _LOG.warning
    input_path, output_path = Path(input_bag), Path(output_bag)
    sweep_temporaries(output_path, log)   # a killed run's leftovers, --overwrite or not
    check_output_path(output_path, overwrite, protect=[input_path])  # before any slow work
    summary = BagSummary(str(input_path), str(output_path))
    with InputBag(input_path) as bag:
        has_info = check_topics(bag, topics)
        for note in bag.notes:
            log(note)
        summary.notes = list(bag.notes)
        own_pipeline = pipeline is None
        start = time.perf_counter()
        if own_pipeline:
            pipeline = create_pipeline(settings, engine, logger=_LOG)
        summary.load_seconds = time.perf_counter() - start
        info = pipeline.engine.info
        summary.engine = f'{info.backend} on {info.device}, {info.precision}'
        try:
            with OutputBag(output_path, storage, overwrite, protect=[input_path],
                           log=log) as out:
                run = _BagFusion(bag, out, pipeline, settings, topics, summary, has_info,
                                 copy_inputs, log, stop)
                run.run(progress)
                if summary.fused == 0:
                    raise BagError(run.nothing_fused())
                out.commit()
        finally:
            if own_pipeline:
                pipeline.engine.close()
    if summary.damage:
        log(f'the input bag is damaged; fused what could be read up to: {summary.damage}')
    return summary


# -- command line ----------------------------------------------------------------------------
