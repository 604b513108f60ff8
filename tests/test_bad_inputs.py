"""Every command over a corpus of bad inputs: each fails with exit status != 0, exactly one
`error:` line and no traceback, and leaves no file half-written or overwritten.

The corpus (CASES, 74 command lines) covers corrupt, empty and truncated files, wrong-shaped,
zero-row and mislabelled data, a model without its weights file, a model with an op no runtime
has, a fixed-batch model, deeply nested JSON, bad --set and option values, damaged and live run
folders, and a full disk: a 64 KiB tmpfs where the test may mount one, else ENOSPC simulated in
the writes onnxkit makes.
Commands run in-process (click, no subprocess), so the whole corpus takes a few seconds.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxkit import zoo
from onnxkit.errors import OnnxkitError
from onnxkit.train import TrainingInterrupted, fit
from onnxkit.train.run_directory import RunDirectory


def _models(root: Path) -> None:
    iris = zoo.build_model("iris-mlp")
    onnx.save(iris, root / "iris.onnx")
    data = (root / "iris.onnx").read_bytes()
    (root / "corrupt.onnx").write_bytes(b"\x08\x07not a model at all")
    (root / "empty.onnx").write_bytes(b"")
    (root / "truncated.onnx").write_bytes(data[: len(data) // 2])
    for size in (32, 128):
        fixed = zoo.build_model("iris-mlp")
        for value in [*fixed.graph.input, *fixed.graph.output]:
            value.type.tensor_type.shape.dim[0].dim_value = size  # replaces the symbolic batch
        onnx.save(fixed, root / f"fixed{size}.onnx")
    weight = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("FancyOp", ["h"], ["logits"])],
        "unknown", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), root / "unknown-op.onnx")
    (root / "broken_recipe.py").write_text("def recipe(:\n")
    (root / "recipe.py").write_text(
        "from onnxkit import nn\nfrom onnxkit.zoo import Recipe\n\n\nclass M(nn.Module):\n"
        "    def __init__(self):\n        self.fc = nn.Linear(4, 3)\n\n    def forward(self, x):\n"
        "        return self.fc(x)\n\n\ndef recipe():\n"
        "    return Recipe(M(), {'x': nn.Input(['batch', 4])}, ['out'])\n")
    table = numpy_helper.from_array(np.ones((10, 2), np.float32), "table")  # token ids 0..9
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["vectors"])], "embedding",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("vectors", TensorProto.FLOAT, ["batch", "seq", 2])], [table])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), root / "embedding.onnx")
    (root / "no-weights").mkdir()  # a model whose weights file (torch.onnx.export(external_data=True)) was left behind
    onnx.save(iris, root / "no-weights" / "iris.onnx", save_as_external_data=True, location="iris.onnx.data",
              size_threshold=0)
    (root / "no-weights" / "iris.onnx.data").unlink()


def _data(root: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.random((60, 4), dtype=np.float32)
    np.savez(root / "zero-rows.npz", x=np.zeros((0, 4), np.float32), y=np.zeros((0,), np.int64))
    np.save(root / "zero-rows.npy", np.zeros((0, 4), np.float32))
    (root / "zero-rows.json").write_text("[]")
    np.savez(root / "wrong-shape.npz", x=rng.random((60, 5), dtype=np.float32), y=np.zeros(60, np.int64))
    np.save(root / "wrong-shape.npy", rng.random((6, 5), dtype=np.float32))
    np.save(root / "rows.npy", rng.random((6, 4), dtype=np.float32))
    np.savez(root / "count-mismatch.npz", x=x, y=np.zeros(50, np.int64))
    np.savez(root / "label-minus-one.npz", x=x, y=np.r_[np.zeros(59, np.int64), -1])
    with_inf = x.copy()  # (NaN in a table's features is a missing value, which training fills: `train.impute`)
    with_inf[3, 1] = np.inf
    np.savez(root / "inf.npz", x=with_inf, y=np.zeros(60, np.int64))
    (root / "corrupt.npz").write_bytes(b"PK\x03\x04 not a zip")
    good = root / "good.npz"
    np.savez(good, x=x, y=rng.integers(0, 3, 60))
    (root / "truncated.npz").write_bytes(good.read_bytes()[:200])
    (root / "empty.csv").write_text("")
    for empty in ("empty.npy", "empty.npz"):  # numpy raises EOFError, which click read as a Ctrl-C (exit 130)
        (root / empty).write_bytes(b"")
    (root / "nested.json").write_text("[" * 100_000 + "]" * 100_000)
    (root / "ids-past-vocabulary.json").write_text("[[1, 2, 3], [4, 5, 99]]")


def _runs(root: Path) -> None:
    """An interrupted run, and copies of it damaged in each way resume must refuse."""
    def stop_after_the_first_epoch(record):  # type: ignore[no-untyped-def]
        if record["event"] == "epoch":
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(TrainingInterrupted):
        fit(root / "iris.onnx", "iris", root / "run", epochs=3, batch_size=16, callback=stop_after_the_first_epoch)
    for name in ("run-bad-json", "run-flipped", "run-no-artifacts", "run-bad-loop-state", "run-live"):
        shutil.copytree(root / "run", root / name)
    (root / "run-bad-json" / "run.json").write_text('{"config": {"model": ')
    checkpoint = RunDirectory(root / "run-flipped").last_checkpoint
    flipped = bytearray(checkpoint.read_bytes())
    flipped[-5] ^= 0x01
    checkpoint.write_bytes(bytes(flipped))
    shutil.rmtree(root / "run-no-artifacts" / "artifacts")
    (root / "run-bad-loop-state" / "checkpoints" / "last.json").write_text('{"step": ')
    (root / "run-live" / "run.lock").touch()  # the test holds its lock, as a live run would


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    _models(root)
    _data(root)
    _runs(root)
    return root


def _mount_tmpfs(folder: Path, size: str = "64k") -> bool:
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    return done.returncode == 0


@pytest.fixture
def full_disk(tmp_path, monkeypatch) -> Path:
    """A folder whose disk is full: a 64 KiB tmpfs when the test may mount one, else a folder where
    every file onnxkit would create fails with ENOSPC."""
    folder = tmp_path / "full"
    folder.mkdir()
    if _mount_tmpfs(folder):
        with contextlib.suppress(OSError), (folder / "filler.bin").open("wb") as filler:
            filler.write(b"\0" * (1 << 20))  # more than fits: the disk is now full
        yield folder
        subprocess.run(["umount", str(folder)], check=True)
        return

    def no_space(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    real_replace, real_mkdtemp = os.replace, tempfile.mkdtemp
    monkeypatch.setattr(os, "replace", lambda src, dst, **kw: (
        no_space() if str(folder) in str(Path(dst).resolve()) else real_replace(src, dst, **kw)))
    monkeypatch.setattr(tempfile, "mkdtemp", lambda *a, dir=None, **kw: (  # noqa: B008
        no_space() if dir and str(folder) in str(Path(dir).resolve()) else real_mkdtemp(*a, dir=dir, **kw)))
    yield folder


# (case id, command line); C is the corpus folder, OUT an empty folder, FULL a full disk.
CASES = [
    ("build set channels=0", "build digits-cnn --set channels=0 -o OUT/m.onnx"),
    ("build set channels=-5", "build digits-cnn --set channels=-5 -o OUT/m.onnx"),
    ("build set hidden=100000000", "build digits-mlp --set hidden=100000000 -o OUT/m.onnx"),
    ("build set hidden=abc", "build digits-mlp --set hidden=abc -o OUT/m.onnx"),
    ("build set unknown option", "build digits-mlp --set widht=3 -o OUT/m.onnx"),
    ("build set without =", "build digits-mlp --set hidden -o OUT/m.onnx"),
    ("build unknown model", "build digits-cnm -o OUT/m.onnx"),
    ("build broken recipe file", "build C/broken_recipe.py -o OUT/m.onnx"),
    ("build opset 99", "build digits-mlp --opset 99 -o OUT/m.onnx"),
    ("build into a missing folder", "build digits-mlp -o OUT/nowhere/m.onnx"),
    ("build over the good model", "build digits-cnn --set channels=0 -o C/iris.onnx"),
    ("build out of space", "build digits-cnn -o FULL/m.onnx"),
    ("build onto its own DSL file", "build C/recipe.py -o C/recipe.py"),  # wrote the model over the code
    ("inspect corrupt", "inspect C/corrupt.onnx"),
    ("inspect empty", "inspect C/empty.onnx"),
    ("inspect truncated", "inspect C/truncated.onnx"),
    ("inspect missing", "inspect C/missing.onnx"),
    ("inspect without its weights file", "inspect C/no-weights/iris.onnx"),
    ("eval without its weights file", "eval C/no-weights/iris.onnx --data iris"),
    ("quantize without its weights file", "quantize C/no-weights/iris.onnx -o OUT/q.onnx"),
    ("predict without its weights file", "predict C/no-weights/iris.onnx -i C/rows.npy"),
    ("predict onto its input", "predict C/iris.onnx -i C/rows.npy -o C/rows.npy"),  # wrote the scores over the rows
    ("train corrupt model", "train C/corrupt.onnx --data iris -o OUT/run"),
    ("train truncated model", "train C/truncated.onnx --data iris -o OUT/run"),
    ("train zero rows", "train C/iris.onnx --data C/zero-rows.npz -o OUT/run"),
    ("train wrong-shaped data", "train C/iris.onnx --data C/wrong-shape.npz -o OUT/run"),
    ("train 60 rows 50 labels", "train C/iris.onnx --data C/count-mismatch.npz -o OUT/run"),
    ("train label -1", "train C/iris.onnx --data C/label-minus-one.npz -o OUT/run"),
    ("train infinite feature", "train C/iris.onnx --data C/inf.npz -o OUT/run"),
    ("train corrupt npz", "train C/iris.onnx --data C/corrupt.npz -o OUT/run"),
    ("train truncated npz", "train C/iris.onnx --data C/truncated.npz -o OUT/run"),
    ("train fixed batch over the data", "train C/fixed128.onnx --data iris --batch-size 128 -o OUT/run"),
    ("train fixed batch, other size", "train C/fixed32.onnx --data iris --batch-size 16 -o OUT/run"),
    ("train unknown op", "train C/unknown-op.onnx --data iris -o OUT/run"),
    ("train epochs 0", "train C/iris.onnx --data iris --epochs 0 -o OUT/run"),
    ("train lr -1", "train C/iris.onnx --data iris --lr -1 -o OUT/run"),
    ("train into a finished or interrupted run", "train C/iris.onnx --data iris -o C/run"),
    ("resume damaged run.json", "train --resume C/run-bad-json"),
    ("resume flipped checkpoint", "train --resume C/run-flipped"),
    ("resume without artifacts", "train --resume C/run-no-artifacts"),
    ("resume with a damaged loop state", "train --resume C/run-bad-loop-state"),
    ("resume a live run", "train --resume C/run-live"),
    ("train -o a live run", "train C/iris.onnx --data iris -o C/run-live"),
    ("train out of space", "train C/iris.onnx --data iris -o FULL/run"),
    ("eval corrupt model", "eval C/corrupt.onnx --data iris"),
    ("eval unknown op", "eval C/unknown-op.onnx --data iris"),
    ("eval zero rows", "eval C/iris.onnx --data C/zero-rows.npz"),
    ("eval wrong-shaped data", "eval C/iris.onnx --data C/wrong-shape.npz"),
    ("eval without data", "eval C/iris.onnx"),
    ("eval unknown split", "eval C/iris.onnx --data iris --split tst"),
    ("quantize corrupt model", "quantize C/corrupt.onnx -o OUT/q.onnx"),
    ("quantize onto itself", "quantize C/iris.onnx -o C/iris.onnx"),
    ("quantize report onto the model", "quantize C/iris.onnx -o OUT/q.onnx --report C/iris.onnx"),
    ("quantize unknown op", "quantize C/unknown-op.onnx -o OUT/q.onnx --mode static --calib iris"),
    ("quantize zero-row calibration", "quantize C/iris.onnx -o OUT/q.onnx --mode static --calib C/zero-rows.npz"),
    ("quantize negative max-drop", "quantize C/iris.onnx -o OUT/q.onnx --eval iris --max-drop -1"),
    ("quantize out of space", "quantize C/iris.onnx -o FULL/q.onnx --no-latency"),
    ("predict corrupt model", "predict C/corrupt.onnx -i C/wrong-shape.npy"),
    ("predict truncated model", "predict C/truncated.onnx -i C/wrong-shape.npy"),
    ("predict unknown op", "predict C/unknown-op.onnx -i C/wrong-shape.npy"),
    ("predict nested JSON", "predict C/iris.onnx -i C/nested.json"),
    ("predict corrupt npz", "predict C/iris.onnx -i C/corrupt.npz"),
    ("predict wrong-shaped", "predict C/iris.onnx -i C/wrong-shape.npy"),
    ("predict empty csv", "predict C/iris.onnx -i C/empty.csv"),
    ("predict empty npy", "predict C/iris.onnx -i C/empty.npy"),
    ("predict empty npz", "predict C/iris.onnx -i C/empty.npz"),
    ("train empty npz", "train C/iris.onnx --data C/empty.npz -o OUT/run"),
    ("quantize empty calibration npy", "quantize C/iris.onnx -o OUT/q.onnx --mode static --calib C/empty.npy"),
    ("predict zero-row npz", "predict C/iris.onnx C/zero-rows.npz"),
    ("predict zero-row npy", "predict C/iris.onnx C/zero-rows.npy -o OUT/p.csv"),
    ("predict empty JSON list", "predict C/iris.onnx -i C/zero-rows.json"),
    ("predict token id past the vocabulary", "predict C/embedding.onnx -i C/ids-past-vocabulary.json -o OUT/p.json"),
    ("predict out of space", "predict C/iris.onnx -i C/rows.npy -o FULL/p.json"),
    ("quantize into a missing folder", "quantize C/iris.onnx -o OUT/nowhere/q.onnx --no-latency"),
    ("serve corrupt model", "serve C/corrupt.onnx --port 0"),
    ("serve unknown op", "serve C/unknown-op.onnx --port 0"),
]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_complete(folder: Path) -> None:
    """No temporary or half-written file: every file left is one a reader can open whole."""
    for path in folder.rglob("*"):
        assert ".tmp" not in path.suffixes and not path.name.startswith(".onnxkit-"), path
        if path.suffix == ".onnx":
            onnx.load(str(path))
        elif path.suffix == ".json":
            json.loads(path.read_text())


@pytest.mark.parametrize("args", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_error_line(args, corpus, tmp_path, full_disk, run_cli):
    out = tmp_path / "out"
    out.mkdir()
    argv = [a.replace("C/", f"{corpus}/").replace("OUT/", f"{out}/").replace("FULL/", f"{full_disk}/")
            for a in args.split()]
    before = snapshot(corpus)
    live = RunDirectory(corpus / "run-live")
    with live.lock(new=False):  # another process training in run-live
        result = run_cli(*argv)
    text = result.out + result.err
    assert result.code != 0, text
    assert "Traceback" not in text and "stopped by" not in text, text
    errors = [line for line in result.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and result.err.strip().splitlines()[-1] == errors[0], result.err
    assert snapshot(corpus) == before  # nothing overwritten, nothing added
    for folder in (out, full_disk):
        assert_complete(folder)


def test_inputs_that_look_odd_but_are_fine(corpus, tmp_path, run_cli):
    # labels shaped [N, 1] are squeezed; a metrics line cut short by a kill is redone on resume
    np.savez(tmp_path / "column.npz", x=np.random.default_rng(1).random((40, 4), dtype=np.float32),
             y=np.random.default_rng(2).integers(0, 3, (40, 1)))
    assert run_cli("eval", corpus / "iris.onnx", "--data", tmp_path / "column.npz").code == 0
    run = tmp_path / "run"
    shutil.copytree(corpus / "run", run)
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"event": "step", "ep')
    result = run_cli("train", "--resume", run, "--quiet")
    assert result.code == 0, result.err
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["event"] == "step"] == list(range(1, records[-1]["step"] + 1))


def test_safetensors_files_on_a_full_disk_fail_in_one_line_and_leave_nothing(tmp_path):
    """Checkpoints, artifacts' initial weights and Module.save write safetensors, whose writer
    raises its own error type for a full disk."""
    from onnxkit import nn
    from onnxkit.files import write_safetensors

    small = tmp_path / "small"
    small.mkdir()
    if not _mount_tmpfs(small):
        pytest.skip("needs root to mount a 64 KiB tmpfs")
    try:
        big = {"w": np.zeros(1 << 16, np.float32)}  # 256 KiB
        with pytest.raises(OnnxkitError, match=r"w.safetensors: No space left on device; free some space"):
            write_safetensors(small / "w.safetensors", big)
        with pytest.raises(OnnxkitError, match="No space left on device"):
            nn.Linear(256, 256).save(small / "layer.safetensors")
        assert list(small.iterdir()) == []
    finally:
        subprocess.run(["umount", str(small)], check=True)


@pytest.mark.parametrize("size", ["250k", "400k"])
def test_quantize_on_a_disk_with_room_for_less_than_its_work_blames_the_disk(tmp_path, run_cli, size):
    """ONNX Runtime's quantizers wrote a model cut short without an error and failed to read it back: the error
    blamed the model ('could not preprocess', 'Error parsing message'); digits-mlp is 106 KB."""
    model, small = tmp_path / "mlp.onnx", tmp_path / "small"
    onnx.save(zoo.build_model("digits-mlp"), model)
    small.mkdir()
    if not _mount_tmpfs(small, size):
        pytest.skip("needs root to mount a tmpfs")
    try:
        result = run_cli("quantize", model, "-o", small / "q.onnx", "--no-latency")
        assert result.code == 1 and result.err.count("\n") == 1, result.err
        assert result.err.startswith(f"error: cannot write in {small}: too little space left on its disk"), result.err
        assert list(small.iterdir()) == []
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_a_file_size_limit_is_named_as_such_not_as_a_full_disk(tmp_path):
    # under `ulimit -f` the error said 'File too large; free some space', which frees nothing
    import resource

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))  # Python ignores SIGXFSZ: writes fail with EFBIG

    result = subprocess.run([sys.executable, "-m", "onnxkit", "build", "digits-mlp", "-o", tmp_path / "m.onnx"],
                            capture_output=True, text=True, timeout=120, preexec_fn=limited)
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert "File too large; the file outgrew the largest file this process may write (ulimit -f)" in result.stderr
    assert list(tmp_path.iterdir()) == []
