"""The CPU's training graph: forward Convs and stride-1 ConvTransposes of few output positions an image as one
GEMM over the batch (`conv_lowering`). The lowered nodes compute what the Conv (or ConvTranspose) does, for any
padding, stride, dilation and rank, at any batch size; shallow, wide, grouped and backward Convs stay; a training
session on the CPU opens the lowered graphs and steps and evaluates as on the plain ones."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxkit import nn
from onnxkit.train.backends.onnx import conv_lowering
from onnxkit.train.backends.onnx.artifacts import EVAL, TRAINING
from onnxkit.train.backends.onnx.conv_lowering import lowered_convs
from onnxkit.train.problem import open_training


def conv_model(channels: int, size: list[int], weight: list[int], bias: bool, as_input: bool = True,
               op: str = "Conv", **attrs) -> onnx.ModelProto:
    """x -> Conv (or `op`) -> y, its weight (and bias) a graph input as a training graph's parameters are
    (`as_input`), or an initializer."""
    rng = np.random.default_rng(0)
    values = {"w": rng.normal(size=weight).astype(np.float32)}
    if bias:
        values["b"] = rng.normal(size=weight[1 if op == "ConvTranspose" else 0]).astype(np.float32)
    node = helper.make_node(op, ["x", *values], ["y"], name=op.lower(), **attrs)
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", channels, *size])]
    if as_input:
        inputs += [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(v.shape)) for k, v in values.items()]
    graph = helper.make_graph([node], "conv", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [] if as_input else [numpy_helper.from_array(v, k) for k, v in values.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    feeds = {"x": x}
    if model.graph.input[1:]:  # the weights fed as a training step feeds them
        rng = np.random.default_rng(0)
        feeds |= {i.name: rng.normal(size=[d.dim_value for d in i.type.tensor_type.shape.dim]).astype(np.float32)
                  for i in model.graph.input[1:]}
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


@pytest.mark.parametrize(("channels", "size", "weight", "bias", "attrs"), [
    (3, [8, 8], [5, 3, 3, 3], True, {"pads": [1, 1, 1, 1]}),
    (4, [9, 7], [6, 4, 3, 2], False, {"strides": [2, 1], "pads": [2, 0, 1, 1], "dilations": [1, 2]}),
    (2, [6, 6], [3, 2, 3, 3], True, {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    (3, [8, 8], [4, 3, 1, 1], True, {"strides": [2, 2]}),  # a ResNet's 1 x 1 strided shortcut
    (2, [20], [3, 2, 5], True, {"pads": [2, 2]}),
    (2, [4, 3, 5], [3, 2, 2, 2, 3], False, {"pads": [0, 1, 1, 1, 0, 1]}),
], ids=["3x3 padded", "strided, dilated, uneven pads", "SAME_UPPER", "1x1 strided", "1-D", "3-D"])
def test_the_lowered_conv_computes_the_conv(channels, size, weight, bias, attrs, monkeypatch):
    monkeypatch.setattr(conv_lowering, "MIN_DEPTH", 1)
    model = conv_model(channels, size, weight, bias, **attrs)
    lowered = lowered_convs(model)
    assert "Conv" not in {n.op_type for n in lowered.graph.node}
    for batch in (1, 5):
        x = np.random.default_rng(batch).normal(size=(batch, channels, *size)).astype(np.float32)
        np.testing.assert_allclose(run(lowered, x), run(model, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("channels", "size", "weight", "bias", "attrs"), [
    (3, [7, 7], [3, 5, 3, 3], True, {"pads": [1, 1, 1, 1]}),  # a stride-1 Conv's input gradient
    (4, [6, 5], [4, 2, 3, 2], False, {"pads": [2, 0, 1, 1], "dilations": [2, 1]}),
    (2, [4, 4], [2, 3, 3, 3], True, {}),  # no pads: the output grows by the kernel
    (2, [20], [2, 3, 5], True, {"pads": [2, 1]}),
    (2, [4, 3, 5], [2, 3, 2, 2, 3], False, {"pads": [1, 0, 1, 0, 1, 2]}),
], ids=["3x3 padded", "dilated, uneven pads", "unpadded", "1-D", "3-D"])
def test_a_stride_1_conv_transpose_is_lowered_as_the_conv_it_equals(channels, size, weight, bias, attrs,
                                                                     monkeypatch):
    # the input gradients of ResNet-18's 512-channel 3 x 3 Convs at 7 x 7: 28 ms each on ORT's ConvTranspose
    monkeypatch.setattr(conv_lowering, "MIN_DEPTH", 1)
    model = conv_model(channels, size, weight, bias, op="ConvTranspose", **attrs)
    lowered = lowered_convs(model)
    assert not {"Conv", "ConvTranspose"} & {n.op_type for n in lowered.graph.node}
    for batch in (1, 5):
        x = np.random.default_rng(batch).normal(size=(batch, channels, *size)).astype(np.float32)
        np.testing.assert_allclose(run(lowered, x), run(model, x), rtol=1e-5, atol=1e-5)


def test_strided_cropped_or_grouped_conv_transposes_stay(monkeypatch):
    monkeypatch.setattr(conv_lowering, "MIN_DEPTH", 1)
    transpose = {"channels": 2, "size": [4, 4], "weight": [2, 3, 3, 3], "bias": True, "op": "ConvTranspose"}
    assert lowered_convs(conv_model(**transpose, pads=[1, 1, 1, 1])) is not None
    assert lowered_convs(conv_model(**transpose, strides=[2, 2], pads=[1, 1, 1, 1])) is None
    assert lowered_convs(conv_model(**transpose, pads=[3, 1, 1, 1])) is None  # a pad past the kernel crops
    assert lowered_convs(conv_model(**transpose, auto_pad="SAME_UPPER")) is None
    grouped = {**transpose, "weight": [2, 1, 3, 3]}
    assert lowered_convs(conv_model(**grouped, group=2, pads=[1, 1, 1, 1])) is None


def test_shallow_wide_grouped_and_backward_convs_stay(monkeypatch):
    assert lowered_convs(conv_model(28, [8, 8], [4, 28, 3, 3], True, pads=[1, 1, 1, 1])) is None  # depth 252
    assert lowered_convs(conv_model(29, [8, 8], [4, 29, 3, 3], True, pads=[1, 1, 1, 1])) is not None  # 261
    monkeypatch.setattr(conv_lowering, "MIN_DEPTH", 1)
    assert lowered_convs(conv_model(4, [8, 8], [4, 2, 3, 3], True, pads=[1, 1, 1, 1], group=2)) is None
    assert lowered_convs(conv_model(2, [16, 16], [3, 2, 3, 3], True, pads=[1, 1, 1, 1])) is None  # 256 positions
    monkeypatch.setattr(conv_lowering, "LOWERED_UP_TO", 256)
    assert lowered_convs(conv_model(2, [16, 16], [3, 2, 3, 3], True, pads=[1, 1, 1, 1])) is not None
    backward = conv_model(2, [4, 4], [3, 2, 3, 3], True, pads=[1, 1, 1, 1])
    backward.graph.node[0].name = "onnxkit.grad/Conv.7"
    assert lowered_convs(backward) is None
    frozen = conv_model(2, [4, 4], [3, 2, 3, 3], True, as_input=False, pads=[1, 1, 1, 1])  # a weight not trained
    assert lowered_convs(frozen) is None


def test_a_cpu_session_steps_and_evaluates_on_the_lowered_graphs_as_on_the_plain_ones(tmp_path, monkeypatch):
    monkeypatch.setattr(conv_lowering, "MIN_DEPTH", 1)
    nn.manual_seed(0)
    net = nn.Sequential([nn.Conv2d(2, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1),
                         nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 3)])
    model = nn.build(net, {"x": nn.Input(["batch", 2, 8, 8])}, output_names=["logits"])
    rng = np.random.default_rng(0)
    batches = [({"x": rng.normal(size=(6, 2, 8, 8)).astype(np.float32)}, rng.integers(0, 3, 6)) for _ in range(3)]

    def steps(directory):  # type: ignore[no-untyped-def]
        session = open_training(model, directory, dropout=False, batch_size=6)
        losses = []
        for x, y in batches:
            losses.append(session.train_step(x, y))
            session.optimizer_step(1e-2)
        return [*losses, *session.eval_step(batches[0][0]).ravel()], session.parameters()

    lowered, lowered_weights = steps(tmp_path / "lowered")
    signature = json.loads((tmp_path / "lowered" / "signature.json").read_text())
    assert signature["cpu_graphs"] == {TRAINING: "training-cpu.onnx", EVAL: "eval-cpu.onnx"}
    cpu_training = onnx.load(tmp_path / "lowered" / "training-cpu.onnx").graph.node
    forward = [n for n in cpu_training if not n.name.startswith("onnxkit.grad/")]
    assert "Conv" not in {n.op_type for n in forward}  # 64 and 16 positions: both lowered
    assert sum(n.name.startswith(conv_lowering.PREFIX) and n.op_type == "MatMul" for n in forward) == 2
    gathers = [n.name for n in cpu_training if n.op_type == "Gather"]
    assert len(gathers) == 2 and all(g.startswith(conv_lowering.PREFIX) for g in gathers)  # the weight gradients'
    plain_gathers = [n.name for n in onnx.load(tmp_path / "lowered" / TRAINING).graph.node if n.op_type == "Gather"]
    assert len(plain_gathers) == 2 and all(g.startswith("onnxkit.grad/") for g in plain_gathers)
    assert "Conv" not in {n.op_type for n in onnx.load(tmp_path / "lowered" / "eval-cpu.onnx").graph.node}
    monkeypatch.setattr(conv_lowering, "LOWERED_UP_TO", 0)
    plain, plain_weights = steps(tmp_path / "plain")
    assert json.loads((tmp_path / "plain" / "signature.json").read_text())["cpu_graphs"] == {}
    assert sorted(p.name for p in (tmp_path / "plain").glob("*-cpu.onnx")) == []
    np.testing.assert_allclose(lowered, plain, rtol=1e-5, atol=1e-6)  # the losses, then the outputs
    for name, value in plain_weights.items():
        np.testing.assert_allclose(lowered_weights[name], value, rtol=1e-4, atol=1e-6, err_msg=name)
