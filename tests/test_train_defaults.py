"""Defaults that train well: a model's training recipe, explicit settings over it, a length that
follows the data, and torch's default learning rates."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from onnxkit import zoo
from onnxkit.data import dataset_from_arrays
from onnxkit.metadata import set_metadata
from onnxkit.train import fit
from onnxkit.train.defaults import MAX_EPOCHS, MIN_STEPS, Settings, resolve, training_mode
from onnxkit.train.optim import get_optimizer
from onnxkit.training_recipe import KEY, TrainingRecipe, read_training_recipe, training_recipes

# torch.optim's signatures (torch 2.x docs): the default lr of each class
TORCH_DEFAULT_LR = {"sgd": 1e-3, "adam": 1e-3, "adamw": 1e-3, "adagrad": 1e-2, "rmsprop": 1e-2, "adadelta": 1.0}


@pytest.mark.parametrize(("name", "lr"), sorted(TORCH_DEFAULT_LR.items()))
def test_each_optimizer_defaults_to_torchs_learning_rate(name, lr):
    assert get_optimizer(name).default_lr == lr
    settings, _ = resolve(Settings(optimizer=name), None, train_rows=100, grad_accumulation=1, has_validation=True)
    assert settings.lr == lr


def test_the_length_follows_the_data():
    def length(rows: int, batch: int | None = None, accumulation: int = 1) -> tuple[int, int | None]:
        s, note = resolve(Settings(batch_size=batch), None, train_rows=rows, grad_accumulation=accumulation,
                          has_validation=True)
        assert note is not None and note.startswith("training with defaults for this data: adamw lr 0.001, batch ")
        return s.epochs, s.patience

    assert length(107) == (500, 50)  # 4 steps an epoch: capped at MAX_EPOCHS
    assert length(1079) == (59, 6)  # 34 steps an epoch: 2,006 steps
    assert length(1079, batch=64, accumulation=2) == (223, 23)  # 9 optimizer steps an epoch
    assert length(1_000_000) == (5, 5)
    for rows in (107, 1079, 50_000):
        epochs, _ = length(rows)
        assert epochs == MAX_EPOCHS or epochs == 5 or epochs * -(-rows // 32) >= MIN_STEPS
    no_validation, _ = resolve(Settings(), None, train_rows=107, grad_accumulation=1, has_validation=False)
    assert no_validation.patience is None
    automatic, note = resolve(Settings(), None, train_rows=107, grad_accumulation=1, has_validation=True)
    assert automatic.patience_from_step == MIN_STEPS // 2 and note.endswith(", from step 1000 (flags override them)")
    given, _ = resolve(Settings(patience=3), None, train_rows=107, grad_accumulation=1, has_validation=True)
    assert (given.patience, given.patience_from_step) == (3, 0)  # a patience asked for counts from the start


@pytest.mark.training
def test_a_plateau_at_the_start_does_not_end_training(tmp_path, run_cli):
    # the sigmoid binary-classifier as built before its hidden layer's 4x Xavier range sits at chance on make_circles
    # for ~600 steps before it learns; stopped after 20 epochs without progress, it ended at 32% test accuracy
    from sklearn.datasets import make_circles

    x, y = make_circles(500, noise=0.1, factor=0.5, random_state=0)
    np.savez(tmp_path / "circles.npz", x=x.astype(np.float32), y=y)
    model = zoo.build_model("binary-classifier", features=2)
    hidden = next(t for t in model.graph.initializer if t.name == "hidden.weight")
    hidden.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(hidden) / 4, hidden.name))
    onnx.save(model, tmp_path / "binary.onnx")
    result = run_cli("train", tmp_path / "binary.onnx", tmp_path / "circles.npz", "-o", tmp_path / "run")
    assert result.code == 0, result.err
    assert json.loads((tmp_path / "run" / "run.json").read_text())["result"]["test"]["accuracy"] >= 0.9


@pytest.mark.training
def test_the_binary_classifier_bends_to_make_moons_with_no_flag(tmp_path, run_cli):
    # its sigmoid hidden layer at Glorot's tanh range stayed near-linear for thousands of steps: 83% (a line's score)
    from sklearn.datasets import make_moons

    x, y = make_moons(300, noise=0.2, random_state=0)
    np.savez(tmp_path / "moons.npz", x=x.astype(np.float32), y=y)
    onnx.save(zoo.build_model("binary-classifier", features=2), tmp_path / "binary.onnx")
    result = run_cli("train", tmp_path / "binary.onnx", tmp_path / "moons.npz", "-o", tmp_path / "run")
    assert result.code == 0, result.err
    assert json.loads((tmp_path / "run" / "run.json").read_text())["result"]["test"]["accuracy"] >= 0.95


def test_explicit_settings_win_over_the_recipe():
    recipe = TrainingRecipe(lr=0.01, lrs={"sgd": 0.1}, batch_size=128, epochs=40, schedule="cosine", warmup=0.05,
                            weight_decay=0.05)
    kw = dict(train_rows=1079, grad_accumulation=1, has_validation=True)
    s, note = resolve(Settings(), recipe, **kw)
    assert (s.optimizer, s.lr, s.batch_size, s.epochs, s.schedule, s.warmup, s.weight_decay, s.patience) == (
        "adamw", 0.01, 128, 40, "cosine", 0.05, 0.05, None)
    assert note == ("training with the model's training recipe: adamw lr 0.01, batch 128, cosine schedule, "
                    "warm-up 0.05, 40 epochs (flags override them)")
    s, _ = resolve(Settings(lr=0.02, batch_size=8, epochs=3, schedule="linear", warmup=0.0, weight_decay=0.0),
                   recipe, **kw)
    assert (s.lr, s.batch_size, s.epochs, s.schedule, s.warmup, s.weight_decay) == (0.02, 8, 3, "linear", 0.0, 0.0)
    assert resolve(Settings(epochs=1), recipe, **kw)[1].endswith(", 1 epoch (flags override them)")  # was '1 epochs'
    sgd, _ = resolve(Settings(optimizer="sgd"), recipe, **kw)
    assert (sgd.lr, sgd.weight_decay) == (0.1, None)  # the recipe's sgd rate; its adamw weight decay does not apply
    rms, _ = resolve(Settings(optimizer=get_optimizer("rmsprop", alpha=0.9)), recipe, **kw)
    assert rms.lr == 1e-2  # no rate for rmsprop in the recipe: torch's
    steps, _ = resolve(Settings(steps=7), recipe, **kw)
    assert steps.steps == 7 and steps.patience is None
    everything = Settings("adamw", 0.1, None, 8, 2, None, "constant", None, None, None)
    assert resolve(everything, recipe, **kw)[1] is None  # nothing defaulted, nothing said
    smoothing = TrainingRecipe(lr=0.01, label_smoothing=0.1)  # a recipe's smoothing is said even with all else given
    assert resolve(everything, smoothing, **kw)[1] == ("training with the label smoothing of the model's training "
                                                       "recipe: adamw lr 0.1, batch 8, label smoothing 0.1, 2 epochs "
                                                       "(flags override them)")
    assert resolve(Settings("adamw", 0.1, None, 8, 2, None, "constant", label_smoothing=0.0), smoothing, **kw) == (
        Settings("adamw", 0.1, None, 8, 2, None, "constant", 0.0, None, None, label_smoothing=0.0), None)
    # the README's spelled-out digits-cnn command leaves only the optimizer out: no data-sized setting
    spelled_out = Settings(lr=0.01, batch_size=128, epochs=40, schedule="cosine", warmup=0.05)
    # 'defaults' alone read as if the flags were not taken; 'defaults for the optimizer: adamw lr 0.01, ...' (make
    # demo's first training line) as if lr 0.01 were adamw's default: the one setting is named as the default
    assert resolve(spelled_out, recipe, **kw)[1] == ("training with the default optimizer: adamw lr 0.01, batch 128, "
                                                      "cosine schedule, warm-up 0.05, 40 epochs (flags override them)")
    no_lr = Settings(optimizer="adamw", batch_size=128, epochs=40, schedule="cosine", warmup=0.05)
    assert resolve(no_lr, recipe, **kw)[1].startswith("training with the learning rate of the model's training "
                                                       "recipe: adamw lr 0.01, batch 128")
    no_length = Settings(optimizer="adamw", lr=0.01, batch_size=64, schedule="constant")
    assert resolve(no_length, None, **kw)[1].startswith("training with the length for this data: adamw lr 0.01, "
                                                         "batch 64, up to ")


def test_recipes_travel_in_metadata_per_mode():
    bert = zoo._load("bert-classifier")[1]
    model = zoo.build_model("iris-mlp")
    set_metadata(model, bert.FINE_TUNING)
    full = read_training_recipe(model, training_mode((), None))
    head = read_training_recipe(model, training_mode(["classifier.*"], None))
    lora = read_training_recipe(model, training_mode((), object()))
    assert (full.lr, full.batch_size, full.schedule, full.warmup) == (5e-5, 16, "linear", 0.1)
    assert (head.lr, head.monitor) == (1e-3, "val_accuracy") and lora.lr == 2e-3
    assert read_training_recipe(zoo.build_model("text-transformer"), "full") is None
    set_metadata(model, {KEY: {"full": {"learning_rate": 1}}})
    with pytest.raises(Exception, match="not a valid training recipe"):
        read_training_recipe(model, "full")
    with pytest.raises(Exception, match="unknown training mode 'partial'"):
        training_recipes(partial=TrainingRecipe())


@pytest.mark.training
def test_digits_cnn_with_no_flags_uses_its_recipe(tmp_path, run_cli):
    model = tmp_path / "cnn.onnx"
    onnx.save(zoo.build_model("digits-cnn"), model)
    result = run_cli("train", model, "--data", "digits-images", "-o", tmp_path / "run")
    assert result.code == 0, result.err
    assert result.err.splitlines()[0] == ("training with the model's training recipe: adamw lr 0.01, batch 128, "
                                          "cosine schedule, warm-up 0.05, label smoothing 0.1, 50 epochs (flags "
                                          "override them)")
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["result"]["test"]["accuracy"] >= 0.97 and info["config"]["label_smoothing"] is None
    flags = run_cli("train", model, "--data", "digits-images", "--lr", "0.003", "--epochs", "1", "--quiet",
                    "-o", tmp_path / "flags")
    config = json.loads((tmp_path / "flags" / "run.json").read_text())["config"]
    assert flags.code == 0 and (config["lr"], config["epochs"], config["batch_size"]) == (0.003, 1, 128)


@pytest.mark.training
def test_a_recipes_label_smoothing_smooths_cross_entropy_and_leaves_other_losses(tmp_path):
    # digits-cnn's recipe smooths by 0.1: its training losses are a run's with label_smoothing=0.1, not with 0
    model = zoo.build_model("digits-cnn")
    losses = {}
    for smoothing in (None, 0.1, 0.0):
        fit(model, "digits-images", tmp_path / f"run-{smoothing}", epochs=1, device="cpu", label_smoothing=smoothing,
            evaluate_test=False)
        records = map(json.loads, (tmp_path / f"run-{smoothing}" / "metrics.jsonl").read_text().splitlines())
        losses[smoothing] = [r["loss"] for r in records if r["event"] == "step"]
    assert len(losses[None]) == 9 and losses[None] == losses[0.1] != losses[0.0]
    # a recipe's smoothing on a model trained as a regression: left out (an error only where the caller asked for it)
    set_metadata(model, training_recipes(full=TrainingRecipe(epochs=1, label_smoothing=0.1)))
    rows = np.random.default_rng(0).random((40, 1, 8, 8), np.float32)
    data = dataset_from_arrays("rows", {"image": rows}, rows.reshape(40, -1)[:, :10] * 3)
    fit(model, data, tmp_path / "regression", device="cpu", loss="mse")
    assert json.loads((tmp_path / "regression" / "run.json").read_text())["loss"] == "mse"
    with pytest.raises(Exception, match="label_smoothing smooths cross-entropy's class targets"):
        fit(model, data, tmp_path / "asked", device="cpu", loss="mse", label_smoothing=0.1)


@pytest.mark.training
def test_binary_classifier_trains_with_sgd_and_no_other_flag(tmp_path, run_cli):
    x = np.random.default_rng(0).uniform(-3, 3, size=(200, 1)).astype(np.float32)
    np.savez(tmp_path / "toy.npz", x=x, y=(x[:, 0] > 0.5).astype(np.int64))  # separable at 0.5
    model = tmp_path / "binary.onnx"
    onnx.save(zoo.build_model("binary-classifier"), model)
    result = run_cli("train", model, "--data", tmp_path / "toy.npz", "--optimizer", "sgd", "-o", tmp_path / "run")
    assert result.code == 0, result.err
    assert result.err.startswith("training with the model's training recipe: sgd lr 0.1, batch 32, up to 500 epochs")
    assert json.loads((tmp_path / "run" / "run.json").read_text())["result"]["test"]["accuracy"] >= 0.95


@pytest.mark.training
def test_a_plain_dsl_mlp_trains_as_well_as_scikit_learns_on_the_defaults(tmp_path):
    """Linear(20, 100) -> ReLU -> Linear(100, 1) written with the DSL, trained with no setting on
    make_regression's 200 rows: test R² 0.74-0.77 (seeds 0-2) when every Linear started He-uniform
    (the output layer too: the fresh model's outputs had twice the standardised targets' variance,
    and its 120 training rows were interpolated, noise and all); from torch.nn.Linear's start
    0.955-0.964, where scikit-learn's MLPRegressor reaches 0.98 (tools/sweep_sklearn.py)."""
    import onnxruntime as ort
    from sklearn.datasets import make_regression
    from sklearn.metrics import r2_score

    from onnxkit import nn
    from onnxkit.data import dataset_from_arrays

    x, y = make_regression(n_samples=200, n_features=20, n_informative=10, noise=10, random_state=0)
    data = dataset_from_arrays("regression", {"x": x.astype(np.float32)}, y.astype(np.float32))
    nn.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(20, 100), nn.ReLU(), nn.Linear(100, 1))
    model = nn.build(mlp, {"x": nn.Input(["batch", 20])}, output_names=["y"])
    result = fit(model, data, tmp_path / "run", quiet=True)
    session = ort.InferenceSession(str(result.model_path), providers=["CPUExecutionProvider"])
    (predicted,) = session.run(None, {"x": data.test.inputs["x"]})
    assert r2_score(data.test.labels, predicted[:, 0]) > 0.9


@pytest.mark.training
def test_fit_arguments_win_over_the_recipe(tmp_path):
    result = fit(zoo.build_model("iris-mlp"), "iris", tmp_path / "run", lr=0.02, steps=3, evaluate_test=False)
    config = json.loads((result.run_dir / "run.json").read_text())["config"]
    assert (config["lr"], config["batch_size"], config["steps"]) == (0.02, 16, 3)  # batch from the recipe
    assert result.metrics["steps"] == 3


@pytest.mark.training
def test_a_model_with_a_fixed_batch_size_trains_at_that_size(tmp_path):
    from onnxkit import nn

    nn.manual_seed(0)
    mlp = nn.Sequential([nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3)])
    model = nn.build(mlp, {"x": nn.Input([15, 4])}, output_names=["logits"])  # iris: 90 / 30 / 30 rows
    result = fit(model, "iris", tmp_path / "run", steps=2)
    assert json.loads((result.run_dir / "run.json").read_text())["config"]["batch_size"] == 15


@pytest.mark.training
def test_two_valued_whole_number_targets_are_named_as_trained_by_regression(tmp_path, run_cli):
    """make_hastie_10_2's labels are -1 and 1: a one-output model without a task trained a regression
    on them and printed an R² without a word on why; one line now says so and how to get a classifier."""
    from onnxkit import nn

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3))
    labels = np.where(x[:, 0] > 0, 1, -1)
    rows = "".join(f"{a},{b},{c},{y}\n" for (a, b, c), y in zip(x, labels, strict=True))
    (tmp_path / "pm.csv").write_text("a,b,c,label\n" + rows)
    nn.manual_seed(0)
    model = nn.build(nn.Sequential([nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1)]), {"x": nn.Input(["batch", 3])})
    onnx.save(model, tmp_path / "m.onnx")
    result = run_cli("train", tmp_path / "m.onnx", "--data", tmp_path / "pm.csv", "--steps", "1", "-o", tmp_path / "r")
    assert result.code == 0, result.err
    assert ("the targets take two values only, -1 and 1: this trains a regression on them (loss mse); for a binary "
            "classifier, map them to 0 and 1") in result.err
    (tmp_path / "01.csv").write_text((tmp_path / "pm.csv").read_text().replace(",-1\n", ",0\n"))
    binary = run_cli("train", tmp_path / "m.onnx", "--data", tmp_path / "01.csv", "--steps", "1", "-o", tmp_path / "b")
    assert binary.code == 0 and "two values" not in binary.err and "bce-with-logits" in binary.err, binary.err
