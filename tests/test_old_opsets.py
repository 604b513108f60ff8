"""Models of opsets older than 13 (the ONNX Model Zoo's are 7 to 12) train converted to opset 13 by onnx's version
converter: Upsample-9, Clip-6's and Pad-2's attributes, Dropout-7's ratio, Softmax-1; the old Zoo's forms answer
after conversion as ONNX Runtime runs the original, where the converter alone moved Upsample's samples and could not
convert ImageScaler."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.version_converter
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxkit.autodiff.check import gradcheck
from onnxkit.data import load_dataset
from onnxkit.errors import OnnxkitError
from onnxkit.graph_walks import opset, value_types
from onnxkit.quantize import quantize
from onnxkit.train import fit
from onnxkit.train.old_opsets import at_training_opset
from onnxkit.train.training_form import trainable_form


def old_model(upsample: str | None) -> onnx.ModelProto:
    """An opset-9 CNN for digits-images written as exporters of 2019 wrote them; `upsample`: an Upsample's mode."""
    rng = np.random.default_rng(0)

    def weight(name, *shape, scale=0.1):
        return numpy_helper.from_array((rng.normal(size=shape) * scale).astype(np.float32), name)

    inits = [weight("w1", 8, 1, 3, 3, scale=0.3), weight("b1", 8), weight("w2", 8 * 4 * 4 * (4 if upsample else 1), 10),
             weight("b2", 10), numpy_helper.from_array(np.array([0, -1], np.int64), "shape"),
             *(numpy_helper.from_array(v.astype(np.float32), n) for n, v in
               (("bn_s", np.ones(8)), ("bn_b", np.zeros(8)), ("bn_m", np.zeros(8)), ("bn_v", np.ones(8)),
                ("scales", np.array([1, 1, 2, 2]))))]
    nodes = [
        helper.make_node("Conv", ["image", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("BatchNormalization", ["c1", "bn_s", "bn_b", "bn_m", "bn_v"], ["bn"]),
        helper.make_node("Clip", ["bn"], ["r1"], min=0.0, max=6.0),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Upsample", ["p1", "scales"], ["u1"], mode=upsample) if upsample else
        helper.make_node("Identity", ["p1"], ["u1"]),
        helper.make_node("Pad", ["u1"], ["pd"], pads=[0] * 8, mode="constant", value=0.0),
        helper.make_node("Dropout", ["pd"], ["d1"], ratio=0.1),
        helper.make_node("Reshape", ["d1", "shape"], ["flat"]),
        helper.make_node("Gemm", ["flat", "w2", "b2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    graph = helper.make_graph(nodes, "old", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 8, 8])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)], ir_version=4)
    onnx.checker.check_model(model)
    return model


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"image": x})[0]


def _trains_as_opset_13(tmp_path, upsample: str | None) -> None:
    model = old_model(upsample)
    result = fit(model, "digits-images", tmp_path / "old", epochs=4, lr=3e-3)
    trained = onnx.load(result.model_path)
    assert opset(trained) == 13 and trained.ir_version >= 7
    history = [r["val_loss"] for r in result.history]
    assert history[-1] < 0.6 * history[0] and result.metrics["test"]["accuracy"] > 0.8
    # the trained weights, put back into the opset-9 graph, answer as the converted model does
    weights = {t.name: t for t in trained.graph.initializer}
    for t in model.graph.initializer:
        t.CopyFrom(weights[t.name])
    x = next(iter(load_dataset("digits-images").test.inputs.values()))
    np.testing.assert_allclose(_run(trained, x), _run(model, x), rtol=1e-5, atol=1e-6)
    if upsample == "linear":
        return  # the converter alone samples a bilinear Upsample at half pixels (test_old_forms_answer_as_before)
    # and as training the model converted by hand does, bit for bit
    by_hand = fit(onnx.version_converter.convert_version(old_model(upsample), 13), "digits-images", tmp_path / "hand",
                  epochs=4, lr=3e-3)
    np.testing.assert_array_equal(_run(onnx.load(by_hand.model_path), x), _run(trained, x))


def test_an_opset_9_model_with_a_bilinear_upsample_trains_converted(tmp_path):
    _trains_as_opset_13(tmp_path, upsample="linear")  # ORT-training has no Resize gradient


@pytest.mark.training
def test_an_opset_9_model_trains_converted_on_either_backend(tmp_path):
    _trains_as_opset_13(tmp_path, upsample=None)


def test_a_model_the_converter_cannot_convert_is_one_line(tmp_path, monkeypatch):
    def fails(model, version):
        raise RuntimeError("/onnx/version_converter/BaseConverter.h:66: adapter_lookup: No Adapter From Version $9 "
                           "for Upsample")

    monkeypatch.setattr(onnx.version_converter, "convert_version", fails)
    with pytest.raises(OnnxkitError) as e:
        fit(old_model("nearest"), "digits-images", tmp_path / "run", epochs=1)
    assert str(e.value) == ("the model is opset 9, and gradients are written for opset 13 and newer, to which onnx's "
                            "version converter could not bring it (/onnx/version_converter/BaseConverter.h:66: "
                            "adapter_lookup: No Adapter From Version $9 for Upsample); export it at opset 13 or newer")
    assert not (tmp_path / "run").exists()


def _zoo_form(node: onnx.NodeProto, version: int, weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    """`node` reading "x" [2, 3, 6, 4] and `weights`, "y" its output negated (the converter renames what it rewrites
    inside a graph), as the ONNX Model Zoo's oldest files are: IR 3, the initializers listed as graph inputs."""
    node = onnx.NodeProto.FromString(node.SerializeToString())
    node.output[0] = "h"
    inits = [numpy_helper.from_array(v, k) for k, v in weights.items()]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 6, 4]),
              *(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in inits)]
    output = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph([node, helper.make_node("Neg", ["h"], ["y"])], "zoo", inputs, [output], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", version)], ir_version=3)


_R = np.random.default_rng(1)
_C = {n: (np.abs(_R.normal(size=3)) + 0.5).astype(np.float32) for n in ("s", "b", "m", "v")}
OLD_FORMS = {  # name: (node, opset, weights)
    "Upsample-7 nearest by 1.5 and 2": (helper.make_node("Upsample", ["x"], ["y"], scales=[1.0, 1.0, 1.5, 2.0],
                                                         mode="nearest"), 7, {}),
    "Upsample-7 bilinear": (helper.make_node("Upsample", ["x"], ["y"], scales=[1.0, 1.0, 2.0, 2.0], mode="linear"),
                            7, {}),
    "Upsample-9 bilinear by 1.5": (helper.make_node("Upsample", ["x", "k"], ["y"], mode="linear"), 9,
                                   {"k": np.array([1, 1, 1.5, 1.5], np.float32)}),
    "Resize-10 nearest down": (helper.make_node("Resize", ["x", "k"], ["y"], mode="nearest"), 10,
                               {"k": np.array([1, 1, 0.7, 0.75], np.float32)}),
    "Resize-10 bilinear": (helper.make_node("Resize", ["x", "k"], ["y"], mode="linear"), 10,
                           {"k": np.array([1, 1, 2, 2], np.float32)}),
    "ImageScaler": (helper.make_node("ImageScaler", ["x"], ["y"], scale=0.5, bias=[1.0, -2.0, 3.0]), 8, {}),
    "BatchNormalization-7 spatial=1": (helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"],
                                                        spatial=1, epsilon=1e-3), 7, _C),
    "Softmax-1 over C, H, W": (helper.make_node("Softmax", ["x"], ["y"], axis=1), 7, {}),
    "Sum-8 of 3": (helper.make_node("Sum", ["x", "s", "w"], ["y"]), 8,
                   {"s": _C["s"].reshape(3, 1, 1), "w": _R.normal(size=(2, 3, 6, 4)).astype(np.float32)}),
    "Max-8 of 3": (helper.make_node("Max", ["x", "s", "b"], ["y"]), 8,
                   {"s": _C["s"].reshape(3, 1, 1), "b": _C["b"][:1]}),
    "Mean-8 of 3": (helper.make_node("Mean", ["x", "s", "b"], ["y"]), 8,
                    {"s": _C["s"].reshape(3, 1, 1), "b": _C["b"].reshape(3, 1, 1)}),
    "LRN": (helper.make_node("LRN", ["x"], ["y"], size=3, alpha=1e-2, beta=0.75, bias=1.0), 7, {}),
    "Reshape-5 by a shape initializer": (helper.make_node("Reshape", ["x", "shape"], ["y"]), 7,
                                         {"shape": np.array([2, -1], np.int64)}),
    "Dropout-7 ratio": (helper.make_node("Dropout", ["x"], ["y"], ratio=0.3), 7, {}),
    "Pad-2 reflect": (helper.make_node("Pad", ["x"], ["y"], pads=[0, 0, 1, 2, 0, 0, 1, 2], mode="reflect"), 7, {}),
    "Clip-6": (helper.make_node("Clip", ["x"], ["y"], min=-0.5, max=0.5), 7, {}),
    # Hardmax before 13 takes the input flattened at axis: the converter kept the node, of one axis from 13 on
    "Hardmax-11 over C, H, W": (helper.make_node("Hardmax", ["x"], ["y"], axis=1), 11, {}),
    "Hardmax-1 at its default axis": (helper.make_node("Hardmax", ["x"], ["y"]), 7, {}),
    "Hardmax-11 over the last axis": (helper.make_node("Hardmax", ["x"], ["y"], axis=3), 11, {}),
}


@pytest.mark.parametrize("form", OLD_FORMS)
def test_old_forms_answer_as_before(form):
    node, version, weights = OLD_FORMS[form]
    model = _zoo_form(node, version, weights)
    x = np.random.default_rng(0).normal(size=(2, 3, 6, 4)).astype(np.float32)
    converted, _ = trainable_form(model)
    assert opset(converted) == 13
    np.testing.assert_allclose(_run_x(converted, x), _run_x(model, x), rtol=1e-5, atol=1e-6)


def test_an_old_hardmax_takes_its_input_flattened_at_its_axis():
    """The reference: Hardmax-11's definition in numpy (onnx.reference answers an opset-11 Hardmax as Hardmax-13)."""
    x = np.random.default_rng(3).normal(size=(2, 3, 6, 4)).astype(np.float32)
    rows = x.reshape(2, -1)
    expected = np.zeros_like(rows)
    expected[np.arange(2), rows.argmax(axis=1)] = 1
    converted, _ = trainable_form(_zoo_form(*OLD_FORMS["Hardmax-11 over C, H, W"][:2], {}))
    np.testing.assert_array_equal(_run_x(converted, x), -expected.reshape(x.shape))


AXIS_BROADCASTS = {  # name: (op, axis, B's shape); B lined up with x [2, 3, 6, 4] from the axis
    "Caffe2's bias of channels": ("Add", 1, (3,)),
    "a scale of channels and rows": ("Mul", 1, (3, 6)),
    "a scale of the batch": ("Div", 0, (2,)),
    "of the last axes": ("Sub", 2, (6, 4)),
}


@pytest.mark.parametrize("form", AXIS_BROADCASTS)
def test_an_opset_6_broadcast_from_an_axis_answers_as_its_spec(form):
    """Add-6 and the like with broadcast=1, axis=k stopped the converter ('assert_numpy_multibroadcastable: Assertion
    ... failed'); neither ONNX Runtime nor onnx.reference runs them, so numpy, by the opset-6 spec, is the reference."""
    op, axis, shape = AXIS_BROADCASTS[form]
    b = (np.random.default_rng(4).uniform(0.5, 2, size=shape)).astype(np.float32)
    model = _zoo_form(helper.make_node(op, ["x", "b"], ["y"], broadcast=1, axis=axis), 6, {"b": b})
    x = np.random.default_rng(0).normal(size=(2, 3, 6, 4)).astype(np.float32)
    converted, _ = trainable_form(model)
    assert opset(converted) == 13
    lined = b.reshape(*shape, *[1] * (4 - axis - len(shape)))
    expected = {"Add": np.add, "Mul": np.multiply, "Div": np.divide, "Sub": np.subtract}[op](x, lined)
    np.testing.assert_allclose(_run_x(converted, x), -expected, rtol=1e-6)
    assert {t.name: list(t.dims) for t in converted.graph.initializer}["b"] == list(shape)  # the weight as it was


def test_a_broadcast_from_an_axis_of_unknown_rank_is_one_line():
    model = _zoo_form(helper.make_node("Add", ["x", "b"], ["y"], broadcast=1, axis=1), 6,
                      {"b": np.ones(3, np.float32)})
    model.graph.input[0].type.tensor_type.ClearField("shape")
    with pytest.raises(OnnxkitError) as e:
        trainable_form(model)
    assert str(e.value) == ("the model's Add 'h' broadcasts its second input from axis 1 of its first (broadcast=1, "
                            "an opset-6 form), and shape inference cannot tell their ranks, which its newer form "
                            "needs; give the model's inputs fixed ranks, or export it at opset 13 or newer")


def _run_x(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["y"], {"x": x})[0]


def test_a_per_activation_batchnorm_is_one_line(tmp_path):
    weights = {n: np.ones((3, 6, 4), np.float32) for n in ("s", "b", "m", "v")}
    model = _zoo_form(helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], spatial=0, name="bn1"),
                      7, weights)
    with pytest.raises(OnnxkitError) as e:
        at_training_opset(model, "zoo.onnx")
    assert str(e.value) == ("zoo.onnx's BatchNormalization 'bn1' normalises each activation apart (spatial=0), which "
                            "opset 9 dropped; export the model with BatchNorm over channels (spatial=1), at opset 13 "
                            "or newer")


def test_an_op_newer_than_the_models_opset_is_one_line():
    # TorchScript writes GELU's Erf (opset 9) into an opset-7 export; the converter said "No Adapter From Version $8
    # for Erf", and ONNX Runtime refuses to load the model
    model = _zoo_form(helper.make_node("Erf", ["x"], ["y"], name="gelu/Erf"), 7, {})
    with pytest.raises(ort.capi.onnxruntime_pybind11_state.InvalidGraph):
        _run_x(model, np.zeros((2, 3, 6, 4), np.float32))
    with pytest.raises(OnnxkitError) as e:
        at_training_opset(model, "bert.onnx")
    assert str(e.value) == ("bert.onnx uses Erf (node 'gelu/Erf'), which came in opset 9, in an opset-7 graph that no "
                            "runtime loads; export it at opset 9 or newer")

def test_a_nearest_resize_both_ways_is_one_line():
    model = _zoo_form(helper.make_node("Resize", ["x", "k"], ["y"], mode="nearest"), 10,
                      {"k": np.array([1, 1, 2, 0.5], np.float32)})
    with pytest.raises(OnnxkitError, match=r"^zoo.onnx's Resize 'h' enlarges some axes and shrinks others by nearest "
                                           r"pixels \(scales \[1.0, 1.0, 2.0, 0.5\]\)"):
        at_training_opset(model, "zoo.onnx")


def test_an_opset_9_model_with_a_bilinear_upsample_quantizes_as_it_answers(tmp_path):
    model = old_model("linear")
    quantize(model, tmp_path / "half.onnx", mode="fp16", measure_latency=False)
    x = next(iter(load_dataset("digits-images").test.inputs.values()))
    # half precision moves these probabilities by 2e-4; the converter's half-pixel sampling alone moved them by 0.12
    np.testing.assert_allclose(_run(onnx.load(tmp_path / "half.onnx"), x), _run(model, x), atol=2e-3)


def gpt2_split_heads(batch: int | str = "batch") -> onnx.ModelProto:
    """The ONNX Model Zoo's GPT-2 (opset 10) splitting heads as TorchScript wrote x.view(n, t, heads, size):
    x [batch, 4, 6] @ w -> Reshape to Concat(Unsqueeze(Gather(Shape(x), 0)), [4, 2, 3]) -> Transpose -> + b."""
    rng = np.random.default_rng(3)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("Shape", ["y"], ["shape"]),
             helper.make_node("Gather", ["shape", "zero"], ["n"], axis=0),
             helper.make_node("Unsqueeze", ["n"], ["n1"], axes=[0]),
             helper.make_node("Concat", ["n1", "rest"], ["target"], axis=0),
             helper.make_node("Reshape", ["y", "target"], ["heads"]),
             helper.make_node("Transpose", ["heads"], ["by_head"], perm=[0, 2, 1, 3]),
             helper.make_node("Add", ["by_head", "b"], ["out"])]
    inits = [numpy_helper.from_array(rng.uniform(-1, 1, (6, 6)), "w"), numpy_helper.from_array(np.int64(0), "zero"),
             numpy_helper.from_array(np.array([4, 2, 3], np.int64), "rest"),
             numpy_helper.from_array(rng.uniform(-1, 1, (2, 1, 3)), "b")]
    graph = helper.make_graph(nodes, "gpt2", [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [batch, 4, 6])],
                              [helper.make_tensor_value_info("out", TensorProto.DOUBLE, [batch, 2, 4, 3])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 10)], ir_version=5)


def test_an_opset_10_gpt2_split_of_heads_is_differentiated():
    # onnx's inference gave the Reshape no rank, and training stopped at the Add after it: 'cannot differentiate Add
    # (...): the rank of ... or of its broadcast result is unknown' (TorchScript transformers at opsets 10 to 16)
    model, _ = at_training_opset(gpt2_split_heads(), "gpt2.onnx")
    dims = value_types(model)["heads"].type.tensor_type.shape.dim
    assert [d.dim_value or d.dim_param for d in dims] == ["batch", 4, 2, 3]
    x = np.random.default_rng(4).uniform(-1, 1, (2, 4, 6))
    fixed, _ = at_training_opset(gpt2_split_heads(2), "gpt2.onnx")
    for name, (analytic, numeric) in gradcheck(fixed, {"x": x}, ["w", "b"]).items():
        np.testing.assert_allclose(analytic, numeric, rtol=0, atol=1e-6, err_msg=name)
