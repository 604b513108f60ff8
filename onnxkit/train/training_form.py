"""From an inference-form ONNX model to what training needs: its parameters, the ones to
train, and the training form of the graph.

Parameters are the float32 initializers of rank >= 1 that feed a differentiable
input of some node, and the scalars a PyTorch module holds as its own (`scalar_weights`);
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
  buffer; the variance is updated as PyTorch does, from the unbiased batch variance);
  with frozen statistics it becomes `x * scale + shift` computed from the
  four tensors, so gradients reach gamma and beta and the statistics never change.
- Only the chosen output remains a graph output, with its full inferred type.

Rewrites that only one backend needs live with that backend.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from onnxkit.batch_axis import layout_of, rows_first
from onnxkit.data.split import Split
from onnxkit.dims import fixed_size
from onnxkit.errors import OnnxkitError, first_few, suggest
from onnxkit.graph_walks import (
    FLOAT_TYPES,
    ancestors,
    needed_nodes,
    node_reads,
    opset,
    producers,
    quantization_ops,
    used_initializers,
    value_types,
    without_initializer_inputs,
)
from onnxkit.metadata import metadata
from onnxkit.metadata_keys import BUFFERS_KEY, DROPOUT_KEY
from onnxkit.train.exporter_marks import (
    exported_constants,
    in_inference_mode,
    lost_dynamo_marks,
    norm_constants,
    retie_folded_transposes,
    retie_repeated_folds,
    scalar_weights,
    unmerged_norm_weights,
    untie_deduplicated,
    untie_exporter_copies,
    with_padding_rows,
)
from onnxkit.train.old_opsets import at_training_opset
from onnxkit.train.sinusoids import is_sinusoid_initializer

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


@dataclass(frozen=True)
class ModelParameters:
    """The model's trainable tensors by kind, in initializer order."""

    parameters: list[str]
    buffers: list[str]
    sizes: dict[str, int]
    other_floats: list[str] = field(default_factory=list)  # float64/float16 ones, which stay as they are
    sinusoids: list[str] = field(default_factory=list)  # parameters that are fixed position tables: frozen by default

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
    declared = set(json.loads(metadata(model).get(BUFFERS_KEY, "[]"))) | exported_constants(model) | \
        norm_constants(model)
    scalars = scalar_weights(model)
    parameters, buffers, sizes, other_floats, sinusoids = [], [], {}, [], []
    for t in model.graph.initializer:
        used = uses.get(t.name, [])
        if t.data_type not in FLOAT_TYPES or not used:
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
        if kind is parameters and is_sinusoid_initializer(t):
            sinusoids.append(t.name)
    return ModelParameters(parameters, buffers, sizes, other_floats, sinusoids)




def trainable_form(model: onnx.ModelProto, named: str = "the model") -> tuple[onnx.ModelProto, list[str]]:
    """`model` as training takes it (`fit` and `open_training` alike): without the initializers old
    exporters list as inputs, with nodes exported in training mode set to inference mode and the
    weights PyTorch's exporters tied (Identity copies, merged equal values, dropped zero biases)
    untied; converted to opset 13 when older (`old_opsets`); and a line for each of these it did. Weights training
    cannot update are an error that begins with `named`."""
    model = without_initializer_inputs(model)
    seq_first = layout_of(model)
    if seq_first:
        model = rows_first(model)
    why = untrainable_weights(model)
    if why:
        raise OnnxkitError(f"{named} {why}")
    model, converted = at_training_opset(model, named)
    notes = [converted] if converted else []
    if seq_first:
        notes.append(f"the model takes its batch on axis 1 ({seq_first.describe()}, PyTorch's batch_first="
                     "False): it trains on the data's rows transposed to that layout, and the trained model keeps it")
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
    model, lifted = constant_weights_as_initializers(model)
    if lifted:
        notes.append(f"{len(lifted)} weights the exporter wrote as Constant nodes ({first_few(lifted)}) train as "
                     "initializers, and the trained model holds them so")
    model, guessed = with_padding_rows(model)
    if guessed:
        notes.append(f"the TorchScript export does not mark nn.Embedding(padding_idx): {first_few(guessed)}, all "
                     "zeros as padding_idx makes a row, is kept as its padding row (no gradient from its lookups), "
                     "as in PyTorch")
    model, retied = retie_folded_transposes(model)
    if retied:
        notes.append(f"{len(retied)} weights PyTorch's exporter stored as transposed copies of weights the model "
                     f"also reads itself ({first_few(retied)}) are transposed from them again: each tied weight "
                     "trains as one tensor, as in PyTorch")
    model, repeated = retie_repeated_folds(model)
    if repeated:
        notes.append(f"{len(repeated)} weights PyTorch's exporter folded once a call of a layer called again "
                     f"({first_few(repeated)}) read their first copy: each shared weight trains as one tensor, as in "
                     "PyTorch")
    model, merged = untie_deduplicated(model)
    model, renormed = unmerged_norm_weights(model)
    if renormed:
        notes.append(f"normalisations ({first_few(renormed)}) read other equal-valued weights or statistics where "
                     "their PyTorch op read none (affine=False) or its own (fresh statistics), as PyTorch's exporter "
                     "merged them: each reads its own, a constant where the op read none")
    if lost_dynamo_marks(model):
        notes.append("warning: the model is a PyTorch dynamo export without the marks that say which weights the "
                     "exporter merged into one (every LayerNorm's ones, zero biases), which then train tied; "
                     "converting it to another opset drops them: export it at opset 18 or newer")
    if merged:
        notes.append(f"{len(merged)} parameters were merged by PyTorch's exporter into equal-valued ones or "
                     f"dropped as zero biases ({first_few(merged)}: "
                     "deep-copied layers, LayerNorm ones, zero biases): each trains as a tensor of its own")
    return model, notes


RANDOM_OPS = frozenset({"RandomUniform", "RandomUniformLike", "RandomNormal", "RandomNormalLike", "Bernoulli",
                        "Multinomial"})


def random_nodes(model: onnx.ModelProto, output: str) -> list[str]:
    """'count op' for each random op `output` depends on (Dropout aside, which training controls)."""
    needed = ancestors(model, output)
    ops = [n.op_type for n in model.graph.node if n.op_type in RANDOM_OPS and needed & set(n.output)]
    return [f"{ops.count(op)} {op}" for op in dict.fromkeys(ops)]


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


# the inputs that hold a layer's weights, by op type: those an exporter may keep in Constant nodes
_WEIGHT_INPUTS = {"Conv": (1, 2), "ConvTranspose": (1, 2), "Gemm": (1, 2), "MatMul": (0, 1), "PRelu": (1,),
                  "BatchNormalization": (1, 2, 3, 4), "LayerNormalization": (1, 2), "InstanceNormalization": (1, 2),
                  "LSTM": (1, 2, 3), "GRU": (1, 2, 3), "RNN": (1, 2, 3)}


def constant_weights_as_initializers(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """`model` with the float Constant nodes (rank >= 1) that layers read as weights, and the biases Added to a
    MatMul, as initializers of their names, so that they train (paddle2onnx and spox write every weight so: a
    PP-OCR recognizer was 'nothing to train'); and those names (none: `model` itself is returned)."""
    graph = model.graph
    floats = {n.output[0]: n for n in graph.node if n.op_type == "Constant" and any(
        a.name == "value" and a.t.data_type in FLOAT_TYPES and len(a.t.dims) >= 1 for a in n.attribute)}
    kept = {o.name for o in graph.output} | norm_constants(model)  # outputs; a PyTorch norm's own ones and zeros
    floats = {name: node for name, node in floats.items() if name not in kept}
    products = {n.output[0] for n in graph.node if n.op_type == "MatMul"}
    read = [name for n in graph.node for i, name in enumerate(n.input) if name in floats and (
        i in _WEIGHT_INPUTS.get(n.op_type, ()) or (n.op_type == "Add" and products & set(n.input)))]
    lifted = list(dict.fromkeys(read))
    if not lifted:
        return model, []
    result = onnx.ModelProto()
    result.CopyFrom(model)
    nodes = [n for n in result.graph.node if not (n.op_type == "Constant" and n.output[0] in lifted)]
    del result.graph.node[:]
    result.graph.node.extend(nodes)
    for name in lifted:
        tensor = result.graph.initializer.add()
        tensor.CopyFrom(next(a.t for a in floats[name].attribute if a.name == "value"))
        tensor.name = name
    return result, lifted


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
    to_come: Sequence[str] = (),
) -> Selection:
    """Apply `train_only` then `freeze` globs to `default` (all parameters and buffers but sinusoidal position
    tables, which `train_only` may name); a glob may also match only `to_come`, tensors training will add (a BatchNorm
    put back), not an error before they exist.

    Parameters that cannot reach `output` are left frozen. BatchNorm statistics
    stay frozen when both gamma and beta of their layer are frozen; a layer whose gamma and beta are
    not parameters (fixed: PyTorch's affine=False) updates its statistics unless they are frozen.
    """
    names = params.names
    known = [*names, *to_come]
    chosen = _matching(train_only, known, "train_only") if train_only else set(
        default or [n for n in names if n not in params.sinusoids])
    chosen -= _matching(freeze, known, "freeze")
    reachable = ancestors(model, output)
    trainable = [n for n in params.parameters if n in chosen and n in reachable]
    kept = set(trainable)
    buffers = []
    for node in model.graph.node:
        if node.op_type != "BatchNormalization":
            continue
        affine = set(node.input[1:3])
        if kept & affine or (not affine & set(params.parameters) and node.input[3] in reachable):
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
            if fixed_size(dims[axis]) is None:
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
    """Refuse an `output` computed by ops outside the default domain that no parameter reaches, but through
    ai.onnx.ml ops: a scikit-learn model's LinearClassifier, TreeEnsemble, SVM... keep their weights in attributes,
    and none has a gradient (a TF-IDF pipeline's idf weights, a k-nearest-neighbours' training rows lie before)."""
    foreign = sorted({f"{node.domain}.{node.op_type}" for _, node in needed_nodes(model, output)
                      if node.domain not in ("", "ai.onnx")})
    reach = ancestors(model, output, stop=lambda node: node.domain == "ai.onnx.ml")
    if foreign and not set(find_parameters(model).parameters) & reach:
        raise OnnxkitError(
            f"output {output!r} is computed by {', '.join(foreign)} (a scikit-learn model converted to ONNX keeps "
            "its weights in attributes of such ops), and no tensor training could update reaches it but through "
            "those, which have no gradient: fit the scikit-learn model on this data and convert it again, or train "
            "a neural network exported to ONNX"
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
    unbiased_running_var: bool = True,
) -> onnx.ModelProto:
    """The training form of inference-form `model`, computing only `output` (a new model
    holding one copy of the weights it uses; `model` is not changed). With `unbiased_running_var`,
    BatchNorm's running variance is output as PyTorch updates it (else as ONNX does, in place)."""
    updated = set(updated_buffers)
    form = _start_like(model, output)
    graph = form.graph
    needed = needed_nodes(model, output.name)
    graph.initializer.extend(used_initializers(model, (node for _, node in needed)))
    dropout_ratios = _dropout_ratios(model)
    need_true = batch_statistics = False
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
                batch_statistics = True
                del node.output[1:]
                node.output.extend([f"{tag}.running_mean", f"{tag}.running_var"])
                before, after = _unbiased_running_var(node, tag, graph) if unbiased_running_var else ([], [])
                graph.node.extend([*before, node, *after])
            else:
                graph.node.extend(_affine_batchnorm(node, tag, types, graph))
            continue
        graph.node.append(node)
    if need_true:
        graph.initializer.append(helper.make_tensor(f"{PREFIX}.training_mode", TensorProto.BOOL, [], [True]))
    if batch_statistics and opset(model) == 13:  # training_mode came with BatchNormalization-14; every op that
        for entry in form.opset_import:  # changed from 13 to 14 kept its meaning (new attributes default to it)
            if entry.domain in ("", "ai.onnx"):
                entry.version = 14
    # the model's own value shapes (named dims such as 'seq' that inference alone may lose: then the
    # gradient of a broadcast cannot tell two dims apart before run time)
    made = {name for node in graph.node for name in node.output}
    graph.value_info.extend(v for v in model.graph.value_info if v.name in made)
    return form


def buffer_updates(form: onnx.ModelProto) -> dict[str, str]:
    """Buffer name -> the training-form value holding its update (BatchNorm in training mode)."""
    updates = {}
    makers = producers(form.graph.node)
    for node in form.graph.node:
        if node.op_type == "BatchNormalization" and len(node.output) == 3:
            updates[node.input[3]] = node.output[1]
            if node.input[4] in makers:  # the buffer, read through `_unbiased_running_var`'s Max
                updates[makers[node.input[4]].input[0]] = node.output[2] + _UNBIASED
            else:
                updates[node.input[4]] = node.output[2]
    return updates


_UNBIASED = ".unbiased"


def _unbiased_running_var(node: onnx.NodeProto, tag: str,
                          graph: onnx.GraphProto) -> tuple[list[onnx.NodeProto], list[onnx.NodeProto]]:
    """The nodes to run before and after training-mode BatchNorm `node` (whose variance input it changes) to
    update the running variance as PyTorch does, from the batch's unbiased variance (ONNX's uses the population
    variance): r' = r + (r - momentum var) / (n - 1), with r its running_var output, var the old one and n the
    values per channel (at batch 8 of BatchNorm1d, 12.5% apart).

    onnxruntime's kernel writes r over its variance input (an alias), so momentum var is computed first, and
    BatchNorm reads var through Max(var, momentum var), equal to var, which only then can run."""
    x, var, r = node.input[0], node.input[4], node.output[2]
    momentum = next((a.f for a in node.attribute if a.name == "momentum"), 0.9)
    graph.initializer.extend([helper.make_tensor(f"{tag}.momentum", TensorProto.FLOAT, [], [momentum]),
                              helper.make_tensor(f"{tag}.one", TensorProto.FLOAT, [], [1.0]),
                              helper.make_tensor(f"{tag}.channel_axis", TensorProto.INT64, [], [1])])
    nodes: list[onnx.NodeProto] = []

    def step(op: str, inputs: list[str], out: str, **attrs: Any) -> str:
        nodes.append(helper.make_node(op, inputs, [f"{tag}.{out}"], name=f"{tag}/{out}", **attrs))
        return f"{tag}.{out}"

    shape, one = step("Shape", [x], "shape"), f"{tag}.one"
    count = step("ReduceProd", [shape], "count", keepdims=0)
    n = step("Cast", [step("Div", [count, step("Gather", [shape, f"{tag}.channel_axis"], "channels")], "per_channel")],
             "n", to=TensorProto.FLOAT)
    divisor = step("Max", [step("Sub", [n, one], "n_less_one"), one], "divisor")
    kept = step("Mul", [var, f"{tag}.momentum"], "kept")
    node.input[4] = step("Max", [var, kept], "var")
    before, nodes = nodes, []
    step("Add", [r, step("Div", [step("Sub", [r, kept], "added"), divisor], "extra")], f"running_var{_UNBIASED}")
    return before, nodes


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
