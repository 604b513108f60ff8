"""Recurrent layers: `LSTM` and `GRU`, as PyTorch's, each layer one ONNX LSTM or GRU node.

They take and return what PyTorch's do: `lstm(x, (h0, c0))` -> `output, (h_n, c_n)` and `gru(x, h0)` ->
`output, h_n`, with x `[seq, batch, input_size]` (`[batch, seq, input_size]` with `batch_first`), output
`[..., num_directions * hidden_size]` and the states `[num_layers * num_directions, batch, hidden_size]`.
Weights start U(±1/√hidden_size), as PyTorch's; they are stored in ONNX's layout and gate order (LSTM i, o, f, c;
GRU z, r, h), one `[num_directions, gates * hidden, ...]` tensor per layer. A PyTorch state dict's entries
load as they are (`pytorch_state` converts them). GRU computes PyTorch's form
(`linear_before_reset`). Training unrolls each node over the sequence (`onnxkit.autodiff.recurrent`), so a model
trains on the sequence length of its data; inference keeps ONNX Runtime's kernels.
"""

from __future__ import annotations

import math

import numpy as np

from onnxkit.errors import OnnxkitError
from onnxkit.nn import init, ops
from onnxkit.nn.activation import Dropout
from onnxkit.nn.graph import Tensor, current_graph
from onnxkit.nn.module import Module, Parameter, check_int, check_probability


class _Recurrent(Module):
    """The layers' weights and their stacking; `op` and `gates` say which node each layer is."""

    op, gates, states = "", 0, 1
    pytorch_gates: tuple[int, ...] = ()  # ONNX's gates as indices into PyTorch's

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False):
        self.input_size = check_int(self, "input_size", input_size)
        self.hidden_size = hidden = check_int(self, "hidden_size", hidden_size)
        self.num_layers = check_int(self, "num_layers", num_layers)
        self.batch_first, self.bidirectional = bool(batch_first), bool(bidirectional)
        self.directions = 2 if bidirectional else 1
        self.dropout = Dropout(check_probability(self, "dropout", dropout))
        bound, rows = 1 / math.sqrt(hidden), self.gates * hidden
        for layer in range(self.num_layers):
            width = self.input_size if layer == 0 else self.directions * hidden
            setattr(self, f"weight_ih_l{layer}", Parameter(init.uniform((self.directions, rows, width), bound)))
            setattr(self, f"weight_hh_l{layer}", Parameter(init.uniform((self.directions, rows, hidden), bound)))
            if bias:  # ONNX's B: the input's biases, then the hidden state's
                setattr(self, f"bias_l{layer}", Parameter(init.uniform((self.directions, 2 * rows), bound)))

    def pytorch_state(self, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """PyTorch's layout, as its state dict holds it: `weight_ih_l0` [gates × hidden, in] (and `_reverse`), biases
        `bias_ih_l0` and `bias_hh_l0`, its gate order. Those are stacked by direction, the gates put in ONNX's order,
        the biases joined into `bias_l0`; the same names held PyTorch's shapes, refused as 'check the options'."""
        state = dict(state)
        directions = ["", "_reverse"][: self.directions]
        for layer in range(self.num_layers):
            for name, rank in (("weight_ih", 2), ("weight_hh", 2), ("bias_ih", 1), ("bias_hh", 1)):
                keys = [f"{name}_l{layer}{direction}" for direction in directions]
                if all(key in state and np.ndim(state[key]) == rank for key in keys):
                    state[f"{name}_l{layer}"] = np.stack([self._onnx_gates(state.pop(key)) for key in keys])
            if f"bias_ih_l{layer}" in state and f"bias_hh_l{layer}" in state:
                state[f"bias_l{layer}"] = np.concatenate(
                    [state.pop(f"bias_ih_l{layer}"), state.pop(f"bias_hh_l{layer}")], axis=1)
        return state

    def _onnx_gates(self, value: np.ndarray) -> np.ndarray:
        blocks = np.split(np.asarray(value), self.gates, axis=0)
        return np.concatenate([blocks[i] for i in self.pytorch_gates], axis=0)

    def _run(self, x: Tensor, initial: tuple[Tensor | None, ...]) -> tuple[Tensor, tuple[Tensor, ...]]:
        """The output and each state (`states` of them), from `initial` ones (None: zeros)."""
        if x.ndim != 3 or (isinstance(x.shape[2], int) and x.shape[2] != self.input_size):
            layout = "[batch, seq, input_size]" if self.batch_first else "[seq, batch, input_size]"
            raise OnnxkitError(f"{current_graph().where}: {type(self).__name__} expects {layout} with input_size "
                               f"{self.input_size}, got shape {list(x.shape)}")
        if self.batch_first:
            x = ops.transpose(x, [1, 0, 2])
        attrs = {"hidden_size": self.hidden_size, "direction": "bidirectional" if self.bidirectional else "forward"}
        if self.op == "GRU":
            attrs["linear_before_reset"] = 1
        finals: list[list[Tensor]] = [[] for _ in range(self.states)]
        per_layer = self.directions
        for layer in range(self.num_layers):
            if layer:
                x = self.dropout(x)  # between layers, as PyTorch's dropout=
            starts = [None if s is None else ops.slice(s, [layer * per_layer], [(layer + 1) * per_layer], [0])
                      for s in initial]
            weights = [ops.as_tensor(getattr(self, f"{name}_l{layer}")) for name in ("weight_ih", "weight_hh")]
            bias = getattr(self, f"bias_l{layer}", None)
            inputs = [x, *weights, None if bias is None else ops.as_tensor(bias), None, *starts]
            while inputs[-1] is None:  # no trailing empty inputs
                inputs.pop()
            y, *last = current_graph().op(self.op, inputs, attrs, outputs=1 + self.states)
            x = ops.reshape(ops.transpose(y, [0, 2, 1, 3]), [0, 0, -1])  # [seq, batch, directions * hidden]
            for kept, state in zip(finals, last, strict=True):
                kept.append(state)
        output = ops.transpose(x, [1, 0, 2]) if self.batch_first else x
        return output, tuple(s[0] if len(s) == 1 else ops.concat(s, axis=0) for s in finals)

    def _check_state(self, state: object, what: str, x: Tensor) -> Tensor | None:
        """An initial state [num_layers * num_directions, batch, hidden_size] (sizes known before run time checked,
        the batch against x's), or None."""
        if state is None:
            return None
        batch = x.shape[0 if self.batch_first else 1] if x.ndim == 3 else None
        want = (self.num_layers * self.directions, batch, self.hidden_size)
        fits = isinstance(state, Tensor) and state.ndim == 3 and all(
            d == w for d, w in zip(state.shape, want, strict=True) if isinstance(d, int) and isinstance(w, int))
        if fits:
            return state  # type: ignore[return-value]
        shape = list(state.shape) if isinstance(state, Tensor) else type(state).__name__
        raise OnnxkitError(f"{current_graph().where}: {type(self).__name__}'s {what} is "
                           f"[num_layers * num_directions, batch, hidden_size] = {list(want)}, got {shape}")

    def extra_repr(self) -> str:
        extras = "".join(f", {name}={getattr(self, name)}" for name, default in
                         (("num_layers", 1), ("batch_first", False), ("bidirectional", False))
                         if getattr(self, name) != default)
        return f"{self.input_size}, {self.hidden_size}{extras}"


class LSTM(_Recurrent):
    """`lstm(x, (h0, c0))` -> `output, (h_n, c_n)`; the states are optional (zeros), as in PyTorch."""

    op, gates, states = "LSTM", 4, 2
    pytorch_gates = (0, 3, 1, 2)  # ONNX's i, o, f, c of PyTorch's i, f, g, o

    def forward(self, x: Tensor, hx: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        if hx is not None and not (isinstance(hx, tuple | list) and len(hx) == 2):
            raise OnnxkitError(f"{current_graph().where}: LSTM takes its initial states as a pair (h0, c0), got "
                               f"{type(hx).__name__}")
        h0, c0 = (None, None) if hx is None else (self._check_state(hx[0], "h0", x), self._check_state(hx[1], "c0", x))
        output, (h, c) = self._run(x, (h0, c0))
        return output, (h, c)


class GRU(_Recurrent):
    """`gru(x, h0)` -> `output, h_n`; h0 is optional (zeros), as in PyTorch."""

    op, gates, states = "GRU", 3, 1
    pytorch_gates = (1, 0, 2)  # ONNX's z, r, h of PyTorch's r, z, n

    def forward(self, x: Tensor, hx: Tensor | None = None) -> tuple[Tensor, Tensor]:
        output, (h,) = self._run(x, (self._check_state(hx, "h0", x),))
        return output, h
