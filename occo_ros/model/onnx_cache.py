"""Run-time ONNX resolution: the one place that turns a model path into an ONNX file for the
engines (an .onnx file itself, or the cached, validated export of a .pt checkpoint, exported
in a child process so that a signal ends a node's start-up at once).
"""

from __future__ import annotations

import atexit
from collections.abc import Callable
import contextlib
import logging
import os
from pathlib import Path
import subprocess
import sys
import tempfile

from occo_ros.model.artifact_cache import (
    default_cache_dir,
    sha256_file,
    stale_reason,
    write_artifact,
)
from occo_ros.model.contract import EngineError
from occo_ros.model.onnx_export import (
    DEFAULT_OPSET,
    ExportError,
    export_recipe_sha256,
    read_metadata,
    torch_installed,
)
from occo_ros.util.atomic_file import atomic_write_bytes, removed_at_exit

_LOG = logging.getLogger('occo_ros.model.onnx_cache')


def export_in_subprocess(model_path: Path, out_path: Path, input_size: tuple[int, int] | None,
                         opset: int, log: Callable[[str], None] = _LOG.info) -> Path:
    """:func:`export_onnx` (verified) in a child process, ``occo-export``, then the result
    written atomically to ``out_path``: a signal ends the caller within moments, whereas
    torch's exporter holds the interpreter in C++ for seconds at a time (a node's start-up,
    node_main). The child, and its temporary folder (also its TMPDIR), do not outlive this
    process: an exit kills the child and removes the folder (atexit)."""
    with tempfile.TemporaryDirectory(prefix='occo_export_') as folder, removed_at_exit(folder):
        raw = Path(folder) / 'model.onnx'
        size = ['--dynamic'] if input_size is None else \
            ['--input-height', str(input_size[0]), '--input-width', str(input_size[1])]
        child = subprocess.Popen(
            [sys.executable, '-m', 'occo_ros.cli.export', '--model', str(model_path),
             '--out', str(raw), '--opset', str(opset), *size], stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env=dict(os.environ, TMPDIR=folder))
        _CHILDREN.add(child)
        try:
            lines = [line.strip() for line in child.communicate()[1].splitlines()
                     if line.strip()]
        finally:
            _CHILDREN.discard(child)
        if child.returncode != 0:
            last = lines[-1] if lines else f'exit status {child.returncode}'
            raise ExportError(last.split('occo-export: ', 1)[-1])
        for line in lines:
            log(line)
        return atomic_write_bytes(out_path, raw.read_bytes())


#: Export processes running for this process; killed at its exit.
_CHILDREN: set[subprocess.Popen] = set()


@atexit.register
def _kill_children() -> None:
    for child in list(_CHILDREN):
        with contextlib.suppress(OSError):
            child.kill()
            child.wait()


def shipped_onnx(model_path: Path, checkpoint_sha: str) -> Path | None:
    """The dynamic-shape export shipped beside a checkpoint (`<stem>.onnx`, made by
    `occo-export --dynamic`), if there is one and its metadata names this checkpoint."""
    beside = model_path.with_suffix('.onnx')
    try:
        meta = read_metadata(beside) if beside.is_file() else {}
    except Exception:  # onnx raises DecodeError and others for corrupt files
        return None
    matches = (meta.get('checkpoint_sha256') == checkpoint_sha
               and meta.get('input_shape') == 'dynamic')
    return beside if matches else None


def cached_onnx(
    model_path: str | os.PathLike,
    cache_dir: str | os.PathLike | None,
    input_size: tuple[int, int] | None,
    opset: int = DEFAULT_OPSET,
    log: Callable[[str], None] = _LOG.info,
) -> Path:
    """The ONNX export of a checkpoint from the cache, exporting it when absent or stale.

    File: `<cache_dir>/<stem>.<checkpoint sha12>.op<opset>.<H>x<W|dyn>.onnx` with the cache's
    sidecar (occo_ros.model.artifact_cache): reused only if its bytes are intact and its key
    (checkpoint sha256, opset, shape, export recipe `export_recipe_sha256`) matches;
    otherwise exported again (logged).

    Without PyTorch (a robot with only ONNX Runtime or TensorRT) nothing can be exported:
    the cached file is then checked without the recipe (which needs torch), and the dynamic
    export shipped beside the checkpoint (`shipped_onnx`, e.g. models/fifn_w025_pixel.onnx)
    is used when the cache has none.

    Raises:
        ExportError: the checkpoint is missing/unreadable, the export fails, or PyTorch is
            missing and no export of this checkpoint is at hand.
    """
    model_path = Path(model_path)
    if not model_path.is_file():
        raise ExportError(f'checkpoint not found: {model_path}')
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    sha = sha256_file(model_path)
    shape = 'dyn' if input_size is None else f'{input_size[0]}x{input_size[1]}'
    path = folder / f'{model_path.stem}.{sha[:12]}.op{opset}.{shape}.onnx'
    can_export = torch_installed()
    key = {'checkpoint_sha256': sha, 'opset': opset, 'input_shape': shape}
    if can_export:
        key['export_recipe_sha256'] = export_recipe_sha256()
    problem = stale_reason(path, key)
    if problem is None:
        log(f'using cached ONNX export {path}')
        return path
    if path.is_file():
        log(f'cached ONNX {path.name} not used: {problem}')
    if can_export:
        log(f'exporting {model_path.name} to ONNX ({shape}, opset {opset})')
        export_in_subprocess(model_path, path, input_size, opset, log=log)
        write_artifact(path, None, key)
        return path
    shipped = shipped_onnx(model_path, sha) if opset == DEFAULT_OPSET else None
    if shipped is None:
        raise ExportError(
            f'PyTorch is not installed, and exporting {model_path.name} to ONNX needs it: '
            "install torch (on a Jetson, NVIDIA's JetPack wheel), or run occo-export "
            f'--model {model_path.name} --dynamic on a machine with torch and give the node '
            'the .onnx file as model_path')
    log(f'PyTorch is not installed: using the ONNX export shipped beside the checkpoint, '
        f'{shipped} (dynamic H x W)')
    return shipped


def resolve_onnx(
    model_path: str | os.PathLike, input_size: tuple[int, int] | None,
    cache_dir: str | os.PathLike | None, log: Callable[[str], None] = _LOG.info,
) -> Path:
    """The ONNX file that runs `model_path` at `input_size` (H, W): an .onnx file itself, or
    the cached export of a .pt checkpoint (fixed at `input_size`, dynamic when None; see
    cached_onnx). The one place that turns a model path into an ONNX file.

    Raises:
        EngineError: another file type, or a failed export.
    """
    path = Path(model_path)
    if path.suffix == '.pt':
        return cached_onnx(path, cache_dir, input_size, log=log)
    if path.suffix == '.onnx':
        return path
    raise EngineError(f'{path.name} is not an ONNX model or a .pt checkpoint')
