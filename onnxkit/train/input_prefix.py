"""Nodes put in front of a model's inputs, with their constants stored as frozen Buffers (training leaves them as
they are): standardisation's `(x - mean) / std` and the missing values' `Where(IsNaN(x), median, x)`."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable

import numpy as np
import onnx
from onnx import helper

from onnxkit.metadata import metadata, set_metadata
from onnxkit.metadata_keys import BUFFERS_KEY

# (input, the name its nodes' output takes, the input's numpy type) -> (the nodes, their constant tensors)
NodesFor = Callable[[str, str, np.dtype], tuple[list[onnx.NodeProto], list[onnx.TensorProto]]]


def in_front_of_inputs(model: onnx.ModelProto, prefix: str, inputs: Iterable[str], nodes_for: NodesFor
                       ) -> onnx.ModelProto:
    """A copy of `model` whose `inputs` each pass first through the nodes `nodes_for` makes, which end in
    `<prefix>.<input>`, the value the model's own nodes then read; the constants are stored in the input's own
    type (a float64 or float16 input beside float32 ones was a node ONNX Runtime refused to load)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph, nodes, buffers = out.graph, [], []
    dtypes = {i.name: helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type) for i in graph.input}
    for name in inputs:
        replaced = f"{prefix}.{name}"
        for node in graph.node:
            node.input[:] = [replaced if i == name else i for i in node.input]
        made, tensors = nodes_for(name, replaced, dtypes[name])
        graph.initializer.extend(tensors)
        nodes += made
        buffers += [t.name for t in tensors]
    existing = list(graph.node)
    del graph.node[:]
    graph.node.extend([*nodes, *existing])
    add_buffers(out, buffers)
    return out


def add_buffers(model: onnx.ModelProto, names: Iterable[str]) -> None:
    """List `names` among the model's frozen Buffers (`onnxkit.buffers`)."""
    add_listed(model, BUFFERS_KEY, names)


def add_listed(model: onnx.ModelProto, key: str, names: Iterable[str]) -> None:
    """Add `names` to the JSON list the model's metadata keeps under `key` (each once, in order)."""
    known = json.loads(metadata(model).get(key, "[]"))
    set_metadata(model, {key: [*known, *(n for n in names if n not in known)]})
