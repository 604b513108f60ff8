"""Peak memory and time of `onnxkit predict` on one large input file: a CSV of R x 64 numbers (4 decimals)
and the same rows as an .npy, through digits-mlp. Each run is a fresh process; its peak resident memory is
the child's ru_maxrss. Printed per format: file MB, peak MB, peak / file size, seconds (min of the rounds).

    .venv/bin/python tools/predict_memory.py [--rows 200000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import machine
import numpy as np

from onnxkit.files import save_model
from onnxkit.zoo import build_model


def _peak(command: list[str]) -> tuple[float, float]:
    """(peak resident MB, seconds) of one run of `command` in a child process (a fresh waiter each time)."""
    waiter = (f"import resource, subprocess, sys, time; t = time.perf_counter(); "
              f"subprocess.run({command!r}, check=True, stdout=subprocess.DEVNULL); "
              f"print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", waiter], check=True, capture_output=True, text=True).stdout.split()
    return float(out[0]), float(out[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=machine.count, default=200_000)
    parser.add_argument("--rounds", type=machine.count, default=2)
    args = parser.parse_args()
    print(machine.machine_line(), flush=True)
    onnxkit = str(Path(sys.executable).with_name("onnxkit"))
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        model = save_model(build_model("digits-mlp"), work / "model.onnx")
        rows = np.random.default_rng(0).random((args.rows, 64)).round(4)
        np.savetxt(work / "rows.csv", rows, delimiter=",", fmt="%.4f")
        np.save(work / "rows.npy", rows.astype(np.float32))
        del rows
        for name in ("rows.csv", "rows.npy"):
            size = (work / name).stat().st_size / 2**20
            runs = [_peak([onnxkit, "predict", str(model), str(work / name), "-o", str(work / "out.npy")])
                    for _ in range(args.rounds)]
            peak, seconds = min(r[0] for r in runs), min(r[1] for r in runs)
            print(f"{name}: {size:.0f} MB, peak {peak:.0f} MB ({peak / size:.1f}x the file), {seconds:.2f} s")


if __name__ == "__main__":
    machine.run(main)
