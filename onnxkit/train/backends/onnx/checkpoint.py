"""Checkpoints of the onnx backend: one safetensors file of named tensors. Parameters and
buffers keep their model names; optimizer state is `optimizer/<param>.<slot>` and the
step count `optimizer/step`, the dropout table size `session/...`, so any safetensors
reader can inspect it."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from onnxkit.train.weights import load_tensors as load_state
from onnxkit.train.weights import save_tensors as save_state

OPTIMIZER_KEY = "optimizer/"
STEP = OPTIMIZER_KEY + "step"
DROPOUT_TABLE = "session/dropout_table_size"  # so a resumed run draws the same masks

__all__ = ["DROPOUT_TABLE", "OPTIMIZER_KEY", "STEP", "load_state", "model_tensors", "save_state"]


def model_tensors(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The parameters and buffers of a checkpoint (no optimizer state)."""
    return {k: v for k, v in state.items() if not k.startswith((OPTIMIZER_KEY, "session/"))}
