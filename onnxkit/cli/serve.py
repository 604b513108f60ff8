"""`onnxkit serve`: serve models over HTTP with the Open Inference Protocol."""

from __future__ import annotations

import click

from onnxkit.cli import options
from onnxkit.serve import serve
from onnxkit.serve.auth import API_KEY_ENV
from onnxkit.serve.limits import DEFAULT_LIMITS, Limits


@click.command("serve")
@click.argument("models", nargs=-1, required=True, metavar="MODEL.onnx|NAME=MODEL.onnx...")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@options.port(8000, "Port to listen on (0: any free port, printed at start).")
@click.option("--grpc-port", type=click.IntRange(0, 65535), default=None,
              help="Also serve V2 over gRPC (inference.GRPCInferenceService) on this port, e.g. 8001 "
                   "(0: any free port). Off unless given.")
@click.option("--max-batch-size", type=options.COUNT, default=32, show_default=True,
              help="Most rows merged into one model run.")
@click.option("--max-delay-ms", type=options.Number(float, 0, high=1000), default=5.0, show_default=True,
              help="Longest wait for more requests to join a batch (up to 1000).")
@click.option("--max-body-mb", type=options.Number(float, 0.001), default=DEFAULT_LIMITS.max_body_bytes / 2**20,
              show_default=True,
              help="Largest request body accepted (413 past it).")
@click.option("--header-timeout", type=options.POSITIVE, default=DEFAULT_LIMITS.header_timeout, show_default=True,
              help="Seconds for a request's head to arrive; the connection is closed after that.")
@click.option("--body-timeout", type=options.POSITIVE, default=DEFAULT_LIMITS.body_timeout, show_default=True,
              help="Seconds for a request's whole body to arrive after its head (408 past it; a gRPC call's "
                   "request message: DEADLINE_EXCEEDED), and for a client to go on reading its answer (dropped "
                   "past it).")
@click.option("--drain-timeout", type=options.POSITIVE, default=DEFAULT_LIMITS.drain_timeout, show_default=True,
              help="Seconds the requests in progress at a stop (SIGINT, SIGTERM) may take to finish; those "
                   "still running then get a 503 (so does every one at a second Ctrl-C).")
@click.option("--keep-alive", type=options.POSITIVE, default=DEFAULT_LIMITS.keep_alive_timeout, show_default=True,
              help="Seconds an idle connection (HTTP, or gRPC with no call in progress) is kept open between requests.")
@click.option("--stream-idle-timeout", type=options.POSITIVE, default=DEFAULT_LIMITS.stream_idle_timeout,
              show_default=True,
              help="Seconds a gRPC stream may stay open with no request in progress; then the server ends it "
                   "(UNAVAILABLE). At the --max-connections cap, a stream idle for 1 s gives way to a new call.")
@click.option("--max-connections", type=options.COUNT, default=DEFAULT_LIMITS.max_connections, show_default=True,
              help="Open connections served at once; requests on more get 503 with Retry-After. Also the cap "
                   "on gRPC calls in progress (a stream counts one).")
@click.option("--max-queue", type=options.COUNT, default=DEFAULT_LIMITS.max_queue, show_default=True,
              help="Requests waiting for a model; more get 503 with Retry-After.")
@click.option("--api-key", envvar=API_KEY_ENV, show_envvar=True,
              help="Require 'Authorization: Bearer KEY' on every endpoint but /v2/health/*.")
@click.option("--watch", is_flag=True,
              help="Reload a model, without dropping requests, when its .onnx file is replaced.")
@options.device()
@options.threads("Intra-op threads per model (default: one per CPU, less one for the event loop).")
def serve_cmd(
    models: tuple[str, ...],
    host: str,
    port: int,
    grpc_port: int | None,
    max_batch_size: int,
    max_delay_ms: float,
    max_body_mb: float,
    header_timeout: float,
    body_timeout: float,
    drain_timeout: float,
    keep_alive: float,
    stream_idle_timeout: float,
    max_connections: int,
    max_queue: int,
    api_key: str | None,
    watch: bool,
    device: str,
    threads: int | None,
) -> None:
    """Serve one or more models over HTTP and gRPC (Open Inference Protocol / KServe V2).

    A model is named after its file (digits.onnx -> digits) unless given as
    NAME=PATH. Stop with Ctrl-C or SIGTERM: open requests finish first.

    \b
    Examples:
      onnxkit build iris-mlp -o iris.onnx && onnxkit serve iris.onnx --port 8000
      curl -s localhost:8000/v2/models/iris/infer -d \\
        '{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[5.1,3.5,1.4,0.2]}]}'
      onnxkit serve digits=runs/digits/model.onnx iris.onnx --grpc-port 8001
    """
    serve(
        list(models),
        host,
        port,
        max_batch_size=max_batch_size,
        max_delay_ms=max_delay_ms,
        device=device,
        threads=threads,
        grpc_port=grpc_port,
        limits=Limits(
            header_timeout=header_timeout,
            body_timeout=body_timeout,
            keep_alive_timeout=keep_alive,
            max_connections=max_connections,
            max_queue=max_queue,
            max_body_bytes=int(max_body_mb * 2**20),
            stream_idle_timeout=stream_idle_timeout,
            drain_timeout=drain_timeout,
        ),
        api_key=api_key,
        watch=watch,
    )
