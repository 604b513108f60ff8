"""A table's rows: `features` numbers → `layers` ReLU layers of `hidden` units with dropout → `outputs` scores."""

from onnxkit import nn
from onnxkit.errors import OnnxkitError
from onnxkit.zoo import Recipe

TASKS = ("classification", "regression")


def recipe(features: int = 4, outputs: int = 2, hidden: int = 64, layers: int = 2, dropout: float = 0.1,
           task: str = "classification", seed: int = 0) -> Recipe:
    """`outputs`: the classes (one score each, for cross-entropy), or the targets of a row for task=regression.
    What `onnxkit train DATA` builds when given no model (sized to the data); its training is the defaults
    sized to the data (standardised when the data looks unscaled)."""
    if task not in TASKS:
        raise OnnxkitError(f"task={task!r}: choose {' or '.join(TASKS)}")
    if not 0 <= dropout < 1:
        raise OnnxkitError(f"dropout={dropout}: a share from 0 up to (not including) 1")
    nn.manual_seed(seed)
    widths = [features, *[hidden] * layers]
    blocks = [[nn.Linear(i, o), nn.ReLU(), *([nn.Dropout(dropout)] if dropout else [])]
              for i, o in zip(widths, widths[1:], strict=False)]
    mlp = nn.Sequential([layer for block in blocks for layer in block] + [nn.Linear(widths[-1], outputs)])
    return Recipe(mlp, {"x": nn.Input(["batch", features])}, task=task)
