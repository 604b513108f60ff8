"""A model's training recipe: the settings `onnxkit train` and `fit` use where no flag or
argument says otherwise, carried in the model's metadata (`onnxkit.training_recipe`).

A zoo recipe declares one per way of training it — `full` (every parameter), `head`
(`--train-only`, e.g. a new head on a pretrained encoder) and `lora` (LoRA adapters):

    return Recipe(model, inputs, metadata=training_recipes(full=TrainingRecipe(lr=0.01, batch_size=128)))
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from onnxkit.errors import OnnxkitError
from onnxkit.metadata import metadata
from onnxkit.metadata_keys import TRAINING_RECIPE_KEY

if TYPE_CHECKING:
    import onnx

KEY = TRAINING_RECIPE_KEY  # the name tests import
MODES = ("full", "head", "lora")


@dataclass(frozen=True)
class TrainingRecipe:
    """Training settings with `fit`'s names; None leaves the setting to the automatic default.

    `lr` is for `optimizer` (adamw when not given); `lrs` adds learning rates for other
    optimizers by name, used when the user picks one of those instead.
    """

    optimizer: str | None = None
    lr: float | None = None
    lrs: Mapping[str, float] = dataclasses.field(default_factory=dict)
    batch_size: int | None = None
    epochs: int | None = None
    schedule: str | None = None
    warmup: float | None = None
    weight_decay: float | None = None
    monitor: str | None = None
    patience: int | None = None
    label_smoothing: float | None = None  # cross-entropy's; a run whose loss is another trains without it
    standardize: bool | None = None  # False: the recipe was tuned on the raw values, whatever the data looks like

    def lr_for(self, optimizer: str) -> float | None:
        """This recipe's learning rate for `optimizer`, or None when it has none."""
        if optimizer == (self.optimizer or "adamw") and self.lr is not None:
            return self.lr
        return self.lrs.get(optimizer)

    def as_json(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v not in (None, {})}


def training_recipes(**by_mode: TrainingRecipe) -> dict[str, Any]:
    """The metadata entry for a zoo `Recipe(metadata=...)`: one TrainingRecipe per mode."""
    unknown = set(by_mode) - set(MODES)
    if unknown:
        raise OnnxkitError(f"unknown training mode {sorted(unknown)[0]!r}; choose from {', '.join(MODES)}")
    return {TRAINING_RECIPE_KEY: {mode: recipe.as_json() for mode, recipe in by_mode.items()}}


def read_training_recipe(model: onnx.ModelProto, mode: str) -> TrainingRecipe | None:
    """The recipe `model` carries for `mode`, or None."""
    raw = metadata(model).get(TRAINING_RECIPE_KEY)
    if raw is None:
        return None
    try:
        entry = json.loads(raw).get(mode)
        return None if entry is None else TrainingRecipe(**entry)
    except (ValueError, TypeError, AttributeError) as e:
        raise OnnxkitError(f"the model's {TRAINING_RECIPE_KEY} metadata is not a valid training recipe ({e}); "
                           "rebuild the model or remove that entry") from None
