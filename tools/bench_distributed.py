"""Data-parallel training on this machine: samples/s of 2 ranks x 1 thread against 1 process x 2
threads, and what the gradient all-reduce costs.

Per model, each round trains `--steps` optimizer steps (dropout off, data in order) once as one
process with 2 threads and once as `onnxkit train --workers 2` (1 thread per rank), alternating
which goes first; the rate is steps x batch / the epochs' training seconds in metrics.jsonl (the
loop only: building artifacts, opening sessions, validation and the test run fall outside).
Printed: min/median/max samples/s of each side and of the ratio 2 ranks / 1 process.

Then a 2-rank MPI Allreduce (sum, in place) of float32 buffers of 10^3 .. 10^7.5 values, the
median of 30 calls each. A ring all-reduce moves 2(N-1)/N x bytes per rank, so
t(N, bytes) = latency + 2(N-1)/N x bytes / bandwidth; the smallest buffer gives the latency, the
larger ones the bandwidth, and with them the all-reduce time per step of any model at any N.

    .venv/bin/python tools/bench_distributed.py [--rounds 3] [--steps 60] [--models digits-cnn digits-mlp minilm]

(minilm: the pretrained MiniLM bert-classifier on bbc-news at batch 16 x 128 tokens; give it
--steps 10 or so, its step takes about a second.)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import machine
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
# name -> (onnxkit build arguments, data, batch)
MODELS = {
    "digits-cnn": (["digits-cnn"], "digits-images", 64),
    "digits-mlp": (["digits-mlp"], "digits", 64),
    "minilm": (["bert-classifier", "--set", "pretrained=all-MiniLM-L6-v2", "--set", "num_classes=5"], "bbc-news", 16),
}
ALLREDUCE = """
import json, time, numpy as np
from mpi4py import MPI
comm, out = MPI.COMM_WORLD, {}
for exponent in np.arange(3, 8, 0.5):
    buffer = np.ones(int(10 ** exponent), np.float32)
    times = []
    for _ in range(32):
        comm.Barrier()
        started = time.perf_counter()
        comm.Allreduce(MPI.IN_PLACE, buffer)
        times.append(time.perf_counter() - started)
    out[buffer.size] = float(np.median(times[2:]))
if comm.rank == 0:
    print(json.dumps(out))
"""


def onnxkit(*arguments: str) -> None:
    done = subprocess.run([sys.executable, "-m", "onnxkit", *arguments], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"onnxkit {' '.join(arguments)} failed:\n{done.stderr.strip()}")


def samples_per_second(run: Path, batch: int) -> float:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = max(r["step"] for r in records)
    return steps * batch / sum(r["seconds"] for r in records if r["event"] == "epoch")


def train_rates(model: str, rounds: int, steps: int, folder: Path) -> dict[str, list[float]]:
    build, data, batch = MODELS[model]
    path = folder / f"{model}.onnx"
    onnxkit("build", *build, "-o", str(path))
    common = [str(path), "--data", data, "--steps", str(steps), "--batch-size", str(batch),
              "--no-shuffle", "--no-dropout", "--quiet"]
    sides = {"1 process x 2 threads": ["--threads", "2"], "2 ranks x 1 thread": ["--workers", "2"]}
    rates: dict[str, list[float]] = {name: [] for name in sides}
    for round_number in range(rounds):
        order = list(sides) if round_number % 2 == 0 else list(reversed(sides))
        for name in order:
            run = folder / f"{model}-{round_number}-{len(rates[name])}-{name[0]}"
            onnxkit("train", *common, *sides[name], "-o", str(run))
            rates[name].append(samples_per_second(run, batch))
    return rates


def allreduce_seconds() -> dict[int, float]:
    mpiexec = str(Path(sys.executable).parent / "mpiexec")
    try:
        done = subprocess.run([mpiexec, "-n", "2", sys.executable, "-c", ALLREDUCE], capture_output=True, text=True)
    except FileNotFoundError:
        raise SystemExit(f"{mpiexec} not found: install the distributed extra (pip install -e '.[distributed]')") \
            from None
    if done.returncode:
        raise SystemExit(f"the 2-rank Allreduce under {mpiexec} failed:\n{done.stderr.strip()}")
    return {int(k): v for k, v in json.loads(done.stdout).items()}


def spread(values: list[float]) -> str:
    digits = 1 if min(values) < 100 else 0
    return " / ".join(f"{v:,.{digits}f}" for v in (min(values), statistics.median(values), max(values)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=machine.count, default=3)
    parser.add_argument("--steps", type=machine.count, default=60)
    parser.add_argument("--models", nargs="+", default=["digits-cnn"], choices=sorted(MODELS))
    args = parser.parse_args()
    print(machine.machine_line(), flush=True)
    with tempfile.TemporaryDirectory() as folder:
        for model in args.models:
            rates = train_rates(model, args.rounds, args.steps, Path(folder))
            one, two = rates["1 process x 2 threads"], rates["2 ranks x 1 thread"]
            print(f"{model}, batch {MODELS[model][2]}, {args.steps} steps, samples/s min / median / max:")
            for name, values in rates.items():
                print(f"  {name:24} {spread(values)}")
            ratios = [b / a for a, b in zip(one, two, strict=True)]
            print(f"  2 ranks / 1 process      {min(ratios):.2f} / {statistics.median(ratios):.2f} / {max(ratios):.2f}")
    seconds = allreduce_seconds()
    sizes = np.array(sorted(seconds), float)
    times = np.array([seconds[int(s)] for s in sizes])
    moved = 2 * (2 - 1) / 2 * 4 * sizes  # bytes each rank sends in a 2-rank ring
    latency = float(times[0])  # the smallest buffer: almost all latency
    large = sizes >= 1e5
    bandwidth = float(np.median(moved[large] / (times[large] - latency)))
    print("2-rank Allreduce of float32 values (median of 30):")
    for size in sizes:
        print(f"  {int(size):>10,} values  {seconds[int(size)] * 1e6:10,.0f} us")
    print(f"ring model: t = {latency * 1e6:.0f} us + 2(N-1)/N x bytes / {bandwidth / 1e9:.2f} GB/s "
          "(bandwidth: median over buffers of 10^5 values and more)")


if __name__ == "__main__":
    machine.run(main)
