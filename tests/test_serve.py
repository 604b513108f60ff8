"""`onnxkit serve`: the real server in a child process on 127.0.0.1, driven with httpx."""

from __future__ import annotations

import http.client
import json
import math
import re
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from onnxkit import zoo
from onnxkit.files import save_model
from onnxkit.serve.launch import ServerProcess
from onnxkit.serve.limits import SHUTDOWN_GRACE_S
from onnxkit.serve.protocol import RequestError, array_from_values


def fixed_relu() -> onnx.ModelProto:
    """x float [2, 3] -> relu: a model with no batch axis, so requests cannot be merged."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "fixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve")
    protos = {
        "digits": zoo.build_model("digits-mlp"),
        "text": zoo.build_model("text-transformer"),
        "fixed": fixed_relu(),
    }
    paths = {name: str(save_model(p, folder / f"{name}.onnx")) for name, p in protos.items()}
    return protos, paths


@pytest.fixture(scope="module")
def server(models):
    _, paths = models
    specs = [paths["digits"], f"words={paths['text']}", paths["fixed"]]
    options = ["--max-batch-size", "16", "--max-delay-ms", "5", "--max-body-mb", "1", "--threads", "1"]
    with ServerProcess(specs, *options) as running:
        yield running
    assert running.process.returncode == 0, running.log


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def tensor(name: str, array: np.ndarray, datatype: str = "FP32") -> dict:
    return {"name": name, "shape": list(array.shape), "datatype": datatype, "data": array.ravel().tolist()}


def test_health_and_server_metadata(client):
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    meta = client.get("/v2").json()
    assert meta["name"] == "onnxkit" and "classification" in meta["extensions"]


def test_model_metadata_and_readiness(client):
    for path in ("/v2/models/digits", "/v2/models/digits/versions/1"):
        meta = client.get(path).json()
        assert meta == {
            "name": "digits",
            "versions": ["1"],
            "platform": "onnxruntime_onnx",
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 64]}],
            "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}],
        }
        assert client.get(path + "/ready").json() == {"name": "digits", "ready": True}
    words = client.get("/v2/models/words").json()
    assert [(t["name"], t["datatype"], t["shape"]) for t in words["inputs"]] == [
        ("input_ids", "INT64", [-1, -1]),
        ("attention_mask", "INT64", [-1, -1]),
    ]


def test_infer_matches_the_reference_evaluator(client, models):
    protos, _ = models
    x = np.random.default_rng(0).uniform(0, 16, size=(3, 64)).astype(np.float32)
    (expected,) = ReferenceEvaluator(protos["digits"]).run(None, {"x": x})
    reply = client.post("/v2/models/digits/infer", json={"id": "r1", "inputs": [tensor("x", x)]})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["model_name"] == "digits" and body["id"] == "r1"
    (out,) = body["outputs"]
    assert out["name"] == "logits" and out["datatype"] == "FP32" and out["shape"] == [3, 10]
    np.testing.assert_allclose(np.reshape(out["data"], (3, 10)), expected, rtol=1e-4, atol=1e-5)

    top = client.post(
        "/v2/models/digits/infer",
        json={"inputs": [tensor("x", x)], "outputs": [{"name": "logits", "parameters": {"classification": 2}}]},
    ).json()["outputs"][0]
    assert top["datatype"] == "BYTES" and top["shape"] == [3, 2]
    for row, entries in zip(expected, np.reshape(top["data"], (3, 2)), strict=True):
        best = np.argsort(-row)[:2]
        assert [e.split(":")[1:] for e in entries] == [[str(i), str(i)] for i in best]
        np.testing.assert_allclose([float(e.split(":")[0]) for e in entries], row[best], rtol=1e-4)


def test_infer_with_two_int64_inputs_and_a_model_without_batch_axis(client, models):
    protos, _ = models
    ids = np.random.default_rng(1).integers(0, 100, size=(2, 9))
    mask = np.ones_like(ids)
    (expected,) = ReferenceEvaluator(protos["text"]).run(None, {"input_ids": ids, "attention_mask": mask})
    body = client.post(
        "/v2/models/words/infer",
        json={"inputs": [tensor("input_ids", ids, "INT64"), tensor("attention_mask", mask, "INT64")]},
    ).json()
    np.testing.assert_allclose(np.reshape(body["outputs"][0]["data"], expected.shape), expected, rtol=1e-4, atol=1e-5)
    x = np.array([[-1, 2, -3], [4, -5, 6]], dtype=np.float32)
    body = client.post("/v2/models/fixed/infer", json={"inputs": [{**tensor("x", x), "data": x.tolist()}]}).json()
    assert body["outputs"][0]["data"] == [0, 2, 0, 4, 0, 6]


@pytest.mark.parametrize(
    ("shape", "data", "status", "message"),
    [
        ([0, 16], [], 200, ""),
        ([1, 16], [], 400, "shape [1, 16] holds 16 values, but data has 0"),
        ([1, 2], [1, 2**63], 400, "9223372036854775808 does not fit INT64 (-9223372036854775808 to 9223"),
        ([1, 2], [2**64, 1], 400, "18446744073709551616 does not fit INT64"),
        ([1, 2], [-(2**70), 1], 400, "-1180591620717411303424 does not fit INT64"),
        ([1, 2], [1.5, 1], 400, "data holds 1.5; INT64 takes integers"),
    ],
    ids=["no-rows", "no-data", "past-int64", "past-uint64", "below-int64", "fraction"],
)
def test_int64_data_that_is_empty_or_out_of_range_gets_what_is_wrong(client, shape, data, status, message):
    tensors = [{"name": n, "shape": shape, "datatype": "INT64", "data": data} for n in ("input_ids", "attention_mask")]
    reply = client.post("/v2/models/words/infer", json={"inputs": tensors})
    assert reply.status_code == status, reply.text
    if status == 200:
        assert reply.json()["outputs"][0]["shape"] == [0, 2]
    else:
        assert message in reply.json()["error"]


@pytest.mark.parametrize(
    ("datatype", "value", "message"),
    [
        ("INT32", 2**40 + 7, "1099511627783 does not fit INT32 (-2147483648 to 2147483647)"),  # cast, it wraps to 7
        ("UINT8", -1, "-1 does not fit UINT8 (0 to 255)"),
        ("INT64", int("9" * 400), "a 400-digit number does not fit INT64"),
    ],
)
def test_whole_numbers_past_an_integer_type_are_refused_not_wrapped(datatype, value, message):
    with pytest.raises(RequestError, match=re.escape(f"input 'x': {message}")):
        array_from_values([1, value], datatype, [2], "x")


GOOD = {"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": [0.5] * 64}]}


def _with(**changes) -> dict:
    return {"inputs": [{**GOOD["inputs"][0], **changes}]}


BINARY_X = {"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "parameters": {"binary_data_size": 256}}]}


BAD_REQUESTS = [
    ("POST", "/v2/models/digitz/infer", GOOD, 404, "no model 'digitz'. Did you mean: digits?"),
    ("GET", "/v2/models/nothing", None, 404, "no model 'nothing'"),
    ("GET", "/v2/models/digits/versions/7/ready", None, 404, "has no version '7'"),
    ("POST", "/v2/models/digits/infer", _with(name="y"), 400, "has no input 'y'"),
    ("POST", "/v2/models/digits/infer", _with(datatype="INT64"), 400, "has datatype FP32, got 'INT64'"),
    ("POST", "/v2/models/digits/infer", _with(shape=[2, 32]), 400, "dimension 1 must be 64"),
    ("POST", "/v2/models/digits/infer", _with(shape=[2, 64]), 400, "holds 128 values, but data has 64"),
    ("POST", "/v2/models/digits/infer", _with(data=["a"] * 64), 400, "input 'x': data holds \"a\"; FP32 takes numbers"),
    ("POST", "/v2/models/digits/infer", _with(data=[[1, 2], [3]]), 400, "not a regular array"),
    ("POST", "/v2/models/digits/infer", b"{not json", 400, "malformed JSON"),
    ("POST", "/v2/models/digits/infer", [1, 2], 400, 'a JSON object with an "inputs" list: {"inputs": [{"name": '
     '"x", "shape": [1, 64], "datatype": "FP32", "data": [64 values]}]} (data flat, row-major)'),
    # a KServe v1 client's body on the V2 path: was 'must be a JSON object with an "inputs" list', unexplained
    ("POST", "/v2/models/digits/infer", {"instances": [[0.5] * 64]}, 400, '"instances" is KServe v1 / TF Serving\'s '
     'format; this server speaks V2, send {"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": '
     '[64 values]}]} (data flat, row-major)'),
    ("POST", "/v2/models/words/infer", {"inputs": {"input_ids": [[1, 2]]}}, 400, '"inputs" as an object is KServe v1 '
     '/ TF Serving\'s format; this server speaks V2, send {"inputs": [{"name": "input_ids", "shape": [1, 1], '
     '"datatype": "INT64", "data": [1 value]}, {"name": "attention_mask", "shape": [1, 1], "datatype": "INT64", '
     '"data": [1 value]}]}'),
    ("POST", "/v2/models/digits/infer", {"inputs": [{"name": "x"}]}, 400, '"name", "shape", "datatype", "data"'),
    ("POST", "/v2/models/digits/infer", {**GOOD, "outputs": [{"name": "probs"}]}, 400, "has no output 'probs'"),
    (
        "POST",
        "/v2/models/digits/infer",
        {**GOOD, "outputs": [{"name": "logits", "parameters": {"classification": 0}}]},
        400,
        "classification must be a positive integer",
    ),
    ("POST", "/v2/models/digits/infer", b"[" + b"0," * 600_000 + b"0]", 413, "over the 1,048,576-byte limit"),
    ("GET", "/v2/models/digits/infer", None, 405, "GET is not allowed"),
    ("GET", "/v3/anything", None, 404, "no such endpoint: /v3/anything"),
    # a KServe v1 / TF Serving client's path: the protocol this server speaks, named
    ("POST", "/v1/models/iris:predict", b'{"instances": [[1, 2, 3, 4]]}', 404, "no such endpoint: "
     '/v1/models/iris:predict (this server speaks the KServe v2 / Triton protocol: POST /v2/models/NAME/infer with '
     '{"inputs": [...]}; POST /v2/repository/index lists the models)'),
    ("GET", "/v2/health/ready/", None, 404, "no such endpoint: /v2/health/ready/"),  # was a 307 to the Host header's
    ("POST", "/v2/models/digits/infer", b'{"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": [1'
     + b"0" * 5000 + b"]}]}", 400, "a number has 5001 digits; no datatype holds one longer than 20"),
    ("POST", "/v2/models/digits/infer", _with(data=None, parameters={"binary_data_size": "16"}), 400,
     "binary_data_size must be a whole number of bytes, got '16'"),
    # binary tensors sent without the header saying where the JSON ends: were "malformed JSON ... can't decode byte
    # 0x80" and "does not fit the 0 bytes left after the Inference-Header-Content-Length (N) bytes", a header unsent
    ("POST", "/v2/models/digits/infer", json.dumps(BINARY_X).encode() + b"\x00\x00\x80?" * 64, 400, "malformed "
     "JSON in the request body: 'utf-8' codec can't decode byte 0x80 in position 108: invalid start byte; the request "
     "has no Inference-Header-Content-Length header: send it with the JSON's length in bytes, the binary tensors "
     "following the JSON"),
    ("POST", "/v2/models/digits/infer", BINARY_X, 400, "input 'x' has a binary_data_size, but the request has no "
     "Inference-Header-Content-Length header"),
    # shared memory (tritonclient's set_shared_memory): an output asked for in a region came back inline, unsaid
    ("POST", "/v2/models/digits/infer", _with(data=None, parameters={"shared_memory_region": "in"}), 400,
     "input 'x': shared memory is not supported (region 'in'); send the data in the request"),
    ("POST", "/v2/models/digits/infer", {**GOOD, "outputs": [{"name": "logits", "parameters": {
        "shared_memory_region": "out", "shared_memory_byte_size": 40}}]}, 400,
     "output 'logits': shared memory is not supported (region 'out')"),
    ("GET", "/v2/systemsharedmemory/status", None, 404,
     "no such endpoint: /v2/systemsharedmemory/status (system shared memory is not supported by this server)"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "message"), BAD_REQUESTS)
def test_bad_requests_get_a_json_error_and_the_server_keeps_serving(client, method, path, body, status, message):
    content = body if isinstance(body, bytes) else None
    reply = client.request(method, path, content=content, json=None if content is not None or body is None else body)
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"] == "application/json"
    assert message in reply.json()["error"]
    assert client.post("/v2/models/digits/infer", json=GOOD).status_code == 200


def test_values_both_in_data_and_as_binary_data_are_refused(client):
    """The binary values were used and "data" dropped without a word (gRPC refuses contents beside raw contents)."""
    header = json.dumps(_with(parameters={"binary_data_size": 256})).encode()
    reply = client.post("/v2/models/digits/infer", content=header + np.ones(64, np.float32).tobytes(),
                        headers={"Inference-Header-Content-Length": str(len(header))})
    assert reply.status_code == 400, reply.text
    message = reply.json()["error"]
    assert message == 'input \'x\': give its values in "data" or as binary data (binary_data_size), not both'


@pytest.mark.parametrize("chunked", [False, True])
def test_a_body_over_the_limit_sent_whole_gets_its_413_and_the_connection_serves_on(server, chunked):
    # before: the 413 closed the connection with the body unread, and the kernel reset it: a client that sends
    # its whole body before reading (http.client, tritonclient.http) saw 'connection reset by peer', not the 413
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    body = b"[" + b"0," * (8 * 2**20) + b"0]"  # 16 MB, over the 1 MB limit
    connection.request("POST", "/v2/models/digits/infer", iter([body]) if chunked else body)
    reply = connection.getresponse()
    assert reply.status == 413 and "over the 1,048,576-byte limit" in json.loads(reply.read())["error"]
    connection.request("POST", "/v2/models/digits/infer", json.dumps(GOOD))  # the same connection
    assert connection.getresponse().status == 200
    connection.close()


@pytest.mark.parametrize("chunked", [False, True])
def test_a_413_that_closes_the_connection_reaches_a_client_still_sending_its_body(server, chunked):
    # before: with Connection: close (urllib's) the server closed the connection after its 413, the body unread, and
    # the kernel reset it: the client, still sending, got 'connection reset by peer', not the 413
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    body = b"[" + b"0," * (16 * 2**20) + b"0]"  # 32 MB, over the 1 MB limit
    connection.request("POST", "/v2/models/digits/infer", iter([body]) if chunked else body, {"Connection": "close"})
    reply = connection.getresponse()
    assert reply.status == 413 and "over the 1,048,576-byte limit" in json.loads(reply.read())["error"]
    assert reply.getheader("connection") == "close"
    connection.close()


def test_a_request_target_in_absolute_form_is_served_as_its_path(server):
    # as a client sends it through a proxy, and an HTTP/1.1 server must take it: was a 404 "no such endpoint:
    # /http://..."
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    body = json.dumps(GOOD).encode()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        head = f"POST {server.url}/v2/models/digits/infer HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n"
        sock.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200 "), reply[:300]
    assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["outputs"][0]["shape"] == [1, 10]


def test_a_413_to_a_client_waiting_for_100_continue_closes_the_connection(server):
    # the client sends no body after a refusal: kept open, the server would read its next request as that body
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                     b"Content-Length: 16000000\r\n\r\n")
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 413 ") and b"connection: close" in reply and b"byte limit" in reply


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.escape(name) + r"\{" + re.escape(want) + r"\} (\S+)"
    match = re.search(pattern, text)
    return float(match.group(1)) if match else 0.0


def test_concurrent_clients_get_correct_answers_in_merged_batches(server, models):
    protos, _ = models
    clients, per_client = 32, 50
    x = np.random.default_rng(3).uniform(0, 16, size=(clients * per_client * 2, 64)).astype(np.float32)
    (expected,) = ReferenceEvaluator(protos["digits"]).run(None, {"x": x})
    before = httpx.get(server.url + "/metrics").text

    def one_client(k: int) -> int:  # a thread with its own connection, like a separate client
        correct = 0
        with httpx.Client(base_url=server.url, timeout=60) as c:
            for r in range(per_client):
                start = 2 * (k * per_client + r)
                rows = 1 + (r % 2)  # requests of one and two rows
                reply = c.post("/v2/models/digits/infer", json={"inputs": [tensor("x", x[start : start + rows])]})
                out = reply.json()["outputs"][0]
                got = np.reshape(out["data"], out["shape"])
                correct += int(np.allclose(got, expected[start : start + rows], rtol=1e-4, atol=1e-5))
        return correct

    with ThreadPoolExecutor(clients) as pool:
        assert list(pool.map(one_client, range(clients))) == [per_client] * clients
    after = httpx.get(server.url + "/metrics").text
    runs = metric(after, "onnxkit_batch_size_count", model="digits") - metric(
        before, "onnxkit_batch_size_count", model="digits"
    )
    single = metric(after, "onnxkit_batch_size_bucket", model="digits", le="1") - metric(
        before, "onnxkit_batch_size_bucket", model="digits", le="1"
    )
    rows = metric(after, "onnxkit_batch_size_sum", model="digits") - metric(
        before, "onnxkit_batch_size_sum", model="digits"
    )
    assert rows == clients * per_client * 1.5
    assert runs < clients * per_client  # requests were merged...
    assert runs - single > 0  # ...into session runs of more than one row
    assert metric(after, "onnxkit_batch_size_bucket", model="digits", le="16") == metric(
        after, "onnxkit_batch_size_count", model="digits"
    )  # never more than --max-batch-size rows
    served = metric(after, "onnxkit_requests_total", endpoint="infer", model="digits", code="200")
    assert served - metric(before, "onnxkit_requests_total", endpoint="infer", model="digits", code="200") == 1600


def test_a_request_that_fails_in_the_session_does_not_fail_the_others_in_its_batch(server):
    ids = np.random.default_rng(4).integers(0, 100, size=(1, 1000))

    def send(k: int) -> tuple[bool, set[int], str]:
        bad = k % 4 == 0  # more tokens than the model has positions for: its Add fails at run time
        with httpx.Client(base_url=server.url, timeout=60) as c:
            statuses = []
            for _ in range(5):
                tokens = ids if bad else ids[:, :9]  # (ids past the vocabulary are refused before the run)
                body = {"inputs": [tensor("input_ids", tokens, "INT64"),
                                   tensor("attention_mask", np.ones_like(tokens), "INT64")]}
                reply = c.post("/v2/models/words/infer", json=body)
                statuses.append((reply.status_code, reply.json().get("error", "")))
        return bad, {code for code, _ in statuses}, statuses[0][1]

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(send, range(12)))
    for bad, codes, error in results:
        assert codes == ({400} if bad else {200})
        if bad:
            assert "model 'words' failed on this input" in error


def test_an_id_past_the_vocabulary_or_a_mask_of_2_gets_400_naming_it_and_the_server_goes_on(client, models):
    # before: -1 answered 200 (onnxruntime's Gather read the table's last row), 10**6 was a 400 naming the Gather node
    ids = np.array([[5, 17, 3]])
    for name, value, said in [("input_ids", -1, "outside its vocabulary of 30522 (ids 0 to 30521)"),
                              ("input_ids", 10**6, "outside its vocabulary of 30522"),
                              ("attention_mask", 2, "a mask is 1 for each token to read and 0 for padding")]:
        feeds = {"input_ids": ids.copy(), "attention_mask": np.ones_like(ids)}
        feeds[name][0, 1] = value
        body = {"inputs": [tensor(k, v, "INT64") for k, v in feeds.items()]}
        reply = client.post("/v2/models/words/infer", json=body)
        assert reply.status_code == 400 and reply.json()["error"].startswith(
            f"model 'words': input '{name}' holds {value} at [0, 1]"), reply.text
        assert said in reply.json()["error"]
    body = {"inputs": [tensor("input_ids", ids, "INT64"), tensor("attention_mask", np.ones_like(ids), "INT64")]}
    reply = client.post("/v2/models/words/infer", json=body)
    assert reply.status_code == 200
    (expected,) = ReferenceEvaluator(models[0]["text"]).run(None, {"input_ids": ids,
                                                                    "attention_mask": np.ones_like(ids)})
    np.testing.assert_allclose(np.reshape(reply.json()["outputs"][0]["data"], expected.shape), expected, rtol=1e-4,
                               atol=1e-5)


def test_metrics_count_requests_errors_and_latency(client):
    client.post("/v2/models/digits/infer", json=_with(datatype="FP64"))
    text = client.get("/metrics").text
    assert "# TYPE onnxkit_infer_duration_seconds histogram" in text
    assert metric(text, "onnxkit_request_errors_total", endpoint="infer", model="digits", code="400") >= 1
    assert metric(text, "onnxkit_request_errors_total", endpoint="infer", model="", code="404") >= 1
    assert metric(text, "onnxkit_infer_duration_seconds_count", model="digits") >= 1
    assert metric(text, "onnxkit_infer_duration_seconds_bucket", model="digits", le="+Inf") == metric(
        text, "onnxkit_infer_duration_seconds_count", model="digits"
    )


def test_port_in_use_is_one_clear_error(server, models):
    _, paths = models
    port = server.url.rsplit(":", 1)[1]
    result = subprocess.run(
        [sys.executable, "-m", "onnxkit", "serve", paths["fixed"], "--port", port],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: 127.0.0.1:{port} is already in use; stop the program using it or pass another --port"
    )
    same = subprocess.run([sys.executable, "-m", "onnxkit", "serve", paths["fixed"], "--port", "18999", "--grpc-port",
                           "18999"], capture_output=True, text=True, timeout=60)  # said 18999 was in use
    assert same.returncode == 1 and same.stderr.strip().splitlines()[-1] == (
        "error: --grpc-port 18999 is also the HTTP port; give gRPC a port of its own")


def test_library_errors_name_parameters_the_cli_shows_as_flags(server):
    from onnxkit.errors import OnnxkitError
    from onnxkit.serve.server import bind, serve

    port = int(server.url.rsplit(":", 1)[1])
    with pytest.raises(OnnxkitError, match=r"127\.0\.0\.1:\d+ is already in use; .* pass another grpc_port$") as e:
        bind("127.0.0.1", port, "grpc_port")
    assert e.value.params == ("grpc_port",)
    with pytest.raises(OnnxkitError, match="^max_batch_size must be >= 1, max_delay_ms >= 0$") as e:
        serve(["unused.onnx"], max_batch_size=0)
    assert set(e.value.params) == {"max_batch_size", "max_delay_ms"}


def test_serve_refuses_ports_and_batching_numbers_out_of_kind_before_loading_a_model():
    # serve(port=-1) was bind()'s OverflowError, port="8000" "'str' object cannot be interpreted as an integer",
    # max_batch_size="8" "'<' not supported between instances of 'str' and 'int'"
    from onnxkit.errors import OnnxkitError
    from onnxkit.serve.server import serve

    refused = {
        (("port", -1),): (OnnxkitError, "port must be 0 to 65535 (0: any free port), got -1"),
        (("grpc_port", 70000),): (OnnxkitError, "grpc_port must be 0 to 65535 (0: any free port), got 70000"),
        (("port", "8000"),): (TypeError, "port must be an integer, got '8000'"),
        (("max_batch_size", "8"),): (TypeError, "max_batch_size must be an integer, got '8'"),
        (("max_delay_ms", math.inf),): (OnnxkitError, "max_delay_ms must be a finite number, got inf"),
    }
    for given, (kind, message) in refused.items():
        with pytest.raises(kind) as e:
            serve(["unused.onnx"], **dict(given))  # refused before the (missing) model is looked for
        assert str(e.value) == message


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_stops_cleanly_on_sigint_and_sigterm(models, stop):
    _, paths = models
    running = ServerProcess([paths["fixed"]])
    running.start()
    assert httpx.get(running.url + "/v2/health/ready").status_code == 200
    assert running.stop(stop) == 0
    assert running.log[-1] == "stopped"
    with pytest.raises(httpx.ConnectError):
        httpx.get(running.url + "/v2/health/live")


def test_a_body_still_arriving_at_stop_gets_503_and_the_stop_is_clean(models):
    _, paths = models
    running = ServerProcess([paths["digits"]])
    running.start()
    host, port = running.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as stalled:
        stalled.sendall(b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"{" * 10)
        time.sleep(0.2)
        start = time.monotonic()
        assert running.stop(signal.SIGTERM) == 0
        assert time.monotonic() - start < SHUTDOWN_GRACE_S + 2  # not uvicorn's 10 s graceful-shutdown timeout
        reply = stalled.recv(65536)
    assert reply.startswith(b"HTTP/1.1 503 ") and b"retry-after: 1" in reply and b"connection: close" in reply
    assert b"the server is stopping" in reply
    assert running.log[-1] == "stopped" and not any("ERROR" in line or "Traceback" in line for line in running.log)


def test_a_model_that_fails_on_one_row_of_zeros_is_served_with_a_warning(tmp_path):
    # before: the start's warm-up on one row of zeros raised onnxruntime's error, a traceback, for a model that
    # runs on the inputs it is made for (x [n, 3] reshaped to [2, 3] takes 2 rows)
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [2, 3])
    graph = helper.make_graph([helper.make_node("Reshape", ["x", "shape"], ["y"])], "pairs",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])], [shape])  # fmt: skip
    path = save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10),
                      tmp_path / "pairs.onnx")  # fmt: skip
    with ServerProcess([str(path)], "--threads", "1") as running:
        reply = running.infer("pairs", {"x": np.ones((2, 3), np.float32)})
        assert reply["outputs"][0]["shape"] == [2, 3]
    warning = "warning: model pairs: served without a warm-up, as it fails on one row of zeros (Reshape node: The "
    assert any(line.startswith(warning) for line in running.log), running.log
    assert running.process.returncode == 0 and not any("Traceback" in line for line in running.log)


def test_a_text_model_of_fewer_positions_than_the_probe_is_warmed_up_on_a_shorter_one(tmp_path, capsys):
    # a text-transformer built with max_len=64 failed the 128-token probe: served unwarmed, with a warning
    from onnxkit.serve.server import load_served

    path = save_model(zoo.build_model("text-transformer", max_len=64, num_layers=1, vocab_size=1000, dim=32,
                                      heads=2, ff_dim=64), tmp_path / "short.onnx")
    model = load_served("short", path, "cpu", 1)
    assert "warm-up" not in capsys.readouterr().err
    ids = np.ones((1, 64), np.int64)
    assert model.run({"input_ids": ids, "attention_mask": ids})["logits"].shape == (1, 2)


def bfloat16_model(node: str, x: int) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node(node, ["x"], ["y"], **({"to": TensorProto.BFLOAT16} if node == "Cast" else {}))], "bf16",
        [helper.make_tensor_value_info("x", x, ["batch", 2])],
        [helper.make_tensor_value_info("y", TensorProto.BFLOAT16, ["batch", 2])],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def test_bad_model_files_and_names_fail_at_start(models, tmp_path):
    _, paths = models
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not onnx")
    bf16 = save_model(bfloat16_model("Identity", TensorProto.BFLOAT16), tmp_path / "bf16.onnx")
    bf16_out = save_model(bfloat16_model("Cast", TensorProto.FLOAT), tmp_path / "bf16-out.onnx")
    # a bfloat16 input, which no request can fill: it was served and advertised READY, after a warning that it failed
    # its warm-up ("Required inputs (['x']) are missing from input feed ([])"), and every request got a 400
    bf16_error = (f"error: {bf16}: input 'x' has type tensor(bfloat16), which numpy cannot hold, so no request can "
                  "run this model; export it with float32 or float16 inputs")  # fmt: skip
    for args, message in [
        ([str(broken)], f"error: {broken}: a text file, not an ONNX model; pass the .onnx file itself"),
        ([str(bf16)], bf16_error),
        # a bfloat16 output: every request got a 400, "model 'bf16-out' failed on this input: No corresponding Numpy
        # type for Tensor Type. bfloat16", blaming the request
        ([str(bf16_out)], f"error: {bf16_out}: output 'y' has type tensor(bfloat16), which numpy cannot hold, so no "
                          "request can run this model; export it with float32 or float16 outputs"),
        # GET /v2/models/stats answered every model's statistics, never the metadata of a model named so
        ([f"stats={paths['digits']}"], "error: model name 'stats' (from 'stats="),
        ([paths["fixed"], f"fixed={paths['digits']}"], "two models are named 'fixed'"),
    ]:
        result = subprocess.run([sys.executable, "-m", "onnxkit", "serve", *args, "--port", "0"],
                                capture_output=True, text=True, timeout=60)  # fmt: skip
        assert result.returncode == 1 and message in result.stderr, result.stderr


def test_serve_takes_one_model_as_a_string_or_a_path():
    # serve("m.onnx") read the string letter by letter: "model name '' (from '/') cannot be used in a URL"
    from onnxkit.serve.server import model_files

    assert model_files("runs/a/model.onnx") == {"model": Path("runs/a/model.onnx")}
    assert model_files(Path("digits.onnx")) == model_files(["digits.onnx"]) == {"digits": Path("digits.onnx")}
    assert model_files("d=x.onnx") == {"d": Path("x.onnx")}


def test_a_small_model_leaves_the_event_loop_a_cpu_and_a_large_one_gets_them_all(models, monkeypatch):
    from onnxkit.serve import server

    _, paths = models
    monkeypatch.setattr(server.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})

    def threads(name: str, given: int | None = None) -> int:
        return server.load_served(name, paths[name], "cpu", given).session.get_session_options().intra_op_num_threads

    assert (threads("digits"), threads("text")) == (3, 4)  # one row: ~0.01 ms; ~1 ms at 128 tokens
    assert threads("text", given=2) == 2


def test_the_help_example_request_is_one_the_model_it_builds_accepts(run_cli, tmp_path):
    # it was `"name":"x","shape":[1,64],...,"data":[0,0,5,13,...]}`: not JSON, and not digits.onnx's input
    from onnxkit import runtime
    from onnxkit.serve.protocol import decode_request

    text = run_cli("serve", "--help").out
    assert "onnxkit build iris-mlp -o iris.onnx && onnxkit serve iris.onnx" in text
    assert "localhost:8000/v2/models/iris/infer" in text
    body = re.search(r"'(\{.*\})'", text).group(1)
    model = runtime.load(save_model(zoo.build_model("iris-mlp"), tmp_path / "iris.onnx"))
    request = decode_request(body.encode(), model)
    assert request.rows == 1 and model.run(request.feeds)["logits"].shape == (1, 3)
