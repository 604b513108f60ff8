"""The training objective, built once for every backend: the loss on the chosen output, an
optional L2 term, and the 1/accumulation scale of a micro-batch's share of one step."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import onnx
from onnx import TensorProto, helper

from onnxkit.graph_walks import opset, probability_logits, sigmoid_pair_logit
from onnxkit.train.losses import Loss

PREFIX = "onnxkit.objective"


@dataclass(frozen=True)
class Objective:
    """`model` computes `loss` (the data loss, a batch mean: what is reported) and `total`
    (what gradients are taken of; the same name when there is nothing to add)."""

    model: onnx.ModelProto
    loss: str
    total: str


def build_objective(
    form: onnx.ModelProto,
    loss: Loss,
    output: str,
    labels: str,
    *,
    l2: float = 0.0,
    l2_params: Sequence[str] = (),
    accumulation: int = 1,
) -> Objective:
    """The training form `form` with `loss` on `output` (labels fed as input `labels`),
    plus `l2/2 * sum |p|^2` over `l2_params` and a 1/`accumulation` scale."""
    model = onnx.ModelProto()
    model.CopyFrom(form)
    graph = model.graph
    vi = next(o for o in graph.output if o.name == output)
    graph.input.append(loss.labels_input(labels, vi))
    rank, activation = len(vi.type.tensor_type.shape.dim), loss.reads_logits_of
    logits = probability_logits(graph, output, rank, opset(model), activation, loss.axis) if activation else None
    pair = sigmoid_pair_logit(graph, output) if activation == "Softmax" and logits is None else None
    if pair:  # [1 - Sigmoid(z), Sigmoid(z)] is the Softmax of [0, z]
        graph.node.extend([helper.make_node("Sub", [pair, pair], [f"{PREFIX}.zero"], name="logits/zero"),
                           helper.make_node("Concat", [f"{PREFIX}.zero", pair], [f"{PREFIX}.logits"], name="logits",
                                            axis=-1)])
        logits = f"{PREFIX}.logits"
    data_loss = loss.add_to_graph(graph, output, labels, logits)
    total = data_loss
    if l2 and l2_params:
        total = _add_l2(graph, total, l2_params, l2)
    if accumulation > 1:
        graph.initializer.append(helper.make_tensor(f"{PREFIX}.share", TensorProto.FLOAT, [], [1.0 / accumulation]))
        graph.node.append(helper.make_node("Mul", [total, f"{PREFIX}.share"], [f"{PREFIX}.step"], name="loss/share"))
        total = f"{PREFIX}.step"
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(data_loss, TensorProto.FLOAT, []))
    if total != data_loss:
        graph.output.append(helper.make_tensor_value_info(total, TensorProto.FLOAT, []))
    return Objective(model, data_loss, total)


def _add_l2(graph: onnx.GraphProto, loss: str, params: Sequence[str], decay: float) -> str:
    """loss + decay/2 * sum of squares of `params`."""
    parts = []
    for i, name in enumerate(params):  # Mul + ReduceSum: ORT-training lacks ReduceSumSquare's gradient
        parts.append(f"{PREFIX}.l2.{i}")
        graph.node.append(helper.make_node("Mul", [name, name], [f"{parts[-1]}.square"], name=f"l2/{i}/square"))
        graph.node.append(helper.make_node("ReduceSum", [f"{parts[-1]}.square"], [parts[-1]], name=f"l2/{i}",
                                           keepdims=0))
    squares = parts[0]
    for i, part in enumerate(parts[1:]):  # a chain of Adds: ORT-training has no Sum gradient either
        graph.node.append(helper.make_node("Add", [squares, part], [f"{PREFIX}.l2.acc{i}"], name=f"l2/acc{i}"))
        squares = f"{PREFIX}.l2.acc{i}"
    graph.initializer.append(helper.make_tensor(f"{PREFIX}.half_decay", TensorProto.FLOAT, [], [decay / 2]))
    graph.node.append(helper.make_node("Mul", [squares, f"{PREFIX}.half_decay"], [f"{PREFIX}.l2"], name="l2/term"))
    graph.node.append(helper.make_node("Add", [loss, f"{PREFIX}.l2"], [f"{PREFIX}.total"], name="loss/total"))
    return f"{PREFIX}.total"
