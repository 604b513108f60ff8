"""Models of opsets older than 13 (the ONNX Model Zoo's are 7 to 12) train converted to opset 13 by onnx's version
converter: Upsample-9, Clip-6's and Pad-2's attributes, Dropout-7's ratio, Softmax-1."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.version_converter
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxkit.data import load_dataset
from onnxkit.errors import OnnxkitError
from onnxkit.graph_walks import opset
from onnxkit.train import fit


def old_model(upsample: bool) -> onnx.ModelProto:
    """An opset-9 CNN for digits-images written as exporters of 2019 wrote them."""
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
        helper.make_node("Upsample", ["p1", "scales"], ["u1"], mode="nearest") if upsample else
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


def _trains_as_opset_13(tmp_path, upsample: bool) -> None:
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
    # and as training the model converted by hand does, bit for bit
    by_hand = fit(onnx.version_converter.convert_version(old_model(upsample), 13), "digits-images", tmp_path / "hand",
                  epochs=4, lr=3e-3)
    np.testing.assert_array_equal(_run(onnx.load(by_hand.model_path), x), _run(trained, x))


def test_an_opset_9_model_with_upsample_trains_converted(tmp_path):
    _trains_as_opset_13(tmp_path, upsample=True)  # ORT-training has no Resize gradient


@pytest.mark.training
def test_an_opset_9_model_trains_converted_on_either_backend(tmp_path):
    _trains_as_opset_13(tmp_path, upsample=False)


def test_a_model_the_converter_cannot_convert_is_one_line(tmp_path, monkeypatch):
    def fails(model, version):
        raise RuntimeError("/onnx/version_converter/BaseConverter.h:66: adapter_lookup: No Adapter From Version $9 "
                           "for Upsample")

    monkeypatch.setattr(onnx.version_converter, "convert_version", fails)
    with pytest.raises(OnnxkitError) as e:
        fit(old_model(True), "digits-images", tmp_path / "run", epochs=1)
    assert str(e.value) == ("the model is opset 9, and gradients are written for opset 13 and newer, to which onnx's "
                            "version converter could not bring it (/onnx/version_converter/BaseConverter.h:66: "
                            "adapter_lookup: No Adapter From Version $9 for Upsample); export it at opset 13 or newer")
    assert not (tmp_path / "run").exists()
