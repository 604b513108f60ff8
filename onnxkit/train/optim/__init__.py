"""Optimizers as ONNX update graphs: one small spec per optimizer (torch.optim's algorithms,
option names and defaults), and `update_model`, which builds one graph that steps all parameters.

    spec = get_optimizer("adamw", betas=(0.9, 0.98))
    model = update_model(spec, [("fc.weight", (10, 64)), ("fc.bias", (10,))], clip_grad_norm=1.0)

See `graph.py` for the graph's input and output names. A new optimizer is one new module with
an `Optimizer` subclass, imported below.
"""

from __future__ import annotations

import inspect
from typing import Any

from onnxkit.errors import OnnxkitError, suggest
from onnxkit.train.optim.adadelta import Adadelta
from onnxkit.train.optim.adagrad import Adagrad
from onnxkit.train.optim.adam import Adam, AdamW
from onnxkit.train.optim.graph import Expr, Step, initial_state, state_names, update_model
from onnxkit.train.optim.rmsprop import RMSprop
from onnxkit.train.optim.sgd import SGD
from onnxkit.train.optim.spec import REGISTRY, Optimizer

OPTIMIZERS = tuple(REGISTRY)


def _document(cls: type[Optimizer]) -> None:
    """help(SGD) and a notebook's signature hints show the options and their defaults, in place of
    the dataclass's generated 'SGD(**options: Any) -> None'."""
    options = [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=v) for k, v in cls.defaults().items()]
    cls.__signature__ = inspect.Signature(options)  # type: ignore[attr-defined]
    if not cls.__doc__ or cls.__doc__.startswith(f"{cls.__name__}("):
        cls.__doc__ = (f"{cls.describe()}.\n\ntorch.optim.{cls.__name__}'s options and defaults; pass it to "
                       f"fit(optimizer=...), and the learning rate as fit's lr.")


for _cls in REGISTRY.values():
    _document(_cls)

__all__ = [
    "OPTIMIZERS",
    "SGD",
    "Adadelta",
    "Adagrad",
    "Adam",
    "AdamW",
    "Expr",
    "Optimizer",
    "RMSprop",
    "Step",
    "get_optimizer",
    "initial_state",
    "optimizer_table",
    "state_names",
    "update_model",
]


def get_optimizer(name: str, **options: Any) -> Optimizer:
    """The spec registered as `name` (case-insensitive) with `options` over torch's defaults."""
    key = name.lower()
    if key not in REGISTRY:
        choices = ", ".join(OPTIMIZERS)
        raise OnnxkitError(f"unknown optimizer {name!r}; choose from {choices}.{suggest(key, OPTIMIZERS)}")
    return REGISTRY[key](**options)


def optimizer_table() -> str:
    """A Markdown table of the optimizers: options with defaults, update rule, default learning rate."""
    rows = ["| optimizer | options (defaults) | update per parameter | default lr |", "|---|---|---|---|"]
    for cls in REGISTRY.values():
        rows.append(f"| {cls.name} | {cls._options_text(cls.defaults())} | {cls.rule} | {cls.default_lr:g} |")
    return "\n".join(rows)
