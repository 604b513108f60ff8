"""Dynamic batching: a batch held for a request still being received never waits past its deadline,
and a body that stalls holds back no other request of its model."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import uvloop
from loop_model import looping_model
from onnx import TensorProto, helper

from onnxkit import runtime, zoo
from onnxkit.files import save_model
from onnxkit.serve import batcher as batcher_module
from onnxkit.serve.batcher import Batcher
from onnxkit.serve.launch import ServerProcess
from onnxkit.serve.limits import CLIENT_LEFT, ClientGone
from onnxkit.serve.metrics import Metrics
from onnxkit.serve.protocol import RequestError

MAX_DELAY_MS = 5.0  # uvloop (whole-millisecond clock and timers) fires about one such timer in four early
MARGIN_S = 0.25
GOOD = json.dumps({"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": [0.5] * 64}]}).encode()


@pytest.fixture(scope="module")
def model() -> runtime.Model:
    """x float [batch, 4] -> relu(x)."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    return runtime.load(proto.SerializeToString(), device="cpu", threads=1, batch_size=None, name="relu")


class EarlyTimersLoop(asyncio.SelectorEventLoop):
    """asyncio's loop with every timer firing 2 ms before its time, as uvloop's can."""

    def call_at(self, when, callback, *args, context=None):  # type: ignore[override]
        return super().call_at(when - 0.002, callback, *args, context=context)


async def lone_requests_beside_a_stalled_body(model: runtime.Model, count: int) -> list[float]:
    """Seconds each of `count` lone requests took while another request's body never finishes arriving."""
    batcher = Batcher(model, Metrics([model.name]), max_batch_size=8, max_delay_ms=MAX_DELAY_MS)
    batcher.start()
    batcher.receiving()  # a request whose body stalls: worth waiting for, up to the deadline
    feeds = {"x": np.ones((1, 4), np.float32)}
    seconds = []
    try:
        for _ in range(count):
            start = time.perf_counter()
            outputs = await asyncio.wait_for(batcher.infer(feeds), MAX_DELAY_MS / 1000 + MARGIN_S + 1)
            seconds.append(time.perf_counter() - start)
            np.testing.assert_array_equal(outputs["y"], feeds["x"])
    finally:
        batcher.received()
        await batcher.stop()
    return seconds


@pytest.mark.parametrize(
    "loop", [asyncio.SelectorEventLoop, uvloop.Loop, EarlyTimersLoop], ids=["asyncio", "uvloop", "early-timers"]
)
def test_a_batch_never_waits_past_its_deadline_for_a_stalled_body(model, loop):
    with asyncio.Runner(loop_factory=loop) as runner:
        seconds = runner.run(lone_requests_beside_a_stalled_body(model, 100))
    assert max(seconds) < MAX_DELAY_MS / 1000 + MARGIN_S, max(seconds)


def test_requests_of_no_rows_leave_the_model_batching(model):
    async def run() -> tuple[list[int], int, int]:
        batcher = Batcher(model, Metrics([model.name]), max_batch_size=8, max_delay_ms=MAX_DELAY_MS)
        batcher.start()
        try:
            lengths = []
            for sizes in ([0, 0], [2, 3]):
                runs = batcher.statistics.execution_count
                outputs = await asyncio.gather(*[batcher.infer({"x": np.ones((n, 4), np.float32)}) for n in sizes])
                lengths += [len(o["y"]) for o in outputs]
            return lengths, batcher.statistics.execution_count - runs, batcher.statistics.inference_count
        finally:
            await batcher.stop()

    # the last two requests still share one run; the empty ones infer nothing (each counted one before)
    assert asyncio.run(run()) == ([0, 0, 2, 3], 1, 5)


def _merged(proto, requests: list[dict[str, np.ndarray]]) -> tuple[list[dict[str, np.ndarray]], int]:
    """The answers to `requests`, sent at once to a batcher of `proto`, and the runs they took."""
    served = runtime.load(proto.SerializeToString(), device="cpu", threads=1, batch_size=None, name="m")

    async def run() -> tuple[list[dict[str, np.ndarray]], int]:
        batcher = Batcher(served, Metrics([served.name]), max_batch_size=8, max_delay_ms=MAX_DELAY_MS)
        batcher.start()
        try:
            return list(await asyncio.gather(*map(batcher.infer, requests))), batcher.statistics.execution_count
        finally:
            await batcher.stop()

    return asyncio.run(run())


def test_merged_requests_get_their_own_answers_whatever_the_outputs_first_axis():
    # before: outputs were split by row when their first axis had as many entries as the merged rows: a column sum of
    # [[1, 2, 3]] came back as [111] (another client's 10 and 100 in it), a transpose as [[1, 10, 100]]
    first, second = {"x": np.array([[1, 2, 3]], np.float32)}, {"x": np.array([[10, 20, 30], [100, 200, 300]],
                                                                             np.float32)}
    for op, shape in (("ReduceSum", [3]), ("Transpose", [3, "batch"])):
        attributes = {"axes": [0], "keepdims": 0} if op == "ReduceSum" else {}
        graph = helper.make_graph([helper.make_node(op, ["x"], ["y"], **attributes)], "m",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
        proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)], ir_version=10)
        answers, runs = _merged(proto, [first, second])
        expected = [x.sum(0) if op == "ReduceSum" else x.T for x in (first["x"], second["x"])]
        assert runs == 2 and all(np.array_equal(a["y"], e) for a, e in zip(answers, expected, strict=True)), answers
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "m",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])])
    answers, runs = _merged(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=10),
                            [first, second])
    assert runs == 1 and [a["y"].tolist() for a in answers] == [first["x"].tolist(), second["x"].tolist()]


def test_a_model_of_one_string_axis_is_served():
    # before: every request to a model of a [batch] string input failed: "'str' object has no attribute 'size'"
    graph = helper.make_graph([helper.make_node("Identity", ["s"], ["t"])], "echo",
                              [helper.make_tensor_value_info("s", TensorProto.STRING, ["batch"])],
                              [helper.make_tensor_value_info("t", TensorProto.STRING, ["batch"])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    answers, runs = _merged(proto, [{"s": np.array(["hi", "yo"], object)}, {"s": np.array(["hey"], object)}])
    assert runs == 1 and [a["t"].tolist() for a in answers] == [["hi", "yo"], ["hey"]]


def test_a_failure_of_onnxkits_own_is_not_laid_on_the_input(model, monkeypatch):
    # before: any exception in a run was a 400 'failed on this input', an onnxkit bug (the 'str' .size above) too
    async def run() -> tuple[BaseException, BaseException]:
        batcher = Batcher(model, Metrics([model.name]))
        batcher.start()
        try:
            monkeypatch.setattr(model, "run", lambda feeds, **_: {}.pop("y"))  # a KeyError of onnxkit's, not ORT's
            with pytest.raises(KeyError) as ours:
                await batcher.infer({"x": np.ones((1, 4), np.float32)})
            monkeypatch.undo()
            with pytest.raises(RequestError) as theirs:  # onnxruntime refusing the input: the client's 400
                await batcher.infer({"x": np.ones((1, 5), np.float32)})
            return ours.value, theirs.value
        finally:
            await batcher.stop()

    ours, theirs = asyncio.run(run())
    assert isinstance(ours, KeyError) and theirs.status == 400 and "failed on this input" in str(theirs)


def test_a_request_whose_client_left_while_it_was_decoded_never_runs(model):
    # before: the protocol marks a request whose client leaves, but one that left while its body was decoded (in
    # a thread past 256 KB) was queued unmarked and ran for nobody (a 356 KB bert request: a 64-row run)
    async def run() -> tuple[int, int]:
        batcher = Batcher(model, Metrics([model.name]))
        batcher.start()
        try:
            with pytest.raises(ClientGone):
                await batcher.infer({"x": np.ones((2, 4), np.float32)}, scope={CLIENT_LEFT: True})
            await batcher.infer({"x": np.ones((1, 4), np.float32)}, scope={})  # the next one runs alone
            return batcher.statistics.execution_count, batcher.statistics.inference_count
        finally:
            await batcher.stop()

    assert asyncio.run(run()) == (1, 1)


def test_a_run_that_fails_is_refused_with_onnxruntimes_reason_in_one_clause():
    # before: the first line of onnxruntime's message: "[ONNXRuntimeError] : 1 : FAIL : Non-zero status code returned
    # while running Reshape node. Name:'' Status Message: /onnxruntime_src/.../reshape_helper.h:91 onnxruntime::..."
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [2, 3])
    graph = helper.make_graph([helper.make_node("Reshape", ["x", "shape"], ["y"])], "pairs",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])], [shape])  # fmt: skip
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    pairs = runtime.load(proto.SerializeToString(), device="cpu", threads=1, batch_size=None, name="pairs")

    async def run() -> str:
        batcher = Batcher(pairs, Metrics([pairs.name]))
        batcher.start()
        try:
            with pytest.raises(RequestError) as refused:
                await batcher.infer({"x": np.ones((1, 3), np.float32)})
            return str(refused.value)
        finally:
            await batcher.stop()

    assert asyncio.run(run()) == (
        "model 'pairs' failed on this input: Reshape node: The input tensor cannot be reshaped to the requested "
        "shape. Input shape:{1,3}, requested shape:{2,3}"
    )


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`onnxkit serve` with its default limits and batching (max delay 5 ms, body timeout 60 s)."""
    path = save_model(zoo.build_model("digits-mlp"), tmp_path_factory.mktemp("batcher") / "digits.onnx")
    with ServerProcess([str(path)]) as running:
        yield running


def test_a_stalled_body_holds_back_no_request_of_its_model(served):
    host, port = served.url.removeprefix("http://").rsplit(":", 1)
    head = (
        "POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(GOOD)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port)), timeout=10) as stalled:
        stalled.sendall(head + GOOD[:10])  # the head and 10 bytes of the body, then nothing for a while
        time.sleep(0.2)

        def timed_request(client: httpx.Client) -> float:
            start = time.monotonic()
            reply = client.post("/v2/models/digits/infer", content=GOOD)
            assert reply.status_code == 200, reply.text
            return time.monotonic() - start

        with httpx.Client(base_url=served.url, timeout=3) as client:
            lone = [timed_request(client) for _ in range(30)]
        with ThreadPoolExecutor(20) as pool, httpx.Client(base_url=served.url, timeout=3) as client:
            together = list(pool.map(lambda _: timed_request(client), range(20)))
        assert max(lone) < 1 and max(together) < 1, (lone, together)
        stalled.sendall(GOOD[10:])  # the body completes: it is answered like any other
        reply = b""
        while chunk := stalled.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200 "), reply[:200]
    assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["outputs"][0]["shape"] == [1, 10]


def test_only_a_run_bigger_than_any_batch_gives_back_its_memory():
    from onnxkit.serve.batcher import _timed_run

    class Recording:
        def __init__(self) -> None:
            self.released: list[bool] = []

        def run(self, feeds, *, release_memory=False):  # type: ignore[no-untyped-def]
            self.released.append(release_memory)
            return feeds

    model = Recording()
    for rows in (1, 32, 33, 5000):
        _timed_run(model, {"x": np.zeros((rows, 2))}, rows, 32)  # type: ignore[arg-type]
    assert model.released == [False, False, True, True]


def looping() -> runtime.Model:
    """y = tanh(x @ w) applied n times (x [batch, 16], n [1]): a model whose run time follows the request's data (w
    keeps the state's size: a shrinking state turns subnormal, which slows Intel CPUs ~75x)."""
    proto = looping_model(np.full((16, 16), 0.1, np.float32))
    return runtime.load(proto.SerializeToString(), device="cpu", threads=1, batch_size=None, name="looping")


def test_a_model_whose_run_time_follows_its_data_leaves_the_event_loop_after_one_long_run(monkeypatch):
    """A model fast on its first requests runs them on the event loop (`INLINE_RUN_S`); one whose cost follows its
    data (a Loop's trip count) then ran a long request there too, holding every client of the server, health checks
    included, for as long (1 s for a 1.3 s run), and every such request after it: its estimate follows the fastest
    run. Now one run on the loop past `OFF_LOOP_S` sends the model's later runs to its thread."""
    # short requests inline whatever this host's speed: a Loop of no trips took 0.17-0.31 ms on one, past INLINE_RUN_S
    monkeypatch.setattr(batcher_module, "INLINE_RUN_S", 0.005)
    model = looping()
    x = np.full((1, 16), 0.1, np.float32)
    start = time.perf_counter()
    model.run({"x": x, "n": np.array([20_000], np.int64)})
    trips = int(min(5_000_000, 20_000 * 0.4 / (time.perf_counter() - start)))  # a run of ~0.4 s here

    async def main() -> list[float]:
        batcher = Batcher(model, Metrics([model.name]))
        batcher.start()
        short, long = ({"x": x, "n": np.array([n], np.int64)} for n in (0, trips))
        gaps: list[float] = []

        async def tick() -> None:  # the event loop's longest stall, as a client waiting on it sees it
            last = time.perf_counter()
            while True:
                await asyncio.sleep(0.005)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        stalls = []
        ticker = asyncio.create_task(tick())
        try:
            for feeds in (short, short, short, long, short, long, short, long):
                await asyncio.sleep(0.02)  # the ticker's last gap falls before this request
                gaps.clear()
                await batcher.infer(feeds)
                await asyncio.sleep(0.02)  # and the stall this one caused, if any, is seen
                stalls.append(max(gaps, default=0.0))
        finally:
            ticker.cancel()
            await batcher.stop()
        return stalls

    stalls = asyncio.run(main())
    # the first long run (~0.4 s, less where the calibrating run was slowed): on the loop, as nothing foretold it;
    # the later ones off it (before: each stalled the loop as long as the first)
    assert stalls[3] > batcher_module.OFF_LOOP_S * 2, stalls
    assert max(stalls[5], stalls[7]) < min(0.1, stalls[3] / 2), stalls
