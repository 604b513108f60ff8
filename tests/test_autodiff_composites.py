"""Decomposed exact GELU is differentiated as one Gelu: the same gradient as the chain rule
(central finite differences, float64), a backward pass that reads only its input, and the
chain rule wherever something else reads an intermediate value."""

from __future__ import annotations

import math

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxkit.autodiff import add_gradients
from onnxkit.autodiff.check import gradcheck, with_projection_loss

SPELLINGS = {  # node list of x -> y, and the intermediates it makes
    "x*(1+erf(x/sqrt2))*0.5 (PyTorch's export)": [
        ("Div", ["x", "sqrt2"], "u"), ("Erf", ["u"], "e"), ("Add", ["e", "one"], "a"),
        ("Mul", ["x", "a"], "m"), ("Mul", ["m", "half"], "y")],
    "(0.5*x)*(1+erf(x*(1/sqrt2))) (Hugging Face's)": [
        ("Mul", ["x", "half"], "h"), ("Mul", ["x", "rsqrt2"], "u"), ("Erf", ["u"], "e"),
        ("Add", ["one", "e"], "a"), ("Mul", ["h", "a"], "y")],
}
CONSTANTS = {"sqrt2": math.sqrt(2.0), "rsqrt2": math.sqrt(0.5), "one": 1.0, "half": 0.5}


def model(spelling: str, extra_output: str | None = None):
    """w -> MatMul(inp, w) = x -> GELU spelled out -> y (and `extra_output` as a second output)."""
    nodes = [helper.make_node("MatMul", ["inp", "w"], ["x"])]
    nodes += [helper.make_node(op, ins, [out]) for op, ins, out in SPELLINGS[spelling]]
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in CONSTANTS.items()]
    inits.append(numpy_helper.from_array(rng.normal(size=(4, 6)), "w"))
    outputs = ["y"] + ([extra_output] if extra_output else [])
    graph = helper.make_graph(nodes, "gelu", [helper.make_tensor_value_info("inp", TensorProto.DOUBLE, [3, 4])],
                              [helper.make_tensor_value_info(o, TensorProto.DOUBLE, [3, 6]) for o in outputs], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def backward_reads(m, names) -> set[str]:
    """Which of `names` the gradient nodes read."""
    forward = len(with_projection_loss(m).graph.node)
    grads = add_gradients(with_projection_loss(m), ["w"], "onnxkit.check.loss")
    return {i for n in grads.graph.node[forward:] for i in n.input} & set(names)


@pytest.mark.parametrize("spelling", SPELLINGS)
@pytest.mark.parametrize("extra_output", [None, "e"])
def test_decomposed_gelu_gradient_matches_finite_differences(spelling, extra_output):
    m = model(spelling, extra_output)
    feeds = {"inp": np.random.default_rng(1).normal(size=(3, 4)) * 1.5}
    for analytic, numeric in gradcheck(m, feeds, ["w"]).values():
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_decomposed_gelu_backward_reads_only_its_input(spelling):
    intermediates = {out for _, _, out in SPELLINGS[spelling][:-1]}
    assert backward_reads(model(spelling), intermediates | {"x"}) == {"x"}


def test_a_chain_whose_intermediate_is_read_elsewhere_goes_through_the_chain_rule():
    spelling = next(iter(SPELLINGS))
    assert backward_reads(model(spelling, extra_output="e"), {"a"}) == {"a"}  # Mul(x, a)'s rule reads a


def test_a_constant_of_higher_rank_than_x_is_no_gelu():
    # [[[0.5]]] broadcasts y up to rank 3: as one Gelu of x, w's gradient came out of the wrong rank
    spelling = next(iter(SPELLINGS))
    m = model(spelling)
    half = next(t for t in m.graph.initializer if t.name == "half")
    half.CopyFrom(numpy_helper.from_array(np.full((1, 1, 1), 0.5), "half"))
    assert backward_reads(m, {"a"}) == {"a"}  # the chain rule, node by node (as one Gelu: only x)
