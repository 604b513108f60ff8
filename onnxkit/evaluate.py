"""Metrics (loss, accuracy, macro-F1, confusion matrix) and evaluation of an inference model.

`evaluate(model, split)` runs any inference-form ONNX model on a data split (a
`Split`, or a name: the split of the data the model was trained on) in a plain
`onnxruntime.InferenceSession` and scores the output training fit (or the one named; else the first,
or a scikit-learn classifier's probabilities, not the label skl2onnx puts first).
It needs only numpy, onnx and onnxruntime, never the training package. A model
with a fixed batch size runs in batches of that size, the last one padded.

What the output means comes from the model's `onnxkit.task` metadata when
present, else from its shape and the labels: integer labels with one score
per class is classification (cross-entropy on logits), a single score with
0/1 labels is binary (binary cross-entropy on a logit), anything else is
regression (mean squared error). Data that cannot be scored is refused as training
refuses it, in one line naming the data: no rows, NaN or infinite features (or
regression targets), class ids that are negative, fractional or past the model's
scores, labels shaped unlike the output.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from onnxkit.data.checks import check_class_labels, check_finite, check_numeric_targets, not_whole
from onnxkit.data.split import Dataset, Split, from_arrays, model_inputs
from onnxkit.dims import dims_of
from onnxkit.errors import OnnxkitError, first_few, suggest
from onnxkit.graph_walks import label_then_scores
from onnxkit.label_columns import imputed_inputs, in_trained_order, trained_columns
from onnxkit.metadata import metadata, training_summary
from onnxkit.metadata_keys import OUTPUT_KEY, TASK_KEY

TASK_LOSS = {"classification": "cross-entropy", "binary": "bce-with-logits", "regression": "mse"}
LOSS_TASK = {**{loss: task for task, loss in TASK_LOSS.items()}, "l1": "regression"}
PROBABILITIES_OF = {"classification": "Softmax", "binary": "Sigmoid"}  # a classifier's op from logits to probabilities


def shown_metric(value: float) -> str:
    """A score as train and eval print it: four decimals, or four significant digits where the decimals would say
    nothing (a loss of 3e-6 read 0.0000) or bury the figure (an MAE of 13,493,848 on targets in the millions read
    13493848.5844, its MSE 306725042115318.8125)."""
    return f"{value:.4f}" if value == 0 or 1e-3 <= abs(value) < 1e5 else f"{value:.4g}"


# ---- losses (numpy, float64 accumulation) ---------------------------------------------------


def cross_entropy(logits: np.ndarray, labels: np.ndarray, axis: int = -1) -> float:
    """Mean softmax cross-entropy of `logits` [N, C] against class ids [N] or class probabilities [N, C]; with the
    classes on `axis` of more dims ([N, C, H, W] against [N, H, W]), the mean over every position, as PyTorch's."""
    if soft_targets(logits, labels):
        z = _class_major(logits)
        top = np.maximum.reduce(z, axis=0)
        log_prob = z - top - np.log(np.add.reduce(np.exp(z - top), axis=0))
        return float(-np.add.reduce(log_prob * labels.T, axis=None) / len(labels))
    if logits.ndim > 2:
        logits, labels = positions_as_rows(logits, labels, axis)
    return _mean_nll(_class_major(logits), _picks(labels))


def soft_targets(scores: np.ndarray, labels: np.ndarray) -> bool:
    """Whether a classifier's `labels` are a probability per class of its [N, C] `scores` rather than class ids."""
    return labels.dtype.kind == "f" and labels.ndim == scores.ndim == 2 and labels.shape == scores.shape


def _class_major(logits: np.ndarray) -> np.ndarray:
    """[N, C] logits as float64 [C, N]: numpy reduces a few classes of many rows in whole vectors, but runs a short
    loop per row over the classes of [N, C] (359 x 10: 42 -> 21 us)."""
    return logits.T.astype(np.float64, order="C")


def _picks(labels: np.ndarray) -> np.ndarray:
    """Where each row's class sits in its class-major logits, flattened: class id * rows + row."""
    return labels.astype(np.int64) * len(labels) + np.arange(len(labels))


def _mean_nll(z: np.ndarray, picks: np.ndarray) -> float:
    """Mean negative log-softmax of class-major logits `z` [C, N] at `picks`. Ufunc reductions, not ndarray.max /
    np.mean, whose Python wrappers ran ~60 us each in a training loop's validation, between ONNX Runtime runs."""
    top = np.maximum.reduce(z, axis=0)
    log_sums = np.log(np.add.reduce(np.exp(z - top), axis=0))
    return float((np.add.reduce(log_sums) + np.add.reduce(top) - np.add.reduce(z.take(picks))) / z.shape[1])


def positions_as_rows(scores: np.ndarray, labels: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores with their classes on `axis` ([N, C, H, W]) and one class id per position ([N, H, W]) as
    one row of scores and one id per position ([N * H * W, C], [N * H * W])."""
    return np.moveaxis(scores, axis, -1).reshape(-1, scores.shape[axis]), labels.reshape(-1)


def without_class_axis(shape: Sequence[Any], axis: int) -> list[Any]:
    """An output's sizes past the batch without its class axis `axis`: the shape of one example's class ids."""
    return [d for i, d in enumerate(shape) if i not in (0, axis % len(shape))]


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
    cells = labels.astype(np.int64) * num_classes + predictions.astype(np.int64)
    return np.bincount(cells, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def macro_f1(confusion: np.ndarray, hits: np.ndarray | None = None, actual: np.ndarray | None = None) -> float:
    """Unweighted mean over classes of F1; classes absent from labels and predictions are skipped. `hits` (the
    diagonal) and `actual` (the row sums) may be given, already known."""
    hits = confusion.diagonal() if hits is None else hits
    actual = np.add.reduce(confusion, axis=1) if actual is None else actual
    counted = np.add.reduce(confusion, axis=0) + actual  # predicted + actual, per class
    present = np.count_nonzero(counted)
    return float(np.add.reduce(2 * hits / np.maximum(counted, 1)) / present) if present else 0.0


def label_scores(predicted: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """A multi-label model's figures by label, from [N, K] 0/1 predictions and labels: `subset_accuracy` (rows with
    every label right: scikit-learn's accuracy_score), `label_f1` (the mean over labels of each one's F1 for its
    1s: f1_score(average="macro")) and `per_label`, each label's precision, recall, F1 and support (its 1s), 0
    where undefined (as scikit-learn's zero_division=0)."""
    y, p = labels.astype(bool), predicted.astype(bool)
    hits, chosen, actual = (y & p).sum(axis=0), p.sum(axis=0), y.sum(axis=0)
    f1 = 2 * hits / np.maximum(chosen + actual, 1)
    rows = zip(hits / np.maximum(chosen, 1), hits / np.maximum(actual, 1), f1, actual, strict=True)
    return {"subset_accuracy": float((y == p).all(axis=1).mean()), "label_f1": float(f1.mean()),
            "per_label": [{"precision": float(pr), "recall": float(rc), "f1": float(f), "support": int(n)}
                          for pr, rc, f, n in rows]}


def predictions(outputs: np.ndarray, task: str) -> np.ndarray:
    """Class ids from classifier outputs (argmax of scores; for binary, each logit > 0: a multi-label
    model's [N, K] logits give N * K predictions)."""
    if task == "binary":
        return (outputs.reshape(-1) > 0).astype(np.int64)
    return outputs.reshape(len(outputs), -1).argmax(axis=1)


def score(
    outputs: np.ndarray,
    labels: np.ndarray,
    task: str,
    *,
    loss: str | None = None,
    num_classes: int | None = None,
    probabilities: bool = False,
    axis: int = -1,
) -> dict[str, Any]:
    """All metrics for `outputs` against `labels`: loss, and for classifiers accuracy,
    macro_f1 and confusion (a list of rows; binary ones count every 0/1 label of a row, so
    multi-label accuracy is the share of labels right, and a multi-label model gets `label_scores` too; class
    probabilities as labels, soft targets, are scored against their likeliest class); for
    regression also mae. `probabilities`:
    a classifier's outputs are Softmax (or, binary, Sigmoid) probabilities, not logits. `axis`: a
    classifier's class axis, every position of the others scored ([N, C, H, W] against [N, H, W])."""
    loss = loss or TASK_LOSS[task]
    metrics: dict[str, Any] = {"examples": int(len(labels))}
    if probabilities and task in ("classification", "binary"):
        outputs = logits_of(outputs, task)
    if task == "classification" and outputs.ndim > 2:  # one class id per position: each a row
        outputs, labels = positions_as_rows(outputs, labels, axis)
    if task == "classification":
        metrics["loss"] = LOSSES[loss](outputs, labels)
    else:
        metrics["loss"] = LOSSES[loss](outputs, labels.reshape(outputs.shape))
    if task in ("classification", "binary"):
        k = num_classes or (2 if task == "binary" else outputs.reshape(len(outputs), -1).shape[1])
        predicted = predictions(outputs, task)
        soft = task == "classification" and soft_targets(outputs, labels)
        ids = labels.argmax(axis=1) if soft else labels.reshape(-1)  # a distribution's likeliest class
        confusion = confusion_matrix(ids, predicted, k)
        metrics["accuracy"] = float(confusion.trace() / len(predicted))
        metrics["macro_f1"] = macro_f1(confusion)
        metrics["confusion"] = confusion.tolist()
        if task == "binary" and labels.ndim == 2 and labels.shape[1] > 1:  # multi-label: each label's 0/1 too
            metrics.update(label_scores(predicted.reshape(labels.shape), labels))
    else:
        metrics["mae"] = l1(outputs, labels)
        metrics["r2"] = r2(outputs, labels)
    return metrics


class Scorer:
    """`score` against the same labels again and again (a training run's validation split, every epoch), what
    depends on the labels alone worked out once. In a training loop each numpy call costs ~3 us, ONNX Runtime's
    runs leaving the caches cold: a classifier's loss, accuracy and macro-F1 come from ~15 of them, not ~35."""

    def __init__(self, labels: np.ndarray, task: str, *, loss: str | None = None, num_classes: int | None = None,
                 probabilities: bool = False, axis: int = -1) -> None:
        self.labels, self.task, self.loss, self.num_classes = labels, task, loss or TASK_LOSS[task], num_classes
        self.probabilities, self.axis = probabilities, axis
        # the lean path's classes (one class id a row, scored from logits by cross-entropy), else None
        self.classes = num_classes if task == "classification" and labels.ndim == 1 and not probabilities and \
            self.loss == "cross-entropy" else None
        if self.classes:
            ids = labels.astype(np.int64)
            self._picks, self._cells = _picks(ids), ids * self.classes
            self._actual = np.bincount(ids, minlength=self.classes)
            self._z = np.empty((self.classes, len(labels)))  # the logits, class-major (see _class_major), each epoch's

    def __call__(self, parts: Sequence[np.ndarray]) -> dict[str, Any]:
        """`score(outputs, labels, ...)` of the outputs given in consecutive `parts` (batches): the same metrics,
        to the last digit."""
        if not self.classes or any(part.shape[1:] != (self.classes,) for part in parts):
            return score(np.concatenate(parts) if len(parts) > 1 else parts[0], self.labels, self.task,
                         loss=self.loss, num_classes=self.num_classes, probabilities=self.probabilities,
                         axis=self.axis)
        k, rows, z = self.classes, len(self.labels), self._z
        np.concatenate([part.T for part in parts], axis=1, out=z)  # one call for the join, the cast and the turn
        confusion = np.bincount(self._cells + z.argmax(axis=0), minlength=k * k).reshape(k, k)
        hits = confusion.diagonal()
        return {"examples": rows, "loss": _mean_nll(z, self._picks), "accuracy": float(np.add.reduce(hits) / rows),
                "macro_f1": macro_f1(confusion, hits, self._actual), "confusion": confusion.tolist()}


def logits_of(probabilities: np.ndarray, task: str) -> np.ndarray:
    """Logits with these probabilities: their log (the same softmax) or, binary, their log-odds."""
    p = np.clip(probabilities.astype(np.float64), np.finfo(np.float32).tiny, 1.0)
    return np.log(p) if task == "classification" else np.log(p) - np.log1p(-np.minimum(p, 1 - 1e-16))


def r2(outputs: np.ndarray, targets: np.ndarray) -> float | None:
    """The coefficient of determination 1 - SS_res / SS_tot, averaged over the targets alike, a constant
    target scoring 1 when predicted exactly and 0 else: scikit-learn's r2_score (its defaults). None for
    fewer than two rows, where it is not defined."""
    if len(targets) < 2:
        return None
    y = targets.astype(np.float64).reshape(len(targets), -1)
    residual = np.sum((y - outputs.astype(np.float64).reshape(y.shape)) ** 2, axis=0)
    total = np.sum((y - y.mean(axis=0)) ** 2, axis=0)
    varying = total > 0
    scores = np.where(residual == 0, 1.0, 0.0)
    scores[varying] = 1.0 - residual[varying] / total[varying]
    return float(np.mean(scores))


def infer_task(declared: str | None, output_shape: Sequence[Any] | None, labels: np.ndarray) -> str:
    """The task from metadata when given, else from the output's shape and the labels: integer labels
    with one value per output value (size-1 axes aside) are 0/1 targets (binary, also multi-label; one-hot
    rows are refused as ambiguous) or numbers, with one fewer axis class ids; other labels are regression
    targets."""
    if declared in TASK_LOSS:
        return declared  # type: ignore[return-value]
    if labels.dtype.kind in "iub":
        if output_shape is not None and one_per_value(output_shape, labels.shape):
            if not set(np.unique(labels)) <= {0, 1}:
                return "regression"
            if labels.ndim == 2 and labels.shape[1] > 1 and (labels.sum(axis=1) == 1).all():
                raise OnnxkitError(f"the labels are one-hot rows of {labels.shape[1]}: give each row's class id "
                                   "(labels.argmax(1)) to train a classifier (cross-entropy), or loss=bce-with-logits "
                                   f"to train them as {labels.shape[1]} separate 0/1 labels", params=["loss"])
            return "binary"
        return "classification"
    return "regression"


def class_axis(output_shape: Sequence[Any], label_shape: Sequence[int]) -> int:
    """The axis of an output shaped `output_shape` that holds the class scores for class ids shaped
    `label_shape`: the one of a fixed size whose removal leaves the labels' shape (1 for [batch, C, H, W]
    scores of [N, H, W] masks, as PyTorch lays them out; 2 for [batch, T, C] of [N, T] tags), given as
    -1 when last or when none fits (the checks of labels then say why); an error when several fit."""
    rank = len(output_shape)
    if rank < 3 or len(label_shape) != rank - 1:
        return -1
    fits = [a for a in range(1, rank) if isinstance(output_shape[a], int) and output_shape[a] > 0
            and sizes_fit([*output_shape[1:a], *output_shape[a + 1:]], label_shape[1:])]
    if len(fits) > 1:
        shown = ", ".join(str(d) if d else "?" for d in output_shape)
        raise OnnxkitError(f"class ids of shape {list(label_shape)} fit output shape [{shown}] with the classes on "
                           f"axis {' or '.join(map(str, fits))}; export the model with its other axes dynamic "
                           "(torch.onnx.export(..., dynamic_axes=...)) so that only the classes' axis has a fixed size")
    return fits[0] if fits and fits[0] != rank - 1 else -1


def one_per_value(output_shape: Sequence[Any], label_shape: Sequence[int]) -> bool:
    """Whether labels shaped `label_shape` are shaped as an output shaped `output_shape` after the batch,
    size-1 axes left out and named sizes taking any ([N] for [batch, 1], [N, K] for [batch, K])."""
    return sizes_fit(*([d for d in shape[1:] if d != 1] for shape in (output_shape, label_shape)))


def sizes_fit(output: Sequence[Any], labels: Sequence[int]) -> bool:
    """Whether an output's sizes are the labels', a named (dynamic) size taking any."""
    return len(output) == len(labels) and all(not isinstance(o, int) or not o or o == n
                                              for o, n in zip(output, labels, strict=True))


# ---- evaluation of an ONNX model -------------------------------------------------------------


def check_features(split: Split, proto: Any = None) -> None:
    """Refuse a split with no rows, or with NaN or infinity in its features, as training does; NaN in the
    features a model (`proto`) fills itself (`train.impute`) is a missing value it takes."""
    if not len(split):
        raise OnnxkitError(f"data {split.described!r} has no rows; give more data or evaluate another split")
    imputed = imputed_inputs(metadata(proto)) if proto is not None else []
    inputs = {k: np.nan_to_num(v, nan=0.0, posinf=np.inf, neginf=-np.inf)
              if imputed and (k in imputed or len(split.inputs) == 1) and v.dtype.kind == "f" else v
              for k, v in split.inputs.items()}
    check_finite(split.described, inputs)


def check_targets(where: str, labels: np.ndarray, outputs: np.ndarray, task: str, output: str,
                  axis: int = -1) -> None:
    """Refuse labels that `outputs` (of the model output called `output`) cannot be scored against,
    as training does: class ids that are negative, fractional or not below the number of scores
    (on `axis`, for one id per position), class probabilities that are none (see `check_probabilities`), a count
    per row unlike the output's, NaN or infinite
    regression targets. `where` names the data."""
    scores = outputs.reshape(len(outputs), -1).shape[1]
    if task == "classification" and outputs.ndim > 2:  # one class id per position
        rest = without_class_axis(outputs.shape, axis)
        if list(labels.shape[1:]) != rest:
            raise OnnxkitError(f"data {where!r}: class ids have shape {list(labels.shape)} but output {output!r} has "
                               f"shape {list(outputs.shape)}, its classes on axis {axis % outputs.ndim}; give one "
                               f"class id per position (shape [N, {', '.join(map(str, rest))}])")
        scores, labels = outputs.shape[axis], labels.reshape(-1)
    if task == "classification":
        if labels.dtype.kind not in "iub" and labels.ndim == 1:
            stray = not_whole(labels)
            found = f"one is {stray:g}" if stray is not None else f"they are {labels.dtype}"
            cast = "; save class ids as integers: labels.astype(np.int64)" if stray is None and \
                labels.dtype.kind == "f" else ""
            raise OnnxkitError(f"data {where!r}: class labels must be integers, but {found}; output {output!r} "
                               f"has {scores} scores, for class ids 0 to {scores - 1}{cast}")
        check_class_labels(where, labels, scores, output=output)
        return
    if labels.dtype.kind == "f" and labels.size != outputs.size:  # NaN among them is what is wrong, if any
        check_finite(where, {"labels": labels}, role="target array")
    if labels.size != outputs.size:
        raise OnnxkitError(f"data {where!r}: labels have shape {list(labels.shape)} but output {output!r} has shape "
                           f"{list(outputs.shape)}; give one target per output value")
    if task == "binary":
        check_class_labels(where, labels, 2, output=output, binary=True)
    else:
        check_finite(where, {"labels": labels}, role="target array")


def fixed_batch_size(specs: Sequence[Any]) -> int | None:
    """The batch size a model's inputs fix (a number as their first dimension), or None."""
    sizes = {s.shape[0] for s in specs if s.shape and isinstance(s.shape[0], int) and s.shape[0] > 0}
    return sizes.pop() if len(sizes) == 1 else None


def padded(feeds: dict[str, np.ndarray], size: int | None) -> dict[str, np.ndarray]:
    """A batch shorter than `size` (a model's fixed batch size) padded with copies of its last row."""
    rows = len(next(iter(feeds.values())))
    if not size or rows >= size:
        return feeds
    return {k: np.concatenate([v, np.repeat(v[-1:], size - rows, axis=0)]) for k, v in feeds.items()}


def _run(session: Any, names: list[str], feeds: dict[str, np.ndarray], fixed: int | None) -> list[np.ndarray]:
    """Outputs `names` for one batch, padded to a fixed batch size if need be; the padding's outputs dropped."""
    rows = len(next(iter(feeds.values())))
    try:
        return [value[:rows] if fixed else value for value in session.run(names, padded(feeds, fixed))]
    except Exception as e:  # onnxruntime raises its own exception types, without a common base
        from onnxkit.runtime.session import error_reason, run_failure_hint

        hint = run_failure_hint(e, otherwise="check that the data fits the model's inputs")
        raise OnnxkitError(f"onnxruntime could not run the model on this data ({error_reason(e)}); {hint}") from e


def label_names(model) -> list[str] | None:  # type: ignore[no-untyped-def]
    """Class names from `onnxkit.labels` metadata, else a scikit-learn classifier's text classes, if any."""
    from onnxkit.data.registry import model_class_names

    return model_class_names(model)


def scored_output(model: Any) -> str:
    """The output that holds a model's scores: the one training fit (metadata `onnxkit.output`), else
    for a classifier whose first output is its label the scores beside it (`label_then_scores`), else the first."""
    layout = label_then_scores(model)
    return metadata(model).get(OUTPUT_KEY) or (layout[0] if layout else model.graph.output[0].name)


def output_task(model: Any, output: str | None) -> str | None:
    """The task the model's metadata names for `output` (None: the output it scores): that of the output it scores,
    the one training fit, None for another (a two-headed export trained on its values said 'regression' of its class
    scores too)."""
    return metadata(model).get(TASK_KEY) if output in (None, scored_output(model)) else None


def _rows(result: Any) -> np.ndarray:
    """An output as an array: a sequence of {class: probability} maps as [rows, classes]."""
    if len(result) and isinstance(result[0], dict):
        return np.array([list(row.values()) for row in result], np.float32)
    return np.asarray(result)


def _of_the_models_classes(dataset: Any, model: Any) -> Any:
    """`dataset`, unless it names none of the classes the model names, or a CSV's columns lack one the model trained
    on (by name): training takes such data as new, but scoring it would pair classes or columns by their order alone
    (a model of no/yes scored on B/M data: 2.65%, without a word)."""
    from onnxkit.data.registry import model_class_names

    classes, names = model_class_names(model), dataset.label_names
    if classes and names and classes != [str(i) for i in range(len(classes))] and not set(names) & set(classes):
        raise OnnxkitError(f"data {dataset.name!r} names classes {first_few([repr(n) for n in names])}, none of the "
                           f"model's ({first_few([repr(c) for c in classes])}); give data labelled with the model's "
                           "classes")
    try:
        in_trained_order(dataset.columns, trained_columns(metadata(model)), dataset.name)  # refuses a missing column
    except OnnxkitError as e:  # a file of the features alone: its last feature was taken as the labels
        if not dataset.labels_from:
            raise
        raise OnnxkitError(f"{e} (the labels: {dataset.labels_from}); scoring needs the labels: add their column, or "
                           "run predict on a file without them", params=e.params) from e
    return dataset


def named_split(model: Any, split: str | None, data: Any = None, data_seed: int | None = None, *,
                label: str | None = None) -> tuple[Split, str, int]:
    """The split called `split` of `data` (default: the data `model` was trained on, from its
    `onnxkit.training` metadata) with `data_seed` (default: the training run's, else 0); also the
    data's name and the seed used; `label`: a CSV's label column (default: the one the model trained on).
    `split` None: the test split of the data the model trained on (or of a Dataset; or of a copy of its file; or of
    an .npz holding its own, x_test), all of other data, which training held out whole (not a fifth of it)."""
    from onnxkit.data import Dataset, in_model_order, in_trained_columns, load_dataset
    from onnxkit.data.given_splits import holds_test_split

    recorded, recorded_seed = trained_on(model)
    if split is None:
        other = data is not None and not isinstance(data, Dataset) and data != recorded and \
            os.path.realpath(data) != recorded and not _trained_file_copy(model, data)
        split = "all" if other and not holds_test_split(data) else "test"  # all of mnist.npz: its x_train too
    if isinstance(data, Dataset):  # already split, in memory
        ordered = _of_the_models_classes(in_model_order(in_trained_columns(data, model), model), model)
        return ordered.split(split), data.name, recorded_seed if data_seed is None else data_seed
    defaulted, data = data is None, data if data is not None else recorded
    if not data:
        raise OnnxkitError("the model does not say what it was trained on; give data (a dataset name or file)",
                           params=["data"])
    if trained_in_memory(model) and data == recorded:
        raise OnnxkitError(f"the model was trained on an in-memory Dataset ({data!r}); pass it as data=, or a split",
                           params=["data"])
    if defaulted and changed_since_training(model, data):
        raise OnnxkitError(f"{data} changed since the model was trained on it, so its {split} split is not the one "
                           "training held out (it may hold rows the model trained on); give data: the file as it "
                           "was, or this one to score it as it is now", params=["data"])
    seed = data_seed if data_seed is not None else recorded_seed
    dataset = _of_the_models_classes(load_dataset(data, seed=seed, model=model, label=label), model)
    if metadata(model).get(TASK_KEY) == "regression":  # its targets are numbers, not class ids
        check_numeric_targets(dataset.name, dataset.label_names, TASK_LOSS["regression"])
    return dataset.split(split), str(data), seed


def _as_trained(model: Any, data: str) -> bool | None:
    """Whether the data file or image folder `data` holds what `model` was trained on, by the SHA-256 (`data_sha256`)
    onnxkit's training records; None when the model records none or `data` is no file or folder."""
    from onnxkit.data.registry import data_sha256

    trained = training_summary(model).get("data_sha256")
    return data_sha256(data) == trained if trained and os.path.exists(data) else None


def _trained_file_copy(model: Any, data: str) -> bool:
    """Whether `data` holds what `model` was trained on (a copy of its training file or folder, elsewhere)."""
    return _as_trained(model, data) is True


def changed_since_training(model: Any, data: str) -> bool:
    """Whether the data file or image folder `data` differs from the one `model` was trained on: its splits then
    need not be the ones training made."""
    return _as_trained(model, data) is False


def trained_loss(model: Any, task: str) -> str | None:
    """The loss `model` was trained with (its `onnxkit.training` metadata) when it is one for `task`: eval reports
    the loss training did (the l1 of a model fit to it, not the task's mse)."""
    trained = training_summary(model).get("loss")
    return trained if LOSS_TASK.get(trained) == task else None


def trained_in_memory(model: Any) -> bool:
    """Whether `model` was trained on a Dataset object (its data name names no file or dataset)."""
    return bool(training_summary(model).get("data_in_memory"))


def trained_on(model: Any) -> tuple[str | None, int]:
    """The data `model` was trained on (a dataset name or file) and the seed of its split, from
    its `onnxkit.training` metadata; (None, 0) when it does not say."""
    trained = training_summary(model)
    return trained.get("data") or None, int(trained.get("data_seed", 0))


def model_outputs(
    proto: Any,
    split: Split,
    name: str,
    *,
    batch_size: int = 256,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    source: str | os.PathLike | None = None,
) -> np.ndarray:
    """Output `name` of `proto` (loaded from `source` when given) for every row of `split`, whose
    features are checked and bound to the model's inputs; run in batches."""
    outputs = [o.name for o in proto.graph.output]
    if name not in outputs:
        raise OnnxkitError(f"model has no output {name!r}; its outputs: {', '.join(outputs)}", params=["output"])
    batches = batch_outputs(proto, split, [name], batch_size=batch_size, providers=providers, source=source)
    result = np.concatenate([_rows(values[0]) for values in batches])
    if len(result) != len(split):
        from onnxkit.batch_axis import AXES_HINT

        raise OnnxkitError(f"output {name!r} has {len(result)} rows for {len(split)} examples: scoring takes one a "
                           f"row; {AXES_HINT}")
    return result


def batch_outputs(
    proto: Any,
    split: Split,
    names: list[str],
    *,
    batch_size: int = 256,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    source: str | os.PathLike | None = None,
) -> Iterator[list[Any]]:
    """Outputs `names` of `proto` (graph outputs) for each batch of `split`'s rows, checked and bound to its inputs."""
    from onnxkit.runtime.session import create_session, session_options

    check_features(split, proto)
    specs = model_inputs(proto)
    bound = split.feeds_for(specs)
    session = create_session(source or proto.SerializeToString(), session_options(None, "all"), list(providers))
    fixed = fixed_batch_size(specs)
    for feeds, _ in bound.batches(fixed or batch_size):
        yield _run(session, names, feeds, fixed)


def _check_options(data: Any, batch_size: Any, task: str | None, loss: str | None) -> None:
    """TypeError or OnnxkitError for `evaluate`'s options of a kind or value it cannot take."""
    if data is not None and not isinstance(data, str | os.PathLike | Dataset):
        raise TypeError(f"data must be a dataset name, a .npz/.csv file or a Dataset, not {type(data).__name__}; "
                        "make one from arrays with onnxkit.data.dataset_from_arrays(name, {'x': X}, y)")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise OnnxkitError(f"batch_size must be a whole number, 1 or more, got {batch_size!r}", params=["batch_size"])
    for name, value, choices in (("task", task, TASK_LOSS), ("loss", loss, LOSSES)):
        if value is not None and value not in choices:
            hint = suggest(str(value), choices)
            raise OnnxkitError(f"unknown {name} {value!r}; choose from {', '.join(choices)}.{hint}", params=[name])


def evaluate(
    model: str | os.PathLike | Any,
    split: Split | str | tuple[Any, Any] | None = None,
    *,
    data: Any = None,
    data_seed: int | None = None,
    label: str | None = None,
    batch_size: int = 256,
    output: str | None = None,
    task: str | None = None,
    loss: str | None = None,
    providers: str | Sequence[str] = ("CPUExecutionProvider",),
) -> dict[str, Any]:
    """Run `model` (a path or `onnx.ModelProto`) on `split` and return its metrics.

    `split`: a `Split`, `(X, y)` (features, one array or a dict by input name, and labels: every row is scored), or
    the name of one (train, validation, test, all) of `data` split with
    `data_seed` (both default to the model's training run, see `named_split`); by default the test split
    of the data the model trained on, all of other data. `label`: a CSV's label column (default: the one the model
    trained on, else as training chooses).
    For classifiers: `loss`, `accuracy`, `macro_f1`, `confusion` (rows = true
    class) and `labels` (class names, when known); for a multi-label one also `subset_accuracy`, `label_f1` and
    `per_label` (each label's name, precision, recall, f1 and support: `label_scores`); for regression: `loss`
    (MSE, or the l1 a model was trained with), `mae` and `r2`. Always `examples` and `task`.
    `batch_size`: rows per run; `output`: the output to score (default: the one training fit, else the
    first); `task` overrides the model's metadata; `loss`: the loss to report (default: the one the model was
    trained with, else the task's);
    `providers`: onnxruntime's execution providers (one, or several in priority order; a name or a (name,
    options) pair each, as InferenceSession takes them).
    """
    from onnxkit.batch_axis import rows_first
    from onnxkit.files import load_model
    from onnxkit.runtime.session import ort

    _check_options(data, batch_size, task, loss)
    if not isinstance(model, str | os.PathLike) and not hasattr(model, "graph"):
        raise TypeError(f"model must be a .onnx path or an onnx.ModelProto, not {type(model).__name__}")
    if isinstance(split, Split) and (data is not None or data_seed is not None or label is not None):
        raise TypeError("data, data_seed and label choose a split by its name; a Split holds its rows already")
    providers = [providers] if isinstance(providers, str) else list(providers)
    unknown = [p for p in providers if (p[0] if isinstance(p, tuple) else p) not in ort.get_available_providers()]
    if unknown:
        raise OnnxkitError(f"provider {unknown[0]!r} is not in this onnxruntime; its providers: "
                           f"{', '.join(ort.get_available_providers())}", params=["providers"])
    if data_seed is not None and (isinstance(data_seed, bool) or not isinstance(data_seed, numbers.Integral)
                                  or data_seed < 0):
        raise TypeError(f"data_seed must be an integer from 0 up, not {data_seed!r}")
    given = load_model(model) if isinstance(model, str | os.PathLike) else model
    proto = rows_first(given)  # a seq-first model's [seq, batch, ...] inputs and outputs taken rows-first
    split = from_arrays(split, whole=True)  # (X, y): every row of those arrays
    if split is None or isinstance(split, str):
        split = named_split(proto, split, data, data_seed, label=label)[0]
    if isinstance(split, Dataset):  # the error below told a Dataset's owner to make one from arrays
        raise TypeError(f"split must be a Split or a split name, not the Dataset {split.name!r}: pass one of its "
                        "splits (dataset.test), or the split's name with data=dataset")
    if not isinstance(split, Split):
        raise TypeError(f"split must be a Split, a split name or (X, y), features and labels, not "
                        f"{type(split).__name__}")
    name = output or scored_output(proto)
    source = model if isinstance(model, str | os.PathLike) and proto is given else None  # errors name the file
    result = model_outputs(proto, split, name, batch_size=batch_size, providers=providers, source=source)
    return scored_outputs(proto, split, result, name, output=output, task=task, loss=loss)


def scored_outputs(proto: Any, split: Split, result: np.ndarray, name: str, *, output: str | None = None,
                   task: str | None = None, loss: str | None = None) -> dict[str, Any]:
    """`evaluate`'s metrics of `result`, the outputs `name` of the model `proto` on `split` (`model_outputs`):
    its task (`task`, else the metadata of `output`, else inferred) checked against the labels, and scored."""
    layout = label_then_scores(proto)
    given_probabilities = layout[0] if layout and layout[1] else None
    out_vi = next(o for o in proto.graph.output if o.name == name)
    shape = list(dims_of(out_vi.type) or ())
    meta_task = output_task(proto, output)
    resolved = infer_task(task or meta_task, shape or list(result.shape), split.labels)
    axis = class_axis(shape or list(result.shape), split.labels.shape) if resolved == "classification" else -1
    if resolved == "regression" and split.label_names:  # a model without a task fit to class names: no measurements
        check_numeric_targets(split.data or split.described, split.label_names, TASK_LOSS["regression"])
    check_targets(split.described, split.labels, result, resolved, name, axis)
    if loss is not None and LOSS_TASK[loss] != resolved:
        raise OnnxkitError(f"loss {loss} scores a {LOSS_TASK[loss]} model, and this one is a {resolved} model; use "
                           f"loss={TASK_LOSS[resolved]}", params=["loss"])
    loss = loss or trained_loss(proto, resolved)
    from onnxkit.graph_walks import opset, probability_logits

    names = label_names(proto)
    metrics = score(
        result,
        split.labels,
        resolved,
        loss=loss,
        num_classes=len(names) if names and resolved == "classification" else None,
        probabilities=resolved in PROBABILITIES_OF and (name == given_probabilities or probability_logits(
            proto.graph, name, len(shape), opset(proto), PROBABILITIES_OF[resolved], axis) is not None),
        axis=axis,
    )
    metrics["task"] = resolved
    if names and len(names) == len(metrics.get("confusion", ())):  # not a multi-label model's K names of 0/1 rows
        metrics["labels"] = names
    for k, entry in enumerate(metrics.get("per_label", ())):
        entry["label"] = names[k] if names and len(names) == len(metrics["per_label"]) else str(k)
    return metrics
