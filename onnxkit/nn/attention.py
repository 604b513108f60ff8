"""Multi-head self-attention and the transformer encoder layer built on it."""

from __future__ import annotations

import copy
import math

import numpy as np

from onnxkit.errors import OnnxkitError
from onnxkit.nn import ops
from onnxkit.nn.activation import ACTIVATIONS, Dropout
from onnxkit.nn.graph import Tensor, current_graph
from onnxkit.nn.linear import Linear
from onnxkit.nn.module import Module, ModuleList, check_int, check_number, check_probability
from onnxkit.nn.norm import LayerNorm

MASKED = -1.0e4  # added to masked scores; finite so fp16 conversion stays finite


def mask_bias(mask: Tensor, dtype: np.dtype) -> Tensor:
    """[batch, seq] keep-mask (1 = token, 0 = padding) -> additive bias [batch, 1, 1, seq].

    Written as BERT exports write it (two Unsqueezes, then Cast, Sub, Mul), and the scores
    below as MatMul / sqrt(d): the pattern ONNX Runtime's attention fusion recognises."""
    keep = ops.cast(ops.unsqueeze(ops.unsqueeze(mask, [1]), [2]), dtype)
    return ops.mul(ops.sub(1.0, keep), MASKED)


def _check_pytorch_shapes(state: dict[str, np.ndarray], shapes: dict[str, tuple[int, ...]], layer: str) -> None:
    """PyTorch's entries must have PyTorch's shapes: one transposed by hand cannot be told from its own when square."""
    for name, shape in shapes.items():
        if name in state and np.shape(state[name]) != shape:
            raise OnnxkitError(f"weight {name!r} has shape {list(np.shape(state[name]))}, PyTorch's is {list(shape)}: "
                               f"give PyTorch's {layer} entries as its state_dict() holds them, untransposed")


def _pytorch_linears(state: dict[str, np.ndarray], renames: dict[str, str]) -> dict[str, np.ndarray]:
    """PyTorch's Linear entries (`theirs.weight` [out, in], `theirs.bias`) as the DSL Linear `ours` keeps them."""
    for theirs, ours in renames.items():
        if f"{theirs}.weight" in state:
            state[f"{ours}.weight"] = np.asarray(state.pop(f"{theirs}.weight")).T
        if f"{theirs}.bias" in state:
            state[f"{ours}.bias"] = state.pop(f"{theirs}.bias")
    return state


class MultiHeadAttention(Module):
    """Scaled dot-product attention over [batch, seq, dim] with an optional key-padding mask: self-attention, or
    with `context` [batch, context_seq, dim] cross-attention (queries from x, keys and values from the context,
    the mask then over the context's positions)."""

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0):
        dim, num_heads = check_int(self, "dim", dim), check_int(self, "num_heads", num_heads)
        check_probability(self, "dropout", dropout)
        if dim % num_heads:
            raise OnnxkitError(f"MultiHeadAttention: dim {dim} is not divisible by num_heads {num_heads}")
        self.dim, self.num_heads, self.head_dim = dim, num_heads, dim // num_heads
        self.q, self.k, self.v = Linear(dim, dim, init_fn="xavier_uniform"), \
            Linear(dim, dim, init_fn="xavier_uniform"), Linear(dim, dim, init_fn="xavier_uniform")
        self.out = Linear(dim, dim, init_fn="xavier_uniform")
        self.dropout = Dropout(dropout)

    def _heads(self, x: Tensor) -> Tensor:
        """[b, s, dim] -> [b, heads, s, head_dim]."""
        return ops.transpose(ops.reshape(x, [0, 0, self.num_heads, self.head_dim]), [0, 2, 1, 3])

    def forward(self, x: Tensor, mask: Tensor | None = None, context: Tensor | None = None) -> Tensor:
        for name, t in (("x", x), ("context", context)):
            if t is not None and (not isinstance(t, Tensor) or t.ndim != 3 or t.shape[-1] != self.dim):
                got = list(t.shape) if isinstance(t, Tensor) else type(t).__name__
                raise OnnxkitError(f"{current_graph().where}: attention expects {name} [batch, seq, {self.dim}], "
                                   f"got {got}")
        source = x if context is None else context
        if all(isinstance(d, int) for d in (x.shape[0], source.shape[0])) and x.shape[0] != source.shape[0]:
            raise OnnxkitError(f"{current_graph().where}: attention's context has batch {source.shape[0]}, x has "
                               f"{x.shape[0]}; give one context per row of x")
        if mask is not None:
            self._check_mask(source, mask)
        q, k, v = self._heads(self.q(x)), self._heads(self.k(source)), self._heads(self.v(source))
        scores = ops.div(ops.matmul(q, ops.transpose(k, [0, 1, 3, 2])), math.sqrt(self.head_dim))
        if mask is not None:
            scores = ops.add(scores, mask_bias(mask, x.dtype))
        weights = self.dropout(ops.softmax(scores, axis=-1))
        ctx = ops.transpose(ops.matmul(weights, v), [0, 2, 1, 3])
        return self.out(ops.reshape(ctx, [0, 0, self.dim]))

    @staticmethod
    def _check_mask(keys: Tensor, mask: Tensor) -> None:
        """A keep-mask [batch, seq] over the keys' positions, 1 = token, 0 = padding (PyTorch's key_padding_mask
        is the other way round: True = ignore). A second tensor like x (PyTorch's attn(query, key) habit) built,
        and failed at run time."""
        shape = list(mask.shape) if isinstance(mask, Tensor) else None
        if shape is None or len(shape) != 2 or (isinstance(shape[1], int) and isinstance(keys.shape[1], int)
                                                and shape[1] != keys.shape[1]):
            raise OnnxkitError(
                f"{current_graph().where}: attention takes attn(x, mask) or attn(x, mask, context=...) with a mask "
                f"[batch, seq] over the keys (x's, or the context's), 1 = token, 0 = padding (PyTorch's "
                f"key_padding_mask is the reverse); got {shape or type(mask).__name__} beside keys "
                f"{list(keys.shape)}"
            )

    def pytorch_state(self, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """PyTorch's nn.MultiheadAttention entries as its `state_dict()` holds them: `in_proj_weight` [3 · dim, dim]
        and `in_proj_bias` split into q, k and v, `out_proj` is out, weights [out, in] transposed here (they were
        unknown weights). in_proj_weight given transposed (as a Linear's weight elsewhere) is refused."""
        state = dict(state)
        d = self.dim
        _check_pytorch_shapes(state, {"in_proj_weight": (3 * d, d), "out_proj.weight": (d, d)}, "MultiheadAttention")
        weight, bias = state.pop("in_proj_weight", None), state.pop("in_proj_bias", None)
        for i, part in enumerate("qkv"):
            if weight is not None:
                state[f"{part}.weight"] = np.asarray(weight)[i * d:(i + 1) * d].T
            if bias is not None:
                state[f"{part}.bias"] = np.asarray(bias)[i * d:(i + 1) * d]
        return _pytorch_linears(state, {"out_proj": "out"})

    def extra_repr(self) -> str:
        return f"dim={self.dim}, heads={self.num_heads}"


class FeedForward(Module):
    """Linear -> activation -> dropout -> Linear."""

    def __init__(self, dim: int, hidden: int, activation: str = "gelu", dropout: float = 0.0):
        dim, hidden = check_int(self, "dim", dim), check_int(self, "hidden", hidden)
        check_probability(self, "dropout", dropout)
        if activation not in ACTIVATIONS:
            raise OnnxkitError(f"unknown activation {activation!r}; choose from {', '.join(ACTIVATIONS)}")
        he = "kaiming_uniform"  # as before Linear's default became PyTorch's (untested there: kept)
        self.fc1, self.act = Linear(dim, hidden, init_fn=he), ACTIVATIONS[activation]()
        self.dropout = Dropout(dropout)
        self.fc2 = Linear(hidden, dim, init_fn=he)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.dropout(self.act(self.fc1(x))))


class TransformerEncoderLayer(Module):
    """PyTorch's `nn.TransformerEncoderLayer`, its arguments in its order with its defaults: self-attention and a
    feed-forward block (`dim_feedforward` wide), each with a residual, post-norm (BERT) or pre-norm (`norm_first`).
    Batch-first only: `batch_first=True` is required (PyTorch's default, False, reads [seq, batch, d_model]; taking
    such tensors as [batch, seq, d_model] would attend across the batch). Called as `layer(x, mask)`, `mask` a
    keep-mask [batch, seq] (1 = token: the reverse of PyTorch's src_key_padding_mask)."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1,
                 activation: str = "relu", layer_norm_eps: float = 1e-5, batch_first: bool = False,
                 norm_first: bool = False):
        d_model, nhead = check_int(self, "d_model", d_model), check_int(self, "nhead", nhead)
        dim_feedforward = check_int(self, "dim_feedforward", dim_feedforward)
        eps = check_number(self, "layer_norm_eps", layer_norm_eps, 0)
        check_probability(self, "dropout", dropout)
        if batch_first is not True:
            raise OnnxkitError("TransformerEncoderLayer: give batch_first=True (onnxkit's attention reads [batch, seq, "
                               "d_model]; PyTorch's default, False, is sequence-first)")
        if d_model % nhead:
            raise OnnxkitError(f"TransformerEncoderLayer: d_model {d_model} is not divisible by nhead {nhead}")
        self.norm_first = norm_first
        self.attn = MultiHeadAttention(d_model, nhead, dropout)
        self.norm1 = LayerNorm(d_model, eps)
        self.ff = FeedForward(d_model, dim_feedforward, activation, dropout)
        self.norm2 = LayerNorm(d_model, eps)
        self.dropout1, self.dropout2 = Dropout(dropout), Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if self.norm_first:
            x = ops.add(x, self.dropout1(self.attn(self.norm1(x), mask)))
            return ops.add(x, self.dropout2(self.ff(self.norm2(x))))
        x = self.norm1(ops.add(x, self.dropout1(self.attn(x, mask))))
        return self.norm2(ops.add(x, self.dropout2(self.ff(x))))

    def pytorch_state(self, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """PyTorch's names as its `state_dict()` holds them: `self_attn.*` is attn (MultiHeadAttention takes
        PyTorch's in_proj and out_proj), `linear1`/`linear2` are ff.fc1/fc2, their weights [out, in] transposed
        here (they were unknown weights). One given already transposed (as a Linear's weight elsewhere) is refused,
        so that a square out_proj is not taken the wrong way."""
        state = {"attn." + name.removeprefix("self_attn.") if name.startswith("self_attn.") else name: value
                 for name, value in state.items()}
        d, hidden = self.attn.dim, self.ff.fc1.weight.shape[1]
        _check_pytorch_shapes(state, {"linear1.weight": (hidden, d), "linear2.weight": (d, hidden)},
                              "TransformerEncoderLayer")
        return _pytorch_linears(state, {"linear1": "ff.fc1", "linear2": "ff.fc2"})

    def extra_repr(self) -> str:
        return "pre-norm" if self.norm_first else "post-norm"


class TransformerEncoder(Module):
    """PyTorch's `nn.TransformerEncoder(encoder_layer, num_layers, norm=None)`: `num_layers` copies of the layer
    (`layers.0`, ... as PyTorch names them, each starting from the given layer's weights, as PyTorch's clones), then
    `norm` if given. Called as `encoder(x, mask)`, the keep-mask of `TransformerEncoderLayer`."""

    def __init__(self, encoder_layer: TransformerEncoderLayer, num_layers: int, norm: Module | None = None,
                 enable_nested_tensor: bool = True, mask_check: bool = True):  # the last two: PyTorch's speed options
        if not isinstance(encoder_layer, TransformerEncoderLayer):
            raise OnnxkitError("TransformerEncoder takes a TransformerEncoderLayer, got "
                               f"{type(encoder_layer).__name__}")
        self.num_layers = check_int(self, "num_layers", num_layers)
        self.layers = ModuleList(copy.deepcopy(encoder_layer) for _ in range(self.num_layers))
        self.norm = norm

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        for layer in self.layers:
            x = layer(x, mask)
        return x if self.norm is None else self.norm(x)

    def extra_repr(self) -> str:
        return f"num_layers={self.num_layers}"


class MeanPool(Module):
    """Mean over the sequence of [batch, seq, dim], counting only unmasked tokens."""

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if mask is None:
            return ops.mean(x, [1])
        keep = ops.cast(ops.unsqueeze(mask, [2]), x.dtype)  # [b, s, 1]
        total = ops.sum(ops.mul(x, keep), [1])
        count = ops.clip(ops.sum(keep, [1]), min=1e-9)
        return ops.div(total, count)
