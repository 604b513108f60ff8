"""Gradient rules: activation ops. Derivatives are written with basic ops in the forward
value's dtype, reusing the forward output where it is cheaper (Sigmoid, Tanh, Elu...).
At a kink the gradient is the one-sided value PyTorch uses (Relu'(0) = 0)."""

from __future__ import annotations

import math

from onnxkit.autodiff.builder import Backward
from onnxkit.autodiff.rules import rule


def _where_positive(b: Backward, positive: str, other: str, threshold: float = 0.0) -> str:
    """`positive` where x > threshold, else `other`."""
    return b.op("Where", b.op("Greater", b.x(), b.const(threshold)), positive, other)


@rule("Relu")
def relu(b: Backward) -> list[str | None]:
    return [b.keep(b.dy(), b.op("Greater", b.y(), b.const(0.0)))]


@rule("ThresholdedRelu")
def thresholded_relu(b: Backward) -> list[str | None]:
    return [b.keep(b.dy(), b.op("Greater", b.x(), b.const(b.attr("alpha", 1.0))))]


@rule("Shrink")
def shrink(b: Backward) -> list[str | None]:
    # y = x -/+ bias beyond +/- lambd, 0 inside: slope 1 outside the band (soft and hard shrink)
    lambd = b.const(b.attr("lambd", 0.5))
    outside = b.op("Or", b.op("Greater", b.x(), lambd), b.op("Less", b.x(), b.op("Neg", lambd)))
    return [b.keep(b.dy(), outside)]


@rule("LeakyRelu")
def leaky_relu(b: Backward) -> list[str | None]:
    dy = b.dy()
    return [_where_positive(b, dy, b.op("Mul", dy, b.const(b.attr("alpha", 0.01))))]


@rule("PRelu")
def prelu(b: Backward) -> list[str | None]:
    # y = x for x > 0, slope * x at and below (PyTorch's slope at 0); the slope broadcasts to x, so its
    # gradient is summed back.
    x, slope, dy = b.x(0), b.x(1), b.dy()
    negative = b.op("Less", x, b.const(0.0))
    dx = _where_positive(b, dy, b.op("Mul", dy, slope)) if b.wants(0) else None
    dslope = None
    if b.wants(1):
        dslope = b.unbroadcast(b.keep(b.op("Mul", dy, x), negative), 1)
    return [dx, dslope]


@rule("Sigmoid")
def sigmoid(b: Backward) -> list[str | None]:
    y = b.y()
    return [b.op("Mul", b.dy(), b.op("Mul", y, b.op("Sub", b.const(1.0), y)))]


@rule("Swish")
def swish(b: Backward) -> list[str | None]:
    # y = x s, s = sigmoid(alpha x): y' = s (1 + alpha x (1 - s))
    scaled = b.op("Mul", b.x(), b.const(b.attr("alpha", 1.0)))
    s = b.op("Sigmoid", scaled)
    slope = b.op("Add", b.const(1.0), b.op("Mul", scaled, b.op("Sub", b.const(1.0), s)))
    return [b.op("Mul", b.dy(), b.op("Mul", s, slope))]


@rule("Tanh")
def tanh(b: Backward) -> list[str | None]:
    y = b.y()
    return [b.op("Mul", b.dy(), b.op("Sub", b.const(1.0), b.op("Mul", y, y)))]


@rule("Softplus")
def softplus(b: Backward) -> list[str | None]:
    return [b.op("Mul", b.dy(), b.op("Sigmoid", b.x()))]


@rule("Softsign")
def softsign(b: Backward) -> list[str | None]:
    # y = x / (1 + |x|): y' = 1 / (1 + |x|)^2
    denominator = b.op("Add", b.const(1.0), b.op("Abs", b.x()))
    return [b.op("Div", b.dy(), b.op("Mul", denominator, denominator))]


@rule("Elu", "Celu")
def elu(b: Backward) -> list[str | None]:
    # Elu: y = alpha (e^x - 1) for x <= 0, so y' = y + alpha there.
    # Celu: y = alpha (e^(x/alpha) - 1) for x <= 0, so y' = y / alpha + 1 there.
    alpha = b.attr("alpha", 1.0)
    dy, y = b.dy(), b.y()
    slope = b.op("Add", y, b.const(alpha)) if b.node.op_type == "Elu" else b.op(
        "Add", b.op("Div", y, b.const(alpha)), b.const(1.0))
    return [_where_positive(b, dy, b.op("Mul", dy, slope))]


@rule("Selu")
def selu(b: Backward) -> list[str | None]:
    # y = gamma x for x > 0, gamma alpha (e^x - 1) below, so y' = y + gamma alpha there.
    alpha = b.attr("alpha", 1.67326319217681884765625)
    gamma = b.attr("gamma", 1.05070102214813232421875)
    dy = b.dy()
    below = b.op("Mul", dy, b.op("Add", b.y(), b.const(gamma * alpha)))
    return [_where_positive(b, b.op("Mul", dy, b.const(gamma)), below)]


@rule("HardSigmoid")
def hard_sigmoid(b: Backward) -> list[str | None]:
    # y = clip(alpha x + beta, 0, 1): slope alpha strictly inside the clip range, 0 outside.
    y = b.y()
    inside = b.op("And", b.op("Greater", y, b.const(0.0)), b.op("Less", y, b.const(1.0)))
    return [b.keep(b.op("Mul", b.dy(), b.const(b.attr("alpha", 0.2))), inside)]


@rule("HardSwish")
def hard_swish(b: Backward) -> list[str | None]:
    # y = x clip(x / 6 + 1/2, 0, 1): y' = x / 3 + 1/2 inside (-3, 3), 0 at -3 and below, 1 at 3 and above
    # (as PyTorch).
    x, dy = b.x(), b.dy()
    middle = b.op("Mul", dy, b.op("Add", b.op("Div", x, b.const(3.0)), b.const(0.5)))
    upper = b.op("Where", b.op("GreaterOrEqual", x, b.const(3.0)), dy, middle)
    return [b.keep(upper, b.op("Greater", x, b.const(-3.0)))]


@rule("Mish")
def mish(b: Backward) -> list[str | None]:
    # y = x tanh(softplus(x)): y' = t + x (1 - t^2) sigmoid(x), t = tanh(softplus(x))
    x = b.x()
    t = b.op("Tanh", b.op("Softplus", x))
    sech2 = b.op("Sub", b.const(1.0), b.op("Mul", t, t))
    slope = b.op("Add", t, b.op("Mul", x, b.op("Mul", sech2, b.op("Sigmoid", x))))
    return [b.op("Mul", b.dy(), slope)]


@rule("Gelu")
def gelu(b: Backward) -> list[str | None]:
    x = b.x()
    approximate = b.attr("approximate", "none")
    if approximate == "none":
        # y = x Phi(x): y' = Phi(x) + x phi(x) = (1 + erf(u) + x sqrt(2/pi) exp(-u^2)) / 2, u = x/sqrt(2);
        # the constant folded into the exponent: nine passes over x
        u = b.op("Mul", x, b.const(math.sqrt(0.5)))
        bell = b.op("Exp", b.op("Sub", b.const(0.5 * math.log(2.0 / math.pi)), b.op("Mul", u, u)))
        # two Adds: onnxruntime's three-input Sum with a broadcast scalar is ~3x slower
        twice = b.op("Add", b.op("Add", b.op("Erf", u), b.const(1.0)), b.op("Mul", x, bell))
        return [b.op("Mul", b.op("Mul", b.dy(), twice), b.const(0.5))]
    if approximate != "tanh":
        raise ValueError(f"Gelu approximate={approximate!r} is unknown; use 'none' or 'tanh'")
    # y = x/2 (1 + t), t = tanh(k (x + c x^3)): y' = (1 + t)/2 + x/2 (1 - t^2) k (1 + 3 c x^2)
    k, c = math.sqrt(2.0 / math.pi), 0.044715
    square = b.op("Mul", x, x)
    inner = b.op("Mul", b.op("Mul", x, b.op("Add", b.op("Mul", square, b.const(c)), b.const(1.0))), b.const(k))
    t = b.op("Tanh", inner)
    sech2 = b.op("Sub", b.const(1.0), b.op("Mul", t, t))
    inner_slope = b.op("Add", b.op("Mul", square, b.const(3.0 * c * k)), b.const(k))
    slope = b.op("Add", b.op("Add", t, b.const(1.0)), b.op("Mul", b.op("Mul", x, sech2), inner_slope))
    return [b.op("Mul", b.dy(), b.op("Mul", slope, b.const(0.5)))]


def _softmax_axis(b: Backward) -> int:
    """The normalised axis; before opset 13 Softmax flattens from `axis` on (default 1), which
    matches the one-axis form only when that axis is the last."""
    if b.opset >= 13:
        return b.attr("axis", -1)
    rank = b.need_rank(b.x())
    axis = b.attr("axis", 1) % rank
    if axis != rank - 1:
        raise ValueError(f"{b.node.op_type} before opset 13 over axes {axis}..{rank - 1} has no gradient rule; "
                         "convert the model to opset 13 or newer")
    return axis


@rule("Softmax")
def softmax(b: Backward) -> list[str | None]:
    # dx = y (dy - sum(dy y)) = t - y sum(t), t = dy y
    y = b.y()
    t = _scaled_product(b) or b.op("Mul", b.dy(), y)
    total = b.reduce("ReduceSum", t, [_softmax_axis(b)], keepdims=True)
    return [b.op("Sub", t, b.op("Mul", y, total))]


def _scaled_product(b: Backward) -> str | None:
    """dy y as dz z where y's one reader is z = y s of y's shape (attention's dropout) and dy is the
    Mul rule's dz s: the pass making dy is then read by nothing and dropped (MiniLM: one pass over
    its [16, 12, 128, 128] probabilities a layer)."""
    y, readers = b.y(), b.graph.readers.get(b.y(), [])
    scaled = readers[0] if len(readers) == 1 and readers[0].op_type == "Mul" else None
    if scaled is None or list(scaled.input).count(y) != 1 or b.dims(y) is None or b.dims(scaled.output[0]) != b.dims(y):
        return None
    s = next(i for i in scaled.input if i != y)
    made = b.graph.made.get(b.dy() or "")
    if made is None or made.op_type != "Mul" or list(made.input).count(s) != 1:
        return None
    dz = next(i for i in made.input if i != s)
    return b.op("Mul", dz, scaled.output[0])


@rule("LogSoftmax")
def log_softmax(b: Backward) -> list[str | None]:
    # dx = dy - exp(y) sum(dy)
    dy = b.dy()
    total = b.reduce("ReduceSum", dy, [_softmax_axis(b)], keepdims=True)
    return [b.op("Sub", dy, b.op("Mul", b.op("Exp", b.y()), total))]
