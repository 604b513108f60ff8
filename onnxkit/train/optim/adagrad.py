"""Adagrad with learning-rate decay and L2 weight decay (torch.optim.Adagrad)."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

from onnxkit.train.optim.graph import Expr, Step
from onnxkit.train.optim.spec import Optimizer


@dataclass(frozen=True, init=False)
class Adagrad(Optimizer):
    name = "adagrad"
    default_lr = 1e-2
    rule = "g += wd·p; sum += g²; p −= lr / (1 + (t−1)·lr_decay) · g / (√sum + eps)"

    lr_decay: float = 0.0
    weight_decay: float = 0.0
    initial_accumulator_value: float = 0.0
    eps: float = 1e-10

    def slots(self) -> dict[str, float]:
        return {"sum": self.initial_accumulator_value}

    def update(self, p: Expr, g: Expr, s: SimpleNamespace, step: Step) -> Expr:
        if self.weight_decay:
            g = g + self.weight_decay * p
        lr = step.lr / (1 + (step.t - 1) * self.lr_decay) if self.lr_decay else step.lr
        s.sum = s.sum + g * g
        return p - lr * g / (s.sum.sqrt() + self.eps)
