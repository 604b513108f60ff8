"""Bad input to `onnxkit train` / `onnxkit eval`: one clear line, exit 1, nothing written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import onnx
import pytest
from conftest import has_ort_training

from onnxkit import zoo
from onnxkit.errors import OnnxkitError
from onnxkit.train import TrainingInterrupted, fit

pytestmark = pytest.mark.training


@pytest.fixture
def cnn(tmp_path):
    path = tmp_path / "cnn.onnx"
    onnx.save(zoo.build_model("digits-cnn"), path)
    return path


def refused(result, message: str, run) -> None:
    assert result.code == 1, result.out
    assert result.err.startswith("error: ") and message in result.err, result.err
    assert len(result.err.strip().splitlines()) == 1
    assert not run.exists()


def test_class_ids_saved_as_floats_are_refused_with_the_cast_that_saves_them(run_cli, tmp_path):
    """An .npz of class ids 0.0, 1.0, 2.0 (np.loadtxt's) for a classifier was told 'use --loss mse for regression
    targets', the wrong advice for a model that names 3 classes."""
    iris = tmp_path / "iris.onnx"
    onnx.save(zoo.build_model("iris-mlp"), iris)
    x = np.random.default_rng(0).normal(size=(30, 4)).astype(np.float32)
    np.savez(tmp_path / "floats.npz", x=x, labels=(np.arange(30) % 3).astype(np.float64))
    run = tmp_path / "run"
    result = run_cli("train", iris, "--data", tmp_path / "floats.npz", "-o", run)
    assert (result.code, result.err) == (1, "error: cross-entropy needs integer class labels but the data's are "
                                            "float64 (whole numbers): class ids are to be saved as integers, "
                                            "labels.astype(np.int64); for regression targets use --loss mse\n")
    assert not run.exists()


def test_cuda_without_the_gpu_package_is_a_clear_error(run_cli, cnn, tmp_path):
    run = tmp_path / "run"
    result = run_cli("train", cnn, "--data", "digits-images", "--device", "cuda", "-o", run)
    refused(result, "cannot train on cuda: ", run)
    assert "--device cpu" in result.err
    refused(run_cli("train", cnn, "--data", "digits-images", "--device", "cuda:1", "-o", run), "cuda:1", run)
    for malformed in ("gpu", "cuda:x", "cuda:"):  # the form is checked before any GPU is looked for
        result = run_cli("train", cnn, "--data", "digits-images", "--device", malformed, "-o", run)
        assert result.code == 2 and not run.exists()  # a malformed command line
        assert result.err == (f"error: --device must be auto, cpu, cuda or cuda:N (N a GPU number), got "
                              f"'{malformed}' (see onnxkit train -h)\n")
    done = fit(cnn, "digits-images", run, device="auto", epochs=1, evaluate_test=False)  # auto falls back to CPU
    assert json.loads((done.run_dir / "run.json").read_text())["device"] == "cpu"


def test_too_many_threads_are_refused_before_the_data_is_read(run_cli, cnn, tmp_path, monkeypatch):
    # --threads 100 passed the command line and was refused by the session, after the data was read and tokenized
    # and the training graphs built (6.6 s for the pretrained MiniLM on bbc-news, below the 'training with ...' line),
    # in exit status 1 where --threads 0 was a malformed command line (2)
    from onnxkit.runtime.session import THREADS_PER_CORE, most_threads

    def no_data(*args, **kwargs):
        raise AssertionError("the data was read")

    monkeypatch.setattr(sys.modules["onnxkit.train.fit"], "load_dataset", no_data)
    most, run = most_threads(), tmp_path / "run"
    cores = len(os.sched_getaffinity(0))
    assert most == THREADS_PER_CORE * cores == 4 * cores
    result = run_cli("train", cnn, "digits-images", "--threads", most + 1, "-o", run)
    assert (result.code, result.out, result.err) == (
        2, "", f"error: --threads must be at most {4 * cores} (4 per CPU core of the {cores} this process may use), "
               f"got {most + 1} (see onnxkit train -h)\n")
    with pytest.raises(OnnxkitError, match=rf"^threads must be at most {4 * cores} \(4 per CPU core"):
        fit(cnn, "digits-images", run, threads=most + 1)
    assert not run.exists()
    monkeypatch.undo()
    assert fit(cnn, "digits-images", run, threads=most, epochs=1).model_path.is_file()  # the limit itself trains


def test_data_that_does_not_fit_the_model(run_cli, cnn, tmp_path):
    run = tmp_path / "run"
    refused(run_cli("train", cnn, "--data", "digits", "-o", run),
            "data array 'x' has shape [1079, 64] but model input 'image' expects [batch, 1, 8, 8]", run)
    refused(run_cli("train", cnn, "--data", "digit", "-o", run), "unknown dataset 'digit'. Did you mean: digits", run)
    refused(run_cli("train", cnn, "--data", "iris", "--loss", "mse", "-o", run),
            "data array 'x' has shape [90, 4] but model input 'image'", run)
    iris = tmp_path / "iris.onnx"
    onnx.save(zoo.build_model("iris-mlp"), iris)
    refused(run_cli("train", iris, "--data", "iris", "--loss", "mse", "-o", run),
            "labels of shape [90] do not match the output's shape [batch, 3] for the mse loss", run)
    refused(run_cli("train", iris, "--data", "iris", "--model-output", "probs", "-o", run),
            "model has no output 'probs'", run)
    rows = ["a,b,c,d,label", *(f"{k % 7},1,2,3,{k % 3}" for k in range(30)), "1,1,2,3,1.5"]
    (tmp_path / "stray.csv").write_text("\n".join(rows) + "\n")  # class ids and one typo: read as regression targets
    refused(run_cli("train", iris, "--data", tmp_path / "stray.csv", "-o", run),
            "cross-entropy needs integer class labels but one is 1.5", run)
    untold = zoo.build_model("iris-mlp")
    del untold.metadata_props[:]  # no task: float labels pick mse
    onnx.save(untold, tmp_path / "untold.onnx")
    refused(run_cli("train", tmp_path / "untold.onnx", "--data", tmp_path / "stray.csv", "-o", run),
            "for the mse loss; give one target per output value; if they are class ids, each must be a whole "
            "number, but one is 1.5", run)


def test_a_bad_model_file_is_named_as_given_as_every_command_names_it(run_cli, tmp_path, monkeypatch):
    # train named it by its absolute path (error: /home/me/work/digit.onnx: no such file; ...) where eval, predict and
    # quantize said digit.onnx
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.onnx").write_text("not a model\n")
    for name, what in (("digit.onnx", "no such file; pass the path of an .onnx model"),
                       ("notes.onnx", "a text file, not an ONNX model; pass the .onnx file itself")):
        line = f"error: {name}: {what}\n"
        assert run_cli("train", name, "digits-images", "-o", "run").err == line
        assert run_cli("eval", name, "digits-images").err == line  # as the other commands say it
        with pytest.raises(OnnxkitError, match=f"^{name}: "):
            fit(name, "digits-images", "run")
    assert not (tmp_path / "run").exists()


def test_bad_files_and_run_folders(run_cli, cnn, tmp_path):
    run = tmp_path / "run"
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x08\x07garbage")
    refused(run_cli("train", broken, "--data", "digits-images", "-o", run), "not a readable ONNX model", run)
    refused(run_cli("train", tmp_path / "none.onnx", "--data", "iris", "-o", run), "no such file", run)
    refused(run_cli("train", tmp_path / "digits-cnn", "--data", "digits-images", "-o", run),  # a zoo name, not built
            "digits-cnn is a zoo model, not a file: build it first (onnxkit build digits-cnn -o digits-cnn.onnx)", run)
    refused(run_cli("train", "--resume", tmp_path), "is not a training run (no run.json)", run)
    early = tmp_path / "early"  # killed after its artifacts, before run.json: was told to pass the folder given to -o
    (early / "artifacts").mkdir(parents=True)
    refused(run_cli("train", "--resume", early), f"{early} holds a run stopped before it began (no run.json): "
                                                 f"start it again as before, with --output {early}", run)
    for folder, message in ((early, f"start it again as before, with out_dir={early}"),  # fit's own names: it
                            (tmp_path, "resume the folder a run was written to (its out_dir)")):  # said -o
        with pytest.raises(OnnxkitError) as e:
            fit(resume=folder)
        assert str(e.value).endswith(message)
    for args, message in (((cnn, "-o", run), "give DATA, with MODEL.onnx before it or not (a model is then built for "
                                             "the data), or --resume RUN_DIR"),
                          ((cnn, "iris", "--data", "wine", "-o", run), "give the data once (one file or folder, "
                                                                       "as DATA or --data), not 2: wine, iris"),
                          ((cnn, "a.png", "b.png", "c.png", "d.png", "-o", run),  # photos/*.png
                           "not 4: a.png, b.png, c.png, ...; a shell pattern (*.png) passes each file: give their "
                           "folder"),
                          ((cnn, "--data", "iris", "--resume", tmp_path), "give only --resume RUN_DIR")):
        malformed = run_cli("train", *args)
        assert malformed.code == 2 and malformed.err.startswith("error: ") and message in malformed.err
        assert malformed.err.count("\n") == 1 and "(see onnxkit train -h)" in malformed.err and not run.exists()
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "model.onnx").write_bytes(b"someone's model")
    refused(run_cli("train", cnn, "--data", "iris", "-o", stray), "holds a model.onnx that no training run wrote",
            stray / "run.json")
    assert (stray / "model.onnx").read_bytes() == b"someone's model"
    zero = run_cli("train", cnn, "--data", "digits-images", "--epochs", "0", "-o", run)
    assert zero.code == 2 and zero.err == "error: --epochs must be at least 1, got 0 (see onnxkit train -h)\n"

    done = run_cli("train", cnn, "--data", "digits-images", "--epochs", "1", "--quiet", "-o", run)
    assert done.code == 0, done.err
    model_bytes = (run / "model.onnx").read_bytes()
    again = run_cli("train", cnn, "--data", "digits-images", "-o", run)
    # was 'continue it with --resume', which then said the run had already finished
    assert again.code == 1
    assert again.err == f"error: {run} already holds a finished training run; choose another --output\n"
    assert (run / "model.onnx").read_bytes() == model_bytes  # the good result is untouched


def test_resume_needs_the_same_starting_model(tmp_path, cnn):
    def ctrl_c_after_the_first_epoch(record):
        if record["event"] == "epoch":
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(TrainingInterrupted):
        fit(cnn, "digits-images", tmp_path / "run", epochs=2, callback=ctrl_c_after_the_first_epoch)
    onnx.save(zoo.build_model("digits-cnn", seed=1), cnn)
    with pytest.raises(OnnxkitError, match="changed since this run started"):
        fit(resume=tmp_path / "run")


def test_resume_needs_the_same_data_file_and_says_where_the_model_was(tmp_path):
    from onnxkit.data import load_dataset

    iris = load_dataset("iris")
    rows = [iris.split(s) for s in ("train", "validation", "test")]
    x, y = np.concatenate([r.inputs["x"] for r in rows]), np.concatenate([r.labels for r in rows])
    np.savez(tmp_path / "flowers.npz", x=x, y=y)
    model = tmp_path / "iris.onnx"
    onnx.save(zoo.build_model("iris-mlp"), model)

    def ctrl_c(record):
        if record["event"] == "epoch":
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(TrainingInterrupted):
        fit(model, tmp_path / "flowers.npz", tmp_path / "run", epochs=3, callback=ctrl_c)
    np.savez(tmp_path / "flowers.npz", x=x[:100], y=y[:100])  # edited between the runs: the splits would shift
    with pytest.raises(OnnxkitError, match=r"flowers.npz changed since this run started; resume needs the data"):
        fit(resume=tmp_path / "run")
    np.savez(tmp_path / "flowers.npz", x=x, y=y)
    model.rename(tmp_path / "moved.onnx")
    with pytest.raises(OnnxkitError, match=r"iris.onnx: the model this run started from is gone; put it back"):
        fit(resume=tmp_path / "run")
    (tmp_path / "moved.onnx").rename(model)
    assert fit(resume=tmp_path / "run").metrics["epochs"] == 3  # as it was: it resumes


def test_eval_needs_data_for_a_model_that_was_not_trained_here(run_cli, cnn):
    result = run_cli("eval", cnn)
    assert result.code == 1 and "does not say what it was trained on; give --data" in result.err
    misspelt = run_cli("eval", cnn, "--data", "digits-images", "--split", "tst")  # a malformed command line: 2
    assert misspelt.code == 2 and "--split 'tst' is not one of 'train', 'validation', 'test'" in misspelt.err
    assert run_cli("build", "iris-mlp", "--opset", "99", "-o", cnn.parent / "x.onnx").code == 2  # 13..21
    assert run_cli("predict", cnn).code == 2  # no input


@pytest.mark.skipif(not has_ort_training(), reason="needs onnxruntime-training (make test-ort runs it)")
def test_training_backend_does_not_import_torch_or_the_training_package_init():
    # `import onnxruntime` itself probes onnxruntime.training (and imports torch when installed);
    # what the backend adds on top must not include torch or the package's torch-importing parts
    code = (
        "import sys, onnxruntime\n"
        "before = set(sys.modules)\n"
        "import onnxkit.train.backends.ort_training\n"
        "new = set(sys.modules) - before\n"
        "bad = [m for m in new if m.startswith(('torch', 'onnxruntime.tools', 'onnxruntime.training.ortmodule',"
        " 'onnxruntime.training.optim')) or m == 'onnxruntime.training.artifacts']\n"
        "assert not bad, bad\n"
        "assert not hasattr(sys.modules['onnxruntime.training'], '__file__')  # our empty package, not its __init__\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.skipif(not has_ort_training(), reason="needs onnxruntime-training (make test-ort runs it)")
def test_ort_training_refuses_the_optimizers_it_cannot_run_by_name(run_cli, cnn, tmp_path):
    # each said 'not <optimizer> with these options', also for a plain --optimizer adam or rmsprop that had none
    for options, what in ((["--optimizer", "rmsprop"], "not rmsprop;"),
                          (["--optimizer", "adam"], "not adam (adamw with --weight-decay 0 is adam);"),
                          (["--optimizer", "sgd", "--momentum", "0.9"], "not sgd with momentum;"),
                          (["--optimizer", "adamw", "--amsgrad"], "not adamw with amsgrad;")):
        result = run_cli("train", cnn, "--data", "digits-images", "--backend", "ort-training", *options,
                         "-o", tmp_path / "run")
        refused(result, "the ort-training backend runs only adamw without amsgrad and sgd without momentum, " + what,
                tmp_path / "run")
        assert "--backend onnx" in result.err and "these options" not in result.err



def head_over(*middle: onnx.NodeProto, width: int) -> onnx.ModelProto:
    """x [batch, 64] @ w = h, then `middle` (h to m [batch, width]), then m @ w2 = logits [batch, 10]."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    constants = {"minus_one": [-1], "far": [-(2**63)], "one": [1], "end": [2**62], "rows": [-1, 8, 8], "flat": [-1, 8]}
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), *middle, helper.make_node("MatMul", ["m", "w2"], ["logits"])],
        "head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        [numpy_helper.from_array((rng.normal(size=(64, 64)) * 0.1).astype(np.float32), "w"),
         numpy_helper.from_array((rng.normal(size=(width, 10)) * 0.1).astype(np.float32), "w2"),
         *(numpy_helper.from_array(np.array(v, np.int64), n) for n, v in constants.items())],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def flipped(backwards: bool) -> onnx.ModelProto:
    """The hidden features reversed as torch.flip exports it (a Slice with step -1), or h[:, 1:]."""
    from onnx import helper

    if backwards:
        return head_over(helper.make_node("Slice", ["h", "minus_one", "far", "one", "minus_one"], ["m"]), width=64)
    return head_over(helper.make_node("Slice", ["h", "one", "end", "one", "one"], ["m"]), width=63)


def log_sum_exp(keepdims: int) -> onnx.ModelProto:
    """h as [batch, 8, 8], its log-sum-exp over the last axis (kept as a 1, then flattened, or not)."""
    from onnx import helper

    summed = "kept" if keepdims else "m"
    nodes = [helper.make_node("Reshape", ["h", "rows"], ["h3"]),
             helper.make_node("ReduceLogSumExp", ["h3"], [summed], axes=[2], keepdims=keepdims)]
    if keepdims:
        nodes.append(helper.make_node("Reshape", ["kept", "flat"], ["m"]))
    return head_over(*nodes, width=8)


def test_ort_training_is_told_which_forms_of_an_op_its_gradients_get_wrong():
    from onnxkit.train.backends._ort_legalize import unsupported_ops

    assert unsupported_ops(flipped(True), ["w"], "logits") == [("Slice with a negative step", "#1 (output 'm')")]
    assert unsupported_ops(log_sum_exp(0), ["w"], "logits") == [("ReduceLogSumExp without keepdims", "#2 (output 'm')")]
    assert unsupported_ops(flipped(False), ["w"], "logits") == unsupported_ops(log_sum_exp(1), ["w"], "logits") == []


@pytest.mark.skipif(not has_ort_training(), reason="needs onnxruntime-training (make test-ort runs it)")
def test_ort_training_refuses_them_before_training(run_cli, tmp_path):
    # a negative-step Slice failed its first step with a C++ traceback (SliceGrad: narrowing_error);
    # the other forms train on ORT-training, and every one of them on the onnx backend
    for name, model, trains in (("flip", flipped(True), False), ("lse", log_sum_exp(0), False),
                                ("slice", flipped(False), True), ("lse-kept", log_sum_exp(1), True)):
        path = tmp_path / f"{name}.onnx"
        onnx.save(model, path)
        result = run_cli("train", path, "--data", "digits", "--epochs", "1", "--backend", "ort-training",
                         "-o", tmp_path / name)
        if trains:
            assert result.code == 0, result.err
        else:
            refused(result, "has no gradient in the ort-training backend", tmp_path / name)
            assert "backend=onnx" in result.err or "--backend onnx" in result.err
    for name, model in (("flip-onnx", flipped(True)), ("lse-onnx", log_sum_exp(0))):
        fit(model, "digits", tmp_path / name, epochs=1, quiet=True, backend="onnx")


def test_a_model_that_fails_in_its_first_step_is_one_line_and_leaves_no_run(run_cli, tmp_path):
    # the batch baked into a Reshape (as exports with a traced batch size have it): runs at 4 rows only
    from onnx import helper

    model = tmp_path / "fixed.onnx"
    graph = head_over(helper.make_node("Reshape", ["h", "four_rows"], ["m"]), width=64).graph
    graph.initializer.append(onnx.numpy_helper.from_array(np.array([4, 64], np.int64), "four_rows"))
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), model)
    result = run_cli("train", model, "--data", "digits", "--epochs", "1", "-o", tmp_path / "run")
    assert result.code == 1 and not (tmp_path / "run").exists()
    error = result.err.strip().splitlines()[-1]  # after the lines that announce the run
    assert error.startswith("error: the training step failed at onnxruntime: Got invalid dimensions for input: "
                            "labels for the following indices index: 0 Got: 32 Expected: 4"), result.err
    assert "onnxkit eval MODEL --data DATA" in error and "a batch size fixed inside the graph" in error
    # ids past the end of an embedding table (pixel intensities 0..16 looked up in 10 rows)
    looked_up = tmp_path / "lookup.onnx"
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "sixteen"], ["scaled"]),
         helper.make_node("Cast", ["scaled"], ["ids"], to=onnx.TensorProto.INT64),
         helper.make_node("Gather", ["table", "ids"], ["rows"]),
         helper.make_node("ReduceMean", ["rows"], ["pooled"], axes=[1], keepdims=0),
         helper.make_node("MatMul", ["pooled", "w"], ["logits"])],
        "lookup", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["batch", 10])],
        [onnx.numpy_helper.from_array(np.array(16.0, np.float32), "sixteen"),
         onnx.numpy_helper.from_array(np.ones((10, 8), np.float32), "table"),
         onnx.numpy_helper.from_array(np.ones((8, 10), np.float32), "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), looked_up)
    result = run_cli("train", looked_up, "--data", "digits", "--epochs", "1", "-o", tmp_path / "run")
    assert result.code == 1 and not (tmp_path / "run").exists()
    error = result.err.strip().splitlines()[-1]
    assert error.startswith("error: the training step failed at the model's Gather node: indices element out of "
                            "data bounds, idx=16 must be within the inclusive range [-10,9]; check"), error
    assert "/onnxruntime_src" not in error
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("kept")
    assert run_cli("train", model, "--data", "digits", "--epochs", "1", "-o", mine).code == 1
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]  # the run's files went, the user's stayed


@pytest.mark.parametrize("mode,kind", [("dynamic", "a quantized model (DynamicQuantizeLinear, MatMulInteger)"),
                                       ("static", "a quantized model (DequantizeLinear, QuantizeLinear)"),
                                       ("int4", "a quantized model (MatMulNBits)"), ("fp16", "a float16 model")])
def test_a_quantized_model_is_refused_with_what_to_train_instead(run_cli, tmp_path, mode, kind):
    from onnxkit.quantize import quantize

    if mode == "int4":
        pytest.importorskip("onnxruntime.quantization.matmul_nbits_quantizer", reason="no int4 quantizer in ORT 1.19")
    calib = {"x": np.random.default_rng(0).random((64, 64), dtype=np.float32)} if mode == "static" else None
    model = quantize(zoo.build_model("digits-mlp"), mode=mode, calib=calib, measure_latency=False).model
    path = tmp_path / f"{mode}.onnx"
    onnx.save(model, path)
    result = run_cli("train", path, "--data", "digits", "-o", tmp_path / "run")
    refused(result, f"{path} is {kind}, whose weights training cannot update; train the float32 model",
            tmp_path / "run")


def test_a_float64_model_is_refused_with_how_to_export_it(run_cli, tmp_path):
    model = zoo.build_model("digits-mlp")
    for t in model.graph.initializer:
        t.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(t).astype(np.float64), t.name))
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.elem_type = onnx.TensorProto.DOUBLE
    path = tmp_path / "f64.onnx"
    onnx.save(model, path)
    result = run_cli("train", path, "--data", "digits", "-o", tmp_path / "run")
    refused(result, f"{path} is a float64 model; training runs in float32: export it in float32", tmp_path / "run")


def test_the_model_of_an_unfinished_run_says_how_to_finish_it(run_cli, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text('{"status": "interrupted", "config": {}}')
    for command in (("eval", run / "model.onnx"), ("predict", run / "model.onnx", "-i", tmp_path / "x.npy"),
                    ("quantize", run / "model.onnx", "-o", tmp_path / "q.onnx")):
        result = run_cli(*command)
        assert result.code == 1 and result.err.count("\n") == 1, result.err
        assert f"has not finished; continue it with onnxkit train --resume {run}" in result.err, result.err
    other = run_cli("eval", tmp_path / "model.onnx")
    assert other.code == 1 and "no such file; pass the path of an .onnx model" in other.err
    for command in (("eval", run), ("predict", run, "-i", tmp_path / "x.npy"),  # the folder itself
                    ("quantize", run, "-o", tmp_path / "q.onnx"),
                    ("train", run, "--data", "iris", "-o", tmp_path / "b")):
        result = run_cli(*command)
        assert result.code == 1 and f"has not finished; continue it with onnxkit train --resume {run}" in result.err


def test_a_run_folder_given_as_the_model_names_the_model_in_it(run_cli, tmp_path):
    """`onnxkit eval runs/digits` was click's 'Invalid value for MODEL: ... is a directory' (exit 2), serve's
    'a folder, not a model'; every command now points at the run's model.onnx and writes nothing."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text('{"status": "completed"}')
    onnx.save(zoo.build_model("iris-mlp"), run / "model.onnx")
    message = f"error: {run}: a folder, not a model; pass the model in it: {run / 'model.onnx'}\n"
    for command in (("eval", run), ("predict", run, "-i", tmp_path / "x.npy"),
                    ("quantize", run, "-o", tmp_path / "q.onnx"),
                    ("train", run, "--data", "iris", "-o", tmp_path / "b"), ("serve", run, "--port", "0")):
        result = run_cli(*command)
        assert (result.code, result.err) == (1, message), command
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    alone = run_cli("train", run)  # no data: not called data itself, as a folder of images would be
    assert alone.code == 2 and "give DATA, with MODEL.onnx before it or not" in alone.err
    mistyped = run_cli("train", tmp_path / "rnu")  # a path that is not there: said so (it got the line above alone)
    assert mistyped.code == 2 and f"error: {tmp_path / 'rnu'}: no such file, folder or dataset; give DATA" in \
        mistyped.err, mistyped.err


def test_a_scikit_learn_linear_classifier_is_refused_as_what_it_is(run_cli, tmp_path):
    """skl2onnx's LogisticRegression keeps its weights in LinearClassifier's attributes: train said
    "output 'label' is not float32 ...; pick a float one with --model-output NAME", and following
    that advice gave 'nothing to train: ... loosen --freeze / --train-only'."""
    from conftest import sklearn_style_classifier

    onnx.save(sklearn_style_classifier(["a", "b", "c"]), tmp_path / "skl.onnx")
    rows = "".join(f"{i % 3},{i % 2},{'abc'[i % 3]}\n" for i in range(30))
    (tmp_path / "rows.csv").write_text("x1,x2,label\n" + rows)
    run = tmp_path / "run"
    for extra in ([], ["--model-output", "output_probability"]):
        result = run_cli("train", tmp_path / "skl.onnx", "--data", tmp_path / "rows.csv", "-o", run, *extra)
        refused(result, "ai.onnx.ml.LinearClassifier, ai.onnx.ml.Normalizer", run)
        assert "weights in attributes" in result.err and "scikit-learn" in result.err


def test_a_float_tensor_before_ai_onnx_ml_ops_is_no_reason_to_try_training(run_cli, tmp_path):
    """A TF-IDF pipeline multiplies by its idf weights, a k-nearest-neighbours model keeps its training rows, in
    float tensors before ai.onnx.ml ops: train said "op LinearClassifier has no gradient ...; keep the parameters
    before it frozen", and freezing them left nothing to train. Now the scikit-learn refusal, as for a plain one."""
    from conftest import sklearn_style_classifier
    from onnx import helper, numpy_helper

    model = sklearn_style_classifier([0, 1, 2])
    model.graph.node[0].input[0] = "weighted"
    model.graph.node.insert(0, helper.make_node("Mul", ["X", "idf"], ["weighted"]))
    model.graph.initializer.append(numpy_helper.from_array(np.array([1.5, 0.5], np.float32), "idf"))
    onnx.checker.check_model(model)
    onnx.save(model, tmp_path / "idf.onnx")
    (tmp_path / "rows.csv").write_text("x1,x2,label\n" + "".join(f"{i % 3},{i % 2},{i % 3}\n" for i in range(30)))
    run = tmp_path / "run"
    result = run_cli("train", tmp_path / "idf.onnx", "--data", tmp_path / "rows.csv", "-o", run)
    refused(result, "ai.onnx.ml.LinearClassifier, ai.onnx.ml.Normalizer", run)
    assert "weights in attributes" in result.err and "no gradient" in result.err and "frozen" not in result.err


def test_a_label_error_on_a_csv_without_a_label_column_names_the_column_taken(run_cli, tmp_path):
    # a CSV headed a,b,c: 'c' was read as the labels, and the error spoke of an mse loss the user never asked for
    rows = np.random.default_rng(0).random((120, 3))
    (tmp_path / "nolabel.csv").write_text("a,b,c\n" + "".join(f"{a},{b},{c}\n" for a, b, c in rows))
    model = tmp_path / "iris.onnx"
    assert run_cli("build", "iris-mlp", "-o", model).code == 0
    result = run_cli("train", model, "--data", tmp_path / "nolabel.csv", "-o", tmp_path / "run")
    assert result.code == 1 and result.err.count("\n") == 1
    assert result.err.rstrip().endswith("(the labels: the last column, 'c', as no column is headed label / labels / "
                                        "target / y / class; --label COLUMN names another)")


def test_a_shape_error_on_a_csv_without_a_header_says_the_last_column_was_taken_as_the_labels(run_cli, tmp_path):
    # np.savetxt's file of 64 features: "data array 'x' has shape [120, 63] ..." without saying why 63
    np.savetxt(tmp_path / "nolabel.csv", np.random.default_rng(0).random((200, 64)), delimiter=",")
    model = tmp_path / "mlp.onnx"
    assert run_cli("build", "digits-mlp", "-o", model).code == 0
    result = run_cli("train", model, "--data", tmp_path / "nolabel.csv", "-o", tmp_path / "run")
    assert result.code == 1 and result.err.count("\n") == 1
    assert result.err.rstrip().endswith("(the labels: the last column, as the file has no header naming a label "
                                        "column)"), result.err


def test_a_rule_refusing_a_node_says_which_flags_train_the_rest(run_cli, tmp_path):
    # the ConvTranspose rule refuses output_shape: the error named the node and why, but not how to train past it
    # as a missing rule's does
    rng = np.random.default_rng(0)
    init = onnx.numpy_helper.from_array
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Reshape", ["x", "square"], ["image"]),
         onnx.helper.make_node("ConvTranspose", ["image", "conv.weight"], ["c"], name="up", output_shape=[10, 10]),
         onnx.helper.make_node("Flatten", ["c"], ["flat"]),
         onnx.helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"])],
        "dilated", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 64])],
        [onnx.helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["batch", 10])],
        [init(np.array([-1, 1, 8, 8], np.int64), "square"),
         init((rng.normal(size=(1, 2, 3, 3)) * 0.3).astype(np.float32), "conv.weight"),
         init((rng.normal(size=(200, 10)) * 0.1).astype(np.float32), "fc.weight"),
         init(np.zeros(10, np.float32), "fc.bias")],
        value_info=[onnx.helper.make_tensor_value_info("c", onnx.TensorProto.FLOAT, ["batch", 2, 10, 10])])
    path, run = tmp_path / "up.onnx", tmp_path / "run"
    onnx.save(onnx.helper.make_model(graph, ir_version=10, opset_imports=[onnx.helper.make_opsetid("", 17)]), path)
    result = run_cli("train", path, "--data", "digits", "-o", run, "--epochs", "1", "--backend", "onnx")
    assert result.code == 1 and not run.exists()
    assert result.err.splitlines()[-1].startswith(
        "error: cannot differentiate ConvTranspose (node 'up'): ConvTranspose with output_shape has no gradient rule"
    ), result.err
    assert result.err.endswith("; keep the parameters before it frozen (--freeze / --train-only)\n")
    assert fit(path, "digits", run, freeze="conv.*", epochs=1, backend="onnx").metrics["test"]["accuracy"] > 0.3


def test_resuming_a_run_whose_backend_is_missing_says_where_to_resume_it(run_cli, tmp_path):
    # it ended '..., or use the default backend (--backend onnx)', which --resume then refused: a run keeps its backend
    if has_ort_training():
        pytest.skip("needs an environment without onnxruntime-training")
    cnn = tmp_path / "cnn.onnx"
    assert run_cli("build", "digits-mlp", "-o", cnn).code == 0
    run = tmp_path / "run"
    assert run_cli("train", cnn, "digits", "--steps", "3", "--quiet", "-o", run).code == 0
    info = json.loads((run / "run.json").read_text())
    info["config"]["backend"], info["status"] = "ort-training", "interrupted"
    (run / "run.json").write_text(json.dumps(info))
    result = run_cli("train", "--resume", run)
    assert result.code == 1 and result.err.startswith(f"error: the run in {run} trained on the ort-training backend, "
                                                      "which this environment cannot run (the ort-training backend "
                                                      "needs onnxruntime-training 1.19.2")
    assert result.err.endswith("resume it where that backend is installed (make venv-ort: .venv-ort/bin/onnxkit "
                               "train --resume ...)\n") and "default backend" not in result.err


def test_an_unknown_monitor_names_the_one_meant(tmp_path):
    onnx.save(zoo.build_model("iris-mlp"), tmp_path / "iris.onnx")
    with pytest.raises(OnnxkitError, match=r"^unknown metric to monitor 'val_acc'; choose from val_loss, val_accuracy, "
                                           r"val_macro_f1, train_loss\. Did you mean: val_accuracy"):
        fit(tmp_path / "iris.onnx", "iris", tmp_path / "run", monitor="val_acc")
    assert not (tmp_path / "run").exists()


def test_token_ids_longer_than_the_models_positions_are_the_datas_fault_not_the_files(run_cli, tmp_path):
    # sequences of 12 for a transformer of 8 positions: 'tt.onnx: onnxruntime cannot load it (... Incompatible
    # dimensions); check that the file is a complete .onnx model and that its IR version and opset suit this
    # onnxruntime', where eval and predict of the same data named the shapes
    model = tmp_path / "tt.onnx"
    onnx.save(zoo.build_model("text-transformer", vocab_size=50, max_len=8, dim=8, heads=2, ff_dim=8, num_layers=1),
              model)
    rng = np.random.default_rng(0)
    for length in (12, 8):
        np.savez(tmp_path / f"ids{length}.npz", input_ids=rng.integers(0, 50, (40, length)),
                 attention_mask=np.ones((40, length), np.int64), labels=np.arange(40) % 2)
    run = tmp_path / "run"
    result = run_cli("train", model, "--data", tmp_path / "ids12.npz", "--epochs", "1", "--quiet", "-o", run)
    refused(result, f"error: {model} cannot take the data's shapes (input_ids [batch, 12], attention_mask "
                    "[batch, 12]): Node (Add) Op (Add) [ShapeInferenceError] Incompatible dimensions; give data of the "
                    "sizes the model takes (`onnxkit eval MODEL --data DATA` names where it fails)", run)
    assert run_cli("train", model, "--data", tmp_path / "ids8.npz", "--epochs", "1", "-o", run).code == 0


def test_a_binary_models_labels_of_another_width_are_one_line_before_training(run_cli, tmp_path):
    # three 0/1 labels a row for a one-logit model failed at the first step with onnxruntime's 'Got invalid
    # dimensions for input: labels ... Got: 3 Expected: 1' and a hint about batch sizes fixed in the graph
    model = tmp_path / "binary.onnx"
    onnx.save(zoo.build_model("binary-classifier", features=4), model)
    rng = np.random.default_rng(0)
    x = rng.random((60, 4), dtype=np.float32)
    np.savez(tmp_path / "wide.npz", x=x, labels=rng.integers(0, 2, (60, 3)))
    np.savez(tmp_path / "column.npz", x=x, labels=rng.integers(0, 2, (60, 1)))
    run = tmp_path / "run"
    refused(run_cli("train", model, "--data", tmp_path / "wide.npz", "--epochs", "1", "-o", run),
            "error: data 'wide, train split': labels have shape [36, 3] but output 'logits' has shape [batch, 1]; "
            "give one 0/1 label per output value", run)
    assert run_cli("train", model, "--data", tmp_path / "column.npz", "--epochs", "1", "-o", run).code == 0
