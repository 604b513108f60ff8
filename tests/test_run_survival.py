"""Runs and files that survive: the run-folder lock, a run killed before its first checkpoint,
checkpoint checksums (the `training` ones run on both backends), SIGTERM as Ctrl-C in every
command, quantization's scratch folder, atomic writes' temporary files after a kill -9, and outputs
that honour the umask."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import onnx
import pytest

from onnxkit import zoo
from onnxkit.errors import OnnxkitError
from onnxkit.files import load_model
from onnxkit.train import TrainingInterrupted, fit, trainer
from onnxkit.train.callbacks import Callback
from onnxkit.train.run_directory import RunDirectory


@pytest.fixture
def iris(tmp_path):
    path = tmp_path / "iris.onnx"
    onnx.save(zoo.build_model("iris-mlp"), path)
    return path


class Killed(BaseException):
    """What SIGKILL looks like from inside: nothing catches it and nothing gets written."""


class KillAtStep(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer, record) -> None:  # type: ignore[no-untyped-def]
        if record["step"] == self.step:
            raise Killed


@pytest.mark.training  # on both backends (make test-ort)
def test_a_live_run_folder_is_locked(iris, tmp_path, run_cli):
    run = tmp_path / "run"
    run.mkdir()
    with RunDirectory(run).lock(new=True):  # another process got here first and is building its graphs
        result = run_cli("train", iris, "--data", "iris", "--quiet", "-o", run)
    assert result.code == 1 and "is in use by a training run that is still going" in result.err
    assert [p.name for p in run.rglob("*") if p.is_file()] == ["run.lock"]  # it wrote nothing
    assert run_cli("train", iris, "--data", "iris", "--epochs", "1", "--quiet", "-o", run).code == 0  # released


@pytest.mark.training  # on both backends (make test-ort)
def test_a_run_killed_before_its_first_checkpoint_restarts(iris, tmp_path, run_cli):
    run = tmp_path / "run"
    with pytest.raises(Killed):
        fit(iris, "iris", run, epochs=2, batch_size=16, callbacks=[KillAtStep(2)])
    assert json.loads((run / "run.json").read_text())["status"] == "running"  # as a kill leaves it
    assert not RunDirectory(run).has_checkpoint()

    again = run_cli("train", iris, "--data", "iris", "-o", run)
    assert again.code == 1 and f"restart it with --resume {run}" in again.err
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"  # seen to be dead

    done = fit(resume=run)
    assert done.metrics["epochs"] == 2
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "completed" and info["config"]["batch_size"] == 16
    steps = [r["step"] for r in map(json.loads, (run / "metrics.jsonl").open()) if r["event"] == "step"]
    assert steps == list(range(1, done.metrics["steps"] + 1))  # trained again from the start, once


@pytest.mark.training  # on both backends (make test-ort)
def test_ctrl_c_or_sigterm_before_the_loop_marks_the_run_interrupted(iris, tmp_path):
    class StopBeforeTheFirstStep(Callback):
        def on_train_begin(self, trainer) -> None:  # type: ignore[no-untyped-def]
            raise KeyboardInterrupt  # what the command line's SIGTERM handler raises

    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        fit(iris, "iris", run, epochs=1, callbacks=[StopBeforeTheFirstStep()])
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"
    assert fit(resume=run).metrics["epochs"] == 1


@pytest.mark.training  # on both backends (make test-ort)
def test_checkpoints_carry_their_checksum(iris, tmp_path, run_cli):
    def ctrl_c_after_the_first_epoch(record):  # type: ignore[no-untyped-def]
        if record["event"] == "epoch":
            os.kill(os.getpid(), signal.SIGINT)

    run = tmp_path / "run"
    with pytest.raises(TrainingInterrupted):
        fit(iris, "iris", run, epochs=3, callback=ctrl_c_after_the_first_epoch)
    checkpoint = RunDirectory(run).last_checkpoint
    state = json.loads((run / "checkpoints" / "last.json").read_text())
    assert state["checkpoint_sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()

    data = bytearray(checkpoint.read_bytes())
    data[len(data) // 2] ^= 0x10  # one bit, inside a tensor: still a readable safetensors file
    checkpoint.write_bytes(bytes(data))
    result = run_cli("train", "--resume", run)
    assert result.code == 1
    assert result.err == f"error: {checkpoint} does not match its checksum (damaged, or the run was killed " \
                         "while checkpointing); the run cannot be resumed, start a new one\n"
    with pytest.raises(OnnxkitError, match="does not match its checksum"):
        fit(resume=run)


def test_sigterm_stops_any_command_like_ctrl_c(tmp_path, run_cli):
    recipe = tmp_path / "slow_net.py"
    recipe.write_text(
        "import os, signal\n"
        "def recipe(width: int = 4):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)  # as if `kill` arrived while building\n"
    )
    before = signal.getsignal(signal.SIGTERM)
    result = run_cli("build", recipe, "-o", tmp_path / "net.onnx")
    assert result.code == 143 and result.err.strip() == "error: stopped by SIGTERM"
    assert not (tmp_path / "net.onnx").exists()
    assert signal.getsignal(signal.SIGTERM) is before  # the command's handler was only for its run


def _scratch_folders(folder):  # type: ignore[no-untyped-def]
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".onnxkit-quantize-"))


def test_quantize_scratch_lives_beside_the_output_and_goes_away(tmp_path):
    cnn = tmp_path / "cnn.onnx"
    onnx.save(zoo.build_model("digits-cnn"), cnn)
    out = tmp_path / "out"
    out.mkdir()
    stale = out / ".onnxkit-quantize-999999999-left"  # by a process that was killed hard
    stale.mkdir()
    (stale / "model.onnx").write_bytes(b"x" * 1000)
    command = [sys.executable, "-m", "onnxkit", "quantize", str(cnn), "-o", str(out / "q.onnx"), "--mode", "auto",
               "--eval", "digits-images"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    mine = f".onnxkit-quantize-{process.pid}-"
    try:
        deadline = time.monotonic() + 60
        while not any(name.startswith(mine) for name in _scratch_folders(out)):
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.01)
        assert len(_scratch_folders(out)) == 1 and not stale.exists()  # the stale one was swept first
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 143, err
    assert err.strip().splitlines()[-1] == "error: stopped by SIGTERM"
    assert sorted(p.name for p in out.iterdir()) == []  # no scratch folder, no half-written output


def _killed_hard(script: str, target: Path, after: float = 0.0) -> tuple[str, int]:
    """Run `script` (given `target` as argv[1]) until it prints a line, `after` seconds more, then SIGKILL it (no
    cleanup runs); the line and its process id."""
    process = subprocess.Popen([sys.executable, "-c", script, str(target)], stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline().strip()
        time.sleep(after)
    finally:
        process.kill()
        process.communicate()
    return line, process.pid


def test_a_write_killed_hard_leaves_a_temporary_file_the_next_write_sweeps(tmp_path, run_cli):
    writer = (
        "import sys, time\n"
        "from onnxkit.files import atomic_path\n"
        "with atomic_path(sys.argv[1]) as tmp:\n"
        "    tmp.write_bytes(b'x' * 1000)\n"
        "    print(tmp.name, flush=True)\n"
        "    time.sleep(60)\n"
    )
    name, pid = _killed_hard(writer, tmp_path / "bert.onnx")  # mid-write
    left = tmp_path / name
    assert left.is_file() and left.name.startswith(f".bert.onnx.onnxkit-{pid}-")
    assert run_cli("build", "iris-mlp", "-o", tmp_path / "iris.onnx").code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iris.onnx"]


def test_a_checkpoint_write_killed_hard_leaves_nothing_the_next_write_does_not_sweep(tmp_path, run_cli):
    # safetensors' save_file wrote a .tmpXXXXXX of its own beside the checkpoint, which no sweep removed
    writer = (
        "import sys\n"
        "import numpy as np\n"
        "from onnxkit.files import write_safetensors\n"
        "state = {f'w{i}': np.ones(2_000_000, np.float32) for i in range(8)}\n"
        "print('ready', flush=True)\n"
        "while True:\n"
        "    write_safetensors(sys.argv[1], state)\n"
    )
    ready, _ = _killed_hard(writer, tmp_path / "last.ckpt", after=1.5)  # a few 64 MB writes: mostly writing
    assert ready == "ready"
    assert run_cli("build", "iris-mlp", "-o", tmp_path / "iris.onnx").code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) in (["iris.onnx"], ["iris.onnx", "last.ckpt"])


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_outputs_honour_the_umask(tmp_path, run_cli, umask, mode):
    """Every file a run writes too: safetensors 0.8 writes its files 0600 (checkpoints, initial state)."""
    previous = os.umask(umask)
    try:
        assert run_cli("build", "iris-mlp", "-o", tmp_path / "iris.onnx").code == 0
        result = run_cli("train", tmp_path / "iris.onnx", "--data", "iris", "--steps", "2", "-o", tmp_path / "run")
        assert result.code == 0, result.err
    finally:
        os.umask(previous)
    files = [tmp_path / "iris.onnx", *(p for p in (tmp_path / "run").rglob("*") if p.is_file())]
    assert any(p.suffix in (".ckpt", ".safetensors") for p in files)
    assert {str(p.relative_to(tmp_path)): oct(stat.S_IMODE(p.stat().st_mode)) for p in files if
            stat.S_IMODE(p.stat().st_mode) != mode} == {}


@pytest.mark.training
def test_a_fixed_batch_model_trains_on_whole_batches(tmp_path, run_cli):
    fixed = zoo.build_model("iris-mlp")
    for value in [*fixed.graph.input, *fixed.graph.output]:
        value.type.tensor_type.shape.dim[0].dim_value = 32  # as exported from PyTorch with a [32, 4] sample
    onnx.save(fixed, tmp_path / "fixed.onnx")
    run = tmp_path / "run"
    result = run_cli("train", tmp_path / "fixed.onnx", "--data", "iris", "--batch-size", "32", "--epochs", "3",
                     "--lr", "0.01", "--quiet", "-o", run)
    assert result.code == 0, result.err
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["event"] == "epoch"]
    assert [r["step"] for r in epochs] == [2, 4, 6]  # 90 training rows: two whole batches of 32 an epoch
    assert all("val_loss" in r for r in epochs)  # 30 validation rows, run as one padded batch
    assert json.loads((run / "run.json").read_text())["result"]["test"]["examples"] == 30
    refused = run_cli("train", tmp_path / "fixed.onnx", "--data", "iris", "--batch-size", "16", "-o", tmp_path / "b")
    assert "fixed batch size of 32; use --batch-size 32 or export" in refused.err



def test_a_disk_that_fills_mid_run_says_how_to_go_on_and_cuts_no_metrics_line(tmp_path, iris, monkeypatch):
    """The error named the full disk but not that the run could go on; a metrics flush cut short left half a
    JSON line in metrics.jsonl."""
    import errno

    from onnxkit.files import DiskError
    from onnxkit.train.callbacks import MetricsWriter

    def no_space(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    class DiskFills(Callback):
        def on_epoch_end(self, trainer, record):  # type: ignore[no-untyped-def]
            if record["epoch"] == 2:  # after the first epoch's checkpoint: every later file fails to land
                monkeypatch.setattr(os, "replace", no_space)

    monkeypatch.setattr(trainer, "FIRST_CHECKPOINT_SECONDS", 0.0)  # a checkpoint after the first epoch
    run = tmp_path / "run"
    with pytest.raises(DiskError, match=r"No space left on device; free some space or write somewhere else; then "
                                        rf"continue the run from its last checkpoint with resume={run}$"):
        fit(iris, "iris", run, epochs=10, callbacks=[DiskFills()])
    monkeypatch.undo()
    assert fit(resume=run).metrics["epochs"] == 10

    class HalfWritten:  # a disk that takes 10 bytes of the next write, then is full
        def __init__(self, file):  # type: ignore[no-untyped-def]
            self.file, self.room = file, 10

        def write(self, data):  # type: ignore[no-untyped-def]
            if not self.room:
                no_space()
            self.room = 0
            return self.file.write(data[:10])

        def __getattr__(self, name):  # type: ignore[no-untyped-def]
            return getattr(self.file, name)

    before = (run / "metrics.jsonl").read_bytes()
    writer = MetricsWriter(RunDirectory(run), [])
    writer.on_train_begin(None)  # type: ignore[arg-type]
    writer._file = HalfWritten(writer._file)
    writer.on_step_end(None, {"event": "step", "step": 99, "loss": 0.5})  # type: ignore[arg-type]
    with pytest.raises(DiskError, match="metrics.jsonl: No space left on device"):
        writer.flush()
    assert (run / "metrics.jsonl").read_bytes() == before


def test_a_callback_that_exits_leaves_the_run_marked_interrupted(tmp_path, iris):
    class Exit(Callback):
        def on_epoch_end(self, trainer, record):  # type: ignore[no-untyped-def]
            sys.exit(3)

    with pytest.raises(SystemExit):
        fit(iris, "iris", tmp_path / "run", epochs=4, callbacks=[Exit()])
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "interrupted"  # was "running"
    assert fit(resume=tmp_path / "run").metrics["epochs"] == 4


@pytest.mark.training  # on both backends (make test-ort)
@pytest.mark.parametrize("killed_at", [1, 2], ids=["first-checkpoint", "second-checkpoint"])
def test_a_kill_between_a_checkpoints_two_files_leaves_the_one_before_whole(iris, tmp_path, monkeypatch, killed_at):
    """The backend's file was renamed over the last checkpoint's, then the loop state written: a kill -9 between the
    two left a checkpoint that did not match its checksum, and nothing to resume (or, at the first, a run that
    --resume called incomplete and -o called a run to resume)."""
    settings = dict(data="iris", epochs=6, batch_size=16, seed=1, evaluate_test=False)
    straight = fit(iris, out_dir=tmp_path / "straight", **settings)
    completed = RunDirectory.save_loop_state
    calls = []

    def killed(self, saved, checkpoint):  # type: ignore[no-untyped-def]
        calls.append(checkpoint.name)
        if len(calls) == killed_at:
            raise Killed  # the backend's file is written, its loop state is not
        completed(self, saved, checkpoint)

    monkeypatch.setattr(RunDirectory, "save_loop_state", killed)
    monkeypatch.setattr(trainer, "FIRST_CHECKPOINT_SECONDS", 0.0)  # checkpoints after the first epoch and the last
    with pytest.raises(Killed):
        fit(iris, out_dir=tmp_path / "run", **settings)
    monkeypatch.undo()
    assert RunDirectory(tmp_path / "run").has_checkpoint() == (killed_at > 1)
    resumed = fit(resume=tmp_path / "run")
    for a, b in zip(load_model(straight.model_path).graph.initializer, load_model(resumed.model_path).graph.initializer,
                    strict=True):
        assert a.raw_data == b.raw_data, a.name
    assert len(list((tmp_path / "run" / "checkpoints").glob("last*.ckpt"))) == 1  # the other slot went
