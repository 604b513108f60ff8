"""The settings a run uses where its caller gave none: the model's training recipe first
(`onnxkit.training_recipe`), then defaults that train well on small data.

Explicit arguments always win. Without a recipe's length, training runs at least
`MIN_STEPS` optimizer steps (at least `MIN_EPOCHS` epochs, at most `MAX_EPOCHS`) and stops
early once the validation loss has not improved for a tenth of them, but not before half of
`MIN_STEPS` (a network may sit on a plateau for hundreds of steps first: a sigmoid MLP on
scikit-learn's circles did for 600, and stopped at chance); the best epoch is kept.
So 100 rows train for hundreds of epochs and 100,000 rows for a few.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from onnxkit.train.optim import Optimizer, get_optimizer
from onnxkit.training_recipe import TrainingRecipe

BATCH_SIZE = 32
MIN_STEPS = 2000
MIN_EPOCHS, MAX_EPOCHS = 5, 500
MIN_PATIENCE = 5


@dataclass
class Settings:
    """The settings that `fit` takes as None for 'not given', resolved."""

    optimizer: str | Optimizer | None = None
    lr: float | None = None
    weight_decay: float | None = None
    batch_size: int | None = None
    epochs: int | None = None
    steps: int | None = None
    schedule: str | None = None
    warmup: float | None = None
    monitor: str | None = None
    patience: int | None = None
    patience_from_step: int = 0  # early stopping waits for this many optimizer steps
    label_smoothing: float | None = None  # cross-entropy's (the run's setup applies a recipe's to that loss only)


def training_mode(train_only: Any, adapter: Any) -> str:
    """The recipe mode a run uses: lora with an adapter, head with train_only globs, else full."""
    return "lora" if adapter is not None else "head" if train_only else "full"


def resolve(
    given: Settings,
    recipe: TrainingRecipe | None,
    *,
    train_rows: int,
    grad_accumulation: int,
    has_validation: bool,
) -> tuple[Settings, str | None]:
    """Fill what `given` leaves None from `recipe`, then from the automatic defaults. Returns the
    settings and one line saying where the defaults came from (None when everything was given)."""
    r = recipe or TrainingRecipe()
    spec = given.optimizer if isinstance(given.optimizer, Optimizer) else None
    name = spec.name if spec else (given.optimizer or r.optimizer or "adamw").lower()
    own = name == (r.optimizer or "adamw")  # the recipe's optimizer: its weight decay applies too
    out = Settings(
        optimizer=_first(given.optimizer, name),
        lr=_first(given.lr, r.lr_for(name), get_optimizer(name).default_lr),
        weight_decay=given.weight_decay if given.weight_decay is not None or spec or not own else r.weight_decay,
        batch_size=_first(given.batch_size, r.batch_size, BATCH_SIZE),
        schedule=_first(given.schedule, r.schedule, "constant"),
        warmup=_first(given.warmup, r.warmup, 0),
        monitor=_first(given.monitor, r.monitor if has_validation else None),  # val_* needs a validation split
        patience=given.patience,
        steps=given.steps,
        epochs=given.epochs,
        label_smoothing=_first(given.label_smoothing, r.label_smoothing),
    )
    automatic = given.epochs is None and given.steps is None and r.epochs is None
    if given.epochs is not None or given.steps is not None:
        out.epochs = _first(given.epochs, 1)  # with steps given, the steps decide
    elif r.epochs is not None:
        out.epochs, out.patience = r.epochs, _first(given.patience, r.patience)
    else:
        per_epoch = math.ceil(math.ceil(train_rows / max(1, out.batch_size)) / grad_accumulation)
        out.epochs = min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(MIN_STEPS / per_epoch)))
        if has_validation and given.patience is None:
            out.patience = max(MIN_PATIENCE, math.ceil(out.epochs / 10))
            out.patience_from_step = MIN_STEPS // 2
    defaulted = [f for f in ("optimizer", "lr", "batch_size", "schedule", "epochs") if getattr(given, f) is None]
    if given.label_smoothing is None and r.label_smoothing:  # said even where every other setting was given
        defaulted.append("label_smoothing")
    if not defaulted or (given.steps is not None and defaulted == ["epochs"]):
        return out, None
    used = [f for f in ("optimizer", "lr", "batch_size", "schedule", "warmup", "epochs", "label_smoothing")
            if getattr(given, f) is None and getattr(r, f) is not None]
    source = ("the model's training recipe" if used or "lr" in defaulted and r.lr_for(name)
              else "defaults for this data" if automatic else "defaults")  # only the length follows the data
    if len(defaulted) == 1:  # the flags set all but one: name it ('defaults' read as if no flag had been taken, and
        # 'defaults for the optimizer: adamw lr 0.01, ...' as if 0.01 were adamw's default rate)
        word = _WORDS[defaulted[0]]
        source = {"the model's training recipe": f"the {word} of the model's training recipe",
                  "defaults for this data": f"the {word} for this data"}.get(source, f"the default {word}")
    return out, _note(out, source, automatic)


_WORDS = {"optimizer": "optimizer", "lr": "learning rate", "batch_size": "batch size", "schedule": "schedule",
          "epochs": "length", "label_smoothing": "label smoothing"}


def _first(*values: Any) -> Any:
    """The first value that is not None."""
    return next((v for v in values if v is not None), None)


def _note(s: Settings, source: str, automatic: bool) -> str:
    name = s.optimizer.name if isinstance(s.optimizer, Optimizer) else s.optimizer
    parts = [f"{name} lr {s.lr:g}", f"batch {s.batch_size}"]
    if s.schedule != "constant" or s.warmup:
        parts.append(f"{s.schedule} schedule" + (f", warm-up {s.warmup:g}" if s.warmup else ""))
    if s.label_smoothing:
        parts.append(f"label smoothing {s.label_smoothing:g}")
    if s.steps is None:
        parts.append(f"{'up to ' if automatic and s.patience else ''}{s.epochs} epoch{'s' if s.epochs != 1 else ''}")
    if automatic and s.patience:
        parts.append(f"early stopping after {s.patience} epochs without a better validation loss"
                     + (f", from step {s.patience_from_step}" if s.patience_from_step else ""))
    return f"training with {source}: {', '.join(parts)} (flags override them)"
