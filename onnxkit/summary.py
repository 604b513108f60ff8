"""What is inside an ONNX file: inputs/outputs, opsets, parameters, operator histogram, metadata."""

from __future__ import annotations

import collections
import contextlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from onnxkit.dims import dims_of
from onnxkit.files import model_location, weight_files
from onnxkit.graph_walks import FLOAT_TYPES, every_node, subgraphs
from onnxkit.metadata import metadata
from onnxkit.metadata_keys import BUFFERS_KEY


def _dims(value: onnx.ValueInfoProto) -> list[int | str] | None:
    """The tensor's dimensions ([] a scalar's), '?' for a free one (`onnxkit.dims`); None where ONNX records no
    shape: a sequence, a map, an unknown rank."""
    dims = dims_of(value.type)
    return None if dims is None else ["?" if d is None else d for d in dims]


def _type_name(t: onnx.TypeProto) -> str:
    """'float32' for a tensor's elements; 'seq(map(string, float32))' for the sequence of maps a
    scikit-learn classifier's probabilities come as (skl2onnx's ZipMap)."""
    kind = t.WhichOneof("value")
    if kind == "sequence_type":
        return f"seq({_type_name(t.sequence_type.elem_type)})"
    if kind == "map_type":
        key = helper.tensor_dtype_to_string(t.map_type.key_type).removeprefix("TensorProto.").lower()
        return f"map({key}, {_type_name(t.map_type.value_type)})"
    elem = getattr(t, kind).elem_type if kind in ("tensor_type", "sparse_tensor_type") else 0
    if elem == onnx.TensorProto.STRING:
        return "string"
    return np.dtype(helper.tensor_dtype_to_np_dtype(elem)).name if elem else str(kind or "unknown")


def _io(values: Any) -> list[dict[str, Any]]:
    return [{"name": v.name, "dtype": _type_name(v.type), "shape": _dims(v)} for v in values]


def summarize(model: str | os.PathLike | onnx.ModelProto, path: str | os.PathLike | None = None) -> dict[str, Any]:
    """A JSON-ready description of `model`, a path or a ModelProto (file size too when `path` is given, or
    `model` is one): what `onnxkit inspect --json` prints."""
    if isinstance(model, str | os.PathLike):
        from onnxkit.files import check_external_data, load_model

        model, path = load_model(model, load_weights=False), model  # its tensors name the weight files beside it
        check_external_data(model, Path(path))
    elif not isinstance(model, onnx.ModelProto):  # it was "'int' object has no attribute 'graph'"
        raise TypeError(f"model must be a .onnx path or an onnx.ModelProto, not {type(model).__name__}")
    g = model.graph
    initializer_names = {i.name for i in g.initializer}
    nodes = list(every_node(g))
    tensors = [*g.initializer, *(t for n in nodes for sub in subgraphs(n) for t in sub.initializer)]  # If's too
    count = parameter_count(model)
    nbytes = sum(
        int(np.prod(i.dims)) * np.dtype(helper.tensor_dtype_to_np_dtype(i.data_type)).itemsize
        for i in tensors
    )
    ops = collections.Counter(
        f"{n.domain}.{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type for n in nodes
    )
    info: dict[str, Any] = {
        "name": g.name,
        "ir_version": model.ir_version,
        "opsets": {(o.domain or "ai.onnx"): o.version for o in model.opset_import},
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "inputs": _io(i for i in g.input if i.name not in initializer_names),
        "outputs": _io(g.output),
        "parameters": count,
        "parameter_bytes": nbytes,
        "initializers": len(tensors),
        # weights held as float attributes: a scikit-learn model's LinearClassifier, tree ensembles (ai.onnx.ml)
        "attribute_weights": sum(len(a.floats) for n in nodes if n.domain not in ("", "ai.onnx") for a in n.attribute),
        # float tensors of Constant nodes, as paddle2onnx and spox write every weight (If branches' too)
        "constant_weights": sum(int(np.prod(a.t.dims)) for n in nodes if n.op_type == "Constant" and n.domain in
                                ("", "ai.onnx") for a in n.attribute if a.name == "value" and a.t.dims
                                and a.t.data_type in FLOAT_TYPES),
        "nodes": len(nodes),  # those inside If, Loop and Scan bodies too
        "operators": dict(ops.most_common()),
        "metadata": _shown_metadata(model),
    }
    if path is not None:
        info["file_bytes"], info["external_data"] = _file_bytes(Path(path), model, nbytes)
    return info


_SCALES_AT = {"QuantizeLinear": (1, 2), "DequantizeLinear": (1, 2), "MatMulInteger": (2, 3), "ConvInteger": (2, 3),
              "MatMulNBits": (2, 3), "DynamicQuantizeMatMul": (2, 3), "QAttention": (3, 4, 6, 7),
              "Clip": (1, 2)}  # a Clip's bounds: Constant nodes that ORT's optimizer folds into initializers
_EIGHT_BITS = frozenset({TensorProto.INT8, TensorProto.UINT8})


_NO_WEIGHTS = (onnx.TensorProto.INT64, onnx.TensorProto.BOOL)  # shapes, axes, indices, masks: a graph's constants


def parameter_count(model: onnx.ModelProto) -> int:
    """The model's parameters, as `summarize` counts them (`_parameter_count`), less the buffers its metadata
    declares (`onnxkit.buffers`: statistics never trained, such as those training standardises inputs with)."""
    nodes = list(every_node(model.graph))
    buffers = set(json.loads(metadata(model).get(BUFFERS_KEY, "[]")))
    tensors = [*model.graph.initializer, *(t for n in nodes for sub in subgraphs(n) for t in sub.initializer)]
    return _parameter_count(nodes, [t for t in tensors if t.name not in buffers])


def _parameter_count(nodes: list[onnx.NodeProto], tensors: list[onnx.TensorProto]) -> int:
    """The number of weights the model computes with (int64 and bool tensors are the graph's constants, shapes and
    indices, as a dynamo export keeps them): a 4-bit MatMulNBits weight packs two in a byte and
    counts as its K x N (not its bytes); quantization's scales and zero points do not count (so a model and
    its int8 or int4 form count alike): those at the inputs `_SCALES_AT` names; past the data input of QGemm and
    QLinear* ops, the float tensors and the 8-bit ones of rank <= 1; a dynamic int8 weight's scale, multiplied
    with a DynamicQuantizeLinear's. BatchNorm's running statistics are buffers, not parameters (PyTorch's
    sum(p.numel()) leaves them out too)."""
    by_name = {t.name: t for t in tensors}
    packed, side, input_scales = {}, set(), set()
    for node in nodes:
        side.update(node.input[i] for i in _SCALES_AT.get(node.op_type, ()) if i < len(node.input))
        if node.op_type == "MatMulNBits" and node.domain == "com.microsoft":
            sizes = {a.name: a.i for a in node.attribute}
            packed[node.input[1]] = sizes.get("K", 0) * sizes.get("N", 0)
        elif node.op_type == "QGemm" or node.op_type.startswith("QLinear"):
            side.update(name for name in node.input[1:] if (t := by_name.get(name)) is not None and (
                t.data_type in FLOAT_TYPES or t.data_type in _EIGHT_BITS and len(t.dims) <= 1))
        elif node.op_type == "DynamicQuantizeLinear" and len(node.output) > 1:
            input_scales.add(node.output[1])
        elif node.op_type == "BatchNormalization":  # running mean and variance: buffers, as PyTorch counts them
            side.update(node.input[3:5])
    side.update(i for n in nodes if n.op_type == "Mul" and input_scales.intersection(n.input) for i in n.input)
    return sum(packed.get(t.name, int(np.prod(t.dims))) for t in tensors
               if t.name not in side and t.data_type not in _NO_WEIGHTS)


def _shown_metadata(model: onnx.ModelProto) -> dict[str, Any]:
    """metadata_props by key, a JSON object or list decoded and every other value the string stored ('1.10'
    stays '1.10', 'NaN' a string: decoded, they read 1.1 and a bare NaN that is no JSON)."""
    shown: dict[str, Any] = {}
    for key, value in metadata(model).items():
        decoded = None
        if value.lstrip()[:1] in ("{", "["):
            with contextlib.suppress(ValueError):
                decoded = json.loads(value, parse_constant=str)
        shown[key] = value if decoded is None else decoded
    return shown


def _file_bytes(path: Path, model: onnx.ModelProto, parameter_bytes: int) -> tuple[int, list[str]]:
    """The model file's size plus that of the weight files beside it that its tensors name, and those
    names: read from `model` as loaded without its weights (`load_model(..., load_weights=False)`); loaded
    with them, its tensors no longer say where their data came from, so a file smaller than its
    parameters is read again without them."""
    if not weight_files(model) and os.path.getsize(path) < parameter_bytes:
        model = onnx.load(str(path), load_external_data=False)
    return _with_weight_files(path, model), weight_files(model)


def file_bytes(path: str | os.PathLike) -> int:
    """The size on disk of the model file at `path` and of the weight files beside it that its tensors name."""
    return _with_weight_files(path, onnx.load(str(path), load_external_data=False))


def _with_weight_files(path: str | os.PathLike, model: onnx.ModelProto) -> int:
    """The bytes of the model file at `path` and of the weight files `model` (as loaded from it) names."""
    folder = model_location(path, model).parent
    return os.path.getsize(path) + sum((folder / f).stat().st_size for f in weight_files(model))


def human_bytes(n: float) -> str:
    """A size in decimal units, as `ls -h --si` and file managers show it: 106.2 KB is 106,200 bytes."""
    for prefix in ("", "K", "M", "G"):
        if abs(n) < 1000 or prefix == "G":
            return f"{n:.0f} B" if prefix == "" else f"{n:.1f} {prefix}B"
        n /= 1000
    return f"{n} B"


def _shown_shape(shape: list[int | str] | None) -> str:
    return "unknown" if shape is None else str(shape)


def format_summary(info: dict[str, Any]) -> str:
    """The summary as text for a terminal."""
    lines = [
        f"model     {info['name']}   (IR {info['ir_version']}, "
        + ", ".join(f"{d} opset {v}" for d, v in info["opsets"].items())
        + (f", by {info['producer']}" if info["producer"] else "")
        + ")",
        f"params    {info['parameters']:,} ({human_bytes(info['parameter_bytes'])}) in "
        f"{info['initializers']} initializers"
        + (f", {info['attribute_weights']:,} more in node attributes" if info.get("attribute_weights") else "")
        + (f", {info['constant_weights']:,} more in Constant nodes" if info.get("constant_weights") else "")
        + f"; {info['nodes']} nodes"
        + (f"; file {human_bytes(info['file_bytes'])}" if "file_bytes" in info else "")
        + (f" with {', '.join(info['external_data'])}" if info.get("external_data") else ""),
        "inputs",
        *(f"  {v['name']:<20} {v['dtype']:<8} {_shown_shape(v['shape'])}" for v in info["inputs"]),
        *([] if info["inputs"] else ["  (none)"]),
        "outputs",
        *(f"  {v['name']:<20} {v['dtype']:<8} {_shown_shape(v['shape'])}" for v in info["outputs"]),
        "operators",
        "  " + ", ".join(f"{op} ×{n}" for op, n in info["operators"].items()),
    ]
    if info["metadata"]:
        lines.append("metadata")
        for key, value in info["metadata"].items():
            text = value if isinstance(value, str) else json.dumps(value)
            lines.append(f"  {key:<20} {text if len(text) <= 100 else text[:97] + '...'}")
    return "\n".join(lines)
