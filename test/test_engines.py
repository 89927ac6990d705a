"""ONNX Runtime backend, the engine factory and the occo-build-engine CLI on this machine
(CPU only: no CUDA, no TensorRT; the TensorRT paths are checked for their error messages).
"""

from __future__ import annotations

import json
from pathlib import Path
import sys

from conftest import export_in_this_process
import numpy as np
import onnx
import pytest

from occo_ros.cli import build_engine
from occo_ros.engines import BACKENDS, EngineSpec, create_engine
from occo_ros.engines.base import EngineError
from occo_ros.engines.onnx_engine import OnnxRuntimeEngine, select_providers
from occo_ros.engines.torch_engine import TorchEngine
from occo_ros.model import onnx_cache
from occo_ros.model.artifact_cache import sidecar_path, write_artifact
from occo_ros.model.onnx_cache import cached_onnx

pytestmark = [pytest.mark.slow]

TOLERANCE = 1e-4
SHARED_EVAL = Path(__file__).resolve().parents[1].parent / 'shared' / 'data' / 'eval'


def quiet(line: str) -> None:
    """Log sink for tests that do not look at the log."""


class Log(list):
    """Collects log lines (callable sink, and a logger with .info/.warning for create_engine);
    `has` looks for a fragment, `warnings` are the .warning lines."""

    def __init__(self) -> None:
        super().__init__()
        self.warnings: list[str] = []

    def __call__(self, line: str) -> None:
        self.append(line)

    info = __call__

    def warning(self, line: str) -> None:
        self.append(line)
        self.warnings.append(line)

    def has(self, fragment: str) -> bool:
        return any(fragment in line for line in self)


def make(backend: str, model: Path, log: Log | None = None, **options):
    """create_engine for `backend` and `model` with EngineSpec `options`."""
    return create_engine(EngineSpec(backend=backend, model_path=str(model), **options),
                         Log() if log is None else log)


@pytest.fixture(scope='module')
def checkpoint(tiny_checkpoint) -> Path:
    return tiny_checkpoint


@pytest.fixture(scope='module')
def cache(tmp_path_factory, tiny_export) -> Path:
    """This module's engine cache, holding copies of the run's dynamic and 64x80 exports."""
    folder = tmp_path_factory.mktemp('cache')
    for size in (None, (64, 80)):
        tiny_export(size, into=folder)
    return folder


@pytest.fixture(scope='module')
def torch_engine(checkpoint) -> TorchEngine:
    return TorchEngine(str(checkpoint), device='cpu')


@pytest.fixture(scope='module')
def fixed_onnx(checkpoint, cache) -> Path:
    """Opset-17 export at 64x80 from the export cache."""
    return cached_onnx(checkpoint, cache, (64, 80), log=quiet)


def pair(size: tuple[int, int], batch: int = 1, seed: int = 0):
    """A real msrs pair cropped to `size` when ../shared is present, else seeded noise."""
    names = sorted((SHARED_EVAL / 'msrs' / 'vi').glob('*.png')) if SHARED_EVAL.is_dir() else []
    if not names:
        rng = np.random.default_rng(seed)
        return tuple(rng.random((batch, 1, *size), dtype=np.float32) for _ in range(2))
    import cv2

    arrays = []
    for folder in ('vi', 'ir'):
        image = cv2.imread(str(SHARED_EVAL / 'msrs' / folder / names[seed].name),
                           cv2.IMREAD_GRAYSCALE)[:size[0], :size[1]]
        arrays.append(np.repeat(image[None, None].astype(np.float32) / 255.0, batch, axis=0))
    return arrays[0], arrays[1]


def test_onnxruntime_from_checkpoint_matches_torch_and_caches(checkpoint, cache, torch_engine):
    log = Log()
    engine = OnnxRuntimeEngine(str(checkpoint), device='cpu', num_threads=2,
                               cache_dir=str(cache), log=log)
    info = engine.info
    assert (info.backend, info.device, info.precision) == (
        'onnxruntime', 'CPUExecutionProvider', 'fp32')
    assert info.details['providers'] == ['CPUExecutionProvider']
    assert info.details['optimized_model_cache'].startswith('written ')
    assert info.details['input_shape'] == ('batch', 1, 'height', 'width')  # dynamic export
    for size, batch in (((64, 80), 1), ((75, 117), 2), ((9, 8), 1)):
        visible, infrared = pair(size, batch)
        fused = engine.infer(visible, infrared)
        assert fused.shape == (batch, 1, *size) and fused.dtype == np.float32
        assert np.abs(fused - torch_engine.infer(visible, infrared)).max() <= TOLERANCE

    log.clear()
    again = OnnxRuntimeEngine(str(checkpoint), device='cpu', cache_dir=str(cache), log=log)
    assert log.has('using cached ONNX export')
    assert again.info.details['optimized_model_cache'].startswith('hit ')
    visible, infrared = pair((75, 117))
    assert np.abs(again.infer(visible, infrared) - engine.infer(visible, infrared)).max() <= 1e-6


def test_fixed_shape_model_rejects_other_sizes_by_name(fixed_onnx, cache):
    engine = OnnxRuntimeEngine(str(fixed_onnx), device='cpu', cache_dir=str(cache),
                               input_size=(64, 80), log=quiet)
    assert engine.infer(*pair((64, 80))).shape == (1, 1, 64, 80)
    with pytest.raises(EngineError, match='fixed-shape model for HxW 64x80; the input is 60x80'):
        engine.infer(*pair((60, 80)))
    with pytest.raises(EngineError, match='takes batch 1, got 2'):
        engine.infer(*pair((64, 80), batch=2))
    visible, infrared = pair((64, 80))
    with pytest.raises(EngineError, match='visible_y must be float32'):
        engine.infer(visible.astype(np.float64), infrared)
    with pytest.raises(EngineError, match='must have one shape'):
        engine.infer(visible, infrared[:, :, :32])
    with pytest.raises(EngineError, match='input_size is 256x320'):
        OnnxRuntimeEngine(str(fixed_onnx), device='cpu', cache_dir=str(cache),
                          input_size=(256, 320), log=quiet)


def test_corrupt_files_are_reported_or_rebuilt(checkpoint, fixed_onnx, tiny_export, tmp_path,
                                               monkeypatch):
    truncated = tmp_path / 'truncated.onnx'
    truncated.write_bytes(fixed_onnx.read_bytes()[:5000])
    with pytest.raises(EngineError, match='corrupt or truncated file'):
        OnnxRuntimeEngine(str(truncated), device='cpu', cache_dir=str(tmp_path), log=quiet)

    # A damaged optimised-model cache is recreated, not fatal.
    first = OnnxRuntimeEngine(str(fixed_onnx), device='cpu', cache_dir=str(tmp_path), log=quiet)
    optimized = Path(first.info.details['optimized_model_cache'].split(' ', 1)[1])
    optimized.write_bytes(b'not a model')
    log = Log()
    second = OnnxRuntimeEngine(str(fixed_onnx), device='cpu', cache_dir=str(tmp_path), log=log)
    assert log.has('changed after it was cached') and log.has('recreating it')
    assert second.info.details['optimized_model_cache'].startswith('written ')
    # One that ONNX Runtime can no longer load (sidecar intact) is recreated too.
    optimized.write_bytes(b'still not a model')
    sidecar = json.loads(sidecar_path(optimized).read_text(encoding='utf-8'))
    write_artifact(optimized, None, sidecar['key'])
    log = Log()
    OnnxRuntimeEngine(str(fixed_onnx), device='cpu', cache_dir=str(tmp_path), log=log)
    assert log.has('not used: unusable (ONNX Runtime cannot load')

    # A truncated cached export (e.g. disk full) is exported again.
    exported = tiny_export((64, 80), into=tmp_path)
    assert cached_onnx(checkpoint, tmp_path, (64, 80), log=quiet) == exported
    exported.write_bytes(exported.read_bytes()[:3000])
    log = Log()
    assert cached_onnx(checkpoint, tmp_path, (64, 80), log=log) == exported
    assert log.has('changed after it was cached') and log.has('exporting fifn_test.pt to ONNX')
    onnx.checker.check_model(onnx.load(str(exported)))

    # An export made by other network/exporter code (an upgrade) is exported again, then
    # reused; this export without the child process that the one above ran.
    monkeypatch.setattr(onnx_cache, 'export_in_subprocess', export_in_this_process)
    sidecar = json.loads(sidecar_path(exported).read_text(encoding='utf-8'))
    write_artifact(exported, None, {**sidecar['key'], 'export_recipe_sha256': 'old'})
    log = Log()
    assert cached_onnx(checkpoint, tmp_path, (64, 80), log=log) == exported
    assert log.has("export_recipe_sha256: found 'old'") and log.has('to ONNX')
    log = Log()
    cached_onnx(checkpoint, tmp_path, (64, 80), log=log)
    assert log.has('using cached ONNX export')


def test_without_pytorch_only_a_shipped_export_serves(checkpoint, tmp_path, monkeypatch):
    """Seam: torch cannot be uninstalled here, so the ONNX cache's torch_installed reports it
    missing."""
    from occo_ros.util.resources import default_model_path

    monkeypatch.setattr(onnx_cache, 'torch_installed', lambda: False)
    message = 'PyTorch is not installed, and exporting fifn_test.pt to ONNX needs it'
    with pytest.raises(EngineError, match=message):
        cached_onnx(checkpoint, tmp_path, (64, 80), log=quiet)
    with pytest.raises(EngineError, match='PyTorch is not installed'):
        make('onnxruntime', checkpoint, device='cpu', engine_cache_dir=str(tmp_path))
    shipped = default_model_path()
    assert cached_onnx(shipped, tmp_path, (64, 80), log=quiet) == shipped.with_suffix('.onnx')


def test_foreign_onnx_model_is_refused(tmp_path):
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node('Identity', ['image'], ['out'])], 'other',
        [helper.make_tensor_value_info('image', TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info('out', TensorProto.FLOAT, [1, 3, 8, 8])])
    path = tmp_path / 'other.onnx'
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)]), path)
    with pytest.raises(EngineError, match=r"has inputs \['image'\] and outputs \['out'\]; "
                                          r"expected inputs \['visible_y', 'infrared'\]"):
        OnnxRuntimeEngine(str(path), device='cpu', cache_dir=str(tmp_path), log=quiet)


def test_onnxruntime_argument_errors(fixed_onnx, cache):
    with pytest.raises(EngineError, match="runs 'fp32' only, not 'fp16'"):
        OnnxRuntimeEngine(str(fixed_onnx), precision='fp16', log=quiet)
    with pytest.raises(EngineError, match='needs onnxruntime-gpu'):
        OnnxRuntimeEngine(str(fixed_onnx), device='cuda', cache_dir=str(cache), log=quiet)
    with pytest.raises(EngineError, match="device 'gpu0' is not valid for onnxruntime"):
        OnnxRuntimeEngine(str(fixed_onnx), device='gpu0', cache_dir=str(cache), log=quiet)
    with pytest.raises(EngineError, match='num_threads must be >= 1'):
        OnnxRuntimeEngine(str(fixed_onnx), num_threads=0, log=quiet)
    other = cache / 'model.txt'
    other.write_text('not a model', encoding='utf-8')
    with pytest.raises(EngineError, match='runs .onnx models or .pt checkpoints, got model.txt'):
        OnnxRuntimeEngine(str(other), log=quiet)


def test_provider_selection_by_device():
    cpu_only = ['CPUExecutionProvider']
    gpu = ['TensorrtExecutionProvider', 'CUDAExecutionProvider', 'CPUExecutionProvider']
    folder = Path('/cache')
    assert select_providers('auto', cpu_only, folder) == [('CPUExecutionProvider', {})]
    assert select_providers('cpu', gpu, folder) == [('CPUExecutionProvider', {})]
    assert select_providers('cuda:1', gpu, folder) == [
        ('TensorrtExecutionProvider', {'device_id': 1, 'trt_engine_cache_enable': True,
                                       'trt_engine_cache_path': '/cache/ort_tensorrt'}),
        ('CUDAExecutionProvider', {'device_id': 1}), ('CPUExecutionProvider', {})]
    assert [name for name, _ in select_providers('auto', gpu[1:], folder)] == gpu[1:]


def test_factory_validates_arguments(checkpoint, tmp_path):
    with pytest.raises(EngineError, match=r"backend='tflite' is not one of \['auto', 'torch', "
                                          r"'onnxruntime', 'tensorrt'\]"):
        make('tflite', checkpoint)
    assert BACKENDS == ('auto', 'torch', 'onnxruntime', 'tensorrt')
    with pytest.raises(EngineError, match=r"precision='bf16' is not one of"):
        make('torch', checkpoint, precision='bf16')
    with pytest.raises(EngineError, match='model file not found'):
        make('torch', tmp_path / 'missing.pt')
    with pytest.raises(EngineError, match=r"model_path '\S*model.tflite': expected one of "
                                          r"\('.pt', '.onnx', '.engine'"):
        make('torch', tmp_path / 'model.tflite')
    with pytest.raises(EngineError, match='input_size must be'):
        make('torch', checkpoint, input_size=(4, 4))
    onnx_file = tmp_path / 'm.onnx'
    onnx_file.write_bytes(b'')
    with pytest.raises(EngineError, match='the torch backend runs .pt checkpoints, not m.onnx'):
        make('torch', onnx_file)


def test_engine_spec_from_the_parameter_table(tmp_path):
    from occo_ros.engines.spec import ENGINE_PARAMS, THERMAL_PARAMS
    from occo_ros.params import SPECS

    spec = EngineSpec()
    assert (spec.backend, spec.device, spec.precision, spec.workspace_mb) == (
        SPECS['backend'].default, SPECS['device'].default, SPECS['precision'].default,
        SPECS['workspace_mb'].default)
    values = {'backend': 'tensorrt', 'precision': 'int8', 'calibration_dir': str(tmp_path),
              'workspace_mb': 2048, 'input_height': 480, 'input_width': 640,
              'engine_cache_dir': 'cache', 'thermal_mode': 'fixed'}
    spec = EngineSpec.from_params(values)
    assert (spec.input_size, spec.engine_cache_dir, spec.calibration_dir, spec.workspace_mb) == (
        (480, 640), 'cache', str(tmp_path), 2048)
    assert EngineSpec.from_params(spec.to_params()) == spec
    assert set(spec.to_params()) == set(ENGINE_PARAMS + THERMAL_PARAMS) <= set(SPECS)
    assert spec.thermal.thermal_mode == 'fixed'
    with pytest.raises(EngineError) as error:
        EngineSpec(backend='tflite', device='gpu', workspace_mb=1, input_size=(4, 640))
    for fragment in ("backend='tflite'", "device='gpu'", 'workspace_mb=1 is below',
                     'input_size must be (H, W) with H, W >= 8'):
        assert fragment in str(error.value)

    import argparse
    parser = argparse.ArgumentParser()
    EngineSpec.add_arguments(parser)
    args = parser.parse_args(['--model', 'm.onnx', '--precision', 'fp16', '--height', '64',
                              '--input-width', '80', '--cache-dir', 'c', '--force-rebuild'])
    spec = EngineSpec.from_args(args, EngineSpec(backend='tensorrt'))
    assert (spec.backend, spec.model_path, spec.precision, spec.input_size, spec.engine_cache_dir,
            spec.force_rebuild) == ('tensorrt', 'm.onnx', 'fp16', (64, 80), 'c', True)
    assert EngineSpec.from_args(parser.parse_args(['--num-threads', '0']),
                                EngineSpec(num_threads=2)).num_threads == 0
    with pytest.raises(EngineError, match='must be given together'):
        EngineSpec.from_args(parser.parse_args(['--height', '64']))
    with pytest.raises(SystemExit):
        parser.parse_args(['--backend', 'tflite'])


def test_auto_picks_onnxruntime_on_this_cpu_and_says_why(checkpoint, cache, torch_engine):
    log = Log()
    engine = make('auto', checkpoint, log, input_size=(64, 80), engine_cache_dir=str(cache),
                  num_threads=2)
    info = engine.info
    assert (info.backend, info.device, info.precision) == (
        'onnxruntime', 'CPUExecutionProvider', 'fp32')
    reason = info.details['reason']
    assert reason.startswith('auto chose onnxruntime on cpu: measured faster than PyTorch')
    assert 'skipped tensorrt on auto (' in reason and 'torch on cuda (' in reason
    assert log.has('backend auto: tensorrt on auto unavailable')
    visible, infrared = pair((64, 80), seed=2)
    assert np.abs(engine.infer(visible, infrared)
                  - torch_engine.infer(visible, infrared)).max() <= TOLERANCE

    half = make('auto', checkpoint, precision='fp16', input_size=(64, 80),
                engine_cache_dir=str(cache))
    assert half.info.precision == 'fp32'
    assert '(precision fp16 unavailable there, using fp32)' in half.info.details['reason']


def test_auto_falls_back_when_a_backend_breaks_unexpectedly(checkpoint, cache, monkeypatch):
    """Seam: a library failing in a way we did not anticipate (simulated by replacing the
    ONNX Runtime creator); auto must log it and fall back instead of stopping the node."""
    from occo_ros.engines import factory

    def broken(*args):
        raise RuntimeError('CUDA driver version is insufficient')

    monkeypatch.setitem(factory._CREATORS, 'onnxruntime', broken)
    log = Log()
    engine = make('auto', checkpoint, log, device='cpu', input_size=(64, 80),
                  engine_cache_dir=str(cache))
    assert engine.info.backend == 'torch'
    message = ("backend auto: onnxruntime on cpu failed, falling back: backend 'onnxruntime' "
               'failed to load fifn_test.pt: unexpected RuntimeError: CUDA driver')
    assert [line[:len(message)] for line in log.warnings] == [message]
    assert 'CUDA driver' in engine.info.details['fallback_warning']
    with pytest.raises(EngineError, match="'onnxruntime' failed to load fifn_test.pt: "
                       'unexpected RuntimeError: CUDA driver'):   # explicit: no fallback
        make('onnxruntime', checkpoint, device='cpu')


def test_explicit_backends(checkpoint, fixed_onnx, cache, monkeypatch):
    engine = make('torch', checkpoint, device='cpu')
    assert engine.info.backend == 'torch'
    assert engine.info.details['reason'] == "backend 'torch' requested"
    engine.close()
    with pytest.raises(EngineError, match='closed'):
        engine.infer(*pair((64, 80)))
    monkeypatch.setitem(sys.modules, 'tensorrt', None)  # as here, but also on a GPU machine
    with pytest.raises(EngineError, match='TensorRT Python package not found'):
        make('tensorrt', fixed_onnx, engine_cache_dir=str(cache))
    plan = cache / 'prebuilt.engine'
    plan.write_bytes(b'\0' * 64)
    with pytest.raises(EngineError, match='is a TensorRT plan; use backend tensorrt'):
        make('onnxruntime', plan)
    with pytest.raises(EngineError, match=r'backend auto found no usable backend for '
                                          r'prebuilt.engine .*tensorrt on auto'):
        make('auto', plan)
    with pytest.raises(EngineError, match="device 'cuda' requested but this torch"):
        make('torch', checkpoint, device='cuda')


def test_build_engine_cli_without_tensorrt(checkpoint, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, 'tensorrt', None)
    assert build_engine.main(['--model', str(checkpoint), '--height', '64',
                              '--width', '80']) == 1
    assert 'TensorRT Python package not found' in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        build_engine.main(['--model', str(checkpoint), '--height', '64'])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit) as exit_info:
        build_engine.main(['--precision', 'fp8'])
    assert exit_info.value.code == 2


def test_a_cached_export_is_looked_up_without_importing_torch():
    """The export recipe (part of every cached export's key) takes torch's version from its
    installed metadata: a start that finds its export cached imports no torch (3 s of CPU),
    and the key is the one torch.__version__ and the network module give."""
    import hashlib
    import subprocess

    import torch

    from occo_ros.model import network, onnx_export

    code = ('import sys; from occo_ros.model.onnx_export import export_recipe_sha256; '
            "print(export_recipe_sha256(), 'torch' in sys.modules)")
    run = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    digest, imported = run.stdout.split()
    assert imported == 'False'
    expected = hashlib.sha256(torch.__version__.encode())
    for source in (network.__file__, onnx_export.__file__):
        expected.update(Path(source).read_bytes())
    assert digest == expected.hexdigest()
