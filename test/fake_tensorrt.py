"""Strict fakes of the `tensorrt` Python bindings (8.5, 8.6, 10.3, 11.1) and of `pycuda.driver`.

TensorRT and pycuda cannot be installed here (no GPU), so the TensorRT path is run through
these. Each fake version exposes exactly the attributes occo_ros may need that exist in that
version's bindings; touching any other public attribute (read, write or hasattr probe) is
recorded in `Recorder.violations` and raises AttributeError, as the real module would.

Sources for what each version has (public binding sources and API docs):
- 8.5 / 8.6 / 10.3: NVIDIA/TensorRT python/src/infer/pyCore.cpp (Builder, BuilderConfig, Runtime,
  ICudaEngine, IExecutionContext, ILogger, IProgressMonitor from release/10.0),
  pyGraph.cpp (INetworkDefinition, ILayer; ILayer.metadata from 8.6: release/8.6 pyGraph.cpp
  line 323 `.def_property("metadata", ...)`, absent in release/8.5; the ONNX parser fills it
  with '[ONNX Layer: <node name>]'), pyInt8.cpp
  (IInt8EntropyCalibrator2), pyFoundationalTypes.cpp (DataType, TensorIOMode), and
  python/packaging/bindings_wheel/tensorrt/__init__.py (nptype; 8.5.2's maps trt.bool to
  np.bool, removed in numpy 1.24). The name-based IO API (num_io_tensors, set_input_shape,
  set_tensor_address, execute_async_v3) exists from 8.5; EXPLICIT_BATCH is required in 8.x
  and deprecated (ignored) in 10.x.
- 11.x: "Removed Python APIs and Replacements", docs.nvidia.com/deeplearning/tensorrt/
  latest/api/migration/tensorrt-10x-to-11x-python-api-reference.html: BuilderFlag.FP16,
  INT8, OBEY_/PREFER_PRECISION_CONSTRAINTS, IBuilderConfig.int8_calibrator,
  set_calibration_profile, Builder.platform_has_fast_fp16/int8 removed (strong typing
  always on); IInt8 calibrators and per-layer precision are gone with weak typing. The
  network's precision is the ONNX model's types (the fake parser types each layer output as
  the ONNX graph does); NetworkDefinitionCreationFlag.STRONGLY_TYPED is kept but "always
  enabled" (release/11.1 python/src/infer/pyCore.cpp line 1773).
- Unnamed layers: TensorRT names a layer it cannot name after its node
  '(Unnamed Layer* <index>) [<type>]' (option layer_names='generated').
- create_execution_context returns None (after logging an error) when the GPU memory for its
  activations cannot be allocated: ICudaEngine::createExecutionContext is noexcept and
  returns a pointer (release/10.3 include/NvInferRuntime.h line 2621), nullptr on failure,
  which the binding gives as None. Option Recorder.none_at.

The fake pycuda records contexts pushed/popped per thread, retained primary contexts, and
page-locked and device allocations; a free while no context is current is skipped (as in
pycuda) and so shows up as a leak. Context.detach follows pycuda's src/cpp/cuda.hpp
(context::detach, primary_context::detach_internal): the retain is released only when the
context is current in the calling thread, or when the calling thread is the one that made the
context object (it is pushed, then released); on any other thread the context is marked
invalid and the retain leaks silently ("leaked out-of-thread context", commented out there):
Recorder.leaked_retains. Context.pop is static in pycuda: it pops this thread's top. Data
really flows: device memory is numpy arrays, and an engine's "network" computes
max(visible_y, infrared), so a test can check the output.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import json
import threading
import types

import numpy as np

VERSIONS = {'8.5': '8.5.2.2', '8.6': '8.6.2.3', '10.3': '10.3.0.26', '11.1': '11.1.0.6'}
_COMMON = {
    'module': {'__version__', 'ILogger', 'Builder', 'Runtime', 'OnnxParser', 'BuilderFlag',
               'MemoryPoolType', 'DeviceType', 'TensorIOMode', 'float32', 'float16', 'int32',
               'int8', 'bool', 'nptype', 'NetworkDefinitionCreationFlag', 'DataType'},
    'Builder': {'create_network', 'create_builder_config', 'create_optimization_profile',
                'build_serialized_network', 'num_DLA_cores', 'platform_has_fast_fp16',
                'platform_has_fast_int8'},
    'Network': {'num_layers', 'get_layer', 'num_inputs', 'get_input'},
    'Layer': {'name', 'num_outputs', 'get_output', 'precision', 'set_output_type'},
    'Tensor': {'name', 'shape', 'dtype'},
    'Parser': {'parse_from_file', 'num_errors', 'get_error'},
    'Config': {'set_memory_pool_limit', 'set_flag', 'add_optimization_profile',
               'set_calibration_profile', 'int8_calibrator', 'default_device_type', 'DLA_core'},
    'Profile': {'set_shape'},
    'BuilderFlag': {'FP16', 'INT8', 'OBEY_PRECISION_CONSTRAINTS', 'GPU_FALLBACK'},
    'Runtime': {'deserialize_cuda_engine', 'DLA_core', 'num_DLA_cores'},
    'Engine': {'num_io_tensors', 'get_tensor_name', 'get_tensor_mode', 'get_tensor_shape',
               'get_tensor_dtype', 'create_execution_context'},
    'Context': {'set_input_shape', 'set_tensor_address', 'execute_async_v3'},
}
_ADDED = {'10.3': {'module': {'IProgressMonitor', 'IInt8EntropyCalibrator2'},
                   'Layer': {'metadata'}, 'Config': {'progress_monitor'}},
          '8.5': {'module': {'IInt8EntropyCalibrator2'}},
          '8.6': {'module': {'IInt8EntropyCalibrator2'}, 'Layer': {'metadata'}},
          '11.1': {'module': {'IProgressMonitor'}, 'Layer': {'metadata'},
                   'Config': {'progress_monitor'}}}
_REMOVED = {'11.1': {'Builder': {'platform_has_fast_fp16', 'platform_has_fast_int8'},
                     'Layer': {'precision', 'set_output_type'},
                     'Config': {'int8_calibrator', 'set_calibration_profile'},
                     'BuilderFlag': {'FP16', 'INT8', 'OBEY_PRECISION_CONSTRAINTS'},
                     'module': {'NetworkDefinitionCreationFlag'}}}


#: The fake's own read of its state (not a use of the API by the code under test).
_peek = object.__getattribute__


def api(version: str) -> dict[str, set[str]]:
    """Public attributes per fake class for one TensorRT version."""
    table = {kind: set(names) for kind, names in _COMMON.items()}
    for kind, names in _ADDED.get(version, {}).items():
        table[kind] |= names
    for kind, names in _REMOVED.get(version, {}).items():
        table[kind] -= names
    return table


class Recorder:
    """Everything the fakes saw: attribute use, violations, CUDA contexts and allocations."""

    def __init__(self) -> None:
        self.violations: list[str] = []
        self.touched: set[str] = set()
        self.stacks: dict[int, list] = {}
        self.retained: dict[int, int] = {}
        self.live: dict[int, str] = {}
        self.addresses: dict[int, object] = {}
        self.events: list[str] = []
        self.fail_at: str | None = None   # a call name that raises RuntimeError (fault injection)
        self.none_at: str | None = None   # a call name that returns None (out of memory)
        self.leaked_retains: list[str] = []
        self.lock = threading.Lock()
        # per fake class: the names already recorded in `touched` and allowed. A build reads
        # a few names of each of ~900 layers; a test run makes a hundred builds.
        self.allowed: dict[str, set[str]] = {}

    def stack(self) -> list:
        return self.stacks.setdefault(threading.get_ident(), [])

    def current_gpu(self) -> int | None:
        stack = self.stack()
        return stack[-1].device.index if stack else None

    def call(self, name: str) -> None:
        """Record a call; raise the injected fault if this is the call to fail."""
        self.events.append(name)
        if self.fail_at == name:
            self.fail_at = None   # one fault per injection
            raise RuntimeError(f'injected fault in {name}')

    def balanced(self) -> bool:
        """Every context stack empty, no retain leaked, at most one retain per GPU."""
        return (all(not stack for stack in self.stacks.values()) and not self.leaked_retains
                and all(count <= 1 for count in self.retained.values()))


class Strict:
    """Base of fake binding objects: public names outside the version's API are refused."""

    _kind = ''

    def __init__(self, recorder: Recorder, names: set[str], **state: object) -> None:
        """`state`: the instance's attributes, set without the check (the fake's own)."""
        _peek(self, '__dict__').update(
            state, _recorder=recorder, _names=names,
            _allowed=recorder.allowed.setdefault(self._kind, set()))

    def _check(self, name: str) -> None:
        if name.startswith('_') or name in _peek(self, '_allowed'):
            return
        recorder = _peek(self, '_recorder')
        recorder.touched.add(f'{self._kind}.{name}')
        if name not in _peek(self, '_names'):
            recorder.violations.append(f'{self._kind}.{name}')
            raise AttributeError(f"'{self._kind}' object has no attribute '{name}'")
        _peek(self, '_allowed').add(name)

    def __getattribute__(self, name: str):
        if name[0] != '_' and name not in _peek(self, '_allowed'):
            _peek(self, '_check')(name)
        return _peek(self, name)

    def __setattr__(self, name: str, value: object) -> None:
        self._check(name)
        object.__setattr__(self, name, value)


class FakeEnum:
    """A pybind11-like enum: hashable members that convert to int."""

    def __init__(self, kind: str, names: list[str], recorder: Recorder,
                 allowed: set[str] | None = None) -> None:
        self._kind, self._recorder = kind, recorder
        self._members = {name: _Member(kind, name, index) for index, name in enumerate(names)}
        self._allowed = set(names) if allowed is None else allowed

    def __getattr__(self, name: str):
        if name.startswith('_'):
            raise AttributeError(name)
        self._recorder.touched.add(f'{self._kind}.{name}')
        if name not in self._allowed:
            self._recorder.violations.append(f'{self._kind}.{name}')
            raise AttributeError(f"type object '{self._kind}' has no attribute '{name}'")
        return self._members[name]


class _Member:
    def __init__(self, kind: str, name: str, value: int) -> None:
        self.kind, self.name, self.value = kind, name, value

    def __int__(self) -> int:
        return self.value

    def __repr__(self) -> str:
        return f'{self.kind}.{self.name}'


# -- pycuda ---------------------------------------------------------------------------------
class FakePycuda:
    """Build `pycuda` and `pycuda.driver` modules over one Recorder."""

    def __init__(self, recorder: Recorder, gpus: tuple = (('NVIDIA H100', 9, 0, 132),)) -> None:
        self.recorder, self.gpus = recorder, gpus
        driver = types.ModuleType('pycuda.driver')
        driver.init = lambda: recorder.call('cuda.init')
        driver.Device = self._device_class()
        driver.device_attribute = types.SimpleNamespace(MULTIPROCESSOR_COUNT='sm_count')
        driver.mem_alloc = self._mem_alloc
        driver.pagelocked_empty = self._pagelocked_empty
        driver.memcpy_htod = self._htod
        driver.memcpy_htod_async = lambda dev, host, stream: self._htod(dev, host)
        driver.memcpy_dtoh_async = lambda host, dev, stream: self._dtoh(host, dev)
        driver.Stream = self._stream
        self.driver = driver
        self.package = types.ModuleType('pycuda')
        self.package.driver = driver
        for module in (driver, self.package):  # importlib.util.find_spec reads it
            module.__spec__ = importlib.machinery.ModuleSpec(module.__name__, None)

    def _require_context(self, what: str) -> None:
        if not self.recorder.stack():
            raise RuntimeError(f'{what}: no CUDA context is current in this thread '
                               '(pycuda LogicError)')

    def _device_class(self):
        fake = self

        class Device:
            def __init__(self, index: int) -> None:
                if index >= len(fake.gpus):
                    raise RuntimeError(f'invalid device ordinal {index}')
                self.index = index

            @staticmethod
            def count() -> int:
                return len(fake.gpus)

            def name(self) -> str:
                return fake.gpus[self.index][0]

            def compute_capability(self) -> tuple[int, int]:
                return fake.gpus[self.index][1:3]

            def get_attribute(self, attribute: str) -> int:
                assert attribute == 'sm_count'
                return fake.gpus[self.index][3]

            def retain_primary_context(self):
                fake.recorder.call('retain_primary_context')
                with fake.recorder.lock:
                    fake.recorder.retained[self.index] = (
                        fake.recorder.retained.get(self.index, 0) + 1)
                return Context(self)

        class Context:
            def __init__(self, device: Device) -> None:
                self.device, self.valid = device, True
                self.thread = threading.get_ident()   # pycuda's context::m_thread

            def push(self) -> None:
                fake.recorder.call('context.push')
                fake.recorder.stack().append(self)

            def pop(self) -> None:  # pycuda: a static method popping this thread's current
                stack = fake.recorder.stack()
                if not stack:
                    raise RuntimeError('context stack is empty (pycuda LogicError)')
                stack.pop()

            def detach(self) -> None:
                if not self.valid:
                    raise RuntimeError('cannot detach from invalid context (pycuda LogicError)')
                self.valid = False
                stack = fake.recorder.stack()
                current = bool(stack) and stack[-1] is self
                if current or self.thread == threading.get_ident():
                    with fake.recorder.lock:
                        fake.recorder.retained[self.device.index] -= 1
                    if current:   # the now invalid context leaves the stack
                        stack.pop()
                else:
                    fake.recorder.leaked_retains.append(
                        f'GPU {self.device.index} context detached on another thread')

        return Device

    def _mem_alloc(self, nbytes: int) -> _DeviceAllocation:
        self.recorder.call('mem_alloc')
        self._require_context('mem_alloc')
        return _DeviceAllocation(self.recorder, int(nbytes))

    def _pagelocked_empty(self, shape: tuple, dtype: object) -> np.ndarray:
        self.recorder.call('pagelocked_empty')
        self._require_context('pagelocked_empty')
        host = _HostAllocation(int(np.prod(shape)) * np.dtype(dtype).itemsize)
        host.recorder = self.recorder
        self.recorder.live[id(host)] = 'pagelocked'
        return np.ndarray(shape, dtype, buffer=host)  # .base is the allocation, as in pycuda

    def _htod(self, device: _DeviceAllocation, host: np.ndarray) -> None:
        self._require_context('memcpy_htod')
        device.buffer[:host.nbytes] = np.ascontiguousarray(host).view(np.uint8).ravel()

    def _dtoh(self, host: np.ndarray, device: _DeviceAllocation) -> None:
        self._require_context('memcpy_dtoh')
        host.view(np.uint8).ravel()[:] = device.buffer[:host.nbytes]

    def _stream(self) -> types.SimpleNamespace:
        self.recorder.call('Stream')
        return types.SimpleNamespace(handle=0xC0FFEE, synchronize=lambda: None)


def _free(recorder: Recorder, key: int, kind: str) -> None:
    """pycuda skips a free while no context is current: the allocation then stays live."""
    recorder.call(f'free {kind}')
    if recorder.stack():
        recorder.live.pop(key, None)


class _DeviceAllocation:
    def __init__(self, recorder: Recorder, nbytes: int) -> None:
        self.recorder, self.buffer = recorder, np.zeros(nbytes, np.uint8)
        recorder.live[id(self)] = 'device'
        recorder.addresses[id(self)] = self

    def __int__(self) -> int:
        return id(self)

    def free(self) -> None:
        _free(self.recorder, id(self), 'device')


class _HostAllocation(bytearray):
    """pycuda's HostAllocation: the buffer under a page-locked array, with free()."""

    recorder: Recorder

    def free(self) -> None:
        _free(self.recorder, id(self), 'pagelocked')


# -- tensorrt -------------------------------------------------------------------------------
class FakeTensorRT(types.ModuleType):
    """The `tensorrt` module of one version (see module docstring)."""

    def __init__(self, version: str, recorder: Recorder, fast_int8: bool = True,
                 dla_cores: int = 2, layer_names: str = 'onnx') -> None:
        super().__init__('tensorrt')
        table = api(version)
        trt = self
        values = {'__version__': VERSIONS[version]}
        values['DataType'] = FakeEnum('DataType', ['FLOAT', 'HALF', 'INT32', 'INT8', 'BOOL'],
                                      recorder)
        members = values['DataType']._members
        values.update(float32=members['FLOAT'], float16=members['HALF'],
                      int32=members['INT32'], int8=members['INT8'], bool=members['BOOL'])
        values['BuilderFlag'] = FakeEnum(
            'BuilderFlag', ['FP16', 'INT8', 'OBEY_PRECISION_CONSTRAINTS', 'GPU_FALLBACK'],
            recorder, table['BuilderFlag'])
        values['MemoryPoolType'] = FakeEnum('MemoryPoolType', ['WORKSPACE'], recorder)
        values['DeviceType'] = FakeEnum('DeviceType', ['GPU', 'DLA'], recorder)
        values['TensorIOMode'] = FakeEnum('TensorIOMode', ['NONE', 'INPUT', 'OUTPUT'], recorder)
        values['NetworkDefinitionCreationFlag'] = FakeEnum(
            'NetworkDefinitionCreationFlag', ['EXPLICIT_BATCH', 'STRONGLY_TYPED'], recorder)

        def nptype(dtype: object) -> type:
            # TensorRT 8.5.2's mapping names np.bool (gone in numpy 1.24): kept as the real one.
            mapping = {members['FLOAT']: np.float32, members['HALF']: np.float16,
                       members['INT32']: np.int32, members['INT8']: np.int8,
                       members['BOOL']: (np.bool if version == '8.5' else np.bool_)}
            return mapping[dtype]

        class ILogger:
            Severity = types.SimpleNamespace(INTERNAL_ERROR=0, ERROR=1, WARNING=2, INFO=3,
                                             VERBOSE=4)

            def __init__(self) -> None:
                recorder.call('ILogger')

        class IInt8EntropyCalibrator2:
            def __init__(self) -> None:
                recorder.call('IInt8EntropyCalibrator2')

        class IProgressMonitor:
            def __init__(self) -> None:
                recorder.call('IProgressMonitor')

        values.update(nptype=nptype, ILogger=ILogger,
                      IInt8EntropyCalibrator2=IInt8EntropyCalibrator2,
                      IProgressMonitor=IProgressMonitor)
        values['Builder'] = lambda logger: _Builder(trt, recorder, table, logger, fast_int8,
                                                    dla_cores)
        values['Runtime'] = lambda logger: _Runtime(trt, recorder, table, logger, dla_cores)
        values['OnnxParser'] = lambda network, logger: _Parser(trt, recorder, table, network)
        object.__setattr__(self, '__spec__', importlib.machinery.ModuleSpec('tensorrt', None))
        object.__setattr__(self, '_values', values)
        object.__setattr__(self, '_table', table)
        object.__setattr__(self, '_recorder', recorder)
        object.__setattr__(self, 'version', version)
        object.__setattr__(self, 'layer_names', layer_names)
        object.__setattr__(self, '_allowed', recorder.allowed.setdefault('tensorrt', set()))

    def __getattribute__(self, name: str):
        if name in _peek(self, '_allowed'):
            return _peek(self, '_values')[name]
        if name.startswith('_') and name != '__version__' or name in ('version', 'layer_names'):
            return _peek(self, name)
        recorder = _peek(self, '_recorder')
        recorder.touched.add(f'tensorrt.{name}')
        if name not in _peek(self, '_table')['module']:
            recorder.violations.append(f'tensorrt.{name}')
            raise AttributeError(f"module 'tensorrt' has no attribute '{name}'")
        _peek(self, '_allowed').add(name)
        return _peek(self, '_values')[name]


class _Tensor(Strict):
    _kind = 'ITensor'

    def __init__(self, recorder: Recorder, table: dict, name: str, shape: tuple,
                 dtype: object) -> None:
        super().__init__(recorder, table['Tensor'], name=name, shape=shape, dtype=dtype)


class _Layer(Strict):
    _kind = 'ILayer'

    def __init__(self, recorder: Recorder, table: dict, name: str, node: str,
                 outputs: list) -> None:
        super().__init__(recorder, table['Layer'], name=name, metadata=f'[ONNX Layer: {node}]',
                         num_outputs=len(outputs), _outputs=outputs, precision=None,
                         _output_types={})

    def get_output(self, index: int) -> _Tensor:
        return self._outputs[index]

    def set_output_type(self, index: int, dtype: object) -> None:
        self._output_types[index] = dtype


class _Network(Strict):
    _kind = 'INetworkDefinition'

    def __init__(self, recorder: Recorder, table: dict, flags: int) -> None:
        super().__init__(recorder, table['Network'], _flags=flags, _layers=[], _inputs=[])

    @property
    def num_layers(self) -> int:
        return len(self._layers)

    def get_layer(self, index: int) -> _Layer:
        return self._layers[index]

    @property
    def num_inputs(self) -> int:
        return len(self._inputs)

    def get_input(self, index: int) -> _Tensor:
        return self._inputs[index]


class _Parser(Strict):
    _kind = 'OnnxParser'

    def __init__(self, trt: FakeTensorRT, recorder: Recorder, table: dict,
                 network: _Network) -> None:
        super().__init__(recorder, table['Parser'], _trt=trt, _network=network, _errors=[],
                         _table=table)

    def parse_from_file(self, path: str) -> bool:
        """Layers named as the ONNX nodes (as TensorRT names them; layer_names='generated':
        unnamed), typed as the ONNX graph types their outputs (float16 outputs only where
        the model says so); shape ops give int32."""
        self._recorder.call('parse_from_file')
        trt, recorder = self._trt, self._recorder
        if trt.version == '8.5' and not self._network._flags:
            self._errors.append('network must be created with EXPLICIT_BATCH in 8.x')
            return False
        try:
            nodes, inputs = _read_graph(path)
        except Exception as exc:  # noqa: BLE001 (as the real parser: any failure is an error)
            self._errors.append(f'ModelImporter: failed to parse: {exc}')
            return False
        float32, float16, int32 = trt.float32, trt.float16, trt.int32
        for index, (node, op_type, outputs) in enumerate(nodes):
            default = int32 if op_type in _SHAPE_OPS else float32
            tensors = [_Tensor(recorder, self._table, out, (), float16 if half else default)
                       for out, half in outputs]
            name = node if trt.layer_names == 'onnx' else f'(Unnamed Layer* {index}) [{op_type}]'
            self._network._layers.append(_Layer(recorder, self._table, name, node, tensors))
        for name, dims in inputs:
            self._network._inputs.append(_Tensor(recorder, self._table, name, dims,
                                                 trt.float32))
        return True

    @property
    def num_errors(self) -> int:
        return len(self._errors)

    def get_error(self, index: int) -> str:
        return self._errors[index]


_SHAPE_OPS = {'Shape', 'Range', 'ConstantOfShape', 'NonZero'}
_GRAPHS: dict[str, tuple] = {}   # sha256 of an ONNX file -> _read_graph's answer


def _read_graph(path: str) -> tuple[list, list]:
    """([(node name, op type, [(output, is float16)])], [(input, dims; -1 dynamic)]) of an
    ONNX file, by content: the tests build from the same few files over a hundred times, and
    shape inference is most of a parse."""
    import onnx

    with open(path, 'rb') as file:
        data = file.read()
    key = hashlib.sha256(data).hexdigest()
    if key not in _GRAPHS:
        model = onnx.load_model_from_string(data)
        typed = onnx.shape_inference.infer_shapes(model).graph
        elem = {value.name: value.type.tensor_type.elem_type
                for value in (*typed.value_info, *typed.output)}
        nodes = [(node.name, node.op_type,
                  [(out, elem.get(out) == onnx.TensorProto.FLOAT16) for out in node.output])
                 for node in model.graph.node]
        inputs = [(value.name, tuple(dim.dim_value if dim.HasField('dim_value') else -1
                                     for dim in value.type.tensor_type.shape.dim))
                  for value in model.graph.input]
        _GRAPHS[key] = (nodes, inputs)
    return _GRAPHS[key]


class _Profile(Strict):
    _kind = 'IOptimizationProfile'

    def __init__(self, recorder: Recorder, table: dict) -> None:
        super().__init__(recorder, table['Profile'], _shapes={})

    def set_shape(self, name: str, low: tuple, opt: tuple, high: tuple) -> None:
        self._shapes[name] = (tuple(low), tuple(opt), tuple(high))


class _Config(Strict):
    _kind = 'IBuilderConfig'

    def __init__(self, recorder: Recorder, table: dict) -> None:
        super().__init__(recorder, table['Config'], _flags=set(), _profiles=[],
                         _calibration_profile=None, int8_calibrator=None,
                         progress_monitor=None, default_device_type=None, DLA_core=-1,
                         _workspace=None)

    def set_memory_pool_limit(self, pool: object, size: int) -> None:
        object.__setattr__(self, '_workspace', size)

    def set_flag(self, flag: object) -> None:
        self._flags.add(flag.name)

    def add_optimization_profile(self, profile: _Profile) -> int:
        self._profiles.append(profile)
        return len(self._profiles) - 1

    def set_calibration_profile(self, profile: _Profile) -> bool:
        object.__setattr__(self, '_calibration_profile', profile)
        return True


class _Builder(Strict):
    _kind = 'Builder'

    def __init__(self, trt: FakeTensorRT, recorder: Recorder, table: dict, logger: object,
                 fast_int8: bool, dla_cores: int) -> None:
        recorder.call('Builder')
        super().__init__(recorder, table['Builder'], _trt=trt, _table=table, _logger=logger,
                         platform_has_fast_fp16=True, platform_has_fast_int8=fast_int8,
                         num_DLA_cores=dla_cores)

    def create_network(self, flags: int = 0) -> _Network:
        return _Network(self._recorder, self._table, flags)

    def create_builder_config(self) -> _Config:
        self._recorder.call('create_builder_config')
        return _Config(self._recorder, self._table)

    def create_optimization_profile(self) -> _Profile:
        return _Profile(self._recorder, self._table)

    def _fail(self, message: str) -> None:
        self._logger.log(self._logger.Severity.ERROR, message)

    def build_serialized_network(self, network: _Network, config: _Config):
        """Checks what the real builder checks, runs calibration and the progress monitor,
        and returns a plan: header bytes (version at 24..26) + JSON of what was built."""
        recorder = self._recorder
        recorder.call('build_serialized_network')
        gpu = recorder.current_gpu()
        if gpu is None:
            raise RuntimeError('no CUDA context is current: TensorRT cannot build')
        inputs = [(_peek(tensor, 'name'), _peek(tensor, 'shape')) for tensor in network._inputs]
        dynamic = any(-1 in shape for _, shape in inputs)
        profiles = config._profiles
        if dynamic and not profiles:
            return self._fail('Network has dynamic or shape inputs, but no optimization '
                              'profile has been defined.')
        int8 = 'INT8' in config._flags
        monitor = _peek(config, 'progress_monitor')
        if monitor is not None:
            monitor.phase_start('Building engine', None, 2)
            if not monitor.step_complete('Building engine', 0):
                # IProgressMonitor: False from step_complete cancels the build; phase_finish
                # may come before all steps were reported, and no plan is returned.
                monitor.phase_finish('Building engine')
                return self._fail('Build cancelled by the progress monitor.')
        if int8:
            if dynamic and config._calibration_profile is None:
                return self._fail('Calibration profile must be provided when calibrating a '
                                  'network with dynamic shapes.')
            calibrator = _peek(config, 'int8_calibrator')
            if calibrator is None:
                return self._fail('Int8 calibrator not set')
            cached = calibrator.read_calibration_cache()
            batches = 0
            if cached is None:
                names = [name for name, _ in inputs]
                while True:
                    try:  # TensorRT's trampoline: any exception reads as "no more data"
                        pointers = calibrator.get_batch(names)
                    except Exception:  # noqa: BLE001
                        pointers = None
                    if not pointers:
                        break
                    batches += 1
                if batches == 0:
                    return self._fail('Calibration failure occurred with no scaling factors '
                                      'detected.')
                calibrator.write_calibration_cache(b'scales:%d' % batches)
        if monitor is not None:
            monitor.phase_finish('Building engine')
        pinned = [_peek(layer, 'name') for layer in network._layers
                  if _peek(layer, 'precision') is not None and layer._output_types]
        float16 = [_peek(layer, 'name') for layer in network._layers
                   if any(_peek(out, 'dtype') is self._trt.float16 for out in layer._outputs)]
        shapes = {name: list(profiles[0]._shapes[name][1] if dynamic else shape)
                  for name, shape in inputs}
        on_dla = _peek(config, 'default_device_type') is not None
        description = {
            'gpu': gpu, 'flags': sorted(config._flags), 'pinned': pinned,
            'float16_layers': float16,
            'dla': _peek(config, 'DLA_core') if on_dla else None,
            'dynamic': dynamic, 'shapes': shapes, 'workspace': config._workspace}
        header = bytearray(32)
        header[24:27] = bytes(int(part) for part in self._trt.__version__.split('.')[:3])
        return bytes(header) + json.dumps(description).encode()


class _Runtime(Strict):
    _kind = 'Runtime'

    def __init__(self, trt: FakeTensorRT, recorder: Recorder, table: dict, logger: object,
                 dla_cores: int) -> None:
        recorder.call('Runtime')
        super().__init__(recorder, table['Runtime'], _trt=trt, _table=table, _logger=logger,
                         DLA_core=-1, num_DLA_cores=dla_cores)

    def deserialize_cuda_engine(self, plan: bytes):
        """None (as TensorRT) for another version's plan, another GPU, or junk."""
        self._recorder.call('deserialize_cuda_engine')
        version = bytes(int(p) for p in self._trt.__version__.split('.')[:3])
        try:
            description = json.loads(bytes(plan[32:]).decode())
        except ValueError:
            return None
        if bytes(plan[24:27]) != version or description['gpu'] != self._recorder.current_gpu():
            return None
        return _Engine(self._trt, self._recorder, self._table, description, self._logger)


class _Engine(Strict):
    _kind = 'ICudaEngine'

    def __init__(self, trt: FakeTensorRT, recorder: Recorder, table: dict,
                 description: dict, logger: object) -> None:
        shape = next(iter(description['shapes'].values()))
        io = [(name, trt.TensorIOMode.INPUT) for name in description['shapes']]
        io.append(('fused_y', trt.TensorIOMode.OUTPUT))
        fixed = tuple(shape)
        dims = (-1, 1, -1, -1) if description['dynamic'] else fixed
        super().__init__(recorder, table['Engine'], _trt=trt, _table=table, _logger=logger,
                         _io=io, _dims=dims, _description=description,
                         num_io_tensors=len(io))

    def get_tensor_name(self, index: int) -> str:
        return self._io[index][0]

    def get_tensor_mode(self, name: str) -> object:
        return dict(self._io)[name]

    def get_tensor_shape(self, name: str) -> tuple:
        return self._dims

    def get_tensor_dtype(self, name: str) -> object:
        return self._trt.float32

    def create_execution_context(self):
        recorder = self._recorder
        recorder.call('create_execution_context')
        if recorder.none_at == 'create_execution_context':
            recorder.none_at = None
            self._logger.log(self._logger.Severity.ERROR, 'Requested amount of GPU memory '
                             '(1073741824 bytes) could not be allocated.')
            return None
        return _Context(self._recorder, self._table, self)


class _Context(Strict):
    _kind = 'IExecutionContext'

    def __init__(self, recorder: Recorder, table: dict, engine: _Engine) -> None:
        super().__init__(recorder, table['Context'], _engine=engine, _shapes={}, _addresses={})

    def set_input_shape(self, name: str, shape: tuple) -> bool:
        allowed = [list(dims) for dims in self._engine._description['shapes'].values()]
        self._shapes[name] = tuple(shape)
        return list(shape) in allowed

    def set_tensor_address(self, name: str, address: int) -> bool:
        self._addresses[name] = address
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        """Fused Y = max(visible_y, infrared), read from and written to fake device memory."""
        recorder = self._recorder
        recorder.call('execute_async_v3')
        if recorder.current_gpu() != self._engine._description['gpu']:
            raise RuntimeError("execute on a thread without the engine GPU's context current")
        names = [name for name, _ in self._engine._io]
        if set(self._addresses) != set(names):
            return False
        buffers = {name: recorder.addresses[self._addresses[name]] for name in names}
        visible, infrared = (buffers[name].buffer.view(np.float32) for name in names[:2])
        buffers['fused_y'].buffer.view(np.float32)[:] = np.maximum(visible, infrared)
        return True


class Fake:
    """One installed fake (tensorrt, pycuda, pycuda.driver in sys.modules through pytest's
    monkeypatch): its Recorder, the modules, and the end-of-test checks."""

    def __init__(self, monkeypatch, version: str, **options) -> None:
        import sys

        gpus = options.pop('gpus', (('NVIDIA H100', 9, 0, 132),))
        self.recorder = Recorder()
        self.trt = FakeTensorRT(version, self.recorder, **options)
        self.pycuda = FakePycuda(self.recorder, gpus)
        monkeypatch.setitem(sys.modules, 'tensorrt', self.trt)
        monkeypatch.setitem(sys.modules, 'pycuda', self.pycuda.package)
        monkeypatch.setitem(sys.modules, 'pycuda.driver', self.pycuda.driver)

    def check(self) -> None:
        """No attribute outside the version touched, nothing leaked, stacks balanced, at
        most one retained primary context per GPU and none leaked."""
        assert self.recorder.violations == []
        assert self.recorder.live == {}, 'leaked allocations'
        assert self.recorder.balanced(), (self.recorder.stacks, self.recorder.retained)
        assert 'tensorrt.nptype' not in self.recorder.touched  # 8.5.2's fails on numpy 1.24


def read_only_folder(monkeypatch, folder) -> None:
    """Make occo_ros's atomic writes into `folder` fail as on a read-only file system (the
    tests run as root, which chmod does not stop)."""
    import errno
    from pathlib import Path
    import tempfile

    from occo_ros.util import atomic_file

    root = Path(folder).resolve()

    def mkstemp(*args, **kwargs):
        where = Path(kwargs.get('dir') or tempfile.gettempdir()).resolve()
        if where == root or root in where.parents:
            raise OSError(errno.EROFS, 'Read-only file system', str(where))
        return tempfile.mkstemp(*args, **kwargs)

    monkeypatch.setattr(atomic_file, 'tempfile', types.SimpleNamespace(mkstemp=mkstemp))
