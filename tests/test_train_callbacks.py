"""The trainer's callback hooks: their order, when metrics.jsonl is written, and a callback that
stops training or raises KeyboardInterrupt."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import pytest

from onnxkit import zoo
from onnxkit.errors import OnnxkitError
from onnxkit.train import TrainingInterrupted, fit
from onnxkit.train import trainer as trainer_module
from onnxkit.train.callbacks import Callback, EarlyStopping, MetricsWriter
from onnxkit.train.run_directory import RunDirectory

pytestmark = pytest.mark.training

SETTINGS = dict(data="iris", batch_size=30, epochs=3, evaluate_test=False, device="cpu")  # 90 examples: 3 steps


class Recorder(Callback):
    """Notes every hook call, and what metrics.jsonl holds at each optimizer step."""

    def __init__(self, stop_after_epoch: int | None = None) -> None:
        self.calls: list[str] = []
        self.lines_at_step: dict[int, int] = {}
        self.stop_after_epoch = stop_after_epoch

    def on_train_begin(self, trainer) -> None:
        self.calls.append("train_begin")

    def on_epoch_begin(self, trainer, epoch: int) -> None:
        self.calls.append(f"epoch_begin {epoch}")

    def on_batch_end(self, trainer, loss: float) -> None:
        self.calls.append("batch")

    def on_step_end(self, trainer, record) -> None:
        self.calls.append(f"step {record['step']}")
        self.lines_at_step[record["step"]] = len(trainer.run.metrics.read_text().splitlines())

    def on_epoch_end(self, trainer, record) -> None:
        self.calls.append(f"epoch_end {record['epoch']} best {record['best_epoch']}")
        if record["epoch"] == self.stop_after_epoch:
            trainer.stop_training = True

    def on_checkpoint(self, trainer) -> None:
        self.calls.append("checkpoint")

    def on_train_end(self, trainer, status: str) -> None:
        self.calls.append(f"train_end {status}")


def test_hooks_run_in_order_and_metrics_are_written_at_epoch_ends(tmp_path, monkeypatch):
    monkeypatch.setattr(MetricsWriter, "FLUSH_SECONDS", 0.0)  # every epoch end is due a write
    monkeypatch.setattr(trainer_module, "FIRST_CHECKPOINT_SECONDS", 0.0)  # a checkpoint after the first epoch
    recorder = Recorder()
    fit(zoo.build_model("iris-mlp"), out_dir=tmp_path / "run", callbacks=[recorder], **SETTINGS)
    calls = [c for c in recorder.calls if c != "checkpoint"]
    bests = [c.split()[-1] for c in calls if c.startswith("epoch_end")]
    expected = ["train_begin"]
    for e in range(3):
        steps = [x for i in range(3) for x in ("batch", f"step {3 * e + i + 1}")]
        expected += [f"epoch_begin {e + 1}", *steps, f"epoch_end {e + 1} best {bests[e]}"]
    assert calls == [*expected, "train_end completed"]
    # checkpoints: after the first epoch and the last; epochs this short skip most others
    assert recorder.calls[recorder.calls.index("epoch_end 1 best 1") + 1] == "checkpoint"
    assert recorder.calls[-2:] == ["checkpoint", "train_end completed"]
    # a step's line reaches the file when its epoch ends: 3 steps + 1 epoch line per epoch
    assert recorder.lines_at_step == {1: 0, 2: 0, 3: 0, 4: 4, 5: 4, 6: 4, 7: 8, 8: 8, 9: 8}
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 12


@pytest.mark.parametrize("flush_seconds", [0.0, 1e9])
def test_keys_a_callback_adds_to_an_epochs_record_reach_its_line(tmp_path, monkeypatch, flush_seconds):
    # the writer wrote an epoch's line in its own on_epoch_end, before later callbacks had added theirs
    monkeypatch.setattr(MetricsWriter, "FLUSH_SECONDS", flush_seconds)

    class Doubled(Callback):
        def on_epoch_end(self, trainer, record) -> None:
            record["double_loss"] = 2 * record["train_loss"]

    result = fit(zoo.build_model("iris-mlp"), out_dir=tmp_path / "run", callbacks=[Doubled()], **SETTINGS)
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    epochs = [r for r in lines if r["event"] == "epoch"]
    assert len(epochs) == 3 and all(r["double_loss"] == 2 * r["train_loss"] for r in epochs)
    assert epochs == json.loads(json.dumps(result.history))


def test_a_run_shorter_than_a_second_checkpoints_and_writes_metrics_only_at_its_end(tmp_path, monkeypatch):
    # a checkpoint costs ~1% of a 0.3 s run (a fresh process's first one, ~3 ms): none comes before 1 s of training,
    # nor metrics.jsonl lines (recorded epochs mean a checkpoint was written); a run killed sooner starts again
    monkeypatch.setattr(MetricsWriter, "FLUSH_SECONDS", 0.0)  # every epoch start after a checkpoint is due a write
    recorder = Recorder()
    fit(zoo.build_model("iris-mlp"), out_dir=tmp_path / "run", callbacks=[recorder], **SETTINGS)
    assert recorder.calls.count("checkpoint") == 1 and recorder.calls[-2:] == ["checkpoint", "train_end completed"]
    assert set(recorder.lines_at_step.values()) == {0}
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 12


def test_the_first_checkpoint_comes_after_the_first_epoch_that_ends_a_second_into_training(tmp_path, monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(trainer_module.time, "perf_counter", lambda: clock[0])

    class Ticking(Recorder):
        def on_step_end(self, trainer, record) -> None:
            super().on_step_end(trainer, record)
            clock[0] += 0.2  # 0.6 s an epoch

    recorder = Ticking()
    fit(zoo.build_model("iris-mlp"), out_dir=tmp_path / "run", callbacks=[recorder], **SETTINGS)
    # 0.6 s at epoch 1's end: none; 1.2 s at epoch 2's: the first; then one after the last
    events = [c.split(" best")[0] for c in recorder.calls if c.startswith("epoch_end") or c == "checkpoint"]
    assert events == ["epoch_end 1", "epoch_end 2", "checkpoint", "epoch_end 3", "checkpoint"]


def test_metrics_of_short_epochs_wait_for_a_checkpoint_or_the_end(tmp_path, monkeypatch):
    monkeypatch.setattr(MetricsWriter, "FLUSH_SECONDS", 1e9)  # no epoch end is due a write
    monkeypatch.setattr(trainer_module, "CHECKPOINT_SHARE", 1e-9)  # nor a checkpoint, however slow the machine
    monkeypatch.setattr(trainer_module, "FIRST_CHECKPOINT_SECONDS", 0.0)  # but the first, after epoch 1
    recorder = Recorder()
    fit(zoo.build_model("iris-mlp"), out_dir=tmp_path / "run", callbacks=[recorder], **SETTINGS)
    # the first checkpoint (after epoch 1) writes epoch 1's 4 lines; the rest come when training stops
    assert recorder.lines_at_step == {1: 0, 2: 0, 3: 0, **{step: 4 for step in range(4, 10)}}
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 12


def test_a_callback_can_stop_training(tmp_path):
    recorder = Recorder(stop_after_epoch=1)
    result = fit(zoo.build_model("iris-mlp"), out_dir=tmp_path / "run", callbacks=[recorder], **SETTINGS)
    assert result.metrics["epochs"] == 1 and result.metrics["steps"] == 3
    assert recorder.calls[-2:] == ["checkpoint", "train_end completed"]
    assert json.loads((tmp_path / "run" / "checkpoints" / "last.json").read_text())["done"] is True
    # it stopped early, as EarlyStopping's stop does: in the result and in run.json
    assert result.stopped_early is True
    assert json.loads((tmp_path / "run" / "run.json").read_text())["stopped_early"] is True
    ran = fit(zoo.build_model("iris-mlp"), out_dir=tmp_path / "all", callbacks=[Recorder()], **SETTINGS)
    assert ran.metrics["epochs"] == 3 and ran.stopped_early is False
    assert json.loads((tmp_path / "all" / "run.json").read_text())["stopped_early"] is False


class StopAtStep(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer, record) -> None:
        if record["step"] == self.step:
            trainer.stop_training = True


def test_a_stop_asked_for_mid_epoch_ends_that_epoch_after_the_step(tmp_path):
    result = fit(zoo.build_model("iris-mlp"), out_dir=tmp_path / "run", callbacks=[StopAtStep(5)], **SETTINGS)
    assert result.metrics["steps"] == 5 and result.metrics["epochs"] == 2 and result.stopped_early is True
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in records if r["event"] == "epoch"][-1]
    assert last["epoch"] == 2 and last["step"] == 5 and "val_loss" in last  # the partial epoch is validated
    assert json.loads((tmp_path / "run" / "checkpoints" / "last.json").read_text())["done"] is True


class StopAtBatch(Callback):
    """At micro-batch `batch` (1-based, counted over the run): raises KeyboardInterrupt or sends the
    process a real SIGINT; with `again`, raises KeyboardInterrupt once more at the checkpoint after it."""

    def __init__(self, batch: int, how: str, again: bool = False) -> None:
        self.batch, self.how, self.again = batch, how, again
        self.seen, self.status = 0, None

    def on_batch_end(self, trainer, loss: float) -> None:
        self.seen += 1
        if self.seen == self.batch:
            if self.how == "raise":
                raise KeyboardInterrupt
            os.kill(os.getpid(), signal.SIGINT)

    def on_checkpoint(self, trainer) -> None:
        if self.again and self.seen >= self.batch:
            raise KeyboardInterrupt

    def on_train_end(self, trainer, status: str) -> None:
        self.status = status


@pytest.mark.parametrize("how", ["raise", "signal"])
def test_a_keyboard_interrupt_in_a_callback_stops_as_ctrl_c_does(tmp_path, how):
    # 3 batches a step: stopped in the middle of epoch 2's only step, it finishes that step, checkpoints
    # and raises TrainingInterrupted, as a real Ctrl-C there does; a resume trains the rest
    stop = StopAtBatch(5, how)
    with pytest.raises(KeyboardInterrupt) as caught:  # a raw one would otherwise end the pytest session
        fit(zoo.build_model("iris-mlp"), out_dir=tmp_path / "run", callbacks=[stop], grad_accumulation=3, **SETTINGS)
    assert isinstance(caught.value, TrainingInterrupted)
    assert (caught.value.epoch, caught.value.step, caught.value.signum) == (2, 2, signal.SIGINT)
    assert caught.value.checkpoint == RunDirectory(tmp_path / "run").last_checkpoint
    assert json.loads((tmp_path / "run" / "checkpoints" / "last.json").read_text())["step"] == 2
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "interrupted"
    assert stop.status == "interrupted"
    done = fit(resume=tmp_path / "run", quiet=True)
    assert (done.metrics["epochs"], done.metrics["steps"]) == (3, 3)


def test_a_second_keyboard_interrupt_in_a_callback_stops_at_once(tmp_path):
    # after the first stop, another KeyboardInterrupt (a second Ctrl-C) is not held back for a checkpoint
    stop = StopAtBatch(2, "raise", again=True)
    with pytest.raises(KeyboardInterrupt) as caught:
        fit(zoo.build_model("iris-mlp"), out_dir=tmp_path / "run", callbacks=[stop], **SETTINGS)
    assert type(caught.value) is KeyboardInterrupt
    assert not RunDirectory(tmp_path / "run").has_checkpoint()
    assert stop.status == "interrupted"


def test_a_second_stop_during_the_last_checkpoint_still_says_how_to_go_on(tmp_path, monkeypatch):
    # a second Ctrl-C while the first one's checkpoint was being written (a double tap) ended with 'error: stopped by
    # SIGINT' alone, though the run held a checkpoint to continue from; it is a TrainingInterrupted at that checkpoint
    monkeypatch.setattr(trainer_module, "FIRST_CHECKPOINT_SECONDS", 0.0)  # a checkpoint after every epoch
    monkeypatch.setattr(trainer_module, "CHECKPOINT_SHARE", 1e-9)
    stop = StopAtBatch(5, "raise", again=True)  # in epoch 2 (3 steps an epoch), then again at its checkpoint
    with pytest.raises(KeyboardInterrupt) as caught:
        fit(zoo.build_model("iris-mlp"), out_dir=tmp_path / "run", callbacks=[stop], **SETTINGS)
    assert isinstance(caught.value, TrainingInterrupted)
    assert (caught.value.epoch, caught.value.step) == (2, 3)  # at epoch 1's checkpoint, the last completed
    assert caught.value.checkpoint == RunDirectory(tmp_path / "run").last_checkpoint
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "interrupted"
    done = fit(resume=tmp_path / "run", quiet=True)
    assert (done.metrics["epochs"], done.metrics["steps"]) == (3, 9)


def test_a_short_epochs_time_is_shown_in_milliseconds(tmp_path, capsys):
    fit(zoo.build_model("iris-mlp"), out_dir=tmp_path / "run", **{**SETTINGS, "epochs": 1}, quiet=False)
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("epoch 1/1")]
    assert re.search(r"  \([\d.]+ ms\)$", line) and "(0 ms)" not in line, line  # was "(0.0s)"



def test_a_second_ctrl_c_during_the_interrupted_status_write_lands_after_it(tmp_path, monkeypatch):
    # a second Ctrl-C within ~50 ms of the first cut run.json's write short: the run said "running" (a user audit)
    from onnxkit import signals

    write = RunDirectory.write_json

    def interrupted_while_writing(run, info):
        if info.get("status") == "interrupted":
            signals.stop(signal.SIGINT)  # the second Ctrl-C's handler, as it lands
        write(run, info)

    monkeypatch.setattr(RunDirectory, "write_json", interrupted_while_writing)
    with signals.stops_recorded(), pytest.raises(KeyboardInterrupt) as caught:
        fit(zoo.build_model("iris-mlp"), out_dir=tmp_path / "run", callbacks=[StopAtBatch(2, "raise")], **SETTINGS)
    assert type(caught.value) is KeyboardInterrupt  # the second stop, once the status is written
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "interrupted"


class FailAt(Callback):
    """Raises OSError(ENOSPC) at the end of epoch 2 (the training's failure) or in on_train_end (a second one)."""

    def __init__(self, where: str) -> None:
        self.where = where

    def on_epoch_end(self, trainer, record) -> None:
        if self.where == "epoch" and record["epoch"] == 2:
            raise OSError(28, "No space left on device", "checkpoints/last-a.ckpt")

    def on_train_end(self, trainer, status: str) -> None:
        raise OSError(28, "No space left on device", f"on_train_end {status}")


def test_an_error_at_the_end_does_not_hide_the_failure_that_ended_training(tmp_path):
    # the disk full again when the callbacks closed the run: their error replaced the one that failed the step,
    # and the callbacks after it (the metrics file's close) were skipped
    recorder = Recorder()
    with pytest.raises(OSError, match="last-a.ckpt"):
        fit(zoo.build_model("iris-mlp"), out_dir=tmp_path / "run", callbacks=[FailAt("epoch"), FailAt("end"),
                                                                              recorder], **SETTINGS)
    assert recorder.calls[-1] == "train_end failed"
    assert not (tmp_path / "run" / "curves.svg").exists()  # a failed run draws when resumed
    recorder = Recorder()
    with pytest.raises(OSError, match="on_train_end completed"):  # with nothing else wrong, its own error shows
        fit(zoo.build_model("iris-mlp"), out_dir=tmp_path / "ok", callbacks=[FailAt("end"), recorder], **SETTINGS)
    assert recorder.calls[-1] == "train_end completed"


def test_a_fit_does_not_import_numpy_ma_or_pillow(tmp_path):
    # np.unique imports numpy.ma, 7 ms of every short fit (a tenth of its fixed costs); the label checks avoid it.
    # Pillow's import was 9 ms of the 25 curves.png took; curves.svg is text
    code = ("import sys\nfrom onnxkit import zoo\nfrom onnxkit.train import fit\n"
            f"fit(zoo.build_model('iris-mlp'), 'iris', {str(tmp_path / 'run')!r}, epochs=1, device='cpu')\n"
            "assert 'numpy.ma' not in sys.modules, 'numpy.ma imported'\n"
            "assert 'PIL' not in sys.modules, 'Pillow imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_an_early_stopping_callback_follows_its_own_monitor(tmp_path):
    # EarlyStopping("val_accuracy", 2) in fit(callbacks=...) read the best epoch of fit's monitor (val_loss), so it
    # stopped when val_loss stalled, never when val_accuracy did; a monitor of no such score was taken unsaid
    stop = EarlyStopping("val_accuracy", patience=2)
    result = fit(zoo.build_model("iris-mlp"), out_dir=tmp_path / "run", callbacks=[stop],
                 **{**SETTINGS, "epochs": 20})
    accuracy = [r["val_accuracy"] for r in result.history]
    best = accuracy.index(max(accuracy)) + 1
    assert result.stopped_early and result.epochs == best + 2 < 20
    assert result.history[-1]["best_epoch"] == result.epochs  # by fit's val_loss, the last epoch was the best
    with pytest.raises(OnnxkitError, match=r"^EarlyStopping: monitor 'val_acc' is none of val_loss, val_accuracy, "
                                           r"val_macro_f1, train_loss. Did you mean: val_accuracy"):
        EarlyStopping("val_acc", 2)
    with pytest.raises(OnnxkitError, match=r"^EarlyStopping: patience must be an integer of at least 1, got 0$"):
        EarlyStopping("val_loss", 0)
    with pytest.raises(OnnxkitError, match=r"^EarlyStopping: this run's epochs have no val_accuracy; monitor one of: "
                                           r"val_loss, train_loss$"):
        EarlyStopping("val_accuracy", 2).on_epoch_end(None, {"epoch": 1, "step": 3, "val_loss": 1.0, "train_loss": 1.0})
