"""Whether a model's weights were trained, read from its normalisation layers.

PyTorch, Keras and onnxkit's DSL start every BatchNorm at scale 1, shift 0, running mean 0 and running variance 1,
and every LayerNorm, GroupNorm and InstanceNorm at scale 1 and shift 0, exactly; training moves them (a step in
train mode moves a BatchNorm's running statistics, a gradient step its scale and shift). A BatchNorm that PyTorch's
exporter folded into the layer before it leaves a shift there only when it had moved (`fresh_batch_norms`). A model
with no such layer (an MLP) shows nothing either way.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from onnxkit.train.batchnorm_restore import fresh_batch_norms
from onnxkit.train.exporter_marks import folded_batch_norms

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
    folded = folded_batch_norms(model, values)
    fresh = fresh_batch_norms(model, folded)
    moved = [node for node in folded if node.output[0] not in fresh]
    if moved:
        return f"{moved[0].op_type} {moved[0].name or moved[0].output[0]!r} holds the shift of a trained BatchNorm " \
               "folded into it"
    return None
