"""Memory of training: onnxkit's onnx backend against PyTorch (`AdamW(fused=True)`), on digits-cnn, the
pretrained MiniLM fine-tune and tools/bench_conv.py's CNNs, with the contenders of tools/bench_train.py,
tools/bench_finetune.py and tools/bench_conv.py (the same weights, batches, threads and optimizer). `--ab
MODULE.CONSTANT=VALUE` adds the onnx backend with that onnxkit constant changed (tools/step_timing.py).

Each contender runs in a fresh process, the processes alternating over rounds. In each, the resident memory is read
once the model and batches are ready (the interpreter, its imports and the data: what either side holds before it
trains); the peak is then reset (Linux's /proc/self/clear_refs) and the contender made (onnxkit: its gradient and
optimizer graphs built and their sessions opened; PyTorch: the module and its optimizer) and run `--steps` steps.
Training memory is the peak (VmHWM) less the memory before; the process peak is VmHWM itself, imports included
(PyTorch's own import is ~0.3 GB). Prints each contender's median of both in MiB, and the min/median/max over rounds
of onnx / PyTorch.

    PYTHONPATH=/tmp/torchlib .venv/bin/python tools/train_memory.py [--models digits-cnn minilm vgg resnet groupnorm
        resnet18] [--rounds 3] [--ab MODULE.CONSTANT=VALUE]
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import bench_conv
import machine
import numpy as np
from step_timing import Setting, add_ab_option, applied, backend_contender, import_torch, torch_contender

CNNS = bench_conv.MODELS
MODELS = ("digits-cnn", "minilm", *CNNS)
DEFAULT = ("digits-cnn", "minilm", *bench_conv.CIFAR)  # ResNet-18 at 224 x 224 (~1.2 s a step) when named
MIB = 1 << 20


def _status(field: str) -> int:
    """A /proc/self/status field in bytes (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise SystemExit(f"/proc/self/status has no {field}: this tool reads Linux's process memory")


def _measure(model_name: str, contender: str, steps: int, threads: int, settings: list[Setting]) -> dict[str, float]:
    """One contender's memory, in this process (see the module docstring); `settings` for onnx[...]."""
    if contender == "pytorch" or model_name in CNNS:
        torch = import_torch(threads)
    dropout = True
    if model_name in CNNS:
        net = bench_conv.module(model_name)
        shape = bench_conv.SHAPES[model_name]
        model, data, lr, dropout = (bench_conv.exported(net, shape), bench_conv.batches(shape, 32, steps),
                                    bench_conv.LR, False)

        def make():  # type: ignore[no-untyped-def]
            return torch_contender(net, data, lambda feeds: torch.from_numpy(feeds["x"]), lr=lr)
    elif model_name == "minilm":
        import bench_finetune as bench

        from onnxkit import zoo

        model = zoo.build_model("bert-classifier", pretrained="all-MiniLM-L6-v2", num_classes=5, max_length=128)
        data, lr = bench.batches(model, 16, steps), 5e-5
        dropout = float(zoo.options("bert-classifier")["dropout"].default)

        def make():  # type: ignore[no-untyped-def]
            return bench.pytorch_contender(model, data, dropout, lr)
    else:
        import bench_train as bench

        from onnxkit import zoo

        model = zoo.build_model(model_name)
        data, lr = bench.batches(model_name, 64, steps), bench.LR

        def make():  # type: ignore[no-untyped-def]
            return bench.pytorch_contender(model_name, model, data, True)
    with tempfile.TemporaryDirectory() as work:
        gc.collect()
        before = _status("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) from here
        if contender == "pytorch":
            trainer = make()
        else:
            with applied(settings if contender != "onnx" else []):
                trainer = backend_contender("onnx", model, Path(work) / "onnx", data, threads=threads, lr=lr,
                                            dropout=dropout)
        losses = trainer.run()
        peak = _status("VmHWM")
    if not np.isfinite(losses).all():
        raise SystemExit(f"{contender} on {model_name}: a loss was not finite")
    return {"training": (peak - before) / MIB, "process": peak / MIB}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(DEFAULT), choices=MODELS)
    parser.add_argument("--rounds", type=machine.count, default=3)
    parser.add_argument("--steps", type=machine.count, default=3, help="training steps per process")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "CONTENDER"), help=argparse.SUPPRESS)
    add_ab_option(parser)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_measure(*args.child, args.steps, args.threads, args.ab)))
        return
    contenders = ["onnx", "pytorch"] + ([f"onnx[{', '.join(map(str, args.ab))}]"] if args.ab else [])
    ab = [option for s in args.ab for option in ("--ab", f"{s.module}.{s.name}={s.value}")]
    print(machine.machine_line(), flush=True)
    print(f"{args.rounds} rounds, {args.steps} steps a process, {args.threads} threads, a fresh process each")
    for name in args.models:
        found: dict[str, list[dict[str, float]]] = {c: [] for c in contenders}
        for _ in range(args.rounds):
            for contender in contenders:
                command = [sys.executable, __file__, "--child", name, contender, "--steps", str(args.steps),
                           "--threads", str(args.threads), *ab]
                done = subprocess.run(command, capture_output=True, text=True, check=False)
                if done.returncode:
                    raise SystemExit(f"{name} / {contender}: {done.stderr.strip().splitlines()[-1:]}")
                found[contender].append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"{name}:")
        for contender, runs in found.items():
            training = np.median([r["training"] for r in runs])
            process = np.median([r["process"] for r in runs])
            print(f"  {contender:<8} training {training:8.1f} MiB   process peak {process:8.1f} MiB")
        for other in contenders[1:]:
            for what in ("training", "process"):
                ratios = [a[what] / b[what] for a, b in zip(found["onnx"], found[other], strict=True)]
                print(f"  onnx / {other}, {what:<8} min {min(ratios):.2f}  median {np.median(ratios):.2f}  "
                      f"max {max(ratios):.2f}")


if __name__ == "__main__":
    machine.run(main)
