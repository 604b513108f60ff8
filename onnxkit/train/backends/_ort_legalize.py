"""What the ORT-training backend (onnxruntime-training 1.19.2) needs of a training graph
beyond the shared training form, and the ops it cannot differentiate.

- LayerNormalization emits Mean and InvStdDev (its gradient builder reads them).
- AveragePool becomes the equivalent depthwise Conv with constant weights: its
  AveragePool gradient crashes (SIGFPE) or returns a wrongly shaped gradient when the
  batch dimension is symbolic.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx
from onnx import helper

from onnxkit.dims import fixed_size
from onnxkit.errors import OnnxkitError
from onnxkit.graph_walks import ancestors, constant_values, node_label, value_types

# Ops on the path from a trained parameter to the loss that ONNX Runtime training
# 1.19.2 cannot differentiate on CPU (docs/architecture.md §3).
NO_GRADIENT = {
    "GlobalMaxPool",
    "InstanceNormalization",
    "GroupNormalization",
    "Elu",
    "Selu",
    "Softplus",
    "HardSwish",
    "HardSigmoid",
    "Celu",
    "Mish",
    "PRelu",
    "ReduceMax",
    "ReduceMin",
    "Einsum",
    "ConvTranspose",
    "Resize",
    "Attention",
}
FORWARD_ONLY = {"LSTM", "GRU"}  # its LSTMGrad / GRUGrad kernels run the forward direction only


def _broken_form(node: onnx.NodeProto, constants: dict[str, np.ndarray]) -> str | None:
    """The name of a form of `node` whose ORT-training 1.19.2 gradient fails, else None: a Slice
    with a negative step (torch.flip: SliceGrad stops the step with a narrowing_error), a
    ReduceLogSumExp without keepdims (its gradient graph is invalid at opset 13+)."""
    if node.op_type == "Slice" and len(node.input) > 4 and node.input[4]:
        steps = constants.get(node.input[4])
        if steps is not None and (steps < 0).any():
            return "Slice with a negative step"
    if node.op_type == "ReduceLogSumExp" and not next((a.i for a in node.attribute if a.name == "keepdims"), 1):
        return "ReduceLogSumExp without keepdims"
    return None




def _ints(node: onnx.NodeProto, name: str, default: list[int]) -> list[int]:
    return next((list(a.ints) for a in node.attribute if a.name == name), default)


def _average_pool_as_conv(
    node: onnx.NodeProto, tag: str, types: dict[str, onnx.ValueInfoProto], graph: onnx.GraphProto, label: str
) -> onnx.NodeProto:
    """AveragePool as a depthwise Conv whose weights are all 1/kernel size (same result)."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    kernel = list(attrs["kernel_shape"])
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    padded = any(attrs.get("pads", [0])) or auto_pad not in ("NOTSET", "VALID")
    vi = types.get(node.input[0])
    dims = vi.type.tensor_type.shape.dim if vi is not None else []
    channels = (fixed_size(dims[1]) if len(dims) > 1 else None) or 0
    if (padded and not attrs.get("count_include_pad", 0)) or attrs.get("ceil_mode", 0) or not channels or any(
        d != 1 for d in attrs.get("dilations", [1])
    ):
        raise OnnxkitError(
            f"AveragePool (node {label}) with padding excluded from the average, ceil_mode, dilations or an "
            "unknown channel count cannot be trained (ONNX Runtime 1.19.2's AveragePool gradient is broken); "
            "use count_include_pad=1 and no ceil_mode, or freeze the layers before it"
        )
    weight = np.full((channels, 1, *kernel), 1.0 / float(np.prod(kernel)), dtype=np.float32)
    graph.initializer.append(onnx.numpy_helper.from_array(weight, f"{tag}.average"))
    conv = {k: v for k, v in attrs.items() if k in ("kernel_shape", "strides", "pads", "auto_pad")}
    return helper.make_node(
        "Conv", [node.input[0], f"{tag}.average"], [node.output[0]], name=node.name, group=channels, **conv
    )


def unsupported_ops(model: onnx.ModelProto, trainable: Iterable[str], loss: str) -> list[tuple[str, str]]:
    """(op, node) of every op without an ORT-training gradient between a trained parameter and `loss`."""
    needed = ancestors(model, loss)
    constants = constant_values(model)
    live, found = set(trainable), []
    for index, node in enumerate(model.graph.node):  # nodes are topologically sorted
        if live & set(node.input):
            direction = next((a.s.decode() for a in node.attribute if a.name == "direction"), "forward")
            on_path = bool(needed & set(node.output))
            broken = _broken_form(node, constants) if on_path and live & {node.input[0]} else None
            if on_path and node.op_type in NO_GRADIENT:
                found.append((node.op_type, node_label(node, index)))
            elif on_path and node.op_type in FORWARD_ONLY and direction != "forward":
                found.append((f"{node.op_type} ({direction})", node_label(node, index)))
            elif broken:
                found.append((broken, node_label(node, index)))
            live.update(node.output)
    return found


def legalize(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of training graph `model` in the form ORT-training differentiates correctly."""
    types = value_types(model)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes = []
    for index, node in enumerate(out.graph.node):
        tag = f"onnxkit.ort.{index}"
        if node.op_type == "LayerNormalization":
            while len(node.output) < 3:
                node.output.append(f"{tag}.{('mean', 'inv_std_dev')[len(node.output) - 1]}")
        elif node.op_type == "AveragePool":
            node = _average_pool_as_conv(node, tag, types, out.graph, node_label(node, index))
        nodes.append(node)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out
