"""Datasets from files: `.npz` (named arrays plus labels) and `.csv` (feature columns plus a label).

- `.npz`: arrays named after the model's inputs plus `labels`, or `x` and `y`.
  An optional string array `label_names` names the classes.
- `.csv`: numeric feature columns and one label column: the column headed
  `label`, `labels`, `target`, `y` or `class` (any case), else the last one.
  The header row is optional. Text labels become class ids in sorted order.
  The features become one array `x` (it binds to any single-input model).
"""

from __future__ import annotations

import csv
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from onnxkit.data.split import Dataset, dataset_from_arrays
from onnxkit.errors import OnnxkitError
from onnxkit.files import is_number
from onnxkit.label_columns import LABEL_COLUMNS, NPZ_LABEL_NAMES, csv_header, label_column, npz_labels


def _require(path: Path) -> None:
    if not path.is_file():
        raise OnnxkitError(f"{path}: no such data file; pass a .npz or .csv file or a dataset name")


def read_npz(path: Path, *, seed: int = 0, validation: float = 0.2, test: float = 0.2) -> Dataset:
    """A dataset from an `.npz` file (see the module docstring for the array names)."""
    _require(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise OnnxkitError(f"{path}: not a readable .npz file ({e}); write it with numpy.savez") from e
    label_names = arrays.pop(NPZ_LABEL_NAMES, None)
    key = npz_labels(arrays)
    if key is None:
        raise OnnxkitError(
            f"{path}: no labels array (arrays: {', '.join(arrays) or 'none'}); "
            "save the targets as 'labels' (or 'y' with features 'x')"
        )
    labels = arrays.pop(key)
    if not arrays:
        raise OnnxkitError(f"{path}: no feature arrays besides {key!r}; add the model's inputs")
    return dataset_from_arrays(
        path.stem,
        arrays,
        labels,
        label_names=None if label_names is None else [str(n) for n in label_names],
        seed=seed,
        validation=validation,
        test=test,
    )


def read_csv(path: Path, *, seed: int = 0, validation: float = 0.2, test: float = 0.2) -> Dataset:
    """A dataset from a `.csv` file (see the module docstring for the columns)."""
    _require(path)
    with path.open(newline="") as f:
        rows = [row for row in csv.reader(f) if row]
    if not rows:
        raise OnnxkitError(f"{path}: empty CSV file; it needs feature columns and a label column")
    header = csv_header(rows[0])
    body = rows[1:] if header else rows
    width = len(rows[0])
    if width < 2 or not body:
        raise OnnxkitError(f"{path}: needs at least one feature column, a label column and a row")
    named = label_column(header)
    label_col = width - 1 if named is None else named
    first = 2 if header else 1  # the file's line number of body[0]
    for i, row in enumerate(body, start=first):
        if len(row) != width:
            raise OnnxkitError(f"{path}:{i}: {len(row)} columns where the first row has {width}")
    features = [[row[j] for j in range(width) if j != label_col] for row in body]
    try:
        x = np.array(features, dtype=np.float32)
    except ValueError as e:
        raise OnnxkitError(
            f"{path}: a feature column holds non-numbers ({e}); only the label column may hold text "
            f"(head it {' / '.join(LABEL_COLUMNS)}, or make it the last column)"
        ) from e
    raw = [row[label_col].strip() for row in body]
    if not all(raw):
        raise OnnxkitError(f"{path}:{raw.index('') + first}: the label cell is empty; give every row a label "
                           "(or drop the row)")
    label_names = None
    if all(is_number(v) for v in raw):
        values = np.array(raw, dtype=np.float64)
        integral = np.all(values == np.round(values))
        labels = values.astype(np.int64) if integral else values.astype(np.float32)
    else:
        label_names = sorted(set(raw))
        index = {name: i for i, name in enumerate(label_names)}
        labels = np.array([index[v] for v in raw], dtype=np.int64)
    return dataset_from_arrays(
        path.stem, {"x": x}, labels, label_names=label_names,
        seed=seed, validation=validation, test=test,
    )


READERS: dict[str, Callable[..., Dataset]] = {".npz": read_npz, ".csv": read_csv}
