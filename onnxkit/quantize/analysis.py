"""What a model holds that quantization can act on, and the mode that suits it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import onnx

from onnxkit.errors import OnnxkitError, suggest
from onnxkit.graph_walks import node_reads
from onnxkit.graph_work import (
    CONV_OPS,
    DENSE_OPS,
    EMBEDDING_OPS,
    FLOAT_TYPES,
    float_values,
    node_names,
    tensor_size,
    weight_input,
    weighted_nodes,
)


@dataclass
class ModelProfile:
    """The weighted nodes of a model by kind, with their weights and multiply-adds."""

    weighted: dict[str, list[str]] = field(default_factory=dict)  # kind -> node names
    weight_params: Counter = field(default_factory=Counter)  # kind -> number of weight values
    macs: Counter = field(default_factory=Counter)  # kind -> multiply-adds per example
    float_params: int = 0

    def nodes(self, kind: str) -> list[str]:
        return self.weighted.get(kind, [])

    @property
    def conv_share(self) -> float:
        """The fraction of weighted multiply-adds done by convolutions."""
        total = self.macs["conv"] + self.macs["dense"]
        return self.macs["conv"] / total if total else 0.0

    @property
    def default_mode(self) -> str:
        """Static QDQ when convolutions do most of the work, else dynamic.

        Dynamic int8 Conv (ONNX Runtime's ConvInteger) runs far slower than fp32, so Conv needs static
        quantization; but where a few small Convs feed large dense layers, int8 Conv
        kernels do not pay (a 1-channel 3x3 Conv runs ~3x slower in QLinearConv) and
        dynamic quantization of the MatMuls is both simpler and faster.
        """
        return "static" if self.conv_share > 0.5 else "dynamic"

    def reason(self) -> str:
        """One line saying why `default_mode` was chosen."""
        share = f"Conv does {100 * self.conv_share:.0f}% of the weighted multiply-adds"
        if self.default_mode == "static":
            return f"{share}: static int8 QDQ (dynamic int8 Conv, ConvInteger, runs far slower than fp32)"
        if self.nodes("conv"):
            return f"{share}: dynamic int8 of the MatMul/Gather layers; Conv stays fp32"
        return "MatMul/Gemm/Gather weights: dynamic int8 (weights ahead of time, activations per batch)"


def targets(model: onnx.ModelProto, mode: str, exclude_ops: set[str], exclude_nodes: set[str]) -> list[str]:
    """Names of the nodes a pass would quantize (fp16: every node, when there are float weights)."""
    prof = profile(model)
    if mode == "fp16":  # every node, unless excluded ones read all the float weights
        if not prof.float_params or not (exclude_ops or exclude_nodes):
            return node_names(model) if prof.float_params else []
        floats = {t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
        return [name for node, name in zip(model.graph.node, node_names(model), strict=True)
                if node.op_type not in exclude_ops and name not in exclude_nodes and floats & node_reads(node)]
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


def weight_values_by_op(model: onnx.ModelProto) -> Counter:
    """The float weight values of the weighted nodes (their weight initializer; an LSTM's or GRU's recurrent one
    too) by op type, each initializer counted once, at the first node that reads it."""
    inits = {t.name: t for t in model.graph.initializer if t.data_type in FLOAT_TYPES}
    seen: set[str] = set()
    found: Counter = Counter()
    for node in model.graph.node:
        if node.op_type not in CONV_OPS + DENSE_OPS + EMBEDDING_OPS:
            continue
        for i in (weight_input(node), *((2,) if node.op_type in ("LSTM", "GRU") else ())):
            name = node.input[i] if i < len(node.input) else ""
            if name in inits and name not in seen:
                seen.add(name)
                found[node.op_type] += tensor_size(inits[name])
    return found


def profile(model: onnx.ModelProto) -> ModelProfile:
    """The weighted nodes (`graph_work.weighted_nodes`) by kind, with their weights and multiply-adds per example."""
    prof = ModelProfile()
    prof.float_params = float_values(model)
    for weighted in weighted_nodes(model):
        prof.weighted.setdefault(weighted.kind, []).append(weighted.name)
        prof.weight_params[weighted.kind] += weighted.weight_values
        prof.macs[weighted.kind] += weighted.macs
    return prof


def resolve_exclude(
    model: onnx.ModelProto, items: Iterable[str], original: onnx.ModelProto | None = None
) -> tuple[set[str], set[str]]:
    """Split `--exclude` items into (op types, node names of `model`); unknown items are an error.

    `original` is the model before preprocessing, whose node names and op types the user sees
    (`onnxkit inspect`). ONNX Runtime's optimizations fuse nodes into new ones named after them
    ('fc/MatMul' + its Add -> Gemm 'fc/MatMul/MatMulAddFusion'), and the rewrites turn a Gemm into a
    MatMul of its name: an item naming an original node, or an op type, also excludes the nodes made
    from those nodes.
    """
    names = node_names(model)
    op_types = {n.op_type for n in model.graph.node}
    before = {} if original is None else dict(zip(node_names(original), (n.op_type for n in original.graph.node),
                                                  strict=True))
    made_from = {name: _origin(name, before) for name in names if name not in before}  # fused node -> source
    ops, nodes = set(), set()
    for item in items:
        if item in names:
            nodes.add(item)
        elif item in before:
            made = {name for name, source in made_from.items() if source == item}
            if not made:
                weighted = sorted(op_types & set(CONV_OPS + DENSE_OPS + EMBEDDING_OPS))
                raise OnnxkitError(
                    f"exclude {item}: this mode's preprocessing (graph optimization, attention fusion) merges that "
                    f"{before[item]} node into others; exclude an op type instead ({', '.join(weighted)})",
                    params=["exclude"],
                )
            nodes |= made
        elif item in op_types or item in before.values():
            ops |= {item} & op_types
            nodes |= {name for name, source in made_from.items() if before.get(source) == item}
            # and the nodes rewritten in place, under their name (a Gemm as a MatMul, for dynamic, int4 and fp16)
            nodes |= {name for name in names if before.get(name) == item}
        else:
            raise OnnxkitError(
                f"exclude {item}: no node or op type of that name in the model."
                f"{suggest(item, set(names) | op_types | set(before) | set(before.values()))} "
                "(op types: `onnxkit inspect`; node names: `onnxkit inspect --netron`)", params=["exclude"]
            )
    return ops, nodes


def _origin(name: str, before: dict[str, str]) -> str | None:
    """The original node a fused node `name` was made from: the longest original name it extends by '/...'."""
    cuts = [i for i, c in enumerate(name) if c == "/"]
    return next((name[:i] for i in reversed(cuts) if name[:i] in before), None)
