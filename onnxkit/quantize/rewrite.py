"""Graph rewrites that put weights where ONNX Runtime's quantizers look for them.

`quantize_dynamic` and 4-bit `MatMulNBits` act only on `MatMul` whose weight is
an initializer: a `Gemm` (PyTorch's Linear export), or layout ops between the weight and
the node (a `Transpose`, a dynamo export's LSTM gates reordered), hide it from them.
"""

from __future__ import annotations

import heapq
from collections import defaultdict

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxkit.graph_walks import every_node, node_reads

_FLOATS = frozenset({TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16})


def name_nodes(model: onnx.ModelProto) -> None:
    """Give every unnamed node a unique name (`Op_index`), so it can be excluded by name."""
    taken = {n.name for n in model.graph.node if n.name}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)


def strip_initializer_value_info(model: onnx.ModelProto) -> None:
    """Drop value_info entries for initializers; stale ones derail the quantizers."""
    inits = {t.name for t in model.graph.initializer}
    keep = [v for v in model.graph.value_info if v.name not in inits]
    del model.graph.value_info[:]
    model.graph.value_info.extend(keep)


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _unique(name: str, taken: set[str]) -> str:
    out, k = name, 1
    while out in taken:
        out, k = f"{name}_{k}", k + 1
    taken.add(out)
    return out


def _uses(model: onnx.ModelProto, name: str) -> int:
    return sum(name == i for n in model.graph.node for i in n.input) + sum(
        name == o.name for o in model.graph.output
    )


def constants_as_initializers(model: onnx.ModelProto) -> int:
    """Turn each Constant node holding a float tensor of rank 1 or more (a weight, as some exporters keep it)
    into an initializer of its output's name; return how many. The quantizers quantize initializers only: a
    MatMul reading a Constant's weight was 'nothing to quantize' (static's optimizer folded it, and did)."""
    graph = model.graph
    outputs = {o.name for o in graph.output}
    found = {}
    for node in graph.node:
        value = next((a.t for a in node.attribute if a.name == "value"), None) if node.op_type == "Constant" else None
        if value is not None and value.dims and value.data_type in _FLOATS and node.output[0] not in outputs:
            found[node.output[0]] = value
    if not found:
        return 0
    kept = [node for node in graph.node if not (node.op_type == "Constant" and node.output[0] in found)]
    del graph.node[:]
    graph.node.extend(kept)
    for name, value in found.items():
        tensor = graph.initializer.add()
        tensor.CopyFrom(value)
        tensor.name = name
        if model.ir_version < 4:  # where an initializer must also be a graph input
            graph.input.append(helper.make_tensor_value_info(name, value.data_type, list(value.dims)))
    return len(found)


def fold_constant_identities(model: onnx.ModelProto) -> int:
    """Make the readers of `Identity(initializer)` read the initializer; return how many Identities went. A
    TorchScript export reads a weight that two layers share (nn.TransformerEncoder's deep copies, equal at
    export) through Identity, where the dynamic and int4 quantizers, which look for a MatMul's initializer, did
    not see it: those MatMuls stayed float, and the model grew by the quantized copies of the rest."""
    graph = model.graph
    inits = {t.name for t in graph.initializer} - {i.name for i in graph.input}
    outputs = {o.name for o in graph.output}
    renamed = {node.output[0]: node.input[0] for node in graph.node
               if node.op_type == "Identity" and node.input[0] in inits and node.output[0] not in outputs}
    if not renamed:
        return 0
    kept = [node for node in graph.node if not (node.op_type == "Identity" and node.output[0] in renamed)]
    for node in kept:
        node.input[:] = [renamed.get(name, name) for name in node.input]
    del graph.node[:]
    graph.node.extend(kept)
    return len(renamed)


# Ops that only move a weight's values around: folded where they compute from initializers alone.
LAYOUT_OPS = frozenset({"Transpose", "Slice", "Concat", "Split", "Squeeze", "Unsqueeze", "Reshape", "Flatten"})


def fold_weight_layouts(model: onnx.ModelProto) -> int:
    """Replace the values that layout ops (`LAYOUT_OPS`) compute from initializers alone by initializers; return how
    many nodes went. The quantizers look for a weight initializer at the node that uses it: `quantize_dynamic` skips
    `Transpose(weight) -> MatMul`, and a dynamo export's LSTM reads its W and R as PyTorch's weights sliced into
    gates, concatenated in ONNX's gate order and unsqueezed, so its LSTM stayed float (0.53x the size, 0.27x for
    the TorchScript export of the same model). Initializers only the folded nodes read are removed."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    known = set(inits) - {i.name for i in graph.input}
    outputs = {o.name for o in graph.output}
    folded = []
    for node in graph.node:
        if (node.op_type in LAYOUT_OPS and node.domain in ("", "ai.onnx") and node.input
                and all(i in known for i in node.input if i) and not outputs & set(node.output)):
            folded.append(node)
            known.update(o for o in node.output if o)
    if not folded:
        return 0
    from onnx.reference import ReferenceEvaluator

    made = [o for node in folded for o in node.output if o]
    reads = {i for node in folded for i in node.input if i in inits}
    part = helper.make_model(
        helper.make_graph(folded, "weights", [], [onnx.ValueInfoProto(name=o) for o in made],
                          [inits[name] for name in reads]),
        opset_imports=model.opset_import, ir_version=model.ir_version)
    try:
        values = ReferenceEvaluator(part).run(None, {})
    except Exception:  # noqa: BLE001 - values the evaluator cannot compute: the quantizers see the graph as it is
        return 0
    kept = [node for node in graph.node if all(node is not f for f in folded)]
    del graph.node[:]
    graph.node.extend(kept)
    still_read = {i for node in every_node(graph) for i in node.input} | outputs
    graph.initializer.extend(numpy_helper.from_array(np.asarray(v), name)
                             for name, v in zip(made, values, strict=True) if name in still_read)
    for name in reads - still_read:
        graph.initializer.remove(inits[name])
    return len(folded)


def gemm_to_matmul(model: onnx.ModelProto) -> int:
    """Rewrite `Gemm(A, B_const, C)` as `MatMul(A, B') + Add(C')`; return how many.

    Only plain Gemms are rewritten (transA=0, constant B, constant or absent C). Gemms that share a weight (an
    unrolled LSTM's cell, run once per time step) share its rewritten copy too: one copy per Gemm had made the
    model grow by the weight times its uses.
    """
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    taken = set(inits) | {o for n in graph.node for o in n.output}
    made: dict[tuple, str] = {}  # (weight or bias, transB, alpha or beta) -> its rewritten initializer
    rewritten = 0
    for node in list(graph.node):
        if node.op_type != "Gemm" or node.input[1] not in inits:
            continue
        attrs = _attrs(node)
        has_bias = len(node.input) > 2 and bool(node.input[2])
        if attrs.get("transA", 0) or (has_bias and node.input[2] not in inits):
            continue
        w_key = ("B", node.input[1], bool(attrs.get("transB", 0)), float(attrs.get("alpha", 1.0)))
        if w_key not in made:
            weight = numpy_helper.to_array(inits[node.input[1]])
            if attrs.get("transB", 0):
                weight = weight.T
            weight = (weight * attrs.get("alpha", 1.0)).astype(weight.dtype)
            made[w_key] = _unique(f"{node.input[1]}_matmul", taken)
            graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(weight), made[w_key]))
        w_name = made[w_key]
        at = list(graph.node).index(node)
        if has_bias:
            b_key = ("C", node.input[2], float(attrs.get("beta", 1.0)))
            if b_key not in made:
                bias = numpy_helper.to_array(inits[node.input[2]])
                bias = (bias * attrs.get("beta", 1.0)).astype(bias.dtype)
                made[b_key] = _unique(f"{node.input[2]}_bias", taken)
                graph.initializer.append(numpy_helper.from_array(bias, made[b_key]))
            b_name = made[b_key]
            product = _unique(f"{node.output[0]}_matmul", taken)
            new = [
                helper.make_node("MatMul", [node.input[0], w_name], [product], name=node.name),
                helper.make_node("Add", [product, b_name], [node.output[0]], name=f"{node.name}/bias"),
            ]
        else:
            new = [helper.make_node("MatMul", [node.input[0], w_name], [node.output[0]], name=node.name)]
        graph.node.remove(node)
        for k, n in enumerate(new):
            graph.node.insert(at + k, n)
        for old in node.input[1:]:
            if old and _uses(model, old) == 0 and old in inits:
                graph.initializer.remove(inits.pop(old))
        rewritten += 1
    return rewritten


def flatten_gemm_biases(model: onnx.ModelProto) -> int:
    """Give each `Gemm` with a constant bias C of one row (`[1, N]`, `[1, 1]`, `[1]`, a scalar) its `[N]` equivalent;
    return how many. The same values reach every row of the output either way, but ORT's per-channel QDQ quantizer
    reads C as one value per output channel and fails on `[1, N]` ("truth value of an array ... is ambiguous"):
    scikit-learn converters write `[1, N]` intercepts, which ORT's optimizer fuses with their MatMul into a Gemm."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    taken = set(inits) | {o for n in graph.node for o in n.output} | {i.name for i in graph.input}
    flattened = 0
    for node in graph.node:
        if node.op_type != "Gemm" or len(node.input) < 3 or node.input[1] not in inits or node.input[2] not in inits:
            continue
        weight, bias = inits[node.input[1]], inits[node.input[2]]
        n = weight.dims[0] if _attrs(node).get("transB", 0) else weight.dims[-1]
        if len(bias.dims) == 1 and bias.dims[0] == n or len(bias.dims) > 2 or any(d != 1 for d in bias.dims[:-1]):
            continue  # already [N], or rows that depend on the batch
        values = numpy_helper.to_array(bias)
        if values.size not in (1, n):
            continue
        name = _unique(f"{bias.name}_flat", taken)
        flat = np.ascontiguousarray(np.broadcast_to(values.reshape(-1), (n,)))
        graph.initializer.append(numpy_helper.from_array(flat, name))
        node.input[2] = name
        if _uses(model, bias.name) == 0:
            graph.initializer.remove(inits.pop(bias.name))
        flattened += 1
    return flattened


def drop_unused_opsets(model: onnx.ModelProto) -> list[str]:
    """Remove the opset imports of domains that no node (nor a model-local function) uses; return them. ONNX
    Runtime's optimizer, which static preprocessing runs, writes an import of every domain it knows (ai.onnx.ml,
    com.microsoft.nchwc, org.pytorch.aten, ...): a static-quantized torchvision CNN listed eight unused ones."""
    used = {node.domain or "" for node in every_node(model.graph)}
    used |= {f.domain for f in model.functions} | {n.domain or "" for f in model.functions for n in f.node}
    used |= {"", "ai.onnx"} & {o.domain for o in model.opset_import}  # the default domain stays, used or not
    dropped = [o.domain for o in model.opset_import if o.domain not in used]
    kept = [o for o in model.opset_import if o.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    return dropped


def sort_nodes(graph: onnx.GraphProto) -> bool:
    """Order `graph`'s nodes so that each follows the nodes making the values it reads (its subgraphs' too), as
    onnx's checker requires, keeping the given order wherever it holds; return whether any node moved. ONNX
    Runtime's float16 converter appends the Casts of the graph inputs after their readers: every fp16 model failed
    `onnx.checker` ("Nodes in a graph must be topologically sorted"), though onnxruntime, which sorts, ran it."""
    nodes = list(graph.node)
    maker = {name: i for i, node in enumerate(nodes) for name in node.output if name}
    waits = [{maker[name] for name in node_reads(node) if name in maker} - {i} for i, node in enumerate(nodes)]
    readers = defaultdict(list)
    for i, deps in enumerate(waits):
        for dep in deps:
            readers[dep].append(i)
    ready = [i for i, deps in enumerate(waits) if not deps]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for reader in readers[i]:
            waits[reader].discard(i)
            if not waits[reader]:
                heapq.heappush(ready, reader)
    if len(order) < len(nodes) or order == sorted(order):  # a cycle (no valid graph): left as it is
        return False
    del graph.node[:]
    graph.node.extend(nodes[i] for i in order)
    return True
