"""Running the server: load the models, bind the port, serve until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import gc
import math
import numbers
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any, Literal, Protocol

import uvicorn
from starlette.types import ASGIApp

from onnxkit import runtime
from onnxkit.errors import OnnxkitError
from onnxkit.runtime.session import error_reason
from onnxkit.runtime.signature import example_feeds
from onnxkit.serve import auth
from onnxkit.serve.app import create_app
from onnxkit.serve.batcher import INLINE_RUN_S, Batcher
from onnxkit.serve.limits import DEFAULT_LIMITS, Limits, protocol_class
from onnxkit.serve.metrics import Metrics
from onnxkit.serve.repository import Repository
from onnxkit.signals import check_stop, handled


def model_files(specs: str | os.PathLike | list[str]) -> dict[str, Path]:
    """Each 'PATH' or 'NAME=PATH' (one, or a list) by name; a model's name defaults to its file's stem."""
    files: dict[str, Path] = {}
    for spec in [os.fspath(specs)] if isinstance(specs, str | os.PathLike) else map(os.fspath, specs):
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = Path(spec).name.removesuffix(".onnx"), spec
        if not name or "/" in name:
            raise OnnxkitError(
                f"model name {name!r} (from {spec!r}) cannot be used in a URL; give one without '/' as NAME=PATH"
            )
        if name == "stats":  # GET /v2/models/stats is every model's statistics: its metadata could not be asked for
            raise OnnxkitError(
                f"model name 'stats' (from {spec!r}) is taken by the URL of every model's statistics, "
                f"/v2/models/stats; give another as NAME=PATH, e.g. stats-model={path}"
            )
        if name in files:
            raise OnnxkitError(f"two models are named {name!r}; name them apart with NAME=PATH, e.g. {name}-2={path}")
        files[name] = Path(path)
    return files


def load_models(specs: list[str], device: str = "auto", threads: int | None = None) -> list[runtime.Model]:
    """Load each 'PATH' or 'NAME=PATH', warmed up, as the server runs them."""
    return [load_served(name, path, device, threads) for name, path in model_files(specs).items()]


PROBE_LENGTHS = (128, 32, 8)  # a typical sequence, for the probe run that sizes a model's thread pool; shorter
# ones for a model whose tables hold fewer positions (a text-transformer built with max_len=64)


def load_served(
    name: str, path: Path, device: str, threads: int | None, served: runtime.Model | None = None
) -> runtime.Model:
    """The model, warmed up, on `threads` intra-op threads; by default one per CPU, or one per CPU
    less one for a model whose one-row run is short enough to run on the event loop.

    A small model's runs share the loop's core: a thread pool as wide as the machine then waits
    for the core the loop holds, and its runs stall. A large model's runs leave the loop in a
    thread, and the loop is idle while they compute: all the cores serve them (text-transformer
    at 32 clients on 2 cores: 1.36x in-process on two threads, 0.72x on one).

    A model that fails on that row (its inputs need other sizes or values) is served unwarmed, with a warning;
    unless it is to replace `served` (a reload), which runs on its own such row: then the new version is broken,
    and OnnxkitError keeps the served one (a replaced file that failed on every request was swapped in)."""

    def load(count: int) -> tuple[runtime.Model, float]:
        model = runtime.load(path, device=device, threads=count, batch_size=None, spin=False, name=name)
        _check_types(model, path)
        return model, _row_seconds(model, served)  # its warm-up too

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    model, seconds = load(threads or cpus)
    if not threads and cpus > 1 and seconds < INLINE_RUN_S:
        model, _ = load(cpus - 1)
    if model.batchable and not model.rows_out:  # probed now, not on the first request
        print(f"model {name}: its outputs are not one a row, each of its own input row alone, so its requests run "
              "one at a time, never merged into a batch", file=sys.stderr)
    return model


def _check_types(model: runtime.Model, path: Path) -> None:
    """OnnxkitError for a model no request can run: an input of a type numpy cannot hold (bfloat16, a sequence, a
    map), or a tensor output of one (bfloat16), which onnxruntime cannot hand back. It was served, advertised as
    ready, and refused every request (a 400 saying that the request's input failed, for an output)."""
    for spec in model.inputs:
        if spec.dtype is None and spec.type != "tensor(string)":
            fix = "export it with float32 or float16 inputs" if "bfloat16" in spec.type else "give it tensor inputs"
            raise OnnxkitError(f"{path}: input {spec.name!r} has type {spec.type}, which numpy cannot hold, so no "
                               f"request can run this model; {fix}")  # fmt: skip
    for spec in model.outputs:
        if spec.dtype is None and spec.type.startswith("tensor(") and spec.type != "tensor(string)":
            raise OnnxkitError(f"{path}: output {spec.name!r} has type {spec.type}, which numpy cannot hold, so no "
                               "request can run this model; export it with float32 or float16 outputs")  # fmt: skip


def _row_seconds(model: runtime.Model, served: runtime.Model | None = None) -> float:
    """The fastest of a few runs on one row of zeros whose other free dimensions (a sequence) are the first of
    PROBE_LENGTHS the model runs on; infinite, with a warning, if it fails on each; OnnxkitError if it fails on each
    and `served`, the version it is to replace, runs on one."""
    for length in PROBE_LENGTHS:
        feeds = example_feeds(model.inputs, length=length)
        try:
            model.run(feeds)
        except Exception as e:  # onnxruntime's errors have no common base class
            failure = e
            continue
        times = []
        for _ in range(5):
            start = time.perf_counter()
            model.run(feeds)
            times.append(time.perf_counter() - start)
        return min(times)
    if served is not None and _runs_on_zeros(served):
        raise OnnxkitError(f"the new version fails on one row of zeros, which the version served now runs "
                           f"({error_reason(failure)}); check the new file")  # fmt: skip
    print(f"warning: model {model.name}: served without a warm-up, as it fails on one row of zeros "
          f"({error_reason(failure)}); a request's first run takes longer", file=sys.stderr)  # fmt: skip
    return math.inf


def _runs_on_zeros(model: runtime.Model) -> bool:
    """Whether the model runs on one row of zeros of any of PROBE_LENGTHS, as its warm-up does."""
    for length in PROBE_LENGTHS:
        with contextlib.suppress(Exception):  # onnxruntime's errors have no common base class
            model.run(example_feeds(model.inputs, length=length))
            return True
    return False


def _check_numbers(**given: Any) -> None:
    """serve's ports (0 to 65535, or a grpc_port of None) and batching numbers: one error naming the argument, before
    any model loads (serve(port=-1) was bind()'s OverflowError, port='8000' "'str' object cannot be interpreted as
    an integer", max_batch_size='8' "'<' not supported between instances of 'str' and 'int'")."""
    for name, value in given.items():
        if value is None and name == "grpc_port":
            continue
        whole = name != "max_delay_ms"
        if isinstance(value, bool) or not isinstance(value, numbers.Integral if whole else numbers.Real):
            raise TypeError(f"{name} must be {'an integer' if whole else 'a number'}, got {value!r}")
        if name.endswith("port") and not 0 <= value <= 65535:
            raise OnnxkitError(f"{name} must be 0 to 65535 (0: any free port), got {value}", params=[name])
        if not math.isfinite(value):
            raise OnnxkitError(f"{name} must be a finite number, got {value}", params=[name])


def bind(host: str, port: int, param: str = "port") -> socket.socket:
    """A listening socket, or one clear error (port in use, no permission, unknown host); `param` names the port's
    parameter in it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on sockets that say they are
    # TCP, and without it each reply waits ~40 ms on Nagle's algorithm and delayed ACKs.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
        return sock
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise OnnxkitError(
                f"{_address(host, port)} is already in use; stop the program using it or pass another {param}",
                params=[param],
            ) from e
        if e.errno == errno.EACCES:
            raise OnnxkitError(f"no permission to listen on port {port}; use a port above 1023") from e
        raise OnnxkitError(
            f"cannot listen on {_address(host, port)} ({e.strerror or e}); check the host", params=["host"]
        ) from e


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def _return_large_frees() -> None:
    """Buffers of 1 MiB and more (request bodies, decoded tensors) from their own mappings, given back to the system
    when freed: glibc raises its threshold for that after the first large free, and later ones stayed in the heap
    (8 concurrent 29 MB requests left a server at 450 MB, 75 MB before; it stayed so). Process-wide, as serving is;
    nothing where the C library is not glibc."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, 1 << 20)


def serve(
    specs: str | os.PathLike | list[str],
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    max_batch_size: int = 32,
    max_delay_ms: float = 5.0,
    device: str = "auto",
    threads: int | None = None,
    grpc_port: int | None = None,
    limits: Limits = DEFAULT_LIMITS,
    api_key: str | None = None,
    watch: bool = False,
) -> None:
    """Serve models over HTTP (and gRPC on `grpc_port`) until SIGINT or SIGTERM, then finish open requests:
    `onnxkit serve`. `specs`: a model's 'PATH' or 'NAME=PATH', or a list of them.

    `api_key` (else $ONNXKIT_API_KEY) is required from clients; `watch` reloads a model when its file changes.
    """
    _check_numbers(port=port, grpc_port=grpc_port, max_batch_size=max_batch_size, max_delay_ms=max_delay_ms)
    if max_batch_size < 1 or max_delay_ms < 0:
        raise OnnxkitError("max_batch_size must be >= 1, max_delay_ms >= 0", params=["max_batch_size", "max_delay_ms"])
    key = auth.api_key(api_key)
    if grpc_port is not None and grpc_port == port != 0:
        raise OnnxkitError(f"grpc_port {grpc_port} is also the HTTP port; give gRPC a port of its own",
                           params=["grpc_port"])
    files = model_files(specs)

    def load(name: str, path: Path, served: runtime.Model | None = None) -> runtime.Model:
        return load_served(name, path, device, threads, served)

    _return_large_frees()
    # the modules loaded so far live as long as the process: out of the cyclic collector's sight (~3% less CPU per
    # small request); not the models, which a reload replaces
    gc.freeze()
    models = [load(name, path) for name, path in files.items()]
    metrics = Metrics(list(files))
    repository = Repository(
        models, files, load, lambda m: Batcher(m, metrics, max_batch_size, max_delay_ms, limits.max_queue)
    )
    sock = bind(host, port)
    grpc_address = None
    if grpc_port is not None:  # checked (and a free one chosen for 0) now; the app listens there once started
        with bind(host, grpc_port, "grpc_port") as probe:
            grpc_address = _address(host, probe.getsockname()[1])
    app = create_app(repository, metrics, limits=limits, api_key=key, watch=watch, grpc_address=grpc_address)
    config = http_config(app, limits, lifespan="off")  # the Server below starts and stops the app itself
    bound_host, bound_port = sock.getsockname()[:2]
    url = f"http://{_address(bound_host, bound_port)}"
    for model in models:
        print(f"model {model.name}: {model.describe()} on {model.device}", file=sys.stderr)

    def started() -> None:
        if grpc_address is not None:
            print(f"gRPC (inference.GRPCInferenceService) at {grpc_address}", file=sys.stderr)
        if warning := auth.exposure_warning(host, key):
            print(warning, file=sys.stderr)
        print(f"serving {len(models)} model(s) at {url}/v2 (Ctrl-C to stop)", file=sys.stderr, flush=True)

    server = Server(config, app, started)  # type: ignore[arg-type]  (create_app's app has start and stop)
    try:
        # a Ctrl-C while the models loaded can be lost in C code (a weakref callback printed it as "Exception
        # ignored") and the server went on to serve: asked for, it stops here
        check_stop()
        server.run(sockets=[sock])
    finally:
        sock.close()
    config.http.notices.end_period(last=True)  # type: ignore[union-attr]  (warnings counted but not yet summed up)
    if server.failure is not None:
        raise server.failure
    print("stopped", file=sys.stderr)


DRAIN_BACKSTOP_S = 5.0  # uvicorn cancels what still runs this long after the requests were answered 503


def http_config(app: ASGIApp, limits: Limits, lifespan: Literal["on", "off"] = "on") -> uvicorn.Config:
    """The HTTP stack `serve` runs `app` on: uvicorn with the h11 protocol that enforces `limits`.

    uvicorn's event loop is uvloop where it is installed (the `serve` extra, except on
    Windows): 10-20% more requests/s than asyncio's on small models.
    """
    return uvicorn.Config(
        app,
        http=protocol_class(limits),
        timeout_keep_alive=limits.keep_alive_timeout,  # type: ignore[arg-type]  (a float works)
        log_level="warning",
        access_log=False,
        lifespan=lifespan,
        timeout_graceful_shutdown=limits.drain_timeout + DRAIN_BACKSTOP_S,  # Server answers them 503 before
    )


def _address(host: str, port: int) -> str:
    return f"{f'[{host}]' if ':' in host else host}:{port}"


class Startable(Protocol):
    """An app with a startup and a shutdown of its own (create_app's), run by `Server`."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def stop_taking(self) -> None: ...

    def abandon(self) -> None: ...


class Server(uvicorn.Server):
    """uvicorn's server, minus re-raising the stop signal after its graceful shutdown; with `app`, it runs the app's
    startup before HTTP listens (uvicorn's lifespan off), and `started` once it does.

    uvicorn re-raises SIGINT/SIGTERM once it has shut down, which kills the process
    with that signal; a server that stopped cleanly on request exits normally instead.
    A startup that fails with OnnxkitError (the gRPC port taken since `serve` checked it) stops it before HTTP
    listens, the error kept in `failure` for `serve` to raise: one line from the CLI. In uvicorn's lifespan it was
    a traceback, "Application startup failed. Exiting." and exit status 3.
    """

    def __init__(
        self, config: uvicorn.Config, app: Startable | None = None, started: Callable[[], None] | None = None
    ) -> None:
        super().__init__(config)
        self.app = app
        self.on_started = started
        self.failure: OnnxkitError | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        if self.app is not None:
            try:
                await self.app.start()
            except OnnxkitError as e:
                self.failure, self.should_exit = e, True
                return
            try:
                await super().startup(sockets=sockets)
            except BaseException:
                await self.app.stop()
                raise
        else:
            await super().startup(sockets=sockets)
        if self.on_started is not None:
            self.on_started()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's graceful shutdown; the requests still running `drain_timeout` seconds into it (or at a
        second Ctrl-C) are answered with a 503, where uvicorn cancelled them: a 500 and a traceback each."""
        drain = (self.config.timeout_graceful_shutdown or DRAIN_BACKSTOP_S) - DRAIN_BACKSTOP_S
        drained = asyncio.get_running_loop().call_later(drain, self._abandon)
        if self.app is not None:  # gRPC stops taking calls now too, and drains beside HTTP
            self.app.stop_taking()
        try:
            await super().shutdown(sockets=sockets)
        finally:
            drained.cancel()
        if self.app is not None:
            await self.app.stop()

    def _abandon(self) -> None:
        if self.app is not None:
            self.app.abandon()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit and self._loop is not None:  # the second signal: stop waiting for anything
            self._loop.call_soon_threadsafe(self._abandon)
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with handled(self.handle_exit):
            yield
