"""rosbag2 bags read and written without ROS, through the pure-Python ``rosbags`` library.

Reading (:class:`InputBag`) streams messages in log-time (receive-time) order from a bag
directory (``metadata.yaml`` + ``.mcap``/``.db3`` files, split bags included) or from a single
``.mcap``/``.db3`` file. Damaged bags are read as far as they can be:

* an ``.mcap`` file without its summary and footer (the recorder was killed or the disk
  filled up), which rosbags refuses, is read record by record in file order with the official
  ``mcap`` StreamReader, up to its last complete chunk;
* a bag directory without ``metadata.yaml`` (``ros2 bag record`` stopped with SIGTERM) is read
  through its storage files in name order;
* a read error part-way through a file (a truncated or corrupt chunk) ends that file: what
  came before it is kept and :attr:`InputBag.damage` says what happened.

Messages are deserialised with the ROS 2 Kilted type definitions, or with the bag's own
definition of a type when its type hash differs from Kilted's.

Writing (:class:`OutputBag`) never leaves a half-written bag where the output should be: the
bag is written into a hidden temporary directory beside the output and moved into place only
by :meth:`OutputBag.commit`; anything else (an error, Ctrl-C) removes the temporary directory.
The output follows the tools' one output rule (occo_ros.util.output_safety): apart from the input,
and an existing bag is replaced only with ``overwrite`` and only when occo-bag wrote it (its
manifest lists every file in the directory).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
import functools
import glob
import logging
from pathlib import Path
import re
import shutil
import tempfile
from typing import Any

import numpy as np
from rosbags.interfaces import Connection, MessageDefinitionFormat
from rosbags.rosbag2 import Reader, ReaderError, StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
import yaml

from occo_ros.util.atomic_file import remove_stale_temporaries, temporary_prefix
from occo_ros.util.output_safety import check_folder_output, claim, read_manifest

IMAGE = 'sensor_msgs/msg/Image'
COMPRESSED_IMAGE = 'sensor_msgs/msg/CompressedImage'
CAMERA_INFO = 'sensor_msgs/msg/CameraInfo'
STORAGES = {'mcap': StoragePlugin.MCAP, 'sqlite3': StoragePlugin.SQLITE3}
STORAGE_SUFFIXES = ('.mcap', '.db3')
TOOL = 'occo-bag'
_LOG = logging.getLogger('occo_ros.cli.bag')


class BagError(Exception):
    """A bag cannot be read or written; the message names the path and the problem."""


@dataclass(frozen=True)
class TopicInfo:
    """One topic of an input bag.

    ``count`` is the number of messages the bag holds (for a scanned damaged file: the number
    that can be read). ``msgdef``/``digest`` are the bag's own type definition and RIHS01 hash
    ('' when the bag does not store them), ``qos`` the offered QoS profiles it recorded.
    """

    name: str
    msgtype: str
    count: int
    msgdef: str = ''
    digest: str = ''
    qos: tuple = ()


@functools.lru_cache(maxsize=1)
def kilted_typestore():
    """The rosbags type store of ROS 2 Kilted (its type hashes equal rclpy Kilted's)."""
    return get_typestore(Stores.ROS2_KILTED)


def _header(stamp: int, frame_id: str) -> Any:
    types = kilted_typestore().types
    sec, nanosec = divmod(int(stamp), 1_000_000_000)
    return types['std_msgs/msg/Header'](
        stamp=types['builtin_interfaces/msg/Time'](sec=sec, nanosec=nanosec), frame_id=frame_id)


def serialize(msg: Any) -> memoryview:
    """A message built from :func:`kilted_typestore` types as CDR bytes."""
    return kilted_typestore().serialize_cdr(msg, msg.__msgtype__)


def image_message(fields: dict, stamp: int, frame_id: str) -> Any:
    """A sensor_msgs/Image from ``codec.array_to_image_fields`` output and a stamp in ns."""
    data = np.frombuffer(fields['data'], np.uint8)
    return kilted_typestore().types[IMAGE](header=_header(stamp, frame_id),
                                           **dict(fields, data=data))


def compressed_image_message(data: bytes, format: str, stamp: int, frame_id: str) -> Any:
    """A sensor_msgs/CompressedImage holding ``data`` (e.g. JPEG bytes), ``format`` 'jpeg'."""
    return kilted_typestore().types[COMPRESSED_IMAGE](
        header=_header(stamp, frame_id), format=format, data=np.frombuffer(data, np.uint8))


def camera_info_message(width: int, height: int, k: np.ndarray, p: np.ndarray, stamp: int,
                        frame_id: str, distortion_model: str = 'plumb_bob',
                        d: Sequence[float] = (), r: Sequence[float] | None = None) -> Any:
    """A sensor_msgs/CameraInfo: K (3x3) and P (3x4) in pixels, R defaults to identity;
    binning and ROI are left at zero (full resolution, full image)."""
    types = kilted_typestore().types
    r = np.eye(3) if r is None else r
    return types[CAMERA_INFO](
        header=_header(stamp, frame_id), height=int(height), width=int(width),
        distortion_model=distortion_model, d=np.asarray(d, np.float64).ravel(),
        k=np.asarray(k, np.float64).ravel(), r=np.asarray(r, np.float64).ravel(),
        p=np.asarray(p, np.float64).ravel(), binning_x=0, binning_y=0,
        roi=types['sensor_msgs/msg/RegionOfInterest'](
            x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))


def _natural_key(path: Path) -> list:
    """'bag_10.mcap' after 'bag_2.mcap', as rosbag2 numbers split files."""
    return [int(part) if part.isdigit() else part for part in re.split(r'(\d+)', path.name)]


class _IndexedFile:
    """A bag directory or storage file that rosbags opens (summary/metadata intact)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._reader = Reader(path)
        self._reader.open()
        self.topics: dict[str, TopicInfo] = {}
        for conn in self._reader.connections:
            known = self.topics.get(conn.topic)
            count = conn.msgcount + (known.count if known else 0)
            msgdef = conn.msgdef.data if conn.msgdef.format != MessageDefinitionFormat.NONE \
                else ''
            self.topics[conn.topic] = TopicInfo(
                conn.topic, conn.msgtype, count, msgdef, conn.digest,
                tuple(getattr(conn.ext, 'offered_qos_profiles', ())))
            if known and known.msgtype != conn.msgtype:
                self.close()
                raise BagError(f'{path}: topic {conn.topic} carries two types, '
                               f'{known.msgtype} and {conn.msgtype}; cannot tell them apart')

    def messages(self, topics: Collection[str]) -> Iterator[tuple[str, int, bytes]]:
        wanted = [c for c in self._reader.connections if c.topic in topics]
        if not wanted:  # rosbags reads every topic when given no connection
            return
        for conn, log_time, raw in self._reader.messages(connections=wanted):
            yield conn.topic, log_time, raw

    def close(self) -> None:
        if self._reader.is_open:
            self._reader.close()


class _ScannedMcap:
    """An .mcap file without usable summary/footer, read record by record in file order.

    The constructor scans the file once for its channels and the number of complete messages
    (so progress bars know the total) and records where reading stopped in ``damage``;
    :meth:`messages` reads it again and stops at the same place.
    """

    def __init__(self, path: Path, reason: str) -> None:
        try:
            from mcap import records, stream_reader
        except ImportError as exc:
            raise BagError(f'cannot read {path}: {reason}; install the mcap package '
                           '(pip install mcap) to recover what the file holds') from exc
        self._records_module, self._stream_reader = records, stream_reader
        self.path = path
        self.damage: str | None = None
        self._channels: dict[int, tuple[str, str, str]] = {}
        counts: dict[int, int] = {}
        for channel_id, _, _ in self._messages():
            counts[channel_id] = counts.get(channel_id, 0) + 1
        self.topics = {topic: TopicInfo(topic, msgtype, counts.get(cid, 0), msgdef)
                       for cid, (topic, msgtype, msgdef) in self._channels.items()}

    def _messages(self) -> Iterator[tuple[int, int, bytes]]:
        """(channel id, log time, data) up to the first incomplete or corrupt record, which
        the mcap reader reports with an exception (EndOfFile, CRCValidationError, ...)."""
        records = self._records_module
        schemas: dict[int, tuple[str, str]] = {}
        with self.path.open('rb') as stream:
            reader = self._stream_reader.StreamReader(stream, skip_magic=False,
                                                      emit_chunks=False, validate_crcs=True)
            iterator = iter(reader.records)
            while True:
                try:
                    record = next(iterator)
                except StopIteration:
                    return
                except Exception as exc:  # whatever the damage is, the file ends here
                    self.damage = f'{self.path}: {type(exc).__name__} {exc}'.rstrip()
                    return
                if isinstance(record, records.Message):
                    yield record.channel_id, record.log_time, record.data
                elif isinstance(record, records.Schema):
                    schemas[record.id] = (record.name, record.data.decode('utf-8', 'replace'))
                elif isinstance(record, records.Channel):
                    name, msgdef = schemas.get(record.schema_id, ('', ''))
                    self._channels[record.id] = (record.topic, name, msgdef)

    def messages(self, topics: Collection[str]) -> Iterator[tuple[str, int, bytes]]:
        for channel_id, log_time, data in self._messages():
            topic = self._channels[channel_id][0]
            if topic in topics:
                yield topic, log_time, data

    def close(self) -> None:
        pass


class InputBag:
    """A rosbag2 bag opened for reading; see the module docstring for damaged bags.

    Attributes:
        topics: name -> :class:`TopicInfo` over all storage files.
        notes: how the bag was read when that is not the normal way (for the user).
        damage: set when reading stopped early in some file (what and where), else None.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.notes: list[str] = []
        self.damage: str | None = None
        self._stores: dict[str, Any] = {}
        if not self.path.exists():
            raise BagError(f'input bag {self.path} does not exist')
        self._parts = self._open_parts()
        self.topics: dict[str, TopicInfo] = {}
        for part in self._parts:
            for name, info in part.topics.items():
                known = self.topics.get(name)
                if known and known.msgtype != info.msgtype:
                    self.close()
                    raise BagError(f'{self.path}: topic {name} is {known.msgtype} in one file '
                                   f'and {info.msgtype} in another')
                count = info.count + (known.count if known else 0)
                self.topics[name] = TopicInfo(name, info.msgtype, count, info.msgdef,
                                              info.digest, info.qos)
            if getattr(part, 'damage', None):
                self.damage = part.damage

    def _open_parts(self) -> list:
        path = self.path
        if path.is_dir() and (path / 'metadata.yaml').is_file():
            try:
                return [_IndexedFile(path)]
            except (ReaderError, OSError, KeyError, ValueError) as exc:
                self.notes.append(f'{path}: rosbags cannot open the bag ({exc}); reading its '
                                  'storage files one by one')
        elif path.is_dir():
            self.notes.append(f'{path} has no metadata.yaml (was the recorder killed?); '
                              'reading its storage files in name order')
        if not path.is_dir():
            return [self._open_file(path)]
        files = sorted((p for p in path.iterdir() if p.suffix in STORAGE_SUFFIXES),
                       key=_natural_key)
        if not files:
            missing = _missing_storage(path)
            if missing:
                raise BagError(f'{path}: metadata.yaml lists {", ".join(missing)}, which is '
                               'not there: the bag is incomplete (copied without its storage '
                               'files?)')
            raise BagError(f'{path} is neither a bag directory with metadata.yaml nor holds '
                           f'storage files ({", ".join(STORAGE_SUFFIXES)})')
        parts: list = []
        try:
            for file in files:
                parts.append(self._open_file(file))
        except BaseException:
            for part in parts:
                part.close()
            raise
        return parts

    def _open_file(self, path: Path):
        if path.suffix not in STORAGE_SUFFIXES:
            raise BagError(f'{path} is not a rosbag2 bag: expected a bag directory or a file '
                           f'ending in {" or ".join(STORAGE_SUFFIXES)}')
        try:
            return _IndexedFile(path)
        except (ReaderError, OSError, KeyError, ValueError) as exc:
            if path.suffix != '.mcap':
                raise BagError(f'cannot read {path}: {exc}') from exc
            reason = str(exc)
        scanned = _ScannedMcap(path, reason)
        if not scanned.topics:
            raise BagError(f'cannot read {path}: {reason} (and no channel could be recovered '
                           'by scanning it)')
        self.notes.append(f'{path} has no usable index ({reason}): the recorder probably '
                          'stopped before closing it; reading its records in file order')
        return scanned

    def typestore(self, topic: str) -> Any:
        """The type store that deserialises ``topic``: Kilted's, or one built from the bag's
        own definition when the bag's type hash differs from Kilted's."""
        if topic not in self._stores:
            info = self.topics[topic]
            kilted = kilted_typestore()
            known = info.msgtype in kilted.types
            if known and (not info.digest or info.digest == kilted.hash_rihs01(info.msgtype)):
                self._stores[topic] = kilted
            elif info.msgdef and not info.msgdef.startswith('=' * 80 + '\nIDL: '):
                store = get_typestore(Stores.EMPTY)
                store.register(get_types_from_msg(info.msgdef, info.msgtype))
                self._stores[topic] = store
            elif known:
                self._stores[topic] = kilted
            else:
                raise BagError(f'{self.path}: topic {topic} has type {info.msgtype}, which is '
                               'not a ROS 2 Kilted type, and the bag stores no definition')
        return self._stores[topic]

    def deserialize(self, topic: str, raw: bytes | memoryview) -> Any:
        """The message ``raw`` of ``topic``; raises rosbags' SerdeError for corrupt bytes."""
        return self.typestore(topic).deserialize_cdr(raw, self.topics[topic].msgtype)

    def messages(self, topics: Collection[str]) -> Iterator[tuple[str, int, bytes]]:
        """(topic, log time ns, raw CDR bytes) of ``topics``, file by file in log-time order.

        A read error ends the file it happens in (recorded in :attr:`damage`); the next file
        of a split bag is still read.
        """
        topics = set(topics)
        for part in self._parts:
            stream = part.messages(topics)
            while True:
                try:
                    item = next(stream)
                except StopIteration:
                    break
                except Exception as exc:  # any storage-layer failure: the file is damaged here
                    self.damage = f'{part.path}: {type(exc).__name__}: {exc}'
                    break
                yield item

    def close(self) -> None:
        for part in self._parts if hasattr(self, '_parts') else ():
            part.close()

    def __enter__(self) -> InputBag:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def check_output_path(path: Path, overwrite: bool, protect: Sequence[Path] = ()) -> None:
    """Raise unless a bag may be written at ``path``: BagError for a storage-file name;
    occo_ros.util.output_safety's OutputError when it overlaps a ``protect``-ed path (the input),
    exists without ``overwrite``, or is not a bag occo-bag wrote (never delete anything
    else). An empty directory is fine."""
    if path.suffix in STORAGE_SUFFIXES:
        raise BagError(f'output {path}: occo-bag writes a rosbag2 bag directory (metadata.yaml '
                       f'+ storage file); give a directory name without {path.suffix}')
    check_folder_output(path, TOOL, overwrite, protect)


def _missing_storage(path: Path) -> list[str]:
    """The storage files the bag directory's metadata.yaml lists that are not there (empty
    when it lists none or cannot be read)."""
    try:
        if (path / 'metadata.yaml').stat().st_size > 1 << 20:   # a real one is a few kB
            return []
        info = yaml.safe_load((path / 'metadata.yaml').read_text())
        listed = info['rosbag2_bagfile_information']['relative_file_paths']
    except (OSError, ValueError, yaml.YAMLError, KeyError, TypeError):
        return []
    if not isinstance(listed, list):
        return []
    return [str(name) for name in listed if not (path / str(name)).is_file()]


#: Suffix of OutputBag's temporary folder ``.<name>.<pid>.<random>.occo-bag-tmp``.
TEMP_SUFFIX = '.occo-bag-tmp'


def sweep_temporaries(path: Path, log: Callable[[str], None] | None = None) -> None:
    """Remove what a killed occo-bag run left beside ``path`` (its temporary folder: the
    pid in the name is gone, the manifest names occo-bag); name, in one line, one that
    cannot be recognised as such and how to remove it (``log``: default a warning)."""
    log = log or _LOG.warning
    for entry in remove_stale_temporaries(
            path, TEMP_SUFFIX, lambda entry: (read_manifest(entry) or {}).get('tool') == TOOL):
        log(f'removed {entry}, the temporary folder of an earlier {TOOL} run that was killed')
    unknown = [entry for entry in path.parent.glob(f'.{glob.escape(path.name)}.*{TEMP_SUFFIX}')
               if entry.is_dir() and (read_manifest(entry) or {}).get('tool') != TOOL]
    for entry in unknown:
        log(f'{entry} looks like the temporary folder of an earlier {TOOL} run but holds no '
            f'{TOOL} manifest; if no {TOOL} is writing {path}, remove it: rm -r {entry}')


class OutputBag:
    """A rosbag2 bag that appears at ``path`` only when :meth:`commit` succeeds.

    Written into a hidden temporary directory beside ``path`` (same file system, so the final
    move is a rename); :meth:`discard` (or leaving the ``with`` block without committing)
    deletes it. ``storage`` is 'mcap' or 'sqlite3'. Raises BagError / OutputError from
    :func:`check_output_path`.
    """

    def __init__(self, path: str | Path, storage: str = 'mcap', overwrite: bool = False,
                 protect: Sequence[Path] = (), log: Callable[[str], None] | None = None,
                 ) -> None:
        if storage not in STORAGES:
            raise BagError(f'storage {storage!r} is not one of {list(STORAGES)}')
        self.path = Path(path)
        self.overwrite = overwrite
        self.committed = False
        check_output_path(self.path, overwrite, protect)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer: Writer | None = None
        sweep_temporaries(self.path, log)
        self._tmp = Path(tempfile.mkdtemp(prefix=temporary_prefix(self.path), suffix=TEMP_SUFFIX,
                                          dir=self.path.parent))
        try:  # from here on, any failure or Ctrl-C removes the temporary directory
            claim(self._tmp, TOOL, [self.path.name])   # a killed run's folder is recognised
            self._writer = Writer(self._tmp / self.path.name, version=9,
                                  storage_plugin=STORAGES[storage])
            self._writer.open()
        except BaseException:
            self.discard()
            raise

    @property
    def temp_dir(self) -> Path:
        """Where the bag is being written until commit."""
        return self._tmp

    def add_topic(self, name: str, msgtype: str, msgdef: str = '', digest: str = '',
                  qos: Sequence = ()) -> Connection:
        """Register a topic; without ``msgdef`` and ``digest`` the Kilted definition of
        ``msgtype`` is recorded."""
        if msgdef and digest:
            return self._writer.add_connection(name, msgtype, msgdef=msgdef, rihs01=digest,
                                               offered_qos_profiles=list(qos))
        return self._writer.add_connection(name, msgtype, typestore=kilted_typestore(),
                                           offered_qos_profiles=list(qos))

    def write(self, connection: Connection, log_time: int, raw: bytes | memoryview) -> None:
        """Append one serialised message logged at ``log_time`` ns."""
        self._writer.write(connection, log_time, raw)

    def commit(self) -> None:
        """Finish the bag (index, metadata.yaml) and move it to ``path``, replacing an
        existing bag there only now, when the new one is complete."""
        writer, self._writer = self._writer, None
        writer.close()
        built = self._tmp / self.path.name
        claim(built, TOOL, [p.name for p in built.iterdir()])  # what --overwrite may remove
        try:
            if self.path.exists():
                check_output_path(self.path, self.overwrite)
                old = self._tmp / 'replaced'
                self.path.rename(old)
                try:
                    built.rename(self.path)
                except BaseException:
                    old.rename(self.path)
                    raise
            else:
                built.rename(self.path)
            self.committed = True
        finally:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def discard(self) -> None:
        """Abandon the bag: nothing appears at ``path``, the temporary directory goes."""
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                writer.abort()
            except Exception:  # the storage may be half-open; removing the files suffices
                pass
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> OutputBag:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self.committed:
            self.discard()
