"""JSON in and out of the server: fast (orjson), strict on output, lenient but safe on input.

Replies are always valid JSON: a non-finite float is written as the string "NaN",
"Infinity" or "-Infinity" (the spellings Python's `float()` and numpy read back), never
as a bare `NaN` token that strict parsers reject. Requests may carry the same strings
in floating-point tensors (numpy reads them), or the bare tokens Python's `json.dumps` writes.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson

_NON_FINITE = {float("inf"): "Infinity", float("-inf"): "-Infinity"}


def parse(body: bytes) -> Any:
    """The JSON value of a request body; ValueError, with what is wrong, for anything else."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass  # bare NaN/Infinity, numbers beyond float64: the standard library's parser takes those
    try:
        return json.loads(body)  # raises ValueError: JSONDecodeError, UnicodeDecodeError, over 4,300 digits
    except RecursionError:
        raise ValueError("it is nested too deeply") from None


def dumps(value: Any) -> bytes:
    """Compact JSON bytes; tensors inside `value` must come from `tensor_data`."""
    return orjson.dumps(value)


def tensor_data(array: np.ndarray) -> Any:
    """A tensor's values, flat, as `dumps` writes them: valid JSON, non-finite floats as strings."""
    flat = array.reshape(-1)
    if flat.dtype.kind not in "biuf":
        return flat.tolist()
    try:
        data = orjson.dumps(flat, option=orjson.OPT_SERIALIZE_NUMPY)
    except orjson.JSONEncodeError:  # a strided view: orjson takes contiguous arrays only
        data = orjson.dumps(np.ascontiguousarray(flat), option=orjson.OPT_SERIALIZE_NUMPY)
    if flat.dtype.kind == "f" and b"null" in data:  # orjson writes NaN and ±inf as null
        return [v if v - v == 0 else _NON_FINITE.get(v, "NaN") for v in flat.tolist()]
    return orjson.Fragment(data)
