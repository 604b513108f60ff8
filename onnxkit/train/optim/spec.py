"""The optimizer spec: options with torch.optim's names and defaults, state slots, and an update rule.

A spec is a frozen dataclass whose fields are its options. Subclasses register themselves by
`name`; they declare `default_lr` (torch's), a one-line `rule` for the README table, the state
`slots()` each parameter carries, and `update()`, the per-parameter math written with the
expression builder of `graph.py`. The learning rate is not an option: it is a graph input.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, ClassVar

from onnxkit.errors import OnnxkitError, suggest

if TYPE_CHECKING:
    from onnxkit.train.optim.graph import Expr, Step

REGISTRY: dict[str, type[Optimizer]] = {}


class Optimizer:
    """Base of the optimizer specs; construct one with keyword options (or use `get_optimizer`)."""

    name: ClassVar[str]
    default_lr: ClassVar[float]
    rule: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        REGISTRY[cls.name] = cls

    def __init__(self, *given: Any, **options: Any) -> None:
        defaults = self.defaults()
        if given:  # torch's SGD(model.parameters(), lr=0.1) or SGD(0.9): "takes 1 positional argument but 2 were given"
            example = ", ".join(f"{k}={v!r}" for k, v in list(defaults.items())[:1])
            raise TypeError(f"{type(self).__name__} takes its options by keyword ({type(self).__name__}({example})); "
                            "the parameters are the model's, and the learning rate is fit's lr")
        for key in options:
            if key not in defaults:
                hint = " (the learning rate is not an optimizer option: pass lr to fit or the schedule)"
                raise OnnxkitError(
                    f"{self.name} has no option {key!r}; its options: {', '.join(defaults)}."
                    f"{suggest(key, defaults)}{hint if key == 'lr' else ''}"
                )
        for key, default in defaults.items():
            object.__setattr__(self, key, self._coerce(key, options.get(key, default), default))
        self.check()

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Option names and default values, in declaration order."""
        return {f.name: f.default for f in dataclasses.fields(cls)}  # type: ignore[arg-type]

    def options(self) -> dict[str, Any]:
        """This spec's option values (JSON-friendly apart from tuples)."""
        return {key: getattr(self, key) for key in self.defaults()}

    def _coerce(self, key: str, value: Any, default: Any) -> Any:
        """Check a value's type against its default's; numbers must be finite and >= 0 (true of every option here)."""
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise OnnxkitError(f"{self.name} option {key} must be true or false, got {value!r}")
            return value
        values = value if isinstance(default, tuple) else (value,)
        shape_ok = not isinstance(default, tuple) or (isinstance(value, tuple | list) and len(value) == len(default))
        are_numbers = shape_ok and all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values)
        if not are_numbers or not all(math.isfinite(v) and v >= 0 for v in values):
            wanted = f"{len(default)} numbers" if isinstance(default, tuple) else "a number"
            raise OnnxkitError(f"{self.name} option {key} must be {wanted} >= 0, got {value!r}")
        return tuple(float(v) for v in values) if isinstance(default, tuple) else float(value)

    def require(self, ok: bool, what: str) -> None:
        """Raise the user-facing error for an invalid combination of option values."""
        if not ok:
            raise OnnxkitError(f"{self.name}: {what} (got {self._options_text(self.options())})")

    def check(self) -> None:
        """Value checks beyond 'finite and >= 0'."""

    def slots(self) -> dict[str, float]:
        """State slots per parameter: name -> initial value (filled to the parameter's shape)."""
        return {}

    def update(self, p: Expr, g: Expr, s: SimpleNamespace, step: Step) -> Expr:
        """The new parameter value; assign new slot values to `s` (e.g. `s.exp_avg = ...`)."""
        raise NotImplementedError

    @classmethod
    def describe(cls) -> str:
        """One line: name, options with defaults, the update rule and torch's default learning rate."""
        return f"{cls.name}({cls._options_text(cls.defaults())}): {cls.rule}; default lr {cls.default_lr:g}"

    @staticmethod
    def _options_text(options: dict[str, Any]) -> str:
        def text(v: Any) -> str:
            if isinstance(v, tuple):
                return f"({', '.join(map(text, v))})"
            return str(v) if isinstance(v, bool) else f"{v:g}"

        return ", ".join(f"{k}={text(v)}" for k, v in options.items())
