"""Interruption and resume: Ctrl-C or SIGTERM writes a checkpoint, a resumed run ends with the same weights as
an uninterrupted one, a NaN loss stops training and keeps the last good checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxkit.errors import OnnxkitError
from onnxkit.files import load_model
from onnxkit.train import TrainingInterrupted, fit
from onnxkit.train.run_directory import RunDirectory

pytestmark = pytest.mark.training


def mlp_with_batchnorm() -> onnx.ModelProto:
    """64 -> 32 (BatchNorm, ReLU) -> 10: optimizer state and running statistics both need resuming."""
    rng = np.random.default_rng(0)
    weights = {
        "fc1.weight": rng.normal(0, 0.2, (64, 32)),
        "fc1.bias": np.zeros(32),
        "bn.weight": np.ones(32),
        "bn.bias": np.zeros(32),
        "bn.running_mean": np.zeros(32),
        "bn.running_var": np.ones(32),
        "fc2.weight": rng.normal(0, 0.2, (32, 10)),
        "fc2.bias": np.zeros(10),
    }
    n = helper.make_node
    graph = helper.make_graph(
        [
            n("MatMul", ["x", "fc1.weight"], ["h0"]),
            n("Add", ["h0", "fc1.bias"], ["h1"]),
            n("BatchNormalization", ["h1", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"], ["h2"]),
            n("Relu", ["h2"], ["h3"]),
            n("MatMul", ["h3", "fc2.weight"], ["l0"]),
            n("Add", ["l0", "fc2.bias"], ["logits"]),
        ],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()],
    )
    return helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 17)])


SETTINGS = dict(
    data="digits", epochs=2, batch_size=32, grad_accumulation=2, schedule="cosine", warmup=3, lr=3e-3,
    seed=7, evaluate_test=False, device="cpu",
)


def weights(path) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in load_model(path).graph.initializer}


def test_interrupted_and_resumed_run_ends_with_the_same_weights(tmp_path):
    model = tmp_path / "mlp.onnx"
    onnx.save(mlp_with_batchnorm(), model)
    straight = fit(model, out_dir=tmp_path / "straight", **SETTINGS)

    def ctrl_c_at_step_7(record):
        if record["event"] == "step" and record["step"] == 7:
            os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C does; the loop finishes the step and checkpoints

    with pytest.raises(TrainingInterrupted) as stop:
        fit(model, out_dir=tmp_path / "resumed", callback=ctrl_c_at_step_7, **SETTINGS)
    assert stop.value.step == 7 and stop.value.epoch == 1 and stop.value.checkpoint.is_file()
    run = tmp_path / "resumed"
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"
    assert not (run / "model.onnx").exists()

    resumed = fit(resume=run)
    assert resumed.metrics["steps"] == straight.metrics["steps"] == 34  # 1079 / 32 -> 34 batches -> 17 steps/epoch
    a, b = weights(straight.model_path), weights(resumed.model_path)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert not np.array_equal(a["bn.running_mean"], 0)  # the statistics were trained and resumed too

    def losses(path):
        return [(r["event"], r["step"], r.get("loss"), r.get("val_loss")) for r in map(json.loads, path.open())]

    assert losses(run / "metrics.jsonl") == losses(tmp_path / "straight" / "metrics.jsonl")
    with pytest.raises(OnnxkitError, match="already finished"):
        fit(resume=run)


def test_a_stop_on_an_epochs_last_step_leaves_one_record_of_that_epoch_through_a_second_crash(tmp_path, monkeypatch):
    # Ctrl-C on epoch 2's last step, then a crash while the resumed run checkpointed after epoch 3 (after its metrics
    # were written): the next resume kept the ended epoch 2's record and wrote it again
    from onnxkit import zoo
    from onnxkit.train import trainer
    from onnxkit.train.callbacks import Callback

    monkeypatch.setattr(trainer, "FIRST_CHECKPOINT_SECONDS", 0.0)  # a checkpoint after epoch 3

    settings = dict(data="iris", epochs=4, batch_size=16)  # 90 training rows: 6 steps an epoch

    class CrashInCheckpoint(Callback):
        def on_checkpoint(self, trainer):
            raise RuntimeError("the machine went down")

    def ctrl_c_at_step_12(record):
        if record["event"] == "step" and record["step"] == 12:
            os.kill(os.getpid(), signal.SIGINT)

    straight = fit(zoo.build_model("iris-mlp"), out_dir=tmp_path / "straight", **settings)
    run = tmp_path / "run"
    with pytest.raises(TrainingInterrupted):
        fit(zoo.build_model("iris-mlp"), out_dir=run, callback=ctrl_c_at_step_12, **settings)
    with pytest.raises(RuntimeError, match="went down"):
        fit(resume=run, callbacks=[CrashInCheckpoint()])
    assert [r["epoch"] for r in map(json.loads, (run / "metrics.jsonl").open()) if r["event"] == "epoch"] == [1, 2]
    resumed = fit(resume=run)
    assert [r["epoch"] for r in resumed.history if r["event"] == "epoch"] == [1, 2, 3, 4]
    epochs = [r["epoch"] for r in map(json.loads, (run / "metrics.jsonl").open()) if r["event"] == "epoch"]
    assert epochs == [1, 2, 3, 4]
    a, b = weights(straight.model_path), weights(resumed.model_path)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def interrupted_cli_run(tmp_path, stop: signal.Signals, *options: str) -> tuple[Path, int, str]:
    """`onnxkit train` in a subprocess, sent `stop` once metrics.jsonl has a line: (run, exit status, stderr)."""
    model, run = tmp_path / "mlp.onnx", tmp_path / "run"
    onnx.save(mlp_with_batchnorm(), model)
    command = [sys.executable, "-m", "onnxkit", "train", str(model), "--data", "digits", *options, "-o", str(run)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (run / "metrics.jsonl").is_file() or not (run / "metrics.jsonl").read_text():
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.05)
        process.send_signal(stop)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    return run, process.returncode, err


def test_ctrl_c_on_the_command_line_saves_a_checkpoint(tmp_path):
    run, status, err = interrupted_cli_run(tmp_path, signal.SIGINT, "--batch-size", "4", "--epochs", "1000")
    assert status == 130, err
    assert "checkpoint saved to" in err and f"onnxkit train --resume {run}" in err
    assert RunDirectory(run).last_checkpoint.is_file()
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"


def test_sigterm_on_the_command_line_saves_a_checkpoint_and_the_run_resumes(tmp_path):
    # what a scheduler or `kill` sends: handled like Ctrl-C; 135 steps per epoch, the signal sent once the first
    # checkpoint (after 1 s of training) wrote metrics.jsonl's first lines
    run, status, err = interrupted_cli_run(tmp_path, signal.SIGTERM, "--batch-size", "8", "--steps", "40000",
                                           "--quiet")
    assert status == 143, err
    assert "checkpoint saved to" in err and f"onnxkit train --resume {run}" in err
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"
    step = json.loads((run / "checkpoints" / "last.json").read_text())["step"]
    assert 135 <= step < 40000 and f"after step {step}:" in err
    steps = [r["step"] for r in map(json.loads, (run / "metrics.jsonl").open()) if r["event"] == "step"]
    assert steps == list(range(1, step + 1))  # every line up to the checkpoint, none after it

    resumed = fit(resume=run)
    assert resumed.metrics["steps"] == 40000 and resumed.model_path.is_file()
    steps = [r["step"] for r in map(json.loads, (run / "metrics.jsonl").open()) if r["event"] == "step"]
    assert steps == list(range(1, 40001))
    assert json.loads((run / "run.json").read_text())["status"] == "completed"


@pytest.mark.parametrize("first_checkpoint_seconds", [0.0, 1.0])
def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, run_cli, monkeypatch,
                                                                    first_checkpoint_seconds):
    from onnxkit.train import trainer

    monkeypatch.setattr(trainer, "FIRST_CHECKPOINT_SECONDS", first_checkpoint_seconds)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y0"]), helper.make_node("Add", ["y0", "b"], ["y"])],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])],
        [numpy_helper.from_array(np.zeros(shape, np.float32), name) for name, shape in (("w", (8, 1)), ("b", (1,)))],
    )
    model = tmp_path / "linear.onnx"
    onnx.save(helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 17)]), model)
    x = np.random.default_rng(0).normal(size=(100, 8)).astype(np.float32)
    np.savez(tmp_path / "data.npz", x=x, y=x.sum(axis=1))
    run = tmp_path / "run"
    # one full-batch step per epoch with a learning rate that makes SGD diverge: inf/nan after a few epochs
    result = run_cli("train", model, "--data", tmp_path / "data.npz", "--loss", "mse", "--optimizer", "sgd",
                     "--lr", "1e9", "--batch-size", "100", "--epochs", "20", "-o", run)
    assert result.code == 1
    assert "error: training stopped: the loss became" in result.err, result.err
    assert "--lr" in result.err
    if first_checkpoint_seconds:  # it diverged in its first second: no checkpoint, and the failed run is not kept
        assert "; it had not yet written a checkpoint. Lower the learning rate" in result.err, result.err
        assert not run.exists()
        return
    assert "the last good checkpoint is" in result.err
    assert not (run / "model.onnx").exists()
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "failed" and "loss became" in info["error"]
    finished = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    assert all(np.isfinite(r["loss"]) for r in finished if r["event"] == "step")
    from onnxkit.train.backends import get_backend

    saved = get_backend().checkpoint_parameters(RunDirectory(run).last_checkpoint)
    assert all(np.isfinite(v).all() for v in saved.values())


def test_resuming_a_finished_run_says_so_before_reading_its_data(tmp_path, monkeypatch):
    # the data was loaded, tokenized and (head-only) run through the frozen encoder before the refusal:
    # minutes for a pretrained model over bbc-news, to be told there was nothing to do
    run = tmp_path / "run"
    fit(mlp_with_batchnorm(), "digits", run, steps=1, batch_size=32, evaluate_test=False, device="cpu")

    def no_data(*args, **kwargs):
        raise AssertionError("the data was read")

    monkeypatch.setattr(sys.modules["onnxkit.train.fit"], "load_dataset", no_data)
    with pytest.raises(OnnxkitError) as refused:
        fit(resume=run)
    assert str(refused.value) == f"the run in {run} has already finished; start a new run to train more"


def test_a_resumed_run_says_where_it_goes_on(tmp_path, capsys):
    # the stop said 'interrupted in epoch 3 after step 14'; the resume began with the same 'training ...' line as a
    # new run, so whether it had picked the run up, and where, showed only in the epoch numbers that followed
    from onnxkit import zoo

    settings = dict(data="iris", epochs=4, batch_size=16, device="cpu")  # 90 training rows: 6 steps an epoch

    def ctrl_c_at_step_14(record):
        if record["event"] == "step" and record["step"] == 14:
            os.kill(os.getpid(), signal.SIGINT)

    run = tmp_path / "run"
    with pytest.raises(TrainingInterrupted) as stop:
        fit(zoo.build_model("iris-mlp"), out_dir=run, callback=ctrl_c_at_step_14, **settings)
    saved = json.loads(RunDirectory(run).loop_state.read_text())
    assert (stop.value.epoch, stop.value.step) == (saved["epoch"] + 1, saved["step"]) == (3, 14)
    capsys.readouterr()
    fit(resume=run, quiet=False)
    lines = capsys.readouterr().err.splitlines()
    said = f"resuming the run in {run} in epoch 3 after step 14, from its last checkpoint"
    assert said in lines and lines.index(said) < min(i for i, x in enumerate(lines) if x.startswith("training "))
    epochs = [r["epoch"] for r in map(json.loads, (run / "metrics.jsonl").open()) if r["event"] == "epoch"]
    assert epochs == [1, 2, 3, 4]  # it did go on in epoch 3


def test_a_run_killed_after_writing_its_model_is_completed_by_resume(tmp_path):
    # a kill -9 between model.onnx and run.json's 'completed' left a run that said 'running' forever:
    # resume refused it as finished, and -o on it said to resume it
    run = tmp_path / "run"
    done = fit(mlp_with_batchnorm(), "digits", run, steps=2, batch_size=32, device="cpu")
    model = (run / "model.onnx").read_bytes()
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "status": "running", "result": None}))
    (run / "curves.svg").unlink()  # a kill before the plot too: the resumed run completed without one
    resumed = fit(resume=run)
    assert resumed.metrics == done.metrics and (run / "model.onnx").read_bytes() == model
    assert json.loads((run / "run.json").read_text())["status"] == "completed"
    assert (run / "curves.svg").read_text().startswith("<svg ")


def test_resume_refuses_data_other_than_the_runs(tmp_path):
    # a run on an in-memory Dataset resumed on other arrays, or a named one on any data= given, trained on it silently
    from onnxkit import zoo
    from onnxkit.data import dataset_from_arrays, load_dataset

    def stop_after_the_first_epoch(record):
        if record.get("event") == "epoch":
            raise KeyboardInterrupt

    iris = load_dataset("iris")
    x = np.concatenate([iris.split(s).inputs["x"] for s in ("train", "validation", "test")])
    y = np.concatenate([iris.split(s).labels for s in ("train", "validation", "test")])
    flowers = dataset_from_arrays("flowers", {"x": x}, y)
    for data, run in ((flowers, tmp_path / "memory"), ("iris", tmp_path / "named")):
        with pytest.raises(TrainingInterrupted):
            fit(zoo.build_model("iris-mlp"), data, run, epochs=3, callback=stop_after_the_first_epoch)
    scaled = dataset_from_arrays("flowers", {"x": x * 100}, y)
    with pytest.raises(OnnxkitError, match=r"^data is not the Dataset this run trained on \('flowers'\): its arrays "
                                           r"differ; resume with the same Dataset"):
        fit(resume=tmp_path / "memory", data=scaled)
    for other in ("digits", flowers):
        with pytest.raises(OnnxkitError, match=r"^this run trained on iris; resume it without data="):
            fit(resume=tmp_path / "named", data=other)
    assert fit(resume=tmp_path / "memory", data=dataset_from_arrays("flowers", {"x": x}, y)).metrics["epochs"] == 3
    assert fit(resume=tmp_path / "named", data="iris").metrics["epochs"] == 3


def test_a_run_that_lost_its_checkpoints_is_refused_in_one_line(tmp_path):
    # it restarted at epoch 1, trained an epoch, then failed: "cannot write .../checkpoints/best.ckpt"
    import shutil

    from onnxkit import zoo

    def stop_after_the_first_epoch(record):
        if record.get("event") == "epoch":
            raise KeyboardInterrupt

    run = tmp_path / "run"
    with pytest.raises(TrainingInterrupted):
        fit(zoo.build_model("iris-mlp"), "iris", run, epochs=3, callback=stop_after_the_first_epoch)
    shutil.rmtree(run / "checkpoints")
    metrics = (run / "metrics.jsonl").read_bytes()
    with pytest.raises(OnnxkitError, match=rf"^{run} has lost its checkpoints \({run / 'checkpoints'} is missing\); "
                                           r"the run cannot be resumed, start a new one$"):
        fit(resume=run)
    assert (run / "metrics.jsonl").read_bytes() == metrics and not (run / "checkpoints").exists()


def test_a_new_run_stopped_before_it_began_leaves_nothing(tmp_path, monkeypatch):
    # a Ctrl-C while the training graphs were built left artifacts/, checkpoints/ and run.lock, and no run.json
    # (resume said to start it again); one stopped once it began stays, to resume (test_run_survival)
    from onnxkit import zoo

    fit_module = sys.modules["onnxkit.train.fit"]  # the module: the package's `fit` is the function

    def stopped(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fit_module, "_train", stopped)
    with pytest.raises(KeyboardInterrupt):
        fit(zoo.build_model("iris-mlp"), "iris", tmp_path / "run", epochs=1)
    assert not (tmp_path / "run").exists()
