"""PyTorch inference backend: runs the checkpoint's FIFN (with the [0, 1] clamp) on CPU or CUDA.

Precision: 'fp32' anywhere; 'fp16' only on CUDA (the whole network in half precision; the
attention context stays float32 inside the model). fp16 on CPU raises EngineError instead of
silently falling back, so a configuration asking for fp16 on a machine without CUDA fails
loudly at startup. 'int8' needs calibration and is only offered by the TensorRT backend.
"""

from __future__ import annotations

import numpy as np
import torch

from occo_ros.engines.base import EngineError, EngineInfo, FusionEngine, validate_inputs
from occo_ros.model.checkpoint import CheckpointError, load_checkpoint
from occo_ros.model.network import InferenceFIFN
from occo_ros.params import PRECISIONS


def resolve_device(device: str) -> torch.device:
    """'auto' -> CUDA if available else CPU; otherwise a torch device string ('cpu', 'cuda:1')."""
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise EngineError(
            f"device {device!r} is not valid; use 'auto', 'cpu', 'cuda' or 'cuda:N'") from exc
    if resolved.type not in ('cpu', 'cuda'):
        raise EngineError(f"device {device!r} is not supported; use 'auto', 'cpu' or 'cuda[:N]'")
    if resolved.type == 'cuda':
        if not torch.cuda.is_available():
            raise EngineError(
                f'device {device!r} requested but this torch ({torch.__version__}) sees no CUDA '
                "device; use device 'cpu' or 'auto'")
        index = torch.cuda.current_device() if resolved.index is None else resolved.index
        if index >= torch.cuda.device_count():
            raise EngineError(
                f'device {device!r}: only {torch.cuda.device_count()} CUDA device(s) present')
        resolved = torch.device('cuda', index)
    return resolved


class TorchEngine(FusionEngine):
    """FIFN in PyTorch, eval mode, under torch.inference_mode.

    Args:
        model_path: checkpoint written by occo_ros.model.checkpoint.save_checkpoint.
        device: 'auto' (CUDA if available, else CPU), 'cpu', 'cuda' or 'cuda:N'.
        precision: 'fp32', or 'fp16' (CUDA only); 'int8' is refused (use the TensorRT backend).
        num_threads: CPU threads for torch (torch.set_num_threads, which is process-wide);
            None keeps torch's default.

    Raises:
        EngineError: invalid argument, unusable device or unreadable checkpoint.
    """

    def __init__(
        self,
        model_path: str,
        device: str = 'auto',
        precision: str = 'fp32',
        num_threads: int | None = None,
    ) -> None:
        if precision not in PRECISIONS:
            raise EngineError(f'precision {precision!r} is not one of {PRECISIONS}')
        if precision == 'int8':
            raise EngineError(
                "precision 'int8' needs calibration and is only supported by the tensorrt "
                "backend; use 'fp32' or 'fp16' with the torch backend")
        self._device = resolve_device(device)
        if precision == 'fp16' and self._device.type != 'cuda':
            raise EngineError(
                f"precision 'fp16' needs a CUDA device, but the device is {self._device} "
                "(half-precision convolutions on CPU are slow or missing); use 'fp32'")
        if num_threads is not None:
            if num_threads < 1:
                raise EngineError(f'num_threads must be >= 1 or None, got {num_threads}')
            torch.set_num_threads(num_threads)
        try:
            fifn, _ = load_checkpoint(model_path, map_location='cpu')
        except CheckpointError as exc:
            raise EngineError(str(exc)) from exc
        self._width, self._min_size = fifn.width, fifn.min_size
        self._dtype = torch.float16 if precision == 'fp16' else torch.float32
        self._model: InferenceFIFN | None = (
            InferenceFIFN(fifn).to(self._device, self._dtype).eval())
        self._precision = precision
        self._model_path = str(model_path)

    @property
    def info(self) -> EngineInfo:
        details = {'torch': torch.__version__, 'width': self._width,
                   'threads': torch.get_num_threads()}
        if self._device.type == 'cuda':
            details['gpu'] = torch.cuda.get_device_name(self._device)
        return EngineInfo(backend='torch', device=str(self._device), precision=self._precision,
                          model_path=self._model_path, details=details)

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        """Wrap the numpy buffer (no copy on CPU); on CUDA stage it through pinned memory."""
        if not array.flags.writeable:
            array = array.copy()  # torch.from_numpy warns on read-only buffers
        tensor = torch.from_numpy(array)
        if self._device.type == 'cuda':
            # Pinned blocks come from torch's caching host allocator, so this stays cheap.
            tensor = tensor.pin_memory().to(self._device, non_blocking=True)
        return tensor.to(self._dtype)

    def infer(self, visible_y: np.ndarray, infrared: np.ndarray) -> np.ndarray:
        """Fuse float32 (N, 1, H, W) visible Y and infrared in [0, 1] -> float32 (N, 1, H, W)."""
        if self._model is None:
            raise EngineError('the torch engine was closed; create a new one')
        validate_inputs(visible_y, infrared, self._min_size)
        with torch.inference_mode():
            fused = self._model(self._to_device(visible_y), self._to_device(infrared))
            return fused.to('cpu', torch.float32).numpy()

    def close(self) -> None:
        """Drop the model (and cached CUDA memory); infer raises EngineError afterwards."""
        self._model = None
        if self._device.type == 'cuda':
            torch.cuda.empty_cache()
