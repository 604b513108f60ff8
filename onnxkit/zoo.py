"""The model zoo: named recipes in `models/*.py`, or a user's own DSL file.

A recipe file defines `recipe(**options) -> Recipe`; its keyword arguments,
with defaults and type hints, are the options `onnxkit build --set k=v` takes.
The file `models/digits_cnn.py` is the model `digits-cnn`. The recipes live in the
repository's top-level `models/`; `onnxkit/models` links to it, so a wheel carries
them as package data and an installed onnxkit finds them beside this module.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import onnx
from google.protobuf import message as protobuf

from onnxkit import nn
from onnxkit.errors import OnnxkitError, suggest

ZOO_DIR = Path(__file__).resolve().parent / "models"
TASKS = ("classification", "binary", "regression", "embedding")


@dataclass
class Recipe:
    """What a recipe returns: the module, its inputs, and what to record about it."""

    module: nn.Module
    inputs: Mapping[str, nn.Input]
    outputs: Sequence[str] = ("logits",)
    task: str | None = None  # None: training works it out from the output and the labels
    labels: Sequence[str] | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task is not None and self.task not in TASKS:
            raise OnnxkitError(f"unknown task {self.task!r}; choose from {', '.join(TASKS)}")


def names() -> list[str]:
    """Names of the zoo's models."""
    return sorted(p.stem.replace("_", "-") for p in ZOO_DIR.glob("*.py") if not p.stem.startswith("_"))


def _load(name_or_path: str) -> tuple[str, ModuleType]:
    path = Path(name_or_path)
    if name_or_path.endswith(".py"):
        if not path.is_file():
            raise OnnxkitError(f"{path}: no such file; pass a zoo name or the path of a DSL .py file")
        name = path.stem.replace("_", "-")
    else:
        name = name_or_path
        path = ZOO_DIR / f"{name.replace('-', '_')}.py"
        if name not in names():
            raise OnnxkitError(
                f"unknown model {name!r}.{suggest(name, names())} "
                "Run `onnxkit models` to list them, or pass a .py file"
            )
    spec = importlib.util.spec_from_file_location(f"onnxkit_recipe_{path.stem}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    except OnnxkitError:
        raise
    except Exception as e:
        raise OnnxkitError(f"{path}: failed to load: {type(e).__name__}: {e}") from e
    if not callable(getattr(module, "recipe", None)):
        raise OnnxkitError(f"{path}: defines no recipe(**options) function returning onnxkit.zoo.Recipe")
    return name, module


def options(name_or_path: str) -> dict[str, inspect.Parameter]:
    """The options a recipe takes, with their defaults and annotations."""
    _, module = _load(name_or_path)
    return dict(inspect.signature(module.recipe).parameters)


def describe(name_or_path: str) -> str:
    """The first line of the recipe file's docstring."""
    _, module = _load(name_or_path)
    return (module.__doc__ or "").strip().splitlines()[0] if module.__doc__ else ""


def parse_option(value: str, annotation: Any, default: Any) -> Any:
    """Convert a `--set` string to the option's type (from its annotation or default)."""
    kind = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    kind = kind or type(default).__name__
    if "bool" in kind:
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{value!r} is not a boolean")
    if kind.startswith("int"):
        return int(value)
    if kind.startswith("float"):
        return float(value)
    return value


def _is_size(default: Any) -> bool:
    """Whether an option with this default counts something (a width, a class count) and so must be >= 1."""
    return isinstance(default, int) and not isinstance(default, bool) and default > 0


def build_model(name_or_path: str, opset: int = nn.DEFAULT_OPSET, **opts: Any) -> onnx.ModelProto:
    """Build a zoo model (or a DSL file) with options; strings are converted to option types."""
    name, module = _load(name_or_path)
    params = inspect.signature(module.recipe).parameters
    kwargs = {}
    for key, value in opts.items():
        if key not in params:
            raise OnnxkitError(
                f"model {name!r} has no option {key!r}.{suggest(key, params)} "
                f"Options: {', '.join(params) or 'none'}"
            )
        p = params[key]
        if isinstance(value, str):
            try:
                value = parse_option(value, p.annotation, p.default)
            except ValueError as e:
                raise OnnxkitError(f"option {key}={value!r}: {e}") from None
        if _is_size(p.default) and isinstance(value, int) and value < 1:
            raise OnnxkitError(f"option {key}={value}: must be a positive integer (default {p.default})")
        kwargs[key] = value
    shown = ", ".join(f"{k}={v}" for k, v in kwargs.items()) or "its default options"
    try:
        return _build(name, module, kwargs, opset)
    except OnnxkitError:
        raise
    except MemoryError:
        raise OnnxkitError(f"{name} with {shown} does not fit in memory; choose smaller sizes") from None
    except (ValueError, TypeError, ArithmeticError, IndexError, protobuf.Error) as e:
        big = " (an .onnx file holds at most 2 GB)" if isinstance(e, protobuf.Error) else ""
        raise OnnxkitError(f"{name} cannot be built with {shown}{big} ({type(e).__name__}: {e}); "
                           "check the options") from e


def _build(name: str, module: ModuleType, kwargs: dict[str, Any], opset: int) -> onnx.ModelProto:
    recipe: Recipe = module.recipe(**kwargs)
    if not isinstance(recipe, Recipe):
        raise OnnxkitError(f"{name}: recipe() must return onnxkit.zoo.Recipe, got {type(recipe).__name__}")
    metadata: dict[str, Any] = {"onnxkit.recipe": {"name": name, "options": kwargs}, **recipe.metadata}
    if recipe.task is not None:
        metadata["onnxkit.task"] = recipe.task
    if recipe.labels is not None:
        metadata["onnxkit.labels"] = list(recipe.labels)
    return nn.build(
        recipe.module,
        recipe.inputs,
        output_names=list(recipe.outputs),
        name=name,
        doc=(module.__doc__ or "").strip() or None,
        metadata=metadata,
        opset=opset,
    )
