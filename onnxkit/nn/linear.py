"""Dense layers: `Linear` (MatMul with an [in, out] weight, plus Add) and `Embedding` (Gather)."""

from __future__ import annotations

from onnxkit.nn import init, ops
from onnxkit.nn.graph import Tensor
from onnxkit.nn.module import Module, Parameter


class Linear(Module):
    """y = x @ weight + bias, weight [in, out].

    MatMul + Add rather than Gemm: dynamic int8 and 4-bit quantization only
    handle MatMul, and it works on inputs of any rank.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 init_fn: str = "kaiming_uniform"):
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(init.get(init_fn)((in_features, out_features)))
        self.bias = Parameter(init.zeros((out_features,))) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        y = ops.matmul(x, self.weight)
        return ops.add(y, self.bias) if self.bias is not None else y

    def extra_repr(self) -> str:
        return f"{self.in_features} -> {self.out_features}, bias={self.bias is not None}"


class Embedding(Module):
    """Look up rows of a [num_embeddings, dim] table by integer ids."""

    def __init__(self, num_embeddings: int, embedding_dim: int, std: float = 0.02):
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.weight = Parameter(init.normal((num_embeddings, embedding_dim), std=std))

    def forward(self, ids: Tensor) -> Tensor:
        return ops.gather(self.weight, ids)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}"
