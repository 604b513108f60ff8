"""What PyTorch's ONNX exporters write into a model, read for training.

The dynamo exporter marks each initializer it makes (parameter, buffer, folded constant), lists the
module's parameters in a graph signature and records on each node the PyTorch op it came from; the
TorchScript exporter marks nothing, but names a module's own weights as state_dict keys. Both tie
or merge weights PyTorch trains apart (Identity copies, equal values, folded transposes) and may export
nodes in training mode. The functions here read those marks and undo those ties, so that an export
trains as its module does in PyTorch.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxkit.errors import first_few
from onnxkit.graph_walks import output_channels, producers, slots
from onnxkit.metadata_keys import PADDING_ROW_KEY

# what PyTorch's dynamo exporter writes in the value_info of each initializer it makes
_TORCH_KIND = "pkg.torch.export.graph_signature.InputSpec.kind"  # PARAMETER, BUFFER, CONSTANT_TENSOR...
_FOLDED = "pkg.onnxscript.optimizer.folded_from"  # a constant computed at export (a causal mask, an arange)
_SIGNATURE = "pkg.torch.export.ExportedProgram.graph_signature"  # graph metadata: 'p_fc_weight: PARAMETER target=...'
_SIGNATURE_SPEC = re.compile(r"^(\S+): (\w+) target='([^']*)'", re.MULTILINE)  # placeholder, kind, target
_STATE_NAME = re.compile(r"[A-Za-z_]\w*(\.\w+)*")  # a state_dict key (gate, blocks.0.scale), not onnx::Mul_7
_STATE_KEY = re.compile(r"\w+(\.\w+)*")  # a state_dict key, 1.weight too; not onnx::Mul_7, /1/Constant_output_0
_DYNAMO_VALUE = re.compile(r"val_\d+")  # a constant the dynamo exporter made (GELU's sqrt(2)), no module's state
_DYNAMO_NODE = "node_"  # how the dynamo exporter names its nodes (node_linear, node_Div_1)
_SCOPES = "pkg.torch.onnx.name_scopes"  # a node's module paths, outermost first, then its op's name
_FX_NODE = "pkg.torch.onnx.fx_node"  # the PyTorch op a node came from, its arguments by placeholder (%p_fc_weight)
_PLACEHOLDER = re.compile(r"%(\w+)")
TRANSPOSED = ".T"  # suffix of the copy made for a layer that read another's folded (transposed) weight
_EMBEDDING_ARGS = re.compile(r"target=torch\.ops\.aten\.embedding\.default\]\(args = \(([^)]*)\)")
_OP_ARGS = re.compile(r"target=torch\.ops\.aten\.(\w+)\.\w+\]\(args = \((.*)\), kwargs")  # an fx_node's op, its args
# the argument of the PyTorch op of a normalisation that each input of its node past the first stands for, by op:
# aten.layer_norm(x, shape, weight, bias, eps, cudnn) gives LayerNormalization's scale and bias (inputs 1, 2)
_NORM_ARGS = {**dict.fromkeys(("batch_norm", "native_batch_norm", "_native_batch_norm_legit",
                               "_native_batch_norm_legit_no_training", "_native_batch_norm_legit_functional"),
                              {1: 1, 2: 2, 3: 3, 4: 4}),
              **dict.fromkeys(("instance_norm", "native_group_norm"), {1: 1, 2: 2}),
              **dict.fromkeys(("layer_norm", "native_layer_norm", "group_norm"), {1: 2, 2: 3})}
_NORMS = ("BatchNormalization", "InstanceNormalization", "LayerNormalization", "GroupNormalization")
_FUSED_BY = "pkg.onnxscript.rewriter.rule_name"  # a node's rewrites: 'FuseBatchNormIntoConv', ...


def scalar_weights(model: onnx.ModelProto) -> set[str]:
    """The rank-0 initializers that are a PyTorch module's own: those a dynamo export's signature lists as
    parameters, or, in a TorchScript export (which writes constants as Constant nodes or onnx:: names),
    those named as state_dict keys (a learnable temperature or gate, nn.Parameter(torch.tensor(0.1)))."""
    signature = _export_signature(model)
    if signature:
        return {target for _, kind, target in signature if kind == "PARAMETER"}
    if model.producer_name != "pytorch":
        return set()
    return {t.name for t in model.graph.initializer
            if not t.dims and _STATE_NAME.fullmatch(t.name) and not _DYNAMO_VALUE.fullmatch(t.name)}


def norm_constants(model: onnx.ModelProto) -> set[str]:
    """The ones and zeros a TorchScript export gives an InstanceNormalization as its scale and bias where the
    module has none: nn.GroupNorm, written as a per-group InstanceNormalization between Reshapes (its own weight
    and bias are a Mul and an Add after them), and nn.InstanceNorm without affine. PyTorch trains neither. They are
    named as the exporter names values (/norm/Constant_1_output_0), not as state_dict keys, and are initializers or
    Constant nodes (`do_constant_folding=False`); only such norms read them."""
    if model.producer_name != "pytorch" or _export_signature(model):
        return set()
    values = {t.name: t for t in model.graph.initializer} | {
        n.output[0]: a.t for n in model.graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"}
    read_at = slots(model.graph.node)
    fills = {1: 1.0, 2: 0.0}  # by InstanceNormalization's input: the scale's ones, the bias's zeros
    found = set()
    for name, tensor in values.items():
        uses = read_at.get(name, [])
        indices = {index for _, index in uses}
        if _STATE_KEY.fullmatch(name) or not uses or len(indices) != 1 or any(
                node.op_type != "InstanceNormalization" for node, _ in uses):
            continue
        slot = indices.pop()
        if slot in fills and np.all(numpy_helper.to_array(tensor) == fills[slot]):
            found.add(name)
    return found


def lost_dynamo_marks(model: onnx.ModelProto) -> bool:
    """Whether `model` is a dynamo export without the marks it wrote (onnx's version converter, which
    `torch.onnx.export(dynamo=True, opset_version=17)` runs, drops them): the parameters it merged cannot be
    told apart again."""
    nodes = model.graph.node
    return (model.producer_name == "pytorch" and not _export_signature(model) and bool(nodes)
            and all(node.name.startswith(_DYNAMO_NODE) for node in nodes))


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


def matmul_weight_names(model: onnx.ModelProto) -> dict[str, str]:
    """The PyTorch parameter each MatMul weight of an export was made from, by initializer, where the export says:
    a dynamo export's folded_from mark (val_35: a Linear's transposed weight), or a TorchScript export's node scope
    (onnx::MatMul_302 read by '/bert/encoder/layer.0/attention/self/query/MatMul': that Linear's weight)."""
    held = {t.name for t in model.graph.initializer}
    names = {info.name: next(iter(sources)) for info in model.graph.value_info if info.name in held
             and len(sources := _folded_sources(_marks(info).get(_FOLDED, ""))) == 1}
    for node in model.graph.node:
        path = node.name.strip("/").split("/")
        if node.op_type == "MatMul" and node.input[1] in held and node.name.startswith("/") and len(path) > 1:
            names.setdefault(node.input[1], ".".join(path[:-1]) + ".weight")
    return {weight: name for weight, name in names.items() if weight != name}


def untie_exporter_copies(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """`model` with each float initializer that an Identity node copies (`B = Identity(A)`) made
    an initializer of its own, `B`; and the names so made (none: `model` itself is returned).

    PyTorch's TorchScript exporter writes distinct parameters whose values happen to be equal as
    one initializer and Identity copies: the zero biases of a model, the deep-copied layers of
    `nn.TransformerEncoder`, a fresh BatchNorm's running mean and variance (copies of its beta and
    gamma). A weight the model really shares is one initializer read by several nodes, with no
    Identity, or an Identity copy whose MatMul adds the very bias its source's does (a Linear called
    twice: ALBERT's shared layer); this keeps both. Left tied, the copies would train as one tensor, and BatchNorm
    would normalise with its trained affine weights as statistics. In a dynamo export an Identity of a
    parameter its signature lists is the module reading that very parameter (`aten.clone`, `alias`:
    DeBERTa's relative position table, cloned once a layer), and stays."""
    shared = {target for _, kind, target in _export_signature(model) if kind == "PARAMETER"}
    if not _exporter_copy(model.graph, shared):
        return model, []
    untied = onnx.ModelProto()
    untied.CopyFrom(model)
    made = []
    while node := _exporter_copy(untied.graph, shared):  # a copy of a copy is one once its source is made
        tensor = untied.graph.initializer.add()
        tensor.CopyFrom(next(t for t in untied.graph.initializer if t.name == node.input[0]))
        tensor.name = node.output[0]
        untied.graph.node.remove(node)
        made.append(tensor.name)
    return untied, made


def with_padding_rows(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """`model` with each lookup PyTorch's exporters made of `nn.Embedding(padding_idx=k)` marked
    (`PADDING_ROW_KEY`), so that, as in PyTorch, it sends row k no gradient; and 'table row k' for each found
    by its values alone. The dynamo exporter records aten.embedding's arguments on the Gather node (weight,
    ids, padding_idx; -1 or none: no padding row); a TorchScript export keeps no record, so there a table's one
    all-zero row, as padding_idx makes it (a fresh table's others drawn from N(0, 1)), is taken for it."""
    weights = {t.name: t for t in model.graph.initializer}
    torchscript = model.producer_name == "pytorch" and not _export_signature(model)
    marks, guessed = {}, []
    for k, node in enumerate(model.graph.node):
        if node.op_type != "Gather" or node.input[0] not in weights or PADDING_ROW_KEY in _marks(node):
            continue
        found = _EMBEDDING_ARGS.search(_marks(node).get(_FX_NODE, ""))
        args = found.group(1).split(", ") if found else []
        if len(args) > 2 and args[2].isdigit():
            marks[k] = args[2]
        elif torchscript and (row := _one_zero_row(weights[node.input[0]])) is not None:
            marks[k] = str(row)
            guessed.append(f"{node.input[0]} row {row}")
    if not marks:
        return model, []
    marked = onnx.ModelProto()
    marked.CopyFrom(model)
    for k, row in marks.items():
        marked.graph.node[k].metadata_props.add(key=PADDING_ROW_KEY, value=row)
    return marked, guessed


def _one_zero_row(table: onnx.TensorProto) -> int | None:
    """The index of a float table's only all-zero row (None: none, or several)."""
    if len(table.dims) != 2 or table.data_type != TensorProto.FLOAT or table.dims[0] < 2:
        return None
    zero = np.flatnonzero(~np.any(onnx.numpy_helper.to_array(table), axis=1))
    return int(zero[0]) if len(zero) == 1 else None


def unmarked_scalars(model: onnx.ModelProto, trainable: Sequence[str]) -> list[str]:
    """The trainable scalars of an export that does not say which of its tensors are parameters (TorchScript's):
    a module's own nn.Parameter and a register_buffer'd scalar look alike there, and both train."""
    if _export_signature(model):
        return []
    scalars = scalar_weights(model)
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
        transpose = helper.make_node("Transpose", [source], [copy], name=f"onnxkit.train.retied/{copy}")
        retied.graph.node.insert(k, transpose)
    return retied, [f"{copy} of {source}" for copy, source in pairs]


def retie_repeated_folds(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """`model` with each initializer a dynamo export folded from the same one weight as an earlier one, holding the
    same values, computed as an Identity of that one; and 'copy of first' for each (none: `model` itself is returned).

    The dynamo exporter folds a Linear's transposed weight once a call, so a layer called twice (ALBERT's one shared
    layer) reads two copies: left apart, they trained as two tensors (a 2-layer ALBERT: 33 parameters where PyTorch
    has 27, its query and key gradients 3% to 98% off autograd's)."""
    values = {t.name: t for t in model.graph.initializer}
    firsts: dict[str, str] = {}  # source -> its first copy
    found: dict[str, str] = {}  # later copy -> the first
    for info in model.graph.value_info:
        sources = _folded_sources(_marks(info).get(_FOLDED, ""))
        if len(sources) != 1 or info.name not in values or (source := next(iter(sources))) in values:
            continue
        first = firsts.setdefault(source, info.name)
        a, b = (onnx.numpy_helper.to_array(values[n]) for n in (first, info.name))
        if first != info.name and a.shape == b.shape and np.array_equal(a, b):
            found[info.name] = first
    if not found:
        return model, []
    retied = onnx.ModelProto()
    retied.CopyFrom(model)
    kept = [t for t in retied.graph.initializer if t.name not in found]
    del retied.graph.initializer[:]
    retied.graph.initializer.extend(kept)
    for k, (copy, first) in enumerate(found.items()):
        retied.graph.node.insert(k, helper.make_node("Identity", [first], [copy], name=f"onnxkit.train.retied/{copy}"))
    return retied, [f"{copy} of {first}" for copy, first in found.items()]


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
        if not _removed_bias_only(marks):  # a node the optimizer fused ops into: its marks are one of theirs (a
            continue  # folded BatchNorm's, whose weight it does not read), not its own inputs'
        try:
            scopes = ast.literal_eval(marks.get(_SCOPES, "[]"))  # a Python list of strings
        except (ValueError, SyntaxError):
            scopes = []
        if not isinstance(scopes, list) or not all(isinstance(x, str) for x in scopes):
            scopes = []
        # the parameters the PyTorch op read, in order: a node reading another's equal tensor reads its own
        read = [placeholders[p] for p in _PLACEHOLDER.findall(marks.get(_FX_NODE, "")) if p in placeholders]
        repeated = _repeated_reads(node, read, targets, orphans)
        plan += [(k, i, own) for i, own in repeated.items()]
        for i, name in enumerate(node.input):
            if name not in targets or name not in present or name in read or i in repeated:
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
        if node.op_type in ("Gemm", "Conv", "ConvTranspose") and (len(node.input) < 3 or not node.input[2]) and bias \
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
                tensor.CopyFrom(onnx.numpy_helper.from_array(
                    np.zeros(output_channels(node, w), helper.tensor_dtype_to_np_dtype(w.data_type))))
            tensor.name = own
            made.append(own)
            values[own] = tensor
        while len(node.input) <= i:
            node.input.append("")
        node.input[i] = own
    return untied, made


def unmerged_norm_weights(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """`model` with each normalisation reading what its PyTorch op read: a constant copy of its own where the op read
    no weight or bias (`affine=False`, `elementwise_affine=False`), and its own running statistics; and those nodes'
    names (none: `model` itself is returned). The dynamo exporter's optimizer merges the ones and zeros it makes for
    a missing weight and bias, and fresh statistics, with equal tensors: another LayerNorm's fresh weight, which then
    trained on both layers' gradients; a BatchNorm's own statistics, BatchNormalization(x, var, mean, mean, var), or
    another's weight and bias, which, read as statistics, were no buffers, so the node normalised with fresh
    statistics in training too, as if the module had no BatchNorm (PyTorch normalises each batch)."""
    values = {t.name: t for t in model.graph.initializer}
    placeholders = {ph: target for ph, kind, target in _export_signature(model) if kind in ("PARAMETER", "BUFFER")}
    targets = set(placeholders.values())
    plan = []  # (node, input, the name it reads instead, whether that is a constant)
    for k, node in enumerate(model.graph.node):
        op, args = _op_args(_marks(node).get(_FX_NODE, "")) if node.op_type in _NORMS else ("", [])
        for i, a in _NORM_ARGS.get(op, {}).items():
            name, arg = node.input[i] if i < len(node.input) else "", args[a] if a < len(args) else ""
            own = placeholders.get(arg[1:], "") if arg.startswith("%") else ""
            if name not in values or name not in targets:
                continue
            if arg == "None" and i in (1, 2):
                plan.append((k, i, f"{node.name or node.output[0]}.{('scale', 'bias')[i - 1]}", True))
            elif own and own != name and own not in values:
                plan.append((k, i, own, False))
    if not plan:
        return model, []
    out = onnx.ModelProto()
    out.CopyFrom(model)
    made: set[str] = set()
    for k, i, name, constant in plan:
        node = out.graph.node[k]
        if name not in made:
            copy = out.graph.initializer.add()
            copy.CopyFrom(values[node.input[i]])
            copy.name = name
            made.add(name)
            if constant:  # marked as the exporter marks the constants it makes
                info = helper.make_tensor_value_info(name, copy.data_type, list(copy.dims))
                info.metadata_props.add(key=_TORCH_KIND, value="CONSTANT_TENSOR")
                out.graph.value_info.append(info)
        node.input[i] = name
    return out, list(dict.fromkeys(out.graph.node[k].name or out.graph.node[k].output[0] for k, *_ in plan))


def _op_args(fx_node: str) -> tuple[str, list[str]]:
    """The PyTorch op in `fx_node` (an exporter's mark) and its arguments as written; ("", []) if none."""
    found = _OP_ARGS.search(fx_node)
    if not found:
        return "", []
    args, depth, start, text = [], 0, 0, found.group(2)
    for k, char in enumerate(text + ","):
        depth += (char in "([") - (char in ")]")
        if char == "," and depth == 0:
            args.append(text[start:k].strip())
            start = k + 1
    return found.group(1), args


def _repeated_reads(node: onnx.NodeProto, read: Sequence[str], targets: set[str], orphans: set[str]) -> dict[int, str]:
    """{input index: the parameter or buffer it stands for} where `node` reads one tensor at several inputs and
    its PyTorch op read, in the same order, distinct ones the graph lacks: a fresh BatchNorm's statistics merged
    into its own bias (zeros) and weight (ones), BatchNormalization(x, w, b, b, w). Left so, its running mean
    was its trained bias (a DenseNet's, whose BatchNorm follows a Concat and stays a node: 96.4% on digits
    where the TorchScript export trained to 98.3%)."""
    reads = [(i, name) for i, name in enumerate(node.input) if name in targets]
    names = [name for _, name in reads]
    if len(reads) != len(read) or len(set(names)) == len(names):
        return {}
    return {i: own for (i, name), own in zip(reads, read, strict=True)
            if own != name and own in orphans and names.count(name) > 1}


def _removed_bias_only(marks: dict[str, str]) -> bool:
    """Whether the dynamo exporter's optimizer rewrote a node only by removing its zero bias (or not at all):
    its marks are then its own op's (torchvision zero-initialises the biases of its Linear layers, and
    squeezenet's and the squeeze-excitation Convs', which the rewrite, marked RemoveOptionalBiasFromGemm, drops)."""
    rules = {r.strip() for r in marks.get(_FUSED_BY, "").split(",") if r.strip()}
    return all(r.startswith("RemoveOptionalBias") for r in rules)


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


def _exporter_copy(graph: onnx.GraphProto, shared: set[str]) -> onnx.NodeProto | None:
    """The first Identity node copying a float initializer (not one of `shared`) into a value that is not a graph
    output."""
    floats = {t.name for t in graph.initializer if t.data_type == TensorProto.FLOAT and t.dims} - shared
    outputs = {o.name for o in graph.output}
    biases = _matmul_biases(graph, floats)
    return next((n for n in graph.node if n.op_type == "Identity" and n.input[0] in floats
                 and n.output[0] not in outputs and not biases.get(n.input[0], set()) & biases.get(n.output[0], set())),
                None)


def _matmul_biases(graph: onnx.GraphProto, floats: set[str]) -> dict[str, set[str]]:
    """The float initializers added to each MatMul's output, by its weight: a copy whose MatMul adds the very bias its
    source's does is the same Linear applied again (ALBERT's shared layer), a weight the model shares."""
    adds = {i: n for n in graph.node if n.op_type == "Add" for i in n.input}
    found: dict[str, set[str]] = {}
    for node in graph.node:
        if node.op_type == "MatMul" and (add := adds.get(node.output[0])) is not None:
            found.setdefault(node.input[1], set()).update(floats.intersection(add.input))
    return found


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
            next(a for a in node.attribute if a.name == "training_mode").i = 0
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


def folded_batch_norms(model: onnx.ModelProto, trainable: Iterable[str]) -> list[onnx.NodeProto]:
    """The layers reading a trainable weight that PyTorch's exporter folded a BatchNorm into: the dynamo
    exporter's optimizer marks them (FuseBatchNormIntoConv, ...IntoGemm, ...); the TorchScript exporter
    in eval mode folds BatchNorm into the Conv before it and names the weight and bias it computes onnx::Conv_N
    where the module's own are named after it (a weight alone so named was folded from something else:
    weight_norm's g * v / |v|, Wav2Vec2's positional Conv, its bias the module's own). Either would train as a
    network without BatchNorm (`batchnorm_restore` puts it back). A layer a BatchNormalization reads already is
    none: its BatchNorm was put back by an earlier run (model.onnx trained again), or never folded."""
    trained = set(trainable)
    torchscript = model.producer_name == "pytorch" and not any(_FUSED_BY in _marks(n) for n in model.graph.node)
    normalised = {n.input[0] for n in model.graph.node if n.op_type == "BatchNormalization"}
    return [node for node in model.graph.node if trained & set(node.input[1:]) and node.output[0] not in normalised
            and ("FuseBatchNorm" in _marks(node).get(_FUSED_BY, "")
                 or torchscript and node.op_type == "Conv" and len(node.input) > 2
                 and all(name.startswith("onnx::Conv_") for name in node.input[1:3]))]


def folded_parameters(model: onnx.ModelProto) -> dict[str, list[str]]:
    """Each parameter of a dynamo export that the exporter's optimizer computed values from at export (it folds
    what needs no input: exp(log_scale), a grid expanded to a static batch, v @ u), with those values' initializers.
    A weight folded only into a new layout for the layer that reads it is not one: that layer's PyTorch op names
    the parameter itself, and the copy trains as it (a Linear's transposed weight; an nn.GRU's or nn.LSTM's
    weights, gates reordered, and its two biases concatenated, which aten.gru names all four of)."""
    placeholders = {target: ph for ph, kind, target in _export_signature(model) if kind == "PARAMETER"}
    held = {t.name for t in model.graph.initializer}
    named: dict[str, set[str]] = {}  # initializer -> the placeholders the PyTorch ops of the nodes reading it name
    for node in model.graph.node:
        for name in node.input:
            named.setdefault(name, set()).update(_PLACEHOLDER.findall(_marks(node).get(_FX_NODE, "")))
    found: dict[str, list[str]] = {}
    for info in model.graph.value_info:
        sources = _folded_sources(_marks(info).get(_FOLDED, ""))
        params = [p for p in placeholders if p in sources]
        if info.name not in held or not params or all(placeholders[p] in named.get(info.name, ()) for p in params):
            continue
        for param in params:
            found.setdefault(param, []).append(info.name)
    return found


_TORCHSCRIPT_VALUE = re.compile(r"onnx::\w+_\d+")  # what the TorchScript exporter names a tensor it computed
_OWN_LAYOUT = frozenset({"MatMul", "Gemm", "LSTM", "GRU", "RNN", "PRelu"})  # read a weight transposed or reshaped


def torchscript_folds(model: onnx.ModelProto, trainable: Iterable[str]) -> list[str]:
    """The trainable weights of a TorchScript export that its exporter computed from the module's at export (constant
    folding names them onnx::Op_N), but for a weight in the layout a layer reads it in: a MatMul's or Gemm's
    transposed weight, a recurrent layer's gates, PReLU's slope, GroupNorm's weight and bias reshaped after its
    InstanceNormalization, a Conv's weight and bias a BatchNorm was folded into (`batchnorm_restore`). What is left
    was made from weights in a way training cannot see: weight_norm's g * v / |v| (Wav2Vec2's positional Conv), a
    relative-position bias gathered from its table (Swin)."""
    if model.producer_name != "pytorch" or _export_signature(model):
        return []
    producer = producers(model.graph.node)
    readers = slots(model.graph.node)

    def made_by(name: str, op: str) -> onnx.NodeProto | None:
        node = producer.get(name)
        return node if node is not None and node.op_type == op else None

    def group_norm(name: str) -> bool:  # Reshape(InstanceNormalization(...)), the value GroupNorm's weight scales
        reshaped = made_by(name, "Reshape")
        return reshaped is not None and made_by(reshaped.input[0], "InstanceNormalization") is not None

    def own_layout(node: onnx.NodeProto, index: int) -> bool:
        if node.op_type in _OWN_LAYOUT:
            return True
        if node.op_type == "Identity":  # a shared layer's second call (ALBERT's) reads its weight so
            return all(own_layout(*reader) for reader in readers.get(node.output[0], []))
        if node.op_type == "Conv":
            return all(_TORCHSCRIPT_VALUE.fullmatch(name) for name in node.input[1:3]) and len(node.input) > 2
        if node.op_type in ("Mul", "Add") and len(node.input) == 2:
            other = node.input[1 - index]
            scaled = made_by(other, "Mul") if node.op_type == "Add" else None
            return group_norm(other) or scaled is not None and any(group_norm(i) for i in scaled.input)
        return False

    return [name for name in trainable if _TORCHSCRIPT_VALUE.fullmatch(name)
            and not all(own_layout(node, index) for node, index in readers.get(name, []))]


def computed_at_export(model: onnx.ModelProto, trainable: Sequence[str]) -> str | None:
    """What `folded_parameters` (or, in a TorchScript export, `torchscript_folds`) found, as a sentence for a
    warning with the fix; None when nothing."""
    scripted = torchscript_folds(model, trainable)
    if scripted:
        one = len(scripted) == 1
        return (f"PyTorch's TorchScript exporter computed {first_few(scripted)} from the module's weights at export "
                f"(constant folding), so {'it does' if one else 'they do'} not train as in PyTorch: "
                f"{'it trains as a tensor of its' if one else 'each trains as a tensor of their'} own (a weight_norm's "
                "g and v, a table gathered by index, are gone from the graph); to train the module's weights, export "
                "with torch.onnx.export(..., do_constant_folding=False)")
    computed = folded_parameters(model)
    if not computed:
        return None
    made = list(dict.fromkeys(v for values in computed.values() for v in values))
    trained = [v for v in made if v in trainable]
    fixed = [v for v in made if v not in trained]
    parts = [f"{first_few(trained)} train{'s' * (len(trained) == 1)} as "
             f"{'a tensor of its' if len(trained) == 1 else 'tensors of their'} own"] * bool(trained)
    parts += [f"{first_few(fixed)} stay{'s' * (len(fixed) == 1)} fixed"] * bool(fixed)
    one = len(computed) == 1
    return (f"PyTorch's exporter computed {first_few(made)} from the parameter{'s' * (not one)} "
            f"{first_few(list(computed))} at export, so {'it does' if one else 'they do'} not train as in PyTorch "
            f"({'; '.join(parts)}); to train {'it' if one else 'them'}, export with "
            "torch.onnx.export(..., dynamo=True, optimize=False)")

