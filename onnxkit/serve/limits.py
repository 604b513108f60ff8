"""Limits that make the server safe to expose: timeouts, connection and queue caps, body size.

Where each one is enforced, and why there:

- **Keep-alive** (idle time between requests on one connection): uvicorn's own
  `timeout_keep_alive`.
- **Header timeout** (a request head must be complete this long after the connection
  opens, or after its first byte on a kept-alive connection): uvicorn has none, and an
  ASGI app never sees a request whose head is unfinished, so it lives here, in a subclass
  of uvicorn's h11 protocol (`protocol_class`). The head's size is capped by h11 (16 KiB).
- **Connections**: uvicorn's `limit_concurrency` counts connections and tasks together
  and answers plain text without `Retry-After`; the protocol subclass instead answers
  every request on a connection past `max_connections` with a JSON 503, `Retry-After`
  and `Connection: close`.
- **Body timeout and size** (the whole body must arrive within `body_timeout` of the
  head, and be at most `max_body_bytes`): in the app, which reads the body (`read_body`),
  so the refusal is an ordinary JSON 408 or 413 that /metrics counts; the partial body
  is dropped and the connection closed.
- **Queued requests** per model: the batcher refuses past `max_queue` with 503 and
  `Retry-After` (`onnxkit.serve.batcher`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import orjson
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from onnxkit.errors import OnnxkitError
from onnxkit.serve.protocol import RequestError

RETRY_AFTER_S = 1


@dataclass(frozen=True)
class Limits:
    """Every limit of the HTTP server, with the defaults of `onnxkit serve`."""

    header_timeout: float = 10.0
    body_timeout: float = 60.0
    keep_alive_timeout: float = 5.0
    max_connections: int = 512
    max_queue: int = 256
    max_body_bytes: int = 32 * 1024 * 1024

    def __post_init__(self) -> None:
        timeouts = (self.header_timeout, self.body_timeout, self.keep_alive_timeout)
        if min(timeouts) <= 0 or min(self.max_connections, self.max_queue, self.max_body_bytes) < 1:
            raise OnnxkitError(
                "--header-timeout, --body-timeout and --keep-alive must be > 0 seconds, "
                "--max-connections, --max-queue and --max-body-mb > 0"
            )


DEFAULT_LIMITS = Limits()


def protocol_class(limits: Limits) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a header timeout and a connection cap (see the module docstring)."""

    class GuardedH11Protocol(H11Protocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._head_timer: asyncio.TimerHandle | None = None
            self._arm_head_timer()
            if len(self.connections) > limits.max_connections:
                self.app = _refuse_connection

        def data_received(self, data: bytes) -> None:
            cycle = self.cycle
            if cycle is None or cycle.response_complete:
                self._arm_head_timer()  # bytes of a new request: its head must follow in time
            super().data_received(data)
            if self.cycle is not cycle:  # a complete head arrived
                self._cancel_head_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_head_timer()
            super().connection_lost(exc)

        def _arm_head_timer(self) -> None:
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(limits.header_timeout, self._head_timed_out)

        def _cancel_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if not self.transport.is_closing():
                self.transport.close()

    return GuardedH11Protocol


class ClientGone(Exception):
    """The client closed the connection before sending the whole body."""


async def read_body(receive: Receive, declared_length: bytes | None, limits: Limits) -> bytes:
    """The request body; RequestError 413 past `max_body_bytes`, 408 if it is not all there in `body_timeout`."""
    too_big = RequestError(
        413,
        f"the request body is over the {limits.max_body_bytes:,}-byte limit; send fewer rows per request "
        "or start the server with a larger --max-body-mb",
    )
    if declared_length is not None and declared_length.isdigit() and int(declared_length) > limits.max_body_bytes:
        raise too_big
    try:
        async with asyncio.timeout(limits.body_timeout):
            message = await receive()
            if not message.get("more_body"):  # the whole body in one message: the usual small request
                if message["type"] == "http.disconnect":
                    raise ClientGone
                body = message.get("body", b"")
                if len(body) > limits.max_body_bytes:
                    raise too_big
                return body
            buffer = bytearray(message.get("body", b""))
            while message.get("more_body"):
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientGone
                buffer += message.get("body", b"")
                if len(buffer) > limits.max_body_bytes:
                    raise too_big
            return bytes(buffer)
    except TimeoutError:
        raise RequestError(
            408, f"the request body did not arrive within {limits.body_timeout:g} s (the server's --body-timeout)"
        ) from None


def refusal(error: RequestError) -> tuple[bytes, dict[str, str]]:
    """The JSON body of a refusal and its extra headers: every 503 says when to retry."""
    headers = {"retry-after": str(RETRY_AFTER_S)} if error.status == 503 else {}
    if error.status in (408, 413):  # the rest of the body is not read: the connection cannot carry on
        headers["connection"] = "close"
    return orjson.dumps({"error": str(error)}), headers


async def send_json(send: Send, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
    """Send a whole JSON response on a raw ASGI `send`."""
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def _refuse_connection(scope: Scope, receive: Receive, send: Send) -> None:
    """The ASGI app of a connection past the cap: 503, and close."""
    body, headers = refusal(RequestError(503, "the server has too many open connections; retry in a moment"))
    await send_json(send, 503, body, {**headers, "connection": "close"})
