"""What a gradient rule sees: one forward node, the gradients flowing into its outputs, and a
builder that appends backward nodes (standard ONNX operators only) to the gradient graph.

Rules are written against this small surface — `x(i)`, `y(i)`, `dy(i)`, `wants(i)`,
`op(...)`, `const(...)`, `unbroadcast(...)` and a few opset-aware shorthands — so that a
rule reads like the math: `return [b.op("Mul", b.dy(), b.y())]` is Exp's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxkit.dims import Dim, dims_of
from onnxkit.graph_walks import last_two_swapped

GRADIENT_NODES = "onnxkit.grad/"  # what every backward node's name starts with


class Graph:
    """The growing backward part: nodes, constants and fresh names, shared by all rules."""

    def __init__(
        self,
        types: dict[str, onnx.ValueInfoProto],
        opset: int,
        constants: dict[str, np.ndarray] | None = None,
        prefix: str = GRADIENT_NODES.rstrip("/"),
    ) -> None:
        self.types, self.opset, self.prefix = types, opset, prefix
        self.constants = constants or {}
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0
        self._constants: dict[tuple, str] = {}
        self._values: dict[str, np.ndarray] = {}  # the constants made here, by name
        self._shapes: dict[str, str] = {}
        self._ones_made: dict[tuple, str] = {}
        self.transposed: dict[str, tuple[str, list[int]]] = {}  # a Transpose's output -> its input and perm
        self.readers: dict[str, list[onnx.NodeProto]] = {}  # a forward value -> the forward nodes reading it
        self.made: dict[str, onnx.NodeProto] = {}  # a backward value -> the node making it

    def fresh(self, hint: str) -> str:
        self._count += 1
        return f"{self.prefix}/{hint}.{self._count}"

    def op(self, op_type: str, *inputs: str, outputs: int = 1, tag: str = "", **attrs: Any) -> Any:
        """Append one node; returns its output name (or a list when `outputs` > 1)."""
        names = [self.fresh(f"{tag or op_type}") for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, name=names[0], **attrs))
        self.made.update(dict.fromkeys(names, self.nodes[-1]))
        return names[0] if outputs == 1 else names

    def transpose(self, name: str, perm: Sequence[int]) -> str:
        """`name` transposed by `perm`. A transpose of a transpose reads the value the first one read, by the two
        perms composed, or is that value where they cancel: attention's K^T transposed back for the gradient
        (MiniLM: 18 of its training graph's 84 Transposes)."""
        perm = list(perm)
        if name in self.transposed:
            name, first = self.transposed[name]
            perm = [first[p] for p in perm]
        if perm == list(range(len(perm))):
            return name
        out = self.op("Transpose", name, perm=perm)
        self.transposed[out] = (name, perm)
        return out

    def swap_last(self, name: str, rank: int) -> str:
        """`name` with its last two axes swapped, for a MatMul operand: `name` itself where that undoes the
        Transpose that made it, otherwise a Transpose of `name` itself, never composed with the one before: onnxruntime
        folds a last-two-axes swap into its MatMul (FusedMatMul transA/transB) where a composed transpose that moves
        the last axis would be a copy of its own (MiniLM: V^T as [0, 2, 3, 1] of V's heads, 0.5 ms a layer)."""
        perm = last_two_swapped(rank)
        source, first = self.transposed.get(name, (None, None))
        if first is not None and [first[p] for p in perm] == list(range(rank)):
            return source
        out = self.op("Transpose", name, perm=perm)
        self.transposed[out] = (name, perm)
        return out

    def const(self, value: Any, dtype: int = TensorProto.FLOAT) -> str:
        """A constant tensor (memoised by value and type)."""
        array = np.asarray(value, dtype=helper.tensor_dtype_to_np_dtype(dtype))
        key = (dtype, array.shape, array.tobytes())
        if key not in self._constants:
            name = self.fresh("const")
            self.initializers.append(numpy_helper.from_array(array, name))
            self._constants[key], self._values[name] = name, array
        return self._constants[key]

    def neg(self, name: str) -> str:
        """-`name`: a constant made here comes out negated, no node (the loss's seed through a Neg: cross-entropy's
        negative log-likelihood; a node of constants alone would cost every model with Convs an import of
        onnx's reference evaluator, 60-90 ms a process, when it is folded before the CPU lowering)."""
        if name in self._values:
            array = self._values[name]
            return self.const(-array, helper.np_dtype_to_tensor_dtype(array.dtype))
        return self.op("Neg", name)

    def times(self, name: str, fixed: str) -> str:
        """`name` * `fixed`, where `fixed` takes no gradient: a constant made here times a value fixed before run time
        (a label-smoothed loss's weights on its seed) comes out as their product, no node (see `neg`)."""
        value, by = self._values.get(name), self.constants.get(fixed)
        if value is not None and by is not None and value.dtype == by.dtype:
            product = value * by
            return self.const(product, helper.np_dtype_to_tensor_dtype(product.dtype))
        return self.op("Mul", name, fixed)

    def ints(self, values: Sequence[int] | int) -> str:
        return self.const(values, TensorProto.INT64)

    def add_up(self, parts: Sequence[str]) -> str:
        """The sum of same-typed `parts` as a chain of Adds (onnxruntime's CPU Sum of n inputs takes
        twice as long as n - 1 Adds: 0.98 against 0.51 ms for four 3 MB tensors)."""
        total = parts[0]
        for part in parts[1:]:
            total = self.op("Add", total, part)
        return total

    def filled(self, shape: str, value: float, dtype: int) -> str:
        """A tensor of the run-time shape `shape` (an int64 tensor name), every element `value`."""
        return self.op("ConstantOfShape", shape, value=helper.make_tensor("value", dtype, [1], [value]))

    def shape(self, name: str) -> str:
        if name not in self._shapes:
            self._shapes[name] = self.op("Shape", name)
        return self._shapes[name]

    def dtype(self, name: str) -> int:
        vi = self.types.get(name)
        return vi.type.tensor_type.elem_type if vi is not None else TensorProto.FLOAT

    def dims(self, name: str) -> list[Dim] | None:
        """Static dims of a forward value (int, symbol name or None per axis: `onnxkit.dims`); None when the rank
        is unknown."""
        vi = self.types.get(name)
        dims = None if vi is None else dims_of(vi.type)
        return None if dims is None else list(dims)

    def rank(self, name: str) -> int | None:
        dims = self.dims(name)
        return None if dims is None else len(dims)

    # -- opset-aware shorthands --------------------------------------------------------------

    def reduce(self, op_type: str, x: str, axes: Sequence[int] | str | None, keepdims: bool = True) -> str:
        """Reduce* over `axes` (a list or an int64 tensor name; None: all axes)."""
        axes_as_input = self.opset >= (13 if op_type == "ReduceSum" else 18)
        if axes is None:
            return self.op(op_type, x, keepdims=int(keepdims))
        if isinstance(axes, str):
            if not axes_as_input:
                raise ValueError(f"{op_type} with dynamic axes needs opset >= 18")
            return self.op(op_type, x, axes, keepdims=int(keepdims))
        if axes_as_input:
            return self.op(op_type, x, self.ints(list(axes)), keepdims=int(keepdims))
        return self.op(op_type, x, axes=list(axes), keepdims=int(keepdims))

    def unsqueeze(self, x: str, axes: Sequence[int]) -> str:
        if self.opset >= 13:
            return self.op("Unsqueeze", x, self.ints(list(axes)))
        return self.op("Unsqueeze", x, axes=list(axes))

    def squeeze(self, x: str, axes: Sequence[int]) -> str:
        if self.opset >= 13:
            return self.op("Squeeze", x, self.ints(list(axes)))
        return self.op("Squeeze", x, axes=list(axes))

    def unbroadcast(self, grad: str, like: str, src: list[Dim] | None) -> str:
        """Sum `grad` (of static dims `src`) down to the shape of forward value `like`, undoing
        numpy broadcasting. Static shapes decide the axes when they can; otherwise the axes
        are found at run time from the two shapes."""
        dst = self.dims(like)
        if src is not None and dst is not None and len(src) >= len(dst):
            lead = len(src) - len(dst)
            axes, known = list(range(lead)), True
            for j, (d_dst, d_src) in enumerate(zip(dst, src[lead:], strict=True)):
                if d_dst == d_src and d_dst is not None:
                    continue
                if d_dst == 1:
                    axes.append(lead + j)
                elif isinstance(d_dst, int) and isinstance(d_src, int):
                    raise ValueError(f"cannot broadcast {dst} to {src}")
                else:
                    known = False
            if known:
                if not axes:
                    return grad
                if axes == list(range(lead)):  # only leading axes: they simply go
                    return self.sum_leading(grad, src, dst, self.dtype(like))
                summed = self.reduce("ReduceSum", grad, axes, keepdims=True)
                return self.op("Reshape", summed, self.shape(like)) if lead else summed
        return self._unbroadcast_at_run_time(grad, like, src, dst)

    def sum_leading(self, grad: str, src: list[Dim], dst: list[Dim], dtype: int) -> str:
        """`grad` (of dims `src`, element type `dtype`) summed over its leading axes down to the
        trailing dims `dst`.

        A float32/64 grad with static trailing dims is a vector of ones times its rows (a MatMul of
        [rows] by [rows, columns]): onnxruntime's CPU ReduceSum over leading axes is 4-8x slower
        (367 against 43 us for [2048, 384] -> [384], ones made in the run; 8.9 against 5.0 us for
        [64, 128]), and the vector gives the [columns] sum with no Reshape around a 2-D Gemm (43
        against 83 us). The ones are made once per distinct leading shape, so a network's bias
        gradients share them.
        """
        lead = len(src) - len(dst)
        static = all(isinstance(d, int) for d in dst) and None not in src[:lead]
        if dtype not in (TensorProto.FLOAT, TensorProto.DOUBLE) or not static:
            return self.reduce("ReduceSum", grad, list(range(lead)), keepdims=False)
        columns = int(np.prod(dst, dtype=np.int64))
        rows = grad if lead == 1 and len(dst) == 1 else self.op("Reshape", grad, self.ints([-1, columns]))
        summed = self.op("MatMul", self._ones(grad, tuple(src[:lead]), dtype), rows)
        return summed if len(dst) == 1 else self.op("Reshape", summed, self.ints(list(dst)))

    def _ones(self, grad: str, leading: tuple[int | str, ...], dtype: int) -> str:
        """A vector of ones as long as the product of the leading dims, made from `grad`'s shape at
        run time unless the dims are all static."""
        key = (leading, dtype)
        if key not in self._ones_made:
            if all(isinstance(d, int) for d in leading):
                ones = np.ones(int(np.prod(leading, dtype=np.int64)), helper.tensor_dtype_to_np_dtype(dtype))
                self._ones_made[key] = self.const(ones, dtype)
            else:
                dims = self.op("Slice", self.shape(grad), self.ints([0]), self.ints([len(leading)]))
                length = dims if len(leading) == 1 else self.op("ReduceProd", dims, keepdims=1)
                self._ones_made[key] = self.filled(length, 1, dtype)
        return self._ones_made[key]

    def _unbroadcast_at_run_time(self, grad: str, like: str, src: list[Dim] | None, dst: list[Dim] | None) -> str:
        target = self.shape(like)
        if src is None or dst is None:
            raise ValueError(f"the rank of {like!r} or of its broadcast result is unknown")
        padded = target
        if len(src) > len(dst):
            padded = self.op("Concat", self.ints([1] * (len(src) - len(dst))), target, axis=0)
        differs = self.op("Not", self.op("Equal", padded, self.op("Shape", grad)))
        axes = self.op("Reshape", self.op("NonZero", differs), self.ints([-1]))
        summed = self.op("ReduceSum", grad, axes, keepdims=1, noop_with_empty_axes=1)
        return self.op("Reshape", summed, target)


class Backward:
    """One forward node seen by its gradient rule."""

    def __init__(self, graph: Graph, node: onnx.NodeProto, dys: list[str | None], wants: list[bool]) -> None:
        self.graph, self.node, self._dys, self._wants = graph, node, dys, wants
        self.opset = graph.opset
        self._attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}

    def x(self, i: int = 0) -> str:
        return self.node.input[i] if i < len(self.node.input) else ""

    def y(self, i: int = 0) -> str:
        return self.node.output[i]

    def dy(self, i: int = 0) -> str | None:
        """The gradient flowing into output `i` (None: nothing flows, i.e. zero)."""
        return self._dys[i] if i < len(self._dys) else None

    def wants(self, i: int) -> bool:
        """Whether input `i` needs a gradient (rules may skip work for the others)."""
        return i < len(self._wants) and self._wants[i]

    @property
    def num_inputs(self) -> int:
        return len(self.node.input)

    def attr(self, name: str, default: Any = None) -> Any:
        value = self._attrs.get(name, default)
        return value.decode() if isinstance(value, bytes) else value

    # Delegated builders, so a rule only ever touches `b`.
    def op(self, op_type: str, *inputs: str, outputs: int = 1, **attrs: Any) -> Any:
        return self.graph.op(op_type, *inputs, outputs=outputs, **attrs)

    def const(self, value: Any, like: str | None = None) -> str:
        """A constant in the float type of forward value `like` (the node's first input by default)."""
        return self.graph.const(value, self.graph.dtype(like or self.x(0)))

    def ints(self, values: Sequence[int] | int) -> str:
        return self.graph.ints(values)

    def neg(self, name: str) -> str:
        return self.graph.neg(name)

    def shape(self, name: str) -> str:
        return self.graph.shape(name)

    def add_up(self, parts: Sequence[str]) -> str:
        return self.graph.add_up(parts)

    def zeros(self, shape: str) -> str:
        """Zeros of the run-time shape `shape`, in the dtype of the node's first input."""
        return self.graph.filled(shape, 0, self.dtype(self.x()))

    def dims(self, name: str) -> list[Dim] | None:
        return self.graph.dims(name)

    def rank(self, name: str) -> int | None:
        return self.graph.rank(name)

    def value(self, name: str) -> np.ndarray | None:
        """The value of a forward input known before run time (an initializer or Constant), else None."""
        return self.graph.constants.get(name)

    def need_rank(self, name: str) -> int:
        rank = self.graph.rank(name)
        if rank is None:
            raise ValueError(f"the rank of {name!r} is unknown; give the model's inputs a shape")
        return rank

    def dtype(self, name: str) -> int:
        return self.graph.dtype(name)

    def reduce(self, op_type: str, x: str, axes: Sequence[int] | str | None, keepdims: bool = True) -> str:
        return self.graph.reduce(op_type, x, axes, keepdims)

    def unsqueeze(self, x: str, axes: Sequence[int]) -> str:
        return self.graph.unsqueeze(x, axes)

    def squeeze(self, x: str, axes: Sequence[int]) -> str:
        return self.graph.squeeze(x, axes)

    def unbroadcast(self, grad: str, i: int, dims: list[Dim] | None = None) -> str:
        """`grad` (shaped like output 0, or of static `dims`) summed to the shape of input `i`."""
        return self.graph.unbroadcast(grad, self.x(i), self.dims(self.y()) if dims is None else dims)

    def keep(self, value: str, condition: str) -> str:
        """`value` where the boolean `condition` holds, else 0 (a multiply by the cast mask:
        onnxruntime's Where against a broadcast zero is ~5x slower)."""
        return self.op("Mul", value, self.op("Cast", condition, to=self.dtype(self.y())))

    def cast_like(self, x: str, like: str) -> str:
        return self.op("Cast", x, to=self.dtype(like))
