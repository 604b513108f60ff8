"""`onnxkit train / eval / quantize` on the pretrained MiniLM with a text dataset given by name: the
tokenizer comes from the model; head-only (--train-only) and LoRA (--lora-*) fine-tuning. Tiny: 8-token
texts, a few steps."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from onnxkit import zoo
from onnxkit.files import save_model

pytestmark = pytest.mark.training

TOPICS = "business,entertainment,politics,sports,tech"
COMMON = ("--data", "bbc-news", "--batch-size", "8", "--threads", "2", "--quiet")


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    folder = tmp_path_factory.mktemp("finetune-cli")
    model = zoo.build_model("bert-classifier", pretrained="all-MiniLM-L6-v2", num_classes=5, max_length=8,
                            labels=TOPICS)
    return save_model(model, folder / "bert.onnx"), folder


def _weights(path) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


def _changed(before: dict[str, np.ndarray], after: dict[str, np.ndarray]) -> set[str]:
    assert before.keys() == after.keys()
    return {n for n in before if not np.array_equal(before[n], after[n])}


def test_head_only_then_eval_and_quantize_take_the_tokenizer_from_the_model(bert, run_cli):
    path, folder = bert
    run = folder / "head"
    result = run_cli("train", path, *COMMON, "--train-only", "classifier.*", "--steps", "3", "--lr", "1e-2",
                     "-o", run)
    assert result.code == 0, result.err
    info = json.loads((run / "run.json").read_text())
    assert info["trainable_parameters"] == 384 * 5 + 5 and info["dataset"] == {
        "train": 1337, "validation": 444, "test": 444}
    assert _changed(_weights(path), _weights(run / "model.onnx")) == {"classifier.weight", "classifier.bias"}
    assert len(info["cached_features"]["boundary"]) == 1  # the frozen encoder ran once; the head trained on its output
    test_accuracy = info["result"]["test"]["accuracy"]

    # eval reads the dataset name from the model and tokenizes with the model's tokenizer: same figure
    evaluated = run_cli("eval", run / "model.onnx", "--json")
    assert evaluated.code == 0, evaluated.err
    metrics = json.loads(evaluated.out)
    assert metrics["examples"] == 444 and metrics["accuracy"] == pytest.approx(test_accuracy)

    quantized = run_cli("quantize", run / "model.onnx", "-o", folder / "head.int8.onnx", "--mode", "dynamic",
                        "--eval", "bbc-news", "--no-latency")
    assert quantized.code == 0, quantized.err
    report = json.loads((folder / "head.int8.report.json").read_text())
    assert report["accuracy"]["original"] == pytest.approx(test_accuracy)
    assert abs(report["accuracy"]["drop"]) < 5


def test_lora_flags_train_adapters_and_write_the_plain_graph(bert, run_cli):
    path, folder = bert
    run = folder / "lora"
    result = run_cli("train", path, *COMMON, "--lora-rank", "2", "--lora-alpha", "8", "--lora-targets",
                     "*attn.k.weight", "--steps", "2", "--lr", "1e-2", "-o", run)
    assert result.code == 0, result.err
    info = json.loads((run / "run.json").read_text())
    adapters = {f"encoder.{i}.attn.k.weight.lora_{ab}" for i in range(6) for ab in "AB"}
    assert set(info["trainable"]) == adapters | {"classifier.weight", "classifier.bias"}
    assert info["trainable_parameters"] == 6 * 2 * (384 * 2) + 384 * 5 + 5
    written = onnx.load(str(run / "model.onnx"))
    assert written.graph.node == onnx.load(str(path)).graph.node  # adapters merged away
    assert _changed(_weights(path), _weights(run / "model.onnx")) == {
        f"encoder.{i}.attn.k.weight" for i in range(6)} | {"classifier.weight", "classifier.bias"}


def test_lora_flag_mistakes_are_clear_errors(bert, run_cli):
    path, folder = bert
    cases = [
        (("--lora-alpha", "4"), "need --lora-rank R"),
        (("--lora-rank", "2", "--train-only", "classifier.*"), "--train-only would leave the LoRA adapters frozen"),
        (("--lora-rank", "0"), "--lora-rank must be at least 1"),
        (("--lora-rank", "2", "--lora-targets", "*attn.qq.weight"), "matches no MatMul or Gemm weight"),
    ]
    for flags, message in cases:
        result = run_cli("train", path, "--data", "bbc-news", *flags, "-o", folder / "bad")
        assert result.code in (1, 2) and message in result.err, (flags, result.err)  # 2: a value out of range
        assert not (folder / "bad").exists()


def test_a_lora_run_resumes_with_its_own_settings_and_rewrites_a_lost_model(bert, run_cli):
    path, folder = bert
    run = folder / "lora-resume"
    flags = ("--lora-rank", "2", "--lora-targets", "*attn.k.weight", "--steps", "2", "--lr", "1e-2")
    assert run_cli("train", path, *COMMON, *flags, "-o", run).code == 0
    written = _weights(run / "model.onnx")
    (run / "model.onnx").unlink()  # lost (or its export failed): the run had trained to the end
    other = run_cli("train", "--resume", run, "--lora-rank", "4")
    assert other.code == 2 and other.err.count("\n") == 1
    assert "--resume continues a run with its stored settings; leave out --lora-rank" in other.err
    again = run_cli("train", "--resume", run)  # the adapter comes from run.json
    assert again.code == 0, again.err
    rewritten = _weights(run / "model.onnx")
    assert all(np.array_equal(written[n], rewritten[n]) for n in written)
    assert run_cli("train", "--resume", run).err.startswith(f"error: the run in {run} has already finished")


def test_a_csv_of_texts_trains_with_the_models_tokenizer(bert, run_cli, tmp_path):
    path, _ = bert
    sport = ["The striker scored twice in the final", "A late goal won the cup match", "The coach praised the team"]
    money = ["Shares fell as the bank cut rates", "The market rallied on profit news", "Investors sold bonds today"]
    rows = [(t, "sports") for t in sport * 10] + [(t, "business") for t in money * 10]  # two of the model's 5 names
    (tmp_path / "texts.csv").write_text("text,label\n" + "\n".join(f'"{t}",{label}' for t, label in rows) + "\n")
    result = run_cli("train", path, "--data", tmp_path / "texts.csv", "--train-only", "classifier.*", "--steps", "3",
                     "--quiet", "-o", tmp_path / "run")
    assert result.code == 0, result.err
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["dataset"] == {"train": 36, "validation": 12, "test": 12}
    evaluated = run_cli("eval", tmp_path / "run" / "model.onnx", "--json")
    assert evaluated.code == 0 and json.loads(evaluated.out)["examples"] == 12, evaluated.err

    (tmp_path / "holes.csv").write_text('text,label\n"fine",a\n"  ",b\n')
    (tmp_path / "latin1.csv").write_bytes("text,label\ncaf\xe9,a\n".encode("latin-1"))
    for name, message in (("holes.csv", "holes.csv:3: the text cell is empty"),
                          ("latin1.csv", "latin1.csv: not UTF-8 text (byte 0xe9 on line 2); save it as UTF-8")):
        refused = run_cli("train", path, "--data", tmp_path / name, "-o", tmp_path / "bad")
        assert refused.code == 1 and message in refused.err and refused.err.count("\n") == 1, refused.err
