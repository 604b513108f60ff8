"""Weights PyTorch's TorchScript exporter writes as Identity copies of equal-valued ones (zero
biases, deep-copied layers, a fresh BatchNorm's statistics) train as tensors of their own."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxkit.autodiff import add_gradients, gradient_name
from onnxkit.data import Split, load_dataset
from onnxkit.files import load_model
from onnxkit.train import fit
from onnxkit.train.exporter_marks import untie_deduplicated, untie_exporter_copies
from onnxkit.train.training_form import find_parameters, trainable_form

pytestmark = pytest.mark.training


def exported_like_torchscript() -> onnx.ModelProto:
    """Gemm -> BatchNorm -> Relu -> Gemm -> Relu -> Gemm on 64 features, as the exporter writes a
    fresh model: BN's running mean / var are Identity copies of its beta / gamma (zeros / ones),
    and the second hidden layer is an Identity copy of the first (a deep copy before training)."""
    rng = np.random.default_rng(0)
    w1 = rng.normal(0, 0.1, (32, 64)).astype(np.float32)
    w_mid = rng.normal(0, 0.2, (32, 32)).astype(np.float32)
    arrays = {"fc1.weight": w1, "fc1.bias": np.zeros(32, np.float32), "bn.weight": np.ones(32, np.float32),
              "bn.bias": np.zeros(32, np.float32), "mid.weight": w_mid, "out.weight": rng.normal(0, 0.2, (10, 32)),
              "out.bias": np.zeros(10, np.float32)}
    copies = {"bn.running_mean": "bn.bias", "bn.running_var": "bn.weight", "mid2.weight": "mid.weight",
              "mid.bias": "fc1.bias", "mid2.bias": "mid.bias"}  # the last: a copy of a copy
    nodes = [helper.make_node("Identity", [src], [dst]) for dst, src in copies.items()] + [
        helper.make_node("Gemm", ["x", "fc1.weight", "fc1.bias"], ["h1"], transB=1),
        helper.make_node("BatchNormalization", ["h1", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"],
                         ["b1"]),
        helper.make_node("Relu", ["b1"], ["r1"]),
        helper.make_node("Gemm", ["r1", "mid.weight", "mid.bias"], ["h2"], transB=1),
        helper.make_node("Relu", ["h2"], ["r2"]),
        helper.make_node("Gemm", ["r2", "mid2.weight", "mid2.bias"], ["h3"], transB=1),
        helper.make_node("Relu", ["h3"], ["r3"]),
        helper.make_node("Gemm", ["r3", "out.weight", "out.bias"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "exported",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in arrays.items()],
    )
    return helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 17)])


def test_identity_copies_become_initializers_of_their_own():
    model = exported_like_torchscript()
    untied, made = untie_exporter_copies(model)
    assert sorted(made) == sorted(["bn.running_mean", "bn.running_var", "mid2.weight", "mid.bias", "mid2.bias"])
    assert not any(n.op_type == "Identity" for n in untied.graph.node)
    assert any(n.op_type == "Identity" for n in model.graph.node)  # the given model is not changed
    params = find_parameters(untied)
    assert params.buffers == ["bn.running_mean", "bn.running_var"]
    assert len(params.parameters) == 10  # the 7 given + mid2.weight, mid.bias and mid2.bias
    x = np.random.default_rng(1).normal(size=(5, 64)).astype(np.float32)
    run = lambda m: ort.InferenceSession(m.SerializeToString()).run(None, {"x": x})[0]  # noqa: E731
    np.testing.assert_array_equal(run(untied), run(model))  # the same function before training
    shared = onnx.ModelProto()
    shared.CopyFrom(model)  # a weight the model really shares: read twice, no Identity, stays one
    del shared.graph.node[:5]
    shared.graph.node[3].input[1] = "fc1.weight"
    assert untie_exporter_copies(shared) == (shared, [])


def test_batchnorm_statistics_and_copied_layers_train_apart(tmp_path):
    result = fit(exported_like_torchscript(), "digits", tmp_path / "run", epochs=15)
    assert result.metrics["test"]["accuracy"] >= 0.93
    trained = {t.name: numpy_helper.to_array(t) for t in onnx.load(result.model_path).graph.initializer}
    assert not np.allclose(trained["mid.weight"], trained["mid2.weight"])
    assert not np.allclose(trained["bn.running_mean"], trained["bn.bias"])
    # the running statistics follow the statistics of BatchNorm's input over the training data
    # (a moving average over batches while the weights before it move: close, not equal)
    x = load_dataset("digits").train.inputs["x"]
    h1 = x @ trained["fc1.weight"].T + trained["fc1.bias"]
    np.testing.assert_allclose(trained["bn.running_mean"], h1.mean(0), atol=0.15 * np.abs(h1.mean(0)).max())
    np.testing.assert_allclose(trained["bn.running_var"], h1.var(0), rtol=0.3)


def test_open_training_unties_them_as_fit_does(tmp_path):
    """The benchmarks' `open_training` skipped fit's preparation: the copied layer trained tied."""
    from onnxkit.train.problem import open_training

    session = open_training(exported_like_torchscript(), tmp_path / "session")
    assert {"mid2.weight", "mid.bias", "mid2.bias"} <= set(session.parameters())


def test_initializers_that_are_also_graph_inputs_train(tmp_path):
    """Old exporters (IR < 4; PyTorch's keep_initializers_as_inputs=True) list every initializer as a
    graph input too. Training failed in its own graph: "runs/x/artifacts/training.onnx: onnxruntime
    cannot load it (... Duplicate definition-site for (fc1.weight))"."""
    model = exported_like_torchscript()
    weights = model.graph.initializer
    model.graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, t.dims) for t in weights)
    result = fit(model, "digits", tmp_path / "run", epochs=1, batch_size=256, evaluate_test=False)
    trained = onnx.load(result.model_path)
    assert [i.name for i in trained.graph.input] == ["x"]
    ort.InferenceSession(trained.SerializeToString())  # an inference model still


def test_weights_held_in_constant_nodes_train(tmp_path, run_cli):
    """paddle2onnx and spox write every weight as a Constant node, and an old converter some: those stayed fixed
    (a PP-OCR recognizer from rapidocr-onnxruntime was 'nothing to train ... loosen freeze / train_only'). They
    train as initializers now, which the trained model holds, and it computes numpy's MLP of its weights."""
    rng = np.random.default_rng(0)
    first = rng.normal(0, 0.3, (4, 16)).astype(np.float32)
    constants = [helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value, name))
                 for name, value in [("W1", first), ("b1", np.zeros(16, np.float32))]]
    nodes = [*constants, helper.make_node("MatMul", ["x", "W1"], ["m"]), helper.make_node("Add", ["m", "b1"], ["h"]),
             helper.make_node("Relu", ["h"], ["r"]), helper.make_node("Gemm", ["r", "W2", "b2"], ["logits"])]
    graph = helper.make_graph(nodes, "old", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 3])],
                              [numpy_helper.from_array(rng.normal(0, 0.3, (16, 3)).astype(np.float32), "W2"),
                               numpy_helper.from_array(np.zeros(3, np.float32), "b2")])
    path = tmp_path / "old.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    result = run_cli("train", path, "--data", "iris", "--steps", "3", "--no-standardize", "-o", tmp_path / "run")
    assert result.code == 0, result.err
    assert "2 weights the exporter wrote as Constant nodes (W1, b1) train as initializers" in result.err
    assert "training 131 parameters" in result.err  # 64 + 16 + 48 + 3
    trained = onnx.load(tmp_path / "run" / "model.onnx")
    assert "Constant" not in {n.op_type for n in trained.graph.node}
    weights = {t.name: numpy_helper.to_array(t) for t in trained.graph.initializer}
    assert np.abs(weights["W1"] - first).max() > 1e-4
    x = rng.normal(size=(5, 4)).astype(np.float32)
    expected = np.maximum(x @ weights["W1"] + weights["b1"], 0) @ weights["W2"] + weights["b2"]
    got = ort.InferenceSession(trained.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def conv_net(weight: str, producer: str = "pytorch", fused_by: str | None = None,
             bias: str | None = None) -> onnx.ModelProto:
    """x [n, 1, 8, 8] -> Conv (weight named `weight`) -> Relu -> Flatten -> Gemm -> 10 logits, from
    `producer`; `fused_by` marks the Conv as the dynamo exporter's optimizer marks its rewrites. The bias is
    `bias`, by default onnx::Conv_8 beside a weight named onnx::Conv_N (TorchScript names both tensors it
    computes by folding BatchNorm so), else conv.bias."""
    rng = np.random.default_rng(0)
    bias = bias or ("onnx::Conv_8" if weight.startswith("onnx::Conv_") else "conv.bias")
    conv = helper.make_node("Conv", ["x", weight, bias], ["c"], name="/conv/Conv")
    if fused_by:
        conv.metadata_props.add(key="pkg.onnxscript.rewriter.rule_name", value=fused_by)
    nodes = [conv, helper.make_node("Relu", ["c"], ["r"]), helper.make_node("Flatten", ["r"], ["f"]),
             helper.make_node("Gemm", ["f", "fc.weight", "fc.bias"], ["logits"], transB=1)]
    graph = helper.make_graph(
        nodes, "net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        [numpy_helper.from_array(rng.normal(0, 0.3, (4, 1, 3, 3)).astype(np.float32), weight),
         numpy_helper.from_array(np.zeros(4, np.float32), bias),
         numpy_helper.from_array(rng.normal(0, 0.1, (10, 144)).astype(np.float32), "fc.weight"),
         numpy_helper.from_array(np.zeros(10, np.float32), "fc.bias")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name=producer)


@pytest.mark.parametrize("model, folded", [
    (conv_net("conv.weight", fused_by="RemoveOptionalBiasFromConv, FuseBatchNormIntoConv"), True),  # dynamo
    (conv_net("onnx::Conv_7"), True),  # TorchScript names the weight and bias it computed by folding
    (conv_net("conv.weight"), False),  # the module's own weight
    (conv_net("onnx::Conv_7", producer="onnxkit"), False),
    # a weight TorchScript computed from others beside the module's own bias: weight_norm's g * v / |v| (Hugging
    # Face's Wav2Vec2, its positional Conv); before, it got a BatchNorm PyTorch's module does not have
    (conv_net("onnx::Conv_7", bias="conv.bias"), False),
], ids=["dynamo", "torchscript", "unfolded", "other-producer", "weight-norm"])
def test_batchnorm_folded_into_weights_by_the_exporter_trains_again(tmp_path, run_cli, model, folded):
    """Both exporters fold a BatchNorm into the layer before it in eval mode, so an export trained as a network
    without BatchNorm (a CNN on three drawn shapes: 27.5% where PyTorch trains the module to 100%). The layer gets
    a BatchNorm again, in inference form the identity at the start (the data's statistics), and model.onnx
    keeps it, trained."""
    path = tmp_path / "net.onnx"
    onnx.save(model, path)
    result = run_cli("train", path, "--data", "digits-images", "--steps", "3", "-o", tmp_path / "run")
    assert result.code == 0, result.err
    line = ("PyTorch's exporter folded BatchNorm into 1 layer (/conv/Conv): each trains with a BatchNorm after it "
            "again, started as the fresh BatchNorm the export's was (weight 1, bias 0) so that the model computes what "
            "it did")
    assert (line in result.err) == folded, result.err
    trained = load_model(tmp_path / "run" / "model.onnx")
    assert [n.op_type for n in trained.graph.node][:2] == ["Conv", "BatchNormalization" if folded else "Relu"]
    if folded:
        values = {t.name: numpy_helper.to_array(t) for t in trained.graph.initializer}
        assert trained.graph.node[1].output == ["c"] and trained.graph.node[2].input == ["c"]
        assert not np.allclose(values["/conv/Conv.batchnorm.running_mean"], 0)  # trained: its statistics move


def test_a_restored_batchnorm_trains_with_the_layer_train_only_names(tmp_path, run_cli):
    """--train-only naming the folded layer's weight left the BatchNorm put back after it frozen, with its running
    statistics (both affine weights frozen): the identity, which the line said trained. It trains with its layer."""
    path = tmp_path / "net.onnx"
    onnx.save(conv_net("onnx::Conv_7"), path)
    result = run_cli("train", path, "--data", "digits-images", "--steps", "3", "--train-only", "onnx::Conv_7", "-o",
                     tmp_path / "run")
    assert result.code == 0, result.err
    assert "training 44 parameters" in result.err, result.err  # the Conv's 36 weights, the BatchNorm's 4 + 4
    values = {t.name: numpy_helper.to_array(t) for t in load_model(tmp_path / "run" / "model.onnx").graph.initializer}
    weight, var = values["/conv/Conv.batchnorm.weight"], values["/conv/Conv.batchnorm.running_var"]
    assert not np.allclose(weight, np.sqrt(var + 1e-5)), (weight, var)  # no longer the identity


def test_a_model_trained_with_its_batchnorm_put_back_trains_again(tmp_path, run_cli):
    """model.onnx trained again (more epochs, new data): its Conv still read a weight named onnx::Conv_N, so a second
    BatchNorm was put back under the first one's names, and training failed in onnxruntime ('Duplicate
    definition-site for (/conv/Conv.batchnorm.weight)', said to be a bug). A layer a BatchNorm reads keeps it."""
    path = tmp_path / "net.onnx"
    onnx.save(conv_net("onnx::Conv_7"), path)
    first = run_cli("train", path, "--data", "digits-images", "--steps", "2", "-o", tmp_path / "first")
    assert first.code == 0 and "folded BatchNorm into 1 layer" in first.err, first.err
    again = run_cli("train", tmp_path / "first" / "model.onnx", "--data", "digits-images", "--steps", "2", "-o",
                    tmp_path / "again")
    assert again.code == 0, again.err
    assert "folded BatchNorm" not in again.err, again.err
    ops = [n.op_type for n in load_model(tmp_path / "again" / "model.onnx").graph.node]
    assert ops[:3] == ["Conv", "BatchNormalization", "Relu"], ops


def test_patterns_may_name_the_batchnorm_put_back(tmp_path, run_cli):
    """--freeze '*.batchnorm.*' was refused as matching no parameter: patterns were checked before the BatchNorm
    was put back. Frozen, it stays the identity it starts as (scale = sqrt(var + eps), shift = mean)."""
    path = tmp_path / "net.onnx"
    onnx.save(conv_net("onnx::Conv_7"), path)
    result = run_cli("train", path, "--data", "digits-images", "--steps", "3", "--freeze", "*.batchnorm.*",
                     "-o", tmp_path / "run")
    assert result.code == 0, result.err
    values = {t.name: numpy_helper.to_array(t) for t in load_model(tmp_path / "run" / "model.onnx").graph.initializer}
    bn = "/conv/Conv.batchnorm"
    np.testing.assert_allclose(values[f"{bn}.weight"], np.sqrt(values[f"{bn}.running_var"] + 1e-5), rtol=1e-6)
    np.testing.assert_array_equal(values[f"{bn}.bias"], values[f"{bn}.running_mean"])
    assert run_cli("train", path, "--data", "digits-images", "--steps", "1", "--freeze", "*.batchnrom.*", "-o",
                   tmp_path / "typo").code != 0  # a pattern matching nothing is still refused


def test_a_folded_batchnorm_that_would_see_one_value_a_channel_stays_folded(tmp_path, run_cli):
    """A Gemm the dynamo exporter folded BatchNorm1d into, trained in batches of one row: a BatchNorm put back
    would normalise each channel over one value (every value 0), so the layer trains as exported, said in a line;
    in batches of 2 it is put back."""
    rng = np.random.default_rng(0)
    fc1 = helper.make_node("Gemm", ["x", "fc1.weight", "fc1.bias"], ["h"], name="/fc1/Gemm", transB=1)
    fc1.metadata_props.add(key="pkg.onnxscript.rewriter.rule_name", value="FuseBatchNormIntoGemm")
    graph = helper.make_graph(
        [fc1, helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("Gemm", ["r", "fc2.weight", "fc2.bias"], ["logits"], transB=1)], "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(rng.normal(0, 0.5, (16, 4)).astype(np.float32), "fc1.weight"),
         numpy_helper.from_array(np.zeros(16, np.float32), "fc1.bias"),
         numpy_helper.from_array(rng.normal(0, 0.3, (3, 16)).astype(np.float32), "fc2.weight"),
         numpy_helper.from_array(np.zeros(3, np.float32), "fc2.bias")])
    path = tmp_path / "mlp.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="pytorch"), path)
    for batch, restored in (("1", False), ("2", True)):
        result = run_cli("train", path, "--data", "iris", "--steps", "3", "--batch-size", batch, "-o",
                         tmp_path / batch)
        assert result.code == 0, result.err
        assert ("warning: BatchNorm stays folded into /fc1/Gemm: in batches of one row it would normalise each "
                "channel over one value" in result.err) != restored, result.err
        ops = [n.op_type for n in load_model(tmp_path / batch / "model.onnx").graph.node]
        assert ops[ops.index("Gemm") + 1] == ("BatchNormalization" if restored else "Relu"), ops


def test_a_restored_batchnorm_starts_as_the_identity():
    """Before training, the model with its BatchNorm put back computes what the export did (to float rounding),
    and its running statistics are the layer's per-channel mean and variance over the sample, by numpy."""
    from onnxkit.evaluate import model_outputs
    from onnxkit.train.batchnorm_restore import channel_statistics, with_batch_norms

    model = conv_net("onnx::Conv_7")
    sample = load_dataset("digits-images").train
    stats = channel_statistics(model, sample, ["c"])
    restored = with_batch_norms(model, stats)
    np.testing.assert_allclose(model_outputs(restored, sample, "logits"), model_outputs(model, sample, "logits"),
                               rtol=1e-4, atol=1e-4)
    conv = model_outputs(with_output(model, "c"), sample.spread(256), "c")
    np.testing.assert_allclose(stats["c"][0], conv.mean(axis=(0, 2, 3)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["c"][1], conv.var(axis=(0, 2, 3)), rtol=1e-4, atol=1e-6)


def test_a_fresh_folded_batchnorm_comes_back_fresh(tmp_path, run_cli):
    """A layer whose folded shift is zero (a zero bias, or none: the dynamo exporter drops it) had a fresh BatchNorm
    folded into it, and gets PyTorch's fresh one back: weight 1, bias 0, in inference form the identity. Started
    from the data's statistics, it trained as the module computes in eval mode: a fresh EfficientNet-B0's logits
    were 1e-15 for every image, and it stayed at 10% on digits where PyTorch reaches 94%."""
    from onnxkit.evaluate import model_outputs
    from onnxkit.train.batchnorm_restore import fresh_batch_norms, with_batch_norms

    fresh, shifted, biasless = conv_net("onnx::Conv_7"), conv_net("onnx::Conv_7"), conv_net("onnx::Conv_7")
    shifted.graph.initializer[1].CopyFrom(numpy_helper.from_array(np.full(4, 0.1, np.float32),
                                                                  shifted.graph.initializer[1].name))
    del biasless.graph.node[0].input[2]
    for model, want in ((fresh, {"c"}), (shifted, set()), (biasless, {"c"})):
        assert fresh_batch_norms(model, model.graph.node[:1]) == want
    sample = load_dataset("digits-images").train
    restored = with_batch_norms(fresh, {}, {"c"})
    np.testing.assert_allclose(model_outputs(restored, sample, "logits"), model_outputs(fresh, sample, "logits"),
                               rtol=1e-6, atol=1e-6)
    values = {t.name: numpy_helper.to_array(t).tolist() for t in restored.graph.initializer}
    assert values["/conv/Conv.batchnorm.weight"] == [1.0] * 4 and values["/conv/Conv.batchnorm.bias"] == [0.0] * 4
    path = tmp_path / "shifted.onnx"
    onnx.save(shifted, path)
    result = run_cli("train", path, "--data", "digits-images", "--steps", "1", "-o", tmp_path / "run")
    assert "started from the training data's statistics so that" in result.err, result.err


def test_restored_batchnorm_statistics_are_taken_over_the_whole_split():
    """A split keeps its source's order, an image folder's class after class: the statistics were taken over
    its first 256 rows (a 32 x 32 digits folder: 3 classes of 10), here all blank images. They are taken over
    rows spread across the split, whose mean and variance they then match."""
    from onnxkit.evaluate import model_outputs
    from onnxkit.train.batchnorm_restore import channel_statistics

    model = conv_net("onnx::Conv_7")
    images = next(iter(load_dataset("digits-images").train.inputs.values()))[:500]
    ordered = Split("train", {"x": np.concatenate([np.zeros_like(images), images])}, np.repeat([0, 1], 500))
    mean, var = channel_statistics(model, ordered, ["c"])["c"]
    conv = model_outputs(with_output(model, "c"), ordered, "c")
    np.testing.assert_allclose(mean, conv.mean(axis=(0, 2, 3)), rtol=0.05)
    np.testing.assert_allclose(var, conv.var(axis=(0, 2, 3)), rtol=0.05)


def with_output(model: onnx.ModelProto, name: str) -> onnx.ModelProto:
    """`model` with its value `name` an output too."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    return probe


def test_a_layer_a_batchnorm_was_folded_into_keeps_its_own_weight(tmp_path):
    # the fused Conv carries the folded BatchNorm's marks (its op read bn.weight, missing from the graph): it was
    # 'untied' to a copy of its weight named bn.weight, so --freeze 'conv.*' matched nothing and the trained model
    # kept the unread conv.weight (onnxruntime warned of it at every load)
    model = conv_net("conv.weight", fused_by="FuseBatchNormIntoConv")
    model.graph.node[0].metadata_props.add(key="pkg.torch.onnx.fx_node", value=(
        "%bn : [num_users=1] = call_function[target=torch.ops.aten._native_batch_norm_legit_no_training.default]"
        "(args = (%conv2d, %p_bn_weight, %p_bn_bias, %b_bn_running_mean, %b_bn_running_var, 0.1, 1e-05), "
        "kwargs = {})"))
    model.graph.metadata_props.add(key="pkg.torch.export.ExportedProgram.graph_signature", value="".join(
        f"p_{k.replace('.', '_')}: PARAMETER target='{k}'\n"
        for k in ("conv.weight", "conv.bias", "bn.weight", "bn.bias", "fc.weight", "fc.bias")))
    form, notes = trainable_form(model)
    assert [n.input[1] for n in form.graph.node if n.op_type == "Conv"] == ["conv.weight"]
    assert {t.name for t in form.graph.initializer} == {"conv.weight", "conv.bias", "fc.weight", "fc.bias"}, notes


def exported_in_training_mode(true_initializer: bool = False) -> onnx.ModelProto:
    """Gemm -> BatchNorm -> Relu -> Dropout -> Gemm on 64 features as the TorchScript exporter writes it
    with training=TrainingMode.TRAINING: BatchNorm with training_mode=1 and its statistics outputs,
    Dropout reading a Constant ratio and a Constant True (`true_initializer`: the True an initializer,
    as the dynamo exporter writes it)."""
    rng = np.random.default_rng(0)
    def const(name, value):  # type: ignore[no-untyped-def]
        return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.array(value), name))

    nodes = [
        helper.make_node("Gemm", ["x", "fc1.weight", "fc1.bias"], ["h"], transB=1),
        helper.make_node("BatchNormalization", ["h", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"],
                         ["b", "b.mean", "b.var"], training_mode=1, momentum=0.9),
        helper.make_node("Relu", ["b"], ["r"]),
        const("ratio", np.float32(0.2)), *([] if true_initializer else [const("training", True)]),
        helper.make_node("Dropout", ["r", "ratio", "training"], ["d", "mask"]),
        helper.make_node("Gemm", ["d", "out.weight", "out.bias"], ["logits"], transB=1),
    ]
    arrays = {"fc1.weight": rng.normal(0, 0.1, (32, 64)), "fc1.bias": np.zeros(32), "bn.weight": np.ones(32),
              "bn.bias": np.zeros(32), "bn.running_mean": np.zeros(32), "bn.running_var": np.ones(32),
              "out.weight": rng.normal(0, 0.2, (10, 32)), "out.bias": np.zeros(10)}
    graph = helper.make_graph(nodes, "net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
                              [numpy_helper.from_array(v.astype(np.float32), k) for k, v in arrays.items()])
    if true_initializer:
        graph.initializer.append(numpy_helper.from_array(np.array(True), "training"))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="pytorch")


@pytest.mark.parametrize("true_initializer", [False, True], ids=["true-node", "true-initializer"])
def test_a_model_exported_in_training_mode_is_written_in_inference_mode(tmp_path, run_cli, true_initializer):
    """The trained model kept BatchNorm's training_mode=1: it normalised each batch by its own statistics,
    so an example alone got other scores than in a batch of 8 (by up to 5.8 on an MLP with BatchNorm1d),
    and the running statistics it was trained to were never read. The True each Dropout read goes
    (onnxruntime warned of the unused initializer at every load)."""
    path = tmp_path / "net.onnx"
    onnx.save(exported_in_training_mode(true_initializer), path)
    result = run_cli("train", path, "--data", "digits", "--steps", "5", "-o", tmp_path / "run")
    assert result.code == 0, result.err
    assert "the model's 1 BatchNormalization, 1 Dropout nodes were exported in training mode" in result.err
    trained = onnx.load(tmp_path / "run" / "model.onnx")
    w = {t.name: numpy_helper.to_array(t) for t in trained.graph.initializer}
    assert not np.allclose(w["bn.running_mean"], 0)  # updated in training
    x = load_dataset("digits").test.inputs["x"][:8].astype(np.float32)
    session = ort.InferenceSession(trained.SerializeToString(), providers=["CPUExecutionProvider"])
    batch = session.run(None, {"x": x})[0]
    alone = np.concatenate([session.run(None, {"x": x[i:i + 1]})[0] for i in range(8)])
    h = x @ w["fc1.weight"].T + w["fc1.bias"]
    b = (h - w["bn.running_mean"]) / np.sqrt(w["bn.running_var"] + 1e-5) * w["bn.weight"] + w["bn.bias"]
    expected = np.maximum(b, 0) @ w["out.weight"].T + w["out.bias"]
    np.testing.assert_allclose(batch, expected, atol=1e-4)
    np.testing.assert_allclose(alone, expected, atol=1e-4)
    assert [n.op_type for n in trained.graph.node] == ["Gemm", "BatchNormalization", "Relu", "Constant", "Dropout",
                                                        "Gemm"]  # the same nodes, but the True
    read = {name for node in trained.graph.node for name in node.input}
    assert [t.name for t in trained.graph.initializer if t.name not in read] == []


def exported_like_dynamo(merged: bool, out_bias: str = "out.bias") -> onnx.ModelProto:
    """x [n, 64] -> Gemm (in) -> Relu -> Gemm (blocks.0) -> Relu -> Gemm (blocks.1, a deep copy of
    blocks.0) -> Relu -> Gemm (out), as the dynamo exporter writes it: each node's module in its name
    scopes, every parameter in the graph's signature, and, `merged`, blocks.1's weight and bias left
    out for blocks.0's equal ones and the zero bias of out removed, as its optimizer does (`out_bias`: its name,
    as the module calls it: F.linear(h, w, self.dec_bias) reads one named otherwise)."""
    rng = np.random.default_rng(0)
    block = {"weight": rng.normal(0, 0.3, (16, 16)), "bias": np.zeros(16)}
    arrays = {"in.weight": rng.normal(0, 0.2, (16, 64)), "in.bias": rng.normal(0, 0.1, 16),
              **{f"blocks.{i}.{k}": v for i in (0, 1) for k, v in block.items()},
              "out.weight": rng.normal(0, 0.3, (10, 16)), out_bias: np.zeros(10)}
    nodes, h = [], "x"
    for layer, scopes in [("in", "'in'"), ("blocks.0", "'blocks', 'blocks.0'"), ("blocks.1", "'blocks', 'blocks.1'"),
                          ("out", "'out'")]:
        source = "blocks.0" if merged and layer == "blocks.1" else layer
        bias = out_bias if layer == "out" else f"{source}.bias"
        reads = [h, f"{source}.weight"] + ([] if merged and layer == "out" else [bias])
        nodes.append(helper.make_node("Gemm", reads, [f"{layer}.y"], transB=1))
        nodes[-1].metadata_props.add(key="pkg.torch.onnx.name_scopes", value=f"['', {scopes}, 'linear']")
        if merged and layer == "out":  # as the optimizer marks the node whose zero bias it removed
            nodes[-1].metadata_props.add(key="pkg.onnxscript.rewriter.rule_name", value="RemoveOptionalBiasFromGemm")
        if layer != "blocks.1":  # the op it came from (blocks.1 is told by its name scopes alone)
            p = layer.replace(".", "_")
            nodes[-1].metadata_props.add(key="pkg.torch.onnx.fx_node", value=(
                f"%linear : [num_users=1] = call_function[target=torch.ops.aten.linear.default](args = (%{h}, "
                f"%p_{p}_weight, %p_{bias.replace('.', '_')}), kwargs = {{}})"))
        if layer != "out":
            nodes.append(helper.make_node("Relu", [f"{layer}.y"], [f"{layer}.r"]))
            h = f"{layer}.r"
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in arrays.items()
             if not (merged and (k.startswith("blocks.1") or k == out_bias))]
    graph = helper.make_graph(nodes, "main_graph", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])],
                              [helper.make_tensor_value_info("out.y", TensorProto.FLOAT, ["n", 10])], inits)
    signature = "\n# inputs\n" + "".join(f"p_{k.replace('.', '_')}: PARAMETER target='{k}'\n" for k in arrays)
    graph.metadata_props.add(key="pkg.torch.export.ExportedProgram.graph_signature",
                             value=signature + "x: USER_INPUT\n")
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="pytorch")


@pytest.mark.parametrize("out_bias", ["out.bias", "dec_bias"])
def test_parameters_the_dynamo_exporter_merged_train_as_their_own(tmp_path, run_cli, out_bias):
    """The dynamo exporter keeps one initializer of equal-valued tensors: a fresh 2-layer TransformerEncoder
    (deep-copied layers), its LayerNorms' ones and zero biases trained as one tensor each, 12 of a tiny
    ViT's parameters tied to others (its gradients 0.7-1.9 of the largest element off autograd's; test
    accuracy 92.8% with the README's digits-cnn flags where PyTorch trains the module to 95.8%); the
    zero biases its optimizer removes (attention's output projection) did not train at all."""
    runs = {}
    for merged in (True, False):
        path = tmp_path / f"{merged}.onnx"
        onnx.save(exported_like_dynamo(merged, out_bias), path)
        result = run_cli("train", path, "--data", "digits", "--steps", "4", "--lr", "0.01",
                         "-o", tmp_path / f"{merged}")
        assert result.code == 0, result.err
        runs[merged] = {t.name: numpy_helper.to_array(t)
                        for t in onnx.load(tmp_path / f"{merged}" / "model.onnx").graph.initializer}
        said = ("3 parameters were merged by PyTorch's exporter into equal-valued ones or dropped as zero biases "
                f"(blocks.1.weight, blocks.1.bias, {out_bias}: ")
        assert said in result.err if merged else "merged" not in result.err
    assert runs[True].keys() == runs[False].keys()
    for name, value in runs[False].items():
        np.testing.assert_allclose(runs[True][name], value, rtol=0, atol=1e-6, err_msg=name)
    assert not np.allclose(runs[True]["blocks.0.weight"], runs[True]["blocks.1.weight"])


@pytest.mark.parametrize("group", [1, 2])
def test_a_transposed_convs_removed_bias_comes_back_one_per_output_channel(group):
    """The optimizer removes a ConvTranspose's zero bias as it does a Gemm's and a Conv's; its weight is
    [in, out / group, kH, kW]."""
    node = helper.make_node("ConvTranspose", ["x", "up.weight"], ["y"], group=group, strides=[2, 2])
    node.metadata_props.add(key="pkg.onnxscript.rewriter.rule_name", value="RemoveOptionalBiasFromConvTranspose")
    node.metadata_props.add(key="pkg.torch.onnx.fx_node", value=(
        "%conv_transpose2d : [num_users=1] = call_function[target=torch.ops.aten.conv_transpose2d.input]"
        "(args = (%x, %p_up_weight, %p_up_bias, [2, 2]), kwargs = {})"))
    graph = helper.make_graph(
        [node], "main_graph", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3 * group, 6, 6])],
        [numpy_helper.from_array(np.ones((4, 3, 2, 2), np.float32), "up.weight")])
    graph.metadata_props.add(key="pkg.torch.export.ExportedProgram.graph_signature", value=(
        "p_up_weight: PARAMETER target='up.weight'\np_up_bias: PARAMETER target='up.bias'\nx: USER_INPUT\n"))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="pytorch")
    untied, made = untie_deduplicated(model)
    assert made == ["up.bias"] and list(untied.graph.node[0].input) == ["x", "up.weight", "up.bias"]
    assert numpy_helper.to_array(untied.graph.initializer[-1]).tolist() == [0.0] * 3 * group


def tied_export(dynamo: bool) -> onnx.ModelProto:
    """An Embedding tied to the Linear after it, as PyTorch's exporters write it: the lookup reads
    `head.weight` [50, 16], the Linear the transposed copy folded at export (dynamo: `val_2`, marked as
    folded from head.weight; TorchScript: `onnx::MatMul_11`, unmarked)."""
    table = np.random.default_rng(0).normal(size=(50, 16)).astype(np.float32)
    copy = "val_2" if dynamo else "onnx::MatMul_11"
    folded = helper.make_tensor_value_info(copy, TensorProto.FLOAT, [16, 50])
    if dynamo:
        folded.metadata_props.add(key="pkg.onnxscript.optimizer.folded_from", value="['head.weight']")
    graph = helper.make_graph(
        [helper.make_node("Gather", ["head.weight", "ids"], ["rows"]), helper.make_node("Tanh", ["rows"], ["h"]),
         helper.make_node("MatMul", ["h", copy], ["logits"])], "tied",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [4, 50])],
        [numpy_helper.from_array(table, "head.weight"), numpy_helper.from_array(table.T.copy(), copy)],
        value_info=[folded] if dynamo else [])
    return helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 18)],
                             producer_name="pytorch")


@pytest.mark.parametrize("dynamo", [True, False])
def test_a_tied_weight_the_exporter_stored_transposed_trains_as_one(dynamo):
    from onnxkit.autodiff.check import run_gradients, with_projection_loss

    model, copy = tied_export(dynamo), "val_2" if dynamo else "onnx::MatMul_11"
    retied, notes = trainable_form(model)
    assert [t.name for t in retied.graph.initializer] == ["head.weight"]
    assert f"({copy} of head.weight) are transposed from them again" in notes[0]
    assert find_parameters(retied).parameters == ["head.weight"]
    ids = {"ids": np.array([3, 7, 3, 49], np.int64)}
    apart = run_gradients(with_projection_loss(model), ids, ["head.weight", copy])  # the copies' gradients
    tied = run_gradients(with_projection_loss(retied), ids, ["head.weight"])["head.weight"]
    np.testing.assert_allclose(tied, apart["head.weight"] + apart[copy].T, rtol=0, atol=1e-6)
    assert np.abs(apart[copy]).max() > 0.1  # the Linear's part, lost to the table before
    for value in (np.zeros((16, 50), np.float32), np.ones((16, 50), np.float32)):  # no transpose, or one by chance
        untouched = tied_export(dynamo)
        untouched.graph.initializer[0].raw_data = value.T.copy().tobytes() if value.any() else \
            untouched.graph.initializer[0].raw_data
        untouched.graph.initializer[1].raw_data = value.tobytes()
        kept, notes = trainable_form(untouched)
        assert notes == [] and len(kept.graph.initializer) == 2


def test_a_value_the_dynamo_exporter_typed_without_marks_is_a_constant():
    # nn.EmbeddingBag's translation divides by a float count the exporter stores as an initializer with
    # a bare value_info: no parameter of the module, so no weight to train
    model = exported_like_dynamo(merged=False)
    count = numpy_helper.from_array(np.array([2.0], np.float32), "val_9")
    model.graph.initializer.append(count)
    model.graph.value_info.append(helper.make_tensor_value_info("val_9", TensorProto.FLOAT, [1]))
    model.graph.node.append(helper.make_node("Div", ["out.y", "val_9"], ["halved"]))
    model.graph.output[0].name = "halved"
    assert "val_9" not in find_parameters(model).parameters
    del model.graph.metadata_props[:]  # no signature (TorchScript, a hand-made model): a weight like any other
    assert "val_9" in find_parameters(model).parameters


def test_a_folded_weight_two_deep_copied_layers_read_trains_as_two(tmp_path):
    """A fresh 2-layer nn.TransformerEncoder exported by dynamo: the exporter folds each Linear's transposed weight
    (val_9, folded from layer 0's) and merges layer 1's equal one into it: layer 1's in_proj, linear1 and linear2
    trained tied to layer 0's (2,970 of PyTorch's 4,762 parameters)."""
    rng = np.random.default_rng(0)
    folded = rng.normal(0, 0.2, (64, 64)).astype(np.float32)
    info = helper.make_tensor_value_info("val_9", TensorProto.FLOAT, [64, 64])
    info.metadata_props.add(key="pkg.onnxscript.optimizer.folded_from", value="['blocks.0.weight']")
    nodes = []
    for layer, h in ((0, "x"), (1, "h0")):
        nodes.append(helper.make_node("MatMul", [h, "val_9"], [f"m{layer}"]))
        nodes[-1].metadata_props.add(key="pkg.torch.onnx.fx_node", value=(
            f"%linear : [num_users=1] = call_function[target=torch.ops.aten.linear.default](args = (%{h}, "
            f"%p_blocks_{layer}_weight), kwargs = {{}})"))
        nodes.append(helper.make_node("Tanh", [f"m{layer}"], [f"h{layer}"]))
    nodes.append(helper.make_node("MatMul", ["h1", "out.weight"], ["logits"]))
    graph = helper.make_graph(
        nodes, "main_graph", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 10])],
        [numpy_helper.from_array(folded, "val_9"),
         numpy_helper.from_array(rng.normal(0, 0.3, (64, 10)).astype(np.float32), "out.weight")], value_info=[info])
    graph.metadata_props.add(key="pkg.torch.export.ExportedProgram.graph_signature", value="".join(
        f"p_{k.replace('.', '_')}: PARAMETER target='{k}'\n" for k in ("blocks.0.weight", "blocks.1.weight",
                                                                       "out.weight")))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="pytorch")
    from onnxkit.train.training_form import trainable_form

    untied, _ = trainable_form(model)
    assert [n.input[1] for n in untied.graph.node if n.op_type == "MatMul"] == ["val_9", "blocks.1.weight.T",
                                                                                 "out.weight"]
    assert find_parameters(untied).parameters == ["val_9", "out.weight", "blocks.1.weight.T"]
    result = fit(model, "digits", tmp_path / "run", steps=4, lr=0.01, quiet=True)
    trained = {t.name: numpy_helper.to_array(t) for t in onnx.load(result.model_path).graph.initializer}
    assert np.abs(trained["val_9"] - trained["blocks.1.weight.T"]).max() > 1e-4  # two layers, trained apart


def test_a_batchnorms_statistics_merged_into_its_own_weights_are_its_own_again():
    """The dynamo exporter merges a fresh BatchNorm's running mean (zeros) into its bias and its running variance
    (ones) into its weight: BatchNormalization(x, w, b, b, w), where its op read four tensors."""
    node = helper.make_node("BatchNormalization", ["x", "bn.weight", "bn.bias", "bn.bias", "bn.weight"], ["y"])
    node.metadata_props.add(key="pkg.torch.onnx.fx_node", value=(
        "%_native_batch_norm_legit_no_training : [num_users=1] = call_function[target=torch.ops.aten."
        "_native_batch_norm_legit_no_training.default](args = (%cat, %p_bn_weight, %p_bn_bias, "
        "%b_bn_running_mean, %b_bn_running_var, 0.1, 1e-05), kwargs = {})"))
    graph = helper.make_graph(
        [node], "main_graph", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3, 2, 2])],
        [numpy_helper.from_array(np.ones(3, np.float32), "bn.weight"),
         numpy_helper.from_array(np.zeros(3, np.float32), "bn.bias")])
    graph.metadata_props.add(key="pkg.torch.export.ExportedProgram.graph_signature", value=(
        "p_bn_weight: PARAMETER target='bn.weight'\np_bn_bias: PARAMETER target='bn.bias'\n"
        "b_bn_running_mean: BUFFER target='bn.running_mean'\nb_bn_running_var: BUFFER target='bn.running_var'\n"
        "cat: USER_INPUT\n"))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="pytorch")
    untied, made = untie_deduplicated(model)
    assert made == ["bn.running_mean", "bn.running_var"]
    assert list(untied.graph.node[0].input) == ["x", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"]
    values = {t.name: numpy_helper.to_array(t).tolist() for t in untied.graph.initializer}
    assert values["bn.running_mean"] == [0.0] * 3 and values["bn.running_var"] == [1.0] * 3


def test_a_batchnorm_without_weight_and_bias_normalises_each_batch_in_training(tmp_path):
    """BatchNorm1d(affine=False), exported by dynamo: its op read no weight and bias, and the optimizer merged the ones
    and zeros it made for them into the fresh running variance and mean, BatchNormalization(x, var, mean, mean, var).
    Read as a scale and a shift, the statistics were no buffers: the node kept its fresh statistics in training, so
    the network trained without normalisation (a small CNN's dynamo export: 88.0% on digits-images in 2 epochs, where
    its TorchScript export trained to 90.3%, as it does now), and the first step's loss was not PyTorch's."""
    rng = np.random.default_rng(0)
    w, head = rng.normal(0, 0.3, (64, 16)).astype(np.float32), rng.normal(0, 0.3, (16, 10)).astype(np.float32)
    node = helper.make_node("BatchNormalization", ["h", "bn.running_var", "bn.running_mean", "bn.running_mean",
                                                   "bn.running_var"], ["n"], name="node_batch_norm")
    node.metadata_props.add(key="pkg.torch.onnx.fx_node", value=(
        "%_native_batch_norm_legit_no_training : [num_users=1] = call_function[target=torch.ops.aten."
        "_native_batch_norm_legit_no_training.default](args = (%mm, None, None, %b_bn_running_mean, "
        "%b_bn_running_var, 0.1, 1e-05), kwargs = {})"))
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), node, helper.make_node("MatMul", ["n", "head"], ["logits"])],
        "main_graph", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(head, "head"),
         numpy_helper.from_array(np.zeros(16, np.float32), "bn.running_mean"),
         numpy_helper.from_array(np.ones(16, np.float32), "bn.running_var")])
    graph.metadata_props.add(key="pkg.torch.export.ExportedProgram.graph_signature", value=(
        "p_w: PARAMETER target='w'\np_head: PARAMETER target='head'\nb_bn_running_mean: BUFFER target="
        "'bn.running_mean'\nb_bn_running_var: BUFFER target='bn.running_var'\nx: USER_INPUT\n"))
    for name, kind in (("w", "PARAMETER"), ("head", "PARAMETER"), ("bn.running_mean", "BUFFER"),
                       ("bn.running_var", "BUFFER")):
        info = helper.make_tensor_value_info(name, TensorProto.FLOAT, None)
        info.metadata_props.add(key="pkg.torch.export.graph_signature.InputSpec.kind", value=kind)
        graph.value_info.append(info)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="pytorch")
    assert find_parameters(trainable_form(model)[0]).buffers == ["bn.running_mean", "bn.running_var"]
    train = load_dataset("digits").train
    result = fit(model, "digits", tmp_path / "run", optimizer="sgd", lr=0.1, steps=1, batch_size=len(train),
                 shuffle=False, evaluate_test=False, standardize=False)
    h = train.inputs["x"].astype(np.float64) @ w
    logits = (h - h.mean(0)) / np.sqrt(h.var(0) + 1e-5) @ head
    shifted = logits - logits.max(1, keepdims=True)
    picked = np.take_along_axis(shifted - np.log(np.exp(shifted).sum(1, keepdims=True)), train.labels[:, None], 1)
    assert result.history[0]["train_loss"] == pytest.approx(-picked.mean(), rel=1e-5)  # PyTorch's first loss
    stats = {t.name: numpy_helper.to_array(t) for t in onnx.load(result.model_path).graph.initializer}
    np.testing.assert_allclose(stats["bn.running_mean"], 0.1 * h.mean(0), rtol=1e-4, atol=1e-6)  # updated


def _dynamo_norm(op: str, inputs: list[str], aten: str, args: str, name: str) -> onnx.NodeProto:
    node = helper.make_node(op, inputs, [f"{name}.y"], name=name)
    node.metadata_props.add(key="pkg.torch.onnx.fx_node", value=(
        f"%{aten} : [num_users=1] = call_function[target=torch.ops.aten.{aten}.default](args = ({args}), "
        "kwargs = {})"))
    return node


def _signed(nodes: list, inputs: list, params: dict, buffers: tuple = ()) -> onnx.ModelProto:
    """A model of `nodes` over x [n, 4] holding `params` ({name: array}) with the dynamo exporter's signature: those
    not in `buffers` as parameters, and `buffers` (some held by no initializer: merged into equal tensors)."""
    graph = helper.make_graph(nodes, "main_graph", inputs, [helper.make_tensor_value_info(
        nodes[-1].output[0], TensorProto.FLOAT, None)], [numpy_helper.from_array(v, k) for k, v in params.items()])
    graph.metadata_props.add(key="pkg.torch.export.ExportedProgram.graph_signature", value="".join(
        [f"p_{k.replace('.', '_')}: PARAMETER target='{k}'\n" for k in params if k not in buffers]
        + [f"b_{k.replace('.', '_')}: BUFFER target='{k}'\n" for k in buffers]) + "x: USER_INPUT\n")
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="pytorch")


def test_a_norm_without_weight_reads_no_other_layers_merged_weight():
    """LayerNorm(elementwise_affine=False) after a LayerNorm: the dynamo exporter merged the ones and zeros it made
    for the first's missing weight and bias into the second's fresh ones, so that weight trained on both layers'
    gradients (0.38 of its gradient off PyTorch's after one step); BatchNorm1d(affine=False) after a BatchNorm1d
    read the first's weight and bias as its scale, shift and statistics, and normalised with them in training (its
    first loss 2.455 where PyTorch's is 2.610)."""
    x = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])]
    ln = _signed([_dynamo_norm("LayerNormalization", ["x", "a.weight", "a.bias"], "layer_norm",
                               "%x, [4], %p_a_weight, %p_a_bias, 1e-05, False", "node_layer_norm"),
                  _dynamo_norm("LayerNormalization", ["node_layer_norm.y", "a.weight"], "layer_norm",
                               "%layer_norm, [4], None, None, 1e-05, False", "node_layer_norm_1")],
                 x, {"a.weight": np.ones(4, np.float32), "a.bias": np.zeros(4, np.float32)})
    form, _ = trainable_form(ln)
    assert [list(n.input) for n in form.graph.node] == [["x", "a.weight", "a.bias"],
                                                        ["node_layer_norm.y", "node_layer_norm_1.scale"]]
    assert find_parameters(form).parameters == ["a.weight", "a.bias"]  # the copy is a constant
    bn = _signed([_dynamo_norm("BatchNormalization", ["x", "a.weight", "a.bias", "a.running_mean", "a.running_var"],
                               "_native_batch_norm_legit_no_training",
                               "%x, %p_a_weight, %p_a_bias, %b_a_running_mean, %b_a_running_var, 0.1, 1e-05", "bn_a"),
                  _dynamo_norm("BatchNormalization", ["bn_a.y", "a.weight", "a.bias", "a.bias", "a.weight"],
                               "_native_batch_norm_legit_no_training",
                               "%relu, None, None, %b_b_running_mean, %b_b_running_var, 0.1, 1e-05", "bn_b")],
                 x, {"a.weight": np.ones(4, np.float32), "a.bias": np.zeros(4, np.float32),
                     "a.running_mean": np.zeros(4, np.float32), "a.running_var": np.ones(4, np.float32)},
                 ("a.running_mean", "a.running_var", "b.running_mean", "b.running_var"))
    form, notes = trainable_form(bn)
    assert list(form.graph.node[1].input) == ["bn_a.y", "bn_b.scale", "bn_b.bias", "b.running_mean", "b.running_var"]
    found = find_parameters(form)
    assert (found.parameters, found.buffers) == (["a.weight", "a.bias"], ["a.running_mean", "a.running_var",
                                                                          "b.running_mean", "b.running_var"])
    assert any(note.startswith("normalisations (bn_b) read other") for note in notes)


def test_a_layer_applied_twice_keeps_its_weight_shared():
    # ALBERT's one layer runs num_hidden_layers times: TorchScript writes its Linear's transposed weight once per
    # call, the second an Identity copy, each call adding the same bias. The copy trained as a tensor of its own
    # (a 2-layer ALBERT: 33 parameters where PyTorch has 27, query and key gradients 3% to 98% off autograd's)
    rng = np.random.default_rng(4)
    w, b = rng.normal(0, 0.5, (3, 3)).astype(np.float32), rng.normal(0, 0.5, 3).astype(np.float32)
    nodes = [helper.make_node("Identity", ["onnx::MatMul_1"], ["onnx::MatMul_2"]),
             helper.make_node("MatMul", ["x", "onnx::MatMul_1"], ["m1"]),
             helper.make_node("Add", ["layer.bias", "m1"], ["h"]),
             helper.make_node("MatMul", ["h", "onnx::MatMul_2"], ["m2"]),
             helper.make_node("Add", ["layer.bias", "m2"], ["y"]),
             helper.make_node("ReduceSum", ["y"], ["loss"], keepdims=0)]
    graph = helper.make_graph(nodes, "albert", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("loss", TensorProto.FLOAT, [])],
                              [numpy_helper.from_array(w, "onnx::MatMul_1"), numpy_helper.from_array(b, "layer.bias")])
    model = helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 17)])
    model.producer_name = "pytorch"
    form, _ = trainable_form(model)
    assert find_parameters(form).parameters == ["onnx::MatMul_1", "layer.bias"]
    x = rng.normal(0, 1, (2, 3)).astype(np.float32)
    graph_with_grads = add_gradients(form, ["onnx::MatMul_1"], "loss")
    grad = ort.InferenceSession(graph_with_grads.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        [gradient_name("onnx::MatMul_1")], {"x": x})[0]
    h = x @ w + b  # sum(h w + b) = sum over rows of h . w's row sums: dw = h's column sums (x) ones + x^T (ones w^T)
    ones = np.ones((2, 3), np.float32)
    np.testing.assert_allclose(grad, h.T @ ones + x.T @ (ones @ w.T), rtol=1e-5)


def test_a_layer_the_dynamo_exporter_folded_once_a_call_keeps_its_weight_shared():
    # the dynamo export of ALBERT folds the shared Linear's transposed weight once a call (val_1, val_2, both marked
    # folded_from the one weight, which the graph no longer holds): they trained as two tensors
    rng = np.random.default_rng(5)
    w, b = rng.normal(0, 0.5, (3, 3)).astype(np.float32), rng.normal(0, 0.5, 3).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "val_1"], ["m1"]), helper.make_node("Add", ["m1", "layer.bias"], ["h"]),
             helper.make_node("MatMul", ["h", "val_2"], ["m2"]), helper.make_node("Add", ["m2", "layer.bias"], ["y"]),
             helper.make_node("ReduceSum", ["y"], ["loss"], keepdims=0)]
    infos = []
    for name in ("val_1", "val_2"):
        infos.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [3, 3]))
        infos[-1].metadata_props.add(key="pkg.onnxscript.optimizer.folded_from", value="['layer.weight']")
    graph = helper.make_graph(nodes, "albert", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("loss", TensorProto.FLOAT, [])],
                              [numpy_helper.from_array(w, "val_1"), numpy_helper.from_array(w, "val_2"),
                               numpy_helper.from_array(b, "layer.bias")], value_info=infos)
    graph.metadata_props.add(key="pkg.torch.export.ExportedProgram.graph_signature",
                             value="p_layer_weight: PARAMETER target='layer.weight'\n"
                                   "p_layer_bias: PARAMETER target='layer.bias'")
    form, notes = trainable_form(helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 18)]))
    assert find_parameters(form).parameters == ["val_1", "layer.bias"]
    assert any("val_2 of val_1" in note for note in notes)
    x = rng.normal(0, 1, (2, 3)).astype(np.float32)
    grads = add_gradients(form, ["val_1"], "loss")
    grad = ort.InferenceSession(grads.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        [gradient_name("val_1")], {"x": x})[0]
    ones = np.ones((2, 3), np.float32)
    np.testing.assert_allclose(grad, (x @ w + b).T @ ones + x.T @ (ones @ w.T), rtol=1e-5)


def cloned_parameter_export() -> onnx.ModelProto:
    """A table two layers read through `table.clone()`, as the dynamo exporter writes it with optimize=False
    (DeBERTa's relative position embeddings, once a layer): Identity nodes copying the parameter its signature
    lists into values typed without marks, each multiplied by the input, then the two added."""
    table = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    nodes, infos = [], []
    for k in (0, 1):
        clone = helper.make_node("Identity", ["rel.weight"], [f"clone_{k}"], name=f"node_clone_{k}")
        clone.metadata_props.add(key="pkg.torch.onnx.fx_node", value=(
            f"%clone_{k} : [num_users=1] = call_function[target=torch.ops.aten.clone.default](args = "
            "(%p_rel_weight,), kwargs = {})"))
        nodes += [clone, helper.make_node("MatMul", ["x", f"clone_{k}"], [f"h{k}"])]
        infos.append(helper.make_tensor_value_info(f"clone_{k}", TensorProto.FLOAT, [3, 4]))
    nodes.append(helper.make_node("Add", ["h0", "h1"], ["y"]))
    graph = helper.make_graph(nodes, "main_graph", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
                              [numpy_helper.from_array(table, "rel.weight")], value_info=infos)
    graph.metadata_props.add(key="pkg.torch.export.ExportedProgram.graph_signature",
                             value="p_rel_weight: PARAMETER target='rel.weight'\nx: USER_INPUT\n")
    info = helper.make_tensor_value_info("rel.weight", TensorProto.FLOAT, [3, 4])
    info.metadata_props.add(key="pkg.torch.export.graph_signature.InputSpec.kind", value="PARAMETER")
    graph.value_info.append(info)
    return helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 18)],
                             producer_name="pytorch")


def test_a_parameter_a_dynamo_export_clones_trains_as_the_one_parameter():
    # before: each clone became a tensor of its own, which the unmarked value_info then made a constant: a dynamo
    # (optimize=False) export of Hugging Face's DeBERTa-v2 left its relative position table untrained
    from onnxkit.autodiff.check import run_gradients, with_projection_loss

    model = cloned_parameter_export()
    form, notes = trainable_form(model)
    assert notes == [] and find_parameters(form).parameters == ["rel.weight"]
    x = np.random.default_rng(1).normal(size=(2, 3)).astype(np.float32)
    projected = with_projection_loss(form)
    r = next(numpy_helper.to_array(t) for t in projected.graph.initializer if t.name.endswith(".projection"))
    got = run_gradients(projected, {"x": x}, ["rel.weight"])["rel.weight"]
    np.testing.assert_allclose(got, 2 * x.T.astype(np.float64) @ r, rtol=1e-5, atol=1e-6)  # d sum((2 x W) R) / dW


def torchscript_folded_bias(folded: bool) -> onnx.ModelProto:
    """x [batch, 4, 8] @ a Linear's transposed weight onnx::MatMul_5, plus a [4, 4]-shaped relative bias, then
    tokens mean-pooled by a Gemm: as the TorchScript exporter writes Swin's attention bias, gathered from its table
    at export into onnx::Add_7 (`folded`), or, with do_constant_folding=False, gathered in the graph from the table
    `rel.table` by constant indices."""
    rng = np.random.default_rng(0)
    table = rng.normal(size=(7,)).astype(np.float32)
    index = (np.arange(4)[:, None] - np.arange(4)[None, :] + 3).astype(np.int64)
    nodes = [helper.make_node("MatMul", ["x", "onnx::MatMul_5"], ["h"])]
    weights = [numpy_helper.from_array(rng.normal(size=(8, 4)).astype(np.float32), "onnx::MatMul_5"),
               numpy_helper.from_array(rng.normal(size=(3, 16)).astype(np.float32), "head.weight")]
    if folded:
        weights.append(numpy_helper.from_array(table[index], "onnx::Add_7"))
        nodes.append(helper.make_node("Add", ["h", "onnx::Add_7"], ["biased"]))
    else:
        weights += [numpy_helper.from_array(table, "rel.table"), numpy_helper.from_array(index, "rel.index")]
        nodes += [helper.make_node("Gather", ["rel.table", "rel.index"], ["bias"]),
                  helper.make_node("Add", ["h", "bias"], ["biased"])]
    nodes += [helper.make_node("Flatten", ["biased"], ["flat"], axis=1),
              helper.make_node("Gemm", ["flat", "head.weight"], ["logits"], transB=1)]
    graph = helper.make_graph(nodes, "main_graph",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])], weights)
    return helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 17)],
                             producer_name="pytorch")


@pytest.mark.parametrize("folded", [True, False])
def test_a_weight_torchscript_computed_at_export_is_warned_of(tmp_path, folded):
    """Before, only a dynamo export's folds were warned of (its marks name them): Hugging Face's Swin and Wav2Vec2
    exported by TorchScript trained their gathered bias tables and weight_norm's g * v / |v| as tensors of their own,
    silently. A Linear's transposed weight (onnx::MatMul_N) is the Linear's own and is not warned of."""
    model = torchscript_folded_bias(folded)
    x = np.random.default_rng(1).normal(size=(24, 4, 8)).astype(np.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(model, ({"x": x}, np.arange(24) % 3), tmp_path / "run", epochs=1, evaluate_test=False)
    said = [str(w.message) for w in caught if "TorchScript exporter computed" in str(w.message)]
    assert said == ([
        "PyTorch's TorchScript exporter computed onnx::Add_7 from the module's weights at export (constant folding), "
        "so it does not train as in PyTorch: it trains as a tensor of its own (a weight_norm's g and v, a table "
        "gathered by index, are gone from the graph); to train the module's weights, export with "
        "torch.onnx.export(..., do_constant_folding=False)"] if folded else [])
