"""The training backend seam: what the training loop needs from whatever computes gradients.

A backend turns a `TrainingProblem` (the objective graph, the inference graph, what to
train, the optimizer) into files in a directory (`build`), and opens a `TrainingSession`
on them (`open`), from a checkpoint or the initial weights; `inference` runs a plain
inference-form graph on the same device (frozen features). The loop talks only to these
classes; backends register themselves by name (`onnxkit.train.backends`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from onnxkit.errors import OnnxkitError
from onnxkit.train.objective import Objective
from onnxkit.train.optim import Optimizer


def step_failure(stage: str, error: Exception) -> OnnxkitError:
    """One line for an onnxruntime error in a training `stage` (training step, optimizer step,
    evaluation): the failing node, whether it is the model's or onnxkit's, and what to do."""
    from onnxkit.runtime.session import error_reason, failed_node

    found = failed_node(error)
    if found is not None and found[1].startswith("onnxkit."):
        return OnnxkitError(f"onnxruntime failed in the {stage} at onnxkit's {error_reason(error)}; this is a bug "
                            "in onnxkit: please report it with the model")
    where = f"the model's {error_reason(error)}" if found is not None else f"onnxruntime: {error_reason(error)}"
    return OnnxkitError(f"the {stage} failed at {where}; check that the model runs on this data by itself "
                        "(onnxkit eval MODEL --data DATA); a batch size fixed inside the graph shows up here")


@dataclass
class TrainingProblem:
    """Everything a backend needs to build its artifacts.

    `objective.model` is the training form plus the loss, with every parameter as an
    initializer; `eval_model` is the inference form with the same initializer names.
    `trainable` get gradients; `buffers` maps each buffer the forward pass updates
    (BatchNorm running statistics) to the training-graph value holding its new value;
    `frozen` are parameters kept as they are.
    """

    objective: Objective
    eval_model: onnx.ModelProto
    output: onnx.ValueInfoProto
    trainable: list[str]
    optimizer: Optimizer
    buffers: dict[str, str] = field(default_factory=dict)
    frozen: list[str] = field(default_factory=list)
    clip_grad_norm: float | None = None
    grad_accumulation: int = 1
    labels_name: str = "labels"
    # a classifier's classes, when its eval graph may also sum validation metrics (`validation_sums`), else None
    validation_classes: int | None = None
    batch_size: int | None = None  # the rows of a training batch, where known: a backend may size its threads by it


class TrainingSession(ABC):
    """An open training state: parameters, gradients, optimizer state."""

    scores_in_graph: bool = False  # its eval graph also sums a classifier's validation metrics (`score_step`)
    weighs_batches: bool = False  # its train_step takes a `weight` other than 1

    @abstractmethod
    def train_step(self, feeds: Mapping[str, np.ndarray], labels: np.ndarray, weight: float = 1.0) -> float:
        """Forward and backward on one batch; gradients add up until `optimizer_step`. Returns the loss (the
        batch's mean). `weight` scales this batch's gradient, on top of the objective's 1/accumulation: an
        epoch's short last step weighs its batches by their rows (only where `weighs_batches`)."""

    @abstractmethod
    def optimizer_step(self, lr: float) -> None:
        """Apply the accumulated gradients with learning rate `lr`, then reset them."""

    @abstractmethod
    def eval_step(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        """Inference-form forward on one batch: the chosen model output."""

    def score_step(self, feeds: Mapping[str, np.ndarray], labels: np.ndarray, out: np.ndarray) -> None:
        """Inference-form forward on one batch of class ids `labels`, writing their validation sums
        (`onnxkit.train.validation_sums`) into `out`; only where `scores_in_graph`."""
        raise OnnxkitError(f"the {type(self).__name__} does not sum validation metrics in its eval graph")

    @abstractmethod
    def parameters(self) -> dict[str, np.ndarray]:
        """Current values of the trained tensors (parameters and updated buffers), by name: copies
        (later steps leave them alone)."""

    def gradients(self) -> dict[str, np.ndarray]:
        """The gradients accumulated since the last optimizer step (data-parallel training)."""
        raise OnnxkitError(f"the {type(self).__name__} cannot expose its gradients; use the onnx backend")

    def set_gradients(self, gradients: Mapping[str, np.ndarray]) -> None:
        """Replace the accumulated gradients (e.g. with their mean over all workers)."""
        raise OnnxkitError(f"the {type(self).__name__} cannot set its gradients; use the onnx backend")

    def buffers(self) -> dict[str, np.ndarray]:
        """The buffers the forward pass updates (BatchNorm running statistics), by name: copies."""
        raise OnnxkitError(f"the {type(self).__name__} cannot expose its buffers; use the onnx backend")

    def set_buffers(self, values: Mapping[str, np.ndarray]) -> None:
        """Replace buffers (e.g. by their mean over all workers)."""
        raise OnnxkitError(f"the {type(self).__name__} cannot set its buffers; use the onnx backend")

    @property
    @abstractmethod
    def steps(self) -> int:
        """Optimizer steps taken since training began (restored from a checkpoint)."""

    @abstractmethod
    def save_checkpoint(self, path: Path, *, optimizer_state: bool = True) -> None:
        """Write parameters (and optimizer state) to `path`, atomically."""


class Backend(ABC):
    """Builds training artifacts and opens sessions on them."""

    name: str
    sets_gradients: bool = False  # its sessions implement gradients()/set_gradients() (data-parallel training)
    keeps_padding_rows: bool = False  # its gradients honour Gather nodes' padding rows (nn.Embedding(padding_idx))
    # it updates BatchNorm's running variance from the training form's outputs (as PyTorch, with the unbiased batch
    # variance), not in place inside the BatchNormalization kernel (the population variance)
    unbiased_running_var: bool = False

    def unsupported(self, model: onnx.ModelProto, trainable: Sequence[str], loss: str) -> list[tuple[str, str]]:
        """(op type, node) pairs on the gradient path this backend cannot differentiate."""
        return []

    def refuse_optimizer(self, optimizer: Optimizer, clip_grad_norm: float | None) -> None:  # noqa: B027
        """Raise a clear error when this backend cannot run `optimizer` as configured."""

    def l2_in_objective(self, optimizer: Optimizer) -> float:
        """The L2 coefficient the objective must carry because the optimizer cannot decay itself."""
        return 0.0

    @abstractmethod
    def resolve_device(self, device: str) -> str:
        """`auto`, `cpu`, `cuda` or `cuda:N` -> the concrete device; a clear error if unavailable."""

    @abstractmethod
    def build(self, problem: TrainingProblem, directory: Path) -> None:
        """Write the artifacts for `problem` into the existing `directory`."""

    @abstractmethod
    def open(
        self, directory: Path, *, device: str = "cpu", checkpoint: Path | None = None, threads: int | None = None
    ) -> TrainingSession:
        """A session on the artifacts in `directory`, from `checkpoint` or the initial weights."""

    @abstractmethod
    def checkpoint_parameters(self, path: Path) -> dict[str, np.ndarray]:
        """The trained tensors stored in a checkpoint file, by name."""

    @abstractmethod
    def inference(
        self, model: onnx.ModelProto, *, device: str = "cpu", threads: int | None = None
    ) -> Callable[[Mapping[str, np.ndarray]], list[np.ndarray]]:
        """A function running the inference-form `model` on `device`: feeds -> all its outputs."""
