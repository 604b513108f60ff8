"""Named datasets and `load_dataset`, which also reads .npz and .csv files and folders of images.

A module in `onnxkit/data/` adds a dataset by decorating its loader with
`@register_dataset("name", "one-line description")`; the loader takes keyword
arguments `seed`, `validation`, `test` (split fractions) plus its own options
and returns a `Dataset`. A text dataset registers with `text=True` and takes
`tokenizer` and `max_length` options, which `load_dataset(..., model=...)`
fills in from the model that the data is for. Every module of this package is imported on the first
lookup, so a new module registers itself without edits here; heavy optional
packages (tokenizers) must be imported inside the loader, not at module level.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from onnxkit.data.split import Dataset, Split, check_seed, model_inputs
from onnxkit.errors import OnnxkitError, first_few, suggest
from onnxkit.files import COLUMN_FILES, not_a_file, sha256
from onnxkit.label_columns import in_trained_order, label_header, trained_columns
from onnxkit.metadata import metadata
from onnxkit.metadata_keys import LABELS_KEY, PADDING_KEY
from onnxkit.tokenize import fixed_length

Loader = Callable[..., Dataset]
_RELABEL = "correct the data's labels, or build the model with a label for every class (--set labels=...)"
_RENAME_FOLDER = "rename the class folder to one of the model's classes (an image folder's labels are its names)"


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    loader: Loader
    description: str
    text: bool = False


_REGISTRY: dict[str, DatasetEntry] = {}
_discovered = False


def register_dataset(name: str, description: str, *, text: bool = False) -> Callable[[Loader], Loader]:
    """Decorator: make `loader` available as `load_dataset(name)`; `text`: it needs a tokenizer."""

    def add(loader: Loader) -> Loader:
        _REGISTRY[name] = DatasetEntry(name, loader, description, text)
        return loader

    return add


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    import onnxkit.data as package

    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{info.name}")
    _discovered = True


def datasets() -> dict[str, DatasetEntry]:
    """The named datasets, by name."""
    _discover()
    return dict(sorted(_REGISTRY.items()))


def load_dataset(
    name_or_path: str | Path,
    *,
    seed: int = 0,
    validation: float = 0.2,
    test: float = 0.2,
    model: Any = None,
    **options: Any,
) -> Dataset:
    """A named dataset (`iris`, `digits`, `digits-images`, ...), a `.npz` / `.csv` file or a folder of images.

    The split into train/validation/test is deterministic for a given `seed` and
    fractions, so training and a later `onnxkit eval` see the same test split.
    `model`: the `onnx.ModelProto` the data is for; a text dataset is tokenized
    with the tokenizer (and max length) it carries, unless `options` name one. A CSV's `label` option (its label
    column's header) defaults to the one `model` was trained with (`trained_label`).
    """
    from onnxkit.data import formats

    check_seed(seed)  # before a file is read
    text = str(name_or_path)
    split_args = {"seed": seed, "validation": validation, "test": test}
    suffix = Path(text).suffix.lower()
    label, drop = options.pop("label", None), list(options.pop("drop", ()))
    if (label is not None or drop) and suffix not in COLUMN_FILES:
        said, remedy = ((f"label={label!r} names a column", "an .npz keeps its labels in its labels or y array, a "
                         "named dataset its own") if label is not None else
                        (f"drop ({', '.join(map(repr, drop))}) names columns", "save the arrays without them"))
        raise OnnxkitError(f"{said} of a CSV or Parquet table; {text} is neither ({remedy})",
                           params=["label" if label is not None else "drop"])
    if suffix in formats.READERS:
        if suffix in COLUMN_FILES and model is not None:  # a CSV of texts is tokenized as the model's inputs are
            from onnxkit.data.text import tokenizer_options

            options = {**tokenizer_options(model), **options}
        trained = trained_label(model) if label is None and suffix in COLUMN_FILES else None
        if suffix in COLUMN_FILES:
            options["label"] = label if label is not None else trained
            options.update({"drop": drop} if drop else {})
            if model is not None:  # columns named as its inputs are read as them; its categories by their names
                from onnxkit.data.split import model_inputs

                options.setdefault("inputs", model_inputs(model))
                options.setdefault("columns", trained_columns(metadata(model)))
        _check_options(formats.READERS[suffix], options, f"a {suffix} file")
        try:
            dataset = formats.READERS[suffix](Path(text), **split_args, **options)
        except formats.NoHeader:
            if trained is None:
                raise
            # no header to find the trained label column by: read as train reads such a file (the last column), as
            # the features are read by position
            dataset = formats.READERS[suffix](Path(text), **split_args, **{**options, "label": None})
        except formats.NoSuchColumn as e:
            if trained is None:
                raise
            raise OnnxkitError(f"{e}; the model was trained on a column {trained!r}: name this file's label column "
                               "with label=COLUMN (rows without their labels are for predict)") from e
        if suffix in COLUMN_FILES and model is not None:
            dataset = formats.csv_for_model(dataset, model)
        return in_model_order(_padded_as_trained(dataset, model), model)
    entries = datasets()
    if text not in entries and Path(text).is_dir():  # a folder of class folders of images
        from onnxkit.data.images import read_image_folder

        _check_options(read_image_folder, options, "a folder of images")  # none: they went unread
        return in_model_order(read_image_folder(Path(text), **split_args, model=model), model, _RENAME_FOLDER)
    if text not in entries and Path(text).is_file() and suffix == ".gz":
        raise OnnxkitError(f"{text}: a compressed file; decompress it first (gunzip -k {text}), then pass the .csv")
    if text not in entries and Path(text).is_file():  # an .npy, .json, .txt: it was called an unknown dataset
        raise OnnxkitError(f"{text}: data files are .npz, .csv, .tsv or .parquet, not "
                           f"{suffix or 'a file without a suffix'}; "
                           "save the inputs and labels with numpy.savez(path, x=..., labels=...), or as a CSV (images "
                           "go in a folder of class folders)")
    if text not in entries and ("/" in text or os.sep in text):  # a path to nothing (a mistyped folder), a device
        why = "no such file or folder" if not os.path.lexists(text) else not_a_file(Path(text))
        raise OnnxkitError(f"{text}: {why}; pass a .npz, .csv, .tsv or .parquet file, a folder of class "
                           f"folders of images, or a dataset name ({', '.join(entries)})")
    if text not in entries:
        raise OnnxkitError(
            f"unknown dataset {text!r}.{suggest(text, entries)} Built-in datasets: "
            f"{', '.join(entries)}; or pass a .npz or .csv file, or a folder of class folders of images"
        )
    entry = entries[text]
    if entry.text and model is not None:
        from onnxkit.data.text import tokenizer_options

        options = {**tokenizer_options(model), **options}
    _check_options(entry.loader, options, f"dataset {text!r}")
    return in_model_order(_padded_as_trained(entry.loader(**split_args, **options), model), model)


def _check_options(loader: Callable[..., Dataset], options: dict[str, Any], what: str) -> None:
    """Refuse an option `loader` lacks, naming those it has (it was Python's "iris() got an unexpected keyword
    argument 'foo'", naming a function the caller never called)."""
    import inspect

    parameters = inspect.signature(loader).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    own = [n for n, p in parameters.items() if n not in ("path", "root", "seed", "validation", "test", "model")
           and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
    unknown = next((k for k in options if k not in parameters), None)
    if unknown is not None:
        raise TypeError(f"{what} takes no option {unknown!r}.{suggest(unknown, own)} Its options: "
                        f"{', '.join(own) or 'none'} beside seed, validation, test and model")


def _padded_as_trained(dataset: Dataset, model: Any) -> Dataset:
    """Text at its full length for a model trained so (metadata `onnxkit.padding`: a recurrent one) or whose token
    inputs fix their length."""
    if model is None:
        return dataset
    if metadata(model).get(PADDING_KEY) != "max_length" and fixed_length(model_inputs(model)) is None:
        return dataset
    return dataset.with_fixed_shapes()


def data_sha256(path: str | Path) -> str:
    """The SHA-256 that tells a data file (of its bytes) or a folder of images (`images.folder_sha256`) from a
    changed one: training records it, resume, eval and quantize compare."""
    if Path(path).is_dir():
        from onnxkit.data.images import folder_sha256

        return folder_sha256(Path(path))
    return sha256(path)


def trained_label(model: Any) -> str | None:
    """The header of the table column `model` was trained to predict (`label_header`), or None."""
    return None if model is None else label_header(metadata(model))


def model_class_names(model: Any) -> list[str] | None:
    """The names of the classes `model` scores, in its order: its `onnxkit.labels`, else the classes
    of a scikit-learn classifier (text, or numbers as text); None if neither."""
    import json

    from onnxkit.graph_walks import sklearn_classes

    raw = metadata(model).get(LABELS_KEY)
    if raw:
        return [str(n) for n in json.loads(raw)]
    classes = sklearn_classes(model)
    return None if classes is None else [str(c) for c in classes]


def in_model_order(dataset: Dataset, model: Any, remedy: str = _RELABEL) -> Dataset:
    """`dataset` with its named classes numbered as `model`'s `onnxkit.labels` number them (a new
    Dataset when they differ: the given one, perhaps the caller's own, is left as it is).

    Named labels become ids in sorted order of the names the data holds, so a CSV whose rows are all
    'good' would train a model labelled bad,good to answer 'bad' (and one labelled pos,neg would learn
    them swapped). When every class name of the data is one of the model's, the ids
    are the model's; names the model lacks beside ones it has are an error; data whose names are all
    unknown to the model keeps its own order when the model was built with the default 0, 1, ... or
    the data names as many classes (a model fine-tuned to new classes), and is an error else. Numbered
    labels are class values when the model names its classes by numbers other than 0, 1, ... (a scikit-learn
    classifier's, or numbers trained as names, `numbered_classes`: classes 1, 2, 3 answer in columns 0, 1, 2).
    `remedy`: what the error for names the model lacks says to do (an image folder's: rename its folder)."""
    classes = model_class_names(model) if model is not None else None
    names = dataset.label_names
    if classes and names is None:
        return _by_class_value(dataset, model)
    if not classes or not names:
        return dataset
    unknown = [n for n in names if n not in classes]
    placeholders = classes == [str(i) for i in range(len(classes))]
    if names == classes or (len(unknown) == len(names) and (placeholders or len(names) == len(classes))):
        return dataset
    if unknown:
        raise _not_among(dataset, [repr(n) for n in unknown], classes, remedy)
    order = np.array([classes.index(n) for n in names], dtype=np.int64)
    return _relabelled(dataset, lambda labels: order[labels], classes)


def in_trained_columns(dataset: Dataset, model: Any) -> Dataset:
    """`dataset` (a Dataset object of one input, its features named by `columns`: a DataFrame's) with its features
    in the order of the columns `model` trained on, as a CSV file is read (they were taken by position); a column it
    lacks is an error. A new Dataset when they differ."""
    trained = trained_columns(metadata(model)) if model is not None else None
    splits = (dataset.train, dataset.validation, dataset.test)
    if not dataset.columns or not trained or any(type(s) is not Split or len(s.inputs) != 1 or
                                                 next(iter(s.inputs.values())).shape[1:] != (len(dataset.columns),)
                                                 for s in splits):
        return dataset
    order = in_trained_order(list(dataset.columns), trained, f"data {dataset.name!r}")
    if order is None:
        return dataset
    train, validation, test = (Split(s.name, {k: v[:, order] for k, v in s.inputs.items()}, s.labels) for s in splits)
    return replace(dataset, train=train, validation=validation, test=test, columns=tuple(trained))


def _by_class_value(dataset: Dataset, model: Any) -> Dataset:
    """`dataset`'s numbered labels as positions among the model's classes named by whole numbers other than 0, 1,
    ...: a scikit-learn classifier's, or the labels a model trained on (`numbered_classes`; a score no label
    trained keeps a name such as 'class 2')."""
    names = model_class_names(model) or []
    numbered = {int(n): i for i, n in enumerate(names) if n.strip().lstrip("-").isdigit()}
    splits = (dataset.train, dataset.validation, dataset.test)
    if not numbered or all(v == i for v, i in numbered.items()) or any(s.labels.dtype.kind not in "iu" for s in splits):
        return dataset
    values = np.array(sorted(numbered))
    positions = np.array([numbered[v] for v in values])

    def nearest(labels: np.ndarray) -> np.ndarray:  # the index among `values` of each label (the nearest, if absent)
        return np.minimum(np.searchsorted(values, labels), len(values) - 1)

    absent = sorted({int(v) for s in splits for v in s.labels[values[nearest(s.labels)] != s.labels]})
    if absent:
        raise _not_among(dataset, [str(v) for v in absent], names, "correct the data's labels")
    return _relabelled(dataset, lambda labels: positions[nearest(labels)], names)


def numbered_classes(dataset: Dataset, num_classes: int) -> Dataset:
    """`dataset` with whole-number labels that cannot be the ids 0..num_classes-1 of a model's class scores (UCI's
    wine numbers its classes 1, 2, 3; others -1, 0, 1) read as class names: their values in ascending order
    are the ids, each named by its value, so that predict answers with them. Ids, and more values than
    classes, stay as they are (the checks say why they cannot train)."""
    splits = (dataset.train, dataset.validation, dataset.test)
    if dataset.label_names is not None or any(s.labels.dtype.kind not in "iu" or s.labels.ndim != 1 for s in splits):
        return dataset
    labels = np.concatenate([s.labels for s in splits])
    if not labels.size or (labels.min() >= 0 and labels.max() < num_classes):
        return dataset
    values = np.unique(labels)
    if len(values) > num_classes:
        return dataset
    names = [str(v) for v in values]
    read = (f"the labels {first_few(names, 5)} are not class ids (0 to {num_classes - 1}): read as class names, "
            "numbered in ascending order; the trained model answers with them")
    relabelled = _relabelled(dataset, lambda found: np.searchsorted(values, found), names)
    return replace(relabelled, notes=(*dataset.notes, read))


def _not_among(dataset: Dataset, unknown: list[str], classes: list[str], remedy: str) -> OnnxkitError:
    """The error for data labels (`unknown`, as shown) that are none of the model's `classes`."""
    return OnnxkitError(f"data {dataset.name!r}: label{'s' * (len(unknown) > 1)} {first_few(unknown, 5)} "
                        f"{'are' if len(unknown) > 1 else 'is'} not among the model's classes ({', '.join(classes)}); "
                        f"{remedy}")


def _relabelled(dataset: Dataset, relabel: Callable[[np.ndarray], np.ndarray], names: list[str]) -> Dataset:
    """A new Dataset whose splits' labels are `relabel(labels)`, its classes named `names`."""
    train, validation, test = (Split(s.name, s.inputs, relabel(s.labels).astype(np.int64))
                               for s in (dataset.train, dataset.validation, dataset.test))
    return replace(dataset, train=train, validation=validation, test=test, label_names=names)
