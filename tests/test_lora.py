"""LoRA adapters as a graph rewrite: a no-op at initialisation, merged back into exactly the original graph."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxkit import zoo
from onnxkit.errors import OnnxkitError
from onnxkit.train.lora import ALL_ATTENTION, LoraAdapter, LoraConfig, add_adapters, merge_adapters, target_weights

pytestmark = pytest.mark.training


@pytest.fixture(scope="module")
def small_bert() -> onnx.ModelProto:
    return zoo.build_model("bert-classifier", vocab_size=60, hidden=32, heads=4, ff_dim=64, num_layers=2,
                           num_classes=3)


def _feeds(batch: int = 4, seq: int = 9) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    mask = np.ones((batch, seq), np.int64)
    mask[1, 5:] = 0
    return {"input_ids": rng.integers(0, 60, (batch, seq)), "attention_mask": mask,
            "token_type_ids": np.zeros((batch, seq), np.int64)}


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def _weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def test_default_adapters_sit_on_q_and_v_and_start_as_a_no_op(small_bert):
    adapted, names = add_adapters(small_bert, LoraConfig(rank=4))
    onnx.checker.check_model(adapted, full_check=True)
    assert names == [f"encoder.{i}.attn.{p}.weight.lora_{m}" for i in range(2) for p in "qv" for m in "AB"]
    w = _weights(adapted)
    assert w["encoder.0.attn.q.weight.lora_A"].shape == (32, 4) and w["encoder.0.attn.q.weight.lora_A"].std() > 0
    assert w["encoder.0.attn.q.weight.lora_B"].shape == (4, 32) and not w["encoder.0.attn.q.weight.lora_B"].any()
    assert sum(w[n].size for n in names) == 4 * 4 * (32 + 32)
    keys = [p.key for p in adapted.metadata_props]
    assert len(keys) == len(set(keys)) == len(small_bert.metadata_props) + 1  # each key once, plus onnxkit.lora
    feeds = _feeds()
    np.testing.assert_array_equal(_run(adapted, feeds), _run(small_bert, feeds))


def test_merged_model_is_the_original_graph_and_computes_what_the_adapters_did(small_bert):
    config = LoraConfig(rank=3, alpha=12.0, targets=ALL_ATTENTION)
    adapted, names = add_adapters(small_bert, config)
    assert len(names) == 2 * 4 * 2 and config.scale == 4.0
    rng = np.random.default_rng(0)
    for t in adapted.graph.initializer:  # pretend training moved the adapters and the head
        if t.name.endswith(".lora_B") or t.name.startswith("classifier."):
            value = numpy_helper.to_array(t) + rng.normal(0, 0.1, tuple(t.dims)).astype(np.float32)
            t.CopyFrom(numpy_helper.from_array(value, t.name))
    merged = merge_adapters(small_bert, adapted)
    feeds = _feeds()
    expected = _run(adapted, feeds)
    assert np.abs(expected - _run(small_bert, feeds)).max() > 0.01  # the adapters do change the output
    np.testing.assert_allclose(_run(merged, feeds), expected, atol=1e-5)
    # exactly the original graph: same nodes, same initializer names and shapes, no LoRA record
    assert merged.graph.node == small_bert.graph.node
    assert [(t.name, list(t.dims)) for t in merged.graph.initializer] == \
        [(t.name, list(t.dims)) for t in small_bert.graph.initializer]
    assert "onnxkit.lora" not in {p.key for p in merged.metadata_props}
    a, b, w0 = (_weights(adapted)[f"encoder.1.attn.k.weight{s}"] for s in (".lora_A", ".lora_B", ""))
    np.testing.assert_allclose(_weights(merged)["encoder.1.attn.k.weight"], w0 + a @ b * 4.0, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(_weights(merged)["classifier.bias"], _weights(adapted)["classifier.bias"])


def test_bad_lora_settings_are_clear_errors(small_bert):
    with pytest.raises(OnnxkitError, match=r"LoRA target '\*attn.query.weight' matches no MatMul or Gemm weight"):
        target_weights(small_bert, ["*attn.query.weight"])
    with pytest.raises(OnnxkitError, match="LoRA rank must be at least 1"):
        LoraConfig(rank=0)
    with pytest.raises(OnnxkitError, match="no LoRA adapters to merge"):
        merge_adapters(small_bert, small_bert)


def test_a_rank_not_below_the_weights_smaller_side_is_warned_of(small_bert):
    from onnxkit.train.lora import LoraAdapter

    small = LoraAdapter(LoraConfig(rank=31))
    small.apply(small_bert)
    assert small.notes() == []
    full = LoraAdapter(LoraConfig(rank=32))  # q and v are 32 x 32 in both layers
    full.apply(small_bert)
    (note,) = full.notes()
    assert note.startswith("warning: LoRA rank 32 is not below the smaller side of 4 adapted weights (")
    assert "encoder.0.attn.q.weight 32x32" in note and "--lora-rank" in note


def test_the_text_transformers_head_trains_beside_the_adapters_and_a_model_without_one_is_warned_of(small_bert):
    # the zoo's text-transformer names its new head 'head.*': --lora-rank trained the adapters alone beside the
    # random head it was built with, unsaid (a 3-class text CSV, 30 epochs: 80.0% test accuracy; 81.7% with the head)
    from onnxkit.train.lora import LoraAdapter

    text = zoo.build_model("text-transformer", vocab_size=50, max_len=16, dim=16, heads=2, ff_dim=32, num_layers=1,
                           num_classes=3)
    adapter = LoraAdapter(LoraConfig(rank=2))
    adapted = adapter.apply(text)
    assert [n for n in adapter.trainable(adapted) if not n.endswith((".lora_A", ".lora_B"))] == \
        ["head.weight", "head.bias"]
    assert adapter.notes() == []
    bert = LoraAdapter(LoraConfig(rank=2))
    assert "classifier.weight" in bert.trainable(bert.apply(small_bert)) and bert.notes() == []
    renamed = onnx.ModelProto()
    renamed.CopyFrom(text)
    for t in renamed.graph.initializer:
        t.name = t.name.replace("head.", "out.")
    for node in renamed.graph.node:
        node.input[:] = [n.replace("head.", "out.") for n in node.input]
    headless = LoraAdapter(LoraConfig(rank=2))
    headless.apply(renamed)
    (note,) = headless.notes()
    assert note.startswith("warning: LoRA trains the adapters alone: no parameter matches classifier.* or head.*")
    named = LoraAdapter(LoraConfig(rank=2), train=["out.*"])
    assert "out.weight" in named.trainable(named.apply(renamed)) and named.notes() == []


def _exported_attention(dynamo: bool) -> onnx.ModelProto:
    """x [batch, 4] through query, key and value Linears (summed) and a classifier, as PyTorch's exporters write a
    Hugging Face encoder: transposed weights named onnx::MatMul_N, read by nodes named for the module
    (TorchScript), or val_N marked with the parameter they were folded from (dynamo)."""
    from onnx import TensorProto, helper

    modules = ["encoder.layer.0.attention.self.query", "encoder.layer.0.attention.self.key",
               "encoder.layer.0.attention.self.value", "classifier"]
    rng = np.random.default_rng(3)
    nodes, weights, infos = [], [], []
    for k, module in enumerate(modules):
        weight = f"val_{k}" if dynamo else f"onnx::MatMul_{k}"
        weights.append(numpy_helper.from_array(rng.standard_normal((4, 4)).astype(np.float32), weight))
        source = "x" if k < 3 else "qkv"
        name = f"node_MatMul_{k}" if dynamo else "/" + module.replace(".", "/") + "/MatMul"
        nodes.append(helper.make_node("MatMul", [source, weight], [f"y{k}"], name=name))
        if dynamo:
            info = helper.make_tensor_value_info(weight, TensorProto.FLOAT, [4, 4])
            info.metadata_props.add(key="pkg.onnxscript.optimizer.folded_from", value=f"['{module}.weight']")
            infos.append(info)
    weights.append(numpy_helper.from_array(np.zeros(4, np.float32), "classifier.bias"))
    nodes += [helper.make_node("Sum", ["y0", "y1", "y2"], ["qkv"]),
              helper.make_node("Add", ["y3", "classifier.bias"], ["logits"])]
    graph = helper.make_graph(nodes, "export", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4])], weights,
                              value_info=infos)
    return helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("dynamo", [False, True])
def test_an_exported_hugging_face_encoder_takes_lora_on_its_query_and_value_by_their_pytorch_names(dynamo):
    # its weights are onnx::MatMul_N or val_N: '--lora-rank 8' alone said "LoRA target '*attn.q.weight' matches no
    # MatMul weight. MatMul weights look like: val_35, val_43, ...", and no glob could tell a query from a key
    model = _exported_attention(dynamo)
    query, key, value, head = (t.name for t in model.graph.initializer[:4])
    assert target_weights(model, LoraConfig(rank=2).targets) == [query, value]
    assert target_weights(model, ["*.key.weight"]) == [key]
    adapter = LoraAdapter(LoraConfig(rank=2))
    adapted = adapter.apply(model)
    assert adapter.trainable(adapted) == [f"{query}.lora_A", f"{query}.lora_B", f"{value}.lora_A",
                                          f"{value}.lora_B", head, "classifier.bias"]
    assert not adapter.notes()
    with pytest.raises(OnnxkitError, match=r"Such weights look like: encoder\.layer\.0\.attention\.self\.query\."):
        target_weights(model, ["*.qkv.weight"])


def test_peft_keywords_are_refused_naming_ours() -> None:
    # LoraConfig(r=8, lora_alpha=16, target_modules=[...]), as a peft user writes it, was Python's "unexpected
    # keyword argument 'r'" naming neither rank nor the other names
    with pytest.raises(OnnxkitError) as refused:
        LoraConfig(r=8, lora_alpha=16, target_modules=["query", "value"], lora_dropout=0.1)
    said = str(refused.value)
    assert said.startswith("LoraConfig takes rank, alpha, targets and seed, not peft's names: r: give rank=; "
                           "lora_alpha: give alpha=; target_modules: give targets=")
    assert "lora_dropout: no dropout" in said and "\n" not in said
    config = LoraConfig(rank=8, alpha=16)  # ours still bind, and the config copies as a frozen dataclass
    assert (config.scale, copy.deepcopy(config)) == (2.0, config)
    with pytest.raises(TypeError, match="unexpected keyword argument 'rnak'"):
        LoraConfig(rnak=8)


def _gemm_classifier() -> onnx.ModelProto:
    """x [batch, 4] -> Gemm(W [6, 4], transB=1, alpha=0.5), as an exporter writes a 2-D Linear (at half scale) ->
    Relu -> Gemm(W [6, 3]), as GPT-2's Conv1D keeps its weights [in, out] -> logits [batch, 3]."""
    rng = np.random.default_rng(2)
    arrays = {"fc.weight": rng.normal(0, 0.5, (6, 4)), "fc.bias": rng.normal(0, 0.1, 6),
              "c_attn.weight": rng.normal(0, 0.5, (6, 3)), "c_attn.bias": np.zeros(3)}
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "fc.weight", "fc.bias"], ["h"], transB=1, alpha=0.5),
         helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("Gemm", ["r", "c_attn.weight", "c_attn.bias"], ["logits"])],
        "gemms", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in arrays.items()])
    return helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 17)])


def test_gemm_weights_take_adapters_merged_back_in_their_own_layout():
    # only MatMul weights could be targets: a 2-D Linear exported as Gemm, or GPT-2's fused c_attn, took no adapter
    model = _gemm_classifier()
    assert target_weights(model, ["*.weight"]) == ["fc.weight", "c_attn.weight"]
    adapted, names = add_adapters(model, LoraConfig(rank=2, alpha=6.0, targets=["*.weight"]))
    shapes = {t.name: tuple(t.dims) for t in adapted.graph.initializer}
    assert [shapes[n] for n in names] == [(4, 2), (2, 6), (6, 2), (2, 3)]  # [in, r], [r, out] of each
    rng = np.random.default_rng(3)
    for t in adapted.graph.initializer:  # pretend training moved the adapters
        if t.name.endswith(".lora_B"):
            t.CopyFrom(numpy_helper.from_array(rng.normal(0, 0.3, tuple(t.dims)).astype(np.float32), t.name))
    x = {"x": rng.normal(size=(5, 4)).astype(np.float32)}
    expected = _run(adapted, x)
    assert np.abs(expected - _run(model, x)).max() > 0.05
    merged = merge_adapters(model, adapted)
    assert merged.graph.node == model.graph.node
    np.testing.assert_allclose(_run(merged, x), expected, atol=1e-5)
    w = _weights(adapted)  # numpy: fc's update is transposed into its [out, in] weight; the Gemm's alpha scales it
    update = w["fc.weight.lora_A"] @ w["fc.weight.lora_B"] * 3.0
    np.testing.assert_allclose(_weights(merged)["fc.weight"], w["fc.weight"] + update.T, rtol=1e-6, atol=1e-6)
    h = np.maximum(0.5 * x["x"] @ (w["fc.weight"].T + update) + w["fc.bias"], 0)
    np.testing.assert_allclose(expected, h @ (w["c_attn.weight"] + w["c_attn.weight.lora_A"] @
                                              w["c_attn.weight.lora_B"] * 3.0) + w["c_attn.bias"], atol=1e-5)
