"""The optimizer step alone: the `onnx` backend's update graph over one flat buffer of N
parameters, run whole and chunk by chunk (as the session runs it on the CPU), against
PyTorch's `AdamW(fused=True)` on a tensor of the same size, in alternating rounds.

    PYTHONPATH=/tmp/torchlib .venv/bin/python tools/bench_optimizer.py [--size 22567301] [--optimizer adamw]

Prints ms per step of each side (median over rounds) and min/median/max of each ratio. `--chunks N ...`
times chunks of other sizes beside the session's (CHUNK), each against it.
Without PyTorch the torch column is left out.
"""

from __future__ import annotations

import argparse
import statistics
import time

import machine
import numpy as np

from onnxkit.runtime.session import create_session, session_options
from onnxkit.train.backends.onnx.session import CHUNK, chunks
from onnxkit.train.optim import OPTIMIZERS, get_optimizer, update_model


def onnx_side(name: str, size: int, chunk: int, threads: int):  # type: ignore[no-untyped-def]
    """A function taking one optimizer step over `size` parameters in pieces of `chunk`."""
    spec = get_optimizer(name)
    options = session_options(threads, "all")
    options.add_session_config_entry("session.set_denormal_as_zero", "1")
    session = create_session(update_model(spec, [("p", ("n",))]).SerializeToString(), options,
                             ["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    now = {n: rng.random(size, dtype=np.float32) for n in ["p", "p.grad", *(f"p.{s}" for s in spec.slots())]}
    then = {n: np.empty_like(v) for n, v in now.items() if n != "p.grad"}
    lr, step = np.asarray(1e-3, np.float32), np.asarray(1, np.int64)
    bindings = []
    for offset, n in chunks(size, chunk):
        b = session.io_binding()
        b.bind_cpu_input("lr", lr)
        b.bind_cpu_input("step", step)
        for key, array in now.items():
            b.bind_input(key, "cpu", 0, np.float32, [n], array.ctypes.data + 4 * offset)
        for key, array in then.items():
            b.bind_output(f"{key}.updated", "cpu", 0, np.float32, [n], array.ctypes.data + 4 * offset)
        bindings.append(b)

    def step_once(buffers=(now, then, lr, step)) -> None:  # noqa: B008 - the bindings point into them
        for b in bindings:
            session.run_with_iobinding(b)

    return step_once


def torch_side(size: int, threads: int):  # type: ignore[no-untyped-def]
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    p = torch.nn.Parameter(torch.rand(size))
    p.grad = torch.rand(size)
    optimizer = torch.optim.AdamW([p], lr=1e-3, fused=True)
    return optimizer.step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=machine.count, default=22_567_301,
                        help="parameters (default: the MiniLM classifier's)")
    parser.add_argument("--optimizer", default="adamw", choices=OPTIMIZERS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=machine.count, default=7)
    parser.add_argument("--steps", type=machine.count, default=10, help="steps per round")
    parser.add_argument("--chunks", type=machine.count, nargs="*", default=[],
                        help="other chunk sizes to time against the session's")
    args = parser.parse_args()
    print(machine.machine_line(), flush=True)
    sides = {
        "whole": onnx_side(args.optimizer, args.size, args.size, args.threads),
        f"chunks of {CHUNK}": onnx_side(args.optimizer, args.size, CHUNK, args.threads),
        **{f"chunks of {n}": onnx_side(args.optimizer, args.size, n, args.threads) for n in args.chunks},
    }
    baseline = torch_side(args.size, args.threads) if args.optimizer == "adamw" else None
    if baseline is not None:
        sides["torch fused AdamW"] = baseline
    elif args.optimizer == "adamw":
        print("no PyTorch here, so no torch column: pip install --target /tmp/torchlib torch==2.13.0, then run with "
              "PYTHONPATH=/tmp/torchlib", flush=True)
    ms: dict[str, list[float]] = {name: [] for name in sides}
    for r in range(args.rounds + 1):
        order = list(sides)[r % len(sides):] + list(sides)[: r % len(sides)]
        for name in order:
            time.sleep(0.05)
            start = time.perf_counter()
            for _ in range(args.steps):
                sides[name]()
            if r:  # the first round warms up
                ms[name].append((time.perf_counter() - start) / args.steps * 1e3)
    print(f"{args.optimizer} step over {args.size:,} float32 parameters, {args.threads} threads, {args.rounds} rounds")
    for name, values in ms.items():
        print(f"  {name:<24} {statistics.median(values):8.1f} ms")
    session_chunks, extra = f"chunks of {CHUNK}", [f"chunks of {n}" for n in args.chunks]
    pairs = [("whole", session_chunks), *((n, session_chunks) for n in extra)]
    if baseline is not None:
        pairs += [(n, "torch fused AdamW") for n in ("whole", session_chunks)]
    for a, b in pairs:
        ratios = [x / y for x, y in zip(ms[a], ms[b], strict=True)]
        print(f"  {a} / {b}: min {min(ratios):.2f}  median {statistics.median(ratios):.2f}  max {max(ratios):.2f}")


if __name__ == "__main__":
    machine.run(main)
