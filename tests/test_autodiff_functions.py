"""Ops differentiated through the function body ONNX defines for them (besides Attention, in
test_autodiff_attention.py): the losses PyTorch exports F.cross_entropy and F.nll_loss as, whose bodies
refer to the node's attributes and nest one in the other, and MeanVarianceNormalization. Checked against
central finite differences (float64, onnx.reference), then on ONNX Runtime in float32."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from gradcases import check, rand, single_node
from onnx import TensorProto, helper

from onnxkit.autodiff import add_gradients
from onnxkit.errors import OnnxkitError

TARGETS = {(3, 4): np.array([1, 0, 3]), (2, 4, 3): np.array([[1, 0, 3], [2, 1, 1]])}


@pytest.mark.parametrize("op", ["SoftmaxCrossEntropyLoss", "NegativeLogLikelihoodLoss"])
@pytest.mark.parametrize("attrs", [{}, {"reduction": "sum"}, {"reduction": "none"}, {"ignore_index": 1},
                                   {"reduction": "sum", "ignore_index": 3}])
@pytest.mark.parametrize("shape", list(TARGETS))
@pytest.mark.parametrize("weighted", [False, True])
def test_losses_through_their_function_bodies(op, attrs, shape, weighted):
    # both were refused ("op SoftmaxCrossEntropyLoss ... has no gradient rule")
    inputs = {"x": rand(*shape), "t": TARGETS[shape]} | ({"w": rand(4, seed=3, low=0.2, high=1.5)} if weighted else {})
    wrt = ["x"] + (["w"] if weighted and op == "NegativeLogLikelihoodLoss" else [])
    check(op, inputs, wrt, attrs, opset=18)


@pytest.mark.parametrize("op", ["SoftmaxCrossEntropyLoss", "NegativeLogLikelihoodLoss"])
def test_a_mean_loss_with_an_ignored_row_differentiates_as_pytorchs(op):
    # PyTorch's ignore_index=-100 (here -1): the mean is over the other rows, d/dx of F.cross_entropy is
    # (softmax(x) - onehot(t)) / 2 there and 0 on the ignored row; of F.nll_loss, -onehot(t) / 2. (onnx.reference's
    # NegativeLogLikelihoodLoss divides by all 3 rows, so these are checked by hand.)
    x, t = rand(3, 4), np.array([-1, 0, 3])
    model, feeds = single_node(op, {"x": x, "t": t}, {"ignore_index": -1}, opset=18, dtype=np.float32)
    session = ort.InferenceSession(add_gradients(model, ["x"], "y0").SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    expected = -np.eye(4)[t] / 2 if op == "NegativeLogLikelihoodLoss" else \
        (np.exp(x) / np.exp(x).sum(axis=1, keepdims=True) - np.eye(4)[t]) / 2
    expected[0] = 0
    np.testing.assert_allclose(session.run(["x.grad"], feeds)[0], expected, atol=1e-6)
    assert session.run(["y0"], feeds)[0] == pytest.approx(ort.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]).run(["y0"], feeds)[0], rel=1e-6)


@pytest.mark.parametrize("axes", [None, [1], [-1, 2]])
def test_mean_variance_normalization(axes):
    # its body is written in float32 constants: checked on ONNX Runtime in float32 against numpy's finite
    # differences of the definition, and refused in float64
    x = rand(2, 3, 2, 3)
    attrs = {"axes": axes} if axes else {}
    model, feeds = single_node("MeanVarianceNormalization", {"x": x}, attrs, opset=18, dtype=np.float32)
    model.graph.node.append(helper.make_node("ReduceSum", ["y0", "r"], ["loss"], keepdims=0))
    weights = rand(2, 3, 2, 3, seed=9)
    model.graph.input.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, list(weights.shape)))
    model.graph.node[-1].input[:] = ["projected"]
    model.graph.node.insert(1, helper.make_node("Mul", ["y0", "r"], ["projected"]))
    model.graph.output.append(helper.make_tensor_value_info("loss", TensorProto.FLOAT, []))
    session = ort.InferenceSession(add_gradients(model, ["x"], "loss").SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    got = session.run(["x.grad"], {**feeds, "r": weights.astype(np.float32)})[0]
    over = tuple(a % 4 for a in (axes or [0, 2, 3]))

    def loss(values: np.ndarray) -> float:
        centred = values - values.mean(axis=over, keepdims=True)
        return float((centred / (np.sqrt((centred ** 2).mean(axis=over, keepdims=True)) + 1e-9) * weights).sum())

    numeric = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[i] = 1e-6
        numeric[i] = (loss(x + step) - loss(x - step)) / 2e-6
    np.testing.assert_allclose(got, numeric, atol=2e-4 * max(1.0, np.abs(numeric).max()))
    model64, _ = single_node("MeanVarianceNormalization", {"x": x}, attrs, opset=18)
    with pytest.raises(OnnxkitError, match="function body is written for another float type"):
        add_gradients(model64, ["x"], "y0")
