"""The contract every inference backend fulfils.

Input: two float32 arrays of shape (N, 1, H, W) with values in [0, 1], C-contiguous:
the visible luminance Y and the registered, normalised infrared image (argument order of
OCCO_METHOD.md §1: visible first). Output: the fused luminance, float32 (N, 1, H, W),
already clamped to [0, 1] (the clamp lives in the exported graph, see model.InferenceFIFN).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

import numpy as np

#: Smallest input side in pixels (OCCO_METHOD.md §1): below it FIFN's three poolings leave
#: nothing. Part of the engine contract, so every backend checks it the same way.
MIN_INPUT_SIZE = 8


def validate_inputs(
    visible_y: np.ndarray, infrared: np.ndarray, min_size: int = MIN_INPUT_SIZE
) -> None:
    """Raise EngineError unless both are float32 (N, 1, H, W) of one shape, H, W >= min_size."""
    for name, array in (('visible_y', visible_y), ('infrared', infrared)):
        if not isinstance(array, np.ndarray):
            raise EngineError(f'{name} must be a numpy array, got {type(array).__name__}')
        if array.dtype != np.float32:
            raise EngineError(f'{name} must be float32 in [0, 1], got dtype {array.dtype}')
        if array.ndim != 4 or array.shape[1] != 1:
            raise EngineError(f'{name} must have shape (N, 1, H, W), got {array.shape}')
        if min(array.shape[2:]) < min_size:
            raise EngineError(
                f'{name} is {array.shape[2]}x{array.shape[3]} (HxW); the network needs at '
                f'least {min_size}x{min_size}')
    if visible_y.shape != infrared.shape:
        raise EngineError(
            f'visible_y {visible_y.shape} and infrared {infrared.shape} must have one shape')


class EngineError(RuntimeError):
    """A backend could not be created or run; the message says what and what to do."""


@dataclass(frozen=True)
class EngineInfo:
    """What a backend reports in logs and diagnostics."""

    backend: str            # 'torch', 'onnxruntime' or 'tensorrt'
    device: str             # e.g. 'cpu', 'cuda:0', 'CUDAExecutionProvider'
    precision: str          # precision actually used: 'fp32', 'fp16' or 'int8'
    model_path: str
    details: dict = field(default_factory=dict)   # backend-specific facts (versions, reason)


class FusionEngine(abc.ABC):
    """One loaded fusion network, ready to run on one device."""

    @property
    @abc.abstractmethod
    def info(self) -> EngineInfo:
        """Backend, device and precision of this engine."""

    @abc.abstractmethod
    def infer(self, visible_y: np.ndarray, infrared: np.ndarray) -> np.ndarray:
        """Fuse (N, 1, H, W) float32 visible Y and infrared into (N, 1, H, W) float32 Y."""

    def warmup(self, height: int, width: int, iterations: int = 2) -> None:
        """Run a few inferences at the deployment size so the first real frame is not slow."""
        zeros = np.zeros((1, 1, height, width), np.float32)
        for _ in range(iterations):
            self.infer(zeros, zeros)

    def close(self) -> None:  # noqa: B027 (optional hook: most backends need no cleanup)
        """Release device memory; the engine is unusable afterwards."""
