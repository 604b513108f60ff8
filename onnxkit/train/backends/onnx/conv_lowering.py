"""The training and eval graphs for the CPU: Convs with few output positions an image as one GEMM over the batch.

ONNX Runtime's CPU Conv, given its weight as an input (as the training and eval graphs give it), runs a GEMM per
image, each as wide as the image's output positions: at 8 x 8 a 128-channel 3 x 3 Conv ran at 103 GFLOP/s, 47
inside a training step. Where an image has at most LOWERED_UP_TO output positions, and the GEMM is at least
MIN_DEPTH deep, the Conv becomes the im2col form the weight gradient already uses (`autodiff.rules.conv._correlate`):
the input laid out batch-last, its windows gathered into columns (a zero row for the padding), and one MatMul of
the weight against them for the whole batch, transposed back. Alone (batch 32, 2 threads): 128 -> 128 channels at
8 x 8 5.89 -> 3.81 ms, 512 at 7 x 7 (batch 8) 0.79x, 256 at 14 x 14 0.86-0.92x; from 256 positions up the Conv
is faster (64 channels at 16 x 16: 1.49x). A stride-1 ConvTranspose (a stride-1 Conv's input gradient, or a
model's own) is the Conv of its flipped kernel and is lowered the same way, the flip read into the columns' order:
ORT's ConvTranspose is a GEMM per image too, then col2im (ResNet-18's 512-channel 3 x 3 at 7 x 7, batch 16: 28 ms
each; the step at 224 x 224 0.96x lowered).

The weight gradient then reads these columns instead of gathering its own, so they live from the forward to the
backward: depth x positions floats an example per lowered Conv (ResNet-18 at 224 x 224, batch 32: ~350 MB in all).
They are freed before the backward reaches the large early stages, where the peak is: that ResNet-18's training
peak was 1,463 MiB lowered against 1,445 not (4 MiB column chunks; tools/train_memory.py --ab
...LOWERED_UP_TO=0). CUDA keeps the Conv (cuDNN), so a lowered graph is a second file (`artifacts.CPU_SUFFIX`) the
session opens on the CPU only.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxkit.autodiff import GRADIENT_NODES
from onnxkit.autodiff.rules.conv import Attr, Window, tap_positions, window
from onnxkit.dims import dims_of
from onnxkit.graph_walks import needed_nodes, readers, transpose_perm, used_initializers, value_types

LOWERED_UP_TO = 196  # output positions an image (14 x 14) up to which a forward Conv is lowered
# ... where its GEMM is at least this deep (input channels x kernel taps): digits-cnn's 1-channel 3 x 3 Conv at 8 x 8
# (depth 9) stepped 1.15x slower lowered, its nine nodes' overhead larger than the per-image GEMMs saved
MIN_DEPTH = 256
PREFIX = "onnxkit.lowered/"


def lowered_convs(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """`model` with its forward Convs and its stride-1 ConvTransposes of at most LOWERED_UP_TO output positions an
    image as one GEMM each; None where it has none to lower. A Conv whose weight is an initializer (frozen) stays:
    ONNX Runtime runs it on its blocked kernels with the weight reordered once (2.78 ms for the 128-channel 8 x 8 Conv
    above, 3.81 lowered)."""
    convs = [n for n in model.graph.node if n.op_type == "ConvTranspose"
             or n.op_type == "Conv" and not n.name.startswith(GRADIENT_NODES)]
    if not convs:
        return None
    types = value_types(model)
    values = {t.name: t for t in model.graph.initializer}  # a frozen weight: ORT prepacks it for its fast Conv
    plans = {id(node): plan for node in convs
             if node.input[1] not in values and (plan := _plan(node, types)) is not None}
    if not plans:
        return None
    lowered = onnx.ModelProto()
    lowered.CopyFrom(model)
    nodes, shared = [], {}
    read_by = readers(model.graph.node)
    for index, node in enumerate(model.graph.node):
        if id(node) in plans:
            channels, size, win, out_channels = plans[id(node)]
            positions = tap_positions(win)  # [taps, output positions]; padding reads index prod(size): the zero row
            nodes += _gemm_form(lowered.graph, node, f"{PREFIX}{index}", channels, size, win, out_channels, positions)
            gathered = None if node.op_type == "ConvTranspose" else _gradient_columns(
                read_by, values, node.input[0], positions, 2 + len(size))
            if gathered is not None:
                shared[gathered] = f"{PREFIX}{index}/columns"
        else:
            nodes.append(node)
    for i, node in enumerate(nodes):  # the weight gradients read the forward's columns; their own gathers drop out
        if shared.keys() & set(node.input):
            nodes[i] = onnx.NodeProto()
            nodes[i].CopyFrom(node)
            nodes[i].input[:] = [shared.get(name, name) for name in node.input]
    del lowered.graph.node[:]
    lowered.graph.node.extend(nodes)
    needed = {i for i, _ in needed_nodes(lowered, *(o.name for o in lowered.graph.output))}
    del lowered.graph.node[:]
    lowered.graph.node.extend(node for i, node in enumerate(nodes) if i in needed)
    used = {t.name for t in used_initializers(lowered, lowered.graph.node)}
    for i in reversed(range(len(lowered.graph.initializer))):  # the dropped gathers' positions, say
        if lowered.graph.initializer[i].name not in used:
            del lowered.graph.initializer[i]
    return lowered


def _gradient_columns(read_by: dict[str, list[onnx.NodeProto]], constants: dict[str, onnx.TensorProto], x: str,
                      positions: np.ndarray, rank: int) -> str | None:
    """The weight gradient's gather of the same columns of `x` (`_correlate`, all positions in one chunk): the output
    of a Gather of `positions` from a Pad of a Reshape of a batch-last Transpose of `x`; None where there is none."""
    chain = [t for t in read_by.get(x, []) if t.op_type == "Transpose" and t.name.startswith(GRADIENT_NODES)
             and transpose_perm(t) == [1, *range(2, rank), 0]]
    for op_type in ("Reshape", "Pad", "Gather"):
        chain = [r for node in chain for r in read_by.get(node.output[0], []) if r.op_type == op_type]
    for gather in chain:
        index = constants.get(gather.input[1])
        if index is not None and np.array_equal(numpy_helper.to_array(index), positions):
            return gather.output[0]
    return None


Plan = tuple[int, tuple[int, ...], Window, int]  # input channels, input spatial sizes, window, output channels


def _plan(node: onnx.NodeProto, types: dict[str, onnx.ValueInfoProto]) -> Plan | None:
    """How to lower a Conv or stride-1 ConvTranspose (as the Conv it equals), or None where it stays: grouped, of
    unknown sizes, not float32, or wide."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}

    def attr(name: str, default: object = None) -> object:
        value = attrs.get(name, default)
        return value.decode() if isinstance(value, bytes) else value

    if attr("group", 1) != 1:
        return None
    x, w = (dims_of(types[name].type) if name in types else None for name in node.input[:2])
    if x is None or w is None or len(x) < 3 or not all(isinstance(d, int) for d in (*x[1:], *w)):
        return None
    if types[node.input[0]].type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        return None
    out_channels = w[0]
    if node.op_type == "ConvTranspose":
        attr, out_channels = _as_conv(attr, w[2:]), w[1]
        if attr is None:
            return None
    try:
        win = window(attr, tuple(x[2:]), w[2:])
    except ValueError:  # an auto_pad the gradient rule refuses too
        return None
    if math.prod(win.out) > LOWERED_UP_TO or x[1] * math.prod(w[2:]) < MIN_DEPTH:
        return None
    return x[1], tuple(x[2:]), win, out_channels


def _as_conv(attr: Attr, kernel: list[int]) -> Attr | None:
    """The attributes of the Conv that a stride-1 ConvTranspose equals (its kernel flipped, its channels swapped):
    the padding each side becomes the kernel's span - 1 - the pad. None for any other ConvTranspose."""
    n = len(kernel)
    if any(v != 1 for v in attr("strides", [1] * n)) or any(attr("output_padding", [0] * n)):
        return None
    if attr("auto_pad", "NOTSET") != "NOTSET" or attr("output_shape") is not None:
        return None
    spans = [(k - 1) * d + 1 for k, d in zip(kernel, attr("dilations", [1] * n), strict=True)]
    pads = [sp - 1 - p for sp, p in zip(spans * 2, attr("pads", [0] * (2 * n)), strict=True)]
    if min(pads) < 0:  # pads past the kernel's reach crop the output: left to ONNX Runtime
        return None
    return lambda name, default=None: pads if name == "pads" else attr(name, default)


def _gemm_form(graph: onnx.GraphProto, node: onnx.NodeProto, name: str, channels: int, size: tuple[int, ...],
               win: Window, out_channels: int, positions: np.ndarray) -> list[onnx.NodeProto]:
    """The nodes computing `node`'s output as im2col (the columns at `positions`, `tap_positions(win)`) + one
    MatMul; their constants are added to `graph`."""
    n = len(size)

    def const(suffix: str, value: np.ndarray) -> str:
        graph.initializer.append(numpy_helper.from_array(value, f"{name}/{suffix}"))
        return f"{name}/{suffix}"

    def ints(suffix: str, values: object) -> str:
        return const(suffix, np.asarray(values, np.int64))

    def op(op_type: str, inputs: list[str], suffix: str, **attrs: object) -> onnx.NodeProto:
        return helper.make_node(op_type, inputs, [f"{name}/{suffix}"], name=f"{name}/{suffix}", **attrs)

    x, weight = node.input[0], node.input[1]
    steps = []
    if node.op_type == "ConvTranspose":  # [in, out, k...] as the Conv's [out, in, k...]; its flip, in the taps' order
        steps.append(op("Transpose", [weight], "conv_weight", perm=[1, 0, *range(2, 2 + n)]))
        weight, positions = f"{name}/conv_weight", positions[::-1]
    steps += [
        op("Transpose", [x], "batch_last", perm=[1, *range(2, 2 + n), 0]),
        op("Reshape", [f"{name}/batch_last", ints("rows_shape", [channels, math.prod(size), -1])], "rows"),
        op("Pad", [f"{name}/rows", ints("zero_row", [0, 0, 0, 0, 1, 0]), const("zero", np.zeros((), np.float32))],
           "padded"),
        op("Gather", [f"{name}/padded", ints("positions", positions)], "columns", axis=1),
        op("Reshape", [f"{name}/columns", ints("columns_shape", [channels * len(positions), -1])], "columns_2d"),
        op("Reshape", [weight, ints("weight_shape", [out_channels, -1])], "weight_2d"),
        op("MatMul", [f"{name}/weight_2d", f"{name}/columns_2d"], "product"),
        op("Reshape", [f"{name}/product", ints("out_shape", [out_channels, *win.out, -1])], "batch_last_out"),
    ]
    batch_first = [n + 1, *range(n + 1)]
    if len(node.input) > 2 and node.input[2]:
        steps += [op("Transpose", [f"{name}/batch_last_out"], "out", perm=batch_first),
                  op("Reshape", [node.input[2], ints("bias_shape", [out_channels] + [1] * n)], "bias"),
                  helper.make_node("Add", [f"{name}/out", f"{name}/bias"], [node.output[0]], name=f"{name}/biased")]
    else:
        steps.append(helper.make_node("Transpose", [f"{name}/batch_last_out"], [node.output[0]], name=f"{name}/out",
                                      perm=batch_first))
    return steps
