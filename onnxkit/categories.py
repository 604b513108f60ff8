"""Category and date columns of a table: a feature column of text (red / green / blue) read as one 0/1 column per
value, named `<column>=<value>`, as scikit-learn's `OneHotEncoder(handle_unknown="ignore")` encodes it; a column of
ISO dates (2012-01-31, as pandas writes them, a time of day allowed) as numbers of their parts, `<column>:year`,
`:month`, `:day`, `:weekday` (0 on Mondays), and `:hour` where a cell holds a time other than midnight.

`fit_columns` decides, from a training file's cells, the feature names a model trains on; `encode` rebuilds those
columns from any table holding the raw columns (a CSV for eval or predict, a pandas DataFrame), by those names alone:
the model records them (`onnxkit.columns`), so nothing else travels with it. A value the model never trained on,
and a missing cell, is all zeros; a missing number is NaN (which a model trained on gaps fills itself).

Standard library and numpy only, so the runtime can import it.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from onnxkit.errors import OnnxkitError, first_repeated
from onnxkit.files import FLAG_WORDS, is_missing, is_number

SEPARATOR = "="  # between a category column's name and its value: 'color=red'
MAX_CATEGORIES = 50  # more distinct texts than this are no categories (identifiers, names, free text)
FEW_CATEGORIES = 10  # up to this many distinct texts are categories, however few the rows (a toy file's colors)
# between the two: categories only where at most half the rows with a value hold a distinct one (OpenML's titanic,
# 1,047 training rows: name 1,046 values, ticket 773, cabin 163 in 240 filled rows, home.dest 319 in 599; sex 2,
# embarked 3)


DATE_PART = ":"  # between a date column's name and a part of its dates: 'date:month'
DATE_PARTS = ("year", "month", "day", "weekday")
TIME_PART = "hour"  # with its minutes and seconds as a fraction; only where some cell holds a time
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?")


class UnseenCategories(UserWarning):
    """Rows holding a category value the model never trained on (read as all zeros)."""


def is_gap(cell: str) -> bool:
    """Whether a cell is a missing value: empty, NA, N/A, ?, ... (`onnxkit.files.is_missing`), or NaN."""
    return is_missing(cell) or cell.strip().lower() == "nan"


def holds_text(cells: Sequence[str]) -> bool:
    """Whether a column's cells, missing ones aside, are not all numbers: a category column."""
    return any(not is_gap(c) and not is_number(c) for c in cells)


def as_date(cell: str) -> datetime | None:
    """An ISO date (and time) cell as a datetime, else None."""
    cell = cell.strip()
    if not _ISO_DATE.fullmatch(cell):
        return None
    try:
        return datetime.fromisoformat(cell)
    except ValueError:  # 2012-02-30
        return None


def date_part(dates: Sequence[datetime | None], part: str) -> np.ndarray:
    """One part of `dates` as float64 (`DATE_PARTS`, `TIME_PART`), NaN where a date is missing."""
    def value(d: datetime) -> float:
        if part == TIME_PART:
            return d.hour + d.minute / 60 + d.second / 3600
        return float(d.weekday() if part == "weekday" else getattr(d, part))
    return np.array([np.nan if d is None else value(d) for d in dates], np.float64)


def date_part_of(name: str, columns: Sequence[str]) -> tuple[str, str] | None:
    """The (column, part) a feature `name` stands for when it is a part of one of `columns`' dates ('date:month'),
    else None."""
    column, _, part = name.rpartition(DATE_PART)
    return (column, part) if name not in columns and column in columns and part in (*DATE_PARTS, TIME_PART) else None


@dataclass(frozen=True)
class Fitted:
    """The feature names a table trains on, and the text columns left out with why."""

    names: list[str]
    left_out: dict[str, str]


def fit_columns(columns: Mapping[str, Sequence[str]], source: str = "the table") -> Fitted:
    """The feature names of a table of `columns` (cells by column name, in order): a column of numbers by its name;
    a column of text as `<name>=<value>` for each distinct value (stripped), sorted; a column of too many distinct
    texts to be categories (`MAX_CATEGORIES`, `FEW_CATEGORIES`) left out; a column of ISO dates as `<name>:year`,
    `:month`, `:day`, `:weekday` (and `:hour` where a cell holds a time). A name that would read back as another
    column's (`category_of`: a column 'color=red' beside 'color' holding 'red') is an error beginning with `source`."""
    names: list[str] = []
    left_out: dict[str, str] = {}
    for name, cells in columns.items():
        if not holds_text(cells):
            names.append(name)
            continue
        values = [c.strip() for c in cells if not is_gap(c)]
        dates = [as_date(v) for v in values]
        if all(dates):
            timed = any(d.time() != datetime.min.time() for d in dates)  # type: ignore[union-attr]
            parts = [f"{name}{DATE_PART}{p}" for p in (*DATE_PARTS, *[TIME_PART] * timed)]
            taken = [p for p in parts if p in columns]
            if taken:
                raise OnnxkitError(f"{source}: the dates of column {name!r} would be read as {', '.join(parts)}, but "
                                   f"a column is named {taken[0]!r}; rename it")
            names += parts
            continue
        distinct = sorted(set(values))
        if len(distinct) > MAX_CATEGORIES or len(distinct) > FEW_CATEGORIES and 2 * len(distinct) > len(values):
            left_out[name] = f"{len(distinct)} distinct texts in {len(values)} rows"
            continue
        for value in distinct:
            names.append(f"{name}{SEPARATOR}{value}")
            if category_of(names[-1], list(columns)) != (name, value):
                raise OnnxkitError(f"{source}: the category {value!r} of column {name!r} would be named "
                                   f"{names[-1]!r}, which reads as {_read_as(names[-1], list(columns))}; rename a "
                                   f"column so that no column's name is another's followed by {SEPARATOR!r}")
    return Fitted(names, left_out)


def _read_as(name: str, columns: Sequence[str]) -> str:
    """How a feature `name` reads back (`category_of`), for a message."""
    found = category_of(name, columns)
    return f"column {name!r}" if found is None else f"the category {found[1]!r} of column {found[0]!r}"


def category_of(name: str, columns: Sequence[str]) -> tuple[str, str] | None:
    """The (column, value) a feature `name` stands for when it is a category indicator of one of `columns` (the
    column's name, `SEPARATOR`, the value; the longest such column: 'a=b=c' is column 'a=b''s 'c' beside a column 'a',
    which read it as 'a''s 'b=c', all zeros), else None (a column of its own name is itself)."""
    if name in columns:
        return None
    for i in range(len(name) - 1, -1, -1):
        if name[i] == SEPARATOR and name[:i] in columns:
            return name[:i], name[i + 1:]
    return None


def by_column(source: str, names: Sequence[str], rows: Sequence[Sequence[str]]) -> dict[str, list[str]]:
    """A table's rows of cells as columns by name, as `fit_columns` and `encode` take them; two columns of one name
    are an error (a dict kept one of them unsaid)."""
    twice = first_repeated(names)
    if twice is not None:
        raise OnnxkitError(f"{source}: two columns are headed {twice!r}; give each column its own name (categories "
                           "are read by column name)")
    return {name: [row[j] for row in rows] for j, name in enumerate(names)}


def encodes_categories(names: Sequence[str] | None, columns: Sequence[str] | None) -> bool:
    """Whether feature `names` (a model's) hold category indicators or date parts of `columns` (a table's)."""
    return bool(names and columns) and any(category_of(n, columns) or date_part_of(n, columns)  # type: ignore[arg-type]
                                           for n in names)  # type: ignore[union-attr]


@dataclass(frozen=True)
class Encoded:
    """A table's features as float64 [rows, features], and the rows holding a category value not among them
    (`unseen`, with the first such column and value)."""

    x: np.ndarray
    unseen: int = 0
    example: tuple[str, str] | None = None

    def warning(self, source: str) -> str | None:
        """The line that says how many rows held an unseen value, or None."""
        if not self.unseen:
            return None
        column, value = self.example  # type: ignore[misc]
        return (f"{source}: {self.unseen} of {len(self.x)} rows hold a category the model never trained on "
                f"({column!r}: {value!r}, say); each reads as none of that column's categories (all zeros)")

    def warn_unseen(self, source: str, stacklevel: int = 2) -> np.ndarray:
        """The features, after an `UnseenCategories` warning (`warning`) where rows held an unseen value;
        `stacklevel` as the caller would give `warnings.warn`."""
        if self.unseen:
            warnings.warn(self.warning(source), UnseenCategories, stacklevel=stacklevel + 1)
        return self.x


def encode(columns: Mapping[str, Sequence[str]], names: Sequence[str], source: str,
           lines: Sequence[int] | None = None) -> Encoded:
    """The features `names` of a table of `columns` (cells by column name): a column by its name as numbers (a
    missing cell NaN), a category indicator `<column>=<value>` as 1 where the column holds that value, else 0. A
    column any name needs that the table lacks, or a text cell where numbers are read, is an error beginning with
    `source` (and the cell's line, from `lines`: each row's in the file)."""
    present = list(columns)
    rows = len(next(iter(columns.values()))) if columns else 0
    x = np.zeros((rows, len(names)), np.float64)
    needed = {name: category_of(name, present) for name in names}
    parts = {name: date_part_of(name, present) for name in names}
    lacking = list(dict.fromkeys(column_of(n)[0] for n in names if not needed[n] and not parts[n] and n not in columns))
    if lacking:  # a category's column by its own name ('sex', not 'sex=female')
        raise OnnxkitError(f"{source}: the model trained on column{'s' * (len(lacking) > 1)} "
                           f"{', '.join(repr(n) for n in lacking[:4])}, which it lacks; give every column it trained "
                           "on, by name")
    known: dict[str, set[str]] = {}
    dates: dict[str, list[datetime | None]] = {}
    for j, name in enumerate(names):
        category = needed[name]
        if parts[name]:
            column, part = parts[name]  # type: ignore[misc]
            if column not in dates:
                dates[column] = _dates(columns[column], column, source, lines)
            x[:, j] = date_part(dates[column], part)
        elif category is None:
            x[:, j] = _numbers(columns[name], name, source, lines)
        else:
            column, value = category
            x[:, j] = [c.strip() == value for c in columns[column]]
            known.setdefault(column, set()).add(value)
    unseen = np.zeros(rows, bool)
    example = None
    for column, values in known.items():
        new = np.array([not is_gap(c) and c.strip() not in values for c in columns[column]], bool)
        if new.any() and example is None:
            example = (column, columns[column][int(np.argmax(new))].strip())
        unseen |= new
    return Encoded(x, int(unseen.sum()), example)


def column_of(name: str) -> tuple[str, str | None]:
    """The column a feature name stands for by its form alone, and as what: ('sex', 'category') for 'sex=male',
    ('date', 'date') for 'date:month', (name, None) for a column read as itself."""
    if SEPARATOR in name:
        return name.split(SEPARATOR)[0], "category"
    column, _, part = name.rpartition(DATE_PART)
    return (column, "date") if column and part in (*DATE_PARTS, TIME_PART) else (name, None)


def _dates(cells: Sequence[str], name: str, source: str, lines: Sequence[int] | None) -> list[datetime | None]:
    """A date column's cells as datetimes, missing ones None; a cell of anything else is an error."""
    dates = [None if is_gap(c) else as_date(c) for c in cells]
    bad = next((i for i, (c, d) in enumerate(zip(cells, dates, strict=True)) if d is None and not is_gap(c)), None)
    if bad is not None:
        raise OnnxkitError(f"{_where(source, lines, bad)}: column {name!r} holds {cells[bad].strip()!r}, where the "
                           "model trained on dates (as 2012-01-31 or 2012-01-31 08:30); write a date there (or leave "
                           "the cell empty)")
    return dates


def _numbers(cells: Sequence[str], name: str, source: str, lines: Sequence[int] | None) -> np.ndarray:
    """A column's cells as float64, missing ones NaN, true / false and yes / no 1 / 0 (`flags_as_numbers`); any
    other text cell is an error."""
    values = np.empty(len(cells), np.float64)
    for i, cell in enumerate(cells):
        if is_gap(cell):
            values[i] = np.nan
        elif is_number(cell):
            values[i] = float(cell)
        elif cell.strip().lower() in FLAG_WORDS:
            values[i] = float(FLAG_WORDS[cell.strip().lower()])
        else:
            raise OnnxkitError(f"{_where(source, lines, i)}: column {name!r} holds text ({cell.strip()!r}), where "
                               "the model trained on numbers; write a number there (or leave the cell empty)")
    return values


def _where(source: str, lines: Sequence[int] | None, row: int) -> str:
    """Where a table's `row` is, for a message: its line in the file (`lines`), else its number."""
    return f"{source}:{lines[row]}" if lines is not None else f"{source}, row {row + 1}"
