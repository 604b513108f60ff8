"""How onnxkit reads a model's declared dimensions: a fixed size, a shared name, or a free dim.

- A fixed size is an int, 0 or more.
- A name (a str, `dim_param`) is one size: every dim carrying it, in any input or output, must agree.
- A free dim (None) takes any size, independent of every other.

Exporters also write "any size" in ways that look like a size or a name, and those read as free dims:
a negative `dim_value` (paddle2onnx's `-1` batch; ONNX Runtime reads it as unknown), and the `dim_param`s in
`UNNAMED`, which name no size (paddle2onnx writes `'?'` for both the height and width of an image input, which are
not equal). Generated names that are unique per dim (tf2onnx's and onnx's shape inference's `unk__N`) stay names.
Import-light: the runtime reads ONNX Runtime's shapes with it, and needs no onnx.
"""

from __future__ import annotations

from typing import Any

Dim = int | str | None

UNNAMED = frozenset({"", "?", "None", "-1"})  # dim_params that stand for "unknown", not for a size


def read_dim(value: int | str | None) -> Dim:
    """A dim as given (a `dim_value`, a `dim_param`, or ONNX Runtime's `NodeArg.shape` entry), read as above."""
    if isinstance(value, str):
        return None if value.strip() in UNNAMED else value
    return None if value is None or value < 0 else int(value)


def dim_of(dim: Any) -> Dim:
    """An `onnx.TensorShapeProto.Dimension`, read as above (neither field set: a free dim)."""
    return read_dim(dim.dim_value if dim.HasField("dim_value") else dim.dim_param)


def dims_of(type_proto: Any) -> tuple[Dim, ...] | None:
    """The dims of an `onnx.TypeProto` (or a `ValueInfoProto`'s type), read as above; None where it records no
    shape (an unknown rank, a sequence, a map)."""
    tensor = type_proto.tensor_type
    if type_proto.WhichOneof("value") != "tensor_type" or not tensor.HasField("shape"):
        return None
    return tuple(dim_of(d) for d in tensor.shape.dim)


def fixed_size(dim: Any) -> int | None:
    """An `onnx.TensorShapeProto.Dimension`'s fixed size, or None where it has none (a name or a free dim)."""
    read = dim_of(dim)
    return read if isinstance(read, int) else None
