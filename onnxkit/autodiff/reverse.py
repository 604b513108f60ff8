"""Reverse-mode autodiff over an ONNX graph: forward graph + parameters + scalar loss ->
one graph that also outputs each parameter's gradient, in default-domain ONNX ops only.

1. Forward sweep: a value is *active* when it is a floating-point tensor that depends on
   a parameter through differentiable ops (Shape, Equal, Cast to int, ... cut the path).
2. Only active nodes that the loss depends on are differentiated, in reverse order; each
   op's rule (`onnxkit.autodiff.rules`) turns its outputs' gradients into its inputs'. A
   decomposed op (`composites`: exact GELU) is differentiated as the op it spells; an LSTM
   or GRU (`recurrent`) is first replaced by its unrolled form, an Attention (`functions`) by
   the function body ONNX defines for it, a tensor split into a sequence (`sequences`) by a
   Split. A LayerNormalization is asked for the Mean and InvStdDev it computes anyway, so its
   rule does not compute them again.
3. Gradients reaching a value along several paths are added up.

The result keeps every forward node and output, so a training graph can still emit its
loss and updated buffers; gradients come out as `gradient_name(param)`.
"""

from __future__ import annotations

from collections.abc import Sequence

import onnx
from onnx import TensorProto, helper

from onnxkit.autodiff import functions, recurrent
from onnxkit.autodiff.builder import Backward, Graph
from onnxkit.autodiff.composites import collapse
from onnxkit.autodiff.rules import NON_DIFFERENTIABLE, RULES
from onnxkit.autodiff.sequences import sequence_splits
from onnxkit.errors import OnnxkitError, suggest
from onnxkit.graph_walks import (
    FLOAT_TYPES,
    ancestors,
    constant_values,
    node_label,
    node_reads,
    opset,
    readers,
    transpose_perm,
    value_types,
)

MIN_OPSET = 13
REPLACED = recurrent.RECURRENT | functions.FUNCTIONS  # ops replaced by standard ops before differentiation


class NoGradient(OnnxkitError):
    """add_gradients' refusal of a node on the gradient path; `what` names the node and why, the message adds
    what to do (the training loop says it in its own terms: freeze the parameters before it)."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what}; leave the parameters before it out of wrt")
        self.what = what


def gradient_name(param: str) -> str:
    """The graph output that carries the gradient of `param`."""
    return f"{param}.grad"


def active_nodes(
    model: onnx.ModelProto, wrt: Sequence[str], loss: str, types: dict[str, onnx.ValueInfoProto]
) -> tuple[list[tuple[int, onnx.NodeProto]], set[str]]:
    """The nodes on a differentiable path from `wrt` to `loss`, and the active values."""
    active = set(wrt)
    for node in model.graph.node:
        if node.op_type in NON_DIFFERENTIABLE or not active.intersection(node_reads(node)):
            continue
        active.update(o for o in node.output if o and _is_float(types, o))
    needed = ancestors(model, loss)
    nodes = [
        (i, node)
        for i, node in enumerate(model.graph.node)
        if active.intersection(node_reads(node)) and any(o in active and o in needed for o in node.output)
    ]
    return nodes, active & needed


def _is_float(types: dict[str, onnx.ValueInfoProto], name: str) -> bool:
    """Whether value `name` holds floats: a float tensor, or a sequence or optional of them (a Loop's
    scan output); unknown types are assumed float."""
    vi = types.get(name)
    if vi is None:
        return True
    kind = vi.type
    while kind.HasField("sequence_type") or kind.HasField("optional_type"):
        kind = kind.sequence_type.elem_type if kind.HasField("sequence_type") else kind.optional_type.elem_type
    if kind.HasField("tensor_type"):
        return kind.tensor_type.elem_type in FLOAT_TYPES
    return kind.WhichOneof("value") is None


def missing_rules(model: onnx.ModelProto, wrt: Sequence[str], loss: str) -> list[tuple[str, str]]:
    """(op type, node label) of every node on the gradient path that has no rule."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    model = copy
    types = _without_sequence_splits(model)
    nodes, _ = active_nodes(model, wrt, loss, types)
    version = opset(model)
    missing = [(node.op_type, node_label(node, i)) for i, node in nodes
               if _rule_key(node) not in RULES and _rule_key(node) not in REPLACED]
    missing += [(f"{node.op_type} {reason}", node_label(node, i)) for i, node in nodes
                if _rule_key(node) in REPLACED and (reason := _unsupported(node, types, version))]
    return missing


def _without_sequence_splits(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    """Rewrite `model`'s tensors split into sequences as Splits, in place (`sequences`); its value types."""
    types = value_types(model)
    if any(n.op_type == "SplitToSequence" for n in model.graph.node) and sequence_splits(
            model, types, constant_values(model)):  # constants only then: folding them takes time on a large graph
        types = value_types(model)
    return types


def _rule_key(node: onnx.NodeProto) -> str:
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"


def _unsupported(node: onnx.NodeProto, types: dict[str, onnx.ValueInfoProto], version: int) -> str | None:
    """Why an op of REPLACED cannot be replaced (unrolled, or inlined from its function body), or None."""
    if node.op_type in recurrent.RECURRENT:
        return recurrent.unsupported(node, types)
    return functions.unsupported(node, types, version)


def _replace(model: onnx.ModelProto, nodes: list[tuple[int, onnx.NodeProto]], types: dict[str, onnx.ValueInfoProto],
             version: int) -> bool:
    """Replace the REPLACED ops among `nodes` by standard ops, in place; whether there were any."""
    replaced = [(index, node) for index, node in nodes if _rule_key(node) in REPLACED]
    for index, node in replaced:
        reason = _unsupported(node, types, version)
        if reason:
            raise NoGradient(f"cannot differentiate {node.op_type} (node {node_label(node, index)}) {reason}")
    for index, node in reversed(replaced):  # from the last: a replacement moves the nodes after it
        if node.op_type in recurrent.RECURRENT:
            recurrent.unroll(model, [index], types)
        else:
            functions.inline(model, index, types, version)
    return bool(replaced)


def add_gradients(model: onnx.ModelProto, wrt: Sequence[str], loss: str) -> onnx.ModelProto:
    """A copy of `model` that also outputs d`loss`/d`p` for every `p` in `wrt` (graph inputs or
    initializers; named `gradient_name(p)`, shaped like `p`; a name given twice gets one). A `loss` of
    several values is differentiated as their sum (the backward pass starts from ones, as torch's
    `loss.backward(torch.ones_like(loss))`)."""
    wrt = _checked_arguments(model, wrt, loss)
    version = opset(model)
    if version < MIN_OPSET:
        raise OnnxkitError(
            f"the model uses opset {version}; gradients need opset {MIN_OPSET} or newer: convert it with "
            "onnx.version_converter.convert_version(model, 17)"
        )
    result = onnx.ModelProto()
    result.CopyFrom(model)
    model = result
    types = _without_sequence_splits(model)
    nodes, active = active_nodes(model, wrt, loss, types)
    while _replace(model, nodes, types, version):  # differentiated through their standard-op form (which may
        types = value_types(model)  # hold more such ops: a cross-entropy's NegativeLogLikelihoodLoss)
        nodes, active = active_nodes(model, wrt, loss, types)
    if loss not in active:
        raise OnnxkitError(f"the loss {loss!r} does not depend on any of the parameters to train")
    for index, node in nodes:
        if _rule_key(node) not in RULES:
            raise NoGradient(f"op {_rule_key(node)} (node {node_label(node, index)}) has no gradient rule")
    constants = constant_values(model)
    nodes = collapse(model, nodes, constants)
    graph = Graph(types, version, constants)
    graph.readers = readers(model.graph.node)
    for node in model.graph.node:  # the forward graph's transposes, which the backward's may undo
        if node.op_type == "Transpose" and node.input and node.input[0]:
            perm = transpose_perm(node)
            rank = len(graph.dims(node.input[0]) or [])
            if perm is not None or rank:
                graph.transposed[node.output[0]] = (node.input[0], perm or list(reversed(range(rank))))
    _save_statistics(nodes, graph)
    dtype = graph.dtype(loss)
    start = graph.const(1.0, dtype) if graph.dims(loss) == [] else graph.filled(graph.shape(loss), 1, dtype)
    grads: dict[str, list[str]] = {loss: [start]}
    for index, node in reversed(nodes):
        dys = [_total(graph, grads.pop(o, [])) if o in active else None for o in node.output]
        if not any(dys):
            continue
        wants = [name in active for name in node.input]
        try:
            results = RULES[_rule_key(node)](Backward(graph, node, dys, wants))
        except ValueError as e:
            raise NoGradient(f"cannot differentiate {node.op_type} (node {node_label(node, index)}): {e}") from e
        for name, grad, want in zip(node.input, results, wants, strict=False):
            if grad is not None and want:
                grads.setdefault(name, []).append(grad)
    outputs, renamed = [], {}
    read = {name for n in graph.nodes for name in n.input}
    for p in wrt:
        total = _total(graph, grads.get(p, []))
        out = gradient_name(p)
        if total is None:  # not on the loss's path: a zero gradient
            graph.nodes.append(helper.make_node("Identity", [graph.filled(graph.shape(p), 0, graph.dtype(p))], [out]))
        elif total in renamed:  # two parameters with one gradient value (e.g. both sides of an Add)
            graph.nodes.append(helper.make_node("Identity", [renamed[total]], [out]))
        elif total in graph.made and graph.made[total].output[0] == total and total not in read:
            graph.made[total].output[0] = out  # read by no other node: the node making it writes the output
            renamed[total] = out
        else:
            graph.nodes.append(helper.make_node("Identity", [total], [out]))
        outputs.append(helper.make_tensor_value_info(out, graph.dtype(p), graph.dims(p)))
    result.graph.node.extend(_read(graph.nodes, {o.name for o in outputs}))
    result.graph.initializer.extend(graph.initializers)
    result.graph.output.extend(outputs)
    return result


def _read(nodes: list[onnx.NodeProto], outputs: set[str]) -> list[onnx.NodeProto]:
    """The backward `nodes` that the gradient `outputs` need, in order: a transpose that a later one
    was composed past is read by nothing."""
    wanted, kept = set(outputs), []
    for node in reversed(nodes):
        if wanted.intersection(node.output):
            kept.append(node)
            wanted.update(node.input)
    return kept[::-1]


def _checked_arguments(model: onnx.ModelProto, wrt: Sequence[str], loss: str) -> list[str]:
    """`wrt` without repeats; TypeError or OnnxkitError for a model, parameter or loss that is not there."""
    if not isinstance(model, onnx.ModelProto):
        raise TypeError(f"model must be an onnx.ModelProto (onnx.load it first), not {type(model).__name__}")
    if isinstance(wrt, str | bytes) or not all(isinstance(p, str) for p in wrt):
        raise TypeError(f"wrt must be a list of parameter names, such as [{wrt!r}], not {type(wrt).__name__}")
    given = {v.name for v in model.graph.input} | {t.name for t in model.graph.initializer}
    unknown = [p for p in wrt if p not in given]
    if unknown:
        raise OnnxkitError(f"no graph input or initializer {unknown[0]!r} to differentiate with respect to."
                           f"{suggest(unknown[0], given)}")
    made = given | {o for node in model.graph.node for o in node.output}
    if loss not in made:
        raise OnnxkitError(f"no value {loss!r} in the graph to take as the loss.{suggest(loss, made)}")
    taken = next((p for p in wrt if gradient_name(p) in made), None)
    if taken is not None:
        raise OnnxkitError(f"the model already has a value named {gradient_name(taken)!r}, the name of {taken!r}'s "
                           "gradient output; rename that value (a model with gradients is differentiated from the "
                           "model without them)")
    return list(dict.fromkeys(wrt))


def _save_statistics(nodes: list[tuple[int, onnx.NodeProto]], graph: Graph) -> None:
    """Give each LayerNormalization its optional Mean and InvStdDev outputs (in place; typed in
    `graph.types`): onnxruntime's kernel computes them anyway, and the rule then skips two passes
    and two reductions over x to recompute them."""
    for _, node in nodes:
        if node.op_type != "LayerNormalization" or len(node.output) > 2:
            continue
        x = graph.dims(node.input[0])
        if x is None:
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), -1) % len(x)
        stash = next((a.i for a in node.attribute if a.name == "stash_type"), TensorProto.FLOAT)
        if len(node.output) < 2:
            node.output.append(f"{node.output[0]}.mean")
        node.output.append(f"{node.output[0]}.invstd")
        stats = x[:axis] + [1] * (len(x) - axis)
        for name in node.output[1:]:
            if name:
                graph.types.setdefault(name, helper.make_tensor_value_info(name, stash, stats))


def _total(graph: Graph, parts: list[str]) -> str | None:
    return graph.add_up(parts) if parts else None
