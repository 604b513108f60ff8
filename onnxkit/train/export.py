"""Write trained weights back into the original inference-form graph, with training metadata."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
from onnx import helper


def with_weights(model: onnx.ModelProto, values: Mapping[str, np.ndarray]) -> onnx.ModelProto:
    """A copy of `model` whose initializers named in `values` hold those values."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for t in out.graph.initializer:
        if t.name in values:
            array = np.require(values[t.name], helper.tensor_dtype_to_np_dtype(t.data_type), "C")
            if tuple(array.shape) != tuple(t.dims):
                raise ValueError(f"{t.name}: trained shape {array.shape} differs from the model's {tuple(t.dims)}")
            for field in ("float_data", "double_data", "int32_data", "int64_data", "external_data"):
                t.ClearField(field)
            t.data_location = onnx.TensorProto.DEFAULT
            t.raw_data = array.tobytes()
    return out
