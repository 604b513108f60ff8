"""The model zoo: named recipes in `models/*.py`, or a user's own DSL file.

A recipe file defines `recipe(**options) -> Recipe`; its keyword arguments,
with defaults and type hints, are the options `onnxkit build --set k=v` takes.
The file `models/digits_cnn.py` is the model `digits-cnn`. The recipes live in the
repository's top-level `models/`; `onnxkit/models` links to it, so a wheel carries
them as package data and an installed onnxkit finds them beside this module.
"""

from __future__ import annotations

import difflib
import importlib.util
import inspect
import numbers
import os
import sys
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import onnx
from google.protobuf import message as protobuf

from onnxkit import nn
from onnxkit.errors import MissingPackage, OnnxkitError, suggest
from onnxkit.metadata_keys import LABELS_KEY, RECIPE_KEY, TASK_KEY
from onnxkit.nn.build import MAX_OPSET, unexpected_keyword_hint

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
        _check_class_names(self.labels)


def _check_class_names(labels: Sequence[str] | None) -> None:
    """One error for class names that are empty or given twice (`labels=a,a,b`): data labelled `a` trained one of
    the two outputs, and `eval` and `predict` answered a class no name told apart."""
    names = [str(n) for n in labels or ()]
    if any(not n.strip() for n in names):
        raise OnnxkitError(f"class {names.index(next(n for n in names if not n.strip()))} has no name among the "
                           "labels; give each class a name")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise OnnxkitError(f"the labels name more than one class {' and '.join(map(repr, twice))}; give each class "
                           "its own name")


def names() -> list[str]:
    """Names of the zoo's models."""
    return sorted(p.stem.replace("_", "-") for p in ZOO_DIR.glob("*.py") if not p.stem.startswith("_"))


def _load(name_or_path: str | os.PathLike) -> tuple[str, ModuleType]:
    if not isinstance(name_or_path, str | os.PathLike):
        raise TypeError(f"pass a zoo model's name or the path of a DSL .py file, not {type(name_or_path).__name__}")
    name_or_path = os.fspath(name_or_path)  # a pathlib.Path was "'PosixPath' object has no attribute 'endswith'"
    path = Path(name_or_path)
    if name_or_path.endswith(".py"):
        if not path.is_file():
            raise OnnxkitError(f"{path}: no such file; pass a zoo name or the path of a DSL .py file")
        name = path.stem.replace("_", "-")
    else:
        name = name_or_path
        path = ZOO_DIR / f"{name.replace('-', '_')}.py"
        if name not in names() and name.lower().endswith(".onnx"):  # an .onnx model is what build makes
            raise OnnxkitError(f"{name}: build makes an .onnx file from a zoo name or a DSL .py file, not from an "
                               ".onnx file; train, quantize, predict or inspect a model as it is")
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
    except Exception as e:
        error = _in_user_code(e, module)
        if error:
            raise error from e
        if isinstance(e, OnnxkitError):
            raise
        raise OnnxkitError(f"{path}: failed to load: {type(e).__name__}: {e}") from e
    if not callable(getattr(module, "recipe", None)):
        import onnx

        built = next((k for k, v in vars(module).items() if isinstance(v, onnx.ModelProto)), None)
        also = (f" (it builds {built!r}, an onnx.ModelProto, on import: save that with onnx.save, or return its "
                "module from recipe())") if built else ""
        raise OnnxkitError(f"{path}: defines no recipe(**options) function returning onnxkit.zoo.Recipe{also}; "
                           "end it with: def recipe(): return Recipe(MyModel(), {'x': nn.Input(['batch', 64])}) "
                           "(from onnxkit.zoo import Recipe)")
    return name, module


def options(name_or_path: str | os.PathLike) -> dict[str, inspect.Parameter]:
    """The options a recipe takes, with their defaults and annotations."""
    _, module = _load(name_or_path)
    return dict(inspect.signature(module.recipe).parameters)


def describe(name_or_path: str | os.PathLike) -> str:
    """The first line of the recipe file's docstring."""
    _, module = _load(name_or_path)
    return (module.__doc__ or "").strip().splitlines()[0] if module.__doc__ else ""


def parse_option(value: str, annotation: Any, default: Any) -> Any:
    """Convert a `--set` string to the option's type (from its annotation, `int | None` read as int, or else from its
    default)."""
    if annotation is inspect.Parameter.empty:
        kind = type(default).__name__
    else:
        kind = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", None) or str(annotation)
    if "bool" in kind:
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{value!r} is not a boolean")
    if kind.startswith("int"):
        number, what = int, "a whole number"
    elif kind.startswith("float"):
        number, what = float, "a number"
    else:
        return value
    try:
        return number(value)
    except ValueError:  # int('abc') says "invalid literal for int() with base 10"
        raise ValueError(f"{value!r} is not {what} (default {default!r})") from None


def _is_size(default: Any) -> bool:
    """Whether an option with this default counts something (a width, a class count) and so must be >= 1."""
    return isinstance(default, int) and not isinstance(default, bool) and default > 0


class OptionError(OnnxkitError):
    """A recipe option that the recipe lacks, or a value that does not fit it (for the CLI, a malformed command)."""


def build_model(name_or_path: str | os.PathLike, opset: int = nn.DEFAULT_OPSET, **opts: Any) -> onnx.ModelProto:
    """Build a zoo model by name ("digits-cnn") or a DSL .py file (a str or a Path) with its recipe's options;
    returns the checked onnx.ModelProto (`onnx.save` it). Strings are converted to the options' types, as --set's."""
    if isinstance(opset, bool) or not isinstance(opset, numbers.Integral):  # else blamed on the recipe's options
        raise TypeError(f"opset must be an integer, 13..{MAX_OPSET}, not {opset!r}")
    name, module = _load(name_or_path)
    params = inspect.signature(module.recipe).parameters
    kwargs = {}
    for key, value in opts.items():
        if key not in params:
            raise OptionError(
                f"model {name!r} has no option {key!r}.{suggest(key, params)} "
                f"Options: {', '.join(params) or 'none'}"
            )
        p = params[key]
        if isinstance(value, str):
            try:
                value = parse_option(value, p.annotation, p.default)
            except ValueError as e:
                raise OptionError(f"option {key}={value!r}: {e}") from None
        if _is_size(p.default) and isinstance(value, int) and value < 1:
            raise OptionError(f"option {key}={value}: must be a positive integer (default {p.default})")
        kwargs[key] = value
    try:
        return _build(name, module, kwargs, opset)
    except Exception as e:
        error = _build_error(e, name, module, kwargs)
        if error is None:
            raise
        raise error from e


def _build_error(e: Exception, name: str, module: ModuleType, kwargs: dict[str, Any]) -> OnnxkitError | None:
    """The one-line error for a failed build, or None to let `e` through as it is.

    An exception with a place in a user's recipe file is reported there; any other (a zoo
    recipe's, or one raised by the call `recipe(**options)` itself) is about the option values.
    """
    shown = ", ".join(f"{k}={v}" for k, v in kwargs.items()) or "its default options"
    if isinstance(e, MemoryError):
        return OnnxkitError(f"{name} with {shown} does not fit in memory; choose smaller sizes")
    located = _in_user_code(e, module)
    if located:
        return located
    if isinstance(e, MissingPackage):  # not the options' fault: its own line, with what to install
        return None
    if isinstance(e, OnnxkitError):  # a layer refusing a value: one of the options given, if any was
        return OptionError(f"{name} with {shown}: {e}") if kwargs else None
    if not isinstance(e, (ValueError, TypeError, ArithmeticError, IndexError, protobuf.Error)):
        return None
    big = " (an .onnx file holds at most 2 GB)" if isinstance(e, protobuf.Error) else ""
    return OnnxkitError(f"{name} cannot be built with {shown}{big} ({type(e).__name__}: {e}); check the options")


def _in_user_code(e: Exception, module: ModuleType) -> OnnxkitError | None:
    """`e` as one line at its place in the user's recipe file (`net.py:12: NameError: ...`),
    with a hint when one helps; None for a zoo recipe, or when no line of the file is involved."""
    file = module.__file__ or ""
    line, made = (None, "") if Path(file).parent == ZOO_DIR else _line_in(e, file)
    if line is None:
        return None
    what = str(e) if isinstance(e, OnnxkitError) else _describe(e)
    hint = _hint(e)
    where = os.path.relpath(file) if Path(file).is_relative_to(Path.cwd()) else file
    message = f"{where}:{line}: {what}{'.' if hint else ''}{hint}{made}"
    return OnnxkitError(" ".join(message.split()))  # a message of several lines becomes one


_MODULE_CALL = nn.Module.__call__.__code__


def _line_in(e: BaseException, file: str) -> tuple[int | None, str]:
    """The line of `file` nearest where `e` was raised: its innermost traceback frame there, or where the
    innermost layer being traced was made there (say, a Sequential's child, or a layer of the wrong sizes); and
    then ' (called at line N)', the line that called that layer (a wrong argument is fixed there)."""
    line = e.lineno if isinstance(e, SyntaxError) and e.filename == file else None
    called = in_file = None  # the line calling the layer; the innermost line of the file so far
    for frame, lineno in traceback.walk_tb(e.__traceback__):
        if frame.f_code is _MODULE_CALL:
            made_in, made_at = getattr(frame.f_locals["self"], "_created_at", ("", 0))
            if made_in == file:
                line, called = made_at, in_file
        elif frame.f_code.co_filename == file:
            line = in_file = lineno
            called = None
    return line, f" (called at line {called})" if called is not None and called != line else ""


def _describe(e: Exception) -> str:
    """`NameError: name 'foo' is not defined` (a SyntaxError without its file and line)."""
    message = e.msg if isinstance(e, SyntaxError) else str(e)
    return f"{type(e).__name__}: {message}" if message else type(e).__name__


def _hint(e: Exception) -> str:
    """' Did you mean: ReLU?' for a misspelt attribute (`nn.Relu`, `self.fcc`) or name, else ''."""
    if isinstance(e, AttributeError) and e.name and e.obj is not None:
        return suggest(e.name, [n for n in dir(e.obj) if not n.startswith("_")])
    if isinstance(e, NameError) and e.name and e.__traceback__:
        *_, (frame, _) = traceback.walk_tb(e.__traceback__)
        # builtins only when nearly spelt so ('lenn' -> len), not any short name ('widht' -> id, int)
        builtins = [n for n in frame.f_builtins if difflib.SequenceMatcher(None, e.name, n).ratio() >= 0.8]
        return suggest(e.name, [*frame.f_globals, *frame.f_locals, *builtins])
    return unexpected_keyword_hint(e) if isinstance(e, TypeError) else ""


def _build(name: str, module: ModuleType, kwargs: dict[str, Any], opset: int) -> onnx.ModelProto:
    recipe: Recipe = module.recipe(**kwargs)
    if not isinstance(recipe, Recipe):
        raise OnnxkitError(f"{name}: recipe() must return onnxkit.zoo.Recipe, got {type(recipe).__name__}")
    metadata: dict[str, Any] = {RECIPE_KEY: {"name": name, "options": kwargs}, **recipe.metadata}
    if recipe.task is not None:
        metadata[TASK_KEY] = recipe.task
    if recipe.labels is not None:
        metadata[LABELS_KEY] = list(recipe.labels)
    return nn.build(
        recipe.module,
        recipe.inputs,
        output_names=list(recipe.outputs),
        name=name,
        doc=(module.__doc__ or "").strip() or None,
        metadata=metadata,
        opset=opset,
    )
