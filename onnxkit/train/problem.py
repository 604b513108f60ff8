"""From an inference-form model and what to train to a backend's `TrainingProblem`: the
training form, the objective and the buffers the forward pass updates. `fit` builds its
problem here, and so can a benchmark or a test (`open_training`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import onnx

from onnxkit.graph_walks import value_types
from onnxkit.train.backend import Backend, TrainingProblem, TrainingSession
from onnxkit.train.backends import get_backend
from onnxkit.train.losses import Loss, get_loss
from onnxkit.train.objective import build_objective
from onnxkit.train.optim import Optimizer, get_optimizer
from onnxkit.train.training_form import (
    Selection,
    buffer_updates,
    find_parameters,
    output_type,
    select,
    trainable_form,
    training_form,
)


def training_problem(
    model: onnx.ModelProto,
    output: onnx.ValueInfoProto,
    loss: Loss,
    selection: Selection,
    optimizer: Optimizer,
    backend: Backend,
    *,
    types: dict[str, onnx.ValueInfoProto],
    clip_grad_norm: float | None = None,
    grad_accumulation: int = 1,
    dropout: bool = True,
    seed: int = 0,
    labels_name: str = "labels",
    validation_classes: int | None = None,
    batch_size: int | None = None,
) -> TrainingProblem:
    """The problem `backend` builds its artifacts from (`validation_classes`, `batch_size`: see `TrainingProblem`)."""
    form = training_form(
        model, output, updated_buffers=selection.updated_buffers, types=types, dropout=dropout, seed=seed,
        unbiased_running_var=backend.unbiased_running_var,
    )
    objective = build_objective(
        form,
        loss,
        output.name,
        labels_name,
        l2=backend.l2_in_objective(optimizer),
        l2_params=selection.trainable,
        accumulation=grad_accumulation,
    )
    in_form = {t.name for t in form.graph.initializer}
    return TrainingProblem(
        objective=objective,
        eval_model=model,
        output=output,
        trainable=selection.trainable,
        optimizer=optimizer,
        buffers=buffer_updates(form),
        frozen=[n for n in selection.frozen if n in in_form],
        clip_grad_norm=clip_grad_norm,
        grad_accumulation=grad_accumulation,
        labels_name=labels_name,
        validation_classes=validation_classes,
        batch_size=batch_size,
    )


def open_training(
    model: onnx.ModelProto,
    directory: Path,
    *,
    backend: str | None = None,
    loss: str = "cross-entropy",
    label_smoothing: float = 0.0,
    optimizer: str | Optimizer = "adamw",
    train_only: Sequence[str] = (),
    freeze: Sequence[str] = (),
    dropout: bool = True,
    grad_accumulation: int = 1,
    device: str = "cpu",
    threads: int | None = None,
    validation_classes: int | None = None,
    batch_size: int | None = None,
) -> TrainingSession:
    """A training session on `model`'s first output, built the way `fit` builds it, in the new
    folder `directory` (for benchmarks and tests; `fit` adds data, the loop and checkpoints). With
    `validation_classes`, its eval graph also sums a classifier's validation metrics (`score_step`), as fit's does;
    `batch_size`, the rows of its training batches, as fit gives it (`TrainingProblem`); `label_smoothing`,
    cross-entropy's."""
    chosen = get_backend(backend)
    model, _ = trainable_form(model)
    types = value_types(model)
    output = output_type(types, model, model.graph.output[0].name)
    selection = select(model, find_parameters(model), output.name, freeze=freeze, train_only=train_only)
    spec = get_optimizer(optimizer) if isinstance(optimizer, str) else optimizer
    objective = get_loss(loss).smoothed(label_smoothing) if label_smoothing else get_loss(loss)
    problem = training_problem(model, output, objective, selection, spec, chosen, types=types, dropout=dropout,
                               grad_accumulation=grad_accumulation, validation_classes=validation_classes,
                               batch_size=batch_size)
    directory.mkdir(parents=True)
    chosen.build(problem, directory)
    return chosen.open(directory, device=chosen.resolve_device(device), threads=threads)
