"""gRPC streams against the call cap: idle streams end, and give way to new calls; busy ones never do.

The gRPC service runs in-process here (on an event loop in a thread, as `onnxkit serve` runs it beside HTTP), with
sub-second `Limits`, and real clients call it: tritonclient.grpc and grpc's own channels.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

from onnxkit import runtime, zoo
from onnxkit.files import save_model
from onnxkit.serve import grpc_service
from onnxkit.serve.batcher import Batcher
from onnxkit.serve.grpc_service import InferenceService, message
from onnxkit.serve.limits import Limits
from onnxkit.serve.metrics import Metrics
from onnxkit.serve.repository import Repository

STREAM = "/inference.GRPCInferenceService/ModelStreamInfer"
UNLIMITED = [("grpc.max_receive_message_length", -1)]


class Sleepy(InferenceService):
    """The service, plus a model 'sleep' that answers after `id` seconds (no CPU), with `answer_bytes` of output."""

    async def ModelInfer(self, request):  # noqa: N802
        if request.model_name != "sleep":
            return await super().ModelInfer(request)
        await asyncio.sleep(float(request.id or 0))
        reply = message("ModelInferResponse")(model_name="sleep", id=request.id)
        if "answer_bytes" in request.parameters:
            reply.raw_output_contents.append(bytes(request.parameters["answer_bytes"].int64_param))
        return reply


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> runtime.Model:
    path = save_model(zoo.build_model("digits-mlp"), tmp_path_factory.mktemp("streams") / "digits.onnx")
    return runtime.load(path, threads=1, name="digits")


@contextlib.contextmanager
def serving(model: runtime.Model, **limits: float) -> Iterator[str]:
    """The gRPC service for `model` (and 'sleep') with these Limits, on its own event loop; yields host:port."""
    loop, started, parts = asyncio.new_event_loop(), threading.Event(), {}

    async def start() -> None:
        metrics = Metrics([model.name])
        repository = Repository([model], {model.name: Path(model.name)}, None, lambda m: Batcher(m, metrics))
        repository.start()
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            address = f"127.0.0.1:{probe.getsockname()[1]}"
        service = Sleepy(repository, metrics, lambda: True)
        parts.update(repository=repository, address=address,
                     server=await grpc_service.start_server(address, service, Limits(**limits)))  # fmt: skip

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(start())
        finally:
            started.set()
        loop.run_forever()

    async def stop() -> None:
        await parts["server"].stop(None)
        await parts["repository"].stop()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    started.wait(30)
    try:
        yield parts["address"]
    finally:
        asyncio.run_coroutine_threadsafe(stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def digits_input(rows: int = 1) -> list:
    x = triton_grpc.InferInput("x", [rows, 64], "FP32")
    x.set_data_from_numpy(np.full((rows, 64), 0.5, np.float32))
    return [x]


class Stream:
    """A tritonclient stream: its answers and its error (the stream's end, if the server ended it), as they come."""

    def __init__(self, address: str) -> None:
        self.client = triton_grpc.InferenceServerClient(address)
        self.answers: list = []
        self.errors: list[InferenceServerException] = []
        self.ended_at = 0.0
        self.client.start_stream(callback=self._callback)

    def _callback(self, result, error) -> None:
        if result is not None:
            self.answers.append(result)
        elif error is not None and "idle" in str(error):
            self.ended_at = time.monotonic()
            self.errors.append(error)
        else:
            self.errors.append(error)

    def ask(self, model: str = "digits", **options) -> float:
        """Send one request and wait for its answer; when it came (time.monotonic())."""
        count = len(self.answers)
        self.client.async_stream_infer(model, digits_input() if model == "digits" else [], **options)
        wait_for(lambda: len(self.answers) > count or self.errors)
        assert not self.errors, self.errors
        return time.monotonic()

    def close(self) -> None:
        self.client.stop_stream(cancel_requests=True)
        self.client.close()


def wait_for(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_idle_streams_at_the_cap_give_way_to_a_new_call(digits):
    # before: 4 streams that sent nothing more held all 4 places for as long as they stayed open, and every other
    # gRPC call (ServerReady, ModelInfer, tritonclient's) got RESOURCE_EXHAUSTED
    grace = 0.5
    with serving(digits, max_connections=4, stream_idle_timeout=60, stream_grace=grace) as address:
        streams = [Stream(address) for _ in range(4)]
        try:
            answered = [stream.ask() for stream in streams]  # the first one has been idle longest
            caller = triton_grpc.InferenceServerClient(address)
            try:
                caller.infer("digits", digits_input())  # within the grace: refused, and no stream is ended
                early = None
            except InferenceServerException as e:
                early = e
            if early is None:  # only if this machine took longer than the grace: then that call made the room
                assert time.monotonic() - answered[0] >= grace
            else:
                assert early.status() == "StatusCode.RESOURCE_EXHAUSTED", early
                assert not any(stream.errors for stream in streams)
                time.sleep(grace)
            result = caller.infer("digits", digits_input(2))  # takes the place of the stream idle longest
            np.testing.assert_allclose(result.as_numpy("logits"), digits.predict(np.full((2, 64), 0.5, np.float32))
                                       ["logits"], rtol=1e-6, atol=1e-6)  # fmt: skip
            assert caller.is_server_ready()
            wait_for(lambda: streams[0].errors)
            error = streams[0].errors[0]
            assert error.status() == "StatusCode.UNAVAILABLE"
            assert "idle for" in error.message() and "make room for a new call" in error.message()
            with pytest.raises(InferenceServerException, match="A new stream should be started"):
                streams[0].client.async_stream_infer("digits", digits_input())
            for stream in streams[1:]:  # the others were not touched, and still serve
                assert not stream.errors
                stream.ask()
            caller.close()
        finally:
            for stream in streams:
                stream.close()


def test_an_idle_stream_is_ended_with_unavailable_after_the_timeout(digits):
    timeout = 0.3
    with serving(digits, stream_idle_timeout=timeout) as address:
        stream = Stream(address)
        try:
            answered = stream.ask()
            wait_for(lambda: stream.errors, 5)
            assert stream.ended_at - answered >= timeout * 0.9
            error = stream.errors[0]
            assert error.status() == "StatusCode.UNAVAILABLE"
            assert error.message() == (
                f"the stream was idle for {timeout:g} s (no request in progress and none received), so the server "
                "ended it; open a new one"
            )
        finally:
            stream.close()
        with grpc.insecure_channel(address) as channel:  # a stream that never sends a request is idle from its start
            hold = threading.Event()

            def nothing():
                hold.wait(10)
                yield from ()

            start = time.monotonic()
            with pytest.raises(grpc.RpcError) as ended:
                next(channel.stream_stream(STREAM)(nothing()))
            hold.set()
            assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
            assert timeout * 0.9 <= time.monotonic() - start < 5


def test_a_stream_that_sends_again_before_the_timeout_is_not_ended(digits):
    timeout = 0.5
    with serving(digits, stream_idle_timeout=timeout) as address:
        stream = Stream(address)
        try:
            start = time.monotonic()
            for _ in range(4):  # 4 pauses of 0.7 of the timeout: 1.4 timeouts in all
                stream.ask()
                time.sleep(timeout * 0.7)
            stream.ask()
            assert time.monotonic() - start > 1.4 * timeout
            assert not stream.errors and len(stream.answers) == 5
        finally:
            stream.close()


def test_busy_streams_are_never_ended_and_a_new_call_past_them_is_refused(digits):
    # a slow request, and answers the client has not read, each keep a stream busy for many idle timeouts
    timeout = 0.2
    with serving(digits, max_connections=2, stream_idle_timeout=timeout, stream_grace=0) as address:
        slow = Stream(address)
        channel = grpc.insecure_channel(address, options=UNLIMITED)
        hold = threading.Event()

        def big_answers():  # 3 answers of 16 MB: more than HTTP/2 flow control and the sockets buffer
            for _ in range(3):
                request = service_pb2.ModelInferRequest(model_name="sleep")
                request.parameters["answer_bytes"].int64_param = 16 << 20
                yield request
            hold.wait(10)
            yield service_pb2.ModelInferRequest(model_name="sleep", id="0.01")

        try:
            slow.client.async_stream_infer("sleep", [], request_id="1.2")  # answered after 6 idle timeouts
            unread = channel.stream_stream(STREAM, request_serializer=service_pb2.ModelInferRequest.SerializeToString,
                                           response_deserializer=service_pb2.ModelStreamInferResponse.FromString)(
                big_answers())  # fmt: skip
            time.sleep(0.5)  # both busy, at the cap: a new call may end neither
            with pytest.raises(grpc.RpcError) as refused:
                channel.unary_unary("/inference.GRPCInferenceService/ServerReady")(b"", timeout=5)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "--max-connections" in refused.value.details()
            wait_for(lambda: slow.answers or slow.errors)
            assert not slow.errors and slow.answers[0].get_response().id == "1.2"
            time.sleep(0.5)  # the client reads its answers only now
            assert [len(next(unread).infer_response.raw_output_contents[0]) for _ in range(3)] == [16 << 20] * 3
            hold.set()  # and the stream still serves
            assert next(unread).infer_response.id == "0.01"
        finally:
            hold.set()
            slow.close()
            channel.close()


def test_cli_flag_sets_the_stream_idle_timeout(run_cli, monkeypatch, tmp_path):
    from onnxkit.cli import serve as serve_cli

    seen = {}
    monkeypatch.setattr(serve_cli, "serve", lambda *args, limits, **kwargs: seen.update(limits=limits))
    assert run_cli("serve", tmp_path / "m.onnx", "--stream-idle-timeout", "2.5").code == 0
    assert seen["limits"].stream_idle_timeout == 2.5 and seen["limits"].stream_grace == 1.0
    assert run_cli("serve", tmp_path / "m.onnx").code == 0
    assert seen["limits"].stream_idle_timeout == 300
    result = run_cli("serve", tmp_path / "m.onnx", "--stream-idle-timeout", "0")
    assert result.code == 2 and "--stream-idle-timeout" in result.err
