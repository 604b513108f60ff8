"""The embedding API: onnxkit.runtime.load / Model.predict against plain onnxruntime and numpy."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import threading

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxkit import runtime, zoo
from onnxkit.errors import OnnxkitError

RNG = np.random.default_rng(0)
W1 = RNG.normal(size=(4, 8)).astype(np.float32)
B1 = RNG.normal(size=8).astype(np.float32)
W2 = RNG.normal(size=(8, 3)).astype(np.float32)
B2 = RNG.normal(size=3).astype(np.float32)


def _model(nodes, inputs, outputs, initializers=(), metadata=None) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, [numpy_helper.from_array(a, n) for n, a in initializers])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model, full_check=True)
    return model


def mlp(labels: list[str] | None = ("a", "b", "c")) -> onnx.ModelProto:
    """x [batch, 4] -> Linear(8) -> Relu -> Linear(3) -> logits [batch, 3]."""
    meta = {"onnxkit.task": "classification"}
    if labels is not None:
        meta["onnxkit.labels"] = json.dumps(list(labels))
    return _model(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h0"]),
            helper.make_node("Add", ["h0", "b1"], ["h1"]),
            helper.make_node("Relu", ["h1"], ["h"]),
            helper.make_node("MatMul", ["h", "w2"], ["o0"]),
            helper.make_node("Add", ["o0", "b2"], ["logits"]),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        [("w1", W1), ("b1", B1), ("w2", W2), ("b2", B2)],
        meta,
    )


def mlp_numpy(x: np.ndarray) -> np.ndarray:
    return np.maximum(x @ W1 + B1, 0) @ W2 + B2


def masked_sum() -> onnx.ModelProto:
    """ids, mask int64 [batch, seq] -> total float [batch, 1] = sum(ids * mask) per row."""
    return _model(
        [
            helper.make_node("Mul", ["ids", "mask"], ["prod"]),
            helper.make_node("Cast", ["prod"], ["prodf"], to=TensorProto.FLOAT),
            helper.make_node("ReduceSum", ["prodf", "axes"], ["total"], keepdims=1),
        ],
        [
            helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("mask", TensorProto.INT64, ["batch", "seq"]),
        ],
        [helper.make_tensor_value_info("total", TensorProto.FLOAT, ["batch", 1])],
        [("axes", np.array([1], dtype=np.int64))],
        {"onnxkit.task": "regression"},
    )


def fixed_relu() -> onnx.ModelProto:
    """x float [2, 3] (no batch axis) -> y = relu(x)."""
    return _model(
        [helper.make_node("Relu", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
    )


@pytest.fixture(scope="module")
def mlp_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "tiny-mlp.onnx"
    onnx.save(mlp(), path)
    return path


def plain_session(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def test_import_loads_neither_onnx_nor_click_nor_the_training_package(mlp_path):
    code = textwrap.dedent(f"""
        import sys
        import numpy as np
        from onnxkit import runtime
        model = runtime.load({str(mlp_path)!r}, warmup=True)
        print(model.predict(np.ones((2, 4), np.float32)).labels)
        heavy = [m for m in sys.modules if m in ("onnx", "click", "torch", "onnxkit.nn", "onnxkit.cli")
                 or m.startswith(("onnxruntime.training", "onnx.", "onnxkit.train"))]
        print(heavy)
        # the README's promise: numpy and onnxruntime only (no scikit-learn, Pillow, tokenizers, server stack)
        print(sorted({{m.split(".")[0] for m in sys.modules}} - set(sys.stdlib_module_names) - before))
    """)
    code = "import sys; before = {m.split('.')[0] for m in sys.modules}\n" + code
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    labels, heavy, packages = out.stdout.strip().splitlines()
    assert heavy == "[]"
    assert packages == "['numpy', 'onnxkit', 'onnxruntime']", packages
    assert labels.startswith("['")


@pytest.mark.parametrize("name", ["digits-cnn", "text-transformer", "binary-classifier"])
def test_outputs_equal_a_plain_inference_session(name):
    proto = zoo.build_model(name)
    model = runtime.load(proto.SerializeToString())
    if name == "text-transformer":
        ids = RNG.integers(0, 100, size=(5, 12))
        feeds = {"input_ids": ids, "attention_mask": (ids > 10).astype(np.int64)}
    else:
        spec = model.inputs[0]
        feeds = {spec.name: RNG.normal(size=(9, *spec.shape[1:])).astype(np.float32)}
    expected = plain_session(proto, feeds)
    got = model.predict(feeds)
    assert list(got.outputs) == [o.name for o in proto.graph.output]
    for a, b in zip(got.outputs.values(), expected, strict=True):
        np.testing.assert_array_equal(a, b)


def test_matches_numpy_for_arrays_dicts_keywords_and_lists(mlp_path):
    model = runtime.load(mlp_path)
    x = RNG.normal(size=(6, 4))  # float64: cast to the model's float32
    expected = mlp_numpy(x.astype(np.float32))
    for result in (
        model.predict(x),
        model.predict({"x": x}),
        model.predict(x=x),
        model.predict(x.tolist()),
        model(x),  # a Model is called as its predict
        model(x=x),
    ):
        np.testing.assert_allclose(result.scores, expected, rtol=1e-5, atol=1e-5)
        assert result["logits"] is result.scores


def test_labels_classes_and_top_k(mlp_path):
    model = runtime.load(mlp_path)
    assert model.class_names == ("a", "b", "c") and model.task == "classification"
    x = RNG.normal(size=(20, 4)).astype(np.float32)
    result = model.predict(x)
    scores = mlp_numpy(x)
    assert result.labels == ["abc"[i] for i in scores.argmax(1)]
    top = result.top_k(2)
    for row, pairs in zip(scores, top, strict=True):
        order = np.argsort(-row)[:2]
        assert [label for label, _ in pairs] == ["abc"[i] for i in order]
        np.testing.assert_allclose([s for _, s in pairs], row[order], rtol=1e-5)
    as_json = json.loads(json.dumps(result.to_dict(top_k=1)))
    assert as_json["labels"] == result.labels
    assert [row[0]["label"] for row in as_json["top_k"]] == result.labels
    assert "logits" in result and "probs" not in result  # was KeyError: 0, from Python's fallback to result[0]
    with pytest.raises(TypeError, match=r"^a Prediction is not iterable: iterate over .outputs \(by name\)"):
        list(result)
    for as_array in (np.asarray, lambda r: np.argmax(r, axis=1)):  # numpy's "Could not convert object to sequence"
        with pytest.raises(TypeError, match=r"^a Prediction is not an array: take .scores \(output 'logits'\), "
                                            r"\.classes, \.probabilities\(\) or an output by name, "
                                            r"prediction\['logits'\]$"):
            as_array(result)


def test_an_unknown_output_and_nan_scores_are_onnxkit_errors(mlp_path):
    model = runtime.load(mlp_path)
    x = RNG.normal(size=(4, 4)).astype(np.float32)
    x[[1, 3], 2] = np.nan
    result = model.predict(x)
    with pytest.raises(KeyError) as raised:  # a mapping's KeyError, unquoted, and the documented error type
        result["nope"]
    assert isinstance(raised.value, runtime.OnnxkitError)
    assert str(raised.value) == "no output 'nope'; the model's outputs: logits"
    # argmax of NaN scores answered class 0 ('a') for those rows
    message = r"^2 rows \(1, 3\) scored NaN, so no class is best; check those rows' inputs for NaN, or read the scores$"
    for read in (lambda: result.labels, lambda: result.classes, lambda: result.top_k(1)):
        with pytest.raises(runtime.OnnxkitError, match=message):
            read()
    assert np.isnan(result.scores[[1, 3]]).all() and np.isfinite(result.scores[[0, 2]]).all()
    for k in (0, 1.5, "2", True):  # 1.5 was 'slice indices must be integers', "2" "'<' not supported"
        with pytest.raises(runtime.OnnxkitError, match=rf"^top-k needs a whole number k >= 1, got {k!r}$"):
            model.predict(x[[0, 2]]).top_k(k)


def test_binary_classifier_reads_its_single_logit_as_two_classes():
    model = runtime.load(zoo.build_model("binary-classifier").SerializeToString())
    x = np.linspace(-3, 3, 11, dtype=np.float32)[:, None]
    result = model.predict(x)
    logits = result.scores[:, 0]
    assert result.labels == ["positive" if v > 0 else "negative" for v in logits]
    assert [len(row) for row in result.top_k(5)] == [2] * 11


def test_a_binary_classifier_that_outputs_a_probability_thresholds_it_at_one_half():
    # what fit writes for a model ending in Sigmoid: its column is p(positive), not a logit
    from onnx import helper

    proto = zoo.build_model("binary-classifier")
    proto.graph.node.append(helper.make_node("Sigmoid", [proto.graph.output[0].name], ["p"]))
    proto.graph.output[0].name = "p"
    helper.set_model_props(proto, {**{m.key: m.value for m in proto.metadata_props}, "onnxkit.scores": "probabilities"})
    model = runtime.load(proto.SerializeToString())
    result = model.predict(np.linspace(-3, 3, 11, dtype=np.float32)[:, None])
    p = result.scores[:, 0]
    assert result.labels == ["positive" if v > 0.5 else "negative" for v in p]
    np.testing.assert_allclose(result.probabilities(), np.stack([1 - p, p], axis=1), rtol=1e-6)
    from onnxkit.serve.protocol import _classify  # the server's classification extension reads it alike

    top = _classify(model, {"p": result.scores}, 1, {})
    assert [entry.split(":")[2] for entry in top[:, 0]] == result.labels


def test_models_without_labels_give_indices_and_regression_gives_no_classes():
    unnamed = runtime.load(mlp(labels=None).SerializeToString())
    result = unnamed.predict(np.eye(4, dtype=np.float32))
    assert result.labels is None
    assert [row[0][0] for row in result.top_k(1)] == list(mlp_numpy(np.eye(4, dtype=np.float32)).argmax(1))
    regression = runtime.load(masked_sum().SerializeToString())
    with pytest.raises(OnnxkitError, match="regression model"):
        regression.predict(ids=[[1, 2]], mask=[[1, 1]]).top_k(1)


def test_two_int64_inputs_and_symbolic_dims():
    model = runtime.load(masked_sum().SerializeToString())
    ids = RNG.integers(0, 50, size=(4, 7))
    mask = RNG.integers(0, 2, size=(4, 7))
    result = model.predict(ids=ids, mask=mask)
    np.testing.assert_array_equal(result["total"][:, 0], (ids * mask).sum(1).astype(np.float32))
    with pytest.raises(OnnxkitError, match="dimension 'seq' is 7 in input 'ids' but 6 in input 'mask'"):
        model.predict(ids=ids, mask=mask[:, :6])


@pytest.mark.parametrize(
    ("model", "value", "message"),
    [
        ("mlp", {"y": np.zeros((1, 4))}, r"no input 'y'.*Its inputs: x float32 \[batch, 4\]"),
        ("mlp", {"xx": np.zeros((1, 4))}, r"Did you mean: x\?"),
        ("mlp", np.zeros(4), r"needs 2 dimension\(s\) \[batch, 4\], got shape \(4,\); for one example pass x\[None\]"),
        ("mlp", np.zeros((2, 5)), r"dimension 1 must be 4, got shape \(2, 5\)"),
        # flat rows of an image's size: it said only "needs 4 dimension(s) [batch, 1, 8, 8], got shape (3, 64)"
        ("cnn", np.zeros((3, 64)), r"got shape \(3, 64\); each row holds 64 values, as the input's: "
                                   r"x\.reshape\(len\(x\), 1, 8, 8\)$"),
        ("cnn", np.zeros((1, 8, 8)), r"got shape \(1, 8, 8\); for one example pass x\[None\] or \[x\]$"),
        ("mlp", [[1, 2, 3, 4], [1, 2]], r"cannot make an array .* equally long nested lists"),
        ("mlp", np.array([["a", "b", "c", "d"]]), r"expects float32 values, got <U1"),
        (
            "sum",
            {"ids": np.zeros((1, 2)), "mask": np.zeros((1, 2), np.int64)},
            r"expects int64 values, got float64; convert with \.astype",
        ),
        ("sum", {"ids": np.zeros((1, 2), np.int64)}, r"missing model input\(s\): mask int64 \[batch, seq\]"),
        ("sum", np.zeros((1, 2), np.int64), r"has 2 inputs \(ids, mask\); pass a dict or keywords"),
        ("fixed", np.zeros((3, 4), np.float32), r"dimension 1 must be 3"),  # any rows: run 2 at a time
    ],
)
def test_bad_inputs_get_one_clear_error(model, value, message):
    proto = {"mlp": mlp, "sum": masked_sum, "fixed": fixed_relu, "cnn": lambda: zoo.build_model("digits-cnn")}[model]()
    with pytest.raises(OnnxkitError, match=message):
        runtime.load(proto.SerializeToString()).predict(value)


def test_pillow_images_are_read_as_the_predict_command_reads_image_files(run_cli, tmp_path):
    # np.asarray of one was "input 'image' needs 4 dimension(s) [batch, 1, 8, 8], got shape (8, 8)", and its bytes
    # were not scaled to [0, 1] as the predict command and training scale an image's
    from PIL import Image

    proto = zoo.build_model("digits-cnn")
    model = runtime.load(proto.SerializeToString())
    gray = RNG.integers(0, 256, (2, 8, 8), dtype=np.uint8)
    images = [Image.fromarray(g) for g in gray]
    expected = plain_session(proto, {model.inputs[0].name: (gray[:, None] / 255).astype(np.float32)})[0]
    np.testing.assert_allclose(model.predict(images).scores, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model(images[1]).scores, expected[1:], rtol=1e-5, atol=1e-6)
    large = Image.fromarray(RNG.integers(0, 256, (20, 16, 3), dtype=np.uint8))  # RGB, 16 wide: gray, resized
    large.save(tmp_path / "large.png")
    onnx.save(proto, tmp_path / "cnn.onnx")
    shown = run_cli("predict", tmp_path / "cnn.onnx", "-i", tmp_path / "large.png", "-o", tmp_path / "p.npy")
    assert shown.code == 0, shown.err
    np.testing.assert_allclose(model.predict(large).scores, np.load(tmp_path / "p.npy"), rtol=1e-6)


def test_a_list_of_dicts_says_what_to_pass(mlp_path):
    # it was "input 'x' expects float32 values, got object"
    model = runtime.load(mlp_path)
    with pytest.raises(OnnxkitError, match=r"^predict takes rows as arrays or lists, not a list of dicts: pass "
                                           r"pandas.DataFrame\(rows\), read by its column names, or one dict of "
                                           r"arrays by input name \(x\)$"):
        model.predict([{"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0}])


def _argmax_only(labels: list[str]) -> onnx.ModelProto:
    """x [batch, 4] -> the ArgMax of mlp's logits alone: label int64 [batch] (a classifier exported as its classes)."""
    proto = mlp(labels)
    proto.graph.node.append(helper.make_node("ArgMax", ["logits"], ["label"], axis=1, keepdims=0))
    del proto.graph.output[:]
    proto.graph.output.append(helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]))
    return proto


def test_a_model_that_answers_class_ids_gives_them_as_classes_and_labels(run_cli, tmp_path):
    # its classes and labels were "class predictions need [batch, classes] scores, got shape (6,)", and so was the
    # predict command's table; an id past the names read one from the end where the id was negative
    x = RNG.normal(size=(6, 4)).astype(np.float32)
    expected = mlp_numpy(x).argmax(axis=1)
    prediction = runtime.load(_argmax_only(["a", "b", "c"]).SerializeToString()).predict(x)
    np.testing.assert_array_equal(prediction.classes, expected)
    assert prediction.labels == [("a", "b", "c")[i] for i in expected]
    with pytest.raises(OnnxkitError, match=r"^output 'label' holds class ids, not scores: read .classes or .labels"):
        prediction.top_k(2)
    onnx.save(_argmax_only(["a", "b", "c"]), tmp_path / "ids.onnx")
    np.save(tmp_path / "x.npy", x)
    shown = run_cli("predict", tmp_path / "ids.onnx", "-i", tmp_path / "x.npy")
    assert (shown.code, shown.out.splitlines()) == (0, ["row  label"] + [f"{i:<4} {'abc'[c]}"
                                                                         for i, c in enumerate(expected)])
    top = expected.max()  # named by too few classes, the largest id is past them
    few = runtime.load(_argmax_only(["a", "b", "c"][:top]).SerializeToString()).predict(x)
    with pytest.raises(OnnxkitError, match=rf"^output 'label' holds class id {top} \(row {expected.argmax()}\), "
                                           rf"outside the {top} classes the model names \(.*\); fix its "
                                           r"onnxkit.labels metadata"):
        _ = few.labels


def test_inputs_either_positional_or_keywords(mlp_path):
    with pytest.raises(OnnxkitError, match="not both"):
        runtime.load(mlp_path).predict(np.zeros((1, 4)), x=np.zeros((1, 4)))
    with pytest.raises(OnnxkitError, match=r"has no input 'batch_size' \(its inputs: x\); options such as batch_size "
                                           r"are load\(\)'s$"):
        runtime.load(mlp_path).predict(np.zeros((1, 4)), batch_size=0)  # was told "not both"


def test_load_errors(tmp_path, mlp_path):
    with pytest.raises(OnnxkitError, match="no such file"):
        runtime.load(tmp_path / "missing.onnx")
    (tmp_path / "folder.onnx").mkdir()  # was 'no such file'
    with pytest.raises(OnnxkitError, match=r"folder.onnx: a folder, not a model \(it holds no .onnx file\); pass the "
                                           r"path of an .onnx model$"):
        runtime.load(tmp_path / "folder.onnx")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(mlp_path.read_bytes()[:50])
    with pytest.raises(OnnxkitError, match=r"broken.onnx: onnxruntime .* cannot load it"):
        runtime.load(broken)
    with pytest.raises(OnnxkitError, match="unknown device 'tpu'"):
        runtime.load(mlp_path, device="tpu")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(OnnxkitError, match="no CUDA support"):
            runtime.load(mlp_path, device="cuda:0")
    with pytest.raises(OnnxkitError, match="unknown optimization level 'max'"):
        runtime.load(mlp_path, optimization="max")
    with pytest.raises(OnnxkitError, match="threads must be 1 or more"):
        runtime.load(mlp_path, threads=0)
    for threads in ("2", 2.0, True):  # were "'<' not supported" and onnxruntime's "incompatible function arguments"
        with pytest.raises(TypeError, match=f"^threads must be an integer, got {threads!r}$"):
            runtime.load(mlp_path, threads=threads)
    assert runtime.load(mlp_path, threads=np.int64(1)).predict(np.ones((1, 4), np.float32)).classes.shape == (1,)
    with pytest.raises(OnnxkitError, match=r"names 2 classes but output 'logits' has 3"):
        runtime.load(mlp(labels=["a", "b"]).SerializeToString())
    bad_json = mlp()
    bad_json.metadata_props[1].value = "a,b,c"
    with pytest.raises(OnnxkitError, match="must be a JSON list of class names"):
        runtime.load(bad_json.SerializeToString())


def test_load_takes_a_model_proto_as_built():
    model = runtime.load(mlp())  # was 'stat: path should be string, ... not ModelProto'
    x = RNG.normal(size=(3, 4)).astype(np.float32)
    np.testing.assert_allclose(model.predict(x)["logits"], mlp_numpy(x), rtol=1e-5, atol=1e-5)
    assert model.name == "g" and model.class_names == ("a", "b", "c")
    with pytest.raises(TypeError, match="^model must be a .onnx path, its bytes or an onnx.ModelProto, not dict$"):
        runtime.load({"x": 1})
    assert runtime.load(bytearray(mlp().SerializeToString())).class_names == ("a", "b", "c")  # was a TypeError
    for option, message in ((dict(spin="no"), "^spin must be True or False, not 'no'$"),  # read as true
                            (dict(warmup="no"), "^warmup must be True or False, not 'no'$"),
                            (dict(name=3), "^name must be a string, not 3$")):
        with pytest.raises(TypeError, match=message):
            runtime.load(mlp(), **option)


def test_a_malformed_device_is_refused_before_any_cuda_check(monkeypatch):
    from onnxkit.runtime import session

    monkeypatch.setattr(session.ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert [session.device_spec(d) for d in ("auto", "CPU", "cuda", "cuda:3")] == [
        ("auto", 0), ("cpu", 0), ("cuda", 0), ("cuda", 3)]
    for device in ("cuda:x", "cuda:", "cuda:-1", "cuda:1.5", "cpu:0", "auto:1", "gpu", " cuda"):
        with pytest.raises(OnnxkitError) as refused:
            session.parse_device(device)
        assert str(refused.value) == (f"unknown device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N' "
                                      "(N a GPU number)")
    with pytest.raises(OnnxkitError, match="'cuda:1': onnxruntime .* here has no CUDA support"):
        session.parse_device("cuda:1")  # well formed: only now is CUDA looked for
    assert session.parse_device("auto") == ("cpu", 0)


def test_large_inputs_run_in_batches_with_the_same_result(mlp_path):
    x = RNG.normal(size=(103, 4)).astype(np.float32)
    whole = runtime.load(mlp_path, batch_size=None).predict(x)
    split = runtime.load(mlp_path, batch_size=10).predict(x)
    np.testing.assert_allclose(split.scores, whole.scores, rtol=1e-6, atol=1e-6)
    assert split.scores.shape == (103, 3)
    fixed = runtime.load(fixed_relu().SerializeToString(), batch_size=1)  # no batch axis: not split
    np.testing.assert_array_equal(fixed.predict(-np.ones((2, 3))).scores, np.zeros((2, 3)))


@pytest.mark.parametrize("replacement", [b"half-written", None])
def test_a_model_file_replaced_or_removed_while_loaded_keeps_the_loaded_model(tmp_path, replacement):
    """The session keeps the model it loaded; the graph read later (is a model whose rows mix quantized per run?)
    parsed the file in its place: protobuf's DecodeError from predict on more rows than batch_size."""
    proto = _model([helper.make_node("ReduceMean", ["x"], ["m"], axes=[0], keepdims=1),
                    helper.make_node("Sub", ["x", "m"], ["y"])],  # each row less the batch's mean: rows mix
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])])
    path = tmp_path / "centre.onnx"
    onnx.save(proto, path)
    model = runtime.load(path, batch_size=2)
    path.unlink()
    if replacement is not None:
        path.write_bytes(replacement)
    x = RNG.normal(size=(5, 3)).astype(np.float32)
    np.testing.assert_allclose(model.predict(x)["y"], x - x.mean(axis=0), rtol=1e-5, atol=1e-6)  # run whole
    assert not model.rows_out


def test_io_binding_path_gives_the_same_outputs(mlp_path):
    x = RNG.normal(size=(7, 4)).astype(np.float32)
    bound = runtime.load(mlp_path, io_binding=True)
    assert bound.io_binding and bound.device == "cpu" and bound.providers == ["CPUExecutionProvider"]
    np.testing.assert_array_equal(bound.predict(x).scores, runtime.load(mlp_path).predict(x).scores)


def test_concurrent_calls_from_many_threads(mlp_path):
    model = runtime.load(mlp_path, threads=1)
    inputs = [RNG.normal(size=(1 + i % 5, 4)).astype(np.float32) for i in range(64)]
    results: dict[int, np.ndarray] = {}

    def work(offset: int) -> None:
        for i in range(offset, len(inputs), 8):
            results[i] = model.predict(inputs[i]).scores

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, x in enumerate(inputs):
        np.testing.assert_allclose(results[i], mlp_numpy(x), rtol=1e-5, atol=1e-5)


def test_session_options_and_saving_the_optimized_model(tmp_path, mlp_path):
    x = RNG.normal(size=(3, 4)).astype(np.float32)
    expected = mlp_numpy(x)
    for level in ("disabled", "basic", "extended", "all"):
        model = runtime.load(mlp_path, threads=1, optimization=level)
        np.testing.assert_allclose(model.predict(x).scores, expected, rtol=1e-5, atol=1e-5)
    saved = tmp_path / "optimized.onnx"
    runtime.load(mlp_path, optimization="basic", optimized_model_path=saved)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["optimized.onnx"]  # no temp files left
    np.testing.assert_allclose(runtime.load(saved).predict(x).scores, expected, rtol=1e-5, atol=1e-5)


def test_warmup_and_description():
    model = runtime.load(masked_sum().SerializeToString(), warmup=True, name="summer")
    assert model.name == "summer"
    assert model.describe() == "(ids int64 [batch, seq], mask int64 [batch, seq]) -> (total float32 [batch, 1])"
    assert model.batchable and not runtime.load(fixed_relu().SerializeToString()).batchable


def test_a_failure_inside_the_model_is_one_clear_error():
    """A token id past an embedding table that `Model.value_checks` does not see (a Constant node's; an
    initializer's is refused before the run, test_input_values.py) fails in onnxruntime's Gather: an OnnxkitError
    naming the model and the node, not onnxruntime's raw InvalidArgument (the CLI printed a traceback)."""
    table = np.arange(20, dtype=np.float32).reshape(10, 2)
    proto = _model(
        [helper.make_node("Constant", [], ["table"], value=numpy_helper.from_array(table)),
         helper.make_node("Gather", ["table", "ids"], ["vectors"], name="embed")],
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("vectors", TensorProto.FLOAT, ["batch", "seq", 2])],
    )
    model = runtime.load(proto.SerializeToString(), name="words")
    np.testing.assert_array_equal(model.predict(np.array([[1, 9]]))["vectors"], table[[[1, 9]]])
    for batch_size in (512, 1):  # in one run, and in batches
        model.batch_size = batch_size
        with pytest.raises(OnnxkitError) as failed:
            model.predict(np.array([[1, 2], [3, 99]]))
        assert str(failed.value) == (
            "model 'words' failed on this input (node 'embed' (Gather): indices element out of data bounds, "
            "idx=99 must be within the inclusive range [-10,9]); check that the values suit the model "
            "(token ids within its vocabulary, say)")


SHAPE_HINT = ("a size fixed inside the model does not fit this input's shape (an export can bake in the example's "
              "sizes: re-export with those axes dynamic, or give inputs shaped as at export)")


def _seq_fixed_by_export(op: str) -> onnx.ModelProto:
    """x [batch, seq, 4] through one node with the sequence length 3 fixed inside it, as a PyTorch
    TorchScript export (dynamic_axes on seq) bakes the example's length into an attention Reshape."""
    if op == "Reshape":  # heads split with the traced length as a constant: [0, 3, 2, 2]
        nodes = [helper.make_node("Reshape", ["x", "shape"], ["y"], name="attn/Reshape_4")]
        init, shape = np.array([0, 3, 2, 2]), ["batch", 3, 2, 2]
    elif op == "MatMul":  # a [2, 3] pooling matrix over the sequence axis
        nodes = [helper.make_node("MatMul", ["shape", "x"], ["y"], name="attn/MatMul")]
        init, shape = np.ones((2, 3), np.float32), ["batch", 2, 4]
    else:  # a [3, 4] position table added to every row
        nodes, init = [helper.make_node("Add", ["x", "shape"], ["y"], name="pos/Add")], np.ones((3, 4), np.float32)
        shape = ["batch", 3, 4]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 4])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], [("shape", init)])


@pytest.mark.parametrize(("op", "reason"), [
    ("Reshape", "node 'attn/Reshape_4' (Reshape): The input tensor cannot be reshaped to the requested shape. "
                "Input shape:{2,5,4}, requested shape:{2,3,2,2}"),
    ("MatMul", "node 'attn/MatMul' (MatMul): MatMul dimension mismatch"),  # no 'matmul_helper.h:59 Compute'
    ("Add", "node 'pos/Add' (Add): Attempting to broadcast an axis by a dimension other than 1. 3 by 5"),
])
def test_a_size_fixed_inside_the_model_is_not_blamed_on_the_values(op, reason):
    """A sequence length the export fixed failed in a Reshape, MatMul or Add, and the error said to check
    that the token ids are within the vocabulary: it says the model fixes a size, and what to do."""
    model = runtime.load(_seq_fixed_by_export(op).SerializeToString(), name="encoder")
    assert model.predict(np.ones((2, 3, 4), np.float32))["y"].shape[0] == 2  # the exported length runs
    with pytest.raises(OnnxkitError) as failed:
        model.predict(np.ones((2, 5, 4), np.float32))
    assert str(failed.value) == f"model 'encoder' failed on this input ({reason}); {SHAPE_HINT}"


def test_the_hint_for_a_failure_inside_the_model_follows_its_message():
    from onnxkit.evaluate import _run
    from onnxkit.runtime.session import run_failure_hint

    def failed(op: str, message: str) -> Exception:
        return RuntimeError(f"[ONNXRuntimeError] : 1 : FAIL : Non-zero status code returned while running {op} node. "
                            f"Name:'n' Status Message: {message}")

    assert run_failure_hint(failed("Gather", "indices element out of data bounds, idx=9")).endswith("vocabulary, say)")
    assert run_failure_hint(failed("Concat", "concatbase.h:135 PrepareForComputeImpl Non concat axis dimensions "
                                             "must match: Axis 1 has mismatched dimensions of 4 and 3")) == SHAPE_HINT
    neutral = failed("Loop", "the loop's body returned no condition")
    assert run_failure_hint(neutral) == "check that the input suits the model"
    assert run_failure_hint(neutral, otherwise="check the data") == "check the data"
    # onnxkit eval gives the same hint, after its own opening
    session = runtime.load(_seq_fixed_by_export("Reshape").SerializeToString()).session
    with pytest.raises(OnnxkitError) as e:
        _run(session, ["y"], {"x": np.ones((2, 5, 4), np.float32)}, None)
    assert str(e.value).startswith("onnxruntime could not run the model on this data (node 'attn/Reshape_4' (Reshape)")
    assert str(e.value).endswith(f"); {SHAPE_HINT}") and "\n" not in str(e.value)


def test_a_scalar_input_stays_a_scalar():
    scalar = [helper.make_tensor_value_info(name, TensorProto.FLOAT, []) for name in ("t", "y")]
    doubled = _model([helper.make_node("Add", ["t", "t"], ["y"])], scalar[:1], scalar[1:])
    model = runtime.load(doubled.SerializeToString())
    feeds = model.prepare({"t": 1.5})
    assert feeds["t"].shape == ()  # np.ascontiguousarray made it [1]: answers came back shaped [1]
    assert model.run(feeds)["y"].shape == () and float(model.run(feeds)["y"]) == 3.0


def test_a_run_can_give_back_the_memory_its_arena_grew_by(tmp_path):
    """ONNX Runtime's arena keeps the most memory any run took: one huge request left a server at
    700 MB for good; `release_memory` (the server's choice for runs bigger than any batch) frees it."""
    path = tmp_path / "digits.onnx"
    onnx.save(zoo.build_model("digits-cnn"), path)

    def grown(release: bool) -> float:
        code = textwrap.dedent(f"""
            import numpy as np
            from onnxkit import runtime
            rss = lambda: int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
            model = runtime.load({str(path)!r}, device="cpu")
            model.run({{"image": np.zeros((64, 1, 8, 8), np.float32)}})
            before = rss()
            outputs = model.run({{"image": np.zeros((20000, 1, 8, 8), np.float32)}}, release_memory={release})
            assert outputs["logits"].shape == (20000, 10)
            print(rss() - before)
        """)
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        return float(done.stdout)

    kept, released = grown(False), grown(True)
    assert kept > 150 and released < kept / 3, (kept, released)  # MB: 250 and 0 when written


def identity_of(elem: int) -> onnx.ModelProto:
    graph = helper.make_graph([helper.make_node("Identity", ["ids"], ["out"])], "ids",
                              [helper.make_tensor_value_info("ids", elem, ["n", 2])],
                              [helper.make_tensor_value_info("out", elem, ["n", 2])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize("value,message", [
    (np.array([[2**40, 3]]), "1099511627776 is outside [-2147483648, 2147483647]"),  # int64 -> int32 wrapped to 0
    ([[2**40, 3]], "1099511627776 is outside"),
    (np.array([[4294967295, 1]], np.uint32), "4294967295 is outside"),  # became -1
])
def test_integers_an_input_type_cannot_hold_are_refused_not_wrapped(value, message):
    model = runtime.load(identity_of(TensorProto.INT32).SerializeToString(), name="ids")
    with pytest.raises(OnnxkitError, match=f"^input 'ids': a value does not fit int32 \\({re.escape(message)}"):
        model.predict(value)
    assert model.predict(np.array([[2**31 - 1, -2**31]]))["out"].tolist() == [[2**31 - 1, -2**31]]
    wide = runtime.load(identity_of(TensorProto.INT64).SerializeToString(), name="ids")
    for huge in ([[2**63, 3]], [[99999999999999999999, 3]]):  # float64 and object arrays: was 'got float64'
        with pytest.raises(OnnxkitError, match="^input 'ids': a value does not fit int64"):
            wide.predict(huge)


def test_a_csv_integer_an_input_type_cannot_hold_is_one_line(run_cli, tmp_path):
    onnx.save(identity_of(TensorProto.INT32), tmp_path / "ids.onnx")
    (tmp_path / "big.csv").write_text("5,3\n1099511627776,3\n")  # was an OverflowError traceback
    result = run_cli("predict", tmp_path / "ids.onnx", "--input", tmp_path / "big.csv")
    assert (result.code, result.err) == (1, f"error: {tmp_path / 'big.csv'}:2: column 1 holds "
                                            "1099511627776, which int32 cannot hold ([-2147483648, 2147483647])\n")


def test_an_input_declared_without_a_shape_takes_any_and_warmup_failures_are_onnxkit_errors():
    # onnxruntime shows a shapeless input as [] (a scalar's shape): every array was refused as 'needs 0 dimension(s)'
    weight = RNG.normal(size=(4, 3)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "shapeless",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(weight, "w")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = RNG.normal(size=(5, 4)).astype(np.float32)
    np.testing.assert_allclose(runtime.load(proto).predict(x)["y"], x @ weight, rtol=1e-5, atol=1e-6)
    with pytest.raises(runtime.OnnxkitError, match=r"^model 'shapeless' failed on this input \(MatMul"):
        runtime.load(proto, warmup=True)  # its example is a scalar, which MatMul refuses: was onnxruntime's Fail


def test_probabilities_of_a_foreign_softmax_output_are_its_own():
    # no metadata says a foreign model ends in Softmax: probabilities() took them for logits (0.44 for its 0.64)
    weight = RNG.normal(size=(4, 3)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["z"]),
                               helper.make_node("Softmax", ["z"], ["probs"], axis=-1)], "soft",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 3])],
                              [numpy_helper.from_array(weight, "w")])
    result = runtime.load(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])).predict(
        RNG.normal(size=(6, 4)).astype(np.float32))
    np.testing.assert_array_equal(result.probabilities(), result["probs"])
    logits = runtime.load(mlp()).predict(RNG.normal(size=(6, 4)).astype(np.float32))  # logits: softmaxed, as before
    z = logits.scores.astype(np.float64)
    np.testing.assert_allclose(logits.probabilities(), np.exp(z) / np.exp(z).sum(1, keepdims=True), rtol=1e-5)


def _one_op(op: str, out_shape: list, **attributes) -> onnx.ModelProto:
    """x float [batch, 3] -> op(x), its output declared `out_shape`."""
    graph = helper.make_graph([helper.make_node(op, ["x"], ["y"], **attributes)], op.lower(),
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_dynamically_quantized_models_rows_count_as_its_own():
    # its activations take each run's range, so a row moves with its company by design (a MiniLM logit by up to 19%
    # of the range): without knowing so, serve ran every request of a dynamic int8 model alone
    from onnxkit import zoo
    from onnxkit.quantize import quantize

    model = zoo.build_model("digits-mlp")
    quantized = quantize(model, mode="dynamic", measure_latency=False).model
    assert "DynamicQuantizeLinear" in {n.op_type for n in quantized.graph.node}
    assert runtime.load(quantized).rows_out and runtime.load(model).rows_out


def _batch_centred() -> onnx.ModelProto:
    """x - mean(x over the batch): an output of a row per input row that depends on the other rows."""
    graph = helper.make_graph([helper.make_node("ReduceMean", ["x"], ["m"], axes=[0], keepdims=1),
                               helper.make_node("Sub", ["x", "m"], ["y"])], "centred",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _running_total() -> onnx.ModelProto:
    """A cumulative sum over the batch: row k depends on the rows before it."""
    axis = numpy_helper.from_array(np.array(0, np.int64), "axis")
    graph = helper.make_graph([helper.make_node("CumSum", ["x", "axis"], ["y"])], "running",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])], [axis])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])


def _symbolic_features() -> onnx.ModelProto:
    """x [batch, f] @ w [3, 3]: a feature size named, not given, as an export with dynamic axes may leave it."""
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "mm",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "f"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
                              [numpy_helper.from_array(np.eye(3, dtype=np.float32), "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize(("proto", "independent"), [
    (_one_op("Relu", ["batch", 3]), True),
    (_one_op("ReduceSum", [1, 1], keepdims=1), False),  # one value for all the rows
    (_one_op("Transpose", [3, "batch"]), False),  # rows on its second axis
    (_one_op("ReduceSum", ["batch", 1], keepdims=1), False),  # declared per row, but not: probed
    (_batch_centred(), False),  # a row per row, each depending on the others
    (_running_total(), False),  # the first row as alone, the others not
    (_symbolic_features(), True),  # the probe cannot run it (8 features for 3): judged by its shapes, as before
    (_one_op("Relu", [1, 3]), True),  # a row each, declared [1] as onnxmltools declares a LightGBM label: probed
], ids=["relu", "total", "transpose", "mislabelled-total", "batch-centred", "running-total", "symbolic-features",
        "declared-1"])
def test_rows_run_in_batches_only_where_each_output_row_is_its_own_input_rows_alone(proto, independent, run_cli,
                                                                                    tmp_path):
    # a model whose outputs did not follow the rows was split into batches anyway, or refused (run it whole:
    # batch_size=N); a column sum's [3] or a transpose's [3, N] of 3 rows passed for rows, their pieces concatenated
    x = RNG.normal(size=(10, 3)).astype(np.float32)
    model = runtime.load(proto, batch_size=4)
    assert model.rows_out is independent
    whole = runtime.load(proto, batch_size=None).predict(x)["y"]
    np.testing.assert_allclose(model.predict(x)["y"], whole, rtol=1e-6)
    onnx.save(proto, tmp_path / "m.onnx")
    np.save(tmp_path / "x.npy", np.ones((600, 3), np.float32))
    assert run_cli("predict", tmp_path / "m.onnx", "-i", tmp_path / "x.npy", "-o", tmp_path / "y.npz").code == 0


@pytest.mark.parametrize(("proto", "independent"), [
    (_one_op("Relu", ["batch", 3]), True),
    (_batch_centred(), False),
    (_running_total(), False),
], ids=["relu", "batch-centred", "running-total"])
def test_rows_whose_lone_runs_round_otherwise_are_still_judged_by_their_rows(proto, independent):
    # magika (tf2onnx) sums in its layer norm in another order for one row than for three, and its E[x^2] - E[x]^2
    # made that 1% of a score on the probe's 0/1 bytes: serve ran its requests one at a time, saying its outputs
    # were not one a row. A lone run here moves every value by 1%, as such kernels do; rows mixed with their
    # company (centred on the batch, a running total) must still be told apart
    model = runtime.load(proto)
    exact = model.run
    model.run = lambda feeds: {name: value * (1.01 if len(feeds["x"]) == 1 else 1.0)
                               for name, value in exact(feeds).items()}
    assert model.rows_out is independent


def test_an_output_declared_with_one_row_that_answers_a_row_each_is_a_batch():
    """onnxmltools declares a LightGBM classifier's label [1]: serve said "its outputs are not one a row ... never
    merged into a batch" and its V2 metadata said shape [1] for an output of a row per input row."""
    from onnxkit.serve.protocol import model_metadata

    model = runtime.load(_one_op("Relu", [1, 3]))
    assert model.rows_out and model.outputs[0].shape == (None, 3)
    assert model_metadata(model)["outputs"][0]["shape"] == [-1, 3]
    unprobed = _symbolic_features()
    unprobed.graph.output[0].type.tensor_type.shape.dim[0].dim_value = 1
    assert not runtime.load(unprobed).rows_out  # the probe cannot run it: a declared 1 is no batch then


def test_a_string_normalizer_whose_locale_is_missing_runs_in_c_utf8(tmp_path):
    """skl2onnx's TfidfVectorizer lowercases in a StringNormalizer of locale en_US.UTF-8, which most container
    images lack: onnxruntime refused to load the model ('Failed to construct locale'), and so did every command.
    A locale no system has stands in for it here."""
    lower = helper.make_node("StringNormalizer", ["text"], ["lower"], case_change_action="LOWER",
                             locale="xx_XX.UTF-8")
    proto = _model([lower], [helper.make_tensor_value_info("text", TensorProto.STRING, ["batch"])],
                   [helper.make_tensor_value_info("lower", TensorProto.STRING, ["batch"])])
    onnx.save(proto, tmp_path / "lower.onnx")
    with pytest.raises(Exception, match="locale"):
        ort.InferenceSession(str(tmp_path / "lower.onnx"), providers=["CPUExecutionProvider"])
    out = runtime.load(tmp_path / "lower.onnx").run({"text": np.array(["Good FUN", "ÉCOLE"], dtype=object)})
    assert out["lower"].tolist() == ["good fun", "école"]


def test_predict_given_a_split_or_a_dataset_says_which_arrays_to_pass():
    # model.predict(dataset.test) was "input 'x' expects float32 values, got object"
    from onnxkit.data import dataset_from_arrays

    data = dataset_from_arrays("toy", {"x": RNG.normal(size=(20, 4)).astype(np.float32)}, np.arange(20) % 3)
    model = runtime.load(mlp())
    with pytest.raises(OnnxkitError, match=r"^predict takes arrays, not the Split 'test' \(inputs and labels\): pass "
                                           r"its inputs, model.predict\(split.inputs\)$"):
        model.predict(data.test)
    with pytest.raises(OnnxkitError, match=r"^predict takes arrays, not the Dataset 'toy': pass a split's inputs, "
                                           r"model.predict\(dataset.test.inputs\)$"):
        model.predict(data)
    assert len(model.predict(data.test.inputs).classes) == len(data.test)


def _time_major(steps: int) -> onnx.ModelProto:
    """x [1, 3] (a batch fixed at 1, as a traced export) -> y [steps, 1, 3]: step k is x * (k + 1), the time-major
    layout of a CRNN's output for CTC (ddddocr's [T, 1, classes])."""
    nodes = [helper.make_node("Constant", [], ["scales"], value=numpy_helper.from_array(
        np.arange(1, steps + 1, dtype=np.float32).reshape(steps, 1, 1), "scales")),
        helper.make_node("Mul", ["x", "scales"], ["y"])]
    graph = helper.make_graph(nodes, "time-major", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [steps, 1, 3])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_fixed_batch_models_time_major_output_joins_its_rows_along_its_batch_axis():
    # ddddocr's captcha reader ([1, 1, 64, W] -> [T, 1, 8210]) on 3 images: 'does not have one row per input row
    # ...; run its 3 rows at once: --batch-size 3', which then said the same (its input fixes 1 row)
    x = RNG.normal(size=(3, 3)).astype(np.float32)
    y = runtime.load(_time_major(4)).predict(x)["y"]
    np.testing.assert_allclose(y, np.arange(1, 5, dtype=np.float32)[:, None, None] * x[None], rtol=1e-6)
    with pytest.raises(OnnxkitError, match=r"does not have one row per input row, so the input cannot be split into "
                                           r"batches; give it 1 row at a time, as its inputs fix$"):
        runtime.load(_fixed_rows_of_three()).predict(x)


def _fixed_rows_of_three() -> onnx.ModelProto:
    """x [1, 3] -> y [3, 3]: a batch fixed at 1, and an output that holds it along no axis."""
    graph = helper.make_graph([helper.make_node("Expand", ["x", "shape"], ["y"])], "no rows",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 3])],
                              [numpy_helper.from_array(np.array([3, 3]), "shape")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
