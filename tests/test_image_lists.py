"""A CSV that lists image files beside their labels (`path,label`, as fastai's `ImageDataLoaders.from_csv` and
Keras' `flow_from_dataframe` read them) is an image dataset for train and eval, and a list of images for predict."""

from __future__ import annotations

import csv

import numpy as np
import onnx
import pytest
from PIL import Image

from onnxkit import zoo
from onnxkit.data import load_dataset
from onnxkit.errors import OnnxkitError
from onnxkit.train import fit

RNG = np.random.default_rng(5)


@pytest.fixture
def listed(tmp_path):
    """40 images of two classes, bright and dark, 6-10 pixels a side, PNG and JPEG in one folder, and a CSV (in the
    folder above) listing them with their class names; the images and names in listed order."""
    (tmp_path / "pics").mkdir()
    rows, images = [], []
    for i in range(40):
        label = ("dark", "bright")[i % 2]
        side = 6 + i % 5
        pixels = RNG.integers(0, 80, (side, side), dtype=np.uint8) + (150 if label == "bright" else 0)
        name = f"pics/{i:02d}.{'png' if i % 3 else 'jpg'}"
        Image.fromarray(pixels.astype(np.uint8)).save(tmp_path / name)
        rows.append((name, label))
        images.append(tmp_path / name)
    with open(tmp_path / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([("file", "label"), *rows])
    return tmp_path / "labels.csv", images, [label for _, label in rows]


def test_the_listed_images_are_the_dataset(listed):
    path, images, labels = listed
    model = zoo.build_model("digits-cnn")  # [batch, 1, 8, 8]: each image read gray at 8x8
    data = load_dataset(path, model=model, validation=0.0, test=0.0)
    assert data.label_names == ["bright", "dark"] and data.label_column == "'label' (column 2)"
    x = data.train.inputs["image"]
    assert x.shape == (40, 1, 8, 8) and x.dtype == np.float32
    from onnxkit.data.images import ImageInput, read_images

    expected = read_images(images, ImageInput("image", 1, 8, 8))  # each file as the image reader reads it
    np.testing.assert_array_equal(x, expected)
    np.testing.assert_array_equal(data.train.labels, [("bright", "dark").index(name) for name in labels])
    split = load_dataset(path, model=model)  # split by seed and stratified, as any CSV
    assert [len(s) for s in (split.train, split.validation, split.test)] == [24, 8, 8]
    assert np.bincount(split.test.labels).tolist() == [4, 4]


def test_train_on_the_list_alone_and_predict_from_it(listed, tmp_path, run_cli):
    path, images, _ = listed
    result = fit(None, path, tmp_path / "run", epochs=40, lr=3e-3)
    assert result.metrics["test"]["accuracy"] == 1.0  # bright against dark
    out = run_cli("predict", result.model_path, path, "-o", tmp_path / "p.csv")
    assert out.code == 0, out.err
    by_list = list(csv.reader(open(tmp_path / "p.csv")))
    assert [row[0] for row in by_list[1:]] == [f"pics/{i:02d}.{'png' if i % 3 else 'jpg'}" for i in range(40)]
    out = run_cli("predict", result.model_path, *images, "-o", tmp_path / "q.csv")
    assert out.code == 0, out.err
    by_files = list(csv.reader(open(tmp_path / "q.csv")))
    np.testing.assert_array_equal(np.array([r[1:] for r in by_list[1:]]), np.array([r[1:] for r in by_files[1:]]))


def test_columns_beside_the_files_and_labels_are_said_to_be_left_out(listed, tmp_path, run_cli):
    """A list of file, width, source, label: width and source were dropped unsaid."""
    path, images, labels = listed
    rows = list(csv.reader(open(path)))
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([["file", "width", "source", "label"],
                                 *[[name, str(Image.open(file).width), "scan", label]
                                   for (name, label), file in zip(rows[1:], images, strict=True)]])
    data = load_dataset(path, model=zoo.build_model("digits-cnn"), validation=0.0, test=0.0)
    assert data.notes == ("columns 'width', 'source' left out: a list of images is read as its image files ('file') "
                          "and their labels alone",)
    result = run_cli("train", path, "-o", tmp_path / "run", "--epochs", "1")
    assert result.code == 0 and f"warning: {data.notes[0]}\n" in result.err, result.err


def test_an_image_the_list_names_that_is_not_there_is_one_line(listed):
    path, images, _ = listed
    images[3].unlink()
    images[7].unlink()
    with pytest.raises(OnnxkitError) as e:
        load_dataset(path)
    assert str(e.value) == (f"{path}: 2 of the 40 images its column 1 names are not there, the first {images[3]} "
                            "(no such file); paths are taken from the CSV's folder: fix them, or drop those rows")



def _rewritten(path, rows) -> None:
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)


@pytest.mark.parametrize(("edit", "says"), [
    # a row naming no image: it was read as a table ("every feature column holds too many distinct texts")
    (lambda rows: [*rows[:6], ["notes.txt", "dark"], *rows[7:]],
     "{path}:7: 'file' names an image file in 39 of 40 rows, but not here ('notes.txt'); name an image"),
    (lambda rows: [*rows[:6], ["", "dark"], *rows[7:]],
     "{path}:7: 'file' names an image file in 39 of 40 rows, but not here (''); name an image"),
    # an image beside its mask: one column was taken unsaid, or the masks' names were 40 classes
    (lambda rows: [[row[0], "mask" if i == 0 else row[0], row[1]] for i, row in enumerate(rows)],
     "{path}: 'file' and 'mask' each name an image in every row; a list of images has one such column"),
    (lambda rows: [rows[0], *[[row[0], rows[1 + i % 40][0]] for i, row in enumerate(rows[1:])]],
     "{path}: 'file' and 'label' each name an image in every row; a list of images has one such column"),
])
def test_a_list_naming_images_in_some_rows_or_in_two_columns_is_one_line(listed, tmp_path, run_cli, edit, says):
    path, _, _ = listed
    _rewritten(path, edit(list(csv.reader(open(path)))))
    with pytest.raises(OnnxkitError) as e:
        load_dataset(path)
    assert str(e.value).startswith(says.format(path=path)), str(e.value)
    onnx.save(zoo.build_model("digits-cnn"), tmp_path / "digits.onnx")
    out = run_cli("predict", tmp_path / "digits.onnx", path)  # it said "column 1 ('file') holds text" for a stray row
    assert out.code == 1 and out.err == f"error: {e.value}\n"


def test_a_windows_path_in_a_list_is_read_with_slashes(listed):
    path, images, _ = listed
    rows = list(csv.reader(open(path)))
    _rewritten(path, [rows[0], *[[row[0].replace("/", "\\"), row[1]] for row in rows[1:]]])  # pics\00.jpg
    data = load_dataset(path, model=zoo.build_model("digits-cnn"), validation=0.0, test=0.0)  # '40 of 40 not there'
    from onnxkit.data.images import ImageInput, read_images

    np.testing.assert_array_equal(data.train.inputs["image"], read_images(images, ImageInput("image", 1, 8, 8)))


def test_a_list_with_no_header_keeps_its_first_image(listed, tmp_path, run_cli):
    path, images, labels = listed
    _rewritten(path, list(csv.reader(open(path)))[1:])  # pics/00.jpg,bright first: it was read as the header
    model = zoo.build_model("digits-cnn")
    data = load_dataset(path, model=model, validation=0.0, test=0.0)
    from onnxkit.data.images import ImageInput, read_images

    np.testing.assert_array_equal(data.train.inputs["image"], read_images(images, ImageInput("image", 1, 8, 8)))
    assert data.label_names == ["bright", "dark"] and len(data.train) == 40
    onnx.save(model, tmp_path / "digits.onnx")
    out = run_cli("predict", tmp_path / "digits.onnx", path, "-o", tmp_path / "p.csv")
    assert out.code == 0, out.err
    assert [row[0] for row in csv.reader(open(tmp_path / "p.csv"))][1:] == [f"pics/{i:02d}.{'png' if i % 3 else 'jpg'}"
                                                                            for i in range(40)]


def test_predict_of_a_list_with_a_short_row_names_the_row(listed, tmp_path, run_cli):
    path, _, _ = listed
    rows = list(csv.reader(open(path)))
    _rewritten(path, [*rows[:3], ["3"], *rows[3:]])  # a row of one cell, not an image, on line 4
    onnx.save(zoo.build_model("digits-cnn"), tmp_path / "digits.onnx")
    out = run_cli("predict", tmp_path / "digits.onnx", path)
    assert out.code == 1 and out.err == (f"error: {path}:4: 'file' names an image file in 40 of 41 rows, but not here "
                                         "('3'); name an image (.png .jpg .jpeg .bmp .gif .webp .tif .tiff) in every "
                                         "row, or drop the rows that name none\n"), out.err


def test_predict_of_a_list_of_absolute_paths_names_each_row_as_listed(listed, tmp_path, run_cli, monkeypatch):
    path, images, _ = listed
    rows = list(csv.reader(open(path)))
    _rewritten(path, [rows[0], *[[str(tmp_path / row[0]), row[1]] for row in rows[1:]]])
    onnx.save(zoo.build_model("digits-cnn"), tmp_path / "digits.onnx")
    monkeypatch.chdir(tmp_path)
    out = run_cli("predict", "digits.onnx", path.name, "-o", "p.csv")  # a ValueError traceback from relative_to
    assert out.code == 0, out.err
    by_list = list(csv.reader(open(tmp_path / "p.csv")))[1:]
    assert [row[0] for row in by_list] == [str(p) for p in images]
    out = run_cli("predict", "digits.onnx", *images, "-o", "q.csv")
    assert out.code == 0, out.err
    by_files = list(csv.reader(open(tmp_path / "q.csv")))[1:]
    np.testing.assert_array_equal(np.array([r[1:] for r in by_list]), np.array([r[1:] for r in by_files]))


def test_an_image_listed_again_is_decoded_once(listed, monkeypatch):
    from onnxkit.data import images as reader
    from onnxkit.data.images import ImageInput, read_images

    path, images, _ = listed
    rows = list(csv.reader(open(path)))
    _rewritten(path, [rows[0], *rows[1:] * 5])  # each image five times: an oversampled list
    expected = read_images(images, ImageInput("image", 1, 8, 8))  # the 40 files as the reader reads them, 8x8
    decoded, pixels = [], reader._pixels
    monkeypatch.setattr(reader, "_pixels", lambda p, *a: decoded.append(p) or pixels(p, *a))
    data = load_dataset(path, validation=0.0, test=0.0)  # it decoded each of the 200 rows
    assert sorted(decoded) == sorted(images)
    np.testing.assert_array_equal(data.train.inputs["image"], np.concatenate([expected] * 5))
