"""Weight-only 4-bit quantization of MatMul weights into `com.microsoft.MatMulNBits`.

Written here because the quantizer ORT ships (`matmul_4bits_quantizer`) needs
`quantize_matmul_4bits` from the native module, which the
onnxruntime-training-cpu 1.19.2 wheel does not export. The kernel itself is
there. (4-bit Gather needs `GatherBlockQuantized`, which 1.19.2 lacks:
embedding tables stay fp32.)

Layout (round to nearest, asymmetric, one scale and zero point per block of
`block_size` weights along K, for each of the N output columns):
B [N, K/block, block/2] uint8, two weights per byte, low nibble first;
scales [N * K/block] float; zero points [N * ceil(K/block / 2)] uint8, packed alike.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

MS_DOMAIN = "com.microsoft"


def quantize_blocks(weight: np.ndarray, block_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[K, N] float weight -> (q [N, blocks, block] uint8 in 0..15, scale [N, blocks], zp [N, blocks])."""
    k, n = weight.shape
    blocks = -(-k // block_size)
    padded = np.zeros((blocks * block_size, n), np.float32)
    padded[:k] = weight
    w = padded.T.reshape(n, blocks, block_size)
    lo = np.minimum(w.min(axis=-1), 0.0)
    hi = np.maximum(w.max(axis=-1), 0.0)
    scale = (hi - lo) / 15.0
    scale[scale == 0] = 1.0
    zp = np.clip(np.round(-lo / scale), 0, 15)
    q = np.clip(np.round(w / scale[..., None]) + zp[..., None], 0, 15)
    return q.astype(np.uint8), scale.astype(np.float32), zp.astype(np.uint8)


def _pack_nibbles(values: np.ndarray) -> np.ndarray:
    """Pack the last axis two 4-bit values per byte, low nibble first (odd lengths padded)."""
    if values.shape[-1] % 2:
        values = np.concatenate([values, np.zeros((*values.shape[:-1], 1), np.uint8)], axis=-1)
    return (values[..., 0::2] | (values[..., 1::2] << 4)).astype(np.uint8)


def _unpack_nibbles(packed: np.ndarray, length: int) -> np.ndarray:
    both = np.stack([packed & 0x0F, packed >> 4], axis=-1).reshape(*packed.shape[:-1], -1)
    return both[..., :length]


def dequantize(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> np.ndarray:
    """The [K, N] float weight a MatMulNBits node made here computes with."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    k, n, block = attrs["K"], attrs["N"], attrs["block_size"]
    blocks = -(-k // block)
    q = _unpack_nibbles(numpy_helper.to_array(inits[node.input[1]]), block).astype(np.float32)
    scale = numpy_helper.to_array(inits[node.input[2]]).reshape(n, blocks)
    zp = _unpack_nibbles(numpy_helper.to_array(inits[node.input[3]]).reshape(n, -1), blocks)
    w = (q - zp[..., None]) * scale[..., None]
    return w.reshape(n, blocks * block)[:, :k].T


def quantize_int4(
    model: onnx.ModelProto, block_size: int, exclude_ops: set[str], exclude_nodes: set[str]
) -> onnx.ModelProto:
    """Replace each MatMul with a 2-D float32 initializer weight by MatMulNBits."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    if "MatMul" in exclude_ops:
        return out
    inits = {t.name: t for t in graph.initializer}
    replaced: set[str] = set()
    for i, node in enumerate(graph.node):
        w_name = node.input[1] if node.op_type == "MatMul" else ""
        tensor = inits.get(w_name)
        if (
            tensor is None
            or node.name in exclude_nodes
            or tensor.data_type != onnx.TensorProto.FLOAT
            or len(tensor.dims) != 2
        ):
            continue
        weight = numpy_helper.to_array(tensor)
        k, n = weight.shape
        q, scale, zp = quantize_blocks(weight, block_size)
        prefix = f"{node.name}_Q4"
        graph.initializer.extend(
            [
                numpy_helper.from_array(_pack_nibbles(q), f"{prefix}_weight"),
                numpy_helper.from_array(scale.reshape(-1), f"{prefix}_scales"),
                numpy_helper.from_array(_pack_nibbles(zp).reshape(-1), f"{prefix}_zero_points"),
            ]
        )
        new = helper.make_node(
            "MatMulNBits",
            [node.input[0], f"{prefix}_weight", f"{prefix}_scales", f"{prefix}_zero_points"],
            list(node.output),
            name=node.name,
            domain=MS_DOMAIN,
            K=k,
            N=n,
            bits=4,
            block_size=block_size,
        )
        graph.node[i].CopyFrom(new)
        replaced.add(w_name)
    still_used = {x for n in graph.node for x in n.input}
    for name in replaced - still_used:
        graph.initializer.remove(inits[name])
    if replaced and not any(o.domain == MS_DOMAIN for o in out.opset_import):
        out.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return out
