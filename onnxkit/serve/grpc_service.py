"""The V2 protocol over gRPC: `inference.GRPCInferenceService` on grpc.aio, beside the HTTP app.

It runs on the HTTP server's event loop and shares its model repository (batchers, load,
unload), metrics, API key and errors: a refusal is the same `RequestError`, sent as the gRPC status that matches its
HTTP status. With a key, every RPC but ServerLive and ServerReady needs the metadata
`authorization: Bearer KEY`. ModelStreamInfer runs each request of a stream as it arrives (so the
batcher sees them together) and answers in the order asked; a refused request gets an answer
with its `error_message`, and the stream goes on.
Calls in progress are capped, and idle streams give way to new calls (`CallRoom`); a unary call whose
request message has not arrived within the body timeout is ended (`_one_request`).
Inputs come as typed `contents` or as `raw_input_contents` (the binary extension's layout);
outputs always go back as `raw_output_contents`, which is what V2 clients read first.

The messages are built from v2_grpc.proto (compiled into `v2_grpc_descriptor`) in a
descriptor pool of their own, so a process may also import tritonclient.grpc or KServe,
whose generated modules define the same `inference.*` names in protobuf's global pool.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import grpc
import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.message import DecodeError

from onnxkit.errors import OnnxkitError
from onnxkit.runtime import Model
from onnxkit.runtime.text import carries_tokenizer
from onnxkit.serve import binary, inference, protocol
from onnxkit.serve.auth import authorized
from onnxkit.serve.batcher import STOPPING
from onnxkit.serve.errors import RequestError
from onnxkit.serve.limits import CLIENT_CLOSED, DEFAULT_LIMITS, Limits
from onnxkit.serve.metrics import Metrics
from onnxkit.serve.protocol import InferRequest
from onnxkit.serve.repository import Repository
from onnxkit.serve.v2_grpc_descriptor import FILE_NAME, SERIALIZED

SERVICE = "inference.GRPCInferenceService"
_pool = descriptor_pool.DescriptorPool()
_pool.Add(descriptor_pb2.FileDescriptorProto.FromString(base64.b64decode(SERIALIZED)))
MESSAGES: dict[str, Any] = message_factory.GetMessageClassesForFiles([FILE_NAME], _pool)

_STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED, 404: grpc.StatusCode.NOT_FOUND,
    408: grpc.StatusCode.DEADLINE_EXCEEDED, 413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED, 503: grpc.StatusCode.UNAVAILABLE,
}  # fmt: skip
_CONTENTS = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
    "UINT32": "uint_contents", "UINT64": "uint64_contents", "FP32": "fp32_contents",
    "FP64": "fp64_contents", "BYTES": "bytes_contents",
}  # fmt: skip
_OPEN = frozenset({"ServerLive", "ServerReady"})  # health, open like /v2/health/*
NEEDS_KEY = "this server needs an API key: send the metadata 'authorization: Bearer KEY'"
# a stream's requests read ahead of the answers its client has taken: past it, reading waits (and HTTP/2's flow
# control holds the client), as HTTP stops reading a connection until its answer is sent
STREAM_AHEAD = 64
# At a stop, new calls are refused (UNAVAILABLE) until none has come for SETTLE_QUIET_S, at most SETTLE_MOST_S: grpc
# cancels the calls it has received but not yet handed over when it stops (CallRoom.settle)
SETTLE_QUIET_S = 0.02
SETTLE_MOST_S = 1.0
_log = logging.getLogger("onnxkit.serve")


def message(name: str) -> Any:
    """The message class `inference.<name>` of v2_grpc.proto."""
    return MESSAGES[f"inference.{name}"]


def status_code(http_status: int) -> grpc.StatusCode:
    """The gRPC status for a refusal with this HTTP status."""
    return _STATUS.get(http_status, grpc.StatusCode.INTERNAL)


def decode_infer(request: Any, model: Model) -> InferRequest:
    """Check a ModelInferRequest against the model; RequestError(400) if bad."""
    specs = protocol.input_specs(model)
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise RequestError(
            400, f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs; give one per input"
        )
    inputs = []
    for i, tensor in enumerate(request.inputs):
        name, datatype, shape = tensor.name, tensor.datatype, list(tensor.shape)
        protocol.refuse_shared_memory(_parameters(tensor.parameters), f"input {name!r}")
        protocol.check_input(name, datatype, shape, specs, model.name, inputs)
        if raw:
            if tensor.contents.ListFields():  # one would be dropped without a word
                raise RequestError(400, f"input {name!r}: give its values in contents or raw_input_contents, not both")
            inputs.append((name, binary.to_array(raw[i], datatype, shape, name)))
        elif datatype in _CONTENTS:
            values = list(getattr(tensor.contents, _CONTENTS[datatype]))
            others = [f.name for f, _ in tensor.contents.ListFields() if f.name != _CONTENTS[datatype]]
            if others:  # values of another type: the only ones, or beside the right ones (dropped without a word)
                raise RequestError(
                    400, f"input {name!r}: {datatype} values go in contents.{_CONTENTS[datatype]}, not {others[0]}"
                )
            inputs.append((name, protocol.array_from_values(values, datatype, shape, name)))
        else:
            raise RequestError(400, f"input {name!r}: {datatype} has no typed contents; send it in raw_input_contents")
    protocol.refuse_sequences(_parameters(request.parameters))
    requested = [(o.name, _parameters(o.parameters)) for o in request.outputs] or None
    return protocol.build_request(model, inputs, requested, request_id=request.id or None)


def encode_infer(model: Model, request: InferRequest, outputs: dict[str, np.ndarray]) -> Any:
    """The ModelInferResponse, every output in raw_output_contents."""
    reply = message("ModelInferResponse")(model_name=model.name, model_version=protocol.MODEL_VERSION)
    if request.id is not None:
        reply.id = request.id
    for name, datatype, array in protocol.output_tensors(model, request, outputs):
        reply.outputs.add(name=name, datatype=datatype, shape=array.shape)
        reply.raw_output_contents.append(binary.to_bytes(array, datatype))
    return reply


class InferenceService:
    """The RPCs, over the HTTP app's model repository, metrics, readiness and API key."""

    def __init__(
        self,
        repository: Repository,
        metrics: Metrics,
        ready: Callable[[], bool],
        api_key: str | None = None,
    ) -> None:
        self.repository = repository
        self.batchers = repository.served  # by name, as loads and unloads change it
        self.metrics = metrics
        self.ready = ready
        self.api_key = api_key

    async def ServerLive(self, request: Any) -> Any:  # noqa: N802 (the RPC names of the protocol)
        return message("ServerLiveResponse")(live=True)

    async def ServerReady(self, request: Any) -> Any:  # noqa: N802
        return message("ServerReadyResponse")(ready=self.ready())

    async def ServerMetadata(self, request: Any) -> Any:  # noqa: N802
        return message("ServerMetadataResponse")(**protocol.server_metadata())

    async def ModelReady(self, request: Any) -> Any:  # noqa: N802
        """Not ready, rather than NOT_FOUND, for a model or version not served (as Triton: tritonclient's
        is_model_ready is then False, not an exception)."""
        try:
            inference.find_model(self.batchers, request.name, request.version)
        except RequestError:
            return message("ModelReadyResponse")(ready=False)
        return message("ModelReadyResponse")(ready=self.ready())

    async def ModelMetadata(self, request: Any) -> Any:  # noqa: N802
        batcher = inference.find_model(self.batchers, request.name, request.version)
        return message("ModelMetadataResponse")(**protocol.model_metadata(batcher.model))

    async def ModelConfig(self, request: Any) -> Any:  # noqa: N802
        config = inference.model_config(self.batchers, request.name, request.version)
        return message("ModelConfigResponse")(config=json_format.ParseDict(config, message("ModelConfig")()))

    async def ModelStatistics(self, request: Any) -> Any:  # noqa: N802
        reply = inference.statistics(self.batchers, request.name, request.version)
        return json_format.ParseDict(reply, message("ModelStatisticsResponse")())

    async def ModelInfer(self, request: Any) -> Any:  # noqa: N802
        batcher = inference.find_model(self.batchers, request.model_name, request.model_version)
        size = request.ByteSize()
        used: Model | None = None

        async def decode(model: Model) -> InferRequest:
            nonlocal used
            used = model
            return await inference.offload(size, decode_infer, request, model, heavy=carries_tokenizer(model))

        infer_request, outputs = await inference.infer(batcher, decode)
        return await inference.offload(size, encode_infer, used, infer_request, outputs)

    async def RepositoryIndex(self, request: Any) -> Any:  # noqa: N802
        _check_repository(request.repository_name)
        models = [m for m in self.repository.index() if m["state"] == "READY" or not request.ready]
        return message("RepositoryIndexResponse")(models=models)

    async def RepositoryModelLoad(self, request: Any) -> Any:  # noqa: N802
        _check_repository(request.repository_name)
        await self.repository.load(request.model_name, request.parameters)
        return message("RepositoryModelLoadResponse")()

    async def RepositoryModelUnload(self, request: Any) -> Any:  # noqa: N802
        _check_repository(request.repository_name)  # parameters: only unload_dependents, and nothing depends
        await self.repository.unload(request.model_name)
        return message("RepositoryModelUnloadResponse")()

    def handler(self, body_timeout: float = DEFAULT_LIMITS.body_timeout) -> grpc.GenericRpcHandler:
        """The generic handler for every RPC of v2_grpc.proto, each metered like an HTTP endpoint; the request
        message of a unary RPC must arrive within `body_timeout` seconds of the call (`_one_request`)."""
        methods = {}
        for method in _pool.FindServiceByName(SERVICE).methods:
            parse = _parser(method.input_type.full_name)
            serialize = MESSAGES[method.output_type.full_name].SerializeToString
            if method.client_streaming:
                methods[method.name] = grpc.stream_stream_rpc_method_handler(self._stream, parse, serialize)
            else:  # read by onnxkit, not grpc: see _one_request
                handle = self._metered(method.name, getattr(self, method.name), body_timeout)
                methods[method.name] = grpc.stream_unary_rpc_method_handler(handle, parse, serialize)
        return grpc.method_handlers_generic_handler(SERVICE, methods)

    async def _stream(self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        """ModelStreamInfer: every request runs as soon as it is read, up to STREAM_AHEAD before the client takes
        their answers; answers go back in request order."""
        if not self._authorized("ModelStreamInfer", context):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, NEEDS_KEY)
        answers: asyncio.Queue[asyncio.Future | _Ended | None] = asyncio.Queue()
        room = asyncio.Semaphore(STREAM_AHEAD)  # for requests whose answers the client has not taken
        call = _CALL.get()  # None when called without CallRoom (in tests)
        stream = None if call is None else call.room.open_stream(call, answers.put_nowait)

        async def read() -> None:
            try:
                async for request in requests:
                    if stream is not None:
                        stream.received()
                    answers.put_nowait(asyncio.ensure_future(self._stream_answer(request)))
                    await room.acquire()
            finally:
                answers.put_nowait(None)

        reader = asyncio.ensure_future(read())
        try:
            while (answer := await answers.get()) is not None:
                if isinstance(answer, _Ended):  # idle, and ended by the server (CallRoom)
                    await context.abort(grpc.StatusCode.UNAVAILABLE, answer.reason)
                yield await answer
                room.release()
                if stream is not None:
                    stream.answered()
        finally:
            reader.cancel()
            if stream is not None:
                stream.close()
            while not answers.empty():  # requests read after the stream ended: they need not run
                if isinstance(left := answers.get_nowait(), asyncio.Future):
                    left.cancel()

    async def _stream_answer(self, request: Any) -> Any:
        """One request of a stream: its ModelStreamInferResponse, a refusal as its error_message."""
        start, status, reply = time.perf_counter(), 500, message("ModelStreamInferResponse")()
        reply.infer_response.id = getattr(request, "id", "")  # an error too says which request it answers
        try:
            _check_parsed(request)
            reply.infer_response.CopyFrom(await self.ModelInfer(request))
            status = 200
        except RequestError as e:
            status, reply.error_message = e.status, str(e)
        except asyncio.CancelledError:  # the stream ended before its answer
            status = CLIENT_CLOSED
            raise
        except Exception as e:
            _log.exception("internal error in grpc.ModelStreamInfer")
            reply.error_message = f"internal server error ({type(e).__name__}); see the server's log"
        finally:
            model = getattr(request, "model_name", "")
            self.metrics.record_request("grpc.ModelStreamInfer", model, status, time.perf_counter() - start)
        return reply

    def _authorized(self, name: str, context: grpc.aio.ServicerContext) -> bool:
        if self.api_key is None or name in _OPEN:
            return True
        given = dict(context.invocation_metadata() or ()).get("authorization")
        return authorized(None if given is None else str(given).encode(), self.api_key)

    def _metered(
        self, name: str, call: Callable[[Any], Awaitable[Any]], body_timeout: float
    ) -> Callable[[AsyncIterator[Any], grpc.aio.ServicerContext], Awaitable[Any]]:
        """Unary RPC `name` as grpc calls it (stream-unary: `_one_request`): the key checked before the request is
        read (a call without it is refused at once), the request read within `body_timeout`, a refusal sent as its
        gRPC status, the call counted in the metrics."""
        endpoint = f"grpc.{name}"

        async def handle(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
            request, status = None, 500
            start = time.perf_counter()
            try:
                if not self._authorized(name, context):
                    raise RequestError(401, NEEDS_KEY)
                request = await _one_request(context, body_timeout)
                start = time.perf_counter()  # infer latency counts from the request received, as before
                _check_parsed(request)
                reply = await call(request)
                status = 200
                return reply
            except RequestError as e:
                status = e.status
                await context.abort(status_code(e.status), str(e))
            except _NoRequest:
                status = 400
                try:
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, _NoRequest.reason)
                except grpc.aio.InternalError:  # grpc had ended the call: nobody to answer
                    status = CLIENT_CLOSED
                    raise asyncio.CancelledError from None
            except asyncio.CancelledError:  # the client cancelled, or its deadline passed: not a server error
                status = CLIENT_CLOSED
                raise
            except Exception as e:
                _log.exception("internal error in %s", endpoint)
                await context.abort(
                    grpc.StatusCode.INTERNAL, f"internal server error ({type(e).__name__}); see the server's log"
                )
            finally:
                model = getattr(request, "model_name", "") or getattr(request, "name", "")
                seconds = time.perf_counter() - start if name == "ModelInfer" else None
                self.metrics.record_request(endpoint, model, status, seconds)

        return handle


class _NoRequest(Exception):
    """A unary call that ended before its request message came: its client ended its side with none (answered
    INVALID_ARGUMENT), or grpc ended the call (the client cancelled, its deadline passed, or its message was over
    max_receive_message_length, which grpc answers itself with RESOURCE_EXHAUSTED; counted as 499, as a client
    that left). Registered as unary, such a call got no answer at all, and was not counted."""

    reason = "the call ended with no request message; send one"


async def _one_request(context: grpc.aio.ServicerContext, body_timeout: float) -> Any:
    """The request message of a unary call, which must arrive whole within `body_timeout` seconds of the call;
    RequestError(408) if it does not.

    Registered as unary, the call's message was read by grpc before any of onnxkit's code ran, for as long as the
    client liked: a client that sent a call's HEADERS and then no message (or a byte a minute) held a place under
    CallRoom's cap until it left, and `max_connections` such calls locked every other gRPC caller out, as a
    slowloris; the HTTP side has had `body_timeout` for the same. So every unary RPC is registered as stream-unary
    and reads its one message here. On the wire the two are the same (HEADERS, one length-prefixed message,
    END_STREAM; one answer and the status), so clients that call them as unary see no difference, and grpc still
    holds the message to max_receive_message_length. As with grpc's own unary handling, what follows the message
    is not waited for: reading on to the end of the client's side, to refuse a second message, cost a round trip
    through grpc's completion queue on every call (+11% on a digits-mlp ModelInfer, +25% on ServerReady), for
    clients that do not exist.

    A late message is answered with DEADLINE_EXCEEDED, saying it was the server's --body-timeout: the HTTP side
    answers a late body with 408 Request Timeout, which `_STATUS` maps to it, and a deadline is what expired; not
    UNAVAILABLE (a retry would be as slow, and is what gRPC's retry policies retry), CANCELLED (read as the client's
    own cancellation) or RESOURCE_EXHAUSTED (read as the cap, which the call was under).
    """
    try:
        async with asyncio.timeout(body_timeout):
            request = await context.read()
    except TimeoutError:
        raise RequestError(
            408, f"the request message did not arrive within {body_timeout:g} s (the server's --body-timeout)"
        ) from None
    if request is grpc.aio.EOF:
        raise _NoRequest
    return request


class _Call:
    """One gRPC call that CallRoom let in: it holds a place until its RPC ends, or until it gives it up."""

    __slots__ = ("room", "held")

    def __init__(self, room: CallRoom) -> None:
        self.room = room
        self.held = True

    def release(self, *_: object) -> None:
        if self.held:
            self.held = False
            self.room.calls -= 1


_CALL: contextvars.ContextVar[_Call | None] = contextvars.ContextVar("onnxkit_grpc_call", default=None)


class _Ended:
    """Put in a stream's answer queue to end the stream: UNAVAILABLE, with `reason`."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


class _Stream:
    """A ModelStreamInfer stream as CallRoom sees it: busy from each request read until its answer is written
    (grpc resumes the handler once the client has taken it, under HTTP/2's flow control), idle otherwise."""

    __slots__ = ("room", "call", "end_with", "pending", "idle_since", "timer")

    def __init__(self, room: CallRoom, call: _Call, end_with: Callable[[_Ended], None]) -> None:
        self.room = room
        self.call = call
        self.end_with = end_with
        self.pending = 0  # requests read whose answers are not yet written
        self.idle_since: float | None = None  # loop.time() since when it has been idle; None while busy or ended
        self.timer: asyncio.TimerHandle | None = None

    def received(self) -> None:
        self.pending += 1
        if self.idle_since is not None:
            self.idle_since = None
            self.timer.cancel()  # type: ignore[union-attr]

    def answered(self) -> None:
        self.pending -= 1
        if self.pending == 0 and self.call.held:
            self.idle()

    def end(self, reason: str) -> None:
        """End the stream (idle, so no request is cut short) and give up its place at once."""
        self.close()
        self.call.release()
        self.end_with(_Ended(reason))

    def close(self) -> None:
        self.idle_since = None
        if self.timer is not None:
            self.timer.cancel()
        self.room.streams.pop(self, None)

    def idle(self) -> None:
        if self.room.stopping:
            self.end("the server is stopping; open a new stream (to another server, or to this one once it is back)")
            return
        loop = asyncio.get_running_loop()
        self.idle_since = loop.time()
        self.timer = loop.call_later(self.room.idle_timeout, self._expire)

    def _expire(self) -> None:
        self.end(f"the stream was idle for {self.room.idle_timeout:g} s (no request in progress and none received), "
                 "so the server ended it; open a new one")  # fmt: skip


class CallRoom(grpc.aio.ServerInterceptor):
    """The cap on gRPC calls in progress (`max_connections`, a stream counting one), where idle streams give way.

    A call holds its place from its admission here until its RPC task ends (its answer written), as it did under
    grpc's own cap (`maximum_concurrent_rpcs`), which this replaces: that one refuses a call before any of
    onnxkit's code sees it, so a client that opened as many streams and sent nothing locked every other gRPC
    caller out (RESOURCE_EXHAUSTED) for as long as it liked. Now:

    - a stream with no request in progress (every request read has its answer written) and none received for
      `stream_idle_timeout` is ended with UNAVAILABLE: what gRPC clients read as "reconnect and retry"
      (tritonclient's stream callback gets it as an InferenceServerException, and the stream must be restarted);
      not DEADLINE_EXCEEDED, which reads as the client's own deadline, nor CANCELLED, which tritonclient reports
      as the client's own cancellation;
    - at the cap, a new call ends the stream idle longest (UNAVAILABLE, saying why) if it has been idle for at
      least `stream_grace`, and takes its place; only when no stream is idle that long is it refused, with
      RESOURCE_EXHAUSTED and before its request is read. Calls in use are never ended;
    - a unary call whose request message has not arrived whole within `body_timeout` of its admission is ended
      with DEADLINE_EXCEEDED (`_one_request`), so calls that never send theirs hold places no longer than that.
    """

    def __init__(self, limits: Limits) -> None:
        self.cap = limits.max_connections
        self.idle_timeout = limits.stream_idle_timeout
        self.grace = limits.stream_grace
        self.calls = 0  # calls holding a place
        self.streams: dict[_Stream, None] = {}  # open streams, oldest first
        self.stopping = False  # the server is stopping: streams end as soon as they are idle
        self.refusing = False  # the server is stopping: new calls are refused (`settle`)
        self.last_call = 0.0  # when the latest call came, on the event loop's clock, once refusing

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        if handler is None:  # no such method: grpc answers UNIMPLEMENTED at once, saying which extension it is
            return _unsupported(details.method)
        if self.refusing:
            self.last_call = asyncio.get_running_loop().time()
            return _STOPPING
        if self.calls >= self.cap and not self._make_room():
            return _REFUSED
        self.calls += 1
        call = _Call(self)
        # grpc.aio runs interceptors in the RPC's own task, which then runs the handler and sends the answer
        asyncio.current_task().add_done_callback(call.release)  # type: ignore[union-attr]
        _CALL.set(call)
        return handler

    def open_stream(self, call: _Call, end_with: Callable[[_Ended], None]) -> _Stream:
        stream = _Stream(self, call, end_with)
        self.streams[stream] = None
        stream.idle()
        return stream

    def stop_streams(self) -> None:
        """The server is stopping: end the idle streams now, and each of the others once it has answered what it
        read, rather than hold the server's graceful stop for its whole grace (UNAVAILABLE, saying why)."""
        self.stopping = True
        for stream in [s for s in self.streams if s.idle_since is not None]:
            stream.idle()

    async def settle(self, quiet: float = SETTLE_QUIET_S, most: float = SETTLE_MOST_S) -> None:
        """The server is stopping: refuse new calls with UNAVAILABLE until none has come for `quiet` seconds (at
        most `most`). grpc hands the calls it receives over one at a time, and its stop cancels those not yet
        handed over: under load every client had one, answered CANCELLED (read as the client's own cancellation, and
        retried by no retry policy) with no message, at every stop."""
        loop = asyncio.get_running_loop()
        self.refusing, began = True, loop.time()
        self.last_call = began
        while (now := loop.time()) - self.last_call < quiet and now - began < most:
            await asyncio.sleep(quiet)

    def _make_room(self) -> bool:
        """End the stream idle longest, if it has been idle for `grace`; whether one was ended."""
        now = asyncio.get_running_loop().time()
        idle = [s for s in self.streams if s.idle_since is not None and now - s.idle_since >= self.grace]
        if not idle:
            return False
        stream = min(idle, key=lambda s: s.idle_since)  # type: ignore[arg-type, return-value]
        stream.end(f"the stream was idle for {now - stream.idle_since:.1f} s and the server was at its cap of "  # type: ignore[operator]
                   f"{self.cap} calls, so it ended the stream to make room for a new call; open a new one")  # fmt: skip
        return True


async def _refuse(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> None:
    await context.abort(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "the server is at its cap of calls in progress (--max-connections), none of them a stream idle for long "
        "enough to give way; retry in a moment",
    )


_REFUSED = grpc.stream_stream_rpc_method_handler(_refuse)  # a streaming request: refused before it is read


async def _refuse_stopping(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> None:
    await context.abort(grpc.StatusCode.UNAVAILABLE, STOPPING)


_STOPPING = grpc.stream_stream_rpc_method_handler(_refuse_stopping)


def _unsupported(method: str) -> grpc.RpcMethodHandler | None:
    """A handler answering UNIMPLEMENTED with what is unsupported, for an RPC of an extension this server leaves
    out (tritonclient's get_system_shared_memory_status read "Method not found!"); None for any other."""
    service, _, name = method.strip("/").rpartition("/")
    what = protocol.unsupported_extension(name) if service == SERVICE else None
    if what is None:
        return None
    hint = "; send the tensors in the request" if "shared memory" in what else ""

    async def refuse(request: bytes, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{name}: {what} is not supported by this server{hint}")

    return grpc.unary_unary_rpc_method_handler(refuse)


class GrpcServer:
    """A started grpc.aio server and its CallRoom."""

    def __init__(self, server: grpc.aio.Server, room: CallRoom) -> None:
        self.server, self.room = server, room

    async def stop(self, grace: float | None) -> None:
        """Stop, giving calls in progress `grace` seconds; streams end as soon as they are idle (grpc counted an
        idle stream as a call in progress, so one held every stop for the whole grace)."""
        self.room.stop_streams()
        await self.room.settle()
        await self.server.stop(grace)


def _c_int(value: float) -> int:
    """`value` as a gRPC channel argument, a C int: larger limits (--max-body-mb 2048, a keep-alive of weeks) are
    as good as unlimited at its largest (they raised OverflowError at start)."""
    return min(round(value), 2**31 - 1)


async def start_server(address: str, service: InferenceService, limits: Limits) -> GrpcServer:
    """A started grpc.aio server for `service` on `address` (host:port), on the running event loop; OnnxkitError,
    with nothing left listening, if it cannot listen there (the port taken since `serve` checked it).

    Past `max_connections` calls in progress (streams count one each), a new call ends an idle stream or is refused
    with RESOURCE_EXHAUSTED (`CallRoom`): each may hold a message of `max_body_bytes`, as each HTTP connection a
    body. Connections past as many are closed at once, and one that has not begun HTTP/2 in `header_timeout`
    (5,000 idle connections held 5,000 file descriptors, of the process's 20,000, and 72 MB before).
    """
    from onnxkit.serve.server import bind  # the check `serve` made before loading the models, and its error

    host, _, port = address.rpartition(":")
    with bind(host.strip("[]"), int(port), "grpc_port"):  # first: grpc also logs its own failure, a line from C
        pass
    options = [
        ("grpc.so_reuseport", 0),
        ("grpc.max_receive_message_length", _c_int(limits.max_body_bytes)),
        ("grpc.max_allowed_incoming_connections", _c_int(limits.max_connections)),
        ("grpc.server_handshake_timeout_ms", _c_int(limits.header_timeout * 1000)),
        # a connection with no call in progress for as long as HTTP keeps one alive is closed (GOAWAY; clients
        # reconnect on their next call): 512 held open with an HTTP/2 preface and nothing more kept every gRPC
        # client out for the 55-60 s gRPC took to drop them by itself
        ("grpc.max_connection_idle_ms", _c_int(limits.keep_alive_timeout * 1000)),
    ]
    room = CallRoom(limits)
    server = grpc.aio.server(options=options, interceptors=[room])
    server.add_generic_rpc_handlers([service.handler(limits.body_timeout)])
    try:
        if server.add_insecure_port(address) == 0:  # grpc before 1.50 said so rather than raising RuntimeError
            raise RuntimeError("no port bound")
        await server.start()
    except Exception as e:
        await server.stop(None)
        raise OnnxkitError(f"cannot listen for gRPC on {address} ({e}); pick another --grpc-port") from e
    return GrpcServer(server, room)


class _Unparsed:
    """Request bytes that are no message of the RPC's type. grpc answers a deserializer that raises with UNKNOWN
    (and drops a stream's message unanswered), so the deserializer returns this and the RPC refuses it as 400."""

    def __init__(self, type_name: str) -> None:
        self.error = f"the request is not a valid {type_name} message; check that the client uses the V2 protocol"


def _parser(type_name: str) -> Callable[[bytes], Any]:
    """The request deserializer for message `type_name`: the message, or `_Unparsed` for bytes that are none."""
    parse = MESSAGES[type_name].FromString

    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except DecodeError:
            return _Unparsed(type_name)

    return deserialize


def _check_parsed(request: Any) -> None:
    if isinstance(request, _Unparsed):
        raise RequestError(400, request.error)


def _check_repository(name: str) -> None:
    """RequestError(400) for a named repository: there is one, loaded from the model files."""
    if name:
        raise RequestError(400, f"there is no repository {name!r}: leave repository_name empty")


def _parameters(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """InferParameter values as plain Python values (None where none is set)."""
    values = {}
    for key, value in parameters.items():
        choice = value.WhichOneof("parameter_choice")
        values[key] = None if choice is None else getattr(value, choice)
    return values
