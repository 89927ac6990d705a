"""Engine cache policy (occo_ros/engines/tensorrt/cache.py, occo_ros/model/artifact_cache.py), the
IO contract and the TensorRT helpers that need no TensorRT.

TensorRT cannot be installed here (no GPU, no wheel for this machine), so the cache policy
is driven with FAKE BUILD/LOAD FUNCTIONS (plain callables standing in for TensorRT's builder
and deserialiser), which is the seam resolve_engine offers. The whole TensorRT path runs
through strict fakes of each supported version in test_tensorrt_fakes.py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
import sys

import numpy as np
import pytest

from occo_ros.engines.tensorrt import build as tensorrt_build
from occo_ros.engines.tensorrt import cache as engine_cache
from occo_ros.engines.tensorrt import common as tensorrt_common
from occo_ros.engines.tensorrt import engine as tensorrt_engine
from occo_ros.engines.tensorrt.cache import (
    BuiltPlan,
    EngineKey,
    decide,
    plan_trt_version,
    resolve_engine,
    sidecar_path,
)
from occo_ros.model import artifact_cache
from occo_ros.model.contract import EngineError, TensorSpec, io_problems
from occo_ros.util.atomic_file import atomic_write_bytes

pytestmark = [pytest.mark.core]


def make_key(**changes) -> EngineKey:
    fields = dict(onnx_sha256='ab' * 32, trt_version='8.6.2.3', gpu_name='Orin',
                  compute_capability='8.7', dla_core=None, precision='fp16',
                  input_shape=(512, 640))
    fields.update(changes)
    return EngineKey(**fields)


def fake_plan(version: tuple[int, int, int] = (8, 6, 2), payload: bytes = b'engine') -> bytes:
    """Bytes laid out like a plan header: TensorRT major/minor/patch at offsets 24..26."""
    header = bytearray(32)
    header[24:27] = bytes(version)
    return bytes(header) + payload


class FakeTensorRTBuilder:
    """Stands in for TensorRT's builder + deserialiser (TensorRT cannot be installed here)."""

    def __init__(self, version: tuple[int, int, int] = (8, 6, 2)) -> None:
        self.version = version
        self.builds = 0
        self.loads = 0

    def build(self) -> BuiltPlan:
        self.builds += 1
        return BuiltPlan(fake_plan(self.version, b'engine-%d' % self.builds), 'fp16',
                         {'fp32_layers': 64})

    def load(self, plan: bytes, sidecar: dict) -> str:
        payload = plan[32:]
        if not payload.startswith(b'engine-'):
            raise EngineError('deserialisation failed')
        self.loads += 1
        return f'engine({payload.decode()})'


def test_file_name_encodes_every_key_field():
    name = make_key().file_name('fifn_w025')
    assert name == 'fifn_w025.abababababab.trt8.6.2.3.orin-sm87.fp16.512x640.engine'
    dla = make_key(dla_core=1, gpu_name='NVIDIA Jetson AGX Orin', precision='int8')
    assert dla.file_name('m') == (
        'm.abababababab.trt8.6.2.3.nvidia-jetson-agx-orin-sm87-dla1.int8.512x640.engine')


def test_key_rejects_unknown_precision_and_bad_shape():
    with pytest.raises(ValueError, match="precision 'fp8' is not one of"):
        make_key(precision='fp8')
    with pytest.raises(ValueError, match='input_shape must be positive'):
        make_key(input_shape=(0, 640))


def test_default_cache_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv('OCCO_ROS_CACHE', str(tmp_path / 'c'))
    assert engine_cache.default_cache_dir() == tmp_path / 'c'
    monkeypatch.delenv('OCCO_ROS_CACHE')
    assert artifact_cache.default_cache_dir() == (
        Path.home() / '.cache' / 'occo_ros' / 'engines')


def test_atomic_write_keeps_old_file_when_interrupted(monkeypatch, tmp_path):
    target = tmp_path / 'sub' / 'x.engine'
    atomic_write_bytes(target, b'old')
    assert target.read_bytes() == b'old'

    def interrupted(src, dst):
        raise KeyboardInterrupt  # e.g. Ctrl-C between write and rename

    monkeypatch.setattr(os, 'replace', interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(target, b'new-but-interrupted')
    assert target.read_bytes() == b'old'
    assert os.listdir(target.parent) == ['x.engine']  # no temp file left behind


def test_plan_header_version():
    assert plan_trt_version(fake_plan((10, 3, 0))) == (10, 3, 0)
    assert plan_trt_version(b'short') is None
    assert plan_trt_version(bytes(64)) is None  # major 0: not a plan header we understand


def test_decide_names_what_was_found_and_expected(tmp_path):
    key = make_key()
    engine = tmp_path / key.file_name('m')
    assert decide(engine, key).action == 'build'
    assert 'no cached file' in decide(engine, key).reason
    engine.write_bytes(fake_plan())
    assert 'has no sidecar' in decide(engine, key).reason
    sidecar_path(engine).write_text('{not json', encoding='utf-8')
    assert 'unreadable' in decide(engine, key).reason
    artifact_cache.write_artifact(engine, None, make_key(trt_version='8.6.1.6',
                                                         gpu_name='Xavier').to_json())
    reason = decide(engine, key).reason
    assert "trt_version: found '8.6.1.6', expected '8.6.2.3'" in reason
    assert "gpu_name: found 'Xavier', expected 'Orin'" in reason
    artifact_cache.write_artifact(engine, None, key.to_json())
    assert decide(engine, key) == engine_cache.CacheDecision(
        'load', f'cached engine {engine.name} matches the key')
    assert decide(engine, key, force_rebuild=True).reason == 'force_rebuild is set'
    engine.write_bytes(fake_plan((10, 3, 0)))  # plan replaced by one from another TensorRT
    assert 'm.abababababab' in decide(engine, key).reason
    assert 'changed after it was cached' in decide(engine, key).reason
    sidecar = json.loads(sidecar_path(engine).read_text(encoding='utf-8'))
    sidecar['format'] = 1   # an older cache layout
    sidecar_path(engine).write_text(json.dumps(sidecar), encoding='utf-8')
    assert 'format 1, expected 2' in decide(engine, key).reason


def test_second_start_loads_without_rebuilding(tmp_path):
    fake = FakeTensorRTBuilder()
    lines: list[str] = []
    engine, result = resolve_engine(make_key(), tmp_path, 'm', fake.build, fake.load,
                                    lines.append)
    assert (engine, result.action, fake.builds) == ('engine(engine-1)', 'built', 1)
    assert any(line.startswith('building TensorRT engine') for line in lines)
    sidecar = json.loads(sidecar_path(result.engine_path).read_text(encoding='utf-8'))
    assert sidecar['key'] == make_key().to_json()
    assert sidecar['precision_used'] == 'fp16' and sidecar['fp32_layers'] == 64
    assert sidecar['plan_header_trt'] == [8, 6, 2]
    assert sidecar['build_time_s'] >= 0

    lines.clear()
    engine, result = resolve_engine(make_key(), tmp_path, 'm', fake.build, fake.load,
                                    lines.append)
    assert (engine, result.action, fake.builds) == ('engine(engine-1)', 'loaded', 1)
    assert any('without rebuilding' in line for line in lines)


def test_stale_or_corrupt_cache_is_rebuilt_not_fatal(tmp_path):
    fake = FakeTensorRTBuilder()
    _, first = resolve_engine(make_key(), tmp_path, 'm', fake.build, fake.load, print)
    first.engine_path.write_bytes(fake_plan(payload=b'garbage'))  # damaged plan ...
    lines: list[str] = []
    engine, result = resolve_engine(make_key(), tmp_path, 'm', fake.build, fake.load,
                                    lines.append)
    assert result.action == 'built' and 'changed after it was cached' in result.reason
    # ... or one whose sidecar matches but which no longer deserialises (driver update)
    result.engine_path.write_bytes(fake_plan(payload=b'garbage'))
    artifact_cache.write_artifact(result.engine_path, None, make_key().to_json())
    lines.clear()
    engine, result = resolve_engine(make_key(), tmp_path, 'm', fake.build, fake.load,
                                    lines.append)
    assert result.action == 'built' and fake.builds == 3 and engine == 'engine(engine-3)'
    assert any('is unusable (deserialisation failed); rebuilding' in line for line in lines)

    # TensorRT upgraded (JetPack bump): new key -> a new file, built once.
    upgraded = make_key(trt_version='10.3.0.30')
    fake.version = (10, 3, 0)
    _, result = resolve_engine(upgraded, tmp_path, 'm', fake.build, fake.load, print)
    assert result.action == 'built' and 'trt10.3.0.30' in result.engine_path.name


def test_force_rebuild(tmp_path):
    fake = FakeTensorRTBuilder()
    resolve_engine(make_key(), tmp_path, 'm', fake.build, fake.load, print)
    engine, result = resolve_engine(make_key(), tmp_path, 'm', fake.build, fake.load, print,
                                    force_rebuild=True)
    assert fake.builds == 2 and result.reason == 'force_rebuild is set'


def test_failed_build_leaves_previous_cache_intact(tmp_path):
    fake = FakeTensorRTBuilder()
    _, result = resolve_engine(make_key(), tmp_path, 'm', fake.build, fake.load, print)
    before = result.engine_path.read_bytes()

    def failing_build() -> BuiltPlan:
        raise EngineError('TensorRT failed to build an engine')

    with pytest.raises(EngineError, match='failed to build'):
        resolve_engine(make_key(), tmp_path, 'm', failing_build, fake.load, print,
                       force_rebuild=True)
    assert result.engine_path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [result.engine_path.name, sidecar_path(result.engine_path).name])


def spec(name: str, is_input: bool = True, shape=(1, 1, 256, 320), dtype='float32'):
    return TensorSpec(name, is_input, tuple(shape), dtype)


GOOD_IO = [spec('visible_y'), spec('infrared'), spec('fused_y', is_input=False)]


def test_io_validation():
    assert io_problems(GOOD_IO, 256, 320) == []
    dynamic = [spec(s.name, s.is_input, (-1, 1, -1, -1)) for s in GOOD_IO]
    assert io_problems(dynamic, 256, 320) == []
    assert io_problems(GOOD_IO, 512, 640) == [
        f"'{name}' shape (1, 1, 256, 320), expected (1, 1, 512, 640) (-1 = dynamic)"
        for name in ('visible_y', 'infrared', 'fused_y')]
    wrong = [spec('visible_y', dtype='float16'), spec('ir'), spec('fused_y', is_input=False)]
    problems = io_problems(wrong, 256, 320)
    assert "'visible_y' dtype float16, expected float32" in problems
    assert any(p.startswith("input 'infrared' missing") for p in problems)
    assert "unexpected IO tensors ['ir']" in problems


def test_missing_tensorrt_is_a_clear_engine_error(monkeypatch):
    monkeypatch.setitem(sys.modules, 'tensorrt', None)  # import fails, as on this machine
    with pytest.raises(EngineError, match='TensorRT Python package not found: install '
                                          "JetPack's python3-libnvinfer"):
        tensorrt_engine.import_tensorrt()


def test_fixed_input_size_of_an_engine():
    assert tensorrt_build.__name__ and GOOD_IO
    from occo_ros.engines.tensorrt.runtime import fixed_input_size

    assert fixed_input_size(GOOD_IO, 'x.engine') == (256, 320)
    dynamic = [spec(s.name, s.is_input, (-1, 1, -1, -1)) for s in GOOD_IO]
    with pytest.raises(EngineError, match='no fixed .visible_y. input shape'):
        fixed_input_size(dynamic, 'x.engine')


def test_parse_device():
    assert tensorrt_common.parse_device('auto') == (0, None)
    assert tensorrt_common.parse_device('cuda:1') == (1, None)
    assert tensorrt_common.parse_device('dla:1') == (0, 1)
    for bad in ('cpu', 'auto:1', 'gpu', 'cuda:x'):
        with pytest.raises(EngineError, match='is not valid for TensorRT'):
            tensorrt_common.parse_device(bad)


def test_missing_pycuda_is_a_clear_engine_error(monkeypatch):
    monkeypatch.setitem(sys.modules, 'pycuda.driver', None)
    with pytest.raises(EngineError, match='pycuda not found: pip install pycuda'):
        tensorrt_common.import_pycuda_driver()


def test_int8_calibration_batches_from_real_pairs(shared_data, tmp_path):
    calibration = tensorrt_build.CalibrationSet(
        shared_data / 'eval' / 'msrs', (64, 80), ('smoothed', 0.0, 255.0, (1.0, 99.0), 0.1),
        limit=4)
    batches = list(calibration.batches())
    assert len(batches) == 4 and len(calibration.sha256) == 64
    for visible, infrared in batches:
        for array in (visible, infrared):
            assert array.shape == (1, 1, 64, 80) and array.dtype == np.float32
            assert 0.0 <= array.min() and array.max() <= 1.0 and array.std() > 0.01
    with pytest.raises(EngineError, match='must hold vi/ and ir/ subfolders'):
        tensorrt_build.calibration_pairs(tmp_path)
    (tmp_path / 'vi').mkdir()
    (tmp_path / 'ir').mkdir()
    (tmp_path / 'vi' / 'a.png').write_bytes(b'')
    with pytest.raises(EngineError, match='no visible/infrared pair with matching names'):
        tensorrt_build.calibration_pairs(tmp_path)


def test_tensorrt_older_than_8_5_is_refused_by_name(monkeypatch):
    import types

    old = types.ModuleType('tensorrt')
    old.__version__ = '8.2.1.8'   # JetPack 4.6: no name-based IO API
    monkeypatch.setitem(sys.modules, 'tensorrt', old)
    with pytest.raises(EngineError, match=r'TensorRT 8\.2\.1\.8 is not supported; supported: '
                                          r'TensorRT 8\.5/8\.6'):
        tensorrt_common.import_tensorrt()
