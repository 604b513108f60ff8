"""Data checked before training: row counts, empty data, label shape and range, NaN and infinity."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from onnxkit import zoo
from onnxkit.data import Dataset, Split, dataset_from_arrays, load_dataset
from onnxkit.data.checks import check_finite
from onnxkit.errors import OnnxkitError
from onnxkit.metadata import metadata
from onnxkit.metadata_keys import LABELS_KEY
from onnxkit.train import fit

RNG = np.random.default_rng(0)


def iris_like(rows: int = 60) -> tuple[np.ndarray, np.ndarray]:
    return RNG.normal(size=(rows, 4)).astype(np.float32), np.arange(rows) % 3


def test_feature_and_label_counts_must_match(tmp_path):
    x, y = iris_like(200)
    np.savez(tmp_path / "short.npz", x=x, y=y[:150])
    with pytest.raises(OnnxkitError, match=r"data 'short': feature array 'x' has 200 rows but there are 150 labels"):
        load_dataset(tmp_path / "short.npz")
    # silero-vad's state [2, batch, 128]: 'give exactly one label per row', which no labels could satisfy
    np.savez(tmp_path / "rnn.npz", x=x, state=np.zeros((2, 200, 8), np.float32), y=y)
    with pytest.raises(OnnxkitError) as state:
        load_dataset(tmp_path / "rnn.npz")
    assert str(state.value) == ("data 'rnn': feature array 'state' has 2 rows but there are 200 labels; give exactly "
                                "one label per row (its axis 1 "
                                "holds 200: training takes each array's rows along axis 0, so an input batched on "
                                "axis 1, as an RNN's state [layers, batch, hidden], cannot be trained on)")


def test_zero_rows_is_an_error(tmp_path, run_cli):
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 4), np.float32), y=np.zeros(0, np.int64))
    model = tmp_path / "iris.onnx"
    onnx.save(zoo.build_model("iris-mlp"), model)
    result = run_cli("train", model, "--data", tmp_path / "empty.npz", "-o", tmp_path / "run")
    assert result.code == 1 and result.err == "error: data 'empty' has no rows; give at least one example\n"
    assert not (tmp_path / "run").exists()


def test_labels_shaped_n_by_1_are_squeezed(tmp_path):
    x, y = iris_like()
    data = dataset_from_arrays("column", {"x": x}, y.reshape(-1, 1))
    assert data.train.labels.ndim == 1 and len(data.train) + len(data.validation) + len(data.test) == 60
    flat = dataset_from_arrays("flat", {"x": x}, y)
    np.testing.assert_array_equal(data.train.labels, flat.train.labels)  # same split as [N] labels
    result = fit(zoo.build_model("iris-mlp"), data, tmp_path / "run", steps=2, evaluate_test=False)
    assert result.metrics["steps"] == 2


def test_other_label_shapes_for_classes_are_a_clear_error(tmp_path):
    x, y = iris_like()
    split = Split("train", {"x": x}, np.stack([y, y], axis=1))
    with pytest.raises(OnnxkitError, match=r"class labels have shape \[60, 2\]; give one class id per row "
                                           r"\(shape \[N\]\)$"):
        fit(zoo.build_model("iris-mlp"), Dataset("pairs", split, split, split), tmp_path / "run")
    # a 0/1 matrix for a model said to classify (iris-mlp) does not default to multi-label: the error names how
    split = Split("train", {"x": x}, (np.stack([y, y, y], axis=1) == [0, 1, 2]).astype(np.int64))
    with pytest.raises(OnnxkitError, match=r"give one class id per row \(shape \[N\]\), or train 3 separate 0/1 "
                                           r"labels \(multi-label\) with loss bce-with-logits$"):
        fit(zoo.build_model("iris-mlp"), Dataset("labels", split, split, split), tmp_path / "run")


@pytest.mark.parametrize(("label", "shift", "message"), [
    (-1, 0, "data 'negative, train split': class labels must be 0 or more, but one is -1"),
    (3, 0, "data 'negative, train split': labels go up to 3 but output 'logits' has 3 scores"),
    # UCI's wine and iris number their classes 1..3: the model is right, the numbering is not
    (None, 1, r"data 'negative, train split': class labels run from 1 to 3, but class ids count from 0 \(0 to 2 for "
              r"output 'logits''s 3 scores\); renumber them from 0 \(subtract 1\)$"),
])
def test_class_labels_must_lie_in_range(tmp_path, label, shift, message):
    x, y = iris_like()
    y += shift
    if label is not None:
        y[7] = label
    split = Split("train", {"x": x}, y)
    with pytest.raises(OnnxkitError, match=message):
        fit(zoo.build_model("iris-mlp"), Dataset("negative", split, split, split), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def _unnamed_classifier(classes: int) -> onnx.ModelProto:
    """A 4-feature linear classifier whose classes are 0, 1, ... (no names in its metadata)."""
    from onnxkit import nn

    nn.manual_seed(0)
    return nn.build(nn.Linear(4, classes), {"x": nn.Input(["batch", 4])}, output_names=["logits"])


@pytest.mark.parametrize("first", [1, -1])
def test_numbered_classes_that_are_no_ids_train_as_class_names(tmp_path, run_cli, first):
    x, y = iris_like(90)
    x[:, 0] += y * 6  # separable by the first feature
    labels = y + first  # UCI's 1, 2, 3, or -1, 0, 1
    rows = [",".join([*map(str, r), str(label)]) for r, label in zip(x, labels, strict=True)]
    (tmp_path / "flowers.csv").write_text("a,b,c,d,class\n" + "\n".join(rows) + "\n")
    onnx.save(_unnamed_classifier(3), tmp_path / "m.onnx")
    names = [str(first + k) for k in range(3)]
    result = run_cli("train", tmp_path / "m.onnx", "--data", tmp_path / "flowers.csv", "-o", tmp_path / "run",
                     "--epochs", "60", "--lr", "0.05")
    assert result.code == 0, result.err
    assert (f"warning: the labels {', '.join(names)} are not class ids (0 to 2): read as class names, numbered in "
            "ascending order; the trained model answers with them") in result.out + result.err
    trained = tmp_path / "run" / "model.onnx"
    assert json.loads(metadata(onnx.load(trained))[LABELS_KEY]) == names
    result = run_cli("eval", trained, "--data", tmp_path / "flowers.csv", "--split", "all", "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["accuracy"] > 0.9  # the data's numbers scored as the classes they name
    result = run_cli("predict", trained, "-i", tmp_path / "flowers.csv", "-o", tmp_path / "answers.csv")
    assert result.code == 0, result.err
    answered = [line.split(",")[0] for line in (tmp_path / "answers.csv").read_text().splitlines()[1:]]
    assert np.mean(np.array(answered) == labels.astype(str)) > 0.9


def test_numbers_a_named_model_lacks_are_refused_not_renamed(tmp_path):
    x, y = iris_like()
    split = Split("train", {"x": x}, y + 5)  # 5, 6, 7 for a model named 0, 1, 2 is read as ids, and refused
    with pytest.raises(OnnxkitError, match=r"class labels run from 5 to 7"):
        fit(zoo.build_model("iris-mlp"), Dataset("shifted", split, split, split), tmp_path / "run")


def test_too_many_text_classes_are_listed_to_show_a_stray_spelling(tmp_path, run_cli):
    x, y = iris_like(30)
    species = np.array(["setosa", "versicolor", "virginica"])[y]
    species[4] = "Setosa "
    rows = [",".join([*map(str, r), s]) for r, s in zip(x, species, strict=True)]
    (tmp_path / "flowers.csv").write_text("a,b,c,d,species\n" + "\n".join(rows) + "\n")
    onnx.save(zoo.build_model("iris-mlp"), tmp_path / "iris.onnx")
    result = run_cli("train", tmp_path / "iris.onnx", "--data", tmp_path / "flowers.csv", "-o", tmp_path / "run")
    assert result.code == 1 and result.err.count("\n") == 1
    # iris-mlp names its classes, so the stray spelling is the one it lacks
    assert result.err == ("error: data 'flowers': label 'Setosa' is not among the model's classes (setosa, versicolor, "
                          "virginica); correct the data's labels, or build the model with a label for every class "
                          "(--set labels=...)\n"), result.err


def test_binary_labels_must_be_0_or_1(tmp_path):
    x = RNG.normal(size=(40, 1)).astype(np.float32)
    split = Split("train", {"x": x}, np.where(x[:, 0] > 0, 1, 2))
    with pytest.raises(OnnxkitError, match="a binary task takes labels 0 and 1, but a label is 2"):
        fit(zoo.build_model("binary-classifier"), Dataset("toy", split, split, split), tmp_path / "run")


def test_nan_in_features_is_a_one_line_error_that_names_the_data(tmp_path, run_cli):
    x, y = iris_like()
    x[:, 1] = np.nan  # in every split
    np.savez(tmp_path / "holes.npz", x=x, y=y)
    model = tmp_path / "iris.onnx"
    onnx.save(zoo.build_model("iris-mlp"), model)
    result = run_cli("train", model, "--data", tmp_path / "holes.npz", "-o", tmp_path / "run")
    rows = len(load_dataset(tmp_path / "holes.npz").train)
    assert rows and result.code == 1 and result.err == (  # a missing value training fills, but in every row
        "error: data 'holes': feature 1 of 'x' is missing (NaN) in every row, so no value can fill it; drop that "
        "feature\n")
    assert not (tmp_path / "run").exists()


def test_nan_message_counts_nan_and_infinite_values(tmp_path):
    x, y = iris_like()
    x[0, 0] = x[1, 0] = np.nan
    x[1, 3] = -np.inf
    with pytest.raises(OnnxkitError, match=r"data 'mine, train split': feature array 'x' holds 2 NaN and 1 "
                                           r"infinite values in 2 of 60 rows; fill or drop"):
        check_finite("mine, train split", {"x": x})
    split = Split("train", {"x": x}, y)  # training fills a table's NaN (a missing value), not an infinity
    with pytest.raises(OnnxkitError, match=r"data 'mine, train split': feature array 'x' holds 1 infinite value in 1 "
                                           r"of 60 rows; fill or drop"):
        fit(zoo.build_model("iris-mlp"), Dataset("mine", split, split, split), tmp_path / "run")


def test_an_additive_mask_of_minus_infinity_is_refused_saying_what_to_write_instead():
    # PyTorch's float padding masks hold -inf: the refusal said to fill or drop the rows, which are the data
    mask = np.where(np.arange(12)[None, :] >= np.array([[3], [12], [7]]), -np.inf, 0.0).astype(np.float32)
    with pytest.raises(OnnxkitError, match=r"feature array 'pad' holds 14 infinite values in 2 of 3 rows; an additive "
                                           r"mask of 0 and -inf: write -1e9 for -inf \(the same weights after a "
                                           r"softmax\)$"):
        check_finite("texts, train split", {"tokens": np.zeros((3, 12), np.int64), "pad": mask})


def test_nan_in_regression_targets_is_an_error(tmp_path):
    x, _ = iris_like()
    y = x[:, :3] * 2  # three targets for the model's three outputs
    y[4, 1] = np.nan
    split = Split("train", {"x": x}, y)
    with pytest.raises(OnnxkitError, match=r"data 'sums, train split': target array 'labels' holds 1 NaN value in 1 "
                                           r"of 60 rows"):
        fit(zoo.build_model("iris-mlp"), Dataset("sums", split, split, split), tmp_path / "run", loss="mse",
            output="logits")


def test_class_names_are_no_regression_targets(tmp_path):
    # a one-output model trained on a CSV of cat/dog/eel fit their sorted ids 0, 1, 2 as numbers (test r2 0.66), and
    # prices written "200,753.40" were 100 class names fit the same way (r2 -0.34), both without a word
    x, y = iris_like(30)
    (tmp_path / "pets.csv").write_text("a,b,c,d,label\n" + "".join(
        f"{','.join(map(str, row))},{('cat', 'dog', 'eel')[k]}\n" for row, k in zip(x, y, strict=True)))
    (tmp_path / "prices.csv").write_text("a,b,c,d,price\n" + "".join(
        f'{",".join(map(str, row))},"{200_000 + 1000 * i:,}.50"\n' for i, row in enumerate(x)))
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "linear",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])],
                              [numpy_helper.from_array(np.ones((4, 1), np.float32), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(OnnxkitError) as pets:
        fit(model, tmp_path / "pets.csv", tmp_path / "run")  # the default loss for one output and 3 classes
    assert str(pets.value) == ("data 'pets': the labels are class names ('cat', 'dog', 'eel'), which the mse loss "
                               "cannot fit as numbers; a classifier gives one score per class (an output of "
                               "[batch, 3])")
    with pytest.raises(OnnxkitError) as prices:
        fit(model, tmp_path / "prices.csv", tmp_path / "run", loss="l1")
    assert str(prices.value) == ("data 'prices': the targets are written with thousands separators ('200,000.50', "
                                 "'201,000.50', '202,000.50', ...), so they read as class names; write the numbers "
                                 "without them (the labels: the last column, 'price', as no column is headed label / "
                                 "labels / target / y / class; label=COLUMN names another)")
    assert not (tmp_path / "run").exists()


def test_the_classes_listed_in_a_labels_error_are_the_first_ten():
    # a 1,000-class file for a 2-class model printed all 1,000 names on one 12 KB line
    from onnxkit.data.checks import check_class_labels

    names = [f"class{i}" for i in range(1000)]
    with pytest.raises(OnnxkitError) as refused:
        check_class_labels("many", np.arange(1000), 2, class_names=names)
    assert str(refused.value).endswith("(its 1000 classes: " + ", ".join(map(repr, names[:10])) + ", ...)")


def test_a_csv_of_other_width_than_the_model_is_said_in_columns(tmp_path, run_cli):
    # it was numpy's view: "data array 'x' has shape [18, 5] but model input 'x' expects [batch, 4]; reshape the
    # data (or pick the matching dataset, e.g. digits-images for image models and digits for flat ones)"
    x, y = iris_like(30)
    rows = [",".join([*map(str, r), "1.5", str(label)]) for r, label in zip(x, y, strict=True)]
    (tmp_path / "wide.csv").write_text("a,b,c,d,e,label\n" + "\n".join(rows) + "\n")
    onnx.save(zoo.build_model("iris-mlp"), tmp_path / "iris.onnx")
    result = run_cli("train", tmp_path / "iris.onnx", "--data", tmp_path / "wide.csv", "-o", tmp_path / "run")
    assert (result.code, result.err) == (1, "error: data 'wide' has 5 feature columns (a, b, c, d, ...) but model "
                                            "input 'x' takes 4 values a row; build the model with 5 inputs, or "
                                            "leave columns out of the file\n")
    assert not (tmp_path / "run").exists()



def test_a_csv_of_several_target_columns_is_told_to_be_an_npz(tmp_path, run_cli):
    # linnerud's 3 exercises and 3 measurements for a [batch, 3] -> [batch, 3] regressor: two targets were read as
    # features and the error said to build the model with 5 inputs, not how to give 3 targets a row
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "m",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
                              [numpy_helper.from_array(rng.normal(size=(3, 3)).astype(np.float32), "w")])
    onnx.save(helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "r.onnx")
    rows = rng.integers(30, 200, size=(30, 6))
    (tmp_path / "linnerud.csv").write_text("Chins,Situps,Jumps,Weight,Waist,Pulse\n"
                                           + "\n".join(",".join(map(str, r)) for r in rows) + "\n")
    result = run_cli("train", tmp_path / "r.onnx", "--data", tmp_path / "linnerud.csv", "-o", tmp_path / "run")
    assert result.code == 1 and "; output 'y' takes 3 targets a row, and a CSV holds one label column: save the " \
        "features and targets as an .npz (x [N, 3], labels [N, 3])" in result.err
    x, y = iris_like(30)  # class ids of the 3 scores: the extra columns are features, no targets
    (tmp_path / "wide.csv").write_text("a,b,c,d,e,f,label\n" + "\n".join(
        ",".join([*map(str, r), "1.5", "2.5", str(label)]) for r, label in zip(x, y, strict=True)) + "\n")
    onnx.save(zoo.build_model("iris-mlp"), tmp_path / "iris.onnx")
    result = run_cli("train", tmp_path / "iris.onnx", "--data", tmp_path / "wide.csv", "-o", tmp_path / "iris")
    assert result.code == 1 and result.err.endswith("leave columns out of the file\n")


def test_numbered_classes_fewer_than_the_scores_evaluate_on_their_own_data(tmp_path, run_cli):
    # labels 2 and 3 for a 3-score model: named 2, 3 and 'class 2' (the score no label trained), which eval could not
    # map back ('class labels run from 2 to 3 ... renumber them from 0')
    x, y = iris_like(90)
    labels = y % 2 + 2
    x[:, 0] += labels * 6
    rows = [",".join([*map(str, r), str(label)]) for r, label in zip(x, labels, strict=True)]
    (tmp_path / "two.csv").write_text("a,b,c,d,label\n" + "\n".join(rows) + "\n")
    onnx.save(_unnamed_classifier(3), tmp_path / "m.onnx")
    assert run_cli("train", tmp_path / "m.onnx", "--data", tmp_path / "two.csv", "--epochs", "30", "--lr", "0.05",
                   "-o", tmp_path / "run").code == 0
    stored = json.loads(metadata(onnx.load(tmp_path / "run" / "model.onnx"))[LABELS_KEY])
    assert stored == ["2", "3", "class 2"]
    scored = run_cli("eval", tmp_path / "run" / "model.onnx", "--json")
    assert scored.code == 0 and json.loads(scored.out)["accuracy"] > 0.9, scored.err


def test_two_numbers_for_a_one_logit_binary_model_train_as_its_two_classes(tmp_path, run_cli):
    # -1/1 (an SVM's habit) or 1/2 for a binary model: 'a binary task takes labels 0 and 1, but a label is -1'
    model = zoo.build_model("binary-classifier")
    kept = [p for p in model.metadata_props if p.key != LABELS_KEY]  # a binary model that names no classes
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    onnx.save(model, tmp_path / "binary.onnx")
    x = RNG.normal(size=200)
    (tmp_path / "signs.csv").write_text("x,label\n" + "".join(f"{v:.4f},{1 if v > 0 else -1}\n" for v in x))
    result = run_cli("train", tmp_path / "binary.onnx", "--data", tmp_path / "signs.csv", "-o", tmp_path / "run")
    assert result.code == 0, result.err
    assert "warning: the labels -1, 1 are not class ids (0 to 1)" in result.err
    assert json.loads(metadata(onnx.load(tmp_path / "run" / "model.onnx"))[LABELS_KEY]) == ["-1", "1"]
    scored = run_cli("eval", tmp_path / "run" / "model.onnx", "--json")
    assert scored.code == 0 and json.loads(scored.out)["accuracy"] > 0.9, scored.err
