"""RMSprop, optionally centered and with momentum (torch.optim.RMSprop)."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

from onnxkit.train.optim.graph import Expr, Step
from onnxkit.train.optim.spec import Optimizer


@dataclass(frozen=True, init=False)
class RMSprop(Optimizer):
    name = "rmsprop"
    default_lr = 1e-2
    rule = (
        "g += wd·p; v = α·v + (1−α)·g²; centered: a = α·a + (1−α)·g, v −= a²; "
        "d = g / (√v + eps); momentum: b = μ·b + d, d = b; p −= lr·d"
    )

    alpha: float = 0.99
    eps: float = 1e-8
    weight_decay: float = 0.0
    momentum: float = 0.0
    centered: bool = False

    def check(self) -> None:
        self.require(self.alpha <= 1, "alpha must lie in [0, 1]")

    def slots(self) -> dict[str, float]:
        names = ["square_avg"] + ["grad_avg"] * self.centered + ["momentum_buffer"] * bool(self.momentum)
        return dict.fromkeys(names, 0.0)

    def update(self, p: Expr, g: Expr, s: SimpleNamespace, step: Step) -> Expr:
        a = self.alpha
        if self.weight_decay:
            g = g + self.weight_decay * p
        s.square_avg = a * s.square_avg + (1 - a) * g * g
        v = s.square_avg
        if self.centered:
            s.grad_avg = a * s.grad_avg + (1 - a) * g
            v = v - s.grad_avg * s.grad_avg
        d = g / (v.sqrt() + self.eps)
        if self.momentum:
            d = s.momentum_buffer = self.momentum * s.momentum_buffer + d
        return p - step.lr * d
