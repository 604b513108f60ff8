"""Opset 23's attention ops: Attention differentiated through ONNX's function body for it, and
RotaryEmbedding's rule, against central finite differences (float64, onnx.reference), then on
ONNX Runtime in float32."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from gradcases import check, rand, single_node, trains_on_digit_rows
from onnx import helper

from onnxkit.autodiff import functions
from onnxkit.errors import OnnxkitError
from onnxkit.graph_walks import value_types

Q, K, V = rand(2, 4, 3, 4), rand(2, 2, 5, 4, seed=1), rand(2, 2, 5, 4, seed=2)  # 4 query heads, 2 key/value heads
SQUARE = {"q": rand(2, 2, 4, 4), "k": rand(2, 2, 4, 4, seed=1), "v": rand(2, 2, 4, 4, seed=2)}
ATTENTION = [  # (name, inputs, constants, attributes, outputs)
    ("causal", SQUARE, {}, {"is_causal": 1}, 1),
    ("grouped query heads, scale, softcap", {"q": Q, "k": K, "v": V}, {}, {"scale": 0.7, "softcap": 2.0}, 1),
    ("boolean mask", {"q": Q, "k": K, "v": V}, {"m": np.array([[1, 1, 0, 1, 0]] * 3, bool)}, {}, 1),
    ("additive mask, trained", {"q": Q, "k": K, "v": V, "m": rand(3, 5, seed=5)}, {}, {}, 1),
    ("3-D inputs", {"q": rand(2, 3, 8), "k": rand(2, 5, 4, seed=1), "v": rand(2, 5, 6, seed=2)}, {},
     {"q_num_heads": 2, "kv_num_heads": 1}, 1),
    ("past key and value, present outputs", {"q": Q, "k": K, "v": V, "": None, "pk": rand(2, 2, 2, 4, seed=3),
                                             "pv": rand(2, 2, 2, 4, seed=4)}, {}, {"is_causal": 1}, 3),
    ("softcapped scores as an output", {"q": Q, "k": K, "v": V}, {}, {"qk_matmul_output_mode": 2, "softcap": 3.0}, 4),
]


@pytest.mark.parametrize("inputs,constants,attrs,outputs", [a[1:] for a in ATTENTION], ids=[a[0] for a in ATTENTION])
def test_attention_through_its_function_body(inputs, constants, attrs, outputs):
    check("Attention", inputs, [n for n in inputs if n], attrs, opset=23, constants=constants, outputs=outputs)


@pytest.mark.parametrize("attrs,constants", [({"is_causal": 1, "softcap": 2.0}, {}),
                                             ({}, {"m": np.array([[1, 1, 0, 1, 0]] * 3, bool)})])
def test_the_function_body_matches_onnxruntimes_kernel(attrs, constants):
    model, feeds = single_node("Attention", {"q": Q, "k": K, "v": V}, attrs, opset=23, constants=constants,
                               dtype=np.float32)
    expected = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    functions.inline(model, 0, value_types(model), 23)
    assert "Attention" not in {n.op_type for n in model.graph.node}
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    np.testing.assert_allclose(got[0], expected[0], atol=1e-6)


def test_attention_with_inputs_of_unknown_type_is_refused_by_name():
    node = helper.make_node("Attention", ["q", "k", "v"], ["y"])
    assert functions.unsupported(node, {}, 23) == "with inputs of unknown type"


CACHES = {"cos": rand(5, 4, seed=1), "sin": rand(5, 4, seed=2), "pos": np.array([[0, 1, 2], [2, 3, 4]])}


@pytest.mark.parametrize("x,attrs,constants", [
    (rand(2, 2, 3, 8), {}, CACHES),
    (rand(2, 3, 16), {"num_heads": 2, "interleaved": 1, "rotary_embedding_dim": 4},
     {"cos": rand(5, 2, seed=1), "sin": rand(5, 2, seed=2), "pos": CACHES["pos"]}),
    (rand(2, 2, 3, 8), {}, {"cos": rand(2, 3, 4, seed=1), "sin": rand(2, 3, 4, seed=2)}),  # no position ids
], ids=["4-D, position ids", "3-D, interleaved, part of each head", "caches per position"])
def test_rotary_embedding(x, attrs, constants):
    check("RotaryEmbedding", {"x": x}, ["x"], attrs, opset=23, constants=constants)


def test_rotary_embedding_caches_get_no_gradient():
    with pytest.raises(OnnxkitError, match="cos and sin caches get no gradient"):
        check("RotaryEmbedding", {"x": rand(2, 2, 3, 8), "cos": CACHES["cos"], "sin": CACHES["sin"]},
              ["x", "cos"], opset=23, constants={"pos": CACHES["pos"]})


def test_causal_attention_over_the_rows_of_each_digit_trains(tmp_path):
    """x [batch, 64] -> 8 rows of 8 pixels -> q, k, v projections -> Attention (3-D, 2 heads,
    causal) -> RMSNormalization -> head: opset 23's ops as PyTorch's exporter writes them."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Reshape", ["x", "rows"], ["seq"]),
        *(helper.make_node("MatMul", ["seq", f"w{p}"], [p]) for p in "qkv"),
        helper.make_node("Attention", ["q", "k", "v"], ["attended"], q_num_heads=2, kv_num_heads=2, is_causal=1),
        helper.make_node("Reshape", ["attended", "flat"], ["h"]),
        helper.make_node("RMSNormalization", ["h", "norm.scale"], ["normed"]),
        helper.make_node("Gemm", ["normed", "head.w", "head.b"], ["logits"]),
    ]
    weights = {**{f"w{p}": rng.uniform(-0.5, 0.5, (8, 8)) for p in "qkv"}, "norm.scale": np.ones(64),
               "head.w": rng.uniform(-0.1, 0.1, (64, 10)), "head.b": np.zeros(10)}
    trains_on_digit_rows(tmp_path, nodes, weights, {"rows": [-1, 8, 8], "flat": [-1, 64]}, opset=23, kept="Attention")


def _product_of_a_transpose(inputs: dict[str, np.ndarray], perm: list[int], out: list[int]):  # type: ignore[no-untyped-def]
    """y = tanh(a @ Transpose(b, perm)) over the float64 inputs (a, b), as attention's scores or context."""
    from onnx import TensorProto

    a, b = inputs
    nodes = [helper.make_node("Transpose", [b], ["bt"], perm=perm), helper.make_node("MatMul", [a, "bt"], ["ab"]),
             helper.make_node("Tanh", ["ab"], ["y"])]
    graph = helper.make_graph(nodes, "product", [helper.make_tensor_value_info(n, TensorProto.DOUBLE, v.shape)
                                                 for n, v in inputs.items()],
                              [helper.make_tensor_value_info("y", TensorProto.DOUBLE, out)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_transposed_keys_gradient_reads_the_keys_not_a_transpose_of_their_transpose():
    """scores = Q @ K^T (K^T a forward Transpose): the MatMul rule's dQ = dS @ (K^T)^T reads K itself, where it
    transposed K^T back (MiniLM's training graph held 18 such Transposes of Transposes). Gradients against float64
    finite differences."""

    from onnxkit.autodiff import add_gradients, gradient_name
    from onnxkit.autodiff.check import gradcheck

    rng = np.random.default_rng(0)
    q, k = rng.normal(size=(2, 3, 4, 5)), rng.normal(size=(2, 3, 6, 5))
    model = _product_of_a_transpose({"q": q, "k": k}, [0, 1, 3, 2], [2, 3, 4, 6])
    for name, (analytic, numeric) in gradcheck(model, {"q": q, "k": k}, ["q", "k"]).items():
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8, err_msg=name)
    with_grads = add_gradients(model, ["q", "k"], "y")
    made = {o: n for n in with_grads.graph.node for o in n.output}
    backward = [n for n in with_grads.graph.node if n.name.startswith("onnxkit.grad")]
    assert sum(n.op_type == "Transpose" for n in backward) == 2  # Q^T for dK^T, and dK^T back to dK
    for n in backward:
        assert not (n.op_type == "Transpose" and made.get(n.input[0]) is not None
                    and made[n.input[0]].op_type == "Transpose"), n.name
    assert gradient_name("q") in {o.name for o in with_grads.graph.output}


def test_the_values_gradient_transposes_the_smaller_operand():
    """context = P @ V (V a forward Transpose of the heads, P's last axis the longer): dV is (dO^T @ P)^T, not
    P^T @ dO (onnxruntime's transposed-A MatMul on P: 3.2 against 1.9 ms a MiniLM layer), and its swap folds into
    the transpose back through V's, so no Transpose reads P and none is left unread. Gradients against float64
    finite differences, with the sequence length static and free (taken as the longer axis)."""

    from onnxkit.autodiff import add_gradients
    from onnxkit.autodiff.check import gradcheck, run_gradients, with_projection_loss

    rng = np.random.default_rng(1)
    p, v = rng.uniform(0, 1, size=(2, 3, 6, 6)), rng.normal(size=(2, 6, 3, 4))
    model = _product_of_a_transpose({"p": p, "v": v}, [0, 2, 1, 3], [2, 3, 6, 4])
    checked = gradcheck(model, {"p": p, "v": v}, ["p", "v"])
    free = with_projection_loss(model)  # the same loss, its inputs' sequence axes free
    for value in free.graph.input:
        for d in value.type.tensor_type.shape.dim:
            if d.dim_value == 6:
                d.dim_param = "s"
    free_grads = run_gradients(free, {"p": p, "v": v}, ["p", "v"])
    for name, (analytic, numeric) in checked.items():
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8, err_msg=name)
        np.testing.assert_allclose(free_grads[name], numeric, rtol=1e-6, atol=1e-8, err_msg=name)
    for graph_of in (model, free):
        with_grads = add_gradients(graph_of, ["p", "v"], graph_of.graph.output[-1].name)
        backward = [n for n in with_grads.graph.node if n.name.startswith("onnxkit.grad")]
        assert not [n.name for n in backward if n.op_type == "Transpose" and n.input[0] == "p"]
        read = {i for n in with_grads.graph.node for i in n.input} | {o.name for o in with_grads.graph.output}
        assert all(set(n.output) & read for n in backward)
        transposes = [n for n in backward if n.op_type == "Transpose"]
        assert len(transposes) == 3, [n.name for n in transposes]  # V^T for dP, dO^T, (dO^T @ P)^T back to dV
