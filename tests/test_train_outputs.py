"""Models whose scores are not one [batch, classes] output: several outputs (the one trained is the
one eval and predict score), multi-label 0/1 matrices, per-pixel and per-token class ids."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxkit import runtime
from onnxkit.data import Dataset, Split
from onnxkit.errors import OnnxkitError
from onnxkit.evaluate import evaluate
from onnxkit.files import load_model
from onnxkit.metadata import metadata
from onnxkit.train import fit

pytestmark = pytest.mark.training

D = 6


def model_of(nodes: list, outputs: list, weights: dict[str, np.ndarray], x_shape: list) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)], outputs,
                              [numpy_helper.from_array(w.astype(np.float32), n) for n, w in weights.items()])
    return helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 17)])


def dataset(x: np.ndarray, labels: np.ndarray) -> Dataset:
    n = len(x) // 3
    return Dataset("toy", *(Split(s, {"x": x[i * n:(i + 1) * n]}, labels[i * n:(i + 1) * n])
                            for i, s in enumerate(("train", "validation", "test"))))


def test_a_second_output_trained_is_the_one_eval_and_predict_score(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, D)).astype(np.float32)
    labels = np.digitize(x[:, 0] + x[:, 1], [-0.5, 0.5])  # 3 classes
    model = model_of(  # (features [batch, 8], logits [batch, 3]): the first output is no classifier
        [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["features"]),
         helper.make_node("MatMul", ["features", "w2"], ["logits"])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 8]),
         helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        {"w1": rng.normal(size=(D, 8)), "w2": rng.normal(size=(8, 3)) * 0.1}, ["batch", D])
    result = fit(model, dataset(x, labels), tmp_path / "run", output="logits", epochs=30, lr=0.03, device="cpu")
    trained = load_model(result.model_path)
    assert [o.name for o in trained.graph.output] == ["features", "logits"]
    assert metadata(trained)["onnxkit.output"] == "logits"
    test = Split("test", {"x": x[200:]}, labels[200:])
    scored = evaluate(trained, test)  # scored the 8 features as 8 class scores before (accuracy 0.12, now 0.88)
    assert scored == evaluate(trained, test, output="logits") == result.metrics["test"]
    assert scored["accuracy"] > 0.8 and len(scored["confusion"]) == 3
    logits = runtime.load(str(result.model_path)).predict(x[200:])
    assert logits.scores_name == "logits"  # predict read 'features' and named 8 classes before
    np.testing.assert_array_equal(logits.classes, logits["logits"].argmax(axis=1))
    again = fit(trained, dataset(x, labels), tmp_path / "again", epochs=1, device="cpu")  # no output= now
    assert metadata(load_model(again.model_path))["onnxkit.output"] == "logits"
    assert again.metrics["test"]["accuracy"] > 0.8


def linear(outputs: int, x_shape: list | None = None) -> onnx.ModelProto:
    rng = np.random.default_rng(1)
    return model_of([helper.make_node("MatMul", ["x", "w"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])],
                    [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", outputs])],
                    {"w": rng.normal(size=(D, outputs)) * 0.1, "b": np.zeros(outputs)}, x_shape or ["batch", D])


def test_a_multi_label_matrix_trains_with_bce_by_default_and_scores_every_label(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, D)).astype(np.float32)
    labels = np.stack([x[:, 0] > 0, x[:, 1] + x[:, 2] > 0, x[:, 3] < 0.5, x[:, 4] - x[:, 0] > 0], 1).astype(np.int64)
    # was: "class labels have shape [100, 4]; give one class id per row"; with loss= bce-with-logits a traceback
    result = fit(linear(4), dataset(x, labels), tmp_path / "run", epochs=40, lr=0.05, device="cpu")
    trained = load_model(result.model_path)
    assert metadata(trained)["onnxkit.task"] == "binary" and result.history[-1]["train_loss"] < 0.3
    logits = runtime.load(str(result.model_path)).predict(x[200:])
    z, t = logits.scores.astype(np.float64), labels[200:]
    test = result.metrics["test"]
    assert test["loss"] == pytest.approx(np.mean(np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z)))), rel=1e-6)
    assert test["accuracy"] == pytest.approx(np.mean((z > 0) == t)) and test["accuracy"] > 0.9
    assert np.array(test["confusion"]).sum() == t.size
    assert logits.multi_label and logits.labels is None
    np.testing.assert_allclose(logits.probabilities(), 1 / (1 + np.exp(-z)), rtol=1e-6)
    with pytest.raises(OnnxkitError, match="multi-label model"):
        logits.top_k(1)
