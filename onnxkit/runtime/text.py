"""Text in, labels out: predict with a model that carries a tokenizer (`onnxkit.tokenizer` metadata).

    model = runtime.load("bert.onnx")
    model.predict_text(["Shares rose sharply.", "A late goal won the match."]).labels

`tokenizers` is imported only when a model's tokenizer is first used, so the
runtime stays import-light for models without text.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np

from onnxkit.errors import OnnxkitError
from onnxkit.metadata_keys import TOKENIZER_KEY
from onnxkit.runtime.prediction import Prediction
from onnxkit.runtime.signature import TensorSpec
from onnxkit.tokenize import encode, tokenizer_from_metadata

TEXT_INPUT = "text"  # the name under which the server accepts raw text (BYTES [batch])
TEXT_SPEC = TensorSpec(TEXT_INPUT, "tensor(string)", ("batch",))

_tokenizers: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def carries_tokenizer(model: Any) -> bool:
    """Whether the loaded `runtime.Model` stores a tokenizer in its metadata."""
    return TOKENIZER_KEY in model.metadata


def _tokenizer(model: Any) -> Any:
    with _lock:
        if model not in _tokenizers:
            if not carries_tokenizer(model):
                raise OnnxkitError(
                    f"model {model.name!r} carries no tokenizer, so it cannot take text; build it with one "
                    "(e.g. onnxkit build bert-classifier --set pretrained=all-MiniLM-L6-v2) or pass token ids"
                )
            _tokenizers[model] = tokenizer_from_metadata(model.metadata)
        return _tokenizers[model]


def text_feeds(model: Any, texts: str | Sequence[str]) -> dict[str, np.ndarray]:
    """Session feeds (ids, mask, type ids the model takes) for `texts`, padded to the longest."""
    texts = [texts] if isinstance(texts, str) else [t.decode() if isinstance(t, bytes) else t for t in texts]
    if not texts:
        raise OnnxkitError("no text given; pass at least one string")
    arrays = encode(_tokenizer(model), texts)
    return {spec.name: arrays[spec.name] for spec in model.inputs if spec.name in arrays}


def predict_text(model: Any, texts: str | Sequence[str]) -> Prediction:
    """Tokenize `texts` with the model's tokenizer and predict (batched like `Model.predict`)."""
    return model.predict(text_feeds(model, texts))
