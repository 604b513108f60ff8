"""The metric a quantized model is judged by, through `onnxkit.evaluate`."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from onnxkit.data import Dataset


@dataclass(frozen=True)
class Score:
    """One model's metric on the evaluation split.

    Accuracy is compared in percentage points; models without one (regression)
    fall back to the loss, where a drop is an increase.
    """

    metric: str
    value: float
    output: str | None = None  # the output scored, and as what (a quantized model is read as the original was)
    task: str | None = None
    classes: np.ndarray | None = field(default=None, compare=False, repr=False)  # a classifier's pick for each row

    @property
    def unit(self) -> str:
        return "points" if self.metric == "accuracy" else self.metric

    def shown(self) -> str:
        return f"{100 * self.value:.2f}%" if self.metric == "accuracy" else f"{self.value:.4g}"

    def change_to(self, other: Score) -> float:
        """`other` minus this score, in `unit` (points of accuracy rounded past float noise: 3 of 100 predictions
        lost is 3 points, not 3.0000000000000027, which a max_drop of 3 refused)."""
        if self.metric == "accuracy":
            return round(100.0 * (other.value - self.value), 9)
        return other.value - self.value

    def drop_to(self, other: Score) -> float:
        """How much worse `other` is than this score, in `unit`: accuracy lost, or loss gained."""
        change = self.change_to(other)
        return (-change if self.metric == "accuracy" else change) + 0.0  # + 0.0: no change is 0.0, not -0.0

    def worse_by(self, drop: float) -> str:
        """A drop in words: 'loses 0.28 points of accuracy', 'raises the loss by 16.75'."""
        return f"loses {drop:.2f} points of accuracy" if self.metric == "accuracy" else f"raises the loss by {drop:.4g}"


def score(model: onnx.ModelProto, split: Any, batch_size: int = 256, like: Score | None = None,
          output: str | None = None) -> Score:
    """Evaluate `model`'s `output` (default: `evaluate.scored_output`) on `split` and keep its headline metric;
    `like`: the original model's score, whose output and task the quantized model is scored on (its rewritten
    graph may read otherwise)."""
    from onnxkit.batch_axis import rows_first
    from onnxkit.evaluate import model_outputs, scored_output, scored_outputs

    model = rows_first(model)  # a seq-first model's [seq, batch, ...] inputs and outputs taken rows-first
    output = like.output if like is not None else output or scored_output(model)
    outputs = model_outputs(model, split, output, batch_size=batch_size)
    metrics = scored_outputs(model, split, outputs, output, output=output, task=like.task if like else None)
    metric = "accuracy" if "accuracy" in metrics else "loss"
    if like is not None and metric != like.metric:
        raise AssertionError(f"the quantized model was scored by {metric}, the original by {like.metric}")
    one_a_row = metrics["task"] == "classification" and outputs.ndim == 2  # [batch, classes] scores
    return Score(metric, float(metrics[metric]), output, metrics["task"], outputs.argmax(axis=1) if one_a_row else None)


def agreement(before: Score, after: Score) -> dict[str, Any] | None:
    """For a classifier of one class a row: the share of the rows scored whose likeliest class the quantized model
    (`after`) keeps (a figure that needs no labels and is not hidden by errors that cancel out in the accuracy), and
    of how many rows; None for other models."""
    if before.classes is None or after.classes is None:
        return None
    return {"share": float((before.classes == after.classes).mean()), "rows": len(before.classes)}


def entry(before: Score, after: Score, data: Any) -> dict[str, Any]:
    """The report's accuracy section: both values, their change (quantized - original) and the drop
    (how much worse: positive is worse, for accuracy and loss alike), in `unit`."""
    name = data.name if isinstance(data, Dataset) else str(data) if isinstance(data, (str, os.PathLike)) else None
    return {
        "metric": before.metric,
        "data": f"{name} (test split)" if name else "(given split)",
        "original": before.value,
        "quantized": after.value,
        "original_shown": before.shown(),
        "quantized_shown": after.shown(),
        "change": before.change_to(after),
        "drop": before.drop_to(after),
        "unit": before.unit,
    }
