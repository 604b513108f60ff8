"""Reading and writing a model's `metadata_props`, where onnxkit keeps labels, task,
recipe, tokenizer and provenance. Values that are not strings are stored as JSON."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from onnxkit.metadata_keys import IMPUTE_PREFIX, IMPUTED_KEY, TRAINING_KEY

if TYPE_CHECKING:
    import onnx


def metadata(model: onnx.ModelProto) -> dict[str, str]:
    """metadata_props as a dict of the stored strings."""
    return {p.key: p.value for p in model.metadata_props}


def read_metadata(model: onnx.ModelProto) -> dict[str, Any]:
    """metadata_props as a dict, JSON values decoded (other strings kept as they are)."""
    out: dict[str, Any] = {}
    for key, value in metadata(model).items():
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def training_summary(model: onnx.ModelProto) -> dict[str, Any]:
    """What onnxkit's training recorded of the run that made `model` (`onnxkit.training`: its data, split seed,
    loss, label column, ...); empty for a model it did not train."""
    return json.loads(metadata(model).get(TRAINING_KEY, "{}"))


def imputed_medians(model: onnx.ModelProto) -> dict[str, Any]:
    """The medians with which a model fills its inputs' NaN itself (`train.impute`: it says which inputs in
    `onnxkit.imputed`), as numpy arrays by input name; {} for a model that fills none."""
    from onnx import numpy_helper

    names = json.loads(metadata(model).get(IMPUTED_KEY, "[]"))
    found = {t.name: t for t in model.graph.initializer}
    return {name: numpy_helper.to_array(found[f"{IMPUTE_PREFIX}.{name}.median"]) for name in names
            if f"{IMPUTE_PREFIX}.{name}.median" in found}


def set_metadata(model: onnx.ModelProto, entries: Mapping[str, Any], *, keep: bool = True) -> None:
    """Set `entries` (JSON for non-strings), replacing those keys; `keep=False` drops all others."""
    props = metadata(model) if keep else {}
    props.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in entries.items()})
    del model.metadata_props[:]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
