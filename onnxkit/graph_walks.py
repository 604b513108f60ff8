"""Walks over an ONNX graph that several layers share: what a value depends on, which nodes
and initializers a value needs, and every value's inferred type; and the graph without the
weight inputs old exporters list."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from onnxkit.dims import dim_of
from onnxkit.errors import OnnxkitError

FLOAT_TYPES = frozenset({TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16})


def node_label(node: onnx.NodeProto, index: int) -> str:
    """How errors name a node: its name, or its position and first output."""
    return repr(node.name) if node.name else f"#{index} (output {node.output[0]!r})"


def subgraphs(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    """The graphs `node` holds as attributes (If's branches, Loop's and Scan's bodies)."""
    for a in node.attribute:
        yield from [a.g] if a.HasField("g") else a.graphs


def every_node(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """The nodes of `graph` and of the subgraphs they hold, depth first."""
    for node in graph.node:
        yield node
        for sub in subgraphs(node):
            yield from every_node(sub)


def node_reads(node: onnx.NodeProto) -> set[str]:
    """The values `node` reads: its inputs and those its subgraphs (If, Loop, Scan) read from outside
    (PyTorch's TorchScript LocalResponseNorm squeezes through an If, nn.EmbeddingBag loops over a Loop)."""
    names = set(node.input)
    for sub in subgraphs(node):
        names.update(name for inner in every_node(sub) for name in inner.input)
    return names


def readers(nodes: Iterable[onnx.NodeProto]) -> dict[str, list[onnx.NodeProto]]:
    """The nodes among `nodes` that read each value, in order, a node once however often it reads it."""
    found: dict[str, list[onnx.NodeProto]] = {}
    for node in nodes:
        for name in dict.fromkeys(node.input):
            found.setdefault(name, []).append(node)
    return found


def slots(nodes: Iterable[onnx.NodeProto]) -> dict[str, list[tuple[onnx.NodeProto, int]]]:
    """Where each value is read among `nodes`: (node, input index), once per input that names it."""
    found: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in nodes:
        for index, name in enumerate(node.input):
            found.setdefault(name, []).append((node, index))
    return found


def producers(nodes: Iterable[onnx.NodeProto]) -> dict[str, onnx.NodeProto]:
    """The node among `nodes` that makes each value."""
    return {name: node for node in nodes for name in node.output}


def transpose_perm(node: onnx.NodeProto) -> list[int] | None:
    """A Transpose's `perm`; None where it has none (it then reverses the axes)."""
    return next((list(a.ints) for a in node.attribute if a.name == "perm"), None)


def last_two_swapped(rank: int) -> list[int]:
    """The perm that swaps the last two of `rank` axes (a MatMul operand's transpose)."""
    return [*range(rank - 2), rank - 1, rank - 2]


def output_channels(node: onnx.NodeProto, weight: onnx.TensorProto) -> int:
    """The output channels of a Conv, ConvTranspose or Gemm layer, from its weight: Conv's [out, in / group, ...],
    ConvTranspose's [in, out / group, ...], Gemm's [in, out] ([out, in] with transB)."""
    attrs = {a.name: a.i for a in node.attribute}
    if node.op_type == "ConvTranspose":
        return weight.dims[1] * attrs.get("group", 1)
    return weight.dims[0] if node.op_type == "Conv" or attrs.get("transB") else weight.dims[1]


def ancestors(model: onnx.ModelProto, *names: str, stop: Callable[[onnx.NodeProto], bool] | None = None) -> set[str]:
    """Every value name `names` depend on (including themselves), through subgraphs' reads too; `stop(node)`: a
    node whose inputs are not followed (its outputs still count)."""
    producer = producers(model.graph.node)
    seen, stack = set(), list(names)
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in producer and not (stop and stop(producer[name])):
            stack.extend(i for i in node_reads(producer[name]) if i)
    return seen


def needed_nodes(model: onnx.ModelProto, *outputs: str) -> list[tuple[int, onnx.NodeProto]]:
    """The nodes (with their positions) that computing `outputs` runs."""
    needed = ancestors(model, *outputs)
    return [(i, node) for i, node in enumerate(model.graph.node) if any(o in needed for o in node.output)]


def used_initializers(model: onnx.ModelProto, nodes: Iterable[onnx.NodeProto]) -> list[onnx.TensorProto]:
    """The initializers that `nodes` read (their subgraphs too), in the model's order."""
    used = {name for node in nodes for name in node_reads(node)}
    return [t for t in model.graph.initializer if t.name in used]


def initializers_to_inputs(model: onnx.ModelProto, names: Iterable[str]) -> dict[str, np.ndarray]:
    """Turn the initializers `names` of `model` into graph inputs (in place); returns their values."""
    wanted, values, kept = set(names), {}, []
    for t in model.graph.initializer:
        if t.name in wanted:
            values[t.name] = numpy_helper.to_array(t)
            model.graph.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
        else:
            kept.append(t)
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    return values


def _skeleton(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` without the data of weights larger than SMALL (enough for shape inference and for
    `_fold_constants`)."""
    skeleton = onnx.ModelProto()
    skeleton.ir_version = model.ir_version
    skeleton.opset_import.extend(model.opset_import)
    graph = skeleton.graph
    for field in ("node", "input", "output", "value_info"):
        getattr(graph, field).extend(getattr(model.graph, field))
    for t in model.graph.initializer:
        if t.data_type == TensorProto.FLOAT and np.prod(t.dims, dtype=np.int64) > SMALL:
            graph.initializer.add(name=t.name, data_type=t.data_type, dims=t.dims)
        else:
            graph.initializer.append(t)
    return skeleton


# Ops that compute shapes from small constants in exported models (never a large output from small inputs).
FOLDABLE = frozenset({
    "Constant", "Identity", "Cast", "Add", "Sub", "Mul", "Div", "Mod", "Neg", "Abs", "Floor", "Ceil", "Sqrt", "Pow",
    "Min", "Max", "Equal", "Less", "Greater", "Not", "And", "Or", "Where", "Concat", "Gather", "Slice", "Squeeze",
    "Unsqueeze", "Reshape", "ReduceProd", "ReduceSum", "Transpose", "Range",
})  # and ConstantOfShape, when its shape is a constant of few elements
SMALL = 64  # elements of a constant that counts as shape arithmetic


def _fold_constants(model: onnx.ModelProto, skeleton: onnx.ModelProto) -> list[onnx.TensorProto]:
    """Replace the skeleton's nodes computed from small constants alone by their values (made
    with onnx's reference evaluator); returns the new initializers. A model whose constants the
    evaluator cannot run is left as it is."""
    graph = skeleton.graph
    known = {t.name for t in model.graph.initializer if np.prod(t.dims, dtype=np.int64) <= SMALL}
    # shape vectors given as constants, for a ConstantOfShape that makes a small tensor of one
    shapes = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer
              if t.name in known and t.data_type == TensorProto.INT64}
    ends = {o.name for o in graph.output}
    at = []  # positions of the foldable nodes
    for k, node in enumerate(graph.node):
        large = node.op_type == "Constant" and any(np.prod(a.t.dims, dtype=np.int64) > SMALL for a in node.attribute)
        if node.op_type == "Constant" and not large and node.attribute[0].t.data_type == TensorProto.INT64:
            shapes[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        small_fill = (node.op_type == "ConstantOfShape" and node.input[0] in shapes
                      and np.prod(shapes[node.input[0]], dtype=np.int64) <= SMALL)
        if ((node.op_type in FOLDABLE or small_fill) and node.domain in ("", "ai.onnx") and not large
                and not ends & set(node.output) and all(i in known for i in node.input if i)):
            at.append(k)
            known.update(node.output)
    if not at:
        return []
    foldable = [graph.node[k] for k in at]
    outputs = [o for node in foldable for o in node.output if o]
    # the DSL's axes and shapes are Constant nodes alone: their values are on the nodes
    if all(n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value" for n in foldable):
        values = [numpy_helper.to_array(n.attribute[0].t) for n in foldable]
    else:
        values = _evaluated(model, foldable, outputs, [t for t in model.graph.initializer if t.name in known])
        if values is None:
            return []
    folded = [numpy_helper.from_array(np.asarray(v), o) for o, v in zip(outputs, values, strict=True)]
    for k in reversed(at):
        del graph.node[k]
    graph.initializer.extend(folded)
    return folded


def _evaluated(model: onnx.ModelProto, nodes: list[onnx.NodeProto], outputs: list[str],
               constants: list[onnx.TensorProto]) -> list | None:
    """The values of `outputs` that `nodes` compute from `constants`, by onnx's reference evaluator (60-90 ms
    to import and first build in a process, so only here); None where it lacks an op."""
    from onnx.reference import ReferenceEvaluator

    part = onnx.helper.make_model(
        onnx.helper.make_graph(nodes, "constants", [], [onnx.ValueInfoProto(name=o) for o in outputs], constants),
        opset_imports=model.opset_import, ir_version=model.ir_version)
    try:
        return ReferenceEvaluator(part).run(None, {})
    except Exception:  # noqa: BLE001 - an op the evaluator lacks: infer without the folding
        return None


def folded_values(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """The values of the nodes that compute from small constants alone (shape arithmetic: axes
    given as Reshape(Constant, Constant) by the dynamo exporter without its optimizer), by name."""
    return {t.name: numpy_helper.to_array(t) for t in _fold_constants(model, _skeleton(model))}


def constant_values(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Small values fixed before run time, by name: initializers, Constant nodes and what shape
    arithmetic computes from them alone (axes, shapes, ratios)."""
    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer if np.prod(t.dims) <= 64}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return {**folded_values(model), **values}


# Ops whose first output has its first input's type and shape, for the few that onnx's shape
# inference leaves untyped (GroupNormalization-21 in onnx 1.2x), so inference can go on past them.
SAME_SHAPE = frozenset({"GroupNormalization", "InstanceNormalization", "LayerNormalization", "BatchNormalization",
                        "Scaler", "Normalizer"})  # the last two: ai.onnx.ml (a scikit-learn pipeline's), float out
FLOAT_OUT = frozenset({"Scaler", "Normalizer"})


def value_types(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    """Every value's inferred type and shape, by name (initializers included).

    The shape arithmetic of exported models (PyTorch's attention: a Reshape whose target is a
    Concat of a Slice whose end is a Mod of two constants) is folded first, and inference
    propagates the values of shape tensors, so such a Reshape gets its rank."""
    skeleton = _skeleton(model)
    folded = _fold_constants(model, skeleton)
    for _ in range(64):  # each pass types what the one before left untyped (a ShuffleNet: a pass per block)
        try:
            inferred = onnx.shape_inference.infer_shapes(skeleton, data_prop=True)
        except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as e:
            raise OnnxkitError(f"shape inference failed on the model ({e}); is it a valid ONNX model?") from e
        known = {v.name: v for v in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output)}
        hints = [_same_type(known[n.input[0]], n.output[0], n.op_type in FLOAT_OUT) for n in inferred.graph.node
                 if n.op_type in SAME_SHAPE and n.input[0] in known and not _has_shape(known.get(n.output[0]))]
        hints += _resize_hints(inferred.graph, known)
        if not hints and not _fold_static_sizes(skeleton.graph, inferred.graph, known) and \
                not _take_decided_branches(skeleton.graph, inferred.graph, known):
            break
        folded += _fold_constants(skeleton, skeleton)  # what sizes now known make (MobileViT's ceil(h / 2.0) * 2)
        skeleton.graph.value_info.extend(hints)
    g = inferred.graph
    types = {
        t.name: onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
        for t in (*model.graph.initializer, *folded)
    }
    types.update({v.name: v for v in (*g.input, *g.value_info, *g.output)})
    return types


def _resize_hints(graph: onnx.GraphProto, known: dict[str, onnx.ValueInfoProto]) -> list[onnx.ValueInfoProto]:
    """Types for the outputs of Resize nodes whose `sizes` are made from a shape (TorchScript's F.interpolate(size=):
    Concat(Slice(Shape(x), 0, 2), [h, w])), and of Reshape nodes whose target is (TorchScript's x.flatten(2):
    Concat(Slice(Shape(x), 0, 2), [-1]), its -1 the fixed axes' product), where onnx's inference leaves an axis
    unnamed: the batch keeps its name, and a Conv after such a flatten its static length."""
    producer = producers(graph.node)
    constants = {t.name: t for t in graph.initializer if t.data_type == TensorProto.INT64}
    hints = []
    for node in graph.node:
        target = {"Resize": 3, "Reshape": 1}.get(node.op_type, len(node.input))
        if target >= len(node.input) or not node.input[target] or node.output[0] not in known:
            continue
        dims = _shape_elements(node.input[target], producer, constants, known)
        if node.op_type == "Reshape" and dims is not None:
            dims = _reshaped(dims, known.get(node.input[0]), any(a.name == "allowzero" and a.i for a in node.attribute))
        now = known[node.output[0]].type.tensor_type
        if dims is None or now.HasField("shape") and len(dims) != len(now.shape.dim):
            continue
        # (no rank: onnx's data propagation lost the target's length)
        old = [dim_of(d) for d in now.shape.dim] if now.HasField("shape") else [None] * len(dims)
        new = [d if _named(d) and not _named(o) else o for d, o in zip(dims, old, strict=True)]
        if new != old:
            hints.append(onnx.helper.make_tensor_value_info(node.output[0], now.elem_type, new))
    return hints


def _named(dim: int | str | None) -> bool:
    """Whether `dim` is a number or a name of the model's (not one onnx's inference makes up afresh each run:
    hinting those never settled, and inference ran its 64 passes on every model with such a Reshape)."""
    return bool(dim) and not str(dim).startswith("unk__")


def _reshaped(target: list, data: onnx.ValueInfoProto | None, allowzero: bool) -> list | None:
    """The dims a Reshape of `data` to traced `target` gives: a 0 copies the input's axis, and a -1 is the input's
    size over the others' where the named axes cancel out (['batch', 8, -1] of ['batch', 8, 8, 8]: 64)."""
    if not _has_shape(data):
        return None
    given = [dim_of(d) for d in data.type.tensor_type.shape.dim]
    dims = [given[k] if e == 0 and not allowzero and k < len(given) else e for k, e in enumerate(target)]
    if dims.count(-1) != 1 or None in given:
        return None if -1 in dims else dims
    rest = [d for d in dims if d != -1]
    named, numbers = [d for d in given if isinstance(d, str)], [d for d in given if isinstance(d, int)]
    for d in rest:
        if isinstance(d, str) and d in named:
            named.remove(d)
        elif not isinstance(d, int):
            return None
    size, other = int(np.prod(numbers)), int(np.prod([d for d in rest if isinstance(d, int)]))
    if named or not other or size % other:
        return None
    return [size // other if d == -1 else d for d in dims]


def _fold_static_sizes(skeleton: onnx.GraphProto, graph: onnx.GraphProto,
                       known: dict[str, onnx.ValueInfoProto]) -> bool:
    """Replace the skeleton's integer shape arithmetic whose values inference has made known (sizes other than
    the batch) by Constants; whether there were any.

    onnx's data propagation has no Div, and Slice reads only constant bounds, so TorchScript's
    `channels // groups` and `x.chunk(2, dim=1)` (ShuffleNet's channel shuffle and split) left those axes,
    and every shape after them, unknown."""
    producer = producers(graph.node)
    constants = {t.name: t for t in graph.initializer if t.data_type == TensorProto.INT64}
    folded = False
    for k, node in enumerate(graph.node):
        out = known.get(node.output[0]) if node.op_type in _SHAPE_OPS or node.op_type == "Shape" else None
        if out is None or out.type.tensor_type.elem_type != TensorProto.INT64 or not _has_shape(out):
            continue
        value = _shape_elements(node.output[0], producer, constants, known)
        if value is None or not all(isinstance(v, int) for v in value):
            continue
        rank = len(out.type.tensor_type.shape.dim)
        tensor = onnx.helper.make_tensor(node.output[0], TensorProto.INT64, [len(value)] if rank else [], value)
        skeleton.node[k].CopyFrom(onnx.helper.make_node("Constant", [], [node.output[0]], value=tensor))
        folded = True
    return folded


def _take_decided_branches(skeleton: onnx.GraphProto, graph: onnx.GraphProto,
                           known: dict[str, onnx.ValueInfoProto]) -> bool:
    """Replace the skeleton's If nodes whose condition compares sizes inference has shown equal or different by
    the nodes of the branch taken; whether there were any.

    DeBERTa's TorchScript export asks `if key.size(-2) != query.size(-2)`, whose branches give relative positions
    of different ranks, so onnx's inference left the If's output, and the attention scores it is added to, unranked."""
    producer = producers(graph.node)
    constants = {t.name: t for t in graph.initializer if t.data_type == TensorProto.INT64}
    nodes, taken = [], False
    for node in skeleton.node:
        truth = _truth(node.input[0], producer, constants, known) if node.op_type == "If" else None
        if truth is None:
            nodes.append(node)
            continue
        branch = next(a.g for a in node.attribute if a.name == ("then_branch" if truth else "else_branch"))
        nodes += [*branch.node, *(onnx.helper.make_node("Identity", [o.name], [out])
                                  for o, out in zip(branch.output, node.output, strict=True))]
        taken = True
    if taken:
        del skeleton.node[:]
        skeleton.node.extend(nodes)
    return taken


def _truth(name: str, producer: dict[str, onnx.NodeProto], constants: dict[str, onnx.TensorProto],
           known: dict[str, onnx.ValueInfoProto]) -> bool | None:
    """The value of boolean scalar `name` where it is an Equal of two traced sizes (through Not and Cast): True
    for equal numbers or the same named axis, False for different numbers, None where it cannot be told."""
    node = producer.get(name)
    if node is None or node.op_type not in ("Cast", "Identity", "Not", "Equal"):
        return None
    if node.op_type != "Equal":
        inner = _truth(node.input[0], producer, constants, known)
        return None if inner is None else inner != (node.op_type == "Not")
    a, b = (_shape_elements(i, producer, constants, known) for i in node.input)
    if a is None or b is None or len(a) != 1 or len(b) != 1 or None in (*a, *b):
        return None
    if a == b:
        return True
    return False if all(isinstance(v, int) for v in (*a, *b)) else None


_SHAPE_OPS = frozenset({"Cast", "Unsqueeze", "Squeeze", "Identity", "Concat", "Slice", "Gather", "Add", "Sub", "Mul",
                        "Div"})
# (traced by _shape_elements)


def _shape_elements(name: str, producer: dict[str, onnx.NodeProto], constants: dict[str, onnx.TensorProto],
                    known: dict[str, onnx.ValueInfoProto]) -> list[int | str | None] | None:
    """The elements of 1-D int64 shape tensor `name` (an int, a dim's name, or None where unknown), traced through
    Shape, Slice and Gather with constant arguments, Concat, Cast, Squeeze and Unsqueeze; None when it cannot be."""
    if name in constants:
        return [int(v) for v in numpy_helper.to_array(constants[name]).reshape(-1)]
    node = producer.get(name)
    if node is None:
        return None
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "Shape" and _has_shape(known.get(node.input[0])):
        dims = [dim_of(d) for d in known[node.input[0]].type.tensor_type.shape.dim]
        return dims[attrs.get("start", 0):attrs.get("end", len(dims))]
    if node.op_type == "Constant" and node.attribute[0].name == "value" and \
            node.attribute[0].t.data_type == TensorProto.INT64:  # (folded by _fold_static_sizes)
        return [int(v) for v in numpy_helper.to_array(node.attribute[0].t).reshape(-1)]
    if node.op_type not in _SHAPE_OPS or _elem_type(known.get(name)) not in (TensorProto.INT64, TensorProto.INT32):
        return None  # (before walking its inputs: they may lead through the whole network, a float Add's do)
    parts = [_shape_elements(i, producer, constants, known) if i else None for i in node.input]
    if node.op_type in ("Cast", "Unsqueeze", "Squeeze", "Identity"):
        return parts[0]
    if node.op_type in ("Add", "Sub", "Mul", "Div"):
        return _integer_arithmetic(node.op_type, parts[0], parts[1])
    if node.op_type == "Concat" and all(p is not None for p in parts):
        return [e for p in parts for e in p]
    numbers = [p if p is not None and all(isinstance(e, int) for e in p) else None for p in parts]
    if node.op_type == "Slice" and parts[0] is not None and numbers[1] and numbers[2] and len(numbers[1]) == 1 and \
            (len(parts) < 4 or numbers[3] == [0]) and (len(parts) < 5 or numbers[4] == [1]):
        return parts[0][numbers[1][0]:numbers[2][0]]
    if node.op_type == "Gather" and parts[0] is not None and numbers[1] is not None and not attrs.get("axis", 0):
        return [parts[0][i] for i in numbers[1] if -len(parts[0]) <= i < len(parts[0])] if all(
            -len(parts[0]) <= i < len(parts[0]) for i in numbers[1]) else None
    return None


def _integer_arithmetic(op: str, a: list | None, b: list | None) -> list[int] | None:
    """Elements of an integer Add, Sub, Mul or Div (truncating, as ONNX's) of two traced shape tensors of
    known numbers, one of them a single element or both of one length; None otherwise."""
    if a is None or b is None or not all(isinstance(v, int) for v in (*a, *b)) or \
            not (len(a) == 1 or len(b) == 1 or len(a) == len(b)) or (op == "Div" and 0 in b):
        return None
    n = max(len(a), len(b))
    pairs = zip(a * n if len(a) == 1 else a, b * n if len(b) == 1 else b, strict=True)
    if op == "Div":
        return [abs(x) // abs(y) * (1 if (x < 0) == (y < 0) else -1) for x, y in pairs]
    return [x + y if op == "Add" else x - y if op == "Sub" else x * y for x, y in pairs]


def _elem_type(vi: onnx.ValueInfoProto | None) -> int:
    return vi.type.tensor_type.elem_type if vi is not None else TensorProto.UNDEFINED


def _has_shape(vi: onnx.ValueInfoProto | None) -> bool:
    return vi is not None and vi.type.tensor_type.HasField("shape")


def _same_type(vi: onnx.ValueInfoProto, name: str, float_out: bool = False) -> onnx.ValueInfoProto:
    copy = onnx.ValueInfoProto()
    copy.CopyFrom(vi)
    copy.name = name
    if float_out:
        copy.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
    return copy


def opset(model: onnx.ModelProto) -> int:
    """The model's default-domain opset version (0 when it imports none)."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def value_source(graph: onnx.GraphProto, name: str) -> str:
    """The value `name` holds, traced back through what quantization wraps values in without changing what they
    mean: float-to-float Casts and Identity (fp16's casts at the outputs), QuantizeLinear -> DequantizeLinear pairs
    (static int8's QDQ)."""
    producer = producers(graph.node)
    while (node := producer.get(name)) is not None:
        if node.op_type == "Identity" or node.op_type == "Cast" and any(
                a.name == "to" and a.i in FLOAT_TYPES for a in node.attribute):
            name = node.input[0]
        elif node.op_type == "DequantizeLinear" and getattr(producer.get(node.input[0]), "op_type", "") == \
                "QuantizeLinear":
            name = producer[node.input[0]].input[0]
        else:
            break
    return name


def probability_logits(graph: onnx.GraphProto, output: str, rank: int, version: int,
                       activation: str | None = None, axis: int = -1) -> str | None:
    """The logits behind `output` (of `rank` dims; opset `version`) when it is their Softmax over
    the class axis `axis` (the last) or their Sigmoid, i.e. class probabilities (seen through
    `value_source`'s wrappers: a quantized model's); `activation` ("Softmax" or "Sigmoid") asks for
    that one only. None for any other output."""
    source = value_source(graph, output)
    node = next((n for n in graph.node if source in n.output), None)
    kinds = ("Softmax", "Sigmoid") if activation is None else (activation,)
    if node is None or node.op_type not in kinds or node.domain not in ("", "ai.onnx"):
        return None
    if node.op_type == "Softmax":
        over = next((a.i for a in node.attribute if a.name == "axis"), -1 if version >= 13 else 1)
        if over % max(rank, 1) != axis % max(rank, 1) or (version < 13 and over % max(rank, 1) != rank - 1):
            return None  # before opset 13 Softmax flattened the axes from `over` on
    return node.input[0]


# ops only a quantized model holds: ONNX's (de)quantizers and integer ops, ORT's quantized kernels (and QLinear*)
QUANTIZATION_OPS = frozenset({
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "MatMulNBits",
    "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QAttention", "QGemm", "DynamicQuantizeLSTM",
    "GatherBlockQuantized", "MatMulBnb4", "MatMulFpQ4"})


def quantization_ops(model: onnx.ModelProto) -> list[str]:
    """The op types of `model` that only a quantized model holds, sorted (none for a float model)."""
    return sorted({n.op_type for n in model.graph.node
                   if n.op_type in QUANTIZATION_OPS or n.op_type.startswith("QLinear")})


def sigmoid_pair_logit(graph: onnx.GraphProto, output: str) -> str | None:
    """The logit z when `output` is [1 - Sigmoid(z), Sigmoid(z)] joined on its last axis (skl2onnx's
    binary MLPClassifier probabilities: Softmax of the logits [0, z]); None for any other output."""
    producer = producers(graph.node)
    join = producer.get(output)
    if join is None or join.op_type != "Concat" or len(join.input) != 2:
        return None
    rest, sigmoid = (producer.get(name) for name in join.input)
    if sigmoid is None or sigmoid.op_type != "Sigmoid" or rest is None or rest.op_type != "Sub" or \
            rest.input[1] != join.input[1]:
        return None
    one = next((t for t in graph.initializer if t.name == rest.input[0]), None)
    if one is None or numpy_helper.to_array(one).size != 1 or float(numpy_helper.to_array(one).reshape(-1)[0]) != 1:
        return None
    axis = next(a.i for a in join.attribute if a.name == "axis")
    return sigmoid.input[0] if axis in (-1, 1) else None


def sklearn_probabilities(model: onnx.ModelProto) -> str | None:
    """The probabilities output of a classifier laid out as skl2onnx converts scikit-learn's: first the
    predicted label ([N] integers or strings), then the probabilities, a [N, classes] float tensor or
    a sequence of {class: probability} maps (ZipMap), in a graph that uses ai.onnx.ml (as skl2onnx's do:
    ZipMap, ArrayFeatureExtractor, LinearClassifier); None for other layouts, such as a PyTorch model
    returning (logits.argmax(1), logits)."""
    outputs = model.graph.output
    # ai.onnx.ml nodes, not only the opset import: onnxruntime's quantization preprocessing imports it in any model
    if len(outputs) < 2 or not any(n.domain == "ai.onnx.ml" for n in model.graph.node):
        return None
    label, second = outputs[0].type, outputs[1].type
    if label.tensor_type.elem_type not in (TensorProto.INT64, TensorProto.STRING) or \
            len(label.tensor_type.shape.dim) != 1:
        return None
    if second.sequence_type.elem_type.HasField("map_type") or (
            second.tensor_type.elem_type == TensorProto.FLOAT and len(second.tensor_type.shape.dim) == 2):
        return outputs[1].name
    return None


def argmax_of(model: onnx.ModelProto, name: str) -> str | None:
    """The graph output whose ArgMax over its last axis output `name` is (through Cast and Identity; the output
    seen through `value_source`'s wrappers, as fp16 casts it), as a PyTorch classifier returning
    (logits.argmax(1), logits) exports; None otherwise."""
    producer = producers(model.graph.node)
    node = producer.get(name)
    while node is not None and node.op_type in ("Cast", "Identity"):
        node = producer.get(node.input[0])
    if node is None or node.op_type != "ArgMax":
        return None
    read = value_source(model.graph, node.input[0])
    output = next((o for o in model.graph.output if o.name == node.input[0] or
                   o.name != name and value_source(model.graph, o.name) == read), None)
    if output is None:
        return None
    rank = len(output.type.tensor_type.shape.dim)
    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
    return output.name if rank and axis % rank == rank - 1 else None


def label_then_scores(model: onnx.ModelProto) -> tuple[str, bool] | None:
    """For a classifier whose first output is its predicted label: the output with the class scores, and whether
    they are probabilities. A scikit-learn classifier as skl2onnx converts it: (its probabilities, True); one that
    returns (logits.argmax(1), logits), as PyTorch exports it: (its logits, False). None for other models."""
    probabilities = sklearn_probabilities(model)
    if probabilities is not None:
        return probabilities, True
    first = model.graph.output[0] if model.graph.output else None
    is_label = first is not None and len(first.type.tensor_type.shape.dim) == 1  # [N]: one class id a row
    logits = argmax_of(model, first.name) if is_label else None
    return None if logits is None else (logits, False)


def sklearn_classes(model: onnx.ModelProto) -> list[int] | list[str] | None:
    """The classes of a scikit-learn classifier converted by skl2onnx, in its probabilities' column
    order: the classlabels_* attribute of its ai.onnx.ml classifier (or ZipMap) node, or the constant
    its label output is picked from by an ArrayFeatureExtractor (MLPClassifier); None for a model
    without either."""
    for node in model.graph.node:
        for a in node.attribute if node.domain == "ai.onnx.ml" else ():
            if a.name == "classlabels_strings":
                return [t.decode() for t in a.strings]
            if a.name in ("classlabels_ints", "classlabels_int64s"):
                return list(a.ints)
    if not model.graph.output or len(model.graph.output[0].type.tensor_type.shape.dim) != 1:
        return None  # not a label output ([N] class values)
    producer = producers(model.graph.node)
    constants = {t.name: t for t in model.graph.initializer}
    name = model.graph.output[0].name
    while name in producer:
        node = producer[name]
        if node.op_type == "ArrayFeatureExtractor" and node.input[0] in constants:
            values = numpy_helper.to_array(constants[node.input[0]]).reshape(-1)
            if values.dtype == object:
                return [v.decode() if isinstance(v, bytes) else str(v) for v in values]
            return [int(v) for v in values] if values.dtype.kind in "iu" else None
        if node.op_type not in ("Cast", "Reshape", "Identity", "Squeeze", "Flatten"):
            return None
        name = node.input[0]
    return None


def without_initializer_inputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` without the graph inputs that name an initializer (a weight the caller could override),
    which old exporters list beside every initializer (IR < 4 required it; PyTorch's
    keep_initializers_as_inputs=True still does): training binds each weight itself (a weight that is
    also an input would be defined twice in its graph), and ORT's quantizers leave such weights
    alone. `model` itself when it has none."""
    weights = {t.name for t in model.graph.initializer}
    if not any(i.name in weights for i in model.graph.input):
        return model
    kept = onnx.ModelProto()
    kept.CopyFrom(model)
    del kept.graph.input[:]
    kept.graph.input.extend(i for i in model.graph.input if i.name not in weights)
    kept.ir_version = max(kept.ir_version, 4)  # below IR 4 every initializer had to be an input
    return kept


_INTEGER_TYPES = frozenset({TensorProto.INT8, TensorProto.INT16, TensorProto.INT32, TensorProto.INT64,
                            TensorProto.UINT8, TensorProto.UINT16, TensorProto.UINT32, TensorProto.UINT64})
_LOOKUPS = {("", "Gather"): "axis", ("com.microsoft", "GatherBlockQuantized"): "gather_axis"}


def lookup_rows(model: onnx.ModelProto) -> dict[str, int]:
    """The integer graph inputs whose values pick rows of a table of weights (an embedding: a Gather on axis 0 of
    an initializer, itself or cast, dequantized, scaled or block-quantized), each with the table's rows (the fewest,
    where it picks from several): 30522 for a BERT's `input_ids`, 2 for its `token_type_ids`. Onnxruntime reads a
    negative index from the table's end, and fails on one past it naming the node, not the input."""
    graph = model.graph
    tables = {t.name: tuple(t.dims) for t in graph.initializer}
    picks = {vi.name: vi.name for vi in graph.input
             if vi.name not in tables and vi.type.tensor_type.elem_type in _INTEGER_TYPES}
    found: dict[str, int] = {}
    for node in graph.node:
        if not node.input:
            continue
        if node.op_type in ("Cast", "Identity", "DequantizeLinear") and node.input[0] in tables:
            tables[node.output[0]] = tables[node.input[0]]
        elif node.op_type in ("Mul", "Add", "Sub", "Div") and all(name in tables for name in node.input):
            tables[node.output[0]] = np.broadcast_shapes(*(tables[name] for name in node.input))  # a scaled table
        if node.op_type in ("Cast", "Identity") and node.input[0] in picks:
            picks[node.output[0]] = picks[node.input[0]]
        axis_name = _LOOKUPS.get((node.domain if node.domain != "ai.onnx" else "", node.op_type))
        axis = next((a.i for a in node.attribute if a.name == axis_name), 0)
        table = tables.get(node.input[0], ())
        if axis_name and axis == 0 and table and len(node.input) > 1 and node.input[1] in picks:
            source = picks[node.input[1]]
            found[source] = min(found.get(source, table[0]), table[0])
    return found
