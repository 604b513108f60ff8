"""The training backend seam: what the training loop needs from whatever computes gradients.

A backend turns a `TrainingProblem` (training-form graph, inference-form graph,
loss, trainable names, optimizer) into files in a directory (`build`), and opens
a `TrainingSession` on them (`open`), optionally from a checkpoint; `inference`
runs a plain inference-form graph on the same device (frozen features). The loop
only ever talks to these two classes, so a second backend (standard-ONNX
gradient graphs on any ONNX Runtime) plugs in without touching it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from onnxkit.errors import OnnxkitError, suggest
from onnxkit.train.losses import Loss

OPTIMIZERS = ("adamw", "sgd")


@dataclass(frozen=True)
class OptimizerConfig:
    """Optimizer settings. AdamW decays weights decoupled from the gradient; SGD adds
    `weight_decay/2 * |w|^2` to the loss (the classic L2 form of SGD weight decay)."""

    name: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    clip_grad_norm: float | None = None

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise OnnxkitError(
                f"unknown optimizer {self.name!r}; choose from {', '.join(OPTIMIZERS)}.{suggest(self.name, OPTIMIZERS)}"
            )
        if not self.lr > 0:
            raise OnnxkitError(f"learning rate must be positive, got {self.lr}")
        if self.weight_decay < 0:
            raise OnnxkitError(f"weight decay must be >= 0, got {self.weight_decay}")
        if self.clip_grad_norm is not None and not self.clip_grad_norm > 0:
            raise OnnxkitError(f"gradient clipping norm must be positive, got {self.clip_grad_norm}")


@dataclass
class TrainingProblem:
    """Everything a backend needs to build its artifacts.

    `training_model` is the training form (Dropout/BatchNorm/LayerNorm in training
    mode) with every parameter as an initializer; `eval_model` is the inference
    form with the same initializer names. `trainable` get gradients; `frozen`
    are kept in the checkpoint without gradients (BatchNorm running statistics
    in training mode are updated there by the forward pass).
    """

    training_model: onnx.ModelProto
    eval_model: onnx.ModelProto
    output: str
    loss: Loss
    trainable: list[str]
    frozen: list[str]
    optimizer: OptimizerConfig
    grad_accumulation: int = 1
    labels_name: str = "labels"


class TrainingSession(ABC):
    """An open training state: parameters, gradients, optimizer state."""

    @abstractmethod
    def train_step(self, feeds: Mapping[str, np.ndarray], labels: np.ndarray) -> float:
        """Forward and backward on one batch; gradients add up until `optimizer_step`. Returns the loss."""

    @abstractmethod
    def optimizer_step(self) -> None:
        """Apply the accumulated gradients, then reset them."""

    @abstractmethod
    def set_learning_rate(self, lr: float) -> None:
        """The learning rate for the next optimizer steps."""

    @abstractmethod
    def eval_step(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        """Inference-form forward on one batch: the chosen model output."""

    @abstractmethod
    def parameters(self) -> dict[str, np.ndarray]:
        """Current values of every checkpointed tensor (trainable and frozen), by name."""

    @abstractmethod
    def save_checkpoint(self, path: Path, properties: Mapping[str, str], *, optimizer_state: bool = True) -> None:
        """Write parameters (and optimizer state) plus `properties` to `path`, atomically."""

    @property
    @abstractmethod
    def properties(self) -> dict[str, str]:
        """The properties stored in the checkpoint this session was opened from."""


class Backend(ABC):
    """Builds training artifacts and opens sessions on them."""

    name: str

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
        """The tensors stored in a checkpoint file, by name."""

    @abstractmethod
    def inference(
        self, model: onnx.ModelProto, *, device: str = "cpu", threads: int | None = None
    ) -> Callable[[Mapping[str, np.ndarray]], list[np.ndarray]]:
        """A function running the inference-form `model` on `device`: feeds -> all its outputs."""


def get_backend(name: str = "ort") -> Backend:
    """The backend called `name`; `ort` (ONNX Runtime's training API) is the only one so far."""
    if name != "ort":
        raise OnnxkitError(f"unknown training backend {name!r}; available: ort")
    from onnxkit.train.ort_backend import OrtBackend

    return OrtBackend()
