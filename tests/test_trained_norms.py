"""A model whose normalisation layers show training is fine-tuned on the raw values its layers learnt from: fit's
model at step 0 computes what the original file does. Fresh models (the zoo's, untrained exports) are standardised
on unscaled data as before."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from conftest import ort_run
from onnx import helper, numpy_helper
from sklearn.datasets import load_wine
from test_train_finetune import paraphrase_minilm

from onnxkit import nn, zoo
from onnxkit.data import dataset_from_arrays
from onnxkit.train import fit
from onnxkit.train.callbacks import Callback
from onnxkit.train.export import with_weights
from onnxkit.train.trained_norms import trained_norm


def batch_norm_mlp() -> onnx.ModelProto:
    nn.manual_seed(0)
    mlp = nn.Sequential([nn.Linear(13, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 3)])
    return nn.build(mlp, {"x": nn.Input(["batch", 13])}, output_names=["logits"],
                    metadata={"onnxkit.task": "classification"})


class FirstWeights(Callback):
    """The trained tensors' values before fit's first step."""

    def on_train_begin(self, trainer) -> None:
        self.values = trainer.session.parameters()


def test_every_fresh_zoo_model_shows_no_training_and_pretrained_files_do():
    for name in zoo.names():
        assert trained_norm(zoo.build_model(name)) is None, name
    pretrained = zoo.build_model("bert-classifier", pretrained="all-MiniLM-L6-v2")
    assert trained_norm(pretrained) == ("the scale of LayerNormalization 'embeddings.norm/LayerNormalization' is not "
                                        "all 1, its start")
    assert "LayerNormalization" in trained_norm(onnx.load(paraphrase_minilm()))  # a PyTorch export of a MiniLM


@pytest.mark.parametrize(("moved", "what", "start"), [(1, "scale", 1), (2, "shift", 0), (3, "running mean", 0),
                                                      (4, "running variance", 1)])
def test_any_batch_norm_tensor_off_its_start_shows_training(moved, what, start):
    model = batch_norm_mlp()
    assert trained_norm(model) is None
    node = next(n for n in model.graph.node if n.op_type == "BatchNormalization")
    tensor = next(t for t in model.graph.initializer if t.name == node.input[moved])
    value = numpy_helper.to_array(tensor).copy()
    value[3] += 0.01
    tensor.CopyFrom(numpy_helper.from_array(value, tensor.name))
    assert trained_norm(model) == f"the {what} of BatchNormalization {node.name!r} is not all {start}, its start"


@pytest.mark.parametrize("bias", [0.0, 0.3])
def test_a_batch_norm_folded_into_a_conv_shows_training_by_its_shift(bias):
    """PyTorch's TorchScript exporter in eval mode folds BatchNorm into the Conv before it, naming the weight and
    bias it computes onnx::Conv_N: a fresh BatchNorm leaves the shift 0 (a Conv without bias), a trained one not."""
    weight = np.random.default_rng(0).normal(size=(4, 1, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["image", "onnx::Conv_1", "onnx::Conv_2"], ["features"], name="/conv/Conv")],
        "folded", [helper.make_tensor_value_info("image", onnx.TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("features", onnx.TensorProto.FLOAT, ["batch", 4, 6, 6])],
        [numpy_helper.from_array(weight, "onnx::Conv_1"),
         numpy_helper.from_array(np.full(4, bias, np.float32), "onnx::Conv_2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="pytorch")
    said = "Conv '/conv/Conv' holds the shift of a trained BatchNorm folded into it"
    assert trained_norm(model) == (said if bias else None)


@pytest.mark.training
def test_a_pretrained_model_fine_tunes_on_the_raw_values_a_fresh_one_is_standardized(tmp_path, capsys):
    """A backbone pretrained on wine's raw features (proline's std 305: clearly unscaled) fine-tuned for new labels
    did not classify them yet, so it was standardised: its first layer saw values of another scale than it learnt
    from. Its BatchNorm's running statistics show it was trained: it now trains on the raw values, and fit's model
    at step 0 answers as onnxruntime does on the original file."""
    pretrained = fit(batch_norm_mlp(), "wine", tmp_path / "pretrain", standardize=False, epochs=3, quiet=True)
    original = onnx.load(pretrained.model_path)
    assert "of BatchNormalization '1/BatchNormalization' is not all" in trained_norm(original)
    wine = load_wine()
    features = wine.data.astype(np.float32)
    task = dataset_from_arrays("wine-shifted", {"x": features}, (wine.target + 1) % 3)  # new labels, same features
    first = FirstWeights()
    tuned = fit(pretrained.model_path, task, tmp_path / "tune", epochs=1, quiet=False, callbacks=[first])
    said = capsys.readouterr().err
    assert "the data looks unscaled (feature 'x': stds up to" in said
    assert "but the model's weights were trained (the scale of BatchNormalization" in said
    assert json.loads((tuned.run_dir / "run.json").read_text())["config"]["standardize"] is False
    at_start = with_weights(onnx.load(tuned.model_path), first.values)
    np.testing.assert_allclose(ort_run(at_start, {"x": features})[0], ort_run(original, {"x": features})[0],
                               rtol=1e-6, atol=1e-6)

    fresh = fit(batch_norm_mlp(), task, tmp_path / "fresh", epochs=1, quiet=False)
    assert "standardizing the data, which looks unscaled" in capsys.readouterr().err
    assert json.loads((fresh.run_dir / "run.json").read_text())["config"]["standardize"] is True
    forced = fit(pretrained.model_path, task, tmp_path / "forced", epochs=1, standardize=True, quiet=True)
    assert any(t.name.startswith("onnxkit.standardize.") for t in onnx.load(forced.model_path).graph.initializer)


def written_out_norm(form: str, scale: float = 1.0, shift: float = 0.0) -> onnx.ModelProto:
    """x [batch, 13] -> Gemm -> a norm over 16 features written as separate ops -> Gemm: PyTorch's LayerNorm before
    opset 17 (`layer`), T5's RMSNorm (`rms`), or tf2onnx's LayerNorm (`tf2onnx`: the scale multiplies the reciprocal
    of the deviation, and the shift less the scaled mean is added); every scale value `scale`, every shift `shift`."""
    n = helper.make_node
    if form == "layer":
        nodes = [n("ReduceMean", ["h"], ["mean"], axes=[-1]), n("Sub", ["h", "mean"], ["d"]),
                 n("Pow", ["d", "two"], ["sq"]), n("ReduceMean", ["sq"], ["var"], axes=[-1]),
                 n("Add", ["var", "eps"], ["var_eps"]), n("Sqrt", ["var_eps"], ["std"]),
                 n("Div", ["d", "std"], ["xhat"]), n("Mul", ["xhat", "norm.weight"], ["scaled"]),
                 n("Add", ["scaled", "norm.bias"], ["normed"])]
    elif form == "rms":
        nodes = [n("Pow", ["h", "two"], ["sq"]), n("ReduceMean", ["sq"], ["ms"], axes=[-1]),
                 n("Add", ["ms", "eps"], ["ms_eps"]), n("Sqrt", ["ms_eps"], ["rms"]), n("Reciprocal", ["rms"], ["inv"]),
                 n("Mul", ["h", "inv"], ["xhat"]), n("Mul", ["xhat", "norm.weight"], ["normed"])]
    else:
        nodes = [n("ReduceMean", ["h"], ["mean"], axes=[-1]), n("Sub", ["h", "mean"], ["d"]),
                 n("Mul", ["d", "d"], ["sq"]), n("ReduceMean", ["sq"], ["var"], axes=[-1]),
                 n("Add", ["var", "eps"], ["var_eps"]), n("Sqrt", ["var_eps"], ["std"]),
                 n("Reciprocal", ["std"], ["inv"]), n("Mul", ["inv", "norm.weight"], ["factor"]),
                 n("Mul", ["h", "factor"], ["hx"]), n("Mul", ["mean", "factor"], ["mx"]),
                 n("Sub", ["norm.bias", "mx"], ["offset"]), n("Add", ["hx", "offset"], ["normed"])]
    rng = np.random.default_rng(0)
    weights = {"w1": rng.normal(size=(13, 16)), "b1": np.zeros(16), "norm.weight": np.full(16, scale),
               "norm.bias": np.full(16, shift), "w2": rng.normal(size=(16, 3)), "b2": np.zeros(3),
               "two": np.array(2.0), "eps": np.array(1e-5)}
    if form == "rms":
        del weights["norm.bias"]
    graph = helper.make_graph(
        [n("Gemm", ["x", "w1", "b1"], ["h"]), *nodes, n("Gemm", ["normed", "w2", "b2"], ["logits"])], "written-out",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 13])],
        [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("form", ["layer", "rms", "tf2onnx"])
def test_a_norm_written_as_separate_ops_shows_training_by_its_scale_and_shift(form):
    """Norms exported as separate ops (PyTorch's LayerNorm before opset 17, RMSNorm, tf2onnx's) showed nothing, so a
    pretrained float-input model of them was standardised on unscaled data; their scale and shift show it now."""
    assert trained_norm(written_out_norm(form)) is None
    moved = trained_norm(written_out_norm(form, scale=1.1))
    assert moved.startswith("the scale of the normalisation written out at Mul ") and moved.endswith(
        "is not all 1, its start")
    if form == "layer":
        assert trained_norm(written_out_norm(form, shift=0.2)) == (
            "the shift of the normalisation written out at Add 'normed' is not all 0, its start")
    model = written_out_norm(form, scale=1.1, shift=0.2)  # it computes the norm it stands for
    w = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    x = np.random.default_rng(1).normal(size=(5, 13)).astype(np.float32)
    h = x @ w["w1"] + w["b1"]
    if form == "rms":
        normed = h / np.sqrt((h ** 2).mean(-1, keepdims=True) + 1e-5) * 1.1
    else:
        normed = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + 1e-5) * 1.1 + 0.2
    np.testing.assert_allclose(ort_run(model, {"x": x})[0], normed @ w["w2"] + w["b2"], rtol=1e-4, atol=1e-4)


def torchscript_group_norm(scale: float = 1.0, shift: float = 0.0, producer: str = "pytorch",
                           constant_nodes: bool = False) -> onnx.ModelProto:
    """x [batch, 4, 6] -> GroupNorm(2, 4) as TorchScript writes it (a Reshape to the 2 groups, an
    InstanceNormalization with the exporter's ones and zeros, a Reshape back, then the module's weight and bias as a
    Mul and an Add of [4, 1] tensors it names onnx::Mul_5 and onnx::Add_6) -> Flatten -> Gemm. `constant_nodes`:
    the ones and zeros as Constant nodes (`do_constant_folding=False`)."""
    n = helper.make_node
    ones, zeros = np.ones(2, np.float32), np.zeros(2, np.float32)
    nodes = [n("Reshape", ["x", "groups"], ["grouped"]),
             n("InstanceNormalization", ["grouped", "/norm/Constant_output_0", "/norm/Constant_1_output_0"], ["in"]),
             n("Reshape", ["in", "back"], ["normed"]), n("Mul", ["normed", "onnx::Mul_5"], ["scaled"]),
             n("Add", ["scaled", "onnx::Add_6"], ["shifted"]), n("Flatten", ["shifted"], ["flat"]),
             n("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], transB=1)]
    weights = {"groups": np.array([0, 2, -1], np.int64), "back": np.array([0, 4, 6], np.int64),
               "onnx::Mul_5": np.full((4, 1), scale, np.float32), "onnx::Add_6": np.full((4, 1), shift, np.float32),
               "fc.weight": np.random.default_rng(0).normal(size=(3, 24)).astype(np.float32),
               "fc.bias": np.zeros(3, np.float32)}
    norm = {"/norm/Constant_output_0": ones, "/norm/Constant_1_output_0": zeros}
    if constant_nodes:
        nodes[:0] = [n("Constant", [], [k], value=numpy_helper.from_array(v, k)) for k, v in norm.items()]
    else:
        weights |= norm
    graph = helper.make_graph(nodes, "group-norm",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 4, 6])],
                              [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["batch", 3])],
                              [numpy_helper.from_array(v, k) for k, v in weights.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name=producer)


@pytest.mark.parametrize("constant_nodes", [False, True])
def test_a_torchscript_group_norms_own_ones_and_zeros_do_not_train(constant_nodes):
    """TorchScript writes nn.GroupNorm (and nn.InstanceNorm without affine) as an InstanceNormalization of ones and
    zeros it made: PyTorch trains no such tensors, and training them (a shift and scale per group) moved a
    GroupNorm ResNet's losses 1.3e-3 from PyTorch's within 10 AdamW steps (`tools/bench_conv.py --models groupnorm
    --check`); the module's weight and bias, after the Reshape back, train."""
    from onnxkit.train.training_form import find_parameters, trainable_form

    model, notes = trainable_form(torchscript_group_norm(constant_nodes=constant_nodes))
    assert find_parameters(model).parameters == ["onnx::Mul_5", "onnx::Add_6", "fc.weight", "fc.bias"]
    assert not any("Constant nodes" in note for note in notes)  # not lifted to train, nor said to be
    hand_made = torchscript_group_norm(producer="")  # no exporter's mark: ones and zeros are a norm's scale and shift
    assert "/norm/Constant_output_0" in find_parameters(hand_made).parameters


def test_a_torchscript_group_norm_shows_training_by_its_weight_and_bias():
    assert trained_norm(torchscript_group_norm()) is None
    assert trained_norm(torchscript_group_norm(scale=1.1)) == (
        "the scale of the normalisation written out at Mul 'scaled' is not all 1, its start")
    assert trained_norm(torchscript_group_norm(shift=0.2)) == (
        "the shift of the normalisation written out at Add 'shifted' is not all 0, its start")
