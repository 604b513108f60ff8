"""Gradient rules: convolution, pooling and resizing over [N, C, spatial...] tensors.

The spatial sizes of inputs and outputs must be static (shape inference gives them); the batch
may be symbolic. Everything is written with standard ops:

- Conv: dX is the transposed convolution of dY (for grouped convs, and stride-1 ones over
  FLIPPED_FROM positions or more, a Conv of the zero-dilated dY with the flipped, regrouped kernel:
  onnx.reference's grouped ConvTranspose is wrong, ONNX Runtime's slower there); dW is one GEMM of
  dY against X's windows gathered into columns (im2col), batch innermost.
- ConvTranspose: the same two with the roles of X and dY swapped.
- MaxPool: each window's first maximum (in window order, the one ONNX Runtime and PyTorch pick)
  gets dY. Where windows tile the input (stride = kernel, the common case) this happens at full
  size: y and dY are repeated over their windows, and a MaxPool of "is a maximum" times the
  reversed rank in the window finds the first (no index tensors: there ORT's MaxPool with Indices
  is an order of magnitude slower). Windows that overlap or skip (from opset 16) add dY up at a
  MaxPool's Indices with ScatterElements; before opset 16 they are cut out with strided Slices,
  stacked on a leading axis, and the per-tap pieces put back by interleaving.
- AveragePool: dY over each window's size (a static table), spread back the same way.
- Col2Im: dX cuts dY's blocks back out (im2col), a Conv with one one-hot kernel per block position.
- Resize (nearest, linear, cubic): a linear map per axis, so dX = A_h^T dY A_w with interpolation
  matrices built from the static sizes (and A_d^T along a volume's depth, or any other resized axis).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from onnx import helper

from onnxkit.autodiff.builder import Backward
from onnxkit.autodiff.rules import rule

Attr = Callable[[str, Any], Any]  # a node's attribute by name, or the default given
SLICE_TO_START = -(2**63)  # Slice `ends` that runs to the beginning with a negative step
# a Conv weight gradient gathers at most this many bytes of columns per example at once: ResNet-18 at 224 x 224
# (batch 32) trained in 1,232 MiB against 1,464 with 4 MiB, its step and the CIFAR models' 0.98-0.99x as long
COLUMN_BYTES = 1 << 20
# A stride-1 Conv's dX over at least this many positions is a Conv with the flipped kernel: ONNX Runtime's
# ConvTranspose (a GEMM with the output channels as its depth, then col2im) took 5.1 against 3.9 ms at 32 channels
# of 32 x 32, 4.1 against 3.5 at 64 of 16 x 16, and 4.2 against 5.7 at 128 of 8 x 8 (batch 32, 2 threads)
FLIPPED_FROM = 256


@dataclass(frozen=True)
class Window:
    """Where a sliding-window op reads, per spatial axis: an input of `size` (padded by `begin`
    and `end`) gives an output of `out` positions, each over `kernel` taps."""

    size: tuple[int, ...]
    out: tuple[int, ...]
    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    begin: tuple[int, ...]
    end: tuple[int, ...]

    @property
    def span(self) -> list[int]:
        return _spans(self.kernel, self.dilations)

    @property
    def reach(self) -> list[int]:
        """Length of padded input the windows cover."""
        return [(o - 1) * s + sp for o, s, sp in zip(self.out, self.strides, self.span, strict=True)]

    @property
    def taps(self) -> list[tuple[int, ...]]:
        """Kernel offsets in window order (row-major)."""
        return list(itertools.product(*(range(k) for k in self.kernel)))


def _spans(kernel: tuple[int, ...], dilations: tuple[int, ...]) -> list[int]:
    """Extent of each dilated kernel axis."""
    return [(k - 1) * d + 1 for k, d in zip(kernel, dilations, strict=True)]


def _spatial(b: Backward, name: str) -> tuple[int, ...]:
    dims = b.dims(name)
    if dims is None or len(dims) < 3 or not all(isinstance(d, int) for d in dims[2:]):
        raise ValueError(f"its gradient needs static spatial sizes, and {name!r} has dims {dims}; "
                         "give the model's inputs fixed spatial sizes")
    return tuple(dims[2:])


def _static(b: Backward, name: str) -> list[int]:
    dims = b.dims(name)
    if dims is None or not all(isinstance(d, int) for d in dims):
        raise ValueError(f"its gradient needs the static shape of {name!r} (has {dims})")
    return dims


def _axes_attr(attr: Attr, name: str, n: int) -> tuple[int, ...]:
    return tuple(attr(name) or [1] * n)


def _explicit_pads(attr: Attr, n: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    pads = [0] * (2 * n) if attr("auto_pad", "NOTSET") == "VALID" else (attr("pads") or [0] * (2 * n))
    return tuple(pads[:n]), tuple(pads[n:])


def _same_pads(attr: Attr, total: list[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """auto_pad SAME_UPPER puts the odd pad at the end, SAME_LOWER at the beginning."""
    if min(total) < 0:
        raise ValueError("auto_pad=SAME_* with a stride longer than the kernel needs negative pads, which ONNX "
                         "Runtime versions treat differently; give explicit pads")
    small = tuple(t // 2 for t in total)
    big = tuple(t - s for t, s in zip(total, small, strict=True))
    return (small, big) if attr("auto_pad", None) == "SAME_UPPER" else (big, small)


def _window(b: Backward, kernel: list[int]) -> Window:
    return window(b.attr, _spatial(b, b.x()), kernel)


def window(attr: Attr, size: tuple[int, ...], kernel: Sequence[int]) -> Window:
    """The window of a Conv or pooling node (its attributes read by `attr(name, default)`) over spatial sizes `size`,
    input 0 -> output 0 (output sizes computed here: onnx's shape inference gets some ceil_mode cases wrong)."""
    n = len(size)
    strides, dilations = _axes_attr(attr, "strides", n), _axes_attr(attr, "dilations", n)
    span = _spans(tuple(kernel), dilations)
    if attr("auto_pad", "NOTSET") in ("SAME_UPPER", "SAME_LOWER"):
        if any(d > 1 for d in dilations):
            raise ValueError("auto_pad=SAME_* with dilations is sized differently by ONNX Runtime and the ONNX "
                             "spec; give explicit pads")
        out = tuple(-(-i // s) for i, s in zip(size, strides, strict=True))
        begin, end = _same_pads(attr, [(o - 1) * s + sp - i for i, o, s, sp in zip(size, out, strides, span,
                                                                                    strict=True)])
    else:
        begin, end = _explicit_pads(attr, n)
        ceil = attr("ceil_mode", 0)
        out = tuple((i + bg + e - sp + (s - 1 if ceil else 0)) // s + 1
                    for i, s, sp, bg, e in zip(size, strides, span, begin, end, strict=True))
        if ceil and any((o - 1) * s >= i + bg for o, s, i, bg in zip(out, strides, size, begin, strict=True)):
            raise ValueError("with ceil_mode its last window starts past the input, which ONNX Runtime versions "
                             "size differently; change the pads or use ceil_mode=0")
    return Window(size, out, tuple(kernel), strides, dilations, begin, end)


def _reframe(b: Backward, t: str, start: list[int], length: list[int], full: list[int], fill: float = 0.0) -> str:
    """Spatial positions [start, start + length) of `t` (spatial dims `full` after two leading
    axes); positions outside `t` are `fill`."""
    n = len(full)
    lo = [max(0, s) for s in start]
    hi = [min(f, s + ln) for s, ln, f in zip(start, length, full, strict=True)]
    if lo != [0] * n or hi != list(full):
        t = b.op("Slice", t, b.ints(lo), b.ints(hi), b.ints(list(range(2, 2 + n))))
    before = [max(0, -s) for s in start]
    after = [max(0, s + ln - f) for s, ln, f in zip(start, length, full, strict=True)]
    if any(before) or any(after):
        t = b.op("Pad", t, b.ints([0, 0, *before, 0, 0, *after]), b.const(fill, like=b.x()))
    return t


def _sum_channels(b: Backward, dy: str) -> str:
    """A bias gradient: dY summed over every axis but the channels."""
    return b.reduce("ReduceSum", dy, [0, *range(2, b.need_rank(b.y()))], keepdims=False)


# -- convolution -------------------------------------------------------------------------------


def _conv_transposed(b: Backward, dy: str, weight: str, w: Window, group: int, weight_dims: list[int]) -> str:
    """dY (output side of `w`) mapped back to the input side: the adjoint of the convolution."""
    n = len(w.size)
    flipped = set(w.strides) == {1} and math.prod(w.size) >= FLIPPED_FROM
    if group == 1 and not flipped:  # a ConvTranspose, its output padded or cropped to exactly the input size
        extra = [r - bg - s for r, bg, s in zip(w.reach, w.begin, w.size, strict=True)]
        return b.op("ConvTranspose", dy, weight, strides=list(w.strides), dilations=list(w.dilations),
                    pads=[*w.begin, *(max(e, 0) for e in extra)], output_padding=[max(-e, 0) for e in extra])
    # Grouped or flipped: a Conv of the zero-dilated dY with the kernel flipped and regrouped to [C, M/g, k...].
    out_channels, group_in = weight_dims[:2]
    regrouped = b.op("Transpose", b.op("Reshape", weight, b.ints([group, out_channels // group, group_in,
                                                                  *w.kernel])), perm=[0, 2, 1, *range(3, 3 + n)])
    regrouped = b.op("Reshape", regrouped, b.ints([group * group_in, out_channels // group, *w.kernel]))
    flipped = b.op("Slice", regrouped, b.ints([-1] * n), b.ints([SLICE_TO_START] * n),
                   b.ints(list(range(2, 2 + n))), b.ints([-1] * n))
    dilated = _dilate(b, dy, w.out, w.strides)
    left = [sp - 1 - bg for sp, bg in zip(w.span, w.begin, strict=True)]
    right = [s + bg - o * st for s, bg, o, st in zip(w.size, w.begin, w.out, w.strides, strict=True)]
    pads = [*(max(v, 0) for v in left), *(max(v, 0) for v in right)]
    full = [o * st + pads[i] + pads[n + i] - sp + 1 for i, (o, st, sp) in enumerate(zip(w.out, w.strides, w.span,
                                                                                      strict=True))]
    conv = b.op("Conv", dilated, flipped, group=group, dilations=list(w.dilations), pads=pads)
    return _reframe(b, conv, [max(-v, 0) for v in left], list(w.size), full)


def _dilate(b: Backward, t: str, dims: tuple[int, ...], strides: tuple[int, ...]) -> str:
    """`t` (spatial `dims`) with strides - 1 zeros after every element along each spatial axis."""
    if all(s == 1 for s in strides):
        return t
    n = len(dims)
    spread = b.op("Reshape", t, b.ints([0, 0, *(v for d in dims for v in (d, 1))]))
    zeros_after = [0] * (2 + 2 * n) + [0, 0, *(v for s in strides for v in (0, s - 1))]
    padded = b.op("Pad", spread, b.ints(zeros_after), b.const(0.0, like=b.x()))
    return b.op("Reshape", padded, b.ints([0, 0, *(d * s for d, s in zip(dims, strides, strict=True))]))


def _correlate(b: Backward, a: str, k: str, w: Window, group: int, a_channels: int, k_channels: int) -> str:
    """The weight gradient [k_channels, a_channels / group, kernel...]: every tap of `w`
    correlates the padded input-side `a` with the output-side `k`, summed over the batch and
    the positions. A GEMM does it (one per group): `a` gathered into columns, a row per channel
    and tap, against `k`, a row per channel. Both are laid out batch-last, so each gathered
    piece is one contiguous run of the batch (a Conv over the batch with batch and channels
    swapped, as before, ran 2-11x slower in ONNX Runtime: a kernel the size of the image).
    The columns are made at most COLUMN_BYTES an example at a time, the positions in chunks."""
    n = len(w.size)
    batch_last = [1, *range(2, 2 + n), 0]
    rows = b.op("Reshape", b.op("Transpose", a, perm=batch_last), b.ints([a_channels, math.prod(w.size), -1]))
    rows = b.op("Pad", rows, b.ints([0, 0, 0, 0, 1, 0]), b.const(0.0, like=a))  # a zero row for the padding
    positions = tap_positions(w)  # [taps, output positions]
    taps, count = positions.shape
    k_rows = b.op("Reshape", b.op("Transpose", k, perm=batch_last), b.ints([k_channels, count, -1]))
    itemsize = helper.tensor_dtype_to_np_dtype(b.dtype(a)).itemsize
    chunk = max(1, COLUMN_BYTES // (a_channels * taps * itemsize))
    parts = []
    for lo in range(0, count, chunk):
        hi = min(count, lo + chunk)
        columns = b.op("Gather", rows, b.ints(positions[:, lo:hi]), axis=1)  # [a_channels, taps, hi - lo, N]
        k_part = k_rows if hi - lo == count else b.op("Slice", k_rows, b.ints([lo]), b.ints([hi]), b.ints([1]))
        parts.append(_columns_product(b, columns, k_part, group, a_channels * taps, k_channels))
    return b.op("Reshape", b.add_up(parts), b.ints([k_channels, a_channels // group, *w.kernel]))


def _columns_product(b: Backward, columns: str, k_part: str, group: int, rows: int, k_channels: int) -> str:
    """[k_channels, rows / group] (per group): `k_part` against the gathered `columns`, both
    flattened to positions x batch. The GEMM makes the longer side its rows: MLAS ran a [32, 288] product over
    32K positions at 91 GFLOP/s, its transpose at 178."""
    if group == 1:
        k_2d = b.op("Reshape", k_part, b.ints([k_channels, -1]))
        columns_2d = b.op("Reshape", columns, b.ints([rows, -1]))
        if rows <= k_channels:
            return b.op("Gemm", k_2d, columns_2d, transB=1)
        # a MatMul, as a Transpose of a Gemm's output would be fused back (GemmTransposeFusion); ORT folds k's
        # transpose into it (FusedMatMul)
        return b.op("Transpose", b.op("MatMul", columns_2d, b.op("Transpose", k_2d, perm=[1, 0])), perm=[1, 0])
    # per group [rows / group, positions x N] @ [positions x N, k_channels / group], then turned
    columns = b.op("Reshape", columns, b.ints([group, rows // group, -1]))
    k_cols = b.op("Transpose", b.op("Reshape", k_part, b.ints([group, k_channels // group, -1])), perm=[0, 2, 1])
    return b.op("Transpose", b.op("MatMul", columns, k_cols), perm=[0, 2, 1])


def tap_positions(w: Window) -> np.ndarray:
    """[taps, output positions]: the flat input position each tap of each window reads, or the
    input's size (one past its end) where it reads padding."""
    n = len(w.size)
    flat, inside = np.zeros((), np.int64), np.ones((), bool)
    for i, (size, out, k, s, d, bg) in enumerate(zip(w.size, w.out, w.kernel, w.strides, w.dilations, w.begin,
                                                     strict=True)):
        coordinate = (np.arange(k) * d)[:, None] + (np.arange(out) * s - bg)[None, :]
        shape = [1] * (2 * n)
        shape[i], shape[n + i] = k, out
        coordinate = coordinate.reshape(shape)
        flat = flat * size + coordinate
        inside = inside & (coordinate >= 0) & (coordinate < size)
    return np.where(inside, flat, math.prod(w.size)).reshape(len(w.taps), math.prod(w.out))


@rule("Conv")
def conv(b: Backward) -> list[str | None]:
    x, weight, dy = b.x(0), b.x(1), b.dy()
    group = b.attr("group", 1)
    weight_dims = _static(b, weight)
    w = _window(b, weight_dims[2:])
    dx = _conv_transposed(b, dy, weight, w, group, weight_dims) if b.wants(0) else None
    dw = _correlate(b, x, dy, w, group, weight_dims[1] * group, weight_dims[0]) if b.wants(1) else None
    db = _sum_channels(b, dy) if b.num_inputs > 2 and b.x(2) and b.wants(2) else None
    return [dx, dw, db]


@rule("ConvTranspose")
def conv_transpose(b: Backward) -> list[str | None]:
    # ConvTranspose is the adjoint of a Conv from Y's size to X's: its window runs over Y.
    if b.attr("output_shape"):
        raise ValueError("ConvTranspose with output_shape has no gradient rule; give pads and output_padding")
    x, weight, dy = b.x(0), b.x(1), b.dy()
    group = b.attr("group", 1)
    weight_dims = _static(b, weight)
    size = _spatial(b, x)
    n = len(size)
    kernel = tuple(weight_dims[2:])
    strides, dilations = _axes_attr(b.attr, "strides", n), _axes_attr(b.attr, "dilations", n)
    output_padding = b.attr("output_padding") or [0] * n
    full = [s * (i - 1) + p + sp for i, s, p, sp in zip(size, strides, output_padding, _spans(kernel, dilations),
                                                        strict=True)]
    if b.attr("auto_pad", "NOTSET") in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = _same_pads(b.attr, [f - i * s for f, i, s in zip(full, size, strides, strict=True)])
    else:
        begin, end = _explicit_pads(b.attr, n)
    out = tuple(f - bg - e for f, bg, e in zip(full, begin, end, strict=True))
    w = Window(out, size, kernel, strides, dilations, begin, end)
    dx = dw = db = None
    if b.wants(0):
        conv = b.op("Conv", dy, weight, group=group, strides=list(strides), dilations=list(dilations),
                    pads=[*begin, *end])
        length = [(o + bg + e - sp) // s + 1 for o, bg, e, sp, s in zip(out, begin, end, w.span, strides, strict=True)]
        dx = _reframe(b, conv, [0] * n, list(size), length)
    if b.wants(1):
        dw = _correlate(b, dy, x, w, group, weight_dims[1] * group, weight_dims[0])
    if b.num_inputs > 2 and b.x(2) and b.wants(2):
        db = _sum_channels(b, dy)
    return [dx, dw, db]


# -- pooling -----------------------------------------------------------------------------------


def _pool_window(b: Backward) -> Window:
    if b.attr("kernel_shape") is None:
        raise ValueError("it has no kernel_shape")
    return _window(b, list(b.attr("kernel_shape")))


def _unfold(b: Backward, x: str, w: Window) -> str:
    """The windows of `w` over `x` as [taps, N, C, out...] (padding reads as -inf)."""
    n = len(w.size)
    framed = _reframe(b, x, [-p for p in w.begin], w.reach, list(w.size), fill=-np.inf)
    axes, strides = b.ints(list(range(2, 2 + n))), b.ints(list(w.strides))
    pieces = []
    for tap in w.taps:
        start = [t * d for t, d in zip(tap, w.dilations, strict=True)]
        stop = [s + (o - 1) * st + 1 for s, o, st in zip(start, w.out, w.strides, strict=True)]
        pieces.append(b.unsqueeze(b.op("Slice", framed, b.ints(start), b.ints(stop), axes, strides), [0]))
    return b.op("Concat", *pieces, axis=0) if len(pieces) > 1 else pieces[0]


def _first_max(b: Backward, windows: str, y: str, dy: str, taps: int, trailing: int) -> str:
    """dY routed to the first maximum of every window. The window axis (of `taps`) is the first
    axis of `windows`, followed by `trailing` axes, or its last when `trailing` is 0; `y` and
    `dy` broadcast against `windows` with that axis as 1."""
    order = b.const(np.arange(taps, 0, -1).reshape([taps] + [1] * trailing), like=b.x())
    dtype = b.dtype(b.x())
    score = b.op("Mul", b.op("Cast", b.op("Equal", windows, y), to=dtype), order)  # earlier maxima score higher
    first = b.op("Equal", score, b.reduce("ReduceMax", score, [0 if trailing else -1], keepdims=True))
    return b.op("Mul", b.op("Cast", first, to=dtype), dy)


def _fold(b: Backward, pieces: list[str], w: Window) -> str:
    """The input-side gradient from one [N, C, out...] piece per tap of `w` (in `taps` order):
    the sum over taps of each piece placed at its positions out * stride + tap * dilation.

    Taps are grouped by their offset modulo the stride; each group lands on one sub-grid
    (members shifted by whole strides, then added), and the sub-grids are interleaved."""
    n = len(w.size)
    shifts = [[t * d // s for t, d, s in zip(tap, w.dilations, w.strides, strict=True)] for tap in w.taps]
    most = [max(q[i] for q in shifts) for i in range(n)]
    grid = [o + m for o, m in zip(w.out, most, strict=True)]
    classes: dict[tuple[int, ...], list[str]] = {}
    for piece, tap, shift in zip(pieces, w.taps, shifts, strict=True):
        if any(most):
            piece = b.op("Pad", piece, b.ints([0, 0, *shift, 0, 0, *(m - q for m, q in zip(most, shift, strict=True))]),
                         b.const(0.0, like=b.x()))
        residue = tuple(t * d % s for t, d, s in zip(tap, w.dilations, w.strides, strict=True))
        classes.setdefault(residue, []).append(piece)
    zero = None
    parts = {}
    for residue in itertools.product(*(range(s) for s in w.strides)):
        members = classes.get(residue)
        if members is None:
            if zero is None:
                some = next(iter(classes.values()))[0]
                zero = b.zeros(b.op("Shape", some))
            parts[residue] = zero
        else:
            parts[residue] = b.add_up(members)
    merged = _interleave(b, parts, grid, list(w.strides))
    frame = [g * s for g, s in zip(grid, w.strides, strict=True)]
    return _reframe(b, merged, list(w.begin), list(w.size), frame)


def _interleave(b: Backward, parts: dict[tuple[int, ...], str], grid: list[int], strides: list[int]) -> str:
    """One [N, C, grid * strides] tensor whose element at grid * stride + r is parts[r][grid]."""
    n = len(grid)
    dims = list(grid)
    for i in reversed(range(n)):
        if strides[i] > 1:
            axis = 3 + i
            dims[i] *= strides[i]
            joined, made = {}, {}
            for prefix in itertools.product(*(range(s) for s in strides[:i])):
                names = tuple(parts[(*prefix, r)] for r in range(strides[i]))
                if names not in made:  # repeated pieces (an upsampling) are joined once
                    stack = b.op("Concat", *(b.unsqueeze(name, [axis]) for name in names), axis=axis)
                    made[names] = b.op("Reshape", stack, b.ints([0, 0, *dims]))
                joined[prefix] = made[names]
            parts = joined
        else:
            parts = {key[:i]: value for key, value in parts.items()}
    return parts[()]


def _upsample(b: Backward, t: str, w: Window) -> str:
    """Every element of `t` ([N, C, out...]) repeated over its window, when windows tile."""
    return _interleave(b, dict.fromkeys(w.taps, t), list(w.out), list(w.kernel))


def _tiles(w: Window) -> bool:
    """Whether the windows tile the padded input: stride = kernel, no dilation."""
    return w.strides == w.kernel and set(w.dilations) == {1}


def _window_counts(w: Window, include_pad: bool) -> np.ndarray:
    """How many taps of each output window AveragePool divides by, shaped like the output."""
    counts = np.ones((), dtype=np.int64)
    for size, out, k, s, d, bg, e in zip(w.size, w.out, w.kernel, w.strides, w.dilations, w.begin, w.end, strict=True):
        positions = np.arange(out)[:, None] * s - bg + np.arange(k)[None, :] * d
        lo, hi = (-bg, size + e) if include_pad else (0, size)
        axis_counts = ((positions >= lo) & (positions < hi)).sum(axis=1)
        counts = np.multiply.outer(counts, axis_counts)
    return np.maximum(counts, 1)


@rule("MaxPool")
def max_pool(b: Backward) -> list[str | None]:
    w = _pool_window(b)
    if _tiles(w):
        return [_max_pool_tiled(b, w)]
    if b.opset >= 16:  # ScatterElements adds up repeated indices from opset 16
        return [_max_pool_indexed(b)]
    taps = len(w.taps)
    windows = _unfold(b, b.x(), w)
    routed = _first_max(b, windows, b.y(), b.dy(), taps, 2 + len(w.size))
    pieces = b.op("Split", routed, b.ints([1] * taps), axis=0, outputs=taps) if taps > 1 else [routed]
    return [_fold(b, [b.squeeze(p, [0]) for p in pieces], w)]


def _max_pool_indexed(b: Backward) -> str:
    """dY added up at the flat positions of the maxima (MaxPool's Indices, over the whole tensor; the
    forward's own where it has them): windows that overlap need no cutting up. ResNet's 3x3 stride-2
    stem pool over [16, 64, 112, 112]: 55 ms (the indexed MaxPool 40, the scatter 15) against ~170 ms
    for its nine strided Slices and their interleaving."""
    node = b.node
    if len(node.output) > 1 and node.output[1] and b.attr("storage_order", 0) == 0:
        indices = node.output[1]
    else:
        kept = ("auto_pad", "ceil_mode", "dilations", "kernel_shape", "pads", "strides")
        attrs = {name: b.attr(name) for name in kept if b.attr(name) is not None}
        _, indices = b.op("MaxPool", b.x(), outputs=2, **attrs)
    flat = [b.op("Reshape", name, b.ints([-1])) for name in (indices, b.dy())]
    zeros = b.zeros(b.op("Reshape", b.op("Size", b.x()), b.ints([1])))
    return b.op("Reshape", b.op("ScatterElements", zeros, *flat, axis=0, reduction="add"), b.shape(b.x()))


def _max_pool_tiled(b: Backward, w: Window) -> str:
    """MaxPool's gradient when the windows tile the input, at full size without cutting x up:
    y and dy are repeated over their windows, and the first maximum of each window is the one
    with the highest score (1 if it is a maximum, times its reversed rank in window order)."""
    frame = [o * k for o, k in zip(w.out, w.kernel, strict=True)]
    x = _reframe(b, b.x(), [-p for p in w.begin], frame, list(w.size), fill=-np.inf)
    order = np.tile(np.arange(len(w.taps), 0, -1).reshape(w.kernel), w.out)
    dtype = b.dtype(b.x())
    score = b.op("Mul", b.op("Cast", b.op("Equal", x, _upsample(b, b.y(), w)), to=dtype), b.const(order, like=b.x()))
    best = b.op("MaxPool", score, kernel_shape=list(w.kernel), strides=list(w.kernel))
    first = b.op("Cast", b.op("Equal", score, _upsample(b, best, w)), to=dtype)
    return _reframe(b, b.op("Mul", first, _upsample(b, b.dy(), w)), list(w.begin), list(w.size), frame)


@rule("AveragePool")
def average_pool(b: Backward) -> list[str | None]:
    w = _pool_window(b)
    include_pad = bool(b.attr("count_include_pad", 0))
    if include_pad and any(r > s + bg + e for r, s, bg, e in zip(w.reach, w.size, w.begin, w.end, strict=True)):
        raise ValueError("with ceil_mode and count_include_pad its last window runs past the padding, which ONNX "
                         "Runtime versions count differently; change the pads or use ceil_mode=0")
    counts = _window_counts(w, include_pad)
    share = b.op("Div", b.dy(), b.const(counts, like=b.x()))
    return [_fold(b, [share] * len(w.taps), w)]


@rule("GlobalAveragePool")
def global_average_pool(b: Backward) -> list[str | None]:
    x = b.x()
    dims = b.dims(x)
    if dims is not None and all(isinstance(d, int) for d in dims[2:]):
        scale = b.const(1.0 / math.prod(dims[2:]), like=x)
    else:
        count = b.op("ReduceProd", b.op("Slice", b.shape(x), b.ints([2]), b.ints([2**62])), keepdims=1)
        scale = b.op("Reciprocal", b.cast_like(count, x))
    return [b.op("Expand", b.op("Mul", b.dy(), scale), b.shape(x))]


@rule("GlobalMaxPool")
def global_max_pool(b: Backward) -> list[str | None]:
    x = b.x()
    taps = math.prod(_spatial(b, x))
    flat = [b.op("Reshape", name, b.ints([0, 0, -1])) for name in (x, b.y(), b.dy())]
    return [b.op("Reshape", _first_max(b, *flat, taps, 0), b.shape(x))]


@rule("MaxUnpool")
def max_unpool(b: Backward) -> list[str | None]:
    # y is zeros but for X's values at their flat positions I (MaxPool's indices, over the whole tensor;
    # nn.MaxUnpool2d): dX reads dy at those positions
    return [b.op("Gather", b.op("Reshape", b.dy(), b.ints([-1])), b.x(1)), None, None]


@rule("Col2Im")
def col2im(b: Backward) -> list[str | None]:
    # y adds each column's block of values into the image (PyTorch's F.fold); dx reads the blocks
    # back out of dy (im2col): a Conv of each channel with one one-hot kernel per block position.
    block = b.value(b.x(2))
    if block is None:
        raise ValueError("its block_shape is not a constant")
    block = [int(v) for v in block.reshape(-1)]
    taps = math.prod(block)
    one_hot = b.const(np.eye(taps).reshape([taps, 1, *block]), like=b.dy())
    image = b.op("Slice", b.shape(b.dy()), b.ints([2]), b.ints([2 + len(block)]))
    channels = b.op("Reshape", b.dy(), b.op("Concat", b.ints([-1, 1]), image, axis=0))
    attrs = {name: b.attr(name) for name in ("dilations", "pads", "strides") if b.attr(name) is not None}
    return [b.op("Reshape", b.op("Conv", channels, one_hot, **attrs), b.shape(b.x()))]


# -- resizing ----------------------------------------------------------------------------------

RESIZE_MODES = ("nearest", "linear", "cubic")
RESIZE_TRANSFORMS = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "half_pixel_symmetric")
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


def _cubic(distance: np.ndarray, a: float) -> np.ndarray:
    """The cubic convolution kernel (Keys) with coefficient `a`, for distances up to 2."""
    d = np.abs(distance)
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return np.where(d <= 1, near, np.where(d < 2, far, 0.0))


def interpolation_matrix(size: int, out: int, scale: float, mode: str, transform: str,
                         nearest_mode: str = "round_prefer_floor", cubic_a: float = -0.75,
                         exclude_outside: bool = False) -> np.ndarray:
    """The [out, size] matrix of a 1-D Resize: output = matrix @ input (ONNX semantics)."""
    o = np.arange(out, dtype=np.float64)
    if transform == "align_corners":
        x = o * (size - 1) / (out - 1) if out > 1 else np.zeros(out)
    elif transform == "asymmetric":
        x = o / scale
    elif transform == "pytorch_half_pixel" and out == 1:
        x = np.zeros(out)
    elif transform == "half_pixel_symmetric":  # half_pixel, shifted to keep the centre where the size was rounded
        x = size / 2 * (1 - out / (scale * size)) + (o + 0.5) / scale - 0.5
    else:  # half_pixel, pytorch_half_pixel
        x = (o + 0.5) / scale - 0.5
    matrix = np.zeros((out, size))
    rows = np.arange(out)
    if mode == "nearest":
        rounded = {"round_prefer_floor": np.ceil(x - 0.5), "round_prefer_ceil": np.floor(x + 0.5),
                   "floor": np.floor(x), "ceil": np.ceil(x)}[nearest_mode]
        matrix[rows, np.clip(rounded, 0, size - 1).astype(np.int64)] = 1.0
        return matrix
    if mode == "cubic":  # four taps around the pixel left of x (x - 1 when x is whole), edges repeated
        left = np.ceil(x) - 1
        taps = left[:, None] + np.arange(-1, 3)
        weights = _cubic(x[:, None] - taps, cubic_a)
        if exclude_outside:  # taps past the ends get no weight, the rest share it
            weights = np.where((taps >= 0) & (taps < size), weights, 0.0)
            weights /= weights.sum(axis=1, keepdims=True)
        np.add.at(matrix, (np.repeat(rows, 4), np.clip(taps, 0, size - 1).astype(np.int64).ravel()), weights.ravel())
        return matrix
    x = np.clip(x, 0, size - 1)
    low = np.floor(x).astype(np.int64)
    frac = x - low
    np.add.at(matrix, (rows, low), 1 - frac)
    np.add.at(matrix, (rows, np.minimum(low + 1, size - 1)), frac)
    return matrix


def _resize_scales(b: Backward, size: list, out: list) -> list[float | None]:
    """The scale of every axis (None: not known before run time)."""
    rank = len(size)
    scales_in = b.x(2) if b.num_inputs > 2 else ""
    values = b.value(scales_in) if scales_in else None
    if scales_in and values is None:
        raise ValueError("its scales are computed at run time; give them as a constant")
    if values is not None and values.size:
        scales: list[float | None] = [1.0] * rank
        for axis, value in zip(b.attr("axes") or range(rank), values.reshape(-1).tolist(), strict=True):
            scales[axis % rank] = value
        return scales
    if b.attr("keep_aspect_ratio_policy", "stretch") != "stretch":
        raise ValueError("only keep_aspect_ratio_policy='stretch' is supported")
    return [1.0 if s == o else o / s if isinstance(s, int) and isinstance(o, int) else None
            for s, o in zip(size, out, strict=True)]


@rule("Resize")
def resize(b: Backward) -> list[str | None]:
    mode = b.attr("mode", "nearest")
    transform = b.attr("coordinate_transformation_mode", "half_pixel")
    nearest_mode = b.attr("nearest_mode", "round_prefer_floor")
    if mode not in RESIZE_MODES or transform not in RESIZE_TRANSFORMS or nearest_mode not in NEAREST_MODES:
        raise ValueError(f"mode={mode!r}, coordinate_transformation_mode={transform!r}, nearest_mode={nearest_mode!r} "
                         f"is not supported: use mode {RESIZE_MODES} with {RESIZE_TRANSFORMS}")
    size, out = b.dims(b.x()), b.dims(b.y())
    if size is None or out is None:
        raise ValueError("the ranks of its input and output are unknown")
    rank = len(size)
    grad = b.dy()
    if size == out:  # ONNX Runtime copies the input when no size changes, whatever the scales
        return [grad] + [None] * (b.num_inputs - 1)
    for axis, scale in enumerate(_resize_scales(b, size, out)):
        if scale == 1.0:
            continue
        if scale is None or not isinstance(size[axis], int) or not isinstance(out[axis], int):
            raise ValueError("only resizing to sizes known before run time is supported")
        if b.attr("antialias", 0) and scale < 1:
            raise ValueError("antialiased downsampling is not supported")
        matrix = interpolation_matrix(size[axis], out[axis], scale, mode, transform, nearest_mode,
                                      b.attr("cubic_coeff_a", -0.75), bool(b.attr("exclude_outside", 0)))
        if axis == rank - 1:
            grad = b.op("MatMul", grad, b.const(matrix, like=b.x()))
        elif axis == rank - 2:
            grad = b.op("MatMul", b.const(matrix.T, like=b.x()), grad)
        else:  # a volume's depth (nn.Upsample of [N, C, D, H, W]): swapped next to last, mapped, swapped back
            swap = list(range(rank))
            swap[axis], swap[rank - 2] = rank - 2, axis
            grad = b.op("MatMul", b.const(matrix.T, like=b.x()), b.op("Transpose", grad, perm=swap))
            grad = b.op("Transpose", grad, perm=swap)
    return [grad] + [None] * (b.num_inputs - 1)
