"""ONNX export (occo_ros/model/onnx_export.py): numerics vs PyTorch on real pairs, both opsets
shipped,
graph contract and metadata, the FP32 attention-context region, TensorRT operator support.

Real pairs come from ../shared/data/eval (msrs, roadscene), cropped to modest sizes to keep
the file fast; the network has random weights (seeded), which is enough to compare graphs.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from occo_ros.cli.export import main
from occo_ros.model.artifact_cache import sha256_file
from occo_ros.model.contract import FP32_REGION_PATTERN
from occo_ros.model.network import InferenceFIFN
from occo_ros.model.onnx_export import (
    ExportError,
    export_onnx,
    pin_attention_context,
    read_metadata,
)

pytestmark = [pytest.mark.slow]

TOLERANCE = 1e-4

# Operators the TensorRT ONNX parser supports ("Y" rows), kept here with their source:
# TensorRT 8.6 (JetPack 6.0): onnx/onnx-tensorrt docs/operators.md "Supported ONNX Operators",
#   branch release/8.5-GA ("TensorRT 8.5 supports operators up to Opset 17",
#   https://github.com/onnx/onnx-tensorrt/blob/release/8.5-GA/docs/operators.md), plus the
#   operators docs/Changelog.md adds in "TensorRT 8.6 EA Release": GroupNormalization,
#   LayerNormalization, IsInf (8.5 lists LayerNormalization as N).
TRT86_SUPPORTED = frozenset("""
    Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization
    Cast Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum
    DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten
    Floor Gather GatherElements GatherND Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool
    Greater GreaterOrEqual GridSample GRU HardSwish HardSigmoid Identity If ImageScaler
    InstanceNormalization IsNaN LeakyRelu Less LessOrEqual Log LogSoftmax Loop LRN LSTM
    LpNormalization LpPool MatMul Max MaxPool Mean MeanVarianceNormalization Min Mod Mul Neg
    NonMaxSuppression NonZero Not OneHot Or Pad ParametricSoftplus Pow PRelu QuantizeLinear
    RandomNormal RandomNormalLike RandomUniform RandomUniformLike Range Reciprocal ReduceL1
    ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum
    ReduceSumSquare Relu Reshape Resize ReverseSequence RNN RoiAlign Round ScaledTanh Scan
    Scatter ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice
    Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu
    Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
    GroupNormalization LayerNormalization IsInf
""".split())
# TensorRT 10.x: the same page on the main branch ("TensorRT 10.15 supports operators in the
# inclusive range of opset 9 to opset 24"); TensorRT 10.0 reads opsets 9..20.
TRT10_SUPPORTED = TRT86_SUPPORTED | frozenset("""
    Attention BlackmanWindow CastLike DeformConv Gelu HammingWindow HannWindow Hardmax IsInf
    Mish RMSNormalization RotaryEmbedding STFT TensorScatter
""".split())
TRT_RESIZE_MODES = {'half_pixel', 'pytorch_half_pixel', 'tf_half_pixel_for_nn', 'asymmetric',
                    'align_corners'}
# Inputs that both pages say must be initializers/constants ("`axes` must be an initializer").
CONSTANT_INPUTS = {'Slice': (1, 2, 3, 4), 'Squeeze': (1,), 'Unsqueeze': (1,), 'Pad': (1,),
                   'ReduceMean': (1,), 'ReduceMax': (1,)}


def real_pair(shared_data: Path, dataset: str, size: tuple[int, int], index: int = 0):
    """(visible Y, infrared) float32 (1, 1, H, W) in [0, 1]: centre crop of a real pair."""
    names = sorted((shared_data / 'eval' / dataset / 'vi').iterdir())
    visible_path = names[index]
    infrared_path = next((shared_data / 'eval' / dataset / 'ir').glob(visible_path.stem + '.*'))
    images = []
    for path in (visible_path, infrared_path):
        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)  # BT.601 luma for the visible
        top, left = (image.shape[0] - size[0]) // 2, (image.shape[1] - size[1]) // 2
        crop = image[top:top + size[0], left:left + size[1]]
        images.append(np.ascontiguousarray(crop, dtype=np.float32)[None, None] / 255.0)
    return images[0], images[1]


def max_error(onnx_path: Path, reference, visible: np.ndarray, infrared: np.ndarray):
    """Largest |ONNX Runtime - PyTorch| on one pair (checks shape, dtype and the clamp)."""
    session = ort.InferenceSession(str(onnx_path), providers=['CPUExecutionProvider'])
    fused = session.run(['fused_y'], {'visible_y': visible, 'infrared': infrared})[0]
    assert fused.shape == visible.shape and fused.dtype == np.float32
    assert 0.0 <= fused.min() and fused.max() <= 1.0  # clamp is in the graph
    return float(np.abs(fused - reference(visible, infrared)).max())


def torch_reference(checkpoint: Path):
    """The checkpoint's InferenceFIFN in PyTorch as a numpy function."""
    from occo_ros.model.checkpoint import load_checkpoint

    module = InferenceFIFN(load_checkpoint(checkpoint)[0])

    def run(visible: np.ndarray, infrared: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(visible), torch.from_numpy(infrared)).numpy()

    return run


@pytest.fixture(scope='module')
def reference(tiny_checkpoint):
    """torch_reference of the test checkpoint, loaded once."""
    return torch_reference(tiny_checkpoint)


@pytest.fixture(scope='module')
def fixed17(tiny_export) -> Path:
    """Opset 17, 64x80, written by the occo-export CLI (conftest's export cache)."""
    return tiny_export((64, 80))


@pytest.fixture(scope='module')
def dynamic17(tiny_export) -> Path:
    return tiny_export(None)


@pytest.fixture(scope='module')
def fixed18(tiny_export) -> Path:
    """Opset 18 (dynamo exporter) at an odd size, so the graph holds the decoder's Pads."""
    return tiny_export((61, 75), opset=18)


@pytest.mark.parametrize('dataset', ['msrs', 'roadscene'])
def test_fixed_opset17_matches_pytorch_on_real_pairs(fixed17, reference, shared_data,
                                                     dataset):
    visible, infrared = real_pair(shared_data, dataset, (64, 80))
    assert max_error(fixed17, reference, visible, infrared) <= TOLERANCE


@pytest.mark.parametrize('dataset, size', [('msrs', (101, 133)), ('roadscene', (75, 117))])
def test_dynamic_opset17_matches_pytorch_at_odd_sizes(dynamic17, reference, shared_data,
                                                      dataset, size):
    visible, infrared = real_pair(shared_data, dataset, size, index=3)
    assert max_error(dynamic17, reference, visible, infrared) <= TOLERANCE


def test_opset18_dynamo_matches_pytorch(fixed18, reference, shared_data):
    visible, infrared = real_pair(shared_data, 'roadscene', (61, 75), index=5)
    assert max_error(fixed18, reference, visible, infrared) <= TOLERANCE
    assert read_metadata(fixed18)['exporter'] == 'dynamo'


def test_graph_contract_and_metadata(fixed17, dynamic17, fixed18, tiny_checkpoint):
    for path, opset, shape in ((fixed17, 17, [1, 1, 64, 80]),
                               (dynamic17, 17, ['batch', 1, 'height', 'width']),
                               (fixed18, 18, [1, 1, 61, 75])):
        model = onnx.load(str(path))
        onnx.checker.check_model(model, full_check=True)
        assert [entry.version for entry in model.opset_import if entry.domain == ''] == [opset]
        session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
        assert [(i.name, i.shape, i.type) for i in session.get_inputs()] == [
            ('visible_y', shape, 'tensor(float)'), ('infrared', shape, 'tensor(float)')]
        assert [(o.name, o.type) for o in session.get_outputs()] == [('fused_y',
                                                                      'tensor(float)')]
    meta = read_metadata(fixed17)
    assert meta['checkpoint_sha256'] == sha256_file(tiny_checkpoint)
    assert meta['model_width'] == '0.25' and meta['opset'] == '17'
    assert meta['exporter'] == 'torchscript' and meta['input_shape'] == '64x80'
    assert meta['training_data'] == '{"data_sha256": "f00d"}'
    assert 'BT.601 Y / 255' in meta['input_normalization']
    assert read_metadata(dynamic17)['input_shape'] == 'dynamic'


def test_attention_context_is_an_explicit_fp32_region(fixed17, dynamic17, fixed18):
    for path in (fixed17, dynamic17, fixed18):
        model = onnx.load(str(path))
        producer = {out: node for node in model.graph.node for out in node.output}
        consumers = {}
        for node in model.graph.node:
            for name in node.input:
                consumers.setdefault(name, []).append(node)

        def is_float_cast(node):
            return node.op_type == 'Cast' and node.attribute[0].i == onnx.TensorProto.FLOAT

        softmaxes = [node for node in model.graph.node if node.op_type == 'Softmax']
        assert len(softmaxes) == 8  # 2 modalities x 4 levels
        for softmax in softmaxes:
            (after,) = consumers[softmax.output[0]]
            assert is_float_cast(after), f'{path.name}: {softmax.name} output not cast to float'
            matmul = producer[producer[softmax.input[0]].input[0]]
            assert matmul.op_type == 'MatMul'
            for tensor in matmul.input:
                node = producer[tensor]
                node = producer[node.input[0]] if node.op_type == 'Transpose' else node
                assert is_float_cast(node), f'{path.name}: {matmul.name} input not float cast'
            region = [softmax, after, matmul, producer[softmax.input[0]]]
            assert all(FP32_REGION_PATTERN.search(node.name) for node in region)
        pools = [n for n in model.graph.node if '/channel_pool_' in n.name]
        assert len(pools) == 4 and all(n.op_type == 'ReduceMean' for n in pools)  # one per FIFB
        named = [n.name for n in model.graph.node if FP32_REGION_PATTERN.search(n.name)]
        assert len(named) == len(set(named))
        assert sorted(json.loads(read_metadata(path)['fp32_nodes'])) == sorted(named)


def check_tensorrt_support(path: Path, supported: frozenset, max_opset: int) -> None:
    model = onnx.load(str(path))
    opset = next(entry.version for entry in model.opset_import if entry.domain == '')
    assert opset <= max_opset
    ops = {node.op_type for node in model.graph.node}
    assert ops <= supported, f'{path.name}: not supported by TensorRT: {ops - supported}'
    constant = {t.name for t in model.graph.initializer} | {
        out for node in model.graph.node if node.op_type == 'Constant' for out in node.output}
    for node in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == 'Resize':
            assert attrs['coordinate_transformation_mode'].decode() in TRT_RESIZE_MODES
            assert attrs['mode'].decode() in ('nearest', 'linear')
        if node.op_type == 'Pad':
            assert attrs.get('mode', b'constant').decode() in ('constant', 'reflect', 'edge')
        for index in CONSTANT_INPUTS.get(node.op_type, ()):
            if index < len(node.input) and node.input[index]:
                assert node.input[index] in constant, (
                    f'{path.name}: {node.name} input {index} must be a constant for TensorRT')


def test_graph_uses_only_tensorrt_supported_operators(fixed17, fixed18, dynamic17):
    check_tensorrt_support(fixed17, TRT86_SUPPORTED, max_opset=17)
    check_tensorrt_support(fixed18, TRT10_SUPPORTED, max_opset=20)
    # Dynamic graphs compute Pad amounts from the input size: ops are checked, not constness.
    ops = {node.op_type for node in onnx.load(str(dynamic17)).graph.node}
    assert ops <= TRT86_SUPPORTED


def test_shipped_onnx_is_the_current_export_of_the_shipped_checkpoint(dynamic17, shared_data):
    """models/fifn_w025_pixel.onnx serves robots without PyTorch (export.cached_onnx)."""
    from collections import Counter

    from occo_ros.util.resources import default_model_path

    checkpoint = default_model_path()
    shipped = checkpoint.with_suffix('.onnx')
    meta = read_metadata(shipped)
    assert meta['checkpoint_sha256'] == sha256_file(checkpoint), \
        'stale shipped ONNX: run make onnx (the checkpoint changed)'
    assert (meta['input_shape'], meta['opset']) == ('dynamic', '17')
    # Same graph as today's exporter makes for this architecture (weights aside).
    ops = [Counter(node.op_type for node in onnx.load(str(path)).graph.node)
           for path in (shipped, dynamic17)]
    assert ops[0] == ops[1], 'stale shipped ONNX: run make onnx (network/exporter changed)'
    visible, infrared = real_pair(shared_data, 'msrs', (240, 320), index=2)
    assert max_error(shipped, torch_reference(checkpoint), visible, infrared) <= TOLERANCE


def test_truncated_onnx_file_is_reported(fixed17, tmp_path):
    truncated = tmp_path / 'truncated.onnx'
    truncated.write_bytes(fixed17.read_bytes()[:len(fixed17.read_bytes()) // 2])
    with pytest.raises(Exception, match='(?i)pars|protobuf|decod|truncat'):
        read_metadata(truncated)
    from occo_ros.engines import EngineSpec, create_engine
    from occo_ros.engines.base import EngineError

    with pytest.raises(EngineError, match='ONNX Runtime cannot load .*truncated.onnx.*corrupt '
                                          'or truncated file'):
        create_engine(EngineSpec(backend='onnxruntime', model_path=str(truncated),
                                 device='cpu', engine_cache_dir=str(tmp_path)))


def test_export_rejects_bad_requests(tiny_checkpoint, tmp_path, capsys):
    with pytest.raises(ExportError, match=r'opset 16 is not supported; choose one of \(17, 18\)'):
        export_onnx(tiny_checkpoint, tmp_path / 'x.onnx', (64, 64), opset=16)
    with pytest.raises(ExportError, match=r'below the network minimum 8x8'):
        export_onnx(tiny_checkpoint, tmp_path / 'x.onnx', (4, 64))
    corrupt = tmp_path / 'corrupt.pt'
    corrupt.write_bytes(tiny_checkpoint.read_bytes()[:1000])
    with pytest.raises(ExportError, match='cannot read checkpoint'):
        export_onnx(corrupt, tmp_path / 'x.onnx', (64, 64))
    assert not (tmp_path / 'x.onnx').exists()
    assert main(['--model', str(tmp_path / 'missing.pt'), '--out', 'x.onnx', '--dynamic']) == 1
    assert 'checkpoint not found' in capsys.readouterr().err
    for argv in (['--out', 'x.onnx'], ['--out', 'x.onnx', '--dynamic', '--height', '64'],
                 ['--out', 'x.onnx', '--height', '64'], ['--out', 'x.onnx', '--opset', '19']):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2


def test_pin_refuses_a_graph_that_is_not_the_fifn_context():
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node('Softmax', ['x'], ['y'], name='softmax', axis=-1)], 'g',
        [helper.make_tensor_value_info('x', TensorProto.FLOAT, [2, 2])],
        [helper.make_tensor_value_info('y', TensorProto.FLOAT, [2, 2])])
    with pytest.raises(ExportError, match="softmax 'softmax' is not fed by Mul/Div"):
        pin_attention_context(helper.make_model(graph))
