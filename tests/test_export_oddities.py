"""What PyTorch exports hold beside float32 weights of rank >= 1: a module's own scalars train (a
learnable temperature or gate), float64 weights and random ops are named in a warning."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxkit.train import fit
from onnxkit.train.exporter_marks import folded_parameters
from onnxkit.train.training_form import find_parameters

pytestmark = pytest.mark.training


def gated(signature: bool) -> onnx.ModelProto:
    """logits = (x @ fc.weight.T + fc.bias) * gate * onnx::Mul_3, as PyTorch exports a module with
    `gate = nn.Parameter(torch.tensor(0.5))` times a constant; `signature`: as the dynamo exporter
    writes it (the constant then named val_0 and the graph's signature listing the parameters)."""
    rng = np.random.default_rng(0)
    constant = "val_0" if signature else "onnx::Mul_3"
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "fc.weight", "fc.bias"], ["h"], transB=1),
         helper.make_node("Mul", ["h", "gate"], ["g"]), helper.make_node("Mul", ["g", constant], ["logits"])],
        "gated", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 10])],
        [numpy_helper.from_array((rng.normal(size=(10, 64)) * 0.05).astype(np.float32), "fc.weight"),
         numpy_helper.from_array(np.zeros(10, np.float32), "fc.bias"),
         numpy_helper.from_array(np.array(0.5, np.float32), "gate"),
         numpy_helper.from_array(np.array(2.0, np.float32), constant)])
    if signature:
        graph.metadata_props.add(key="pkg.torch.export.ExportedProgram.graph_signature", value="".join(
            f"p_{k.replace('.', '_')}: PARAMETER target='{k}'\n" for k in ("fc.weight", "fc.bias", "gate")))
    return helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 18)],
                             producer_name="pytorch")


@pytest.mark.parametrize("signature", [False, True])
def test_a_modules_own_scalar_trains_and_keeps_its_shape(tmp_path, signature, capsys):
    model = gated(signature)
    assert find_parameters(model).parameters == ["fc.weight", "fc.bias", "gate"]
    result = fit(model, "digits", tmp_path / "run", epochs=2, lr=0.01, quiet=False)
    # TorchScript writes a register_buffer'd scalar as it writes this gate: said, with how to keep a buffer fixed
    said = "the export's scalar weights train (gate): a TorchScript export does not say which are nn.Parameters"
    assert (said in capsys.readouterr().err) is not signature
    trained = {t.name: numpy_helper.to_array(t) for t in onnx.load(result.model_path).graph.initializer}
    assert trained["gate"].shape == () and abs(float(trained["gate"]) - 0.5) > 1e-3
    assert float(trained["val_0" if signature else "onnx::Mul_3"]) == 2.0  # the constant stays
    plain = gated(signature)
    plain.producer_name = "onnxkit"
    if not signature:  # not PyTorch's: a scalar initializer is a constant, as before
        assert "gate" not in find_parameters(plain).parameters


def test_float64_weights_are_named_as_staying_fixed(tmp_path, capsys):
    model = gated(signature=False)
    rng = np.random.default_rng(1)
    model.graph.initializer.append(numpy_helper.from_array(rng.normal(size=(10, 10)) * 0.3, "w2"))
    model.graph.node[-1].output[0] = "scaled"
    model.graph.node.extend([helper.make_node("Cast", ["scaled"], ["wide"], to=TensorProto.DOUBLE),
                             helper.make_node("MatMul", ["wide", "w2"], ["mixed"]),
                             helper.make_node("Cast", ["mixed"], ["logits"], to=TensorProto.FLOAT)])
    result = fit(model, "digits", tmp_path / "run", epochs=1, quiet=False)
    assert ("warning: weights in float64 or float16 stay fixed: training runs in float32 (w2); to train them, "
            "store them as float32") in capsys.readouterr().err
    trained = {t.name: numpy_helper.to_array(t) for t in onnx.load(result.model_path).graph.initializer}
    np.testing.assert_array_equal(trained["w2"], numpy_helper.to_array(model.graph.initializer[-1]))


def test_random_ops_on_the_output_path_are_named(tmp_path, capsys):
    # the dynamo exporter writes nn.Dropout2d in training mode as RandomUniformLike -> Less -> Mul
    model = gated(signature=False)
    model.graph.node[-1].output[0] = "scaled"
    model.graph.initializer.append(numpy_helper.from_array(np.array(0.1, np.float32), "p"))
    model.graph.node.extend([helper.make_node("RandomUniformLike", ["scaled"], ["u"]),
                             helper.make_node("Less", ["u", "p"], ["dropped"]),
                             helper.make_node("Where", ["dropped", "p", "scaled"], ["logits"])])
    fit(model, "digits", tmp_path / "run", epochs=1, quiet=False, dropout=False)
    assert ("warning: the model draws random numbers (1 RandomUniformLike; PyTorch's dynamo exporter writes "
            "nn.Dropout2d/3d in training mode so)") in capsys.readouterr().err


def folded_by_dynamo() -> onnx.ModelProto:
    """logits = (x @ val_0 + fc.bias) * exp * matmul, as the dynamo exporter's optimizer writes
    `(fc(x) * torch.exp(ls)) * (v @ u)`: it folds fc.weight's transpose into val_0 (read by the Linear's own op),
    exp(ls) into exp and v @ u into matmul, each marked with what it was folded from."""
    rng = np.random.default_rng(0)

    def op(op_type, inputs, output, torch_op, args):
        node = helper.make_node(op_type, inputs, [output])
        node.metadata_props.add(key="pkg.torch.onnx.fx_node", value=f"%{output} : [num_users=1] = call_function["
                                f"target=torch.ops.aten.{torch_op}.default](args = ({', '.join(args)}), kwargs = {{}})")
        return node

    graph = helper.make_graph(
        [op("MatMul", ["x", "val_0"], "h", "linear", ["%x", "%p_fc_weight", "%p_fc_bias"]),
         op("Add", ["h", "fc.bias"], "linear", "linear", ["%x", "%p_fc_weight", "%p_fc_bias"]),
         op("Mul", ["linear", "exp"], "mul", "mul", ["%linear", "%exp"]),
         op("Mul", ["mul", "matmul"], "logits", "mul", ["%mul", "%matmul"])],
        "folded", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 10])],
        [numpy_helper.from_array((rng.normal(size=(64, 10)) * 0.05).astype(np.float32), "val_0"),
         numpy_helper.from_array(np.zeros(10, np.float32), "fc.bias"),
         numpy_helper.from_array(np.ones(10, np.float32), "exp"),
         numpy_helper.from_array(np.array(1.5, np.float32), "matmul")])
    for name, sources in [("val_0", ["fc.weight"]), ("exp", ["ls"]), ("matmul", ["u", "v"])]:
        info = graph.value_info.add()
        info.name = name
        info.metadata_props.add(key="pkg.onnxscript.optimizer.folded_from", value=repr(sources))
    graph.metadata_props.add(key="pkg.torch.export.ExportedProgram.graph_signature", value="".join(
        f"p_{k.replace('.', '_')}: PARAMETER target='{k}'\n" for k in ("ls", "v", "u", "fc.weight", "fc.bias")))
    return helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 18)],
                             producer_name="pytorch")


def test_parameters_the_exporter_computed_values_from_are_named(tmp_path, capsys):
    # ls, v and u are not in the graph: exp(ls) trained as a free tensor and v @ u stayed fixed, unsaid (a
    # Linear's transposed weight is the Linear's own, read by its op: it trains as fc.weight did)
    model = folded_by_dynamo()
    assert folded_parameters(model) == {"ls": ["exp"], "v": ["matmul"], "u": ["matmul"]}
    fit(model, "digits", tmp_path / "run", epochs=1, quiet=False)
    assert ("warning: PyTorch's exporter computed exp, matmul from the parameters ls, v, u at export, so they do "
            "not train as in PyTorch (exp trains as a tensor of its own; matmul stays fixed); to train them, export "
            "with torch.onnx.export(..., dynamo=True, optimize=False)") in capsys.readouterr().err
    assert folded_parameters(gated(signature=True)) == {}


def test_a_recurrent_layers_weights_laid_out_at_export_are_its_own():
    # nn.GRU's export: W, R (gates reordered) and B (bias_ih and bias_hh concatenated) folded from its four
    # parameters, read by the GRU node whose op, aten.gru, names them all; training them trains what PyTorch
    # trains (the same test loss to 7 digits), but train warned "they do not train as in PyTorch"
    h = 4
    node = helper.make_node("GRU", ["x", "val_29", "val_30", "val_46"], ["", "state"], hidden_size=h,
                            linear_before_reset=1)
    node.metadata_props.add(key="pkg.torch.onnx.fx_node", value=(
        "%gru : [num_users=1] = call_function[target=torch.ops.aten.gru.input](args = (%x, %zeros, "
        "[%p_rnn_weight_ih_l0, %p_rnn_weight_hh_l0, %p_rnn_bias_ih_l0, %p_rnn_bias_hh_l0], True, 1, 0.0, False, "
        "False, True), kwargs = {})"))
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [node], "gru", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, "n", 3])],
        [helper.make_tensor_value_info("state", TensorProto.FLOAT, [1, "n", h])],
        [numpy_helper.from_array(rng.normal(size=shape).astype(np.float32), name) for name, shape in
         (("val_29", (1, 3 * h, 3)), ("val_30", (1, 3 * h, h)), ("val_46", (1, 6 * h)))])
    for name, sources in (("val_29", ["rnn.weight_ih_l0", "val_10"]), ("val_30", ["rnn.weight_hh_l0", "val_10"]),
                          ("val_46", ["rnn.bias_hh_l0", "rnn.bias_ih_l0", "val_10"])):
        graph.value_info.add(name=name).metadata_props.add(key="pkg.onnxscript.optimizer.folded_from",
                                                           value=repr(sources))
    weights = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
    graph.metadata_props.add(key="pkg.torch.export.ExportedProgram.graph_signature", value="".join(
        f"p_rnn_{k}: PARAMETER target='rnn.{k}'\n" for k in weights))
    model = helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 18)],
                              producer_name="pytorch")
    assert folded_parameters(model) == {}


def test_a_dynamo_export_converted_to_another_opset_keeps_its_constants_and_says_what_it_lost(tmp_path, capsys):
    # torch.onnx.export(dynamo=True, opset_version=17) runs onnx's version converter, which drops the graph's
    # signature: GELU's sqrt(2), 1 and 0.5 (val_2, val_5, val_7) then trained as a module's scalars (1.398, 0.961,
    # 0.545: no longer GELU), and the LayerNorms the exporter had merged trained tied, unsaid
    model = gated(signature=True)
    del model.graph.metadata_props[:]
    for k, node in enumerate(model.graph.node):
        node.name = f"node_{node.op_type}_{k}"
    assert "val_0" not in find_parameters(model).parameters
    result = fit(model, "digits", tmp_path / "run", epochs=1, lr=0.01, quiet=False)
    assert "warning: the model is a PyTorch dynamo export without the marks" in capsys.readouterr().err
    assert float(numpy_helper.to_array(next(t for t in onnx.load(result.model_path).graph.initializer
                                            if t.name == "val_0"))) == 2.0
