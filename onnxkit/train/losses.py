"""Losses as small ONNX subgraphs appended after a model output, plus how labels are fed to them.

Each loss is written with ops that have gradients in every backend we target
(no Abs, no Softplus): cross-entropy is LogSoftmax + GatherElements (for class probabilities, LogSoftmax times them,
summed over the classes), binary
cross-entropy uses the stable form `relu(x) - x*t + log(1 + exp(x - 2*relu(x)))`,
L1 uses `|d| = 2*relu(d) - d`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import onnx
from onnx import TensorProto, helper

from onnxkit.data.checks import not_whole
from onnxkit.dims import dims_of
from onnxkit.errors import OnnxkitError, suggest
from onnxkit.evaluate import (
    PROBABILITIES_OF,
    TASK_LOSS,
    class_axis,
    sizes_fit,
    without_class_axis,
)

PREFIX = "onnxkit.loss"
ALIASES = {"ce": "cross-entropy", "bce": "bce-with-logits", "l2": "mse", "mae": "l1"}
NAMES = ("cross-entropy", "bce-with-logits", "mse", "l1")


@dataclass(frozen=True)
class Loss:
    """A named loss: which labels it takes and the nodes that compute it (a scalar mean)."""

    name: str
    axis: int = -1  # cross-entropy's class axis: 1 for [batch, C, H, W] scores of [N, H, W] ids (see `along`)
    smoothing: float = 0.0  # cross-entropy's label smoothing (see `smoothed`)
    soft: bool = False  # cross-entropy against a probability per class ([N, C] rows summing to 1), not class ids

    @property
    def class_labels(self) -> bool:
        """True when labels are class ids (int64 [batch]) rather than targets shaped like the output."""
        return self.name == "cross-entropy"

    def along(self, output: onnx.ValueInfoProto, labels: np.ndarray) -> Loss:
        """This loss on `output` for `labels`: cross-entropy with one class id per position ([N, H, W]
        or [N, T]) takes the classes on the output's axis that the labels' shape leaves out; with float
        labels shaped as [batch, classes] scores it takes them as class probabilities (PyTorch's soft targets)."""
        if not self.class_labels:
            return self
        shape = list(dims_of(output.type) or ())
        if labels.dtype.kind == "f" and labels.ndim == len(shape) == 2 and labels.shape[1] > 1 and \
                sizes_fit(shape[1:], labels.shape[1:]):
            return replace(self, soft=True)
        axis = class_axis(shape, labels.shape)
        if len(shape) > 2 and not sizes_fit(without_class_axis(shape, axis), labels.shape[1:]):
            shown = ", ".join(str(d) if d else "?" for d in shape)
            raise OnnxkitError(
                f"cross-entropy takes one class id per position of output {output.name!r} (shape [{shown}]), shaped "
                f"as the output without its class axis, but the labels have shape {list(labels.shape)}; pick "
                "another output (output=NAME) or another loss (loss=mse for one target per output value)"
            )
        return replace(self, axis=axis)

    def smoothed(self, epsilon: float) -> Loss:
        """Cross-entropy against targets of 1 - `epsilon` on the labelled class plus `epsilon` spread evenly over all
        classes, as PyTorch's CrossEntropyLoss(label_smoothing=epsilon): (1 - epsilon) * NLL + epsilon * the mean
        over classes of -log p (over every position's, for one class id per position)."""
        if not self.class_labels:
            raise OnnxkitError(f"label_smoothing smooths cross-entropy's class targets, but this run's loss is "
                               f"{self.name}; leave label_smoothing out, or train class ids with loss=cross-entropy",
                               params=["label_smoothing", "loss"])
        return replace(self, smoothing=epsilon)

    def check_output(self, output: onnx.ValueInfoProto) -> None:
        """Fail early when the output's type or rank cannot feed this loss."""
        tensor = output.type.tensor_type
        if tensor.elem_type != TensorProto.FLOAT:
            raise OnnxkitError(
                f"output {output.name!r} is not float32, so it cannot feed the {self.name} loss; "
                "pick a float one with output=NAME"
            )
        rank = len(tensor.shape.dim)
        if self.class_labels and rank < 2:
            raise OnnxkitError(
                f"cross-entropy needs logits shaped [batch, classes] (or [batch, classes, ...] for one class id per "
                f"position), but output {output.name!r} has rank {rank}; pick another output (output=NAME) or "
                "another loss (loss=mse)"
            )

    def labels_input(self, name: str, output: onnx.ValueInfoProto) -> onnx.ValueInfoProto:
        """The graph input the labels are fed through."""
        if self.class_labels and not self.soft:  # the output's shape without its class axis
            dims = list(dims_of(output.type) or ())
            del dims[self.axis]
            return helper.make_tensor_value_info(name, TensorProto.INT64, [dims[0] or "batch", *dims[1:]])
        target = onnx.ValueInfoProto()
        target.CopyFrom(output)
        target.name = name
        return target

    def labels_for(self, labels: np.ndarray, output_shape: tuple[int | str | None, ...]) -> np.ndarray:
        """Labels converted to what the loss input takes: int64 class ids, or float32 targets
        reshaped like the output (e.g. [N] -> [N, 1])."""
        stray = not_whole(labels)
        if self.class_labels and not self.soft:
            if labels.dtype.kind not in "iub":
                if stray is None and labels.dtype.kind == "f":  # class ids saved as floats (np.loadtxt's 0.0, 1.0)
                    raise OnnxkitError(f"cross-entropy needs integer class labels but the data's are {labels.dtype} "
                                       "(whole numbers): class ids are to be saved as integers, "
                                       "labels.astype(np.int64); for regression targets use loss=mse")
                found = f"one is {stray:g}" if stray is not None else f"the data's labels are {labels.dtype}"
                raise OnnxkitError(
                    f"cross-entropy needs integer class labels but {found}; use loss=mse for regression targets"
                )
            return labels.astype(np.int64, copy=False)
        targets = labels.astype(np.float32, copy=False)
        if targets.ndim == len(output_shape):
            return targets
        fixed = output_shape[1:]
        if all(isinstance(d, int) and d > 0 for d in fixed):
            size = int(np.prod(fixed, dtype=np.int64))
            if int(np.prod(targets.shape[1:], dtype=np.int64)) == size:
                return targets.reshape(len(targets), *fixed)
        laid_out = _with_unit_axes(targets.shape[1:], fixed)
        if laid_out is not None:
            return targets.reshape(len(targets), *laid_out)
        shown = ", ".join("?" if d is None else str(d) for d in output_shape)
        whole = labels.dtype.kind == "f" and labels == np.round(labels)
        if not np.any(whole):
            hint = ""
        elif stray is not None:  # class ids and a stray value: the whole column was read as regression targets
            hint = f"; if they are class ids, each must be a whole number, but one is {stray:g}"
        else:
            hint = "; if they are class ids, pass them as integers (labels.astype(int))"
        raise OnnxkitError(
            f"labels of shape {list(labels.shape)} do not match the output's shape [{shown}] "
            f"for the {self.name} loss; give one target per output value{hint}"
        )

    @property
    def reads_logits_of(self) -> str | None:
        """The activation whose input this loss reads when the model's output is that activation:
        its task's op from logits to probabilities (Softmax for cross-entropy, Sigmoid for BCE)."""
        task = next((t for t, loss in TASK_LOSS.items() if loss == self.name), None)
        return PROBABILITIES_OF.get(task) if task else None

    def add_to_graph(self, graph: onnx.GraphProto, output: str, labels: str, logits: str | None = None) -> str:
        """Append this loss's nodes (reading `output` and `labels`); return the scalar loss name.
        `logits`: when `output` is their Softmax (cross-entropy) or Sigmoid (bce-with-logits), the
        loss reads them instead (the log of probabilities underflows, and a second softmax or
        sigmoid would squash them)."""
        nodes: list[onnx.NodeProto] = []

        def node(op: str, inputs: list[str], tag: str, **attrs: object) -> str:
            out = f"{PREFIX}.{tag}"
            nodes.append(helper.make_node(op, inputs, [out], name=f"{PREFIX}/{tag}", **attrs))
            return out

        loss = f"{PREFIX}.value"
        if self.name == "cross-entropy":  # -mean(log_softmax(x)[i, label_i]), over every position i
            log_prob = node("LogSoftmax", [logits or output], "log_prob", axis=self.axis)
            graph.initializer.append(helper.make_tensor(f"{PREFIX}.class_axis", TensorProto.INT64, [1], [self.axis]))
            if self.soft:  # each row's probabilities times its log-probabilities, summed over the classes
                picked = node("ReduceSum", [node("Mul", [labels, log_prob], "weighted"), f"{PREFIX}.class_axis"],
                              "picked", keepdims=0)
            else:
                index = node("Unsqueeze", [labels, f"{PREFIX}.class_axis"], "label_index")
                picked = node("GatherElements", [log_prob, index], "picked", axis=self.axis)
            likelihood = node("ReduceMean", [picked], "mean_picked", keepdims=0)
            if self.smoothing:  # every position has all its classes: their mean over all positions is the mean of means
                graph.initializer.extend(helper.make_tensor(f"{PREFIX}.{name}", TensorProto.FLOAT, [], [value])
                                         for name, value in (("kept", 1 - self.smoothing), ("spread", self.smoothing)))
                spread = node("Mul", [node("ReduceMean", [log_prob], "mean_log_prob", keepdims=0),
                                      f"{PREFIX}.spread"], "spread_part")
                likelihood = node("Add", [node("Mul", [likelihood, f"{PREFIX}.kept"], "kept_part"), spread], "smoothed")
            nodes.append(helper.make_node("Neg", [likelihood], [loss], name=f"{PREFIX}/neg"))
        else:
            graph.initializer.append(helper.make_tensor(f"{PREFIX}.one", TensorProto.FLOAT, [], [1.0]))
            if self.name == "bce-with-logits":
                output = logits or output
                relu = node("Relu", [output], "relu")
                minus_abs = node("Sub", [output, node("Add", [relu, relu], "two_relu")], "minus_abs")
                log1p = node("Log", [node("Add", [node("Exp", [minus_abs], "exp"), f"{PREFIX}.one"], "1p")], "log1p")
                per_item = node("Add", [node("Sub", [relu, node("Mul", [output, labels], "xt")], "lin"), log1p], "item")
            else:
                diff = node("Sub", [output, labels], "diff")
                if self.name == "mse":
                    per_item = node("Mul", [diff, diff], "square")
                else:
                    relu = node("Relu", [diff], "relu")
                    per_item = node("Sub", [node("Add", [relu, relu], "two_relu"), diff], "abs")
            nodes.append(helper.make_node("ReduceMean", [per_item], [loss], name=f"{PREFIX}/mean", keepdims=0))
        graph.node.extend(nodes)
        return loss


def get_loss(name: str) -> Loss:
    """The loss called `name` (or an alias such as ce, bce, l2, mae)."""
    key = ALIASES.get(name, name)
    if key not in NAMES:
        raise OnnxkitError(f"unknown loss {name!r}; choose from {', '.join(NAMES)}.{suggest(name, NAMES)}")
    return Loss(key)


def default_loss(task: str | None, output_shape: tuple[int | str | None, ...], labels: np.ndarray) -> Loss:
    """The loss that fits a task (from metadata) or, failing that, the output and labels."""
    from onnxkit.evaluate import TASK_LOSS, infer_task

    return Loss(TASK_LOSS[infer_task(task, output_shape, labels)])


def _with_unit_axes(found: tuple[int, ...], wanted: tuple[int | str | None, ...]) -> tuple[int, ...] | None:
    """Targets' shape past the batch, `found`, laid out as the output's `wanted` where the two differ only by axes of
    size 1 (a free one taking any size): [N, T] targets of a [batch, 'seq', 1] output, a per-step Linear(..., 1)
    (they were refused, one target per output value as they were); None where they differ otherwise."""
    sizes, shape = [d for d in found if d != 1], []
    for d in wanted:
        if d == 1:
            shape.append(1)
        elif not sizes or isinstance(d, int) and d != sizes[0]:
            return None
        else:
            shape.append(sizes.pop(0))
    return None if sizes else tuple(shape)
