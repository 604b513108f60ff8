"""Gradient check: one SGD step through the training backend equals central finite differences
of the loss, computed in float64 by onnx's reference evaluator, for a model holding every layer
type of the zoo (Linear, Conv, MaxPool, AvgPool, GlobalAvgPool, BatchNorm, LayerNorm, Embedding,
attention with Softmax, GELU via Erf, Sigmoid, Tanh, LeakyRelu, Dropout in eval)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxkit.autodiff.check import reference
from onnxkit.data import Dataset, Split
from onnxkit.files import load_model
from onnxkit.train import fit
from onnxkit.train.backends import get_backend

pytestmark = pytest.mark.training

BATCH, VOCAB, SEQ, DIM = 8, 7, 4, 4


def every_layer_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    weights = {
        "conv.weight": rng.normal(0, 0.5, (2, 1, 3, 3)),
        "conv.bias": rng.normal(0, 0.1, (2,)),
        "bn.weight": rng.uniform(0.5, 1.5, (2,)),
        "bn.bias": rng.normal(0, 0.1, (2,)),
        "bn.running_mean": rng.normal(0, 0.1, (2,)),
        "bn.running_var": rng.uniform(0.5, 1.5, (2,)),
        "emb.weight": rng.normal(0, 1.0, (VOCAB, DIM)),
        "ln.weight": rng.uniform(0.5, 1.5, (DIM,)),
        "ln.bias": rng.normal(0, 0.1, (DIM,)),
        "attn.q.weight": rng.normal(0, 0.5, (DIM, DIM)),
        "attn.q.bias": rng.normal(0, 0.1, (DIM,)),
        "attn.k.weight": rng.normal(0, 0.5, (DIM, DIM)),
        "attn.v.weight": rng.normal(0, 0.5, (DIM, DIM)),
        "gate.weight": rng.normal(0, 0.5, (DIM, DIM)),
        "head.weight": rng.normal(0, 0.5, (2 + DIM, 3)),
        "head.bias": rng.normal(0, 0.1, (3,)),
    }
    constants = {"scale": 0.5, "inv_sqrt2": 2**-0.5, "one": 1.0, "half": 0.5, "drop": 0.1}
    initializers = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()]
    initializers += [helper.make_tensor(k, TensorProto.FLOAT, [], [v]) for k, v in constants.items()]
    n = helper.make_node
    nodes = [
        n("Conv", ["image", "conv.weight", "conv.bias"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        n("BatchNormalization", ["c", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"], ["bn"],
          momentum=0.9, name="bn"),
        n("LeakyRelu", ["bn"], ["act"], alpha=0.1),
        n("MaxPool", ["act"], ["mp"], kernel_shape=[2, 2], strides=[2, 2]),
        n("AveragePool", ["mp"], ["ap"], kernel_shape=[2, 2], strides=[1, 1]),
        n("Tanh", ["ap"], ["th"]),
        n("GlobalAveragePool", ["th"], ["gap"]),
        n("Flatten", ["gap"], ["img_feat"]),
        n("Gather", ["emb.weight", "ids"], ["emb"]),
        n("LayerNormalization", ["emb", "ln.weight", "ln.bias"], ["h"], axis=-1, name="ln"),
        n("MatMul", ["h", "attn.q.weight"], ["q0"]),
        n("Add", ["q0", "attn.q.bias"], ["q"]),
        n("MatMul", ["h", "attn.k.weight"], ["k"]),
        n("MatMul", ["h", "attn.v.weight"], ["v"]),
        n("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
        n("MatMul", ["q", "kt"], ["scores0"]),
        n("Mul", ["scores0", "scale"], ["scores"]),
        n("Softmax", ["scores"], ["probs"], axis=-1),
        n("MatMul", ["probs", "v"], ["ctx"]),
        n("Add", ["ctx", "h"], ["res"]),
        n("Mul", ["res", "inv_sqrt2"], ["u"]),
        n("Erf", ["u"], ["erf"]),
        n("Add", ["erf", "one"], ["erf1"]),
        n("Mul", ["res", "half"], ["halfx"]),
        n("Mul", ["halfx", "erf1"], ["gelu"]),
        n("MatMul", ["gelu", "gate.weight"], ["gate0"]),
        n("Sigmoid", ["gate0"], ["gate"]),
        n("Mul", ["gelu", "gate"], ["gated"]),
        n("ReduceMean", ["gated"], ["tok_feat"], axes=[1], keepdims=0),
        n("Concat", ["img_feat", "tok_feat"], ["feat"], axis=1),
        n("Dropout", ["feat", "drop"], ["dropped"], name="dropout"),
        n("MatMul", ["dropped", "head.weight"], ["logits0"]),
        n("Add", ["logits0", "head.bias"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "every_layer",
        [
            helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 6, 6]),
            helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", SEQ]),
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        initializers,
    )
    model = helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


def batch() -> tuple[dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(1)
    inputs = {
        "image": rng.normal(0, 1, (BATCH, 1, 6, 6)).astype(np.float32),
        "ids": rng.integers(0, VOCAB, (BATCH, SEQ)).astype(np.int64),
    }
    return inputs, rng.integers(0, 3, BATCH).astype(np.int64)


class Float64Loss:
    """Mean cross-entropy of the model in float64 as a function of one weight tensor."""

    def __init__(self, model: onnx.ModelProto, bn_training: bool) -> None:
        model = onnx.ModelProto.FromString(model.SerializeToString())
        for node in model.graph.node:
            if node.op_type == "BatchNormalization" and bn_training:  # ONNX's own training-mode semantics
                node.attribute.append(helper.make_attribute("training_mode", 1))
                node.output.extend(["running_mean_out", "running_var_out"])
        self.weights = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
        del model.graph.initializer[:]
        model.graph.input.extend(
            helper.make_tensor_value_info(k, TensorProto.DOUBLE, list(v.shape)) for k, v in self.weights.items()
        )
        self.session = reference(model)  # float64 throughout, Erf included
        inputs, self.labels = batch()
        self.inputs = {"image": inputs["image"].astype(np.float64), "ids": inputs["ids"]}
        self.stats = ["running_mean_out", "running_var_out"] if bn_training else []

    def run(self, name: str | None = None, value: np.ndarray | None = None) -> list[np.ndarray]:
        weights = dict(self.weights)
        if name is not None:
            weights[name] = value
        return self.session.run(["logits", *self.stats], {**self.inputs, **weights})

    def __call__(self, name: str, value: np.ndarray) -> float:
        logits = self.run(name, value)[0]
        z = logits - logits.max(axis=1, keepdims=True)
        log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return float(-log_probs[np.arange(BATCH), self.labels].mean())

    def gradient(self, name: str, eps: float = 1e-6) -> np.ndarray:
        base = self.weights[name]
        grad = np.zeros_like(base)
        for index in np.ndindex(base.shape):
            plus, minus = base.copy(), base.copy()
            plus[index] += eps
            minus[index] -= eps
            grad[index] = (self(name, plus) - self(name, minus)) / (2 * eps)
        return grad


@pytest.mark.parametrize("bn_training", [True, False], ids=["batchnorm-training", "batchnorm-frozen-stats"])
def test_one_sgd_step_matches_finite_differences(tmp_path, bn_training):
    model = every_layer_model()
    inputs, labels = batch()
    empty = Split("empty", {k: v[:0] for k, v in inputs.items()}, labels[:0])
    data = Dataset("grad-check", Split("train", inputs, labels), empty, empty)
    lr = 1.0
    result = fit(
        model, data, tmp_path / "run", optimizer="sgd", lr=lr, weight_decay=0.0, epochs=1, batch_size=BATCH,
        shuffle=False, dropout=False, keep_best=False, evaluate_test=False, device="cpu",
        freeze=[] if bn_training else ["bn.running_*"],
    )
    assert result.metrics["steps"] == 1
    before = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    after = {t.name: numpy_helper.to_array(t) for t in load_model(result.model_path).graph.initializer}
    reference = Float64Loss(model, bn_training)
    trainable = [n for n in before if "." in n and "running" not in n]
    assert sorted(result.trainable) == sorted(trainable)
    for name in trainable:
        update = (before[name].astype(np.float64) - after[name]) / lr
        expected = reference.gradient(name)
        # conv.bias has an exactly zero gradient before a training-mode BatchNorm: compare absolutely there
        error = np.linalg.norm(update - expected) / max(np.linalg.norm(expected), 1e-4)
        assert error < 1e-3, f"{name}: relative error {error:.2e}"

    stats = ("bn.running_mean", "bn.running_var")
    if bn_training:  # running statistics as PyTorch updates them: ONNX's, with the unbiased batch variance
        _, mean, var = reference.run()  # ONNX's training-mode BatchNormalization: the population variance
        values = BATCH * 6 * 6  # per channel of the conv's output
        unbiased = var + (var - 0.9 * before["bn.running_var"]) / (values - 1)
        if not get_backend().unbiased_running_var:  # ort-training: ONNX's, in its kernel
            unbiased = var
        np.testing.assert_allclose(after["bn.running_mean"], mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(after["bn.running_var"], unbiased, rtol=1e-5, atol=1e-6)
    else:  # frozen statistics are bit-identical
        for name in stats:
            assert after[name].tobytes() == before[name].tobytes()
    # the trained model keeps the inference form: same graph, only weights changed
    trained = load_model(result.model_path)
    assert [n.op_type for n in trained.graph.node] == [n.op_type for n in model.graph.node]


def test_training_form_takes_dropout_ratios_from_dsl_metadata():
    from onnxkit import zoo
    from onnxkit.graph_walks import value_types
    from onnxkit.train.training_form import output_type, training_form

    model = zoo.build_model("digits-mlp", dropout=0.3)
    types = value_types(model)
    form = training_form(model, output_type(types, model, "logits"), updated_buffers=[], types=types)
    drops = [n for n in form.graph.node if n.op_type == "Dropout"]
    assert len(drops) == 2 and all(len(n.input) == 3 and len(n.output) == 2 for n in drops)
    ratios = {t.name: numpy_helper.to_array(t) for t in form.graph.initializer}
    assert [float(ratios[n.input[1]]) for n in drops] == pytest.approx([0.3, 0.3])
