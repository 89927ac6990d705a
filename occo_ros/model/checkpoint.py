"""FIFN checkpoints: one torch.save file holding the architecture, the weights and free metadata.

Layout (format_version 1), a plain dict that loads with torch.load(weights_only=True):
    'format': 'occo_ros.fifn'
    'format_version': 1
    'model_args': {'width': w, 'base_widths': [...], 'base_heads': [...]}  (FIFN keywords)
    'architecture': {'channels': [...], 'heads': [...], 'width_rule': model.WIDTH_RULE}
    'state_dict': weights of the unwrapped FIFN (no 'module.' / '_orig_mod.' / 'fifn.' prefix)
    free metadata, e.g. 'input_normalization' (dict), 'training' (dict), 'extractor' (str)

Free metadata may only hold None, bool, int, float, str, torch tensors, lists, tuples and
dicts with str or int keys, so that the file never needs unpickling of Python objects.
"""

from __future__ import annotations

import os
from pathlib import Path
import warnings

import torch
from torch import nn

from occo_ros.model.network import FIFN, WIDTH_RULE, InferenceFIFN
from occo_ros.util.atomic_file import atomic_write

FORMAT = 'occo_ros.fifn'
FORMAT_VERSION = 1
RESERVED_KEYS = ('format', 'format_version', 'model_args', 'architecture', 'state_dict')
_PLAIN_TYPES = (type(None), bool, int, float, str, torch.Tensor)


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable or not a valid FIFN checkpoint."""


def unwrap_model(model: nn.Module) -> FIFN:
    """The FIFN inside DataParallel / DistributedDataParallel, torch.compile or InferenceFIFN.

    Raises:
        TypeError: no FIFN inside `model`.
    """
    current = model
    while not isinstance(current, FIFN):
        if isinstance(current, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            current = current.module
        elif isinstance(current, InferenceFIFN):
            current = current.fifn
        elif isinstance(getattr(current, '_orig_mod', None), nn.Module):
            current = current._orig_mod  # the module wrapped by torch.compile
        else:
            raise TypeError(f'expected a FIFN (possibly wrapped), got {type(model).__name__}')
    return current


def _check_meta(value: object, where: str) -> None:
    """Raise TypeError unless `value` loads with weights_only=True (see module docstring)."""
    if isinstance(value, _PLAIN_TYPES):
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_meta(item, f'{where}[{index}]')
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f'checkpoint metadata {where}: key {key!r} is not str or int')
            _check_meta(item, f'{where}[{key!r}]')
    else:
        raise TypeError(
            f'checkpoint metadata {where} is a {type(value).__name__}; allowed are None, bool, '
            'int, float, str, tensors, lists, tuples and dicts (convert e.g. Path to str)')


def save_checkpoint(path: str | os.PathLike, model: nn.Module, **meta: object) -> Path:
    """Write `model`'s FIFN weights, architecture and `meta` to `path` atomically.

    The file is written to a temporary file in the same folder and renamed over `path`, so
    a reader never sees a half-written checkpoint. Parent folders are created.

    Args:
        path: destination file (conventionally '*.pt').
        model: a FIFN, possibly wrapped (DDP, DataParallel, torch.compile, InferenceFIFN).
        **meta: free metadata (see module docstring), e.g. input_normalization={...}.

    Returns:
        The path written.

    Raises:
        TypeError: no FIFN in `model`, or metadata of a type weights_only loading refuses.
        ValueError: a metadata key collides with a reserved key.
    """
    fifn = unwrap_model(model)
    reserved = sorted(set(meta) & set(RESERVED_KEYS))
    if reserved:
        raise ValueError(f'metadata keys {reserved} are reserved by the checkpoint format')
    for key, value in meta.items():
        _check_meta(value, repr(key))
    checkpoint = {
        'format': FORMAT,
        'format_version': FORMAT_VERSION,
        'model_args': fifn.model_args,
        'architecture': {'channels': list(fifn.channels), 'heads': list(fifn.heads),
                         'width_rule': WIDTH_RULE},
        'state_dict': {k: v.detach().cpu() for k, v in fifn.state_dict().items()},
        **meta,
    }
    path = atomic_write(path, lambda stream: torch.save(checkpoint, stream))
    return path


def _read(path: Path, map_location: str | torch.device, mmap: bool) -> dict:
    """torch.load(weights_only=True) and check the format keys; CheckpointError otherwise."""
    if not path.exists():
        raise CheckpointError(f'checkpoint not found: {path}')
    if not path.is_file():
        raise CheckpointError(f'checkpoint path is not a file: {path}')
    try:
        with warnings.catch_warnings():   # a raw pickle: the CheckpointError below says it
            warnings.filterwarnings('ignore', 'Detected pickle protocol', UserWarning)
            checkpoint = torch.load(path, map_location=map_location, weights_only=True,
                                    mmap=mmap)
    except Exception as exc:  # torch raises many types for corrupt, truncated or foreign files
        # the first sentence: torch's weights_only message goes on for a paragraph
        reason = (str(exc).strip().splitlines()[0].split('. ')[0] if str(exc).strip()
                  else type(exc).__name__)
        raise CheckpointError(
            f'cannot read checkpoint {path}: expected a file written by occo_ros '
            'save_checkpoint (a torch.save zip of tensors and plain containers, loaded with '
            f'weights_only=True, which refuses pickled Python objects); torch said: {reason}'
        ) from exc
    if not isinstance(checkpoint, dict):
        raise CheckpointError(
            f'{path}: expected a dict checkpoint, got {type(checkpoint).__name__}')
    if checkpoint.get('format') != FORMAT:
        raise CheckpointError(
            f'{path}: format is {checkpoint.get("format")!r}, expected {FORMAT!r} '
            '(not a FIFN checkpoint written by occo_ros)')
    version = checkpoint.get('format_version')
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f'{path}: format_version {version!r} is not supported (this occo_ros reads '
            f'{FORMAT_VERSION})')
    missing = [key for key in ('model_args', 'state_dict') if key not in checkpoint]
    if missing:
        raise CheckpointError(f'{path}: missing keys {missing}')
    return checkpoint


def read_checkpoint_meta(path: str | os.PathLike) -> dict:
    """Everything in the checkpoint except 'state_dict', without building a model.

    The weights are memory-mapped, not read, so this is cheap for large files.

    Raises:
        CheckpointError: missing, unreadable or not a FIFN checkpoint.
    """
    checkpoint = _read(Path(path), 'cpu', mmap=True)
    return {key: value for key, value in checkpoint.items() if key != 'state_dict'}


def _build(path: Path, checkpoint: dict) -> FIFN:
    """The FIFN described by the checkpoint, weights loaded with strict=True."""
    try:
        model = FIFN(**checkpoint['model_args'])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(
            f'{path}: invalid model_args {checkpoint["model_args"]!r}: {exc}') from exc
    architecture = checkpoint.get('architecture', {})
    for key in ('channels', 'heads'):
        if key in architecture and list(architecture[key]) != list(getattr(model, key)):
            raise CheckpointError(
                f'{path}: stored {key} {architecture[key]} differ from {list(getattr(model, key))}'
                ' computed by this occo_ros from model_args (width rule changed?)')
    state = checkpoint['state_dict']
    if not (isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())):
        raise CheckpointError(f'{path}: state_dict must be a dict of tensors')
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise CheckpointError(
            f'{path}: state_dict does not match FIFN{checkpoint["model_args"]}: '
            f'{len(missing)} missing keys {missing[:5]}, '
            f'{len(unexpected)} unexpected keys {unexpected[:5]}')
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # e.g. size mismatch
        raise CheckpointError(f'{path}: state_dict does not fit the model: {exc}') from exc
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(v.isfinite().all())]
    if bad:
        raise CheckpointError(f'{path}: non-finite values (NaN/inf) in weights {bad[:5]}')
    return model


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = 'cpu'
) -> tuple[FIFN, dict]:
    """Load a checkpoint written by `save_checkpoint`.

    Args:
        path: checkpoint file.
        map_location: device for the weights and the returned model ('cpu', 'cuda', ...).

    Returns:
        (model, meta): the FIFN in eval() mode on `map_location`, and every checkpoint key
        except 'state_dict' (format, model_args, architecture, input_normalization, ...).

    Raises:
        CheckpointError: missing, unreadable, corrupt or foreign file, or weights that do not
            match the architecture; the message names the path and what was expected.
    """
    path = Path(path)
    checkpoint = _read(path, map_location, mmap=False)
    model = _build(path, checkpoint).to(map_location).eval()
    return model, {key: value for key, value in checkpoint.items() if key != 'state_dict'}
