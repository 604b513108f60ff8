"""Gradient rules: sampling at computed coordinates (GridSample, AffineGrid), the pair behind
PyTorch's `F.grid_sample(x, F.affine_grid(theta, size))` (spatial transformers).

GridSample (2-D, nearest or bilinear; zeros, border or reflection padding): each output reads up to four
input pixels with weights from its grid point. The input's gradient adds dy, so weighted, back
at those pixels (one ScatterElements over the four corners); the grid's is dy times how the
bilinear blend changes with the point (differences of the corner values), summed over channels
and scaled from pixels back to [-1, 1]. Nearest sampling passes the grid no gradient.
"""

from __future__ import annotations

from onnx import TensorProto

from onnxkit.autodiff.builder import Backward
from onnxkit.autodiff.rules import rule

GRID_MODES = {"bilinear": "linear", "linear": "linear", "nearest": "nearest"}  # opset 16 names, opset 20 names


def _pixels(b: Backward, coordinate: str, size: int) -> tuple[str, float]:
    """A normalised coordinate in [-1, 1] as a pixel position, and d(pixel)/d(coordinate)."""
    slope = (size - 1) / 2 if b.attr("align_corners", 0) else size / 2
    return b.op("Add", b.op("Mul", coordinate, b.const(slope)), b.const((size - 1) / 2)), slope


def _inside(b: Backward, position: str, size: int) -> str:
    """Whether an integer pixel position lies in 0 .. size - 1 (a bool tensor)."""
    low, high = b.op("GreaterOrEqual", position, b.const(0.0)), b.op("LessOrEqual", position, b.const(size - 1.0))
    return b.op("And", low, high)


def _padded(b: Backward, position: str, size: int, padding: str) -> tuple[str, str | None]:
    """Where a pixel position reads under `padding`, and d(where)/d(position) (None: 1): border
    clamps to the edge pixels (slope 0 past them); reflection folds the position back into
    [0, size - 1] (align_corners) or [-0.5, size - 0.5] then clamps (slope +-1 by the fold)."""
    if padding == "zeros":
        return position, None
    clamped = b.op("Clip", position, b.const(0.0), b.const(size - 1.0))
    if padding == "border":
        return clamped, b.cast_like(b.op("Equal", position, clamped), b.x(1))  # in the grid's float type
    low, span = (0.0, size - 1.0) if b.attr("align_corners", 0) else (-0.5, float(size))
    if span == 0:  # one pixel: every position reads it
        return b.op("Mul", position, b.const(0.0)), b.op("Mul", position, b.const(0.0))
    offset = b.op("Sub", position, b.const(low))
    distance = b.op("Abs", offset)
    folds = b.op("Floor", b.op("Div", distance, b.const(span)))
    extra = b.op("Sub", distance, b.op("Mul", folds, b.const(span)))
    odd = b.op("Equal", b.op("Mod", folds, b.const(2.0), fmod=1), b.const(1.0))
    folded = b.op("Where", odd, b.op("Sub", b.const(low + span), extra), b.op("Add", extra, b.const(low)))
    slope = b.op("Mul", b.op("Sign", offset), b.op("Where", odd, b.const(-1.0), b.const(1.0)))
    where = b.op("Clip", folded, b.const(0.0), b.const(size - 1.0))  # align_corners=0 can fold to -0.5
    return where, b.op("Mul", slope, b.cast_like(b.op("Equal", folded, where), b.x(1)))


@rule("GridSample")
def grid_sample(b: Backward) -> list[str | None]:
    mode, padding = GRID_MODES.get(b.attr("mode", "bilinear")), b.attr("padding_mode", "zeros")
    dims = b.dims(b.x())
    if mode is None or padding not in ("zeros", "border", "reflection"):
        raise ValueError(f"mode {b.attr('mode', 'bilinear')!r} with padding {padding!r} has no gradient rule "
                         "(nearest or bilinear, with zeros, border or reflection padding)")
    if dims is None or len(dims) != 4 or not all(isinstance(d, int) for d in dims[2:]):
        raise ValueError("only 2-D sampling of an input with static height and width has a gradient rule")
    height, width = dims[2], dims[3]
    x, grid, dy = b.x(0), b.x(1), b.dy()
    flat_x = b.op("Reshape", x, b.ints([0, 0, -1]))  # [N, C, H*W]
    flat_dy = b.op("Reshape", dy, b.ints([0, 0, -1]))  # [N, C, Ho*Wo]
    points = b.op("Reshape", grid, b.ints([0, 1, -1, 2]))  # [N, 1, Ho*Wo, 2]: one row per output pixel
    (raw_x, sx), (raw_y, sy) = (_pixels(b, b.op("Gather", points, b.ints(k), axis=3), size)
                                for k, size in ((0, width), (1, height)))
    (px, fold_x), (py, fold_y) = (_padded(b, p, size, padding) for p, size in ((raw_x, width), (raw_y, height)))
    if mode == "nearest":
        corners = [(b.op("Round", py), b.op("Round", px), None)]
    else:
        x0, y0 = b.op("Floor", px), b.op("Floor", py)
        x1, y1 = b.op("Add", x0, b.const(1.0)), b.op("Add", y0, b.const(1.0))
        fx, fy = b.op("Sub", px, x0), b.op("Sub", py, y0)
        gx, gy = b.op("Sub", b.const(1.0), fx), b.op("Sub", b.const(1.0), fy)
        corners = [(y0, x0, b.op("Mul", gy, gx)), (y0, x1, b.op("Mul", gy, fx)),
                   (y1, x0, b.op("Mul", fy, gx)), (y1, x1, b.op("Mul", fy, fx))]
    taps, values = [], []  # per corner: its flat index [N, C, Ho*Wo] and its input values (0 outside)
    for row, col, _ in corners:
        inside = b.cast_like(b.op("And", _inside(b, row, height), _inside(b, col, width)), x)
        where = b.op("Add", b.op("Mul", b.op("Clip", row, b.const(0.0), b.const(height - 1.0)), b.const(float(width))),
                     b.op("Clip", col, b.const(0.0), b.const(width - 1.0)))
        where = b.op("Expand", b.op("Cast", where, to=TensorProto.INT64), b.shape(flat_dy))  # int64, over the channels
        taps.append((where, inside))
        values.append(b.op("Mul", b.op("GatherElements", flat_x, where, axis=2), inside))
    dx = None
    if b.wants(0):
        shares = [b.op("Mul", flat_dy, inside if weight is None else b.op("Mul", weight, inside))
                  for (_, inside), (_, _, weight) in zip(taps, corners, strict=True)]
        index = b.op("Concat", *[where for where, _ in taps], axis=2)
        summed = b.op("ScatterElements", b.zeros(b.shape(flat_x)), index, b.op("Concat", *shares, axis=2), axis=2,
                      reduction="add")
        dx = b.op("Reshape", summed, b.shape(x))
    dgrid = None
    if b.wants(1):
        if mode == "nearest":
            dgrid = b.zeros(b.shape(grid))
        else:
            v00, v01, v10, v11 = values
            along_x = b.op("Add", b.op("Mul", gy, b.op("Sub", v01, v00)), b.op("Mul", fy, b.op("Sub", v11, v10)))
            along_y = b.op("Add", b.op("Mul", gx, b.op("Sub", v10, v00)), b.op("Mul", fx, b.op("Sub", v11, v01)))
            parts = []
            for slope, fold, change in ((sx, fold_x, along_x), (sy, fold_y, along_y)):
                part = b.op("Mul", b.reduce("ReduceSum", b.op("Mul", flat_dy, change), [1]), b.const(slope))
                if fold is not None:  # padding's fold: 0 past a clamped edge, -1 where reflected
                    part = b.op("Mul", part, fold)
                parts.append(b.op("Unsqueeze", part, b.ints([3])))
            dgrid = b.op("Reshape", b.op("Concat", *parts, axis=3), b.shape(grid))
    return [dx, dgrid]


@rule("AffineGrid")
def affine_grid(b: Backward) -> list[str | None]:
    # grid[n, h, w] = theta[n] @ (x_w, y_h, 1): theta's gradient sums dgrid (x) that base point,
    # the base points being the grid of the identity transform, made by AffineGrid itself
    theta, size, dims = b.x(0), b.x(1), b.dims(b.x(0))
    if dims is None or len(dims) != 3 or dims[1:] != [2, 3]:
        raise ValueError("only 2-D affine grids (theta [N, 2, 3]) have a gradient rule")
    identity = b.const([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]], like=theta)
    one = b.op("Concat", b.ints([1]), b.op("Slice", size, b.ints([1]), b.ints([4])), axis=0)
    base = b.op("Reshape", b.op("AffineGrid", identity, one, align_corners=b.attr("align_corners", 0)), b.ints([-1, 2]))
    ones = b.op("Slice", b.op("Mul", base, b.const(0.0)), b.ints([0]), b.ints([1]), b.ints([1]))  # [H*W, 1]
    homogeneous = b.op("Concat", base, b.op("Add", ones, b.const(1.0)), axis=1)  # [H*W, 3]
    dgrid = b.op("Transpose", b.op("Reshape", b.dy(), b.ints([0, -1, 2])), perm=[0, 2, 1])  # [N, 2, H*W]
    return [b.op("MatMul", dgrid, homogeneous), None]
