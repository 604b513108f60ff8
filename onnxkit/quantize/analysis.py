"""What a model holds that quantization can act on, and the mode that suits it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import onnx

from onnxkit.errors import OnnxkitError, suggest
from onnxkit.graph_walks import node_reads

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
            return _node_names(model) if prof.float_params else []
        floats = {t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
        return [name for node, name in zip(model.graph.node, _node_names(model), strict=True)
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
                found[node.op_type] += _size(inits[name])
    return found


def _node_names(model: onnx.ModelProto) -> list[str]:
    return [node.name or f"{node.op_type}_{i}" for i, node in enumerate(model.graph.node)]


def _known(dims: list[int | None]) -> int:
    n = 1
    for d in dims:
        n *= d or 1
    return n


def _output_dims(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    """Tensor name -> dims after ONNX shape inference (None where not a fixed size)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - shapes only refine the estimate
        inferred = model
    graph = inferred.graph
    return {
        vi.name: [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
        for vi in [*graph.input, *graph.value_info, *graph.output]
    }


def profile(model: onnx.ModelProto) -> ModelProfile:
    """Find the nodes whose weight is a float initializer and estimate their work.

    Multiply-adds per example: weight size times the output positions it is
    applied at (Conv: spatial size; MatMul: the dims between batch and features,
    free dims counted as 1).
    """
    inits = {t.name: t for t in model.graph.initializer}
    constant_transposes = {
        n.output[0]: inits[n.input[0]]
        for n in model.graph.node
        if n.op_type == "Transpose" and n.input and n.input[0] in inits
    }
    dims = _output_dims(model)
    prof = ModelProfile()
    prof.float_params = sum(_size(t) for t in inits.values() if t.data_type in FLOAT_TYPES)
    kinds = {**dict.fromkeys(CONV_OPS, "conv"), **dict.fromkeys(DENSE_OPS, "dense")}
    kinds.update(dict.fromkeys(EMBEDDING_OPS, "embedding"))
    for node, name in zip(model.graph.node, _node_names(model), strict=True):
        kind = kinds.get(node.op_type)
        if kind is None or len(node.input) <= weight_input(node):
            continue
        src = node.input[weight_input(node)]
        weight = inits.get(src) or constant_transposes.get(src)
        if weight is None or weight.data_type not in FLOAT_TYPES:
            continue
        prof.weighted.setdefault(kind, []).append(name)
        prof.weight_params[kind] += _size(weight)
        out = dims.get(node.output[0], [])
        positions = _known(out[2:]) if kind == "conv" else _known(out[1:-1])
        size = _size(weight)
        if node.op_type == "LSTM":  # W and the recurrent R, at each time step (X: [seq, batch, input] as Y:
            layout = next((a.i for a in node.attribute if a.name == "layout"), 0)  # [seq, dirs, batch, hidden])
            steps = dims.get(node.input[0], [])  # Y may be left out (only the last state read): one step, it counted
            positions = _known(steps[layout:layout + 1])
            recurrent = inits.get(node.input[2]) if len(node.input) > 2 else None
            size += _size(recurrent) if recurrent is not None and recurrent.data_type in FLOAT_TYPES else 0
        prof.macs[kind] += 0 if kind == "embedding" else positions * size
    return prof


def _size(tensor: onnx.TensorProto) -> int:
    n = 1
    for d in tensor.dims:
        n *= d
    return n


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
    names = _node_names(model)
    op_types = {n.op_type for n in model.graph.node}
    before = {} if original is None else dict(zip(_node_names(original), (n.op_type for n in original.graph.node),
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
