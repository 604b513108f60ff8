"""Running one quantization pass on a model: preprocessing, exclusions, and checks."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import onnx

from onnxkit import graph_work
from onnxkit.errors import OnnxkitError
from onnxkit.graph_walks import every_node, producers, quantization_ops
from onnxkit.quantize import analysis, int4, int8, isolated, rewrite
from onnxkit.quantize.data import Feeds
from onnxkit.quantize.fp16 import quantize_fp16
from onnxkit.quantize.fuse import attention_blocks, fuse_attention
from onnxkit.quantize.prepare import prepare
from onnxkit.quantize.settings import Settings
from onnxkit.runtime.session import ort

_LOW_PRECISION = {
    onnx.TensorProto.INT8,
    onnx.TensorProto.UINT8,
    onnx.TensorProto.FLOAT16,
    onnx.TensorProto.INT4,
    onnx.TensorProto.UINT4,
}
_WHAT = {
    "dynamic": "MatMul or Gather node with a constant float weight",
    "static": "Conv, MatMul, Gemm or Gather node with a constant float weight",
    "auto": "Conv, MatMul, Gemm or Gather node with a constant float weight",
    "int4": "MatMul node with a constant 2-D float weight",
    "fp16": "float32 weight",
}
_STATIC_ONLY = frozenset({"Conv", "Gemm"})  # weighted ops that static quantizes and dynamic leaves float
_LAYERS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm", "Gather", "LSTM", "GRU", "RNN"})


def low_precision_weights(model: onnx.ModelProto) -> int:
    """How many initializers are int8/uint8/int4/uint4/float16."""
    return sum(t.data_type in _LOW_PRECISION for t in model.graph.initializer)


_TYPE_NAMES = {onnx.TensorProto.INT8: "int8", onnx.TensorProto.UINT8: "uint8", onnx.TensorProto.FLOAT16: "float16",
               onnx.TensorProto.INT4: "int4", onnx.TensorProto.UINT4: "uint4"}


# ops a stored weight may pass through on its way to the node that uses it (int8 weights kept compressed in
# the file and widened at run time: Cast, then Mul by a scale)
_WEIGHT_PATH_OPS = {"Cast", "Mul", "Sub", "Add", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "DequantizeLinear"}


def quantized_before(model: onnx.ModelProto) -> str | None:
    """What shows that `model` is already quantized (quantization ops, or weighted nodes whose weights are stored
    low-precision: an int8 or float16 model), in words; None for a float model."""
    inits = {t.name: t for t in model.graph.initializer}
    made_by = producers(model.graph.node)
    ops = quantization_ops(model)

    def stored_low(name: str, depth: int = 0) -> bool:
        if name in inits:
            return inits[name].data_type in _LOW_PRECISION
        node = made_by.get(name)
        return (node is not None and node.op_type in _WEIGHT_PATH_OPS and depth < 6
                and any(stored_low(i, depth + 1) for i in node.input if i))

    weighted = set(graph_work.KINDS)
    low = [n for n in model.graph.node if n.op_type in weighted and len(n.input) > graph_work.weight_input(n)
           and stored_low(n.input[graph_work.weight_input(n)])]
    if not ops and not low:
        return None
    held = Counter(_TYPE_NAMES[t.data_type] for t in inits.values() if t.data_type in _LOW_PRECISION)
    what = [", ".join(f"{n} {kind}" for kind, n in sorted(held.items())) + " weight tensors"] if held else []
    what += [f"ops {', '.join(ops)}"] if ops else []
    return "; ".join(what)


class Quantizer:
    """Quantizes one model with any Settings; preprocessing is done once per kind."""

    def __init__(self, model: onnx.ModelProto, workdir: Path, exclude: Iterable[str] = (), check: Feeds | None = None):
        self.model = model
        self.workdir = workdir
        self.exclude = tuple(exclude)
        self.check = check  # a batch each quantized model first runs on in a child process (`isolated`), if given
        self._prepared: dict[str, onnx.ModelProto] = {}
        self.fused: dict[str, int] = {}  # ops made by fusing attention blocks (dynamic int8)
        self.attention = (0, 0)  # (blocks ONNX Runtime's fusion matched, attention blocks): dynamic int8

    def prepared_for(self, settings: Settings) -> onnx.ModelProto:
        """The preprocessed float model the pass for `settings` starts from: graph-optimized for
        static, attention blocks fused for dynamic (into QAttention), plain MatMuls for the rest."""
        kind = settings.mode if settings.mode in ("static", "dynamic") else "plain"
        if kind not in self._prepared:
            model = self.model
            if kind == "dynamic":  # fused only when every block fuses (a partly fused encoder ran slower: fuse.py)
                fused, counts = fuse_attention(model, self.workdir)
                self.attention = (counts.get("Attention", 0), attention_blocks(model))
                if counts and self.attention[0] >= self.attention[1]:
                    model, self.fused = fused, counts
            self._prepared[kind] = prepare(model, self.workdir, optimize=kind == "static")
        return self._prepared[kind]

    def run(self, settings: Settings, calibration: list[Feeds] | None = None) -> onnx.ModelProto:
        """The quantized model; OnnxkitError when there is nothing to quantize."""
        model = self.prepared_for(settings)
        ops, nodes = analysis.resolve_exclude(model, self.exclude, original=self.model)
        if not analysis.targets(model, settings.mode, ops, nodes):
            raise OnnxkitError(self.nothing_message(settings.mode, bool(ops or nodes)), params=["mode", "exclude"])
        if settings.mode == "dynamic":
            out = int8.quantize_dynamic(model, settings, self.workdir, ops, nodes)
        elif settings.mode == "static":
            assert calibration is not None, "static quantization needs calibration arrays"
            out = int8.quantize_static(model, settings, self.workdir, ops, nodes, calibration)
        elif settings.mode == "int4":
            out = int4.quantize_int4(model, settings.block_size, ops, nodes)
        else:
            copy = onnx.ModelProto()
            copy.CopyFrom(model)
            out = quantize_fp16(copy, ops, nodes)
        rewrite.drop_unused_opsets(out)
        rewrite.sort_nodes(out.graph)
        if low_precision_weights(out) <= low_precision_weights(model):
            raise OnnxkitError(
                f"ONNX Runtime quantized no weight with {settings.label} (the candidate nodes "
                "lack shape information or were skipped); check the model with `onnxkit inspect`"
            )
        if self.check is not None and (crashed := isolated.crash(out, self.check, self.workdir)):
            raise OnnxkitError(f"onnxruntime {ort.__version__} crashes ({crashed}) opening or running the model "
                               f"{settings.label} makes; nothing written: try another --mode, or --exclude the nodes "
                               "around the crash (onnxkit inspect lists them)", params=["mode", "exclude"])
        return out

    def nothing_message(self, mode: str, excluded: bool = False) -> str:
        """`nothing_message` for this quantizer's model."""
        return nothing_message(self.model, mode, excluded)


def nothing_message(model: onnx.ModelProto, mode: str, excluded: bool = False) -> str:
    """'nothing to quantize with mode M: ...' naming the model's ops and what would help (parameters
    `mode` and `exclude`, which the command line shows as its flags)."""
    ops = ", ".join(sorted({n.op_type for n in model.graph.node}))
    nested = sorted({n.op_type for n in every_node(model.graph)} & _LAYERS - {n.op_type for n in model.graph.node})
    if nested:  # silero-vad's every layer: named, where the list above said the model had none
        ops += f"; {', '.join(nested)} only inside If, Loop or Scan bodies, which quantize leaves as they are"
    why = " that exclude leaves" if excluded else ""
    has_float_weights = analysis.profile(model).float_params > 0
    static_only = sorted({n.op_type for n in model.graph.node} & _STATIC_ONLY) if mode == "dynamic" else []
    hint = (
        "; drop some exclude items" if excluded
        else f"; mode static quantizes its {', '.join(static_only)} (calibrated on data), and mode fp16 halves its "
             "float weights" if static_only and has_float_weights
        else "; mode fp16 still halves its float weights" if mode != "fp16" and has_float_weights
        else ""
    )  # fmt: skip
    return f"nothing to quantize with mode {mode}: no {_WHAT[mode]}{why} (ops: {ops}){hint}"
