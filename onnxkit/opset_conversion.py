"""onnx's version converter, with what it gets wrong or cannot convert for old models (the ONNX Model Zoo's opset
7 to 12) done around it; training and quantizing convert old models with it.

- Upsample and Resize-10 sample at `x_out / scale` (ONNX Runtime rounds nearest pixels down where it enlarges and up
  where it shrinks); the converter's Resize-11+ takes Resize's default, half pixels, which moves a bilinear
  upsampling's samples (outputs off by up to the inputs' range). Their Resize nodes get the old sampling spelled out.
- ImageScaler (the old Zoo's input scaling, opsets 1-9) has no schema to convert from: it becomes the Mul and Add it
  stands for, with its scale and bias as constants, not weights.
- An op newer than the model's opset (TorchScript writes GELU's Erf, of opset 9, into an opset-7 export), which
  neither onnx's checker nor ONNX Runtime loads, stopped the converter with "No Adapter From Version $8 for Erf":
  an error that names the op and the opset to export at.
- Add, Mul and the other binary ops of opsets 1-6 with `broadcast=1, axis=k` (B's axes lined up with A's from axis k,
  Caffe2's bias [C] on [N, C, H, W]) stopped the converter with its own assertion text: B gets the trailing unit
  axes (an Unsqueeze) that make numpy's broadcasting line it up alike, and the converter takes it from there.
- Hardmax before opset 13 works on the input flattened to 2-D at `axis` (default 1); the converter kept the node, which
  from opset 13 works on that one axis (an opset-11 Hardmax(axis=1) of [2, 3, 4] answered otherwise): it becomes
  Flatten, Hardmax, Reshape, as the converter writes Softmax and LogSoftmax.
- BatchNormalization with spatial=0 (statistics per activation, dropped in opset 9) and a nearest Resize-10 that
  enlarges some axes and shrinks others have no opset-11+ form: an error that says so."""

from __future__ import annotations

import functools

import numpy as np
import onnx
import onnx.defs
import onnx.version_converter
from onnx import helper, numpy_helper

from onnxkit.errors import OnnxkitError
from onnxkit.graph_walks import constant_values, opset

SAMPLING_AT_OPSET = 11  # Resize-11 took coordinate_transformation_mode; before it, x_in = x_out / scale
ONE_AXIS_HARDMAX = 13  # Hardmax-13 works on its axis; before it, on the input flattened to 2-D there


def converted(model: onnx.ModelProto, version: int, named: str) -> onnx.ModelProto:
    """`model` (of an older opset) at opset `version`, answering as ONNX Runtime runs `model`. What has no form at
    `version` is an OnnxkitError that begins with `named`; the converter's own failures pass through."""
    refuse_newer_ops(model, named)
    refuse_per_activation_norms(model, named)
    samplings = old_samplings(model, named) if opset(model) < SAMPLING_AT_OPSET <= version else []
    result = onnx.version_converter.convert_version(without_axis_broadcasts(without_image_scalers(model), named),
                                                    version)
    if samplings:  # the converter renames what it rewrites, but keeps the nodes' order
        resizes = [n for n in result.graph.node if n.op_type == "Resize"]
        for node, sampling in zip(resizes, samplings, strict=True):
            node.attribute.extend(helper.make_attribute(k, v) for k, v in sampling.items())
    return hardmaxes_flattened(result) if opset(model) < ONE_AXIS_HARDMAX <= version else result


def refuse_newer_ops(model: onnx.ModelProto, named: str) -> None:
    """An error for a default-domain node whose op came in an opset newer than the model's."""
    version = opset(model)
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        first = first_opsets().get(node.op_type, 0)
        if first > version:
            raise OnnxkitError(f"{named} uses {node.op_type} (node {node.name or node.output[0]!r}), which came in "
                               f"opset {first}, in an opset-{version} graph that no runtime loads; export it at "
                               f"opset {first} or newer")


@functools.cache
def first_opsets() -> dict[str, int]:
    """The opset each default-domain op came in, by op type."""
    first: dict[str, int] = {}
    for schema in onnx.defs.get_all_schemas_with_history():
        if schema.domain == "":
            first[schema.name] = min(first.get(schema.name, schema.since_version), schema.since_version)
    return first


def refuse_per_activation_norms(model: onnx.ModelProto, named: str) -> None:
    """An error for a BatchNormalization of spatial=0, which no opset from 9 on can say."""
    for node in model.graph.node:
        if node.op_type == "BatchNormalization" and any(a.name == "spatial" and a.i == 0 for a in node.attribute):
            raise OnnxkitError(f"{named}'s BatchNormalization {node.name or node.output[0]!r} normalises each "
                               "activation apart (spatial=0), which opset 9 dropped; export the model with "
                               "BatchNorm over channels (spatial=1), at opset 13 or newer")


def old_samplings(model: onnx.ModelProto, named: str) -> list[dict[str, str]]:
    """The Resize-11+ attributes that sample as each Upsample and Resize-10 node did, in the nodes' order: asymmetric
    coordinates; nearest pixels rounded down where the node enlarges (Upsample always does) and up where it
    shrinks, as ONNX Runtime runs them. Scales not fixed before run time count as enlarging."""
    values = constant_values(model)
    samplings = []
    for node in model.graph.node:
        if node.op_type not in ("Upsample", "Resize"):
            continue
        sampling = {"coordinate_transformation_mode": "asymmetric"}
        if next((a.s for a in node.attribute if a.name == "mode"), b"nearest") == b"nearest":
            scales = np.ravel(values.get(node.input[1], 1.0) if len(node.input) > 1 else 1.0)
            if (scales < 1).any() and (scales > 1).any():
                raise OnnxkitError(f"{named}'s Resize {node.name or node.output[0]!r} enlarges some axes and "
                                   f"shrinks others by nearest pixels (scales {scales.tolist()}), which opset 11 "
                                   "and newer cannot say in one node; resize those axes in two Resize nodes, or "
                                   "export the model at opset 13 or newer")
            sampling["nearest_mode"] = "ceil" if (scales < 1).any() else "floor"
        samplings.append(sampling)
    return samplings


def without_image_scalers(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` with each ImageScaler as x * scale + bias per channel, its constants Constant nodes."""
    if not any(n.op_type == "ImageScaler" for n in model.graph.node):
        return model
    model = onnx.ModelProto.FromString(model.SerializeToString())
    nodes = []
    for node in model.graph.node:
        if node.op_type != "ImageScaler":
            nodes.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        bias = np.asarray(attrs.get("bias", [0.0]), np.float32).reshape(1, -1, 1, 1)
        y = node.output[0]
        nodes += [helper.make_node("Constant", [], [f"{y}_scale"],
                                   value=numpy_helper.from_array(np.float32(attrs.get("scale", 1.0)))),
                  helper.make_node("Constant", [], [f"{y}_bias"], value=numpy_helper.from_array(bias)),
                  helper.make_node("Mul", [node.input[0], f"{y}_scale"], [f"{y}_scaled"]),
                  helper.make_node("Add", [f"{y}_scaled", f"{y}_bias"], [y], name=node.name)]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


@functools.cache
def axis_broadcasts() -> frozenset[str]:
    """The ops whose old versions broadcast B from an `axis` of A (`broadcast=1, axis=k`, opsets 1-6)."""
    return frozenset(schema.name for schema in onnx.defs.get_all_schemas_with_history()
                     if schema.domain == "" and {"broadcast", "axis"} <= set(schema.attributes))


def _ranks(model: onnx.ModelProto) -> dict[str, int]:
    """The rank of each value onnx's shape inference types (none where it fails: the converter then says why)."""
    try:
        graph = onnx.shape_inference.infer_shapes(model).graph
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError):
        graph = model.graph
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in (*graph.input, *graph.value_info, *graph.output)
             if v.type.tensor_type.HasField("shape")}
    return {**ranks, **{t.name: len(t.dims) for t in model.graph.initializer}}


def without_axis_broadcasts(model: onnx.ModelProto, named: str) -> onnx.ModelProto:
    """`model` with each `broadcast=1, axis=k` node's B unsqueezed to end where A does, and the axis dropped (numpy's
    broadcasting then lines B up as the axis did); one whose inputs' ranks are unknown is an error naming it."""
    def from_axis(node: onnx.NodeProto) -> int | None:
        attrs = {a.name: a.i for a in node.attribute}
        old = node.op_type in axis_broadcasts() and node.domain in ("", "ai.onnx") and attrs.get("broadcast")
        return attrs.get("axis") if old else None

    if all(from_axis(n) is None for n in model.graph.node):
        return model
    ranks = _ranks(model)
    model = onnx.ModelProto.FromString(model.SerializeToString())
    nodes = []
    for node in model.graph.node:
        axis = from_axis(node)
        if axis is None:
            nodes.append(node)
            continue
        a, b = (ranks.get(name) for name in node.input[:2])
        if a is None or b is None:
            raise OnnxkitError(f"{named}'s {node.op_type} {node.name or node.output[0]!r} broadcasts its second input "
                               f"from axis {axis} of its first (broadcast=1, an opset-{opset(model)} form), and shape "
                               "inference cannot tell their ranks, which its newer form needs; give the model's "
                               "inputs fixed ranks, or export it at opset 13 or newer")
        trailing = list(range(b, a - (axis + a if axis < 0 else axis)))  # the axes of A past B's span
        kept = [attr for attr in node.attribute if attr.name != "axis"]
        del node.attribute[:]
        node.attribute.extend(kept)
        if trailing:
            lined = f"{node.output[0]}_broadcast_b"
            nodes.append(helper.make_node("Unsqueeze", [node.input[1]], [lined], axes=trailing))
            node.input[1] = lined
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


def hardmaxes_flattened(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` (converted to opset 13 or newer from an older one) with each Hardmax whose axis is not its input's last
    as the old Hardmax was: Flatten at the axis (default 1), Hardmax of the rows, Reshape back."""
    if not any(n.op_type == "Hardmax" for n in model.graph.node):
        return model
    ranks = _ranks(model)
    nodes = []
    for node in model.graph.node:
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)  # the old default
        rank = ranks.get(node.input[0]) if node.op_type == "Hardmax" else None
        if node.op_type != "Hardmax" or node.domain not in ("", "ai.onnx") or axis == -1 or rank is not None and \
                axis % max(rank, 1) == rank - 1:
            nodes.append(node)
            continue
        x, y = node.input[0], node.output[0]
        nodes += [helper.make_node("Shape", [x], [f"{y}_shape"]),
                  helper.make_node("Flatten", [x], [f"{y}_rows"], axis=axis),
                  helper.make_node("Hardmax", [f"{y}_rows"], [f"{y}_flat"], axis=1),
                  helper.make_node("Reshape", [f"{y}_flat", f"{y}_shape"], [y], name=node.name)]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model
