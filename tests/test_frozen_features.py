"""Head-only training on cached features: the same numbers as end-to-end training, the frozen part
run once, Dropout in front of the head kept, and no cut where the features have a sequence dimension."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest
from onnx import numpy_helper
from test_train_resume import mlp_with_batchnorm, weights

from onnxkit import zoo
from onnxkit.files import load_model
from onnxkit.graph_walks import value_types
from onnxkit.train import TrainingInterrupted, fit
from onnxkit.train.frozen_features import cut

pytestmark = pytest.mark.training

COMMON = dict(epochs=3, batch_size=32, lr=1e-2, seed=3, device="cpu")


def losses(run) -> list[float]:
    return [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").open()) if r["event"] == "step"]


def test_a_cached_head_trains_exactly_like_the_whole_model(tmp_path):
    model = mlp_with_batchnorm()  # BatchNorm in the frozen part runs with its statistics frozen
    cached = fit(model, "digits", tmp_path / "cached", train_only=["fc2.*"], dropout=False, **COMMON)
    plain = fit(model, "digits", tmp_path / "plain", train_only=["fc2.*"], dropout=False, cache_features=False,
                **COMMON)
    info = json.loads((tmp_path / "cached" / "run.json").read_text())
    assert info["cached_features"]["boundary"] == ["h3"]  # the ReLU output, right before fc2
    assert json.loads((tmp_path / "plain" / "run.json").read_text())["cached_features"] is None
    np.testing.assert_allclose(losses(tmp_path / "cached"), losses(tmp_path / "plain"), rtol=1e-5)
    a, b = weights(cached.model_path), weights(plain.model_path)
    start = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for name in start:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6, err_msg=name)
        if not name.startswith("fc2."):
            np.testing.assert_array_equal(a[name], start[name], err_msg=name)  # frozen: bit-identical
    assert not np.allclose(a["fc2.weight"], start["fc2.weight"])
    assert cached.metrics["test"]["accuracy"] == pytest.approx(plain.metrics["test"]["accuracy"], abs=1e-9)
    assert [n.op_type for n in load_model(cached.model_path).graph.node] == [n.op_type for n in model.graph.node]


def test_a_cached_head_trains_on_data_without_validation_rows(tmp_path):
    """A dataset whose validation split is empty: its cached features are no rows of the boundary's width (the
    concatenation of no batches raised ValueError)."""
    from onnxkit.data import Dataset, Split, load_dataset

    digits = load_dataset("digits")
    x = digits.validation.inputs["x"]
    empty = Split("validation", {"x": x[:0]}, digits.validation.labels[:0])
    data = Dataset("digits-no-validation", digits.train, empty, digits.test, label_names=digits.label_names)
    result = fit(mlp_with_batchnorm(), data, tmp_path / "run", train_only=["fc2.*"], **COMMON)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["cached_features"]["boundary"] == ["h3"]
    assert result.metrics["test"]["accuracy"] > 0.5


def test_dropout_in_front_of_the_head_trains_with_the_head():
    model = zoo.build_model("digits-mlp")  # Linear, ReLU, Dropout, Linear, ReLU, Dropout, Linear
    split = cut(model, "logits", ["6.weight", "6.bias"], value_types(model), examples=1000)
    assert split is not None
    assert [n.op_type for n in split.head.graph.node] == ["Dropout", "MatMul", "Add"]
    assert {t.name for t in split.head.graph.initializer} == {"6.weight", "6.bias"}
    assert "Dropout" in [n.op_type for n in split.prefix.graph.node]  # the encoder's own, identity at inference


def test_no_cut_when_everything_trains_or_features_have_a_sequence_dimension():
    mlp = zoo.build_model("digits-mlp")
    assert cut(mlp, "logits", [t.name for t in mlp.graph.initializer], value_types(mlp), 1000) is None
    text = zoo.build_model("text-transformer")
    last = [t.name for t in text.graph.initializer if t.name.startswith(("layers.1.", "head."))]
    assert last and cut(text, "logits", last, value_types(text), 1000) is None  # [batch, seq, dim] in between
    assert cut(mlp, "logits", ["6.weight", "6.bias"], value_types(mlp), examples=10**9) is None  # too big to keep


def test_no_cut_where_the_head_reads_a_shape_computed_from_the_input():
    # PyTorch's F.affine_grid(theta, [x.shape[0], ...]) hands the trained part Concat(Shape(x)[:1], ...):
    # a shape vector per batch, not a row per example, so nothing can be cached in front of it
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    frozen = [helper.make_node("MatMul", ["x", "frozen"], ["h"])]
    shape = [helper.make_node("Shape", ["x"], ["shape"]), helper.make_node("Slice", ["shape", "zero", "one"], ["rows"]),
             helper.make_node("Concat", ["rows", "classes"], ["target"], axis=0)]

    def model(head: list) -> object:
        constants = {"zero": [0], "one": [1], "classes": [10]}
        graph = helper.make_graph(
            [*frozen, *shape, *head], "shape into the head",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
            [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
            [numpy_helper.from_array(rng.normal(size=(64, 32)).astype(np.float32), "frozen"),
             numpy_helper.from_array(rng.normal(size=(32, 10)).astype(np.float32), "trained"),
             *(numpy_helper.from_array(np.array(v, np.int64), n) for n, v in constants.items())])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)

    reads_shape = model([helper.make_node("MatMul", ["h", "trained"], ["y"]),
                         helper.make_node("Reshape", ["y", "target"], ["logits"])])
    assert cut(reads_shape, "logits", ["trained"], value_types(reads_shape), examples=1000) is None
    plain = model([helper.make_node("MatMul", ["h", "trained"], ["logits"])])
    assert cut(plain, "logits", ["trained"], value_types(plain), examples=1000).boundary == ["h"]


def test_a_cached_run_resumes_to_the_same_weights(tmp_path):
    model = mlp_with_batchnorm()
    settings = dict(train_only=["fc2.*"], evaluate_test=False, **COMMON)
    straight = fit(model, "digits", tmp_path / "straight", **settings)

    def ctrl_c_at_step_40(record):
        if record["event"] == "step" and record["step"] == 40:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(TrainingInterrupted):
        fit(model, "digits", tmp_path / "resumed", callback=ctrl_c_at_step_40, **settings)
    resumed = fit(resume=tmp_path / "resumed")
    a, b = weights(straight.model_path), weights(resumed.model_path)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.mark.parametrize("flags, cached", [((), True), (("--no-cache-features",), False)])
def test_the_command_line_caches_unless_told_not_to(tmp_path, run_cli, flags, cached):
    path = tmp_path / "mlp.onnx"
    path.write_bytes(zoo.build_model("digits-mlp").SerializeToString())
    result = run_cli("train", path, "--data", "digits", "--train-only", "6.*", "--epochs", "1", "--quiet",
                     *flags, "-o", tmp_path / "run")
    assert result.code == 0, result.err
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert (info["cached_features"] is not None) == cached
    assert info["trainable_parameters"] == 128 * 10 + 10


def test_no_cut_where_the_frozen_part_only_moves_the_input():
    # PyTorch's Conv1d over [batch, seq, features] starts with a Transpose; with a dynamic sequence length
    # training since 2f36ab4, every such model 'ran the frozen part once to cache its output' with 0 frozen
    # parameters (the Transpose); a frozen convolution behind it is still worth caching
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("Transpose", ["x"], ["channels"], perm=[0, 2, 1]),
         helper.make_node("Conv", ["channels", "conv"], ["c"], pads=[1, 1]),
         helper.make_node("GlobalAveragePool", ["c"], ["pooled"]), helper.make_node("Flatten", ["pooled"], ["flat"]),
         helper.make_node("MatMul", ["flat", "head"], ["logits"])], "conv1d over rows",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 5, 4])],  # as training sizes 'seq'
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])],
        [numpy_helper.from_array(rng.normal(size=(8, 4, 3)).astype(np.float32), "conv"),
         numpy_helper.from_array(rng.normal(size=(8, 2)).astype(np.float32), "head")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    assert cut(model, "logits", ["conv", "head"], value_types(model), examples=1000) is None
    assert cut(model, "logits", ["head"], value_types(model), examples=1000).boundary == ["flat"]
