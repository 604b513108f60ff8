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


def trains_on_digit_rows(tmp_path, nodes: list, weights: dict, constants: dict, *, opset: int, kept: str) -> None:
    """A model of `nodes` over digits' x [batch, 64] (`weights` trained, int64 `constants`) trains on the
    `onnx` backend to a val loss under half its first and > 80% test accuracy, its inference graph
    keeping the op `kept` (replaced by standard ops only for training)."""
    from onnxkit.train import fit

    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()]
    inits += [numpy_helper.from_array(np.array(v, np.int64), k) for k, v in constants.items()]
    graph = helper.make_graph(nodes, "digit rows",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)
    result = fit(model, "digits", tmp_path / "run", epochs=6, batch_size=32, lr=0.01, quiet=True, device="cpu",
                 backend="onnx")
    losses = [r["val_loss"] for r in result.history if r["event"] == "epoch"]
    assert losses[-1] < 0.5 * losses[0] and result.metrics["test"]["accuracy"] > 0.8
    assert [n.op_type for n in onnx.load(result.model_path).graph.node].count(kept) == 1
