"""Tracing: symbolic tensors and the graph that records the ONNX nodes made from them.

Every op call appends one `NodeProto` and runs ONNX's own shape inference for
that node at once, so a shape or dtype mistake fails at the line that made it,
with the layer path (`encoder.layers.3.attn`) in the message. Edges are
`Tensor` objects; their names exist only for serialisation.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, shape_inference

from onnxkit.errors import OnnxkitError

Dim = int | str  # a fixed size, or a symbolic name such as "batch"

_current: contextvars.ContextVar[Graph | None] = contextvars.ContextVar("onnxkit_graph", default=None)


def current_graph() -> Graph:
    """The graph being traced; ops called outside `build()` are an error."""
    graph = _current.get()
    if graph is None:
        raise OnnxkitError(
            "tensor ops run only while tracing: call them inside a Module's forward, under nn.build()"
        )
    return graph


class Tensor:
    """A symbolic tensor: an edge of the graph with a dtype and a (possibly symbolic) shape."""

    __slots__ = ("name", "dtype", "shape")
    __array_priority__ = 1000  # numpy scalars defer to Tensor's operators

    def __init__(self, name: str, dtype: np.dtype, shape: tuple[Dim, ...]):
        self.name = name
        self.dtype = np.dtype(dtype)
        self.shape = shape

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __repr__(self) -> str:
        dims = ", ".join(str(d) for d in self.shape)
        return f"Tensor({self.name!r}, {self.dtype.name}[{dims}])"

    # Operators and methods (reshape, transpose, ...) are attached in ops.py.


def type_proto(dtype: np.dtype, shape: Sequence[Dim]) -> onnx.TypeProto:
    return helper.make_tensor_type_proto(helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), list(shape))


def _dims_of(tp: onnx.TypeProto) -> tuple[Dim | None, ...]:
    return tuple(
        d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
        for d in tp.tensor_type.shape.dim
    )


class Graph:
    """Records nodes, constants and parameters while a module is traced."""

    def __init__(self, opset: int):
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.inputs: list[Tensor] = []
        self.params: dict[int, tuple[Any, Tensor]] = {}  # id(Parameter) -> (param, tensor)
        self.constants: dict[str, onnx.TensorProto] = {}  # values shape inference may need
        self.values: dict[str, Tensor] = {}
        self.dropout: dict[str, float] = {}  # Dropout node name -> training ratio
        self.numpy_calls: list[tuple[str, str, int]] = []  # (layer, file, line) of a layer called on a numpy array
        self._scope: list[tuple[str, str, str]] = []  # (layer path, layer description, layer type)
        self._used: dict[str, int] = {}

    # -- naming -------------------------------------------------------------------
    @property
    def scope(self) -> str:
        return self._scope[-1][0] if self._scope else ""

    @property
    def where(self) -> str:
        """The layer being traced, for messages: its path (`encoder.0.1`), or `model` for the root;
        a child of a root list is named by type, `Sequential[3] (Linear)`, not a bare `3`."""
        path = self.scope
        index, _, rest = path.partition(".")
        if not index.isdigit():
            return path or "model"
        root, leaf = self._scope[0][2], self._scope[-1][2]
        return f"{root}[{index}]{'.' + rest if rest else ''} ({leaf})"

    @contextlib.contextmanager
    def scoped(self, path: str, doc: str = "", kind: str = "") -> Iterator[None]:
        """Name the nodes made inside after layer `path` of type `kind`; `doc` becomes their doc_string."""
        self._scope.append((path, doc, kind))
        try:
            yield
        finally:
            self._scope.pop()

    def unique(self, base: str) -> str:
        n = self._used.get(base, 0)
        self._used[base] = n + 1
        return base if n == 0 else f"{base}_{n}"

    # -- values -------------------------------------------------------------------
    def _tensor(self, name: str, dtype: np.dtype, shape: Sequence[Dim]) -> Tensor:
        t = Tensor(name, dtype, tuple(shape))
        self.values[name] = t
        return t

    def input(self, name: str, dtype: np.dtype, shape: Sequence[Dim]) -> Tensor:
        if name in self.values:
            raise OnnxkitError(f"input name {name!r} is used twice; give each input its own name")
        self._used[name] = 1
        t = self._tensor(name, dtype, shape)
        self.inputs.append(t)
        return t

    def param(self, p: Any) -> Tensor:
        """The tensor for a Parameter or Buffer (one initializer however often it is used)."""
        entry = self.params.get(id(p))
        if entry is None:
            if not p.name:
                layer = self._scope[-1][1] if self._scope else ""
                raise OnnxkitError(
                    f"a Parameter{list(p.shape)}{f' of {layer}' if layer else ''}, used in forward, is not an "
                    "attribute of any module; assign the layer (or the Parameter) to an attribute in __init__ "
                    "(self.fc = nn.Linear(...)), and keep layers in nn.ModuleList or nn.Sequential, not a plain "
                    "list or dict, so it gets a name"
                )
            if p.name in self.values:
                raise OnnxkitError(f"parameter name {p.name!r} clashes with another value")
            self._used[p.name] = 1
            entry = (p, self._tensor(p.name, p.value.dtype, p.value.shape))
            self.params[id(p)] = entry
        return entry[1]

    def constant(self, value: Any, dtype: Any = None) -> Tensor:
        """A Constant node holding `value` (never an initializer, so never trainable)."""
        array = np.asarray(value, dtype=dtype)
        (out,) = self.op("Constant", [], {"value": numpy_helper.from_array(array)}, _const=array)
        return out

    # -- nodes --------------------------------------------------------------------
    def op(
        self,
        op_type: str,
        inputs: Sequence[Tensor | None],
        attrs: dict[str, Any] | None = None,
        *,
        outputs: int = 1,
        shapes: Sequence[Sequence[Dim | None]] | None = None,
        domain: str = "",
        doc: str = "",
        _const: np.ndarray | None = None,
    ) -> tuple[Tensor, ...]:
        """Append one node and return its outputs, typed and shaped by ONNX shape inference.

        `shapes` fills in dims (or the rank) that ONNX inference leaves unknown (e.g. a
        Slice whose end is computed at run time); with it, an output ONNX cannot type at
        all takes the first input's dtype. A missing optional input is `None`.
        """
        scope = self.scope
        node_name = self.unique(f"{scope}/{op_type}" if scope else op_type)
        out_names = [self.unique(f"{node_name}_output_{i}") for i in range(outputs)]
        in_names = ["" if t is None else t.name for t in inputs]
        node = helper.make_node(
            op_type, in_names, out_names, name=node_name, domain=domain, **(attrs or {})
        )
        doc = doc or (self._scope[-1][1] if self._scope else "")
        if doc:
            node.doc_string = doc
        if _const is not None:
            types = [type_proto(_const.dtype, _const.shape)]
            self.constants[out_names[0]] = node.attribute[0].t
        else:
            types = self._infer(node, inputs, domain, typed_by_hint=shapes is not None)
        results = []
        for i, (name, tp) in enumerate(zip(out_names, types, strict=True)):
            hint = shapes[i] if shapes else None
            known_rank = tp.tensor_type.HasField("shape")
            dims = list(_dims_of(tp)) if known_rank or not hint else [None] * len(hint)
            for j, d in enumerate(dims):
                if d is None:
                    d = hint[j] if hint and len(hint) == len(dims) else None
                    dims[j] = d if d is not None else self.unique(f"{node_name}_dim")
            dtype = helper.tensor_dtype_to_np_dtype(tp.tensor_type.elem_type)
            results.append(self._tensor(name, dtype, dims))
        self.nodes.append(node)
        return tuple(results)

    def mark(self, tensor: Tensor, key: str, value: str) -> None:
        """Note `key` = `value` in the metadata of the node that made `tensor` (read by training)."""
        node = next(n for n in reversed(self.nodes) if tensor.name in n.output)
        node.metadata_props.add(key=key, value=value)

    def _infer(
        self, node: onnx.NodeProto, inputs: Sequence[Tensor | None], domain: str, typed_by_hint: bool = False
    ) -> list[onnx.TypeProto]:
        where = self.where
        try:
            schema = onnx.defs.get_schema(node.op_type, self.opset, domain)
        except onnx.defs.SchemaError:
            raise OnnxkitError(f"{where}: {node.op_type} {_since(node.op_type, domain)}; build with that opset or "
                               f"later (this one is {self.opset})") from None
        unknown = sorted({a.name for a in node.attribute} - set(schema.attributes))
        if unknown:
            raise OnnxkitError(f"{where}: {node.op_type}'s attribute {unknown[0]!r} "
                               f"{_since(node.op_type, domain, unknown[0])}; build with that opset or later "
                               f"(this one is {self.opset})")
        in_types = {t.name: type_proto(t.dtype, t.shape) for t in inputs if t is not None}
        data = {t.name: self.constants[t.name] for t in inputs if t is not None and t.name in self.constants}
        try:
            inferred = shape_inference.infer_node_outputs(schema, node, in_types, data)
        except (shape_inference.InferenceError, onnx.checker.ValidationError) as e:
            shapes = ", ".join(_describe(t) for t in inputs if t is not None)
            reason = str(e).split("] ", 1)[-1]
            raise OnnxkitError(f"{where}: {node.op_type}({shapes}): {reason}") from None
        if typed_by_hint and inputs and inputs[0] is not None:
            # a schema without inference (GroupNormalization in onnx 1.17): the first input's dtype, hinted shapes
            elem = helper.np_dtype_to_tensor_dtype(inputs[0].dtype)
            inferred = {o: inferred[o] if o in inferred else helper.make_tensor_type_proto(elem, None)
                        for o in node.output}
        missing = [o for o in node.output if o not in inferred]
        if missing:
            raise OnnxkitError(f"{where}: {node.op_type}: could not infer the type of {missing[0]}")
        negative = next((list(_dims_of(inferred[o])) for o in node.output if any(
            isinstance(d, int) and d < 0 for d in _dims_of(inferred[o]))), None)
        if negative is not None:  # ONNX's inference passes these; ONNX Runtime refuses the model when it runs
            shapes = ", ".join(_describe(t) for t in inputs if t is not None)
            raise OnnxkitError(f"{where}: {node.op_type}({shapes}): its output would be {negative}; check the "
                               "layer's sizes (padding, kernel, stride)")
        return [inferred[o] for o in node.output]


def _describe(t: Tensor) -> str:
    return f"{t.dtype.name}[{', '.join(str(d) for d in t.shape)}]"


@contextlib.contextmanager
def tracing(graph: Graph) -> Iterator[Graph]:
    token = _current.set(graph)
    try:
        yield graph
    finally:
        _current.reset(token)


__all__ = ["Dim", "Graph", "Tensor", "TensorProto", "current_graph", "tracing", "type_proto"]


def _since(op_type: str, domain: str, attribute: str | None = None) -> str:
    """'needs opset N': the first opset whose schema of `op_type` has `attribute` (or exists at all)."""
    for version in range(1, onnx.defs.onnx_opset_version() + 1):
        try:
            schema = onnx.defs.get_schema(op_type, version, domain)
        except onnx.defs.SchemaError:
            continue
        if attribute is None or attribute in schema.attributes:
            return f"needs opset {max(version, schema.since_version)}"
    return "is not in this onnx"
