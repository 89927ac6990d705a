"""ONNX export of the inference graph (FIFN + [0, 1] clamp) for ONNX Runtime and TensorRT.

Graph contract: inputs 'visible_y' and 'infrared', output 'fused_y', all float32 NCHW
(N, 1, H, W) in [0, 1]; the clamp is part of the graph (model.InferenceFIFN). Fixed-shape
models have N = 1 and the given H x W; dynamic models have symbolic 'batch', 'height',
'width'.

Exporter per opset (measured with torch 2.13, onnx 1.23, onnxscript 0.7):
    17: TorchScript exporter (torch.onnx.export(..., dynamo=False)). TensorRT 8.6 (JetPack
        6.0) reads opsets up to 17. torch's default dynamo exporter writes opset 18 and its
        down-conversion to 17 fails on this graph (onnx version converter: "axes" of
        ReduceMean/ReduceMax), after which torch silently keeps opset 18 - so every export
        here checks the opset it got. The TorchScript exporter is deprecated in torch but
        is the only route to 17.
    18: dynamo exporter (torch.export based, torch's supported path; TensorRT 10.x).
        Dynamic H x W uses Dim.DYNAMIC: named Dims fail on the parity branch in
        model.pad_to_match.
Dynamic TorchScript exports are traced at DYNAMIC_TRACE_SIZE, a size where every decoder
step pads, so the graph keeps all Pad nodes (a zero pad is a no-op at other sizes).
TorchScript graphs then go through onnxscript's optimizer (constant folding), as the dynamo
exporter's do.

The attention context (softmax over K^T.V / sqrt(d), model.attention_context) is made an
explicit FP32 region: Cast-to-float on both MatMul inputs and on the softmax output (the
dynamo exporter drops the model's no-op casts, so they are re-inserted), and its nodes are
renamed '<scope>/attention_context_<k>/<op>_<j>' so TensorRT can pin those layers to FP32
(model_contract.FP32_REGION_PATTERN) in fp16/int8 engines. The channel weights' global
average pools are FP32 regions too ('<scope>/channel_pool_<k>/ReduceMean': their sums over
H x W exceed the FP16 range at 1080p).
"""

from __future__ import annotations

from collections.abc import Callable
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
from pathlib import Path
import tempfile
import warnings

import numpy as np

from occo_ros import __version__
from occo_ros.model.artifact_cache import (
    sha256_file,
)
from occo_ros.model.contract import (
    FP32_REGION_PATTERN,
    INPUT_NAMES,
    MIN_INPUT_SIZE,
    OUTPUT_NAME,
    EngineError,
    output_problem,
)
from occo_ros.util.atomic_file import atomic_write_bytes, removed_at_exit

_LOG = logging.getLogger('occo_ros.model.onnx_export')

SUPPORTED_OPSETS = (17, 18)
DEFAULT_OPSET = 17
EXPORTER_FOR_OPSET = {17: 'torchscript', 18: 'dynamo'}
#: H, W = 7 (mod 8): all three decoder steps reflect-pad, so a traced graph keeps every Pad.
DYNAMIC_TRACE_SIZE = (71, 87)
#: Largest |ONNX Runtime - PyTorch| accepted by the post-export check (fp32).
VERIFY_TOLERANCE = 1e-4
DEFAULT_INPUT_NORMALIZATION = (
    'visible_y: BT.601 luma Y of the RGB image, infrared: 8-bit thermal image (16-bit input '
    'reduced by AGC first); both float32 = uint8 / 255 in [0, 1], NCHW (N, 1, H, W)')
_FLOAT = 1  # onnx.TensorProto.FLOAT


class ExportError(EngineError):
    """The ONNX export failed or produced a graph we cannot use (an EngineError, so the
    engine factory handles it like any other backend failure)."""


def _scope(node: object) -> str:
    """Module scope of a node: the TorchScript name prefix, or the dynamo name_scopes entry."""
    if node.name.startswith('/') and '/' in node.name[1:]:
        return node.name.rsplit('/', 1)[0]
    for prop in node.metadata_props:
        if prop.key == 'pkg.torch.onnx.name_scopes':
            scopes = [part.strip(" '") for part in prop.value.strip('[]').split(',')]
            if len(scopes) >= 2 and scopes[-2]:
                return '/' + scopes[-2]
    return ''


def _is_float_cast(node: object | None) -> bool:
    return (node is not None and node.op_type == 'Cast'
            and any(a.name == 'to' and a.i == _FLOAT for a in node.attribute))


def pin_attention_context(model: object) -> list[str]:
    """Make every attention context an explicit, named FP32 region (see module docstring).

    Region of context k: the Cast-to-float (and Transpose) nodes feeding the K^T.V MatMul,
    the MatMul, the scaling Mul/Div, the Softmax and a Cast-to-float after it. Missing casts
    are inserted. Edits `model` (onnx.ModelProto) in place.

    Returns:
        Names of the region nodes, in graph order of the softmaxes.

    Raises:
        ExportError: a Softmax not fed by Mul/Div(MatMul(...)), i.e. not the FIFN context.
    """
    from onnx import helper

    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}

    def consumers(tensor: str) -> list:
        return [node for node in graph.node if tensor in node.input]

    regions = []
    for softmax in [node for node in graph.node if node.op_type == 'Softmax']:
        scale = producer.get(softmax.input[0])
        matmul = next((producer.get(name) for name in (scale.input if scale else [])
                       if producer.get(name) is not None
                       and producer[name].op_type == 'MatMul'), None)
        if scale is None or scale.op_type not in ('Mul', 'Div') or matmul is None:
            raise ExportError(
                f'softmax {softmax.name!r} is not fed by Mul/Div(MatMul(K^T, V)): the graph '
                'is not the FIFN attention context this exporter knows how to pin to FP32')
        regions.append((matmul, scale, softmax))

    nodes = list(graph.node)  # edited as a list (insertions), written back at the end
    names = []
    for index, (matmul, scale, softmax) in enumerate(regions):
        prefix = f'{_scope(matmul)}/attention_context_{index}'
        region = []
        for slot, tensor in enumerate(list(matmul.input)):
            feeder = producer.get(tensor)
            chain = [feeder] if feeder is not None and feeder.op_type == 'Transpose' else []
            source = producer.get(chain[0].input[0]) if chain else feeder
            if _is_float_cast(source):
                chain.append(source)
            else:
                cast = helper.make_node('Cast', [tensor], [f'{prefix}/cast_in{slot}'],
                                        name=f'{prefix}/cast_in{slot}', to=_FLOAT)
                nodes.insert(nodes.index(matmul), cast)
                matmul.input[slot] = cast.output[0]
                chain.append(cast)
            region.extend(reversed(chain))
        region += [matmul, scale, softmax]
        after = consumers(softmax.output[0])
        if len(after) == 1 and _is_float_cast(after[0]):
            region.append(after[0])
        else:
            cast = helper.make_node('Cast', [softmax.output[0]], [f'{prefix}/cast_out'],
                                    name=f'{prefix}/cast_out', to=_FLOAT)
            for node in after:
                node.input[:] = [cast.output[0] if name == softmax.output[0] else name
                                 for name in node.input]
            nodes.insert(nodes.index(softmax) + 1, cast)
            region.append(cast)
        for position, node in enumerate(region):
            if not FP32_REGION_PATTERN.search(node.name):
                node.name = f'{prefix}/{node.op_type}_{position}'
            names.append(node.name)
    graph.ClearField('node')
    graph.node.extend(nodes)
    return names


def _reduce_axes(node: object, constants: dict) -> list[int] | None:
    """The axes of a ReduceMean: its attribute (opset <= 17) or constant input (18)."""
    for attribute in node.attribute:
        if attribute.name == 'axes':
            return list(attribute.ints)
    if len(node.input) > 1 and node.input[1] in constants:
        return [int(axis) for axis in constants[node.input[1]]]
    return None


def pin_channel_pools(model: object) -> list[str]:
    """Name every global average pool (ReduceMean over H, W: the FIFB channel weights) an FP32
    region: its sum over H x W reaches ~3.5e6 for the shipped model at 1080p, far beyond the
    FP16 range. Renames the nodes '<scope>/channel_pool_<k>/ReduceMean'; returns the names."""
    from onnx import numpy_helper

    constants = {tensor.name: numpy_helper.to_array(tensor) for tensor in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == 'Constant':
            constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    names = []
    for node in model.graph.node:
        axes = _reduce_axes(node, constants) if node.op_type == 'ReduceMean' else None
        if axes is not None and sorted(axis % 4 for axis in axes) == [2, 3]:
            node.name = f'{_scope(node)}/channel_pool_{len(names)}/ReduceMean'
            names.append(node.name)
    return names


def _fold_pad_amounts(model: object) -> None:
    """Replace computed Pad amounts of a fixed-shape graph by initializers.

    torch's F.pad export builds the pads with a reversed Slice (step -1) that neither torch's
    nor onnxscript's constant folding evaluates; constant pads are what every TensorRT ONNX
    parser takes. Evaluated with onnx's reference runtime on the extracted subgraph.
    """
    from onnx import numpy_helper, shape_inference, utils
    from onnx.reference import ReferenceEvaluator

    initializers = {tensor.name for tensor in model.graph.initializer}
    pads = [node for node in model.graph.node if node.op_type == 'Pad'
            and len(node.input) > 1 and node.input[1] not in initializers]
    if not pads:
        return
    extractor = utils.Extractor(shape_inference.infer_shapes(model))  # needs value_info
    for node in pads:
        subgraph = extractor.extract_model([], [node.input[1]])
        value = ReferenceEvaluator(subgraph).run(None, {})[0]
        name = f'{node.name}/pads_folded'
        model.graph.initializer.append(numpy_helper.from_array(value.astype(np.int64), name))
        node.input[1] = name


def training_data_id(meta: dict, checkpoint_sha: str) -> str:
    """What the checkpoint says about its training data (JSON), else its own sha256."""
    training = meta.get('training')
    found = ({key: value for key, value in training.items() if 'data' in str(key).lower()}
             if isinstance(training, dict) else {})
    for key in ('training_data', 'data_hash', 'dataset_sha256'):
        if key in meta:
            found[key] = meta[key]
    if found:
        return json.dumps(found, sort_keys=True, default=str)[:2000]
    return f'checkpoint_sha256:{checkpoint_sha} (the checkpoint records no training data hash)'


def _torch_export(module: object, path: Path, opset: int,
                  input_size: tuple[int, int] | None) -> None:
    """Run torch.onnx.export with the exporter chosen for `opset` (see module docstring)."""
    import torch

    size = input_size or DYNAMIC_TRACE_SIZE
    example = (torch.rand(1, 1, *size), torch.rand(1, 1, *size))
    names = {'input_names': list(INPUT_NAMES), 'output_names': [OUTPUT_NAME],
             'opset_version': opset}
    if EXPORTER_FOR_OPSET[opset] == 'dynamo':
        dynamic = None
        if input_size is None:
            dim = torch.export.Dim.DYNAMIC
            dynamic = {name: {0: dim, 2: dim, 3: dim} for name in INPUT_NAMES}
        torch.onnx.export(module, example, str(path), dynamo=True, dynamic_shapes=dynamic,
                          verbose=False, **names)
        return
    axes = None
    if input_size is None:
        axes = {name: {0: 'batch', 2: 'height', 3: 'width'}
                for name in (*INPUT_NAMES, OUTPUT_NAME)}
    with warnings.catch_warnings():
        # Deliberate: the TorchScript exporter is the only one that writes opset 17.
        warnings.filterwarnings('ignore', message='You are using the legacy TorchScript',
                                category=DeprecationWarning)
        warnings.filterwarnings('ignore', category=DeprecationWarning,
                                module=r'torch\.onnx\.')
        # Pad amounts are folded by _fold_pad_amounts instead.
        warnings.filterwarnings('ignore', message='Constant folding - Only steps=1')
        # The pad branch in pad_to_match is traced at a size where it always pads (see
        # DYNAMIC_TRACE_SIZE); zero pads are no-ops, and tests check other sizes.
        warnings.filterwarnings('ignore', category=torch.jit.TracerWarning)
        torch.onnx.export(module, example, str(path), dynamo=False, dynamic_axes=axes,
                          do_constant_folding=True, **names)


def _name_dynamic_dims(model: object) -> None:
    """Rename the exporter's symbolic dims (e.g. 's60') to 'batch', 'height', 'width'."""
    rename = {}
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        for index, label in ((0, 'batch'), (2, 'height'), (3, 'width')):
            if dims[index].dim_param:
                rename[dims[index].dim_param] = label
    for value in (*model.graph.input, *model.graph.output, *model.graph.value_info):
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in rename:
                dim.dim_param = rename[dim.dim_param]


def verify_onnx(model_bytes: bytes, module: object, input_size: tuple[int, int],
                tolerance: float = VERIFY_TOLERANCE) -> float:
    """Max |ONNX Runtime - PyTorch| on a fixed pseudo-random pair; ExportError above tolerance."""
    import onnxruntime as ort
    import torch

    generator = np.random.default_rng(0)
    visible, infrared = (generator.random((1, 1, *input_size), dtype=np.float32)
                         for _ in range(2))
    session = ort.InferenceSession(model_bytes, providers=['CPUExecutionProvider'])
    fused = session.run([OUTPUT_NAME], {INPUT_NAMES[0]: visible, INPUT_NAMES[1]: infrared})[0]
    problem = output_problem(fused, visible, infrared)
    if problem:   # the node's load-time dry run would refuse it (engines.dry_run)
        raise ExportError(f'exported graph breaks the FIFN output contract at '
                          f'{input_size[0]}x{input_size[1]}: {problem[1]}')
    with torch.inference_mode():
        expected = module(torch.from_numpy(visible), torch.from_numpy(infrared)).numpy()
    error = float(np.abs(fused - expected).max())
    if not error <= tolerance:
        raise ExportError(f'exported graph differs from PyTorch by {error:.3g} '
                          f'(tolerance {tolerance:g}) at {input_size[0]}x{input_size[1]}')
    return error


def export_onnx(
    model_path: str | os.PathLike,
    out_path: str | os.PathLike,
    input_size: tuple[int, int] | None = None,
    opset: int = DEFAULT_OPSET,
    verify: bool = True,
    log: Callable[[str], None] = _LOG.info,
) -> Path:
    """Export a FIFN checkpoint to ONNX (InferenceFIFN: clamp included).

    Args:
        model_path: checkpoint written by occo_ros.model.checkpoint.save_checkpoint.
        out_path: ONNX file to write (atomically; parent folders are created).
        input_size: (H, W) for a fixed-shape model (H, W >= 8), or None for dynamic
            batch/height/width.
        opset: 17 (TensorRT 8.6 / JetPack 6.0, TorchScript exporter) or 18 (dynamo exporter).
        verify: compare ONNX Runtime with PyTorch (max abs error <= VERIFY_TOLERANCE).
        log: receives one summary line.

    Returns:
        out_path.

    Raises:
        ExportError: bad opset/size, checkpoint unreadable, export, check or verify failure.
    """
    import onnx

    if not torch_installed():
        raise ExportError(f'exporting {model_path} needs PyTorch, which is not installed')
    import torch

    from occo_ros.model.checkpoint import CheckpointError, load_checkpoint
    from occo_ros.model.network import InferenceFIFN

    if opset not in SUPPORTED_OPSETS:
        raise ExportError(f'opset {opset} is not supported; choose one of {SUPPORTED_OPSETS}')
    if input_size is not None and min(input_size) < MIN_INPUT_SIZE:
        raise ExportError(f'input size {input_size} (H, W) is below the network minimum '
                          f'{MIN_INPUT_SIZE}x{MIN_INPUT_SIZE}')
    try:
        fifn, meta = load_checkpoint(model_path)
    except CheckpointError as exc:
        raise ExportError(str(exc)) from exc
    module = InferenceFIFN(fifn).eval()
    with tempfile.TemporaryDirectory(prefix='occo_export_') as folder, removed_at_exit(folder):
        raw_path = Path(folder) / 'model.onnx'
        try:
            with torch.inference_mode(False), torch.no_grad():
                _torch_export(module, raw_path, opset, input_size)
        except Exception as exc:  # torch raises many exception types from its exporters
            raise ExportError(f'torch.onnx export (opset {opset}, '
                              f'{EXPORTER_FOR_OPSET[opset]}) failed: {exc}') from exc
        model = onnx.load(str(raw_path))
    got = next((entry.version for entry in model.opset_import if entry.domain in ('', 'ai.onnx')),
               None)
    if got != opset:
        raise ExportError(f'exporter wrote opset {got}, expected {opset}')
    if input_size is not None:
        _fold_pad_amounts(model)
    if EXPORTER_FOR_OPSET[opset] == 'torchscript':
        # Fold the tracer's shape arithmetic (Shape/Gather/Slice/Cast chains) into constants
        # and drop dead nodes, as the dynamo exporter does itself: a fixed-shape graph
        # shrinks from ~1000 to ~470 nodes.
        from onnxscript import optimizer

        model = optimizer.optimize(model)
    fp32_nodes = pin_attention_context(model) + pin_channel_pools(model)
    if input_size is None:
        _name_dynamic_dims(model)
    checkpoint_sha = sha256_file(model_path)
    model.producer_name, model.producer_version = 'occo_ros', __version__
    properties = {
        'model_width': str(fifn.width),
        'model_args': json.dumps(fifn.model_args, sort_keys=True),
        'input_names': ','.join(INPUT_NAMES), 'output_name': OUTPUT_NAME,
        'input_normalization': json.dumps(meta.get('input_normalization'), default=str)
        if meta.get('input_normalization') is not None else DEFAULT_INPUT_NORMALIZATION,
        'output_range': 'fused_y clamped to [0, 1] inside the graph',
        'input_shape': 'dynamic' if input_size is None else f'{input_size[0]}x{input_size[1]}',
        'opset': str(opset), 'exporter': EXPORTER_FOR_OPSET[opset],
        'torch_version': torch.__version__, 'export_recipe_sha256': export_recipe_sha256(),
        'checkpoint': Path(model_path).name, 'checkpoint_sha256': checkpoint_sha,
        'training_data': training_data_id(meta, checkpoint_sha),
        'fp32_node_pattern': FP32_REGION_PATTERN.pattern,
        'fp32_nodes': json.dumps(fp32_nodes),
    }
    onnx.helper.set_model_props(model, properties)
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f'onnx.checker rejected the exported graph: {exc}') from exc
    data = model.SerializeToString()
    if verify:
        error = verify_onnx(data, module, input_size or DYNAMIC_TRACE_SIZE)
        log(f'verified against PyTorch: max abs error {error:.2e}')
    out_path = atomic_write_bytes(out_path, data)
    log(f'wrote {out_path} (opset {opset}, {EXPORTER_FOR_OPSET[opset]} exporter, '
        f'{properties["input_shape"]}, width {fifn.width}, {len(fp32_nodes)} FP32 nodes)')
    return out_path


def read_metadata(onnx_path: str | os.PathLike) -> dict[str, str]:
    """metadata_props of an ONNX file as a dict (weights are not loaded)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    return {prop.key: prop.value for prop in model.metadata_props}


def onnx_input_size(onnx_path: Path) -> tuple[int, int] | None:
    """(H, W) of a fixed-shape ONNX model's first input, None if dynamic."""
    import onnx

    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as exc:  # DecodeError and friends for corrupt files
        raise EngineError(f'cannot read ONNX model {onnx_path}: {exc} (corrupt or truncated '
                          'file? re-export it with occo-export)') from exc
    dims = model.graph.input[0].type.tensor_type.shape.dim
    values = [dim.dim_value if dim.HasField('dim_value') else None for dim in dims]
    return (values[2], values[3]) if len(values) == 4 and None not in values[2:] else None


def export_recipe_sha256() -> str:
    """sha256 of what shapes an export besides the weights: the network and exporter
    modules, torch.

    Stored in every export; `cached_onnx` re-exports when it differs, so an upgrade of the
    network code, of this exporter or of torch never keeps serving an old graph (and the
    TensorRT engine cache, keyed by the ONNX sha256, follows). Imports neither torch nor the
    network (3 s of every start that finds its export cached).
    """
    network = importlib.util.find_spec('occo_ros.model.network').origin
    digest = hashlib.sha256(_torch_version().encode())
    for source in (network, __file__):
        digest.update(Path(source).read_bytes())
    return digest.hexdigest()


def _torch_version() -> str:
    """torch.__version__ from the installed distribution's metadata (the same string), or
    from torch itself where it is not installed as a distribution."""
    try:
        return importlib.metadata.version('torch')
    except importlib.metadata.PackageNotFoundError:
        import torch

        return torch.__version__


def torch_installed() -> bool:
    """Whether PyTorch can be imported (exporting a .pt checkpoint needs it)."""
    return importlib.util.find_spec('torch') is not None
