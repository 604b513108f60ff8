"""The HTTP application: Open Inference Protocol (KServe V2) endpoints, the model repository and /metrics.

An outer raw-ASGI layer (`_Front`) checks the API key, counts every request for
/metrics, and answers infer requests itself: they skip Starlette's routing, request
and response objects and middleware, which cost as much as the HTTP parsing on a
small model. Every other endpoint is a Starlette route.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from onnxkit.runtime import Model
from onnxkit.runtime.text import carries_tokenizer
from onnxkit.serve import inference, protocol
from onnxkit.serve.auth import OPEN_PATHS, authorized
from onnxkit.serve.inference import offload
from onnxkit.serve.limits import (
    CLIENT_CLOSED,
    CLIENT_LEFT,
    DEFAULT_LIMITS,
    ClientGone,
    Limits,
    decompressed,
    read_body,
    refusal,
    send_json,
)
from onnxkit.serve.metrics import CONTENT_TYPE, Metrics
from onnxkit.serve.protocol import HEADER_LENGTH, InferRequest, RequestError, decode_request, encode_response
from onnxkit.serve.repository import Repository

_log = logging.getLogger("onnxkit.serve")
GRPC_ANSWER_S = 1.0  # at a stop, the time gRPC calls get past --drain-timeout to send the 503s it ended with
_HEADER_LENGTH = HEADER_LENGTH.lower().encode()  # as ASGI gives header names


def create_app(
    repository: Repository,
    metrics: Metrics,
    *,
    limits: Limits = DEFAULT_LIMITS,
    api_key: str | None = None,
    watch: bool = False,
    grpc_address: str | None = None,
) -> ASGIApp:
    """An ASGI app serving the repository's models by name.

    `api_key`: required as `Authorization: Bearer KEY` everywhere but /v2/health/*.
    `watch`: reload a model when its file changes. With `grpc_address` (host:port), the V2
    gRPC service runs beside it on the same batchers.
    """
    ready = False

    def lookup(request: Request) -> Model:
        name, version = request.path_params["name"], request.path_params.get("version", "")
        return inference.find_model(repository.served, name, version).model

    async def live(request: Request) -> Response:
        return _json({"live": True})

    async def server_ready(request: Request) -> Response:
        return _json({"ready": ready}, 200 if ready else 503)

    async def server_metadata(request: Request) -> Response:
        return _json(protocol.server_metadata())

    async def model_ready(request: Request) -> Response:
        return _json({"name": lookup(request).name, "ready": ready}, 200 if ready else 503)

    async def model_info(request: Request) -> Response:
        return _json(protocol.model_metadata(lookup(request)))

    async def model_config(request: Request) -> Response:
        name, version = request.path_params["name"], request.path_params.get("version", "")
        return _json(inference.model_config(repository.served, name, version))

    async def model_statistics(request: Request) -> Response:
        name, version = request.path_params.get("name", ""), request.path_params.get("version", "")
        return _json(inference.statistics(repository.served, name, version))

    async def repository_index(request: Request) -> Response:
        body = await read_body(request.scope, request.receive, _header(request.scope, b"content-length"),
                               limits.max_body_bytes)  # fmt: skip
        models = repository.index()
        return _json([m for m in models if m["state"] == "READY"] if _ready_only(body) else models)

    async def repository_load(request: Request) -> Response:
        body = await read_body(request.scope, request.receive, _header(request.scope, b"content-length"),
                               limits.max_body_bytes)  # fmt: skip
        parameters = _body_object(body, '{"parameters": {}}').get("parameters")
        if not isinstance(parameters, dict | None):
            raise RequestError(400, f'"parameters" must be an object, got {type(parameters).__name__}')
        await repository.load(request.path_params["name"], parameters)
        return _json({})

    async def repository_unload(request: Request) -> Response:
        await repository.unload(request.path_params["name"])
        return _json({})

    async def prometheus(request: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    grpc_server = None

    async def start() -> None:
        """Start the batchers, then the gRPC server; OnnxkitError, with nothing left running, if it cannot listen."""
        nonlocal ready, grpc_server
        repository.start(watch)
        if grpc_address is not None:
            from onnxkit.serve import grpc_service

            service = grpc_service.InferenceService(repository, metrics, lambda: ready, api_key)
            try:
                grpc_server = await grpc_service.start_server(grpc_address, service, limits)
            except BaseException:
                await repository.stop()
                raise
        ready = True

    grpc_stopped: asyncio.Future | None = None

    async def stop_grpc() -> None:
        # gRPC calls in progress get --drain-timeout, as HTTP requests do; those still queued or running then are
        # answered UNAVAILABLE with the batchers' "the server is stopping; retry ..." (grpc had 5 s, whatever the
        # flag, then ended them with its own "Cancelling all calls")
        abandon = asyncio.get_running_loop().call_later(limits.drain_timeout, repository.abandon)
        try:
            await grpc_server.stop(limits.drain_timeout + GRPC_ANSWER_S)  # type: ignore[union-attr]
        finally:
            abandon.cancel()

    def stop_taking() -> None:
        """The stop begins: not ready, and gRPC takes no new calls, its calls in progress draining beside HTTP's
        requests (it took new calls and said ready until HTTP had drained, then drained on its own: up to twice
        --drain-timeout)."""
        nonlocal ready, grpc_stopped
        ready = False
        if grpc_server is not None and grpc_stopped is None:
            grpc_stopped = asyncio.ensure_future(stop_grpc())

    async def stop() -> None:
        stop_taking()
        if grpc_stopped is not None:
            await grpc_stopped
        await repository.stop()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await start()
        try:
            yield
        finally:
            await stop()

    routes = [
        Route("/v2/health/live", live),
        Route("/v2/health/ready", server_ready),
        Route("/v2", server_metadata),
        Route("/metrics", prometheus),
        Route("/v2/repository/index", repository_index, methods=["POST"]),
        Route("/v2/repository/models/{name}/load", repository_load, methods=["POST"]),
        Route("/v2/repository/models/{name}/unload", repository_unload, methods=["POST"]),
        Route("/v2/models/stats", model_statistics),  # before /v2/models/{name}
    ]
    for path in ["/v2/models/{name}", "/v2/models/{name}/versions/{version}"]:
        routes += [Route(path, model_info), Route(path + "/ready", model_ready), Route(path + "/config", model_config),
                   Route(path + "/stats", model_statistics)]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            RequestError: _request_error,
            HTTPException: _http_error,
            Exception: _internal_error,
        },
    )
    app.router.redirect_slashes = False  # a 307 to a URL built from the client's Host header: a JSON 404 instead
    return _Front(app, repository, metrics, limits, api_key, start, stop, stop_taking)


class _Front:
    """Authentication, metrics, and the short path for infer requests; the rest goes to `app`.

    `start` and `stop` are the app's startup and shutdown, which its ASGI lifespan runs; `onnxkit serve` runs them
    itself instead (`server.Server`), before HTTP listens, so that a gRPC port taken since it was checked is one
    error line (uvicorn logs a failed lifespan with its traceback, then "Application startup failed").
    """

    def __init__(
        self,
        app: ASGIApp,
        repository: Repository,
        metrics: Metrics,
        limits: Limits,
        key: str | None,
        start: Callable[[], Awaitable[None]],
        stop: Callable[[], Awaitable[None]],
        stop_taking: Callable[[], None],
    ):
        self.app = app
        self.repository = repository
        self.metrics = metrics
        self.limits = limits
        self.key = key
        self.start = start
        self.stop = stop
        self.stop_taking = stop_taking  # called as the stop begins; `stop` then waits for what is in progress

    def abandon(self) -> None:
        """Stop waiting for the requests in progress: each gets a 503 now."""
        self.repository.abandon()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        if not scope["path"].startswith("/"):
            scope = _origin_form(scope)
        path: str = scope["path"]
        target = _infer_target(path)
        key = self.key
        if _framed_twice(scope["headers"]):
            body, headers = refusal(RequestError(400, _FRAMED_TWICE))
            await send_json(send, 400, body, {**headers, "connection": "close"})
            status, endpoint = 400, "malformed"
        elif key is not None and path not in OPEN_PATHS and not authorized(_header(scope, b"authorization"), key):
            error = RequestError(401, "this server needs an API key: send the header 'Authorization: Bearer KEY'")
            body, headers = refusal(error)
            await send_json(send, 401, body, {**headers, "www-authenticate": "Bearer"})
            status, endpoint = 401, "infer" if target else "unauthorized"
        elif target is not None:
            status, endpoint = await self._infer(scope, receive, send, *target), "infer"
        else:
            status = 500

            async def send_with_status(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            try:
                await self.app(scope, receive, send_with_status)
            finally:
                endpoint = getattr(scope.get("endpoint"), "__name__", "unknown")
                self._record(endpoint, scope.get("path_params", {}).get("name", ""), status, start)
            return
        self._record(endpoint, target[0] if target else "", status, start)

    def _record(self, endpoint: str, model: str, status: int, start: float) -> None:
        seconds = time.perf_counter() - start if endpoint == "infer" else None
        self.metrics.record_request(endpoint, model, status, seconds)

    async def _infer(self, scope: Scope, receive: Receive, send: Send, name: str, version: str) -> int:
        """Answer one infer request; its status."""
        used: Model | None = None
        size = 0
        length = header_length = encoding = None
        for key, value in scope["headers"]:  # the three headers read here, in one pass
            if key == b"content-length":
                length = value
            elif key == _HEADER_LENGTH:
                header_length = value.decode("latin-1")
            elif key == b"content-encoding":
                encoding = value

        async def decode(model: Model) -> InferRequest:
            nonlocal used, size
            used = model
            body = await read_body(scope, receive, length, self.limits.max_body_bytes)
            if encoding is not None:
                body = await asyncio.to_thread(decompressed, body, encoding, self.limits.max_body_bytes)
            size = len(body)
            return await offload(size, decode_request, body, model, header_length, heavy=carries_tokenizer(model))

        try:
            if scope["method"] != "POST":
                raise RequestError(405, f"{scope['method']} is not allowed on {scope['path']}")
            batcher = inference.find_model(self.repository.served, name, version)
            request, outputs = await inference.infer(batcher, decode, scope)
            if CLIENT_LEFT in scope:  # during the run: nobody to answer (uvicorn would drop it unsent)
                return CLIENT_CLOSED
            assert used is not None
            reply, header_length = await offload(size, encode_response, used, request, outputs)
        except RequestError as e:
            body, headers = refusal(e)
            if e.status == 413 and (_header(scope, b"expect") or b"").lower() == b"100-continue":
                headers["connection"] = "close"  # the client sends no body after a refusal: the rest is not the body
            await send_json(send, e.status, body, headers)
            return e.status
        except ClientGone as e:
            return e.status
        except Exception as e:
            _log.exception("internal error in infer")
            await send_json(send, 500, _internal_error_body(e))
            return 500
        if header_length is None:
            await send_json(send, 200, reply)
        else:
            headers = [
                (b"content-type", b"application/octet-stream"),
                (b"content-length", str(len(reply)).encode()),
                (_HEADER_LENGTH, str(header_length).encode()),
            ]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": reply})
        return 200


_FRAMED_TWICE = "malformed HTTP request: both Content-Length and Transfer-Encoding; send one"


def _framed_twice(headers: list[tuple[bytes, bytes]]) -> bool:
    """True for a request with both a Content-Length and a Transfer-Encoding (h11 reads it as chunked). A proxy
    in front that goes by the length would see another request boundary than the server: request smuggling."""
    names = {name for name, _ in headers}
    return b"transfer-encoding" in names and b"content-length" in names


def _origin_form(scope: Scope) -> Scope:
    """The scope of a request whose target is in absolute-form (`POST http://host:8000/v2/models/NAME/infer`, as a
    client sends it through a proxy, and which an HTTP/1.1 server must take) with the target's path alone, as if
    sent in origin-form; it was a 404, "no such endpoint: /http://host:8000/v2/...". Any other scope unchanged."""
    scheme, absolute, rest = scope["path"].partition("://")
    if not absolute or scheme.lower() not in ("http", "https"):
        return scope
    raw_path = scope.get("raw_path") or b""
    return {**scope, "path": "/" + rest.partition("/")[2], "raw_path": b"/" + raw_path.partition(b"://")[2].partition(b"/")[2]}


def _infer_target(path: str) -> tuple[str, str] | None:
    """(model, version) of /v2/models/NAME[/versions/V]/infer, else None."""
    if not (path.startswith("/v2/models/") and path.endswith("/infer")):
        return None
    parts = path[len("/v2/models/") : -len("/infer")].split("/")
    if len(parts) == 1 and parts[0]:
        return parts[0], ""
    if len(parts) == 3 and parts[0] and parts[1] == "versions" and parts[2]:
        return parts[0], parts[2]
    return None


def _ready_only(body: bytes) -> bool:
    """The "ready" flag of a repository index request, as Triton reads it: {"ready": true} asks for the ready models
    only; an empty body or {} for all."""
    ready = _body_object(body, '{"ready": true}').get("ready", False)
    if not isinstance(ready, bool):
        raise RequestError(400, f'"ready" must be true or false, got {ready!r}')
    return ready


def _body_object(body: bytes, example: str) -> dict[str, Any]:
    """The JSON object of a repository request's body ({} if empty); RequestError(400) for anything else."""
    if not body.strip():
        return {}
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise RequestError(400, f"malformed JSON in the request body: {e}") from None
    if not isinstance(payload, dict):
        raise RequestError(400, f"the request body must be a JSON object, e.g. {example}")
    return payload


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None


def _json(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(content), status, headers, media_type="application/json")


async def _request_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestError)
    body, headers = refusal(exc)
    return Response(body, exc.status, headers, media_type="application/json")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    path = request.url.path
    unsupported = protocol.unsupported_extension(path.removeprefix("/v2/")) if path.startswith("/v2/") else None
    hint = (f" ({unsupported} is not supported by this server)" if unsupported
            else " (this server speaks the KServe v2 / Triton protocol: POST /v2/models/NAME/infer with "
                 '{"inputs": [...]}; POST /v2/repository/index lists the models)' if path.startswith("/v1/") else "")
    message = {
        404: f"no such endpoint: {path}{hint}",
        405: f"{request.method} is not allowed on {path}",
    }
    return _json({"error": message.get(exc.status_code, exc.detail)}, exc.status_code, exc.headers)


async def _internal_error(request: Request, exc: Exception) -> Response:
    return Response(_internal_error_body(exc), 500, media_type="application/json")


def _internal_error_body(exc: Exception) -> bytes:
    return orjson.dumps({"error": f"internal server error ({type(exc).__name__}); see the server's log"})
