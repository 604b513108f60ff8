"""atomic_path's temporary files: named for the process writing them, and swept once it is gone."""

from __future__ import annotations

import os
import subprocess
import sys

from onnxkit.files import atomic_path, write_text


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()  # reaped: its id no longer runs
    return child.pid


def test_the_temporary_file_is_named_for_the_writing_process(tmp_path):
    with atomic_path(tmp_path / "bert.onnx") as tmp:
        assert tmp.name.startswith(f".bert.onnx.onnxkit-{os.getpid()}-") and tmp.name.endswith(".tmp.onnx")


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
