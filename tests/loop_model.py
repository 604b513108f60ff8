"""A model whose run time follows the request's data, not its rows: for the server's tests of long runs."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def looping_model(weight: np.ndarray, base: int = 0) -> onnx.ModelProto:
    """y = tanh(x @ weight) applied base + n times (x [batch, width], n [1]), on onnxruntime's Loop."""
    width = weight.shape[0]
    body = helper.make_graph(
        [helper.make_node("MatMul", ["state", "w"], ["product"]), helper.make_node("Tanh", ["product"], ["next"]),
         helper.make_node("Identity", ["cond"], ["cond_out"])], "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
         helper.make_tensor_value_info("state", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("next", TensorProto.FLOAT, ["batch", width])],
    )  # fmt: skip
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["n"], ["extra"], keepdims=0),
         helper.make_node("Add", ["base", "extra"], ["trips"]),
         helper.make_node("Loop", ["trips", "", "x"], ["y"], body=body)], "looping",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width]),
         helper.make_tensor_value_info("n", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])],
        [numpy_helper.from_array(weight.astype(np.float32), "w"), numpy_helper.from_array(np.array(base, np.int64),
                                                                                        "base")],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
