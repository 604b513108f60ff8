"""Folders of images (torchvision's ImageFolder layout) as data for train, eval and predict.

The reference is the built-in digits-images ([N, 1, 8, 8] in [0, 1]) written as 8x8 grayscale PNGs in class
folders, pixels round(v * 255): read back, they equal those values to 1/255. Layouts and channels are checked
against numpy and Pillow conversions computed here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from onnxkit import zoo
from onnxkit.data import load_dataset
from onnxkit.errors import OnnxkitError
from onnxkit.metadata import set_metadata
from onnxkit.metadata_keys import LABELS_KEY
from onnxkit.train import TrainingInterrupted, fit

RNG = np.random.default_rng(0)


def flat_model(shape: list, elem: int = TensorProto.FLOAT) -> onnx.ModelProto:
    """A model of one input of `shape` whose output is the input flattened: enough to read data for."""
    graph = helper.make_graph([helper.make_node("Flatten", ["image"], ["out"])], "flat",
                              [helper.make_tensor_value_info("image", elem, shape)],
                              [helper.make_tensor_value_info("out", elem, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def write_pngs(root, images: np.ndarray, labels: np.ndarray, names=None) -> list:
    """`images` ([N, H, W] or [N, H, W, C] uint8) as PNGs in class folders under `root`; their paths, in order."""
    paths = []
    for i, (pixels, label) in enumerate(zip(images, labels, strict=True)):
        folder = root / (names[label] if names else str(label))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / f"{i:04d}.png")
        paths.append(folder / f"{i:04d}.png")
    return paths


def in_sorted_rows(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each row's pixels and label, rows in lexicographic order: the same examples compare equal in any order."""
    rows = np.concatenate([x.reshape(len(x), -1), labels[:, None]], axis=1)
    return rows[np.lexsort(rows.T[::-1])]


@pytest.fixture(scope="module")
def digits():
    """digits-images as a whole: images [N, 1, 8, 8] in [0, 1], labels."""
    ds = load_dataset("digits-images")
    splits = (ds.train, ds.validation, ds.test)
    return np.concatenate([s.inputs["image"] for s in splits]), np.concatenate([s.labels for s in splits])


@pytest.fixture(scope="module")
def digits_folder(tmp_path_factory, digits):
    root = tmp_path_factory.mktemp("digits") / "digits_png"
    images, labels = digits
    write_pngs(root, np.round(images[:, 0] * 255).astype(np.uint8), labels)
    return root


@pytest.fixture
def gray_folder(tmp_path):
    """Two classes of 4 random 8x8 grayscale PNGs: the folder, and the pixels in the order of the sorted files."""
    pixels = RNG.integers(0, 256, (8, 8, 8), dtype=np.uint8)
    write_pngs(tmp_path / "gray", pixels, np.array([0, 1] * 4), names=["cat", "dog"])
    order = [0, 2, 4, 6, 1, 3, 5, 7]  # cat's files, then dog's
    return tmp_path / "gray", pixels[order]


def all_of(folder, model=None):
    """Every example of the folder, in file order (no split), as the model takes it."""
    ds = load_dataset(folder, model=model, validation=0.0, test=0.0)
    return next(iter(ds.train.inputs.values())), ds.train.labels


def test_the_folder_reads_back_the_pixels_split_as_the_arrays_are(digits_folder, digits):
    ds = load_dataset(digits_folder, model=zoo.build_model("digits-cnn"))
    ref = load_dataset("digits-images")
    assert ds.label_names == [str(i) for i in range(10)]
    for split, theirs in zip((ds.train, ds.validation, ds.test), (ref.train, ref.validation, ref.test), strict=True):
        x = split.inputs["image"]
        assert (x.shape[1:], x.dtype) == ((1, 8, 8), np.float32)
        np.testing.assert_array_equal(np.bincount(split.labels, minlength=10),  # stratified alike
                                      np.bincount(theirs.labels, minlength=10))
    x = np.concatenate([s.inputs["image"] for s in (ds.train, ds.validation, ds.test)])
    y = np.concatenate([s.labels for s in (ds.train, ds.validation, ds.test)])
    images, labels = digits
    np.testing.assert_allclose(in_sorted_rows(x, y), in_sorted_rows(np.round(images * 255) / 255, labels), atol=1e-6)
    assert np.abs(in_sorted_rows(x, y) - in_sorted_rows(images, labels)).max() <= 0.5 / 255 + 1e-6


def test_training_on_the_folder_scores_as_training_on_the_arrays(digits_folder, tmp_path):
    scores = [fit(zoo.build_model("digits-cnn"), data=data, out_dir=tmp_path / str(i), epochs=10)
              .metrics["test"]["accuracy"] for i, data in enumerate((digits_folder, "digits-images"))]
    assert min(scores) > 0.93 and abs(scores[0] - scores[1]) < 0.03, scores


def test_eval_from_another_folder_finds_the_training_folder(digits_folder, tmp_path, run_cli, monkeypatch):
    model = tmp_path / "digits.onnx"
    onnx.save(zoo.build_model("digits-cnn"), model)
    assert run_cli("train", model, "--data", digits_folder, "--epochs", "2", "-o", tmp_path / "run").code == 0
    monkeypatch.chdir(tmp_path)
    result = run_cli("eval", "run/model.onnx")
    assert result.code == 0 and result.out.startswith(f"{digits_folder} test split (359 examples)"), result


def test_eval_of_a_folder_with_a_test_folder_scores_test_for_any_model(digits, tmp_path, run_cli):
    """train/ beside test/: eval of another model scored every image ('all split', train/'s too)."""
    images, labels = np.round(digits[0][:60, 0] * 255).astype(np.uint8), digits[1][:60]
    write_pngs(tmp_path / "data" / "train", images[:40], labels[:40])
    write_pngs(tmp_path / "data" / "test", images[40:], labels[40:])
    model = zoo.build_model("digits-cnn")
    onnx.save(model, tmp_path / "m.onnx")
    result = run_cli("eval", tmp_path / "m.onnx", tmp_path / "data", "--json")
    assert result.code == 0, result.err
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    scores = session.run(None, {"image": (images[40:, None] / 255).astype(np.float32)})[0]
    assert json.loads(result.out)["examples"] == 20
    assert json.loads(result.out)["accuracy"] == pytest.approx((scores.argmax(1) == labels[40:]).mean())
    assert run_cli("eval", tmp_path / "m.onnx", tmp_path / "data").out.startswith(f"{tmp_path / 'data'} test split")


def test_a_run_folder_in_the_image_folder_it_trains_on_is_refused(gray_folder, tmp_path, run_cli, monkeypatch):
    # `train m.onnx photos -o photos` wrote the run into the data: checkpoints/ and artifacts/ were then class folders
    # of no images, and eval and training refused the folder from then on
    folder, _ = gray_folder
    model = tmp_path / "flat.onnx"
    weight = numpy_helper.from_array(np.full((64, 2), 0.01, np.float32), "w")
    graph = helper.make_graph([helper.make_node("Flatten", ["image"], ["flat"]),
                               helper.make_node("MatMul", ["flat", "w"], ["logits"])], "linear",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    for out, where in ((folder, "the data folder"), (folder / "run", "inside the data folder"),
                       (folder / "cat", "inside the data folder")):
        result = run_cli("train", model, folder, "--epochs", "1", "-o", out)
        assert (result.code, result.err) == (1, f"error: --output {out} is {where} {folder}: the run's files would "
                                                "become part of the data; choose another --output\n")
    monkeypatch.chdir(folder)  # the default run folder, runs/flat, would land in it too
    assert run_cli("train", model, ".", "--epochs", "1").code == 1
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before
    assert run_cli("train", model, folder, "--epochs", "1", "-o", tmp_path / "run").code == 0


@pytest.mark.parametrize("shape", [["batch", 8, 8, 1], ["batch", 1, 8, 8]])
def test_layout_follows_the_input(gray_folder, shape):
    folder, pixels = gray_folder
    x, labels = all_of(folder, flat_model(shape))
    expected = pixels[..., None] if shape[-1] == 1 else pixels[:, None]
    np.testing.assert_allclose(x, expected / 255, atol=1e-7)
    assert labels.tolist() == [0] * 4 + [1] * 4


def test_tiny_colour_images_feed_a_channels_last_input_of_their_size(tmp_path):
    """[batch, 4, 4, 3]: 4x4 RGB (a model train built for such arrays); it read them as 4x3 RGBA, resized."""
    colour = RNG.integers(0, 256, (4, 4, 4, 3), dtype=np.uint8)
    write_pngs(tmp_path / "tiny", colour, np.array([0, 0, 1, 1]), names=["a", "b"])
    x, _ = all_of(tmp_path / "tiny", flat_model(["batch", 4, 4, 3]))
    np.testing.assert_allclose(x, colour / 255, atol=1e-7)


def test_gray_images_feed_an_rgb_model_and_colour_ones_a_gray_model(gray_folder, tmp_path):
    folder, pixels = gray_folder
    x, _ = all_of(folder, flat_model(["batch", 3, 8, 8]))
    np.testing.assert_allclose(x, np.repeat(pixels[:, None], 3, axis=1) / 255, atol=1e-7)
    colour = RNG.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    paths = write_pngs(tmp_path / "colour", colour, np.array([0, 1, 0, 1]), names=["a", "b"])
    order = [paths[i] for i in (0, 2, 1, 3)]
    gray, _ = all_of(tmp_path / "colour", flat_model(["batch", 8, 8, 1]))
    expected = np.stack([np.asarray(Image.open(p).convert("L")) for p in order])[..., None]
    np.testing.assert_allclose(gray, expected / 255, atol=1e-7)
    rgba, _ = all_of(tmp_path / "colour", flat_model(["batch", 8, 8, 4]))
    np.testing.assert_allclose(rgba[..., :3], colour[[0, 2, 1, 3]] / 255, atol=1e-7)
    np.testing.assert_array_equal(rgba[..., 3], 1)


def test_uint8_inputs_take_the_bytes_and_a_fixed_size_resizes(gray_folder):
    folder, pixels = gray_folder
    x, _ = all_of(folder, flat_model(["batch", 1, 8, 8], TensorProto.UINT8))
    assert x.dtype == np.uint8
    np.testing.assert_array_equal(x[:, 0], pixels)
    small, _ = all_of(folder, flat_model(["batch", 1, 4, 4]))
    expected = [np.asarray(Image.fromarray(p).resize((4, 4), Image.Resampling.BILINEAR)) for p in pixels]
    np.testing.assert_allclose(small[:, 0], np.stack(expected) / 255, atol=1e-7)


def test_a_dynamic_size_takes_images_of_one_size_and_refuses_two(gray_folder):
    folder, pixels = gray_folder
    x, _ = all_of(folder, flat_model(["batch", 1, "height", "width"]))
    np.testing.assert_allclose(x[:, 0], pixels / 255, atol=1e-7)
    Image.fromarray(np.zeros((6, 5), np.uint8)).save(folder / "dog" / "odd.png")
    with pytest.raises(OnnxkitError) as e:
        all_of(folder, flat_model(["batch", 1, "height", "width"]))
    assert str(e.value) == (f"{folder / 'dog' / 'odd.png'}: 5x6 pixels where {folder / 'cat' / '0000.png'} has 8x8; "
                            "model input 'image' takes any size but one array holds one: resize the images to one "
                            "size, or export the model with a fixed height and width")


def test_train_val_test_folders_are_the_splits(tmp_path):
    pixels = RNG.integers(0, 256, (30, 8, 8), dtype=np.uint8)
    labels = np.arange(30) % 2
    for split, rows in (("train", slice(0, 20)), ("val", slice(20, 25)), ("test", slice(25, 30))):
        write_pngs(tmp_path / "data" / split, pixels[rows], labels[rows], names=["cat", "dog"])
    ds = load_dataset(tmp_path / "data", model=flat_model(["batch", 1, 8, 8]))
    assert [len(s) for s in (ds.train, ds.validation, ds.test)] == [20, 5, 5]
    assert ds.label_names == ["cat", "dog"]
    np.testing.assert_allclose(in_sorted_rows(ds.validation.inputs["image"], ds.validation.labels),
                               in_sorted_rows(pixels[20:25, None] / 255, labels[20:25]), atol=1e-7)
    (tmp_path / "data" / "val").rename(tmp_path / "data" / "other")  # not read as the classes other, test, train
    with pytest.raises(OnnxkitError) as e:
        load_dataset(tmp_path / "data", model=flat_model(["batch", 1, 8, 8]))
    assert str(e.value) == (f"{tmp_path / 'data'}: holds the split folders test/, train/ beside other/; give it train/ "
                            "with val/ (or validation/) and/or test/ alone, each with a subfolder of images per class")
    shutil.rmtree(tmp_path / "data" / "other")  # train/ and test/: validation carved out of train/ by seed
    ds = load_dataset(tmp_path / "data", model=flat_model(["batch", 1, 8, 8]))
    assert [len(s) for s in (ds.train, ds.validation, ds.test)] == [16, 4, 5]


def test_folder_names_take_the_model_class_ids(gray_folder):
    folder, _ = gray_folder
    model = flat_model(["batch", 1, 8, 8])
    set_metadata(model, {LABELS_KEY: json.dumps(["dog", "cat"])})
    ds = load_dataset(folder, model=model, validation=0.0, test=0.0)
    assert ds.label_names == ["dog", "cat"] and ds.train.labels.tolist() == [1] * 4 + [0] * 4
    set_metadata(model, {LABELS_KEY: json.dumps(["dog", "bird"])})
    with pytest.raises(OnnxkitError) as e:
        load_dataset(folder, model=model)
    assert str(e.value).endswith("label 'cat' is not among the model's classes (dog, bird); rename the class folder "
                                 "to one of the model's classes (an image folder's labels are its names)")


def test_predict_on_a_png_or_a_folder_equals_predict_on_the_npy(digits_folder, digits, tmp_path, run_cli):
    model = tmp_path / "digits.onnx"
    onnx.save(zoo.build_model("digits-cnn"), model)
    files = sorted((digits_folder / "3").glob("*.png"))[:3]
    pixels = np.stack([np.asarray(Image.open(p), np.float32)[None] / 255 for p in files])
    np.save(tmp_path / "x.npy", pixels)
    np.save(tmp_path / "one.npy", pixels[:1])
    one, npy = (run_cli("predict", model, "-i", path).out.splitlines() for path in (files[0], tmp_path / "one.npy"))
    assert [line.split(maxsplit=1) for line in one] == [["file", npy[0].split(maxsplit=1)[1]],
                                                        [files[0].name, npy[1].split(maxsplit=1)[1]]]
    assert run_cli("predict", model, files[0], "-o", tmp_path / "one.csv").code == 0
    assert (tmp_path / "one.csv").read_text().splitlines()[1].startswith(f"{files[0].name},")
    folder = tmp_path / "three"
    folder.mkdir()
    for p in files:
        (folder / p.name).write_bytes(p.read_bytes())
    table = run_cli("predict", model, folder, "--top-k", "2")
    plain = run_cli("predict", model, tmp_path / "x.npy", "--top-k", "2")
    assert table.code == 0 and table.out.splitlines()[0].startswith("file")
    named = [line.split(maxsplit=1) for line in table.out.splitlines()[1:]]
    assert [name for name, _ in named] == [p.name for p in files]
    assert [rest for _, rest in named] == [line.split(maxsplit=1)[1] for line in plain.out.splitlines()[1:]]
    assert run_cli("predict", model, folder, "-o", tmp_path / "p.csv").code == 0
    assert run_cli("predict", model, tmp_path / "x.npy", "-o", tmp_path / "q.csv").code == 0
    rows = (tmp_path / "p.csv").read_text().splitlines()
    assert rows[0] == "file," + (tmp_path / "q.csv").read_text().splitlines()[0]
    assert [r.split(",", 1) for r in rows[1:]] == [[p.name, r] for p, r in
                                                    zip(files, (tmp_path / "q.csv").read_text().splitlines()[1:],
                                                        strict=True)]


def test_several_image_files_are_one_input_named_as_given(digits_folder, tmp_path, run_cli, monkeypatch):
    """A shell glob (`predict model.onnx 3/*.png`) gives predict several image files: one row each, in the order
    given, named by the path given; anything but image files among several is one line."""
    model = tmp_path / "digits.onnx"
    onnx.save(zoo.build_model("digits-cnn"), model)
    monkeypatch.chdir(digits_folder)
    files = [str(p.relative_to(digits_folder)) for p in sorted((digits_folder / "3").glob("*.png"))[:2]]
    files += [str(next((digits_folder / "7").glob("*.png")).relative_to(digits_folder))]
    several = run_cli("predict", model, *files, "-o", tmp_path / "several.csv")
    assert several.code == 0, several
    assert run_cli("predict", model, "3", "-o", tmp_path / "folder.csv").code == 0
    by_file = dict(row.split(",", 1) for row in (tmp_path / "folder.csv").read_text().splitlines()[1:])
    rows = (tmp_path / "several.csv").read_text().splitlines()[1:]
    assert [row.split(",", 1)[0] for row in rows] == files
    assert [row.split(",", 1)[1] for row in rows[:2]] == [by_file[Path(f).name] for f in files[:2]]
    for others in ([files[0], str(tmp_path / "x.npy")], [files[0], "3/missing.png"]):
        result = run_cli("predict", model, *others)
        assert result.code != 0 and result.err.count("\n") == 1, result
    assert "several inputs are image files only" in run_cli("predict", model, files[0], "x.npy").err
    assert "--ray reads one file or folder" in run_cli("predict", model, *files, "--ray").err


def test_a_jpeg_is_read_within_its_compression(tmp_path, gray_folder):
    _, pixels = gray_folder
    smooth = np.add.outer(np.arange(16), np.arange(16)).astype(np.uint8) * 8  # JPEG keeps gradients well
    for name in ("a", "b"):
        (tmp_path / "jpg" / name).mkdir(parents=True)
        Image.fromarray(smooth).save(tmp_path / "jpg" / name / "x.JPG", quality=95)
    x, _ = all_of(tmp_path / "jpg", flat_model(["batch", 1, 16, 16]))
    assert np.abs(x[:, 0] - smooth / 255).max() < 4 / 255


def test_without_a_model_the_first_image_sets_channels_and_size(gray_folder):
    folder, pixels = gray_folder
    x, _ = all_of(folder)
    assert x.shape == (8, 1, 8, 8)
    np.testing.assert_allclose(x[:, 0], pixels / 255, atol=1e-7)


def one_line_error(run_cli, *args) -> str:
    result = run_cli(*args)
    assert result.code == 1 and result.err.count("\n") == 1 and result.err.startswith("error: "), result
    return result.err[len("error: "):-1]


def test_each_mistake_is_one_line(gray_folder, tmp_path, run_cli):
    folder, _ = gray_folder
    model = tmp_path / "m.onnx"
    onnx.save(flat_model(["batch", 1, 8, 8]), model)
    (folder / "cat" / "0000.png").write_bytes(b"not a png")
    assert one_line_error(run_cli, "eval", model, "--data", folder).startswith(
        f"{folder / 'cat' / '0000.png'}: not a readable image (cannot identify image file")
    (folder / "cat" / "0000.png").unlink()
    (folder / "cat" / "notes.csv").write_text("a,label\n1,0\n")
    assert one_line_error(run_cli, "eval", model, "--data", folder) == (
        f"{folder / 'cat' / 'notes.csv'}: not an image, in the image folder {folder / 'cat'} (1 such file: "
        "notes.csv); move the other files out (images are .png .jpg .jpeg .bmp .gif .webp .tif .tiff)")
    (folder / "cat" / "notes.csv").unlink()
    (folder / "bird").mkdir()
    assert one_line_error(run_cli, "eval", model, "--data", folder).startswith(
        f"{folder / 'bird'}: no images (.png .jpg .jpeg .bmp .gif .webp .tif .tiff) in it or its subfolders: a "
        "class folder needs its images")
    (tmp_path / "empty" / "x").mkdir(parents=True)
    np.save(tmp_path / "empty" / "x" / "a.npy", np.zeros(3))
    assert one_line_error(run_cli, "eval", model, "--data", tmp_path / "empty") == (
        f"{tmp_path / 'empty'}: no images (.png .jpg .jpeg .bmp .gif .webp .tif .tiff) in it or its subfolders (it "
        f"holds x/a.npy); an image dataset holds a subfolder of images per class ({tmp_path / 'empty'}/cat/1.png), "
        "other data go in a .npz or .csv file")
    (folder / "bird").rmdir()
    (folder / "labels.txt").write_text("cat\ndog\n")
    assert one_line_error(run_cli, "eval", model, "--data", folder) == (
        f"{folder / 'labels.txt'}: a file beside the class folders of {folder} (1 such file: labels.txt); an image "
        "folder holds one subfolder of images per class: move the files out")
    (folder / "labels.txt").unlink()
    assert one_line_error(run_cli, "eval", model, "--data", folder / "dog").startswith(
        f"{folder / 'dog'}: holds images but no class folders; put each class's images in a subfolder")
    (folder / "cat").rename(tmp_path / "cat")
    assert one_line_error(run_cli, "train", model, "--data", folder, "-o", tmp_path / "run") == (
        f"{folder}: one class folder, 'dog'; a classifier trains on 2 or more classes: put each class's images in a "
        "subfolder named after it")
    onnx.save(flat_model(["batch", 64]), model)
    assert one_line_error(run_cli, "eval", model, "--data", tmp_path / "gray") == (
        "model input 'image' [batch, 64] is no image input ([batch, channels, height, width] or [batch, height, "
        "width, channels], with 1, 3 or 4 channels), so a folder or file of images cannot feed it; give this model "
        ".npz or .csv data")


def test_windows_thumbs_db_and_desktop_ini_are_left_out(gray_folder):
    folder, pixels = gray_folder
    for path in (folder / "cat" / "Thumbs.db", folder / "dog" / "desktop.ini", folder / "desktop.ini"):
        path.write_bytes(b"\0explorer")
    x, labels = all_of(folder)
    np.testing.assert_allclose(x[:, 0], pixels / 255, atol=1e-7)
    assert labels.tolist() == [0] * 4 + [1] * 4


@pytest.mark.parametrize("held_out", ["val", "test"])
def test_a_held_out_class_folder_that_train_lacks_is_refused(tmp_path, held_out):
    pixels = RNG.integers(0, 256, (9, 8, 8), dtype=np.uint8)
    names = ["circle", "square", "triangle"]
    write_pngs(tmp_path / "shapes" / "train", pixels[:6], np.arange(6) % 3, names=names)
    write_pngs(tmp_path / "shapes" / held_out, pixels[6:], np.arange(3), names=["Circle", "square", "triangle"])
    with pytest.raises(OnnxkitError) as e:
        load_dataset(tmp_path / "shapes", model=flat_model(["batch", 1, 8, 8]))
    assert str(e.value) == (f"{tmp_path / 'shapes' / held_out / 'Circle'} has no folder in train/ (its classes: "
                            "circle, square, triangle); rename it to one of them, or add train/Circle with its "
                            "training images")


def test_16_bit_gray_pngs_are_scaled_to_8_bits(tmp_path):
    deep = RNG.integers(0, 65536, (4, 8, 8), dtype=np.uint16)
    deep[0, 0, :3] = 0, 257, 65535
    write_pngs(tmp_path / "deep", deep, np.array([0, 1, 0, 1]), names=["a", "b"])
    assert Image.open(tmp_path / "deep" / "a" / "0000.png").mode == "I;16"
    expected = np.rint(deep[[0, 2, 1, 3]] / 257) / 255  # was 1.0 but for 0 (Pillow's convert saturates)
    x, _ = all_of(tmp_path / "deep", flat_model(["batch", 1, 8, 8]))
    np.testing.assert_allclose(x[:, 0], expected, atol=1e-7)
    assert (x[0, 0, 0, :3] * 255).round().tolist() == [0, 1, 255]
    rgb, _ = all_of(tmp_path / "deep", flat_model(["batch", 3, 8, 8]))
    np.testing.assert_allclose(rgb, np.repeat(expected[:, None], 3, axis=1), atol=1e-7)
    Image.fromarray(deep[0].astype(np.float32)).save(tmp_path / "deep" / "a" / "float.tif")
    with pytest.raises(OnnxkitError) as e:
        all_of(tmp_path / "deep")
    assert str(e.value) == (f"{tmp_path / 'deep' / 'a' / 'float.tif'}: 32-bit float pixels (Pillow mode F), which "
                            "have no one scale to 8 bits; save the image with 8 or 16 bits per channel")


def test_an_edited_image_folder_is_noticed_by_eval_and_resume(digits_folder, tmp_path, run_cli):
    folder = tmp_path / "digits_png"
    shutil.copytree(digits_folder, folder)
    model = tmp_path / "digits.onnx"
    onnx.save(zoo.build_model("digits-cnn"), model)
    assert run_cli("train", model, "--data", folder, "--epochs", "1", "-o", tmp_path / "done").code == 0

    def ctrl_c_after_the_first_epoch(record):
        if record["event"] == "epoch":
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(TrainingInterrupted):
        fit(model, folder, tmp_path / "stopped", epochs=2, callback=ctrl_c_after_the_first_epoch)
    shutil.copytree(folder, tmp_path / "copy")  # a copy of the same images is the same data
    assert run_cli("eval", tmp_path / "done/model.onnx", "--data", tmp_path / "copy").out.startswith(
        f"{tmp_path / 'copy'} test split (359 examples)")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(sorted((folder / "3").iterdir())[0])  # one image edited
    result = run_cli("eval", tmp_path / "done/model.onnx")
    assert result.code != 0 and f"{folder} changed since the model was trained on it" in result.err, result
    with pytest.raises(OnnxkitError, match=f"{folder} changed since this run started"):
        fit(resume=tmp_path / "stopped")


def test_fewer_class_folders_than_the_model_scores_is_warned_of(gray_folder, tmp_path, run_cli):
    model = tmp_path / "digits.onnx"
    onnx.save(zoo.build_model("digits-cnn"), model)  # 10 class scores, named 0-9
    result = run_cli("train", model, "--data", gray_folder[0], "--epochs", "1", "-o", tmp_path / "run")
    assert result.code == 0 and ("warning: the data has 2 classes (cat, dog) and the model 10 class scores: "
                                 "scores 2-9 are of no class") in result.err, result
    onnx.save(zoo.build_model("digits-cnn", num_classes=2), model)
    result = run_cli("train", model, "--data", gray_folder[0], "--epochs", "1", "-o", tmp_path / "two")
    assert result.code == 0 and "class scores" not in result.err, result


def test_a_file_name_that_is_not_utf8_is_hashed_by_its_bytes(gray_folder, tmp_path, run_cli):
    folder, _ = gray_folder
    (folder / "cat" / "0000.png").rename(folder / "cat" / os.fsdecode(b"caf\xe9.png"))  # Latin-1, from an old camera
    model = tmp_path / "m.onnx"
    onnx.save(zoo.build_model("digits-cnn", num_classes=2), model)
    result = run_cli("train", model, "--data", folder, "--epochs", "1", "-o", tmp_path / "run")
    assert result.code == 0 and (tmp_path / "run" / "model.onnx").exists(), result  # was a UnicodeEncodeError
    assert run_cli("eval", tmp_path / "run" / "model.onnx").out.startswith(f"{folder} test split"), result


def test_a_class_folder_whose_name_is_not_utf8_is_refused(gray_folder, tmp_path, run_cli):
    folder, _ = gray_folder
    (folder / "dog").rename(folder / os.fsdecode(b"d\xe9g"))
    model = tmp_path / "m.onnx"
    onnx.save(zoo.build_model("digits-cnn", num_classes=2), model)
    assert one_line_error(run_cli, "train", model, "--data", folder, "-o", tmp_path / "run") == (
        f"{folder}/d\\xe9g: a class folder whose name is not UTF-8; its name is the class's label in the model: "
        "rename it in UTF-8")  # was trained, with a label that no .csv of predictions could be written with
    assert not (tmp_path / "run").exists()


def test_predict_names_a_file_whose_name_is_not_utf8_by_its_bytes(gray_folder, tmp_path, run_cli):
    folder, _ = gray_folder
    (folder / "cat" / "0000.png").rename(folder / "cat" / os.fsdecode(b"caf\xe9.png"))
    model = tmp_path / "m.onnx"
    onnx.save(flat_model(["batch", 1, 8, 8]), model)
    for suffix in (".csv", ".json"):  # the .csv was a UnicodeEncodeError traceback
        assert run_cli("predict", model, folder / "cat", "-o", tmp_path / f"p{suffix}").code == 0
    assert (tmp_path / "p.csv").read_text(encoding="utf-8").splitlines()[-1].startswith("caf\\xe9.png,")
    assert json.loads((tmp_path / "p.json").read_text(encoding="utf-8"))["files"][-1] == "caf\\xe9.png"
    assert run_cli("predict", model, folder / "cat" / os.fsdecode(b"caf\xe9.png"), "-o", tmp_path / "one.csv").code == 0
    assert (tmp_path / "one.csv").read_text(encoding="utf-8").splitlines()[1].startswith("caf\\xe9.png,")


def test_links_to_folders_are_followed_and_a_broken_link_or_a_loop_is_refused(gray_folder, tmp_path):
    folder, pixels = gray_folder
    (tmp_path / "more").mkdir()
    shutil.copy(folder / "cat" / "0000.png", tmp_path / "more" / "extra.png")
    (folder / "cat" / "more").symlink_to(tmp_path / "more")  # was left out, where a linked class folder was read
    x, labels = all_of(folder)
    assert labels.tolist() == [0] * 5 + [1] * 4
    np.testing.assert_allclose(x[4, 0], pixels[0] / 255, atol=1e-7)
    (folder / "cat" / "more").unlink()
    for link, to, error in ((folder / "cat" / "gone.png", tmp_path / "gone.png", "a symbolic link to "),
                            (folder / "bird", tmp_path / "gone", "a symbolic link to "),
                            (folder / "dog" / "up", folder, "a folder that holds it (a loop)")):
        link.symlink_to(to)  # the broken links were left out, the loop too
        with pytest.raises(OnnxkitError, match=re.escape(f"{link}: ") + ".*" + re.escape(error)):
            all_of(folder)
        link.unlink()


def test_a_large_image_is_read_without_pillows_warning_and_a_bomb_refused(gray_folder, tmp_path, run_cli, monkeypatch):
    folder, pixels = gray_folder
    model = tmp_path / "m.onnx"
    onnx.save(flat_model(["batch", 1, 8, 8]), model)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40)  # an 8x8 image (64 pixels) is then past it, and not twice
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the DecompressionBombWarning was printed as Python's two lines
        x, _ = all_of(folder)
    np.testing.assert_allclose(x[:, 0], pixels / 255, atol=1e-7)
    result = run_cli("predict", model, folder / "cat" / "0000.png")
    assert result.code == 0 and result.err == "", result
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 30)  # twice 30 is under 64: a decompression bomb
    assert one_line_error(run_cli, "predict", model, folder / "cat" / "0000.png").startswith(
        f"{folder / 'cat' / '0000.png'}: not a readable image (Image size (64 pixels) exceeds limit of 60 pixels")


def test_predict_on_a_folder_that_does_not_exist_says_so(tmp_path, run_cli):
    model = tmp_path / "m.onnx"
    onnx.save(flat_model(["batch", 1, 8, 8]), model)
    assert one_line_error(run_cli, "predict", model, tmp_path / "photoz") == (  # was 'unknown input format'
        f"{tmp_path / 'photoz'}: no such file or folder")


def test_a_folder_too_large_for_memory_is_refused_before_decoding(gray_folder, tmp_path, run_cli, monkeypatch):
    from onnxkit import files

    assert files.available_memory() > 2**20  # read from /proc/meminfo here
    monkeypatch.setattr(files, "available_memory", lambda: 1000)  # 8 images of 1 x 8 x 8 float32: 2,048 bytes
    model = tmp_path / "digits.onnx"
    onnx.save(zoo.build_model("digits-cnn"), model)
    result = run_cli("train", model, "--data", gray_folder[0], "-o", tmp_path / "run")
    assert result.code == 1 and result.err == (
        "error: 8 images of 1 x 8 x 8 float32 take 2.0 KB, more than the 1.0 KB of memory free; resize them "
        "smaller, use fewer, or export the model with a uint8 image input (a quarter of float32's)\n"), result
    assert not (tmp_path / "run").exists()


def test_a_photo_stored_on_its_side_is_read_upright_as_viewers_show_it(tmp_path):
    """A phone saves a portrait photo as landscape pixels plus an EXIF orientation (6: turn 90 degrees clockwise);
    it was read on its side, so a folder of phone photos trained and predicted on images no one saw."""
    from onnxkit.data.images import ImageInput, read_images

    stored = np.zeros((8, 16), np.uint8)
    stored[:, :4] = 255  # the stored left band is the top once turned upright
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "phone.png", exif=exif.tobytes())
    Image.fromarray(np.rot90(stored, -1).copy()).save(tmp_path / "upright.png")
    phone, upright = read_images([tmp_path / "phone.png", tmp_path / "upright.png"], ImageInput(channels=1))
    assert phone.shape == (1, 16, 8)
    np.testing.assert_array_equal(phone, upright)
    assert phone[0, :4].min() == 1 and phone[0, 4:].max() == 0

