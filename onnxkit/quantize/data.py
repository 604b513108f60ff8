"""Data for calibration (train split), evaluation (test split) and timing.

`DATA` is anything `onnxkit.data.load_dataset` reads (a built-in name, .npz,
.csv), or, from Python, a Dataset, a Split, a dict of input arrays or (calibration only) one array. Binding arrays to
the model's inputs (names, dtypes, shapes) is `Split.feeds_for`'s job.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader

from onnxkit.batch_axis import layout_of, transposed
from onnxkit.data import Dataset, Split, load_dataset, model_inputs
from onnxkit.data.checks import check_finite
from onnxkit.errors import OnnxkitError
from onnxkit.files import TABLE_SUFFIXES, csv_rows, npy_array, npz_arrays
from onnxkit.metadata import imputed_medians
from onnxkit.quantize.inputs import fixed_batch

Feeds = dict[str, np.ndarray]


def load_split(data: Any, split: str, model: onnx.ModelProto, seed: int = 0) -> Split:
    """The `split` ("train" / "test", split with `seed`) of a dataset name or file (text tokenized
    for `model`) or of a Dataset; a Split as given; a dict of arrays (or one array, for a model
    of one input) as a split without labels."""
    if isinstance(data, (str, os.PathLike)):
        data = load_dataset(str(data), seed=seed, model=model)
    if isinstance(data, Dataset):
        return data.split(split)
    if isinstance(data, np.ndarray):
        names = [i.name for i in model_inputs(model)]
        if len(names) != 1:
            raise TypeError(f"one array feeds a model of one input; this one has {len(names)} "
                            f"({', '.join(names)}): pass a dict of arrays keyed by input name")
        data = {names[0]: data}
    if isinstance(data, dict):
        scalars = [name for name, value in data.items() if np.ndim(value) == 0]
        if scalars:  # a Loop's trip count, say: no rows to draw calibration batches from
            raise OnnxkitError(f"input {scalars[0]!r} is a single value, not one row per example, so no batches can "
                               "be drawn from the data to calibrate on; quantize with --mode dynamic (no calibration)",
                               params=["mode"])
        return Split("data", data, np.zeros(len(next(iter(data.values()))), np.int64))
    return data


def recorded_data(model: onnx.ModelProto) -> tuple[str | None, int, str | None]:
    """The data `model` was trained on and its split seed, when it says and that data is here
    (a built-in dataset, or a file or folder of images that still exists); else None and why not (or None)."""
    from onnxkit.data.registry import datasets
    from onnxkit.evaluate import trained_on

    name, seed = trained_on(model)
    if name is None:
        return None, 0, None
    if name in datasets() or os.path.exists(name):
        return name, seed, None
    return None, 0, f"the model was trained on {name}, which is not here"


def bind(split: Split, model: onnx.ModelProto) -> Split:
    """`split` with its arrays named and cast as the model's inputs."""
    return split.feeds_for(model_inputs(model))


def calibration_batches(data: Any, model: onnx.ModelProto, size: int, *, seed: int = 0) -> list[Feeds]:
    """Up to `size` training examples (of the split made with `seed`), shuffled with seed 0, in batches
    of one shape: all in one batch, or, for a model with a fixed batch size, the fewest whole batches
    that hold `size` (as many as the split fills).

    ORT's histogram calibrators (entropy, percentile) stack every batch's activations into one array,
    which batches of different shapes (a partial last batch, text padded per batch) cannot make.
    """
    if data is None:
        raise OnnxkitError(
            "static quantization needs calibration data: pass calib "
            "(a dataset name such as digits-images, or an .npz/.npy/.csv file of model inputs), "
            "or use mode dynamic, which needs none", params=["calib", "mode"]
        )
    split = bind(load_split(_inputs_file(data, model), "train", model, seed), model)
    if len(split) == 0:
        raise OnnxkitError(f"calib {data}: its train split is empty; pass a larger dataset", params=["calib"])
    medians = imputed_medians(model)  # a model that fills missing values itself: calibrated on what it fills in
    if medians:
        split = Split(split.name, {k: np.where(np.isnan(v), medians[k], v) if k in medians else v
                                   for k, v in split.inputs.items()}, split.labels)
    # NaN or infinity makes NaN ranges: ORT's calibrator fails ('scale issue') or writes a model that outputs zeros
    check_finite(split.described if split.data else str(data) if isinstance(data, str | os.PathLike) else "calib",
                 split.inputs)
    batch = fixed_batch(model)
    if batch is None:
        return _as_taken([next(split.batches(size, shuffle=True, seed=0))[0]], model)
    count = min(-(-size // batch), len(split) // batch)
    if count == 0:
        raise OnnxkitError(
            f"calib {data}: the model takes batches of exactly {batch} examples and the train split has "
            f"{len(split)}; pass a larger dataset", params=["calib"]
        )
    feeds, _ = next(split.batches(count * batch, shuffle=True, seed=0))  # padded alike, then cut
    return _as_taken([{k: v[lo:lo + batch] for k, v in feeds.items()} for lo in range(0, count * batch, batch)],
                     model)


def _as_taken(batches: list[Feeds], model: onnx.ModelProto) -> list[Feeds]:
    """Rows-first `batches` as `model` takes them: a seq-first model's (`batch_axis.layout_of`) inputs with their first
    two axes swapped, so its calibrator runs it on the sequences the data holds, not on its rows read as steps."""
    layout = layout_of(model)
    if layout is None:
        return batches
    return [{k: transposed(v) if k in layout.inputs else v for k, v in feeds.items()} for feeds in batches]


def _inputs_file(data: Any, model: onnx.ModelProto) -> Any:
    """A file of model inputs alone, read for calibration, which needs no labels: an .npy file's
    array (for a model of one input) or an .npz file's arrays when it has no labels array; `data`
    itself otherwise (a dataset name, a labelled file: its train split is used)."""
    import zipfile

    from onnxkit.label_columns import NPZ_LABEL_NAMES, npz_labels

    if not isinstance(data, str | os.PathLike) or not os.path.isfile(data):
        return data
    suffix = os.path.splitext(data)[1].lower()
    if suffix in (".txt", *TABLE_SUFFIXES):
        return _texts_file(data, suffix, model)
    if suffix not in (".npy", ".npz"):
        return data
    try:
        if suffix == ".npy":
            array = npy_array(data)
        else:
            arrays = npz_arrays(data)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:  # EOFError: an empty file
        raise OnnxkitError(f"calib {data}: not a readable {suffix} file ({e}); write it with numpy.save or "
                           "numpy.savez", params=["calib"]) from e
    if suffix == ".npz":
        if npz_labels(arrays) is not None:
            return data
        arrays.pop(NPZ_LABEL_NAMES, None)
        if not arrays:
            raise OnnxkitError(f"calib {data}: holds no arrays; save the model's inputs in it by name",
                               params=["calib"])
        return arrays
    names = [i.name for i in model_inputs(model)]
    if len(names) != 1:
        raise OnnxkitError(f"calib {data}: one array feeds a model of one input, and this one has {len(names)} "
                           f"({', '.join(names)}); save them in an .npz file by input name", params=["calib"])
    return {names[0]: array}


def first_batch(split: Split, batch: int) -> Feeds:
    """The first `batch` examples of a bound split, repeated when it has fewer."""
    feeds, _ = next(split.batches(min(batch, len(split))))
    return {k: np.resize(v, (batch, *v.shape[1:])) for k, v in feeds.items()}


class BatchReader(CalibrationDataReader):
    """Feeds prepared batches to ORT's calibrators and debuggers; rewindable."""

    def __init__(self, batches: list[Feeds]):
        self.batches = batches
        self.position = 0

    def get_next(self) -> Feeds | None:
        if self.position >= len(self.batches):
            return None
        self.position += 1
        return self.batches[self.position - 1]

    def rewind(self) -> None:
        self.position = 0


def _texts_file(data: str | os.PathLike, suffix: str, model: onnx.ModelProto) -> Any:
    """Texts alone (a .txt, one a line, or a .csv/.tsv of one column), as `predict` reads them, tokenized for
    `model` (one that carries a tokenizer) to calibrate on, every row; `data` itself otherwise (a table with
    labels: its train split is used). A CSV of texts without labels was refused as a dataset ('needs ... a label
    column'), which calibration does not need."""
    from onnxkit.metadata import metadata
    from onnxkit.runtime.datafiles import read_texts
    from onnxkit.tokenize import encode, fixed_length, token_inputs, tokenizer_from_metadata

    tokenizer = tokenizer_from_metadata(metadata(model), fixed_length(model_inputs(model)))
    if tokenizer is None:  # token ids or numbers: a table of the model's inputs alone, else a dataset
        return _table_of_inputs(data, model) if suffix != ".txt" else data
    if suffix != ".txt":
        _, rows = csv_rows(data)
        if not rows or len(rows[0][1]) != 1:
            return data
    texts = [text for text in read_texts(Path(data)) if text.strip()]
    if not texts:
        raise OnnxkitError(f"calib {data}: holds no text; give one text a line (a .txt) or a row", params=["calib"])
    arrays = encode(tokenizer, texts)
    return {name: arrays[array] for name, array in token_inputs(model_inputs(model)).items()}


def _table_of_inputs(data: str | os.PathLike, model: onnx.ModelProto) -> Any:
    """A CSV of the model's inputs alone, as `predict` reads it (every row): one column per feature of its one
    [batch, features] input, none headed as labels; `data` itself otherwise (a dataset: its train split). Read as
    a dataset, such a file's last column was taken for the labels: 'data array 'x' has shape [30, 63] but model
    input 'x' expects [batch, 64]'."""
    from onnxkit.label_columns import label_column

    specs = model_inputs(model)
    shape = specs[0].shape if len(specs) == 1 else None
    if not shape or len(shape) != 2 or not isinstance(shape[1], int) or shape[1] < 1:
        return data
    _, rows = csv_rows(data)
    if not rows or len(rows[0][1]) != shape[1] or label_column(rows[0][1], str(data)) is not None:
        return data
    from onnxkit import runtime
    from onnxkit.runtime.datafiles import read_inputs

    return read_inputs(Path(data), runtime.load(model, device="cpu"))
