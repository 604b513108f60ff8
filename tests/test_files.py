"""atomic_path's temporary files: named for the process writing them, and swept once it is gone; the
folder errors every writer shares."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from onnxkit.errors import OnnxkitError
from onnxkit.files import atomic_path, scratch_folder, write_text


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()  # reaped: its id no longer runs
    return child.pid


def test_the_temporary_file_is_named_for_the_writing_process(tmp_path):
    with atomic_path(tmp_path / "bert.onnx") as tmp:
        assert tmp.name.startswith(f".bert.onnx.onnxkit-{os.getpid()}-") and tmp.name.endswith(".tmp.onnx")


@pytest.mark.parametrize("writer", [atomic_path, lambda path: scratch_folder(path, "quantize")])
def test_a_missing_folder_or_a_file_as_the_folder_is_the_same_error_for_every_writer(tmp_path, writer):
    (tmp_path / "file").write_text("x")
    for folder, why in (("nodir", "does not exist; create it first"), ("file", "is a file, not a folder")):
        with pytest.raises(OnnxkitError, match=f"^cannot write {tmp_path / folder / 'q.onnx'}: "
                                               f"{tmp_path / folder} {why}$"), writer(tmp_path / folder / "q.onnx"):
            pass


def test_a_device_fifo_or_link_loop_is_refused_and_a_link_written_through(tmp_path, run_cli):
    # the temporary file was renamed over whatever the path named: as root, `-o /dev/null` made /dev/null a model
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "l1").symlink_to(tmp_path / "l2")
    (tmp_path / "l2").symlink_to(tmp_path / "l1")
    for name, why in [("fifo", "it is a device, FIFO or socket, not a file"), ("l1", "a loop of symbolic links")]:
        with pytest.raises(OnnxkitError, match=why):
            write_text(tmp_path / name, "x")
    assert (tmp_path / "fifo").is_fifo() and (tmp_path / "l1").is_symlink()
    with pytest.raises(OnnxkitError, match="it is a device, FIFO or socket"):
        write_text("/dev/null", "x")
    (tmp_path / "real.onnx").write_text("old")
    (tmp_path / "link.onnx").symlink_to("real.onnx")
    (tmp_path / "dangling.onnx").symlink_to("new.onnx")
    for name in ("link.onnx", "dangling.onnx"):
        write_text(tmp_path / name, "x")
        assert (tmp_path / name).is_symlink() and (tmp_path / name).read_text() == "x"
    assert (tmp_path / "real.onnx").read_text() == (tmp_path / "new.onnx").read_text() == "x"
    result = run_cli("build", "digits-mlp", "-o", tmp_path / "fifo")
    assert result.code == 1 and result.err == (f"error: cannot write {tmp_path / 'fifo'}: it is a device, FIFO or "
                                               "socket, not a file; give a file name\n")
    for model, why in [("fifo", "not a regular file (a device, FIFO or socket)"), ("l1", "a loop of symbolic links"),
                       ("gone.onnx", "nowhere.onnx")]:
        if model == "gone.onnx":
            (tmp_path / model).symlink_to("nowhere.onnx")
        for command in (["inspect"], ["quantize", "-o", tmp_path / "q.onnx"], ["train", "--data", "digits", "-o",
                                                                               tmp_path / "run"]):
            result = run_cli(command[0], tmp_path / model, *command[1:])
            assert result.code == 1 and why in result.err and len(result.err.splitlines()) == 1, result.err


def test_a_write_sweeps_only_the_temporary_files_of_processes_that_are_gone(tmp_path):
    dead = _dead_pid()
    stale = [f".bert.onnx.onnxkit-{dead}-hf04jvxr.tmp.onnx", f".notes.onnxkit-{dead}-noq__k3y.tmp"]
    kept = [
        f".bert.int8.onnx.onnxkit-{os.getpid()}-noq__k3y.tmp.onnx",  # a live process's write
        f".bert.onnx.onnxkit-{dead}-hf04jvxr.tmp.json",  # not the target's extension
        f".bert.onnx.{dead}-hf04jvxr.tmp.onnx",  # no onnxkit in the name
        f"bert.onnx.onnxkit-{dead}-hf04jvxr.tmp.onnx",  # not hidden
        f".bert.onnx.onnxkit-{dead}x-hf04jvxr.tmp.onnx",  # not a process id
    ]
    for name in stale + kept:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / f".model.onnx.onnxkit-{dead}-folder00.tmp.onnx").mkdir()  # a folder: not removed, no error
    kept.append(f".model.onnx.onnxkit-{dead}-folder00.tmp.onnx")
    write_text(tmp_path / "report.json", "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*kept, "report.json"])


def test_a_model_whose_weights_file_is_missing_or_cut_short_is_one_clear_error(tmp_path):
    """A model saved with its weights in a separate file (as torch.onnx.export(external_data=True)
    does), moved without that file or with a truncated copy: onnx's raw ValidationError was a
    traceback in inspect, eval and quantize; ValueError said only 'not a readable ONNX model'."""
    import numpy as np
    import onnx
    import pytest
    from onnx import TensorProto, helper, numpy_helper

    from onnxkit import runtime
    from onnxkit.errors import OnnxkitError
    from onnxkit.files import load_model

    weight = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "m.onnx"
    onnx.save(model, path, save_as_external_data=True, location="m.onnx.data", size_threshold=0)
    assert load_model(path).graph.initializer[0].raw_data == weight.raw_data
    data = (tmp_path / "m.onnx.data").read_bytes()
    (tmp_path / "m.onnx.data").write_bytes(data[:20])
    with pytest.raises(OnnxkitError) as cut:
        load_model(path)
    assert str(cut.value) == (f"{path}: its weights file m.onnx.data is cut short (20 bytes; weight 'w' needs 48); "
                              "copy that file again in full")
    (tmp_path / "m.onnx.data").unlink()
    with pytest.raises(OnnxkitError) as missing:
        load_model(path)
    assert str(missing.value) == (f"{path}: its weights are kept in a separate file, m.onnx.data, which is not "
                                  f"beside it ({tmp_path / 'm.onnx.data'} is missing); copy that file next to "
                                  "the model")
    assert load_model(path, load_weights=False).graph.input[0].name == "x"  # the graph alone still reads
    with pytest.raises(OnnxkitError) as unloadable:
        runtime.load(path)
    message = str(unloadable.value)
    assert message.startswith(f"{path}: onnxruntime ") and "External data path does not exist" in message
    assert message.endswith("); keep the weights file it was saved with beside it, complete")
    assert ".cc:" not in message  # no C++ source places


def test_summarize_takes_a_path_as_inspect_does(tmp_path, run_cli):
    # it took only a ModelProto: summarize("m.onnx") was "'str' object has no attribute 'graph'"
    import json

    from onnxkit import zoo
    from onnxkit.files import save_model
    from onnxkit.summary import summarize

    path = save_model(zoo.build_model("iris-mlp"), tmp_path / "iris.onnx")
    assert summarize(path) == json.loads(run_cli("inspect", path, "--json").out)


def test_an_npy_named_npz_is_one_line_everywhere_an_npz_is_read(tmp_path, run_cli):
    # np.load gives one array for it: "'numpy.ndarray' object does not support the context manager protocol", a
    # traceback in predict, eval, train and quantize
    import numpy as np

    from onnxkit import zoo
    from onnxkit.files import save_model

    model = save_model(zoo.build_model("iris-mlp"), tmp_path / "iris.onnx")
    np.save(tmp_path / "rows.npy", np.ones((3, 4), np.float32))
    (tmp_path / "rows.npy").rename(tmp_path / "rows.npz")
    line = (f"error: {tmp_path / 'rows.npz'}: holds one array (.npy format), not an .npz archive of named arrays; "
            "name it .npy, or save it with numpy.savez\n")
    for command in (["predict", model, "-i"], ["eval", model], ["train", model, "-o", tmp_path / "run"],
                    ["quantize", model, "--mode", "static", "-o", tmp_path / "q.onnx", "--calib"]):
        result = run_cli(*command, tmp_path / "rows.npz")
        assert (result.code, result.err) == (1, line), command


def test_batch_norm_running_statistics_are_no_parameters_in_inspect_or_build(tmp_path, run_cli):
    # an MLP with BatchNorm1d counted 9,482 where PyTorch's sum(p.numel()) is 9,226: its running statistics
    from onnxkit import nn
    from onnxkit.summary import parameter_count, summarize

    model = nn.build(nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)),
                     {"x": nn.Input(["batch", 4])})
    expected = (4 * 8 + 8) + (8 + 8) + (8 * 3 + 3)  # weights, biases, gamma and beta; not the 16 statistics
    assert parameter_count(model) == summarize(model)["parameters"] == expected
    (tmp_path / "net.py").write_text(
        "from onnxkit import nn\nfrom onnxkit.zoo import Recipe\n\n\ndef recipe():\n"
        "    return Recipe(nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)), "
        "{'x': nn.Input(['batch', 4])})\n")
    built = run_cli("build", tmp_path / "net.py", "-o", tmp_path / "net.onnx")
    assert built.code == 0 and f"({expected:,} parameters," in built.out, built.out + built.err


def test_a_file_of_another_kind_given_as_the_model_is_named_with_what_to_do(tmp_path, run_cli):
    """A PyTorch checkpoint, a pickle, a Keras .h5, a gzip, a safetensors file, a Git LFS pointer, text or an empty
    file given as the model: 'not a readable ONNX model (DecodeError)' from inspect, eval, train and quantize, and
    from predict and serve 'onnxruntime cannot load it (Protobuf parsing failed.); ... check that its IR version and
    opset suit this onnxruntime', which sent a user after versions. numpy's files and a CSV: the data given first."""
    import gzip
    import pickle
    import zipfile

    import numpy as np
    import pytest

    from onnxkit import runtime
    from onnxkit.errors import OnnxkitError
    from onnxkit.files import load_model

    with zipfile.ZipFile(tmp_path / "model.pt", "w") as archive:  # torch.save's layout
        archive.writestr("model/data.pkl", pickle.dumps({"fc.weight": [1.0]}))
        archive.writestr("model/version", "3\n")
    (tmp_path / "old.pth").write_bytes(pickle.dumps({"fc.weight": [1.0]}, protocol=2))
    (tmp_path / "keras.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(200))
    (tmp_path / "model.onnx.gz").write_bytes(gzip.compress(b"\x08\x07" + bytes(100)))
    header = b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
    (tmp_path / "w.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + bytes(4))
    (tmp_path / "lfs.onnx").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 90815966\n")
    (tmp_path / "notes.onnx").write_text("the model is on the shared drive\n")
    (tmp_path / "empty.onnx").write_bytes(b"")
    np.save(tmp_path / "rows.npy", np.zeros((2, 4), np.float32))  # the data given first: `predict rows.npy m.onnx`
    np.savez(tmp_path / "rows.npz", x=np.zeros((2, 4), np.float32))
    (tmp_path / "rows.csv").write_text("a,b,label\n1,2,0\n")
    data_first = "if it is the data, give the .onnx model first and the data after it"
    expected = {
        "model.pt": "a zip archive, not an ONNX model (a PyTorch .pt or .pth checkpoint is one); export the model to "
                    "ONNX (torch.onnx.export) and pass that .onnx file",
        "old.pth": "a Python pickle, not an ONNX model",
        "keras.h5": "an HDF5 file (a Keras .h5 model), not an ONNX model; convert it to ONNX with tf2onnx",
        "model.onnx.gz": "a gzip-compressed file, not an ONNX model; decompress it first (gunzip)",
        "w.safetensors": "a safetensors file of weights, not an ONNX model; pass the .onnx model they belong to",
        "lfs.onnx": "a Git LFS pointer, not the model itself; fetch the file (git lfs pull, or download it)",
        "notes.onnx": "a text file, not an ONNX model; pass the .onnx file itself",
        "empty.onnx": "an empty file (0 bytes), not an ONNX model; copy or write the model again",
        "rows.npy": f"a numpy array (.npy), not an ONNX model; {data_first}",
        "rows.npz": f"an .npz archive of numpy arrays, not an ONNX model; {data_first}",
        "rows.csv": f"a text file, not an ONNX model; {data_first}",
    }
    for name, message in expected.items():
        path = tmp_path / name
        for read in (load_model, runtime.load):
            with pytest.raises(OnnxkitError) as refused:
                read(path)
            assert str(refused.value).startswith(f"{path}: {message}"), (read, str(refused.value))
    before = sorted(p.name for p in tmp_path.iterdir())
    for command in (("inspect",), ("predict", "-t", "x"), ("quantize", "-o", tmp_path / "q.onnx"),
                    ("train", "--data", "iris", "-o", tmp_path / "run")):
        result = run_cli(command[0], tmp_path / "model.pt", *command[1:])
        assert (result.code, result.err) == (1, f"error: {tmp_path / 'model.pt'}: {expected['model.pt']}\n"), command
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_file_under_an_npy_or_npz_name_that_numpy_did_not_write_says_what_it_is(tmp_path, run_cli):
    """A CSV saved as rows.npz: numpy took it for a pickle, and train and eval said to load it 'unsafely using the
    allow_pickle= keyword argument', predict of one named .npy that its array held Python objects."""
    import pickle

    from onnxkit import zoo
    from onnxkit.files import save_model

    model = save_model(zoo.build_model("iris-mlp"), tmp_path / "iris.onnx")
    table = "5.1,3.5,1.4,0.2,0\n4.9,3.0,1.4,0.2,1\n"
    for name in ("rows.npz", "rows.npy"):
        (tmp_path / name).write_text(table)
    (tmp_path / "pickled.npy").write_bytes(pickle.dumps([[1.0, 2.0, 3.0, 4.0]], protocol=4))
    text = "text, not an {} file ({} writes one); a table of numbers goes in a .csv file: name it .csv"
    expected = {"rows.npz": text.format(".npz", "numpy.savez"), "rows.npy": text.format(".npy", "numpy.save"),
                "pickled.npy": "a Python pickle, not an .npy file, and onnxkit does not unpickle; save the arrays "
                               "with numpy.save"}
    commands = [("predict", model, "DATA"), ("quantize", model, "-o", tmp_path / "q.onnx", "--mode", "static",
                                              "--calib", "DATA", "--no-latency")]
    for name, message in expected.items():
        data = tmp_path / name
        for command in commands + [("train", model, "--data", data, "-o", tmp_path / "run"),
                                   ("eval", model, "--data", data)] * (name == "rows.npz"):
            result = run_cli(*(data if part == "DATA" else part for part in command))
            assert (result.code, result.err) == (1, f"error: {data}: {message}\n"), command
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iris.onnx", "pickled.npy", "rows.npy", "rows.npz"]
