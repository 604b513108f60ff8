"""Training step time of PyTorch convolutional networks exported to ONNX, onnxkit against PyTorch,
on CIFAR-sized inputs (3 x 32 x 32, 10 classes), and ResNet-18 on ImageNet-sized ones (3 x 224 x 224).

Modules built in PyTorch and exported as users export them (TorchScript exporter, eval
mode, dynamic batch): a VGG-style stack (3x3 convolutions 3-32-32 / pool / 64-64 / pool / 128,
global average pool, linear), a small ResNet (a 3x3 stem to 32 channels, then basic blocks
of 32, 64 and 128 channels, the last two strided with 1x1 shortcuts, no BatchNorm: eval-mode
exports fold it away), `groupnorm`, a diffusion U-Net's residual blocks (GroupNorm of 8 groups,
SiLU, 3x3 Conv, twice) at 32, 64 and 128 channels between strided 3x3 Convs, and `resnet18`
(not run unless named), torchvision's ResNet-18 layout (a 7x7 stride-2 stem, a 3x3 stride-2 max
pool, two basic blocks each of 64, 128, 256 and 512 channels) with biased Convs in place of the
BatchNorms an eval export folds into them. The onnx backend
trains the export through `open_training`; PyTorch trains the same module from the same weights,
with `torch.optim.AdamW(fused=True)` at lr 1e-3 (AdamW's defaults otherwise), on the same random
batches (seeded), with the same threads.
Rounds alternate (tools/step_timing.py) and the summary prints each contender's median ms/step
and the min/median/max of the per-round ratio onnx / torch. `--check` first compares 10 steps'
losses (relative 1e-3); `--profile` adds per-op kernel times of the onnx backend's graphs.

    PYTHONPATH=/tmp/torchlib .venv/bin/python tools/bench_conv.py [--models vgg resnet groupnorm resnet18]
        [--batch-size 32] [--rounds 5] [--steps 20] [--check] [--profile] [--ab MODULE.CONSTANT=VALUE]

(ResNet-18 at 224 x 224 takes ~1.2 s a step at batch 16 on two cores: `--models resnet18 --batch-size 16
--rounds 3 --steps 3`.)
"""

from __future__ import annotations

import argparse
import io
import tempfile
import warnings
from pathlib import Path

import machine
import numpy as np
import onnx
from step_timing import (
    Setting,
    add_ab_option,
    backend_contender,
    check_same_computation,
    import_torch,
    print_summary,
    profile_onnx_backend,
    summarise,
    time_rounds,
    torch_contender,
    variant_contender,
)

LR = 1e-3
SHAPES = {"vgg": (3, 32, 32), "resnet": (3, 32, 32), "groupnorm": (3, 32, 32), "resnet18": (3, 224, 224)}
MODELS = tuple(SHAPES)
CIFAR = MODELS[:3]  # the models run when none are named
CLASSES = 10


def module(name: str):  # type: ignore[no-untyped-def]
    """A fresh PyTorch module `name` (seeded)."""
    import torch
    from torch import nn

    torch.manual_seed(0)

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
            self.shortcut = nn.Conv2d(cin, cout, 1, stride) if stride > 1 or cin != cout else nn.Identity()

        def forward(self, x):  # type: ignore[no-untyped-def]
            return torch.relu(self.conv2(torch.relu(self.conv1(x))) + self.shortcut(x))

    class NormBlock(nn.Module):  # a diffusion U-Net's residual block: GroupNorm, SiLU, Conv, twice
        def __init__(self, channels: int) -> None:
            super().__init__()
            self.norm1, self.conv1 = nn.GroupNorm(8, channels), nn.Conv2d(channels, channels, 3, padding=1)
            self.norm2, self.conv2 = nn.GroupNorm(8, channels), nn.Conv2d(channels, channels, 3, padding=1)

        def forward(self, x):  # type: ignore[no-untyped-def]
            silu = nn.functional.silu
            return x + self.conv2(silu(self.norm2(self.conv1(silu(self.norm1(x))))))

    if name == "resnet18":
        layers = [nn.Conv2d(3, 64, 7, 2, 3), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
        for cin, cout in ((64, 64), (64, 128), (128, 256), (256, 512)):
            layers += [Block(cin, cout, 1 if cin == cout else 2), Block(cout, cout, 1)]
        return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, CLASSES))
    head = [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, CLASSES)]
    if name == "groupnorm":
        return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), NormBlock(32), nn.Conv2d(32, 64, 3, 2, 1), NormBlock(64),
                             nn.Conv2d(64, 128, 3, 2, 1), NormBlock(128), *head)
    if name == "vgg":
        return nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), *head,
        )  # fmt: skip
    return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), Block(32, 32, 1), Block(32, 64, 2),
                         Block(64, 128, 2), *head)


def exported(net, shape: tuple[int, ...]) -> onnx.ModelProto:  # type: ignore[no-untyped-def]
    """`net` exported in eval mode with a dynamic batch axis (TorchScript exporter), for images of `shape`."""
    import torch

    buffer = io.BytesIO()
    net.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.zeros(2, *shape), buffer, input_names=["x"], output_names=["logits"],
                          dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
    return onnx.load_from_string(buffer.getvalue())


def batches(shape: tuple[int, ...], batch_size: int, steps: int) -> list[tuple[dict[str, np.ndarray], np.ndarray]]:
    rng = np.random.default_rng(0)
    return [({"x": rng.standard_normal((batch_size, *shape), dtype=np.float32)},
             rng.integers(0, CLASSES, batch_size)) for _ in range(steps)]


def contenders(name: str, work: Path, data: list, threads: int, settings: list[Setting]) -> list:
    import torch

    net = module(name)
    model = exported(net, SHAPES[name])
    out = [backend_contender("onnx", model, work, data, threads=threads, lr=LR, dropout=False)]
    if settings:
        variant = work.parent / f"{work.name}-ab"
        out.append(variant_contender(settings, model, variant, data, threads=threads, lr=LR, dropout=False))
    return [*out, torch_contender(net, data, lambda feeds: torch.from_numpy(feeds["x"]), lr=LR)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(CIFAR), choices=list(MODELS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=machine.count, default=20, help="steps per round")
    parser.add_argument("--rounds", type=machine.count, default=5)
    parser.add_argument("--batch-size", type=machine.count, default=32)
    parser.add_argument("--check", action="store_true", help="first compare 10 steps' losses")
    parser.add_argument("--profile", action="store_true", help="per-op kernel times of the onnx backend's graphs")
    add_ab_option(parser)
    args = parser.parse_args()
    print(machine.machine_line(), flush=True)
    torch = import_torch(args.threads)
    print(f"AdamW lr {LR:g}, batch {args.batch_size}, {args.threads} threads, {args.rounds} rounds x "
          f"{args.steps} steps; PyTorch {torch.__version__} (fused AdamW)")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            work, shape = Path(tmp) / name, SHAPES[name]
            print(f"{name}: images {shape}", flush=True)
            if args.check:
                check_same_computation(contenders(name, work / "check", batches(shape, args.batch_size, 10),
                                                  args.threads, args.ab),
                                       name)
            data = batches(shape, args.batch_size, args.steps)
            print_summary(name, summarise(time_rounds(contenders(name, work / "bench", data, args.threads, args.ab),
                                                      args.rounds)))
            if args.profile:
                print(profile_onnx_backend(exported(module(name), shape), work / "profile", data, threads=args.threads,
                                           lr=LR, dropout=False))


if __name__ == "__main__":
    machine.run(main)
