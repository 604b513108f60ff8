"""The `onnxkit` command: a click group whose subcommands are imported only when run.

Each subcommand lives in a small module of this package and holds no logic of
its own: it parses options and calls the Python API.
"""

from __future__ import annotations

import importlib
import re
import signal
import sys
import warnings
from typing import Any

import click

from onnxkit import __version__
from onnxkit.errors import OnnxkitError
from onnxkit.files import disk_hint
from onnxkit.signals import handled, stop, stops_recorded

# click >= 8.2 raises this for a group called with no arguments (8.1 printed the help and exited 0)
NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())

# name -> (module, attribute, one-line help). Help is kept here so that
# `onnxkit --help` lists commands without importing onnxruntime.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "models": ("onnxkit.cli.build", "models_cmd", "List the models in the zoo."),
    "build": ("onnxkit.cli.build", "build_cmd", "Build a zoo model or DSL file into an .onnx file."),
    "inspect": ("onnxkit.cli.inspect", "inspect_cmd", "Show inputs, outputs, ops, size and metadata."),
    "train": ("onnxkit.cli.train", "train_cmd", "Train or fine-tune any inference-form ONNX model."),
    "eval": ("onnxkit.cli.train", "eval_cmd", "Evaluate a model on a dataset split."),
    "quantize": ("onnxkit.cli.quantize", "quantize_cmd", "Quantize to int8/int4/fp16 with a report."),
    "predict": ("onnxkit.cli.predict", "predict_cmd", "Run a model on files: arrays, tables, images, texts."),
    "serve": ("onnxkit.cli.serve", "serve_cmd", "Serve models over HTTP and gRPC (Open Inference Protocol)."),
}


class LazyGroup(click.Group):
    """A group that imports a subcommand's module only when that command runs."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[name]
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, hlp) for name, (_, _, hlp) in COMMANDS.items()])

    def resolve_command(self, ctx, args):  # type: ignore[no-untyped-def]
        name = args[0] if args else ""
        if name == "help":  # `onnxkit help [COMMAND]`, as git and pip take it
            self._help(ctx, args[1:])
        if name and not name.startswith("-") and name not in COMMANDS:
            raise _no_command(name, ctx)
        return super().resolve_command(ctx, args)

    def _help(self, ctx: click.Context, args: list[str]) -> None:
        """Print the group's help, or COMMAND's, and exit 0."""
        if not args:
            click.echo(ctx.get_help())
            ctx.exit(0)
        if args[0] not in COMMANDS:
            raise _no_command(args[0], ctx)
        command = self.get_command(ctx, args[0])
        click.echo(command.get_help(click.Context(command, info_name=args[0], parent=ctx)))  # type: ignore[union-attr]
        ctx.exit(0)

    def invoke(self, ctx: click.Context) -> object:
        try:
            with warnings.catch_warnings():  # the data's warnings (categories never trained on) as warning: lines
                from onnxkit.categories import UnseenCategories

                warnings.showwarning = warning_lines(warnings.showwarning, UnseenCategories)
                return super().invoke(ctx)
        except OnnxkitError as e:
            if ctx.invoked_subcommand:
                from onnxkit.cli.options import flag_names

                flags = flag_names(self.get_command(ctx, ctx.invoked_subcommand))  # type: ignore[arg-type]
                e.args = (as_flags(str(e), e.params, flags),)
            raise


def warning_lines(show: Any, *categories: type[Warning]) -> Any:
    """A `warnings.showwarning` that prints warnings of `categories` as the CLI's `warning:` lines, others by
    `show`."""

    def showwarning(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        if issubclass(category, categories):
            click.echo(f"warning: {message}", err=True)
        else:
            show(message, category, *args, **kwargs)

    return showwarning


def _no_command(name: str, ctx: click.Context) -> click.UsageError:
    from onnxkit.errors import suggest

    return click.UsageError(f"no command {name!r}.{suggest(name, COMMANDS)}", ctx)


def as_flags(message: str, params: tuple[str, ...], flags: dict[str, str]) -> str:
    """`message` with library parameters written as the command's flags: every `name=value` whose
    name the command has a flag for (`loss=mse` -> `--loss mse`), and each word in `params`."""
    for name, flag in flags.items():
        message = re.sub(rf"(?<![\w./-]){re.escape(name)}=", f"{flag} ", message)
    for name in params:
        if name in flags:
            # a whole word: not part of a path (a/name/b), a file name (name.npz) or another name
            message = re.sub(rf"(?<![\w./-]){re.escape(name)}(?![\w/-]|\.\w)", flags[name], message)
    return message


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="onnxkit")
@click.option("--debug", is_flag=True, help="Show full tracebacks for errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Author, train, quantize and serve neural networks as plain ONNX files.

    \b
    Example:
      onnxkit build digits-cnn -o digits.onnx
      onnxkit train digits.onnx --data digits-images -o runs/digits
      onnxkit serve runs/digits/model.onnx
    """
    ctx.obj = {"debug": debug}


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning OnnxkitError into a short message and exit 1.

    SIGTERM acts as Ctrl-C (KeyboardInterrupt), so every command cleans up after itself
    on either; the exit status is then 128 + the signal's number, as the shell reports it. A stop whose
    KeyboardInterrupt C code dropped still stops the command at its next write (`signals.check_stop`).
    """
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    with stops_recorded() as stopped_by, handled(stop):  # Ctrl-C (SIGINT) and SIGTERM
        try:
            cli.main(args=args, prog_name="onnxkit", standalone_mode=False)
        except OnnxkitError as e:
            if debug:
                raise
            click.echo(f"error: {e}", err=True)
            sys.exit(1)
        except OSError as e:  # the disk or the file system, not the program: one line too (--debug shows where)
            if debug:
                raise
            what = f"{e.filename}: " if e.filename else ""
            click.echo(f"error: {what}{e.strerror or e}{disk_hint(e.errno)}", err=True)
            sys.exit(1)
        except click.exceptions.Abort as e:
            if not stopped_by and isinstance(e.__context__, EOFError):  # click makes an EOFError an Abort too
                if debug:
                    raise e.__context__ from None
                click.echo(f"error: a file or input ended early ({e.__context__}); check it", err=True)
                sys.exit(1)
            signum = stopped_by[0] if stopped_by else signal.SIGINT
            click.echo(f"error: stopped by {signal.Signals(signum).name}", err=True)
            sys.exit(128 + signum)
        except NO_ARGS_IS_HELP as e:  # a bare `onnxkit`: its help as it is, not flattened into one error line
            e.show()
            sys.exit(e.exit_code)
        except click.ClickException as e:
            click.echo(f"error: {click_message(e)}", err=True)
            sys.exit(e.exit_code)
        except click.exceptions.Exit as e:
            sys.exit(e.exit_code)


def click_message(e: click.ClickException) -> str:
    """A click usage error on one line: '--epochs must be at least 1, got 0 (see onnxkit train -h)'."""
    if type(e) is click.BadParameter and isinstance(e.param, click.Option):
        sep = ": " if e.message[:1].isupper() else " "  # click's own messages are sentences
        text = f"{max(e.param.opts, key=len)}{sep}{e.message}"
    elif isinstance(e, click.NoSuchOption) and (named := _named_otherwise(e.option_name, e.ctx)):
        text = f"No such option {e.option_name!r}. Did you mean {named}?"
    else:
        text = " ".join(e.format_message().split())
    ctx = getattr(e, "ctx", None)
    return f"{text} (see {ctx.command_path} -h)" if ctx is not None else text


def _named_otherwise(given: str, ctx: click.Context | None) -> str | None:
    """The command's option a mistaken one stands for, where click's guess misses it: another library's name for it
    (--learning-rate, --num-epochs: `train.arguments.OTHER_NAMES`), or an option it begins with (--lr of --lr-rate,
    where click offered --last, --lora-rank and --lr-decay)."""
    from onnxkit.train.arguments import OTHER_NAMES

    if ctx is None:
        return None
    options = [p for p in ctx.command.params if isinstance(p, click.Option)]
    wanted = OTHER_NAMES.get(given.lstrip("-").replace("-", "_"))
    named = next((p for p in options if wanted and p.name == wanted and not p.is_flag), None)
    if named is not None:
        return f"{max(named.opts, key=len)!r} (what {given} is called here)"
    begins = [o for p in options for o in p.opts if o.startswith("--") and given.startswith(o + "-")]
    return repr(max(begins, key=len)) if begins else None
