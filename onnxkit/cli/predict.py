"""`onnxkit predict`: run a model on inputs from a file."""

from __future__ import annotations

import click

from onnxkit import runtime
from onnxkit.cli import options
from onnxkit.errors import OnnxkitError
from onnxkit.runtime.datafiles import (
    check_output_path,
    format_prediction,
    read_inputs,
    write_prediction,
)


@click.command("predict")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option(
    "-i",
    "--input",
    "input_path",
    type=click.Path(dir_okay=False),
    help="Inputs: .npy, .npz (by input name), .json or .csv (one example per row).",
)
@click.option("-t", "--text", "texts", multiple=True, help="A text to predict on (repeatable; needs a tokenizer).")
@options.output_file("Save the prediction: .json, .npz, .npy (first output) or .csv.", required=False)
@click.option("-k", "--top-k", type=options.COUNT, help="Show the K best classes per row.")
@click.option("--probs", is_flag=True, help="Class probabilities (softmax; sigmoid for binary) instead of logits.")
@options.device()
@options.threads()
@options.batch_size(512, "Run large inputs in batches of this many rows.")
def predict_cmd(
    model: str,
    input_path: str | None,
    texts: tuple[str, ...],
    output: str | None,
    top_k: int | None,
    probs: bool,
    device: str,
    threads: int | None,
    batch_size: int,
) -> None:
    """Run MODEL on the examples in an input file; print or save the result.

    \b
    Examples:
      onnxkit predict digits.onnx --input images.npy --top-k 3 --probs
      onnxkit predict digits.onnx --input rows.csv --output predictions.csv
      onnxkit predict bert.onnx --text "Shares rose sharply." --text "What a match!"
    """
    if bool(input_path) == bool(texts):
        raise OnnxkitError("give --input FILE or --text TEXT (one of the two)")
    if output:
        check_output_path(output)
    loaded = runtime.load(model, device=device, threads=threads, batch_size=batch_size)
    prediction = loaded.predict_text(list(texts)) if texts else loaded.predict(read_inputs(input_path, loaded))
    if probs:
        prediction = prediction.with_probabilities()
    if output:
        write_prediction(output, prediction, top_k)
        click.echo(f"wrote {output} ({len(prediction)} rows)")
    else:
        click.echo(format_prediction(prediction, top_k))
