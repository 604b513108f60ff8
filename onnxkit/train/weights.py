"""Named tensors in a safetensors file, written atomically: the format of the onnx backend's
checkpoints and of every backend's best.ckpt (any safetensors reader opens them)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from onnxkit.errors import OnnxkitError
from onnxkit.files import write_safetensors


def save_tensors(path: Path, tensors: Mapping[str, np.ndarray]) -> None:
    """Write `tensors` to `path` atomically."""
    write_safetensors(path, {k: np.require(v, requirements="C") for k, v in tensors.items()}, {"format": "onnxkit"})


def load_tensors(path: Path) -> dict[str, np.ndarray]:
    """The tensors in `path`; a clear error when it is missing or damaged."""
    from safetensors.numpy import load_file

    if not path.is_file():
        raise OnnxkitError(f"{path}: no such checkpoint; is this a training run directory?")
    try:
        return load_file(str(path))
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for a damaged file
        raise OnnxkitError(f"{path}: not a readable checkpoint ({e}); resume from another run") from e
