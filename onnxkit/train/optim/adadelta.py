"""Adadelta with L2 weight decay (torch.optim.Adadelta)."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

from onnxkit.train.optim.graph import Expr, Step
from onnxkit.train.optim.spec import Optimizer


@dataclass(frozen=True, init=False)
class Adadelta(Optimizer):
    name = "adadelta"
    default_lr = 1.0
    rule = "g += wd·p; v = ρ·v + (1−ρ)·g²; Δ = √(u + eps) / √(v + eps) · g; u = ρ·u + (1−ρ)·Δ²; p −= lr·Δ"

    rho: float = 0.9
    eps: float = 1e-6
    weight_decay: float = 0.0

    def check(self) -> None:
        self.require(self.rho <= 1, "rho must lie in [0, 1]")

    def slots(self) -> dict[str, float]:
        return {"square_avg": 0.0, "acc_delta": 0.0}

    def update(self, p: Expr, g: Expr, s: SimpleNamespace, step: Step) -> Expr:
        r = self.rho
        if self.weight_decay:
            g = g + self.weight_decay * p
        s.square_avg = r * s.square_avg + (1 - r) * g * g
        delta = (s.acc_delta + self.eps).sqrt() / (s.square_avg + self.eps).sqrt() * g
        s.acc_delta = r * s.acc_delta + (1 - r) * delta * delta
        return p - step.lr * delta
