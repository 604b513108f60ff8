"""Gradient rules: attention's building blocks (opset 23). Attention itself is differentiated
through the function body ONNX defines for it (`onnxkit/autodiff/functions.py`)."""

from __future__ import annotations

from onnxkit.autodiff.builder import Backward
from onnxkit.autodiff.rules import rule


@rule("RotaryEmbedding")
def rotary_embedding(b: Backward) -> list[str | None]:
    # y rotates each pair of x's rotated dims by its position's angle (cos, sin); the transpose of a
    # rotation turns by minus the angle, so dx is the same op on dy with the sine negated.
    if b.wants(1) or b.wants(2):
        raise ValueError("its cos and sin caches get no gradient; compute them from constants")
    inputs = [b.dy(), b.x(1), b.op("Neg", b.x(2))] + ([b.x(3)] if b.x(3) else [])
    attrs = {name: b.attr(name) for name in ("interleaved", "num_heads", "rotary_embedding_dim")}
    return [b.op("RotaryEmbedding", *inputs, **{k: v for k, v in attrs.items() if v is not None})]
