"""Single-node models for the gradient-rule tests: build once in float64 (checked against
finite differences in onnx.reference) and once in float32 (run on ONNX Runtime)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxkit.autodiff.check import gradcheck, run_gradients, with_projection_loss


def single_node(op: str, inputs: dict, attrs: dict | None = None, *, outputs: int = 1, opset: int = 17,
                dtype=np.float64, constants: dict | None = None, domain: str = "") -> tuple[onnx.ModelProto, dict]:
    """A model of one `op` node. `inputs` are fed (floats cast to `dtype`); `constants`
    (name -> array) become initializers; inputs named "" stay empty."""
    feeds, graph_inputs, inits, names = {}, [], [], []
    for name, value in inputs.items():
        names.append(name)
        if name == "":
            continue
        value = np.asarray(value)
        if value.dtype.kind == "f":
            value = value.astype(dtype)
        feeds[name] = value
        graph_inputs.append(helper.make_tensor_value_info(
            name, helper.np_dtype_to_tensor_dtype(value.dtype), list(value.shape)))
    for name, value in (constants or {}).items():
        value = np.asarray(value)
        if value.dtype.kind == "f":
            value = value.astype(dtype)
        inits.append(numpy_helper.from_array(value, name))
        names.append(name)
    outs = [f"y{i}" for i in range(outputs)]
    node = helper.make_node(op, [n for n in names], outs, domain=domain, **(attrs or {}))
    graph = helper.make_graph([node], "case", graph_inputs, [], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    inferred = onnx.shape_inference.infer_shapes(model)
    model.graph.output.extend(o for o in inferred.graph.value_info if o.name in outs)
    model.graph.output.sort(key=lambda o: outs.index(o.name))
    return model, feeds


def check(op: str, inputs: dict, wrt: list[str], attrs: dict | None = None, *, outputs: int = 1, opset: int = 17,
          constants: dict | None = None, tol: float = 1e-6, ort_dtype=np.float32, ort_tol: float = 2e-4,
          eps: float = 1e-6) -> None:
    """The rule of `op` matches central finite differences in float64, and ONNX Runtime
    runs its gradient graph (in `ort_dtype`) to the same values; `ort_dtype=None` skips it."""
    model, feeds = single_node(op, inputs, attrs, outputs=outputs, opset=opset, constants=constants)
    for name, (analytic, numeric) in gradcheck(model, feeds, wrt, eps=eps).items():
        scale = max(1.0, float(np.abs(numeric).max()))
        np.testing.assert_allclose(analytic, numeric, rtol=0, atol=tol * scale, err_msg=f"{op}: d/d{name}")
    if ort_dtype is None:
        return
    expected = run_gradients(with_projection_loss(model), feeds, wrt, runtime="reference")
    model32, feeds32 = single_node(op, inputs, attrs, outputs=outputs, opset=opset, constants=constants,
                                   dtype=ort_dtype)
    got = run_gradients(with_projection_loss(model32), feeds32, wrt)
    for name in wrt:
        scale = max(1.0, float(np.abs(expected[name]).max()))
        np.testing.assert_allclose(got[name], expected[name], rtol=0, atol=ort_tol * scale,
                                   err_msg=f"{op} on onnxruntime: d/d{name}")


def rand(*shape: int, seed: int = 0, low: float = -1.0, high: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed + sum(shape)).uniform(low, high, shape)


__all__ = ["check", "rand", "single_node", "pytest", "TensorProto"]
