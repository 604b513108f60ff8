"""What only the `onnx` backend (onnxkit's own autodiff and optimizer graphs) can do: ops and
optimizers ORT-training lacks, dropout that resumes to the same masks, and its errors."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import has_ort_training
from onnx import TensorProto, helper, numpy_helper
from test_exporter_copies import exported_in_training_mode

from onnxkit import training_recipe, zoo
from onnxkit.autodiff.check import gradcheck
from onnxkit.errors import OnnxkitError
from onnxkit.files import load_model
from onnxkit.train import TrainingInterrupted, fit
from onnxkit.train.optim import OPTIMIZERS, RMSprop, get_optimizer


def new_ops_model() -> onnx.ModelProto:
    """Hand-written, opset 21: ConvTranspose -> GroupNormalization -> Elu -> Conv -> GlobalMaxPool -> head."""
    rng = np.random.default_rng(0)
    weights = {
        "up.weight": rng.normal(0, 0.3, (1, 8, 2, 2)),  # ConvTranspose: [in, out, k, k]
        "gn.scale": np.ones(8), "gn.bias": np.zeros(8),
        "conv.weight": rng.normal(0, 0.2, (16, 8, 3, 3)),
        "head.weight": rng.normal(0, 0.3, (16, 10)), "head.bias": np.zeros(10),
    }
    n = helper.make_node
    graph = helper.make_graph(
        [
            n("ConvTranspose", ["image", "up.weight"], ["up"], strides=[2, 2]),  # 8x8 -> 16x16
            n("GroupNormalization", ["up", "gn.scale", "gn.bias"], ["gn"], num_groups=4),
            n("Elu", ["gn"], ["elu"], alpha=1.0),
            n("Conv", ["elu", "conv.weight"], ["conv"], pads=[1, 1, 1, 1], strides=[2, 2]),
            n("GlobalMaxPool", ["conv"], ["pool"]),
            n("Flatten", ["pool"], ["flat"]),
            n("Gemm", ["flat", "head.weight", "head.bias"], ["logits"]),
        ],
        "new-ops",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()],
    )
    return helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 21)])


def test_a_model_of_ops_ort_training_cannot_differentiate_trains(run_cli, tmp_path):
    model, run = tmp_path / "new-ops.onnx", tmp_path / "run"
    onnx.save(new_ops_model(), model)
    result = run_cli("train", model, "--data", "digits-images", "--epochs", "6", "--lr", "0.01", "-o", run)
    assert result.code == 0, result.err
    epochs = [r for r in map(json.loads, (run / "metrics.jsonl").open()) if r["event"] == "epoch"]
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"] * 0.8
    assert epochs[-1]["val_accuracy"] > 0.2  # ten classes: chance is 0.1
    trained = load_model(run / "model.onnx")
    assert [n.op_type for n in trained.graph.node] == [n.op_type for n in new_ops_model().graph.node]


def test_iris_mlp_reaches_93_percent_through_the_cli(run_cli, tmp_path):
    model, run = tmp_path / "iris.onnx", tmp_path / "run"
    assert run_cli("build", "iris-mlp", "-o", model).code == 0
    result = run_cli("train", model, "--data", "iris", "--epochs", "100", "--batch-size", "16", "--lr", "0.01",
                     "--quiet", "-o", run)
    assert result.code == 0, result.err
    accuracy = json.loads((run / "run.json").read_text())["result"]["test"]["accuracy"]
    assert accuracy >= 0.93, accuracy


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_lowers_the_loss_at_its_default_learning_rate(name, tmp_path):
    model = zoo.build_model("iris-mlp")
    no_recipe = [p for p in model.metadata_props if p.key != training_recipe.KEY]  # its lr would win
    del model.metadata_props[:]
    model.metadata_props.extend(no_recipe)
    result = fit(model, "iris", tmp_path / name, optimizer=name, epochs=20, batch_size=16,
                 evaluate_test=False, keep_best=False)
    losses = [r["train_loss"] for r in result.history]
    assert losses[-1] < losses[0] * 0.8, losses
    config = json.loads((tmp_path / name / "run.json").read_text())["config"]
    assert config["optimizer"] == name and config["lr"] == get_optimizer(name).default_lr


def test_optimizer_options_go_through_the_cli_and_wrong_ones_are_one_line_errors(run_cli, tmp_path):
    model = tmp_path / "iris.onnx"
    assert run_cli("build", "iris-mlp", "-o", model).code == 0
    ok = run_cli("train", model, "--data", "iris", "--optimizer", "rmsprop", "--alpha", "0.9", "--momentum", "0.5",
                 "--centered", "--epochs", "2", "--quiet", "-o", tmp_path / "rms")
    assert ok.code == 0, ok.err
    config = json.loads((tmp_path / "rms" / "run.json").read_text())["config"]
    assert config["optimizer_options"] == RMSprop(alpha=0.9, momentum=0.5, centered=True).options()
    assert config["lr"] == RMSprop.default_lr
    malformed = {  # a malformed command line: exit 2, as click's own checks
        ("--optimizer", "rmsprop", "--nesterov"): "rmsprop has no option '--nesterov'; its options: --alpha, --eps, ",
        ("--betas", "2", "0.9"): "adamw: --betas must lie in [0, 1) (got --betas (2, 0.9), --eps 1e-08, ",
        ("--device", "tpu"): "--device must be auto, cpu, cuda or cuda:N (N a GPU number), got 'tpu'",
        ("--epochs", "2", "--steps", "3"): "give --epochs or --steps, not both",
    }
    for flags, message in malformed.items():
        wrong = run_cli("train", model, "--data", "iris", *flags, "-o", tmp_path / "x")
        assert wrong.code == 2 and wrong.err.startswith("error: ") and len(wrong.err.strip().splitlines()) == 1
        assert message in wrong.err and not (tmp_path / "x").exists(), wrong.err
    with pytest.raises(OnnxkitError, match="give epochs or steps, not both"):
        fit(model, "iris", tmp_path / "x", epochs=2, steps=3)


@pytest.mark.skipif(has_ort_training(), reason="this environment has onnxruntime-training")
def test_the_ort_training_backend_without_its_environment_says_how_to_get_it(run_cli, tmp_path):
    model = tmp_path / "iris.onnx"
    assert run_cli("build", "iris-mlp", "-o", model).code == 0
    result = run_cli("train", model, "--data", "iris", "--backend", "ort-training", "-o", tmp_path / "run")
    assert result.code == 1 and len(result.err.strip().splitlines()) == 1
    assert "pip install onnxruntime-training-cpu==1.19.2 'onnx==1.17.*'" in result.err and "make venv-ort" in result.err
    assert not (tmp_path / "run").exists()


def test_unknown_backend_is_a_clear_error(monkeypatch):
    with pytest.raises(OnnxkitError, match="unknown training backend 'onx'.*Did you mean: onnx"):
        fit(zoo.build_model("iris-mlp"), "iris", "unused", backend="onx")
    monkeypatch.setenv("ONNXKIT_BACKEND", "foo")  # named by no flag: the message says where it came from
    with pytest.raises(OnnxkitError, match=r"unknown training backend 'foo' \(from \$ONNXKIT_BACKEND; unset it for "
                                           r"the default, onnx\); choose from onnx, ort-training"):
        fit(zoo.build_model("iris-mlp"), "iris", "unused")


def test_an_exporters_constant_dropout_ratio_reads_its_mask_from_the_tables(tmp_path):
    """ORT's own Dropout kernel draws from a generator that starts over in every session."""
    from onnxkit.train.problem import open_training

    open_training(exported_in_training_mode(), tmp_path / "a")  # its ratio and True are Constant nodes
    training = load_model(tmp_path / "a" / "training.onnx")
    assert "Dropout" not in {node.op_type for node in training.graph.node}
    assert json.loads((tmp_path / "a" / "signature.json").read_text())["dropout"]["ratios"] == [pytest.approx(0.2)]


@pytest.mark.parametrize("model", [lambda: zoo.build_model("digits-mlp", dropout=0.3), exported_in_training_mode],
                         ids=["zoo", "exported-in-training-mode"])
def test_a_run_with_dropout_resumes_to_the_same_weights(tmp_path, model):
    """Dropout masks come from (seed, step, micro-batch), not from a generator inside the session."""
    settings = dict(data="digits", epochs=2, batch_size=64, seed=3, evaluate_test=False, device="cpu")
    model = model()
    straight = fit(model, out_dir=tmp_path / "straight", **settings)

    def interrupt(record):
        if record["event"] == "step" and record["step"] == 5:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(TrainingInterrupted):
        fit(model, out_dir=tmp_path / "resumed", callback=interrupt, **settings)
    resumed = fit(resume=tmp_path / "resumed")
    a, b = (load_model(r.model_path) for r in (straight, resumed))
    for x, y in zip(a.graph.initializer, b.graph.initializer, strict=True):
        np.testing.assert_array_equal(numpy_helper.to_array(x), numpy_helper.to_array(y), err_msg=x.name)
    dropped = fit(model, out_dir=tmp_path / "other-seed", **{**settings, "seed": 4})
    assert not np.array_equal(numpy_helper.to_array(load_model(dropped.model_path).graph.initializer[0]),
                              numpy_helper.to_array(a.graph.initializer[0]))


def test_the_new_ops_model_gradients_match_finite_differences():
    model = new_ops_model()  # in float64, GroupNormalization computing in float64 too
    for t in model.graph.initializer:
        t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float64), t.name))
    for vi in (model.graph.input[0], model.graph.output[0]):
        vi.type.tensor_type.elem_type = TensorProto.DOUBLE
        vi.type.tensor_type.shape.dim[0].dim_value = 2
    next(n for n in model.graph.node if n.op_type == "GroupNormalization").attribute.append(
        helper.make_attribute("stash_type", TensorProto.DOUBLE))
    image = np.random.default_rng(0).normal(size=(2, 1, 8, 8))
    # every entry of the layers before the Conv (their gradients pass through each rule), 128 of its 1,152
    checked = gradcheck(model, {"image": image}, ["up.weight", "gn.scale", "conv.weight"], entries=128)
    for name, (analytic, numeric) in checked.items():
        np.testing.assert_allclose(analytic, numeric, atol=1e-6 * np.abs(numeric).max(), err_msg=name)


def test_a_dropout_table_too_short_for_a_tensor_grows_quietly(tmp_path, monkeypatch, capfd):
    from onnxkit.train.backends.onnx import dropout
    from onnxkit.train.problem import open_training

    monkeypatch.setattr(dropout, "FIRST_SIZE", 64)  # the hidden layers' dropout sees 64 x 128 values
    session = open_training(zoo.build_model("digits-mlp", dropout=0.5), tmp_path / "a")
    feeds = {"x": np.random.default_rng(0).normal(size=(64, 64)).astype(np.float32)}
    loss = session.train_step(feeds, np.arange(64) % 10)
    assert np.isfinite(loss) and session._dropout.size >= 2 * 64 * 128
    assert "Reshape" not in capfd.readouterr().err


def test_dropout_tables_grow_to_fit_a_window_at_once():
    from onnxkit.train.backends.onnx.dropout import DropoutTables

    tables = DropoutTables([0.1, 0.3], seed=0, count=2, size=1024)
    tables.grow(3000)  # windows start in the first half: 6000 elements, to a power of two
    assert tables.size == 8192 and [len(t) for t in tables.tables] == [8192, 8192]
    tables.grow(0)  # a sliced window of unknown size: four times longer
    assert tables.size == 32768
    tables.grow(10)  # a window that would fit anyway: at least twice as long
    assert tables.size == 65536
    keep = tables.tables[1] > 0
    assert abs(keep.mean() - 0.7) < 0.01 and np.allclose(tables.tables[1][keep], 1 / 0.7)


def test_bound_dropout_windows_give_the_sliced_windows_masks_bit_for_bit(tmp_path, monkeypatch):
    """A window bound by address into the table and one sliced out by the graph are the same mask."""
    from onnxkit.train.backends.onnx import dropout
    from onnxkit.train.problem import open_training

    rng = np.random.default_rng(2)
    batches = [(rng.normal(size=(n, 64)).astype(np.float32), rng.integers(0, 10, n)) for n in (32, 32, 17)]

    def train(folder: str) -> dict[str, np.ndarray]:
        session = open_training(zoo.build_model("digits-mlp", dropout=0.4), tmp_path / folder)
        for x, y in batches:
            session.train_step({"x": x}, y)
            session.optimizer_step(1e-2)
        return session

    bound = train("bound")
    monkeypatch.setattr(dropout, "_run_time_dims", lambda typed, named: None)
    sliced = train("sliced")
    assert len(bound._windows) == 2 and not sliced._windows
    assert bound.parameters().keys() == sliced.parameters().keys()
    for name, value in bound.parameters().items():
        np.testing.assert_array_equal(value, sliced.parameters()[name], err_msg=name)


@pytest.mark.parametrize("optimizer", ["adamw", "rmsprop"])
def test_the_optimizer_run_chunk_by_chunk_gives_the_whole_buffer_run_bit_for_bit(tmp_path, monkeypatch, optimizer):
    from onnxkit.train.backends.onnx import session as module
    from onnxkit.train.problem import open_training

    rng = np.random.default_rng(1)
    batches = [(rng.normal(size=(32, 64)).astype(np.float32), rng.integers(0, 10, 32)) for _ in range(4)]

    def train(chunk: int, folder: str) -> dict[str, np.ndarray]:
        monkeypatch.setattr(module, "CHUNK", chunk)
        session = open_training(zoo.build_model("digits-mlp"), tmp_path / folder, optimizer=optimizer, dropout=False)
        assert len(session._chunks) == -(-session._layout.size // chunk)
        for x, y in batches:
            session.train_step({"x": x}, y)
            session.optimizer_step(1e-2)
        return session.parameters()

    whole, chunked = train(1 << 30, "whole"), train(1000, "chunked")  # 26,122 parameters: 27 chunks
    assert whole.keys() == chunked.keys()
    for name in whole:
        np.testing.assert_array_equal(chunked[name], whole[name], err_msg=name)


def test_a_step_under_the_one_thread_size_trains_on_one_thread_with_the_same_weights(tmp_path):
    """digits-mlp does 64*128 + 128*128 + 128*10 = 26,880 multiply-adds a row: a batch of 64 is under
    ONE_THREAD_STEP (1.72M), one of 128 past it (3.44M); a session told no batch size keeps every thread."""
    from onnxkit.train.backends.onnx.artifacts import ONE_THREAD_STEP
    from onnxkit.train.problem import open_training

    per_row = 64 * 128 + 128 * 128 + 128 * 10
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(64, 64)).astype(np.float32), rng.integers(0, 10, 64)
    trained = {}
    for rows in (64, 128, None):
        session = open_training(zoo.build_model("digits-mlp"), tmp_path / str(rows), batch_size=rows, dropout=False)
        one = rows is not None and per_row * rows < ONE_THREAD_STEP
        assert (session._trains[0].get_session_options().intra_op_num_threads == 1) == one, rows
        for _ in range(3):
            session.train_step({"x": x}, y)
            session.optimizer_step(1e-2)
        trained[rows] = session.parameters()
    assert per_row * 64 < ONE_THREAD_STEP <= per_row * 128
    for name, value in trained[None].items():  # the thread count changes no result
        np.testing.assert_array_equal(trained[64][name], value, err_msg=name)


def test_dropout_window_starts_are_uniform_fixed_by_seed_step_and_batch_and_in_range():
    from onnxkit.train.backends.onnx.dropout import DropoutTables

    tables = DropoutTables([0.1, 0.5, 0.1], seed=3, count=3, size=4000)
    starts = np.stack([tables.starts(step, batch) for step in range(3000) for batch in range(2)])
    assert starts.min() >= 0 and starts.max() < 2000 and starts.dtype == np.int64
    np.testing.assert_array_equal(tables.starts(17, 1), DropoutTables([0.1, 0.5, 0.1], 3, 3, 4000).starts(17, 1))
    assert len({tuple(s) for s in starts}) == len(starts)  # no two (step, micro-batch) share windows
    counts = np.bincount(starts.ravel() // 200, minlength=10)  # 18,000 draws in 10 bins of 200
    assert counts.min() > 0.9 * counts.mean() and counts.max() < 1.1 * counts.mean()
    other_seed = DropoutTables([0.1, 0.5, 0.1], seed=4, count=3, size=4000)
    assert not np.array_equal(other_seed.starts(17, 1), tables.starts(17, 1))
    rank_1 = DropoutTables([0.1, 0.5, 0.1], seed=3, count=3, size=4000)
    rank_1.stream = 1  # a data-parallel rank: none of its windows is rank 0's at any step
    assert not {tuple(rank_1.starts(s, b)) for s in range(3000) for b in range(2)} & {tuple(s) for s in starts}


def test_dropout_window_starts_are_the_splitmix_hash_of_seed_stream_step_batch_and_dropout():
    """The starts are hashed in numpy for 256 steps at once; a resumed run (and every release)
    must draw the same windows, so they are checked against the hash written out in Python ints."""
    from onnxkit.train.backends.onnx.dropout import DropoutTables

    def mix(x: int) -> int:  # splitmix64's finaliser
        x = (x + 0x9E3779B97F4A7C15) % 2**64
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) % 2**64
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) % 2**64
        return x ^ (x >> 31)

    for seed, stream, size in ((3, 0, 4000), (2**63 + 11, 5, 1 << 23)):
        tables = DropoutTables([0.1, 0.5], seed=seed, count=3, size=size)
        tables.stream = stream
        for step in (0, 1, 255, 256, 257, 1000, 2**40 + 5):
            for batch in (0, 2):
                key = mix(mix(mix(mix(seed) ^ stream) ^ step) ^ batch)
                expected = [mix((key + k) % 2**64) % (size // 2) for k in range(3)]
                assert tables.starts(step, batch).tolist() == expected, (seed, stream, step, batch)


def test_a_model_of_opset_13_trains_as_one_of_opset_17(tmp_path):
    # cross-entropy's gradient scattered with ScatterElements' reduction, which opset 16 added: a digits-mlp
    # built with --opset 13 to 15 failed in onnxruntime on onnxkit's own training graph
    trained = {}
    for version in (13, 17):
        model = zoo.build_model("digits-mlp", opset=version)
        result = fit(model, "digits", tmp_path / str(version), steps=5, dropout=False, backend="onnx")
        trained[version] = {t.name: numpy_helper.to_array(t) for t in load_model(result.model_path).graph.initializer}
    for name, value in trained[17].items():
        np.testing.assert_allclose(trained[13][name], value, rtol=0, atol=1e-6, err_msg=name)


def test_a_batch_norm_of_opset_13_trains_on_its_batch_statistics_as_one_of_opset_17(tmp_path):
    # training_mode came with BatchNormalization-14: an opset-13 export with BatchNorm (TorchScript's
    # opset_version=13) was refused ('needs opset 14 or newer'), its parameters all before the BatchNorm
    from test_train_resume import mlp_with_batchnorm

    trained = {}
    for version in (13, 17):
        model = mlp_with_batchnorm()
        model.opset_import[0].version = version
        result = fit(model, "digits", tmp_path / str(version), steps=5, dropout=False, backend="onnx", device="cpu")
        trained[version] = {t.name: numpy_helper.to_array(t) for t in load_model(result.model_path).graph.initializer}
        assert load_model(result.model_path).opset_import[0].version == version  # the trained model keeps its own
    assert not np.array_equal(trained[17]["bn.running_mean"], 0)
    for name, value in trained[17].items():
        np.testing.assert_allclose(trained[13][name], value, rtol=0, atol=1e-6, err_msg=name)


def test_a_training_graph_onnxruntime_refuses_is_reported_as_onnxkits_bug(tmp_path):
    from onnxkit.runtime.session import create_session

    path = tmp_path / "training.onnx"
    graph = helper.make_graph([helper.make_node("ScatterElements", ["x", "i", "x"], ["y"], reduction="add")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2]),
                               helper.make_tensor_value_info("i", TensorProto.INT64, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)  # reduction: opset 16
    with pytest.raises(OnnxkitError, match=r"cannot load it \(.*reduction.*\); this is a bug in onnxkit's graph "
                                           r"for this model: please report it with the model$"):
        create_session(path, ort.SessionOptions(), ["CPUExecutionProvider"], own=True)


def test_attentions_products_read_no_copy_that_moves_the_last_axis(tmp_path):
    """text-transformer's scores are Q @ K^T, K^T a swap of K's heads (a transpose of a transpose). onnxruntime's
    transpose optimizers compose the two into one [0, 2, 3, 1] copy before its MatMul fusion can fold the swap into
    the product; a training graph with such operands is marked and opened without them, and then no product in
    onnxruntime's optimised graph reads a Transpose that moves the last axis (with them: 4 a layer, K^T, and the
    gradients' V^T, dO^T and Q^T). digits-mlp's is not marked."""
    from onnxkit.runtime.session import create_session, session_options
    from onnxkit.train.backends.onnx.artifacts import TRAINING, read_signature
    from onnxkit.train.backends.onnx.session import TRANSPOSE_OPTIMIZERS
    from onnxkit.train.problem import open_training

    def copies_read_by_products(directory, disabled):  # type: ignore[no-untyped-def]
        optimised = tmp_path / f"optimised-{len(disabled)}.onnx"
        create_session(str(directory / TRAINING), session_options(1, "all"), ["CPUExecutionProvider"],
                       optimized_model_path=optimised, disabled=disabled)
        nodes = onnx.load(optimised).graph.node
        moving = {n.output[0] for n in nodes if n.op_type == "Transpose" and n.attribute[0].ints[-1] != 3}
        return [i for n in nodes if n.op_type in ("MatMul", "FusedMatMul") for i in n.input if i in moving]

    open_training(zoo.build_model("text-transformer"), tmp_path / "attention", batch_size=8)
    assert read_signature(tmp_path / "attention")["swapped_operands"]
    assert copies_read_by_products(tmp_path / "attention", TRANSPOSE_OPTIMIZERS) == []
    assert len(copies_read_by_products(tmp_path / "attention", ())) == 8  # 2 layers
    open_training(zoo.build_model("digits-mlp"), tmp_path / "mlp", batch_size=8)
    assert not read_signature(tmp_path / "mlp")["swapped_operands"]


@pytest.mark.parametrize(("extra", "into", "marked"), [
    (None, None, True), ([0, 2, 1, 3], "Relu", True), ([0, 2, 3, 1], "MatMul", True), ([0, 3, 1, 2], "Relu", False),
], ids=["products only", "a transpose keeping the last axis", "one into a product", "an NHWC -> NCHW transpose"])
def test_a_graph_with_other_transposes_keeps_the_transpose_optimizers(extra, into, marked):
    """Q @ K^T, K^T a swap of K's heads, marks a graph to open without onnxruntime's transpose optimizers, unless its
    forward part holds another transpose that moves the last axis into anything but a product (an exporter's
    NHWC -> NCHW), which they may push through its neighbours and cancel."""
    from onnxkit.train.backends.onnx.artifacts import swapped_operands

    n = helper.make_node
    nodes = [n("Transpose", ["k"], ["heads"], perm=[0, 2, 1, 3]), n("Transpose", ["heads"], ["kt"], perm=[0, 1, 3, 2]),
             n("MatMul", ["q", "kt"], ["scores"])]
    shapes = {"q": [2, 4, 3, 5], "k": [2, 3, 4, 5], "image": [2, 8, 8, 3]}  # q [batch, heads, seq, dim]
    if extra:
        nodes += [n("Transpose", ["image"], ["moved"], perm=extra),
                  n(into, ["moved", "w"] if into == "MatMul" else ["moved"], ["out"])]
        shapes["w"] = [8, 4]
    graph = helper.make_graph(nodes, "attention", [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)
                                                   for name, shape in shapes.items()],
                              [helper.make_tensor_value_info(name, TensorProto.FLOAT, None)
                               for name in ("scores", *(["out"] if extra else []))])
    assert swapped_operands(helper.make_model(graph)) is marked



def test_the_memory_pattern_is_for_small_steps(tmp_path):
    """ONNX Runtime's memory pattern keeps a run's activations twice: worth it for a step of a few milliseconds
    (digits-mlp), not for a CNN batch of hundreds of millions of multiply-adds, whose training memory it took to 1.73x
    PyTorch's (tools/train_memory.py --models resnet)."""
    from onnxkit import nn
    from onnxkit.train.backends.onnx.artifacts import read_signature
    from onnxkit.train.problem import open_training

    nn.manual_seed(0)
    cnn = nn.build(nn.Sequential([nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1),
                                  nn.ReLU(), nn.Flatten(), nn.Linear(32 * 32 * 32, 10)]),
                   {"x": nn.Input(["batch", 3, 32, 32])}, output_names=["logits"])  # 10M multiply-adds an image
    for name, model, batch, patterned in [("mlp", zoo.build_model("digits-mlp"), 64, True), ("cnn", cnn, 64, False),
                                          ("cnn-any-batch", cnn, None, True)]:
        open_training(model, tmp_path / name, batch_size=batch)
        assert read_signature(tmp_path / name)["memory_pattern"] is patterned, name
