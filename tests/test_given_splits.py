""".npz files that hold their own splits (Keras' x_train, y_train, x_test, y_test), and arrays of images for a model
built for them: [N, H, W], Keras' channels-last [N, H, W, C] and 0-255 pixels."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper
from sklearn.datasets import load_digits

from onnxkit.data import load_dataset
from onnxkit.errors import OnnxkitError
from onnxkit.train import fit
from onnxkit.train.standardize import scale_of


def _rows(x: np.ndarray) -> set[bytes]:
    return {row.tobytes() for row in x}


def test_the_files_splits_are_the_splits(tmp_path):
    rng = np.random.default_rng(0)
    parts = {s: (rng.normal(size=(n, 3)).astype(np.float32), rng.integers(0, 3, n)) for s, n in
             (("train", 60), ("val", 15), ("test", 20))}
    path = tmp_path / "own.npz"
    np.savez(path, **{f"{k}_{s}": v for s, (x, y) in parts.items() for k, v in (("x", x), ("y", y))})
    data = load_dataset(path)
    for split, name in (("train", "train"), ("validation", "val"), ("test", "test")):
        got = data.split(split)
        np.testing.assert_array_equal(got.inputs["x"], parts[name][0])  # the file's rows, in its order
        np.testing.assert_array_equal(got.labels, parts[name][1])


def test_a_missing_validation_split_is_carved_out_of_train_by_seed(tmp_path):
    rng = np.random.default_rng(1)
    x_train, x_test = rng.normal(size=(100, 4)), rng.normal(size=(30, 4))
    y_train, y_test = np.repeat(np.arange(2), 50), rng.integers(0, 2, 30)
    path = tmp_path / "keras.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    data = load_dataset(path, seed=3)
    assert _rows(data.test.inputs["x"]) == _rows(x_test) and len(data.test) == 30
    # train and validation are x_train's rows, a fifth (of each class) validating
    assert _rows(data.train.inputs["x"]) | _rows(data.validation.inputs["x"]) == _rows(x_train)
    assert np.bincount(data.validation.labels).tolist() == [10, 10]
    again, other = load_dataset(path, seed=3), load_dataset(path, seed=4)
    np.testing.assert_array_equal(again.validation.inputs["x"], data.validation.inputs["x"])
    assert _rows(other.validation.inputs["x"]) != _rows(data.validation.inputs["x"])


def test_class_names_are_numbered_over_every_split(tmp_path):
    path = tmp_path / "names.npz"
    np.savez(path, x_train=np.arange(12.0).reshape(6, 2), y_train=np.array(["cat", "dog"] * 3),
             x_test=np.zeros((2, 2)), y_test=np.array(["emu", "cat"]))
    data = load_dataset(path)
    assert data.label_names == ["cat", "dog", "emu"]
    assert data.test.labels.tolist() == [2, 0]


@pytest.mark.parametrize(("arrays", "says"), [
    ({"x_train": np.zeros((4, 2)), "x_test": np.zeros((2, 2))}, "no labels among its train arrays (x_train); save"),
    ({"x_train": np.zeros((4, 2)), "y_train": np.zeros(4), "x_test": np.zeros((2, 2))},
     "its test arrays have no y_test, the labels that split is scored on; add them, or leave the test arrays out"),
    # named as the file names them: it said y_validation of a file of x_val
    ({"x_train": np.zeros((4, 2)), "y_train": np.zeros(4), "x_val": np.zeros((2, 2))},
     "its validation arrays have no y_val, the labels that split is scored on"),
    ({"x_train": np.zeros((4, 2)), "y_train": np.arange(4), "x_valid": np.zeros((2, 3)), "y_valid": np.zeros(2)},
     "rows of different shapes (x_train [2], x_valid [3])"),
    ({"x_train": np.zeros((4, 2)), "y_train": np.zeros(4), "z_test": np.zeros((2, 2)), "y_test": np.zeros(2)},
     "its test arrays (y, z) are not its train arrays' (x, y)"),
    ({"x_train": np.zeros((4, 2)), "y_train": np.zeros(4), "x_test": np.zeros((2, 3)), "y_test": np.zeros(2)},
     "rows of different shapes (x_train [2], x_test [3])"),
    ({"x_train": np.zeros((4, 2)), "y_train": np.zeros(4), "ids": np.arange(4)},
     "holds ids beside split arrays such as x_train; give every array a split's suffix"),
    # an empty test split trained and scored nothing; an empty train split crashed in the model built for it
    ({"x_train": np.zeros((4, 2)), "y_train": np.zeros(4), "x_test": np.zeros((0, 2)), "y_test": np.zeros(0)},
     "its test arrays have no rows; give them rows, or leave the test arrays out"),
    ({"x_train": np.zeros((0, 2)), "y_train": np.zeros(0), "x_test": np.zeros((2, 2)), "y_test": np.zeros(2)},
     "its train arrays have no rows"),
    # two arrays of one split: one was dropped unsaid
    ({"x_train": np.zeros((4, 2)), "y_train": np.zeros(4), "x_val": np.zeros((2, 2)), "y_val": np.zeros(2),
      "x_valid": np.ones((2, 2)), "y_valid": np.ones(2)},
     "holds both x_val and x_valid, two x arrays of the validation split; keep one"),
    # ids in train, names in test: read together they were 20 classes, the test split's none of train's
    ({"x_train": np.zeros((4, 2)), "y_train": np.array([0, 1, 1, 0]), "x_test": np.zeros((3, 2)),
      "y_test": np.array(["one", "zero", "one"])},
     "y_test holds class names (one, zero) but y_train numbers; give every split its labels alike"),
])
def test_a_split_file_that_does_not_add_up_is_one_line(tmp_path, arrays, says):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(OnnxkitError, match="^" + str(path).replace(".", r"\.") + ": ") as e:
        load_dataset(path)
    assert says in str(e.value)


def _digits_arrays(tmp_path, name: str, layout) -> tuple:
    """sklearn's digits as a Keras user holds images: uint8 0-255, split as x_train / x_test."""
    d = load_digits()
    images = layout(np.minimum(d.images * 16, 255).astype(np.uint8))
    path = tmp_path / name
    np.savez(path, x_train=images[:1400], y_train=d.target[:1400], x_test=images[1400:], y_test=d.target[1400:])
    return path, images[:1400]


@pytest.mark.parametrize(("layout", "shape", "axes"), [
    (lambda x: x, [1, 8, 8], (0, 2, 3)),  # [N, H, W]: gray, a unit channel axis added
    (lambda x: np.repeat(x[..., None], 3, axis=3), [8, 8, 3], (0, 1, 2)),  # Keras' [N, H, W, C]
])
def test_images_in_arrays_train_a_cnn_built_for_them_standardised(tmp_path, run_cli, layout, shape, axes):
    path, train_images = _digits_arrays(tmp_path, "digits.npz", layout)
    result = run_cli("train", path, "-o", tmp_path / "run", "--epochs", "6", "--quiet")
    assert result.code == 0, result.err
    model = onnx.load(tmp_path / "run" / "model.onnx")
    dims = [d.dim_value or d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", *shape]
    # 0-255 pixels: per-channel mean and std of the training rows the model trained on, in front of it
    data = load_dataset(path)
    stats = {t.name.rsplit(".", 1)[-1]: numpy_helper.to_array(t) for t in model.graph.initializer
             if t.name.startswith("onnxkit.standardize")}
    x = data.train.inputs["x"].astype(np.float64).reshape(len(data.train), *shape)
    np.testing.assert_allclose(stats["mean"].ravel(), x.mean(axis=axes).ravel(), rtol=1e-5)
    np.testing.assert_allclose(stats["std"].ravel(), x.std(axis=axes).ravel(), rtol=1e-5)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    test = data.test.inputs["x"].reshape(len(data.test), *shape).astype(np.float32)
    accuracy = (session.run(None, {"image": test})[0].argmax(1) == data.test.labels).mean()
    assert accuracy > 0.8  # 6 epochs (the default run: 93.7%); raw 0-255 pixels gave 89.7% at the default


def _tiny(x: np.ndarray) -> np.ndarray:
    """8x8 digits as 4x4 (2x2 means), three channels last, scaled 1x, 2x, 3x: [N, 4, 4, 3]."""
    small = x.reshape(len(x), 4, 2, 4, 2).mean(axis=(2, 4))
    return np.stack([small * (c + 1) for c in range(3)], axis=3)


def test_tiny_channels_last_images_are_not_read_channels_first(tmp_path, run_cli):
    """[N, 4, 4, 3] was read [N, C=4, H=4, W=3] (a 4x3 image of 4 channels), standardised per row of pixels."""
    path, train_images = _digits_arrays(tmp_path, "tiny.npz", _tiny)
    result = run_cli("train", path, "-o", tmp_path / "run", "--epochs", "1")
    assert result.code == 0, result.err
    assert result.err.startswith("no model given: a CNN 4x4x3 (channels last) -> "), result.err
    assert "tiny.npz's 4x4 images" in result.err.splitlines()[0]
    stats = {t.name.rsplit(".", 1)[-1]: numpy_helper.to_array(t) for t in
             onnx.load(tmp_path / "run" / "model.onnx").graph.initializer if t.name.startswith("onnxkit.standardize")}
    x = load_dataset(path).train.inputs["x"].astype(np.float64)
    np.testing.assert_allclose(stats["mean"].ravel(), x.mean(axis=(0, 1, 2)), rtol=1e-5)  # one a channel
    np.testing.assert_allclose(stats["std"].ravel(), x.std(axis=(0, 1, 2)), rtol=1e-5)


def test_images_that_read_either_way_say_the_layout_assumed_and_how_to_take_the_other(tmp_path, run_cli):
    path, _ = _digits_arrays(tmp_path, "cubes.npz", lambda x: _tiny(x)[:, 1:, 1:])  # [N, 3, 3, 3]
    result = run_cli("train", path, "-o", tmp_path / "run", "--epochs", "1")
    assert result.code == 0, result.err
    line = result.err.splitlines()[0]
    assert line.startswith("no model given: a CNN 3x3x3 (channels first, assumed: [3, 3, 3] reads channels last "
                           "too; to take them so, add --set channels_last=True to the build command that ends this "
                           "line and train that model) -> "), line
    stats = {t.name.rsplit(".", 1)[-1]: numpy_helper.to_array(t) for t in
             onnx.load(tmp_path / "run" / "model.onnx").graph.initializer if t.name.startswith("onnxkit.standardize")}
    x = load_dataset(path).train.inputs["x"].astype(np.float64)
    np.testing.assert_allclose(stats["mean"].ravel(), x.mean(axis=(0, 2, 3)), rtol=1e-5)  # as the line says
    assert line.endswith("(onnxkit build image-cnn --set channels=3 --set height=3 --set width=3 --set "
                         f"num_classes=10 -o {tmp_path / 'run' / 'base_model.onnx'})")


@pytest.mark.parametrize(("flag", "says", "standardised"), [
    ((), "(pixels up to 255, standardised in the model)", True),
    (("--no-standardize",), "(pixels up to 255, trained as they are (--no-standardize))", False),
])
def test_the_first_line_says_whether_pixels_are_standardised(tmp_path, run_cli, flag, says, standardised):
    """--no-standardize trains 0-255 pixels raw; the first line said 'standardised in the model' all the same."""
    path, _ = _digits_arrays(tmp_path, "digits.npz", lambda x: x)
    result = run_cli("train", path, "-o", tmp_path / "run", "--epochs", "1", *flag)
    assert result.code == 0, result.err
    assert f"digits.npz's 8x8 images {says} and 10 classes" in result.err.splitlines()[0]
    model = onnx.load(tmp_path / "run" / "model.onnx")
    assert any(t.name.startswith("onnxkit.standardize") for t in model.graph.initializer) == standardised
    assert ("Sub" in {n.op_type for n in model.graph.node}) == standardised


def test_channels_last_statistics_are_per_channel():
    x = np.random.default_rng(2).normal([1.0, 5.0, -3.0], [1.0, 2.0, 0.5], size=(40, 6, 7, 3))
    scale = scale_of(x, ("batch", 6, 7, 3))
    np.testing.assert_allclose(scale.mean.ravel(), x.mean(axis=(0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(scale.std.ravel(), x.std(axis=(0, 1, 2)), rtol=1e-5)
    assert scale_of(x[:, :3], ("batch", 3, 7, 3)).mean.shape == (3, 1, 1)  # channels first where both could be
    # but not a 4x3 image of 4 channels: a 4x4 one of 3
    np.testing.assert_allclose(scale_of(x[:, :4, :4], ("batch", 4, 4, 3)).mean.ravel(),
                               x[:, :4, :4].mean(axis=(0, 1, 2)), rtol=1e-5)


def test_predict_on_a_split_file_says_which_rows_to_give(tmp_path, run_cli):
    path, _ = _digits_arrays(tmp_path, "d.npz", lambda x: x)
    model = fit(None, path, tmp_path / "run", steps=2).model_path
    result = run_cli("predict", model, path)
    assert result.code == 1
    assert result.err == (f"error: {path}: holds a dataset's splits (x_train, y_train, x_test, ...), not one set of "
                          "model inputs; save the rows to predict alone (np.save('x_test.npy', x_test)), or score "
                          f"the test split with: onnxkit eval MODEL --data {path}\n")


def test_images_with_class_ids_saved_as_floats_are_told_to_save_integers(tmp_path, run_cli):
    path, _ = _digits_arrays(tmp_path, "digits.npz", lambda x: x)
    arrays = dict(np.load(path))
    np.savez(path, **{**arrays, "y_train": arrays["y_train"].astype(np.float32)})  # a torch tensor's labels
    result = run_cli("train", path, "-o", tmp_path / "run")
    # it said 'holds x [8, 8] a row: train picks a model only for one table of features ... or for images of classes'
    assert result.code == 1 and result.err.count("\n") == 1, result.err
    assert result.err.startswith(f"error: {path} holds images with labels of floats (whole numbers), regression "
                                 "targets, and train builds image models for classes: save class ids as integers")
    assert not (tmp_path / "run").exists()
    rng = np.random.default_rng(0)  # a series' real-valued targets: no images, the general line
    np.savez(tmp_path / "series.npz", x=rng.normal(size=(50, 12, 3)), y=rng.normal(size=50))
    result = run_cli("train", tmp_path / "series.npz", "-o", tmp_path / "run")
    assert result.code == 1 and "holds x [12, 3] a row: train picks a model only for" in result.err, result.err


def test_images_under_two_pixels_a_side_are_said_to_take_no_convolution():
    from onnxkit.data import dataset_from_arrays
    from onnxkit.train.default_model import default_model

    rng = np.random.default_rng(0)
    data = dataset_from_arrays("dots", {"x": rng.integers(0, 255, (40, 1, 1, 1)).astype(np.uint8)}, np.arange(40) % 2)
    proto, made = default_model(data, "dots.npz")
    assert not [n for n in proto.graph.node if n.op_type == "Conv"]
    assert made.shape == "a CNN 1x1x1 -> no convolution (a side under 2 pixels) -> 64 -> 2"  # 'max-pool x0 ( filters)'


def test_arrays_named_in_capitals_are_read_as_in_lower_case(tmp_path):
    path, _ = _digits_arrays(tmp_path, "digits.npz", lambda x: x)
    arrays = dict(np.load(path))
    np.savez(path, X_Train=arrays["x_train"], Y_Train=arrays["y_train"], X_Test=arrays["x_test"],
             Y_Test=arrays["y_test"])  # it said 'no labels among its train arrays (X_train, Y_train)'
    data = load_dataset(path)
    np.testing.assert_array_equal(data.test.inputs["X"], arrays["x_test"])
    np.testing.assert_array_equal(data.test.labels, arrays["y_test"])


def test_labels_of_one_column_beside_flat_ones_are_read_alike(tmp_path):
    path, _ = _digits_arrays(tmp_path, "digits.npz", lambda x: x)
    arrays = dict(np.load(path))
    np.savez(path, **{**arrays, "y_train": arrays["y_train"][:, None].astype(np.uint8)})  # CIFAR's [N, 1] uint8
    data = load_dataset(path)  # it said 'rows of different shapes (y_train [1], y_test [])'
    np.testing.assert_array_equal(data.test.labels, arrays["y_test"])
    np.testing.assert_array_equal(np.sort(np.concatenate([data.train.labels, data.validation.labels])),
                                  np.sort(arrays["y_train"]))


def test_a_split_scaled_apart_from_the_others_is_one_line(tmp_path):
    path, _ = _digits_arrays(tmp_path, "digits.npz", lambda x: x)
    arrays = dict(np.load(path))
    np.savez(path, **{**arrays, "x_test": arrays["x_test"].astype(np.float64)})  # 0-255 as floats: the same pixels
    np.testing.assert_array_equal(load_dataset(path).test.inputs["x"], arrays["x_test"])
    np.savez(path, **{**arrays, "x_test": arrays["x_test"] / 255})  # only the test split divided: trained on as is,
    with pytest.raises(OnnxkitError) as e:  # it scored 9.8% where the same pixels score 84.9% after one epoch
        load_dataset(path)
    assert str(e.value) == (f"{path}: x_train holds whole numbers up to 255 but x_test fractions within [-1, 1], as "
                            "if divided by 255 alone; scale every split alike (each / 255, or none)")
    np.savez(path, **{**arrays, "x_train": arrays["x_train"].astype(np.float32), "x_test": arrays["x_test"] / 255})
    with pytest.raises(OnnxkitError) as e:  # whole numbers as floats (astype('float32')): it trained, unsaid
        load_dataset(path)
    assert str(e.value).startswith(f"{path}: x_train holds whole numbers up to 255 but x_test fractions")


def test_eval_of_a_file_holding_its_own_splits_scores_its_test_split(tmp_path, run_cli):
    from onnxkit import zoo

    path, _ = _digits_arrays(tmp_path, "digits.npz", lambda x: x)
    model = zoo.build_model("image-cnn", channels=1, height=8, width=8, num_classes=10)  # not trained on the file
    onnx.save(model, tmp_path / "cnn.onnx")
    arrays = np.load(path)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    scores = session.run(None, {"image": arrays["x_test"][:, None].astype(np.float32)})[0]
    result = run_cli("eval", tmp_path / "cnn.onnx", path, "--json")  # it scored all 1,797 rows, x_train's too
    assert result.code == 0, result.err
    metrics = json.loads(result.out)
    assert metrics["split"] == "test" and metrics["examples"] == len(arrays["x_test"]) == 397
    np.testing.assert_allclose(metrics["accuracy"], (scores.argmax(1) == arrays["y_test"]).mean())


def test_images_of_two_channels_are_told_the_channels_a_model_is_built_for(tmp_path, run_cli):
    path, _ = _digits_arrays(tmp_path, "two.npz", lambda x: np.stack([x, 255 - x], axis=1))  # [N, 2, 8, 8]
    result = run_cli("train", path, "-o", tmp_path / "run")
    assert result.code == 1 and result.err.count("\n") == 1, result.err
    assert (f"error: {path} holds x [2, 8, 8] a row: train picks a model only for one table of features (x [rows, "
            "features]) with a class or targets a row, or for images of classes ([N, H, W], or [N, C, H, W] / [N, H, "
            "W, C] of 1, 3 or 4 channels); build a model") in result.err  # it said no more than 'images of classes'
