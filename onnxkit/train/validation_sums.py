"""A classifier's validation metrics summed inside the eval graph.

Scoring an epoch's validation logits in numpy (`onnxkit.evaluate.Scorer`) takes ~20 numpy calls,
each slow right after an ONNX Runtime run has left the caches cold (the first ~15 us): 110-160 us an
epoch, ~1.5% of the digits-cnn recipe's epoch loop. For a classifier of one class id a row scored
from logits by cross-entropy, the eval graph can instead return, with each batch, the sums the
metrics are made of (`append_sums`), and the loop adds them up and divides (`SummedValidation`):

    sums = [sum of log p(label) over the rows, hits of class 0..k-1, predictions of class 0..k-1]

(float64, 2k+1 values: the log-softmax in float64 as the numpy scorer's, a row's prediction its first
largest logit as numpy's argmax). Loss, accuracy and macro-F1 come out as the numpy scorer's to a few
units in the last digit (the float64 sums run in another order).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import TensorProto, helper

from onnxkit.autodiff.builder import Graph
from onnxkit.graph_walks import opset

if TYPE_CHECKING:
    from onnxkit.train.backend import TrainingSession

LABELS, SUMS = "onnxkit.validation.labels", "onnxkit.validation.sums"


def append_sums(model: onnx.ModelProto, output: str, classes: int) -> None:
    """Make `model`, whose `output` holds [rows, classes] logits, also take the rows' class ids (int64
    input LABELS) and return their sums (float64 output SUMS, see the module's docstring)."""
    g = Graph({}, opset(model), prefix="onnxkit.validation")
    z = g.op("Cast", output, to=TensorProto.DOUBLE)
    ids = g.unsqueeze(LABELS, [1])
    picked = g.op("GatherElements", g.op("LogSoftmax", z, axis=1), ids, axis=1)
    log_likelihood = g.reduce("ReduceSum", picked, [0], keepdims=False)  # [1]
    predicted = g.unsqueeze(g.op("ArgMax", z, axis=1, keepdims=0), [1])  # [rows, 1]
    each = g.const(np.arange(classes), TensorProto.INT64)
    predictions = g.op("Equal", predicted, each)  # [rows, classes]: one True a row
    hits = g.op("And", predictions, g.op("Equal", ids, predicted))
    counts = g.reduce("ReduceSum", g.op("Cast", g.op("Concat", hits, predictions, axis=1), to=TensorProto.DOUBLE),
                      [0], keepdims=False)
    g.nodes.append(helper.make_node("Concat", [log_likelihood, counts], [SUMS], axis=0))
    graph = model.graph
    graph.node.extend(g.nodes)
    graph.initializer.extend(g.initializers)
    graph.input.append(helper.make_tensor_value_info(LABELS, TensorProto.INT64, ["onnxkit.rows"]))
    graph.output.append(helper.make_tensor_value_info(SUMS, TensorProto.DOUBLE, [2 * classes + 1]))


class SummedValidation:
    """Validation by the eval graph's sums: the class ids of each validation batch, and the metrics of an epoch."""

    def __init__(self, ids: np.ndarray, classes: int, rows: Sequence[int]) -> None:
        ids = np.asarray(ids, np.int64)
        ends = np.cumsum(rows)
        self.classes, self.rows = classes, len(ids)
        self.labels = [ids[end - n:end] for n, end in zip(rows, ends, strict=True)]
        self.actual = np.bincount(ids, minlength=classes).tolist()  # rows of each class
        self.sums = np.empty((len(rows), 2 * classes + 1))  # each batch's, written by the session

    def __call__(self, session: TrainingSession,
                 batches: Sequence[tuple[dict[str, np.ndarray], int]]) -> dict[str, float]:
        """The epoch's validation metrics: `session.score_step` over the `batches` (feeds, rows)."""
        for (feeds, _), labels, out in zip(batches, self.labels, self.sums, strict=True):
            session.score_step(feeds, labels, out)
        # summed in Python: numpy's reduction, its code cold after the runs, took ~50 us (this, ~15)
        return self.metrics([sum(column) for column in zip(*self.sums.tolist(), strict=True)])

    def metrics(self, total: list[float]) -> dict[str, float]:
        """Loss, accuracy and macro-F1 (over the classes a label or a prediction names) from the summed vector."""
        k, rows = self.classes, self.rows
        hits, predicted = total[1:k + 1], total[k + 1:]
        f1 = [2 * h / (p + a) for h, p, a in zip(hits, predicted, self.actual, strict=True) if p + a]
        return {"loss": -total[0] / rows, "accuracy": sum(hits) / rows, "macro_f1": sum(f1) / len(f1) if f1 else 0.0}
