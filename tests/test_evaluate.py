"""Metrics against scikit-learn; `evaluate` on small hand-written ONNX models against numpy."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from conftest import ort_run, write_csv
from onnx import TensorProto, helper, numpy_helper
from sklearn import datasets as sk_datasets
from sklearn import metrics as skm

from onnxkit import runtime
from onnxkit.data import Split, load_dataset
from onnxkit.errors import OnnxkitError
from onnxkit.evaluate import (
    Scorer,
    bce_with_logits,
    confusion_matrix,
    cross_entropy,
    evaluate,
    l1,
    macro_f1,
    mse,
    score,
)


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


@pytest.mark.parametrize("classes", [2, 10, 40])
def test_a_scorer_of_fixed_labels_scores_as_scikit_learn_epoch_after_epoch(classes):
    # a training run's validation: the same labels every epoch, its outputs in batches, scored from ~15 numpy calls
    # where score makes ~35
    rng = np.random.default_rng(classes)
    labels = rng.integers(0, classes, 359)
    scorer = Scorer(labels, "classification", loss="cross-entropy", num_classes=classes)
    for scale in (0.1, 3.0, 300.0):  # nearly uniform, confident, saturated
        logits = (rng.normal(size=(359, classes)) * scale).astype(np.float32)
        got = scorer([logits[:128], logits[128:256], logits[256:]])
        assert got == scorer([logits]) == score(logits, labels, "classification", num_classes=classes)
        predicted = logits.argmax(1)
        log_probs = logits.astype(np.float64) - np.logaddexp.reduce(logits.astype(np.float64), axis=1, keepdims=True)
        assert got["loss"] == pytest.approx(-log_probs[np.arange(359), labels].mean(), rel=1e-12)
        assert got["accuracy"] == skm.accuracy_score(labels, predicted)
        assert got["macro_f1"] == pytest.approx(skm.f1_score(labels, predicted, average="macro"))
        assert got["confusion"] == skm.confusion_matrix(labels, predicted, labels=range(classes)).tolist()
    # what the lean path does not cover is scored by score itself: probabilities, positions, regression
    probabilities = np.full((359, classes), 1 / classes, np.float32)
    assert Scorer(labels, "classification", num_classes=classes, probabilities=True)([probabilities]) == score(
        probabilities, labels, "classification", num_classes=classes, probabilities=True)
    targets = rng.normal(size=(359, 1))
    assert Scorer(targets, "regression")([targets[:100] + 1, targets[100:] + 1]) == score(
        targets + 1, targets, "regression")


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
    # a model trained with l1 reports l1 as its loss, as training did (eval said its mse)
    trained_l1 = linear_model(wb, bb, {"onnxkit.task": "regression", "onnxkit.training": '{"loss": "l1"}'})
    reg = evaluate(trained_l1, Split("test", {"x": x}, y.astype(np.float32)))
    assert reg["loss"] == reg["mae"] == pytest.approx(l1(logit, y), rel=1e-4)
    assert evaluate(trained_l1, Split("test", {"x": x}, y.astype(np.float32)), loss="mse")["loss"] == \
        pytest.approx(mse(logit, y), rel=1e-4)


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


# ---- data the model cannot be scored on: one line naming the data, as training refuses it ------------------


@pytest.fixture(scope="module")
def iris_model(tmp_path_factory):
    """An (untrained) iris-mlp: 4 features, 3 classes, task classification in its metadata."""
    from onnxkit import zoo

    path = tmp_path_factory.mktemp("eval") / "iris.onnx"
    onnx.save(zoo.build_model("iris-mlp"), path)
    return path


def iris_csv(path, x: np.ndarray, labels: list[str]):
    """`path` with a header, four feature columns and a label column."""
    lines = ["a,b,c,d,label", *(",".join([*map(str, row), label]) for row, label in zip(x, labels, strict=True))]
    path.write_text("\n".join(lines) + "\n")
    return path


def iris_rows(rows: int = 150) -> tuple[np.ndarray, list[str]]:
    """Random features and class ids 0, 1, 2 in turn (as text, for `iris_csv`)."""
    return np.random.default_rng(0).normal(size=(rows, 4)).round(3), [str(i % 3) for i in range(rows)]


@pytest.mark.parametrize(("bad", "message"), [
    ("5", "data 'bad, test split': labels go up to 5 but output 'logits' has 3 scores; build the model with as "
          "many classes as the data has"),
    ("-1", "data 'bad, test split': class labels must be 0 or more, but one is -1; number the classes from 0"),
    ("1.5", "data 'bad, test split': class labels must be integers, but one is 1.5; output 'logits' has 3 scores, "
            "for class ids 0 to 2"),
])
def test_eval_refuses_class_labels_the_model_cannot_have(run_cli, iris_model, tmp_path, bad, message):
    x, labels = iris_rows()
    labels[::10] = [bad] * 15  # some in every split
    data = iris_csv(tmp_path / "bad.csv", x, labels)
    for command, split in ((["eval", iris_model, "--data", data], "all"),  # data it did not train on: all of it
                           (["quantize", iris_model, "-o", tmp_path / "q.onnx", "--mode", "dynamic", "--eval", data],
                            "test")):
        result = run_cli(*command)
        assert (result.code, result.err) == (1, f"error: {message.replace('test split', f'{split} split')}\n")
    assert not (tmp_path / "q.onnx").exists()


def test_eval_of_class_ids_saved_as_floats_says_to_save_integers(run_cli, iris_model, tmp_path):
    """'class labels must be integers, but they are float64' said nothing of what to do with 0.0, 1.0, 2.0."""
    x, labels = iris_rows()
    np.savez(tmp_path / "floats.npz", x=x.astype(np.float32), labels=np.array(labels, dtype=np.float64))
    result = run_cli("eval", iris_model, "--data", tmp_path / "floats.npz")
    assert (result.code, result.err) == (1, "error: data 'floats, all split': class labels must be integers, but they "
                                            "are float64; output 'logits' has 3 scores, for class ids 0 to 2; save "
                                            "class ids as integers: labels.astype(np.int64)\n")


def test_eval_refuses_data_naming_none_of_the_models_classes(run_cli, tmp_path):
    # a model of no/yes scored on B/M data paired the classes by their sorted order alone: 2.65%, without a word
    from onnxkit import zoo

    model = tmp_path / "named.onnx"
    onnx.save(zoo.build_model("iris-mlp"), model)
    named = onnx.load(model)
    onnx.helper.set_model_props(named, {"onnxkit.labels": '["setosa", "versicolor", "virginica"]'})
    onnx.save(named, model)
    x, labels = iris_rows()
    other = iris_csv(tmp_path / "other.csv", x, ["abc"[int(i)] for i in labels])
    result = run_cli("eval", model, "--data", other)
    assert (result.code, result.err) == (1, "error: data 'other' names classes 'a', 'b', 'c', none of the model's "
                                            "('setosa', 'versicolor', 'virginica'); give data labelled with the "
                                            "model's classes\n")
    own = iris_csv(tmp_path / "own.csv", x, [["setosa", "versicolor", "virginica"][int(i)] for i in labels])
    assert run_cli("eval", model, "--data", own).code == 0
    assert run_cli("eval", model, "--data", iris_csv(tmp_path / "ids.csv", x, labels)).code == 0  # ids: no names


def test_eval_scores_a_file_held_out_whole_and_the_training_data_by_its_test_split(run_cli, iris_model, tmp_path):
    # eval --data NEW.csv scored its test split: 8 of the 40 rows held out
    x, labels = iris_rows()
    trained = iris_csv(tmp_path / "trained.csv", x[:110], labels[:110])
    held_out = iris_csv(tmp_path / "held_out.csv", x[110:], labels[110:])
    assert run_cli("train", iris_model, "--data", trained, "-o", tmp_path / "run", "--epochs", "1").code == 0
    model = tmp_path / "run" / "model.onnx"
    assert run_cli("eval", model, "--data", held_out).out.startswith(f"{held_out} all split (40 examples)")
    assert run_cli("eval", model).out.startswith(f"{trained} test split (21 examples)")
    assert run_cli("eval", model, "--data", trained).out.startswith(f"{trained} test split (21 examples)")
    assert run_cli("eval", model, "--data", trained, "--split", "all").out.startswith(f"{trained} all split (110 ")
    copy = tmp_path / "copy of trained.csv"  # the same bytes: the training data, whose rows it trained on
    copy.write_bytes(trained.read_bytes())
    assert run_cli("eval", model, "--data", copy).out.startswith(f"{copy} test split (21 examples)")
    # the Python API chooses alike
    assert evaluate(model, data=str(held_out))["examples"] == 40 and evaluate(model)["examples"] == 21
    assert evaluate(model, data=str(trained))["examples"] == 21


def test_predict_and_eval_read_a_csvs_columns_by_the_names_the_model_trained_on(run_cli, iris_model, tmp_path):
    # columns were matched by position: iris' columns in reverse order answered virginica for every row
    x, labels = iris_rows(60)
    trained = iris_csv(tmp_path / "trained.csv", x, labels)
    assert run_cli("train", iris_model, "--data", trained, "-o", tmp_path / "run", "--epochs", "1").code == 0
    model = tmp_path / "run" / "model.onnx"
    stored = {p.key: p.value for p in onnx.load(model).metadata_props}
    assert json.loads(stored["onnxkit.columns"]) == ["a", "b", "c", "d"]
    lines = trained.read_text().splitlines()
    reverse = tmp_path / "reverse.csv"  # d,c,b,a,label: the same rows, the features in reverse order
    reverse.write_text("\n".join(",".join([*line.split(",")[3::-1], line.split(",")[4]]) for line in lines) + "\n")
    for command in (["predict", model, "-i"], ["eval", model, "--split", "all", "--data"]):
        same, turned = run_cli(*command, trained), run_cli(*command, reverse)
        assert same.code == turned.code == 0 and same.out.split("\n", 1)[1] == turned.out.split("\n", 1)[1]
    renamed = tmp_path / "renamed.csv"
    renamed.write_text("\n".join(["p,q,r,s,label", *lines[1:]]) + "\n")
    for command in (["predict", model, "-i", renamed], ["eval", model, "--data", renamed]):
        result = run_cli(*command)
        assert result.code == 1 and "the model trained on columns a, b, c, d; its columns are p, q, r, s" in result.err
    # the features alone: eval took the last, d, as the labels and said only that d was missing
    features = tmp_path / "features.csv"
    features.write_text("\n".join(line.rsplit(",", 1)[0] for line in lines) + "\n")
    assert run_cli("predict", model, "-i", features).code == 0
    result = run_cli("eval", model, "--data", features)
    assert (result.code, result.err) == (1, f"error: {features}: no column is headed 'label'. Its columns: 'a', 'b', "
                                            "'c', 'd'; the model was trained on a column 'label': name this file's "
                                            "label column with --label COLUMN (rows without their labels are for "
                                            "predict)\n")


@pytest.mark.parametrize(("table", "target"), [("iris", "species"), ("diabetes", "progression")])
def test_eval_and_predict_find_the_trained_label_column_by_name_in_a_file_of_other_column_order(
        run_cli, tmp_path, table, target):
    # a label column headed otherwise than label / target / ... was taken as the last and recorded by no name: the
    # same rows with their columns reordered were scored against the file's last column (a feature), or refused
    bunch = sk_datasets.load_iris() if table == "iris" else sk_datasets.load_diabetes(scaled=False)
    names = [n.replace(" (cm)", "") for n in bunch.feature_names]
    y = [bunch.target_names[k] for k in bunch.target] if table == "iris" else bunch.target.tolist()
    x = bunch.data.round(4)
    trained = write_csv(tmp_path / "train.csv", [*names, target], [*x.T.tolist(), y])
    assert run_cli("train", trained, "-o", tmp_path / "run", "--epochs", "30").code == 0
    model = tmp_path / "run" / "model.onnx"
    turned = write_csv(tmp_path / "turned.csv", [target, *names[::-1]], [y, *x[:, ::-1].T.tolist()])
    bare = write_csv(tmp_path / "bare.csv", None, [*x.T.tolist(), y])  # no header: by position, as before
    scores = {f: json.loads(run_cli("eval", model, "--data", f, "--split", "all", "--json").out)
              for f in (trained, turned, bare)}
    assert all(scores[f].pop("data") == str(f) for f in scores)
    assert scores[trained] == scores[turned] == scores[bare]
    outputs = ort_run(onnx.load(model), {"x": x.astype(np.float32)})[0]  # the reference: every row, trained order
    if table == "iris":
        assert scores[turned]["accuracy"] == pytest.approx(np.mean(outputs.argmax(1) == bunch.target))
    else:
        assert scores[turned]["r2"] == pytest.approx(skm.r2_score(bunch.target, outputs[:, 0]), rel=1e-4)
    features = write_csv(tmp_path / "features.csv", names[::-1], x[:, ::-1].T.tolist())  # no labels: predict only
    for f in (trained, turned, features):
        assert run_cli("predict", model, f, "-o", tmp_path / f"{f.stem}.npz").code == 0
        predicted = np.load(tmp_path / f"{f.stem}.npz")[onnx.load(model).graph.output[0].name]
        np.testing.assert_allclose(predicted, outputs, rtol=1e-5, atol=1e-5)
    result = run_cli("eval", model, "--data", features)
    assert result.code == 1 and f"no column is headed {target!r}" in result.err and \
        f"the model was trained on a column {target!r}" in result.err


def test_predict_leaves_out_the_trained_label_column_by_name_beside_numbered_features(run_cli, tmp_path):
    # pandas' DataFrame(x) given a target column writes 0,1,...,9,progression: no feature names to read by, and a
    # label header predict did not know: it read the target as an eleventh feature ('rows have 11 values')
    x, y = sk_datasets.load_diabetes(return_X_y=True, scaled=False)
    header = [*map(str, range(x.shape[1])), "progression"]
    data = write_csv(tmp_path / "frame.csv", header, [*x.T.tolist(), y.tolist()])
    assert run_cli("train", data, "-o", tmp_path / "run", "--epochs", "3").code == 0
    model = tmp_path / "run" / "model.onnx"
    assert run_cli("predict", model, data, "-o", tmp_path / "p.npz").code == 0
    np.testing.assert_allclose(np.load(tmp_path / "p.npz")[onnx.load(model).graph.output[0].name],
                               ort_run(onnx.load(model), {"x": x.astype(np.float32)})[0], rtol=1e-5, atol=1e-4)


def test_a_dataframe_predicts_by_its_columns_names_as_a_csv_does(run_cli, iris_model, tmp_path):
    # Model.predict(DataFrame) matched columns by position where predict on the same CSV matched them by name:
    # reversed columns answered versicolor for setosa, and a DataFrame holding its label column was refused
    pd = pytest.importorskip("pandas")
    x, labels = iris_rows(60)
    trained = iris_csv(tmp_path / "trained.csv", x, labels)
    assert run_cli("train", iris_model, trained, "-o", tmp_path / "run", "--epochs", "1").code == 0
    model = runtime.load(tmp_path / "run" / "model.onnx")
    frame = pd.read_csv(trained)
    expected = model.predict(frame[["a", "b", "c", "d"]].to_numpy()).labels
    assert model.predict(frame[["d", "c", "b", "a"]]).labels == expected
    assert model.predict(frame).labels == expected  # its label column left out
    with pytest.raises(OnnxkitError, match="^the DataFrame: the model trained on columns a, b, c, d; its columns are "
                                           "a, b, c, without d; give those columns, once each, by name$"):
        model.predict(frame[["a", "b", "c"]])


def test_eval_refuses_an_empty_label_cell(run_cli, iris_model, tmp_path):
    x, labels = iris_rows()
    labels[3] = ""
    data = iris_csv(tmp_path / "holes.csv", x, labels)
    result = run_cli("eval", iris_model, "--data", data)
    assert (result.code, result.err) == (
        1, f"error: {data}:5: the label cell is empty; give every row a label (or drop the row)\n")


def test_eval_refuses_nan_and_infinite_features(run_cli, iris_model, tmp_path):
    x, labels = iris_rows()
    x[:, 0] = np.inf
    result = run_cli("eval", iris_model, "--data", iris_csv(tmp_path / "inf.csv", x, labels))
    assert result.code == 1 and result.err.startswith(  # all of data the model did not train on
        "error: data 'inf, all split': feature array 'x' holds 150 infinite values in 150 of 150 rows; ")
    x[:, 1] = np.nan  # a column of NaN cells is a column of no values, named
    result = run_cli("eval", iris_model, "--data", iris_csv(tmp_path / "nan.csv", x, labels))
    assert result.code == 1 and result.err == (f"error: {tmp_path / 'nan.csv'}: feature column 'b' is empty in every "
                                               "row (a column of no values); drop that column\n")
    x[:, 0], x[1:, 1] = 1.0, 2.0  # a missing value where the model fills none (it trained on no gaps)
    result = run_cli("eval", iris_model, "--data", iris_csv(tmp_path / "gap.csv", x, labels))
    assert result.code == 1 and result.err.startswith(
        "error: data 'gap, all split': feature array 'x' holds 1 NaN value in 1 of 150 rows; fill or drop")


CLASSES, SINGLE = linear_model(np.ones((5, 3)), np.zeros(3)), linear_model(np.ones((5, 1)), np.zeros(1))


@pytest.mark.parametrize(("model", "labels", "task", "message"), [
    (CLASSES, np.zeros((6, 2), np.int64), None, r"class labels have shape \[6, 2\]; give one class id per row"),
    (SINGLE, np.zeros((6, 2), np.float32), None, r"labels have shape \[6, 2\] but output 'scores' has shape \[6, 1\]; "
                                                 "give one target per output value"),
    (SINGLE, np.array([0, 1, 2, 0, 1, 0]), "binary", "a binary task takes labels 0 and 1, but a label is 2"),
    (SINGLE, np.array([0, 1, np.nan, 0, 1, 0]), None, "target array 'labels' holds 1 NaN value in 1 of 6 rows"),
    (CLASSES, np.zeros(0, np.int64), None, "has no rows; give more data or evaluate another split"),
])
def test_evaluate_refuses_labels_that_do_not_fit_the_output(model, labels, task, message):
    split = Split("test", {"x": np.ones((len(labels), 5), np.float32)}, labels)
    with pytest.raises(OnnxkitError, match=f"^data 'test split'(: | ){message}"):
        evaluate(model, split, task=task)


def test_errors_name_the_dataset_a_split_came_from(tmp_path):
    x, labels = iris_rows()
    labels[::10] = ["7"] * 15
    test = load_dataset(iris_csv(tmp_path / "mine.csv", x, labels)).test
    with pytest.raises(OnnxkitError, match="^data 'mine, test split': labels go up to 7"):
        evaluate(linear_model(np.ones((4, 3)), np.zeros(3)), test)


def _sklearn_rows(tmp_path, names):
    """A CSV of 40 rows near the three directions conftest.sklearn_style_classifier tells apart, the
    last 10 labelled wrong (the class after the right one)."""
    rng = np.random.default_rng(0)
    centres = np.array([[1, 0], [0, 1], [-1, -1]], np.float32)
    truth = np.arange(40) % 3
    x = centres[truth] + rng.normal(0, 0.05, (40, 2))
    given = np.where(np.arange(40) < 30, truth, (truth + 1) % 3)
    path = tmp_path / "rows.csv"
    path.write_text("a,b,label\n" + "".join(f"{a},{b},{names[k]}\n" for (a, b), k in zip(x, given, strict=True)))
    return path


@pytest.mark.parametrize("classes", [[0, 1, 2], ["x", "y", "z"]])
def test_eval_scores_a_scikit_learn_classifier_by_its_probabilities(run_cli, tmp_path, classes):
    """skl2onnx's classifiers output the label first: eval read it as a regression's value ('loss 0.1
    mae 0.1 r2 0.85' on iris) or, with text classes, crashed ('could not convert string to float')."""
    from conftest import sklearn_style_classifier

    onnx.save(sklearn_style_classifier(classes), tmp_path / "skl.onnx")
    data = _sklearn_rows(tmp_path, classes)
    test = load_dataset(data).test
    predicted = (test.inputs["x"] @ np.array([[4, 0], [0, 4], [-4, -4]], np.float32).T).argmax(1)
    metrics = evaluate(str(tmp_path / "skl.onnx"), "test", data=str(data))
    assert metrics["task"] == "classification" and metrics["examples"] == len(test.labels) == 9
    assert metrics["accuracy"] == np.mean(predicted == test.labels) < 1
    r = run_cli("eval", tmp_path / "skl.onnx", "--data", data)
    assert r.code == 0 and "accuracy" in r.out and "r2" not in r.out, r.err


def test_a_scikit_learn_classifier_numbered_from_one_takes_its_class_values(run_cli, tmp_path):
    """scikit-learn's classes are the data's own values: a classifier of 1, 2, 3 answers in columns
    0, 1, 2. Eval read label 3 as a column ('labels go up to 3 but output 'probabilities' has 3
    scores'), and train refused the same data; labels are now taken by value, with or without ZipMap."""
    from conftest import sklearn_style_classifier

    data = _sklearn_rows(tmp_path, [1, 2, 3])
    for zipmap in (True, False):
        onnx.save(sklearn_style_classifier([1, 2, 3], zipmap=zipmap), tmp_path / "skl.onnx")
        metrics = evaluate(str(tmp_path / "skl.onnx"), "test", data=str(data))
        test = load_dataset(data).test
        predicted = (test.inputs["x"] @ np.array([[4, 0], [0, 4], [-4, -4]], np.float32).T).argmax(1) + 1
        assert metrics["accuracy"] == np.mean(predicted == test.labels) > 0.5
    bad = tmp_path / "bad.csv"
    bad.write_text(data.read_text().replace(",3\n", ",4\n"))
    r = run_cli("eval", tmp_path / "skl.onnx", "--data", bad)
    assert r.code == 1 and r.err.strip() == ("error: data 'bad': label 4 is not among the model's classes "
                                             "(1, 2, 3); correct the data's labels"), r.err


def test_r2_of_several_targets_averages_their_scores_as_scikit_learn_does():
    """linnerud's 3 targets: the pooled R² was -1.41 where scikit-learn's r2_score says -1.09."""
    from sklearn.metrics import r2_score

    from onnxkit.evaluate import r2

    rng = np.random.default_rng(0)
    targets = rng.normal([1, 50, 300], [1, 10, 80], size=(40, 3))
    outputs = targets + rng.normal(0, [2, 5, 20], size=(40, 3))
    assert r2(outputs, targets) == pytest.approx(r2_score(targets, outputs), rel=1e-12)
    assert r2(outputs[:, 1], targets[:, 1]) == pytest.approx(r2_score(targets[:, 1], outputs[:, 1]), rel=1e-12)
    targets[:, 0] = 3.0  # a constant target scores 0 (1 when predicted exactly), averaged in alike
    assert r2(outputs, targets) == pytest.approx(r2_score(targets, outputs), rel=1e-12)
    assert r2(outputs[:, :1], targets[:, :1]) == r2_score(targets[:, :1], outputs[:, :1]) == 0.0
    outputs[:, 0] = 3.0
    assert r2(outputs, targets) == pytest.approx(r2_score(targets, outputs), rel=1e-12)
    assert r2(outputs[:1], targets[:1]) is None  # one row: not defined (scikit-learn warns and gives NaN)


def test_the_default_data_is_refused_when_its_file_changed_after_training(tmp_path):
    # a row added to the CSV shifted its splits: eval scored rows the model trained on as its test split, silently
    # (iris: 0.8000 where training's test split gave 0.8667); --resume already refused a changed file
    import hashlib
    import json

    path = tmp_path / "data.csv"
    path.write_text("a,b,label\n" + "".join(f"{i},{-i},{i % 2}\n" for i in range(20)))
    trained = {"data": str(path), "data_seed": 0, "data_sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    model = linear_model(np.eye(2), np.zeros(2), {"onnxkit.training": json.dumps(trained)})
    assert evaluate(model, "test")["examples"] == 4
    with path.open("a") as f:
        f.write("20,-20,0\n")
    with pytest.raises(OnnxkitError) as changed:
        evaluate(model, "test")
    assert str(changed.value) == (f"{path} changed since the model was trained on it, so its test split is not the one "
                                  "training held out (it may hold rows the model trained on); give data: the file as "
                                  "it was, or this one to score it as it is now")
    assert evaluate(model, "test", data=path)["examples"] == 4  # named: scored as it is now (21 rows)


def test_a_regressor_is_not_scored_against_class_names(tmp_path):
    # a regressor evaluated on a CSV of cat/dog/eel scored its outputs against their ids 0, 1, 2 (r2 -11.7)
    path = tmp_path / "pets.csv"
    path.write_text("a,b,label\n" + "".join(f"{i},{-i},{('cat', 'dog', 'eel')[i % 3]}\n" for i in range(12)))
    model = linear_model(np.ones((2, 1)), np.zeros(1), {"onnxkit.task": "regression"})
    with pytest.raises(OnnxkitError) as named:
        evaluate(model, "test", data=path)
    assert str(named.value).startswith("data 'pets': the labels are class names ('cat', 'dog', 'eel'), which the mse ")


def colors_model(inputs: tuple[str, str] = ("a", "color")) -> onnx.ModelProto:
    """Inputs `a` (float) and `color` (string), each [batch, 1], as skl2onnx converts a ColumnTransformer's
    columns; logits [a-independent]: class 1 for 'red', class 0 for 'green'. `inputs`: their names."""
    a, color = inputs
    encode = helper.make_node("LabelEncoder", [color], ["code"], domain="ai.onnx.ml",
                              keys_strings=["red", "green"], values_floats=[1.0, -1.0])
    graph = helper.make_graph(
        [encode, helper.make_node("Concat", [a, "code"], ["both"], axis=1),
         helper.make_node("MatMul", ["both", "w"], ["logits"])], "colors",
        [helper.make_tensor_value_info(a, TensorProto.FLOAT, ["batch", 1]),
         helper.make_tensor_value_info(color, TensorProto.STRING, ["batch", 1])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])],
        [numpy_helper.from_array(np.array([[0.0, 0.0], [-1.0, 1.0]], np.float32), "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 2)])


def test_text_features_saved_by_numpy_feed_a_string_input(tmp_path):
    # an .npz keeps text as <U (it holds no object arrays): eval refused it for a string input ('needs object')
    model = colors_model()
    colors = np.array([["red"], ["green"]] * 10)  # class 1 for red, 0 for green
    labels = (colors[:, 0] == "red").astype(np.int64)
    labels[0] = 0  # one wrong
    np.savez(tmp_path / "colors.npz", a=np.zeros((20, 1), np.float32), color=colors, labels=labels)
    assert np.load(tmp_path / "colors.npz")["color"].dtype.kind == "U"
    metrics = evaluate(model, "all", data=str(tmp_path / "colors.npz"))
    assert metrics["examples"] == 20 and metrics["accuracy"] == 0.95


def test_a_csvs_columns_named_as_the_models_inputs_feed_them(run_cli, tmp_path):
    """skl2onnx converts a ColumnTransformer to an input per column (strings among them): eval said "feature column
    'color' holds text; ... encode that column as numbers" and predict "CSV holds one input but model has 2; use
    .npz or .json". Columns headed by the inputs' names are read as them, in any order, strings as strings."""
    onnx.save(colors_model(), tmp_path / "colors.onnx")
    rows = [("red", 0.5, 1), ("green", -2.0, 0)] * 10
    (tmp_path / "colors.csv").write_text("color,extra,a,label\n" + "".join(f"{c},9,{a},{y}\n" for c, a, y in rows))
    metrics = evaluate(tmp_path / "colors.onnx", "all", data=str(tmp_path / "colors.csv"))
    assert metrics["examples"] == 20 and metrics["accuracy"] == 1.0
    result = run_cli("predict", tmp_path / "colors.onnx", tmp_path / "colors.csv", "-o", tmp_path / "out.json")
    assert result.code == 0, result.err
    logits = np.array(json.loads((tmp_path / "out.json").read_text())["outputs"]["logits"])
    assert logits.argmax(1).tolist() == [1, 0] * 10
    (tmp_path / "bad.csv").write_text("color,a,label\nred,x,1\n")
    result = run_cli("predict", tmp_path / "colors.onnx", tmp_path / "bad.csv")
    assert result.err == (f"error: {tmp_path / 'bad.csv'}:2: column 'a' holds 'x', but the model's input 'a' takes "
                          "float32 numbers; fix that cell\n")
    (tmp_path / "short.csv").write_text("color,label\nred,1\n")
    result = run_cli("predict", tmp_path / "colors.onnx", tmp_path / "short.csv")
    assert result.err == (f"error: {tmp_path / 'short.csv'}: no column is headed 'a'; the model reads a column "
                          "per input, by name (a, color)\n")


def test_a_model_that_takes_text_itself_evaluates_a_csvs_text_column(tmp_path):
    """A TF-IDF pipeline's one string input takes a CSV's 'text' column whatever its name: eval said '... is text
    and needs a tokenizer' (predict read the same file)."""
    encode = helper.make_node("LabelEncoder", ["doc"], ["code"], domain="ai.onnx.ml",
                              keys_strings=["good film", "bad film"], values_floats=[1.0, -1.0])
    graph = helper.make_graph(
        [encode, helper.make_node("Concat", ["code", "code"], ["both"], axis=1),
         helper.make_node("Mul", ["both", "w"], ["logits"])], "texts",
        [helper.make_tensor_value_info("doc", TensorProto.STRING, ["batch", 1])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])],
        [numpy_helper.from_array(np.array([-1.0, 1.0], np.float32), "w")])
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 2)]
    onnx.save(helper.make_model(graph, opset_imports=opsets), tmp_path / "texts.onnx")
    (tmp_path / "texts.csv").write_text("text,label\n" + "good film,1\nbad film,0\n" * 6)
    metrics = evaluate(tmp_path / "texts.onnx", "all", data=str(tmp_path / "texts.csv"))
    assert metrics["examples"] == 12 and metrics["accuracy"] == 1.0


def test_a_scikit_learn_model_on_a_builtin_scaled_otherwise_than_sklearns_loader_is_warned_of(run_cli, tmp_path):
    """Built-in digits are in [0, 1] and diabetes raw, where load_digits() gives 0-16 and load_diabetes() scaled
    values: a KNN fit on load_digits() scored 9.9% on digits, a Ridge R² -140,000 on diabetes, without a word."""
    ridge = helper.make_node("LinearRegressor", ["X"], ["variable"], domain="ai.onnx.ml", coefficients=[1.0] * 10,
                             intercepts=[150.0])
    graph = helper.make_graph([ridge], "ridge", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 10])],
                              [helper.make_tensor_value_info("variable", TensorProto.FLOAT, [None, 1])])
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 1)]
    onnx.save(helper.make_model(graph, opset_imports=opsets, producer_name="skl2onnx"), tmp_path / "ridge.onnx")
    result = run_cli("eval", tmp_path / "ridge.onnx", "--data", "diabetes")
    assert result.code == 0 and result.err.startswith("warning: built-in 'diabetes': its measurements are raw")
    assert run_cli("eval", tmp_path / "ridge.onnx", "--data", "diabetes").out == result.out
    result = run_cli("eval", tmp_path / "ridge.onnx", "--data", "iris")  # as scikit-learn loads it: no warning
    assert "warning" not in result.err


def test_evaluates_arguments_that_cannot_apply_are_refused_not_ignored():
    # loss='mse' on a classifier was numpy's broadcast ValueError (bce-with-logits on a regressor: -25917 unsaid);
    # data= beside a Split, and providers='CPUExecutionProvider' read letter by letter, were ignored with warnings
    from onnxkit import zoo

    model, iris = zoo.build_model("iris-mlp"), load_dataset("iris")
    with pytest.raises(OnnxkitError, match="^loss mse scores a regression model, and this one is a classification "
                                           "model; use loss=cross-entropy$"):
        evaluate(model, iris.test, loss="mse")
    with pytest.raises(TypeError, match="a Split holds its rows already"):
        evaluate(model, iris.test, data="wine")
    with pytest.raises(OnnxkitError, match="^provider 'NopeProvider' is not in this onnxruntime; its providers: "):
        evaluate(model, iris.test, providers=["NopeProvider"])
    with pytest.raises(TypeError, match="^model must be a .onnx path or an onnx.ModelProto, not bytes$"):
        evaluate(model.SerializeToString(), iris.test)
    assert evaluate(model, iris.test, providers="CPUExecutionProvider") == evaluate(model, iris.test)


def test_a_multi_label_model_is_scored_by_label_as_scikit_learn(tmp_path, run_cli):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(200, 5)).astype(np.float32)
    w, b = rng.normal(size=(5, 4)), np.array([0.0, 0.5, -0.5, -50.0])  # the last label never predicted
    labels = (x.astype(np.float64) @ w + rng.normal(size=(200, 4)) > 0).astype(np.int64)
    labels[:, 3] = 0  # and never present: its F1 is undefined, 0 as scikit-learn's zero_division=0
    predicted = (x.astype(np.float64) @ w + b > 0).astype(np.int64)
    model = linear_model(w, b, {"onnxkit.task": "binary", "onnxkit.labels": '["red", "green", "blue", "grey"]'})
    onnx.save(model, tmp_path / "tags.onnx")
    np.savez(tmp_path / "tags.npz", x=x, labels=labels)
    m = evaluate(tmp_path / "tags.onnx", Split("test", {"x": x}, labels))
    assert m["accuracy"] == pytest.approx(1 - skm.hamming_loss(labels, predicted))  # as before: every label counted
    assert m["subset_accuracy"] == skm.accuracy_score(labels, predicted)
    assert m["label_f1"] == pytest.approx(skm.f1_score(labels, predicted, average="macro", zero_division=0))
    precision, recall, f1, support = skm.precision_recall_fscore_support(labels, predicted, zero_division=0)
    assert [e["label"] for e in m["per_label"]] == ["red", "green", "blue", "grey"]
    for key, want in (("precision", precision), ("recall", recall), ("f1", f1), ("support", support)):
        assert [e[key] for e in m["per_label"]] == pytest.approx(want.tolist())
    shown = run_cli("eval", tmp_path / "tags.onnx", "--data", tmp_path / "tags.npz", "--split", "all")
    assert shown.code == 0, shown.err
    table = shown.out.splitlines()[-6:]
    assert table[0] == (f"every label right in {m['subset_accuracy']:.4f} of rows; F1 averaged over labels "
                        f"{m['label_f1']:.4f}")
    assert table[1].split() == ["label", "precision", "recall", "f1", "support"]
    assert table[2].split() == ["red", *(f"{v:.4f}" for v in (precision[0], recall[0], f1[0])), str(support[0])]
