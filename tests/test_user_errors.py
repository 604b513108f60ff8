"""Bad inputs whose one `error:` line must say exactly what was wrong and what to do (exact text, exit status 1),
for models onnxruntime refuses for what they are (an op it lacks, an opset or IR version newer than it reads), a
model whose weights file is missing, and data a model cannot be scored on. Each wrote a misleading line before:
a bug in onnxkit, a quantized model to re-quantize, a bare 'No such file or directory'. Nothing may be written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxkit import zoo
from onnxkit.errors import OnnxkitError

ORT = onnxruntime.__version__
OPSET_HINT = ("convert it to opset {most} or lower (onnx.version_converter.convert_version, or export it so), or use a "
              "newer onnxruntime")
OP_HINT = "replace it with standard ONNX ops (onnxkit runs those and onnxruntime's own), or export the model without it"


def _runtime_limits() -> tuple[int, int]:
    """The newest IR version and default-domain opset this onnxruntime loads, read from its refusal of a newer one."""
    import re

    model = zoo.build_model("iris-mlp")
    model.ir_version, model.opset_import[0].version = 10, 99
    try:
        onnxruntime.InferenceSession(model.SerializeToString())
    except Exception as e:  # noqa: BLE001
        opset = int(re.search(r"till opset (\d+)", str(e))[1])
    model.ir_version, model.opset_import[0].version = 99, 17
    try:
        onnxruntime.InferenceSession(model.SerializeToString())
    except Exception as e:  # noqa: BLE001
        ir = int(re.search(r"max supported IR version: (\d+)", str(e))[1])
    return ir, opset


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("user-errors")
    iris = zoo.build_model("iris-mlp")
    onnx.save(iris, root / "iris.onnx")
    newer = zoo.build_model("iris-mlp")
    newer.opset_import[0].version = 40
    onnx.save(newer, root / "opset40.onnx")
    newer = zoo.build_model("iris-mlp")
    newer.ir_version = 99
    onnx.save(newer, root / "ir99.onnx")
    weight = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]),
         helper.make_node("Foo", ["h"], ["logits"], domain="com.example")],
        "custom", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])], [weight])
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)]
    onnx.save(helper.make_model(graph, opset_imports=opsets), root / "custom-op.onnx")
    (root / "no-weights").mkdir()
    onnx.save(iris, root / "no-weights" / "iris.onnx", save_as_external_data=True, location="iris.onnx.data",
              size_threshold=0)
    (root / "no-weights" / "iris.onnx.data").unlink()
    np.save(root / "rows.npy", np.random.default_rng(0).random((6, 4), dtype=np.float32))
    return root


def _messages(root: Path) -> dict[str, str]:
    ir, opset = _runtime_limits()
    return {
        "opset40": (f"error: {root}/opset40.onnx: onnxruntime {ORT} cannot load it (its ai.onnx opset 40 is newer than "
                    f"the {opset} this onnxruntime runs); " + OPSET_HINT.format(most=opset)),
        "ir99": (f"error: {root}/ir99.onnx: onnxruntime {ORT} cannot load it (its IR version 99 is newer than the {ir} "
                 f"this onnxruntime reads); save it with IR version {ir} or lower (onnx.save after setting "
                 "model.ir_version, or export it with an older onnx), or use a newer onnxruntime"),
        "custom-op": (f"error: {root}/custom-op.onnx: onnxruntime {ORT} cannot load it (it uses op Foo of domain "
                      f"com.example, which this onnxruntime does not have); {OP_HINT}"),
    }


@pytest.mark.parametrize("model", ["opset40", "ir99", "custom-op"])
@pytest.mark.parametrize("command", ["train", "quantize", "quantize-auto", "eval", "predict"])
def test_a_model_onnxruntime_refuses_is_named_with_what_to_do(corpus, tmp_path, run_cli, command, model):
    # train said 'OUT/artifacts/training.onnx ... this is a bug in onnxkit's graph' (opset, IR) or 'no gradient; keep
    # the parameters before it frozen' (an op no runtime has); quantize 'the quantized model does not load ... try
    # another --mode'; all quoted onnxruntime's C++ signature for an opset or IR version
    path, out = corpus / f"{model}.onnx", tmp_path / "out"
    out.mkdir()
    args = {
        "train": ["train", path, "--data", "iris", "--epochs", "1", "-o", out / "run"],
        "quantize": ["quantize", path, "-o", out / "q.onnx", "--no-latency"],
        # its scoring of the original said 'model bytes: ...'; static calibration 'failed on it while quantizing'
        "quantize-auto": ["quantize", path, "-o", out / "q.onnx", "--mode", "auto", "--eval", "iris", "--no-latency"],
        "eval": ["eval", path, "--data", "iris"],
        "predict": ["predict", path, "-i", corpus / "rows.npy", "-o", out / "p.json"],
    }[command]
    result = run_cli(*args)
    assert result.code == 1, result.err
    assert result.err.strip().splitlines()[-1] == _messages(corpus)[model]
    assert list(out.iterdir()) == []


def test_runtime_load_names_a_model_newer_than_onnxruntime(corpus):
    from onnxkit import runtime

    with pytest.raises(OnnxkitError) as caught:
        runtime.load(corpus / "opset40.onnx")
    assert f"error: {caught.value}" == _messages(corpus)["opset40"]


def test_training_a_model_without_its_weights_file_names_the_file(corpus, tmp_path, run_cli):
    # was 'error: .../iris.onnx.data: No such file or directory' (fit: FileNotFoundError), where eval and the rest
    # named the model, the file and what to do
    from onnxkit.train import fit

    model = corpus / "no-weights" / "iris.onnx"
    expected = (f"{model}: its weights are kept in a separate file, iris.onnx.data, which is not beside it "
                f"({model}.data is missing); copy that file next to the model")
    result = run_cli("train", model, "--data", "iris", "--epochs", "1", "-o", tmp_path / "run")
    assert (result.code, result.err) == (1, f"error: {expected}\n")
    with pytest.raises(OnnxkitError) as caught:
        fit(model, "iris", tmp_path / "run", epochs=1)
    assert str(caught.value) == expected
    assert not (tmp_path / "run").exists()


def _regression_model(features: int) -> onnx.ModelProto:
    """A one-output model without onnxkit's task metadata, as a third-party regression export is."""
    from onnxkit import nn

    class Regressor(nn.Module):
        def __init__(self) -> None:
            self.fc = nn.Linear(features, 1)

        def forward(self, x):  # type: ignore[no-untyped-def]
            return self.fc(x)

    return nn.build(Regressor(), {"x": nn.Input(["batch", features])}, output_names=["y"])


def test_eval_refuses_class_names_as_a_regression_models_targets(tmp_path, run_cli):
    # train refused them; eval scored the sorted ids of the names as measurements: 'r2 0.7804' on iris
    from onnxkit.evaluate import evaluate

    onnx.save(_regression_model(4), tmp_path / "reg.onnx")
    np.savez(tmp_path / "named.npz", x=np.random.default_rng(0).random((30, 4), dtype=np.float32),
             y=np.array(["cat", "dog", "fox"] * 10))
    cases = (("iris", "'setosa', 'versicolor', 'virginica'"), (tmp_path / "named.npz", "'cat', 'dog', 'fox'"))
    for data, names in cases:
        expected = (f"data {Path(str(data)).stem!r}: the labels are class names ({names}), which the mse loss cannot "
                    "fit as numbers; a classifier gives one score per class (an output of [batch, 3])")
        result = run_cli("eval", tmp_path / "reg.onnx", "--data", data)
        assert (result.code, result.out, result.err) == (1, "", f"error: {expected}\n")
        with pytest.raises(OnnxkitError) as caught:
            evaluate(tmp_path / "reg.onnx", data=str(data))
        assert str(caught.value) == expected


def test_digits_ids_are_numbers_a_regression_model_may_fit(tmp_path, run_cli):
    # digits names its classes '0' to '9': train and eval said they were 'written with thousands separators'
    onnx.save(_regression_model(64), tmp_path / "reg.onnx")
    trained = run_cli("train", tmp_path / "reg.onnx", "--data", "digits", "--epochs", "1", "--quiet",
                      "-o", tmp_path / "run")
    assert trained.code == 0 and trained.err == "", trained.err
    scored = run_cli("eval", tmp_path / "run" / "model.onnx", "--json")
    assert scored.code == 0 and scored.err == "", scored.err


def test_an_infinite_target_in_unscaled_data_is_one_line_without_numpys_warning(tmp_path):
    # standardising the targets before their check printed numpy's 'RuntimeWarning: invalid value encountered in
    # subtract' and the line of code under it, above the error
    import subprocess
    import sys

    onnx.save(_regression_model(4), tmp_path / "reg.onnx")
    rows = "".join(f"{i},{i},{i},{i},{'inf' if i == 5 else i / 10}\n" for i in range(30))  # features 0..29: unscaled
    (tmp_path / "cars.csv").write_text("a,b,c,d,y\n" + rows)
    done = subprocess.run([sys.executable, "-m", "onnxkit", "train", tmp_path / "reg.onnx", "--data",
                           tmp_path / "cars.csv", "--epochs", "1", "-o", tmp_path / "run"],
                          capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stderr) == (1, "error: data 'cars, train split': target array 'labels' holds 1 "
                                                 "infinite value in 1 of 18 rows; fill or drop those rows\n")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("flags", "message"), [
    (["-o", "DATA", "--mode", "static", "--calib", "DATA"], "--output DATA is the --calib data file"),
    (["-o", "OUT", "--report", "DATA", "--eval", "DATA"], "--report DATA is the --eval data file"),
])
def test_quantize_never_writes_over_the_data_it_reads(corpus, tmp_path, run_cli, flags, message):
    # the quantized model (or its JSON report) replaced the calibration or evaluation file, exit status 0
    data, out = tmp_path / "rows.npz", tmp_path / "q.onnx"
    np.savez(data, x=np.random.default_rng(0).random((40, 4), dtype=np.float32), y=np.arange(40) % 3)
    before = data.read_bytes()
    args = [str(data) if a == "DATA" else str(out) if a == "OUT" else a for a in flags]
    result = run_cli("quantize", corpus / "iris.onnx", *args, "--no-latency")
    expected = message.replace("DATA", str(data)) + "; write the result to another file"
    assert (result.code, result.err) == (1, f"error: {expected}\n")
    assert data.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["rows.npz"]


def test_quantize_writes_nothing_into_the_image_folder_it_reads(tmp_path, run_cli):
    # `-o photos/q.onnx --calib photos` put the model and its report among the class folders: the next read of the
    # folder refused them ('a file beside the class folders')
    from PIL import Image

    photos = tmp_path / "photos"
    for label in ("a", "b"):
        (photos / label).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((8, 8), 30 * i + (label == "b") * 100, np.uint8)).save(photos / label / f"{i}.png")
    model = tmp_path / "cnn.onnx"
    onnx.save(zoo.build_model("digits-cnn", num_classes=2), model)
    before = sorted(p.relative_to(photos) for p in photos.rglob("*"))
    for flags, message in ((["-o", photos / "q.onnx", "--calib", photos], f"--output {photos / 'q.onnx'} is inside the "
                            f"--calib data folder {photos}"),
                           (["-o", tmp_path / "q.onnx", "--report", photos / "a" / "r.json", "--eval", photos],
                            f"--report {photos / 'a' / 'r.json'} is inside the --eval data folder {photos}")):
        result = run_cli("quantize", model, "--mode", "static", *flags, "--no-latency")
        assert (result.code, result.err) == (1, f"error: {message}, where the next read of it would take the file "
                                                "for data; write the result elsewhere\n")
    assert sorted(p.relative_to(photos) for p in photos.rglob("*")) == before
    assert run_cli("quantize", model, "--mode", "static", "-o", tmp_path / "q.onnx", "--calib", photos,
                   "--no-latency").code == 0


def test_the_quantize_report_never_replaces_a_file_that_is_no_report(corpus, tmp_path, run_cli):
    # `--report notes.csv` wrote the JSON report over the file, exit status 0; an earlier report is rewritten
    notes = tmp_path / "notes.csv"
    notes.write_text("a,b,label\n1,2,0\n")
    result = run_cli("quantize", corpus / "iris.onnx", "-o", tmp_path / "q.onnx", "--report", notes, "--no-latency")
    assert (result.code, result.err) == (1, f"error: --report {notes} holds a file that is no quantize report, which "
                                            "the report would replace; give the report another name, or delete that "
                                            "file first\n")
    assert notes.read_text() == "a,b,label\n1,2,0\n" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.csv"]
    for _ in range(2):
        assert run_cli("quantize", corpus / "iris.onnx", "-o", tmp_path / "q.onnx", "--no-latency").code == 0
    assert json.loads((tmp_path / "q.report.json").read_text())["output"] == str(tmp_path / "q.onnx")


def test_build_given_an_onnx_file_says_what_build_takes(corpus, tmp_path, run_cli):
    # was "unknown model '/path/iris.onnx'. Run `onnxkit models` to list them", as for a misspelt zoo name
    result = run_cli("build", corpus / "iris.onnx", "-o", tmp_path / "m.onnx")
    assert (result.code, result.err) == (1, f"error: {corpus / 'iris.onnx'}: build makes an .onnx file from a zoo "
                                            "name or a DSL .py file, not from an .onnx file; train, quantize, predict "
                                            "or inspect a model as it is\n")
    assert list(tmp_path.iterdir()) == []


def test_data_that_is_a_device_or_a_broken_link_says_so(tmp_path, run_cli):
    # both said 'no such file or folder', of a path that is there
    (tmp_path / "data").symlink_to(tmp_path / "gone")
    rest = ("; pass a .npz, .csv, .tsv or .parquet file, a folder of class folders of images, or a dataset name "
            "(bbc-news, breast-cancer, diabetes, digits, digits-images, iris, tweets-sentiment, wine)\n")
    model = tmp_path / "iris.onnx"
    onnx.save(zoo.build_model("iris-mlp"), model)
    result = run_cli("eval", model, "--data", "/dev/null")
    assert (result.code, result.err) == (1, "error: /dev/null: not a regular file (a device, FIFO or socket)" + rest)
    result = run_cli("eval", model, "--data", tmp_path / "data")
    assert (result.code, result.err) == (1, f"error: {tmp_path / 'data'}: a symbolic link to {tmp_path / 'gone'}, "
                                            "which does not exist" + rest)


@pytest.mark.parametrize("name,choices,said", [
    ("price", ["lotsize", "bedrooms", "stories"], ""),  # at difflib's 0.5 it suggested stories
    ("prise", ["price", "stories"], " Did you mean: price?"),
    ("Relu", ["ReLU", "PReLU", "ELU"], " Did you mean: ReLU?"),  # a match but for case is the one meant
    ("age", ["Age", "Sex"], " Did you mean: Age?"),
    ("relus", ["ReLU", "PReLU"], " Did you mean: ReLU, PReLU?"),
])
def test_suggestions_ignore_case_and_leave_out_distant_names(name, choices, said):
    from onnxkit.errors import suggest

    assert suggest(name, choices) == said
