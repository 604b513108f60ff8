"""SGD with optional momentum, dampening, Nesterov momentum and L2 weight decay (torch.optim.SGD)."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

from onnxkit.train.optim.graph import Expr, Step
from onnxkit.train.optim.spec import Optimizer


@dataclass(frozen=True, init=False)
class SGD(Optimizer):
    name = "sgd"
    default_lr = 1e-3
    rule = "g += wd·p; b = μ·b + (1−dampening)·g (b = g on step 1); g = g + μ·b if nesterov else b; p −= lr·g"

    momentum: float = 0.0
    dampening: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False

    def check(self) -> None:
        self.require(self.dampening <= 1, "dampening must lie in [0, 1]")
        self.require(
            not self.nesterov or (self.momentum > 0 and self.dampening == 0),
            "nesterov needs momentum > 0 and dampening = 0",
        )

    def slots(self) -> dict[str, float]:
        return {"momentum_buffer": 0.0} if self.momentum else {}

    def update(self, p: Expr, g: Expr, s: SimpleNamespace, step: Step) -> Expr:
        if self.weight_decay:
            g = g + self.weight_decay * p
        if self.momentum:
            fresh = step.if_first(1.0, 1 - self.dampening) * g if self.dampening else g
            s.momentum_buffer = self.momentum * s.momentum_buffer + fresh
            g = g + self.momentum * s.momentum_buffer if self.nesterov else s.momentum_buffer
        return p - step.lr * g
