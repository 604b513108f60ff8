"""The short path for plain infer requests decodes exactly what the general path decodes, with the same result."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from onnxkit import runtime, zoo
from onnxkit.files import save_model
from onnxkit.serve import protocol
from onnxkit.serve.protocol import RequestError, decode_request


def identity(elem_type: int, shape: list) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "identity",
        [helper.make_tensor_value_info("x", elem_type, shape)],
        [helper.make_tensor_value_info("y", elem_type, shape)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("plain")
    protos = {
        "digits": zoo.build_model("digits-mlp"),  # x float32 [batch, 64]
        "ints": identity(TensorProto.INT64, ["batch", 3]),
        "square": identity(TensorProto.FLOAT, ["n", "n"]),  # a free dimension named twice: the general path only
    }
    return {name: runtime.load(save_model(p, folder / f"{name}.onnx"), name=name) for name, p in protos.items()}


def tensor(name="x", shape=(1, 64), datatype="FP32", data=None, **extra) -> dict:
    return {"name": name, "shape": list(shape), "datatype": datatype, "data": data, **extra}


ROW = [0.25 * i for i in range(64)]
CASES = [
    ("digits", tensor(data=ROW)),
    ("digits", tensor(shape=(2, 64), data=[ROW, ROW[::-1]])),  # nested data
    ("digits", tensor(data=["NaN", "Infinity"] + [1] * 62)),  # non-finite strings and ints in a float tensor
    ("digits", tensor(shape=(0, 64), data=[])),
    ("digits", tensor(data=ROW[:63])),  # too few values
    ("digits", tensor(shape=(1, 63), data=ROW[:63])),  # a fixed dimension wrong
    ("digits", tensor(shape=(64,), data=ROW)),  # a dimension missing
    ("digits", tensor(shape=(True, 64), data=ROW)),
    ("digits", tensor(shape=(-1, 64), data=ROW)),
    ("digits", tensor(shape=(1.0, 64), data=ROW)),
    ("digits", tensor(datatype="FP64", data=ROW)),
    ("digits", tensor(name="y", data=ROW)),
    ("digits", tensor(data=["a"] * 64)),
    ("digits", tensor(data=[[1, 2], [3]])),
    ("digits", tensor(data=[True] * 64)),
    ("digits", {"name": "x", "shape": [1, 64], "datatype": "FP32", "dat": ROW}),
    ("ints", tensor(shape=(2, 3), datatype="INT64", data=[1, 2, 3, 4, 5, 2**40])),
    ("ints", tensor(shape=(1, 3), datatype="INT64", data=[1, 2, 3.5])),  # floats for an int input
    ("ints", tensor(shape=(1, 3), datatype="INT64", data=[True, False, True])),  # bools are cast
    ("ints", tensor(shape=(1, 3), datatype="INT64", data=[1, 2, 2**70])),
    ("square", tensor(shape=(2, 2), data=[1, 2, 3, 4])),
    ("square", tensor(shape=(2, 3), data=[1, 2, 3, 4, 5, 6])),  # 'n' must agree with itself
]


def outcome(body: bytes, model: runtime.Model) -> tuple:
    try:
        request = decode_request(body, model)
    except RequestError as e:
        return "error", e.status, str(e)
    feeds = {name: (a.dtype, a.shape, a.tobytes(), a.flags.c_contiguous) for name, a in request.feeds.items()}
    return feeds, request.outputs, request.classification, request.id, request.binary


@pytest.mark.parametrize(("name", "input_"), CASES)
def test_the_short_path_and_the_general_one_agree(models, name, input_):
    model = models[name]
    plain = {"inputs": [input_]}
    general = {**plain, "parameters": {}}  # any other key sends a request down the general path
    assert outcome(json.dumps(plain).encode(), model) == outcome(json.dumps(general).encode(), model)


def test_plain_requests_take_the_short_path_and_match_a_direct_conversion(models):
    payload = {"inputs": [tensor(shape=(2, 64), data=[ROW, ROW[::-1]])]}
    short = protocol._plain_request(payload, models["digits"])
    assert short is not None and short.outputs == ["logits"]
    np.testing.assert_array_equal(short.feeds["x"], np.array([ROW, ROW[::-1]], np.float32))
    assert short.feeds["x"].dtype == np.float32
    ints = protocol._plain_request({"inputs": [tensor(shape=(1, 3), datatype="INT64", data=[1, 2, 3])]}, models["ints"])
    assert ints is not None and ints.feeds["x"].dtype == np.int64
    assert protocol._plain_request({"inputs": [tensor(shape=(2, 2), data=[1, 2, 3, 4])]}, models["square"]) is None
