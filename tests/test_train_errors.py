"""Bad input to `onnxkit train` / `onnxkit eval`: one clear line, exit 1, nothing written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

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


def test_cuda_without_the_gpu_package_is_a_clear_error(run_cli, cnn, tmp_path):
    run = tmp_path / "run"
    result = run_cli("train", cnn, "--data", "digits-images", "--device", "cuda", "-o", run)
    refused(result, "cannot train on cuda: ", run)
    assert "--device cpu" in result.err
    assert "--device cpu" in result.err
    refused(run_cli("train", cnn, "--data", "digits-images", "--device", "cuda:1", "-o", run), "cuda:1", run)
    refused(run_cli("train", cnn, "--data", "digits-images", "--device", "gpu", "-o", run),
            "unknown device 'gpu'; use", run)
    done = fit(cnn, "digits-images", run, device="auto", epochs=1, evaluate_test=False)  # auto falls back to CPU
    assert json.loads((done.run_dir / "run.json").read_text())["device"] == "cpu"


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


def test_bad_files_and_run_folders(run_cli, cnn, tmp_path):
    run = tmp_path / "run"
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x08\x07garbage")
    refused(run_cli("train", broken, "--data", "digits-images", "-o", run), "not a readable ONNX model", run)
    refused(run_cli("train", tmp_path / "none.onnx", "--data", "iris", "-o", run), "no such file", run)
    refused(run_cli("train", cnn, "-o", run), "give MODEL.onnx, --data and -o RUN_DIR", run)
    refused(run_cli("train", "--resume", tmp_path), "is not a training run (no run.json)", run)
    refused(run_cli("train", cnn, "--data", "iris", "--resume", tmp_path), "give only --resume RUN_DIR", run)
    zero = run_cli("train", cnn, "--data", "digits-images", "--epochs", "0", "-o", run)
    assert zero.code == 2 and zero.err == "error: --epochs must be at least 1, got 0 (see onnxkit train -h)\n"

    done = run_cli("train", cnn, "--data", "digits-images", "--epochs", "1", "--quiet", "-o", run)
    assert done.code == 0, done.err
    model_bytes = (run / "model.onnx").read_bytes()
    again = run_cli("train", cnn, "--data", "digits-images", "-o", run)
    assert again.code == 1 and "already holds a training run; continue it with --resume" in again.err
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


def test_eval_needs_data_for_a_model_that_was_not_trained_here(run_cli, cnn):
    result = run_cli("eval", cnn)
    assert result.code == 1 and "does not say what it was trained on; give --data" in result.err
    assert run_cli("eval", cnn, "--data", "digits-images", "--split", "tst").code == 1


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
    for options in (["--optimizer", "rmsprop"], ["--optimizer", "sgd", "--momentum", "0.9"],
                    ["--optimizer", "adamw", "--amsgrad"]):
        result = run_cli("train", cnn, "--data", "digits-images", "--backend", "ort-training", *options,
                         "-o", tmp_path / "run")
        refused(result, "the ort-training backend runs only adamw without amsgrad and sgd without momentum",
                tmp_path / "run")
        assert "--backend onnx" in result.err
