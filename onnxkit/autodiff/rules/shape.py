"""Gradient rules: ops that move, select or copy elements (reshape, transpose, concat, slice,
gather, expand, tile, pad, depth-to-space) and Dropout. Index, shape and mask inputs get no
gradient."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto

from onnxkit.autodiff.builder import Backward
from onnxkit.autodiff.rules import rule
from onnxkit.metadata_keys import PADDING_ROW_KEY

SMALL_TABLE = 256  # rows of a gathered table up to which its gradient is a GEMM, not a scatter


@rule("Reshape", "Flatten", "Squeeze", "Unsqueeze")
def reshape(b: Backward) -> list[str | None]:
    return [b.op("Reshape", b.dy(), b.shape(b.x()))]


@rule("Transpose")
def transpose(b: Backward) -> list[str | None]:
    perm = b.attr("perm") or list(reversed(range(b.need_rank(b.x()))))
    inverse = [perm.index(i) for i in range(len(perm))]
    return [b.graph.transpose(b.dy(), inverse)]


def _dim(b: Backward, name: str, axis: int) -> str:
    """Size of `axis` of forward value `name`, as an int64 [1] tensor."""
    return b.op("Gather", b.shape(name), b.ints([axis]))


@rule("Concat")
def concat(b: Backward) -> list[str | None]:
    axis = b.attr("axis")
    if axis < 0:
        axis += b.need_rank(b.y())
    sizes = b.op("Concat", *[_dim(b, x, axis) for x in b.node.input], axis=0)
    parts = b.op("Split", b.dy(), sizes, axis=axis, outputs=b.num_inputs)
    parts = parts if isinstance(parts, list) else [parts]
    return [part if b.wants(i) else None for i, part in enumerate(parts)]


@rule("Split")
def split(b: Backward) -> list[str | None]:
    dys = [b.dy(i) or b.zeros(b.shape(y)) for i, y in enumerate(b.node.output)]
    return [b.op("Concat", *dys, axis=b.attr("axis", 0))]



def _scatter_into_zeros(b: Backward, selected_positions: str, values: str, *, distinct: bool = False) -> str:
    """A tensor shaped like input 0, zero except `values` (any shape) at the flat positions
    `selected_positions` (same shape), which may repeat: repeats add up. `distinct` positions (a Slice's) are
    written as they are: summing repeats before opset 16 takes a one-hot of [positions, positions], 4 TB for a
    tf2onnx magika's Slice of its 2048 x 128 activations."""
    x = b.x()
    flat = b.op("Reshape", values, b.ints([-1]))
    zeros = b.zeros(b.op("Reshape", b.op("Size", x), b.ints([1])))
    where = b.op("Reshape", selected_positions, b.ints([-1]))
    summed = b.op("ScatterElements", zeros, where, flat, axis=0) if distinct else _add_rows(b, zeros, where, flat)
    return b.op("Reshape", summed, b.shape(x))


def _add_rows(b: Backward, zeros: str, index: str, values: str, rank: int = 1) -> str:
    """`zeros` with each row `values[i]` (of rank `rank` in all) added to its row `index[i]` (int64 [M]; rows may
    repeat).

    ScatterElements adds up repeats from opset 16 (ScatterND loses some across onnxruntime's CPU threads). Before,
    repeats are summed first: Unique's rows, and a GEMM of the one-hot of each value's unique row ([M, U], at most
    M x M) against the values; then ScatterND writes each unique row once."""
    if b.opset >= 16:
        where = b.op("Expand", b.op("Reshape", index, b.ints([-1] + [1] * (rank - 1))), b.shape(values))
        return b.op("ScatterElements", zeros, where, values, axis=0, reduction="add")
    rows, _, inverse, _ = b.op("Unique", index, outputs=4, sorted=1)
    hot = b.op("OneHot", inverse, b.op("Size", rows), b.graph.const([0.0, 1.0], TensorProto.FLOAT))
    if b.dtype(b.x()) != TensorProto.FLOAT:  # the values' type (onnxruntime's OneHot has no float64 kernel)
        hot = b.op("Cast", hot, to=b.dtype(b.x()))
    sums = b.op("Gemm", hot, b.op("Reshape", values, b.ints([-1, 1] if rank == 1 else [0, -1])), transA=1)
    row_shape = b.op("Slice", b.shape(values), b.ints([1]), b.ints([2**62]))
    sums = b.op("Reshape", sums, b.op("Concat", b.ints([-1]), row_shape, axis=0))
    return b.op("ScatterND", zeros, b.unsqueeze(rows, [1]), sums)


def _positions(b: Backward) -> str:
    """The flat position of every element of input 0, shaped like it."""
    x = b.x()
    count = b.op("ReduceProd", b.shape(x), keepdims=0)
    index = b.op("Range", b.ints(0), count, b.ints(1))
    return b.op("Reshape", index, b.shape(x))


@rule("Slice")
def slice_(b: Backward) -> list[str | None]:
    # The flat positions the slice picked, then dy scattered back to them.
    picked = b.op("Slice", _positions(b), *b.node.input[1:])
    return [_scatter_into_zeros(b, picked, b.dy(), distinct=True)]


@rule("Gather")
def gather(b: Backward) -> list[str | None]:
    if b.attr("axis", 0) != 0:
        picked = b.op("Gather", _positions(b), b.x(1), axis=b.attr("axis", 0))
        return [_scatter_into_zeros(b, picked, b.dy()), None]
    # rows (an embedding lookup): dy's rows added back into the rows they were read from
    x, index = b.x(0), b.x(1)
    if b.dtype(index) != TensorProto.INT64:  # int32 ids: the shape arithmetic below is int64
        index = b.op("Cast", index, to=TensorProto.INT64)
    dims, rank = b.dims(x), b.need_rank(x)
    index = b.op("Where", b.op("Less", index, b.ints(0)), b.op("Add", index, _dim(b, x, 0)), index)
    dy, padding = b.dy(), padding_row(b.node)
    if padding is not None:  # nn.Embedding(padding_idx): its lookups send that row no gradient
        other = b.op("Not", b.op("Equal", index, b.ints(padding)))
        dy = b.keep(dy, b.unsqueeze(other, list(range(1 - rank, 0))) if rank > 1 else other)
    small = dims is not None and len(dims) == 2 and all(isinstance(d, int) for d in dims) and dims[0] <= SMALL_TABLE
    if small and b.dtype(x) == TensorProto.FLOAT:
        # a few rows (token types): dy's rows summed per index by one GEMM against the one-hot
        # rows, 25x faster than onnxruntime's element-by-element scatter (0.12 against 3.1 ms
        # for MiniLM's 2 x 384 table at 2048 positions)
        hot = b.op("OneHot", b.op("Reshape", index, b.ints([-1])), b.ints([dims[0]]), b.const([0.0, 1.0]))
        return [b.op("Gemm", hot, b.op("Reshape", dy, b.ints([-1, dims[1]])), transA=1), None]
    row_shape = b.op("Slice", b.shape(x), b.ints([1]), b.ints([2**62]))
    values = b.op("Reshape", dy, b.op("Concat", b.ints([-1]), row_shape, axis=0))
    return [_add_rows(b, b.zeros(b.shape(x)), b.op("Reshape", index, b.ints([-1])), values, rank), None]


def padding_row(node: onnx.NodeProto) -> int | None:
    """The table row a Gather node's lookups leave untrained (`PADDING_ROW_KEY` in its metadata), or None."""
    marked = next((p.value for p in node.metadata_props if p.key == PADDING_ROW_KEY), None)
    return int(marked) if marked is not None and marked.isdigit() else None


@rule("GatherND")
def gather_nd(b: Backward) -> list[str | None]:
    picked = b.op("GatherND", _positions(b), b.x(1), batch_dims=b.attr("batch_dims", 0))
    return [_scatter_into_zeros(b, picked, b.dy()), None]


@rule("GatherElements")
def gather_elements(b: Backward) -> list[str | None]:
    if b.opset >= 16:  # scatter-add straight back along the axis
        zeros = b.zeros(b.shape(b.x()))
        return [b.op("ScatterElements", zeros, b.x(1), b.dy(), axis=b.attr("axis", 0), reduction="add"), None]
    picked = b.op("GatherElements", _positions(b), b.x(1), axis=b.attr("axis", 0))
    return [_scatter_into_zeros(b, picked, b.dy()), None]


@rule("Expand")
def expand(b: Backward) -> list[str | None]:
    return [b.unbroadcast(b.dy(), 0), None]


@rule("Tile")
def tile(b: Backward) -> list[str | None]:
    # dy viewed as [r0, d0, r1, d1, ...] summed over the r axes.
    x = b.x()
    rank = b.need_rank(x)
    pairs = b.op("Concat", b.op("Unsqueeze", b.x(1), b.ints([1])), b.op("Unsqueeze", b.shape(x), b.ints([1])), axis=1)
    viewed = b.op("Reshape", b.dy(), b.op("Reshape", pairs, b.ints([-1])))
    return [b.reduce("ReduceSum", viewed, list(range(0, 2 * rank, 2)), keepdims=False), None]


@rule("Pad")
def pad(b: Backward) -> list[str | None]:
    x = b.x()
    rank = b.need_rank(x)
    pads, known = (b.x(1), b.value(b.x(1))) if b.opset >= 11 else (b.ints(b.attr("pads")), np.asarray(b.attr("pads")))
    if b.num_inputs > 3 and b.x(3):  # pads for the listed axes only (opset 18)
        pads, known = _every_axis(b, pads, known, rank)
    if b.attr("mode", "constant") != "constant":
        folded = _folded(b, [int(p) for p in known.reshape(-1)], b.dims(x)) if known is not None else None
        if folded is not None:
            return [folded, None, None]
        # else every output element copies one input element, so the same Pad of each input
        # element's flat position says which, and dy adds up at those positions (a scatter)
        attrs = {"mode": b.attr("mode")} if b.opset >= 11 else {"mode": b.attr("mode"), "pads": b.attr("pads")}
        copied = b.op("Pad", _positions(b), *([pads] if b.opset >= 11 else []), **attrs)
        return [_scatter_into_zeros(b, copied, b.dy()), None, None]
    if known is None or (known < 0).any():  # a negative pad crops: dx is dy padded back with zeros there
        dx = b.op("Pad", b.dy(), b.op("Neg", pads))
    else:
        begin = b.op("Slice", pads, b.ints([0]), b.ints([rank]))
        dx = b.op("Slice", b.dy(), begin, b.op("Add", begin, b.shape(x)))
    dvalue = None
    if b.opset >= 11 and b.wants(2):  # the padding value fills every place dy has that dx took not from x
        filled = b.op("Sub", b.reduce("ReduceSum", b.dy(), None, keepdims=False),
                      b.reduce("ReduceSum", dx, None, keepdims=False))
        dvalue = b.op("Reshape", filled, b.shape(b.x(2)))
    return [dx, None, dvalue]


def _every_axis(b: Backward, pads: str, known: np.ndarray | None, rank: int) -> tuple[str, np.ndarray | None]:
    """Pad's `pads` for the axes of its axes input (and their value `known`, if constant) spread
    to every axis, zeros elsewhere."""
    axes = b.value(b.x(3))
    if axes is None:
        raise ValueError("Pad with an axes input that is not a constant has no gradient rule")
    slots = [int(a) % rank for a in axes.reshape(-1)]
    slots += [a + rank for a in slots]
    spread = b.op("ScatterElements", b.ints([0] * (2 * rank)), b.ints(slots), pads, axis=0)
    if known is None:
        return spread, None
    full = np.zeros(2 * rank, np.int64)
    full[slots] = known.reshape(-1)
    return spread, full


def _rows(b: Backward, t: str, axis: int, start: int, stop: int) -> str:
    return b.op("Slice", t, b.ints([start]), b.ints([stop]), b.ints([axis]))


def _reversed(b: Backward, t: str, axis: int) -> str:
    return b.op("Slice", t, b.ints([-1]), b.ints([-(2**62)]), b.ints([axis]), b.ints([-1]))


def _folded(b: Backward, pads: list[int], dims: list | None) -> str | None:
    """dy of a reflect / edge / wrap Pad folded back onto x one axis at a time (the padded rows
    added onto the rows they copy: a few slices and adds, not a scatter of every element); None
    when a padded axis has no static size or a pad reaches past what one fold covers."""
    mode, rank = b.attr("mode"), len(pads) // 2
    padded = [(axis, pads[axis], pads[axis + rank]) for axis in range(rank) if pads[axis] or pads[axis + rank]]
    for axis, before, after in padded:
        n = dims[axis] if dims else None
        if not isinstance(n, int) or min(before, after) < 0 or max(before, after) > (n - 1 if mode == "reflect" else n):
            return None
    grad = b.dy()
    for axis, before, after in padded:
        n = dims[axis]
        head, tail = _rows(b, grad, axis, 0, before), _rows(b, grad, axis, before + n, before + n + after)
        places = {  # what lands where on x: (rows, pad before them, pad after them)
            "reflect": [(_reversed(b, head, axis), 1, n - 1 - before), (_reversed(b, tail, axis), n - 1 - after, 1)],
            "edge": [(b.reduce("ReduceSum", head, [axis]), 0, n - 1), (b.reduce("ReduceSum", tail, [axis]), n - 1, 0)],
            "wrap": [(head, n - before, 0), (tail, 0, n - after)],
        }[mode]
        total = _rows(b, grad, axis, before, before + n)
        for (piece, low, high), count in zip(places, (before, after), strict=True):
            if count:
                spread = [0] * (2 * rank)
                spread[axis], spread[axis + rank] = low, high
                total = b.op("Add", total, b.op("Pad", piece, b.ints(spread)))
        grad = total
    return grad


@rule("ScatterElements")
def scatter_elements(b: Backward) -> list[str | None]:
    # data's elements pass through where no update lands (everywhere, with reduction add); each
    # update's gradient is dy where it landed (with repeated indices and no reduction, ONNX
    # leaves which update wins unspecified: each gets dy there, as in PyTorch's scatter)
    reduction = b.attr("reduction", "none")
    if reduction in ("max", "min"):
        return _scatter_extreme(b)
    if reduction not in ("none", "add"):
        raise ValueError(f"ScatterElements with reduction {reduction!r} has no gradient rule")
    axis, index = b.attr("axis", 0), b.x(1)
    d_data = None
    if b.wants(0):
        d_data = b.dy() if reduction == "add" else b.op(
            "ScatterElements", b.dy(), index, b.zeros(b.shape(b.x(2))), axis=axis)
    d_updates = b.op("GatherElements", _at_indices(b, b.dy()), index, axis=axis) if b.wants(2) else None
    return [d_data, None, d_updates]


def _scatter_extreme(b: Backward) -> list[str | None]:
    # y = the max (min) of data and the updates landing on each element: dy goes to the elements equal to y,
    # shared evenly between ties, as PyTorch's scatter_reduce("amax" / "amin") autograd shares it
    axis, index = b.attr("axis", 0), b.x(1)
    hit = b.cast_like(b.op("Equal", b.x(2), b.op("GatherElements", _at_indices(b, b.y()), index, axis=axis)), b.y())
    kept = b.cast_like(b.op("Equal", b.x(0), b.y()), b.y())
    count = b.op("Add", kept, b.op("ScatterElements", b.zeros(b.shape(b.y())), index, hit, axis=axis,
                                   reduction="add"))
    share = b.op("Div", b.dy(), count)
    d_data = b.op("Mul", share, kept) if b.wants(0) else None
    d_updates = b.op("Mul", b.op("GatherElements", _at_indices(b, share), index, axis=axis), hit) \
        if b.wants(2) else None
    return [d_data, None, d_updates]


def _at_indices(b: Backward, t: str) -> str:
    """`t` (shaped as ScatterElements' data) cut to the indices' extent off the axis, as GatherElements wants it."""
    axis, data, picked, rank = b.attr("axis", 0), b.dims(b.x()), b.dims(b.x(1)), b.need_rank(b.x())
    narrower = [isinstance(p, int) and isinstance(d, int) and p < d and k != axis % rank
                for k, (p, d) in enumerate(zip(picked or [], data or [], strict=False))]
    if not any(narrower):
        return t
    ends = [p if cut else 2**62 for p, cut in zip(picked, narrower, strict=True)]
    return b.op("Slice", t, b.ints([0] * rank), b.ints(ends))


@rule("ScatterND")
def scatter_nd(b: Backward) -> list[str | None]:
    # as ScatterElements, by index tuples (PyTorch's slice assignment x[:, 0] = v exports this)
    reduction = b.attr("reduction", "none")
    if reduction not in ("none", "add"):
        raise ValueError(f"ScatterND with reduction {reduction!r} has no gradient rule")
    index = b.x(1)
    d_data = None
    if b.wants(0):
        d_data = b.dy() if reduction == "add" else b.op("ScatterND", b.dy(), index, b.zeros(b.shape(b.x(2))))
    return [d_data, None, b.op("GatherND", b.dy(), index) if b.wants(2) else None]


@rule("Trilu")
def trilu(b: Backward) -> list[str | None]:
    return [b.op("Trilu", b.dy(), *b.node.input[1:], upper=b.attr("upper", 1)), None]  # the same mask


@rule("TopK")
def top_k(b: Backward) -> list[str | None]:
    # the values' gradient goes back to where they were taken from (indices are distinct)
    if b.dy(0) is None:
        return [None, None]
    zeros = b.zeros(b.shape(b.x()))
    return [b.op("ScatterElements", zeros, b.y(1), b.dy(0), axis=b.attr("axis", -1)), None]


@rule("SpaceToDepth")
def space_to_depth(b: Backward) -> list[str | None]:
    return [b.op("DepthToSpace", b.dy(), blocksize=b.attr("blocksize"), mode="DCR")]  # its inverse


@rule("DepthToSpace")
def depth_to_space(b: Backward) -> list[str | None]:
    block = b.attr("blocksize")
    back = b.op("SpaceToDepth", b.dy(), blocksize=block)  # DCR's inverse: channels ordered (row, column, c)
    if b.attr("mode", "DCR") == "DCR":
        return [back]
    # CRD (PyTorch's PixelShuffle) orders the input's channels (c, row, column): regroup
    dims = b.dims(b.x())
    channels = dims[1] if dims and len(dims) == 4 else None
    if isinstance(channels, int):
        grouped = b.op("Reshape", back, b.ints([0, block * block, channels // (block * block), -1]))
        return [b.op("Reshape", b.op("Transpose", grouped, perm=[0, 2, 1, 3]), b.shape(b.x()))]
    # channels known only at run time: [N, block^2, C / block^2, H, W] from x's shape
    shape = b.shape(b.x())
    split = b.op("Concat", b.op("Slice", shape, b.ints([0]), b.ints([1])), b.ints([block * block, -1]),
                 b.op("Slice", shape, b.ints([2]), b.ints([4])), axis=0)
    grouped = b.op("Reshape", back, split)
    return [b.op("Reshape", b.op("Transpose", grouped, perm=[0, 2, 1, 3, 4]), shape)]


@rule("Dropout")
def dropout(b: Backward) -> list[str | None]:
    # Training mode: y = x * mask / (1 - ratio); inference mode: identity.
    if b.opset < 12 or not b.x(2):
        return [b.dy()]
    if len(b.node.output) < 2 or not b.node.output[1]:
        raise ValueError("training-mode Dropout needs its mask output for a gradient")
    ratio = b.x(1) or b.const(0.5)
    one = b.const(1.0, ratio)
    scale = b.op("Where", b.x(2), b.op("Div", one, b.op("Sub", one, ratio)), one)
    kept = b.op("Mul", b.dy(), b.cast_like(b.y(1), b.x()))
    return [b.op("Mul", kept, b.cast_like(scale, b.x()))]
