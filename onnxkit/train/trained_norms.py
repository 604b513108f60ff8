"""Whether a model's weights were trained, read from its normalisation layers.

PyTorch, Keras and onnxkit's DSL start every BatchNorm at scale 1, shift 0, running mean 0 and running variance 1,
and every LayerNorm, GroupNorm and InstanceNorm at scale 1 and shift 0, exactly; training moves them (a step in
train mode moves a BatchNorm's running statistics, a gradient step its scale and shift). A BatchNorm that PyTorch's
exporter folded into the layer before it leaves a shift there only when it had moved (`fresh_batch_norms`). A norm
written as separate ops (PyTorch's LayerNorm before opset 17, RMSNorm, tf2onnx's) shows its scale and shift as the
Mul and Add (or Sub) of a 1-D tensor right after its division by a Sqrt of a ReduceMean, and a GroupNorm as
TorchScript writes it (an InstanceNormalization of the groups, whose ones and zeros no one trains, then a Reshape)
as the Mul and Add of a [C, 1, 1] tensor after the Reshape (`written_out`). A model with no such layer (an MLP)
shows nothing either way.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from onnxkit.graph_walks import FLOAT_TYPES, producers, readers
from onnxkit.train.batchnorm_restore import fresh_batch_norms
from onnxkit.train.exporter_marks import folded_batch_norms

Affine = tuple[onnx.NodeProto, str, str, int]  # a norm's node, its initializer, 'scale' or 'shift', and its start
# each normalisation op's inputs past the data, as (what it is, its value at the start)
STARTS = {
    "BatchNormalization": (("scale", 1), ("shift", 0), ("running mean", 0), ("running variance", 1)),
    "LayerNormalization": (("scale", 1), ("shift", 0)),
    "GroupNormalization": (("scale", 1), ("shift", 0)),
    "InstanceNormalization": (("scale", 1), ("shift", 0)),
}


def trained_norm(model: onnx.ModelProto) -> str | None:
    """What shows that `model`'s weights were trained, in words: the first normalisation layer whose initializers
    moved from their start, or a layer holding a folded BatchNorm's shift; None where every one is at its start
    (a fresh model) or there is none."""
    values = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        for name, (what, start) in zip(node.input[1:], STARTS.get(node.op_type, ()), strict=False):
            if name in values and np.any(numpy_helper.to_array(values[name]) != start):
                return f"the {what} of {node.op_type} {node.name or node.output[0]!r} is not all {start}, its start"
    for node, name, what, start in written_out(model, values):
        if np.any(numpy_helper.to_array(values[name]) != start):
            return f"the {what} of the normalisation written out at {node.op_type} {node.name or node.output[0]!r} " \
                   f"is not all {start}, its start"
    folded = folded_batch_norms(model, values)
    fresh = fresh_batch_norms(model, folded)
    moved = [node for node in folded if node.output[0] not in fresh]
    if moved:
        return f"{moved[0].op_type} {moved[0].name or moved[0].output[0]!r} holds the shift of a trained BatchNorm " \
               "folded into it"
    return None


def written_out(model: onnx.ModelProto, values: dict[str, onnx.TensorProto]) -> list[Affine]:
    """(node, initializer, 'scale' or 'shift', its start) of each normalisation written as separate ops: a value
    divided by a Sqrt of a ReduceMean (plus epsilon), or multiplied by its Reciprocal, or a Reshape of an
    InstanceNormalization (GroupNorm), is normalised; a Mul of it, or of the reciprocal itself (tf2onnx), by an
    initializer of one axis is the scale, and an Add of one to that product (or a Sub of the product from one:
    tf2onnx's shift less the scaled mean) the shift."""
    made = producers(model.graph.node)
    read_by = readers(model.graph.node)

    def is_root(name: str) -> bool:  # Sqrt(ReduceMean(...) [+ epsilon])
        sqrt = made.get(name)
        if sqrt is None or sqrt.op_type != "Sqrt":
            return False
        inner = made.get(sqrt.input[0])
        if inner is not None and inner.op_type == "Add":
            inner = next((made[i] for i in inner.input if i in made and made[i].op_type == "ReduceMean"), None)
        return inner is not None and inner.op_type == "ReduceMean"

    def vector(node: onnx.NodeProto) -> str | None:  # its float initializer input of one axis ([C], or [C, 1, 1])
        return next((i for i in node.input if i in values and values[i].dims and sum(d != 1 for d in values[i].dims)
                     <= 1 and values[i].data_type in FLOAT_TYPES), None)

    normalised = [n.output[0] for n in model.graph.node
                  if (n.op_type == "Div" and len(n.input) == 2 and is_root(n.input[1]))
                  or (n.op_type == "Reciprocal" and is_root(n.input[0]))
                  or (n.op_type == "Mul" and any(i in made and made[i].op_type == "Reciprocal"
                                                 and is_root(made[i].input[0]) for i in n.input))
                  or (n.op_type == "Reshape" and n.input[0] in made
                      and made[n.input[0]].op_type == "InstanceNormalization")]
    found = []
    for value in normalised:
        for scale in (r for r in read_by.get(value, []) if r.op_type == "Mul" and vector(r)):
            found.append((scale, vector(scale), "scale", 1))
            for shift in read_by.get(scale.output[0], []):
                if shift.op_type in ("Add", "Sub") and vector(shift):
                    found.append((shift, vector(shift), "shift", 0))
    return found
