"""What every benchmark in tools/ prints first, the machine its figures were taken on (figures differ by a third
between the hosts the README quotes), a `main` wrapper that turns onnxkit's errors into one line, and `count`, the
argparse type of --rounds, --steps and the like (0 of them used to end in a traceback from an empty median)."""

from __future__ import annotations

import argparse
import os
import platform
import sys
from collections.abc import Callable
from pathlib import Path

from onnxkit.errors import OnnxkitError


def machine_line() -> str:
    """'machine: <CPU model>, 2 of 2 CPUs, Python 3.11.x, onnxruntime 1.32.0 (load 0.4)'."""
    import onnxruntime

    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in (cpuinfo.read_text().splitlines() if cpuinfo.is_file() else [])
             if line.startswith("model name")]
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = f" (load {os.getloadavg()[0]:.1f})" if hasattr(os, "getloadavg") else ""
    return (f"machine: {names[0] if names else platform.processor() or platform.machine()}, {usable} of "
            f"{os.cpu_count()} CPUs, Python {platform.python_version()}, onnxruntime {onnxruntime.__version__}{load}")


def run(main: Callable[[], None]) -> None:
    """Run `main`; an OnnxkitError (an unknown model, a backend not installed) is one line and exit status 1, not
    a traceback."""
    try:
        main()
    except OnnxkitError as e:
        sys.exit(f"error: {e}")


def count(text: str) -> int:
    """An argparse type: an integer of 1 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is below 1")
    return value
