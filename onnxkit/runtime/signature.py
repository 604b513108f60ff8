"""A model's declared inputs and outputs, and turning user values into valid session feeds."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from os import PathLike
from typing import Any

import numpy as np

from onnxkit.dims import Dim, read_dim
from onnxkit.errors import OnnxkitError, suggest

_DTYPES: dict[str, np.dtype] = {
    f"tensor({name})": np.dtype(dtype)
    for name, dtype in [
        ("float", "float32"), ("double", "float64"), ("float16", "float16"),
        ("int8", "int8"), ("int16", "int16"), ("int32", "int32"), ("int64", "int64"),
        ("uint8", "uint8"), ("uint16", "uint16"), ("uint32", "uint32"), ("uint64", "uint64"),
        ("bool", "bool"), ("string", "object"),
    ]
}  # fmt: skip


@dataclass(frozen=True)
class TensorSpec:
    """One declared input or output: name, onnxruntime type string and shape."""

    name: str
    type: str  # as onnxruntime reports it, e.g. "tensor(float)"
    shape: tuple[Dim, ...]

    @classmethod
    def from_node_arg(cls, arg: Any) -> TensorSpec:
        """From an onnxruntime NodeArg (session.get_inputs() / get_outputs())."""
        dims = tuple(read_dim(d) for d in (arg.shape or ()))
        return cls(arg.name, arg.type, dims)

    @property
    def dtype(self) -> np.dtype | None:
        """The numpy dtype, or None for types numpy cannot hold (bfloat16, sequences, maps)."""
        return _DTYPES.get(self.type)

    @property
    def has_batch_axis(self) -> bool:
        """True when the first dimension may take any size."""
        return bool(self.shape) and not isinstance(self.shape[0], int)

    def dims(self) -> str:
        """'[batch, 64]'; '?' marks an unknown size."""
        return "[" + ", ".join("?" if d is None else str(d) for d in self.shape) + "]"

    def describe(self) -> str:
        """'x float32 [batch, 64]'."""
        dtype = "string" if self.type == "tensor(string)" else self.dtype or self.type
        return f"{self.name} {dtype} {self.dims()}"


def batchable(inputs: list[TensorSpec]) -> bool:
    """True when every input has a free first dimension, so rows can be split or merged."""
    return bool(inputs) and all(spec.has_batch_axis for spec in inputs)


def prepare_inputs(specs: list[TensorSpec], values: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Check names, dtypes and shapes against the model and return contiguous numpy feeds.

    Lists become arrays; numbers are cast to the declared dtype when the cast keeps
    their kind (float64 -> float32, int32 -> int64, int -> float), never float -> int.
    A symbolic dimension must have the same size in every input that uses it.
    """
    if len(values) != len(specs) or not all(spec.name in values for spec in specs):
        _refuse_names(specs, values)
    sizes: dict[str, tuple[int, str]] = {}
    feeds = {}
    for spec in specs:
        array = _as_array(spec, values[spec.name])
        _check_shape(spec, array, sizes)
        # contiguous (np.ascontiguousarray would make a scalar 1-d; np.require costs 2 us)
        feeds[spec.name] = array if array.flags.c_contiguous else np.ascontiguousarray(array)
    return feeds


def _refuse_names(specs: list[TensorSpec], values: Mapping[str, Any]) -> None:
    """The error for `values` named otherwise than the inputs: a name the model lacks, else the inputs missing."""
    by_name = {spec.name: spec for spec in specs}
    for name in values:
        if name not in by_name:
            raise OnnxkitError(
                f"the model has no input {name!r}.{suggest(name, by_name)} "
                f"Its inputs: {', '.join(s.describe() for s in specs)}"
            )
    missing = [spec.describe() for spec in specs if spec.name not in values]
    raise OnnxkitError(f"missing model input(s): {', '.join(missing)}; pass a value for each")


def example_feeds(specs: list[TensorSpec], length: int = 1) -> dict[str, np.ndarray]:
    """Zero-valued feeds of one row: a free first (batch) dimension is 1, every other free
    dimension (a sequence) `length` (for warm-up and probe runs)."""
    feeds = {}
    for spec in specs:
        shape = tuple(d if isinstance(d, int) else 1 if i == 0 else length for i, d in enumerate(spec.shape))
        if spec.type == "tensor(string)":
            feeds[spec.name] = np.full(shape, "", dtype=object)
        elif spec.dtype is not None:
            feeds[spec.name] = np.zeros(shape, dtype=spec.dtype)
    return feeds


def _text_hint(value: Any, array: np.ndarray) -> str:
    """What to do about text or None where numbers go: a file's name (the `predict` command reads files; the
    method takes arrays), or a None in the values; else ''."""
    if isinstance(value, str | PathLike):
        return (f" (the text {str(value)!r}): predict takes arrays, not a file to read; load it first (numpy.load, "
                "pandas.read_csv), or run `onnxkit predict MODEL FILE`")
    if array.dtype.kind == "O" and any(v is None for v in array.flat):
        return " holding None: give a number for each value (NaN for a missing one)"
    if array.dtype.kind in "US" and array.size:  # an array of text where numbers go
        return f" (text such as {str(array.flat[0])!r}): give numbers, or the model that reads this text"
    return ""


def _as_array(spec: TensorSpec, value: Any) -> np.ndarray:
    want = spec.dtype
    if want is None:
        raise OnnxkitError(
            f"input {spec.name!r} has type {spec.type}, which numpy cannot hold; this model cannot be run from onnxkit"
        )
    try:
        array = np.asarray(value)
    except ValueError as e:  # ragged nested lists
        raise OnnxkitError(
            f"input {spec.name!r}: cannot make an array of the value given ({e}); "
            "pass a numpy array or equally long nested lists"
        ) from e
    if spec.type == "tensor(string)":
        if array.dtype.kind not in "USO":
            raise OnnxkitError(f"input {spec.name!r} expects strings, got {array.dtype} values")
        return array.astype(object)
    if array.dtype == want:
        return array
    if want.kind == "b" and array.dtype.kind in "iuf" and np.isin(array, (0, 1)).all():
        return array.astype(want)  # a padding mask saved as 0/1 numbers, as training takes it
    if array.dtype.kind == "O" and want.kind in "iu" and all(isinstance(v, int) for v in array.flat):
        raise _does_not_fit(spec.name, array, want)
    if array.dtype.kind == "f" and want.kind in "iu" and array.size and np.isfinite(array).all() and \
            (array == np.round(array)).all() and not _fits(array, want):
        # whole numbers past the type's range (Python's 2**63 made numpy choose float64)
        raise _does_not_fit(spec.name, array, want)
    if array.dtype.kind in "USO" or not np.can_cast(array.dtype, want, "same_kind"):
        hint = (
            f"; convert with .astype(np.{want}) if the values are whole numbers"
            if array.dtype.kind == "f" and want.kind in "iu"
            else _text_hint(value, array)
        )
        raise OnnxkitError(f"input {spec.name!r} expects {want} values, got {array.dtype}{hint}")
    if want.kind in "iu" and not np.can_cast(array.dtype, want, "safe") and array.size:
        if not _fits(array, want):  # int64 -> int32, uint -> int: a value past the range wrapped around silently
            raise _does_not_fit(spec.name, array, want)
    return array.astype(want)


def _fits(array: np.ndarray, want: np.dtype) -> bool:
    """Whether integer type `want` holds every value of `array` (floats compared past float64's rounding of the
    bounds: 2**63 - 1 reads as 2**63)."""
    limits = np.iinfo(want)
    return float(limits.min) <= array.min() and array.max() < float(limits.max) + 1


def _does_not_fit(name: str, array: np.ndarray, want: np.dtype) -> OnnxkitError:
    """The error for input `name`, naming the first value of `array` that integer type `want` cannot hold."""
    limits = np.iinfo(want)
    value = next(v for v in array.flat if not limits.min <= int(v) <= limits.max)
    return OnnxkitError(f"input {name!r}: a value does not fit {want} ({int(value)} is outside "
                        f"[{limits.min}, {limits.max}])")


def _check_shape(spec: TensorSpec, array: np.ndarray, sizes: dict[str, tuple[int, str]]) -> None:
    if not spec.shape:  # a scalar, or an input declared without a shape (onnxruntime shows both so): it says which
        return
    if array.ndim != len(spec.shape):
        one = "; for one example pass x[None] or [x]" if array.ndim + 1 == len(spec.shape) else ""
        example = spec.shape[1:]
        if array.ndim >= 1 and all(isinstance(d, int) for d in example) and tuple(array.shape) != tuple(example) \
                and math.prod(array.shape[1:]) == math.prod(example):  # rows of the right size, laid out flat
            one = f"; each row holds {math.prod(example)} values, as the input's: x.reshape(len(x), " \
                  f"{', '.join(map(str, example))})"
        raise OnnxkitError(
            f"input {spec.name!r} needs {len(spec.shape)} dimension(s) {spec.dims()}, "
            f"got shape {tuple(array.shape)}{one}"
        )
    for axis, (want, got) in enumerate(zip(spec.shape, array.shape, strict=True)):
        if isinstance(want, int) and want != got:
            raise OnnxkitError(
                f"input {spec.name!r}: dimension {axis} must be {want}, got shape "
                f"{tuple(array.shape)}; the model expects {spec.describe()}"
            )
        if isinstance(want, str):
            seen, where = sizes.setdefault(want, (got, spec.name))
            if seen != got:
                raise OnnxkitError(
                    f"dimension {want!r} is {seen} in input {where!r} but {got} in input "
                    f"{spec.name!r}; inputs sharing a dimension name must agree on its size"
                )
