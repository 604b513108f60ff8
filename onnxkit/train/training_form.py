"""From an inference-form ONNX model to what training needs: its parameters, the ones to
train, and the training form of the graph.

Parameters are the float32 initializers of rank >= 1 that feed a differentiable
input of some node, and the scalars a PyTorch module holds as its own (`_scalar_weights`);
float64 and float16 ones stay as they are (training runs in float32). BatchNormalization's
running mean and variance are *buffers* (updated by the forward pass in training); the initializers the
model's metadata lists as Buffers (`onnxkit.buffers`, written by the DSL), those
PyTorch's dynamo exporter marks as buffers or folded constants (`exported_constants`) and
everything else (shape tensors, scalar constants, dropout ratios) are
constants, never trained. Selection: all parameters and buffers by default, narrowed by
`train_only` globs and then `freeze` globs (fnmatch on the initializer name).

The training form differs from the inference form in these ways:

- Dropout gets `training_mode=True` and its mask output (or becomes Identity
  when dropout is off); its `seed` is fixed from the run's seed.
- BatchNormalization whose statistics are trained runs in training mode with
  its running-statistics outputs (`buffer_updates` says which value updates which
  buffer); with frozen statistics it becomes `x * scale + shift` computed from the
  four tensors, so gradients reach gamma and beta and the statistics never change.
- Only the chosen output remains a graph output, with its full inferred type.

Rewrites that only one backend needs live with that backend.
"""

from __future__ import annotations

import ast
import fnmatch
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper

from onnxkit.data.split import Split
from onnxkit.errors import OnnxkitError, first_few, suggest
from onnxkit.graph_walks import (
    ancestors,
    needed_nodes,
    node_reads,
    opset,
    quantization_ops,
    used_initializers,
    value_types,
    without_initializer_inputs,
)
from onnxkit.metadata import metadata
from onnxkit.metadata_keys import BUFFERS_KEY, DROPOUT_KEY, PADDING_ROW_KEY

PREFIX = "onnxkit.train"

# (op type, input index) pairs whose float inputs are settings, not weights
_SETTINGS = {
    "Dropout": {1, 2},
    "Clip": {1, 2},
    "Pow": {1},
    "Pad": {1, 2, 3},
    "Resize": {1, 2, 3},
    "Where": {0},
    "Range": {0, 1, 2},
}
_BN_STATS = (3, 4)
# what PyTorch's dynamo exporter writes in the value_info of each initializer it makes
_TORCH_KIND = "pkg.torch.export.graph_signature.InputSpec.kind"  # PARAMETER, BUFFER, CONSTANT_TENSOR...
_FOLDED = "pkg.onnxscript.optimizer.folded_from"  # a constant computed at export (a causal mask, an arange)
_SIGNATURE = "pkg.torch.export.ExportedProgram.graph_signature"  # graph metadata: 'p_fc_weight: PARAMETER target=...'
_SIGNATURE_SPEC = re.compile(r"^(\S+): (\w+) target='([^']*)'", re.MULTILINE)  # placeholder, kind, target


@dataclass(frozen=True)
class ModelParameters:
    """The model's trainable tensors by kind, in initializer order."""

    parameters: list[str]
    buffers: list[str]
    sizes: dict[str, int]
    other_floats: list[str] = field(default_factory=list)  # float64/float16 ones, which stay as they are

    @property
    def names(self) -> list[str]:
        return self.parameters + self.buffers


def find_parameters(model: onnx.ModelProto) -> ModelParameters:
    """Classify the initializers of `model` into parameters, buffers and constants."""
    uses: dict[str, list[tuple[str, int]]] = {}
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            uses.setdefault(name, []).append((node.op_type, i))
        for name in node_reads(node).difference(node.input):  # read inside a Loop or If: never a setting
            uses.setdefault(name, []).append((node.op_type, -1))
    declared = set(json.loads(metadata(model).get(BUFFERS_KEY, "[]"))) | exported_constants(model)
    scalars = _scalar_weights(model)
    parameters, buffers, sizes, other_floats = [], [], {}, []
    for t in model.graph.initializer:
        used = uses.get(t.name, [])
        if t.data_type not in _FLOATS or not used:
            continue
        if all(op == "BatchNormalization" and i in _BN_STATS for op, i in used):
            kind = buffers
        elif t.name in declared or (len(t.dims) == 0 and t.name not in scalars) or all(
                i in _SETTINGS.get(op, ()) for op, i in used):
            continue
        else:
            kind = parameters
        if t.data_type != TensorProto.FLOAT:  # training runs in float32
            other_floats.append(t.name)
            continue
        kind.append(t.name)
        sizes[t.name] = int(np.prod(t.dims, dtype=np.int64))
    return ModelParameters(parameters, buffers, sizes, other_floats)


_FLOATS = (TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16)
_STATE_NAME = re.compile(r"[A-Za-z_]\w*(\.\w+)*")  # a state_dict key (gate, blocks.0.scale), not onnx::Mul_7


def _scalar_weights(model: onnx.ModelProto) -> set[str]:
    """The rank-0 initializers that are a PyTorch module's own: those a dynamo export's signature lists as
    parameters, or, in a TorchScript export (which writes constants as Constant nodes or onnx:: names),
    those named as state_dict keys (a learnable temperature or gate, nn.Parameter(torch.tensor(0.1)))."""
    signature = _export_signature(model)
    if signature:
        return {target for _, kind, target in signature if kind == "PARAMETER"}
    if model.producer_name != "pytorch":
        return set()
    return {t.name for t in model.graph.initializer if not t.dims and _STATE_NAME.fullmatch(t.name)}


def exported_constants(model: onnx.ModelProto) -> set[str]:
    """The initializers PyTorch's dynamo exporter marks as no parameter: buffers (a BatchNorm's
    statistics stay buffers, told apart by their use) and tensors it computed at export, such as a
    causal mask. PyTorch's optimizers train neither; a TorchScript export carries no such marks.
    A tensor folded from a parameter is one, though: the exporter folds Transpose(weight) of each Linear
    on 3-D inputs into a new initializer, which the graph's signature shows was folded from a parameter.
    A value the exporter typed with no mark at all, neither a parameter nor folded from one, is a constant
    its translation made (the float count an nn.EmbeddingBag's Loop divides by)."""
    parameters = {target for _, kind, target in _export_signature(model) if kind == "PARAMETER"}
    found = set()
    for info in model.graph.value_info:
        marks = _marks(info)
        kind, folded = marks.get(_TORCH_KIND), _FOLDED in marks
        from_parameter = folded and parameters & _folded_sources(marks[_FOLDED])
        if kind not in (None, "PARAMETER") or (folded and not from_parameter) or (
                parameters and kind is None and not folded and info.name not in parameters):
            found.add(info.name)
    return found


def _marks(proto: onnx.GraphProto | onnx.NodeProto | onnx.ValueInfoProto) -> dict[str, str]:
    """The metadata an exporter wrote on a graph, node or value, by key."""
    return {p.key: p.value for p in proto.metadata_props}


def _export_signature(model: onnx.ModelProto) -> list[tuple[str, str, str]]:
    """(placeholder, kind, target) of each parameter, buffer or constant the dynamo exporter's graph
    signature lists (none for other exports)."""
    return _SIGNATURE_SPEC.findall(_marks(model.graph).get(_SIGNATURE, ""))


def _folded_sources(mark: str) -> set[str]:
    """The names a folded_from mark lists (written as a Python list of strings)."""
    try:
        names = ast.literal_eval(mark)
    except (ValueError, SyntaxError):
        return set()
    return {n for n in names if isinstance(n, str)} if isinstance(names, list | tuple | set) else set()


def trainable_form(model: onnx.ModelProto, named: str = "the model") -> tuple[onnx.ModelProto, list[str]]:
    """`model` as training takes it (`fit` and `open_training` alike): without the initializers old
    exporters list as inputs, with nodes exported in training mode set to inference mode and the
    weights PyTorch's exporters tied (Identity copies, merged equal values, dropped zero biases)
    untied; and a line for each of these it did. Weights training cannot update are an error that
    begins with `named`."""
    model = without_initializer_inputs(model)
    why = untrainable_weights(model)
    if why:
        raise OnnxkitError(f"{named} {why}")
    notes = []
    model, untied = untie_exporter_copies(model)
    model, training_mode = in_inference_mode(model)
    if training_mode:
        counted = ", ".join(f"{training_mode.count(op)} {op}" for op in dict.fromkeys(training_mode))
        notes.append(f"the model's {counted} nodes were exported in training mode (PyTorch's "
                     "training=TrainingMode.TRAINING): they train as such, and the trained model runs them in "
                     "inference mode, as the module after eval() (running statistics, no dropout)")
    if untied:
        notes.append(f"{len(untied)} weights were Identity copies of equal-valued ones ({first_few(untied)}), as "
                     "PyTorch's exporter writes them: each trains as a tensor of its own")
    model = with_padding_rows(model)
    model, retied = retie_folded_transposes(model)
    if retied:
        notes.append(f"{len(retied)} weights PyTorch's exporter stored as transposed copies of weights the model "
                     f"also reads itself ({first_few(retied)}) are transposed from them again: each tied weight "
                     "trains as one tensor, as in PyTorch")
    model, merged = untie_deduplicated(model)
    if merged:
        notes.append(f"{len(merged)} parameters were merged by PyTorch's exporter into equal-valued ones or "
                     f"dropped as zero biases ({first_few(merged)}: "
                     "deep-copied layers, LayerNorm ones, zero biases): each trains as a tensor of its own")
    return model, notes


def untie_exporter_copies(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """`model` with each float initializer that an Identity node copies (`B = Identity(A)`) made
    an initializer of its own, `B`; and the names so made (none: `model` itself is returned).

    PyTorch's TorchScript exporter writes distinct parameters whose values happen to be equal as
    one initializer and Identity copies: the zero biases of a model, the deep-copied layers of
    `nn.TransformerEncoder`, a fresh BatchNorm's running mean and variance (copies of its beta and
    gamma). A weight the model really shares is one initializer read by several nodes, with no
    Identity (which this keeps). Left tied, the copies would train as one tensor, and BatchNorm
    would normalise with its trained affine weights as statistics."""
    if not _exporter_copy(model.graph):
        return model, []
    untied = onnx.ModelProto()
    untied.CopyFrom(model)
    made = []
    while node := _exporter_copy(untied.graph):  # a copy of a copy is one once its source is made
        tensor = untied.graph.initializer.add()
        tensor.CopyFrom(next(t for t in untied.graph.initializer if t.name == node.input[0]))
        tensor.name = node.output[0]
        untied.graph.node.remove(node)
        made.append(tensor.name)
    return untied, made


_SCOPES = "pkg.torch.onnx.name_scopes"  # a node's module paths, outermost first, then its op's name
_FX_NODE = "pkg.torch.onnx.fx_node"  # the PyTorch op a node came from, its arguments by placeholder (%p_fc_weight)
_PLACEHOLDER = re.compile(r"%(\w+)")
TRANSPOSED = ".T"  # suffix of the copy made for a layer that read another's folded (transposed) weight
_EMBEDDING_ARGS = re.compile(r"target=torch\.ops\.aten\.embedding\.default\]\(args = \(([^)]*)\)")


def with_padding_rows(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` with each lookup a PyTorch dynamo export made of `nn.Embedding(padding_idx=k)` marked
    (`PADDING_ROW_KEY`), so that, as in PyTorch, it sends row k no gradient. The exporter records
    aten.embedding's arguments on the Gather node (weight, ids, padding_idx; -1 or none: no padding
    row); a TorchScript export keeps no record, and its padding row trains."""
    weights = {t.name for t in model.graph.initializer}
    marks = {}
    for k, node in enumerate(model.graph.node):
        found = _EMBEDDING_ARGS.search(_marks(node).get(_FX_NODE, "")) if node.op_type == "Gather" else None
        args = found.group(1).split(", ") if found else []
        if len(args) > 2 and args[2].isdigit() and node.input[0] in weights and PADDING_ROW_KEY not in _marks(node):
            marks[k] = args[2]
    if not marks:
        return model
    marked = onnx.ModelProto()
    marked.CopyFrom(model)
    for k, row in marks.items():
        marked.graph.node[k].metadata_props.add(key=PADDING_ROW_KEY, value=row)
    return marked


RANDOM_OPS = frozenset({"RandomUniform", "RandomUniformLike", "RandomNormal", "RandomNormalLike", "Bernoulli",
                        "Multinomial"})


def random_nodes(model: onnx.ModelProto, output: str) -> list[str]:
    """'count op' for each random op `output` depends on (Dropout aside, which training controls)."""
    needed = ancestors(model, output)
    ops = [n.op_type for n in model.graph.node if n.op_type in RANDOM_OPS and needed & set(n.output)]
    return [f"{ops.count(op)} {op}" for op in dict.fromkeys(ops)]


def unmarked_scalars(model: onnx.ModelProto, trainable: Sequence[str]) -> list[str]:
    """The trainable scalars of an export that does not say which of its tensors are parameters (TorchScript's):
    a module's own nn.Parameter and a register_buffer'd scalar look alike there, and both train."""
    if _export_signature(model):
        return []
    scalars = _scalar_weights(model)
    return [name for name in trainable if name in scalars]


def padding_rows(model: onnx.ModelProto, trainable: Sequence[str]) -> list[str]:
    """'table row k' for each trainable table a Gather node marked with a padding row reads."""
    return [f"{node.input[0]} row {row}" for node in model.graph.node if node.op_type == "Gather"
            and node.input[0] in trainable and (row := _marks(node).get(PADDING_ROW_KEY)) is not None]


def retie_folded_transposes(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """`model` with each initializer PyTorch's exporters folded from the transpose of a weight the graph
    also reads directly (a Linear tied to an Embedding: the lookup reads the table, the Linear a
    transposed copy) computed by a Transpose of that weight again; and 'copy of weight' for each (none:
    `model` itself is returned). Left as two initializers, the tied weight trained as two tensors."""
    values = {t.name: t for t in model.graph.initializer}
    read = {name for node in model.graph.node for name in node.input}
    found: dict[str, str] = {}  # copy -> its source (the first, should two weights be equal)
    for copy, source in _folded_copies(model, values):
        if copy not in found and source in read and _is_transpose(values[copy], values[source]):
            found[copy] = source
    pairs = list(found.items())
    if not pairs:
        return model, []
    retied = onnx.ModelProto()
    retied.CopyFrom(model)
    copies = {copy for copy, _ in pairs}
    kept = [t for t in retied.graph.initializer if t.name not in copies]
    del retied.graph.initializer[:]
    retied.graph.initializer.extend(kept)
    for k, (copy, source) in enumerate(pairs):
        retied.graph.node.insert(k, helper.make_node("Transpose", [source], [copy], name=f"{PREFIX}.retied/{copy}"))
    return retied, [f"{copy} of {source}" for copy, source in pairs]


def _folded_copies(model: onnx.ModelProto, values: dict[str, onnx.TensorProto]) -> list[tuple[str, str]]:
    """(initializer, the one weight it may have been folded from) pairs: as a dynamo export's folded_from
    marks say; in a TorchScript export, each folded constant (onnx::MatMul_11) of 2-D shape paired with each
    module weight of the transposed shape."""
    marked = [(info.name, next(iter(sources))) for info in model.graph.value_info
              if len(sources := _folded_sources(_marks(info).get(_FOLDED, ""))) == 1]
    if marked or model.producer_name != "pytorch" or _export_signature(model):
        return [(copy, source) for copy, source in marked if copy in values and source in values]
    flat = [t for t in values.values() if len(t.dims) == 2]
    return [(copy.name, source.name) for copy in flat if copy.name.startswith("onnx::") for source in flat
            if not source.name.startswith("onnx::") and list(copy.dims) == list(reversed(source.dims))]


def _is_transpose(copy: onnx.TensorProto, source: onnx.TensorProto) -> bool:
    """Whether 2-D `copy` holds `source` transposed, and `source` is no matrix its transpose equals (a
    constant or symmetric one: equal by chance, not by folding)."""
    if len(source.dims) != 2 or list(copy.dims) != list(reversed(source.dims)) or copy.data_type != source.data_type:
        return False
    try:  # views of the bytes where they are in the model (a TorchScript export pairs every folded copy with
        # every weight of the transposed shape: no copies of the weights for each pair)
        a, b = (np.frombuffer(t.raw_data, helper.tensor_dtype_to_np_dtype(t.data_type)).reshape(t.dims)
                if t.raw_data else onnx.numpy_helper.to_array(t) for t in (copy, source))
    except (ValueError, TypeError, OSError):  # weights stored outside the file and not loaded
        return False
    if not a.size or not np.array_equal(a[0], b[:, 0]):  # most pairs differ at once
        return False
    return bool(np.array_equal(a, b.T)) and b.min() != b.max() and not (a.shape == b.shape and np.array_equal(a, b))


def untie_deduplicated(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """`model` with each parameter or buffer that PyTorch's dynamo exporter merged into an equal-valued
    one made an initializer of its own; and the names so made (none: `model` itself is returned).

    The exporter's optimizer keeps one initializer of tensors with equal values: the deep-copied layers
    of `nn.TransformerEncoder`, every LayerNorm's ones and every zero bias of a fresh model. Its
    signature still lists each parameter, and each node says which PyTorch op it came from, with the
    parameters that op read (else which module it runs in: name scopes): a node reading a parameter its
    op did not, where the op read one missing from the graph, reads that one (a copy of the same value).
    Weights the module shares are one parameter in the signature, and stay shared. A weight the exporter folded
    (a Linear's transpose) is merged the same way: a layer reading another's gets a copy, `<its weight>.T`
    (a fresh 2-layer TransformerEncoder trained its second layer's in_proj, linear1 and linear2 tied to the first's).
    """
    placeholders = {placeholder: target for placeholder, kind, target in _export_signature(model)
                    if kind in ("PARAMETER", "BUFFER")}
    targets = set(placeholders.values())
    present = {t.name for t in model.graph.initializer}
    orphans = targets - present
    if not orphans:
        return model, []
    folded = {info.name: _folded_sources(_marks(info)[_FOLDED]) for info in model.graph.value_info
              if _FOLDED in _marks(info) and info.name in present}  # copies the exporter folded (Linear's W.T)
    plan: list[tuple[int, int, str]] = []
    for k, node in enumerate(model.graph.node):
        marks = _marks(node)
        try:
            scopes = ast.literal_eval(marks.get(_SCOPES, "[]"))  # a Python list of strings
        except (ValueError, SyntaxError):
            scopes = []
        if not isinstance(scopes, list) or not all(isinstance(x, str) for x in scopes):
            scopes = []
        # the parameters the PyTorch op read, in order: a node reading another's equal tensor reads its own
        read = [placeholders[p] for p in _PLACEHOLDER.findall(marks.get(_FX_NODE, "")) if p in placeholders]
        for i, name in enumerate(node.input):
            if name not in targets or name not in present or name in read:
                continue
            taken = {own for kk, _, own in plan if kk == k}
            own = next((t for t in read if t in orphans and t not in taken
                        and t.rsplit(".", 1)[-1] == name.rsplit(".", 1)[-1]), None) if read else \
                _own_parameter(name, scopes, orphans)
            if own:
                plan.append((k, i, own))
        for i, name in enumerate(node.input):  # a folded copy of another layer's weight: a copy of its own
            sources = folded.get(name, set())
            if read and sources and not sources & set(read):
                taken = {own.removesuffix(TRANSPOSED) for kk, _, own in plan if kk == k}
                own = next((t for t in read if t in orphans and t not in taken and any(
                    t.rsplit(".", 1)[-1] == source.rsplit(".", 1)[-1] for source in sources)), None)
                if own:
                    plan.append((k, i, own + TRANSPOSED))
        taken = {own.removesuffix(TRANSPOSED) for kk, _, own in plan if kk == k}  # a removed bias: the op read
        # a parameter no input holds
        bias = next((t for t in read if t in orphans and t not in taken), None)
        if node.op_type in ("Gemm", "Conv") and (len(node.input) < 3 or not node.input[2]) and bias \
                and node.input[1] in present and not any(own == bias for kk, _, own in plan if kk == k):
            plan.append((k, 2, bias))  # a zero bias the optimizer removed (RemoveOptionalBiasFromConv, ...)
    if not plan:
        return model, []
    untied = onnx.ModelProto()
    untied.CopyFrom(model)
    values = {t.name: t for t in untied.graph.initializer}
    made: list[str] = []
    for k, i, own in plan:
        node = untied.graph.node[k]
        if own not in made:
            tensor = untied.graph.initializer.add()
            if i < len(node.input) and node.input[i]:
                tensor.CopyFrom(values[node.input[i]])
            else:  # the removed bias: zeros, one per output channel
                w = values[node.input[1]]
                trans_b = any(a.name == "transB" and a.i for a in node.attribute)
                width = w.dims[0] if node.op_type == "Conv" or trans_b else w.dims[1]
                tensor.CopyFrom(onnx.numpy_helper.from_array(
                    np.zeros(width, helper.tensor_dtype_to_np_dtype(w.data_type))))
            tensor.name = own
            made.append(own)
            values[own] = tensor
        while len(node.input) <= i:
            node.input.append("")
        node.input[i] = own
    return untied, made


def _own_parameter(name: str, scopes: Sequence[str], orphans: set[str]) -> str | None:
    """The parameter missing from the graph that a node in module `scopes` means when it reads `name`,
    another module's (None: `name` is its own)."""
    parts = name.split(".")
    for scope in reversed([s for s in scopes if s]):
        if name.startswith(scope + "."):
            return None
        for j in range(len(parts)):
            candidate = f"{scope}.{'.'.join(parts[j:])}"
            if candidate in orphans:
                return candidate
    return None


def _exporter_copy(graph: onnx.GraphProto) -> onnx.NodeProto | None:
    """The first Identity node copying a float initializer into a value that is not a graph output."""
    floats = {t.name for t in graph.initializer if t.data_type == TensorProto.FLOAT and t.dims}
    outputs = {o.name for o in graph.output}
    return next((n for n in graph.node if n.op_type == "Identity" and n.input[0] in floats
                 and n.output[0] not in outputs), None)


def untrainable_weights(model: onnx.ModelProto) -> str | None:
    """Why training cannot update `model`'s weights (quantized, float16 or float64 ones), and what
    to train instead; None for a float32 model."""
    ops = quantization_ops(model)
    types = {t.data_type for t in model.graph.initializer if len(t.dims) > 0}
    kind = (f"a quantized model ({', '.join(ops[:3])})" if ops else
            "a float16 model" if TensorProto.FLOAT16 in types and TensorProto.FLOAT not in types else None)
    if kind:
        return (f"is {kind}, whose weights training cannot update; train the float32 model it was made from, "
                "then quantize the result (onnxkit quantize)")
    if TensorProto.DOUBLE in types and TensorProto.FLOAT not in types:
        return ("is a float64 model; training runs in float32: export it in float32 (PyTorch: model.float() "
                "before torch.onnx.export)")
    return None


# (op type, input index) of the inputs that hold a layer's weights (None: any input)
_WEIGHT_INPUTS = {"Conv": 1, "ConvTranspose": 1, "Gemm": 1, "MatMul": None}


def constant_weights(model: onnx.ModelProto, output: str) -> list[str]:
    """The outputs of float Constant nodes (rank >= 2) that `output` reads as a layer's weights: an old
    converter's, which stay fixed in training (only initializers are parameters)."""
    constants = {n.output[0] for n in model.graph.node if n.op_type == "Constant" and any(
        a.name == "value" and a.t.data_type == TensorProto.FLOAT and len(a.t.dims) >= 2 for a in n.attribute)}
    needed = ancestors(model, output)
    found = [name for n in model.graph.node if n.op_type in _WEIGHT_INPUTS and n.output[0] in needed
             for i, name in enumerate(n.input) if name in constants and _WEIGHT_INPUTS[n.op_type] in (None, i)]
    return list(dict.fromkeys(found))


def in_inference_mode(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """`model` with BatchNormalization nodes exported in training mode (`training_mode=1`, as PyTorch's
    TorchScript exporter writes them with `training=TrainingMode.TRAINING`) set to inference mode, their
    unused statistics outputs dropped, and Dropout nodes whose `training_mode` input is a constant True
    without it; and the op types changed, one entry a node (none: `model` itself is returned). The
    training form puts both back in training mode; the trained model then normalises with its running
    statistics and drops nothing, as the module does after `eval()`."""
    true = {t.name for t in model.graph.initializer if t.data_type == TensorProto.BOOL and t.dims in ([], [1])
            and bool(onnx.numpy_helper.to_array(t).reshape(-1)[0])}
    true |= {n.output[0] for n in model.graph.node if n.op_type == "Constant" and n.attribute
             and n.attribute[0].t.data_type == TensorProto.BOOL and bool(onnx.numpy_helper.to_array(
                 n.attribute[0].t).reshape(-1)[0])}
    read = {name for n in model.graph.node for name in n.input} | {o.name for o in model.graph.output}
    changed = []
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for node in out.graph.node:
        if node.op_type == "BatchNormalization" and any(
                a.name == "training_mode" and a.i for a in node.attribute) and not read & set(node.output[1:]):
            _set_attribute(node, "training_mode", 0)
            del node.output[1:]
            changed.append(node.op_type)
        elif node.op_type == "Dropout" and len(node.input) > 2 and node.input[2] in true:
            del node.input[2:]
            changed.append(node.op_type)
    read = {name for n in out.graph.node for name in n.input} | {o.name for o in out.graph.output}
    dead = true - read  # the True each Dropout read, a Constant node or an initializer (onnxruntime warns of each)
    for node in [n for n in out.graph.node if n.op_type == "Constant" and n.output[0] in dead]:
        out.graph.node.remove(node)
    for tensor in [t for t in out.graph.initializer if t.name in dead]:
        out.graph.initializer.remove(tensor)
    return (out, changed) if changed else (model, [])


_FUSED_BY = "pkg.onnxscript.rewriter.rule_name"  # a node's rewrites: 'FuseBatchNormIntoConv', ...


def folded_batch_norms(model: onnx.ModelProto, trainable: Iterable[str]) -> list[str]:
    """The layers reading a trainable weight that PyTorch's exporter folded a BatchNorm into: the dynamo
    exporter's optimizer marks them (FuseBatchNormIntoConv, ...IntoGemm, ...); the TorchScript exporter
    in eval mode folds BatchNorm into the Conv before it and names the weight it computes onnx::Conv_N
    where the module's own are named after it. Either trains as a network without BatchNorm."""
    trained = set(trainable)
    torchscript = model.producer_name == "pytorch" and not any(_FUSED_BY in _marks(n) for n in model.graph.node)
    found = []
    for index, node in enumerate(model.graph.node):
        if not trained & set(node.input[1:]):
            continue
        if ("FuseBatchNorm" in _marks(node).get(_FUSED_BY, "") or torchscript and node.op_type == "Conv"
                and node.input[1].startswith("onnx::Conv_")):
            found.append(node.name or f"#{index}")
    return found


def _matching(patterns: Iterable[str], names: Sequence[str], option: str) -> set[str]:
    chosen: set[str] = set()
    for pattern in patterns:
        hits = fnmatch.filter(names, pattern)
        if not hits:
            raise OnnxkitError(
                f"{option} {pattern!r} matches no parameter.{suggest(pattern, names)} "
                f"Parameters look like: {', '.join(names[:4])}{', ...' if len(names) > 4 else ''}",
                params=[option],
            )
        chosen.update(hits)
    return chosen


@dataclass(frozen=True)
class Selection:
    """What gets trained: parameters with gradients, and buffers updated by the forward pass."""

    trainable: list[str]
    updated_buffers: list[str]
    frozen: list[str]


def select(
    model: onnx.ModelProto,
    params: ModelParameters,
    output: str,
    *,
    freeze: Sequence[str] = (),
    train_only: Sequence[str] = (),
    default: Sequence[str] | None = None,
) -> Selection:
    """Apply `train_only` then `freeze` globs to `default` (all parameters and buffers).

    Parameters that cannot reach `output` are left frozen. BatchNorm statistics
    stay frozen when both gamma and beta of their layer are frozen.
    """
    names = params.names
    chosen = _matching(train_only, names, "train_only") if train_only else set(default or names)
    chosen -= _matching(freeze, names, "freeze")
    reachable = ancestors(model, output)
    trainable = [n for n in params.parameters if n in chosen and n in reachable]
    kept = set(trainable)
    buffers = []
    for node in model.graph.node:
        if node.op_type == "BatchNormalization" and (kept & set(node.input[1:3])):
            buffers += [n for n in node.input[3:5] if n in chosen and n in params.buffers]
    if not trainable:
        raise OnnxkitError(
            f"nothing to train: no parameter is selected that affects output {output!r}; loosen freeze / train_only",
            params=["freeze", "train_only"],
        )
    updated = set(buffers)
    frozen = [n for n in names if n not in kept and n not in updated]
    return Selection(trainable, buffers, frozen)




# ops whose gradients need the sizes of the axes they run along fixed: recurrent ones unroll over a fixed number of
# steps, convolutions and pooling windows gather a fixed grid (`autodiff.rules.conv`)
FIXED_SIZE_OPS = frozenset({"LSTM", "GRU", "RNN", "Conv", "ConvTranspose", "MaxPool", "AveragePool", "GlobalMaxPool"})


def needs_full_length(model: onnx.ModelProto) -> bool:
    """Whether `model` has ops whose gradients need fixed sizes (`FIXED_SIZE_OPS`): text then trains padded to its
    full length (`Split.with_fixed_shapes`), not to each batch's longest (an LSTM, or a Conv1d text CNN)."""
    return any(node.op_type in FIXED_SIZE_OPS for node in model.graph.node)


def sized_by_data(model: onnx.ModelProto, splits: Iterable[Split]) -> onnx.ModelProto:
    """`model` with its inputs' dynamic axes past the batch fixed to the sizes the data's arrays
    have (a PyTorch export's dynamic sequence length or image size), for the training graphs:
    the gradients of LSTM, GRU, Conv and pooling need static sizes. Splits whose batches vary in
    size past the batch axis (text, cut to each batch's longest) leave it as it is; so does the
    model written after training, which keeps the graph it was given."""
    splits = list(splits)
    if not all(s.fixed_shapes for s in splits):
        return model
    sizes = {}
    for graph_input in model.graph.input:
        shapes = {s.inputs[graph_input.name].shape[1:] for s in splits if graph_input.name in s.inputs}
        dims = graph_input.type.tensor_type.shape.dim
        if len(shapes) != 1 or len(dims) != 1 + len(shape := next(iter(shapes))):
            continue
        for axis, size in enumerate(shape, start=1):
            if not dims[axis].HasField("dim_value"):
                sizes[graph_input.name, axis] = size
    if not sizes:
        return model
    sized = onnx.ModelProto()
    sized.CopyFrom(model)
    for graph_input in sized.graph.input:
        for axis, dim in enumerate(graph_input.type.tensor_type.shape.dim):
            if (graph_input.name, axis) in sizes:
                dim.dim_value = sizes[graph_input.name, axis]  # replaces dim_param (one field of a oneof)
    # the shapes stored with the graph, inferred again from the fixed inputs where inference can: a dynamo export's
    # keep the example's length where it baked it in, which then clashes with the fixed size
    bare = onnx.ModelProto()
    bare.CopyFrom(sized)
    del bare.graph.value_info[:]
    try:
        fresh = value_types(bare)
    except OnnxkitError:  # inference needs the stored shapes: keep them
        return sized
    for value in sized.graph.value_info:
        inferred = fresh.get(value.name)
        if inferred is not None and inferred.type.tensor_type.HasField("shape"):
            value.type.CopyFrom(inferred.type)
    return sized


def training_output(model: onnx.ModelProto, requested: str | None) -> str:
    """The value training fits: the output `requested`, else the one an earlier run fit, else for a
    scikit-learn classifier as skl2onnx converts it (its label first) the probabilities, else the first;
    when that output is ZipMap's sequence of {class: probability} maps, the tensor of probabilities the
    ZipMap reads."""
    from onnxkit.evaluate import scored_output

    name = requested or scored_output(model)
    return next((n.input[0] for n in model.graph.node if n.op_type == "ZipMap" and n.output[0] == name), name)


def refuse_weights_in_attributes(model: onnx.ModelProto, output: str) -> None:
    """Refuse an `output` that no parameter reaches but ops outside the default domain compute: a
    scikit-learn model's LinearClassifier, TreeEnsemble, SVM... keep their weights in attributes."""
    foreign = sorted({f"{node.domain}.{node.op_type}" for _, node in needed_nodes(model, output)
                      if node.domain not in ("", "ai.onnx")})
    if foreign and not set(find_parameters(model).parameters) & ancestors(model, output):
        raise OnnxkitError(
            f"output {output!r} is computed by {', '.join(foreign)}, which keep their weights in attributes, not "
            "in tensors training could update (a scikit-learn model converted to ONNX): fit the scikit-learn model "
            "on this data and convert it again, or train a neural network exported to ONNX"
        )


def output_type(types: dict[str, onnx.ValueInfoProto], model: onnx.ModelProto, output: str) -> onnx.ValueInfoProto:
    """The full type of graph output `output` (or of the probabilities a ZipMap output reads);
    errors when unknown or not an output."""
    outputs = [o.name for o in model.graph.output]
    zipped = {n.input[0] for n in model.graph.node if n.op_type == "ZipMap" and n.output[0] in outputs}
    if output not in outputs and output not in zipped:
        raise OnnxkitError(
            f"model has no output {output!r}.{suggest(output, outputs)} Its outputs: {', '.join(outputs)}"
        )
    vi = types.get(output)
    if vi is None or not vi.type.tensor_type.HasField("shape"):
        raise OnnxkitError(f"the shape of output {output!r} cannot be inferred; give the model's outputs a shape")
    return vi






def _start_like(model: onnx.ModelProto, output: onnx.ValueInfoProto) -> onnx.ModelProto:
    form = onnx.ModelProto()
    form.ir_version = model.ir_version
    form.opset_import.extend(model.opset_import)
    form.graph.name = model.graph.name
    form.graph.input.extend(model.graph.input)
    form.graph.output.append(output)
    return form




def eval_form(model: onnx.ModelProto, output: onnx.ValueInfoProto, weights: Iterable[str]) -> onnx.ModelProto:
    """The inference form computing only `output`, with the tensors named in `weights`
    turned into graph inputs (fed at run time) instead of copied."""
    form = _start_like(model, output)
    nodes = [node for _, node in needed_nodes(model, output.name)]
    form.graph.node.extend(nodes)
    fed = set(weights)
    for t in used_initializers(model, nodes):
        if t.name in fed:
            form.graph.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
        else:
            form.graph.initializer.append(t)
    return form


def training_form(
    model: onnx.ModelProto,
    output: onnx.ValueInfoProto,
    *,
    updated_buffers: Iterable[str],
    types: dict[str, onnx.ValueInfoProto],
    dropout: bool = True,
    seed: int = 0,
) -> onnx.ModelProto:
    """The training form of inference-form `model`, computing only `output` (a new model
    holding one copy of the weights it uses; `model` is not changed)."""
    updated = set(updated_buffers)
    form = _start_like(model, output)
    graph = form.graph
    needed = needed_nodes(model, output.name)
    graph.initializer.extend(used_initializers(model, (node for _, node in needed)))
    dropout_ratios = _dropout_ratios(model)
    need_true = False
    for index, original in needed:
        node = onnx.NodeProto()
        node.CopyFrom(original)
        tag = f"{PREFIX}.{index}"
        if node.op_type == "Dropout":
            if not dropout or opset(model) < 12:
                graph.node.append(helper.make_node("Identity", [node.input[0]], [node.output[0]], name=node.name))
                continue
            ratio = node.input[1] if len(node.input) > 1 and node.input[1] else ""
            if not ratio:  # onnxkit records ratios in metadata; ONNX's default is 0.5
                ratio = f"{tag}.ratio"
                value = dropout_ratios.get(original.name, 0.5)
                graph.initializer.append(helper.make_tensor(ratio, TensorProto.FLOAT, [], [value]))
            del node.input[:]
            node.input.extend([original.input[0], ratio, f"{PREFIX}.training_mode"])
            need_true = True
            if len(node.output) < 2:
                node.output.append(f"{tag}.mask")
            _set_attribute(node, "seed", (seed * 7919 + index) % (2**31))
        elif node.op_type == "BatchNormalization":
            if node.input[3] in updated:
                _set_attribute(node, "training_mode", 1)
                del node.output[1:]
                node.output.extend([f"{tag}.running_mean", f"{tag}.running_var"])
            else:
                graph.node.extend(_affine_batchnorm(node, tag, types, graph))
                continue
        graph.node.append(node)
    if need_true:
        graph.initializer.append(helper.make_tensor(f"{PREFIX}.training_mode", TensorProto.BOOL, [], [True]))
    # the model's own value shapes (named dims such as 'seq' that inference alone may lose: then the
    # gradient of a broadcast cannot tell two dims apart before run time)
    made = {name for node in graph.node for name in node.output}
    graph.value_info.extend(v for v in model.graph.value_info if v.name in made)
    return form


def buffer_updates(form: onnx.ModelProto) -> dict[str, str]:
    """Buffer name -> the training-form value holding its update (BatchNorm in training mode)."""
    updates = {}
    for node in form.graph.node:
        if node.op_type == "BatchNormalization" and len(node.output) == 3:
            updates[node.input[3]], updates[node.input[4]] = node.output[1], node.output[2]
    return updates


def _dropout_ratios(model: onnx.ModelProto) -> dict[str, float]:
    """The training ratios onnxkit's DSL records for its ratio-less Dropout nodes."""
    return {name: float(p) for name, p in json.loads(metadata(model).get(DROPOUT_KEY, "{}")).items()}


def _set_attribute(node: onnx.NodeProto, name: str, value: int) -> None:
    for attr in node.attribute:
        if attr.name == name:
            node.attribute.remove(attr)
            break
    node.attribute.append(helper.make_attribute(name, value))


def _affine_batchnorm(
    node: onnx.NodeProto, tag: str, types: dict[str, onnx.ValueInfoProto], graph: onnx.GraphProto
) -> list[onnx.NodeProto]:
    """BatchNorm with frozen statistics as `x * scale + shift`, gamma and beta still trainable."""
    x, gamma, beta, mean, var = node.input[:5]
    vi = types.get(x)
    if vi is None or not vi.type.tensor_type.HasField("shape"):
        raise OnnxkitError(f"cannot infer the rank of BatchNormalization input {x!r}; give the model value shapes")
    rank = len(vi.type.tensor_type.shape.dim)
    eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
    graph.initializer.append(helper.make_tensor(f"{tag}.eps", TensorProto.FLOAT, [], [eps]))
    graph.initializer.append(helper.make_tensor(f"{tag}.shape", TensorProto.INT64, [rank - 1], [-1] + [1] * (rank - 2)))
    n = lambda op, inputs, out: helper.make_node(op, inputs, [f"{tag}.{out}"], name=f"{node.name}/{out}")  # noqa: E731
    return [
        n("Add", [var, f"{tag}.eps"], "var_eps"),
        n("Sqrt", [f"{tag}.var_eps"], "std"),
        n("Div", [gamma, f"{tag}.std"], "scale"),
        n("Mul", [mean, f"{tag}.scale"], "mean_scaled"),
        n("Sub", [beta, f"{tag}.mean_scaled"], "shift"),
        n("Reshape", [f"{tag}.scale", f"{tag}.shape"], "scale_c"),
        n("Reshape", [f"{tag}.shift", f"{tag}.shape"], "shift_c"),
        n("Mul", [x, f"{tag}.scale_c"], "scaled"),
        helper.make_node("Add", [f"{tag}.scaled", f"{tag}.shift_c"], [node.output[0]], name=node.name),
    ]
