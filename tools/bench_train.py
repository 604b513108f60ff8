"""Training step time of onnxkit's backends against PyTorch on digits-mlp and digits-cnn.

Every contender gets the same architecture and initial weights (read from the zoo's ONNX
model), the same batches (the digits training split, shuffled by seed), the same thread count
and AdamW with torch's defaults at lr 1e-3 (PyTorch: `torch.optim.AdamW(fused=True)`, one
inter-op thread). A step is forward + backward + optimizer update. Rounds alternate between
the contenders (see tools/step_timing.py); the tool prints each contender's median ms/step and,
for each backend / PyTorch (and onnx / ort-training when both run), the min/median/max of the
per-round ratio (below 1: faster than the baseline).

    PYTHONPATH=/tmp/torchlib .venv/bin/python tools/bench_train.py [--check] [--rounds 5] [--steps 200]
    PYTHONPATH=/tmp/torchlib .venv-ort/bin/python tools/bench_train.py --backends onnx ort-training

`--check` first trains 20 steps on every contender with dropout off and stops unless the
losses agree with PyTorch's within 1e-3 (relative), so the timing compares the same
computation. `--no-dropout` times with dropout off everywhere (digits-mlp has Dropout: a cost
of its own, which differs between the contenders). `--profile` adds per-op kernel times of the
onnx backend's training and optimizer graphs. `--ab MODULE.CONSTANT=VALUE` adds the onnx backend
with an onnxkit constant changed, round for round beside the others (one thread for digits-cnn's
step: `--ab onnxkit.train.backends.onnx.artifacts.ONE_THREAD_STEP=1e12`). Needs torch outside the
project environment (PYTHONPATH=/tmp/torchlib).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import machine
import numpy as np
import onnx
from onnx import numpy_helper
from step_timing import (
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

from onnxkit import zoo
from onnxkit.data import load_dataset
from onnxkit.train.backends import backend_names

MODELS = {"digits-mlp": "digits", "digits-cnn": "digits-images"}
LR = 1e-3


def torch_module(name: str, weights: dict[str, np.ndarray], dropout: float):  # type: ignore[no-untyped-def]
    """The zoo model `name` in PyTorch over the ONNX model's `weights`."""
    import torch

    def linear(prefix: str) -> torch.nn.Linear:
        layer = torch.nn.Linear(*weights[f"{prefix}.weight"].shape)
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(weights[f"{prefix}.weight"].T.copy()))  # onnxkit stores [in, out]
            layer.bias.copy_(torch.from_numpy(weights[f"{prefix}.bias"].copy()))
        return layer

    if name == "digits-mlp":
        return torch.nn.Sequential(
            linear("0"), torch.nn.ReLU(), torch.nn.Dropout(dropout),
            linear("3"), torch.nn.ReLU(), torch.nn.Dropout(dropout),
            linear("6"),
        )  # fmt: skip
    conv = torch.nn.Conv2d(1, weights["conv.weight"].shape[0], 3, padding=1)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(weights["conv.weight"].copy()))
        conv.bias.copy_(torch.from_numpy(weights["conv.bias"].copy()))
    return torch.nn.Sequential(
        conv, torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(),
        linear("fc"), torch.nn.ReLU(), linear("head"),
    )  # fmt: skip


def batches(name: str, batch_size: int, steps: int) -> list[tuple[dict[str, np.ndarray], np.ndarray]]:
    """`steps` training batches of the model's dataset, epoch after epoch (epoch i shuffled by seed i)."""
    train = load_dataset(MODELS[name]).train
    out: list[tuple[dict[str, np.ndarray], np.ndarray]] = []
    epoch = 0
    while len(out) < steps:
        out += list(train.batches(batch_size, shuffle=True, seed=epoch, drop_last=True))
        epoch += 1
    return out[:steps]


def contenders(name: str, backends: list[str], work: Path, data: list, threads: int, dropout: bool,
               ab: list | None = None) -> list:
    """The backends (and the onnx backend with the `ab` settings) and PyTorch, each from the zoo model's initial
    weights."""
    model = zoo.build_model(name)
    out = [backend_contender(b, model, work / b, data, threads=threads, lr=LR, dropout=dropout) for b in backends]
    if ab:
        out.append(variant_contender(ab, model, work / "onnx-ab", data, threads=threads, lr=LR, dropout=dropout))
    return [*out, pytorch_contender(name, model, data, dropout)]


def pytorch_contender(name: str, model: onnx.ModelProto, data: list, dropout: bool):  # type: ignore[no-untyped-def]
    """PyTorch training the zoo model `name` from `model`'s weights (its dropout ratio when `dropout`)."""
    import torch

    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    options = zoo.options(name)
    ratio = float(options["dropout"].default) if dropout and "dropout" in options else 0.0
    module = torch_module(name, weights, ratio)
    return torch_contender(module, data, lambda feeds: torch.from_numpy(next(iter(feeds.values()))), lr=LR)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", nargs="+", default=["onnx"], choices=backend_names(),
                        help="onnx, ort-training (both: side by side)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=machine.count, default=200, help="steps per round")
    parser.add_argument("--rounds", type=machine.count, default=5)
    parser.add_argument("--batch-size", type=machine.count, default=64)
    parser.add_argument("--check", action="store_true", help="first compare 20 steps' losses with dropout off")
    parser.add_argument("--no-dropout", action="store_true", help="time with dropout off on every contender")
    parser.add_argument("--profile", action="store_true", help="per-op kernel times of the onnx backend's graphs")
    add_ab_option(parser)
    args = parser.parse_args()
    print(machine.machine_line(), flush=True)
    torch = import_torch(args.threads)
    print(
        f"AdamW lr {LR:g}, batch {args.batch_size}, {args.threads} threads, {args.rounds} rounds x {args.steps} "
        f"steps; PyTorch {torch.__version__} (fused AdamW)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            work = Path(tmp) / name
            if args.check:
                check = batches(name, args.batch_size, 20)
                check_same_computation(
                    contenders(name, args.backends, work / "check", check, args.threads, dropout=False), name
                )
            data = batches(name, args.batch_size, args.steps)
            times = time_rounds(
                contenders(name, args.backends, work / "bench", data, args.threads, not args.no_dropout, args.ab),
                args.rounds,
            )
            print_summary(name, summarise(times))
            if args.profile:
                model = zoo.build_model(name)
                print(
                    profile_onnx_backend(
                        model, work / "profile", data, threads=args.threads, lr=LR, dropout=not args.no_dropout
                    )
                )


if __name__ == "__main__":
    machine.run(main)
