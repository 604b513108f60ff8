"""A CSV's columns as a model's inputs, by name: a scikit-learn pipeline converted by skl2onnx with an input per
column (a ColumnTransformer's string and number columns, each [batch, 1]), or a model that takes text itself (one
string input, fed the `text` column whatever the input is named: a TF-IDF pipeline's).

`predict` (onnxkit.runtime.datafiles) and the data of eval, train and quantize (onnxkit.data.formats) read such a
CSV alike; a CSV of a model with one numeric input is read as before, its feature columns in one array.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from onnxkit.errors import OnnxkitError, first_few
from onnxkit.files import is_missing
from onnxkit.label_columns import TEXT_COLUMN

_FLAGS = {"true": True, "false": False, "1": True, "0": False, "1.0": True, "0.0": False}


def one_value_a_row(spec: Any) -> bool:
    """Whether an input (anything with `name`, `dtype`, `shape`) takes one value a row: [batch] or [batch, 1]."""
    shape = spec.shape
    return spec.dtype is not None and shape is not None and (
        len(shape) == 1 or len(shape) == 2 and shape[1] in (1, None))


def unit_axes_moved(array: np.ndarray, spec: Any) -> np.ndarray:
    """`array` reshaped to the input's fixed per-example dims when they differ from its own only in where size-1
    axes sit ([N, 1, 8, 8] images for a [batch, 8, 8, 1] input, N values for [batch, 1]): the same values in the
    same order. Anything else is returned as it is, for the shape checks to refuse. Train and predict read so."""
    wanted = spec.shape[1:] if spec.shape else None
    if wanted is None or not all(isinstance(d, int) and d > 0 for d in wanted) or array.ndim < 1:
        return array
    if tuple(wanted) == array.shape[1:] or [d for d in wanted if d != 1] != [d for d in array.shape[1:] if d != 1]:
        return array
    return array.reshape((len(array), *wanted))


def reads_by_column(inputs: Sequence[Any]) -> bool:
    """Whether a model with these inputs may read a CSV a column per input: a value a row in each, and several
    inputs or a string one (a lone numeric input takes the feature columns in one array)."""
    return bool(inputs) and all(one_value_a_row(s) for s in inputs) and (
        len(inputs) > 1 or inputs[0].dtype.kind in "OSU")


def input_columns(path: Path, header: Sequence[str] | None, inputs: Sequence[Any],
                  label: int | None = None) -> dict[str, int] | None:
    """Each input's column (its index in `header`, the label column `label` aside) when the model reads a CSV a
    column per input (`reads_by_column`); a lone string input not named by a column takes the `text` column. None
    when no column is named so (the caller reads the file as before); an error naming the inputs no column is
    headed by when only some are."""
    if not header or not reads_by_column(inputs):
        return None
    names = [h.strip() for h in header]
    found = {s.name: names.index(s.name) for s in inputs if s.name in names and names.index(s.name) != label}
    lowered = [n.lower() for n in names]
    if not found and len(inputs) == 1 and TEXT_COLUMN in lowered and lowered.index(TEXT_COLUMN) != label:
        return {inputs[0].name: lowered.index(TEXT_COLUMN)}
    if not found:
        return None
    missing = [s.name for s in inputs if s.name not in found]
    if missing:
        labelled = label is not None and names[label] in missing
        absent = [repr(m) for m in missing if not labelled or m != names[label]]
        why = [f"no column is headed {first_few(absent, 5)}"] if absent else []
        why += [f"column {names[label]!r} is read as the labels (head theirs label)"] if labelled else []
        raise OnnxkitError(f"{path}: {' and '.join(why)}; the model reads a column per input, by name "
                           f"({', '.join(s.name for s in inputs)})")
    return found


def input_arrays(path: Path, rows: Sequence[Sequence[str]], columns: dict[str, int], inputs: Sequence[Any],
                 header: Sequence[str], lines: Sequence[int] | None = None) -> dict[str, np.ndarray]:
    """The cells of `columns` (by input name) as each input takes them: strings as they are, numbers as its type;
    [rows, 1] for an input of two dimensions. A cell its input cannot hold is an error naming its line."""
    arrays = {}
    for spec in inputs:
        j = columns[spec.name]
        cells = [row[j] for row in rows]
        if spec.dtype.kind in "OSU":
            values = np.array(cells, dtype=object)
        else:
            values = np.array([_number(path, cell, spec, header[j].strip(), lines[i] if lines else None)
                               for i, cell in enumerate(cells)]).astype(spec.dtype)
        arrays[spec.name] = values.reshape(-1, 1) if len(spec.shape) == 2 else values
    return arrays


def _number(path: Path, cell: str, spec: Any, column: str, line: int | None) -> float | bool:
    """A cell as input `spec`'s number (a bool input's true / false too)."""
    text = cell.strip()
    where = f"{path}:{line}" if line else str(path)
    if is_missing(text):
        raise OnnxkitError(f"{where}: column {column!r} {'is empty' if not text else f'holds {text!r}'} there (a "
                           "missing value); fill or drop that row")
    if spec.dtype.kind == "b" and text.lower() in _FLAGS:
        return _FLAGS[text.lower()]
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or spec.dtype.kind in "iub" and value != round(value):
        kind = "whole numbers" if spec.dtype.kind in "iu" else "true / false" if spec.dtype.kind == "b" else "numbers"
        raise OnnxkitError(f"{where}: column {column!r} holds {text!r}, but the model's input {spec.name!r} takes "
                           f"{spec.dtype} {kind}; fix that cell")
    return value
