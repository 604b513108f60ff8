"""Weights read only inside a subgraph (nn.EmbeddingBag exports a Loop whose body gathers from the
table): they are parameters, the Loop on their gradient path is refused by name, and frozen they
stay in the training graph."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxkit.errors import OnnxkitError
from onnxkit.train import fit
from onnxkit.train.training_form import find_parameters

pytestmark = pytest.mark.training


def looped(carried_sequence: bool) -> onnx.ModelProto:
    """x [batch, 64] -> a 2-trip Loop whose body reads `bag.weight` [64, 16] from the outer graph (as a
    scan output, or appended to a loop-carried sequence as PyTorch's dynamo exporter writes it) ->
    mean over the trips -> Gemm -> logits [batch, 10]."""
    rng = np.random.default_rng(0)
    body_nodes = [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
                  helper.make_node("MatMul", ["x", "bag.weight"], ["rows"])]
    body_inputs = [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                   helper.make_tensor_value_info("cond_in", TensorProto.BOOL, [])]
    body_outputs = [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, [])]
    seq_type = helper.make_tensor_sequence_value_info("seq_in", TensorProto.FLOAT, None)
    if carried_sequence:
        body_nodes.append(helper.make_node("SequenceInsert", ["seq_in", "rows"], ["seq_out"]))
        body_inputs.append(seq_type)
        body_outputs.append(helper.make_tensor_sequence_value_info("seq_out", TensorProto.FLOAT, None))
    else:
        body_outputs.append(helper.make_tensor_value_info("rows", TensorProto.FLOAT, None))
    body = helper.make_graph(body_nodes, "body", body_inputs, body_outputs)
    if carried_sequence:
        nodes = [helper.make_node("SequenceEmpty", [], ["empty"], dtype=TensorProto.FLOAT),
                 helper.make_node("Loop", ["trips", "go", "empty"], ["seq"], name="bag", body=body),
                 helper.make_node("ConcatFromSequence", ["seq"], ["stacked"], axis=0, new_axis=1)]
    else:
        nodes = [helper.make_node("Loop", ["trips", "go"], ["stacked"], name="bag", body=body)]
    nodes += [helper.make_node("ReduceMean", ["stacked", "zero"], ["mean"], keepdims=0),
              helper.make_node("Gemm", ["mean", "fc.weight", "fc.bias"], ["logits"])]
    graph = helper.make_graph(
        nodes, "looped", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        [numpy_helper.from_array((rng.normal(size=(64, 16)) * 0.1).astype(np.float32), "bag.weight"),
         numpy_helper.from_array((rng.normal(size=(16, 10)) * 0.3).astype(np.float32), "fc.weight"),
         numpy_helper.from_array(np.zeros(10, np.float32), "fc.bias"),
         numpy_helper.from_array(np.array(2, np.int64), "trips"), numpy_helper.from_array(np.array(True), "go"),
         numpy_helper.from_array(np.array([0], np.int64), "zero")],
        value_info=[helper.make_tensor_value_info("mean", TensorProto.FLOAT, ["batch", 16])])  # onnx 1.17 infers none
    return helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 18)])


@pytest.mark.parametrize("carried_sequence", [False, True])
def test_a_table_read_inside_a_loop_is_a_parameter_and_its_loop_is_refused_by_name(tmp_path, carried_sequence):
    model = looped(carried_sequence)
    assert find_parameters(model).parameters == ["bag.weight", "fc.weight", "fc.bias"]
    with pytest.raises(OnnxkitError, match=r"op Loop \(node 'bag'\) has no gradient in the onnx backend; keep the "
                                           r"parameters before it frozen \(freeze / train_only\); its body reads "
                                           r"bag.weight: PyTorch's nn.EmbeddingBag exports so, which nn.Embedding "
                                           r"and a mean over the tokens train as$"):  # freezing before it misses it
        fit(model, "digits", tmp_path / "run", epochs=1, backend="onnx")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("carried_sequence", [False, True])
def test_frozen_the_table_read_inside_a_loop_stays_and_the_rest_trains(tmp_path, carried_sequence):
    result = fit(looped(carried_sequence), "digits", tmp_path / "run", epochs=5, lr=0.02, freeze="bag.*",
                 backend="onnx", cache_features=False)
    trained = {t.name: numpy_helper.to_array(t) for t in onnx.load(result.model_path).graph.initializer}
    given = {t.name: numpy_helper.to_array(t) for t in looped(carried_sequence).graph.initializer}
    np.testing.assert_array_equal(trained["bag.weight"], given["bag.weight"])
    assert np.abs(trained["fc.weight"] - given["fc.weight"]).max() > 1e-3
    assert result.metrics["test"]["accuracy"] > 0.5 and result.history[-1]["val_loss"] < result.history[0]["val_loss"]
