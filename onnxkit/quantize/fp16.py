"""Float16 weights and compute, over the converter that ships with ONNX Runtime.

`onnxruntime.transformers.float16` keeps the model's inputs and outputs float32
(so the same data feeds both models) and leaves ops that have no float16
kernel in float32 behind Casts.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from onnxkit.graph_walks import node_reads, producers, transpose_perm
from onnxkit.metadata_keys import STANDARDIZE_PREFIX
from onnxkit.quantize.prepare import quiet_ort

# ops kept float32 behind Casts: onnxruntime 1.32's float16 AffineGrid fails at a batch of one
# ("Split ... axis 1 is not in valid range")
KEEP_FLOAT32 = frozenset({"AffineGrid"})
FLOAT16_MAX = 65504.0


def quantize_fp16(
    model: onnx.ModelProto, exclude_ops: set[str], exclude_nodes: set[str]
) -> onnx.ModelProto:
    """Convert float32 tensors to float16, keeping float32 I/O, the excluded nodes and those `beyond_float16`."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    with quiet_ort():
        converted = convert_float_to_float16(
            model,
            keep_io_types=True,
            op_block_list=sorted(set(DEFAULT_OP_BLOCK_LIST) | KEEP_FLOAT32 | exclude_ops),
            node_block_list=sorted(exclude_nodes | beyond_float16(model) | batch_transposes_into_matmul(model)),
        )
    return without_round_trips(converted)


def without_round_trips(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` (in place) with each float32 value that the converter casts to float16 and straight back
    read as it was: between two float32 nodes, and from a float32 input to one, it passed through float16
    (an input of 300,000 became inf before the float32 node that standardises it), and its Casts went."""
    producer = producers(model.graph.node)
    for node in model.graph.node:
        before = producer.get(node.input[0]) if node.op_type == "Cast" and node.input else None
        if _cast_to(node) == onnx.TensorProto.FLOAT and before is not None and \
                _cast_to(before) == onnx.TensorProto.FLOAT16:
            node.input[0] = before.input[0]
    while True:  # each pass drops the Casts nothing reads, which may leave the ones they read unread
        read = {name for node in model.graph.node for name in node_reads(node)} | {o.name for o in model.graph.output}
        dead = [n for n in model.graph.node if n.op_type == "Cast" and not read.intersection(n.output)]
        if not dead:
            return model
        for node in dead:
            model.graph.node.remove(node)


def _cast_to(node: onnx.NodeProto) -> int | None:
    return next((a.i for a in node.attribute if a.name == "to"), None) if node.op_type == "Cast" else None


def beyond_float16(model: onnx.ModelProto) -> set[str]:
    """Nodes kept float32: onnxkit's standardisation, which works on the data's raw scale, and every node
    reading a float constant past float16's range (65,504), which the converter would clip. A regression
    model's un-scaling by a target mean of 474,875 became 65,504: R² 0.94 fell to -2.4, silently."""
    large = {t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT
             and np.abs(numpy_helper.to_array(t)).max(initial=0) > FLOAT16_MAX}
    return {n.name for n in model.graph.node if n.name and (
        n.name.startswith(f"{STANDARDIZE_PREFIX}/") or large.intersection(n.input))}


def batch_transposes_into_matmul(model: onnx.ModelProto) -> set[str]:
    """Transposes kept float32 (unnamed ones named here, in place): those that move a leading axis and feed a
    MatMul. onnxruntime 1.32 fuses a float16 one into its MatMul (MatmulTransposeFusion) and crashes with a
    segmentation fault creating the session at its default optimisation level: the `[1, 0, 2]` Transpose in
    front of each attention's in-projection in a PyTorch TransformerEncoder (exported with dynamo=False)
    killed `quantize --mode fp16` with no message, and the written file would crash any default session."""
    readers = {name for n in model.graph.node if n.op_type == "MatMul" for name in n.input}
    kept = set()
    for i, node in enumerate(model.graph.node):
        perm = transpose_perm(node)
        if node.op_type != "Transpose" or not readers.intersection(node.output) or perm is None \
                or perm[:-2] == list(range(len(perm) - 2)):  # a swap of the last two axes only fuses fine
            continue
        node.name = node.name or f"onnxkit/fp16/Transpose_{i}"
        kept.add(node.name)
    return kept
