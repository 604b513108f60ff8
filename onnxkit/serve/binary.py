"""Raw tensor bytes: the binary tensor data extension of the V2 protocol, and gRPC's raw contents.

Over HTTP, a body may be a JSON header of `Inference-Header-Content-Length` bytes followed
by raw tensors, in the order the header lists them, each `binary_data_size` bytes long.
gRPC's `raw_input_contents` / `raw_output_contents` carry one such blob per tensor. A raw
tensor is its values in row-major order: numbers little-endian, BOOL one byte each, and
BYTES each element as a 4-byte little-endian length followed by that many bytes.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

import numpy as np

from onnxkit.serve.errors import RequestError

NUMPY_BY_V2 = {
    "BOOL": np.dtype(np.bool_), "UINT8": np.dtype("<u1"), "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"), "UINT64": np.dtype("<u8"), "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"), "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
}  # fmt: skip
_LENGTH = struct.Struct("<I")


def to_array(raw: bytes, datatype: str, shape: Sequence[int], name: str) -> np.ndarray:
    """The tensor that `raw` holds; RequestError(400) when the bytes do not fill `shape` exactly."""
    count = math.prod(shape)
    if datatype == "BYTES":
        values, offset = _split_bytes(raw, name, count)
        if len(values) != count or offset != len(raw):
            more = len(values) if offset == len(raw) else f"more ({len(raw) - offset} bytes past the first {count})"
            raise RequestError(
                400, f"input {name!r}: shape {list(shape)} holds {count} values, but its raw data has {more}"
            )
        array = np.empty(count, dtype=object)
        array[:] = values
        return array.reshape(shape)
    dtype = NUMPY_BY_V2.get(datatype)
    if dtype is None:
        raise RequestError(400, f"input {name!r}: {datatype} tensors cannot be sent as raw bytes; send them as JSON")
    if len(raw) != count * dtype.itemsize:
        raise RequestError(
            400,
            f"input {name!r}: shape {list(shape)} of {datatype} takes {count * dtype.itemsize} bytes, "
            f"but its raw data has {len(raw)}",
        )
    return np.frombuffer(raw, dtype).reshape(shape)


def to_bytes(array: np.ndarray, datatype: str) -> bytes:
    """The raw bytes of `array` sent as `datatype` (BYTES elements: bytes, or str as UTF-8)."""
    if datatype == "BYTES":
        parts = []
        for value in array.reshape(-1).tolist():
            data = value if isinstance(value, bytes) else str(value).encode()
            parts += [_LENGTH.pack(len(data)), data]
        return b"".join(parts)
    return np.ascontiguousarray(array, NUMPY_BY_V2[datatype]).tobytes()


def _split_bytes(raw: bytes, name: str, count: int) -> tuple[list[bytes], int]:
    """The first `count` (at most) BYTES elements of `raw`, and the offset past them: the elements past a shape's
    are not read (a shape of [1] over 32 MB of empty elements took 4 s to refuse, making 8,000,000 of them)."""
    values, offset, view = [], 0, memoryview(raw)
    while offset < len(raw) and len(values) < count:
        if offset + 4 > len(raw):
            raise RequestError(400, f"input {name!r}: BYTES data ends inside an element's 4-byte length")
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise RequestError(400, f"input {name!r}: a BYTES element of {length} bytes runs past the end of its data")
        values.append(bytes(view[offset : offset + length]))
        offset += length
    return values, offset
