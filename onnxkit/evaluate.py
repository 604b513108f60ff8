"""Metrics (loss, accuracy, macro-F1, confusion matrix) and evaluation of an inference model.

`evaluate(model, split)` runs any inference-form ONNX model on a data split in
a plain `onnxruntime.InferenceSession` and scores its first output (or the one
named). It needs only numpy, onnx and onnxruntime, never the training package.

What the output means comes from the model's `onnxkit.task` metadata when
present, else from its shape and the labels: integer labels with one score
per class is classification (cross-entropy on logits), a single score with
0/1 labels is binary (binary cross-entropy on a logit), anything else is
regression (mean squared error).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from onnxkit.data.split import Split, model_inputs
from onnxkit.errors import OnnxkitError
from onnxkit.metadata import metadata

TASK_LOSS = {"classification": "cross-entropy", "binary": "bce-with-logits", "regression": "mse"}


# ---- losses (numpy, float64 accumulation) ---------------------------------------------------


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean softmax cross-entropy of `logits` [N, C] against class ids [N]."""
    z = logits.astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return float(-log_probs[np.arange(len(labels)), labels.astype(np.int64)].mean())


def bce_with_logits(logits: np.ndarray, targets: np.ndarray) -> float:
    """Mean binary cross-entropy of logits against 0/1 targets (same number of elements)."""
    x = logits.astype(np.float64).reshape(-1)
    t = targets.astype(np.float64).reshape(-1)
    return float(np.mean(np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x)))))


def mse(outputs: np.ndarray, targets: np.ndarray) -> float:
    """Mean squared error (same number of elements)."""
    d = outputs.astype(np.float64).reshape(-1) - targets.astype(np.float64).reshape(-1)
    return float(np.mean(d * d))


def l1(outputs: np.ndarray, targets: np.ndarray) -> float:
    """Mean absolute error (same number of elements)."""
    d = outputs.astype(np.float64).reshape(-1) - targets.astype(np.float64).reshape(-1)
    return float(np.mean(np.abs(d)))


LOSSES = {"cross-entropy": cross_entropy, "bce-with-logits": bce_with_logits, "mse": mse, "l1": l1}


# ---- classification metrics -----------------------------------------------------------------


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """[true class, predicted class] counts."""
    m = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(m, (labels.astype(np.int64), predictions.astype(np.int64)), 1)
    return m


def macro_f1(confusion: np.ndarray) -> float:
    """Unweighted mean over classes of F1; classes absent from labels and predictions are skipped."""
    tp = np.diag(confusion).astype(np.float64)
    predicted = confusion.sum(axis=0)
    actual = confusion.sum(axis=1)
    present = (predicted + actual) > 0
    f1 = np.divide(2 * tp, predicted + actual, out=np.zeros_like(tp), where=present)
    return float(f1[present].mean()) if present.any() else 0.0


def predictions(outputs: np.ndarray, task: str) -> np.ndarray:
    """Class ids from classifier outputs (argmax of scores; a logit > 0 for binary)."""
    if task == "binary":
        return (outputs.reshape(len(outputs), -1)[:, 0] > 0).astype(np.int64)
    return outputs.reshape(len(outputs), -1).argmax(axis=1)


def score(
    outputs: np.ndarray,
    labels: np.ndarray,
    task: str,
    *,
    loss: str | None = None,
    num_classes: int | None = None,
) -> dict[str, Any]:
    """All metrics for `outputs` against `labels`: loss, and for classifiers accuracy,
    macro_f1 and confusion (a list of rows); for regression also mae."""
    loss = loss or TASK_LOSS[task]
    metrics: dict[str, Any] = {"examples": int(len(labels))}
    if task == "classification":
        metrics["loss"] = LOSSES[loss](outputs, labels)
    else:
        metrics["loss"] = LOSSES[loss](outputs, labels.reshape(outputs.shape))
    if task in ("classification", "binary"):
        k = num_classes or (2 if task == "binary" else outputs.reshape(len(outputs), -1).shape[1])
        predicted = predictions(outputs, task)
        confusion = confusion_matrix(labels.reshape(-1), predicted, k)
        metrics["accuracy"] = float(np.mean(predicted == labels.reshape(-1)))
        metrics["macro_f1"] = macro_f1(confusion)
        metrics["confusion"] = confusion.tolist()
    else:
        metrics["mae"] = l1(outputs, labels)
    return metrics


def infer_task(declared: str | None, output_shape: Sequence[Any] | None, labels: np.ndarray) -> str:
    """The task from metadata when given, else from the output's last dimension and the labels."""
    if declared in TASK_LOSS:
        return declared  # type: ignore[return-value]
    if labels.dtype.kind in "iub":
        last = output_shape[-1] if output_shape else None
        if last == 1 or (output_shape is not None and len(output_shape) == 1):
            return "binary" if set(np.unique(labels)) <= {0, 1} else "regression"
        return "classification"
    return "regression"


# ---- evaluation of an ONNX model -------------------------------------------------------------


def label_names(model) -> list[str] | None:  # type: ignore[no-untyped-def]
    """Class names from `onnxkit.labels` metadata, if any."""
    raw = metadata(model).get("onnxkit.labels")
    return json.loads(raw) if raw else None


def evaluate(
    model: str | os.PathLike | Any,
    split: Split,
    *,
    batch_size: int = 256,
    output: str | None = None,
    task: str | None = None,
    loss: str | None = None,
    providers: Sequence[str] = ("CPUExecutionProvider",),
) -> dict[str, Any]:
    """Run `model` (a path or `onnx.ModelProto`) on `split` and return its metrics.

    For classifiers: `loss`, `accuracy`, `macro_f1`, `confusion` (rows = true
    class) and `labels` (class names, when known); for regression: `loss` (MSE)
    and `mae`. Always `examples` and `task`.
    """
    import onnxruntime as ort

    from onnxkit.files import load_model

    proto = load_model(model) if isinstance(model, str | os.PathLike) else model
    bound = split.feeds_for(model_inputs(proto))
    outputs = [o.name for o in proto.graph.output]
    name = output or outputs[0]
    if name not in outputs:
        raise OnnxkitError(f"model has no output {name!r}; its outputs: {', '.join(outputs)}")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=list(providers))
    chunks = [session.run([name], feeds)[0] for feeds, _ in bound.batches(batch_size)]
    result = np.concatenate(chunks) if chunks else np.zeros((0,), np.float32)
    out_vi = next(o for o in proto.graph.output if o.name == name)
    shape = [d.dim_value or d.dim_param for d in out_vi.type.tensor_type.shape.dim]
    meta_task = metadata(proto).get("onnxkit.task")
    resolved = infer_task(task or meta_task, shape or list(result.shape), split.labels)
    if resolved == "classification" and split.labels.dtype.kind not in "iub":
        raise OnnxkitError("classification needs integer class labels; these labels are floats")
    names = label_names(proto)
    metrics = score(
        result,
        split.labels,
        resolved,
        loss=loss,
        num_classes=len(names) if names and resolved == "classification" else None,
    )
    metrics["task"] = resolved
    if names and "confusion" in metrics:
        metrics["labels"] = names
    return metrics
