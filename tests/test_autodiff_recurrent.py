"""LSTM, GRU and RNN are differentiated through their unrolled form: the unrolled graph computes what
ONNX Runtime's kernels compute, its gradients match central finite differences (float64, the
forward in onnx.reference, which agrees with ONNX Runtime's kernels to 1e-7 here), what it
cannot unroll is refused by name, and a GRU classifier trains through `fit`."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from gradcases import trains_on_digit_rows
from onnx import TensorProto, helper

from onnxkit.autodiff import add_gradients, missing_rules
from onnxkit.autodiff.check import gradcheck
from onnxkit.autodiff.recurrent import unroll
from onnxkit.errors import OnnxkitError
from onnxkit.graph_walks import value_types

CELLS = {"LSTM": ("LSTM", {}), "GRU": ("GRU", {"linear_before_reset": 0}),
         "GRU linear_before_reset": ("GRU", {"linear_before_reset": 1}), "RNN": ("RNN", {})}
DIRECTIONS = ["forward", "reverse", "bidirectional"]
STEPS, BATCH, SIZE, HIDDEN = 3, 2, 4, 3


def recurrent(cell: str, direction: str, dtype: int, *, bias: bool = True, initial: bool = True,
              steps: int | str = STEPS, sequence_lens: bool = False,
              layout: int = 0) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """One LSTM / GRU node over x [steps, batch, size] (layout 1: [batch, steps, size], the states
    [batch, directions, hidden]); its weights (and initial states) are inputs."""
    op, attrs = CELLS[cell]
    directions, gates = (2 if direction == "bidirectional" else 1), {"LSTM": 4, "GRU": 3, "RNN": 1}[op]
    rng = np.random.default_rng(len(cell) + len(direction))
    feeds = {"x": rng.uniform(-1, 1, (STEPS, BATCH, SIZE)),
             "w": rng.uniform(-0.6, 0.6, (directions, gates * HIDDEN, SIZE)),
             "r": rng.uniform(-0.6, 0.6, (directions, gates * HIDDEN, HIDDEN))}
    names = ["x", "w", "r", "b" if bias else "", "lens" if sequence_lens else "", "h0" if initial else ""]
    if layout:
        feeds["x"] = feeds["x"].transpose(1, 0, 2).copy()
    if bias:
        feeds["b"] = rng.uniform(-0.5, 0.5, (directions, 2 * gates * HIDDEN))
    if initial:
        feeds["h0"] = rng.uniform(-0.5, 0.5, (directions, BATCH, HIDDEN))
    if initial and op == "LSTM":
        names.append("c0")
        feeds["c0"] = rng.uniform(-0.5, 0.5, (directions, BATCH, HIDDEN))
    outputs = ["y", "y_h"] + (["y_c"] if op == "LSTM" else [])
    if layout:
        feeds.update({k: feeds[k].transpose(1, 0, 2).copy() for k in ("h0", "c0") if k in feeds})
    node = helper.make_node(op, names, outputs, hidden_size=HIDDEN, direction=direction, layout=layout, **attrs)
    x_dims = [BATCH, steps, SIZE] if layout else [steps, BATCH, SIZE]
    inputs = [helper.make_tensor_value_info(n, dtype, x_dims if n == "x" else list(feeds[n].shape))
              for n in names if n and n != "lens"]
    if sequence_lens:
        inputs.append(helper.make_tensor_value_info("lens", TensorProto.INT32, [BATCH]))
        feeds["lens"] = np.full(BATCH, STEPS, np.int32)
    state = [BATCH, directions, HIDDEN] if layout else [directions, BATCH, HIDDEN]
    y_dims = [BATCH, steps, directions, HIDDEN] if layout else [steps, directions, BATCH, HIDDEN]
    shapes = {"y": y_dims, "y_h": state, "y_c": state}
    graph = helper.make_graph([node], "rnn", inputs,
                              [helper.make_tensor_value_info(o, dtype, shapes[o]) for o in outputs])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    dt = helper.tensor_dtype_to_np_dtype(dtype)
    return model, {k: v.astype(dt) if v.dtype.kind == "f" else v for k, v in feeds.items()}


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("bias,initial", [(True, True), (False, False)])
def test_the_unrolled_form_computes_what_onnxruntime_computes(cell, direction, bias, initial):
    from onnxkit.runtime.session import ort

    model, feeds = recurrent(cell, direction, TensorProto.FLOAT, bias=bias, initial=initial)
    unrolled = onnx.ModelProto()
    unrolled.CopyFrom(model)
    unroll(unrolled, [0], value_types(unrolled))
    assert {n.op_type for n in unrolled.graph.node}.isdisjoint({"LSTM", "GRU", "RNN"})
    kernel, written_out = (ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
                           for m in (model, unrolled))
    for name, expected, got in zip([o.name for o in model.graph.output], kernel.run(None, feeds),
                                   written_out.run(None, feeds), strict=True):
        np.testing.assert_allclose(got, expected, rtol=0, atol=2e-6, err_msg=name)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_the_batch_first_layout_matches_the_reference_evaluator(cell, direction):
    """layout 1, which ONNX Runtime's kernels refuse: checked against onnx.reference (float64)."""
    from onnx.reference import ReferenceEvaluator

    model, feeds = recurrent(cell, direction, TensorProto.DOUBLE, layout=1)
    unrolled = onnx.ModelProto()
    unrolled.CopyFrom(model)
    unroll(unrolled, [0], value_types(unrolled))
    try:
        expected = ReferenceEvaluator(model).run(None, feeds)
    except (NotImplementedError, RuntimeError) as e:  # onnx 1.17's reference
        pytest.skip(f"onnx {onnx.__version__}'s reference evaluator: {str(e)[:80]}")
    for got, want in zip(ReferenceEvaluator(unrolled).run(None, feeds), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_gradients_through_time_match_finite_differences(cell, direction):
    _skip_unless_the_reference_agrees_with_onnxruntime(cell, direction)
    model, feeds = recurrent(cell, direction, TensorProto.DOUBLE)
    for name, (analytic, numeric) in gradcheck(model, feeds, list(feeds)).items():
        np.testing.assert_allclose(analytic, numeric, rtol=0, atol=1e-6 * max(1.0, np.abs(numeric).max()),
                                   err_msg=f"{cell} {direction}: d/d{name}")


@pytest.mark.parametrize("activation", ["Relu", "Sigmoid"])
def test_an_rnn_with_pytorchs_other_nonlinearity(activation):
    # nn.RNN(nonlinearity="relu") exports activations=["Relu"]; RNN had no gradient at all ("op RNN has no
    # gradient rule"). onnx.reference knows only Tanh: the unrolled form is checked against ONNX Runtime's
    # kernel, its gradients against finite differences of the unrolled form in float64
    from onnxkit.runtime.session import ort

    model, feeds = recurrent("RNN", "bidirectional", TensorProto.FLOAT)
    model.graph.node[0].attribute.append(helper.make_attribute("activations", [activation] * 2))
    unrolled = onnx.ModelProto()
    unrolled.CopyFrom(model)
    unroll(unrolled, [0], value_types(unrolled))
    kernel, written_out = (ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
                           for m in (model, unrolled))
    for expected, got in zip(kernel.run(None, feeds), written_out.run(None, feeds), strict=True):
        np.testing.assert_allclose(got, expected, rtol=0, atol=2e-6)
    model, feeds = recurrent("RNN", "bidirectional", TensorProto.DOUBLE)
    model.graph.node[0].attribute.append(helper.make_attribute("activations", [activation] * 2))
    unroll(model, [0], value_types(model))
    for name, (analytic, numeric) in gradcheck(model, feeds, list(feeds)).items():
        np.testing.assert_allclose(analytic, numeric, rtol=0, atol=1e-6 * max(1.0, np.abs(numeric).max()),
                                   err_msg=f"d/d{name}")


def _skip_unless_the_reference_agrees_with_onnxruntime(cell: str, direction: str) -> None:
    """The finite differences run the node in onnx.reference: onnx 1.17's (the ORT-training
    environment's) GRU runs forward whatever the direction or refuses two, its LSTM makes no Y_c."""
    from onnx.reference import ReferenceEvaluator

    from onnxkit.runtime.session import ort

    model, feeds = recurrent(cell, direction, TensorProto.FLOAT)
    kernel = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    try:
        reference = ReferenceEvaluator(model).run(None, feeds)
    except (NotImplementedError, RuntimeError) as e:  # 1.17's LSTM has no Y_c either
        pytest.skip(f"onnx {onnx.__version__}'s reference evaluator: {str(e)[:80]}")
    if max(float(np.abs(a - b).max()) for a, b in zip(kernel, reference, strict=True)) > 1e-5:
        pytest.skip(f"onnx {onnx.__version__}'s reference {cell} ({direction}) disagrees with ONNX Runtime's kernel")


def test_what_cannot_be_unrolled_is_refused_by_name():
    model, _ = recurrent("LSTM", "forward", TensorProto.FLOAT, sequence_lens=True)
    label = "#0 (output 'y')"
    assert missing_rules(model, ["w"], "y_h") == [("LSTM with sequence_lens (sequences of different lengths)", label)]
    with pytest.raises(OnnxkitError, match=r"cannot differentiate LSTM \(node #0 \(output 'y'\)\) with sequence_lens"):
        add_gradients(model, ["w"], "y_h")
    model, _ = recurrent("GRU", "forward", TensorProto.FLOAT, steps="steps")
    assert missing_rules(model, ["w"], "y_h") == [("GRU over a sequence length the graph does not fix", label)]
    model, _ = recurrent("GRU", "forward", TensorProto.FLOAT)
    assert missing_rules(model, ["w", "r"], "y_h") == []


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_the_ort_training_backend_refuses_the_directions_its_kernels_lack(direction):
    """onnxruntime-training 1.19.2's LSTMGrad / GRUGrad kernels run the forward direction only
    (otherwise its session fails to start with a C++ traceback): refused before training."""
    from onnxkit.train.backends._ort_legalize import unsupported_ops

    for cell in ("LSTM", "GRU"):
        model, _ = recurrent(cell, direction, TensorProto.FLOAT)
        expected = [] if direction == "forward" else [(f"{cell} ({direction})", "#0 (output 'y')")]
        assert unsupported_ops(model, ["w"], "y_h") == expected


@pytest.mark.training
def test_a_gru_over_the_rows_of_each_digit_trains(tmp_path):
    """x [batch, 64] -> 8 steps of 8 pixels -> GRU(16), PyTorch's export shape (linear_before_reset) -> head."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Reshape", ["x", "rows"], ["seq"]),
        helper.make_node("Transpose", ["seq"], ["steps"], perm=[1, 0, 2]),
        helper.make_node("GRU", ["steps", "gru.w", "gru.r", "gru.b"], ["", "last"], hidden_size=16,
                         linear_before_reset=1),
        helper.make_node("Squeeze", ["last", "zero"], ["h"]),
        helper.make_node("Gemm", ["h", "head.w", "head.b"], ["logits"]),
    ]
    weights = {"gru.w": rng.uniform(-0.25, 0.25, (1, 48, 8)), "gru.r": rng.uniform(-0.25, 0.25, (1, 48, 16)),
               "gru.b": np.zeros((1, 96)), "head.w": rng.uniform(-0.25, 0.25, (16, 10)), "head.b": np.zeros(10)}
    trains_on_digit_rows(tmp_path, nodes, weights, {"rows": [-1, 8, 8], "zero": [0]}, opset=17, kept="GRU")
