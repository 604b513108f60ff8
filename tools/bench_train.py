"""Training step time: onnxkit (ONNX Runtime training) against PyTorch on digits-mlp and digits-cnn.

Both sides get the same architecture and initial weights (read from the zoo's
ONNX model), the same batches (the digits training split, shuffled by seed),
the same thread count and the same optimizer (AdamW, lr 1e-3, weight decay
0.01, eps 1e-8). A step is forward + backward + optimizer update. Rounds
alternate between the two so both see the same machine load; each side's
figure is the median over rounds, and the ratio is onnxkit / PyTorch
(below 1: onnxkit is faster).

    python tools/bench_train.py [--threads 2] [--steps 200] [--rounds 5] [--batch-size 64]

`--check` first trains 20 steps on both with dropout off and asserts the
losses agree, so the timing compares the same computation. Needs torch
(`pip install 'onnxkit[bench]'`); onnxkit itself never imports it.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from onnx import numpy_helper

from onnxkit import zoo
from onnxkit.data import load_dataset, model_inputs
from onnxkit.train.backend import OptimizerConfig, TrainingProblem, get_backend
from onnxkit.train.losses import get_loss
from onnxkit.train.training_form import find_parameters, output_type, select, training_form, value_types

MODELS = {"digits-mlp": "digits", "digits-cnn": "digits-images"}
LR, DECAY, EPS = 1e-3, 0.01, 1e-8


def onnxkit_session(model, directory: Path, threads: int, dropout: bool, lr: float = LR):
    """A training session on `model` built the way `fit` builds it."""
    types = value_types(model)
    output = output_type(types, model, model.graph.output[0].name)
    params = find_parameters(model)
    selection = select(model, params, output.name)
    form = training_form(model, output, updated_buffers=selection.updated_buffers, types=types, dropout=dropout)
    problem = TrainingProblem(
        training_model=form,
        eval_model=model,
        output=output.name,
        loss=get_loss("cross-entropy"),
        trainable=selection.trainable,
        frozen=selection.updated_buffers,
        optimizer=OptimizerConfig("adamw", lr, DECAY, eps=EPS),
    )
    backend = get_backend()
    directory.mkdir(parents=True)
    backend.build(problem, directory)
    session = backend.open(directory, threads=threads)
    session.set_learning_rate(lr)
    return session


def torch_module(name: str, weights: dict[str, np.ndarray], dropout: float):
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


class TorchTrainer:
    def __init__(self, module, lr: float = LR) -> None:  # type: ignore[no-untyped-def]
        import torch

        self.torch, self.module = torch, module
        self.optimizer = torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=DECAY, eps=EPS)

    def step(self, x, y) -> float:  # type: ignore[no-untyped-def]
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.torch.nn.functional.cross_entropy(self.module(x), y)
        loss.backward()
        self.optimizer.step()
        return loss.item()


def batches(name: str, batch_size: int, steps: int) -> list[tuple[dict[str, np.ndarray], np.ndarray]]:
    train = load_dataset(MODELS[name]).train
    out: list[tuple[dict[str, np.ndarray], np.ndarray]] = []
    epoch = 0
    while len(out) < steps:
        out += list(train.batches(batch_size, shuffle=True, seed=epoch, drop_last=True))
        epoch += 1
    return out[:steps]


def check_same_computation(name: str, work: Path, threads: int, batch_size: int) -> float:
    """Largest relative difference of 20 per-step losses with dropout off."""
    import torch

    model = zoo.build_model(name)
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    session = onnxkit_session(model, work, threads, dropout=False)
    trainer = TorchTrainer(torch_module(name, weights, 0.0))
    worst = 0.0
    for feeds, labels in batches(name, batch_size, 20):
        ours = session.train_step(feeds, labels)
        session.optimizer_step()
        theirs = trainer.step(torch.from_numpy(next(iter(feeds.values()))), torch.from_numpy(labels))
        worst = max(worst, abs(ours - theirs) / abs(theirs))
    return worst


def bench(name: str, work: Path, threads: int, batch_size: int, steps: int, rounds: int) -> dict[str, float]:
    import torch

    model = zoo.build_model(name)
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    options = zoo.options(name)
    dropout = float(options["dropout"].default) if "dropout" in options else 0.0
    session = onnxkit_session(model, work, threads, dropout=True)
    trainer = TorchTrainer(torch_module(name, weights, dropout))
    (input_name,) = [spec.name for spec in model_inputs(model)]
    data = batches(name, batch_size, steps)
    torch_data = [(torch.from_numpy(f[input_name]), torch.from_numpy(y)) for f, y in data]

    result = time_side_by_side(session, data, trainer, torch_data, rounds, warmup_rounds=1)
    result["params"] = sum(v.size for v in weights.values())
    return result


def time_side_by_side(session, data, trainer, torch_data, rounds: int, warmup_rounds: int = 0) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Median ms per training step of onnxkit and PyTorch over the same batches, rounds alternating
    (after `warmup_rounds` untimed ones: kernels, allocators)."""

    def ours() -> None:
        for feeds, labels in data:
            session.train_step(feeds, labels)
            session.optimizer_step()

    def theirs() -> None:
        for x, y in torch_data:
            trainer.step(x, y)

    for _ in range(warmup_rounds):
        ours(), theirs()
    times: dict[str, list[float]] = {"onnxkit": [], "torch": []}
    for _ in range(rounds):
        for side, run in (("onnxkit", ours), ("torch", theirs)):
            start = time.perf_counter()
            run()
            times[side].append((time.perf_counter() - start) / len(data) * 1e3)
    result = {side: statistics.median(values) for side, values in times.items()}
    result["ratio"] = result["onnxkit"] / result["torch"]
    return result


def import_torch(threads: int):  # type: ignore[no-untyped-def]
    """PyTorch, set to `threads` intra-op threads (it is a benchmark-only dependency)."""
    try:
        import torch
    except ImportError:
        raise SystemExit(
            "this benchmark needs PyTorch, kept outside the project environment (with the training build,\n"
            "`import onnxruntime` imports torch when it sits beside it): pip install --target /tmp/torchlib\n"
            "torch==2.13.0, then run with PYTHONPATH=/tmp/torchlib"
        ) from None
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    return torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=200, help="steps per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--check", action="store_true", help="first compare 20 losses with dropout off")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    args = parser.parse_args()
    torch = import_torch(args.threads)
    print(f"AdamW, batch {args.batch_size}, {args.threads} threads, {args.rounds} rounds x {args.steps} steps "
          f"(median ms per step; ratio = onnxkit / PyTorch {torch.__version__})")
    print(f"{'model':<12} {'params':>8} {'onnxkit':>9} {'pytorch':>9} {'ratio':>6}")
    with tempfile.TemporaryDirectory() as tmp:
        for i, name in enumerate(args.models):
            if args.check:
                worst = check_same_computation(name, Path(tmp) / f"check{i}", args.threads, args.batch_size)
                assert worst < 1e-3, f"{name}: losses differ by {worst:.2e}; not the same computation"
                print(f"{name:<12} same losses as PyTorch for 20 steps (max relative difference {worst:.1e})")
            r = bench(name, Path(tmp) / str(i), args.threads, args.batch_size, args.steps, args.rounds)
            print(f"{name:<12} {r['params']:>8,} {r['onnxkit']:>9.3f} {r['torch']:>9.3f} {r['ratio']:>6.2f}")


if __name__ == "__main__":
    main()
