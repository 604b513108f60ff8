"""A Parquet table as the header and rows of text cells the CSV reader takes (`formats.read_parquet`): each value as
its text, a null an empty cell, a bool 1 or 0, pandas' stored index left out.

Refused in one line each: a column of lists, structs, maps or bytes, which no CSV cell holds (their Python text,
`[1.0, 2.0]`, was read as one category), and a table whose cells would not fit in the memory free.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from onnxkit.errors import OnnxkitError
from onnxkit.files import column_cells, parquet_table, refuse_past_memory

# a cell's peak over the whole read, as Python text and then numbers (measured over 200,000 x 11 random floats: 141
# bytes at the reader's peak, 178 over the read; 130 let a table near the memory free pass and then run out)
CELL_BYTES = 180


def parquet_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    """The column names and rows of text cells of the Parquet table at `path`."""
    table = parquet_table(path)
    kept = [name for name in table.column_names if not name.startswith("__index_level_")]
    for j, name in enumerate(table.column_names):
        if name in kept and _nested(table.schema.field(j).type):
            raise OnnxkitError(f"{path}: column {name!r} holds {table.schema.field(j).type} values, which no table "
                               "cell holds (one number or text each); spread them into columns of their own, drop the "
                               "column, or save the arrays as an .npz")
    _check_memory(path, table.num_rows, len(kept))
    cells = [column_cells(table.column(j).to_pylist()) for j, name in enumerate(table.column_names) if name in kept]
    return kept, [list(row) for row in zip(*cells, strict=True)]


def _nested(kind: Any) -> bool:
    """Whether a pyarrow type holds more than one value a cell (list, struct, map) or bytes."""
    import pyarrow.types as types

    return any(test(kind) for test in (types.is_nested, types.is_binary, types.is_large_binary,
                                       types.is_fixed_size_binary))


def _check_memory(path: Path, rows: int, columns: int) -> None:
    """One error line, before the cells are made, when `rows` x `columns` of them would not fit in the memory free."""
    refuse_past_memory(rows * columns * CELL_BYTES, f"{path}: {rows:,} rows x {columns} columns, as cells here,",
                       "save the features as an .npz (np.savez(f, x=df[features].to_numpy('float32'), "
                       "y=df[label])), or use fewer rows")
