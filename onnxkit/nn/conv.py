"""Convolution, pooling and upsampling over NCHW images, and `Flatten`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from onnxkit.errors import OnnxkitError
from onnxkit.nn import init, ops
from onnxkit.nn.graph import Tensor, current_graph
from onnxkit.nn.module import Module, Parameter, check_int, check_ints, check_number


def _padding(layer: Module, padding: Any) -> str | tuple[int, int]:
    """"same", "valid", or a non-negative integer or a pair of them."""
    if isinstance(padding, str):
        if padding not in ("same", "valid"):
            raise OnnxkitError(f"{type(layer).__name__}: padding must be 'same', 'valid', a non-negative integer "
                               f"or a pair of them, got {padding!r}")
        return padding
    n = getattr(layer, "spatial", 2)
    return check_ints(layer, "padding", padding, n=n, minimum=0)  # type: ignore[return-value]


def _pads(layer: Module, padding: str | tuple[int, int], kernel: tuple[int, int], dilation: tuple[int, int],
          stride: tuple[int, int]) -> list[int]:
    """ONNX pads [top, left, bottom, right]; "same" keeps H×W at stride 1."""
    if padding == "valid":
        return [0] * 2 * len(kernel)
    if padding == "same":
        if any(s != 1 for s in stride):
            raise OnnxkitError(f'{type(layer).__name__}: padding="same" needs stride 1, got stride {stride}; give '
                               "explicit padding")
        total = [d * (k - 1) for k, d in zip(kernel, dilation, strict=True)]
        begin = [t // 2 for t in total]
        return begin + [t - b for t, b in zip(total, begin, strict=True)]
    return [*padding, *padding]


def _check_window(layer: Module, x: Tensor, kernel: tuple[int, int], dilation: tuple[int, int],
                  pads: list[int], partial: bool = False) -> None:
    """Fail, naming the layer, unless `x` is [N, C, H, W] and the window (kernel and dilation) fits
    each static spatial axis with its padding: else the output would have no cells (with ceil_mode, `partial`,
    a first window reaching past the end is kept, as in PyTorch, unless a whole stride past it)."""
    name = type(layer).__name__
    n = len(kernel)
    ops.check_input(x, name, 2 + n, channels=getattr(layer, "in_channels", None))
    for axis, size in enumerate(x.shape[2:]):
        span = dilation[axis] * (kernel[axis] - 1) + 1
        room = size + pads[axis] + pads[axis + n] - span if isinstance(size, int) else 0
        if room < 0 and (not partial or -(-room // getattr(layer, "stride", (1,) * n)[axis]) < 0):
            raise OnnxkitError(f"{ops._where()}: {name}'s window spans {span} cells on axis {axis + 2}, more than "
                               f"the input's {size} with padding {pads[axis] + pads[axis + n]} (shape "
                               f"{list(x.shape)}): the output would be empty; use a smaller kernel or more padding")


class _Conv(Module):
    """What Conv2d and ConvTranspose2d share: channels, geometry, and the node."""

    weight: Parameter  # set by the subclass, which knows the layout
    bias: Parameter | None
    spatial = 2  # spatial axes: 2 for [N, C, H, W], 1 for Conv1d's [N, C, L]

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int], padding: int | tuple[int, int] | str,
                 dilation: int | tuple[int, int], groups: int):
        in_channels = check_int(self, "in_channels", in_channels)
        out_channels = check_int(self, "out_channels", out_channels)
        groups = check_int(self, "groups", groups)
        if in_channels % groups or out_channels % groups:
            raise OnnxkitError(
                f"{type(self).__name__}: channels {in_channels}->{out_channels} are not divisible by groups={groups}"
            )
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        n = self.spatial
        self.kernel = check_ints(self, "kernel_size", kernel_size, n)
        self.stride = check_ints(self, "stride", stride, n)
        self.dilation = check_ints(self, "dilation", dilation, n)
        self.pads = _pads(self, _padding(self, padding), self.kernel, self.dilation, self.stride)

    def _node(self, op_type: str, x: Tensor, **attrs: Any) -> Tensor:
        inputs = [x, ops.as_tensor(self.weight)]
        if self.bias is not None:
            inputs.append(ops.as_tensor(self.bias))
        attrs |= {"kernel_shape": list(self.kernel), "strides": list(self.stride),
                  "dilations": list(self.dilation), "pads": self.pads, "group": self.groups}
        return current_graph().op(op_type, inputs, attrs)[0]

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel={self.kernel}, "
                f"stride={self.stride}, pads={self.pads}, groups={self.groups}")


class Conv2d(_Conv):
    """2-D convolution; weight [out, in/groups, kh, kw]."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] | str = 0,
                 dilation: int | tuple[int, int] = 1, groups: int = 1, bias: bool = True,
                 init_fn: str = "kaiming_uniform"):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups)
        shape = (out_channels, in_channels // groups, *self.kernel)
        self.weight = Parameter(init.get(init_fn)(shape))
        self.bias = Parameter(init.zeros((out_channels,))) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        _check_window(self, x, self.kernel, self.dilation, self.pads)
        return self._node("Conv", x)


class Conv1d(Conv2d):
    """1-D convolution over [N, C, L], PyTorch's arguments as Conv2d's (one size each); weight [out, in/groups, k],
    started as Conv2d's (He's kaiming_uniform; `init_fn="pytorch_uniform"` for PyTorch's)."""

    spatial = 1

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int],
                 stride: int | tuple[int] = 1, padding: int | tuple[int] | str = 0,
                 dilation: int | tuple[int] = 1, groups: int = 1, bias: bool = True,
                 init_fn: str = "kaiming_uniform"):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,  # type: ignore[arg-type]
                         init_fn)


class ConvTranspose2d(_Conv):
    """Transposed 2-D convolution; weight [in, out/groups, kh, kw], as PyTorch's.

    Each output axis has (size - 1)·stride - 2·padding + dilation·(kernel - 1) + output_padding + 1
    cells. Weight and bias start U(±1/√fan_in), fan_in = out/groups·kh·kw, as in PyTorch.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0,
                 output_padding: int | tuple[int, int] = 0, groups: int = 1, bias: bool = True,
                 dilation: int | tuple[int, int] = 1):
        if isinstance(padding, str):
            raise OnnxkitError(f"ConvTranspose2d: padding must be a number or a pair, got {padding!r}")
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups)
        self.output_padding = check_ints(self, "output_padding", output_padding, minimum=0)
        if any(p >= max(s, d) for p, s, d in zip(self.output_padding, self.stride, self.dilation, strict=True)):
            raise OnnxkitError(
                f"ConvTranspose2d: output_padding {self.output_padding} must be smaller than "
                f"stride {self.stride} or dilation {self.dilation}"
            )
        kh, kw = self.kernel
        bound = 1 / math.sqrt(out_channels // groups * kh * kw)
        self.weight = Parameter(init.uniform((in_channels, out_channels // groups, kh, kw), bound))
        self.bias = Parameter(init.uniform((out_channels,), bound)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        ops.check_input(x, "ConvTranspose2d", 4, channels=self.in_channels)
        return self._node("ConvTranspose", x, output_padding=list(self.output_padding))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", output_padding={self.output_padding}"


class _Pool2d(Module):
    op_type = ""
    spatial = 2

    def __init__(self, kernel_size: int | tuple[int, int], stride: int | tuple[int, int] | None = None,
                 padding: int | tuple[int, int] = 0, dilation: int | tuple[int, int] = 1, ceil_mode: bool = False):
        n = self.spatial
        self.kernel = check_ints(self, "kernel_size", kernel_size, n)
        self.stride = check_ints(self, "stride", stride, n) if stride is not None else self.kernel
        self.dilation = check_ints(self, "dilation", dilation, n)
        self.pads = _pads(self, _padding(self, padding), self.kernel, self.dilation, self.stride)
        self.ceil_mode = bool(ceil_mode)
        if any(p > k // 2 for p, k in zip(self.pads, self.kernel * 2, strict=True)):  # PyTorch refuses these too
            raise OnnxkitError(f"{type(self).__name__}: padding {padding!r} must be at most half the window "
                               f"(kernel_size {self.kernel}), as PyTorch requires")

    def forward(self, x: Tensor) -> Tensor:
        _check_window(self, x, self.kernel, self.dilation, self.pads, partial=self.ceil_mode)
        attrs = {"kernel_shape": list(self.kernel), "strides": list(self.stride), "pads": self.pads, **self._attrs()}
        if any(d != 1 for d in self.dilation):
            attrs["dilations"] = list(self.dilation)
        if self.ceil_mode:
            self._check_last_window(x)
            attrs["ceil_mode"] = 1
        return current_graph().op(self.op_type, [x], attrs)[0]

    def _check_last_window(self, x: Tensor) -> None:
        """Refuse a ceil_mode window that would start past the input (PyTorch drops it) or, averaging with the
        padding counted, reach past the padding: ONNX Runtime versions size and divide those differently."""
        for axis, size in enumerate(x.shape[2:]):
            if not isinstance(size, int):
                continue
            begin, end, stride = self.pads[axis], self.pads[axis + self.spatial], self.stride[axis]
            span = self.dilation[axis] * (self.kernel[axis] - 1) + 1
            last = -(-(size + begin + end - span) // stride)  # the ceil_mode output's last index
            why = "start its last window past the input, which PyTorch drops" if last * stride >= size + begin else \
                "reach past the padding with its last window, whose cells ONNX Runtime 1.20 counts and later ones " \
                "do not" if self._attrs().get("count_include_pad") and last * stride + span > size + begin + end else ""
            if why:
                raise OnnxkitError(f"{ops._where()}: {type(self).__name__} with ceil_mode on {size} cells (axis "
                                   f"{axis + 2}) would {why}; change the padding or the stride"
                                   + (", or use count_include_pad=False" if "padding" in why else ""))

    def _attrs(self) -> dict[str, int]:
        return {}

    def extra_repr(self) -> str:
        extras = (f", dilation={self.dilation}" if any(d != 1 for d in self.dilation) else "") + \
            (", ceil_mode=True" if self.ceil_mode else "")
        return f"kernel={self.kernel}, stride={self.stride}{extras}"


class MaxPool2d(_Pool2d):
    """Max pooling, with PyTorch's arguments (`return_indices` only False: the indices are no value in a graph)."""

    op_type = "MaxPool"

    def __init__(self, kernel_size: int | tuple[int, int], stride: int | tuple[int, int] | None = None,
                 padding: int | tuple[int, int] = 0, dilation: int | tuple[int, int] = 1,
                 return_indices: bool = False, ceil_mode: bool = False):
        if return_indices:
            raise OnnxkitError("MaxPool2d: return_indices=True is not supported (MaxUnpool has no DSL layer); "
                               "leave it out")
        super().__init__(kernel_size, stride, padding, dilation, ceil_mode)


class AvgPool2d(_Pool2d):
    """Average pooling; padded cells count as zeros unless `count_include_pad=False`, as in PyTorch (they were left
    out, so a padded layer averaged otherwise than its PyTorch original: 0.56 apart on ones)."""

    op_type = "AveragePool"

    def __init__(self, kernel_size: int | tuple[int, int], stride: int | tuple[int, int] | None = None,
                 padding: int | tuple[int, int] = 0, ceil_mode: bool = False, count_include_pad: bool = True):
        super().__init__(kernel_size, stride, padding, ceil_mode=ceil_mode)
        self.count_include_pad = bool(count_include_pad)

    def _attrs(self) -> dict[str, int]:
        return {"count_include_pad": int(self.count_include_pad)} if any(self.pads) else {}


class MaxPool1d(MaxPool2d):
    """MaxPool2d over [N, C, L]: PyTorch's arguments, one size each."""

    spatial = 1


class AvgPool1d(AvgPool2d):
    """AvgPool2d over [N, C, L]: PyTorch's arguments, one size each."""

    spatial = 1


class _GlobalPool2d(Module):
    op_type = ""

    def forward(self, x: Tensor) -> Tensor:
        ops.check_input(x, type(self).__name__, 4)
        return current_graph().op(self.op_type, [x])[0]


class GlobalAvgPool2d(_GlobalPool2d):
    """Mean over H×W: [N, C, H, W] -> [N, C, 1, 1]."""

    op_type = "GlobalAveragePool"


class AdaptiveAvgPool2d(GlobalAvgPool2d):
    """PyTorch's AdaptiveAvgPool2d for output_size 1 (what a classifier head uses): GlobalAvgPool2d."""

    def __init__(self, output_size: int | tuple[int, int]):
        if output_size not in (1, (1, 1)):
            raise OnnxkitError(f"AdaptiveAvgPool2d: output_size {output_size!r} is not supported, only 1 (a "
                               "global average); for another size use AvgPool2d with the kernel and stride it means")
        self.output_size = output_size

    def extra_repr(self) -> str:
        return f"output_size={self.output_size!r}"


class GlobalMaxPool2d(_GlobalPool2d):
    """Max over H×W: [N, C, H, W] -> [N, C, 1, 1]."""

    op_type = "GlobalMaxPool"


class Upsample(Module):
    """Scale the spatial axes of [N, C, ...] by `scale_factor`, or resize them to `size`, with Resize, as PyTorch's
    Upsample: "nearest" (any rank >= 3) or "bilinear" ([N, C, H, W]; `align_corners` as PyTorch's). The first
    positional argument is the scale factor (PyTorch's is the size: name it, `size=`)."""

    def __init__(self, scale_factor: float | Sequence[float] | None = None, mode: str = "nearest", *,
                 size: int | Sequence[int] | None = None, align_corners: bool | None = None):
        if (size is None) == (scale_factor is None):
            both = ", not both" if size is not None else ""
            raise OnnxkitError(f"Upsample: give either size or scale_factor{both}")
        if size is not None:
            sizes = list(size) if isinstance(size, tuple | list) else [size]
            if not sizes or not all(check_int(self, "size", s) for s in sizes):
                raise OnnxkitError(f"Upsample: size must be a positive whole number or a list of them, got {size!r}")
        else:
            scales = list(scale_factor) if isinstance(scale_factor, tuple | list) else [scale_factor]
            if not scales or not all(check_number(self, "scale_factor", s) > 0 for s in scales):
                raise OnnxkitError(f"Upsample: scale_factor must be a positive number or a list of them, "
                                   f"got {scale_factor!r}")
        if mode not in ops._RESIZE:
            raise OnnxkitError(f"Upsample: mode must be one of {', '.join(ops._RESIZE)}, got {mode!r}")
        if align_corners is not None and mode == "nearest":  # PyTorch refuses it too
            raise OnnxkitError("Upsample: align_corners is for mode='bilinear'; leave it out for 'nearest'")
        self.scale_factor, self.size, self.mode, self.align_corners = scale_factor, size, mode, bool(align_corners)

    def forward(self, x: Tensor) -> Tensor:
        return ops.upsample(x, self.scale_factor, self.mode, size=self.size, align_corners=self.align_corners)

    def extra_repr(self) -> str:
        target = f"size={self.size}" if self.size is not None else f"scale_factor={self.scale_factor}"
        return f"{target}, mode={self.mode!r}" + (", align_corners=True" if self.align_corners else "")


class Flatten(Module):
    """PyTorch's Flatten: dims `start_dim`..`end_dim` (negative from the end) become one, the others kept, so
    [N, C, H, W] -> [N, C·H·W] by default (one ONNX Flatten) and `Flatten(2)` -> [N, C, H·W] (a Reshape). It took
    ONNX's `axis`, to [d0·...·d(axis-1), the rest]: `Flatten(2)` gave [N·C, H·W], where PyTorch's keeps N."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        self.start_dim = check_int(self, "start_dim", start_dim, None)
        self.end_dim = check_int(self, "end_dim", end_dim, None)

    def forward(self, x: Tensor) -> Tensor:
        return ops.flatten_dims(x, self.start_dim, self.end_dim)

    def extra_repr(self) -> str:
        default = (self.start_dim, self.end_dim) == (1, -1)
        return "" if default else f"start_dim={self.start_dim}, end_dim={self.end_dim}"
