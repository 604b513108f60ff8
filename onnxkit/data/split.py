"""Splits and datasets: named feature arrays plus labels, batching, and binding to a model's inputs.

A `Split` holds feature arrays by name (`inputs`) and one `labels` array, all
with the same first dimension. `Split.feeds_for(model_inputs)` binds it to a
model: each model input takes the array of the same name, or — when both have
exactly one — the only array whatever its name; dtypes are cast within the
same kind (float64 -> float32, int32 -> int64) and shapes are checked against
the model's fixed dimensions (size-1 axes may sit elsewhere: [N, 1, 8, 8] images feed a
[batch, 8, 8, 1] input). Any other mismatch is an `OnnxkitError` raised before a model runs.

Subclasses that build batches differently (text padded per batch) override
`_batch`, `_rows` and `_with_inputs`; everything else works unchanged.
"""

from __future__ import annotations

import hashlib
import itertools
import numbers
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from onnxkit.data.checks import checked_labels
from onnxkit.dims import dims_of
from onnxkit.errors import OnnxkitError, suggest
from onnxkit.input_columns import unit_axes_moved
from onnxkit.label_columns import label_column
from onnxkit.tokenize import token_inputs

SPLIT_NAMES = ("train", "validation", "test")
ALL = "all"  # the name of every example of a dataset as one split (Dataset.split)
# shuffled batches are gathered this many bytes at a time (see Split.epochs): the digits-cnn recipe's 40 epochs in one
# block gathered before training begins, where blocks of 2 MiB (7 epochs) took ~0.8 ms each in the loop (its own time
# 1.029-1.031x -> 1.024-1.026x of the steps; the whole fit +0.5%, the larger block's page faults)
BLOCK_BYTES = 16 << 20
EPOCHS_AT_ONCE = 64  # at most this many whole epochs per block (the seeds may never end)
SPLIT_ALIASES = {"val": "validation", "valid": "validation", "dev": "validation"}


@dataclass(frozen=True)
class ModelInput:
    """What a model expects for one input: name, numpy dtype, shape (str/None = free dim)."""

    name: str
    dtype: np.dtype
    shape: tuple[int | str | None, ...] | None

    @classmethod
    def from_value_info(cls, value_info) -> ModelInput:  # type: ignore[no-untyped-def]
        """From an `onnx.ValueInfoProto` (a graph input)."""
        from onnx.helper import tensor_dtype_to_np_dtype

        elem_type = value_info.type.tensor_type.elem_type
        return cls(value_info.name, np.dtype(tensor_dtype_to_np_dtype(elem_type)), dims_of(value_info.type))


def model_inputs(model) -> list[ModelInput]:  # type: ignore[no-untyped-def]
    """The inputs a caller must feed to an `onnx.ModelProto` (not initializer-backed ones)."""
    initialized = {t.name for t in model.graph.initializer}
    return [ModelInput.from_value_info(v) for v in model.graph.input if v.name not in initialized]


class Split:
    """Named feature arrays and labels with one shared first dimension."""

    data: str | None = None  # the name of the dataset it is a split of (set by `Dataset`), for messages
    label_names: list[str] | None = None  # that dataset's class names, when its labels are names (set by `Dataset`)
    fixed_shapes = True  # every batch has the arrays' sizes past the batch axis (text splits cut each to its longest)

    def __init__(self, name: str, inputs: Mapping[str, np.ndarray], labels: np.ndarray) -> None:
        if not isinstance(inputs, Mapping):  # was numpy's "truth value of an array ... is ambiguous"
            raise TypeError(f"split {name!r}: inputs must be a dict of arrays keyed by model input name, such as "
                            f"{{'x': X}}, not {type(inputs).__name__}")
        if not inputs:
            raise OnnxkitError(f"split {name!r} has no feature arrays; give at least one")
        inputs, labels = {k: np.asarray(v) for k, v in inputs.items()}, np.asarray(labels)  # lists, DataFrames
        sizes = {k: len(v) for k, v in inputs.items()}
        if any(n != len(labels) for n in sizes.values()):
            raise OnnxkitError(
                f"split {name!r}: arrays have different lengths "
                f"({', '.join(f'{k}={n}' for k, n in sizes.items())}, labels={len(labels)}); "
                "every array needs one row per example"
            )
        self.name = name
        self.inputs = dict(inputs)
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        arrays = ", ".join(f"{k}{list(v.shape)}:{v.dtype}" for k, v in self.inputs.items())
        return f"Split({self.name!r}, {len(self)} examples, {arrays})"

    @property
    def described(self) -> str:
        """How messages name it: 'iris, test split' (or 'test split' without a dataset name)."""
        return f"{self.data}, {self.name} split" if self.data else f"{self.name} split"

    def _batch(self, indices: np.ndarray | slice) -> tuple[dict[str, np.ndarray], np.ndarray]:
        return {k: v[indices] for k, v in self.inputs.items()}, self.labels[indices]

    def _with_inputs(self, inputs: dict[str, np.ndarray]) -> Split:
        return Split(self.name, inputs, self.labels)

    def with_fixed_shapes(self) -> Split:
        """This split with every batch at the arrays' own sizes past the batch axis (`fixed_shapes`)."""
        return self

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int:
        """How many batches `batches(batch_size, drop_last=...)` yields."""
        return len(self) // batch_size if drop_last else -(-len(self) // batch_size)

    def batches(
        self, batch_size: int, shuffle: bool = False, seed: int = 0, drop_last: bool = False
    ) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
        """Yield `(inputs, labels)` batches; with `shuffle`, in an order fixed by `seed`."""
        return iter(next(self.epochs(batch_size, [seed] if shuffle else None, drop_last)))

    def epochs(
        self, batch_size: int, seeds: Iterable[int] | None, drop_last: bool = False, *, reuse: bool = False
    ) -> Iterator[Iterable[tuple[dict[str, np.ndarray], np.ndarray]]]:
        """One iterable of batches per epoch: in order (forever) when `seeds` is None, else one
        epoch per seed, shuffled by it (each the same as `batches(..., shuffle=True, seed=s)`).
        Epochs of a small split come as lists, their batch views made at once: made one a step,
        between runs that leave the caches cold, each took 14 us where the list's take ~4.

        Shuffled data is gathered a block at a time, one copy per array, and each batch is a
        view of its block: a block holds up to BLOCK_BYTES, up to EPOCHS_AT_ONCE whole epochs
        of a small split (their orders drawn and gathered together: in a training loop, a fresh
        random generator and gather each epoch cost 10x their warm time) or some batches of a
        large one. With `reuse`, each block is gathered into the memory of the one before (a
        consumer done with each batch before it draws the next: a training loop), which saves
        a fresh block's page faults (digits-images: 0.65 ms a block in a fit, 0.04 ms warm);
        a batch then stays valid only until the next block's first batch is drawn.
        """
        if batch_size < 1:
            raise OnnxkitError(f"batch size must be at least 1, got {batch_size}")
        count = self.num_batches(batch_size, drop_last)
        if seeds is None:
            while True:
                yield (self._batch(slice(lo, lo + batch_size)) for lo in range(0, count * batch_size, batch_size))
        seeds, memory = iter(seeds), {} if reuse else None
        used = count * batch_size if drop_last else len(self)  # rows an epoch uses
        row_bytes = sum(v.nbytes for v in (*self.inputs.values(), self.labels)) // max(1, len(self))
        rows_per_block = max(batch_size, BLOCK_BYTES // max(1, row_bytes))
        together = max(1, min(EPOCHS_AT_ONCE, rows_per_block // max(1, used)))  # whole epochs per block
        while chunk := list(itertools.islice(seeds, together)):
            orders = [np.random.default_rng(s).permutation(len(self))[:used] for s in chunk]
            if together > 1:
                block = self._rows(np.concatenate(orders), memory)
                for k in range(len(chunk)):
                    yield [block._batch(slice(lo, min(lo + batch_size, (k + 1) * used)))
                           for lo in range(k * used, k * used + count * batch_size, batch_size)]
            else:
                yield self._gathered(orders[0], batch_size, count, rows_per_block // batch_size, memory)

    def _gathered(self, order: np.ndarray, batch_size: int, count: int, per_block: int,
                  memory: dict[str | None, np.ndarray] | None) -> Iterator[tuple]:
        """The `count` batches of `order`, gathered `per_block` batches at a time (into `memory`: see `_rows`)."""
        for first in range(0, count, per_block):
            block = self._rows(order[first * batch_size:(first + per_block) * batch_size], memory)
            for lo in range(0, min(per_block, count - first) * batch_size, batch_size):
                yield block._batch(slice(lo, lo + batch_size))

    def _rows(self, indices: np.ndarray, memory: dict[str | None, np.ndarray] | None = None) -> Split:
        """The examples at `indices` (a copy), as a split of this kind; with `memory`, gathered into
        its arrays (see `_taken`)."""
        return Split(self.name, *self._taken(indices, memory))

    def _taken(self, indices: np.ndarray, memory: dict[str | None, np.ndarray] | None
               ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The arrays' rows at `indices` (copies), as `_batch` gives them uncut; with `memory`, written
        into its arrays of the same names (None the labels') where they have the room, else into new
        ones left there for the next call."""

        def take(name: str | None, array: np.ndarray) -> np.ndarray:
            if memory is None:
                return np.take(array, indices, axis=0)
            room = memory.get(name)
            if room is None or len(room) < len(indices):
                room = memory[name] = np.empty((len(indices), *array.shape[1:]), array.dtype)
            return np.take(array, indices, axis=0, out=room[:len(indices)], mode="wrap")  # "raise" copies twice

        return {k: take(k, v) for k, v in self.inputs.items()}, take(None, self.labels)

    def spread(self, count: int) -> Split:
        """At most `count` examples spaced evenly over the split (a copy, of this kind): a sample of all of a split
        kept in its source's order, whose first rows may be one class (an image folder's, class after class)."""
        rows = np.unique(np.linspace(0, len(self) - 1, min(count, len(self))).round().astype(np.int64))
        sample = self._rows(rows)
        sample.data = self.data
        return sample

    def joined(self, others: Sequence[Split], name: str) -> Split:
        """This split's examples, then those of `others` (a copy), as a split of this kind called `name`."""
        splits = [self, *others]
        inputs = {k: np.concatenate([s.inputs[k] for s in splits]) for k in self.inputs}
        return Split(name, inputs, np.concatenate([s.labels for s in splits]))

    def feeds_for(self, inputs: Sequence[ModelInput]) -> Split:
        """This split with arrays renamed and cast to what `inputs` expect; checks shapes.

        Raises `OnnxkitError` naming the input when a name, dtype or shape does not fit.
        """
        if len(self.inputs) == 1 and len(inputs) == 1:
            names = {inputs[0].name: next(iter(self.inputs))}
        elif len(inputs) == 1 and set(token_inputs(inputs).values()) <= set(self.inputs):
            names = token_inputs(inputs)  # text's token ids for a model of one input named otherwise too
        else:
            names = {}
            for spec in inputs:
                if spec.name not in self.inputs:
                    raise OnnxkitError(
                        f"model input {spec.name!r} has no array in the data (arrays: "
                        f"{', '.join(self.inputs)}).{suggest(spec.name, self.inputs)} "
                        "Name the data's arrays after the model's inputs"
                    )
                names[spec.name] = spec.name
        bound: dict[str, np.ndarray] = {}
        dims: dict[str, tuple[int, str]] = {}
        for spec in inputs:
            array = unit_axes_moved(self.inputs[names[spec.name]], spec)
            bound[spec.name] = _cast(array, spec, names[spec.name])
            _check_shape(array.shape, spec, names[spec.name], dims)
        renamed = self._with_inputs(bound)
        renamed.data = self.data
        return renamed


def _cast(array: np.ndarray, spec: ModelInput, source: str) -> np.ndarray:
    want = spec.dtype
    if array.dtype == want:
        return array
    kind = array.dtype.kind
    if kind in "US" and want.kind == "O":  # text for a string input (numpy saves it as <U: .npz holds no objects)
        return array.astype(object)
    if want.kind == "b" and kind in "iuf":  # a padding mask saved as 0/1 numbers
        if not np.isin(array, (0, 1)).all():
            raise OnnxkitError(f"data array {source!r} is {array.dtype} but model input {spec.name!r} needs bool, and "
                               "holds values other than 0 and 1; save it as bool")
        return array.astype(want)
    if not ((kind == "f" and want.kind == "f") or (kind in "iub" and want.kind in "iuf")):
        raise OnnxkitError(
            f"data array {source!r} is {array.dtype} but model input {spec.name!r} needs {want}; "
            "convert the data (e.g. token ids must be integers)"
        )
    return array.astype(want)


def _check_shape(
    shape: tuple[int, ...], spec: ModelInput, source: str, dims: dict[str, tuple[int, str]]
) -> None:
    if spec.shape is None:
        return
    wanted = "[" + ", ".join(str(d) if d is not None else "?" for d in spec.shape) + "]"
    # the first dimension is the example dimension: its size is the batch size, not the data's
    per_example = (None, *spec.shape[1:]) if spec.shape else spec.shape
    if len(shape) == len(spec.shape) + 1 and tuple(spec.shape) == shape[1:]:
        raise OnnxkitError(
            f"model input {spec.name!r} {wanted} has no batch dimension: it takes one example, and training and "
            "evaluation feed batches of them; export the model with a batch dimension first (PyTorch: an input "
            f"of shape [1, ...] and dynamic_axes={{{spec.name!r}: {{0: 'batch'}}}})"
        )
    if len(shape) != len(spec.shape) or any(
        isinstance(d, int) and d > 0 and d != s for d, s in zip(per_example, shape, strict=True)
    ):
        raise OnnxkitError(
            f"data array {source!r} has shape {list(shape)} but model input {spec.name!r} "
            f"expects {wanted}; reshape the data (or pick the matching dataset, "
            "e.g. digits-images for image models and digits for flat ones)"
        )
    for d, s in zip(spec.shape[1:], shape[1:], strict=True):
        if isinstance(d, str):
            seen = dims.setdefault(d, (s, source))
            if seen[0] != s:
                raise OnnxkitError(
                    f"dimension {d!r} is {seen[0]} in array {seen[1]!r} but {s} in {source!r}; "
                    "arrays that share a model dimension need the same size"
                )


@dataclass
class Dataset:
    """Three deterministic splits of one set of examples, and what the labels mean."""

    name: str
    train: Split
    validation: Split
    test: Split
    label_names: list[str] | None = None
    task: str = "classification"  # or "regression"
    labels_from: str | None = None  # where a file's labels were taken from, when no column was headed as labels
    label_column: str | None = None  # a CSV's label column, as the training line names it ("'price' (column 5)")
    label_header: str | None = None  # that column's header, which training records for eval to find it by
    notes: tuple[str, ...] = ()  # what a reader noticed that training should warn of (a row-id column, say)
    columns: tuple[str, ...] | None = None  # a CSV's feature columns by header name, in the order of the features
    texts_read: str | None = None  # how a text dataset's texts were read: column, tokenizer, cut (the run says it)

    def __post_init__(self) -> None:
        for split in (self.train, self.validation, self.test):
            split.data, split.label_names = self.name, self.label_names

    def split(self, name: str) -> Split:
        """The split called `name`: train, validation (val), test, or all (every example: a file held out whole)."""
        key = SPLIT_ALIASES.get(name, name)
        if key == ALL:
            parts = [s for s in (self.train, self.validation, self.test) if len(s)]
            whole = parts[0].joined(parts[1:], ALL)
            whole.data, whole.label_names = self.name, self.label_names
            return whole
        if key not in SPLIT_NAMES:
            raise OnnxkitError(f"unknown split {name!r}.{suggest(name, [*SPLIT_NAMES, ALL])} Choose from "
                               f"{', '.join(SPLIT_NAMES)} or {ALL}")
        return getattr(self, key)

    def fingerprint(self) -> str:
        """The SHA-256 of every split's arrays and labels (names, types, shapes and values): how a run that
        trained on this Dataset in memory tells it from another on resume."""
        digest = hashlib.sha256()
        for split in (self.train, self.validation, self.test):
            for name, array in [*sorted(split.inputs.items()), ("labels", split.labels)]:
                array = np.ascontiguousarray(array)
                digest.update(f"{split.name}/{name}:{array.dtype.str}:{array.shape};".encode())
                digest.update(repr(array.tolist()).encode() if array.dtype.hasobject else array.tobytes())
        return digest.hexdigest()

    def with_fixed_shapes(self) -> Dataset:
        """This dataset with each split's batches at the arrays' own sizes (`Split.with_fixed_shapes`)."""
        splits = (self.train.with_fixed_shapes(), self.validation.with_fixed_shapes(), self.test.with_fixed_shapes())
        return replace(self, train=splits[0], validation=splits[1], test=splits[2])

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}: train {len(self.train)}, validation {len(self.validation)}, "
            f"test {len(self.test)})"
        )


def check_seed(seed: object) -> None:
    """A split's seed is a whole number from 0 up (-1 was numpy's 'expected non-negative integer', from its depths)."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be a whole number from 0 up, not {seed!r}")
    if seed < 0:
        raise OnnxkitError(f"seed must be 0 or more, got {seed}", params=["seed"])


def split_indices(
    labels: np.ndarray,
    *,
    seed: int = 0,
    validation: float = 0.2,
    test: float = 0.2,
    stratify: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deterministic train/validation/test index arrays (stratified by class when asked)."""
    check_seed(seed)
    if not (0 <= validation < 1 and 0 <= test < 1 and validation + test < 1):
        raise OnnxkitError(
            f"split fractions validation={validation}, test={test} must be in [0, 1) "
            "and leave examples for training"
        )
    rng = np.random.default_rng(seed)
    groups = class_groups(labels) if stratify else [np.arange(len(labels))]
    parts: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]] = ([], [], [])
    for group in groups:
        idx = rng.permutation(group)
        n_test = int(round(len(idx) * test))
        n_val = int(round(len(idx) * validation))
        parts[2].append(idx[:n_test])
        parts[1].append(idx[n_test : n_test + n_val])
        parts[0].append(idx[n_test + n_val :])
    train, val, tst = (np.sort(np.concatenate(p)) for p in parts)
    return train, val, tst


def class_groups(labels: np.ndarray) -> list[np.ndarray]:
    """The indices of each distinct label, in increasing index order, classes in sorted order
    (np.unique's order, without its import of numpy.ma: 7 ms of every command)."""
    order = np.argsort(labels, kind="stable")
    ordered = labels[order]
    return np.split(order, np.flatnonzero(ordered[1:] != ordered[:-1]) + 1)


def stratifies(labels: np.ndarray) -> bool:
    """Whether a split keeps each class's share: class ids, one a row (a [N, H, W] mask or [N, K] multi-label matrix
    has no class to stratify by), of few enough classes to be classes."""
    return labels.dtype.kind in "iub" and labels.ndim == 1 and len(class_groups(labels)) <= max(2, len(labels) // 5)


def dataset_from_arrays(
    name: str,
    inputs: Mapping[str, np.ndarray],
    labels: np.ndarray,
    *,
    label_names: list[str] | None = None,
    seed: int = 0,
    validation: float = 0.2,
    test: float = 0.2,
) -> Dataset:
    """Split whole arrays into a `Dataset`; integer labels make a stratified classification set.

    `inputs` maps each model input's name to its array ({'x': X}); arrays, nested lists and pandas
    DataFrames / Series are taken (a lone DataFrame's column names are kept as `columns`, which a model trained on
    it reads a DataFrame by). Refuses empty data and feature arrays whose row count differs
    from the labels'; labels shaped [N, 1] become [N]."""
    if not isinstance(inputs, Mapping):
        raise TypeError(f"inputs must be a dict of arrays keyed by model input name, such as {{'x': X}}, not "
                        f"{type(inputs).__name__}")
    columns = _frame_columns(inputs)
    inputs = {k: np.asarray(v) for k, v in inputs.items()}  # a DataFrame is indexed by row position, not its labels
    labels = np.asarray(labels)
    if labels.dtype.kind == "O" and labels.size and all(isinstance(v, numbers.Real) and not isinstance(v, bool)
                                                         for v in labels.flat):
        labels = labels.astype(np.float64)  # numbers in an object array (a pandas object column): not names
        labels = labels.astype(np.int64) if np.all(labels == np.round(labels)) else labels
    if labels.dtype.kind in "USO":  # class names, as a CSV's text labels: ids in sorted order
        names = sorted({str(v).strip() for v in labels.reshape(-1)})
        if label_names is not None and list(label_names) != names:
            raise OnnxkitError(f"data {name!r}: the labels are names ({', '.join(names[:5])}); leave out "
                               "label_names, or give class ids with them")
        label_names = names
        labels = np.searchsorted(np.asarray(names), np.char.strip(labels.astype(str))).reshape(labels.shape)
    labels = checked_labels(name, inputs, labels)
    classification = labels.dtype.kind in "iub"
    if label_names is not None and classification and int(labels.max()) >= len(label_names):
        raise OnnxkitError(f"data {name!r}: label_names names {len(label_names)} classes, but the labels go up to "
                           f"{int(labels.max())}; give a name for every class")
    parts = split_indices(labels, seed=seed, validation=validation, test=test, stratify=stratifies(labels))
    splits = [
        Split(split_name, {k: v[idx] for k, v in inputs.items()}, labels[idx])
        for split_name, idx in zip(SPLIT_NAMES, parts, strict=True)
    ]
    return Dataset(
        name,
        *splits,
        label_names=label_names,
        task="classification" if classification else "regression",
        columns=columns,
    )


def from_arrays(data: object, *, seed: int = 0, whole: bool = False) -> object:
    """`data` as it is, unless it is a pair `(X, y)`: features (one array, or a dict of arrays keyed by input name; a
    DataFrame too) and labels. Then the Dataset `dataset_from_arrays` makes of them (split by `seed`, for `fit`), or
    with `whole` a Split of every row (for `evaluate` and quantize's `eval_data`)."""
    if not isinstance(data, tuple) or len(data) != 2 or isinstance(data[0], str | bytes | os.PathLike):
        return data
    features, labels = data
    inputs = features if isinstance(features, Mapping) else {"x": features}
    if not whole:
        return dataset_from_arrays("arrays", inputs, labels, seed=seed)
    rows = dataset_from_arrays("arrays", inputs, labels, seed=seed, validation=0, test=0).train
    rows.name = "arrays"
    return rows


def _frame_columns(inputs: Mapping[str, object]) -> tuple[str, ...] | None:
    """The feature columns of a lone DataFrame input by name, which the trained model keeps so that `predict` reads
    a DataFrame by them as it reads a CSV (a reordered one was read by position: setosa answered as virginica);
    None for arrays, or names a CSV's header could not have (numbers, repeats, a column headed as labels)."""
    if len(inputs) != 1:
        return None
    columns = getattr(next(iter(inputs.values())), "columns", None)
    names = [] if columns is None else list(columns)
    if not names or not all(isinstance(n, str) for n in names) or len(set(names)) < len(names):
        return None
    try:
        return None if label_column(names) is not None else tuple(names)
    except OnnxkitError:
        return None
