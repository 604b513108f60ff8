"""`onnxkit train` and `onnxkit eval` end to end on the zoo's digits-cnn and iris-mlp."""

from __future__ import annotations

import json

import onnx
import pytest
from onnx import numpy_helper

from onnxkit.files import load_model

pytestmark = pytest.mark.training


def test_digits_cnn_trains_to_97_percent_through_the_cli(run_cli, tmp_path):
    model, run = tmp_path / "digits.onnx", tmp_path / "run"
    assert run_cli("build", "digits-cnn", "-o", model).code == 0
    result = run_cli(
        "train", model, "--data", "digits-images", "--epochs", "40", "--batch-size", "128", "--lr", "0.01",
        "--schedule", "cosine", "--warmup", "0.05", "-o", run,
    )
    assert result.code == 0, result.err
    assert f"wrote {run / 'model.onnx'}" in result.out and "test: accuracy" in result.out
    assert "epoch 40/40" in result.err and "\r" not in result.err  # epoch lines, no live bar off a terminal

    evaluated = run_cli("eval", run / "model.onnx", "--json")  # the dataset comes from the model's metadata
    assert evaluated.code == 0, evaluated.err
    metrics = json.loads(evaluated.out)
    assert metrics["data"] == "digits-images" and metrics["split"] == "test" and metrics["examples"] == 359
    assert metrics["accuracy"] >= 0.97, metrics["accuracy"]
    assert len(metrics["confusion"]) == 10 and sum(map(sum, metrics["confusion"])) == 359

    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "completed" and info["config"]["epochs"] == 40 and info["loss"] == "cross-entropy"
    assert set(info["versions"]) >= {"onnxkit", "onnx", "onnxruntime", "numpy", "python"}
    assert info["result"]["test"]["accuracy"] == metrics["accuracy"]
    original = load_model(model)
    assert info["trainable_parameters"] == sum(numpy_helper.to_array(t).size for t in original.graph.initializer)

    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["event"] == "step"]
    epochs = [r for r in records if r["event"] == "epoch"]
    assert len(steps) == 40 * 9 and len(epochs) == 40  # 1079 examples / 128 = 9 batches per epoch
    assert [r["step"] for r in steps] == list(range(1, 361))
    assert steps[0]["lr"] < steps[20]["lr"] and steps[-1]["lr"] < 1e-4  # warm-up, then cosine decay to ~0
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"] / 10
    assert {"val_loss", "val_accuracy", "val_macro_f1", "best_epoch"} <= set(epochs[-1])
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "checkpoints" / "best.ckpt").is_file()

    trained = load_model(run / "model.onnx")
    onnx.checker.check_model(trained, full_check=True)
    assert [n.op_type for n in trained.graph.node] == [n.op_type for n in original.graph.node]
    meta = {p.key: p.value for p in trained.metadata_props}
    training = json.loads(meta["onnxkit.training"])
    assert training["data"] == "digits-images" and training["epochs"] == 40 and training["optimizer"] == "adamw"
    assert meta["onnxkit.recipe"] == {p.key: p.value for p in original.metadata_props}["onnxkit.recipe"]

    shown = run_cli("eval", run / "model.onnx", "--data", "digits-images", "--split", "validation")
    assert shown.code == 0 and "digits-images validation split (359 examples): accuracy" in shown.out
    assert "confusion matrix (rows: true class, columns: predicted)" in shown.out


def test_iris_mlp_trains_to_93_percent_through_the_cli(run_cli, tmp_path):
    model, run = tmp_path / "iris.onnx", tmp_path / "run"
    assert run_cli("build", "iris-mlp", "-o", model).code == 0
    result = run_cli(
        "train", model, "--data", "iris", "--epochs", "100", "--batch-size", "16", "--lr", "0.01", "--quiet",
        "-o", run,
    )
    assert result.code == 0, result.err
    assert result.err == ""  # --quiet
    metrics = json.loads(run_cli("eval", run / "model.onnx", "--json").out)
    assert metrics["examples"] == 30 and metrics["accuracy"] >= 0.93, metrics
    assert metrics["labels"] == ["setosa", "versicolor", "virginica"]


def test_train_and_eval_help_show_examples(run_cli):
    for command in ("train", "eval"):
        shown = run_cli(command, "--help")
        assert shown.code == 0 and "Example" in shown.out
