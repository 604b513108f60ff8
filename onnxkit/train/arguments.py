"""fit's arguments checked before anything is read: kinds, names, numbers, seeds, callbacks' hooks, and
another library's keyword for one of fit's settings (a misspelt or foreign keyword says what to pass instead)."""

from __future__ import annotations

import functools
import inspect
import math
import numbers
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnxkit.data import Dataset, Split
from onnxkit.errors import OnnxkitError, suggest
from onnxkit.train.callbacks import Callback
from onnxkit.train.config import FitResult
from onnxkit.train.optim import Optimizer
from onnxkit.train.progress import warn

# what other libraries call fit's settings (Keras, PyTorch Lightning, Hugging Face's Trainer, scikit-learn)
OTHER_NAMES = {
    "learning_rate": "lr", "num_epochs": "epochs", "max_epochs": "epochs", "n_epochs": "epochs", "max_steps": "steps",
    "verbose": "quiet", "output_dir": "out_dir", "run_dir": "out_dir", "log_dir": "out_dir", "logdir": "out_dir",
    "random_state": "seed", "dataset": "data", "train_data": "data", "max_grad_norm": "clip_grad_norm",
    "gradient_clip_val": "clip_grad_norm", "clipnorm": "clip_grad_norm", "lr_scheduler": "schedule",
    "scheduler": "schedule", "gradient_accumulation_steps": "grad_accumulation",
    "accumulate_grad_batches": "grad_accumulation", "per_device_train_batch_size": "batch_size",
}


def keywords_named(function: Callable[..., FitResult]) -> Callable[..., FitResult]:
    """`function` (fit), refusing a keyword it lacks with what to pass instead: an optimizer's option inside that
    optimizer's object, another library's name for a setting as fit's (Python's own 'unexpected keyword argument'
    said neither)."""
    parameters = inspect.signature(function).parameters

    @functools.wraps(function)
    def checked(*args: Any, **kwargs: Any) -> FitResult:
        unknown = next((k for k in kwargs if k not in parameters), None)
        if unknown is not None:
            raise TypeError(f"fit() got an unexpected keyword argument {unknown!r}"
                            f"{_instead(unknown, kwargs[unknown], kwargs.get('optimizer'), parameters)}")
        return function(*args, **kwargs)

    return checked


def _instead(keyword: str, value: Any, optimizer: Any, parameters: Any) -> str:
    """What to pass in place of fit's unknown `keyword`, or ''."""
    from onnxkit.train.optim.spec import REGISTRY

    owners = [cls for cls in REGISTRY.values() if keyword in cls.defaults()]
    if owners:
        chosen = REGISTRY.get(optimizer.lower()) if isinstance(optimizer, str) else None
        owner = next(cls for cls in (chosen, REGISTRY["adamw"], REGISTRY["sgd"], *owners) if cls in owners)
        return (f": {keyword} is an option of the optimizer; pass optimizer={owner.__name__}({keyword}={value!r}) "
                f"from onnxkit.train.optim")
    if keyword in OTHER_NAMES:
        return f"; fit calls it {OTHER_NAMES[keyword]}" + (" (quiet=False shows progress)" if keyword == "verbose"
                                                            else "")
    close = suggest(keyword, list(parameters))
    return f".{close}" if close else ""


def check_out_dir_outside_data(out_dir: str | os.PathLike, data: Any) -> None:
    """Refuse a run folder that is the data's folder (of images) or inside it: the run's files and folders became
    part of the data (checkpoints/ a class folder of no images), so neither eval nor training could read it again."""
    if not isinstance(data, str | os.PathLike) or not Path(data).is_dir():
        return
    folder, run = Path(data).resolve(), Path(out_dir).resolve()
    if run == folder or folder in run.parents:
        where = "the data folder" if run == folder else "inside the data folder"
        raise OnnxkitError(f"out_dir {out_dir} is {where} {data}: the run's files would become part of the data; "
                           "choose another out_dir", params=["out_dir"])


def check_arguments(model: Any, data: Any, out_dir: Any, optimizer: Any, callback: Any, callbacks: Any,
                     *globs: Any) -> None:
    """Refuse arguments of the wrong kind with what to pass instead (before anything is read)."""
    if out_dir is not None and not isinstance(out_dir, str | os.PathLike):
        raise TypeError(f"out_dir must be a folder's path, not {out_dir!r}")
    if model is not None and not isinstance(model, str | os.PathLike | onnx.ModelProto):
        built = " (build it first: onnxkit.nn.build(module, inputs))" if hasattr(model, "forward") else ""
        raise TypeError(f"model must be a .onnx path or an onnx.ModelProto, not {type(model).__name__}{built}")
    if isinstance(data, Split):
        raise TypeError(f"data must be the whole Dataset, not its {data.name!r} Split: fit trains on its train split, "
                        "picks the best epoch on validation and scores test (data=dataset)")
    if data is not None and not isinstance(data, str | os.PathLike | Dataset):
        raise TypeError(f"data must be a dataset name, a .npz/.csv path, a Dataset or (X, y), features and labels, not "
                        f"{type(data).__name__}")
    if isinstance(optimizer, type) and issubclass(optimizer, Optimizer):
        raise TypeError(f"optimizer must be a name or an instance: {optimizer.__name__}(), not the class")
    if optimizer is not None and not isinstance(optimizer, str | Optimizer):
        raise TypeError(f"optimizer must be a name (adamw, sgd, ...) or an onnxkit.train.optim object such as "
                        f"SGD(momentum=0.9), not {type(optimizer).__name__}")
    for name, value in zip(("freeze", "train_only", "drop"), globs, strict=True):
        if not isinstance(value, str) and not (isinstance(value, Sequence) and all(isinstance(g, str) for g in value)):
            what = "a column's header" if name == "drop" else "a glob over parameter names"
            raise TypeError(f"{name} must be {what} or a list of them, not {value!r}")
    if callback is not None and not callable(callback):
        raise TypeError("callback must be a function of one metrics record; pass Callback objects as callbacks=[...]")
    if callback is not None and not _takes_one_argument(callback):  # found at the first step, deep in the loop
        raise TypeError(f"callback must be a function of one argument, the metrics record: callback(record); "
                        f"{getattr(callback, '__name__', type(callback).__name__)}"
                        f"{inspect.signature(callback)} cannot take one")
    if not isinstance(callbacks, list | tuple) or not all(isinstance(c, Callback) for c in callbacks):
        raise TypeError("callbacks must be a list of onnxkit.train.callbacks.Callback objects (a function of one "
                        "record goes to callback=)")
    for c in callbacks:
        _check_hooks(c)


HOOKS = [name for name in vars(Callback) if name.startswith("on_")]


def _check_hooks(callback: Callback) -> None:
    """Refuse a hook that cannot take the trainer's arguments (a TypeError at its first call, deep in the loop);
    warn of an on_* method the trainer never calls (a misspelt hook never ran, unsaid)."""
    kind = type(callback).__name__
    for name in HOOKS:
        if getattr(type(callback), name) is getattr(Callback, name):
            continue
        wanted = [p for p in inspect.signature(getattr(Callback, name)).parameters if p != "self"]
        try:
            signature = inspect.signature(getattr(callback, name))
        except (TypeError, ValueError):
            continue
        try:
            signature.bind(*wanted)
        except TypeError:
            raise TypeError(f"callback {kind}.{name}{signature} must take ({', '.join(wanted)}): the trainer calls "
                            f"it so") from None
        first = next(iter(signature.parameters), None)
        if first in ("epoch", "batch", "logs"):  # Keras's (epoch, logs=None) binds, then gets (trainer, record)
            record = "the epoch is record['epoch'] and Keras's logs are the record; " if "record" in wanted else ""
            raise TypeError(f"callback {kind}.{name}{signature} takes Keras's arguments; the trainer calls "
                            f"{name}({', '.join(wanted)}): {record}trainer.stop_training = True stops training")
    for name in dir(callback):
        if name.startswith("on_") and name not in HOOKS and callable(getattr(callback, name, None)):
            warn(f"callback {kind}.{name} is no hook, so training never calls it.{suggest(name, HOOKS)} The hooks: "
                 f"{', '.join(HOOKS)}")


def _takes_one_argument(function: Callable[..., Any]) -> bool:
    """Whether `function(record)` binds (a callable whose signature cannot be read is given the benefit)."""
    try:
        inspect.signature(function).bind(None)
    except TypeError:
        return False
    except ValueError:
        return True
    return True


def check_flags(**flags: Any) -> None:
    """True/False options are bools (numpy's too; standardize may be None): shuffle="no" read as True."""
    for name, value in flags.items():
        if not isinstance(value, bool | np.bool_) and not (name == "standardize" and value is None):
            raise TypeError(f"{name} must be True or False, not {value!r}")


def check_seeds(**seeds: Any) -> None:
    """Seeds are integers from 0 up (numpy's generators take no others), checked before the data is read."""
    for name, value in seeds.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{name} must be an integer, got {value!r}")
        if value < 0:
            raise OnnxkitError(f"{name} must be 0 or more, got {value}")


def check_names(**names: Any) -> None:
    """Options chosen by name are strings (loss=3 failed with "'int' object is not iterable", output=0 was ignored)."""
    for name, value in names.items():
        if value is not None and not isinstance(value, str):
            raise TypeError(f"{name} must be a name (a string), got {value!r}")


def reals(**values: Any) -> list[float | None]:
    """lr, weight_decay, clip_grad_norm and warmup as floats (numpy's too, for run.json); a string such as
    '0.01' is refused here, not failed on later, and so is infinity or NaN."""
    for name, value in values.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
            raise TypeError(f"{name} must be a number, got {value!r}")
        if value is not None and not math.isfinite(value):
            raise OnnxkitError(f"{name} must be a finite number, got {value}", params=[name])
    return [None if value is None else float(value) for value in values.values()]


def patterns(globs: str | Sequence[str]) -> list[str]:
    """freeze / train_only (drop): one glob (column) or several."""
    return [globs] if isinstance(globs, str) else list(globs)


def check_numbers(epochs: int, steps: int | None, batch_size: int, accumulation: int, patience: int | None,
                   eval_batch_size: int | None) -> None:
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("grad_accumulation", accumulation),
                        ("eval_batch_size", eval_batch_size), ("steps", steps)):
        if value is not None and value < 1:
            raise OnnxkitError(f"{name} must be at least 1, got {value}", params=[name])
    if patience is not None and patience < 1:
        raise OnnxkitError(f"patience must be at least 1 epoch, got {patience}", params=["patience"])

