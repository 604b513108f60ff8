"""Common PyTorch classifiers exported to ONNX and trained by `onnxkit train model.onnx --data DATA`
beside the same module, from the same initial weights, trained in PyTorch with the same recipe.

For each module (a small ResNet with BatchNorm, a VGG-style CNN with Dropout, a tiny ViT, a 1-D
CNN, an LSTM and a GRU over digits' rows, an MLP with BatchNorm1d and Dropout, MLPs ending in
Softmax and in LogSoftmax) and each exporter (TorchScript `dynamo=False`, dynamo), it:

- exports the module in eval mode with a dynamic batch axis, as users do;
- runs `onnxkit train model.onnx --data DATA -o run` (no other flag; `--recipe` adds digits-cnn's
  recipe before session 39, without its label smoothing, which the PyTorch side has no flag for here:
  `--epochs 40 --batch-size 128 --lr 0.01 --schedule cosine --warmup 0.05`);
- trains a copy of the module in PyTorch from the same weights with what that run used: AdamW
  (torch's defaults, weight decay 0.01), the learning rate, batch size, schedule and number of
  epochs run.json records, onnxkit's own split (`load_dataset(data, seed=0)`) and shuffled batches
  (`Split.epochs` with the seeds the loop draws), validation loss after each epoch, early stopping
  with the run's patience and the best epoch's weights kept;
- prints test accuracy and the seconds a training epoch took (steps only) on both sides, and
  checks that the trained ONNX model, its trained weights loaded back into the module, gives
  PyTorch's eval-mode outputs (`load`: the largest difference, or the weights it could not map),
  and that `onnxkit eval` reports the accuracy the model scores on the test split.

    PYTHONPATH=/tmp/torchlib:/tmp/osl .venv/bin/python tools/torch_side_by_side.py [--only resnet vit]
        [--exporters torchscript dynamo] [--seeds 0 1 2] [--recipe] [--keep-bn] [--keep DIR]

`--keep-bn` exports so that BatchNorm stays a node of its own (TorchScript TrainingMode.PRESERVE,
dynamo optimize=False): in eval mode both exporters fold it into the layer before it, and drop
Dropout, so the export trains as a network without them. PyTorch runs on one thread (`--torch-threads`):
two OpenMP threads on a busy 2-core machine took 300 ms for an MLP step. `s/ep`: the median seconds of
a training epoch (steps only), onnxkit's from metrics.jsonl.

Needs torch (and onnxscript for the dynamo exporter) outside the project environment.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from types import ModuleType

import machine
import numpy as np
import onnx
import onnxruntime as ort
from step_timing import import_torch_exporter

from onnxkit.data import load_dataset
from onnxkit.train.schedules import Schedule, warmup_steps

ROOT = Path(__file__).resolve().parents[1]
ONNXKIT = [sys.executable, "-m", "onnxkit"]  # this checkout's, run without the torch paths (as a user runs it)
CLEAN_ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
RECIPE = ["--epochs", "40", "--batch-size", "128", "--lr", "0.01", "--schedule", "cosine", "--warmup", "0.05"]


def modules():  # type: ignore[no-untyped-def]
    """name -> (module factory, dataset, the module's final op: None, 'softmax' or 'log_softmax')."""
    import torch
    from torch import nn

    class BasicBlock(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = None
            if stride != 1 or cin != cout:
                self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):  # type: ignore[no-untyped-def]
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return self.relu(out + identity)

    class ResNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(1, 16, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(16)
            self.relu = nn.ReLU(inplace=True)
            self.layer1 = nn.Sequential(BasicBlock(16, 16), BasicBlock(16, 16))
            self.layer2 = nn.Sequential(BasicBlock(16, 32, 2), BasicBlock(32, 32))
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(32, 10)

        def forward(self, x):  # type: ignore[no-untyped-def]
            x = self.relu(self.bn1(self.conv1(x)))
            x = self.layer2(self.layer1(x))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    class VGG(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(32, 32, 3, padding=1),
                nn.ReLU(inplace=True), nn.MaxPool2d(2),
                nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2))
            self.classifier = nn.Sequential(
                nn.Flatten(), nn.Linear(64 * 2 * 2, 128), nn.ReLU(inplace=True), nn.Dropout(0.5), nn.Linear(128, 10))

        def forward(self, x):  # type: ignore[no-untyped-def]
            return self.classifier(self.features(x))

    class ViT(nn.Module):
        def __init__(self, dim: int = 32, depth: int = 2, heads: int = 4) -> None:
            super().__init__()
            self.patch = nn.Conv2d(1, dim, kernel_size=2, stride=2)  # 8x8 -> 4x4 patches
            self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
            self.pos_embedding = nn.Parameter(torch.randn(1, 17, dim) * 0.02)
            layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=64, dropout=0.1, activation="gelu",
                                               batch_first=True, norm_first=True)
            self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(dim)
            self.head = nn.Linear(dim, 10)

        def forward(self, x):  # type: ignore[no-untyped-def]
            x = self.patch(x).flatten(2).transpose(1, 2)  # [N, 16, dim]
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embedding
            return self.head(self.norm(self.encoder(x))[:, 0])

    class CNN1d(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Sequential(nn.Conv1d(8, 32, 3, padding=1), nn.ReLU(), nn.Conv1d(32, 64, 3, padding=1),
                                      nn.ReLU(), nn.AdaptiveMaxPool1d(1))
            self.fc = nn.Linear(64, 10)

        def forward(self, x):  # x: [N, 8 rows, 8 pixels]; rows are the sequence, pixels the channels
            return self.fc(self.conv(x.transpose(1, 2)).flatten(1))

    class Recurrent(nn.Module):
        def __init__(self, cell) -> None:  # type: ignore[no-untyped-def]
            super().__init__()
            self.rnn = cell(8, 64, batch_first=True)
            self.fc = nn.Linear(64, 10)

        def forward(self, x):  # type: ignore[no-untyped-def]
            out, _ = self.rnn(x)
            return self.fc(out[:, -1])

    class MLP(nn.Module):
        def __init__(self, final: nn.Module | None = None, bn: bool = True) -> None:
            super().__init__()
            norm = (lambda n: nn.BatchNorm1d(n)) if bn else (lambda n: nn.Identity())
            self.net = nn.Sequential(nn.Linear(64, 128), norm(128), nn.ReLU(), nn.Dropout(0.2),
                                     nn.Linear(128, 64), norm(64), nn.ReLU(), nn.Dropout(0.2), nn.Linear(64, 10))
            self.final = final

        def forward(self, x):  # type: ignore[no-untyped-def]
            z = self.net(x)
            return z if self.final is None else self.final(z)

    return {
        "resnet": (ResNet, "digits-images", None),
        "vgg": (VGG, "digits-images", None),
        "vit": (ViT, "digits-images", None),
        "cnn1d": (CNN1d, "rows", None),
        "lstm": (lambda: Recurrent(nn.LSTM), "rows", None),
        "gru": (lambda: Recurrent(nn.GRU), "rows", None),
        "mlp-bn": (MLP, "digits", None),
        "mlp-softmax": (lambda: MLP(nn.Softmax(dim=1), bn=False), "digits", "softmax"),
        "mlp-logsoftmax": (lambda: MLP(nn.LogSoftmax(dim=1), bn=False), "digits", "log_softmax"),
    }


def example_for(data: str):  # type: ignore[no-untyped-def]
    import torch

    return {"digits-images": torch.rand(4, 1, 8, 8), "rows": torch.rand(4, 8, 8), "digits": torch.rand(4, 64)}[data]


def export(module, example, dynamo: bool, path: Path, keep_bn: bool = False) -> None:  # type: ignore[no-untyped-def]
    """Exported in eval mode as users do; `keep_bn`: as the README says to keep BatchNorm a node of its own
    (TorchScript `training=TrainingMode.PRESERVE`, dynamo `optimize=False`), not folded into the weights."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            program = torch.onnx.export(module, (example,), input_names=["x"], output_names=["logits"],
                                        dynamic_shapes={"x": {0: torch.export.Dim("batch")}}, dynamo=True,
                                        verbose=False, optimize=not keep_bn)
            program.save(str(path))
        else:
            torch.onnx.export(module, (example,), str(path), input_names=["x"], output_names=["logits"],
                              dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False,
                              training=torch.onnx.TrainingMode.PRESERVE if keep_bn else torch.onnx.TrainingMode.EVAL)


def torch_inputs(split, data: str):  # type: ignore[no-untyped-def]
    x = next(iter(split.inputs.values()))
    return x.reshape(len(x), 8, 8) if data == "rows" else x


def train_torch(module, ds, data: str, final: str | None, *, lr: float, batch_size: int, epochs: int,
                patience: int | None, schedule: str, warmup: float, seed: int) -> dict:  # type: ignore[no-untyped-def]
    """`module` trained as onnxkit's loop trains its export: same batches, AdamW, schedule, best val_loss kept."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)

    def loss_of(out, y):  # type: ignore[no-untyped-def]
        if final == "softmax":  # onnxkit trains on the logits behind a final Softmax: so does the user's CE
            return F.cross_entropy(module.net(xb_), y)
        if final == "log_softmax":
            return F.nll_loss(out, y)
        return F.cross_entropy(out, y)

    def scored(split):  # type: ignore[no-untyped-def]
        module.eval()
        with torch.no_grad():
            x = torch.from_numpy(torch_inputs(split, data))
            out = module(x)
            y = torch.from_numpy(split.labels.astype(np.int64))
            logp = torch.log(out) if final == "softmax" else out if final == "log_softmax" else F.log_softmax(out, 1)
            return float(F.nll_loss(logp, y)), float((out.argmax(1) == y).float().mean())

    optimizer = torch.optim.AdamW(module.parameters(), lr=lr)
    per_epoch = ds.train.num_batches(batch_size)
    sched = Schedule(schedule, lr, per_epoch * epochs, warmup_steps(warmup, per_epoch * epochs))
    seeds = (seed * 100_003 + e for e in range(epochs))
    best, best_epoch, best_state, seconds, step = math.inf, 0, None, [], 0
    for epoch, batches in enumerate(ds.train.epochs(batch_size, seeds), start=1):
        module.train()
        started = time.perf_counter()
        for feeds, labels in batches:
            x = next(iter(feeds.values()))
            global xb_
            xb_ = torch.from_numpy(x.reshape(len(x), 8, 8) if data == "rows" else x)
            for group in optimizer.param_groups:
                group["lr"] = sched.lr(step)
            loss = loss_of(module(xb_), torch.from_numpy(labels.astype(np.int64)))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
        seconds.append(time.perf_counter() - started)
        val_loss, _ = scored(ds.validation)
        if val_loss < best:
            best, best_epoch, best_state = val_loss, epoch, copy.deepcopy(module.state_dict())
        if patience and epoch - best_epoch >= patience:
            break
    module.load_state_dict(best_state)
    _, test_acc = scored(ds.test)
    return {"test": test_acc, "epochs": len(seconds), "best_epoch": best_epoch,
            "s_per_epoch": float(np.median(seconds))}


xb_ = None


def load_back(module, model: onnx.ModelProto) -> list[str]:  # type: ignore[no-untyped-def]
    """The trained initializers copied into `module` by name; returns the state_dict keys not found."""
    import torch

    values = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    state = module.state_dict()
    missing = []
    for key, tensor in state.items():
        if key in values and tuple(values[key].shape) == tuple(tensor.shape):
            state[key] = torch.from_numpy(values[key].copy())
        elif not key.endswith("num_batches_tracked"):
            missing.append(key)
    module.load_state_dict(state)
    return missing


def compare(args: argparse.Namespace, torch: ModuleType, root: Path) -> None:
    """Export each module, train it with onnxkit and with PyTorch, and print a row each (exports under `root`)."""
    print(f"{'module':15s} {'exporter':11s} seed  {'onnxkit':>7s} {'torch':>7s}  {'s/ep ok':>7s} {'s/ep pt':>7s}"
          f"  epochs (ok/pt)  load  eval")
    for name, (make, data, final) in modules().items():
        if args.only and name not in args.only:
            continue
        ds = load_dataset("digits-images" if data == "rows" else data, seed=0)
        for exporter in args.exporters:
            for seed in args.seeds:
                torch.manual_seed(seed)
                module = make().eval()
                start = copy.deepcopy(module.state_dict())
                tag = f"{'-recipe' if args.recipe else ''}{'-bn' if args.keep_bn else ''}"
                folder = root / f"{name}-{exporter}-{seed}{tag}"
                folder.mkdir(parents=True, exist_ok=True)
                path = folder / "model.onnx"
                try:
                    export(module, example_for(data), exporter == "dynamo", path, args.keep_bn)
                except Exception as e:  # noqa: BLE001 - the exporter's failure, reported
                    print(f"{name:15s} {exporter:11s} export failed: {str(e).splitlines()[0][:100]}")
                    continue
                run = folder / "run"
                shutil.rmtree(run, ignore_errors=True)
                cmd = [*ONNXKIT, "train", str(path), "--data", "digits-images" if data == "rows" else data,
                       "-o", str(run), *(RECIPE if args.recipe else []), *(["--seed", str(seed)] if seed else [])]
                done = subprocess.run(cmd, capture_output=True, text=True, env=CLEAN_ENV)
                if done.returncode:
                    print(f"{name:15s} {exporter:11s} {seed:4d}  onnxkit failed: {done.stderr.strip()[-400:]}")
                    continue
                info = json.loads((run / "run.json").read_text())
                cfg = info["config"]
                records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
                epochs_run = [r for r in records if r.get("event") == "epoch"]
                ok_s = float(np.median([r["seconds"] for r in epochs_run]))
                ok_test = info["result"]["test"]["accuracy"]
                module.load_state_dict(start)
                theirs = train_torch(module, ds, data, final, lr=cfg["lr"], batch_size=cfg["batch_size"],
                                     epochs=cfg["epochs"], patience=cfg.get("patience"),
                                     schedule=cfg["schedule"], warmup=cfg.get("warmup") or 0, seed=seed)
                # the trained ONNX model against the module holding its weights, both in eval mode
                trained = onnx.load(run / "model.onnx")
                check = make()
                check.load_state_dict(start)
                missing = load_back(check, trained)
                check.eval()
                x = torch_inputs(ds.test, data)
                session = ort.InferenceSession(str(run / "model.onnx"), providers=["CPUExecutionProvider"])
                feed = {session.get_inputs()[0].name: x if data != "rows" else x}
                got = session.run(None, feed)[0]
                again = session.run(None, feed)[0]
                with torch.no_grad():
                    want = check(torch.from_numpy(x)).numpy()
                load = (f"{np.abs(got - want).max():.1e}" if not missing else f"missing {len(missing)}: {missing[:3]}")
                if not np.array_equal(got, again):
                    load += " NONDETERMINISTIC"
                mine = float((got.argmax(1) == ds.test.labels).mean())
                ev = subprocess.run([*ONNXKIT, "eval", str(run / "model.onnx"), "--json"], capture_output=True,
                                    text=True, env=CLEAN_ENV)
                try:
                    reported = json.loads(ev.stdout)["accuracy"]
                    agree = "ok" if abs(reported - mine) < 1e-9 and abs(reported - ok_test) < 1e-9 else \
                        f"eval {reported:.4f} vs {mine:.4f}"
                except (ValueError, KeyError):
                    agree = f"eval failed: {(ev.stderr or ev.stdout).strip()[-200:]}"
                print(f"{name:15s} {exporter:11s} {seed:4d}  {ok_test:7.4f} {theirs['test']:7.4f}  "
                      f"{ok_s:7.3f} {theirs['s_per_epoch']:7.3f}  {len(epochs_run):3d}/{theirs['epochs']:3d}"
                      f"        {load}  {agree}",
                      flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*")
    parser.add_argument("--exporters", nargs="*", default=["torchscript", "dynamo"], choices=["torchscript", "dynamo"])
    parser.add_argument("--seeds", nargs="*", type=int, default=[0])
    parser.add_argument("--recipe", action="store_true", help="the README's digits-cnn flags")
    parser.add_argument("--keep-bn", action="store_true", help="export keeping BatchNorm unfolded")
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--keep", type=Path, help="keep the exports and runs under this folder")
    args = parser.parse_args()
    torch = import_torch_exporter()
    torch.set_num_threads(args.torch_threads)  # 2 OpenMP threads on a busy 2-core machine: 300 ms an MLP step
    unknown = sorted(set(args.only or ()) - set(modules()))
    if unknown:
        parser.error(f"no module {', '.join(unknown)}; choose from {', '.join(modules())}")
    print(machine.machine_line(), flush=True)
    root = args.keep or Path(tempfile.mkdtemp(prefix="side-by-side-"))
    try:
        compare(args, torch, root)
    finally:  # a failure too leaves no exports behind
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
