"""What the TensorRT build and the TensorRT runtime share: the imports (with the supported
versions), the device string, the CUDA context, the one logger, and the step wrapper that
turns any unexpected library exception into an EngineError naming the failing step.

Supported (stated in docs/ENGINES.md and tested through strict fakes, test/fake_tensorrt.py):
TensorRT 8.5 / 8.6 (JetPack 5.1, Python 3.8 / JetPack 6.0), 10.x (JetPack 6.1+, x86 dGPU).
TensorRT >= 11 has strongly typed networks only (no FP16/INT8 builder flags, no calibrator,
no per-layer precision): fp32 engines are built from the fp32 ONNX as it is, fp16 engines
from its fp16 copy with FP32 islands (occo_ros.model.fp16_islands); int8 is refused with a message
naming the supported versions (see tensorrt_build).
"""

from __future__ import annotations

from collections.abc import Iterator
import contextlib
import importlib
import logging
import re
import threading
import types

from occo_ros.engines.tensorrt.cache import parse_version
from occo_ros.model.contract import EngineError

SUPPORTED = ('TensorRT 8.5/8.6 (JetPack 5.1/6.0) and 10.x (JetPack 6.1+, x86) for int8; '
             'fp32 and fp16 also on 11.x')
MIN_VERSION = (8, 5)
#: First major version without weak typing (builder precision flags, calibrators).
STRONGLY_TYPED_MAJOR = 11
TRT_MISSING = (
    "TensorRT Python package not found: install JetPack's python3-libnvinfer "
    '(sudo apt install python3-libnvinfer) on a Jetson, or the tensorrt wheel matching your '
    'CUDA on a PC')
PYCUDA_MISSING = (
    'pycuda not found: pip install pycuda (it compiles against the CUDA toolkit: nvcc and '
    'cuda.h must be on the path, e.g. /usr/local/cuda/bin)')
_LOG = logging.getLogger('occo_ros.tensorrt')


def import_tensorrt() -> types.ModuleType:
    """The tensorrt module; EngineError when it is missing, broken or older than 8.5."""
    try:
        trt = importlib.import_module('tensorrt')
    except ImportError as exc:
        raise EngineError(f'{TRT_MISSING} ({exc})') from exc
    version = tensorrt_version(trt)
    if parse_version(version)[:2] < MIN_VERSION:
        raise EngineError(f'TensorRT {version} is not supported; supported: {SUPPORTED}')
    return trt


def tensorrt_version(trt: types.ModuleType) -> str:
    """Full version string of the imported tensorrt module, e.g. '8.5.2.2'."""
    version = getattr(trt, '__version__', None)
    if not isinstance(version, str) or not re.fullmatch(r'\d+(\.\d+)+', version):
        raise EngineError(f'the tensorrt module has no usable __version__ ({version!r}); is it '
                          'a real TensorRT?')
    return version


def major_version(trt: types.ModuleType) -> int:
    return parse_version(tensorrt_version(trt))[0]


def import_pycuda_driver() -> types.ModuleType:
    """pycuda.driver, initialised; EngineError when pycuda or the CUDA driver is missing."""
    try:
        driver = importlib.import_module('pycuda.driver')
    except ImportError as exc:
        raise EngineError(f'{PYCUDA_MISSING} ({exc})') from exc
    try:
        driver.init()
        count = driver.Device.count()
    except Exception as exc:  # pycuda raises its own LogicError/RuntimeError types
        raise EngineError(f'CUDA driver could not be initialised by pycuda: {exc}') from exc
    if count < 1:
        raise EngineError('pycuda found no CUDA device; TensorRT needs an NVIDIA GPU')
    return driver


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


def check_gpu(driver: types.ModuleType, gpu: int, device: str) -> None:
    count = driver.Device.count()
    if gpu >= count:
        raise EngineError(f'device {device!r}: only {count} CUDA device(s) (0..{count - 1})')


def check_dla(dla_core: int | None, available: int) -> None:
    """EngineError when DLA core `dla_core` does not exist (`available` cores)."""
    if dla_core is not None and dla_core >= available:
        raise EngineError(f'DLA core {dla_core} does not exist: this device has {available} '
                          'DLA core(s) (Jetson AGX Orin/Xavier have 2, Orin Nano none)')


_PRIMARY: dict[tuple[int, int], tuple[types.ModuleType, object]] = {}
_PRIMARY_LOCK = threading.Lock()


def primary_context(driver: types.ModuleType, gpu: int) -> object:
    """GPU `gpu`'s primary context (the one TensorRT uses), retained once per process.

    Never detached: pycuda's detach releases the retain only on the thread that made the
    context or where it is current (src/cpp/cuda.hpp, context::detach); elsewhere it leaks
    it silently, and engines are closed on executor threads.
    """
    key = (id(driver), gpu)
    with _PRIMARY_LOCK:
        if key not in _PRIMARY:  # the driver is kept too, so its id is never reused
            _PRIMARY[key] = (driver, driver.Device(gpu).retain_primary_context())
        return _PRIMARY[key][1]


@contextlib.contextmanager
def cuda_context(driver: types.ModuleType, gpu: int) -> Iterator[object]:
    """Make GPU `gpu`'s primary context current in this thread for the block."""
    context = primary_context(driver, gpu)
    context.push()
    try:
        yield context
    finally:
        context.pop()


@contextlib.contextmanager
def step(name: str) -> Iterator[None]:
    """Run one step of the TensorRT path: an EngineError passes through, anything else
    becomes an EngineError naming the step and the cause (chained)."""
    try:
        yield
    except EngineError:
        raise
    except Exception as exc:  # TensorRT and pycuda raise many types; all mean this step failed
        raise EngineError(f'TensorRT step {name!r} failed: unexpected {type(exc).__name__}: '
                          f'{exc}') from exc


_LOGGERS: dict[int, object] = {}


def shared_logger(trt: types.ModuleType) -> object:
    """The one trt.ILogger of this process (TensorRT asks for a single logger shared by
    builders and runtimes): warnings and errors go to the 'occo_ros.tensorrt' logger, and
    errors to every list opened by `tensorrt_errors`."""
    logger = _LOGGERS.get(id(trt))
    if logger is not None:
        return logger
    severity = trt.ILogger.Severity
    errors = (severity.INTERNAL_ERROR, severity.ERROR)

    class Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.sinks: list[list[str]] = []

        def log(self, level: object, msg: str) -> None:
            if level in errors:
                for sink in list(self.sinks):
                    sink.append(msg)
                _LOG.error(f'[TensorRT] {msg}')
            elif level == severity.WARNING:
                _LOG.warning(f'[TensorRT] {msg}')

    logger = _LOGGERS[id(trt)] = Logger()
    return logger


@contextlib.contextmanager
def tensorrt_errors(logger: object) -> Iterator[list[str]]:
    """The errors TensorRT logs while the block runs (not those of earlier failures; a
    build running at the same time in another thread may add its own)."""
    errors: list[str] = []
    logger.sinks.append(errors)
    try:
        yield errors
    finally:
        logger.sinks.remove(errors)


def quoted(errors: list[str]) -> str:
    """TensorRT's error messages as one clause ('' when there were none)."""
    return f' (TensorRT said: {" | ".join(errors[-5:])})' if errors else ''


def dtype_name(trt: types.ModuleType, dtype: object) -> str:
    """numpy name of a TensorRT data type, without trt.nptype (TensorRT 8.5.2's nptype uses
    np.bool, which numpy >= 1.24 removed)."""
    names = {trt.float32: 'float32', trt.float16: 'float16', trt.int32: 'int32',
             trt.int8: 'int8', trt.bool: 'bool'}
    return names.get(dtype, str(dtype))
