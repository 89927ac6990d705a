"""Write a file so that readers see the old file or the complete new one, never a part.

Used for checkpoints, ONNX exports, TensorRT engines and their sidecars: an interrupted
write (Ctrl-C, power loss on a robot) must never leave a truncated file that a later start
would try to load.
"""

from __future__ import annotations

from collections.abc import Callable
import contextlib
import os
from pathlib import Path
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
    handle, temp_name = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    try:
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


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """:func:`atomic_write` of a bytes object."""
    return atomic_write(path, lambda stream: stream.write(data))
