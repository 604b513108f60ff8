"""Callbacks: what happens around the training loop, in small Keras-style hooks.

The trainer calls, in list order, `on_train_begin`, then per epoch `on_epoch_begin`,
`on_batch_end` after each micro-batch's forward and backward (before the optimizer
step), `on_step_end` after each optimizer step with its metrics record, `on_epoch_end`
with the epoch's record (a callback may add keys to it), `on_checkpoint` right before
the loop state is saved, and `on_train_end` with the status (completed, interrupted or
failed). A callback whose state must survive a resume returns it from `state()` (JSON
values; keys unique among callbacks) and takes it back in `restore()`. A hook may set
`trainer.stop_training`: training then ends after the current optimizer step, with that
epoch's validation, record and checkpoint (Keras's rule).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from onnxkit.errors import OnnxkitError, suggest
from onnxkit.files import disk_errors
from onnxkit.train.progress import Progress
from onnxkit.train.run_directory import RunDirectory
from onnxkit.train.weights import save_tensors

if TYPE_CHECKING:
    from onnxkit.train.trainer import Trainer

MONITORS = {"val_loss": min, "val_accuracy": max, "val_macro_f1": max, "train_loss": min}
Record = dict[str, Any]


class Callback:
    """Every hook is a no-op; subclasses override the ones they need."""

    def on_train_begin(self, trainer: Trainer) -> None:
        """Before the first step (of this process: a resumed run begins here too)."""

    def on_epoch_begin(self, trainer: Trainer, epoch: int) -> None:
        """Before epoch `epoch` (1-based) starts or resumes."""

    def on_batch_end(self, trainer: Trainer, loss: float) -> None:
        """After one batch's forward and backward; `loss` is its mean loss."""

    def on_step_end(self, trainer: Trainer, record: Record) -> None:
        """After an optimizer step; `record` is its metrics.jsonl line."""

    def on_epoch_end(self, trainer: Trainer, record: Record) -> None:
        """After an epoch and its validation; `record` is its metrics.jsonl line."""

    def on_checkpoint(self, trainer: Trainer) -> None:
        """Right before the loop state is checkpointed: persist what must match it."""

    def on_train_end(self, trainer: Trainer, status: str) -> None:
        """Once, when the loop stops: `completed`, `interrupted` or `failed`."""

    def state(self) -> dict[str, Any]:
        """What a resumed run needs back (saved with every checkpoint)."""
        return {}

    def restore(self, state: dict[str, Any]) -> None:
        """Take back what `state()` saved."""


class NanGuard(Callback):
    """Stops training with a clear error when a batch's loss is NaN or infinite, before that step is applied."""

    def on_batch_end(self, trainer: Trainer, loss: float) -> None:
        if math.isfinite(loss):
            return
        kept = (
            f"the last good checkpoint is {trainer.run.last_checkpoint}"
            if trainer.run.has_checkpoint()
            else "it had not yet written a checkpoint"
        )
        raise OnnxkitError(
            f"training stopped: the loss became {loss} in epoch {trainer.state.epoch + 1} at step "
            f"{trainer.state.step + 1}; {kept}. Lower the learning rate (lr) or clip gradients (clip_grad_norm)",
            params=["lr", "clip_grad_norm"],
        )


class BestModel(Callback):
    """Tracks the best epoch by `monitor` and adds `best_epoch` to each epoch record; with a
    `checkpoint` path, keeps the best weights in memory (`values`) and writes them there
    (safetensors) with each checkpoint and at the end, not at every new best."""

    def __init__(self, monitor: str, checkpoint: Path | None) -> None:
        self.monitor, self.checkpoint = monitor, checkpoint
        self.better = MONITORS[monitor]
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.values: dict[str, Any] | None = None
        self._unsaved = False

    def on_epoch_end(self, trainer: Trainer, record: Record) -> None:
        value = record[self.monitor]
        if self.best is None or (self.better(value, self.best) == value and value != self.best):
            self.best, self.best_epoch = value, record["epoch"]
            if self.checkpoint is not None:
                self.values, self._unsaved = trainer.session.parameters(), True
        record["best_epoch"] = self.best_epoch

    def on_checkpoint(self, trainer: Trainer) -> None:
        if self._unsaved and self.checkpoint is not None and self.values is not None:
            save_tensors(self.checkpoint, self.values)
            self._unsaved = False

    def on_train_end(self, trainer: Trainer, status: str) -> None:
        self.on_checkpoint(trainer)

    def state(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def restore(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch = state.get("best"), state.get("best_epoch")


class EarlyStopping(Callback):
    """Stops after `patience` epochs without a new best `monitor` (val_loss, val_accuracy, val_macro_f1 or
    train_loss), once `from_step` optimizer steps have run (Keras's start_from_epoch, in steps). `fit(patience=N)`
    adds one for fit's `monitor`; one given in `fit(callbacks=[...])` follows its own."""

    def __init__(self, monitor: str = "val_loss", patience: int = 5, from_step: int = 0) -> None:
        if monitor not in MONITORS:
            raise OnnxkitError(f"EarlyStopping: monitor {monitor!r} is none of {', '.join(MONITORS)}."
                               f"{suggest(monitor, MONITORS)}")
        for name, value, least in (("patience", patience, 1), ("from_step", from_step, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise OnnxkitError(f"EarlyStopping: {name} must be an integer of at least {least}, got {value!r}")
        self.monitor, self.patience, self.from_step = monitor, patience, from_step
        self.better = MONITORS[monitor]
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.stopped = False

    def on_epoch_end(self, trainer: Trainer, record: Record) -> None:
        if self.monitor not in record:  # val_accuracy of a regression, val_* of a run without a validation split
            scores = [k for k in MONITORS if k in record]
            raise OnnxkitError(f"EarlyStopping: this run's epochs have no {self.monitor}; monitor one of: "
                               f"{', '.join(scores)}")
        value = record[self.monitor]
        if self.best is None or (self.better(value, self.best) == value and value != self.best):  # as BestModel
            self.best, self.best_epoch = value, record["epoch"]
        if record["epoch"] - self.best_epoch >= self.patience and record["step"] >= self.from_step:
            record["stopped_early"] = self.stopped = trainer.stop_training = True

    def on_train_end(self, trainer: Trainer, status: str) -> None:
        if self.stopped:
            trainer.log(f"stopping early: {self.monitor} has not improved for {self.patience} epochs")

    def state(self) -> dict[str, Any]:
        return {f"early_stopping.{self.monitor}": {"best": self.best, "best_epoch": self.best_epoch}}

    def restore(self, state: dict[str, Any]) -> None:
        # a checkpoint from before EarlyStopping kept its own: BestModel's, whose monitor fit's one shared
        saved = state.get(f"early_stopping.{self.monitor}") or state
        self.best, self.best_epoch = saved.get("best"), saved.get("best_epoch")


class MetricsWriter(Callback):
    """metrics.jsonl: every record, one JSON line each, buffered and written before each checkpoint
    (so a resumed run can cut the file at the checkpoint's step), at the start of an epoch
    FLUSH_SECONDS or more after the last write once the run has a checkpoint (so recorded epochs
    mean a checkpoint was written), and when training stops: after every callback's on_epoch_end,
    so the keys they add to an epoch's record are in its line. A crash loses only lines after the
    last checkpoint, which a resumed run redoes anyway. `records` holds them all."""

    FLUSH_SECONDS = 1.0  # short epochs: one write a second, not one each (~160 us an epoch here)

    def __init__(self, run: RunDirectory, records: list[Record]) -> None:
        self.run, self.records = run, records
        self._pending: list[Record] = []
        self._file: BinaryIO | None = None
        self._written = 0.0  # time.monotonic() of the last write
        self._checkpointed = False  # whether the run has a checkpoint

    def on_train_begin(self, trainer: Trainer) -> None:
        self._file = self.run.metrics.open("ab", buffering=0)
        self._checkpointed = self.run.has_checkpoint()

    def on_step_end(self, trainer: Trainer, record: Record) -> None:
        self.records.append(record)
        self._pending.append(record)

    def on_epoch_begin(self, trainer: Trainer, epoch: int) -> None:
        if self._checkpointed and time.monotonic() - self._written >= self.FLUSH_SECONDS:
            self.flush()

    def on_epoch_end(self, trainer: Trainer, record: Record) -> None:
        self.on_step_end(trainer, record)

    def on_checkpoint(self, trainer: Trainer) -> None:
        self.flush()
        self._checkpointed = True

    def on_train_end(self, trainer: Trainer, status: str) -> None:
        self.flush()
        if self._file is not None:
            self._file.close()
            self._file = None

    def flush(self) -> None:
        """Append the pending lines; a failed write (a full disk) leaves the file as it was, no line cut short."""
        if self._pending and self._file is not None:
            data = "".join(json.dumps(r) + "\n" for r in self._pending).encode()
            end = self._file.seek(0, os.SEEK_END)
            with disk_errors(self.run.metrics):
                try:
                    view = memoryview(data)
                    while view:
                        view = view[self._file.write(view):]
                except OSError:
                    self._file.truncate(end)
                    raise
            self._pending.clear()
            self._written = time.monotonic()


class ProgressBar(Callback):
    """The live bar on a terminal (Progress throttles it) and one line per epoch."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def on_epoch_begin(self, trainer: Trainer, epoch: int) -> None:
        self.progress.epoch_start(epoch, trainer.epochs, trainer.batches_per_epoch)

    def on_step_end(self, trainer: Trainer, record: Record) -> None:
        self.progress.step(trainer.state.batch, record["loss"], record["lr"], record["samples_per_s"])

    def on_epoch_end(self, trainer: Trainer, record: Record) -> None:
        shown = "  ".join(
            f"{k.replace('_', ' ')} {record[k]:{'.4f' if k == 'val_accuracy' else '.4g'}}"
            for k in ("train_loss", "val_loss", "val_accuracy")
            if k in record
        )
        seconds = record["seconds"]  # a short epoch in milliseconds: "(0.0s)" read as if nothing ran
        took = f"{seconds:.1f}s" if seconds >= 1 else f"{1000 * seconds:.3g} ms"  # 8.21 ms, 0.43 ms (cached)
        self.progress.line(f"epoch {record['epoch']}/{trainer.epochs}  {shown}  ({took})")


class Plot(Callback):
    """curves.svg from the records, drawn once when training stops (after any checkpoint)."""

    def __init__(self, path: Path, records: list[Record]) -> None:
        self.path, self.records = path, records

    def on_train_end(self, trainer: Trainer, status: str) -> None:
        if self.records and status != "failed":  # a failed run is resumed or discarded, and draws then
            from onnxkit.train.plot import plot_curves

            plot_curves(self.records, self.path)


class RecordCallback(Callback):
    """Calls `function(record)` with every metrics record as it is made (fit's `callback`)."""

    def __init__(self, function: Callable[[Record], None]) -> None:
        self.function = function

    def on_step_end(self, trainer: Trainer, record: Record) -> None:
        self.function(record)

    def on_epoch_end(self, trainer: Trainer, record: Record) -> None:
        self.function(record)
