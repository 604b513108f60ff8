"""Fuse transformer blocks into ONNX Runtime's Attention ops before dynamic int8.

Dynamic quantization turns each fused `Attention` into `QAttention`: one int8
kernel for the Q, K and V projections and the attention itself. Without it the
attention scores, softmax and head reshapes stay separate fp32 ops, which is
most of what remains once the MatMuls are int8 and sequences are short. The
fusion is ONNX Runtime's own (its basic graph optimizations, then its BERT
fusions); the fused ops live in the `com.microsoft` domain, so the result runs
on ONNX Runtime only. A model without an attention pattern is left as it is.

`Quantizer` keeps the fusion only when it fuses every block: in a pre-norm encoder ONNX Runtime's
patterns miss the first block, and the partly fused graph ran slower than the unfused one (the zoo's
text-transformer: fp32 1.24x, dynamic int8 0.96x the unfused fp32 at batch 64, 64 tokens, where the
unfused int8 runs at 0.75x; its SkipLayerNormalization, which also returns the residual sum there,
took 4.5x as long).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import onnx

from onnxkit.errors import OnnxkitError
from onnxkit.quantize.prepare import quiet_ort
from onnxkit.runtime.session import create_session, providers_for, session_options


def fuse_attention(model: onnx.ModelProto, workdir: Path) -> tuple[onnx.ModelProto, dict[str, int]]:
    """`model` with its transformer blocks fused, and how many ops of each kind were made;
    `model` itself and {} when no attention block was found."""
    if not any(node.op_type == "Softmax" for node in model.graph.node):
        return model, {}
    if importlib.util.find_spec("sympy") is None:  # ORT's fusions run its symbolic shape inference
        raise OnnxkitError(
            "fusing attention before dynamic int8 needs sympy (a dependency of onnxkit that this environment "
            "lacks): pip install sympy"
        )
    from onnxruntime.transformers.fusion_options import AttentionMaskFormat, FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("bert")
    options.attention_mask_format = AttentionMaskFormat.AttentionMask  # keeps any 0/1 mask, not just right padding
    with quiet_ort():
        fused = optimize_model(_basic_optimized(model, workdir), model_type="bert", num_heads=0, hidden_size=0,
                               opt_level=0, optimization_options=options)
    counts = {op: n for op, n in fused.get_fused_operator_statistics().items() if n}
    if not counts.get("Attention"):
        return model, {}
    return fused.model, counts


def _basic_optimized(model: onnx.ModelProto, workdir: Path) -> onnx.ModelProto:
    """ONNX Runtime's basic graph optimizations (Dropout removed, constants folded): the
    patterns the fusions look for. Its transformer optimizer would do this too, but imports torch."""
    path = workdir / "basic_optimized.onnx"
    create_session(model.SerializeToString(), session_options(None, "basic"), providers_for("cpu", 0), path)
    return onnx.load(str(path))


def attention_blocks(model: onnx.ModelProto) -> int:
    """Softmaxes inside the graph: one per attention block (a classifier's output Softmax is none)."""
    outputs = {o.name for o in model.graph.output}
    return sum(n.op_type == "Softmax" and n.output[0] not in outputs for n in model.graph.node)
