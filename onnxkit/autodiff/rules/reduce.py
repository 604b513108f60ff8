"""Gradient rules: reductions (the output gradient is broadcast back over the reduced axes) and
running sums."""

from __future__ import annotations

import numpy as np

from onnxkit.autodiff.builder import Backward
from onnxkit.autodiff.rules import rule


def _axes(b: Backward) -> list[int] | None:
    """The reduced axes, normalised (None: all of them)."""
    if b.num_inputs > 1 and b.x(1):
        value = b.value(b.x(1))
        if value is None:
            raise ValueError("reductions over axes computed at run time have no gradient rule")
        axes = [int(a) for a in value.reshape(-1)]
    else:
        axes = b.attr("axes")
    if not axes:
        if b.attr("noop_with_empty_axes", 0):
            return []
        return None
    rank = b.need_rank(b.x())
    return sorted(a % rank for a in axes)


def _kept(b: Backward, name: str) -> str:
    """`name` (shaped like the output) with the reduced axes kept as 1s, to broadcast against x; a
    reduction over every axis gives a scalar, which broadcasts as it is."""
    axes = _axes(b)
    if b.attr("keepdims", 1) or axes == [] or axes is None:
        return name
    return b.unsqueeze(name, axes)


def _spread(b: Backward, name: str) -> str:
    return b.op("Expand", _kept(b, name), b.shape(b.x()))


@rule("ReduceSum")
def reduce_sum(b: Backward) -> list[str | None]:
    return [_spread(b, b.dy()), None]


def _count(b: Backward) -> str:
    """How many inputs each output averages: the product of the reduced dims, static when they are, else
    from x's shape at run time (x's size over every axis). (Not size(x) / size(y): an empty batch makes
    that 0 / 0.)"""
    axes, x_dims = _axes(b), b.dims(b.x())
    if axes == []:
        return b.const(1.0)
    reduced = x_dims if axes is None or x_dims is None else [x_dims[a] for a in axes]
    if reduced is not None and all(isinstance(d, int) for d in reduced):
        return b.const(float(np.prod(reduced)))
    if axes is None:
        return b.cast_like(b.op("Size", b.x()), b.x())
    return b.cast_like(b.op("ReduceProd", b.op("Gather", b.shape(b.x()), b.ints(axes)), keepdims=0), b.x())


@rule("ReduceMean")
def reduce_mean(b: Backward) -> list[str | None]:
    return [_spread(b, b.op("Div", b.dy(), _count(b))), None]


@rule("ReduceSumSquare")
def reduce_sum_square(b: Backward) -> list[str | None]:
    return [b.op("Mul", _spread(b, b.dy()), b.op("Mul", b.x(), b.const(2.0))), None]


@rule("ReduceL2")
def reduce_l2(b: Backward) -> list[str | None]:
    # dx = dy x / y; 0 for a slice of zeros (y = 0: PyTorch's norm gives 0 there, not 0 / 0)
    y = b.y()
    divisor = b.op("Where", b.op("Equal", y, b.const(0.0, like=y)), b.const(1.0, like=y), y)
    return [b.op("Mul", _spread(b, b.op("Div", b.dy(), divisor)), b.x()), None]


@rule("ReduceL1")
def reduce_l1(b: Backward) -> list[str | None]:
    return [b.op("Mul", _spread(b, b.dy()), b.op("Sign", b.x())), None]


@rule("ReduceLogSum")
def reduce_log_sum(b: Backward) -> list[str | None]:
    return [_spread(b, b.op("Div", b.dy(), b.op("Exp", b.y()))), None]  # dy / the sum


@rule("ReduceLogSumExp")
def reduce_log_sum_exp(b: Backward) -> list[str | None]:
    softmax = b.op("Exp", b.op("Sub", b.x(), _kept(b, b.y())))
    return [b.op("Mul", _spread(b, b.dy()), softmax), None]


@rule("ReduceMax", "ReduceMin")
def reduce_max_min(b: Backward) -> list[str | None]:
    # Shared evenly between tied extremes (as torch.amax / amin).
    hit = b.op("Equal", b.x(), _kept(b, b.y()))
    ties = b.op("Cast", hit, to=b.dtype(b.x()))
    axes = _axes(b)
    count = b.reduce("ReduceSum", ties, axes, keepdims=True) if axes != [] else ties
    return [b.op("Mul", _spread(b, b.dy()), b.op("Div", ties, count)), None]


@rule("ReduceProd")
def reduce_prod(b: Backward) -> list[str | None]:
    # d/dx_i = the product of the others: y / x_i without a zero among them; with exactly one
    # zero, the product of the nonzero ones at the zero and 0 elsewhere; with two or more, 0
    x, axes = b.x(), _axes(b)
    zero = b.op("Equal", x, b.const(0.0))
    nonzero = b.op("Where", zero, b.const(1.0), x)
    product = b.reduce("ReduceProd", nonzero, axes, keepdims=True) if axes != [] else nonzero
    zeros = b.reduce("ReduceSum", b.cast_like(zero, x), axes, keepdims=True) if axes != [] else b.cast_like(zero, x)
    none, one = b.op("Equal", zeros, b.const(0.0)), b.op("Equal", zeros, b.const(1.0))
    others = b.op("Where", zero, b.op("Where", one, product, b.const(0.0)),
                  b.op("Where", none, b.op("Div", product, nonzero), b.const(0.0)))
    return [b.op("Mul", _spread(b, b.dy()), others), None]


@rule("CumSum")
def cumsum(b: Backward) -> list[str | None]:
    # each x[j] adds to the sums that include it: dy summed the other way along the axis
    return [b.op("CumSum", b.dy(), b.x(1), exclusive=b.attr("exclusive", 0), reverse=1 - b.attr("reverse", 0)), None]
