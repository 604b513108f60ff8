"""Missing values filled inside the model, as scikit-learn's `SimpleImputer(strategy="median")` fills them: where
the training features hold NaN (a CSV's empty, NA or ? cells), the model's first nodes are
`Where(IsNaN(x), median, x)`, with the training split's median of each feature stored as a frozen Buffer. The
trained model then takes NaN wherever it runs; training itself sees the filled values (and standardisation's
statistics are taken on them).

A table's features only: a float `[batch, features]` input; NaN elsewhere (images, sequences) is refused as before.
"""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxkit.data import Dataset, ModelInput, Split
from onnxkit.errors import OnnxkitError
from onnxkit.metadata_keys import IMPUTE_PREFIX as PREFIX
from onnxkit.metadata_keys import IMPUTED_KEY
from onnxkit.train.input_prefix import add_listed, in_front_of_inputs


def gap_medians(dataset: Dataset, specs: list[ModelInput]) -> dict[str, np.ndarray]:
    """For each float `[batch, features]` model input whose array holds NaN in any split, the median of each feature
    over the training split's present values (over all splits' for a feature the training split never holds)."""
    arrays = _arrays(dataset, specs)
    medians = {}
    for name, key in arrays.items():
        splits = [s.inputs[key] for s in (dataset.train, dataset.validation, dataset.test)]
        if not any(np.isnan(a).any() for a in splits):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN feature's median: NaN, said below
            median = np.nanmedian(splits[0].astype(np.float64), axis=0) if len(splits[0]) else \
                np.full(splits[0].shape[1], np.nan)
            everywhere = np.nanmedian(np.concatenate(splits).astype(np.float64), axis=0)
        if np.isnan(everywhere).any():
            j = int(np.argmax(np.isnan(everywhere)))
            column = repr(dataset.columns[j]) if dataset.columns and len(dataset.columns) > j else str(j)
            raise OnnxkitError(f"data {dataset.name!r}: feature {column} of {key!r} is missing (NaN) in every row, so "
                               "no value can fill it; drop that feature")
        medians[name] = np.where(np.isnan(median), everywhere, median).astype(np.float32)
    return medians


def filled(dataset: Dataset, specs: list[ModelInput], medians: dict[str, np.ndarray]) -> Dataset:
    """`dataset` with the NaN of the arrays bound to the inputs in `medians` replaced by their features' medians,
    as the model's first nodes replace them."""
    keys = {key: medians[name] for name, key in _arrays(dataset, specs).items() if name in medians}
    if not keys:
        return dataset

    def fill(split: Split) -> Split:
        inputs = {k: np.where(np.isnan(v), keys[k], v).astype(v.dtype) if k in keys else v
                  for k, v in split.inputs.items()}
        return Split(split.name, inputs, split.labels)

    return replace(dataset, train=fill(dataset.train), validation=fill(dataset.validation), test=fill(dataset.test))


def gaps_line(dataset: Dataset, specs: list[ModelInput], medians: dict[str, np.ndarray]) -> str:
    """The line that says how many values were missing, in which features, and how the model fills them."""
    parts, rows = [], len(dataset.train) + len(dataset.validation) + len(dataset.test)
    for name, key in _arrays(dataset, specs).items():
        if name not in medians:
            continue
        counts = sum(np.isnan(s.inputs[key]).sum(axis=0) for s in (dataset.train, dataset.validation, dataset.test))
        columns = list(dataset.columns) if dataset.columns and len(dataset.columns) == len(counts) else \
            [f"feature {j}" for j in range(len(counts))]
        missing = [(columns[j], int(n)) for j, n in enumerate(counts) if n]
        shown = ", ".join(f"{c!r} ({n} of {rows})" for c, n in missing[:6]) + (", ..." if len(missing) > 6 else "")
        parts.append(f"{len(missing)} column{'s' * (len(missing) > 1)} of {key!r}: {shown}")
    return (f"missing values (empty, NA, NaN) in {'; '.join(parts)}; the model fills each with the training split's "
            "median of its column (its first nodes: Where(IsNaN(x), median, x)), wherever it runs")


def impute_inputs(model: onnx.ModelProto, medians: dict[str, np.ndarray]) -> onnx.ModelProto:
    """A copy of `model` whose inputs named in `medians` pass through `Where(IsNaN(x), median, x)` first."""

    def nodes(name: str, kept: str, dtype: np.dtype) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
        stored = f"{kept}.median"
        return ([helper.make_node("IsNaN", [name], [f"{kept}.missing"], name=f"{PREFIX}/{name}/isnan"),
                 helper.make_node("Where", [f"{kept}.missing", stored, name], [kept], name=f"{PREFIX}/{name}/where")],
                [numpy_helper.from_array(medians[name].astype(dtype), stored)])

    out = in_front_of_inputs(model, PREFIX, medians, nodes)
    add_listed(out, IMPUTED_KEY, medians)
    return out


def _arrays(dataset: Dataset, specs: list[ModelInput]) -> dict[str, str]:
    """The float model inputs of rank 2 bound to one of the dataset's arrays (a model of one input takes the one
    array; others by name): input name -> array name."""
    inputs = dataset.train.inputs
    if len(specs) == 1 and len(inputs) == 1:
        names = {specs[0].name: next(iter(inputs))}
    else:
        names = {s.name: s.name for s in specs if s.name in inputs}
    kinds = {s.name: s for s in specs}
    return {name: key for name, key in names.items()
            if kinds[name].dtype.kind == "f" and inputs[key].ndim == 2 and inputs[key].dtype.kind == "f"}
