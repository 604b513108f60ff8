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
from onnxkit.tokenize import encode, fixed_length, token_inputs, tokenizer_from_metadata

TEXT_INPUT = "text"  # the name under which the server accepts raw text (BYTES [batch])
TEXT_SPEC = TensorSpec(TEXT_INPUT, "tensor(string)", ("batch",))

_tokenizers: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def carries_tokenizer(model: Any) -> bool:
    """Whether the loaded `runtime.Model` stores a tokenizer in its metadata."""
    return TOKENIZER_KEY in model.metadata


def raw_text_input(model: Any) -> TensorSpec | None:
    """The one input of a model that takes text itself, a string per row ([batch] or [batch, 1]: a scikit-learn
    TF-IDF pipeline's), when it carries no tokenizer; else None."""
    if carries_tokenizer(model) or len(model.inputs) != 1:
        return None
    spec = model.inputs[0]
    rows_of_one = len(spec.shape) == 1 or (len(spec.shape) == 2 and spec.shape[1] in (1, None))
    return spec if spec.type == "tensor(string)" and rows_of_one else None


def reads_text(model: Any) -> bool:
    """Whether `model` takes texts: it carries a tokenizer, or its one input is a string per row."""
    return carries_tokenizer(model) or raw_text_input(model) is not None


def _tokenizer(model: Any) -> Any:
    with _lock:
        if model not in _tokenizers:
            if not carries_tokenizer(model):
                raise OnnxkitError(
                    f"model {model.name!r} carries no tokenizer, so it cannot take text; train it with one (onnxkit "
                    "train --tokenizer PATH/tokenizer.json), build one that carries one (e.g. onnxkit build "
                    "bert-classifier --set pretrained=all-MiniLM-L6-v2) or pass token ids"
                )
            _tokenizers[model] = tokenizer_from_metadata(model.metadata, fixed_length(model.inputs))
        return _tokenizers[model]


def text_feeds(model: Any, texts: str | Sequence[str]) -> dict[str, np.ndarray]:
    """Session feeds (ids, mask, type ids the model takes) for `texts`, padded to the longest (to the length the
    model fixes, if it does); no texts give feeds of no rows, as any input of no rows does."""
    texts = [texts] if isinstance(texts, str) else [t.decode() if isinstance(t, bytes) else t for t in texts]
    raw = raw_text_input(model)
    if raw is not None:  # the model tokenizes (a TF-IDF pipeline): the strings themselves, one per row
        return {raw.name: np.array(texts, dtype=object).reshape((len(texts), 1)[:len(raw.shape)])}
    arrays = encode(_tokenizer(model), texts or [""])  # an empty text's arrays, of no rows, for none
    return {name: arrays[array][:len(texts)] for name, array in token_inputs(model.inputs).items()}


def predict_text(model: Any, texts: str | Sequence[str]) -> Prediction:
    """Tokenize `texts` with the model's tokenizer (or, for a model of one string input, feed them as they are)
    and predict (batched like `Model.predict`)."""
    return model.predict(text_feeds(model, texts))
