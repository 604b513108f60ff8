"""`onnxkit train` and `onnxkit eval` end to end on the zoo's digits-cnn and iris-mlp."""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from onnxkit.files import load_model
from onnxkit.train.run_directory import RunDirectory

pytestmark = pytest.mark.training


def test_digits_cnn_trains_to_97_percent_through_the_cli(run_cli, tmp_path):
    model, run = tmp_path / "digits.onnx", tmp_path / "run"
    assert run_cli("build", "digits-cnn", "-o", model).code == 0
    result = run_cli(
        "train", model, "--data", "digits-images", "--epochs", "50", "--batch-size", "128", "--lr", "0.01",
        "--schedule", "cosine", "--warmup", "0.05", "--label-smoothing", "0.1", "-o", run,
    )
    assert result.code == 0, result.err
    assert f"wrote {run / 'model.onnx'}" in result.out and "test: accuracy" in result.out
    assert "epoch 50/50" in result.err and "\r" not in result.err  # epoch lines, no live bar off a terminal

    evaluated = run_cli("eval", run / "model.onnx", "--json")  # the dataset comes from the model's metadata
    assert evaluated.code == 0, evaluated.err
    metrics = json.loads(evaluated.out)
    assert metrics["data"] == "digits-images" and metrics["split"] == "test" and metrics["examples"] == 359
    assert metrics["accuracy"] >= 0.97, metrics["accuracy"]
    assert len(metrics["confusion"]) == 10 and sum(map(sum, metrics["confusion"])) == 359

    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "completed" and info["config"]["epochs"] == 50 and info["loss"] == "cross-entropy"
    assert set(info["versions"]) >= {"onnxkit", "onnx", "onnxruntime", "numpy", "python"}
    assert info["result"]["test"]["accuracy"] == metrics["accuracy"]
    original = load_model(model)
    assert info["trainable_parameters"] == sum(numpy_helper.to_array(t).size for t in original.graph.initializer)

    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["event"] == "step"]
    epochs = [r for r in records if r["event"] == "epoch"]
    assert len(steps) == 50 * 9 and len(epochs) == 50  # 1079 examples / 128 = 9 batches per epoch
    assert [r["step"] for r in steps] == list(range(1, 451))
    assert steps[0]["lr"] < steps[20]["lr"] and steps[-1]["lr"] < 1e-4  # warm-up, then cosine decay to ~0
    least = -(0.91 * math.log(0.91) + 9 * 0.01 * math.log(0.01))  # the smoothed targets' entropy: the loss's floor
    assert epochs[-1]["train_loss"] - least < (epochs[0]["train_loss"] - least) / 20
    assert {"val_loss", "val_accuracy", "val_macro_f1", "best_epoch"} <= set(epochs[-1])
    assert (run / "curves.svg").read_text().startswith("<svg ")
    assert RunDirectory(run).last_checkpoint.is_file() and (run / "checkpoints" / "best.ckpt").is_file()

    trained = load_model(run / "model.onnx")
    onnx.checker.check_model(trained, full_check=True)
    assert [n.op_type for n in trained.graph.node] == [n.op_type for n in original.graph.node]
    meta = {p.key: p.value for p in trained.metadata_props}
    training = json.loads(meta["onnxkit.training"])
    assert training["data"] == "digits-images" and training["epochs"] == 50 and training["optimizer"] == "adamw"
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


def test_a_model_trains_with_no_flag_beyond_the_data_into_a_run_folder_named_after_it(run_cli, tmp_path,
                                                                                       monkeypatch):
    # -o was required ('give MODEL.onnx, --data and -o RUN_DIR'), and the data as an argument was 'Got unexpected
    # extra argument' (predict takes its data so)
    monkeypatch.chdir(tmp_path)
    assert run_cli("build", "iris-mlp", "-o", "iris.onnx").code == 0
    first, second = run_cli("train", "iris.onnx", "iris", "--quiet"), run_cli("train", "iris.onnx", "iris", "--quiet")
    assert first.code == 0 and first.out.startswith("wrote runs/iris/model.onnx  (test: "), first.err
    assert second.out.startswith("wrote runs/iris-2/model.onnx  (test: "), second.err  # a new run, not over the first
    scored = json.loads(run_cli("eval", "runs/iris/model.onnx", "iris", "--json").out)
    assert scored["examples"] == 30 and scored["accuracy"] >= 0.93, scored
    # eval takes --device as train, predict and serve do ('No such option' before)
    assert json.loads(run_cli("eval", "runs/iris/model.onnx", "--device", "cpu", "--json").out) == scored
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert "has no CUDA support" in run_cli("eval", "runs/iris/model.onnx", "--device", "cuda").err


def test_train_and_eval_help_show_examples(run_cli):
    for command in ("train", "eval"):
        shown = run_cli(command, "--help")
        assert shown.code == 0 and "Example" in shown.out


ONE_SCORE_RECIPE = '''
from onnxkit import nn
from onnxkit.zoo import Recipe


def recipe(features: int = 30, task: str = "") -> Recipe:
    net = nn.Sequential([nn.Linear(features, 16), nn.ReLU(), nn.Linear(16, 1)])
    return Recipe(net, {"x": nn.Input(["batch", features])}, task=task or None)
'''


@pytest.mark.parametrize(
    ("data", "features", "task", "loss", "learned"),
    [
        ("breast-cancer", 30, "", None, "binary"),  # no task: one score and 0/1 labels
        ("diabetes", 10, "", None, "regression"),  # no task: one score and numbers
        ("breast-cancer", 30, "classification", "bce-with-logits", "binary"),  # the loss given wins
        ("diabetes", 10, "classification", "mse", "regression"),
    ],
)
def test_a_one_score_model_trains_evaluates_and_predicts_as_its_loss_says(
    run_cli, tmp_path, data, features, task, loss, learned
):
    (tmp_path / "net.py").write_text(ONE_SCORE_RECIPE)
    model, run = tmp_path / "net.onnx", tmp_path / "run"
    assert run_cli("build", tmp_path / "net.py", "--set", f"features={features}", "--set", f"task={task}",
                   "-o", model).code == 0
    if task:  # declared a classifier: the line says which loss a single score takes
        refused = run_cli("train", model, "--data", data, "-o", run)
        assert refused.code == 1 and refused.err.count("\n") == 1 and f"--loss {loss}" in refused.err.replace(
            "loss bce-with-logits", "--loss bce-with-logits"), refused.err
    trained = run_cli("train", model, "--data", data, "--standardize", "-o", run,
                      *(["--loss", loss] if loss else []))
    assert trained.code == 0, trained.err
    meta = onnx.load(run / "model.onnx").metadata_props
    assert {p.key: p.value for p in meta}["onnxkit.task"] == learned
    evaluated = run_cli("eval", run / "model.onnx", "--json")
    assert evaluated.code == 0, evaluated.err
    metrics = json.loads(evaluated.out)
    if learned == "binary":
        assert metrics["accuracy"] >= 0.93, metrics
    else:
        assert metrics["r2"] >= 0.4 and "accuracy" not in metrics, metrics
    from onnxkit.data import load_dataset

    test = load_dataset(data).test
    np.save(tmp_path / "rows.npy", test.inputs["x"])
    predicted = run_cli("predict", run / "model.onnx", "--input", tmp_path / "rows.npy", "-o", tmp_path / "out.json")
    assert predicted.code == 0, predicted.err
    out = json.loads((tmp_path / "out.json").read_text())
    if learned == "binary":  # a class per row from the logit's sign, right as often as eval says
        named = np.asarray(load_dataset(data).label_names)[test.labels]
        assert np.mean(np.asarray(out["labels"]) == named) == pytest.approx(metrics["accuracy"])
    else:
        assert "labels" not in out


def test_a_data_file_given_relative_is_found_again_from_another_folder(run_cli, tmp_path, monkeypatch):
    from onnxkit.data import load_dataset

    work = tmp_path / "work"
    work.mkdir()
    iris = load_dataset("iris")
    rows = [iris.split(s) for s in ("train", "validation", "test")]
    np.savez(work / "flowers.npz", x=np.concatenate([r.inputs["x"] for r in rows]),
             y=np.concatenate([r.labels for r in rows]))
    assert run_cli("build", "iris-mlp", "-o", work / "iris.onnx").code == 0
    monkeypatch.chdir(work)
    trained = run_cli("train", "iris.onnx", "--data", "flowers.npz", "--epochs", "3", "-o", "run")
    assert trained.code == 0, trained.err
    monkeypatch.chdir(tmp_path)  # eval and resume from elsewhere read the same file
    evaluated = run_cli("eval", "work/run/model.onnx", "--json")
    assert evaluated.code == 0, evaluated.err
    assert json.loads(evaluated.out)["data"] == str(work / "flowers.npz")
    info = json.loads((work / "run" / "run.json").read_text())
    assert info["config"]["data"] == str(work / "flowers.npz")


def test_training_goes_on_when_the_reader_of_its_output_goes_away(tmp_path):
    """`onnxkit train ... 2>&1 | head -1`: progress stops, the run completes."""
    import subprocess
    import sys

    model = tmp_path / "iris.onnx"
    subprocess.run([sys.executable, "-m", "onnxkit", "build", "iris-mlp", "-o", model], check=True, capture_output=True)
    command = [sys.executable, "-m", "onnxkit", "train", model, "--data", "iris", "-o", tmp_path / "run"]
    train = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert train.stdout.readline()  # the first line, then the reader goes away
    train.stdout.close()
    assert train.wait(timeout=120) in (0, 1)  # 1: click's exit when the last line meets the closed pipe
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "completed"
    assert onnx.load(tmp_path / "run" / "model.onnx").graph.node


def test_a_regression_run_reports_r2_and_mae_on_the_test_split(run_cli, tmp_path):
    """A regression run's last lines said only 'test: loss 2059.6594', a number in squared target units
    that says nothing of how good the fit is, where eval shows R² and MAE."""
    from onnxkit import nn

    nn.manual_seed(0)
    model, run = tmp_path / "net.onnx", tmp_path / "run"
    onnx.save(nn.build(nn.Sequential([nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 1)]),
                       {"x": nn.Input(["batch", 10])}, output_names=["y"]), model)
    result = run_cli("train", model, "--data", "diabetes", "--steps", "2", "-o", run)
    assert result.code == 0, result.err
    test = json.loads((run / "run.json").read_text())["result"]["test"]
    assert f"test: r2 {test['r2']:.4f}, mae {test['mae']:.4f}, loss {test['loss']:.4f}\n" in result.err
    assert result.out == (f"wrote {run / 'model.onnx'}  (test: r2 {test['r2']:.4f}  mae {test['mae']:.4f}  "
                          f"loss {test['loss']:.4f})\n")
    rows = np.random.default_rng(0).random((60, 10), dtype=np.float32)
    np.savez(tmp_path / "constant.npz", x=rows, y=np.full(60, 3.0, np.float32))  # R² 0, as scikit-learn scores it
    flat = run_cli("train", model, "--data", tmp_path / "constant.npz", "--steps", "2", "-o", tmp_path / "flat")
    written = f"wrote {tmp_path / 'flat' / 'model.onnx'}  (test: r2 0.0000  mae "
    assert flat.code == 0 and flat.out.startswith(written), flat.err


def test_training_data_of_one_class_gets_a_warning(run_cli, tmp_path):
    rows = np.random.default_rng(0).random((40, 4), dtype=np.float32)
    np.savez(tmp_path / "one.npz", x=rows, y=np.full(40, 2))
    model = tmp_path / "iris.onnx"
    assert run_cli("build", "iris-mlp", "-o", model).code == 0
    result = run_cli("train", model, "--data", tmp_path / "one.npz", "--steps", "1", "-o", tmp_path / "run")
    assert result.code == 0, result.err
    assert ("warning: every training example is of class 'virginica'; the model can only learn to answer it (give "
            "examples of the other classes)") in result.err.splitlines()
    mixed = run_cli("train", model, "--data", "iris", "--steps", "1", "-o", tmp_path / "mixed")
    assert "every training example" not in mixed.err and "splits are empty" not in mixed.err
    (tmp_path / "three.csv").write_text("a,b,c,d,label\n" + "".join(  # too few rows to hold any out
        ",".join(map(str, r)) + f",{k % 2}\n" for k, r in enumerate(rows[:3])))
    tiny = run_cli("train", model, "--data", tmp_path / "three.csv", "--steps", "1", "-o", tmp_path / "tiny")
    assert ("warning: the validation and test splits are empty (3 examples in all): nothing scores the model on "
            "data it did not train on") in tiny.err.splitlines()



def test_loss_takes_the_short_names_fit_takes(run_cli, tmp_path):
    # fit(loss="ce") worked where --loss ce was click's 'invalid choice'
    model, run = tmp_path / "iris.onnx", tmp_path / "run"
    assert run_cli("build", "iris-mlp", "-o", model).code == 0
    result = run_cli("train", model, "--data", "iris", "--loss", "ce", "--epochs", "2", "-o", run)
    assert result.code == 0, result.err
    assert json.loads((run / "run.json").read_text())["loss"] == "cross-entropy"


def test_scores_too_small_for_four_decimals_keep_four_digits():
    from onnxkit.cli.train import metric

    assert [metric(v) for v in (0.98765, 3.2e-6, 0.0, -2.5)] == ["0.9877", "3.2e-06", "0.0000", "-2.5000"]


def test_scores_in_the_millions_keep_four_digits_not_four_decimals():
    # make_regression's targets x 1e6: 'mae 13493848.5844  loss 306725042115318.8125'
    from onnxkit.cli.train import metric

    assert [metric(v) for v in (13493848.5844, 306725042115318.8, 99999.5, -2.5e6)] == [
        "1.349e+07", "3.067e+14", "99999.5000", "-2.5e+06"]


def test_a_warmup_longer_than_the_run_or_an_accumulation_past_the_epoch_is_warned_of(run_cli, tmp_path):
    # --warmup 5000 on a run of 12 steps left the learning rate at 2.4e-4 of the one asked for, unsaid
    assert run_cli("build", "iris-mlp", "-o", tmp_path / "iris.onnx").code == 0
    result = run_cli("train", tmp_path / "iris.onnx", "--data", "iris", "--epochs", "2", "--warmup", "5000",
                     "--grad-accum", "100", "--lr", "0.01", "-o", tmp_path / "run")
    assert result.code == 0, result.err
    assert ("warning: the warm-up (5000 steps) is longer than the run (2 steps): the learning rate ends at 4e-06 of "
            "0.01") in result.err
    assert "warning: --grad-accum 100 is more than an epoch's 6 batches" in result.err


def test_label_names_the_csv_column_to_train_on_and_eval_reads_it_back(run_cli, tmp_path):
    # a target first or in the middle (mtcars' mpg, diamonds' price) could only be trained on by editing the file:
    # with a 1-output model the last column was fit without a word but the training line
    from onnxkit import nn

    rng = np.random.default_rng(0)
    x = rng.random((150, 3)).round(3)
    price = (3 * x[:, 0] + 2 * x[:, 1]).round(3)
    (tmp_path / "mid.csv").write_text("a,price,b,c\n" + "".join(f"{r[0]},{p},{r[1]},{r[2]}\n" for r, p in
                                                                zip(x, price, strict=True)))
    nn.manual_seed(0)
    onnx.save(nn.build(nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 1)), {"x": nn.Input(["batch", 3])},
                       output_names=["y"]), tmp_path / "reg.onnx")
    run = tmp_path / "run"
    result = run_cli("train", tmp_path / "reg.onnx", "--data", tmp_path / "mid.csv", "--label", "Price", "-o", run)
    assert result.code == 0, result.err
    assert "labels from 'price' (column 2)" in result.err
    stored = {p.key: p.value for p in onnx.load(run / "model.onnx").metadata_props}
    assert json.loads(stored["onnxkit.training"])["label"] == "Price"
    assert json.loads(stored["onnxkit.columns"]) == ["a", "b", "c"]
    scored = run_cli("eval", run / "model.onnx", "--data", tmp_path / "mid.csv", "--json")  # price, by default
    assert scored.code == 0 and json.loads(scored.out)["r2"] > 0.9, scored.err
    typo = run_cli("train", tmp_path / "reg.onnx", "--data", tmp_path / "mid.csv", "--label", "prise", "-o",
                   tmp_path / "typo")
    assert (typo.code, typo.err) == (1, f"error: {tmp_path / 'mid.csv'}: no column is headed 'prise'. Did you mean: "
                                        "price? Its columns: 'a', 'price', 'b', 'c'\n")
    named = run_cli("train", tmp_path / "reg.onnx", "--data", "diabetes", "--label", "price", "-o", tmp_path / "d")
    assert (named.code, named.err) == (1, "error: --label 'price' names a column of a CSV or Parquet table; diabetes "
                                          "is neither (an .npz keeps its labels in its labels or y array, a named "
                                          "dataset its own)\n")
    assert not (tmp_path / "typo").exists() and not (tmp_path / "d").exists()


def test_a_model_trained_on_a_named_column_fine_tunes_on_other_data_and_says_where_a_column_is_missing(
        run_cli, tmp_path):
    # the recorded --label was forced onto an .npz ('--label names a column of a CSV', never given) and onto a CSV
    # without that column, with no word of where 'price' came from
    from onnxkit import nn
    from onnxkit.evaluate import evaluate

    rng = np.random.default_rng(1)
    x = rng.random((90, 3)).round(3)
    y = (x[:, 0] - x[:, 1]).round(3)
    (tmp_path / "mid.csv").write_text("a,price,b,c\n" + "".join(f"{r[0]},{v},{r[1]},{r[2]}\n" for r, v in
                                                                zip(x, y, strict=True)))
    (tmp_path / "other.csv").write_text("a,b,c,label\n" + "".join(f"{r[0]},{r[1]},{r[2]},{v}\n" for r, v in
                                                                  zip(x, y, strict=True)))
    np.savez(tmp_path / "rows.npz", x=x.astype(np.float32), y=y.astype(np.float32))
    nn.manual_seed(0)
    onnx.save(nn.build(nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1)), {"x": nn.Input(["batch", 3])},
                       output_names=["y"]), tmp_path / "reg.onnx")
    assert run_cli("train", tmp_path / "reg.onnx", "--data", tmp_path / "mid.csv", "--label", "price", "--epochs", "2",
                   "-o", tmp_path / "run").code == 0
    trained = tmp_path / "run" / "model.onnx"
    tuned = run_cli("train", trained, "--data", tmp_path / "rows.npz", "--epochs", "1", "-o", tmp_path / "npz")
    assert tuned.code == 0, tuned.err
    missing = run_cli("eval", trained, "--data", tmp_path / "other.csv")
    assert missing.err == (f"error: {tmp_path / 'other.csv'}: no column is headed 'price'. Its columns: 'a', 'b', "
                           "'c', 'label'; the model was trained on a column 'price': name this file's label column "
                           "with --label COLUMN (rows without their labels are for predict)\n")
    assert run_cli("eval", trained, "--data", tmp_path / "other.csv", "--label", "label").code == 0
    assert evaluate(trained, data=str(tmp_path / "other.csv"), label="label")["examples"] == 90


@pytest.mark.parametrize(("given", "meant"), [
    ("--lr-rate", "'--lr'"),  # click offered --last, --lora-rank and --lr-decay
    ("--learning-rate", "'--lr' (what --learning-rate is called here)"),  # click offered nothing
    ("--num_epochs", "'--epochs' (what --num_epochs is called here)"),
    ("--per-device-train-batch-size", "'--batch-size' (what --per-device-train-batch-size is called here)"),
])
def test_an_option_named_as_elsewhere_is_told_its_name_here(run_cli, given, meant):
    result = run_cli("train", given, "3", "digits-images")
    assert result.code == 2
    assert result.err == f"error: No such option '{given}'. Did you mean {meant}? (see onnxkit train -h)\n"
