"""Recurrent ops (LSTM, GRU, RNN) differentiated through their unrolled form.

On the gradient path, an LSTM, GRU or RNN node is replaced in the training graph by the same
computation written out step by step in standard ops: one MatMul projects every step's input,
then each step multiplies the hidden state by R and does the gate arithmetic. The ordinary
rules then differentiate it (backpropagation through time). The sequence length must be
fixed in the graph. Covered: ONNX's default activations (and RNN's Relu or Sigmoid: PyTorch's
`nn.RNN(nonlinearity="relu")`), forward / reverse / bidirectional, both layouts, biases and initial
states, GRU's `linear_before_reset` either way; refused by name: `sequence_lens`, peepholes, `clip`,
other activations, LSTM's `input_forget`. The
inference graph keeps the node and ONNX Runtime's kernel for it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxkit.dims import fixed_size

RECURRENT = frozenset({"LSTM", "GRU", "RNN"})
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
DEFAULT_ACTIVATIONS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"], "RNN": ["Tanh"]}
RNN_ACTIVATIONS = ("Tanh", "Relu", "Sigmoid")  # an RNN's one activation, each a plain op with a rule
UNFIXED_LENGTH = "over a sequence length the graph does not fix"


def unsupported(node: onnx.NodeProto, types: dict[str, onnx.ValueInfoProto]) -> str | None:
    """Why `node` (LSTM or GRU) cannot be unrolled, or None."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    inputs = list(node.input) + [""] * 8
    activations = [a.decode() if isinstance(a, bytes) else a for a in attrs.get("activations", [])]
    directions = 2 if attrs.get("direction", b"forward") in (b"bidirectional", "bidirectional") else 1
    if inputs[4]:
        return "with sequence_lens (sequences of different lengths)"
    if node.op_type == "LSTM" and inputs[7]:
        return "with peepholes"
    if "clip" in attrs:
        return "with clip"
    if attrs.get("input_forget", 0):
        return "with input_forget"
    if node.op_type == "RNN" and len(activations) in (1, directions) and set(activations) <= set(RNN_ACTIVATIONS):
        pass
    elif activations and activations != DEFAULT_ACTIVATIONS[node.op_type] * directions:
        return f"with activations {activations}"
    if _steps(node, types) is None:
        return UNFIXED_LENGTH
    return None


def _steps(node: onnx.NodeProto, types: dict[str, onnx.ValueInfoProto]) -> int | None:
    """The static sequence length of `node`'s input, or None."""
    typed = types.get(node.input[0])
    if typed is None or not typed.type.tensor_type.HasField("shape"):
        return None
    layout = next((a.i for a in node.attribute if a.name == "layout"), 0)
    dims = typed.type.tensor_type.shape.dim
    length = dims[1 if layout else 0] if len(dims) == 3 else None
    return None if length is None else fixed_size(length)


def unroll(model: onnx.ModelProto, positions: list[int], types: dict[str, onnx.ValueInfoProto]) -> None:
    """Replace the LSTM / GRU / RNN nodes at `positions` of `model`'s graph by their unrolled form, in place."""
    graph = model.graph
    for k in sorted(positions, reverse=True):
        node = graph.node[k]
        writer = _Unrolled(node, types, graph)
        del graph.node[k]
        for offset, new in enumerate(writer.nodes):
            graph.node.insert(k + offset, new)


class _Unrolled:
    """The nodes (and int64 initializers) computing one recurrent node's outputs step by step."""

    def __init__(self, node: onnx.NodeProto, types: dict[str, onnx.ValueInfoProto], graph: onnx.GraphProto) -> None:
        self.graph, self.nodes = graph, []
        self.tag = node.name or node.output[0]
        self._count = 0
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        self.hidden = int(attrs["hidden_size"])
        direction = attrs.get("direction", b"forward")
        direction = direction.decode() if isinstance(direction, bytes) else direction
        self.lstm, self.gru, self.gates = node.op_type == "LSTM", node.op_type == "GRU", GATES[node.op_type]
        activations = [a.decode() if isinstance(a, bytes) else a for a in attrs.get("activations", [])] or ["Tanh"]
        self.linear_before_reset = bool(attrs.get("linear_before_reset", 0))
        self.dtype = types[node.input[0]].type.tensor_type.elem_type
        steps, layout = _steps(node, types), attrs.get("layout", 0)
        inputs = list(node.input) + [""] * 8
        if layout:  # batch first: x [batch, steps, in] and the states [batch, directions, hidden]
            inputs[0] = self.op("Transpose", inputs[0], perm=[1, 0, 2])
            inputs[5:7] = [self.op("Transpose", i, perm=[1, 0, 2]) if i else "" for i in inputs[5:7]]
        x = inputs[0]  # [steps, batch, in]
        reverse = {"forward": [False], "reverse": [True], "bidirectional": [False, True]}[direction]
        per_direction = {i: self._directions(inputs[i], len(reverse)) for i in (1, 2, 3, 5, 6) if inputs[i]}
        ys, hs, cs = [], [], []
        for d, backwards in enumerate(reverse):
            self.activation = activations[d % len(activations)]  # an RNN's, per direction
            y, h, c = self._direction(x, steps, backwards, {i: v[d] for i, v in per_direction.items()})
            ys.append(self.op("Unsqueeze", y, self.ints([1])))
            hs.append(self.op("Unsqueeze", h, self.ints([0])))
            cs.append(self.op("Unsqueeze", c, self.ints([0])) if c else "")
        y, h = self._joined(ys, 1), self._joined(hs, 0)  # [steps, directions, batch, hidden], [directions, ...]
        if layout:
            y, h = self.op("Transpose", y, perm=[2, 0, 1, 3]), self.op("Transpose", h, perm=[1, 0, 2])
        results = [y, h]
        if self.lstm:
            c = self._joined(cs, 0)
            results.append(self.op("Transpose", c, perm=[1, 0, 2]) if layout else c)
        for made, wanted in zip(results, node.output, strict=False):
            if wanted:
                self.nodes.append(helper.make_node("Identity", [made], [wanted], name=f"{self.tag}/unrolled/{wanted}"))

    def op(self, op_type: str, *inputs: str, outputs: int = 1, **attrs: Any) -> Any:
        self._count += 1
        names = [f"{self.tag}/unrolled/{op_type}.{self._count}.{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, name=names[0], **attrs))
        return names[0] if outputs == 1 else names

    def ints(self, values: list[int]) -> str:
        self._count += 1
        name = f"{self.tag}/unrolled/const.{self._count}"
        self.graph.initializer.append(numpy_helper.from_array(np.array(values, np.int64), name))
        return name

    def _joined(self, parts: list[str], axis: int) -> str:
        return parts[0] if len(parts) == 1 else self.op("Concat", *parts, axis=axis)

    def _directions(self, value: str, count: int) -> list[str]:
        """`value`'s slices along its leading (direction) axis, that axis dropped."""
        parts = [value] if count == 1 else self.op("Split", value, self.ints([1] * count), outputs=count, axis=0)
        return [self.op("Squeeze", p, self.ints([0])) for p in parts]

    def _gates(self, value: str) -> list[str]:
        """[batch, gates x hidden] split into one [batch, hidden] per gate."""
        return self.op("Split", value, self.ints([self.hidden] * self.gates), outputs=self.gates, axis=1)

    def _zeros(self, x: str) -> str:
        """Zeros [batch, hidden] in x's type, the batch read from x [steps, batch, in] at run time."""
        batch = self.op("Slice", self.op("Shape", x), self.ints([1]), self.ints([2]))
        shape = self.op("Concat", batch, self.ints([self.hidden]), axis=0)
        zero = helper.make_tensor("zero", self.dtype, [1], [0.0])
        return self.op("ConstantOfShape", shape, value=zero)

    def _direction(self, x: str, steps: int, backwards: bool, given: dict[int, str]) -> tuple[str, str, str]:
        """Outputs [steps, batch, hidden], the last hidden state and (LSTM) cell state of one direction."""
        gates = self.gates * self.hidden
        projected = self.op("MatMul", x, self.op("Transpose", given[1], perm=[1, 0]))  # [steps, batch, gates]
        bias_w = bias_r = None
        if 3 in given:
            bias_w, bias_r = self.op("Split", given[3], self.ints([gates, gates]), outputs=2, axis=0)
            projected = self.op("Add", projected, bias_w)
        parts = self.op("Split", projected, self.ints([1] * steps), outputs=steps, axis=0) if steps > 1 else [projected]
        inputs = [self.op("Squeeze", p, self.ints([0])) for p in parts]
        recurrence = self.op("Transpose", given[2], perm=[1, 0])  # [hidden, gates]
        if self.gru and not self.linear_before_reset:  # R and its bias apart: [z r] and [h]
            two = 2 * self.hidden
            recurrence = self.op("Split", recurrence, self.ints([two, self.hidden]), outputs=2, axis=1)
            bias_r = self.op("Split", bias_r, self.ints([two, self.hidden]), outputs=2, axis=0) if bias_r else None
        h = given.get(5) or self._zeros(x)
        c = (given.get(6) or self._zeros(x)) if self.lstm else ""
        outputs: dict[int, str] = {}
        for t in (reversed(range(steps)) if backwards else range(steps)):
            if self.lstm:
                h, c = self._lstm_step(inputs[t], h, c, recurrence, bias_r)
            elif self.gru:
                h = self._gru_step(inputs[t], h, recurrence, bias_r)
            else:  # RNN: h = f(x W^T + h R^T + Wb + Rb)
                total = self.op("Add", inputs[t], self.op("MatMul", h, recurrence))
                h = self.op(self.activation, self.op("Add", total, bias_r) if bias_r else total)
            outputs[t] = h
        y = self.op("Concat", *(self.op("Unsqueeze", outputs[t], self.ints([0])) for t in range(steps)), axis=0)
        return y, h, c

    def _lstm_step(self, xw: str, h: str, c: str, recurrence: str, bias_r: str | None) -> tuple[str, str]:
        gates = self.op("Add", xw, self.op("MatMul", h, recurrence))
        if bias_r:
            gates = self.op("Add", gates, bias_r)
        i, o, f, g = self._gates(gates)  # ONNX's order: input, output, forget, cell
        i, o, f, g = self.op("Sigmoid", i), self.op("Sigmoid", o), self.op("Sigmoid", f), self.op("Tanh", g)
        c = self.op("Add", self.op("Mul", f, c), self.op("Mul", i, g))
        return self.op("Mul", o, self.op("Tanh", c)), c

    def _gru_step(self, xw: str, h: str, recurrence: Any, bias_r: Any) -> str:
        """One step; without linear_before_reset, `recurrence` and `bias_r` come split as ([z r], [h])."""
        xz, xr, xh = self._gates(xw)  # ONNX's order: update, reset, hidden
        if self.linear_before_reset:
            hr = self.op("MatMul", h, recurrence)
            if bias_r:
                hr = self.op("Add", hr, bias_r)
            rz, rr, rh = self._gates(hr)
            z, r = self.op("Sigmoid", self.op("Add", xz, rz)), self.op("Sigmoid", self.op("Add", xr, rr))
            candidate = self.op("Tanh", self.op("Add", xh, self.op("Mul", r, rh)))
        else:
            (r_zr, r_h), (b_zr, b_h) = recurrence, bias_r or (None, None)
            hr = self.op("MatMul", h, r_zr)
            if b_zr:
                hr = self.op("Add", hr, b_zr)
            rz, rr = self.op("Split", hr, self.ints([self.hidden, self.hidden]), outputs=2, axis=1)
            z, r = self.op("Sigmoid", self.op("Add", xz, rz)), self.op("Sigmoid", self.op("Add", xr, rr))
            reset = self.op("MatMul", self.op("Mul", r, h), r_h)
            candidate = self.op("Tanh", self.op("Add", xh, self.op("Add", reset, b_h) if b_h else reset))
        return self.op("Add", candidate, self.op("Mul", z, self.op("Sub", h, candidate)))  # (1-z) n + z h
