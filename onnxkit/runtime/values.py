"""Input values of the declared type that a model still cannot take: an id outside the table it picks rows of (a
token id past the vocabulary, or negative, which onnxruntime reads from the table's end), and an attention mask
other than 0 and 1 (2 weighs a token twice over in the softmax, or worse)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from onnxkit.errors import OnnxkitError
from onnxkit.runtime.signature import TensorSpec


@dataclass(frozen=True)
class ValueChecks:
    """The checks of one model's inputs: `lookups`, input -> rows of the table its values pick (`graph_walks.
    lookup_rows`); `masks`, integer inputs named as masks (`attention_mask`), each value 0 or 1."""

    lookups: Mapping[str, int] = field(default_factory=dict)
    masks: frozenset[str] = frozenset()

    @classmethod
    def of(cls, inputs: list[TensorSpec], lookups: Mapping[str, int]) -> ValueChecks:
        masks = frozenset(spec.name for spec in inputs
                          if spec.name.lower().endswith("mask") and spec.dtype is not None and spec.dtype.kind in "iu")
        return cls(dict(lookups), masks - lookups.keys())

    def __bool__(self) -> bool:
        return bool(self.lookups or self.masks)

    def check(self, feeds: Mapping[str, np.ndarray]) -> None:
        """Raise an OnnxkitError naming the first input, value and place that the model cannot take."""
        for name, rows in self.lookups.items():
            ids = feeds.get(name)
            if ids is not None and ids.size and (ids.min() < 0 or ids.max() >= rows):
                value, where = _first(ids, (ids < 0) | (ids >= rows))
                raise OnnxkitError(f"input {name!r} holds {value}{where}, outside its vocabulary of {rows} "
                                   f"(ids 0 to {rows - 1}); give ids from the tokenizer the model was made with")
        for name in self.masks:
            mask = feeds.get(name)
            if mask is not None and mask.size and (mask.min() < 0 or mask.max() > 1):
                value, where = _first(mask, (mask != 0) & (mask != 1))
                raise OnnxkitError(f"input {name!r} holds {value}{where}; a mask is 1 for each token to read and 0 "
                                   "for padding")


def _first(values: np.ndarray, bad: np.ndarray) -> tuple[int, str]:
    """The first bad value and ' at [row, ...]' (nothing for a scalar)."""
    place = tuple(int(i) for i in np.argwhere(bad)[0])
    return int(values[place]), f" at {list(place)}" if place else ""
