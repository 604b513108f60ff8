"""`onnxkit quantize`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from onnxkit.cli import options
from onnxkit.quantize.settings import BLOCK_SIZES, FORMATS, METHODS, MODES


def _split_items(items: tuple[str, ...]) -> list[str]:
    return [part.strip() for item in items for part in item.split(",") if part.strip()]


@click.command("quantize")
@click.argument("model", type=click.Path())
@options.output_file("The quantized .onnx file.")
@click.option("--mode", type=click.Choice(MODES),
              help="How to quantize  [default: static if Conv does most of the work, else dynamic]")
@click.option("--calib", metavar="DATA", help="Calibration data: a dataset name, .npz/.csv/.tsv file or folder of "
              "class folders of images (its train split), or model inputs alone (.npz by input name, .npy, .csv "
              "without labels; texts: .txt or a one-column .csv).")
@click.option("--calib-size", type=options.COUNT, default=256, show_default=True, help="Calibration examples.")
@click.option("--method", type=click.Choice(METHODS), help="Static: activation range calibration  [default: minmax]")
@click.option("--per-channel/--per-tensor", default=None, help="int8 weight scales  [default: per channel]")
@click.option("--format", "format", type=click.Choice(FORMATS), help="Static: QDQ pairs or QLinear ops  [default: qdq]")
@click.option("--exclude", multiple=True, metavar="NODE_OR_OP", help="Leave nodes/op types float (repeatable).")
@click.option(
    "--reduce-range/--full-range", default=None, help="7-bit int8 weights  [default: on for x86 CPUs without VNNI]"
)
@click.option(
    "--block-size", type=click.Choice([str(b) for b in BLOCK_SIZES]), help="int4: weights per scale  [default: 32]"
)
@click.option("--eval", "eval_data", metavar="DATA",
              help="Evaluate both models on DATA's test split (a dataset name, .npz/.csv/.tsv file or image "
                   "folder)  [default: the data a model trained by onnxkit names]")
@click.option("--model-output", "model_output", metavar="NAME",
              help="The output --eval scores  [default: the one trained, else the scores beside a first output that "
                   "is the predicted label, else the first]")
@click.option("--max-drop", type=options.NON_NEGATIVE, metavar="POINTS",
              help="Fail, writing nothing, if accuracy drops (or loss rises) more  "
                   "[default: 1 with --mode auto, else no limit]")
@click.option("--report", "report_path", type=click.Path(dir_okay=False),
              help="JSON report  [default: OUTPUT.report.json]")
@click.option("--sqnr", "sqnr_rows", flag_value=20, default=0,
              help="Show the 20 tensors with the worst SQNR (quantization noise).")
@click.option("--no-latency", is_flag=True, help="Skip timing the models.")
def quantize_cmd(
    model: str,
    output: str,
    mode: str | None,
    calib: str | None,
    calib_size: int,
    method: str | None,
    per_channel: bool | None,
    format: str | None,  # noqa: A002 - the library's parameter name
    exclude: tuple[str, ...],
    reduce_range: bool | None,
    block_size: str | None,
    eval_data: str | None,
    model_output: str | None,
    max_drop: float | None,
    report_path: str | None,
    sqnr_rows: int,
    no_latency: bool,
) -> None:
    """Quantize MODEL to int8, int4 or fp16 and report size, latency and accuracy.

    The report (printed, and written as JSON) compares file size, median
    latency at batch 1 and 64, and with --eval the accuracy of both models
    (a model onnxkit trained is evaluated on its own training data by default).
    --mode auto tries dynamic and static candidates and keeps the fastest
    within --max-drop (default 1 point). --sqnr is this command's debug view;
    the group's --debug shows tracebacks.

    \b
    Examples:
      onnxkit quantize digits.onnx -o digits.int8.onnx --mode static --calib digits-images --eval digits-images
      onnxkit quantize mlp.onnx -o mlp.int8.onnx --mode dynamic --eval digits --max-drop 0.5
      onnxkit quantize cnn.onnx -o best.onnx --mode auto --eval digits-images --sqnr
      onnxkit quantize bert.onnx -o bert.int4.onnx --mode int4 --exclude classifier/MatMul
    """
    from onnxkit.quantize import quantize

    result = quantize(
        model,
        output,
        mode=mode,
        calib=calib,
        calib_size=calib_size,
        method=method,
        per_channel=per_channel,
        format=format,
        exclude=_split_items(exclude),
        reduce_range=reduce_range,
        block_size=int(block_size) if block_size else None,
        eval_data=eval_data,
        model_output=model_output,
        max_drop=max_drop,
        report_path=report_path or Path(output).with_suffix(".report.json"),
        sqnr_rows=sqnr_rows,
        measure_latency=not no_latency,
        log=(lambda msg: click.echo(msg, err=True)) if sys.stderr.isatty() else None,  # quiet in pipes and CI
    )
    click.echo(result.report.text())
    click.echo(f"wrote {output} and {report_path or Path(output).with_suffix('.report.json')}")
