"""Gradient rules for activations and Einsum against central finite differences (float64,
onnx.reference), then on ONNX Runtime in float32."""

from __future__ import annotations

import numpy as np
import pytest
from gradcases import check, rand, single_node
from onnx import helper

from onnxkit.autodiff import GRADIENT_NODES, add_gradients
from onnxkit.autodiff.builder import Backward, Graph
from onnxkit.autodiff.check import LOSS, run_gradients, with_projection_loss
from onnxkit.autodiff.rules import RULES
from onnxkit.graph_walks import value_types


def away_from(x: np.ndarray, *kinks: float, margin: float = 0.05) -> np.ndarray:
    """`x` with values closer than `margin` to a kink pushed out to `margin` from it."""
    for kink in kinks:
        near = np.abs(x - kink) < margin
        x = np.where(near, kink + np.where(x >= kink, margin, -margin), x)
    return x


UNARY = [
    ("Relu", {}, 2.0, (0.0,)),
    ("LeakyRelu", {"alpha": 0.1}, 2.0, (0.0,)),
    ("ThresholdedRelu", {"alpha": 0.5}, 2.0, (0.5,)),
    ("Sigmoid", {}, 4.0, ()),
    ("Tanh", {}, 2.0, ()),
    ("Softplus", {}, 4.0, ()),
    ("Softsign", {}, 3.0, (0.0,)),
    ("Elu", {"alpha": 0.7}, 2.0, (0.0,)),
    ("Selu", {}, 2.0, (0.0,)),
    ("Selu", {"alpha": 1.3, "gamma": 0.9}, 2.0, (0.0,)),
    ("Celu", {"alpha": 1.5}, 2.0, (0.0,)),
    ("HardSigmoid", {}, 4.0, (-2.5, 2.5)),
    ("HardSigmoid", {"alpha": 0.5, "beta": 0.3}, 3.0, (-0.6, 1.4)),
    ("HardSwish", {}, 5.0, (-3.0, 3.0)),
    ("Mish", {}, 3.0, ()),
    ("Shrink", {"lambd": 0.5, "bias": 0.5}, 2.0, (-0.5, 0.5)),  # soft shrink
    ("Shrink", {"lambd": 0.4}, 2.0, (-0.4, 0.4)),  # hard shrink
]


@pytest.mark.parametrize("op,attrs,scale,kinks", UNARY, ids=[f"{u[0]}{u[1] or ''}" for u in UNARY])
def test_unary_activation(op, attrs, scale, kinks):
    x = away_from(rand(3, 8, seed=len(op), low=-scale, high=scale), *kinks)
    check(op, {"x": x}, ["x"], attrs, opset=18)  # Mish is new in opset 18


def test_swish_with_alpha():
    check("Swish", {"x": rand(3, 8, low=-4.0, high=4.0)}, ["x"], {"alpha": 1.5}, opset=24)


def test_relu_gradient_at_zero_is_zero():
    model, feeds = single_node("Relu", {"x": np.array([[-1.0, 0.0, 2.0]])})
    grad = run_gradients(with_projection_loss(model), feeds, ["x"], runtime="reference")["x"]
    assert grad[0, 0] == 0.0 and grad[0, 1] == 0.0 and grad[0, 2] != 0.0


@pytest.mark.parametrize("slope_shape", [(3, 1, 1), (1,), (2, 3, 2, 2)])
def test_prelu_slope_gradient_is_summed_back_to_its_shape(slope_shape):
    x = away_from(rand(2, 3, 2, 2), 0.0)
    slope = rand(*slope_shape, seed=3, low=0.1, high=0.9)
    check("PRelu", {"x": x, "slope": slope}, ["x", "slope"])


def test_gelu_exact():
    # onnx.reference computes Erf in float32, so the steps are wider
    check("Gelu", {"x": rand(3, 5, low=-3.0, high=3.0)}, ["x"], opset=20, eps=1e-3, tol=1e-4)


def test_gelu_tanh():
    check("Gelu", {"x": rand(3, 5, low=-3.0, high=3.0)}, ["x"], {"approximate": "tanh"}, opset=20)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("attrs", [{}, {"axis": 1}, {"axis": 0}])
def test_softmax_over_one_axis(op, attrs):
    check(op, {"x": rand(2, 3, 4, low=-2.0, high=2.0)}, ["x"], attrs, opset=13)


@pytest.mark.parametrize("wrt", [["x"], ["x", "s"]])
@pytest.mark.parametrize("x_shape,s_shape,reads_mask", [((2, 3, 4), (2, 3, 4), False), ((2, 3, 4), (3, 1), False),
                                                        ((3, 4), (2, 3, 4), True)])
def test_softmax_under_a_dropout_mask_reads_the_masked_product(wrt, x_shape, s_shape, reads_mask):
    """z = softmax(x) * s (attention's probabilities under a dropout mask): dx = z dz - y sum(z dz), so no
    backward node multiplies dz by the mask for x where z has y's shape; a mask that broadcasts y up keeps
    dy = dz s (summed back). Gradients against float64 finite differences."""
    from onnx import TensorProto

    from onnxkit.autodiff.check import gradcheck

    x, s = rand(*x_shape, low=-2.0, high=2.0), rand(*s_shape, seed=1, low=0.0, high=2.0)
    nodes = [helper.make_node("Softmax", ["x"], ["y"]), helper.make_node("Mul", ["y", "s"], ["z"]),
             helper.make_node("Tanh", ["z"], ["out"])]
    graph = helper.make_graph(nodes, "dropped", [helper.make_tensor_value_info(n, TensorProto.DOUBLE, v.shape)
                                                  for n, v in (("x", x), ("s", s))],
                              [helper.make_tensor_value_info("out", TensorProto.DOUBLE, [2, 3, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for name, (analytic, numeric) in gradcheck(model, {"x": x, "s": s}, wrt).items():
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-9, err_msg=name)
    backward = [n for n in add_gradients(model, wrt, "out").graph.node if n.name.startswith(GRADIENT_NODES)]
    assert any(n.op_type == "Mul" and "s" in n.input for n in backward) == reads_mask


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_softmax_before_opset_13_needs_the_last_axis(op):
    def gradient(axis: int) -> list[str | None]:
        model, _ = single_node(op, {"x": rand(2, 3, 4)}, {"axis": axis}, opset=12)
        node = model.graph.node[0]
        return RULES[op](Backward(Graph(value_types(model), 12), node, ["dy"], [True]))

    assert gradient(2)[0] and gradient(-1)[0]
    with pytest.raises(ValueError, match="opset 13"):
        gradient(1)


EINSUM = [
    ("ij,jk->ik", [(3, 4), (4, 2)]),
    ("bij,bjk->bik", [(2, 3, 4), (2, 4, 2)]),
    ("bhqd,bhkd->bhqk", [(2, 2, 3, 4), (2, 2, 2, 4)]),
    ("ij->i", [(3, 4)]),
    ("ij->", [(3, 4)]),
    ("ij->ji", [(3, 4)]),
    ("i,j->ij", [(3,), (4,)]),
    ("ij,jk", [(3, 4), (4, 2)]),  # implicit output: "ik"
    ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 2)]),
    ("ijk,j->k", [(2, 3, 2), (3,)]),  # i is summed away and only the first operand carries it
    ("...ij,...jk->...ik", [(2, 1, 3, 4), (1, 2, 4, 2)]),  # ellipsis axes of size 1 broadcast
    ("...i,i", [(2, 3, 4), (4,)]),  # implicit output with an ellipsis: "..."
    ("b...d,bd->b...", [(2, 3, 1, 4), (2, 4)]),
    ("ab,ab->ab", [(2, 3), (1, 3)]),  # a named index of size 1 broadcasts too (numpy's and torch's einsum)
    ("bij,bjk->bik", [(2, 3, 4), (1, 4, 2)]),
]


@pytest.mark.parametrize("equation,shapes", EINSUM, ids=[e for e, _ in EINSUM])
def test_einsum(equation, shapes):
    inputs = {f"x{i}": rand(*shape, seed=i) for i, shape in enumerate(shapes)}
    check("Einsum", inputs, list(inputs), {"equation": equation})


def test_einsum_diagonal_of_another_operand():
    check("Einsum", {"a": rand(3, 3), "v": rand(4, seed=1)}, ["v"], {"equation": "ii,j->j"})


DIAGONALS = [  # the differentiated operand repeats an index
    ("ii->i", [(3, 3)]),
    ("ii", [(3, 3)]),  # the trace
    ("bii->bi", [(2, 3, 3)]),
    ("iji->j", [(3, 2, 3)]),
    ("iij->i", [(3, 3, 2)]),  # j is summed away, carried only by the repeating operand
    ("iii->i", [(2, 2, 2)]),
    ("ii,ij->j", [(3, 3), (3, 2)]),
]


@pytest.mark.parametrize("equation,shapes", DIAGONALS, ids=[e for e, _ in DIAGONALS])
def test_einsum_diagonal_of_the_differentiated_operand(equation, shapes):
    inputs = {f"x{i}": rand(*shape, seed=i) for i, shape in enumerate(shapes)}
    check("Einsum", inputs, list(inputs), {"equation": equation})


def test_gelu_unknown_approximation_raises():
    node = helper.make_node("Gelu", ["x"], ["y"], approximate="erf")
    model, _ = single_node("Relu", {"x": rand(2)})
    with pytest.raises(ValueError, match="approximate"):
        RULES["Gelu"](Backward(Graph(value_types(model), 20), node, ["dy"], [True]))


def _summed_gradient(op: str, inputs: dict, wrt: str) -> np.ndarray:
    """d sum(op(inputs)) / d wrt, on onnxruntime in float32 (it has no float64 HardSwish)."""
    import onnxruntime as ort

    from onnxkit.autodiff import add_gradients

    model, feeds = single_node(op, inputs, dtype=np.float32)
    model.graph.node.append(helper.make_node("ReduceSum", ["y0"], ["loss"], keepdims=0))
    model.graph.output.append(helper.make_tensor_value_info("loss", 1, []))
    grads = add_gradients(model, [wrt], "loss")
    session = ort.InferenceSession(grads.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run([f"{wrt}.grad"], feeds)[0]


def test_prelu_and_hardswish_kinks_take_pytorchs_side():
    # torch.nn.functional.prelu: slope at 0; hardswish: 0 at -3, 1 at 3 (were 1, -0.5 and 1.5)
    prelu = _summed_gradient("PRelu", {"x": np.array([-1.0, 0.0, 1.0]), "slope": np.array([0.25])}, "x")
    np.testing.assert_array_equal(prelu, [0.25, 0.25, 1.0])
    hardswish = _summed_gradient("HardSwish", {"x": np.array([-4.0, -3.0, 0.0, 3.0, 4.0])}, "x")
    np.testing.assert_array_equal(hardswish, [0.0, 0.0, 0.5, 1.0, 1.0])


def test_einsum_diagonal_of_symbolic_size():
    # the identity pattern is made at run time (EyeLike) when the repeated axis has no static size
    inputs = {"x0": rand(2, 3, 3)}
    model, feeds = single_node("Einsum", inputs, {"equation": "bii->b"})
    expected = run_gradients(with_projection_loss(model), feeds, ["x0"], runtime="reference")
    for dim, name in zip(model.graph.input[0].type.tensor_type.shape.dim, ["batch", "n", "n"], strict=True):
        dim.dim_param = name
    got = run_gradients(with_projection_loss(model), feeds, ["x0"])
    assert any(n.op_type == "EyeLike" for n in add_gradients(with_projection_loss(model), ["x0"], LOSS).graph.node)
    np.testing.assert_allclose(got["x0"], expected["x0"], atol=1e-12)
    np.testing.assert_array_equal(got["x0"][:, 0, 1], 0)
