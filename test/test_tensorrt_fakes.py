"""The whole TensorRT path through strict fakes of TensorRT 8.5, 10.3 and 11.1 and pycuda
(test/fake_tensorrt.py: TensorRT and pycuda cannot be installed here, no GPU).

Every test ends with the fakes' three checks: no attribute outside that TensorRT version
touched, every page-locked and device allocation freed, every thread's CUDA context stack
empty and every retained primary context detached.
"""

from __future__ import annotations

import importlib.machinery
import json
import logging
from pathlib import Path
import sys
import threading
import types

import cv2
import fake_tensorrt
from fake_tensorrt import VERSIONS, Fake, read_only_folder
import numpy as np
import pytest

from occo_ros.engines import EngineSpec, create_engine
from occo_ros.engines.tensorrt import build as tensorrt_build
from occo_ros.engines.tensorrt import engine as tensorrt_engine
from occo_ros.model.contract import FP32_REGION_PATTERN, EngineError
from occo_ros.model.onnx_export import read_metadata as onnx_metadata
from occo_ros.params import ThermalSettings

pytestmark = [pytest.mark.core]

REPO = Path(__file__).resolve().parents[1]
SHIPPED_ONNX = REPO / 'models' / 'fifn_w025_pixel.onnx'   # dynamic H x W, opset 17
SIZE = (64, 80)
WEAK_TYPED = ('8.5', '8.6', '10.3')
THERMAL = ThermalSettings('smoothed', 0.0, 65535.0, (1.0, 99.0), 0.1)


@pytest.fixture(params=sorted(VERSIONS))
def fake(request, monkeypatch):
    installed = Fake(monkeypatch, request.param)
    yield installed
    installed.check()


def build(tmp_path: Path, precision: str, device: str = 'cuda', **options):
    lines: list[str] = []
    engine, result = tensorrt_engine.load_or_build(
        SHIPPED_ONNX, SIZE, precision, device, tmp_path / 'cache', log=lines.append,
        **options)
    return engine, result, lines


def pair(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return tuple(rng.random((1, 1, *SIZE), dtype=np.float32) for _ in range(2))


def infer_in_thread(engine) -> np.ndarray:
    """infer from a thread other than the one that built the engine (as a ROS executor)."""
    result = {}
    visible, infrared = pair()
    thread = threading.Thread(target=lambda: result.update(out=engine.infer(visible, infrared)))
    thread.start()
    thread.join()
    np.testing.assert_array_equal(result['out'], np.maximum(visible, infrared))
    return result['out']


def test_whole_path_build_cache_infer_close(fake, tmp_path, monkeypatch):
    version = fake.trt.version
    precision = 'fp16' if version in WEAK_TYPED else 'fp32'
    engine, result, lines = build(tmp_path, precision)
    built = engine._engine._description
    assert result.action == 'built' and engine.info.precision == precision
    assert built['gpu'] == 0 and built['dynamic'] and built['workspace'] == 1024 << 20
    assert built['shapes'] == {'visible_y': [1, 1, *SIZE], 'infrared': [1, 1, *SIZE]}
    if version in WEAK_TYPED:
        assert built['flags'] == ['FP16', 'OBEY_PRECISION_CONSTRAINTS']
        pinned = built['pinned']
        assert all(FP32_REGION_PATTERN.search(name) for name in pinned)
        assert sum('/attention_context_' in name for name in pinned) >= 8   # 8 softmaxes
        assert sum('/channel_pool_' in name for name in pinned) == 4        # one per FIFB
    else:
        assert built['flags'] == [] and built['pinned'] == []
    progress = [line for line in lines if line.startswith('building engine: ')]
    assert bool(progress) == (version not in ('8.5', '8.6'))   # IProgressMonitor from 10.0
    infer_in_thread(engine)
    engine.close()
    engine.close()  # idempotent
    with pytest.raises(EngineError, match='closed'):
        engine.infer(*pair())
    assert not fake.recorder.live

    again, result, _ = build(tmp_path, precision)
    assert result.action == 'loaded'
    infer_in_thread(again)
    again.close()

    monkeypatch.setattr(tensorrt_engine, 'RECIPE_VERSION', -1)
    rebuilt, result, _ = build(tmp_path, precision)
    assert result.action == 'built' and 'recipe_sha256' in result.reason
    rebuilt.close()
    result.engine_path.write_bytes(result.engine_path.read_bytes()[:40])  # damaged file
    rebuilt, result, _ = build(tmp_path, precision)
    assert result.action == 'built' and 'changed after it was cached' in result.reason
    rebuilt.close()
    assert fake.recorder.events.count('ILogger') == 1   # one logger for builders and runtimes


def test_factory_runs_the_tensorrt_path(fake, tmp_path):
    spec = EngineSpec(backend='tensorrt', model_path=str(SHIPPED_ONNX), precision='fp32',
                      input_size=SIZE, engine_cache_dir=str(tmp_path), workspace_mb=512)
    engine = create_engine(spec, logging.getLogger('test'))
    info = engine.info
    assert (info.backend, info.device, info.precision) == ('tensorrt', 'cuda:0', 'fp32')
    assert info.details['tensorrt'] == fake.trt.__version__
    assert engine.engine._engine._description['workspace'] == 512 << 20
    infer_in_thread(engine)
    engine.close()


def test_engine_key_has_sm_count_and_recipe(monkeypatch):
    gpus = (('NVIDIA A100', 8, 0, 108), ('NVIDIA A100 MIG 3g', 8, 0, 42))
    fake = Fake(monkeypatch, '10.3', gpus=gpus)
    key = tensorrt_engine.engine_key(SHIPPED_ONNX, 'fp16', SIZE, 'cuda:1')
    assert (key.gpu_name, key.sm_count, key.compute_capability) == ('NVIDIA A100 MIG 3g', 42,
                                                                    '8.0')
    assert len(key.recipe_sha256) == 64
    assert key.recipe_sha256 != tensorrt_engine.engine_key(
        SHIPPED_ONNX, 'int8', SIZE, 'cuda:1', 'calibration-data').recipe_sha256
    fake.check()


def test_every_build_runs_on_the_requested_gpu(monkeypatch, tmp_path):
    fake = Fake(monkeypatch, '8.5', gpus=(('Orin', 8, 7, 16), ('RTX A2000', 8, 6, 26)))
    engine, _, lines = build(tmp_path, 'fp16', 'cuda:1')
    assert engine._engine._description['gpu'] == 1 and engine.info.device == 'cuda:1'
    assert any('GPU 1' in line for line in lines)
    infer_in_thread(engine)
    engine.close()
    with pytest.raises(EngineError, match=r"device 'cuda:2': only 2 CUDA device\(s\)"):
        build(tmp_path, 'fp16', 'cuda:2')
    fake.check()


@pytest.mark.parametrize('version', WEAK_TYPED)
def test_dla_core_is_checked_and_used(monkeypatch, tmp_path, version):
    fake = Fake(monkeypatch, version, dla_cores=2)
    engine, result, _ = build(tmp_path, 'fp16', 'dla:1')
    assert engine._engine._description['dla'] == 1 and engine.info.device == 'dla:1'
    assert '-dla1.' in result.engine_path.name
    engine.close()
    with pytest.raises(EngineError, match='DLA core 2 does not exist: this device has 2'):
        build(tmp_path, 'fp16', 'dla:2')
    with pytest.raises(EngineError, match="runs fp16 or int8 only, not 'fp32'"):
        build(tmp_path, 'fp32', 'dla:0')
    fake.check()


def test_tensorrt_11_refuses_int8_by_name(monkeypatch, tmp_path):
    fake = Fake(monkeypatch, '11.1')
    with pytest.raises(EngineError, match=r'strongly typed networks only .* TensorRT '
                                          r'8\.5/8\.6 .* and 10\.x'):
        build(tmp_path, 'int8')
    fake.check()


def test_tensorrt_11_builds_fp16_from_the_fp16_islands_export(monkeypatch, tmp_path):
    """11 takes the precision from the ONNX types: load_or_build converts the fp32 export
    to float16 with FP32 islands, and the (strongly typed) network computes in float16
    except the 60 nodes of the FP32 regions."""
    fake = Fake(monkeypatch, '11.1')
    engine, result, lines = build(tmp_path, 'fp16')
    built = engine._engine._description
    assert engine.info.precision == 'fp16' and built['flags'] == [] and built['pinned'] == []
    assert len(built['float16_layers']) > 400
    assert not any(FP32_REGION_PATTERN.search(name) for name in built['float16_layers'])
    assert result.sidecar['fp32_layers'] >= 60   # the 60 listed + Casts into the regions
    assert engine.info.model_path == str(SHIPPED_ONNX)
    converted = list((tmp_path / 'cache').glob('*.fp16i1.onnx'))
    assert len(converted) == 1 and any('wrote' in line for line in lines)
    infer_in_thread(engine)
    engine.close()
    again, result, _ = build(tmp_path, 'fp16')   # the same copy and engine serve again
    assert result.action == 'loaded'
    again.close()
    # Given the fp32 graph directly, the build says why it cannot be fp16.
    with pytest.raises(EngineError, match='is typed float32, and TensorRT 11.1.0.6 takes the '
                                          'precision from the ONNX types'):
        tensorrt_build.build_plan(SHIPPED_ONNX, 'fp16', SIZE)
    fake.check()


def write_calibration(folder: Path, count: int = 3, seed: int = 0) -> Path:
    """vi/*.png (RGB) and ir/*.png (16-bit thermal) pairs of the same names."""
    rng = np.random.default_rng(seed)
    for sub in ('vi', 'ir'):
        (folder / sub).mkdir(parents=True)
    for index in range(count):
        visible = rng.integers(0, 256, (48, 60, 3), dtype=np.uint8)
        thermal = rng.integers(20000, 30000, (48, 60), dtype=np.uint16)
        cv2.imwrite(str(folder / 'vi' / f'{index:02d}.png'), visible)
        cv2.imwrite(str(folder / 'ir' / f'{index:02d}.png'), thermal)
    return folder


@pytest.mark.parametrize('version', WEAK_TYPED)
def test_int8_is_loud(monkeypatch, tmp_path, version):
    fake = Fake(monkeypatch, version)
    data = write_calibration(tmp_path / 'calib')
    engine, result, lines = build(tmp_path, 'int8', calibration_dir=data, thermal=THERMAL)
    assert engine.info.precision == 'int8'
    assert 'INT8' in engine._engine._description['flags']   # calibration profile was set
    scales = sorted((tmp_path / 'cache').glob('*.calib'))
    assert len(scales) == 1 and any('3 pairs, scales cached' in line for line in lines)
    assert result.sidecar['calibration_pairs'] == 3
    engine.close()

    # The same data reuses its scales; other data gets its own scale file and engine key.
    engine, result, lines = build(tmp_path, 'int8', calibration_dir=data, thermal=THERMAL,
                                  force_rebuild=True)
    assert any('reusing scales' in line for line in lines)
    engine.close()
    other = write_calibration(tmp_path / 'other', seed=1)
    engine, result, _ = build(tmp_path, 'int8', calibration_dir=other, thermal=THERMAL)
    assert result.action == 'built' and len(list((tmp_path / 'cache').glob('*.calib'))) == 2
    engine.close()
    # Without a folder, the newest scales of this model and size serve: the engine built
    # from them (here from `other`) is loaded, not rebuilt.
    engine, result, lines = build(tmp_path, 'int8')
    assert any('newest INT8 scale cache' in line for line in lines)
    assert result.action == 'loaded'
    engine.close()
    fake.check()


def test_int8_failures_are_errors_not_silent(monkeypatch, tmp_path):
    fake = Fake(monkeypatch, '10.3')
    with pytest.raises(EngineError, match='needs calibration images'):
        build(tmp_path, 'int8')
    fake.recorder.events.clear()
    with pytest.raises(EngineError, match='must hold vi/ and ir/ subfolders'):
        build(tmp_path, 'int8', calibration_dir=tmp_path / 'nowhere')
    assert 'Builder' not in fake.recorder.events   # refused before any build started
    data = write_calibration(tmp_path / 'calib')
    (data / 'ir' / '01.png').write_bytes(b'not an image')
    with pytest.raises(EngineError, match=r'01.png cannot be read as an image'):
        build(tmp_path, 'int8', calibration_dir=data)

    good = write_calibration(tmp_path / 'good')
    prepare = tensorrt_build.CalibrationSet.prepare
    calls = []

    def fails_on_second(self, *paths):
        calls.append(paths)
        if len(calls) == 2:
            raise MemoryError('out of host memory')
        return prepare(self, *paths)

    monkeypatch.setattr(tensorrt_build.CalibrationSet, 'prepare', fails_on_second)
    with pytest.raises(EngineError, match='INT8 calibration failed after 1 pairs: MemoryError'):
        build(tmp_path, 'int8', calibration_dir=good)
    assert not list((tmp_path / 'cache').glob('*.engine'))
    fake.check()


def test_int8_without_fast_int8_builds_fp16(monkeypatch, tmp_path):
    fake = Fake(monkeypatch, '8.5', fast_int8=False)
    engine, _, lines = build(tmp_path, 'int8', calibration_dir=write_calibration(tmp_path / 'c'))
    assert engine.info.precision == 'fp16' and any('no fast INT8' in line for line in lines)
    engine.close()
    fake.check()


def test_calibration_inputs_are_prepared_like_the_node(tmp_path):
    from occo_ros.core.thermal import ThermalNormalizer, normalize_thermal

    data = write_calibration(tmp_path / 'calib', count=1)
    calibration = tensorrt_build.CalibrationSet(data, SIZE, THERMAL)
    visible, infrared = calibration.prepare(*calibration.pairs[0])
    raw = cv2.imread(str(data / 'ir' / '00.png'), cv2.IMREAD_UNCHANGED)
    lo, hi = ThermalNormalizer('smoothed', 0.0, 65535.0, (1.0, 99.0), 0.1).update(raw)
    expected = normalize_thermal(cv2.resize(raw, SIZE[::-1], interpolation=cv2.INTER_AREA),
                                 lo, hi)
    np.testing.assert_array_equal(infrared[0, 0], expected)
    assert visible.shape == infrared.shape == (1, 1, *SIZE) and visible.dtype == np.float32
    assert 0.0 <= visible.min() and visible.max() <= 1.0
    assert calibration.sha256 != tensorrt_build.CalibrationSet(
        data, SIZE, ('fixed', 0.0, 65535.0, (1.0, 99.0), 0.1)).sha256


FAULTS = [
    ('retain_primary_context', 'make the GPU current'),
    ('Builder', 'create the builder'),
    ('parse_from_file', 'parse the ONNX model'),
    ('create_builder_config', 'configure the build'),
    ('build_serialized_network', 'build the engine'),
    ('Runtime', 'create the runtime'),
    ('deserialize_cuda_engine', 'deserialise the engine'),
    ('create_execution_context', 'create the execution context'),
    ('pagelocked_empty', 'allocate buffers'),
    ('mem_alloc', 'allocate buffers'),
]


@pytest.mark.parametrize('call, step', FAULTS)
def test_a_fault_in_each_build_or_load_step_names_the_step(fake, tmp_path, call, step):
    precision = 'fp16' if fake.trt.version in WEAK_TYPED else 'fp32'
    fake.recorder.fail_at = call
    with pytest.raises(EngineError, match=f"TensorRT step '{step}' failed: unexpected "
                                          f'RuntimeError: injected fault in {call}') as error:
        build(tmp_path, precision)
    assert isinstance(error.value.__cause__, RuntimeError)


def test_faults_at_infer_and_close_name_the_step(fake, tmp_path):
    precision = 'fp16' if fake.trt.version in WEAK_TYPED else 'fp32'
    engine, _, _ = build(tmp_path, precision)
    fake.recorder.fail_at = 'execute_async_v3'
    with pytest.raises(EngineError, match="step 'infer' failed: unexpected RuntimeError"):
        engine.infer(*pair())
    infer_in_thread(engine)  # the context stack stayed balanced: the engine still works
    fake.recorder.fail_at = 'free device'
    with pytest.raises(EngineError, match="step 'free buffers' failed: unexpected RuntimeError"):
        engine.close()
    assert list(fake.recorder.live.values()) == ['device']  # only the one that failed
    assert fake.recorder.balanced()
    fake.recorder.live.clear()
    fake.recorder.fail_at = 'cuda.init'
    with pytest.raises(EngineError, match='CUDA driver could not be initialised'):
        build(tmp_path, precision)


def test_a_refused_enqueue_is_an_error(fake, tmp_path, monkeypatch):
    precision = 'fp16' if fake.trt.version in WEAK_TYPED else 'fp32'
    engine, _, _ = build(tmp_path, precision)
    monkeypatch.setattr(type(engine._context), 'execute_async_v3', lambda self, handle: False)
    with pytest.raises(EngineError, match='refused to enqueue'):
        engine.infer(*pair())
    engine.close()


def test_engine_file_from_another_tensorrt(monkeypatch, tmp_path):
    first = Fake(monkeypatch, '8.5')
    engine, result, _ = build(tmp_path, 'fp16')
    engine.close()
    first.check()
    second = Fake(monkeypatch, '10.3')
    lines: list[str] = []
    with pytest.raises(EngineError, match=r'could not deserialise .*plan header says TensorRT '
                                          r'8\.5\.2.*not portable across TensorRT versions'):
        tensorrt_engine.load_engine_file(result.engine_path, SIZE, log=lines.append)
    assert any('installed is 10.3.0' in line for line in lines)
    second.check()
    engine, rebuilt, _ = build(tmp_path, 'fp16')   # the cache file names the version
    assert rebuilt.action == 'built' and 'trt10.3.0.26' in rebuilt.engine_path.name
    engine.close()
    second.check()


def test_auto_falls_back_from_a_failing_tensorrt_with_a_warning(monkeypatch, tmp_path):
    fake = Fake(monkeypatch, '10.3')
    fake.recorder.fail_at = 'build_serialized_network'

    class Log(list):
        def info(self, line: str) -> None:
            self.append(('info', line))

        def warning(self, line: str) -> None:
            self.append(('warning', line))

    log = Log()
    engine = create_engine(EngineSpec(model_path=str(SHIPPED_ONNX), input_size=SIZE,
                                      engine_cache_dir=str(tmp_path)), log)
    assert engine.info.backend == 'onnxruntime'
    warnings = [line for level, line in log if level == 'warning']
    assert len(warnings) == 1 and "tensorrt on auto failed, falling back: TensorRT step " \
        "'build the engine' failed" in warnings[0]
    assert "'build the engine'" in engine.info.details['fallback_warning']
    engine.close()
    fake.check()


def test_occo_build_engine_through_the_factory(monkeypatch, tmp_path, capsys):
    from occo_ros.cli import build_engine

    fake = Fake(monkeypatch, '8.5')
    out = tmp_path / 'robot' / 'fifn.engine'
    assert build_engine.main(['--model', str(SHIPPED_ONNX), '--height', '64', '--width', '80',
                              '--cache-dir', str(tmp_path / 'cache'), '--out', str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert out.is_file() and out.with_name(out.name + '.json').is_file()
    with pytest.raises(EngineError, match="no fixed 'visible_y' input shape"):
        tensorrt_engine.load_engine_file(out, None)   # a dynamic engine needs the size
    engine = tensorrt_engine.load_engine_file(out, SIZE)
    assert engine.info.precision == 'fp16' and engine.info.details['input_size'] == [64, 80]
    engine.close()

    # The node's parameter file decides the engine and the calibration's thermal mapping.
    params = tmp_path / 'fusion.yaml'
    calibration = write_calibration(tmp_path / 'c')
    params.write_text('/**:\n  ros__parameters:\n    precision: int8\n    input_height: 64\n'
                      f'    input_width: 80\n    calibration_dir: {calibration}\n'
                      '    thermal_mode: fixed\n    thermal_max: 40000.0\n')
    assert build_engine.main(['--params-file', str(params), '--model', str(SHIPPED_ONNX),
                              '--cache-dir', str(tmp_path / 'cache')]) == 0
    built = Path(capsys.readouterr().out.strip())
    assert '.int8.64x80.' in built.name
    sidecar = json.loads(built.with_name(built.name + '.json').read_text(encoding='utf-8'))
    as_the_node = tensorrt_build.CalibrationSet(calibration, SIZE,
                                                ('fixed', 0.0, 40000.0, (1.0, 99.0), 0.1))
    assert sidecar['calibration_sha256'] == as_the_node.sha256
    fake.check()


def test_an_engine_from_the_other_gpu_or_outside_its_profile_is_not_used(monkeypatch, tmp_path):
    gpus = (('NVIDIA L4', 8, 9, 58), ('NVIDIA L4', 8, 9, 58))   # two identical GPUs
    fake = Fake(monkeypatch, '10.3', gpus=gpus)
    engine, first, _ = build(tmp_path, 'fp16', 'cuda:0')
    engine.close()
    lines: list[str] = []
    engine, second = tensorrt_engine.load_or_build(
        SHIPPED_ONNX, SIZE, 'fp16', 'cuda:1', tmp_path / 'cache', log=lines.append)
    # Same file name and key, but the plan does not deserialise on GPU 1: rebuilt there.
    assert second.engine_path == first.engine_path and second.action == 'built'
    assert any('is unusable' in line for line in lines)
    assert engine._engine._description['gpu'] == 1
    infer_in_thread(engine)
    engine.close()
    with pytest.raises(EngineError, match=r'refuses input shape \(1, 1, 32, 40\)'):
        tensorrt_engine.load_engine_file(second.engine_path, (32, 40), 'cuda:1')
    fake.check()


# -- issue 23: the silent or confusing paths ---------------------------------------------------
def test_fp32_regions_are_found_through_the_onnx_layer_metadata_from_8_6(monkeypatch, tmp_path):
    """TensorRT names some layers '(Unnamed Layer* N) [Type]'; from 8.6 ILayer.metadata still
    names the ONNX node, so every one of the 60 FP32 nodes the ONNX lists stays FP32."""
    listed = json.loads(onnx_metadata(SHIPPED_ONNX)['fp32_nodes'])
    for version in ('8.6', '10.3'):
        fake = Fake(monkeypatch, version, layer_names='generated')
        engine, result, lines = build(tmp_path / version, 'fp16')
        assert len(engine._engine._description['pinned']) == len(listed) == 60
        assert result.sidecar['fp32_layers'] == 60 and not any('warning' in x for x in lines)
        engine.close()
        fake.check()


def test_an_fp16_build_that_keeps_no_layer_in_fp32_fails(monkeypatch, tmp_path):
    """8.5 has no layer metadata: with unnamed layers nothing can be pinned, which would
    overflow FP16 at high resolutions; the build stops and says why."""
    fake = Fake(monkeypatch, '8.5', layer_names='generated')
    with pytest.raises(EngineError, match='no layer of the FP32 regions .* though the ONNX '
                                          'lists 60 FP32 nodes'):
        build(tmp_path, 'fp16')
    assert 'build_serialized_network' not in fake.recorder.events
    fp32, _, _ = build(tmp_path, 'fp32')   # nothing to pin in fp32
    fp32.close()
    fake.check()


def test_fp32_nodes_without_a_layer_are_named(monkeypatch, tmp_path):
    fake = Fake(monkeypatch, '10.3')
    real = tensorrt_build.listed_fp32_nodes
    monkeypatch.setattr(tensorrt_build, 'listed_fp32_nodes',
                        lambda path: [*real(path), '/fifn/attention_context_9/Gone'])
    engine, _, lines = build(tmp_path, 'fp16')
    assert any('warning: 1 of the 61 FP32 nodes the ONNX lists have no FP32 layer' in line
               and '/fifn/attention_context_9/Gone' in line for line in lines)
    engine.close()
    fake.check()


def test_a_read_only_cache_keeps_the_built_engine(monkeypatch, tmp_path):
    """Deployed robots often mount the cache read-only: the multi-minute build is used, and
    the log says it could not be cached."""
    fake = Fake(monkeypatch, '10.3')
    (tmp_path / 'cache').mkdir()
    read_only_folder(monkeypatch, tmp_path / 'cache')
    engine, result, lines = build(tmp_path, 'fp16')
    assert result.action == 'built' and result.sidecar['cached'] is False
    assert any(line.startswith('warning: engine built in') and 'cannot be cached' in line
               and 'Read-only file system' in line for line in lines)
    assert not list((tmp_path / 'cache').iterdir())
    infer_in_thread(engine)
    engine.close()
    # INT8: the scales cannot be cached either; the build still calibrates and succeeds.
    data = write_calibration(tmp_path / 'calib')
    engine, result, lines = build(tmp_path, 'int8', calibration_dir=data)
    assert engine.info.precision == 'int8' and result.sidecar['calibration_pairs'] == 3
    assert any('the scales cannot be cached' in line for line in lines)
    engine.close()
    fake.check()


def test_int8_scales_are_not_reused_across_tensorrt_versions(monkeypatch, tmp_path):
    data = write_calibration(tmp_path / 'calib')
    first = Fake(monkeypatch, '8.5')
    engine, _, _ = build(tmp_path, 'int8', calibration_dir=data)
    engine.close()
    first.check()
    upgraded = Fake(monkeypatch, '8.6')   # e.g. JetPack 5.1 -> 6.0
    engine, _, lines = build(tmp_path, 'int8', calibration_dir=data)
    assert not any('reusing scales' in line for line in lines)
    assert any('3 pairs, scales cached' in line for line in lines)
    names = sorted(path.name for path in (tmp_path / 'cache').glob('*.calib'))
    assert len(names) == 2 and '.trt8.5.2.2.' in names[0] and '.trt8.6.2.3.' in names[1]
    engine.close()
    upgraded.check()


def test_a_failure_quotes_only_its_own_tensorrt_errors(monkeypatch, tmp_path):
    fake = Fake(monkeypatch, '10.3')
    with monkeypatch.context() as patch:   # first failure: TensorRT logs why
        patch.setattr(tensorrt_build, '_set_profile', lambda *args: False)
        with pytest.raises(EngineError, match='no optimization profile has been defined'):
            build(tmp_path, 'fp16')
    # A later failure where TensorRT says nothing must not quote the earlier one.
    monkeypatch.setattr(fake_tensorrt._Builder, 'build_serialized_network',
                        lambda self, network, config: None)
    with pytest.raises(EngineError, match='failed to build an engine') as error:
        build(tmp_path, 'fp16')
    assert 'TensorRT said' not in str(error.value)
    fake.check()


def test_no_execution_context_is_an_out_of_memory_error(fake, tmp_path):
    precision = 'fp16' if fake.trt.version in WEAK_TYPED else 'fp32'
    fake.recorder.none_at = 'create_execution_context'
    with pytest.raises(EngineError, match=r'could not create an execution context .*TensorRT '
                                          r'said: Requested amount of GPU memory.*out of GPU '
                                          r'memory\?') as error:
        build(tmp_path, precision)
    assert 'AttributeError' not in str(error.value)


def test_engines_closed_on_other_threads_leak_no_context(fake, tmp_path):
    """A lifecycle node under a multi-threaded executor makes the engine on one thread and
    closes it on another: pycuda's detach would leak the retain there (see the fake)."""
    precision = 'fp16' if fake.trt.version in WEAK_TYPED else 'fp32'
    for _ in range(3):
        engine, _, _ = build(tmp_path, precision)
        infer_in_thread(engine)
        closer = threading.Thread(target=engine.close)
        closer.start()
        closer.join()
        assert fake.recorder.leaked_retains == [] and fake.recorder.retained == {0: 1}
    assert fake.recorder.events.count('retain_primary_context') == 1   # once per process


def test_the_engine_key_names_a_recipe_version_not_the_file(monkeypatch, tmp_path):
    """An edit of tensorrt_build.py that builds the same engines (a comment) keeps every
    cached engine; a new RECIPE_VERSION rebuilds them."""
    fake = Fake(monkeypatch, '10.3')
    key = tensorrt_engine.engine_key(SHIPPED_ONNX, 'fp16', SIZE, 'cuda')
    edited = tmp_path / 'tensorrt_build.py'
    edited.write_text(Path(tensorrt_build.__file__).read_text() + '# a comment\n')
    monkeypatch.setattr(tensorrt_build, '__file__', str(edited))
    assert tensorrt_engine.engine_key(SHIPPED_ONNX, 'fp16', SIZE, 'cuda') == key
    monkeypatch.setattr(tensorrt_engine, 'RECIPE_VERSION', tensorrt_build.RECIPE_VERSION + 1)
    assert tensorrt_engine.engine_key(SHIPPED_ONNX, 'fp16', SIZE, 'cuda') != key
    fake.check()


def test_fp16_islands_keeps_the_fp32_regions_and_the_io_contract():
    import onnx
    import onnxruntime as ort

    from occo_ros.model.fp16_islands import fp16_islands

    fp32 = onnx.load(str(SHIPPED_ONNX))
    half = fp16_islands(fp32)
    graph = onnx.shape_inference.infer_shapes(half).graph
    elem = {value.name: value.type.tensor_type.elem_type
            for value in (*graph.input, *graph.value_info, *graph.output)}
    float32, float16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    assert {elem[name] for name in ('visible_y', 'infrared', 'fused_y')} == {float32}
    region = [node for node in graph.node if FP32_REGION_PATTERN.search(node.name)]
    listed = set(json.loads(onnx_metadata(SHIPPED_ONNX)['fp32_nodes']))
    assert listed <= {node.name for node in region}
    assert all(elem[out] == float32 for node in region for out in node.output)
    convs = [node for node in graph.node if node.op_type == 'Conv']
    assert convs and all(elem[node.output[0]] == float16 for node in convs)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1   # a pool per session costs more than it saves here
    sessions = [ort.InferenceSession(model.SerializeToString(), options,
                                     providers=['CPUExecutionProvider']) for model in (fp32, half)]
    visible, infrared = pair()
    outputs = [session.run(None, {'visible_y': visible, 'infrared': infrared})[0]
               for session in sessions]
    assert outputs[1].dtype == np.float32
    assert np.abs(outputs[1] - outputs[0]).max() < 5e-3   # fp16 rounding, no overflow
    for node in fp32.graph.node:
        node.name = node.name.replace('attention_context', 'ac').replace('channel_pool', 'cp')
    with pytest.raises(EngineError, match='has no FP32 region'):
        fp16_islands(fp32)
    with pytest.raises(EngineError, match='already holds float16'):
        fp16_islands(half)


@pytest.mark.parametrize('version', ['10.3', '11.1'])
def test_a_build_is_cancelled_through_the_progress_monitor(monkeypatch, tmp_path, version):
    """Issue 20: at exit (a node ended by a signal during start-up) the builds under way are
    cancelled: step_complete answers False, TensorRT returns no plan, nothing is cached."""
    installed = Fake(monkeypatch, version)
    cancel = threading.Event()
    monkeypatch.setattr(tensorrt_build, '_CANCEL', cancel)
    tensorrt_build.cancel_builds()
    assert cancel.is_set()
    with pytest.raises(EngineError, match='build cancelled'):
        build(tmp_path, 'fp32')
    assert [p for p in (tmp_path / 'cache').rglob('*') if p.is_file()] == []
    installed.check()


@pytest.mark.parametrize('gpu_device', [True, False], ids=['gpu_device', 'no_gpu_device'])
def test_auto_probes_pytorch_cuda_only_on_a_machine_with_a_gpu_device(monkeypatch, tmp_path,
                                                                      gpu_device):
    """backend auto asks torch.cuda only where a GPU device node exists (factory.GPU_DEVICES);
    elsewhere it skips PyTorch CUDA before touching torch (importing it costs 2-3 s of a CPU
    node's start), naming the reason like any skipped candidate. Seam: a stand-in torch
    module that counts is_available() calls."""
    from occo_ros.engines import factory

    calls = []
    torch = types.ModuleType('torch')
    torch.__spec__ = importlib.machinery.ModuleSpec('torch', None)
    torch.cuda = types.SimpleNamespace(is_available=lambda: calls.append(1) or False)
    monkeypatch.setitem(sys.modules, 'torch', torch)
    (tmp_path / 'dev').mkdir()
    if gpu_device:
        (tmp_path / 'dev' / 'nvidia0').touch()
    monkeypatch.setattr(factory, 'GPU_DEVICES', (str(tmp_path / 'dev' / 'nvidia[0-9]*'),))
    # device cuda: the GPU candidates only, so the error lists why each was unavailable
    with pytest.raises(EngineError) as error:
        create_engine(EngineSpec(model_path=str(REPO / 'models' / 'fifn_w025_pixel.pt'),
                                 device='cuda', engine_cache_dir=str(tmp_path / 'cache')))
    reason = ('torch.cuda.is_available() is False' if gpu_device
              else 'no NVIDIA GPU device on this machine')
    assert f'torch on cuda ({reason})' in str(error.value)
    assert len(calls) == int(gpu_device)
