"""Handwritten digits as 64 flat pixels → 10 classes, a ReLU MLP with dropout."""

from onnxkit import nn
from onnxkit.zoo import Recipe


def recipe(hidden: int = 128, dropout: float = 0.1, seed: int = 0) -> Recipe:
    nn.manual_seed(seed)
    he = "kaiming_uniform"  # this model's init before Linear's default became PyTorch's (its figures)
    mlp = nn.Sequential([
        nn.Linear(64, hidden, init_fn=he), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(hidden, hidden, init_fn=he), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(hidden, 10, init_fn=he),
    ])  # fmt: skip
    return Recipe(mlp, {"x": nn.Input(["batch", 64])}, task="classification",
                  labels=[str(d) for d in range(10)])
