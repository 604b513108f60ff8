"""Activation layers and `Dropout`: thin modules over the functional ops."""

from __future__ import annotations

from onnxkit.errors import OnnxkitError
from onnxkit.nn import ops
from onnxkit.nn.graph import Tensor, current_graph
from onnxkit.nn.module import Module


class ReLU(Module):
    def forward(self, x: Tensor) -> Tensor:
        return ops.relu(x)


class GELU(Module):
    """Exact (erf) GELU."""

    def forward(self, x: Tensor) -> Tensor:
        return ops.gelu(x)


class Sigmoid(Module):
    def forward(self, x: Tensor) -> Tensor:
        return ops.sigmoid(x)


class Tanh(Module):
    def forward(self, x: Tensor) -> Tensor:
        return ops.tanh(x)


class LeakyReLU(Module):
    def __init__(self, negative_slope: float = 0.01):
        self.negative_slope = negative_slope

    def forward(self, x: Tensor) -> Tensor:
        return ops.leaky_relu(x, self.negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


class Softmax(Module):
    def __init__(self, axis: int = -1):
        self.axis = axis

    def forward(self, x: Tensor) -> Tensor:
        return ops.softmax(x, self.axis)

    def extra_repr(self) -> str:
        return f"axis={self.axis}"


class Dropout(Module):
    """Dropout, emitted in inference form as a ratio-less `Dropout(x)`.

    ONNX Runtime removes such a node at inference (one with a `ratio` input it
    keeps, at ~10% of a BERT's run time). The ratio is recorded in the model's
    metadata (`onnxkit.dropout`: node name -> ratio), from which training
    derives the training form.
    """

    def __init__(self, p: float = 0.1):
        if not 0.0 <= p < 1.0:
            raise OnnxkitError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0:
            return x
        graph = current_graph()
        (y,) = graph.op("Dropout", [x])
        graph.dropout[graph.nodes[-1].name] = self.p
        return y

    def extra_repr(self) -> str:
        return f"p={self.p}"


ACTIVATIONS: dict[str, type[Module]] = {
    "relu": ReLU, "gelu": GELU, "sigmoid": Sigmoid, "tanh": Tanh, "leaky_relu": LeakyReLU,
}  # fmt: skip
