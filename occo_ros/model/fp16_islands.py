"""FP16 ONNX with FP32 islands, for strongly typed TensorRT (>= 11).

TensorRT 11 has no FP16 builder flag and no per-layer precision: a network computes in the
types its ONNX graph has. `fp16_islands` retypes an FIFN export (export.py) to float16
everywhere except the FP32 regions that the fp16 pinning of TensorRT < 11 keeps
(model_contract.FP32_REGION_PATTERN: attention context, channel pools), so TensorRT 11 builds
the same mixed-precision engine that 8.x/10.x build from the fp32 graph with flags.

The rules (one pass over the graph in its topological order):
    - IO stays float32 (the graph contract): a Cast to float16 after each input, a Cast back
      to float32 before 'fused_y'.
    - A node of an FP32 region takes float32 inputs and so computes in float32; any other
      node takes float16, except Resize's 'scales' (float32 only, by the operator's
      definition). Where a tensor has the other type, a Cast is inserted (named after the
      consuming node, so a Cast into a region is part of the region).
    - Float32 initializers that only non-region nodes read become float16; Cast nodes
      outside the regions cast to float16 instead of float32.
Only onnx (and numpy) is needed: no PyTorch.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from occo_ros.model.contract import FP32_REGION_PATTERN, EngineError

#: Version of these rules; part of the file name of a converted model (tensorrt_engine).
ISLANDS_VERSION = 1


def _in_region(node: object) -> bool:
    return bool(FP32_REGION_PATTERN.search(node.name))


def fp16_islands(model: object) -> object:
    """A float16 copy of the fp32 FIFN ONNX `model` (onnx.ModelProto) with FP32 islands.

    Raises:
        EngineError: the model is not an fp32 FIFN export (no FP32 region, or already
            float16), or the result fails onnx.checker.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    float32, float16 = TensorProto.FLOAT, TensorProto.FLOAT16
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    if not any(_in_region(node) for node in graph.node):
        raise EngineError('the ONNX model has no FP32 region (nodes named like '
                          f'{FP32_REGION_PATTERN.pattern}): export it with occo-export')
    typed = onnx.shape_inference.infer_shapes(model).graph
    elem = {value.name: value.type.tensor_type.elem_type
            for value in (*typed.input, *typed.value_info, *typed.output)}
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    elem.update((name, tensor.data_type) for name, tensor in initializers.items())
    if float16 in elem.values():
        raise EngineError('the ONNX model already holds float16 tensors; convert the fp32 '
                          'export')

    def wanted(node: object, index: int) -> int | None:
        """The float type `node` takes at input `index` (None: any, as Cast)."""
        if node.op_type == 'Cast':
            return None
        if _in_region(node) or (node.op_type == 'Resize' and index == 2):
            return float32
        return float16

    readers: dict[str, list] = {}
    for node in graph.node:
        for index, name in enumerate(node.input):
            readers.setdefault(name, []).append(wanted(node, index))
    for name, tensor in initializers.items():
        if tensor.data_type == float32 and set(readers.get(name, ())) == {float16}:
            half = numpy_helper.to_array(tensor).astype(np.float16)
            tensor.CopyFrom(numpy_helper.from_array(half, name))
            elem[name] = float16

    nodes, casts = [], {}
    for node in graph.node:
        region = _in_region(node)
        for index, name in enumerate(node.input):
            want = wanted(node, index)
            if not name or want is None or elem.get(name) not in (float32, float16) \
                    or elem[name] == want:
                continue
            if (name, want) not in casts:
                suffix = 'fp16' if want == float16 else 'fp32'
                cast = f'{name}_{suffix}'
                nodes.append(helper.make_node('Cast', [name], [cast], to=want,
                                              name=f'{node.name}/cast_{suffix}_{index}'))
                casts[(name, want)], elem[cast] = cast, want
            node.input[index] = casts[(name, want)]
        for attribute in node.attribute:
            if node.op_type == 'Cast' and attribute.name == 'to' and not region \
                    and attribute.i == float32:
                attribute.i = float16
            if node.op_type == 'ConstantOfShape' and attribute.t.data_type == float32:
                value = numpy_helper.to_array(attribute.t).astype(np.float16)
                attribute.t.CopyFrom(numpy_helper.from_array(value))
        for name in node.output:
            if elem.get(name) in (float32, float16):
                elem[name] = float32 if region else float16
        nodes.append(node)

    for output in graph.output:
        if elem.get(output.name) == float16:
            inner = f'{output.name}_fp16'
            for node in nodes:
                node.output[:] = [inner if name == output.name else name
                                  for name in node.output]
                node.input[:] = [inner if name == output.name else name for name in node.input]
            nodes.append(helper.make_node('Cast', [inner], [output.name], to=float32,
                                          name=f'/{output.name}/cast_fp32'))
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]
    fp32_nodes = [node.name for node in nodes if _in_region(node)]
    properties = {prop.key: prop.value for prop in model.metadata_props}
    properties.update(precision='fp16 with FP32 islands (occo_ros.model.fp16_islands '
                                f'v{ISLANDS_VERSION})', fp32_nodes=json.dumps(fp32_nodes))
    onnx.helper.set_model_props(model, properties)
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise EngineError(f'the fp16 conversion gave a graph onnx.checker rejects: {exc}'
                          ) from exc
    return model


def write_fp16_islands(source: str | Path, out_path: str | Path) -> Path:
    """Convert the fp32 ONNX file `source` and write it atomically to `out_path`."""
    import onnx

    from occo_ros.util.atomic_file import atomic_write_bytes

    converted = fp16_islands(onnx.load(str(source)))
    return atomic_write_bytes(out_path, converted.SerializeToString())
