"""A quantized model loaded and run once in a child process, before this process opens it.

onnxruntime can crash outright on a graph a quantizer wrote: 1.32 fused a float16 Transpose into its MatMul
and died of a segmentation fault creating a default session (`fp16.batch_transposes_into_matmul` keeps that one
float32). In this process such a crash kills `quantize` with no message and leaves a file that crashes every
default session; in a child it is one line, and nothing is written. The child opens each model as a user's app
does (default options, every graph optimisation) and runs it on one batch; an error onnxruntime raises there is
left to the checks in this process, which name it. One child serves a process's quantizations, started with the
first (a fresh interpreter importing onnxruntime, ~0.2 s), and ends when this process does.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import onnx

from onnxkit.quantize.data import Feeds

CHILD = """
import json, sys
import numpy as np
import onnxruntime as ort
for line in sys.stdin:  # [model path, feeds path] a line, until the parent's end closes the pipe
    model, data = json.loads(line)
    try:
        with np.load(data, allow_pickle=True) as feeds:
            ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, dict(feeds))
    except Exception:  # onnxruntime's refusal: the parent's own checks name it
        pass
    print("survived", flush=True)
"""

_child: subprocess.Popen | None = None
_lock = threading.Lock()


def _end(child: subprocess.Popen) -> int:
    """Close the child's pipes (at the end of its input it exits) and wait for it: its exit status."""
    with contextlib.suppress(BrokenPipeError):  # what a dead child was sent, unread
        child.stdin.close()
    child.stdout.close()
    return child.wait()


@atexit.register
def _end_child() -> None:
    if _child is not None:
        _end(_child)


def crash(model: onnx.ModelProto, feeds: Feeds, folder: Path) -> str | None:
    """The signal (SIGSEGV, ...) that killed the child process opening `model` in a default onnxruntime session
    and running it on `feeds`, or None when it survived or ended otherwise. `folder`: where the two go for the child
    to read."""
    global _child
    path, data = folder / "crash-check.onnx", folder / "crash-check.npz"
    path.write_bytes(model.SerializeToString())
    np.savez(data, **feeds)
    try:
        with _lock:
            if _child is None or _child.poll() is not None:
                _child = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            child = _child
            try:
                child.stdin.write(json.dumps([str(path), str(data)]) + "\n")
                child.stdin.flush()
            except BrokenPipeError:  # it died since: the read below finds its end
                pass
            if child.stdout.readline():
                return None
            _child = None
            code = _end(child)
    finally:
        path.unlink()
        data.unlink()
    if code >= 0:  # it exited (could not import onnxruntime, say): no crash seen, this process's checks follow
        return None
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"
