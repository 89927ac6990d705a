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


#: Slack of the [0, 1] output range (fp16 rounding; the graph clamps).
OUTPUT_RANGE_TOL = 1e-3
#: Spread below which an image counts as flat: half an 8-bit grey level.
FLAT = 0.5 / 255
#: Thermal and visible inputs that differ by at least this much somewhere carry different
#: content, so a fused image equal to the visible one ignored the thermal input.
DISTINCT_INPUTS = 0.1
#: Every _STRIDE-th row and column feed the per-frame dependence checks (cost, see
#: bench/bench_output_check.py); finiteness and range look at every pixel.
_STRIDE = 4
#: Side of the dry run at load when the model has no fixed size (H = W).
DRY_RUN_SIDE = 64


def contract_problem(output: object, shape: tuple[int, ...]) -> str | None:
    """Why a network ``output`` for inputs of ``shape`` (N, 1, H, W) breaks the output
    contract (one float32 array of that shape, finite, in [0, 1]), or None."""
    if not isinstance(output, np.ndarray):
        return f'the output is a {type(output).__name__}, expected one numpy array'
    if output.ndim != 4:
        return f'the output has rank {output.ndim} (shape {output.shape}), expected 4 (N, 1, H, W)'
    if output.shape[1] != 1:
        return f'the output has {output.shape[1]} channels (shape {output.shape}), expected 1'
    if output.shape != tuple(shape):
        return f'the output shape is {output.shape}, expected {tuple(shape)}'
    if output.dtype != np.float32:
        return f'the output dtype is {output.dtype}, expected float32'
    lo, hi = float(output.min()), float(output.max())   # NaN propagates through min/max
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return f'the output holds non-finite values ({int((~np.isfinite(output)).sum())} of ' \
               f'{output.size})'
    if lo < -OUTPUT_RANGE_TOL or hi > 1 + OUTPUT_RANGE_TOL:
        return f'the output spans [{lo:.4g}, {hi:.4g}], outside [0, 1]'
    return None


def output_problem(fused: object, visible_y: np.ndarray,
                   infrared: np.ndarray) -> tuple[str, str] | None:
    """(kind, message) when one frame's network output is unusable, else None: it breaks
    :func:`contract_problem` (kind 'contract'), is flat while the thermal input is not
    ('constant'), or equals the visible luminance while the thermal input differs from it
    ('visible_only': the output stopped depending on the thermal image)."""
    problem = contract_problem(fused, visible_y.shape)
    if problem:
        return 'contract', problem
    out = fused[0, 0, ::_STRIDE, ::_STRIDE]
    vis = visible_y[0, 0, ::_STRIDE, ::_STRIDE]
    ir = infrared[0, 0, ::_STRIDE, ::_STRIDE]
    if np.ptp(out) < FLAT and np.ptp(ir) >= FLAT:
        return 'constant', (f'the fused image is constant ({float(out[0, 0]):.4f}) while the '
                            'thermal image is not')
    if (float(np.abs(out - vis).max()) < FLAT
            and float(np.abs(ir - vis).max()) >= DISTINCT_INPUTS):
        return 'visible_only', ('the fused image equals the visible luminance: it no longer '
                                'depends on the thermal image')
    return None


def dry_run_inputs(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic visible_y and infrared for a dry run: crossing ramps (distinct, never
    flat), float32 (1, 1, H, W) in [0, 1]."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    visible = (xs / max(width - 1, 1)) * 0.8 + 0.1
    infrared = (ys / max(height - 1, 1)) * 0.9 + 0.05 * np.sin(xs / 3.0)
    return visible[None, None], np.clip(infrared, 0, 1).astype(np.float32)[None, None]
