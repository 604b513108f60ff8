"""Fine-tuning all-MiniLM-L6-v2 end to end, short: LoRA on a few hundred BBC News articles for a
few steps (the loss falls), the merged model is the plain graph, it quantizes to dynamic int8, and
the server classifies raw text. The full runs are tools/finetune_minilm.py."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from onnxkit import runtime, zoo
from onnxkit.data import load_dataset
from onnxkit.data.text import tokenizer_options
from onnxkit.errors import OnnxkitError
from onnxkit.evaluate import evaluate
from onnxkit.files import save_model
from onnxkit.graph_walks import value_types
from onnxkit.metadata import read_metadata
from onnxkit.train import fit
from onnxkit.train.frozen_features import cut
from onnxkit.train.lora import LoraAdapter, LoraConfig

pytestmark = pytest.mark.training

TOPICS = "business,entertainment,politics,sports,tech"
TEXTS = ["The central bank raised interest rates as inflation rose and shares fell.",
         "The striker scored twice as the champions won the league title."]


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    folder = tmp_path_factory.mktemp("finetune")
    base = zoo.build_model("bert-classifier", pretrained="all-MiniLM-L6-v2", num_classes=5, max_length=32,
                           labels=TOPICS)
    data = load_dataset("bbc-news", limit=200, **tokenizer_options(base))
    before = evaluate(base, data.train, loss="cross-entropy")["loss"]
    result = fit(base, data, folder / "run", adapter=LoraAdapter(LoraConfig(rank=4)), steps=8, batch_size=16,
                 lr=3e-3, schedule="constant", warmup=0.0, threads=2, evaluate_test=False)  # not the recipe's
    trained = onnx.load(str(result.model_path))
    after = evaluate(trained, data.train, loss="cross-entropy")["loss"]
    return base, data, result, trained, before, after, folder


def test_lora_fine_tuning_lowers_the_loss_and_trains_only_adapters_and_head(tuned):
    base, data, result, trained, before, after, _ = tuned
    assert (len(data.train), len(data.test)) == (122, 39)
    assert after < before - 0.05, (before, after)
    assert len(result.trainable) == 6 * 2 * 2 + 2  # A and B on q and v of 6 layers, plus the head
    assert all(n.endswith((".lora_A", ".lora_B")) or n.startswith("classifier.") for n in result.trainable)
    steps = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert sum(r["event"] == "step" for r in steps) == 8


def test_the_written_model_is_the_plain_graph_with_merged_weights(tuned):
    base, _, _, trained, *_ = tuned
    assert trained.graph.node == base.graph.node  # no adapter left: serving costs nothing extra
    old = {t.name: numpy_helper.to_array(t) for t in base.graph.initializer}
    new = {t.name: numpy_helper.to_array(t) for t in trained.graph.initializer}
    assert old.keys() == new.keys()
    changed = {n for n in old if not np.array_equal(old[n], new[n])}
    assert changed == {f"encoder.{i}.attn.{p}.weight" for i in range(6) for p in "qv"} | {
        "classifier.weight", "classifier.bias"}
    meta = read_metadata(trained)
    assert meta["onnxkit.labels"] == TOPICS.split(",") and "onnxkit.tokenizer" in meta


def test_int8_model_serves_text_end_to_end(tuned, run_cli):
    from onnxkit.quantize import quantize
    from onnxkit.serve.launch import ServerProcess

    _, data, _, trained, _, _, folder = tuned
    fp32 = save_model(trained, folder / "bbc.onnx")
    q = quantize(fp32, folder / "bbc.int8.onnx", mode="dynamic", eval_data=data.test, measure_latency=False)
    ops = {n.op_type for n in q.model.graph.node}
    assert ops & {"MatMulInteger", "DynamicQuantizeMatMul"}, ops
    int8 = runtime.load(folder / "bbc.int8.onnx", threads=2)
    expected = runtime.load(fp32, threads=2).predict_text(TEXTS)
    local = int8.predict_text(TEXTS)
    assert local.labels == expected.labels and set(local.labels) <= set(TOPICS.split(","))
    for a, b in zip(local.scores, expected.scores, strict=True):  # int8 moves logits, keeps their pattern
        assert np.corrcoef(a, b)[0, 1] > 0.9
    with ServerProcess([f"bbc={folder / 'bbc.int8.onnx'}"], "--threads", "1") as server:
        import httpx

        meta = httpx.get(f"{server.url}/v2/models/bbc", timeout=30).json()
        assert {"name": "text", "datatype": "BYTES", "shape": [-1]} in meta["inputs"]
        body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": TEXTS}],
                "outputs": [{"name": "logits", "parameters": {"classification": 1}}]}
        reply = httpx.post(f"{server.url}/v2/models/bbc/infer", json=body, timeout=30).json()
        served = [row.split(":")[2] for row in reply["outputs"][0]["data"]]
        assert served == local.labels
        bad = httpx.post(f"{server.url}/v2/models/bbc/infer", json={"inputs": [
            {"name": "text", "datatype": "BYTES", "shape": [1], "data": ["x"]},
            {"name": "input_ids", "datatype": "INT64", "shape": [1, 1], "data": [101]}]}, timeout=30)
        assert bad.status_code == 400 and "either 'text' or the token inputs" in bad.json()["error"]
    result = run_cli("predict", folder / "bbc.int8.onnx", "--text", TEXTS[0], "--text", TEXTS[1])
    assert result.code == 0 and all(label in result.out for label in local.labels)


def test_text_on_a_model_without_a_tokenizer_is_a_clear_error(tmp_path, run_cli):
    path = save_model(zoo.build_model("bert-classifier", vocab_size=50, hidden=16, heads=2, ff_dim=32,
                                      num_layers=1), tmp_path / "plain.onnx")
    result = run_cli("predict", path, "--text", "hello")
    assert result.code == 1 and "carries no tokenizer, so it cannot take text" in result.err


def test_an_mlp_head_is_all_under_classifier_and_trains_on_cached_features():
    model = zoo.build_model("bert-classifier", vocab_size=50, hidden=16, heads=2, ff_dim=32, num_layers=1,
                            num_classes=3, head_hidden=8)
    head = sorted(t.name for t in model.graph.initializer if t.name.startswith("classifier."))
    assert head == ["classifier.0.bias", "classifier.0.weight", "classifier.3.bias", "classifier.3.weight"]
    split = cut(model, "logits", head, value_types(model), examples=100)
    assert split is not None and [n.op_type for n in split.head.graph.node][:2] == ["Dropout", "MatMul"]
    with pytest.raises(OnnxkitError, match="head_hidden=-1"):
        zoo.build_model("bert-classifier", vocab_size=50, hidden=16, heads=2, ff_dim=32, head_hidden=-1)
