"""TensorRT backend: the engine key, the cache policy around build and load, and prebuilt
engine files. The build is tensorrt_build, the execution tensorrt_runtime, what both share
tensorrt_common (supported versions: see there).

tensorrt and pycuda are imported lazily: importing this module never fails, and a missing
package raises EngineError naming what to install (the factory then falls back).

Three separate steps (STYLE_EXAMPLES.md "absorb" item 6):
    configuration: `engine_key`                   (what the engine must match)
    cache decision: engine_cache.resolve_engine   (load / validate / rebuild, logged)
    build / execution: tensorrt_build.build_plan, tensorrt_runtime.TensorRTEngine
"""

from __future__ import annotations

from collections.abc import Callable
import contextlib
import hashlib
import importlib.util
import json
import logging
from pathlib import Path
import tempfile

from occo_ros.engines.tensorrt.build import RECIPE_VERSION, CalibrationSet, build_plan
from occo_ros.engines.tensorrt.cache import (
    PRECISIONS,
    BuiltPlan,
    CacheResult,
    EngineKey,
    default_cache_dir,
    parse_version,
    plan_trt_version,
    resolve_engine,
    sha256_file,
)
from occo_ros.engines.tensorrt.common import (
    STRONGLY_TYPED_MAJOR,
    check_gpu,
    import_pycuda_driver,
    import_tensorrt,
    major_version,
    parse_device,
    step,
    tensorrt_version,
)
from occo_ros.engines.tensorrt.runtime import TensorRTEngine
from occo_ros.model.contract import EngineError
from occo_ros.params import ThermalSettings

#: The default calibration normalisation: 8-bit thermal images as they are.
FIXED_8BIT = ThermalSettings('fixed', 0.0, 255.0, (1.0, 99.0), 0.1)

_LOG = logging.getLogger('occo_ros.tensorrt')

__all__ = ['TensorRTEngine', 'engine_key', 'import_pycuda_driver', 'import_tensorrt',
           'load_engine_file', 'load_or_build']


def engine_key(onnx_path: Path, precision: str, input_shape: tuple[int, int], device: str,
               calibration_sha256: str = '') -> EngineKey:
    """The cache key for building `onnx_path` on this machine (imports tensorrt + pycuda)."""
    if precision not in PRECISIONS:
        raise EngineError(f'precision {precision!r} is not one of {PRECISIONS}')
    trt = import_tensorrt()
    driver = import_pycuda_driver()
    gpu, dla_core = parse_device(device)
    check_gpu(driver, gpu, device)
    with step('read the GPU properties'):
        cuda_device = driver.Device(gpu)
        major, minor = cuda_device.compute_capability()
        sm_count = int(cuda_device.get_attribute(
            driver.device_attribute.MULTIPROCESSOR_COUNT))
        name = cuda_device.name()
    recipe = hashlib.sha256(f'{RECIPE_VERSION}:{calibration_sha256}'.encode()).hexdigest()
    return EngineKey(sha256_file(onnx_path), tensorrt_version(trt), name, f'{major}.{minor}',
                     dla_core, precision, tuple(input_shape), sm_count, recipe)


def _calibration_cache(folder: Path, onnx_path: Path, onnx_sha: str, trt_version: str,
                       input_size: tuple[int, int], calibration: CalibrationSet | None,
                       log: Callable[[str], None]) -> Path | None:
    """The INT8 scale cache for this data (`...trt<version>...calib-<data sha12>.calib`:
    scales are not portable across TensorRT versions); without data the newest cache for this
    model, TensorRT and size, or None."""
    prefix = (f'{onnx_path.stem}.{onnx_sha[:12]}.trt{trt_version}.'
              f'{input_size[0]}x{input_size[1]}.calib-')
    if calibration is not None:
        return folder / f'{prefix}{calibration.sha256[:12]}.calib'
    found = sorted(folder.glob(prefix + '*.calib'), key=lambda path: path.stat().st_mtime)
    if found:
        log(f'no calibration_dir: using the newest INT8 scale cache {found[-1].name}')
    return found[-1] if found else None


def _fp16_islands_onnx(onnx_path: Path, folder: Path, log: Callable[[str], None]) -> Path:
    """The fp16 copy with FP32 islands of `onnx_path` that strongly typed TensorRT builds fp16
    engines from: `<folder>/<stem>.<sha12>.fp16i<version>.onnx`, made once (in the temp
    folder when `folder` cannot be written)."""
    from occo_ros.model.fp16_islands import ISLANDS_VERSION, write_fp16_islands

    if importlib.util.find_spec('onnx') is None:
        raise EngineError(f'fp16 engines on TensorRT >= {STRONGLY_TYPED_MAJOR} are built from '
                          'an fp16 copy of the ONNX model, which needs the onnx package: '
                          'pip install onnx')
    name = f'{onnx_path.stem}.{sha256_file(onnx_path)[:12]}.fp16i{ISLANDS_VERSION}.onnx'
    for where in (folder, Path(tempfile.gettempdir()) / 'occo_ros'):
        path = where / name
        if path.is_file():
            return path
        try:
            write_fp16_islands(onnx_path, path)
        except OSError as exc:
            log(f'warning: cannot write {path} ({exc})')
            continue
        log(f'fp16 with FP32 islands for TensorRT >= {STRONGLY_TYPED_MAJOR}: wrote {path}')
        return path
    raise EngineError(f'no folder to write the fp16 copy of {onnx_path} to')


def load_or_build(
    onnx_path: str | Path,
    input_size: tuple[int, int],
    precision: str = 'fp16',
    device: str = 'auto',
    cache_dir: str | Path | None = None,
    force_rebuild: bool = False,
    calibration_dir: str | Path | None = None,
    thermal: ThermalSettings = FIXED_8BIT,
    workspace_mb: int = 1024,
    log: Callable[[str], None] = _LOG.info,
    model_path: str | None = None,
) -> tuple[TensorRTEngine, CacheResult]:
    """A TensorRTEngine for `onnx_path` from the engine cache, building it when needed.

    Args:
        onnx_path: FIFN ONNX file.
        input_size: (H, W) of the engine.
        precision: 'fp32', 'fp16' or 'int8' (requested; EngineInfo reports what was used).
        device: see parse_device; the build runs on this GPU too.
        cache_dir: engine cache folder (None: $OCCO_ROS_CACHE or ~/.cache/occo_ros/engines).
        force_rebuild: ignore a cached engine.
        calibration_dir: vi/ + ir/ pairs for INT8 calibration (validated before building).
        thermal: the node's thermal normalisation (mode, lo, hi, percentiles, smoothing),
            applied to the calibration images.
        workspace_mb: builder workspace in MiB.
        log: one line per decision and progress.
        model_path: the user's model file (.pt or .onnx) for EngineInfo; default onnx_path.

    Raises:
        EngineError: TensorRT/pycuda missing, build failure (naming the step), or a fresh
            plan that won't load.
    """
    onnx_path = model_onnx = Path(onnx_path)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if precision == 'fp16' and major_version(import_tensorrt()) >= STRONGLY_TYPED_MAJOR:
        onnx_path = _fp16_islands_onnx(onnx_path, folder, log)
    calibration = scales = None
    if precision == 'int8':
        if calibration_dir:
            calibration = CalibrationSet(calibration_dir, input_size, thermal)
        scales = _calibration_cache(folder, onnx_path, sha256_file(onnx_path),
                                    tensorrt_version(import_tensorrt()), input_size,
                                    calibration, log)
    # The scales' data id is in the key: an engine prebuilt from calibration data is the one
    # a later start without calibration_dir (same scale file) loads.
    key = engine_key(onnx_path, precision, input_size, device,
                     scales.name.rsplit('.calib-', 1)[1] if scales is not None else '')
    gpu = parse_device(device)[0]

    def build() -> BuiltPlan:
        return build_plan(onnx_path, precision, input_size, gpu, key.dla_core, workspace_mb,
                          calibration, scales, log)

    def load(plan: bytes, sidecar: dict) -> TensorRTEngine:
        return TensorRTEngine(plan, model_path or str(model_onnx), input_size,
                              sidecar.get('precision_used', precision), device)

    engine, result = resolve_engine(key, folder, onnx_path.stem, build, load, log,
                                    force_rebuild)
    engine.info.details.update({
        'engine_path': str(result.engine_path), 'cache': result.action,
        'cache_reason': result.reason, 'build_time_s': result.build_time_s,
        'requested_precision': precision})
    return engine, result


def load_engine_file(
    engine_path: str | Path, input_size: tuple[int, int] | None, device: str = 'auto',
    log: Callable[[str], None] = _LOG.info,
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
                              {'engine_path': str(engine_path), 'cache': 'user file'})
    except EngineError as exc:
        raise EngineError(f'{exc}; {advice}') from exc
