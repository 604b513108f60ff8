"""The Python API as a notebook uses it: what fit says and returns, what the runtime's results hold."""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import onnx
import pytest

from onnxkit import nn
from onnxkit.data import dataset_from_arrays
from onnxkit.errors import OnnxkitError
from onnxkit.train import TrainingWarning, fit

ONE_CLASS = "every training example is of class 0"


def _mlp(hidden: int = 8) -> onnx.ModelProto:
    class MLP(nn.Module):
        def __init__(self):
            self.fc1, self.fc2 = nn.Linear(4, hidden), nn.Linear(hidden, 3)

        def forward(self, x):
            return self.fc2(nn.ops.relu(self.fc1(x)))

    nn.manual_seed(0)
    return nn.build(MLP(), {"x": nn.Input(["batch", 4])}, output_names=["logits"])


def _one_class(rows: int = 60):
    x = np.random.default_rng(0).normal(size=(rows, 4)).astype(np.float32)
    return x, np.zeros(rows, np.int64)


def test_quiet_fit_warns_through_warnings(tmp_path, capsys):
    """fit's default quiet=True printed nothing, and its warnings were dropped with the progress."""
    x, y = _one_class()
    with pytest.warns(TrainingWarning, match=ONE_CLASS) as caught:
        fit(_mlp(), data=dataset_from_arrays("one", {"x": x}, y), out_dir=tmp_path / "run", epochs=1)
    assert [str(w.message) for w in caught if w.category is TrainingWarning] == [
        "every training example is of class 0; the model can only learn to answer it (give examples of the "
        "other classes)"]
    assert {w.filename for w in caught} == {__file__}  # the user's fit(...) line, not onnxkit's
    assert capsys.readouterr() == ("", "")


def test_loud_fit_warns_on_stderr_once(tmp_path, capsys):
    x, y = _one_class()
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrainingWarning)  # not a second time as a Python warning
        fit(_mlp(), data=dataset_from_arrays("one", {"x": x}, y), out_dir=tmp_path / "run", epochs=1, quiet=False)
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count(ONE_CLASS) == 1 and f"warning: {ONE_CLASS}" in err


def test_cli_quiet_keeps_warning_lines(tmp_path, run_cli):
    x, y = _one_class()
    onnx.save(_mlp(), tmp_path / "mlp.onnx")
    rows = [",".join([*(f"{v:.4f}" for v in r), "0"]) for r in x]
    (tmp_path / "one.csv").write_text("a,b,c,d,label\n" + "\n".join(rows) + "\n")
    result = run_cli("train", tmp_path / "mlp.onnx", "--data", tmp_path / "one.csv", "-o", tmp_path / "run",
                     "--epochs", "1", "--quiet")
    assert result.code == 0, result.err
    assert result.err.splitlines() == [f"warning: {ONE_CLASS}; the model can only learn to answer it (give examples "
                                       "of the other classes)"]


def test_a_callback_of_other_arity_is_refused_up_front(tmp_path):
    """callback=lambda: ... failed at the first step with Python's own '<lambda>() takes 0 positional arguments'."""
    x, _ = _one_class()
    data = dataset_from_arrays("d", {"x": x}, np.arange(len(x)) % 3)

    def two(record, trainer):
        pass

    for callback, shown in ((lambda: None, "<lambda>()"), (two, "two(record, trainer)")):
        with pytest.raises(TypeError, match=r"^callback must be a function of one argument, the metrics record: "
                                            rf"callback\(record\); {re.escape(shown)} cannot take one$"):
            fit(_mlp(), data=data, out_dir=tmp_path / "run", epochs=1, callback=callback)
        assert not (tmp_path / "run").exists()
    records: list[dict] = []
    fit(_mlp(), data=data, out_dir=tmp_path / "run", epochs=2, callback=records.append)  # a bound method binds
    assert [r["epoch"] for r in records if r["event"] == "epoch"] == [1, 2]


def test_build_names_inputs_that_forward_cannot_take():
    """Python's own 'forward() takes 2 positional arguments but 3 were given' named neither side."""
    class Net(nn.Module):
        def __init__(self):
            self.fc = nn.Linear(4, 2)

        def forward(self, x, mask=None):
            return self.fc(x if mask is None else x * mask)

    line = Net.forward.__code__.co_firstlineno
    three = {"x": nn.Input(["b", 4]), "m": nn.Input(["b", 4]), "k": nn.Input(["b", 4])}
    other = {"mask": nn.Input(["b", 4])}  # by name, and x missing
    for inputs, given in ((three, "3 input(s) given (x, m, k)"), (other, "1 input(s) given (mask)")):
        with pytest.raises(OnnxkitError, match=rf"^Net.forward \(test_notebook_api.py:{line}\) takes \(x, mask\), "
                                               rf"which the {re.escape(given)} do not fit; give an nn.Input for each"):
            nn.build(Net(), inputs)
    model = nn.build(Net(), {"mask": nn.Input(["b", 4]), "x": nn.Input(["b", 4])})  # by name: x reaches x
    assert [i.name for i in model.graph.input] == ["mask", "x"]
    assert list(model.graph.node[0].input) == ["x", "mask"]


def test_callback_hooks_are_checked_before_training(tmp_path):
    """A hook of the wrong arity failed at its first call inside the loop ('on_epoch_end() takes 2 positional
    arguments but 3 were given'); a misspelt one never ran, unsaid."""
    from onnxkit.train.callbacks import Callback

    x, _ = _one_class()
    data = dataset_from_arrays("d", {"x": x}, np.arange(len(x)) % 3)

    class Keras(Callback):
        def on_epoch_end(self, record):
            pass

    with pytest.raises(TypeError, match=r"^callback Keras.on_epoch_end\(record\) must take \(trainer, record\)"):
        fit(_mlp(), data=data, out_dir=tmp_path / "run", epochs=1, callbacks=[Keras()])
    assert not (tmp_path / "run").exists()

    class Misspelt(Callback):
        epochs: list[int] = []

        def on_epoch_ends(self, trainer, record):
            pass

        def on_epoch_begin(self, trainer, epoch, *rest):  # any signature that binds is fine
            self.epochs.append(epoch)

    with pytest.warns(TrainingWarning) as caught:
        fit(_mlp(), data=data, out_dir=tmp_path / "run", epochs=2, callbacks=[Misspelt()])
    assert [str(w.message) for w in caught] == [
        "callback Misspelt.on_epoch_ends is no hook, so training never calls it. Did you mean: on_epoch_end, "
        "on_epoch_begin, on_step_end? The hooks: on_train_begin, on_epoch_begin, on_batch_end, on_step_end, "
        "on_epoch_end, on_checkpoint, on_train_end"]
    assert {w.filename for w in caught} == {__file__}
    assert Misspelt.epochs == [1, 2]


def test_a_hook_written_with_keras_arguments_is_refused_before_training(tmp_path):
    """Keras's on_epoch_end(self, epoch, logs=None) binds (trainer, record), so it ran with the Trainer as its epoch:
    "'>=' not supported between instances of 'Trainer' and 'int'" deep in the loop, or a wrong answer unsaid."""
    from onnxkit.train.callbacks import Callback

    x, _ = _one_class()
    data = dataset_from_arrays("d", {"x": x}, np.arange(len(x)) % 3)

    class Keras(Callback):
        def on_epoch_end(self, epoch, logs=None):
            pass

    class KerasBegin(Callback):
        def on_train_begin(self, logs=None):
            pass

    with pytest.raises(TypeError) as e:
        fit(_mlp(), data=data, out_dir=tmp_path / "run", epochs=1, callbacks=[Keras()])
    assert str(e.value) == (
        "callback Keras.on_epoch_end(epoch, logs=None) takes Keras's arguments; the trainer calls "
        "on_epoch_end(trainer, record): the epoch is record['epoch'] and Keras's logs are the record; "
        "trainer.stop_training = True stops training")
    with pytest.raises(TypeError, match=r"^callback KerasBegin.on_train_begin\(logs=None\) takes Keras's arguments; "
                                        r"the trainer calls on_train_begin\(trainer\): trainer.stop_training"):
        fit(_mlp(), data=data, out_dir=tmp_path / "run", epochs=1, callbacks=[KerasBegin()])
    assert not (tmp_path / "run").exists()


def test_a_model_trained_on_a_dataframe_reads_one_by_its_column_names(tmp_path):
    """Trained from dataset_from_arrays({'x': frame}, y), a model read a reordered DataFrame by position (iris'
    columns reversed: all three rows answered virginica), where one trained on the same CSV reads it by name."""
    from sklearn.datasets import load_iris

    from onnxkit import runtime

    iris = load_iris(as_frame=True)
    frame, target = iris.data, iris.target
    assert dataset_from_arrays("iris", {"x": frame}, target).columns == tuple(frame.columns)
    assert dataset_from_arrays("iris", {"x": frame.to_numpy()}, target).columns is None
    assert dataset_from_arrays("iris", {"x": frame.set_axis(range(4), axis=1)}, target).columns is None
    assert dataset_from_arrays("iris", {"x": frame.set_axis([*frame.columns[:3], "target"], axis=1)},
                               target).columns is None  # a feature headed as labels: predict would leave it out

    model = _mlp(hidden=16)
    result = fit(model, data=dataset_from_arrays("iris", {"x": frame}, target), out_dir=tmp_path / "run", epochs=60,
                 lr=0.02)
    trained = runtime.load(result.model_path)
    assert trained.metadata["onnxkit.columns"] == json.dumps(list(frame.columns))
    rows = frame.iloc[[0, 60, 120]]
    assert trained.predict(rows).classes.tolist() == [0, 1, 2]
    assert trained.predict(rows[rows.columns[::-1]]).classes.tolist() == [0, 1, 2]
    assert trained.predict(rows.to_numpy()).classes.tolist() == [0, 1, 2]
    with pytest.raises(OnnxkitError, match=r"the DataFrame: the model trained on columns sepal length \(cm\), .*; "
                                           r"give those columns, once each, by name"):
        trained.predict(rows.set_axis(list("abcd"), axis=1))
    # evaluate and fine-tuning read a Dataset of a DataFrame by those names too
    from onnxkit.evaluate import evaluate

    shuffled = frame[frame.columns[[2, 0, 3, 1]]]
    assert (evaluate(result.model_path, "test", data=dataset_from_arrays("iris", {"x": shuffled}, target))
            == evaluate(result.model_path, "test", data=dataset_from_arrays("iris", {"x": frame}, target)))
    with pytest.raises(OnnxkitError, match=r"^data 'iris': the model trained on columns sepal length \(cm\), "):
        evaluate(result.model_path, "test", data=dataset_from_arrays("iris", {"x": rows.set_axis(list("abcd"),
                                                                                                   axis=1)}, [0, 1, 2]))


def test_a_split_seed_out_of_range_is_named():
    """load_dataset('iris', seed=-1) and dataset_from_arrays(..., seed=-1) were numpy's 'expected non-negative
    integer', raised from its bit generator."""
    from onnxkit.data import load_dataset

    x, _ = _one_class(10)
    for make in (lambda seed: load_dataset("iris", seed=seed),
                 lambda seed: dataset_from_arrays("d", {"x": x}, np.arange(10) % 2, seed=seed)):
        with pytest.raises(OnnxkitError, match=r"^seed must be 0 or more, got -1$"):
            make(-1)
        with pytest.raises(TypeError, match=r"^seed must be a whole number from 0 up, not 1.5$"):
            make(1.5)
        assert len(make(np.int64(3)).train) == len(make(3).train)


def test_every_entry_point_the_readme_names_works_after_a_bare_import():
    """README's `inspect` is `onnxkit.summary.summarize(path)` and `serve` is `onnxkit.serve.serve(...)`: after
    `import onnxkit` both were "module 'onnxkit' has no attribute ..." (the other entry points import on first use)."""
    import subprocess
    import sys

    code = ("import sys, onnxkit; assert 'onnxkit.serve' not in sys.modules and 'onnxkit.summary' not in sys.modules; "
            "print(onnxkit.summary.summarize.__name__, onnxkit.serve.serve.__name__, "
            "{'serve', 'summary'} <= set(dir(onnxkit)))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.stdout == "summarize serve True\n", run.stderr


def test_an_unknown_fit_keyword_says_what_to_pass(tmp_path):
    """fit(momentum=0.9) or fit(learning_rate=0.1) was Python's bare 'got an unexpected keyword argument'."""
    import inspect

    from onnxkit.train import optim

    cases = {
        (("momentum", 0.9),): "fit() got an unexpected keyword argument 'momentum': momentum is an option of the "
                              "optimizer; pass optimizer=SGD(momentum=0.9) from onnxkit.train.optim",
        (("optimizer", "rmsprop"), ("momentum", 0.5)): "fit() got an unexpected keyword argument 'momentum': momentum "
                                                       "is an option of the optimizer; pass optimizer=RMSprop("
                                                       "momentum=0.5) from onnxkit.train.optim",
        (("betas", (0.9, 0.98)),): "fit() got an unexpected keyword argument 'betas': betas is an option of the "
                                   "optimizer; pass optimizer=AdamW(betas=(0.9, 0.98)) from onnxkit.train.optim",
        (("learning_rate", 0.1),): "fit() got an unexpected keyword argument 'learning_rate'; fit calls it lr",
        (("verbose", 1),): "fit() got an unexpected keyword argument 'verbose'; fit calls it quiet (quiet=False shows "
                           "progress)",
        (("epoch", 3),): "fit() got an unexpected keyword argument 'epoch'. Did you mean: epochs?",
        (("zebra", 3),): "fit() got an unexpected keyword argument 'zebra'",
    }
    for given, message in cases.items():
        with pytest.raises(TypeError) as caught:
            fit(_mlp(), data="iris", out_dir=tmp_path / "run", **dict(given))
        assert str(caught.value) == message
    assert not (tmp_path / "run").exists()
    assert optim.SGD(momentum=0.9).momentum == 0.9  # what the message says to pass is an optimizer
    assert "optimizer" in inspect.signature(fit).parameters and "lr" in inspect.signature(fit).parameters


def test_load_dataset_names_an_option_the_data_does_not_take(tmp_path):
    """load_dataset('iris', foo=1) was "iris() got an unexpected keyword argument 'foo'", a function never called."""
    from onnxkit.data import load_dataset

    (tmp_path / "t.csv").write_text("a,b,label\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n9,1,0\n2,3,1\n")
    cases = {("iris", "foo"): "dataset 'iris' takes no option 'foo'. Its options: none beside seed, validation, test "
                              "and model",
             (str(tmp_path / "t.csv"), "lable"): "a .csv file takes no option 'lable'. Did you mean: label? Its "
                                                 "options: tokenizer, max_length, label, inputs, columns, drop beside "
                                                 "seed, validation, test and model"}
    for (name, option), message in cases.items():
        with pytest.raises(TypeError) as caught:
            load_dataset(name, **{option: "x"})
        assert str(caught.value) == message
    (tmp_path / "images" / "cat").mkdir(parents=True)
    with pytest.raises(TypeError, match=r"^a folder of images takes no option 'size'. Its options: none beside "):
        load_dataset(str(tmp_path / "images"), size=8)  # was ignored
    assert load_dataset(str(tmp_path / "t.csv"), label="label", validation=0, test=0).columns == ("a", "b")


def test_an_interrupted_fit_says_how_to_resume_it(tmp_path):
    """A notebook's interrupt showed 'interrupted in epoch 2 after step 4', not where the checkpoint is or how to go
    on (the command's line says both)."""
    from onnxkit.train import TrainingInterrupted
    from onnxkit.train.callbacks import Callback

    class Interrupt(Callback):
        def on_epoch_end(self, trainer, record):
            if record["epoch"] == 1:
                raise KeyboardInterrupt

    x, _ = _one_class()
    data = dataset_from_arrays("d", {"x": x}, np.arange(len(x)) % 3)
    with pytest.raises(TrainingInterrupted) as caught:
        fit(_mlp(), data=data, out_dir=tmp_path / "run", epochs=3, batch_size=12, callbacks=[Interrupt()])
    stop = caught.value
    assert str(stop) == (f"interrupted in epoch 2 after step 3: checkpoint saved to {stop.checkpoint}; continue with "
                         f"fit(resume={str(tmp_path / 'run')!r}, data=...), passing the same in-memory data again")
    assert stop.checkpoint.is_relative_to(tmp_path / "run") and stop.checkpoint.exists()
    result = fit(resume=tmp_path / "run", data=data)
    assert [r["epoch"] for r in result.history] == [1, 2, 3] and result.metrics["steps"] == 9


def test_two_valued_regression_targets_warn_a_quiet_fit(tmp_path):
    """-1/1 targets under a one-score model train a regression: the line that says so was progress, dropped quietly."""
    class One(nn.Module):
        def __init__(self):
            self.fc = nn.Linear(4, 1)

        def forward(self, x):
            return self.fc(x)

    x, _ = _one_class()
    with pytest.warns(TrainingWarning) as caught:
        data = dataset_from_arrays("pm", {"x": x}, np.arange(60) % 2 * 2 - 1)
        fit(nn.build(One(), {"x": nn.Input(["b", 4])}), data=data, out_dir=tmp_path / "run", epochs=1)
    assert [str(w.message) for w in caught] == [
        "the targets take two values only, -1 and 1: this trains a regression on them (loss mse); for a binary "
        "classifier, map them to 0 and 1"]


def test_predict_given_a_file_name_or_none_says_what_to_pass(tmp_path):
    """Model.predict('rows.csv') was "input 'x' expects float32 values, got <U8": the command reads files, the method
    takes arrays. A None among the values was "got object"."""
    from pathlib import Path

    from onnxkit import runtime

    model = runtime.load(_mlp())
    for given in ("rows.csv", Path("rows.csv")):
        with pytest.raises(OnnxkitError, match=r"^input 'x' expects float32 values, got (<U8|object) \(the text "
                                               r"'rows.csv'\): predict takes arrays, not a file to read; load it "
                                               r"first \(numpy.load, pandas.read_csv\), or run `onnxkit predict "
                                               r"MODEL FILE`$"):
            model.predict(given)
    with pytest.raises(OnnxkitError, match=r"^input 'x' expects float32 values, got object holding None: give a "
                                           r"number for each value \(NaN for a missing one\)$"):
        model.predict([[1.0, None, 2.0, 3.0]])
    with pytest.raises(OnnxkitError, match=r"^input 'x' expects float32 values, got <U1 \(text such as 'a'\): give "
                                           r"numbers, or the model that reads this text$"):
        model.predict([["a", "b", "c", "d"]])
    assert model.predict([[1.0, np.nan, 2.0, 3.0]])["logits"].shape == (1, 3)


def test_a_quiet_fits_warnings_name_fits_keywords(tmp_path):
    """Warnings written for the command named its flags alone (--grad-accum, --warmup), which fit does not take."""
    x, _ = _one_class()
    data = dataset_from_arrays("d", {"x": x}, np.arange(len(x)) % 3)
    with pytest.warns(TrainingWarning) as caught:
        fit(_mlp(), data=data, out_dir=tmp_path / "run", epochs=1, batch_size=12, grad_accumulation=5, warmup=10)
    assert [str(w.message) for w in caught] == [
        "the warm-up (10 steps) is longer than the run (1 steps): the learning rate ends at 0.0001 of 0.001; give a "
        "shorter --warmup (warmup= in fit), or a fraction of the run (0.1)",
        "--grad-accum 5 is more than an epoch's 3 batches: each step takes the epoch's 3; use --grad-accum 3 or "
        "less (grad_accumulation= in fit)"]


def test_one_score_of_no_class_is_said_in_the_singular(tmp_path):
    """Two classes under three scores read 'scores 2-2 are of no class'."""
    x, _ = _one_class()
    data = dataset_from_arrays("pets", {"x": x}, np.where(np.arange(60) % 2, "cat", "dog"))
    with pytest.warns(TrainingWarning) as caught:
        fit(_mlp(), data=data, out_dir=tmp_path / "run", epochs=1)
    assert [str(w.message) for w in caught] == [
        "the data has 2 classes (cat, dog) and the model 3 class scores: score 2 is of no class and only learns to be "
        "low; give the model a 2-way output (re-export it with 2 classes) to train one of the data's size"]


def test_fit_given_a_split_asks_for_the_whole_dataset(tmp_path):
    """fit(model, dataset.train) said to make a Dataset from arrays with dataset_from_arrays."""
    from onnxkit.data import load_dataset

    with pytest.raises(TypeError, match=r"^data must be the whole Dataset, not its 'train' Split: fit trains on its "
                                        r"train split, picks the best epoch on validation and scores test "
                                        r"\(data=dataset\)$"):
        fit(_mlp(), load_dataset("iris").train, tmp_path / "run", epochs=1)
    assert not (tmp_path / "run").exists()


def test_numpy_beside_a_traced_tensor(tmp_path):
    """np.exp(x) inside forward was numpy's 'loop of ufunc does not support argument 0 of type Tensor which has no
    callable exp method'; a numpy operand first (weights * x) keeps working as the Tensor's operator."""
    from onnxkit import runtime

    def built(step):
        class Net(nn.Module):
            def __init__(self):
                self.fc = nn.Linear(4, 4)

            def forward(self, x):
                return step(self.fc(x))

        nn.manual_seed(0)
        return nn.build(Net(), {"x": nn.Input(["b", 4])}, output_names=["y"])

    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    plain = runtime.load(built(lambda h: h)).predict(x)["y"]
    twice = np.full(4, 2, np.float32)
    for step in (lambda h: twice * h, lambda h: np.float32(2) * h, lambda h: h * twice, lambda h: np.float64(2) * h):
        np.testing.assert_allclose(runtime.load(built(step)).predict(x)["y"], 2 * plain, rtol=1e-6)
    np.testing.assert_allclose(runtime.load(built(lambda h: np.ones(4, np.float32) - h)).predict(x)["y"], 1 - plain,
                               rtol=1e-6)
    with pytest.raises(TypeError, match=r"^numpy's exp cannot run on an nn.Tensor, a symbolic value traced into the "
                                        r"graph: use nn.ops.exp\(x\) \(or a Tensor operator\) inside forward$"):
        built(np.exp)
    with pytest.raises(TypeError, match=r"^numpy's maximum cannot run on an nn.Tensor, .*: use nn.ops' functions"):
        built(lambda h: np.maximum(h, 0))


def test_build_model_takes_a_pathlib_path(tmp_path):
    """build_model(Path('net.py')) was "AttributeError: 'PosixPath' object has no attribute 'endswith'"."""
    from pathlib import Path

    from onnxkit import zoo

    (tmp_path / "my_net.py").write_text(
        "from onnxkit import nn\nfrom onnxkit.zoo import Recipe\n\n"
        "def recipe(width: int = 3) -> Recipe:\n"
        "    return Recipe(nn.Linear(4, width), {'x': nn.Input(['batch', 4])})\n")
    model = zoo.build_model(tmp_path / "my_net.py", width=5)
    assert model.graph.name == "my-net" and model.graph.output[0].type.tensor_type.shape.dim[1].dim_value == 5
    assert zoo.build_model(Path("iris-mlp")).graph.name == "iris-mlp"
    assert list(zoo.options(tmp_path / "my_net.py")) == ["width"]
    with pytest.raises(TypeError, match=r"^pass a zoo model's name or the path of a DSL .py file, not int$"):
        zoo.build_model(3)


def test_fit_evaluate_and_quantize_take_x_y_arrays(tmp_path):
    """fit(model, (X, y)), evaluate(model, (X_test, y_test)) and quantize(eval_data=(X, y)), as Keras's fit(x, y)
    and scikit-learn's score(X, y) take them, were TypeErrors telling the user to make a Dataset first."""
    from onnxkit.evaluate import evaluate
    from onnxkit.quantize import quantize
    from onnxkit.train import TrainingInterrupted
    from onnxkit.train.callbacks import Callback

    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 4)).astype(np.float32)
    y = np.argmax(x[:, :3], axis=1)
    names = np.array(["a", "b", "c"])[y]
    result = fit(_mlp(), (x, y), tmp_path / "run", epochs=3)
    same = fit(_mlp(), dataset_from_arrays("arrays", {"x": x}, y), tmp_path / "same", epochs=3)
    timeless = [[{k: v for k, v in r.items() if k != "seconds"} for r in run.history] for run in (result, same)]
    assert timeless[0] == timeless[1]  # the Dataset dataset_from_arrays makes, split by data_seed 0
    whole = evaluate(result.model_path, (x, y))
    named = evaluate(result.model_path, ({"x": x}, names))  # a dict by input name; class names as labels
    assert whole["examples"] == 120 and whole["confusion"] == named["confusion"]
    report = quantize(result.model_path, mode="dynamic", eval_data=(x, y), measure_latency=False).report
    assert report.accuracy["original"] == whole["accuracy"]

    class StopAfterOne(Callback):
        def on_epoch_end(self, trainer, record):
            raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted) as stopped:
        fit(_mlp(), (x, y), tmp_path / "stopped", epochs=3, callbacks=[StopAfterOne()])
    # it said fit(resume=...) alone, which is refused for data that was in memory
    assert str(stopped.value).endswith(f"continue with fit(resume={str(tmp_path / 'stopped')!r}, data=...), passing "
                                       "the same in-memory data again")
    assert fit(resume=tmp_path / "stopped", data=(x, y)).history[-1]["epoch"] == 3  # the same arrays again
