"""Models that take their batch on axis 1 (PyTorch's batch_first=False LSTM exports, `[seq, batch, features]`):
trained, evaluated and run on rows-first data, against a batch-first twin with the same weights, finite
differences in float64 (onnx.reference) and onnxruntime on the model as exported."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import ort_run
from onnx import TensorProto, helper, numpy_helper
from test_serve_batcher import _merged

from onnxkit import runtime
from onnxkit.autodiff.check import reference
from onnxkit.batch_axis import AXES_HINT, as_exported, layout_of, rows_first, seq_first
from onnxkit.data import Dataset, Split
from onnxkit.errors import OnnxkitError
from onnxkit.evaluate import evaluate
from onnxkit.files import load_model
from onnxkit.quantize import quantize
from onnxkit.train import fit
from onnxkit.train.backends import default_backend

pytestmark = [pytest.mark.skipif(default_backend() == "ort-training", reason=(
    "onnxruntime-training 1.19.2's gradient builder fails type inference on a hand-built LSTM's LSTMGrad")),
              pytest.mark.filterwarnings("ignore:the validation and test splits are empty")]

ROWS, STEPS, FEATURES, HIDDEN, CLASSES = 12, 5, 3, 4, 3


def lstm_model(*, seq_first_layout: bool, per_step: bool, dims: tuple = ("seq", "batch")) -> onnx.ModelProto:
    """An LSTM classifier as PyTorch's TorchScript exporter writes one: over `[seq, batch, F]` (`seq_first_layout`)
    or, for the batch-first twin, `[batch, seq, F]` transposed first; the last step's scores `[batch, C]`, or every
    step's (`per_step`): `[seq, batch, C]`, `[batch, seq, C]` for the twin. The same weights in both."""
    rng = np.random.default_rng(0)
    weights = {"W": rng.normal(size=(1, 4 * HIDDEN, FEATURES)) * 0.5,
               "R": rng.normal(size=(1, 4 * HIDDEN, HIDDEN)) * 0.5,
               "B": rng.normal(size=(1, 8 * HIDDEN)) * 0.1, "head": rng.normal(size=(HIDDEN, CLASSES))}
    constants = {"last": [-1], "end": [2**62], "first": [0], "rows": [-1, HIDDEN], "step_axis": [1]}
    steps, batch = dims
    n = helper.make_node
    nodes = [] if seq_first_layout else [n("Transpose", ["x"], ["steps"], perm=[1, 0, 2])]
    nodes.append(n("LSTM", ["x" if seq_first_layout else "steps", "W", "R", "B"], ["y"], hidden_size=HIDDEN))
    if per_step:
        nodes += [n("Squeeze", ["y", "step_axis"], ["every"]), n("MatMul", ["every", "head"],
                                                                ["logits" if seq_first_layout else "scores"])]
        if not seq_first_layout:
            nodes.append(n("Transpose", ["scores"], ["logits"], perm=[1, 0, 2]))
        out = [steps, batch, CLASSES] if seq_first_layout else [batch, steps, CLASSES]
    else:
        nodes += [n("Slice", ["y", "last", "end", "first"], ["final"]), n("Reshape", ["final", "rows"], ["flat"]),
                  n("MatMul", ["flat", "head"], ["logits"])]
        out = [batch, CLASSES]
    x = [steps, batch, FEATURES] if seq_first_layout else [batch, steps, FEATURES]
    initializers = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()]
    initializers += [numpy_helper.from_array(np.array(v, np.int64), k) for k, v in constants.items()]
    graph = helper.make_graph(nodes, "lstm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x)],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, out)], initializers)
    return helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 17)])


def rows(per_step: bool, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """[ROWS, STEPS, FEATURES] examples, one per row, and their class ids (one a step for `per_step`)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(ROWS, STEPS, FEATURES)).astype(np.float32)
    return x, rng.integers(0, CLASSES, (ROWS, STEPS) if per_step else ROWS).astype(np.int64)


def float64_loss(model: onnx.ModelProto, x: np.ndarray, labels: np.ndarray):  # noqa: ANN201 - a closure
    """Mean cross-entropy of the seq-first `model` in float64 (onnx.reference), fed `x` as it takes it: [seq, batch,
    F], its scores read back rows-first; a function of one weight's value."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    weights = {k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in weights.items()}
    del model.graph.initializer[:]
    model.graph.input[0].type.tensor_type.elem_type = TensorProto.DOUBLE
    model.graph.output[0].type.tensor_type.elem_type = TensorProto.DOUBLE
    model.graph.input.extend(helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
                             for k, v in weights.items())
    session = reference(model)
    feeds = {"x": np.swapaxes(x, 0, 1).astype(np.float64)}

    def loss(name: str, value: np.ndarray) -> float:
        scores = session.run(["logits"], {**feeds, **weights, name: value})[0]
        scores = np.moveaxis(scores, 1, 0) if scores.ndim == 3 else scores  # [seq, batch, C] -> [batch, seq, C]
        z = scores - scores.max(axis=-1, keepdims=True)
        log_probs = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
        return float(-np.take_along_axis(log_probs, labels[..., None], axis=-1).mean())

    loss.weights = weights  # type: ignore[attr-defined]
    return loss


@pytest.mark.filterwarnings("ignore:the validation and test splits are empty")
def one_sgd_step(model: onnx.ModelProto, x: np.ndarray, labels: np.ndarray, folder) -> dict[str, np.ndarray]:  # noqa: ANN001
    """The weights after one SGD step (lr 1) over all of `x`, and the trained model."""
    empty = Split("empty", {"x": x[:0]}, labels[:0])
    data = Dataset("seq", Split("train", {"x": x}, labels), empty, empty)
    result = fit(model, data, folder, optimizer="sgd", lr=1.0, weight_decay=0.0, epochs=1, batch_size=ROWS,
                 shuffle=False, keep_best=False, evaluate_test=False, device="cpu")
    assert result.metrics["steps"] == 1
    return load_model(result.model_path)


@pytest.mark.parametrize("per_step", [False, True], ids=["last-step", "per-step"])
def test_one_sgd_step_of_a_seq_first_lstm_equals_its_batch_first_twin_and_finite_differences(tmp_path, per_step):
    x, labels = rows(per_step)
    model = lstm_model(seq_first_layout=True, per_step=per_step)
    twin = lstm_model(seq_first_layout=False, per_step=per_step)
    trained = one_sgd_step(model, x, labels, tmp_path / "seq-first")
    twin_trained = one_sgd_step(twin, x, labels, tmp_path / "batch-first")
    before = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer if t.data_type == TensorProto.FLOAT}
    after = {t.name: numpy_helper.to_array(t) for t in trained.graph.initializer}
    twin_after = {t.name: numpy_helper.to_array(t) for t in twin_trained.graph.initializer}
    loss = float64_loss(model, x, labels)
    for name, start in before.items():
        update = start.astype(np.float64) - after[name]  # the gradient, for lr 1
        np.testing.assert_allclose(update, start - twin_after[name], rtol=1e-4, atol=1e-6, err_msg=name)
        expected = np.zeros_like(update)
        for index in np.ndindex(start.shape):
            plus, minus = loss.weights[name].copy(), loss.weights[name].copy()
            plus[index] += 1e-6
            minus[index] -= 1e-6
            expected[index] = (loss(name, plus) - loss(name, minus)) / 2e-6
        error = np.linalg.norm(update - expected) / np.linalg.norm(expected)
        assert error < 1e-3, f"{name}: relative error {error:.2e}"
    assert np.abs(before["W"] - after["W"]).max() > 1e-3  # it did train
    # the trained model keeps the layout it was exported in: same nodes, [seq, batch, ...] in and out
    assert [n.op_type for n in trained.graph.node] == [n.op_type for n in model.graph.node]
    assert trained.graph.input[0].type == model.graph.input[0].type
    assert trained.graph.output[0].type == model.graph.output[0].type


@pytest.mark.parametrize("per_step", [False, True], ids=["last-step", "per-step"])
def test_eval_and_predict_feed_rows_transposed_and_read_outputs_rows_first(tmp_path, per_step, run_cli):
    x, labels = rows(per_step)
    model = lstm_model(seq_first_layout=True, per_step=per_step)
    expected = ort_run(model, {"x": np.swapaxes(x, 0, 1).copy()})[0]  # onnxruntime, as exported
    expected = np.swapaxes(expected, 0, 1) if per_step else expected
    path = tmp_path / "model.onnx"
    onnx.save(model, path)
    loaded = runtime.load(str(path))
    assert loaded.inputs[0].shape == ("batch", "seq", FEATURES)  # as it takes rows, and serve's metadata says
    np.testing.assert_allclose(loaded.predict(x)["logits"], expected, rtol=1e-6)
    np.savez(tmp_path / "data.npz", x=x, labels=labels)
    result = run_cli("predict", path, tmp_path / "data.npz", "-o", tmp_path / "out.npz")
    assert result.code == 0, result.err
    np.testing.assert_allclose(np.load(tmp_path / "out.npz")["logits"], expected, rtol=1e-6)
    metrics = evaluate(str(path), (x, labels), batch_size=5)  # 3 batches
    picked = expected.argmax(axis=-1)
    assert metrics["accuracy"] == pytest.approx((picked == labels).mean())
    z = expected - expected.max(axis=-1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    assert metrics["loss"] == pytest.approx(-np.take_along_axis(log_probs, labels[..., None], -1).mean(), rel=1e-5)


@pytest.mark.parametrize("options", [[], ["--standardize"]], ids=["plain", "standardized"])
def test_a_seq_first_lstm_trains_through_the_cli_as_its_batch_first_twin(tmp_path, run_cli, options):
    # standardisation's nodes come between the input and the Transpose training adds: the trained model keeps both
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, STEPS, FEATURES)).astype(np.float32)
    labels = (x[:, :, 0].sum(axis=1) > 0).astype(np.int64) + (x[:, -1, 1] > 1)
    np.savez(tmp_path / "data.npz", x=x, labels=labels)
    runs = {}
    for name, seq_first_layout in (("seq", True), ("twin", False)):
        onnx.save(lstm_model(seq_first_layout=seq_first_layout, per_step=False), tmp_path / f"{name}.onnx")
        result = run_cli("train", tmp_path / f"{name}.onnx", "--data", tmp_path / "data.npz", "--epochs", "15",
                         "--lr", "0.01", *options, "-o", tmp_path / name)
        assert result.code == 0, result.err
        runs[name] = result.out + result.err
    assert "takes its batch on axis 1 (x [seq, batch, 3]" in runs["seq"]
    seq, twin = (runtime.load(str(tmp_path / name / "model.onnx")).predict(x)["logits"] for name in ("seq", "twin"))
    np.testing.assert_allclose(seq, twin, rtol=1e-4, atol=1e-5)
    assert (seq.argmax(axis=1) == labels).mean() > 0.75  # it learned (the commonest class: 52%)
    trained = load_model(tmp_path / "seq" / "model.onnx")
    assert [d.dim_param or d.dim_value for d in trained.graph.input[0].type.tensor_type.shape.dim] == \
        ["seq", "batch", FEATURES]


def test_quantize_scores_a_seq_first_model_on_rows_first_data(tmp_path):
    x, labels = rows(False)
    model = lstm_model(seq_first_layout=True, per_step=False)
    result = quantize(model, tmp_path / "q.onnx", mode="dynamic", eval_data=(x, labels), measure_latency=False)
    for key, scored in (("original", model), ("quantized", result.model)):
        scores = ort_run(scored, {"x": np.swapaxes(x, 0, 1).copy()})[0]  # as exported: [seq, batch, F]
        assert result.report.accuracy[key] == pytest.approx((scores.argmax(axis=1) == labels).mean())
    assert any(node.op_type == "DynamicQuantizeLinear" for node in result.model.graph.node)


def test_static_quantize_calibrates_a_seq_first_model_on_its_sequences(tmp_path):
    """Calibration data comes rows-first ([N, T, F]); a seq-first model's calibrator is fed it as the model takes it,
    [T, N, F]: its activation ranges equal those of its batch-first twin (the same weights and data). Fed untransposed,
    it ran the LSTM over the rows read as steps: the head's input scale came out 0.00220 against the twin's 0.00260."""
    from onnx import numpy_helper

    x, labels = rows(False)
    scales = []
    for seq in (True, False):
        result = quantize(lstm_model(seq_first_layout=seq, per_step=False), tmp_path / f"{seq}.onnx", mode="static",
                          calib=(x, labels), eval_data=(x, labels), measure_latency=False)
        values = {t.name: numpy_helper.to_array(t) for t in result.model.graph.initializer}
        scales.append({n.input[0]: float(values[n.input[1]]) for n in result.model.graph.node
                       if n.op_type == "QuantizeLinear" and n.input[0] in ("flat", "logits_QuantizeLinear_Input")})
    assert len(scales[0]) == 2 and scales[0] == scales[1]


def test_serve_merges_requests_along_their_rows_and_answers_each_rows_first():
    model = lstm_model(seq_first_layout=True, per_step=True)
    x, _ = rows(True)
    answers, runs = _merged(model, [{"x": x[:2]}, {"x": x[2:5]}])
    expected = np.swapaxes(ort_run(model, {"x": np.swapaxes(x[:5], 0, 1).copy()})[0], 0, 1)
    assert runs == 1
    np.testing.assert_allclose(answers[0]["logits"], expected[:2], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(answers[1]["logits"], expected[2:], rtol=1e-5, atol=1e-6)


def test_rows_first_and_back_is_the_model_as_exported():
    model = lstm_model(seq_first_layout=True, per_step=True)
    wrapped = rows_first(model)
    assert [d.dim_param for d in wrapped.graph.input[0].type.tensor_type.shape.dim][:2] == ["batch", "seq"]
    assert [n.op_type for n in wrapped.graph.node] == ["Transpose", *[n.op_type for n in model.graph.node],
                                                        "Transpose"]
    onnx.checker.check_model(wrapped, full_check=True)
    assert as_exported(wrapped) == model


@pytest.mark.parametrize(("inputs", "outputs", "told"), [
    ({"x": ["seq", "batch", 8]}, {"y": ["batch", 10]}, ("x", ())),  # TorchScript, axes named
    ({"x": ["seq", "batch", 8]}, {"y": ["seq", "batch", 5]}, ("x", ("y",))),  # a CTC-style per-step output
    ({"x": ["s0", "s1", 8]}, {"y": ["s1", 10]}, ("x", ())),  # dynamo's own names: the output's rows tell
    ({"x": ["s0", "s1", 8]}, {"y": ["s0", "s1", 5]}, None),  # nothing tells which is the batch
    ({"x": ["x_dynamic_axes_1", "x_dynamic_axes_2", 8]}, {"y": ["y_dynamic_axes_1", 10]}, None),  # unnamed
    ({"x": ["batch", "seq", 8]}, {"y": ["batch", "seq", 5]}, None),  # batch-first
    ({"x": ["batch", 512], "state": [2, "batch", 128]}, {"y": ["batch", 1]}, None),  # silero-vad: mixed
])
def test_the_batch_axis_is_told_from_declared_dims_only_where_they_say_it(inputs, outputs, told):
    layout = seq_first(inputs, outputs)
    assert (layout and (layout.inputs[0], layout.outputs)) == (told and (told[0], told[1]))


def test_a_model_whose_axes_do_not_say_it_is_told_how_to_export_it(tmp_path):
    model = lstm_model(seq_first_layout=True, per_step=False, dims=("x_dynamic_axes_1", "x_dynamic_axes_2"))
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "y_dynamic_axes_1"
    assert layout_of(model) is None
    x, labels = rows(False)
    with pytest.raises(OnnxkitError, match="has 5 rows for 12 examples") as caught:
        evaluate(model, (x, labels))
    assert AXES_HINT in str(caught.value)
    data = Dataset("seq", *(Split(name, {"x": x}, labels) for name in ("train", "validation", "test")))
    with pytest.raises(OnnxkitError, match="the data fixes every input axis but the first, its rows") as caught:
        fit(model, data, tmp_path / "run", epochs=1, device="cpu")
    assert AXES_HINT in str(caught.value)
    assert not (tmp_path / "run").exists()
