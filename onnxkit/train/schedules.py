"""Learning-rate schedules: constant, linear warm-up + linear decay, cosine (with warm-up)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from onnxkit.errors import OnnxkitError, suggest

SCHEDULES = ("constant", "linear", "cosine")


def warmup_steps(warmup: float, total_steps: int) -> int:
    """`warmup` as a number of steps (>= 1) or a fraction of all steps (< 1)."""
    if warmup < 0:
        raise OnnxkitError(f"warm-up must be >= 0 (steps, or a fraction below 1), got {warmup}")
    return int(round(warmup * total_steps)) if warmup < 1 else int(warmup)


@dataclass(frozen=True)
class Schedule:
    """The learning rate for each optimizer step (0-based)."""

    name: str
    base_lr: float
    total_steps: int
    warmup_steps: int = 0

    def __post_init__(self) -> None:
        if self.name not in SCHEDULES:
            raise OnnxkitError(
                f"unknown schedule {self.name!r}; choose from {', '.join(SCHEDULES)}.{suggest(self.name, SCHEDULES)}"
            )

    def lr(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.base_lr * (step + 1) / self.warmup_steps
        if self.name == "constant":
            return self.base_lr
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        if self.name == "linear":
            return self.base_lr * (1.0 - progress)
        return self.base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))
