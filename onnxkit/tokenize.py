"""Tokenizing text for models that carry a tokenizer (`tokenizers` package, imported only when used).

A model built with a pretrained tokenizer stores its `tokenizer.json` in the
metadata key `onnxkit.tokenizer` and its maximum length in `onnxkit.max_length`.
Shared by the text datasets and the runtime's text entry point; imports only numpy.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from onnxkit.errors import OnnxkitError
from onnxkit.metadata_keys import MAX_LENGTH_KEY, PADDING_KEY, TOKENIZER_KEY

DEFAULT_MAX_LENGTH = 128
TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # the arrays `encode` makes, by input name


def load_tokenizer(tokenizer: str | Mapping[str, Any], max_length: int | None = None,  # type: ignore[no-untyped-def]
                   pad_to: int | None = None):
    """A `tokenizers.Tokenizer` from a tokenizer.json path, its JSON text or its decoded dict,
    truncating to `max_length` when given and padding to `pad_to` (default: the longest in a batch)."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise OnnxkitError("text needs the tokenizers package; install it with: pip install tokenizers") from None
    try:
        if isinstance(tokenizer, Mapping):
            tok = Tokenizer.from_str(json.dumps(tokenizer))
        elif tokenizer.lstrip().startswith("{"):
            tok = Tokenizer.from_str(tokenizer)
        elif os.path.isfile(tokenizer):
            tok = Tokenizer.from_file(tokenizer)
        else:
            raise OnnxkitError(f"tokenizer {tokenizer!r}: no such file; give a tokenizer.json path or its JSON")
    except Exception as e:  # tokenizers raises plain Exceptions for bad JSON
        if isinstance(e, OnnxkitError):
            raise
        raise OnnxkitError(f"could not read the tokenizer: {e}; give a valid tokenizer.json") from None
    padding = tok.padding or {}
    tok.enable_padding(pad_id=padding.get("pad_id", 0), pad_type_id=padding.get("pad_type_id", 0),
                       pad_token=padding.get("pad_token", "[PAD]"), length=pad_to)
    if max_length:
        tok.enable_truncation(max_length)
    return tok


def token_inputs(inputs: Sequence[Any]) -> dict[str, str]:
    """The array of `encode` each of a model's token inputs (`name`, `shape` specs) takes, by input name: the one
    named alike, or the token ids for a model of one input named otherwise (a PyTorch export's `tokens`)."""
    if len(inputs) == 1 and inputs[0].name not in TOKEN_INPUTS:
        return {inputs[0].name: TOKEN_INPUTS[0]}
    return {spec.name: spec.name for spec in inputs if spec.name in TOKEN_INPUTS}


def fixed_length(inputs: Sequence[Any]) -> int | None:
    """The tokens per text a model's token inputs (`token_inputs`) fix, as a PyTorch export whose only dynamic
    axis is the batch does; None where the length is free."""
    names = token_inputs(inputs)
    for spec in inputs:
        shape = spec.shape or ()
        if spec.name in names and len(shape) == 2 and isinstance(shape[1], int) and shape[1] > 0:
            return shape[1]
    return None


def tokenizer_from_metadata(metadata: Mapping[str, str], length: int | None = None):  # type: ignore[no-untyped-def]
    """The tokenizer stored in a model's metadata_props (as a dict), or None; `length`: the tokens the model's
    inputs fix (`fixed_length`), which every text is cut or padded to."""
    if TOKENIZER_KEY not in metadata:
        return None
    max_length = length or int(metadata.get(MAX_LENGTH_KEY, DEFAULT_MAX_LENGTH))
    return load_tokenizer(metadata[TOKENIZER_KEY], max_length,
                          pad_to=max_length if length or metadata.get(PADDING_KEY) == "max_length" else None)


def encode(tokenizer, texts: Sequence[str]) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    """Token ids, attention mask and token type ids, int64 [n, longest]."""
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise OnnxkitError("text input must be a list of strings")
    for number, text in enumerate(texts, 1):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise OnnxkitError(f"text {number} is not valid UTF-8 ({_undecodable(text[e.start])} at character "
                               f"{e.start}); pass UTF-8 text") from None
    encodings = tokenizer.encode_batch(list(texts))
    rows = ([e.ids for e in encodings], [e.attention_mask for e in encodings], [e.type_ids for e in encodings])
    return {name: np.array(row, dtype=np.int64).reshape(len(texts), -1)
            for name, row in zip(TOKEN_INPUTS, rows, strict=True)}


def _undecodable(char: str) -> str:
    """A lone surrogate, which no UTF-8 text holds, as the byte it stands for where it is one
    (Python's surrogateescape: how command-line arguments that are not UTF-8 arrive), else itself."""
    code = ord(char)
    return f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"lone surrogate U+{code:04X}"
