"""Sinusoidal position tables: the fixed `[positions, dim]` tables of the Transformer paper, which transformers
(Whisper's encoder, Marian, Pegasus), fairseq and tensor2tensor keep out of training (`requires_grad=False`) but
which an ONNX export writes as any other weight.

Each row p holds sin(p * w) and cos(p * w) for dim / 2 frequencies w, the sines and cosines either interleaved
(the paper's; DistilBERT's) or in two halves (tensor2tensor's, Whisper's, Marian's). Whatever the frequencies, each
(sine, cosine) pair of columns lies on the unit circle at an angle that grows with the row by a fixed step from 0;
values computed in float32 do so to a phase error of about 1e-7 * (1 + p * w), which a learned table is nowhere near.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

MIN_ROWS = 8  # fewer positions say too little about how the angle grows
RADIUS = 1e-5  # sin² + cos² may miss 1 by float32 rounding of both
PHASE, GROWTH = 1e-6, 2.0**-21  # the phase error allowed: PHASE + GROWTH * p * w (4x float32's rounding of p * w)


def is_sinusoid_initializer(tensor: onnx.TensorProto) -> bool:
    """`is_sinusoid_table` for a float32 initializer (each 2-D weight read whole: 35 ms a call on MiniLM's 22.6M
    parameters, where the rest of `find_parameters` takes 2 ms)."""
    return len(tensor.dims) == 2 and tensor.data_type == onnx.TensorProto.FLOAT and tensor.dims[0] >= MIN_ROWS \
        and is_sinusoid_table(numpy_helper.to_array(tensor))


def is_sinusoid_table(table: np.ndarray) -> bool:
    """Whether `table` is a sinusoidal position table (module docstring): rows of positions 0, 1, ..."""
    if table.ndim != 2 or table.shape[0] < MIN_ROWS or table.shape[1] < 2 or table.shape[1] % 2:
        return False
    half = table.shape[1] // 2
    for sines, cosines in ((slice(0, half), slice(half, None)), (slice(0, None, 2), slice(1, None, 2))):
        first = table[0]
        if np.any(first[sines] != 0) or np.any(np.abs(first[cosines] - 1) > RADIUS):  # sin 0 = 0, cos 0 = 1: a quick no
            continue
        if _on_steady_angles(table[:, sines].astype(np.float64), table[:, cosines].astype(np.float64)):
            return True
    return False


def _on_steady_angles(sines: np.ndarray, cosines: np.ndarray) -> bool:
    """Whether each column pair is (sin, cos) of an angle p * w, for the row p and one step w per pair (under pi)."""
    if np.any(np.abs(sines * sines + cosines * cosines - 1) > RADIUS):
        return False
    angles = np.unwrap(np.arctan2(sines, cosines), axis=0)
    rows = np.arange(len(angles), dtype=np.float64)[:, None]
    expected = rows * (angles[-1] / rows[-1])
    return bool(np.all(np.abs(angles - expected) <= PHASE + GROWTH * np.abs(expected)))
