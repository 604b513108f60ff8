"""The onnxkit DSL: symbolic tensors, modules and layers that build ONNX graphs.

    from onnxkit import nn

    class MLP(nn.Module):
        def __init__(self):
            self.fc1, self.fc2 = nn.Linear(64, 32), nn.Linear(32, 10)
        def forward(self, x):
            return self.fc2(nn.ops.relu(self.fc1(x)))

    model = nn.build(MLP(), {"x": nn.Input(["batch", 64])}, output_names=["logits"])
"""

from onnxkit.nn import init, ops
from onnxkit.nn.activation import (
    CELU,
    ELU,
    GELU,
    SELU,
    Dropout,
    HardSigmoid,
    HardSwish,
    Identity,
    LeakyReLU,
    LogSoftmax,
    Mish,
    PReLU,
    ReLU,
    Sigmoid,
    SiLU,
    Softmax,
    Softplus,
    Tanh,
)
from onnxkit.nn.attention import (
    FeedForward,
    MeanPool,
    MultiHeadAttention,
    TransformerEncoder,
    TransformerEncoderLayer,
)
from onnxkit.nn.build import DEFAULT_OPSET, IR_VERSION, Input, UnusedLayers, build
from onnxkit.nn.conv import (
    AdaptiveAvgPool2d,
    AvgPool1d,
    AvgPool2d,
    Conv1d,
    Conv2d,
    ConvTranspose2d,
    Flatten,
    GlobalAvgPool2d,
    GlobalMaxPool2d,
    MaxPool1d,
    MaxPool2d,
    Upsample,
)
from onnxkit.nn.graph import Tensor
from onnxkit.nn.init import manual_seed
from onnxkit.nn.linear import Embedding, Linear
from onnxkit.nn.module import Buffer, Module, ModuleDict, ModuleList, Parameter, Sequential
from onnxkit.nn.norm import BatchNorm1d, BatchNorm2d, GroupNorm, InstanceNorm2d, LayerNorm
from onnxkit.nn.recurrent import GRU, LSTM

__all__ = [
    "AdaptiveAvgPool2d", "AvgPool1d", "AvgPool2d", "BatchNorm1d", "BatchNorm2d", "Buffer", "CELU", "Conv1d", "Conv2d",
    "ConvTranspose2d", "DEFAULT_OPSET", "Dropout", "ELU", "Embedding", "FeedForward", "Flatten", "GELU", "GRU",
    "GlobalAvgPool2d", "GlobalMaxPool2d", "GroupNorm", "HardSigmoid", "HardSwish", "IR_VERSION", "Identity", "Input",
    "InstanceNorm2d", "LSTM", "LayerNorm", "LeakyReLU", "Linear", "LogSoftmax", "MaxPool1d", "MaxPool2d", "MeanPool",
    "Mish", "Module", "ModuleDict", "ModuleList", "MultiHeadAttention", "PReLU", "Parameter", "ReLU", "SELU",
    "Sequential", "SiLU", "Sigmoid", "Softmax", "Softplus", "Tanh", "Tensor", "TransformerEncoder",
    "TransformerEncoderLayer", "UnusedLayers", "Upsample", "build", "init", "manual_seed", "ops",
]  # fmt: skip
