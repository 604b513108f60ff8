"""The types around `fit`: its configuration (stored in run.json), its result,
the graph-adapter hook (e.g. LoRA) and the exception for Ctrl-C or SIGTERM."""

from __future__ import annotations

import json
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import onnx

from onnxkit.train.optim import Optimizer, get_optimizer

INTEGERS = ("epochs", "steps", "batch_size", "grad_accumulation", "eval_batch_size", "patience", "seed", "data_seed")


class GraphAdapter(Protocol):
    """A rewrite of the inference graph around training (e.g. LoRA adapters).

    `apply` returns the inference-form model to train (it may add parameters);
    `trainable` names the parameters to train by default (None: all);
    `merge` turns the trained adapted model back into a plain one; an optional `settings()`
    says what decides the adapted graph (see `adapter_settings`), an optional `notes()` lists
    warnings about it for the user (after `apply`).
    """

    def apply(self, model: onnx.ModelProto) -> onnx.ModelProto: ...

    def trainable(self, model: onnx.ModelProto) -> list[str] | None: ...

    def merge(self, model: onnx.ModelProto) -> onnx.ModelProto: ...


def adapter_settings(adapter: GraphAdapter | None) -> dict[str, Any] | None:
    """What decides an adapter's graph, from its optional `settings()` (JSON values): stored in
    run.json and checked on resume; None for an adapter without one."""
    settings = getattr(adapter, "settings", None)
    return settings() if settings else None


@dataclass
class TrainConfig:
    """Everything that decides a run's result; stored in run.json for --resume."""

    model: str
    model_sha256: str
    data: str
    data_seed: int = 0
    label: str | None = None  # a CSV's label column by its header (None: the one headed as labels, else the last)
    drop: list[str] = field(default_factory=list)  # a CSV's columns left out, by their headers
    output: str | None = None
    loss: str | None = None
    label_smoothing: float | None = None  # cross-entropy's (Loss.smoothed); None: the model recipe's, for cross-entropy
    optimizer: str = "adamw"
    optimizer_options: dict[str, Any] = field(default_factory=dict)
    lr: float = 1e-3
    clip_grad_norm: float | None = None
    schedule: str = "constant"
    warmup: float = 0
    epochs: int = 10
    steps: int | None = None
    batch_size: int = 64
    grad_accumulation: int = 1
    eval_batch_size: int | None = None
    seed: int = 0
    shuffle: bool = True
    dropout: bool = True
    freeze: list[str] = field(default_factory=list)
    train_only: list[str] = field(default_factory=list)
    monitor: str | None = None
    patience: int | None = None
    patience_from_step: int = 0  # early stopping stops no run before this optimizer step (the automatic defaults')
    keep_best: bool = True
    evaluate_test: bool = True
    backend: str = "onnx"
    adapter: str | None = None
    adapter_settings: dict[str, Any] | None = None
    data_in_memory: bool = False
    data_sha256: str = ""  # of a data file, checked on resume and recorded in the model for eval (its default data)
    data_fingerprint: str = ""  # of an in-memory Dataset (`Dataset.fingerprint`), checked on resume
    cache_features: bool = True
    standardize: bool | None = False  # None: decided from the data when training starts (then stored as a bool)
    model_recipe: dict[str, Any] | None = None  # the zoo recipe and options of the model built for the data, if any

    def __post_init__(self) -> None:
        """Counts and seeds are integers (2.5 epochs or a batch of 16.0 is refused; numpy integers are kept as int)."""
        for name in INTEGERS:
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
                raise TypeError(f"{name} must be an integer, got {value!r}")
            setattr(self, name, None if value is None else int(value))

    def optimizer_spec(self) -> Optimizer:
        """The optimizer with its options (the learning rate comes from the schedule)."""
        return get_optimizer(self.optimizer, **self.optimizer_options)


@dataclass
class FitResult:
    """What `fit` returns: where things are and how training went.

    - `run_dir`: the run folder (`out_dir`); `model_path`: the trained inference model in it (model.onnx).
    - `metrics`: `epochs` and `steps` run, `best_epoch` and the `monitor` that chose it, that epoch's
      `train_loss` and `validation` metrics, and `test`: `onnxkit.evaluate.evaluate`'s metrics on the
      test split (absent with `evaluate_test=False` or no test split).
    - `history`: one metrics.jsonl record per epoch (`epoch`, `train_loss`, `val_loss`, `val_accuracy`, ...).
    - `stopped_early`: early stopping or a callback ended training before its last epoch.
    - `trainable` / `frozen`: the parameter names that trained and those that stayed fixed.
    - `epochs`, `steps`, `best_epoch`: those of `metrics`, as the one-line repr shows them.
    """

    run_dir: Path
    model_path: Path
    metrics: dict[str, Any]
    history: list[dict[str, Any]]
    stopped_early: bool
    trainable: list[str]
    frozen: list[str]

    @property
    def epochs(self) -> int:
        return self.metrics["epochs"]

    @property
    def steps(self) -> int:
        return self.metrics["steps"]

    @property
    def best_epoch(self) -> int | None:
        return self.metrics.get("best_epoch")

    def __repr__(self) -> str:
        """One line: the model, how long it trained and its test (else validation) scores, not every record."""
        m = self.metrics
        scores = m.get("test") or m.get("validation") or {}
        shown = ", ".join(f"{k}={scores[k]:.4g}" for k in ("accuracy", "macro_f1", "r2", "mae", "loss")
                          if isinstance(scores.get(k), int | float))
        where = "test" if m.get("test") else "validation"
        return (f"FitResult(model_path={str(self.model_path)!r}, epochs={m.get('epochs')}, steps={m.get('steps')}, "
                f"best_epoch={m.get('best_epoch')}, {where}: {shown or 'no scores'}, "
                f"stopped_early={self.stopped_early}, {len(self.trainable)} trainable / {len(self.frozen)} frozen "
                "parameter tensors)")


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during training: a checkpoint was written to `checkpoint` first."""

    def __init__(self, run_dir: Path, checkpoint: Path, epoch: int, step: int, signum: int = 2) -> None:
        call = f"fit(resume={str(run_dir)!r})"
        if _in_memory(run_dir):  # a Dataset object or (X, y) arrays: given again, or the resume is refused
            call = f"{call[:-1]}, data=...), passing the same in-memory data again"
        super().__init__(f"interrupted in epoch {epoch} after step {step}: checkpoint saved to {checkpoint}; continue "
                         f"with {call}")
        self.run_dir, self.checkpoint, self.epoch, self.step = run_dir, checkpoint, epoch, step
        self.signum = signum  # SIGINT (2) or SIGTERM (15)


def _in_memory(run_dir: Path) -> bool:
    """Whether the run in `run_dir` trained on data in memory (a Dataset object, (X, y)), which a resume is given
    again; False where its run.json cannot be read."""
    try:
        return bool(json.loads((Path(run_dir) / "run.json").read_text())["config"].get("data_in_memory"))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
