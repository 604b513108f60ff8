"""BatchNorm put back where PyTorch's exporter folded it into the layer before it.

An eval-mode export (TorchScript's default; the dynamo exporter's optimizer) multiplies each BatchNorm into
the Conv or Gemm before it (`exporter_marks.folded_batch_norms` finds those layers), and trained so the
network has no normalisation: a small CNN on three drawn shapes reached 27.5% where PyTorch trains the
module to 100%. Each such layer gets a BatchNormalization after it again, started so that the model
computes what it did: its running mean and variance are the per-channel mean and variance of the layer's
output over a sample of the training rows, its shift that mean and its scale the standard deviation, so in
inference form it is the identity (a pretrained export keeps its function). A layer whose folded shift is
zero had a fresh BatchNorm folded into it (running mean 0, variance 1, weight 1, bias 0: a module exported
before training) and gets one again, as the module trains it: weight 1, bias 0, the identity in inference
form too. (Started from the data's statistics instead, a fresh EfficientNet-B0 trained in train mode as it
computes in eval mode, its logits 1e-15 for every image, and stayed at chance where PyTorch reaches 94%.)
Training normalises with each batch's statistics, as the module did, and the trained model keeps the new
nodes (ONNX Runtime fuses each into its Conv when it loads the model).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxkit.data import Split
from onnxkit.graph_walks import output_channels

SAMPLE_ROWS = 256  # training rows the statistics are taken over
BATCH = 16  # rows a run: every folded layer's output for them is held at once (a ResNet's, at 224 x 224)
EPSILON = 1e-5  # PyTorch's BatchNorm default
MOMENTUM = 0.9  # ONNX's: the running statistics' share kept at each step (PyTorch's momentum=0.1)
SUFFIX = ".batchnorm"  # the new node's name, and its tensors' prefix, after the layer's
TENSORS = ("weight", "bias", "running_mean", "running_var")  # the new node's inputs past the first, by their suffix


def channel_statistics(model: onnx.ModelProto, split: Split, values: Sequence[str]) -> dict[str, tuple]:
    """Per channel (axis 1) mean and variance of each of `values` (computed inside `model`) over `SAMPLE_ROWS`
    rows spread over `split` (its first ones were an image folder's first classes), accumulated batch by batch."""
    from onnxkit.evaluate import batch_outputs

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    declared = {o.name for o in probe.graph.output}
    probe.graph.output.extend(helper.make_value_info(name, onnx.TypeProto()) for name in values if name not in declared)
    sums: dict[str, list] = {}
    for outputs in batch_outputs(probe, split.spread(SAMPLE_ROWS), list(values), batch_size=BATCH):
        for name, value in zip(values, outputs, strict=True):
            axes = (0, *range(2, value.ndim))
            total = sums.setdefault(name, [0.0, 0.0, 0])
            total[0] += value.sum(axis=axes, dtype=np.float64)
            total[1] += np.square(value).sum(axis=axes, dtype=np.float64)
            total[2] += value.size // value.shape[1]
    stats = {}
    for name, (total, squares, count) in sums.items():
        mean = total / count
        stats[name] = (mean, np.maximum(squares / count - mean * mean, 0.0))
    return stats


def fresh_batch_norms(model: onnx.ModelProto, layers: Sequence[onnx.NodeProto]) -> set[str]:
    """The first outputs of those `layers` whose folded BatchNorm was fresh: their bias is all zeros, or gone (the
    dynamo exporter drops a zero bias), where a BatchNorm with statistics leaves its shift."""
    values = {t.name: t for t in model.graph.initializer}
    fresh = set()
    for node in layers:
        bias = node.input[2] if len(node.input) > 2 else ""
        if node.input[1] in values and not bias or bias in values and not np.any(numpy_helper.to_array(values[bias])):
            fresh.add(node.output[0])
    return fresh


def with_batch_norms(model: onnx.ModelProto, stats: dict[str, tuple], fresh: set[str] = frozenset()) -> onnx.ModelProto:
    """`model` with a BatchNormalization after each node whose first output is a key of `stats` (its per-channel
    mean and variance) or in `fresh`, started as the identity (module docstring). The node takes the output's
    name, so what read it reads the normalised values."""
    restored = onnx.ModelProto()
    restored.CopyFrom(model)
    graph = restored.graph
    dtypes = {t.name: t.data_type for t in graph.initializer}
    nodes = []
    for node in graph.node:
        nodes.append(node)
        if not node.output or node.output[0] not in stats and node.output[0] not in fresh:
            continue
        out = node.output[0]
        prefix = _prefix(node)
        dtype = helper.tensor_dtype_to_np_dtype(dtypes.get(node.input[1], onnx.TensorProto.FLOAT))
        if out in stats:
            mean, var = stats[out]
            tensors = dict(zip(TENSORS, (np.sqrt(var + EPSILON), mean, mean, var), strict=True))
        else:  # PyTorch's fresh BatchNorm; variance 1 - eps: (y - 0) / sqrt(var + eps) is y
            ones = np.ones(output_channels(node, next(t for t in model.graph.initializer if t.name == node.input[1])))
            tensors = dict(zip(TENSORS, (ones, 0 * ones, 0 * ones, ones - EPSILON), strict=True))
        graph.initializer.extend(numpy_helper.from_array(value.astype(dtype), f"{prefix}.{key}")
                                 for key, value in tensors.items())
        node.output[0] = f"{out}{SUFFIX}.input"
        nodes.append(helper.make_node("BatchNormalization", [node.output[0], *(f"{prefix}.{k}" for k in tensors)],
                                      [out], name=prefix, epsilon=EPSILON, momentum=MOMENTUM))
    del graph.node[:]
    graph.node.extend(nodes)
    return restored


def batch_norm_tensors(nodes: Sequence[onnx.NodeProto]) -> list[str]:
    """The initializers `with_batch_norms` makes for a BatchNorm after each of `nodes`."""
    return [f"{_prefix(node)}.{key}" for node in nodes for key in TENSORS]


def _prefix(node: onnx.NodeProto) -> str:
    """The name of the BatchNorm put back after `node`, and its tensors' prefix."""
    return f"{node.name or node.output[0]}{SUFFIX}"
