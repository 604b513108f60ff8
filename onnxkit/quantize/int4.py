"""Weight-only 4-bit quantization of MatMul weights into `com.microsoft.MatMulNBits`.

ONNX Runtime's own `MatMulNBitsQuantizer` does the work (round to nearest, asymmetric,
one scale and zero point per block of `block_size` weights along K, for each of the N
output columns). Embedding tables stay fp32: its 4-bit Gather (`GatherBlockQuantized`)
would force the model to opset 21.

Layout of what it writes, read back by `dequantize` for the SQNR view:
B [N, K/block, block/2] uint8, two weights per byte, low nibble first;
scales [N, K/block] float; zero points [N, ceil(K/block / 2)] uint8, packed alike.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxkit.errors import OnnxkitError
from onnxkit.quantize.prepare import quiet_ort


def quantize_int4(
    model: onnx.ModelProto, block_size: int, exclude_ops: set[str], exclude_nodes: set[str]
) -> onnx.ModelProto:
    """A copy of `model` with each MatMul that has a constant float weight as MatMulNBits."""
    out = onnx.ModelProto()
    out.CopyFrom(model)  # ORT's quantizer edits the model it is given
    if "MatMul" in exclude_ops:
        return out
    with quiet_ort():
        try:
            from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
        except ImportError as e:
            raise OnnxkitError(
                f"mode int4 needs ONNX Runtime's 4-bit quantizer ({e}); install onnxruntime >= 1.20 and "
                "onnx-ir: pip install 'onnxruntime>=1.20' onnx-ir", params=["mode"]
            ) from None
        quantizer = MatMulNBitsQuantizer(
            out, bits=4, block_size=block_size, nodes_to_exclude=sorted(exclude_nodes), op_types_to_quantize=("MatMul",)
        )
        quantizer.process()
    return quantizer.model.model


def _unpack_nibbles(packed: np.ndarray, length: int) -> np.ndarray:
    both = np.stack([packed & 0x0F, packed >> 4], axis=-1).reshape(*packed.shape[:-1], -1)
    return both[..., :length]


def dequantize(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> np.ndarray:
    """The [K, N] float weight a MatMulNBits node computes with."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    k, n, block = attrs["K"], attrs["N"], attrs["block_size"]
    blocks = -(-k // block)
    q = _unpack_nibbles(numpy_helper.to_array(inits[node.input[1]]), block).astype(np.float32)
    scale = numpy_helper.to_array(inits[node.input[2]]).reshape(n, blocks)
    zp = _unpack_nibbles(numpy_helper.to_array(inits[node.input[3]]).reshape(n, -1), blocks)
    w = (q - zp[..., None]) * scale[..., None]
    return w.reshape(n, blocks * block)[:, :k].T
