"""Adam and AdamW, with AMSGrad (torch.optim.Adam, torch.optim.AdamW)."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

from onnxkit.train.optim.graph import Expr, Step
from onnxkit.train.optim.spec import Optimizer


@dataclass(frozen=True, init=False)
class Adam(Optimizer):
    name = "adam"
    default_lr = 1e-3
    rule = (
        "g += wd·p; m = β1·m + (1−β1)·g; v = β2·v + (1−β2)·g²; with amsgrad v = v_max = max(v_max, v); "
        "p −= lr·m̂ / (√v̂ + eps), m̂ = m/(1−β1ᵗ), v̂ = v/(1−β2ᵗ)"
    )
    decoupled = False

    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    amsgrad: bool = False

    def check(self) -> None:
        self.require(all(b < 1 for b in self.betas), "betas must lie in [0, 1)")

    def slots(self) -> dict[str, float]:
        return dict.fromkeys(["exp_avg", "exp_avg_sq"] + ["max_exp_avg_sq"] * self.amsgrad, 0.0)

    def update(self, p: Expr, g: Expr, s: SimpleNamespace, step: Step) -> Expr:
        b1, b2 = self.betas
        if self.weight_decay and self.decoupled:
            p = (1 - step.lr * self.weight_decay) * p
        elif self.weight_decay:
            g = g + self.weight_decay * p
        s.exp_avg = b1 * s.exp_avg + (1 - b1) * g
        s.exp_avg_sq = b2 * s.exp_avg_sq + (1 - b2) * g * g
        v = s.exp_avg_sq
        if self.amsgrad:  # torch keeps the max of the raw v and bias-corrects that
            v = s.max_exp_avg_sq = s.max_exp_avg_sq.maximum(v)
        # m̂ / (√v̂ + eps) with the bias corrections folded into scalars: one pass fewer over p
        root = step.bias_correction(b2).sqrt()
        return p - step.lr * root / step.bias_correction(b1) * s.exp_avg / (v.sqrt() + self.eps * root)


@dataclass(frozen=True, init=False)
class AdamW(Adam):
    name = "adamw"
    rule = "p *= 1 − lr·wd (decoupled weight decay), then Adam without L2"
    decoupled = True

    weight_decay: float = 0.01
