"""The model `fit` trains when it is given data and no model: a zoo recipe sized to the data.

A table (one `[rows, features]` input: a .csv/.tsv/.npz file, a built-in table such as wine) gets `tabular-mlp`,
with an output per class (or per target, for regression); images (a folder of class folders, digits-images) get
`image-cnn`, sized to the images and their classes (arrays of images too: [N, H, W], [N, C, H, W] or Keras'
[N, H, W, C]). Text is refused with the text models to build instead: which
tokenizer and how large a model are the user's to choose.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from onnxkit.categories import column_of
from onnxkit.data import Dataset, load_dataset
from onnxkit.data.images import image_layouts
from onnxkit.data.text import NeedsTokenizer
from onnxkit.errors import OnnxkitError

MAX_GUESSED_CLASSES = 20  # unnamed whole-number labels of more values are a measurement (`_measured`)


@dataclass(frozen=True)
class DefaultModel:
    """The zoo recipe and options a model was built with for the data, and the line that says so."""

    recipe: str
    options: dict[str, Any]
    data: str  # the data's name or path, as given
    shape: str  # 'an MLP 13 -> 64 -> 64 -> 3', as the line shows it
    sized_to: str  # '13 features and 3 classes'
    standardize: bool | None = None  # True: the data needs it (images of pixels past 1); None: as fit judges it

    def command(self, out: str | os.PathLike) -> str:
        """The `onnxkit build` command that builds the same model into `out`."""
        sets = " ".join(f"--set {k}={v}" for k, v in self.options.items())
        return f"onnxkit build {self.recipe} {sets} -o {out}"

    def line(self, out: str | os.PathLike) -> str:
        """What the run says first: the model built, for what, and how to build it (into `out`)."""
        return f"no model given: {self.shape} for {self.data}'s {self.sized_to} ({self.command(out)})"


def text_models(data: str) -> str:
    """How to train on text data, which train builds no model for: the text models, and the commands."""
    return ("build a text model and train it, e.g. the pretrained MiniLM: onnxkit build bert-classifier --set "
            f"pretrained=all-MiniLM-L6-v2 --set num_classes=N -o bert.onnx, then onnxkit train bert.onnx {data} (or "
            "text-transformer, small and trained from scratch, with --tokenizer PATH/tokenizer.json)")


def unmodelled_data(data: str | os.PathLike, *, seed: int, label: str | None, drop: Sequence[str] = ()) -> Dataset:
    """`data` read as no model shapes it (images at one size: theirs, or a square they are resized to); text is
    refused (`text_models`)."""
    try:
        return load_dataset(data, seed=seed, **({"label": label} if label is not None else {}), drop=drop)
    except NeedsTokenizer:
        raise OnnxkitError(f"{data} is text, and train picks no model for text: {text_models(str(data))}") from None


def default_model(dataset: Dataset, data: str, loss: str | None = None,
                  standardize: bool | None = None) -> tuple[onnx.ModelProto, DefaultModel]:
    """The zoo model for `dataset` (named `data` in what is said), built, and how: `tabular-mlp` for a table,
    `image-cnn` for images; a one-line error for data of other shapes. A regression `loss` (mse, l1) makes it a
    regression model, as do whole-number labels of too many values to be classes (`measured`), unless `loss` is
    cross-entropy. `standardize=False` (the user's) is what the line says of pixels past 1."""
    inputs, labels = dataset.train.inputs, dataset.train.labels
    x = next(iter(inputs.values())) if len(inputs) == 1 else None
    measured = loss is None and dataset.task != "regression" and _measured(dataset)
    regression = dataset.task == "regression" or loss in ("mse", "l1") or measured
    pictured = x is not None and (x.ndim == 3 or x.ndim == 4 and bool(image_layouts(x.shape)))
    if pictured and loss is None and dataset.task == "regression" and labels.ndim == 1 and \
            np.all(labels == np.round(labels)):  # class ids saved as floats (a torch tensor's); not a series' targets
        raise OnnxkitError(f"{data} holds images with labels of floats (whole numbers), regression targets, and train "
                           "builds image models for classes: save class ids as integers (y.astype(np.int64)), or "
                           f"build a model for the targets and train that: onnxkit train MODEL.onnx {data}")
    images = pictured and not regression
    if x is None or x.ndim != 2 and not images or x.dtype.kind not in "fiub" or (not regression and labels.ndim != 1):
        shown = ", ".join(f"{k} {list(v.shape[1:])}" for k, v in inputs.items())
        raise OnnxkitError(f"{data} holds {shown or 'no inputs'} a row: train picks a model only for one table of "
                           "features (x [rows, features]) with a class or targets a row, or for images of classes "
                           "([N, H, W], or [N, C, H, W] / [N, H, W, C] of 1, 3 or 4 channels); "
                           "build a model for it (onnxkit models lists the zoo) and train that: onnxkit train "
                           f"MODEL.onnx {data}")
    if regression:
        outputs = 1 if labels.ndim == 1 else int(np.prod(labels.shape[1:]))
        sized_to = f"{outputs} target{'s' * (outputs != 1)}" + (
            f" ({measured} whole numbers: a measurement, not classes; --loss ce classifies them)" if measured else "")
    else:
        outputs = _classes(dataset)
        sized_to = f"{outputs} classes"
    if images:
        return _image_model(x, outputs, data, sized_to, standardize)
    defaults = _defaults("tabular-mlp")
    options = {"features": x.shape[1], "outputs": outputs, **({"task": "regression"} if regression else {})}
    shape = " -> ".join(map(str, [x.shape[1], *[defaults["hidden"]] * defaults["layers"], outputs]))
    return _build("tabular-mlp", options), DefaultModel("tabular-mlp", options, data, f"an MLP {shape}",
                                                          f"{_features(x.shape[1], dataset.columns)} and {sized_to}")


def _image_model(images: np.ndarray, classes: int, data: str, sized_to: str,
                 standardize: bool | None) -> tuple[onnx.ModelProto, DefaultModel]:
    """`image-cnn` for [N, H, W] (gray), [N, C, H, W] or [N, H, W, C] images (Keras' layout, which the model then
    takes), described by its convolutions' widths."""
    layouts = image_layouts(images.shape)
    if images.ndim == 3:  # the model's [batch, 1, H, W] input takes them as they are (a unit axis added)
        (_, height, width), channels, last = images.shape, 1, False
    else:
        last = layouts[0]
        height, width, channels = images.shape[1:] if last else (*images.shape[2:], images.shape[1])
    options = {"channels": channels, "height": height, "width": width, "num_classes": classes,
               **({"channels_last": True} if last else {})}
    proto = _build("image-cnn", options)
    weights = {t.name: t.dims for t in proto.graph.initializer}
    filters = [str(weights[n.input[1]][0]) for n in proto.graph.node if n.op_type == "Conv"]
    taken = f"{height}x{width}x{channels} (channels last)" if last else f"{channels}x{height}x{width}"
    if len(layouts) > 1:  # [N, 3, 3, 3]: it was read channels first, unsaid
        taken += (f" (channels first, assumed: {list(images.shape[1:])} reads channels last too; to take them so, "
                  "add --set channels_last=True to the build command that ends this line and train that model)")
    convolved = f"conv 3x3 + max-pool x{len(filters)} ({', '.join(filters)} filters)" if filters else \
        "no convolution (a side under 2 pixels)"  # it said 'max-pool x0 ( filters)'
    shape = f"a CNN {taken} -> {convolved} -> {_defaults('image-cnn')['hidden']} -> {classes}"
    # 0-255 pixels (a Keras array's) trained raw: 89.7% on digits where in [0, 1] they reach 92.2%
    past_one = bool(images.max(initial=0) > 1)
    scaled = "trained as they are (--no-standardize)" if standardize is False else "standardised in the model"
    pixels = f"{height}x{width} images (pixels up to {images.max()}, {scaled})" if past_one else \
        f"{height}x{width} images"  # it said 'standardised' under --no-standardize too
    return proto, DefaultModel("image-cnn", options, data, shape, f"{pixels} and {sized_to}", past_one or None)


def _features(count: int, columns: tuple[str, ...] | None) -> str:
    """'10 features', and how many of them stand for category or date columns (`onnxkit.categories`): '10 features
    (2 category columns as 5, 1 date column as 4)'."""
    read = [column_of(name) for name in columns or ()]
    said = [f"{len(set(found))} {kind} column{'s' * (len(set(found)) > 1)} as {len(found)}"
            for kind in ("category", "date") if (found := [column for column, as_ in read if as_ == kind])]
    return f"{count} features" + (f" ({', '.join(said)})" if said else "")


def _measured(dataset: Dataset) -> int:
    """How many values unnamed whole-number labels take when they read as a measurement, not class ids, else 0: on
    average fewer than 20 training rows each, and either too many for classes (more than `MAX_GUESSED_CLASSES`:
    diabetes' 166 values in 266 rows, an age in years) or three or more from 2 up that leave most ids below the
    largest unused (linnerud's pulse, 11 values from 46 to 74 in 20 rows, made 75 classes, 64 of them never seen;
    codes such as 200, 404 and 500 over many rows stay classes)."""
    labels = dataset.train.labels
    if dataset.label_names or labels.ndim != 1:
        return 0
    values = np.unique(labels)
    sparse = len(values) >= 3 and values.min() >= 2 and 2 * len(values) < values.max() + 1
    measured = len(values) * 20 > len(labels) and (len(values) > MAX_GUESSED_CLASSES or sparse)
    return len(values) if measured else 0


def _classes(dataset: Dataset) -> int:
    """The classes of a classification dataset: its class names, else one past its largest class id."""
    largest = max(int(s.labels.max(initial=0)) for s in (dataset.train, dataset.validation, dataset.test))
    return max(len(dataset.label_names or ()), largest + 1, 2)


def _defaults(recipe: str) -> dict[str, Any]:
    """A zoo recipe's default options."""
    from onnxkit.zoo import options

    return {k: p.default for k, p in options(recipe).items()}


def _build(recipe: str, options: dict[str, Any]) -> onnx.ModelProto:
    from onnxkit.zoo import build_model

    return build_model(recipe, **options)
