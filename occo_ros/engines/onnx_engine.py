"""ONNX Runtime backend: CPU (graph optimisation level ALL, optimised-model cache), CUDA and
TensorRT execution providers where the installed onnxruntime has them.

Precision: fp32 only. The exported graph is fp32; reduced precision belongs to the
TensorRT backend, which keeps the attention context in FP32 (OCCO_METHOD.md §2).

Optimised-model cache (CPU only): the first session saves ONNX Runtime's optimised graph
(layout transforms, fusions) next to the engine cache; later starts load it with
optimisation off, which cuts session creation several-fold (0.31 s -> 0.07 s for width 0.25
on a 2-core Xeon). The optimised graph may contain CPU-specific kernels, so its cache key
(occo_ros.model.artifact_cache sidecar) holds the source sha256, the onnxruntime version and a
CPU signature.
"""

from __future__ import annotations

from collections.abc import Callable
import contextlib
import hashlib
import logging
import os
from pathlib import Path
import platform

import numpy as np

from occo_ros.engines.base import EngineInfo, FusionEngine
from occo_ros.model.artifact_cache import (
    default_cache_dir,
    sha256_file,
    stale_reason,
    write_artifact,
)
from occo_ros.model.contract import (
    INPUT_NAMES,
    OUTPUT_NAME,
    EngineError,
    size_problem,
    validate_inputs,
)

_LOG = logging.getLogger('occo_ros.onnxruntime')

CPU_EP = 'CPUExecutionProvider'
CUDA_EP = 'CUDAExecutionProvider'
TENSORRT_EP = 'TensorrtExecutionProvider'


def import_onnxruntime() -> object:
    """The onnxruntime module; EngineError naming the package when it is missing."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise EngineError(
            f'onnxruntime not found: pip install onnxruntime (CPU) or onnxruntime-gpu ({exc})'
        ) from exc
    return onnxruntime


def cpu_signature() -> str:
    """Short hash of the CPU model and instruction-set flags (keys the optimised-model cache)."""
    text = platform.machine()
    with contextlib.suppress(OSError):
        lines = Path('/proc/cpuinfo').read_text(encoding='utf-8', errors='replace').splitlines()
        text += ''.join(sorted({line for line in lines
                                if line.startswith(('model name', 'flags', 'Features'))}))
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def select_providers(
    device: str, available: list[str], cache_dir: Path
) -> list[tuple[str, dict]]:
    """Execution providers (name, options) for `device`, best first.

    'cpu': CPU only. 'cuda' / 'cuda:N': TensorRT EP (if built in) and CUDA EP on GPU N,
    CPU last for unsupported nodes; EngineError if this onnxruntime has no CUDA EP.
    'auto': as 'cuda' when the CUDA EP is built in, else CPU.
    """
    if device == 'cpu':
        return [(CPU_EP, {})]
    if device == 'auto':
        if CUDA_EP not in available:
            return [(CPU_EP, {})]
        gpu = 0
    elif device == 'cuda' or (device.startswith('cuda:') and device[5:].isdigit()):
        if CUDA_EP not in available:
            raise EngineError(
                f'device {device!r} needs onnxruntime-gpu (CUDAExecutionProvider); this '
                f'onnxruntime has {available}')
        gpu = int(device[5:]) if device != 'cuda' else 0
    else:
        raise EngineError(
            f"device {device!r} is not valid for onnxruntime; use 'auto', 'cpu', 'cuda' or "
            "'cuda:N'")
    providers = []
    if TENSORRT_EP in available:
        providers.append((TENSORRT_EP, {
            'device_id': gpu, 'trt_engine_cache_enable': True,
            'trt_engine_cache_path': str(cache_dir / 'ort_tensorrt')}))
    return providers + [(CUDA_EP, {'device_id': gpu}), (CPU_EP, {})]


class OnnxRuntimeEngine(FusionEngine):
    """FIFN through ONNX Runtime.

    Args:
        model_path: .onnx file from occo-export, or a .pt checkpoint (exported once to ONNX
            in `cache_dir`: fixed shape when input_size is given, else dynamic).
        device: 'auto', 'cpu', 'cuda' or 'cuda:N' (see select_providers).
        precision: 'fp32' (the only precision of this backend).
        num_threads: intra-op CPU threads; None = onnxruntime's default (one per core).
        cache_dir: folder for the ONNX export and the optimised model (None:
            $OCCO_ROS_CACHE or ~/.cache/occo_ros/engines).
        input_size: (H, W) expected at run time; checked against a fixed-shape model.
        log: receives one line per decision (export reuse, providers, cache).

    Raises:
        EngineError: bad argument, missing or corrupt model file, a model without the FIFN
            inputs/outputs, or CUDA requested but not active.
    """

    def __init__(
        self,
        model_path: str,
        device: str = 'auto',
        precision: str = 'fp32',
        num_threads: int | None = None,
        cache_dir: str | None = None,
        input_size: tuple[int, int] | None = None,
        log: Callable[[str], None] = _LOG.info,
    ) -> None:
        ort = import_onnxruntime()
        if precision != 'fp32':
            raise EngineError(
                f"the onnxruntime backend runs 'fp32' only, not {precision!r}; use backend "
                "'tensorrt' for fp16/int8 (it keeps the attention context in FP32)")
        if num_threads is not None and num_threads < 1:
            raise EngineError(f'num_threads must be >= 1 or None, got {num_threads}')
        self._log = log
        self._cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self._onnx_path = self._resolve_model(Path(model_path), input_size)
        providers = select_providers(device, ort.get_available_providers(), self._cache)
        self._session, cache_state = self._create_session(ort, providers, num_threads)
        active = self._session.get_providers()
        if CUDA_EP in [name for name, _ in providers] and CUDA_EP not in active:
            message = (f'device {device!r}: ONNX Runtime fell back to {active} (CUDA runtime '
                       'or cuDNN missing or mismatched?)')
            if device != 'auto':
                raise EngineError(message)
            log(message)
        self._inputs = self._check_io(self._session)
        if input_size is not None:
            self._check_shape(input_size, 'input_size')
        metadata = self._session.get_modelmeta().custom_metadata_map
        self._info = EngineInfo(
            backend='onnxruntime', device=active[0], precision='fp32',
            model_path=str(model_path),
            details={'onnxruntime': ort.__version__, 'providers': active,
                     'requested_providers': [name for name, _ in providers],
                     'onnx_path': str(self._onnx_path), 'optimized_model_cache': cache_state,
                     'threads': num_threads, 'input_shape': self._inputs,
                     'width': metadata.get('model_width'), 'opset': metadata.get('opset')})
        log(f'onnxruntime {ort.__version__} running {self._onnx_path.name} on {active} '
            f'(optimised-model cache: {cache_state})')

    def _resolve_model(self, path: Path, input_size: tuple[int, int] | None) -> Path:
        """The ONNX file to run: `path` itself, or the cached export of a .pt checkpoint."""
        if not path.is_file():
            raise EngineError(f'model file not found: {path}')
        if path.suffix not in ('.onnx', '.pt'):
            raise EngineError(
                f'onnxruntime runs .onnx models or .pt checkpoints, got {path.name}')
        from occo_ros.model.onnx_cache import resolve_onnx

        return resolve_onnx(path, input_size, self._cache, self._log)

    def _session_options(self, ort: object, num_threads: int | None, level: object) -> object:
        options = ort.SessionOptions()
        options.graph_optimization_level = level
        if num_threads is not None:
            options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1  # one sequential graph: no parallel branches to run
        # Idle worker threads sleep instead of spinning: on a robot's few cores the spinning
        # threads steal the CPU that the camera callbacks and pre/post-processing need.
        # make demo on 2 cores: 5.9 instead of 3.7 fused frames/s (docs/PERFORMANCE.md).
        options.add_session_config_entry('session.intra_op.allow_spinning', '0')
        return options

    def _create_session(
        self, ort: object, providers: list[tuple[str, dict]], num_threads: int | None
    ) -> tuple[object, str]:
        """InferenceSession, from the optimised-model cache where possible (CPU only)."""
        names = [name for name, _ in providers]
        options = [opts for _, opts in providers]
        level_all = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if names != [CPU_EP]:
            return self._open(ort, self._onnx_path,
                              self._session_options(ort, num_threads, level_all),
                              names, options), 'disabled (non-CPU providers)'
        source_sha = sha256_file(self._onnx_path)
        optimized = self._cache / 'ort' / f'{self._onnx_path.stem}.{source_sha[:12]}.opt.onnx'
        key = {'source_sha256': source_sha, 'onnxruntime': ort.__version__,
               'cpu_signature': cpu_signature()}
        problem = stale_reason(optimized, key)
        if problem is None:
            try:
                return self._open(
                    ort, optimized, self._session_options(
                        ort, num_threads, ort.GraphOptimizationLevel.ORT_DISABLE_ALL),
                    names, options), f'hit {optimized}'
            except EngineError as exc:
                problem = f'unusable ({exc})'
        if optimized.is_file():
            self._log(f'optimised-model cache {optimized.name} not used: {problem}; '
                      'recreating it')
        optimized.parent.mkdir(parents=True, exist_ok=True)
        # one temporary name per process: two nodes starting together on an empty cache
        # (namespaced instances of one launch) must not write into the same file
        temp = optimized.with_name(f'.{optimized.name}.{os.getpid()}.tmp')
        session_options = self._session_options(ort, num_threads, level_all)
        session_options.optimized_model_filepath = str(temp)
        # The "hardware specific optimizations" warning ONNX Runtime logs when saving is
        # handled by keying the file on cpu_signature().
        session_options.log_severity_level = 3
        session = self._open(ort, self._onnx_path, session_options, names, options)
        if temp.is_file():
            temp.replace(optimized)  # atomic: a reader never sees a half-written model
            write_artifact(optimized, None, key)
            return session, f'written {optimized}'
        return session, 'not written'

    @staticmethod
    def _open(ort: object, path: Path, options: object, names: list[str],
              provider_options: list[dict]) -> object:
        """InferenceSession; EngineError naming the file when ONNX Runtime rejects it."""
        try:
            return ort.InferenceSession(str(path), options, providers=names,
                                        provider_options=provider_options)
        except Exception as exc:  # onnxruntime raises Fail / InvalidProtobuf / InvalidGraph
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise EngineError(
                f'ONNX Runtime cannot load {path}: {first} (corrupt or truncated file? '
                're-export it with occo-export)') from exc

    def _check_io(self, session: object) -> tuple:
        """The model's input shape (ints or dim names); EngineError unless it is FIFN's IO."""
        inputs = {value.name: value for value in session.get_inputs()}
        outputs = [value.name for value in session.get_outputs()]
        if sorted(inputs) != sorted(INPUT_NAMES) or outputs != [OUTPUT_NAME]:
            raise EngineError(
                f'{self._onnx_path} has inputs {sorted(inputs)} and outputs {outputs}; '
                f'expected inputs {list(INPUT_NAMES)} and output [{OUTPUT_NAME!r}] '
                '(an FIFN export from occo-export)')
        shape = tuple(inputs[INPUT_NAMES[0]].shape)
        if len(shape) != 4 or inputs[INPUT_NAMES[0]].type != 'tensor(float)':
            raise EngineError(f'{self._onnx_path}: input {INPUT_NAMES[0]} is '
                              f'{inputs[INPUT_NAMES[0]].type} {shape}, expected float (N,1,H,W)')
        return shape

    def _check_shape(self, size: tuple[int, int], what: str) -> None:
        """EngineError if (H, W) does not fit the model (fixed dims) or the network minimum."""
        fixed = [dim if isinstance(dim, int) else None for dim in self._inputs[2:]]
        if any(want is not None and want != got for want, got in zip(fixed, size)):
            raise EngineError(
                f'{self._onnx_path.name} is a fixed-shape model for HxW {fixed[0]}x{fixed[1]}; '
                f'{what} is {size[0]}x{size[1]} (re-export with --height {size[0]} --width '
                f'{size[1]}, or --dynamic)')
        problem = size_problem(*size)
        if problem:
            raise EngineError(f'{what} is {problem}')

    @property
    def info(self) -> EngineInfo:
        return self._info

    def infer(self, visible_y: np.ndarray, infrared: np.ndarray) -> np.ndarray:
        """Fuse float32 (N, 1, H, W) visible Y and infrared in [0, 1] -> float32 (N, 1, H, W)."""
        if self._session is None:
            raise EngineError('the onnxruntime engine was closed; create a new one')
        validate_inputs(visible_y, infrared)
        self._check_shape(visible_y.shape[2:], 'the input')
        batch = self._inputs[0]
        if isinstance(batch, int) and visible_y.shape[0] != batch:
            raise EngineError(f'{self._onnx_path.name} takes batch {batch}, got '
                              f'{visible_y.shape[0]}')
        return self._session.run([OUTPUT_NAME], {INPUT_NAMES[0]: visible_y,
                                                 INPUT_NAMES[1]: infrared})[0]

    def close(self) -> None:
        """Release the session; infer raises EngineError afterwards."""
        self._session = None
