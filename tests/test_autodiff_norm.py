"""Gradient rules for normalisation ops against central finite differences (float64, onnx.reference),
then run on ONNX Runtime in float32."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from gradcases import check, rand, single_node
from onnx import helper

from onnxkit.autodiff.check import LOSS, gradcheck, run_gradients, with_projection_loss
from onnxkit.autodiff.reverse import add_gradients, gradient_name
from onnxkit.errors import OnnxkitError


def check_model(make, wrt: list[str], *, tol: float = 1e-6, ort_tol: float = 2e-4) -> None:
    """`check` for a model that single_node cannot finish alone: `make(dtype)` -> (model, feeds)."""
    model, feeds = make(np.float64)
    for name, (analytic, numeric) in gradcheck(model, feeds, wrt).items():
        scale = max(1.0, float(np.abs(numeric).max()))
        np.testing.assert_allclose(analytic, numeric, rtol=0, atol=tol * scale, err_msg=f"d/d{name}")
    expected = run_gradients(with_projection_loss(model), feeds, wrt, runtime="reference")
    model32, feeds32 = make(np.float32)
    got = run_gradients(with_projection_loss(model32), feeds32, wrt)
    for name in wrt:
        scale = max(1.0, float(np.abs(expected[name]).max()))
        np.testing.assert_allclose(got[name], expected[name], rtol=0, atol=ort_tol * scale,
                                   err_msg=f"on onnxruntime: d/d{name}")


def only_y(model_feeds: tuple[onnx.ModelProto, dict]) -> tuple[onnx.ModelProto, dict]:
    """The model with only the node's first output as a graph output (the others still computed)."""
    model, feeds = model_feeds
    del model.graph.output[1:]
    return model, feeds


def with_y(model_feeds: tuple[onnx.ModelProto, dict], like: str = "x") -> tuple[onnx.ModelProto, dict]:
    """Output y0 declared like input `like` where shape inference could not (GroupNormalization)."""
    model, feeds = model_feeds
    if not any(o.name == "y0" for o in model.graph.output):
        x = next(i for i in model.graph.input if i.name == like)
        model.graph.output.append(helper.make_value_info("y0", x.type))
    return model, feeds


def stats_typed_like_x(model_feeds: tuple[onnx.ModelProto, dict]) -> tuple[onnx.ModelProto, dict]:
    """Mean and InvStdDev typed like X, as onnx.reference computes them (the schema says float32)."""
    model, feeds = model_feeds
    for value in model.graph.output[1:]:
        value.type.tensor_type.elem_type = model.graph.input[0].type.tensor_type.elem_type
    return model, feeds


def symbolic(model: onnx.ModelProto, dims: dict[str, list]) -> onnx.ModelProto:
    """A copy whose graph inputs/outputs named in `dims` get those (partly symbolic) dims."""
    result = onnx.ModelProto()
    result.CopyFrom(model)
    for value in [*result.graph.input, *result.graph.output]:
        if value.name in dims:
            elem = value.type.tensor_type.elem_type
            value.CopyFrom(helper.make_tensor_value_info(value.name, elem, dims[value.name]))
    return result


# -- LayerNormalization -----------------------------------------------------------------------------

LN_X = rand(2, 3, 4, low=-2.0, high=2.0)


@pytest.mark.parametrize("axis,scale_shape,bias,outputs", [
    (-1, (4,), True, 1),
    (-1, (4,), False, 3),
    (1, (3, 4), True, 3),
    (-2, (3, 4), False, 1),
    (1, (4,), True, 1),  # the scale broadcasts over the first normalised axis
])
def test_layer_norm(axis, scale_shape, bias, outputs):
    inputs = {"x": LN_X, "s": rand(*scale_shape, seed=1, low=0.5, high=1.5)}
    if bias:
        inputs["b"] = rand(*scale_shape, seed=2)
    # with 3 outputs, Mean and InvStdDev are in the loss too
    attrs = {"axis": axis, "epsilon": 1e-3}
    check_model(lambda dtype: stats_typed_like_x(single_node("LayerNormalization", inputs, attrs, outputs=outputs,
                                                             dtype=dtype)), list(inputs))


@pytest.mark.parametrize("wrt", [["x", "s", "b"], ["s"], ["x"]])
def test_layer_norm_training_form_uses_the_emitted_statistics(wrt):
    # Mean and InvStdDev are outputs (ONNX Runtime's training form) but only Y reaches the loss
    inputs = {"x": LN_X, "s": rand(4, seed=1), "b": rand(4, seed=2)}
    check_model(lambda dtype: only_y(single_node("LayerNormalization", inputs, {"axis": -1}, outputs=3,
                                                 dtype=dtype)), wrt)


# -- RMSNormalization (opset 23) ---------------------------------------------------------------------

@pytest.mark.parametrize("axis,scale_shape,wrt", [
    (-1, (4,), ["x", "s"]),
    (1, (3, 4), ["x", "s"]),
    (-2, (3, 4), ["s"]),
    (1, (4,), ["x", "s"]),  # the scale broadcasts over the first normalised axis
    (-1, (2, 1, 4), ["x", "s"]),  # and over leading axes too (PyTorch: ones shaped like x)
])
def test_rms_norm(axis, scale_shape, wrt):
    inputs = {"x": LN_X, "s": rand(*scale_shape, seed=1, low=0.5, high=1.5)}
    check("RMSNormalization", inputs, wrt, {"axis": axis, "epsilon": 1e-3}, opset=23)


# -- BatchNormalization -----------------------------------------------------------------------------

def bn_inputs(shape: tuple[int, ...]) -> dict:
    c = shape[1]
    return {"x": rand(*shape, low=-2.0, high=2.0), "s": rand(c, seed=1, low=0.5, high=1.5), "b": rand(c, seed=2),
            "mean": rand(c, seed=3), "var": rand(c, seed=4, low=0.5, high=1.5)}


@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 2, 2)])
def test_batch_norm_inference(shape):
    check("BatchNormalization", bn_inputs(shape), ["x", "s", "b"], {"epsilon": 1e-3}, opset=15)


@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 2, 2)])
def test_batch_norm_training_uses_batch_statistics(shape):
    attrs = {"training_mode": 1, "momentum": 0.8, "epsilon": 1e-3}
    check_model(lambda dtype: only_y(single_node("BatchNormalization", bn_inputs(shape), attrs, outputs=3,
                                                 opset=15, dtype=dtype)), ["x", "s", "b"])


def test_onnxruntime_updates_running_statistics_next_to_the_backward():
    inputs, wrt = bn_inputs((3, 2, 2, 2)), ["x", "s", "b"]
    attrs = {"training_mode": 1, "momentum": 0.8, "epsilon": 1e-3}
    model, feeds = only_y(single_node("BatchNormalization", inputs, attrs, outputs=3, opset=15))
    expected = run_gradients(with_projection_loss(model), feeds, wrt, runtime="reference")

    model32, feeds32 = single_node("BatchNormalization", inputs, attrs, outputs=3, opset=15, dtype=np.float32)
    running = list(model32.graph.output[1:])
    projected = with_projection_loss(only_y((model32, feeds32))[0])  # the loss sees Y only
    projected.graph.output.extend(running)
    graph = add_gradients(projected, wrt, LOSS)
    names = ["y1", "y2", *(gradient_name(n) for n in wrt)]
    running_mean, running_var, *grads = ort.InferenceSession(
        graph.SerializeToString(), providers=["CPUExecutionProvider"]).run(names, feeds32)
    x = inputs["x"]
    np.testing.assert_allclose(running_mean, 0.8 * inputs["mean"] + 0.2 * x.mean(axis=(0, 2, 3)), atol=1e-6)
    np.testing.assert_allclose(running_var, 0.8 * inputs["var"] + 0.2 * x.var(axis=(0, 2, 3)), atol=1e-6)
    for name, grad in zip(wrt, grads, strict=True):
        np.testing.assert_allclose(grad, expected[name], atol=2e-4 * max(1.0, np.abs(expected[name]).max()))


# -- InstanceNormalization and GroupNormalization ---------------------------------------------------

@pytest.mark.parametrize("shape", [(2, 3, 4), (2, 2, 2, 3)])
def test_instance_norm(shape):
    c = shape[1]
    inputs = {"x": rand(*shape, low=-2.0, high=2.0), "s": rand(c, seed=1), "b": rand(c, seed=2)}
    check("InstanceNormalization", inputs, ["x", "s", "b"], {"epsilon": 1e-3})


@pytest.mark.parametrize("opset,shape,groups", [(18, (2, 4, 3), 2), (18, (2, 6, 2, 2), 3),
                                                (21, (2, 4, 3), 2), (21, (2, 6, 2, 2), 3)])
def test_group_norm_scale_per_group_at_18_and_per_channel_at_21(opset, shape, groups):
    n = groups if opset == 18 else shape[1]
    inputs = {"x": rand(*shape, low=-2.0, high=2.0), "s": rand(n, seed=1), "b": rand(n, seed=2)}
    # stash_type 11: opset 21 otherwise computes in float32, too coarse for the float64 check
    attrs = {"num_groups": groups, "epsilon": 1e-3, **({"stash_type": 11} if opset == 21 else {})}
    check_model(lambda dtype: with_y(single_node("GroupNormalization", inputs, attrs, opset=opset, dtype=dtype)),
                ["x", "s", "b"])


# -- symbolic dims and errors -----------------------------------------------------------------------

@pytest.mark.parametrize("op,inputs,attrs,opset,x_dims", [
    ("LayerNormalization", {"x": LN_X, "s": rand(4, seed=1), "b": rand(4, seed=2)}, {}, 17, ["batch", "seq", 4]),
    ("RMSNormalization", {"x": LN_X, "s": rand(3, 4, seed=1)}, {"axis": 1}, 23, ["batch", 3, "d"]),
    ("BatchNormalization", bn_inputs((2, 3, 2, 2)), {"training_mode": 1}, 15, ["batch", 3, "h", "w"]),
    ("GroupNormalization", {"x": rand(2, 4, 3), "s": rand(4, seed=1), "b": rand(4, seed=2)}, {"num_groups": 2}, 21,
     ["batch", 4, "len"]),
])
def test_symbolic_batch_and_sequence_dims(op, inputs, attrs, opset, x_dims):
    outputs = 3 if op == "BatchNormalization" else 1
    model, feeds = single_node(op, inputs, attrs, outputs=outputs, opset=opset, dtype=np.float32)
    model, _ = with_y(only_y((model, feeds)))
    projected, wrt = with_projection_loss(model), list(inputs)[:3]
    expected = run_gradients(projected, feeds, wrt)
    got = run_gradients(symbolic(projected, {"x": x_dims, "y0": x_dims}), feeds, wrt)
    for name in wrt:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op,inputs,attrs,outputs,opset,message", [
    ("BatchNormalization", bn_inputs((4, 3)), {"training_mode": 1}, 3, 15, "running mean and variance"),
    ("BatchNormalization", bn_inputs((4, 3)), {"momentum": 0.9}, 5, 13, "opset 14"),
    ("LayerNormalization", {"x": rand(2, 3), "s": rand(2, 3, seed=1)}, {"axis": -1}, 1, 17, "more axes"),
])
def test_unsupported_forms_raise_a_clear_error(op, inputs, attrs, outputs, opset, message):
    model, feeds = single_node(op, inputs, attrs, outputs=outputs, opset=opset)
    with pytest.raises(OnnxkitError, match=message):
        run_gradients(with_projection_loss(model), feeds, ["x"], runtime="reference")


def test_group_norm_21_with_symbolic_channels():
    # the channels per group come from x's shape at run time (the rule refused without a static channel count)
    inputs = {"x": rand(2, 4, 3), "s": rand(4, seed=1), "b": rand(4, seed=2)}
    model, feeds = with_y(single_node("GroupNormalization", inputs, {"num_groups": 2, "stash_type": 11}, opset=21))
    projected = with_projection_loss(model)
    expected = run_gradients(projected, feeds, list(inputs), runtime="reference")
    got = run_gradients(symbolic(projected, {"x": ["n", "c", "len"]}), feeds, list(inputs), runtime="reference")
    for name in inputs:
        np.testing.assert_allclose(got[name], expected[name], atol=1e-12, err_msg=name)



def lrn_by_definition(x: np.ndarray, size: int, alpha: float, beta: float, bias: float) -> np.ndarray:
    """ONNX's LRN as its specification writes it (ONNX Runtime's kernel matches this to 3e-8;
    onnx.reference's LRN does not, so the rule is checked against this instead)."""
    squares = np.zeros_like(x)
    below, above = (size - 1) // 2, size // 2
    for c in range(x.shape[1]):
        squares[:, c] = (x[:, max(0, c - below):c + above + 1] ** 2).sum(axis=1)
    return x / (bias + alpha / size * squares) ** beta


@pytest.mark.parametrize("size,shape", [(3, (2, 5, 3, 2)), (5, (2, 6, 3, 1)), (1, (1, 3, 2, 2))])  # ORT: 4-D only
def test_lrn_against_finite_differences_of_its_definition(size, shape):
    attrs = {"size": size, "alpha": 0.3, "beta": 0.75, "bias": 1.5}
    x = rand(*shape)
    model, feeds = single_node("LRN", {"x": x}, attrs, dtype=np.float32)
    projected = with_projection_loss(model)
    weights = np.random.default_rng(0).standard_normal(shape).astype(np.float32).astype(np.float64)  # its R

    def loss(values: np.ndarray) -> float:
        return float((lrn_by_definition(values, size, 0.3, 0.75, 1.5) * weights).sum())

    numeric, eps = np.zeros_like(x), 1e-6
    for i in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[i] = eps
        numeric[i] = (loss(x + step) - loss(x - step)) / (2 * eps)
    got = run_gradients(projected, feeds, ["x"])["x"]  # on ONNX Runtime, float32
    np.testing.assert_allclose(got, numeric, rtol=0, atol=2e-5 * max(1.0, np.abs(numeric).max()))


@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 2, 2)])
def test_batch_norm_inference_differentiates_its_mean_and_var_too(shape):
    check("BatchNormalization", bn_inputs(shape), ["mean", "var"], {"epsilon": 1e-3}, opset=15)


def test_a_value_named_as_a_gradient_output_is_refused():
    model, _ = single_node("Relu", {"x": rand(2, 3)})
    model.graph.node.append(helper.make_node("Identity", ["y0"], ["x.grad"]))
    with pytest.raises(OnnxkitError, match=r"already has a value named 'x.grad', the name of 'x''s gradient output"):
        add_gradients(model, ["x"], "y0")
