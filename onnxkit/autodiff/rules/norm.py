"""Gradient rules: normalisation (LayerNormalization, RMSNormalization, BatchNormalization,
InstanceNormalization, GroupNormalization; LRN apart, at the end).

All share one closed form. With d = x - mean and xhat = d * invstd over a normalised set of n
elements, and dxhat = dy * scale:

    dx = invstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))

(RMSNormalization's is the same with no mean taken: d = x, and no mean(dxhat) term.)

Statistics the forward node does not output are recomputed from x. The full-size work is a few
elementwise passes and one reduction per needed sum; everything else is per-row (or per-channel).
"""

from __future__ import annotations

from onnxkit.autodiff.builder import Backward
from onnxkit.autodiff.rules import rule


def _invstd(b: Backward, var: str) -> str:
    return b.op("Reciprocal", b.op("Sqrt", b.op("Add", var, b.const(b.attr("epsilon", 1e-5)))))


def _centered(b: Backward, x: str, axes: list[int]) -> tuple[str, str]:
    """x - mean and 1 / sqrt(var + epsilon) over `axes` (the statistics keep their axes as 1s)."""
    d = b.op("Sub", x, b.reduce("ReduceMean", x, axes))
    return d, _invstd(b, b.reduce("ReduceMean", b.op("Mul", d, d), axes))


def _count(b: Backward, x: str, stat: str) -> str:
    """Elements per normalised set, size(x) / size(stat), in x's float type (symbolic dims allowed)."""
    return b.op("Cast", b.op("Div", b.op("Size", x), b.op("Size", stat)), to=b.dtype(b.x()))


def _same_float_type(b: Backward, names: list[str]) -> None:
    if any(name and b.dtype(name) != b.dtype(b.x()) for name in names):
        raise ValueError("inputs of different float types are not supported; cast them to one type")


def _output(b: Backward, i: int) -> str:
    return b.node.output[i] if i < len(b.node.output) else ""


def _rows(b: Backward, name: str) -> str:
    """A per-row statistic (or its gradient) as a [rows, 1] column in x's float type."""
    column = b.op("Reshape", name, b.ints([-1, 1]))
    return column if b.dtype(name) == b.dtype(b.x()) else b.cast_like(column, b.x())


@rule("LayerNormalization")
def layer_norm(b: Backward) -> list[str | None]:
    # Works on x flattened to [rows, D]; the sums against the scale and over rows are GEMVs.
    x, scale, dy = b.x(0), b.x(1), b.dy(0)
    if dy is None:
        raise ValueError("a gradient reaches its Mean/InvStdDev outputs but not Y")
    rank = b.need_rank(x)
    axis = b.attr("axis", -1) % rank
    if b.need_rank(scale) > rank - axis:
        raise ValueError("its Scale has more axes than the normalised ones")
    _same_float_type(b, [scale, b.x(2)])
    x2, dy2 = b.op("Flatten", x, axis=axis), b.op("Flatten", dy, axis=axis)
    mean_out, invstd_out = _output(b, 1), _output(b, 2)
    mean = _rows(b, mean_out) if mean_out else b.reduce("ReduceMean", x2, [1])
    d = b.op("Sub", x2, mean)
    invstd = _rows(b, invstd_out) if invstd_out else _invstd(b, b.reduce("ReduceMean", b.op("Mul", d, d), [1]))
    norm_shape = b.op("Slice", b.shape(x), b.ints([axis]), b.ints([rank]))
    full_scale = b.op("Expand", scale, norm_shape)
    p = b.op("Mul", dy2, d) if b.wants(0) or b.wants(1) else None
    dx = dscale = dbias = None
    if b.wants(0):
        n = _count(b, x, mean)
        scale_by_n = b.op("Div", b.op("Reshape", full_scale, b.ints([-1, 1])), n)
        dxhat_mean = b.op("MatMul", dy2, scale_by_n)  # mean(dxhat) per row
        dxhat_d_mean = b.op("MatMul", p, scale_by_n)  # mean(dxhat * d) per row
        if b.dy(1) is not None:  # d mean / dx = 1/n
            dxhat_mean = b.op("Sub", dxhat_mean, b.op("Div", _rows(b, b.dy(1)), b.op("Mul", n, invstd)))
        if b.dy(2) is not None:  # d invstd / dx = -invstd^3 d / n
            dxhat_d_mean = b.op("Add", dxhat_d_mean, b.op("Div", _rows(b, b.dy(2)), n))
        k = b.op("Mul", b.op("Mul", invstd, invstd), dxhat_d_mean)
        dxhat = b.op("Mul", dy2, b.op("Reshape", full_scale, b.ints([1, -1])))
        dx2 = b.op("Mul", b.op("Sub", b.op("Sub", dxhat, b.op("Mul", d, k)), dxhat_mean), invstd)
        dx = b.op("Reshape", dx2, b.shape(x))
    if b.wants(1):
        summed = b.op("MatMul", b.op("Reshape", invstd, b.ints([1, -1])), p)  # sum over rows of dy * xhat
        dscale = b.unbroadcast(b.op("Reshape", summed, norm_shape), 1, b.dims(x)[axis:])
    if b.wants(2) and b.x(2):
        dbias = b.unbroadcast(dy, 2, b.dims(x))
    return [dx, dscale, dbias]


@rule("RMSNormalization")
def rms_norm(b: Backward) -> list[str | None]:
    # y = xhat scale, xhat = x r, r = 1 / sqrt(mean(x^2) + epsilon) over axes axis..: with
    # dxhat = dy scale, dx = r (dxhat - xhat mean(dxhat xhat)). Works on x flattened to [rows, D];
    # the scale may span x's leading axes too (PyTorch's ones for RMSNorm(elementwise_affine=False)).
    x, scale, dy = b.x(0), b.x(1), b.dy(0)
    axis = b.attr("axis", -1) % b.need_rank(x)
    _same_float_type(b, [scale])
    x2 = b.op("Flatten", x, axis=axis)
    r = _invstd(b, b.reduce("ReduceMean", b.op("Mul", x2, x2), [1]))
    xhat = b.op("Mul", x2, r)
    dx = dscale = None
    if b.wants(0):
        dxhat = b.op("Flatten", b.op("Mul", dy, scale), axis=axis)
        along = b.op("Mul", xhat, b.reduce("ReduceMean", b.op("Mul", dxhat, xhat), [1]))
        dx = b.op("Reshape", b.op("Mul", b.op("Sub", dxhat, along), r), b.shape(x))
    if b.wants(1):
        dscale = b.unbroadcast(b.op("Mul", dy, b.op("Reshape", xhat, b.shape(x))), 1, b.dims(x))
    return [dx, dscale]


def _channel_norm(
    b: Backward, x: str, dy: str, scale: str, stat_axes: list[int], sum_axes: list[int]
) -> list[str | None]:
    """[dx, dscale, dbias] for y = xhat * scale + bias, with x and dy in a layout where the statistics
    run over `stat_axes`, `scale` broadcasts and is constant over `sum_axes` (a subset of them),
    and the parameters are shared along axis 0. dx comes back in that layout; the parameter
    gradients flat."""
    d, invstd = _centered(b, x, stat_axes)
    dy_sum = b.reduce("ReduceSum", dy, sum_axes) if b.wants(0) or b.wants(2) else None
    p_sum = b.reduce("ReduceSum", b.op("Mul", dy, d), sum_axes) if b.wants(0) or b.wants(1) else None
    dx = dscale = dbias = None
    if b.wants(0):
        n = _count(b, x, invstd)
        rest = [a for a in stat_axes if a not in sum_axes]
        dxhat_sum, dxhat_d_sum = b.op("Mul", scale, dy_sum), b.op("Mul", scale, p_sum)
        if rest:
            dxhat_sum, dxhat_d_sum = b.reduce("ReduceSum", dxhat_sum, rest), b.reduce("ReduceSum", dxhat_d_sum, rest)
        # dx = dy * scale * invstd - d * invstd^3 * mean(dxhat * d) - invstd * mean(dxhat)
        cube = b.op("Mul", invstd, b.op("Mul", invstd, invstd))
        along_d = b.op("Div", b.op("Mul", cube, dxhat_d_sum), n)
        offset = b.op("Div", b.op("Mul", invstd, dxhat_sum), n)
        dx = b.op("Sub", b.op("Sub", b.op("Mul", dy, b.op("Mul", scale, invstd)), b.op("Mul", d, along_d)), offset)
    flat = b.ints([-1])
    if b.wants(1):
        dscale = b.op("Reshape", b.reduce("ReduceSum", b.op("Mul", invstd, p_sum), [0], keepdims=False), flat)
    if b.wants(2):
        dbias = b.op("Reshape", b.reduce("ReduceSum", dy_sum, [0], keepdims=False), flat)
    return [dx, dscale, dbias]


def _per_channel(b: Backward, name: str, rank: int) -> str:
    """A [C] tensor shaped to broadcast along axis 1 of a rank-`rank` [N, C, ...] tensor."""
    return b.op("Reshape", name, b.ints([-1] + [1] * (rank - 2)))


@rule("BatchNormalization")
def batch_norm(b: Backward) -> list[str | None]:
    # Inference mode: y = scale (x - mean) invstd + bias, invstd = 1 / sqrt(var + eps), each input
    # differentiated. Training mode: the batch statistics are recomputed from x; the running statistics
    # are not differentiated.
    x, scale, dy = b.x(0), b.x(1), b.dy(0)
    _same_float_type(b, [scale, b.x(2), b.x(3), b.x(4)])
    rank = b.need_rank(x)
    axes = [0, *range(2, rank)]
    if b.opset < 14 and len(b.node.output) > 1:
        raise ValueError("training-mode BatchNormalization needs opset 14 or newer")
    if b.attr("training_mode", 0):
        if b.dy(1) is not None or b.dy(2) is not None:
            raise ValueError("its running mean and variance have no gradient; keep them out of the loss")
        return [*_channel_norm(b, x, dy, _per_channel(b, scale, rank), axes, axes), None, None]
    invstd = _invstd(b, b.x(4))
    gain = b.op("Mul", scale, invstd)
    dx = b.op("Mul", dy, _per_channel(b, gain, rank)) if b.wants(0) else None
    dscale = dbias = dmean = dvar = None
    if b.wants(1) or b.wants(4):
        d = b.op("Sub", x, _per_channel(b, b.x(3), rank))
        centred = b.reduce("ReduceSum", b.op("Mul", dy, d), axes, keepdims=False)  # sum of dy (x - mean)
        dscale = b.op("Mul", invstd, centred) if b.wants(1) else None
        if b.wants(4):  # d invstd / d var = -invstd^3 / 2
            cubed = b.op("Mul", invstd, b.op("Mul", invstd, invstd))
            dvar = b.op("Mul", centred, b.op("Mul", scale, b.op("Mul", cubed, b.const(-0.5))))
    if b.wants(2) or b.wants(3):
        total = b.reduce("ReduceSum", dy, axes, keepdims=False)
        dbias = total if b.wants(2) else None
        dmean = b.op("Neg", b.op("Mul", total, gain)) if b.wants(3) else None
    return [dx, dscale, dbias, dmean, dvar]


@rule("InstanceNormalization")
def instance_norm(b: Backward) -> list[str | None]:
    x = b.x(0)
    _same_float_type(b, [b.x(1), b.x(2)])
    rank = b.need_rank(x)
    if rank < 3:
        raise ValueError("InstanceNormalization needs at least one spatial axis")
    spatial = list(range(2, rank))
    return _channel_norm(b, x, b.dy(0), _per_channel(b, b.x(1), rank), spatial, spatial)


@rule("GroupNormalization")
def group_norm(b: Backward) -> list[str | None]:
    # Works on x as [N, groups, channels per group (or 1), spatial]. Scale and bias are per
    # channel from opset 21, per group before (GroupNormalization-18).
    x = b.x(0)
    _same_float_type(b, [b.x(1), b.x(2)])
    groups = b.attr("num_groups")
    if b.opset >= 21:
        channels = b.dims(x)[1] if b.need_rank(x) >= 2 else None
        if isinstance(channels, int):
            layout = b.ints([0, groups, channels // groups, -1])
        else:  # channels known only at run time: channels per group from x's shape
            per_group = b.op("Div", b.op("Slice", b.shape(x), b.ints([1]), b.ints([2])), b.ints([groups]))
            layout = b.op("Concat", b.ints([0, groups]), per_group, b.ints([-1]), axis=0)
        sum_axes = [3]
    else:
        layout, sum_axes = b.ints([0, groups, 1, -1]), [2, 3]
    scale = b.op("Reshape", b.x(1), b.ints([groups, -1, 1]))
    x4, dy4 = b.op("Reshape", x, layout), b.op("Reshape", b.dy(0), layout)
    dx, dscale, dbias = _channel_norm(b, x4, dy4, scale, [2, 3], sum_axes)
    return [b.op("Reshape", dx, b.shape(x)) if dx else None, dscale, dbias]


def _channel_window_sum(b: Backward, t: str, channels: int, size: int, before: int) -> str:
    """Per position, the sum of `t` [N, C, ...] over channels c - before .. c - before + size - 1
    (zeros past the ends), as an AveragePool over a [N, 1, C, rest] view."""
    view = b.op("Reshape", t, b.ints([0, 1, channels, -1]))
    mean = b.op("AveragePool", view, kernel_shape=[size, 1], pads=[before, 0, size - 1 - before, 0],
                count_include_pad=1)
    return b.op("Reshape", b.op("Mul", mean, b.const(float(size))), b.shape(b.x()))


@rule("LRN")
def lrn(b: Backward) -> list[str | None]:
    # y = x * d^-beta, d = bias + alpha/size * (sum of x^2 over a window of channels around c):
    # dx = dy * d^-beta - 2 alpha beta / size * x * (sum of dy * y / d over the windows holding c)
    size, alpha, beta = b.attr("size"), b.attr("alpha", 1e-4), b.attr("beta", 0.75)
    dims = b.dims(b.x())
    if dims is None or len(dims) < 3 or not isinstance(dims[1], int):
        raise ValueError("LRN needs a static channel count for its gradient")
    x, dy, lower = b.x(), b.dy(), (size - 1) // 2
    squares = _channel_window_sum(b, b.op("Mul", x, x), dims[1], size, lower)
    d = b.op("Add", b.const(b.attr("bias", 1.0)), b.op("Mul", squares, b.const(alpha / size)))
    direct = b.op("Mul", dy, b.op("Pow", d, b.const(-beta)))
    windows = _channel_window_sum(b, b.op("Div", b.op("Mul", dy, b.y()), d), dims[1], size, size - 1 - lower)
    return [b.op("Sub", direct, b.op("Mul", b.op("Mul", x, windows), b.const(2 * alpha * beta / size)))]
