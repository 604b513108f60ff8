"""How long the `onnxkit` command takes to start: its heavy imports, each timed inside a fresh process, and a few
whole commands, timed from outside, in the Python that runs this tool.

    .venv/bin/python tools/startup_time.py [--runs 7]

Prints each one's median and min-max seconds over the runs, and the versions of the packages imported. An import
is timed after those it needs are in (ml_dtypes after numpy), so each line is that package's own cost; `import
onnx` imports ml_dtypes, whose 0.7.0 took 0.55-0.87 s where 0.6.0 takes 7 ms (pyproject.toml caps it below 0.7).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import machine

# (what is timed, the imports made before the clock starts, the import timed)
IMPORTS = [
    ("import numpy", "", "numpy"),
    ("import ml_dtypes", "numpy", "ml_dtypes"),
    ("import onnx", "numpy, ml_dtypes", "onnx"),
    ("import onnxruntime", "numpy", "onnxruntime"),
]
PACKAGES = ("numpy", "ml_dtypes", "onnx", "onnxruntime")


def import_seconds(before: str, timed: str) -> float:
    """Seconds of `import timed` in a fresh interpreter that has imported `before` first."""
    code = (f"import time\n{'import ' + before if before else ''}\n"
            f"start = time.perf_counter()\nimport {timed}\nprint(time.perf_counter() - start)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(done.stdout)


def command_seconds(arguments: list[str]) -> float:
    """Wall seconds of `python -m onnxkit ARGUMENTS`, start to exit."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "onnxkit", *arguments], capture_output=True, check=True)
    return time.perf_counter() - start


def line(what: str, times: list[float]) -> str:
    return f"  {what:<36} {statistics.median(times):7.3f} s  ({min(times):.3f}-{max(times):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=machine.count, default=7, help="fresh processes per line (default 7)")
    args = parser.parse_args()
    versions = ", ".join(f"{p} {metadata.version(p)}" for p in PACKAGES)
    print(f"Python {sys.version.split()[0]}; {versions}; median (min-max) of {args.runs} runs")
    for what, before, timed in IMPORTS:
        print(line(what, [import_seconds(before, timed) for _ in range(args.runs)]), flush=True)
    with tempfile.TemporaryDirectory() as work:
        model = str(Path(work) / "iris.onnx")
        subprocess.run([sys.executable, "-m", "onnxkit", "build", "iris-mlp", "-o", model], capture_output=True,
                       check=True)
        for arguments in (["--help"], ["inspect", model], ["build", "iris-mlp", "-o", model]):
            times = [command_seconds(arguments) for _ in range(args.runs)]
            print(line("onnxkit " + " ".join(arguments).replace(model, "iris.onnx"), times), flush=True)


if __name__ == "__main__":
    main()
