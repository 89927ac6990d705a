"""The one engine factory: ``create_engine(EngineSpec)`` picks, creates, dry-runs and names the
backend (the only place that knows backend types); 'auto' records why it chose each one.
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
import glob
import importlib.util
import logging
from pathlib import Path

import numpy as np

from occo_ros.engines.base import EngineError, EngineInfo, FusionEngine
from occo_ros.engines.spec import ENGINE_SUFFIXES, EngineSpec
from occo_ros.model.contract import DRY_RUN_SIDE, dry_run_inputs, output_problem
from occo_ros.util.resources import default_model_path

# Why 'auto' prefers ONNX Runtime over PyTorch on the CPU: bench/bench_backends.py, width
# 0.25, fp32, 2 threads, idle 2-core Intel Xeon VM (docs/PERFORMANCE.md): median 64.4 vs
# 93.4 ms at 256x320 and 244.9 vs 358.7 ms at 512x640 (ONNX Runtime vs PyTorch); ONNX
# Runtime also led in every run on the loaded machine.
CPU_CHOICE = 'measured faster than PyTorch on CPU (bench_backends, docs/PERFORMANCE.md)'
_LOG = logging.getLogger('occo_ros.engines')  # the name callers configure
# Device nodes of a GPU that PyTorch's CUDA API can use (glob patterns): the NVIDIA driver,
# Jetson (nvgpu; older L4T: nvhost-ctrl-gpu), WSL2 (dxg) and ROCm (kfd, torch.cuda too).
# Without any, 'auto' skips PyTorch CUDA without importing torch (2-3 s of a CPU start).
GPU_DEVICES = ('/dev/nvidiactl', '/dev/nvidia[0-9]*', '/proc/driver/nvidia',
               '/dev/nvhost-ctrl-gpu', '/dev/nvgpu', '/dev/dxg', '/dev/kfd')


class SelectedEngine(FusionEngine):
    """A backend plus the factory's reason for choosing it (EngineInfo.details['reason'])."""

    def __init__(self, engine: FusionEngine, reason: str, details: dict | None = None) -> None:
        self.engine = engine
        self.reason = reason
        self.details = details or {}

    @property
    def info(self) -> EngineInfo:
        inner = self.engine.info
        return dataclasses.replace(
            inner, details={**inner.details, **self.details, 'reason': self.reason})

    def infer(self, visible_y: np.ndarray, infrared: np.ndarray) -> np.ndarray:
        return self.engine.infer(visible_y, infrared)

    def warmup(self, height: int, width: int, iterations: int = 2) -> None:
        self.engine.warmup(height, width, iterations)

    def close(self) -> None:
        self.engine.close()


@dataclasses.dataclass(frozen=True)
class _Request:
    """create_engine's spec with the model file resolved, plus the log."""

    spec: EngineSpec
    model_path: Path
    log: Callable[[str], None]
    warn: Callable[[str], None]

    @property
    def kind(self) -> str:
        """'pt', 'onnx' or 'engine'."""
        suffix = self.model_path.suffix
        return 'engine' if suffix in ENGINE_SUFFIXES else suffix.lstrip('.')

    @property
    def cache_dir(self) -> str | None:
        return self.spec.engine_cache_dir or None

    @property
    def num_threads(self) -> int | None:
        return self.spec.num_threads or None


def _torch(request: _Request, device: str, precision: str) -> FusionEngine:
    if request.kind != 'pt':
        raise EngineError(f'the torch backend runs .pt checkpoints, not {request.model_path.name}')
    try:
        from occo_ros.engines.torch_engine import TorchEngine
    except ImportError as exc:
        raise EngineError(f'PyTorch is not installed ({exc})') from exc
    return TorchEngine(str(request.model_path), device, precision, request.num_threads)


def _onnxruntime(request: _Request, device: str, precision: str) -> FusionEngine:
    if request.kind == 'engine':
        raise EngineError(f'{request.model_path.name} is a TensorRT plan; use backend tensorrt')
    from occo_ros.engines.onnx_engine import OnnxRuntimeEngine

    return OnnxRuntimeEngine(str(request.model_path), device, precision, request.num_threads,
                             request.cache_dir, request.spec.input_size, request.log)


def _tensorrt(request: _Request, device: str, precision: str) -> FusionEngine:
    from occo_ros.engines.tensorrt import engine as tensorrt_engine

    tensorrt_engine.import_tensorrt()  # fail fast with the install hint
    tensorrt_engine.import_pycuda_driver()
    input_size = request.spec.input_size
    if request.kind == 'engine':
        return tensorrt_engine.load_engine_file(request.model_path, input_size, device,
                                                request.log)
    if request.kind == 'pt' and input_size is None:
        raise EngineError('the tensorrt backend needs input_size (H, W) for a .pt model')
    from occo_ros.model.onnx_cache import resolve_onnx
    from occo_ros.model.onnx_export import onnx_input_size

    onnx_path = resolve_onnx(request.model_path, input_size, request.cache_dir, request.log)
    input_size = input_size or onnx_input_size(onnx_path)
    if input_size is None:
        raise EngineError(f'{onnx_path.name} has a dynamic input size: give input_size '
                          '(H, W) for the TensorRT optimisation profile')
    engine, _ = tensorrt_engine.load_or_build(
        onnx_path, input_size, precision, device, request.cache_dir,
        force_rebuild=request.spec.force_rebuild,
        calibration_dir=request.spec.calibration_dir or None, thermal=request.spec.thermal,
        workspace_mb=request.spec.workspace_mb, log=request.log,
        model_path=str(request.model_path))
    return engine


_CREATORS = {'torch': _torch, 'onnxruntime': _onnxruntime, 'tensorrt': _tensorrt}


def _created(backend: str, request: _Request, device: str, precision: str) -> FusionEngine:
    """The backend's engine, after a dry run met the output contract (see dry_run)."""
    engine = _CREATORS[backend](request, device, precision)
    try:
        dry_run(engine, str(request.model_path))
    except Exception:
        engine.close()
        raise
    return engine


def dry_run(engine: FusionEngine, name: str) -> None:
    """One inference on crossing ramps at the model's fixed size (else DRY_RUN_SIDE
    square); EngineError naming ``name`` unless the output is one finite float32 (N, 1, H, W)
    array in [0, 1] (model_contract.contract_problem): a model with NaN/inf, out-of-range or
    extra-channel output, or one that ignores the thermal input (model_contract.output_problem),
    never starts."""
    details = engine.info.details
    shape = details.get('input_size') or details.get('input_shape', ())[2:]
    size = tuple(shape) if len(shape) == 2 and all(isinstance(d, int) for d in shape) \
        else (DRY_RUN_SIDE, DRY_RUN_SIDE)
    visible, infrared = dry_run_inputs(*size)
    problem = output_problem(engine.infer(visible, infrared), visible, infrared)
    if problem:
        raise EngineError(f'{name} breaks the FIFN output contract on a {size[0]}x{size[1]} '
                          f'dry run: {problem[1]}')


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _auto_plan(request: _Request) -> list[tuple[str, str, str, str]]:
    """Candidates (backend, device, precision, note) for 'auto', best first, per the rule
    TensorRT -> ONNX Runtime CUDA -> PyTorch CUDA -> fastest CPU backend."""
    spec = request.spec
    reduced = spec.precision != 'fp32'
    gpu_allowed = spec.device != 'cpu'
    gpu = 'cuda' if spec.device == 'auto' else spec.device  # for ONNX Runtime / torch
    plan = []
    if gpu_allowed:
        plan.append(('tensorrt', spec.device, spec.precision, 'TensorRT'))
    if request.kind == 'engine':
        return plan
    if gpu_allowed and not reduced:
        plan.append(('onnxruntime', gpu, 'fp32', 'ONNX Runtime CUDA'))
    if gpu_allowed and request.kind == 'pt':
        torch_precision = 'fp16' if reduced else 'fp32'  # torch has no int8
        plan.append(('torch', gpu, torch_precision, 'PyTorch CUDA'))
    if spec.device in ('auto', 'cpu'):
        plan.append(('onnxruntime', 'cpu', 'fp32', CPU_CHOICE))
        if request.kind == 'pt':
            plan.append(('torch', 'cpu', 'fp32', 'the remaining CPU backend'))
    return plan


def _probe(backend: str, device: str) -> str | None:
    """Cheap availability check before constructing a backend; the reason it is skipped."""
    if backend == 'tensorrt':
        missing = [name for name in ('tensorrt', 'pycuda') if not _installed(name)]
        return f'{" and ".join(missing)} not installed' if missing else None
    if backend == 'onnxruntime':
        if not _installed('onnxruntime'):
            return 'onnxruntime not installed'
        if device != 'cpu':
            import onnxruntime

            available = onnxruntime.get_available_providers()
            if 'CUDAExecutionProvider' not in available:
                return f'no CUDAExecutionProvider (onnxruntime has {available})'
        return None
    if not _installed('torch'):
        return 'torch not installed'
    if device != 'cpu':
        if not any(glob.glob(pattern) for pattern in GPU_DEVICES):
            return 'no NVIDIA GPU device on this machine'
        import torch

        if not torch.cuda.is_available():
            return 'torch.cuda.is_available() is False'
    return None


def _create_auto(request: _Request) -> tuple[FusionEngine, str, list[str]]:
    """Try the auto candidates in order: the engine, the reason for the choice, and the
    failures of installed candidates (each also a WARN: a broken TensorRT never hides)."""
    skipped, failures, unavailable, failed = [], [], [], []
    for backend, device, precision, note in _auto_plan(request):
        label = f'{backend} on {device}'
        problem = _probe(backend, device)
        if problem is None:
            try:
                engine = _created(backend, request, device, precision)
            except Exception as exc:  # auto must fall back, not stop the node
                problem = str(_as_engine_error(exc, backend, request.model_path))
                failures.append(f'{label} failed: {problem}')
                failed.append(problem)
                request.warn(f'backend auto: {label} failed, falling back: {problem}')
            else:
                if precision != request.spec.precision:
                    note += (f' (precision {request.spec.precision} unavailable there, '
                             f'using {precision})')
                reason = f'auto chose {label}: {note}'
                if skipped:
                    reason += '; skipped ' + '; '.join(skipped)
                return engine, reason, failures
        else:
            request.log(f'backend auto: {label} unavailable: {problem}')
            unavailable.append(f'{label} ({problem})')
        skipped.append(f'{label} ({problem})')
    # What went wrong with the model first (once, though several backends tried it), then
    # what was not installed: the line a user reads must start with the reason.
    reasons = list(dict.fromkeys(failed)) + ['unavailable: ' + '; '.join(unavailable)] * bool(
        unavailable)
    raise EngineError(f'backend auto found no usable backend for {request.model_path.name} on '
                      f'device {request.spec.device!r}: ' + '; '.join(reasons))


def _as_engine_error(exc: Exception, backend: str, model: Path) -> EngineError:
    """EngineError as it is; anything else wrapped, naming the backend and the type."""
    if isinstance(exc, EngineError):
        return exc
    error = EngineError(f'backend {backend!r} failed to load {model.name}: unexpected '
                        f'{type(exc).__name__}: {exc}')
    error.__cause__ = exc
    return error


def create_engine(spec: EngineSpec, logger: object | None = None) -> FusionEngine:
    """Create the inference engine `spec` describes.

    backend 'auto' tries TensorRT, ONNX Runtime CUDA, PyTorch CUDA, then ONNX Runtime on the
    CPU (faster than PyTorch there, CPU_CHOICE), using what is installed and working. The
    choice and the skipped candidates go to EngineInfo.details['reason']; a candidate that
    is installed but fails (e.g. a TensorRT build error) is logged as a warning and listed
    in details['fallback_warning'] (the node shows it in /diagnostics).

    Args:
        spec: the engine options (EngineSpec: validated at construction).
        logger: receives .info() for each decision and .warning() for fallbacks: a
            logging.Logger or a ROS node's logger (default: logger 'occo_ros.engines').

    Returns:
        A FusionEngine (a SelectedEngine wrapping the backend).

    Raises:
        EngineError: the model file is missing, or no backend could run it; the message
            says what was found and what was expected. An unexpected exception from a
            backend library is wrapped (its type named, the original as __cause__).
    """
    logger = _LOG if logger is None else logger
    path = Path(spec.model_path or default_model_path()).expanduser()
    if not path.is_file():
        raise EngineError(f'model file not found: {path}')
    request = _Request(spec, path, logger.info, logger.warning)
    details = {}
    if spec.backend == 'auto':
        engine, reason, failures = _create_auto(request)
        if failures:
            details['fallback_warning'] = '; '.join(failures)
    else:
        try:
            engine = _created(spec.backend, request, spec.device, spec.precision)
        except Exception as exc:  # a library failing in a way not anticipated: say which
            error = _as_engine_error(exc, spec.backend, path)
            if error is exc:
                raise
            raise error from exc
        reason = f'backend {spec.backend!r} requested'
    selected = SelectedEngine(engine, reason, details)
    logger.info(f'inference engine: {selected.info.backend} on {selected.info.device}, '
                f'{selected.info.precision} ({reason})')
    return selected
