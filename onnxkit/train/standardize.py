"""Standardisation as Keras' `Normalization` layer does it: the mean and standard deviation of
each feature, taken on the training split, become the model's first nodes, `(x - mean) / std`,
with the two tensors stored as frozen Buffers. For regression the target is standardised for
training and un-scaled by the model's last nodes, `y * std + mean`. The trained model takes
raw features and returns raw targets wherever it runs.

A feature is a column of a `[batch, features]` input, or a channel of a higher-rank one (axis 1,
`[batch, channels, ...]`, ONNX's layout; the last of a channels-last `[batch, height, width, 1 | 3 | 4]` image
input); where the input leaves axis 1 free (`[batch, 'seq', features]`), a position on its fixed axes. Integer
inputs (token ids) are left alone, and so are float masks: an input holding 0 and one other value (a 0/1 padding
mask, or 0/-1e9 added to attention scores), which scaling would turn into other weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxkit.data import ModelInput, Split
from onnxkit.data.images import image_layouts
from onnxkit.metadata_keys import STANDARDIZE_PREFIX as PREFIX
from onnxkit.train.input_prefix import add_buffers, in_front_of_inputs

TINY = 1e-7  # below this a feature is constant: it is centred, not scaled (scikit-learn's StandardScaler)
SPREAD, FAR = 100.0, 10.0  # unscaled: a std this many times the median std, or a mean / std beyond this
# unscaled whatever the other features: a std this large (make_friedman3's 470 beside 0.29 and 2.9 was
# under SPREAD times their median and trained raw to R² -2.2; a channel of 0-255 images, std 60-80, stays)
LARGE = 100.0
# a mean beyond FAR and beyond this many stds: values that sit on one side of zero, far from it (counts
# with means 1-50, stds 1-7, trained raw to 87% where standardised they reach 97%; 0-255 images stay)
OFFSET = 3.0
# a table of features ([batch, features], not all in [0, 1]) whose median feature's mean lies beyond this many of
# its stds from 0: grades and counts, not centred (MASS' biopsy, nine grades 1-10: 93.4% raw, 98.5% standardised,
# as StandardScaler + scikit-learn's MLP; seattle-weather 66.2 -> 67.6%; scikit-learn's digits, 0-16, 97.2 -> 97.5%;
# iris 96.7 -> 93.3%, one row of 30, scikit-learn MLP's figure); images whose channels' means lie beyond it, as
# natural photos' do in [0, 1] (1.5-1.9 stds: PyTorch users Normalize them), also: a torchvision ConvNeXt or ViT
# export trained on such raw pixels stayed at chance, as in PyTorch (digits-images, 0.81 stds, stays raw)
OFF_CENTRE = 1.0
# unscaled: every feature's std below this (make_classification x 1e-4 trained raw to 52% where standardised
# it reaches 85%), or the targets' (make_regression's y x 1e-4, std 0.014: R² -0.02 raw, 0.99 standardised);
# pixels in [0, 1] (std 0.3-0.4) and targets in (0, 1) stay
SMALL = 0.05


@dataclass(frozen=True)
class Scale:
    """A mean and a standard deviation per feature, shaped to broadcast against the tensor."""

    mean: np.ndarray
    std: np.ndarray


def _axes(array: np.ndarray, shape: tuple | None = None) -> tuple[int, ...]:
    """The axes a feature's statistics are taken over: all but the columns (rank 2) or channels (axis 1, or the
    last of a [batch, height, width, 1 | 3 | 4] input). Where
    the model's input `shape` leaves that axis free (a PyTorch export's [batch, 'seq', features]), all
    but its fixed axes past the batch: statistics per sequence position would not fit another length."""
    if shape and len(shape) == array.ndim > 1 and not isinstance(shape[1], int):
        return tuple(a for a in range(array.ndim) if a == 0 or not isinstance(shape[a], int))
    if shape and len(shape) == array.ndim and image_layouts(shape)[:1] == [True]:
        return 0, 1, 2  # channels-last images, [batch, height, width, channels] (Keras'): per channel too
    return (0,) if array.ndim <= 2 else (0, *range(2, array.ndim))


def _moments(array: np.ndarray, shape: tuple | None = None,
             axes: tuple[int, ...] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std in float64, shaped to broadcast against one row."""
    values = array.astype(np.float64)
    axes = _axes(values, shape) if axes is None else axes
    with np.errstate(invalid="ignore", over="ignore"):  # NaN, inf: the data's checks refuse them, in one line
        return values.mean(axis=axes, keepdims=True)[0], values.std(axis=axes, keepdims=True)[0]


def scale_of(array: np.ndarray, shape: tuple | None = None, axes: tuple[int, ...] | None = None) -> Scale:
    """Per-feature mean and std (stored float32; 1 for a constant feature) of a [rows, ...] array
    that a model input of `shape` takes (or over `axes`)."""
    mean, std = _moments(array, shape, axes)
    std[std < TINY] = 1.0
    return Scale(mean.astype(np.float32), std.astype(np.float32))


def _is_mask(array: np.ndarray) -> bool:
    """Whether `array` holds 0 and one other value only (see the module docstring)."""
    others = array[array != 0]
    return others.size < array.size and (others.size == 0 or bool((others == others.flat[0]).all()))


def _float_features(train: Split, specs: list[ModelInput]) -> dict[str, np.ndarray]:
    bound = train.feeds_for(specs).inputs
    return {s.name: bound[s.name] for s in specs
            if s.dtype.kind == "f" and bound[s.name].ndim >= 2 and not _is_mask(bound[s.name])}


def input_scales(train: Split, specs: list[ModelInput]) -> dict[str, Scale]:
    """The scale of every float model input, from the training split bound to `specs`."""
    shapes = {s.name: s.shape for s in specs}
    return {name: scale_of(array, shapes[name]) for name, array in _float_features(train, specs).items()}


def standardizes_itself(model: onnx.ModelProto) -> bool:
    """Whether `model` scales what it takes itself: it holds a standardization `standardize_inputs` or
    `unscale_output` put there (it was trained with standardize on), or an input of it goes straight
    into a scikit-learn scaler (an ai.onnx.ml Scaler: a Pipeline's StandardScaler, MinMaxScaler)."""
    if any(t.name.startswith(f"{PREFIX}.") for t in model.graph.initializer):
        return True
    inputs = {i.name for i in model.graph.input}
    return any(n.op_type == "Scaler" and n.domain == "ai.onnx.ml" and n.input[0] in inputs for n in model.graph.node)


def standardize_inputs(model: onnx.ModelProto, scales: dict[str, Scale]) -> onnx.ModelProto:
    """A copy of `model` whose inputs named in `scales` pass through `(x - mean) / std` first."""

    def nodes(name: str, scaled: str, dtype: np.dtype) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
        mean, std = f"{scaled}.mean", f"{scaled}.std"
        return ([helper.make_node("Sub", [name, mean], [f"{scaled}.centred"], name=f"{PREFIX}/{name}/sub"),
                 helper.make_node("Div", [f"{scaled}.centred", std], [scaled], name=f"{PREFIX}/{name}/div")],
                [numpy_helper.from_array(scales[name].mean.astype(dtype), mean),
                 numpy_helper.from_array(scales[name].std.astype(dtype), std)])

    return in_front_of_inputs(model, PREFIX, scales, nodes)


def unscale_output(model: onnx.ModelProto, output: str, scale: Scale) -> onnx.ModelProto:
    """A copy of `model` whose output `output` is `y * std + mean` of what it computed before."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    inner = f"{PREFIX}.{output}.standardized"
    for node in graph.node:
        node.output[:] = [inner if o == output else o for o in node.output]
        node.input[:] = [inner if i == output else i for i in node.input]
    mean, std = f"{PREFIX}.{output}.mean", f"{PREFIX}.{output}.std"
    graph.initializer.extend([numpy_helper.from_array(scale.mean, mean), numpy_helper.from_array(scale.std, std)])
    graph.node.extend([
        helper.make_node("Mul", [inner, std], [f"{PREFIX}.{output}.scaled"], name=f"{PREFIX}/{output}/mul"),
        helper.make_node("Add", [f"{PREFIX}.{output}.scaled", mean], [output], name=f"{PREFIX}/{output}/add"),
    ])
    add_buffers(out, [mean, std])
    return out


def scaled_targets(labels: np.ndarray, scale: Scale) -> np.ndarray:
    """Regression targets standardised with `scale` (float32)."""
    return ((labels.astype(np.float64) - scale.mean) / scale.std).astype(np.float32)


# ops whose outputs are never negative: a regression ending in one (a PyTorch nn.ReLU or nn.Softplus after the last
# Linear, for counts or prices) cannot answer centred targets below 0
NON_NEGATIVE = frozenset({"Relu", "Softplus", "Exp", "Abs"})


def non_negative_output(graph: onnx.GraphProto, output: str) -> bool:
    """Whether `output` comes from an op whose values are never negative (NON_NEGATIVE), or from PyTorch's softplus
    as the dynamo exporter writes it, Where(x > 20, x, Softplus(x))."""
    node = _producer(graph, output)
    if node is not None and node.op_type == "Where":
        inner = _producer(graph, node.input[2])
        return inner is not None and inner.op_type == "Softplus" and inner.input[0] == node.input[1]
    return node is not None and node.op_type in NON_NEGATIVE and node.domain in ("", "ai.onnx")


def _column(columns: Sequence[str] | None, values: np.ndarray, array: np.ndarray) -> str:
    """The table column holding the largest of per-column `values` as text, ` (column 'proline')`, where
    `columns` name a 2-D `array`'s columns; else ''."""
    if columns is None or array.ndim != 2 or len(columns) != array.shape[1] or values.size != len(columns):
        return ""
    return f" (column {columns[int(np.argmax(values))]!r})"


def _producer(graph: onnx.GraphProto, value: str) -> onnx.NodeProto | None:
    return next((n for n in graph.node if value in n.output), None)


def uncentred(scale: Scale) -> Scale:
    """`scale` dividing by the std without centring: targets >= 0 stay so, for an output that cannot be negative
    (centred, diabetes' progression through a final ReLU trained to R² 0.30, raw 0.43)."""
    return Scale(np.zeros_like(scale.mean), scale.std)


def target_scale(labels: np.ndarray, shape: tuple | None = None) -> Scale:
    """The scale of regression targets: one per target column ([N] targets: one); of targets laid out as an output
    of `shape` of rank 3 or more, one per value on its fixed axes, a free one pooled (a [batch, 'seq', 1] output's:
    one for all steps; per column of [N, T * 1] they broadcast to [N, T, T] and training failed in ONNX Runtime)."""
    if labels.ndim <= 2 or shape is None:
        return scale_of(labels.reshape(len(labels), -1))
    return scale_of(labels, axes=tuple(a for a, d in enumerate(shape) if a == 0 or not isinstance(d, int)))


def unscaled(train: Split, specs: list[ModelInput], regression: bool, offset: float = OFFSET,
             small: float = SMALL, off_centre: float = OFF_CENTRE, columns: Sequence[str] | None = None) -> str | None:
    """What is clearly unscaled among the float features (or regression targets): a feature's std
    over LARGE or over SPREAD times the median one (near-constant features do not count), every one
    under `small`, a mean beyond FAR and beyond `offset` stds, or a table (not all in [0, 1]) or images in [0, 1]
    whose median feature's (channel's) mean lies beyond `off_centre` stds from 0; targets beyond FAR or all under
    SMALL. None when nothing is. A table's `columns` (a CSV's headers) name its widest and farthest ones."""
    found, shapes = [], {s.name: s.shape for s in specs}
    for name, array in _float_features(train, specs).items():
        if not np.isfinite(array).all():
            continue  # training refuses it, with the place of the first bad value
        mean, std = (np.abs(m.ravel()) for m in _moments(array, shapes[name]))
        varying = np.sort(std[std >= TINY] if (std >= TINY).any() else np.ones(1))
        median = _middle(varying)
        off = np.sort(mean[std >= TINY] / std[std >= TINY]) if (std >= TINY).any() else np.zeros(1)
        in_unit = array.min() >= 0 and array.max() <= 1  # pixels, shares, flags: scaled as they are
        images = array.ndim == 4 and in_unit  # [batch, channels, height, width] pixels in [0, 1], as image folders
        # are read: far from 0, they are not centred (0-255 ones stay as they were judged: a model may rescale them)
        centre = _middle(off) if (array.ndim == 2 and not in_unit) or images else 0.0
        if not small <= varying[-1] <= min(LARGE, SPREAD * median) or ((mean > FAR) & (mean > offset * std)).any() \
                or centre > off_centre:
            found.append(f"feature {name!r}: stds up to {varying[-1]:.3g}{_column(columns, std, array)}, "
                         f"median {median:.3g}, means up to {mean.max():.3g}{_column(columns, mean, array)}"
                         + (f", the median one {centre:.2g} stds from 0" if centre > off_centre else ""))
    if regression and train.labels.dtype.kind in "iuf" and np.isfinite(train.labels).all():
        scale = target_scale(train.labels)
        if np.abs(scale.mean).max() > FAR or not SMALL <= scale.std.max() <= FAR:
            found.append(f"targets: mean {float(scale.mean.ravel()[0]):.3g}, std {float(scale.std.ravel()[0]):.3g}")
    return "; ".join(found) or None


def _middle(ordered: np.ndarray) -> float:
    """The median of values sorted ascending (np.median imports numpy.ma, ~10 ms)."""
    return float(ordered[(len(ordered) - 1) // 2] + ordered[len(ordered) // 2]) / 2
