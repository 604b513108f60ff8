"""Where quantization hurts: per-tensor SQNR between the float and the quantized model.

Built on ORT's `qdq_loss_debug`: it saves every float activation of both
models, matches QDQ pairs to their float tensors, and dequantizes QDQ weights.
Weights of the other formats (dynamic int8, int4 MatMulNBits, fp16) are
matched here by the names the passes give them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from onnxkit.quantize import int4
from onnxkit.quantize.data import BatchReader, Feeds
from onnxkit.quantize.prepare import quiet_ort


def sqnr_db(reference: np.ndarray, approx: np.ndarray) -> float | None:
    """Signal-to-quantization-noise ratio in dB (ORT's definition, so tables agree);
    None for an all-zero reference, which has no signal to compare against."""
    from onnxruntime.quantization.qdq_loss_debug import compute_signal_to_quantization_noice_ratio

    reference = np.asarray(reference, np.float32)
    if not reference.any():
        return None
    return compute_signal_to_quantization_noice_ratio([reference], [np.asarray(approx, np.float32)])


def _dequantize_named(name: str, inits: dict[str, onnx.TensorProto], shape: tuple) -> np.ndarray | None:
    """`name_quantized` * `name_scale` (minus `name_zero_point`), ORT's int8 naming."""
    if f"{name}_quantized" not in inits or f"{name}_scale" not in inits:
        return None
    q = numpy_helper.to_array(inits[f"{name}_quantized"]).astype(np.float32)
    scale = numpy_helper.to_array(inits[f"{name}_scale"]).astype(np.float32)
    zp_t = inits.get(f"{name}_zero_point")
    zp = numpy_helper.to_array(zp_t).astype(np.float32) if zp_t is not None else np.zeros_like(scale)
    if q.shape != shape:
        return None
    if scale.size > 1:  # per channel: the last axis of that length (MatMul columns)
        axis = max(i for i, d in enumerate(q.shape) if d == scale.size)
        view = [1] * q.ndim
        view[axis] = scale.size
        scale, zp = scale.reshape(view), zp.reshape(view)
    return (q - zp) * scale


def _dequantized_qdq_weights(quant_model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Float name -> the values each constant `DequantizeLinear` of `quant_model` gives, computed in float32.

    ORT's `create_weight_matching` subtracts the zero point in the stored type: a uint8 weight (the
    static quantizer stores constants an Add or Mul reads, like a bias or a positional table, as u8
    with a zero point) wraps around below it, so those weights came out at -14 dB where they are ~41."""
    inits = {t.name: t for t in quant_model.graph.initializer}
    out = {}
    for node in quant_model.graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in inits or not node.input[0].endswith("_quantized"):
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("block_size") or node.input[1] not in inits:
            continue
        q = numpy_helper.to_array(inits[node.input[0]]).astype(np.float32)
        scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
        zp_name = node.input[2] if len(node.input) > 2 else ""
        zp = numpy_helper.to_array(inits[zp_name]).astype(np.float32) if zp_name in inits else np.zeros_like(scale)
        if scale.size > 1:  # one scale per slice along `axis`
            view = [1] * q.ndim
            view[attrs.get("axis", 1)] = scale.size
            scale, zp = scale.reshape(view), zp.reshape(view)
        out[node.input[0].removesuffix("_quantized")] = (q - zp) * scale
    return out


def weight_errors(float_model: onnx.ModelProto, quant_model: onnx.ModelProto) -> dict:
    """SQNR per weight initializer of `float_model` that `quant_model` holds in lower precision."""
    floats = {t.name: t for t in float_model.graph.initializer}
    errors = {
        name: sqnr_db(numpy_helper.to_array(floats[name]), values)
        for name, values in _dequantized_qdq_weights(quant_model).items()
        if name in floats and tuple(floats[name].dims) == values.shape
    }
    q_inits = {t.name: t for t in quant_model.graph.initializer}
    for tensor in float_model.graph.initializer:
        if tensor.name in errors or tensor.data_type != onnx.TensorProto.FLOAT:
            continue
        original = numpy_helper.to_array(tensor)
        same = q_inits.get(tensor.name)
        if same is not None and same.data_type == onnx.TensorProto.FLOAT16:
            errors[tensor.name] = sqnr_db(original, numpy_helper.to_array(same))
            continue
        approx = _dequantize_named(tensor.name, q_inits, original.shape)
        if approx is not None:
            errors[tensor.name] = sqnr_db(original, approx)
    for node in quant_model.graph.node:  # ORT's 4-bit quantizer names the packed weight `W_Q4`
        weight = floats.get(node.input[1].removesuffix("_Q4")) if node.op_type == "MatMulNBits" else None
        if weight is not None:
            errors[weight.name] = sqnr_db(numpy_helper.to_array(weight), int4.dequantize(node, q_inits))
    return errors


def _activations(model: onnx.ModelProto, batches: list[Feeds], path: Path) -> dict:
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        modify_model_output_intermediate_tensors,
    )

    source = path.with_suffix(".src.onnx")
    onnx.save(model, str(source))
    with quiet_ort():
        modify_model_output_intermediate_tensors(str(source), str(path))
        return collect_activations(str(path), BatchReader(batches))


def activation_errors(
    float_model: onnx.ModelProto, quant_model: onnx.ModelProto, batches: list[Feeds], workdir: Path
) -> dict[str, float]:
    """SQNR of each activation of the quantized model against the float model's."""
    from onnxruntime.quantization.qdq_loss_debug import create_activation_matching

    float_acts = _activations(float_model, batches, workdir / "sqnr.float.acts.onnx")
    quant_acts = _activations(quant_model, batches, workdir / "sqnr.quant.acts.onnx")
    inputs = set(batches[0])
    errors = {
        name: sqnr_db(np.concatenate(float_acts[name], axis=None), np.concatenate(m["post_qdq"], axis=None))
        for name, m in create_activation_matching(quant_acts, float_acts).items()
        if name in float_acts
    }
    for name, values in quant_acts.items():  # formats without QDQ pairs keep the float names
        if name in float_acts and name not in errors and name not in inputs:
            errors[name] = sqnr_db(
                np.concatenate(float_acts[name], axis=None), np.concatenate(values, axis=None)
            )
    return errors


def sqnr_table(
    float_model: onnx.ModelProto,
    quant_model: onnx.ModelProto,
    batches: list[Feeds],
    workdir: Path,
) -> list[dict]:
    """Rows {tensor, kind, node, sqnr_db}, worst (lowest SQNR) first; `node` is the float model's node
    that reads the weight or makes the activation: the name `exclude` takes to keep it float."""
    made = {out: node.name for node in float_model.graph.node for out in node.output}
    read: dict[str, str] = {}
    for node in float_model.graph.node:
        for name in node.input:
            read.setdefault(name, node.name)
    rows = [
        {"tensor": name, "kind": "weight", "node": read.get(name), "sqnr_db": db}
        for name, db in weight_errors(float_model, quant_model).items()
    ]
    rows += [
        {"tensor": name, "kind": "activation", "node": made.get(name), "sqnr_db": db}
        for name, db in activation_errors(float_model, quant_model, batches, workdir).items()
    ]
    return sorted((r for r in rows if r["sqnr_db"] is not None), key=lambda r: r["sqnr_db"])
