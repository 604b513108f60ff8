"""A tensor split into a sequence and read back piece by piece, rewritten as one Split.

PyTorch's dynamo exporter writes `torch.chunk` / `torch.split` as `SplitToSequence` followed by a
`SequenceAt` at a constant position for each piece used (its optimizer turns that into a Split, but
`optimize=False`, the export that keeps BatchNorm a node, leaves it: ShuffleNet's channel split).
Sequences have no gradient rules; the Split they spell has one. Only the pattern whose pieces are all
read at constant positions, with sizes known before run time, is rewritten: any other sequence is left
for `add_gradients` to refuse by name.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper


def sequence_splits(model: onnx.ModelProto, types: Mapping[str, onnx.ValueInfoProto],
                    constants: Mapping[str, np.ndarray]) -> bool:
    """Rewrite in place each `SplitToSequence` read only by `SequenceAt`s at constant positions as a Split
    (and a Squeeze per piece read, for `keepdims=0`); whether any was."""
    graph = model.graph
    readers: dict[str, list[int]] = defaultdict(list)
    for index, node in enumerate(graph.node):
        for name in node.input:
            readers[name].append(index)
    outputs = {o.name for o in graph.output}
    rewritten = False
    for index, node in enumerate(list(graph.node)):
        if node.op_type != "SplitToSequence" or node.output[0] in outputs:
            continue
        reads = [graph.node[i] for i in readers[node.output[0]]]
        if not reads or any(r.op_type != "SequenceAt" or r.input[1] not in constants for r in reads):
            continue
        known = types.get(node.input[0])
        dims = list(known.type.tensor_type.shape.dim) if known is not None else []
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        axis += len(dims) if axis < 0 else 0
        sizes, squeezed = _sizes(node, dims[axis].dim_value if 0 <= axis < len(dims) else 0, constants)
        if sizes is None or axis < 0:
            continue
        sequence = node.output[0]
        pieces = [f"{sequence}.{k}" for k in range(len(sizes))]
        split = helper.make_node("Split", [node.input[0], f"{sequence}.sizes"], pieces, name=node.name, axis=axis)
        graph.initializer.append(numpy_helper.from_array(np.asarray(sizes, np.int64), split.input[1]))
        graph.node[index].CopyFrom(split)
        for i in readers[sequence]:
            read = graph.node[i]
            piece = pieces[int(constants[read.input[1]])]  # a negative position counts from the end, as Python's
            if squeezed:
                axes = f"{read.output[0]}.axes"
                graph.initializer.append(numpy_helper.from_array(np.asarray([axis], np.int64), axes))
                replacement = helper.make_node("Squeeze", [piece, axes], [read.output[0]], name=read.name)
            else:
                replacement = helper.make_node("Identity", [piece], [read.output[0]], name=read.name)
            graph.node[i].CopyFrom(replacement)
        rewritten = True
    return rewritten


def _sizes(node: onnx.NodeProto, length: int, constants: Mapping[str, np.ndarray]) -> tuple[list[int] | None, bool]:
    """(each piece's size along the axis, `length` long (0: unknown), or None when not known before run time;
    whether the pieces lose the axis: keepdims=0 without split sizes)."""
    split = node.input[1] if len(node.input) > 1 and node.input[1] else None
    if split is not None and split not in constants:
        return None, False
    if split is not None and np.ndim(constants[split]) == 1:
        return [int(s) for s in constants[split]], False
    if length <= 0:
        return None, False
    if split is None:
        return [1] * length, next((a.i for a in node.attribute if a.name == "keepdims"), 1) == 0
    size = int(constants[split])
    return [size] * (length // size) + ([length % size] if length % size else []), False
