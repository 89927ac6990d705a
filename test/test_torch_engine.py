"""Tests of the PyTorch backend (occo_ros.engines.torch_engine) on CPU."""

from pathlib import Path
import warnings

import numpy as np
import pytest
import torch

from occo_ros.engines.base import EngineError, FusionEngine
from occo_ros.engines.torch_engine import TorchEngine
from occo_ros.model.checkpoint import load_checkpoint, save_checkpoint
from occo_ros.model.network import InferenceFIFN, fifn_quarter

pytestmark = [pytest.mark.core]


@pytest.fixture(scope='module')
def model_path(tmp_path_factory) -> Path:
    """A width-0.25 checkpoint whose raw output leaves [0, 1] on both sides."""
    torch.manual_seed(4)
    fifn = fifn_quarter().eval()
    visible, infrared = torch.rand(1, 1, 24, 24), torch.rand(1, 1, 24, 24)
    with torch.no_grad():
        fifn.head.weight.mul_(50.0)
        fifn.head.bias.add_(0.5 - fifn(visible, infrared).median())
    return save_checkpoint(tmp_path_factory.mktemp('models') / 'fifn_w025.pt', fifn)


@pytest.fixture(scope='module')
def engine(model_path) -> TorchEngine:
    return TorchEngine(str(model_path), device='cpu')


def frames(batch: int, height: int, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.random((batch, 1, height, width), dtype=np.float32),
            rng.random((batch, 1, height, width), dtype=np.float32))


def test_is_a_fusion_engine_with_info(engine, model_path):
    assert isinstance(engine, FusionEngine)
    info = engine.info
    assert (info.backend, info.device, info.precision) == ('torch', 'cpu', 'fp32')
    assert info.model_path == str(model_path)
    assert info.details['torch'] == torch.__version__
    assert info.details['width'] == 0.25
    assert info.details['threads'] == torch.get_num_threads()


def test_auto_device_without_cuda_is_cpu(model_path):
    if torch.cuda.is_available():
        pytest.skip('this machine has CUDA; auto would pick it')
    assert TorchEngine(str(model_path)).info.device == 'cpu'


def test_num_threads_is_applied(model_path):
    before = torch.get_num_threads()
    try:
        assert TorchEngine(str(model_path), 'cpu', num_threads=2).info.details['threads'] == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize('batch, size', [(1, (37, 45)), (2, (8, 8)), (1, (64, 80))])
def test_output_matches_clamped_model(engine, model_path, batch, size):
    visible, infrared = frames(batch, *size)
    fused = engine.infer(visible, infrared)
    assert fused.shape == (batch, 1, *size) and fused.dtype == np.float32
    assert fused.min() >= 0.0 and fused.max() <= 1.0
    fifn, _ = load_checkpoint(model_path)
    with torch.inference_mode():
        raw = fifn(torch.from_numpy(visible), torch.from_numpy(infrared))
        expected = InferenceFIFN(fifn)(torch.from_numpy(visible), torch.from_numpy(infrared))
    assert raw.min() < 0.0 and raw.max() > 1.0  # so the clamp is exercised
    np.testing.assert_allclose(fused, expected.numpy(), rtol=1e-5, atol=1e-6)


def test_read_only_inputs_work_without_warnings(engine):
    visible, infrared = frames(1, 16, 16)
    expected = engine.infer(visible, infrared)
    visible.flags.writeable = infrared.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        np.testing.assert_array_equal(engine.infer(visible, infrared), expected)


def test_warmup_runs(engine):
    engine.warmup(16, 24, iterations=1)


@pytest.mark.parametrize('visible, infrared, message', [
    (np.zeros((1, 1, 16, 16)), np.zeros((1, 1, 16, 16), np.float32), 'visible_y.*float64'),
    (np.zeros((1, 1, 16, 16), np.float32), np.zeros((1, 1, 16, 16), np.uint8), 'infrared.*uint8'),
    (np.zeros((1, 16, 16), np.float32), np.zeros((1, 16, 16), np.float32), r'\(N, 1, H, W\)'),
    (np.zeros((1, 3, 16, 16), np.float32), np.zeros((1, 3, 16, 16), np.float32), r'\(1, 3, 16'),
    (np.zeros((1, 1, 7, 16), np.float32), np.zeros((1, 1, 7, 16), np.float32), '7x16'),
    (np.zeros((1, 1, 16, 16), np.float32), np.zeros((1, 1, 16, 17), np.float32), 'one shape'),
    ([[0.0]], np.zeros((1, 1, 16, 16), np.float32), 'numpy array, got list'),
])
def test_bad_inputs_raise_engine_error(engine, visible, infrared, message):
    with pytest.raises(EngineError, match=message):
        engine.infer(visible, infrared)


@pytest.mark.parametrize('kwargs, message', [
    ({'precision': 'fp16', 'device': 'cpu'}, 'fp16.*CUDA'),
    ({'precision': 'int8'}, 'tensorrt'),
    ({'precision': 'bf16'}, "'bf16' is not one of"),
    ({'device': 'bogus'}, "device 'bogus' is not valid"),
    ({'device': 'mps'}, 'not supported'),
    ({'num_threads': 0}, 'num_threads'),
])
def test_bad_arguments_raise_engine_error(model_path, kwargs, message):
    with pytest.raises(EngineError, match=message):
        TorchEngine(str(model_path), **kwargs)


def test_cuda_request_without_cuda_raises(model_path):
    if torch.cuda.is_available():
        pytest.skip('this machine has CUDA')
    with pytest.raises(EngineError, match='no CUDA'):
        TorchEngine(str(model_path), device='cuda')


def test_unreadable_model_raises_engine_error(tmp_path):
    with pytest.raises(EngineError, match='not found.*missing.pt'):
        TorchEngine(str(tmp_path / 'missing.pt'), device='cpu')
    (tmp_path / 'junk.pt').write_bytes(b'not a checkpoint')
    with pytest.raises(EngineError, match='cannot read checkpoint.*junk.pt'):
        TorchEngine(str(tmp_path / 'junk.pt'), device='cpu')


def test_closed_engine_refuses_to_infer(model_path):
    engine = TorchEngine(str(model_path), device='cpu')
    engine.close()
    with pytest.raises(EngineError, match='closed'):
        engine.infer(*frames(1, 8, 8))
