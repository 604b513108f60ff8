"""Walks over an ONNX graph that several layers share: what a value depends on, which nodes
and initializers a value needs, and every value's inferred type."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from onnxkit.errors import OnnxkitError


def node_label(node: onnx.NodeProto, index: int) -> str:
    """How errors name a node: its name, or its position and first output."""
    return repr(node.name) if node.name else f"#{index} (output {node.output[0]!r})"


def ancestors(model: onnx.ModelProto, *names: str) -> set[str]:
    """Every value name `names` depend on (including themselves)."""
    producer = {o: node for node in model.graph.node for o in node.output}
    seen, stack = set(), list(names)
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in producer:
            stack.extend(i for i in producer[name].input if i)
    return seen


def needed_nodes(model: onnx.ModelProto, *outputs: str) -> list[tuple[int, onnx.NodeProto]]:
    """The nodes (with their positions) that computing `outputs` runs."""
    needed = ancestors(model, *outputs)
    return [(i, node) for i, node in enumerate(model.graph.node) if any(o in needed for o in node.output)]


def used_initializers(model: onnx.ModelProto, nodes: Iterable[onnx.NodeProto]) -> list[onnx.TensorProto]:
    """The initializers that `nodes` read, in the model's order."""
    used = {name for node in nodes for name in node.input}
    return [t for t in model.graph.initializer if t.name in used]


def initializers_to_inputs(model: onnx.ModelProto, names: Iterable[str]) -> dict[str, np.ndarray]:
    """Turn the initializers `names` of `model` into graph inputs (in place); returns their values."""
    wanted, values, kept = set(names), {}, []
    for t in model.graph.initializer:
        if t.name in wanted:
            values[t.name] = numpy_helper.to_array(t)
            model.graph.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
        else:
            kept.append(t)
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    return values


def _skeleton(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` without the data of large weights (enough for shape inference)."""
    skeleton = onnx.ModelProto()
    skeleton.ir_version = model.ir_version
    skeleton.opset_import.extend(model.opset_import)
    graph = skeleton.graph
    for field in ("node", "input", "output", "value_info"):
        getattr(graph, field).extend(getattr(model.graph, field))
    for t in model.graph.initializer:
        if t.data_type == TensorProto.FLOAT and np.prod(t.dims, dtype=np.int64) >= 64:
            graph.initializer.add(name=t.name, data_type=t.data_type, dims=t.dims)
        else:
            graph.initializer.append(t)
    return skeleton


# Ops whose first output has its first input's type and shape, for the few that onnx's shape
# inference leaves untyped (GroupNormalization-21 in onnx 1.2x), so inference can go on past them.
SAME_SHAPE = frozenset({"GroupNormalization", "InstanceNormalization", "LayerNormalization", "BatchNormalization"})


def value_types(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    """Every value's inferred type and shape, by name (initializers included)."""
    skeleton = _skeleton(model)
    for _ in range(8):  # each pass types the outputs of SAME_SHAPE ops inference left untyped
        try:
            inferred = onnx.shape_inference.infer_shapes(skeleton)
        except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as e:
            raise OnnxkitError(f"shape inference failed on the model ({e}); is it a valid ONNX model?") from e
        known = {v.name: v for v in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output)}
        hints = [_same_type(known[n.input[0]], n.output[0]) for n in inferred.graph.node
                 if n.op_type in SAME_SHAPE and n.input[0] in known and not _has_shape(known.get(n.output[0]))]
        if not hints:
            break
        skeleton.graph.value_info.extend(hints)
    g = inferred.graph
    types = {
        t.name: onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in model.graph.initializer
    }
    types.update({v.name: v for v in (*g.input, *g.value_info, *g.output)})
    return types


def _has_shape(vi: onnx.ValueInfoProto | None) -> bool:
    return vi is not None and vi.type.tensor_type.HasField("shape")


def _same_type(vi: onnx.ValueInfoProto, name: str) -> onnx.ValueInfoProto:
    copy = onnx.ValueInfoProto()
    copy.CopyFrom(vi)
    copy.name = name
    return copy


def opset(model: onnx.ModelProto) -> int:
    """The model's default-domain opset version (0 when it imports none)."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
