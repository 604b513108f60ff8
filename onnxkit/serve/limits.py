"""Limits that make the server safe to expose: timeouts, connection and queue caps, body size.

Where each one is enforced, and why there:

- **Keep-alive** (idle time between requests on one connection): uvicorn's own
  `timeout_keep_alive`.
- **Header and body timeouts** (a request head must be complete `header_timeout` after
  the connection opens, or after its first byte on a kept-alive connection; its body
  `body_timeout` after the head): uvicorn has neither, and an ASGI app never sees a
  request whose head is unfinished, so both live here, in a subclass of uvicorn's h11
  protocol (`protocol_class`). They cost nothing while requests arrive whole, unlike a
  timeout around each ASGI `receive`. A late head closes the connection; a late body is
  answered with a JSON 408 and `Connection: close`, and the app that was reading it sees
  the client leave (`read_body` raises `ClientGone`, status 408 for /metrics) and drops
  what it had. h11 refuses a head still incomplete past 16 KiB (431); one that arrives whole in
  one read (up to 256 KiB) is parsed.
- **Send timeout**: a client that stops reading its answer (the socket's buffers full, uvicorn
  waiting to send more, or a whole answer queued in memory) has `body_timeout` to start
  reading again; then the connection is dropped with what was still unsent. Without it, such a
  client held its answer in the server's memory, and the connection, for as long as it liked.
- **Stopping** (SIGINT, SIGTERM): a body still arriving gets `SHUTDOWN_GRACE_S` more (at most
  its body timeout), then a JSON 503 and `Connection: close` in the same way, so the server's
  graceful shutdown never has to cancel a request that is waiting for its body; an answer the
  client is not reading gets as long, then the connection is dropped. Answers still to come say
  `Connection: close`.
- **Connections**: uvicorn's `limit_concurrency` counts connections and tasks together
  and answers plain text without `Retry-After`; the protocol subclass instead first ends the
  connection waiting longest on its client, once silent for `stream_grace`, else the slowest whose
  request has come at under `MIN_RECEIVE_RATE` for `stream_grace` or more (a stalled or dripping body
  gets a JSON 408), else answers every request on a connection past `max_connections` with a JSON
  503, `Retry-After` and `Connection: close`.
- **Body size**: in the app, which reads the body (`read_body`): a JSON 413. The connection
  stays open: uvicorn reads and drops the rest of the body (within the body timeout), so a
  client that sends its whole body before reading gets the 413, not a reset connection. A client
  that said `Connection: close` (or spoke HTTP/1.0) gets it too: an answer that closes the connection
  while the body still arrives half-closes it and reads on, dropping what comes, until the client
  closes its end or `LINGER_S` pass (`_LingeringClose`).
  A compressed body (`Content-Encoding` gzip or deflate) is held to it once decompressed too (`decompressed`).
- **A client that leaves** (its connection closes) before its answer: the protocol marks the
  request's scope (`CLIENT_LEFT`), and a request still queued for its model is dropped before it runs
  (the batcher leaves its future in the scope under `WAITING`); its answer is not sent and /metrics
  counts it as 499, not 200. A run already under way finishes (other requests share it).
- **Chunked bodies**: h11 parses each chunk in Python (~1 µs), so a body sent in 1-byte chunks cost the
  event loop ~1 s a megabyte (a 32 MB body, half a minute). Past `CHUNKS_FREE` chunks, a body whose chunks
  average under `MIN_CHUNK_BYTES` is refused with a JSON 400 and the connection closed (`_ChunkCounting`).
- **Log lines a client can cause**: uvicorn logs a WARNING for each request h11 cannot parse
  ("Invalid HTTP request received.") and each request with an `Upgrade` header (two lines, one
  telling the operator to install a WebSocket library this server has no use for), so a client
  could fill the log. Each kind is logged at once the first time, with the client and what was
  wrong; the rest in the next `NOTICE_EVERY_S` are counted and summed up in one line when it ends,
  so a steady stream costs one line a period (`Notices`). The WebSocket advice is not logged.
- **Queued requests** per model: the batcher refuses past `max_queue` with 503 and
  `Retry-After` (`onnxkit.serve.batcher`).
- **gRPC** calls in progress (`max_connections`, a stream counting one) and idle streams
  (`stream_idle_timeout`, `stream_grace`): `onnxkit.serve.grpc_service.CallRoom`. A unary call's
  request message must arrive whole `body_timeout` after the call's HEADERS, or the call is ended
  with DEADLINE_EXCEEDED and its place freed (`grpc_service._one_request`): grpc itself would wait
  for it for as long as the client liked, before any of onnxkit's code ran.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import h11
import orjson
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from onnxkit.errors import OnnxkitError
from onnxkit.serve.protocol import RequestError

RETRY_AFTER_S = 1
CLIENT_CLOSED = 499  # counted in /metrics for a client that left before its answer was sent (nginx's code)
SHUTDOWN_GRACE_S = 2.0  # on stopping, how much longer a body still arriving may take
_HEAD_TOO_LARGE = "the request's head (request line and headers) is over the server's 16 KiB limit"
REFUSED = "onnxkit.refused"  # set in a request's ASGI scope to the status the protocol answered it with
CLIENT_LEFT = "onnxkit.client_left"  # set in a request's ASGI scope when its connection closes before the answer
WAITING = "onnxkit.waiting"  # in a request's ASGI scope while it is queued: the future its answer comes on
NOTICE_EVERY_S = 60.0  # a warning a client can cause: at most one line of each kind a period, after the first
MALFORMED = "Invalid HTTP request received"  # uvicorn's words, with what was wrong
_UPGRADE = "Unsupported upgrade request"
_WEBSOCKET_ADVICE = "No supported WebSocket library detected"  # uvicorn's advice to install one: no use here
CHUNKS_FREE = 1024  # a chunked body's chunks taken at any size; past them, they must average MIN_CHUNK_BYTES
MIN_CHUNK_BYTES = 256
# at the connection cap, a connection whose request has come slower than this since it began gives way (a client
# dripping a byte every half second was never silent for `stream_grace`: 520 of them held every place)
MIN_RECEIVE_RATE = 1024  # bytes a second
LINGER_S = 5.0  # an answer that closes its connection while the request's body arrives: the rest read this long at most


@dataclass(frozen=True)
class Limits:
    """Every limit of the HTTP and gRPC servers, with the defaults of `onnxkit serve`.

    `stream_idle_timeout`: a gRPC stream (ModelStreamInfer) with no request in progress and none received for as
    long is ended by the server (UNAVAILABLE). 300 s is Envoy's default `stream_idle_timeout`, so a client that
    works through an Envoy or Istio proxy works here too (NGINX ends such streams sooner: 60 s). It is not what
    keeps idle streams from locking out other callers: at the cap of `max_connections` calls, a new call ends the
    stream idle longest, once it has been idle for `stream_grace` seconds (1 s: room for a client to send its
    next request after an answer), rather than being refused. See `onnxkit.serve.grpc_service.CallRoom`.
    """

    header_timeout: float = 10.0
    body_timeout: float = 60.0
    keep_alive_timeout: float = 5.0
    max_connections: int = 512
    max_queue: int = 256
    max_body_bytes: int = 32 * 1024 * 1024
    stream_idle_timeout: float = 300.0
    stream_grace: float = 1.0
    drain_timeout: float = 10.0

    def __post_init__(self) -> None:
        timeouts = (self.header_timeout, self.body_timeout, self.keep_alive_timeout, self.stream_idle_timeout,
                    self.drain_timeout)
        if (
            min(timeouts) <= 0
            or self.stream_grace < 0
            or min(self.max_connections, self.max_queue, self.max_body_bytes) < 1
        ):
            raise OnnxkitError(
                "header_timeout, body_timeout, keep_alive_timeout, stream_idle_timeout and drain_timeout must be > 0 "
                "seconds, "
                "stream_grace >= 0, max_connections, max_queue and max_body_bytes > 0"
            )  # the CLI's option types refuse such values before they get here


DEFAULT_LIMITS = Limits()


class Notices:
    """Warnings that each request can cause, at most one line of each kind per `every` seconds: the
    first at once, then a count of the others when the period ends (one line a period while they go on).

    It stands in for uvicorn's "uvicorn.error" logger in the protocol (`warning` is filtered, the rest
    passes through); timers run on the event loop that calls it."""

    def __init__(self, logger: logging.Logger, every: float = NOTICE_EVERY_S) -> None:
        self.logger = logger
        self.every = every
        self._counted: dict[str, list] = {}  # kind -> [count in this period, the latest one's detail]
        self._since = 0.0  # when the period began (time.monotonic())
        self._timer: asyncio.TimerHandle | None = None

    def __getattr__(self, name: str) -> Any:  # level, log, error, ...: the logger's
        return getattr(self.logger, name)

    def warning(self, msg: object, *args: object, **kwargs: Any) -> None:
        text = str(msg)
        if text.startswith(MALFORMED):
            return  # noted with what was wrong by the protocol's send_400_response, which uvicorn calls next
        if text.startswith(_UPGRADE):
            self.note(_UPGRADE + " (served as plain HTTP)")
        elif not text.startswith(_WEBSOCKET_ADVICE):
            self.logger.warning(msg, *args, **kwargs)

    def note(self, kind: str, detail: str = "") -> None:
        """One more warning of `kind`: logged with `detail` if it is the first for a period, else counted."""
        if kind in self._counted:
            self._counted[kind][0] += 1
            self._counted[kind][1] = detail
            return
        self.logger.warning("%s%s; the next ones for %g s are counted in one line", kind, detail, self.every)
        self._counted[kind] = [0, detail]
        if self._timer is None:
            self._since = time.monotonic()
            self._timer = asyncio.get_running_loop().call_later(self.every, self.end_period)

    def end_period(self, last: bool = False) -> None:
        """Sum up each kind counted in the period that ends; a kind with none starts afresh (its next one is
        logged at once). `last`: the server stops, and no new period starts."""
        self._timer = None
        seconds, self._since = time.monotonic() - self._since, time.monotonic()
        for kind, (count, detail) in list(self._counted.items()):
            if count:
                latest = f", the latest{detail}" if detail else ""
                self.logger.warning("%s: %d more in %.3g s%s", kind, count, seconds, latest)
                self._counted[kind][0] = 0
            else:
                del self._counted[kind]
        if last:
            self._counted.clear()
        elif self._counted:
            self._timer = asyncio.get_running_loop().call_later(self.every, self.end_period)


def protocol_class(limits: Limits) -> type[H11Protocol]:
    """uvicorn's h11 protocol with header and body timeouts and a connection cap (see the module docstring);
    its `notices` sum up the warnings each request could cause (call `notices.end_period(last=True)` after)."""
    notices = Notices(logging.getLogger("uvicorn.error"))

    class GuardedH11Protocol(H11Protocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self.transport = _LingeringClose(transport, self._body_arriving)  # type: ignore[assignment]
            size = self.config.h11_max_incomplete_event_size
            self.conn = _ChunkCounting(h11.SERVER) if size is None else _ChunkCounting(h11.SERVER, size)
            self.logger = notices  # type: ignore[assignment]
            self._head_timer: asyncio.TimerHandle | None = self.loop.call_later(
                limits.header_timeout, self._head_timed_out
            )
            self._body_timer: asyncio.TimerHandle | None = None
            self._send_timer: asyncio.TimerHandle | None = None
            self._heard = self._began = self.loop.time()  # when the client last sent something; when its request
            self._received = 0  # began (its first byte, or the connection's opening), and the bytes since
            if len(self.connections) > limits.max_connections and not self._make_room():
                self.app = _refuse_connection

        def _make_room(self) -> bool:
            """At the cap, end a connection waiting on its client (a head or body stalled, or idle between requests),
            as gRPC's idle streams give way: the one silent longest, once for `stream_grace` s, else the slowest of
            those whose request has come at under MIN_RECEIVE_RATE since it began `stream_grace` s ago or more: 512
            clients each sending one byte of a body, or a byte every half second, held every place for the body
            timeout, renewably. False when none is either."""
            now = self.loop.time()
            waiting = [c for c in self.connections if c is not self and isinstance(c, GuardedH11Protocol)
                       and not c.transport.is_closing()  # ended for an earlier newcomer, not yet gone
                       and c._waiting_on_client() and now - c._began >= limits.stream_grace]
            silent = [c for c in waiting if now - c._heard >= limits.stream_grace]
            slow = [c for c in waiting if c._received < MIN_RECEIVE_RATE * (now - c._began)]
            if not silent and not slow:
                return False
            ended = min(silent, key=lambda c: c._heard) if silent else \
                min(slow, key=lambda c: c._received / (now - c._began))
            if ended._body_timer is not None:
                ended._body_timer.cancel()
                stalled = (f"the request body stalled (nothing for {now - ended._heard:.0f} s)" if silent else
                           f"the request came at {ended._received / (now - ended._began):.0f} bytes a second")
                ended._refuse_body(RequestError(408, f"{stalled} and its place went to a new connection (the "
                                                     "server's --max-connections); send a body at once"))
            else:
                ended.transport.close()
            return True

        def _waiting_on_client(self) -> bool:
            """True while the request's head or body is awaited, or between requests."""
            cycle = self.cycle
            return (self._head_timer is not None or self._body_timer is not None or cycle is None
                    or cycle.response_complete)

        def _body_arriving(self) -> bool:
            return self.conn.their_state is h11.SEND_BODY

        def data_received(self, data: bytes) -> None:
            if self.transport.lingering:  # type: ignore[attr-defined]  (the rest of a body answered already)
                return
            self._heard = self.loop.time()
            cycle = self.cycle
            between_requests = cycle is None or cycle.response_complete
            if between_requests and self._head_timer is None:  # a new request begins
                self._began, self._received = self._heard, 0
            self._received += len(data)
            if self._received == len(data) and data.startswith(_HTTP2_PREFACE):  # a request begins with it
                client = "%s:%d" % self.client if self.client else "a client"  # noqa: UP031  (as send_400_response)
                notices.note(MALFORMED, f" from {client}: HTTP/2's preface, from a gRPC client? (answered 400)")
                self._refuse(RequestError(400, _HTTP2_ON_HTTP1))
                return
            super().data_received(data)
            if self.flow.read_paused and self._body_in_unanswered():
                # uvicorn stops reading a body past 64 KiB until the app takes it, and did not read again
                # until the answer was sent: a client that left while its request waited or ran went unseen
                self.flow.resume_reading()
            if self.cycle is not cycle:  # a complete head arrived
                self._cancel_timers()
                if self.cycle.more_body:
                    self._body_timer = self.loop.call_later(limits.body_timeout, self._body_timed_out)
            elif between_requests and self._head_timer is None:  # the start of a head: the rest must follow in time
                self._head_timer = self.loop.call_later(limits.header_timeout, self._head_timed_out)
            elif self._body_timer is not None and not self.cycle.more_body:
                self._cancel_timers()

        def eof_received(self) -> None:
            """The client closed its sending side, and the connection closes (as nginx, the server takes it for a
            client that left: its request is dropped if still queued). A request whose body had not all arrived is
            first answered with a 400 saying so, as nginx answers it (it was closed without a word); a client that
            only half-closed reads it."""
            cycle = self.cycle
            if cycle is not None and not cycle.response_complete and self.conn.their_state is h11.SEND_BODY:
                if not self.transport.lingering:  # type: ignore[attr-defined]
                    self._cancel_timers()
                    self._refuse(RequestError(400, _BODY_CUT_SHORT))

        def _body_in_unanswered(self) -> bool:
            """True when the request's whole body has arrived, nothing of a next one is waiting in h11's
            buffer (pipelined: reading stays paused), and the answer is still to come."""
            cycle = self.cycle
            return (cycle is not None and not cycle.more_body and not cycle.response_complete
                    and not self.conn.trailing_data[0])

        def shutdown(self) -> None:
            """Close once the request in progress is answered, saying so (Connection: close: the client then opens
            a new connection rather than sending its next request on this one, to be reset); a body still arriving,
            or an answer the client is not reading, has `SHUTDOWN_GRACE_S` more."""
            super().shutdown()
            if self.cycle is not None and not self.cycle.response_started:
                self.cycle.default_headers = [*self.cycle.default_headers, (b"connection", b"close")]
            timer = self._body_timer
            if timer is not None and timer.when() > self.loop.time() + SHUTDOWN_GRACE_S:
                timer.cancel()
                stopping = RequestError(503, "the server is stopping and the request body had not all arrived; retry")
                self._body_timer = self.loop.call_later(SHUTDOWN_GRACE_S, self._refuse_body, stopping)
            timer = self._send_timer  # a client not reading its answer: as long, then dropped
            if timer is not None and timer.when() > self.loop.time() + SHUTDOWN_GRACE_S:
                timer.cancel()
                self._send_timer = self.loop.call_later(SHUTDOWN_GRACE_S, self.transport.abort)

        def pause_writing(self) -> None:
            """The client is not reading what was sent: it has `body_timeout` to take it, or the connection is
            dropped with what is left unsent (an answer waiting in memory for a client that never reads it)."""
            super().pause_writing()
            if self._send_timer is None:
                self._send_timer = self.loop.call_later(limits.body_timeout, self.transport.abort)

        def resume_writing(self) -> None:
            super().resume_writing()
            if self._send_timer is not None:
                self._send_timer.cancel()
                self._send_timer = None

        def connection_lost(self, exc: Exception | None) -> None:
            """Also tell the app reading or answering a request that its client left: a queued request is
            dropped before it runs (`ClientGone`), and the answer is counted as 499, not sent."""
            self._cancel_timers()
            if self._send_timer is not None:
                self._send_timer.cancel()
            cycle = self.cycle
            if cycle is not None and not cycle.response_complete:
                scope = cycle.scope
                scope[CLIENT_LEFT] = True  # type: ignore[literal-required]
                waiting = scope.get(WAITING)
                if waiting is not None and not waiting.done():
                    waiting.set_exception(ClientGone(CLIENT_CLOSED))
            super().connection_lost(exc)

        def _cancel_timers(self) -> None:
            for timer in (self._head_timer, self._body_timer):
                if timer is not None:
                    timer.cancel()
            self._head_timer = self._body_timer = None

        def _head_timed_out(self) -> None:
            self._head_timer = None
            self.transport.close()

        def _body_timed_out(self) -> None:
            late = f"the request body did not arrive within {limits.body_timeout:g} s (the server's --body-timeout)"
            self._refuse_body(RequestError(408, late))

        def send_400_response(self, msg: str) -> None:
            """A request h11 cannot parse: a JSON error saying what is wrong, and close (uvicorn calls
            this while handling h11's RemoteProtocolError, and answered in plain text)."""
            error = sys.exception()
            client = "%s:%d" % self.client if self.client else "a client"  # noqa: UP031  (uvicorn's own form)
            if not isinstance(error, h11.RemoteProtocolError):  # not from h11: uvicorn's own answer
                notices.note(MALFORMED, f" from {client}")
                super().send_400_response(msg)
                return
            notices.note(MALFORMED, f" from {client}: {str(error)[:200]} (answered {error.error_status_hint})")
            status = error.error_status_hint
            if status == 431:
                refused = RequestError(431, _HEAD_TOO_LARGE)
            else:
                refused = RequestError(status, f"malformed HTTP request: {str(error)[:200]}")
            self._refuse(refused)

        def _refuse_body(self, error: RequestError) -> None:
            """Answer `error` to a request whose body has not all arrived, and close the connection."""
            self._body_timer = None
            self._refuse(error)

        def _refuse(self, error: RequestError) -> None:
            """Answer `error` as JSON unless a response has begun, and close the connection."""
            if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):  # no response to this request yet
                body, extra = refusal(error)
                if self.cycle is not None:  # the app reading this request's body counts this status
                    self.cycle.scope[REFUSED] = error.status  # type: ignore[literal-required]
                raw_headers = json_headers(body, {**extra, "connection": "close"})
                reason = HTTPStatus(error.status).phrase.encode()  # as uvicorn's own answers: "400 Bad Request"
                head = h11.Response(status_code=error.status, headers=raw_headers, reason=reason)
                for event in (head, h11.Data(data=body), h11.EndOfMessage()):
                    self.transport.write(self.conn.send(event))
            self.transport.close_now()  # type: ignore[attr-defined]

    GuardedH11Protocol.notices = notices  # type: ignore[attr-defined]
    return GuardedH11Protocol


_BODY_CUT_SHORT = ("the client closed its side of the connection before the request body ended (short of its "
                   "Content-Length, or of its last chunk); send the whole body")
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n"  # what an HTTP/2 client (gRPC's) sends first, as a request line
_HTTP2_ON_HTTP1 = ("this port speaks HTTP/1.1, not HTTP/2: connect gRPC clients to the server's --grpc-port "
                   "(HTTP clients without HTTP/2 prior knowledge)")  # fmt: skip


class _LingeringClose:
    """A connection's transport, whose `close` waits, while the client is still sending its request's body, for the
    client to stop: the answer is sent and our end closed for writing at once (FIN), and what comes is read and
    dropped until the client closes its end, or for `LINGER_S`. A socket closed with data unread sends a reset,
    which a client still sending its body gets before it reads the answer: one that said `Connection: close`, as
    urllib does, or spoke HTTP/1.0, got "Connection reset by peer" for a 413, not the 413 (nginx's lingering_close).
    `close_now` closes at once, for the protocol's own refusals."""

    def __init__(self, transport: asyncio.Transport, body_arriving: Callable[[], bool]) -> None:
        self._transport = transport
        self._body_arriving = body_arriving
        self.lingering = False
        self.write = transport.write  # the one call on every answer: not through __getattr__

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def is_closing(self) -> bool:
        return self.lingering or self._transport.is_closing()

    def close(self) -> None:
        if self.lingering:  # the timer below closes it
            return
        if self._transport.is_closing() or not self._body_arriving() or not self._transport.can_write_eof():
            self._transport.close()
            return
        self.lingering = True
        self._transport.write_eof()  # once the answer is sent; the client's closing its end closes the transport
        self._transport.resume_reading()  # uvicorn pauses reading past 64 KiB of body until the app takes it
        asyncio.get_running_loop().call_later(LINGER_S, self._transport.close)

    def close_now(self) -> None:
        self._transport.close()


class _ChunkCounting(h11.Connection):
    """h11's server connection, refusing a chunked body (RemoteProtocolError, answered 400) whose chunks average
    under MIN_CHUNK_BYTES once it has more than CHUNKS_FREE of them."""

    chunks = size = 0  # of the body being read

    def next_event(self) -> Any:
        event = super().next_event()
        if type(event) is h11.Data:
            self.chunks += event.chunk_start
            self.size += len(event.data)
            if self.chunks > CHUNKS_FREE and self.size < self.chunks * MIN_CHUNK_BYTES:
                raise h11.RemoteProtocolError(
                    f"the body came in {self.chunks} chunks of {self.size // self.chunks} bytes on average; "
                    f"send chunks of {MIN_CHUNK_BYTES} bytes or more, or a Content-Length",
                    error_status_hint=400,
                )
        elif type(event) is h11.Request:
            self.chunks = self.size = 0
        return event


class ClientGone(Exception):
    """The connection closed before the whole body arrived, or before the answer; `status` is what /metrics counts."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


async def read_body(scope: Scope, receive: Receive, declared_length: bytes | None, max_bytes: int) -> bytes:
    """The request body; RequestError(413) past `max_bytes`, ClientGone if the connection closes first."""
    if declared_length is not None and declared_length.isdigit() and int(declared_length) > max_bytes:
        raise _too_big(max_bytes)
    message = await receive()
    body = message.get("body", b"")
    if message.get("more_body"):
        buffer = bytearray(body)
        while message.get("more_body"):
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            buffer += message.get("body", b"")
            if len(buffer) > max_bytes:
                raise _too_big(max_bytes)
        else:
            body = bytes(buffer)
    if message["type"] == "http.disconnect":
        raise ClientGone(scope.get(REFUSED, CLIENT_CLOSED))
    if len(body) > max_bytes:
        raise _too_big(max_bytes)
    return body


def decompressed(body: bytes, encoding: bytes, max_bytes: int) -> bytes:
    """A body sent with `Content-Encoding` gzip or deflate (tritonclient.http's request_compression_algorithm),
    decompressed: RequestError(413) past `max_bytes` so decompressed, 400 for data that is not one whole stream,
    415 for another encoding."""
    name = encoding.decode("latin-1").strip().lower()
    if name == "identity":
        return body
    if name not in ("gzip", "deflate"):
        raise RequestError(415, f"Content-Encoding {name!r} is not supported; send gzip, deflate or none")
    stream = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib (HTTP's deflate), told apart by their headers
    try:
        data = stream.decompress(body, max_bytes + 1)
    except zlib.error as e:
        raise RequestError(400, f"the request body is not {name} data ({e})") from None
    if len(data) > max_bytes:
        raise _too_big(max_bytes)
    if not stream.eof or stream.unused_data:
        raise RequestError(400, f"the request body is not one whole {name} stream")
    return data


def _too_big(max_bytes: int) -> RequestError:
    return RequestError(
        413,
        f"the request body is over the {max_bytes:,}-byte limit; send fewer rows per request "
        "or start the server with a larger --max-body-mb",
    )


def refusal(error: RequestError) -> tuple[bytes, dict[str, str]]:
    """The JSON body of a refusal and its extra headers: every 503 says when to retry."""
    headers = {"retry-after": str(RETRY_AFTER_S)} if error.status == 503 else {}
    if error.status == 408:  # the rest of the body is late: the connection cannot carry on
        headers["connection"] = "close"
    # a 413 keeps the connection: uvicorn reads and drops the rest of the body, so a client that sends the whole
    # body before reading its answer gets the 413 (closing with the body unread resets the connection instead)
    return orjson.dumps({"error": str(error)}), headers


def json_headers(body: bytes, headers: dict[str, str] | None = None) -> list[tuple[bytes, bytes]]:
    """The raw headers of a JSON response: its type and length, and `headers`."""
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if headers:
        raw += [(k.encode(), v.encode()) for k, v in headers.items()]
    return raw


async def send_json(send: Send, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
    """Send a whole JSON response on a raw ASGI `send`."""
    await send({"type": "http.response.start", "status": status, "headers": json_headers(body, headers)})
    await send({"type": "http.response.body", "body": body})


async def _refuse_connection(scope: Scope, receive: Receive, send: Send) -> None:
    """The ASGI app of a connection past the cap: 503, and close."""
    body, headers = refusal(RequestError(503, "the server has too many open connections; retry in a moment"))
    await send_json(send, 503, body, {**headers, "connection": "close"})
