"""Gradient rule: Einsum. The gradient of an operand is itself an Einsum of the output
gradient with the other operands, written to the operand's subscripts:

    "ij,jk->ik":  dA = einsum("ik,jk->ij", dY, B),  dB = einsum("ik,ij->jk", dY, A)

An index summed away that only the differentiated operand carries ("ij->i": j) cannot come
out of that Einsum; it is left out and the result expanded back along it. An index that the
operand repeats (a diagonal, "ii->i") comes out once and is spread back onto the diagonal. An ellipsis is
spelled out as letters from the operands' static ranks; an axis of size 1 that broadcasts against a
larger one (under an ellipsis, or a named index: "ab,ab->ab" of [2, 3] and [1, 3]) gets a letter of its
own, so that it is summed back.
"""

from __future__ import annotations

import string
from collections.abc import Callable

import numpy as np

from onnxkit.autodiff.builder import Backward
from onnxkit.autodiff.rules import rule

ELLIPSIS = "..."


def _parse(equation: str) -> tuple[list[str], str]:
    """The input subscripts and the output subscripts (made explicit), ellipses kept."""
    lhs, arrow, rhs = equation.replace(" ", "").partition("->")
    terms = lhs.split(",")
    if not arrow:
        letters = "".join(terms).replace(ELLIPSIS, "")
        once = sorted(c for c in set(letters) if letters.count(c) == 1)
        rhs = (ELLIPSIS if any(ELLIPSIS in t for t in terms) else "") + "".join(once)
    return terms, rhs


def _spell_out(b: Backward, terms: list[str], rhs: str) -> tuple[list[list[str]], list[str]]:
    """Subscripts as lists of letters, each ellipsis replaced by letters (right-aligned, as
    broadcasting aligns axes), and each axis of size 1 that broadcasts given a letter of its own."""
    free = [c for c in string.ascii_letters if c not in "".join(terms)]

    def fresh() -> str:
        if not free:
            raise ValueError("the Einsum uses too many indices to spell out its ellipsis")
        return free.pop(0)

    if not any(ELLIPSIS in t for t in terms):
        return _broadcast_apart(b, [list(t) for t in terms], fresh), list(rhs)
    spans = {}  # operand -> (first ellipsis axis, static dims under the ellipsis)
    for k, term in enumerate(terms):
        if ELLIPSIS in term:
            start, after = term.index(ELLIPSIS), len(term) - term.index(ELLIPSIS) - len(ELLIPSIS)
            dims = b.dims(b.x(k))
            if dims is None:
                raise ValueError(f"the rank of Einsum operand {k} is unknown; give the model's inputs a shape")
            spans[k] = (start, dims[start:len(dims) - after])
    width = max(len(dims) for _, dims in spans.values())
    shared = [fresh() for _ in range(width)]
    columns = [[d[p - width + len(d)] for _, d in spans.values() if p >= width - len(d)] for p in range(width)]
    subscripts = [list(t) for t in terms]
    for k, (start, dims) in spans.items():
        letters = []
        for p, d in enumerate(dims, start=width - len(dims)):
            broadcast = d == 1 and any(s != 1 for s in columns[p])
            letters.append(fresh() if broadcast else shared[p])
        subscripts[k] = [*terms[k][:start], *letters, *terms[k][start + len(ELLIPSIS):]]
    return _broadcast_apart(b, subscripts, fresh), list(rhs.replace(ELLIPSIS, "".join(shared)))


def _broadcast_apart(b: Backward, subscripts: list[list[str]], fresh: Callable[[], str]) -> list[list[str]]:
    """`subscripts` with a named index of static size 1 in one operand that broadcasts against another size of
    it in another ("ab,ab->ab" of [1, 3] and [2, 3]) given a letter of its own there, so that its gradient is
    summed over that axis (it came out [2, 3])."""
    dims = [b.dims(b.x(k)) or [None] * len(s) for k, s in enumerate(subscripts)]
    sizes: dict[str, list] = {}
    for letters, ds in zip(subscripts, dims, strict=True):
        for c, d in zip(letters, ds, strict=True):
            sizes.setdefault(c, []).append(d)
    return [[fresh() if d == 1 and letters.count(c) == 1 and any(s != 1 for s in sizes[c]) else c
             for c, d in zip(letters, ds, strict=True)] for letters, ds in zip(subscripts, dims, strict=True)]


def _operand_gradient(b: Backward, k: int, subscripts: list[list[str]], out: list[str]) -> str:
    target = subscripts[k]
    unique = list(dict.fromkeys(target))  # a repeated index (a diagonal) once, where it first appears
    others = [j for j in range(len(subscripts)) if j != k]
    reachable = set(out).union(*(subscripts[j] for j in others))
    kept = [c for c in unique if c in reachable]
    if others:
        equation = ",".join("".join(s) for s in [out] + [subscripts[j] for j in others]) + "->" + "".join(kept)
        grad = b.op("Einsum", b.dy(), *[b.x(j) for j in others], equation=equation)
    else:  # only the output gradient: a permutation of it
        perm = [out.index(c) for c in kept]
        grad = b.dy() if perm == list(range(len(perm))) else b.op("Transpose", b.dy(), perm=perm)
    lone = [i for i, c in enumerate(unique) if c not in reachable]
    if lone:
        shape = b.shape(b.x(k))
        if len(unique) < len(target):
            shape = b.op("Gather", shape, b.ints([target.index(c) for c in unique]))
        grad = b.op("Expand", b.unsqueeze(grad, lone), shape)
    return _on_diagonals(b, grad, target, k) if len(unique) < len(target) else grad


def _on_diagonals(b: Backward, grad: str, target: list[str], k: int) -> str:
    """`grad`, over operand k's distinct indices, spread to its axes: zero off the diagonals
    that its repeated indices take (d einsum("ii->i", A) / dA is the identity's pattern)."""
    repeats = [p for p, c in enumerate(target) if target.index(c) != p]
    grad = b.unsqueeze(grad, repeats)
    dims = b.dims(b.x(k))
    for p in repeats:
        q, n = target.index(target[p]), dims[p] if dims else None
        if isinstance(n, int):
            eye = b.const(np.eye(n), like=b.x(k))
        else:
            size = b.op("Gather", b.shape(b.x(k)), b.ints([q]))
            eye = b.op("EyeLike", b.graph.filled(b.op("Concat", size, size, axis=0), 0, b.dtype(b.x(k))))
        grad = b.op("Mul", grad, b.unsqueeze(eye, [a for a in range(len(target)) if a not in (q, p)]))
    return grad


@rule("Einsum")
def einsum(b: Backward) -> list[str | None]:
    terms, rhs = _parse(b.attr("equation"))
    subscripts, out = _spell_out(b, terms, rhs)
    return [_operand_gradient(b, k, subscripts, out) if b.wants(k) else None for k in range(b.num_inputs)]
