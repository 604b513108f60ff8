"""An `.npz` that holds its own splits, as Keras' `mnist.npz` does: `x_train`, `y_train`, `x_test`, `y_test`
(and `x_val` / `x_valid` / `x_validation`, `y_val`, ...; any array names, the labels' among `labels`, `y`, `label`,
`target`, each with a split's suffix). Those rows are the splits; a split the file lacks is carved out of its
train rows by seed, at its usual fraction (an image folder's `train/` beside `test/` is split so too).
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onnxkit.data.images import holds_test_folder
from onnxkit.data.split import (
    SPLIT_NAMES,
    Dataset,
    Split,
    dataset_from_arrays,
    split_indices,
    stratifies,
)
from onnxkit.errors import OnnxkitError, first_few
from onnxkit.label_columns import npz_labels, npz_split


@dataclass(frozen=True)
class FileSplits:
    """A file's arrays by split and name without the suffix (`x_val` -> arrays['validation']['x']), and each split's
    suffix as the file writes it ('val'), for what is said of them."""

    arrays: dict[str, dict[str, np.ndarray]]
    suffixes: dict[str, str]

    def named(self, name: str, split: str) -> str:
        """How the file names (or would name) array `name` of `split`: 'y_val' in a file of x_val."""
        return f"{name}_{self.suffixes.get(split, split)}"


def split_arrays(path: Path, arrays: Mapping[str, np.ndarray]) -> FileSplits | None:
    """The file's own splits (`FileSplits`), when a `_train` array is among its arrays; else None (the file is split
    by seed)."""
    named = {key: npz_split(key) for key in arrays}
    if not any(found and found[1] == "train" for found in named.values()):
        return None
    others = [key for key, found in named.items() if found is None]
    if others:
        raise OnnxkitError(f"{path}: holds {first_few(others)} beside split arrays such as "
                           f"{next(k for k, found in named.items() if found)}; give every array a split's suffix "
                           "(_train, _val, _test), or save class names as label_names")
    splits: dict[str, dict[str, np.ndarray]] = {}
    given: dict[tuple[str, str], str] = {}
    suffixes: dict[str, str] = {}
    for key, (name, split) in named.items():  # type: ignore[misc]
        if (name, split) in given:  # x_val beside x_valid: one would be dropped unsaid
            raise OnnxkitError(f"{path}: holds both {given[name, split]} and {key}, two {name} arrays of the {split} "
                               "split; keep one")
        given[name, split] = key
        suffixes.setdefault(split, key[len(name) + 1:])
        splits.setdefault(split, {})[name] = arrays[key]
    return FileSplits(splits, suffixes)


def holds_test_split(data: object) -> bool:
    """Whether `data` names an .npz that holds its own test split (`x_test`, `y_test`), or an image folder (a test/
    beside train/): the rows eval scores of it by default, as it scores the test split of the data a model trained
    on."""
    if isinstance(data, str | os.PathLike) and Path(data).is_dir():
        return holds_test_folder(Path(data))
    if not isinstance(data, str | os.PathLike) or Path(data).suffix.lower() != ".npz" or not Path(data).is_file():
        return False
    try:  # the archive's names alone (np.load of an .npy named .npz gives one array)
        with zipfile.ZipFile(data) as archive:
            names = [name.removesuffix(".npy") for name in archive.namelist()]
    except (OSError, zipfile.BadZipFile):  # said as the file is read
        return False
    return any(found is not None and found[1] == "test" for found in map(npz_split, names))


def given_splits(path: Path, file: FileSplits, label_names: list[str] | None, *,
                 seed: int, validation: float, test: float) -> Dataset:
    """The dataset of a file's own splits (`split_arrays`); one it lacks is carved out of train by `seed`."""
    splits, named = file.arrays, file.named
    train = splits["train"]
    key = npz_labels(train)
    if key is None:
        shown = ", ".join(named(k, "train") for k in train)
        raise OnnxkitError(f"{path}: no labels among its train arrays ({shown}); save the targets as "
                           f"{named('y', 'train')} (or labels, label or target with that suffix)")
    for split, arrays in splits.items():
        if set(arrays) == set(train) - {key}:  # Kaggle's test set: no labels to score it on
            raise OnnxkitError(f"{path}: its {split} arrays have no {named(key, split)}, the labels that split is "
                               f"scored on; add them, or leave the {split} arrays out (that split is then carved out "
                               "of train)")
        if set(arrays) != set(train):
            raise OnnxkitError(f"{path}: its {split} arrays ({', '.join(sorted(arrays))}) are not its train arrays' "
                               f"({', '.join(sorted(train))}); give every split the same arrays")
    order = [split for split in SPLIT_NAMES if split in splits]
    for split in order:
        if not len(splits[split][key]):  # an empty test split scored nothing; an empty train one crashed
            raise OnnxkitError(f"{path}: its {split} arrays have no rows; " + (
                "give them the training rows" if split == "train" else
                f"give them rows, or leave the {split} arrays out (that split is then carved out of train)"))
    _check_label_kinds(path, key, {split: splits[split][key] for split in order}, named)
    for split in order:  # labels [N, 1] (CIFAR's) are [N], as a file's unsplit labels are: beside y_test [N] too
        labels = splits[split][key]
        splits[split][key] = labels[:, 0] if labels.ndim == 2 and labels.shape[1] == 1 else labels
    joined = {}
    for name in train:
        shapes = {split: splits[split][name].shape[1:] for split in order}
        if len(set(shapes.values())) > 1:
            shown = ", ".join(f"{named(name, split)} {list(shape)}" for split, shape in shapes.items())
            raise OnnxkitError(f"{path}: rows of different shapes ({shown}); give every split rows of one shape")
        _check_scales(path, name, {split: splits[split][name] for split in order}, named)
        joined[name] = np.concatenate([splits[split][name] for split in order])
    labels = joined.pop(key)
    # read whole, so text labels get one numbering over all splits; each split's rows then taken back out
    whole = dataset_from_arrays(path.stem, joined, labels, label_names=label_names, seed=seed, validation=0.0,
                                test=0.0)
    ends = np.cumsum([0, *(len(splits[split][key]) for split in order)])
    rows = {split: np.arange(lo, hi) for split, lo, hi in zip(order, ends[:-1], ends[1:], strict=True)}
    ids = whole.train.labels
    carved = split_indices(ids[rows["train"]], seed=seed, validation=0.0 if "validation" in rows else validation,
                           test=0.0 if "test" in rows else test, stratify=stratifies(ids[rows["train"]]))
    for split, part in zip(SPLIT_NAMES, carved, strict=True):
        if split not in rows or split == "train":
            rows[split] = part
    inputs = whole.train.inputs
    parts = [Split(split, {k: v[rows[split]] for k, v in inputs.items()}, ids[rows[split]]) for split in SPLIT_NAMES]
    return Dataset(whole.name, *parts, label_names=whole.label_names, task=whole.task)


def _check_label_kinds(path: Path, key: str, labels: dict[str, np.ndarray], named: Callable[[str, str], str]) -> None:
    """Refuses splits whose labels are names in one and numbers in another (y_train 0-9, y_test 'zero'-'nine'): read
    together they were 20 classes, the test split's none of the training split's."""
    text = {split: y.dtype.kind in "US" for split, y in labels.items()}
    if len(set(text.values())) > 1:
        names = next(split for split, is_text in text.items() if is_text)
        ids = next(split for split, is_text in text.items() if not is_text)
        shown = first_few(list(dict.fromkeys(str(v) for v in labels[names].ravel()[:100])))
        raise OnnxkitError(f"{path}: {named(key, names)} holds class names ({shown}) but {named(key, ids)} numbers; "
                           "give every split its labels alike, names or class ids")


def _check_scales(path: Path, name: str, arrays: dict[str, np.ndarray], named: Callable[[str, str], str]) -> None:
    """Refuses one split of whole numbers past 1 (integers, or floats holding them: `x.astype('float32')`) beside
    another of floats within [-1, 1]: 0-255 pixels in x_train and x_test / 255 (the model standardised for the one
    scores the other as near black)."""
    unit = [split for split, a in arrays.items() if a.dtype.kind == "f" and _fractions(a[np.isfinite(a)])]
    if not unit:  # the other splits are then not read through
        return
    whole = {split: top for split, a in arrays.items() if split not in unit and (top := _whole_past_one(a))}
    if whole:
        split, top = next(iter(whole.items()))
        raise OnnxkitError(f"{path}: {named(name, split)} holds whole numbers up to {top} but {named(name, unit[0])} "
                           "fractions "
                           f"within [-1, 1], as if divided by {top} alone; scale every split alike (each / {top}, or "
                           "none)")


def _fractions(finite: np.ndarray) -> bool:
    """Whether finite floats lie within [-1, 1], not all whole (zeros alone are no scale)."""
    return bool(finite.size) and np.abs(finite).max() <= 1 and not np.array_equal(finite, np.round(finite))


def _whole_past_one(a: np.ndarray) -> int:
    """The largest value of an array of whole numbers past 1, integers or floats; 0 for any other array."""
    if a.dtype.kind not in "uif" or not a.size:
        return 0
    finite = a[np.isfinite(a)] if a.dtype.kind == "f" else a
    top = finite.max(initial=0)
    return int(top) if top > 1 and (a.dtype.kind != "f" or np.array_equal(finite, np.round(finite))) else 0
