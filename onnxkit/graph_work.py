"""The work of a model's weighted nodes (Conv, MatMul, Gemm, LSTM, ... with a constant float weight): multiply-adds
per example, from each weight's size and the positions ONNX shape inference finds it applied at. Quantization picks
its mode by it; training sizes its thread count by it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import onnx

from onnxkit.dims import fixed_size
from onnxkit.graph_walks import value_types

CONV_OPS = ("Conv", "ConvTranspose")
DENSE_OPS = ("MatMul", "Gemm", "Attention", "LSTM", "GRU")
EMBEDDING_OPS = ("Gather",)
FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE)
KINDS = {**dict.fromkeys(CONV_OPS, "conv"), **dict.fromkeys(DENSE_OPS, "dense"),
         **dict.fromkeys(EMBEDDING_OPS, "embedding")}


@dataclass(frozen=True)
class Weighted:
    """A node (by name) whose weight is a float initializer: its kind (conv, dense, embedding), the weight's values,
    and its multiply-adds per example (an embedding's: 0)."""

    name: str
    kind: str
    weight_values: int
    macs: int


def weight_input(node: onnx.NodeProto) -> int:
    """Index of the input that holds a weighted op's weight (Gather: the table)."""
    return 0 if node.op_type in EMBEDDING_OPS else 1


def node_names(model: onnx.ModelProto) -> list[str]:
    return [node.name or f"{node.op_type}_{i}" for i, node in enumerate(model.graph.node)]


def tensor_size(tensor: onnx.TensorProto) -> int:
    n = 1
    for d in tensor.dims:
        n *= d
    return n


def float_values(model: onnx.ModelProto) -> int:
    """The values of the model's float initializers."""
    return sum(tensor_size(t) for t in model.graph.initializer if t.data_type in FLOAT_TYPES)


def weighted_nodes(model: onnx.ModelProto) -> Iterator[Weighted]:
    """The weighted nodes, in graph order. Multiply-adds per example: the weight's size times the output positions it
    is applied at (Conv: spatial size; MatMul: the dims between batch and features; free dims counted as 1; LSTM and
    GRU: W and R at each time step)."""
    inits = {t.name: t for t in model.graph.initializer}
    constant_transposes = {n.output[0]: inits[n.input[0]] for n in model.graph.node
                           if n.op_type == "Transpose" and n.input and n.input[0] in inits}
    dims = _output_dims(model)
    for node, name in zip(model.graph.node, node_names(model), strict=True):
        kind = KINDS.get(node.op_type)
        if kind is None or len(node.input) <= weight_input(node):
            continue
        src = node.input[weight_input(node)]
        weight = inits.get(src) or constant_transposes.get(src)
        if weight is None or weight.data_type not in FLOAT_TYPES:
            continue
        out = dims.get(node.output[0], [])
        positions = _known(out[2:]) if kind == "conv" else _known(out[1:-1])
        size = values = tensor_size(weight)
        if node.op_type in ("LSTM", "GRU"):  # W and the recurrent R, at each time step (X: [seq, batch, input] as
            layout = next((a.i for a in node.attribute if a.name == "layout"), 0)  # Y: [seq, dirs, batch, hidden])
            steps = dims.get(node.input[0], [])  # Y may be left out (only the last state read): one step, it counted
            positions = _known(steps[layout:layout + 1])
            recurrent = inits.get(node.input[2]) if len(node.input) > 2 else None
            size += tensor_size(recurrent) if recurrent is not None and recurrent.data_type in FLOAT_TYPES else 0
        yield Weighted(name, kind, values, 0 if kind == "embedding" else positions * size)


def _known(dims: list[int | None]) -> int:
    n = 1
    for d in dims:
        n *= d or 1
    return n


def _output_dims(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    """Tensor name -> dims after shape inference (`value_types`, over the model without its weights' data: 9 ms on a
    MiniLM classifier, where inference over the whole 90 MB model took 0.4 s), None where not a fixed size; the
    model's own value infos where inference fails."""
    try:
        values = value_types(model).values()
    except Exception:  # noqa: BLE001 - shapes only refine the estimate
        values = [*model.graph.input, *model.graph.value_info, *model.graph.output]
    return {v.name: [fixed_size(d) for d in v.type.tensor_type.shape.dim] for v in values}
