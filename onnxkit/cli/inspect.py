"""`onnxkit inspect`."""

from __future__ import annotations

import json
import logging

import click

from onnxkit.cli import options
from onnxkit.errors import OnnxkitError
from onnxkit.summary import format_summary, summarize


@click.command("inspect")
@click.argument("model", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--netron", is_flag=True, help="Serve the model in Netron on 127.0.0.1 until Ctrl-C.")
@options.port(8080, "Port for --netron.")
def inspect_cmd(model: str, as_json: bool, netron: bool, port: int) -> None:
    """Show MODEL's inputs, outputs, opsets, parameters, operators and metadata.

    \b
    Examples:
      onnxkit inspect digits.onnx
      onnxkit inspect digits.onnx --json
      onnxkit inspect digits.onnx --netron --port 8081
    """
    info = summarize(model)
    if netron:
        _check_free(port)  # before the summary: an error after a screen of it was easy to miss
    click.echo(json.dumps(info, indent=2) if as_json else format_summary(info))
    if netron:
        serve_netron(model, port)


def _check_free(port: int) -> None:
    """An error when a program already listens on 127.0.0.1:`port`."""
    import socket

    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", port)) == 0:
            raise OnnxkitError(f"127.0.0.1:{port} is already in use; stop the program using it or pass another --port")


def serve_netron(path: str, port: int) -> None:
    """Serve `path` with the netron package on loopback until Ctrl-C or SIGTERM; then exit 0, as `serve` does."""
    try:
        import netron
    except ImportError:
        raise OnnxkitError("--netron needs the netron package (a dependency of onnxkit that this environment "
                           "lacks): pip install netron") from None
    _check_free(port)
    # netron logs "Serving '...' at ..." and "Stopping ..." through a root handler of its own: ours is the one line
    logging.getLogger("netron").setLevel(logging.WARNING)
    host, bound = netron.start(path, address=("127.0.0.1", port), browse=False)
    try:  # a stop as the server starts answering, before wait() catches it, stops it too (it exited 143 under load)
        click.echo(f"Netron: http://{host}:{bound}  (Ctrl-C to stop)", err=True)  # stdout holds the summary (--json)
        netron.wait()  # until Ctrl-C or SIGTERM (a KeyboardInterrupt: onnxkit.signals); it stops the server then
    except KeyboardInterrupt:
        netron.stop()
