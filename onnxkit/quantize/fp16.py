"""Float16 weights and compute, over the converter that ships with ONNX Runtime.

`onnxruntime.transformers.float16` keeps the model's inputs and outputs float32
(so the same data feeds both models) and leaves ops that have no float16
kernel in float32 behind Casts.
"""

from __future__ import annotations

import onnx

from onnxkit.quantize.prepare import quiet_ort

# ops kept float32 behind Casts: onnxruntime 1.32's float16 AffineGrid fails at a batch of one
# ("Split ... axis 1 is not in valid range")
KEEP_FLOAT32 = frozenset({"AffineGrid"})


def quantize_fp16(
    model: onnx.ModelProto, exclude_ops: set[str], exclude_nodes: set[str]
) -> onnx.ModelProto:
    """Convert float32 tensors to float16, keeping float32 I/O and the excluded nodes."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    with quiet_ort():
        return convert_float_to_float16(
            model,
            keep_io_types=True,
            op_block_list=sorted(set(DEFAULT_OP_BLOCK_LIST) | KEEP_FLOAT32 | exclude_ops),
            node_block_list=sorted(exclude_nodes),
        )
