"""TensorRT backend: engine build (fp32 / fp16 / int8, optional DLA), cache policy, execution.

Works with the Python API of TensorRT 8.6 (JetPack 6.0) and 10.x. Both have the
tensor-name API (num_io_tensors, get_tensor_name, set_input_shape, set_tensor_address,
execute_async_v3, since 8.5), so the code branches on the version only where the API
differs: the explicit-batch network flag (required in 8.x, implicit in 10.x). The build
progress monitor is used where the module has one (feature test, not a version test).

tensorrt and pycuda are imported lazily: importing this module never fails, and a missing
package raises EngineError naming what to install (the factory then falls back).

Three separate steps (STYLE_EXAMPLES.md "absorb" item 6):
    configuration: `parse_device`, `engine_key`       (what the engine must match)
    cache decision: engine_cache.resolve_engine       (load / validate / rebuild, logged)
    execution: `TensorRTEngine`                        (pinned buffers, one stream, enqueueV3)

FP16 safety (OCCO_METHOD.md §2): the attention context K^T.V / sqrt(d) and its softmax
exceed the FP16 range at high resolutions, so the layers export.py named
'.../attention_context_<k>/...' are pinned to FP32 (layer precision + output type) and the
builder is told to obey those constraints.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
import contextlib
import importlib
import json
from pathlib import Path
import re
import threading
import time
import types

import numpy as np

from occo_ros.atomic_file import atomic_write_bytes
from occo_ros.engines.base import EngineError, EngineInfo, FusionEngine, validate_inputs
from occo_ros.engines.engine_cache import (
    INPUT_NAMES,
    OUTPUT_NAME,
    PRECISIONS,
    BuiltPlan,
    CacheResult,
    EngineKey,
    TensorSpec,
    default_cache_dir,
    io_problems,
    parse_version,
    plan_trt_version,
    resolve_engine,
    sha256_file,
)

#: Layer names pinned to FP32 in fp16/int8 engines (export.py names these ONNX nodes).
FP32_LAYER_PATTERN = re.compile(r'/attention_context_\d+/')
#: Seconds between "building..." lines while a plan is built.
PROGRESS_INTERVAL_S = 10.0
#: Calibration images used for INT8 when a folder holds more (entropy calibration saturates).
MAX_CALIBRATION_PAIRS = 64

TRT_MISSING = (
    "TensorRT Python package not found: install JetPack's python3-libnvinfer "
    '(sudo apt install python3-libnvinfer) on a Jetson, or the tensorrt wheel matching your '
    'CUDA on a PC')
PYCUDA_MISSING = (
    'pycuda not found: pip install pycuda (it compiles against the CUDA toolkit: nvcc and '
    'cuda.h must be on the path, e.g. /usr/local/cuda/bin)')


def import_tensorrt() -> types.ModuleType:
    """The tensorrt module; EngineError (what to install) when it is missing or broken."""
    try:
        return importlib.import_module('tensorrt')
    except ImportError as exc:
        raise EngineError(f'{TRT_MISSING} ({exc})') from exc


def import_pycuda_driver() -> types.ModuleType:
    """pycuda.driver, initialised; EngineError when pycuda or the CUDA driver is missing."""
    try:
        driver = importlib.import_module('pycuda.driver')
    except ImportError as exc:
        raise EngineError(f'{PYCUDA_MISSING} ({exc})') from exc
    try:
        driver.init()
    except Exception as exc:  # pycuda raises its own LogicError/RuntimeError types
        raise EngineError(f'CUDA driver could not be initialised by pycuda: {exc}') from exc
    if driver.Device.count() < 1:
        raise EngineError('pycuda found no CUDA device; TensorRT needs an NVIDIA GPU')
    return driver


@contextlib.contextmanager
def cuda_context(driver: types.ModuleType, gpu: int):
    """Make GPU `gpu`'s primary context (the one TensorRT uses) current in this thread."""
    context = driver.Device(gpu).retain_primary_context()
    context.push()
    try:
        yield context
    finally:
        context.pop()
        context.detach()


def tensorrt_version(trt: types.ModuleType) -> str:
    """Full version string of the imported tensorrt module, e.g. '8.6.2.3'."""
    version = getattr(trt, '__version__', None)
    if not isinstance(version, str):
        raise EngineError('the tensorrt module has no __version__; is it a real TensorRT?')
    return version


def parse_device(device: str) -> tuple[int, int | None]:
    """'auto' | 'cuda' | 'cuda:N' | 'dla' | 'dla:K' -> (GPU index, DLA core or None).

    Raises:
        EngineError: anything else (TensorRT cannot run on 'cpu').
    """
    match = re.fullmatch(r'(auto|cuda|dla)(?::(\d+))?', device)
    if match is None or (match.group(1) == 'auto' and match.group(2) is not None):
        raise EngineError(
            f"device {device!r} is not valid for TensorRT; use 'auto', 'cuda', 'cuda:N' "
            "(GPU N) or 'dla:K' (DLA core K of GPU 0)")
    kind, index = match.group(1), int(match.group(2) or 0)
    return (0, index) if kind == 'dla' else (index, None)


def engine_key(
    onnx_path: Path, precision: str, input_shape: tuple[int, int], device: str
) -> EngineKey:
    """The cache key for building `onnx_path` on this machine (imports tensorrt + pycuda)."""
    trt = import_tensorrt()
    driver = import_pycuda_driver()
    gpu, dla_core = parse_device(device)
    if gpu >= driver.Device.count():
        raise EngineError(f'device {device!r}: only {driver.Device.count()} CUDA device(s)')
    cuda_device = driver.Device(gpu)
    major, minor = cuda_device.compute_capability()
    return EngineKey(sha256_file(onnx_path), tensorrt_version(trt), cuda_device.name(),
                     f'{major}.{minor}', dla_core, precision, tuple(input_shape))


def describe_io(engine: object, trt: types.ModuleType) -> list[TensorSpec]:
    """Names, directions, shapes and dtypes of a deserialised engine's IO tensors."""
    specs = []
    for index in range(engine.num_io_tensors):
        name = engine.get_tensor_name(index)
        specs.append(TensorSpec(
            name=name,
            is_input=engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT,
            shape=tuple(int(dim) for dim in engine.get_tensor_shape(name)),
            dtype=np.dtype(trt.nptype(engine.get_tensor_dtype(name))).name))
    return specs


def _make_logger(trt: types.ModuleType, log: Callable[[str], None]) -> object:
    """A trt.ILogger forwarding warnings and errors to `log` (TensorRT info is too chatty)."""

    severity = trt.ILogger.Severity
    shown = {severity.INTERNAL_ERROR, severity.ERROR, severity.WARNING}

    class Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, level: object, msg: str) -> None:
            if level in shown:
                log(f'[TensorRT] {msg}')

    return Logger()


def calibration_pairs(calibration_dir: str | Path) -> list[tuple[Path, Path]]:
    """(visible, infrared) image paths from `<dir>/vi` and `<dir>/ir` with the same stem.

    Raises:
        EngineError: folder layout wrong or no pair found.
    """
    root = Path(calibration_dir)
    folders = {name: root / name for name in ('vi', 'ir')}
    missing = [str(path) for path in folders.values() if not path.is_dir()]
    if missing:
        raise EngineError(
            f'calibration folder {root} must hold vi/ and ir/ subfolders with images of the '
            f'same name (like ../shared/data/train/msrs); missing {missing}')
    infrared = {path.stem: path for path in folders['ir'].iterdir() if path.is_file()}
    pairs = [(path, infrared[path.stem]) for path in sorted(folders['vi'].iterdir())
             if path.stem in infrared]
    if not pairs:
        raise EngineError(f'no visible/infrared pair with matching names in {root}')
    return pairs


def calibration_batches(
    calibration_dir: str | Path, height: int, width: int, limit: int = MAX_CALIBRATION_PAIRS
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Network inputs for INT8 calibration: (visible Y, infrared), each float32 (1, 1, H, W).

    Images are resized to W x H (area interpolation) and scaled /255; the visible image is
    reduced to BT.601 luma (OpenCV's gray weights 0.299, 0.587, 0.114 equal OCCO's Y).
    At most `limit` pairs, evenly spread over the sorted names.
    """
    import cv2  # only calibration needs OpenCV here

    pairs = calibration_pairs(calibration_dir)
    step = max(1, len(pairs) // limit)
    for visible_path, infrared_path in pairs[::step][:limit]:
        visible = cv2.imread(str(visible_path), cv2.IMREAD_GRAYSCALE)
        infrared = cv2.imread(str(infrared_path), cv2.IMREAD_GRAYSCALE)
        if visible is None or infrared is None:
            raise EngineError(f'cannot read calibration pair {visible_path} / {infrared_path}')
        yield tuple(
            (cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
             .astype(np.float32) / 255.0)[None, None] for image in (visible, infrared))


def _make_calibrator(
    trt: types.ModuleType, driver: types.ModuleType,
    batches: Iterator[tuple[np.ndarray, np.ndarray]], cache_path: Path,
    log: Callable[[str], None],
) -> object:
    """An IInt8EntropyCalibrator2 feeding `batches`; its scale cache lives at `cache_path`."""

    class Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.count = 0
            self.buffers: dict[str, object] = {}

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: list[str]) -> list[int] | None:
            try:
                arrays = dict(zip(INPUT_NAMES, next(batches)))
            except StopIteration:
                return None
            for name, array in arrays.items():
                if name not in self.buffers:
                    self.buffers[name] = driver.mem_alloc(array.nbytes)
                driver.memcpy_htod(self.buffers[name], np.ascontiguousarray(array))
            self.count += 1
            return [int(self.buffers[name]) for name in names]

        def read_calibration_cache(self) -> bytes | None:
            if cache_path.is_file():
                log(f'INT8 calibration: reusing scales from {cache_path}')
                return cache_path.read_bytes()
            return None

        def write_calibration_cache(self, cache: object) -> None:
            atomic_write_bytes(cache_path, bytes(cache))
            log(f'INT8 calibration: {self.count} pairs, scales cached at {cache_path}')

        def release(self) -> None:
            """Free the device buffers (while their CUDA context is still current)."""
            for buffer in self.buffers.values():
                buffer.free()
            self.buffers.clear()

    return Calibrator()


@contextlib.contextmanager
def _build_progress(trt: types.ModuleType, config: object, log: Callable[[str], None]):
    """Log progress while the builder runs: TensorRT's progress monitor where the module has
    one, else a thread printing the elapsed time every PROGRESS_INTERVAL_S seconds."""
    started = time.monotonic()
    if hasattr(trt, 'IProgressMonitor'):
        class Monitor(trt.IProgressMonitor):
            def __init__(self) -> None:
                trt.IProgressMonitor.__init__(self)
                self.last = 0.0

            def phase_start(self, phase_name: str, parent_phase: str | None,
                            num_steps: int) -> None:
                now = time.monotonic()
                if parent_phase is None or now - self.last >= PROGRESS_INTERVAL_S:
                    self.last = now
                    log(f'building engine: {phase_name} ({num_steps} steps), '
                        f'elapsed {now - started:.0f} s')

            def step_complete(self, phase_name: str, step: int) -> bool:
                return True  # never cancel

            def phase_finish(self, phase_name: str) -> None:
                pass

        monitor = Monitor()  # referenced here: TensorRT does not keep the Python object alive
        config.progress_monitor = monitor
        yield
        return
    done = threading.Event()

    def report() -> None:
        while not done.wait(PROGRESS_INTERVAL_S):
            log(f'building engine... elapsed {time.monotonic() - started:.0f} s '
                '(first builds take minutes on a Jetson)')

    thread = threading.Thread(target=report, name='trt-build-progress', daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def pin_fp32_layers(network: object, trt: types.ModuleType) -> list[str]:
    """Set precision and output types to FP32 on layers named like FP32_LAYER_PATTERN.

    Layers whose outputs are not floating point (shape arithmetic) are left alone.
    Returns the names of the pinned layers.
    """
    floats = (trt.float32, trt.float16)
    pinned = []
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        label = f'{layer.name} {getattr(layer, "metadata", "")}'
        if not FP32_LAYER_PATTERN.search(label):
            continue
        outputs = [layer.get_output(i) for i in range(layer.num_outputs)]
        if not all(output.dtype in floats for output in outputs):
            continue
        layer.precision = trt.float32
        for i in range(layer.num_outputs):
            layer.set_output_type(i, trt.float32)
        pinned.append(layer.name)
    return pinned


def _network_flags(trt: types.ModuleType) -> int:
    """Explicit batch is required in TensorRT 8.x and the only mode (flag deprecated) in 10."""
    if parse_version(tensorrt_version(trt))[0] >= 10:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)


def _parse_onnx(trt: types.ModuleType, builder: object, onnx_path: Path, logger: object):
    """Network and parser for `onnx_path`; EngineError listing the parser's errors."""
    network = builder.create_network(_network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = '; '.join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineError(
            f'TensorRT {tensorrt_version(trt)} could not parse {onnx_path}: {errors} (a '
            'corrupt file, or an opset newer than this TensorRT reads: use --opset 17 for 8.6)')
    return network, parser


def _configure_precision(
    trt: types.ModuleType, builder: object, config: object, precision: str,
    dla_core: int | None, log: Callable[[str], None],
) -> str:
    """Set precision / DLA flags; returns the precision actually used."""
    used = precision
    if precision == 'int8' and not getattr(builder, 'platform_has_fast_int8', True):
        used = 'fp16'
        log('this GPU has no fast INT8; building fp16 instead')
    if used in ('fp16', 'int8'):
        if getattr(builder, 'platform_has_fast_fp16', True):
            config.set_flag(trt.BuilderFlag.FP16)  # int8 engines fall back to fp16, not fp32
        elif used == 'fp16':
            used = 'fp32'
            log('this GPU has no fast FP16; building fp32 instead')
    if used == 'int8':
        config.set_flag(trt.BuilderFlag.INT8)
    if used != 'fp32':
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    if dla_core is not None:
        if used == 'fp32':
            raise EngineError(f"DLA core {dla_core} runs fp16 or int8 only, not '{precision}'")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)  # unsupported layers run on the GPU
    return used


def build_engine(
    onnx_path: str | Path,
    precision: str,
    input_shape: tuple[int, int],
    calibration_dir: str | Path | None = None,
    dla_core: int | None = None,
    workspace_mb: int = 1024,
    log: Callable[[str], None] = print,
    calibration_cache: Path | None = None,
    gpu_index: int = 0,
) -> BuiltPlan:
    """Build a serialized TensorRT plan from an FIFN ONNX file.

    Args:
        onnx_path: ONNX model from export.py (fixed or dynamic H x W).
        precision: 'fp32', 'fp16' or 'int8' (int8 adds fp16 fallback and needs calibration).
        input_shape: (H, W) of the engine (the optimisation profile of a dynamic model).
        calibration_dir: folder with vi/ and ir/ image pairs for INT8 calibration.
        dla_core: build for this DLA core (fp16/int8; unsupported layers fall back to GPU).
        workspace_mb: builder workspace limit in MiB.
        log: receives progress and warnings.
        calibration_cache: INT8 scale cache file; reused when present (then calibration_dir
            may be None), written after calibration.
        gpu_index: CUDA device the calibrator's buffers live on.

    Returns:
        BuiltPlan with the plan bytes, the precision actually used and build facts.

    Raises:
        EngineError: TensorRT/pycuda missing, parse or build failure, int8 without data.
    """
    if precision not in PRECISIONS:
        raise EngineError(f'precision {precision!r} is not one of {PRECISIONS}')
    trt = import_tensorrt()
    onnx_path = Path(onnx_path)
    logger = _make_logger(trt, log)
    builder = trt.Builder(logger)
    network, _parser = _parse_onnx(trt, builder, onnx_path, logger)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    inputs = [network.get_input(index) for index in range(network.num_inputs)]
    if any(-1 in tuple(tensor.shape) for tensor in inputs):  # dynamic ONNX: fix the profile
        profile = builder.create_optimization_profile()
        shape = (1, 1, *input_shape)
        for tensor in inputs:
            profile.set_shape(tensor.name, shape, shape, shape)
        config.add_optimization_profile(profile)
    used = _configure_precision(trt, builder, config, precision, dla_core, log)
    pinned = pin_fp32_layers(network, trt) if used != 'fp32' else []
    if used != 'fp32':
        log(f'{len(pinned)} attention-context layers pinned to FP32')
    if used == 'int8':
        has_cache = calibration_cache is not None and calibration_cache.is_file()
        if calibration_dir is None and not has_cache:
            raise EngineError(
                "precision 'int8' needs calibration images: run occo-build-engine --precision "
                'int8 --calibration-dir DIR (vi/ and ir/ pairs) once; its scale cache is then '
                'reused')
    log(f'building TensorRT {tensorrt_version(trt)} engine from {onnx_path.name}: '
        f'{used}, input {input_shape[0]}x{input_shape[1]}'
        + (f', DLA core {dla_core}' if dla_core is not None else ''))
    with contextlib.ExitStack() as stack:
        if used == 'int8':
            driver = import_pycuda_driver()
            stack.enter_context(cuda_context(driver, gpu_index))  # calibrator buffers
            batches = (iter(()) if calibration_dir is None
                       else calibration_batches(calibration_dir, *input_shape))
            # Kept in a local for the whole build: TensorRT holds only a raw pointer.
            calibrator = _make_calibrator(
                trt, driver, batches, calibration_cache or onnx_path.with_suffix(
                    f'.{input_shape[0]}x{input_shape[1]}.calib'), log)
            config.int8_calibrator = calibrator
            stack.callback(calibrator.release)  # runs before the context is popped
        stack.enter_context(_build_progress(trt, config, log))
        plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineError(
            f'TensorRT failed to build an engine from {onnx_path} ({used}); see the TensorRT '
            'messages above (workspace too small? try --workspace-mb 2048)')
    return BuiltPlan(bytes(plan), used, {'fp32_layers': len(pinned),
                                         'calibration_dir': str(calibration_dir or '')})


class TensorRTEngine(FusionEngine):
    """A deserialised TensorRT plan with pinned host buffers, device buffers and one stream.

    Args:
        plan: serialized engine bytes.
        model_path: the file the plan came from (reported in EngineInfo).
        input_size: (H, W) the engine runs at (sets the input shape of dynamic engines);
            None: the engine's fixed input size.
        precision: precision the plan was built with (reported).
        device: 'auto', 'cuda', 'cuda:N' or 'dla:K' (see parse_device).
        details: extra facts for EngineInfo.details (cache decision, build time).
        log: receives TensorRT warnings and errors.

    Raises:
        EngineError: TensorRT/pycuda missing, deserialisation failure (plan built by another
            TensorRT version or for another GPU), or IO tensors that do not match FIFN.
    """

    def __init__(self, plan: bytes, model_path: str, input_size: tuple[int, int] | None,
                 precision: str, device: str = 'auto', details: dict | None = None,
                 log: Callable[[str], None] = print) -> None:
        trt = import_tensorrt()
        self._cuda = import_pycuda_driver()
        gpu, dla_core = parse_device(device)
        self._model_path = str(model_path)
        self._context = None
        # Kept for the engine's lifetime and pushed around every call, so infer() works
        # from any thread (ROS executors call from worker threads).
        self._primary = self._cuda.Device(gpu).retain_primary_context()
        self._primary.push()
        try:
            self._setup(trt, plan, input_size, dla_core, log)
        except BaseException:
            self._primary.pop()
            self._primary.detach()
            raise
        self._primary.pop()
        where = f'dla:{dla_core}' if dla_core is not None else f'cuda:{gpu}'
        self._info = EngineInfo(
            backend='tensorrt', device=where, precision=precision, model_path=self._model_path,
            details={'tensorrt': tensorrt_version(trt), 'gpu': self._cuda.Device(gpu).name(),
                     'input_size': list(self._shape[2:]), **(details or {})})

    def _setup(self, trt: types.ModuleType, plan: bytes, input_size: tuple[int, int] | None,
               dla_core: int | None, log: Callable[[str], None]) -> None:
        """Deserialise, validate IO, set shapes, allocate buffers (CUDA context pushed)."""
        self._logger = _make_logger(trt, log)  # must outlive the runtime and engine
        self._runtime = trt.Runtime(self._logger)
        if dla_core is not None:
            self._runtime.DLA_core = dla_core
        self._engine = self._runtime.deserialize_cuda_engine(plan)
        if self._engine is None:
            built_with = plan_trt_version(plan)
            raise EngineError(
                f'TensorRT {tensorrt_version(trt)} could not deserialise {self._model_path} '
                f'(plan header says TensorRT '
                f'{".".join(map(str, built_with)) if built_with else "?"}): it was built by '
                'another TensorRT version or for another GPU, or the file is corrupt')
        specs = describe_io(self._engine, trt)
        if input_size is None:
            input_size = fixed_input_size(specs, self._model_path)
        problems = io_problems(specs, *input_size)
        if problems:
            raise EngineError(f'engine {self._model_path} does not fit FIFN at {input_size[0]}x'
                              f'{input_size[1]}: ' + '; '.join(problems))
        self._context = self._engine.create_execution_context()
        self._shape = (1, 1, *input_size)
        for spec in specs:
            if spec.is_input and -1 in spec.shape and not self._context.set_input_shape(
                    spec.name, self._shape):
                raise EngineError(f'engine {self._model_path} refuses input shape {self._shape} '
                                  f'for {spec.name!r} (outside its optimisation profile)')
        self._host = {name: self._cuda.pagelocked_empty(self._shape, np.float32)
                      for name in (*INPUT_NAMES, OUTPUT_NAME)}
        self._device = {name: self._cuda.mem_alloc(array.nbytes)
                        for name, array in self._host.items()}
        for name, buffer in self._device.items():
            self._context.set_tensor_address(name, int(buffer))
        self._stream = self._cuda.Stream()

    @property
    def info(self) -> EngineInfo:
        return self._info

    def infer(self, visible_y: np.ndarray, infrared: np.ndarray) -> np.ndarray:
        """Fuse float32 (1, 1, H, W) inputs (H, W as built) -> float32 (1, 1, H, W) in [0, 1]."""
        if self._context is None:
            raise EngineError('the TensorRT engine was closed; create a new one')
        validate_inputs(visible_y, infrared)
        for name, array in zip(INPUT_NAMES, (visible_y, infrared)):
            if array.shape != self._shape:
                raise EngineError(
                    f'TensorRT engine {Path(self._model_path).name} takes {name} float32 of '
                    f'shape {self._shape}; got {array.dtype} {array.shape} (resize the input or '
                    f'rebuild with input_size=({array.shape[-2]}, {array.shape[-1]}))')
        self._primary.push()
        try:
            for name, array in zip(INPUT_NAMES, (visible_y, infrared)):
                np.copyto(self._host[name], array)
                self._cuda.memcpy_htod_async(self._device[name], self._host[name], self._stream)
            # A refused enqueue records nothing; reading the output would replay the last frame.
            if not self._context.execute_async_v3(self._stream.handle):
                raise EngineError('TensorRT refused to enqueue the inference (execute_async_v3)')
            self._cuda.memcpy_dtoh_async(self._host[OUTPUT_NAME], self._device[OUTPUT_NAME],
                                         self._stream)
            self._stream.synchronize()
        finally:
            self._primary.pop()
        return self._host[OUTPUT_NAME].copy()

    def close(self) -> None:
        """Free device buffers and the engine; infer raises EngineError afterwards."""
        if self._context is None:
            return
        self._primary.push()
        try:
            for buffer in self._device.values():
                buffer.free()
            self._context = self._engine = self._runtime = self._stream = None
        finally:
            self._primary.pop()
        self._primary.detach()


def fixed_input_size(specs: list[TensorSpec], where: str) -> tuple[int, int]:
    """(H, W) of a fixed-shape engine's 'visible_y'; EngineError for a dynamic one."""
    for spec in specs:
        if spec.name == INPUT_NAMES[0] and len(spec.shape) == 4 and min(spec.shape) > 0:
            return spec.shape[2], spec.shape[3]
    raise EngineError(f'engine {where} has no fixed {INPUT_NAMES[0]!r} input shape '
                      f'({[(s.name, s.shape) for s in specs]}); pass input_size (H, W)')


def load_or_build(
    onnx_path: str | Path,
    input_size: tuple[int, int],
    precision: str = 'fp16',
    device: str = 'auto',
    cache_dir: str | Path | None = None,
    build_only: bool = False,
    force_rebuild: bool = False,
    calibration_dir: str | Path | None = None,
    workspace_mb: int = 1024,
    log: Callable[[str], None] = print,
    model_path: str | None = None,
) -> tuple[TensorRTEngine | None, CacheResult]:
    """A TensorRTEngine for `onnx_path` from the engine cache, building it when needed.

    Args:
        onnx_path: FIFN ONNX file.
        input_size: (H, W) of the engine.
        precision: 'fp32', 'fp16' or 'int8' (requested; EngineInfo reports what was used).
        device: see parse_device.
        cache_dir: engine cache folder (None: $OCCO_ROS_CACHE or ~/.cache/occo_ros/engines).
        build_only: build/validate and cache the engine, return (None, result).
        force_rebuild: ignore a cached engine.
        calibration_dir: vi/ + ir/ pairs for INT8 calibration.
        workspace_mb: builder workspace in MiB.
        log: one line per decision and progress.
        model_path: the user's model file (.pt or .onnx) for EngineInfo; default onnx_path.

    Raises:
        EngineError: TensorRT/pycuda missing, build failure, or a fresh plan that won't load.
    """
    onnx_path = Path(onnx_path)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = engine_key(onnx_path, precision, input_size, device)
    calibration_cache = folder / (f'{onnx_path.stem}.{key.onnx_sha256[:12]}.'
                                  f'{input_size[0]}x{input_size[1]}.calib')

    def build() -> BuiltPlan:
        return build_engine(onnx_path, precision, input_size, calibration_dir, key.dla_core,
                            workspace_mb, log, calibration_cache, parse_device(device)[0])

    def load(plan: bytes, sidecar: dict) -> TensorRTEngine:
        return TensorRTEngine(plan, model_path or str(onnx_path), input_size,
                              sidecar.get('precision_used', precision), device, log=log)

    engine, result = resolve_engine(key, folder, onnx_path.stem, build, load, log,
                                    force_rebuild, build_only)
    if engine is not None:
        engine.info.details.update({
            'engine_path': str(result.engine_path), 'cache': result.action,
            'cache_reason': result.reason, 'build_time_s': result.build_time_s,
            'requested_precision': precision})
    return engine, result


def load_engine_file(
    engine_path: str | Path, input_size: tuple[int, int] | None, device: str = 'auto',
    log: Callable[[str], None] = print,
) -> TensorRTEngine:
    """Load a prebuilt .engine/.plan file given directly by the user (no rebuild possible).

    A TensorRT version in the plan header that differs from the installed one is logged
    first; a failure to load names that and what to do. input_size None: taken from the
    engine's fixed input shape.

    Raises:
        EngineError: missing/corrupt file, version mismatch, dynamic engine without
            input_size, or IO that does not match FIFN.
    """
    trt = import_tensorrt()
    engine_path = Path(engine_path)
    if not engine_path.is_file():
        raise EngineError(f'engine file not found: {engine_path}')
    plan = engine_path.read_bytes()
    built_with, installed = plan_trt_version(plan), parse_version(tensorrt_version(trt))
    advice = ('engines are not portable across TensorRT versions or GPUs: pass the .onnx or '
              '.pt model instead so the engine is rebuilt and cached, or rebuild this file with '
              'occo-build-engine')
    if built_with is not None and built_with != installed:
        # The header layout is undocumented, so this is a warning; deserialisation decides.
        log(f'engine {engine_path}: plan header says TensorRT {".".join(map(str, built_with))},'
            f' installed is {".".join(map(str, installed))}; {advice}')
    precision = 'unknown'
    sidecar = engine_path.with_name(engine_path.name + '.json')
    if sidecar.is_file():
        with contextlib.suppress(ValueError, OSError, AttributeError):
            precision = json.loads(sidecar.read_text(encoding='utf-8')).get(
                'precision_used', precision)
    log(f'loading prebuilt TensorRT engine {engine_path} (not cache-managed)')
    try:
        return TensorRTEngine(plan, str(engine_path), input_size, precision, device,
                              {'engine_path': str(engine_path), 'cache': 'user file'}, log)
    except EngineError as exc:
        raise EngineError(f'{exc}; {advice}') from exc
