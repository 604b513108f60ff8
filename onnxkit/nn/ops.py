"""Tensor operations: each emits ONNX nodes into the graph being traced.

All of them accept `Tensor`s, `Parameter`s/`Buffer`s and Python or numpy
constants. Only ops with gradients in ONNX Runtime 1.19.2's training build
are used (DESIGN.md §3), so every model built from them can be trained.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from onnxkit.errors import OnnxkitError
from onnxkit.nn.graph import Dim, Tensor, current_graph

TensorLike = Any  # Tensor | Parameter | Buffer | number | np.ndarray


def as_tensor(x: TensorLike, like: Tensor | None = None) -> Tensor:
    """Turn a parameter or constant into a graph tensor (constants take `like`'s dtype)."""
    if isinstance(x, Tensor):
        return x
    graph = current_graph()
    if hasattr(x, "value") and hasattr(x, "trainable"):  # Parameter / Buffer
        return graph.param(x)
    dtype = like.dtype if like is not None and np.ndim(x) == 0 else None
    return graph.constant(x, dtype=dtype if dtype is not None else _default_dtype(x))


def _default_dtype(x: Any) -> np.dtype:
    a = np.asarray(x)
    return np.dtype(np.float32) if a.dtype == np.float64 else a.dtype


def _op(op_type: str, *inputs: Tensor | None, **attrs: Any) -> Tensor:
    return current_graph().op(op_type, list(inputs), attrs)[0]


def _binary(op_type: str, a: TensorLike, b: TensorLike) -> Tensor:
    if not isinstance(a, Tensor) and not hasattr(a, "trainable"):
        b = as_tensor(b)
        a = as_tensor(a, like=b)
    else:
        a = as_tensor(a)
        b = as_tensor(b, like=a)
    return _op(op_type, a, b)


# -- elementwise ---------------------------------------------------------------------
def add(a: TensorLike, b: TensorLike) -> Tensor:
    return _binary("Add", a, b)


def sub(a: TensorLike, b: TensorLike) -> Tensor:
    return _binary("Sub", a, b)


def mul(a: TensorLike, b: TensorLike) -> Tensor:
    return _binary("Mul", a, b)


def div(a: TensorLike, b: TensorLike) -> Tensor:
    return _binary("Div", a, b)


def pow(a: TensorLike, b: TensorLike) -> Tensor:  # noqa: A001 - mirrors the ONNX op name
    return _binary("Pow", a, b)


def matmul(a: TensorLike, b: TensorLike) -> Tensor:
    return _binary("MatMul", a, b)


def neg(x: TensorLike) -> Tensor:
    return _op("Neg", as_tensor(x))


def exp(x: TensorLike) -> Tensor:
    return _op("Exp", as_tensor(x))


def log(x: TensorLike) -> Tensor:
    return _op("Log", as_tensor(x))


def sqrt(x: TensorLike) -> Tensor:
    return _op("Sqrt", as_tensor(x))


def erf(x: TensorLike) -> Tensor:
    return _op("Erf", as_tensor(x))


def clip(x: TensorLike, min: float | None = None, max: float | None = None) -> Tensor:  # noqa: A002
    x = as_tensor(x)
    lo = None if min is None else as_tensor(np.asarray(min, x.dtype))
    hi = None if max is None else as_tensor(np.asarray(max, x.dtype))
    return _op("Clip", x, lo, hi)


def cast(x: TensorLike, dtype: Any) -> Tensor:
    from onnx import helper

    return _op("Cast", as_tensor(x), to=helper.np_dtype_to_tensor_dtype(np.dtype(dtype)))


# -- activations -------------------------------------------------------------------------
def relu(x: TensorLike) -> Tensor:
    return _op("Relu", as_tensor(x))


def sigmoid(x: TensorLike) -> Tensor:
    return _op("Sigmoid", as_tensor(x))


def tanh(x: TensorLike) -> Tensor:
    return _op("Tanh", as_tensor(x))


def leaky_relu(x: TensorLike, alpha: float = 0.01) -> Tensor:
    return _op("LeakyRelu", as_tensor(x), alpha=float(alpha))


def gelu(x: TensorLike) -> Tensor:
    """Exact GELU: the Gelu op from opset 20, else x·(1 + erf(x/√2))·0.5, in the node order
    ONNX Runtime fuses into one Gelu (BiasGelu after a Linear) kernel."""
    x = as_tensor(x)
    if current_graph().opset >= 20:
        return _op("Gelu", x)
    return mul(mul(x, add(erf(div(x, math.sqrt(2))), 1.0)), 0.5)


def softmax(x: TensorLike, axis: int = -1) -> Tensor:
    return _op("Softmax", as_tensor(x), axis=axis)


def log_softmax(x: TensorLike, axis: int = -1) -> Tensor:
    return _op("LogSoftmax", as_tensor(x), axis=axis)


# -- shape ops ------------------------------------------------------------------------
def reshape(x: TensorLike, shape: Sequence[int]) -> Tensor:
    """Reshape; 0 copies the input's dim at that position, -1 is inferred (ONNX semantics)."""
    x = as_tensor(x)
    hint = _reshape_hint(x.shape, list(shape))
    target = current_graph().constant(np.asarray(shape, np.int64))
    return current_graph().op("Reshape", [x, target], shapes=[hint])[0]


def _reshape_hint(src: tuple[Dim, ...], shape: list[int]) -> list[Dim | None]:
    """Names the dims ONNX inference leaves unknown: -1 gets the symbolic dim it stands for."""
    out: list[Dim | None] = [src[i] if s == 0 else (s if s > 0 else None) for i, s in enumerate(shape)]
    if out.count(None) == 1:
        symbolic = [d for d in src if isinstance(d, str)]
        kept = [d for d in out if isinstance(d, str)]
        left = [d for d in symbolic if d not in kept]
        known_in = math.prod(d for d in src if isinstance(d, int))
        known_out = math.prod(d for d in out if isinstance(d, int))
        if len(left) == 1 and known_in == known_out:
            out[out.index(None)] = left[0]
    return out


def transpose(x: TensorLike, perm: Sequence[int]) -> Tensor:
    return _op("Transpose", as_tensor(x), perm=list(perm))


def flatten(x: TensorLike, axis: int = 1) -> Tensor:
    return _op("Flatten", as_tensor(x), axis=axis)


def concat(xs: Sequence[TensorLike], axis: int) -> Tensor:
    return current_graph().op("Concat", [as_tensor(x) for x in xs], {"axis": axis})[0]


def unsqueeze(x: TensorLike, axes: Sequence[int]) -> Tensor:
    return _op("Unsqueeze", as_tensor(x), as_tensor(np.asarray(axes, np.int64)))


def squeeze(x: TensorLike, axes: Sequence[int]) -> Tensor:
    return _op("Squeeze", as_tensor(x), as_tensor(np.asarray(axes, np.int64)))


def shape_of(x: TensorLike, start: int = 0, end: int | None = None) -> Tensor:
    """The runtime shape of `x` (or dims start:end) as an int64 vector."""
    attrs = {"start": start} if end is None else {"start": start, "end": end}
    return _op("Shape", as_tensor(x), **attrs)


def slice(  # noqa: A001 - mirrors the ONNX op name
    x: TensorLike,
    starts: Sequence[int] | Tensor,
    ends: Sequence[int] | Tensor,
    axes: Sequence[int],
    out_shape: Sequence[Dim] | None = None,
) -> Tensor:
    """Slice along `axes`; `ends` may be a runtime tensor (then give `out_shape`)."""
    x = as_tensor(x)
    s = as_tensor(np.asarray(starts, np.int64)) if not isinstance(starts, Tensor) else starts
    e = as_tensor(np.asarray(ends, np.int64)) if not isinstance(ends, Tensor) else ends
    a = as_tensor(np.asarray(axes, np.int64))
    shapes = [list(out_shape)] if out_shape is not None else None
    return current_graph().op("Slice", [x, s, e, a], shapes=shapes)[0]


def gather(data: TensorLike, indices: TensorLike, axis: int = 0) -> Tensor:
    indices = as_tensor(indices)
    if indices.dtype.kind not in "iu":
        raise OnnxkitError(
            f"{current_graph().scope or 'model'}: gather indices must be integers, got {indices.dtype}"
        )
    return _op("Gather", as_tensor(data), indices, axis=axis)


def where(cond: TensorLike, a: TensorLike, b: TensorLike) -> Tensor:
    a = as_tensor(a)
    return _op("Where", as_tensor(cond), a, as_tensor(b, like=a))


# -- reductions --------------------------------------------------------------------------
def _reduce(op_type: str, x: TensorLike, axes: Sequence[int], keepdims: bool) -> Tensor:
    x = as_tensor(x)
    keep = int(keepdims)
    if op_type == "ReduceSum" or current_graph().opset >= 18:  # axes became an input
        return _op(op_type, x, as_tensor(np.asarray(axes, np.int64)), keepdims=keep)
    return _op(op_type, x, axes=list(axes), keepdims=keep)


def mean(x: TensorLike, axes: Sequence[int], keepdims: bool = False) -> Tensor:
    return _reduce("ReduceMean", x, axes, keepdims)


def sum(x: TensorLike, axes: Sequence[int], keepdims: bool = False) -> Tensor:  # noqa: A001
    return _reduce("ReduceSum", x, axes, keepdims)


def _attach_methods() -> None:
    """Give Tensor the Python operators and the common methods."""

    def rev(fn):  # type: ignore[no-untyped-def]
        return lambda self, other: fn(other, self)

    methods = {
        "__add__": add, "__radd__": rev(add), "__sub__": sub, "__rsub__": rev(sub),
        "__mul__": mul, "__rmul__": rev(mul), "__truediv__": div, "__rtruediv__": rev(div),
        "__matmul__": matmul, "__rmatmul__": rev(matmul), "__neg__": neg, "__pow__": pow,
        "reshape": lambda self, *shape: reshape(self, shape[0] if len(shape) == 1 else shape),
        "transpose": lambda self, *perm: transpose(self, perm[0] if len(perm) == 1 else perm),
        "mean": mean, "sum": sum, "cast": cast, "flatten": flatten,
        "unsqueeze": unsqueeze, "squeeze": squeeze,
    }  # fmt: skip
    for name, fn in methods.items():
        setattr(Tensor, name, fn)


_attach_methods()
