"""Normalisation layers, emitted in inference form (training derives the training forms)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from onnxkit.errors import OnnxkitError
from onnxkit.nn import init, ops
from onnxkit.nn.graph import Tensor, current_graph
from onnxkit.nn.module import Buffer, Module, Parameter, check_int, check_ints, check_number


class _BatchNorm(Module):
    """BatchNormalization with learnable scale/shift and running statistics as Buffers."""

    ranks: tuple[int, ...] = ()

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True):
        num_features, eps = check_int(self, "num_features", num_features), check_number(self, "eps", eps, 0)
        momentum = check_number(self, "momentum", momentum, 0, 1)
        self.num_features, self.eps, self.momentum, self.affine = num_features, eps, momentum, bool(affine)
        kind = Parameter if affine else Buffer  # affine=False: scale 1 and shift 0, fixed (ONNX's node takes both)
        self.weight = kind(init.ones((num_features,)))
        self.bias = kind(init.zeros((num_features,)))
        self.running_mean = Buffer(init.zeros((num_features,)))
        self.running_var = Buffer(init.ones((num_features,)))

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim not in self.ranks:
            raise OnnxkitError(
                f"{current_graph().where}: {type(self).__name__} expects rank {self.ranks} input, "
                f"got shape {list(x.shape)}"
            )
        if isinstance(x.shape[1], int) and x.shape[1] != self.num_features:  # was ONNX's 'mismatch in unification'
            raise OnnxkitError(f"{current_graph().where}: {type(self).__name__}({self.num_features}) expects "
                               f"{self.num_features} channels on axis 1, got shape {list(x.shape)}")
        params = [ops.as_tensor(p) for p in (self.weight, self.bias, self.running_mean, self.running_var)]
        # ONNX momentum weights the old running value: 1 - PyTorch's momentum.
        attrs = {"epsilon": self.eps, "momentum": 1.0 - self.momentum}
        return current_graph().op("BatchNormalization", [x, *params], attrs)[0]

    def pytorch_state(self, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """PyTorch's `num_batches_tracked` (a step count, used only when momentum=None, which the DSL does not take)
        is dropped: every PyTorch BatchNorm's state dict has it, and a strict load called it an unknown weight."""
        return {name: value for name, value in state.items() if name != "num_batches_tracked"}

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}" + ("" if self.affine else ", affine=False")


class BatchNorm1d(_BatchNorm):
    """Over [N, C] or [N, C, L]."""

    ranks = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Over [N, C, H, W]."""

    ranks = (4,)


class LayerNorm(Module):
    """LayerNormalization over the last dims, PyTorch's arguments: `normalized_shape` (an int: the last dim; a
    tuple: the last len(tuple) dims), `eps`, `elementwise_affine` (False: no weight or bias, scale 1 and shift 0 as
    constants) and `bias` (False: the weight only). It took one int and no options (`LayerNorm((8,))` and
    `elementwise_affine=False` were errors)."""

    def __init__(self, normalized_shape: int | Sequence[int], eps: float = 1e-5, elementwise_affine: bool = True,
                 bias: bool = True):
        if isinstance(normalized_shape, tuple | list) and normalized_shape:
            shape = check_ints(self, "normalized_shape", normalized_shape, n=len(normalized_shape))
        else:
            shape = (check_int(self, "normalized_shape", normalized_shape),)
        self.normalized_shape = shape
        self.dim, self.eps = self.normalized_shape[-1], check_number(self, "eps", eps, 0)
        self.weight = Parameter(init.ones(self.normalized_shape)) if elementwise_affine else None
        self.bias = Parameter(init.zeros(self.normalized_shape)) if elementwise_affine and bias else None

    def forward(self, x: Tensor) -> Tensor:
        want = self.normalized_shape
        last = x.shape[-len(want):] if x.ndim >= len(want) else None
        if last is None or any(isinstance(d, int) and d != w for d, w in zip(last, want, strict=True)):
            raise OnnxkitError(
                f"{current_graph().where}: LayerNorm({', '.join(map(str, want))}) got input with last dims "
                f"{list(x.shape[-len(want):])} (shape {list(x.shape)})"
            )
        scale = ops.as_tensor(self.weight) if self.weight is not None else \
            ops.as_tensor(np.ones(want, x.dtype))
        inputs = [x, scale] + ([ops.as_tensor(self.bias)] if self.bias is not None else [])
        attrs = {"axis": -len(want), "epsilon": self.eps}
        return current_graph().op("LayerNormalization", inputs, attrs)[0]

    def extra_repr(self) -> str:
        shape = self.dim if len(self.normalized_shape) == 1 else self.normalized_shape
        affine = "" if self.weight is not None else ", elementwise_affine=False"
        bias = ", bias=False" if self.weight is not None and self.bias is None else ""
        return f"{shape}, eps={self.eps}{affine}{bias}"


class _ChannelNorm(Module):
    """A per-sample normalisation of [N, C, ...] with an optional per-channel affine (no running stats)."""

    def __init__(self, num_channels: int, eps: float, affine: bool, arg: str = "num_channels"):
        num_channels = check_int(self, arg, num_channels)
        self.num_channels, self.eps = num_channels, check_number(self, "eps", eps, 0)
        self.weight = Parameter(init.ones((num_channels,))) if affine else None
        self.bias = Parameter(init.zeros((num_channels,))) if affine else None

    def extra_repr(self) -> str:
        return f"{self.num_channels}, eps={self.eps}, affine={self.weight is not None}"


class GroupNorm(_ChannelNorm):
    """Normalise each group of num_channels/num_groups channels of [N, C, ...], then a per-channel affine.

    The GroupNormalization op from opset 21 (opset 18's scales per group, unlike PyTorch);
    below 21, so at the default opset 17, an equivalent decomposition: Reshape to [N, G, -1],
    mean and variance by ReduceMean, normalise, Reshape back, per-channel scale and shift.
    """

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True):
        num_groups = check_int(self, "num_groups", num_groups)
        num_channels = check_int(self, "num_channels", num_channels)
        if num_channels % num_groups:
            raise OnnxkitError(f"GroupNorm: num_channels {num_channels} is not divisible by num_groups {num_groups}")
        super().__init__(num_channels, eps, affine)
        self.num_groups = num_groups

    def forward(self, x: Tensor) -> Tensor:
        return ops.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_groups}, " + super().extra_repr()


class InstanceNorm2d(_ChannelNorm):
    """InstanceNormalization over [N, C, H, W]: each sample's channel normalised over H×W on its own.

    Per-channel scale and shift fixed at 1 and 0 unless `affine=True`, as PyTorch's (the default was True, so a
    PyTorch recipe's layer came with 2 x C weights its original lacks). Statistics always come from the input
    (PyTorch's track_running_stats=False: `momentum`, which only running statistics use, is taken in its place in
    PyTorch's arguments and left unused; `track_running_stats=True` is refused).
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = False,
                 track_running_stats: bool = False):
        if track_running_stats:
            raise OnnxkitError("InstanceNorm2d: track_running_stats=True is not supported (ONNX's "
                               "InstanceNormalization normalises each sample by its own statistics); leave it False")
        super().__init__(num_features, eps, affine, "num_features")

    def forward(self, x: Tensor) -> Tensor:
        ops.check_input(x, "InstanceNorm2d", 4, channels=self.num_channels)
        return ops.instance_norm(x, self.weight, self.bias, self.eps)
