"""Activation layers and `Dropout`: thin modules over the functional ops."""

from __future__ import annotations

import numpy as np

from onnxkit.errors import OnnxkitError
from onnxkit.nn import ops
from onnxkit.nn.graph import Tensor, current_graph
from onnxkit.nn.module import Module, Parameter, check_int, check_number, check_probability


class _InPlace(Module):
    """A layer PyTorch gives `inplace=` (a memory option: nothing to do in a graph), taken and left unused."""

    def __init__(self, inplace: bool = False):
        del inplace


class ReLU(_InPlace):
    """max(x, 0), as PyTorch's."""

    def forward(self, x: Tensor) -> Tensor:
        return ops.relu(x)


class GELU(Module):
    """GELU: exact (erf), or PyTorch's tanh approximation with approximate="tanh"."""

    def __init__(self, approximate: str = "none"):
        if approximate not in ("none", "tanh"):
            raise OnnxkitError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x: Tensor) -> Tensor:
        return ops.gelu(x, self.approximate)

    def extra_repr(self) -> str:
        return "" if self.approximate == "none" else f"approximate={self.approximate!r}"


class Sigmoid(Module):
    """1 / (1 + exp(-x)), as PyTorch's."""

    def forward(self, x: Tensor) -> Tensor:
        return ops.sigmoid(x)


class SiLU(_InPlace):
    """x·sigmoid(x) (swish), as PyTorch's."""

    def forward(self, x: Tensor) -> Tensor:
        return ops.mul(x, ops.sigmoid(x))


class Identity(Module):
    """Its input, as PyTorch's (a placeholder in a Sequential); options given are ignored, as there."""

    def __init__(self, *args: object, **kwargs: object):
        del args, kwargs

    def forward(self, x: Tensor) -> Tensor:
        return x


class Tanh(Module):
    """tanh(x), as PyTorch's."""

    def forward(self, x: Tensor) -> Tensor:
        return ops.tanh(x)


class LeakyReLU(Module):
    """x where x >= 0, else negative_slope·x, as PyTorch's."""

    def __init__(self, negative_slope: float = 0.01, inplace: bool = False):  # inplace: as _InPlace's
        self.negative_slope = check_number(self, "negative_slope", negative_slope)

    def forward(self, x: Tensor) -> Tensor:
        return ops.leaky_relu(x, self.negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


class Softmax(Module):
    """Softmax along `dim` (PyTorch's argument; the last axis by default, where PyTorch guesses one)."""

    def __init__(self, dim: int = -1):
        self.dim = check_int(self, "dim", dim, None)

    def forward(self, x: Tensor) -> Tensor:
        return ops.softmax(x, self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class LogSoftmax(Softmax):
    """log(softmax) along `dim`, one LogSoftmax node (PyTorch's, before NLLLoss); the last axis by default, as
    Softmax's. It was missing."""

    def forward(self, x: Tensor) -> Tensor:
        return ops.log_softmax(x, self.dim)


class _WithAlpha(Module):
    def __init__(self, alpha: float = 1.0, inplace: bool = False):  # inplace: as _InPlace's
        self.alpha = check_number(self, "alpha", alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


class ELU(_WithAlpha):
    """x if x > 0 else alpha·(exp(x) - 1)."""

    def forward(self, x: Tensor) -> Tensor:
        return ops.elu(x, self.alpha)


class CELU(_WithAlpha):
    """max(0, x) + min(0, alpha·(exp(x/alpha) - 1)); float32 only."""

    def __init__(self, alpha: float = 1.0, inplace: bool = False):
        super().__init__(alpha, inplace)
        if alpha == 0:
            raise OnnxkitError("CELU: alpha must be non-zero, got 0")

    def forward(self, x: Tensor) -> Tensor:
        return ops.celu(x, self.alpha)


class SELU(_InPlace):
    """scale·ELU(x, alpha) with PyTorch's fixed scale and alpha (self-normalising)."""

    def forward(self, x: Tensor) -> Tensor:
        return ops.selu(x)


class Softplus(Module):
    """log(1 + exp(beta·x)) / beta, and x itself where beta·x > threshold: PyTorch's Softplus."""

    def __init__(self, beta: float = 1.0, threshold: float = 20.0):
        self.beta = check_number(self, "beta", beta)
        self.threshold = check_number(self, "threshold", threshold)

    def forward(self, x: Tensor) -> Tensor:
        return ops.softplus(x, self.beta, self.threshold)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, threshold={self.threshold}"


class Mish(_InPlace):
    """x·tanh(softplus(x)); the Mish op from opset 18, its three ops below."""

    def forward(self, x: Tensor) -> Tensor:
        return ops.mish(x)


class HardSigmoid(_InPlace):
    """PyTorch's hardsigmoid: max(0, min(1, x/6 + 1/2))."""

    def forward(self, x: Tensor) -> Tensor:
        return ops.hard_sigmoid(x)


class HardSwish(_InPlace):
    """x·hardsigmoid(x)."""

    def forward(self, x: Tensor) -> Tensor:
        return ops.hard_swish(x)


class PReLU(Module):
    """x if x > 0 else weight·x, with one learnt slope or one per channel (axis 1 of [N, C, ...]).

    The weight is [num_parameters], as in PyTorch; the graph unsqueezes it to [C, 1, ...]
    for inputs of rank 3 and more.
    """

    def __init__(self, num_parameters: int = 1, init: float = 0.25):
        self.num_parameters = num_parameters = check_int(self, "num_parameters", num_parameters)
        check_number(self, "init", init)
        self.weight = Parameter(np.full((num_parameters,), init, np.float32))

    def forward(self, x: Tensor) -> Tensor:
        return ops.prelu(x, self.weight)

    def extra_repr(self) -> str:
        return f"num_parameters={self.num_parameters}"


class Dropout(Module):
    """Dropout, emitted in inference form as a ratio-less `Dropout(x)`.

    ONNX Runtime removes such a node at inference (one with a `ratio` input it
    keeps, at ~10% of a BERT's run time). The ratio is recorded in the model's
    metadata (`onnxkit.dropout`: node name -> ratio), from which training
    derives the training form.
    """

    def __init__(self, p: float = 0.5, inplace: bool = False):  # PyTorch's default p; inplace: as _InPlace's
        self.p = check_probability(self, "p", p)

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
    "relu": ReLU, "gelu": GELU, "sigmoid": Sigmoid, "tanh": Tanh, "leaky_relu": LeakyReLU, "silu": SiLU,
}  # fmt: skip
