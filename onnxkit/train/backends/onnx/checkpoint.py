"""Checkpoints of the onnx backend: one safetensors file of named tensors. Parameters and
buffers keep their model names; optimizer state is `optimizer/<param>.<slot>` and the
step count `optimizer/step`, the dropout table size `session/...`, so any safetensors
reader can inspect it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from onnxkit.errors import OnnxkitError
from onnxkit.files import atomic_path

OPTIMIZER_KEY = "optimizer/"
STEP = OPTIMIZER_KEY + "step"
DROPOUT_TABLE = "session/dropout_table_size"  # so a resumed run draws the same masks


def save_state(path: Path, state: Mapping[str, np.ndarray]) -> None:
    """Write `state` to `path` atomically."""
    from safetensors.numpy import save_file

    with atomic_path(path) as tmp:
        save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(tmp), metadata={"format": "onnxkit"})


def load_state(path: Path) -> dict[str, np.ndarray]:
    """The tensors in checkpoint `path`; a clear error when it is missing or damaged."""
    from safetensors.numpy import load_file

    if not path.is_file():
        raise OnnxkitError(f"{path}: no such checkpoint; is this a training run directory?")
    try:
        return load_file(str(path))
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for a damaged file
        raise OnnxkitError(f"{path}: not a readable checkpoint ({e}); resume from another run") from e


def model_tensors(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The parameters and buffers of a checkpoint (no optimizer state)."""
    return {k: v for k, v in state.items() if not k.startswith((OPTIMIZER_KEY, "session/"))}
