"""The FIFN graph contract: what the exporter writes and every backend checks (no imports
beyond numpy, so export.py and each engine module import it from below).

Inputs 'visible_y' (BT.601 luminance of the visible image) and 'infrared' (normalised
thermal), output 'fused_y', all float32 NCHW (N, 1, H, W) in [0, 1], the clamp inside the
graph (OCCO_METHOD.md §1). Shape rule: one shape for both inputs and the output, H and W at
least MIN_INPUT_SIZE (below it FIFN's three poolings leave nothing). The attention context
and the channel weights' global average pools are FP32 regions: their ONNX nodes are named
'<scope>/attention_context_<k>/<op>' and '<scope>/channel_pool_<k>/ReduceMean' so TensorRT
pins every layer matching FP32_REGION_PATTERN to FP32 in fp16/int8 engines.
"""

from __future__ import annotations

from dataclasses import dataclass
import re

import numpy as np

INPUT_NAMES = ('visible_y', 'infrared')
OUTPUT_NAME = 'fused_y'
#: Smallest input side in pixels.
MIN_INPUT_SIZE = 8
#: Node / layer names of the FP32 regions (export.pin_attention_context and
#: export.pin_channel_pools name them).
FP32_REGION_PATTERN = re.compile(r'/(attention_context|channel_pool)_\d+/')


class EngineError(RuntimeError):
    """A model artifact (export, cached file, engine) could not be made, loaded or run; the
    message says what failed and what to do."""


def size_problem(height: int, width: int, min_size: int = MIN_INPUT_SIZE) -> str | None:
    """Why (height, width) breaks the shape rule, or None."""
    if min(height, width) < min_size:
        return f'{height}x{width} (HxW), below the network minimum {min_size}x{min_size}'
    return None


def validate_inputs(visible_y: np.ndarray, infrared: np.ndarray,
                    min_size: int = MIN_INPUT_SIZE) -> None:
    """Raise EngineError unless both are float32 (N, 1, H, W) of one shape, H, W >= min_size
    (a model may need more than MIN_INPUT_SIZE: its checkpoint's min_size)."""
    for name, array in zip(INPUT_NAMES, (visible_y, infrared)):
        if not isinstance(array, np.ndarray):
            raise EngineError(f'{name} must be a numpy array, got {type(array).__name__}')
        if array.dtype != np.float32:
            raise EngineError(f'{name} must be float32 in [0, 1], got dtype {array.dtype}')
        if array.ndim != 4 or array.shape[1] != 1:
            raise EngineError(f'{name} must have shape (N, 1, H, W), got {array.shape}')
        problem = size_problem(*array.shape[2:], min_size)
        if problem:
            raise EngineError(f'{name} is {problem}')
    if visible_y.shape != infrared.shape:
        raise EngineError(
            f'visible_y {visible_y.shape} and infrared {infrared.shape} must have one shape')


@dataclass(frozen=True)
class TensorSpec:
    """One engine IO tensor: name, direction, shape (-1 = dynamic dim) and dtype name."""

    name: str
    is_input: bool
    shape: tuple[int, ...]
    dtype: str


def io_problems(specs: list[TensorSpec], height: int, width: int) -> list[str]:
    """What is wrong with an engine's IO for FIFN at (height, width); empty list if nothing.

    Expected: inputs INPUT_NAMES, output OUTPUT_NAME, all float32, shape (1, 1, H, W) with
    dynamic dims (-1) allowed where the optimisation profile sets them.
    """
    problems = []
    by_name = {spec.name: spec for spec in specs}
    expected = dict.fromkeys(INPUT_NAMES, True)
    expected[OUTPUT_NAME] = False
    for name, is_input in expected.items():
        spec = by_name.get(name)
        role = 'input' if is_input else 'output'
        if spec is None:
            problems.append(f'{role} {name!r} missing (engine has {sorted(by_name)})')
            continue
        if spec.is_input != is_input:
            problems.append(f'{name!r} is an {"input" if spec.is_input else "output"}, '
                            f'expected an {role}')
        if spec.dtype != 'float32':
            problems.append(f'{name!r} dtype {spec.dtype}, expected float32')
        want = (1, 1, height, width)
        if len(spec.shape) != 4 or any(
                dim not in (-1, size) for dim, size in zip(spec.shape, want)):
            problems.append(f'{name!r} shape {spec.shape}, expected {want} (-1 = dynamic)')
    extra = sorted(set(by_name) - set(expected))
    if extra:
        problems.append(f'unexpected IO tensors {extra}')
    return problems
