"""`onnxkit serve`: serve models over HTTP with the Open Inference Protocol."""

from __future__ import annotations

import click

from onnxkit.cli import options
from onnxkit.serve import serve


@click.command("serve")
@click.argument("models", nargs=-1, required=True, metavar="MODEL.onnx|NAME=MODEL.onnx...")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@options.port(8000, "Port to listen on (0: any free port, printed at start).")
@click.option("--grpc-port", type=click.IntRange(0, 65535), default=None,
              help="Also serve V2 over gRPC (inference.GRPCInferenceService) on this port, e.g. 8001 "
                   "(0: any free port). Off unless given.")
@click.option("--max-batch-size", type=options.COUNT, default=32, show_default=True,
              help="Most rows merged into one model run.")
@click.option("--max-delay-ms", type=options.NON_NEGATIVE, default=5.0, show_default=True,
              help="Longest wait for more requests to join a batch.")
@click.option("--max-body-mb", type=options.POSITIVE, default=32, show_default=True,
              help="Largest request body accepted.")
@options.device()
@options.threads("Intra-op threads per model.")
def serve_cmd(
    models: tuple[str, ...],
    host: str,
    port: int,
    grpc_port: int | None,
    max_batch_size: int,
    max_delay_ms: float,
    max_body_mb: float,
    device: str,
    threads: int | None,
) -> None:
    """Serve one or more models over HTTP and gRPC (Open Inference Protocol / KServe V2).

    A model is named after its file (digits.onnx -> digits) unless given as
    NAME=PATH. Stop with Ctrl-C or SIGTERM: open requests finish first.

    \b
    Example:
      onnxkit serve digits.onnx --port 8000
      curl -s localhost:8000/v2/models/digits/infer -d \\
        '{"inputs":[{"name":"x","shape":[1,64],"datatype":"FP32","data":[0,0,5,13,...]}]}'
    """
    serve(
        list(models),
        host,
        port,
        max_batch_size=max_batch_size,
        max_delay_ms=max_delay_ms,
        max_body_mb=max_body_mb,
        device=device,
        threads=threads,
        grpc_port=grpc_port,
    )
