"""Checks on data before it is split or trained on: one row per label, no empty data,
labels of the right shape and range, no NaN or infinity in the features.

Every failed check is an `OnnxkitError` that names the data and says what to fix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from onnxkit.errors import OnnxkitError, first_few
from onnxkit.files import is_number


def checked_labels(name: str, inputs: Mapping[str, np.ndarray], labels: np.ndarray) -> np.ndarray:
    """`labels` with a trailing axis of 1 squeezed ([N, 1] -> [N]), after checking that the data
    has rows and that every feature array has one row per label."""
    labels = np.asarray(labels)
    if labels.ndim == 0:
        raise OnnxkitError(f"data {name!r}: the labels are a single value; give one label per row")
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    for key, array in inputs.items():
        rows = len(array) if np.ndim(array) else 0
        if rows != len(labels):
            batch_second = rows < len(labels) and np.ndim(array) >= 2 and array.shape[1] == len(labels)
            why = (f" (its axis 1 holds {len(labels)}: training takes each array's rows along axis 0, so an input "
                   "batched on axis 1, as an RNN's state [layers, batch, hidden], cannot be trained on)" if batch_second
                   else "")
            raise OnnxkitError(f"data {name!r}: feature array {key!r} has {rows} rows but there are {len(labels)} "
                               f"labels; give exactly one label per row{why}")
    if len(labels) == 0:
        raise OnnxkitError(f"data {name!r} has no rows; give at least one example")
    return labels


def not_whole(labels: np.ndarray) -> float | None:
    """The first of float `labels` that is not a whole number (NaN included), if any: a stray value among class ids."""
    if labels.dtype.kind != "f":
        return None
    stray = labels[labels != np.round(labels)]
    return float(stray.flat[0]) if stray.size else None


def check_finite(name: str, inputs: Mapping[str, np.ndarray], role: str = "feature array") -> None:
    """Refuse float arrays (features, or regression targets with `role`) holding NaN or infinity,
    counting the bad values and rows."""
    for key, array in inputs.items():
        if array.dtype.kind != "f":
            continue
        bad = ~np.isfinite(array)
        if bad.any():
            nan = int(np.isnan(array).sum())
            inf = int(bad.sum()) - nan
            rows = int(bad.reshape(len(array), -1).any(axis=1).sum())
            what = " and ".join(f"{n} {kind}" for n, kind in ((nan, "NaN"), (inf, "infinite")) if n)
            mask = not nan and np.all((array == 0) | (array == -np.inf))
            fix = ("an additive mask of 0 and -inf: write -1e9 for -inf (the same weights after a softmax)" if mask
                   else "fill or drop those rows")
            raise OnnxkitError(
                f"data {name!r}: {role} {key!r} holds {what} value{'s' if nan + inf > 1 else ''} "
                f"in {rows} of {len(array)} rows; {fix}"
            )


def check_probabilities(name: str, labels: np.ndarray, num_classes: int | None, output: str) -> None:
    """[N, C] float labels of a classifier are class probabilities (PyTorch's soft targets): one a class of
    `output`, each from 0 to 1, each row summing to 1."""
    if num_classes is not None and labels.shape[1] != num_classes:
        raise OnnxkitError(
            f"data {name!r}: labels of shape {list(labels.shape)} read as class probabilities, but output {output!r} "
            f"scores {num_classes} classes; give one probability per class, or one class id per row (shape [N])"
        )
    sums = labels.sum(axis=1, dtype=np.float64)
    bad = ~((labels >= 0).all(axis=1) & (labels <= 1).all(axis=1) & (np.abs(sums - 1) <= 1e-3))
    if bad.any():
        row = int(np.argmax(bad))
        raise OnnxkitError(
            f"data {name!r}: float labels of shape {list(labels.shape)} read as class probabilities, but row {row} "
            f"holds {first_few([f'{v:g}' for v in labels[row]], 4)} (summing to {sums[row]:g}); each row's values "
            "must be 0 to 1, summing to 1 (labels / labels.sum(1, keepdims=True)), or give one class id per row"
        )


def check_class_labels(
    name: str,
    labels: np.ndarray,
    num_classes: int | None,
    *,
    output: str = "logits",
    binary: bool = False,
    class_names: Sequence[str] | None = None,
) -> None:
    """Class ids must be one per row and lie in [0, num_classes) (0 or 1 for a binary task);
    `output` names the model output holding the class scores; `class_names` (the data's text
    labels, by id) are listed when there are too many, to show a stray spelling."""
    if binary:
        if labels.size and not np.isin(labels, (0, 1)).all():
            odd = labels[~np.isin(labels, (0, 1))].ravel()[0]
            raise OnnxkitError(
                f"data {name!r}: a binary task takes labels 0 and 1, but a label is {odd:g}; "
                "map the two classes to 0 and 1 (or train with loss=mse for regression)"
            )
        return
    if labels.ndim == 2 and labels.dtype.kind == "f":  # a probability per class (soft targets)
        check_probabilities(name, labels, num_classes, output)
        return
    if labels.ndim != 1:  # a 0/1 matrix is K labels a row, which a model said to classify does not default to
        multi = labels.ndim == 2 and labels.dtype.kind in "iub" and bool(np.isin(labels, (0, 1)).all())
        raise OnnxkitError(
            f"data {name!r}: class labels have shape {list(labels.shape)}; give one class id per row (shape [N])"
            + (f", or train {labels.shape[1]} separate 0/1 labels (multi-label) with loss bce-with-logits" if multi
               else "")
        )
    if labels.dtype.kind not in "iub" or not len(labels):
        return
    low, high = int(labels.min()), int(labels.max())
    if low < 0:
        raise OnnxkitError(f"data {name!r}: class labels must be 0 or more, but one is {low}; number the classes "
                           "from 0")
    if num_classes == 1:
        raise OnnxkitError(
            f"data {name!r}: output {output!r} is a single score, which cannot hold {high + 1} classes; train it "
            "with loss bce-with-logits (labels 0 and 1) or mse (numbers), or build it with one score per class"
        )
    # np.unique only here, where it is needed: it imports numpy.ma (7 ms of every fit)
    if num_classes is not None and high >= num_classes and low > 0 and len(np.unique(labels)) <= num_classes:
        raise OnnxkitError(  # UCI's wine and iris number their classes 1..3
            f"data {name!r}: class labels run from {low} to {high}, but class ids count from 0 (0 to "
            f"{num_classes - 1} for output {output!r}'s {num_classes} scores); renumber them from 0"
            + (" (subtract 1)" if low == 1 and high == num_classes else "")
        )
    if num_classes is not None and high >= num_classes:
        raise OnnxkitError(
            f"data {name!r}: labels go up to {high} but output {output!r} has {num_classes} scores; "
            "build the model with as many classes as the data has"
            + (f" (its {len(class_names)} classes: {first_few([repr(n) for n in class_names], 10)})" if class_names
               else "")
        )


def check_numeric_targets(name: str, class_names: Sequence[str] | None, loss: str) -> None:
    """Refuse class names (a CSV's text labels) as the targets of the regression loss `loss`: their ids
    in sorted order are no measurements, yet a one-output model was fit to them."""
    if not class_names or list(class_names) == [str(i) for i in range(len(class_names))]:
        return  # no names, or names that are their ids ('0' to '9', digits'): the ids are the numbers
    quoted = first_few([repr(n) for n in class_names])
    if all(is_number(n.replace(",", "")) for n in class_names):
        raise OnnxkitError(f"data {name!r}: the targets are written with thousands separators ({quoted}), so they "
                           "read as class names; write the numbers without them")
    raise OnnxkitError(f"data {name!r}: the labels are class names ({quoted}), which the {loss} loss cannot fit as "
                       f"numbers; a classifier gives one score per class (an output of [batch, {len(class_names)}])")
