"""`fit`: train or fine-tune any inference-form ONNX model and write a run directory.

`fit` turns its arguments (checked by `arguments`) into a `TrainConfig` (stored in run.json, which
`resume` reads back), prepares the problem (`setup.Setup`: the loss, the data bound to the model's inputs, what
trains, the frozen-feature cut, the schedule), has the backend build its artifacts and open a session, runs the
`Trainer` with its callbacks, and writes the trained weights back into the original inference graph, evaluated on
the test split.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import os
import platform
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnxkit import __version__
from onnxkit.batch_axis import as_exported
from onnxkit.data import (
    Dataset,
    data_sha256,
    from_arrays,
    in_model_order,
    in_trained_columns,
    load_dataset,
    model_inputs,
)
from onnxkit.errors import OnnxkitError
from onnxkit.evaluate import (
    evaluate,
    fixed_batch_size,
    shown_metric,
)
from onnxkit.files import (
    DiskError,
    check_fits_protobuf,
    model_location,
    save_model,
    sha256,
)
from onnxkit.metadata import metadata, set_metadata
from onnxkit.metadata_keys import (
    COLUMNS_KEY,
    LABELS_KEY,
    OUTPUT_KEY,
    PADDING_KEY,
    SCORES_KEY,
    TASK_KEY,
    TRAINING_KEY,
)
from onnxkit.runtime.session import check_threads
from onnxkit.signals import handled, held_back
from onnxkit.train import distributed
from onnxkit.train.arguments import (
    check_arguments,
    check_flags,
    check_names,
    check_numbers,
    check_out_dir_outside_data,
    check_seeds,
    keywords_named,
    patterns,
    reals,
)
from onnxkit.train.backend import TrainingSession
from onnxkit.train.backends import default_backend
from onnxkit.train.callbacks import (
    BestModel,
    Callback,
    EarlyStopping,
    MetricsWriter,
    NanGuard,
    Plot,
    ProgressBar,
    Record,
    RecordCallback,
)
from onnxkit.train.config import FitResult, GraphAdapter, TrainConfig, TrainingInterrupted, adapter_settings
from onnxkit.train.default_model import default_model, unmodelled_data
from onnxkit.train.defaults import Settings, resolve, training_mode
from onnxkit.train.export import with_weights
from onnxkit.train.losses import get_loss
from onnxkit.train.optim import Optimizer, get_optimizer
from onnxkit.train.progress import Progress
from onnxkit.train.resume import (
    data_reference,
    interrupted_at_last_checkpoint,
    load_fingerprinted,
    on_disk,
    resumed,
    run_adapter,
)
from onnxkit.train.run_directory import RunDirectory
from onnxkit.train.setup import Setup
from onnxkit.train.standardize import (
    unscale_output,
)
from onnxkit.train.trainer import LoopState, Trainer
from onnxkit.train.weights import load_tensors
from onnxkit.training_recipe import read_training_recipe


@distributed.fails_together
@keywords_named
def fit(
    model: str | os.PathLike | onnx.ModelProto | None = None,
    data: str | os.PathLike | Dataset | tuple[Any, Any] | None = None,
    out_dir: str | os.PathLike | None = None,
    *,
    loss: str | None = None,
    label_smoothing: float | None = None,
    optimizer: str | Optimizer | None = None,
    lr: float | None = None,
    weight_decay: float | None = None,
    clip_grad_norm: float | None = None,
    schedule: str | None = None,
    warmup: float | None = None,
    epochs: int | None = None,
    steps: int | None = None,
    batch_size: int | None = None,
    grad_accumulation: int = 1,
    eval_batch_size: int | None = None,
    seed: int = 0,
    data_seed: int = 0,
    label: str | None = None,
    drop: str | Sequence[str] = (),
    shuffle: bool = True,
    dropout: bool = True,
    freeze: str | Sequence[str] = (),
    train_only: str | Sequence[str] = (),
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
    standardize: bool | None = None,
    resume: str | os.PathLike | None = None,
    quiet: bool = True,
    callback: Callable[[dict[str, Any]], None] | None = None,
    callbacks: Sequence[Callback] = (),
) -> FitResult:
    """Train `model` (a path or ModelProto, inference form) on `data`; write the run to `out_dir`. With `model` None
    (`fit(data=..., out_dir=...)`), a zoo model sized to the data is built and trained (`train.default_model`:
    tabular-mlp for a table, image-cnn for images), said in the first progress line and recorded in run.json.

    Returns a `FitResult`: the run folder, the trained model's path (model.onnx), its metrics and history.

    - `data`: a built-in dataset name, an .npz/.csv file, a `Dataset` (`onnxkit.data.dataset_from_arrays`
      makes one from arrays), or `(X, y)`: features (an array, or a dict of them by input name) and labels;
      split into train / validation / test by `data_seed`. `label`: a CSV's label column
      by its header (default: the one the model was trained on, else the one headed label, labels, target, y or
      class, else the last; a text CSV's, the one beside `text`; the model records its header, whichever it was, for
      eval and predict to find it by name). `drop`: a CSV's or Parquet table's columns left
      out, by their headers (a column that gives the labels away; a row id such as Kaggle's PassengerId, which the
      model train builds leaves out by default); the model records the columns it trained on, so eval and predict
      read those by name and leave the others out too.
    - `loss`: cross-entropy, bce-with-logits, mse or l1 (default: from the model's
      task metadata, else from its output and the labels). `label_smoothing` ε (cross-entropy's, as PyTorch's
      `CrossEntropyLoss(label_smoothing=)`): each target is 1 - ε on its class plus ε spread over all classes; the
      training loss is that, validation and test report plain cross-entropy (default: the model's training
      recipe's where the loss is cross-entropy, else 0).
    - `optimizer`: a name (sgd, adam, adamw, adagrad, rmsprop, adadelta) or an object from
      `onnxkit.train.optim` holding its options (torch.optim's names and defaults);
      `lr` defaults to torch's for that optimizer; `weight_decay` overrides the
      optimizer's; `clip_grad_norm` clips the global gradient norm; `schedule`:
      constant, linear or cosine with `warmup` steps (or a fraction of all steps when below 1).
    - `backend`: onnx (onnxkit's own autodiff, any ONNX Runtime) or ort-training.
    - `epochs`, or `steps` optimizer steps; `grad_accumulation` batches per step of `batch_size` examples;
      `eval_batch_size`: the batch size of validation and test (default: batch_size; 256 at least for test).
    - `seed`: the shuffling and dropout seed; `shuffle=False` keeps the training split's order;
      `dropout=False` trains with Dropout off.
    - Settings left None come from the model's training recipe (`onnxkit.training_recipe`
      metadata, for full training, `train_only` head training or an `adapter`), else from
      defaults that follow the data (`onnxkit.train.defaults`): adamw at torch's lr, batch 32,
      at least 2,000 steps with early stopping on the validation loss.
    - `freeze` / `train_only`: globs over parameter names (frozen ones stay bit-identical).
    - `cache_features`: when only a head after a frozen part trains, run the frozen
      part once and train the head on its cached output (see `frozen_features`).
    - `standardize`: put `(x - mean) / std` of the training split's features in front of the
      model (and, for regression, standardise the targets and un-scale the output in the graph);
      see `standardize`. None (the default): on when the features or regression targets are
      clearly unscaled and the whole model trains (no freeze, train_only or adapter), which is
      said in one line; False trains on the raw values.
    - `output`: the output the loss reads, for a model with several (default: the one an earlier run fit, else
      the scores beside a first output that is the predicted label: a scikit-learn classifier's probabilities, a
      PyTorch export's logits when it returns (logits.argmax(1), logits); else the first).
    - `monitor` (val_loss, val_accuracy, val_macro_f1, train_loss) picks the best
      epoch; `patience` stops after that many epochs without improvement; `keep_best` writes the
      best epoch's weights into model.onnx (False: the last epoch's); `evaluate_test=False` skips the test split.
    - `device`: auto, cpu, cuda or cuda:N; `threads`: intra-op CPU threads (default: one per core).
    - `adapter`: a `GraphAdapter` such as `onnxkit.train.lora.LoraAdapter`, which trains in place of the weights.
    - `resume`: a run directory; continues from its last checkpoint with its stored
      settings, so the settings above are left out; `data` too, unless the run trained on a Dataset
      object: then that same Dataset again (checked by `Dataset.fingerprint`).
    - `callback(record)` sees every metrics.jsonl record as it is made; `callbacks` are
      `onnxkit.train.callbacks.Callback` objects, called after the built-in ones.
    - `quiet` (the default): print nothing; False shows progress and the settings chosen on stderr. Warnings
      (one class only, weights that stay fixed, ...) come quietly as `warnings.warn(..., TrainingWarning)`.

    Ctrl-C or SIGTERM finishes the optimizer step, writes a checkpoint and raises TrainingInterrupted.
    Run by several MPI ranks (`mpiexec -n N`), it trains data-parallel (`onnxkit.train.distributed`); every
    rank returns worker 0's FitResult once worker 0 has written the run, so its paths are the run's (on worker
    0's machine, or a filesystem the ranks share), not the scratch copy another rank trained in.
    """
    if resume is not None:
        _refuse_settings_on_resume(locals())
    check_seeds(seed=seed, data_seed=data_seed)
    check_threads(threads)  # a session refused too many only after the data was read and the graphs were built
    data = from_arrays(data, seed=data_seed)  # data=(X, y): a Dataset of those arrays
    check_arguments(model, data, out_dir, optimizer, callback, callbacks, freeze, train_only, drop)
    check_flags(shuffle=shuffle, dropout=dropout, keep_best=keep_best, evaluate_test=evaluate_test,
                 cache_features=cache_features, quiet=quiet, standardize=standardize)
    check_names(loss=loss, schedule=schedule, output=output, monitor=monitor, device=device, backend=backend,
                 label=label)
    lr, weight_decay, clip_grad_norm, warmup, label_smoothing = reals(
        lr=lr, weight_decay=weight_decay, clip_grad_norm=clip_grad_norm, warmup=warmup, label_smoothing=label_smoothing)
    freeze, train_only, drop = patterns(freeze), patterns(train_only), patterns(drop)
    world = distributed.current_world()
    if world is not None:  # ranks other than 0 get a scratch run folder; threads default to cores / ranks; a GPU each
        out_dir, resume, threads, quiet, device = world.enter(out_dir, resume, backend, threads, quiet, device)
    made = None  # the zoo model built for the data when no model is given
    if resume is not None:
        run, config, proto, dataset = resumed(resume, data)
        note = None
    else:
        if model is None and data is None:
            raise OnnxkitError("give training data (and the model to train, else one is built for the data), or "
                               "resume a run")
        if out_dir is None:
            raise OnnxkitError("give an output folder for the run (out_dir / -o)")
        if data is None:
            raise OnnxkitError("give training data: a dataset name, a .npz/.csv file or a Dataset")
        check_out_dir_outside_data(out_dir, data)
        if epochs is not None and steps is not None:
            raise OnnxkitError("give epochs or steps, not both: steps end the run wherever it is in its epochs",
                               params=["epochs", "steps"])
        if model is None:
            if adapter is not None:  # a LoRA run on the fresh model it would build: its random weights, frozen
                raise OnnxkitError(f"{type(adapter).__name__} adapts a trained model's weights, and with no model "
                                   "given train builds a fresh one for the data: give the model to adapt, or leave "
                                   "the adapter out", params=["adapter", "model"])
            read = data if isinstance(data, Dataset) else unmodelled_data(data, seed=data_seed, label=label, drop=drop)
            model, made = default_model(read, data.name if isinstance(data, Dataset) else str(data),
                                        get_loss(loss).name if loss else None, standardize)
        if isinstance(model, onnx.ModelProto):
            proto, model_path = model, None
            check_fits_protobuf(proto, "the model", "train")
        else:
            given = model_location(Path(model))  # a link kept where its weights are beside it
            proto, fingerprint, _ = load_fingerprinted(given)  # its errors name the model as given
            model_path = Path(os.path.abspath(given))  # run.json's: eval and resume find it from any folder
        if isinstance(data, Dataset) and label is not None:
            raise OnnxkitError("label names a CSV's label column; a Dataset has its labels", params=["label"])
        if isinstance(data, Dataset) and drop:
            raise OnnxkitError("drop names a CSV's columns; a Dataset has its arrays (build it without them)",
                               params=["drop"])
        dataset = (in_model_order(in_trained_columns(data, proto), proto) if isinstance(data, Dataset)
                   else in_model_order(read, proto) if made  # as read for the model built for it
                   else load_dataset(data, seed=data_seed, model=proto, label=label, drop=drop))
        if label is None and not isinstance(data, Dataset):  # recorded for eval to find the labels by name
            label = dataset.label_header
        if batch_size is None:  # a model that fixes its batch size trains at that size
            batch_size = fixed_batch_size(model_inputs(proto))
        given = Settings(optimizer=optimizer, lr=lr, weight_decay=weight_decay, batch_size=batch_size, epochs=epochs,
                         steps=steps, schedule=schedule, warmup=warmup, monitor=monitor, patience=patience,
                         label_smoothing=label_smoothing)
        recipe = read_training_recipe(proto, training_mode(train_only, adapter))
        chosen, note = resolve(given, recipe, train_rows=len(dataset.train), grad_accumulation=grad_accumulation,
                               has_validation=len(dataset.validation) > 0)
        if standardize is None and recipe is not None:  # a recipe tuned on the raw values says so
            standardize = recipe.standardize
        if standardize is None and made is not None:  # pixels past 1 (0-255) for a model that cannot rescale them
            standardize = made.standardize
        spec = _optimizer(chosen.optimizer, chosen.weight_decay)
        run = RunDirectory.new(out_dir)
        config = TrainConfig(
            model=str(model_path or run.base_model.resolve()),
            model_sha256=fingerprint if model_path else "",
            data=data_reference(data),
            data_seed=data_seed,
            label=label,
            drop=drop,
            output=output,
            loss=get_loss(loss).name if loss else None,
            label_smoothing=label_smoothing,
            optimizer=spec.name,
            optimizer_options=_json_options(spec),
            lr=chosen.lr,
            clip_grad_norm=clip_grad_norm,
            schedule=str(chosen.schedule),
            warmup=float(chosen.warmup or 0),
            epochs=chosen.epochs,
            steps=steps,
            batch_size=chosen.batch_size,
            grad_accumulation=grad_accumulation,
            eval_batch_size=eval_batch_size,
            seed=seed,
            shuffle=shuffle,
            dropout=dropout,
            freeze=list(freeze),
            train_only=list(train_only),
            monitor=chosen.monitor,
            patience=chosen.patience,
            patience_from_step=chosen.patience_from_step,
            keep_best=keep_best,
            evaluate_test=evaluate_test,
            backend=backend or default_backend(),
            adapter=type(adapter).__name__ if adapter else None,
            adapter_settings=adapter_settings(adapter),
            data_sha256=data_sha256(data) if on_disk(data) else "",
            data_in_memory=isinstance(data, Dataset),
            data_fingerprint=dataset.fingerprint() if isinstance(data, Dataset) else "",
            cache_features=cache_features,
            standardize=standardize,
            model_recipe={"name": made.recipe, "options": made.options} if made else None,
        )
        check_numbers(config.epochs, config.steps, config.batch_size, config.grad_accumulation, config.patience,
                       config.eval_batch_size)
        if not config.lr > 0:
            raise OnnxkitError(f"lr must be positive, got {config.lr}", params=["lr"])
        if clip_grad_norm is not None and not clip_grad_norm > 0:
            raise OnnxkitError(f"clip_grad_norm must be positive, got {clip_grad_norm}", params=["clip_grad_norm"])
        if label_smoothing is not None and not 0 <= label_smoothing <= 1:
            raise OnnxkitError(f"label_smoothing must be between 0 and 1, got {label_smoothing}",
                               params=["label_smoothing"])
    adapter = run_adapter(config, adapter)
    progress = Progress(not quiet, warn=world is None or world.rank == 0)  # one rank's warnings
    if made:
        progress.line(made.line(run.base_model))
    setup = Setup(run, config, proto, dataset, adapter, device, threads, progress)  # checks everything
    if note:
        setup.progress.line(note)
    if resume is None:
        run.make()
    with run.lock(new=resume is None):  # one process per run folder
        resuming = resume is not None and run.has_checkpoint()
        if resume is not None and not resuming:
            run.restart()  # killed before its first checkpoint: train again from the start
        try:
            if not config.model_sha256:  # given as a ModelProto: the run keeps the starting model
                save_model(proto, config.model)
                config.model_sha256 = sha256(Path(config.model))
            given = [RecordCallback(callback)] if callback else []
            result = _train(setup, resuming=resuming, callbacks=[*given, *callbacks])
            return result if world is None else world.broadcast(result)  # the others' runs were scratch copies
        except Exception:
            if resume is None and not run.has_checkpoint():
                run.discard()  # failed before its first checkpoint: nothing in it to resume
            raise
        except BaseException:  # a stop: a run that began (run.json) stays, to resume; one stopped while its graphs
            if resume is None and not run.run_json.is_file():  # were built left artifacts/ and a lock, unresumable
                run.discard()
            raise


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


def _versions() -> dict[str, str]:
    import onnxruntime

    return {
        "onnxkit": __version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def _labels_column(setup: Setup) -> str:
    """', labels from 'price' (column 5)' for a CSV's data: a feature column taken for the labels shows here."""
    column = setup.dataset.label_column
    return f", labels from {column}" if column else ""


def _on_output(setup: Setup) -> str:
    """' on output NAME (of A, B, ...)' for a model with several outputs: which one the loss reads."""
    outputs = [o.name for o in setup.target.graph.output]
    if len(outputs) < 2:
        return ""
    return f" on output {setup.output!r} (of {', '.join(outputs)})"


def _train(setup: Setup, resuming: bool, callbacks: list[Callback]) -> FitResult:
    """Run the trainer with the built-in callbacks, then `callbacks`; keep run.json's status current."""
    c, run, progress = setup.config, setup.run, setup.progress
    world = distributed.current_world()
    session = world.open_session(setup, resuming) if world else setup.open_session(resuming)
    records: list[Record] = []
    best = BestModel(setup.monitor, run.best_checkpoint if c.keep_best else None)
    stack: list[Callback] = [NanGuard(), best]
    if c.patience is not None:
        stack.append(EarlyStopping(setup.monitor, c.patience, c.patience_from_step))
    stack.append(MetricsWriter(run, records))
    if progress.enabled:
        stack.append(ProgressBar(progress))
    stack += [*callbacks, Plot(run.plot, records)]  # the plot last: once everything else has ended
    if world:
        stack.append(distributed.StopTogether(world))
    has_val = len(setup.splits["validation"]) > 0
    trainer = Trainer(session, setup.splits["train"], c, epochs=setup.epochs, schedule=setup.schedule, run=run,
                      validate=setup.validate if has_val else None, callbacks=stack, log=progress.line,
                      drop_last=setup.fixed is not None)
    if resuming:
        trainer.restore()
        records += run.truncate_metrics(trainer.state.step, trainer.state.epoch)
        info = run.read_json()
        if trainer.state.done:  # trained to the end, but its model or its completed run.json was not written
            progress.line(f"the run in {run.path} had finished training; writing its model again")
            if records and not run.plot.is_file():  # killed before its plot was drawn
                Plot(run.plot, records).on_train_end(trainer, "completed")
            return _finish(setup, session, trainer.state, best.best_epoch, records, info)
        # where it goes on, as the stop said where it ended ('interrupted in epoch N after step S')
        progress.line(f"resuming the run in {run.path} in epoch {trainer.state.epoch + 1} after step "
                      f"{trainer.state.step}, from its last checkpoint")
    else:
        info = {"config": dataclasses.asdict(c), "versions": _versions()}
    info.update(
        status="running",
        device=setup.device,
        dataset={k: len(setup.dataset.split(k)) for k in ("train", "validation", "test")},
        label_column=setup.dataset.label_column,
        loss=setup.loss.name,
        task=setup.task,
        output=setup.output,
        trainable_parameters=setup.trainable_count,
        frozen_parameters=setup.frozen_count,
        trainable=setup.selection.trainable,
        steps_per_epoch=setup.steps_per_epoch,
        cached_features=setup.cached or None,
    )
    run.write_json(info)
    progress.line(
        f"training {setup.trainable_count:,} parameters ({setup.frozen_count:,} frozen) on {setup.device}, "
        f"{len(setup.splits['train'])} examples{_labels_column(setup)}, loss {setup.loss.name}{_on_output(setup)}, "
        f"run {run.path}"
    )
    try:
        state = trainer.fit()
        return _finish(setup, session, state, best.best_epoch, records, info)
    except (TrainingInterrupted, KeyboardInterrupt, SystemExit) as e:  # KeyboardInterrupt: a stop before the loop
        # began; SystemExit: a callback's sys.exit (the run left saying "running")
        with handled(lambda *_: None):  # further stops while it says so: the run is stopping already
            with held_back(commit=True):  # a second Ctrl-C lands once the status is written (it cut the write short)
                info["status"] = "interrupted"
                run.write_json(info)
            if type(e) is KeyboardInterrupt and run.has_checkpoint():
                raise interrupted_at_last_checkpoint(run) from None
        raise
    except Exception as e:
        info.update(status="failed", error=str(e))
        with contextlib.suppress(DiskError):  # the disk that failed the run may refuse this too
            run.write_json(info)
        if isinstance(e, DiskError) and run.has_checkpoint():
            raise DiskError(f"{e}; then continue the run from its last checkpoint with resume={run.path}",
                            params=["resume"]) from e
        raise


# the arguments fit(resume=...) takes: where and how the run goes on, and the Dataset it trained on (the CLI's flags:
# cli/train.KEPT_ON_RESUME)
RESUME_ARGUMENTS = frozenset({"resume", "data", "device", "threads", "quiet", "callback", "callbacks"})


def _refuse_settings_on_resume(arguments: dict[str, Any]) -> None:
    """Refuse settings given beside `resume` (any argument of `fit` but RESUME_ARGUMENTS that is not its default):
    the run goes on with its stored ones (seed=5 or freeze=... went unheeded without a word)."""
    defaults = {name: p.default for name, p in inspect.signature(fit).parameters.items()}
    given = [name for name, value in arguments.items() if name not in RESUME_ARGUMENTS and value != defaults[name]
             and not (defaults[name] == () and not value)]  # freeze=[] is freeze=()
    if given:
        raise OnnxkitError(f"resume continues a run with its stored settings; leave out {', '.join(given)} (or "
                           "start a new run with them)", params=["resume", *given])


def _finish(
    setup: Setup,
    session: TrainingSession,
    state: LoopState,
    best_epoch: int | None,
    records: list[Record],
    info: dict[str, Any],
) -> FitResult:
    """Write the trained model (best or last weights) with its metadata, evaluate it, complete run.json."""
    c, run = setup.config, setup.run
    use_best = c.keep_best and run.best_checkpoint.is_file()
    values = load_tensors(run.best_checkpoint) if use_best else session.parameters()
    epochs = [r for r in records if r["event"] == "epoch"]
    last = epochs[-1] if epochs else {}
    written = next((r for r in epochs if r["epoch"] == best_epoch), last) if use_best else last  # model.onnx's epoch
    trained = as_exported(with_weights(setup.target, values))
    if setup.adapter:
        trained = setup.adapter.merge(trained)
    if setup.target_scale is not None:
        trained = unscale_output(trained, setup.output, setup.target_scale)
    summary = {
        "data": c.data,
        "data_seed": c.data_seed,
        "data_in_memory": c.data_in_memory,
        **({"data_sha256": c.data_sha256} if c.data_sha256 else {}),  # eval's default data is to be the same
        **({"label": c.label} if c.label is not None else {}),  # eval's CSV label column, by default
        "loss": setup.loss.name,
        "optimizer": c.optimizer,
        "lr": c.lr,
        "schedule": c.schedule,
        "batch_size": c.batch_size,
        "epochs": state.epoch,
        "steps": state.step,
        "seed": c.seed,
        "freeze": c.freeze,
        "train_only": c.train_only,
        "standardize": c.standardize,
        "trainable_parameters": setup.trainable_count,
        "best_epoch": best_epoch,
        "validation": {k.removeprefix("val_"): v for k, v in written.items() if k.startswith("val_")},
        "run": str(run.path),
        "onnxkit": __version__,
    }
    # the task trained for (a loss given in place of the recipe's task changes it), read by eval and predict
    kept = {k: v for k, v in metadata(trained).items() if k not in (LABELS_KEY, COLUMNS_KEY)}
    extra: dict[str, Any] = {**kept, TRAINING_KEY: summary, TASK_KEY: setup.task}
    if setup.dataset.columns:  # predict and eval read a CSV's columns by these names, in this order
        extra[COLUMNS_KEY] = list(setup.dataset.columns)
    if setup.names and setup.task != "regression":  # the names it learned: the data's own, unless the model's
        extra[LABELS_KEY] = setup.names
    if setup.probabilities:  # so predict neither applies softmax / sigmoid again nor thresholds at 0
        extra[SCORES_KEY] = "probabilities"
    if setup.padded_text:  # a recurrent model reads text as it trained on it: padded to its full length
        extra[PADDING_KEY] = "max_length"
    if c.output:  # eval and predict score it, and training again fits it
        extra[OUTPUT_KEY] = c.output
    set_metadata(trained, extra, keep=False)
    save_model(trained, run.model)
    metrics: dict[str, Any] = {
        "epochs": state.epoch,
        "steps": state.step,
        "best_epoch": best_epoch,
        "monitor": setup.monitor,
        "train_loss": written.get("train_loss"),
        "validation": summary["validation"],
    }
    if c.evaluate_test and len(setup.dataset.test):
        metrics["test"] = evaluate(
            trained,
            setup.dataset.test.with_fixed_shapes() if setup.padded_text else setup.dataset.test,
            batch_size=c.eval_batch_size or max(c.batch_size, 256),
            output=c.output,  # the output asked for: setup.output may be the tensor a ZipMap reads
            task=setup.task,
            loss=setup.loss.name,
        )
        test = metrics["test"]
        shown = ", ".join(f"{k} {shown_metric(test[k])}" for k in ("accuracy", "r2", "mae", "loss")
                          if test.get(k) is not None)
        setup.progress.line(f"test: {shown}")
    stopped = state.stopped_early or any(r.get("stopped_early") for r in epochs)  # records: older runs
    info.update(status="completed", result=metrics, stopped_early=stopped)
    run.write_json(info)
    return FitResult(
        run_dir=run.path,
        model_path=run.model,
        metrics=metrics,
        history=epochs,
        stopped_early=stopped,
        trainable=setup.selection.trainable,
        frozen=setup.selection.frozen,
    )
