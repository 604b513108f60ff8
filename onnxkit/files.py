"""Reading and writing files safely: atomic writes and clear errors for bad ONNX files.

Imports only the standard library at module level, so the runtime can use it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from onnxkit.errors import OnnxkitError

if TYPE_CHECKING:
    import onnx


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` only on success.

    A failure (or Ctrl-C) removes the temporary file and leaves any existing
    `path` untouched.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OnnxkitError(f"cannot write {path}: folder {parent} does not exist; create it first")
    if path.is_dir():
        raise OnnxkitError(f"cannot write {path}: it is a folder; give a file name")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    except OSError as e:
        raise OnnxkitError(f"cannot write {path}: folder {parent} is not writable ({e.strerror})") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    write_bytes(path, text.encode("utf-8"))


def is_number(text: str) -> bool:
    """Whether a CSV cell reads as a number (used to tell a header row from data)."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def save_model(model: onnx.ModelProto, path: str | os.PathLike) -> Path:
    """Serialise `model` to `path` atomically and return the path."""
    data = model.SerializeToString()
    write_bytes(path, data)
    return Path(path)


def load_model(path: str | os.PathLike, *, load_weights: bool = True) -> onnx.ModelProto:
    """Load an ONNX file, turning every failure into one clear OnnxkitError."""
    import onnx
    from google.protobuf.message import DecodeError

    path = Path(path)
    if not path.is_file():
        raise OnnxkitError(f"{path}: no such file; pass the path of an .onnx model")
    try:
        model = onnx.load(str(path), load_external_data=load_weights)
    except (DecodeError, ValueError, RuntimeError, OSError) as e:
        raise OnnxkitError(
            f"{path}: not a readable ONNX model ({type(e).__name__}); "
            "check that the file is complete and really is .onnx"
        ) from e
    if not model.graph.node and not model.graph.output:
        raise OnnxkitError(f"{path}: not an ONNX model (empty graph); is it the right file?")
    return model
