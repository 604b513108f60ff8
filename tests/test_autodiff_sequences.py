"""A tensor split into a sequence and read back at constant positions (PyTorch's dynamo export of
torch.chunk before its optimizer) differentiates as the Split it spells."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxkit.autodiff import add_gradients, missing_rules
from onnxkit.autodiff.check import LOSS, gradcheck, run_gradients, with_projection_loss
from onnxkit.errors import OnnxkitError


def chunked(split: np.ndarray | None, axis: int, keepdims: int, positions: list[int], out_shape: list[int],
            dtype: int = TensorProto.DOUBLE) -> tuple:
    """x [2, 5, 3] * w -> SplitToSequence -> SequenceAt at `positions` -> Concat on axis 1 (the split axis, or the
    axis after the batch where the pieces lose the split axis)."""
    inits = [numpy_helper.from_array(np.linspace(0.5, 1.5, 30).reshape(2, 5, 3).astype(
        helper.tensor_dtype_to_np_dtype(dtype)), "w")]
    inputs = ["y"]
    if split is not None:
        inits.append(numpy_helper.from_array(split.astype(np.int64), "split"))
        inputs.append("split")
    nodes = [helper.make_node("Mul", ["x", "w"], ["y"]),
             helper.make_node("SplitToSequence", inputs, ["seq"], axis=axis, keepdims=keepdims)]
    for k, position in enumerate(positions):
        inits.append(numpy_helper.from_array(np.array(position, np.int64), f"at{k}"))
        nodes.append(helper.make_node("SequenceAt", ["seq", f"at{k}"], [f"piece{k}"]))
    nodes.append(helper.make_node("Concat", [f"piece{k}" for k in range(len(positions))], ["out"], axis=1))
    graph = helper.make_graph(nodes, "chunks", [helper.make_tensor_value_info("x", dtype, [2, 5, 3])],
                              [helper.make_tensor_value_info("out", dtype, out_shape)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


CASES = {  # torch.chunk's scalar size with a shorter last piece, sizes, one piece per element without the axis
    "chunk": (np.array(2), 1, 1, [0, -1], [2, 3, 3]),
    "sizes": (np.array([1, 4]), -2, 1, [1, 1], [2, 8, 3]),
    "unbind": (None, 2, 0, [2, 0], [2, 10]),
}


@pytest.mark.parametrize("case", CASES)
def test_sequence_pieces_differentiate_as_a_split(case):
    model = chunked(*CASES[case])
    x = np.random.default_rng(0).standard_normal((2, 5, 3))
    for name, (analytic, numeric) in gradcheck(model, {"x": x}, ["x", "w"]).items():
        np.testing.assert_allclose(analytic, numeric, atol=1e-6, err_msg=f"d/d{name}")
    assert "SplitToSequence" not in {n.op_type for n in add_gradients(
        with_projection_loss(model), ["w"], LOSS).graph.node}
    assert missing_rules(with_projection_loss(model), ["w"], LOSS) == []  # as the training backend asks first
    split, axis, keepdims, positions, shape = CASES[case]
    model32 = chunked(split, axis, keepdims, positions, shape, TensorProto.FLOAT)
    on_ort = run_gradients(with_projection_loss(model32), {"x": x.astype(np.float32)}, ["w"])["w"]
    np.testing.assert_allclose(on_ort, gradcheck(model, {"x": x}, ["w"])["w"][0], rtol=1e-5, atol=1e-6)


def test_a_sequence_read_at_a_run_time_position_is_refused_by_name():
    model = chunked(np.array(2), 1, 1, [0], [2, 2, 3])
    model.graph.input.append(helper.make_tensor_value_info("at0", TensorProto.INT64, []))
    del model.graph.initializer[-1]
    projected = with_projection_loss(model)
    assert [op for op, _ in missing_rules(projected, ["w"], LOSS)] == ["SplitToSequence", "SequenceAt"]
    with pytest.raises(OnnxkitError, match="op SplitToSequence .* has no gradient rule"):
        add_gradients(projected, ["w"], LOSS)
