"""A classifier's validation metrics summed by the eval graph: numpy's scorer's figures, and when the loop sums."""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import sklearn.metrics as skm
from onnx import TensorProto, helper

from onnxkit import zoo
from onnxkit.data import load_dataset
from onnxkit.evaluate import Scorer, evaluate
from onnxkit.train import fit
from onnxkit.train.callbacks import Callback
from onnxkit.train.validation_sums import LABELS, SUMS, SummedValidation, append_sums


class LogitsSession:
    """The eval graph of a model that returns its input as logits, run as the onnx backend's session runs it."""

    def __init__(self, classes: int) -> None:
        graph = helper.make_graph(
            [helper.make_node("Identity", ["x"], ["logits"])], "logits",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", classes])],
            [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        append_sums(model, "logits", classes)
        onnx.checker.check_model(model, full_check=True)
        self.session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])

    def score_step(self, feeds: dict[str, np.ndarray], labels: np.ndarray, out: np.ndarray) -> None:
        out[...] = self.session.run([SUMS], {**feeds, LABELS: labels})[0]


@pytest.mark.parametrize("classes", [2, 10, 37])
def test_the_eval_graphs_sums_give_the_numpy_scorers_metrics(classes):
    rng = np.random.default_rng(classes)
    labels = rng.integers(0, max(2, classes - 3), 359)  # the last classes in no label: macro-F1 skips them unless
    # predicted
    session, scorer = LogitsSession(classes), Scorer(labels, "classification", num_classes=classes)
    summed = SummedValidation(labels, classes, [128, 128, 103])
    for logits in (rng.normal(size=(359, classes)) * 0.1, rng.normal(size=(359, classes)) * 300,
                   rng.integers(0, 3, (359, classes))):  # nearly uniform, saturated, ties (the first largest wins)
        logits = logits.astype(np.float32)
        batches = [({"x": logits[lo:hi]}, hi - lo) for lo, hi in ((0, 128), (128, 256), (256, 359))]
        got, want = summed(session, batches), scorer([logits])
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-13, abs=0)
        predicted = logits.argmax(1)
        assert got["accuracy"] == want["accuracy"] == skm.accuracy_score(labels, predicted)
        assert got["macro_f1"] == pytest.approx(skm.f1_score(labels, predicted, average="macro"), rel=1e-13)


class ValidationByEvalStep(Callback):
    """A user's callback running the session's eval step on the validation rows (class ids fed to its sums or not)."""

    def __init__(self) -> None:
        self.split, self.accuracies = load_dataset("digits").validation, []

    def on_epoch_end(self, trainer, record) -> None:  # type: ignore[no-untyped-def]
        logits = trainer.session.eval_step(self.split.inputs)
        self.accuracies.append((float(np.mean(logits.argmax(1) == self.split.labels)), record["val_accuracy"]))


@pytest.mark.training
def test_a_classifiers_validation_is_scored_by_its_eval_graph_with_the_same_figures(tmp_path):
    run, by_eval_step = tmp_path / "run", ValidationByEvalStep()
    result = fit(zoo.build_model("digits-mlp"), "digits", run, epochs=2, quiet=True, callbacks=[by_eval_step])
    if os.environ.get("ONNXKIT_BACKEND") != "ort-training":  # whose eval graph has no sums: numpy scores them
        assert SUMS in {o.name for o in onnx.load(run / "artifacts" / "eval.onnx").graph.output}
    scored = evaluate(result.model_path, "validation")  # numpy's scorer, on the trained model of the best epoch
    validation = result.metrics["validation"]
    assert validation["loss"] == pytest.approx(scored["loss"], rel=1e-6)
    assert (validation["accuracy"], validation["macro_f1"]) == pytest.approx((scored["accuracy"], scored["macro_f1"]))
    assert [mine == pytest.approx(recorded) for mine, recorded in by_eval_step.accuracies] == [True, True]


def test_a_model_of_a_fixed_batch_size_is_scored_by_numpy(tmp_path):
    # its last validation batch is padded with copies of a row, which the sums would count
    model = zoo.build_model("digits-mlp")
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = 32
    run = tmp_path / "run"
    result = fit(model, "digits", run, epochs=1, quiet=True, backend="onnx")
    assert SUMS not in {o.name for o in onnx.load(run / "artifacts" / "eval.onnx").graph.output}
    scored = evaluate(result.model_path, "validation")
    assert result.metrics["validation"]["accuracy"] == pytest.approx(scored["accuracy"])
