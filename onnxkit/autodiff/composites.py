"""Decomposed ops differentiated as the op they spell: exact GELU written out as
x · (1 + erf(x/√2)) · 0.5 (opsets before 20 have no Gelu; PyTorch exports it this way).

Through its five nodes the chain rule makes eleven passes over the activation and keeps
every intermediate alive for the backward pass, which also stops ONNX Runtime from fusing
the forward nodes into its one-pass Gelu kernel. Differentiated as one Gelu, the backward
takes nine passes and reads only x, and the forward fuses. A chain is collapsed only when
nothing outside it reads its intermediate values.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping

import numpy as np
import onnx
from onnx import helper

Indexed = tuple[int, onnx.NodeProto]


class _Graph:
    """Who makes and who reads each value of the forward graph, and its small constants."""

    def __init__(self, model: onnx.ModelProto, constants: Mapping[str, np.ndarray]) -> None:
        self.constants = constants
        self.maker: dict[str, Indexed] = {}
        self.readers: dict[str, list[Indexed]] = defaultdict(list)
        for index, node in enumerate(model.graph.node):
            for name in node.output:
                self.maker[name] = (index, node)
            for name in set(node.input):
                self.readers[name].append((index, node))
        self.outputs = {o.name for o in model.graph.output}

    def sole_reader(self, name: str, op_type: str) -> Indexed | None:
        """The one node reading `name`, if it has type `op_type` and `name` is no graph output."""
        readers = self.readers.get(name, [])
        if len(readers) != 1 or name in self.outputs or readers[0][1].op_type != op_type:
            return None
        return readers[0]

    def scalar(self, name: str, value: float) -> bool:
        known = self.constants.get(name)  # rank 0 or 1: one of higher rank would broadcast x up
        return (known is not None and known.size == 1 and known.ndim <= 1
                and math.isclose(float(known.reshape(-1)[0]), value, rel_tol=1e-6))

    def other(self, node: onnx.NodeProto, name: str) -> str | None:
        """The input of binary `node` that is not `name` (None if both are)."""
        rest = [i for i in node.input if i != name]
        return rest[0] if len(rest) == 1 else None


def _exact_gelu(g: _Graph, erf: Indexed) -> tuple[onnx.NodeProto, list[int]] | None:
    """The Gelu node that the chain around `erf` computes, and the chain's node indices."""
    made = g.maker.get(erf[1].input[0])
    if made is None or g.sole_reader(erf[1].input[0], "Erf") is None:
        return None
    scale_node = made[1]
    if scale_node.op_type == "Div" and g.scalar(scale_node.input[1], math.sqrt(2.0)):
        x = scale_node.input[0]
    elif scale_node.op_type == "Mul" and len(scale_node.input) == 2:
        consts = [i for i in scale_node.input if g.scalar(i, math.sqrt(0.5))]
        x = g.other(scale_node, consts[0]) if consts else None
    else:
        x = None
    add = g.sole_reader(erf[1].output[0], "Add")
    if x is None or add is None or not g.scalar(g.other(add[1], erf[1].output[0]) or "", 1.0):
        return None
    product = g.sole_reader(add[1].output[0], "Mul")
    if product is None:
        return None
    chain = [made[0], erf[0], add[0], product[0]]
    factor = g.other(product[1], add[1].output[0])
    if factor == x:  # x · (1 + erf) · 0.5
        half = g.sole_reader(product[1].output[0], "Mul")
        if half is None or not g.scalar(g.other(half[1], product[1].output[0]) or "", 0.5):
            return None
        chain.append(half[0])
        y = half[1].output[0]
    else:  # (x · 0.5) · (1 + erf)
        halved = g.maker.get(factor or "")
        if (halved is None or halved[1].op_type != "Mul" or g.sole_reader(factor, "Mul") is None
                or x not in halved[1].input or not g.scalar(g.other(halved[1], x) or "", 0.5)):
            return None
        chain.append(halved[0])
        y = product[1].output[0]
    return helper.make_node("Gelu", [x], [y], name=f"gelu of {x}"), sorted(chain)


def collapse(model: onnx.ModelProto, nodes: list[Indexed], constants: Mapping[str, np.ndarray]) -> list[Indexed]:
    """`nodes` (the active forward nodes, in order) with each decomposed GELU replaced by one Gelu
    node at the place of its last node."""
    g = _Graph(model, constants)
    active = {index for index, _ in nodes}
    replaced: dict[int, onnx.NodeProto | None] = {}
    for index, node in nodes:
        if node.op_type != "Erf" or index in replaced:
            continue
        found = _exact_gelu(g, (index, node))
        if found is None or not active.issuperset(found[1]) or replaced.keys() & set(found[1]):
            continue
        gelu, chain = found
        replaced.update(dict.fromkeys(chain))
        replaced[chain[-1]] = gelu
    return [(i, replaced.get(i, n)) for i, n in nodes if i not in replaced or replaced[i] is not None]
