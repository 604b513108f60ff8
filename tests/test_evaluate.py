"""Metrics against scikit-learn; `evaluate` on small hand-written ONNX models against numpy."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from sklearn import metrics as skm

from onnxkit.data import Split
from onnxkit.errors import OnnxkitError
from onnxkit.evaluate import bce_with_logits, confusion_matrix, cross_entropy, evaluate, l1, macro_f1, mse


def test_metrics_match_scikit_learn():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 4)).astype(np.float32)
    labels = rng.integers(0, 4, 50)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert cross_entropy(logits, labels) == pytest.approx(skm.log_loss(labels, probs, labels=range(4)), rel=1e-6)
    predicted = logits.argmax(1)
    confusion = confusion_matrix(labels, predicted, 4)
    np.testing.assert_array_equal(confusion, skm.confusion_matrix(labels, predicted, labels=range(4)))
    assert macro_f1(confusion) == pytest.approx(skm.f1_score(labels, predicted, average="macro"))
    # a class never predicted nor present is left out of the mean, as scikit-learn does with labels=present
    partial = confusion_matrix(np.array([0, 0, 1]), np.array([0, 1, 1]), 3)
    assert macro_f1(partial) == pytest.approx(skm.f1_score([0, 0, 1], [0, 1, 1], average="macro"))

    z = rng.normal(scale=3, size=40)
    t = rng.integers(0, 2, 40)
    assert bce_with_logits(z, t) == pytest.approx(skm.log_loss(t, 1 / (1 + np.exp(-z))), rel=1e-6)
    big = rng.normal(scale=300, size=40)  # the stable form neither overflows nor loses the loss of wrong answers
    assert bce_with_logits(big, t) == pytest.approx(np.mean(np.logaddexp(0, big) - big * t))
    y, yhat = rng.normal(size=30), rng.normal(size=30)
    assert mse(yhat, y) == pytest.approx(skm.mean_squared_error(y, yhat))
    assert l1(yhat, y) == pytest.approx(skm.mean_absolute_error(y, yhat))


def linear_model(weight: np.ndarray, bias: np.ndarray, metadata: dict[str, str] | None = None) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["mm"]), helper.make_node("Add", ["mm", "b"], ["scores"])],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", weight.shape[0]])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", weight.shape[1]])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in (("w", weight), ("b", bias))],
    )
    model = helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 17)])
    if metadata:
        helper.set_model_props(model, metadata)
    return model


def test_evaluate_classifier_binary_and_regression(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 5)).astype(np.float32)
    w, b = rng.normal(size=(5, 3)), rng.normal(size=3)
    scores = x.astype(np.float64) @ w + b
    labels = rng.integers(0, 3, 300)
    split = Split("test", {"features": x}, labels)  # one array binds to the one input, whatever its name
    model = linear_model(w, b, {"onnxkit.labels": '["a", "b", "c"]'})
    path = tmp_path / "clf.onnx"
    onnx.save(model, path)
    m = evaluate(path, split, batch_size=64)
    assert m["task"] == "classification" and m["examples"] == 300 and m["labels"] == ["a", "b", "c"]
    assert m["accuracy"] == pytest.approx(np.mean(scores.argmax(1) == labels))
    assert m["loss"] == pytest.approx(cross_entropy(scores, labels), rel=1e-5)
    np.testing.assert_array_equal(m["confusion"], skm.confusion_matrix(labels, scores.argmax(1)))

    wb, bb = rng.normal(size=(5, 1)), rng.normal(size=1)
    logit = (x.astype(np.float64) @ wb + bb)[:, 0]
    targets = (rng.random(300) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    binary = evaluate(linear_model(wb, bb), Split("test", {"x": x}, targets))
    assert binary["task"] == "binary" and binary["accuracy"] == pytest.approx(np.mean((logit > 0) == targets))
    assert binary["loss"] == pytest.approx(bce_with_logits(logit, targets), rel=1e-5)

    y = (x.astype(np.float64) @ wb + bb)[:, 0] + rng.normal(scale=0.1, size=300)
    reg = evaluate(linear_model(wb, bb), Split("test", {"x": x}, y.astype(np.float32)))
    assert reg["task"] == "regression" and "accuracy" not in reg
    assert reg["loss"] == pytest.approx(mse(logit, y), rel=1e-4)
    assert reg["mae"] == pytest.approx(l1(logit, y), rel=1e-4)


def test_evaluate_rejects_mismatched_data_and_unknown_outputs():
    model = linear_model(np.ones((5, 3)), np.zeros(3))
    with pytest.raises(OnnxkitError, match=r"has shape \[4, 2\] but model input 'x' expects \[batch, 5\]"):
        evaluate(model, Split("test", {"x": np.zeros((4, 2), np.float32)}, np.zeros(4, np.int64)))
    with pytest.raises(OnnxkitError, match="model has no output 'probs'"):
        evaluate(model, Split("test", {"x": np.zeros((4, 5), np.float32)}, np.zeros(4, np.int64)), output="probs")


def test_evaluate_does_not_import_the_training_package():
    code = (
        "import sys, numpy as np\n"
        "from onnxkit.evaluate import evaluate\n"
        "bad = [m for m in sys.modules if m.startswith(('onnxkit.train', 'torch'))]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
