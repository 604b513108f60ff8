"""Tensor operations: each emits ONNX nodes into the graph being traced.

All of them accept `Tensor`s, `Parameter`s/`Buffer`s and Python or numpy
constants. Most emit ops with gradients in ONNX Runtime 1.19.2's training build
(docs/architecture.md §3). Those under "ops without an ORT-training gradient" do not: models
using them train only through `onnxkit.autodiff` (GroupNorm below opset 21 is
emitted as ops that have one).
"""

from __future__ import annotations

import builtins
import math
import numbers
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


def _where() -> str:
    """The layer being traced, for error messages."""
    return current_graph().where


def check_input(x: Tensor, what: str, rank: int, at_least: bool = False, channels: int | None = None) -> None:
    """Fail, naming the layer, unless `x` has rank `rank` (or more, `at_least`) and, when given,
    `channels` on axis 1 (a symbolic dim passes)."""
    c = x.shape[1] if x.ndim > 1 else None
    rank_ok = x.ndim >= rank if at_least else x.ndim == rank
    if rank_ok and (channels is None or not isinstance(c, int) or c == channels):
        return
    want = f"rank {'>= ' if at_least else ''}{rank}" + (f" with {channels} channels on axis 1" if channels else "")
    raise OnnxkitError(f"{_where()}: {what} expects input of {want}, got shape {list(x.shape)}")


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


def gelu(x: TensorLike, approximate: str = "none") -> Tensor:
    """GELU: the Gelu op from opset 20, else exact x·(1 + erf(x/√2))·0.5, in the node order ONNX Runtime fuses
    into one Gelu (BiasGelu after a Linear) kernel; approximate="tanh": x·(1 + tanh(√(2/π)(x + 0.044715x³)))·0.5."""
    x = as_tensor(x)
    if current_graph().opset >= 20:
        return _op("Gelu", x, **({"approximate": "tanh"} if approximate == "tanh" else {}))
    if approximate == "tanh":
        inner = mul(add(x, mul(mul(mul(x, x), x), 0.044715)), math.sqrt(2 / math.pi))
        return mul(mul(x, add(tanh(inner), 1.0)), 0.5)
    return mul(mul(x, add(erf(div(x, math.sqrt(2))), 1.0)), 0.5)


def softmax(x: TensorLike, axis: int = -1) -> Tensor:
    return _op("Softmax", as_tensor(x), axis=axis)


def log_softmax(x: TensorLike, axis: int = -1) -> Tensor:
    return _op("LogSoftmax", as_tensor(x), axis=axis)


# -- shape ops ------------------------------------------------------------------------
def reshape(x: TensorLike, shape: Sequence[int | str]) -> Tensor:
    """Reshape; 0 copies the input's dim at that position, -1 is inferred (ONNX semantics). A symbolic dim of x
    (`x.view(x.size(0), -1)`, PyTorch's idiom) is its size at run time: a 0 where it stands at its own position,
    else read by Shape (it was refused: 'reshape takes whole numbers')."""
    x = as_tensor(x)
    named = [d for d in shape if not isinstance(d, numbers.Integral)]
    foreign = [d for d in named if d not in x.shape]
    if foreign:
        raise OnnxkitError(f"{current_graph().where}: reshape takes whole numbers or x's own symbolic dims, got "
                           f"{foreign[0]!r}, not a dim of {list(x.shape)}; give 0 to copy the input's dim there "
                           "(x.reshape([0, -1])), or use flatten")
    shape = list(shape)
    hint = _reshape_hint(x.shape, shape)
    in_place = [0 if i < x.ndim and d == x.shape[i] else d for i, d in enumerate(shape) if isinstance(d, str)]
    if not named or all(d == 0 for d in in_place):
        target = current_graph().constant(np.asarray([0 if isinstance(d, str) else d for d in shape], np.int64))
    else:
        parts = [shape_of(x, x.shape.index(d), x.shape.index(d) + 1) if isinstance(d, str)
                 else as_tensor(np.asarray([d], np.int64)) for d in shape]
        target = concat(parts, axis=0)
    return current_graph().op("Reshape", [x, target], shapes=[hint])[0]


def _reshape_hint(src: tuple[Dim, ...], shape: list[int | str]) -> list[Dim | None]:
    """Names the dims ONNX inference leaves unknown: -1 gets the symbolic dim it stands for."""
    out: list[Dim | None] = [src[i] if s == 0 else s if isinstance(s, str) or s > 0 else None
                             for i, s in enumerate(shape)]
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
    """ONNX's Flatten: [d0·...·d(axis-1), d(axis)·...] (`flatten_dims` is PyTorch's)."""
    return _op("Flatten", as_tensor(x), axis=axis)


def flatten_dims(x: TensorLike, start_dim: int = 1, end_dim: int = -1) -> Tensor:
    """PyTorch's flatten: dims start_dim..end_dim (negative from the end) become one, the others kept; the default
    [N, rest] is one ONNX Flatten, the rest a Reshape (`x.flatten(2)` of [N, C, H, W] is [N, C, H·W])."""
    x = as_tensor(x)
    rank = builtins.max(x.ndim, 1)
    start, end = (d + rank if d < 0 else d for d in (start_dim, end_dim))
    if not (0 <= start < rank and 0 <= end < rank) or start > end:
        raise OnnxkitError(f"{_where()}: flatten(start_dim={start_dim}, end_dim={end_dim}) does not fit a "
                           f"{x.ndim}-d input {list(x.shape)} (dims 0..{rank - 1}, start before end)")
    if start == end or x.ndim <= 1:
        return x
    if (start, end) == (1, x.ndim - 1):
        return flatten(x, 1)
    merged, kept = x.shape[start:end + 1], x.shape[end + 1:]
    size = math.prod(merged) if builtins.all(isinstance(d, int) for d in merged) else None  # type: ignore[arg-type]
    if builtins.all(isinstance(d, int) for d in kept):  # 0 copies the dim at the same index: right only before start
        target = as_tensor(np.asarray([0] * start + [-1, *kept], np.int64))
    else:
        target = concat([as_tensor(np.asarray([0] * start + [-1], np.int64)), shape_of(x, end + 1)], axis=0)
    return current_graph().op("Reshape", [x, target], shapes=[[*x.shape[:start], size, *kept]])[0]


def concat(xs: Sequence[TensorLike], axis: int) -> Tensor:
    return current_graph().op("Concat", [as_tensor(x) for x in xs], {"axis": axis})[0]


def split(x: TensorLike, split_size_or_sections: int | Sequence[int], dim: int = 0) -> tuple[Tensor, ...]:
    """PyTorch's split, one ONNX Split: pieces of `split_size_or_sections` along `dim` (the last one smaller where
    they do not divide evenly), or pieces of the sizes listed."""
    x = as_tensor(x)
    axis = dim + x.ndim if dim < 0 else dim
    if not 0 <= axis < x.ndim:
        raise OnnxkitError(f"{_where()}: split along dim {dim} of a {x.ndim}-d tensor {list(x.shape)}")
    size = x.shape[axis]
    if isinstance(split_size_or_sections, numbers.Integral):
        step = int(split_size_or_sections)
        if not isinstance(size, int) or step < 1:
            raise OnnxkitError(f"{_where()}: split into pieces of {step} along dim {dim} of {list(x.shape)} needs a "
                               "positive piece size and a size known before run time; list the pieces' sizes")
        sizes = [min(step, size - start) for start in range(0, size, step)]
    else:
        sizes = [int(n) for n in split_size_or_sections]
        if (isinstance(size, int) and builtins.sum(sizes) != size) or builtins.min(sizes, default=-1) < 0:
            raise OnnxkitError(f"{_where()}: split sizes {sizes} do not add up to dim {dim}'s {size} of "
                               f"{list(x.shape)}")
    pieces = as_tensor(np.asarray(sizes, np.int64))
    shapes = [[*x.shape[:axis], n, *x.shape[axis + 1:]] for n in sizes]
    return current_graph().op("Split", [x, pieces], {"axis": axis}, outputs=len(sizes), shapes=shapes)


def chunk(x: TensorLike, chunks: int, dim: int = 0) -> tuple[Tensor, ...]:
    """PyTorch's chunk: `split` into pieces of ceil(size / chunks), so fewer than `chunks` where that leaves an
    empty one (6 in 4 chunks is 2, 2, 2), as PyTorch's."""
    x = as_tensor(x)
    size = x.shape[dim] if -x.ndim <= dim < x.ndim else None
    if not isinstance(size, int) or not isinstance(chunks, numbers.Integral) or chunks < 1:
        raise OnnxkitError(f"{_where()}: chunk({chunks}, dim={dim}) of {list(x.shape)} needs a positive number of "
                           "chunks and a dim whose size is known before run time; use split with the sizes")
    return split(x, -(-size // int(chunks)), dim)


def _axes(axes: int | Sequence[int]) -> np.ndarray:
    """Axes as the 1-D int64 tensor ONNX takes: one int is one axis (as a 0-d tensor, the checker passed it and
    ONNX Runtime refused the model: 'An axes tensor must be a vector tensor')."""
    return np.atleast_1d(np.asarray(axes, np.int64))


def unsqueeze(x: TensorLike, axes: int | Sequence[int]) -> Tensor:
    return _op("Unsqueeze", as_tensor(x), as_tensor(_axes(axes)))


def squeeze(x: TensorLike, axes: int | Sequence[int] | None = None) -> Tensor:
    """Drop the given dims of size 1; with none given (`x.squeeze()`, PyTorch's) every dim known to be 1 (a dim
    named, such as the batch, stays: one of size 1 at run time would be dropped by PyTorch's). It took no default."""
    x = as_tensor(x)
    if axes is None:
        axes = [i for i, d in enumerate(x.shape) if d == 1]
        if not axes:
            return x
    return _op("Squeeze", x, as_tensor(_axes(axes)))


def shape_of(x: TensorLike, start: int = 0, end: int | None = None) -> Tensor:
    """The runtime shape of `x` (or dims start:end) as an int64 vector."""
    if current_graph().opset < 15 and (start or end is not None):  # Shape's start and end arrived in opset 15
        return slice(_op("Shape", as_tensor(x)), [start], [2**62 if end is None else end], [0])
    attrs = {"start": start} if start else {}
    if end is not None:
        attrs["end"] = end
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
            f"{_where()}: gather indices must be integers, got {indices.dtype}"
        )
    return _op("Gather", as_tensor(data), indices, axis=axis)


def where(cond: TensorLike, a: TensorLike, b: TensorLike) -> Tensor:
    a = as_tensor(a)
    return _op("Where", as_tensor(cond), a, as_tensor(b, like=a))


# -- reductions --------------------------------------------------------------------------
def _reduce(op_type: str, x: TensorLike, axes: int | Sequence[int], keepdims: bool) -> Tensor:
    x = as_tensor(x)
    keep = int(keepdims)
    if op_type == "ReduceSum" or current_graph().opset >= 18:  # axes became an input
        return _op(op_type, x, as_tensor(_axes(axes)), keepdims=keep)
    return _op(op_type, x, axes=_axes(axes).tolist(), keepdims=keep)


def mean(x: TensorLike, axes: int | Sequence[int] | None = None, keepdims: bool = False) -> Tensor:
    """Over `axes`; over all of them by default (`x.mean()`, PyTorch's), where it took no default."""
    x = as_tensor(x)
    return _reduce("ReduceMean", x, list(range(x.ndim)) if axes is None else axes, keepdims)


def sum(x: TensorLike, axes: int | Sequence[int] | None = None, keepdims: bool = False) -> Tensor:  # noqa: A001
    """Over `axes`; over all of them by default (`x.sum()`, PyTorch's), where it took no default."""
    x = as_tensor(x)
    return _reduce("ReduceSum", x, list(range(x.ndim)) if axes is None else axes, keepdims)


# -- ops without an ORT-training gradient -------------------------------------------------
def elu(x: TensorLike, alpha: float = 1.0) -> Tensor:
    """x if x > 0 else alpha·(exp(x) - 1)."""
    return _op("Elu", as_tensor(x), alpha=float(alpha))


def selu(x: TensorLike) -> Tensor:
    """Scaled ELU with the self-normalising constants (ONNX's defaults, PyTorch's values)."""
    return _op("Selu", as_tensor(x))


def celu(x: TensorLike, alpha: float = 1.0) -> Tensor:
    """max(0, x) + min(0, alpha·(exp(x/alpha) - 1)); float32 only (the Celu op's one type)."""
    if alpha == 0:
        raise OnnxkitError(f"{_where()}: celu alpha must be non-zero")
    return _op("Celu", as_tensor(x), alpha=float(alpha))


def softplus(x: TensorLike, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    """log(1 + exp(beta·x)) / beta where beta·x <= threshold, else x (PyTorch's: the exp would overflow); the one
    Softplus op at PyTorch's defaults, whose threshold changes nothing in float32."""
    x = as_tensor(x)
    if beta == 1.0 and threshold >= 20.0:
        return _op("Softplus", x)
    scaled = mul(x, float(beta))
    curve = div(_op("Softplus", scaled), float(beta))
    return where(_binary("Greater", scaled, float(threshold)), x, curve)


def mish(x: TensorLike) -> Tensor:
    """x·tanh(softplus(x)): the Mish op from opset 18, else those three ops."""
    x = as_tensor(x)
    if current_graph().opset >= 18:
        return _op("Mish", x)
    return mul(x, tanh(softplus(x)))


def hard_sigmoid(x: TensorLike, alpha: float = 1 / 6, beta: float = 0.5) -> Tensor:
    """max(0, min(1, alpha·x + beta)); the defaults are PyTorch's (ONNX's alpha is 0.2)."""
    return _op("HardSigmoid", as_tensor(x), alpha=float(alpha), beta=float(beta))


def hard_swish(x: TensorLike) -> Tensor:
    """x·hard_sigmoid(x) (PyTorch's hardswish): the HardSwish op from opset 14, those two ops below."""
    x = as_tensor(x)
    if current_graph().opset >= 14:
        return _op("HardSwish", x)
    return mul(x, hard_sigmoid(x))


def _per_channel(t: Tensor, rank: int) -> Tensor:
    """A [C] vector shaped [C, 1, ...] to broadcast over axis 1 of a rank-`rank` [N, C, ...] input."""
    return unsqueeze(t, range(1, rank - 1)) if rank > 2 else t


def prelu(x: TensorLike, slope: TensorLike) -> Tensor:
    """x if x > 0 else slope·x, with `slope` [1] or [C] (one per channel, axis 1 of [N, C, ...])."""
    x, slope = as_tensor(x), as_tensor(slope)
    if slope.ndim != 1:
        raise OnnxkitError(f"{_where()}: prelu slope must be a vector [1] or [C], got shape {list(slope.shape)}")
    if slope.shape[0] == 1:
        return _op("PRelu", x, slope)
    check_input(x, f"prelu with {slope.shape[0]} slopes", 2, at_least=True, channels=slope.shape[0])
    return _op("PRelu", x, _per_channel(slope, x.ndim))


def _channel_params(
    what: str, x: Tensor, min_rank: int, weight: TensorLike | None, bias: TensorLike | None
) -> tuple[int, Tensor | None, Tensor | None]:
    """Check `x` is [N, C, ...] against the per-channel weight and bias [C]; return C and them as tensors."""
    w, b = (None if t is None else as_tensor(t) for t in (weight, bias))
    c = next((t.shape[0] for t in (w, b) if t is not None), x.shape[1] if x.ndim > 1 else None)
    check_input(x, what, min_rank, at_least=True, channels=c if isinstance(c, int) else None)
    if not isinstance(c, int):
        raise OnnxkitError(f"{_where()}: {what} without weight or bias needs a fixed channel count on axis 1")
    return c, w, b


def _or_full(t: Tensor | None, value: float, channels: int, dtype: np.dtype) -> Tensor:
    return t if t is not None else as_tensor(np.full(channels, value, dtype))


def instance_norm(x: TensorLike, weight: TensorLike | None = None, bias: TensorLike | None = None,
                  eps: float = 1e-5) -> Tensor:
    """Normalise each (sample, channel) of [N, C, ...] over its other axes, then scale and shift per channel."""
    x = as_tensor(x)
    c, w, b = _channel_params("instance_norm", x, 3, weight, bias)
    scale, shift = _or_full(w, 1.0, c, x.dtype), _or_full(b, 0.0, c, x.dtype)
    return _op("InstanceNormalization", x, scale, shift, epsilon=float(eps))


def group_norm(x: TensorLike, num_groups: int, weight: TensorLike | None = None, bias: TensorLike | None = None,
               eps: float = 1e-5) -> Tensor:
    """Normalise [N, C, ...] over each group of C/num_groups channels, then scale and shift per channel.

    From opset 21 this is the GroupNormalization op (opset 18's version scales per group,
    unlike PyTorch, so it is not used). Below 21 it is emitted as Reshape to [N, G, -1],
    mean and variance by ReduceMean, normalisation, Reshape back and the per-channel
    affine, so models build at the default opset 17.
    """
    x = as_tensor(x)
    c, w, b = _channel_params("group_norm", x, 2, weight, bias)
    if num_groups < 1 or c % num_groups:
        raise OnnxkitError(f"{_where()}: group_norm: {c} channels are not divisible by {num_groups} groups")
    if current_graph().opset >= 21:
        scale, shift = _or_full(w, 1.0, c, x.dtype), _or_full(b, 0.0, c, x.dtype)
        attrs = {"epsilon": float(eps), "num_groups": num_groups}  # onnx infers no shape for it: hint one
        return current_graph().op("GroupNormalization", [x, scale, shift], attrs, shapes=[list(x.shape)])[0]
    groups = reshape(x, [0, num_groups, -1])
    centred = sub(groups, mean(groups, [2], keepdims=True))
    normed = div(centred, sqrt(add(mean(mul(centred, centred), [2], keepdims=True), eps)))
    (normed,) = current_graph().op("Reshape", [normed, shape_of(x)], shapes=[list(x.shape)])
    if w is not None:
        normed = mul(normed, _per_channel(w, x.ndim))
    return add(normed, _per_channel(b, x.ndim)) if b is not None else normed


_RESIZE = {  # PyTorch's nn.Upsample modes (align_corners=False) as Resize attributes
    "nearest": {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"},
    "bilinear": {"mode": "linear", "coordinate_transformation_mode": "half_pixel"},
}


def upsample(x: TensorLike, scale_factor: float | Sequence[float] | None = None, mode: str = "nearest", *,
             size: int | Sequence[int] | None = None, align_corners: bool = False) -> Tensor:
    """Resize the spatial axes (2, 3, ...) of [N, C, ...] by `scale_factor`, or to `size`, as PyTorch's Upsample:
    "nearest" copies the floored source pixel, "bilinear" (4-D only) interpolates at half-pixel centres, or with
    `align_corners` maps the corner pixels onto each other."""
    if mode not in _RESIZE:
        raise OnnxkitError(f"{_where()}: unknown upsample mode {mode!r}; use one of {', '.join(_RESIZE)}")
    x = as_tensor(x)
    check_input(x, f"{mode} upsample", 4 if mode == "bilinear" else 3, at_least=mode == "nearest")
    spatial = x.ndim - 2
    attrs = dict(_RESIZE[mode], **({"coordinate_transformation_mode": "align_corners"} if align_corners else {}))
    if size is not None:
        sizes = [int(size)] * spatial if np.ndim(size) == 0 else [int(s) for s in size]
        if len(sizes) != spatial or min(sizes) <= 0:
            raise OnnxkitError(f"{_where()}: upsample size {size} needs one positive whole number or {spatial} of them")
        target = as_tensor(np.asarray([1, 1, *sizes], np.int64))
        full = shape_of(x, 0, 2)
        inputs = [x, None, None, concat([full, slice(target, [2], [2 + spatial], [0])], axis=0)]
        return current_graph().op("Resize", inputs, attrs, shapes=[[*x.shape[:2], *sizes]])[0]
    scales = [float(scale_factor)] * spatial if np.ndim(scale_factor) == 0 else [float(s) for s in scale_factor]
    if len(scales) != spatial or min(scales) <= 0:
        raise OnnxkitError(
            f"{_where()}: upsample scale_factor {scale_factor} needs one positive number or {spatial} of them"
        )
    sizes = [math.floor(d * s) if isinstance(d, int) else None for d, s in zip(x.shape[2:], scales, strict=True)]
    if 0 in sizes:  # ONNX Runtime runs it, to an empty output
        raise OnnxkitError(f"{_where()}: upsample by {scale_factor} of {list(x.shape)} would be empty "
                           f"({[*x.shape[:2], *sizes]}); use a larger scale_factor")
    # an axis whose size the scale keeps (3 x 1.3 -> 3) PyTorch copies; ONNX would still sample it at 1 / scale
    scales = [1.0 if n == d else s for n, d, s in zip(sizes, x.shape[2:], scales, strict=True)]
    if any(n is None and 1 < s < 2 and not s.is_integer() for n, s in zip(sizes, scales, strict=True)):
        raise OnnxkitError(f"{_where()}: upsample by {scale_factor} over a size known only at run time: PyTorch keeps "
                           "the sizes this scale leaves unchanged and ONNX's Resize does not; give size=, or a scale "
                           "of 2 or more, or fixed sizes")
    inputs = [x, None, as_tensor(np.asarray([1.0, 1.0, *scales], np.float32))]
    return current_graph().op("Resize", inputs, attrs, shapes=[[*x.shape[:2], *sizes]])[0]


def _dims(dims: tuple) -> Sequence[int]:
    """A method's dims, given one by one or as one sequence."""
    return dims[0] if len(dims) == 1 and not isinstance(dims[0], int) else dims


def _reshape_method(x: Tensor, *shape: int | Sequence[int]) -> Tensor:
    """`x.reshape(2, -1)`, `x.reshape([2, -1])`, `x.view(-1)`."""
    return reshape(x, _dims(shape))


def _size(x: Tensor, dim: int | None = None) -> tuple[Dim, ...] | Dim:
    """`x.size()` is x.shape and `x.size(0)` one dim, as PyTorch's: an int, or a symbolic dim's name, which
    reshape and view take (`x.view(x.size(0), -1)`)."""
    return tuple(x.shape) if dim is None else x.shape[dim]


def _swap_or_permute(x: Tensor, *dims: int) -> Tensor:
    """`x.transpose(d0, d1)` swaps two dims, as PyTorch's (it was a permutation, numpy's, so `transpose(0, 1)` of a
    matrix did nothing); a whole permutation (`x.transpose(0, 2, 1, 3)`) is `x.permute(...)`, taken here too."""
    if len(dims) != 2 or not all(isinstance(d, int) for d in dims):
        return transpose(x, _dims(dims))
    rank = len(x.shape)
    perm = list(range(rank))
    a, b = (d + rank if d < 0 else d for d in dims)
    if not (0 <= a < rank and 0 <= b < rank):
        raise OnnxkitError(f"transpose({dims[0]}, {dims[1]}): a {rank}-d tensor has dims 0..{rank - 1}")
    perm[a], perm[b] = perm[b], perm[a]
    return transpose(x, perm)


def index(x: TensorLike, key: Any) -> Tensor:
    """`x[key]` with numpy's basic indexing, as PyTorch's: whole numbers (the axis dropped), slices with steps,
    `...` and None (a new axis of 1). One Slice over the axes that change, then Squeeze and Unsqueeze."""
    x = as_tensor(x)
    items = list(key) if isinstance(key, tuple) else [key]
    bad = [i for i in items if isinstance(i, bool) or not (
        i is None or i is Ellipsis or isinstance(i, builtins.slice | numbers.Integral))]
    if bad:
        raise OnnxkitError(f"{_where()}: indexing takes whole numbers, slices, ... and None, got "
                           f"{type(bad[0]).__name__}; to pick rows by a tensor of ids, use ops.gather")
    if items.count(Ellipsis) > 1:
        raise OnnxkitError(f"{_where()}: an index can have only one ...")
    indexed = len([i for i in items if i is not None and i is not Ellipsis])
    if indexed > x.ndim:
        raise OnnxkitError(f"{_where()}: too many indices ({indexed}) for a {x.ndim}-d tensor {list(x.shape)}")
    at = items.index(Ellipsis) if Ellipsis in items else len(items)
    items = [*items[:at], *[builtins.slice(None)] * (x.ndim - indexed), *items[at + 1:]]
    cuts: list[tuple[int, int, int, int]] = []  # (start, end, axis, step) of each axis that changes
    sliced, dropped, added, out_rank = list(x.shape), [], [], 0
    axis = 0
    for item in items:
        if item is None:
            added.append(out_rank)
            out_rank += 1
            continue
        dim = x.shape[axis]
        if isinstance(item, numbers.Integral):
            item = int(item)
            if isinstance(dim, int) and not -dim <= item < dim:
                raise OnnxkitError(f"{_where()}: index {item} is out of range for axis {axis} of size {dim}")
            cuts.append((item, item + 1 if item != -1 else 2**62, axis, 1))
            sliced[axis] = 1
            dropped.append(axis)
        else:
            out_rank += 1
            if item != builtins.slice(None):
                cuts.append((*_slice_bounds(item, dim, axis), axis, item.step or 1))
                sliced[axis] = len(range(*item.indices(dim))) if isinstance(dim, int) else None
        axis += 1
    y = x
    if cuts:
        columns = [as_tensor(np.asarray(column, np.int64)) for column in zip(*cuts, strict=True)]
        y = current_graph().op("Slice", [x, *columns], shapes=[sliced])[0]
    if dropped:
        y = squeeze(y, dropped)
    return unsqueeze(y, added) if added else y


def _slice_bounds(item: builtins.slice, dim: Dim, axis: int) -> tuple[int, int]:
    """Slice's start and end for `item` over an axis of `dim` cells: numpy's exact bounds where the size is known;
    else the slice's own, which ONNX clamps as numpy does for a positive step (a negative one is refused there)."""
    step = 1 if item.step is None else int(item.step)
    if step == 0:
        raise OnnxkitError(f"{_where()}: a slice step cannot be zero")
    if isinstance(dim, int):
        start, stop, step = item.indices(dim)
        if len(range(start, stop, step)) == 0:
            return 0, 0
        return start, stop if stop >= 0 else -(2**62)  # a negative step's end before the first cell
    if step < 0:
        raise OnnxkitError(f"{_where()}: a negative step over axis {axis}, whose size is known only at run time "
                           "(PyTorch refuses negative steps)")
    return (0 if item.start is None else int(item.start)), (2**62 if item.stop is None else int(item.stop))


def _attach_methods() -> None:
    """Give Tensor the Python operators and the common methods."""

    def rev(fn):  # type: ignore[no-untyped-def]
        return lambda self, other: fn(other, self)

    methods = {
        "__add__": add, "__radd__": rev(add), "__sub__": sub, "__rsub__": rev(sub),
        "__mul__": mul, "__rmul__": rev(mul), "__truediv__": div, "__rtruediv__": rev(div),
        "__matmul__": matmul, "__rmatmul__": rev(matmul), "__neg__": neg, "__pow__": pow,
        "reshape": _reshape_method,
        "transpose": _swap_or_permute, "permute": lambda self, *dims: transpose(self, _dims(dims)),
        "mean": mean, "sum": sum, "cast": cast, "flatten": flatten_dims,
        "unsqueeze": unsqueeze, "squeeze": squeeze, "__getitem__": index,
        "view": _reshape_method, "size": _size, "split": split, "chunk": chunk,
        "contiguous": lambda self: self,  # a memory layout, nothing in a graph (as layers' inplace=)
        # PyTorch's Tensor methods of one op each (they were AttributeErrors)
        "relu": relu, "sigmoid": sigmoid, "tanh": tanh, "exp": exp, "log": log, "sqrt": sqrt, "neg": neg,
        "add": add, "sub": sub, "mul": mul, "div": div, "pow": pow, "matmul": matmul,
        "softmax": lambda self, dim: softmax(self, dim), "log_softmax": lambda self, dim: log_softmax(self, dim),
        "clamp": lambda self, min=None, max=None: clip(self, min, max),  # noqa: A006
        "float": lambda self: cast(self, np.float32), "__rpow__": rev(pow),
    }  # fmt: skip
    for name, fn in methods.items():
        setattr(Tensor, name, fn)
    Tensor.__getattr__ = _missing_attribute  # type: ignore[attr-defined]
    Tensor.__setitem__ = _set_item  # type: ignore[attr-defined]
    Tensor.__array_ufunc__ = _array_ufunc  # type: ignore[attr-defined]
    from onnxkit.nn.module import Parameter  # Buffer inherits them

    for name in methods:  # self.pos * 2, self.pe[:, :t], self.weight.view(...) in forward, as PyTorch's Parameter
        if name not in vars(Parameter):  # its own (size) work outside forward too
            setattr(Parameter, name, _as_tensor_first(name))
    Parameter.__array_ufunc__ = None  # numpy's operand first (w * self.p) defers to the Parameter's, as a Tensor's


def _as_tensor_first(name: str) -> Any:
    """A Parameter's `name` method: the Tensor's, on the Parameter's tensor in the graph being built."""
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        return getattr(as_tensor(self), name)(*args, **kwargs)

    method.__name__ = name
    return method


def _missing_attribute(self: Tensor, name: str) -> Any:
    """PyTorch's in-place methods (`x.add_(y)`, `x.relu_()`) are refused saying what to write: a traced graph has
    no in-place, and an alias that returned a new value would leave x as it was, silently."""
    if name.endswith("_") and not name.startswith("_"):
        plain = name[:-1]
        ours = f"x = x.{plain}(...)" if hasattr(Tensor, plain) else "a new value (x = f(x))"
        raise AttributeError(f"'Tensor' object has no attribute {name!r}: PyTorch's in-place {name}() cannot change a "
                             f"traced tensor; write {ours}", name=name, obj=self)
    raise AttributeError(f"'Tensor' object has no attribute {name!r}")


def _set_item(self: Tensor, key: Any, value: Any) -> None:
    """`x[:, 0] = v` is refused naming the way: Python's 'does not support item assignment' named none."""
    raise TypeError("an nn.Tensor cannot be assigned into (x[...] = v: a traced graph has no in-place writes); build "
                    "the new value instead, e.g. nn.ops.concat of slices, or nn.ops.where with a mask")


def _array_ufunc(self: Tensor, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Tensor:
    """numpy beside a Tensor: an operator with a numpy operand first (`weights * x`) is the Tensor's operator; a numpy
    function of a Tensor (`np.exp(x)`) cannot trace it, which says what to call (numpy said 'loop of ufunc does not
    support argument 0 of type Tensor which has no callable exp method')."""
    operator = {np.add: add, np.subtract: sub, np.multiply: mul, np.true_divide: div, np.matmul: matmul,
                np.power: pow, np.negative: neg}.get(ufunc)
    if operator is not None and method == "__call__" and not kwargs:
        return operator(*inputs)
    name = ufunc.__name__
    ours = f"nn.ops.{name}(x)" if callable(globals().get(name)) and not name.startswith("_") else "nn.ops' functions"
    raise TypeError(f"numpy's {name} cannot run on an nn.Tensor, a symbolic value traced into the graph: use {ours} "
                    "(or a Tensor operator) inside forward")


_attach_methods()


# PyTorch's functional names (torch.*, torch.nn.functional.*) a port reaches for, and what the DSL has in their place
PYTORCH_FUNCTIONS = {
    "cat": "nn.ops.concat([a, b], axis=1)", "concatenate": "nn.ops.concat([a, b], axis=1)",
    "stack": "nn.ops.concat([nn.ops.unsqueeze(a, 1), nn.ops.unsqueeze(b, 1)], axis=1)",
    "interpolate": "nn.ops.upsample(x, scale_factor, mode=...) or upsample(x, size=...)",
    "silu": "nn.ops.mul(x, nn.ops.sigmoid(x)) or an nn.SiLU layer", "dropout": "an nn.Dropout layer",
    "max_pool2d": "an nn.MaxPool2d layer", "avg_pool2d": "an nn.AvgPool2d layer",
    "adaptive_avg_pool2d": "x.mean([2, 3], keepdims=True) or nn.AdaptiveAvgPool2d(1)",
    "conv2d": "an nn.Conv2d layer", "linear": "an nn.Linear layer", "layer_norm": "an nn.LayerNorm layer",
    "batch_norm": "an nn.BatchNorm1d/2d layer", "embedding": "an nn.Embedding layer",
    "clamp": "nn.ops.clip(x, min, max)",
}


def __getattr__(name: str) -> Any:
    """`nn.ops.cat`, `nn.ops.interpolate`, ... (PyTorch's names) say what to call: it was Python's bare 'module has
    no attribute'."""
    if name in PYTORCH_FUNCTIONS:
        raise AttributeError(f"nn.ops has no {name} (PyTorch's {name}): use "
                             f"{PYTORCH_FUNCTIONS[name]}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
