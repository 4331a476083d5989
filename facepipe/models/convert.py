"""Converts OpenCV Zoo's block-quantised ONNX files into plain fp32 graphs that
ONNX Runtime runs on any provider, with a dynamic batch axis.

The block-quantised weights are dequantised offline exactly as DequantizeLinear
does it ((q - zero_point) * scale in float32), so outputs are unchanged; the
graph keeps its opset. The output bytes depend only on the input bytes.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import numpy_helper

BATCH = "N"


def _dequantize(
    quantized: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, axis: int, block: int
):
    """What DequantizeLinear computes for constant inputs (per tensor, per axis or per block)."""
    q = quantized.astype(np.int32)
    zp = np.zeros_like(scale, dtype=np.int32) if zero_point is None else zero_point.astype(np.int32)
    axis = axis % q.ndim
    if block > 0:
        scale = np.repeat(scale, block, axis=axis).take(range(q.shape[axis]), axis=axis)
        zp = np.repeat(zp, block, axis=axis).take(range(q.shape[axis]), axis=axis)
    elif scale.ndim == 1 and scale.size > 1:
        shape = [1] * q.ndim
        shape[axis] = scale.size
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    return (q - zp).astype(np.float32) * scale.astype(np.float32)


def fold_constant_weights(graph: onnx.GraphProto) -> None:
    """Replaces DequantizeLinear (and the Reshape that follows it) on initializers by
    their fp32 result, in node order."""
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    kept: list[onnx.NodeProto] = []
    folded: list[onnx.TensorProto] = []
    for node in graph.node:
        if node.input and all(i in consts for i in node.input if i):
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            if node.op_type == "DequantizeLinear":
                zero = consts[node.input[2]] if len(node.input) > 2 and node.input[2] else None
                value = _dequantize(
                    consts[node.input[0]],
                    consts[node.input[1]],
                    zero,
                    attrs.get("axis", 1),
                    attrs.get("block_size", 0),
                )
            elif node.op_type == "Reshape":
                value = consts[node.input[0]].reshape(consts[node.input[1]].tolist())
            else:
                kept.append(node)
                continue
            consts[node.output[0]] = value
            folded.append(numpy_helper.from_array(np.ascontiguousarray(value), node.output[0]))
            continue
        kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    graph.initializer.extend(folded)
    _drop_unused(graph)


def _drop_unused(graph: onnx.GraphProto) -> None:
    """Removes initializers and graph inputs no node reads (the graph's own input stays)."""
    used = {i for node in graph.node for i in node.input} | {o.name for o in graph.output}
    initializers = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    names = {t.name for t in initializers}
    inputs = [i for i in graph.input if i.name in used and i.name not in names]
    del graph.input[:]
    graph.input.extend(inputs)


def _set_dims(value: onnx.ValueInfoProto, dims: list[int | str]) -> None:
    shape = value.type.tensor_type.shape
    del shape.dim[:]
    for d in dims:
        dim = shape.dim.add()
        if isinstance(d, str):
            dim.dim_param = d
        else:
            dim.dim_value = d


def _dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def keep_batch_in_reshapes(graph: onnx.GraphProto) -> None:
    """Reshapes of activations to a constant shape that starts with 1 merge the batch
    into the next axis; 0 (copy the input's dimension) keeps the batch axis."""
    consts = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type != "Reshape" or node.input[1] not in consts:
            continue
        shape = numpy_helper.to_array(consts[node.input[1]]).copy()
        if shape.ndim == 1 and shape.size > 1 and shape[0] == 1:
            shape[0] = 0
            consts[node.input[1]].CopyFrom(numpy_helper.from_array(shape, node.input[1]))


def _finish(model: onnx.ModelProto) -> bytes:
    # Intermediate shapes were inferred for batch 1; ONNX Runtime infers them again.
    del model.graph.value_info[:]
    onnx.checker.check_model(model)
    return model.SerializeToString()


def convert_yunet(data: bytes) -> bytes:
    """YuNet: fp32 weights, batch, height and width dynamic (sides multiples of 32)."""
    model = onnx.load_from_string(data)
    graph = model.graph
    fold_constant_weights(graph)
    keep_batch_in_reshapes(graph)
    _set_dims(graph.input[0], [BATCH, 3, "height", "width"])
    for out in graph.output:
        _set_dims(out, [BATCH, f"anchors_{out.name.rsplit('_', 1)[-1]}", _dims(out)[-1]])
    return _finish(model)


def convert_sface(data: bytes) -> bytes:
    """SFace: fp32 weights, the unused inputs removed, a dynamic batch axis."""
    model = onnx.load_from_string(data)
    graph = model.graph
    fold_constant_weights(graph)
    _set_dims(graph.input[0], [BATCH, *_dims(graph.input[0])[1:]])
    for out in graph.output:
        _set_dims(out, [BATCH, *_dims(out)[1:]])
    return _finish(model)


# By model family, as named in a pack's specification.
CONVERTERS: dict[str, Callable[[bytes], bytes]] = {"yunet": convert_yunet, "sface": convert_sface}
