"""Inference backends for FIFN and the one factory that chooses between them.

Every backend implements base.FusionEngine (float32 (N, 1, H, W) in [0, 1] in and out).
`create_engine` is the only place that knows backend types; callers (the ROS node, the
folder tool, benchmarks) pass the `backend` parameter through and read EngineInfo.

Model path kinds:
    .pt           FIFN checkpoint: torch runs it; onnxruntime and tensorrt export it to ONNX in
                  the cache folder first (keyed by checkpoint sha256 + shape + opset,
                  re-exported when the network/exporter code or torch changes).
    .onnx         from occo-export: onnxruntime or tensorrt.
    .engine/.plan prebuilt TensorRT plan: tensorrt only (cannot be rebuilt from here).
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
import importlib.util
import logging
from pathlib import Path

import numpy as np

from occo_ros.engines.base import EngineError, EngineInfo, FusionEngine

BACKENDS = ('auto', 'torch', 'onnxruntime', 'tensorrt')
PRECISIONS = ('fp32', 'fp16', 'int8')
ENGINE_SUFFIXES = ('.engine', '.plan')
MODEL_SUFFIXES = ('.pt', '.onnx', *ENGINE_SUFFIXES)

# Why 'auto' prefers ONNX Runtime over PyTorch on the CPU: bench/bench_backends.py, width
# 0.25, fp32, 2 threads, idle 2-core Intel Xeon VM (docs/PERFORMANCE.md): median 64.4 vs
# 93.4 ms at 256x320 and 244.9 vs 358.7 ms at 512x640 (ONNX Runtime vs PyTorch); ONNX
# Runtime also led in every run on the loaded machine.
CPU_CHOICE = 'measured faster than PyTorch on CPU (bench_backends, docs/PERFORMANCE.md)'

__all__ = ['BACKENDS', 'EngineError', 'EngineInfo', 'FusionEngine', 'create_engine']


class SelectedEngine(FusionEngine):
    """A backend plus the factory's reason for choosing it (EngineInfo.details['reason'])."""

    def __init__(self, engine: FusionEngine, reason: str) -> None:
        self.engine = engine
        self.reason = reason

    @property
    def info(self) -> EngineInfo:
        inner = self.engine.info
        return dataclasses.replace(inner, details={**inner.details, 'reason': self.reason})

    def infer(self, visible_y: np.ndarray, infrared: np.ndarray) -> np.ndarray:
        return self.engine.infer(visible_y, infrared)

    def warmup(self, height: int, width: int, iterations: int = 2) -> None:
        self.engine.warmup(height, width, iterations)

    def close(self) -> None:
        self.engine.close()


@dataclasses.dataclass(frozen=True)
class _Request:
    """create_engine's arguments, validated once."""

    model_path: Path
    device: str
    precision: str
    input_size: tuple[int, int] | None
    cache_dir: str | None
    force_rebuild: bool
    num_threads: int | None
    log: Callable[[str], None]

    @property
    def kind(self) -> str:
        """'pt', 'onnx' or 'engine'."""
        suffix = self.model_path.suffix
        return 'engine' if suffix in ENGINE_SUFFIXES else suffix.lstrip('.')


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
                             request.cache_dir, request.input_size, request.log)


def onnx_input_size(onnx_path: Path) -> tuple[int, int] | None:
    """(H, W) of a fixed-shape ONNX model's first input, None if dynamic."""
    import onnx

    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as exc:  # DecodeError and friends for corrupt files
        raise EngineError(f'cannot read ONNX model {onnx_path}: {exc} (corrupt or truncated '
                          'file? re-export it with occo-export)') from exc
    dims = model.graph.input[0].type.tensor_type.shape.dim
    values = [dim.dim_value if dim.HasField('dim_value') else None for dim in dims]
    return (values[2], values[3]) if len(values) == 4 and None not in values[2:] else None


def _tensorrt(request: _Request, device: str, precision: str) -> FusionEngine:
    from occo_ros.engines import tensorrt_engine

    tensorrt_engine.import_tensorrt()  # fail fast with the install hint
    tensorrt_engine.import_pycuda_driver()
    if request.kind == 'engine':
        return tensorrt_engine.load_engine_file(request.model_path, request.input_size, device,
                                                request.log)
    if request.kind == 'pt':
        if request.input_size is None:
            raise EngineError('the tensorrt backend needs input_size (H, W) for a .pt model')
        from occo_ros.export import cached_onnx

        onnx_path = cached_onnx(request.model_path, request.cache_dir, request.input_size,
                                log=request.log)
        input_size = request.input_size
    else:
        onnx_path = request.model_path
        input_size = request.input_size or onnx_input_size(onnx_path)
        if input_size is None:
            raise EngineError(f'{onnx_path.name} has a dynamic input size: give input_size '
                              '(H, W) for the TensorRT optimisation profile')
    # Loaded even for build_only: deserialising a fresh plan is its validation.
    engine, _ = tensorrt_engine.load_or_build(
        onnx_path, input_size, precision, device, request.cache_dir, build_only=False,
        force_rebuild=request.force_rebuild, log=request.log,
        model_path=str(request.model_path))
    return engine


_CREATORS = {'torch': _torch, 'onnxruntime': _onnxruntime, 'tensorrt': _tensorrt}


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _auto_plan(request: _Request) -> list[tuple[str, str, str, str]]:
    """Candidates (backend, device, precision, note) for 'auto', best first, per the rule
    TensorRT -> ONNX Runtime CUDA -> PyTorch CUDA -> fastest CPU backend."""
    reduced = request.precision != 'fp32'
    gpu_allowed = request.device != 'cpu'
    gpu = 'cuda' if request.device == 'auto' else request.device  # for ONNX Runtime / torch
    plan = []
    if gpu_allowed:
        plan.append(('tensorrt', request.device, request.precision, 'TensorRT'))
    if request.kind == 'engine':
        return plan
    if gpu_allowed and not reduced:
        plan.append(('onnxruntime', gpu, 'fp32', 'ONNX Runtime CUDA'))
    if gpu_allowed and request.kind == 'pt':
        torch_precision = 'fp16' if reduced else 'fp32'  # torch has no int8
        plan.append(('torch', gpu, torch_precision, 'PyTorch CUDA'))
    if request.device in ('auto', 'cpu'):
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
        import torch

        if not torch.cuda.is_available():
            return 'torch.cuda.is_available() is False'
    return None


def _create_auto(request: _Request) -> tuple[FusionEngine, str]:
    """Try the auto candidates in order; the engine and the reason for the choice."""
    skipped = []
    for backend, device, precision, note in _auto_plan(request):
        label = f'{backend} on {device}'
        problem = _probe(backend, device)
        if problem is None:
            try:
                engine = _CREATORS[backend](request, device, precision)
            except EngineError as exc:
                problem = str(exc)
            except Exception as exc:  # auto must fall back, not stop the node
                problem = f'unexpected {type(exc).__name__}: {exc}'
            else:
                if precision != request.precision:
                    note += (f' (precision {request.precision} unavailable there, '
                             f'using {precision})')
                reason = f'auto chose {label}: {note}'
                if skipped:
                    reason += '; skipped ' + '; '.join(skipped)
                return engine, reason
        skipped.append(f'{label} ({problem})')
        request.log(f'backend auto: {label} unavailable: {problem}')
    raise EngineError(f'backend auto found no usable backend for {request.model_path.name} on '
                      f'device {request.device!r}: ' + '; '.join(skipped))


def create_engine(
    backend: str,
    model_path: str,
    device: str = 'auto',
    precision: str = 'fp32',
    input_size: tuple[int, int] | None = None,
    cache_dir: str | None = None,
    build_only: bool = False,
    force_rebuild: bool = False,
    num_threads: int | None = None,
    log: Callable[[str], None] | None = None,
) -> FusionEngine:
    """Create the inference engine for `model_path`.

    Args:
        backend: one of BACKENDS. 'auto' tries TensorRT, ONNX Runtime CUDA, PyTorch CUDA,
            then ONNX Runtime on CPU (faster than PyTorch on CPU, CPU_CHOICE), using what is
            installed and working; the choice and the skipped candidates with their reasons
            go to EngineInfo.details['reason'].
        model_path: .pt checkpoint, .onnx export or .engine/.plan TensorRT file.
        device: 'auto', 'cpu', 'cuda', 'cuda:N', or 'dla:K' (TensorRT DLA core K).
        precision: 'fp32', 'fp16' or 'int8' (requested; EngineInfo.precision reports what
            runs, e.g. 'auto' on a CPU runs fp32).
        input_size: (H, W) in pixels the engine will see; required by tensorrt for .pt and
            dynamic .onnx models, checked by onnxruntime against fixed-shape models.
        cache_dir: ONNX export and engine cache (None: $OCCO_ROS_CACHE or
            ~/.cache/occo_ros/engines).
        build_only: the caller only wants the cached artifacts (ONNX export, TensorRT
            engine, ONNX Runtime optimised model) built or validated and will exit; the
            engine is still returned (loading a fresh plan is what validates it).
        force_rebuild: rebuild the TensorRT engine even if a valid one is cached.
        num_threads: CPU threads for torch / onnxruntime (None: library default).
        log: receives one line per decision (default: the 'occo_ros.engines' logger).

    Returns:
        A FusionEngine (a SelectedEngine wrapping the backend).

    Raises:
        EngineError: invalid argument, or no backend could run the model; the message says
            what was found and what was expected. An unexpected exception from a backend
            library is wrapped (its type named); 'auto' logs it and tries the next one.
    """
    if log is None:
        log = logging.getLogger('occo_ros.engines').info
    if backend not in BACKENDS:
        raise EngineError(f'backend {backend!r} is not one of {BACKENDS}')
    if precision not in PRECISIONS:
        raise EngineError(f'precision {precision!r} is not one of {PRECISIONS}')
    path = Path(model_path).expanduser()
    if path.suffix not in MODEL_SUFFIXES:
        raise EngineError(f'model {path.name}: expected one of {MODEL_SUFFIXES}')
    if not path.is_file():
        raise EngineError(f'model file not found: {path}')
    if input_size is not None:
        if len(input_size) != 2 or min(input_size) < 8:
            raise EngineError(f'input_size must be (H, W) with H, W >= 8, got {input_size}')
        input_size = (int(input_size[0]), int(input_size[1]))
    request = _Request(path, device, precision, input_size, cache_dir, force_rebuild,
                       num_threads, log)
    if backend == 'auto':
        engine, reason = _create_auto(request)
    else:
        try:
            engine = _CREATORS[backend](request, device, precision)
        except EngineError:
            raise
        except Exception as exc:  # a library failing in a way not anticipated: say which
            raise EngineError(f'backend {backend!r} failed to load {path.name}: unexpected '
                              f'{type(exc).__name__}: {exc}') from exc
        reason = f'backend {backend!r} requested'
    selected = SelectedEngine(engine, reason)
    log(f'inference engine: {selected.info.backend} on {selected.info.device}, '
        f'{selected.info.precision} ({reason})' + ('; build_only: cached artifacts are ready'
                                                   if build_only else ''))
    return selected
