"""`fit`: train or fine-tune any inference-form ONNX model and write a run directory.

The loop is backend-agnostic: it derives the training form, asks the backend
to build artifacts and open a session, then runs epochs of shuffled batches
with gradient accumulation, a learning-rate schedule, validation every epoch,
early stopping, best-model keeping, checkpoints (resumable to the same
weights), Ctrl-C handling and a NaN guard. The trained weights are written back
into the original inference graph.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import platform
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnxkit import __version__
from onnxkit.data import Dataset, Split, load_dataset, model_inputs
from onnxkit.errors import OnnxkitError
from onnxkit.evaluate import evaluate, label_names, score
from onnxkit.files import load_model, save_model, write_text
from onnxkit.graph_walks import value_types
from onnxkit.metadata import metadata, set_metadata
from onnxkit.train.backend import TrainingSession
from onnxkit.train.backends import DEFAULT, default_backend, get_backend
from onnxkit.train.config import FitResult, GraphAdapter, TrainConfig, TrainingInterrupted
from onnxkit.train.export import with_weights
from onnxkit.train.frozen_features import cut, features
from onnxkit.train.losses import Loss, default_loss, get_loss
from onnxkit.train.optim import Optimizer, get_optimizer
from onnxkit.train.problem import training_problem
from onnxkit.train.progress import Progress
from onnxkit.train.run_directory import RunDirectory
from onnxkit.train.schedules import Schedule, warmup_steps
from onnxkit.train.training_form import find_parameters, output_type, select

MONITORS = {"val_loss": min, "val_accuracy": max, "val_macro_f1": max, "train_loss": min}
TASK_OF_LOSS = {"cross-entropy": "classification", "bce-with-logits": "binary", "mse": "regression", "l1": "regression"}


def fit(
    model: str | os.PathLike | onnx.ModelProto | None = None,
    data: str | os.PathLike | Dataset | None = "digits-images",
    out_dir: str | os.PathLike | None = None,
    *,
    loss: str | None = None,
    optimizer: str | Optimizer = "adamw",
    lr: float | None = None,
    weight_decay: float | None = None,
    clip_grad_norm: float | None = None,
    schedule: str = "constant",
    warmup: float = 0,
    epochs: int = 10,
    steps: int | None = None,
    batch_size: int = 64,
    grad_accumulation: int = 1,
    eval_batch_size: int | None = None,
    seed: int = 0,
    data_seed: int = 0,
    shuffle: bool = True,
    dropout: bool = True,
    freeze: Sequence[str] = (),
    train_only: Sequence[str] = (),
    output: str | None = None,
    monitor: str | None = None,
    patience: int | None = None,
    keep_best: bool = True,
    evaluate_test: bool = True,
    device: str = "auto",
    threads: int | None = None,
    backend: str | None = None,
    adapter: GraphAdapter | None = None,
    cache_features: bool = True,
    resume: str | os.PathLike | None = None,
    quiet: bool = True,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> FitResult:
    """Train `model` (a path or ModelProto, inference form) on `data`; write the run to `out_dir`.

    - `loss`: cross-entropy, bce-with-logits, mse or l1 (default: from the model's
      task metadata, else from its output and the labels).
    - `optimizer`: a name (sgd, adam, adamw, adagrad, rmsprop, adadelta) or an object from
      `onnxkit.train.optim` holding its options (torch.optim's names and defaults);
      `lr` defaults to torch's for that optimizer; `weight_decay` overrides the
      optimizer's; `clip_grad_norm` clips the global gradient norm; `schedule`:
      constant, linear or cosine with `warmup` steps (or a fraction of all steps when below 1).
    - `backend`: onnx (onnxkit's own autodiff, any ONNX Runtime) or ort-training.
    - `epochs`, or `steps` optimizer steps; `grad_accumulation` batches per step.
    - `freeze` / `train_only`: globs over parameter names (frozen ones stay bit-identical).
    - `cache_features`: when only a head after a frozen part trains, run the frozen
      part once and train the head on its cached output (see `frozen_features`).
    - `monitor` (val_loss, val_accuracy, val_macro_f1, train_loss) picks the best
      epoch; `patience` stops after that many epochs without improvement.
    - `resume`: a run directory; continues from its last checkpoint with its stored
      settings (`data` may be given again when it was a Dataset object).
    - `callback(record)` sees every metrics.jsonl record as it is written.
    """
    if resume is not None:
        run = RunDirectory.existing(resume)
        config = _config_from_json(run.read_json()["config"])
        proto = _load_checked(config)
        if config.data_in_memory and not isinstance(data, Dataset):
            raise OnnxkitError(f"this run trained on an in-memory Dataset ({config.data!r}); pass it again as data=")
        dataset = data if isinstance(data, Dataset) else load_dataset(config.data, seed=config.data_seed, model=proto)
    else:
        if model is None:
            raise OnnxkitError("give a model to train (a .onnx path or an onnx.ModelProto), or resume a run")
        if out_dir is None:
            raise OnnxkitError("give an output folder for the run (out_dir / -o)")
        if data is None:
            raise OnnxkitError("give training data: a dataset name, a .npz/.csv file or a Dataset")
        _check_numbers(epochs, steps, batch_size, grad_accumulation, patience)
        spec = _optimizer(optimizer, weight_decay)
        if isinstance(model, onnx.ModelProto):
            proto, model_path = model, None
        else:
            model_path = Path(model).resolve()
            proto = load_model(model_path)
        dataset = data if isinstance(data, Dataset) else load_dataset(data, seed=data_seed, model=proto)
        run = RunDirectory.new(out_dir)
        config = TrainConfig(
            model=str(model_path or run.path.resolve() / "base_model.onnx"),
            model_sha256=_sha256(model_path) if model_path else "",
            data=str(data) if not isinstance(data, Dataset) else dataset.name,
            data_seed=data_seed,
            output=output,
            loss=get_loss(loss).name if loss else None,
            optimizer=spec.name,
            optimizer_options=_json_options(spec),
            lr=spec.default_lr if lr is None else lr,
            clip_grad_norm=clip_grad_norm,
            schedule=schedule,
            warmup=warmup,
            epochs=epochs,
            steps=steps,
            batch_size=batch_size,
            grad_accumulation=grad_accumulation,
            eval_batch_size=eval_batch_size,
            seed=seed,
            shuffle=shuffle,
            dropout=dropout,
            freeze=list(freeze),
            train_only=list(train_only),
            monitor=monitor,
            patience=patience,
            keep_best=keep_best,
            evaluate_test=evaluate_test,
            backend=backend or default_backend(),
            adapter=type(adapter).__name__ if adapter else None,
            data_in_memory=isinstance(data, Dataset),
            cache_features=cache_features,
        )
        if not config.lr > 0:
            raise OnnxkitError(f"learning rate must be positive, got {config.lr}")
        if clip_grad_norm is not None and not clip_grad_norm > 0:
            raise OnnxkitError(f"gradient clipping norm must be positive, got {clip_grad_norm}")
    if config.adapter and (adapter is None or type(adapter).__name__ != config.adapter):
        raise OnnxkitError(f"this run was trained with the {config.adapter} adapter; pass the same adapter to resume "
                           "(onnxkit train: the same --lora-* options next to --resume)")
    trainer = _Trainer(run, config, proto, dataset, adapter, device, threads, quiet, callback)  # checks everything
    if resume is None:
        run.make()
        if not config.model_sha256:  # given as a ModelProto: the run keeps the starting model
            save_model(proto, config.model)
            config.model_sha256 = _sha256(Path(config.model))
    return trainer.train(resuming=resume is not None)


def _optimizer(optimizer: str | Optimizer, weight_decay: float | None) -> Optimizer:
    """The optimizer spec from a name or object, with `weight_decay` (when given) in place of its own."""
    if isinstance(optimizer, Optimizer):
        options = optimizer.options()
        if weight_decay is not None:
            options["weight_decay"] = weight_decay
        return type(optimizer)(**options)
    return get_optimizer(optimizer, **({} if weight_decay is None else {"weight_decay": weight_decay}))


def _json_options(spec: Optimizer) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in spec.options().items()}


def _check_numbers(epochs: int, steps: int | None, batch_size: int, accumulation: int, patience: int | None) -> None:
    for name, value in (("epochs", epochs), ("batch size", batch_size), ("gradient accumulation", accumulation)):
        if value < 1:
            raise OnnxkitError(f"{name} must be at least 1, got {value}")
    if steps is not None and steps < 1:
        raise OnnxkitError(f"steps must be at least 1, got {steps}")
    if patience is not None and patience < 1:
        raise OnnxkitError(f"patience must be at least 1 epoch, got {patience}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _config_from_json(raw: dict[str, Any]) -> TrainConfig:
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in raw.items() if k in known})


def _load_checked(config: TrainConfig) -> onnx.ModelProto:
    path = Path(config.model)
    proto = load_model(path)
    if _sha256(path) != config.model_sha256:
        raise OnnxkitError(f"{path} changed since this run started; resume needs the model the run began with")
    return proto


def _versions() -> dict[str, str]:
    import onnxruntime

    return {
        "onnxkit": __version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


class _Interrupt:
    """Turns the first Ctrl-C into a flag the loop checks between optimizer steps."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> _Interrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, self._previous)  # a second Ctrl-C stops at once

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


@dataclass
class _State:
    """Loop position and early-stopping bookkeeping, saved inside every checkpoint."""

    epoch: int = 0  # current epoch, 0-based
    batch: int = 0  # batches of it already done
    step: int = 0  # optimizer steps done
    loss_sum: float = 0.0  # this epoch's training loss, summed over examples
    examples: int = 0
    best: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0
    done: bool = False


class _Trainer:
    def __init__(
        self,
        run: RunDirectory,
        config: TrainConfig,
        model: onnx.ModelProto,
        dataset: Dataset,
        adapter: GraphAdapter | None,
        device: str,
        threads: int | None,
        quiet: bool,
        callback: Callable[[dict[str, Any]], None] | None,
    ) -> None:
        self.run, self.config, self.dataset, self.adapter = run, config, dataset, adapter
        self.threads, self.callback = threads, callback
        self.nan_message = ""
        self.progress = Progress(not quiet)
        self.backend = get_backend(config.backend)
        self.device = self.backend.resolve_device(device)
        self.model = adapter.apply(model) if adapter else model
        self.target = self.model  # the graph the trained weights go back into
        self.cached: dict[str, Any] = {}
        self._prepare()

    # ---- setup ---------------------------------------------------------------------------

    def _prepare(self) -> None:
        c, model = self.config, self.model
        outputs = [o.name for o in model.graph.output]
        self.output = c.output or outputs[0]
        self.types = value_types(model)
        self.output_vi = output_type(self.types, model, self.output)
        shape = tuple(
            d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in self.output_vi.type.tensor_type.shape.dim
        )
        meta = metadata(model)
        self.loss: Loss = (
            get_loss(c.loss) if c.loss else default_loss(meta.get("onnxkit.task"), shape, self.dataset.train.labels)
        )
        self.loss.check_output(self.output_vi)
        self.task = TASK_OF_LOSS[self.loss.name]
        specs = model_inputs(model)
        self.splits = {name: self._bind(self.dataset.split(name), specs, shape) for name in ("train", "validation")}
        if len(self.splits["train"]) == 0:
            raise OnnxkitError(f"the training split of {self.dataset.name!r} is empty; give more data")
        for spec in specs:
            if spec.shape and isinstance(spec.shape[0], int) and spec.shape[0] > 0 and spec.shape[0] != c.batch_size:
                raise OnnxkitError(
                    f"model input {spec.name!r} has a fixed batch size of {spec.shape[0]}; "
                    f"use --batch-size {spec.shape[0]} or export the model with a dynamic batch dimension"
                )
        self.names = label_names(model) or self.dataset.label_names
        self.num_classes = shape[-1] if self.task == "classification" and isinstance(shape[-1], int) else None
        if self.num_classes:
            top = int(self.dataset.train.labels.max())
            if top >= self.num_classes:
                raise OnnxkitError(
                    f"labels go up to {top} but output {self.output!r} has {self.num_classes} scores; "
                    "build the model with as many classes as the data has"
                )
        params = find_parameters(model)
        default = self.adapter.trainable(model) if self.adapter else None
        self.selection = select(model, params, self.output, freeze=c.freeze, train_only=c.train_only, default=default)
        missing = self.backend.unsupported(model, self.selection.trainable, self.output)
        if missing:
            op, node = missing[0]
            other = ", or use the default backend (--backend onnx)" if self.backend.name != DEFAULT else ""
            raise OnnxkitError(
                f"op {op} (node {node}) has no gradient in the {self.backend.name} backend; freeze the parameters "
                f"before it (--freeze / --train-only){other}"
            )
        self.optimizer = c.optimizer_spec()
        self.backend.refuse_optimizer(self.optimizer, c.clip_grad_norm)
        self.trainable_count = sum(params.sizes[n] for n in self.selection.trainable)
        self.frozen_count = sum(params.sizes[n] for n in self.selection.frozen)
        if c.cache_features and not self.adapter:
            self._cache_frozen_features(shape)
        per_epoch = -(-self.splits["train"].num_batches(c.batch_size) // c.grad_accumulation)
        self.steps_per_epoch = per_epoch
        self.total_steps = c.steps or per_epoch * c.epochs
        self.epochs = c.epochs if not c.steps else math.ceil(c.steps / per_epoch)
        self.schedule = Schedule(c.schedule, c.lr, self.total_steps, warmup_steps(c.warmup, self.total_steps))
        has_val = len(self.splits["validation"]) > 0
        self.monitor = c.monitor or ("val_loss" if has_val else "train_loss")
        if self.monitor not in MONITORS:
            raise OnnxkitError(f"unknown metric to monitor {self.monitor!r}; choose from {', '.join(MONITORS)}")
        if self.monitor.startswith("val_") and not has_val:
            raise OnnxkitError(f"cannot monitor {self.monitor}: the validation split is empty")
        if self.monitor in ("val_accuracy", "val_macro_f1") and self.task == "regression":
            raise OnnxkitError(f"{self.monitor} needs a classification loss; monitor val_loss instead")

    def _cache_frozen_features(self, shape: tuple) -> None:
        """Train only the graph after the frozen part, on that part's output computed once."""
        trained = [*self.selection.trainable, *self.selection.updated_buffers]
        rows = sum(len(s) for s in self.splits.values())
        split = cut(self.model, self.output, trained, self.types, rows)
        if split is None:
            return
        started = time.perf_counter()
        self.progress.line(f"running the frozen part once over {rows} examples to cache its output")
        batch = self.config.eval_batch_size or max(self.config.batch_size, 64)
        run = self.backend.inference(split.prefix, device=self.device, threads=self.threads)
        cached = {name: features(split.prefix, self.dataset.split(name), run, batch) for name in self.splits}
        self.model, self.types = split.head, value_types(split.head)
        self.splits = {name: self._bind(s, model_inputs(split.head), shape) for name, s in cached.items()}
        self.cached = {"boundary": split.boundary, "seconds": round(time.perf_counter() - started, 2)}

    def _bind(self, split: Split, specs: list, shape: tuple) -> Split:
        bound = split.feeds_for(specs)  # a new split of the same class (text splits keep padding per batch)
        bound.labels = self.loss.labels_for(split.labels, shape)
        return bound

    def _labels_name(self) -> str:
        taken = {v for node in self.model.graph.node for v in (*node.input, *node.output)}
        taken |= {i.name for i in self.model.graph.input}
        return "labels" if "labels" not in taken else "onnxkit.labels"

    # ---- artifacts and sessions ----------------------------------------------------------

    def _build(self) -> None:
        c = self.config
        problem = training_problem(
            self.model,
            self.output_vi,
            self.loss,
            self.selection,
            self.optimizer,
            self.backend,
            types=self.types,
            clip_grad_norm=c.clip_grad_norm,
            grad_accumulation=c.grad_accumulation,
            dropout=c.dropout,
            seed=c.seed,
            labels_name=self._labels_name(),
        )
        self.backend.build(problem, self.run.artifacts)

    def _checkpoint(self, session: TrainingSession, state: _State) -> None:
        """The backend's checkpoint, then the loop state beside it (JSON) naming the same step."""
        session.save_checkpoint(self.run.last_checkpoint)
        write_text(self.run.loop_state, json.dumps(dataclasses.asdict(state)))

    def _loop_state(self, session: TrainingSession) -> _State:
        try:
            state = _State(**json.loads(self.run.loop_state.read_text()))
        except (OSError, ValueError, TypeError) as e:
            raise OnnxkitError(f"{self.run.loop_state}: the loop state is missing or damaged ({e}); "
                               "the run cannot be resumed, start a new one") from e
        if state.step != session.steps:
            raise OnnxkitError(f"{self.run.loop_state} is at step {state.step} but the checkpoint at step "
                               f"{session.steps}; the run was killed while checkpointing, start a new one")
        return state

    # ---- the loop ------------------------------------------------------------------------

    def train(self, resuming: bool) -> FitResult:
        c = self.config
        if resuming:
            session = self.backend.open(
                self.run.artifacts, device=self.device, checkpoint=self.run.last_checkpoint, threads=self.threads
            )
            state = self._loop_state(session)
            if state.done:
                raise OnnxkitError(f"the run in {self.run.path} has already finished; start a new run to train more")
            self.records = self.run.truncate_metrics(state.step)
            info = self.run.read_json()
        else:
            self._build()
            session = self.backend.open(self.run.artifacts, device=self.device, threads=self.threads)
            state = _State()
            self.records = []
            info = {"config": dataclasses.asdict(c), "versions": _versions()}
        info.update(
            status="running",
            device=self.device,
            dataset={k: len(self.dataset.split(k)) for k in ("train", "validation", "test")},
            loss=self.loss.name,
            task=self.task,
            output=self.output,
            trainable_parameters=self.trainable_count,
            frozen_parameters=self.frozen_count,
            trainable=self.selection.trainable,
            steps_per_epoch=self.steps_per_epoch,
            cached_features=self.cached or None,
        )
        self.run.write_json(info)
        self.progress.line(
            f"training {self.trainable_count:,} parameters ({self.frozen_count:,} frozen) on {self.device}, "
            f"{len(self.splits['train'])} examples, loss {self.loss.name}, run {self.run.path}"
        )
        interrupted = nan = False
        with _Interrupt() as interrupt:
            while not state.done:
                outcome = self._epoch(session, state, interrupt)
                if outcome == "interrupted":
                    interrupted = True
                    break
                if outcome == "nan":
                    nan = True
                    break
        info["status"] = "interrupted" if interrupted else "failed" if nan else "completed"
        self._plot()
        if interrupted:
            self.run.write_json(info)
            raise TrainingInterrupted(self.run.path, self.run.last_checkpoint, state.epoch + 1, state.step)
        if nan:
            info["error"] = self.nan_message
            self.run.write_json(info)
            raise OnnxkitError(self.nan_message)
        return self._finish(session, state, info)

    def _epoch(self, session: TrainingSession, state: _State, interrupt: _Interrupt) -> str:
        c = self.config
        train = self.splits["train"]
        batches = train.batches(c.batch_size, shuffle=c.shuffle, seed=c.seed * 100_003 + state.epoch)
        total = train.num_batches(c.batch_size)
        self.progress.epoch_start(state.epoch + 1, self.epochs, total)
        started = time.perf_counter()
        step_loss, step_examples, in_step = 0.0, 0, 0
        for index, (feeds, labels) in enumerate(batches):
            if index < state.batch:
                continue  # resumed mid-epoch: these batches were done before the checkpoint
            value = session.train_step(feeds, labels)
            if not math.isfinite(value):
                kept = (
                    f"the last good checkpoint is {self.run.last_checkpoint}"
                    if self.run.last_checkpoint.is_file()
                    else "no epoch finished, so no checkpoint was written"
                )
                self.nan_message = (
                    f"training stopped: the loss became {value} in epoch {state.epoch + 1} at step {state.step + 1}; "
                    f"{kept}. Lower the learning rate (--lr) or clip gradients (--clip-grad-norm)"
                )
                return "nan"
            n = len(labels)
            step_loss += value * n
            step_examples += n
            in_step += 1
            if in_step < c.grad_accumulation and index + 1 < total:
                continue
            lr = self.schedule.lr(state.step)
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
                "samples_per_s": state.examples / elapsed if elapsed > 0 else 0.0,
            }
            self._record(record)
            self.progress.step(index + 1, record["loss"], lr, record["samples_per_s"])
            step_loss, step_examples, in_step = 0.0, 0, 0
            if interrupt.requested:
                self._checkpoint(session, state)
                return "interrupted"
            if c.steps and state.step >= c.steps:
                break
        self._end_epoch(session, state, time.perf_counter() - started)
        return "ok"

    def _end_epoch(self, session: TrainingSession, state: _State, seconds: float) -> None:
        c = self.config
        record: dict[str, Any] = {
            "event": "epoch",
            "epoch": state.epoch + 1,
            "step": state.step,
            "train_loss": state.loss_sum / max(1, state.examples),
            "seconds": seconds,
        }
        if len(self.splits["validation"]):
            metrics = self._validate(session)
            record.update({f"val_{k}": v for k, v in metrics.items() if k in ("loss", "accuracy", "macro_f1")})
        value = record[self.monitor]
        better = MONITORS[self.monitor]
        improved = state.best is None or (better(value, state.best) == value and value != state.best)
        if improved:
            state.best, state.best_epoch, state.bad_epochs = value, state.epoch + 1, 0
            if c.keep_best:
                session.save_checkpoint(self.run.best_checkpoint, optimizer_state=False)
        else:
            state.bad_epochs += 1
        stop_early = c.patience is not None and state.bad_epochs >= c.patience
        record["best_epoch"] = state.best_epoch
        state.epoch += 1
        state.batch, state.loss_sum, state.examples = 0, 0.0, 0
        state.done = stop_early or state.epoch >= self.epochs or bool(c.steps and state.step >= c.steps)
        if stop_early:
            record["stopped_early"] = True
        self._checkpoint(session, state)
        self._record(record)
        shown = "  ".join(
            f"{k.replace('_', ' ')} {record[k]:{'.4f' if k == 'val_accuracy' else '.4g'}}"
            for k in ("train_loss", "val_loss", "val_accuracy")
            if k in record
        )
        self.progress.line(f"epoch {record['epoch']}/{self.epochs}  {shown}  ({seconds:.1f}s)")
        if stop_early:
            self.progress.line(f"stopping early: {self.monitor} has not improved for {c.patience} epochs")

    def _validate(self, session: TrainingSession) -> dict[str, Any]:
        c = self.config
        split = self.splits["validation"]
        outputs = [session.eval_step(feeds) for feeds, _ in split.batches(c.eval_batch_size or c.batch_size)]
        labels = self.dataset.validation.labels
        return score(np.concatenate(outputs), labels, self.task, loss=self.loss.name, num_classes=self.num_classes)

    def _record(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        self.run.append_metrics(record)
        if self.callback:
            self.callback(record)

    def _plot(self) -> None:
        if self.records:
            from onnxkit.train.plot import plot_curves

            plot_curves(self.records, self.run.plot)

    # ---- the result ----------------------------------------------------------------------

    def _finish(self, session: TrainingSession, state: _State, info: dict[str, Any]) -> FitResult:
        c = self.config
        use_best = c.keep_best and self.run.best_checkpoint.is_file()
        values = self.backend.checkpoint_parameters(self.run.best_checkpoint) if use_best else session.parameters()
        epochs = [r for r in self.records if r["event"] == "epoch"]
        best = next((r for r in epochs if r["epoch"] == state.best_epoch), epochs[-1] if epochs else {})
        trained = with_weights(self.target, values)
        if self.adapter:
            trained = self.adapter.merge(trained)
        summary = {
            "data": c.data,
            "data_seed": c.data_seed,
            "loss": self.loss.name,
            "optimizer": c.optimizer,
            "lr": c.lr,
            "schedule": c.schedule,
            "batch_size": c.batch_size,
            "epochs": state.epoch,
            "steps": state.step,
            "seed": c.seed,
            "freeze": c.freeze,
            "train_only": c.train_only,
            "trainable_parameters": self.trainable_count,
            "best_epoch": state.best_epoch,
            "validation": {k.removeprefix("val_"): v for k, v in best.items() if k.startswith("val_")},
            "run": str(self.run.path),
            "onnxkit": __version__,
        }
        extra: dict[str, Any] = {"onnxkit.training": summary}
        existing = metadata(trained)
        if "onnxkit.task" not in existing:
            extra["onnxkit.task"] = self.task
        if "onnxkit.labels" not in existing and self.names and self.task != "regression":
            extra["onnxkit.labels"] = self.names
        set_metadata(trained, extra)
        save_model(trained, self.run.model)
        metrics: dict[str, Any] = {
            "epochs": state.epoch,
            "steps": state.step,
            "best_epoch": state.best_epoch,
            "monitor": self.monitor,
            "train_loss": best.get("train_loss"),
            "validation": summary["validation"],
        }
        if c.evaluate_test and len(self.dataset.test):
            metrics["test"] = evaluate(
                trained,
                self.dataset.test,
                batch_size=c.eval_batch_size or max(c.batch_size, 256),
                output=self.output,
                task=self.task,
                loss=self.loss.name,
            )
            shown = ", ".join(f"{k} {metrics['test'][k]:.4f}" for k in ("accuracy", "loss") if k in metrics["test"])
            self.progress.line(f"test: {shown}")
        stopped = any(r.get("stopped_early") for r in epochs)
        info.update(status="completed", result=metrics, stopped_early=stopped)
        self.run.write_json(info)
        return FitResult(
            run_dir=self.run.path,
            model_path=self.run.model,
            metrics=metrics,
            history=epochs,
            stopped_early=stopped,
            trainable=self.selection.trainable,
            frozen=self.selection.frozen,
        )
