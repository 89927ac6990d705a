"""One output rule for every tool (occo-fuse, occo-bag, occo-export, occo-train): never
destroy data.

* An output never overlaps an input: not the same file or folder (links resolved, hard
  links compared), not inside an input folder, not a folder holding an input.
* An existing output is replaced only with ``--overwrite``, and only what the tool itself
  wrote. A tool that writes into a folder first records what it will write in a manifest
  in that folder (:data:`MANIFEST`); ``--overwrite`` removes exactly those entries and
  refuses a folder holding anything else, one without a manifest or another tool's. An
  absent or empty folder (or one holding only a manifest) needs no ``--overwrite``. A
  one-file output (an ONNX export, a checkpoint) is written atomically and may replace only
  a file, with ``--overwrite``.

No ROS import; Python 3.8 (tools run on robots too).
"""

from __future__ import annotations

from collections.abc import Iterable
import json
import os
from pathlib import Path
import shutil
from typing import Union

from occo_ros.util.atomic_file import atomic_write_bytes

PathLike = Union[str, 'os.PathLike[str]']
MANIFEST = '.occo-outputs.json'
_SHOWN = 5  # foreign entries named in an error


class OutputError(Exception):
    """The tool refuses to write an output; the message says why and what to do."""


class OutputExistsError(OutputError):
    """The output exists and ``--overwrite`` (or ``--resume``) was not given."""


def _resolved(path: PathLike) -> Path:
    return Path(path).expanduser().resolve()


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist
        return False


def check_apart(output: PathLike, inputs: Iterable[PathLike | None]) -> None:
    """Raise OutputError when ``output`` is an input, lies inside an input folder or holds an
    input. Empty or None inputs (options not given) are ignored."""
    target = _resolved(output)
    for given in inputs:
        if given is None or str(given) == '':
            continue
        other = _resolved(given)
        if (target == other or other in target.parents or target in other.parents
                or _same(target, other)):
            raise OutputError(f'output {output} overlaps the input {given}; choose an output '
                              'apart from every input')


def check_file_output(path: PathLike, overwrite: bool,
                      inputs: Iterable[PathLike | None] = ()) -> None:
    """Raise unless a tool may write the one file ``path``: apart from ``inputs``, not a
    folder, and new unless ``overwrite`` (the writer then replaces it atomically)."""
    check_apart(path, inputs)
    path = Path(path)
    if path.is_dir():
        raise OutputError(f'output {path} is a folder; give a file name')
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise OutputExistsError(f'output {path} exists; pass --overwrite to replace it')


def read_manifest(folder: PathLike) -> dict | None:
    """The manifest of ``folder`` ({'tool': ..., 'written': [names]}), or None when it has
    none or an unreadable one."""
    try:
        data = json.loads((Path(folder) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not (isinstance(data, dict) and isinstance(data.get('tool'), str)
            and isinstance(data.get('written'), list)):
        return None
    return data


def owned_entries(folder: PathLike, tool: str) -> list[str]:
    """The entries of the existing folder ``folder`` that ``tool`` wrote (all of them, the
    manifest included); raises OutputError when it holds anything else. An empty folder
    is trivially owned."""
    folder = Path(folder)
    entries = sorted(p.name for p in folder.iterdir())
    if not entries:
        return []
    manifest = read_manifest(folder)
    if manifest is None or manifest['tool'] != tool:
        whose = 'no record of what wrote it' if manifest is None \
            else f'it was written by {manifest["tool"]}'
        raise OutputError(f'{folder} is not empty and {whose} ({MANIFEST}); {tool} replaces '
                          'only what it wrote itself, even with --overwrite: choose another '
                          'output or empty it yourself')
    written = set(manifest['written']) | {MANIFEST}
    foreign = [name for name in entries if name not in written]
    if foreign:
        shown = ', '.join(foreign[:_SHOWN]) + (' ...' if len(foreign) > _SHOWN else '')
        raise OutputError(f'{folder} holds {len(foreign)} entries {tool} did not write '
                          f'({shown}); refusing to replace it even with --overwrite: choose '
                          'another output or move them away')
    return entries


def check_folder_output(path: PathLike, tool: str, overwrite: bool,
                        inputs: Iterable[PathLike | None] = (), resume: bool = False,
                        options: str = '--overwrite') -> None:
    """Raise unless ``tool`` may write into the folder ``path``: apart from ``inputs``, and
    absent, empty, or (with ``overwrite``) holding only what ``tool`` wrote. ``resume``
    (occo-train --resume) continues a run in an existing folder: nothing is checked or
    removed there. ``options`` names the flags that allow an existing output."""
    check_apart(path, inputs)
    path = Path(path)
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise OutputError(f'output {path} exists and is not a folder; give a folder name')
    if resume or not path.exists() or not _holds_data(path):
        return
    if not overwrite:
        raise OutputExistsError(f'output folder {path} exists and is not empty; pass '
                                f'{options} to replace what {tool} wrote there')
    owned_entries(path, tool)


def _holds_data(folder: Path) -> bool:
    """Whether ``folder`` holds anything but a manifest (a run that wrote nothing yet)."""
    return any(entry.name != MANIFEST for entry in folder.iterdir())


def remove_entries(folder: Path, names: Iterable[str]) -> None:
    """Delete the named entries of ``folder`` (files, links or whole folders)."""
    for name in names:
        entry = folder / name
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        elif entry.exists() or entry.is_symlink():
            entry.unlink()


def claim(folder: PathLike, tool: str, names: Iterable[str]) -> None:
    """Record in ``folder``'s manifest that ``tool`` writes ``names`` there (added to what it
    recorded before). Call before writing them, so an interrupted run's files stay owned."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    before = manifest['written'] if manifest and manifest['tool'] == tool else []
    written = sorted(set(before) | set(names))
    atomic_write_bytes(folder / MANIFEST,
                       json.dumps({'tool': tool, 'written': written}, indent=1).encode())


def prepare_output_folder(path: PathLike, tool: str, names: Iterable[str], overwrite: bool,
                          inputs: Iterable[PathLike | None] = (), resume: bool = False,
                          options: str = '--overwrite') -> Path:
    """:func:`check_folder_output`, then (with ``overwrite``) remove what ``tool`` wrote
    before, create the folder and :func:`claim` ``names``. Returns the folder."""
    check_folder_output(path, tool, overwrite, inputs, resume, options)
    path = Path(path)
    if path.is_dir() and overwrite and not resume and _holds_data(path):
        remove_entries(path, owned_entries(path, tool))
    path.mkdir(parents=True, exist_ok=True)
    claim(path, tool, names)
    return path
