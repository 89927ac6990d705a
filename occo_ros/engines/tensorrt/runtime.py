"""TensorRT execution: a deserialised plan with page-locked host buffers, device buffers and
one stream (name-based IO API of TensorRT 8.5+: set_input_shape, set_tensor_address,
execute_async_v3).

The GPU's primary context (retained once per process, tensorrt_common.primary_context) is
pushed around every call, so `infer` and `close` work from any thread (ROS executors call
from worker threads). Every allocation is freed by `close` and on every error path of the
constructor (pycuda skips frees on a context that is not current, so they happen while it
is pushed).
"""

from __future__ import annotations

from pathlib import Path
import types

import numpy as np

from occo_ros.engines.base import EngineInfo, FusionEngine
from occo_ros.engines.tensorrt.cache import plan_trt_version
from occo_ros.engines.tensorrt.common import (
    check_dla,
    check_gpu,
    dtype_name,
    import_pycuda_driver,
    import_tensorrt,
    parse_device,
    primary_context,
    quoted,
    shared_logger,
    step,
    tensorrt_errors,
    tensorrt_version,
)
from occo_ros.model.contract import (
    INPUT_NAMES,
    OUTPUT_NAME,
    EngineError,
    TensorSpec,
    io_problems,
    validate_inputs,
)


def describe_io(engine: object, trt: types.ModuleType) -> list[TensorSpec]:
    """Names, directions, shapes and dtypes of a deserialised engine's IO tensors."""
    specs = []
    for index in range(engine.num_io_tensors):
        name = engine.get_tensor_name(index)
        specs.append(TensorSpec(
            name=name,
            is_input=engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT,
            shape=tuple(int(dim) for dim in engine.get_tensor_shape(name)),
            dtype=dtype_name(trt, engine.get_tensor_dtype(name))))
    return specs


def fixed_input_size(specs: list[TensorSpec], where: str) -> tuple[int, int]:
    """(H, W) of a fixed-shape engine's 'visible_y'; EngineError for a dynamic one."""
    for spec in specs:
        if spec.name == INPUT_NAMES[0] and len(spec.shape) == 4 and min(spec.shape) > 0:
            return spec.shape[2], spec.shape[3]
    raise EngineError(f'engine {where} has no fixed {INPUT_NAMES[0]!r} input shape '
                      f'({[(s.name, s.shape) for s in specs]}); pass input_size (H, W)')


class TensorRTEngine(FusionEngine):
    """A deserialised TensorRT plan ready to fuse at one input size.

    Args:
        plan: serialized engine bytes.
        model_path: the file the plan came from (reported in EngineInfo).
        input_size: (H, W) the engine runs at (sets the input shape of dynamic engines);
            None: the engine's fixed input size.
        precision: precision the plan was built with (reported).
        device: 'auto', 'cuda', 'cuda:N' or 'dla:K' (see parse_device).
        details: extra facts for EngineInfo.details (cache decision, build time).

    Raises:
        EngineError: TensorRT/pycuda missing, deserialisation failure (plan built by another
            TensorRT version or for another GPU), IO that does not match FIFN, or any
            library failure (named by step); nothing stays allocated.
    """

    def __init__(self, plan: bytes, model_path: str, input_size: tuple[int, int] | None,
                 precision: str, device: str = 'auto', details: dict | None = None) -> None:
        trt = import_tensorrt()
        self._cuda = import_pycuda_driver()
        gpu, dla_core = parse_device(device)
        check_gpu(self._cuda, gpu, device)
        self._model_path = str(model_path)
        self._context = None
        self._host: dict[str, np.ndarray] = {}
        self._device: dict[str, object] = {}
        with step('make the GPU current'):
            self._primary = primary_context(self._cuda, gpu)
            self._primary.push()
        try:
            self._setup(trt, plan, input_size, dla_core)
        except BaseException:
            self._release()
            raise
        self._primary.pop()
        where = f'dla:{dla_core}' if dla_core is not None else f'cuda:{gpu}'
        self._info = EngineInfo(
            backend='tensorrt', device=where, precision=precision, model_path=self._model_path,
            details={'tensorrt': tensorrt_version(trt), 'gpu': self._cuda.Device(gpu).name(),
                     'input_size': list(self._shape[2:]), **(details or {})})

    def _setup(self, trt: types.ModuleType, plan: bytes, input_size: tuple[int, int] | None,
               dla_core: int | None) -> None:
        """Deserialise, validate IO, set shapes, allocate buffers (CUDA context pushed)."""
        logger = shared_logger(trt)
        with step('create the runtime'):
            self._runtime = trt.Runtime(logger)
            if dla_core is not None:
                check_dla(dla_core, self._runtime.num_DLA_cores)
                self._runtime.DLA_core = dla_core
        with step('deserialise the engine'), tensorrt_errors(logger) as errors:
            self._engine = self._runtime.deserialize_cuda_engine(plan)
        if self._engine is None:
            built_with = plan_trt_version(plan)
            raise EngineError(
                f'TensorRT {tensorrt_version(trt)} could not deserialise {self._model_path} '
                f'(plan header says TensorRT '
                f'{".".join(map(str, built_with)) if built_with else "?"}){quoted(errors)}: it '
                'was built by another TensorRT version or for another GPU, or the file is '
                'corrupt')
        with step('read the engine IO'):
            specs = describe_io(self._engine, trt)
        if input_size is None:
            input_size = fixed_input_size(specs, self._model_path)
        problems = io_problems(specs, *input_size)
        if problems:
            raise EngineError(f'engine {self._model_path} does not fit FIFN at {input_size[0]}x'
                              f'{input_size[1]}: ' + '; '.join(problems))
        self._shape = (1, 1, *input_size)
        with step('create the execution context'), tensorrt_errors(logger) as errors:
            self._context = self._engine.create_execution_context()
        if self._context is None:
            raise EngineError(
                f'TensorRT could not create an execution context for {self._model_path}'
                f'{quoted(errors)}: out of GPU memory? (other processes on the GPU, or an '
                'input size too large for this device)')
        with step('set the input shape'):
            refused = [spec.name for spec in specs if spec.is_input and -1 in spec.shape
                       and not self._context.set_input_shape(spec.name, self._shape)]
        if refused:
            raise EngineError(f'engine {self._model_path} refuses input shape {self._shape} '
                              f'for {refused} (outside its optimisation profile)')
        with step('allocate buffers'):
            for name in (*INPUT_NAMES, OUTPUT_NAME):
                self._host[name] = self._cuda.pagelocked_empty(self._shape, np.float32)
                self._device[name] = self._cuda.mem_alloc(self._host[name].nbytes)
                self._context.set_tensor_address(name, int(self._device[name]))
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
        with step('make the GPU current'):
            self._primary.push()
        try:
            with step('infer'):
                for name, array in zip(INPUT_NAMES, (visible_y, infrared)):
                    np.copyto(self._host[name], array)
                    self._cuda.memcpy_htod_async(self._device[name], self._host[name],
                                                 self._stream)
                # A refused enqueue records nothing; the output would replay the last frame.
                if not self._context.execute_async_v3(self._stream.handle):
                    raise EngineError('TensorRT refused to enqueue the inference '
                                      '(execute_async_v3)')
                self._cuda.memcpy_dtoh_async(self._host[OUTPUT_NAME], self._device[OUTPUT_NAME],
                                             self._stream)
                self._stream.synchronize()
            return self._host[OUTPUT_NAME].copy()
        finally:
            self._primary.pop()

    def close(self) -> None:
        """Free every buffer and the engine; infer raises EngineError afterwards."""
        if self._context is None:
            return
        self._primary.push()
        self._release()

    def _release(self) -> None:
        """Free every allocation (one failing free does not keep the others), then pop the
        context, which is current (it stays retained for the process: never detached)."""
        allocations = [*self._device.values(), *(array.base for array in self._host.values())]
        failures = []
        for allocation in allocations:  # .base: pycuda's page-locked HostAllocation
            try:
                allocation.free()
            except Exception as exc:  # noqa: PERF203 (each allocation on its own)
                failures.append(exc)
        self._device, self._host = {}, {}
        self._context = self._engine = self._runtime = self._stream = None
        self._primary.pop()
        if failures:
            with step('free buffers'):
                raise failures[0]
