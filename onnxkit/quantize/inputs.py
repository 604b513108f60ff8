"""Stand-in inputs for timing a model when no data is given."""

from __future__ import annotations

import numpy as np
import onnx

from onnxkit.data import model_inputs


def fixed_batch(model: onnx.ModelProto) -> int | None:
    """The size an input's first dimension is fixed to, if any."""
    fixed = (spec.shape[0] for spec in model_inputs(model) if spec.shape and isinstance(spec.shape[0], int))
    return next((size for size in fixed if size > 0), None)


def _vocab_sizes(model: onnx.ModelProto) -> dict[str, int]:
    """Input name -> rows of the embedding table a Gather looks it up in."""
    inits = {t.name: t for t in model.graph.initializer}
    return {
        node.input[1]: int(inits[node.input[0]].dims[0])
        for node in model.graph.node
        if node.op_type == "Gather" and node.input[0] in inits and len(node.input) > 1
    }


def synthetic_inputs(
    model: onnx.ModelProto, batch: int, *, seq_len: int = 128, seed: int = 0
) -> dict[str, np.ndarray]:
    """Random inputs of the model's shapes with `batch` rows.

    Floats are standard normal; integer inputs looked up in an embedding get
    valid ids, masks (`*mask*`) are ones, other integers zeros. Free
    dimensions after the first take `seq_len`.
    """
    rng = np.random.default_rng(seed)
    vocab = _vocab_sizes(model)
    feeds = {}
    for spec in model_inputs(model):
        rest = spec.shape[1:] if spec.shape else ()
        shape = (batch, *(d if isinstance(d, int) and d > 0 else seq_len for d in rest))
        if spec.dtype.kind == "f":
            feeds[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
        elif spec.name in vocab:
            feeds[spec.name] = rng.integers(0, vocab[spec.name], shape).astype(spec.dtype)
        elif "mask" in spec.name.lower():
            feeds[spec.name] = np.ones(shape, spec.dtype)
        else:
            feeds[spec.name] = np.zeros(shape, spec.dtype)
    return feeds
