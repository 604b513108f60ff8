"""Convolution and pooling over NCHW images, and `Flatten`."""

from __future__ import annotations

from typing import Any

from onnxkit.errors import OnnxkitError
from onnxkit.nn import init, ops
from onnxkit.nn.graph import Tensor, current_graph
from onnxkit.nn.module import Module, Parameter


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)  # type: ignore[return-value]


def _pads(padding: Any, kernel: tuple[int, int], dilation: tuple[int, int], stride: tuple[int, int]) -> list[int]:
    """ONNX pads [top, left, bottom, right]; "same" keeps H×W at stride 1."""
    if padding == "valid":
        return [0, 0, 0, 0]
    if padding == "same":
        if stride != (1, 1):
            raise OnnxkitError('padding="same" needs stride 1; give explicit padding for strided convs')
        total = [d * (k - 1) for k, d in zip(kernel, dilation, strict=True)]
        begin = [t // 2 for t in total]
        return begin + [t - b for t, b in zip(total, begin, strict=True)]
    ph, pw = _pair(padding)
    return [ph, pw, ph, pw]


class Conv2d(Module):
    """2-D convolution; weight [out, in/groups, kh, kw]."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] | str = 0,
                 dilation: int | tuple[int, int] = 1, groups: int = 1, bias: bool = True,
                 init_fn: str = "kaiming_uniform"):
        if in_channels % groups or out_channels % groups:
            raise OnnxkitError(
                f"Conv2d: channels {in_channels}->{out_channels} are not divisible by groups={groups}"
            )
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel, self.stride, self.dilation = _pair(kernel_size), _pair(stride), _pair(dilation)
        self.pads = _pads(padding, self.kernel, self.dilation, self.stride)
        shape = (out_channels, in_channels // groups, *self.kernel)
        self.weight = Parameter(init.get(init_fn)(shape))
        self.bias = Parameter(init.zeros((out_channels,))) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        inputs = [x, ops.as_tensor(self.weight)]
        if self.bias is not None:
            inputs.append(ops.as_tensor(self.bias))
        attrs = {"kernel_shape": list(self.kernel), "strides": list(self.stride),
                 "dilations": list(self.dilation), "pads": self.pads, "group": self.groups}
        return current_graph().op("Conv", inputs, attrs)[0]

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel={self.kernel}, "
                f"stride={self.stride}, pads={self.pads}, groups={self.groups}")


class _Pool2d(Module):
    op_type = ""

    def __init__(self, kernel_size: int | tuple[int, int], stride: int | tuple[int, int] | None = None,
                 padding: int | tuple[int, int] = 0):
        self.kernel = _pair(kernel_size)
        self.stride = _pair(stride) if stride is not None else self.kernel
        self.pads = _pads(padding, self.kernel, (1, 1), self.stride)

    def forward(self, x: Tensor) -> Tensor:
        attrs = {"kernel_shape": list(self.kernel), "strides": list(self.stride), "pads": self.pads}
        return current_graph().op(self.op_type, [x], attrs)[0]

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}, stride={self.stride}"


class MaxPool2d(_Pool2d):
    op_type = "MaxPool"


class AvgPool2d(_Pool2d):
    """Average pooling; padded cells are not counted."""

    op_type = "AveragePool"


class GlobalAvgPool2d(Module):
    """Mean over H×W: [N, C, H, W] -> [N, C, 1, 1]."""

    def forward(self, x: Tensor) -> Tensor:
        return current_graph().op("GlobalAveragePool", [x])[0]


class Flatten(Module):
    """[N, d1, d2, ...] -> [N, d1·d2·...]."""

    def __init__(self, axis: int = 1):
        self.axis = axis

    def forward(self, x: Tensor) -> Tensor:
        return ops.flatten(x, self.axis)
