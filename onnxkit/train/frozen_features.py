"""Train a head on cached features: run the frozen part of a model once, not every epoch.

When every trained parameter sits after a frozen part of the graph (a new head
on a pretrained encoder), each epoch would push the same examples through the
same frozen layers again. `cut` splits the graph where the trained part
begins; `features` runs the frozen part once per split, in inference form; the
loop then trains only the small graph after the cut on those arrays. The cut
is taken only where the cached arrays have a fixed size per example (e.g. a
pooled [batch, 384] embedding, not a [batch, seq, 384] sequence), and where the
frozen part does more than elementwise arithmetic (a mere rescaling of the inputs,
such as the standardisation `--standardize` puts in front, costs less to rerun).

Dropout nodes just before the cut move into the trained part, so the head
still sees fresh dropout masks; dropout inside the frozen part is off, as it
is when a frozen encoder runs in inference mode.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from onnxkit.data import Split, model_inputs
from onnxkit.dims import dim_of, fixed_size
from onnxkit.graph_walks import ancestors, needed_nodes, used_initializers

MAX_BYTES = 2 << 30  # cache at most 2 GiB of features; beyond that, train end to end
# a frozen part made of these alone (a rescaling such as --standardize's, the imputation's Where(IsNaN(x), median, x))
# is not worth caching
ELEMENTWISE = frozenset({"Add", "Sub", "Mul", "Div", "Cast", "Identity", "IsNaN", "Where"})
# nor one that only moves the input's values (PyTorch's Conv1d over [batch, seq, features] starts with a
# Transpose, with nothing frozen in front of it) and the shape arithmetic that goes with it
LAYOUT = frozenset({"Transpose", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Shape", "Constant", "Concat"})


@dataclass
class FrozenCut:
    prefix: onnx.ModelProto  # the model's inputs -> `boundary` (frozen, inference form)
    head: onnx.ModelProto  # `boundary` -> the trained output
    boundary: list[str]


def cut(
    model: onnx.ModelProto,
    output: str,
    trained: Iterable[str],
    types: dict[str, onnx.ValueInfoProto],
    examples: int,
) -> FrozenCut | None:
    """Split `model` before the first node that depends on a `trained` tensor (parameters
    and updated buffers); None when nothing is frozen in front of them, the frozen part is
    only elementwise arithmetic or layout (`ELEMENTWISE`, `LAYOUT`), or the features would not
    fit in memory (`examples` rows of them)."""
    graph = model.graph
    nodes = [node for _, node in needed_nodes(model, output)]
    live, head = set(trained), []
    for node in nodes:  # graph nodes are topologically sorted
        if live & set(node.input):
            head.append(node)
            live.update(node.output)
    if not head:
        return None
    head_ids = {id(n) for n in head}
    for node in reversed(nodes):  # dropout feeding only the head trains with it
        if id(node) not in head_ids and node.op_type == "Dropout" and _only_feeds(node, nodes, head_ids):
            head_ids.add(id(node))
    initializers = {t.name for t in graph.initializer}
    static = _static_values(nodes, initializers)  # constants the head needs are copied into it
    wanted = ancestors(model, *(i for n in nodes if id(n) in head_ids for i in n.input if i in static))
    head = [n for n in nodes if id(n) in head_ids or (n.output[0] in wanted and n.output[0] in static)]
    made = {o for n in head for o in n.output}
    boundary = list(dict.fromkeys(i for n in head for i in n.input if i and i not in made and i not in initializers))
    graph_inputs = {v.name for v in graph.input}
    if all(name in graph_inputs for name in boundary):
        return None  # nothing frozen in front of the trained part
    feeding = ancestors(model, *boundary)
    prefix_nodes = [n for n in graph.node if any(o in feeding for o in n.output)]
    if all(n.op_type in ELEMENTWISE | LAYOUT for n in prefix_nodes):
        return None  # e.g. --standardize's (x - mean) / std, a Transpose: cheaper to rerun than to cache
    infos = [types.get(name) for name in boundary]
    firsts = [dim_of(v.type.tensor_type.shape.dim[0]) for v in graph.input
              if v.type.tensor_type.HasField("shape") and v.type.tensor_type.shape.dim]
    batch = {d for d in firsts if isinstance(d, str)}
    if any(vi is None or not _fixed_per_example(vi, batch) for vi in infos):
        return None  # e.g. a shape computed from the input (Concat(Shape(x)[0], ...)): not one row per example
    if examples * sum(_bytes_per_example(vi) for vi in infos) > MAX_BYTES:
        return None
    cached = [_batched(vi) for vi in infos]
    outputs = {o.name: o for o in graph.output}
    head_model = _model_like(model, cached, head, [outputs.get(output) or types[output]])
    inputs = [v for v in graph.input if v.name not in initializers and v.name in feeding]
    prefix = _model_like(model, inputs, prefix_nodes, cached)
    return FrozenCut(prefix, head_model, boundary)


def features(prefix: onnx.ModelProto, split: Split, run: Callable[[Mapping[str, np.ndarray]], list[np.ndarray]],
             batch_size: int = 256) -> Split:
    """`split` pushed through the frozen `prefix` by `run` (a backend's `inference`): a split of
    its output arrays, same labels."""
    names = [o.name for o in prefix.graph.output]
    bound = split.feeds_for(model_inputs(prefix))
    chunks = [run(feeds) for feeds, _ in bound.batches(batch_size)]
    if not chunks:  # an empty split (no validation rows): no rows of each output's per-example shape
        return Split(split.name, {o.name: _no_rows(o) for o in prefix.graph.output}, split.labels)
    return Split(split.name, {name: np.concatenate([c[i] for c in chunks]) for i, name in enumerate(names)},
                 split.labels)


def _no_rows(vi: onnx.ValueInfoProto) -> np.ndarray:
    """An empty array of `vi`'s type and per-example shape (fixed: `_fixed_per_example`)."""
    t = vi.type.tensor_type
    return np.zeros((0, *(d.dim_value for d in t.shape.dim[1:])), helper.tensor_dtype_to_np_dtype(t.elem_type))


def _only_feeds(node: onnx.NodeProto, nodes: list[onnx.NodeProto], head_ids: set[int]) -> bool:
    consumers = [n for n in nodes if node.output[0] in n.input]
    return bool(consumers) and all(id(n) in head_ids for n in consumers)


def _static_values(nodes: list[onnx.NodeProto], initializers: set[str]) -> set[str]:
    """Values computed from initializers and constants alone (the same for every example)."""
    static = set(initializers)
    for node in nodes:
        if all(not i or i in static for i in node.input):
            static.update(node.output)
    return static


def _fixed_per_example(vi: onnx.ValueInfoProto, batch: set[str]) -> bool:
    """One row per example (its first dim is the inputs' named batch dim), each of a fixed size."""
    t = vi.type.tensor_type
    return (t.HasField("shape") and len(t.shape.dim) >= 1 and dim_of(t.shape.dim[0]) in batch
            and all(fixed_size(d) is not None for d in t.shape.dim[1:]))


def _bytes_per_example(vi: onnx.ValueInfoProto) -> int:
    t = vi.type.tensor_type
    size = np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type)).itemsize
    return size * int(np.prod([d.dim_value for d in t.shape.dim[1:]], dtype=np.int64))


def _batched(vi: onnx.ValueInfoProto) -> onnx.ValueInfoProto:
    t = vi.type.tensor_type
    return helper.make_tensor_value_info(vi.name, t.elem_type, ["batch", *(d.dim_value for d in t.shape.dim[1:])])


def _model_like(
    model: onnx.ModelProto,
    inputs: list[onnx.ValueInfoProto],
    nodes: list[onnx.NodeProto],
    outputs: list[onnx.ValueInfoProto],
) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, model.graph.name, inputs, outputs, used_initializers(model, nodes))
    out = helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version)
    out.metadata_props.extend(model.metadata_props)
    return out
