"""The one validation scheme of every cached model artifact (ONNX export, ONNX Runtime
optimised model, TensorRT engine): the artifact file plus a sidecar JSON `<file>.json`
holding {format, key, sha256 of the artifact, facts}. An artifact is reused only when its
bytes still have that sha256 and its sidecar's key equals the key expected now; any
difference is reported ('field: found X, expected Y') and the artifact is made again. Both
files are written atomically (artifact first, sidecar last), so an interrupted write never
leaves an artifact that validates.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from occo_ros.util.atomic_file import atomic_write_bytes

#: Environment variable that moves the default cache folder.
CACHE_ENV = 'OCCO_ROS_CACHE'
#: Bumped when the sidecar layout changes; older sidecars then read as a mismatch.
SIDECAR_FORMAT = 2


def default_cache_dir() -> Path:
    """$OCCO_ROS_CACHE if set, else ~/.cache/occo_ros/engines."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / '.cache' / 'occo_ros' / 'engines'


def sha256_file(path: str | os.PathLike, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks of `chunk_bytes`."""
    digest = hashlib.sha256()
    with open(path, 'rb') as stream:
        for chunk in iter(lambda: stream.read(chunk_bytes), b''):
            digest.update(chunk)
    return digest.hexdigest()


def sidecar_path(artifact: Path) -> Path:
    """The JSON file beside an artifact: '<artifact>.json'."""
    return artifact.with_name(artifact.name + '.json')


def key_mismatches(found: dict, expected: dict) -> list[str]:
    """'field: found X, expected Y' for every key field that differs (empty list: a match)."""
    return [f'{name}: found {found.get(name)!r}, expected {value!r}'
            for name, value in expected.items() if found.get(name) != value]


def read_sidecar(artifact: Path) -> tuple[dict | None, str]:
    """(sidecar dict, '') or (None, why it cannot be used: missing, unreadable, format)."""
    if not artifact.is_file():
        return None, f'no cached file {artifact}'
    sidecar = sidecar_path(artifact)
    try:
        found = json.loads(sidecar.read_text(encoding='utf-8'))
    except FileNotFoundError:
        return None, f'{artifact.name} has no sidecar {sidecar.name}'
    except (OSError, ValueError) as exc:
        return None, f'sidecar {sidecar.name} unreadable ({exc})'
    found_format = found.get('format') if isinstance(found, dict) else None
    if found_format != SIDECAR_FORMAT:
        return None, f'sidecar {sidecar.name} format {found_format!r}, expected {SIDECAR_FORMAT}'
    actual = sha256_file(artifact)
    if found.get('sha256') != actual:
        return None, (f'{artifact.name} changed after it was cached (sha256 {actual[:12]}, '
                      f'sidecar says {str(found.get("sha256"))[:12]}): truncated or replaced')
    return found, ''


def stale_reason(artifact: Path, key: dict) -> str | None:
    """Why the cached `artifact` may not be used for `key`, or None when it may."""
    found, problem = read_sidecar(artifact)
    if found is None:
        return problem
    mismatches = key_mismatches(found.get('key') or {}, key)
    return 'sidecar does not match: ' + '; '.join(mismatches) if mismatches else None


def write_artifact(artifact: Path, data: bytes | None, key: dict, **facts: object) -> dict:
    """Write `data` (None: the file is already in place) and then its sidecar; returns it."""
    if data is not None:
        atomic_write_bytes(artifact, data)
    sidecar = {'format': SIDECAR_FORMAT, 'key': key, 'sha256': sha256_file(artifact), **facts}
    atomic_write_bytes(sidecar_path(artifact),
                       json.dumps(sidecar, indent=2, sort_keys=True).encode('utf-8'))
    return sidecar
