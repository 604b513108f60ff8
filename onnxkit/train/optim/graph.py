"""Optimizer update graphs: a tiny expression builder that specs write their math with, and
`update_model`, which turns a spec plus a parameter list into one ONNX model.

Graph contract (the training backends bind these names):

- inputs: `lr` (float32 []), `step` (int64 []: the 1-based number t of the step being taken),
  and per parameter `p` its value `p`, its gradient `p.grad` and each state slot `p.<slot>`;
- outputs: `p.updated` and `p.<slot>.updated`, with the parameter's shape (a dimension may be
  symbolic, so one graph steps a flat buffer whole or chunk by chunk).

Equal expressions share one node, so scalars that depend only on `lr` and `step` (bias
corrections, decayed learning rates, the clipping coefficient) are computed once for all
parameters; the per-parameter work is elementwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxkit.errors import OnnxkitError
from onnxkit.train.optim.spec import Optimizer

IR_VERSION = 10
OPSETS = range(13, 22)  # 21 is the newest onnxruntime-training 1.19.2 loads
FLOAT, DOUBLE, INT64, BOOL = TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.INT64, TensorProto.BOOL

Param = tuple[str, tuple[int | str, ...]]  # a dim may be symbolic: the graph then steps any length


class _Nodes:
    """The graph being built: nodes memoised by (op, inputs, attributes), constants by value."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._memo: dict[tuple, str] = {}

    def op(self, op_type: str, inputs: Sequence[str], **attrs: Any) -> str:
        key = (op_type, tuple(inputs), tuple(sorted(attrs.items())))
        if key not in self._memo:
            name = f"optim/{op_type}.{len(self.nodes)}"
            self.nodes.append(helper.make_node(op_type, list(inputs), [name], name=name, **attrs))
            self._memo[key] = name
        return self._memo[key]

    def const(self, value: float, dtype: int) -> str:
        key = ("const", dtype, value)
        if key not in self._memo:
            name = f"optim/const.{len(self.initializers)}"
            array = np.asarray(value, dtype=helper.tensor_dtype_to_np_dtype(dtype))
            self.initializers.append(numpy_helper.from_array(array, name))
            self._memo[key] = name
        return self._memo[key]


class Expr:
    """A tensor of the update graph; arithmetic with other Exprs and Python numbers appends nodes."""

    __slots__ = ("nodes", "name", "dtype")

    def __init__(self, nodes: _Nodes, name: str, dtype: int = FLOAT) -> None:
        self.nodes, self.name, self.dtype = nodes, name, dtype

    def _lift(self, x: Expr | float) -> Expr:
        return x if isinstance(x, Expr) else Expr(self.nodes, self.nodes.const(x, self.dtype), self.dtype)

    def _op(self, op_type: str, *others: Expr | float, dtype: int | None = None, **attrs: Any) -> Expr:
        names = [self.name, *(self._lift(o).name for o in others)]
        return Expr(self.nodes, self.nodes.op(op_type, names, **attrs), self.dtype if dtype is None else dtype)

    def __add__(self, o: Expr | float) -> Expr:
        return self._op("Add", o)

    def __radd__(self, o: float) -> Expr:
        return self._lift(o)._op("Add", self)

    def __sub__(self, o: Expr | float) -> Expr:
        return self._op("Sub", o)

    def __rsub__(self, o: float) -> Expr:
        return self._lift(o)._op("Sub", self)

    def __mul__(self, o: Expr | float) -> Expr:
        return self._op("Mul", o)

    def __rmul__(self, o: float) -> Expr:
        return self._lift(o)._op("Mul", self)

    def __truediv__(self, o: Expr | float) -> Expr:
        return self._op("Div", o)

    def __rtruediv__(self, o: float) -> Expr:
        return self._lift(o)._op("Div", self)

    def __rpow__(self, base: float) -> Expr:
        return self._lift(base)._op("Pow", self)

    def sqrt(self) -> Expr:
        return self._op("Sqrt")

    def maximum(self, o: Expr | float) -> Expr:
        return self._op("Max", o)

    def minimum(self, o: Expr | float) -> Expr:
        return self._op("Min", o)

    def cast(self, dtype: int) -> Expr:
        return self._op("Cast", to=dtype, dtype=dtype)


class Step:
    """The scalars of the step being taken, shared by every parameter's update."""

    def __init__(self, lr: Expr, number: Expr) -> None:
        self.lr = lr
        self._number = number

    @property
    def t(self) -> Expr:
        """The 1-based step number as float32."""
        return self._number.cast(FLOAT)

    def bias_correction(self, beta: float) -> Expr:
        """1 - beta**t, computed in float64 (in float32, 1 - 0.999**t loses 4 digits at t=1)."""
        return (1.0 - beta ** self._number.cast(DOUBLE)).cast(FLOAT)

    def if_first(self, first: float, later: float) -> Expr:
        """`first` on step 1, `later` on every step after it."""
        is_first = self._number._op("Equal", 1, dtype=BOOL)
        return is_first._op("Where", self.lr._lift(first), self.lr._lift(later), dtype=FLOAT)


def clip_by_global_norm(grads: list[Expr], max_norm: float) -> list[Expr]:
    """torch.nn.utils.clip_grad_norm_: scale all gradients by min(1, max_norm / (global L2 norm + 1e-6))."""
    squares = [g._op("ReduceSumSquare", keepdims=0) for g in grads]
    norm = squares[0]._op("Sum", *squares[1:]).sqrt()
    coef = (max_norm / (norm + 1e-6)).minimum(1.0)
    return [g * coef for g in grads]


def state_names(spec: Optimizer, param: str) -> list[str]:
    """Names of the state inputs of `param` (e.g. `fc.weight.exp_avg`), in graph order."""
    return [f"{param}.{slot}" for slot in spec.slots()]


def initial_state(spec: Optimizer, param: str, value: np.ndarray) -> dict[str, np.ndarray]:
    """The state of `param` before its first step (float32, the parameter's shape), by input name."""
    return {f"{param}.{slot}": np.full(np.shape(value), init, np.float32) for slot, init in spec.slots().items()}


def update_model(
    spec: Optimizer, params: Sequence[Param], *, clip_grad_norm: float | None = None, opset: int = 17
) -> onnx.ModelProto:
    """One ONNX model that takes one optimizer step for all `params` ((name, shape) pairs), see the module doc."""
    _check(params, clip_grad_norm, opset)
    nodes = _Nodes()
    step = Step(Expr(nodes, "lr"), Expr(nodes, "step", INT64))
    inputs = [helper.make_tensor_value_info("lr", FLOAT, []), helper.make_tensor_value_info("step", INT64, [])]
    outputs: list[tuple[str, Expr, tuple[int | str, ...]]] = []
    grads = [Expr(nodes, f"{name}.grad") for name, _ in params]
    if clip_grad_norm is not None:
        grads = clip_by_global_norm(grads, clip_grad_norm)
    for (name, shape), grad in zip(params, grads, strict=True):
        names = [name, f"{name}.grad", *state_names(spec, name)]
        inputs += [helper.make_tensor_value_info(n, FLOAT, shape) for n in names]
        state = SimpleNamespace(**{slot: Expr(nodes, f"{name}.{slot}") for slot in spec.slots()})
        outputs.append((f"{name}.updated", spec.update(Expr(nodes, name), grad, state, step), shape))
        outputs += [(f"{name}.{slot}.updated", getattr(state, slot), shape) for slot in spec.slots()]
    graph = _graph(nodes, inputs, outputs, f"{spec.name} step")
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=IR_VERSION, producer_name="onnxkit"
    )


def _check(params: Sequence[Param], clip_grad_norm: float | None, opset: int) -> None:
    if not params:
        raise OnnxkitError("no parameters to optimize: mark at least one parameter trainable")
    names = ["lr", "step"] + [n for name, _ in params for n in (name, f"{name}.grad")]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise OnnxkitError(f"parameter names clash with optimizer inputs: {', '.join(dup)}; rename the parameters")
    if clip_grad_norm is not None and not clip_grad_norm > 0:
        raise OnnxkitError(f"gradient clipping norm must be positive, got {clip_grad_norm}")
    if opset not in OPSETS:
        raise OnnxkitError(f"optimizer graphs support opset {OPSETS[0]}..{OPSETS[-1]}, got {opset}")


def _graph(
    nodes: _Nodes, inputs: list[onnx.ValueInfoProto], outputs: list[tuple[str, Expr, tuple[int | str, ...]]], name: str
) -> onnx.GraphProto:
    """Name each output after the node that makes it; an input passed through unchanged gets an Identity."""
    made = {node.output[0] for node in nodes.nodes}
    rename: dict[str, str] = {}
    for out, expr, _ in outputs:
        if expr.name in made and expr.name not in rename:
            rename[expr.name] = out
    identities = [
        helper.make_node("Identity", [rename.get(expr.name, expr.name)], [out])
        for out, expr, _ in outputs
        if rename.get(expr.name) != out
    ]
    for node in nodes.nodes:
        node.input[:] = [rename.get(n, n) for n in node.input]
        node.output[:] = [rename.get(n, n) for n in node.output]
    return helper.make_graph(
        nodes.nodes + identities,
        name,
        inputs,
        [helper.make_tensor_value_info(out, FLOAT, shape) for out, _, shape in outputs],
        nodes.initializers,
    )
