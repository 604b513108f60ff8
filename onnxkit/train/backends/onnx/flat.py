"""All trained parameters in one flat float32 buffer, each graph input or output bound to
its slice by address.

So the optimizer graph is a dozen elementwise nodes over whole buffers whatever the number
of parameters, gradients land in one buffer with no concatenation (a data-parallel
all-reduce sends it as is), and nothing is split or copied to feed the graphs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

PARAMS = "onnxkit.params"  # the flat buffer's name in the optimizer graph


@dataclass(frozen=True)
class FlatLayout:
    """Where each parameter lives in the flat buffer, in order."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, values: Mapping[str, np.ndarray], names: Sequence[str]) -> FlatLayout:
        return cls(tuple(names), tuple(tuple(values[n].shape) for n in names))

    @cached_property
    def sizes(self) -> list[int]:
        return [int(np.prod(s, dtype=np.int64)) for s in self.shapes]

    @cached_property
    def size(self) -> int:
        return sum(self.sizes)

    @cached_property
    def views(self) -> list[tuple[str, tuple[int, ...], int]]:
        """(name, shape, offset in elements) of each parameter."""
        offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(int)
        return [(n, s, int(o)) for n, s, o in zip(self.names, self.shapes, offsets, strict=True)]

    def split(self, flat: np.ndarray, suffix: str = "") -> dict[str, np.ndarray]:
        """name + suffix -> a view of `flat` shaped like the parameter."""
        return {n + suffix: flat[o:o + size].reshape(s) for (n, s, o), size in zip(self.views, self.sizes, strict=True)}

    def join(self, values: Mapping[str, np.ndarray], suffix: str = "") -> np.ndarray:
        if not self.names:
            return np.zeros(0, np.float32)
        return np.concatenate([np.asarray(values[n + suffix], np.float32).reshape(-1) for n in self.names])

    def to_json(self) -> dict:
        return {"names": list(self.names), "shapes": [list(s) for s in self.shapes]}

    @classmethod
    def from_json(cls, raw: dict) -> FlatLayout:
        return cls(tuple(raw["names"]), tuple(tuple(s) for s in raw["shapes"]))
