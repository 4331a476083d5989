"""Graph surgery that gives a detector exported with its batch axis fixed at 1 a
dynamic one, so that one session run serves a whole batch on any provider.

SCRFD exports end every head in ``Transpose(perm moves the batch off axis 0)``
then ``Reshape([-1, k])``: with a batch of one the batch axis simply vanishes
into the anchors. Here each such head becomes ``Transpose(NCHW -> NHWC)`` then
``Reshape([0, -1, k])``, so its output is (batch, anchors, k): for one image the
values and their order are the same as before. The input's batch axis becomes
symbolic, and the stale intermediate shape annotations (recorded for batch 1)
are dropped; runtimes infer them again. The result is a pure function of the
input bytes, so installing the same file twice gives the same file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

BATCH_DIM = "batch"
# Operators allowed between a head's Reshape and the graph output: they keep the shape.
_SHAPE_KEEPING = {"Sigmoid", "Relu", "Exp", "Identity", "Mul", "Add", "Sub", "Div"}


class BatchAxisError(ValueError):
    """The graph does not have the layout this surgery knows how to change."""


def _constant_values(graph: onnx.GraphProto, name: str) -> np.ndarray | None:
    for init in graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            for attr in node.attribute:
                if attr.name == "value":
                    return numpy_helper.to_array(attr.t)
    return None


def _is_scalar_constant(graph: onnx.GraphProto, name: str) -> bool:
    values = _constant_values(graph, name)
    return values is not None and values.size == 1


def _head_reshape(
    graph: onnx.GraphProto, output: str, producers: dict[str, onnx.NodeProto]
) -> onnx.NodeProto:
    """The Reshape that ends the head feeding ``output``, through shape-keeping operators."""
    name = output
    while True:
        node = producers.get(name)
        if node is None:
            raise BatchAxisError(f"output {output!r} is not produced by a Reshape")
        if node.op_type == "Reshape":
            return node
        if node.op_type not in _SHAPE_KEEPING:
            raise BatchAxisError(f"output {output!r} comes from {node.op_type}, not a Reshape")
        tensors = [i for i in node.input if not _is_scalar_constant(graph, i)]
        if len(tensors) != 1:
            raise BatchAxisError(f"output {output!r}: {node.op_type} mixes two tensors")
        name = tensors[0]


def batch_is_dynamic(model: onnx.ModelProto) -> bool:
    """Whether the first input's batch axis is already symbolic."""
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return bool(dims) and not (dims[0].HasField("dim_value") and dims[0].dim_value > 0)


def with_dynamic_batch(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with a dynamic batch axis on its input and axis 0 of every
    output. Raises BatchAxisError for a graph of another layout; a model whose batch
    axis is already dynamic comes back unchanged."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    if batch_is_dynamic(out):
        return out
    graph = out.graph
    initializer_names = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializer_names]
    if len(inputs) != 1 or len(inputs[0].type.tensor_type.shape.dim) != 4:
        raise BatchAxisError("expected one 4-D image input")
    if inputs[0].type.tensor_type.shape.dim[0].dim_value != 1:
        raise BatchAxisError("the input's batch axis is not fixed at 1")

    producers = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, int] = {}
    for node in graph.node:
        for i in node.input:
            consumers[i] = consumers.get(i, 0) + 1

    batched_shapes: dict[str, str] = {}  # original shape tensor -> its batched twin
    new_initializers: list[TensorProto] = []
    widths: dict[str, int] = {}
    for output in graph.output:
        reshape = _head_reshape(graph, output.name, producers)
        transpose = producers.get(reshape.input[0])
        if transpose is None or transpose.op_type != "Transpose":
            raise BatchAxisError(f"output {output.name!r}: the Reshape does not follow a Transpose")
        if consumers.get(transpose.output[0], 0) != 1:
            raise BatchAxisError(f"output {output.name!r}: the Transpose feeds other nodes")
        perm_attr = next((a for a in transpose.attribute if a.name == "perm"), None)
        shape = _constant_values(graph, reshape.input[1])
        if perm_attr is None or shape is None or shape.ndim != 1 or len(shape) != 2 or shape[0] != -1:
            raise BatchAxisError(f"output {output.name!r}: not a Transpose + Reshape([-1, k]) head")
        perm = list(perm_attr.ints)
        if perm[0] == 0:
            raise BatchAxisError(f"output {output.name!r}: the Transpose keeps the batch first already")
        # Batch first, every other axis in the order it had: the per-image layout is unchanged.
        del perm_attr.ints[:]
        perm_attr.ints.extend([0, *(a for a in perm if a != 0)])
        original = reshape.input[1]
        if original not in batched_shapes:
            twin = f"{original}_batched"
            batched_shapes[original] = twin
            new_initializers.append(numpy_helper.from_array(np.array([0, -1, shape[1]], np.int64), twin))
        reshape.input[1] = batched_shapes[original]
        widths[output.name] = int(shape[1])

    graph.initializer.extend(new_initializers)
    still_used = {i for n in graph.node for i in n.input}
    unused = [i for i in graph.initializer if i.name in batched_shapes and i.name not in still_used]
    for init in unused:
        graph.initializer.remove(init)
    constants = [n for n in graph.node if n.op_type == "Constant" and n.output[0] in batched_shapes]
    for node in constants:
        if node.output[0] not in still_used:
            graph.node.remove(node)

    inputs[0].type.tensor_type.shape.dim[0].Clear()
    inputs[0].type.tensor_type.shape.dim[0].dim_param = BATCH_DIM
    for output in graph.output:
        elem_type = output.type.tensor_type.elem_type
        output.type.CopyFrom(helper.make_tensor_type_proto(elem_type, [BATCH_DIM, None, widths[output.name]]))
    # Shapes recorded for batch 1 would contradict the runtime's own inference.
    del graph.value_info[:]
    onnx.checker.check_model(out)
    return out


def dynamic_batch_bytes(data: bytes) -> bytes:
    """The bytes of ``data``'s model with a dynamic batch axis, or ``data`` itself when the
    graph is not one this surgery applies to (another layout, or dynamic already)."""
    try:
        model = onnx.load_from_string(data)
    except Exception:  # noqa: BLE001 - not an ONNX model: installed as it is
        return data
    if batch_is_dynamic(model):
        return data
    try:
        return with_dynamic_batch(model).SerializeToString()
    except BatchAxisError:
        return data


def convert_file(source: Path, target: Path) -> bool:
    """Writes ``source`` with a dynamic batch axis to ``target``; False when the graph's
    layout is not one this surgery applies to (``target`` is then not written)."""
    data = Path(source).read_bytes()
    converted = dynamic_batch_bytes(data)
    if converted is data:
        return False
    Path(target).write_bytes(converted)
    return True
