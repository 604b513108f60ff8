"""Dims that exporters write for "any size" are free dims (`onnxkit.dims`): paddle2onnx's `dim_param: '?'` on both
sides of an image input, which differ, and its `dim_value: -1` batch (PaddleOCR's text-direction classifier declares
x [-1, 3, '?', '?']). Predict, serve, inspect and train take them; a dim named by a real name still has one size."""

from __future__ import annotations

import json

import httpx
import numpy as np
import onnx
import pytest
from conftest import ort_run
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from onnxkit import runtime
from onnxkit.data import Dataset, Split
from onnxkit.dims import dims_of, read_dim
from onnxkit.errors import OnnxkitError
from onnxkit.files import save_model
from onnxkit.serve.launch import ServerProcess
from onnxkit.train import fit

BATCH, HEIGHT, WIDTH = 6, 5, 9


def weights() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"conv.weight": rng.normal(0, 0.5, (2, 3, 3, 3)), "conv.bias": rng.normal(0, 0.1, (2,)),
            "fc.weight": rng.normal(0, 0.5, (2, 2)), "fc.bias": rng.normal(0, 0.1, (2,))}


def classifier(batch: int | str, side: int | str | None = "?", *, elem: int = TensorProto.FLOAT,
               as_inputs: bool = False) -> onnx.ModelProto:
    """x [batch, 3, side, side] (None: HEIGHT x WIDTH fixed) -> Conv 3x3 (2 channels, padded) -> Relu ->
    GlobalAveragePool -> Flatten -> Gemm -> logits [batch, 2], as paddle2onnx writes the direction classifier's
    ends; `as_inputs`: the weights are graph inputs (for the finite differences)."""
    dtype = helper.tensor_dtype_to_np_dtype(elem)
    sides = [HEIGHT, WIDTH] if side is None else [side, side]
    params = [numpy_helper.from_array(v.astype(dtype), k) for k, v in weights().items()]
    n = helper.make_node
    graph = helper.make_graph(
        [n("Conv", ["x", "conv.weight", "conv.bias"], ["c"], pads=[1, 1, 1, 1]), n("Relu", ["c"], ["r"]),
         n("GlobalAveragePool", ["r"], ["g"]), n("Flatten", ["g"], ["f"]),
         n("Gemm", ["f", "fc.weight", "fc.bias"], ["logits"], transB=1)],
        "direction", [helper.make_tensor_value_info("x", elem, [batch, 3, *sides])],
        [helper.make_tensor_value_info("logits", elem, [batch, 2])], [] if as_inputs else params)
    if as_inputs:
        graph.input.extend(helper.make_tensor_value_info(t.name, elem, list(t.dims)) for t in params)
    return helper.make_model(graph, ir_version=8, opset_imports=[helper.make_opsetid("", 13)], producer_name="paddle")


def images(rows: int = BATCH, height: int = HEIGHT, width: int = WIDTH, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1, (rows, 3, height, width)).astype(np.float32)


def test_what_reads_as_a_free_dim():
    assert [read_dim(d) for d in ("?", "None", "-1", "", " ? ", -1, -7, None)] == [None] * 8
    assert [read_dim(d) for d in ("batch", "unk__3", "p2o.DynamicDimension.0", 0, 48)] == [
        "batch", "unk__3", "p2o.DynamicDimension.0", 0, 48]
    assert dims_of(classifier(-1).graph.input[0].type) == (None, 3, None, None)


@pytest.mark.parametrize("side", ["?", "None", "-1"])
def test_predict_takes_unequal_sides_of_a_dim_param_naming_no_size(run_cli, tmp_path, side):
    model = classifier(-1, side)
    path = save_model(model, tmp_path / "cls.onnx")
    x = images(height=48 // 8, width=192 // 8)
    loaded = runtime.load(path, device="cpu")
    assert loaded.inputs[0].describe() == "x float32 [?, 3, ?, ?]"
    np.testing.assert_allclose(loaded.predict(x)["logits"], ort_run(model, {"x": x})[0], rtol=1e-6, atol=1e-6)
    np.save(tmp_path / "x.npy", x)
    result = run_cli("predict", path, tmp_path / "x.npy", "-o", tmp_path / "p.npz")
    assert result.code == 0, result.err
    np.testing.assert_allclose(np.load(tmp_path / "p.npz")["logits"], ort_run(model, {"x": x})[0], rtol=1e-6,
                               atol=1e-6)
    shown = run_cli("inspect", path, "--json")
    assert json.loads(shown.out)["inputs"][0]["shape"] == ["?", 3, "?", "?"]


def test_a_named_dim_still_has_one_size():
    loaded = runtime.load(classifier("N", "side").SerializeToString(), device="cpu")
    with pytest.raises(OnnxkitError, match="dimension 'side' is 5 in input 'x' but 9 in input 'x'"):
        loaded.predict(images())
    square = images(height=7, width=7)
    np.testing.assert_allclose(loaded.predict(square)["logits"], ort_run(classifier("N", "side"), {"x": square})[0],
                               rtol=1e-6, atol=1e-6)


def test_serve_takes_requests_of_any_sides(tmp_path):
    model = classifier(-1)
    path = save_model(model, tmp_path / "cls.onnx")
    with ServerProcess([str(path)], "--threads", "1") as server, httpx.Client(base_url=server.url, timeout=30) as c:
        meta = c.get("/v2/models/cls").json()
        assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 3, -1, -1]}]
        for height, width in ((48, 192), (32, 100)):
            x = images(2, height, width)
            body = {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
            reply = c.post("/v2/models/cls/infer", json=body)
            assert reply.status_code == 200, reply.text
            (out,) = reply.json()["outputs"]
            np.testing.assert_allclose(np.reshape(out["data"], out["shape"]), ort_run(model, {"x": x})[0],
                                       rtol=1e-5, atol=1e-6)


def cross_entropy(model: onnx.ModelProto, x: np.ndarray, labels: np.ndarray, params: dict[str, np.ndarray]) -> float:
    (logits,) = ReferenceEvaluator(model).run(None, {"x": x, **params})
    z = logits - logits.max(axis=1, keepdims=True)
    return float(-(z - np.log(np.exp(z).sum(axis=1, keepdims=True)))[np.arange(len(x)), labels].mean())


def finite_differences(x: np.ndarray, labels: np.ndarray, eps: float = 1e-6) -> dict[str, np.ndarray]:
    """Each weight's gradient of the mean cross-entropy, central differences in float64 (onnx.reference)."""
    model, base = classifier("N", None, elem=TensorProto.DOUBLE, as_inputs=True), weights()
    grads = {}
    for name, value in base.items():
        grads[name] = np.zeros_like(value)
        for index in np.ndindex(value.shape):
            plus, minus = value.copy(), value.copy()
            plus[index] += eps
            minus[index] -= eps
            grads[name][index] = (cross_entropy(model, x, labels, {**base, name: plus})
                                  - cross_entropy(model, x, labels, {**base, name: minus})) / (2 * eps)
    return grads


@pytest.mark.training
@pytest.mark.filterwarnings("ignore:the validation and test splits are empty")
@pytest.mark.parametrize(("batch", "side"), [("N", "?"), (-1, None), (-1, "?")],
                         ids=["question-mark-sides", "negative-batch", "paddle-classifier"])
def test_one_sgd_step_matches_finite_differences(tmp_path, batch, side):
    model = classifier(batch, side)
    x = images()
    labels = np.array([0, 1, 1, 0, 1, 0], np.int64)
    empty = Split("empty", {"x": x[:0]}, labels[:0])
    data = Dataset("sides", Split("train", {"x": x}, labels), empty, empty)
    result = fit(model, data, tmp_path / "run", optimizer="sgd", lr=1.0, weight_decay=0.0, epochs=1,
                 batch_size=BATCH, shuffle=False, standardize=False, keep_best=False, evaluate_test=False,
                 device="cpu")
    assert result.metrics["steps"] == 1
    trained = onnx.load(result.model_path)
    after = {t.name: numpy_helper.to_array(t) for t in trained.graph.initializer}
    for name, grad in finite_differences(x.astype(np.float64), labels).items():
        update = weights()[name].astype(np.float32).astype(np.float64) - after[name]
        error = np.linalg.norm(update - grad) / np.linalg.norm(grad)
        assert error < 1e-3, f"{name}: relative error {error:.2e}"
    assert trained.graph.input[0].type == model.graph.input[0].type  # declared as exported: -1, '?'
    if side is not None:  # the trained model takes other sides, as onnxruntime runs it
        other = images(2, 48, 192)
        np.testing.assert_allclose(runtime.load(result.model_path, device="cpu").predict(other)["logits"],
                                   ort_run(trained, {"x": other})[0], rtol=1e-6, atol=1e-6)
