"""The HTTP application: Open Inference Protocol (KServe V2) endpoints and /metrics."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from onnxkit.runtime import Model
from onnxkit.serve import inference, protocol
from onnxkit.serve.batcher import Batcher
from onnxkit.serve.inference import offload
from onnxkit.serve.metrics import CONTENT_TYPE, Metrics
from onnxkit.serve.protocol import (
    HEADER_LENGTH,
    InferRequest,
    RequestError,
    decode_request,
    encode_response,
    model_metadata,
)


def create_app(
    models: list[Model],
    *,
    max_batch_size: int = 32,
    max_delay_ms: float = 5.0,
    max_body_bytes: int = 32 * 1024 * 1024,
    grpc_address: str | None = None,
) -> ASGIApp:
    """An ASGI app serving `models` by name, with a dynamic batcher for each.

    With `grpc_address` (host:port), the V2 gRPC service runs beside it on the same batchers.
    """
    metrics = Metrics([m.name for m in models])
    batchers = {m.name: Batcher(m, metrics, max_batch_size, max_delay_ms) for m in models}
    ready = False

    def lookup(request: Request) -> Batcher:
        return inference.find_model(batchers, request.path_params["name"], request.path_params.get("version", ""))

    async def live(request: Request) -> Response:
        return _json({"live": True})

    async def server_ready(request: Request) -> Response:
        return _json({"ready": ready}, 200 if ready else 503)

    async def server_metadata(request: Request) -> Response:
        return _json(protocol.server_metadata())

    async def model_ready(request: Request) -> Response:
        batcher = lookup(request)
        return _json({"name": batcher.model.name, "ready": ready}, 200 if ready else 503)

    async def model_info(request: Request) -> Response:
        return _json(model_metadata(lookup(request).model))

    async def infer(request: Request) -> Response:
        batcher = lookup(request)
        size = 0

        async def decode(model: Model) -> InferRequest:
            nonlocal size
            body = await _read_body(request, max_body_bytes)
            size = len(body)
            return await offload(size, decode_request, body, model, request.headers.get(HEADER_LENGTH))

        infer_request, outputs = await inference.infer(batcher, decode)
        reply, header_length = await offload(size, encode_response, batcher.model, infer_request, outputs)
        if header_length is None:
            return Response(reply, media_type="application/json")
        return Response(reply, headers={HEADER_LENGTH: str(header_length)}, media_type="application/octet-stream")

    async def prometheus(request: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        nonlocal ready
        for batcher in batchers.values():
            batcher.start()
        grpc_server = None
        if grpc_address is not None:
            from onnxkit.serve import grpc_service

            service = grpc_service.InferenceService(batchers, metrics, lambda: ready)
            grpc_server = await grpc_service.start_server(grpc_address, service, max_body_bytes)
        ready = True
        try:
            yield
        finally:
            ready = False
            if grpc_server is not None:
                await grpc_server.stop(5)
            await asyncio.gather(*(b.stop() for b in batchers.values()))

    model_paths = ["/v2/models/{name}", "/v2/models/{name}/versions/{version}"]
    routes = [
        Route("/v2/health/live", live),
        Route("/v2/health/ready", server_ready),
        Route("/v2", server_metadata),
        Route("/metrics", prometheus),
    ]
    for path in model_paths:
        routes += [
            Route(path, model_info),
            Route(path + "/ready", model_ready),
            Route(path + "/infer", infer, methods=["POST"]),
        ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            RequestError: _request_error,
            HTTPException: _http_error,
            Exception: _internal_error,
        },
    )
    return _Metered(app, metrics, set(batchers))


class _Metered:
    """Counts every request by endpoint, model and status, and times infer calls."""

    def __init__(self, app: ASGIApp, metrics: Metrics, models: set[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.models = models

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
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
            model = scope.get("path_params", {}).get("name", "")
            model = model if model in self.models else ""
            seconds = time.perf_counter() - start if endpoint == "infer" and model else None
            self.metrics.record_request(endpoint, model, status, seconds)


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 past `limit` bytes."""
    declared = request.headers.get("content-length", "")
    too_big = RequestError(
        413,
        f"the request body is over the {limit:,}-byte limit; send fewer rows per request "
        "or start the server with a larger --max-body-mb",
    )
    if declared.isdigit() and int(declared) > limit:
        raise too_big
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


def _json(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(content), status, headers, media_type="application/json")


async def _request_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestError)
    return _json({"error": str(exc)}, exc.status)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = {
        404: f"no such endpoint: {request.url.path}",
        405: f"{request.method} is not allowed on {request.url.path}",
    }
    return _json({"error": message.get(exc.status_code, exc.detail)}, exc.status_code, exc.headers)


async def _internal_error(request: Request, exc: Exception) -> Response:
    return _json({"error": f"internal server error ({type(exc).__name__}); see the server's log"}, 500)
