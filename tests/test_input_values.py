"""Values of the right dtype and shape that a model still cannot take: token ids outside its vocabulary, masks other
than 0 and 1; refused by `Model.predict`, `onnxkit predict` and the server (400), each naming input, value and size."""

from __future__ import annotations

import json

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxkit import runtime
from onnxkit.errors import OnnxkitError
from onnxkit.files import save_model
from onnxkit.serve.protocol import RequestError, decode_request

RNG = np.random.default_rng(0)
WORDS = RNG.normal(size=(7, 3)).astype(np.float32)  # a vocabulary of 7
TYPES_Q = np.array([[3, -5, 7], [-2, 4, 1]], np.int8)  # 2 token types, stored as int8 and a scale a row
TYPES_SCALE = np.array([[0.5], [0.25]], np.float32)


def _embedder(folder) -> runtime.Model:
    """input_ids, token_type_ids [batch, seq] -> sum over seq of (words[ids] + types[type ids]) * mask: the word table
    as it is, the type table as an int8 one times its scale (a hand-dequantized export's)."""
    nodes = [helper.make_node("Gather", ["words", "input_ids"], ["w"]),
             helper.make_node("Cast", ["types_q"], ["types_f"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["types_f", "types_scale"], ["types"]),
             helper.make_node("Gather", ["types", "token_type_ids"], ["t"]),
             helper.make_node("Add", ["w", "t"], ["e"]),
             helper.make_node("Cast", ["attention_mask"], ["m0"], to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["m0", "last"], ["m"]),
             helper.make_node("Mul", ["e", "m"], ["em"]),
             helper.make_node("ReduceSum", ["em", "seq_axis"], ["y"], keepdims=0)]
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"])
              for n in ("input_ids", "token_type_ids", "attention_mask")]
    constants = [numpy_helper.from_array(a, n) for n, a in [
        ("words", WORDS), ("types_q", TYPES_Q), ("types_scale", TYPES_SCALE), ("last", np.array([-1], np.int64)),
        ("seq_axis", np.array([1], np.int64))]]
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                                                  ["batch", 3])], constants)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    return runtime.load(save_model(proto, folder / "emb.onnx"), threads=1)


def _reference(ids: np.ndarray, types: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return ((WORDS[ids] + (TYPES_Q * TYPES_SCALE)[types]) * mask[..., None]).sum(axis=1)


@pytest.fixture(scope="module")
def embedder(tmp_path_factory) -> runtime.Model:
    return _embedder(tmp_path_factory.mktemp("values"))


def _feeds(**changed: tuple[tuple[int, int], int]) -> dict[str, np.ndarray]:
    feeds = {"input_ids": RNG.integers(0, 7, (3, 5)), "token_type_ids": RNG.integers(0, 2, (3, 5)),
             "attention_mask": np.ones((3, 5), np.int64)}
    for name, (place, value) in changed.items():
        feeds[name][place] = value
    return feeds


def test_ids_within_the_vocabulary_and_masks_of_0_and_1_predict_as_numpy_does(embedder):
    feeds = _feeds(input_ids=((0, 0), 6), attention_mask=((1, 4), 0))  # the last id, a padded position
    np.testing.assert_allclose(embedder.predict(feeds)["y"], _reference(*feeds.values()), rtol=1e-6)
    assert embedder.value_checks.lookups == {"input_ids": 7, "token_type_ids": 2}


@pytest.mark.parametrize(("name", "value", "size"), [("input_ids", -1, 7), ("input_ids", 7, 7),
                                                     ("input_ids", 10**6, 7), ("token_type_ids", 2, 2)])
def test_an_id_outside_the_vocabulary_is_refused_naming_the_input_value_and_size(embedder, name, value, size):
    # before: -1 answered the last row's embedding (onnxruntime reads a negative index from the end), 7 was
    # "node '' (Gather): indices element out of data bounds, idx=7 must be within the inclusive range [-7,6]"
    feeds = _feeds(**{name: ((2, 3), value)})
    message = (f"input '{name}' holds {value} at [2, 3], outside its vocabulary of {size} (ids 0 to {size - 1}); "
               "give ids from the tokenizer the model was made with")
    with pytest.raises(OnnxkitError) as refused:
        embedder.predict(feeds)
    assert str(refused.value) == message
    body = {"inputs": [{"name": k, "shape": [3, 5], "datatype": "INT64", "data": v.ravel().tolist()}
                       for k, v in feeds.items()]}
    with pytest.raises(RequestError) as answered:
        decode_request(json.dumps(body).encode(), embedder)
    assert (answered.value.status, str(answered.value)) == (400, f"model 'emb': {message}")


@pytest.mark.parametrize("value", [2, -1])
def test_a_mask_other_than_0_and_1_is_refused(embedder, value):
    # before: a mask of 2 counted the token twice, -1 subtracted it, each answered without a word
    with pytest.raises(OnnxkitError, match=rf"^input 'attention_mask' holds {value} at \[1, 0\]; a mask is 1 for "
                                           r"each token to read and 0 for padding$"):
        embedder.predict(_feeds(attention_mask=((1, 0), value)))


def test_the_servers_short_path_for_one_integer_input_checks_ids_too(tmp_path):
    graph = helper.make_graph([helper.make_node("Gather", ["words", "ids"], ["y"])], "g",
                              [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
                              [numpy_helper.from_array(WORDS, "words")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    model = runtime.load(save_model(proto, tmp_path / "lookup.onnx"), threads=1)
    body = {"inputs": [{"name": "ids", "shape": [3], "datatype": "INT64", "data": [3, 6, -2]}]}
    with pytest.raises(RequestError, match=r"^model 'lookup': input 'ids' holds -2 at \[2\], outside its vocabulary "
                                           r"of 7 "):
        decode_request(json.dumps(body).encode(), model)
    body["inputs"][0]["data"] = [3, 6, 0]
    np.testing.assert_array_equal(decode_request(json.dumps(body).encode(), model).feeds["ids"], [3, 6, 0])


def test_predict_command_refuses_a_file_of_ids_past_the_vocabulary(run_cli, tmp_path):
    _embedder(tmp_path)
    np.savez(tmp_path / "ids.npz", **_feeds(token_type_ids=((0, 1), 5)))
    result = run_cli("predict", tmp_path / "emb.onnx", "-i", tmp_path / "ids.npz")
    assert (result.code, result.err) == (1, "error: input 'token_type_ids' holds 5 at [0, 1], outside its "
                                            "vocabulary of 2 (ids 0 to 1); give ids from the tokenizer the model "
                                            "was made with\n")
