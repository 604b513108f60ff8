"""Whether a model answers each input row on its own: the condition for running rows in batches and for
merging requests into one run (serve), whose outputs are then split back by row.

An output's declared shape settles it when its first dimension is a fixed size other than 1 (a column sum's [3], a
transpose's [3, batch]: never per row) or a scalar or a sequence of tensors; otherwise a probe decides (a declared
1 may be the batch: onnxmltools declares a LightGBM classifier's label [1], and answers a row each),
since a first dimension named as the inputs' batch can still mix rows (a [batch, batch] similarity, a
normalisation over the batch): the model runs on three rows of varied values and on the first and the last
alone, and every output must have one row per input row, a lone row's the same as in company (or, where a lone
row's kernels round otherwise, as in a batch of its own copies).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from onnxkit.runtime.signature import TensorSpec, batchable

PROBE_ROWS = 3
PROBE_LENGTH = 8  # each free size past the batch (a sequence): long enough for a convolution over it
_CLOSE = dict(rtol=1e-3, atol=1e-5, equal_nan=True)  # kernels differ in summation order between batch sizes


def rows_independent(inputs: list[TensorSpec], outputs: list[TensorSpec], run: Any,
                     quantized_per_run: Callable[[], bool] = lambda: False) -> bool:
    """True when every output has a row per input row that depends on that row alone; `run(feeds)` runs the model
    (its outputs by name). False for a model whose inputs fix their batch size. A model the probe cannot run (its
    inputs need other sizes or values) is judged by its outputs' shapes alone, as before there was a probe (a
    symbolic feature size, 8 here, must not stop a big input from running in batches).
    `quantized_per_run()`: whether the model quantizes its activations with each run's range (dynamic int8), so
    that a row moves with its company by design (a MiniLM logit by up to 19% of the logits' range): its rows
    then count as its own when their shapes say so (serve's README states the trade)."""
    if not batchable(inputs) or any(spec.dtype is None for spec in inputs) or \
            not all(_may_be_per_row(spec) for spec in outputs):
        return False
    feeds = _probe_feeds(inputs)
    try:
        together = run(feeds)
        first, last = (run({name: value[row] for name, value in feeds.items()}) for row in (slice(1), slice(-1, None)))
    except Exception:  # noqa: BLE001 - onnxruntime's errors have no common base
        return not any(_declared_one(spec) for spec in outputs)
    if not all(_per_row(together[spec.name], PROBE_ROWS) and _per_row(first[spec.name], 1) for spec in outputs):
        return False
    # the first row and the last alone: a row depending on those before it (a cumulative sum over the batch) keeps
    # the first one as it is
    same = all(_same_row(first[spec.name][0], together[spec.name][0]) and
               _same_row(last[spec.name][0], together[spec.name][-1]) for spec in outputs)
    return same or _same_in_own_company(feeds, together, outputs, run) or quantized_per_run()


def _same_in_own_company(feeds: dict[str, np.ndarray], together: dict[str, Any], outputs: list[TensorSpec],
                         run: Any) -> bool:
    """Whether the first and the last row answer as they did among the others when the batch, of the same size,
    holds copies of that row alone. A lone row runs other kernels (a sum's order differs between batch sizes), which
    a layer norm computed as E[x^2] - E[x]^2 amplifies past any tolerance (magika's 0/1 probe bytes moved its
    scores by 1%), where a batch of the same size runs each row as it ran among the others."""
    try:
        copies = [run({name: np.repeat(value[row], PROBE_ROWS, axis=0) for name, value in feeds.items()})
                  for row in (slice(1), slice(-1, None))]
    except Exception:  # noqa: BLE001 - onnxruntime's errors have no common base
        return False
    return all(_per_row(copy[spec.name], PROBE_ROWS) and _same_row(copy[spec.name][0], together[spec.name][index])
               for copy, index in zip(copies, (0, -1), strict=True) for spec in outputs)


def _may_be_per_row(spec: TensorSpec) -> bool:
    if spec.type.startswith("seq(map("):  # scikit-learn's ZipMap: a map of class probabilities a row
        return True
    return spec.type.startswith("tensor(") and not (spec.shape and isinstance(spec.shape[0], int)
                                                    and not _declared_one(spec))


def _declared_one(spec: TensorSpec) -> bool:
    """Whether an output declares its first dimension 1: a batch statistic, or a batch an exporter misdeclared."""
    return bool(spec.shape) and spec.shape[0] == 1


def _probe_feeds(inputs: list[TensorSpec]) -> dict[str, np.ndarray]:
    """PROBE_ROWS rows of varied values, each free size past the batch PROBE_LENGTH: small numbers (token ids,
    class ids and indices stay in range), distinct strings."""
    rng = np.random.default_rng(0)
    feeds = {}
    for spec in inputs:
        shape = tuple(d if isinstance(d, int) else PROBE_LENGTH for d in spec.shape[1:])
        if spec.type == "tensor(string)":
            feeds[spec.name] = np.array([f"row {i}" for i in range(PROBE_ROWS * int(np.prod(shape)))],
                                        dtype=object).reshape(PROBE_ROWS, *shape)
        else:
            values = rng.integers(0, 2, (PROBE_ROWS, *shape)) if spec.dtype.kind in "iub" else \
                rng.standard_normal((PROBE_ROWS, *shape))
            feeds[spec.name] = values.astype(spec.dtype)
    return feeds


def _per_row(value: Any, rows: int) -> bool:
    return (isinstance(value, list) or np.ndim(value) > 0) and len(value) == rows


def _same_row(alone: Any, together: Any) -> bool:
    if isinstance(alone, dict):  # ZipMap's
        return alone.keys() == together.keys() and np.allclose(list(alone.values()), list(together.values()),
                                                               **_CLOSE)
    alone, together = np.asarray(alone), np.asarray(together)
    if alone.shape != together.shape:
        return False
    if alone.dtype.kind in "fc":
        return bool(np.allclose(alone, together, **_CLOSE))
    return bool(np.array_equal(alone, together))
