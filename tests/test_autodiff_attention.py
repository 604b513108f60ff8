"""Opset 23's attention ops: Attention differentiated through ONNX's function body for it, and
RotaryEmbedding's rule, against central finite differences (float64, onnx.reference), then on
ONNX Runtime in float32."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from gradcases import check, rand, single_node, trains_on_digit_rows
from onnx import helper

from onnxkit.autodiff import GRADIENT_NODES, functions
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


def _backward_transposes(model, wrt: list[str]) -> list[tuple[str, list[int], list[str]]]:  # type: ignore[no-untyped-def]
    """(what it reads, perm, the op types reading it) of each Transpose the gradients of `model`'s last output add."""
    from onnxkit.autodiff import add_gradients

    with_grads = add_gradients(model, wrt, model.graph.output[-1].name)
    readers: dict[str, list[str]] = {}
    for n in with_grads.graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n.op_type)
    return [(n.input[0], list(n.attribute[0].ints), readers.get(n.output[0], []))
            for n in with_grads.graph.node if n.name.startswith(GRADIENT_NODES) and n.op_type == "Transpose"]


def test_a_transposed_keys_gradient_reads_the_keys_and_swaps_only_what_its_products_fold():
    """scores = Q @ K^T (K^T a forward Transpose): dQ = dS @ (K^T)^T reads K itself; dK^T = Q^T @ dS reads a
    last-two-axes swap of Q, which onnxruntime folds into the product (FusedMatMul transA), and is swapped back into
    dK. Gradients against float64 finite differences."""
    from onnxkit.autodiff.check import gradcheck

    rng = np.random.default_rng(0)
    q, k = rng.normal(size=(2, 3, 4, 5)), rng.normal(size=(2, 3, 6, 5))
    model = _product_of_a_transpose({"q": q, "k": k}, [0, 1, 3, 2], [2, 3, 4, 6])
    for name, (analytic, numeric) in gradcheck(model, {"q": q, "k": k}, ["q", "k"]).items():
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8, err_msg=name)
    (swap_q, swap_q_perm, swap_q_readers), (_, back_perm, back_readers) = _backward_transposes(model, ["q", "k"])
    assert (swap_q, swap_q_perm, swap_q_readers) == ("q", [0, 1, 3, 2], ["MatMul"])
    assert back_perm == [0, 1, 3, 2] and back_readers == []  # dK, the gradient itself


@pytest.mark.parametrize(("shapes", "perm"), [
    (((2, 3, 6, 6), (2, 6, 3, 4)), [0, 2, 1, 3]),  # P @ V, V the heads of [batch, seq, heads, dim]
    (((2, 3, 4, 5), (2, 6, 3, 5)), [0, 2, 3, 1]),  # Q @ K^T, K^T written as one Transpose
], ids=["values", "keys in one transpose"])
def test_a_heads_products_gradient_swaps_only_what_its_products_fold(shapes, perm):
    """Attention's products with their second operand a transpose of [batch, seq, heads, dim]: every Transpose a
    backward MatMul reads is a last-two-axes swap, which onnxruntime folds into the product (FusedMatMul
    transA/transB). For P @ V, P's last axis the longer, dV is (dO^T @ P)^T: no Transpose
    reads P (onnxruntime's transposed-A MatMul on P: 3.2 against 1.9 ms a MiniLM layer). Gradients against float64
    finite differences, with the sequence length static and free (taken as the longer axis)."""
    from onnxkit.autodiff.check import gradcheck, run_gradients, with_projection_loss

    rng = np.random.default_rng(1)
    inputs = {"a": rng.uniform(0, 1, size=shapes[0]), "b": rng.normal(size=shapes[1])}
    batch, heads, rows = shapes[0][:3]
    model = _product_of_a_transpose(inputs, perm, [batch, heads, rows, shapes[1][3 if perm[-1] == 3 else 1]])
    checked = gradcheck(model, inputs, ["a", "b"])
    free = with_projection_loss(model)  # the same loss, its inputs' sequence axes free
    for value in free.graph.input:
        for d in value.type.tensor_type.shape.dim:
            if d.dim_value == 6:
                d.dim_param = "s"
    free_grads = run_gradients(free, inputs, ["a", "b"])
    for name, (analytic, numeric) in checked.items():
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8, err_msg=name)
        np.testing.assert_allclose(free_grads[name], numeric, rtol=1e-6, atol=1e-8, err_msg=name)
    for graph_of in (model, free):
        transposes = _backward_transposes(graph_of, ["a", "b"])
        made = {t[0] for t in transposes}
        for source, t_perm, readers in transposes:
            if "MatMul" in readers:
                assert t_perm == [0, 1, 3, 2] and set(readers) == {"MatMul"}, (source, t_perm, readers)
        if perm == [0, 2, 1, 3]:
            assert "a" not in made
