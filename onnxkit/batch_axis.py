"""Models that take their batch on axis 1, as PyTorch's seq-first layers export (`[seq, batch, features]`).

nn.LSTM, nn.GRU, nn.RNN, nn.TransformerEncoder and nn.MultiheadAttention default to `batch_first=False`; onnxkit's
data holds one example per row (axis 0). `seq_first` tells such a model from the dims its inputs and outputs
declare: one symbolic dim at axis 1 of inputs (never at axis 0), shared with the outputs, and either named as a
batch (`batch`, `N`, `B`, `bs`) or the first axis of an output (a pooled `[batch, classes]`). Training and
evaluation run `rows_first(model)`, the graph with a Transpose of axes 0 and 1 at each such input and output, and
training writes its weights back into `as_exported(...)`, the graph as exported; the runtime transposes the arrays it
feeds and reads (`transposed`). A model whose axes cannot be told so (unnamed `dynamic_axes`) runs as it is, and
`AXES_HINT` says how to export it.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from onnxkit.dims import Dim, dims_of

if TYPE_CHECKING:
    import onnx

BATCH_NAME = re.compile(r"batch|^(n|b|bs|bsz)$", re.IGNORECASE)
ROWS_FIRST = "onnxkit.rows_first/"  # the prefix of the Transposes `rows_first` adds, and of the values they feed
SEQ_FIRST = "onnxkit.seq_first/"  # and of those `as_exported` adds back where other nodes came between
KEPT = "onnxkit.batch_axis/"  # the prefix of those two kinds kept in a trained model
AXES_HINT = ("if the model takes [seq, batch, ...] (PyTorch's batch_first=False), export it with batch_first=True or "
             "name its axes, e.g. dynamic_axes={'x': {0: 'seq', 1: 'batch'}, 'y': {0: 'batch'}}")


@dataclass(frozen=True)
class SeqFirst:
    """The batch dim's name, and the inputs and outputs that hold it on axis 1 (the other outputs on axis 0)."""

    batch: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    input_dims: tuple[tuple[Dim, ...], ...]  # the declared dims of `inputs`

    def describe(self) -> str:
        """'x [seq, batch, 8]' for each input that takes the batch on axis 1."""
        return ", ".join(f"{name} [{', '.join(str(d) for d in dims)}]" for name, dims in zip(self.inputs,
                                                                                          self.input_dims, strict=True))


def seq_first(inputs: Mapping[str, Sequence[Dim]], outputs: Mapping[str, Sequence[Dim]]) -> SeqFirst | None:
    """The layout of a model whose inputs (by name, their declared dims) take the batch on axis 1; None for one
    batched on axis 0, or whose batch axis its dims do not tell."""
    inputs = {name: tuple(shape) for name, shape in inputs.items()}
    outputs = {name: tuple(shape) for name, shape in outputs.items()}
    firsts = {shape[0] for shape in inputs.values() if shape}
    seconds = {shape[1] for shape in inputs.values() if len(shape) > 1 and isinstance(shape[1], str) and shape[1]}
    told = [dim for dim in seconds - firsts
            if any(dim in shape[:2] for shape in outputs.values())
            and (BATCH_NAME.search(dim) or any(shape[:1] == (dim,) for shape in outputs.values()))]
    if len(told) != 1:
        return None
    batch = told[0]
    if any(batch in shape[2:] for shape in [*inputs.values(), *outputs.values()]):
        return None
    held = {name: tuple(shape) for name, shape in inputs.items() if shape[1:2] == (batch,)}
    return SeqFirst(batch, tuple(held), tuple(n for n, shape in outputs.items() if shape[1:2] == (batch,)),
                    tuple(held.values()))


def swapped(shape: Sequence[Any]) -> tuple[Any, ...]:
    """`shape` with its first two axes swapped."""
    return (shape[1], shape[0], *shape[2:])


def transposed(array: np.ndarray) -> np.ndarray:
    """`array` with its first two axes swapped, contiguous (as a session run takes it)."""
    return np.ascontiguousarray(np.swapaxes(array, 0, 1))


def layout_of(model: onnx.ModelProto) -> SeqFirst | None:
    """`seq_first` of `model`'s graph inputs (less initializers) and outputs."""
    initialized = {t.name for t in model.graph.initializer}
    return seq_first({v.name: dims_of(v.type) or () for v in model.graph.input if v.name not in initialized},
                     {v.name: dims_of(v.type) or () for v in model.graph.output})


def rows_first(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` taking and giving rows on axis 0: a seq-first model (`layout_of`) with a Transpose of axes 0 and 1
    after each such input and before each such output; any other model as it is."""
    layout = layout_of(model)
    return model if layout is None else _transposed_at(model, layout.inputs, layout.outputs, ROWS_FIRST)


def as_exported(model: onnx.ModelProto) -> onnx.ModelProto:
    """`rows_first`'s graph (trained, nodes added at its inputs or outputs or not) in the layout it was exported in:
    Transposes back at those inputs and outputs, each pair that meets one of `rows_first`'s taken out. A model
    without them as it is."""
    from onnxkit.graph_walks import readers  # it imports onnx, which the runtime's import of this module leaves out

    marked = [node for node in model.graph.node if _mark(node) == ROWS_FIRST]
    if not marked:
        return model
    inputs = [node.output[0].removeprefix(ROWS_FIRST) for node in marked if node.output[0].startswith(ROWS_FIRST)]
    outputs = [node.input[0].removeprefix(ROWS_FIRST) for node in marked if node.input[0].startswith(ROWS_FIRST)]
    wrapped = _transposed_at(model, inputs, outputs, SEQ_FIRST)
    graph = wrapped.graph
    read_by = readers(graph.node)
    graph_outputs = {value.name for value in graph.output}
    dropped, renames = set(), {}
    for first in graph.node:  # a Transpose of the one pair feeding only the other: both go
        after = read_by.get(first.output[0], [])
        if len(after) != 1 or first.output[0] in graph_outputs or {_mark(first), _mark(after[0])} != {
                ROWS_FIRST, SEQ_FIRST}:
            continue
        second = after[0]
        dropped |= {first.name, second.name}
        if second.output[0] in graph_outputs:  # the value before the pair takes the output's name
            renames[first.input[0]] = second.output[0]
        else:
            renames[second.output[0]] = first.input[0]
    kept = [node for node in graph.node if node.name not in dropped]
    del graph.node[:]
    graph.node.extend(kept)
    _rename(graph, renames)
    # the Transposes kept (nodes came between a pair) take names of their own, so a later `rows_first` adds its again
    taken = {name for node in graph.node for name in (node.name, *node.output)}
    for node in graph.node:
        mark = _mark(node)
        if mark:
            name = _fresh(KEPT + node.name.removeprefix(mark), taken)
            if node.output[0].startswith(mark):
                _rename(graph, {node.output[0]: name})
            node.name = name
    return wrapped


def _fresh(base: str, taken: set[str]) -> str:
    """`base`, else `base_2`, `base_3`, ...: the first not in `taken`, which it joins."""
    name = next(n for n in itertools.chain([base], (f"{base}_{i}" for i in itertools.count(2))) if n not in taken)
    taken.add(name)
    return name


def _mark(node: onnx.NodeProto) -> str | None:
    """Which of the two kinds of Transpose this module adds `node` is, if either."""
    return next((mark for mark in (ROWS_FIRST, SEQ_FIRST) if node.name.startswith(mark)), None)


def _transposed_at(model: onnx.ModelProto, inputs: Sequence[str], outputs: Sequence[str],
                   mark: str) -> onnx.ModelProto:
    """A copy of `model` with a Transpose of axes 0 and 1 after each graph input in `inputs` and before each graph
    output in `outputs`, their declared dims swapped; the Transposes are named `mark` + the name, and so is the
    value each one feeds or reads inside the graph."""
    import onnx
    from onnx import helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    inner = {name: mark + name for name in (*inputs, *outputs)}
    _rename(graph, inner)
    _swap_dims(graph.input, inputs)
    _swap_dims(graph.output, outputs)
    ranks = {value.name: len(value.type.tensor_type.shape.dim) for value in [*graph.input, *graph.output]}

    def swap(source: str, target: str, name: str) -> onnx.NodeProto:
        return helper.make_node("Transpose", [source], [target], name=mark + name,
                                perm=list(swapped(range(ranks[name]))))

    nodes = [swap(name, inner[name], name) for name in inputs] + list(graph.node)
    nodes += [swap(inner[name], name, name) for name in outputs]
    del graph.node[:]
    graph.node.extend(nodes)
    return out


def _rename(graph: onnx.GraphProto, names: Mapping[str, str]) -> None:
    """Every node's inputs and outputs (subgraphs' too) and value_info entries renamed by `names`, in place."""
    from onnxkit.graph_walks import every_node

    for node in every_node(graph):
        node.input[:] = [names.get(name, name) for name in node.input]
        node.output[:] = [names.get(name, name) for name in node.output]
    for value in graph.value_info:
        value.name = names.get(value.name, value.name)


def _swap_dims(values: Any, names: Sequence[str]) -> None:
    """Swap the first two declared dims of the values in `values` named in `names`, in place."""
    import onnx

    for value in values:
        if value.name in names:
            dims = value.type.tensor_type.shape.dim
            first, second = onnx.TensorShapeProto.Dimension(), onnx.TensorShapeProto.Dimension()
            first.CopyFrom(dims[1])
            second.CopyFrom(dims[0])
            dims[0].CopyFrom(first)
            dims[1].CopyFrom(second)
