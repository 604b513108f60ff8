"""Whole torchvision architectures (random weights) exported to ONNX as users export them, differentiated
by onnxkit and trained by `onnxkit train MODEL.onnx --data FOLDER` with no other flag.

For each architecture (resnet18, mobilenet_v3_small, efficientnet_b0, squeezenet1_1, shufflenet_v2_x0_5,
regnet_y_400mf, densenet121, convnext_tiny, vit_b_16 at a small image size; lraspp_mobilenet_v3_large's
segmentation scores for gradients only) and each exporter (TorchScript
`dynamo=False`, dynamo), it prints:

- `ops`: the node count of the export users make (eval mode, the exporter's defaults, a dynamic batch);
- `grad`: onnxkit's gradient of sum(logits * R) with respect to every parameter, through onnxkit's
  training form (BatchNorm on batch statistics), against PyTorch autograd in float64, in train mode on
  the same weights and input, Dropout and stochastic depth at p=0: the largest over parameters of
  max |ours - autograd's| / max |autograd's|, both of that parameter (floored at 1e-3 of the largest
  gradient element of the model, so a parameter whose gradient is rounding noise, a bias before a
  BatchNorm, does not count); `fp32`: the same for autograd in float32, the rounding any float32
  gradient carries (BatchNorm over 4 images of 1x1 pixels, at the end of a ResNet at 32x32, amplifies
  it, so the check runs at 8 images of 64x64 by default). This export keeps BatchNorm a node
  (TorchScript `TrainingMode.PRESERVE`, dynamo `optimize=False`), so its weights are PyTorch's (by
  name, or by value: TorchScript's transposed copies of a Linear's weight);
- `s`, `test`: the seconds and test accuracy of `onnxkit train model.onnx --data FOLDER` on the users'
  export, FOLDER a synthetic folder of class folders (coloured discs, squares and triangles over noise,
  PNG and JPEG of mixed sizes; onnxkit resizes them to the model's input), or the error line it stopped
  with; then `onnxkit eval`, `predict` on one image and `quantize` on the trained model (`ok` or the
  error).

    PYTHONPATH=/tmp/torchlib:/tmp/osl .venv/bin/python tools/torchvision_exports.py [--only resnet18]
        [--exporters torchscript dynamo] [--size 32] [--no-train] [--epochs N] [--keep DIR]

Needs torch, torchvision (and onnxscript for the dynamo exporter) outside the project environment.
"""

from __future__ import annotations

import argparse
import copy
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from step_timing import import_torch_exporter
from torch_side_by_side import export

from onnxkit.autodiff.check import run_gradients, with_projection_loss
from onnxkit.graph_walks import value_types
from onnxkit.train.training_form import find_parameters, trainable_form, training_form

ROOT = Path(__file__).resolve().parents[1]
ONNXKIT = [sys.executable, "-m", "onnxkit"]  # this checkout's, without the torch paths (as a user runs it)
CLEAN_ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
CLASSES = ("disc", "square", "triangle")
SEGMENTATION = "lraspp_mobilenet_v3_large"


def architectures():  # type: ignore[no-untyped-def]
    """name -> factory of the torchvision model for images of a size, 3 classes, random weights (a segmentation
    model's per-pixel scores: its gradients are checked, it is not trained on the class folders)."""
    from torch import nn
    from torchvision import models

    class Scores(nn.Module):
        """The "out" entry of a torchvision segmentation model's dict."""

        def __init__(self, model: nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, x):  # type: ignore[no-untyped-def]
            return self.model(x)["out"]

    return {
        "resnet18": lambda size: models.resnet18(num_classes=3),
        "mobilenet_v3_small": lambda size: models.mobilenet_v3_small(num_classes=3),
        "efficientnet_b0": lambda size: models.efficientnet_b0(num_classes=3),
        "squeezenet1_1": lambda size: models.squeezenet1_1(num_classes=3),
        "shufflenet_v2_x0_5": lambda size: models.shufflenet_v2_x0_5(num_classes=3),
        "regnet_y_400mf": lambda size: models.regnet_y_400mf(num_classes=3),
        "densenet121": lambda size: models.densenet121(num_classes=3),
        "convnext_tiny": lambda size: models.convnext_tiny(num_classes=3),
        "vit_b_16": lambda size: models.vit_b_16(num_classes=3, image_size=size),
        SEGMENTATION: lambda size: Scores(models.segmentation.lraspp_mobilenet_v3_large(num_classes=3,
                                                                                        weights_backbone=None)),
    }


def write_folder(root: Path, per_class: int, seed: int = 0) -> None:
    """Class folders of coloured shapes over noise, PNG and JPEG, 24 to 96 pixels a side."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    for label in CLASSES:
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            w, h = (int(v) for v in rng.integers(24, 97, 2))
            pixels = rng.integers(0, 90, (h, w, 3), dtype=np.uint8)
            image = Image.fromarray(pixels)
            draw = ImageDraw.Draw(image)
            side = min(w, h) * rng.uniform(0.4, 0.8)
            cx, cy = w / 2 + rng.uniform(-0.15, 0.15) * w, h / 2 + rng.uniform(-0.15, 0.15) * h
            box = [cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2]
            color = tuple(int(v) for v in rng.integers(100, 256, 3))
            if label == "disc":
                draw.ellipse(box, fill=color)
            elif label == "square":
                draw.rectangle(box, fill=color)
            else:
                draw.polygon([(box[0], box[3]), (box[2], box[3]), (cx, box[1])], fill=color)
            image.save(root / label / f"{i}.{'png' if i % 2 else 'jpg'}")


def without_randomness(module) -> None:  # type: ignore[no-untyped-def]
    """Dropout and stochastic depth at p=0, so train mode is deterministic but for BatchNorm's batch statistics."""
    from torch import nn
    from torchvision.ops import StochasticDepth

    for m in module.modules():
        if isinstance(m, nn.Dropout | StochasticDepth):
            m.p = 0.0


def gradient_difference(module, example, model: onnx.ModelProto) -> tuple[float, float, list[str]]:  # type: ignore[no-untyped-def]
    """(onnxkit's largest relative difference over the parameters from autograd in float64, that of autograd in
    float32, onnxkit's parameters no PyTorch parameter holds) for the loss sum(logits * R), BatchNorm on batch
    statistics."""
    model, _ = trainable_form(model)
    for dim, size in zip(model.graph.input[0].type.tensor_type.shape.dim, example.shape, strict=True):
        dim.ClearField("dim_param")
        dim.dim_value = size
    for dim, size in zip(model.graph.output[0].type.tensor_type.shape.dim, module(example).shape, strict=True):
        dim.ClearField("dim_param")
        dim.dim_value = size
    found = find_parameters(model)
    types = value_types(model)
    form = training_form(model, types[model.graph.output[0].name], updated_buffers=found.buffers, types=types,
                         dropout=False)
    projected = with_projection_loss(form)
    weights = next(onnx.numpy_helper.to_array(t) for t in projected.graph.initializer if t.name.endswith(".projection"))
    values = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    names = torch_names(module, {name: values[name] for name in found.parameters})
    ours = {names[n].removesuffix(".T"): g.T if names[n].endswith(".T") else g
            for n, g in run_gradients(projected, {"x": example.numpy()}, found.parameters).items() if n in names}
    theirs = autograd(module, example, weights)
    exact = autograd(copy.deepcopy(module).double(), example.double(), weights)
    return (largest_difference(ours, exact), largest_difference(theirs, exact),
            sorted(set(found.parameters) - set(names)))


def torch_names(module, values: dict[str, np.ndarray]) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """ONNX parameter -> the PyTorch parameter it is: by name and shape, else the one of equal values (TorchScript
    writes a Linear over tokens as a MatMul of its transposed weight, `onnx::MatMul_N`: that one's name + '.T')."""
    params = {n: p.detach().numpy() for n, p in module.named_parameters()}
    names = {}
    for name, value in values.items():
        if name in params and params[name].shape == value.shape:
            names[name] = name
            continue
        match = next((f"{n}{suffix}" for n, p in params.items() for suffix, q in (("", p), (".T", p.T))
                      if q.shape == value.shape and np.array_equal(q, value)), None)
        if match:
            names[name] = match
    return names


def autograd(module, example, weights: np.ndarray) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    """PyTorch's gradients of sum(module(example) * weights) in train mode, by parameter name."""
    import torch

    module.train()
    without_randomness(module)
    module.zero_grad()
    (module(example) * torch.from_numpy(weights.copy()).to(example.dtype)).sum().backward()
    return {n: p.grad.double().numpy() for n, p in module.named_parameters() if p.grad is not None}


def largest_difference(ours: dict[str, np.ndarray], exact: dict[str, np.ndarray]) -> float:
    """The largest over the parameters both have of max |ours - exact| / max |exact| (floored at 1e-3 of the
    largest element of all of `exact`)."""
    floor = 1e-3 * max(float(np.abs(g).max()) for g in exact.values())
    return max(float(np.abs(grad - exact[name]).max()) / max(floor, float(np.abs(exact[name]).max()))
               for name, grad in ours.items() if name in exact)


def command(args: list[str], timeout: float) -> tuple[float, str, str]:
    """(seconds, 'ok' or the error line, stdout) of `onnxkit ARGS`."""
    began = time.perf_counter()
    try:
        done = subprocess.run([*ONNXKIT, *args], capture_output=True, text=True, env=CLEAN_ENV, timeout=timeout)
    except subprocess.TimeoutExpired:
        return time.perf_counter() - began, f"timed out after {timeout:.0f} s", ""
    seconds = time.perf_counter() - began
    if done.returncode:
        lines = [line for line in done.stderr.splitlines() if line.startswith("error")] or done.stderr.splitlines()
        return seconds, (lines[-1] if lines else f"exit {done.returncode}")[:160], done.stdout
    return seconds, "ok", done.stdout


def train_and_use(path: Path, folder: Path, timeout: float, epochs: int | None) -> str:
    """`onnxkit train` with no flag but the data (and `epochs`), then eval, predict and quantize: one summary."""
    run = path.parent / "run"
    flags = ["--epochs", str(epochs)] if epochs else []
    seconds, status, _ = command(["train", str(path), "--data", str(folder), "-o", str(run), *flags], timeout)
    if status != "ok":
        return f"{seconds:6.0f}  {status}"
    trained = run / "model.onnx"
    _, evaluated, out = command(["eval", str(trained), "--data", str(folder), "--json"], 600)
    accuracy = "?"
    if evaluated == "ok":
        import json

        report = json.loads(out)
        accuracy = f"{report.get('test', report).get('accuracy', float('nan')):.3f}"
    image = next((folder / CLASSES[0]).iterdir())
    _, predicted, _ = command(["predict", str(trained), str(image)], 300)
    _, quantized, _ = command(["quantize", str(trained), "-o", str(path.parent / "q.onnx"), "--no-latency"], 600)
    return f"{seconds:6.0f}  {accuracy}  eval {evaluated}, predict {predicted}, quantize {quantized}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", help="architecture names (default: all)")
    parser.add_argument("--exporters", nargs="*", default=["torchscript", "dynamo"])
    parser.add_argument("--size", type=int, default=32, help="image height and width of the export")
    parser.add_argument("--grad-size", type=int, default=64, help="image height and width of the gradient check")
    parser.add_argument("--grad-batch", type=int, default=8, help="images in the gradient check")
    parser.add_argument("--per-class", type=int, default=100, help="images a class in the folder")
    parser.add_argument("--keep", help="an empty folder to keep the image folder, exports and runs in")
    parser.add_argument("--no-train", action="store_true", help="gradients only")
    parser.add_argument("--no-grad", action="store_true", help="training only")
    parser.add_argument("--train-timeout", type=float, default=1800)
    parser.add_argument("--epochs", type=int, help="pass --epochs to onnxkit train (default: no flag)")
    args = parser.parse_args()
    torch = import_torch_exporter()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(args.keep or scratch)
        folder = root / "shapes"
        write_folder(folder, args.per_class)
        print(f"{'architecture':19s} {'exporter':11s} {'ops':>5s} {'grad':>8s} {'fp32':>8s}  {'s':>6s}  test")
        for name, make in architectures().items():
            if args.only and name not in args.only:
                continue
            for exporter in args.exporters:
                torch.manual_seed(0)
                module = make(args.grad_size).eval()
                example = torch.rand(args.grad_batch, 3, args.grad_size, args.grad_size)
                work = root / f"{name}-{exporter}"
                work.mkdir()
                try:
                    export(module, example, exporter == "dynamo", work / "kept.onnx", keep_bn=True)
                    export(make(args.size).eval(), torch.rand(4, 3, args.size, args.size), exporter == "dynamo",
                           work / "model.onnx")
                except Exception as e:  # noqa: BLE001 - the exporter's own failure, reported
                    print(f"{name:19s} {exporter:11s} export failed: {str(e).splitlines()[0][:100]}", flush=True)
                    continue
                ops = len(onnx.load(work / "model.onnx", load_external_data=False).graph.node)
                grad = f"{'-':>8s} {'-':>8s}"
                try:
                    if not args.no_grad:
                        worst, noise, unmatched = gradient_difference(module, example, onnx.load(work / "kept.onnx"))
                        grad = f"{worst:8.1e} {noise:8.1e}" + (f" (no match: {unmatched[:3]})" if unmatched else "")
                except Exception as e:  # noqa: BLE001 - reported in the table
                    grad = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:120]}"
                trained = "" if args.no_train or name == SEGMENTATION else train_and_use(
                    work / "model.onnx", folder, args.train_timeout, args.epochs)
                print(f"{name:19s} {exporter:11s} {ops:5d} {grad}  {trained}", flush=True)


if __name__ == "__main__":
    main()
