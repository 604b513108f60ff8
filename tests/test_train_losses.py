"""Losses, optimizers and schedules: one step through the backend against numpy formulas."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxkit.data import Dataset, Split
from onnxkit.errors import OnnxkitError
from onnxkit.evaluate import LOSSES, evaluate
from onnxkit.files import load_model
from onnxkit.metadata import metadata
from onnxkit.train import fit
from onnxkit.train.backends import default_backend
from onnxkit.train.losses import get_loss
from onnxkit.train.optim import AdamW
from onnxkit.train.schedules import Schedule, warmup_steps
from onnxkit.train.weights import load_tensors

pytestmark = pytest.mark.training

N, D, K = 12, 5, 3


def linear(outputs: int) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", D])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", outputs])],
        [
            numpy_helper.from_array(rng.normal(0, 0.5, (D, outputs)).astype(np.float32), "w"),
            numpy_helper.from_array(rng.normal(0, 0.5, (outputs,)).astype(np.float32), "b"),
        ],
    )
    return helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 17)])


def data(labels: np.ndarray) -> Dataset:
    x = np.random.default_rng(1).normal(size=(N, D)).astype(np.float32)
    empty = Split("empty", {"x": x[:0]}, labels[:0])
    return Dataset("tiny", Split("train", {"x": x}, labels), empty, empty)


def numeric_gradient(loss: str | Callable[[np.ndarray, np.ndarray], float], w: np.ndarray, b: np.ndarray,
                     x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Central differences of the numpy reference loss (by name, or a function of logits and class ids) over the
    flattened (w, b)."""
    flat = np.concatenate([w.ravel(), b]).astype(np.float64)

    def f(p: np.ndarray) -> float:
        out = x.astype(np.float64) @ p[: w.size].reshape(w.shape) + p[w.size :]
        if callable(loss):
            return loss(out, labels)
        target = labels if loss == "cross-entropy" else labels.reshape(out.shape)
        return LOSSES[loss](out, target)

    grad = np.zeros_like(flat)
    for i in range(flat.size):
        e = np.zeros_like(flat)
        e[i] = 1e-6
        grad[i] = (f(flat + e) - f(flat - e)) / 2e-6
    return grad


def step(tmp_path, model, ds, batch_size=N, **options):
    result = fit(model, ds, tmp_path, epochs=1, batch_size=batch_size, shuffle=False, keep_best=False,
                 evaluate_test=False, device="cpu", **options)
    after = {t.name: numpy_helper.to_array(t) for t in load_model(result.model_path).graph.initializer}
    return np.concatenate([after["w"].ravel(), after["b"]]).astype(np.float64)


LABELS = {
    "cross-entropy": (K, np.arange(N) % K),
    "bce-with-logits": (1, (np.arange(N) % 2).astype(np.float32)),
    "mse": (2, np.random.default_rng(2).normal(size=(N, 2)).astype(np.float32)),
    "l1": (2, np.random.default_rng(3).normal(size=(N, 2)).astype(np.float32)),
}


@pytest.mark.parametrize("loss", list(LABELS))
def test_sgd_step_follows_the_gradient_of_each_loss(tmp_path, loss):
    outputs, labels = LABELS[loss]
    model, ds = linear(outputs), data(labels)
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    before = np.concatenate([init["w"].ravel(), init["b"]]).astype(np.float64)
    grad = numeric_gradient(loss, init["w"], init["b"], ds.train.inputs["x"], labels)
    after = step(tmp_path / "plain", model, ds, loss=loss, optimizer="sgd", lr=0.5, weight_decay=0.0)
    np.testing.assert_allclose((before - after) / 0.5, grad, rtol=1e-3, atol=2e-5)


def test_gradient_accumulation_equals_one_big_batch(tmp_path):
    labels = np.arange(N) % K
    model, ds = linear(K), data(labels)
    common = dict(epochs=1, shuffle=False, keep_best=False, evaluate_test=False, device="cpu", optimizer="sgd",
                  lr=0.5, weight_decay=0.0)
    full = fit(model, ds, tmp_path / "full", batch_size=N, **common)
    halves = fit(model, ds, tmp_path / "halves", batch_size=N // 2, grad_accumulation=2, **common)
    assert full.metrics["steps"] == halves.metrics["steps"] == 1
    a, b = (load_model(r.model_path).graph.initializer for r in (full, halves))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(numpy_helper.to_array(x), numpy_helper.to_array(y), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("batch", "accumulation"), [(5, 3), (3, 3)])
def test_an_epochs_short_last_step_is_the_mean_over_its_rows(tmp_path, batch, accumulation):
    """Batches 5 + 5 + 2 (a smaller last batch), and 3 + 3 + 3 then 3 alone (fewer batches): each step's SGD
    update follows the gradient of the mean loss over its rows, as `--workers` and one larger batch take it
    (it was the mean of the batches' means over `accumulation`: (m5 + m5 + m2) / 3, m3 / 3, which the
    ort-training backend, unable to scale a batch's gradient, keeps)."""
    labels = np.arange(N) % K
    model, ds = linear(K), data(labels)
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    w, b, x, lr = init["w"].astype(np.float64), init["b"].astype(np.float64), ds.train.inputs["x"], 0.5
    by_rows = default_backend() != "ort-training"
    for first in range(0, N, batch * accumulation):
        rows = min(N - first, batch * accumulation)
        grad = sum(numeric_gradient("cross-entropy", w, b, x[lo : lo + batch], labels[lo : lo + batch])
                   * (min(batch, first + rows - lo) / rows if by_rows else 1 / accumulation)
                   for lo in range(first, first + rows, batch))
        w, b = w - lr * grad[: w.size].reshape(w.shape), b - lr * grad[w.size :]
    got = step(tmp_path, model, ds, optimizer="sgd", lr=lr, weight_decay=0.0, batch_size=batch,
               grad_accumulation=accumulation)
    np.testing.assert_allclose(got, np.concatenate([w.ravel(), b]), rtol=1e-4, atol=1e-5)


def test_sgd_weight_decay_clipping_and_adamw_first_step(tmp_path):
    labels = np.arange(N) % K
    model, ds = linear(K), data(labels)
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    before = np.concatenate([init["w"].ravel(), init["b"]]).astype(np.float64)
    grad = numeric_gradient("cross-entropy", init["w"], init["b"], ds.train.inputs["x"], labels)

    decayed = step(tmp_path / "decay", model, ds, optimizer="sgd", lr=0.5, weight_decay=0.1)
    np.testing.assert_allclose(decayed, before - 0.5 * (grad + 0.1 * before), rtol=1e-4, atol=1e-5)

    norm = np.linalg.norm(grad)
    clipped = step(tmp_path / "clip", model, ds, optimizer="sgd", lr=0.5, weight_decay=0.0, clip_grad_norm=norm / 4)
    np.testing.assert_allclose(clipped, before - 0.5 * grad / 4, rtol=1e-3, atol=1e-5)

    # AdamW's first bias-corrected step moves each weight by lr * g / (|g| + eps), decoupled decay on top
    adam = step(tmp_path / "adam", model, ds, optimizer=AdamW(eps=1e-8), lr=0.01, weight_decay=0.1)
    expected = before - 0.01 * grad / (np.abs(grad) + 1e-8) - 0.01 * 0.1 * before
    np.testing.assert_allclose(adam, expected, rtol=1e-3, atol=2e-5)


@pytest.mark.parametrize("loss", list(LABELS))
def test_loss_graphs_match_the_numpy_reference(loss):
    outputs, labels = LABELS[loss]
    rng = np.random.default_rng(4)
    scores = (rng.normal(size=(N, outputs)) * 20).astype(np.float32)  # large values: stability matters
    spec = get_loss(loss)
    out_vi = helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", outputs])
    graph = helper.make_graph([], "loss", [out_vi, spec.labels_input("labels", out_vi)], [])
    name = spec.add_to_graph(graph, "scores", "labels")
    graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, []))
    model = helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 17)])
    fed = spec.labels_for(labels, ("batch", outputs))
    value = ort.InferenceSession(model.SerializeToString()).run(None, {"scores": scores, "labels": fed})[0]
    reference = LOSSES[loss](scores, labels if loss == "cross-entropy" else fed)
    assert float(value) == pytest.approx(reference, rel=1e-5)



def smoothed_cross_entropy(epsilon: float, axis: int = 1) -> Callable[[np.ndarray, np.ndarray], float]:
    """PyTorch's CrossEntropyLoss(label_smoothing=epsilon) from its definition: the mean over positions of the
    cross-entropy against targets of epsilon / C on every class plus 1 - epsilon on the labelled one."""

    def loss(logits: np.ndarray, labels: np.ndarray) -> float:
        scores = np.moveaxis(logits.astype(np.float64), axis, -1)
        log_p = scores - np.logaddexp.reduce(scores, axis=-1, keepdims=True)
        target = np.full(log_p.shape, epsilon / log_p.shape[-1])
        np.put_along_axis(target, labels[..., None], 1 - epsilon + epsilon / log_p.shape[-1], axis=-1)
        return float(-(target * log_p).sum(axis=-1).mean())

    return loss


def test_label_smoothing_is_pytorchs_in_the_loss_graph_and_its_gradient(tmp_path):
    rng = np.random.default_rng(5)
    for shape, axis in (((N, K), 1), ((4, K, 5, 2), 1)):  # one class id a row, and one per position
        scores = (rng.normal(size=shape) * 5).astype(np.float32)
        labels = rng.integers(0, K, (shape[0], *shape[2:]))
        spec = get_loss("cross-entropy").smoothed(0.2)
        out_vi = helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", K, "h", "w"][:len(shape)])
        spec = spec.along(out_vi, labels)
        graph = helper.make_graph([], "loss", [out_vi, spec.labels_input("labels", out_vi)], [])
        graph.output.append(helper.make_tensor_value_info(spec.add_to_graph(graph, "scores", "labels"),
                                                          TensorProto.FLOAT, []))
        model = helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 17)])
        value = ort.InferenceSession(model.SerializeToString()).run(None, {"scores": scores, "labels": labels})[0]
        assert float(value) == pytest.approx(smoothed_cross_entropy(0.2, axis)(scores, labels), rel=1e-5)
    labels = np.arange(N) % K  # an SGD step follows the smoothed loss's gradient
    model, ds = linear(K), data(labels)
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    before = np.concatenate([init["w"].ravel(), init["b"]]).astype(np.float64)
    grad = numeric_gradient(smoothed_cross_entropy(0.2), init["w"], init["b"], ds.train.inputs["x"], labels)
    after = step(tmp_path, model, ds, label_smoothing=0.2, optimizer="sgd", lr=0.5, weight_decay=0.0)
    np.testing.assert_allclose((before - after) / 0.5, grad, rtol=1e-3, atol=2e-5)


def soft_cross_entropy(epsilon: float = 0.0) -> Callable[[np.ndarray, np.ndarray], float]:
    """PyTorch's CrossEntropyLoss(label_smoothing=epsilon) of [N, C] logits against class probabilities [N, C], from
    its definition: the mean over rows of -sum(targets * log_softmax), targets smoothed to (1 - eps) t + eps / C."""

    def loss(logits: np.ndarray, targets: np.ndarray) -> float:
        scores = logits.astype(np.float64)
        log_p = scores - np.logaddexp.reduce(scores, axis=1, keepdims=True)
        target = (1 - epsilon) * targets.astype(np.float64) + epsilon / scores.shape[1]
        return float(-(target * log_p).sum(axis=1).mean())

    return loss


def probabilities(rows: int, seed: int) -> np.ndarray:
    """[rows, K] soft targets: each row a random distribution over the classes."""
    raw = np.random.default_rng(seed).random((rows, K)) ** 3
    return (raw / raw.sum(axis=1, keepdims=True)).astype(np.float32)


def test_class_probabilities_as_labels_are_pytorchs_soft_targets_in_the_loss_graph_and_its_gradient(tmp_path):
    # [N, C] float labels of a classifier were refused ("give one class id per row"); PyTorch's CrossEntropyLoss
    # takes them as class probabilities (distillation, mixup)
    scores, targets = (np.random.default_rng(6).normal(size=(N, K)) * 5).astype(np.float32), probabilities(N, 7)
    out_vi = helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", K])
    for epsilon in (0.0, 0.2):
        spec = get_loss("cross-entropy").along(out_vi, targets)
        spec = spec.smoothed(epsilon) if epsilon else spec
        graph = helper.make_graph([], "loss", [out_vi, spec.labels_input("labels", out_vi)], [])
        graph.output.append(helper.make_tensor_value_info(spec.add_to_graph(graph, "scores", "labels"),
                                                          TensorProto.FLOAT, []))
        model = helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 17)])
        value = ort.InferenceSession(model.SerializeToString()).run(None, {"scores": scores, "labels": targets})[0]
        assert float(value) == pytest.approx(soft_cross_entropy(epsilon)(scores, targets), rel=1e-5)
    assert LOSSES["cross-entropy"](scores, targets) == pytest.approx(soft_cross_entropy()(scores, targets), rel=1e-12)
    model, ds = linear(K), data(targets)  # an SGD step follows the soft loss's gradient
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    before = np.concatenate([init["w"].ravel(), init["b"]]).astype(np.float64)
    grad = numeric_gradient(soft_cross_entropy(0.1), init["w"], init["b"], ds.train.inputs["x"], targets)
    after = step(tmp_path, model, ds, loss="cross-entropy", label_smoothing=0.1, optimizer="sgd", lr=0.5,
                 weight_decay=0.0)
    np.testing.assert_allclose((before - after) / 0.5, grad, rtol=1e-3, atol=2e-5)


def test_soft_targets_score_against_their_likeliest_class_and_bad_ones_are_one_line(tmp_path):
    x = np.random.default_rng(8).normal(size=(60, D)).astype(np.float32)
    targets = probabilities(60, 9)
    model = linear(K)
    outputs = x @ numpy_helper.to_array(model.graph.initializer[0]) + numpy_helper.to_array(model.graph.initializer[1])
    scored = evaluate(model, Split("test", {"x": x}, targets), task="classification")
    assert scored["accuracy"] == pytest.approx(float((outputs.argmax(1) == targets.argmax(1)).mean()))
    assert scored["loss"] == pytest.approx(soft_cross_entropy()(outputs, targets), rel=1e-6)
    unnormalised = targets.copy()
    unnormalised[3] *= 0.8
    with pytest.raises(OnnxkitError, match=r"read as class probabilities, but row 3 holds .* \(summing to 0\.8\); "
                                           "each row's values must be 0 to 1, summing to 1"):
        fit(model, data(unnormalised[:N]), tmp_path / "bad", loss="cross-entropy", epochs=1)
    with pytest.raises(OnnxkitError, match=r"labels of shape \[12, 2\] read as class probabilities, but output 'y' "
                                           "scores 3 classes"):
        fit(model, data(np.full((N, 2), 0.5, np.float32)), tmp_path / "two", loss="cross-entropy", epochs=1)
    assert not (tmp_path / "bad").exists() and not (tmp_path / "two").exists()
    one = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])  # a single score: no distribution
    assert not get_loss("cross-entropy").along(one, np.ones((N, 1), np.float32)).soft


def test_a_zoo_classifier_trains_on_soft_targets_with_no_other_setting(tmp_path):
    from sklearn.datasets import load_iris

    from onnxkit import zoo

    x, y = load_iris(return_X_y=True)
    soft = np.full((len(y), 3), 0.05, np.float32)
    soft[np.arange(len(y)), y] = 0.9  # a teacher's confident probabilities
    result = fit(zoo.build_model("iris-mlp"), (x.astype(np.float32), soft), tmp_path / "run")
    test = result.metrics["test"]
    assert test["accuracy"] >= 0.9 and test["labels"] == ["setosa", "versicolor", "virginica"], test
    entropy = -(soft[0] * np.log(soft[0])).sum()  # 0.394: no model's cross-entropy against these targets is less
    assert entropy < test["loss"] < entropy + 0.3, test


def test_label_smoothing_of_a_loss_other_than_cross_entropy_is_refused(tmp_path):
    outputs, labels = LABELS["mse"]
    with pytest.raises(OnnxkitError, match="label_smoothing smooths cross-entropy's class targets, but this run's "
                                           "loss is mse"):
        fit(linear(outputs), data(labels), tmp_path / "mse", label_smoothing=0.1, epochs=1)
    with pytest.raises(OnnxkitError, match="label_smoothing must be between 0 and 1, got 1.5"):
        fit(linear(K), data(np.arange(N) % K), tmp_path / "big", label_smoothing=1.5, epochs=1)
    assert not (tmp_path / "mse").exists() and not (tmp_path / "big").exists()


def test_targets_differing_from_the_output_by_unit_axes_take_its_layout():
    # [N, T] targets of a per-step Linear(..., 1), a [batch, 'seq', 1] output, were refused: "give one target per
    # output value", which they were
    mse, y = get_loss("mse"), np.arange(12, dtype=np.float32).reshape(2, 6)
    assert mse.labels_for(y, ("batch", "seq", 1)).shape == (2, 6, 1)
    assert mse.labels_for(y[:, :, None], ("batch", 6)).shape == (2, 6)
    for shape in (("batch", "seq", 2), ("batch", 5, 1), ("batch", 6, 2)):
        with pytest.raises(OnnxkitError, match="give one target per output value"):
            mse.labels_for(y, shape)


def test_schedules():
    constant = Schedule("constant", 0.1, total_steps=100, warmup_steps=10)
    assert [constant.lr(s) for s in (0, 4, 9, 10, 99)] == pytest.approx([0.01, 0.05, 0.1, 0.1, 0.1])
    linear = Schedule("linear", 0.1, total_steps=110, warmup_steps=10)
    assert [linear.lr(s) for s in (9, 10, 60, 109)] == pytest.approx([0.1, 0.1, 0.05, 0.001])
    cosine = Schedule("cosine", 0.1, total_steps=100)
    assert [cosine.lr(s) for s in (0, 25, 50, 100)] == pytest.approx(
        [0.1, 0.05 * (1 + math.cos(math.pi / 4)), 0.05, 0.0], abs=1e-12
    )
    assert warmup_steps(0.05, 400) == 20 and warmup_steps(30, 400) == 30


def test_early_stopping_keeps_the_best_epoch_and_steps_limit(tmp_path):
    from onnxkit import zoo

    model = zoo.build_model("iris-mlp")
    # a learning rate too small to change any prediction: accuracy never improves after epoch 1
    stalled = fit(model, "iris", tmp_path / "stall", lr=1e-12, epochs=20, monitor="val_accuracy", patience=2,
                  evaluate_test=False)
    assert stalled.stopped_early and stalled.metrics["epochs"] == 3 and stalled.metrics["best_epoch"] == 1
    assert stalled.history[-1]["stopped_early"] and stalled.history[-1]["best_epoch"] == 1
    best = load_tensors(tmp_path / "stall" / "checkpoints" / "best.ckpt")
    written = {t.name: numpy_helper.to_array(t) for t in load_model(stalled.model_path).graph.initializer}
    for name, value in best.items():
        np.testing.assert_array_equal(written[name], value)

    # the metrics kept with a run describe model.onnx: with keep_best=False the last epoch's, not the best's
    last = fit(model, "iris", tmp_path / "last", lr=1.0, epochs=6, monitor="val_loss", keep_best=False,
               evaluate_test=False)  # too high a rate: the best validation loss comes early
    assert last.metrics["best_epoch"] < 6
    assert last.metrics["validation"]["loss"] == last.history[-1]["val_loss"]  # was the best epoch's
    assert last.metrics["validation"]["loss"] == pytest.approx(evaluate(last.model_path, "validation")["loss"])

    limited = fit(model, "iris", tmp_path / "steps", steps=8, batch_size=16, evaluate_test=False)
    assert limited.metrics["steps"] == 8 and limited.metrics["epochs"] == 2  # 6 steps per epoch


def test_progress_bar_on_a_terminal():
    import io

    from onnxkit.train.progress import Progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    bar = Progress(True, screen)
    bar.epoch_start(2, 5, 10)
    bar.step(10, 0.25, 1e-3, 12345.0)
    bar.line("epoch 2/5 done")
    shown = screen.getvalue()
    assert "\repoch 2/5 [########################] 10/10 loss 0.2500 lr 1.00e-03 12,345 samples/s" in shown
    assert shown.endswith("\r\033[Kepoch 2/5 done\n")
    quiet = Terminal()
    Progress(False, quiet).line("nothing")
    assert quiet.getvalue() == ""


@pytest.mark.parametrize("activation,loss", [("Softmax", "cross-entropy"), ("Sigmoid", "bce-with-logits")])
def test_a_probability_output_trains_on_the_logits_behind_it(tmp_path, activation, loss):
    """A classifier that outputs Softmax (or, binary, Sigmoid) probabilities, as PyTorch and Keras
    models often end, takes the same SGD step as the one that outputs the logits — the loss reads
    the logits, not a second softmax / sigmoid of the probabilities — its reported loss is that of
    the probabilities, and its model says they are probabilities (so predict thresholds at 0.5)."""
    outputs, labels = LABELS[loss]
    plain, probs = linear(outputs), linear(outputs)
    attrs = {"axis": -1} if activation == "Softmax" else {}
    probs.graph.node.append(helper.make_node(activation, ["y"], ["p"], **attrs))
    del probs.graph.output[:]
    probs.graph.output.append(helper.make_tensor_value_info("p", TensorProto.FLOAT, ["batch", outputs]))
    ds = data(labels)
    options = dict(optimizer="sgd", lr=0.1, loss=loss)
    np.testing.assert_allclose(step(tmp_path / "p", probs, ds, **options), step(tmp_path / "y", plain, ds, **options),
                               rtol=1e-6)
    assert metadata(load_model(tmp_path / "p" / "model.onnx"))["onnxkit.scores"] == "probabilities"
    p = ort.InferenceSession(probs.SerializeToString()).run(None, {"x": ds.train.inputs["x"]})[0].astype(np.float64)
    if activation == "Softmax":
        expected = -np.mean(np.log(p[np.arange(N), labels]))
    else:
        expected = -np.mean(labels * np.log(p[:, 0]) + (1 - labels) * np.log(1 - p[:, 0]))
    task = "classification" if activation == "Softmax" else "binary"
    assert evaluate(probs, ds.train, task=task, loss=loss)["loss"] == pytest.approx(expected, rel=1e-5)


def test_a_binary_pair_of_probabilities_trains_on_the_logit_behind_it(tmp_path):
    """skl2onnx's binary MLPClassifier outputs [1 - Sigmoid(z), Sigmoid(z)]: cross-entropy took those
    probabilities for logits (train loss stuck at 0.32 where eval said 0.009). They are the Softmax of
    [0, z], so the step is the bce-with-logits step on z."""
    plain, pair = linear(1), linear(1)
    pair.graph.initializer.append(numpy_helper.from_array(np.array(1.0, np.float32), "unity"))  # a scalar, as skl2onnx
    pair.graph.node.extend([helper.make_node("Sigmoid", ["y"], ["positive"]),
                            helper.make_node("Sub", ["unity", "positive"], ["negative"]),
                            helper.make_node("Concat", ["negative", "positive"], ["p"], axis=1)])
    del pair.graph.output[:]
    pair.graph.output.append(helper.make_tensor_value_info("p", TensorProto.FLOAT, ["batch", 2]))
    labels = np.arange(N) % 2
    options = dict(optimizer="sgd", lr=0.1)
    np.testing.assert_allclose(step(tmp_path / "p", pair, data(labels), loss="cross-entropy", **options),
                               step(tmp_path / "y", plain, data(labels.astype(np.float32)), loss="bce-with-logits",
                                    **options), rtol=1e-6)
