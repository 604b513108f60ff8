"""`onnxkit models` and `onnxkit build`."""

from __future__ import annotations

import warnings
from pathlib import Path

import click

from onnxkit import zoo
from onnxkit.cli import options
from onnxkit.errors import OnnxkitError
from onnxkit.files import irreplaceable, same_file, save_model
from onnxkit.nn.build import UnusedLayers
from onnxkit.summary import parameter_count


@click.command("models")
def models_cmd() -> None:
    """List the models in the zoo and their options.

    \b
    Example:
      onnxkit models
    """
    for name in zoo.names():
        opts = ", ".join(f"{k}={p.default if p.default != '' else '(none)'}" for k, p in zoo.options(name).items())
        click.echo(f"{name:<18} {zoo.describe(name)}")
        click.echo(f"{'':<18} options: {opts}")


def parse_sets(pairs: tuple[str, ...]) -> dict[str, str]:
    """`key=value` strings to a dict (values stay strings; the recipe's types convert them)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:  # a malformed command line: exit 2, as click's own
            raise click.BadParameter(f"{pair!r}: expected key=value, e.g. --set num_classes=5", param_hint="--set")
        out[key.strip()] = value.strip()
    return out


@click.command("build")
@click.argument("model")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="A recipe option (repeatable).")
@click.option("--opset", type=options.Number(int, 13, high=21), default=17, show_default=True,
              help="Default-domain opset (13-21).")
@options.output_file("Where to write the .onnx file.")
def build_cmd(model: str, sets: tuple[str, ...], opset: int, output: str) -> None:
    """Build MODEL (a zoo name or a DSL .py file) into an .onnx file.

    \b
    Examples:
      onnxkit build digits-cnn -o digits.onnx
      onnxkit build bert-classifier --set num_layers=2 --set num_classes=5 -o small-bert.onnx
      onnxkit build bert-classifier --set pretrained=all-MiniLM-L6-v2 --set num_classes=5 -o bert.onnx
      onnxkit build my_model.py -o mine.onnx
    """
    if Path(model).is_file() and same_file(output, model):
        raise OnnxkitError(f"--output {output} is the DSL file being built; write the model to another file")
    if held := irreplaceable(output):
        raise OnnxkitError(f"--output {output} holds {held}, which the new model would replace; write it to another "
                           "file, or delete that one first")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UnusedLayers)
        try:
            proto = zoo.build_model(model, opset=opset, **parse_sets(sets))
        except zoo.OptionError as e:
            raise click.BadParameter(str(e), param_hint="--set") from None
    for warning in caught:  # ours as the CLI's warning lines; any other as Python shows it
        if issubclass(warning.category, UnusedLayers):
            click.echo(f"warning: {warning.message}", err=True)
        else:
            warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
    path = save_model(proto, output)
    click.echo(f"wrote {path} ({parameter_count(proto):,} parameters, {len(proto.graph.node)} nodes)")
