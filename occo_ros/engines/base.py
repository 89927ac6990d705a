"""The contract every inference backend fulfils.

Input: two float32 arrays of shape (N, 1, H, W) with values in [0, 1], C-contiguous:
the visible luminance Y and the registered, normalised infrared image (argument order of
OCCO_METHOD.md §1: visible first). Output: the fused luminance, float32 (N, 1, H, W),
already clamped to [0, 1]. The graph contract itself (names, shape rule, EngineError) is
occo_ros.model.contract, shared with the exporter.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

import numpy as np

from occo_ros.model.contract import MIN_INPUT_SIZE, EngineError, validate_inputs

__all__ = ['MIN_INPUT_SIZE', 'EngineError', 'EngineInfo', 'FusionEngine', 'validate_inputs']


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
