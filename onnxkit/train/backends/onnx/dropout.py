"""Training-mode Dropout without a random-number kernel in the step.

ONNX Runtime's Dropout (and RandomUniformLike) draw every mask element from a scalar
generator: on a 2-core CPU that is ~13 ns an element, a quarter of a MiniLM fine-tuning
step. Here each Dropout reads its mask as a random window of a long pre-drawn table of
scaled keep values (0 or 1/(1-p), one table per ratio) and multiplies.

- The session draws the tables once (from the run's seed) and, each step, one window
  start per Dropout (from seed, step and micro-batch): masks are independent between
  steps, layers and elements of a batch, and a resumed run draws the same ones.
- Where every dim of the Dropout's input is static or named by a dim of a graph input, the
  window is a graph input of that shape, which the session binds by address into the table
  (no copy). Otherwise the graph slices it out (a copy) from a start fed as
  `onnxkit.dropout.starts`. Either way the mask is the same.
- A window starts in the table's first half; a tensor too long for its window makes the
  session draw a larger table (one that fits it) and retry the step.
- The gradient is the same multiply (the Mul rule), so backward costs no mask either.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxkit.dims import dim_of
from onnxkit.graph_walks import constant_values, value_types

TABLE = "onnxkit.dropout.table"  # + ".<k>" for the k-th distinct ratio
STARTS = "onnxkit.dropout.starts"  # int64 [number of Dropout nodes]: each sliced window's first element
STEPS_AT_ONCE = 256  # window starts are hashed for this many steps at a time (see DropoutTables.starts)
# 1 MiB of float32: windows up to 128K elements (digits-mlp's are 8K: 32 of them fit in the table's
# first half), and the table stays in a core's cache (drawing the 32 MiB table this once was cost
# 94 ms at every session start, and reading windows out of it 8 us of digits-mlp's 220 us step).
# A bound window that does not fit grows the table to fit it at once (MiniLM: 8M elements).
FIRST_SIZE = 1 << 18
ONE = "onnxkit.dropout.one"
FLOAT = TensorProto.FLOAT


def replace_dropout(model: onnx.ModelProto) -> dict:
    """Rewrite training-mode Dropout nodes whose ratio is a constant (in place). Returns the
    session's settings: the distinct ratios (table k serves ratios[k]), the seed of the first
    Dropout, the number of Dropouts and the bound windows ([input name, dropout index, table,
    dims] each; the others are sliced)."""
    constants = {k: v for k, v in constant_values(model).items() if v.size == 1}  # an exporter's Constant node too
    types = value_types(model)
    consumed = {name for node in model.graph.node for name in node.input} | {o.name for o in model.graph.output}
    given = {v.name for v in model.graph.input} | {t.name for t in model.graph.initializer}
    named = {d for v in model.graph.input for d in map(dim_of, v.type.tensor_type.shape.dim) if isinstance(d, str)}
    ratios: list[float] = []
    views: list[list] = []
    seed, nodes, count, inputs = 0, [], 0, []
    for node in model.graph.node:
        ratio = constants.get(node.input[1]) if node.op_type == "Dropout" and len(node.input) > 2 else None
        training = constants.get(node.input[2]) if ratio is not None else None
        if ratio is None or training is None or not bool(training.reshape(-1)[0]):
            nodes.append(node)
            continue
        value = float(ratio.reshape(-1)[0])
        if value not in ratios:
            ratios.append(value)
        if count == 0:
            seed = next((a.i for a in node.attribute if a.name == "seed"), 0)
        x, y, tag = node.input[0], node.output[0], f"onnxkit.dropout.{count}"
        scale = f"{tag}.scale"
        dims = _run_time_dims(types.get(x), named)
        if dims is not None:  # a window bound by address
            window = onnx.ValueInfoProto()
            window.CopyFrom(types[x])
            window.name = scale
            inputs.append(window)
            views.append([scale, count, ratios.index(value), dims])
            nodes.append(helper.make_node("Mul", [x, scale], [y], name=f"{tag}/apply"))
        else:
            nodes.extend(_sliced_window(x, y, count, ratios.index(value)))
        mask = node.output[1] if len(node.output) > 1 and node.output[1] in consumed else None
        if mask:
            nodes.append(helper.make_node("Cast", [scale], [mask], name=f"{tag}/mask", to=TensorProto.BOOL))
        if x in types:  # a sliced window's Reshape hides x's shape from inference: restate it,
            # x's too, so all three share its symbolic dims in later inference (else unknown dims get
            # new names, and the Mul's gradient sums over no axes at run time: a copy of x)
            restated = (x, y) if dims is not None else (x, scale, y)
            for name in (n for n in restated if n not in given):  # in order: the same artifacts every build
                typed = onnx.ValueInfoProto()
                typed.CopyFrom(types[x])
                typed.name = name
                model.graph.value_info.append(typed)
        count += 1
    if count:
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        model.graph.input.extend(inputs)
        bound = {v[1] for v in views}
        sliced = [k for k in range(count) if k not in bound]
        if sliced:
            model.graph.input.append(helper.make_tensor_value_info(STARTS, TensorProto.INT64, [count]))
            model.graph.initializer.extend([
                numpy_helper.from_array(np.asarray([1], np.int64), ONE),
                *(numpy_helper.from_array(np.asarray([i], np.int64), f"onnxkit.dropout.{i}.index") for i in sliced),
            ])
        for k in range(len(ratios)):
            model.graph.input.append(helper.make_tensor_value_info(f"{TABLE}.{k}", TensorProto.FLOAT, ["table"]))
    return {"ratios": ratios, "seed": seed, "count": count, "views": views}


def _run_time_dims(typed: onnx.ValueInfoProto | None, named: set[str]) -> list[int | str] | None:
    """The dims of a float32 value if each is static or a name the graph's inputs carry (so the
    session knows them from the batch), else None."""
    if typed is None or not typed.type.tensor_type.HasField("shape") or typed.type.tensor_type.elem_type != FLOAT:
        return None  # the tables are float32
    dims: list[int | str] = []
    for d in map(dim_of, typed.type.tensor_type.shape.dim):
        if isinstance(d, int) or d in named:
            dims.append(d)
        else:
            return None
    return dims


def _sliced_window(x: str, y: str, index: int, table: int) -> list[onnx.NodeProto]:
    """y = x * window, the window the slice of table `table` as long as x from STARTS[index]."""
    tag = f"onnxkit.dropout.{index}"

    def n(op: str, inputs: list[str], out: str) -> onnx.NodeProto:
        return helper.make_node(op, inputs, [f"{tag}.{out}"], name=f"{tag}/{out}")

    return [
        n("Gather", [STARTS, f"{tag}.index"], "start"),
        n("Size", [x], "size"),
        n("Reshape", [f"{tag}.size", ONE], "n"),
        n("Add", [f"{tag}.start", f"{tag}.n"], "end"),
        n("Slice", [f"{TABLE}.{table}", f"{tag}.start", f"{tag}.end"], "window"),
        n("Shape", [x], "shape"),
        n("Reshape", [f"{tag}.window", f"{tag}.shape"], "scale"),
        helper.make_node("Mul", [x, f"{tag}.scale"], [y], name=f"{tag}/apply"),
    ]


class DropoutTables:
    """The tables and per-step window starts a session feeds to the rewritten graph."""

    def __init__(self, ratios: list[float], seed: int, count: int, size: int | None = None) -> None:
        self.ratios, self.seed, self.count = ratios, seed, count
        self.stream = 0  # data-parallel rank: each draws its own windows from the same tables
        self.size = size or FIRST_SIZE
        self.tables = [self._draw(k) for k in range(len(ratios))]
        self._block_key: tuple | None = None  # (stream, batch, step // STEPS_AT_ONCE, size) of _block
        self._block = np.zeros((0, count), np.int64)

    def _draw(self, k: int) -> np.ndarray:
        keep = np.random.default_rng([self.seed, k, self.size]).random(self.size, dtype=np.float32) >= self.ratios[k]
        return keep.astype(np.float32) * np.float32(1.0 / (1.0 - self.ratios[k]))

    def grow(self, window: int = 0) -> None:
        """Redraw the tables longer: at least twice as long, and long enough for a window of
        `window` elements (twice that, to a power of two: windows start in the first half);
        four times as long when the window's size is unknown (0)."""
        fits = 1 << (2 * window - 1).bit_length() if window else 0
        self.size = max(fits, self.size * (2 if window else 4))
        self.tables = [self._draw(k) for k in range(len(self.ratios))]

    def starts(self, step: int, batch: int) -> np.ndarray:
        """Where each Dropout's window begins for micro-batch `batch` of step `step`: uniform over
        the table's first half, so a tensor up to half the table's size always fits. A hash of
        (seed, stream, step, batch, k), not a generator (seeding numpy's costs 15 us, a tenth of a
        small step), computed for STEPS_AT_ONCE steps in one numpy pass (1.4 us a step in Python)."""
        first, row = divmod(step, STEPS_AT_ONCE)
        key = (self.stream, batch, first, self.size)
        if self._block_key != key:
            steps = np.arange(first * STEPS_AT_ONCE, (first + 1) * STEPS_AT_ONCE, dtype=np.uint64)
            seeds = np.full(STEPS_AT_ONCE, self.seed, np.uint64)  # arrays throughout: they wrap silently
            keys = _mix(_mix(_mix(_mix(seeds) ^ np.uint64(self.stream)) ^ steps) ^ np.uint64(batch))  # a mix per field
            hashed = _mix(keys[:, None] + np.arange(self.count, dtype=np.uint64))
            self._block = (hashed % np.uint64(self.size // 2)).astype(np.int64)
            self._block_key = key
        return self._block[row]


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 values (wrapping): outputs that pass as uniform."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


