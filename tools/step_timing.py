"""Shared parts of the training-step benchmarks (tools/bench_train.py, tools/bench_finetune.py).

Contenders (onnxkit backends through `open_training`, and PyTorch with fused AdamW as the
baseline) step through the same batches; rounds alternate between them, the starting one
rotating, so all see the same machine load. Ratios are taken per round and summarised as
min/median/max over rounds; on a shared machine, rounds in which other processes took 5% of
the CPUs or more (from /proc/stat) are dropped. `check_same_computation` compares the
contenders' losses (dropout off) and `profile_onnx_backend` gives per-op kernel times of the
onnx backend's graphs. `--ab MODULE.CONSTANT=VALUE` (`Setting`) adds the onnx backend with an onnxkit constant
changed while its graphs are built and its sessions opened (a rule's threshold, the optimizer's chunk), so a
rule is timed against its alternative in one process, round for round.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import json
import logging
import math
import os
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import onnx

from onnxkit.train.problem import open_training

TORCH = "torch"
TOLERANCE = 1e-3  # relative difference of per-step losses allowed by --check
BUSY = 0.05  # rounds in which other processes took this share of all the CPUs or more are dropped
PAUSE = 0.05  # seconds before each timed run, so the previous contender's threads stop spinning (without it,
# PyTorch right after ONNX Runtime on 2 cores ran ~15% slower than right before it)
Batch = tuple[Any, Any]  # (inputs, labels) in a contender's own form


def import_torch(threads: int):  # type: ignore[no-untyped-def]
    """PyTorch, set to `threads` intra-op threads and one inter-op thread (a benchmark-only dependency)."""
    try:
        import torch
    except ImportError:
        raise SystemExit(
            "this benchmark needs PyTorch, kept outside the project environments (with the training build,\n"
            "`import onnxruntime` imports torch when it sits beside it): pip install --target /tmp/torchlib\n"
            "torch==2.13.0, then run with PYTHONPATH=/tmp/torchlib"
        ) from None
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    return torch


def import_torch_exporter():  # type: ignore[no-untyped-def]
    """PyTorch to export modules to ONNX (its dynamo exporter also needs onnxscript), its exporter's notes on
    torchvision quiet (a tool-only dependency)."""
    try:
        import torch
    except ImportError:
        raise SystemExit(
            "this tool needs PyTorch (and onnxscript for the dynamo exporter), kept outside the project environment:\n"
            "pip install --target /tmp/torchlib torch==2.13.0, pip install --no-deps --target /tmp/osl onnxscript,\n"
            "then run with PYTHONPATH=/tmp/torchlib:/tmp/osl"
        ) from None
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    return torch


@dataclass
class Contender:
    """One way to train: `step(inputs, labels)` runs forward, backward and the optimizer update on
    one batch and returns the loss; `batches` are the benchmark's batches in its own form."""

    name: str
    step: Callable[[Any, Any], float]
    batches: list[Batch]

    def run(self) -> list[float]:
        return [self.step(x, y) for x, y in self.batches]


def backend_contender(
    backend: str,
    model: onnx.ModelProto,
    directory: Path,
    data: list[Batch],
    *,
    threads: int,
    lr: float,
    dropout: bool,
) -> Contender:
    """An onnxkit backend training `model` with AdamW (torch's defaults) at learning rate `lr`."""
    session = open_training(model, directory, backend=backend, dropout=dropout, threads=threads,
                            batch_size=len(data[0][1]) if data else None)

    def step(feeds: dict[str, np.ndarray], labels: np.ndarray) -> float:
        loss = session.train_step(feeds, labels)
        session.optimizer_step(lr)
        return loss

    return Contender(backend, step, data)


@dataclass(frozen=True)
class Setting:
    """An onnxkit module constant and a value for it, from `--ab onnxkit.autodiff.rules.conv.FLIPPED_FROM=1e12`."""

    module: str
    name: str
    value: Any

    @classmethod
    def parse(cls, text: str) -> Setting:
        """argparse's type for --ab: the constant must exist and the value be a number or True/False."""
        where, _, value = text.partition("=")
        module, _, name = where.rpartition(".")
        try:
            current = getattr(importlib.import_module(module), name) if module.startswith("onnxkit") else None
            parsed = ast.literal_eval(value)
        except (ImportError, AttributeError, ValueError, SyntaxError):
            current = parsed = None
        if not isinstance(current, int | float) or not isinstance(parsed, int | float):
            raise argparse.ArgumentTypeError(f"{text!r}: give an onnxkit module constant and a number, as "
                                             "onnxkit.autodiff.rules.conv.FLIPPED_FROM=1e12")
        return cls(module, name, type(current)(parsed))

    def __str__(self) -> str:
        return f"{self.name}={self.value}"


def add_ab_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ab", action="append", type=Setting.parse, default=[], metavar="MODULE.CONSTANT=VALUE",
                        help="also time the onnx backend with this onnxkit constant changed (repeatable: all at once)")


@contextlib.contextmanager
def applied(settings: Sequence[Setting]) -> Iterator[None]:
    """The constants of `settings` set to their values inside the block, back to their own after it."""
    with contextlib.ExitStack() as stack:
        for s in settings:
            stack.enter_context(mock.patch.object(importlib.import_module(s.module), s.name, s.value))
        yield


def variant_contender(settings: Sequence[Setting], model: onnx.ModelProto, directory: Path, data: list[Batch], *,
                      threads: int, lr: float, dropout: bool) -> Contender:
    """The onnx backend with `settings` in force while its graphs are built and its sessions opened."""
    with applied(settings):
        contender = backend_contender("onnx", model, directory, data, threads=threads, lr=lr, dropout=dropout)
    return Contender(f"onnx[{', '.join(map(str, settings))}]", contender.step, data)


def torch_contender(module, data: list[Batch], convert: Callable[[Any], Any], *, lr: float) -> Contender:  # type: ignore[no-untyped-def]
    """PyTorch training `module` with `torch.optim.AdamW(fused=True)` (its defaults otherwise);
    `convert` turns a batch's inputs into what `module` takes (done once, before timing)."""
    import torch

    optimizer = torch.optim.AdamW(module.parameters(), lr=lr, fused=True)
    module.train()

    def step(x, y) -> float:  # type: ignore[no-untyped-def]
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(module(x), y)
        loss.backward()
        optimizer.step()
        return loss.item()

    return Contender(TORCH, step, [(convert(x), torch.from_numpy(y)) for x, y in data])


def compare_losses(contenders: Sequence[Contender]) -> dict[str, float]:
    """Largest relative difference of each contender's per-step losses from PyTorch's."""
    losses = {c.name: c.run() for c in contenders}
    reference = np.asarray(losses.pop(TORCH))
    return {name: float(np.max(np.abs(np.asarray(v) - reference) / np.abs(reference))) for name, v in losses.items()}


def check_same_computation(contenders: Sequence[Contender], what: str) -> None:
    """Exit unless every contender's losses match PyTorch's within TOLERANCE; print the differences."""
    steps = len(contenders[0].batches)
    for name, worst in compare_losses(contenders).items():
        if worst >= TOLERANCE:
            raise SystemExit(f"{what}: {name} losses differ from PyTorch's by {worst:.2e}; not the same computation")
        print(f"{what}: {name} has PyTorch's losses for {steps} steps (max relative difference {worst:.1e})")


@dataclass
class Timing:
    """Per contender, its milliseconds per step in each round; per round, the largest share of all the
    CPUs that other processes took while one contender ran (NaN where /proc/stat is missing)."""

    ms: dict[str, list[float]]
    others: list[float]


def busy_seconds() -> tuple[float, float]:
    """CPU seconds spent since boot by the whole machine (NaN without /proc/stat) and by this process."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except OSError:
        return math.nan, time.process_time()
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK"), time.process_time()


def time_rounds(contenders: Sequence[Contender], rounds: int, warmup_rounds: int = 1) -> Timing:
    """Each contender's ms/step in each of `rounds` rounds, after `warmup_rounds` untimed ones (kernels,
    allocators); within a round every contender runs all its batches once, the first one rotating."""
    for _ in range(warmup_rounds):
        for c in contenders:
            c.run()
    timing = Timing({c.name: [] for c in contenders}, [])
    for r in range(rounds):
        others = 0.0
        for c in (*contenders[r % len(contenders) :], *contenders[: r % len(contenders)]):
            time.sleep(PAUSE)
            machine, own = busy_seconds()
            start = time.perf_counter()
            c.run()
            wall = time.perf_counter() - start
            machine_after, own_after = busy_seconds()
            others = max(others, (machine_after - machine - (own_after - own)) / (wall * (os.cpu_count() or 1)))
            timing.ms[c.name].append(wall / len(c.batches) * 1e3)
        timing.others.append(others)
    return timing


def ratio_pairs(names: Sequence[str]) -> list[tuple[str, str]]:
    """Every backend against PyTorch, and onnx against ort-training and against its --ab variant when they run."""
    pairs = [(n, TORCH) for n in names if n != TORCH]
    if "onnx" in names:
        pairs += [("onnx", n) for n in names if n == "ort-training" or n.startswith("onnx[")]
    return pairs


def summarise(timing: Timing) -> dict[str, Any]:
    """Median ms/step per contender, and min/median/max over rounds of each per-round ratio, over the
    rounds in which other processes took less than BUSY of the CPUs (all rounds when fewer than 3 are)."""
    quiet = [r for r, share in enumerate(timing.others) if not share >= BUSY]
    kept = quiet if len(quiet) >= 3 else list(range(len(timing.others)))
    times = {name: [v[r] for r in kept] for name, v in timing.ms.items()}
    ratios = {}
    for a, b in ratio_pairs(list(times)):
        per_round = [x / y for x, y in zip(times[a], times[b], strict=True)]
        ratios[f"{a}/{b}"] = (min(per_round), statistics.median(per_round), max(per_round))
    others = statistics.median(timing.others[r] for r in kept)
    return {
        "ms": {n: statistics.median(v) for n, v in times.items()},
        "ratios": ratios,
        "rounds": len(kept),
        "quiet": len(quiet),
        "of": len(timing.others),
        "others": others,
    }


def print_summary(label: str, summary: dict[str, Any]) -> None:
    ms = "  ".join(f"{n} {v:.3f}" for n, v in summary["ms"].items())
    rounds, quiet, of = summary["rounds"], summary["quiet"], summary["of"]
    if quiet == of:
        note = "all quiet"
    elif rounds < of:
        note = f"{of - rounds} dropped: other processes took >= {BUSY:.0%} of the CPUs"
    else:
        note = f"only {quiet} quiet, so all kept: DISTURBED by other processes, run again"
    print(f"{label}: median ms/step over {rounds} of {of} rounds ({note}); {ms}")
    for pair, (low, mid, high) in summary["ratios"].items():
        print(f"{label}:   {pair:<18} min {low:.2f}  median {mid:.2f}  max {high:.2f}")
    print(f"{label}:   other processes took {summary['others']:.0%} of the CPUs (median over the rounds kept)")


def profile_onnx_backend(
    model: onnx.ModelProto, directory: Path, data: list[Batch], *, threads: int, lr: float, dropout: bool, top: int = 12
) -> str:
    """Per-op kernel times of the onnx backend's training and optimizer graphs over `data` (after one
    warm-up pass), from ONNX Runtime's profiler: a text table per graph, biggest first."""
    from onnxkit.train.backends.onnx import session as module

    opened: list[tuple[str, Any]] = []
    plain_options, plain_create = module.session_options, module.create_session

    def options(*args: Any, **kwargs: Any):  # type: ignore[no-untyped-def]
        o = plain_options(*args, **kwargs)
        o.enable_profiling = True
        return o

    def create(path: str, o, *args: Any, **kwargs: Any):  # type: ignore[no-untyped-def]
        o.profile_file_prefix = str(directory / f"profile-{Path(path).stem}")
        opened.append((Path(path).name, plain_create(path, o, *args, **kwargs)))
        return opened[-1][1]

    with mock.patch.object(module, "session_options", options), mock.patch.object(module, "create_session", create):
        contender = backend_contender(
            "onnx", model, directory / "artifacts", data, threads=threads, lr=lr, dropout=dropout
        )
    contender.run()  # the warm-up pass is in the profile too; only the second pass is counted
    contender.run()
    lines = []
    for name, session in opened:
        if name == "eval.onnx":
            continue
        events = json.loads(Path(session.end_profiling()).read_text())
        lines += _op_table(name, events, steps=len(data), top=top)
    return "\n".join(lines)


def _op_table(graph: str, events: list[dict], steps: int, top: int) -> list[str]:
    """Kernel time per op type, then the slowest nodes (with their output shapes), per step over the
    second of two equal passes of `steps` steps in a profile (a graph may run several times a step:
    the optimizer, chunk by chunk), as table lines."""
    starts = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e["name"] == "model_run")
    runs = max(len(starts) - len(starts) // 2, 1)
    since = starts[len(starts) // 2] if starts else 0
    per_op: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    per_node: dict[str, float] = defaultdict(float)
    about: dict[str, str] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= since:
            op, node = e["args"]["op_name"], e["name"].removesuffix("_kernel_time")
            per_op[op] += e["dur"]
            count[op] += 1
            per_node[node] += e["dur"]
            shapes = [next(iter(o.values())) for o in e["args"].get("output_type_shape", [])]
            about[node] = f"{op} -> {', '.join(map(str, shapes))}"
    total = sum(per_op.values())
    lines = [f"{graph}: {total / steps / 1e3:.3f} ms of kernels per step ({steps} steps, {runs // steps} run(s) each)"]
    for op, us in sorted(per_op.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"  {op:<24} {us / steps / 1e3:9.3f} ms  {100 * us / total:5.1f}%  ({count[op] // runs} nodes)")
    lines.append(f"  slowest nodes of {graph}:")
    for node, us in sorted(per_node.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"  {us / steps / 1e3:9.3f} ms  {node[-48:]:<48} {about[node]}")
    return lines
