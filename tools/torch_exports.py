"""PyTorch modules exported to ONNX (TorchScript and dynamo exporters), differentiated by onnxkit
and trained by `fit`.

For each module (layers whose exports need the rarer gradient rules: reflection and replication
padding, PixelShuffle, cumsum, topk / sort, prod, triu, scatter_add, slice assignment, bicubic
interpolation, masked attention, a spatial transformer, ...; then layers as users write them:
a Transformer encoder layer, attention, LSTM / GRU, BatchNorm, GroupNorm, adaptive pooling,
upsampling, transposed and depthwise convolutions, a LogSoftmax output, ...) and each exporter,
it prints:

- `grad`: the largest difference between onnxkit's gradient of sum(output * R) with respect to
  the input (its gradient graph, run on ONNX Runtime) and PyTorch autograd's, relative to the
  largest gradient element (the TorchScript export only: it keeps the module's weights as they are);
- `test`: test accuracy after `fit(model, data, epochs=N)` with no other settings
  (digits for flat inputs, digits-images for images), or the one-line error it stopped with.

    PYTHONPATH=/tmp/torchlib:/tmp/osl .venv/bin/python tools/torch_exports.py [--epochs 15] [--only flip topk]

Needs torch (and onnxscript for the dynamo exporter) outside the project environment.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
from step_timing import import_torch_exporter

from onnxkit.autodiff.check import run_gradients, with_projection_loss
from onnxkit.errors import OnnxkitError
from onnxkit.train import fit


def modules():  # type: ignore[no-untyped-def]
    """name -> (module factory, whether it takes 1x8x8 images rather than 64 values)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Flat(nn.Module):
        """64 values -> hidden (Linear) -> `middle` -> Linear -> 10 logits."""

        def __init__(self, middle, hidden: int = 32, width: int | None = None) -> None:
            super().__init__()
            self.first, self.middle = nn.Linear(64, hidden), middle
            self.last = nn.Linear(width or hidden, 10)

        def forward(self, x):  # type: ignore[no-untyped-def]
            return self.last(self.middle(self.first(x)))

    class Image(nn.Module):
        """1x8x8 -> `middle` (to [N, C, H, W]) -> flatten -> Linear -> 10 logits."""

        def __init__(self, middle, features: int) -> None:
            super().__init__()
            self.middle, self.last = middle, nn.Linear(features, 10)

        def forward(self, x):  # type: ignore[no-untyped-def]
            return self.last(self.middle(x).flatten(1))

    class Lambda(nn.Module):
        def __init__(self, function) -> None:  # type: ignore[no-untyped-def]
            super().__init__()
            self.function = function

        def forward(self, x):  # type: ignore[no-untyped-def]
            return self.function(x)

    class SliceAssign(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.side = nn.Linear(32, 8)

        def forward(self, h):  # type: ignore[no-untyped-def]
            side = torch.tanh(self.side(h))
            h = h.clone()
            h[:, :8] = side
            return h

    class MaskedAttention(nn.Module):
        def forward(self, h):  # type: ignore[no-untyped-def]
            t = h.reshape(-1, 8, 4)
            scores = (t @ t.transpose(1, 2)).masked_fill(torch.ones(8, 8).triu(1).bool(), float("-inf"))
            return (scores.softmax(-1) @ t).flatten(1)

    class SpatialTransformer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.theta = nn.Conv2d(1, 4, 3, padding=1), nn.Linear(64, 6)

        def forward(self, x):  # type: ignore[no-untyped-def]
            theta = self.theta(x.flatten(1)).reshape(-1, 2, 3) * 0.1 + torch.tensor([[1.0, 0, 0], [0, 1.0, 0]])
            grid = F.affine_grid(theta, [x.shape[0], 4, 8, 8], align_corners=False)
            return F.grid_sample(self.conv(x), grid, align_corners=False)

    class Tokens(nn.Module):
        """64 values as 8 tokens of 8 -> 16 features each (Linear) -> `middle` -> flatten -> Linear -> 10 logits."""

        def __init__(self, middle, features: int) -> None:  # type: ignore[no-untyped-def]
            super().__init__()
            self.embed, self.middle, self.last = nn.Linear(8, 16), middle, nn.Linear(features, 10)

        def forward(self, x):  # type: ignore[no-untyped-def]
            return self.last(self.middle(self.embed(x.reshape(-1, 8, 8))).flatten(1))

    class First(nn.Module):
        """The first output of a module that returns a tuple (attention, LSTM, GRU)."""

        def __init__(self, module, *inputs: int) -> None:  # type: ignore[no-untyped-def]
            super().__init__()
            self.module, self.copies = module, max(1, len(inputs))

        def forward(self, x):  # type: ignore[no-untyped-def]
            return self.module(*[x] * self.copies)[0]

    index = torch.arange(32) % 8
    return {
        "ReflectionPad2d": (lambda: Image(nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(1, 8, 3), nn.ReLU()), 512),
                            True),
        "ReplicationPad2d": (lambda: Image(nn.Sequential(nn.ReplicationPad2d(1), nn.Conv2d(1, 8, 3), nn.ReLU()), 512),
                             True),
        "PixelShuffle": (lambda: Image(nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.PixelShuffle(2)), 1024), True),
        "bicubic": (lambda: Image(nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), Lambda(
            lambda z: F.interpolate(z, scale_factor=2, mode="bicubic", align_corners=False))), 256), True),
        "spatial transformer": (lambda: Image(SpatialTransformer(), 256), True),
        "cumsum": (lambda: Flat(Lambda(lambda h: torch.cumsum(h, dim=1))), False),
        "topk": (lambda: Flat(Lambda(lambda h: torch.topk(h, 8, dim=1).values), width=8), False),
        "sort": (lambda: Flat(Lambda(lambda h: torch.sort(h, dim=1).values)), False),
        "prod": (lambda: Flat(Lambda(lambda h: torch.sigmoid(h).reshape(-1, 16, 2).prod(dim=2)), width=16), False),
        "triu": (lambda: Flat(Lambda(lambda h: torch.triu(h.reshape(-1, 8, 8)).flatten(1)), hidden=64), False),
        "scatter_add": (lambda: Flat(Lambda(lambda h: torch.zeros(h.shape[0], 8).scatter_add(
            1, index.expand(h.shape[0], 32), h)), width=8), False),
        "slice assignment": (lambda: Flat(SliceAssign()), False),
        "masked attention": (lambda: Flat(MaskedAttention()), False),
        "flip": (lambda: Flat(Lambda(lambda h: torch.flip(h, dims=[1]))), False),
        # layers as users write them
        "TransformerEncoderLayer": (lambda: Tokens(nn.TransformerEncoderLayer(16, 4, 32, batch_first=True), 128),
                                    False),
        "MultiheadAttention": (lambda: Tokens(First(nn.MultiheadAttention(16, 4, batch_first=True), 1, 2, 3), 128),
                               False),
        "LSTM": (lambda: Tokens(First(nn.LSTM(16, 16, batch_first=True)), 128), False),
        "bidirectional LSTM": (lambda: Tokens(First(nn.LSTM(16, 16, batch_first=True, bidirectional=True)), 256),
                               False),
        "GRU, 2 layers": (lambda: Tokens(First(nn.GRU(16, 16, num_layers=2, batch_first=True)), 128), False),
        "Conv1d": (lambda: Tokens(nn.Sequential(Lambda(lambda t: t.transpose(1, 2)), nn.Conv1d(16, 16, 3, padding=1),
                                                nn.ReLU()), 128), False),
        "AdaptiveAvgPool2d": (lambda: Image(nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),
                                                          nn.AdaptiveAvgPool2d(2)), 32), True),
        "AdaptiveMaxPool2d": (lambda: Image(nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),
                                                          nn.AdaptiveMaxPool2d(2)), 32), True),
        "BatchNorm2d block": (lambda: Image(nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2)), 128), True),
        "Upsample nearest": (lambda: Image(nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Upsample(scale_factor=2),
                                                         nn.Conv2d(4, 4, 3, stride=2, padding=1), nn.ReLU()), 256),
                             True),
        "bilinear": (lambda: Image(nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), Lambda(
            lambda z: F.interpolate(z, scale_factor=2, mode="bilinear")), nn.MaxPool2d(2)), 256), True),
        "GroupNorm, SiLU": (lambda: Image(nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.GroupNorm(2, 8), nn.SiLU(),
                                                        nn.AvgPool2d(2)), 128), True),
        "depthwise, Hardswish": (lambda: Image(nn.Sequential(nn.Conv2d(1, 8, 3, padding=1),
                                                             nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Hardswish()),
                                               512), True),
        "dilated, ELU": (lambda: Image(nn.Sequential(nn.Conv2d(1, 8, 3, padding=2, dilation=2), nn.ELU()), 512), True),
        "ConvTranspose2d": (lambda: Image(nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1),
                                                        nn.ConvTranspose2d(4, 4, 2, stride=2), nn.LeakyReLU()), 256),
                            True),
        "LayerNorm, tanh GELU": (lambda: Flat(nn.Sequential(nn.LayerNorm(32), nn.GELU(approximate="tanh"))), False),
        "F.normalize": (lambda: Flat(Lambda(lambda h: F.normalize(h, dim=-1) * 5)), False),
        "LogSoftmax output": (lambda: Lambda(nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10),
                                                           nn.LogSoftmax(-1))), False),  # forward(x), as dynamo needs
        "einsum outer": (lambda: Flat(Lambda(lambda h: torch.einsum("bi,bj->bij", h[:, :4], h[:, :8]).flatten(1))),
                         False),
        "masked_fill, clamp": (lambda: Flat(Lambda(lambda h: h.masked_fill(h < -0.5, 0.0).clamp(-2, 2))), False),
        "Softplus, Mish, PReLU": (lambda: Flat(nn.Sequential(nn.Softplus(), nn.Mish(), nn.PReLU())), False),
        "std": (lambda: Flat(Lambda(lambda h: (h - h.mean(-1, keepdim=True)) / (h.std(-1, keepdim=True) + 1e-3))),
                False),
        "amax, amin": (lambda: Flat(Lambda(lambda h: torch.cat(
            [h, h.amax(-1, keepdim=True).expand_as(h) - h.amin(-1, keepdim=True)], -1)), width=64), False),
        "cosine_similarity": (lambda: Flat(Lambda(lambda h: torch.cat(
            [F.cosine_similarity(h[:, :16], h[:, 16:], dim=-1)[:, None], h[:, 1:]], -1))), False),
    }


def export(module, example, dynamo: bool) -> onnx.ModelProto:  # type: ignore[no-untyped-def]
    import torch

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            program = torch.onnx.export(module, (example,), input_names=["x"], output_names=["logits"],
                                        dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=4096)}},
                                        dynamo=True, verbose=False)
            return program.model_proto
        torch.onnx.export(module, (example,), buffer, input_names=["x"], output_names=["logits"], opset_version=20,
                          dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
    return onnx.load_from_string(buffer.getvalue())


def gradient_difference(module, example, model: onnx.ModelProto) -> float:  # type: ignore[no-untyped-def]
    """max |onnxkit's d/dx - autograd's| / max |autograd's| for the loss sum(output * R)."""
    import torch

    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for dim, size in zip(fixed.graph.input[0].type.tensor_type.shape.dim, example.shape, strict=True):
        dim.dim_value = size  # the check needs static output dims
    for dim, size in zip(fixed.graph.output[0].type.tensor_type.shape.dim, (example.shape[0], 10), strict=True):
        dim.dim_value = size
    projected = with_projection_loss(fixed)
    weights = next(onnx.numpy_helper.to_array(t) for t in projected.graph.initializer if t.name.endswith(".projection"))
    ours = run_gradients(projected, {"x": example.numpy()}, ["x"])["x"]
    x = example.clone().requires_grad_(True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # grid_sample's note on align_corners
        (module(x) * torch.from_numpy(weights)).sum().backward()
    theirs = x.grad.numpy()
    return float(np.abs(ours - theirs).max() / max(1e-12, float(np.abs(theirs).max())))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--only", nargs="*", help="module names (default: all)")
    args = parser.parse_args()
    torch = import_torch_exporter()

    print(f"{'module':24s} {'exporter':11s} {'grad':>9s}  test")
    for name, (make, image) in modules().items():
        if args.only and name not in args.only:
            continue
        for dynamo in (False, True):
            torch.manual_seed(0)
            module = make().eval()
            example = torch.rand(4, 1, 8, 8) if image else torch.rand(4, 64)
            exporter = "dynamo" if dynamo else "torchscript"
            try:
                model = export(module, example, dynamo)
            except Exception as e:  # noqa: BLE001 - the exporter's own failure, reported
                print(f"{name:24s} {exporter:11s} {'':>9s}  export failed: {str(e).splitlines()[0][:80]}")
                continue
            grad = f"{gradient_difference(module, example, model):9.1e}" if not dynamo else f"{'':>9s}"
            with tempfile.TemporaryDirectory() as folder:
                try:
                    result = fit(model, "digits-images" if image else "digits", Path(folder) / "run",
                                 epochs=args.epochs, quiet=True)
                    test = f"{result.metrics['test']['accuracy']:.4f}"
                except OnnxkitError as e:
                    test = f"error: {e}"
            print(f"{name:24s} {exporter:11s} {grad}  {test}")


if __name__ == "__main__":
    main()
