"""Dense layers: `Linear` (MatMul with an [in, out] weight, plus Add) and `Embedding` (Gather)."""

from __future__ import annotations

import math

from onnxkit.errors import OnnxkitError
from onnxkit.metadata_keys import PADDING_ROW_KEY
from onnxkit.nn import init, ops
from onnxkit.nn.graph import Tensor, current_graph
from onnxkit.nn.module import Module, Parameter, check_int, check_number


class Linear(Module):
    """y = x @ weight + bias, weight [in, out].

    MatMul + Add rather than Gemm: dynamic int8 and 4-bit quantization only
    handle MatMul, and it works on inputs of any rank.

    By default weight and bias start U(±1/√in_features), as torch.nn.Linear's do; with another
    `init_fn` (a name in `nn.init`) the weight is drawn by it and the bias starts at zero. He's
    U(±√(6/in)), the default before, is 2.4 times wider, made for layers a ReLU follows; on every
    layer of a plain MLP it cost 0.05-0.2 R² on scikit-learn's regressions (make_regression with 200
    rows: 0.80 where the PyTorch start reaches 0.96; tools/sweep_sklearn.py).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 init_fn: str = "pytorch_uniform"):
        in_features = check_int(self, "in_features", in_features)
        out_features = check_int(self, "out_features", out_features)
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(init.get(init_fn)((in_features, out_features)))
        self.bias = None
        if bias:  # PyTorch's bias is drawn after its weight, with the same bound
            like_pytorch = init_fn == "pytorch_uniform"
            self.bias = Parameter(init.uniform((out_features,), 1 / math.sqrt(in_features)) if like_pytorch
                                  else init.zeros((out_features,)))

    def forward(self, x: Tensor) -> Tensor:
        y = ops.matmul(x, self.weight)
        return ops.add(y, self.bias) if self.bias is not None else y

    def extra_repr(self) -> str:
        return f"{self.in_features} -> {self.out_features}, bias={self.bias is not None}"


class Embedding(Module):
    """Look up rows of a [num_embeddings, dim] table by integer ids: torch.nn.Embedding's first three arguments,
    in its order. The table starts from N(0, std²), std 0.02 (BERT's; PyTorch's is 1).

    With `padding_idx`, as torch.nn.Embedding's: that row starts at zero and its lookups send it
    no gradient (a padding token's row stays as it is; other reads of the table, a tied output
    layer, still train it)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None, *,
                 std: float = 0.02):
        num_embeddings = check_int(self, "num_embeddings", num_embeddings)
        embedding_dim, std = check_int(self, "embedding_dim", embedding_dim), check_number(self, "std", std, 0)
        if padding_idx is not None:
            padding_idx = check_int(self, "padding_idx", padding_idx, minimum=None)
            if not -num_embeddings <= padding_idx < num_embeddings:
                raise OnnxkitError(f"Embedding: padding_idx must be in [-{num_embeddings}, {num_embeddings}), "
                                   f"got {padding_idx}")
            padding_idx %= num_embeddings
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx
        self.weight = Parameter(init.normal((num_embeddings, embedding_dim), std=std))
        if padding_idx is not None:
            self.weight.value[padding_idx] = 0

    def forward(self, ids: Tensor) -> Tensor:
        rows = ops.gather(self.weight, ids)
        if self.padding_idx is not None:
            current_graph().mark(rows, PADDING_ROW_KEY, str(self.padding_idx))
        return rows

    def extra_repr(self) -> str:
        padding = f", padding_idx={self.padding_idx}" if self.padding_idx is not None else ""
        return f"{self.num_embeddings}, {self.embedding_dim}{padding}"
