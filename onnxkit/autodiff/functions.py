"""Ops differentiated through the function body that ONNX defines for them: Attention (opset 23's
scaled dot-product attention, which PyTorch's dynamo exporter writes for
`F.scaled_dot_product_attention` and `nn.TransformerEncoderLayer` from opset 23 on), and the losses
PyTorch exports `F.cross_entropy` and `F.nll_loss` as (SoftmaxCrossEntropyLoss, NegativeLogLikelihoodLoss),
and MeanVarianceNormalization.

ONNX's schema builds the body in standard ops for the node's attributes and input types
(is_causal, scale, softcap, grouped-query heads, 3-D inputs, a boolean or additive mask, past key
and value, ...). On the gradient path the node is replaced in the training graph by that body,
whose ops the ordinary rules differentiate; the inference graph keeps the node and ONNX Runtime's
kernel. A body's references to the node's attributes (a loss's `reduction`, `ignore_index`) take the
node's values, else the function's defaults; a body that uses another such op (SoftmaxCrossEntropyLoss's
NegativeLogLikelihoodLoss) has it replaced in turn.
"""

from __future__ import annotations

import onnx
from onnx import defs

FUNCTIONS = frozenset({"Attention", "SoftmaxCrossEntropyLoss", "NegativeLogLikelihoodLoss",
                       "MeanVarianceNormalization"})


def body(node: onnx.NodeProto, types: dict[str, onnx.ValueInfoProto], version: int) -> onnx.FunctionProto | str:
    """`node`'s function body for its attributes and input types at opset `version`, or why there is none."""
    if any(name and name not in types for name in node.input):
        return "with inputs of unknown type"
    inputs = [types[name].type.SerializeToString() if name else onnx.TypeProto().SerializeToString()
              for name in node.input]
    try:
        schema = defs.get_schema(node.op_type, version, "")
        function = onnx.FunctionProto()
        if schema.has_context_dependent_function:
            function.ParseFromString(schema.get_context_dependent_function(node.SerializeToString(), inputs))
        else:  # one body for every input type: its float constants must be of the input's
            function.CopyFrom(schema.function_body)
            x_type = types[node.input[0]].type.tensor_type.elem_type
            if any(a.t.data_type not in (x_type, onnx.TensorProto.INT64) for n in function.node
                   if n.op_type == "Constant" for a in n.attribute if a.name == "value"):
                return "whose ONNX function body is written for another float type than its input (float32)"
    except Exception as e:  # noqa: BLE001 - onnx's builder refuses in its own words
        return f"whose ONNX function body could not be built ({str(e).strip().splitlines()[0]})"
    if not function.node or any(a.g.node or a.graphs for n in function.node for a in n.attribute):
        return "whose ONNX function body is empty or has subgraphs"
    defaults = {a.name for a in function.attribute_proto}
    function.attribute_proto.extend(a.default_value for name, a in schema.attributes.items()
                                    if name not in defaults and a.default_value.name)  # the schema's defaults
    return function


def unsupported(node: onnx.NodeProto, types: dict[str, onnx.ValueInfoProto], version: int) -> str | None:
    """Why `node` cannot be replaced by its function body, or None."""
    found = body(node, types, version)
    return found if isinstance(found, str) else None


def inline(model: onnx.ModelProto, position: int, types: dict[str, onnx.ValueInfoProto], version: int) -> None:
    """Replace the node at `position` of `model`'s graph by its function body, in place."""
    node = model.graph.node[position]
    function = body(node, types, version)
    if isinstance(function, str):
        raise ValueError(f"{node.op_type} {function}")
    del model.graph.node[position]
    for offset, new in enumerate(_renamed(function, node, f"{node.name or node.output[0]}/body/")):
        model.graph.node.insert(position + offset, new)


def _renamed(function: onnx.FunctionProto, node: onnx.NodeProto, prefix: str) -> list[onnx.NodeProto]:
    """The body's nodes with its formal inputs and outputs named as `node`'s, the rest under `prefix`."""
    names = dict(zip(function.input, [*node.input, *[""] * len(function.input)], strict=False))  # absent: ""
    names.update((formal, actual) for formal, actual in zip(function.output, node.output, strict=False) if actual)
    nodes = []
    given = {a.name: a for a in (*function.attribute_proto, *node.attribute)}  # the node's over the defaults
    for index, inner in enumerate(function.node):
        new = onnx.NodeProto()
        new.CopyFrom(inner)
        new.name = f"{prefix}{inner.name or index}"
        del new.attribute[:]
        for attribute in inner.attribute:  # a reference to the node's attribute takes its value, or goes
            if not attribute.ref_attr_name:
                new.attribute.append(attribute)
            elif attribute.ref_attr_name in given:
                value = onnx.AttributeProto()
                value.CopyFrom(given[attribute.ref_attr_name])
                value.name = attribute.name
                new.attribute.append(value)
        new.input[:] = [names.get(n, f"{prefix}{n}") if n else "" for n in inner.input]
        new.output[:] = [names.get(n, f"{prefix}{n}") if n else "" for n in inner.output]
        nodes.append(new)
    return nodes
