"""`onnxkit predict`: run a model on inputs from a file."""

from __future__ import annotations

import json
from pathlib import Path

import click

from onnxkit import runtime
from onnxkit.cli import options
from onnxkit.errors import OnnxkitError, first_few
from onnxkit.files import same_file
from onnxkit.metadata_keys import TRAINING_KEY
from onnxkit.runtime.datafiles import (
    check_output_path,
    checked_feeds,
    format_prediction,
    holds_images,
    holds_texts,
    image_rows,
    read_inputs,
    read_texts,
    row_ids,
    write_prediction,
)
from onnxkit.runtime.model import ends_in_probabilities
from onnxkit.runtime.text import reads_text
from onnxkit.tokenize import TOKEN_INPUTS


@click.command("predict")
@click.argument("model", type=click.Path())
@click.argument("data", nargs=-1, type=click.Path())
@click.option(
    "-i",
    "--input",
    "input_path",
    type=click.Path(),
    help="Inputs: .npy, .npz (by input name), .json, .csv, .tsv or .parquet (one example per row), an image or a "
    "folder of images (each a row); a training file's label column or array is left out. For a model with a "
    "tokenizer: texts, one per line of a .txt or in a CSV's 'text' column.",
)
@click.option("-t", "--text", "texts", multiple=True, help="A text to predict on (repeatable; needs a tokenizer).")
@options.output_file("Save the prediction: .json, .npz, .npy (the scores output) or .csv.", required=False)
@click.option("-k", "--top-k", type=options.COUNT, help="Show the K best classes per row.")
@click.option("--probs", is_flag=True, help="Class probabilities (softmax; sigmoid for binary) instead of logits.")
@click.option("--labels-only", is_flag=True,
              help="With a .csv --output: the row ids and each row's answer (class or value) alone, as a Kaggle "
              "submission holds them.")
@options.device()
@options.threads()
@options.batch_size(512, "Run large inputs in batches of this many rows.")
@click.option("--ray", "on_ray", is_flag=True,
              help="Run on Ray Data (extra `ray`): DATA may be a folder of .npy/.npz/.json/.csv/.tsv/.parquet/.txt "
              "files or of images (subfolders too); joins $RAY_ADDRESS's cluster, else starts a local one.")
@click.option("--workers", type=options.COUNT, help="With --ray: actors, each holding a session (default: all CPUs).")
def predict_cmd(
    model: str,
    data: tuple[str, ...],
    input_path: str | list[str] | None,
    texts: tuple[str, ...],
    output: str | None,
    top_k: int | None,
    probs: bool,
    labels_only: bool,
    device: str,
    threads: int | None,
    batch_size: int,
    on_ray: bool,
    workers: int | None,
) -> None:
    """Run MODEL on the examples in an input file; print or save the result.

    \b
    Examples:
      onnxkit predict digits.onnx --input images.npy --top-k 3 --probs
      onnxkit predict digits.onnx --input rows.csv --output predictions.csv
      onnxkit predict bert.onnx --text "Shares rose sharply." --text "What a match!"
      onnxkit predict digits.int8.onnx inputs/ --ray --workers 4 --output predictions.npz

    DATA is the same as --input; a folder of images or several image files (photos/*.jpg), or with --ray a
    folder of files.
    """
    if data and input_path:
        raise click.UsageError("give the input once: as DATA or as --input")
    input_path = input_path or (data[0] if len(data) == 1 else list(data) or None)
    if isinstance(input_path, list) and on_ray:
        raise click.UsageError("--ray reads one file or folder: give the folder of the images")
    if workers and not on_ray:
        raise click.UsageError("--workers is for --ray (Ray actors); without --ray, use --threads")
    if bool(input_path) == bool(texts):
        raise click.UsageError("give --input FILE or --text TEXT (one of the two)")
    if labels_only and (not output or Path(output).suffix.lower() != ".csv"):
        raise click.UsageError("--labels-only writes a .csv: give --output FILE.csv")
    if output:
        check_output_path(output)
        given = input_path if isinstance(input_path, list) else [input_path] if input_path else []
        for what, path in (("the model", model), *(("the input", p) for p in given)):
            if same_file(output, path):
                raise OnnxkitError(f"--output {output} is {what}; write the predictions to another file")
            if what == "the input" and Path(path).is_dir() and Path(path).resolve() in Path(output).resolve().parents:
                raise OnnxkitError(f"--output {output} is inside the input folder {path}, where the next read of the "
                                   "folder would take it for one of its files; write the predictions elsewhere")
    if on_ray:
        if texts:
            raise OnnxkitError("--ray reads texts from files: .txt (one per line) or a 'text' column of "
                               ".csv/.tsv/.parquet")
        from onnxkit.runtime.batch import predict_on_ray

        prediction = predict_on_ray(model, input_path, output, workers=workers, batch_size=batch_size, device=device,
                                    threads=threads, top_k=top_k, probs=probs, labels_only=labels_only)
        names = image_rows(input_path) if holds_images(input_path) else None
        click.echo(f"wrote {output} ({len(prediction)} rows)" if output else
                   format_prediction(prediction, top_k, names=names))
        return
    loaded = runtime.load(model, device=device, threads=threads, batch_size=batch_size)
    trained_on = json.loads(loaded.metadata.get(TRAINING_KEY, "{}")).get("data")
    if output and isinstance(trained_on, str) and Path(trained_on).is_file() and same_file(output, trained_on):
        raise OnnxkitError(f"--output {output} is the data {model} was trained on; write the predictions to another "
                           "file")  # it was replaced by them, exit status 0, and eval had no test split left to score
    if probs and not loaded.given_probabilities:
        loaded.given_probabilities = ends_in_probabilities(model)
    from_file = (isinstance(input_path, str) and (reads_text(loaded) or _token_ids_alone(loaded))
                 and holds_texts(input_path))  # .txt, a CSV's texts (refused by predict_text without a tokenizer)
    if from_file:
        texts = tuple(read_texts(Path(input_path)))
        if not texts:  # an input file of no rows is refused, as read_inputs refuses one
            raise OnnxkitError(f"{input_path}: holds no text; give one text a line (a .txt) or a row")
    _warn_of_empty_texts(texts, input_path if from_file else None)
    if texts:
        prediction = loaded.predict_text(list(texts))
    else:
        prediction = loaded.predict(checked_feeds(input_path, loaded, read_inputs(input_path, loaded)))
    if probs:
        prediction = prediction.with_probabilities()
    names = image_rows(input_path) if input_path and not from_file else None  # an image file or a folder's files
    if output:
        ids = row_ids(input_path) if Path(output).suffix.lower() == ".csv" else None
        write_prediction(output, prediction, top_k, names, ids, labels_only)
        click.echo(f"wrote {output} ({len(prediction)} rows)")
    else:
        click.echo(format_prediction(prediction, top_k, names=names))


def _warn_of_empty_texts(texts: tuple[str, ...], path: str | None) -> None:
    """One line for the empty texts (an unset shell variable, a blank line): each is predicted all the same, as the
    model answers no text."""
    empty = [i for i, text in enumerate(texts) if not text.strip()]
    if not empty:
        return
    which = (f"text {empty[0] + 1} is empty" if path is None and len(empty) == 1 else
             f"texts {first_few([str(i + 1) for i in empty], 5)} are empty" if path is None else
             f"{path}: row{'s' * (len(empty) > 1)} {first_few([str(i) for i in empty], 5)} "
             f"{'are' if len(empty) > 1 else 'is'} empty")
    answer = "its prediction is" if len(empty) == 1 else "their predictions are"
    click.echo(f"warning: {which}; {answer} the model's answer to no text", err=True)


def _token_ids_alone(model: runtime.Model) -> bool:
    """Whether `model` takes token ids and a mask (several inputs, `input_ids` among them) and carries no tokenizer:
    a .txt or CSV of texts is then said to need one (it was 'unknown input format', or 'CSV holds one input but
    model has 2'); one array could feed no such model."""
    return len(model.inputs) > 1 and any(spec.name == TOKEN_INPUTS[0] for spec in model.inputs)
