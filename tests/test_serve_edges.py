"""Edge cases of the serving protocol found by driving `onnxkit serve` with real clients and hostile input.

Most run the decoder and encoder in-process on a real `onnxkit.runtime.Model` (fast); each says what
a client saw before it was fixed.
"""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest
from google.protobuf import json_format
from onnx import TensorProto, helper

from onnxkit import runtime
from onnxkit.files import save_model
from onnxkit.serve import binary, jsonio, protocol
from onnxkit.serve.grpc_service import decode_infer, message
from onnxkit.serve.protocol import RequestError, decode_request, encode_response


def _one_node(folder, name: str, op: str, dtype: int, dims: list, x: str = "x", y: str = "y") -> runtime.Model:
    """A model of one `op` node from input `x` to output `y`, both of `dtype` and `dims`, loaded as `name`."""
    graph = helper.make_graph([helper.make_node(op, [x], [y])], "g", [helper.make_tensor_value_info(x, dtype, dims)],
                              [helper.make_tensor_value_info(y, dtype, dims)])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    return runtime.load(save_model(proto, folder / f"{name}.onnx"), threads=1, name=name)


@pytest.fixture(scope="module")
def echo(tmp_path_factory) -> runtime.Model:
    """t string [N] -> o: the same strings (a model with a real string input, not a tokenizer's "text")."""
    return _one_node(tmp_path_factory.mktemp("edges"), "echo", "Identity", TensorProto.STRING, ["N"], "t", "o")


def _binary_body(raw: bytes, shape: list[int], model: runtime.Model) -> tuple[bytes, runtime.Model, str]:
    """`decode_request`'s arguments for an HTTP body sending input "t" as raw BYTES."""
    tensor = {"name": "t", "shape": shape, "datatype": "BYTES", "parameters": {"binary_data_size": len(raw)}}
    header = {"inputs": [tensor]}
    head = json.dumps(header).encode()
    return head + raw, model, str(len(head))


TEXTS = ["hi", "déjà vu", ""]


def test_bytes_sent_raw_reach_a_string_input_as_text_not_as_their_repr(echo):
    # before: onnxruntime was fed Python bytes, which it turns into their repr: "hi" came back as "b'hi'"
    values = np.array([t.encode() for t in TEXTS], dtype=object)
    raw = binary.to_bytes(values, "BYTES")
    request = decode_request(*_binary_body(raw, [3], echo))  # the HTTP binary extension
    assert echo.run(request.feeds)["o"].tolist() == TEXTS

    grpc_request = message("ModelInferRequest")(model_name="echo")
    grpc_request.inputs.add(name="t", datatype="BYTES", shape=[3]).contents.bytes_contents.extend(values)
    assert echo.run(decode_infer(grpc_request, echo).feeds)["o"].tolist() == TEXTS  # gRPC's typed contents
    grpc_request.inputs[0].ClearField("contents")
    grpc_request.raw_input_contents.append(raw)
    assert echo.run(decode_infer(grpc_request, echo).feeds)["o"].tolist() == TEXTS  # and its raw contents

    as_json = json.dumps({"inputs": [{"name": "t", "shape": [3], "datatype": "BYTES", "data": TEXTS}]}).encode()
    request = decode_request(as_json, echo)
    reply, _ = encode_response(echo, request, echo.run(request.feeds))
    assert json.loads(reply)["outputs"][0]["data"] == TEXTS


def test_bytes_for_a_string_input_that_are_not_utf8_get_400(echo):
    raw = binary.to_bytes(np.array([b"fine", b"\xff\xfe"], dtype=object), "BYTES")
    with pytest.raises(RequestError) as refused:
        decode_request(*_binary_body(raw, [2], echo))
    assert refused.value.status == 400
    assert str(refused.value) == (
        "input 't': BYTES values for a string input must be UTF-8 text "
        "('utf-8' codec can't decode byte 0xff in position 0: invalid start byte)"
    )


@pytest.mark.parametrize("value,shown", [(5, "5"), (None, "null"), (True, "true"), ({"a": 1}, '{"a":1}'),
                                          ([1], "1"), (1.5, "1.5")])
def test_json_values_of_a_bytes_input_must_be_strings(echo, value, shown):
    # the model was fed Python's str() of each: "5", "None", "True", "{'a': 1}", "[1]", "1.5"
    body = json.dumps({"inputs": [{"name": "t", "shape": [2], "datatype": "BYTES", "data": ["fine", value]}]})
    with pytest.raises(RequestError) as refused:
        decode_request(body.encode(), echo)
    assert refused.value.status == 400
    assert str(refused.value) == f"input 't': data holds {shown}; BYTES takes strings"


@pytest.fixture(scope="module")
def relu(tmp_path_factory) -> runtime.Model:
    """x float [batch, 2] -> relu."""
    return _one_node(tmp_path_factory.mktemp("edges"), "relu", "Relu", TensorProto.FLOAT, ["batch", 2])


@pytest.mark.parametrize("data", [[1.0, None], [[None, 2.0]], [None, "NaN"]])
def test_null_in_floating_point_data_gets_400_not_nan(relu, data):
    # before: numpy read JSON null as NaN, and the model ran on it (200 with NaN outputs)
    body = json.dumps({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": data}]}).encode()
    with pytest.raises(RequestError) as refused:
        decode_request(body, relu)
    assert refused.value.status == 400
    assert str(refused.value) == "input 'x': data holds null; send numbers (\"NaN\" for a value that is not one)"
    nan = json.dumps({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": ["NaN", 1]}]})
    assert np.isnan(decode_request(nan.encode(), relu).feeds["x"][0, 0])  # NaN itself still goes through


def test_grpc_values_in_another_typed_field_are_named_in_the_refusal(relu):
    # before: "input 'x': shape [1, 2] holds 2 values, but data has 0", as if none were sent
    request = message("ModelInferRequest")(model_name="relu")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 2]).contents.int_contents.extend([1, 2])
    with pytest.raises(RequestError) as refused:
        decode_infer(request, relu)
    assert refused.value.status == 400
    assert str(refused.value) == "input 'x': FP32 values go in contents.fp32_contents, not int_contents"
    request.inputs[0].contents.fp32_contents.extend([3, 4])  # beside the right ones: they were dropped unsaid
    with pytest.raises(RequestError) as refused:
        decode_infer(request, relu)
    assert str(refused.value) == "input 'x': FP32 values go in contents.fp32_contents, not int_contents"


def test_an_unknown_output_is_refused_with_the_models_outputs(relu):
    # before: "model 'relu' has no output 'nope'." and nothing on what it has (an input's refusal lists them)
    x = {"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}
    body = {"inputs": [x], "outputs": [{"name": "nope"}]}
    with pytest.raises(RequestError) as refused:
        decode_request(json.dumps(body).encode(), relu)
    assert refused.value.status == 400 and str(refused.value) == "model 'relu' has no output 'nope'. Its outputs: y"


@pytest.fixture(scope="module")
def halves(tmp_path_factory) -> runtime.Model:
    """x float16 [batch, 2] -> the same."""
    return _one_node(tmp_path_factory.mktemp("edges"), "half", "Identity", TensorProto.FLOAT16, ["batch", 2])


@pytest.mark.parametrize(
    ("datatype", "data", "message"),
    [
        ("FP32", [1e300, 1.0], "input 'x': 1e+300 does not fit FP32 (largest 3.40282e+38); it would be infinite"),
        ("FP16", [[70000, -1]], "input 'x': 70000 does not fit FP16 (largest 65504); it would be infinite"),
        ("FP16", [-1e5, 1], "input 'x': -100000 does not fit FP16 (largest 65504); it would be infinite"),
    ],
)
def test_a_finite_number_past_a_float_datatype_gets_400_not_infinity(relu, halves, datatype, data, message):
    # before: the cast made it infinite and the model ran on it (onnxkit predict refuses such values)
    model = halves if datatype == "FP16" else relu
    body = json.dumps({"inputs": [{"name": "x", "shape": [1, 2], "datatype": datatype, "data": data}]}).encode()
    with pytest.raises(RequestError) as refused:
        decode_request(body, model)
    assert refused.value.status == 400 and str(refused.value) == message
    infinite = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": datatype, "data": ["Infinity", 1e400]}]}
    assert np.isinf(decode_request(json.dumps(infinite).encode(), model).feeds["x"]).all()  # infinity itself passes


@pytest.mark.parametrize("header_length", ["\u00b2", "\u0663", "-1", " 5", ""])
def test_a_header_length_that_is_no_ascii_count_gets_400(relu, header_length):
    # before: '²' (the byte 0xB2 read as latin-1) passed str.isdigit() and int() failed on it: a 500
    body = json.dumps({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}).encode()
    with pytest.raises(RequestError) as refused:
        decode_request(body, relu, header_length)
    assert refused.value.status == 400 and "must be a byte count" in str(refused.value)


def _outcome(body: bytes, model: runtime.Model):
    try:
        return decode_request(body, model).feeds["x"].tolist()
    except RequestError as e:
        return e.status, str(e)


@pytest.fixture(scope="module")
def wide(tmp_path_factory) -> runtime.Model:
    """x float [batch, 1024] -> the same."""
    return _one_node(tmp_path_factory.mktemp("edges"), "wide", "Identity", TensorProto.FLOAT, ["batch", 1024])


def test_a_long_data_array_is_read_into_numpy_with_the_same_result_and_a_fraction_of_the_memory(wide, monkeypatch):
    # before: 3.4M floats in 30 MB of JSON became Python floats (32 bytes each), and orjson's parse tree beside
    # them peaked at 473 MB (tracemalloc) for a 14 MB tensor
    values = np.random.default_rng(0).random(256 * 1024).round(6).tolist()
    body = json.dumps({"inputs": [{"name": "x", "shape": [256, 1024], "datatype": "FP32", "data": values}]}).encode()
    tracemalloc.start()
    try:
        got = decode_request(body, wide).feeds["x"]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5 * len(body), (peak, len(body))  # before: 16 times
    np.testing.assert_array_equal(got, np.array(values, np.float32).reshape(256, 1024))

    def variants() -> list[bytes]:
        whole = body.replace(b"0.", b"1").replace(b", ", b",")  # whole numbers too: int64, then cast
        odd = [b", null, ", b", 1e400, ", b", true, ", b",, ", b', "NaN", ']  # each once, in place of a comma
        return [body, whole, body.replace(b"]}]}", b",]}]}"), body.replace(b"}]}", b'}], "id": "\\u00000"}'),
                *[body.replace(b", ", value, 1) for value in odd]]  # fmt: skip

    fast = [_outcome(variant, wide) for variant in variants()]
    monkeypatch.setattr(jsonio, "LONG_ARRAY_BYTES", 1 << 40)  # every array read as Python values, as before
    assert fast == [_outcome(variant, wide) for variant in variants()]


def test_classification_of_a_scalar_output_gets_400_not_500(tmp_path):
    # before: Model.prediction_of took len() of the 0-d output: a TypeError, answered as a 500
    graph = helper.make_graph([helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])],
                              [helper.make_tensor_value_info("s", TensorProto.FLOAT, [])])  # fmt: skip
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    total = runtime.load(save_model(proto, tmp_path / "total.onnx"), threads=1, name="total")
    x = {"name": "x", "shape": [3], "datatype": "FP32", "data": [1, 2, 3]}
    body = {"inputs": [x], "outputs": [{"name": "s", "parameters": {"classification": 2}}]}
    request = decode_request(json.dumps(body).encode(), total)
    with pytest.raises(RequestError) as refused:
        encode_response(total, request, total.run(request.feeds))
    assert refused.value.status == 400
    assert str(refused.value) == ("model 'total': class predictions need [batch, classes] scores, got shape () "
                                  "(output 's')")


def test_a_model_with_a_fixed_batch_size_refuses_other_row_counts_by_its_shape(tmp_path):
    # before: Model.prepare let x [1, 4] take 2 rows (predict runs such a model in batches), and onnxruntime's
    # first line was the 400: "... Got invalid dimensions for input: x for the following indices"
    traced = _one_node(tmp_path, "traced", "Relu", TensorProto.FLOAT, [1, 4])
    expected = "model 'traced': input 'x': dimension 0 must be 1, got shape (2, 4); the model expects x float32 [1, 4]"
    body = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": [1.0] * 8}]}
    grpc_request = message("ModelInferRequest")(model_name="traced")
    grpc_request.inputs.add(name="x", datatype="FP32", shape=[2, 4]).contents.fp32_contents.extend([1.0] * 8)
    for decode, request in ((decode_request, json.dumps(body).encode()), (decode_infer, grpc_request)):
        with pytest.raises(RequestError) as refused:
            decode(request, traced)
        assert refused.value.status == 400 and str(refused.value) == expected
    body["inputs"][0].update(shape=[1, 4], data=[1.0] * 4)
    assert decode_request(json.dumps(body).encode(), traced).feeds["x"].shape == (1, 4)


def test_uint64_values_past_int64_arrive_exact(tmp_path):
    # before: numpy read 2**64 - 1 beside 0 as float64, 18446744073709551616: "does not fit UINT64" (400), in
    # JSON (short or long data) and in gRPC's typed uint64_contents
    wide = _one_node(tmp_path, "wide", "Identity", TensorProto.UINT64, ["n"])
    values = [2**64 - 1, 0, 2**63 + 1, 5] * 5000  # over LONG_ARRAY_BYTES: read into numpy
    for data in (values[:4], values):
        body = {"inputs": [{"name": "x", "shape": [len(data)], "datatype": "UINT64", "data": data}]}
        assert decode_request(json.dumps(body).encode(), wide).feeds["x"].tolist() == data
    grpc_request = message("ModelInferRequest")(model_name="wide")
    grpc_request.inputs.add(name="x", datatype="UINT64", shape=[4]).contents.uint64_contents.extend(values[:4])
    assert decode_infer(grpc_request, wide).feeds["x"].tolist() == values[:4]
    body = {"inputs": [{"name": "x", "shape": [2], "datatype": "UINT64", "data": [2**64, 0]}]}
    with pytest.raises(RequestError, match="18446744073709551616 does not fit UINT64"):
        decode_request(json.dumps(body).encode(), wide)


@pytest.mark.parametrize("number", [b"1e400", b"-1e999", b"9" * 400 + b".5"])
def test_a_json_number_past_float64_gets_400_not_infinity(relu, number):
    # before: the standard library's parser (the fallback for what orjson refuses) read it as infinite, and the model
    # ran on it (200 with NaN outputs), where 4e39 for an FP32 input was a 400
    body = b'{"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, %s]}]}' % number
    with pytest.raises(RequestError) as refused:
        decode_request(body, relu)
    assert refused.value.status == 400 and "past float64's range" in str(refused.value)
    assert np.isinf(decode_request(body.replace(number, b"Infinity"), relu).feeds["x"][0, 1])  # the token passes


@pytest.mark.parametrize("datatype", ["UINT8", "UINT16", "UINT32", "INT8", "INT16"])
def test_json_and_grpc_typed_integers_reach_a_narrow_or_unsigned_input(tmp_path, datatype):
    # before: JSON's int64 (and gRPC's uint_contents) for an unsigned input was refused by Model.prepare as another
    # kind: "input 'x' expects uint8 values, got int64" (400), so no JSON client could call such a model
    dtype = binary.NUMPY_BY_V2[datatype]
    model = _one_node(tmp_path, "narrow", "Identity", helper.np_dtype_to_tensor_dtype(dtype), ["n"])
    data = [0, int(np.iinfo(dtype).max), 7]
    body = {"inputs": [{"name": "x", "shape": [3], "datatype": datatype, "data": data}]}
    feeds = decode_request(json.dumps(body).encode(), model).feeds
    assert feeds["x"].dtype == dtype and feeds["x"].tolist() == data
    grpc_request = message("ModelInferRequest")(model_name="narrow")
    field = "uint_contents" if datatype.startswith("U") else "int_contents"
    getattr(grpc_request.inputs.add(name="x", datatype=datatype, shape=[3]).contents, field).extend(data)
    assert decode_infer(grpc_request, model).feeds["x"].tolist() == data
    body["inputs"][0]["data"] = [int(np.iinfo(dtype).min) - 1, 0, 0]
    with pytest.raises(RequestError, match=f"does not fit {datatype}"):
        decode_request(json.dumps(body).encode(), model)


def test_an_output_requested_twice_gets_400_not_a_copy_each(relu):
    # before: each copy was encoded: a 100 KB request asking for one output 3,000 times got a 192 MB answer, and
    # 32 MB of such requests could ask for gigabytes (HTTP and gRPC alike)
    x = {"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}
    body = {"inputs": [x], "outputs": [{"name": "y"}] * 3000}
    grpc_request = message("ModelInferRequest")(model_name="relu")
    grpc_request.inputs.add(name="x", datatype="FP32", shape=[1, 2]).contents.fp32_contents.extend([1, 2])
    grpc_request.outputs.add(name="y")
    grpc_request.outputs.add(name="y")
    for decode, request in ((decode_request, json.dumps(body).encode()), (decode_infer, grpc_request)):
        with pytest.raises(RequestError) as refused:
            decode(request, relu)
        assert refused.value.status == 400 and str(refused.value) == "output 'y' is requested twice"


def test_a_scikit_learn_classifiers_probability_maps_are_served_as_fp32_rows(tmp_path):
    # before: skl2onnx's ZipMap output (a {class: probability} map per row) was a 500 in JSON (orjson cannot write
    # int keys), the maps' repr as "BYTES" in binary, and its metadata datatype "seq(map(int64,tensor(float)))"
    classify = helper.make_node("LinearClassifier", ["x"], ["label", "probs"], domain="ai.onnx.ml",
                                classlabels_ints=[0, 1, 2], coefficients=[1.0, 0, 0, 1, -1, -1],
                                intercepts=[0.0, 0, 0], post_transform="SOFTMAX")  # fmt: skip
    zipmap = helper.make_node("ZipMap", ["probs"], ["maps"], domain="ai.onnx.ml", classlabels_int64s=[0, 1, 2])
    probabilities = helper.make_tensor_type_proto(TensorProto.FLOAT, None)
    maps = helper.make_sequence_type_proto(helper.make_map_type_proto(TensorProto.INT64, probabilities))
    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])
    label_info = helper.make_tensor_value_info("label", TensorProto.INT64, [None])
    graph = helper.make_graph([classify, zipmap], "g", [x_info], [label_info, helper.make_value_info("maps", maps)])
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)]
    proto = helper.make_model(graph, opset_imports=opsets, ir_version=10)
    model = runtime.load(save_model(proto, tmp_path / "skl.onnx"), threads=1, name="skl")
    assert protocol.model_metadata(model)["outputs"][1] == {"name": "maps", "datatype": "FP32", "shape": [-1, -1]}
    x = {"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, -4]}
    request = decode_request(json.dumps({"inputs": [x]}).encode(), model)
    outputs = model.run(request.feeds)
    expected = np.array([[row[k] for k in range(3)] for row in outputs["maps"]], np.float32)
    reply = json.loads(encode_response(model, request, outputs)[0])["outputs"][1]
    assert reply["datatype"] == "FP32" and reply["shape"] == [2, 3]
    np.testing.assert_allclose(reply["data"], expected.ravel(), rtol=1e-6)


def test_classification_of_probability_maps_names_their_string_classes(tmp_path):
    # the maps' keys name the classes: the answer said "0.98:0", not "0.98:0:setosa"
    names = ["setosa", "versicolor", "virginica"]
    classify = helper.make_node("LinearClassifier", ["x"], ["label", "probs"], domain="ai.onnx.ml",
                                classlabels_strings=names, coefficients=[1.0, 0, 0, 1, -1, -1],
                                intercepts=[0.0, 0, 0], post_transform="SOFTMAX")  # fmt: skip
    zipmap = helper.make_node("ZipMap", ["probs"], ["maps"], domain="ai.onnx.ml", classlabels_strings=names)
    maps = helper.make_sequence_type_proto(helper.make_map_type_proto(
        TensorProto.STRING, helper.make_tensor_type_proto(TensorProto.FLOAT, None)))
    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])
    graph = helper.make_graph([classify, zipmap], "g", [x_info], [
        helper.make_tensor_value_info("label", TensorProto.STRING, [None]), helper.make_value_info("maps", maps)])
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)]
    model = runtime.load(save_model(helper.make_model(graph, opset_imports=opsets, ir_version=10),
                                    tmp_path / "skl.onnx"), threads=1, name="skl")
    body = {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, -4]}],
            "outputs": [{"name": "maps", "parameters": {"classification": 1}}]}
    request = decode_request(json.dumps(body).encode(), model)
    outputs = model.run(request.feeds)
    reply = json.loads(encode_response(model, request, outputs)[0])["outputs"][0]
    best = [max(row, key=row.get) for row in outputs["maps"]]
    assert [entry.split(":")[1:] for entry in reply["data"]] == [[str(names.index(b)), b] for b in best]


def test_grpc_values_in_both_contents_and_raw_contents_get_400(relu):
    # before: the typed contents were dropped without a word and the raw ones used (Triton refuses both)
    request = message("ModelInferRequest")(model_name="relu")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 2]).contents.fp32_contents.extend([5, 6])
    request.raw_input_contents.append(np.array([1, 2], np.float32).tobytes())
    with pytest.raises(RequestError) as refused:
        decode_infer(request, relu)
    assert refused.value.status == 400
    assert str(refused.value) == "input 'x': give its values in contents or raw_input_contents, not both"


def test_an_input_given_twice_is_refused_before_the_rest_is_decoded(relu, monkeypatch):
    # before: every copy was decoded, then the second refused: 300,000 copies of one input (22 MB) took 2.6 s
    decode, decoded = protocol.array_from_values, []
    monkeypatch.setattr(protocol, "array_from_values", lambda *args: decoded.append(args) or decode(*args))
    x = {"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}
    grpc_request = message("ModelInferRequest")(model_name="relu")
    for _ in range(1000):
        grpc_request.inputs.add(name="x", datatype="FP32", shape=[1, 2]).contents.fp32_contents.extend([1, 2])
    body = json.dumps({"inputs": [x] * 1000}).encode()
    for decoder, request in ((decode_request, body), (decode_infer, grpc_request)):
        decoded.clear()
        with pytest.raises(RequestError) as refused:
            decoder(request, relu)
        assert refused.value.status == 400 and str(refused.value) == "input 'x' is given twice" and len(decoded) == 1


def test_a_sequence_of_tensors_output_keeps_its_type_and_grpc_model_config_answers(tmp_path):
    # before: gRPC's ModelConfig failed on its datatype "TYPE_seq(tensor(int64))" (a 500, ParseError)
    x_info = helper.make_tensor_value_info("x", TensorProto.INT64, ["n", 2])
    pair = helper.make_sequence_type_proto(helper.make_tensor_type_proto(TensorProto.INT64, ["n", 2]))
    graph = helper.make_graph([helper.make_node("SequenceConstruct", ["x", "x"], ["pair"])], "g", [x_info],
                              [helper.make_value_info("pair", pair)])  # fmt: skip
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    model = runtime.load(save_model(proto, tmp_path / "pair.onnx"), threads=1, name="pair")
    config = protocol.model_config(model, 8, 0.005)
    assert config["max_batch_size"] == 0 and config["output"] == [{"name": "pair", "data_type": "TYPE_INT64",
                                                                   "dims": [-1]}]
    assert json_format.ParseDict(config, message("ModelConfig")()).output[0].data_type == 9  # TYPE_INT64
    # served as its tensors stacked, as the metadata says (it said "seq(tensor(int64))", not a V2 datatype)
    assert protocol.model_metadata(model)["outputs"] == [{"name": "pair", "datatype": "INT64", "shape": [-1]}]
    request = decode_request(json.dumps({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "INT64",
                                                     "data": [3, 4]}]}).encode(), model)
    reply = json.loads(encode_response(model, request, model.run(request.feeds))[0])["outputs"][0]
    assert reply == {"name": "pair", "datatype": "INT64", "shape": [2, 1, 2], "data": [3, 4, 3, 4]}


def test_a_sequence_of_tensors_of_different_shapes_is_a_500_naming_the_output(tmp_path):
    # before: numpy's ValueError, answered 'internal server error (ValueError)'
    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])
    parts = helper.make_sequence_type_proto(helper.make_tensor_type_proto(TensorProto.FLOAT, None))
    split = helper.make_tensor("split", TensorProto.INT64, [2], [1, 2])
    graph = helper.make_graph([helper.make_node("SplitToSequence", ["x", "split"], ["parts"], axis=1)], "g", [x_info],
                              [helper.make_value_info("parts", parts)], [split])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    model = runtime.load(save_model(proto, tmp_path / "ragged.onnx"), threads=1, name="ragged")
    request = decode_request(json.dumps({"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32",
                                                     "data": [1, 2, 3, 4, 5, 6]}]}).encode(), model)
    with pytest.raises(RequestError) as refused:
        encode_response(model, request, model.run(request.feeds))
    assert refused.value.status == 500 and str(refused.value) == (
        "output 'parts' is a sequence of tensors of different shapes ((2, 1), (2, 2)), which one V2 tensor cannot "
        "hold")


def _iris_like(tmp_path, zipmap: bool) -> runtime.Model:
    """A scikit-learn-style linear classifier of 3 classes over 4 features, with or without skl2onnx's ZipMap."""
    classify = helper.make_node("LinearClassifier", ["x"], ["label", "probs"], domain="ai.onnx.ml",
                                classlabels_ints=[0, 1, 2], coefficients=[1.0, 0, 0, 0] * 3,
                                intercepts=[0.0, 0, 0], post_transform="SOFTMAX")  # fmt: skip
    nodes, probabilities = [classify], helper.make_tensor_value_info("probs", TensorProto.FLOAT, [None, 3])
    if zipmap:
        nodes.append(helper.make_node("ZipMap", ["probs"], ["maps"], domain="ai.onnx.ml", classlabels_int64s=[0, 1, 2]))
        probabilities = helper.make_value_info("maps", helper.make_sequence_type_proto(helper.make_map_type_proto(
            TensorProto.INT64, helper.make_tensor_type_proto(TensorProto.FLOAT, None))))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
                              [helper.make_tensor_value_info("label", TensorProto.INT64, [None]), probabilities])
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)]
    name = "zipmap" if zipmap else "nozip"
    return runtime.load(save_model(helper.make_model(graph, opset_imports=opsets, ir_version=10),
                                   tmp_path / f"{name}.onnx"), threads=1, name=name)


@pytest.mark.parametrize("zipmap", [True, False], ids=["zipmap", "no-zipmap"])
def test_a_request_of_no_rows_gets_no_rows_of_classes_and_probabilities(tmp_path, zipmap):
    # before: classification of 0 rows was a 500 (numpy could not reshape an empty array), and a ZipMap's
    # probabilities of 0 rows came back shaped [0], not [0, 3]
    model = _iris_like(tmp_path, zipmap)
    scores = "maps" if zipmap else "probs"
    x = {"name": "x", "shape": [0, 4], "datatype": "FP32", "data": []}
    for asked, shape in (({}, [0, 3]), ({"classification": 2}, [0, 2])):
        body = {"inputs": [x], "outputs": [{"name": scores, "parameters": asked}]}
        request = decode_request(json.dumps(body).encode(), model)
        reply = json.loads(encode_response(model, request, model.run(request.feeds))[0])["outputs"][0]
        assert (reply["shape"], reply["data"]) == (shape, []), reply


def test_nan_scored_from_finite_inputs_is_the_models_fault_and_from_nan_the_requests(tmp_path):
    # before: both were 400s saying 'check those rows' inputs for NaN', though the input held none; the 400 did not
    # name the input
    graph = helper.make_graph([helper.make_node("Log", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    model = runtime.load(save_model(proto, tmp_path / "log.onnx"), threads=1, name="log")
    statuses = []
    for data in ([-1, 1, 2], ["NaN", 1, 2]):
        body = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": data}],
                "outputs": [{"name": "y", "parameters": {"classification": 1}}]}
        request = decode_request(json.dumps(body).encode(), model)
        with pytest.raises(RequestError) as refused:
            encode_response(model, request, model.run(request.feeds))
        statuses.append((refused.value.status, str(refused.value)))
    assert statuses == [
        (500, "model 'log' scored NaN on finite inputs, so no class is best; ask for the output without "
              "classification to read its scores"),
        (400, "model 'log': 1 row (0) scored NaN, so no class is best; check those rows' inputs for NaN, or read "
              "the scores (input 'x' holds NaN or infinity)")]


def test_classification_is_of_the_output_training_fit(tmp_path):
    # a model trained on its second output (onnxkit.output, 716204a) was classified only on its first: 'logits'
    # was refused, and 'features' answered the top classes of the logits
    nodes = [helper.make_node("Relu", ["x"], ["features"]), helper.make_node("Neg", ["x"], ["logits"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
                              [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["n", 3]),
                               helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 3])])  # fmt: skip
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    proto.metadata_props.add(key="onnxkit.output", value="logits")
    model = runtime.load(save_model(proto, tmp_path / "two.onnx"), threads=1, name="two")
    x = {"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 3, 2]}

    def classified(output: str) -> dict:
        body = {"inputs": [x], "outputs": [{"name": output, "parameters": {"classification": 1}}]}
        request = decode_request(json.dumps(body).encode(), model)
        return json.loads(encode_response(model, request, model.run(request.feeds))[0])["outputs"][0]

    assert classified("logits")["data"] == ["-1:0"]  # the largest of -x
    with pytest.raises(RequestError, match="classification is available for the scores output, 'logits'"):
        classified("features")


@pytest.mark.parametrize(("datatype", "data", "message"), [
    ("FP32", [False, False], "data holds false; FP32 takes numbers"),  # were zeros
    ("FP32", [True, 2.5], "data holds true; FP32 takes numbers"),  # was 1.0
    ("FP32", ["5.1", 3.5], 'data holds "5.1"; FP32 takes numbers ("NaN", "Infinity", "-Infinity" for those)'),
    ("FP32", [{"a": 1}, 2], 'data holds {"a":1}; FP32 takes numbers'),  # said 'expects float32 values, got object'
    ("INT32", ["NaN", 1], 'data holds "NaN"; INT32 takes integers'),  # said 'got <U21'
    ("INT32", [True, 1], "data holds true; INT32 takes integers"),
    ("INT32", [None, 1], "data holds null; INT32 takes integers"),  # said 'expects int32 values, got object'
    ("UINT8", [0.5, 1], "data holds 0.5; UINT8 takes integers"),  # told an HTTP client to use .astype(np.uint8)
    ("BOOL", ["true", False], 'data holds "true"; BOOL takes true or false'),  # said 'got <U5'
    ("BOOL", [1, 0], "data holds 1; BOOL takes true or false"),
])
def test_json_values_of_another_kind_than_the_datatype_are_named(tmp_path_factory, datatype, data, message):
    """numpy read true as 1, "5.1" as 5.1 and a JSON object as an object array; Triton refuses each."""
    types = {"FP32": TensorProto.FLOAT, "INT32": TensorProto.INT32, "UINT8": TensorProto.UINT8,
             "BOOL": TensorProto.BOOL}
    model = _one_node(tmp_path_factory.mktemp("kinds"), "m", "Identity", types[datatype], ["batch", 2])
    body = json.dumps({"inputs": [{"name": "x", "shape": [1, 2], "datatype": datatype, "data": data}]}).encode()
    with pytest.raises(RequestError) as refused:
        decode_request(body, model)
    assert refused.value.status == 400 and str(refused.value).startswith(f"input 'x': {message}")
    good = {"FP32": ["NaN", 2], "INT32": [3, 2.0], "UINT8": [255, 0], "BOOL": [True, False]}[datatype]
    ok = json.dumps({"id": "true", "inputs": [{"name": "x", "shape": [1, 2], "datatype": datatype, "data": good}]})
    np.testing.assert_array_equal(decode_request(ok.encode(), model).feeds["x"], np.array([good], dtype=object).astype(
        model.inputs[0].dtype))  # "true" in the body, as an id: the numbers are still numbers


def test_true_in_a_long_run_of_numbers_is_named_too(relu):
    # a "data" array over 64 KiB is read into numpy a piece at a time, which read true as 1.0
    data = [0.123456] * 20000 + [True, 1.5]
    body = json.dumps({"inputs": [{"name": "x", "shape": [10001, 2], "datatype": "FP32", "data": data}]}).encode()
    with pytest.raises(RequestError, match=r"^input 'x': data holds true; FP32 takes numbers"):
        decode_request(body, relu)
    good = json.dumps({"inputs": [{"name": "x", "shape": [10001, 2], "datatype": "FP32",
                                   "data": [*data[:-2], 2, 1.5]}]})
    assert decode_request(good.encode(), relu).feeds["x"][-1].tolist() == [2.0, 1.5]


def test_a_request_id_comes_back_as_sent_or_is_refused(relu):
    # 123456789012345678901234567890 came back as "1.2345678901234568e+29": changed, unsaid
    def given(request_id):  # type: ignore[no-untyped-def]
        body = {"id": request_id, "inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}
        try:
            return decode_request(json.dumps(body).encode(), relu).id
        except RequestError as e:
            return e.status, str(e)

    assert [given(i) for i in ("req-1", 7, 7.0)] == ["req-1", "7", "7"]
    assert given(123456789012345678901234567890) == (400, '"id" is a number past 2**53, which JSON numbers do not '
                                                          'keep exactly; send it as a string')
    assert given(1.5) == (400, '"id" must be a string (or a whole number), got 1.5')
    assert given(True) == (400, '"id" must be a string (or a whole number), got True')
