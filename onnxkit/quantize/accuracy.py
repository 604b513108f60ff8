"""The metric a quantized model is judged by, through `onnxkit.evaluate`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

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
    from onnxkit.evaluate import evaluate, scored_output

    output = like.output if like is not None else output or scored_output(model)
    metrics = evaluate(model, split, batch_size=batch_size, output=output, task=like.task if like else None)
    metric = "accuracy" if "accuracy" in metrics else "loss"
    if like is not None and metric != like.metric:
        raise AssertionError(f"the quantized model was scored by {metric}, the original by {like.metric}")
    return Score(metric, float(metrics[metric]), output, metrics["task"])


def agreement(original: onnx.ModelProto, quantized: onnx.ModelProto, split: Any, like: Score,
              batch_size: int = 256) -> dict[str, Any] | None:
    """For a classifier of one class a row ([batch, classes] scores): the share of `split`'s rows whose likeliest
    class the quantized model keeps (a figure that needs no labels and is not hidden by errors that cancel out in
    the accuracy), and of how many rows; None for other models."""
    from onnxkit.evaluate import model_outputs

    if like.task != "classification" or like.output is None:
        return None
    before, after = (model_outputs(m, split, like.output, batch_size=batch_size) for m in (original, quantized))
    if before.ndim != 2 or after.shape != before.shape:
        return None
    return {"share": float((before.argmax(axis=1) == after.argmax(axis=1)).mean()), "rows": len(before)}


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
