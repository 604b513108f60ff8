"""Checking gradients: analytic (our gradient graph) against central finite differences.

`gradcheck(model, feeds, wrt)` projects every float output onto a fixed random tensor
(L = sum_k <out_k, R_k>), differentiates L with `add_gradients`, and compares each
gradient element with (L(x + eps) - L(x - eps)) / 2eps. Both sides run in `onnx.reference`
(numpy, float64 when the model is), independent of ONNX Runtime; `run_gradients` runs the
same gradient graph on ONNX Runtime to check that it loads and agrees.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun
from onnx.reference.ops.op_max_pool import MaxPool as ReferenceMaxPool

from onnxkit.autodiff.reverse import add_gradients, gradient_name
from onnxkit.graph_walks import initializers_to_inputs, value_types

LOSS = "onnxkit.check.loss"


class Erf(OpRun):
    """Erf in the input's precision (onnx.reference's own rounds to float32 since onnx 1.2x)."""

    def _run(self, x):  # noqa: ANN001, ANN202 - onnx.reference's signature
        return (np.vectorize(math.erf, otypes=[x.dtype])(x),)


class MaxPool(ReferenceMaxPool):
    """onnx.reference's MaxPool with every window on its general path: the shortcut it takes for stride 1
    and no dilation gives wrong Indices (a [2, 3] kernel's pointed outside its window), which MaxPool's
    gradient reads."""

    def _run(self, x, auto_pad=None, ceil_mode=None, dilations=None, kernel_shape=None, pads=None,  # noqa: ANN001, ANN202
             storage_order=None, strides=None):
        return self._max_pool(x, auto_pad, ceil_mode, dilations, kernel_shape, pads, storage_order, strides)


def reference(model: onnx.ModelProto) -> ReferenceEvaluator:
    """`onnx.reference`'s evaluator for `model`, with float64-exact Erf and MaxPool's Indices right."""
    return ReferenceEvaluator(model, new_ops=[Erf, MaxPool])


def with_projection_loss(model: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """`model` plus a scalar output LOSS = sum over float outputs of sum(out * R), R fixed random."""
    types = value_types(model)
    rng = np.random.default_rng(seed)
    result = onnx.ModelProto()
    result.CopyFrom(model)
    g = result.graph
    terms, loss_type = [], TensorProto.FLOAT
    for out in model.graph.output:
        vi = types[out.name].type.tensor_type
        if vi.elem_type not in (TensorProto.FLOAT, TensorProto.DOUBLE):
            continue
        loss_type = vi.elem_type
        dims = [d.dim_value for d in vi.shape.dim]
        if any(d <= 0 for d in dims):
            raise ValueError(f"output {out.name!r} needs a static shape for the check")
        dtype = helper.tensor_dtype_to_np_dtype(vi.elem_type)
        weights = numpy_helper.from_array(rng.standard_normal(dims).astype(dtype), f"{out.name}.projection")
        g.initializer.append(weights)
        g.node.append(helper.make_node("Mul", [out.name, weights.name], [f"{out.name}.projected"]))
        g.node.append(helper.make_node("ReduceSum", [f"{out.name}.projected"], [f"{out.name}.term"], keepdims=0))
        terms.append(f"{out.name}.term")
    g.node.append(helper.make_node("Sum", terms, [LOSS]) if len(terms) > 1 else helper.make_node(
        "Identity", terms, [LOSS]))
    g.output.append(helper.make_tensor_value_info(LOSS, loss_type, []))
    return result


def _free(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], wrt: Sequence[str]) -> tuple[onnx.ModelProto, dict]:
    """`model` with the `wrt` initializers turned into inputs, and the feeds for all inputs."""
    result = onnx.ModelProto()
    result.CopyFrom(model)
    return result, {**feeds, **initializers_to_inputs(result, wrt)}


def gradcheck(
    model: onnx.ModelProto,
    feeds: Mapping[str, np.ndarray],
    wrt: Sequence[str],
    *,
    eps: float = 1e-6,
    seed: int = 0,
    entries: int | None = None,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{name: (analytic gradient, finite-difference gradient)} for every name in `wrt`
    (graph inputs or initializers), both computed by `onnx.reference`; `entries`: at most this many of each
    tensor's entries, spread evenly over it, both then flat arrays of those (two forward runs an entry)."""
    projected = with_projection_loss(model, seed)
    free, values = _free(projected, feeds, wrt)
    analytic = run_gradients(projected, feeds, wrt, runtime="reference")
    forward = reference(free)
    result = {}
    for name in wrt:
        base = values[name]
        picked = np.arange(base.size) if entries is None else np.unique(
            np.linspace(0, base.size - 1, min(entries, base.size)).round().astype(np.int64))
        numeric = np.zeros(len(picked), dtype=np.float64)
        for i, flat in enumerate(picked):
            losses = []
            for sign in (1, -1):
                moved = base.copy()
                moved.flat[flat] += sign * eps
                losses.append(float(forward.run([LOSS], {**values, name: moved})[0]))
            numeric[i] = (losses[0] - losses[1]) / (2 * eps)
        grad = np.asarray(analytic[name])
        result[name] = (grad, numeric.reshape(base.shape)) if entries is None else (grad.flat[picked], numeric)
    return result


def run_gradients(
    projected: onnx.ModelProto,
    feeds: Mapping[str, np.ndarray],
    wrt: Sequence[str],
    *,
    runtime: str = "onnxruntime",
) -> dict[str, np.ndarray]:
    """The gradients of LOSS (see `with_projection_loss`) by our gradient graph, run on
    `runtime` ("onnxruntime" or "reference")."""
    free, values = _free(projected, feeds, wrt)
    graph = add_gradients(free, list(wrt), LOSS)
    names = [gradient_name(n) for n in wrt]
    if runtime == "reference":
        outputs = reference(graph).run(names, values)
    else:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(graph.SerializeToString(), options, providers=["CPUExecutionProvider"])
        outputs = session.run(names, values)
    return dict(zip(wrt, outputs, strict=True))
