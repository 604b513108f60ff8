"""JSON in and out of the server: fast (orjson), strict on output, lenient but safe on input.

Replies are always valid JSON: a non-finite float is written as the string "NaN",
"Infinity" or "-Infinity" (the spellings Python's `float()` and numpy read back), never
as a bare `NaN` token that strict parsers reject. Requests may carry the same strings
in floating-point tensors (numpy reads them), or the bare tokens Python's `json.dumps` writes.

A long array of numbers under a "data" key is read straight into numpy, a piece at a time: as
Python numbers it took 32 bytes a value, and orjson's parse of a whole 30 MB array peaked at
~470 MB (its parse tree beside the list) for a 14 MB tensor.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import numpy as np
import orjson

_NON_FINITE = {float("inf"): "Infinity", float("-inf"): "-Infinity"}
NON_FINITE_TEXT = frozenset({"NaN", *_NON_FINITE.values()})  # how JSON data spells NaN and the infinities
LONG_ARRAY_BYTES = 64 * 1024  # a "data" array of numbers this long or longer is read into numpy
_PIECE_BYTES = 256 * 1024  # of such an array, parsed at a time
_DATA = re.compile(rb'"data"\s*:\s*\[')
_NUMERIC = (np.dtype(np.int64), np.dtype(np.float64))
_MAX_DIGITS = 4300  # Python's own limit on converting text to int (sys.get_int_max_str_digits)


def parse(body: bytes) -> Any:
    """The JSON value of a request body; ValueError, with what is wrong, for anything else.

    A flat array of numbers under a "data" key, `LONG_ARRAY_BYTES` long or longer, is a numpy array: int64
    if it holds only whole numbers, else float64 (numpy's type for the list).
    """
    if len(body) >= LONG_ARRAY_BYTES and (value := _parse_long_arrays(body)) is not None:
        return value
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass  # bare NaN/Infinity, integers past 64 bits: the standard library's parser takes those
    try:  # raises ValueError: JSONDecodeError, UnicodeDecodeError, a number past float64 or with too many digits
        return json.loads(body, parse_float=_finite, parse_int=_whole)
    except RecursionError:
        raise ValueError("it is nested too deeply") from None


def _whole(text: str) -> int:
    """A JSON integer; ValueError for one longer than Python converts (4,300 digits), which no datatype holds."""
    digits = len(text.lstrip("-"))
    if digits > _MAX_DIGITS:
        raise ValueError(f"a number has {digits} digits; no datatype holds one longer than 20")
    return int(text)


def _finite(text: str) -> float:
    """A JSON number with a fraction or exponent as a float; ValueError for one past float64's range (1e400),
    which would be infinite (a float datatype's refusal of a finite number past its range, as for 4e39 in FP32)."""
    value = float(text)
    if math.isinf(value):
        shown = text if len(text) <= 30 else f"{text[:20]}... ({len(text)} characters)"
        raise ValueError(f"the number {shown} is past float64's range; send \"Infinity\" or \"-Infinity\" for infinity")
    return value


def _parse_long_arrays(body: bytes) -> Any:
    """`body` parsed with its long "data" arrays of numbers read into numpy; None if it has none, or if anything
    is amiss (`parse` then reads the whole body as usual, and names what is wrong)."""
    arrays: list[np.ndarray] = []
    parts: list[bytes] = []
    done = at = 0
    while match := _DATA.search(body, at):
        start = match.end()  # after the '['
        end = body.find(b"]", start)
        if end < 0:
            return None
        at = end + 1
        if end - start < LONG_ARRAY_BYTES or any(body.find(c, start, end) >= 0 for c in (b'"', b"[", b"{", b"t", b"f")):
            continue  # short, or not a flat array of numbers (or null): numpy would read true and false as numbers
        array = _numbers(body, start, end)
        if array is None:
            return None
        parts += [body[done : start - 1], b'"\\u0000%d"' % len(arrays)]  # a placeholder string for the array
        arrays.append(array)
        done = end + 1
    if not arrays:
        return None
    try:
        value = orjson.loads(b"".join([*parts, body[done:]]))
    except orjson.JSONDecodeError:
        return None
    return value if _put_back(value, arrays) else None


def _numbers(body: bytes, start: int, end: int) -> np.ndarray | None:
    """The values of the JSON array whose text, without brackets, is body[start:end]: int64 or float64; None
    unless they are all numbers that fit one of those (not true, false, null, or a 20-digit number) exactly."""
    pieces = []
    while True:
        cut = body.find(b",", min(start + _PIECE_BYTES, end), end)
        cut = end if cut < 0 else cut
        try:
            piece = np.asarray(orjson.loads(b"[" + body[start:cut] + b"]"))
        except (orjson.JSONDecodeError, ValueError, OverflowError):
            return None
        if piece.dtype not in _NUMERIC or piece.size == 0:  # empty: a trailing comma
            return None
        if piece.dtype.kind == "f" and np.abs(piece).max() >= 2.0**63:  # perhaps whole numbers past INT64 beside
            return None  # smaller ones, which numpy rounds to float64: the whole parse keeps them exact
        pieces.append(piece)
        if cut == end:
            return np.concatenate(pieces)
        start = cut + 1


def _put_back(value: Any, arrays: list[np.ndarray]) -> bool:
    """Put each array in `value` where its placeholder string is; False unless each placeholder is there once."""
    placeholders = {f"\0{i}": array for i, array in enumerate(arrays)}
    found, stack = 0, [value]
    while stack:  # not recursive: the document may nest as deep as orjson allows (1024)
        node = stack.pop()
        for key, item in list(node.items() if isinstance(node, dict) else enumerate(node)):
            if isinstance(item, dict | list):
                stack.append(item)
            elif isinstance(item, str) and item in placeholders:
                node[key] = placeholders[item]
                found += 1
    return found == len(arrays)


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
