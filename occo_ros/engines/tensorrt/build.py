"""TensorRT engine build: ONNX parse, optimisation and calibration profiles, precision flags
and FP32 pinning, DLA, INT8 calibration, progress; on the requested GPU.

Per major version (the branches are version tests, never attribute probes, so a strict
fake of each version's bindings can check that nothing else is touched):
    8.x   explicit-batch network flag; no progress monitor (a thread logs elapsed time).
    10.x  network flags 0 (explicit batch is the only mode); trt.IProgressMonitor.
    >= 11 strongly typed only: the engine computes in the ONNX graph's types (fp16: an
          fp16 export with FP32 islands, occo_ros.model.fp16_islands); int8 refused.

FP16 safety (OCCO_METHOD.md §2): the attention context exceeds the FP16 range at high
resolutions, so the layers named by model_contract.FP32_REGION_PATTERN are pinned to FP32
(layer precision + output type) and the builder obeys those constraints.

INT8 is loud: the calibration pairs are checked (OpenCV present, every image readable) before
the build; an exception inside the calibrator (which TensorRT would read as "end of data")
is kept and re-raised after the build; the scale cache is keyed by the calibration data.
Inputs are prepared as the node prepares them: visible BT.601 luma resized with area
interpolation, /255; thermal normalised with the node's thermal parameters (EngineSpec.thermal).
"""

from __future__ import annotations

import atexit
from collections.abc import Callable, Iterator
import contextlib
import hashlib
import json
import logging
from pathlib import Path
import re
import threading
import time
import types

import numpy as np

from occo_ros.engines.tensorrt.cache import BuiltPlan, parse_version
from occo_ros.engines.tensorrt.common import (
    STRONGLY_TYPED_MAJOR,
    SUPPORTED,
    check_dla,
    cuda_context,
    import_pycuda_driver,
    import_tensorrt,
    major_version,
    quoted,
    shared_logger,
    step,
    tensorrt_errors,
    tensorrt_version,
)
from occo_ros.model.contract import FP32_REGION_PATTERN, INPUT_NAMES, EngineError
from occo_ros.params import PRECISIONS, ThermalSettings
from occo_ros.util.atomic_file import atomic_write_bytes

_LOG = logging.getLogger('occo_ros.tensorrt')

#: Seconds between "building..." lines while a plan is built.
PROGRESS_INTERVAL_S = 10.0
#: Calibration pairs used for INT8 when a folder holds more (entropy calibration saturates).
MAX_CALIBRATION_PAIRS = 64
#: Set by :func:`cancel_builds` (at exit: a node ended by a signal during start-up).
_CANCEL = threading.Event()


@atexit.register
def cancel_builds() -> None:
    """Stop the TensorRT builds under way at their next step (TensorRT >= 10: the progress
    monitor's step_complete answers False; build_serialized_network then returns None, so no
    engine is cached); 8.x builds run to their end."""
    _CANCEL.set()


#: Version of the build recipe (flags, FP32 pinning, profiles, calibration preparation), part
#: of the engine key: bump it with every change to how engines are built, and only then (an
#: edit that builds the same engines must not rebuild every robot's cache).
RECIPE_VERSION = 1
#: TensorRT layer metadata naming the ONNX node(s) a layer comes from (ILayer.metadata, 8.6+).
_ONNX_LAYER = re.compile(r'\[ONNX Layer: ([^\]]+)\]')


class CalibrationSet:
    """Validated INT8 calibration pairs and how to prepare them (`thermal`: the node's
    thermal normalisation, so the images are normalised as the node normalises its input)."""

    def __init__(self, folder: str | Path, input_shape: tuple[int, int],
                 thermal: ThermalSettings, limit: int = MAX_CALIBRATION_PAIRS) -> None:
        try:
            import cv2  # only calibration needs OpenCV here
        except ImportError as exc:
            raise EngineError(f'INT8 calibration needs OpenCV (cv2): {exc}') from exc
        self._cv2, self.input_shape = cv2, tuple(input_shape)
        self.thermal = ThermalSettings(*thermal)
        pairs = calibration_pairs(folder)
        self.pairs = pairs[::max(1, len(pairs) // limit)][:limit]
        # a plain tuple: the digest of scales cached before ThermalSettings stays the same
        digest = hashlib.sha256(repr((self.input_shape, tuple(self.thermal))).encode())
        for visible, infrared in self.pairs:
            for path in (visible, infrared):
                data = path.read_bytes()
                image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
                if image is None or image.size == 0:
                    raise EngineError(f'calibration image {path} cannot be read as an image')
                digest.update(path.name.encode() + data)
        self.sha256 = digest.hexdigest()

    def prepare(self, visible_path: Path, infrared_path: Path) -> tuple[np.ndarray, ...]:
        """(visible_y, infrared), each float32 (1, 1, H, W) in [0, 1], as the node makes them."""
        from occo_ros.core.color import luma_chroma
        from occo_ros.core.thermal import ThermalNormalizer, normalize_thermal

        cv2, (height, width) = self._cv2, self.input_shape
        visible = cv2.imread(str(visible_path), cv2.IMREAD_COLOR)
        thermal = cv2.imread(str(infrared_path), cv2.IMREAD_UNCHANGED)
        if visible is None or thermal is None:
            raise EngineError(f'cannot read calibration pair {visible_path} / {infrared_path}')
        if thermal.ndim == 3:
            thermal = cv2.cvtColor(thermal, cv2.COLOR_BGR2GRAY)
        luma = cv2.resize(luma_chroma(visible, 'bgr')[0], (width, height),
                          interpolation=cv2.INTER_AREA)
        low, high = ThermalNormalizer(*self.thermal).update(thermal)
        infrared = normalize_thermal(
            cv2.resize(thermal, (width, height), interpolation=cv2.INTER_AREA), low, high)
        return ((luma.astype(np.float32) / np.float32(255.0))[None, None],
                np.ascontiguousarray(infrared, np.float32)[None, None])

    def batches(self) -> Iterator[tuple[np.ndarray, ...]]:
        for pair in self.pairs:
            yield self.prepare(*pair)


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


def make_calibrator(trt: types.ModuleType, driver: types.ModuleType,
                    batches: Iterator[tuple[np.ndarray, ...]], cache_path: Path,
                    log: Callable[[str], None]) -> object:
    """An IInt8EntropyCalibrator2 feeding `batches`; scales cached at `cache_path`. An
    exception in get_batch is kept in `.error` (TensorRT would read it as end of data)."""

    class Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.count = 0
            self.error: BaseException | None = None
            self.buffers: dict[str, object] = {}

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: list[str]) -> list[int] | None:
            try:
                arrays = dict(zip(INPUT_NAMES, next(batches)))
                for name, array in arrays.items():
                    if name not in self.buffers:
                        self.buffers[name] = driver.mem_alloc(array.nbytes)
                    driver.memcpy_htod(self.buffers[name], np.ascontiguousarray(array))
            except StopIteration:
                return None
            except Exception as exc:  # re-raised by build_plan after the build
                self.error = exc
                return None
            self.count += 1
            return [int(self.buffers[name]) for name in names]

        def read_calibration_cache(self) -> bytes | None:
            if cache_path.is_file():
                log(f'INT8 calibration: reusing scales from {cache_path}')
                return cache_path.read_bytes()
            return None

        def write_calibration_cache(self, cache: object) -> None:
            try:
                atomic_write_bytes(cache_path, bytes(cache))
            except OSError as exc:  # a read-only cache folder: the scales serve this build
                log(f'INT8 calibration: {self.count} pairs; the scales cannot be cached '
                    f'({exc}), so the next build calibrates again')
                return
            log(f'INT8 calibration: {self.count} pairs, scales cached at {cache_path}')

        def release(self) -> None:
            """Free the device buffers (while their CUDA context is still current)."""
            for buffer in self.buffers.values():
                buffer.free()
            self.buffers.clear()

    return Calibrator()


@contextlib.contextmanager
def _build_progress(trt: types.ModuleType, config: object, log: Callable[[str], None]):
    """Log progress while the builder runs: trt.IProgressMonitor from 10.0, else a thread
    logging the elapsed time every PROGRESS_INTERVAL_S seconds."""
    started = time.monotonic()
    if major_version(trt) >= 10:
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
                return not _CANCEL.is_set()   # False cancels the build

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


def pin_fp32_layers(network: object, trt: types.ModuleType) -> dict[str, str]:
    """Keep the layers of the FP32 regions (model_contract.FP32_REGION_PATTERN) in FP32.

    Weakly typed TensorRT (< 11): set their precision and output types to FP32. Strongly
    typed (11+): the ONNX types decide, so check that they are float32 there (an fp16
    export with FP32 islands, occo_ros.model.fp16_islands). Layers whose outputs are not floating
    point (shape arithmetic) are left alone. A layer is matched by its name or, from 8.6, by
    the ONNX node names in its metadata ('[ONNX Layer: <node>]').

    Returns:
        {layer name: ONNX node name} of the FP32 layers.

    Raises:
        EngineError: a strongly typed network computes an FP32-region layer in float16.
    """
    floats = (trt.float32, trt.float16)
    with_metadata = parse_version(tensorrt_version(trt))[:2] >= (8, 6)
    strongly_typed = major_version(trt) >= STRONGLY_TYPED_MAJOR
    kept = {}
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        nodes = [layer.name, *(_ONNX_LAYER.findall(layer.metadata) if with_metadata else [])]
        node = next((name for name in reversed(nodes) if FP32_REGION_PATTERN.search(name)),
                    None)
        outputs = [layer.get_output(i) for i in range(layer.num_outputs)]
        if node is None or not all(output.dtype in floats for output in outputs):
            continue
        if strongly_typed:
            if any(output.dtype != trt.float32 for output in outputs):
                raise EngineError(
                    f'layer {layer.name} (ONNX node {node}) of an FP32 region is typed '
                    'float16: TensorRT >= 11 takes precision from the ONNX types; build from '
                    'an fp16 export with FP32 islands (occo_ros.model.fp16_islands)')
        else:
            layer.precision = trt.float32
            for i in range(layer.num_outputs):
                layer.set_output_type(i, trt.float32)
        kept[layer.name] = node
    return kept


def check_fp32_regions(kept: dict[str, str], listed: list[str] | None,
                       log: Callable[[str], None]) -> None:
    """Compare the FP32 layers with the FP32 nodes the ONNX lists (metadata 'fp32_nodes';
    None: not readable here). No FP32 layer at all is an error: the attention context
    overflows FP16 at high resolutions (OCCO_METHOD.md §2)."""
    if not kept:
        raise EngineError(
            'no layer of the FP32 regions (attention context, channel pools) was found in the '
            'TensorRT network' + (f', though the ONNX lists {len(listed)} FP32 nodes'
                                  if listed else '')
            + ': a reduced-precision engine would overflow FP16 at high resolutions; '
            'export the model with occo-export, or use precision fp32')
    missing = sorted(set(listed or ()) - set(kept.values()))
    if missing:
        log(f'warning: {len(missing)} of the {len(listed)} FP32 nodes the ONNX lists have no '
            f'FP32 layer (TensorRT may have fused them), e.g. {missing[0]}')


def listed_fp32_nodes(onnx_path: Path) -> list[str] | None:
    """The FP32 node names export.py stored in the ONNX metadata; None without the onnx
    package (robots may lack it) or the entry."""
    try:
        import onnx
    except ImportError:
        return None
    model = onnx.load(str(onnx_path), load_external_data=False)
    listed = {prop.key: prop.value for prop in model.metadata_props}.get('fp32_nodes')
    return json.loads(listed) if listed else None


def _typed_float16(network: object, trt: types.ModuleType) -> bool:
    """Whether any layer of the network outputs float16 (a strongly typed fp16 graph)."""
    return any(layer.get_output(i).dtype == trt.float16
               for layer in map(network.get_layer, range(network.num_layers))
               for i in range(layer.num_outputs))


def network_flags(trt: types.ModuleType) -> int:
    """Explicit batch is required in TensorRT 8.x and the only mode (flag deprecated) in 10+."""
    if major_version(trt) >= 10:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)


def _parse_onnx(trt: types.ModuleType, builder: object, onnx_path: Path, logger: object):
    """Network and parser for `onnx_path`; EngineError listing the parser's errors."""
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = '; '.join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineError(
            f'TensorRT {tensorrt_version(trt)} could not parse {onnx_path}: {errors} (a '
            'corrupt file, or an opset newer than this TensorRT reads: use --opset 17 for 8.x)')
    return network, parser


def _configure_precision(trt: types.ModuleType, builder: object, config: object,
                         precision: str, dla_core: int | None,
                         log: Callable[[str], None]) -> str:
    """Set precision / DLA flags; returns the precision actually used."""
    if major_version(trt) >= STRONGLY_TYPED_MAJOR:
        if precision == 'int8':
            raise EngineError(
                f'TensorRT {tensorrt_version(trt)} builds strongly typed networks only (no '
                f'INT8 builder flag, no calibrator): occo_ros builds int8 engines with '
                f'{SUPPORTED}; use precision fp16 or fp32 with this TensorRT, or install 10.x')
        if dla_core is not None:
            raise EngineError(f'DLA builds need TensorRT {SUPPORTED.split(" for")[0]}')
        return precision
    used = precision
    if precision == 'int8' and not builder.platform_has_fast_int8:
        used = 'fp16'
        log('this GPU has no fast INT8; building fp16 instead')
    if used in ('fp16', 'int8'):
        if builder.platform_has_fast_fp16:
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
        check_dla(dla_core, builder.num_DLA_cores)
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)  # unsupported layers run on the GPU
    return used


def _set_profile(builder: object, config: object, network: object,
                 input_shape: tuple[int, int], used: str) -> bool:
    """Fix the optimisation profile of a dynamic network (and the INT8 calibration profile,
    which NvInfer.h requires for runtime dimensions); False for a fixed-shape network."""
    inputs = [network.get_input(index) for index in range(network.num_inputs)]
    if not any(-1 in tuple(tensor.shape) for tensor in inputs):
        return False
    profile = builder.create_optimization_profile()
    shape = (1, 1, *input_shape)
    for tensor in inputs:
        profile.set_shape(tensor.name, shape, shape, shape)
    config.add_optimization_profile(profile)
    if used == 'int8':
        config.set_calibration_profile(profile)
    return True


def build_plan(
    onnx_path: str | Path,
    precision: str,
    input_shape: tuple[int, int],
    gpu: int = 0,
    dla_core: int | None = None,
    workspace_mb: int = 1024,
    calibration: CalibrationSet | None = None,
    calibration_cache: Path | None = None,
    log: Callable[[str], None] = _LOG.info,
) -> BuiltPlan:
    """Build a serialized TensorRT plan from an FIFN ONNX file, on GPU `gpu`.

    Args:
        onnx_path: ONNX model from export.py (fixed or dynamic H x W).
        precision: 'fp32', 'fp16' or 'int8' (int8 adds fp16 fallback and needs calibration).
        input_shape: (H, W) of the engine (the optimisation profile of a dynamic model).
        gpu: CUDA device the build runs on (its primary context is made current).
        dla_core: build for this DLA core (fp16/int8; unsupported layers fall back to GPU).
        workspace_mb: builder workspace limit in MiB.
        calibration: validated INT8 calibration pairs; None: only a cached scale file.
        calibration_cache: INT8 scale cache file (read when present, written after).
        log: receives progress and decisions.

    Raises:
        EngineError: naming the failing step and the cause, or what to do.
    """
    if precision not in PRECISIONS:
        raise EngineError(f'precision {precision!r} is not one of {PRECISIONS}')
    trt, driver = import_tensorrt(), import_pycuda_driver()
    onnx_path = Path(onnx_path)
    with contextlib.ExitStack() as stack:
        with step('make the GPU current'):
            stack.enter_context(cuda_context(driver, gpu))
        logger = shared_logger(trt)
        with step('create the builder'):
            builder = trt.Builder(logger)
        with step('parse the ONNX model'):
            network, _parser = _parse_onnx(trt, builder, onnx_path, logger)
        with step('configure the build'):
            config = builder.create_builder_config()
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
            used = _configure_precision(trt, builder, config, precision, dla_core, log)
            _set_profile(builder, config, network, input_shape, used)
            pinned = pin_fp32_layers(network, trt) if used != 'fp32' else {}
        if used == 'fp16' and major_version(trt) >= STRONGLY_TYPED_MAJOR \
                and not _typed_float16(network, trt):
            raise EngineError(
                f'{onnx_path.name} is typed float32, and TensorRT {tensorrt_version(trt)} takes '
                'the precision from the ONNX types: build fp16 from its fp16 copy with FP32 '
                'islands (occo_ros.model.fp16_islands; load_or_build makes it)')
        if used != 'fp32':
            check_fp32_regions(pinned, listed_fp32_nodes(onnx_path), log)
            log(f'{len(pinned)} layers of the FP32 regions kept in FP32')
        calibrator = None
        if used == 'int8':
            if calibration is None and not (calibration_cache and calibration_cache.is_file()):
                raise EngineError(
                    "precision 'int8' needs calibration images: set calibration_dir (or "
                    'occo-build-engine --calibration-dir DIR, vi/ and ir/ pairs) once; its '
                    'scale cache is then reused')
            with step('set up INT8 calibration'):
                batches = calibration.batches() if calibration is not None else iter(())
                # Kept in a local for the whole build: TensorRT holds only a raw pointer.
                calibrator = make_calibrator(trt, driver, batches, calibration_cache, log)
                config.int8_calibrator = calibrator
                stack.callback(calibrator.release)  # runs before the context is popped
        log(f'building TensorRT {tensorrt_version(trt)} engine from {onnx_path.name}: '
            f'{used}, input {input_shape[0]}x{input_shape[1]}, GPU {gpu}'
            + (f', DLA core {dla_core}' if dla_core is not None else ''))
        with step('build the engine'), _build_progress(trt, config, log), \
                tensorrt_errors(logger) as errors:
            plan = builder.build_serialized_network(network, config)
        if calibrator is not None and calibrator.error is not None:
            raise EngineError(f'INT8 calibration failed after {calibrator.count} pairs: '
                              f'{type(calibrator.error).__name__}: {calibrator.error}'
                              ) from calibrator.error
        if plan is None and _CANCEL.is_set():
            raise EngineError('TensorRT engine build cancelled (the process is ending)')
        if plan is None:
            raise EngineError(
                f'TensorRT failed to build an engine from {onnx_path} ({used})'
                f'{quoted(errors)}; workspace too small? try workspace_mb 2048')
        with step('serialize the engine'):
            data = bytes(plan)
    return BuiltPlan(data, used, {
        'fp32_layers': len(pinned), 'gpu': gpu,
        'calibration_sha256': calibration.sha256 if calibration is not None else '',
        'calibration_pairs': calibrator.count if calibrator is not None else 0})
