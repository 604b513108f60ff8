"""Hot reload: the V2 model repository extension and `--watch`, under load."""

from __future__ import annotations

import threading
import time

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from onnxkit import zoo
from onnxkit.files import save_model, write_bytes
from onnxkit.serve.launch import ServerProcess

X = np.random.default_rng(0).uniform(0, 16, size=(2, 64)).astype(np.float32)
BODY = {"inputs": [{"name": "x", "shape": [2, 64], "datatype": "FP32", "data": X.ravel().tolist()}]}


def version(scale: float) -> onnx.ModelProto:
    """digits-mlp with its first weight scaled: another version of the same model."""
    model = zoo.build_model("digits-mlp")
    first = model.graph.initializer[0]
    first.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(first) * scale, first.name))
    return model


def logits(model: onnx.ModelProto) -> np.ndarray:
    return ReferenceEvaluator(model).run(None, {"x": X})[0]


def answer(reply: httpx.Response) -> np.ndarray:
    assert reply.status_code == 200, reply.text
    out = reply.json()["outputs"][0]
    return np.reshape(out["data"], out["shape"])


@pytest.fixture
def served(tmp_path):
    old, new = version(1.0), version(-2.0)
    path = save_model(old, tmp_path / "digits.onnx")
    with ServerProcess([str(path)], "--watch", "--threads", "1") as server:
        yield server, path, logits(old), logits(new), new


def test_a_replaced_file_is_swapped_in_under_load_without_an_error(served):
    server, path, old, new, new_proto = served
    assert not np.allclose(old, new, atol=1e-3)
    answers: list[list[str]] = [[] for _ in range(4)]
    errors: list[str] = []
    stop = threading.Event()

    def client(k: int) -> None:  # sends until stopped, noting which version answered each request
        with httpx.Client(base_url=server.url, timeout=30) as c:
            while not stop.is_set():
                try:
                    got = answer(c.post("/v2/models/digits/infer", json=BODY))
                except (AssertionError, httpx.HTTPError) as e:
                    errors.append(str(e))
                    continue
                which = [name for name, ref in (("old", old), ("new", new)) if np.allclose(got, ref, atol=1e-4)]
                answers[k].append(which[0] if which else "neither")

    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    save_model(new_proto, path)  # atomic replace, as onnxkit train writes model.onnx
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not all(a and a[-1] == "new" for a in answers):
        time.sleep(0.1)
    time.sleep(0.3)
    stop.set()
    for t in threads:
        t.join()
    assert errors == []
    for sequence in answers:
        assert set(sequence) == {"old", "new"}  # every answer is one version or the other, never a mix
        switch = sequence.index("new")
        assert sequence[switch:] == ["new"] * (len(sequence) - switch)  # and once new, always new
    assert any("loaded the new version" in line for line in server.log)


def test_repository_index_load_and_unload(served):
    server, path, old, new, new_proto = served
    with httpx.Client(base_url=server.url, timeout=30) as c:
        assert c.post("/v2/repository/index").json() == [
            {"name": "digits", "version": "1", "state": "READY", "reason": ""}
        ]
        assert c.post("/v2/repository/models/digits/unload").status_code == 200
        assert c.post("/v2/repository/index").json()[0]["state"] == "UNAVAILABLE"
        reply = c.post("/v2/models/digits/infer", json=BODY)
        assert reply.status_code == 404 and "model 'digits' is not served now (unloaded)" in reply.json()["error"]
        assert c.get("/v2/models/digits/ready").status_code == 404
        assert c.post("/v2/repository/models/digits/load").status_code == 200
        np.testing.assert_allclose(answer(c.post("/v2/models/digits/infer", json=BODY)), old, atol=1e-4)

        write_bytes(path, b"not onnx")  # a bad version: the load fails, the old one stays served
        reply = c.post("/v2/repository/models/digits/load")
        assert reply.status_code == 400 and "the version loaded before is still served" in reply.json()["error"]
        np.testing.assert_allclose(answer(c.post("/v2/models/digits/infer", json=BODY)), old, atol=1e-4)
        assert "loading" in c.post("/v2/repository/index").json()[0]["reason"]

        save_model(new_proto, path)
        assert c.post("/v2/repository/models/digits/load").status_code == 200
        np.testing.assert_allclose(answer(c.post("/v2/models/digits/infer", json=BODY)), new, atol=1e-4)
        assert c.post("/v2/repository/models/digitz/load").status_code == 404


def test_metrics_keep_an_unloaded_models_name(served):
    # before: a request was counted under model "" once its model was not served, the unload itself and answers
    # (200s, and their latency) to requests decoded before an unload or reload included; names never served still are
    server = served[0]
    with httpx.Client(base_url=server.url, timeout=30) as c:
        assert c.post("/v2/repository/models/digits/unload").status_code == 200
        assert c.post("/v2/models/digits/infer", json=BODY).status_code == 404
        assert c.post("/v2/models/digitz/infer", json=BODY).status_code == 404
        assert c.post("/v2/repository/models/digits/load").status_code == 200
        metrics = c.get("/metrics").text
    assert 'onnxkit_requests_total{endpoint="repository_unload",model="digits",code="200"} 1' in metrics
    assert 'onnxkit_requests_total{endpoint="infer",model="digits",code="404"} 1' in metrics
    assert 'onnxkit_requests_total{endpoint="infer",model="",code="404"} 1' in metrics
    assert 'onnxkit_infer_duration_seconds_count{model="digits"} 1' in metrics


def test_watch_reloads_a_model_whose_weights_file_was_replaced(tmp_path):
    """--watch polled the .onnx alone: a new model.onnx.data (new weights for the same graph) was never loaded,
    and the old weights went on answering."""
    old, new = version(1.0), version(-2.0)
    path, expected = tmp_path / "digits.onnx", {"old": logits(old), "new": logits(new)}
    for model, folder in ((old, tmp_path), (new, tmp_path / "new")):  # onnx.save moves their weights out
        folder.mkdir(exist_ok=True)
        onnx.save(model, folder / "digits.onnx", save_as_external_data=True, location="digits.onnx.data",
                  size_threshold=0)
    assert (tmp_path / "digits.onnx").read_bytes() == (tmp_path / "new" / "digits.onnx").read_bytes()
    with ServerProcess([str(path)], "--watch", "--threads", "1") as server, httpx.Client(base_url=server.url) as c:
        assert np.allclose(answer(c.post("/v2/models/digits/infer", json=BODY)), expected["old"], atol=1e-4)
        write_bytes(tmp_path / "digits.onnx.data", (tmp_path / "new" / "digits.onnx.data").read_bytes())
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any("loaded the new version" in line for line in server.log):
            time.sleep(0.1)
        assert np.allclose(answer(c.post("/v2/models/digits/infer", json=BODY)), expected["new"], atol=1e-4)


def fails_at_run() -> onnx.ModelProto:
    """digits-mlp's signature (x [batch, 64] -> logits [batch, 10]) in a model that loads but fails on every input:
    its Reshape asks for 7 rows."""
    shape = numpy_helper.from_array(np.array([7, -1], np.int64), "shape")
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["logits"])], "broken",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])], [shape],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def test_watch_keeps_the_served_version_when_the_new_one_fails_where_it_runs(served):
    """A replaced file that loads but fails on the warm-up's row of zeros, which the served version runs, is not
    swapped in: the old version answers on, the log and the index say why. It was swapped in with a warning that
    it was "served without a warm-up", and every request failed from then on (a 400 naming the new model's error)."""
    server, path, old, _, _ = served
    save_model(fails_at_run(), path)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any("warning: model 'digits'" in line for line in server.log):
        time.sleep(0.1)
    (line,) = [line for line in server.log if "warning: model 'digits'" in line]
    assert "the new version fails on one row of zeros, which the version served now runs" in line
    assert "cannot be reshaped" in line and line.endswith("the version loaded before is still served")
    with httpx.Client(base_url=server.url, timeout=30) as c:
        np.testing.assert_allclose(answer(c.post("/v2/models/digits/infer", json=BODY)), old, atol=1e-4)
        (entry,) = c.post("/v2/repository/index").json()
        assert entry["state"] == "READY" and "the new version fails on one row of zeros" in entry["reason"]
        reply = c.post("/v2/repository/models/digits/load")  # asked for: refused the same way, with a 400
        assert reply.status_code == 400 and "the version loaded before is still served" in reply.json()["error"]
        np.testing.assert_allclose(answer(c.post("/v2/models/digits/infer", json=BODY)), old, atol=1e-4)
