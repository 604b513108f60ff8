"""What a model holds that quantization can act on, and the mode that suits it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import onnx

from onnxkit.errors import OnnxkitError, suggest

# Op types whose constant weight makes them worth quantizing, by kind.
CONV_OPS = ("Conv", "ConvTranspose")
DENSE_OPS = ("MatMul", "Gemm", "Attention", "LSTM", "GRU")
EMBEDDING_OPS = ("Gather",)
FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE)


def weight_input(node: onnx.NodeProto) -> int:
    """Index of the input that holds a weighted op's weight (Gather: the table)."""
    return 0 if node.op_type in EMBEDDING_OPS else 1


@dataclass
class ModelProfile:
    """Op counts and the weighted nodes of a model, grouped by kind."""

    op_counts: Counter = field(default_factory=Counter)
    weighted: dict[str, list[str]] = field(default_factory=dict)  # kind -> node names
    weight_params: Counter = field(default_factory=Counter)  # kind -> number of weight values
    float_params: int = 0

    def nodes(self, kind: str) -> list[str]:
        return self.weighted.get(kind, [])

    @property
    def default_mode(self) -> str:
        """Static QDQ when there are convolutions (dynamic Conv is slow), else dynamic."""
        return "static" if self.nodes("conv") else "dynamic"

    def reason(self) -> str:
        """One line saying why `default_mode` was chosen."""
        conv, dense, emb = (len(self.nodes(k)) for k in ("conv", "dense", "embedding"))
        if conv:
            return (
                f"{conv} Conv node(s): static int8 QDQ (dynamic int8 Conv runs slower than fp32 "
                "on CPUs without VNNI)"
            )
        return f"{dense} MatMul/Gemm and {emb} Gather node(s) with weights: dynamic int8"

    def summary(self) -> str:
        parts = [f"{len(self.nodes(k))} {k}" for k in ("conv", "dense", "embedding")]
        total = sum(self.weight_params.values())
        return f"weighted nodes: {', '.join(parts)}; {total:,} weight values"


def targets(model: onnx.ModelProto, mode: str, exclude_ops: set[str], exclude_nodes: set[str]) -> list[str]:
    """Names of the nodes a pass would quantize (fp16: every node, when there are float weights)."""
    prof = profile(model)
    if mode == "fp16":
        return _node_names(model) if prof.float_params else []
    kinds = {"dynamic": ("dense", "embedding"), "static": ("conv", "dense", "embedding"),
             "int4": ("dense",)}[mode]  # fmt: skip
    ops = {"dynamic": set(DENSE_OPS) - {"Gemm", "GRU"} | set(EMBEDDING_OPS), "int4": {"MatMul"}}.get(
        mode, set(CONV_OPS + DENSE_OPS + EMBEDDING_OPS)
    )
    by_name = {n.name: n.op_type for n in model.graph.node}
    return [
        name
        for kind in kinds
        for name in prof.nodes(kind)
        if by_name.get(name) in ops - exclude_ops and name not in exclude_nodes
    ]


def _node_names(model: onnx.ModelProto) -> list[str]:
    return [node.name or f"{node.op_type}_{i}" for i, node in enumerate(model.graph.node)]


def profile(model: onnx.ModelProto) -> ModelProfile:
    """Count ops and find the nodes whose weight is a float initializer."""
    inits = {t.name: t for t in model.graph.initializer}
    constant_transposes = {
        n.output[0]: inits[n.input[0]]
        for n in model.graph.node
        if n.op_type == "Transpose" and n.input and n.input[0] in inits
    }
    prof = ModelProfile()
    prof.float_params = sum(_size(t) for t in inits.values() if t.data_type in FLOAT_TYPES)
    kinds = {**dict.fromkeys(CONV_OPS, "conv"), **dict.fromkeys(DENSE_OPS, "dense")}
    kinds.update(dict.fromkeys(EMBEDDING_OPS, "embedding"))
    for node, name in zip(model.graph.node, _node_names(model), strict=True):
        prof.op_counts[node.op_type] += 1
        kind = kinds.get(node.op_type)
        if kind is None or len(node.input) <= weight_input(node):
            continue
        src = node.input[weight_input(node)]
        weight = inits.get(src) or constant_transposes.get(src)
        if weight is not None and weight.data_type in FLOAT_TYPES:
            prof.weighted.setdefault(kind, []).append(name)
            prof.weight_params[kind] += _size(weight)
    return prof


def _size(tensor: onnx.TensorProto) -> int:
    n = 1
    for d in tensor.dims:
        n *= d
    return n


def resolve_exclude(model: onnx.ModelProto, items: Iterable[str]) -> tuple[set[str], set[str]]:
    """Split `--exclude` items into (op types, node names); unknown items are an error."""
    names = set(_node_names(model))
    op_types = {n.op_type for n in model.graph.node}
    ops, nodes = set(), set()
    for item in items:
        if item in names:
            nodes.add(item)
        elif item in op_types:
            ops.add(item)
        else:
            raise OnnxkitError(
                f"--exclude {item}: no node or op type of that name in the model."
                f"{suggest(item, names | op_types)} (`onnxkit inspect` lists them)"
            )
    return ops, nodes
