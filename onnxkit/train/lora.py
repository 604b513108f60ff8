"""LoRA: low-rank adapters on MatMul and Gemm weights, as a graph rewrite, and their merge back.

`add_adapters` rewrites every `y = MatMul(x, W)` whose weight `W` [in, out]
matches a target glob into

    y = MatMul(x, W) + MatMul(MatMul(x, W.lora_A), W.lora_B) * alpha / rank

(a `Gemm(x, W, b)` likewise: a 2-D Linear as exporters write it, W [out, in] with transB, or
GPT-2's fused Conv1D weights [in, out]; the update scaled by the Gemm's own alpha too),
with `W.lora_A` [in, rank] small random and `W.lora_B` [rank, out] zeros, so the
adapted model starts out computing exactly what the original does. Training
then updates only the adapters (and whatever else is chosen, e.g. a new head)
while `W` stays frozen. `merge_adapters` folds `A @ B * alpha / rank` into `W`
and writes every trained weight into the *original* graph: the served model
has no extra node and no extra cost.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxkit.errors import OnnxkitError, first_few, suggest
from onnxkit.metadata import metadata, set_metadata
from onnxkit.metadata_keys import LORA_KEY
from onnxkit.train.exporter_marks import matmul_weight_names

DEFAULT_TARGETS = ("*attn.q.weight", "*attn.v.weight")
# the query and value weights of Hugging Face encoders (BERT, RoBERTa, ALBERT, ELECTRA; DistilBERT; DeBERTa), by the
# PyTorch names of an export's MatMul weights: the default targets where the zoo's match none
HF_TARGETS = ("*.query.weight", "*.value.weight", "*.q_lin.weight", "*.v_lin.weight", "*.query_proj.weight",
              "*.value_proj.weight")
ALL_ATTENTION = ("*attn.q.weight", "*attn.k.weight", "*attn.v.weight", "*attn.out.weight")
DEFAULT_HEADS = ("classifier.*", "head.*")  # a new task head (bert-classifier's, text-transformer's), trained fully
_A, _B = ".lora_A", ".lora_B"
_PEFT_KEYWORDS = {  # peft.LoraConfig's keyword -> what takes its place here
    "r": "give rank=",
    "lora_alpha": "give alpha=",
    "target_modules": "give targets=, globs of weight names (e.g. ['*attn.q.weight', '*.query.weight'])",
    "lora_dropout": "no dropout on the adapters (the model's own dropout trains as it is)",
    "bias": "biases stay frozen (unfreeze them with LoraAdapter's train= globs)",
    "task_type": "the model's outputs decide the task",
    "modules_to_save": "give LoraAdapter(config, train=[globs]) (default: a classifier.* or head.* head)",
}


@dataclass(frozen=True)
class LoraConfig:
    """Adapter rank, alpha (scale = alpha / rank; default alpha = 2 * rank) and target weight globs."""

    rank: int
    alpha: float | None = None
    targets: Sequence[str] = DEFAULT_TARGETS
    seed: int = 0

    def __new__(cls, *args: Any, **kwargs: Any) -> LoraConfig:
        """Refuses peft's `LoraConfig` keywords in one line naming ours (Python's error named neither)."""
        foreign = [k for k in kwargs if k in _PEFT_KEYWORDS]
        if foreign:
            meant = "; ".join(f"{k}: {_PEFT_KEYWORDS[k]}" for k in foreign)
            raise OnnxkitError(f"LoraConfig takes rank, alpha, targets and seed, not peft's names: {meant}")
        return super().__new__(cls)

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise OnnxkitError(f"LoRA rank must be at least 1, got {self.rank}")
        if self.alpha is not None and not self.alpha > 0:
            raise OnnxkitError(f"LoRA alpha must be positive, got {self.alpha}")

    @property
    def scale(self) -> float:
        return (self.alpha if self.alpha is not None else 2.0 * self.rank) / self.rank


@dataclass(frozen=True)
class _Weight:
    """A weight LoRA can adapt: [in, out] as the product reads it (`transposed`: stored [out, in], a Gemm's
    transB), and the factor the product is scaled by (a Gemm's alpha)."""

    fan_in: int
    fan_out: int
    transposed: bool = False
    factor: float = 1.0


def _adaptable_weights(model: onnx.ModelProto) -> dict[str, _Weight]:
    """Float rank-2 initializers used as the right-hand side of a MatMul, or the B of a Gemm that does not
    transpose its A, by name."""
    inits = {t.name: t for t in model.graph.initializer}
    found: dict[str, _Weight] = {}
    for n in model.graph.node:
        w = n.input[1] if n.op_type in ("MatMul", "Gemm") and len(n.input) > 1 else None
        tensor = inits.get(w) if w else None
        if tensor is None or tensor.data_type != TensorProto.FLOAT or len(tensor.dims) != 2:
            continue
        if n.op_type == "MatMul":
            found[w] = _Weight(*tensor.dims)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        if not attrs.get("transA", 0):
            rows, cols = tensor.dims
            transposed = bool(attrs.get("transB", 0))
            found[w] = _Weight(cols if transposed else rows, rows if transposed else cols, transposed,
                               float(attrs.get("alpha", 1.0)))
    return found


def target_weights(model: onnx.ModelProto, targets: Sequence[str]) -> list[str]:
    """The MatMul and Gemm weights matched by the `targets` globs, by name or by the PyTorch name the export gives
    them; each glob must match one (the default ones, where none does, give way to Hugging Face's query and value
    weights)."""
    names = _parameter_names(model)
    weights = {w: names[w] for w in _adaptable_weights(model)}
    shown = [aka[-1] for aka in weights.values()]
    if tuple(targets) == DEFAULT_TARGETS and not _matching(weights, targets):
        targets = [t for t in HF_TARGETS if _matching(weights, [t])] or targets
    chosen: set[str] = set()
    for pattern in targets:
        hits = _matching(weights, [pattern])
        if not hits:
            raise OnnxkitError(
                f"LoRA target {pattern!r} matches no MatMul or Gemm weight.{suggest(pattern, shown)} "
                f"Such weights look like: {first_few(shown, 4) or 'none (the model has no MatMul or Gemm weight)'}"
            )
        chosen.update(hits)
    return [w for w in weights if w in chosen]


def _matching(weights: dict[str, list[str]], patterns: Sequence[str]) -> list[str]:
    """The weights one of whose names matches one of `patterns`."""
    return [w for w, names in weights.items() if any(fnmatch.fnmatchcase(n, p) for n in names for p in patterns)]


def add_adapters(model: onnx.ModelProto, config: LoraConfig) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of `model` with adapters on the target weights, and the adapter parameter names."""
    targets = target_weights(model, config.targets)
    weights = _adaptable_weights(model)
    rng = np.random.default_rng(config.seed)
    adapted = onnx.ModelProto()
    adapted.CopyFrom(model)
    graph = adapted.graph
    nodes = list(graph.node)
    del graph.node[:]
    names: list[str] = []
    for node in nodes:
        if node.op_type not in ("MatMul", "Gemm") or len(node.input) < 2 or node.input[1] not in targets:
            graph.node.append(node)
            continue
        w = node.input[1]
        fan_in, fan_out = weights[w].fan_in, weights[w].fan_out
        if w + _A not in names:  # one adapter per weight, even if the weight is used twice
            bound = 1.0 / np.sqrt(fan_in)
            graph.initializer.extend([
                numpy_helper.from_array(rng.uniform(-bound, bound, (fan_in, config.rank)).astype(np.float32), w + _A),
                numpy_helper.from_array(np.zeros((config.rank, fan_out), np.float32), w + _B),
            ])
            names += [w + _A, w + _B]
        out = node.output[0]
        base, low, delta, scale, scaled = (f"{out}/lora_{s}" for s in ("base", "low", "delta", "scale", "scaled"))
        node.output[0] = base
        graph.node.extend([
            node,
            helper.make_node("MatMul", [node.input[0], w + _A], [low]),
            helper.make_node("MatMul", [low, w + _B], [delta]),
            helper.make_node("Constant", [], [scale], value=helper.make_tensor(scale, TensorProto.FLOAT, [],
                                                                              [config.scale * weights[w].factor])),
            helper.make_node("Mul", [delta, scale], [scaled]),
            helper.make_node("Add", [base, scaled], [out]),
        ])
    info = {"rank": config.rank, "scale": config.scale, "weights": targets}
    set_metadata(adapted, {LORA_KEY: info})
    return adapted, names


def is_adapter(name: str) -> bool:
    return name.endswith((_A, _B))


def merge_adapters(original: onnx.ModelProto, adapted: onnx.ModelProto) -> onnx.ModelProto:
    """`original` (the graph before `add_adapters`) carrying the trained weights of `adapted`,
    each adapted weight replaced by `W + A @ B * scale`. Metadata comes from `adapted`, minus
    the adapter record."""
    meta = metadata(adapted)
    if LORA_KEY not in meta:
        raise OnnxkitError(f"this model has no LoRA adapters to merge (no {LORA_KEY} metadata)")
    scale = float(json.loads(meta.pop(LORA_KEY))["scale"])
    weights = _adaptable_weights(original)
    trained = {t.name: t for t in adapted.graph.initializer}
    merged = onnx.ModelProto()
    merged.CopyFrom(original)
    for init in merged.graph.initializer:
        if init.name not in trained:
            continue
        value = numpy_helper.to_array(trained[init.name])
        if init.name + _A in trained:
            a = numpy_helper.to_array(trained[init.name + _A]).astype(np.float64)
            b = numpy_helper.to_array(trained[init.name + _B]).astype(np.float64)
            update = (a @ b) * scale
            value = (value + (update.T if weights[init.name].transposed else update)).astype(value.dtype)
        init.CopyFrom(numpy_helper.from_array(value, init.name))
    set_metadata(merged, meta, keep=False)
    return merged


class LoraAdapter:
    """LoRA as a `fit(adapter=...)` graph adapter: adds the adapters before training, trains them
    (plus the parameters matching `train` globs, by default a `classifier.*` or `head.*` head when there is one),
    and merges them into the original graph when the trained model is written."""

    def __init__(self, config: LoraConfig, train: Sequence[str] | None = None) -> None:
        self.config = config
        self.train = list(train) if train is not None else None
        self._original: onnx.ModelProto | None = None
        self.adapters: list[str] = []

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> LoraAdapter:
        """The adapter a run's stored `settings()` describe (to resume it)."""
        config = LoraConfig(rank=settings["rank"], alpha=settings["alpha"], targets=settings["targets"],
                            seed=settings["seed"])
        return cls(config, train=settings["train"])

    def settings(self) -> dict[str, Any]:
        c = self.config
        return {"rank": c.rank, "alpha": c.alpha, "targets": list(c.targets), "seed": c.seed, "train": self.train}

    def apply(self, model: onnx.ModelProto) -> onnx.ModelProto:
        self._original = model
        adapted, self.adapters = add_adapters(model, self.config)
        return adapted

    def notes(self) -> list[str]:
        """Warnings about the adapted graph: adapters no smaller than the weight they adapt; no head to train."""
        if self._original is None:
            return []
        return self._no_head(self._original) + self._rank_notes(self._original)

    def _no_head(self, original: onnx.ModelProto) -> list[str]:
        """A warning when no head trains beside the adapters by default: a new head would stay as built (random)."""
        if self.train is not None or _default_head(_parameter_names(original)):
            return []
        return [f"warning: LoRA trains the adapters alone: no parameter matches {' or '.join(DEFAULT_HEADS)}, the "
                "task head trained beside them by default; a new head would stay as built (random): name its "
                "parameters with --lora-train 'NAME.*'"]

    def _rank_notes(self, original: onnx.ModelProto) -> list[str]:
        """A warning for adapters no smaller than the weight they adapt."""
        weights = _adaptable_weights(original)
        rank = self.config.rank
        targets = target_weights(original, self.config.targets)
        full = [f"{w} {weights[w].fan_in}x{weights[w].fan_out}" for w in targets
                if rank >= min(weights[w].fan_in, weights[w].fan_out)]
        if not full:
            return []
        return [f"warning: LoRA rank {rank} is not below the smaller side of {len(full)} adapted weight"
                f"{'s' if len(full) > 1 else ''} ({first_few(full)}): each such adapter holds more parameters than "
                "the weight it adapts, and saves nothing over training it; use a smaller rank (--lora-rank)"]

    def trainable(self, model: onnx.ModelProto) -> list[str]:
        names = {n: aka for n, aka in _parameter_names(model).items() if not is_adapter(n)}
        extra: list[str] = _default_head(names) if self.train is None else []
        for pattern in self.train or ():
            hits = _matching(names, [pattern])
            if not hits:
                shown = [aka[-1] for aka in names.values()]
                raise OnnxkitError(f"LoRA train pattern {pattern!r} matches no parameter.{suggest(pattern, shown)}")
            extra += hits
        return self.adapters + [n for n in names if n in set(extra)]

    def merge(self, model: onnx.ModelProto) -> onnx.ModelProto:
        if self._original is None:
            raise OnnxkitError("LoraAdapter.merge called before apply")
        return merge_adapters(self._original, model)


def _parameter_names(model: onnx.ModelProto) -> dict[str, list[str]]:
    """Each initializer's names: its own, then the PyTorch one an export gives a MatMul weight."""
    torch_names = matmul_weight_names(model)
    return {t.name: [t.name, torch_names[t.name]] if t.name in torch_names else [t.name]
            for t in model.graph.initializer}


def _default_head(names: dict[str, list[str]]) -> list[str]:
    """The parameters of a task head among `names`, trained beside the adapters unless `train` globs are given."""
    return _matching(names, DEFAULT_HEADS)
