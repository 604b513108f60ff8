"""The click options several commands share, and the one set of range checks behind every number.

A command takes an option from here rather than spelling it again, so `--device`,
`--threads`, `--batch-size` and the rest read and check the same everywhere. Each
option's destination is the library's parameter name (`--grad-accum` fills
`grad_accumulation`), which is how the CLI turns a library error's parameter names
back into flags (see `flag_names`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import click

from onnxkit.errors import first_few

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


class Number(click.ParamType):
    """An int or float with optional bounds; a bad value reads 'must be at least 1, got 0'."""

    def __init__(self, kind: type, low: float | None = None, *, open_low: bool = False,
                 high: float | None = None) -> None:
        self.kind, self.low, self.open_low, self.high = kind, low, open_low, high
        self.name = kind.__name__

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            number = self.kind(value)
        except (TypeError, ValueError):
            self.fail(f"must be {'an integer' if self.kind is int else 'a number'}, got {value!r}", param, ctx)
        if isinstance(number, float) and not math.isfinite(number):
            self.fail(f"must be a finite number, got {value!r}", param, ctx)
        if self.low is not None and (number <= self.low if self.open_low else number < self.low):
            bound = f"greater than {self.low:g}" if self.open_low else f"at least {self.low:g}"
            self.fail(f"must be {bound}, got {number}", param, ctx)
        if self.high is not None and number > self.high:
            self.fail(f"must be at most {self.high:g}, got {number:g}", param, ctx)
        return number


class Threads(Number):
    """A count of intra-op threads: at least 1, and at most the 4 per core that a session takes (checked as the
    command line is read: a session refused it only after the data was read and the graphs were built)."""

    def __init__(self) -> None:
        super().__init__(int, 1)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from onnxkit.runtime.session import too_many_threads

        number = super().convert(value, param, ctx)
        if reason := too_many_threads(number):
            self.fail(reason, param, ctx)
        return number


COUNT = Number(int, 1)  # epochs, steps, batch sizes, ranks
NON_NEGATIVE_INT = Number(int, 0)
POSITIVE = Number(float, 0, open_low=True)  # learning rate, clipping norm, sizes in MB
NON_NEGATIVE = Number(float, 0)  # weight decay, momentum, warm-up, delays
FLOAT = Number(float)


class Device(click.ParamType):
    """auto, cpu, cuda or cuda:N, checked in form only (whether CUDA is there is the command's to say)."""

    name = "device"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from onnxkit.errors import OnnxkitError
        from onnxkit.runtime.session import device_spec

        try:
            device_spec(str(value))
        except OnnxkitError:
            self.fail(f"must be auto, cpu, cuda or cuda:N (N a GPU number), got {value!r}", param, ctx)
        return value


def device() -> Decorator:
    return click.option("--device", type=Device(), default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")


def threads(help: str = "Intra-op CPU threads (default: one per core).") -> Decorator:
    return click.option("--threads", type=Threads(), help=help)


def batch_size(default: int, help: str = "Rows per model run.") -> Decorator:
    return click.option("--batch-size", type=COUNT, default=default, show_default=True, help=help)


def model_output(help: str) -> Decorator:
    return click.option("--model-output", "output", help=help)


def data(help: str) -> Decorator:
    """DATA, given as the argument after the model or as --data."""

    def decorate(command: Callable) -> Callable:
        command = click.option("--data", help=help)(command)
        return click.argument("data_argument", metavar="[DATA]", nargs=-1)(command)

    return decorate


def given_data(data_argument: tuple[str, ...], data: str | None) -> str | None:
    """The data given as the argument or as --data; a usage error for more than one (both, or several files: a shell
    pattern such as photos/*.png gives each, which click would call unexpected extra arguments)."""
    given = [*([data] if data is not None else []), *data_argument]
    if len(given) > 1:
        raise click.UsageError(f"give the data once (one file or folder, as DATA or --data), not {len(given)}: "
                               f"{first_few(given)}; a shell pattern (*.png) passes each file: give their folder, or "
                               "put them in one file", click.get_current_context())
    return given[0] if given else None


def data_seed(default: int | None, help: str = "Seed of the train/validation/test split.") -> Decorator:
    return click.option("--data-seed", type=NON_NEGATIVE_INT, default=default, show_default=default is not None,
                        help=help)


def output_file(help: str, required: bool = True) -> Decorator:
    return click.option("-o", "--output", required=required, type=click.Path(dir_okay=False), help=help)


def port(default: int, help: str) -> Decorator:
    return click.option("--port", type=click.IntRange(0, 65535), default=default, show_default=True, help=help)


def flag_names(command: click.Command) -> dict[str, str]:
    """Library parameter name -> the command's flag for it (`grad_accumulation` -> `--grad-accum`)."""
    return {
        p.name: max(p.opts, key=len)
        for p in command.params
        if isinstance(p, click.Option) and p.name and p.opts
    }
