"""The training loop over a `TrainingSession`: epochs of shuffled batches, gradient accumulation,
the learning-rate schedule, validation after every epoch, checkpoints of the loop state, and
Ctrl-C / SIGTERM. Everything else (metrics, progress, best model, early stopping, NaN guard,
plot) is a callback; the trainer knows only the session interface and its callbacks."""

from __future__ import annotations

import array
import contextlib
import dataclasses
import itertools
import json
import signal
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from onnxkit.data import Split
from onnxkit.errors import OnnxkitError
from onnxkit.signals import handled, restore
from onnxkit.train.backend import TrainingSession
from onnxkit.train.callbacks import Callback, Record
from onnxkit.train.config import TrainConfig, TrainingInterrupted
from onnxkit.train.run_directory import RunDirectory
from onnxkit.train.schedules import Schedule

CHECKPOINT_SHARE = 0.005  # epoch-end checkpoints may take at most this share of the training time
RATES_AHEAD = 1 << 20  # learning rates made before training: the whole run's, up to this many steps (8 MB)
FIRST_CHECKPOINT_SECONDS = 1.0  # none before this much training: a run killed sooner restarts, losing less


@dataclass
class LoopState:
    """Where the loop is; saved beside every checkpoint (with the callbacks' state)."""

    epoch: int = 0  # current epoch, 0-based
    batch: int = 0  # batches of it already done
    step: int = 0  # optimizer steps done
    loss_sum: float = 0.0  # this epoch's training loss, summed over examples
    examples: int = 0
    done: bool = False
    stopped_early: bool = False  # done because a callback set stop_training (early stopping, or the user's)


class _StopSignals:
    """Turns the first Ctrl-C or SIGTERM into a flag the loop checks between optimizer steps;
    after it, both signals act as before (a second Ctrl-C stops at once)."""

    def __init__(self) -> None:
        self.received = False
        self.signum = signal.SIGINT
        self._stack = contextlib.ExitStack()
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopSignals:
        self._previous = self._stack.enter_context(handled(self._handle))
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.received, self.signum = True, signum
        restore(self._previous)

    def raised(self, error: KeyboardInterrupt) -> None:
        """A callback raised KeyboardInterrupt: the first acts as Ctrl-C there; after a stop, it propagates."""
        if self.received:
            raise error
        self._handle(signal.SIGINT, None)

    def __exit__(self, *exc: object) -> None:
        self._stack.close()


class Trainer:
    """Trains `session` on `train` for `epochs` (or `config.steps` optimizer steps).

    `validate(session)` returns the epoch record's validation entries (val_loss, ...), or
    is None without a validation split. Checkpoints go to `run`'s checkpoints folder (`RunDirectory`):
    after the first epoch that ends FIRST_CHECKPOINT_SECONDS or more into this process's training,
    then after each epoch that ends at least 1/CHECKPOINT_SHARE times the last checkpoint's duration
    after it (every epoch unless epochs are short), after the last epoch, and when stopped by a
    signal. Callbacks may read `session`, `state`, `epochs`
    and `batches_per_epoch`, call `log`, and set `stop_training` (set during an epoch, it ends
    that epoch after the current optimizer step); a KeyboardInterrupt one raises
    (but in `on_train_end`) stops the loop as Ctrl-C at that point does.
    """

    def __init__(
        self,
        session: TrainingSession,
        train: Split,
        config: TrainConfig,
        *,
        epochs: int,
        schedule: Schedule,
        run: RunDirectory,
        validate: Callable[[TrainingSession], Record] | None = None,
        callbacks: Sequence[Callback] = (),
        log: Callable[[str], None] = lambda text: None,
        drop_last: bool = False,
    ) -> None:
        self.session, self.train, self.config, self.run = session, train, config, run
        self.epochs, self.schedule, self.validate, self.log = epochs, schedule, validate, log
        self.callbacks = list(callbacks)
        self._hooks: dict[str, list[Callable[..., None]]] = {}  # by hook name: see _overriding
        self.drop_last = drop_last  # whole batches only (a model with a fixed batch size)
        self.batches_per_epoch = train.num_batches(config.batch_size, drop_last)
        self._short_step_rows = self._short_last_step_rows() if session.weighs_batches else 0
        self.state = LoopState()
        self.stop_training = False
        self.agreed_stop: bool | None = None  # data-parallel: whether the ranks agreed to stop (see `_stopping`)
        self._saved_step: int | None = None  # the step of the last checkpoint
        self._saved_at: float | None = None  # when this process last wrote one (perf_counter)
        self._began = 0.0  # when this process's training began (perf_counter)
        self._saving_seconds = 0.0  # how long that took
        self._signals = _StopSignals()
        self._rates = array.array("d")  # every step's learning rate (see `fit`)

    def _short_last_step_rows(self) -> int:
        """The rows of an epoch's last step when it is short (fewer batches or a smaller one) and accumulates
        (a lone batch's mean is already the step's); else 0. Its batches then weigh as many rows as they have
        (`_epoch`), so the step is the mean over its rows, as every full step is."""
        accumulation, size = self.config.grad_accumulation, self.config.batch_size
        first = (self.batches_per_epoch - 1) // accumulation * accumulation  # the last step's first batch
        rows = min(len(self.train), self.batches_per_epoch * size) - first * size
        return rows if 1 < accumulation and rows < accumulation * size else 0

    @property
    def stop_signal(self) -> int:
        """The Ctrl-C or SIGTERM received (0: none); the loop stops after the current optimizer step."""
        return int(self._signals.signum) if self._signals.received else 0

    def _stopping(self) -> bool:
        """Whether to stop now for a Ctrl-C or SIGTERM: received, or, data-parallel, agreed on by the ranks after
        the last optimizer step (`agreed_stop`; one received since waits for the next agreement, which all see)."""
        return self._signals.received if self.agreed_stop is None else self.agreed_stop

    def request_stop(self, signum: int) -> None:
        """Stop after the current optimizer step as if `signum` had arrived (data-parallel peers stop together)."""
        self._signals.received, self._signals.signum = True, signum

    # ---- checkpoints ---------------------------------------------------------------------

    def restore(self) -> None:
        """Continue from the run's last checkpoint (the session was opened from it)."""
        path = self.run.loop_state
        try:
            saved = json.loads(path.read_text())
            fields = {f.name for f in dataclasses.fields(LoopState)}
            self.state = LoopState(**{k: v for k, v in saved.items() if k in fields})
        except (OSError, ValueError, TypeError, AttributeError) as e:
            raise OnnxkitError(f"{path}: the loop state is missing or damaged ({e}); "
                               "the run cannot be resumed, start a new one") from e
        if self.state.step != self.session.steps:
            raise OnnxkitError(f"{path} is at step {self.state.step} but the checkpoint at step "
                               f"{self.session.steps}; the run was killed while checkpointing, start a new one")
        for callback in self.callbacks:
            callback.restore(saved)
        self._saved_step = self.state.step

    def checkpoint(self) -> None:
        """The backend's checkpoint, then the loop and callback state beside it (JSON) naming the same step."""
        started = time.perf_counter()
        self._hook("on_checkpoint")
        saved = dataclasses.asdict(self.state)
        for callback in self.callbacks:
            saved.update(callback.state())
        path = self.run.next_checkpoint()
        self.session.save_checkpoint(path)
        self.run.save_loop_state(saved, path)  # completes it: names it, with its checksum (verified on resume)
        self._saved_step, self._saved_at = self.state.step, time.perf_counter()
        self._saving_seconds = self._saved_at - started

    def _checkpoint_due(self) -> bool:
        if self.state.done:
            return True
        if self._saved_at is None:
            return time.perf_counter() - self._began >= FIRST_CHECKPOINT_SECONDS
        return time.perf_counter() - self._saved_at >= self._saving_seconds / CHECKPOINT_SHARE

    # ---- the loop ------------------------------------------------------------------------

    def fit(self) -> LoopState:
        """Train until done; raises TrainingInterrupted (after a checkpoint) on Ctrl-C or SIGTERM."""
        status = "failed"
        with self._signals:
            c = self.config
            seeds = (c.seed * 100_003 + e for e in range(self.state.epoch, self.epochs)) if c.shuffle else None
            # from a resumed run's epoch too; each batch is done with before the next is drawn
            epochs = self.train.epochs(c.batch_size, seeds, self.drop_last, reuse=True)
            if self.state.epoch < self.epochs:  # the first block of shuffled rows gathered before training begins
                epochs = itertools.chain([next(epochs)], epochs)
            # the steps' learning rates, made once (a schedule call per step took 0.4% of a short fit's loop)
            self._rates = array.array("d", map(self.schedule.lr, range(min(self.schedule.total_steps, RATES_AHEAD))))
            self._hook("on_train_begin")
            self._began = time.perf_counter()
            hooks = self._overriding("on_batch_end"), self._overriding("on_step_end")
            try:
                while not self.state.done and not self._stopping():
                    self._epoch(next(epochs), *hooks)
                if not self.state.done:
                    status = "interrupted"
                    if self._saved_step != self.state.step:
                        self.checkpoint()
                else:
                    status = "completed"
            except BaseException:
                self._end(status, failing=True)  # "interrupted" when its checkpoint failed
                raise
            self._end(status)
        if status == "interrupted":
            raise TrainingInterrupted(self.run.path, self.run.last_checkpoint, self.state.epoch + 1, self.state.step,
                                      int(self._signals.signum))
        return self.state

    def _end(self, status: str, *, failing: bool = False) -> None:
        """Each callback's on_train_end. While a failure propagates (`failing`), an error in one of them (the disk
        still full) neither hides that failure nor skips the callbacks after it; else the first is raised after all."""
        first: Exception | None = None
        for callback in self.callbacks:
            try:
                callback.on_train_end(self, status)
            except Exception as e:  # noqa: BLE001 - kept, raised below unless another error is on its way
                first = first or e
        if first is not None and not failing:
            raise first

    def _hook(self, name: str, *args: Any) -> None:
        for hook in self._overriding(name):
            try:
                hook(self, *args)
            except KeyboardInterrupt as e:
                self._signals.raised(e)

    def _overriding(self, name: str) -> list[Callable[..., None]]:
        """The bound `name` hooks of the callbacks that define it, in order (the loop skips no-ops)."""
        hooks = self._hooks.get(name)
        if hooks is None:
            hooks = self._hooks[name] = [getattr(c, name) for c in self.callbacks
                                         if getattr(type(c), name) is not getattr(Callback, name)]
        return hooks

    def _epoch(self, batches: Iterable[tuple], on_batch_end: list[Callable[..., None]],
               on_step_end: list[Callable[..., None]]) -> None:
        c, state, session = self.config, self.state, self.session
        last = self.batches_per_epoch - 1
        self._hook("on_epoch_begin", state.epoch + 1)
        started = time.perf_counter()
        rates = self._rates
        step_loss, step_examples, in_step = 0.0, 0, 0
        examples_before = state.examples  # a resumed epoch's examples before the stop took time not counted here
        short_step = last // c.grad_accumulation * c.grad_accumulation if self._short_step_rows else last + 1
        for index, (feeds, labels) in enumerate(batches):
            if index < state.batch:
                continue  # resumed mid-epoch: these batches were done before the checkpoint
            if index < short_step:
                loss = session.train_step(feeds, labels)
            else:  # the epoch's short last step: its batches weigh as many rows as they have
                loss = session.train_step(feeds, labels, c.grad_accumulation * len(labels) / self._short_step_rows)
            for hook in on_batch_end:
                try:
                    hook(self, loss)
                except KeyboardInterrupt as e:
                    self._signals.raised(e)
            step_loss += loss * len(labels)
            step_examples += len(labels)
            in_step += 1
            if in_step < c.grad_accumulation and index < last:
                continue
            lr = rates[state.step] if state.step < len(rates) else self.schedule.lr(state.step)
            session.optimizer_step(lr)
            state.step += 1
            state.batch = index + 1
            state.loss_sum += step_loss
            state.examples += step_examples
            elapsed = time.perf_counter() - started
            record = {
                "event": "step",
                "epoch": state.epoch + 1,
                "step": state.step,
                "loss": step_loss / step_examples,
                "lr": lr,
                "samples_per_s": (state.examples - examples_before) / elapsed if elapsed > 0 else 0.0,
            }
            for hook in on_step_end:
                try:
                    hook(self, record)
                except KeyboardInterrupt as e:
                    self._signals.raised(e)
            step_loss, step_examples, in_step = 0.0, 0, 0
            if self._stopping():
                return  # mid-epoch: fit checkpoints here
            if self.stop_training or (c.steps and state.step >= c.steps):
                break  # a stop asked for mid-epoch ends the epoch here: validation, its record, a checkpoint
        self._end_epoch(time.perf_counter() - started)

    def _end_epoch(self, seconds: float) -> None:
        state = self.state
        record: Record = {
            "event": "epoch",
            "epoch": state.epoch + 1,
            "step": state.step,
            "train_loss": state.loss_sum / max(1, state.examples),
            "seconds": seconds,
        }
        if self.validate is not None:
            record.update(self.validate(self.session))
        self._hook("on_epoch_end", record)
        state.epoch += 1
        state.batch, state.loss_sum, state.examples = 0, 0.0, 0
        steps = self.config.steps
        state.stopped_early = self.stop_training
        state.done = self.stop_training or state.epoch >= self.epochs or bool(steps and state.step >= steps)
        if self._checkpoint_due():
            self.checkpoint()
