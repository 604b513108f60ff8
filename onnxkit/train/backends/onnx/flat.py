"""All trained parameters as one flat float32 vector.

The training and eval graphs take that vector and split it into the parameters, and the
training graph emits one flat gradient. So the optimizer graph is a dozen elementwise
nodes whatever the number of parameters, gradient accumulation is one Add, and a
data-parallel all-reduce sends one buffer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

PARAMS = "onnxkit.params"


@dataclass(frozen=True)
class FlatLayout:
    """Where each parameter lives in the flat vector, in order."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, values: Mapping[str, np.ndarray], names: Sequence[str]) -> FlatLayout:
        return cls(tuple(names), tuple(tuple(values[n].shape) for n in names))

    @property
    def sizes(self) -> list[int]:
        return [int(np.prod(s, dtype=np.int64)) for s in self.shapes]

    @property
    def size(self) -> int:
        return sum(self.sizes)

    def split(self, flat: np.ndarray, suffix: str = "") -> dict[str, np.ndarray]:
        """name + suffix -> a view of `flat` shaped like the parameter."""
        parts = np.split(flat, np.cumsum(self.sizes)[:-1])
        return {n + suffix: p.reshape(s) for n, s, p in zip(self.names, self.shapes, parts, strict=True)}

    def join(self, values: Mapping[str, np.ndarray], suffix: str = "") -> np.ndarray:
        return np.concatenate([np.asarray(values[n + suffix], np.float32).reshape(-1) for n in self.names])

    def to_json(self) -> dict:
        return {"names": list(self.names), "shapes": [list(s) for s in self.shapes]}

    @classmethod
    def from_json(cls, raw: dict) -> FlatLayout:
        return cls(tuple(raw["names"]), tuple(tuple(s) for s in raw["shapes"]))


def feed_from_flat(model: onnx.ModelProto, layout: FlatLayout) -> None:
    """Replace the graph inputs named in `layout` by slices of one flat input PARAMS (in place)."""
    wanted = set(layout.names)
    kept = [i for i in model.graph.input if i.name not in wanted]
    del model.graph.input[:]
    model.graph.input.extend([*kept, helper.make_tensor_value_info(PARAMS, TensorProto.FLOAT, [layout.size])])
    sizes = numpy_helper.from_array(np.asarray(layout.sizes, np.int64), f"{PARAMS}.sizes")
    pieces = [f"{n}.flat" for n in layout.names]
    prologue = [helper.make_node("Split", [PARAMS, sizes.name], pieces, name=f"{PARAMS}/split", axis=0)]
    for name, shape, piece in zip(layout.names, layout.shapes, pieces, strict=True):
        target = numpy_helper.from_array(np.asarray(shape, np.int64), f"{name}.shape")
        model.graph.initializer.append(target)
        prologue.append(helper.make_node("Reshape", [piece, target.name], [name], name=f"{name}/from_flat"))
    model.graph.initializer.append(sizes)
    nodes = [*prologue, *model.graph.node]
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def gradient_to_flat(model: onnx.ModelProto, layout: FlatLayout, gradients: Sequence[str], flat: str) -> None:
    """Replace the outputs `gradients` (one per parameter, in layout order) by their
    concatenation `flat` (in place)."""
    flat_shape = numpy_helper.from_array(np.asarray([-1], np.int64), f"{flat}.flat_shape")
    model.graph.initializer.append(flat_shape)
    pieces = []
    for g in gradients:
        pieces.append(f"{g}.flat")
        model.graph.node.append(helper.make_node("Reshape", [g, flat_shape.name], [pieces[-1]]))
    model.graph.node.append(helper.make_node("Concat", pieces, [flat], name=f"{flat}/concat", axis=0))
    dropped = set(gradients)
    kept = [o for o in model.graph.output if o.name not in dropped]
    del model.graph.output[:]
    model.graph.output.extend([*kept, helper.make_tensor_value_info(flat, TensorProto.FLOAT, [layout.size])])
