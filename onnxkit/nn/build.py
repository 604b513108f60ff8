"""`build()`: trace a module on symbolic inputs and return a checked ONNX model."""

from __future__ import annotations

import inspect
import json
import numbers
import os
import re
import traceback
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import helper

from onnxkit import __version__
from onnxkit.errors import OnnxkitError, first_few, suggest
from onnxkit.graph_walks import node_reads, producers
from onnxkit.metadata_keys import BUFFERS_KEY, DROPOUT_KEY, VERSION_KEY
from onnxkit.nn.graph import Dim, Graph, Tensor, tracing, type_proto
from onnxkit.nn.module import Module

IR_VERSION = 10  # the newest ONNX Runtime 1.19.2 loads
DEFAULT_OPSET = 17
MAX_OPSET = 21


# PyTorch's keyword names and the ops' ONNX ones for them (dim= to mean() was 'Did you mean: keepdims?')
_TORCH_KEYWORDS = {"dim": ("axis", "axes"), "keepdim": ("keepdims",), "start_dim": ("axis",)}
# Python's own message, as raised: a hint already added leaves it unmatched, so none is added twice
_UNEXPECTED_KEYWORD = re.compile(r"(?P<callable>[\w.]+)\(\) got an unexpected keyword argument '(?P<keyword>\w+)'$")


def unexpected_keyword_hint(e: TypeError) -> str:
    """' Did you mean: axis? (PyTorch's dim)' for Python's bare 'softmax() got an unexpected keyword argument
    'dim'' (an op or a Tensor method given PyTorch's name, or a misspelt keyword), the callable's own keywords
    found where it was called; '' for any other error."""
    unexpected = _UNEXPECTED_KEYWORD.match(str(e)) if e.__traceback__ else None
    if not unexpected:
        return ""
    from onnxkit import nn

    *_, (frame, _) = traceback.walk_tb(e.__traceback__)
    owner, _, method = unexpected["callable"].partition(".")
    found = (frame.f_locals.get(owner) or frame.f_globals.get(owner) or getattr(nn, owner, None)
             or getattr(nn.ops, owner, None))
    try:
        keywords = [k for k in inspect.signature(getattr(found, method) if method else found).parameters
                    if k != "self"]
    except (AttributeError, TypeError, ValueError):
        return ""
    ours = [k for k in _TORCH_KEYWORDS.get(unexpected["keyword"], ()) if k in keywords]
    return f" Did you mean: {ours[0]}? (PyTorch's {unexpected['keyword']})" if ours else \
        suggest(unexpected["keyword"], keywords)


@dataclass(frozen=True)
class Input:
    """A model input: its shape (ints, or names for symbolic dims) and dtype."""

    shape: Sequence[Dim]
    dtype: str = "float32"

    def __post_init__(self) -> None:
        """A list of dims (a string would be read as one dim per letter) and a dtype numpy knows."""
        dims = self.shape
        if isinstance(dims, str) or not isinstance(dims, Sequence) or not all(
            isinstance(d, str) or (isinstance(d, int | np.integer) and not isinstance(d, bool) and d >= 1) for d in dims
        ):
            raise TypeError(f"Input shape must be a list of dims, each a size >= 1 or a name such as 'batch' "
                            f"(e.g. ['batch', 64]), got {dims!r}")
        try:
            np.dtype(self.dtype)
        except TypeError:
            raise TypeError(f"Input dtype {self.dtype!r} is not a numpy dtype; use e.g. 'float32' or 'int64'") from None
        object.__setattr__(self, "shape", [d if isinstance(d, str) else int(d) for d in dims])  # numpy ints too


def build(
    module: Module,
    inputs: Mapping[str, Input],
    *,
    output_names: str | Sequence[str] | None = None,
    name: str | None = None,
    doc: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    opset: int = DEFAULT_OPSET,
    check: bool = True,
) -> onnx.ModelProto:
    """Trace `module(*inputs)` and return an ONNX model (IR 10).

    `inputs`: input name -> `Input(shape, dtype)`, passed to `forward` by name when each is named as one of its
    parameters, else in this order (inputs that forward cannot take are an OnnxkitError naming both).
    `forward` may return a tensor, a tuple, or a dict (its keys name the
    outputs); `output_names` names a tensor's or tuple's (one name, or a list; default: output_0, ...).
    `name` and `doc`: the graph's (default: the module's class name and docstring).
    Metadata values that are not strings are stored as JSON. `opset`: 13 to 21.
    `check`: run the full ONNX checker on the result.
    """
    if not isinstance(module, Module):
        hint = f": an instance such as {module.__name__}()" if isinstance(module, type) else ""
        raise TypeError(f"build takes a Module{hint}, not {module!r}")
    if not isinstance(inputs, Mapping) or not all(isinstance(v, Input) for v in inputs.values()):
        raise TypeError("inputs must be a dict of input name -> nn.Input(shape, dtype), such as "
                        "{'x': nn.Input(['batch', 64])}, named as forward's parameters (else in their order)")
    if isinstance(opset, bool) or not isinstance(opset, numbers.Integral):
        raise TypeError(f"opset must be an integer, 13..{MAX_OPSET}, not {opset!r}")
    if not 13 <= opset <= MAX_OPSET:
        raise OnnxkitError(f"opset {opset} is not supported; use 13..{MAX_OPSET} (default {DEFAULT_OPSET})")
    output_names = [output_names] if isinstance(output_names, str) else output_names  # not its letters
    named = _named_in_forward(module, inputs)
    _check_forward_takes(module, inputs, named)
    module.assign_names()
    graph = Graph(opset)
    with tracing(graph):
        args = {n: graph.input(n, np.dtype(spec.dtype), spec.shape) for n, spec in inputs.items()}
        try:
            result = module(**args) if named else module(*args.values())
        except TypeError as e:  # x.mean(dim=1) in forward: Python's bare message, given the keyword meant
            hint = unexpected_keyword_hint(e)
            if hint:
                e.args = (f"{e}.{hint}",)
            raise
    outputs = _name_outputs(graph, result, output_names, _forward_of(module))
    called = set(graph.params)
    computed_with = {name for node in graph.nodes for name in node.input}
    _leave_out_dead_nodes(graph, outputs)
    _warn_of_unused_layers(module, graph, called)
    read = {name for node in graph.nodes for name in node.input}
    unused = [t.name for t in graph.inputs if t.name not in read]
    if unused and unused[0] in computed_with:
        raise OnnxkitError(f"input {unused[0]!r} feeds no output: forward computes with it but returns nothing that "
                           "depends on it; return what it computes, or leave the input out")
    if unused and graph.numpy_calls:  # the likely cause, at its line (the message named no line of the user's)
        layer, file, line = graph.numpy_calls[0]
        where = os.path.relpath(file) if os.path.abspath(file).startswith(os.getcwd() + os.sep) else file
        raise OnnxkitError(f"{where}:{line}: {layer} is called on a numpy array, a constant, so input {unused[0]!r} "
                           "feeds nothing; call it on the tensors forward receives")
    if unused:
        raise OnnxkitError(f"input {unused[0]!r} feeds nothing: forward never computes with it (a numpy array given "
                           "to a layer is a constant, not the input); compute with the tensors forward receives")

    params = [t for _, t in graph.params.values()]
    boundary = {t.name for t in (*graph.inputs, *outputs, *params)}
    vi = lambda t: helper.make_value_info(t.name, type_proto(t.dtype, t.shape))  # noqa: E731
    model = helper.make_model(
        helper.make_graph(
            graph.nodes,
            name or type(module).__name__,
            [vi(t) for t in (*graph.inputs, *params)],  # weights enter as typed inputs for the check
            [vi(t) for t in outputs],
            doc_string=doc or (type(module).__doc__ or "").strip(),
            value_info=[vi(t) for t in graph.values.values() if t.name not in boundary],
        ),
        ir_version=IR_VERSION,
        opset_imports=[helper.make_opsetid("", opset)],
        producer_name="onnxkit",
        producer_version=__version__,
    )
    meta = {VERSION_KEY: __version__, **(metadata or {})}
    if graph.dropout:
        meta[DROPOUT_KEY] = graph.dropout
    buffers = [t.name for p, t in graph.params.values() if not p.trainable]
    if buffers:
        meta[BUFFERS_KEY] = buffers
    helper.set_model_props(model, {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()})
    if check:  # on the weightless graph: the full checker would copy every weight twice
        try:
            onnx.checker.check_model(model, full_check=True)
        except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
            raise OnnxkitError(f"the built model is not valid ONNX: {e}") from e
    del model.graph.input[len(graph.inputs):]
    for p, t in graph.params.values():  # written straight into the model: one copy of each weight
        init = model.graph.initializer.add()
        init.name, init.data_type = t.name, helper.np_dtype_to_tensor_dtype(p.value.dtype)
        init.dims.extend(p.value.shape)
        init.raw_data = p.value.tobytes()
    return model


class UnusedLayers(UserWarning):
    """Layers a module made that its forward never called: their weights are not in the model."""


def _leave_out_dead_nodes(graph: Graph, outputs: Sequence[Tensor]) -> None:
    """Drop the nodes no output depends on (what forward computed and did not return: an LSTM's final states
    beside its output), with the weights only they read."""
    live = {t.name for t in outputs}
    kept = []
    for node in reversed(graph.nodes):
        if live.intersection(node.output):
            kept.append(node)
            live.update(node_reads(node))
    graph.nodes[:] = kept[::-1]
    names = {node.name for node in kept}
    graph.dropout = {name: p for name, p in graph.dropout.items() if name in names}
    graph.params = {key: (p, t) for key, (p, t) in graph.params.items() if t.name in live}
    known = {name for node in kept for name in node.output} | {t.name for t in graph.inputs} | \
        {t.name for _, t in graph.params.values()}
    graph.values = {name: t for name, t in graph.values.items() if name in known}


def _warn_of_unused_layers(module: Module, graph: Graph, called: set[int]) -> None:
    """An `UnusedLayers` warning naming the layers whose weights no node reads: a layer defined in __init__ and
    left out of forward, or one whose result forward drops (`called`: the weights forward read; a dropped
    BatchNorm's statistics then stay as they are). Their weights vanished without a word; PyTorch's exporters drop
    them too."""
    unused = [(name, p) for name, p in module.named_arrays() if id(p) not in graph.params]
    for dropped, what in ((False, "that forward never calls"), (True, "whose results forward drops")):
        these = [(name, p) for name, p in unused if (id(p) in called) == dropped]
        if these:
            layers = list(dict.fromkeys(name.rpartition(".")[0] or name for name, _ in these))
            weights = sum(p.value.size for _, p in these)
            warnings.warn(f"layers {what} are left out of the model: {first_few(layers)} ({weights:,} weights)",
                          UnusedLayers, stacklevel=3)


def _named_in_forward(module: Module, inputs: Mapping[str, Any]) -> bool:
    """Whether every input is named as one of `forward`'s parameters, so it is passed by that name: by position,
    {"attention_mask": ..., "input_ids": ...} fed the mask to forward(self, input_ids, attention_mask)."""
    try:
        parameters = inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return False
    return all(name in parameters and parameters[name].kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                                 inspect.Parameter.KEYWORD_ONLY) for name in inputs)


def _check_forward_takes(module: Module, inputs: Mapping[str, Any], named: bool) -> None:
    """Refuse inputs that `forward` cannot take (Python's own 'forward() takes 2 positional arguments but 3 were
    given' named neither the inputs nor its parameters)."""
    try:
        signature = inspect.signature(module.forward)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(**inputs) if named else signature.bind(*inputs)
    except TypeError:
        params = ", ".join(signature.parameters)
        raise OnnxkitError(f"{_forward_of(module)} takes ({params}), which the {len(inputs)} input(s) given "
                        f"({', '.join(inputs)}) do not fit; give an nn.Input for each of its parameters, "
                        "named as they are") from None


def _forward_of(module: Module) -> str:
    """'MLP.forward (net.py:12)': where the module's forward is, for an error about what it returned."""
    forward = type(module).forward
    try:
        place = f" ({os.path.basename(inspect.getsourcefile(forward) or '?')}:{inspect.getsourcelines(forward)[1]})"
    except (OSError, TypeError):
        place = ""
    return f"{type(module).__name__}.forward{place}"


def _name_outputs(graph: Graph, result: Any, names: Sequence[str] | None, forward: str) -> list[Tensor]:
    """Rename the result tensors to the requested output names (Identity if one is an input)."""
    if isinstance(result, Mapping):
        names, tensors = list(result), list(result.values())
    else:
        tensors = list(result) if isinstance(result, tuple | list) else [result]
        names = list(names) if names else [f"output_{i}" for i in range(len(tensors))]
    wrong = [t for t in tensors if not isinstance(t, Tensor)]
    if wrong or not tensors:
        got = "nothing" if not tensors else "None" if wrong[0] is None else f"{type(wrong[0]).__name__} {wrong[0]!r}"
        raise OnnxkitError(f"{forward} must return Tensors (or a tuple/dict of them), got {got[:80]}")
    if len(names) != len(tensors):
        raise OnnxkitError(f"{forward} returns {len(tensors)} outputs, and {len(names)} output names are given "
                           f"({', '.join(map(str, names))}); name each: Recipe(outputs=[...]), "
                           "build(output_names=[...])")
    taken = {t.name for t in graph.inputs} | {t.name for _, t in graph.params.values()}
    clash = next((n for n in names if n in taken), None)
    if clash is not None:
        raise OnnxkitError(f"output name {clash!r} is already an input's or a weight's name; choose another")
    producer = producers(graph.nodes)
    renamed: dict[str, str] = {}
    outputs = []
    for new, t in zip(names, tensors, strict=True):
        if t.name not in producer or t.name in renamed or new in graph.values:
            (t,) = graph.op("Identity", [t])  # an input, initializer or repeated output
        renamed[t.name] = new
        t.name = new
        outputs.append(t)
    for node in graph.nodes:
        for field in (node.input, node.output):
            for i, n in enumerate(field):
                if n in renamed:
                    field[i] = renamed[n]
    graph.values = {t.name: t for t in graph.values.values()}
    return outputs
