"""Gradient rules: one vector-Jacobian product per ONNX op type, in a registry.

A rule takes a `Backward` (the forward node, the gradients of its outputs and a node
builder) and returns one gradient name per input, or None where no gradient flows. Rules
live in small modules grouped by kind; importing this package registers them all.

    @rule("Exp")
    def exp(b):
        return [b.op("Mul", b.dy(), b.y())]

`NON_DIFFERENTIABLE` ops pass no gradient to any input (their float outputs are
piecewise constant, random or shape-like); the engine cuts them from the backward pass.
"""

from __future__ import annotations

from collections.abc import Callable

from onnxkit.autodiff.builder import Backward
from onnxkit.autodiff.functions import FUNCTIONS
from onnxkit.autodiff.recurrent import RECURRENT

Rule = Callable[[Backward], "list[str | None]"]
RULES: dict[str, Rule] = {}

NON_DIFFERENTIABLE = frozenset({
    "Shape", "Size", "ConstantOfShape", "Constant", "EyeLike", "RandomUniformLike", "RandomNormalLike",
    "RandomUniform", "RandomNormal", "Multinomial", "Bernoulli", "Range",
    "Floor", "Ceil", "Round", "Sign", "ArgMax", "ArgMin", "Hardmax", "NonZero",
    "Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "Not", "And", "Or", "Xor", "IsNaN", "IsInf",
})


def rule(*op_types: str) -> Callable[[Rule], Rule]:
    """Register the decorated function as the gradient rule of `op_types`."""

    def register(fn: Rule) -> Rule:
        for op in op_types:
            if op in RULES:
                raise ValueError(f"two gradient rules for {op}")
            RULES[op] = fn
        return fn

    return register


def differentiable_ops() -> list[str]:
    """Every op type with a gradient rule, sorted."""
    return sorted(RULES)


def gradient_table() -> str:
    """A Markdown table of the ops with gradient rules, by rule module, and the ops that pass none."""
    groups: dict[str, list[str]] = {}
    for op, fn in RULES.items():
        groups.setdefault(fn.__module__.rsplit(".", 1)[-1], []).append(op)
    rows = ["| group | ops with a gradient rule |", "|---|---|"]
    rows += [f"| {group} | {', '.join(sorted(ops))} |" for group, ops in sorted(groups.items())]
    rows.append(f"| recurrent (unrolled over a fixed sequence length) | {', '.join(sorted(RECURRENT))} |")
    rows.append(f"| through ONNX's function body for the node | {', '.join(sorted(FUNCTIONS))} |")
    rows.append(f"| no gradient (cut) | {', '.join(sorted(NON_DIFFERENTIABLE))} |")
    return "\n".join(rows)


from onnxkit.autodiff.rules import (  # noqa: E402,F401  (each module registers its rules)
    activation,
    attention,
    conv,
    einsum,
    elementwise,
    linalg,
    norm,
    reduce,
    sample,
    shape,
)
