"""Write a file so that readers see the old file or the complete new one, never a part.

Used for checkpoints, ONNX exports, TensorRT engines and their sidecars: an interrupted
write (Ctrl-C, power loss on a robot) must never leave a truncated file that a later start
would try to load.
"""

from __future__ import annotations

import atexit
from collections.abc import Callable, Iterator
import contextlib
import os
from pathlib import Path
import re
import shutil
import tempfile
from typing import BinaryIO


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(stream)`` on a temp file beside ``path``, fsync, then rename onto ``path``.

    Parent folders are created. The file gets the usual permissions (0666 minus the umask)
    rather than the private 0600 of a temp file, so installed models stay readable.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path, '.tmp')
    handle, temp_name = tempfile.mkstemp(prefix=temporary_prefix(path), suffix='.tmp',
                                         dir=path.parent)
    try:
        with removed_at_exit(temp_name):
            with os.fdopen(handle, 'wb') as stream:
                write(stream)
                stream.flush()
                os.fsync(stream.fileno())
            os.chmod(temp_name, 0o666 & ~_umask())
            os.replace(temp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp_name)
        raise
    return path


#: Temporaries this process is writing (files or folders), removed at exit: a node ended
#: by a signal during start-up does not wait for the thread that writes them (node_main).
_IN_FLIGHT: set[str] = set()


@contextlib.contextmanager
def removed_at_exit(path: str | os.PathLike) -> Iterator[None]:
    """While the block runs, ``path`` is removed if the process exits (atexit)."""
    _IN_FLIGHT.add(os.fspath(path))
    try:
        yield
    finally:
        _IN_FLIGHT.discard(os.fspath(path))


@atexit.register
def _remove_in_flight() -> None:
    for name in list(_IN_FLIGHT):
        if os.path.isdir(name):
            shutil.rmtree(name, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(name)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """:func:`atomic_write` of a bytes object."""
    return atomic_write(path, lambda stream: stream.write(data))


def temporary_prefix(path: Path) -> str:
    """Name prefix of a temporary beside ``path`` written by this process:
    ``.<name>.<pid>.`` (mkstemp/mkdtemp add a random part and the suffix), so a later run
    can tell a killed run's leftover (its process is gone) from a running writer's."""
    return f'.{path.name}.{os.getpid()}.'


def remove_stale_temporaries(path: Path, suffix: str,
                             is_ours: Callable[[Path], bool] = lambda entry: True,
                             ) -> list[Path]:
    """Delete the temporaries of ``path`` (``.<name>.<pid>.*<suffix>`` beside it, files or
    folders) whose writing process no longer runs (a killed run) and that ``is_ours``
    accepts (e.g. a folder's manifest names the tool); returns what was removed."""
    pattern = re.compile(rf'\.{re.escape(path.name)}\.(\d+)\..*{re.escape(suffix)}')
    removed = []
    with contextlib.suppress(OSError):   # a parent that is not there holds nothing
        for entry in path.parent.iterdir():
            match = pattern.fullmatch(entry.name)
            if match is None or _running(int(match.group(1))) or not is_ours(entry):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    entry.unlink()
            removed.append(entry)
    return removed


def _running(pid: int) -> bool:
    """Whether a process ``pid`` exists (this one included)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):   # another user's, or not a pid: leave it
        return True
    return True
