"""Gradient rules: matrix products (MatMul, Gemm).

A weight shared by every row of a batch (MatMul of [..., M, K] by a 2-D [K, N]) gets its
gradient from one large GEMM over the flattened rows, not a batch of small ones summed.
"""

from __future__ import annotations

from onnxkit.autodiff.builder import Backward
from onnxkit.autodiff.rules import rule
from onnxkit.graph_walks import last_two_swapped


def _rows(b: Backward, name: str, like: str) -> str:
    """`name` (shaped like forward value `like`, rank >= 2) as a 2-D [rows, last]."""
    last = b.dims(like)[-1]
    width = b.ints([last]) if isinstance(last, int) else b.op("Slice", b.shape(like), b.ints([-1]), b.ints([2**62]))
    return b.op("Reshape", name, b.op("Concat", b.ints([-1]), width, axis=0))


@rule("MatMul")
def matmul(b: Backward) -> list[str | None]:
    a, w, dy = b.x(0), b.x(1), b.dy()
    ra, rw = b.need_rank(a), b.need_rank(w)
    if ra == 1 or rw == 1:
        return _vector_matmul(b, ra, rw)
    da = dw = None
    if ra == rw == 2:
        return [b.op("Gemm", dy, w, transB=1) if b.wants(0) else None,
                b.op("Gemm", a, dy, transA=1) if b.wants(1) else None]
    if rw == 2 and ra > 2:  # a batch of rows times one weight
        if b.wants(0):
            da = b.op("Reshape", b.op("Gemm", _rows(b, dy, b.y()), w, transB=1), b.shape(a))
        if b.wants(1):
            dw = b.op("Gemm", _rows(b, a, a), _rows(b, dy, b.y()), transA=1)
        return [da, dw]
    batch = (b.dims(b.y()) or [None] * max(ra, rw))[:-2]
    if b.wants(0):
        da = b.unbroadcast(b.op("MatMul", dy, b.graph.swap_last(w, rw)), 0, batch + b.dims(a)[-2:])
    if b.wants(1):
        dw = b.unbroadcast(_weight_product(b, ra, rw), 1, batch + b.dims(w)[-2:])
    return [da, dw]


def _weight_product(b: Backward, ra: int, rw: int) -> str:
    """a^T @ dy, the batched MatMul's second gradient before unbroadcasting. Where w came out of a
    Transpose and a's last axis is the longer (attention's P^T @ dO: [.., S, S]^T @ [.., S, D]), as
    (dy^T @ a)^T: onnxruntime's transposed-A MatMul is slow on the larger operand, and the swap of
    the result composes with the gradient's transpose back through w's (MiniLM: 1.9 against 3.2 ms a layer)."""
    a, w, dy = b.x(0), b.x(1), b.dy()
    k, n = b.dims(a)[-1], b.dims(w)[-1]
    longer = k > n if isinstance(k, int) and isinstance(n, int) else isinstance(n, int)  # a free dim: a sequence
    if w in b.graph.transposed and longer:
        rank = max(ra, rw)
        return b.graph.transpose(b.op("MatMul", b.graph.swap_last(dy, rank), a), last_two_swapped(rank))
    return b.op("MatMul", b.graph.swap_last(a, ra), dy)


def _vector_matmul(b: Backward, ra: int, rw: int) -> list[str | None]:
    """MatMul with a 1-D operand, which numpy semantics treat as a row (first) or a column
    (second) that the result drops: [K] @ [..., K, N] -> [..., N], [..., M, K] @ [K] -> [..., M]."""
    a, w, dy = b.x(0), b.x(1), b.dy()
    if ra == rw == 1:  # a dot product: y is a scalar
        return [b.op("Mul", dy, w) if b.wants(0) else None, b.op("Mul", dy, a) if b.wants(1) else None]
    da = dw = None
    if ra == 1:  # da[k] = sum over the batch and n of w[..., k, n] dy[..., n]; dw = a outer dy
        if b.wants(0):
            da = b.op("MatMul", w, b.unsqueeze(dy, [-1]))
            da = b.op("Reshape", da, b.ints([-1]) if rw == 2 else b.op("Concat", b.ints([-1]), b.shape(a), axis=0))
            da = da if rw == 2 else b.reduce("ReduceSum", da, [0], keepdims=False)
        if b.wants(1):
            dw = b.op("Mul", b.unsqueeze(a, [-1]), b.unsqueeze(dy, [-2]))
        return [da, dw]
    if b.wants(0):  # da = dy outer w; dw[k] = sum over the batch and m of a[..., m, k] dy[..., m]
        da = b.op("Mul", b.unsqueeze(dy, [-1]), w)
    if b.wants(1):
        dw = b.op("MatMul", dy, a) if ra == 2 else b.op("MatMul", b.op("Reshape", dy, b.ints([-1])), _rows(b, a, a))
    return [da, dw]


@rule("Gemm")
def gemm(b: Backward) -> list[str | None]:
    # y = alpha * op(A) @ op(B) + beta * C
    a, w, dy = b.x(0), b.x(1), b.dy()
    alpha, beta = b.attr("alpha", 1.0), b.attr("beta", 1.0)
    ta, tb = b.attr("transA", 0), b.attr("transB", 0)
    da = dw = dc = None
    if b.wants(0):
        da = b.op("Gemm", dy, w, alpha=alpha, transB=1 - tb) if not ta else b.op(
            "Gemm", w, dy, alpha=alpha, transA=tb, transB=1
        )
    if b.wants(1):
        dw = b.op("Gemm", a, dy, alpha=alpha, transA=1 - ta) if not tb else b.op(
            "Gemm", dy, a, alpha=alpha, transA=1, transB=ta
        )
    if b.num_inputs > 2 and b.wants(2):
        scaled = dy if beta == 1.0 else b.op("Mul", dy, b.const(beta))
        dc = b.unbroadcast(scaled, 2)
    return [da, dw, dc]
