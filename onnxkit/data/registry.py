"""Named datasets and `load_dataset`, which also reads .npz and .csv files.

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
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onnxkit.data.split import Dataset
from onnxkit.errors import OnnxkitError, suggest

Loader = Callable[..., Dataset]


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
    """A named dataset (`iris`, `digits`, `digits-images`, ...) or a `.npz` / `.csv` file.

    The split into train/validation/test is deterministic for a given `seed` and
    fractions, so training and a later `onnxkit eval` see the same test split.
    `model`: the `onnx.ModelProto` the data is for; a text dataset is tokenized
    with the tokenizer (and max length) it carries, unless `options` name one.
    """
    from onnxkit.data import formats

    text = str(name_or_path)
    split_args = {"seed": seed, "validation": validation, "test": test}
    suffix = Path(text).suffix.lower()
    if suffix in formats.READERS:
        if suffix == ".csv" and model is not None:  # a CSV of texts is tokenized as the model's inputs are
            from onnxkit.data.text import tokenizer_options

            options = {**tokenizer_options(model), **options}
        return formats.READERS[suffix](Path(text), **split_args, **options)
    entries = datasets()
    if text not in entries and Path(text).is_dir():
        raise OnnxkitError(f"{text}: a folder, not a data file; pass a .npz or .csv file or a dataset name")
    if text not in entries and Path(text).is_file():  # an .npy, .json, .txt: it was called an unknown dataset
        raise OnnxkitError(f"{text}: data files are .npz or .csv, not {suffix or 'a file without a suffix'}; "
                           "save the inputs and labels with numpy.savez(path, x=..., labels=...)")
    if text not in entries:
        raise OnnxkitError(
            f"unknown dataset {text!r}.{suggest(text, entries)} Built-in datasets: "
            f"{', '.join(entries)}; or pass a .npz or .csv file"
        )
    entry = entries[text]
    if entry.text and model is not None:
        from onnxkit.data.text import tokenizer_options

        options = {**tokenizer_options(model), **options}
    return entry.loader(**split_args, **options)
