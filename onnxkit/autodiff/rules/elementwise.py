"""Gradient rules: elementwise arithmetic and math functions (broadcasting reduced back)."""

from __future__ import annotations

from onnxkit.autodiff.builder import Backward
from onnxkit.autodiff.rules import rule


@rule("Identity")
def identity(b: Backward) -> list[str | None]:
    return [b.dy()]


@rule("Cast", "CastLike")
def cast(b: Backward) -> list[str | None]:
    return [b.cast_like(b.dy(), b.x(0))]  # CastLike's second input gives only its type: no gradient


@rule("Add")
def add(b: Backward) -> list[str | None]:
    return [b.unbroadcast(b.dy(), 0) if b.wants(0) else None, b.unbroadcast(b.dy(), 1) if b.wants(1) else None]


@rule("Sub")
def sub(b: Backward) -> list[str | None]:
    return [
        b.unbroadcast(b.dy(), 0) if b.wants(0) else None,
        b.unbroadcast(b.neg(b.dy()), 1) if b.wants(1) else None,
    ]


@rule("Sum")
def sum_(b: Backward) -> list[str | None]:
    return [b.unbroadcast(b.dy(), i) if b.wants(i) else None for i in range(b.num_inputs)]


@rule("Mean")
def mean(b: Backward) -> list[str | None]:
    share = b.op("Div", b.dy(), b.const(float(b.num_inputs)))
    return [b.unbroadcast(share, i) if b.wants(i) else None for i in range(b.num_inputs)]


@rule("Mul")
def mul(b: Backward) -> list[str | None]:
    return [
        b.unbroadcast(_times_other(b, 1), 0) if b.wants(0) else None,
        b.unbroadcast(_times_other(b, 0), 1) if b.wants(1) else None,
    ]


def _times_other(b: Backward, i: int) -> str:
    """dy * x(i); a constant dy times a fixed x(i) is folded to one constant (`Graph.times`)."""
    return b.op("Mul", b.dy(), b.x(i)) if b.wants(i) else b.graph.times(b.dy(), b.x(i))


@rule("Div")
def div(b: Backward) -> list[str | None]:
    # y = a / b: da = dy / b, db = -dy * y / b
    da = b.unbroadcast(b.op("Div", b.dy(), b.x(1)), 0) if b.wants(0) else None
    db = None
    if b.wants(1):
        db = b.unbroadcast(b.op("Neg", b.op("Div", b.op("Mul", b.dy(), b.y()), b.x(1))), 1)
    return [da, db]


@rule("Mod")
def mod(b: Backward) -> list[str | None]:
    # float Mod is fmod: y = a - trunc(a / b) b, so da = dy and db = -dy trunc(a / b) = -dy (a - y) / b
    da = b.unbroadcast(b.dy(), 0) if b.wants(0) else None
    db = None
    if b.wants(1):
        db = b.unbroadcast(b.op("Neg", b.op("Div", b.op("Mul", b.dy(), b.op("Sub", b.x(0), b.y())), b.x(1))), 1)
    return [da, db]


@rule("Neg")
def neg(b: Backward) -> list[str | None]:
    return [b.neg(b.dy())]


@rule("Abs")
def abs_(b: Backward) -> list[str | None]:
    return [b.op("Mul", b.dy(), b.op("Sign", b.x()))]


@rule("Reciprocal")
def reciprocal(b: Backward) -> list[str | None]:
    return [b.op("Neg", b.op("Mul", b.dy(), b.op("Mul", b.y(), b.y())))]


@rule("Exp")
def exp(b: Backward) -> list[str | None]:
    return [b.op("Mul", b.dy(), b.y())]


@rule("Log")
def log(b: Backward) -> list[str | None]:
    return [b.op("Div", b.dy(), b.x())]


@rule("Sqrt")
def sqrt(b: Backward) -> list[str | None]:
    # dy / 2y, and 0 where y = 0: PyTorch's cdist and norms, which export as Sqrt(Max(d, 0)) and the like, give 0
    # there, where dy / 0 = inf ended training (torch.sqrt's own inf would as well)
    zero = b.op("Equal", b.y(), b.const(0.0, like=b.y()))
    return [b.op("Where", zero, b.const(0.0, like=b.y()), b.op("Div", b.dy(), b.op("Mul", b.y(), b.const(2.0))))]


@rule("Pow")
def pow_(b: Backward) -> list[str | None]:
    # y = a^e: da = dy * e * a^(e-1), de = dy * y * log(a); as PyTorch, da is 0 where e = 0 and de is 0
    # where a = 0 and e >= 0 (not 0 * inf = NaN). de is computed in a's type, then cast to e's.
    a, e = b.x(0), b.x(1)
    e_cast = e if b.dtype(e) == b.dtype(a) else b.cast_like(e, a)
    da = de = None
    if b.wants(0):
        power = b.op("Pow", a, b.op("Sub", e_cast, b.const(1.0)))
        slope = b.op("Mul", e_cast, power)
        known = b.value(e)
        if known is None or not known.all():
            slope = b.op("Where", b.op("Equal", e_cast, b.const(0.0)), b.const(0.0), slope)
        da = b.unbroadcast(b.op("Mul", b.dy(), slope), 0)
    if b.wants(1):
        at_zero = b.op("And", b.op("Equal", a, b.const(0.0)), b.op("GreaterOrEqual", e_cast, b.const(0.0)))
        slope = b.op("Where", at_zero, b.const(0.0), b.op("Mul", b.y(), b.op("Log", a)))
        de = b.op("Mul", b.dy(), slope)
        de = b.unbroadcast(de if b.dtype(e) == b.dtype(a) else b.cast_like(de, e), 1)
    return [da, de]


@rule("Sin")
def sin(b: Backward) -> list[str | None]:
    return [b.op("Mul", b.dy(), b.op("Cos", b.x()))]


@rule("Cos")
def cos(b: Backward) -> list[str | None]:
    return [b.op("Neg", b.op("Mul", b.dy(), b.op("Sin", b.x())))]


@rule("Tan")
def tan(b: Backward) -> list[str | None]:
    return [b.op("Mul", b.dy(), b.op("Add", b.const(1.0), b.op("Mul", b.y(), b.y())))]  # 1 + tan^2


@rule("Sinh")
def sinh(b: Backward) -> list[str | None]:
    return [b.op("Mul", b.dy(), b.op("Cosh", b.x()))]


@rule("Cosh")
def cosh(b: Backward) -> list[str | None]:
    return [b.op("Mul", b.dy(), b.op("Sinh", b.x()))]


def _over_root(b: Backward, inside: str) -> str:
    """dy / sqrt(inside)."""
    return b.op("Div", b.dy(), b.op("Sqrt", inside))


@rule("Asin")
def asin(b: Backward) -> list[str | None]:
    return [_over_root(b, b.op("Sub", b.const(1.0), b.op("Mul", b.x(), b.x())))]  # 1 / sqrt(1 - x^2)


@rule("Acos")
def acos(b: Backward) -> list[str | None]:
    return [b.op("Neg", _over_root(b, b.op("Sub", b.const(1.0), b.op("Mul", b.x(), b.x()))))]


@rule("Asinh")
def asinh(b: Backward) -> list[str | None]:
    return [_over_root(b, b.op("Add", b.op("Mul", b.x(), b.x()), b.const(1.0)))]  # 1 / sqrt(x^2 + 1)


@rule("Acosh")
def acosh(b: Backward) -> list[str | None]:
    return [_over_root(b, b.op("Sub", b.op("Mul", b.x(), b.x()), b.const(1.0)))]  # 1 / sqrt(x^2 - 1)


@rule("Atan")
def atan(b: Backward) -> list[str | None]:
    return [b.op("Div", b.dy(), b.op("Add", b.const(1.0), b.op("Mul", b.x(), b.x())))]  # 1 / (1 + x^2)


@rule("Atanh")
def atanh(b: Backward) -> list[str | None]:
    return [b.op("Div", b.dy(), b.op("Sub", b.const(1.0), b.op("Mul", b.x(), b.x())))]  # 1 / (1 - x^2)


@rule("Erf")
def erf(b: Backward) -> list[str | None]:
    # d erf(x) = 2/sqrt(pi) * exp(-x^2) = exp(ln(2/sqrt(pi)) - x^2): four passes, not five
    x = b.x()
    return [b.op("Mul", b.dy(), b.op("Exp", b.op("Sub", b.const(0.12078223763524522), b.op("Mul", x, x))))]


@rule("Max", "Min")
def max_min(b: Backward) -> list[str | None]:
    # The gradient goes to the inputs equal to the result, shared evenly among ties (torch.maximum's
    # subgradient: max(x, x) passes dy once, not twice).
    if b.num_inputs == 1:
        return [b.dy()]
    hits = [b.cast_like(b.op("Equal", b.x(i), b.y()), b.y()) for i in range(b.num_inputs)]
    share = b.op("Div", b.dy(), b.add_up(hits))
    return [b.unbroadcast(b.op("Mul", share, hit), i) if b.wants(i) else None for i, hit in enumerate(hits)]


@rule("Where")
def where(b: Backward) -> list[str | None]:
    cond = b.x(0)
    return [
        None,
        b.unbroadcast(b.keep(b.dy(), cond), 1) if b.wants(1) else None,
        b.unbroadcast(b.keep(b.dy(), b.op("Not", cond)), 2) if b.wants(2) else None,
    ]


@rule("Clip")
def clip(b: Backward) -> list[str | None]:
    # Gradient passes to x where min <= x <= max (as torch.clamp), to min where x < min, to max where x > max.
    x = b.x()
    if b.opset < 11:
        low, high = b.attr("min"), b.attr("max")
        low = b.const(low) if low is not None else ""
        high = b.const(high) if high is not None else ""
    else:
        low, high = b.x(1), b.x(2)
    inside = None
    for bound, op in ((low, "GreaterOrEqual"), (high, "LessOrEqual")):
        if bound:
            test = b.op(op, x, bound)
            inside = test if inside is None else b.op("And", inside, test)
    dx = b.dy() if inside is None else b.keep(b.dy(), inside)
    dlow = dhigh = None
    if b.opset >= 11 and b.wants(1):
        dlow = b.unbroadcast(b.keep(b.dy(), b.op("Less", x, low)), 1)
    if b.opset >= 11 and b.wants(2):
        dhigh = b.unbroadcast(b.keep(b.dy(), b.op("Greater", x, high)), 2)
    return [dx, dlow, dhigh]
