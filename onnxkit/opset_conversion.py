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


def converted(model: onnx.ModelProto, version: int, named: str) -> onnx.ModelProto:
    """`model` (of an older opset) at opset `version`, answering as ONNX Runtime runs `model`. What has no form at
    `version` is an OnnxkitError that begins with `named`; the converter's own failures pass through."""
    refuse_newer_ops(model, named)
    refuse_per_activation_norms(model, named)
    samplings = old_samplings(model, named) if opset(model) < SAMPLING_AT_OPSET <= version else []
    result = onnx.version_converter.convert_version(without_image_scalers(model), version)
    if samplings:  # the converter renames what it rewrites, but keeps the nodes' order
        resizes = [n for n in result.graph.node if n.op_type == "Resize"]
        for node, sampling in zip(resizes, samplings, strict=True):
            node.attribute.extend(helper.make_attribute(k, v) for k, v in sampling.items())
    return result


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
