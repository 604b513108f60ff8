"""Where a data file keeps its labels (and a CSV its texts): the rules train's reader (`onnxkit.data.formats`) follows,
shared with predict's (`onnxkit.runtime.datafiles`), which leaves out what train reads as labels.

Standard library only, so the runtime can import it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import PurePath

from onnxkit.errors import OnnxkitError, first_few
from onnxkit.files import IMAGE_SUFFIXES, is_missing, is_number
from onnxkit.metadata_keys import COLUMNS_KEY, IMPUTED_KEY, TRAINING_KEY

LABEL_COLUMNS = ("label", "labels", "target", "y", "class")  # CSV headers of a label column (only one may be)
NPZ_LABELS = ("labels", "y", "label", "target")  # .npz arrays read as the labels, first found wins ("label", "target":
# as a CSV's; "target" beside "data": a scikit-learn Bunch saved as np.savez(f, data=..., target=...))
NPZ_LABEL_NAMES = "label_names"  # an optional .npz array of class names
TEXT_COLUMN = "text"  # a CSV column of texts (a Parquet one, by its exact name), for a model with a tokenizer
# .npz arrays of a file that holds its own splits (Keras' x_train, y_train, x_test, y_test), and their split's name
_NPZ_SPLIT = re.compile(r"^(.+)_(train|validation|val|valid|dev|test)$", re.IGNORECASE)
_SPLITS = {"val": "validation", "valid": "validation", "dev": "validation"}


def npz_split(name: str) -> tuple[str, str] | None:
    """(array, split) for an .npz array named as one split's (`x_train`: x, train; `y_val`: y, validation), else
    None."""
    m = _NPZ_SPLIT.match(name)
    if m is None:
        return None
    split = m.group(2).lower()
    return m.group(1), _SPLITS.get(split, split)


def csv_header(first_row: Sequence[str], second_row: Sequence[str] = ()) -> Sequence[str] | None:
    """`first_row` when it is a header: some cell but the last (which may hold a text label), or
    its only cell, is neither a number nor a missing value (NA, ?: a data row's gap), and none is a
    number with a fraction (5.1: a data row with a typo, '0.3x', not a header); or it numbers its columns
    0, 1, ... as pandas' to_csv heads an array's, after the index's empty cell (index=True) and beside a
    label column it was given a name (a data row of numbers whose class is named 'y' or 'class' is data; with
    neither an index nor a label, 5 columns or more, or fewer above a `second_row` holding a fraction: iris'
    0,1,2,3 above 5.1,3.5,1.4,0.2; a row reading 0,1,2 above whole numbers is data). A row naming an image file is
    data: the first of a list of images with no header (pics/00.jpg,bright was read as one, its image left out)."""
    if any(PurePath(c.strip()).suffix.lower() in IMAGE_SUFFIXES for c in first_row):
        return None
    cells = first_row[:-1] if len(first_row) > 1 else first_row
    if not all(is_number(c) or is_missing(c) for c in cells):
        return None if _holds_fraction(first_row) else first_row
    if not _holds_fraction(first_row) and _names_above_labels(first_row, second_row):
        return first_row
    label = label_column(first_row)
    numbered = [c.strip() for i, c in enumerate(first_row) if i != label]
    indexed = bool(numbered) and numbered[0] == ""  # pandas' index column
    numbered = numbered[indexed:]
    enough = 1 if indexed or label is not None else 2 if _holds_fraction(second_row) else 5
    return first_row if len(numbered) >= enough and numbered == [str(i) for i in range(len(numbered))] else None


def _names_above_labels(first_row: Sequence[str], second_row: Sequence[str]) -> bool:
    """Whether a first row of whole numbers (wavelengths, years) heads its columns by what it says of the labels:
    it heads one 'label', 'labels' or 'target' (no class is so named) above another value, or its last cell is a
    name above a number (400,450,label and 2019,2020,price above data were read as data rows)."""
    if len(first_row) < 2 or len(second_row) != len(first_row):
        return False
    label = label_column(first_row)
    if label is not None and first_row[label].strip().lower() in LABEL_COLUMNS[:3]:
        return second_row[label].strip().lower() != first_row[label].strip().lower()
    last = first_row[-1]
    return not (is_number(last) or is_missing(last)) and is_number(second_row[-1])


def _holds_fraction(row: Sequence[str]) -> bool:
    """Whether a cell of `row` is a number that is not a whole one (5.1, 1e3, nan): data, never a column's name."""
    return any(is_number(c) and not c.strip().lstrip("+-").isdigit() for c in row)


PANDAS_INDEX_HEADERS = ("", "Unnamed: 0")
"""How pandas' `to_csv` heads the row index it writes unless told `index=False` (or reads back and writes again)."""


def without_index(header: Sequence[str] | None, rows: list[list[str]]) -> tuple[Sequence[str] | None, list[list[str]]]:
    """The header and rows less a first column that is the row index pandas' `to_csv` writes unless told
    `index=False`: headed '' (or 'Unnamed: 0', as read back and saved again), distinct whole numbers or distinct
    names (R's datasets name their rows: mtcars' 'Mazda RX4' was refused as a text feature)."""
    if not header or header[0].strip() not in PANDAS_INDEX_HEADERS or not rows:
        return header, rows
    index = [row[0].strip() for row in rows if row]
    numbered = all(i.isdigit() for i in index)
    named = all(i and not is_number(i) for i in index)
    if not (numbered or named) or len(set(index)) < len(index):
        return header, rows
    return header[1:], [row[1:] for row in rows]


def label_column(header: Sequence[str] | None, source: str = "the file") -> int | None:
    """The index of the column headed `label`, `labels`, `target`, `y` or `class` (any case), or None; two
    such columns are an error that begins with `source` (one would be read as a feature: a copy of the
    labels under another name trained a model to 100%, on every file but the user's). A `y` beside an `x` is a
    coordinate, not the labels (x, y, elevation, temperature: a model learnt y from the rest)."""
    lowered = [h.strip().lower() for h in header or ()]
    coordinates = "x" in lowered
    found = [i for i, h in enumerate(lowered) if h in LABEL_COLUMNS and not (h == "y" and coordinates)]
    if len(found) > 1:
        named = ", ".join(f"{header[i].strip()!r} (column {i + 1})" for i in found)  # type: ignore[index]
        raise OnnxkitError(f"{source}: {len(found)} columns are headed as labels: {named}; keep one label column "
                           f"and rename or drop the others")
    return found[0] if found else None


def column_headed(header: Sequence[str], name: str) -> int | None:
    """The index of the column headed `name` (spaces aside; case aside when no header is exactly it), or None."""
    names, wanted = [h.strip() for h in header], name.strip()
    if wanted in names:
        return names.index(wanted)
    lowered = [n.lower() for n in names]
    return lowered.index(wanted.lower()) if wanted.lower() in lowered else None


def features_label_column(header: Sequence[str] | None, trained: Sequence[str] | None,
                          source: str = "the file", recorded: str | None = None) -> int | None:
    """The column of a CSV to leave out as the labels before a model reads its features: the one headed as the
    labels the model trained on (`recorded`, `label_header`), else the one headed as labels (`label_column`), unless
    the model trained on it as a feature (`trained`, its `onnxkit.columns`, by name or as a category's column):
    titanic's `class` beside the labels `survived` is the passenger's class."""
    from onnxkit.categories import category_of

    found = column_headed(header, recorded) if header and recorded is not None else None
    label = label_column(header, source) if found is None else found
    if label is None or not trained:
        return label
    names = [h.strip() for h in header]  # type: ignore[union-attr]
    used = {found[0] if (found := category_of(t, names)) else t for t in trained}
    return None if names[label] in used else label


def text_column(header: Sequence[str] | None) -> int | None:
    """The index of the column headed `text` (any case), or None."""
    lowered = [h.strip().lower() for h in header or ()]
    return lowered.index(TEXT_COLUMN) if TEXT_COLUMN in lowered else None


def texts_column(header: Sequence[str] | None, rows: Sequence[Sequence[str]] = (), label: int | None = None,
                 source: str = "") -> int | None:
    """The column of a CSV that holds the texts, for a model that reads text: the one headed `text`; else a lone
    column; else of two (review,sentiment), the one not holding the labels (`label`, or the one headed as them), or
    the one of longer cells in `rows`; else, beside a label column, the one other column holding words in `rows`
    (id,review,label); else None."""
    found = text_column(header)
    if found is not None or not header:
        return found
    if len(header) > 2:
        return _lone_words_column(header, rows, label_column(header, source) if label is None else label)
    if len(header) == 1:
        return 0
    label = label_column(header, source) if label is None else label
    if label is not None:
        return 1 - label
    lengths = [sum(len(row[j]) for row in rows if len(row) == 2) for j in (0, 1)]
    return int(lengths[1] > lengths[0])


def _lone_words_column(header: Sequence[str], rows: Sequence[Sequence[str]], label: int | None) -> int | None:
    """The one column but the labels' holding a cell that is no number (a review beside its id), or None."""
    if label is None:
        return None
    rows = [row for row in rows if len(row) == len(header)]
    words = [j for j in range(len(header)) if j != label and any(not is_number(row[j]) for row in rows)]
    return words[0] if len(words) == 1 else None


_ID_HEADER = re.compile(r"(?i)(id|idx|index|row)")
_SOME_ID_HEADER = re.compile(r"(?i:.+[_ ]id)|.*[a-z](Id|ID)")


def is_row_id(name: str, cells: Sequence[object]) -> bool:
    """Whether a column is a row id by its header: id, idx, index or row whatever its cells (MASS' biopsy repeats a
    sample's ID); *_id, and *Id / *ID after a small letter (Kaggle's titanic's PassengerId, a CustomerID), only when
    its cells are distinct (a store_id may be a feature)."""
    return may_be_row_id(name) and bool(_ID_HEADER.fullmatch(name.strip()) or len(set(cells)) == len(cells))


def may_be_row_id(name: str) -> bool:
    """Whether a header may head a row id (`is_row_id`, its cells unseen)."""
    return bool(_ID_HEADER.fullmatch(name.strip()) or _SOME_ID_HEADER.fullmatch(name.strip()))


def npz_labels(names: Iterable[str]) -> str | None:
    """The name of the array an .npz file with these arrays keeps its labels in, or None; `NPZ_LABELS` in any case
    where none is spelled so (`Y`, as `X_train, Y_train` are: a file split as Keras' was told it had no labels)."""
    present = list(names)
    return next((n for n in NPZ_LABELS if n in present), None) or \
        next((k for n in NPZ_LABELS for k in present if k.lower() == n), None)


def feature_names(header: Sequence[str] | None, label: int | None) -> list[str] | None:
    """A CSV's feature columns by name (the label column left out); None without names to go by: no header, or
    pandas' numbered 0, 1, ..."""
    names = [h.strip() for j, h in enumerate(header or ()) if j != label]
    return names if names and not all(n.isdigit() for n in names) else None


def trained_columns(metadata: Mapping[str, str]) -> list[str] | None:
    """The CSV feature columns a model trained on, by name, from its metadata (`onnxkit.columns`); None if unsaid."""
    return json.loads(metadata.get(COLUMNS_KEY, "null"))


def label_header(metadata: Mapping[str, str]) -> str | None:
    """The header of the table column a model was trained to predict, from its metadata (`onnxkit.training`'s
    `label`); None if unsaid (no table, or trained elsewhere)."""
    return json.loads(metadata.get(TRAINING_KEY, "{}")).get("label")


def imputed_inputs(metadata: Mapping[str, str]) -> list[str]:
    """The inputs whose missing values (NaN) a model fills itself, from its metadata (`onnxkit.imputed`)."""
    return json.loads(metadata.get(IMPUTED_KEY, "[]"))


def in_trained_order(names: Sequence[str] | None, trained: Sequence[str] | None, source: str) -> list[int] | None:
    """Where each column the model trained on is among a CSV's columns `names` (its labels' left out where headed
    so), to read the table in that order, leaving out any others (a label column headed otherwise); None when it
    is that order already (or either side has no names). A column the model trained on that the file lacks is an
    error: columns were matched by position, and iris' columns in reverse order answered virginica for every row."""
    if not names or not trained or list(names) == list(trained):
        return None
    missing = [n for n in trained if n not in names]
    twice = sorted({n for n in names if list(names).count(n) > 1})
    if missing or twice:
        lacking = f"without {first_few(missing)}" if missing else f"with {first_few(twice)} twice"
        raise OnnxkitError(f"{source}: the model trained on columns {first_few(list(trained), 6)}; its columns are "
                           f"{first_few(list(names), 6)}, {lacking}; give those columns, once each, by name")
    return [list(names).index(n) for n in trained]

