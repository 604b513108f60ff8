"""Inputs from files and predictions to files or a terminal, for `onnxkit predict`.

Inputs: .npy (one array), .npz (arrays named by input), .json (a nested list, or an
object of nested lists by input name), .csv (one example per row, optional header), an image or a folder of
images (each a row; `onnxkit.data.images` decodes them as the model's image input takes them).
A file written for training also reads: what train reads as its labels (an .npz's `labels`
or `y` and `label_names`, a CSV column headed label, target, y, ...) is left out.
Outputs: .json (outputs, labels, top-k), .npz (every output, labels, top_k_labels and top_k_scores), .npy (the
scores output: `Prediction.scores`), .csv (one row per example). All written atomically.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import warnings
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from onnxkit.categories import by_column, encode, encodes_categories
from onnxkit.errors import OnnxkitError, first_few
from onnxkit.files import (
    IMAGE_SUFFIXES,
    TABLE_SUFFIXES,
    csv_rows,
    flags_as_numbers,
    is_missing,
    is_number,
    not_a_file,
    npy_array,
    npz_arrays,
    read_csv_rows,
    read_text_file,
    sep_line,
    table_delimiter,
    thousands_separated,
    write_bytes,
    write_text,
)
from onnxkit.input_columns import input_arrays, input_columns, reads_by_column, unit_axes_moved
from onnxkit.label_columns import (
    LABEL_COLUMNS,
    NPZ_LABEL_NAMES,
    PANDAS_INDEX_HEADERS,
    TEXT_COLUMN,
    csv_header,
    feature_names,
    features_label_column,
    imputed_inputs,
    in_trained_order,
    is_row_id,
    label_column,
    label_header,
    may_be_row_id,
    npz_labels,
    npz_split,
    texts_column,
    trained_columns,
    without_index,
)
from onnxkit.runtime.model import Model
from onnxkit.runtime.prediction import Prediction
from onnxkit.runtime.signature import TensorSpec
from onnxkit.runtime.text import carries_tokenizer, reads_text

INPUT_SUFFIXES = (".npy", ".npz", ".json", ".csv", ".tsv")
OUTPUT_SUFFIXES = (".json", ".npz", ".npy", ".csv")


InputPath = str | os.PathLike | Sequence[str]  # an input file or folder, or image files one by one (a shell glob)


def read_inputs(path: InputPath, model: Model) -> dict[str, Any]:
    """The values in an input file, by model input name (checked later by `Model.prepare`);
    an input with no rows is an error."""
    images = _image_paths(path)
    if images is not None:  # an image, a folder of them, or several: decoded as the model's image input takes them
        from onnxkit.data.images import image_input, read_images

        layout = image_input(model.inputs)
        return {layout.name: read_images(images, layout)}
    path = Path(path)  # type: ignore[arg-type]  # (several paths are images, above)
    suffix = path.suffix.lower()
    if not suffix and not path.exists():  # a mistyped folder of images: was 'unknown input format'
        raise OnnxkitError(f"{path}: no such file or folder")
    if suffix == ".parquet" and path.is_file():  # read as --ray reads it (its own reader: pyarrow, no Ray)
        from onnxkit.runtime.batch import read_rows

        return read_rows(path, model)
    if suffix not in INPUT_SUFFIXES:
        texts = ", or .txt for texts" if reads_text(model) else ""
        raise OnnxkitError(f"{path}: unknown input format; use one of {', '.join(INPUT_SUFFIXES)}, .parquet, an image "
                           f"or a folder of images{texts}")
    if not path.is_file():
        raise OnnxkitError(f"{path}: {not_a_file(path)}")
    values = _unit_axes_moved(_read(path, suffix, model), model)
    empty = [name for name, value in values.items() if _no_rows(value)]
    if empty:
        raise OnnxkitError(f"{path}: input {empty[0]!r} has no rows; give at least one example")
    return values


def _unit_axes_moved(values: dict[str, Any], model: Model) -> dict[str, Any]:
    """A file's arrays reshaped to their inputs' fixed per-example dims where they differ only in size-1 axes, as
    train reads them (`unit_axes_moved`; it said 'needs 2 dimension(s) [batch, 1], got shape (200,); for one
    example pass x[None] or [x]'); an input of no per-example dims takes its array as it is."""
    for spec in model.inputs:
        value = values.get(spec.name)
        if value is None or not (spec.shape and spec.shape[1:]):
            continue
        try:
            array = np.asarray(value) if isinstance(value, list) else value
        except ValueError:  # ragged lists: `Model.prepare` says so
            continue
        if isinstance(array, np.ndarray) and array.dtype.kind != "O":
            moved = unit_axes_moved(array, spec)
            if moved is not array:
                values[spec.name] = moved
    return values


def image_rows(path: InputPath) -> list[str] | None:
    """The images of a folder, each a row, by their paths below it (sorted); an image file's name (its one row);
    image files given one by one, by their paths as given; None for other input files. A folder holding no image, or
    images beside other files, is an error. A name's bytes that are not UTF-8 are written \\xe9
    (`images.shown_name`), which a .csv or .json of the rows can hold."""
    paths = _image_paths(path)
    if paths is None:
        return None
    from onnxkit.data.images import shown_name

    if not isinstance(path, (str, os.PathLike)):
        return [shown_name(str(p)) for p in paths]
    folder = Path(path) if Path(path).is_dir() else Path(path).parent  # a list's absolute paths: as listed
    return [shown_name(str(p.relative_to(folder) if p.is_relative_to(folder) else p)) for p in paths]


def holds_images(path: str | os.PathLike) -> bool:
    """Whether `path` is an image, or a folder of images with no other input file (.npy, .csv, ...) below it."""
    path = Path(path)
    if not path.is_dir():
        return path.suffix.lower() in IMAGE_SUFFIXES
    files = [p for p in path.rglob("*") if p.is_file()]
    return any(p.suffix.lower() in IMAGE_SUFFIXES for p in files) and not any(
        p.suffix.lower() in (*INPUT_SUFFIXES, ".parquet", ".txt") for p in files)


def _image_paths(path: InputPath) -> list[Path] | None:
    """The images `image_rows` names: a folder's (sorted), the image file itself, or the image files given; None for
    another input file."""
    if not isinstance(path, (str, os.PathLike)):
        return [_image_file(Path(p), several=True) for p in path]
    path = Path(path)
    if path.suffix.lower() in (".csv", ".tsv") and _names_an_image(path):
        return _listed_images(path)
    if not path.is_dir():
        return [_image_file(path)] if path.suffix.lower() in IMAGE_SUFFIXES else None
    from onnxkit.data.images import image_files, no_images

    images = image_files(path)
    if not images:  # was 'unknown input format'
        raise OnnxkitError(f"{no_images(path)}: a folder, where one input file goes; give a file or a folder of "
                           "images, or run over a folder's files with --ray (Ray Data)")
    return images


def _names_an_image(path: Path) -> bool:
    """Whether a cell of a CSV's first two lines names an image file (a list of images: `_listed_images`), read
    from its first lines alone."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = [f.readline(1 << 16) for _ in range(2)]
    except OSError:
        return False  # said as the file is read
    return any(cell.strip().strip('"').lower().endswith(IMAGE_SUFFIXES)
               for line in lines for cell in re.split(r"[,;\t|]", line))


def _listed_images(path: Path) -> list[Path] | None:
    """The image files a CSV lists in a column (every row's cell names one, from the CSV's folder or absolute, as
    train reads such a list: `images.read_listed_images`), or None when no column does."""
    from onnxkit.data.images import image_column, listed_files

    numbered = read_csv_rows(path)
    rows = [row for _, row in numbered]
    header = csv_header(rows[0], rows[1] if len(rows) > 1 else ()) if rows else None
    body, lines = (rows[1:], [n for n, _ in numbered[1:]]) if header else (rows, [n for n, _ in numbered])
    column = image_column(path, header, body, label_column(header, str(path)), lines) if body else None
    return None if column is None else listed_files(path, column, body)


def _image_file(path: Path, several: bool = False) -> Path:
    """`path`, an image file that exists; `several`: one of several inputs, which are image files only."""
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise OnnxkitError(f"{path}: not an image ({' '.join(IMAGE_SUFFIXES)}); several inputs are image files "
                           "only (a shell glob of them): give one input file, or a folder of images")
    if not path.is_file():
        raise OnnxkitError(f"{path}: {not_a_file(path)}")
    return path


def checked_feeds(path: InputPath, model: Model, values: dict[str, Any]) -> dict[str, np.ndarray]:
    """`values` read from `path` as the model's feeds (`Model.prepare`), refusing NaN and infinity in
    float inputs, whose rows would get NaN scores and a made-up class (argmax of NaN is class 0), and
    values past the range of the input's type (1e6 for float16), which the cast turns into infinity."""
    with np.errstate(over="ignore"):  # a cast past the type's range: refused below, in one line
        feeds = model.prepare(values)
    imputed = imputed_inputs(model.metadata)  # NaN the model fills itself: a missing value, passed on
    for name, feed in feeds.items():
        if feed.dtype.kind != "f" or np.isfinite(feed[~np.isnan(feed)] if name in imputed else feed).all():
            continue
        given = np.asarray(values[name])
        if given.dtype.kind in "fiub" and np.isfinite(given).all():
            limit = np.finfo(feed.dtype).max
            raise OnnxkitError(f"{path}: input {name!r} holds values beyond {feed.dtype}'s range (largest "
                               f"{limit:.6g}), up to {np.abs(given).max():.6g}; scale them as the model expects")
        bad = np.isinf(feed) if name in imputed else ~np.isfinite(feed)
        nan = 0 if name in imputed else int(np.isnan(feed).sum())
        inf = int(bad.sum()) - nan
        rows = int(bad.reshape(len(feed), -1).any(axis=1).sum()) if feed.ndim else 1
        what = " and ".join(f"{n} {kind}" for n, kind in ((nan, "NaN"), (inf, "infinite")) if n)
        raise OnnxkitError(f"{path}: input {name!r} holds {what} value{'s' if nan + inf > 1 else ''} in {rows} of "
                           f"{len(feed) if feed.ndim else 1} rows; fill or drop those rows")
    return feeds


def _read(path: Path, suffix: str, model: Model) -> dict[str, Any]:
    try:
        if suffix == ".npy":
            return _single(model, path, npy_array(path))
        if suffix == ".npz":
            arrays = _without_labels(npz_arrays(path), model)
            inputs = [spec.name for spec in model.inputs]
            _refuse_splits(path, arrays, inputs)
            if all(name in arrays for name in inputs):  # others beside them (row ids) are left out, as train does
                arrays = {name: arrays[name] for name in inputs}
            if len(arrays) == 1 and len(model.inputs) == 1:
                return _single(model, path, next(iter(arrays.values())))
            return arrays
        if suffix == ".json":
            data = json.loads(read_text_file(path))
            if isinstance(data, list) and any(isinstance(row, dict) for row in data):
                raise OnnxkitError(f"{path}: a list of objects (a row each, as pandas' to_json(orient='records') "
                                   "writes); predict reads a list of numbers per example, or an object of such lists "
                                   "by input name: save the table as .csv (df.to_csv(path, index=False)), which is "
                                   "read by its column names")
            return data if isinstance(data, dict) else _single(model, path, data)
        return _csv_inputs(path, model) or _single(model, path, _read_csv(path, model))
    except RecursionError:
        raise OnnxkitError(f"{path}: nested too deeply to read; give one list of numbers per example") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, UnicodeDecodeError, csv.Error) as e:
        raise OnnxkitError(f"{path}: cannot read it as {suffix} ({e}); check the file") from e


def holds_texts(path: str | os.PathLike) -> bool:
    """Whether an input file is texts: a .txt, or a .csv whose header has a 'text' column, or one or two columns
    (`texts_column`). A first line that is not UTF-8 is the error reading the file gives (a UTF-16 CSV was 'no
    column is headed text')."""
    path = Path(path)
    if path.suffix.lower() == ".txt":
        return True
    if path.suffix.lower() not in TABLE_SUFFIXES or not path.is_file():
        return False
    with path.open("rb") as f:
        first, second = f.readline(), f.readline()
    try:
        line = first.decode("utf-8-sig")
        delimiter = table_delimiter(path, line)
        if sep_line(line):  # Excel's 'sep=;': the header is below it
            line = second.decode("utf-8")
    except UnicodeDecodeError:
        read_text_file(path)  # raises, naming the byte, its line and UTF-16
        raise
    header = next(csv.reader([line], delimiter=delimiter), [])
    if header and header[0].strip() in PANDAS_INDEX_HEADERS:  # pandas' index column (read_texts checks its cells)
        header = header[1:]
    if texts_column(header, source=str(path)) is not None:
        return True
    if len(header) < 3 or label_column(header, str(path)) is None:
        return False
    return _texts_table(path)[2] is not None  # id,review,label: the column of words beside the labels, if one


def _texts_table(path: Path) -> tuple[list[tuple[int, list[str]]], Sequence[str] | None, int | None]:
    """A CSV's numbered rows as written (no decimal commas read as points in a text), its header less pandas'
    index (as train reads it), and the column of its texts (`texts_column`) or None."""
    _, rows = csv_rows(path)
    header, body = without_index(rows[0][1] if rows else None, [row for _, row in rows[1:]])
    numbered = [(line, row) for (line, _), row in zip(rows[1:], body, strict=True)]
    return numbered, header, texts_column(header, body, source=str(path))


def read_texts(path: Path) -> list[str]:
    """The texts in a .txt file (one per line, a blank one an empty text, so that row N is line N + 1; blank lines
    at the end left out) or in the texts column of a .csv with a header (`texts_column`; one text may fill the
    file). Lines end at '\n' alone (with any '\r' before it): str.splitlines also broke them at form feeds, U+2028
    and U+0085 inside a text, and blank lines were dropped, shifting the rows after them."""
    if path.suffix.lower() == ".txt":
        lines = [line.removesuffix("\r") for line in read_text_file(path).split("\n")]
        while lines and not lines[-1].strip():
            lines.pop()
        return lines
    if path.suffix.lower() not in TABLE_SUFFIXES:
        raise OnnxkitError(f"{path}: texts come as .txt (one per line) or a 'text' column of .csv / .tsv / .parquet")
    rows, header, column = _texts_table(path)
    if column is None:
        raise OnnxkitError(f"{path}: a CSV of texts needs a header with a 'text' column (or just one or two columns)")
    texts = []
    for line, row in rows:
        if len(row) <= column:
            raise OnnxkitError(f"{path}:{line}: this row ends before its {header[column].strip()!r} column")
        texts.append(row[column])
    return texts


def check_output_path(path: str | os.PathLike) -> None:
    """Fail early, before any work, on an output file format we cannot write."""
    if Path(path).suffix.lower() not in OUTPUT_SUFFIXES:
        raise OnnxkitError(f"{path}: unknown output format; use one of {', '.join(OUTPUT_SUFFIXES)}")


def write_prediction(path: str | os.PathLike, prediction: Prediction, top_k: int | None = None,
                     names: Sequence[str] | None = None, ids: Mapping[str, Sequence[str]] | None = None,
                     labels_only: bool = False) -> None:
    """Save a prediction; the format follows the file's suffix. `names`: what each row is (the files of a folder of
    images), saved beside the outputs (not in an .npy, which holds the scores alone). `ids`: the input's row-id
    columns (`row_ids`), which a .csv repeats first. `labels_only`: a .csv of the ids and each row's answer alone
    (a Kaggle submission's columns: PassengerId,Survived)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".json":
        result = {**({"files": list(names)} if names else {}), **prediction.to_dict(top_k)}
        try:
            text = json.dumps(result, allow_nan=False)
        except ValueError:  # NaN or an infinity: strings, as serve writes them (a bare NaN is no JSON)
            text = json.dumps(_finite(result))
        write_text(path, text + "\n")
    elif suffix in (".npy", ".npz"):
        buffer = io.BytesIO()
        if suffix == ".npy":
            np.save(buffer, prediction.scores)
        else:
            arrays = dict(prediction.outputs)
            if prediction.labels is not None:
                arrays.setdefault("labels", np.asarray(prediction.labels))
            if names:
                arrays.setdefault("files", np.asarray(names))
            if top_k:  # as the .json and .csv hold them: [rows, k] class names (else ids) and their scores
                best, scores = prediction.top_k_indices(top_k)
                classes = prediction.class_names
                arrays.setdefault("top_k_labels", np.asarray(classes)[best] if classes else best)
                arrays.setdefault("top_k_scores", scores)
            np.savez(buffer, **arrays)
        write_bytes(path, buffer.getvalue())
    else:
        check_output_path(path)
        write_text(path, _csv_text(prediction, top_k, names, ids, labels_only))


def row_ids(path: InputPath | None) -> dict[str, list[str]]:
    """A CSV input's columns headed as row ids (`is_row_id`: an Id, Kaggle's PassengerId), by header, their cells as
    written, which a CSV of predictions repeats before its outputs so that each row says whose it is (a Kaggle
    submission's Id,SalePrice); {} for other inputs. The whole file is read only where its header names one."""
    if not isinstance(path, str | os.PathLike) or Path(path).suffix.lower() not in TABLE_SUFFIXES or \
            not Path(path).is_file():
        return {}
    with Path(path).open(encoding="utf-8-sig", newline="") as f:
        first, second = f.readline(), f.readline()
    line = second if sep_line(first) else first
    if not any(may_be_row_id(c) for c in next(csv.reader([line], delimiter=table_delimiter(path, first)), [])):
        return {}
    rows = [row for _, row in read_csv_rows(path)]
    header = csv_header(rows[0], rows[1] if len(rows) > 1 else ())
    if not header:
        return {}
    header, body = without_index(header, rows[1:])
    columns = {h.strip(): [row[j] for row in body] for j, h in enumerate(header)}
    return {h: cells for h, cells in columns.items() if is_row_id(h, cells)}


def _finite(value: Any) -> Any:
    """`value` (nested dicts and lists) with each non-finite float as the string "NaN", "Infinity" or "-Infinity"."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if value != value else "Infinity" if value > 0 else "-Infinity"
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


def format_prediction(prediction: Prediction, top_k: int | None = None, max_rows: int = 20,
                      names: Sequence[str] | None = None) -> str:
    """A short table for a terminal: the best class (or top k) per row, else the outputs; each row named by its
    number, or by `names` (the files of a folder of images)."""
    rows = len(prediction)
    width = max(4, *(len(name) for name in names[:max_rows])) if names else 4
    head = f"{'file' if names else 'row':<{width}} "

    def row(i: int) -> str:
        return f"{names[i] if names else i:<{width}} "

    classes = top_k or _one_class_a_row(prediction)
    lines = []
    if classes and not top_k and prediction.class_ids() is not None:  # a model that answers class ids alone
        labels = prediction.labels or prediction.classes.tolist()
        lines.append(f"{head}label")
        lines += [f"{row(i)}{labels[i]}" for i in range(min(rows, max_rows))]
    elif classes and not top_k and prediction.one_logit:
        # a binary model's one logit z is read as the scores [0, z]: every negative row would show "(0)"
        labels, logits = prediction.labels or prediction.classes.tolist(), np.asarray(prediction.scores).reshape(-1)
        lines.append(f"{head}label (logit)")
        lines += [f"{row(i)}{labels[i]} ({logits[i]:.4g})" for i in range(min(rows, max_rows))]
    elif classes:
        best = prediction.top_k(top_k or 1)
        shown = min(top_k, len(best[0])) if top_k and len(best) else top_k  # k past the classes: all of them
        kind = "probability" if prediction.given_probabilities or prediction.reads_as_probabilities() else "logit"
        lines.append(f"{head}{'top-' + str(shown) + ' labels' if top_k else 'label'} ({kind})")
        for i, pairs in enumerate(best[:max_rows]):
            lines.append(row(i) + "  ".join(f"{label} ({score:.4g})" for label, score in pairs))
    else:  # the outputs of a value a row in the table; the others (a scalar, a batch statistic) each on a line
        by_row = {k: v for k, v in prediction.outputs.items() if _rows(v) == rows}
        lines += [f"{k}: {_short(v)}" for k, v in prediction.outputs.items() if k not in by_row]
        if by_row:
            lines.append(head + "  ".join(by_row))
            lines += [row(i) + "  ".join(_short(v[i]) for v in by_row.values()) for i in range(min(rows, max_rows))]
    if rows > max_rows:
        lines.append(f"... {rows - max_rows} more rows; save them all with --output FILE")
    return "\n".join(lines)


def _one_class_a_row(prediction: Prediction) -> bool:
    """Whether the prediction is one class a row: a classifier's (not a class per label or position)."""
    per_row = prediction.multi_label or np.ndim(prediction.scores) > 2
    return not per_row and (prediction.class_names is not None or prediction.task in ("classification", "binary"))


def _gives_its_labels(prediction: Prediction) -> bool:
    """Whether an output holds each row's class (ids or names, [rows]): the scores' own, or scikit-learn's label."""
    return prediction.class_ids() is not None or bool(_label_outputs(prediction))


def _label_outputs(prediction: Prediction) -> list[str]:
    """The outputs besides the scores that hold a class (id or name) a row: scikit-learn's label."""
    return [name for name, v in prediction.outputs.items() if name != prediction.scores_name
            and isinstance(v, np.ndarray) and v.ndim == 1 and v.dtype.kind in "iuUO" and len(v) == len(prediction)]


def _rows(value: Any) -> int | None:
    """An output's rows (None for a scalar)."""
    return len(value) if isinstance(value, list) or np.ndim(value) else None


def _no_rows(value: Any) -> bool:
    if isinstance(value, np.ndarray):
        return value.ndim >= 1 and value.shape[0] == 0
    return isinstance(value, list) and not value


def _single(model: Model, path: Path, value: Any) -> dict[str, Any]:
    if len(model.inputs) != 1:
        names = ", ".join(spec.name for spec in model.inputs)
        raise OnnxkitError(
            f"{path}: holds one array but model {model.name!r} has inputs {names}; "
            "use .npz or a .json object with one entry per input"
        )
    return {model.inputs[0].name: value}


def _refuse_splits(path: Path, arrays: dict[str, np.ndarray], inputs: list[str]) -> None:
    """One line for an .npz of a training set's own splits (x_train, y_train, x_test, ...: `formats.given_splits`)
    named as none of the model's inputs: which rows to predict is the user's to say."""
    split = [k for k in arrays if k not in inputs and npz_split(k)]
    if split and not any(name in arrays for name in inputs):
        raise OnnxkitError(f"{path}: holds a dataset's splits ({first_few(split)}), not one set of model inputs; "
                           "save the rows to predict alone (np.save('x_test.npy', x_test)), or score the test split "
                           f"with: onnxkit eval MODEL --data {path}")


def _without_labels(arrays: dict[str, np.ndarray], model: Model) -> dict[str, np.ndarray]:
    """An .npz file's arrays less those train reads as labels and class names (unless inputs of the model)."""
    inputs = {spec.name for spec in model.inputs}
    return {k: v for k, v in arrays.items() if k in inputs or k not in (npz_labels(arrays), NPZ_LABEL_NAMES)}


def _csv_inputs(path: Path, model: Model) -> dict[str, np.ndarray] | None:
    """A CSV's columns headed by the model's input names, as those inputs (`input_columns`); None for another
    CSV (or a model that carries a tokenizer: its texts are read from the 'text' column). A model that does not read
    a CSV by column returns at once: the file is then read once, by `_read_csv`."""
    if carries_tokenizer(model) or not reads_by_column(model.inputs):
        return None
    numbered = read_csv_rows(path)
    rows = [row for _, row in numbered]
    header = csv_header(rows[0], rows[1] if len(rows) > 1 else ()) if rows else None
    if not header:
        return None
    lines, body = [n for n, _ in numbered[1:]], rows[1:]
    header, body = without_index(header, body)
    columns = input_columns(path, header, model.inputs, label_column(header, str(path)))
    if columns is None:
        return None
    short = next((i for i, row in enumerate(body) if len(row) != len(header)), None)
    if short is not None:
        raise OnnxkitError(f"{path}:{lines[short]}: {len(body[short])} columns where the header has {len(header)}")
    return input_arrays(path, body, columns, model.inputs, header, lines)


def _read_csv(path: Path, model: Model) -> np.ndarray:
    if carries_tokenizer(model):  # its texts were read from a 'text' column: this CSV has none
        raise OnnxkitError(f"{path}: the model reads text, but no column is headed {TEXT_COLUMN!r}; head the column "
                           f"of texts {TEXT_COLUMN!r} in the first row (e.g. {TEXT_COLUMN},label), or give a .txt "
                           "(one text per line)")
    if len(model.inputs) != 1:
        raise OnnxkitError(
            f"{path}: CSV holds one input but model {model.name!r} has {len(model.inputs)}; use .npz or .json"
        )
    spec = model.inputs[0]
    trained, recorded = trained_columns(model.metadata), label_header(model.metadata)
    plain = _plain_table(path, spec.dtype or np.float32, trained, recorded)
    if plain is not None:
        table, names = plain
        order = in_trained_order(names, trained, str(path))
        return _shaped(path, table if order is None else table[:, order], spec)
    numbered = read_csv_rows(path)
    lines, rows = [n for n, _ in numbered], [row for _, row in numbered]
    header = csv_header(rows[0], rows[1] if len(rows) > 1 else ()) if rows else None
    if header:
        lines, rows = lines[1:], rows[1:]
    width = len(header or (rows[0] if rows else ()))
    header, rows = without_index(header, rows)
    kept = len(header or (rows[0] if rows else ()))
    columns = list(range(width - kept + 1, width + 1))  # each column's number in the file (past pandas' index)
    if not rows:
        raise OnnxkitError(f"{path}: no data rows")
    odd = next((i for i, row in enumerate(rows) if len(row) != len(rows[0])), None)
    if odd is not None:
        count = len(rows[odd])
        raise OnnxkitError(f"{path}:{lines[odd]}: {count} value{'s' * (count != 1)} where the rows before have "
                           f"{len(rows[0])}; fix the file")
    label = features_label_column(header, trained, str(path), recorded)
    if encodes_categories(trained, feature_names(header, label)) or spec.name in imputed_inputs(model.metadata):
        return _shaped(path, _encoded(path, rows, header, label, trained, lines), spec)
    order = in_trained_order(feature_names(header, label), trained, str(path))
    if label is not None:  # as train reads the file: that column is the label, not a feature
        rows = [row[:label] + row[label + 1:] for row in rows]
        header = header[:label] + header[label + 1:]
        del columns[label]
    if order is not None:  # in the order the model trained on them
        rows, header = [[row[i] for i in order] for row in rows], [header[i] for i in order]
        columns = [columns[i] for i in order]
    return _shaped(path, _numbers(path, rows, header, spec.dtype or np.float32, columns, lines), spec)


def _encoded(path: Path, rows: list[list[str]], header: Sequence[str] | None, label: int | None,
             trained: Sequence[str] | None, lines: Sequence[int]) -> np.ndarray:
    """A CSV's features as the model trained on them, by their names (`categories.encode`): its category columns
    as 0/1 columns, a missing number as NaN (which the model fills); rows holding a category it never trained on
    are said in a warning."""
    features = [row[:label] + row[label + 1:] if label is not None else row for row in rows]
    names = feature_names(header, label) or [str(j) for j in range(len(features[0]))]
    cells = by_column(str(path), names, features)
    return encode(cells, trained or names, str(path), lines).warn_unseen(str(path))


def _plain_table(path: Path, dtype: Any, trained: Sequence[str] | None = None,
                 recorded: str | None = None) -> tuple[np.ndarray, list[str] | None] | None:
    """A CSV of plain numbers for a float input, as float64, less its label column (`features_label_column`: the one
    headed `recorded` or as the labels, unless the model trained on it, `trained`; and the feature
    columns' names, `feature_names`): read by
    numpy's parser a block at a time (the cells as a list of strings took ~17x the file's size). None for
    any other file, which `_read_csv` then reads cell by cell, naming what is wrong: no rows, rows of other
    lengths, a cell that is not a number, ';' (decimal commas), a pandas index, a blank first line."""
    if np.dtype(dtype).kind != "f":
        return None
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            first, second = f.readline(), f.readline()
    except (OSError, ValueError):
        return None
    csv.field_size_limit(max(csv.field_size_limit(), len(first), len(second)))  # one cell may fill the line
    delimiter = table_delimiter(path, first)
    cells, below = (next(csv.reader([line], delimiter=delimiter), []) for line in (first, second))
    header = csv_header(cells, below) if cells else None
    if delimiter == ";" or sep_line(first) or not cells or header and header[0].strip() in ("", "Unnamed: 0"):
        return None
    label = features_label_column(header, trained, str(path), recorded)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # numpy's "input contained no data"
            table = np.loadtxt(path, np.float64, comments=None, delimiter=delimiter, skiprows=1 if header else 0,
                               ndmin=2, encoding="utf-8-sig", quotechar='"',
                               converters=None if label is None else {label: _not_read})
    except (ValueError, OSError, UserWarning):
        return None
    if header and len(header) != table.shape[1]:
        return None
    return (table if label is None else np.delete(table, label, axis=1)), feature_names(header, label)


def _not_read(cell: str) -> float:
    """A label cell's stand-in: the labels are not the model's input."""
    return 0.0


_FLAGS = {"0": False, "1": True, "false": False, "true": True, "0.0": False, "1.0": True}


def _flags(path: Path, rows: list[list[str]], column: Callable[[int], str], lines: Sequence[int]) -> np.ndarray:
    """The CSV's cells as booleans: 0 / 1 or false / true (pandas writes False / True)."""
    try:
        return np.array([[_FLAGS[cell.strip().lower()] for cell in row] for row in rows], np.bool_)
    except KeyError:
        i, j, cell = next((i, j, c) for i, row in enumerate(rows) for j, c in enumerate(row)
                          if c.strip().lower() not in _FLAGS)
        raise OnnxkitError(f"{path}:{lines[i]}: {column(j)} holds {cell.strip()!r}; a bool input takes 0 or 1 "
                           "(or false / true)") from None


def _shaped(path: Path, table: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """`table`'s rows as examples of the input's fixed shape; rows of another length are an error."""
    example = spec.shape[1:]
    if not example or not all(isinstance(d, int) for d in example):
        return table
    width = int(np.prod(example))
    if table.shape[1] != width:
        label = table.shape[1] == width + 1
        hint = "; if the last column is the label, remove it or head it 'label'" if label else ""
        raise OnnxkitError(f"{path}: rows have {table.shape[1]} values but input {spec.describe()} needs "
                           f"{width} per example{hint}")
    return table.reshape(len(table), *example)


def _numbers(path: Path, rows: list[list[str]], header: Sequence[str] | None, dtype: Any,
             columns: Sequence[int], lines: Sequence[int]) -> np.ndarray:
    """The CSV's cells as an array of `dtype`; a cell that is not a number is an error naming its line (`lines`:
    each row's in the file) and its column by its number in the file (`columns`: each one's)."""

    def column(j: int) -> str:
        return f"column {columns[j] if j < len(columns) else j + 1}" + (f" ({header[j]!r})" if header else "")

    if np.dtype(dtype) == np.bool_:  # numpy reads any text but '' as True ('0' too)
        return _flags(path, rows, column, lines)
    rows = flags_as_numbers(rows)  # pandas' True / False columns, as training reads them
    try:  # floats as float64: a value past the input's float type is refused by `checked_feeds`, by name
        return np.array(rows).astype(np.float64 if np.dtype(dtype).kind == "f" else dtype)
    except OverflowError as e:  # a whole number past the input's integer type
        limits = np.iinfo(dtype)
        i, j, cell = next((i, j, cell) for i, row in enumerate(rows) for j, cell in enumerate(row)
                          if cell.strip().lstrip("+-").isdigit() and not limits.min <= int(cell) <= limits.max)
        raise OnnxkitError(f"{path}:{lines[i]}: {column(j)} holds {cell.strip()}, which {np.dtype(dtype)} "
                           f"cannot hold ([{limits.min}, {limits.max}])") from e
    except ValueError as e:
        text = next(((i, j, cell) for i, row in enumerate(rows) for j, cell in enumerate(row)
                     if not is_number(cell)), None)
        if text is None:
            raise OnnxkitError(f"{path}: not all values are {np.dtype(dtype)} numbers ({e})") from e
        i, j, cell = text
        where = f"{path}:{lines[i]}: {column(j)}"
        if is_missing(cell):
            there = "is empty" if not cell.strip() else f"holds {cell.strip()!r}"
            raise OnnxkitError(f"{where} {there}, a missing value; fill or drop those rows") from e
        if thousands_separated(cell):
            raise OnnxkitError(f"{where} {thousands_separated(cell)}") from e
        raise OnnxkitError(f"{where} holds text ({cell!r}); predict reads numbers only: remove that "
                           f"column, or if it holds the labels head it {' / '.join(LABEL_COLUMNS)}") from e


def _csv_text(prediction: Prediction, top_k: int | None, names: Sequence[str] | None = None,
              ids: Mapping[str, Sequence[str]] | None = None, labels_only: bool = False) -> str:
    """The prediction as a table, a row per example: the input's row ids (`ids`), its file (`names`), the class
    (headed as the labels the model trained on, else 'label'), then each output (a regression's value headed as its
    target), and the top-k; with `labels_only`, of the outputs only those that are the answer (`_answers`)."""
    rows = {name: np.shape(value)[0] if np.ndim(value) else None for name, value in prediction.outputs.items()}
    if len(set(rows.values())) > 1 or None in rows.values():  # a sequence output, a Scan's per-step one, a scalar
        shown = ", ".join(f"{name!r} " + ("is a scalar" if n is None else f"has {n} row{'s' * (n != 1)}")
                          for name, n in rows.items())
        raise OnnxkitError(f"a CSV holds one row per example, but the outputs differ in rows ({shown}); save the "
                           "prediction as .json or .npz")
    given = {header: cells for header, cells in (ids or {}).items() if len(cells) == len(prediction)}  # a row each
    columns: list[str] = list(given)
    blocks: list[np.ndarray] = [np.asarray(cells, dtype=object)[:, None] for cells in given.values()]
    if names:
        columns.append("file")
        blocks.append(np.asarray(names, dtype=object)[:, None])
    labelled = _one_class_a_row(prediction) and not _gives_its_labels(prediction)
    if labelled:
        columns.append(prediction.target or "label")  # the class name, or id where the model names none
        blocks.append(np.asarray(prediction.labels or prediction.classes.tolist(), dtype=object)[:, None])
    kept = [] if labelled else _answers(prediction)
    if labels_only and not labelled and not kept:
        raise OnnxkitError("--labels-only: this model's outputs hold no single answer a row (a class or a value); "
                           "leave it out to save every output")
    for name, value in prediction.outputs.items():
        if labels_only and name not in kept:
            continue
        flat = np.asarray(value).reshape(len(value), -1)
        names = prediction.class_names
        scores = name == prediction.scores_name
        if scores and names and flat.shape[1] == len(names):
            columns += list(names)
        elif scores and prediction.target and prediction.task == "regression" and flat.shape[1] == 1:
            columns.append(prediction.target)
        else:
            columns += [f"{name}_{j}" for j in range(flat.shape[1])]
        blocks.append(flat.astype(object))
    if top_k and not labels_only:
        best = prediction.top_k(top_k)
        k = len(best[0]) if best else 0
        for j in range(k):
            columns += [f"top{j + 1}", f"top{j + 1}_score"]
        blocks.append(np.array([[x for pair in row for x in pair] for row in best], dtype=object))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(np.concatenate(blocks, axis=1).tolist())
    return out.getvalue()


def _answers(prediction: Prediction) -> list[str]:
    """The outputs that are each row's answer where the prediction makes no label column of its own: a regression's
    single value, a classifier's class ids, scikit-learn's label output."""
    single = prediction.task == "regression" and np.shape(prediction.scores)[1:] in ((), (1,))
    own = single or prediction.class_ids() is not None
    labels = _label_outputs(prediction)
    return [name for name in prediction.outputs if name == prediction.scores_name and own or name in labels]


def _short(value: Any) -> str:
    """A value for the table: a number, or the first six of a list of them."""
    flat = np.asarray(value).reshape(-1)
    shown = ", ".join(f"{x:.4g}" if isinstance(x, float) else str(x) for x in flat[:6].tolist())
    return shown if np.ndim(value) == 0 else f"[{shown}{', ...' if flat.size > 6 else ''}]"
