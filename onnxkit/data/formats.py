"""Datasets from files: `.npz` (named arrays plus labels) and `.csv` (feature columns plus a label).

- `.npz`: arrays named after the model's inputs plus `labels`, or `x` and `y`.
  An optional string array `label_names` names the classes. Arrays suffixed `_train`, `_val`, `_test` (Keras'
  `x_train`, `y_train`, ...) are the file's own splits (`given_splits`).
- `.csv` (and `.tsv`, by tabs): feature columns and one label column: the one `label=` names by its
  header, else the column headed `label`, `labels`, `target`, `y` or `class` (any case), else the last one.
  Cells are separated by commas, or semicolons, tabs or bars (`onnxkit.files.read_csv_rows`).
  The header row is optional. Text labels become class ids in sorted order. A first column
  headed '' numbering or naming the rows (pandas' index, `to_csv` without `index=False`) is left out.
  The features become one array `x` (it binds to any single-input model): a column of text as one 0/1 column per
  value, `<column>=<value>`, a missing cell as NaN (`onnxkit.categories`; training fills NaN inside the model,
  `onnxkit.train.impute`).
  A column headed `text` makes it a text dataset instead, tokenized with the tokenizer
  the model carries (the other columns but the label are ignored; with none headed as the labels, they are
  the one column beside `text`).
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from onnxkit.categories import (
    as_date,
    by_column,
    encode,
    encodes_categories,
    fit_columns,
    holds_text,
    is_gap,
)
from onnxkit.data.given_splits import given_splits, split_arrays
from onnxkit.data.images import image_column, read_listed_images
from onnxkit.data.parquet import parquet_rows
from onnxkit.data.split import Dataset, Split, dataset_from_arrays
from onnxkit.errors import OnnxkitError, first_few, suggest
from onnxkit.files import (
    flags_as_numbers,
    is_missing,
    is_number,
    not_a_file,
    npz_arrays,
    read_csv_rows,
    thousands_separated,
)
from onnxkit.input_columns import input_arrays, input_columns
from onnxkit.label_columns import (
    LABEL_COLUMNS,
    NPZ_LABEL_NAMES,
    TEXT_COLUMN,
    column_headed,
    csv_header,
    feature_names,
    in_trained_order,
    is_row_id,
    label_column,
    npz_labels,
    text_column,
    texts_column,
    trained_columns,
    without_index,
)
from onnxkit.metadata import metadata
from onnxkit.tokenize import TOKEN_INPUTS

FLOAT32_MAX = float(np.finfo(np.float32).max)  # a CSV's numbers past it would be read as infinities


def require_data_file(path: Path) -> None:
    """One error line unless `path` is a file: a folder (runs.csv/, say) or nothing there."""
    if not path.is_file():
        what = {"a folder": "a folder, not a data file", "no such file": "no such data file"}.get(
            why := not_a_file(path), why)
        raise OnnxkitError(f"{path}: {what}; pass a .npz, .csv, .tsv or .parquet file, a folder of images or a "
                           "dataset name")


def read_npz(path: Path, *, seed: int = 0, validation: float = 0.2, test: float = 0.2) -> Dataset:
    """A dataset from an `.npz` file (see the module docstring for the array names)."""
    require_data_file(path)
    try:
        arrays = npz_arrays(path)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:  # EOFError: an empty file
        raise OnnxkitError(f"{path}: not a readable .npz file ({e}); write it with numpy.savez") from e
    label_names = arrays.pop(NPZ_LABEL_NAMES, None)
    names = None if label_names is None else [str(n) for n in label_names]
    splits = split_arrays(path, arrays)
    if splits is not None:
        return given_splits(path, splits, names, seed=seed, validation=validation, test=test)
    key = npz_labels(arrays)
    if key is None:
        raise OnnxkitError(
            f"{path}: no labels array (arrays: {', '.join(arrays) or 'none'}); "
            "save the targets as 'labels' (or 'label', 'target', or 'y' with features 'x')"
        )
    labels = arrays.pop(key)
    if not arrays:
        raise OnnxkitError(f"{path}: no feature arrays besides {key!r}; add the model's inputs")
    return dataset_from_arrays(
        path.stem,
        arrays,
        labels,
        label_names=names,
        seed=seed,
        validation=validation,
        test=test,
    )


def read_csv(path: Path, *, seed: int = 0, validation: float = 0.2, test: float = 0.2,
             tokenizer: str | None = None, max_length: int | None = None, label: str | None = None,
             inputs: Sequence[Any] = (), columns: Sequence[str] | None = None, drop: Sequence[str] = ()) -> Dataset:
    """A dataset from a `.csv` file (see the module docstring for the columns); one with a `text`
    column is a text dataset, tokenized with `tokenizer` (the model's), as is, for a model with one, a CSV of two
    columns (the one not headed as the labels, or the one of longer cells, holds the texts). `label`: the header of
    the label column (default: the one headed label / labels / target / y / class, else the last, or a text CSV's
    one beside text).
    `inputs`: the model's (`model_inputs`); columns headed by their names are read as them (`input_columns`).
    `columns`: the feature columns the model trained on (`trained_columns`): its categories are rebuilt from them.
    `drop`: columns left out by their headers (ids, a column that gives the labels away)."""
    require_data_file(path)
    numbered = read_csv_rows(path)
    if not numbered:
        raise OnnxkitError(f"{path}: empty CSV file; it needs feature columns and a label column")
    rows = [row for _, row in numbered]
    header = csv_header(rows[0], rows[1] if len(rows) > 1 else ())
    body, lines = (rows[1:], [n for n, _ in numbered[1:]]) if header else (rows, [n for n, _ in numbered])
    header, body = without_index(header, body)
    return _read_table(path, header, body, lines, seed=seed, validation=validation, test=test, tokenizer=tokenizer,
                       max_length=max_length, label=label, inputs=inputs, columns=columns, drop=drop)


def read_parquet(path: Path, *, seed: int = 0, validation: float = 0.2, test: float = 0.2,
                 tokenizer: str | None = None, max_length: int | None = None, label: str | None = None,
                 inputs: Sequence[Any] = (), columns: Sequence[str] | None = None, drop: Sequence[str] = ()) -> Dataset:
    """A dataset from a Parquet table (pandas' `to_parquet`), read as the CSV of its columns is (`read_csv`): each
    value as its text, a null as a missing cell, pandas' stored index left out; errors name a row by its number."""
    require_data_file(path)
    kept, body = parquet_rows(path)
    if not body:
        raise OnnxkitError(f"{path}: no rows; it needs feature columns, a label column and a row")
    return _read_table(path, kept, body, list(range(1, len(body) + 1)), seed=seed, validation=validation, test=test,
                       tokenizer=tokenizer, max_length=max_length, label=label, inputs=inputs, columns=columns,
                       drop=drop)


def _read_table(path: Path, header: Sequence[str] | None, body: list[list[str]], lines: list[int], *, seed: int,
                validation: float, test: float, tokenizer: str | None, max_length: int | None, label: str | None,
                inputs: Sequence[Any], columns: Sequence[str] | None, drop: Sequence[str] = ()) -> Dataset:
    """A table's rows (`body`, with their `lines` in the file, below its `header`) as `read_csv` reads them."""
    width = len(header or body[0]) if body else 0
    for line, row in zip(lines, body, strict=True):
        if len(row) != width:
            raise OnnxkitError(f"{path}:{line}: {len(row)} column{'s' * (len(row) != 1)} where the first row has "
                               f"{width}")
    number = list(range(1, width + 1))  # each column's in the file, as messages give it
    if drop:
        header, body, number = _dropped(path, header, body, drop, label)
        width = len(header)
    if width < 2 or not body:
        raise OnnxkitError(f"{path}: needs at least one feature column, a label column and a row")
    named = label_column(header, str(path)) if label is None else _column_headed(path, header, label)
    text = texts_column(header, body, named, str(path)) if tokenizer is not None else text_column(header)
    if named is None and text is not None:
        named = _beside_the_text(path, header, text)  # type: ignore[arg-type]
    if named is not None and named == text:
        raise OnnxkitError(f"{path}: the labels are to be column {label!r}, which holds the texts; name the column "
                           "of their labels")
    label_col = width - 1 if named is None else named
    try:
        labels, label_names = _labels(path, [row[label_col].strip() for row in body], lines)
    except OnnxkitError as e:
        if named is not None:
            raise
        raise OnnxkitError(f"{e} (the labels: {_labels_from(header)})") from None
    column = f"{header[label_col].strip()!r} (column {number[label_col]})" if header else f"column {label_col + 1}"
    found = {"label_column": column, "label_header": header[label_col].strip() if header else None}
    by_name = None if tokenizer is not None else input_columns(path, header, inputs, label_col)
    if by_name is not None:
        arrays = input_arrays(path, body, by_name, inputs, header, lines)  # type: ignore[arg-type]
        dataset = dataset_from_arrays(path.stem, arrays, labels, label_names=label_names, seed=seed,
                                      validation=validation, test=test)
        return replace(dataset, **found)
    listed = image_column(path, header, body, label_col, lines) if text is None and tokenizer is None else None
    if listed is not None:  # a list of image files beside their labels
        dataset = read_listed_images(path, listed, body, labels, label_names, seed=seed, validation=validation,
                                     test=test, inputs=inputs)
        shown = [repr(header[j].strip()) if header else f"column {j + 1}" for j in range(width)]
        others = [shown[j] for j in range(width) if j not in (listed, label_col)]
        left = (f"column{'s' * (len(others) > 1)} {', '.join(others)} left out: a list of images is read as its "
                f"image files ({shown[listed]}) and their labels alone",) if others else ()
        return replace(dataset, **found, notes=(*dataset.notes, *left))
    if text is not None:
        texts = [row[text] for row in body]
        name = header[text].strip() if header else TEXT_COLUMN
        dataset = _text_dataset(path, texts, labels, label_names, lines, tokenizer, max_length, seed, validation, test,
                                name)
        read = f"texts from {name!r} (column {number[text]})" if header else f"texts from column {text + 1}"
        return replace(dataset, **found, texts_read=f"{read}, {dataset.texts_read}")
    if tokenizer is not None:  # the model reads text: its features would be 'non-numbers' to the reader below
        shown = f"its columns: {', '.join(repr(h.strip()) for h in header)}" if header else "it has no header row"
        raise OnnxkitError(f"{path}: the model reads text, but no column is headed {TEXT_COLUMN!r} ({shown}); "
                           f"head the column of texts {TEXT_COLUMN!r} in the first row (e.g. {TEXT_COLUMN},label)")
    features = [[row[j] for j in range(width) if j != label_col] for row in body]
    names = feature_names(header, label_col)
    notes: tuple[str, ...] = ()
    if encodes_categories(columns, names):  # a model's recorded categories, rebuilt by name from the cells as
        # written: a yes / no column it trained on as categories (one with a gap) is no 1 / 0 column here
        encoded = encode(by_column(str(path), names, features), columns, str(path), lines)  # type: ignore[arg-type]
        x, names = encoded.warn_unseen(str(path)), list(columns)  # type: ignore[arg-type]
    else:
        features = flags_as_numbers(features)
        try:
            x = np.array(features, dtype=np.float64)
        except ValueError:
            if any(getattr(spec, "name", None) in TOKEN_INPUTS for spec in inputs) and \
                    any(holds_text(cells) for cells in zip(*features, strict=True)):  # text for token ids
                from onnxkit.data.text import needs_tokenizer

                raise needs_tokenizer(path.stem) from None
            x, names, notes = _with_categories(path, features, header, label_col, lines, named is not None)
    x, names, left = _without_row_ids(x, names, inputs, columns)
    _refuse_empty_columns(path, x, names, header, label_col)
    big = _beyond_float32(x)
    if big.any():
        i, j = (int(k) for k in np.argwhere(big)[0])
        written = feature_names(header, label_col)  # the file's columns (a category's cells are 0 or 1)
        cell = features[i][written.index(names[j]) if names and written else j].strip()
        raise OnnxkitError(f"{path}:{lines[i]}: feature column {_feature(names, header, j, label_col)} holds "
                           f"{cell}, beyond float32's range (±{FLOAT32_MAX:.1e}); "
                           "rescale that column")
    x = x.astype(np.float32)
    dataset = dataset_from_arrays(
        path.stem, {"x": x}, labels, label_names=label_names,
        seed=seed, validation=validation, test=test,
    )
    dataset = replace(dataset, **found, notes=(*notes, *left),
                      columns=tuple(names) if names else None)
    if named is None:  # said with any error about the labels: they may be a feature
        return replace(dataset, labels_from=_labels_from(header))
    return dataset


def _labels_from(header: Sequence[str] | None) -> str:
    """Where a table's labels were taken from when no column was named or headed as the labels."""
    if header:
        return (f"the last column, {header[-1].strip()!r}, as no column is headed {' / '.join(LABEL_COLUMNS)}; "
                "label=COLUMN names another")
    return f"the last column, as the file has no header naming a {LABEL_COLUMNS[0]} column"


def _without_row_ids(x: np.ndarray, names: list[str] | None, inputs: Sequence[Any],
                     trained: Sequence[str] | None) -> tuple[np.ndarray, list[str] | None, tuple[str, ...]]:
    """The features less the columns headed as a row id that hold whole numbers, with a note naming them, where no
    model is given (train builds one for the features read) or the model's columns (`trained`) lack them; a model
    given without columns (`inputs`, sized by its author) reads them, with a warning. An id read as a feature gives
    the class away in a file sorted by class (Kaggle's iris with its Id: 100% on the test split, 93% without), and
    where a test file's ids follow the training file's, as Kaggle's do, the model extrapolates on them (Ecdat's
    Housing numbered so: R² 0.605 on the test file with the Id, 0.663 without)."""
    if not names:
        return x, names, ()
    ids = [j for j, name in enumerate(names) if np.array_equal(x[:, j], np.round(x[:, j]))
           and is_row_id(name, x[:, j].tolist())]
    left = [j for j in ids if not inputs or trained and names[j] not in trained]
    left = left if len(left) < x.shape[1] else []
    notes = tuple(f"column {names[j]!r} holds whole numbers, a row id by its name: it is read as a feature (in a "
                  "file sorted by class it gives the class away); if it is an id, leave it out: --drop "
                  f"{names[j] if names[j].isidentifier() else repr(names[j])} (drop= in fit)"
                  for j in ids if j not in left)
    if not left:
        return x, names, notes
    kept = [j for j in range(x.shape[1]) if j not in left]
    said = ", ".join(repr(names[j]) for j in left)
    return x[:, kept], [names[j] for j in kept], (*notes, f"column{'s' * (len(left) > 1)} {said} left out: whole "
                                                  "numbers headed as a row id (an id read as a feature gives the "
                                                  "class away in a file sorted by class); rename a column to read it "
                                                  "as a feature")


def csv_for_model(dataset: Dataset, model: Any) -> Dataset:
    """A CSV's feature table as the model's one input takes it, as predict reads a CSV: each row
    reshaped to the input's fixed per-example shape (rows of 16 for [batch, 1, 4, 4]), and whole
    numbers as the integers (0 and 1 as the booleans) that the input holds; a CSV's cells read as float32.
    Anything else is left for the binding's checks to refuse."""
    from onnxkit.data.split import model_inputs

    specs = model_inputs(model)
    if len(specs) != 1 or list(dataset.train.inputs) != ["x"]:
        return dataset
    dataset = _in_trained_order(dataset, model)
    spec = specs[0]
    example = spec.shape[1:] if spec.shape else ()
    x = np.concatenate([s.inputs["x"] for s in (dataset.train, dataset.validation, dataset.test)])
    reshape = len(example) > 1 and all(isinstance(d, int) and d > 0 for d in example) and \
        x.ndim == 2 and x.shape[1] == int(np.prod(example))
    whole = spec.dtype.kind in "iu" and bool(np.all(x == np.round(x)))
    flags = spec.dtype.kind == "b" and bool(np.all((x == 0) | (x == 1)))

    def fitted(split: Split) -> Split:
        features = split.inputs["x"]
        features = features.reshape(len(features), *example) if reshape else features
        return Split(split.name, {"x": features.astype(spec.dtype) if whole or flags else features}, split.labels)

    if not (reshape or whole or flags):
        return dataset
    return replace(dataset, train=fitted(dataset.train), validation=fitted(dataset.validation),
                   test=fitted(dataset.test))


def _in_trained_order(dataset: Dataset, model: Any) -> Dataset:
    """`dataset` with its feature columns in the order the model trained on them, by name, when it holds them all
    (eval refuses other columns, `evaluate`; training takes them as given, as it takes new class names)."""
    trained = trained_columns(metadata(model))
    names = dataset.columns
    if not trained or not names or not set(trained) <= set(names):
        return dataset
    order = in_trained_order(names, trained, dataset.name)
    if order is None:
        return dataset

    def picked(split: Split) -> Split:
        return Split(split.name, {"x": split.inputs["x"][:, order]}, split.labels)

    return replace(dataset, train=picked(dataset.train), validation=picked(dataset.validation),
                   test=picked(dataset.test), columns=tuple(trained))


def _beyond_float32(values: np.ndarray) -> np.ndarray:
    """Where finite float64 values would overflow to infinity as float32."""
    return np.isfinite(values) & (np.abs(values) > FLOAT32_MAX)


def _column(header: Sequence[str] | None, j: int, label_col: int) -> str:
    """How messages name feature column `j` (its index among the features): by its header, else its number."""
    j += j >= label_col  # the file's column index
    return repr(header[j].strip()) if header else str(j + 1)


def _with_categories(path: Path, features: list[list[str]], header: Sequence[str] | None, label_col: int,
                     lines: list[int], label_named: bool) -> tuple[np.ndarray, list[str] | None, tuple[str, ...]]:
    """Features that are not all numbers: missing cells as NaN, and each column of text as a 0/1 column per value
    (`onnxkit.categories`), those of too many values left out; the features, their names and a note on the columns
    left out. Refused: text in a file with no header to name its categories (or whose labels were taken from the
    last column by default, which the text may be), numbers with a stray text, every column left out."""
    names = feature_names(header, label_col)
    columns = by_column(str(path), names or [str(j) for j in range(len(features[0]))], features)
    texts = [j for j, cells in enumerate(columns.values()) if holds_text(cells)]
    for j in texts:
        cells = [row[j] for row in features]
        if _stray_text(cells) or any(thousands_separated(c) for c in cells):
            raise _not_numbers(path, features, header, label_col, lines, label_named, column=j)
    if texts and (names is None or not label_named):
        raise _not_numbers(path, features, header, label_col, lines, label_named, column=texts[0])
    fitted = fit_columns(columns, str(path))
    if not fitted.names:
        raise OnnxkitError(f"{path}: every feature column holds too many distinct texts to be categories "
                           f"({', '.join(f'{c!r}: {why}' for c, why in fitted.left_out.items())}); give numeric "
                           "columns, or columns of a few values each")
    x = encode(columns, fitted.names, str(path), lines).x
    notes = (f"columns left out, too many distinct texts to be categories (ids, names, free text): "
             f"{', '.join(f'{c!r} ({why})' for c, why in fitted.left_out.items())}",) if fitted.left_out else ()
    return x, fitted.names if names else None, notes


def _feature(names: Sequence[str] | None, header: Sequence[str] | None, j: int, label_col: int) -> str:
    """How messages name feature `j` of the features read (`names`, categories encoded), else `_column`."""
    return repr(names[j]) if names else _column(header, j, label_col)


STRAY = 0.05  # a column of numbers whose text cells are at most this share (or 2) holds typos ('0.3x'), not
# categories (titanic's Ticket column: 26% text, 'PC 17599', beside numbers)


def _stray_text(cells: Sequence[str]) -> bool:
    """Whether a column's cells are numbers but for a few texts (`STRAY`)."""
    present = [c for c in cells if not is_gap(c)]
    texts = sum(not is_number(c) for c in present)
    return 0 < texts <= max(2, STRAY * len(present)) and texts < len(present) - texts


def _refuse_empty_columns(path: Path, x: np.ndarray, names: Sequence[str] | None, header: Sequence[str] | None,
                          label_col: int) -> None:
    """One line for a feature column missing in every row (a column of no values), which nothing can fill."""
    empty = np.isnan(x).all(axis=0) if len(x) > 1 else np.zeros(x.shape[1], bool)
    if empty.any():
        column = _feature(names, header, int(np.argmax(empty)), label_col)
        raise OnnxkitError(f"{path}: feature column {column} is empty in every row (a column of no values); drop "
                           "that column")


def _not_numbers(path: Path, features: list[list[str]], header: Sequence[str] | None, label_col: int,
                 lines: list[int], label_named: bool = False, column: int | None = None) -> OnnxkitError:
    """The error for the first feature cell (of feature `column`, if given) that cannot be read: text among numbers,
    or text in a file without a header (whose categories have no names) or whose label column was the last by
    default (the text may be the labels: it says how to name either)."""
    i, j = next(((i, j) for i, row in enumerate(features) for j, cell in enumerate(row)
                 if (column is None or j == column) and not is_number(cell) and not is_gap(cell)), (0, 0))
    name = _column(header, j, label_col)
    cell, where = features[i][j].strip(), f"{path}:{lines[i]}: feature column {name}"
    separated = thousands_separated(cell)
    if separated:
        return OnnxkitError(f"{where} {separated}")
    if _stray_text([row[j] for row in features]):
        return OnnxkitError(f"{where} holds {cell!r} among numbers; write a number there (or leave it empty, a "
                            "missing value)")
    if not header:
        return OnnxkitError(f"{where} holds text ({cell!r}); text columns are read as categories (a 0/1 column per "
                            f"value) by their names: add a header row naming the columns, one headed "
                            f"{LABEL_COLUMNS[0]} for the labels")
    dates = all(as_date(row[j]) for row in features if not is_gap(row[j]))
    read_as = "as numbers of its dates' parts" if dates else "as categories, a 0/1 column per value"
    return OnnxkitError(f"{where} holds text ({cell!r}), and the labels were taken from the last column, "
                        f"{header[-1].strip()!r}: if {name} holds the labels, name it: label={name}; if it is a "
                        f"feature (read {read_as}), name the label column: label={header[-1].strip()!r}")


def _labels(path: Path, raw: list[str], lines: list[int]) -> tuple[np.ndarray, list[str] | None]:
    """The label cells (of the file's `lines`) as labels, and the class names of text labels."""
    numeric = [is_number(v) for v in raw]
    # an empty cell; or NA, N/A, ? among numbers (among class names, 'none' may be a class)
    among_numbers = all(n or is_missing(v) for n, v in zip(numeric, raw, strict=True))
    gaps = [i for i, v in enumerate(raw) if not v or among_numbers and not numeric[i]]
    if gaps:
        gap = gaps[0]
        there = f"holds {raw[gap]!r}, a missing value" if raw[gap] else "is empty"
        more = f" (and {len(gaps) - 1} more: {len(gaps)} of {len(raw)} rows have no label)" if len(gaps) > 1 else ""
        raise OnnxkitError(f"{path}:{lines[gap]}: the label cell {there}{more}; give every row a label (or drop "
                           f"the row{'s' * (len(gaps) > 1)})")
    if all(numeric):
        values = np.array(raw, dtype=np.float64)
        big = _beyond_float32(values)
        if big.any():
            i = int(np.argmax(big))
            raise OnnxkitError(f"{path}:{lines[i]}: the label {raw[i]} is beyond float32's range "
                               f"(±{FLOAT32_MAX:.1e}); rescale the labels")
        integral = np.all(values == np.round(values)) and np.all(np.abs(values) < 2**53)  # class ids
        return (values.astype(np.int64) if integral else values.astype(np.float32)), None
    label_names = sorted(set(raw))
    index = {name: i for i, name in enumerate(label_names)}
    return np.array([index[v] for v in raw], dtype=np.int64), label_names


class NoSuchColumn(OnnxkitError):
    """The label column asked for by name is not in the file."""


class NoHeader(NoSuchColumn):
    """The label column is asked for by name, but the file has no header row naming its columns."""


def _column_headed(path: Path, header: Sequence[str] | None, label: str) -> int:
    """The index of the column headed `label` (spaces and case aside when no header is exactly it)."""
    if not header:
        raise NoHeader(f"{path}: the labels are to be column {label!r}, but the file has no header row naming "
                       "its columns; add one")
    found = column_headed(header, label)
    if found is not None:
        return found
    names = [h.strip() for h in header]
    raise NoSuchColumn(f"{path}: no column is headed {label!r}.{suggest(label, names)} Its columns: "
                       f"{first_few([repr(n) for n in names], 12)}")


def _dropped(path: Path, header: Sequence[str] | None, body: list[list[str]], drop: Sequence[str],
             label: str | None) -> tuple[list[str], list[list[str]], list[int]]:
    """The table without the columns headed as `drop` names them (spaces and case aside, as a label column), and
    the number in the file of each column kept."""
    if not header:
        raise OnnxkitError(f"{path}: drop={list(drop)} names columns by their headers, but the file has no header "
                           "row naming its columns; add one")
    gone = set()
    for name in drop:
        try:
            gone.add(_column_headed(path, header, name))
        except NoSuchColumn:
            names = [h.strip() for h in header]
            raise OnnxkitError(f"{path}: drop={name!r} names no column.{suggest(name, names)} Its columns: "
                               f"{first_few([repr(n) for n in names], 12)}") from None
    if label is not None and _column_headed(path, header, label) in gone:
        raise OnnxkitError(f"{path}: column {label!r} is to be both the labels and dropped; leave it out of drop",
                           params=["drop"])
    kept = [j for j in range(len(header)) if j not in gone]
    return [header[j] for j in kept], [[row[j] for j in kept] for row in body], [j + 1 for j in kept]


def _beside_the_text(path: Path, header: list[str], text: int) -> int:
    """The labels of a text CSV none of whose columns is headed as them: the one column beside `text`; with more,
    which is not for guessing (the last column took `text,sentiment,source`'s constant source as the labels, and
    `sentiment,text`'s texts)."""
    others = [i for i in range(len(header)) if i != text]
    if len(others) == 1:
        return others[0]
    named = ", ".join(repr(header[i].strip()) for i in others)
    raise OnnxkitError(f"{path}: which column holds the labels of the texts? None is headed "
                       f"{' / '.join(LABEL_COLUMNS)} (the other columns: {named}); name it with label=COLUMN, "
                       "or head it label")


def _text_dataset(path: Path, texts: list[str], labels: np.ndarray, label_names: list[str] | None, lines: list[int],
                  tokenizer: str | None, max_length: int | None, seed: int, validation: float, test: float,
                  column: str) -> Dataset:
    """A CSV's texts (in the column headed `column`) and labels, tokenized with the model's tokenizer."""
    from onnxkit.data.text import text_dataset

    empty = next((i for i, t in enumerate(texts) if not t.strip()), None)
    if empty is not None:
        raise OnnxkitError(f"{path}:{lines[empty]}: the text cell is empty; give every row a text (or drop the row)")
    if labels.dtype.kind != "i":
        raise OnnxkitError(f"{path}: a text dataset's labels are classes (names or whole numbers), not measurements")
    dataset = text_dataset(path.stem, texts, labels, label_names, tokenizer=tokenizer, max_length=max_length, limit=0,
                           seed=seed, validation=validation, test=test)
    return replace(dataset, notes=dataset.notes + _copied_texts(path, dataset, column))


def _copied_texts(path: Path, dataset: Dataset, column: str) -> tuple[str, ...]:
    """A note when texts of the validation or test split are also in the training split (a text given twice: its
    score there is partly a memory test)."""
    trained = {text.strip() for text in dataset.train.texts}  # type: ignore[attr-defined]
    held = [text for split in (dataset.validation, dataset.test) for text in split.texts]  # type: ignore[attr-defined]
    copies = sum(text.strip() in trained for text in held)
    if not copies:
        return ()
    return (f"{path}: {copies} of the {len(held)} validation and test texts are also in the training split (the "
            "file holds them more than once), so their scores count texts the model trained on; drop the copies "
            f"for an honest score (pandas: df.drop_duplicates({column!r}))",)


READERS: dict[str, Callable[..., Dataset]] = {".npz": read_npz, ".csv": read_csv, ".tsv": read_csv,
                                              ".parquet": read_parquet}
